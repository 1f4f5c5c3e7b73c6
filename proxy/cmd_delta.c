/*
 * cmd_delta.c — `sluice delta create|apply`: deltas between files, offline,
 * in the same formats Sluice serves (see cmd_delta.h and delta/delta.h).
 *
 * How it works: inputs are mapped read-only with mmap (they may be large;
 * only the pages a codec touches are read). The base's SHA-256, which the
 * dcz header carries, is computed with OpenSSL's EVP API only when a dcz
 * delta is made (codec zstd or auto) or applied: bsz and VCDIFF check the
 * base themselves, and hashing it would cost a tenth of an apply and, with
 * OpenSSL's initialization, 2.3 MiB of memory. Output goes to a temporary
 * file created next to the destination (same directory, so the final rename
 * is atomic; cli_file.h); the codec streams into it through a buffered sink,
 * then the file is fsync'd, renamed over the destination and the directory
 * fsync'd. On any error the temporary file is removed, so a failed or
 * interrupted run never leaves a partial output under the destination's
 * name. When stderr is a terminal and an input is large, a progress line is
 * redrawn in place.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cli_file.h"
#include "cmd_delta.h"
#include "delta.h"

/* Inputs at least this large get a progress line on a terminal. */
#define PROGRESS_MIN ((uint64_t)8 << 20)
#define CMD "delta"

static int sha256(const cli_mapped *m, uint8_t out[DELTA_SHA256_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(m->p, m->len, out, &n, EVP_sha256(), NULL) != 1 || n != DELTA_SHA256_LEN) {
        fprintf(stderr, "sluice delta: SHA-256 failed\n");
        return -1;
    }
    return 0;
}

/* ---- progress ---- */

typedef struct {
    const char *what;
    int last_pct;
} progress;

static void on_progress(void *arg, uint64_t done, uint64_t total)
{
    progress *p = arg;
    if (total == 0) {
        fprintf(stderr, "\rsluice delta: %s %llu MiB", p->what, (unsigned long long)(done >> 20));
        return;
    }
    int pct = (int)(done * 100 / total);
    if (pct == p->last_pct)
        return;
    p->last_pct = pct;
    fprintf(stderr, "\rsluice delta: %s %3d%% (%llu/%llu MiB)", p->what, pct,
            (unsigned long long)(done >> 20), (unsigned long long)(total >> 20));
}

static int want_progress(uint64_t size)
{
    return size >= PROGRESS_MIN && isatty(STDERR_FILENO);
}

static void setup_progress(delta_options *o, progress *p, const char *what, uint64_t size)
{
    if (!want_progress(size))
        return;
    p->what = what;
    p->last_pct = -1;
    o->progress = on_progress;
    o->progress_arg = p;
}

static void end_progress(const delta_options *o)
{
    if (o->progress)
        fputc('\n', stderr);
}

/* ---- create ---- */

typedef struct {
    const char *from, *to, *out;
    delta_codec codec;
    delta_options opt;
} create_args;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: sluice delta create --from OLD --to NEW -o DELTA [--codec zstd|vcdiff|bsz|auto]\n"
        "                           [--level N] [--window-log N] [--plain-vcdiff] [--no-elf]\n"
        "       sluice delta apply --from OLD -o NEW [--max-window-log N] DELTA\n"
        "\n"
        "  --codec         zstd: RFC 9842 dcz body; vcdiff: RFC 3284 (xdelta3);\n"
        "                  bsz: Sluice's smallest format; auto (default): the smallest\n"
        "  --level         zstd level 1..22 (default 19)\n"
        "  --window-log    zstd window log 10..31 (default: sized to the inputs;\n"
        "                  23 keeps the delta readable by any dcz client)\n"
        "  --plain-vcdiff  no xdelta3 secondary compression (plain RFC 3284)\n"
        "  --no-elf        bsz without module-aware preconditioning\n"
        "  --max-window-log  largest zstd window apply accepts (default 27)\n");
}

static int parse_uint(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int create_option(int opt, create_args *a)
{
    long v;
    switch (opt) {
    case 'f':
        a->from = optarg;
        return 0;
    case 't':
        a->to = optarg;
        return 0;
    case 'o':
        a->out = optarg;
        return 0;
    case 'c':
        return delta_codec_parse(optarg, &a->codec) == DELTA_OK ? 0 : -1;
    case 'l':
        return parse_uint(optarg, 1, 22, &v) ? -1 : (a->opt.zstd_level = (int)v, 0);
    case 'w':
        return parse_uint(optarg, 10, 31, &v) ? -1 : (a->opt.zstd_window_log = (unsigned)v, 0);
    case 'P':
        a->opt.vcdiff_plain = 1;
        return 0;
    case 'E':
        a->opt.bsz_elf = 0;
        return 0;
    default:
        return -1;
    }
}

static int parse_create(int argc, char **argv, create_args *a)
{
    static const struct option opts[] = {
        {"from", required_argument, NULL, 'f'},   {"to", required_argument, NULL, 't'},
        {"output", required_argument, NULL, 'o'}, {"codec", required_argument, NULL, 'c'},
        {"level", required_argument, NULL, 'l'},  {"window-log", required_argument, NULL, 'w'},
        {"plain-vcdiff", no_argument, NULL, 'P'}, {"no-elf", no_argument, NULL, 'E'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            return 1;
        }
        if (create_option(opt, a) != 0) {
            if (opt != '?')
                fprintf(stderr, "sluice delta: bad value for an option\n");
            usage(stderr);
            return -1;
        }
    }
    if (!a->from || !a->to || !a->out || optind != argc) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static void summary(const char *verb, const char *path, const delta_report *r, size_t ref)
{
    double pct = ref ? 100.0 * (double)r->out_len / (double)ref : 0.0;
    fprintf(stderr, "sluice delta: %s %s (%s, %llu bytes, %.2f%% of the new file)\n", verb, path,
            delta_codec_name(r->codec), (unsigned long long)r->out_len, pct);
}

static int base_sha256_cb(void *arg, uint8_t *out)
{
    return sha256(arg, out);
}

/* The base's SHA-256 is computed only if a dcz header is written (for auto:
 * only if zstd's delta wins), so OpenSSL is not even started otherwise. */
static void create_digest(const cli_mapped *base, create_args *a)
{
    a->opt.base_sha256 = NULL;
    a->opt.base_sha256_fn = base_sha256_cb;
    a->opt.base_sha256_arg = (void *)base;
}

static int run_create(create_args *a)
{
    cli_mapped base, target;
    if (cli_map_file(CMD, a->from, &base) != 0)
        return 1;
    int rc = 1;
    if (cli_map_file(CMD, a->to, &target) == 0) {
        cli_out o;
        progress pr;
        setup_progress(&a->opt, &pr, "encoding", target.len);
        create_digest(&base, a);
        if (cli_out_open(&o, CMD, a->out) == 0) {
            delta_report r;
            delta_status st = delta_encode(a->codec, base.p, base.len, target.p, target.len,
                                           &a->opt, cli_out_write, &o, &r);
            end_progress(&a->opt);
            if (st != DELTA_OK) {
                fprintf(stderr, "sluice delta: %s\n", r.msg[0] ? r.msg : delta_strerror(st));
                cli_out_abort(&o);
            } else if (cli_out_commit(&o) == 0) {
                summary("wrote", a->out, &r, target.len);
                rc = 0;
            }
        }
        cli_unmap_file(&target);
    }
    cli_unmap_file(&base);
    return rc;
}

/* ---- apply ---- */

typedef struct {
    const char *from, *out, *delta;
    delta_options opt;
} apply_args;

static int parse_apply(int argc, char **argv, apply_args *a)
{
    static const struct option opts[] = {{"from", required_argument, NULL, 'f'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"max-window-log", required_argument, NULL, 'm'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    long v;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            return 1;
        } else if (opt == 'f') {
            a->from = optarg;
        } else if (opt == 'o') {
            a->out = optarg;
        } else if (opt == 'm' && parse_uint(optarg, 10, 31, &v) == 0) {
            a->opt.zstd_max_window_log = (unsigned)v;
        } else {
            usage(stderr);
            return -1;
        }
    }
    if (!a->from || !a->out || optind + 1 != argc) {
        usage(stderr);
        return -1;
    }
    a->delta = argv[optind];
    return 0;
}

/* For a dcz delta, the base's SHA-256 that decoding compares with the
 * header; nothing for the other formats. */
static int base_digest(const cli_mapped *base, const cli_mapped *delta, apply_args *a,
                       uint8_t digest[DELTA_SHA256_LEN])
{
    a->opt.base_sha256 = NULL;
    if (delta_dcz_header_parse(delta->p, delta->len, NULL) == DELTA_EFORMAT)
        return 0;
    a->opt.base_sha256 = digest;
    return sha256(base, digest);
}

static int run_apply(apply_args *a)
{
    cli_mapped base, delta;
    uint8_t digest[DELTA_SHA256_LEN];
    if (cli_map_file(CMD, a->from, &base) != 0)
        return 1;
    int rc = 1;
    if (cli_map_file(CMD, a->delta, &delta) == 0) {
        cli_out o;
        progress pr;
        setup_progress(&a->opt, &pr, "applying", base.len);
        if (base_digest(&base, &delta, a, digest) == 0 && cli_out_open(&o, CMD, a->out) == 0) {
            delta_report r;
            delta_status st =
                delta_decode(base.p, base.len, delta.p, delta.len, &a->opt, cli_out_write, &o, &r);
            end_progress(&a->opt);
            if (st != DELTA_OK) {
                fprintf(stderr, "sluice delta: %s: %s\n", a->delta,
                        r.msg[0] ? r.msg : delta_strerror(st));
                cli_out_abort(&o);
            } else if (cli_out_commit(&o) == 0) {
                rc = 0;
            }
        }
        cli_unmap_file(&delta);
    }
    cli_unmap_file(&base);
    return rc;
}

int cmd_delta(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "create") == 0) {
        create_args a = {.codec = DELTA_CODEC_AUTO};
        delta_options_init(&a.opt);
        int p = parse_create(argc - 1, argv + 1, &a);
        return p < 0 ? 2 : p > 0 ? 0 : run_create(&a);
    }
    if (strcmp(sub, "apply") == 0) {
        apply_args a = {0};
        delta_options_init(&a.opt);
        int p = parse_apply(argc - 1, argv + 1, &a);
        return p < 0 ? 2 : p > 0 ? 0 : run_apply(&a);
    }
    if (strcmp(sub, "help") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "sluice delta: unknown subcommand '%s'\n", sub);
    usage(stderr);
    return 2;
}
