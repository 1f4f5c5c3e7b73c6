/*
 * bsz_entropy.c — the entropy stage of bsz: each stream (control fields,
 * diff bytes, extra bytes, ELF map) is compressed with zstd and with LZMA2
 * (liblzma, raw format; for the extra bytes also behind liblzma's x86 BCJ
 * filter, which turns relative call/jump targets in inserted machine code
 * into absolute ones) and the smallest result is kept, or the bytes are
 * stored when nothing beats that. Decoding is incremental: a bsz_reader hands
 * out the decoded bytes chunk by chunk, so a decoder never holds a whole
 * decoded stream.
 *
 * Memory: the candidates are tried one after another and only the smallest
 * output so far is kept. The encoders use a window of at most 256 KiB
 * (ENC_WINDOW_MAX; never beyond the stream length, so small streams get
 * small coders), about 4 MiB of LZMA2 match finder at most, shrunk further
 * if the coder's estimated usage would exceed the budget it is given; a
 * decoder of Sluice's deltas thus needs at most 256 KiB of dictionary per
 * stream. Coders allocate through dmem, so their tables go back to the
 * system as soon as each candidate is done. The decoder accepts a
 * dictionary only up to the stream's length (rounded up to LZMA2's 4 KiB
 * minimum) and a zstd window only up to the stream's length and the
 * caller's limit, so a hostile descriptor cannot make it allocate more than
 * the data could need.
 */
#include <lzma.h>
#include <stdlib.h>
#include <string.h>

#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#include <zstd_errors.h>

#include "bsz_format.h"

#define READ_CHUNK (32 * 1024)
/* The encoders' dictionary / window: delta streams are local (their repeats
 * are near one another); on kernel-module pairs anything from 64 KiB to
 * 8 MiB codes them within 0.3% of each other (256 KiB was smallest in
 * total), and 256 KiB keeps both sides' memory small and fixed. */
#define ENC_WINDOW_MAX ((size_t)256 << 10)

static const lzma_allocator LZMA_DMEM = {dmem_lzma_alloc, dmem_cb_free, NULL};
static const ZSTD_customMem ZSTD_DMEM = {dmem_zstd_alloc, dmem_cb_free, NULL};

/* ---- encoding ---- */

typedef struct {
    uint32_t lc, lp, pb;
    int x86;
} lzma_tune;

/* Literal-context settings per stream: varint and diff streams have little
 * byte-to-byte context; machine code (extra) benefits from 3 bits of the
 * previous byte. */
static void stream_tunes(int stream, lzma_tune *t, size_t *n)
{
    *n = 0;
    switch (stream) {
    case BSZ_S_EXTRA:
        t[(*n)++] = (lzma_tune){3, 0, 0, 0};
        t[(*n)++] = (lzma_tune){3, 0, 0, 1};
        break;
    case BSZ_S_DIFF: /* the non-zero differences */
        t[(*n)++] = (lzma_tune){0, 0, 0, 0};
        t[(*n)++] = (lzma_tune){3, 0, 0, 0};
        break;
    case BSZ_S_RUNS:
        t[(*n)++] = (lzma_tune){0, 0, 0, 0};
        t[(*n)++] = (lzma_tune){1, 0, 0, 0};
        break;
    default:
        t[(*n)++] = (lzma_tune){0, 0, 0, 0};
        t[(*n)++] = (lzma_tune){3, 0, 2, 0};
        break;
    }
}

static uint32_t dict_for(size_t n)
{
    uint64_t d = BSZ_MIN_DICT;
    while (d < n && d < BSZ_MAX_DICT)
        d <<= 1;
    return (uint32_t)d;
}

static void lzma_filters(lzma_filter f[3], lzma_options_lzma *opt, const lzma_tune *t)
{
    size_t k = 0;
    if (t->x86)
        f[k++] = (lzma_filter){LZMA_FILTER_X86, NULL};
    f[k++] = (lzma_filter){LZMA_FILTER_LZMA2, opt};
    f[k] = (lzma_filter){LZMA_VLI_UNKNOWN, NULL};
}

/* LZMA2-compresses raw into *comp (dmem); 0 on success. */
static int try_lzma(const uint8_t *raw, size_t n, const lzma_tune *t, size_t budget, uint8_t **comp,
                    size_t *comp_len, uint32_t *dict)
{
    lzma_options_lzma opt;
    if (lzma_lzma_preset(&opt, 9 | LZMA_PRESET_EXTREME))
        return -1;
    opt.lc = t->lc;
    opt.lp = t->lp;
    opt.pb = t->pb;
    opt.dict_size = dict_for(n < ENC_WINDOW_MAX ? n : ENC_WINDOW_MAX);
    opt.nice_len = 273;
    lzma_filter f[3];
    lzma_filters(f, &opt, t);
    while (opt.dict_size > BSZ_MIN_DICT && lzma_raw_encoder_memusage(f) > budget)
        opt.dict_size >>= 1;
    /* Only the pages the coder writes become resident. */
    size_t cap = n + n / 64 + 1024;
    uint8_t *out = dmem_alloc(cap);
    if (!out)
        return -1;
    size_t pos = 0;
    if (lzma_raw_buffer_encode(f, &LZMA_DMEM, raw, n, out, &pos, cap) != LZMA_OK) {
        dmem_free(out);
        return -1;
    }
    *comp = out;
    *comp_len = pos;
    *dict = opt.dict_size;
    return 0;
}

static unsigned wlog_for(size_t n)
{
    unsigned w = 10;
    while (w < 30 && ((size_t)1 << w) < n)
        w++;
    return w;
}

static int try_zstd(const uint8_t *raw, size_t n, size_t budget, uint8_t **comp, size_t *comp_len)
{
    ZSTD_CCtx *c = ZSTD_createCCtx_advanced(ZSTD_DMEM);
    size_t cap = ZSTD_compressBound(n);
    uint8_t *out = dmem_alloc(cap);
    int rc = -1;
    if (c && out) {
        int level = ZSTD_maxCLevel();
        unsigned w = wlog_for(n < ENC_WINDOW_MAX ? n : ENC_WINDOW_MAX), t = w;
        /* About 12 bytes per table entry at 2^t entries, plus the window. */
        while (t > 12 && ((size_t)12 << t) + ((size_t)1 << w) > budget)
            t--;
        ZSTD_compressionParameters cp = ZSTD_getCParams(level, n, 0);
        ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
        ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, (int)w);
        ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
        if (cp.chainLog > t)
            ZSTD_CCtx_setParameter(c, ZSTD_c_chainLog, (int)t);
        if (cp.hashLog > t - 1)
            ZSTD_CCtx_setParameter(c, ZSTD_c_hashLog, (int)t - 1);
        size_t r = ZSTD_compress2(c, out, cap, raw, n);
        if (!ZSTD_isError(r)) {
            *comp = out;
            *comp_len = r;
            out = NULL;
            rc = 0;
        }
    }
    dmem_free(out);
    ZSTD_freeCCtx(c);
    return rc;
}

typedef struct {
    int method;
    uint8_t *comp; /* NULL for stored */
    size_t comp_len;
    uint32_t dict;
} choice;

static void consider(choice *best, int method, uint8_t *comp, size_t comp_len, uint32_t dict)
{
    if (comp_len < best->comp_len) {
        dmem_free(best->comp);
        *best = (choice){method, comp, comp_len, dict};
    } else {
        dmem_free(comp);
    }
}

static delta_status write_stream(const choice *c, const uint8_t *raw, size_t n, dbuf *out)
{
    int fail =
        dbuf_byte(out, (uint8_t)c->method) || dbuf_varint(out, n) || dbuf_varint(out, c->comp_len);
    if (!fail && (c->method == BSZ_M_LZMA2 || c->method == BSZ_M_X86LZMA2))
        fail = dbuf_varint(out, c->dict);
    if (!fail)
        fail = dbuf_put(out, c->comp ? c->comp : raw, c->comp_len);
    return fail ? DELTA_ENOMEM : DELTA_OK;
}

delta_status bsz_stream_encode(int stream, const uint8_t *raw, size_t n, size_t mem_budget,
                               dbuf *out)
{
    choice best = {BSZ_M_STORED, NULL, n, 0};
    if (n > 0) {
        uint8_t *comp;
        size_t clen;
        if (try_zstd(raw, n, mem_budget, &comp, &clen) == 0)
            consider(&best, BSZ_M_ZSTD, comp, clen, 0);
        lzma_tune tunes[4];
        size_t ntunes;
        stream_tunes(stream, tunes, &ntunes);
        for (size_t i = 0; i < ntunes; i++) {
            uint32_t dict;
            if (try_lzma(raw, n, &tunes[i], mem_budget, &comp, &clen, &dict) == 0)
                consider(&best, tunes[i].x86 ? BSZ_M_X86LZMA2 : BSZ_M_LZMA2, comp, clen, dict);
        }
    }
    delta_status st = write_stream(&best, raw, n, out);
    dmem_free(best.comp);
    return st;
}

/* ---- decoding ---- */

struct bsz_reader {
    int method;
    const uint8_t *comp;
    size_t comp_len;
    uint64_t raw_len;
    uint64_t produced; /* decoded so far */
    int ended;         /* the coder reported the end of its data */
    lzma_stream lz;
    lzma_options_lzma lzopt;
    ZSTD_DCtx *z;
    ZSTD_inBuffer zin;
    uint8_t *buf;
    size_t buf_len, buf_pos;
};

static delta_status init_lzma(bsz_reader *r, uint64_t dict)
{
    uint64_t max = r->raw_len < BSZ_MIN_DICT ? BSZ_MIN_DICT : r->raw_len;
    if (dict < BSZ_MIN_DICT || dict > BSZ_MAX_DICT || dict > dict_for(max))
        return DELTA_ECORRUPT;
    memset(&r->lzopt, 0, sizeof r->lzopt);
    r->lzopt.dict_size = (uint32_t)dict;
    lzma_tune t = {0, 0, 0, r->method == BSZ_M_X86LZMA2};
    lzma_filter f[3];
    lzma_filters(f, &r->lzopt, &t);
    r->lz = (lzma_stream)LZMA_STREAM_INIT;
    r->lz.allocator = &LZMA_DMEM;
    lzma_ret lr = lzma_raw_decoder(&r->lz, f);
    if (lr == LZMA_MEM_ERROR)
        return DELTA_ENOMEM;
    if (lr != LZMA_OK)
        return DELTA_ECORRUPT;
    r->lz.next_in = r->comp;
    r->lz.avail_in = r->comp_len;
    return DELTA_OK;
}

static delta_status init_zstd(bsz_reader *r, unsigned max_wlog)
{
    unsigned w = wlog_for(r->raw_len);
    if (w > max_wlog)
        return DELTA_ELIMIT;
    r->z = ZSTD_createDCtx_advanced(ZSTD_DMEM);
    if (!r->z)
        return DELTA_ENOMEM;
    if (ZSTD_isError(ZSTD_DCtx_setParameter(r->z, ZSTD_d_windowLogMax, (int)w)))
        return DELTA_ECODEC;
    r->zin = (ZSTD_inBuffer){r->comp, r->comp_len, 0};
    return DELTA_OK;
}

delta_status bsz_reader_new(int method, const uint8_t *comp, size_t comp_len, uint64_t raw_len,
                            uint64_t dict_size, unsigned zstd_max_wlog, bsz_reader **out)
{
    *out = NULL;
    if (method < BSZ_M_STORED || method > BSZ_M_X86LZMA2)
        return DELTA_ECORRUPT;
    if (method == BSZ_M_STORED && comp_len != raw_len)
        return DELTA_ECORRUPT;
    bsz_reader *r = calloc(1, sizeof *r);
    if (!r)
        return DELTA_ENOMEM;
    r->method = method;
    r->comp = comp;
    r->comp_len = comp_len;
    r->raw_len = raw_len;
    delta_status st = DELTA_OK;
    if (method != BSZ_M_STORED && raw_len > 0) {
        r->buf = malloc(READ_CHUNK);
        if (!r->buf)
            st = DELTA_ENOMEM;
        else if (method == BSZ_M_ZSTD)
            st = init_zstd(r, zstd_max_wlog);
        else
            st = init_lzma(r, dict_size);
    }
    if (st != DELTA_OK) {
        bsz_reader_free(r);
        return st;
    }
    *out = r;
    return DELTA_OK;
}

static delta_status step_lzma(bsz_reader *r, size_t cap)
{
    r->lz.next_out = r->buf;
    r->lz.avail_out = cap;
    lzma_ret lr = lzma_code(&r->lz, LZMA_FINISH);
    r->buf_len = cap - r->lz.avail_out;
    if (lr == LZMA_STREAM_END)
        r->ended = 1;
    else if (lr == LZMA_MEM_ERROR)
        return DELTA_ENOMEM;
    else if (lr != LZMA_OK)
        return DELTA_ECORRUPT;
    return DELTA_OK;
}

static delta_status step_zstd(bsz_reader *r, size_t cap)
{
    ZSTD_outBuffer ob = {r->buf, cap, 0};
    size_t z = ZSTD_decompressStream(r->z, &ob, &r->zin);
    if (ZSTD_isError(z))
        return ZSTD_getErrorCode(z) == ZSTD_error_memory_allocation ? DELTA_ENOMEM : DELTA_ECORRUPT;
    r->buf_len = ob.pos;
    if (z == 0)
        r->ended = 1;
    return DELTA_OK;
}

/* Decodes the next chunk into buf; fails on overrun or a stall. */
static delta_status refill(bsz_reader *r)
{
    uint64_t left = r->raw_len - r->produced;
    /* One byte more than expected may come out: that is how an overlong
     * stream is caught. */
    size_t cap = left + 1 < READ_CHUNK ? (size_t)left + 1 : READ_CHUNK;
    r->buf_pos = 0;
    r->buf_len = 0;
    for (int spins = 0; r->buf_len == 0; spins++) {
        if (r->ended || spins > 64)
            return DELTA_ECORRUPT;
        delta_status st = r->method == BSZ_M_ZSTD ? step_zstd(r, cap) : step_lzma(r, cap);
        if (st != DELTA_OK)
            return st;
    }
    if (r->buf_len > left)
        return DELTA_ECORRUPT;
    r->produced += r->buf_len;
    return DELTA_OK;
}

long bsz_reader_get(bsz_reader *r, size_t want, const uint8_t **p)
{
    if (r->method == BSZ_M_STORED) {
        uint64_t left = r->raw_len - r->produced;
        size_t n = want < left ? want : (size_t)left;
        *p = r->comp + r->produced;
        r->produced += n;
        return (long)n;
    }
    if (r->buf_pos == r->buf_len) {
        if (r->produced == r->raw_len)
            return 0;
        if (refill(r) != DELTA_OK)
            return -1;
    }
    size_t n = r->buf_len - r->buf_pos;
    if (n > want)
        n = want;
    *p = r->buf + r->buf_pos;
    r->buf_pos += n;
    return (long)n;
}

/* A varint read byte by byte, across refills. */
static int varint_slow(bsz_reader *r, uint64_t *v, int at_end_ok)
{
    uint8_t b[10];
    for (size_t i = 0; i < 10; i++) {
        const uint8_t *p;
        long got = bsz_reader_get(r, 1, &p);
        if (got == 0 && i == 0 && at_end_ok)
            return 1;
        if (got != 1)
            return -1;
        b[i] = *p;
        if (!(b[i] & 0x80)) {
            size_t pos = 0;
            return varint_get(b, i + 1, &pos, v);
        }
    }
    return -1;
}

int bsz_reader_varint(bsz_reader *r, uint64_t *v, int at_end_ok)
{
    int stored = r->method == BSZ_M_STORED;
    uint64_t avail = stored ? r->raw_len - r->produced : r->buf_len - r->buf_pos;
    if (avail == 0) /* (also before the first refill, when buf is NULL) */
        return varint_slow(r, v, at_end_ok);
    const uint8_t *p = stored ? r->comp + r->produced : r->buf + r->buf_pos;
    size_t pos = 0;
    if (!(p[0] & 0x80)) /* most lengths fit one byte */
        *v = p[pos++];
    else if (avail < 10)
        return varint_slow(r, v, at_end_ok);
    else if (varint_get(p, 10, &pos, v) != 0)
        return -1;
    if (stored)
        r->produced += pos;
    else
        r->buf_pos += pos;
    return 0;
}

/* After the last byte, the coder must reach its end with no input left. */
static int coder_finished(bsz_reader *r)
{
    if (!r->ended && r->raw_len > 0) {
        size_t cap = 1;
        r->buf_pos = r->buf_len = 0;
        for (int i = 0; i < 8 && !r->ended; i++) {
            delta_status st = r->method == BSZ_M_ZSTD ? step_zstd(r, cap) : step_lzma(r, cap);
            if (st != DELTA_OK || r->buf_len != 0)
                return 0;
        }
    }
    if (r->method == BSZ_M_ZSTD)
        return r->ended && r->zin.pos == r->zin.size;
    return r->ended && r->lz.avail_in == 0;
}

int bsz_reader_done(bsz_reader *r)
{
    if (r->produced != r->raw_len || r->buf_pos != r->buf_len)
        return 0;
    if (r->method == BSZ_M_STORED)
        return 1;
    if (r->raw_len == 0)
        return r->comp_len == 0;
    return coder_finished(r);
}

void bsz_reader_free(bsz_reader *r)
{
    if (!r)
        return;
    if (r->method == BSZ_M_LZMA2 || r->method == BSZ_M_X86LZMA2)
        lzma_end(&r->lz);
    ZSTD_freeDCtx(r->z);
    free(r->buf);
    free(r);
}
