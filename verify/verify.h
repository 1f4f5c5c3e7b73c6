/*
 * verify.h — Sluice's trust layer: content digests (and, in later issues,
 * signatures and trust policy).
 *
 * Digests. OCI names content by "<algorithm>:<encoded>" (OCI image spec,
 * descriptor.md). Sluice stores and compares SHA-256 digests as 32 raw bytes;
 * the text form is "sha256:" followed by exactly 64 lowercase hex digits.
 * Other registered algorithms (sha512) are recognised as valid grammar but
 * reported as unsupported, so the caller can answer the right OCI error
 * (DIGEST_INVALID vs UNSUPPORTED).
 *
 * Hashing is incremental: a verify_hasher takes bytes in any split and its
 * result does not depend on how they were split. It uses OpenSSL's EVP API.
 *
 * Nothing here allocates except verify_hasher_new; nothing here blocks.
 */
#ifndef SLUICE_VERIFY_H
#define SLUICE_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#define VERIFY_DIGEST_LEN 32
/* "sha256:" + 64 hex + NUL */
#define VERIFY_DIGEST_TEXT_LEN 72

typedef enum {
    VERIFY_OK = 0,
    VERIFY_DIGEST_MALFORMED = -1,   /* not "<alg>:<encoded>" per the grammar */
    VERIFY_DIGEST_UNSUPPORTED = -2, /* valid grammar, algorithm other than sha256 */
    VERIFY_DIGEST_MISMATCH = -3,    /* bytes do not hash to the expected digest */
    VERIFY_NOMEM = -4,
} verify_status;

/* Parses the text digest s[0..len) into out. Accepts only the canonical form
 * for sha256 (lowercase hex, exactly 64 digits). */
verify_status verify_digest_parse(const char *s, size_t len, uint8_t out[VERIFY_DIGEST_LEN]);

/* Writes "sha256:<hex>" and a NUL into out. */
void verify_digest_format(const uint8_t digest[VERIFY_DIGEST_LEN], char out[VERIFY_DIGEST_TEXT_LEN]);

/* One-shot SHA-256 of data into out. */
void verify_sha256(const void *data, size_t len, uint8_t out[VERIFY_DIGEST_LEN]);

/* VERIFY_OK when data hashes to expected, else VERIFY_DIGEST_MISMATCH. */
verify_status verify_digest_check(const void *data, size_t len,
                                  const uint8_t expected[VERIFY_DIGEST_LEN]);

typedef struct verify_hasher verify_hasher;

verify_hasher *verify_hasher_new(void);
void verify_hasher_update(verify_hasher *h, const void *data, size_t len);
/* Finishes into out; the hasher may then be reset and reused. */
void verify_hasher_final(verify_hasher *h, uint8_t out[VERIFY_DIGEST_LEN]);
void verify_hasher_reset(verify_hasher *h);
uint64_t verify_hasher_bytes(const verify_hasher *h);
void verify_hasher_free(verify_hasher *h);

#endif
