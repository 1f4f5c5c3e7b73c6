/*
 * fuzz_dcz.c — libFuzzer target for the dcz side of delta/: the 40-byte
 * header parser, format detection, the zstd frame window probe, the bsz
 * header probe, and decoding a dcz body or bare zstd frame (delta.c,
 * zstd_codec.c) against a fixed base.
 *
 * How it works: the input is copied into a heap buffer of exactly its size
 * (so AddressSanitizer sees any over-read) and given to each function; the
 * results must agree with one another (a parsed header means the magic was
 * there and the digest is the input's bytes 8..40, detection and parsing
 * agree). Inputs that are zstd by magic are also decoded, with and without
 * an expected base digest; the decoder must return a status, keep to the
 * output limit, and refuse a digest mismatch.
 *
 * Run: build with -Dfuzz=true (see meson.build here), then
 *   ./fuzz_dcz tests/fuzz/corpus/fuzz_dcz
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "delta.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static const uint8_t BASE[] = "the base: a small dictionary the zstd frames may refer to, "
                              "with some repeated text, repeated text, repeated text.";

typedef struct {
    size_t len, limit;
} counter;

static int sink(void *arg, const void *p, size_t n)
{
    counter *c = arg;
    (void)p;
    CHECK(n > 0 && n <= DELTA_CHUNK && c->len + n <= c->limit);
    c->len += n;
    return 0;
}

static void check_header(const uint8_t *p, size_t n)
{
    uint8_t sha[DELTA_SHA256_LEN];
    delta_status st = delta_dcz_header_parse(p, n, sha);
    if (st == DELTA_OK) {
        CHECK(n >= DELTA_DCZ_HEADER_LEN && memcmp(p, DELTA_DCZ_MAGIC, 8) == 0);
        CHECK(memcmp(sha, p + 8, DELTA_SHA256_LEN) == 0);
        CHECK(delta_detect(p, n) == DELTA_CODEC_ZSTD);
        uint8_t again[DELTA_DCZ_HEADER_LEN];
        delta_dcz_header_write(again, sha);
        CHECK(memcmp(again, p, DELTA_DCZ_HEADER_LEN) == 0);
    } else {
        CHECK(st == DELTA_EFORMAT || st == DELTA_ECORRUPT);
    }
    unsigned wlog = 0;
    st = delta_zstd_frame_window_log(p, n, &wlog);
    CHECK(st == DELTA_OK ? wlog >= 10 && wlog < 64 : st == DELTA_EFORMAT || st == DELTA_ECORRUPT);
    uint64_t tl;
    st = delta_bsz_target_len(p, n, &tl);
    CHECK(st == DELTA_OK ? tl < DELTA_BSZ_MAX_INPUT : st == DELTA_EFORMAT || st == DELTA_ECORRUPT);
}

static void decode(const uint8_t *p, size_t n, const uint8_t *expect_sha)
{
    delta_options o;
    delta_options_init(&o);
    o.max_target = 1 << 20;
    o.zstd_max_window_log = 20;
    o.base_sha256 = expect_sha;
    counter c = {0, o.max_target};
    delta_status st = delta_decode(BASE, sizeof BASE, p, n, &o, sink, &c, NULL);
    CHECK(st == DELTA_OK || st < 0);
    if (expect_sha && n >= DELTA_DCZ_HEADER_LEN && memcmp(p, DELTA_DCZ_MAGIC, 8) == 0 &&
        memcmp(p + 8, expect_sha, DELTA_SHA256_LEN) != 0)
        CHECK(st == DELTA_EBASE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p = malloc(size ? size : 1);
    CHECK(p != NULL);
    memcpy(p, data, size);
    check_header(p, size);
    if (delta_detect(p, size) == DELTA_CODEC_ZSTD) {
        static const uint8_t zero_sha[DELTA_SHA256_LEN];
        decode(p, size, NULL);
        decode(p, size, zero_sha);
    }
    free(p);
    return 0;
}
