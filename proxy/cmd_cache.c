/*
 * cmd_cache.c — the cache maintenance commands:
 *
 *   sluice gc   [--cache DIR] [--config FILE] [--max-size SIZE]
 *       Evicts least-recently-used content that is not pinned (deltas
 *       first, then blobs and manifests, never a transfer in progress)
 *       until the cache holds at most max_size bytes ([cache] max_size, or
 *       --max-size), and says what went and what is left.
 *   sluice stat [--cache DIR] [--config FILE] [--json] [--verify]
 *       Prints the cache's size, pinned size, objects, hit ratio, bytes
 *       served, bytes fetched upstream and bytes saved by deltas; --json
 *       prints the same as one JSON object; --verify re-hashes every blob
 *       and manifest and lists those that do not match their digest.
 *
 * How it works. Both open the cache like the daemon (they may run next to
 * it: LMDB's readers never block, eviction works in short transactions and
 * never cuts short what a reader's snapshot sees). Sizes come from
 * cache_stat, which is O(1); counters from cache_counters_get, where the
 * daemon flushes them.
 */
#include "cmd_cache.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_common.h"
#include "verify.h"

typedef struct {
    cli_opts common;
    int json, verify;
} cache_cmd_opts;

static void usage(FILE *out, const char *cmd)
{
    if (strcmp(cmd, "gc") == 0)
        fprintf(out, "usage: sluice gc [--cache DIR] [--config FILE] [--max-size SIZE]\n"
                     "Evicts least-recently-used unpinned content down to max_size.\n");
    else
        fprintf(out, "usage: sluice stat [--cache DIR] [--config FILE] [--json] [--verify]\n"
                     "Prints what the cache holds and what it has served.\n");
}

/* 0 go on, 1 --help, 2 usage error. */
static int parse_args(int argc, char **argv, cache_cmd_opts *o)
{
    static const struct option opts[] = {{"cache", required_argument, NULL, 'c'},
                                         {"config", required_argument, NULL, 'f'},
                                         {"max-size", required_argument, NULL, 'm'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"verify", no_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int gc = strcmp(argv[0], "gc") == 0;
    *o = (cache_cmd_opts){.common = {.cmd = argv[0]}};
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'c')
            o->common.cache_dir = optarg;
        else if (opt == 'f')
            o->common.config_path = optarg;
        else if (opt == 'm' && gc)
            o->common.max_size = optarg;
        else if (opt == 'j' && !gc)
            o->json = 1;
        else if (opt == 'v' && !gc)
            o->verify = 1;
        else if (opt == 'h')
            return usage(stdout, argv[0]), 1;
        else
            return usage(stderr, argv[0]), 2;
    }
    if (optind < argc) {
        fprintf(stderr, "sluice %s: unexpected argument '%s'\n", argv[0], argv[optind]);
        return 2;
    }
    return 0;
}

/* Loads the config and opens the cache; NULL after printing why. */
static cache *open_for(const cache_cmd_opts *o, config *cfg)
{
    if (cli_load_config(&o->common, cfg) != 0)
        return NULL;
    return cli_open_cache(&o->common, cfg, 0);
}

/* ---- gc ---- */

int cmd_gc(int argc, char **argv)
{
    cache_cmd_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    config cfg;
    cache *c = open_for(&o, &cfg);
    rc = 2;
    if (c != NULL && cfg.max_size == 0) {
        fprintf(stderr, "sluice gc: the cache is unbounded: set [cache] max_size or give "
                        "--max-size SIZE\n");
    } else if (c != NULL) {
        cache_evict_result r;
        cache_stats st;
        cache_status cs = cache_evict(c, cfg.max_size, &r);
        if (cs == CACHE_OK)
            cs = cache_stat(c, &st);
        if (cs != CACHE_OK) {
            fprintf(stderr, "sluice gc: %s: %s\n", cfg.cache_dir, cache_strerror(cs));
        } else {
            char freed[32], left[32], max[32], pinned[32];
            cli_format_size(r.evicted_bytes, freed);
            cli_format_size(r.size_after, left);
            cli_format_size(cfg.max_size, max);
            cli_format_size(st.pinned_bytes, pinned);
            printf("evicted %llu objects (%s); the cache holds %s of at most %s (%s pinned)\n",
                   (unsigned long long)r.evicted_objects, freed, left, max, pinned);
            rc = r.size_after <= cfg.max_size ? 0 : 1;
            if (rc != 0)
                fprintf(stderr, "sluice gc: pinned and in-flight content alone exceeds "
                                "max_size\n");
        }
    }
    cache_close(c);
    config_free(&cfg);
    return rc;
}

/* ---- stat ---- */

static void print_text(const config *cfg, const cache_stats *st, const cache_counters *k)
{
    char b[8][32];
    cli_format_size(st->blob_bytes + st->manifest_bytes, b[0]);
    cli_format_size(st->pinned_bytes, b[1]);
    cli_format_size(st->delta_bytes, b[2]);
    cli_format_size(k->bytes_served, b[3]);
    cli_format_size(k->bytes_upstream, b[4]);
    cli_format_size(k->bytes_saved_deltas, b[5]);
    cli_format_size(st->used_bytes, b[6]);
    cli_format_size(cfg->max_size, b[7]);
    uint64_t requests = k->hits + k->misses;
    printf("cache            %s\n", cfg->cache_dir);
    printf("size             %s (max %s)\n", b[0], cfg->max_size ? b[7] : "unbounded");
    printf("pinned           %s\n", b[1]);
    printf("objects          %llu blobs, %llu manifests, %llu tags, %llu in progress\n",
           (unsigned long long)st->blobs, (unsigned long long)st->manifests,
           (unsigned long long)st->tags, (unsigned long long)st->partial_blobs);
    printf("deltas           %llu (%s)\n", (unsigned long long)st->deltas, b[2]);
    if (requests > 0)
        printf("hit ratio        %.1f%% (%llu hits, %llu misses)\n",
               100.0 * (double)k->hits / (double)requests, (unsigned long long)k->hits,
               (unsigned long long)k->misses);
    else
        printf("hit ratio        - (no requests counted)\n");
    printf("served           %s\n", b[3]);
    printf("fetched upstream %s\n", b[4]);
    printf("saved by deltas  %s\n", b[5]);
    printf("file             %s in use\n", b[6]);
}

static void print_json(const config *cfg, const cache_stats *st, const cache_counters *k)
{
    uint64_t requests = k->hits + k->misses;
    json_t *o = json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
        "cache", cfg->cache_dir, "size_bytes", (json_int_t)(st->blob_bytes + st->manifest_bytes),
        "max_size_bytes", (json_int_t)cfg->max_size, "pinned_bytes", (json_int_t)st->pinned_bytes,
        "blobs", (json_int_t)st->blobs, "blob_bytes", (json_int_t)st->blob_bytes, "partial_blobs",
        (json_int_t)st->partial_blobs, "manifests", (json_int_t)st->manifests, "manifest_bytes",
        (json_int_t)st->manifest_bytes, "tags", (json_int_t)st->tags, "deltas",
        (json_int_t)st->deltas, "delta_bytes", (json_int_t)st->delta_bytes, "hits",
        (json_int_t)k->hits, "misses", (json_int_t)k->misses, "bytes_served",
        (json_int_t)k->bytes_served, "bytes_upstream", (json_int_t)k->bytes_upstream,
        "bytes_saved_deltas", (json_int_t)k->bytes_saved_deltas);
    json_object_set_new(o, "hit_ratio",
                        requests ? json_real((double)k->hits / (double)requests) : json_null());
    json_object_set_new(o, "used_bytes", json_integer((json_int_t)st->used_bytes));
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
    printf("%s\n", text ? text : "{}");
    free(text);
    json_decref(o);
}

static void on_bad(void *arg, const uint8_t digest[CACHE_DIGEST_LEN], int is_manifest,
                   cache_status st)
{
    (void)arg;
    char text[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(digest, text);
    fprintf(stderr, "sluice stat: %s %s: %s\n", is_manifest ? "manifest" : "blob", text,
            cache_strerror(st));
}

/* 0 all good, 1 bad objects, 2 could not check. */
static int verify_all(cache *c, int json)
{
    cache_check_result r;
    cache_status st = cache_check(c, on_bad, NULL, &r);
    if (st != CACHE_OK) {
        fprintf(stderr, "sluice stat: --verify: %s\n", cache_strerror(st));
        return 2;
    }
    fprintf(json ? stderr : stdout, "verified         %llu blobs, %llu manifests: %llu bad\n",
            (unsigned long long)r.blobs, (unsigned long long)r.manifests,
            (unsigned long long)r.bad);
    return r.bad ? 1 : 0;
}

int cmd_stat(int argc, char **argv)
{
    cache_cmd_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    config cfg;
    cache *c = open_for(&o, &cfg);
    cache_stats st;
    cache_counters k;
    cache_status cs = CACHE_IO;
    rc = 2;
    if (c != NULL && (cs = cache_stat(c, &st)) == CACHE_OK &&
        (cs = cache_counters_get(c, &k)) == CACHE_OK) {
        if (o.json)
            print_json(&cfg, &st, &k);
        else
            print_text(&cfg, &st, &k);
        rc = o.verify ? verify_all(c, o.json) : 0;
    } else if (c != NULL) {
        fprintf(stderr, "sluice stat: %s: %s\n", cfg.cache_dir, cache_strerror(cs));
    }
    cache_close(c);
    config_free(&cfg);
    return rc;
}
