/*
 * test_delta_internal.c — unit tests for delta/'s internals: the dmem
 * allocator and its counters, the ELF transform of bsz (fields rewritten
 * where FORMAT.md says, any split of a range into reads giving the same
 * bytes, malformed maps refused), and the working memory each codec holds
 * while encoding and decoding the real module pairs in tests/data/modules,
 * measured with dmem's peak counter against the bounds delta.h documents.
 *
 * Run from tests/ (meson's workdir), so data paths are relative to it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bsz_format.h"
#include "elfmap.h"
#include "internal.h"
#include "tbuf.h"

#define MIB ((size_t)1 << 20)

static int buf_sink(void *arg, const void *p, size_t n)
{
    buf_append(arg, p, n);
    return 0;
}

static int discard(void *arg, const void *p, size_t n)
{
    (void)arg;
    (void)p;
    (void)n;
    return 0;
}

static buf module(const char *name, const char *which)
{
    char path[256];
    snprintf(path, sizeof path, "data/modules/%s/%s.ko", name, which);
    return slurp(path);
}

/* ---- dmem ---- */

static void test_dmem(void **state)
{
    (void)state;
    size_t live = dmem_live();
    uint8_t *z = dmem_alloc(0);
    assert_non_null(z);
    uint8_t *p = dmem_alloc(100);
    assert_non_null(p);
    for (size_t i = 0; i < 100; i++)
        p[i] = (uint8_t)i;
    assert_int_equal(dmem_live(), live + 100);
    /* across the mapping threshold and back, contents kept */
    p = dmem_realloc(p, 3 * DMEM_MAP_MIN);
    assert_non_null(p);
    p[3 * DMEM_MAP_MIN - 1] = 0xaa;
    p = dmem_realloc(p, 5 * DMEM_MAP_MIN + 7);
    assert_non_null(p);
    assert_int_equal(p[3 * DMEM_MAP_MIN - 1], 0xaa);
    p = dmem_realloc(p, 50);
    assert_non_null(p);
    for (size_t i = 0; i < 50; i++)
        assert_int_equal(p[i], i);
    assert_int_equal(dmem_live(), live + 50);
    dmem_peak_reset();
    uint8_t *small = dmem_calloc(10, 7), *big = dmem_calloc(DMEM_MAP_MIN, 3);
    assert_non_null(small);
    assert_non_null(big);
    for (size_t i = 0; i < 70; i++)
        assert_int_equal(small[i], 0);
    for (size_t i = 0; i < 3 * DMEM_MAP_MIN; i += 4093)
        assert_int_equal(big[i], 0);
    assert_int_equal(dmem_peak(), live + 50 + 70 + 3 * DMEM_MAP_MIN);
    assert_null(dmem_calloc(SIZE_MAX / 2, 4));
    assert_null(dmem_alloc(SIZE_MAX - 8));
    dmem_free(small);
    dmem_free(big);
    dmem_free(p);
    dmem_free(z);
    dmem_free(NULL);
    assert_int_equal(dmem_live(), live);
}

/* ---- the ELF transform ---- */

typedef struct {
    uint64_t off, size;
    uint32_t type, link, info;
} sec;

static uint64_t rd(const uint8_t *p, int w)
{
    uint64_t v = 0;
    for (int i = w - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Section i of an ELF64 file (the test data are kernel modules). */
static sec section(const buf *f, size_t i)
{
    const uint8_t *h = f->p + rd(f->p + 0x28, 8) + 64 * i;
    return (sec){rd(h + 24, 8), rd(h + 32, 8), (uint32_t)rd(h + 4, 4), (uint32_t)rd(h + 40, 4),
                 (uint32_t)rd(h + 44, 4)};
}

static size_t nsections(const buf *f)
{
    return (size_t)rd(f->p + 0x3c, 2);
}

/* The first section of the type, or 0. */
static size_t find_type(const buf *f, uint32_t type)
{
    for (size_t i = 1; i < nsections(f); i++)
        if (section(f, i).type == type)
            return i;
    return 0;
}

/* Map bytes, with the library's own varint writer (internal.h). */
static size_t put_varint(uint8_t *o, uint64_t v)
{
    return varint_put(o, v);
}

static size_t put_zvarint(uint8_t *o, int64_t v)
{
    return varint_put(o, zigzag(v));
}

/* The whole transformed base for map m[0..n). */
static buf transformed(const buf *base, const uint8_t *m, size_t n)
{
    elfmap_xform *x;
    assert_int_equal(elfmap_xform_new(base->p, base->len, m, n, &x), DELTA_OK);
    buf out = {malloc(base->len), base->len, base->len};
    assert_non_null(out.p);
    elfmap_xform_read(x, 0, base->len, out.p);
    elfmap_xform_free(x);
    return out;
}

static void test_xform_symbol_names(void **state)
{
    (void)state;
    buf b = module("nvme-core", "old");
    sec st = section(&b, find_type(&b, 2 /* SHT_SYMTAB */));
    /* STRTAB: names below 1000 move by +5, from 1000 on by 5 - 8 = -3 */
    uint8_t m[32];
    size_t n = put_varint(m, 1);
    n += put_varint(m + n, 2);
    n += put_varint(m + n, 2);
    n += put_varint(m + n, 0);
    n += put_zvarint(m + n, 5);
    n += put_varint(m + n, 1000);
    n += put_zvarint(m + n, -8);
    buf t = transformed(&b, m, n);
    size_t low = 0, high = 0, zero = 0;
    for (uint64_t at = st.off + 24; at + 24 <= st.off + st.size; at += 24) {
        uint64_t name = rd(b.p + at, 4), now = rd(t.p + at, 4);
        if (name == 0) {
            assert_int_equal(now, 0);
            zero++;
        } else if (name < 1000) {
            assert_int_equal(now, name + 5);
            low++;
        } else {
            assert_int_equal(now, (name - 3) & 0xffffffff);
            high++;
        }
        /* the rest of the symbol is untouched */
        assert_memory_equal(t.p + at + 4, b.p + at + 4, 20);
    }
    assert_true(low > 0 && high > 0 && zero > 0);
    /* nothing outside the symbol table changed */
    assert_memory_equal(t.p, b.p, st.off);
    assert_memory_equal(t.p + st.off + st.size, b.p + st.off + st.size, b.len - st.off - st.size);
    free(t.p);
    free(b.p);
}

/* A class of many segments (the decoder indexes those in buckets), one far
 * beyond every value: each symbol name gets the delta of the last segment
 * at or below it, as a linear scan finds it. */
static void test_xform_many_segments(void **state)
{
    (void)state;
    buf b = module("nvme-core", "old");
    sec st = section(&b, find_type(&b, 2 /* SHT_SYMTAB */));
    enum { NSEG = 300 };
    uint64_t from[NSEG], delta[NSEG];
    uint8_t m[16 + NSEG * 20];
    size_t n = put_varint(m, 1);
    n += put_varint(m + n, 2); /* STRTAB */
    n += put_varint(m + n, NSEG);
    uint64_t seed = 7, prev_from = 0, prev_delta = 0;
    for (size_t i = 0; i < NSEG; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        from[i] = i == NSEG - 1 ? (uint64_t)1 << 40 : 3 + 37 * i + (seed >> 60);
        delta[i] = (uint64_t)(int64_t)((int64_t)(seed >> 40) - (1 << 23));
        n += put_varint(m + n, from[i] - prev_from);
        n += put_zvarint(m + n, (int64_t)(delta[i] - prev_delta));
        prev_from = from[i];
        prev_delta = delta[i];
    }
    buf t = transformed(&b, m, n);
    size_t moved = 0;
    for (uint64_t at = st.off + 24; at + 24 <= st.off + st.size; at += 24) {
        uint64_t name = rd(b.p + at, 4), want = name;
        for (size_t i = 0; name != 0 && i < NSEG && from[i] <= name; i++)
            want = (name + delta[i]) & 0xffffffff;
        assert_int_equal(rd(t.p + at, 4), want);
        moved += want != name;
    }
    assert_true(moved > 100);
    free(t.p);
    free(b.p);
}

/* A stream decoded ahead with a window much smaller than the stream: the
 * thread waits for the consumer again and again, the bytes arrive intact,
 * and freeing it while it waits (or runs) joins it at once. Stored streams
 * (method 0) stand in for compressed ones: the thread reads any reader. */
static void test_ahead_window(void **state)
{
    (void)state;
    enum { LEN = 600000 };
    uint8_t *raw = malloc(LEN);
    assert_non_null(raw);
    for (size_t i = 0; i < LEN; i++)
        raw[i] = (uint8_t)(i * 2654435761u >> 24);
    for (int round = 0; round < 3; round++) {
        bsz_reader *r;
        assert_int_equal(bsz_reader_new(0, raw, LEN, LEN, 0, 27, &r), DELTA_OK);
        bsz_ahead *a = bsz_ahead_start(r, LEN, 40000);
        assert_non_null(a);
        size_t got = 0, stop = round == 0 ? LEN : round == 1 ? 100000 : 0;
        while (got < stop) {
            const uint8_t *p;
            long n = bsz_ahead_get(a, 777, &p);
            assert_true(n > 0 && n <= 777);
            assert_memory_equal(p, raw + got, (size_t)n);
            got += (size_t)n;
        }
        if (round == 0) {
            const uint8_t *p;
            assert_int_equal(bsz_ahead_get(a, 1, &p), 0);
            assert_true(bsz_ahead_done(a));
        } else {
            assert_false(bsz_ahead_done(a)); /* not all taken */
        }
        bsz_ahead_free(a);
    }
    free(raw);
}

static void test_xform_relocations(void **state)
{
    (void)state;
    buf b = module("nvme-core", "old");
    size_t symtab = find_type(&b, 2);
    size_t nsyms = section(&b, symtab).size / 24;
    /* SYMIDX +1 from 0 */
    uint8_t m[] = {1, 1, 1, 0, 2};
    buf t = transformed(&b, m, sizeof m);
    size_t seen = 0;
    for (size_t i = 1; i < nsections(&b); i++) {
        sec s = section(&b, i);
        if (s.type != 4 /* SHT_RELA */ || s.link != symtab)
            continue;
        for (uint64_t at = s.off; at + 24 <= s.off + s.size; at += 24) {
            uint64_t sym = rd(b.p + at + 12, 4);
            uint64_t want = sym != 0 && sym < nsyms ? sym + 1 : sym;
            assert_int_equal(rd(t.p + at + 12, 4), want);
            /* r_offset, r_type and r_addend are not symbol indices */
            assert_memory_equal(t.p + at, b.p + at, 12);
            assert_memory_equal(t.p + at + 16, b.p + at + 16, 8);
            seen += want != sym;
        }
    }
    assert_true(seen > 100);
    free(t.p);
    free(b.p);
}

/* A map touching every kind of field, classes in increasing order of
 * kind | section << 3: SYMIDX, STRTAB, SHNDX (two segments each), BTF type
 * ids and names, then SECOFF of each section. */
static size_t busy_map(const buf *b, uint8_t *m)
{
    size_t ns = nsections(b), n = put_varint(m, 5 + ns - 1);
    static const unsigned kinds[] = {1, 2, 3, 5, 6};
    for (size_t k = 0; k < 5; k++) {
        n += put_varint(m + n, kinds[k]);
        n += put_varint(m + n, 2);
        n += put_varint(m + n, 1);
        n += put_zvarint(m + n, kinds[k] < 5 ? 1 : -7);
        n += put_varint(m + n, 50);
        n += put_zvarint(m + n, 2);
    }
    for (size_t s = 1; s < ns; s++) {
        n += put_varint(m + n, 4);
        n += put_varint(m + n, s);
        n += put_varint(m + n, 1);
        n += put_varint(m + n, 16);
        n += put_zvarint(m + n, (int64_t)s * 8 - 100);
    }
    return n;
}

static void test_xform_any_split(void **state)
{
    (void)state;
    static const char *const names[] = {"nvme-core", "hid-multitouch"};
    for (size_t k = 0; k < 2; k++) {
        buf b = module(names[k], "new");
        uint8_t *m = malloc(16 * nsections(&b) + 64);
        assert_non_null(m);
        size_t n = busy_map(&b, m);
        buf whole = transformed(&b, m, n);
        size_t changed = 0;
        for (size_t i = 0; i < b.len; i++)
            changed += whole.p[i] != b.p[i];
        assert_true(changed > b.len / 50);
        elfmap_xform *x;
        assert_int_equal(elfmap_xform_new(b.p, b.len, m, n, &x), DELTA_OK);
        uint8_t *parts = malloc(b.len);
        assert_non_null(parts);
        uint64_t seed = 12345;
        for (int round = 0; round < 4; round++) {
            memset(parts, 0, b.len);
            for (size_t pos = 0; pos < b.len;) {
                seed = seed * 6364136223846793005u + 1442695040888963407u;
                size_t len = round == 0 ? 1 : 1 + (size_t)(seed >> 33) % (round == 1 ? 13 : 40000);
                if (len > b.len - pos)
                    len = b.len - pos;
                elfmap_xform_read(x, pos, len, parts + pos);
                pos += len;
            }
            assert_memory_equal(parts, whole.p, b.len);
        }
        elfmap_xform_free(x);
        free(parts);
        free(whole.p);
        free(m);
        free(b.p);
    }
}

static void expect_bad_map(const buf *b, const uint8_t *m, size_t n)
{
    elfmap_xform *x = (elfmap_xform *)1;
    assert_int_equal(elfmap_xform_new(b->p, b->len, m, n, &x), DELTA_ECORRUPT);
    assert_null(x);
}

static void test_xform_bad_maps(void **state)
{
    (void)state;
    buf b = module("hid-multitouch", "old");
    uint8_t shnum = (uint8_t)nsections(&b);
    assert_true(shnum < 128);
    expect_bad_map(&b, (const uint8_t *)"", 0);
    expect_bad_map(&b, (const uint8_t[]){0}, 1);                         /* no class */
    expect_bad_map(&b, (const uint8_t[]){1, 0, 1, 0, 2}, 5);             /* kind 0 */
    expect_bad_map(&b, (const uint8_t[]){1, 7, 1, 0, 2}, 5);             /* kind 7 */
    expect_bad_map(&b, (const uint8_t[]){1, 4, 0, 1, 0, 2}, 6);          /* section 0 */
    expect_bad_map(&b, (const uint8_t[]){1, 4, shnum, 1, 0, 2}, 6);      /* no such section */
    expect_bad_map(&b, (const uint8_t[]){1, 1, 0, 0, 2}, 5);             /* no segment */
    expect_bad_map(&b, (const uint8_t[]){1, 1, 2, 5, 2, 0, 2}, 7);       /* second gap 0 */
    expect_bad_map(&b, (const uint8_t[]){2, 2, 1, 0, 2, 1, 1, 0, 2}, 9); /* out of order */
    expect_bad_map(&b, (const uint8_t[]){2, 1, 1, 0, 2, 1, 1, 0, 2}, 9); /* repeated */
    expect_bad_map(&b, (const uint8_t[]){1, 1, 1, 0, 2, 9}, 6);          /* trailing byte */
    expect_bad_map(&b, (const uint8_t[]){1, 1, 1, 0}, 4);                /* truncated */
    expect_bad_map(&b, (const uint8_t[]){1, 1, 1, 0x80}, 4);             /* truncated varint */
    /* a valid map for a base that is not ELF */
    buf junk = {(uint8_t *)"not an ELF object at all, just some bytes of text", 48, 48};
    expect_bad_map(&junk, (const uint8_t[]){1, 1, 1, 0, 2}, 5);
    /* and the valid one is accepted */
    elfmap_xform *x;
    assert_int_equal(elfmap_xform_new(b.p, b.len, (const uint8_t[]){1, 1, 1, 0, 2}, 5, &x),
                     DELTA_OK);
    elfmap_xform_free(x);
    free(b.p);
}

/* ---- working memory ---- */

typedef struct {
    buf old, neu;
    size_t enc_peak[5], dec_peak[5], size[5];
} measured;

static delta_options options(void)
{
    static const uint8_t sha[32] = {1};
    delta_options o;
    delta_options_init(&o);
    o.base_sha256 = sha;
    return o;
}

/* Encodes and decodes with codec, recording dmem's peak above what was live
 * before each call. */
static void measure(measured *m, delta_codec c)
{
    delta_options o = options();
    buf d = {0};
    size_t live = dmem_live();
    dmem_peak_reset();
    assert_int_equal(
        delta_encode(c, m->old.p, m->old.len, m->neu.p, m->neu.len, &o, buf_sink, &d, NULL),
        DELTA_OK);
    m->enc_peak[c] = dmem_peak() - live;
    m->size[c] = d.len;
    assert_int_equal(dmem_live(), live);
    dmem_peak_reset();
    assert_int_equal(delta_decode(m->old.p, m->old.len, d.p, d.len, &o, discard, NULL, NULL),
                     DELTA_OK);
    m->dec_peak[c] = dmem_peak() - live;
    assert_int_equal(dmem_live(), live);
    free(d.p);
}

static void test_working_memory(void **state)
{
    (void)state;
    static const char *const names[] = {"nvme-core", "hid-multitouch"};
    for (size_t k = 0; k < 2; k++) {
        measured m = {module(names[k], "old"), module(names[k], "new"), {0}, {0}, {0}};
        size_t b = m.old.len, t = m.neu.len;
        for (delta_codec c = DELTA_CODEC_ZSTD; c <= DELTA_CODEC_AUTO; c++)
            if (c != DELTA_CODEC_VCDIFF) /* xdelta3 runs in its own process */
                measure(&m, c);
        /* bsz: suffix array and preconditioned copy of the base (5x), or the
         * streams and one entropy coder with its 256 KiB window */
        assert_true(m.enc_peak[DELTA_CODEC_BSZ] <= b * 11 / 2 + 5 * MIB);
        /* decoding holds no copy of base or target: dictionaries, index */
        assert_true(m.dec_peak[DELTA_CODEC_BSZ] <= MIB);
        /* zstd: tables under 2.5x base + target, plus the level's fixed state */
        assert_true(m.enc_peak[DELTA_CODEC_ZSTD] <= (b + t) * 5 / 2 + 2 * MIB);
        /* ... and a decoding window as large as the target */
        assert_true(m.dec_peak[DELTA_CODEC_ZSTD] <= t + MIB);
        /* AUTO tries the codecs one after another and keeps the smallest */
        size_t most = m.enc_peak[DELTA_CODEC_BSZ] > m.enc_peak[DELTA_CODEC_ZSTD]
                          ? m.enc_peak[DELTA_CODEC_BSZ]
                          : m.enc_peak[DELTA_CODEC_ZSTD];
        size_t outputs = 2 * (m.size[DELTA_CODEC_BSZ] + m.size[DELTA_CODEC_ZSTD]) + 4096;
        assert_true(m.enc_peak[DELTA_CODEC_AUTO] <= most + outputs);
        assert_int_equal(m.size[DELTA_CODEC_AUTO], m.size[DELTA_CODEC_BSZ]);
        free(m.old.p);
        free(m.neu.p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dmem),
        cmocka_unit_test(test_xform_symbol_names),
        cmocka_unit_test(test_xform_relocations),
        cmocka_unit_test(test_xform_many_segments),
        cmocka_unit_test(test_ahead_window),
        cmocka_unit_test(test_xform_any_split),
        cmocka_unit_test(test_xform_bad_maps),
        cmocka_unit_test(test_working_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
