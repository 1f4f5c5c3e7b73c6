/*
 * test_config.c — unit tests for proxy/config.c: defaults, the size, duration
 * and boolean parsers, loading INI files (good ones and every kind of bad
 * line, each reported as "FILE:LINE: ..."), command-line style overrides,
 * cross-key validation and choosing an upstream for containerd's ?ns=.
 *
 * How it works: the group setup makes a private directory with mkdtemp under
 * /tmp; each test writes the files it loads there and removes them, and the
 * group teardown removes the directory. Bad-file cases are a table of file
 * text, the line the error must name, and a phrase it must contain.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static char dir[64];

static int group_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/sluice-test-config-XXXXXX");
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    return rmdir(dir);
}

/* Writes len bytes of text to dir/name; returns the path (static buffer). */
static const char *write_file(const char *name, const char *text, size_t len)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* Loads text as a config file into cfg (after config_init), removing the file. */
static int load_text(config *cfg, const char *text, size_t len, char *err, size_t errlen)
{
    const char *path = write_file("sluice.conf", text, len);
    config_init(cfg);
    int rc = config_load_file(cfg, path, err, errlen);
    unlink(path);
    return rc;
}

/* ---- parsers ----------------------------------------------------------- */

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t v;
    } good[] = {
        {"0", 0},
        {"1", 1},
        {"1024", 1024},
        {"1K", 1024},
        {"1k", 1024},
        {"512M", 512ULL << 20},
        {"1G", 1ULL << 30},
        {"3g", 3ULL << 30},
        {"2T", 2ULL << 40},
        {"16777215T", 16777215ULL << 40},
        {"18446744073709551615", UINT64_MAX},
    };
    static const char *const bad[] = {
        "",          "K",   "1KB",  "1KiB", "-1",   "+1",
        " 1",        "1 ",  "1.5G", "1P",   "0x10", "18446744073709551616",
        "16777216T", "1GG",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t v = 7;
        if (config_parse_size(good[i].s, &v) != 0 || v != good[i].v)
            fail_msg("size \"%s\" should parse to %llu", good[i].s, (unsigned long long)good[i].v);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v;
        if (config_parse_size(bad[i], &v) == 0)
            fail_msg("size \"%s\" should be rejected", bad[i]);
    }
    uint64_t v;
    assert_int_equal(config_parse_size(NULL, &v), -1);
}

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        unsigned v;
    } good[] = {
        {"0", 0},
        {"30", 30},
        {"30s", 30},
        {"5m", 300},
        {"2h", 7200},
        {"1d", 86400},
        {"49710d", 49710u * 86400u},
        {"4294967295", 4294967295u},
        {"007", 7},
    };
    static const char *const bad[] = {
        "",
        "s",
        "1S",
        "1M",
        "1w",
        "1m1s",
        "-1",
        " 1",
        "1 ",
        "1.5h",
        "4294967296",
        "49711d",
        "99999999999999999999",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        unsigned v = 7;
        if (config_parse_duration(good[i].s, &v) != 0 || v != good[i].v)
            fail_msg("duration \"%s\" should parse to %u", good[i].s, good[i].v);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned v;
        if (config_parse_duration(bad[i], &v) == 0)
            fail_msg("duration \"%s\" should be rejected", bad[i]);
    }
    unsigned v;
    assert_int_equal(config_parse_duration(NULL, &v), -1);
}

static void test_parse_bool(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "TRUE", "True", "yes", "Yes", "on", "ON", "1"};
    static const char *const no[] = {"false", "FALSE", "no", "No", "off", "Off", "0"};
    static const char *const bad[] = {"", "2", "tru", "yess", "enable", " true", "true ", "01"};
    int b;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        b = -1;
        assert_int_equal(config_parse_bool(yes[i], &b), 0);
        assert_int_equal(b, 1);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        b = -1;
        assert_int_equal(config_parse_bool(no[i], &b), 0);
        assert_int_equal(b, 0);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (config_parse_bool(bad[i], &b) == 0)
            fail_msg("bool \"%s\" should be rejected", bad[i]);
    }
    assert_int_equal(config_parse_bool(NULL, &b), -1);
}

/* ---- defaults and good files ------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    config cfg;
    config_init(&cfg);
    assert_string_equal(cfg.listen, "127.0.0.1:5000");
    assert_int_equal(cfg.workers, 0);
    assert_null(cfg.tls_cert);
    assert_null(cfg.tls_key);
    assert_int_equal(cfg.log_requests, 1);
    assert_string_equal(cfg.cache_dir, "/var/lib/sluice");
    assert_int_equal(cfg.map_size, 256ULL << 30);
    assert_int_equal(cfg.tag_ttl, 300);
    assert_int_equal(cfg.sync, 1);
    assert_int_equal(cfg.n_upstreams, 0);
    char err[256];
    assert_int_equal(config_validate(&cfg, err, sizeof err), -1); /* no upstream */
    assert_non_null(strstr(err, "no upstream"));
    config_free(&cfg);
    config_free(&cfg); /* safe twice */
}

#define LONG_HOST "123456789012.dkr.ecr.eu-west-1.amazonaws.com"

static const char good_file[] = "\xEF\xBB\xBF; Sluice test configuration\n"
                                "# hash comments too\n"
                                "\n"
                                "[server]\n"
                                "listen = [::1]:8443\n"
                                "workers = 4\n"
                                "tls_cert = /etc/sluice/cert.pem\n"
                                "tls_key = /etc/sluice/key.pem ; inline comment\n"
                                "log_requests = off\n"
                                "offline = yes\n"
                                "\n"
                                "[trust]\n"
                                "policy = /etc/sluice/policy.json\n"
                                "module_scopes = r.example/drivers r.example/gpu\n"
                                "module_certs = /etc/sluice/a.pem /etc/sluice/b.der\n"
                                "\n"
                                "[cache]\r\n"
                                "  dir = /srv/sluice\r\n"
                                "\tmap_size = 8G\n"
                                "tag_ttl = 5m\n"
                                "sync = no\n"
                                "max_size = 20G\n"
                                "\n"
                                "[upstream \"ghcr.io\"]\n"
                                "url = https://ghcr.io\n"
                                "retries = 0\n"
                                "\n"
                                "[upstream]\n"
                                "url = https://registry.example.com:5000\n"
                                "username = robot\n"
                                "password = s3cr#t=x\n"
                                "ca_file = /etc/ssl/site-ca.pem\n"
                                "tls_verify = false\n"
                                "connect_timeout = 3\n"
                                "transfer_timeout = 2m\n"
                                "retries = 5\n"
                                "breaker = 1m\n"
                                "\n"
                                "[ upstream  \"" LONG_HOST "\" ]\n"
                                "url = http://10.0.0.1:5000\n";

static void test_good_file(void **state)
{
    (void)state;
    config cfg;
    char err[512] = "";
    if (load_text(&cfg, good_file, sizeof good_file - 1, err, sizeof err) != 0)
        fail_msg("load: %s", err);
    assert_int_equal(config_validate(&cfg, err, sizeof err), 0);
    assert_string_equal(cfg.listen, "[::1]:8443");
    assert_int_equal(cfg.workers, 4);
    assert_string_equal(cfg.tls_cert, "/etc/sluice/cert.pem");
    assert_string_equal(cfg.tls_key, "/etc/sluice/key.pem");
    assert_int_equal(cfg.log_requests, 0);
    assert_string_equal(cfg.cache_dir, "/srv/sluice");
    assert_int_equal(cfg.map_size, 8ULL << 30);
    assert_int_equal(cfg.tag_ttl, 300);
    assert_int_equal(cfg.sync, 0);
    assert_int_equal(cfg.offline, 1);
    assert_int_equal(cfg.max_size, 20ULL << 30);
    assert_string_equal(cfg.policy, "/etc/sluice/policy.json");
    assert_null(cfg.trusted_root);
    assert_string_equal(cfg.module_scopes, "r.example/drivers r.example/gpu");
    assert_string_equal(cfg.module_certs, "/etc/sluice/a.pem /etc/sluice/b.der");
    assert_int_equal(cfg.n_upstreams, 3);

    const config_upstream *d = &cfg.upstreams[0]; /* the default goes first */
    assert_string_equal(d->name, "");
    assert_string_equal(d->url, "https://registry.example.com:5000");
    assert_string_equal(d->username, "robot");
    assert_string_equal(d->password, "s3cr#t=x");
    assert_string_equal(d->ca_file, "/etc/ssl/site-ca.pem");
    assert_int_equal(d->tls_verify, 0);
    assert_int_equal(d->connect_timeout, 3);
    assert_int_equal(d->transfer_timeout, 120);
    assert_int_equal(d->retries, 5);
    assert_int_equal(d->breaker, 60);

    const config_upstream *g = config_upstream_for(&cfg, "ghcr.io");
    assert_non_null(g);
    assert_string_equal(g->url, "https://ghcr.io");
    assert_null(g->username);
    assert_int_equal(g->tls_verify, 1); /* upstream defaults */
    assert_int_equal(g->connect_timeout, 10);
    assert_int_equal(g->transfer_timeout, 30);
    assert_int_equal(g->retries, 0);
    assert_int_equal(g->breaker, 10);

    const config_upstream *e = config_upstream_for(&cfg, LONG_HOST);
    assert_non_null(e);
    assert_string_equal(e->name, LONG_HOST);
    assert_string_equal(e->url, "http://10.0.0.1:5000");
    config_free(&cfg);
}

/* The shipped sample documents every key and must load as it is (tests run
 * in tests/, see tests/meson.build). */
static void test_sample_file(void **state)
{
    (void)state;
    config cfg;
    char err[512] = "";
    config_init(&cfg);
    if (config_load_file(&cfg, "../conf/sluice.conf", err, sizeof err) != 0)
        fail_msg("conf/sluice.conf: %s", err);
    assert_int_equal(config_validate(&cfg, err, sizeof err), 0);
    assert_int_equal(cfg.offline, 0);
    assert_int_equal(cfg.max_size, 0);
    assert_null(cfg.policy);
    assert_int_equal(cfg.upstreams[0].breaker, 10);
    config_free(&cfg);
}

/* A second file goes on top of the first; the same section may then appear
 * again, since duplicates are only counted within one file. */
static void test_load_on_top(void **state)
{
    (void)state;
    config cfg;
    char err[512] = "";
    static const char a[] = "[upstream]\nurl = https://a.example\n[server]\nworkers = 2\n";
    static const char b[] = "[upstream]\nurl = https://b.example\n";
    assert_int_equal(load_text(&cfg, a, sizeof a - 1, err, sizeof err), 0);
    const char *path = write_file("b.conf", b, sizeof b - 1);
    if (config_load_file(&cfg, path, err, sizeof err) != 0)
        fail_msg("%s", err);
    unlink(path);
    assert_int_equal(cfg.n_upstreams, 1);
    assert_string_equal(cfg.upstreams[0].url, "https://b.example");
    assert_int_equal(cfg.workers, 2);
    config_free(&cfg);
}

/* ---- bad files --------------------------------------------------------- */

typedef struct {
    const char *text;
    unsigned line; /* 0: no line, the error is about the whole file */
    const char *phrase;
} bad_case;

static const bad_case bad_files[] = {
    {"[server]\nlisten = 0.0.0.0:5000\n[bogus]\n", 3, "unknown section [bogus]"},
    {"[Server]\n", 1, "unknown section [Server]"},
    {"[upstream ghcr.io]\nurl = https://ghcr.io\n", 1, "unknown section [upstream ghcr.io]"},
    {"[upstream\"ghcr.io\"]\n", 1, "unknown section"},
    {"[upstream \"\"]\n", 1, "empty upstream name"},
    {"[upstream \"bad host\"]\n", 1, "bad upstream name"},
    {"[upstream \"a/b\"]\n", 1, "bad upstream name"},
    {"[server]\nlisen = 1.2.3.4:5\n", 2, "unknown key \"lisen\" in [server]"},
    {"[cache]\nurl = https://x\n", 2, "unknown key \"url\""},
    {"[upstream]\nlisten = 1.2.3.4:5\n", 2, "unknown key \"listen\""},
    {"[server]\nworkers = many\n", 2, "bad value \"many\" for workers"},
    {"[server]\nworkers = 1025\n", 2, "bad value \"1025\" for workers"},
    {"[server]\nworkers = -1\n", 2, "for workers"},
    {"[server]\nlisten = 5000\n", 2, "bad value \"5000\" for listen"},
    {"[server]\nlisten = :5000\n", 2, "for listen"},
    {"[server]\nlisten = host:0\n", 2, "for listen"},
    {"[server]\nlisten = host:65536\n", 2, "for listen"},
    {"[server]\nlisten = host:http\n", 2, "for listen"},
    {"[server]\nlisten = ::1:5000\n", 2, "for listen"},
    {"[server]\nlisten = [::1]5000\n", 2, "for listen"},
    {"[server]\nlisten = []:5000\n", 2, "for listen"},
    {"[server]\nlisten =\n", 2, "listen must not be empty"},
    {"[server]\nlog_requests = maybe\n", 2, "for log_requests"},
    {"[cache]\ndir =\n", 2, "dir must not be empty"},
    {"[cache]\nmap_size = 1X\n", 2, "for map_size"},
    {"[cache]\nmap_size = 1K\n", 2, "for map_size"},
    {"[cache]\ntag_ttl = 1w\n", 2, "for tag_ttl"},
    {"[cache]\nsync = 2\n", 2, "for sync"},
    {"[upstream]\nurl = ftp://x\n", 2, "bad value \"ftp://x\" for url"},
    {"[upstream]\nurl = https://\n", 2, "for url"},
    {"[upstream]\nurl = registry.example.com\n", 2, "for url"},
    {"[upstream]\nurl =\n", 2, "url must not be empty"},
    {"[upstream]\ntls_verify = sometimes\n", 2, "for tls_verify"},
    {"[upstream]\nconnect_timeout = 0\n", 2, "for connect_timeout"},
    {"[upstream]\ntransfer_timeout = 10x\n", 2, "for transfer_timeout"},
    {"[upstream]\nretries = 101\n", 2, "for retries"},
    {"[upstream \"a.io\"]\nurl = https://a.io\n\n[upstream \"A.IO\"]\n", 4,
     "duplicate upstream \"a.io\" (first at line 1)"},
    {"[upstream]\nurl = https://a.io\n[upstream]\n", 3, "duplicate upstream"},
    {"[server]\n[cache]\n[server]\n", 3, "duplicate section [server] (first at line 1)"},
    {"[cache]\n[cache]\n", 2, "duplicate section [cache]"},
    {"listen = 1.2.3.4:5\n", 1, "outside of any section"},
    {"[server]\njust some words\n", 2, "syntax error"},
    {"[server\nworkers = 1\n", 1, "syntax error"},
    {"[server]\n  ; indented comment\n\n= 4\n", 4, "unknown key \"\" in [server]"},
    {"[server]\nworkers\n", 2, "syntax error"},
    /* the first error in the file is the one reported */
    {"[server]\nworkers = x\nlisten = y\n[nope]\n", 2, "for workers"},
    {"[server]\nnot a pair\nbogus = 1\n", 2, "syntax error"},
    {"[server]\nbogus = 1\nnot a pair\n", 2, "unknown key"},
    {"[nope]\nkey = 1\nnot a pair\n", 1, "unknown section"},
    {"[server]\nworkers = 1\n[nope]\nnot a pair\n", 3, "unknown section"},
};

static void check_bad(const bad_case *c, const char *text, size_t len)
{
    config cfg;
    char err[1024] = "";
    char prefix[256];
    int rc = load_text(&cfg, text, len, err, sizeof err);
    config_free(&cfg);
    if (rc != -1)
        fail_msg("file accepted:\n%s", text);
    if (c->line)
        snprintf(prefix, sizeof prefix, "%s/sluice.conf:%u: ", dir, c->line);
    else
        snprintf(prefix, sizeof prefix, "%s/sluice.conf: ", dir);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err, c->phrase) == NULL)
        fail_msg("file:\n%s\nerror \"%s\", expected \"%s...%s\"", text, err, prefix, c->phrase);
}

static void test_bad_files(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++)
        check_bad(&bad_files[i], bad_files[i].text, strlen(bad_files[i].text));
}

static void test_bad_bytes(void **state)
{
    (void)state;
    static const char nul[] = "[server]\nworkers = 1\nlisten = 1.2.3.4:5\0junk\n";
    bad_case c = {NULL, 3, "NUL byte"};
    check_bad(&c, nul, sizeof nul - 1);

    char long_line[512];
    int n = snprintf(long_line, sizeof long_line, "[upstream]\n\npassword = %0300d\n", 7);
    c = (bad_case){NULL, 3, "line too long"};
    check_bad(&c, long_line, (size_t)n);
}

static void test_too_many_upstreams(void **state)
{
    (void)state;
    char text[4096];
    size_t off = 0;
    for (int i = 0; i <= CONFIG_MAX_UPSTREAMS; i++)
        off += (size_t)snprintf(text + off, sizeof text - off,
                                "[upstream \"r%d.example\"]\nurl = https://r%d.example\n", i, i);
    bad_case c = {NULL, 2 * CONFIG_MAX_UPSTREAMS + 1, "too many upstreams"};
    check_bad(&c, text, off);

    /* exactly the maximum is fine */
    config cfg;
    char err[512] = "";
    size_t cut = (size_t)(strstr(text, "[upstream \"r16.example\"]") - text);
    assert_int_equal(load_text(&cfg, text, cut, err, sizeof err), 0);
    assert_int_equal(cfg.n_upstreams, CONFIG_MAX_UPSTREAMS);
    assert_int_equal(config_validate(&cfg, err, sizeof err), 0);
    assert_null(config_upstream_for(&cfg, "other.example")); /* no default */
    config_free(&cfg);
}

static void test_unreadable(void **state)
{
    (void)state;
    config cfg;
    char err[512] = "";
    char path[128];
    config_init(&cfg);
    snprintf(path, sizeof path, "%s/missing.conf", dir);
    assert_int_equal(config_load_file(&cfg, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "missing.conf: cannot open"));
    assert_int_equal(config_load_file(&cfg, dir, err, sizeof err), -1); /* a directory */
    assert_non_null(strstr(err, "cannot read"));
    assert_int_equal(config_load_file(&cfg, NULL, err, sizeof err), -1);
    assert_int_equal(config_load_file(&cfg, path, NULL, 0), -1); /* no err buffer */
    config_free(&cfg);

    static const char bad[] = "[bogus]\n";
    assert_int_equal(load_text(&cfg, bad, sizeof bad - 1, NULL, 0), -1);
    config_free(&cfg);
}

/* ---- overrides, validation, upstream choice ---------------------------- */

static void test_set(void **state)
{
    (void)state;
    config cfg;
    char err[256];
    config_init(&cfg);
    assert_int_equal(config_set(&cfg, "server", "listen", "0.0.0.0:80", "--listen", err, 256), 0);
    assert_string_equal(cfg.listen, "0.0.0.0:80");
    assert_int_equal(config_set(&cfg, "server", "listen", "nope", "--listen", err, 256), -1);
    assert_string_equal(err, "--listen: bad value \"nope\" for listen: expected HOST:PORT or "
                             "[IPV6]:PORT with a port from 1 to 65535");
    assert_string_equal(cfg.listen, "0.0.0.0:80"); /* unchanged */

    assert_int_equal(config_set(&cfg, "server", "tls_cert", "/c.pem", "--tls-cert", err, 256), 0);
    assert_int_equal(config_set(&cfg, "server", "tls_cert", "/d.pem", "--tls-cert", err, 256), 0);
    assert_string_equal(cfg.tls_cert, "/d.pem");
    assert_int_equal(config_set(&cfg, "server", "tls_cert", "", "--tls-cert", err, 256), 0);
    assert_null(cfg.tls_cert); /* "" unsets an optional string */

    assert_int_equal(config_set(&cfg, "nope", "x", "1", "--x", err, 256), -1);
    assert_string_equal(err, "--x: unknown section [nope]");
    assert_int_equal(config_set(&cfg, "cache", "nope", "1", NULL, err, 256), -1);
    assert_string_equal(err, "unknown key \"nope\" in [cache]");
    assert_int_equal(config_set(&cfg, "cache", "dir", NULL, NULL, err, 256), -1);
    assert_int_equal(config_set(&cfg, "cache", "map_size", "2G", NULL, NULL, 0), 0);
    assert_int_equal(cfg.map_size, 2ULL << 30);

    /* an unknown key does not create the upstream it names */
    assert_int_equal(config_set(&cfg, "upstream \"q.io\"", "nope", "1", NULL, err, 256), -1);
    assert_int_equal(cfg.n_upstreams, 0);
    assert_int_equal(config_set(&cfg, "upstream \"q.io\"", "url", "https://q.io", "--x", err, 256),
                     0);
    assert_int_equal(config_set(&cfg, "upstream", "url", "https://d.io", "--x", err, 256), 0);
    assert_int_equal(cfg.n_upstreams, 2);
    assert_string_equal(cfg.upstreams[0].name, "");
    assert_string_equal(cfg.upstreams[1].name, "q.io");
    assert_int_equal(config_set(&cfg, "upstream", "url", "https://e.io", "--x", err, 256), 0);
    assert_string_equal(cfg.upstreams[0].url, "https://e.io");
    assert_int_equal(cfg.n_upstreams, 2);
    assert_int_equal(config_set(&cfg, "upstream \"q.io\"", "password", "pw", "--x", err, 256), 0);
    assert_int_equal(config_set(&cfg, "upstream \"q.io\"", "password", "", "--x", err, 256), 0);
    assert_null(cfg.upstreams[1].password);
    assert_int_equal(config_validate(&cfg, err, sizeof err), 0);
    config_free(&cfg);
}

static void test_set_too_many(void **state)
{
    (void)state;
    config cfg;
    char err[256], section[64];
    config_init(&cfg);
    for (int i = 0; i < CONFIG_MAX_UPSTREAMS; i++) {
        snprintf(section, sizeof section, "upstream \"h%d\"", i);
        assert_int_equal(config_set(&cfg, section, "url", "https://h", "--u", err, 256), 0);
    }
    assert_int_equal(config_set(&cfg, "upstream", "url", "https://h", "--u", err, 256), -1);
    assert_string_equal(err, "--u: too many upstreams (at most 16)");
    config_free(&cfg);
}

static void expect_invalid(config *cfg, const char *phrase)
{
    char err[256] = "";
    assert_int_equal(config_validate(cfg, err, sizeof err), -1);
    if (strstr(err, phrase) == NULL)
        fail_msg("error \"%s\", expected \"%s\"", err, phrase);
}

static void test_validate(void **state)
{
    (void)state;
    config cfg;
    char err[256];
    config_init(&cfg);
    assert_int_equal(config_set(&cfg, "upstream \"x.io\"", "username", "u", NULL, err, 256), 0);
    expect_invalid(&cfg, "[upstream \"x.io\"]: url is not set");
    assert_int_equal(config_set(&cfg, "upstream \"x.io\"", "url", "https://x.io", NULL, err, 256),
                     0);
    assert_int_equal(config_validate(&cfg, err, sizeof err), 0);

    assert_int_equal(config_set(&cfg, "server", "tls_key", "/k.pem", NULL, err, 256), 0);
    expect_invalid(&cfg, "tls_cert and tls_key must be set together");
    assert_int_equal(config_set(&cfg, "server", "tls_cert", "/c.pem", NULL, err, 256), 0);
    assert_int_equal(config_validate(&cfg, err, sizeof err), 0);
    assert_int_equal(config_set(&cfg, "server", "tls_key", "", NULL, err, 256), 0);
    expect_invalid(&cfg, "tls_cert and tls_key must be set together");
    assert_int_equal(config_set(&cfg, "server", "tls_cert", "", NULL, err, 256), 0);

    /* rules hold for a struct changed by hand too */
    free(cfg.listen);
    cfg.listen = strdup("localhost");
    expect_invalid(&cfg, "listen must be HOST:PORT");
    free(cfg.listen);
    cfg.listen = NULL;
    expect_invalid(&cfg, "listen must be HOST:PORT");
    cfg.listen = strdup("[fe80::1%eth0]:65535");
    assert_int_equal(config_validate(&cfg, err, sizeof err), 0);

    free(cfg.upstreams[0].url);
    cfg.upstreams[0].url = strdup("file:///etc/passwd");
    expect_invalid(&cfg, "must start with http:// or https://");
    config_free(&cfg);
}

static void test_upstream_for(void **state)
{
    (void)state;
    config cfg;
    char err[256];
    config_init(&cfg);
    assert_null(config_upstream_for(&cfg, NULL));
    assert_null(config_upstream_for(&cfg, "docker.io"));
    assert_int_equal(config_set(&cfg, "upstream \"ghcr.io\"", "url", "https://g", NULL, err, 256),
                     0);
    assert_int_equal(
        config_set(&cfg, "upstream \"localhost:5001\"", "url", "http://l", NULL, err, 256), 0);
    assert_null(config_upstream_for(&cfg, NULL)); /* no default yet */
    assert_null(config_upstream_for(&cfg, "docker.io"));
    assert_string_equal(config_upstream_for(&cfg, "ghcr.io")->url, "https://g");
    assert_string_equal(config_upstream_for(&cfg, "GHCR.io")->url, "https://g");
    assert_string_equal(config_upstream_for(&cfg, "localhost:5001")->url, "http://l");
    assert_null(config_upstream_for(&cfg, "localhost"));

    assert_int_equal(config_set(&cfg, "upstream", "url", "https://d", NULL, err, 256), 0);
    assert_string_equal(config_upstream_for(&cfg, NULL)->url, "https://d");
    assert_string_equal(config_upstream_for(&cfg, "")->url, "https://d");
    assert_string_equal(config_upstream_for(&cfg, "docker.io")->url, "https://d");
    assert_string_equal(config_upstream_for(&cfg, "ghcr.io")->url, "https://g");
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),   cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_bool),   cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_good_file),    cmocka_unit_test(test_sample_file),
        cmocka_unit_test(test_load_on_top),  cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_bad_bytes),    cmocka_unit_test(test_too_many_upstreams),
        cmocka_unit_test(test_unreadable),   cmocka_unit_test(test_set),
        cmocka_unit_test(test_set_too_many), cmocka_unit_test(test_validate),
        cmocka_unit_test(test_upstream_for),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
