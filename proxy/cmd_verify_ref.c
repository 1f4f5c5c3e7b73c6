/*
 * cmd_verify_ref.c — `sluice verify [--config FILE] [--cache DIR]
 * [--upstream URL] [--policy FILE] [--trusted-root FILE] [--offline] REF`:
 * would the daemon serve this manifest, and why (see cmd_verify_ref.h).
 *
 * How it works. The configuration is read like `sluice serve` reads it (the
 * INI file, then the flags through config_set, then config_validate). REF is
 * [REGISTRY/]REPO:TAG or [REGISTRY/]REPO@sha256:HEX; a first component that
 * names a configured upstream (its ?ns= name or its URL's host[:port]) picks
 * that upstream, otherwise the whole name is a repository of the default
 * upstream, as in the daemon's routes. Then it builds the part of a daemon a
 * trust decision needs — the cache, the upstream client thread (offline with
 * --offline) and trust_new (the same policy, trusted root and module
 * settings) — and asks trust.c on this thread: trust_find_manifest resolves
 * the reference as the manifest route does, trust_decide_manifest runs the
 * verifier's own evaluation and reports what it found through a note
 * callback, which prints each line. Nothing is decided here.
 */
#include "cmd_verify_ref.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cache.h"
#include "cmd_verify.h"
#include "config.h"
#include "daemon.h"
#include "dl_libs.h"
#include "oci.h"
#include "trust.h"
#include "upstream.h"
#include "verify.h"

/* What REF names. */
typedef struct {
    const config_upstream *up;
    char host[256]; /* the upstream URL's host[:port]: the registry the policy sees */
    char repo[OCI_NAME_MAX + 1];
    char tag[OCI_TAG_MAX + 1]; /* "" when by digest */
    int by_digest;
    uint8_t digest[32];
} target;

/* The daemon's parts a decision needs. */
typedef struct {
    config cfg;
    daemon_ctx d;
} rig;

/* ---- configuration ---- */

static int set_flag(config *cfg, const char *section, const char *key, const char *value,
                    const char *flag, char *err, size_t errlen)
{
    return value ? config_set(cfg, section, key, value, flag, err, errlen) : 0;
}

static int load_config(const verify_ref_opts *o, config *cfg, char *err, size_t errlen)
{
    if (o->config_path && config_load_file(cfg, o->config_path, err, errlen) != 0)
        return -1;
    if (set_flag(cfg, "cache", "dir", o->cache_dir, "--cache", err, errlen) != 0 ||
        set_flag(cfg, "upstream", "url", o->upstream, "--upstream", err, errlen) != 0 ||
        set_flag(cfg, "trust", "policy", o->policy, "--policy", err, errlen) != 0 ||
        set_flag(cfg, "trust", "trusted_root", o->trusted_root, "--trusted-root", err, errlen) != 0)
        return -1;
    if (o->offline)
        cfg->offline = 1;
    return config_validate(cfg, err, errlen);
}

/* ---- the reference ---- */

static int bad_ref(char *err, size_t errlen, const char *ref, const char *what)
{
    snprintf(err, errlen, "%s: %s", ref, what);
    return -1;
}

/* The upstream a first path component names (by ?ns= name or URL host). */
static const config_upstream *upstream_named(const config *cfg, const char *name, size_t n)
{
    for (unsigned i = 0; i < cfg->n_upstreams; i++) {
        const config_upstream *u = &cfg->upstreams[i];
        char host[256];
        upstream_host_of(u->url, host, sizeof(host));
        if ((strlen(u->name) == n && strncasecmp(u->name, name, n) == 0) ||
            (strlen(host) == n && strncasecmp(host, name, n) == 0))
            return u;
    }
    return NULL;
}

/* Picks the upstream and returns the repository part of name. */
static const char *pick_upstream(const config *cfg, const char *name, target *t)
{
    const char *slash = strchr(name, '/');
    t->up = slash ? upstream_named(cfg, name, (size_t)(slash - name)) : NULL;
    if (t->up)
        return slash + 1;
    t->up = config_upstream_for(cfg, NULL);
    return name;
}

static int split_reference(const char *ref, char *name, size_t namelen, target *t, char *err,
                           size_t errlen)
{
    const char *at = strchr(ref, '@');
    size_t n = at ? (size_t)(at - ref) : strlen(ref);
    if (n == 0 || n >= namelen)
        return bad_ref(err, errlen, ref, "not an image reference");
    memcpy(name, ref, n);
    name[n] = 0;
    if (at && verify_digest_parse(at + 1, strlen(at + 1), t->digest) != VERIFY_OK)
        return bad_ref(err, errlen, ref, "the part after '@' is not a sha256:HEX digest");
    t->by_digest = at != NULL;
    char *colon = strrchr(name, ':'), *slash = strrchr(name, '/');
    if (colon && (!slash || colon > slash)) {
        *colon = 0;
        if (!oci_tag_valid(colon + 1, strlen(colon + 1)))
            return bad_ref(err, errlen, ref, "invalid tag");
        snprintf(t->tag, sizeof(t->tag), "%s", colon + 1);
    }
    if (t->by_digest == (t->tag[0] != 0))
        return bad_ref(err, errlen, ref, "give exactly one of REPO:TAG and REPO@sha256:HEX");
    return 0;
}

static int parse_ref(const config *cfg, const char *ref, target *t, char *err, size_t errlen)
{
    char name[1024];
    memset(t, 0, sizeof(*t));
    if (split_reference(ref, name, sizeof(name), t, err, errlen) != 0)
        return -1;
    const char *repo = pick_upstream(cfg, name, t);
    if (!t->up)
        return bad_ref(err, errlen, ref,
                       "names no configured upstream and there is no default one");
    if (!oci_name_valid(repo, strlen(repo)) || strlen(repo) >= sizeof(t->repo))
        return bad_ref(err, errlen, ref, "invalid repository name");
    snprintf(t->repo, sizeof(t->repo), "%s", repo);
    upstream_host_of(t->up->url, t->host, sizeof(t->host));
    return 0;
}

/* ---- the daemon's parts ---- */

static int open_cache(const config *cfg, cache **out, char *err, size_t errlen)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/data.mdb", cfg->cache_dir);
    if (cfg->offline && stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: no cache there to decide from offline (%s)", cfg->cache_dir,
                 strerror(errno));
        return -1;
    }
    cache_options opts = {.map_size = cfg->map_size, .no_sync = !cfg->sync};
    char cerr[256] = "";
    if (cache_open(out, cfg->cache_dir, &opts, cerr, sizeof(cerr)) != CACHE_OK) {
        snprintf(err, errlen, "cache %s: %s", cfg->cache_dir, cerr);
        return -1;
    }
    return 0;
}

static int rig_start(rig *r, char *err, size_t errlen)
{
    r->d.cfg = &r->cfg;
    atomic_init(&r->d.tag_ttl, r->cfg.tag_ttl);
    atomic_init(&r->d.log_requests, 0);
    if (open_cache(&r->cfg, &r->d.cache, err, errlen) != 0)
        return -1;
    if (!(r->d.upstream = upstream_start(r->cfg.offline))) {
        snprintf(err, errlen, "cannot start the upstream client");
        return -1;
    }
    r->d.trust = trust_new(&r->d, &r->cfg, err, errlen);
    return r->d.trust ? 0 : -1;
}

/* The daemon's shutdown order (server.c teardown). */
static void rig_stop(rig *r)
{
    if (r->d.upstream)
        upstream_stop(r->d.upstream);
    if (r->d.trust)
        trust_stop(r->d.trust);
    if (r->d.upstream)
        upstream_free(r->d.upstream);
    if (r->d.trust)
        trust_free(r->d.trust);
    if (r->d.cache)
        cache_close(r->d.cache);
}

/* ---- deciding ---- */

static void print_note(void *arg, const char *line)
{
    (void)arg;
    printf("%s\n", line);
}

static int print_verdict(const char *verdict, const char *reason, const char *detail, int rc)
{
    printf("verdict: %s\nreason: %s\ndetail: %s\n", verdict, reason, detail);
    return rc;
}

/* "host/repo:tag" or "host/repo@sha256:HEX", as the policy sees it. */
static void image_name(const target *t, char *out, size_t outlen)
{
    char hex[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(t->digest, hex);
    snprintf(out, outlen, "%s/%s%s%s", t->host, t->repo, t->by_digest ? "@" : ":",
             t->by_digest ? hex : t->tag);
}

static int not_found(const rig *r, const char *image, int found)
{
    const char *reason = r->cfg.offline ? "not-cached"
                         : found == 1   ? "manifest-unknown"
                                        : "unavailable";
    const char *why = r->cfg.offline ? "not in the cache (offline: the upstream is not asked)"
                      : found == 1   ? "the upstream does not have it"
                                     : "the upstream could not answer and the cache does not "
                                       "hold it";
    printf("verdict: denied\nreason: %s\ndetail: %s: %s\n", reason, image, why);
    return 1;
}

static int decide(rig *r, const target *t)
{
    char image[1024], hex[VERIFY_DIGEST_TEXT_LEN];
    const char *tag = t->by_digest ? NULL : t->tag;
    uint8_t digest[32];
    memcpy(digest, t->digest, sizeof(digest));
    image_name(t, image, sizeof(image));
    printf("image: %s\nupstream: %s%s\n", image, t->up->url,
           r->cfg.offline ? " (offline: the cache only)" : "");
    int found = trust_find_manifest(r->d.trust, t->up, t->repo, tag, digest);
    if (found != 0)
        return not_found(r, image, found);
    verify_digest_format(digest, hex);
    printf("digest: %s\n", hex);
    verify_verdict v;
    trust_decide_manifest(r->d.trust, t->up, t->repo, tag, digest, print_note, NULL, &v);
    return print_verdict(v.allowed ? "allowed" : "denied", verify_reason_name(v.reason), v.text,
                         v.allowed ? 0 : 1);
}

int cmd_verify_ref(const verify_ref_opts *o)
{
    rig r;
    target t;
    char err[1024] = "";
    int rc = 2;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "sluice verify: %s\n", dl_curl_error("cannot initialise libcurl"));
        return 2;
    }
    memset(&r, 0, sizeof(r));
    config_init(&r.cfg);
    evthread_use_pthreads();
    if (load_config(o, &r.cfg, err, sizeof(err)) == 0 &&
        parse_ref(&r.cfg, o->ref, &t, err, sizeof(err)) == 0 &&
        rig_start(&r, err, sizeof(err)) == 0)
        rc = decide(&r, &t);
    else
        fprintf(stderr, "sluice verify: %s\n", err[0] ? err : "cannot start");
    fflush(stdout);
    rig_stop(&r);
    config_free(&r.cfg);
    curl_global_cleanup();
    libevent_global_shutdown();
    return rc;
}

int cmd_verify_main(int argc, char **argv)
{
    verify_ref_opts ref;
    int rc = cmd_verify_args(argc, argv, &ref);
    return rc == CMD_VERIFY_REF ? cmd_verify_ref(&ref) : rc;
}
