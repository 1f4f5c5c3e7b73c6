/*
 * transfer.c — the producer side of shared upstream fetches (see transfer.h).
 *
 * Blob transfers: upstream callbacks (upstream thread) fill chunk buffers of
 * CACHE_CHUNK_SIZE bytes; each full chunk, and the last partial one, becomes
 * a writer job that hashes it and appends it to a PARTIAL blob in LMDB; a
 * final job compares the digest and marks the blob COMPLETE, or deletes it.
 * Manifest transfers: the body is small (<= 4 MiB) and kept in memory; by
 * tag with a cached digest, a HEAD revalidates first and a GET follows only
 * if the tag moved; an unreachable upstream yields the last known digest.
 * Every state change wakes the waiters; the table forgets a transfer once it
 * is DONE or FAILED (its waiters keep their references).
 */
#include "transfer.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blobs.h"
#include "delta.h"
#include "deltas.h"
#include "log.h"
#include "metrics.h"
#include "verify.h"

#define MANIFEST_ACCEPT                                                                            \
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "        \
    "application/vnd.docker.distribution.manifest.v2+json, "                                       \
    "application/vnd.docker.distribution.manifest.list.v2+json"

struct transfer_table {
    pthread_mutex_t mu;
    struct entry {
        struct entry *next;
        transfer *t;
    } * head;
};

static void start_manifest_get(transfer *t);

/* ---------- table ---------- */

transfer_table *transfer_table_new(void)
{
    transfer_table *tt = calloc(1, sizeof(*tt));
    if (tt)
        pthread_mutex_init(&tt->mu, NULL);
    return tt;
}

void transfer_table_free(transfer_table *tt)
{
    /* Only called after the upstream and writer threads have stopped, which
     * finishes every transfer and so empties the table. */
    pthread_mutex_destroy(&tt->mu);
    free(tt);
}

static void table_remove(transfer *t)
{
    transfer_table *tt = t->d->transfers;
    int found = 0;
    pthread_mutex_lock(&tt->mu);
    for (struct entry **pp = &tt->head; *pp; pp = &(*pp)->next) {
        if ((*pp)->t == t) {
            struct entry *e = *pp;
            *pp = e->next;
            free(e);
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&tt->mu);
    if (found) {
        atomic_fetch_sub(&g_metrics.inflight_transfers, 1);
        transfer_unref(t);
    }
}

/* (Made on every request: no printf.) */
void transfer_repo_key(const config_upstream *up, const char *repo, char *out, size_t outlen)
{
    if (!outlen)
        return;
    upstream_host_of(up->url, out, outlen);
    size_t n = strlen(out), len = strlen(repo);
    if (n + 1 < outlen)
        out[n++] = '/';
    if (len > outlen - 1 - n)
        len = outlen - 1 - n;
    memcpy(out + n, repo, len);
    out[n + len] = 0;
}

static void make_key(const transfer_spec *s, char *out, size_t outlen)
{
    if (s->kind == TRANSFER_BLOB) {
        char hex[VERIFY_DIGEST_TEXT_LEN];
        verify_digest_format(s->digest, hex);
        snprintf(out, outlen, "b:%s", hex);
    } else {
        snprintf(out, outlen, "m:%s/%s:%s", s->up->url, s->repo, s->reference);
    }
}

void chunk_unref(chunk_buf *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1)
        free(c);
}

void transfer_unref(transfer *t)
{
    if (atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    for (uint32_t i = 0; i < t->mem_count; i++)
        chunk_unref(t->mem[i]);
    if (t->hasher)
        verify_hasher_free(t->hasher);
    if (t->keep)
        cache_snapshot_unref(t->keep);
    free(t->body);
    free(t->delta_buf);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* ---------- waking waiters ---------- */

void transfer_add_waiter(transfer *t, transfer_waiter *w)
{
    w->next = t->waiters;
    t->waiters = w;
}

void transfer_remove_waiter(transfer *t, transfer_waiter *w)
{
    for (transfer_waiter **pp = &t->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            return;
        }
    }
}

static void notify_locked(transfer *t)
{
    for (transfer_waiter *w = t->waiters; w; w = w->next)
        event_active(w->wake, EV_READ, 0);
}

static void set_state(transfer *t, transfer_state st, upstream_result err, const char *msg)
{
    pthread_mutex_lock(&t->mu);
    t->state = st;
    t->error = err;
    t->error_msg = msg;
    notify_locked(t);
    pthread_mutex_unlock(&t->mu);
    if (st == T_DONE || st == T_FAILED)
        table_remove(t);
}

/* ---------- chunk buffers ---------- */

chunk_buf *transfer_mem_chunk(transfer *t, uint64_t offset, size_t *off, size_t *len)
{
    uint32_t index = (uint32_t)(offset / CACHE_CHUNK_SIZE);
    if (index < t->mem_first || index >= t->mem_first + t->mem_count)
        return NULL;
    chunk_buf *c = t->mem[index - t->mem_first];
    size_t o = (size_t)(offset % CACHE_CHUNK_SIZE);
    if (o >= c->len)
        return NULL;
    atomic_fetch_add(&c->refs, 1);
    *off = o;
    *len = c->len - o;
    return c;
}

static chunk_buf *chunk_new(uint32_t index)
{
    chunk_buf *c = malloc(sizeof(*c) + CACHE_CHUNK_SIZE);
    if (!c)
        abort();
    atomic_init(&c->refs, 1);
    c->index = index;
    c->len = 0;
    return c;
}

/* ---------- writer jobs (writer thread) ---------- */

typedef struct {
    transfer *t;
    chunk_buf *chunk;
} chunk_job;

static void start_blob_upstream(transfer *t, uint64_t offset);
static void job_blob_finish_now(cache *c, transfer *t);
static int find_base(cache *c, transfer *t, uint8_t base[32]);
static void start_blob_delta(transfer *t, const uint8_t base[32]);
static void precompute_deltas(cache *c, transfer *t);

/* Hashes the chunks an earlier run left in a PARTIAL blob. Returns the
 * offset to resume from; *whole is set when every byte is there already. */
static uint64_t resume_partial(cache *c, transfer *t, int *whole)
{
    cache_snapshot *s = cache_snapshot_new(c);
    cache_blob_info info;
    uint64_t at = 0;
    *whole = 0;
    if (s && cache_blob_stat(s, t->digest, &info) == CACHE_OK && info.state == CACHE_BLOB_PARTIAL) {
        for (uint32_t i = 0; i < info.chunks; i++) {
            const void *p;
            size_t n;
            if (cache_blob_chunk(s, t->digest, i, &p, &n, NULL) != CACHE_OK)
                break;
            verify_hasher_update(t->hasher, p, n);
            at += n;
        }
        /* a last, short chunk means nothing more was to come */
        *whole = at == info.size && info.size % CACHE_CHUNK_SIZE != 0;
        if (at != info.size) {
            verify_hasher_reset(t->hasher);
            at = 0;
        }
    }
    if (s)
        cache_snapshot_unref(s);
    return at;
}

/* The waiters of a blob that just became COMPLETE read it through this
 * snapshot if eviction (max_size) removes it before they are done. */
static void keep_snapshot(cache *c, transfer *t)
{
    cache_snapshot *s = cache_snapshot_new(c);
    pthread_mutex_lock(&t->mu);
    if (!t->keep)
        t->keep = s;
    else if (s)
        cache_snapshot_unref(s);
    pthread_mutex_unlock(&t->mu);
}

static uint64_t complete_size(cache *c, transfer *t)
{
    cache_snapshot *s = cache_snapshot_new(c);
    cache_blob_info info = {.size = 0};
    if (s) {
        cache_blob_stat(s, t->digest, &info);
        cache_snapshot_unref(s);
    }
    return info.size;
}

/* Opens the PARTIAL record, resuming what an earlier run (killed, or cut off
 * from the upstream) stored, then starts the upstream request from there. */
static void job_blob_begin(cache *c, void *arg)
{
    transfer *t = arg;
    int complete = 0, whole = 0;
    uint8_t base[32];
    t->hasher = verify_hasher_new();
    cache_status st = t->hasher ? cache_blob_begin(c, t->digest, &complete) : CACHE_IO;
    uint64_t offset = st != CACHE_OK ? 0
                      : complete     ? complete_size(c, t)
                                     : resume_partial(c, t, &whole);
    if (st == CACHE_OK && offset == 0 && !complete) { /* unusable leftovers: start over */
        cache_blob_abort(c, t->digest);
        st = cache_blob_begin(c, t->digest, &complete);
    }
    if (st != CACHE_OK)
        t->write_failed = 1;
    pthread_mutex_lock(&t->mu);
    t->received = offset;
    t->committed = t->mem_first = (uint32_t)((offset + CACHE_CHUNK_SIZE - 1) / CACHE_CHUNK_SIZE);
    if (complete || whole)
        t->total = offset;
    pthread_mutex_unlock(&t->mu);
    if (complete) { /* finished by someone else meanwhile */
        keep_snapshot(c, t);
        set_state(t, T_DONE, UPSTREAM_OK, NULL);
    } else if (whole) /* killed between the last chunk and the digest check */
        job_blob_finish_now(c, t);
    else if (!offset && upstream_is_sluice(t->d->upstream, t->up) && find_base(c, t, base))
        start_blob_delta(t, base); /* child mode: only what changed, from the parent */
    else
        start_blob_upstream(t, offset);
    if (offset && !complete)
        log_info("transfer", "resuming %s at byte %llu", t->key, (unsigned long long)offset);
    transfer_unref(t);
}

static void job_blob_chunk(cache *c, void *arg)
{
    chunk_job *j = arg;
    transfer *t = j->t;
    if (!t->write_failed) {
        verify_hasher_update(t->hasher, j->chunk->data, j->chunk->len);
        if (cache_blob_append(c, t->digest, j->chunk->index, j->chunk->data, j->chunk->len) !=
            CACHE_OK)
            t->write_failed = 1;
    }
    pthread_mutex_lock(&t->mu);
    if (t->mem_count && t->mem[0] == j->chunk) {
        chunk_unref(t->mem[0]);
        memmove(t->mem, t->mem + 1, (t->mem_count - 1) * sizeof(t->mem[0]));
        t->mem_count--;
        t->mem_first++;
    }
    t->committed = j->chunk->index + 1;
    if (t->paused && t->mem_count <= TRANSFER_MEM_CHUNKS / 2) {
        t->paused = 0;
        upstream_unpause(t->d->upstream, t->upstream_id);
    }
    notify_locked(t);
    pthread_mutex_unlock(&t->mu);
    chunk_unref(j->chunk);
    transfer_unref(t);
    free(j);
}

void transfer_enforce_quota(cache *c, const daemon_ctx *d)
{
    if (!d->cfg->max_size)
        return;
    cache_evict_result res = {0};
    if (cache_evict(c, d->cfg->max_size, &res) == CACHE_OK && res.evicted_objects)
        log_info("cache", "max_size: evicted %llu objects (%llu bytes), %llu bytes left",
                 (unsigned long long)res.evicted_objects, (unsigned long long)res.evicted_bytes,
                 (unsigned long long)res.size_after);
}

/* Checks the digest of everything appended and makes the blob servable, or
 * deletes it. On the writer thread. */
static void job_blob_finish_now(cache *c, transfer *t)
{
    uint8_t got[VERIFY_DIGEST_LEN];
    int ok = !t->write_failed;
    if (ok) {
        verify_hasher_final(t->hasher, got);
        ok = memcmp(got, t->digest, sizeof(got)) == 0;
        if (!ok)
            METRIC_ADD(digest_mismatches, 1);
    }
    if (ok && cache_blob_complete(c, t->digest, t->received) == CACHE_OK) {
        keep_snapshot(c, t);
        set_state(t, T_DONE, UPSTREAM_OK, NULL);
        transfer_enforce_quota(c, t->d);
        precompute_deltas(c, t);
    } else {
        cache_blob_abort(c, t->digest);
        set_state(t, T_FAILED, UPSTREAM_BAD_RESPONSE,
                  t->write_failed ? "cache write failed"
                                  : "upstream sent bytes that do not match the digest");
    }
}

static void job_blob_finish(cache *c, void *arg)
{
    transfer *t = arg;
    job_blob_finish_now(c, t);
    transfer_unref(t);
}

static void submit_chunk(transfer *t, chunk_buf *chunk)
{
    chunk_job *j = malloc(sizeof(*j));
    if (!j)
        abort();
    atomic_fetch_add(&t->refs, 1);
    atomic_fetch_add(&chunk->refs, 1);
    j->t = t;
    j->chunk = chunk;
    writer_submit(t->d->writer, job_blob_chunk, j);
}

static void submit(transfer *t, writer_job_fn fn)
{
    atomic_fetch_add(&t->refs, 1);
    writer_submit(t->d->writer, fn, t);
}

/* ---------- blob upstream callbacks (upstream thread) ---------- */

static void blob_on_headers(void *arg, const upstream_response *resp)
{
    transfer *t = arg;
    pthread_mutex_lock(&t->mu);
    t->total = resp->content_length >= 0 ? (uint64_t)resp->content_length : UINT64_MAX;
    t->state = T_STREAMING;
    notify_locked(t);
    pthread_mutex_unlock(&t->mu);
}

static chunk_buf *current_chunk(transfer *t)
{
    chunk_buf *last = t->mem_count ? t->mem[t->mem_count - 1] : NULL;
    if (last && last->len < CACHE_CHUNK_SIZE)
        return last;
    if (t->mem_count >= TRANSFER_MEM_CHUNKS)
        return NULL;
    chunk_buf *c = chunk_new((uint32_t)(t->received / CACHE_CHUNK_SIZE));
    if (t->mem_count == 0)
        t->mem_first = c->index;
    t->mem[t->mem_count++] = c;
    return c;
}

static int blob_on_data(void *arg, const void *data, size_t len)
{
    transfer *t = arg;
    const char *p = data;
    pthread_mutex_lock(&t->mu);
    /* All or nothing: a write callback never spans more than two chunks. */
    chunk_buf *last = t->mem_count ? t->mem[t->mem_count - 1] : NULL;
    size_t room = last && last->len < CACHE_CHUNK_SIZE ? CACHE_CHUNK_SIZE - last->len : 0;
    if (len > room && t->mem_count >= TRANSFER_MEM_CHUNKS) {
        t->paused = 1;
        pthread_mutex_unlock(&t->mu);
        return 0;
    }
    while (len > 0) {
        chunk_buf *c = current_chunk(t);
        size_t n = CACHE_CHUNK_SIZE - c->len < len ? CACHE_CHUNK_SIZE - c->len : len;
        memcpy(c->data + c->len, p, n);
        c->len += n;
        t->received += n;
        p += n;
        len -= n;
        if (c->len == CACHE_CHUNK_SIZE)
            submit_chunk(t, c);
    }
    notify_locked(t);
    pthread_mutex_unlock(&t->mu);
    return 1;
}

static void blob_on_done(void *arg, upstream_result result, const upstream_response *resp)
{
    (void)resp;
    transfer *t = arg;
    pthread_mutex_lock(&t->mu);
    if (result == UPSTREAM_OK && t->total != UINT64_MAX && t->received != t->total)
        result = UPSTREAM_BAD_RESPONSE;
    chunk_buf *last = t->mem_count ? t->mem[t->mem_count - 1] : NULL;
    if (result == UPSTREAM_OK && last && last->len < CACHE_CHUNK_SIZE)
        submit_chunk(t, last);
    if (result == UPSTREAM_OK && t->total == UINT64_MAX)
        t->total = t->received;
    pthread_mutex_unlock(&t->mu);
    if (result == UPSTREAM_OK) {
        submit(t, job_blob_finish);
    } else {
        /* The chunks already written stay PARTIAL: the next request for
         * this blob (in this run or after a restart) resumes from them. */
        set_state(t, T_FAILED, result, "upstream transfer failed");
    }
    transfer_unref(t); /* the upstream request's reference */
}

/* ---------- deltas from a parent Sluice (child mode) ---------- */

#define DELTA_ACCEPT "sluice-bsz, vcdiff"
#define MAX_PARENT_DELTA ((size_t)512 << 20)
#define MAX_EARLIER 256

typedef struct {
    delta_layer layers[MAX_EARLIER];
    char titles[MAX_EARLIER][128];
    char types[MAX_EARLIER][128];
    size_t n;
} layer_set;

/* Adds the layers of manifest json `doc` to set (all of them, or the one
 * whose digest is `only`). */
static void add_layers(layer_set *set, json_t *doc, const uint8_t *only, uint32_t age)
{
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(doc, "layers"), i, l)
    {
        const char *d = json_string_value(json_object_get(l, "digest"));
        uint8_t digest[32];
        if (set->n >= MAX_EARLIER || !d || verify_digest_parse(d, strlen(d), digest) != VERIFY_OK ||
            (only && memcmp(only, digest, 32) != 0))
            continue;
        delta_layer *dl = &set->layers[set->n];
        const char *title = json_string_value(
            json_object_get(json_object_get(l, "annotations"), "org.opencontainers.image.title"));
        snprintf(set->titles[set->n], sizeof(set->titles[0]), "%s", title ? title : "");
        snprintf(set->types[set->n], sizeof(set->types[0]), "%s",
                 json_string_value(json_object_get(l, "mediaType"))
                     ? json_string_value(json_object_get(l, "mediaType"))
                     : "");
        dl->title = title ? set->titles[set->n] : NULL;
        dl->media_type = set->types[set->n];
        dl->position = (uint32_t)i;
        dl->age = age;
        dl->size = (uint64_t)json_integer_value(json_object_get(l, "size"));
        memcpy(dl->digest, digest, 32);
        set->n++;
    }
}

static json_t *load_manifest(cache_snapshot *s, const uint8_t digest[32])
{
    const char *mt;
    const void *body;
    size_t len;
    if (cache_manifest_get(s, digest, &mt, &body, &len) != CACHE_OK)
        return NULL;
    return json_loadb(body, len, 0, NULL);
}

typedef struct {
    cache_snapshot *s;
    const char *repo_key;
    const uint8_t *skip;
    layer_set *earlier;
} tag_walk;

static int add_tagged(void *arg, const char *tag, size_t len)
{
    (void)len;
    tag_walk *w = arg;
    uint8_t d[32];
    uint64_t when;
    if (cache_tag_get(w->s, w->repo_key, tag, d, &when) != CACHE_OK || memcmp(d, w->skip, 32) == 0)
        return 0;
    json_t *doc = load_manifest(w->s, d);
    add_layers(w->earlier, doc, NULL, 1);
    json_decref(doc);
    return w->earlier->n >= MAX_EARLIER;
}

static int first_ref(void *arg, const uint8_t manifest[32])
{
    memcpy(arg, manifest, 32);
    return 1;
}

/* Takes the picked layer (and any other copy of its digest) out of set. */
static void drop_layer(layer_set *set, const uint8_t digest[32])
{
    for (size_t i = 0; i < set->n;) {
        if (memcmp(set->layers[i].digest, digest, 32) != 0) {
            i++;
            continue;
        }
        set->n--;
        set->layers[i] = set->layers[set->n];
        memcpy(set->titles[i], set->titles[set->n], sizeof(set->titles[0]));
        memcpy(set->types[i], set->types[set->n], sizeof(set->types[0]));
        set->layers[i].title = set->layers[i].title ? set->titles[i] : NULL;
        set->layers[i].media_type = set->types[i];
    }
}

/* Up to max earlier versions of the target layer that this cache holds
 * whole, best first: the layers with the same title (else position and
 * media type) in the repository's other tagged manifests
 * (delta_select_bases). Not on an event loop. */
static size_t find_bases(cache *c, transfer *t, uint8_t (*bases)[32], size_t max)
{
    cache_snapshot *s = cache_snapshot_new(c);
    uint8_t manifest[32];
    layer_set *target = calloc(1, sizeof(*target)), *earlier = calloc(1, sizeof(*earlier));
    size_t found = 0;
    if (s && target && earlier &&
        cache_ref_list(s, t->repo_key, t->digest, first_ref, manifest) > 0) {
        json_t *doc = load_manifest(s, manifest);
        add_layers(target, doc, t->digest, 0);
        json_decref(doc);
        tag_walk w = {s, t->repo_key, manifest, earlier};
        cache_tag_list(s, t->repo_key, NULL, 0, add_tagged, &w);
        while (target->n && found < max && earlier->n) {
            long pick = -1;
            delta_select_bases(target->layers, 1, earlier->layers, earlier->n, &pick);
            if (pick < 0)
                break;
            uint8_t d[32];
            memcpy(d, earlier->layers[pick].digest, 32);
            cache_blob_info info;
            if (cache_blob_stat(s, d, &info) == CACHE_OK && info.state == CACHE_BLOB_COMPLETE)
                memcpy(bases[found++], d, 32);
            drop_layer(earlier, d);
        }
    }
    free(target);
    free(earlier);
    if (s)
        cache_snapshot_unref(s);
    return found;
}

static int find_base(cache *c, transfer *t, uint8_t base[32])
{
    return find_bases(c, t, (uint8_t(*)[32])base, 1) == 1;
}

static int in_scopes(const char *scopes, const char *repo_key)
{
    if (!scopes || !*scopes)
        return 1;
    char *copy = strdup(scopes), *save = NULL;
    int yes = 0;
    for (char *w = copy ? strtok_r(copy, " \t", &save) : NULL; w && !yes;
         w = strtok_r(NULL, " \t", &save)) {
        size_t n = strlen(w);
        yes = strncmp(repo_key, w, n) == 0 && (repo_key[n] == 0 || repo_key[n] == '/');
    }
    free(copy);
    return yes;
}

/* A new version arrived whole: compute deltas from the versions before it
 * now, on the delta workers, so that devices asking later get them at once. */
static void precompute_deltas(cache *c, transfer *t)
{
    const config *cfg = t->d->cfg;
    if (!cfg->delta_precompute || !in_scopes(cfg->delta_precompute_scopes, t->repo_key))
        return;
    uint8_t(*bases)[32] = calloc(cfg->delta_precompute, 32);
    if (!bases)
        return;
    size_t n = find_bases(c, t, bases, cfg->delta_precompute);
    for (size_t i = 0; i < n; i++)
        deltas_precompute(t->d->deltas, bases[i], t->digest);
    free(bases);
}

static void delta_on_headers(void *arg, const upstream_response *resp)
{
    transfer *t = arg;
    if (resp->im[0])
        t->delta_mode = 1; /* 226: collect the delta, apply it, then verify */
    else
        blob_on_headers(arg, resp); /* the parent sent the whole blob */
}

static int delta_on_data(void *arg, const void *data, size_t len)
{
    transfer *t = arg;
    if (!t->delta_mode)
        return blob_on_data(arg, data, len);
    if (t->delta_len + len > MAX_PARENT_DELTA) {
        t->delta_bad = 1;
        return 1;
    }
    char *grown = realloc(t->delta_buf, t->delta_len + len);
    if (!grown)
        abort();
    memcpy(grown + t->delta_len, data, len);
    t->delta_buf = grown;
    t->delta_len += len;
    return 1;
}

typedef struct {
    transfer *t;
    cache *c;
    chunk_buf *chunk;
    int failed;
} apply_sink;

static int apply_flush(apply_sink *a)
{
    chunk_buf *ch = a->chunk;
    if (!ch->len)
        return 0;
    verify_hasher_update(a->t->hasher, ch->data, ch->len);
    if (cache_blob_append(a->c, a->t->digest, ch->index, ch->data, ch->len) != CACHE_OK)
        return -1;
    pthread_mutex_lock(&a->t->mu);
    a->t->received += ch->len;
    a->t->committed = a->t->mem_first = ch->index + 1;
    pthread_mutex_unlock(&a->t->mu);
    ch->index++;
    ch->len = 0;
    return 0;
}

static int apply_write(void *arg, const void *p, size_t n)
{
    apply_sink *a = arg;
    const char *q = p;
    while (n) {
        size_t room = CACHE_CHUNK_SIZE - a->chunk->len, k = n < room ? n : room;
        memcpy(a->chunk->data + a->chunk->len, q, k);
        a->chunk->len += k;
        q += k;
        n -= k;
        if (a->chunk->len == CACHE_CHUNK_SIZE && apply_flush(a) != 0)
            return -1;
    }
    return 0;
}

/* Rebuilds the target from the base and the parent's delta into the PARTIAL
 * blob, chunk by chunk. 0 when every byte was written. */
static int apply_parent_delta(cache *c, transfer *t)
{
    char *base = NULL;
    size_t blen = 0;
    if (t->delta_bad || blobs_load(c, t->delta_base, (size_t)1 << 31, &base, &blen) != 0)
        return -1;
    apply_sink a = {t, c, chunk_new(0), 0};
    delta_options opt;
    delta_options_init(&opt);
    opt.base_sha256 = t->delta_base;
    opt.zstd_max_window_log = 31;
    delta_report rep;
    delta_status st =
        delta_decode(base, blen, t->delta_buf, t->delta_len, &opt, apply_write, &a, &rep);
    int rc = st == DELTA_OK ? apply_flush(&a) : -1;
    if (st != DELTA_OK)
        log_warn("transfer", "delta from the parent for %s rejected: %s %s", t->key,
                 delta_strerror(st), rep.msg);
    chunk_unref(a.chunk);
    free(base);
    return rc;
}

/* The whole blob after all: forget what the delta attempt wrote. */
static void fall_back_to_full(cache *c, transfer *t)
{
    int complete = 0;
    METRIC_ADD(parent_deltas_rejected, 1);
    cache_blob_abort(c, t->digest);
    verify_hasher_reset(t->hasher);
    pthread_mutex_lock(&t->mu);
    t->delta_mode = 0;
    t->received = 0;
    t->committed = t->mem_first = 0;
    t->total = UINT64_MAX;
    pthread_mutex_unlock(&t->mu);
    if (cache_blob_begin(c, t->digest, &complete) != CACHE_OK)
        t->write_failed = 1;
    start_blob_upstream(t, 0);
}

static void job_apply_delta(cache *c, void *arg)
{
    transfer *t = arg;
    uint8_t got[VERIFY_DIGEST_LEN];
    if (apply_parent_delta(c, t) == 0) {
        verify_hasher_final(t->hasher, got);
        if (memcmp(got, t->digest, 32) == 0 &&
            cache_blob_complete(c, t->digest, t->received) == CACHE_OK) {
            METRIC_ADD(parent_deltas_applied, 1);
            keep_snapshot(c, t);
            pthread_mutex_lock(&t->mu);
            t->total = t->received;
            pthread_mutex_unlock(&t->mu);
            set_state(t, T_DONE, UPSTREAM_OK, NULL);
            transfer_enforce_quota(c, t->d);
            transfer_unref(t);
            return;
        }
        log_warn("transfer", "delta from the parent for %s rebuilt the wrong bytes", t->key);
    }
    fall_back_to_full(c, t);
    transfer_unref(t);
}

static void delta_on_done(void *arg, upstream_result result, const upstream_response *resp)
{
    transfer *t = arg;
    if (!t->delta_mode) {
        blob_on_done(arg, result, resp);
        return;
    }
    if (result == UPSTREAM_OK) {
        submit(t, job_apply_delta);
    } else {
        t->delta_bad = 1;
        submit(t, job_apply_delta); /* falls back to the full blob */
    }
    transfer_unref(t); /* the upstream request's reference */
}

/* Asks the parent Sluice for the target as a delta against base. */
static void start_blob_delta(transfer *t, const uint8_t base[32])
{
    static const upstream_callbacks cb = {delta_on_headers, delta_on_data, delta_on_done};
    upstream_request req = {.conf = t->up, .a_im = DELTA_ACCEPT};
    char hex[VERIFY_DIGEST_TEXT_LEN], bhex[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(t->digest, hex);
    verify_digest_format(base, bhex);
    memcpy(t->delta_base, base, 32);
    snprintf(req.if_none_match, sizeof(req.if_none_match), "\"%s\"", bhex);
    snprintf(req.path, sizeof(req.path), "/v2/%s/blobs/%s", t->repo, hex);
    snprintf(req.repository, sizeof(req.repository), "%s", t->repo);
    atomic_fetch_add(&t->refs, 1);
    upstream_submit(t->d->upstream, &req, &cb, t, &t->upstream_id);
}

static void start_blob_upstream(transfer *t, uint64_t offset)
{
    static const upstream_callbacks cb = {blob_on_headers, blob_on_data, blob_on_done};
    upstream_request req = {.conf = t->up, .resumable = 1, .offset = offset};
    char hex[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(t->digest, hex);
    snprintf(req.path, sizeof(req.path), "/v2/%s/blobs/%s", t->repo, hex);
    snprintf(req.repository, sizeof(req.repository), "%s", t->repo);
    atomic_fetch_add(&t->refs, 1);
    upstream_submit(t->d->upstream, &req, &cb, t, &t->upstream_id);
}

/* The writer opens (or resumes) the PARTIAL record first; it then starts
 * the upstream request from the first byte it does not have. */
static void start_blob(transfer *t)
{
    submit(t, job_blob_begin);
}

/* ---------- manifests ---------- */

/* The referrer descriptor of a manifest that has a `subject`, as JSON text
 * (malloc'd), or NULL when it has none. */
char *transfer_referrer_descriptor(json_t *root, const uint8_t digest[32], const char *media_type,
                                   size_t len, uint8_t subject[32])
{
    json_t *subj = json_object_get(root, "subject");
    const char *sd = json_string_value(json_object_get(subj, "digest"));
    if (!sd || verify_digest_parse(sd, strlen(sd), subject) != VERIFY_OK)
        return NULL;
    char hex[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(digest, hex);
    json_t *d = json_pack("{s:s, s:s, s:I}", "mediaType", media_type, "digest", hex, "size",
                          (json_int_t)len);
    json_t *at = json_object_get(root, "artifactType");
    if (!json_is_string(at))
        at = json_object_get(json_object_get(root, "config"), "mediaType");
    if (json_is_string(at))
        json_object_set(d, "artifactType", at);
    json_t *ann = json_object_get(root, "annotations");
    if (json_is_object(ann))
        json_object_set(d, "annotations", ann);
    char *text = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    return text;
}

static void put_ref(cache *c, const char *repo_key, json_t *desc, const uint8_t manifest[32])
{
    const char *text = json_string_value(json_object_get(desc, "digest"));
    uint8_t d[32];
    if (text && verify_digest_parse(text, strlen(text), d) == VERIFY_OK)
        cache_ref_put(c, repo_key, d, manifest);
}

/* What a manifest references in its repository: config, layers, and for an
 * index its manifests (trust.c decides blobs and children through these). */
static void put_refs(cache *c, const char *repo_key, json_t *root, const uint8_t manifest[32])
{
    put_ref(c, repo_key, json_object_get(root, "config"), manifest);
    size_t i;
    json_t *desc;
    json_array_foreach(json_object_get(root, "layers"), i, desc)
        put_ref(c, repo_key, desc, manifest);
    json_array_foreach(json_object_get(root, "manifests"), i, desc)
        put_ref(c, repo_key, desc, manifest);
}

cache_status transfer_store_manifest(cache *c, const char *repo_key, const char *tag,
                                     const uint8_t digest[32], const char *media_type,
                                     const void *body, size_t len)
{
    cache_status st = cache_manifest_put(c, digest, media_type, body, len);
    if (st == CACHE_OK && tag)
        st = cache_tag_put(c, repo_key, tag, digest, (uint64_t)time(NULL));
    json_t *root = json_loadb(body, len, 0, NULL);
    if (root && st == CACHE_OK) {
        put_refs(c, repo_key, root, digest);
        uint8_t subject[32];
        char *desc = transfer_referrer_descriptor(root, digest, media_type, len, subject);
        if (desc)
            cache_referrer_put(c, subject, digest, desc, strlen(desc));
        free(desc);
    }
    json_decref(root);
    return st;
}

static void job_manifest_store(cache *c, void *arg)
{
    transfer *t = arg;
    /* Served from memory either way; a failed write only costs a refetch. */
    transfer_store_manifest(c, t->repo_key, t->by_digest ? NULL : t->reference, t->digest,
                            t->media_type, t->body, t->body_len);
    set_state(t, T_DONE, UPSTREAM_OK, NULL);
    transfer_enforce_quota(c, t->d);
    transfer_unref(t);
}

static void job_tag_confirm(cache *c, void *arg)
{
    transfer *t = arg;
    cache_tag_put(c, t->repo_key, t->reference, t->digest, (uint64_t)time(NULL));
    set_state(t, T_DONE, UPSTREAM_OK, NULL);
    transfer_unref(t);
}

static int manifest_on_data(void *arg, const void *data, size_t len)
{
    transfer *t = arg;
    if (t->body_len + len > TRANSFER_MAX_MANIFEST) {
        t->write_failed = 1; /* too large: rejected in on_done */
        return 1;
    }
    char *nb = realloc(t->body, t->body_len + len);
    if (!nb)
        abort();
    memcpy(nb + t->body_len, data, len);
    t->body = nb;
    t->body_len += len;
    return 1;
}

static void copy_media_type(transfer *t, const char *ct)
{
    size_t n = strcspn(ct, "; \t");
    if (n >= sizeof(t->media_type))
        n = sizeof(t->media_type) - 1;
    memcpy(t->media_type, ct, n);
    t->media_type[n] = 0;
}

/* Checks a fetched manifest: size, JSON, digest (requested, or announced by
 * the upstream for a tag). NULL when good, else why not. */
static const char *check_manifest(transfer *t, const upstream_response *resp)
{
    if (t->write_failed)
        return "manifest larger than 4 MiB";
    json_t *parsed = t->body ? json_loadb(t->body, t->body_len, 0, NULL) : NULL;
    if (!parsed)
        return "manifest is not valid JSON";
    json_decref(parsed);
    uint8_t got[VERIFY_DIGEST_LEN];
    verify_sha256(t->body, t->body_len, got);
    if (t->by_digest && memcmp(got, t->digest, sizeof(got)) != 0)
        return "manifest does not match its digest";
    uint8_t announced[VERIFY_DIGEST_LEN];
    const char *dcd = resp->docker_content_digest;
    if (dcd[0] && verify_digest_parse(dcd, strlen(dcd), announced) == VERIFY_OK &&
        memcmp(announced, got, sizeof(got)) != 0)
        return "manifest does not match the upstream's Docker-Content-Digest";
    memcpy(t->digest, got, sizeof(got));
    return NULL;
}

static void manifest_failed(transfer *t, upstream_result result, const char *msg)
{
    if (!t->by_digest && t->have_cached_digest && result != UPSTREAM_NOT_FOUND &&
        result != UPSTREAM_OK) {
        memcpy(t->digest, t->cached_digest, sizeof(t->digest));
        t->outcome = M_STALE;
        set_state(t, T_DONE, UPSTREAM_OK, NULL);
        return;
    }
    set_state(t, T_FAILED, result, msg);
}

static void manifest_get_done(void *arg, upstream_result result, const upstream_response *resp)
{
    transfer *t = arg;
    if (result != UPSTREAM_OK) {
        manifest_failed(t, result, "upstream request failed");
    } else {
        copy_media_type(t, resp->content_type);
        const char *why = check_manifest(t, resp);
        if (why) {
            METRIC_ADD(digest_mismatches, 1);
            manifest_failed(t, UPSTREAM_BAD_RESPONSE, why);
        } else {
            t->outcome = M_FETCHED;
            t->total = t->body_len;
            submit(t, job_manifest_store);
        }
    }
    transfer_unref(t);
}

static void manifest_head_done(void *arg, upstream_result result, const upstream_response *resp)
{
    transfer *t = arg;
    uint8_t announced[VERIFY_DIGEST_LEN];
    const char *dcd = resp->docker_content_digest;
    if (result == UPSTREAM_OK && dcd[0] &&
        verify_digest_parse(dcd, strlen(dcd), announced) == VERIFY_OK &&
        memcmp(announced, t->cached_digest, sizeof(announced)) == 0) {
        memcpy(t->digest, t->cached_digest, sizeof(t->digest));
        t->outcome = M_UNCHANGED;
        submit(t, job_tag_confirm);
    } else if (result == UPSTREAM_OK) {
        start_manifest_get(t); /* the tag moved (or no digest header): fetch it */
    } else {
        manifest_failed(t, result, "upstream request failed");
    }
    transfer_unref(t);
}

static void manifest_request(transfer *t, upstream_request *req)
{
    memset(req, 0, sizeof(*req));
    req->conf = t->up;
    req->accept = MANIFEST_ACCEPT;
    snprintf(req->path, sizeof(req->path), "/v2/%s/manifests/%s", t->repo, t->reference);
    snprintf(req->repository, sizeof(req->repository), "%s", t->repo);
}

static void start_manifest_get(transfer *t)
{
    static const upstream_callbacks cb = {NULL, manifest_on_data, manifest_get_done};
    upstream_request req;
    manifest_request(t, &req);
    atomic_fetch_add(&t->refs, 1);
    upstream_submit(t->d->upstream, &req, &cb, t, &t->upstream_id);
}

static void start_manifest(transfer *t)
{
    if (!t->have_cached_digest) {
        start_manifest_get(t);
        return;
    }
    static const upstream_callbacks cb = {NULL, NULL, manifest_head_done};
    upstream_request req;
    manifest_request(t, &req);
    req.head = 1;
    req.no_retry = 1; /* a cached digest answers if the upstream does not */
    atomic_fetch_add(&t->refs, 1);
    upstream_submit(t->d->upstream, &req, &cb, t, &t->upstream_id);
}

/* ---------- creation ---------- */

static transfer *transfer_new(daemon_ctx *d, const transfer_spec *s, const char *key)
{
    transfer *t = calloc(1, sizeof(*t));
    if (!t)
        abort();
    atomic_init(&t->refs, 2); /* the table's and the caller's */
    pthread_mutex_init(&t->mu, NULL);
    t->d = d;
    t->kind = s->kind;
    t->up = s->up;
    snprintf(t->key, sizeof(t->key), "%s", key);
    snprintf(t->repo, sizeof(t->repo), "%s", s->repo);
    snprintf(t->reference, sizeof(t->reference), "%s", s->reference);
    transfer_repo_key(s->up, s->repo, t->repo_key, sizeof(t->repo_key));
    t->by_digest = s->by_digest;
    if (s->by_digest)
        memcpy(t->digest, s->digest, sizeof(t->digest));
    if (s->cached_digest) {
        t->have_cached_digest = 1;
        memcpy(t->cached_digest, s->cached_digest, sizeof(t->cached_digest));
    }
    t->total = UINT64_MAX;
    t->state = T_PENDING;
    return t;
}

/* Under the table lock, so that a transfer finishing right now is either
 * still listed or already visible in the cache. */
static int now_cached(daemon_ctx *d, const transfer_spec *s)
{
    if (!s->by_digest)
        return 0;
    cache_snapshot *snap = cache_snapshot_new(d->cache);
    if (!snap)
        return 0;
    int hit;
    if (s->kind == TRANSFER_BLOB) {
        cache_blob_info info;
        hit = cache_blob_stat(snap, s->digest, &info) == CACHE_OK &&
              info.state == CACHE_BLOB_COMPLETE;
    } else {
        const char *mt;
        const void *body;
        size_t len;
        hit = cache_manifest_get(snap, s->digest, &mt, &body, &len) == CACHE_OK;
    }
    cache_snapshot_unref(snap);
    return hit;
}

transfer *transfer_get(daemon_ctx *d, const transfer_spec *spec, int *joined)
{
    char key[600];
    make_key(spec, key, sizeof(key));
    transfer_table *tt = d->transfers;
    pthread_mutex_lock(&tt->mu);
    for (struct entry *e = tt->head; e; e = e->next) {
        if (strcmp(e->t->key, key) == 0) {
            atomic_fetch_add(&e->t->refs, 1);
            pthread_mutex_unlock(&tt->mu);
            *joined = 1;
            METRIC_ADD(coalesced_waiters, 1);
            return e->t;
        }
    }
    if (now_cached(d, spec)) {
        pthread_mutex_unlock(&tt->mu);
        *joined = 2;
        return NULL;
    }
    transfer *t = transfer_new(d, spec, key);
    struct entry *e = malloc(sizeof(*e));
    if (!e)
        abort();
    e->t = t;
    e->next = tt->head;
    tt->head = e;
    pthread_mutex_unlock(&tt->mu);
    atomic_fetch_add(&g_metrics.inflight_transfers, 1);
    *joined = 0;
    if (t->kind == TRANSFER_BLOB)
        start_blob(t);
    else
        start_manifest(t);
    return t;
}
