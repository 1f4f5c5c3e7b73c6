/*
 * transfer.h — one upstream fetch shared by every request that wants it.
 *
 * A transfer is created by the first request that misses the cache (keyed by
 * blob digest, or by upstream/repository/reference for manifests) and joined
 * by every concurrent request for the same thing, so N concurrent misses cost
 * one upstream transfer (invariant 5). Its bytes flow:
 *
 *   upstream thread --on_data--> in-memory chunk buffers --writer thread-->
 *   LMDB (PARTIAL blob, hashed as written) --digest ok--> COMPLETE
 *
 * Waiters (HTTP responses on any worker thread) stream from the chunk buffers
 * while they are in memory, and from LMDB once a chunk is written and its
 * buffer dropped, so memory stays bounded by a few chunks per transfer no
 * matter how large the blob or how slow the clients (invariant 7). The upstream
 * is paused when the writer falls behind. A waiter never sends the last byte of
 * its range before the writer has verified the whole digest (invariant 1), and
 * the blob becomes servable from the cache only then.
 *
 * Threads: all fields below `mu` are guarded by it. Producers wake waiters
 * with event_active on each waiter's wake event; waiters do all their HTTP
 * work on their own loop.
 */
#ifndef SLUICE_TRANSFER_H
#define SLUICE_TRANSFER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "cache.h"
#include "daemon.h"
#include "oci.h"
#include "upstream.h"

#define TRANSFER_MAX_MANIFEST (4u << 20) /* distribution's own manifest limit */
#define TRANSFER_MEM_CHUNKS 4            /* chunk buffers before the upstream pauses */

typedef enum { TRANSFER_BLOB, TRANSFER_MANIFEST } transfer_kind;

typedef enum {
    T_PENDING,   /* waiting for the upstream's response headers */
    T_STREAMING, /* headers known, body arriving (blobs) */
    T_DONE,      /* verified (and, for blobs, COMPLETE in the cache) */
    T_FAILED,
} transfer_state;

/* How a manifest transfer ended well. */
typedef enum {
    M_FETCHED,   /* body fetched, verified, in `body` */
    M_UNCHANGED, /* tag revalidated by HEAD: `digest` as cached */
    M_STALE,     /* upstream failed; `digest` is the last known one (serve with Warning) */
} manifest_outcome;

typedef struct chunk_buf {
    atomic_int refs;
    uint32_t index;
    size_t len; /* bytes filled; [0, len) never changes once written */
    char data[];
} chunk_buf;

typedef struct transfer_waiter {
    struct transfer_waiter *next;
    struct event *wake;
} transfer_waiter;

typedef struct transfer {
    atomic_int refs;
    transfer_kind kind;
    char key[600];
    daemon_ctx *d;
    const config_upstream *up;
    char repo_key[600]; /* "<registry host>/<repository>" for tags */
    char repo[OCI_NAME_MAX + 1];
    char reference[OCI_TAG_MAX + 72];
    int by_digest;
    uint8_t digest[32];     /* blob digest; manifest digest once known */
    int have_cached_digest; /* manifest by tag: a digest known from the cache */
    uint8_t cached_digest[32];
    uint64_t upstream_id;

    pthread_mutex_t mu;
    transfer_state state;
    upstream_result error; /* when FAILED */
    const char *error_msg; /* static text when FAILED */
    uint64_t total;        /* body length, UINT64_MAX until known */
    uint64_t received;
    /* blobs */
    chunk_buf *mem[TRANSFER_MEM_CHUNKS + 2];
    uint32_t mem_first; /* chunk index of mem[0] */
    uint32_t mem_count;
    uint32_t committed; /* chunks written to LMDB */
    int paused;
    /* manifests */
    manifest_outcome outcome;
    char *body;
    size_t body_len;
    char media_type[128];
    transfer_waiter *waiters;
    void *hasher;         /* writer-thread state (verify_hasher*) */
    cache_snapshot *keep; /* taken when the blob became COMPLETE: its waiters can
                             still read it if eviction removes it meanwhile */
    /* child mode: the target asked of a parent Sluice as a delta */
    int delta_mode; /* the parent answered 226: delta_buf holds the delta */
    int delta_bad;  /* too large or cut: fall back to the full blob */
    uint8_t delta_base[32];
    char *delta_buf;
    size_t delta_len;
    int write_failed;
} transfer;

typedef struct {
    transfer_kind kind;
    const config_upstream *up;
    const char *repo;      /* repository at the upstream */
    const char *reference; /* tag or digest text */
    int by_digest;
    const uint8_t *digest;        /* when by_digest */
    const uint8_t *cached_digest; /* manifest by tag: last known digest, or NULL */
} transfer_spec;

transfer_table *transfer_table_new(void);
void transfer_table_free(transfer_table *tt);

/* Finds the transfer for spec or starts one; returns it with a reference
 * (drop with transfer_unref). *joined is 1 if it already existed. */
transfer *transfer_get(daemon_ctx *d, const transfer_spec *spec, int *joined);
void transfer_unref(transfer *t);

/* Registers / removes a wake event (activated on progress; under t->mu). */
void transfer_add_waiter(transfer *t, transfer_waiter *w);
void transfer_remove_waiter(transfer *t, transfer_waiter *w);

/* Blob bytes at `offset` that are in memory: returns the chunk (with a new
 * reference) and sets *off and *len within it; NULL if that chunk is no longer
 * in memory (it is in LMDB) or not yet received. Under t->mu. */
chunk_buf *transfer_mem_chunk(transfer *t, uint64_t offset, size_t *off, size_t *len);
void chunk_unref(chunk_buf *c);

/* Stores a verified manifest with its tag (NULL: none), the refs to what
 * it references and, when it has a subject, its referrer descriptor. On a
 * thread that may write to the cache (not an event loop). */
cache_status transfer_store_manifest(cache *c, const char *repo_key, const char *tag,
                                     const uint8_t digest[32], const char *media_type,
                                     const void *body, size_t len);

/* Evicts least-recently-used unpinned content down to [cache] max_size (if
 * set), after a write that grew the cache. Not on an event loop. */
void transfer_enforce_quota(cache *c, const daemon_ctx *d);

/* The referrer descriptor (JSON text, malloc'd) of manifest `digest` when
 * root (its parsed body) has a `subject`, whose digest goes to subject;
 * NULL when it has none. Shared by the daemon and `sluice seed`. */
struct json_t;
char *transfer_referrer_descriptor(struct json_t *root, const uint8_t digest[32],
                                   const char *media_type, size_t len, uint8_t subject[32]);

/* The key under which tags of spec's repository are cached. */
void transfer_repo_key(const config_upstream *up, const char *repo, char *out, size_t outlen);

#endif
