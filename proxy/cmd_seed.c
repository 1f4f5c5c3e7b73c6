/*
 * cmd_seed.c — the `sluice seed` command line:
 *
 *   sluice seed [--cache DIR] [--config FILE] [--repo [REGISTRY/]REPO]
 *               [--no-pin] PATH...
 *
 * Each PATH is an OCI image layout directory (as `skopeo copy ... oci:DIR`
 * or `oras copy --to-oci-layout` write it) or a tar archive of one (as
 * `skopeo copy ... oci-archive:FILE` or `sluice export` write it; plain,
 * gzip, zstd, xz, bzip2 — libarchive detects the compression). Everything it
 * holds is imported into the cache (see seed.h): tags, manifests, indexes,
 * blobs, cosign signatures, referrers and Sluice delta annotations, every
 * digest verified, the trust policy ([trust] policy) applied, all of it
 * pinned unless --no-pin. --repo names the repository for entries whose
 * annotations do not (a repository without a registry belongs to the
 * default upstream); it overrides the annotations when given.
 *
 * How it works. The config is loaded as the daemon loads it (cache dir, map
 * size, sync, upstreams, policy); the cache is opened alongside a running
 * daemon if there is one (LMDB allows several processes; every write is its
 * own short transaction). Inputs are imported one after the other with one
 * chunk buffer and one hasher. On a terminal stderr shows a progress bar per
 * input; stdout gets one summary line per input. Problems are reported on
 * stderr as they are found, naming the input and the object.
 */
#include "cmd_seed.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd_common.h"
#include "seed.h"
#include "seed_append.h"

typedef struct {
    cli_opts common;
    const char *repo;
    int no_pin;
} seed_opts;

static void usage(FILE *out)
{
    fprintf(out, "usage: sluice seed [--cache DIR] [--config FILE] [--repo [REGISTRY/]REPO]\n"
                 "                   [--no-pin] PATH...\n"
                 "PATH: an OCI image layout directory, or a tar archive of one (plain or\n"
                 "compressed). Imports every tag, manifest, blob, signature and referrer it\n"
                 "holds into the cache, verified and pinned.\n");
}

/* 0 to go on, 1 for --help, 2 on a usage error. */
static int parse_args(int argc, char **argv, seed_opts *o)
{
    static const struct option opts[] = {
        {"cache", required_argument, NULL, 'c'}, {"config", required_argument, NULL, 'f'},
        {"repo", required_argument, NULL, 'r'},  {"no-pin", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    *o = (seed_opts){.common = {.cmd = "seed"}};
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            o->common.cache_dir = optarg;
            break;
        case 'f':
            o->common.config_path = optarg;
            break;
        case 'r':
            o->repo = optarg;
            break;
        case 'n':
            o->no_pin = 1;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "sluice seed: no PATH given\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

/* --repo as a repository key; 0 or -1 (reported). */
static int repo_key(const config *cfg, const char *text, char *key, size_t keylen)
{
    cli_ref r;
    char err[512];
    if (cli_parse_ref(text, &r, err, sizeof err) != 0 ||
        cli_repo_key(cfg, r.registry, r.repository, key, keylen, err, sizeof err) != 0) {
        fprintf(stderr, "sluice seed: --repo: %s\n", err);
        return -1;
    }
    if (r.tag[0] || r.has_digest) {
        fprintf(stderr, "sluice seed: --repo %s: give a repository, without a tag or digest\n",
                text);
        return -1;
    }
    return 0;
}

static verify_policy *load_policy(const config *cfg, int *failed)
{
    *failed = 0;
    if (cfg->policy == NULL)
        return NULL;
    verify_policy_options po = {.trusted_root_path = cfg->trusted_root};
    char err[1024];
    verify_policy *p = verify_policy_load(cfg->policy, &po, err, sizeof err);
    if (p == NULL) {
        fprintf(stderr, "sluice seed: trust policy: %s\n", err);
        *failed = 1;
    }
    return p;
}

static void summary(const seed_ctx *x, double secs)
{
    char bytes[32], rate[32];
    cli_format_size(x->bytes_new, bytes);
    cli_format_size(secs > 0 ? (uint64_t)((double)x->bytes_new / secs) : 0, rate);
    printf("%s: %u images, %u signatures/referrers, %u deltas imported; %u denied, %u refused; "
           "%llu blobs stored (%s), %llu already cached; %u problems; %.1f s, %s/s\n",
           x->input, x->images, x->attachments, x->deltas, x->denied, x->refused,
           (unsigned long long)x->blobs_new, bytes, (unsigned long long)x->blobs_cached, x->errors,
           secs, rate);
    fflush(stdout);
}

static int run_input(seed_ctx *x)
{
    struct stat st;
    if (stat(x->input, &st) != 0) {
        seed_error(x, "%s", strerror(errno));
        return -1;
    }
    x->is_dir = S_ISDIR(st.st_mode);
    if (x->is_dir) {
        if (seed_open_dir(x) == 0)
            seed_import(x);
    } else {
        cli_progress_start(&x->progress, x->input, (uint64_t)st.st_size);
        if (seed_stream_tar(x) == 0 || x->index_json != NULL)
            seed_import(x);
    }
    seed_drop_unused(x);
    cli_progress_end(&x->progress);
    return 0;
}

/* Imports one PATH; the number of problems. */
static unsigned seed_one(const char *path, const seed_ctx *proto)
{
    seed_ctx x = *proto;
    x.input = path;
    x.blobs_fd = -1;
    x.ap = seed_appender_new(proto->c, SEED_BATCH);
    x.hasher = verify_hasher_new();
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    if (x.ap == NULL || x.hasher == NULL)
        seed_error(&x, "out of memory");
    else
        run_input(&x);
    summary(&x, cli_seconds_since(&start));
    if (x.blobs_fd >= 0)
        close(x.blobs_fd);
    free(x.index_json);
    seed_appender_free(x.ap);
    verify_hasher_free(x.hasher);
    seed_set_free(&x.blobs);
    return x.errors;
}

/* LMDB allocates every 1 MiB overflow page of a write transaction with
 * malloc and frees it at commit. Above glibc's mmap threshold each one is a
 * fresh mmap, zero-filled page by page, then unmapped: a tenth of the CPU of
 * a seed. Keeping such blocks on the heap reuses the same memory batch
 * after batch (the peak is unchanged: one transaction's pages). */
static void tune_malloc(void)
{
    mallopt(M_MMAP_THRESHOLD, 4 * SEED_BATCH);
    mallopt(M_TRIM_THRESHOLD, 8 * SEED_BATCH);
}

int cmd_seed(int argc, char **argv)
{
    seed_opts o;
    tune_malloc();
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    config cfg;
    char key[CLI_KEY_MAX];
    int policy_failed = 0;
    verify_policy *policy = NULL;
    cache *c = NULL;
    rc = 2;
    if (cli_load_config(&o.common, &cfg) == 0 &&
        (o.repo == NULL || repo_key(&cfg, o.repo, key, sizeof key) == 0)) {
        policy = load_policy(&cfg, &policy_failed);
        c = policy_failed ? NULL : cli_open_cache(&o.common, &cfg, 1);
    }
    if (c != NULL) {
        seed_ctx proto = {.c = c,
                          .cfg = &cfg,
                          .policy = policy,
                          .repo_key = o.repo ? key : NULL,
                          .pin = !o.no_pin};
        unsigned problems = 0;
        for (int i = optind; i < argc; i++)
            problems += seed_one(argv[i], &proto);
        rc = problems ? 1 : 0;
        cache_close(c);
    }
    verify_policy_free(policy);
    config_free(&cfg);
    return rc;
}
