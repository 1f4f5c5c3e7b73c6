/*
 * seed.h — the engine behind `sluice seed` (private to proxy/): importing one
 * OCI image layout, a directory or a tar archive of one, into the cache.
 *
 * Two parts:
 *   seed_input.c   where bytes come from. A directory is read file by file;
 *                  a tar archive (plain, gzip, zstd, ... via libarchive) is
 *                  streamed once, and since an OCI-layout tar may list blobs
 *                  before index.json, every blob entry is verified and
 *                  stored as it streams (content addressing makes that safe
 *                  before the index is known); index.json and oci-layout are
 *                  kept in memory for the second part.
 *   seed_layout.c  what the layout means: index.json entries, their
 *                  repositories and tags, the closure of every entry
 *                  (manifests, indexes, configs, layers), trust policy
 *                  evaluation with the cosign signatures and Sigstore
 *                  bundles found in the layout, and the commit of each
 *                  accepted entry into the cache (blobs, manifests, refs,
 *                  referrers, pins, and the tag last).
 *
 * Objects are per entry, all or nothing: an entry (a tag, or an untagged
 * manifest of index.json) is made servable only once every object of its
 * closure is present and verified and the trust policy allows it. Anything
 * wrong with one object is reported, naming the input, the object's path in
 * the layout and what it is, and makes the entries that need it refused; the
 * other entries of the same input are still imported. Blobs this run
 * stored that no imported entry uses (a refused entry's good layers, tar
 * entries nothing references) are removed again at the end; a kill before
 * that leaves them unpinned, hence evictable.
 */
#ifndef SLUICE_SEED_H
#define SLUICE_SEED_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "cmd_common.h"
#include "config.h"
#include "verify.h"

#define SEED_MANIFEST_MAX (4u << 20) /* as the daemon's manifest limit */
#define SEED_INDEX_MAX (16u << 20)   /* index.json */
#define SEED_SMALL_MAX (4u << 20)    /* signature payloads and bundles */
#define SEED_DELTAS_ANNOTATION "dev.sluice.deltas.v1"
/* Bytes appended per write transaction (a whole number of chunks): one
 * commit and fsync per 8 MiB instead of per chunk. */
#define SEED_BATCH (8u * CACHE_CHUNK_SIZE)

/* What is known about one digest during one input. */
enum {
    SB_SEEN = 1,   /* tar: an entry with its bytes was read */
    SB_NEW = 2,    /* this run stored it (it was not in the cache before) */
    SB_BAD = 4,    /* its bytes are wrong or unreadable (already reported) */
    SB_READY = 8,  /* COMPLETE in the cache, size checked */
    SB_KEEP = 16,  /* part of an imported entry */
    SB_PINNED = 32 /* pinned by this run */
};

typedef struct {
    uint8_t digest[32];
    uint64_t size;
    uint8_t flags;
    uint8_t used; /* slot in use */
} seed_blob;

typedef struct {
    seed_blob *slots;
    size_t cap, n;
} seed_set;

/* The record for digest, created (zeroed) when `create`; NULL if absent. */
seed_blob *seed_set_get(seed_set *s, const uint8_t digest[32], int create);
void seed_set_free(seed_set *s);

typedef struct seed_ctx {
    /* set by the caller */
    cache *c;
    const config *cfg;
    const verify_policy *policy; /* NULL: accept anything */
    const char *repo_key;        /* --repo as a key "host/repo", or NULL */
    int pin;
    const char *input; /* the path as given */
    /* the input */
    int is_dir;
    int blobs_fd; /* directory: DIR/blobs/sha256, or -1 */
    char *index_json;
    size_t index_len;
    int have_layout_file;
    seed_set blobs;
    cli_progress progress;
    uint64_t progress_base;   /* bytes of blobs finished (directory input) */
    struct seed_appender *ap; /* the committer thread and its two SEED_BATCH buffers */
    verify_hasher *hasher;
    /* results */
    unsigned errors;      /* problems reported */
    unsigned images;      /* entries imported (tags and untagged manifests) */
    unsigned attachments; /* signatures and referrers imported */
    unsigned denied;      /* refused by the trust policy */
    unsigned refused;     /* refused because an object is missing or bad */
    unsigned deltas;      /* delta index entries imported */
    uint64_t blobs_new, bytes_new, blobs_cached;
} seed_ctx;

/* Prints "sluice seed: INPUT: message" (erasing the progress bar first) and
 * counts an error. */
void seed_error(seed_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, without counting (notes about skipped content). */
void seed_note(seed_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "blobs/sha256/<hex>": where a digest lives in a layout. */
void seed_blob_path(const uint8_t digest[32], char out[96]);

/* seed_input.c. Both return 0, or -1 when the input cannot be used at all
 * (reported). seed_open_dir reads oci-layout and index.json; seed_stream_tar
 * also stores every verified blob entry. */
int seed_open_dir(seed_ctx *x);
int seed_stream_tar(seed_ctx *x);
/* Makes blob digest (size bytes) COMPLETE in the cache: streamed from the
 * directory with its digest verified, or found stored by the tar stream or
 * already cached. `what` describes it for messages. 0, or -1 (reported). */
int seed_store_blob(seed_ctx *x, const uint8_t digest[32], uint64_t size, const char *what);
/* Reads a small object (a manifest, a signature payload) whose bytes hash to
 * digest into a malloc'd buffer, from the input or the cache. 0, or -1
 * (reported, unless quiet and the object is simply absent). */
int seed_read_small(seed_ctx *x, const uint8_t digest[32], size_t max, uint8_t **buf, size_t *len,
                    const char *what);
/* Deletes the blobs this run stored that no imported entry uses (those of
 * refused or denied entries, and tar entries nothing references). */
void seed_drop_unused(seed_ctx *x);

/* seed_layout.c: everything after the input is open (see above). */
void seed_import(seed_ctx *x);

#endif
