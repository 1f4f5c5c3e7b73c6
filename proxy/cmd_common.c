/*
 * cmd_common.c — shared pieces of the offline cache commands (see
 * cmd_common.h): configuration and cache opening, reference parsing and
 * repository keys, human-readable sizes and the terminal progress bar.
 *
 * How it works. The config file is read with config_load_file and the
 * command-line values go through config_set, so they are checked exactly as
 * in `sluice serve`. The cache is opened with the config's map size and sync
 * flag (a seed running next to the daemon must not shrink or change its
 * map). Repository keys follow transfer_repo_key: the registry a reference
 * names is looked up among the configured upstreams (by ?ns= name or URL
 * host) and replaced by that upstream's URL host. The progress bar writes
 * "\r" + the line + "\033[K" to stderr only when stderr is a terminal.
 */
#include "cmd_common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "upstream.h"
#include "verify.h"

#define PROGRESS_INTERVAL 0.1 /* seconds between redraws */
#define BAR_WIDTH 24

/* ---- configuration and the cache ---- */

int cli_load_config(const cli_opts *o, config *cfg)
{
    char err[512];
    config_init(cfg);
    int rc = 0;
    if (o->config_path != NULL)
        rc = config_load_file(cfg, o->config_path, err, sizeof err);
    if (rc == 0 && o->cache_dir != NULL)
        rc = config_set(cfg, "cache", "dir", o->cache_dir, "--cache", err, sizeof err);
    if (rc == 0 && o->max_size != NULL)
        rc = config_set(cfg, "cache", "max_size", o->max_size, "--max-size", err, sizeof err);
    if (rc == 0 && cfg->cache_dir == NULL) {
        snprintf(err, sizeof err, "no cache directory: give --cache DIR or [cache] dir");
        rc = -1;
    }
    if (rc != 0)
        fprintf(stderr, "sluice %s: %s\n", o->cmd, err);
    return rc;
}

cache *cli_open_cache(const cli_opts *o, const config *cfg, int create)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", cfg->cache_dir);
    if (!create && stat(path, &st) != 0) {
        fprintf(stderr, "sluice %s: %s: no cache there (%s)\n", o->cmd, cfg->cache_dir,
                strerror(errno));
        return NULL;
    }
    cache_options opts = {.map_size = cfg->map_size, .no_sync = !cfg->sync};
    char err[512] = "";
    cache *c = NULL;
    if (cache_open(&c, cfg->cache_dir, &opts, err, sizeof err) != CACHE_OK) {
        fprintf(stderr, "sluice %s: cannot open the cache in %s: %s\n", o->cmd, cfg->cache_dir,
                err);
        return NULL;
    }
    return c;
}

/* ---- references ---- */

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int cli_is_tag(const char *text)
{
    return oci_tag_valid(text, strlen(text));
}

/* A first path component is a registry when it has a '.' or ':' or is
 * "localhost" (the rule docker and containers/image use). */
static size_t registry_len(const char *name)
{
    const char *slash = strchr(name, '/');
    if (slash == NULL)
        return 0;
    size_t n = (size_t)(slash - name);
    if (memchr(name, '.', n) || memchr(name, ':', n) || (n == 9 && !memcmp(name, "localhost", 9)))
        return n;
    return 0;
}

static int parse_digest_part(const char *text, const char *at, cli_ref *out, char *err,
                             size_t errlen)
{
    if (verify_digest_parse(at + 1, strlen(at + 1), out->digest) != VERIFY_OK)
        return fail(err, errlen, "%s: '%s' is not a sha256 digest", text, at + 1);
    out->has_digest = 1;
    return 0;
}

int cli_parse_ref(const char *text, cli_ref *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char name[1024];
    const char *at = strchr(text, '@');
    size_t n = at ? (size_t)(at - text) : strlen(text);
    if (n == 0 || n >= sizeof name)
        return fail(err, errlen, "'%s' is not an image reference", text);
    memcpy(name, text, n);
    name[n] = '\0';
    if (at != NULL && parse_digest_part(text, at, out, err, errlen) != 0)
        return -1;
    size_t rl = registry_len(name);
    if (rl >= sizeof out->registry)
        return fail(err, errlen, "%s: registry name too long", text);
    memcpy(out->registry, name, rl);
    char *path = name + (rl ? rl + 1 : 0);
    char *colon = strrchr(path, ':');
    if (colon != NULL) {
        *colon = '\0';
        if (!cli_is_tag(colon + 1))
            return fail(err, errlen, "%s: '%s' is not a valid tag", text, colon + 1);
        snprintf(out->tag, sizeof out->tag, "%s", colon + 1);
    }
    if (!oci_name_valid(path, strlen(path)))
        return fail(err, errlen, "%s: '%s' is not a valid repository name", text, path);
    snprintf(out->repository, sizeof out->repository, "%s", path);
    return 0;
}

/* The URL host of the upstream a registry name stands for, or NULL. */
static const config_upstream *upstream_named(const config *cfg, const char *registry)
{
    if (registry[0] == '\0')
        return config_upstream_for(cfg, NULL);
    for (unsigned i = 0; i < cfg->n_upstreams; i++) {
        const config_upstream *u = &cfg->upstreams[i];
        char host[256];
        upstream_host_of(u->url != NULL ? u->url : "", host, sizeof host);
        if ((u->name != NULL && strcmp(u->name, registry) == 0) || strcmp(host, registry) == 0)
            return u;
    }
    return NULL;
}

int cli_repo_key(const config *cfg, const char *registry, const char *repository, char *out,
                 size_t outlen, char *err, size_t errlen)
{
    const config_upstream *u = upstream_named(cfg, registry);
    char host[256];
    if (u != NULL && u->url != NULL)
        upstream_host_of(u->url, host, sizeof host);
    else if (registry[0] != '\0')
        snprintf(host, sizeof host, "%s", registry);
    else
        return fail(err, errlen,
                    "'%s' names no registry and no default upstream is configured "
                    "(give REGISTRY/%s, or --config with an [upstream] url)",
                    repository, repository);
    if ((size_t)snprintf(out, outlen, "%s/%s", host, repository) >= outlen)
        return fail(err, errlen, "%s/%s: name too long", host, repository);
    return 0;
}

void cli_split_key(const char *key, char *registry, size_t rlen, char *repository, size_t plen)
{
    const char *slash = strchr(key, '/');
    size_t n = slash ? (size_t)(slash - key) : strlen(key);
    snprintf(registry, rlen, "%.*s", (int)n, key);
    snprintf(repository, plen, "%s", slash ? slash + 1 : "");
}

/* ---- sizes and time ---- */

void cli_format_size(uint64_t bytes, char out[32])
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(out, 32, "%llu B", (unsigned long long)bytes);
    else
        snprintf(out, 32, "%.1f %s", v, units[u]);
}

double cli_seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* ---- progress ---- */

void cli_progress_start(cli_progress *p, const char *label, uint64_t total)
{
    memset(p, 0, sizeof *p);
    size_t n = strlen(label);
    const char *tail = n > sizeof p->label - 1 ? label + n - (sizeof p->label - 4) : NULL;
    if (tail != NULL)
        snprintf(p->label, sizeof p->label, "...%s", tail);
    else
        snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total;
    p->tty = isatty(STDERR_FILENO);
    clock_gettime(CLOCK_MONOTONIC, &p->start);
    p->last = p->start;
}

static void draw(cli_progress *p)
{
    double secs = cli_seconds_since(&p->start);
    double rate = secs > 0 ? (double)p->done / secs : 0;
    char done[32], total[32], speed[32], eta[32];
    snprintf(eta, sizeof eta, "%s", p->done >= p->total ? "0:00" : "--:--");
    cli_format_size(p->done, done);
    cli_format_size(p->total, total);
    cli_format_size((uint64_t)rate, speed);
    int filled = p->total ? (int)((double)BAR_WIDTH * (double)p->done / (double)p->total) : 0;
    filled = filled > BAR_WIDTH ? BAR_WIDTH : filled;
    if (rate > 0 && p->total > p->done) {
        uint64_t left = (uint64_t)((double)(p->total - p->done) / rate);
        snprintf(eta, sizeof eta, "%llu:%02llu", (unsigned long long)(left / 60),
                 (unsigned long long)(left % 60));
    }
    char bar[BAR_WIDTH + 1];
    memset(bar, '#', (size_t)filled);
    memset(bar + filled, '.', (size_t)(BAR_WIDTH - filled));
    bar[BAR_WIDTH] = '\0';
    fprintf(stderr, "\r%s [%s] %s / %s  %s/s  ETA %s\033[K", p->label, bar, done, total, speed,
            eta);
    fflush(stderr);
    p->shown = 1;
}

void cli_progress_set(cli_progress *p, uint64_t done)
{
    p->done = done;
    if (!p->tty)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double since =
        (double)(now.tv_sec - p->last.tv_sec) + (double)(now.tv_nsec - p->last.tv_nsec) / 1e9;
    if (p->shown && since < PROGRESS_INTERVAL)
        return;
    p->last = now;
    draw(p);
}

void cli_progress_clear(cli_progress *p)
{
    if (p->tty && p->shown) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        p->shown = 0;
    }
}

void cli_progress_end(cli_progress *p)
{
    if (!p->tty)
        return;
    draw(p);
    fputc('\n', stderr);
    p->shown = 0;
}
