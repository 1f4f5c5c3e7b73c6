/*
 * sigstore.c — image evaluation against a policy (section 6 of verify.h):
 * cosign signatures from the "sha256-<hex>.sig" manifest and Sigstore
 * bundles from referrers, checked against the requirements of the scope
 * the image falls in.
 *
 * How it works, per cosign signature layer (as containers/image's
 * policy_eval_sigstore.go, in the same order):
 *  1. the layer must be a simple-signing layer (others are counted and
 *     ignored) and carry a base64 signature;
 *  2. the signing key comes from the requirement: managed keys (with Rekor
 *     keys configured, the SET of the bundle annotation must verify for one
 *     of them); Fulcio (SET required, its integrated time is the signing
 *     time, the certificate must chain to the CA at that time, carry the
 *     OIDC issuer extension and the email SAN); or private PKI (chain at
 *     `now`, email / hostname);
 *  3. the SET's hashedrekord body must record this signature, this key or
 *     certificate and SHA-256 of this payload;
 *  4. the signature must verify over the payload (SHA-256);
 *  5. the payload must parse strictly, name this manifest digest, and its
 *     docker-reference must satisfy signedIdentity.
 * One accepted signature satisfies a sigstoreSigned requirement; when none
 * is, the verdict gives the reason of each rejected signature. Bundles go
 * through bundle.c with the requirement's trust material and the manifest
 * digest as artifact; the matching in-toto subject's name is the signed
 * identity, and a subject without a name (what cosign v3 writes) claims
 * the image being evaluated, by the tag or digest it was asked by.
 */
#include "vpolicy.h"

#include <openssl/x509v3.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SIG_KEYS 64

/* ---- Rekor SET from the dev.sigstore.cosign/bundle annotation ---- */

typedef struct {
    const char *body;
    int64_t itime, index;
    const char *log_id;
    vbytes set;
} cosign_set_doc;

static int parse_set_doc(const json_t *j, cosign_set_doc *d, vfail *f)
{
    static const char *const top[] = {"SignedEntryTimestamp", "Payload", NULL};
    static const char *const pay[] = {"body", "integratedTime", "logIndex", "logID", NULL};
    const json_t *p = json_object_get(j, "Payload");
    if (vjson_only_keys(j, top, "bundle", f) != 0 || vjson_only_keys(p, pay, "Payload", f) != 0)
        return -1;
    const json_t *it = json_object_get(p, "integratedTime"), *ix = json_object_get(p, "logIndex");
    d->body = vjson_str(p, "body", "Payload", f);
    d->log_id = d->body != NULL ? vjson_str(p, "logID", "Payload", f) : NULL;
    if (d->log_id == NULL)
        return -1;
    if (!json_is_integer(it) || !json_is_integer(ix))
        return vfail_set(f, VERIFY_DENIED_MALFORMED,
                         "Payload.integratedTime/logIndex: not integers");
    d->itime = (int64_t)json_integer_value(it);
    d->index = (int64_t)json_integer_value(ix);
    return vjson_b64(j, "SignedEntryTimestamp", "bundle", &d->set, f);
}

static int set_body_matches(const cosign_set_doc *d, const vbytes *signer, const vbytes *sig,
                            const uint8_t *payload, size_t plen, vfail *f)
{
    vbytes raw = {0};
    vbody body = {0};
    uint8_t h[32];
    if (vb64_decode(d->body, strlen(d->body), &raw, f) != 0 ||
        vbody_parse(raw.p, raw.n, &body, f) != 0) {
        vbytes_clear(&raw);
        return vfail_wrap(f, "Rekor SET payload body");
    }
    vbytes_clear(&raw);
    verify_sha256(payload, plen, h);
    int rc = 0;
    if (strcmp(body.kind, "hashedrekord") != 0 || strcmp(body.version, "0.0.1") != 0)
        rc = vfail_set(f, VERIFY_DENIED_TLOG, "Rekor entry is %s %s, not hashedrekord 0.0.1",
                       body.kind, body.version);
    else if (!vbody_names(&body, sig->p, sig->n, signer->p, signer->n))
        rc = vfail_set(f, VERIFY_DENIED_TLOG,
                       "Rekor entry does not record this signature and key/certificate");
    else if (!vmem_eq(body.digest.p, body.digest.n, h, 32))
        rc = vfail_set(f, VERIFY_DENIED_TLOG, "payload in Rekor SET does not match");
    vbody_clear(&body);
    return rc;
}

/* Verifies the SET with one of the requirement's Rekor keys and that it
 * records (signer, sig, payload); *itime = integrated time. */
static int verify_cosign_set(const vreq *r, const verify_cosign_sig *s, const vbytes *signer,
                             const vbytes *sig, int64_t *itime, vfail *f)
{
    if (s->rekor_bundle == NULL || s->rekor_bundle_len == 0)
        return vfail_set(f, VERIFY_DENIED_TLOG,
                         "missing dev.sigstore.cosign/bundle annotation (Rekor SET required)");
    cosign_set_doc d = {0};
    json_t *j = vjson_parse(s->rekor_bundle, s->rekor_bundle_len, f);
    int rc = j != NULL ? parse_set_doc(j, &d, f) : -1;
    if (rc == 0) {
        rc = vfail_set(f, VERIFY_DENIED_TLOG, "Rekor SET does not verify with the Rekor key");
        for (size_t i = 0; i < r->nrekor && rc != 0; i++)
            rc = vtlog_verify_set(&r->rekor[i], d.body, d.itime, d.log_id, d.index, d.set.p,
                                  d.set.n, f);
    }
    if (rc == 0)
        rc = set_body_matches(&d, signer, sig, s->payload, s->payload_len, f);
    if (rc == 0)
        *itime = d.itime;
    vbytes_clear(&d.set);
    json_decref(j);
    return rc;
}

/* ---- certificates from annotations ---- */

static X509 *annotation_leaf(const verify_cosign_sig *s, vfail *f)
{
    if (s->certificate == NULL || s->certificate_len == 0) {
        vfail_set(f, VERIFY_DENIED_CERT_UNTRUSTED,
                  "missing dev.sigstore.cosign/certificate annotation");
        return NULL;
    }
    STACK_OF(X509) *certs = vcerts_parse(s->certificate, s->certificate_len, f);
    if (certs == NULL) {
        vfail_wrap(f, "signing certificate");
        return NULL;
    }
    X509 *leaf = NULL;
    if (sk_X509_num(certs) != 1)
        vfail_set(f, VERIFY_DENIED_MALFORMED, "certificate annotation must hold one certificate");
    else
        leaf = sk_X509_shift(certs);
    vcerts_free(certs);
    return leaf;
}

/* Intermediates: `base` plus the chain annotation without its last (root)
 * certificate. */
static STACK_OF(X509) *
    annotation_chain(const verify_cosign_sig *s, STACK_OF(X509) * base, vfail *f)
{
    STACK_OF(X509) *out = base != NULL ? X509_chain_up_ref(base) : sk_X509_new_null();
    if (out == NULL || s->chain == NULL || s->chain_len == 0)
        return out;
    STACK_OF(X509) *chain = vcerts_parse(s->chain, s->chain_len, f);
    if (chain == NULL) {
        vcerts_free(out);
        vfail_wrap(f, "certificate chain");
        return NULL;
    }
    X509 *last = sk_X509_pop(chain);
    X509_free(last);
    X509 *c;
    while ((c = sk_X509_shift(chain)) != NULL)
        if (!sk_X509_push(out, c))
            X509_free(c);
    vcerts_free(chain);
    return out;
}

static int fulcio_signer(const verify_policy *p, const vreq *r, const verify_cosign_sig *s,
                         const vbytes *sig, X509 *leaf, vfail *f)
{
    vbytes der = {0};
    int64_t itime = 0;
    X509 *issuer = NULL;
    char got[256];
    if (vcert_der(leaf, &der) != 0)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "cannot encode certificate");
    int rc = verify_cosign_set(r, s, &der, sig, &itime, f);
    vbytes_clear(&der);
    STACK_OF(X509) *untrusted = rc == 0 ? annotation_chain(s, NULL, f) : NULL;
    if (rc == 0 && untrusted == NULL)
        rc = -1;
    if (rc == 0)
        rc = vcert_verify_chain(leaf, untrusted, r->fulcio_cas, itime, true, &issuer, f);
    if (rc == 0 && p->root != NULL && p->root->nctlogs > 0)
        rc = vcert_verify_sct(leaf, issuer, p->root->ctlogs, p->root->nctlogs, itime, f);
    if (rc == 0 && vcert_fulcio_issuer(leaf, got, sizeof got, f) != 0)
        rc = -1;
    if (rc == 0 && strcmp(got, r->oidc_issuer) != 0)
        rc = vfail_set(f, VERIFY_DENIED_CERT_IDENTITY, "unexpected Fulcio OIDC issuer \"%s\"", got);
    if (rc == 0 && !vcert_has_email(leaf, r->subject_email))
        rc = vfail_set(f, VERIFY_DENIED_CERT_IDENTITY, "required email %s not found in certificate",
                       r->subject_email);
    X509_free(issuer);
    vcerts_free(untrusted);
    return rc;
}

static int pki_signer(const vreq *r, const verify_cosign_sig *s, X509 *leaf, int64_t now, vfail *f)
{
    if (r->pki_email != NULL && !vcert_has_email(leaf, r->pki_email))
        return vfail_set(f, VERIFY_DENIED_CERT_IDENTITY, "required email %s not found",
                         r->pki_email);
    if (r->pki_hostname != NULL &&
        X509_check_host(leaf, r->pki_hostname, strlen(r->pki_hostname), 0, NULL) != 1)
        return vfail_set(f, VERIFY_DENIED_CERT_IDENTITY, "certificate is not for host %s",
                         r->pki_hostname);
    STACK_OF(X509) *untrusted = annotation_chain(s, r->pki_intermediates, f);
    if (untrusted == NULL)
        return -1;
    int rc = vcert_verify_chain(leaf, untrusted, r->pki_roots, now, true, NULL, f);
    vcerts_free(untrusted);
    return rc;
}

/* Chooses the candidate keys for one signature (borrowed pointers). */
static int signer_keys(const verify_policy *p, const vreq *r, const verify_cosign_sig *s,
                       const vbytes *sig, int64_t now, X509 **leaf, EVP_PKEY **keys, size_t *n,
                       vfail *f)
{
    *n = 0;
    if (r->nkeys > 0 && r->nrekor == 0) {
        for (size_t i = 0; i < r->nkeys && i < MAX_SIG_KEYS; i++)
            keys[(*n)++] = r->keys[i];
        return 0;
    }
    if (r->nkeys > 0) {
        vfail last = {0};
        for (size_t i = 0; i < r->nkeys && *n == 0; i++) {
            vbytes spki = {0};
            int64_t itime;
            if (vkey_spki(r->keys[i], &spki) == 0 &&
                verify_cosign_set(r, s, &spki, sig, &itime, &last) == 0)
                keys[(*n)++] = r->keys[i];
            vbytes_clear(&spki);
        }
        if (*n == 0)
            *f = last;
        return *n > 0 ? 0 : -1;
    }
    if (r->fulcio_cas != NULL && (s->rekor_bundle == NULL || s->rekor_bundle_len == 0))
        return vfail_set(f, VERIFY_DENIED_TLOG,
                         "missing dev.sigstore.cosign/bundle annotation (Rekor SET required)");
    *leaf = annotation_leaf(s, f);
    if (*leaf == NULL)
        return -1;
    int rc = r->fulcio_cas != NULL ? fulcio_signer(p, r, s, sig, *leaf, f)
                                   : pki_signer(r, s, *leaf, now, f);
    if (rc == 0)
        keys[(*n)++] = X509_get0_pubkey(*leaf);
    return rc;
}

/* ---- payload checks ---- */

static int check_payload(const vreq *r, const vref *image, const uint8_t digest[32],
                         const verify_cosign_sig *s, vfail *f)
{
    verify_payload pl;
    if (vpayload_parse(s->payload, s->payload_len, &pl, f) != 0)
        return -1;
    char want[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(digest, want);
    if (strcmp(pl.manifest_digest, want) != 0)
        return vfail_set(f, VERIFY_DENIED_DIGEST_MISMATCH, "signature is for manifest %s, not %s",
                         pl.manifest_digest, want);
    if (!videntity_matches(&r->identity, image, pl.docker_reference))
        return vfail_set(f, VERIFY_DENIED_IDENTITY,
                         "signature for identity \"%s\" is not accepted for %s%s%s",
                         pl.docker_reference, image->name, image->tag[0] ? ":" : "@",
                         image->tag[0] ? image->tag : image->digest);
    return 0;
}

static int accept_sig(const verify_policy *p, const vreq *r, const vref *image,
                      const uint8_t digest[32], const verify_cosign_sig *s, int64_t now, vfail *f)
{
    vbytes sig = {0};
    if (s->signature == NULL || s->signature_len == 0)
        return vfail_set(f, VERIFY_DENIED_MALFORMED,
                         "missing dev.cosignproject.cosign/signature annotation");
    if (vb64_decode_nl(s->signature, s->signature_len, &sig, f) != 0)
        return vfail_wrap(f, "signature annotation");
    X509 *leaf = NULL;
    EVP_PKEY *keys[MAX_SIG_KEYS];
    size_t nkeys = 0;
    int rc = signer_keys(p, r, s, &sig, now, &leaf, keys, &nkeys, f);
    if (rc == 0) {
        rc = -1;
        for (size_t i = 0; i < nkeys && rc != 0; i++)
            rc = vkey_verify(keys[i], EVP_sha256(), s->payload, s->payload_len, sig.p, sig.n, f);
        if (rc != 0)
            vfail_set(f, VERIFY_DENIED_BAD_SIGNATURE,
                      "cryptographic signature verification failed (wrong key or tampered "
                      "payload)");
    }
    if (rc == 0)
        rc = check_payload(r, image, digest, s, f);
    X509_free(leaf);
    vbytes_clear(&sig);
    return rc;
}

/* ---- bundles ---- */

typedef struct {
    vlog *logs;
    vtrust t;
} req_trust;

static int build_trust(const verify_policy *p, const vreq *r, req_trust *rt, vfail *f)
{
    const verify_trust_root *root = p->root;
    size_t nroot = root != NULL ? root->ntlogs : 0;
    memset(rt, 0, sizeof *rt);
    rt->logs = calloc(r->nrekor + nroot + 1, sizeof *rt->logs);
    if (rt->logs == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    for (size_t i = 0; i < r->nrekor; i++) {
        rt->logs[i] = r->rekor[i];
        rt->logs[i].valid.has_start = true; /* a policy key has no window: always valid */
    }
    if (nroot > 0)
        memcpy(rt->logs + r->nrekor, root->tlogs, nroot * sizeof *rt->logs);
    vtrust *t = &rt->t;
    t->keys = r->keys;
    t->nkeys = r->nkeys;
    t->ca_anchors = r->fulcio_cas;
    t->want_issuer = r->oidc_issuer;
    t->want_email = r->subject_email;
    t->tlogs = rt->logs;
    t->ntlogs = r->nrekor + nroot;
    if (root != NULL) {
        t->ctlogs = root->ctlogs;
        t->nctlogs = root->nctlogs;
        t->tsas = root->tsas;
        t->ntsas = root->ntsas;
    }
    t->require_tlog = r->nrekor > 0 || r->fulcio_cas != NULL;
    return 0;
}

static int accept_bundle(const verify_policy *p, const vreq *r, const vref *image,
                         const uint8_t digest[32], const verify_buf *b, int64_t now, vfail *f)
{
    if (r->has_pki)
        return vfail_set(f, VERIFY_DENIED_UNSUPPORTED,
                         "pki requirements accept cosign .sig signatures only, not bundles");
    req_trust rt;
    if (build_trust(p, r, &rt, f) != 0)
        return -1;
    vartifact a = {.md = EVP_sha256(), .dlen = VERIFY_DIGEST_LEN};
    memcpy(a.digest, digest, VERIFY_DIGEST_LEN);
    vbundle_out out;
    int rc = vbundle_verify(b->data, b->len, &rt.t, &a, now, &out, f);
    free(rt.logs);
    if (rc != 0)
        return -1;
    if (!out.is_dsse)
        return vfail_set(f, VERIFY_DENIED_IDENTITY,
                         "bundle names no image (a message signature, not an in-toto statement)");
    /* cosign v3 names no subject: the bundle claims the image it hangs from */
    char claimed[VERIFY_REF_MAX + 300];
    if (out.subject_name[0] != '\0')
        snprintf(claimed, sizeof claimed, "%s", out.subject_name);
    else
        vref_string(image, claimed, sizeof claimed);
    if (!videntity_matches(&r->identity, image, claimed))
        return vfail_set(f, VERIFY_DENIED_IDENTITY,
                         "bundle for identity \"%s\"%s is not accepted for %s", claimed,
                         out.subject_name[0] ? "" : " (no subject name: the image itself)",
                         image->name);
    return 0;
}

/* ---- evaluation ---- */

typedef struct {
    size_t rejected, ignored;
    verify_reason first;
    char text[VERIFY_TEXT_MAX];
} rejections;

static void note_rejection(rejections *rj, const char *what, size_t i, const vfail *f)
{
    if (rj->rejected++ == 0)
        rj->first = f->reason;
    size_t used = strlen(rj->text);
    if (used + 1 < sizeof rj->text)
        vtrunc(rj->text + used, sizeof rj->text - used, "%s%s %zu: %s", used ? "; " : "", what,
               i + 1, f->text);
}

static bool is_simplesigning(const verify_cosign_sig *s)
{
    return s->media_type == NULL ||
           vmem_eq(s->media_type, s->media_type_len, VERIFY_SIMPLESIGNING_MEDIA_TYPE,
                   strlen(VERIFY_SIMPLESIGNING_MEDIA_TYPE));
}

static int requirement_satisfied(const verify_policy *p, const vreq *r, const vref *image,
                                 const verify_image *img, const verify_cosign_sig *sigs,
                                 size_t nsigs, const verify_buf *bundles, size_t nbundles,
                                 int64_t now, vfail *f)
{
    rejections rj = {0};
    for (size_t i = 0; i < nsigs; i++) {
        vfail one = {0};
        if (!is_simplesigning(&sigs[i]))
            rj.ignored++;
        else if (accept_sig(p, r, image, img->manifest_digest, &sigs[i], now, &one) == 0)
            return 0;
        else
            note_rejection(&rj, "signature", i, &one);
    }
    for (size_t i = 0; i < nbundles; i++) {
        vfail one = {0};
        if (accept_bundle(p, r, image, img->manifest_digest, &bundles[i], now, &one) == 0)
            return 0;
        note_rejection(&rj, "bundle", i, &one);
    }
    if (rj.rejected == 0)
        return vfail_set(f, VERIFY_DENIED_NO_SIGNATURE,
                         "a signature was required, but no signature exists (%zu non-signature "
                         "attachments ignored)",
                         rj.ignored);
    if (rj.rejected == 1)
        return vfail_set(f, rj.first, "%s", rj.text);
    return vfail_set(f, rj.first, "none of the %zu signatures was accepted: %s", rj.rejected,
                     rj.text);
}

static int evaluate(const verify_policy *p, const verify_image *img, const verify_cosign_sig *sigs,
                    size_t nsigs, const verify_buf *bundles, size_t nbundles, int64_t now,
                    const vscope **scope, vfail *f)
{
    vref image;
    if (vref_image(img->registry, img->repository, img->tag, img->manifest_digest, &image) != 0)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "invalid image name %s/%s",
                         img->registry != NULL ? img->registry : "",
                         img->repository != NULL ? img->repository : "");
    const vscope *s = vpolicy_lookup(p, &image);
    *scope = s;
    for (size_t i = 0; i < s->n; i++) {
        const vreq *r = &s->reqs[i];
        if (r->type == REQ_REJECT)
            return vfail_set(f, VERIFY_DENIED_REJECTED, "policy rejects images in scope \"%s\"",
                             s->scope != NULL ? s->scope : "default");
        if (r->type == REQ_SIGSTORE &&
            requirement_satisfied(p, r, &image, img, sigs, nsigs, bundles, nbundles, now, f) != 0)
            return -1;
    }
    return 0;
}

int verify_image_evaluate(const verify_policy *p, const verify_image *img,
                          const verify_cosign_sig *sigs, size_t nsigs, const verify_buf *bundles,
                          size_t nbundles, int64_t now, verify_verdict *out)
{
    vfail f = {0};
    const vscope *scope = NULL;
    if (p == NULL || img == NULL) {
        vfail_set(&f, VERIFY_DENIED_INTERNAL, "no policy or image");
        vfail_to_verdict(&f, out);
        return 0;
    }
    if (evaluate(p, img, sigs, nsigs, bundles, nbundles, now, &scope, &f) != 0) {
        vfail_to_verdict(&f, out);
        return 0;
    }
    const char *name = scope->scope == NULL ? "default"
                       : scope->scope[0]    ? scope->scope
                                            : "docker \"\"";
    bool any_sig = false;
    for (size_t i = 0; i < scope->n; i++)
        any_sig = any_sig || scope->reqs[i].type == REQ_SIGSTORE;
    verdict_allow(out, "allowed by scope %s (%s)", name,
                  any_sig ? "signature verified" : "insecureAcceptAnything");
    return 1;
}
