/*
 * keys.c — public keys and signature checks (verify_pubkey in verify.h and
 * the vkey_* helpers in vinternal.h).
 *
 * How it works: a key is read from one PEM block ("PUBLIC KEY" =
 * SubjectPublicKeyInfo, "RSA PUBLIC KEY" = PKCS#1) or from DER of either
 * form, with OpenSSL's d2i functions; anything after the PEM block other
 * than whitespace is refused. Signatures are checked with EVP_DigestVerify:
 * ECDSA and RSA (PKCS#1 v1.5, or PSS for RSA-PSS keys) over a digest of the
 * message (SHA-256 unless told otherwise), Ed25519 over the message itself.
 * vkey_verify_prehashed checks a signature over a digest computed
 * elsewhere (EVP_PKEY_verify with the signature digest set).
 */
#include "vinternal.h"

#include <ctype.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

static bool only_space(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isspace(p[i]))
            return false;
    return true;
}

static EVP_PKEY *key_from_der(const uint8_t *der, size_t n, bool pkcs1)
{
    const unsigned char *p = der;
    EVP_PKEY *k =
        pkcs1 ? d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)n) : d2i_PUBKEY(NULL, &p, (long)n);
    if (k != NULL && p != der + n) {
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

/* Reads the first PEM block; 0 and its DER when it is a public key. */
static int pem_block(const uint8_t *data, size_t len, vbytes *der, bool *pkcs1, vfail *f)
{
    BIO *bio = BIO_new_mem_buf(data, (int)len);
    char *name = NULL, *header = NULL;
    unsigned char *body = NULL;
    long blen = 0;
    int rc = -1;
    if (bio == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    if (PEM_read_bio(bio, &name, &header, &body, &blen) != 1) {
        vfail_set(f, VERIFY_DENIED_MALFORMED, "invalid PEM public key");
    } else if (strcmp(name, "PUBLIC KEY") != 0 && strcmp(name, "RSA PUBLIC KEY") != 0) {
        vfail_set(f, VERIFY_DENIED_MALFORMED, "PEM block \"%s\" is not a public key", name);
    } else {
        char rest[256];
        int more = BIO_read(bio, rest, sizeof rest);
        if (more > 0 && !only_space((uint8_t *)rest, (size_t)more)) {
            vfail_set(f, VERIFY_DENIED_MALFORMED, "trailing data after the PEM public key");
        } else {
            *pkcs1 = strcmp(name, "RSA PUBLIC KEY") == 0;
            der->p = body;
            der->n = (size_t)blen;
            body = NULL;
            rc = 0;
        }
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(body);
    BIO_free(bio);
    return rc;
}

EVP_PKEY *vkey_parse(const void *data, size_t len, vfail *f)
{
    if (data == NULL || len == 0 || len > V_INPUT_MAX) {
        vfail_set(f, VERIFY_DENIED_MALFORMED, "empty or oversized public key");
        return NULL;
    }
    const uint8_t *p = data;
    size_t skip = 0;
    while (skip < len && isspace(p[skip]))
        skip++;
    if (len - skip >= 5 && memcmp(p + skip, "-----", 5) == 0) {
        vbytes der = {0};
        bool pkcs1 = false;
        if (pem_block(p, len, &der, &pkcs1, f) != 0)
            return NULL;
        EVP_PKEY *k = key_from_der(der.p, der.n, pkcs1);
        OPENSSL_free(der.p);
        if (k == NULL)
            vfail_set(f, VERIFY_DENIED_MALFORMED, "invalid public key in PEM block");
        return k;
    }
    EVP_PKEY *k = key_from_der(p, len, false);
    if (k == NULL)
        k = key_from_der(p, len, true);
    if (k == NULL)
        vfail_set(f, VERIFY_DENIED_MALFORMED, "not a PEM or DER public key");
    return k;
}

int vkey_spki(EVP_PKEY *k, vbytes *out)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(k, &der);
    if (n <= 0)
        return -1;
    out->p = malloc((size_t)n);
    if (out->p == NULL) {
        OPENSSL_free(der);
        return -1;
    }
    memcpy(out->p, der, (size_t)n);
    out->n = (size_t)n;
    OPENSSL_free(der);
    return 0;
}

bool vkey_is_ecdsa(EVP_PKEY *k)
{
    return EVP_PKEY_get_base_id(k) == EVP_PKEY_EC;
}

bool vkey_is_ed25519(EVP_PKEY *k)
{
    return EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519;
}

static bool key_uses_digest(EVP_PKEY *k)
{
    int id = EVP_PKEY_get_base_id(k);
    return id != EVP_PKEY_ED25519 && id != EVP_PKEY_ED448;
}

int vkey_verify(EVP_PKEY *k, const EVP_MD *md, const uint8_t *msg, size_t msglen,
                const uint8_t *sig, size_t siglen, vfail *f)
{
    static const uint8_t empty = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    const EVP_MD *use = key_uses_digest(k) ? (md != NULL ? md : EVP_sha256()) : NULL;
    int ok = EVP_DigestVerifyInit(ctx, NULL, use, NULL, k) == 1 &&
             EVP_DigestVerify(ctx, sig != NULL ? sig : &empty, siglen, msg != NULL ? msg : &empty,
                              msglen) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    if (!ok)
        return vfail_set(f, VERIFY_DENIED_BAD_SIGNATURE,
                         "signature does not verify with the %s key", EVP_PKEY_get0_type_name(k));
    return 0;
}

int vkey_verify_prehashed(EVP_PKEY *k, const EVP_MD *md, const uint8_t *dgst, size_t dlen,
                          const uint8_t *sig, size_t siglen, vfail *f)
{
    if (!key_uses_digest(k))
        return vfail_set(f, VERIFY_DENIED_UNSUPPORTED,
                         "an Ed25519 signature needs the artifact itself, not its digest");
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(k, NULL);
    if (ctx == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    int ok = EVP_PKEY_verify_init(ctx) == 1 && EVP_PKEY_CTX_set_signature_md(ctx, md) == 1 &&
             EVP_PKEY_verify(ctx, sig, siglen, dgst, dlen) == 1;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    if (!ok)
        return vfail_set(f, VERIFY_DENIED_BAD_SIGNATURE,
                         "signature does not verify with the %s key", EVP_PKEY_get0_type_name(k));
    return 0;
}

/* ---- public API ---- */

verify_pubkey *verify_pubkey_parse(const void *data, size_t len, char *err, size_t errlen)
{
    vfail f = {0};
    EVP_PKEY *k = vkey_parse(data, len, &f);
    if (k == NULL) {
        verr_put(err, errlen, f.text);
        return NULL;
    }
    verify_pubkey *pk = malloc(sizeof *pk);
    if (pk == NULL) {
        EVP_PKEY_free(k);
        verr_put(err, errlen, "out of memory");
        return NULL;
    }
    pk->pkey = k;
    return pk;
}

verify_pubkey *verify_pubkey_load(const char *path, char *err, size_t errlen)
{
    vfail f = {0};
    vbytes b;
    if (vfile_read(path, &b, &f) != 0) {
        verr_put(err, errlen, f.text);
        return NULL;
    }
    char inner[VERIFY_TEXT_MAX];
    verify_pubkey *k = verify_pubkey_parse(b.p, b.n, inner, sizeof inner);
    vbytes_clear(&b);
    if (k == NULL && err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", path, inner);
    return k;
}

void verify_pubkey_free(verify_pubkey *k)
{
    if (k == NULL)
        return;
    EVP_PKEY_free(k->pkey);
    free(k);
}
