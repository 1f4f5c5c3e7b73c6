/*
 * test_delta.c — unit tests for delta/: round trips of the three codecs on
 * real kernel-module pairs (tests/data/modules/{nvme-core,hid-multitouch}),
 * empty and identical inputs, streamed decoding in odd chunk sizes,
 * corrupt / truncated / garbage deltas and wrong bases (every failure must
 * be a clean error status), output limits, format detection, the dcz header,
 * zstd window sizing, interoperability with the zstd and xdelta3 programs,
 * the worker pool and base selection.
 *
 * Run from tests/ (meson's workdir), so data paths are relative to it.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lzma.h>
#include <openssl/evp.h>

#include "delta.h"
#include "internal.h" /* varint_put, put_le64: hand-made bsz deltas */
#include "tbuf.h"

static int buf_sink(void *arg, const void *p, size_t n)
{
    assert_true(n > 0 && n <= DELTA_CHUNK);
    buf_append(arg, p, n);
    return 0;
}

static void buf_free(buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static void sha256(const buf *b, uint8_t out[32])
{
    unsigned int n;
    assert_int_equal(EVP_Digest(b->p ? b->p : (uint8_t *)"", b->len, out, &n, EVP_sha256(), NULL),
                     1);
}

typedef struct {
    buf old, neu;
    uint8_t sha[32];
} pair;

static pair load_pair(const char *name)
{
    char path[256];
    pair p;
    snprintf(path, sizeof path, "data/modules/%s/old.ko", name);
    p.old = slurp(path);
    snprintf(path, sizeof path, "data/modules/%s/new.ko", name);
    p.neu = slurp(path);
    sha256(&p.old, p.sha);
    return p;
}

static void free_pair(pair *p)
{
    buf_free(&p->old);
    buf_free(&p->neu);
}

static const char *const PAIRS[] = {"nvme-core", "hid-multitouch"};
static const delta_codec CODECS[] = {DELTA_CODEC_ZSTD, DELTA_CODEC_VCDIFF, DELTA_CODEC_BSZ};

static delta_options opts_for(const uint8_t sha[32])
{
    delta_options o;
    delta_options_init(&o);
    o.base_sha256 = sha;
    o.zstd_level = 9; /* keeps the sanitizer build quick */
    return o;
}

static buf encode(delta_codec c, const buf *old, const buf *neu, const delta_options *o)
{
    buf d = {0};
    delta_report r;
    delta_status st = delta_encode(c, old->p, old->len, neu->p, neu->len, o, buf_sink, &d, &r);
    if (st != DELTA_OK)
        fail_msg("encode %s: %s", delta_codec_name(c), r.msg);
    assert_int_equal(r.out_len, d.len);
    return d;
}

static delta_status decode(const buf *old, const buf *d, const delta_options *o, buf *out)
{
    return delta_decode(old->p, old->len, d->p, d->len, o, buf_sink, out, NULL);
}

static void check_roundtrip(delta_codec c, const buf *old, const buf *neu, const delta_options *o)
{
    buf d = encode(c, old, neu, o);
    assert_int_equal(delta_detect(d.p, d.len), c);
    buf out = {0};
    delta_report r;
    delta_status st = delta_decode(old->p, old->len, d.p, d.len, o, buf_sink, &out, &r);
    if (st != DELTA_OK)
        fail_msg("decode %s: %s", delta_codec_name(c), r.msg);
    assert_int_equal(out.len, neu->len);
    if (neu->len)
        assert_memory_equal(out.p, neu->p, neu->len);
    buf_free(&out);
    buf_free(&d);
}

/* ---- round trips ---- */

static void test_roundtrip_modules(void **state)
{
    (void)state;
    for (size_t i = 0; i < 2; i++) {
        pair p = load_pair(PAIRS[i]);
        delta_options o = opts_for(p.sha);
        for (size_t c = 0; c < 3; c++)
            check_roundtrip(CODECS[c], &p.old, &p.neu, &o);
        o.bsz_elf = 0;
        check_roundtrip(DELTA_CODEC_BSZ, &p.old, &p.neu, &o);
        /* the reverse direction too */
        uint8_t sha_new[32];
        sha256(&p.neu, sha_new);
        o = opts_for(sha_new);
        check_roundtrip(DELTA_CODEC_BSZ, &p.neu, &p.old, &o);
        free_pair(&p);
    }
}

static void test_bsz_smallest_on_modules(void **state)
{
    (void)state;
    pair p = load_pair("nvme-core");
    delta_options o = opts_for(p.sha);
    buf b = encode(DELTA_CODEC_BSZ, &p.old, &p.neu, &o);
    buf z = encode(DELTA_CODEC_ZSTD, &p.old, &p.neu, &o);
    assert_true(b.len < z.len);
    /* the module-aware map pays for itself */
    o.bsz_elf = 0;
    buf plain = encode(DELTA_CODEC_BSZ, &p.old, &p.neu, &o);
    assert_true(b.len < plain.len);
    /* auto picks the smallest */
    o.bsz_elf = 1;
    buf a = {0};
    delta_report r;
    assert_int_equal(delta_encode(DELTA_CODEC_AUTO, p.old.p, p.old.len, p.neu.p, p.neu.len, &o,
                                  buf_sink, &a, &r),
                     DELTA_OK);
    assert_int_equal(r.codec, DELTA_CODEC_BSZ);
    assert_int_equal(a.len, b.len);
    buf_free(&a);
    buf_free(&b);
    buf_free(&z);
    buf_free(&plain);
    free_pair(&p);
}

/* The base's digest asked for only when a dcz header is written. */
typedef struct {
    const uint8_t *sha;
    int calls;
} digest_asked;

static int count_digest(void *arg, uint8_t *out)
{
    digest_asked *d = arg;
    d->calls++;
    memcpy(out, d->sha, 32);
    return 0;
}

static void test_lazy_base_digest(void **state)
{
    (void)state;
    pair p = load_pair("nvme-core");
    delta_options o = opts_for(NULL);
    digest_asked asked = {p.sha, 0};
    o.base_sha256_fn = count_digest;
    o.base_sha256_arg = &asked;
    /* auto choosing bsz never needs it */
    buf a = {0};
    delta_report r;
    assert_int_equal(delta_encode(DELTA_CODEC_AUTO, p.old.p, p.old.len, p.neu.p, p.neu.len, &o,
                                  buf_sink, &a, &r),
                     DELTA_OK);
    assert_int_equal(r.codec, DELTA_CODEC_BSZ);
    assert_int_equal(asked.calls, 0);
    /* zstd asks once, and its header carries what it was told */
    buf z = encode(DELTA_CODEC_ZSTD, &p.old, &p.neu, &o);
    assert_int_equal(asked.calls, 1);
    uint8_t in_header[32];
    assert_int_equal(delta_dcz_header_parse(z.p, z.len, in_header), DELTA_OK);
    assert_memory_equal(in_header, p.sha, 32);
    delta_options check = opts_for(p.sha);
    buf out = {0};
    assert_int_equal(decode(&p.old, &z, &check, &out), DELTA_OK);
    assert_int_equal(out.len, p.neu.len);
    /* without either, zstd is refused */
    o.base_sha256_fn = NULL;
    buf none = {0};
    assert_int_equal(delta_encode(DELTA_CODEC_ZSTD, p.old.p, p.old.len, p.neu.p, p.neu.len, &o,
                                  buf_sink, &none, NULL),
                     DELTA_EINVAL);
    buf_free(&none);
    buf_free(&out);
    buf_free(&z);
    buf_free(&a);
    free_pair(&p);
}

static void test_empty_and_identical(void **state)
{
    (void)state;
    pair p = load_pair("hid-multitouch");
    buf empty = {0};
    uint8_t sha_empty[32];
    sha256(&empty, sha_empty);
    delta_options o = opts_for(p.sha);
    delta_options oe = opts_for(sha_empty);
    for (size_t c = 0; c < 3; c++) {
        check_roundtrip(CODECS[c], &empty, &empty, &oe);
        check_roundtrip(CODECS[c], &empty, &p.neu, &oe);
        check_roundtrip(CODECS[c], &p.old, &empty, &o);
        check_roundtrip(CODECS[c], &p.old, &p.old, &o);
    }
    buf d = encode(DELTA_CODEC_BSZ, &p.old, &p.old, &o);
    assert_true(d.len < 300); /* identical inputs cost next to nothing */
    buf_free(&d);
    free_pair(&p);
}

static void test_small_and_synthetic(void **state)
{
    (void)state;
    buf a = {0}, b = {0};
    uint8_t x[5000];
    for (size_t i = 0; i < sizeof x; i++)
        x[i] = (uint8_t)(i * 131 + (i >> 7));
    buf_sink(&a, x, sizeof x);
    x[100] ^= 0x55;
    x[4000] = 7;
    buf_sink(&b, x + 10, sizeof x - 20);
    buf_sink(&b, "tail", 4);
    uint8_t sha[32];
    sha256(&a, sha);
    delta_options o = opts_for(sha);
    for (size_t c = 0; c < 3; c++) {
        check_roundtrip(CODECS[c], &a, &b, &o);
        buf one = {0}, three = {0};
        buf_sink(&one, "z", 1);
        buf_sink(&three, "abc", 3);
        check_roundtrip(CODECS[c], &three, &one, &o);
        check_roundtrip(CODECS[c], &one, &three, &o);
        buf_free(&one);
        buf_free(&three);
    }
    buf_free(&a);
    buf_free(&b);
}

/* ---- streamed decoding ---- */

typedef struct {
    const buf *d;
    size_t pos, chunk;
} reader;

static long read_chunks(void *arg, void *p, size_t cap)
{
    reader *r = arg;
    size_t n = r->d->len - r->pos;
    if (n > cap)
        n = cap;
    if (n > r->chunk)
        n = r->chunk;
    memcpy(p, r->d->p + r->pos, n);
    r->pos += n;
    return (long)n;
}

static long read_fail(void *arg, void *p, size_t cap)
{
    (void)arg;
    (void)p;
    (void)cap;
    return -1;
}

static void test_decode_stream(void **state)
{
    (void)state;
    pair p = load_pair("hid-multitouch");
    delta_options o = opts_for(p.sha);
    static const size_t chunks[] = {1, 7, 4096, 1 << 20};
    for (size_t c = 0; c < 3; c++) {
        buf d = encode(CODECS[c], &p.old, &p.neu, &o);
        for (size_t k = 0; k < 4; k++) {
            if (chunks[k] == 1 && CODECS[c] == DELTA_CODEC_VCDIFF)
                continue; /* byte-at-a-time through a pipe is just slow */
            reader r = {&d, 0, chunks[k]};
            buf out = {0};
            assert_int_equal(
                delta_decode_stream(p.old.p, p.old.len, read_chunks, &r, &o, buf_sink, &out, NULL),
                DELTA_OK);
            assert_int_equal(out.len, p.neu.len);
            assert_memory_equal(out.p, p.neu.p, p.neu.len);
            buf_free(&out);
        }
        buf out = {0};
        assert_int_equal(
            delta_decode_stream(p.old.p, p.old.len, read_fail, NULL, &o, buf_sink, &out, NULL),
            DELTA_ESOURCE);
        buf_free(&out);
        buf_free(&d);
    }
    free_pair(&p);
}

/* ---- hostile deltas ---- */

/* Decodes a damaged delta: must fail cleanly or (rarely, for a change the
 * format cannot see) produce the right target. */
static void expect_clean(const pair *p, const buf *d, const delta_options *o)
{
    buf out = {0};
    delta_status st = decode(&p->old, d, o, &out);
    if (st == DELTA_OK) {
        assert_int_equal(out.len, p->neu.len);
        assert_memory_equal(out.p, p->neu.p, p->neu.len);
    }
    buf_free(&out);
}

static void test_truncated(void **state)
{
    (void)state;
    pair p = load_pair("hid-multitouch");
    delta_options o = opts_for(p.sha);
    for (size_t c = 0; c < 3; c++) {
        buf d = encode(CODECS[c], &p.old, &p.neu, &o);
        size_t step = CODECS[c] == DELTA_CODEC_VCDIFF ? d.len / 7 + 1 : d.len / 97 + 1;
        for (size_t n = 0; n < d.len; n += step) {
            buf t = {d.p, n, n};
            buf out = {0};
            delta_status st = decode(&p.old, &t, &o, &out);
            assert_int_not_equal(st, DELTA_OK);
            buf_free(&out);
        }
        buf_free(&d);
    }
    free_pair(&p);
}

static void test_corrupt_bytes(void **state)
{
    (void)state;
    pair p = load_pair("hid-multitouch");
    delta_options o = opts_for(p.sha);
    static const delta_codec inproc[] = {DELTA_CODEC_ZSTD, DELTA_CODEC_BSZ};
    for (size_t c = 0; c < 2; c++) {
        buf d = encode(inproc[c], &p.old, &p.neu, &o);
        for (size_t i = 0; i < d.len; i += d.len / 150 + 1) {
            for (int bit = 0; bit < 8; bit += 3) {
                d.p[i] ^= (uint8_t)(1 << bit);
                expect_clean(&p, &d, &o);
                d.p[i] ^= (uint8_t)(1 << bit);
            }
        }
        buf_free(&d);
    }
    buf d = encode(DELTA_CODEC_VCDIFF, &p.old, &p.neu, &o);
    for (size_t i = 4; i < d.len; i += d.len / 5 + 1) {
        d.p[i] ^= 0xff;
        expect_clean(&p, &d, &o);
        d.p[i] ^= 0xff;
    }
    buf_free(&d);
    free_pair(&p);
}

static void test_garbage(void **state)
{
    (void)state;
    pair p = load_pair("hid-multitouch");
    delta_options o = opts_for(p.sha);
    buf g = {0};
    uint8_t x[4096];
    for (size_t i = 0; i < sizeof x; i++)
        x[i] = (uint8_t)(i * 2654435761u >> 13);
    buf_sink(&g, x, sizeof x);
    buf out = {0};
    assert_int_equal(decode(&p.old, &g, &o, &out), DELTA_EFORMAT);
    buf empty = {0};
    assert_int_equal(decode(&p.old, &empty, &o, &out), DELTA_ECORRUPT);
    /* each magic followed by garbage */
    static const char bsz_magic[] = "\x89"
                                    "BSZ\r\n\x1a\n";
    static const char *const magics[] = {DELTA_DCZ_MAGIC, "\x28\xb5\x2f\xfd", "\xd6\xc3\xc4\x00",
                                         bsz_magic};
    static const size_t mlen[] = {8, 4, 4, 8};
    for (size_t m = 0; m < 4; m++) {
        memcpy(g.p, magics[m], mlen[m]);
        assert_int_not_equal(decode(&p.old, &g, &o, &out), DELTA_OK);
        buf t = {g.p, mlen[m] - 1, 0};
        assert_int_not_equal(decode(&p.old, &t, &o, &out), DELTA_OK);
    }
    assert_int_equal(out.len, 0);
    buf_free(&out);
    buf_free(&g);
    free_pair(&p);
}

static void test_wrong_base(void **state)
{
    (void)state;
    pair p = load_pair("hid-multitouch");
    pair q = load_pair("nvme-core");
    delta_options o = opts_for(p.sha);
    for (size_t c = 0; c < 3; c++) {
        buf d = encode(CODECS[c], &p.old, &p.neu, &o);
        buf out = {0};
        delta_options oq = opts_for(q.sha);
        delta_status st = decode(&q.old, &d, &oq, &out);
        assert_int_not_equal(st, DELTA_OK);
        if (CODECS[c] != DELTA_CODEC_VCDIFF)
            assert_int_equal(st, DELTA_EBASE);
        buf_free(&out);
        /* zstd without the digest to compare: its checksum catches it */
        oq.base_sha256 = NULL;
        assert_int_not_equal(decode(&q.old, &d, &oq, &out), DELTA_OK);
        buf_free(&out);
        buf_free(&d);
    }
    free_pair(&p);
    free_pair(&q);
}

static void test_limits(void **state)
{
    (void)state;
    pair p = load_pair("hid-multitouch");
    delta_options o = opts_for(p.sha);
    for (size_t c = 0; c < 3; c++) {
        buf d = encode(CODECS[c], &p.old, &p.neu, &o);
        buf out = {0};
        delta_options lim = o;
        lim.max_target = p.neu.len - 1;
        assert_int_equal(decode(&p.old, &d, &lim, &out), DELTA_ELIMIT);
        assert_true(out.len <= lim.max_target);
        buf_free(&out);
        lim.max_target = p.neu.len;
        assert_int_equal(decode(&p.old, &d, &lim, &out), DELTA_OK);
        buf_free(&out);
        buf_free(&d);
    }
    /* a zstd window above the decoder's limit is refused */
    buf big = {0};
    uint8_t z[1 << 16];
    memset(z, 'a', sizeof z);
    for (int i = 0; i < 64; i++)
        buf_sink(&big, z, sizeof z);
    delta_options ow = opts_for(p.sha);
    ow.zstd_level = 1;
    buf d = encode(DELTA_CODEC_ZSTD, &p.old, &big, &ow);
    unsigned wlog = 0;
    assert_int_equal(delta_zstd_frame_window_log(d.p, d.len, &wlog), DELTA_OK);
    /* a single-segment frame declares just its content size */
    assert_true(wlog >= 22 && wlog <= delta_zstd_window_log(p.old.len, big.len));
    ow.zstd_max_window_log = wlog - 1;
    buf out = {0};
    assert_int_equal(decode(&p.old, &d, &ow, &out), DELTA_ELIMIT);
    buf_free(&out);
    buf_free(&d);
    buf_free(&big);
    free_pair(&p);
}

static int fail_sink(void *arg, const void *p, size_t n)
{
    (void)arg;
    (void)p;
    (void)n;
    return 1;
}

static void test_sink_failure(void **state)
{
    (void)state;
    pair p = load_pair("hid-multitouch");
    delta_options o = opts_for(p.sha);
    for (size_t c = 0; c < 3; c++) {
        assert_int_equal(delta_encode(CODECS[c], p.old.p, p.old.len, p.neu.p, p.neu.len, &o,
                                      fail_sink, NULL, NULL),
                         DELTA_ESINK);
        buf d = encode(CODECS[c], &p.old, &p.neu, &o);
        assert_int_equal(delta_decode(p.old.p, p.old.len, d.p, d.len, &o, fail_sink, NULL, NULL),
                         DELTA_ESINK);
        buf_free(&d);
    }
    free_pair(&p);
}

static void test_bad_arguments_and_helper(void **state)
{
    (void)state;
    buf out = {0};
    delta_report r;
    assert_int_equal(delta_encode(DELTA_CODEC_ZSTD, "a", 1, "b", 1, NULL, buf_sink, &out, &r),
                     DELTA_EINVAL); /* dcz needs the base digest */
    assert_int_equal(delta_encode((delta_codec)9, "a", 1, "b", 1, NULL, buf_sink, &out, NULL),
                     DELTA_EINVAL);
    assert_int_equal(delta_encode(DELTA_CODEC_BSZ, NULL, 1, "b", 1, NULL, buf_sink, &out, NULL),
                     DELTA_EINVAL);
    delta_options o;
    delta_options_init(&o);
    o.zstd_level = 99;
    assert_int_equal(delta_encode(DELTA_CODEC_BSZ, "a", 1, "b", 1, &o, buf_sink, &out, NULL),
                     DELTA_EINVAL);
    delta_options_init(&o);
    o.xdelta3_path = "/nonexistent/xdelta3";
    assert_int_equal(delta_encode(DELTA_CODEC_VCDIFF, "a", 1, "b", 1, &o, buf_sink, &out, &r),
                     DELTA_EHELPER);
    assert_non_null(strstr(r.msg, "xdelta3"));
    /* a helper that exits non-zero, with its stderr in the message */
    o.xdelta3_path = "false";
    assert_int_equal(delta_encode(DELTA_CODEC_VCDIFF, "a", 1, "b", 1, &o, buf_sink, &out, &r),
                     DELTA_EHELPER);
    assert_non_null(strstr(r.msg, "status 1"));
    buf_free(&out);
    assert_string_equal(delta_strerror(DELTA_ECORRUPT), "corrupt or truncated delta");
    assert_string_equal(delta_strerror(12345), "unknown delta status");
    delta_codec c;
    assert_int_equal(delta_codec_parse("bsz", &c), DELTA_OK);
    assert_int_equal(c, DELTA_CODEC_BSZ);
    assert_int_equal(delta_codec_parse("gzip", &c), DELTA_EINVAL);
    assert_string_equal(delta_codec_name(DELTA_CODEC_VCDIFF), "vcdiff");
    assert_null(delta_codec_name((delta_codec)42));
}

/* ---- detection, dcz, windows ---- */

static void test_detect_and_dcz(void **state)
{
    (void)state;
    uint8_t sha[32], got[32], h[DELTA_DCZ_HEADER_LEN];
    for (int i = 0; i < 32; i++)
        sha[i] = (uint8_t)(i * 7 + 1);
    delta_dcz_header_write(h, sha);
    assert_memory_equal(h, "\x5e\x2a\x4d\x18\x20\x00\x00\x00", 8);
    assert_int_equal(delta_dcz_header_parse(h, sizeof h, got), DELTA_OK);
    assert_memory_equal(got, sha, 32);
    assert_int_equal(delta_dcz_header_parse(h, 39, got), DELTA_ECORRUPT);
    assert_int_equal(delta_dcz_header_parse(h, 3, got), DELTA_ECORRUPT);
    assert_int_equal(delta_dcz_header_parse("\x28\xb5\x2f\xfd", 4, got), DELTA_EFORMAT);
    assert_int_equal(delta_dcz_header_parse(h, 0, got), DELTA_EFORMAT);
    assert_int_equal(delta_detect(h, 8), DELTA_CODEC_ZSTD);
    assert_int_equal(delta_detect(h, 7), DELTA_CODEC_NONE);
    assert_int_equal(delta_detect("\x28\xb5\x2f\xfd", 4), DELTA_CODEC_ZSTD);
    assert_int_equal(delta_detect("\xd6\xc3\xc4\x00", 4), DELTA_CODEC_VCDIFF);
    assert_int_equal(delta_detect("\x89"
                                  "BSZ\r\n\x1a\n",
                                  8),
                     DELTA_CODEC_BSZ);
    assert_int_equal(delta_detect("\x7f"
                                  "ELF",
                                  4),
                     DELTA_CODEC_NONE);
    assert_int_equal(delta_zstd_window_log(0, 0), 10);
    assert_int_equal(delta_zstd_window_log(4 << 20, 4 << 20), 23);
    assert_int_equal(delta_zstd_window_log(4 << 20, (4 << 20) + 1), 24);
    assert_int_equal(delta_zstd_window_log(UINT64_MAX, 5), 31);
    unsigned w;
    assert_int_equal(delta_zstd_frame_window_log(h, sizeof h, &w), DELTA_ECORRUPT);
    assert_int_equal(delta_zstd_frame_window_log("nope", 4, &w), DELTA_EFORMAT);
    uint64_t tl;
    assert_int_equal(delta_bsz_target_len("nope", 4, &tl), DELTA_EFORMAT);
}

static void test_bsz_header_fields(void **state)
{
    (void)state;
    pair p = load_pair("hid-multitouch");
    delta_options o = opts_for(p.sha);
    buf d = encode(DELTA_CODEC_BSZ, &p.old, &p.neu, &o);
    uint64_t tl = 0;
    assert_int_equal(delta_bsz_target_len(d.p, d.len, &tl), DELTA_OK);
    assert_int_equal(tl, p.neu.len);
    assert_int_equal(delta_bsz_target_len(d.p, 20, &tl), DELTA_ECORRUPT);
    /* unknown version and flags are refused */
    buf out = {0};
    assert_int_equal(d.p[8], 2);
    d.p[8] = 3;
    assert_int_equal(decode(&p.old, &d, &o, &out), DELTA_ECORRUPT);
    d.p[8] = 0;
    assert_int_equal(decode(&p.old, &d, &o, &out), DELTA_ECORRUPT);
    /* a version 2 body read as version 1 (six streams) has one stream left over */
    d.p[8] = 1;
    assert_int_equal(decode(&p.old, &d, &o, &out), DELTA_ECORRUPT);
    d.p[8] = 2;
    d.p[9] |= 0x80;
    assert_int_equal(decode(&p.old, &d, &o, &out), DELTA_ECORRUPT);
    d.p[9] &= 0x7f;
    /* trailing bytes are refused */
    buf_sink(&d, "x", 1);
    assert_int_equal(decode(&p.old, &d, &o, &out), DELTA_ECORRUPT);
    assert_int_equal(out.len, 0);
    buf_free(&out);
    buf_free(&d);
    free_pair(&p);
}

/* The stored version 1 bsz delta of a pair (tests/data/deltas). */
static buf load_v1(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "data/deltas/%s.v1.bsz", name);
    return slurp(path);
}

/* Version 1 deltas (dense DIFF) written by an earlier Sluice still decode. */
static void test_bsz_version1_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof PAIRS / sizeof *PAIRS; i++) {
        pair p = load_pair(PAIRS[i]);
        buf d = load_v1(PAIRS[i]);
        assert_int_equal(d.p[8], 1);
        delta_options o = opts_for(p.sha);
        buf out = {0};
        assert_int_equal(decode(&p.old, &d, &o, &out), DELTA_OK);
        assert_int_equal(out.len, p.neu.len);
        assert_memory_equal(out.p, p.neu.p, p.neu.len);
        buf_free(&out);
        buf_free(&d);
        free_pair(&p);
    }
}

/* Decoding bsz streams ahead on threads (DELTA_AHEAD_ALL) and in line
 * (OFF) agree: on the real pairs, the stored version 1 deltas, and every
 * truncation and bit flip of a delta (same status; same output when OK). */
static delta_status decode_mode(const buf *old, const buf *d, int mode, buf *out)
{
    delta_options o;
    delta_options_init(&o);
    o.bsz_ahead = mode;
    out->len = 0;
    return decode(old, d, &o, out);
}

static void expect_same_paths(const buf *old, const buf *d)
{
    buf a = {0}, b = {0};
    delta_status sa = decode_mode(old, d, DELTA_AHEAD_OFF, &a);
    delta_status sb = decode_mode(old, d, DELTA_AHEAD_ALL, &b);
    assert_int_equal(sa, sb);
    if (sa == DELTA_OK) {
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.p, b.p, a.len);
    }
    buf_free(&a);
    buf_free(&b);
}

static void test_bsz_ahead_paths(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof PAIRS / sizeof *PAIRS; i++) {
        pair p = load_pair(PAIRS[i]);
        delta_options o = opts_for(p.sha);
        buf d = encode(DELTA_CODEC_BSZ, &p.old, &p.neu, &o);
        buf out = {0};
        assert_int_equal(decode_mode(&p.old, &d, DELTA_AHEAD_ALL, &out), DELTA_OK);
        assert_int_equal(out.len, p.neu.len);
        assert_memory_equal(out.p, p.neu.p, p.neu.len);
        buf v1 = load_v1(PAIRS[i]);
        assert_int_equal(decode_mode(&p.old, &v1, DELTA_AHEAD_ALL, &out), DELTA_OK);
        assert_memory_equal(out.p, p.neu.p, p.neu.len);
        for (size_t n = 0; n < d.len; n += d.len / 61 + 1) {
            buf t = {d.p, n, n};
            expect_same_paths(&p.old, &t);
        }
        for (size_t k = 44; k < d.len; k += d.len / 83 + 1) {
            d.p[k] ^= 0x24;
            expect_same_paths(&p.old, &d);
            d.p[k] ^= 0x24;
        }
        buf_free(&out);
        buf_free(&v1);
        buf_free(&d);
        free_pair(&p);
    }
}

/* ---- hand-made bsz deltas: the sparse difference runs ---- */

static void put_varint(buf *b, uint64_t v)
{
    uint8_t tmp[10];
    buf_append(b, tmp, varint_put(tmp, v));
}

/* A version 2 bsz delta whose seven streams are stored (method 0): one
 * record copying the whole base, the given RUNS and DIFF bytes. */
static buf sparse_delta(const buf *base, const buf *target, const buf *runs, const buf *diff)
{
    buf d = {0};
    uint8_t h[44] = {0x89, 'B', 'S', 'Z', '\r', '\n', 0x1a, '\n', 2};
    put_le64(h + 12, base->len);
    put_le64(h + 20, lzma_crc64(base->p, base->len, 0));
    put_le64(h + 28, target->len);
    put_le64(h + 36, lzma_crc64(target->p, target->len, 0));
    buf_append(&d, h, sizeof h);
    buf rec[4] = {{0}};
    put_varint(&rec[1], 0);         /* ADD */
    put_varint(&rec[2], base->len); /* COPY */
    put_varint(&rec[3], 0);         /* SEEK */
    const buf *streams[7] = {&rec[0], &rec[1], &rec[2], &rec[3], diff, &rec[0], runs};
    for (int i = 0; i < 7; i++) {
        uint8_t stored = 0;
        buf_append(&d, &stored, 1);
        put_varint(&d, streams[i]->len);
        put_varint(&d, streams[i]->len);
        if (streams[i]->len)
            buf_append(&d, streams[i]->p, streams[i]->len);
    }
    for (int i = 1; i < 4; i++)
        buf_free(&rec[i]);
    return d;
}

/* runs: pairs of (zeros, non-zero) lengths, n values. */
static delta_status decode_sparse(const buf *base, const buf *target, const uint64_t *runs,
                                  size_t n, const char *diff, size_t diff_len, buf *out)
{
    buf r = {0}, df = {0};
    for (size_t i = 0; i < n; i++)
        put_varint(&r, runs[i]);
    if (diff_len)
        buf_append(&df, diff, diff_len);
    buf d = sparse_delta(base, target, &r, &df);
    delta_options o;
    delta_options_init(&o);
    out->len = 0;
    delta_status st = decode(base, &d, &o, out);
    buf_free(&d);
    buf_free(&r);
    buf_free(&df);
    return st;
}

static void test_bsz_sparse_runs(void **state)
{
    (void)state;
    buf base = {0}, target = {0}, out = {0};
    for (int i = 0; i < 64; i++) {
        uint8_t c = (uint8_t)(i * 7 + 1);
        buf_append(&base, &c, 1);
    }
    buf_append(&target, base.p, base.len);
    target.p[3] += 1, target.p[4] += 2, target.p[63] += 5; /* 3 zeros, 2 bytes, 58 zeros, 1 */
    const uint64_t good[] = {3, 2, 58, 1};
    assert_int_equal(decode_sparse(&base, &target, good, 4, "\1\2\5", 3, &out), DELTA_OK);
    assert_int_equal(out.len, 64);
    assert_memory_equal(out.p, target.p, 64);
    /* an empty non-zero run, a pair past the covers, an extra pair, DIFF
     * bytes left over or missing, a run longer than the target: corrupt */
    const uint64_t empty_run[] = {3, 2, 58, 0, 0, 1};
    assert_int_equal(decode_sparse(&base, &target, empty_run, 6, "\1\2\5", 3, &out),
                     DELTA_ECORRUPT);
    const uint64_t past_end[] = {3, 2, 59, 1};
    assert_int_equal(decode_sparse(&base, &target, past_end, 4, "\1\2\5", 3, &out), DELTA_ECORRUPT);
    const uint64_t extra_pair[] = {3, 2, 58, 1, 1, 1};
    assert_int_equal(decode_sparse(&base, &target, extra_pair, 6, "\1\2\5\0", 4, &out),
                     DELTA_ECORRUPT);
    assert_int_equal(decode_sparse(&base, &target, good, 4, "\1\2\5\6", 4, &out), DELTA_ECORRUPT);
    assert_int_equal(decode_sparse(&base, &target, good, 4, "\1\2", 2, &out), DELTA_ECORRUPT);
    const uint64_t huge[] = {UINT64_MAX >> 1, 1};
    assert_int_equal(decode_sparse(&base, &target, huge, 2, "\1", 1, &out), DELTA_ECORRUPT);
    /* a trailing zero run is implicit: the same changes as runs ending at byte 5 */
    buf_append(&target, "", 0);
    target.p[63] -= 5;
    const uint64_t two[] = {3, 2};
    assert_int_equal(decode_sparse(&base, &target, two, 2, "\1\2", 2, &out), DELTA_OK);
    assert_memory_equal(out.p, target.p, 64);
    /* ... but a run the covers do not reach is corrupt, even with nothing left in DIFF */
    const uint64_t beyond[] = {3, 2, 59, 1};
    assert_int_equal(decode_sparse(&base, &target, beyond, 4, "\1\2", 2, &out), DELTA_ECORRUPT);
    /* no runs at all: the covers are the base; the CRC-64 of the target then fails */
    assert_int_equal(decode_sparse(&base, &target, NULL, 0, "", 0, &out), DELTA_ECORRUPT);
    assert_int_equal(decode_sparse(&base, &base, NULL, 0, "", 0, &out), DELTA_OK);
    assert_memory_equal(out.p, base.p, 64);
    buf_free(&base);
    buf_free(&target);
    buf_free(&out);
}

/* ---- interoperability with the command-line tools ---- */

static void write_file(const char *path, const buf *b)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (b->len)
        assert_int_equal(fwrite(b->p, 1, b->len, f), b->len);
    fclose(f);
}

static void test_interop_cli_tools(void **state)
{
    (void)state;
    pair p = load_pair("nvme-core");
    delta_options o = opts_for(p.sha);
    char dir[] = "/tmp/sluice-delta-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[1024];
    buf z = encode(DELTA_CODEC_ZSTD, &p.old, &p.neu, &o);
    buf frame = {z.p + DELTA_DCZ_HEADER_LEN, z.len - DELTA_DCZ_HEADER_LEN, 0};
    write_file("/tmp/sluice-delta-frame", &frame);
    snprintf(
        cmd, sizeof cmd,
        "cd %s && mv /tmp/sluice-delta-frame f.zst && "
        "zstd -q -d --patch-from=$OLDPWD/data/modules/nvme-core/old.ko --long=31 f.zst -o f && "
        "cmp -s f $OLDPWD/data/modules/nvme-core/new.ko",
        dir);
    assert_int_equal(system(cmd), 0);
    buf v = encode(DELTA_CODEC_VCDIFF, &p.old, &p.neu, &o);
    char path[256];
    snprintf(path, sizeof path, "%s/d.vcdiff", dir);
    write_file(path, &v);
    snprintf(cmd, sizeof cmd,
             "cd %s && xdelta3 -d -s $OLDPWD/data/modules/nvme-core/old.ko d.vcdiff v && "
             "cmp -s v $OLDPWD/data/modules/nvme-core/new.ko",
             dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    buf_free(&z);
    buf_free(&v);
    free_pair(&p);
}

/* ---- worker pool ---- */

typedef struct {
    pthread_mutex_t lock;
    int ran, done;
    int done_on_job_thread;
} pool_state;

typedef struct {
    pool_state *s;
    pthread_t job_thread;
} pool_job;

static void job_run(void *arg)
{
    pool_job *j = arg;
    j->job_thread = pthread_self();
    usleep(1000);
    pthread_mutex_lock(&j->s->lock);
    j->s->ran++;
    pthread_mutex_unlock(&j->s->lock);
}

static void job_done(void *arg)
{
    pool_job *j = arg;
    pthread_mutex_lock(&j->s->lock);
    j->s->done++;
    j->s->done_on_job_thread += pthread_equal(j->job_thread, pthread_self()) != 0;
    pthread_mutex_unlock(&j->s->lock);
}

static void test_pool(void **state)
{
    (void)state;
    assert_null(delta_pool_new(0, 0));
    pool_state s = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
    enum { N = 64 };
    pool_job jobs[N];
    delta_pool *pool = delta_pool_new(3, 0);
    assert_non_null(pool);
    for (int i = 0; i < N; i++) {
        jobs[i].s = &s;
        assert_int_equal(delta_pool_submit(pool, job_run, job_done, &jobs[i]), 0);
    }
    delta_pool_shutdown(pool); /* drains: every job runs */
    assert_int_equal(s.ran, N);
    assert_int_equal(s.done, N);
    assert_int_equal(s.done_on_job_thread, N);
    /* a bounded queue refuses what does not fit */
    delta_pool *small = delta_pool_new(1, 1);
    assert_non_null(small);
    int accepted = 0;
    for (int i = 0; i < 8; i++)
        accepted += delta_pool_submit(small, job_run, NULL, &jobs[i]) == 0;
    assert_true(accepted >= 1 && accepted < 8);
    delta_pool_shutdown(small);
    assert_int_equal(s.ran, N + accepted);
}

/* ---- base selection ---- */

static delta_layer layer(const char *title, const char *mt, uint32_t pos, uint32_t age,
                         uint64_t size, uint8_t id)
{
    delta_layer l = {title, mt, pos, age, size, {0}};
    memset(l.digest, id, sizeof l.digest);
    return l;
}

static void test_select_bases(void **state)
{
    (void)state;
    const char *ko = "application/vnd.sluice.module";
    const char *tar = "application/vnd.oci.image.layer.v1.tar";
    delta_layer target[] = {
        layer("nvme-core.ko", ko, 0, 0, 1000, 1), /* title match, newest wins */
        layer("kvm.ko", ko, 1, 0, 5000, 2),       /* title match over position */
        layer(NULL, tar, 2, 0, 800, 3),           /* no title: same position and type */
        layer("new.ko", ko, 3, 0, 100, 4),        /* no candidate */
        layer("same.ko", ko, 4, 0, 100, 5),       /* already held */
    };
    delta_layer earlier[] = {
        layer("nvme-core.ko", ko, 0, 2, 990, 10), layer("nvme-core.ko", ko, 0, 1, 995, 11),
        layer("x.ko", ko, 1, 1, 5000, 12),        layer("kvm.ko", ko, 5, 1, 4000, 13),
        layer(NULL, tar, 2, 1, 700, 14),          layer(NULL, ko, 2, 1, 800, 15),
        layer("other.ko", ko, 3, 1, 100, 16),     layer("old-same.ko", ko, 9, 3, 100, 5),
    };
    long base[5];
    delta_select_bases(target, 5, earlier, 8, base);
    assert_int_equal(base[0], 1);
    assert_int_equal(base[1], 3);
    assert_int_equal(base[2], 4);
    assert_int_equal(base[3], -1);
    assert_int_equal(base[4], -1);
    /* ties on age go to the closest size */
    delta_layer t2[] = {layer(NULL, tar, 0, 0, 100, 1)};
    delta_layer e2[] = {layer(NULL, tar, 0, 1, 50, 2), layer(NULL, tar, 0, 1, 120, 3)};
    delta_select_bases(t2, 1, e2, 2, base);
    assert_int_equal(base[0], 1);
    delta_select_bases(t2, 1, NULL, 0, base);
    assert_int_equal(base[0], -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_modules),
        cmocka_unit_test(test_bsz_smallest_on_modules),
        cmocka_unit_test(test_empty_and_identical),
        cmocka_unit_test(test_small_and_synthetic),
        cmocka_unit_test(test_decode_stream),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_corrupt_bytes),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_wrong_base),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_sink_failure),
        cmocka_unit_test(test_bad_arguments_and_helper),
        cmocka_unit_test(test_detect_and_dcz),
        cmocka_unit_test(test_bsz_header_fields),
        cmocka_unit_test(test_interop_cli_tools),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_select_bases),
        cmocka_unit_test(test_lazy_base_digest),
        cmocka_unit_test(test_bsz_version1_vectors),
        cmocka_unit_test(test_bsz_sparse_runs),
        cmocka_unit_test(test_bsz_ahead_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
