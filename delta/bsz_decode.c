/*
 * bsz_decode.c — the bsz decoder and the header helpers shared with the
 * encoder (format: delta/FORMAT.md).
 *
 * How it works: the 44-byte header is read and checked (version, flags,
 * base length and CRC-64 against the base given, target length against the
 * output limit). The six stream descriptors and payloads follow; each length
 * is validated against what the declared target length allows before
 * anything is allocated, and payloads of a delta held in memory are used in
 * place (a streamed delta is read into buffers that grow only as bytes
 * arrive). If the ELF flag is set, the map stream is decoded and parsed into
 * a transform that produces the preconditioned base range by range, as
 * covers need it (elfmap.c; nothing of the base is copied). Then the control
 * records are replayed: literal bytes from the extra stream, a seek in the
 * base, cover bytes as base + diff. In version 2 the diff is sparse: a cover
 * chunk starts as a copy of the base and only the non-zero runs that RUNS
 * places in it are added (most cover bytes equal the base, so this skips
 * both decoding and adding their zeros); version 1's dense diff is added
 * byte by byte. Each stream is decoded incrementally by a bsz_reader, output
 * goes out in chunks, every length and position is checked before use, the
 * decoder never produces more than the declared target length, and at the
 * end every stream must be exhausted and the output's CRC-64 must match.
 */
#include <lzma.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bsz_format.h"
#include "elfmap.h"

#define OUT_CHUNK (64 * 1024)

/* ---- header ---- */

void bsz_header_write(uint8_t out[BSZ_HEADER_LEN], const bsz_header *h)
{
    memcpy(out, BSZ_MAGIC, BSZ_MAGIC_LEN);
    out[8] = h->version;
    out[9] = h->flags;
    out[10] = out[11] = 0;
    put_le64(out + 12, h->base_len);
    put_le64(out + 20, h->base_crc);
    put_le64(out + 28, h->target_len);
    put_le64(out + 36, h->target_crc);
}

delta_status bsz_header_parse(const uint8_t *p, size_t n, bsz_header *h)
{
    size_t m = n < BSZ_MAGIC_LEN ? n : BSZ_MAGIC_LEN;
    if (m == 0 || memcmp(p, BSZ_MAGIC, m) != 0)
        return DELTA_EFORMAT;
    if (n < BSZ_HEADER_LEN)
        return DELTA_ECORRUPT;
    if ((p[8] != BSZ_VERSION && p[8] != BSZ_VERSION_DENSE) || (p[9] & ~BSZ_FLAG_ELF) != 0 ||
        p[10] != 0 || p[11] != 0)
        return DELTA_ECORRUPT;
    h->version = p[8];
    h->flags = p[9];
    h->base_len = le64(p + 12);
    h->base_crc = le64(p + 20);
    h->target_len = le64(p + 28);
    h->target_crc = le64(p + 36);
    if (h->base_len >= DELTA_BSZ_MAX_INPUT || h->target_len >= DELTA_BSZ_MAX_INPUT)
        return DELTA_ECORRUPT;
    return DELTA_OK;
}

delta_status delta_bsz_target_len(const void *p, size_t n, uint64_t *target_len)
{
    bsz_header h;
    if (!p || !target_len)
        return DELTA_EINVAL;
    delta_status st = bsz_header_parse(p, n, &h);
    if (st == DELTA_OK)
        *target_len = h.target_len;
    return st;
}

uint64_t bsz_stream_max_raw(int stream, uint64_t target_len)
{
    switch (stream) {
    case BSZ_S_MAP:
        return BSZ_MAX_MAP;
    case BSZ_S_ADD:
    case BSZ_S_COPY:
    case BSZ_S_SEEK:
        /* every record produces at least one byte; one varint each */
        return 10 * (target_len + 1);
    case BSZ_S_RUNS:
        /* every pair places at least one byte; two varints each */
        return 20 * (target_len + 1);
    default:
        return target_len;
    }
}

/* ---- reading the streams ---- */

typedef struct {
    int method;
    uint64_t raw_len, comp_len, dict;
    const uint8_t *payload;
    uint8_t *owned; /* payload read from a streamed source */
} stream_desc;

typedef struct {
    bsz_header h;
    int nstreams; /* BSZ_NSTREAMS, or BSZ_NSTREAMS_DENSE for version 1 */
    stream_desc s[BSZ_NSTREAMS];
    bsz_reader *r[BSZ_NSTREAMS]; /* NULL where ahead[i] took the reader over */
    bsz_ahead *ahead[BSZ_NSTREAMS];
    const uint8_t *base;
    elfmap_xform *xform; /* NULL without an ELF map: covers read the base itself */
    uint64_t crc;
    /* Version 2: what is left of the current RUNS pair (zeros first); once
     * RUNS is exhausted, zeros_left is UINT64_MAX (the rest is zeros). */
    uint64_t zeros_left, nonzero_left;
} bsz_dec;

static int src_varint(delta_src *in, uint64_t *v)
{
    uint8_t b[10];
    for (size_t i = 0; i < 10; i++) {
        if (delta_src_read_full(in, b + i, 1) != 1)
            return -1;
        if (!(b[i] & 0x80)) {
            size_t pos = 0;
            return varint_get(b, i + 1, &pos, v);
        }
    }
    return -1;
}

/* Payload bytes in place (buffer source) or in a buffer that grows as the
 * bytes arrive (streamed source), so a lying length costs no memory. */
static delta_status read_payload(delta_src *in, stream_desc *d)
{
    size_t avail;
    const uint8_t *mem = delta_src_take_mem(in, &avail);
    if (mem) {
        if (d->comp_len > avail)
            return DELTA_ECORRUPT;
        d->payload = mem;
        in->mem_pos -= avail - (size_t)d->comp_len;
        return DELTA_OK;
    }
    dbuf b = {0};
    while (b.len < d->comp_len) {
        size_t want = d->comp_len - b.len < OUT_CHUNK ? (size_t)(d->comp_len - b.len) : OUT_CHUNK;
        if (dbuf_reserve(&b, want) != 0) {
            dbuf_free(&b);
            return DELTA_ENOMEM;
        }
        long got = delta_src_read(in, b.p + b.len, want);
        if (got <= 0) {
            dbuf_free(&b);
            return got < 0 ? DELTA_ESOURCE : DELTA_ECORRUPT;
        }
        b.len += (size_t)got;
    }
    d->owned = b.p;
    d->payload = b.p ? b.p : (const uint8_t *)"";
    return DELTA_OK;
}

static delta_status read_desc(delta_src *in, int i, uint64_t target_len, stream_desc *d)
{
    uint8_t m;
    if (delta_src_read_full(in, &m, 1) != 1)
        return in->failed ? DELTA_ESOURCE : DELTA_ECORRUPT;
    d->method = m;
    if (m > BSZ_M_X86LZMA2 || src_varint(in, &d->raw_len) || src_varint(in, &d->comp_len))
        return in->failed ? DELTA_ESOURCE : DELTA_ECORRUPT;
    if ((m == BSZ_M_LZMA2 || m == BSZ_M_X86LZMA2) && src_varint(in, &d->dict))
        return in->failed ? DELTA_ESOURCE : DELTA_ECORRUPT;
    if (d->raw_len > bsz_stream_max_raw(i, target_len))
        return DELTA_ECORRUPT;
    if (m == BSZ_M_STORED ? d->comp_len != d->raw_len
                          : d->comp_len > d->raw_len + d->raw_len / 8 + 4096)
        return DELTA_ECORRUPT;
    return read_payload(in, d);
}

static delta_status read_streams(bsz_dec *d, delta_src *in, unsigned max_wlog)
{
    d->nstreams = d->h.version == BSZ_VERSION_DENSE ? BSZ_NSTREAMS_DENSE : BSZ_NSTREAMS;
    for (int i = 0; i < d->nstreams; i++) {
        delta_status st = read_desc(in, i, d->h.target_len, &d->s[i]);
        if (st != DELTA_OK)
            return st;
    }
    uint8_t extra;
    long r = delta_src_read(in, &extra, 1);
    if (r != 0)
        return r < 0 ? DELTA_ESOURCE : DELTA_ECORRUPT;
    for (int i = 0; i < d->nstreams; i++) {
        stream_desc *s = &d->s[i];
        delta_status st = bsz_reader_new(s->method, s->payload, s->comp_len, s->raw_len, s->dict,
                                         max_wlog, &d->r[i]);
        if (st != DELTA_OK)
            return st;
    }
    return DELTA_OK;
}

/* ---- decoding ahead ---- */

/* Streams smaller than this are not worth a thread (DELTA_AHEAD_AUTO):
 * starting one costs tens of microseconds, decoding 16 KiB of LZMA2 about
 * half a millisecond. */
#define AHEAD_MIN (16u * 1024u)

static int worth_a_thread(const bsz_dec *d, int i, int mode)
{
    const stream_desc *s = &d->s[i];
    if (s->method == BSZ_M_STORED || s->raw_len == 0)
        return 0;
    if (mode == DELTA_AHEAD_ALL)
        return 1;
    /* zstd decodes far faster than the replay consumes; a stream larger
     * than a quarter of the target means a poor delta, whose buffer would
     * cost more memory than its thread saves time */
    return s->method != BSZ_M_ZSTD && s->raw_len >= AHEAD_MIN && s->raw_len <= d->h.target_len / 4;
}

/* Whether more than one CPU is online, asked once per process (glibc reads
 * it from sysfs on every call; a daemon decodes many deltas). */
static int several_cpus(void)
{
    static atomic_int known; /* 0 unknown, 1 one CPU, 2 several */
    int k = atomic_load_explicit(&known, memory_order_relaxed);
    if (k == 0) {
        k = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 2 : 1;
        atomic_store_explicit(&known, k, memory_order_relaxed);
    }
    return k == 2;
}

/* Hands the streams worth it to threads of their own (see DELTA_AHEAD_*);
 * a stream whose thread cannot start is read in line. */
static void start_ahead(bsz_dec *d, int mode)
{
    if (mode == DELTA_AHEAD_OFF || (mode == DELTA_AHEAD_AUTO && !several_cpus()))
        return;
    for (int i = 0; i < d->nstreams; i++) {
        if (!worth_a_thread(d, i, mode))
            continue;
        d->ahead[i] = bsz_ahead_start(d->r[i], d->s[i].raw_len, BSZ_AHEAD_WINDOW);
        if (d->ahead[i])
            d->r[i] = NULL;
    }
}

/* Stream i's next bytes, varint and end check, from its reader or from the
 * thread decoding it ahead. */
static long stream_get(bsz_dec *d, int i, size_t want, const uint8_t **p)
{
    return d->ahead[i] ? bsz_ahead_get(d->ahead[i], want, p) : bsz_reader_get(d->r[i], want, p);
}

static int stream_varint_or_end(bsz_dec *d, int i, uint64_t *v, int at_end_ok)
{
    return d->ahead[i] ? bsz_ahead_varint(d->ahead[i], v, at_end_ok)
                       : bsz_reader_varint(d->r[i], v, at_end_ok);
}

static int stream_varint(bsz_dec *d, int i, uint64_t *v)
{
    return stream_varint_or_end(d, i, v, 0);
}

static int stream_done(bsz_dec *d, int i)
{
    return d->ahead[i] ? bsz_ahead_done(d->ahead[i]) : bsz_reader_done(d->r[i]);
}

/* ---- the ELF map ---- */

static delta_status load_map(bsz_dec *d, const uint8_t *base, size_t base_len)
{
    uint64_t n = d->s[BSZ_S_MAP].raw_len;
    d->base = base;
    if (!(d->h.flags & BSZ_FLAG_ELF))
        return n == 0 ? DELTA_OK : DELTA_ECORRUPT;
    uint8_t *map = dmem_alloc((size_t)n);
    if (!map)
        return DELTA_ENOMEM;
    size_t got = 0;
    while (got < n) {
        const uint8_t *p;
        long r = stream_get(d, BSZ_S_MAP, (size_t)(n - got), &p);
        if (r <= 0) {
            dmem_free(map);
            return DELTA_ECORRUPT;
        }
        memcpy(map + got, p, (size_t)r);
        got += (size_t)r;
    }
    delta_status st = elfmap_xform_new(base, base_len, map, (size_t)n, &d->xform);
    dmem_free(map);
    return st;
}

/* ---- replaying the records ---- */

static delta_status emit(bsz_dec *d, delta_sink *out, const uint8_t *p, size_t n)
{
    d->crc = lzma_crc64(p, n, d->crc);
    return delta_sink_put(out, p, n);
}

static delta_status copy_extra(bsz_dec *d, uint64_t n, delta_sink *out)
{
    while (n > 0) {
        const uint8_t *p;
        long r = stream_get(d, BSZ_S_EXTRA, n < OUT_CHUNK ? (size_t)n : OUT_CHUNK, &p);
        if (r <= 0)
            return DELTA_ECORRUPT;
        delta_status st = emit(d, out, p, (size_t)r);
        if (st != DELTA_OK)
            return st;
        n -= (uint64_t)r;
    }
    return DELTA_OK;
}

static void add_bytes(uint8_t *restrict out, const uint8_t *restrict diff,
                      const uint8_t *restrict base, size_t n)
{
    for (size_t k = 0; k < n; k++)
        out[k] = (uint8_t)(diff[k] + base[k]);
}

static void add_in_place(uint8_t *restrict out, const uint8_t *restrict diff, size_t n)
{
    for (size_t k = 0; k < n; k++)
        out[k] = (uint8_t)(out[k] + diff[k]);
}

/* Version 1: the next n (<= the sink's chunk) cover bytes from position pos
 * into dst, as dense diff + (preconditioned) base; how many were made, or -1. */
static long cover_dense(bsz_dec *d, uint64_t pos, size_t n, uint8_t *dst)
{
    const uint8_t *p;
    long r = stream_get(d, BSZ_S_DIFF, n, &p);
    if (r <= 0)
        return -1;
    if (d->xform) {
        elfmap_xform_read(d->xform, pos, (size_t)r, dst);
        add_in_place(dst, p, (size_t)r);
    } else {
        add_bytes(dst, p, d->base + pos, (size_t)r);
    }
    return r;
}

/* Version 2: starts the next RUNS pair; 0, or -1 if corrupt. A non-zero run
 * is at least one byte, so every pair makes progress. */
static int next_runs(bsz_dec *d)
{
    uint64_t zeros, nonzero;
    int rc = stream_varint_or_end(d, BSZ_S_RUNS, &zeros, 1);
    if (rc == 1) {
        d->zeros_left = UINT64_MAX;
        return 0;
    }
    if (rc != 0 || stream_varint(d, BSZ_S_RUNS, &nonzero) || nonzero == 0 ||
        zeros > d->h.target_len || nonzero > d->h.target_len)
        return -1;
    d->zeros_left = zeros;
    d->nonzero_left = nonzero;
    return 0;
}

/* Version 2: adds the non-zero runs that fall into the next n cover bytes,
 * which dst already holds from the base; 0, or -1 if corrupt. */
static int add_runs(bsz_dec *d, uint8_t *dst, size_t n)
{
    size_t k = 0;
    while (k < n) {
        if (d->zeros_left == 0 && d->nonzero_left == 0 && next_runs(d) != 0)
            return -1;
        if (d->zeros_left > 0) {
            size_t skip = d->zeros_left < n - k ? (size_t)d->zeros_left : n - k;
            k += skip;
            d->zeros_left -= skip;
            continue;
        }
        size_t want = d->nonzero_left < n - k ? (size_t)d->nonzero_left : n - k;
        const uint8_t *p;
        long r = stream_get(d, BSZ_S_DIFF, want, &p);
        if (r <= 0)
            return -1;
        add_in_place(dst + k, p, (size_t)r);
        k += (size_t)r;
        d->nonzero_left -= (uint64_t)r;
    }
    return 0;
}

static long cover_sparse(bsz_dec *d, uint64_t pos, size_t n, uint8_t *dst)
{
    if (d->xform)
        elfmap_xform_read(d->xform, pos, n, dst);
    else
        memcpy(dst, d->base + pos, n);
    return add_runs(d, dst, n) == 0 ? (long)n : -1;
}

/* Produces n cover bytes from base position pos straight into the sink's
 * buffer. */
static delta_status copy_cover(bsz_dec *d, uint64_t pos, uint64_t n, delta_sink *out)
{
    while (n > 0) {
        uint8_t *dst;
        size_t run = delta_sink_space(out, n < DELTA_CHUNK ? (size_t)n : DELTA_CHUNK, &dst);
        long r = d->nstreams == BSZ_NSTREAMS_DENSE ? cover_dense(d, pos, run, dst)
                                                   : cover_sparse(d, pos, run, dst);
        if (r <= 0)
            return DELTA_ECORRUPT;
        d->crc = lzma_crc64(dst, (size_t)r, d->crc);
        delta_status st = delta_sink_commit(out, (size_t)r);
        if (st != DELTA_OK)
            return st;
        pos += (uint64_t)r;
        n -= (uint64_t)r;
    }
    return DELTA_OK;
}

static delta_status replay(bsz_dec *d, uint64_t base_len, delta_sink *out)
{
    uint64_t npos = 0, opos = 0, total = d->h.target_len;
    while (npos < total) {
        uint64_t add, copy, zseek;
        if (stream_varint(d, BSZ_S_ADD, &add) || stream_varint(d, BSZ_S_COPY, &copy) ||
            stream_varint(d, BSZ_S_SEEK, &zseek))
            return DELTA_ECORRUPT;
        if ((add == 0 && copy == 0) || add > total - npos || copy > total - npos - add)
            return DELTA_ECORRUPT;
        int64_t seek = unzigzag(zseek);
        if (seek < 0 ? (uint64_t)(-(seek + 1)) + 1 > opos : (uint64_t)seek > base_len - opos)
            return DELTA_ECORRUPT;
        opos = (uint64_t)((int64_t)opos + seek);
        if (copy > base_len - opos)
            return DELTA_ECORRUPT;
        delta_status st = copy_extra(d, add, out);
        if (st == DELTA_OK)
            st = copy_cover(d, opos, copy, out);
        if (st != DELTA_OK)
            return st;
        npos += add + copy;
        opos += copy;
    }
    /* a pair still open places bytes past the covers (another pair left in
     * RUNS leaves that stream unfinished) */
    if (d->nonzero_left > 0)
        return DELTA_ECORRUPT;
    for (int i = 0; i < d->nstreams; i++)
        if (!stream_done(d, i))
            return DELTA_ECORRUPT;
    return d->crc == d->h.target_crc ? DELTA_OK : DELTA_ECORRUPT;
}

/* ---- entry point ---- */

static delta_status read_header(bsz_dec *d, const uint8_t *base, size_t base_len, delta_src *in,
                                const delta_sink *out, delta_report *rep)
{
    uint8_t head[BSZ_HEADER_LEN];
    long got = delta_src_read_full(in, head, sizeof head);
    if (got < 0)
        return DELTA_ESOURCE;
    delta_status st = bsz_header_parse(head, (size_t)got, &d->h);
    if (st != DELTA_OK)
        return delta_fail(rep, st, "bad bsz header");
    if (d->h.base_len != base_len || d->h.base_crc != lzma_crc64(base, base_len, 0))
        return delta_fail(rep, DELTA_EBASE, "bsz delta was made against another base");
    if (d->h.target_len > out->limit)
        return delta_fail(rep, DELTA_ELIMIT, "bsz target of %llu bytes exceeds the limit",
                          (unsigned long long)d->h.target_len);
    return DELTA_OK;
}

static void dec_free(bsz_dec *d)
{
    for (int i = 0; i < BSZ_NSTREAMS; i++) {
        bsz_ahead_free(d->ahead[i]);
        bsz_reader_free(d->r[i]);
        dmem_free(d->s[i].owned);
    }
    elfmap_xform_free(d->xform);
}

delta_status bsz_decode(const uint8_t *base, size_t base_len, delta_src *in, const delta_options *o,
                        delta_sink *out, delta_report *rep)
{
    bsz_dec d;
    memset(&d, 0, sizeof d);
    delta_status st = read_header(&d, base, base_len, in, out, rep);
    if (st == DELTA_OK) {
        out->total = d.h.target_len;
        st = read_streams(&d, in, o->zstd_max_window_log);
    }
    if (st == DELTA_OK)
        start_ahead(&d, o->bsz_ahead);
    if (st == DELTA_OK)
        st = load_map(&d, base, base_len);
    if (st == DELTA_OK)
        st = replay(&d, base_len, out);
    dec_free(&d);
    if (st == DELTA_ECORRUPT)
        return delta_fail(rep, st, "corrupt bsz delta");
    return st;
}
