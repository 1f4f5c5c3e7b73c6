/*
 * trust.c — trust decisions for the daemon (see trust.h).
 *
 * How it works. A verdict table (buckets of entries keyed by text) records,
 * per policy generation, what is decided and what is being decided. An
 * event loop asking about an undecided key adds its wake event to the
 * entry and, if it is the first to ask, queues a job on the verifier
 * thread (a writer.h job thread: FIFO, may block). The job gathers the
 * evidence through the upstream client, waiting on a condition variable
 * (the verifier thread may block; the loops never do), caching what it
 * fetched, and falling back to the cache when the upstream cannot answer;
 * then it asks verify.h, stores the verdict if the generation is still
 * current, and wakes every waiter, which asks again and now gets the
 * answer from the table. A question whose verdict is in the table is
 * answered from it first (pending_peek), before the policy's scope lookup:
 * the table only holds verdicts of the current policy, so that is the
 * cached-manifest fast path.
 *
 * Stored verdicts (see trust.h): policy_load hashes what verdicts depend
 * on into policy_ref.hash; the first asker of an undecided key
 * (start_decision) looks the cache's verdicts up and, if one may be
 * reused (stored_usable), decides the table entry from it — its own wait
 * ends at once — instead of queuing a job; every job's verdict is stored
 * (store_verdict) unless it rests on a passing failure (job.transient).
 * Counters: sluice_trust_verifications_total (jobs run) and
 * sluice_trust_verdicts_reused_total (decisions taken from the cache).
 *
 * `sluice verify REF` asks differently: trust_find_manifest and
 * trust_decide_manifest run the same fetching and evaluation on the
 * caller's thread, without the table, and report what they found through
 * a note callback (job.note; NULL for the daemon's jobs).
 *
 * Manifest verdicts: the manifest's own signatures (.sig layers, Sigstore
 * bundles among its referrers); failing those, when asked by digest, an
 * allowed parent index in the same repository (cosign signs the index
 * that platform manifests hang from). Signature artifacts are evidence and
 * always allowed. Blob verdicts: any referencing manifest allowed
 * (cache_ref_list), plus, in module scopes, the module signature.
 */
#include "trust.h"

#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blobs.h"
#include "log.h"
#include "metrics.h"
#include "pending.h"
#include "transfer.h"
#include "upstream.h"
#include "verify.h"
#include "writer.h"

#define MAX_SIG_BYTES (4u << 20)
#define MAX_MODULE_BYTES (512u << 20)
#define MAX_PARENTS 16
#define MAX_CERT_FILE (1u << 20)
#define TRUST_HASH_DOMAIN "sluice-trust-verdicts-v1"
#define BUNDLE_PREFIX "application/vnd.dev.sigstore.bundle"
#define MANIFEST_ACCEPT                                                                            \
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "        \
    "application/vnd.docker.distribution.manifest.v2+json, "                                       \
    "application/vnd.docker.distribution.manifest.list.v2+json"

typedef struct policy_ref {
    atomic_int refs;
    verify_policy *policy; /* NULL: accept anything */
    verify_certs *module_certs;
    char **scopes;
    size_t nscopes;
    uint8_t hash[32]; /* policy, trust material and module settings: keys stored verdicts */
} policy_ref;

struct trust {
    daemon_ctx *d;
    writer *verifier;
    pthread_mutex_t mu; /* guards cur */
    policy_ref *cur;
    pending_table *verdicts;
    atomic_int open; /* cur has no policy and no module scopes: everything passes */
};

typedef enum { JOB_MANIFEST, JOB_MODULE } job_kind;

typedef struct job {
    trust *t;
    job_kind kind;
    uint64_t generation;
    policy_ref *pol;
    const config_upstream *up;
    char key[700];
    char repo[OCI_NAME_MAX + 1];
    char repo_key[600];
    char registry[256];
    char tag[OCI_TAG_MAX + 1];
    int has_tag;
    uint8_t digest[32];
    int transient;      /* the verdict rests on a passing failure: do not store it */
    trust_note_fn note; /* sluice verify: hears the explanation; NULL in the daemon */
    void *note_arg;
} job;

/* ---------- policy references ---------- */

static void policy_unref(policy_ref *p)
{
    if (!p || atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    if (p->policy)
        verify_policy_free(p->policy);
    if (p->module_certs)
        verify_certs_free(p->module_certs);
    for (size_t i = 0; i < p->nscopes; i++)
        free(p->scopes[i]);
    free(p->scopes);
    free(p);
}

static int split_words(const char *s, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!s)
        return 0;
    char *copy = strdup(s), *save = NULL;
    if (!copy)
        return -1;
    for (char *w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        char **grown = realloc(*out, (*n + 1) * sizeof(char *));
        if (!grown || !(grown[*n] = strdup(w))) {
            free(grown ? grown : *out);
            free(copy);
            return -1;
        }
        *out = grown;
        (*n)++;
    }
    free(copy);
    return 0;
}

/* Hashes n bytes with their length first, so chunks cannot run together. */
static void hash_chunk(verify_hasher *h, const void *p, size_t n)
{
    uint64_t len = n;
    verify_hasher_update(h, &len, sizeof(len));
    verify_hasher_update(h, p, n);
}

/* A certificate file's bytes (bounded); NULL with err set. */
static char *read_cert_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = f ? malloc(MAX_CERT_FILE) : NULL;
    size_t n = buf ? fread(buf, 1, MAX_CERT_FILE, f) : 0;
    int bad = !buf || ferror(f) || n == MAX_CERT_FILE;
    if (f)
        fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: %s", path, !f ? strerror(errno) : "unreadable or too large");
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Loads the module certificates, hashing each file's bytes into h. */
static int load_module_certs(policy_ref *p, const config *cfg, verify_hasher *h, char *err,
                             size_t errlen)
{
    char **files;
    size_t n;
    if (split_words(cfg->module_certs, &files, &n) != 0)
        return -1;
    int rc = 0;
    if (n)
        p->module_certs = verify_certs_new();
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t len = 0;
        char *bytes = read_cert_file(files[i], &len, err, errlen), why[256];
        rc = bytes ? verify_certs_add(p->module_certs, bytes, len, why, sizeof(why)) : -1;
        if (bytes && rc != 0)
            snprintf(err, errlen, "%s: %s", files[i], why);
        if (bytes)
            hash_chunk(h, bytes, len);
        free(bytes);
    }
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);
    return rc;
}

/* What p's verdicts depend on besides the evidence: the policy (its hash
 * covers its trust material, trusted root and verify.h's revision) and the
 * module scopes; the module certificates were hashed into h as loaded. */
static void finish_hash(policy_ref *p, verify_hasher *h)
{
    uint8_t ph[VERIFY_DIGEST_LEN] = {0};
    if (p->policy)
        verify_policy_hash(p->policy, ph);
    hash_chunk(h, ph, p->policy ? sizeof(ph) : 0);
    for (size_t i = 0; i < p->nscopes; i++)
        hash_chunk(h, p->scopes[i], strlen(p->scopes[i]));
    verify_hasher_final(h, p->hash);
}

static policy_ref *policy_load(const config *cfg, char *err, size_t errlen)
{
    policy_ref *p = calloc(1, sizeof(*p));
    verify_hasher *h = verify_hasher_new();
    if (!p || !h)
        abort();
    atomic_init(&p->refs, 1);
    hash_chunk(h, TRUST_HASH_DOMAIN, strlen(TRUST_HASH_DOMAIN));
    if (cfg->policy) {
        verify_policy_options opts = {.trusted_root_path = cfg->trusted_root};
        p->policy = verify_policy_load(cfg->policy, &opts, err, errlen);
        if (!p->policy)
            goto fail;
    }
    if (split_words(cfg->module_scopes, &p->scopes, &p->nscopes) != 0 ||
        load_module_certs(p, cfg, h, err, errlen) != 0)
        goto fail;
    if (p->nscopes && !p->module_certs) {
        snprintf(err, errlen, "[trust] module_scopes needs module_certs");
        goto fail;
    }
    finish_hash(p, h);
    verify_hasher_free(h);
    return p;
fail:
    verify_hasher_free(h);
    policy_unref(p);
    return NULL;
}

static policy_ref *current_policy(trust *t)
{
    pthread_mutex_lock(&t->mu);
    policy_ref *p = t->cur;
    atomic_fetch_add(&p->refs, 1);
    pthread_mutex_unlock(&t->mu);
    return p;
}

/* ---------- fetching on the verifier thread ---------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    upstream_result result;
    upstream_response resp;
    char *body;
    size_t len, max;
} sync_fetch;

static int sf_data(void *arg, const void *data, size_t n)
{
    sync_fetch *f = arg;
    if (f->len + n > f->max)
        return 1; /* too large: truncated, so its digest check fails */
    char *nb = realloc(f->body, f->len + n + 1);
    if (!nb)
        abort();
    memcpy(nb + f->len, data, n);
    f->body = nb;
    f->len += n;
    nb[f->len] = 0;
    return 1;
}

static void sf_done(void *arg, upstream_result result, const upstream_response *resp)
{
    sync_fetch *f = arg;
    pthread_mutex_lock(&f->mu);
    f->result = result;
    f->resp = *resp;
    f->done = 1;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* GETs path from the upstream and waits. Returns the body (malloc'd, NUL
 * terminated) in *body when the result is UPSTREAM_OK. */
static upstream_result fetch_sync(trust *t, const job *j, const char *path, const char *accept,
                                  char **body, size_t *len, upstream_response *resp)
{
    static const upstream_callbacks cb = {NULL, sf_data, sf_done};
    sync_fetch f = {.max = MAX_SIG_BYTES};
    pthread_mutex_init(&f.mu, NULL);
    pthread_cond_init(&f.cv, NULL);
    upstream_request req = {.conf = j->up, .accept = accept};
    snprintf(req.path, sizeof(req.path), "%s", path);
    snprintf(req.repository, sizeof(req.repository), "%s", j->repo);
    upstream_submit(t->d->upstream, &req, &cb, &f, NULL);
    pthread_mutex_lock(&f.mu);
    while (!f.done)
        pthread_cond_wait(&f.cv, &f.mu);
    pthread_mutex_unlock(&f.mu);
    pthread_mutex_destroy(&f.mu);
    pthread_cond_destroy(&f.cv);
    if (resp)
        *resp = f.resp;
    if (f.result != UPSTREAM_OK) {
        free(f.body);
        return f.result;
    }
    *body = f.body ? f.body : calloc(1, 1);
    *len = f.len;
    return UPSTREAM_OK;
}

typedef struct {
    char *data;
    size_t len;
} buf;

static void media_type_of(const upstream_response *resp, const char *body, size_t len, char *out,
                          size_t outlen)
{
    size_t n = strcspn(resp->content_type, "; \t");
    if (n && n < outlen) {
        memcpy(out, resp->content_type, n);
        out[n] = 0;
        return;
    }
    json_t *doc = json_loadb(body, len, 0, NULL);
    snprintf(out, outlen, "%s",
             json_string_value(json_object_get(doc, "mediaType"))
                 ? json_string_value(json_object_get(doc, "mediaType"))
                 : "application/vnd.oci.image.manifest.v1+json");
    json_decref(doc);
}

/* A manifest from the cache: by tag (tag != NULL) or by digest. */
static int cached_manifest(trust *t, const job *j, const char *tag, const uint8_t *digest,
                           uint8_t out_digest[32], buf *out)
{
    cache_snapshot *s = cache_snapshot_new(t->d->cache);
    if (!s)
        return -1;
    uint8_t d[32];
    uint64_t confirmed;
    const char *mt;
    const void *body;
    size_t len;
    int rc = -1;
    if (tag ? cache_tag_get(s, j->repo_key, tag, d, &confirmed) == CACHE_OK
            : (memcpy(d, digest, 32), 1)) {
        if (cache_manifest_get(s, d, &mt, &body, &len) == CACHE_OK &&
            verify_digest_check(body, len, d) == VERIFY_OK && (out->data = malloc(len + 1))) {
            memcpy(out->data, body, len);
            out->data[len] = 0;
            out->len = len;
            memcpy(out_digest, d, 32);
            rc = 0;
        }
    }
    cache_snapshot_unref(s);
    return rc;
}

/* Fetches a manifest (by tag, or by digest) from the upstream, checks it
 * and caches it; falls back to the cache when the upstream cannot answer.
 * 0 with *out, 1 when it does not exist, -1 on failure. */
static int get_manifest(trust *t, const job *j, const char *tag, const uint8_t *digest,
                        uint8_t out_digest[32], buf *out)
{
    char path[1024], hex[VERIFY_DIGEST_TEXT_LEN];
    if (!tag)
        verify_digest_format(digest, hex);
    snprintf(path, sizeof(path), "/v2/%s/manifests/%s", j->repo, tag ? tag : hex);
    upstream_response resp;
    char *body = NULL;
    size_t len = 0;
    upstream_result r = fetch_sync(t, j, path, MANIFEST_ACCEPT, &body, &len, &resp);
    if (r == UPSTREAM_NOT_FOUND)
        return 1;
    if (r != UPSTREAM_OK)
        return cached_manifest(t, j, tag, digest, out_digest, out);
    uint8_t got[32];
    verify_sha256(body, len, got);
    if (digest && memcmp(got, digest, 32) != 0) {
        free(body);
        return -1;
    }
    char mt[128];
    media_type_of(&resp, body, len, mt, sizeof(mt));
    transfer_store_manifest(t->d->cache, j->repo_key, tag, got, mt, body, len);
    memcpy(out_digest, got, 32);
    out->data = body;
    out->len = len;
    return 0;
}

static int cached_blob(trust *t, const uint8_t digest[32], size_t max, buf *out)
{
    return blobs_load(t->d->cache, digest, max, &out->data, &out->len);
}

/* A small blob (signature payload, bundle): cache first, else upstream. */
static int get_blob(trust *t, const job *j, const uint8_t digest[32], buf *out)
{
    if (cached_blob(t, digest, MAX_SIG_BYTES, out) == 0)
        return 0;
    char path[1024], hex[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(digest, hex);
    snprintf(path, sizeof(path), "/v2/%s/blobs/%s", j->repo, hex);
    char *body = NULL;
    size_t len = 0;
    if (fetch_sync(t, j, path, NULL, &body, &len, NULL) != UPSTREAM_OK)
        return -1;
    if (verify_digest_check(body, len, digest) != VERIFY_OK) {
        free(body);
        return -1;
    }
    blobs_store(t->d->cache, digest, body, len);
    out->data = body;
    out->len = len;
    return 0;
}

/* ---------- gathering evidence ---------- */

typedef struct {
    verify_cosign_sig *sigs;
    size_t nsigs;
    verify_buf *bundles;
    size_t nbundles;
    buf *owned; /* everything the above point into */
    size_t nowned, capowned;
    json_t **docs;
    size_t ndocs;
} evidence;

static void *keep(evidence *ev, buf b)
{
    if (ev->nowned == ev->capowned) {
        ev->capowned = ev->capowned ? ev->capowned * 2 : 8;
        ev->owned = realloc(ev->owned, ev->capowned * sizeof(buf));
        if (!ev->owned)
            abort();
    }
    ev->owned[ev->nowned++] = b;
    return b.data;
}

static void evidence_free(evidence *ev)
{
    for (size_t i = 0; i < ev->nowned; i++)
        free(ev->owned[i].data);
    for (size_t i = 0; i < ev->ndocs; i++)
        json_decref(ev->docs[i]);
    free(ev->owned);
    free(ev->docs);
    free(ev->sigs);
    free(ev->bundles);
}

static json_t *keep_doc(evidence *ev, const buf *b)
{
    json_t *doc = json_loadb(b->data, b->len, 0, NULL);
    if (!doc)
        return NULL;
    json_t **grown = realloc(ev->docs, (ev->ndocs + 1) * sizeof(json_t *));
    if (!grown)
        abort();
    ev->docs = grown;
    ev->docs[ev->ndocs++] = doc;
    return doc;
}

static const char *ann(json_t *layer, const char *key, size_t *len)
{
    json_t *v = json_object_get(json_object_get(layer, "annotations"), key);
    *len = json_string_length(v);
    return json_string_value(v);
}

static void add_sig_layer(trust *t, const job *j, evidence *ev, json_t *layer)
{
    const char *dtext = json_string_value(json_object_get(layer, "digest"));
    uint8_t d[32];
    buf payload = {0};
    if (!dtext || verify_digest_parse(dtext, strlen(dtext), d) != VERIFY_OK ||
        get_blob(t, j, d, &payload) != 0)
        return;
    ev->sigs = realloc(ev->sigs, (ev->nsigs + 1) * sizeof(*ev->sigs));
    if (!ev->sigs)
        abort();
    verify_cosign_sig *s = &ev->sigs[ev->nsigs++];
    memset(s, 0, sizeof(*s));
    json_t *mt = json_object_get(layer, "mediaType");
    s->media_type = json_string_value(mt);
    s->media_type_len = json_string_length(mt);
    s->payload = keep(ev, payload);
    s->payload_len = payload.len;
    s->signature = ann(layer, "dev.cosignproject.cosign/signature", &s->signature_len);
    s->certificate = ann(layer, "dev.sigstore.cosign/certificate", &s->certificate_len);
    s->chain = ann(layer, "dev.sigstore.cosign/chain", &s->chain_len);
    s->rekor_bundle = ann(layer, "dev.sigstore.cosign/bundle", &s->rekor_bundle_len);
}

/* The cosign "sha256-<hex>.sig" manifest's layers. */
static void gather_sig_tag(trust *t, const job *j, const uint8_t digest[32], evidence *ev)
{
    char hex[VERIFY_DIGEST_TEXT_LEN], tag[OCI_TAG_MAX + 1];
    verify_digest_format(digest, hex);
    snprintf(tag, sizeof(tag), "sha256-%s.sig", hex + 7);
    uint8_t sd[32];
    buf m = {0};
    if (get_manifest(t, j, tag, NULL, sd, &m) != 0)
        return;
    json_t *doc = keep_doc(ev, &m);
    free(m.data);
    size_t i;
    json_t *layer;
    json_array_foreach(json_object_get(doc, "layers"), i, layer) add_sig_layer(t, j, ev, layer);
}

static void add_bundle(trust *t, const job *j, evidence *ev, json_t *desc)
{
    const char *at = json_string_value(json_object_get(desc, "artifactType"));
    const char *dtext = json_string_value(json_object_get(desc, "digest"));
    uint8_t md[32], got[32];
    buf m = {0};
    if (!at || strncmp(at, BUNDLE_PREFIX, strlen(BUNDLE_PREFIX)) != 0 || !dtext ||
        verify_digest_parse(dtext, strlen(dtext), md) != VERIFY_OK ||
        get_manifest(t, j, NULL, md, got, &m) != 0)
        return;
    json_t *doc = keep_doc(ev, &m);
    free(m.data);
    const char *ld = json_string_value(
        json_object_get(json_array_get(json_object_get(doc, "layers"), 0), "digest"));
    uint8_t bd[32];
    buf bundle = {0};
    if (!ld || verify_digest_parse(ld, strlen(ld), bd) != VERIFY_OK ||
        get_blob(t, j, bd, &bundle) != 0)
        return;
    ev->bundles = realloc(ev->bundles, (ev->nbundles + 1) * sizeof(*ev->bundles));
    if (!ev->bundles)
        abort();
    ev->bundles[ev->nbundles].data = keep(ev, bundle);
    ev->bundles[ev->nbundles++].len = bundle.len;
}

/* Sigstore bundles among the referrers: the API, else the fallback tag. */
static void gather_bundles(trust *t, const job *j, const uint8_t digest[32], evidence *ev)
{
    char hex[VERIFY_DIGEST_TEXT_LEN], path[1024], tag[OCI_TAG_MAX + 1];
    verify_digest_format(digest, hex);
    snprintf(path, sizeof(path), "/v2/%s/referrers/%s", j->repo, hex);
    buf idx = {0};
    json_t *doc = NULL;
    if (fetch_sync(t, j, path, "application/vnd.oci.image.index.v1+json", &idx.data, &idx.len,
                   NULL) == UPSTREAM_OK)
        doc = keep_doc(ev, &idx);
    free(idx.data);
    if (!json_is_array(json_object_get(doc, "manifests"))) {
        snprintf(tag, sizeof(tag), "sha256-%s", hex + 7);
        uint8_t id[32];
        buf m = {0};
        if (get_manifest(t, j, tag, NULL, id, &m) != 0)
            return;
        doc = keep_doc(ev, &m);
        free(m.data);
    }
    size_t i;
    json_t *desc;
    json_array_foreach(json_object_get(doc, "manifests"), i, desc) add_bundle(t, j, ev, desc);
}

/* ---------- explaining (sluice verify) ---------- */

static void notef(const job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notef(const job *j, const char *fmt, ...)
{
    if (!j->note)
        return;
    char line[2 * VERIFY_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    j->note(j->note_arg, line);
}

/* How one signature (or bundle) fares on its own: verify.h's verdict for it
 * alone, without the "signature 1: " it names a lone signature by. */
static void alone(const job *j, const verify_image *img, const verify_cosign_sig *sig,
                  const verify_buf *bundle, char *out, size_t outlen)
{
    verify_verdict v = {0};
    verify_image_evaluate(j->pol->policy, img, sig, sig ? 1 : 0, bundle, bundle ? 1 : 0,
                          (int64_t)time(NULL), &v);
    const char *text = v.text, *lone = sig ? "signature 1: " : "bundle 1: ";
    if (strncmp(text, lone, strlen(lone)) == 0)
        text += strlen(lone);
    if (v.allowed)
        snprintf(out, outlen, "accepted");
    else
        snprintf(out, outlen, "rejected (%s): %s", verify_reason_name(v.reason), text);
}

static void explain_sig(const job *j, const verify_image *img, const verify_cosign_sig *s, size_t i)
{
    char fate[VERIFY_TEXT_MAX + 64], err[256];
    size_t n = strlen(VERIFY_SIMPLESIGNING_MEDIA_TYPE);
    if (s->media_type && (s->media_type_len != n ||
                          memcmp(s->media_type, VERIFY_SIMPLESIGNING_MEDIA_TYPE, n) != 0)) {
        notef(j, "signature %zu: a %.*s layer, not a signature: ignored", i + 1,
              (int)s->media_type_len, s->media_type);
        return;
    }
    verify_payload pl;
    alone(j, img, s, NULL, fate, sizeof(fate));
    const char *by = s->certificate ? "certificate" : "key";
    const char *set = s->rekor_bundle ? " with a Rekor SET" : "";
    if (verify_payload_parse(s->payload, s->payload_len, &pl, err, sizeof(err)) != 0)
        notef(j, "signature %zu: by %s%s, unreadable payload (%s): %s", i + 1, by, set, err, fate);
    else
        notef(j, "signature %zu: by %s%s, signs %s as %s: %s", i + 1, by, set, pl.manifest_digest,
              pl.docker_reference, fate);
}

static void explain_bundle(const job *j, const verify_image *img, const verify_buf *b, size_t i)
{
    char fate[VERIFY_TEXT_MAX + 64];
    json_t *doc = json_loadb((const char *)b->data, b->len, 0, NULL);
    const char *mt = json_string_value(json_object_get(doc, "mediaType"));
    alone(j, img, NULL, b, fate, sizeof(fate));
    notef(j, "bundle %zu: %s, %zu bytes: %s", i + 1, mt ? mt : "no mediaType", b->len, fate);
    json_decref(doc);
}

/* What was found for img and how each piece fares on its own. */
static void explain(const job *j, const verify_image *img, const evidence *ev)
{
    char hex[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(img->manifest_digest, hex);
    if (ev->nsigs)
        notef(j, "manifest %s: %zu layer%s in its cosign tag sha256-%s.sig", hex, ev->nsigs,
              ev->nsigs == 1 ? "" : "s", hex + 7);
    else
        notef(j, "manifest %s: no cosign tag sha256-%s.sig (or no layer in it)", hex, hex + 7);
    notef(j, "manifest %s: %zu Sigstore bundle%s among its referrers", hex, ev->nbundles,
          ev->nbundles == 1 ? "" : "s");
    for (size_t i = 0; i < ev->nsigs; i++)
        explain_sig(j, img, &ev->sigs[i], i);
    for (size_t i = 0; i < ev->nbundles; i++)
        explain_bundle(j, img, &ev->bundles[i], i);
}

/* ---------- verdicts ---------- */

static int is_evidence_type(const char *mt)
{
    return mt && (strcmp(mt, VERIFY_SIMPLESIGNING_MEDIA_TYPE) == 0 ||
                  strncmp(mt, BUNDLE_PREFIX, strlen(BUNDLE_PREFIX)) == 0 ||
                  strncmp(mt, "application/vnd.in-toto", 23) == 0 ||
                  strncmp(mt, "application/vnd.dev.cosign", 26) == 0);
}

/* A signature artifact: every layer (at least one) is signature material. */
static int manifest_is_evidence(const buf *m)
{
    json_t *doc = json_loadb(m->data, m->len, 0, NULL);
    json_t *layers = json_object_get(doc, "layers");
    int all_layers = json_array_size(layers) > 0;
    size_t i;
    json_t *l;
    json_array_foreach(layers, i, l)
    {
        all_layers =
            all_layers && is_evidence_type(json_string_value(json_object_get(l, "mediaType")));
    }
    int yes =
        all_layers || is_evidence_type(json_string_value(json_object_get(doc, "artifactType")));
    json_decref(doc);
    return yes;
}

static int evaluate_own(trust *t, const job *j, const uint8_t digest[32], verify_verdict *v)
{
    uint8_t got[32];
    buf m = {0};
    if (cached_manifest(t, j, NULL, digest, got, &m) == 0 ||
        get_manifest(t, j, NULL, digest, got, &m) == 0) {
        int ev_only = manifest_is_evidence(&m);
        free(m.data);
        if (ev_only) {
            v->allowed = 1;
            snprintf(v->text, sizeof(v->text), "signature artifact");
            return 1;
        }
    }
    evidence ev = {0};
    gather_sig_tag(t, j, digest, &ev);
    gather_bundles(t, j, digest, &ev);
    verify_image img = {
        .registry = j->registry, .repository = j->repo, .tag = j->has_tag ? j->tag : NULL};
    memcpy(img.manifest_digest, digest, 32);
    int ok = verify_image_evaluate(j->pol->policy, &img, ev.sigs, ev.nsigs, ev.bundles, ev.nbundles,
                                   (int64_t)time(NULL), v);
    if (j->note)
        explain(j, &img, &ev);
    evidence_free(&ev);
    return ok;
}

typedef struct {
    uint8_t digests[MAX_PARENTS][32];
    size_t n;
} parents;

static int collect_parent(void *arg, const uint8_t manifest[32])
{
    parents *p = arg;
    if (p->n < MAX_PARENTS)
        memcpy(p->digests[p->n++], manifest, 32);
    return p->n >= MAX_PARENTS;
}

/* By digest: an allowed index of the same repository that lists it. */
static int evaluate_via_parents(trust *t, const job *j, verify_verdict *v)
{
    parents p = {.n = 0};
    cache_snapshot *s = cache_snapshot_new(t->d->cache);
    if (s) {
        cache_ref_list(s, j->repo_key, j->digest, collect_parent, &p);
        cache_snapshot_unref(s);
    }
    for (size_t i = 0; i < p.n; i++) {
        verify_verdict pv = {0};
        if (evaluate_own(t, j, p.digests[i], &pv)) {
            char hex[VERIFY_DIGEST_TEXT_LEN];
            verify_digest_format(p.digests[i], hex);
            v->allowed = 1;
            snprintf(v->text, sizeof(v->text), "listed by allowed index %s", hex);
            return 1;
        }
    }
    return 0;
}

static void evaluate_manifest(trust *t, job *j, verify_verdict *v)
{
    if (evaluate_own(t, j, j->digest, v))
        return;
    if (!j->has_tag)
        evaluate_via_parents(t, j, v);
}

static void evaluate_module(trust *t, job *j, verify_verdict *v)
{
    buf b = {0};
    if (cached_blob(t, j->digest, MAX_MODULE_BYTES, &b) != 0) {
        v->allowed = 0;
        j->transient = 1;
        snprintf(v->text, sizeof(v->text), "blob not readable from the cache");
        return;
    }
    if (!verify_module_is_module((const uint8_t *)b.data, b.len)) {
        v->allowed = 1;
        snprintf(v->text, sizeof(v->text), "not a kernel module");
    } else {
        verify_module_info info;
        verify_module_verify((const uint8_t *)b.data, b.len, j->pol->module_certs, &info, v);
    }
    free(b.data);
}

/* ---------- verdicts kept in the cache ---------- */

/* Where a verdict is stored: manifests per repository and tag, modules
 * (not tied to a repository) under "" and "". */
static const char *store_repo(const job *j)
{
    return j->kind == JOB_MODULE ? "" : j->repo_key;
}

static void store_verdict(trust *t, const job *j, const verify_verdict *v)
{
    if (j->transient)
        return;
    cache_verdict cv = {.allowed = v->allowed, .decided_at = (uint64_t)time(NULL)};
    snprintf(cv.reason, sizeof(cv.reason), "%s", v->text);
    cache_verdict_put(t->d->cache, j->pol->hash, store_repo(j), j->has_tag ? j->tag : "", j->digest,
                      &cv);
}

static int stored_get(trust *t, const policy_ref *p, const job *j, cache_verdict *out)
{
    cache_snapshot *s = cache_snapshot_new(t->d->cache);
    int found = s && cache_verdict_get(s, p->hash, store_repo(j), j->has_tag ? j->tag : "",
                                       j->digest, out) == CACHE_OK;
    if (s)
        cache_snapshot_unref(s);
    return found;
}

/* Whether a stored verdict may stand in for verifying again. An allowance
 * rests on a signature that verified, which more evidence cannot undo: it
 * stands while the policy hash is the same, unless the scope checks
 * certificates at the current time (pki). A denial may be lifted by
 * evidence published later (a signature pushed after its image), and a
 * pki allowance expires with its certificates: those stand for tag_ttl. */
static int stored_usable(trust *t, const cache_verdict *v, int checks_now)
{
    uint64_t now = (uint64_t)time(NULL), ttl = atomic_load(&t->d->tag_ttl);
    if (v->allowed && !checks_now)
        return 1;
    return v->decided_at <= now && now - v->decided_at < ttl;
}

static void decide(trust *t, job *j, const verify_verdict *v)
{
    pending_decide(t->verdicts, j->key, j->generation, v->allowed, v->text);
    if (!v->allowed)
        log_warn("trust", "denied: %s: %s", j->key, v->text);
    store_verdict(t, j, v);
}

static void run_job(cache *c, void *arg)
{
    (void)c;
    job *j = arg;
    verify_verdict v = {0};
    METRIC_ADD(trust_verifications, 1);
    if (j->kind == JOB_MANIFEST)
        evaluate_manifest(j->t, j, &v);
    else
        evaluate_module(j->t, j, &v);
    decide(j->t, j, &v);
    policy_unref(j->pol);
    free(j);
}

static void prune_job(cache *c, void *arg)
{
    uint64_t removed = 0;
    if (cache_verdict_prune(c, arg, &removed) == CACHE_OK && removed)
        log_info("trust", "dropped %llu stored verdicts of former policies",
                 (unsigned long long)removed);
    free(arg);
}

/* The daemon (the one with a cache writer) drops former policies'
 * verdicts; `sluice verify` with a policy of its own leaves them. */
static void prune_stored(trust *t, const policy_ref *p)
{
    uint8_t *keep = malloc(sizeof(p->hash));
    if (!keep)
        abort();
    memcpy(keep, p->hash, sizeof(p->hash));
    if (t->d->writer)
        writer_submit(t->verifier, prune_job, keep);
    else
        free(keep);
}

/* ---------- asking (any thread) ---------- */

static job *job_new(trust *t, job_kind kind, const config_upstream *up, const char *repo,
                    const char *tag, const uint8_t digest[32], const char *key)
{
    job *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    j->t = t;
    j->kind = kind;
    j->up = up;
    snprintf(j->key, sizeof(j->key), "%s", key);
    snprintf(j->repo, sizeof(j->repo), "%s", repo);
    transfer_repo_key(up, repo, j->repo_key, sizeof(j->repo_key));
    upstream_host_of(up->url, j->registry, sizeof(j->registry));
    if (tag) {
        j->has_tag = 1;
        snprintf(j->tag, sizeof(j->tag), "%s", tag);
    }
    memcpy(j->digest, digest, 32);
    return j;
}

typedef struct {
    trust *t;
    job_kind kind;
    const config_upstream *up;
    const char *repo, *tag, *key;
    const uint8_t *digest;
    int checks_now; /* the scope's verdicts depend on when they are made */
} make_args;

/* First to ask: decides from a usable stored verdict (a wait of w, if it
 * waits, ends at once), else queues the verification. */
static trust_state start_decision(trust *t, const make_args *a, uint64_t gen, pending_waiter *w,
                                  char *why, size_t whylen)
{
    job *j = job_new(t, a->kind, a->up, a->repo, a->tag, a->digest, a->key);
    j->generation = gen;
    j->pol = current_policy(t);
    cache_verdict v;
    if (stored_get(t, j->pol, j, &v) && stored_usable(t, &v, a->checks_now)) {
        METRIC_ADD(trust_verdicts_reused, 1);
        pending_decide(t->verdicts, a->key, gen, v.allowed, v.reason);
        snprintf(why, whylen, "%s", v.reason);
        policy_unref(j->pol);
        free(j);
        return w ? TRUST_PENDING : v.allowed ? TRUST_ALLOWED : TRUST_DENIED;
    }
    writer_submit(t->verifier, run_job, j);
    return TRUST_PENDING;
}

/* Looks the key up; starts the decision if nobody has. ALLOWED, DENIED or
 * PENDING. */
static trust_state ask(trust *t, const make_args *a, pending_waiter *w, char *why, size_t whylen)
{
    int allowed = 0;
    uint64_t gen = 0;
    switch (pending_ask(t->verdicts, a->key, w, &allowed, why, whylen, &gen)) {
    case PENDING_DONE:
        return allowed ? TRUST_ALLOWED : TRUST_DENIED;
    case PENDING_WAITING:
        return TRUST_PENDING;
    case PENDING_CLOSED:
        snprintf(why, whylen, "shutting down");
        return TRUST_DENIED;
    case PENDING_FIRST:
        break;
    }
    return start_decision(t, a, gen, w, why, whylen);
}

static int is_signature_tag(const char *tag)
{
    if (!tag || strncmp(tag, "sha256-", 7) != 0 || strspn(tag + 7, "0123456789abcdef") != 64)
        return 0;
    const char *rest = tag + 71;
    return !*rest || !strcmp(rest, ".sig") || !strcmp(rest, ".att") || !strcmp(rest, ".sbom");
}

/* The policy's word without looking at signatures: 1 accept, 0 reject,
 * -1 signatures needed (then *checks_now, if not NULL, says whether the
 * scope's verdicts depend on the time they are made). */
static int requirement(policy_ref *p, const config_upstream *up, const char *repo, const char *tag,
                       int *checks_now, char *why, size_t whylen)
{
    if (!p->policy)
        return 1;
    char registry[256];
    upstream_host_of(up->url, registry, sizeof(registry));
    verify_requirements req;
    if (verify_policy_requirements(p->policy, registry, repo, tag, &req) != 0) {
        snprintf(why, whylen, "%s/%s is not a valid image name for the policy", registry, repo);
        return 0;
    }
    if (req.rejects) {
        snprintf(why, whylen, "the policy rejects %s/%s (scope \"%s\")", registry, repo, req.scope);
        return 0;
    }
    if (checks_now)
        *checks_now = req.checks_now;
    return req.accept_anything ? 1 : -1;
}

/* Keys of the verdict table: "m|HOST/REPO|TAG|sha256:HEX" for manifests
 * ("@" for no tag), "b|HOST/REPO|sha256:HEX" for blob allowances,
 * "k|sha256:HEX" for module checks; repo_key and tag are left out when
 * NULL. Built by hand (one is made for every request while a policy is
 * on), truncated to keylen. */
static void verdict_key(const char *kind, const char *repo_key, const char *tag,
                        const uint8_t digest[32], char *key, size_t keylen)
{
    char hex[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(digest, hex);
    const char *parts[] = {kind, "|", repo_key, "|", tag, "|", hex};
    size_t n = 0;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]) && keylen; i++) {
        if (!parts[i] || (i % 2 == 1 && !parts[i - 1]))
            continue; /* a missing field and its separator */
        size_t len = strlen(parts[i]);
        if (len > keylen - 1 - n)
            len = keylen - 1 - n;
        memcpy(key + n, parts[i], len);
        n += len;
    }
    if (keylen)
        key[n] = 0;
}

trust_state trust_check_manifest(trust *t, const config_upstream *up, const char *repo,
                                 const char *tag, const uint8_t digest[32], pending_waiter *w,
                                 char *why, size_t whylen)
{
    if (atomic_load_explicit(&t->open, memory_order_acquire))
        return TRUST_ALLOWED; /* no lock on the hot path when nothing is enforced */
    if (is_signature_tag(tag))
        return TRUST_ALLOWED;
    char key[700];
    int allowed = 0, checks_now = 0;
    char repo_key[600];
    transfer_repo_key(up, repo, repo_key, sizeof(repo_key));
    verdict_key("m", repo_key, tag ? tag : "@", digest, key, sizeof(key));
    /* A verdict in the table was made under the current policy (a reload
     * empties the table under the same lock that swaps the policy), whose
     * scope for this image then required signatures: it still does. The
     * policy itself is only needed when there is no verdict yet. */
    if (pending_peek(t->verdicts, key, &allowed, why, whylen))
        return allowed ? TRUST_ALLOWED : TRUST_DENIED;
    policy_ref *p = current_policy(t);
    int r = !p->policy ? 1 : requirement(p, up, repo, tag, &checks_now, why, whylen);
    policy_unref(p);
    if (r >= 0)
        return r ? TRUST_ALLOWED : TRUST_DENIED;
    make_args a = {t, JOB_MANIFEST, up, repo, tag, key, digest, checks_now};
    return ask(t, &a, w, why, whylen);
}

static int in_module_scope(policy_ref *p, const char *repo_key)
{
    for (size_t i = 0; i < p->nscopes; i++) {
        size_t n = strlen(p->scopes[i]);
        if (strncmp(repo_key, p->scopes[i], n) == 0 && (repo_key[n] == 0 || repo_key[n] == '/'))
            return 1;
    }
    return 0;
}

static trust_blob_state module_check(trust *t, const config_upstream *up, const char *repo,
                                     const uint8_t digest[32], int complete, pending_waiter *w,
                                     char *why, size_t whylen)
{
    if (!complete)
        return TRUST_BLOB_NEEDS_BYTES;
    char key[700];
    verdict_key("k", NULL, NULL, digest, key, sizeof(key));
    make_args a = {t, JOB_MODULE, up, repo, NULL, key, digest, 0};
    trust_state st = ask(t, &a, w, why, whylen);
    return st == TRUST_ALLOWED  ? TRUST_BLOB_OK
           : st == TRUST_DENIED ? TRUST_BLOB_DENIED
                                : TRUST_BLOB_PENDING;
}

static trust_blob_state referencing_manifests(trust *t, const config_upstream *up, const char *repo,
                                              const char *repo_key, const uint8_t digest[32],
                                              pending_waiter *w, char *why, size_t whylen)
{
    parents p = {.n = 0};
    cache_snapshot *s = cache_snapshot_new(t->d->cache);
    if (s) {
        cache_ref_list(s, repo_key, digest, collect_parent, &p);
        cache_snapshot_unref(s);
    }
    int pending = 0;
    for (size_t i = 0; i < p.n; i++) {
        trust_state st = trust_check_manifest(t, up, repo, NULL, p.digests[i], w, why, whylen);
        if (st == TRUST_ALLOWED)
            return TRUST_BLOB_OK;
        pending |= st == TRUST_PENDING;
    }
    if (pending)
        return TRUST_BLOB_PENDING;
    if (!p.n)
        snprintf(why, whylen, "no manifest of %s known to reference this blob is allowed",
                 repo_key);
    return TRUST_BLOB_DENIED;
}

trust_blob_state trust_check_blob(trust *t, const config_upstream *up, const char *repo,
                                  const uint8_t digest[32], int complete, pending_waiter *w,
                                  char *why, size_t whylen)
{
    if (atomic_load_explicit(&t->open, memory_order_acquire))
        return TRUST_BLOB_OK;
    char repo_key[600];
    transfer_repo_key(up, repo, repo_key, sizeof(repo_key));
    policy_ref *p = current_policy(t);
    int r = requirement(p, up, repo, NULL, NULL, why, whylen);
    int modules = in_module_scope(p, repo_key);
    policy_unref(p);
    if (r == 0)
        return TRUST_BLOB_DENIED;
    if (r < 0) {
        /* An allowance follows from the allowed manifests that reference
         * the blob, which stand until the policy changes (the table is
         * emptied then): it is remembered; a denial is not (a manifest
         * that lifts it may arrive any time). */
        char key[700];
        verdict_key("b", repo_key, NULL, digest, key, sizeof(key));
        int allowed = 0;
        if (!pending_peek(t->verdicts, key, &allowed, NULL, 0) || !allowed) {
            uint64_t generation = pending_generation(t->verdicts);
            trust_blob_state st =
                referencing_manifests(t, up, repo, repo_key, digest, w, why, whylen);
            if (st != TRUST_BLOB_OK)
                return st;
            pending_remember(t->verdicts, key, generation, 1, "");
        }
    }
    return modules ? module_check(t, up, repo, digest, complete, w, why, whylen) : TRUST_BLOB_OK;
}

/* ---------- deciding on the calling thread (sluice verify) ---------- */

/* The cached tag, while younger than tag_ttl (served without asking). */
static int fresh_tag(trust *t, const job *j, uint8_t out[32])
{
    cache_snapshot *s = cache_snapshot_new(t->d->cache);
    if (!s)
        return -1;
    uint64_t confirmed = 0;
    const char *mt;
    const void *body;
    size_t len;
    int fresh = cache_tag_get(s, j->repo_key, j->tag, out, &confirmed) == CACHE_OK &&
                cache_manifest_get(s, out, &mt, &body, &len) == CACHE_OK &&
                (uint64_t)time(NULL) - confirmed < atomic_load(&t->d->tag_ttl);
    cache_snapshot_unref(s);
    return fresh ? 0 : -1;
}

int trust_find_manifest(trust *t, const config_upstream *up, const char *repo, const char *tag,
                        uint8_t digest[32])
{
    job *j = job_new(t, JOB_MANIFEST, up, repo, tag, digest, "");
    uint8_t got[32];
    buf m = {0};
    int rc = 0;
    if (tag && fresh_tag(t, j, got) != 0)
        rc = get_manifest(t, j, tag, NULL, got, &m);
    else if (!tag && cached_manifest(t, j, NULL, digest, got, &m) != 0)
        rc = get_manifest(t, j, NULL, digest, got, &m);
    if (rc == 0)
        memcpy(digest, got, 32);
    free(m.data);
    free(j);
    return rc;
}

static const char *scope_name(const verify_requirements *r)
{
    return r->is_global_default ? "default" : r->scope[0] ? r->scope : "docker \"\"";
}

static void note_scope(const job *j, const verify_requirements *r)
{
    const char *kinds = r->rejects            ? "reject"
                        : r->needs_signatures ? "sigstoreSigned"
                        : r->accept_anything  ? "insecureAcceptAnything"
                                              : "none";
    notef(j, "scope: %s (%zu requirement%s; decisive: %s)", scope_name(r), r->count,
          r->count == 1 ? "" : "s", kinds);
}

/* What the cache has stored for this question under this policy. */
static void note_stored(trust *t, const job *j)
{
    cache_verdict v;
    if (!j->note || !stored_get(t, j->pol, j, &v))
        return;
    char when[32] = "?";
    time_t at = (time_t)v.decided_at;
    struct tm tm;
    if (gmtime_r(&at, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    notef(j, "stored verdict under this policy (decided %s): %s%s%s", when,
          v.allowed ? "allowed" : "denied", v.allowed ? "" : ": ", v.allowed ? "" : v.reason);
}

/* Why the policy alone allows tag (NULL: by digest); req is the matched
 * scope, or NULL when there is no policy. */
static void allowed_why(const char *tag, const verify_requirements *req, verify_verdict *v)
{
    if (is_signature_tag(tag))
        snprintf(v->text, sizeof(v->text), "%s is a signature artifact's tag: always served", tag);
    else if (req)
        snprintf(v->text, sizeof(v->text), "scope %s accepts anything (insecureAcceptAnything)",
                 scope_name(req));
    else
        snprintf(v->text, sizeof(v->text), "no trust policy: accepting anything");
}

/* The policy's word before signatures, with requirement()'s decision:
 * 1 allowed, 0 denied, -1 signatures needed. */
static int decide_by_policy(const job *j, verify_verdict *v)
{
    const char *tag = j->has_tag ? j->tag : NULL;
    verify_requirements req;
    int named = j->pol->policy &&
                verify_policy_requirements(j->pol->policy, j->registry, j->repo, tag, &req) == 0;
    if (named)
        note_scope(j, &req);
    char why[2 * VERIFY_TEXT_MAX] = ""; /* room for requirement()'s longest text */
    int r = is_signature_tag(tag)
                ? 1
                : requirement(j->pol, j->up, j->repo, tag, NULL, why, sizeof(why));
    size_t n = strnlen(why, sizeof(v->text) - 1);
    memcpy(v->text, why, n);
    v->text[n] = 0;
    v->allowed = r == 1;
    v->reason = r == 1 ? VERIFY_ALLOWED : named ? VERIFY_DENIED_REJECTED : VERIFY_DENIED_MALFORMED;
    if (r == 1)
        allowed_why(tag, named ? &req : NULL, v);
    return r;
}

trust_state trust_decide_manifest(trust *t, const config_upstream *up, const char *repo,
                                  const char *tag, const uint8_t digest[32], trust_note_fn note,
                                  void *note_arg, verify_verdict *out)
{
    memset(out, 0, sizeof(*out));
    job *j = job_new(t, JOB_MANIFEST, up, repo, tag, digest, "");
    j->pol = current_policy(t);
    j->note = note;
    j->note_arg = note_arg;
    if (decide_by_policy(j, out) < 0) {
        out->text[0] = 0;
        note_stored(t, j);
        evaluate_manifest(t, j, out);
        if (out->allowed)
            out->reason = VERIFY_ALLOWED;
        store_verdict(t, j, out); /* as the daemon would: it may reuse it */
    }
    policy_unref(j->pol);
    free(j);
    return out->allowed ? TRUST_ALLOWED : TRUST_DENIED;
}

/* ---------- life cycle ---------- */

trust *trust_new(daemon_ctx *d, const config *cfg, char *err, size_t errlen)
{
    trust *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->d = d;
    pthread_mutex_init(&t->mu, NULL);
    if (!(t->verdicts = pending_new()) || !(t->cur = policy_load(cfg, err, errlen)) ||
        !(t->verifier = writer_start(d->cache))) {
        trust_free(t);
        return NULL;
    }
    atomic_init(&t->open, !t->cur->policy && !t->cur->nscopes);
    prune_stored(t, t->cur);
    return t;
}

int trust_reload(trust *t, const config *cfg, char *err, size_t errlen)
{
    policy_ref *fresh = policy_load(cfg, err, errlen);
    if (!fresh)
        return -1;
    pthread_mutex_lock(&t->mu);
    policy_ref *old = t->cur;
    t->cur = fresh;
    atomic_store(&t->open, !fresh->policy && !fresh->nscopes);
    pending_clear(t->verdicts); /* under mu: no verdict of the old policy survives */
    prune_stored(t, fresh);     /* the stored ones are keyed by the policy hash anyway */
    pthread_mutex_unlock(&t->mu);
    policy_unref(old);
    return 0;
}

int trust_has_policy(trust *t)
{
    policy_ref *p = current_policy(t);
    int has = p->policy != NULL;
    policy_unref(p);
    return has;
}

void trust_cancel(trust *t, pending_waiter *w)
{
    pending_cancel(t->verdicts, w);
}

void trust_stop(trust *t)
{
    pending_close(t->verdicts); /* later questions: "shutting down" */
    if (t->verifier)
        writer_stop(t->verifier); /* runs what is queued; its decisions are dropped */
    t->verifier = NULL;
}

void trust_free(trust *t)
{
    if (!t)
        return;
    if (t->verifier)
        trust_stop(t);
    if (t->verdicts)
        pending_free(t->verdicts);
    if (t->cur)
        policy_unref(t->cur);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
