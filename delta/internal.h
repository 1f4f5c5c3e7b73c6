/*
 * internal.h — what the files of delta/ share and the public header does not
 * say: error reporting, the buffered sink every codec writes through, the
 * input source every decoder reads from (a buffer or a read callback, with
 * the bytes delta_detect already looked at pushed back), the allocator for
 * large working memory, a growable byte buffer, LEB128 varints, and each
 * codec's entry points.
 *
 * Not installed and not part of the API; the unit tests include it to reach
 * the pieces directly.
 */
#ifndef SLUICE_DELTA_INTERNAL_H
#define SLUICE_DELTA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "delta.h"

/* ---- errors ---- */

/* Sets report->msg (if report) from fmt and returns st. */
delta_status delta_fail(delta_report *report, delta_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The options in effect: opt, or the defaults when opt is NULL. */
void delta_options_resolve(const delta_options *opt, delta_options *out);

/* ---- output ---- */

/* Accumulates output into DELTA_CHUNK pieces for the user's sink, counts it,
 * enforces a limit and reports progress. */
typedef struct {
    delta_write_fn write;
    void *arg;
    uint64_t written; /* bytes accepted so far (including buffered) */
    uint64_t limit;   /* more than this is DELTA_ELIMIT */
    uint64_t total;   /* for progress; 0 if unknown */
    delta_progress_fn progress;
    void *progress_arg;
    uint64_t next_progress;
    uint8_t *buf;
    size_t len;
} delta_sink;

delta_status delta_sink_init(delta_sink *s, delta_write_fn write, void *arg, uint64_t limit);
/* Appends p[0..n). */
delta_status delta_sink_put(delta_sink *s, const void *p, size_t n);
/* Room in the sink's buffer for the caller to write into directly: sets *p
 * and returns how many bytes fit (at least 1; at most want). */
size_t delta_sink_space(delta_sink *s, size_t want, uint8_t **p);
/* Accounts for n bytes written at the pointer delta_sink_space gave. */
delta_status delta_sink_commit(delta_sink *s, size_t n);
/* Passes what is buffered to the user's sink. */
delta_status delta_sink_flush(delta_sink *s);
void delta_sink_free(delta_sink *s);

/* ---- input ---- */

typedef struct {
    const uint8_t *mem; /* whole delta in memory, or NULL */
    size_t mem_len;
    size_t mem_pos;
    delta_read_fn read; /* otherwise this */
    void *arg;
    uint8_t peek[DELTA_DETECT_LEN + DELTA_DCZ_HEADER_LEN];
    size_t peek_len, peek_pos;
    int eof;
    int failed;
} delta_src;

void delta_src_mem(delta_src *s, const void *p, size_t n);
void delta_src_reader(delta_src *s, delta_read_fn read, void *arg);
/* Reads up to cap bytes; returns the count, 0 at the end, -1 on a reader
 * error (s->failed set). */
long delta_src_read(delta_src *s, void *buf, size_t cap);
/* Reads exactly n bytes unless the input ends first; returns what was read
 * or -1 on error. */
long delta_src_read_full(delta_src *s, void *buf, size_t n);
/* Reads up to n bytes into the peek buffer (n <= sizeof peek) and makes them
 * be read again; returns how many are available. */
size_t delta_src_peek(delta_src *s, size_t n, const uint8_t **p);
/* The remaining bytes when the source is a buffer (NULL otherwise), consuming
 * them. */
const uint8_t *delta_src_take_mem(delta_src *s, size_t *n);

/* ---- large working memory ----
 *
 * Suffix arrays, streams, coder tables and windows come from dmem: blocks
 * of DMEM_MAP_MIN bytes or more are mapped with mmap and unmapped when
 * freed, smaller ones come from malloc. Memory one stage frees is thus
 * returned to the system at once instead of staying resident in the malloc
 * heap for the rest of the call (and glibc's dynamic mmap threshold, which
 * rises each time it frees a large block of its own, never grows because
 * of us), so an encode's peak is that of its largest stage, not their sum,
 * and AUTO's peak is that of its largest codec. zstd and liblzma allocate
 * through dmem too (ZSTD_customMem and lzma_allocator built from the
 * callbacks below). */

#define DMEM_MAP_MIN ((size_t)64 << 10)

/* Like malloc/realloc/free (dmem_alloc(0) returns a valid block). Blocks
 * must be freed with dmem_free, never free. */
void *dmem_alloc(size_t n);
void *dmem_calloc(size_t count, size_t size);
void *dmem_realloc(void *p, size_t n);
void dmem_free(void *p);
/* Bytes held in dmem blocks by the whole process: now, and at most since
 * the last dmem_peak_reset (which sets the peak to the current amount). For
 * tests and measurements; the counters are atomic. */
size_t dmem_live(void);
size_t dmem_peak(void);
void dmem_peak_reset(void);
/* The same with the signatures of ZSTD_customMem and lzma_allocator. */
void *dmem_zstd_alloc(void *opaque, size_t n);
void *dmem_lzma_alloc(void *opaque, size_t count, size_t size);
void dmem_cb_free(void *opaque, void *p);

/* ---- growable buffer (its memory comes from dmem) ---- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} dbuf;

int dbuf_reserve(dbuf *b, size_t extra);
int dbuf_put(dbuf *b, const void *p, size_t n);
int dbuf_byte(dbuf *b, uint8_t v);
int dbuf_varint(dbuf *b, uint64_t v);
void dbuf_free(dbuf *b);
/* A delta_write_fn appending to the dbuf in arg. */
int dbuf_sink(void *arg, const void *p, size_t n);

/* ---- varints: LEB128, at most 10 bytes; zigzag for signed values ---- */

size_t varint_put(uint8_t out[10], uint64_t v);
/* Reads a varint from p[*pos..n); -1 on truncation or overlong encoding. */
int varint_get(const uint8_t *p, size_t n, size_t *pos, uint64_t *v);
static inline uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}
static inline int64_t unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static inline uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static inline void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- codecs ---- */

delta_status zstd_encode(const uint8_t *base, size_t base_len, const uint8_t *target,
                         size_t target_len, const delta_options *opt, delta_sink *out,
                         delta_report *rep);
delta_status zstd_decode(const uint8_t *base, size_t base_len, delta_src *in,
                         const delta_options *opt, delta_sink *out, delta_report *rep);

delta_status vcdiff_encode(const uint8_t *base, size_t base_len, const uint8_t *target,
                           size_t target_len, const delta_options *opt, delta_sink *out,
                           delta_report *rep);
delta_status vcdiff_decode(const uint8_t *base, size_t base_len, delta_src *in,
                           const delta_options *opt, delta_sink *out, delta_report *rep);

delta_status bsz_encode(const uint8_t *base, size_t base_len, const uint8_t *target,
                        size_t target_len, const delta_options *opt, delta_sink *out,
                        delta_report *rep);
delta_status bsz_decode(const uint8_t *base, size_t base_len, delta_src *in,
                        const delta_options *opt, delta_sink *out, delta_report *rep);

#endif
