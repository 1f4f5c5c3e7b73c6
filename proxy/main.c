/*
 * main.c — the `sluice` command: subcommand dispatch and option parsing.
 *
 *   sluice serve [--config FILE] [--listen ADDR:PORT] [--upstream URL]
 *                [--cache DIR] [--workers N] [--tag-ttl DURATION]
 *                [--tls-cert FILE --tls-key FILE] [--ca-file FILE] [--no-sync]
 *   sluice seed   [--cache DIR] [--config FILE] [--repo [REGISTRY/]REPO] [--no-pin] PATH...
 *   sluice export [--cache DIR] [--config FILE] [--zstd] [--deltas-from REF] -o BUNDLE REF...
 *   sluice gc     [--cache DIR] [--config FILE] [--max-size SIZE]
 *   sluice stat   [--cache DIR] [--config FILE] [--json] [--verify]
 *   sluice fetch  [--have DIR] [--all-platforms] [--insecure] [--cacert FILE] -o OUTDIR
 *                 URL/REPO:TAG|URL/REPO@sha256:HEX
 *   sluice verify [--config FILE] [--cache DIR] [--upstream URL] [--policy FILE] [--offline] REF
 *                 (and the file forms: see cmd_verify.c)
 *   sluice version
 *
 * Options override the config file key by key through config_set, so a bad
 * value is reported the same way wherever it comes from.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_cache.h"
#include "cmd_export.h"
#include "cmd_seed.h"
#include "cmd_delta.h"
#include "cmd_fetch.h"
#include "cmd_verify.h"
#include "config.h"
#include "server.h"

#define SLUICE_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sluice <command> [options]\n"
            "\n"
            "commands:\n"
            "  serve     run the caching OCI registry proxy\n"
            "  verify    decide REF under the trust policy as serve would; or check a kernel\n"
            "            module, cosign signatures or a Sigstore bundle offline\n"
            "  delta     create or apply a binary delta between two files (zstd/dcz, vcdiff, bsz)\n"
            "  fetch     fetch an image into an OCI layout, as deltas from the version held\n"
            "  seed      import OCI layouts or layout tarballs into the cache (offline sites)\n"
            "  export    write cached artifacts, signatures and deltas as a layout tarball\n"
            "  gc        evict least-recently-used unpinned content down to max_size\n"
            "  stat      print cache size, pinned size, objects, hit ratio, bytes served\n"
            "  version   print the version\n"
            "\n"
            "serve options (override the config file):\n"
            "  --config FILE         INI configuration (see conf/sluice.conf)\n"
            "  --listen ADDR:PORT    listen address (default 127.0.0.1:5000)\n"
            "  --upstream URL        default upstream registry, e.g. https://registry.example\n"
            "  --cache DIR           cache directory (LMDB)\n"
            "  --workers N           event loop threads (default: one per core)\n"
            "  --tag-ttl DURATION    serve a cached tag this long before revalidating\n"
            "  --tls-cert FILE       serve HTTPS with this certificate chain (PEM)\n"
            "  --tls-key FILE        ... and this private key (PEM)\n"
            "  --ca-file FILE        CA bundle to verify the default upstream\n"
            "  --no-sync             do not fsync cache commits (tests, benchmarks)\n"
            "  --offline             never contact an upstream: serve the cache only\n"
            "  --policy FILE         trust policy (containers-policy.json format)\n");
}

typedef struct {
    const char *section;
    const char *key;
    const char *flag;
} override;

static const override overrides[] = {
    ['l'] = {"server", "listen", "--listen"},     ['u'] = {"upstream", "url", "--upstream"},
    ['c'] = {"cache", "dir", "--cache"},          ['w'] = {"server", "workers", "--workers"},
    ['t'] = {"cache", "tag_ttl", "--tag-ttl"},    ['C'] = {"server", "tls_cert", "--tls-cert"},
    ['K'] = {"server", "tls_key", "--tls-key"},   ['P'] = {"trust", "policy", "--policy"},
    ['A'] = {"upstream", "ca_file", "--ca-file"},
};

static int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'f'},   {"listen", required_argument, NULL, 'l'},
        {"upstream", required_argument, NULL, 'u'}, {"cache", required_argument, NULL, 'c'},
        {"workers", required_argument, NULL, 'w'},  {"tag-ttl", required_argument, NULL, 't'},
        {"tls-cert", required_argument, NULL, 'C'}, {"tls-key", required_argument, NULL, 'K'},
        {"ca-file", required_argument, NULL, 'A'},  {"no-sync", no_argument, NULL, 'S'},
        {"offline", no_argument, NULL, 'O'},        {"policy", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    const char *config_path = NULL;
    /* First pass: the config file, so that flags override it. */
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1)
        if (opt == 'f')
            config_path = optarg;

    config cfg;
    config_init(&cfg);
    char err[512];
    int rc = 2;
    if (config_path && config_load_file(&cfg, config_path, err, sizeof(err)) != 0)
        goto fail;
    optind = 1;
    opterr = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            config_free(&cfg);
            return 0;
        }
        if (opt == '?') {
            usage(stderr);
            config_free(&cfg);
            return 2;
        }
        if (opt == 'f')
            continue;
        if (opt == 'S') {
            cfg.sync = 0;
            continue;
        }
        if (opt == 'O') {
            cfg.offline = 1;
            continue;
        }
        const override *o = &overrides[opt];
        if (config_set(&cfg, o->section, o->key, optarg, o->flag, err, sizeof(err)) != 0)
            goto fail;
    }
    if (optind < argc) {
        snprintf(err, sizeof(err), "unexpected argument '%s'", argv[optind]);
        goto fail;
    }
    if (config_validate(&cfg, err, sizeof(err)) != 0)
        goto fail;
    rc = server_run(&cfg, config_path);
    config_free(&cfg);
    return rc;
fail:
    fprintf(stderr, "sluice: %s\n", err);
    config_free(&cfg);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "verify") == 0)
        return cmd_verify_main(argc - 1, argv + 1);
    if (strcmp(cmd, "delta") == 0)
        return cmd_delta(argc - 1, argv + 1);
    if (strcmp(cmd, "fetch") == 0)
        return cmd_fetch(argc - 1, argv + 1);
    if (strcmp(cmd, "seed") == 0)
        return cmd_seed(argc - 1, argv + 1);
    if (strcmp(cmd, "export") == 0)
        return cmd_export(argc - 1, argv + 1);
    if (strcmp(cmd, "gc") == 0)
        return cmd_gc(argc - 1, argv + 1);
    if (strcmp(cmd, "stat") == 0)
        return cmd_stat(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("sluice %s\n", SLUICE_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "sluice: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
