/*
 * trustroot.c — Sigstore trusted_root.json (verify_trust_root in verify.h).
 *
 * What it is for: the offline trust material of a Sigstore instance —
 * Rekor transparency logs, Fulcio certificate authorities, CT logs and RFC
 * 3161 timestamp authorities, each valid for a time window — as published
 * by sigstore/root-signing (protobuf-specs TrustedRoot in JSON form).
 *
 * How it works: jansson parses the document (duplicate keys rejected); the
 * mediaType must be application/vnd.dev.sigstore.trustedroot+json. Each log
 * key (publicKey.rawBytes, DER SubjectPublicKeyInfo or PKCS#1 RSA) is
 * loaded with OpenSSL and kept with its logId.keyId and validFor window;
 * keys OpenSSL cannot load are skipped (they can verify nothing) instead of
 * failing the whole root. Each CA keeps its certChain (leaf-most first,
 * root last) and window. Unknown members are ignored: the format grows
 * and the file is trusted input. The raw bytes are kept for policy hashing.
 */
#include "vinternal.h"

#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#define TRUSTED_ROOT_MEDIA_TYPE "application/vnd.dev.sigstore.trustedroot+json"

bool vwindow_contains(const vwindow *w, int64_t t)
{
    return (!w->has_start || w->start <= t) && (!w->has_end || t <= w->end);
}

static int parse_window(const json_t *parent, const char *path, vwindow *w, vfail *f)
{
    memset(w, 0, sizeof *w);
    json_t *v = json_object_get(parent, "validFor");
    if (v == NULL)
        return 0;
    if (!json_is_object(v))
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "%s.validFor: not an object", path);
    const char *keys[] = {"start", "end"};
    for (int i = 0; i < 2; i++) {
        json_t *s = json_object_get(v, keys[i]);
        if (s == NULL || json_is_null(s))
            continue;
        int64_t t;
        if (!json_is_string(s) || vtime_parse_rfc3339(json_string_value(s), &t) != 0)
            return vfail_set(f, VERIFY_DENIED_MALFORMED, "%s.validFor.%s: not an RFC 3339 time",
                             path, keys[i]);
        if (i == 0) {
            w->has_start = true;
            w->start = t;
        } else {
            w->has_end = true;
            w->end = t;
        }
    }
    return 0;
}

static void url_host(const char *url, char *out, size_t outlen)
{
    const char *p = strstr(url, "://");
    p = p != NULL ? p + 3 : url;
    size_t n = strcspn(p, "/");
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

void vlog_clear(vlog *l)
{
    EVP_PKEY_free(l->key);
    l->key = NULL;
}

int vlog_init_key(vlog *l, EVP_PKEY *key, vfail *f)
{
    memset(l, 0, sizeof *l);
    vbytes spki = {0};
    if (vkey_spki(key, &spki) != 0)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "cannot encode public key");
    verify_sha256(spki.p, spki.n, l->log_id);
    l->log_id_len = 32;
    l->key = key;
    vbytes_clear(&spki);
    return 0;
}

/* 1 when loaded, 0 when skipped (key OpenSSL cannot use), -1 on error. */
static int parse_log(const json_t *j, const char *path, vlog *l, vfail *f)
{
    memset(l, 0, sizeof *l);
    json_t *pk = vjson_obj(j, "publicKey", path, f);
    json_t *id = vjson_obj(j, "logId", path, f);
    if (pk == NULL || id == NULL)
        return -1;
    vbytes raw = {0}, kid = {0};
    if (vjson_b64(pk, "rawBytes", path, &raw, f) != 0)
        return -1;
    if (vjson_b64(id, "keyId", path, &kid, f) != 0 || kid.n > sizeof l->log_id) {
        vbytes_clear(&raw);
        vbytes_clear(&kid);
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "%s.logId.keyId: invalid", path);
    }
    memcpy(l->log_id, kid.p, kid.n);
    l->log_id_len = kid.n;
    vbytes_clear(&kid);
    l->key = vkey_parse(raw.p, raw.n, NULL);
    vbytes_clear(&raw);
    const char *url = json_string_value(json_object_get(j, "baseUrl"));
    if (url != NULL)
        url_host(url, l->host, sizeof l->host);
    if (parse_window(pk, path, &l->valid, f) != 0) {
        vlog_clear(l);
        return -1;
    }
    return l->key != NULL ? 1 : 0;
}

static int parse_ca(const json_t *j, const char *path, vca *ca, vfail *f)
{
    memset(ca, 0, sizeof *ca);
    json_t *chain = vjson_obj(j, "certChain", path, f);
    json_t *certs = chain != NULL ? json_object_get(chain, "certificates") : NULL;
    if (!json_is_array(certs) || json_array_size(certs) == 0)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "%s.certChain.certificates: missing", path);
    ca->chain = sk_X509_new_null();
    if (ca->chain == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    size_t i;
    json_t *c;
    json_array_foreach(certs, i, c)
    {
        vbytes der = {0};
        if (vjson_b64(c, "rawBytes", path, &der, f) != 0)
            return -1;
        X509 *x = vcert_parse_der(der.p, der.n, f);
        vbytes_clear(&der);
        if (x == NULL || !sk_X509_push(ca->chain, x)) {
            X509_free(x);
            return vfail_wrap(f, "%s.certChain.certificates[%zu]", path, i);
        }
    }
    return parse_window(j, path, &ca->valid, f);
}

static int parse_logs(const json_t *root, const char *key, vlog **out, size_t *n, vfail *f)
{
    json_t *arr = json_object_get(root, key);
    *out = NULL;
    *n = 0;
    if (arr == NULL)
        return 0;
    if (!json_is_array(arr))
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "$.%s: not an array", key);
    *out = calloc(json_array_size(arr) + 1, sizeof **out);
    if (*out == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        char path[64];
        snprintf(path, sizeof path, "$.%s[%zu]", key, i);
        int rc = parse_log(e, path, &(*out)[*n], f);
        if (rc < 0)
            return -1;
        *n += (size_t)rc;
    }
    return 0;
}

static int parse_cas(const json_t *root, const char *key, vca **out, size_t *n, vfail *f)
{
    json_t *arr = json_object_get(root, key);
    *out = NULL;
    *n = 0;
    if (arr == NULL)
        return 0;
    if (!json_is_array(arr))
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "$.%s: not an array", key);
    *out = calloc(json_array_size(arr) + 1, sizeof **out);
    if (*out == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        char path[64];
        snprintf(path, sizeof path, "$.%s[%zu]", key, i);
        int rc = parse_ca(e, path, &(*out)[i], f);
        *n = i + 1;
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int parse_root(const json_t *j, verify_trust_root *r, vfail *f)
{
    const char *mt = vjson_str(j, "mediaType", "$", f);
    if (mt == NULL)
        return -1;
    if (strncmp(mt, TRUSTED_ROOT_MEDIA_TYPE, strlen(TRUSTED_ROOT_MEDIA_TYPE)) != 0)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "$.mediaType: \"%s\" is not a trusted root",
                         mt);
    if (parse_logs(j, "tlogs", &r->tlogs, &r->ntlogs, f) != 0 ||
        parse_logs(j, "ctlogs", &r->ctlogs, &r->nctlogs, f) != 0 ||
        parse_cas(j, "certificateAuthorities", &r->cas, &r->ncas, f) != 0 ||
        parse_cas(j, "timestampAuthorities", &r->tsas, &r->ntsas, f) != 0)
        return -1;
    return 0;
}

static void free_logs(vlog *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        vlog_clear(&l[i]);
    free(l);
}

static void free_cas(vca *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        vcerts_free(c[i].chain);
    free(c);
}

void verify_trust_root_free(verify_trust_root *r)
{
    if (r == NULL)
        return;
    free_logs(r->tlogs, r->ntlogs);
    free_logs(r->ctlogs, r->nctlogs);
    free_cas(r->cas, r->ncas);
    free_cas(r->tsas, r->ntsas);
    vbytes_clear(&r->raw);
    free(r);
}

verify_trust_root *verify_trust_root_parse(const void *json, size_t len, char *err, size_t errlen)
{
    vfail f = {0};
    verify_trust_root *r = calloc(1, sizeof *r);
    json_t *j = vjson_parse(json, len, &f);
    int rc = r != NULL && j != NULL ? parse_root(j, r, &f) : -1;
    json_decref(j);
    if (rc == 0 && (r->raw.p = malloc(len + 1)) != NULL) {
        memcpy(r->raw.p, json, len);
        r->raw.n = len;
        return r;
    }
    verr_put(err, errlen, r == NULL ? "out of memory" : f.text);
    verify_trust_root_free(r);
    return NULL;
}

verify_trust_root *verify_trust_root_load(const char *path, char *err, size_t errlen)
{
    vfail f = {0};
    vbytes b;
    if (vfile_read(path, &b, &f) != 0) {
        verr_put(err, errlen, f.text);
        return NULL;
    }
    char inner[VERIFY_TEXT_MAX];
    verify_trust_root *r = verify_trust_root_parse(b.p, b.n, inner, sizeof inner);
    vbytes_clear(&b);
    if (r == NULL && err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", path, inner);
    return r;
}
