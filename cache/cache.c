/*
 * cache.c — Sluice's content store on LMDB (implements cache.h).
 *
 * What it is for: keeping verified blobs (chunked), manifests, tags and
 * referrers on local disk so an edge site can serve them without the
 * upstream, crash-safely, with readers that never block and never copy.
 *
 * How it works. One LMDB environment in the cache directory (DIR/data.mdb,
 * DIR/lock.mdb), opened with MDB_NOTLS so a read transaction belongs to a
 * snapshot object rather than to a thread, holds five named databases. Every
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
 *                2  u16   zero
 *                4  u32le chunks stored
 *                8  u64le size (bytes appended so far / total when COMPLETE)
 *               16  u64le created (unix seconds)
 *               24  u64le accessed (unix seconds, cache_touch)
 *              invariant: chunks == ceil(size / CACHE_CHUNK_SIZE).
 *   chunks     key: digest (32) || u32be index, so a blob's chunks are
 *              adjacent and in order; value: the chunk's bytes (1 ..
 *              CACHE_CHUNK_SIZE, all but the last exactly CACHE_CHUNK_SIZE).
 *   manifests  key: digest (32)
 *              value: 0 u8 version (1) | 1 u8 zero | 2 u16le media type
 *              length m | 4 u32 zero | 8 u64le accessed | 16 media type (m
 *              bytes, no NUL inside) | 16+m NUL | 17+m body (to the end).
 *   tags       key: repository bytes || 0x00 || tag bytes (no NULs inside;
 *              at most mdb_env_get_maxkeysize() bytes)
 *              value, 40 bytes: 0 digest (32) | 32 u64le confirmed_at.
 *   referrers  key: subject digest (32) || referrer digest (32)
 *              value: descriptor JSON bytes || 0x00 (the NUL is not counted
 *              in the length handed to callers; it makes the pointer a C
 *              string too).
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
#define MAX_DBS 8
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

/* Internal results besides 0, a cache_status (-1..-5) and LMDB/errno codes. */
#define W_NOCHANGE (-1000) /* write step changed nothing: abort, report CACHE_OK */
#define W_STOP (-1001)     /* walk visitor: stop here */

struct cache {
    MDB_env *env;
    MDB_dbi blobmeta, chunks, manifests, tags, referrers;
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
    uint32_t chunks;
    uint64_t size, created, accessed;
} blob_meta;

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
    return 0;
}

static void manifest_encode(uint8_t *out, const manifest_rec *r)
{
    memset(out, 0, MANIFEST_HDR);
    out[0] = MANIFEST_VERSION;
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

static int env_open(cache *c, const char *dir, const cache_options *o)
{
    if (mkdir(dir, 0750) != 0 && errno != EEXIST)
        return errno;
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
    return rc;
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
    MDB_dbi dbis[] = {c->blobmeta, c->chunks, c->manifests, c->tags, c->referrers};
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
    return txn_put_meta(c, txn, a->digest, &m);
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
    m.state = CACHE_BLOB_COMPLETE;
    return txn_put_meta(c, txn, a->digest, &m);
}

cache_status cache_blob_complete(cache *c, const uint8_t digest[CACHE_DIGEST_LEN], uint64_t size)
{
    if (c == NULL || digest == NULL)
        return CACHE_INVALID;
    blob_arg a = {.digest = digest, .size = size};
    return run_write(c, complete_op, &a);
}

static int delete_op(cache *c, MDB_txn *txn, void *arg)
{
    blob_arg *a = arg;
    MDB_val k = mval(a->digest, CACHE_DIGEST_LEN);
    int rc = mdb_del(txn, c->blobmeta, &k, NULL);
    return rc != 0 ? rc : txn_del_chunks(c, txn, a->digest);
}

cache_status cache_blob_delete(cache *c, const uint8_t digest[CACHE_DIGEST_LEN])
{
    if (c == NULL || digest == NULL)
        return CACHE_INVALID;
    blob_arg a = {.digest = digest};
    return run_write(c, delete_op, &a);
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

typedef struct {
    const uint8_t *digest;
    manifest_rec rec;
} manifest_arg;

static int manifest_put_op(cache *c, MDB_txn *txn, void *arg)
{
    manifest_arg *a = arg;
    MDB_val k = mval(a->digest, CACHE_DIGEST_LEN), v;
    manifest_rec old;
    a->rec.accessed = now_s();
    int rc = mdb_get(txn, c->manifests, &k, &v);
    if (rc == 0 && manifest_decode(&v, &old) == 0) {
        if (manifest_same(&old, &a->rec))
            return W_NOCHANGE;
        a->rec.accessed = old.accessed;
    } else if (rc != 0 && rc != MDB_NOTFOUND) {
        return rc;
    }
    v = mval(NULL, MANIFEST_HDR + a->rec.mtlen + 1 + a->rec.len);
    if ((rc = mdb_put(txn, c->manifests, &k, &v, MDB_RESERVE)) != 0)
        return rc;
    manifest_encode(v.mv_data, &a->rec);
    return 0;
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

static int manifest_delete_op(cache *c, MDB_txn *txn, void *arg)
{
    MDB_val k = mval(arg, CACHE_DIGEST_LEN);
    return mdb_del(txn, c->manifests, &k, NULL);
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

/* Rewrites the manifest record with a new access time (from a copy: the
 * old value's pages must not be read while mdb_put replaces them). */
static int touch_manifest(cache *c, MDB_txn *txn, const touch_arg *a)
{
    MDB_val k = mval(a->digest, CACHE_DIGEST_LEN), v;
    manifest_rec r;
    int rc = mdb_get(txn, c->manifests, &k, &v);
    if (rc == 0)
        rc = manifest_decode(&v, &r);
    if (rc != 0 || r.accessed == a->when)
        return rc;
    uint8_t *copy = malloc(v.mv_size);
    if (copy == NULL)
        return ENOMEM;
    memcpy(copy, v.mv_data, v.mv_size);
    put_le(copy + 8, a->when, 8);
    MDB_val nv = mval(copy, v.mv_size);
    rc = mdb_put(txn, c->manifests, &k, &nv, 0);
    free(copy);
    return rc;
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

static int visit_count_blob(void *ctx, const MDB_val *k, const MDB_val *v)
{
    (void)k;
    cache_stats *out = ctx;
    blob_meta m;
    int rc = meta_decode(v, &m);
    if (rc != 0)
        return rc;
    if (m.state == CACHE_BLOB_COMPLETE) {
        out->blobs++;
        out->blob_bytes += m.size;
    } else {
        out->partial_blobs++;
    }
    return 0;
}

static int stat_snapshot(cache_snapshot *s, cache_stats *out)
{
    MDB_envinfo ei;
    MDB_stat es, ms, ts;
    int rc = mdb_env_info(s->c->env, &ei);
    if (rc == 0)
        rc = mdb_env_stat(s->c->env, &es);
    if (rc == 0)
        rc = mdb_stat(s->txn, s->c->manifests, &ms);
    if (rc == 0)
        rc = mdb_stat(s->txn, s->c->tags, &ts);
    if (rc != 0)
        return rc;
    out->map_size = ei.me_mapsize;
    out->used_bytes = ((uint64_t)ei.me_last_pgno + 1) * es.ms_psize;
    out->manifests = ms.ms_entries;
    out->tags = ts.ms_entries;
    key_range all = {0};
    return walk(s->txn, s->c->blobmeta, &all, visit_count_blob, out);
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
