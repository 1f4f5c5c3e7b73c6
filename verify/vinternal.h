/*
 * vinternal.h — helpers shared by the files of verify/ (not part of the
 * public API; verify.h is the specification).
 *
 * What it is for: one failure record (vfail: reason code + text) threaded
 * through every check; strict base64/hex; bounded file reading; strict JSON
 * access with JSON paths for error messages; OpenSSL wrappers for keys,
 * signatures and certificates; and the parsed forms of trusted roots and
 * transparency-log material that bundle, policy and image checks share.
 *
 * How it works: functions return 0 on success and -1 on failure after
 * filling the vfail they were given (vfail_set returns -1 so a failure can
 * be reported in one statement). Allocations are owned by the struct they
 * are stored in and released by its *_free / *_clear function.
 */
#ifndef SLUICE_VINTERNAL_H
#define SLUICE_VINTERNAL_H

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "verify.h"

#if defined(__GNUC__)
#define V_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define V_PRINTF(a, b)
#endif

/* Inputs larger than this are refused before parsing (JSON documents,
 * PEM, key files). Signatures and bundles are a few KiB in practice. */
#define V_INPUT_MAX (4u << 20)

/* ---- failures ---- */

typedef struct {
    verify_reason reason;
    char text[VERIFY_TEXT_MAX];
} vfail;

int vfail_set(vfail *f, verify_reason r, const char *fmt, ...) V_PRINTF(3, 4);
/* Prepends "<context>: " to the text, keeping the reason. Returns -1. */
int vfail_wrap(vfail *f, const char *fmt, ...) V_PRINTF(2, 3);
void vfail_to_verdict(const vfail *f, verify_verdict *v);
void verdict_allow(verify_verdict *v, const char *fmt, ...) V_PRINTF(2, 3);
/* snprintf that truncates silently (JSON paths, messages). */
void vtrunc(char *out, size_t outlen, const char *fmt, ...) V_PRINTF(3, 4);
/* Copies text into err/errlen (either may be NULL/0). */
void verr_put(char *err, size_t errlen, const char *text);

/* ---- byte buffers, base64, hex, files ---- */

typedef struct {
    uint8_t *p;
    size_t n;
} vbytes;

void vbytes_clear(vbytes *b);
/* Standard base64 with padding (RFC 4648 section 4), whole input, no
 * whitespace. Malformed input fails with VERIFY_DENIED_MALFORMED. */
int vb64_decode(const char *s, size_t len, vbytes *out, vfail *f);
/* As vb64_decode, but CR and LF anywhere are skipped first (Go's
 * encoding/base64 does so; cosign annotations may end with "\n"). */
int vb64_decode_nl(const char *s, size_t len, vbytes *out, vfail *f);
/* Encodes into a NUL-terminated malloc'd string. NULL on OOM. */
char *vb64_encode(const uint8_t *p, size_t n);
void vhex_encode(const uint8_t *p, size_t n, char *out); /* out: 2n+1 */
/* Lowercase or uppercase hex of exactly outlen bytes. */
int vhex_decode(const char *s, size_t len, uint8_t *out, size_t outlen);
int vfile_read(const char *path, vbytes *out, vfail *f);
bool vmem_eq(const void *a, size_t an, const void *b, size_t bn);
/* RFC 3339 "YYYY-MM-DDTHH:MM:SS[.frac]Z" (or +hh:mm) to Unix seconds. */
int vtime_parse_rfc3339(const char *s, int64_t *out);
int64_t vtime_from_asn1(const ASN1_TIME *t, bool *ok);

/* ---- JSON ---- */

/* Parses a complete JSON value, rejecting duplicate keys. */
json_t *vjson_parse(const void *data, size_t len, vfail *f);
/* Fails unless every key of obj is in the NULL-terminated list. */
int vjson_only_keys(const json_t *obj, const char *const *keys, const char *path, vfail *f);
/* Required/optional typed members; `path` names obj in messages. */
const char *vjson_str(const json_t *obj, const char *key, const char *path, vfail *f);
const char *vjson_opt_str(const json_t *obj, const char *key, const char *path, vfail *f,
                          bool *bad);
json_t *vjson_obj(const json_t *obj, const char *key, const char *path, vfail *f);
/* Protobuf-JSON int64: a JSON integer or a decimal string. */
int vjson_int64(const json_t *v, int64_t *out);
/* Base64 member decoded. */
int vjson_b64(const json_t *obj, const char *key, const char *path, vbytes *out, vfail *f);

/* ---- keys and signatures ---- */

struct verify_pubkey {
    EVP_PKEY *pkey;
};

EVP_PKEY *vkey_parse(const void *data, size_t len, vfail *f);
/* DER SubjectPublicKeyInfo of k. */
int vkey_spki(EVP_PKEY *k, vbytes *out);
/* Verifies sig over msg: ECDSA/RSA (PKCS#1 v1.5) with `md` (NULL = SHA-256),
 * Ed25519 pure. Failure reason BAD_SIGNATURE. */
int vkey_verify(EVP_PKEY *k, const EVP_MD *md, const uint8_t *msg, size_t msglen,
                const uint8_t *sig, size_t siglen, vfail *f);
/* Verifies sig over an already computed digest (ECDSA/RSA only). */
int vkey_verify_prehashed(EVP_PKEY *k, const EVP_MD *md, const uint8_t *dgst, size_t dlen,
                          const uint8_t *sig, size_t siglen, vfail *f);
bool vkey_is_ecdsa(EVP_PKEY *k);
bool vkey_is_ed25519(EVP_PKEY *k);

/* ---- certificates ---- */

struct verify_certs {
    STACK_OF(X509) * certs;
};

/* Every CERTIFICATE block of PEM text (at least one), or one DER cert. */
STACK_OF(X509) * vcerts_parse(const void *data, size_t len, vfail *f);
X509 *vcert_parse_der(const uint8_t *p, size_t n, vfail *f);
void vcerts_free(STACK_OF(X509) * s);
int vcert_der(X509 *c, vbytes *out);

/* Chain check of leaf at time `at` to any certificate of anchors (each is a
 * trust anchor, as in Go's x509 roots), with `untrusted` intermediates.
 * code_signing: leaf (and intermediates carrying EKU) must allow codeSigning.
 * Expiry failures get CERT_EXPIRED, others CERT_UNTRUSTED. *issuer (may be
 * NULL) receives a reference to the certificate that issued leaf. */
int vcert_verify_chain(X509 *leaf, STACK_OF(X509) * untrusted, STACK_OF(X509) * anchors, int64_t at,
                       bool code_signing, X509 **issuer, vfail *f);
bool vcert_valid_at(X509 *c, int64_t t);
/* Fulcio OIDC issuer: extension 1.3.6.1.4.1.57264.1.8 (UTF8String), else
 * the legacy 1.3.6.1.4.1.57264.1.1 (raw bytes). 0 when present. */
int vcert_fulcio_issuer(X509 *c, char *out, size_t outlen, vfail *f);
/* First SAN identity (email, URI, or Sigstore otherName username). */
int vcert_san_first(X509 *c, char *out, size_t outlen);
bool vcert_san_has(X509 *c, const char *value);
bool vcert_has_email(X509 *c, const char *email);

/* ---- trusted roots and log material ---- */

typedef struct {
    bool has_start, has_end;
    int64_t start, end; /* inclusive */
} vwindow;

bool vwindow_contains(const vwindow *w, int64_t t);

typedef struct {
    char host[256]; /* baseUrl host, "" when unknown (bare policy keys) */
    EVP_PKEY *key;
    uint8_t log_id[64];
    size_t log_id_len;
    vwindow valid;
} vlog;

typedef struct {
    STACK_OF(X509) * chain; /* as listed: leaf-most first, root last */
    vwindow valid;
} vca;

struct verify_trust_root {
    vlog *tlogs;
    size_t ntlogs;
    vlog *ctlogs;
    size_t nctlogs;
    vca *cas;
    size_t ncas;
    vca *tsas;
    size_t ntsas;
    vbytes raw; /* the JSON as loaded, for policy hashing */
};

int vlog_init_key(vlog *l, EVP_PKEY *key, vfail *f); /* log_id = SHA-256(SPKI) */
void vlog_clear(vlog *l);

/* Everything a signature may be checked against. Arrays are borrowed. */
typedef struct {
    EVP_PKEY *const *keys; /* managed keys */
    size_t nkeys;
    STACK_OF(X509) * ca_anchors; /* policy Fulcio CA certificates */
    const vca *cas;              /* trusted-root Fulcio CAs (with windows) */
    size_t ncas;
    const char *want_issuer; /* exact OIDC issuer or NULL */
    const char *want_san;    /* exact SAN or NULL */
    const char *want_email;  /* email SAN required (containers fulcio) */
    const vlog *tlogs;       /* Rekor logs */
    size_t ntlogs;
    const vlog *ctlogs; /* CT logs: SCTs required for certificates when n > 0 */
    size_t nctlogs;
    const vca *tsas;
    size_t ntsas;
    bool require_tlog; /* a verified log entry and a verified time are mandatory */
    int64_t key_not_before, key_not_after; /* managed key validity, 0 = open */
} vtrust;

/* ---- transparency log (tlog.c) ---- */

/* Rekor SET over canonical {body, integratedTime, logID(hex), logIndex}. */
int vtlog_verify_set(const vlog *log, const char *body_b64, int64_t integrated_time,
                     const char *log_id_hex, int64_t log_index, const uint8_t *set, size_t setlen,
                     vfail *f);
const vlog *vtlog_find(const vlog *logs, size_t n, const uint8_t *id, size_t idlen);
int vtlog_verify_inclusion(const uint8_t *leaf, size_t leaflen, int64_t index, int64_t size,
                           const uint8_t *const *path, size_t npath, const uint8_t root[32],
                           vfail *f);
/* check_name: the signature line's name must be the log's host (Rekor v2). */
int vtlog_verify_checkpoint(const vlog *log, bool check_name, const char *note, size_t len,
                            int64_t size, const uint8_t root[32], vfail *f);

/* ---- Rekor entry bodies (rekor.c) ---- */

#define VBODY_MAX_SIGS 8

typedef struct {
    char kind[32];
    char version[16];
    vbytes digest; /* hashedrekord: artifact digest; dsse/intoto: SHA-256 of payload */
    vbytes sigs[VBODY_MAX_SIGS];
    vbytes verifiers[VBODY_MAX_SIGS]; /* DER of a SubjectPublicKeyInfo or certificate */
    size_t nsigs;
} vbody;

int vbody_parse(const uint8_t *p, size_t n, vbody *out, vfail *f);
void vbody_clear(vbody *b);
/* Does the entry record this signature made by this key/certificate? */
bool vbody_names(const vbody *b, const uint8_t *sig, size_t siglen, const uint8_t *ver,
                 size_t verlen);
/* base64 of a PEM block -> its DER. */
int vpem_b64_to_der(const char *b64, size_t len, vbytes *der, vfail *f);

/* ---- RFC 3161 (tsa.c) ---- */

/* Verifies a DER TimeStampResp/Token over `data` against the TSAs; on
 * success *gen_time is its genTime. */
int vtsa_verify(const uint8_t *der, size_t len, const uint8_t *data, size_t datalen,
                const vca *tsas, size_t ntsas, int64_t *gen_time, vfail *f);

/* ---- SCTs (certs.c) ---- */

int vcert_verify_sct(X509 *leaf, X509 *issuer, const vlog *ctlogs, size_t n, int64_t now, vfail *f);

/* ---- bundle core (bundle.c), shared with image evaluation ---- */

typedef struct {
    const uint8_t *artifact; /* bytes, or NULL and a digest: */
    size_t artifact_len;
    const EVP_MD *md;
    uint8_t digest[EVP_MAX_MD_SIZE];
    size_t dlen;
} vartifact;

typedef struct {
    bool is_dsse;
    char payload_type[128];
    int64_t signed_time;
    char san[VERIFY_REF_MAX];
    char issuer[256];
    /* in-toto subject name whose digest matched (DSSE), "" otherwise */
    char subject_name[VERIFY_REF_MAX];
} vbundle_out;

int vbundle_verify(const void *json, size_t len, const vtrust *t, const vartifact *a, int64_t now,
                   vbundle_out *out, vfail *f);

/* ---- simple-signing payload (payload.c) ---- */

int vpayload_parse(const void *data, size_t len, verify_payload *out, vfail *f);

/* ---- docker references (reference.c) ---- */

typedef struct {
    char name[VERIFY_REF_MAX]; /* domain/path, normalized */
    char tag[136];             /* "" when none */
    char digest[VERIFY_DIGEST_TEXT_MAX];
} vref;

/* ParseNormalizedNamed: "busybox" -> docker.io/library/busybox. */
int vref_parse_normalized(const char *s, vref *out);
/* ParseNamed: must already be in canonical (normalized) form. */
int vref_parse_canonical(const char *s, vref *out);
/* name[:tag][@digest] */
void vref_string(const vref *r, char *out, size_t outlen);
bool vref_name_only(const vref *r);
/* host[:port] grammar (reference domain). */
bool vref_domain_valid(const char *s, size_t len);
/* path components grammar. */
bool vref_path_valid(const char *s, size_t len);
bool vref_tag_valid(const char *s, size_t len);
/* Builds the image identity from registry/repository/tag/digest. */
int vref_image(const char *registry, const char *repository, const char *tag,
               const uint8_t digest[VERIFY_DIGEST_LEN], vref *out);

#endif
