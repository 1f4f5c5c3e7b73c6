/*
 * seed_layout.c — what an OCI image layout means to `sluice seed` (see
 * seed.h): its index.json entries, their repositories and tags, the objects
 * each needs, the trust policy's verdict, and the commit into the cache.
 *
 * How it works, per input:
 *   1. index.json is parsed; every entry gets a repository key and a tag:
 *      --repo if given, else the full reference in io.containerd.image.name,
 *      else a full reference in org.opencontainers.image.ref.name; the tag
 *      is ref.name when it is a plain tag, else the reference's tag. An
 *      entry that no source names refuses the whole input, before anything
 *      is read, with a message saying to give --repo. Entries tagged
 *      "sha256-<hex>.sig" / ".att" / ".sbom" / "sha256-<hex>" and manifests
 *      with a `subject` are attachments (signatures, referrers) of that
 *      digest; the rest are images.
 *   2. Plan: each entry's closure is gathered by reading its manifests
 *      (verified, at most SEED_MANIFEST_MAX bytes): an index's child
 *      manifests, a manifest's config and layers (or an artifact's blobs).
 *      Bodies are dropped once parsed; only digests, sizes and parents are
 *      kept. An image is then evaluated under the trust policy with the
 *      cosign signature layers (and Sigstore bundle referrers) of its digest
 *      found among the attachments; a denied image is reported and left
 *      out, and so are the attachments of a denied image.
 *   3. Execute, entry by entry: every blob of the closure is made COMPLETE
 *      in the cache (seed_store_blob verifies each digest); only then are
 *      the manifests stored (children before their index), the refs rows
 *      (which manifest of the repository uses which blob or child) and the
 *      referrers rows (manifests with a subject, with the same descriptor
 *      JSON the daemon stores) written, every object pinned (unless
 *      --no-pin), and the tag written last, with confirmed_at 0 ("never
 *      confirmed by the upstream", so an online daemon revalidates it). Each
 *      step is idempotent and each write is its own transaction, so a kill
 *      at any point leaves a consistent cache and a rerun completes the
 *      entry; a second run over the same input writes nothing.
 *   4. Deltas listed in index.json's "dev.sluice.deltas.v1" annotation (as
 *      `sluice export --deltas-from` writes them) are stored, pinned and
 *      indexed when their target blob was imported.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "seed.h"
#include "transfer.h"

#define MAX_SIGS 64
#define ANN_REF_NAME "org.opencontainers.image.ref.name"
#define ANN_CONTAINERD_NAME "io.containerd.image.name"
#define ANN_COSIGN_SIG "dev.cosignproject.cosign/signature"
#define ANN_COSIGN_CERT "dev.sigstore.cosign/certificate"
#define ANN_COSIGN_CHAIN "dev.sigstore.cosign/chain"
#define ANN_COSIGN_BUNDLE "dev.sigstore.cosign/bundle"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_BUNDLE_PREFIX "application/vnd.dev.sigstore.bundle"
#define NO_PARENT SIZE_MAX

/* One object of an entry's closure. */
typedef struct {
    uint8_t digest[32];
    uint8_t parent[32]; /* the manifest that references it */
    uint64_t size;
    uint8_t is_manifest;
    uint8_t has_parent;
    char role[16];        /* "manifest", "index", "child", "config", "layer", "blob" */
    char media_type[128]; /* manifests */
} node;

enum { S_PLANNED, S_DENIED, S_REFUSED, S_SKIPPED, S_DONE };

typedef struct {
    uint8_t digest[32];
    uint64_t size;
    char media_type[128];
    char key[CLI_KEY_MAX];
    char tag[OCI_TAG_MAX + 1];
    char name[CLI_KEY_MAX + 160]; /* "key:tag" or "key@sha256:..." for messages */
    int attachment;
    int has_subject;
    uint8_t subject[32];
    int state;
    node *nodes;
    size_t nnodes, cap;
} entry;

typedef struct {
    seed_ctx *x;
    entry *e;
    size_t n;
    json_t *index;
} layout;

/* ---- small JSON helpers ---- */

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static const char *jann(json_t *o, const char *key)
{
    return jstr(json_object_get(o, "annotations"), key);
}

/* A descriptor's digest and size; 0, or -1 with why set. */
static int parse_desc(json_t *d, uint8_t digest[32], uint64_t *size, const char **why)
{
    const char *ds = jstr(d, "digest");
    json_t *sz = json_object_get(d, "size");
    verify_status st = ds ? verify_digest_parse(ds, strlen(ds), digest) : VERIFY_DIGEST_MALFORMED;
    *why = st == VERIFY_DIGEST_UNSUPPORTED ? "digest algorithm not supported (only sha256)"
                                           : "descriptor without a valid digest";
    if (st != VERIFY_OK)
        return -1;
    *why = "descriptor without a valid size";
    if (!json_is_integer(sz) || json_integer_value(sz) < 0)
        return -1;
    *size = (uint64_t)json_integer_value(sz);
    return 0;
}

static int is_manifest_type(const char *mt)
{
    static const char *const types[] = {
        MT_OCI_MANIFEST, MT_OCI_INDEX, "application/vnd.oci.artifact.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json"};
    for (size_t i = 0; mt != NULL && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(mt, types[i]) == 0)
            return 1;
    return 0;
}

/* ---- naming entries ---- */

/* The subject digest named by a cosign / referrers-fallback tag, if any. */
static int tag_subject(const char *tag, uint8_t subject[32])
{
    if (strncmp(tag, "sha256-", 7) != 0 || strspn(tag + 7, "0123456789abcdef") != 64)
        return 0;
    const char *rest = tag + 71;
    if (*rest != '\0' && strcmp(rest, ".sig") != 0 && strcmp(rest, ".att") != 0 &&
        strcmp(rest, ".sbom") != 0)
        return 0;
    char text[72];
    snprintf(text, sizeof text, "sha256:%.64s", tag + 7);
    return verify_digest_parse(text, strlen(text), subject) == VERIFY_OK;
}

/* Key and tag from a full reference; 0, or -1 with err. */
static int from_reference(seed_ctx *x, const char *ref, entry *e, char *err, size_t errlen)
{
    cli_ref r;
    if (cli_parse_ref(ref, &r, err, errlen) != 0)
        return -1;
    if (cli_repo_key(x->cfg, r.registry, r.repository, e->key, sizeof e->key, err, errlen) != 0)
        return -1;
    if (e->tag[0] == '\0')
        snprintf(e->tag, sizeof e->tag, "%s", r.tag);
    return 0;
}

/* 1 named, 0 nothing names its repository, -1 a bad name (reported). */
static int name_entry(seed_ctx *x, json_t *d, entry *e, size_t i)
{
    const char *refname = jann(d, ANN_REF_NAME), *ctrd = jann(d, ANN_CONTAINERD_NAME);
    char err[512];
    if (refname != NULL && cli_is_tag(refname))
        snprintf(e->tag, sizeof e->tag, "%s", refname);
    int rc = 0;
    if (x->repo_key != NULL) {
        snprintf(e->key, sizeof e->key, "%s", x->repo_key);
        rc = 1;
        if (e->tag[0] == '\0' && (refname || ctrd)) {
            cli_ref r;
            if (cli_parse_ref(refname ? refname : ctrd, &r, err, sizeof err) == 0)
                snprintf(e->tag, sizeof e->tag, "%s", r.tag);
        }
    } else if (ctrd != NULL) {
        rc = from_reference(x, ctrd, e, err, sizeof err) == 0 ? 1 : -1;
    } else if (refname != NULL && !cli_is_tag(refname)) {
        rc = from_reference(x, refname, e, err, sizeof err) == 0 ? 1 : -1;
    }
    if (rc < 0)
        seed_error(x, "index.json entry %zu: %s", i, err);
    return rc;
}

static void entry_label(entry *e)
{
    char text[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(e->digest, text);
    if (e->tag[0])
        snprintf(e->name, sizeof e->name, "%s:%s", e->key, e->tag);
    else
        snprintf(e->name, sizeof e->name, "%s@%s", e->key, text);
}

/* Fills e from index.json's manifests[i]; -1 when the entry is unusable. */
static int read_entry(seed_ctx *x, json_t *d, entry *e, size_t i, int *unnamed)
{
    const char *why;
    if (!json_is_object(d) || parse_desc(d, e->digest, &e->size, &why) != 0) {
        seed_error(x, "index.json entry %zu: %s", i, json_is_object(d) ? why : "not an object");
        return -1;
    }
    const char *mt = jstr(d, "mediaType");
    snprintf(e->media_type, sizeof e->media_type, "%s", mt ? mt : "");
    int named = name_entry(x, d, e, i);
    if (named == 0) {
        char text[VERIFY_DIGEST_TEXT_LEN];
        verify_digest_format(e->digest, text);
        seed_error(x, "index.json entry %zu (%s%s%s) names no repository", i, text,
                   e->tag[0] ? ", tag " : "", e->tag);
        (*unnamed)++;
    }
    if (named <= 0)
        return -1;
    e->has_subject = e->attachment = tag_subject(e->tag, e->subject);
    entry_label(e);
    return 0;
}

static int read_index(layout *l)
{
    seed_ctx *x = l->x;
    json_error_t jerr;
    l->index = json_loadb(x->index_json, x->index_len, 0, &jerr);
    json_t *ms = json_object_get(l->index, "manifests");
    if (!json_is_array(ms)) {
        seed_error(x, "index.json: %s", l->index ? "no \"manifests\" array" : jerr.text);
        return -1;
    }
    l->n = json_array_size(ms);
    l->e = calloc(l->n ? l->n : 1, sizeof *l->e);
    if (l->e == NULL)
        return -1;
    int unnamed = 0;
    for (size_t i = 0; i < l->n; i++)
        if (read_entry(x, json_array_get(ms, i), &l->e[i], i, &unnamed) != 0)
            l->e[i].state = S_REFUSED;
    if (unnamed > 0) {
        seed_error(x,
                   "%d of %zu entries name no repository: the layout's annotations give "
                   "none (io.containerd.image.name, or a full reference in %s); give --repo "
                   "[REGISTRY/]REPO. Nothing was imported.",
                   unnamed, l->n, ANN_REF_NAME);
        return -1;
    }
    return 0;
}

/* ---- closures ---- */

/* parent: index of the referencing node, or NO_PARENT. */
static node *add_node(entry *e, const uint8_t digest[32], uint64_t size, const char *role,
                      size_t parent)
{
    if (e->nnodes == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 8;
        node *n = realloc(e->nodes, cap * sizeof *n);
        if (n == NULL)
            abort();
        e->nodes = n;
        e->cap = cap;
    }
    node *n = &e->nodes[e->nnodes++];
    memset(n, 0, sizeof *n);
    memcpy(n->digest, digest, 32);
    n->size = size;
    snprintf(n->role, sizeof n->role, "%s", role);
    if (parent != NO_PARENT) {
        memcpy(n->parent, e->nodes[parent].digest, 32);
        n->has_parent = 1;
    }
    return n;
}

/* "blobs/sha256/<hex> (layer of NAME)" */
static void describe(const entry *e, const node *n, char *out, size_t outlen)
{
    char path[96];
    seed_blob_path(n->digest, path);
    snprintf(out, outlen, "%s (%s of %s)", path, n->role, e->name);
}

/* Reads and parses manifest node n; NULL on failure (reported). */
static json_t *load_manifest(seed_ctx *x, const entry *e, const node *n)
{
    char what[CLI_KEY_MAX + 300];
    describe(e, n, what, sizeof what);
    uint8_t *body;
    size_t len;
    if (seed_read_small(x, n->digest, SEED_MANIFEST_MAX, &body, &len, what) != 0)
        return NULL;
    json_error_t jerr;
    json_t *root = len == n->size ? json_loadb((const char *)body, len, 0, &jerr) : NULL;
    free(body);
    if (len != n->size)
        seed_error(x, "%s: %zu bytes, but its descriptor says %llu", what, len,
                   (unsigned long long)n->size);
    else if (!json_is_object(root))
        seed_error(x, "%s: not a JSON manifest%s%s", what, root ? "" : ": ", root ? "" : jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* The descriptor's media type if it gave one, else the manifest's own. */
static void manifest_media_type(node *n, json_t *root)
{
    if (n->media_type[0] != '\0')
        return;
    const char *mt = jstr(root, "mediaType");
    if (mt == NULL)
        mt = json_is_array(json_object_get(root, "manifests")) ? MT_OCI_INDEX : MT_OCI_MANIFEST;
    snprintf(n->media_type, sizeof n->media_type, "%s", mt);
}

static int gather(layout *l, entry *e, size_t ni, int depth);

/* Adds descriptor d (referenced by node parent) and what it needs. */
static int gather_desc(layout *l, entry *e, size_t parent, json_t *d, const char *role, int depth)
{
    uint8_t digest[32];
    uint64_t size;
    const char *why;
    if (parse_desc(d, digest, &size, &why) != 0) {
        char what[CLI_KEY_MAX + 300];
        describe(e, &e->nodes[parent], what, sizeof what);
        seed_error(l->x, "%s: a %s %s", what, role, why);
        return -1;
    }
    const char *mt = jstr(d, "mediaType");
    int manifest = strcmp(role, "child") == 0 || is_manifest_type(mt);
    node *n = add_node(e, digest, size, role, parent);
    n->is_manifest = (uint8_t)manifest;
    if (manifest)
        snprintf(n->media_type, sizeof n->media_type, "%s", mt ? mt : "");
    return manifest ? gather(l, e, e->nnodes - 1, depth + 1) : 0;
}

static int gather_array(layout *l, entry *e, size_t ni, json_t *arr, const char *role, int depth)
{
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (gather_desc(l, e, ni, json_array_get(arr, i), role, depth) != 0)
            return -1;
    return 0;
}

/* Reads manifest node ni and adds everything it references. */
static int gather(layout *l, entry *e, size_t ni, int depth)
{
    if (depth > 8) {
        seed_error(l->x, "%s: manifests nested more than 8 deep", e->name);
        return -1;
    }
    json_t *root = load_manifest(l->x, e, &e->nodes[ni]);
    if (root == NULL)
        return -1;
    manifest_media_type(&e->nodes[ni], root);
    json_t *subj = json_object_get(root, "subject");
    const char *why;
    uint64_t sz;
    if (ni == 0 && json_is_object(subj) && parse_desc(subj, e->subject, &sz, &why) == 0)
        e->has_subject = e->attachment = 1;
    int rc = 0;
    json_t *config = json_object_get(root, "config");
    if (json_is_array(json_object_get(root, "manifests")))
        rc = gather_array(l, e, ni, json_object_get(root, "manifests"), "child", depth);
    if (rc == 0 && json_is_object(config))
        rc = gather_desc(l, e, ni, config, "config", depth);
    if (rc == 0)
        rc = gather_array(l, e, ni, json_object_get(root, "layers"), "layer", depth);
    if (rc == 0)
        rc = gather_array(l, e, ni, json_object_get(root, "blobs"), "blob", depth);
    json_decref(root);
    return rc;
}

static int plan_entry(layout *l, entry *e)
{
    node *top = add_node(e, e->digest, e->size, "manifest", NO_PARENT);
    top->is_manifest = 1;
    snprintf(top->media_type, sizeof top->media_type, "%s", e->media_type);
    if (gather(l, e, 0, 0) != 0) {
        e->state = S_REFUSED;
        return -1;
    }
    return 0;
}

/* ---- trust ---- */

typedef struct {
    verify_cosign_sig sigs[MAX_SIGS];
    size_t nsigs;
    verify_buf bundles[MAX_SIGS];
    size_t nbundles;
    uint8_t *owned[2 * MAX_SIGS];
    size_t nowned;
    json_t *docs[MAX_SIGS];
    size_t ndocs;
} evidence;

static void evidence_free(evidence *ev)
{
    for (size_t i = 0; i < ev->nowned; i++)
        free(ev->owned[i]);
    for (size_t i = 0; i < ev->ndocs; i++)
        json_decref(ev->docs[i]);
}

static uint8_t *read_layer(layout *l, const entry *a, json_t *layer, size_t *len)
{
    uint8_t digest[32];
    uint64_t size;
    const char *why;
    uint8_t *buf;
    if (parse_desc(layer, digest, &size, &why) != 0)
        return NULL;
    node n = {.size = size};
    memcpy(n.digest, digest, 32);
    snprintf(n.role, sizeof n.role, "signature");
    char what[CLI_KEY_MAX + 300];
    describe(a, &n, what, sizeof what);
    return seed_read_small(l->x, digest, SEED_SMALL_MAX, &buf, len, what) == 0 ? buf : NULL;
}

static void set_text(const char **p, size_t *n, const char *v)
{
    *p = v;
    *n = v ? strlen(v) : 0;
}

/* One layer of a cosign .sig manifest, or of a Sigstore bundle referrer. */
static void add_layer(layout *l, const entry *a, json_t *layer, int bundle_referrer, evidence *ev)
{
    const char *mt = jstr(layer, "mediaType");
    int is_bundle = mt && strncmp(mt, MT_BUNDLE_PREFIX, strlen(MT_BUNDLE_PREFIX)) == 0;
    if ((bundle_referrer && !is_bundle) || ev->nsigs == MAX_SIGS || ev->nbundles == MAX_SIGS ||
        ev->nowned == 2 * MAX_SIGS)
        return;
    size_t len;
    uint8_t *buf = read_layer(l, a, layer, &len);
    if (buf == NULL)
        return;
    ev->owned[ev->nowned++] = buf;
    if (is_bundle) {
        ev->bundles[ev->nbundles++] = (verify_buf){.data = buf, .len = len};
        return;
    }
    verify_cosign_sig *s = &ev->sigs[ev->nsigs++];
    memset(s, 0, sizeof *s);
    set_text(&s->media_type, &s->media_type_len, mt);
    s->payload = buf;
    s->payload_len = len;
    set_text(&s->signature, &s->signature_len, jann(layer, ANN_COSIGN_SIG));
    set_text(&s->certificate, &s->certificate_len, jann(layer, ANN_COSIGN_CERT));
    set_text(&s->chain, &s->chain_len, jann(layer, ANN_COSIGN_CHAIN));
    set_text(&s->rekor_bundle, &s->rekor_bundle_len, jann(layer, ANN_COSIGN_BUNDLE));
}

/* The signature layers and bundles of the attachments of digest. */
static void collect_evidence(layout *l, const uint8_t digest[32], evidence *ev)
{
    for (size_t i = 0; i < l->n && ev->ndocs < MAX_SIGS; i++) {
        entry *a = &l->e[i];
        if (!a->attachment || a->state == S_REFUSED || memcmp(a->subject, digest, 32) != 0)
            continue;
        node top = {.size = a->size, .is_manifest = 1};
        memcpy(top.digest, a->digest, 32);
        snprintf(top.role, sizeof top.role, "signature");
        json_t *root = load_manifest(l->x, a, &top);
        if (root == NULL)
            continue;
        ev->docs[ev->ndocs++] = root;
        int sig_tag = strlen(a->tag) > 4 && strcmp(a->tag + strlen(a->tag) - 4, ".sig") == 0;
        json_t *layers = json_object_get(root, "layers");
        for (size_t k = 0; k < json_array_size(layers); k++)
            add_layer(l, a, json_array_get(layers, k), !sig_tag, ev);
    }
}

/* 1 allowed, 0 denied (reported). */
static int evaluate(layout *l, entry *e)
{
    if (l->x->policy == NULL)
        return 1;
    char registry[256], repository[OCI_NAME_MAX + 1];
    cli_split_key(e->key, registry, sizeof registry, repository, sizeof repository);
    verify_image img = {
        .registry = registry, .repository = repository, .tag = e->tag[0] ? e->tag : NULL};
    memcpy(img.manifest_digest, e->digest, 32);
    evidence ev = {0};
    collect_evidence(l, e->digest, &ev);
    verify_verdict v;
    int ok = verify_image_evaluate(l->x->policy, &img, ev.sigs, ev.nsigs, ev.bundles, ev.nbundles,
                                   (int64_t)time(NULL), &v);
    evidence_free(&ev);
    if (!ok)
        seed_error(l->x, "%s: denied by the trust policy (%s: %s); not imported", e->name,
                   verify_reason_name(v.reason), v.text);
    return ok;
}

static int subject_denied(const layout *l, const entry *a)
{
    for (size_t i = 0; i < l->n; i++)
        if (!l->e[i].attachment && l->e[i].state == S_DENIED &&
            memcmp(l->e[i].digest, a->subject, 32) == 0)
            return 1;
    return 0;
}

static void plan(layout *l)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->e[i].state == S_PLANNED && plan_entry(l, &l->e[i]) != 0)
            seed_error(l->x, "%s: not imported (see above)", l->e[i].name);
    for (size_t i = 0; i < l->n; i++) {
        entry *e = &l->e[i];
        if (e->state == S_PLANNED && !e->attachment && !evaluate(l, e))
            e->state = S_DENIED;
    }
    for (size_t i = 0; i < l->n; i++) {
        entry *a = &l->e[i];
        if (a->state == S_PLANNED && a->attachment && subject_denied(l, a)) {
            seed_note(l->x, "%s: not imported: it belongs to a denied image", a->name);
            a->state = S_SKIPPED;
        }
    }
}

/* ---- execute ---- */

static uint64_t planned_bytes(layout *l)
{
    seed_set seen = {0};
    uint64_t total = 0;
    for (size_t i = 0; i < l->n; i++) {
        entry *e = &l->e[i];
        for (size_t k = 0; e->state == S_PLANNED && k < e->nnodes; k++) {
            seed_blob *b = seed_set_get(&seen, e->nodes[k].digest, 1);
            if (!e->nodes[k].is_manifest && !b->flags) {
                b->flags = 1;
                total += e->nodes[k].size;
            }
        }
    }
    seed_set_free(&seen);
    return total;
}

static int store_blobs(layout *l, entry *e)
{
    seed_ctx *x = l->x;
    int rc = 0;
    for (size_t k = 0; k < e->nnodes; k++) {
        node *n = &e->nodes[k];
        seed_blob *b = seed_set_get(&x->blobs, n->digest, 0);
        if (n->is_manifest || (b != NULL && (b->flags & SB_KEEP)))
            continue;
        char what[CLI_KEY_MAX + 300];
        describe(e, n, what, sizeof what);
        int already = b != NULL && (b->flags & SB_READY);
        if (seed_store_blob(x, n->digest, n->size, what) != 0)
            rc = -1;
        else if (!already && x->is_dir)
            x->progress_base += n->size;
        cli_progress_set(&x->progress, x->progress_base);
    }
    return rc;
}

static int put_referrer(seed_ctx *x, const node *n, const uint8_t *body, size_t len)
{
    json_t *root = json_loadb((const char *)body, len, 0, NULL);
    uint8_t subject[32];
    /* the same descriptor the daemon stores for what it fetches */
    char *desc =
        root ? transfer_referrer_descriptor(root, n->digest, n->media_type, len, subject) : NULL;
    int rc = !desc || cache_referrer_put(x->c, subject, n->digest, desc, strlen(desc)) == CACHE_OK
                 ? 0
                 : -1;
    free(desc);
    json_decref(root);
    return rc;
}

/* A manifest lives in the manifests DB; a copy in the blob store (left by a
 * tar stream, which cannot tell manifests from blobs) goes once it is there,
 * before anything is pinned. */
static void drop_blob_copy(seed_ctx *x, const uint8_t digest[32])
{
    cache_snapshot *s = cache_snapshot_new(x->c);
    cache_blob_info info;
    int found = s != NULL && cache_blob_stat(s, digest, &info) == CACHE_OK;
    cache_snapshot_unref(s);
    seed_blob *b = seed_set_get(&x->blobs, digest, 0);
    if (found && cache_blob_delete(x->c, digest) == CACHE_OK && b != NULL && (b->flags & SB_NEW)) {
        b->flags &= (uint8_t)~SB_NEW;
        x->blobs_new--;
        x->bytes_new -= b->size;
    }
}

/* Stores manifest node n (re-read and re-verified) and its referrer row. */
static int put_manifest(seed_ctx *x, entry *e, const node *n)
{
    char what[CLI_KEY_MAX + 300];
    describe(e, n, what, sizeof what);
    uint8_t *body;
    size_t len;
    if (seed_read_small(x, n->digest, SEED_MANIFEST_MAX, &body, &len, what) != 0)
        return -1;
    cache_status st = cache_manifest_put(x->c, n->digest, n->media_type, body, len);
    int rc = st == CACHE_OK ? put_referrer(x, n, body, len) : -1;
    free(body);
    if (rc != 0) {
        seed_error(x, "%s: cannot store it: %s", what, cache_strerror(st));
        return -1;
    }
    drop_blob_copy(x, n->digest);
    return 0;
}

static int put_refs_and_pins(seed_ctx *x, entry *e)
{
    for (size_t k = 0; k < e->nnodes; k++) {
        node *n = &e->nodes[k];
        char what[CLI_KEY_MAX + 300];
        describe(e, n, what, sizeof what);
        if (n->has_parent && cache_ref_put(x->c, e->key, n->digest, n->parent) != CACHE_OK) {
            seed_error(x, "%s: cannot record its reference", what);
            return -1;
        }
        seed_blob *b = seed_set_get(&x->blobs, n->digest, 1);
        if (!x->pin || (b->flags & SB_PINNED))
            continue;
        cache_status st = cache_pin(x->c, n->digest, 1);
        if (st != CACHE_OK) {
            seed_error(x, "%s: cannot pin it: %s%s", what, cache_strerror(st),
                       st == CACHE_NOTFOUND ? " (evicted while seeding? run the seed again)" : "");
            return -1;
        }
        b->flags |= SB_PINNED;
    }
    return 0;
}

static int put_tag(seed_ctx *x, entry *e)
{
    if (e->tag[0] == '\0')
        return 0;
    uint8_t old[32];
    cache_snapshot *s = cache_snapshot_new(x->c);
    int had = s != NULL && cache_tag_get(s, e->key, e->tag, old, NULL) == CACHE_OK;
    cache_snapshot_unref(s);
    if (had && memcmp(old, e->digest, 32) == 0)
        return 0; /* keep its confirmation time */
    if (had) {
        char text[VERIFY_DIGEST_TEXT_LEN];
        verify_digest_format(old, text);
        seed_note(x, "%s: tag moved (it named %s)", e->name, text);
    }
    if (cache_tag_put(x->c, e->key, e->tag, e->digest, 0) != CACHE_OK) {
        seed_error(x, "%s: cannot store the tag", e->name);
        return -1;
    }
    return 0;
}

static int commit(seed_ctx *x, entry *e)
{
    for (size_t k = e->nnodes; k-- > 0;)
        if (e->nodes[k].is_manifest && put_manifest(x, e, &e->nodes[k]) != 0)
            return -1;
    if (put_refs_and_pins(x, e) != 0)
        return -1;
    for (size_t k = 0; k < e->nnodes; k++)
        if (!e->nodes[k].is_manifest)
            seed_set_get(&x->blobs, e->nodes[k].digest, 1)->flags |= SB_KEEP;
    return put_tag(x, e);
}

static void execute(layout *l)
{
    seed_ctx *x = l->x;
    if (x->is_dir)
        cli_progress_start(&x->progress, x->input, planned_bytes(l));
    for (int pass = 0; pass < 2; pass++) { /* images first, then their attachments */
        for (size_t i = 0; i < l->n; i++) {
            entry *e = &l->e[i];
            if (e->state != S_PLANNED || e->attachment != pass)
                continue;
            if (store_blobs(l, e) != 0 || commit(x, e) != 0) {
                seed_error(x, "%s: not imported (see above)", e->name);
                e->state = S_REFUSED;
                continue;
            }
            e->state = S_DONE;
            if (pass == 0)
                x->images++;
            else
                x->attachments++;
        }
    }
}

/* ---- deltas ---- */

static int read_delta_field(json_t *d, const char *key, uint8_t out[32])
{
    const char *s = jstr(d, key);
    return s && verify_digest_parse(s, strlen(s), out) == VERIFY_OK ? 0 : -1;
}

static void import_delta(seed_ctx *x, json_t *d, size_t i)
{
    uint8_t base[32], target[32], delta[32];
    const char *codec = jstr(d, "codec");
    json_t *size = json_object_get(d, "size");
    if (read_delta_field(d, "base", base) || read_delta_field(d, "target", target) ||
        read_delta_field(d, "digest", delta) || !codec || !json_is_integer(size) ||
        json_integer_value(size) < 0) {
        seed_error(x, "index.json: %s[%zu] is malformed", SEED_DELTAS_ANNOTATION, i);
        return;
    }
    seed_blob *t = seed_set_get(&x->blobs, target, 0);
    if (t == NULL || !(t->flags & SB_KEEP))
        return; /* its target was not imported */
    char what[300], path[96];
    seed_blob_path(delta, path);
    snprintf(what, sizeof what, "%s (%s delta)", path, codec);
    uint64_t n = (uint64_t)json_integer_value(size);
    if (seed_store_blob(x, delta, n, what) != 0)
        return;
    seed_blob *b = seed_set_get(&x->blobs, delta, 1);
    b->flags |= SB_KEEP;
    if ((x->pin && cache_pin(x->c, delta, 1) != CACHE_OK) ||
        cache_delta_put(x->c, base, target, codec, delta, n) != CACHE_OK) {
        seed_error(x, "%s: cannot index it", what);
        return;
    }
    x->deltas++;
}

static void import_deltas(layout *l)
{
    const char *text = jann(l->index, SEED_DELTAS_ANNOTATION);
    if (text == NULL)
        return;
    json_t *arr = json_loads(text, 0, NULL);
    if (!json_is_array(arr))
        seed_error(l->x, "index.json: annotation %s is not a JSON array", SEED_DELTAS_ANNOTATION);
    for (size_t i = 0; i < json_array_size(arr); i++)
        import_delta(l->x, json_array_get(arr, i), i);
    json_decref(arr);
}

/* ---- the whole input ---- */

static void count_outcomes(layout *l)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->e[i].state == S_DENIED)
            l->x->denied++;
        else if (l->e[i].state == S_REFUSED)
            l->x->refused++;
    }
}

void seed_import(seed_ctx *x)
{
    layout l = {.x = x};
    if (read_index(&l) == 0) {
        plan(&l);
        execute(&l);
        import_deltas(&l);
        count_outcomes(&l);
    }
    for (size_t i = 0; i < l.n; i++)
        free(l.e[i].nodes);
    free(l.e);
    json_decref(l.index);
}
