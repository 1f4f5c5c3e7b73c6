/*
 * digest.c — content digests for Sluice (implements the digest part of verify.h).
 *
 * What it is for: every object Sluice caches or serves is named by an OCI
 * digest "<algorithm>:<encoded>". This file parses and formats that text form
 * and computes SHA-256, one-shot or incrementally, with OpenSSL's EVP API.
 *
 * How it works:
 *  - verify_digest_parse checks the OCI grammar (image-spec descriptor.md)
 *        digest    ::= algorithm ":" encoded
 *        algorithm ::= component ([+._-] component)*
 *        component ::= [a-z0-9]+
 *        encoded   ::= [a-zA-Z0-9=_-]+
 *    byte by byte within s[0..len) (never past len, no NUL terminator assumed;
 *    a NUL byte is just an invalid character). Grammar errors are MALFORMED.
 *    "sha256" must then carry exactly 64 lowercase hex digits (the registered
 *    form) or it is MALFORMED; "sha512" likewise must carry 128 lowercase hex
 *    digits; any other well-formed digest, and a well-formed sha512 one, is
 *    UNSUPPORTED. `out` is written only on VERIFY_OK.
 *  - A verify_hasher wraps one EVP_MD_CTX and counts the bytes fed to it.
 *    verify_hasher_final finishes the digest and re-initialises the context,
 *    so the hasher is immediately reusable; verify_hasher_bytes keeps
 *    reporting the finished message's length until the next update or reset
 *    (an update after final starts a new message, as reset would).
 *  - The void functions cannot report failure. SHA-256 through OpenSSL's
 *    default provider fails only on a broken library or a NULL context (which
 *    verify_hasher_new never hands out); producing a wrong digest would break
 *    Sluice's first invariant, so such a failure aborts the process instead.
 *    verify_digest_check fails closed (MISMATCH) rather than aborting.
 */
#include "verify.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHA256_HEX_LEN 64
#define SHA512_HEX_LEN 128

struct verify_hasher {
    EVP_MD_CTX *ctx;
    uint64_t bytes;
    bool finished; /* final was called and no update or reset since */
};

/* ---- grammar ---- */

static bool is_component_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

static bool is_separator(unsigned char ch)
{
    return ch == '+' || ch == '.' || ch == '_' || ch == '-';
}

static bool is_encoded_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '=' || ch == '_' || ch == '-';
}

/* algorithm: components separated by single separators, no empty component. */
static bool algorithm_valid(const unsigned char *p, size_t n)
{
    bool in_component = false;
    for (size_t i = 0; i < n; i++) {
        if (is_component_char(p[i]))
            in_component = true;
        else if (is_separator(p[i]) && in_component)
            in_component = false;
        else
            return false;
    }
    return in_component;
}

static bool encoded_valid(const unsigned char *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_encoded_char(p[i]))
            return false;
    return true;
}

static int lower_hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

static bool lower_hex_of_len(const unsigned char *p, size_t n, size_t want)
{
    if (n != want)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower_hex_value(p[i]) < 0)
            return false;
    return true;
}

/* Decodes 64 lowercase hex digits (already checked) into 32 bytes. */
static void decode_sha256_hex(const unsigned char *p, uint8_t out[VERIFY_DIGEST_LEN])
{
    for (size_t i = 0; i < VERIFY_DIGEST_LEN; i++)
        out[i] = (uint8_t)(lower_hex_value(p[2 * i]) << 4 | lower_hex_value(p[2 * i + 1]));
}

static bool algorithm_is(const unsigned char *p, size_t n, const char *name)
{
    return n == strlen(name) && memcmp(p, name, n) == 0;
}

verify_status verify_digest_parse(const char *s, size_t len, uint8_t out[VERIFY_DIGEST_LEN])
{
    if (s == NULL || out == NULL || len == 0)
        return VERIFY_DIGEST_MALFORMED;
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *colon = memchr(p, ':', len);
    if (colon == NULL)
        return VERIFY_DIGEST_MALFORMED;
    size_t alen = (size_t)(colon - p);
    const unsigned char *enc = colon + 1;
    size_t elen = len - alen - 1;
    if (!algorithm_valid(p, alen) || !encoded_valid(enc, elen))
        return VERIFY_DIGEST_MALFORMED;
    if (algorithm_is(p, alen, "sha256")) {
        if (!lower_hex_of_len(enc, elen, SHA256_HEX_LEN))
            return VERIFY_DIGEST_MALFORMED;
        decode_sha256_hex(enc, out);
        return VERIFY_OK;
    }
    if (algorithm_is(p, alen, "sha512") && !lower_hex_of_len(enc, elen, SHA512_HEX_LEN))
        return VERIFY_DIGEST_MALFORMED;
    return VERIFY_DIGEST_UNSUPPORTED;
}

void verify_digest_format(const uint8_t digest[VERIFY_DIGEST_LEN], char out[VERIFY_DIGEST_TEXT_LEN])
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "sha256:", 7);
    for (size_t i = 0; i < VERIFY_DIGEST_LEN; i++) {
        out[7 + 2 * i] = hex[digest[i] >> 4];
        out[7 + 2 * i + 1] = hex[digest[i] & 0x0f];
    }
    out[7 + 2 * VERIFY_DIGEST_LEN] = '\0';
}

/* ---- hashing ---- */

static void die(const char *what)
{
    fprintf(stderr, "sluice: OpenSSL SHA-256 failed in %s\n", what);
    abort();
}

/* One-shot SHA-256; 0 on success, -1 if OpenSSL failed. */
static int sha256_once(const void *data, size_t len, uint8_t out[VERIFY_DIGEST_LEN])
{
    static const uint8_t empty = 0;
    if (data == NULL)
        data = &empty; /* len is 0 here; EVP wants a valid pointer */
    return EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL) == 1 ? 0 : -1;
}

void verify_sha256(const void *data, size_t len, uint8_t out[VERIFY_DIGEST_LEN])
{
    if (sha256_once(data, len, out) != 0)
        die("verify_sha256");
}

verify_status verify_digest_check(const void *data, size_t len,
                                  const uint8_t expected[VERIFY_DIGEST_LEN])
{
    uint8_t got[VERIFY_DIGEST_LEN];
    if (sha256_once(data, len, got) != 0)
        return VERIFY_DIGEST_MISMATCH;
    return CRYPTO_memcmp(got, expected, VERIFY_DIGEST_LEN) == 0 ? VERIFY_OK
                                                                : VERIFY_DIGEST_MISMATCH;
}

verify_hasher *verify_hasher_new(void)
{
    verify_hasher *h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (h->ctx == NULL || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
        return NULL;
    }
    return h;
}

void verify_hasher_reset(verify_hasher *h)
{
    if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
        die("verify_hasher_reset");
    h->bytes = 0;
    h->finished = false;
}

void verify_hasher_update(verify_hasher *h, const void *data, size_t len)
{
    if (h->finished) {
        h->bytes = 0; /* the context was re-initialised by final */
        h->finished = false;
    }
    if (len == 0)
        return;
    if (EVP_DigestUpdate(h->ctx, data, len) != 1)
        die("verify_hasher_update");
    h->bytes += len;
}

void verify_hasher_final(verify_hasher *h, uint8_t out[VERIFY_DIGEST_LEN])
{
    if (h->finished)
        verify_hasher_update(h, NULL, 0); /* final twice: digest of the empty message */
    if (EVP_DigestFinal_ex(h->ctx, out, NULL) != 1 ||
        EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
        die("verify_hasher_final");
    h->finished = true;
}

uint64_t verify_hasher_bytes(const verify_hasher *h)
{
    return h->bytes;
}

void verify_hasher_free(verify_hasher *h)
{
    if (h == NULL)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}
