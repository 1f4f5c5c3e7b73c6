/*
 * cmd_delta.c — `sluice delta create|apply`: deltas between files, offline,
 * in the same formats Sluice serves (see cmd_delta.h and delta/delta.h).
 *
 * How it works: inputs are mapped read-only with mmap (they may be large;
 * only the pages a codec touches are read). The base's SHA-256, which the
 * dcz header carries and which apply checks, is computed with OpenSSL's EVP
 * API. Output goes to a temporary file created next to the destination
 * (same directory, so the final rename is atomic); the codec streams into it
 * through a buffered sink, then the file is fsync'd, renamed over the
 * destination and the directory fsync'd. On any error the temporary file is
 * removed, so a failed or interrupted run never leaves a partial output
 * under the destination's name. When stderr is a terminal and an input is
 * large, a progress line is redrawn in place.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cmd_delta.h"
#include "delta.h"

/* Inputs at least this large get a progress line on a terminal. */
#define PROGRESS_MIN ((uint64_t)8 << 20)
#define WRITE_BUF (1u << 20)

/* ---- input files ---- */

typedef struct {
    const char *path;
    const uint8_t *p;
    size_t len;
} mapped;

static int map_file(const char *path, mapped *m)
{
    m->path = path;
    m->p = NULL;
    m->len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "sluice delta: %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "sluice delta: %s: not a regular file\n", path);
    } else if (st.st_size == 0) {
        m->p = (const uint8_t *)"";
        rc = 0;
    } else {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "sluice delta: %s: mmap: %s\n", path, strerror(errno));
        } else {
            m->p = p;
            m->len = (size_t)st.st_size;
            rc = 0;
        }
    }
    close(fd);
    return rc;
}

static void unmap_file(mapped *m)
{
    if (m->len > 0)
        munmap((void *)m->p, m->len);
    m->len = 0;
}

static int sha256(const mapped *m, uint8_t out[DELTA_SHA256_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(m->p, m->len, out, &n, EVP_sha256(), NULL) != 1 || n != DELTA_SHA256_LEN) {
        fprintf(stderr, "sluice delta: SHA-256 failed\n");
        return -1;
    }
    return 0;
}

/* ---- atomic output ---- */

typedef struct {
    const char *dest;
    char tmp[PATH_MAX];
    int fd;
    uint8_t *buf;
    size_t len;
    int failed_errno;
} out_file;

static int out_open(out_file *o, const char *dest)
{
    memset(o, 0, sizeof *o);
    o->dest = dest;
    o->fd = -1;
    char copy[PATH_MAX];
    if (snprintf(copy, sizeof copy, "%s", dest) >= (int)sizeof copy) {
        fprintf(stderr, "sluice delta: %s: path too long\n", dest);
        return -1;
    }
    char *base = basename(copy);
    char dircopy[PATH_MAX];
    snprintf(dircopy, sizeof dircopy, "%s", dest);
    const char *dir = dirname(dircopy);
    if (snprintf(o->tmp, sizeof o->tmp, "%s/.%s.XXXXXX", dir, base) >= (int)sizeof o->tmp) {
        fprintf(stderr, "sluice delta: %s: path too long\n", dest);
        return -1;
    }
    o->buf = malloc(WRITE_BUF);
    o->fd = o->buf ? mkostemp(o->tmp, O_CLOEXEC) : -1;
    if (o->fd < 0) {
        fprintf(stderr, "sluice delta: cannot create a file next to %s: %s\n", dest,
                strerror(errno));
        free(o->buf);
        o->buf = NULL;
        return -1;
    }
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int out_flush(out_file *o)
{
    if (o->len > 0 && write_all(o->fd, o->buf, o->len) != 0) {
        o->failed_errno = errno;
        return -1;
    }
    o->len = 0;
    return 0;
}

/* The delta_write_fn: buffers and writes to the temporary file. */
static int out_sink(void *arg, const void *p, size_t n)
{
    out_file *o = arg;
    if (o->len + n > WRITE_BUF && out_flush(o) != 0)
        return -1;
    if (n >= WRITE_BUF) {
        if (write_all(o->fd, p, n) != 0) {
            o->failed_errno = errno;
            return -1;
        }
        return 0;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

static void out_abort(out_file *o)
{
    if (o->fd >= 0) {
        close(o->fd);
        unlink(o->tmp);
    }
    o->fd = -1;
    free(o->buf);
    o->buf = NULL;
}

static int fsync_dir(const char *dest)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", dest);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Flushes, fsyncs and renames the temporary file into place. */
static int out_commit(out_file *o)
{
    if (out_flush(o) != 0 || fchmod(o->fd, 0644) != 0 || fsync(o->fd) != 0) {
        fprintf(stderr, "sluice delta: writing %s: %s\n", o->dest,
                strerror(o->failed_errno ? o->failed_errno : errno));
        out_abort(o);
        return -1;
    }
    close(o->fd);
    o->fd = -1;
    free(o->buf);
    o->buf = NULL;
    if (rename(o->tmp, o->dest) != 0) {
        fprintf(stderr, "sluice delta: renaming to %s: %s\n", o->dest, strerror(errno));
        unlink(o->tmp);
        return -1;
    }
    fsync_dir(o->dest);
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

static int run_create(create_args *a)
{
    mapped base, target;
    uint8_t digest[DELTA_SHA256_LEN];
    if (map_file(a->from, &base) != 0)
        return 1;
    int rc = 1;
    if (map_file(a->to, &target) == 0) {
        out_file o;
        progress pr;
        a->opt.base_sha256 = digest;
        setup_progress(&a->opt, &pr, "encoding", target.len);
        if (sha256(&base, digest) == 0 && out_open(&o, a->out) == 0) {
            delta_report r;
            delta_status st = delta_encode(a->codec, base.p, base.len, target.p, target.len,
                                           &a->opt, out_sink, &o, &r);
            end_progress(&a->opt);
            if (st != DELTA_OK) {
                fprintf(stderr, "sluice delta: %s\n", r.msg[0] ? r.msg : delta_strerror(st));
                out_abort(&o);
            } else if (out_commit(&o) == 0) {
                summary("wrote", a->out, &r, target.len);
                rc = 0;
            }
        }
        unmap_file(&target);
    }
    unmap_file(&base);
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

static int run_apply(apply_args *a)
{
    mapped base, delta;
    uint8_t digest[DELTA_SHA256_LEN];
    if (map_file(a->from, &base) != 0)
        return 1;
    int rc = 1;
    if (map_file(a->delta, &delta) == 0) {
        out_file o;
        progress pr;
        a->opt.base_sha256 = digest;
        setup_progress(&a->opt, &pr, "applying", base.len);
        if (sha256(&base, digest) == 0 && out_open(&o, a->out) == 0) {
            delta_report r;
            delta_status st =
                delta_decode(base.p, base.len, delta.p, delta.len, &a->opt, out_sink, &o, &r);
            end_progress(&a->opt);
            if (st != DELTA_OK) {
                fprintf(stderr, "sluice delta: %s: %s\n", a->delta,
                        r.msg[0] ? r.msg : delta_strerror(st));
                out_abort(&o);
            } else if (out_commit(&o) == 0) {
                rc = 0;
            }
        }
        unmap_file(&delta);
    }
    unmap_file(&base);
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
