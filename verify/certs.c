/*
 * certs.c — X.509 certificates: parsing, chain checks at a given time,
 * Fulcio's OIDC issuer extension, subject alternative names, and embedded
 * Certificate Transparency SCTs (verify_certs in verify.h, vcert_* in
 * vinternal.h).
 *
 * How it works:
 *  - PEM text is read block by block with PEM_read_bio; every block must be
 *    a CERTIFICATE (or TRUSTED CERTIFICATE); text without "-----BEGIN" is
 *    taken as one DER certificate, which must use all the bytes.
 *  - A chain is checked by X509_verify_cert with the anchors in a fresh
 *    X509_STORE, X509_V_FLAG_PARTIAL_CHAIN (any configured CA certificate is
 *    a trust anchor, as in Go's x509) and the check time set explicitly, so
 *    the answer never depends on the wall clock. Code signing is checked on
 *    the built chain: every certificate carrying extendedKeyUsage must
 *    allow codeSigning (CAs: or any usage); none means any usage, as in Go.
 *  - SCTs (RFC 6962): OpenSSL parses the SCT list extension; since
 *    OpenSSL's CT log store cannot be filled from memory, the signature is
 *    checked here over the RFC 6962 "digitally-signed" precertificate
 *    structure rebuilt with public API: the leaf's TBSCertificate re-encoded
 *    without the SCT extension, and SHA-256 of the issuer's public key.
 */
#include "vinternal.h"

#include <ctype.h>
#include <openssl/ct.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#define OID_FULCIO_ISSUER_V1 "1.3.6.1.4.1.57264.1.1"
#define OID_FULCIO_ISSUER_V2 "1.3.6.1.4.1.57264.1.8"
#define OID_SIGSTORE_OTHERNAME "1.3.6.1.4.1.57264.1.7"

/* ---- parsing ---- */

X509 *vcert_parse_der(const uint8_t *p, size_t n, vfail *f)
{
    const unsigned char *q = p;
    X509 *c = n > 0 && n <= V_INPUT_MAX ? d2i_X509(NULL, &q, (long)n) : NULL;
    if (c != NULL && q != p + n) {
        X509_free(c);
        c = NULL;
    }
    ERR_clear_error();
    if (c == NULL)
        vfail_set(f, VERIFY_DENIED_MALFORMED, "invalid DER certificate");
    return c;
}

void vcerts_free(STACK_OF(X509) * s)
{
    sk_X509_pop_free(s, X509_free);
}

static bool looks_pem(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && isspace(p[i]))
        i++;
    return n - i >= 10 && memcmp(p + i, "-----BEGIN", 10) == 0;
}

static int pem_certs(const uint8_t *p, size_t n, STACK_OF(X509) * out, vfail *f)
{
    BIO *bio = BIO_new_mem_buf(p, (int)n);
    if (bio == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    int rc = 0;
    for (;;) {
        char *name = NULL, *header = NULL;
        unsigned char *body = NULL;
        long blen = 0;
        if (PEM_read_bio(bio, &name, &header, &body, &blen) != 1) {
            unsigned long e = ERR_peek_last_error();
            bool end = ERR_GET_REASON(e) == PEM_R_NO_START_LINE && sk_X509_num(out) > 0;
            if (!end)
                rc = vfail_set(f, VERIFY_DENIED_MALFORMED, "invalid PEM certificate data");
            break;
        }
        X509 *c = NULL;
        if (strcmp(name, "CERTIFICATE") == 0)
            c = vcert_parse_der(body, (size_t)blen, f);
        else
            vfail_set(f, VERIFY_DENIED_MALFORMED, "PEM block \"%s\" is not a certificate", name);
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(body);
        if (c == NULL || !sk_X509_push(out, c)) {
            X509_free(c);
            rc = -1;
            break;
        }
    }
    ERR_clear_error();
    BIO_free(bio);
    return rc;
}

STACK_OF(X509) * vcerts_parse(const void *data, size_t len, vfail *f)
{
    if (data == NULL || len == 0 || len > V_INPUT_MAX) {
        vfail_set(f, VERIFY_DENIED_MALFORMED, "empty or oversized certificate data");
        return NULL;
    }
    STACK_OF(X509) *s = sk_X509_new_null();
    if (s == NULL) {
        vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
        return NULL;
    }
    int rc;
    if (looks_pem(data, len)) {
        rc = pem_certs(data, len, s, f);
    } else {
        X509 *c = vcert_parse_der(data, len, f);
        rc = c != NULL && sk_X509_push(s, c) ? 0 : -1;
        if (rc != 0)
            X509_free(c);
    }
    if (rc != 0) {
        vcerts_free(s);
        return NULL;
    }
    return s;
}

int vcert_der(X509 *c, vbytes *out)
{
    unsigned char *der = NULL;
    int n = i2d_X509(c, &der);
    if (n <= 0)
        return -1;
    out->p = malloc((size_t)n);
    if (out->p != NULL)
        memcpy(out->p, der, (size_t)n);
    out->n = out->p != NULL ? (size_t)n : 0;
    OPENSSL_free(der);
    return out->p != NULL ? 0 : -1;
}

/* ---- chains ---- */

bool vcert_valid_at(X509 *c, int64_t t)
{
    bool ok1, ok2;
    int64_t nb = vtime_from_asn1(X509_get0_notBefore(c), &ok1);
    int64_t na = vtime_from_asn1(X509_get0_notAfter(c), &ok2);
    return ok1 && ok2 && nb <= t && t <= na;
}

/* As Go's x509 with KeyUsages {CodeSigning}: a certificate without the EKU
 * extension allows any usage; one with it must list codeSigning (or, for a
 * CA, anyExtendedKeyUsage). */
static bool allows_code_signing(X509 *c, bool is_leaf)
{
    uint32_t flags = X509_get_extension_flags(c);
    if (!(flags & EXFLAG_XKUSAGE))
        return true;
    uint32_t xku = X509_get_extended_key_usage(c);
    return (xku & XKU_CODE_SIGN) || (!is_leaf && (xku & XKU_ANYEKU));
}

static int chain_usage(X509_STORE_CTX *ctx, vfail *f)
{
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
    for (int i = 0; i < sk_X509_num(chain); i++)
        if (!allows_code_signing(sk_X509_value(chain, i), i == 0))
            return vfail_set(f, VERIFY_DENIED_CERT_UNTRUSTED,
                             "certificate %d of the chain does not allow code signing", i);
    return 0;
}

static int chain_error(int err, int64_t at, vfail *f)
{
    if (err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CERT_NOT_YET_VALID)
        return vfail_set(f, VERIFY_DENIED_CERT_EXPIRED, "certificate chain not valid at %lld: %s",
                         (long long)at, X509_verify_cert_error_string(err));
    return vfail_set(f, VERIFY_DENIED_CERT_UNTRUSTED,
                     "certificate does not chain to a trusted CA: %s",
                     X509_verify_cert_error_string(err));
}

static X509_STORE *anchor_store(STACK_OF(X509) * anchors, int64_t at)
{
    X509_STORE *store = X509_STORE_new();
    if (store == NULL)
        return NULL;
    for (int i = 0; i < sk_X509_num(anchors); i++)
        X509_STORE_add_cert(store, sk_X509_value(anchors, i));
    X509_VERIFY_PARAM *param = X509_STORE_get0_param(store);
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
    X509_VERIFY_PARAM_set_time(param, (time_t)at);
    return store;
}

static X509 *chain_issuer(X509_STORE_CTX *ctx)
{
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
    X509 *c = sk_X509_value(chain, sk_X509_num(chain) > 1 ? 1 : 0);
    if (c != NULL)
        X509_up_ref(c);
    return c;
}

int vcert_verify_chain(X509 *leaf, STACK_OF(X509) * untrusted, STACK_OF(X509) * anchors, int64_t at,
                       bool code_signing, X509 **issuer, vfail *f)
{
    if (sk_X509_num(anchors) <= 0)
        return vfail_set(f, VERIFY_DENIED_CERT_UNTRUSTED, "no trusted CA certificates configured");
    X509_STORE *store = anchor_store(anchors, at);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int rc = -1;
    if (store == NULL || ctx == NULL || X509_STORE_CTX_init(ctx, store, leaf, untrusted) != 1) {
        vfail_set(f, VERIFY_DENIED_INTERNAL, "cannot set up certificate verification");
    } else if (X509_verify_cert(ctx) != 1) {
        chain_error(X509_STORE_CTX_get_error(ctx), at, f);
    } else {
        rc = code_signing ? chain_usage(ctx, f) : 0;
        if (rc == 0 && issuer != NULL)
            *issuer = chain_issuer(ctx);
    }
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    ERR_clear_error();
    return rc;
}

/* ---- Fulcio extensions and SANs ---- */

static int ext_value(X509 *c, const char *oid, const ASN1_OCTET_STRING **out, vfail *f)
{
    ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
    if (obj == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "bad OID");
    int i = X509_get_ext_by_OBJ(c, obj, -1);
    int again = i >= 0 ? X509_get_ext_by_OBJ(c, obj, i) : -1;
    ASN1_OBJECT_free(obj);
    *out = NULL;
    if (again >= 0)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "duplicate extension %s", oid);
    if (i >= 0)
        *out = X509_EXTENSION_get_data(X509_get_ext(c, i));
    return 0;
}

static int copy_text(const unsigned char *p, size_t n, char *out, size_t outlen, vfail *f)
{
    if (n >= outlen || memchr(p, 0, n) != NULL)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "certificate text value too long or has NUL");
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

int vcert_fulcio_issuer(X509 *c, char *out, size_t outlen, vfail *f)
{
    const ASN1_OCTET_STRING *v2, *v1;
    if (ext_value(c, OID_FULCIO_ISSUER_V2, &v2, f) != 0 ||
        ext_value(c, OID_FULCIO_ISSUER_V1, &v1, f) != 0)
        return -1;
    if (v2 != NULL) {
        const unsigned char *p = ASN1_STRING_get0_data(v2);
        ASN1_UTF8STRING *s = d2i_ASN1_UTF8STRING(NULL, &p, ASN1_STRING_length(v2));
        if (s == NULL)
            return vfail_set(f, VERIFY_DENIED_MALFORMED, "invalid OIDC issuer extension");
        int rc = copy_text(ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s), out, outlen, f);
        ASN1_UTF8STRING_free(s);
        return rc;
    }
    if (v1 != NULL)
        return copy_text(ASN1_STRING_get0_data(v1), (size_t)ASN1_STRING_length(v1), out, outlen, f);
    return vfail_set(f, VERIFY_DENIED_CERT_IDENTITY,
                     "certificate has no OIDC issuer extension (not issued by Fulcio)");
}

/* Text of one SAN entry, or NULL for kinds Sigstore does not use. */
static const ASN1_STRING *san_text(const GENERAL_NAME *g)
{
    switch (g->type) {
    case GEN_EMAIL:
    case GEN_URI:
    case GEN_DNS:
        return g->d.ia5;
    case GEN_OTHERNAME: {
        char oid[64];
        OBJ_obj2txt(oid, sizeof oid, g->d.otherName->type_id, 1);
        const ASN1_TYPE *v = g->d.otherName->value;
        if (strcmp(oid, OID_SIGSTORE_OTHERNAME) == 0 && v->type == V_ASN1_UTF8STRING)
            return v->value.utf8string;
        return NULL;
    }
    default:
        return NULL;
    }
}

typedef bool (*san_visit)(const GENERAL_NAME *g, const ASN1_STRING *s, void *arg);

static bool san_foreach(X509 *c, san_visit fn, void *arg)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(c, NID_subject_alt_name, NULL, NULL);
    bool hit = false;
    for (int i = 0; !hit && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        const ASN1_STRING *s = san_text(g);
        if (s != NULL)
            hit = fn(g, s, arg);
    }
    GENERAL_NAMES_free(names);
    ERR_clear_error();
    return hit;
}

static bool str_is(const ASN1_STRING *s, const char *want)
{
    return vmem_eq(ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s), want, strlen(want));
}

static bool visit_equal(const GENERAL_NAME *g, const ASN1_STRING *s, void *arg)
{
    (void)g;
    return str_is(s, arg);
}

static bool visit_email(const GENERAL_NAME *g, const ASN1_STRING *s, void *arg)
{
    return g->type == GEN_EMAIL && str_is(s, arg);
}

typedef struct {
    char *out;
    size_t outlen;
} first_arg;

static bool visit_first(const GENERAL_NAME *g, const ASN1_STRING *s, void *arg)
{
    (void)g;
    first_arg *a = arg;
    return copy_text(ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s), a->out, a->outlen,
                     NULL) == 0;
}

bool vcert_san_has(X509 *c, const char *value)
{
    return san_foreach(c, visit_equal, (void *)value);
}

bool vcert_has_email(X509 *c, const char *email)
{
    return san_foreach(c, visit_email, (void *)email);
}

int vcert_san_first(X509 *c, char *out, size_t outlen)
{
    first_arg a = {out, outlen};
    out[0] = '\0';
    return san_foreach(c, visit_first, &a) ? 0 : -1;
}

/* ---- SCTs (RFC 6962 section 3.2) ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} wbuf;

static int wput(wbuf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = (b->n + n) * 2;
        uint8_t *q = realloc(b->p, cap);
        if (q == NULL)
            return -1;
        b->p = q;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->n, p, n);
    b->n += n;
    return 0;
}

static int wput_be(wbuf *b, uint64_t v, int bytes)
{
    uint8_t t[8];
    for (int i = 0; i < bytes; i++)
        t[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    return wput(b, t, (size_t)bytes);
}

/* TBSCertificate of the leaf without the SCT list extension (the precert). */
static int precert_tbs(X509 *leaf, vbytes *out)
{
    X509 *dup = X509_dup(leaf);
    if (dup == NULL)
        return -1;
    int i = X509_get_ext_by_NID(dup, NID_ct_precert_scts, -1);
    if (i >= 0)
        X509_EXTENSION_free(X509_delete_ext(dup, i));
    unsigned char *der = NULL;
    int n = i2d_re_X509_tbs(dup, &der);
    X509_free(dup);
    if (n <= 0)
        return -1;
    out->p = der;
    out->n = (size_t)n;
    return 0;
}

static int issuer_key_hash(X509 *issuer, uint8_t out[32])
{
    unsigned char *der = NULL;
    int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(issuer), &der);
    if (n <= 0)
        return -1;
    verify_sha256(der, (size_t)n, out);
    OPENSSL_free(der);
    return 0;
}

static int sct_signed_data(const SCT *sct, const vbytes *tbs, const uint8_t ikh[32], wbuf *b)
{
    unsigned char *ext = NULL;
    size_t extlen = SCT_get0_extensions(sct, &ext);
    if (tbs->n >= (1u << 24) || extlen >= (1u << 16))
        return -1;
    /* version v1, signature_type certificate_timestamp, timestamp,
     * entry_type precert_entry, PreCert, extensions: in this order. */
    if (wput_be(b, 0, 1) != 0 || wput_be(b, 0, 1) != 0 ||
        wput_be(b, SCT_get_timestamp(sct), 8) != 0 || wput_be(b, 1, 2) != 0 ||
        wput(b, ikh, 32) != 0 || wput_be(b, tbs->n, 3) != 0 || wput(b, tbs->p, tbs->n) != 0 ||
        wput_be(b, extlen, 2) != 0 || wput(b, ext, extlen) != 0)
        return -1;
    return 0;
}

static bool sct_valid(const SCT *sct, const vbytes *tbs, const uint8_t ikh[32], const vlog *ctlogs,
                      size_t n, int64_t now)
{
    unsigned char *id = NULL;
    size_t idlen = SCT_get0_log_id(sct, &id);
    const vlog *log = vtlog_find(ctlogs, n, id, idlen);
    int64_t ts = (int64_t)(SCT_get_timestamp(sct) / 1000);
    if (log == NULL || SCT_get_version(sct) != SCT_VERSION_V1 || ts > now ||
        !vwindow_contains(&log->valid, ts))
        return false;
    wbuf b = {0};
    unsigned char *sig = NULL;
    size_t siglen = SCT_get0_signature(sct, &sig);
    bool ok = sct_signed_data(sct, tbs, ikh, &b) == 0 &&
              vkey_verify(log->key, EVP_sha256(), b.p, b.n, sig, siglen, NULL) == 0;
    free(b.p);
    return ok;
}

int vcert_verify_sct(X509 *leaf, X509 *issuer, const vlog *ctlogs, size_t n, int64_t now, vfail *f)
{
    STACK_OF(SCT) *scts = X509_get_ext_d2i(leaf, NID_ct_precert_scts, NULL, NULL);
    ERR_clear_error();
    if (sk_SCT_num(scts) <= 0) {
        SCT_LIST_free(scts);
        return vfail_set(
            f, VERIFY_DENIED_CERT_UNTRUSTED,
            "certificate has no embedded SCT (not logged to certificate transparency)");
    }
    vbytes tbs = {0};
    uint8_t ikh[32];
    int valid = 0;
    if (precert_tbs(leaf, &tbs) == 0 && issuer_key_hash(issuer, ikh) == 0)
        for (int i = 0; i < sk_SCT_num(scts) && valid == 0; i++)
            valid += sct_valid(sk_SCT_value(scts, i), &tbs, ikh, ctlogs, n, now);
    OPENSSL_free(tbs.p);
    SCT_LIST_free(scts);
    if (valid == 0)
        return vfail_set(f, VERIFY_DENIED_CERT_UNTRUSTED,
                         "no SCT of the certificate verifies with a trusted CT log key");
    return 0;
}

/* ---- public API ---- */

verify_certs *verify_certs_new(void)
{
    verify_certs *c = malloc(sizeof *c);
    if (c == NULL)
        return NULL;
    c->certs = sk_X509_new_null();
    if (c->certs == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

int verify_certs_add(verify_certs *c, const void *data, size_t len, char *err, size_t errlen)
{
    vfail f = {0};
    STACK_OF(X509) *s = vcerts_parse(data, len, &f);
    if (s == NULL) {
        verr_put(err, errlen, f.text);
        return -1;
    }
    X509 *x;
    while ((x = sk_X509_shift(s)) != NULL)
        if (!sk_X509_push(c->certs, x)) {
            X509_free(x);
            vcerts_free(s);
            verr_put(err, errlen, "out of memory");
            return -1;
        }
    vcerts_free(s);
    return 0;
}

int verify_certs_add_file(verify_certs *c, const char *path, char *err, size_t errlen)
{
    vfail f = {0};
    vbytes b;
    if (vfile_read(path, &b, &f) != 0) {
        verr_put(err, errlen, f.text);
        return -1;
    }
    char inner[VERIFY_TEXT_MAX];
    int rc = verify_certs_add(c, b.p, b.n, inner, sizeof inner);
    vbytes_clear(&b);
    if (rc != 0 && err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", path, inner);
    return rc;
}

size_t verify_certs_count(const verify_certs *c)
{
    return c == NULL ? 0 : (size_t)sk_X509_num(c->certs);
}

void verify_certs_free(verify_certs *c)
{
    if (c == NULL)
        return;
    vcerts_free(c->certs);
    free(c);
}
