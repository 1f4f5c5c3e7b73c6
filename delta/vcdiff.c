/*
 * vcdiff.c — DELTA_CODEC_VCDIFF: RFC 3284 VCDIFF deltas made and applied by
 * the xdelta3 program, the body of RFC 3229 `vcdiff` responses.
 *
 * xdelta3 runs as a helper process (helper.c), which keeps its GPL code out
 * of Sluice and its decoder's faults out of Sluice's address space. The base
 * reaches it as /dev/fd/3 (a memfd); the target (encode) or the delta
 * (decode) goes through its stdin and the result comes back on its stdout,
 * streamed to the sink.
 *
 * Flags: -e/-d, -c (stdout), -q, -D (never run external decompressors on
 * the inputs), -R (never recompress on decode), -A (no application header,
 * so no file names in the delta), -<level>, -S none when plain RFC 3284 is
 * asked for, and -B (source window). Encoding sizes -B to hold the whole
 * base so that matches are found anywhere in it, and -W (target window) to
 * 256 KiB: read from a pipe, xdelta3 otherwise allocates its default 8 MiB
 * window and the tables that go with it whatever the target's size (39 MiB
 * for a 60 KiB module), and on kernel modules the smaller windows also code
 * 3-5% smaller. Decoding reads the base through xdelta3's block cache (the
 * memfd is seekable), so there -B is capped at 1 MiB: decode memory then
 * stays near 4 MiB whatever the base's size. Without a base (empty), -s is
 * omitted.
 */
#include <stdio.h>
#include <string.h>

#include "helper.h"
#include "internal.h"

/* xdelta3's accepted source window range. */
#define SRCWIN_MIN ((uint64_t)1 << 19)
#define SRCWIN_MAX ((uint64_t)1 << 30)
/* The decoder's block cache over the base. */
#define SRCWIN_DECODE_MAX ((uint64_t)1 << 20)
/* The encoder's target window. */
#define ENC_WINDOW "262144"

typedef struct {
    const char *argv[20];
    char level[4];
    char srcwin[24];
    char source[24];
} xargs;

static uint64_t source_window(size_t base_len, int encode)
{
    uint64_t max = encode ? SRCWIN_MAX : SRCWIN_DECODE_MAX;
    uint64_t w = SRCWIN_MIN;
    while (w < base_len && w < max)
        w <<= 1;
    return w;
}

static void build_args(xargs *a, int encode, size_t base_len, const delta_options *o)
{
    size_t n = 0;
    a->argv[n++] = o->xdelta3_path ? o->xdelta3_path : "xdelta3";
    a->argv[n++] = encode ? "-e" : "-d";
    a->argv[n++] = "-c";
    a->argv[n++] = "-q";
    a->argv[n++] = "-D";
    if (encode) {
        snprintf(a->level, sizeof a->level, "-%d", o->vcdiff_level);
        a->argv[n++] = a->level;
        a->argv[n++] = "-A";
        a->argv[n++] = "-W";
        a->argv[n++] = ENC_WINDOW;
        if (o->vcdiff_plain) {
            a->argv[n++] = "-S";
            a->argv[n++] = "none";
        }
    } else {
        a->argv[n++] = "-R";
    }
    snprintf(a->srcwin, sizeof a->srcwin, "%llu",
             (unsigned long long)source_window(base_len, encode));
    a->argv[n++] = "-B";
    a->argv[n++] = a->srcwin;
    if (base_len > 0) {
        snprintf(a->source, sizeof a->source, "/dev/fd/%d", HELPER_FILE_FD);
        a->argv[n++] = "-s";
        a->argv[n++] = a->source;
    }
    a->argv[n] = NULL;
}

delta_status vcdiff_encode(const uint8_t *base, size_t base_len, const uint8_t *target,
                           size_t target_len, const delta_options *o, delta_sink *out,
                           delta_report *rep)
{
    xargs a;
    build_args(&a, 1, base_len, o);
    helper_job job = {.argv = a.argv,
                      .file = base_len ? base : NULL,
                      .file_len = base_len,
                      .in_mem = target,
                      .in_len = target_len,
                      .out = out};
    return helper_run(&job, rep);
}

delta_status vcdiff_decode(const uint8_t *base, size_t base_len, delta_src *in,
                           const delta_options *o, delta_sink *out, delta_report *rep)
{
    xargs a;
    build_args(&a, 0, base_len, o);
    size_t n = 0;
    const uint8_t *mem = delta_src_take_mem(in, &n);
    helper_job job = {.argv = a.argv,
                      .file = base_len ? base : NULL,
                      .file_len = base_len,
                      .in_mem = mem,
                      .in_len = n,
                      .in_src = mem ? NULL : in,
                      .out = out};
    delta_status st = helper_run(&job, rep);
    /* xdelta3 exits 1 when it rejects its input: a corrupt delta or the
     * wrong base (its Adler-32 checks fail). */
    if (st == DELTA_EHELPER && job.exit_code > 0)
        return DELTA_ECORRUPT;
    return st;
}
