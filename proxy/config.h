/*
 * config.h — Sluice's daemon configuration: an INI file (parsed with libinih)
 * plus command-line overrides, into one plain struct.
 *
 * conf/sluice.conf documents every key. Sections:
 *   [server]    listen, workers, tls_cert, tls_key, log_requests, offline
 *   [cache]     dir, map_size, tag_ttl, sync, max_size
 *   [trust]     policy, trusted_root, module_certs, module_scopes
 *   [delta]     max_percent, max_wait, workers
 *   [upstream]  the default upstream: url, username, password, ca_file,
 *               tls_verify, connect_timeout, transfer_timeout, retries, breaker
 *   [upstream "HOST"] another upstream, chosen by containerd's ?ns=HOST
 * Sizes accept K/M/G/T suffixes (powers of 1024); durations accept s/m/h/d
 * suffixes (plain number = seconds); booleans are true/false/yes/no/on/off/1/0.
 *
 * Every error names where it is: "FILE:LINE: what is wrong" for the file,
 * "--flag: what is wrong" for the command line. A config with any error is
 * rejected whole.
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_UPSTREAMS 16

typedef struct {
    char *name;     /* registry host[:port] matched against ?ns=; "" = default */
    char *url;      /* base URL, e.g. "https://registry.example.com" (no /v2) */
    char *username; /* Basic credentials, also used for the Bearer token endpoint */
    char *password;
    char *ca_file;             /* PEM bundle to verify the upstream's TLS certificate */
    int tls_verify;            /* default 1 */
    unsigned connect_timeout;  /* seconds, default 10 */
    unsigned transfer_timeout; /* seconds without progress before a transfer is cut, default 30 */
    unsigned retries;          /* retries of a failed upstream request, default 3 */
    unsigned breaker; /* seconds to fail fast after the upstream was unreachable, default 10 */
} config_upstream;

typedef struct {
    char *listen;     /* "ADDR:PORT" or "[V6]:PORT", default "127.0.0.1:5000" */
    unsigned workers; /* event loop threads, 0 = one per core (default) */
    char *tls_cert;   /* PEM certificate chain; with tls_key enables HTTPS */
    char *tls_key;
    int log_requests; /* one line per request on stderr, default 1 */
    int offline;      /* never contact an upstream, default 0 */

    char *cache_dir;   /* default "/var/lib/sluice" */
    uint64_t map_size; /* LMDB map size (address space, not disk), default 256G */
    unsigned tag_ttl;  /* seconds a tag is served without asking upstream, default 300 */
    int sync;          /* fsync on commit, default 1 */
    uint64_t max_size; /* cache bound in bytes for LRU eviction, 0 = unbounded (default) */

    char *policy;        /* containers-policy.json; NULL = accept anything (said at startup) */
    char *trusted_root;  /* sigstore trusted_root.json for keyless checks, optional */
    char *module_certs;  /* blank-separated certificate files for kernel-module signatures */
    char *module_scopes; /* blank-separated scopes whose kernel modules must be signed */

    unsigned delta_max_percent;    /* largest delta served, % of the target, default 80 */
    unsigned delta_max_wait;       /* seconds a client waits for a delta, default 10 */
    unsigned delta_workers;        /* delta threads, 0 = one per core (default) */
    unsigned delta_precompute;     /* earlier versions to precompute deltas from, default 0 */
    char *delta_precompute_scopes; /* blank-separated registry[/repo] scopes; NULL = all */

    config_upstream upstreams[CONFIG_MAX_UPSTREAMS];
    unsigned n_upstreams; /* upstreams[0] is the default when its name is "" */
} config;

/* Fills cfg with defaults (no upstream). */
void config_init(config *cfg);
/* Reads path into cfg (on top of what is there). 0, or -1 with err set. */
int config_load_file(config *cfg, const char *path, char *err, size_t errlen);
/* Sets one key as if read from the file; `where` prefixes errors
 * (e.g. "--listen" or "sluice.conf:12"). section is "server", "cache",
 * "upstream" or "upstream \"HOST\"". 0, or -1 with err set. */
int config_set(config *cfg, const char *section, const char *key, const char *value,
               const char *where, char *err, size_t errlen);
/* Checks cross-key rules (tls_cert without tls_key, no upstream url...). */
int config_validate(const config *cfg, char *err, size_t errlen);
/* The upstream for a ?ns= value (NULL or "" = default); NULL if none matches
 * and there is no default. */
const config_upstream *config_upstream_for(const config *cfg, const char *ns);
void config_free(config *cfg);

/* Parsing helpers, exposed for tests: 0 on success, -1 on bad syntax. */
int config_parse_size(const char *s, uint64_t *out);
int config_parse_duration(const char *s, unsigned *out);
int config_parse_bool(const char *s, int *out);

#endif
