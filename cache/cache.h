/*
 * cache.h — Sluice's content store, on LMDB.
 *
 * One LMDB environment (DIR/data.mdb) holds:
 *   blobs      content addressed by SHA-256 (32 raw bytes), stored as chunks of
 *              CACHE_CHUNK_SIZE bytes (the last one shorter) under the key
 *              digest || big-endian u32 index, plus one metadata record per
 *              blob (size, chunk count, state, times).
 *   manifests  by digest: media type and body.
 *   tags       "repository\0tag" -> manifest digest and the time (unix
 *              seconds) it was last confirmed by the upstream.
 *   referrers  subject digest || referrer digest -> the referrer's descriptor
 *              (a JSON object as the OCI referrers API lists it).
 *   refs       "repository\0" || digest -> the manifests of that repository
 *              that reference the digest (layers, configs, child manifests).
 *   deltas     base || target || codec -> a delta (itself a COMPLETE blob).
 *   verdicts   policy hash || manifest digest || repository || tag -> a trust
 *              decision (allowed or denied, why, when), so a restarted Sluice
 *              need not verify again what it already decided.
 *   counters   persistent request/byte counters and the running totals that
 *              make cache_stat O(1).
 * Blobs and manifests carry an access time and a pinned flag; cache_evict
 * keeps the store within a size bound by least-recently-used eviction of
 * what is not pinned.
 *
 * States of a blob. cache_blob_begin creates a PARTIAL record; chunks are then
 * appended in order, each in its own write transaction so a large blob never
 * needs a large transaction or memory. A PARTIAL blob is never returned by
 * cache_blob_stat as servable: it becomes COMPLETE only through
 * cache_blob_complete, which the caller invokes after it has verified the
 * digest of exactly the appended bytes. A crash leaves at most a PARTIAL
 * record and its chunks, which cache_blob_partial reports (so a rerun can
 * resume) and cache_blob_delete removes. LMDB's copy-on-write commits make
 * every state change atomic: a kill -9 at any point leaves the store
 * consistent.
 *
 * Readers and writers. LMDB allows one writer and any number of readers that
 * never block each other. All write functions (cache_*_put, cache_blob_*
 * writes, cache_touch) run a write transaction and may block on the LMDB
 * writer lock and on fsync: call them from a writer thread, never from an
 * event loop. Readers use a snapshot (a read transaction, MDB_NOTLS, so it is
 * not tied to a thread). Pointers returned through a snapshot point into
 * LMDB's read-only map and stay valid until the snapshot's last reference is
 * dropped; they must not be written through.
 *
 * Zero-copy. Every value lives contiguously in the data file, so a chunk can
 * also be sent with sendfile(2) from cache_data_fd() at the returned file
 * offset, without the bytes passing through user space, while the snapshot
 * is held.
 *
 * Errors: functions return CACHE_OK (0) or a negative cache_status; where an
 * err buffer is given, a human-readable reason is written to it.
 */
#ifndef SLUICE_CACHE_H
#define SLUICE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#define CACHE_DIGEST_LEN 32
#define CACHE_CHUNK_SIZE (1u << 20)

typedef enum {
    CACHE_OK = 0,
    CACHE_NOTFOUND = -1,
    CACHE_CORRUPT = -2, /* stored bytes do not match their digest or record */
    CACHE_FULL = -3,    /* map full even after growing it */
    CACHE_INVALID = -4, /* bad argument (e.g. chunk out of order) */
    CACHE_IO = -5,      /* any other LMDB or system error */
} cache_status;

typedef struct cache cache;
typedef struct cache_snapshot cache_snapshot;

typedef struct {
    uint64_t map_size;    /* initial LMDB map size in bytes; 0 = 1 GiB. It grows
                             (doubling) when a write finds it full. */
    unsigned max_readers; /* 0 = 4096 */
    int no_sync;          /* nonzero: MDB_NOSYNC (tests only; loses durability) */
} cache_options;

/* Opens (creating if needed) the store in directory dir, creating the
 * directory and its missing parents. */
cache_status cache_open(cache **out, const char *dir, const cache_options *opts, char *err,
                        size_t errlen);
/* Closes the store. Every snapshot must have been released. */
void cache_close(cache *c);

/* ---- snapshots (readers) ---- */

/* A new snapshot with one reference, or NULL on failure (e.g. readers full). */
cache_snapshot *cache_snapshot_new(cache *c);
void cache_snapshot_ref(cache_snapshot *s);
/* Drops a reference; the read transaction ends with the last one. Thread-safe. */
void cache_snapshot_unref(cache_snapshot *s);
/* For a reader that keeps one snapshot per thread in *slot: returns *slot if it
 * still sees the latest committed write, else replaces it with a fresh one
 * (dropping the slot's reference to the old one, which lives on while others
 * hold it). The returned snapshot is owned by the slot: ref it to keep it past
 * the next call. NULL on failure. */
cache_snapshot *cache_snapshot_current(cache *c, cache_snapshot **slot);

/* ---- blobs ---- */

typedef enum { CACHE_BLOB_PARTIAL = 1, CACHE_BLOB_COMPLETE = 2 } cache_blob_state;

typedef struct {
    cache_blob_state state;
    uint64_t size;     /* COMPLETE: total size; PARTIAL: bytes appended so far */
    uint32_t chunks;   /* chunks stored */
    uint64_t created;  /* unix seconds */
    uint64_t accessed; /* unix seconds, as last recorded by cache_touch */
} cache_blob_info;

/* CACHE_OK and *info for a blob in either state; CACHE_NOTFOUND otherwise. */
cache_status cache_blob_stat(cache_snapshot *s, const uint8_t digest[CACHE_DIGEST_LEN],
                             cache_blob_info *info);

/* Chunk `index` of a blob (either state): pointer into the map, its length,
 * and its byte offset within cache_data_fd(). */
cache_status cache_blob_chunk(cache_snapshot *s, const uint8_t digest[CACHE_DIGEST_LEN],
                              uint32_t index, const void **data, size_t *len,
                              uint64_t *file_offset);

/* The data file's descriptor, for sendfile at offsets from cache_blob_chunk. */
int cache_data_fd(cache *c);

/* Starts (or, if a PARTIAL record exists, keeps) a PARTIAL blob. A COMPLETE
 * blob is left as it is and CACHE_OK is returned with *already_complete = 1. */
cache_status cache_blob_begin(cache *c, const uint8_t digest[CACHE_DIGEST_LEN],
                              int *already_complete);
/* Appends chunk `index` (must equal the current chunk count; every chunk but
 * the last must be exactly CACHE_CHUNK_SIZE bytes). */
cache_status cache_blob_append(cache *c, const uint8_t digest[CACHE_DIGEST_LEN], uint32_t index,
                               const void *data, size_t len);
/* Appends len bytes as chunks index, index + 1, ... in one write
 * transaction (one commit, one fsync, instead of one per chunk): the same
 * rules as calling cache_blob_append for each CACHE_CHUNK_SIZE piece, the
 * last piece possibly shorter (and then the last of the blob). All or none
 * are appended. len is at most CACHE_APPEND_MAX. For bulk writers such as
 * `sluice seed`. */
#define CACHE_APPEND_MAX (16u * CACHE_CHUNK_SIZE)
cache_status cache_blob_append_chunks(cache *c, const uint8_t digest[CACHE_DIGEST_LEN],
                                      uint32_t index, const void *data, size_t len);
/* Marks a PARTIAL blob COMPLETE; the caller has verified that the appended
 * bytes hash to digest. size must equal the bytes appended. */
cache_status cache_blob_complete(cache *c, const uint8_t digest[CACHE_DIGEST_LEN], uint64_t size);
/* Removes a blob (either state) and all its chunks. CACHE_NOTFOUND if absent. */
cache_status cache_blob_delete(cache *c, const uint8_t digest[CACHE_DIGEST_LEN]);
/* Removes a PARTIAL blob and its chunks (a failed or restarted write); a
 * COMPLETE blob under the digest — another writer (a seed, another
 * transfer) finished it meanwhile — is left alone, CACHE_OK either way.
 * CACHE_NOTFOUND if absent. */
cache_status cache_blob_abort(cache *c, const uint8_t digest[CACHE_DIGEST_LEN]);
/* Re-reads a COMPLETE blob and checks its SHA-256 (CPU and I/O heavy: not on
 * an event loop). CACHE_CORRUPT if it does not match. */
cache_status cache_blob_verify(cache *c, const uint8_t digest[CACHE_DIGEST_LEN]);

/* ---- manifests ---- */

/* Stores a manifest (caller verified that body hashes to digest). Replacing
 * an identical record is a no-op. */
cache_status cache_manifest_put(cache *c, const uint8_t digest[CACHE_DIGEST_LEN],
                                const char *media_type, const void *body, size_t len);
/* media_type is NUL-terminated; both pointers live as long as the snapshot. */
cache_status cache_manifest_get(cache_snapshot *s, const uint8_t digest[CACHE_DIGEST_LEN],
                                const char **media_type, const void **body, size_t *len);
cache_status cache_manifest_delete(cache *c, const uint8_t digest[CACHE_DIGEST_LEN]);

/* ---- tags ---- */

cache_status cache_tag_put(cache *c, const char *repo, const char *tag,
                           const uint8_t digest[CACHE_DIGEST_LEN], uint64_t confirmed_at);
cache_status cache_tag_get(cache_snapshot *s, const char *repo, const char *tag,
                           uint8_t digest[CACHE_DIGEST_LEN], uint64_t *confirmed_at);
/* Calls fn for each tag of repo in byte order, starting after `last` (NULL =
 * from the first), at most n tags (0 = no limit). fn returning nonzero stops
 * the walk. Returns the number of tags passed to fn, or a negative status. */
typedef int (*cache_tag_fn)(void *arg, const char *tag, size_t taglen);
int cache_tag_list(cache_snapshot *s, const char *repo, const char *last, size_t n, cache_tag_fn fn,
                   void *arg);

/* ---- referrers ---- */

/* Records that `referrer` (a manifest) has subject `subject`; descriptor_json
 * is the referrer's OCI descriptor as the referrers API lists it. */
cache_status cache_referrer_put(cache *c, const uint8_t subject[CACHE_DIGEST_LEN],
                                const uint8_t referrer[CACHE_DIGEST_LEN],
                                const char *descriptor_json, size_t len);
typedef int (*cache_referrer_fn)(void *arg, const uint8_t referrer[CACHE_DIGEST_LEN],
                                 const char *descriptor_json, size_t len);
int cache_referrer_list(cache_snapshot *s, const uint8_t subject[CACHE_DIGEST_LEN],
                        cache_referrer_fn fn, void *arg);

/* ---- references: which manifests of a repository use a blob ---- */

/* Records that manifest `manifest` in repository `repo` (the same key as
 * tags use: "registry/repository") references `digest` (a layer, a config,
 * or a child manifest of an index). Idempotent. */
cache_status cache_ref_put(cache *c, const char *repo, const uint8_t digest[CACHE_DIGEST_LEN],
                           const uint8_t manifest[CACHE_DIGEST_LEN]);
/* Calls fn for each manifest of repo that references digest, in digest
 * order; fn returning nonzero stops. Returns the number of calls, or a
 * negative status. */
typedef int (*cache_ref_fn)(void *arg, const uint8_t manifest[CACHE_DIGEST_LEN]);
int cache_ref_list(cache_snapshot *s, const char *repo, const uint8_t digest[CACHE_DIGEST_LEN],
                   cache_ref_fn fn, void *arg);

/* ---- deltas ---- */

/* A delta is stored as a COMPLETE blob under its own SHA-256 (`delta`), and
 * indexed by (base, target, codec). codec is a short name ("zstd", "vcdiff",
 * "bsz"; at most 15 bytes). Evicted before full blobs. */
cache_status cache_delta_put(cache *c, const uint8_t base[CACHE_DIGEST_LEN],
                             const uint8_t target[CACHE_DIGEST_LEN], const char *codec,
                             const uint8_t delta[CACHE_DIGEST_LEN], uint64_t size);
/* CACHE_NOTFOUND when no delta is indexed for (base, target, codec). size may be NULL. */
cache_status cache_delta_get(cache_snapshot *s, const uint8_t base[CACHE_DIGEST_LEN],
                             const uint8_t target[CACHE_DIGEST_LEN], const char *codec,
                             uint8_t delta[CACHE_DIGEST_LEN], uint64_t *size);
/* Calls fn for each codec indexed for (base, target), in codec-name byte
 * order; fn returning nonzero stops. Returns the number of calls, or a
 * negative status. */
typedef int (*cache_delta_fn)(void *arg, const char *codec, const uint8_t delta[CACHE_DIGEST_LEN],
                              uint64_t size);
int cache_delta_list(cache_snapshot *s, const uint8_t base[CACHE_DIGEST_LEN],
                     const uint8_t target[CACHE_DIGEST_LEN], cache_delta_fn fn, void *arg);

/* ---- verdicts ---- */

/* A trust decision about a manifest (or a blob on its own), as the proxy
 * made it under one trust policy. The key says everything the decision
 * depended on: `policy` is a hash the caller computes over its policy and
 * every bit of trust material and setting it uses (a changed policy is a
 * new hash, so its verdicts are simply not found); `repo` is the repository
 * key as tags use it ("" for a decision about a blob that is not tied to a
 * repository); `tag` is the tag the manifest was asked by ("" when asked by
 * digest); `digest` the manifest's (or blob's) digest — so a tag that moves
 * to another manifest never finds the old manifest's verdict. Keys that do
 * not fit LMDB's key size are refused with CACHE_INVALID (the caller keeps
 * such a verdict in memory only). Verdicts take no part in eviction or
 * cache_stat. */
#define CACHE_VERDICT_TEXT_MAX 1024

typedef struct {
    int allowed;                         /* 1 allowed, 0 denied */
    uint64_t decided_at;                 /* unix seconds */
    char reason[CACHE_VERDICT_TEXT_MAX]; /* NUL-terminated; longer text is cut */
} cache_verdict;

/* Stores (or replaces) a verdict. */
cache_status cache_verdict_put(cache *c, const uint8_t policy[CACHE_DIGEST_LEN], const char *repo,
                               const char *tag, const uint8_t digest[CACHE_DIGEST_LEN],
                               const cache_verdict *v);
/* CACHE_NOTFOUND when no verdict is stored under exactly this key. */
cache_status cache_verdict_get(cache_snapshot *s, const uint8_t policy[CACHE_DIGEST_LEN],
                               const char *repo, const char *tag,
                               const uint8_t digest[CACHE_DIGEST_LEN], cache_verdict *out);
/* Deletes every verdict stored under a policy hash other than `keep` (the
 * verdicts of former policies), in bounded write transactions. removed (may
 * be NULL) receives how many went. */
cache_status cache_verdict_prune(cache *c, const uint8_t keep[CACHE_DIGEST_LEN], uint64_t *removed);

/* ---- pins and eviction ---- */

/* Pins (or unpins) a blob or manifest: a pinned object is never evicted.
 * Seeded content is pinned. A blob and a manifest under the same digest are
 * both changed. The pin survives cache_manifest_put replacing the record;
 * deleting the object drops it. CACHE_NOTFOUND if neither exists. */
cache_status cache_pin(cache *c, const uint8_t digest[CACHE_DIGEST_LEN], int pinned);

typedef struct {
    uint64_t evicted_objects;
    uint64_t evicted_bytes;
    uint64_t size_after; /* bytes of blobs, deltas and manifests left */
} cache_evict_result;

/* Evicts least-recently-used unpinned objects until what is stored
 * (cache_stats blob_bytes + manifest_bytes: COMPLETE blobs, delta blobs
 * included, and manifest bodies) is at most max_bytes: deltas first (index
 * entry and delta blob), then blobs and manifests by access time.
 * Never a PARTIAL blob (a transfer in progress), never a pinned object,
 * never a blob or manifest referenced by a pinned manifest; tags whose
 * manifest is evicted go too. Readers holding snapshots keep seeing what
 * they saw (LMDB's MVCC), so an object being served is never cut short.
 * Runs in bounded write transactions (a few hundred deletions each), never
 * one huge one; an object accessed or pinned since the candidates were
 * collected is skipped. CACHE_OK also when only pinned or PARTIAL content is
 * left above the bound: out->size_after says what remains. Walks the store
 * (memory: about 56 bytes per unpinned object): run it off any event loop. */
cache_status cache_evict(cache *c, uint64_t max_bytes, cache_evict_result *out);

/* ---- persistent counters (for `sluice stat`) ---- */

typedef struct {
    uint64_t hits, misses;       /* requests answered from cache / needing upstream */
    uint64_t bytes_served;       /* body bytes sent to clients */
    uint64_t bytes_upstream;     /* body bytes received from upstreams */
    uint64_t bytes_saved_deltas; /* full size minus delta size, summed over deltas served */
} cache_counters;

/* Adds each field of delta to the stored counters (one small write). */
cache_status cache_counters_add(cache *c, const cache_counters *delta);
cache_status cache_counters_get(cache *c, cache_counters *out);

/* ---- access times and statistics ---- */

/* Records an access time for a blob or manifest (one small write). */
cache_status cache_touch(cache *c, const uint8_t digest[CACHE_DIGEST_LEN], uint64_t when);

typedef struct {
    uint64_t map_size;   /* current LMDB map size */
    uint64_t used_bytes; /* pages in use * page size */
    uint64_t blobs;      /* COMPLETE blobs (delta blobs included) */
    uint64_t blob_bytes; /* their total size */
    uint64_t partial_blobs;
    uint64_t manifests;
    uint64_t tags;
    uint64_t pinned_bytes;   /* COMPLETE blobs and manifest bodies that are pinned */
    uint64_t deltas;         /* delta index entries */
    uint64_t delta_bytes;    /* sum of their sizes (their blobs are in blob_bytes) */
    uint64_t manifest_bytes; /* manifest bodies */
} cache_stats;

/* O(1) (running totals kept in every write transaction): cheap enough for
 * an event loop's /metrics. What max_size bounds is blob_bytes +
 * manifest_bytes. */
cache_status cache_stat(cache *c, cache_stats *out);

/* ---- checking every stored digest ---- */

typedef struct {
    uint64_t blobs, manifests; /* checked */
    uint64_t bad;              /* of which did not match their digest or could not be read */
} cache_check_result;
typedef void (*cache_check_fn)(void *arg, const uint8_t digest[CACHE_DIGEST_LEN], int is_manifest,
                               cache_status st);

/* Re-hashes every COMPLETE blob and every manifest and reports each one that
 * does not match its digest through fn (may be NULL), with the status
 * (CACHE_CORRUPT, ...). Deletes nothing. CPU and I/O heavy: not on an event
 * loop. Objects deleted meanwhile are skipped. */
cache_status cache_check(cache *c, cache_check_fn fn, void *arg, cache_check_result *out);

/* Calls fn for each PARTIAL blob (for resuming or cleaning up after a crash). */
typedef int (*cache_partial_fn)(void *arg, const uint8_t digest[CACHE_DIGEST_LEN],
                                const cache_blob_info *info);
int cache_blob_partial(cache *c, cache_partial_fn fn, void *arg);

/* A static string naming a status. */
const char *cache_strerror(cache_status st);

#endif
