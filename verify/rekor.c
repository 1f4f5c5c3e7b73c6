/*
 * rekor.c — the bodies of Rekor transparency-log entries (vbody_* in
 * vinternal.h): what a log entry says was signed, by which key, so that it
 * can be compared with the signature being verified.
 *
 * How it works: the canonicalized body is JSON {"apiVersion","kind","spec"}
 * and is parsed by jansson. Supported kinds, reduced to one shape (digest
 * of what was signed, signature bytes, DER of the verifier key or
 * certificate):
 *   hashedrekord 0.0.1  spec.data.hash{algorithm,value(hex)},
 *                       spec.signature{content(b64), publicKey.content(b64 PEM)}
 *   hashedrekord 0.0.2  spec.hashedRekordV002.data{algorithm SHA2_*,digest(b64)},
 *                       .signature{content, verifier{x509Certificate|publicKey}.rawBytes}
 *   dsse 0.0.1          spec.payloadHash{sha256 hex}, spec.signatures[]{signature, verifier(b64
 * PEM)} intoto 0.0.2        spec.content.payloadHash{sha256 hex}, .envelope.signatures[]{sig(b64 of
 * b64), publicKey(b64 PEM)} Anything else is VERIFY_DENIED_UNSUPPORTED. PEM verifiers must be one
 * block with nothing but whitespace after it.
 */
#include "vinternal.h"

#include <ctype.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <string.h>

void vbody_clear(vbody *b)
{
    vbytes_clear(&b->digest);
    for (size_t i = 0; i < b->nsigs; i++) {
        vbytes_clear(&b->sigs[i]);
        vbytes_clear(&b->verifiers[i]);
    }
    memset(b, 0, sizeof *b);
}

/* base64(PEM) -> DER of its single block. */
int vpem_b64_to_der(const char *b64, size_t len, vbytes *der, vfail *f)
{
    vbytes pem = {0};
    if (vb64_decode(b64, len, &pem, f) != 0)
        return -1;
    BIO *bio = BIO_new_mem_buf(pem.p, (int)pem.n);
    char *name = NULL, *hdr = NULL;
    unsigned char *body = NULL;
    long blen = 0;
    int rc = vfail_set(f, VERIFY_DENIED_TLOG, "log entry verifier is not one PEM block");
    if (bio != NULL && PEM_read_bio(bio, &name, &hdr, &body, &blen) == 1) {
        char rest[64];
        int more = BIO_read(bio, rest, sizeof rest);
        bool clean = true;
        for (int i = 0; i < more; i++)
            clean = clean && isspace((unsigned char)rest[i]);
        if (clean && (der->p = malloc((size_t)blen + 1)) != NULL) {
            memcpy(der->p, body, (size_t)blen);
            der->n = (size_t)blen;
            rc = 0;
        }
    }
    ERR_clear_error();
    OPENSSL_free(name);
    OPENSSL_free(hdr);
    OPENSSL_free(body);
    BIO_free(bio);
    vbytes_clear(&pem);
    return rc;
}

static int hex_digest(const json_t *h, const char *path, vbody *out, vfail *f)
{
    const char *alg = vjson_str(h, "algorithm", path, f);
    const char *val = alg != NULL ? vjson_str(h, "value", path, f) : NULL;
    if (val == NULL)
        return -1;
    size_t n = strcmp(alg, "sha256") == 0   ? 32
               : strcmp(alg, "sha384") == 0 ? 48
               : strcmp(alg, "sha512") == 0 ? 64
                                            : 0;
    if (n == 0)
        return vfail_set(f, VERIFY_DENIED_UNSUPPORTED, "%s: hash algorithm \"%s\"", path, alg);
    out->digest.p = malloc(n);
    if (out->digest.p == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    out->digest.n = n;
    if (vhex_decode(val, strlen(val), out->digest.p, n) != 0)
        return vfail_set(f, VERIFY_DENIED_TLOG, "%s.value: not %zu bytes of hex", path, n);
    return 0;
}

static int add_sig(vbody *out, vfail *f)
{
    if (out->nsigs >= VBODY_MAX_SIGS)
        return vfail_set(f, VERIFY_DENIED_UNSUPPORTED, "log entry has too many signatures");
    out->nsigs++;
    return 0;
}

static int hashedrekord_v1(const json_t *spec, vbody *out, vfail *f)
{
    json_t *data = vjson_obj(spec, "data", "spec", f);
    json_t *hash = data != NULL ? vjson_obj(data, "hash", "spec.data", f) : NULL;
    json_t *sig = hash != NULL ? vjson_obj(spec, "signature", "spec", f) : NULL;
    json_t *pk = sig != NULL ? vjson_obj(sig, "publicKey", "spec.signature", f) : NULL;
    const char *pem = pk != NULL ? vjson_str(pk, "content", "spec.signature.publicKey", f) : NULL;
    if (pem == NULL || hex_digest(hash, "spec.data.hash", out, f) != 0 || add_sig(out, f) != 0)
        return -1;
    if (vjson_b64(sig, "content", "spec.signature", &out->sigs[0], f) != 0)
        return -1;
    return vpem_b64_to_der(pem, strlen(pem), &out->verifiers[0], f);
}

static int hashedrekord_v2(const json_t *spec, vbody *out, vfail *f)
{
    json_t *v2 = vjson_obj(spec, "hashedRekordV002", "spec", f);
    json_t *data = v2 != NULL ? vjson_obj(v2, "data", "spec.hashedRekordV002", f) : NULL;
    json_t *sig = data != NULL ? vjson_obj(v2, "signature", "spec.hashedRekordV002", f) : NULL;
    json_t *ver = sig != NULL ? vjson_obj(sig, "verifier", "signature", f) : NULL;
    if (ver == NULL)
        return -1;
    const char *alg = vjson_str(data, "algorithm", "data", f);
    if (alg == NULL)
        return -1;
    if (strcmp(alg, "SHA2_256") != 0 && strcmp(alg, "SHA2_384") != 0 &&
        strcmp(alg, "SHA2_512") != 0)
        return vfail_set(f, VERIFY_DENIED_UNSUPPORTED, "hashedrekord digest algorithm \"%s\"", alg);
    json_t *holder = json_object_get(ver, "x509Certificate");
    if (holder == NULL)
        holder = json_object_get(ver, "publicKey");
    if (!json_is_object(holder))
        return vfail_set(f, VERIFY_DENIED_TLOG, "hashedrekord verifier has no key or certificate");
    if (vjson_b64(data, "digest", "data", &out->digest, f) != 0 || add_sig(out, f) != 0 ||
        vjson_b64(sig, "content", "signature", &out->sigs[0], f) != 0)
        return -1;
    return vjson_b64(holder, "rawBytes", "verifier", &out->verifiers[0], f);
}

static int dsse_v1(const json_t *spec, vbody *out, vfail *f)
{
    json_t *ph = vjson_obj(spec, "payloadHash", "spec", f);
    json_t *sigs = json_object_get(spec, "signatures");
    if (ph == NULL || hex_digest(ph, "spec.payloadHash", out, f) != 0)
        return -1;
    if (!json_is_array(sigs) || json_array_size(sigs) == 0)
        return vfail_set(f, VERIFY_DENIED_TLOG, "spec.signatures: missing");
    size_t i;
    json_t *s;
    json_array_foreach(sigs, i, s)
    {
        const char *pem = vjson_str(s, "verifier", "spec.signatures[]", f);
        if (pem == NULL || add_sig(out, f) != 0 ||
            vjson_b64(s, "signature", "spec.signatures[]", &out->sigs[i], f) != 0 ||
            vpem_b64_to_der(pem, strlen(pem), &out->verifiers[i], f) != 0)
            return -1;
    }
    return 0;
}

static int intoto_v2(const json_t *spec, vbody *out, vfail *f)
{
    json_t *content = vjson_obj(spec, "content", "spec", f);
    json_t *ph = content != NULL ? vjson_obj(content, "payloadHash", "spec.content", f) : NULL;
    json_t *env = ph != NULL ? vjson_obj(content, "envelope", "spec.content", f) : NULL;
    json_t *sigs = env != NULL ? json_object_get(env, "signatures") : NULL;
    if (env == NULL || hex_digest(ph, "spec.content.payloadHash", out, f) != 0)
        return -1;
    if (!json_is_array(sigs) || json_array_size(sigs) == 0)
        return vfail_set(f, VERIFY_DENIED_TLOG, "envelope.signatures: missing");
    size_t i;
    json_t *s;
    json_array_foreach(sigs, i, s)
    {
        const char *pem = vjson_str(s, "publicKey", "signatures[]", f);
        const char *sig = pem != NULL ? vjson_str(s, "sig", "signatures[]", f) : NULL;
        vbytes inner = {0};
        if (sig == NULL || add_sig(out, f) != 0 || vb64_decode(sig, strlen(sig), &inner, f) != 0)
            return -1;
        int rc = vb64_decode((const char *)inner.p, inner.n, &out->sigs[i], f);
        vbytes_clear(&inner);
        if (rc != 0 || vpem_b64_to_der(pem, strlen(pem), &out->verifiers[i], f) != 0)
            return -1;
    }
    return 0;
}

static int parse_body(const json_t *j, vbody *out, vfail *f)
{
    const char *kind = vjson_str(j, "kind", "body", f);
    const char *ver = kind != NULL ? vjson_str(j, "apiVersion", "body", f) : NULL;
    json_t *spec = ver != NULL ? vjson_obj(j, "spec", "body", f) : NULL;
    if (spec == NULL)
        return -1;
    snprintf(out->kind, sizeof out->kind, "%s", kind);
    snprintf(out->version, sizeof out->version, "%s", ver);
    if (strcmp(kind, "hashedrekord") == 0 && strcmp(ver, "0.0.1") == 0)
        return hashedrekord_v1(spec, out, f);
    if (strcmp(kind, "hashedrekord") == 0 && strcmp(ver, "0.0.2") == 0)
        return hashedrekord_v2(spec, out, f);
    if (strcmp(kind, "dsse") == 0 && strcmp(ver, "0.0.1") == 0)
        return dsse_v1(spec, out, f);
    if (strcmp(kind, "intoto") == 0 && strcmp(ver, "0.0.2") == 0)
        return intoto_v2(spec, out, f);
    return vfail_set(f, VERIFY_DENIED_UNSUPPORTED, "Rekor entry kind %.32s %.16s", kind, ver);
}

int vbody_parse(const uint8_t *p, size_t n, vbody *out, vfail *f)
{
    memset(out, 0, sizeof *out);
    json_t *j = vjson_parse(p, n, f);
    if (j == NULL)
        return vfail_wrap(f, "Rekor entry body");
    int rc = parse_body(j, out, f);
    json_decref(j);
    if (rc != 0) {
        if (f != NULL && f->reason == VERIFY_DENIED_MALFORMED)
            f->reason = VERIFY_DENIED_TLOG;
        vbody_clear(out);
        return vfail_wrap(f, "Rekor entry body");
    }
    return 0;
}

bool vbody_names(const vbody *b, const uint8_t *sig, size_t siglen, const uint8_t *ver,
                 size_t verlen)
{
    for (size_t i = 0; i < b->nsigs; i++)
        if (vmem_eq(b->sigs[i].p, b->sigs[i].n, sig, siglen) &&
            vmem_eq(b->verifiers[i].p, b->verifiers[i].n, ver, verlen))
            return true;
    return false;
}
