/*
 * util.c — plumbing shared by the codecs: error messages, the buffered and
 * counted output sink, the input source (a buffer or a read callback, with a
 * push-back area so that format detection can look at the first bytes), the
 * large-block allocator (dmem), a growable byte buffer and LEB128 varints.
 *
 * The sink collects small writes into one DELTA_CHUNK buffer and hands full
 * chunks (and whatever remains at flush) to the caller's callback, so the
 * callback sees few, large writes whatever the codec does. It refuses output
 * beyond its limit, which is how decoders honour delta_options.max_target.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

delta_status delta_fail(delta_report *report, delta_status st, const char *fmt, ...)
{
    if (report && report->msg[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(report->msg, sizeof report->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

void delta_options_resolve(const delta_options *opt, delta_options *out)
{
    if (opt)
        *out = *opt;
    else
        delta_options_init(out);
}

/* ---- sink ---- */

delta_status delta_sink_init(delta_sink *s, delta_write_fn write, void *arg, uint64_t limit)
{
    memset(s, 0, sizeof *s);
    s->write = write;
    s->arg = arg;
    s->limit = limit;
    s->buf = malloc(DELTA_CHUNK);
    return s->buf ? DELTA_OK : DELTA_ENOMEM;
}

static delta_status sink_emit(delta_sink *s)
{
    if (s->len == 0)
        return DELTA_OK;
    size_t n = s->len;
    s->len = 0;
    if (s->write(s->arg, s->buf, n) != 0)
        return DELTA_ESINK;
    if (s->progress && s->written >= s->next_progress) {
        s->progress(s->progress_arg, s->written, s->total);
        s->next_progress = s->written + DELTA_CHUNK * 4;
    }
    return DELTA_OK;
}

delta_status delta_sink_put(delta_sink *s, const void *p, size_t n)
{
    if (n > s->limit - s->written)
        return DELTA_ELIMIT;
    s->written += n;
    const uint8_t *q = p;
    while (n > 0) {
        size_t take = DELTA_CHUNK - s->len;
        if (take > n)
            take = n;
        memcpy(s->buf + s->len, q, take);
        s->len += take;
        q += take;
        n -= take;
        if (s->len == DELTA_CHUNK) {
            delta_status st = sink_emit(s);
            if (st != DELTA_OK)
                return st;
        }
    }
    return DELTA_OK;
}

size_t delta_sink_space(delta_sink *s, size_t want, uint8_t **p)
{
    size_t room = DELTA_CHUNK - s->len;
    *p = s->buf + s->len;
    return want < room ? want : room;
}

delta_status delta_sink_commit(delta_sink *s, size_t n)
{
    if (n > s->limit - s->written)
        return DELTA_ELIMIT;
    s->written += n;
    s->len += n;
    return s->len == DELTA_CHUNK ? sink_emit(s) : DELTA_OK;
}

delta_status delta_sink_flush(delta_sink *s)
{
    return sink_emit(s);
}

void delta_sink_free(delta_sink *s)
{
    free(s->buf);
    s->buf = NULL;
}

/* ---- source ---- */

void delta_src_mem(delta_src *s, const void *p, size_t n)
{
    memset(s, 0, sizeof *s);
    s->mem = p ? p : (const uint8_t *)"";
    s->mem_len = p ? n : 0;
}

void delta_src_reader(delta_src *s, delta_read_fn read, void *arg)
{
    memset(s, 0, sizeof *s);
    s->read = read;
    s->arg = arg;
}

/* Reads from the underlying buffer or callback, ignoring the peek area. */
static long src_raw(delta_src *s, void *buf, size_t cap)
{
    if (s->mem) {
        size_t n = s->mem_len - s->mem_pos;
        if (n > cap)
            n = cap;
        memcpy(buf, s->mem + s->mem_pos, n);
        s->mem_pos += n;
        return (long)n;
    }
    if (s->eof || s->failed)
        return s->failed ? -1 : 0;
    long r = s->read(s->arg, buf, cap);
    if (r < 0 || (size_t)r > cap) {
        s->failed = 1;
        return -1;
    }
    if (r == 0)
        s->eof = 1;
    return r;
}

long delta_src_read(delta_src *s, void *buf, size_t cap)
{
    if (cap == 0)
        return 0;
    if (s->peek_pos < s->peek_len) {
        size_t n = s->peek_len - s->peek_pos;
        if (n > cap)
            n = cap;
        memcpy(buf, s->peek + s->peek_pos, n);
        s->peek_pos += n;
        return (long)n;
    }
    return src_raw(s, buf, cap);
}

long delta_src_read_full(delta_src *s, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        long r = delta_src_read(s, (uint8_t *)buf + got, n - got);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (long)got;
}

size_t delta_src_peek(delta_src *s, size_t n, const uint8_t **p)
{
    if (n > sizeof s->peek)
        n = sizeof s->peek;
    if (s->peek_pos > 0) {
        memmove(s->peek, s->peek + s->peek_pos, s->peek_len - s->peek_pos);
        s->peek_len -= s->peek_pos;
        s->peek_pos = 0;
    }
    while (s->peek_len < n) {
        long r = src_raw(s, s->peek + s->peek_len, n - s->peek_len);
        if (r <= 0)
            break;
        s->peek_len += (size_t)r;
    }
    *p = s->peek;
    return s->peek_len < n ? s->peek_len : n;
}

const uint8_t *delta_src_take_mem(delta_src *s, size_t *n)
{
    if (!s->mem)
        return NULL;
    /* Peeked bytes of a buffer came from right before mem_pos: give them back. */
    s->mem_pos -= s->peek_len - s->peek_pos;
    s->peek_len = s->peek_pos = 0;
    const uint8_t *p = s->mem + s->mem_pos;
    *n = s->mem_len - s->mem_pos;
    s->mem_pos = s->mem_len;
    return p;
}

/* ---- dmem ---- */

/* Every block starts with this header; the caller's pointer follows it (16
 * bytes in, which keeps malloc's alignment). */
typedef struct {
    size_t len;    /* bytes the caller asked for */
    size_t mapped; /* bytes mapped including the header, or 0 for malloc */
} dmem_head;

#define DMEM_MAX (SIZE_MAX / 2)

static atomic_size_t live_bytes, peak_bytes;

static void account(size_t add, size_t sub)
{
    size_t now =
        atomic_fetch_add_explicit(&live_bytes, add - sub, memory_order_relaxed) + add - sub;
    size_t peak = atomic_load_explicit(&peak_bytes, memory_order_relaxed);
    while (now > peak && !atomic_compare_exchange_weak_explicit(
                             &peak_bytes, &peak, now, memory_order_relaxed, memory_order_relaxed))
        ;
}

size_t dmem_live(void)
{
    return atomic_load_explicit(&live_bytes, memory_order_relaxed);
}

size_t dmem_peak(void)
{
    return atomic_load_explicit(&peak_bytes, memory_order_relaxed);
}

void dmem_peak_reset(void)
{
    atomic_store_explicit(&peak_bytes, dmem_live(), memory_order_relaxed);
}

static size_t page_round(size_t n)
{
    return (n + 4095) & ~(size_t)4095;
}

static int dmem_mapped_size(size_t n, size_t *total)
{
    *total = n + sizeof(dmem_head);
    if (*total < DMEM_MAP_MIN)
        return 0;
    *total = page_round(*total);
    return 1;
}

void *dmem_alloc(size_t n)
{
    if (n > DMEM_MAX)
        return NULL;
    size_t total;
    dmem_head *h;
    if (dmem_mapped_size(n, &total)) {
        void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        h = m;
        h->mapped = total;
    } else {
        h = malloc(total);
        if (!h)
            return NULL;
        h->mapped = 0;
    }
    h->len = n;
    account(n, 0);
    return h + 1;
}

void *dmem_calloc(size_t count, size_t size)
{
    if (size && count > DMEM_MAX / size)
        return NULL;
    void *p = dmem_alloc(count * size);
    /* Fresh mappings are already zero. */
    if (p && ((dmem_head *)p - 1)->mapped == 0)
        memset(p, 0, count * size);
    return p;
}

void dmem_free(void *p)
{
    if (!p)
        return;
    dmem_head *h = (dmem_head *)p - 1;
    account(0, h->len);
    if (h->mapped)
        munmap(h, h->mapped);
    else
        free(h);
}

void *dmem_realloc(void *p, size_t n)
{
    if (!p)
        return dmem_alloc(n);
    if (n > DMEM_MAX)
        return NULL;
    dmem_head *h = (dmem_head *)p - 1;
    size_t total;
    int map = dmem_mapped_size(n, &total);
    if (map && h->mapped) {
        void *m = total == h->mapped ? (void *)h : mremap(h, h->mapped, total, MREMAP_MAYMOVE);
        if (m == MAP_FAILED)
            return NULL;
        h = m;
        h->mapped = total;
    } else if (!map && !h->mapped) {
        h = realloc(h, total);
        if (!h)
            return NULL;
    } else {
        /* Crossing between malloc and mmap: move the bytes. */
        uint8_t *q = dmem_alloc(n);
        if (!q)
            return NULL;
        memcpy(q, p, h->len < n ? h->len : n);
        dmem_free(p);
        return q;
    }
    account(n, h->len);
    h->len = n;
    return h + 1;
}

void *dmem_zstd_alloc(void *opaque, size_t n)
{
    (void)opaque;
    return dmem_alloc(n);
}

void *dmem_lzma_alloc(void *opaque, size_t count, size_t size)
{
    (void)opaque;
    if (size && count > SIZE_MAX / size)
        return NULL;
    return dmem_alloc(count * size);
}

void dmem_cb_free(void *opaque, void *p)
{
    (void)opaque;
    dmem_free(p);
}

/* ---- dbuf ---- */

int dbuf_reserve(dbuf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return -1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    uint8_t *p = dmem_realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int dbuf_put(dbuf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (dbuf_reserve(b, n) != 0)
        return -1;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

int dbuf_byte(dbuf *b, uint8_t v)
{
    return dbuf_put(b, &v, 1);
}

int dbuf_varint(dbuf *b, uint64_t v)
{
    uint8_t tmp[10];
    return dbuf_put(b, tmp, varint_put(tmp, v));
}

void dbuf_free(dbuf *b)
{
    dmem_free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int dbuf_sink(void *arg, const void *p, size_t n)
{
    return dbuf_put(arg, p, n);
}

/* ---- varints ---- */

size_t varint_put(uint8_t out[10], uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

int varint_get(const uint8_t *p, size_t n, size_t *pos, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0, i = 0; i < 10; i++, shift += 7) {
        if (*pos >= n)
            return -1;
        uint8_t b = p[(*pos)++];
        if (i == 9 && b > 1)
            return -1;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            if (b == 0 && i > 0)
                return -1; /* overlong: a trailing zero group */
            *v = r;
            return 0;
        }
    }
    return -1;
}
