/*
 * config.c — Sluice's configuration (see config.h): defaults, the INI file
 * (read with libinih), command-line overrides and cross-key validation.
 *
 * How it works. Every key of every section is a row of a table (key_spec):
 * its name, what kind of value it takes, where it lives in the struct, and
 * what a good value looks like. config_set() finds the row and converts the
 * value; the file loader and the command line both go through it, so a key
 * means the same thing wherever it is set.
 *
 * The file is fed to inih through our own line reader (ini_parse_stream)
 * rather than ini_parse(), for three reasons:
 *   - inih truncates section names to 49 bytes, too short for
 *     [upstream "123456789012.dkr.ecr.eu-west-1.amazonaws.com"]; the reader
 *     sees every "[...]" line whole and keeps the current section itself;
 *   - inih treats an indented line as the continuation of the previous value
 *     (a second handler call for the same key); the reader strips leading
 *     blanks, so indentation is only cosmetic;
 *   - inih silently splits lines longer than its buffer; the reader reports
 *     them, and NUL bytes, as errors.
 * The reader also opens each section as it sees its header, so an unknown or
 * duplicate section is reported at its own line even when it has no keys,
 * and an [upstream "HOST"] section exists (and must get a url) even if empty.
 *
 * Errors: the first one in file order is kept, as "FILE:LINE: what"; inih's
 * own syntax errors (a line that is neither "key = value" nor "[section]")
 * come back as the line number ini_parse_stream returns.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#define DEFAULT_LISTEN "127.0.0.1:5000"
#define DEFAULT_CACHE_DIR "/var/lib/sluice"
#define DEFAULT_MAP_SIZE (256ULL << 30)
#define DEFAULT_TAG_TTL 300
#define DEFAULT_CONNECT_TIMEOUT 10
#define DEFAULT_TRANSFER_TIMEOUT 30
#define DEFAULT_RETRIES 3
#define DEFAULT_BREAKER 10
#define WORKERS_MAX 1024
#define RETRIES_MAX 100
#define HOST_MAX 255

/* ---- errors ------------------------------------------------------------ */

/* Writes "where: message" (or just the message) into err; returns -1. */
static int fail(char *err, size_t errlen, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, const char *where, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return -1;
    size_t off = 0;
    if (where != NULL) {
        int n = snprintf(err, errlen, "%s: ", where);
        off = n < 0 ? 0 : ((size_t)n >= errlen ? errlen - 1 : (size_t)n);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + off, errlen - off, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- value syntax ------------------------------------------------------ */

/* One or more decimal digits at s, into *out; *end is set past them. */
static int parse_u64(const char *s, const char **end, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    while (*p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
        p++;
    }
    if (p == s)
        return -1;
    *end = p;
    *out = v;
    return 0;
}

static unsigned size_shift(char c)
{
    switch (c) {
    case 'K':
    case 'k':
        return 10;
    case 'M':
    case 'm':
        return 20;
    case 'G':
    case 'g':
        return 30;
    case 'T':
    case 't':
        return 40;
    }
    return 0;
}

int config_parse_size(const char *s, uint64_t *out)
{
    const char *end;
    uint64_t n;
    if (s == NULL || parse_u64(s, &end, &n) != 0)
        return -1;
    unsigned shift = 0;
    if (*end != '\0' && (shift = size_shift(*end++)) == 0)
        return -1;
    if (*end != '\0' || n > (UINT64_MAX >> shift))
        return -1;
    *out = n << shift;
    return 0;
}

static unsigned duration_unit(char c)
{
    switch (c) {
    case 's':
        return 1;
    case 'm':
        return 60;
    case 'h':
        return 3600;
    case 'd':
        return 86400;
    }
    return 0;
}

int config_parse_duration(const char *s, unsigned *out)
{
    const char *end;
    uint64_t n;
    if (s == NULL || parse_u64(s, &end, &n) != 0)
        return -1;
    unsigned unit = 1;
    if (*end != '\0' && (unit = duration_unit(*end++)) == 0)
        return -1;
    if (*end != '\0' || n > UINT_MAX / unit)
        return -1;
    *out = (unsigned)n * unit;
    return 0;
}

int config_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
            *out = strcasecmp(s, yes[i]) == 0;
            return 0;
        }
    }
    return -1;
}

static int port_valid(const char *s)
{
    const char *end;
    uint64_t port;
    if (strlen(s) > 5 || parse_u64(s, &end, &port) != 0)
        return 0;
    return *end == '\0' && port >= 1 && port <= 65535;
}

/* Every byte of s[0..n) is in the set chars (or alphanumeric). */
static int all_in(const char *s, size_t n, const char *chars)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (c == '\0' || strchr(chars, c) == NULL))
            return 0;
    }
    return 1;
}

/* "HOST:PORT" or "[V6]:PORT", port 1..65535, host not empty. */
static int listen_valid(const char *s)
{
    if (s == NULL)
        return 0;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close == s + 1 || close[1] != ':')
            return 0;
        return all_in(s + 1, (size_t)(close - s - 1), ":.%") && port_valid(close + 2);
    }
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s)
        return 0;
    return all_in(s, (size_t)(colon - s), ".-_") && port_valid(colon + 1);
}

/* "http://..." or "https://...", something after the scheme, no blanks. */
static int url_valid(const char *s)
{
    size_t skip;
    if (s == NULL)
        return 0;
    if (strncasecmp(s, "http://", 7) == 0)
        skip = 7;
    else if (strncasecmp(s, "https://", 8) == 0)
        skip = 8;
    else
        return 0;
    if (s[skip] == '\0' || s[skip] == '/')
        return 0;
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return 0;
    }
    return 1;
}

/* An upstream name: a registry "host[:port]" as containerd sends in ?ns=. */
static int host_valid(const char *s, size_t n)
{
    return n > 0 && n <= HOST_MAX && all_in(s, n, ".-_:[]");
}

/* ---- sections ---------------------------------------------------------- */

typedef enum {
    SEC_SERVER,
    SEC_CACHE,
    SEC_TRUST,
    SEC_DELTA,
    SEC_UPSTREAM,
    SEC_UNKNOWN
} section_kind;

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Classifies a section name. For SEC_UPSTREAM, *host and *host_len are the quoted
 * HOST, or NULL/0 for the default [upstream]. Blanks around are ignored. */
static section_kind parse_section(const char *s, const char **host, size_t *host_len)
{
    size_t n = strlen(s);
    while (n > 0 && is_blank(s[n - 1]))
        n--;
    while (n > 0 && is_blank(*s))
        s++, n--;
    *host = NULL;
    *host_len = 0;
    if (n == 6 && memcmp(s, "server", 6) == 0)
        return SEC_SERVER;
    if (n == 5 && memcmp(s, "cache", 5) == 0)
        return SEC_CACHE;
    if (n == 5 && memcmp(s, "trust", 5) == 0)
        return SEC_TRUST;
    if (n == 5 && memcmp(s, "delta", 5) == 0)
        return SEC_DELTA;
    if (n < 8 || memcmp(s, "upstream", 8) != 0)
        return SEC_UNKNOWN;
    if (n == 8)
        return SEC_UPSTREAM;
    size_t i = 8;
    while (i < n && is_blank(s[i]))
        i++;
    if (i == 8 || n - i < 2 || s[i] != '"' || s[n - 1] != '"')
        return SEC_UNKNOWN;
    *host = s + i + 1;
    *host_len = n - i - 2;
    return SEC_UPSTREAM;
}

/* ---- upstreams --------------------------------------------------------- */

static config_upstream *upstream_find(config *cfg, const char *name, size_t len)
{
    for (unsigned i = 0; i < cfg->n_upstreams; i++) {
        const char *have = cfg->upstreams[i].name;
        if (strlen(have) == len && strncasecmp(have, name, len) == 0)
            return &cfg->upstreams[i];
    }
    return NULL;
}

/* Adds a new upstream with its defaults; the default upstream (len 0) goes
 * first, as config.h promises. */
static config_upstream *upstream_add(config *cfg, const char *name, size_t len)
{
    char *copy = strndup(name, len);
    if (copy == NULL)
        return NULL;
    unsigned at = cfg->n_upstreams;
    if (len == 0) {
        memmove(&cfg->upstreams[1], &cfg->upstreams[0], at * sizeof cfg->upstreams[0]);
        at = 0;
    }
    cfg->n_upstreams++;
    config_upstream *u = &cfg->upstreams[at];
    *u = (config_upstream){.name = copy,
                           .tls_verify = 1,
                           .connect_timeout = DEFAULT_CONNECT_TIMEOUT,
                           .transfer_timeout = DEFAULT_TRANSFER_TIMEOUT,
                           .retries = DEFAULT_RETRIES,
                           .breaker = DEFAULT_BREAKER};
    return u;
}

/* The upstream of a section, created if new. NULL with err set on failure. */
static config_upstream *upstream_get(config *cfg, const char *host, size_t len, const char *where,
                                     char *err, size_t errlen)
{
    config_upstream *u = upstream_find(cfg, host, len);
    if (u != NULL)
        return u;
    if (cfg->n_upstreams >= CONFIG_MAX_UPSTREAMS) {
        fail(err, errlen, where, "too many upstreams (at most %d)", CONFIG_MAX_UPSTREAMS);
        return NULL;
    }
    if ((u = upstream_add(cfg, host, len)) == NULL)
        fail(err, errlen, where, "out of memory");
    return u;
}

/* The upstream a section names (created if new), after checking the name. */
static config_upstream *section_upstream(config *cfg, const char *host, size_t len,
                                         const char *where, char *err, size_t errlen)
{
    if (host == NULL)
        return upstream_get(cfg, "", 0, where, err, errlen);
    if (len == 0) {
        fail(err, errlen, where, "empty upstream name (use [upstream] for the default)");
        return NULL;
    }
    if (!host_valid(host, len)) {
        fail(err, errlen, where, "bad upstream name \"%.*s\": expected a registry host[:port]",
             (int)len, host);
        return NULL;
    }
    return upstream_get(cfg, host, len, where, err, errlen);
}

/* ---- keys -------------------------------------------------------------- */

/* String kinds first: set_key() tells them apart by kind <= V_URL. */
typedef enum {
    V_STRING,
    V_OPT_STRING,
    V_LISTEN,
    V_URL,
    V_BOOL,
    V_SIZE,
    V_DURATION,
    V_COUNT
} value_kind;

typedef struct {
    const char *key;
    value_kind kind;
    size_t offset;     /* of the field in config or config_upstream */
    uint64_t min, max; /* for V_SIZE, V_DURATION, V_COUNT */
    const char *expect;
} key_spec;

#define SRV(f) offsetof(config, f)
#define UPS(f) offsetof(config_upstream, f)
#define BOOL_EXPECT "true/false, yes/no, on/off or 1/0"
#define TIME_EXPECT "a duration of at least 1s: seconds, or a number with an s/m/h/d suffix"

static const key_spec server_keys[] = {
    {"listen", V_LISTEN, SRV(listen), 0, 0, "HOST:PORT or [IPV6]:PORT with a port from 1 to 65535"},
    {"workers", V_COUNT, SRV(workers), 0, WORKERS_MAX, "a number of threads from 0 to 1024"},
    {"tls_cert", V_OPT_STRING, SRV(tls_cert), 0, 0, "a file path"},
    {"tls_key", V_OPT_STRING, SRV(tls_key), 0, 0, "a file path"},
    {"log_requests", V_BOOL, SRV(log_requests), 0, 1, BOOL_EXPECT},
    {"offline", V_BOOL, SRV(offline), 0, 1, BOOL_EXPECT},
    {NULL, V_STRING, 0, 0, 0, NULL},
};

static const key_spec cache_keys[] = {
    {"dir", V_STRING, SRV(cache_dir), 0, 0, "a directory path"},
    {"map_size", V_SIZE, SRV(map_size), 1ULL << 20, UINT64_MAX,
     "a size of at least 1M: bytes, or a number with a K/M/G/T suffix"},
    {"tag_ttl", V_DURATION, SRV(tag_ttl), 0, UINT_MAX,
     "a duration: seconds, or a number with an s/m/h/d suffix"},
    {"sync", V_BOOL, SRV(sync), 0, 1, BOOL_EXPECT},
    {"max_size", V_SIZE, SRV(max_size), 0, UINT64_MAX,
     "a size: bytes, or a number with a K/M/G/T suffix (0 = unbounded)"},
    {NULL, V_STRING, 0, 0, 0, NULL},
};

static const key_spec delta_keys[] = {
    {"max_percent", V_COUNT, SRV(delta_max_percent), 1, 100, "a percentage from 1 to 100"},
    {"max_wait", V_DURATION, SRV(delta_max_wait), 0, UINT_MAX,
     "a duration: seconds, or a number with an s/m/h/d suffix"},
    {"workers", V_COUNT, SRV(delta_workers), 0, WORKERS_MAX, "a number of threads from 0 to 1024"},
    {"precompute", V_COUNT, SRV(delta_precompute), 0, 16, "a number of versions from 0 to 16"},
    {"precompute_scopes", V_OPT_STRING, SRV(delta_precompute_scopes), 0, 0,
     "registry[/repository] scopes, separated by blanks"},
    {NULL, V_STRING, 0, 0, 0, NULL},
};

static const key_spec trust_keys[] = {
    {"policy", V_OPT_STRING, SRV(policy), 0, 0, "a containers-policy.json file path"},
    {"trusted_root", V_OPT_STRING, SRV(trusted_root), 0, 0, "a sigstore trusted_root.json path"},
    {"module_certs", V_OPT_STRING, SRV(module_certs), 0, 0,
     "PEM or DER certificate file paths, separated by blanks"},
    {"module_scopes", V_OPT_STRING, SRV(module_scopes), 0, 0,
     "registry[/repository] scopes, separated by blanks"},
    {NULL, V_STRING, 0, 0, 0, NULL},
};

static const key_spec upstream_keys[] = {
    {"url", V_URL, UPS(url), 0, 0, "a URL starting with http:// or https://"},
    {"username", V_OPT_STRING, UPS(username), 0, 0, "a user name"},
    {"password", V_OPT_STRING, UPS(password), 0, 0, "a password"},
    {"ca_file", V_OPT_STRING, UPS(ca_file), 0, 0, "a file path"},
    {"tls_verify", V_BOOL, UPS(tls_verify), 0, 1, BOOL_EXPECT},
    {"connect_timeout", V_DURATION, UPS(connect_timeout), 1, UINT_MAX, TIME_EXPECT},
    {"transfer_timeout", V_DURATION, UPS(transfer_timeout), 1, UINT_MAX, TIME_EXPECT},
    {"retries", V_COUNT, UPS(retries), 0, RETRIES_MAX, "a number from 0 to 100"},
    {"breaker", V_DURATION, UPS(breaker), 0, UINT_MAX,
     "a duration: seconds, or a number with an s/m/h/d suffix (0 = off)"},
    {NULL, V_STRING, 0, 0, 0, NULL},
};

static const key_spec *key_find(const key_spec *table, const char *key)
{
    for (; table->key != NULL; table++) {
        if (strcmp(table->key, key) == 0)
            return table;
    }
    return NULL;
}

static int bad_value(const key_spec *k, const char *value, const char *where, char *err,
                     size_t errlen)
{
    return fail(err, errlen, where, "bad value \"%s\" for %s: expected %s", value, k->key,
                k->expect);
}

/* Strings: "" unsets an optional one; the old value is freed. */
static int set_string(char **field, const key_spec *k, const char *value, const char *where,
                      char *err, size_t errlen)
{
    if (value[0] == '\0' && k->kind != V_OPT_STRING)
        return fail(err, errlen, where, "%s must not be empty", k->key);
    if ((k->kind == V_LISTEN && !listen_valid(value)) || (k->kind == V_URL && !url_valid(value)))
        return bad_value(k, value, where, err, errlen);
    char *copy = NULL;
    if (value[0] != '\0' && (copy = strdup(value)) == NULL)
        return fail(err, errlen, where, "out of memory");
    free(*field);
    *field = copy;
    return 0;
}

/* Converts a number or boolean into *v, range-checked. */
static int parse_scalar(const key_spec *k, const char *value, uint64_t *v)
{
    unsigned u;
    int b;
    const char *end;
    switch (k->kind) {
    case V_BOOL:
        if (config_parse_bool(value, &b) != 0)
            return -1;
        *v = (uint64_t)b;
        return 0;
    case V_SIZE:
        if (config_parse_size(value, v) != 0)
            return -1;
        break;
    case V_DURATION:
        if (config_parse_duration(value, &u) != 0)
            return -1;
        *v = u;
        break;
    default:
        if (parse_u64(value, &end, v) != 0 || *end != '\0')
            return -1;
        break;
    }
    return *v >= k->min && *v <= k->max ? 0 : -1;
}

/* Stores a converted scalar in its field, whose type follows the kind. */
static void store_scalar(void *field, value_kind kind, uint64_t v)
{
    if (kind == V_BOOL)
        *(int *)field = (int)v;
    else if (kind == V_SIZE)
        *(uint64_t *)field = v;
    else
        *(unsigned *)field = (unsigned)v;
}

static int set_key(void *base, const key_spec *k, const char *value, const char *where, char *err,
                   size_t errlen)
{
    void *field = (char *)base + k->offset;
    if (k->kind <= V_URL)
        return set_string((char **)field, k, value, where, err, errlen);
    uint64_t v;
    if (parse_scalar(k, value, &v) != 0)
        return bad_value(k, value, where, err, errlen);
    store_scalar(field, k->kind, v);
    return 0;
}

static int unknown_key(const char *section, const char *key, const char *where, char *err,
                       size_t errlen)
{
    return fail(err, errlen, where, "unknown key \"%s\" in [%s]", key, section);
}

int config_set(config *cfg, const char *section, const char *key, const char *value,
               const char *where, char *err, size_t errlen)
{
    if (section == NULL || key == NULL || value == NULL)
        return fail(err, errlen, where, "missing section, key or value");
    const char *host;
    size_t host_len;
    section_kind sk = parse_section(section, &host, &host_len);
    if (sk == SEC_UNKNOWN)
        return fail(err, errlen, where, "unknown section [%s]", section);
    const key_spec *table = sk == SEC_SERVER  ? server_keys
                            : sk == SEC_CACHE ? cache_keys
                            : sk == SEC_TRUST ? trust_keys
                            : sk == SEC_DELTA ? delta_keys
                                              : upstream_keys;
    const key_spec *k = key_find(table, key);
    if (k == NULL)
        return unknown_key(section, key, where, err, errlen);
    void *base = cfg;
    if (sk == SEC_UPSTREAM &&
        (base = section_upstream(cfg, host, host_len, where, err, errlen)) == NULL)
        return -1;
    return set_key(base, k, value, where, err, errlen);
}

/* ---- defaults, lookup, validation, cleanup ----------------------------- */

void config_init(config *cfg)
{
    *cfg = (config){.listen = strdup(DEFAULT_LISTEN),
                    .workers = 0,
                    .log_requests = 1,
                    .cache_dir = strdup(DEFAULT_CACHE_DIR),
                    .map_size = DEFAULT_MAP_SIZE,
                    .tag_ttl = DEFAULT_TAG_TTL,
                    .sync = 1,
                    .delta_max_percent = 80,
                    .delta_max_wait = 10};
}

const config_upstream *config_upstream_for(const config *cfg, const char *ns)
{
    if (ns != NULL && ns[0] != '\0') {
        for (unsigned i = 0; i < cfg->n_upstreams; i++) {
            if (strcasecmp(cfg->upstreams[i].name, ns) == 0)
                return &cfg->upstreams[i];
        }
    }
    if (cfg->n_upstreams > 0 && cfg->upstreams[0].name[0] == '\0')
        return &cfg->upstreams[0];
    return NULL;
}

static int validate_upstream(const config_upstream *u, char *err, size_t errlen)
{
    char section[HOST_MAX + 16];
    if (u->name[0] == '\0')
        snprintf(section, sizeof section, "[upstream]");
    else
        snprintf(section, sizeof section, "[upstream \"%s\"]", u->name);
    if (u->url == NULL)
        return fail(err, errlen, section, "url is not set");
    if (!url_valid(u->url))
        return fail(err, errlen, section, "url \"%s\" must start with http:// or https://", u->url);
    return 0;
}

int config_validate(const config *cfg, char *err, size_t errlen)
{
    if (!listen_valid(cfg->listen))
        return fail(err, errlen, "[server]",
                    "listen must be HOST:PORT or [IPV6]:PORT with a port from 1 to 65535");
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL))
        return fail(err, errlen, "[server]", "tls_cert and tls_key must be set together");
    if (cfg->cache_dir == NULL)
        return fail(err, errlen, "[cache]", "dir is not set");
    if (cfg->n_upstreams == 0)
        return fail(err, errlen, NULL, "no upstream: set url in [upstream] or [upstream \"HOST\"]");
    for (unsigned i = 0; i < cfg->n_upstreams; i++) {
        if (validate_upstream(&cfg->upstreams[i], err, errlen) != 0)
            return -1;
    }
    return 0;
}

void config_free(config *cfg)
{
    free(cfg->listen);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->cache_dir);
    free(cfg->policy);
    free(cfg->trusted_root);
    free(cfg->module_certs);
    free(cfg->module_scopes);
    free(cfg->delta_precompute_scopes);
    for (unsigned i = 0; i < cfg->n_upstreams; i++) {
        config_upstream *u = &cfg->upstreams[i];
        free(u->name);
        free(u->url);
        free(u->username);
        free(u->password);
        free(u->ca_file);
    }
    *cfg = (config){0};
}

/* ---- the file ---------------------------------------------------------- */

typedef struct {
    config *cfg;
    const char *path;
    FILE *f;
    int read_errno; /* errno of a failed read, 0 if none */
    char *line;     /* getline() buffer */
    size_t cap;
    unsigned lineno; /* of the line inih is working on */
    char *section;   /* current section, whole and trimmed; NULL before any */
    int section_ok;  /* it was opened without error */
    unsigned seen_server, seen_cache, seen_trust, seen_delta; /* header lines, 0 = not yet */
    const char *seen_upstream[CONFIG_MAX_UPSTREAMS];          /* names of upstreams opened */
    unsigned seen_upstream_line[CONFIG_MAX_UPSTREAMS];
    unsigned n_seen_upstream;
    unsigned err_line; /* line of the first error, 0 = none yet */
    char *err;
    size_t errlen;
} loader;

/* "FILE:LINE" of the current line. */
static const char *where_here(const loader *ld, char *buf, size_t size)
{
    snprintf(buf, size, "%s:%u", ld->path, ld->lineno);
    return buf;
}

/* Keeps the first error: the caller formats it only if this returns 1. */
static int first_error(loader *ld)
{
    if (ld->err_line != 0)
        return 0;
    ld->err_line = ld->lineno;
    return 1;
}

/* Records an error at the current line, unless an earlier one is kept. */
static void loader_error(loader *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void loader_error(loader *ld, const char *fmt, ...)
{
    if (!first_error(ld) || ld->err == NULL || ld->errlen == 0)
        return;
    int n = snprintf(ld->err, ld->errlen, "%s:%u: ", ld->path, ld->lineno);
    size_t off = n < 0 ? 0 : ((size_t)n >= ld->errlen ? ld->errlen - 1 : (size_t)n);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err + off, ld->errlen - off, fmt, ap);
    va_end(ap);
}

/* A second header for the same section is an error. */
static void open_fixed_section(loader *ld, unsigned *seen, const char *name)
{
    if (*seen != 0)
        loader_error(ld, "duplicate section [%s] (first at line %u)", name, *seen);
    else
        *seen = ld->lineno;
    ld->section_ok = 1;
}

static void open_upstream_section(loader *ld, const char *host, size_t len)
{
    char where[PATH_MAX + 32];
    int first = ld->err_line == 0;
    config_upstream *u = section_upstream(ld->cfg, host, len, where_here(ld, where, sizeof where),
                                          first ? ld->err : NULL, first ? ld->errlen : 0);
    if (u == NULL) {
        first_error(ld);
        return;
    }
    for (unsigned i = 0; i < ld->n_seen_upstream; i++) {
        if (ld->seen_upstream[i] == u->name) {
            loader_error(ld, "duplicate upstream \"%s\" (first at line %u)", u->name,
                         ld->seen_upstream_line[i]);
            return;
        }
    }
    ld->seen_upstream[ld->n_seen_upstream] = u->name;
    ld->seen_upstream_line[ld->n_seen_upstream++] = ld->lineno;
    ld->section_ok = 1;
}

static void open_section(loader *ld)
{
    const char *host;
    size_t len;
    ld->section_ok = 0;
    switch (parse_section(ld->section, &host, &len)) {
    case SEC_SERVER:
        open_fixed_section(ld, &ld->seen_server, "server");
        break;
    case SEC_CACHE:
        open_fixed_section(ld, &ld->seen_cache, "cache");
        break;
    case SEC_TRUST:
        open_fixed_section(ld, &ld->seen_trust, "trust");
        break;
    case SEC_DELTA:
        open_fixed_section(ld, &ld->seen_delta, "delta");
        break;
    case SEC_UPSTREAM:
        open_upstream_section(ld, host, len);
        break;
    case SEC_UNKNOWN:
        loader_error(ld, "unknown section [%s]", ld->section);
        break;
    }
}

/* s starts with '['. Finds the header's end the way inih does (the first ']'
 * not after an inline " ;" comment); lines inih rejects are left to it. */
static void section_header(loader *ld, const char *s)
{
    size_t i = 1;
    int was_space = 0;
    while (s[i] != '\0' && s[i] != ']' && !(was_space && s[i] == ';')) {
        was_space = isspace((unsigned char)s[i]);
        i++;
    }
    if (s[i] != ']')
        return;
    free(ld->section);
    ld->section = strndup(s + 1, i - 1);
    ld->section_ok = 0;
    if (ld->section == NULL)
        loader_error(ld, "out of memory");
    else
        open_section(ld);
}

/* inih's fgets-like reader: one whole line per call, so that inih's line
 * numbers are ours. Bad lines are reported and handed over empty. */
static char *read_line(char *buf, int num, void *stream)
{
    loader *ld = stream;
    errno = 0;
    ssize_t n = getline(&ld->line, &ld->cap, ld->f);
    if (n < 0) {
        ld->read_errno = ferror(ld->f) ? (errno ? errno : EIO) : 0;
        return NULL;
    }
    ld->lineno++;
    char *s = ld->line;
    if (ld->lineno == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3, n -= 3;
    buf[0] = '\0';
    if (memchr(s, '\0', (size_t)n) != NULL) {
        loader_error(ld, "NUL byte in line");
        return buf;
    }
    while (isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    if (num < 2 || len >= (size_t)num) {
        loader_error(ld, "line too long (more than %d bytes)", num - 2);
        return buf;
    }
    if (s[0] == '[')
        section_header(ld, s);
    memcpy(buf, s, len + 1);
    return buf;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    loader *ld = user;
    (void)section; /* possibly truncated by inih: ld->section is whole */
    if (ld->section == NULL) {
        loader_error(ld, "key \"%s\" outside of any section", name);
        return 0;
    }
    if (!ld->section_ok)
        return 1; /* the header's error is the one to report */
    char where[PATH_MAX + 32];
    int first = ld->err_line == 0;
    if (config_set(ld->cfg, ld->section, name, value, where_here(ld, where, sizeof where),
                   first ? ld->err : NULL, first ? ld->errlen : 0) == 0)
        return 1;
    first_error(ld);
    return 0;
}

/* Turns inih's result into the one error to report, if any. */
static int load_result(loader *ld, int rc)
{
    if (ld->read_errno != 0)
        return fail(ld->err, ld->errlen, ld->path, "cannot read: %s", strerror(ld->read_errno));
    if (rc == -2)
        return fail(ld->err, ld->errlen, ld->path, "out of memory");
    if (rc > 0 && (ld->err_line == 0 || (unsigned)rc < ld->err_line)) {
        ld->lineno = (unsigned)rc;
        ld->err_line = 0;
        loader_error(ld, "syntax error: expected \"key = value\", \"[section]\" or a comment");
    }
    return ld->err_line != 0 ? -1 : 0;
}

int config_load_file(config *cfg, const char *path, char *err, size_t errlen)
{
    loader ld = {.cfg = cfg, .path = path, .err = err, .errlen = errlen};
    if (path == NULL)
        return fail(err, errlen, NULL, "no configuration file given");
    ld.f = fopen(path, "r");
    if (ld.f == NULL)
        return fail(err, errlen, path, "cannot open: %s", strerror(errno));
    int rc = ini_parse_stream(read_line, &ld, on_key, &ld);
    fclose(ld.f);
    free(ld.line);
    free(ld.section);
    return load_result(&ld, rc);
}
