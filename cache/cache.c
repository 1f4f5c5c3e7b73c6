/*
 * cache.c — Sluice's content store on LMDB (implements cache.h).
 *
 * What it is for: keeping verified blobs (chunked), manifests, tags,
 * referrers, references, deltas, pins and counters on local disk so an edge
 * site can serve them without the upstream, crash-safely, with readers that
 * never block and never copy, within a size bound (LRU eviction).
 *
 * How it works. One LMDB environment in the cache directory (DIR/data.mdb,
 * DIR/lock.mdb), opened with MDB_NOTLS so a read transaction belongs to a
 * snapshot object rather than to a thread, holds nine named databases. Every
 * state change is one write transaction (run_write), so a crash leaves either
 * the old or the new state. A snapshot is a refcounted read-only transaction;
 * pointers into LMDB's map stay valid while it lives.
 *
 * Record layouts (all integers fixed width; keys big-endian so they sort,
 * values little-endian):
 *
 *   blobmeta   key: digest (32 raw bytes)
 *              value, 32 bytes:
 *                0  u8    version (1)
 *                1  u8    state (1 = PARTIAL, 2 = COMPLETE)
 *                2  u8    flags (bit 0: pinned; other bits zero)
 *                3  u8    zero
 *                4  u32le chunks stored
 *                8  u64le size (bytes appended so far / total when COMPLETE)
 *               16  u64le created (unix seconds)
 *               24  u64le accessed (unix seconds, cache_touch)
 *              invariant: chunks == ceil(size / CACHE_CHUNK_SIZE).
 *   chunks     key: digest (32) || u32be index, so a blob's chunks are
 *              adjacent and in order; value: the chunk's bytes (1 ..
 *              CACHE_CHUNK_SIZE, all but the last exactly CACHE_CHUNK_SIZE).
 *   manifests  key: digest (32)
 *              value: 0 u8 version (1) | 1 u8 flags (bit 0: pinned) | 2 u16le media type
 *              length m | 4 u32 zero | 8 u64le accessed | 16 media type (m
 *              bytes, no NUL inside) | 16+m NUL | 17+m body (to the end).
 *   tags       key: repository bytes || 0x00 || tag bytes (no NULs inside;
 *              at most mdb_env_get_maxkeysize() bytes)
 *              value, 40 bytes: 0 digest (32) | 32 u64le confirmed_at.
 *   referrers  key: subject digest (32) || referrer digest (32)
 *              value: descriptor JSON bytes || 0x00 (the NUL is not counted
 *              in the length handed to callers; it makes the pointer a C
 *              string too).
 *   refs       (MDB_DUPSORT | MDB_DUPFIXED) key: repository bytes || 0x00
 *              || digest (32) of a blob or child manifest; each duplicate
 *              value: the digest (32) of a manifest of that repository that
 *              references it. Sorted, so a (key, value) pair is stored once.
 *   deltas     key: base digest (32) || target digest (32) || codec name
 *              (1..15 bytes, no NUL); value, 40 bytes: 0 delta digest (32)
 *              | 32 u64le delta size. The delta's bytes are a COMPLETE blob
 *              under the delta digest.
 *   verdicts   key: policy hash (32) || manifest digest (32) || repository
 *              bytes || 0x00 || tag bytes (tag empty when asked by digest;
 *              no NULs inside; at most mdb_env_get_maxkeysize() bytes)
 *              value: 0 u8 version (1) | 1 u8 allowed (0 or 1) | 2..7 zero |
 *              8 u64le decided_at | 16 reason bytes (no NUL inside) || 0x00.
 *              Sorted by policy first, so cache_verdict_prune skips the
 *              policy it keeps in one seek.
 *   counters   two records:
 *              "counters" -> 5 x u64le: hits, misses, bytes_served,
 *                  bytes_upstream, bytes_saved_deltas (cache_counters_*).
 *              "totals" -> 0 u64le version (1) | then 6 x u64le: COMPLETE
 *                  blobs, their bytes, PARTIAL blobs, manifest body bytes,
 *                  pinned bytes, delta bytes (sum of delta index sizes).
 *                  Updated in the same write transaction as every change it
 *                  counts, so cache_stat is O(1) and always consistent. A
 *                  store from before it existed gets it from one walk of
 *                  blobmeta, manifests and deltas when it is opened.
 *
 * Pins and eviction. A pinned blob or manifest is never evicted. cache_evict
 * reads the totals, and while blob bytes + manifest bytes exceed the bound
 * it deletes, oldest access time first, first the delta index entries and
 * their (unpinned) delta blobs, then unpinned COMPLETE blobs and manifests.
 * Candidates are collected under a snapshot and deleted in write
 * transactions of at most EVICT_BATCH objects (EVICT_BATCH_CHUNKS chunks),
 * each re-checking that the object is still there, still unpinned and not
 * accessed since. A deleted manifest takes its tags, its rows in refs (as
 * the referencing manifest) and its referrers rows (as the referrer) with
 * it. PARTIAL blobs (transfers in progress) are never candidates; readers
 * keep what their snapshots see (MVCC; LMDB does not reuse pages a live
 * reader can see), so an object being served is never cut short.
 *
 * Zero-copy offsets. mdb_env_info's me_mapaddr is only the address recorded
 * in the meta page (non-NULL only with MDB_FIXEDMAP), not where the map is.
 * The real start of the map is found once after opening (and after every
 * remap) by looking up, in /proc/self/maps, the mapping that contains a
 * pointer LMDB returned from the map: base = mapping start - its file
 * offset. A value's file offset is then its pointer minus that base.
 *
 * Generations. An atomic counter is bumped after every write transaction
 * that committed a change; a snapshot remembers the value it saw when it
 * began (read before mdb_txn_begin, so it can only be older than the data it
 * sees), and cache_snapshot_current replaces a slot's snapshot when the
 * counter moved on.
 *
 * Map growth. When a write hits MDB_MAP_FULL its transaction is aborted,
 * the map is doubled with mdb_env_set_mapsize and the write is retried (up
 * to GROW_ROUNDS times, for maps too small for even one chunk).
 * mdb_env_set_mapsize munmaps and mmaps the file again: every pointer into
 * the old map dies and a transaction running meanwhile would fault. So a
 * gate (mutex + condition variable) counts live snapshots and running write
 * transactions; the growing writer sets `growing`, which makes new write
 * transactions wait and new snapshots fail (cache_snapshot_new returns NULL,
 * cache_snapshot_current drops its slot's snapshot and returns NULL), then
 * waits until no snapshot and no other write is live, at most GROW_WAIT_MS.
 * If they do not drain in time the write fails with CACHE_FULL and service
 * goes on. Internal readers on worker threads (stat, verify, partial) wait
 * for the growth instead of failing. A write issued by a thread that itself
 * holds a snapshot cannot grow the map (it would wait for itself): it waits
 * GROW_WAIT_MS and gets CACHE_FULL. Growth is a fallback: give the cache a
 * map_size as large as its disk budget (the map is only address space; the
 * file grows as pages are used) so it rarely or never happens, and have
 * readers refresh or drop idle slots (an idle thread's slot is a live
 * snapshot). cache_blob_verify holds a snapshot for VERIFY_WINDOW chunks at a
 * time, so hashing a large blob does not hold growth off for long.
 *
 * Threads. Writes may come from any thread: LMDB serialises write
 * transactions (MDB_NOTLS keeps reader slots off threads). A snapshot may be
 * referenced and released from any thread; every DB record is loaded into
 * its transaction when it begins, so reads through it do not modify it.
 * (LMDB documents one thread at a time per transaction; with the records
 * preloaded, LMDB 0.9's read paths only read a read-only transaction, but
 * callers that want to stay inside the documented contract read through a
 * given snapshot from one thread at a time.)
 *
 * Nothing here knows about HTTP or the event loop.
 */
#include "cache.h"

#include <errno.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <sys/stat.h>
#include <time.h>

#define DEFAULT_MAP_SIZE (1ull << 30)
#define DEFAULT_MAX_READERS 4096u
#define MAX_DBS 16
#define GROW_ROUNDS 4
#define GROW_WAIT_MS 2000
#define VERIFY_WINDOW 64 /* chunks hashed under one snapshot by cache_blob_verify */

#define META_LEN 32
#define META_VERSION 1
#define CHUNK_KEY_LEN (CACHE_DIGEST_LEN + 4)
#define MANIFEST_HDR 16
#define MANIFEST_VERSION 1
#define TAG_VAL_LEN (CACHE_DIGEST_LEN + 8)
#define REF_KEY_LEN (2 * CACHE_DIGEST_LEN)
#define KEY_BUF 2048
#define FLAG_PINNED 0x01
#define CODEC_MAX 15
#define DELTA_KEY_MAX (2 * CACHE_DIGEST_LEN + CODEC_MAX)
#define DELTA_VAL_LEN (CACHE_DIGEST_LEN + 8)
#define VERDICT_VERSION 1
#define VERDICT_HDR 16
#define VERDICT_PRUNE_BATCH 512 /* verdicts deleted per write transaction */
#define TOTALS_VERSION 1
#define N_COUNTERS 5
#define EVICT_BATCH 256          /* objects deleted per write transaction */
#define EVICT_BATCH_CHUNKS 4096u /* chunk records per write transaction */

/* Internal results besides 0, a cache_status (-1..-5) and LMDB/errno codes. */
#define W_NOCHANGE (-1000) /* write step changed nothing: abort, report CACHE_OK */
#define W_STOP (-1001)     /* walk visitor: stop here */

struct cache {
    MDB_env *env;
    MDB_dbi blobmeta, chunks, manifests, tags, referrers, refs, deltas, verdicts, counters;
    atomic_uint_fast64_t generation;
    const char *map_base; /* where the map starts; changes only while growing */
    uint64_t map_size;    /* current map size; changes only while growing */
    pthread_mutex_t gate;
    pthread_cond_t gate_cv;
    unsigned readers; /* live snapshots (guarded by gate) */
    unsigned writers; /* write transactions in progress (guarded by gate) */
    atomic_bool growing;
    bool broken; /* a remap failed and could not be undone */
    bool gate_ready;
};

struct cache_snapshot {
    cache *c;
    MDB_txn *txn;
    atomic_uint refs;
    uint64_t generation;
};

typedef struct {
    uint8_t state;
    uint8_t flags;
    uint32_t chunks;
    uint64_t size, created, accessed;
} blob_meta;

/* Running totals (the "totals" record), or signed changes to them. */
enum {
    TOT_BLOBS,
    TOT_BLOB_BYTES,
    TOT_PARTIAL,
    TOT_MANIFEST_BYTES,
    TOT_PINNED,
    TOT_DELTA_BYTES,
    TOT_N
};
typedef struct {
    int64_t v[TOT_N];
} totals;

#define TOTALS_LEN (8 * (1 + TOT_N))
static const char TOTALS_KEY[] = "totals";
static const char COUNTERS_KEY[] = "counters";

typedef int (*write_fn)(cache *c, MDB_txn *txn, void *arg);
typedef int (*visit_fn)(void *ctx, const MDB_val *k, const MDB_val *v);

/* ---- small helpers ---- */

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static MDB_val mval(const void *p, size_t n)
{
    MDB_val v = {.mv_size = n, .mv_data = (void *)p};
    return v;
}

static uint64_t now_s(void)
{
    time_t t = time(NULL);
    return t < 0 ? 0 : (uint64_t)t;
}

static uint32_t chunks_for(uint64_t size)
{
    return (uint32_t)((size + CACHE_CHUNK_SIZE - 1) / CACHE_CHUNK_SIZE);
}

static void chunk_key(uint8_t key[CHUNK_KEY_LEN], const uint8_t digest[CACHE_DIGEST_LEN],
                      uint32_t index)
{
    memcpy(key, digest, CACHE_DIGEST_LEN);
    for (int i = 0; i < 4; i++)
        key[CACHE_DIGEST_LEN + i] = (uint8_t)(index >> (24 - 8 * i));
}

static bool is_cache_status(int rc)
{
    return rc <= CACHE_NOTFOUND && rc >= CACHE_IO;
}

/* Maps an internal result to the public status. */
static cache_status to_status(int rc)
{
    if (rc == 0 || rc == W_NOCHANGE || rc == W_STOP)
        return CACHE_OK;
    if (is_cache_status(rc))
        return (cache_status)rc;
    switch (rc) {
    case MDB_NOTFOUND:
        return CACHE_NOTFOUND;
    case MDB_MAP_FULL:
        return CACHE_FULL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
        return CACHE_CORRUPT;
    case MDB_BAD_VALSIZE:
        return CACHE_INVALID;
    default:
        return CACHE_IO;
    }
}

const char *cache_strerror(cache_status st)
{
    switch (st) {
    case CACHE_OK:
        return "ok";
    case CACHE_NOTFOUND:
        return "not found";
    case CACHE_CORRUPT:
        return "stored data does not match its digest or record";
    case CACHE_FULL:
        return "cache map full";
    case CACHE_INVALID:
        return "invalid argument";
    case CACHE_IO:
        return "storage error";
    }
    return "unknown cache status";
}

/* ---- record encoding ---- */

static void meta_encode(const blob_meta *m, uint8_t out[META_LEN])
{
    memset(out, 0, META_LEN);
    out[0] = META_VERSION;
    out[1] = m->state;
    out[2] = m->flags;
    put_le(out + 4, m->chunks, 4);
    put_le(out + 8, m->size, 8);
    put_le(out + 16, m->created, 8);
    put_le(out + 24, m->accessed, 8);
}

static int meta_decode(const MDB_val *v, blob_meta *m)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size != META_LEN || p[0] != META_VERSION)
        return CACHE_CORRUPT;
    m->state = p[1];
    m->flags = p[2];
    m->chunks = (uint32_t)get_le(p + 4, 4);
    m->size = get_le(p + 8, 8);
    m->created = get_le(p + 16, 8);
    m->accessed = get_le(p + 24, 8);
    bool state_ok = m->state == CACHE_BLOB_PARTIAL || m->state == CACHE_BLOB_COMPLETE;
    return state_ok && m->chunks == chunks_for(m->size) ? 0 : CACHE_CORRUPT;
}

static void meta_to_info(const blob_meta *m, cache_blob_info *info)
{
    info->state = (cache_blob_state)m->state;
    info->size = m->size;
    info->chunks = m->chunks;
    info->created = m->created;
    info->accessed = m->accessed;
}

typedef struct {
    const char *media_type;
    size_t mtlen;
    const uint8_t *body;
    size_t len;
    uint64_t accessed;
    uint8_t flags;
} manifest_rec;

static int manifest_decode(const MDB_val *v, manifest_rec *r)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < MANIFEST_HDR + 1 || p[0] != MANIFEST_VERSION)
        return CACHE_CORRUPT;
    size_t m = (size_t)get_le(p + 2, 2);
    if (v->mv_size < MANIFEST_HDR + m + 1 || p[MANIFEST_HDR + m] != 0 ||
        memchr(p + MANIFEST_HDR, 0, m) != NULL)
        return CACHE_CORRUPT;
    r->media_type = (const char *)p + MANIFEST_HDR;
    r->mtlen = m;
    r->body = p + MANIFEST_HDR + m + 1;
    r->len = v->mv_size - MANIFEST_HDR - m - 1;
    r->accessed = get_le(p + 8, 8);
    r->flags = p[1];
    return 0;
}

static void manifest_encode(uint8_t *out, const manifest_rec *r)
{
    memset(out, 0, MANIFEST_HDR);
    out[0] = MANIFEST_VERSION;
    out[1] = r->flags;
    put_le(out + 2, r->mtlen, 2);
    put_le(out + 8, r->accessed, 8);
    memcpy(out + MANIFEST_HDR, r->media_type, r->mtlen);
    out[MANIFEST_HDR + r->mtlen] = 0;
    if (r->len > 0)
        memcpy(out + MANIFEST_HDR + r->mtlen + 1, r->body, r->len);
}

static bool manifest_same(const manifest_rec *a, const manifest_rec *b)
{
    return a->mtlen == b->mtlen && a->len == b->len &&
           memcmp(a->media_type, b->media_type, a->mtlen) == 0 &&
           (a->len == 0 || memcmp(a->body, b->body, a->len) == 0);
}

/* "repo\0tag" into buf; CACHE_INVALID if empty repo or too long a key. */
static int tag_key(cache *c, uint8_t buf[KEY_BUF], const char *repo, const char *tag, size_t *klen)
{
    size_t r = strlen(repo), t = strlen(tag);
    size_t max = (size_t)mdb_env_get_maxkeysize(c->env);
    if (r == 0 || r + 1 + t > max || r + 1 + t > KEY_BUF)
        return CACHE_INVALID;
    memcpy(buf, repo, r);
    buf[r] = 0;
    memcpy(buf + r + 1, tag, t);
    *klen = r + 1 + t;
    return 0;
}

/* ---- running totals ---- */

static int totals_decode(const MDB_val *v, totals *t)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size != TOTALS_LEN || get_le(p, 8) != TOTALS_VERSION)
        return CACHE_CORRUPT;
    for (int i = 0; i < TOT_N; i++)
        t->v[i] = (int64_t)get_le(p + 8 * (i + 1), 8);
    return 0;
}

static int txn_totals_get(cache *c, MDB_txn *txn, totals *t)
{
    MDB_val k = mval(TOTALS_KEY, sizeof TOTALS_KEY - 1), v;
    int rc = mdb_get(txn, c->counters, &k, &v);
    return rc != 0 ? rc : totals_decode(&v, t);
}

static int txn_totals_put(cache *c, MDB_txn *txn, const totals *t)
{
    uint8_t buf[TOTALS_LEN];
    put_le(buf, TOTALS_VERSION, 8);
    for (int i = 0; i < TOT_N; i++)
        put_le(buf + 8 * (i + 1), (uint64_t)t->v[i], 8);
    MDB_val k = mval(TOTALS_KEY, sizeof TOTALS_KEY - 1), v = mval(buf, sizeof buf);
    return mdb_put(txn, c->counters, &k, &v, 0);
}

static bool totals_zero(const totals *d)
{
    for (int i = 0; i < TOT_N; i++)
        if (d->v[i] != 0)
            return false;
    return true;
}

/* Adds the changes d to the stored totals, in the caller's transaction. */
static int txn_totals_add(cache *c, MDB_txn *txn, const totals *d)
{
    if (totals_zero(d))
        return 0;
    totals t;
    int rc = txn_totals_get(c, txn, &t);
    if (rc != 0)
        return rc;
    for (int i = 0; i < TOT_N; i++)
        t.v[i] += d->v[i];
    return txn_totals_put(c, txn, &t);
}

/* Counts a COMPLETE or PARTIAL blob record into t with sign (+1 / -1). */
static void totals_blob(totals *t, const blob_meta *m, int sign)
{
    if (m->state != CACHE_BLOB_COMPLETE) {
        t->v[TOT_PARTIAL] += sign;
        return;
    }
    t->v[TOT_BLOBS] += sign;
    t->v[TOT_BLOB_BYTES] += sign * (int64_t)m->size;
    if (m->flags & FLAG_PINNED)
        t->v[TOT_PINNED] += sign * (int64_t)m->size;
}

static void totals_manifest(totals *t, const manifest_rec *r, int sign)
{
    t->v[TOT_MANIFEST_BYTES] += sign * (int64_t)r->len;
    if (r->flags & FLAG_PINNED)
        t->v[TOT_PINNED] += sign * (int64_t)r->len;
}

/* ---- the gate: snapshots and writes against map growth ---- */

static int gate_init(cache *c)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return ENOMEM;
    int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&c->gate_cv, &attr);
    pthread_condattr_destroy(&attr);
    if (rc == 0 && (rc = pthread_mutex_init(&c->gate, NULL)) != 0)
        pthread_cond_destroy(&c->gate_cv);
    c->gate_ready = rc == 0;
    return rc;
}

/* Registers a snapshot; while the map is growing, waits or fails. */
static int reader_enter(cache *c, bool wait)
{
    pthread_mutex_lock(&c->gate);
    while (wait && atomic_load(&c->growing) && !c->broken)
        pthread_cond_wait(&c->gate_cv, &c->gate);
    int rc = atomic_load(&c->growing) || c->broken ? EAGAIN : 0;
    if (rc == 0)
        c->readers++;
    pthread_mutex_unlock(&c->gate);
    return rc;
}

static void reader_leave(cache *c)
{
    pthread_mutex_lock(&c->gate);
    c->readers--;
    if (atomic_load(&c->growing))
        pthread_cond_broadcast(&c->gate_cv);
    pthread_mutex_unlock(&c->gate);
}

/* Registers a write transaction; *seen is the map size it will run with. */
static int writer_enter(cache *c, uint64_t *seen)
{
    pthread_mutex_lock(&c->gate);
    while (atomic_load(&c->growing))
        pthread_cond_wait(&c->gate_cv, &c->gate);
    int rc = c->broken ? EIO : 0;
    if (rc == 0) {
        c->writers++;
        *seen = c->map_size;
    }
    pthread_mutex_unlock(&c->gate);
    return rc;
}

static void writer_leave(cache *c)
{
    pthread_mutex_lock(&c->gate);
    c->writers--;
    if (atomic_load(&c->growing))
        pthread_cond_broadcast(&c->gate_cv);
    pthread_mutex_unlock(&c->gate);
}

/* ---- map location and growth ---- */

/* Start of the file mapping that contains p, from /proc/self/maps. */
static int mapping_base_of(const void *p, const char **base)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (f == NULL)
        return errno != 0 ? errno : EIO;
    char *line = NULL;
    size_t cap = 0;
    int rc = ENOENT;
    uintptr_t a = (uintptr_t)p;
    while (rc == ENOENT && getline(&line, &cap, f) > 0) {
        unsigned long lo, hi, off;
        if (sscanf(line, "%lx-%lx %*s %lx", &lo, &hi, &off) == 3 && a >= lo && a < hi) {
            *base = (const char *)(uintptr_t)(lo - off);
            rc = 0;
        }
    }
    free(line);
    fclose(f);
    return rc;
}

/* Finds the map's start through a value LMDB returns from it (the main DB's
 * record of a named DB). Needs no snapshot or write to be live. */
static int locate_map(cache *c)
{
    MDB_txn *txn;
    MDB_dbi main_db;
    MDB_val k = mval("blobmeta", 8), v;
    int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_dbi_open(txn, NULL, 0, &main_db);
    if (rc == 0)
        rc = mdb_get(txn, main_db, &k, &v);
    if (rc == 0)
        rc = mapping_base_of(v.mv_data, &c->map_base);
    mdb_txn_abort(txn);
    return rc;
}

static int refresh_map_size(cache *c)
{
    MDB_envinfo ei;
    int rc = mdb_env_info(c->env, &ei);
    if (rc == 0)
        c->map_size = ei.me_mapsize;
    return rc;
}

/* Waits (gate held) until no snapshot and no write is live. */
static int drain_locked(cache *c)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += GROW_WAIT_MS / 1000;
    deadline.tv_nsec += (long)(GROW_WAIT_MS % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while (c->readers > 0 || c->writers > 0)
        if (pthread_cond_timedwait(&c->gate_cv, &c->gate, &deadline) == ETIMEDOUT)
            return c->readers > 0 || c->writers > 0 ? CACHE_FULL : 0;
    return 0;
}

/* Remaps to size (0 = adopt the size another process set); gate held, drained. */
static int remap_locked(cache *c, uint64_t size)
{
    int rc = mdb_env_set_mapsize(c->env, (size_t)size);
    if (rc != 0 && mdb_env_set_mapsize(c->env, (size_t)c->map_size) != 0) {
        c->broken = true; /* no map at all now: refuse every further operation */
        return rc;
    }
    int rc2 = refresh_map_size(c);
    if (rc2 == 0)
        rc2 = locate_map(c);
    if (rc2 != 0)
        c->broken = true;
    return rc != 0 ? rc : rc2;
}

static int grow_locked(cache *c, bool adopt)
{
    uint64_t target = adopt ? 0 : c->map_size * 2;
    if (!adopt && (c->map_size > SIZE_MAX / 2 || target < c->map_size))
        return CACHE_FULL;
    atomic_store(&c->growing, true);
    int rc = drain_locked(c);
    if (rc == 0)
        rc = remap_locked(c, target);
    atomic_store(&c->growing, false);
    pthread_cond_broadcast(&c->gate_cv);
    return rc;
}

/* Grows the map unless another writer already did since `seen`. */
static int grow(cache *c, uint64_t seen, bool adopt)
{
    pthread_mutex_lock(&c->gate);
    while (atomic_load(&c->growing))
        pthread_cond_wait(&c->gate_cv, &c->gate);
    int rc = c->broken ? EIO : 0;
    if (rc == 0 && c->map_size == seen)
        rc = grow_locked(c, adopt);
    pthread_mutex_unlock(&c->gate);
    return rc;
}

/* ---- write transactions ---- */

static int write_once(cache *c, write_fn fn, void *arg)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    rc = fn(c, txn, arg);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

/* Runs fn in a write transaction and commits it; grows the map and retries
 * when it is full. */
static cache_status run_write(cache *c, write_fn fn, void *arg)
{
    for (int round = 0;; round++) {
        uint64_t seen;
        int rc = writer_enter(c, &seen);
        if (rc != 0)
            return CACHE_IO;
        rc = write_once(c, fn, arg);
        if (rc == 0)
            atomic_fetch_add_explicit(&c->generation, 1, memory_order_release);
        writer_leave(c);
        bool resized = rc == MDB_MAP_RESIZED;
        if ((rc != MDB_MAP_FULL && !resized) || round == GROW_ROUNDS)
            return to_status(rc);
        rc = grow(c, seen, resized);
        if (rc != 0)
            return rc == CACHE_FULL || rc == ENOMEM ? CACHE_FULL : to_status(rc);
    }
}

/* ---- open and close ---- */

static cache_status open_fail(char *err, size_t errlen, const char *what, int rc)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: %s", what,
                 is_cache_status(rc) ? cache_strerror((cache_status)rc) : mdb_strerror(rc));
    cache_status st = to_status(rc);
    return st == CACHE_NOTFOUND ? CACHE_IO : st;
}

static int env_configure(cache *c, const cache_options *o)
{
    uint64_t map = o->map_size != 0 ? o->map_size : DEFAULT_MAP_SIZE;
    unsigned readers = o->max_readers != 0 ? o->max_readers : DEFAULT_MAX_READERS;
    if (map > SIZE_MAX)
        return CACHE_INVALID;
    int rc = mdb_env_create(&c->env);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(c->env, readers);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(c->env, MAX_DBS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(c->env, (size_t)map);
    return rc;
}

/* mkdir -p: the directory and any missing parents. 0 or an errno. */
static int make_dirs(const char *dir)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return errno;
        *p = '/';
    }
    return mkdir(buf, 0750) != 0 && errno != EEXIST ? errno : 0;
}

static int env_open(cache *c, const char *dir, const cache_options *o)
{
    int made = make_dirs(dir);
    if (made != 0)
        return made;
    int rc = env_configure(c, o);
    unsigned flags = MDB_NOTLS | (o->no_sync ? MDB_NOSYNC : 0);
    if (rc == 0)
        rc = mdb_env_open(c->env, dir, flags, 0640);
    int dead;
    if (rc == 0)
        rc = mdb_reader_check(c->env, &dead); /* slots of crashed processes */
    if (rc == 0)
        rc = refresh_map_size(c);
    return rc;
}

/* Calls fn for every record of dbi (in the rebuild of the totals). */
static int scan_all(MDB_txn *txn, MDB_dbi dbi, visit_fn fn, void *ctx)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        return rc;
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        if ((rc = fn(ctx, &k, &v)) != 0)
            break;
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int rebuild_blob(void *ctx, const MDB_val *k, const MDB_val *v)
{
    (void)k;
    blob_meta m;
    int rc = meta_decode(v, &m);
    if (rc == 0)
        totals_blob(ctx, &m, 1);
    return rc;
}

static int rebuild_manifest(void *ctx, const MDB_val *k, const MDB_val *v)
{
    (void)k;
    manifest_rec r;
    int rc = manifest_decode(v, &r);
    if (rc == 0)
        totals_manifest(ctx, &r, 1);
    return rc;
}

static int rebuild_delta(void *ctx, const MDB_val *k, const MDB_val *v)
{
    (void)k;
    if (v->mv_size != DELTA_VAL_LEN)
        return CACHE_CORRUPT;
    ((totals *)ctx)->v[TOT_DELTA_BYTES] +=
        (int64_t)get_le((const uint8_t *)v->mv_data + CACHE_DIGEST_LEN, 8);
    return 0;
}

/* A store from before the totals record existed: count everything once. */
static int ensure_totals(cache *c, MDB_txn *txn)
{
    totals t = {0};
    int rc = txn_totals_get(c, txn, &t);
    if (rc != MDB_NOTFOUND)
        return rc;
    rc = scan_all(txn, c->blobmeta, rebuild_blob, &t);
    if (rc == 0)
        rc = scan_all(txn, c->manifests, rebuild_manifest, &t);
    if (rc == 0)
        rc = scan_all(txn, c->deltas, rebuild_delta, &t);
    return rc != 0 ? rc : txn_totals_put(c, txn, &t);
}

static int open_dbs_op(cache *c, MDB_txn *txn, void *arg)
{
    (void)arg;
    int rc = mdb_dbi_open(txn, "blobmeta", MDB_CREATE, &c->blobmeta);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "chunks", MDB_CREATE, &c->chunks);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "manifests", MDB_CREATE, &c->manifests);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "tags", MDB_CREATE, &c->tags);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "referrers", MDB_CREATE, &c->referrers);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "refs", MDB_CREATE | MDB_DUPSORT | MDB_DUPFIXED, &c->refs);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "deltas", MDB_CREATE, &c->deltas);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "verdicts", MDB_CREATE, &c->verdicts);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "counters", MDB_CREATE, &c->counters);
    return rc == 0 ? ensure_totals(c, txn) : rc;
}

cache_status cache_open(cache **out, const char *dir, const cache_options *opts, char *err,
                        size_t errlen)
{
    static const cache_options defaults = {0};
    if (out == NULL || dir == NULL)
        return open_fail(err, errlen, "cache_open", CACHE_INVALID);
    *out = NULL;
    cache *c = calloc(1, sizeof *c);
    if (c == NULL || gate_init(c) != 0) {
        free(c);
        return open_fail(err, errlen, "cache_open", ENOMEM);
    }
    atomic_init(&c->generation, 0);
    atomic_init(&c->growing, false);
    const char *what = dir;
    int rc = env_open(c, dir, opts != NULL ? opts : &defaults);
    if (rc == 0) {
        what = "creating databases";
        rc = run_write(c, open_dbs_op, NULL);
    }
    if (rc == 0) {
        what = "locating the map in /proc/self/maps";
        rc = locate_map(c);
    }
    if (rc != 0) {
        cache_status st = open_fail(err, errlen, what, rc);
        cache_close(c);
        return st;
    }
    *out = c;
    return CACHE_OK;
}

void cache_close(cache *c)
{
    if (c == NULL)
        return;
    if (c->env != NULL)
        mdb_env_close(c->env);
    if (c->gate_ready) {
        pthread_cond_destroy(&c->gate_cv);
        pthread_mutex_destroy(&c->gate);
    }
    free(c);
}

int cache_data_fd(cache *c)
{
    int fd;
    if (c == NULL || mdb_env_get_fd(c->env, &fd) != 0)
        return -1;
    return fd;
}

/* ---- snapshots ---- */

/* Begins the read transaction and loads every DB record into it, so later
 * reads through the snapshot (from any thread) do not modify the txn. */
static int snapshot_begin(cache *c, cache_snapshot *s)
{
    MDB_dbi dbis[] = {c->blobmeta,  c->chunks, c->manifests, c->tags,
                      c->referrers, c->refs,   c->deltas,    c->counters};
    int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &s->txn);
    for (size_t i = 0; rc == 0 && i < sizeof dbis / sizeof dbis[0]; i++) {
        MDB_stat st;
        rc = mdb_stat(s->txn, dbis[i], &st);
    }
    if (rc != 0 && s->txn != NULL) {
        mdb_txn_abort(s->txn);
        s->txn = NULL;
    }
    return rc;
}

static cache_snapshot *snapshot_open(cache *c, bool wait)
{
    if (c == NULL || reader_enter(c, wait) != 0)
        return NULL;
    cache_snapshot *s = calloc(1, sizeof *s);
    uint64_t gen = atomic_load_explicit(&c->generation, memory_order_acquire);
    if (s != NULL && snapshot_begin(c, s) == 0) {
        s->c = c;
        s->generation = gen;
        atomic_init(&s->refs, 1);
        return s;
    }
    free(s);
    reader_leave(c);
    return NULL;
}

cache_snapshot *cache_snapshot_new(cache *c)
{
    return snapshot_open(c, false);
}

void cache_snapshot_ref(cache_snapshot *s)
{
    if (s != NULL)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void cache_snapshot_unref(cache_snapshot *s)
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    cache *c = s->c;
    mdb_txn_abort(s->txn);
    free(s);
    reader_leave(c);
}

cache_snapshot *cache_snapshot_current(cache *c, cache_snapshot **slot)
{
    if (c == NULL || slot == NULL)
        return NULL;
    cache_snapshot *cur = *slot;
    if (cur != NULL && cur->c == c && !atomic_load(&c->growing) &&
        cur->generation == atomic_load_explicit(&c->generation, memory_order_acquire))
        return cur;
    *slot = NULL;
    cache_snapshot_unref(cur); /* first, so a pending growth can drain */
    *slot = cache_snapshot_new(c);
    return *slot;
}

/* ---- reading through a snapshot ---- */

static int snap_meta(cache_snapshot *s, const uint8_t digest[CACHE_DIGEST_LEN], blob_meta *m)
{
    MDB_val k = mval(digest, CACHE_DIGEST_LEN), v;
    int rc = mdb_get(s->txn, s->c->blobmeta, &k, &v);
    return rc != 0 ? rc : meta_decode(&v, m);
}

cache_status cache_blob_stat(cache_snapshot *s, const uint8_t digest[CACHE_DIGEST_LEN],
                             cache_blob_info *info)
{
    if (s == NULL || digest == NULL || info == NULL)
        return CACHE_INVALID;
    blob_meta m;
    int rc = snap_meta(s, digest, &m);
    if (rc == 0)
        meta_to_info(&m, info);
    return to_status(rc);
}

/* file_offset may be NULL when the caller does not need it. */
cache_status cache_blob_chunk(cache_snapshot *s, const uint8_t digest[CACHE_DIGEST_LEN],
                              uint32_t index, const void **data, size_t *len, uint64_t *file_offset)
{
    if (s == NULL || digest == NULL || data == NULL || len == NULL)
        return CACHE_INVALID;
    uint8_t key[CHUNK_KEY_LEN];
    chunk_key(key, digest, index);
    MDB_val k = mval(key, sizeof key), v;
    int rc = mdb_get(s->txn, s->c->chunks, &k, &v);
    if (rc != 0)
        return to_status(rc);
    if (v.mv_size == 0 || v.mv_size > CACHE_CHUNK_SIZE)
        return CACHE_CORRUPT;
    uint64_t off = (uint64_t)((const char *)v.mv_data - s->c->map_base);
    if (off + v.mv_size > s->c->map_size)
        return CACHE_IO; /* the map moved under a live snapshot: a bug */
    *data = v.mv_data;
    *len = v.mv_size;
    if (file_offset != NULL)
        *file_offset = off;
    return CACHE_OK;
}

cache_status cache_manifest_get(cache_snapshot *s, const uint8_t digest[CACHE_DIGEST_LEN],
                                const char **media_type, const void **body, size_t *len)
{
    if (s == NULL || digest == NULL || media_type == NULL || body == NULL || len == NULL)
        return CACHE_INVALID;
    MDB_val k = mval(digest, CACHE_DIGEST_LEN), v;
    manifest_rec r;
    int rc = mdb_get(s->txn, s->c->manifests, &k, &v);
    if (rc == 0)
        rc = manifest_decode(&v, &r);
    if (rc != 0)
        return to_status(rc);
    *media_type = r.media_type;
    *body = r.body;
    *len = r.len;
    return CACHE_OK;
}

cache_status cache_tag_get(cache_snapshot *s, const char *repo, const char *tag,
                           uint8_t digest[CACHE_DIGEST_LEN], uint64_t *confirmed_at)
{
    if (s == NULL || repo == NULL || tag == NULL || tag[0] == '\0' || digest == NULL)
        return CACHE_INVALID;
    uint8_t key[KEY_BUF];
    size_t klen;
    int rc = tag_key(s->c, key, repo, tag, &klen);
    MDB_val k = mval(key, klen), v;
    if (rc == 0)
        rc = mdb_get(s->txn, s->c->tags, &k, &v);
    if (rc == 0 && v.mv_size != TAG_VAL_LEN)
        rc = CACHE_CORRUPT;
    if (rc != 0)
        return to_status(rc);
    memcpy(digest, v.mv_data, CACHE_DIGEST_LEN);
    if (confirmed_at != NULL)
        *confirmed_at = get_le((const uint8_t *)v.mv_data + CACHE_DIGEST_LEN, 8);
    return CACHE_OK;
}

/* ---- ordered walks ---- */

typedef struct {
    const void *start; /* first key to visit is the first >= start[0..slen) */
    size_t slen;       /* 0: from the first key of the DB */
    size_t plen;       /* visit while keys begin with start[0..plen) */
    bool skip_equal;   /* skip a key equal to start */
} key_range;

static bool key_is(const MDB_val *k, const void *p, size_t n)
{
    return k->mv_size == n && memcmp(k->mv_data, p, n) == 0;
}

static int walk(MDB_txn *txn, MDB_dbi dbi, const key_range *r, visit_fn fn, void *ctx)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        return rc;
    MDB_val k = mval(r->start, r->slen), v;
    rc = mdb_cursor_get(cur, &k, &v, r->slen > 0 ? MDB_SET_RANGE : MDB_FIRST);
    if (rc == 0 && r->skip_equal && key_is(&k, r->start, r->slen))
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (r->plen > 0 && (k.mv_size < r->plen || memcmp(k.mv_data, r->start, r->plen) != 0))
            break;
        if ((rc = fn(ctx, &k, &v)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND || rc == W_STOP ? 0 : rc;
}

typedef struct {
    size_t plen;
    size_t n;
    int count;
    cache_tag_fn fn;
    void *arg;
} tag_walk;

static int visit_tag(void *ctx, const MDB_val *k, const MDB_val *v)
{
    (void)v;
    tag_walk *w = ctx;
    char tag[KEY_BUF];
    size_t tl = k->mv_size - w->plen;
    if (tl == 0 || tl >= sizeof tag)
        return CACHE_CORRUPT; /* tag_put never stores these */
    memcpy(tag, (const char *)k->mv_data + w->plen, tl);
    tag[tl] = '\0';
    w->count++;
    if (w->fn(w->arg, tag, tl) != 0 || (w->n != 0 && (size_t)w->count == w->n))
        return W_STOP;
    return 0;
}

int cache_tag_list(cache_snapshot *s, const char *repo, const char *last, size_t n, cache_tag_fn fn,
                   void *arg)
{
    if (s == NULL || repo == NULL || fn == NULL)
        return CACHE_INVALID;
    uint8_t key[KEY_BUF];
    size_t klen;
    int rc = tag_key(s->c, key, repo, last != NULL ? last : "", &klen);
    if (rc != 0)
        return rc;
    tag_walk w = {.plen = strlen(repo) + 1, .n = n, .fn = fn, .arg = arg};
    key_range r = {.start = key, .slen = klen, .plen = w.plen, .skip_equal = true};
    rc = walk(s->txn, s->c->tags, &r, visit_tag, &w);
    return rc != 0 ? to_status(rc) : w.count;
}

typedef struct {
    int count;
    cache_referrer_fn fn;
    void *arg;
} referrer_walk;

static int visit_referrer(void *ctx, const MDB_val *k, const MDB_val *v)
{
    referrer_walk *w = ctx;
    const char *json = v->mv_data;
    if (k->mv_size != REF_KEY_LEN || v->mv_size == 0 || json[v->mv_size - 1] != '\0')
        return CACHE_CORRUPT;
    w->count++;
    const uint8_t *referrer = (const uint8_t *)k->mv_data + CACHE_DIGEST_LEN;
    return w->fn(w->arg, referrer, json, v->mv_size - 1) != 0 ? W_STOP : 0;
}

int cache_referrer_list(cache_snapshot *s, const uint8_t subject[CACHE_DIGEST_LEN],
                        cache_referrer_fn fn, void *arg)
{
    if (s == NULL || subject == NULL || fn == NULL)
        return CACHE_INVALID;
    referrer_walk w = {.fn = fn, .arg = arg};
    key_range r = {.start = subject, .slen = CACHE_DIGEST_LEN, .plen = CACHE_DIGEST_LEN};
    int rc = walk(s->txn, s->c->referrers, &r, visit_referrer, &w);
    return rc != 0 ? to_status(rc) : w.count;
}

/* ---- blob writes ---- */

typedef struct {
    const uint8_t *digest;
    uint32_t index;
    const void *data;
    size_t len;
    uint64_t size;
    int *already_complete;
} blob_arg;

static int txn_meta(cache *c, MDB_txn *txn, const uint8_t *digest, blob_meta *m)
{
    MDB_val k = mval(digest, CACHE_DIGEST_LEN), v;
    int rc = mdb_get(txn, c->blobmeta, &k, &v);
    return rc != 0 ? rc : meta_decode(&v, m);
}

static int txn_put_meta(cache *c, MDB_txn *txn, const uint8_t *digest, const blob_meta *m)
{
    uint8_t buf[META_LEN];
    meta_encode(m, buf);
    MDB_val k = mval(digest, CACHE_DIGEST_LEN), v = mval(buf, sizeof buf);
    return mdb_put(txn, c->blobmeta, &k, &v, 0);
}

/* Deletes every chunk of digest: a range walk over the adjacent keys,
 * re-seeking after each delete. */
static int txn_del_chunks(cache *c, MDB_txn *txn, const uint8_t *digest)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, c->chunks, &cur);
    if (rc != 0)
        return rc;
    for (;;) {
        MDB_val k = mval(digest, CACHE_DIGEST_LEN), v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc != 0 || k.mv_size != CHUNK_KEY_LEN || memcmp(k.mv_data, digest, CACHE_DIGEST_LEN))
            break;
        if ((rc = mdb_cursor_del(cur, 0)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int begin_op(cache *c, MDB_txn *txn, void *arg)
{
    blob_arg *a = arg;
    blob_meta m;
    int rc = txn_meta(c, txn, a->digest, &m);
    if (rc == 0) {
        *a->already_complete = m.state == CACHE_BLOB_COMPLETE;
        return W_NOCHANGE;
    }
    if (rc != MDB_NOTFOUND)
        return rc;
    *a->already_complete = 0;
    if ((rc = txn_del_chunks(c, txn, a->digest)) != 0) /* strays; none expected */
        return rc;
    uint64_t t = now_s();
    m = (blob_meta){.state = CACHE_BLOB_PARTIAL, .created = t, .accessed = t};
    totals d = {.v[TOT_PARTIAL] = 1};
    rc = txn_put_meta(c, txn, a->digest, &m);
    return rc != 0 ? rc : txn_totals_add(c, txn, &d);
}

cache_status cache_blob_begin(cache *c, const uint8_t digest[CACHE_DIGEST_LEN],
                              int *already_complete)
{
    int dummy;
    if (c == NULL || digest == NULL)
        return CACHE_INVALID;
    blob_arg a = {.digest = digest,
                  .already_complete = already_complete ? already_complete : &dummy};
    return run_write(c, begin_op, &a);
}

static int append_op(cache *c, MDB_txn *txn, void *arg)
{
    blob_arg *a = arg;
    blob_meta m;
    int rc = txn_meta(c, txn, a->digest, &m);
    if (rc != 0)
        return rc;
    /* in order, and only after full chunks (a short one was the last) */
    if (m.state != CACHE_BLOB_PARTIAL || a->index != m.chunks || m.chunks == UINT32_MAX ||
        m.size != (uint64_t)m.chunks * CACHE_CHUNK_SIZE)
        return CACHE_INVALID;
    uint8_t key[CHUNK_KEY_LEN];
    chunk_key(key, a->digest, a->index);
    MDB_val k = mval(key, sizeof key), v = mval(a->data, a->len);
    rc = mdb_put(txn, c->chunks, &k, &v, MDB_NOOVERWRITE);
    if (rc != 0)
        return rc == MDB_KEYEXIST ? CACHE_CORRUPT : rc;
    m.chunks++;
    m.size += a->len;
    return txn_put_meta(c, txn, a->digest, &m);
}

cache_status cache_blob_append(cache *c, const uint8_t digest[CACHE_DIGEST_LEN], uint32_t index,
                               const void *data, size_t len)
{
    if (c == NULL || digest == NULL || data == NULL || len == 0 || len > CACHE_CHUNK_SIZE)
        return CACHE_INVALID;
    blob_arg a = {.digest = digest, .index = index, .data = data, .len = len};
    return run_write(c, append_op, &a);
}

/* Several chunks in one transaction: one commit (and fsync) for all. The
 * arg is re-read on every attempt, so a retry after growing the map starts
 * over from the first chunk. */
static int append_chunks_op(cache *c, MDB_txn *txn, void *arg)
{
    const blob_arg *all = arg;
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < all->len; off += CACHE_CHUNK_SIZE) {
        size_t n = all->len - off < CACHE_CHUNK_SIZE ? all->len - off : CACHE_CHUNK_SIZE;
        blob_arg one = {.digest = all->digest,
                        .index = all->index + (uint32_t)(off / CACHE_CHUNK_SIZE),
                        .data = (const uint8_t *)all->data + off,
                        .len = n};
        rc = append_op(c, txn, &one);
    }
    return rc;
}

cache_status cache_blob_append_chunks(cache *c, const uint8_t digest[CACHE_DIGEST_LEN],
                                      uint32_t index, const void *data, size_t len)
{
    if (c == NULL || digest == NULL || data == NULL || len == 0 || len > CACHE_APPEND_MAX ||
        index > UINT32_MAX - len / CACHE_CHUNK_SIZE - 1)
        return CACHE_INVALID;
    blob_arg a = {.digest = digest, .index = index, .data = data, .len = len};
    return run_write(c, append_chunks_op, &a);
}

static int complete_op(cache *c, MDB_txn *txn, void *arg)
{
    blob_arg *a = arg;
    blob_meta m;
    int rc = txn_meta(c, txn, a->digest, &m);
    if (rc != 0)
        return rc;
    if (m.size != a->size)
        return CACHE_INVALID;
    if (m.state == CACHE_BLOB_COMPLETE)
        return W_NOCHANGE;
    totals d = {0};
    totals_blob(&d, &m, -1);
    m.state = CACHE_BLOB_COMPLETE;
    totals_blob(&d, &m, 1);
    rc = txn_put_meta(c, txn, a->digest, &m);
    return rc != 0 ? rc : txn_totals_add(c, txn, &d);
}

cache_status cache_blob_complete(cache *c, const uint8_t digest[CACHE_DIGEST_LEN], uint64_t size)
{
    if (c == NULL || digest == NULL)
        return CACHE_INVALID;
    blob_arg a = {.digest = digest, .size = size};
    return run_write(c, complete_op, &a);
}

/* Deletes a blob's record and chunks and uncounts it. */
static int txn_del_blob(cache *c, MDB_txn *txn, const uint8_t *digest, const blob_meta *m)
{
    MDB_val k = mval(digest, CACHE_DIGEST_LEN);
    totals d = {0};
    totals_blob(&d, m, -1);
    int rc = mdb_del(txn, c->blobmeta, &k, NULL);
    if (rc == 0)
        rc = txn_del_chunks(c, txn, digest);
    return rc != 0 ? rc : txn_totals_add(c, txn, &d);
}

/* A record that does not decode is removed all the same, uncounted. */
static int delete_op(cache *c, MDB_txn *txn, void *arg)
{
    blob_arg *a = arg;
    blob_meta m;
    int rc = txn_meta(c, txn, a->digest, &m);
    if (rc == CACHE_CORRUPT) {
        MDB_val k = mval(a->digest, CACHE_DIGEST_LEN);
        rc = mdb_del(txn, c->blobmeta, &k, NULL);
        return rc != 0 ? rc : txn_del_chunks(c, txn, a->digest);
    }
    return rc != 0 ? rc : txn_del_blob(c, txn, a->digest, &m);
}

cache_status cache_blob_delete(cache *c, const uint8_t digest[CACHE_DIGEST_LEN])
{
    if (c == NULL || digest == NULL)
        return CACHE_INVALID;
    blob_arg a = {.digest = digest};
    return run_write(c, delete_op, &a);
}

/* Checks the state and deletes in one transaction, so a blob another
 * writer completed in between is never lost. */
static int abort_op(cache *c, MDB_txn *txn, void *arg)
{
    blob_arg *a = arg;
    blob_meta m;
    int rc = txn_meta(c, txn, a->digest, &m);
    if (rc != 0)
        return rc;
    return m.state == CACHE_BLOB_COMPLETE ? W_NOCHANGE : txn_del_blob(c, txn, a->digest, &m);
}

cache_status cache_blob_abort(cache *c, const uint8_t digest[CACHE_DIGEST_LEN])
{
    if (c == NULL || digest == NULL)
        return CACHE_INVALID;
    blob_arg a = {.digest = digest};
    return run_write(c, abort_op, &a);
}

/* ---- blob verification ---- */

typedef struct {
    const uint8_t *digest;
    EVP_MD_CTX *ctx;
    cache_blob_info first; /* the record as the first window saw it */
    uint32_t next;         /* next chunk to hash */
} verify_state;

static size_t expected_chunk_len(const cache_blob_info *info, uint32_t i)
{
    if (i + 1 < info->chunks)
        return CACHE_CHUNK_SIZE;
    return (size_t)(info->size - (uint64_t)i * CACHE_CHUNK_SIZE);
}

/* Drops the map's pages of [data, data+len) from this process's resident set
 * once hashed: they stay in the page cache, but verifying a large blob does
 * not grow the daemon's RSS by its size. Harmless on a read-only shared
 * file mapping (a later access faults the page back in). */
static void release_pages(const void *data, size_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)data & ~(page - 1);
    uintptr_t end = ((uintptr_t)data + len + page - 1) & ~(page - 1);
    madvise((void *)start, end - start, MADV_DONTNEED);
}

static cache_status verify_chunk(cache_snapshot *s, verify_state *vs)
{
    const void *data;
    size_t len;
    cache_status st = cache_blob_chunk(s, vs->digest, vs->next, &data, &len, NULL);
    if (st == CACHE_NOTFOUND || (st == CACHE_OK && len != expected_chunk_len(&vs->first, vs->next)))
        return CACHE_CORRUPT; /* the record promises this chunk, at this length */
    if (st != CACHE_OK)
        return st;
    int ok = EVP_DigestUpdate(vs->ctx, data, len) == 1;
    release_pages(data, len);
    return ok ? CACHE_OK : CACHE_IO;
}

/* Hashes up to VERIFY_WINDOW chunks under one snapshot. A blob replaced
 * between windows has the same digest, hence the same bytes and sizes. */
static cache_status verify_window(cache_snapshot *s, verify_state *vs)
{
    cache_blob_info info;
    cache_status st = cache_blob_stat(s, vs->digest, &info);
    if (st != CACHE_OK)
        return st;
    if (info.state != CACHE_BLOB_COMPLETE)
        return CACHE_INVALID;
    if (vs->next == 0)
        vs->first = info;
    else if (info.size != vs->first.size || info.chunks != vs->first.chunks)
        return CACHE_CORRUPT;
    uint32_t end = info.chunks - vs->next > VERIFY_WINDOW ? vs->next + VERIFY_WINDOW : info.chunks;
    for (; st == CACHE_OK && vs->next < end; vs->next++)
        st = verify_chunk(s, vs);
    return st;
}

static cache_status verify_windows(cache *c, verify_state *vs)
{
    do {
        cache_snapshot *s = snapshot_open(c, true);
        if (s == NULL)
            return CACHE_IO;
        cache_status st = verify_window(s, vs);
        cache_snapshot_unref(s);
        if (st != CACHE_OK)
            return st;
    } while (vs->next < vs->first.chunks);
    return CACHE_OK;
}

cache_status cache_blob_verify(cache *c, const uint8_t digest[CACHE_DIGEST_LEN])
{
    if (c == NULL || digest == NULL)
        return CACHE_INVALID;
    verify_state vs = {.digest = digest, .ctx = EVP_MD_CTX_new()};
    cache_status st = CACHE_IO;
    if (vs.ctx != NULL && EVP_DigestInit_ex(vs.ctx, EVP_sha256(), NULL) == 1)
        st = verify_windows(c, &vs);
    uint8_t got[CACHE_DIGEST_LEN];
    if (st == CACHE_OK && EVP_DigestFinal_ex(vs.ctx, got, NULL) != 1)
        st = CACHE_IO;
    if (st == CACHE_OK && memcmp(got, digest, CACHE_DIGEST_LEN) != 0)
        st = CACHE_CORRUPT;
    EVP_MD_CTX_free(vs.ctx);
    return st;
}

/* ---- manifests ---- */

/* Rewrites manifest record v (key k) with new flags and access time, from a
 * copy: the old value's pages must not be read while mdb_put replaces them. */
static int txn_manifest_rewrite(cache *c, MDB_txn *txn, MDB_val *k, const MDB_val *v, uint8_t flags,
                                uint64_t accessed)
{
    uint8_t *copy = malloc(v->mv_size);
    if (copy == NULL)
        return ENOMEM;
    memcpy(copy, v->mv_data, v->mv_size);
    copy[1] = flags;
    put_le(copy + 8, accessed, 8);
    MDB_val nv = mval(copy, v->mv_size);
    int rc = mdb_put(txn, c->manifests, k, &nv, 0);
    free(copy);
    return rc;
}

typedef struct {
    const uint8_t *digest;
    manifest_rec rec;
} manifest_arg;

static int manifest_put_op(cache *c, MDB_txn *txn, void *arg)
{
    manifest_arg *a = arg;
    MDB_val k = mval(a->digest, CACHE_DIGEST_LEN), v;
    manifest_rec old;
    totals d = {0};
    a->rec.accessed = now_s();
    a->rec.flags = 0;
    int rc = mdb_get(txn, c->manifests, &k, &v);
    if (rc == 0 && manifest_decode(&v, &old) == 0) {
        if (manifest_same(&old, &a->rec))
            return W_NOCHANGE;
        a->rec.accessed = old.accessed;
        a->rec.flags = old.flags; /* a replaced record keeps its pin */
        totals_manifest(&d, &old, -1);
    } else if (rc != 0 && rc != MDB_NOTFOUND) {
        return rc;
    }
    v = mval(NULL, MANIFEST_HDR + a->rec.mtlen + 1 + a->rec.len);
    if ((rc = mdb_put(txn, c->manifests, &k, &v, MDB_RESERVE)) != 0)
        return rc;
    manifest_encode(v.mv_data, &a->rec);
    totals_manifest(&d, &a->rec, 1);
    return txn_totals_add(c, txn, &d);
}

cache_status cache_manifest_put(cache *c, const uint8_t digest[CACHE_DIGEST_LEN],
                                const char *media_type, const void *body, size_t len)
{
    if (c == NULL || digest == NULL || media_type == NULL || (body == NULL && len > 0))
        return CACHE_INVALID;
    size_t mtlen = strlen(media_type);
    if (mtlen > UINT16_MAX || len > SIZE_MAX - MANIFEST_HDR - mtlen - 1)
        return CACHE_INVALID;
    manifest_arg a = {.digest = digest,
                      .rec = {.media_type = media_type, .mtlen = mtlen, .body = body, .len = len}};
    return run_write(c, manifest_put_op, &a);
}

/* Deletes a manifest record and uncounts it (its tags and rows stay). */
static int txn_del_manifest(cache *c, MDB_txn *txn, const uint8_t *digest)
{
    MDB_val k = mval(digest, CACHE_DIGEST_LEN), v;
    manifest_rec r;
    int rc = mdb_get(txn, c->manifests, &k, &v);
    if (rc == 0)
        rc = manifest_decode(&v, &r);
    if (rc != 0)
        return rc;
    totals d = {0};
    totals_manifest(&d, &r, -1);
    rc = mdb_del(txn, c->manifests, &k, NULL);
    return rc != 0 ? rc : txn_totals_add(c, txn, &d);
}

static int manifest_delete_op(cache *c, MDB_txn *txn, void *arg)
{
    return txn_del_manifest(c, txn, arg);
}

cache_status cache_manifest_delete(cache *c, const uint8_t digest[CACHE_DIGEST_LEN])
{
    if (c == NULL || digest == NULL)
        return CACHE_INVALID;
    return run_write(c, manifest_delete_op, (void *)digest);
}

/* ---- tags ---- */

typedef struct {
    const char *repo, *tag;
    const uint8_t *digest;
    uint64_t confirmed_at;
} tag_arg;

static int tag_put_op(cache *c, MDB_txn *txn, void *arg)
{
    tag_arg *a = arg;
    uint8_t key[KEY_BUF], val[TAG_VAL_LEN];
    size_t klen;
    int rc = tag_key(c, key, a->repo, a->tag, &klen);
    if (rc != 0)
        return rc;
    memcpy(val, a->digest, CACHE_DIGEST_LEN);
    put_le(val + CACHE_DIGEST_LEN, a->confirmed_at, 8);
    MDB_val k = mval(key, klen), v;
    rc = mdb_get(txn, c->tags, &k, &v);
    if (rc == 0 && key_is(&v, val, sizeof val))
        return W_NOCHANGE;
    v = mval(val, sizeof val);
    return rc == 0 || rc == MDB_NOTFOUND ? mdb_put(txn, c->tags, &k, &v, 0) : rc;
}

cache_status cache_tag_put(cache *c, const char *repo, const char *tag,
                           const uint8_t digest[CACHE_DIGEST_LEN], uint64_t confirmed_at)
{
    if (c == NULL || repo == NULL || tag == NULL || tag[0] == '\0' || digest == NULL)
        return CACHE_INVALID;
    tag_arg a = {.repo = repo, .tag = tag, .digest = digest, .confirmed_at = confirmed_at};
    return run_write(c, tag_put_op, &a);
}

/* ---- referrers ---- */

typedef struct {
    uint8_t key[REF_KEY_LEN];
    const char *json;
    size_t len;
} referrer_arg;

static int referrer_put_op(cache *c, MDB_txn *txn, void *arg)
{
    referrer_arg *a = arg;
    MDB_val k = mval(a->key, REF_KEY_LEN), v;
    int rc = mdb_get(txn, c->referrers, &k, &v);
    if (rc == 0 && v.mv_size == a->len + 1 && memcmp(v.mv_data, a->json, a->len) == 0)
        return W_NOCHANGE;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    v = mval(NULL, a->len + 1);
    if ((rc = mdb_put(txn, c->referrers, &k, &v, MDB_RESERVE)) != 0)
        return rc;
    memcpy(v.mv_data, a->json, a->len);
    ((char *)v.mv_data)[a->len] = '\0';
    return 0;
}

cache_status cache_referrer_put(cache *c, const uint8_t subject[CACHE_DIGEST_LEN],
                                const uint8_t referrer[CACHE_DIGEST_LEN],
                                const char *descriptor_json, size_t len)
{
    if (c == NULL || subject == NULL || referrer == NULL || descriptor_json == NULL ||
        len == SIZE_MAX || memchr(descriptor_json, '\0', len) != NULL)
        return CACHE_INVALID;
    referrer_arg a = {.json = descriptor_json, .len = len};
    memcpy(a.key, subject, CACHE_DIGEST_LEN);
    memcpy(a.key + CACHE_DIGEST_LEN, referrer, CACHE_DIGEST_LEN);
    return run_write(c, referrer_put_op, &a);
}

/* ---- references ---- */

/* "repo\0" || digest into buf; CACHE_INVALID if empty repo or too long. */
static int ref_key(cache *c, uint8_t buf[KEY_BUF], const char *repo, const uint8_t *digest,
                   size_t *klen)
{
    size_t r = strlen(repo);
    size_t max = (size_t)mdb_env_get_maxkeysize(c->env);
    if (r == 0 || r + 1 + CACHE_DIGEST_LEN > max || r + 1 + CACHE_DIGEST_LEN > KEY_BUF)
        return CACHE_INVALID;
    memcpy(buf, repo, r);
    buf[r] = 0;
    memcpy(buf + r + 1, digest, CACHE_DIGEST_LEN);
    *klen = r + 1 + CACHE_DIGEST_LEN;
    return 0;
}

typedef struct {
    uint8_t key[KEY_BUF];
    size_t klen;
    const uint8_t *manifest;
} ref_arg;

static int ref_put_op(cache *c, MDB_txn *txn, void *arg)
{
    ref_arg *a = arg;
    MDB_val k = mval(a->key, a->klen), v = mval(a->manifest, CACHE_DIGEST_LEN);
    int rc = mdb_put(txn, c->refs, &k, &v, MDB_NODUPDATA);
    return rc == MDB_KEYEXIST ? W_NOCHANGE : rc;
}

cache_status cache_ref_put(cache *c, const char *repo, const uint8_t digest[CACHE_DIGEST_LEN],
                           const uint8_t manifest[CACHE_DIGEST_LEN])
{
    if (c == NULL || repo == NULL || digest == NULL || manifest == NULL)
        return CACHE_INVALID;
    ref_arg a = {.manifest = manifest};
    int rc = ref_key(c, a.key, repo, digest, &a.klen);
    return rc != 0 ? (cache_status)rc : run_write(c, ref_put_op, &a);
}

int cache_ref_list(cache_snapshot *s, const char *repo, const uint8_t digest[CACHE_DIGEST_LEN],
                   cache_ref_fn fn, void *arg)
{
    if (s == NULL || repo == NULL || digest == NULL || fn == NULL)
        return CACHE_INVALID;
    uint8_t key[KEY_BUF];
    size_t klen;
    int rc = ref_key(s->c, key, repo, digest, &klen);
    MDB_cursor *cur = NULL;
    if (rc == 0)
        rc = mdb_cursor_open(s->txn, s->c->refs, &cur);
    if (rc != 0)
        return to_status(rc);
    int count = 0;
    MDB_val k = mval(key, klen), v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        if (v.mv_size != CACHE_DIGEST_LEN) {
            rc = CACHE_CORRUPT;
            break;
        }
        count++;
        if (fn(arg, v.mv_data) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? count : to_status(rc);
}

/* ---- deltas ---- */

static int delta_key(uint8_t key[DELTA_KEY_MAX], const uint8_t *base, const uint8_t *target,
                     const char *codec, size_t *klen)
{
    size_t n = codec != NULL ? strlen(codec) : 0;
    if (base == NULL || target == NULL || n == 0 || n > CODEC_MAX)
        return CACHE_INVALID;
    memcpy(key, base, CACHE_DIGEST_LEN);
    memcpy(key + CACHE_DIGEST_LEN, target, CACHE_DIGEST_LEN);
    memcpy(key + 2 * CACHE_DIGEST_LEN, codec, n);
    *klen = 2 * CACHE_DIGEST_LEN + n;
    return 0;
}

typedef struct {
    uint8_t key[DELTA_KEY_MAX];
    size_t klen;
    uint8_t val[DELTA_VAL_LEN];
} delta_arg;

static int delta_put_op(cache *c, MDB_txn *txn, void *arg)
{
    delta_arg *a = arg;
    MDB_val k = mval(a->key, a->klen), v;
    totals d = {0};
    int rc = mdb_get(txn, c->deltas, &k, &v);
    if (rc == 0 && key_is(&v, a->val, DELTA_VAL_LEN))
        return W_NOCHANGE;
    if (rc == 0 && v.mv_size == DELTA_VAL_LEN)
        d.v[TOT_DELTA_BYTES] -= (int64_t)get_le((const uint8_t *)v.mv_data + CACHE_DIGEST_LEN, 8);
    else if (rc != MDB_NOTFOUND)
        return rc == 0 ? CACHE_CORRUPT : rc;
    d.v[TOT_DELTA_BYTES] += (int64_t)get_le(a->val + CACHE_DIGEST_LEN, 8);
    v = mval(a->val, DELTA_VAL_LEN);
    rc = mdb_put(txn, c->deltas, &k, &v, 0);
    return rc != 0 ? rc : txn_totals_add(c, txn, &d);
}

cache_status cache_delta_put(cache *c, const uint8_t base[CACHE_DIGEST_LEN],
                             const uint8_t target[CACHE_DIGEST_LEN], const char *codec,
                             const uint8_t delta[CACHE_DIGEST_LEN], uint64_t size)
{
    delta_arg a;
    if (c == NULL || delta == NULL || size > INT64_MAX ||
        delta_key(a.key, base, target, codec, &a.klen) != 0)
        return CACHE_INVALID;
    memcpy(a.val, delta, CACHE_DIGEST_LEN);
    put_le(a.val + CACHE_DIGEST_LEN, size, 8);
    return run_write(c, delta_put_op, &a);
}

static int delta_decode(const MDB_val *v, uint8_t *delta, uint64_t *size)
{
    if (v->mv_size != DELTA_VAL_LEN)
        return CACHE_CORRUPT;
    if (delta != NULL)
        memcpy(delta, v->mv_data, CACHE_DIGEST_LEN);
    if (size != NULL)
        *size = get_le((const uint8_t *)v->mv_data + CACHE_DIGEST_LEN, 8);
    return 0;
}

cache_status cache_delta_get(cache_snapshot *s, const uint8_t base[CACHE_DIGEST_LEN],
                             const uint8_t target[CACHE_DIGEST_LEN], const char *codec,
                             uint8_t delta[CACHE_DIGEST_LEN], uint64_t *size)
{
    uint8_t key[DELTA_KEY_MAX];
    size_t klen;
    if (s == NULL || delta == NULL || delta_key(key, base, target, codec, &klen) != 0)
        return CACHE_INVALID;
    MDB_val k = mval(key, klen), v;
    int rc = mdb_get(s->txn, s->c->deltas, &k, &v);
    if (rc == 0)
        rc = delta_decode(&v, delta, size);
    return to_status(rc);
}

typedef struct {
    int count;
    cache_delta_fn fn;
    void *arg;
} delta_walk;

static int visit_delta(void *ctx, const MDB_val *k, const MDB_val *v)
{
    delta_walk *w = ctx;
    char codec[CODEC_MAX + 1];
    uint8_t delta[CACHE_DIGEST_LEN];
    uint64_t size;
    size_t n = k->mv_size - 2 * CACHE_DIGEST_LEN;
    if (n == 0 || n > CODEC_MAX || delta_decode(v, delta, &size) != 0)
        return CACHE_CORRUPT;
    memcpy(codec, (const uint8_t *)k->mv_data + 2 * CACHE_DIGEST_LEN, n);
    codec[n] = '\0';
    w->count++;
    return w->fn(w->arg, codec, delta, size) != 0 ? W_STOP : 0;
}

int cache_delta_list(cache_snapshot *s, const uint8_t base[CACHE_DIGEST_LEN],
                     const uint8_t target[CACHE_DIGEST_LEN], cache_delta_fn fn, void *arg)
{
    if (s == NULL || base == NULL || target == NULL || fn == NULL)
        return CACHE_INVALID;
    uint8_t prefix[2 * CACHE_DIGEST_LEN];
    memcpy(prefix, base, CACHE_DIGEST_LEN);
    memcpy(prefix + CACHE_DIGEST_LEN, target, CACHE_DIGEST_LEN);
    delta_walk w = {.fn = fn, .arg = arg};
    key_range r = {.start = prefix, .slen = sizeof prefix, .plen = sizeof prefix};
    int rc = walk(s->txn, s->c->deltas, &r, visit_delta, &w);
    return rc != 0 ? to_status(rc) : w.count;
}

/* ---- verdicts ---- */

/* policy || digest || "repo\0tag" into buf; CACHE_INVALID if too long. */
static int verdict_key(cache *c, uint8_t buf[KEY_BUF], const uint8_t *policy, const char *repo,
                       const char *tag, const uint8_t *digest, size_t *klen)
{
    size_t r = strlen(repo), t = strlen(tag), n = 2 * CACHE_DIGEST_LEN + r + 1 + t;
    if (n > (size_t)mdb_env_get_maxkeysize(c->env) || n > KEY_BUF)
        return CACHE_INVALID;
    memcpy(buf, policy, CACHE_DIGEST_LEN);
    memcpy(buf + CACHE_DIGEST_LEN, digest, CACHE_DIGEST_LEN);
    memcpy(buf + 2 * CACHE_DIGEST_LEN, repo, r);
    buf[2 * CACHE_DIGEST_LEN + r] = 0;
    memcpy(buf + 2 * CACHE_DIGEST_LEN + r + 1, tag, t);
    *klen = n;
    return 0;
}

typedef struct {
    uint8_t key[KEY_BUF];
    size_t klen;
    const cache_verdict *v;
} verdict_arg;

static int verdict_put_op(cache *c, MDB_txn *txn, void *arg)
{
    verdict_arg *a = arg;
    size_t n = strnlen(a->v->reason, CACHE_VERDICT_TEXT_MAX - 1);
    MDB_val k = mval(a->key, a->klen), v = mval(NULL, VERDICT_HDR + n + 1);
    int rc = mdb_put(txn, c->verdicts, &k, &v, MDB_RESERVE);
    if (rc != 0)
        return rc;
    uint8_t *p = v.mv_data;
    memset(p, 0, VERDICT_HDR);
    p[0] = VERDICT_VERSION;
    p[1] = a->v->allowed ? 1 : 0;
    put_le(p + 8, a->v->decided_at, 8);
    memcpy(p + VERDICT_HDR, a->v->reason, n);
    p[VERDICT_HDR + n] = 0;
    return 0;
}

cache_status cache_verdict_put(cache *c, const uint8_t policy[CACHE_DIGEST_LEN], const char *repo,
                               const char *tag, const uint8_t digest[CACHE_DIGEST_LEN],
                               const cache_verdict *v)
{
    if (c == NULL || policy == NULL || repo == NULL || tag == NULL || digest == NULL || v == NULL)
        return CACHE_INVALID;
    verdict_arg a = {.v = v};
    int rc = verdict_key(c, a.key, policy, repo, tag, digest, &a.klen);
    return rc != 0 ? (cache_status)rc : run_write(c, verdict_put_op, &a);
}

static int verdict_decode(const MDB_val *v, cache_verdict *out)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < VERDICT_HDR + 1 || p[0] != VERDICT_VERSION || p[1] > 1 ||
        p[v->mv_size - 1] != 0)
        return CACHE_CORRUPT;
    size_t n = v->mv_size - VERDICT_HDR - 1;
    if (memchr(p + VERDICT_HDR, 0, n) != NULL || n >= CACHE_VERDICT_TEXT_MAX)
        return CACHE_CORRUPT;
    out->allowed = p[1];
    out->decided_at = get_le(p + 8, 8);
    memcpy(out->reason, p + VERDICT_HDR, n + 1);
    return 0;
}

cache_status cache_verdict_get(cache_snapshot *s, const uint8_t policy[CACHE_DIGEST_LEN],
                               const char *repo, const char *tag,
                               const uint8_t digest[CACHE_DIGEST_LEN], cache_verdict *out)
{
    if (s == NULL || policy == NULL || repo == NULL || tag == NULL || digest == NULL || out == NULL)
        return CACHE_INVALID;
    uint8_t key[KEY_BUF];
    size_t klen;
    int rc = verdict_key(s->c, key, policy, repo, tag, digest, &klen);
    MDB_val k = mval(key, klen), v;
    if (rc == 0)
        rc = mdb_get(s->txn, s->c->verdicts, &k, &v);
    return to_status(rc != 0 ? rc : verdict_decode(&v, out));
}

typedef struct {
    const uint8_t *keep;
    uint64_t removed;
    bool more; /* the batch filled up: run again */
} prune_arg;

/* The first key after every key that begins with `keep`; false if none. */
static bool after_prefix(const uint8_t *keep, uint8_t out[CACHE_DIGEST_LEN])
{
    memcpy(out, keep, CACHE_DIGEST_LEN);
    for (int i = CACHE_DIGEST_LEN - 1; i >= 0; i--)
        if (++out[i] != 0)
            return true;
    return false;
}

/* Deletes up to VERDICT_PRUNE_BATCH verdicts not under a->keep, re-seeking
 * from the deleted key after each delete (as txn_del_chunks does). */
static int verdict_prune_op(cache *c, MDB_txn *txn, void *arg)
{
    prune_arg *a = arg;
    MDB_cursor *cur;
    uint8_t from[KEY_BUF];
    size_t flen = 0;
    int done = 0, rc = mdb_cursor_open(txn, c->verdicts, &cur);
    if (rc != 0)
        return rc;
    a->more = false;
    while (rc == 0) {
        MDB_val k = mval(from, flen), v;
        if ((rc = mdb_cursor_get(cur, &k, &v, flen > 0 ? MDB_SET_RANGE : MDB_FIRST)) != 0)
            break;
        if (k.mv_size >= CACHE_DIGEST_LEN && memcmp(k.mv_data, a->keep, CACHE_DIGEST_LEN) == 0) {
            if (!after_prefix(a->keep, from))
                break;
            flen = CACHE_DIGEST_LEN;
            continue;
        }
        if (done == VERDICT_PRUNE_BATCH || k.mv_size > KEY_BUF) {
            a->more = done == VERDICT_PRUNE_BATCH;
            break;
        }
        memcpy(from, k.mv_data, k.mv_size);
        flen = k.mv_size;
        if ((rc = mdb_cursor_del(cur, 0)) == 0)
            done++;
    }
    mdb_cursor_close(cur);
    a->removed += (uint64_t)done;
    if (rc == MDB_NOTFOUND)
        rc = 0;
    return rc == 0 && done == 0 ? W_NOCHANGE : rc;
}

cache_status cache_verdict_prune(cache *c, const uint8_t keep[CACHE_DIGEST_LEN], uint64_t *removed)
{
    if (c == NULL || keep == NULL)
        return CACHE_INVALID;
    prune_arg a = {.keep = keep};
    cache_status st;
    do
        st = run_write(c, verdict_prune_op, &a);
    while (st == CACHE_OK && a.more);
    if (removed != NULL)
        *removed = a.removed;
    return st;
}

/* ---- pins ---- */

typedef struct {
    const uint8_t *digest;
    bool pin;
} pin_arg;

static int pin_blob(cache *c, MDB_txn *txn, const pin_arg *a, totals *d)
{
    blob_meta m;
    int rc = txn_meta(c, txn, a->digest, &m);
    if (rc != 0)
        return rc;
    if (((m.flags & FLAG_PINNED) != 0) == a->pin)
        return W_NOCHANGE;
    totals_blob(d, &m, -1);
    m.flags ^= FLAG_PINNED;
    totals_blob(d, &m, 1);
    return txn_put_meta(c, txn, a->digest, &m);
}

static int pin_manifest(cache *c, MDB_txn *txn, const pin_arg *a, totals *d)
{
    MDB_val k = mval(a->digest, CACHE_DIGEST_LEN), v;
    manifest_rec r;
    int rc = mdb_get(txn, c->manifests, &k, &v);
    if (rc == 0)
        rc = manifest_decode(&v, &r);
    if (rc != 0)
        return rc;
    if (((r.flags & FLAG_PINNED) != 0) == a->pin)
        return W_NOCHANGE;
    totals_manifest(d, &r, -1);
    r.flags ^= FLAG_PINNED;
    totals_manifest(d, &r, 1);
    return txn_manifest_rewrite(c, txn, &k, &v, r.flags, r.accessed);
}

static bool pin_failed(int rc)
{
    return rc != 0 && rc != MDB_NOTFOUND && rc != W_NOCHANGE;
}

static int pin_op(cache *c, MDB_txn *txn, void *arg)
{
    totals d = {0};
    int rb = pin_blob(c, txn, arg, &d);
    if (pin_failed(rb))
        return rb;
    int rm = pin_manifest(c, txn, arg, &d);
    if (pin_failed(rm))
        return rm;
    if (rb == MDB_NOTFOUND && rm == MDB_NOTFOUND)
        return CACHE_NOTFOUND;
    if (rb != 0 && rm != 0)
        return W_NOCHANGE;
    return txn_totals_add(c, txn, &d);
}

cache_status cache_pin(cache *c, const uint8_t digest[CACHE_DIGEST_LEN], int pinned)
{
    if (c == NULL || digest == NULL)
        return CACHE_INVALID;
    pin_arg a = {.digest = digest, .pin = pinned != 0};
    return run_write(c, pin_op, &a);
}

/* ---- persistent counters ---- */

static void counters_to_array(const cache_counters *cc, uint64_t v[N_COUNTERS])
{
    v[0] = cc->hits;
    v[1] = cc->misses;
    v[2] = cc->bytes_served;
    v[3] = cc->bytes_upstream;
    v[4] = cc->bytes_saved_deltas;
}

static int counters_read(cache *c, MDB_txn *txn, uint64_t v[N_COUNTERS])
{
    MDB_val k = mval(COUNTERS_KEY, sizeof COUNTERS_KEY - 1), val;
    memset(v, 0, N_COUNTERS * sizeof v[0]);
    int rc = mdb_get(txn, c->counters, &k, &val);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc == 0 && val.mv_size != 8 * N_COUNTERS)
        return CACHE_CORRUPT;
    for (int i = 0; rc == 0 && i < N_COUNTERS; i++)
        v[i] = get_le((const uint8_t *)val.mv_data + 8 * i, 8);
    return rc;
}

static int counters_add_op(cache *c, MDB_txn *txn, void *arg)
{
    uint64_t add[N_COUNTERS], v[N_COUNTERS];
    counters_to_array(arg, add);
    int rc = counters_read(c, txn, v);
    if (rc != 0)
        return rc;
    uint8_t buf[8 * N_COUNTERS];
    bool changed = false;
    for (int i = 0; i < N_COUNTERS; i++) {
        changed |= add[i] != 0;
        put_le(buf + 8 * i, v[i] + add[i], 8);
    }
    MDB_val k = mval(COUNTERS_KEY, sizeof COUNTERS_KEY - 1), val = mval(buf, sizeof buf);
    return changed ? mdb_put(txn, c->counters, &k, &val, 0) : W_NOCHANGE;
}

cache_status cache_counters_add(cache *c, const cache_counters *delta)
{
    if (c == NULL || delta == NULL)
        return CACHE_INVALID;
    return run_write(c, counters_add_op, (void *)delta);
}

cache_status cache_counters_get(cache *c, cache_counters *out)
{
    if (c == NULL || out == NULL)
        return CACHE_INVALID;
    cache_snapshot *s = snapshot_open(c, true);
    if (s == NULL)
        return CACHE_IO;
    uint64_t v[N_COUNTERS];
    int rc = counters_read(c, s->txn, v);
    cache_snapshot_unref(s);
    if (rc != 0)
        return to_status(rc);
    *out = (cache_counters){.hits = v[0],
                            .misses = v[1],
                            .bytes_served = v[2],
                            .bytes_upstream = v[3],
                            .bytes_saved_deltas = v[4]};
    return CACHE_OK;
}

/* ---- eviction ---- */

enum { V_BLOB, V_MANIFEST, V_DELTA };

/* An eviction candidate as a snapshot saw it; deleted only if unchanged. */
typedef struct {
    uint8_t digest[CACHE_DIGEST_LEN]; /* blob, manifest, or a delta's blob */
    uint64_t accessed;
    uint32_t chunks;  /* chunk records its deletion removes */
    uint32_t key_off; /* V_DELTA: its index key in the list's arena */
    uint8_t klen;
    uint8_t kind;
} victim;

typedef struct {
    cache *c;
    MDB_txn *txn;
    victim *v;
    size_t n, cap;
    uint8_t *arena; /* delta index keys */
    size_t alen, acap;
} victim_list;

static int grow_array(void **items, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap != 0 ? *cap : 64;
    while (cap2 < need)
        cap2 *= 2;
    void *p = realloc(*items, cap2 * size);
    if (p == NULL)
        return ENOMEM;
    *items = p;
    *cap = cap2;
    return 0;
}

static int victim_push(victim_list *l, const victim *x, const void *key, size_t klen)
{
    int rc = grow_array((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v);
    if (rc == 0 && klen > 0)
        rc = grow_array((void **)&l->arena, &l->acap, l->alen + klen, 1);
    if (rc != 0)
        return rc;
    l->v[l->n] = *x;
    if (klen > 0) {
        memcpy(l->arena + l->alen, key, klen);
        l->v[l->n].key_off = (uint32_t)l->alen;
        l->v[l->n].klen = (uint8_t)klen;
        l->alen += klen;
    }
    l->n++;
    return 0;
}

static int collect_blob(void *ctx, const MDB_val *k, const MDB_val *v)
{
    blob_meta m;
    int rc = meta_decode(v, &m);
    if (rc != 0 || m.state != CACHE_BLOB_COMPLETE || (m.flags & FLAG_PINNED))
        return rc;
    victim x = {.accessed = m.accessed, .chunks = m.chunks, .kind = V_BLOB};
    memcpy(x.digest, k->mv_data, CACHE_DIGEST_LEN);
    return victim_push(ctx, &x, NULL, 0);
}

static int collect_manifest(void *ctx, const MDB_val *k, const MDB_val *v)
{
    manifest_rec r;
    int rc = manifest_decode(v, &r);
    if (rc != 0 || (r.flags & FLAG_PINNED))
        return rc;
    victim x = {.accessed = r.accessed, .kind = V_MANIFEST};
    memcpy(x.digest, k->mv_data, CACHE_DIGEST_LEN);
    return victim_push(ctx, &x, NULL, 0);
}

/* A delta whose blob is pinned or PARTIAL stays; one whose blob is gone is
 * a dangling index entry and goes first (accessed 0). */
static int collect_delta(void *ctx, const MDB_val *k, const MDB_val *v)
{
    victim_list *l = ctx;
    victim x = {.kind = V_DELTA};
    if (k->mv_size <= 2 * CACHE_DIGEST_LEN || k->mv_size > DELTA_KEY_MAX ||
        delta_decode(v, x.digest, NULL) != 0)
        return CACHE_CORRUPT;
    blob_meta m;
    int rc = txn_meta(l->c, l->txn, x.digest, &m);
    if (rc == 0 && (m.state != CACHE_BLOB_COMPLETE || (m.flags & FLAG_PINNED)))
        return 0;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    x.accessed = rc == 0 ? m.accessed : 0;
    x.chunks = rc == 0 ? m.chunks : 0;
    return victim_push(l, &x, k->mv_data, k->mv_size);
}

/* Oldest first; entries of one delta blob stay adjacent. */
static int victim_cmp(const void *a, const void *b)
{
    const victim *x = a, *y = b;
    if (x->accessed != y->accessed)
        return x->accessed < y->accessed ? -1 : 1;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    return memcmp(x->digest, y->digest, CACHE_DIGEST_LEN);
}

static void victim_list_free(victim_list *l)
{
    free(l->v);
    free(l->arena);
}

/* Collects the candidates of one phase under a snapshot, sorted. */
static int collect_victims(cache *c, bool deltas, victim_list *l)
{
    cache_snapshot *s = snapshot_open(c, true);
    if (s == NULL)
        return CACHE_IO;
    *l = (victim_list){.c = c, .txn = s->txn};
    key_range all = {0};
    int rc;
    if (deltas) {
        rc = walk(s->txn, c->deltas, &all, collect_delta, l);
    } else {
        rc = walk(s->txn, c->blobmeta, &all, collect_blob, l);
        if (rc == 0)
            rc = walk(s->txn, c->manifests, &all, collect_manifest, l);
    }
    cache_snapshot_unref(s);
    l->txn = NULL;
    if (rc == 0 && l->n > 1)
        qsort(l->v, l->n, sizeof *l->v, victim_cmp);
    return rc;
}

/* Rows to delete after a batch evicted manifests: key (and dup value). */
typedef struct {
    uint8_t *buf;
    size_t len, cap;
} doomed;

static int doomed_add(doomed *d, const MDB_val *k, const MDB_val *v)
{
    size_t vlen = v != NULL ? v->mv_size : 0;
    size_t need = 4 + k->mv_size + vlen;
    int rc = grow_array((void **)&d->buf, &d->cap, d->len + need, 1);
    if (rc != 0)
        return rc;
    uint8_t *p = d->buf + d->len;
    put_le(p, k->mv_size, 2);
    put_le(p + 2, vlen, 2);
    memcpy(p + 4, k->mv_data, k->mv_size);
    if (vlen > 0)
        memcpy(p + 4 + k->mv_size, v->mv_data, vlen);
    d->len += need;
    return 0;
}

typedef struct evict_batch {
    uint64_t max;
    const victim_list *l;
    size_t start;
    /* results of the last attempt (run_write may retry after growing the map) */
    size_t next;
    uint64_t objects, bytes;
    bool under; /* the bound is met */
    uint8_t (*gone)[CACHE_DIGEST_LEN];
    size_t ngone, gone_cap;
    doomed rows;
    MDB_dbi row_dbi;
} evict_batch;

static int digest_cmp(const void *a, const void *b)
{
    return memcmp(a, b, CACHE_DIGEST_LEN);
}

static bool is_gone(const evict_batch *b, const void *digest)
{
    return bsearch(digest, b->gone, b->ngone, CACHE_DIGEST_LEN, digest_cmp) != NULL;
}

static int doom_tag(void *ctx, const MDB_val *k, const MDB_val *v)
{
    evict_batch *b = ctx;
    return v->mv_size == TAG_VAL_LEN && is_gone(b, v->mv_data) ? doomed_add(&b->rows, k, NULL) : 0;
}

static int doom_referrer(void *ctx, const MDB_val *k, const MDB_val *v)
{
    (void)v;
    evict_batch *b = ctx;
    const uint8_t *referrer = (const uint8_t *)k->mv_data + CACHE_DIGEST_LEN;
    return k->mv_size == REF_KEY_LEN && is_gone(b, referrer) ? doomed_add(&b->rows, k, NULL) : 0;
}

static int doom_ref(void *ctx, const MDB_val *k, const MDB_val *v)
{
    evict_batch *b = ctx;
    return v->mv_size == CACHE_DIGEST_LEN && is_gone(b, v->mv_data) ? doomed_add(&b->rows, k, v)
                                                                    : 0;
}

/* Deletes the rows collected by a doom_* walk over dbi. */
static int delete_doomed(MDB_txn *txn, MDB_dbi dbi, doomed *d)
{
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < d->len;) {
        uint8_t *p = d->buf + off;
        size_t kl = (size_t)get_le(p, 2), vl = (size_t)get_le(p + 2, 2);
        MDB_val k = mval(p + 4, kl), v = mval(p + 4 + kl, vl);
        rc = mdb_del(txn, dbi, &k, vl > 0 ? &v : NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
        off += 4 + kl + vl;
    }
    d->len = 0;
    return rc;
}

/* Removes the tags, refs rows and referrers rows of the evicted manifests. */
static int drop_manifest_rows(cache *c, MDB_txn *txn, evict_batch *b)
{
    if (b->ngone == 0)
        return 0;
    qsort(b->gone, b->ngone, CACHE_DIGEST_LEN, digest_cmp);
    const struct {
        MDB_dbi dbi;
        visit_fn fn;
    } dbs[] = {{c->tags, doom_tag}, {c->refs, doom_ref}, {c->referrers, doom_referrer}};
    key_range all = {0};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof dbs / sizeof dbs[0]; i++) {
        rc = walk(txn, dbs[i].dbi, &all, dbs[i].fn, b);
        if (rc == 0)
            rc = delete_doomed(txn, dbs[i].dbi, &b->rows);
    }
    return rc;
}

static int evict_blob(cache *c, MDB_txn *txn, const victim *x, uint64_t *freed)
{
    blob_meta m;
    int rc = txn_meta(c, txn, x->digest, &m);
    if (rc == MDB_NOTFOUND)
        return W_NOCHANGE;
    if (rc != 0)
        return rc;
    if (m.state != CACHE_BLOB_COMPLETE || (m.flags & FLAG_PINNED) || m.accessed != x->accessed)
        return W_NOCHANGE;
    *freed = m.size;
    return txn_del_blob(c, txn, x->digest, &m);
}

static int evict_manifest(cache *c, MDB_txn *txn, const victim *x, evict_batch *b, uint64_t *freed)
{
    MDB_val k = mval(x->digest, CACHE_DIGEST_LEN), v;
    manifest_rec r;
    int rc = mdb_get(txn, c->manifests, &k, &v);
    if (rc == MDB_NOTFOUND)
        return W_NOCHANGE;
    if (rc == 0)
        rc = manifest_decode(&v, &r);
    if (rc != 0)
        return rc;
    if ((r.flags & FLAG_PINNED) || r.accessed != x->accessed)
        return W_NOCHANGE;
    *freed = r.len;
    if ((rc = grow_array((void **)&b->gone, &b->gone_cap, b->ngone + 1, CACHE_DIGEST_LEN)) != 0)
        return rc;
    memcpy(b->gone[b->ngone++], x->digest, CACHE_DIGEST_LEN);
    return txn_del_manifest(c, txn, x->digest);
}

/* Deletes a delta index entry, and its blob unless that changed since. */
static int evict_delta(cache *c, MDB_txn *txn, const evict_batch *b, const victim *x,
                       uint64_t *freed)
{
    MDB_val k = mval(b->l->arena + x->key_off, x->klen), v;
    uint8_t delta[CACHE_DIGEST_LEN];
    uint64_t size;
    int rc = mdb_get(txn, c->deltas, &k, &v);
    if (rc == 0)
        rc = delta_decode(&v, delta, &size);
    if (rc != 0 || memcmp(delta, x->digest, CACHE_DIGEST_LEN) != 0)
        return rc == MDB_NOTFOUND || rc == 0 ? W_NOCHANGE : rc;
    blob_meta m;
    rc = txn_meta(c, txn, x->digest, &m);
    if (rc == 0 &&
        (m.state != CACHE_BLOB_COMPLETE || (m.flags & FLAG_PINNED) || m.accessed != x->accessed))
        return W_NOCHANGE;
    if (rc == 0) {
        *freed = m.size;
        rc = txn_del_blob(c, txn, x->digest, &m);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    totals d = {.v[TOT_DELTA_BYTES] = -(int64_t)size};
    rc = mdb_del(txn, c->deltas, &k, NULL);
    return rc != 0 ? rc : txn_totals_add(c, txn, &d);
}

static int stored_in_txn(cache *c, MDB_txn *txn, uint64_t *size)
{
    totals t;
    int rc = txn_totals_get(c, txn, &t);
    if (rc == 0)
        *size = (uint64_t)t.v[TOT_BLOB_BYTES] + (uint64_t)t.v[TOT_MANIFEST_BYTES];
    return rc;
}

static int evict_one(cache *c, MDB_txn *txn, evict_batch *b, const victim *x, uint64_t *freed)
{
    switch (x->kind) {
    case V_BLOB:
        return evict_blob(c, txn, x, freed);
    case V_MANIFEST:
        return evict_manifest(c, txn, x, b, freed);
    default:
        return evict_delta(c, txn, b, x, freed);
    }
}

/* Victim i is another index entry of the delta blob before it: it goes too
 * (the blob is gone), even once the bound is met. */
static bool same_delta_blob(const victim_list *l, size_t i)
{
    return i > 0 && l->v[i].kind == V_DELTA && l->v[i - 1].kind == V_DELTA &&
           memcmp(l->v[i].digest, l->v[i - 1].digest, CACHE_DIGEST_LEN) == 0;
}

/* One bounded write transaction of the eviction, from victim b->start on. */
static int evict_batch_op(cache *c, MDB_txn *txn, void *arg)
{
    evict_batch *b = arg;
    b->next = b->start;
    b->objects = b->bytes = 0;
    b->ngone = 0;
    b->under = false;
    uint32_t chunks = 0;
    uint64_t size = UINT64_MAX;
    int rc = stored_in_txn(c, txn, &size);
    for (int seen = 0; rc == 0 && b->next < b->l->n && seen < EVICT_BATCH; seen++) {
        const victim *x = &b->l->v[b->next];
        b->under = size <= b->max;
        if ((b->under && !same_delta_blob(b->l, b->next)) ||
            (seen > 0 && chunks + x->chunks > EVICT_BATCH_CHUNKS))
            break;
        uint64_t freed = 0;
        rc = evict_one(c, txn, b, x, &freed);
        if (rc == 0) {
            b->objects++;
            b->bytes += freed;
            chunks += x->chunks;
            rc = stored_in_txn(c, txn, &size);
        } else if (rc == W_NOCHANGE) {
            rc = 0;
        }
        b->next++;
    }
    if (rc == 0)
        b->under = size <= b->max;
    return rc != 0 ? rc : drop_manifest_rows(c, txn, b);
}

/* Runs batches over one phase's victims until the bound is met or none is left. */
static cache_status evict_phase(cache *c, bool deltas, uint64_t max, cache_evict_result *out,
                                bool *under)
{
    victim_list l;
    int rc = collect_victims(c, deltas, &l);
    evict_batch b = {.max = max, .l = &l};
    cache_status st = to_status(rc);
    while (st == CACHE_OK && b.start < l.n && (!*under || same_delta_blob(&l, b.start))) {
        st = run_write(c, evict_batch_op, &b);
        if (st == CACHE_OK) {
            out->evicted_objects += b.objects;
            out->evicted_bytes += b.bytes;
            *under = b.under;
            b.start = b.next;
        }
    }
    free(b.gone);
    free(b.rows.buf);
    victim_list_free(&l);
    return st;
}

static cache_status stored_size(cache *c, uint64_t *size)
{
    cache_snapshot *s = snapshot_open(c, true);
    if (s == NULL)
        return CACHE_IO;
    int rc = stored_in_txn(c, s->txn, size);
    cache_snapshot_unref(s);
    return to_status(rc);
}

cache_status cache_evict(cache *c, uint64_t max_bytes, cache_evict_result *out)
{
    if (c == NULL || out == NULL)
        return CACHE_INVALID;
    memset(out, 0, sizeof *out);
    uint64_t size = UINT64_MAX;
    cache_status st = stored_size(c, &size);
    bool under = st == CACHE_OK && size <= max_bytes;
    if (st == CACHE_OK && !under)
        st = evict_phase(c, true, max_bytes, out, &under);
    if (st == CACHE_OK && !under)
        st = evict_phase(c, false, max_bytes, out, &under);
    if (st == CACHE_OK)
        st = stored_size(c, &out->size_after);
    return st;
}

/* ---- checking every stored digest ---- */

typedef struct {
    uint8_t (*d)[CACHE_DIGEST_LEN];
    size_t n, cap;
} digest_list;

static int digest_push(digest_list *l, const void *digest)
{
    int rc = grow_array((void **)&l->d, &l->cap, l->n + 1, CACHE_DIGEST_LEN);
    if (rc == 0)
        memcpy(l->d[l->n++], digest, CACHE_DIGEST_LEN);
    return rc;
}

static int list_complete_blob(void *ctx, const MDB_val *k, const MDB_val *v)
{
    blob_meta m;
    int rc = meta_decode(v, &m);
    if (rc == CACHE_CORRUPT || (rc == 0 && m.state == CACHE_BLOB_COMPLETE))
        return digest_push(ctx, k->mv_data); /* a bad record is checked (and fails) too */
    return rc;
}

static int list_manifest(void *ctx, const MDB_val *k, const MDB_val *v)
{
    (void)v;
    return digest_push(ctx, k->mv_data);
}

static cache_status check_manifest(cache *c, const uint8_t *digest)
{
    cache_snapshot *s = snapshot_open(c, true);
    if (s == NULL)
        return CACHE_IO;
    const char *mt;
    const void *body;
    size_t len;
    uint8_t got[CACHE_DIGEST_LEN];
    cache_status st = cache_manifest_get(s, digest, &mt, &body, &len);
    if (st == CACHE_OK && EVP_Digest(body, len, got, NULL, EVP_sha256(), NULL) != 1)
        st = CACHE_IO;
    if (st == CACHE_OK && memcmp(got, digest, CACHE_DIGEST_LEN) != 0)
        st = CACHE_CORRUPT;
    cache_snapshot_unref(s);
    return st;
}

static void check_list(cache *c, const digest_list *l, bool manifests, cache_check_fn fn, void *arg,
                       cache_check_result *out)
{
    for (size_t i = 0; i < l->n; i++) {
        cache_status st = manifests ? check_manifest(c, l->d[i]) : cache_blob_verify(c, l->d[i]);
        if (st == CACHE_NOTFOUND)
            continue; /* deleted or evicted meanwhile */
        if (manifests)
            out->manifests++;
        else
            out->blobs++;
        if (st != CACHE_OK) {
            out->bad++;
            if (fn != NULL)
                fn(arg, l->d[i], manifests, st);
        }
    }
}

cache_status cache_check(cache *c, cache_check_fn fn, void *arg, cache_check_result *out)
{
    if (c == NULL || out == NULL)
        return CACHE_INVALID;
    memset(out, 0, sizeof *out);
    digest_list blobs = {0}, manifests = {0};
    cache_snapshot *s = snapshot_open(c, true);
    if (s == NULL)
        return CACHE_IO;
    key_range all = {0};
    int rc = walk(s->txn, c->blobmeta, &all, list_complete_blob, &blobs);
    if (rc == 0)
        rc = walk(s->txn, c->manifests, &all, list_manifest, &manifests);
    cache_snapshot_unref(s);
    if (rc == 0) {
        check_list(c, &blobs, false, fn, arg, out);
        check_list(c, &manifests, true, fn, arg, out);
    }
    free(blobs.d);
    free(manifests.d);
    return to_status(rc);
}

/* ---- access times ---- */

typedef struct {
    const uint8_t *digest;
    uint64_t when;
} touch_arg;

static int touch_blob(cache *c, MDB_txn *txn, const touch_arg *a)
{
    blob_meta m;
    int rc = txn_meta(c, txn, a->digest, &m);
    if (rc != 0 || m.accessed == a->when)
        return rc;
    m.accessed = a->when;
    return txn_put_meta(c, txn, a->digest, &m);
}

static int touch_manifest(cache *c, MDB_txn *txn, const touch_arg *a)
{
    MDB_val k = mval(a->digest, CACHE_DIGEST_LEN), v;
    manifest_rec r;
    int rc = mdb_get(txn, c->manifests, &k, &v);
    if (rc == 0)
        rc = manifest_decode(&v, &r);
    if (rc != 0 || r.accessed == a->when)
        return rc;
    return txn_manifest_rewrite(c, txn, &k, &v, r.flags, a->when);
}

static int touch_op(cache *c, MDB_txn *txn, void *arg)
{
    int rb = touch_blob(c, txn, arg);
    int rm = touch_manifest(c, txn, arg);
    if (rb == MDB_NOTFOUND && rm == MDB_NOTFOUND)
        return CACHE_NOTFOUND;
    if (rb != 0 && rb != MDB_NOTFOUND)
        return rb;
    return rm == MDB_NOTFOUND ? 0 : rm;
}

cache_status cache_touch(cache *c, const uint8_t digest[CACHE_DIGEST_LEN], uint64_t when)
{
    if (c == NULL || digest == NULL)
        return CACHE_INVALID;
    touch_arg a = {.digest = digest, .when = when};
    return run_write(c, touch_op, &a);
}

/* ---- statistics and partial blobs ---- */

/* O(1): the totals record and the DBs' entry counts, all from one snapshot. */
static int stat_snapshot(cache_snapshot *s, cache_stats *out)
{
    MDB_envinfo ei;
    MDB_stat es, ms, ts, ds;
    totals t;
    int rc = mdb_env_info(s->c->env, &ei);
    if (rc == 0)
        rc = mdb_env_stat(s->c->env, &es);
    if (rc == 0)
        rc = mdb_stat(s->txn, s->c->manifests, &ms);
    if (rc == 0)
        rc = mdb_stat(s->txn, s->c->tags, &ts);
    if (rc == 0)
        rc = mdb_stat(s->txn, s->c->deltas, &ds);
    if (rc == 0)
        rc = txn_totals_get(s->c, s->txn, &t);
    if (rc != 0)
        return rc;
    out->map_size = ei.me_mapsize;
    out->used_bytes = ((uint64_t)ei.me_last_pgno + 1) * es.ms_psize;
    out->manifests = ms.ms_entries;
    out->tags = ts.ms_entries;
    out->deltas = ds.ms_entries;
    out->blobs = (uint64_t)t.v[TOT_BLOBS];
    out->blob_bytes = (uint64_t)t.v[TOT_BLOB_BYTES];
    out->partial_blobs = (uint64_t)t.v[TOT_PARTIAL];
    out->manifest_bytes = (uint64_t)t.v[TOT_MANIFEST_BYTES];
    out->pinned_bytes = (uint64_t)t.v[TOT_PINNED];
    out->delta_bytes = (uint64_t)t.v[TOT_DELTA_BYTES];
    return 0;
}

cache_status cache_stat(cache *c, cache_stats *out)
{
    if (c == NULL || out == NULL)
        return CACHE_INVALID;
    memset(out, 0, sizeof *out);
    cache_snapshot *s = snapshot_open(c, true);
    if (s == NULL)
        return CACHE_IO;
    int rc = stat_snapshot(s, out);
    cache_snapshot_unref(s);
    return to_status(rc);
}

typedef struct {
    uint8_t digest[CACHE_DIGEST_LEN];
    cache_blob_info info;
} partial_item;

typedef struct {
    partial_item *items;
    size_t n, cap;
} partial_list;

static int visit_partial(void *ctx, const MDB_val *k, const MDB_val *v)
{
    partial_list *l = ctx;
    blob_meta m;
    int rc = meta_decode(v, &m);
    if (rc != 0 || m.state != CACHE_BLOB_PARTIAL)
        return rc;
    if (k->mv_size != CACHE_DIGEST_LEN)
        return CACHE_CORRUPT;
    if (l->n == l->cap) {
        size_t cap = l->cap != 0 ? 2 * l->cap : 16;
        partial_item *items = realloc(l->items, cap * sizeof *items);
        if (items == NULL)
            return ENOMEM;
        l->items = items;
        l->cap = cap;
    }
    memcpy(l->items[l->n].digest, k->mv_data, CACHE_DIGEST_LEN);
    meta_to_info(&m, &l->items[l->n].info);
    l->n++;
    return 0;
}

/* Collects the PARTIAL records first and calls fn with no snapshot held, so
 * fn may delete or resume them (and a write it makes may grow the map). */
int cache_blob_partial(cache *c, cache_partial_fn fn, void *arg)
{
    if (c == NULL || fn == NULL)
        return CACHE_INVALID;
    cache_snapshot *s = snapshot_open(c, true);
    if (s == NULL)
        return CACHE_IO;
    partial_list l = {0};
    key_range all = {0};
    int rc = walk(s->txn, c->blobmeta, &all, visit_partial, &l);
    cache_snapshot_unref(s);
    int count = 0;
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        count++;
        if (fn(arg, l.items[i].digest, &l.items[i].info) != 0)
            break;
    }
    free(l.items);
    return rc != 0 ? to_status(rc) : count;
}
