/*
 * bundle.c — Sigstore bundle verification, offline (verify_bundle in
 * verify.h, and vbundle_verify shared with image evaluation).
 *
 * How it works, in the order checks are made (so the first failure names
 * the most specific reason):
 *  1. Parse: jansson, duplicate keys rejected; mediaType must be a known
 *     bundle version (0.1, 0.2, 0.3); verificationMaterial holds a
 *     certificate (x509CertificateChain leaf or certificate) or a publicKey
 *     hint; content is messageSignature or dsseEnvelope (exactly one
 *     signature, as the bundle spec requires).
 *  2. Signature: with the certificate's key, or one of the configured
 *     managed keys: over the artifact (or its digest, prehashed) for a
 *     message signature, over PAE(payloadType, payload) for DSSE
 *     ("DSSEv1 <len> <type> <len> <payload>").
 *  3. Artifact: the message digest must be the artifact's; a DSSE payload
 *     must be an in-toto statement with a subject carrying the artifact's
 *     digest (its name is reported, image evaluation uses it as identity).
 *  4. Transparency log: at most 32 entries, no duplicates. An entry whose
 *     log id is not a trusted log is skipped. Otherwise its kind/version
 *     must match its body, the body must record this signature, this key
 *     or certificate and this digest / payload; a SET must verify (and
 *     makes integratedTime a verified time); an inclusion proof must hash
 *     to a checkpoint signed by that log; bundles from v0.2 on need the
 *     proof, v0.1 the SET. The log's validFor must have a start and cover
 *     the entry's time.
 *  5. RFC 3161 timestamps over the signature bytes (tsa.c) add verified
 *     times.
 *  6. Signer: with a certificate, at every verified time the leaf must be
 *     valid and chain to a CA (trusted-root CAs whose window covers that
 *     time, or the policy's CA certificates), SCTs must verify when CT
 *     logs are known, and the OIDC issuer / SAN must be the expected ones.
 *     Managed keys must be valid (key_not_before/after) at those times.
 */
#include "vinternal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TLOG_ENTRIES 32
#define MAX_TIMES 64

static const struct {
    const char *media_type;
    int version;
} MEDIA_TYPES[] = {
    {"application/vnd.dev.sigstore.bundle+json;version=0.1", 1},
    {"application/vnd.dev.sigstore.bundle+json;version=0.2", 2},
    {"application/vnd.dev.sigstore.bundle+json;version=0.3", 3},
    {"application/vnd.dev.sigstore.bundle.v0.3+json", 3},
};

typedef struct {
    int version;
    X509 *leaf;
    STACK_OF(X509) * extra; /* certificates after the leaf in the bundle */
    bool is_dsse;
    const EVP_MD *msg_md;
    vbytes msg_digest;
    vbytes payload;
    char payload_type[128];
    vbytes sig;
    vbytes pae;
    EVP_PKEY *signer;   /* borrowed: leaf key or a managed key */
    vbytes signer_der;  /* certificate DER or key SPKI, as logs record it */
    const json_t *tlog; /* verificationMaterial.tlogEntries */
    const json_t *tsa;  /* ...timestampVerificationData.rfc3161Timestamps */
    int64_t times[MAX_TIMES];
    size_t ntimes;
    const vwindow *untimed[MAX_TLOG_ENTRIES]; /* log windows that need a TSA time */
    size_t nuntimed;
} pbundle;

static void pbundle_clear(pbundle *b)
{
    X509_free(b->leaf);
    vcerts_free(b->extra);
    vbytes_clear(&b->msg_digest);
    vbytes_clear(&b->payload);
    vbytes_clear(&b->sig);
    vbytes_clear(&b->pae);
    vbytes_clear(&b->signer_der);
}

static void add_time(pbundle *b, int64_t t)
{
    if (b->ntimes < MAX_TIMES)
        b->times[b->ntimes++] = t;
}

/* ---- 1. parsing ---- */

static int parse_media_type(const json_t *j, pbundle *b, vfail *f)
{
    const char *mt = vjson_str(j, "mediaType", "bundle", f);
    if (mt == NULL)
        return -1;
    for (size_t i = 0; i < sizeof MEDIA_TYPES / sizeof MEDIA_TYPES[0]; i++)
        if (strcmp(mt, MEDIA_TYPES[i].media_type) == 0) {
            b->version = MEDIA_TYPES[i].version;
            return 0;
        }
    return vfail_set(f, VERIFY_DENIED_UNSUPPORTED, "unsupported bundle media type \"%.100s\"", mt);
}

static int cert_from(const json_t *holder, const char *path, X509 **out, vfail *f)
{
    vbytes der;
    if (vjson_b64(holder, "rawBytes", path, &der, f) != 0)
        return -1;
    *out = vcert_parse_der(der.p, der.n, f);
    vbytes_clear(&der);
    return *out != NULL ? 0 : vfail_wrap(f, "%s", path);
}

static int parse_chain(const json_t *chain, pbundle *b, vfail *f)
{
    const json_t *certs = json_object_get(chain, "certificates");
    if (!json_is_array(certs) || json_array_size(certs) == 0)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "bundle certificate chain is empty");
    b->extra = sk_X509_new_null();
    if (b->extra == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    for (size_t i = 0; i < json_array_size(certs); i++) {
        X509 *c;
        if (cert_from(json_array_get(certs, i), "x509CertificateChain", &c, f) != 0)
            return -1;
        if (i == 0)
            b->leaf = c;
        else if (!sk_X509_push(b->extra, c)) {
            X509_free(c);
            return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
        }
    }
    return 0;
}

static int parse_material(const json_t *vm, pbundle *b, vfail *f)
{
    const json_t *chain = json_object_get(vm, "x509CertificateChain");
    const json_t *cert = json_object_get(vm, "certificate");
    const json_t *pk = json_object_get(vm, "publicKey");
    if ((chain != NULL) + (cert != NULL) + (pk != NULL) != 1)
        return vfail_set(f, VERIFY_DENIED_MALFORMED,
                         "bundle must carry exactly one of a certificate chain, a certificate "
                         "or a public key hint");
    if (chain != NULL && parse_chain(chain, b, f) != 0)
        return -1;
    if (cert != NULL && cert_from(cert, "certificate", &b->leaf, f) != 0)
        return -1;
    b->tlog = json_object_get(vm, "tlogEntries");
    const json_t *tvd = json_object_get(vm, "timestampVerificationData");
    b->tsa = tvd != NULL ? json_object_get(tvd, "rfc3161Timestamps") : NULL;
    if ((b->tlog != NULL && !json_is_array(b->tlog)) || (b->tsa != NULL && !json_is_array(b->tsa)))
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "bundle tlogEntries / timestamps malformed");
    return 0;
}

static const EVP_MD *md_by_name(const char *alg)
{
    if (strcmp(alg, "SHA2_256") == 0 || strcmp(alg, "sha256") == 0)
        return EVP_sha256();
    if (strcmp(alg, "SHA2_384") == 0 || strcmp(alg, "sha384") == 0)
        return EVP_sha384();
    if (strcmp(alg, "SHA2_512") == 0 || strcmp(alg, "sha512") == 0)
        return EVP_sha512();
    return NULL;
}

static int parse_message(const json_t *m, pbundle *b, vfail *f)
{
    json_t *md = vjson_obj(m, "messageDigest", "messageSignature", f);
    const char *alg = md != NULL ? vjson_str(md, "algorithm", "messageDigest", f) : NULL;
    if (alg == NULL || vjson_b64(md, "digest", "messageDigest", &b->msg_digest, f) != 0 ||
        vjson_b64(m, "signature", "messageSignature", &b->sig, f) != 0)
        return -1;
    b->msg_md = md_by_name(alg);
    if (b->msg_md == NULL || (size_t)EVP_MD_get_size(b->msg_md) != b->msg_digest.n)
        return vfail_set(f, VERIFY_DENIED_UNSUPPORTED, "message digest \"%.32s\"", alg);
    return 0;
}

static int build_pae(pbundle *b, vfail *f)
{
    char head[256];
    int n = snprintf(head, sizeof head, "DSSEv1 %zu %s %zu ", strlen(b->payload_type),
                     b->payload_type, b->payload.n);
    b->pae.p = malloc((size_t)n + b->payload.n + 1);
    if (b->pae.p == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    memcpy(b->pae.p, head, (size_t)n);
    if (b->payload.n > 0)
        memcpy(b->pae.p + n, b->payload.p, b->payload.n);
    b->pae.n = (size_t)n + b->payload.n;
    return 0;
}

static int parse_dsse(const json_t *d, pbundle *b, vfail *f)
{
    const char *type = vjson_str(d, "payloadType", "dsseEnvelope", f);
    const json_t *sigs = json_object_get(d, "signatures");
    if (type == NULL || vjson_b64(d, "payload", "dsseEnvelope", &b->payload, f) != 0)
        return -1;
    if (!json_is_array(sigs) || json_array_size(sigs) != 1)
        return vfail_set(f, VERIFY_DENIED_MALFORMED,
                         "a bundle's DSSE envelope must have exactly one signature");
    if (strlen(type) >= sizeof b->payload_type)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "DSSE payloadType too long");
    snprintf(b->payload_type, sizeof b->payload_type, "%s", type);
    b->is_dsse = true;
    if (vjson_b64(json_array_get(sigs, 0), "sig", "dsseEnvelope.signatures[0]", &b->sig, f) != 0)
        return -1;
    return build_pae(b, f);
}

static int parse_bundle(const json_t *j, pbundle *b, vfail *f)
{
    if (!json_is_object(j))
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "bundle is not a JSON object");
    json_t *vm =
        parse_media_type(j, b, f) == 0 ? vjson_obj(j, "verificationMaterial", "bundle", f) : NULL;
    if (vm == NULL || parse_material(vm, b, f) != 0)
        return -1;
    const json_t *m = json_object_get(j, "messageSignature");
    const json_t *d = json_object_get(j, "dsseEnvelope");
    if ((m != NULL) == (d != NULL))
        return vfail_set(f, VERIFY_DENIED_MALFORMED,
                         "bundle must carry exactly one of messageSignature and dsseEnvelope");
    return m != NULL ? parse_message(m, b, f) : parse_dsse(d, b, f);
}

/* ---- 2. signature ---- */

static int check_with(EVP_PKEY *k, const pbundle *b, const vartifact *a, vfail *f)
{
    if (b->is_dsse) {
        if (vkey_verify(k, NULL, b->pae.p, b->pae.n, b->sig.p, b->sig.n, NULL) == 0)
            return 0;
        /* P-384 / P-521 keys may sign with the matching hash */
        const EVP_MD *alt = EVP_PKEY_get_bits(k) > 300 ? EVP_sha384() : NULL;
        if (EVP_PKEY_get_bits(k) > 400)
            alt = EVP_sha512();
        if (alt != NULL && vkey_verify(k, alt, b->pae.p, b->pae.n, b->sig.p, b->sig.n, NULL) == 0)
            return 0;
        return vfail_set(f, VERIFY_DENIED_BAD_SIGNATURE,
                         "DSSE envelope signature does not verify (wrong key or tampered)");
    }
    int rc = a->artifact != NULL
                 ? vkey_verify(k, b->msg_md, a->artifact, a->artifact_len, b->sig.p, b->sig.n, f)
                 : vkey_verify_prehashed(k, b->msg_md, b->msg_digest.p, b->msg_digest.n, b->sig.p,
                                         b->sig.n, f);
    return rc != 0 ? vfail_wrap(f, "message signature") : 0;
}

static int signer_der(pbundle *b, vfail *f)
{
    int rc =
        b->leaf != NULL ? vcert_der(b->leaf, &b->signer_der) : vkey_spki(b->signer, &b->signer_der);
    return rc != 0 ? vfail_set(f, VERIFY_DENIED_INTERNAL, "cannot encode signer") : 0;
}

static int verify_signature(pbundle *b, const vtrust *t, const vartifact *a, vfail *f)
{
    if (b->leaf != NULL) {
        if (t->nkeys > 0 && t->ncas == 0 && t->ca_anchors == NULL)
            return vfail_set(f, VERIFY_DENIED_BAD_SIGNATURE,
                             "bundle is signed with a certificate, a public key was expected");
        b->signer = X509_get0_pubkey(b->leaf);
        if (b->signer == NULL || check_with(b->signer, b, a, f) != 0)
            return -1;
        return signer_der(b, f);
    }
    if (t->nkeys == 0)
        return vfail_set(f, VERIFY_DENIED_BAD_SIGNATURE,
                         "bundle is signed with a managed key but no public key is configured");
    for (size_t i = 0; i < t->nkeys; i++)
        if (check_with(t->keys[i], b, a, f) == 0) {
            b->signer = t->keys[i];
            return signer_der(b, f);
        }
    return t->nkeys > 1 ? vfail_wrap(f, "none of %zu keys", t->nkeys) : -1;
}

/* ---- 3. artifact ---- */

static int artifact_digest(const vartifact *a, const EVP_MD *md, uint8_t *out, size_t *n)
{
    if (a->artifact != NULL) {
        unsigned int len = 0;
        int ok = EVP_Digest(a->artifact, a->artifact_len, out, &len, md, NULL);
        *n = len;
        return ok == 1 ? 0 : -1;
    }
    if (a->md == NULL || EVP_MD_get_type(a->md) != EVP_MD_get_type(md))
        return -1;
    memcpy(out, a->digest, a->dlen);
    *n = a->dlen;
    return 0;
}

static int bind_message(const pbundle *b, const vartifact *a, vfail *f)
{
    uint8_t d[EVP_MAX_MD_SIZE];
    size_t n;
    if (artifact_digest(a, b->msg_md, d, &n) != 0)
        return vfail_set(f, VERIFY_DENIED_DIGEST_MISMATCH,
                         "artifact digest not available in the bundle's digest algorithm");
    if (!vmem_eq(d, n, b->msg_digest.p, b->msg_digest.n))
        return vfail_set(f, VERIFY_DENIED_DIGEST_MISMATCH,
                         "bundle message digest is not the artifact's digest");
    return 0;
}

static bool subject_matches(const json_t *subject, const vartifact *a)
{
    const json_t *digests = json_object_get(subject, "digest");
    const char *alg;
    json_t *v;
    json_object_foreach((json_t *)digests, alg, v)
    {
        const EVP_MD *md = md_by_name(alg);
        uint8_t want[EVP_MAX_MD_SIZE], got[EVP_MAX_MD_SIZE];
        size_t n;
        if (md == NULL || !json_is_string(v) || artifact_digest(a, md, got, &n) != 0)
            continue;
        if (vhex_decode(json_string_value(v), json_string_length(v), want, n) == 0 &&
            memcmp(want, got, n) == 0)
            return true;
    }
    return false;
}

static int bind_statement(const pbundle *b, const vartifact *a, vbundle_out *out, vfail *f)
{
    if (strcmp(b->payload_type, "application/vnd.in-toto+json") != 0)
        return vfail_set(f, VERIFY_DENIED_UNSUPPORTED, "DSSE payloadType \"%s\" is not in-toto",
                         b->payload_type);
    json_t *st = vjson_parse(b->payload.p, b->payload.n, f);
    if (st == NULL)
        return vfail_wrap(f, "in-toto statement");
    const json_t *subjects = json_object_get(st, "subject");
    int rc = vfail_set(f, VERIFY_DENIED_DIGEST_MISMATCH,
                       "the artifact's digest is not a subject of the in-toto statement");
    for (size_t i = 0; json_is_array(subjects) && i < json_array_size(subjects) && rc != 0; i++) {
        const json_t *s = json_array_get(subjects, i);
        if (!subject_matches(s, a))
            continue;
        const char *name = json_string_value(json_object_get(s, "name"));
        snprintf(out->subject_name, sizeof out->subject_name, "%s", name != NULL ? name : "");
        rc = 0;
    }
    json_decref(st);
    return rc;
}

/* ---- 4. transparency log ---- */

typedef struct {
    int64_t log_index;
    vbytes log_id;
    const char *kind, *version;
    int64_t integrated_time;
    const json_t *promise, *proof;
    const char *body_b64;
    vbytes body;
} tentry;

static void tentry_clear(tentry *e)
{
    vbytes_clear(&e->log_id);
    vbytes_clear(&e->body);
}

/* An int64 field of a protobuf-JSON message: a number or a decimal string;
 * absent means 0, since protobuf JSON leaves out fields at their default
 * (the first entry of a log has no "logIndex"). */
static int proto_int64(const json_t *msg, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(msg, key);
    if (v == NULL) {
        *out = 0;
        return 0;
    }
    return vjson_int64(v, out);
}

static int parse_entry(const json_t *j, tentry *e, vfail *f)
{
    memset(e, 0, sizeof *e);
    const json_t *id = vjson_obj(j, "logId", "tlogEntry", f);
    const json_t *kv = id != NULL ? vjson_obj(j, "kindVersion", "tlogEntry", f) : NULL;
    if (kv == NULL || vjson_b64(id, "keyId", "logId", &e->log_id, f) != 0)
        return -1;
    e->kind = vjson_str(kv, "kind", "kindVersion", f);
    e->version = e->kind != NULL ? vjson_str(kv, "version", "kindVersion", f) : NULL;
    e->body_b64 = e->version != NULL ? vjson_str(j, "canonicalizedBody", "tlogEntry", f) : NULL;
    if (e->body_b64 == NULL || vb64_decode(e->body_b64, strlen(e->body_b64), &e->body, f) != 0)
        return -1;
    if (proto_int64(j, "logIndex", &e->log_index) != 0 || e->log_index < 0)
        return vfail_set(f, VERIFY_DENIED_TLOG, "tlog entry has a missing or negative log index");
    const json_t *it = json_object_get(j, "integratedTime");
    if (it != NULL && (vjson_int64(it, &e->integrated_time) != 0 || e->integrated_time < 0))
        return vfail_set(f, VERIFY_DENIED_TLOG, "tlog entry integratedTime invalid");
    e->promise = json_object_get(j, "inclusionPromise");
    e->proof = json_object_get(j, "inclusionProof");
    if (json_is_null(e->promise)) /* protobuf JSON: null = absent */
        e->promise = NULL;
    if (json_is_null(e->proof))
        e->proof = NULL;
    return 0;
}

static int entry_matches(const pbundle *b, const tentry *e, const vbody *body, vfail *f)
{
    if (strcmp(body->kind, e->kind) != 0 || strcmp(body->version, e->version) != 0)
        return vfail_set(f, VERIFY_DENIED_TLOG, "entry kind/version differs from its body");
    if (!vbody_names(body, b->sig.p, b->sig.n, b->signer_der.p, b->signer_der.n))
        return vfail_set(f, VERIFY_DENIED_TLOG,
                         "log entry does not record this signature and signer");
    uint8_t d[32];
    bool hashedrekord = strcmp(body->kind, "hashedrekord") == 0;
    if (!b->is_dsse) {
        if (!hashedrekord ||
            !vmem_eq(body->digest.p, body->digest.n, b->msg_digest.p, b->msg_digest.n))
            return vfail_set(f, VERIFY_DENIED_TLOG, "log entry is for another artifact digest");
        return 0;
    }
    if (hashedrekord)
        verify_sha256(b->pae.p, b->pae.n, d);
    else
        verify_sha256(b->payload.p, b->payload.n, d);
    if (!vmem_eq(body->digest.p, body->digest.n, d, 32))
        return vfail_set(f, VERIFY_DENIED_TLOG, "log entry is for another DSSE envelope");
    return 0;
}

static int verify_promise(const tentry *e, const vlog *log, pbundle *b, vfail *f)
{
    vbytes set;
    char hex[2 * sizeof log->log_id + 1];
    if (vjson_b64(e->promise, "signedEntryTimestamp", "inclusionPromise", &set, f) != 0)
        return -1;
    char *canon_b64 = vb64_encode(e->body.p, e->body.n);
    vhex_encode(e->log_id.p, e->log_id.n, hex);
    int rc = canon_b64 == NULL ? vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory")
                               : vtlog_verify_set(log, canon_b64, e->integrated_time, hex,
                                                  e->log_index, set.p, set.n, f);
    free(canon_b64);
    vbytes_clear(&set);
    if (rc == 0)
        add_time(b, e->integrated_time);
    return rc;
}

static int proof_hashes(const json_t *arr, vbytes *h, size_t *n, vfail *f)
{
    *n = 0;
    if (arr == NULL) /* protobuf JSON: an empty list is left out */
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > 64)
        return vfail_set(f, VERIFY_DENIED_TLOG, "inclusion proof hashes malformed");
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *v = json_array_get(arr, i);
        if (!json_is_string(v) ||
            vb64_decode(json_string_value(v), json_string_length(v), &h[i], f) != 0 ||
            h[i].n != 32) {
            *n = i + 1;
            return vfail_set(f, VERIFY_DENIED_TLOG, "inclusion proof hash %zu malformed", i);
        }
        *n = i + 1;
    }
    return 0;
}

/* Rekor v2 entry types; their checkpoints are signed under the log's
 * host name (Rekor v1 checkpoints are matched by key hint only). */
static bool rekor_v2_entry(const tentry *e)
{
    return strcmp(e->version, "0.0.2") == 0 &&
           (strcmp(e->kind, "hashedrekord") == 0 || strcmp(e->kind, "dsse") == 0);
}

static int verify_proof(const tentry *e, const vlog *log, vfail *f)
{
    const json_t *p = e->proof;
    int64_t index, size;
    vbytes root = {0}, hashes[64] = {{0}};
    size_t nh = 0;
    const json_t *cp = json_object_get(p, "checkpoint");
    const char *note = json_string_value(json_object_get(cp, "envelope"));
    int rc = -1;
    if (proto_int64(p, "logIndex", &index) != 0 || proto_int64(p, "treeSize", &size) != 0 ||
        note == NULL) {
        vfail_set(f, VERIFY_DENIED_TLOG, "inclusion proof without index, size or checkpoint");
    } else if (vjson_b64(p, "rootHash", "inclusionProof", &root, f) == 0 && root.n == 32 &&
               proof_hashes(json_object_get(p, "hashes"), hashes, &nh, f) == 0) {
        const uint8_t *path[64];
        for (size_t i = 0; i < nh; i++)
            path[i] = hashes[i].p;
        rc = vtlog_verify_inclusion(e->body.p, e->body.n, index, size, path, nh, root.p, f);
        if (rc == 0)
            rc = vtlog_verify_checkpoint(log, rekor_v2_entry(e), note, strlen(note), size, root.p,
                                         f);
    } else if (root.n != 32) {
        vfail_set(f, VERIFY_DENIED_TLOG, "inclusion proof root hash malformed");
    }
    for (size_t i = 0; i < nh; i++)
        vbytes_clear(&hashes[i]);
    vbytes_clear(&root);
    return rc;
}

static int check_log_window(const tentry *e, const vlog *log, pbundle *b, vfail *f)
{
    if (!log->valid.has_start)
        return vfail_set(f, VERIFY_DENIED_TLOG, "trusted log has no validity start");
    if (e->integrated_time > 0) {
        if (!vwindow_contains(&log->valid, e->integrated_time))
            return vfail_set(f, VERIFY_DENIED_TLOG, "log key not valid at the entry's time");
    } else if (b->nuntimed < MAX_TLOG_ENTRIES) {
        b->untimed[b->nuntimed++] = &log->valid;
    }
    return 0;
}

/* 1 verified, 0 skipped (unknown log), -1 failed. */
static int verify_entry(const json_t *j, const vtrust *t, pbundle *b, vfail *f)
{
    tentry e;
    vbody body = {0};
    int rc = parse_entry(j, &e, f);
    const vlog *log = rc == 0 ? vtlog_find(t->tlogs, t->ntlogs, e.log_id.p, e.log_id.n) : NULL;
    if (rc == 0 && log == NULL) {
        tentry_clear(&e);
        return 0;
    }
    if (rc == 0)
        rc = vbody_parse(e.body.p, e.body.n, &body, f);
    if (rc == 0)
        rc = entry_matches(b, &e, &body, f);
    if (rc == 0 && e.promise == NULL && (e.proof == NULL || b->version < 2))
        rc = vfail_set(f, VERIFY_DENIED_TLOG, "tlog entry has no %s",
                       b->version < 2 ? "inclusion promise (SET)" : "inclusion proof");
    if (rc == 0 && e.proof == NULL && b->version >= 2)
        rc = vfail_set(f, VERIFY_DENIED_TLOG, "tlog entry has no inclusion proof");
    if (rc == 0 && e.promise != NULL)
        rc = verify_promise(&e, log, b, f);
    if (rc == 0 && e.proof != NULL)
        rc = verify_proof(&e, log, f);
    if (rc == 0)
        rc = check_log_window(&e, log, b, f);
    vbody_clear(&body);
    tentry_clear(&e);
    return rc == 0 ? 1 : -1;
}

static bool duplicate_entry(const json_t *a, const json_t *c)
{
    const json_t *ia = json_object_get(json_object_get(a, "logId"), "keyId");
    const json_t *ic = json_object_get(json_object_get(c, "logId"), "keyId");
    int64_t xa, xc;
    return json_equal((json_t *)ia, (json_t *)ic) && proto_int64(a, "logIndex", &xa) == 0 &&
           proto_int64(c, "logIndex", &xc) == 0 && xa == xc;
}

static int verify_tlog(pbundle *b, const vtrust *t, vfail *f)
{
    size_t n = json_array_size(b->tlog), verified = 0;
    if (n > MAX_TLOG_ENTRIES)
        return vfail_set(f, VERIFY_DENIED_TLOG, "too many tlog entries (%zu)", n);
    for (size_t i = 0; i < n; i++)
        for (size_t k = i + 1; k < n; k++)
            if (duplicate_entry(json_array_get(b->tlog, i), json_array_get(b->tlog, k)))
                return vfail_set(f, VERIFY_DENIED_TLOG, "duplicate tlog entries");
    for (size_t i = 0; i < n; i++) {
        int rc = verify_entry(json_array_get(b->tlog, i), t, b, f);
        if (rc < 0)
            return vfail_wrap(f, "tlog entry %zu", i);
        verified += (size_t)rc;
    }
    if (t->require_tlog && verified == 0)
        return vfail_set(f, VERIFY_DENIED_TLOG,
                         n == 0 ? "no transparency log entry (Rekor) in the bundle"
                                : "no tlog entry is from a trusted transparency log");
    return 0;
}

/* ---- 5. RFC 3161 ---- */

static int verify_timestamps(pbundle *b, const vtrust *t, vfail *f)
{
    for (size_t i = 0; i < json_array_size(b->tsa); i++) {
        vbytes der;
        int64_t when;
        if (vjson_b64(json_array_get(b->tsa, i), "signedTimestamp", "rfc3161Timestamps[]", &der,
                      f) != 0)
            return -1;
        int rc = vtsa_verify(der.p, der.n, b->sig.p, b->sig.n, t->tsas, t->ntsas, &when, f);
        vbytes_clear(&der);
        if (rc != 0)
            return vfail_wrap(f, "timestamp %zu", i);
        add_time(b, when);
    }
    for (size_t k = 0; k < b->nuntimed; k++) {
        bool covered = false;
        for (size_t i = 0; i < b->ntimes && !covered; i++)
            covered = vwindow_contains(b->untimed[k], b->times[i]);
        if (!covered)
            return vfail_set(f, VERIFY_DENIED_TLOG,
                             "no verified timestamp within the transparency log's validity");
    }
    if (t->require_tlog && b->ntimes == 0)
        return vfail_set(f, VERIFY_DENIED_TIMESTAMP,
                         "no verified signing time (SET integrated time or RFC 3161 timestamp)");
    return 0;
}

/* ---- 6. signer ---- */

static int chain_at(const pbundle *b, const vtrust *t, int64_t at, X509 **issuer, vfail *f)
{
    if (t->ca_anchors != NULL)
        return vcert_verify_chain(b->leaf, b->extra, t->ca_anchors, at, true, issuer, f);
    int rc =
        vfail_set(f, VERIFY_DENIED_CERT_UNTRUSTED,
                  "no certificate authority of the trusted root was valid at %lld", (long long)at);
    for (size_t i = 0; i < t->ncas && rc != 0; i++)
        if (vwindow_contains(&t->cas[i].valid, at))
            rc = vcert_verify_chain(b->leaf, NULL, t->cas[i].chain, at, true, issuer, f);
    return rc;
}

static int verify_identity(const pbundle *b, const vtrust *t, vbundle_out *out, vfail *f)
{
    vfail ignore;
    if (vcert_fulcio_issuer(b->leaf, out->issuer, sizeof out->issuer, &ignore) != 0)
        out->issuer[0] = '\0';
    vcert_san_first(b->leaf, out->san, sizeof out->san);
    if (t->want_issuer != NULL && strcmp(out->issuer, t->want_issuer) != 0)
        return vfail_set(f, VERIFY_DENIED_CERT_IDENTITY, "OIDC issuer \"%s\" is not \"%s\"",
                         out->issuer, t->want_issuer);
    if (t->want_san != NULL && !vcert_san_has(b->leaf, t->want_san))
        return vfail_set(f, VERIFY_DENIED_CERT_IDENTITY,
                         "certificate identity \"%s\" is not \"%s\"", out->san, t->want_san);
    if (t->want_email != NULL && !vcert_has_email(b->leaf, t->want_email))
        return vfail_set(f, VERIFY_DENIED_CERT_IDENTITY,
                         "required email %s not in certificate (issued to \"%s\")", t->want_email,
                         out->san);
    return 0;
}

static int verify_cert(const pbundle *b, const vtrust *t, int64_t now, vbundle_out *out, vfail *f)
{
    if (b->ntimes == 0)
        return vfail_set(f, VERIFY_DENIED_TIMESTAMP,
                         "a certificate signature needs a verified signing time");
    X509 *issuer = NULL;
    int rc = 0;
    for (size_t i = 0; i < b->ntimes && rc == 0; i++) {
        X509_free(issuer);
        issuer = NULL;
        if (!vcert_valid_at(b->leaf, b->times[i]))
            rc = vfail_set(f, VERIFY_DENIED_CERT_EXPIRED,
                           "signing time %lld outside the certificate's validity",
                           (long long)b->times[i]);
        else
            rc = chain_at(b, t, b->times[i], &issuer, f);
    }
    if (rc == 0 && t->nctlogs > 0)
        rc = vcert_verify_sct(b->leaf, issuer, t->ctlogs, t->nctlogs, now, f);
    X509_free(issuer);
    return rc != 0 ? -1 : verify_identity(b, t, out, f);
}

static int verify_key_window(const pbundle *b, const vtrust *t, vfail *f)
{
    if ((t->key_not_before != 0 || t->key_not_after != 0) && b->ntimes == 0)
        return vfail_set(f, VERIFY_DENIED_TIMESTAMP,
                         "the key has a validity window but the bundle has no verified time");
    for (size_t i = 0; i < b->ntimes; i++)
        if ((t->key_not_before != 0 && b->times[i] < t->key_not_before) ||
            (t->key_not_after != 0 && b->times[i] > t->key_not_after))
            return vfail_set(f, VERIFY_DENIED_CERT_EXPIRED,
                             "signature time outside of the public key's validity window");
    return 0;
}

static int verify_parsed(pbundle *b, const vtrust *t, const vartifact *a, int64_t now,
                         vbundle_out *out, vfail *f)
{
    if (verify_signature(b, t, a, f) != 0)
        return -1;
    if ((b->is_dsse ? bind_statement(b, a, out, f) : bind_message(b, a, f)) != 0)
        return -1;
    if (verify_tlog(b, t, f) != 0 || verify_timestamps(b, t, f) != 0)
        return -1;
    if (b->leaf != NULL ? verify_cert(b, t, now, out, f) != 0 : verify_key_window(b, t, f) != 0)
        return -1;
    out->is_dsse = b->is_dsse;
    snprintf(out->payload_type, sizeof out->payload_type, "%s", b->payload_type);
    out->signed_time = 0;
    for (size_t i = 0; i < b->ntimes; i++)
        if (out->signed_time == 0 || b->times[i] < out->signed_time)
            out->signed_time = b->times[i];
    return 0;
}

int vbundle_verify(const void *json, size_t len, const vtrust *t, const vartifact *a, int64_t now,
                   vbundle_out *out, vfail *f)
{
    memset(out, 0, sizeof *out);
    pbundle b;
    memset(&b, 0, sizeof b);
    json_t *j = vjson_parse(json, len, f);
    if (j == NULL)
        return vfail_wrap(f, "bundle");
    int rc = parse_bundle(j, &b, f);
    if (rc == 0)
        rc = verify_parsed(&b, t, a, now, out, f);
    pbundle_clear(&b);
    json_decref(j);
    return rc;
}

/* ---- public API ---- */

static int artifact_from_opts(const verify_bundle_opts *o, vartifact *a, vfail *f)
{
    memset(a, 0, sizeof *a);
    a->artifact = o->artifact;
    a->artifact_len = o->artifact_len;
    if (o->artifact != NULL)
        return 0;
    const char *d = o->artifact_digest;
    const char *colon = d != NULL ? strchr(d, ':') : NULL;
    if (colon == NULL || colon - d > 16)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "no artifact or artifact digest given");
    char alg[17];
    snprintf(alg, sizeof alg, "%.*s", (int)(colon - d), d);
    a->md = md_by_name(alg);
    a->dlen = a->md != NULL ? (size_t)EVP_MD_get_size(a->md) : 0;
    if (a->md == NULL || vhex_decode(colon + 1, strlen(colon + 1), a->digest, a->dlen) != 0)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "artifact digest \"%.80s\" invalid", d);
    return 0;
}

int verify_bundle(const void *json, size_t len, const verify_bundle_opts *o,
                  verify_bundle_result *out)
{
    memset(out, 0, sizeof *out);
    vfail f = {0};
    vartifact a;
    vbundle_out bo;
    if (o == NULL || o->trust_root == NULL) {
        vfail_set(&f, VERIFY_DENIED_INTERNAL, "no trusted root given");
        vfail_to_verdict(&f, &out->verdict);
        return 0;
    }
    const verify_trust_root *r = o->trust_root;
    EVP_PKEY *key = o->key != NULL ? o->key->pkey : NULL;
    vtrust t = {.keys = key != NULL ? &key : NULL,
                .nkeys = key != NULL,
                .cas = r->cas,
                .ncas = r->ncas,
                .want_issuer = o->issuer,
                .want_san = o->san,
                .tlogs = r->tlogs,
                .ntlogs = r->ntlogs,
                .ctlogs = r->ctlogs,
                .nctlogs = r->nctlogs,
                .tsas = r->tsas,
                .ntsas = r->ntsas,
                .require_tlog = !o->allow_no_tlog,
                .key_not_before = o->key_not_before,
                .key_not_after = o->key_not_after};
    if (artifact_from_opts(o, &a, &f) != 0 ||
        vbundle_verify(json, len, &t, &a, o->now, &bo, &f) != 0) {
        vfail_to_verdict(&f, &out->verdict);
        return 0;
    }
    out->is_dsse = bo.is_dsse;
    out->signed_time = bo.signed_time;
    snprintf(out->payload_type, sizeof out->payload_type, "%s", bo.payload_type);
    snprintf(out->san, sizeof out->san, "%s", bo.san);
    snprintf(out->issuer, sizeof out->issuer, "%s", bo.issuer);
    verdict_allow(&out->verdict, "bundle verified: %s signature%s%s, signed at %lld",
                  bo.is_dsse ? "DSSE" : "message", bo.san[0] ? " by " : "", bo.san,
                  (long long)bo.signed_time);
    return 1;
}
