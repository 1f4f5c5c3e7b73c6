/*
 * tsign.h — test helper: throwaway keys and cosign-style signatures made with
 * OpenSSL, the way TESTWORLD.md's "cosign key-based signature, made with
 * openssl" does (simple-signing payload, SHA-256 signature, base64), so
 * that tests can build any signed identity, digest or tampering case.
 * Header-only (static inline) so each test binary takes what it uses.
 */
#ifndef SLUICE_TEST_TSIGN_H
#define SLUICE_TEST_TSIGN_H

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify.h"

typedef enum { TKEY_EC_P256, TKEY_EC_P384, TKEY_RSA, TKEY_ED25519 } tkey_type;

typedef struct {
    EVP_PKEY *k;
} tkey;

static inline tkey *tkey_new(tkey_type t)
{
    tkey *k = malloc(sizeof *k);
    switch (t) {
    case TKEY_EC_P256:
        k->k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        break;
    case TKEY_EC_P384:
        k->k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        break;
    case TKEY_RSA:
        k->k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
        break;
    case TKEY_ED25519:
        k->k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        break;
    }
    if (k->k == NULL)
        abort();
    return k;
}

static inline void tkey_free(tkey *k)
{
    if (k == NULL)
        return;
    EVP_PKEY_free(k->k);
    free(k);
}

static inline char *tb64(const uint8_t *p, size_t n)
{
    char *s = malloc((n + 2) / 3 * 4 + 1);
    EVP_EncodeBlock((unsigned char *)s, p, (int)n);
    return s;
}

static inline char *tkey_pub_pem(const tkey *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, k->k);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *s = malloc((size_t)n + 1);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    BIO_free(b);
    return s;
}

/* base64 of the PEM, as containers-policy.json's keyData wants it. */
static inline char *tkey_pub_b64(const tkey *k)
{
    char *pem = tkey_pub_pem(k);
    char *s = tb64((const uint8_t *)pem, strlen(pem));
    free(pem);
    return s;
}

static inline void tkey_write_pub(const tkey *k, const char *path)
{
    char *pem = tkey_pub_pem(k);
    FILE *f = fopen(path, "w");
    fputs(pem, f);
    fclose(f);
    free(pem);
}

/* base64 signature of msg: SHA-256 for EC/RSA, pure Ed25519. */
static inline char *tsign_b64(const tkey *k, const void *msg, size_t n)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ed = EVP_PKEY_get_base_id(k->k) == EVP_PKEY_ED25519;
    size_t len = 0;
    EVP_DigestSignInit(c, NULL, ed ? NULL : EVP_sha256(), NULL, k->k);
    EVP_DigestSign(c, NULL, &len, msg, n);
    uint8_t *sig = malloc(len);
    if (EVP_DigestSign(c, sig, &len, msg, n) != 1)
        abort();
    EVP_MD_CTX_free(c);
    char *s = tb64(sig, len);
    free(sig);
    return s;
}

typedef struct {
    verify_cosign_sig sig;
    char *payload;
    char *b64;
} tsig;

static inline char *tpayload(const char *ref, const uint8_t digest[32])
{
    char hex[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(digest, hex);
    size_t n = strlen(ref) + 256;
    char *p = malloc(n);
    snprintf(p, n,
             "{\"critical\":{\"identity\":{\"docker-reference\":\"%s\"},\"image\":{\"docker-"
             "manifest-digest\":\"%s\"},\"type\":\"cosign container image signature\"},"
             "\"optional\":null}",
             ref, hex);
    return p;
}

/* A signature layer over an arbitrary payload. */
static inline void tsig_over(tsig *s, const tkey *k, char *payload)
{
    memset(s, 0, sizeof *s);
    s->payload = payload;
    s->b64 = tsign_b64(k, payload, strlen(payload));
    s->sig.payload = (const uint8_t *)s->payload;
    s->sig.payload_len = strlen(s->payload);
    s->sig.signature = s->b64;
    s->sig.signature_len = strlen(s->b64);
}

static inline void tsig_make(tsig *s, const tkey *k, const char *ref, const uint8_t digest[32])
{
    tsig_over(s, k, tpayload(ref, digest));
}

static inline void tsig_free(tsig *s)
{
    free(s->payload);
    free(s->b64);
}

#endif
