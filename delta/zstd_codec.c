/*
 * zstd_codec.c — DELTA_CODEC_ZSTD: the body of RFC 9842 `dcz`.
 *
 * Encoding writes the 40-byte dcz header (magic + the base's SHA-256, given
 * by the caller) and then one zstd frame of the target compressed with the
 * base referenced as a raw-content prefix (ZSTD_CCtx_refPrefix — what
 * `zstd --patch-from` does), long-distance matching on, the window sized to
 * base + target unless the caller fixes it, the content size and an XXH64
 * checksum in the frame. The target is passed once as a stable input buffer
 * and compressed output is streamed to the sink chunk by chunk. The match
 * finder's tables are sized to base + target (set_tables) so that memory
 * stays in proportion to the inputs, and come from dmem.
 *
 * Decoding accepts a dcz body or a bare zstd frame, checks the dcz header's
 * digest against delta_options.base_sha256 when given, refuses windows above
 * delta_options.zstd_max_window_log before allocating them, and streams the
 * frame through ZSTD_decompressStream. Exactly one frame must be present;
 * truncation, trailing bytes and checksum failures are DELTA_ECORRUPT.
 */
#include <stdlib.h>
#include <string.h>

#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#include <zstd_errors.h>

#include "internal.h"

static const ZSTD_customMem ZSTD_DMEM = {dmem_zstd_alloc, dmem_cb_free, NULL};

/* ---- encode ---- */

static delta_status zstd_status(size_t code)
{
    switch (ZSTD_getErrorCode(code)) {
    case ZSTD_error_memory_allocation:
        return DELTA_ENOMEM;
    case ZSTD_error_frameParameter_windowTooLarge:
        return DELTA_ELIMIT;
    case ZSTD_error_parameter_unsupported:
    case ZSTD_error_parameter_outOfBound:
    case ZSTD_error_GENERIC:
        return DELTA_ECODEC;
    default:
        return DELTA_ECORRUPT;
    }
}

#define SETP(cctx, p, v)                                                                           \
    do {                                                                                           \
        size_t r_ = ZSTD_CCtx_setParameter(cctx, p, v);                                            \
        if (ZSTD_isError(r_))                                                                      \
            return r_;                                                                             \
    } while (0)

static unsigned umin(unsigned a, unsigned b)
{
    return a < b ? a : b;
}

static unsigned umax(unsigned a, unsigned b)
{
    return a > b ? a : b;
}

/* Sizes the search tables to the data rather than to the window (a power of
 * two up to twice base + target). With 2^L <= base + target < 2^(L+1): the
 * binary tree gets 2^(L-2) entries and the hash table 2^(L-3) (4 bytes
 * each), the long-distance matcher 2^(L-3) (8 bytes each), so the tables
 * stay under 2.5x base + target; the binary tree and hash table never above
 * the level's own choice or window log - 1 / - 2, never below 2^17 / 2^16
 * (small inputs keep the level's tables). The long-distance matcher, which finds the base's copy
 * of most of the target, looks at every 4th position for matches of 16
 * bytes or more (its defaults, every 2^(window log - hash log)th position
 * and 64 bytes, miss the short runs between changed fields). On kernel
 * modules this codes 4% smaller than the level's tables capped by the
 * window alone, in under half the memory. */
static size_t set_tables(ZSTD_CCtx *cctx, int level, unsigned wlog, size_t src, size_t dict)
{
    ZSTD_compressionParameters cp = ZSTD_getCParams(level, src, dict);
    unsigned L = 0;
    while (L < 62 && ((uint64_t)2 << L) <= (uint64_t)src + dict)
        L++;
    unsigned clog = umin(umin(cp.chainLog, wlog - 1), umax(L - umin(L, 2), 17));
    unsigned hlog = umin(umin(cp.hashLog, wlog - 2), umax(L - umin(L, 3), 16));
    unsigned ldm = umin(umax(L - umin(L, 3), ZSTD_LDM_HASHLOG_MIN), ZSTD_LDM_HASHLOG_MAX);
    SETP(cctx, ZSTD_c_chainLog, (int)clog);
    SETP(cctx, ZSTD_c_hashLog, (int)hlog);
    SETP(cctx, ZSTD_c_ldmHashLog, (int)ldm);
    SETP(cctx, ZSTD_c_ldmMinMatch, 16);
    SETP(cctx, ZSTD_c_ldmHashRateLog, 2);
    return 0;
}

static size_t configure_cctx(ZSTD_CCtx *cctx, const uint8_t *base, size_t base_len,
                             size_t target_len, const delta_options *o)
{
    unsigned wlog =
        o->zstd_window_log ? o->zstd_window_log : delta_zstd_window_log(base_len, target_len);
    SETP(cctx, ZSTD_c_compressionLevel, o->zstd_level);
    size_t r = set_tables(cctx, o->zstd_level, wlog, target_len, base_len);
    if (ZSTD_isError(r))
        return r;
    SETP(cctx, ZSTD_c_windowLog, (int)wlog);
    SETP(cctx, ZSTD_c_enableLongDistanceMatching, 1);
    SETP(cctx, ZSTD_c_checksumFlag, 1);
    SETP(cctx, ZSTD_c_contentSizeFlag, 1);
    SETP(cctx, ZSTD_c_stableInBuffer, 1);
    r = ZSTD_CCtx_setPledgedSrcSize(cctx, target_len);
    if (ZSTD_isError(r))
        return r;
    return ZSTD_CCtx_refPrefix(cctx, base, base_len);
}

static delta_status compress_loop(ZSTD_CCtx *cctx, const uint8_t *target, size_t target_len,
                                  const delta_options *o, delta_sink *out)
{
    size_t cap = ZSTD_CStreamOutSize();
    uint8_t *buf = malloc(cap);
    if (!buf)
        return DELTA_ENOMEM;
    ZSTD_inBuffer in = {target, target_len, 0};
    delta_status st = DELTA_OK;
    size_t left;
    do {
        ZSTD_outBuffer ob = {buf, cap, 0};
        left = ZSTD_compressStream2(cctx, &ob, &in, ZSTD_e_end);
        if (ZSTD_isError(left)) {
            st = zstd_status(left) == DELTA_ENOMEM ? DELTA_ENOMEM : DELTA_ECODEC;
            break;
        }
        st = delta_sink_put(out, buf, ob.pos);
        if (o->progress)
            o->progress(o->progress_arg, in.pos, target_len);
    } while (st == DELTA_OK && left != 0);
    free(buf);
    return st;
}

delta_status zstd_encode(const uint8_t *base, size_t base_len, const uint8_t *target,
                         size_t target_len, const delta_options *o, delta_sink *out,
                         delta_report *rep)
{
    uint8_t digest[DELTA_SHA256_LEN];
    const uint8_t *base_sha256 = o->base_sha256;
    if (!base_sha256 && o->base_sha256_fn) {
        if (o->base_sha256_fn(o->base_sha256_arg, digest) != 0)
            return delta_fail(rep, DELTA_EINVAL, "the base's SHA-256 could not be computed");
        base_sha256 = digest;
    }
    if (!base_sha256)
        return delta_fail(rep, DELTA_EINVAL, "the zstd (dcz) codec needs the base's SHA-256");
    uint8_t header[DELTA_DCZ_HEADER_LEN];
    delta_dcz_header_write(header, base_sha256);
    delta_status st = delta_sink_put(out, header, sizeof header);
    if (st != DELTA_OK)
        return st;
    ZSTD_CCtx *cctx = ZSTD_createCCtx_advanced(ZSTD_DMEM);
    if (!cctx)
        return DELTA_ENOMEM;
    size_t r = configure_cctx(cctx, base, base_len, target_len, o);
    if (ZSTD_isError(r))
        st = delta_fail(rep, DELTA_ECODEC, "zstd: %s", ZSTD_getErrorName(r));
    else
        st = compress_loop(cctx, target, target_len, o, out);
    ZSTD_freeCCtx(cctx);
    return st;
}

/* ---- decode ---- */

/* Consumes a dcz header if there is one and checks its digest. */
static delta_status read_dcz_header(delta_src *in, const delta_options *o, delta_report *rep)
{
    const uint8_t *head;
    size_t n = delta_src_peek(in, 8, &head);
    if (n < 8 || memcmp(head, DELTA_DCZ_MAGIC, 8) != 0)
        return DELTA_OK;
    uint8_t h[DELTA_DCZ_HEADER_LEN];
    long got = delta_src_read_full(in, h, sizeof h);
    if (got < 0)
        return DELTA_ESOURCE;
    if ((size_t)got < sizeof h)
        return delta_fail(rep, DELTA_ECORRUPT, "dcz header truncated");
    if (o->base_sha256 && memcmp(h + 8, o->base_sha256, DELTA_SHA256_LEN) != 0)
        return delta_fail(rep, DELTA_EBASE, "dcz header names another base");
    return DELTA_OK;
}

typedef struct {
    ZSTD_DCtx *dctx;
    uint8_t *obuf;
    size_t ocap;
    size_t last; /* last ZSTD_decompressStream result: 0 = frame complete */
    int started;
} zdec;

/* Decompresses all of in[] into the sink. */
static delta_status feed(zdec *z, ZSTD_inBuffer *in, delta_sink *out, delta_report *rep)
{
    while (in->pos < in->size) {
        if (z->started && z->last == 0)
            return delta_fail(rep, DELTA_ECORRUPT, "trailing bytes after the zstd frame");
        ZSTD_outBuffer ob = {z->obuf, z->ocap, 0};
        size_t r = ZSTD_decompressStream(z->dctx, &ob, in);
        if (ZSTD_isError(r))
            return delta_fail(rep, zstd_status(r), "zstd: %s", ZSTD_getErrorName(r));
        z->started = 1;
        z->last = r;
        delta_status st = delta_sink_put(out, z->obuf, ob.pos);
        if (st != DELTA_OK)
            return st;
    }
    return DELTA_OK;
}

/* Drains output still buffered inside zstd once the input is exhausted. */
static delta_status drain(zdec *z, delta_sink *out, delta_report *rep)
{
    ZSTD_inBuffer none = {NULL, 0, 0};
    while (z->started && z->last != 0) {
        ZSTD_outBuffer ob = {z->obuf, z->ocap, 0};
        size_t r = ZSTD_decompressStream(z->dctx, &ob, &none);
        if (ZSTD_isError(r))
            return delta_fail(rep, zstd_status(r), "zstd: %s", ZSTD_getErrorName(r));
        z->last = r;
        delta_status st = delta_sink_put(out, z->obuf, ob.pos);
        if (st != DELTA_OK)
            return st;
        if (ob.pos == 0)
            break;
    }
    if (!z->started || z->last != 0)
        return delta_fail(rep, DELTA_ECORRUPT, "zstd frame truncated");
    return DELTA_OK;
}

static delta_status decode_input(zdec *z, delta_src *in, delta_sink *out, delta_report *rep)
{
    size_t n;
    const uint8_t *mem = delta_src_take_mem(in, &n);
    if (mem) {
        ZSTD_inBuffer ib = {mem, n, 0};
        delta_status st = feed(z, &ib, out, rep);
        return st != DELTA_OK ? st : drain(z, out, rep);
    }
    size_t icap = ZSTD_DStreamInSize();
    uint8_t *ibuf = malloc(icap);
    if (!ibuf)
        return DELTA_ENOMEM;
    delta_status st = DELTA_OK;
    for (;;) {
        long got = delta_src_read(in, ibuf, icap);
        if (got < 0)
            st = DELTA_ESOURCE;
        if (got <= 0)
            break;
        ZSTD_inBuffer ib = {ibuf, (size_t)got, 0};
        if ((st = feed(z, &ib, out, rep)) != DELTA_OK)
            break;
    }
    free(ibuf);
    return st != DELTA_OK ? st : drain(z, out, rep);
}

/* Rejects a frame whose declared size exceeds the output limit up front. */
static delta_status check_frame(delta_src *in, const delta_sink *out, delta_report *rep)
{
    const uint8_t *head;
    size_t n = delta_src_peek(in, ZSTD_FRAMEHEADERSIZE_MAX, &head);
    ZSTD_frameHeader fh;
    if (n < 4 || ZSTD_getFrameHeader(&fh, head, n) != 0)
        return DELTA_OK; /* the decoder reports it */
    if (fh.frameContentSize != ZSTD_CONTENTSIZE_UNKNOWN && fh.frameContentSize > out->limit)
        return delta_fail(rep, DELTA_ELIMIT, "zstd frame declares %llu bytes",
                          (unsigned long long)fh.frameContentSize);
    return DELTA_OK;
}

delta_status zstd_decode(const uint8_t *base, size_t base_len, delta_src *in,
                         const delta_options *o, delta_sink *out, delta_report *rep)
{
    delta_status st = read_dcz_header(in, o, rep);
    if (st == DELTA_OK)
        st = check_frame(in, out, rep);
    if (st != DELTA_OK)
        return st;
    zdec z = {0};
    z.dctx = ZSTD_createDCtx_advanced(ZSTD_DMEM);
    z.ocap = ZSTD_DStreamOutSize();
    z.obuf = malloc(z.ocap);
    if (!z.dctx || !z.obuf) {
        st = DELTA_ENOMEM;
    } else if (ZSTD_isError(ZSTD_DCtx_setParameter(z.dctx, ZSTD_d_windowLogMax,
                                                   (int)o->zstd_max_window_log)) ||
               ZSTD_isError(ZSTD_DCtx_refPrefix(z.dctx, base, base_len))) {
        st = DELTA_ECODEC;
    } else {
        st = decode_input(&z, in, out, rep);
    }
    free(z.obuf);
    ZSTD_freeDCtx(z.dctx);
    return st;
}
