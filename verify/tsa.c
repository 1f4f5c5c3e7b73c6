/*
 * tsa.c — RFC 3161 signed timestamps from Sigstore bundles
 * (verificationMaterial.timestampVerificationData.rfc3161Timestamps),
 * checked offline with OpenSSL's TS API (vtsa_verify in vinternal.h).
 *
 * How it works: the DER is a TimeStampResp (or a bare TimeStampToken). Its
 * genTime is read first, because the TSA's certificate chain is checked at
 * that time, not now (a timestamp stays valid after the TSA certificate
 * expires). Then, for each timestamp authority of the trusted root, a TS
 * verification context is built with that authority's chain as trust
 * anchors (and as untrusted helpers, for tokens that embed no certificate)
 * and TS_VFY_VERSION|TS_VFY_SIGNATURE|TS_VFY_DATA: the message imprint
 * must be the hash of `data` (the artifact signature bytes) and the
 * signature must chain, with the timeStamping purpose, to that authority.
 * genTime must also lie in the authority's validFor window.
 */
#include "vinternal.h"

#include <openssl/err.h>
#include <openssl/ts.h>
#include <string.h>

typedef struct {
    TS_RESP *resp;
    PKCS7 *token;
    TS_TST_INFO *info; /* borrowed from resp, or owned when parsed from token */
} tsdoc;

static void tsdoc_free(tsdoc *d)
{
    if (d->resp == NULL)
        TS_TST_INFO_free(d->info);
    TS_RESP_free(d->resp);
    PKCS7_free(d->token);
}

static int tsdoc_parse(const uint8_t *der, size_t len, tsdoc *d, vfail *f)
{
    memset(d, 0, sizeof *d);
    const unsigned char *p = der;
    d->resp = d2i_TS_RESP(NULL, &p, (long)len);
    if (d->resp != NULL && p == der + len) {
        d->info = TS_RESP_get_tst_info(d->resp);
    } else {
        TS_RESP_free(d->resp);
        d->resp = NULL;
        p = der;
        d->token = d2i_PKCS7(NULL, &p, (long)len);
        if (d->token != NULL && p == der + len)
            d->info = PKCS7_to_TS_TST_INFO(d->token);
    }
    ERR_clear_error();
    if (d->info == NULL) {
        tsdoc_free(d);
        memset(d, 0, sizeof *d);
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "invalid RFC 3161 timestamp");
    }
    return 0;
}

static X509_STORE *tsa_store(const vca *ca, int64_t at)
{
    X509_STORE *s = X509_STORE_new();
    if (s == NULL)
        return NULL;
    for (int i = 0; i < sk_X509_num(ca->chain); i++)
        X509_STORE_add_cert(s, sk_X509_value(ca->chain, i));
    X509_VERIFY_PARAM *param = X509_STORE_get0_param(s);
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
    X509_VERIFY_PARAM_set_time(param, (time_t)at);
    return s;
}

static bool verify_with(const tsdoc *d, const vca *ca, const uint8_t *data, size_t datalen,
                        int64_t at)
{
    TS_VERIFY_CTX *ctx = TS_VERIFY_CTX_new();
    X509_STORE *store = tsa_store(ca, at);
    STACK_OF(X509) *helpers = X509_chain_up_ref(ca->chain);
    BIO *bio = BIO_new_mem_buf(data, (int)datalen);
    if (ctx == NULL || store == NULL || helpers == NULL || bio == NULL) {
        TS_VERIFY_CTX_free(ctx);
        X509_STORE_free(store);
        vcerts_free(helpers);
        BIO_free(bio);
        return false;
    }
    TS_VERIFY_CTX_set_flags(ctx, TS_VFY_VERSION | TS_VFY_SIGNATURE | TS_VFY_DATA);
    TS_VERIFY_CTX_set_store(ctx, store);
    TS_VERIFY_CTX_set_certs(ctx, helpers);
    TS_VERIFY_CTX_set_data(ctx, bio);
    int ok = d->resp != NULL ? TS_RESP_verify_response(ctx, d->resp)
                             : TS_RESP_verify_token(ctx, d->token);
    TS_VERIFY_CTX_free(ctx);
    ERR_clear_error();
    return ok == 1;
}

int vtsa_verify(const uint8_t *der, size_t len, const uint8_t *data, size_t datalen,
                const vca *tsas, size_t ntsas, int64_t *gen_time, vfail *f)
{
    tsdoc d;
    if (len == 0 || len > V_INPUT_MAX || tsdoc_parse(der, len, &d, f) != 0)
        return len == 0 ? vfail_set(f, VERIFY_DENIED_MALFORMED, "empty RFC 3161 timestamp") : -1;
    bool ok;
    int64_t t = vtime_from_asn1(TS_TST_INFO_get_time(d.info), &ok);
    int rc = vfail_set(f, VERIFY_DENIED_TIMESTAMP,
                       "RFC 3161 timestamp is not signed by a trusted timestamp authority, or "
                       "does not cover this signature");
    for (size_t i = 0; ok && i < ntsas && rc != 0; i++)
        if (verify_with(&d, &tsas[i], data, datalen, t)) {
            if (vwindow_contains(&tsas[i].valid, t))
                rc = 0;
            else
                vfail_set(f, VERIFY_DENIED_TIMESTAMP,
                          "RFC 3161 timestamp outside the timestamp authority's validity");
        }
    tsdoc_free(&d);
    if (rc == 0)
        *gen_time = t;
    return rc;
}
