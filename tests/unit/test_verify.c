/*
 * test_verify.c — unit tests for verify/digest.c: digest text parsing and
 * formatting, one-shot and incremental SHA-256.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "verify.h"

/* sha256("abc"), FIPS 180-2 appendix B.1 */
static const char ABC_HEX[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
static const uint8_t ABC_RAW[VERIFY_DIGEST_LEN] = {
    0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
    0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
/* sha256("") */
static const char EMPTY_HEX[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

static verify_status parse_str(const char *s, uint8_t out[VERIFY_DIGEST_LEN])
{
    return verify_digest_parse(s, strlen(s), out);
}

static void test_parse_valid(void **state)
{
    (void)state;
    uint8_t d[VERIFY_DIGEST_LEN];
    char text[VERIFY_DIGEST_TEXT_LEN];
    snprintf(text, sizeof text, "sha256:%s", ABC_HEX);
    assert_int_equal(parse_str(text, d), VERIFY_OK);
    assert_memory_equal(d, ABC_RAW, VERIFY_DIGEST_LEN);
}

static void test_parse_bounded_by_len(void **state)
{
    (void)state;
    uint8_t d[VERIFY_DIGEST_LEN];
    /* No NUL after the digest: a heap copy of exactly the digest's bytes, so
     * ASan reports any read past len. */
    size_t n = 7 + 64;
    char *exact = malloc(n);
    assert_non_null(exact);
    memcpy(exact, "sha256:", 7);
    memcpy(exact + 7, ABC_HEX, 64);
    assert_int_equal(verify_digest_parse(exact, n, d), VERIFY_OK);
    assert_memory_equal(d, ABC_RAW, VERIFY_DIGEST_LEN);
    /* A shorter len than the text is a shorter digest. */
    assert_int_equal(verify_digest_parse(exact, n - 1, d), VERIFY_DIGEST_MALFORMED);
    assert_int_equal(verify_digest_parse(exact, 6, d), VERIFY_DIGEST_MALFORMED);
    free(exact);
    /* Trailing bytes beyond len are ignored. */
    char longer[100];
    snprintf(longer, sizeof longer, "sha256:%sJUNK", ABC_HEX);
    assert_int_equal(verify_digest_parse(longer, 71, d), VERIFY_OK);
}

static void test_parse_rejects_uppercase(void **state)
{
    (void)state;
    uint8_t d[VERIFY_DIGEST_LEN];
    memset(d, 0x5a, sizeof d);
    char text[VERIFY_DIGEST_TEXT_LEN];
    snprintf(text, sizeof text, "sha256:%s", ABC_HEX);
    text[7] = 'B'; /* "ba78..." -> "Ba78..." */
    assert_int_equal(parse_str(text, d), VERIFY_DIGEST_MALFORMED);
    for (size_t i = 0; i < sizeof d; i++)
        assert_int_equal(d[i], 0x5a); /* out untouched on failure */
    assert_int_equal(parse_str("SHA256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f2"
                               "0015ad",
                               d),
                     VERIFY_DIGEST_MALFORMED);
}

static void test_parse_wrong_length(void **state)
{
    (void)state;
    uint8_t d[VERIFY_DIGEST_LEN];
    char text[200];
    snprintf(text, sizeof text, "sha256:%.63s", ABC_HEX);
    assert_int_equal(parse_str(text, d), VERIFY_DIGEST_MALFORMED);
    snprintf(text, sizeof text, "sha256:%s0", ABC_HEX);
    assert_int_equal(parse_str(text, d), VERIFY_DIGEST_MALFORMED);
    assert_int_equal(parse_str("sha256:", d), VERIFY_DIGEST_MALFORMED);
    assert_int_equal(parse_str("sha256", d), VERIFY_DIGEST_MALFORMED);
}

static void test_parse_unsupported(void **state)
{
    (void)state;
    uint8_t d[VERIFY_DIGEST_LEN];
    char text[300];
    snprintf(text, sizeof text, "sha512:%s%s", ABC_HEX, ABC_HEX); /* 128 hex */
    assert_int_equal(parse_str(text, d), VERIFY_DIGEST_UNSUPPORTED);
    /* sha512 with a wrong length breaks its registered form. */
    snprintf(text, sizeof text, "sha512:%s", ABC_HEX);
    assert_int_equal(parse_str(text, d), VERIFY_DIGEST_MALFORMED);
    /* Unregistered but well-formed algorithms and encodings. */
    assert_int_equal(
        parse_str("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", d),
        VERIFY_DIGEST_UNSUPPORTED);
    assert_int_equal(parse_str("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", d),
                     VERIFY_DIGEST_UNSUPPORTED);
    assert_int_equal(parse_str("blake3:abc=", d), VERIFY_DIGEST_UNSUPPORTED);
}

static void test_parse_garbage(void **state)
{
    (void)state;
    uint8_t d[VERIFY_DIGEST_LEN];
    static const char *bad[] = {
        "",          ":",          "sha256",     ":abc",      "sha256:abc:def",  "Sha256:00",
        "-sha:00",   "sha-:00",    "sha--x:00",  "sha..x:00", "sha 256:00",      "sha256: 00",
        "sha256:0/", "sha256:0+0", "sha256:0.0", "\xff:00",   "sha256:\xc3\xa9",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        verify_status st = parse_str(bad[i], d);
        if (st != VERIFY_DIGEST_MALFORMED)
            fail_msg("\"%s\" parsed as %d, want MALFORMED", bad[i], st);
    }
    assert_int_equal(verify_digest_parse(NULL, 0, d), VERIFY_DIGEST_MALFORMED);
    assert_int_equal(verify_digest_parse("sha256:00", 0, d), VERIFY_DIGEST_MALFORMED);
}

static void test_parse_embedded_nul(void **state)
{
    (void)state;
    uint8_t d[VERIFY_DIGEST_LEN];
    char text[VERIFY_DIGEST_TEXT_LEN];
    snprintf(text, sizeof text, "sha256:%s", ABC_HEX);
    text[40] = '\0';
    assert_int_equal(verify_digest_parse(text, 71, d), VERIFY_DIGEST_MALFORMED);
    char alg[] = "sha\0256:00";
    assert_int_equal(verify_digest_parse(alg, sizeof alg - 1, d), VERIFY_DIGEST_MALFORMED);
}

static void test_format_round_trip(void **state)
{
    (void)state;
    char text[VERIFY_DIGEST_TEXT_LEN];
    memset(text, 'X', sizeof text);
    verify_digest_format(ABC_RAW, text);
    assert_int_equal(strlen(text), VERIFY_DIGEST_TEXT_LEN - 1);
    assert_memory_equal(text, "sha256:", 7);
    assert_string_equal(text + 7, ABC_HEX);

    uint8_t raw[VERIFY_DIGEST_LEN], back[VERIFY_DIGEST_LEN];
    for (int round = 0; round < 64; round++) {
        for (size_t i = 0; i < sizeof raw; i++)
            raw[i] = (uint8_t)(i * 37 + round * 101 + (round & 1 ? 0xf0 : 0));
        verify_digest_format(raw, text);
        assert_int_equal(verify_digest_parse(text, strlen(text), back), VERIFY_OK);
        assert_memory_equal(raw, back, sizeof raw);
    }
}

static void test_sha256_known_vectors(void **state)
{
    (void)state;
    uint8_t d[VERIFY_DIGEST_LEN];
    char text[VERIFY_DIGEST_TEXT_LEN];
    verify_sha256("abc", 3, d);
    assert_memory_equal(d, ABC_RAW, VERIFY_DIGEST_LEN);
    verify_sha256(NULL, 0, d);
    verify_digest_format(d, text);
    assert_string_equal(text + 7, EMPTY_HEX);
    assert_int_equal(verify_digest_check("abc", 3, ABC_RAW), VERIFY_OK);
    assert_int_equal(verify_digest_check("abd", 3, ABC_RAW), VERIFY_DIGEST_MISMATCH);
    assert_int_equal(verify_digest_check("abc", 2, ABC_RAW), VERIFY_DIGEST_MISMATCH);
}

static uint8_t *pattern(size_t n)
{
    uint8_t *p = malloc(n);
    assert_non_null(p);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    return p;
}

static void test_hasher_split_invariance(void **state)
{
    (void)state;
    const size_t n = 300007;
    uint8_t *buf = pattern(n);
    uint8_t want[VERIFY_DIGEST_LEN], got[VERIFY_DIGEST_LEN];
    verify_sha256(buf, n, want);

    verify_hasher *h = verify_hasher_new();
    assert_non_null(h);
    static const size_t steps[] = {1, 7, 63, 64, 65, 4096, 65537, 300007};
    for (size_t si = 0; si < sizeof steps / sizeof steps[0]; si++) {
        verify_hasher_reset(h);
        for (size_t off = 0; off < n; off += steps[si]) {
            size_t len = n - off < steps[si] ? n - off : steps[si];
            verify_hasher_update(h, buf + off, len);
            verify_hasher_update(h, buf + off + len, 0);
        }
        assert_int_equal(verify_hasher_bytes(h), n);
        verify_hasher_final(h, got);
        assert_memory_equal(got, want, VERIFY_DIGEST_LEN);
        assert_int_equal(verify_hasher_bytes(h), n);
    }
    /* Irregular splits. */
    verify_hasher_reset(h);
    size_t off = 0;
    for (size_t k = 1; off < n; k = k * 3 % 9973 + 1) {
        size_t len = n - off < k ? n - off : k;
        verify_hasher_update(h, buf + off, len);
        off += len;
    }
    verify_hasher_final(h, got);
    assert_memory_equal(got, want, VERIFY_DIGEST_LEN);
    verify_hasher_free(h);
    free(buf);
}

static void test_hasher_reuse(void **state)
{
    (void)state;
    uint8_t got[VERIFY_DIGEST_LEN];
    verify_hasher *h = verify_hasher_new();
    assert_non_null(h);
    verify_hasher_update(h, "xyz", 3);
    verify_hasher_final(h, got);
    verify_hasher_reset(h);
    assert_int_equal(verify_hasher_bytes(h), 0);
    verify_hasher_update(h, "ab", 2);
    verify_hasher_update(h, "c", 1);
    assert_int_equal(verify_hasher_bytes(h), 3);
    verify_hasher_final(h, got);
    assert_memory_equal(got, ABC_RAW, VERIFY_DIGEST_LEN);
    /* An update after final, without reset, starts a new message. */
    verify_hasher_update(h, "abc", 3);
    assert_int_equal(verify_hasher_bytes(h), 3);
    verify_hasher_final(h, got);
    assert_memory_equal(got, ABC_RAW, VERIFY_DIGEST_LEN);
    /* A fresh hasher with no input gives sha256(""). */
    verify_hasher_reset(h);
    verify_hasher_final(h, got);
    char text[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(got, text);
    assert_string_equal(text + 7, EMPTY_HEX);
    verify_hasher_free(h);
    verify_hasher_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_bounded_by_len),
        cmocka_unit_test(test_parse_rejects_uppercase),
        cmocka_unit_test(test_parse_wrong_length),
        cmocka_unit_test(test_parse_unsupported),
        cmocka_unit_test(test_parse_garbage),
        cmocka_unit_test(test_parse_embedded_nul),
        cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_sha256_known_vectors),
        cmocka_unit_test(test_hasher_split_invariance),
        cmocka_unit_test(test_hasher_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
