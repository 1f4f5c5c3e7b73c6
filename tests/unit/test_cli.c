/*
 * test_cli.c — unit tests for proxy/cmd_common.c, the pieces the offline
 * cache commands share: image reference parsing, repository keys (the same
 * "<upstream URL host>/<repository>" the daemon keys tags by, with registry
 * names mapped through the configured upstreams), sizes for people, and
 * opening a cache directory that must already exist.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd_common.h"
#include "verify.h"

static void test_parse_ref(void **state)
{
    (void)state;
    cli_ref r;
    char err[256];
    assert_int_equal(cli_parse_ref("registry.example:5000/edge/app:1.0", &r, err, sizeof err), 0);
    assert_string_equal(r.registry, "registry.example:5000");
    assert_string_equal(r.repository, "edge/app");
    assert_string_equal(r.tag, "1.0");
    assert_false(r.has_digest);

    assert_int_equal(cli_parse_ref("edge/app", &r, err, sizeof err), 0); /* "edge" is no host */
    assert_string_equal(r.registry, "");
    assert_string_equal(r.repository, "edge/app");
    assert_string_equal(r.tag, "");

    assert_int_equal(cli_parse_ref("localhost/app:v2", &r, err, sizeof err), 0);
    assert_string_equal(r.registry, "localhost");
    assert_string_equal(r.repository, "app");

    static const char hex[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char text[200];
    snprintf(text, sizeof text, "127.0.0.1:5000/drv/nvme:1@sha256:%s", hex);
    assert_int_equal(cli_parse_ref(text, &r, err, sizeof err), 0);
    assert_string_equal(r.registry, "127.0.0.1:5000");
    assert_string_equal(r.repository, "drv/nvme");
    assert_string_equal(r.tag, "1");
    assert_true(r.has_digest);
    assert_int_equal(r.digest[0], 0x01);
    assert_int_equal(r.digest[31], 0xef);

    static const char *const bad[] = {
        "",      "r.io/UPPER/app", "r.io/app:bad tag", "r.io/app@sha256:xyz", "r.io/app@md5:00",
        "r.io/", "r.io/a//b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(cli_parse_ref(bad[i], &r, err, sizeof err), -1);
        assert_true(strlen(err) > 0);
    }
}

static void test_is_tag(void **state)
{
    (void)state;
    assert_true(cli_is_tag("1.0"));
    assert_true(cli_is_tag("sha256-abc.sig"));
    assert_false(cli_is_tag("r.io/app:1.0"));
    assert_false(cli_is_tag("app:1"));
    assert_false(cli_is_tag(""));
}

static void setup_config(config *cfg)
{
    char err[256];
    config_init(cfg);
    assert_int_equal(config_set(cfg, "upstream", "url", "https://mirror.example:8443/v2-prefix",
                                "test", err, sizeof err),
                     0);
    assert_int_equal(config_set(cfg, "upstream \"docker.io\"", "url",
                                "https://registry-1.docker.io", "test", err, sizeof err),
                     0);
}

static void test_repo_key(void **state)
{
    (void)state;
    config cfg;
    setup_config(&cfg);
    char key[CLI_KEY_MAX], err[256];
    /* no registry: the default upstream's URL host */
    assert_int_equal(cli_repo_key(&cfg, "", "edge/app", key, sizeof key, err, sizeof err), 0);
    assert_string_equal(key, "mirror.example:8443/edge/app");
    /* a registry named like an upstream (containerd's ?ns=): its URL host */
    assert_int_equal(
        cli_repo_key(&cfg, "docker.io", "library/busybox", key, sizeof key, err, sizeof err), 0);
    assert_string_equal(key, "registry-1.docker.io/library/busybox");
    /* the upstream's URL host itself */
    assert_int_equal(
        cli_repo_key(&cfg, "registry-1.docker.io", "x", key, sizeof key, err, sizeof err), 0);
    assert_string_equal(key, "registry-1.docker.io/x");
    /* any other registry as written */
    assert_int_equal(cli_repo_key(&cfg, "other.example", "x", key, sizeof key, err, sizeof err), 0);
    assert_string_equal(key, "other.example/x");
    config_free(&cfg);

    /* no upstream at all: a reference must name its registry */
    config_init(&cfg);
    err[0] = '\0';
    assert_int_equal(cli_repo_key(&cfg, "", "edge/app", key, sizeof key, err, sizeof err), -1);
    assert_non_null(strstr(err, "no default upstream"));
    config_free(&cfg);

    char reg[256], repo[256];
    cli_split_key("127.0.0.1:5000/edge/app", reg, sizeof reg, repo, sizeof repo);
    assert_string_equal(reg, "127.0.0.1:5000");
    assert_string_equal(repo, "edge/app");
}

static void test_format_size(void **state)
{
    (void)state;
    char out[32];
    cli_format_size(17, out);
    assert_string_equal(out, "17 B");
    cli_format_size(1536, out);
    assert_string_equal(out, "1.5 KiB");
    cli_format_size(3ull << 30, out);
    assert_string_equal(out, "3.0 GiB");
}

static void test_open_cache(void **state)
{
    (void)state;
    char dir[] = "/tmp/sluice-cli-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    config cfg;
    config_init(&cfg);
    char err[256];
    assert_int_equal(config_set(&cfg, "cache", "dir", dir, "test", err, sizeof err), 0);
    assert_int_equal(config_set(&cfg, "cache", "map_size", "64M", "test", err, sizeof err), 0);
    cli_opts o = {.cmd = "test"};
    assert_null(cli_open_cache(&o, &cfg, 0)); /* nothing there yet, and not created */
    cache *c = cli_open_cache(&o, &cfg, 1);
    assert_non_null(c);
    cache_close(c);
    c = cli_open_cache(&o, &cfg, 0);
    assert_non_null(c);
    cache_close(c);
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ref),  cmocka_unit_test(test_is_tag),
        cmocka_unit_test(test_repo_key),   cmocka_unit_test(test_format_size),
        cmocka_unit_test(test_open_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
