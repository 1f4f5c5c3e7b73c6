/*
 * test_cache.c — unit tests for cache/cache.c: blobs (chunked writes, reads
 * through the map and the data fd, partial blobs, delete, verify), manifests,
 * tags, referrers, snapshots and MVCC, map growth, statistics, persistence,
 * references, deltas, pins, counters, LRU eviction, running totals (and
 * their rebuild for a store from before they existed), the full check and
 * trust verdicts (keys, limits, pruning of former policies' verdicts).
 * Each test runs on a fresh store in a mkdtemp directory that teardown removes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <stdbool.h>

#include "cache.h"

typedef struct {
    char dir[64];
    cache *c;
} fixture;

static cache *open_store(const char *dir, uint64_t map_size)
{
    cache_options o = {.map_size = map_size, .no_sync = 1};
    char err[256] = "";
    cache *c = NULL;
    cache_status st = cache_open(&c, dir, &o, err, sizeof err);
    if (st != CACHE_OK)
        fail_msg("cache_open(%s): %s (%s)", dir, cache_strerror(st), err);
    assert_non_null(c);
    return c;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sluice-cache-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->c = open_store(f->dir, 0);
    *state = f;
    return 0;
}

static void remove_store(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

static int teardown(void **state)
{
    fixture *f = *state;
    cache_close(f->c);
    remove_store(f->dir);
    free(f);
    return 0;
}

static void reopen(fixture *f, uint64_t map_size)
{
    cache_close(f->c);
    f->c = open_store(f->dir, map_size);
}

/* ---- helpers ---- */

static uint8_t *make_bytes(size_t n, uint32_t seed)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)(x >> 7);
    }
    return p;
}

static void sha256(const void *p, size_t n, uint8_t out[CACHE_DIGEST_LEN])
{
    assert_int_equal(EVP_Digest(p, n, out, NULL, EVP_sha256(), NULL), 1);
}

static void digest_of_label(const char *label, uint8_t out[CACHE_DIGEST_LEN])
{
    sha256(label, strlen(label), out);
}

/* Appends data as chunks 0.. of digest (a begun blob). */
static void append_all(cache *c, const uint8_t *digest, const uint8_t *data, size_t n)
{
    uint32_t idx = 0;
    for (size_t off = 0; off < n; off += CACHE_CHUNK_SIZE, idx++) {
        size_t len = n - off < CACHE_CHUNK_SIZE ? n - off : CACHE_CHUNK_SIZE;
        cache_status st = cache_blob_append(c, digest, idx, data + off, len);
        if (st != CACHE_OK)
            fail_msg("append chunk %u: %s", idx, cache_strerror(st));
    }
}

static void store_blob(cache *c, const uint8_t *data, size_t n, uint8_t digest[CACHE_DIGEST_LEN])
{
    int done = -1;
    sha256(data, n, digest);
    assert_int_equal(cache_blob_begin(c, digest, &done), CACHE_OK);
    assert_int_equal(done, 0);
    append_all(c, digest, data, n);
    assert_int_equal(cache_blob_complete(c, digest, n), CACHE_OK);
}

/* Reads the whole blob back through the map and through the data fd. */
static void check_blob(cache *c, const uint8_t *digest, const uint8_t *data, size_t n)
{
    cache_snapshot *s = cache_snapshot_new(c);
    assert_non_null(s);
    cache_blob_info info;
    assert_int_equal(cache_blob_stat(s, digest, &info), CACHE_OK);
    assert_int_equal(info.state, CACHE_BLOB_COMPLETE);
    assert_int_equal(info.size, n);
    assert_int_equal(info.chunks, (n + CACHE_CHUNK_SIZE - 1) / CACHE_CHUNK_SIZE);
    uint8_t *buf = malloc(CACHE_CHUNK_SIZE);
    assert_non_null(buf);
    size_t off = 0;
    for (uint32_t i = 0; i < info.chunks; i++) {
        const void *p;
        size_t len;
        uint64_t foff;
        assert_int_equal(cache_blob_chunk(s, digest, i, &p, &len, &foff), CACHE_OK);
        assert_true(off + len <= n);
        assert_memory_equal(p, data + off, len);
        assert_int_equal(pread(cache_data_fd(c), buf, len, (off_t)foff), (ssize_t)len);
        assert_memory_equal(buf, data + off, len);
        off += len;
    }
    assert_int_equal(off, n);
    const void *p;
    size_t len;
    assert_int_equal(cache_blob_chunk(s, digest, info.chunks, &p, &len, NULL), CACHE_NOTFOUND);
    free(buf);
    cache_snapshot_unref(s);
}

/* ---- tests ---- */

static void test_open_close(void **state)
{
    fixture *f = *state;
    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.blobs, 0);
    assert_int_equal(st.manifests, 0);
    assert_int_equal(st.tags, 0);
    assert_int_equal(st.map_size, 1ull << 30);
    assert_true(cache_data_fd(f->c) >= 0);
    /* A directory that cannot be made (its parent is a file) is an error with a
     * reason; missing parents are created. */
    cache *c = NULL;
    char err[256] = "", path[4096];
    snprintf(path, sizeof path, "%s/data.mdb/x", f->dir);
    assert_int_equal(cache_open(&c, path, NULL, err, sizeof err), CACHE_IO);
    assert_null(c);
    assert_true(strlen(err) > 0);
    snprintf(path, sizeof path, "%s/nested/deeper", f->dir);
    assert_int_equal(cache_open(&c, path, NULL, err, sizeof err), CACHE_OK);
    cache_close(c);
    c = NULL;
    remove_store(path);
    snprintf(path, sizeof path, "%s/nested", f->dir);
    rmdir(path);
    assert_int_equal(cache_open(NULL, f->dir, NULL, NULL, 0), CACHE_INVALID);
}

static void test_blob_multi_chunk(void **state)
{
    fixture *f = *state;
    const size_t n = 5 * CACHE_CHUNK_SIZE / 2; /* 2.5 MiB: three chunks */
    uint8_t *data = make_bytes(n, 1);
    uint8_t d[CACHE_DIGEST_LEN];
    sha256(data, n, d);
    int done = -1;
    assert_int_equal(cache_blob_begin(f->c, d, &done), CACHE_OK);
    assert_int_equal(done, 0);
    append_all(f->c, d, data, n);

    cache_snapshot *s = cache_snapshot_new(f->c);
    assert_non_null(s);
    cache_blob_info info;
    assert_int_equal(cache_blob_stat(s, d, &info), CACHE_OK);
    assert_int_equal(info.state, CACHE_BLOB_PARTIAL);
    assert_int_equal(info.size, n);
    assert_int_equal(info.chunks, 3);
    assert_true(info.created > 0);
    cache_snapshot_unref(s);

    assert_int_equal(cache_blob_complete(f->c, d, n), CACHE_OK);
    check_blob(f->c, d, data, n);
    /* begin on a complete blob leaves it alone */
    assert_int_equal(cache_blob_begin(f->c, d, &done), CACHE_OK);
    assert_int_equal(done, 1);
    check_blob(f->c, d, data, n);
    assert_int_equal(cache_blob_verify(f->c, d), CACHE_OK);
    free(data);
}

static void test_small_and_empty_blobs(void **state)
{
    fixture *f = *state;
    uint8_t d[CACHE_DIGEST_LEN], e[CACHE_DIGEST_LEN], x[CACHE_DIGEST_LEN];
    store_blob(f->c, (const uint8_t *)"hello", 5, d);
    check_blob(f->c, d, (const uint8_t *)"hello", 5);
    assert_int_equal(cache_blob_verify(f->c, d), CACHE_OK);
    uint8_t *exact = make_bytes(CACHE_CHUNK_SIZE, 9); /* exactly one full chunk */
    store_blob(f->c, exact, CACHE_CHUNK_SIZE, x);
    check_blob(f->c, x, exact, CACHE_CHUNK_SIZE);
    assert_int_equal(cache_blob_verify(f->c, x), CACHE_OK);
    free(exact);
    store_blob(f->c, (const uint8_t *)"", 0, e); /* sha256 of nothing: no chunks */
    check_blob(f->c, e, (const uint8_t *)"", 0);
    assert_int_equal(cache_blob_verify(f->c, e), CACHE_OK);
}

static void test_append_rules(void **state)
{
    fixture *f = *state;
    uint8_t d[CACHE_DIGEST_LEN], other[CACHE_DIGEST_LEN];
    digest_of_label("rules", d);
    digest_of_label("never begun", other);
    uint8_t *chunk = make_bytes(CACHE_CHUNK_SIZE + 1, 2);
    assert_int_equal(cache_blob_append(f->c, other, 0, chunk, 10), CACHE_NOTFOUND);
    assert_int_equal(cache_blob_begin(f->c, d, NULL), CACHE_OK);
    assert_int_equal(cache_blob_append(f->c, d, 1, chunk, CACHE_CHUNK_SIZE), CACHE_INVALID);
    assert_int_equal(cache_blob_append(f->c, d, 0, chunk, 0), CACHE_INVALID);
    assert_int_equal(cache_blob_append(f->c, d, 0, chunk, CACHE_CHUNK_SIZE + 1), CACHE_INVALID);
    assert_int_equal(cache_blob_append(f->c, d, 0, chunk, CACHE_CHUNK_SIZE), CACHE_OK);
    assert_int_equal(cache_blob_append(f->c, d, 0, chunk, CACHE_CHUNK_SIZE), CACHE_INVALID);
    assert_int_equal(cache_blob_append(f->c, d, 2, chunk, CACHE_CHUNK_SIZE), CACHE_INVALID);
    assert_int_equal(cache_blob_append(f->c, d, 1, chunk, 100), CACHE_OK);
    /* after a short chunk nothing more may follow */
    assert_int_equal(cache_blob_append(f->c, d, 2, chunk, 100), CACHE_INVALID);
    assert_int_equal(cache_blob_complete(f->c, d, CACHE_CHUNK_SIZE), CACHE_INVALID);
    assert_int_equal(cache_blob_complete(f->c, other, 0), CACHE_NOTFOUND);
    assert_int_equal(cache_blob_complete(f->c, d, CACHE_CHUNK_SIZE + 100), CACHE_OK);
    assert_int_equal(cache_blob_complete(f->c, d, CACHE_CHUNK_SIZE + 100), CACHE_OK);
    assert_int_equal(cache_blob_append(f->c, d, 2, chunk, 100), CACHE_INVALID);
    /* the digest is a label here, not the hash of the bytes: verify says so */
    assert_int_equal(cache_blob_verify(f->c, d), CACHE_CORRUPT);
    free(chunk);
}

typedef struct {
    int calls;
    int stop_after;
    uint8_t digests[8][CACHE_DIGEST_LEN];
    cache_blob_info infos[8];
} partial_seen;

static int on_partial(void *arg, const uint8_t digest[CACHE_DIGEST_LEN],
                      const cache_blob_info *info)
{
    partial_seen *p = arg;
    assert_true(p->calls < 8);
    memcpy(p->digests[p->calls], digest, CACHE_DIGEST_LEN);
    p->infos[p->calls] = *info;
    p->calls++;
    return p->stop_after != 0 && p->calls >= p->stop_after;
}

static void test_partial_blobs(void **state)
{
    fixture *f = *state;
    const size_t n = CACHE_CHUNK_SIZE + 5000;
    uint8_t *data = make_bytes(n, 3);
    uint8_t d[CACHE_DIGEST_LEN], done_d[CACHE_DIGEST_LEN];
    store_blob(f->c, (const uint8_t *)"complete one", 12, done_d);
    sha256(data, n, d);
    assert_int_equal(cache_blob_begin(f->c, d, NULL), CACHE_OK);
    assert_int_equal(cache_blob_append(f->c, d, 0, data, CACHE_CHUNK_SIZE), CACHE_OK);

    partial_seen seen = {0};
    assert_int_equal(cache_blob_partial(f->c, on_partial, &seen), 1);
    assert_int_equal(seen.calls, 1);
    assert_memory_equal(seen.digests[0], d, CACHE_DIGEST_LEN);
    assert_int_equal(seen.infos[0].state, CACHE_BLOB_PARTIAL);
    assert_int_equal(seen.infos[0].size, CACHE_CHUNK_SIZE);
    assert_int_equal(seen.infos[0].chunks, 1);

    /* a crash: the partial record and its chunk survive; the blob resumes */
    reopen(f, 0);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(cache_blob_partial(f->c, on_partial, &seen), 1);
    int done = -1;
    assert_int_equal(cache_blob_begin(f->c, d, &done), CACHE_OK);
    assert_int_equal(done, 0);
    assert_int_equal(cache_blob_append(f->c, d, 1, data + CACHE_CHUNK_SIZE, 5000), CACHE_OK);
    assert_int_equal(cache_blob_complete(f->c, d, n), CACHE_OK);
    check_blob(f->c, d, data, n);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(cache_blob_partial(f->c, on_partial, &seen), 0);
    assert_int_equal(seen.calls, 0);

    /* several partials; the walk stops when fn says so */
    uint8_t p1[CACHE_DIGEST_LEN], p2[CACHE_DIGEST_LEN];
    digest_of_label("p1", p1);
    digest_of_label("p2", p2);
    assert_int_equal(cache_blob_begin(f->c, p1, NULL), CACHE_OK);
    assert_int_equal(cache_blob_begin(f->c, p2, NULL), CACHE_OK);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(cache_blob_partial(f->c, on_partial, &seen), 2);
    memset(&seen, 0, sizeof seen);
    seen.stop_after = 1;
    assert_int_equal(cache_blob_partial(f->c, on_partial, &seen), 1);
    free(data);
}

/* Deleting from inside the partial callback (no snapshot is held then). */
static int delete_partial(void *arg, const uint8_t digest[CACHE_DIGEST_LEN],
                          const cache_blob_info *info)
{
    (void)info;
    assert_int_equal(cache_blob_delete(arg, digest), CACHE_OK);
    return 0;
}

static void test_delete(void **state)
{
    fixture *f = *state;
    const size_t n = 2 * CACHE_CHUNK_SIZE + 1;
    uint8_t *a = make_bytes(n, 4), *b = make_bytes(n, 5);
    uint8_t da[CACHE_DIGEST_LEN], db[CACHE_DIGEST_LEN];
    store_blob(f->c, a, n, da);
    /* b stored under a's digest + 1: its chunk keys sort right after a's */
    memcpy(db, da, sizeof db);
    db[CACHE_DIGEST_LEN - 1]++;
    assert_int_equal(cache_blob_begin(f->c, db, NULL), CACHE_OK);
    append_all(f->c, db, b, n);
    assert_int_equal(cache_blob_complete(f->c, db, n), CACHE_OK);

    assert_int_equal(cache_blob_delete(f->c, da), CACHE_OK);
    cache_snapshot *s = cache_snapshot_new(f->c);
    assert_non_null(s);
    cache_blob_info info;
    const void *p;
    size_t len;
    assert_int_equal(cache_blob_stat(s, da, &info), CACHE_NOTFOUND);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(cache_blob_chunk(s, da, i, &p, &len, NULL), CACHE_NOTFOUND);
    assert_int_equal(cache_blob_stat(s, db, &info), CACHE_OK);
    cache_snapshot_unref(s);
    assert_int_equal(cache_blob_delete(f->c, da), CACHE_NOTFOUND);
    assert_int_equal(cache_blob_verify(f->c, da), CACHE_NOTFOUND);

    /* partial blobs are deleted with their chunks, e.g. from the crash walk */
    uint8_t dp[CACHE_DIGEST_LEN];
    digest_of_label("partial to delete", dp);
    assert_int_equal(cache_blob_begin(f->c, dp, NULL), CACHE_OK);
    assert_int_equal(cache_blob_append(f->c, dp, 0, a, CACHE_CHUNK_SIZE), CACHE_OK);
    assert_int_equal(cache_blob_verify(f->c, dp), CACHE_INVALID);
    assert_int_equal(cache_blob_partial(f->c, delete_partial, f->c), 1);
    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.partial_blobs, 0);
    assert_int_equal(st.blobs, 1);
    /* a new blob under the deleted digest starts from nothing */
    assert_int_equal(cache_blob_begin(f->c, dp, NULL), CACHE_OK);
    assert_int_equal(cache_blob_append(f->c, dp, 1, a, 10), CACHE_INVALID);
    check_blob(f->c, db, b, n);
    free(a);
    free(b);
}

static void test_verify_detects_corruption(void **state)
{
    fixture *f = *state;
    const size_t n = 5 * CACHE_CHUNK_SIZE / 2;
    uint8_t *data = make_bytes(n, 6);
    uint8_t d[CACHE_DIGEST_LEN], good[CACHE_DIGEST_LEN];
    store_blob(f->c, data, n, d);
    store_blob(f->c, (const uint8_t *)"untouched", 9, good);
    assert_int_equal(cache_blob_verify(f->c, d), CACHE_OK);

    cache_snapshot *s = cache_snapshot_new(f->c);
    assert_non_null(s);
    const void *p;
    size_t len;
    uint64_t off;
    assert_int_equal(cache_blob_chunk(s, d, 1, &p, &len, &off), CACHE_OK);
    cache_snapshot_unref(s);
    cache_close(f->c);
    f->c = NULL;

    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", f->dir);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    static const char junk[] = "these bytes were not in the blob";
    assert_int_equal(pwrite(fd, junk, sizeof junk, (off_t)(off + 12345)), (ssize_t)sizeof junk);
    close(fd);

    f->c = open_store(f->dir, 0);
    assert_int_equal(cache_blob_verify(f->c, d), CACHE_CORRUPT);
    assert_int_equal(cache_blob_verify(f->c, good), CACHE_OK);
    free(data);
}

static void test_manifests(void **state)
{
    fixture *f = *state;
    static const char mt[] = "application/vnd.oci.image.manifest.v1+json";
    static const char body[] = "{\"schemaVersion\":2}";
    uint8_t d[CACHE_DIGEST_LEN], missing[CACHE_DIGEST_LEN];
    sha256(body, strlen(body), d);
    digest_of_label("missing", missing);
    assert_int_equal(cache_manifest_put(f->c, d, mt, body, strlen(body)), CACHE_OK);

    cache_snapshot *slot = NULL;
    cache_snapshot *s = cache_snapshot_current(f->c, &slot);
    assert_non_null(s);
    const char *gmt;
    const void *gbody;
    size_t glen;
    assert_int_equal(cache_manifest_get(s, d, &gmt, &gbody, &glen), CACHE_OK);
    assert_string_equal(gmt, mt);
    assert_int_equal(glen, strlen(body));
    assert_memory_equal(gbody, body, glen);
    assert_int_equal(cache_manifest_get(s, missing, &gmt, &gbody, &glen), CACHE_NOTFOUND);

    /* an identical put commits nothing: the slot's snapshot stays current
     * (held by an extra reference so a replacement cannot reuse its address) */
    cache_snapshot_ref(s);
    assert_int_equal(cache_manifest_put(f->c, d, mt, body, strlen(body)), CACHE_OK);
    assert_ptr_equal(cache_snapshot_current(f->c, &slot), s);
    cache_snapshot_unref(s);
    /* a different record replaces it */
    static const char mt2[] = "application/vnd.docker.distribution.manifest.v2+json";
    assert_int_equal(cache_manifest_put(f->c, d, mt2, body, 5), CACHE_OK);
    s = cache_snapshot_current(f->c, &slot);
    assert_int_equal(cache_manifest_get(s, d, &gmt, &gbody, &glen), CACHE_OK);
    assert_string_equal(gmt, mt2);
    assert_int_equal(glen, 5);
    assert_memory_equal(gbody, body, 5);
    /* an empty body */
    assert_int_equal(cache_manifest_put(f->c, missing, "text/plain", NULL, 0), CACHE_OK);
    s = cache_snapshot_current(f->c, &slot);
    assert_int_equal(cache_manifest_get(s, missing, &gmt, &gbody, &glen), CACHE_OK);
    assert_int_equal(glen, 0);
    assert_string_equal(gmt, "text/plain");

    assert_int_equal(cache_manifest_delete(f->c, d), CACHE_OK);
    assert_int_equal(cache_manifest_delete(f->c, d), CACHE_NOTFOUND);
    s = cache_snapshot_current(f->c, &slot);
    assert_int_equal(cache_manifest_get(s, d, &gmt, &gbody, &glen), CACHE_NOTFOUND);
    assert_int_equal(cache_manifest_put(f->c, d, NULL, body, 3), CACHE_INVALID);
    cache_snapshot_unref(slot);
}

typedef struct {
    int calls;
    int stop_at; /* return nonzero on this call number (1-based); 0 = never */
    char tags[16][64];
} tag_seen;

static int on_tag(void *arg, const char *tag, size_t len)
{
    tag_seen *t = arg;
    assert_true(t->calls < 16);
    assert_int_equal(strlen(tag), len);
    assert_true(len < 64);
    memcpy(t->tags[t->calls], tag, len + 1);
    t->calls++;
    return t->stop_at != 0 && t->calls == t->stop_at;
}

static void expect_tags(cache_snapshot *s, const char *repo, const char *last, size_t n,
                        const char *const *want, int nwant)
{
    tag_seen t = {0};
    assert_int_equal(cache_tag_list(s, repo, last, n, on_tag, &t), nwant);
    assert_int_equal(t.calls, nwant);
    for (int i = 0; i < nwant; i++)
        assert_string_equal(t.tags[i], want[i]);
}

static void test_tags(void **state)
{
    fixture *f = *state;
    uint8_t d1[CACHE_DIGEST_LEN], d2[CACHE_DIGEST_LEN], got[CACHE_DIGEST_LEN];
    digest_of_label("m1", d1);
    digest_of_label("m2", d2);
    static const char *const tags[] = {"v2", "latest", "v10", "a", "v1", "V9"};
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++)
        assert_int_equal(cache_tag_put(f->c, "lib/app", tags[i], d1, 100 + i), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "lib/app2", "zz", d2, 1), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "lib", "b", d2, 1), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "lib/app", "latest", d2, 999), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "lib/app", "", d2, 1), CACHE_INVALID);
    assert_int_equal(cache_tag_put(f->c, "", "x", d2, 1), CACHE_INVALID);
    char longrepo[600];
    memset(longrepo, 'r', sizeof longrepo - 1);
    longrepo[sizeof longrepo - 1] = '\0';
    assert_int_equal(cache_tag_put(f->c, longrepo, "x", d2, 1), CACHE_INVALID);

    cache_snapshot *s = cache_snapshot_new(f->c);
    assert_non_null(s);
    uint64_t when = 0;
    assert_int_equal(cache_tag_get(s, "lib/app", "latest", got, &when), CACHE_OK);
    assert_memory_equal(got, d2, CACHE_DIGEST_LEN);
    assert_int_equal(when, 999);
    assert_int_equal(cache_tag_get(s, "lib/app", "v10", got, &when), CACHE_OK);
    assert_memory_equal(got, d1, CACHE_DIGEST_LEN);
    assert_int_equal(when, 102);
    assert_int_equal(cache_tag_get(s, "lib/app", "nope", got, &when), CACHE_NOTFOUND);
    assert_int_equal(cache_tag_get(s, "lib/ap", "v1", got, &when), CACHE_NOTFOUND);

    static const char *const all[] = {"V9", "a", "latest", "v1", "v10", "v2"};
    expect_tags(s, "lib/app", NULL, 0, all, 6);
    expect_tags(s, "lib/app", NULL, 2, all, 2);
    expect_tags(s, "lib/app", "a", 2, all + 2, 2);
    expect_tags(s, "lib/app", "v10", 0, all + 5, 1);
    expect_tags(s, "lib/app", "v2", 0, NULL, 0);
    expect_tags(s, "lib/app", "b", 0, all + 2, 4); /* `last` need not exist */
    expect_tags(s, "lib/app", "", 0, all, 6);
    static const char *const app2[] = {"zz"}, *const lib[] = {"b"};
    expect_tags(s, "lib/app2", NULL, 0, app2, 1);
    expect_tags(s, "lib", NULL, 0, lib, 1);
    expect_tags(s, "other", NULL, 0, NULL, 0);
    tag_seen t = {.stop_at = 3};
    assert_int_equal(cache_tag_list(s, "lib/app", NULL, 0, on_tag, &t), 3);
    assert_string_equal(t.tags[2], "latest");
    cache_snapshot_unref(s);
}

typedef struct {
    int calls;
    uint8_t referrers[4][CACHE_DIGEST_LEN];
    char json[4][128];
} ref_seen;

static int on_referrer(void *arg, const uint8_t referrer[CACHE_DIGEST_LEN], const char *json,
                       size_t len)
{
    ref_seen *r = arg;
    assert_true(r->calls < 4 && len < 128);
    memcpy(r->referrers[r->calls], referrer, CACHE_DIGEST_LEN);
    memcpy(r->json[r->calls], json, len);
    r->json[r->calls][len] = '\0';
    r->calls++;
    return 0;
}

static void test_referrers(void **state)
{
    fixture *f = *state;
    uint8_t subj[CACHE_DIGEST_LEN], subj2[CACHE_DIGEST_LEN], r1[CACHE_DIGEST_LEN],
        r2[CACHE_DIGEST_LEN];
    digest_of_label("subject", subj);
    memcpy(subj2, subj, sizeof subj2);
    subj2[CACHE_DIGEST_LEN - 1] ^= 1;
    memset(r1, 0x11, sizeof r1);
    memset(r2, 0x22, sizeof r2);
    static const char j1[] = "{\"digest\":\"one\"}", j2[] = "{\"digest\":\"two\"}";
    assert_int_equal(cache_referrer_put(f->c, subj, r2, j2, strlen(j2)), CACHE_OK);
    assert_int_equal(cache_referrer_put(f->c, subj, r1, j1, strlen(j1)), CACHE_OK);
    assert_int_equal(cache_referrer_put(f->c, subj2, r1, j2, strlen(j2)), CACHE_OK);
    assert_int_equal(cache_referrer_put(f->c, subj, r1, j1, strlen(j1)), CACHE_OK);

    cache_snapshot *s = cache_snapshot_new(f->c);
    assert_non_null(s);
    ref_seen r = {0};
    assert_int_equal(cache_referrer_list(s, subj, on_referrer, &r), 2);
    assert_memory_equal(r.referrers[0], r1, CACHE_DIGEST_LEN);
    assert_string_equal(r.json[0], j1);
    assert_memory_equal(r.referrers[1], r2, CACHE_DIGEST_LEN);
    assert_string_equal(r.json[1], j2);
    memset(&r, 0, sizeof r);
    assert_int_equal(cache_referrer_list(s, subj2, on_referrer, &r), 1);
    assert_string_equal(r.json[0], j2);
    uint8_t none[CACHE_DIGEST_LEN];
    digest_of_label("no referrers", none);
    memset(&r, 0, sizeof r);
    assert_int_equal(cache_referrer_list(s, none, on_referrer, &r), 0);
    cache_snapshot_unref(s);
}

static void test_snapshots_mvcc(void **state)
{
    fixture *f = *state;
    uint8_t d[CACHE_DIGEST_LEN], got[CACHE_DIGEST_LEN];
    digest_of_label("mvcc", d);
    cache_snapshot *slot = NULL;
    cache_snapshot *first = cache_snapshot_current(f->c, &slot);
    assert_non_null(first);
    assert_ptr_equal(cache_snapshot_current(f->c, &slot), first);
    cache_snapshot_ref(first); /* keep it past the slot's refresh */

    assert_int_equal(cache_tag_put(f->c, "repo", "t", d, 7), CACHE_OK);
    cache_snapshot *second = cache_snapshot_current(f->c, &slot);
    assert_non_null(second);
    assert_ptr_not_equal(second, first);
    assert_int_equal(cache_tag_get(second, "repo", "t", got, NULL), CACHE_OK);
    assert_int_equal(cache_tag_get(first, "repo", "t", got, NULL), CACHE_NOTFOUND);

    /* a failed write, an identical tag and an existing blob's begin change
     * nothing and keep the snapshot current */
    cache_snapshot_ref(second);
    assert_int_equal(cache_blob_delete(f->c, d), CACHE_NOTFOUND);
    assert_int_equal(cache_tag_put(f->c, "repo", "t", d, 7), CACHE_OK);
    assert_ptr_equal(cache_snapshot_current(f->c, &slot), second);
    cache_snapshot_unref(second);

    /* the old view survives deletes made after it */
    cache_snapshot *held = second;
    cache_snapshot_ref(held);
    assert_int_equal(cache_blob_begin(f->c, d, NULL), CACHE_OK);
    uint8_t *chunk = make_bytes(CACHE_CHUNK_SIZE, 8);
    assert_int_equal(cache_blob_append(f->c, d, 0, chunk, CACHE_CHUNK_SIZE), CACHE_OK);
    cache_snapshot *third = cache_snapshot_current(f->c, &slot);
    const void *p;
    size_t len;
    assert_int_equal(cache_blob_chunk(third, d, 0, &p, &len, NULL), CACHE_OK);
    cache_snapshot_ref(third);
    assert_int_equal(cache_blob_delete(f->c, d), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "repo", "t", got, 8), CACHE_OK);
    assert_memory_equal(p, chunk, CACHE_CHUNK_SIZE); /* still mapped, unchanged */
    cache_blob_info info;
    assert_int_equal(cache_blob_stat(third, d, &info), CACHE_OK);
    cache_snapshot *fourth = cache_snapshot_current(f->c, &slot);
    assert_int_equal(cache_blob_stat(fourth, d, &info), CACHE_NOTFOUND);
    assert_int_equal(cache_blob_stat(held, d, &info), CACHE_NOTFOUND);

    cache_snapshot_unref(third);
    cache_snapshot_unref(held);
    cache_snapshot_unref(first);
    cache_snapshot_unref(slot);
    free(chunk);
}

static void test_map_growth(void **state)
{
    fixture *f = *state;
    reopen(f, 1u << 20); /* 1 MiB map: not even one chunk fits with overhead */
    enum { NBLOBS = 4 };
    const size_t n = 2 * CACHE_CHUNK_SIZE + 777; /* 4 x ~2 MiB = 8 MiB+ */
    uint8_t *data[NBLOBS], d[NBLOBS][CACHE_DIGEST_LEN];
    for (int i = 0; i < NBLOBS; i++) {
        data[i] = make_bytes(n, 100 + i);
        store_blob(f->c, data[i], n, d[i]);
    }
    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_true(st.map_size >= 8u << 20);
    assert_true(st.used_bytes >= NBLOBS * n);
    assert_true(st.used_bytes <= st.map_size);
    assert_int_equal(st.blobs, NBLOBS);
    assert_int_equal(st.blob_bytes, NBLOBS * n);
    for (int i = 0; i < NBLOBS; i++) {
        check_blob(f->c, d[i], data[i], n); /* offsets still right after remaps */
        assert_int_equal(cache_blob_verify(f->c, d[i]), CACHE_OK);
    }
    reopen(f, 1u << 20); /* a smaller map than the data: LMDB keeps what is used */
    for (int i = 0; i < NBLOBS; i++) {
        check_blob(f->c, d[i], data[i], n);
        free(data[i]);
    }
}

/* A snapshot held by the writing thread keeps the map from moving: the write
 * that needs more room gives up with CACHE_FULL and succeeds once it is gone. */
static void test_growth_blocked_by_snapshot(void **state)
{
    fixture *f = *state;
    reopen(f, 1u << 20);
    uint8_t *chunk = make_bytes(CACHE_CHUNK_SIZE, 11);
    uint8_t d[CACHE_DIGEST_LEN];
    digest_of_label("blocked", d);
    assert_int_equal(cache_blob_begin(f->c, d, NULL), CACHE_OK);
    cache_snapshot *s = cache_snapshot_new(f->c);
    assert_non_null(s);
    assert_int_equal(cache_blob_append(f->c, d, 0, chunk, CACHE_CHUNK_SIZE), CACHE_FULL);
    cache_blob_info info;
    assert_int_equal(cache_blob_stat(s, d, &info), CACHE_OK); /* still usable */
    cache_snapshot_unref(s);
    assert_int_equal(cache_blob_append(f->c, d, 0, chunk, CACHE_CHUNK_SIZE), CACHE_OK);
    free(chunk);
}

/* Worker threads record their first failure instead of asserting (cmocka's
 * failures longjmp and must happen on the test's own thread). */
typedef struct {
    cache *c;
    int id;
    atomic_int *stop;
    const uint8_t *ref_digest;
    const uint8_t *ref_data;
    size_t ref_len;
    int reads;
    char error[128];
} worker;

#define WCHECK(w, cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            snprintf((w)->error, sizeof(w)->error, "line %d: %s", __LINE__, #cond);                \
            return NULL;                                                                           \
        }                                                                                          \
    } while (0)

static void *writer_thread(void *arg)
{
    worker *w = arg;
    const size_t n = CACHE_CHUNK_SIZE + 1000 * (size_t)(w->id + 1);
    uint8_t *data = malloc(n);
    WCHECK(w, data != NULL);
    for (int i = 0; i < 3; i++) {
        for (size_t k = 0; k < n; k++)
            data[k] = (uint8_t)(k * 31 + (size_t)w->id * 7 + (size_t)i);
        uint8_t d[CACHE_DIGEST_LEN];
        EVP_Digest(data, n, d, NULL, EVP_sha256(), NULL);
        int done = -1;
        cache_status st = cache_blob_begin(w->c, d, &done);
        if (st == CACHE_OK)
            st = cache_blob_append(w->c, d, 0, data, CACHE_CHUNK_SIZE);
        if (st == CACHE_OK)
            st = cache_blob_append(w->c, d, 1, data + CACHE_CHUNK_SIZE, n - CACHE_CHUNK_SIZE);
        if (st == CACHE_OK)
            st = cache_blob_complete(w->c, d, n);
        char tag[16];
        snprintf(tag, sizeof tag, "w%d-%d", w->id, i);
        if (st == CACHE_OK)
            st = cache_tag_put(w->c, "threads", tag, d, 1);
        if (st != CACHE_OK || done != 0) {
            snprintf(w->error, sizeof w->error, "writer: blob %d: %s, done %d", i,
                     cache_strerror(st), done);
            break;
        }
    }
    free(data);
    return NULL;
}

/* A reader in the style of an event loop: one slot, refreshed per "request". */
static void *reader_thread(void *arg)
{
    worker *w = arg;
    cache_snapshot *slot = NULL;
    while (!atomic_load(w->stop) && w->error[0] == '\0') {
        cache_snapshot *s = cache_snapshot_current(w->c, &slot);
        if (s == NULL) { /* the map is growing: try again shortly */
            sched_yield();
            continue;
        }
        const void *p;
        size_t len;
        uint64_t off;
        cache_status st = cache_blob_chunk(s, w->ref_digest, 0, &p, &len, &off);
        if (st != CACHE_OK || len != w->ref_len || memcmp(p, w->ref_data, len) != 0)
            snprintf(w->error, sizeof w->error, "reader: status %d len %zu", st, len);
        w->reads++;
    }
    cache_snapshot_unref(slot);
    return NULL;
}

static void test_concurrent_writers_and_growth(void **state)
{
    fixture *f = *state;
    reopen(f, 1u << 20);
    uint8_t ref[CACHE_DIGEST_LEN];
    static const char refdata[] = "reference blob read by the reader thread";
    store_blob(f->c, (const uint8_t *)refdata, sizeof refdata, ref);
    atomic_int stop = 0;
    enum { NW = 3 };
    worker ws[NW + 1];
    pthread_t th[NW + 1];
    for (int i = 0; i <= NW; i++) {
        ws[i] = (worker){.c = f->c,
                         .id = i,
                         .stop = &stop,
                         .ref_digest = ref,
                         .ref_data = (const uint8_t *)refdata,
                         .ref_len = sizeof refdata};
        assert_int_equal(
            pthread_create(&th[i], NULL, i == NW ? reader_thread : writer_thread, &ws[i]), 0);
    }
    for (int i = 0; i < NW; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    atomic_store(&stop, 1);
    assert_int_equal(pthread_join(th[NW], NULL), 0);
    for (int i = 0; i <= NW; i++)
        if (ws[i].error[0] != '\0')
            fail_msg("thread %d: %s", i, ws[i].error);
    assert_true(ws[NW].reads > 0);

    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.blobs, 1 + 3 * NW);
    assert_int_equal(st.tags, 3 * NW);
    assert_true(st.map_size > 1u << 20);
}

static void test_stats(void **state)
{
    fixture *f = *state;
    uint8_t d1[CACHE_DIGEST_LEN], d2[CACHE_DIGEST_LEN], dp[CACHE_DIGEST_LEN];
    store_blob(f->c, (const uint8_t *)"one", 3, d1);
    store_blob(f->c, (const uint8_t *)"twenty", 6, d2);
    digest_of_label("partial", dp);
    assert_int_equal(cache_blob_begin(f->c, dp, NULL), CACHE_OK);
    assert_int_equal(cache_blob_append(f->c, dp, 0, "xy", 2), CACHE_OK);
    assert_int_equal(cache_manifest_put(f->c, d1, "a/b", "{}", 2), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "r", "t1", d1, 1), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "r", "t2", d1, 1), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "q", "t1", d1, 1), CACHE_OK);
    assert_int_equal(cache_referrer_put(f->c, d1, d2, "{}", 2), CACHE_OK); /* not a tag */
    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.blobs, 2);
    assert_int_equal(st.blob_bytes, 9);
    assert_int_equal(st.partial_blobs, 1);
    assert_int_equal(st.manifests, 1);
    assert_int_equal(st.tags, 3);
    assert_true(st.used_bytes > 0 && st.used_bytes < st.map_size);
}

static void test_reopen_persistence(void **state)
{
    fixture *f = *state;
    const size_t n = 3 * CACHE_CHUNK_SIZE / 2;
    uint8_t *data = make_bytes(n, 12);
    uint8_t d[CACHE_DIGEST_LEN], m[CACHE_DIGEST_LEN], r[CACHE_DIGEST_LEN], got[CACHE_DIGEST_LEN];
    store_blob(f->c, data, n, d);
    digest_of_label("manifest", m);
    digest_of_label("referrer", r);
    assert_int_equal(cache_manifest_put(f->c, m, "x/y", "body", 4), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "repo", "v1", m, 42), CACHE_OK);
    assert_int_equal(cache_referrer_put(f->c, m, r, "{}", 2), CACHE_OK);
    assert_int_equal(cache_touch(f->c, d, 4242), CACHE_OK);
    reopen(f, 0);

    check_blob(f->c, d, data, n);
    cache_snapshot *s = cache_snapshot_new(f->c);
    assert_non_null(s);
    const char *mt;
    const void *body;
    size_t len;
    assert_int_equal(cache_manifest_get(s, m, &mt, &body, &len), CACHE_OK);
    assert_string_equal(mt, "x/y");
    assert_int_equal(len, 4);
    assert_memory_equal(body, "body", 4);
    uint64_t when;
    assert_int_equal(cache_tag_get(s, "repo", "v1", got, &when), CACHE_OK);
    assert_memory_equal(got, m, CACHE_DIGEST_LEN);
    assert_int_equal(when, 42);
    ref_seen rs = {0};
    assert_int_equal(cache_referrer_list(s, m, on_referrer, &rs), 1);
    assert_memory_equal(rs.referrers[0], r, CACHE_DIGEST_LEN);
    cache_blob_info info;
    assert_int_equal(cache_blob_stat(s, d, &info), CACHE_OK);
    assert_int_equal(info.accessed, 4242);
    cache_snapshot_unref(s);
    free(data);
}

static void test_touch(void **state)
{
    fixture *f = *state;
    uint8_t d[CACHE_DIGEST_LEN], m[CACHE_DIGEST_LEN], none[CACHE_DIGEST_LEN];
    store_blob(f->c, (const uint8_t *)"touch me", 8, d);
    digest_of_label("touched manifest", m);
    digest_of_label("nothing", none);
    assert_int_equal(cache_manifest_put(f->c, m, "a/b", "{\"x\":1}", 7), CACHE_OK);

    cache_snapshot *s = cache_snapshot_new(f->c);
    cache_blob_info info;
    assert_int_equal(cache_blob_stat(s, d, &info), CACHE_OK);
    uint64_t now = (uint64_t)time(NULL);
    assert_true(info.accessed + 5 >= now && info.accessed <= now + 5);
    cache_snapshot_unref(s);

    assert_int_equal(cache_touch(f->c, d, 1700000000), CACHE_OK);
    assert_int_equal(cache_touch(f->c, m, 1700000001), CACHE_OK);
    assert_int_equal(cache_touch(f->c, none, 1), CACHE_NOTFOUND);
    s = cache_snapshot_new(f->c);
    assert_int_equal(cache_blob_stat(s, d, &info), CACHE_OK);
    assert_int_equal(info.accessed, 1700000000);
    assert_int_equal(info.state, CACHE_BLOB_COMPLETE);
    assert_int_equal(info.size, 8);
    const char *mt;
    const void *body;
    size_t len;
    assert_int_equal(cache_manifest_get(s, m, &mt, &body, &len), CACHE_OK); /* intact */
    assert_string_equal(mt, "a/b");
    assert_int_equal(len, 7);
    assert_memory_equal(body, "{\"x\":1}", 7);
    cache_snapshot_unref(s);
}

/* ---- references, deltas, pins, counters, eviction, totals, check ---- */

typedef struct {
    int calls, stop_after;
    uint8_t digests[8][CACHE_DIGEST_LEN];
} digest_seen;

static int on_ref(void *arg, const uint8_t manifest[CACHE_DIGEST_LEN])
{
    digest_seen *s = arg;
    if (s->calls < 8)
        memcpy(s->digests[s->calls], manifest, CACHE_DIGEST_LEN);
    s->calls++;
    return s->stop_after != 0 && s->calls >= s->stop_after;
}

static void test_refs(void **state)
{
    fixture *f = *state;
    uint8_t layer[CACHE_DIGEST_LEN], m1[CACHE_DIGEST_LEN], m2[CACHE_DIGEST_LEN];
    digest_of_label("layer", layer);
    memset(m1, 0x01, sizeof m1);
    memset(m2, 0x02, sizeof m2);
    assert_int_equal(cache_ref_put(f->c, "r.io/app", layer, m2), CACHE_OK);
    assert_int_equal(cache_ref_put(f->c, "r.io/app", layer, m1), CACHE_OK);
    assert_int_equal(cache_ref_put(f->c, "r.io/app", layer, m2), CACHE_OK); /* idempotent */
    assert_int_equal(cache_ref_put(f->c, "r.io/other", layer, m2), CACHE_OK);
    assert_int_equal(cache_ref_put(f->c, "", layer, m1), CACHE_INVALID);
    char longrepo[600];
    memset(longrepo, 'a', sizeof longrepo - 1);
    longrepo[sizeof longrepo - 1] = '\0';
    assert_int_equal(cache_ref_put(f->c, longrepo, layer, m1), CACHE_INVALID);

    cache_snapshot *s = cache_snapshot_new(f->c);
    assert_non_null(s);
    digest_seen seen = {0};
    assert_int_equal(cache_ref_list(s, "r.io/app", layer, on_ref, &seen), 2);
    assert_memory_equal(seen.digests[0], m1, CACHE_DIGEST_LEN); /* digest order */
    assert_memory_equal(seen.digests[1], m2, CACHE_DIGEST_LEN);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(cache_ref_list(s, "r.io/other", layer, on_ref, &seen), 1);
    assert_memory_equal(seen.digests[0], m2, CACHE_DIGEST_LEN);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(cache_ref_list(s, "r.io/ap", layer, on_ref, &seen), 0); /* no prefix match */
    assert_int_equal(cache_ref_list(s, "r.io/app", m1, on_ref, &seen), 0);
    memset(&seen, 0, sizeof seen);
    seen.stop_after = 1;
    assert_int_equal(cache_ref_list(s, "r.io/app", layer, on_ref, &seen), 1);
    assert_int_equal(cache_ref_list(s, NULL, layer, on_ref, &seen), CACHE_INVALID);
    cache_snapshot_unref(s);
}

typedef struct {
    int calls;
    char codecs[4][16];
    uint64_t sizes[4];
} delta_seen;

static int on_delta(void *arg, const char *codec, const uint8_t delta[CACHE_DIGEST_LEN],
                    uint64_t size)
{
    (void)delta;
    delta_seen *s = arg;
    if (s->calls < 4) {
        snprintf(s->codecs[s->calls], sizeof s->codecs[0], "%s", codec);
        s->sizes[s->calls] = size;
    }
    s->calls++;
    return 0;
}

static void test_deltas(void **state)
{
    fixture *f = *state;
    uint8_t base[CACHE_DIGEST_LEN], target[CACHE_DIGEST_LEN], d1[CACHE_DIGEST_LEN],
        d2[CACHE_DIGEST_LEN], got[CACHE_DIGEST_LEN];
    digest_of_label("base", base);
    digest_of_label("target", target);
    store_blob(f->c, (const uint8_t *)"delta one", 9, d1);
    store_blob(f->c, (const uint8_t *)"delta two!", 10, d2);
    assert_int_equal(cache_delta_put(f->c, base, target, "zstd", d1, 9), CACHE_OK);
    assert_int_equal(cache_delta_put(f->c, base, target, "vcdiff", d2, 10), CACHE_OK);
    assert_int_equal(cache_delta_put(f->c, base, target, "zstd", d1, 9), CACHE_OK);
    assert_int_equal(cache_delta_put(f->c, base, target, "", d1, 9), CACHE_INVALID);
    assert_int_equal(cache_delta_put(f->c, base, target, "sixteen-bytes-xx", d1, 9), CACHE_INVALID);
    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.deltas, 2);
    assert_int_equal(st.delta_bytes, 19);

    cache_snapshot *s = cache_snapshot_new(f->c);
    uint64_t size = 0;
    assert_int_equal(cache_delta_get(s, base, target, "zstd", got, &size), CACHE_OK);
    assert_memory_equal(got, d1, CACHE_DIGEST_LEN);
    assert_int_equal(size, 9);
    assert_int_equal(cache_delta_get(s, target, base, "zstd", got, &size), CACHE_NOTFOUND);
    assert_int_equal(cache_delta_get(s, base, target, "bsz", got, NULL), CACHE_NOTFOUND);
    delta_seen seen = {0};
    assert_int_equal(cache_delta_list(s, base, target, on_delta, &seen), 2);
    assert_string_equal(seen.codecs[0], "vcdiff");
    assert_string_equal(seen.codecs[1], "zstd");
    assert_int_equal(seen.sizes[0], 10);
    cache_snapshot_unref(s);

    /* replacing an entry replaces its size in the totals */
    assert_int_equal(cache_delta_put(f->c, base, target, "zstd", d2, 10), CACHE_OK);
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.deltas, 2);
    assert_int_equal(st.delta_bytes, 20);
}

static void test_pins(void **state)
{
    fixture *f = *state;
    uint8_t b[CACHE_DIGEST_LEN], m[CACHE_DIGEST_LEN], none[CACHE_DIGEST_LEN], p[CACHE_DIGEST_LEN];
    store_blob(f->c, (const uint8_t *)"pinned blob", 11, b);
    digest_of_label("pinned manifest", m);
    digest_of_label("nothing here", none);
    assert_int_equal(cache_manifest_put(f->c, m, "a/b", "{\"m\":1}", 7), CACHE_OK);
    assert_int_equal(cache_pin(f->c, none, 1), CACHE_NOTFOUND);
    assert_int_equal(cache_pin(f->c, b, 1), CACHE_OK);
    assert_int_equal(cache_pin(f->c, b, 1), CACHE_OK); /* no change */
    assert_int_equal(cache_pin(f->c, m, 1), CACHE_OK);
    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.pinned_bytes, 11 + 7);
    assert_int_equal(st.manifest_bytes, 7);

    /* a replaced manifest keeps its pin; its size changes the totals */
    assert_int_equal(cache_manifest_put(f->c, m, "a/b", "{\"m\":12}", 8), CACHE_OK);
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.pinned_bytes, 11 + 8);
    /* a PARTIAL blob may be pinned; its bytes count once it is COMPLETE */
    digest_of_label("partial pinned", p);
    assert_int_equal(cache_blob_begin(f->c, p, NULL), CACHE_OK);
    assert_int_equal(cache_pin(f->c, p, 1), CACHE_OK);
    assert_int_equal(cache_blob_append(f->c, p, 0, "abc", 3), CACHE_OK);
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.pinned_bytes, 11 + 8);
    assert_int_equal(cache_blob_complete(f->c, p, 3), CACHE_OK);
    reopen(f, 0);
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.pinned_bytes, 11 + 8 + 3);

    assert_int_equal(cache_pin(f->c, b, 0), CACHE_OK);
    assert_int_equal(cache_manifest_delete(f->c, m), CACHE_OK);
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.pinned_bytes, 3);
    assert_int_equal(st.manifest_bytes, 0);
    assert_int_equal(cache_blob_delete(f->c, p), CACHE_OK);
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.pinned_bytes, 0);
    assert_int_equal(st.blobs, 1);
    assert_int_equal(st.blob_bytes, 11);
}

static void test_counters(void **state)
{
    fixture *f = *state;
    cache_counters c;
    assert_int_equal(cache_counters_get(f->c, &c), CACHE_OK);
    assert_int_equal(c.hits + c.misses + c.bytes_served + c.bytes_upstream, 0);
    cache_counters add = {.hits = 3,
                          .misses = 1,
                          .bytes_served = 1000,
                          .bytes_upstream = 400,
                          .bytes_saved_deltas = 77};
    assert_int_equal(cache_counters_add(f->c, &add), CACHE_OK);
    assert_int_equal(cache_counters_add(f->c, &add), CACHE_OK);
    reopen(f, 0);
    assert_int_equal(cache_counters_get(f->c, &c), CACHE_OK);
    assert_int_equal(c.hits, 6);
    assert_int_equal(c.misses, 2);
    assert_int_equal(c.bytes_served, 2000);
    assert_int_equal(c.bytes_upstream, 800);
    assert_int_equal(c.bytes_saved_deltas, 154);
    assert_int_equal(cache_counters_add(NULL, &add), CACHE_INVALID);
}

static bool blob_exists(cache *c, const uint8_t *d)
{
    cache_snapshot *s = cache_snapshot_new(c);
    assert_non_null(s);
    cache_blob_info info;
    bool found = cache_blob_stat(s, d, &info) == CACHE_OK;
    cache_snapshot_unref(s);
    return found;
}

static bool manifest_exists(cache *c, const uint8_t *d)
{
    cache_snapshot *s = cache_snapshot_new(c);
    assert_non_null(s);
    const char *mt;
    const void *body;
    size_t len;
    bool found = cache_manifest_get(s, d, &mt, &body, &len) == CACHE_OK;
    cache_snapshot_unref(s);
    return found;
}

/* Blobs of 1000 bytes with access times 100, 200, ...; the oldest go first;
 * pinned and PARTIAL blobs stay; readers keep what their snapshot sees. */
static void test_evict_lru(void **state)
{
    fixture *f = *state;
    enum { N = 6 };
    uint8_t d[N][CACHE_DIGEST_LEN], part[CACHE_DIGEST_LEN];
    uint8_t *data[N];
    for (int i = 0; i < N; i++) {
        data[i] = make_bytes(1000, 40 + (uint32_t)i);
        store_blob(f->c, data[i], 1000, d[i]);
        assert_int_equal(cache_touch(f->c, d[i], 100 * (uint64_t)(i + 1)), CACHE_OK);
    }
    assert_int_equal(cache_pin(f->c, d[0], 1), CACHE_OK); /* the oldest, but pinned */
    digest_of_label("in flight", part);
    assert_int_equal(cache_blob_begin(f->c, part, NULL), CACHE_OK);
    assert_int_equal(cache_blob_append(f->c, part, 0, data[0], 1000), CACHE_OK);
    assert_int_equal(cache_touch(f->c, part, 1), CACHE_OK);
    assert_int_equal(cache_touch(f->c, d[3], 50), CACHE_OK); /* d[3] is now older than d[1] */

    cache_snapshot *reader = cache_snapshot_new(f->c);
    assert_non_null(reader);
    cache_evict_result r;
    assert_int_equal(cache_evict(f->c, 3500, &r), CACHE_OK);
    assert_int_equal(r.evicted_objects, 3);
    assert_int_equal(r.evicted_bytes, 3000);
    assert_int_equal(r.size_after, 3000);
    assert_true(blob_exists(f->c, d[0]));
    assert_false(blob_exists(f->c, d[3]));
    assert_false(blob_exists(f->c, d[1]));
    assert_false(blob_exists(f->c, d[2]));
    assert_true(blob_exists(f->c, d[4]));
    assert_true(blob_exists(f->c, d[5]));
    assert_true(blob_exists(f->c, part));
    /* the old snapshot still reads an evicted blob in full */
    const void *p;
    size_t len;
    assert_int_equal(cache_blob_chunk(reader, d[1], 0, &p, &len, NULL), CACHE_OK);
    assert_int_equal(len, 1000);
    assert_memory_equal(p, data[1], 1000);
    cache_snapshot_unref(reader);

    /* under the bound already: nothing happens */
    assert_int_equal(cache_evict(f->c, 3000, &r), CACHE_OK);
    assert_int_equal(r.evicted_objects, 0);
    /* a bound below what is pinned: everything unpinned goes, CACHE_OK */
    assert_int_equal(cache_evict(f->c, 0, &r), CACHE_OK);
    assert_int_equal(r.evicted_objects, 2);
    assert_int_equal(r.size_after, 1000);
    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.blobs, 1);
    assert_int_equal(st.partial_blobs, 1);
    assert_int_equal(st.pinned_bytes, 1000);
    for (int i = 0; i < N; i++)
        free(data[i]);
}

/* Evicting a manifest removes its tags, its refs rows and referrers rows. */
static void test_evict_manifest_rows(void **state)
{
    fixture *f = *state;
    uint8_t old_m[CACHE_DIGEST_LEN], new_m[CACHE_DIGEST_LEN], layer[CACHE_DIGEST_LEN],
        subj[CACHE_DIGEST_LEN], got[CACHE_DIGEST_LEN];
    static const char ob[] = "{\"old\":true}", nb[] = "{\"new\":true}";
    sha256(ob, strlen(ob), old_m);
    sha256(nb, strlen(nb), new_m);
    store_blob(f->c, (const uint8_t *)"shared layer", 12, layer);
    digest_of_label("subject", subj);
    assert_int_equal(cache_manifest_put(f->c, old_m, "a/b", ob, strlen(ob)), CACHE_OK);
    assert_int_equal(cache_manifest_put(f->c, new_m, "a/b", nb, strlen(nb)), CACHE_OK);
    assert_int_equal(cache_touch(f->c, old_m, 10), CACHE_OK);
    assert_int_equal(cache_touch(f->c, new_m, 1000), CACHE_OK);
    assert_int_equal(cache_touch(f->c, layer, 2000), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "r.io/app", "v1", old_m, 1), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "r.io/app", "v1-alias", old_m, 1), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "r.io/app", "v2", new_m, 1), CACHE_OK);
    assert_int_equal(cache_ref_put(f->c, "r.io/app", layer, old_m), CACHE_OK);
    assert_int_equal(cache_ref_put(f->c, "r.io/app", layer, new_m), CACHE_OK);
    assert_int_equal(cache_referrer_put(f->c, subj, old_m, "{}", 2), CACHE_OK);
    assert_int_equal(cache_referrer_put(f->c, old_m, new_m, "{}", 2), CACHE_OK);

    cache_evict_result r;
    uint64_t total = 12 + strlen(ob) + strlen(nb);
    assert_int_equal(cache_evict(f->c, total - 1, &r), CACHE_OK);
    assert_int_equal(r.evicted_objects, 1);
    assert_false(manifest_exists(f->c, old_m));
    assert_true(manifest_exists(f->c, new_m));
    cache_snapshot *s = cache_snapshot_new(f->c);
    assert_int_equal(cache_tag_get(s, "r.io/app", "v1", got, NULL), CACHE_NOTFOUND);
    assert_int_equal(cache_tag_get(s, "r.io/app", "v1-alias", got, NULL), CACHE_NOTFOUND);
    assert_int_equal(cache_tag_get(s, "r.io/app", "v2", got, NULL), CACHE_OK);
    digest_seen seen = {0};
    assert_int_equal(cache_ref_list(s, "r.io/app", layer, on_ref, &seen), 1);
    assert_memory_equal(seen.digests[0], new_m, CACHE_DIGEST_LEN);
    ref_seen rs = {0};
    assert_int_equal(cache_referrer_list(s, subj, on_referrer, &rs), 0);
    memset(&rs, 0, sizeof rs); /* rows whose subject was evicted stay */
    assert_int_equal(cache_referrer_list(s, old_m, on_referrer, &rs), 1);
    cache_snapshot_unref(s);
    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.tags, 1);
    assert_int_equal(st.manifests, 1);
}

/* Deltas go before any full blob, even older ones; pinned deltas stay. */
static void test_evict_deltas_first(void **state)
{
    fixture *f = *state;
    uint8_t full[CACHE_DIGEST_LEN], d1[CACHE_DIGEST_LEN], d2[CACHE_DIGEST_LEN],
        base[CACHE_DIGEST_LEN], target[CACHE_DIGEST_LEN], got[CACHE_DIGEST_LEN];
    uint8_t *a = make_bytes(5000, 61), *b = make_bytes(300, 62), *c = make_bytes(200, 63);
    store_blob(f->c, a, 5000, full);
    store_blob(f->c, b, 300, d1);
    store_blob(f->c, c, 200, d2);
    assert_int_equal(cache_touch(f->c, full, 1), CACHE_OK); /* oldest of all */
    digest_of_label("base", base);
    digest_of_label("target", target);
    assert_int_equal(cache_delta_put(f->c, base, target, "zstd", d1, 300), CACHE_OK);
    assert_int_equal(cache_delta_put(f->c, base, target, "bsz", d1, 300), CACHE_OK);
    assert_int_equal(cache_delta_put(f->c, base, target, "vcdiff", d2, 200), CACHE_OK);
    assert_int_equal(cache_pin(f->c, d2, 1), CACHE_OK);

    cache_evict_result r;
    assert_int_equal(cache_evict(f->c, 5200, &r), CACHE_OK);
    assert_int_equal(r.evicted_objects, 2); /* two index entries of one delta blob */
    assert_int_equal(r.evicted_bytes, 300);
    assert_true(blob_exists(f->c, full));
    assert_false(blob_exists(f->c, d1));
    cache_snapshot *s = cache_snapshot_new(f->c);
    assert_int_equal(cache_delta_get(s, base, target, "zstd", got, NULL), CACHE_NOTFOUND);
    assert_int_equal(cache_delta_get(s, base, target, "bsz", got, NULL), CACHE_NOTFOUND);
    assert_int_equal(cache_delta_get(s, base, target, "vcdiff", got, NULL), CACHE_OK);
    cache_snapshot_unref(s);
    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.deltas, 1);
    assert_int_equal(st.delta_bytes, 200);
    /* then full blobs */
    assert_int_equal(cache_evict(f->c, 300, &r), CACHE_OK);
    assert_false(blob_exists(f->c, full));
    assert_true(blob_exists(f->c, d2));
    free(a);
    free(b);
    free(c);
}

/* More objects than one write transaction takes. */
static void test_evict_many(void **state)
{
    fixture *f = *state;
    enum { N = 700 };
    for (uint32_t i = 0; i < N; i++) {
        uint8_t d[CACHE_DIGEST_LEN], buf[16];
        memcpy(buf, &i, sizeof i);
        memset(buf + 4, 'x', sizeof buf - 4);
        store_blob(f->c, buf, sizeof buf, d);
        assert_int_equal(cache_touch(f->c, d, 1000 + i), CACHE_OK);
    }
    cache_evict_result r;
    assert_int_equal(cache_evict(f->c, 100 * 16, &r), CACHE_OK);
    assert_int_equal(r.evicted_objects, N - 100);
    assert_int_equal(r.size_after, 100 * 16);
    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.blobs, 100);
    /* the newest are left */
    uint32_t i = N - 1;
    uint8_t d[CACHE_DIGEST_LEN], buf[16];
    memcpy(buf, &i, sizeof i);
    memset(buf + 4, 'x', sizeof buf - 4);
    sha256(buf, sizeof buf, d);
    assert_true(blob_exists(f->c, d));
}

/* Drops the given named databases with raw LMDB (a store from before they existed). */
static void drop_dbs(const char *dir, const char *const *names, size_t n)
{
    MDB_env *env;
    MDB_txn *txn;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 1u << 30), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    for (size_t i = 0; i < n; i++) {
        MDB_dbi dbi;
        assert_int_equal(mdb_dbi_open(txn, names[i], 0, &dbi), 0);
        assert_int_equal(mdb_drop(txn, dbi, 1), 0);
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void fill_mixed(cache *c)
{
    uint8_t d[CACHE_DIGEST_LEN], m[CACHE_DIGEST_LEN], p[CACHE_DIGEST_LEN];
    uint8_t *big = make_bytes(CACHE_CHUNK_SIZE + 10, 71);
    store_blob(c, big, CACHE_CHUNK_SIZE + 10, d);
    store_blob(c, (const uint8_t *)"small", 5, p);
    assert_int_equal(cache_pin(c, p, 1), CACHE_OK);
    digest_of_label("mixed manifest", m);
    assert_int_equal(cache_manifest_put(c, m, "a/b", "{\"z\":0}", 7), CACHE_OK);
    assert_int_equal(cache_pin(c, m, 1), CACHE_OK);
    assert_int_equal(cache_tag_put(c, "r", "t", m, 1), CACHE_OK);
    assert_int_equal(cache_delta_put(c, d, p, "zstd", p, 5), CACHE_OK);
    digest_of_label("mixed partial", p);
    assert_int_equal(cache_blob_begin(c, p, NULL), CACHE_OK);
    free(big);
}

static void test_totals_rebuilt(void **state)
{
    fixture *f = *state;
    fill_mixed(f->c);
    cache_stats before, after;
    assert_int_equal(cache_stat(f->c, &before), CACHE_OK);
    cache_close(f->c);
    static const char *const counters[] = {"counters"};
    drop_dbs(f->dir, counters, 1);
    f->c = open_store(f->dir, 0);
    assert_int_equal(cache_stat(f->c, &after), CACHE_OK);
    assert_int_equal(after.blobs, before.blobs);
    assert_int_equal(after.blob_bytes, before.blob_bytes);
    assert_int_equal(after.partial_blobs, 1);
    assert_int_equal(after.manifest_bytes, 7);
    assert_int_equal(after.pinned_bytes, 5 + 7);
    assert_int_equal(after.deltas, 1);
    assert_int_equal(after.delta_bytes, 5);
    assert_int_equal(after.blob_bytes, CACHE_CHUNK_SIZE + 10 + 5);
}

/* A store written before refs, deltas and counters existed still opens. */
static void test_old_store_opens(void **state)
{
    fixture *f = *state;
    uint8_t d[CACHE_DIGEST_LEN], m[CACHE_DIGEST_LEN], got[CACHE_DIGEST_LEN];
    store_blob(f->c, (const uint8_t *)"from before", 11, d);
    digest_of_label("old manifest", m);
    assert_int_equal(cache_manifest_put(f->c, m, "a/b", "{}", 2), CACHE_OK);
    assert_int_equal(cache_tag_put(f->c, "r", "old", m, 5), CACHE_OK);
    cache_close(f->c);
    static const char *const added[] = {"refs", "deltas", "counters"};
    drop_dbs(f->dir, added, 3);
    f->c = open_store(f->dir, 0);
    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.blobs, 1);
    assert_int_equal(st.blob_bytes, 11);
    assert_int_equal(st.manifest_bytes, 2);
    assert_int_equal(st.tags, 1);
    cache_snapshot *s = cache_snapshot_new(f->c);
    assert_int_equal(cache_tag_get(s, "r", "old", got, NULL), CACHE_OK);
    digest_seen seen = {0};
    assert_int_equal(cache_ref_list(s, "r", d, on_ref, &seen), 0);
    cache_snapshot_unref(s);
    assert_int_equal(cache_ref_put(f->c, "r", d, m), CACHE_OK);
    check_blob(f->c, d, (const uint8_t *)"from before", 11);
}

typedef struct {
    int calls, manifests;
    uint8_t digest[CACHE_DIGEST_LEN];
    cache_status st;
} check_seen;

static void on_bad(void *arg, const uint8_t digest[CACHE_DIGEST_LEN], int is_manifest,
                   cache_status st)
{
    check_seen *s = arg;
    s->calls++;
    s->manifests += is_manifest;
    memcpy(s->digest, digest, CACHE_DIGEST_LEN);
    s->st = st;
}

static void test_check(void **state)
{
    fixture *f = *state;
    const size_t n = 2 * CACHE_CHUNK_SIZE;
    uint8_t *data = make_bytes(n, 81);
    uint8_t d[CACHE_DIGEST_LEN], good[CACHE_DIGEST_LEN], m[CACHE_DIGEST_LEN],
        wrong[CACHE_DIGEST_LEN];
    store_blob(f->c, data, n, d);
    store_blob(f->c, (const uint8_t *)"fine", 4, good);
    sha256("{}", 2, m);
    assert_int_equal(cache_manifest_put(f->c, m, "a/b", "{}", 2), CACHE_OK);
    digest_of_label("not the hash of its body", wrong);
    assert_int_equal(cache_manifest_put(f->c, wrong, "a/b", "{}", 2), CACHE_OK);
    cache_check_result r;
    check_seen seen = {0};
    assert_int_equal(cache_check(f->c, on_bad, &seen, &r), CACHE_OK);
    assert_int_equal(r.blobs, 2);
    assert_int_equal(r.manifests, 2);
    assert_int_equal(r.bad, 1);
    assert_int_equal(seen.manifests, 1);
    assert_memory_equal(seen.digest, wrong, CACHE_DIGEST_LEN);
    assert_int_equal(seen.st, CACHE_CORRUPT);

    cache_snapshot *s = cache_snapshot_new(f->c);
    const void *p;
    size_t len;
    uint64_t off;
    assert_int_equal(cache_blob_chunk(s, d, 1, &p, &len, &off), CACHE_OK);
    cache_snapshot_unref(s);
    cache_close(f->c);
    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", f->dir);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "XXXX", 4, (off_t)(off + 99)), 4);
    close(fd);
    f->c = open_store(f->dir, 0);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(cache_check(f->c, on_bad, &seen, &r), CACHE_OK);
    assert_int_equal(r.bad, 2);
    assert_int_equal(seen.calls, 2);
    assert_int_equal(cache_check(f->c, NULL, NULL, &r), CACHE_OK);
    free(data);
}

/* abort removes a PARTIAL blob but never one another writer completed. */
static void test_blob_abort(void **state)
{
    fixture *f = *state;
    uint8_t p[CACHE_DIGEST_LEN], d[CACHE_DIGEST_LEN], none[CACHE_DIGEST_LEN];
    digest_of_label("aborted", p);
    digest_of_label("never there", none);
    assert_int_equal(cache_blob_begin(f->c, p, NULL), CACHE_OK);
    assert_int_equal(cache_blob_append(f->c, p, 0, "abc", 3), CACHE_OK);
    store_blob(f->c, (const uint8_t *)"finished by someone", 19, d);
    assert_int_equal(cache_blob_abort(f->c, p), CACHE_OK);
    assert_false(blob_exists(f->c, p));
    assert_int_equal(cache_blob_abort(f->c, d), CACHE_OK);
    check_blob(f->c, d, (const uint8_t *)"finished by someone", 19);
    assert_int_equal(cache_blob_abort(f->c, none), CACHE_NOTFOUND);
    cache_stats st;
    assert_int_equal(cache_stat(f->c, &st), CACHE_OK);
    assert_int_equal(st.partial_blobs, 0);
    assert_int_equal(st.blobs, 1);
}

static void test_append_chunks(void **state)
{
    fixture *f = *state;
    const size_t n = 3 * CACHE_CHUNK_SIZE + 123;
    uint8_t *data = make_bytes(n, 91);
    uint8_t d[CACHE_DIGEST_LEN];
    sha256(data, n, d);
    assert_int_equal(cache_blob_begin(f->c, d, NULL), CACHE_OK);
    /* two chunks in one transaction, then the rest (a short last chunk) */
    assert_int_equal(cache_blob_append_chunks(f->c, d, 0, data, 2 * CACHE_CHUNK_SIZE), CACHE_OK);
    assert_int_equal(cache_blob_append_chunks(f->c, d, 1, data, CACHE_CHUNK_SIZE), CACHE_INVALID);
    assert_int_equal(
        cache_blob_append_chunks(f->c, d, 2, data + 2 * CACHE_CHUNK_SIZE, n - 2 * CACHE_CHUNK_SIZE),
        CACHE_OK);
    assert_int_equal(cache_blob_complete(f->c, d, n), CACHE_OK);
    check_blob(f->c, d, data, n);
    assert_int_equal(cache_blob_verify(f->c, d), CACHE_OK);
    /* a bad piece in the middle appends none of the batch */
    uint8_t e[CACHE_DIGEST_LEN];
    digest_of_label("all or none", e);
    assert_int_equal(cache_blob_begin(f->c, e, NULL), CACHE_OK);
    assert_int_equal(cache_blob_append(f->c, e, 0, data, 10), CACHE_OK); /* short: the last */
    assert_int_equal(cache_blob_append_chunks(f->c, e, 1, data, 2 * CACHE_CHUNK_SIZE),
                     CACHE_INVALID);
    assert_int_equal(cache_blob_append_chunks(f->c, e, 0, data, CACHE_APPEND_MAX + 1),
                     CACHE_INVALID);
    cache_snapshot *s = cache_snapshot_new(f->c);
    cache_blob_info info;
    assert_int_equal(cache_blob_stat(s, e, &info), CACHE_OK);
    assert_int_equal(info.size, 10);
    cache_snapshot_unref(s);
    free(data);
}

static void test_strerror(void **state)
{
    (void)state;
    static const cache_status all[] = {CACHE_OK,   CACHE_NOTFOUND, CACHE_CORRUPT,
                                       CACHE_FULL, CACHE_INVALID,  CACHE_IO};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        assert_non_null(cache_strerror(all[i]));
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(cache_strerror(all[i]), cache_strerror(all[j]));
    }
}

/* ---- verdicts ---- */

static cache_verdict verdict(int allowed, uint64_t when, const char *why)
{
    cache_verdict v = {.allowed = allowed, .decided_at = when};
    snprintf(v.reason, sizeof v.reason, "%s", why);
    return v;
}

static cache_status get_verdict(fixture *f, const uint8_t *pol, const char *repo, const char *tag,
                                const uint8_t *d, cache_verdict *out)
{
    cache_snapshot *s = cache_snapshot_new(f->c);
    assert_non_null(s);
    cache_status st = cache_verdict_get(s, pol, repo, tag, d, out);
    cache_snapshot_unref(s);
    return st;
}

static void test_verdicts(void **state)
{
    fixture *f = *state;
    uint8_t p1[CACHE_DIGEST_LEN], p2[CACHE_DIGEST_LEN], m1[CACHE_DIGEST_LEN], m2[CACHE_DIGEST_LEN];
    digest_of_label("policy 1", p1);
    digest_of_label("policy 2", p2);
    digest_of_label("manifest 1", m1);
    digest_of_label("manifest 2", m2);
    const char *R = "r.example/drivers/nvme";
    cache_verdict a = verdict(1, 1700000000, "allowed by scope r.example"), out;
    cache_verdict d = verdict(0, 1700000001, "bundle 1: required email x not in certificate");
    assert_int_equal(cache_verdict_put(f->c, p1, R, "v1", m1, &a), CACHE_OK);
    assert_int_equal(cache_verdict_put(f->c, p1, R, "", m2, &d), CACHE_OK);
    assert_int_equal(get_verdict(f, p1, R, "v1", m1, &out), CACHE_OK);
    assert_true(out.allowed);
    assert_int_equal(out.decided_at, 1700000000);
    assert_string_equal(out.reason, a.reason);
    assert_int_equal(get_verdict(f, p1, R, "", m2, &out), CACHE_OK);
    assert_false(out.allowed);
    assert_string_equal(out.reason, d.reason);
    /* every part of the key counts: the tag moved to another manifest, the
     * same manifest asked by digest or by another tag, in another
     * repository, under another policy */
    assert_int_equal(get_verdict(f, p1, R, "v1", m2, &out), CACHE_NOTFOUND);
    assert_int_equal(get_verdict(f, p1, R, "", m1, &out), CACHE_NOTFOUND);
    assert_int_equal(get_verdict(f, p1, R, "v2", m1, &out), CACHE_NOTFOUND);
    assert_int_equal(get_verdict(f, p1, "r.example/drivers/nvm", "v1", m1, &out), CACHE_NOTFOUND);
    assert_int_equal(get_verdict(f, p1, "r.example/drivers/nvme\0v1", "", m1, &out),
                     CACHE_NOTFOUND);
    assert_int_equal(get_verdict(f, p2, R, "v1", m1, &out), CACHE_NOTFOUND);
    /* replaced, and kept across a reopen */
    assert_int_equal(cache_verdict_put(f->c, p1, R, "v1", m1, &d), CACHE_OK);
    reopen(f, 0);
    assert_int_equal(get_verdict(f, p1, R, "v1", m1, &out), CACHE_OK);
    assert_false(out.allowed);
    assert_int_equal(out.decided_at, 1700000001);
    /* a blob's verdict, tied to no repository */
    assert_int_equal(cache_verdict_put(f->c, p1, "", "", m1, &a), CACHE_OK);
    assert_int_equal(get_verdict(f, p1, "", "", m1, &out), CACHE_OK);
    assert_true(out.allowed);
}

static void test_verdict_limits(void **state)
{
    fixture *f = *state;
    uint8_t p[CACHE_DIGEST_LEN], m[CACHE_DIGEST_LEN];
    digest_of_label("policy", p);
    digest_of_label("manifest", m);
    cache_verdict v = {.allowed = 1, .decided_at = 5}, out;
    memset(v.reason, 'x', sizeof v.reason); /* no NUL: cut to the maximum */
    assert_int_equal(cache_verdict_put(f->c, p, "r/a", "t", m, &v), CACHE_OK);
    assert_int_equal(get_verdict(f, p, "r/a", "t", m, &out), CACHE_OK);
    assert_int_equal(strlen(out.reason), CACHE_VERDICT_TEXT_MAX - 1);
    char repo[600];
    memset(repo, 'a', sizeof repo - 1);
    repo[sizeof repo - 1] = '\0';
    assert_int_equal(cache_verdict_put(f->c, p, repo, "t", m, &v), CACHE_INVALID);
    assert_int_equal(get_verdict(f, p, repo, "t", m, &out), CACHE_INVALID);
    assert_int_equal(cache_verdict_put(NULL, p, "r/a", "t", m, &v), CACHE_INVALID);
    assert_int_equal(cache_verdict_put(f->c, p, NULL, "t", m, &v), CACHE_INVALID);
    assert_int_equal(cache_verdict_put(f->c, p, "r/a", NULL, m, &v), CACHE_INVALID);
    assert_int_equal(cache_verdict_put(f->c, p, "r/a", "t", m, NULL), CACHE_INVALID);
}

static int count_tags(void *arg, const char *tag, size_t len)
{
    (void)tag;
    (void)len;
    (*(int *)arg)++;
    return 0;
}

static void numbered_digest(int i, uint8_t out[CACHE_DIGEST_LEN])
{
    char label[32];
    snprintf(label, sizeof label, "manifest %d", i);
    digest_of_label(label, out);
}

static void test_verdict_prune(void **state)
{
    fixture *f = *state;
    uint8_t pol[3][CACHE_DIGEST_LEN], m[CACHE_DIGEST_LEN];
    memset(pol[0], 0x00, CACHE_DIGEST_LEN); /* sorts first */
    digest_of_label("kept policy", pol[1]);
    memset(pol[2], 0xff, CACHE_DIGEST_LEN); /* sorts last; has no successor prefix */
    cache_verdict v = verdict(1, 9, "ok"), out;
    char tag[16];
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < 700; i++) { /* more than one prune batch per policy */
            numbered_digest(i, m);
            snprintf(tag, sizeof tag, "t%d", i);
            assert_int_equal(cache_verdict_put(f->c, pol[p], "r/a", tag, m, &v), CACHE_OK);
        }
    assert_int_equal(cache_tag_put(f->c, "r/a", "latest", m, 1), CACHE_OK); /* not a verdict */
    uint64_t removed = 0;
    assert_int_equal(cache_verdict_prune(f->c, pol[1], &removed), CACHE_OK);
    assert_int_equal(removed, 1400);
    numbered_digest(699, m);
    assert_int_equal(get_verdict(f, pol[1], "r/a", "t699", m, &out), CACHE_OK);
    assert_int_equal(get_verdict(f, pol[0], "r/a", "t699", m, &out), CACHE_NOTFOUND);
    assert_int_equal(get_verdict(f, pol[2], "r/a", "t699", m, &out), CACHE_NOTFOUND);
    cache_snapshot *s = cache_snapshot_new(f->c);
    int tags = 0;
    assert_int_equal(cache_tag_list(s, "r/a", NULL, 0, count_tags, &tags), 1);
    cache_snapshot_unref(s);
    /* nothing left to remove; the kept policy's 700 stay */
    assert_int_equal(cache_verdict_prune(f->c, pol[1], &removed), CACHE_OK);
    assert_int_equal(removed, 0);
    assert_int_equal(cache_verdict_prune(f->c, pol[2], &removed), CACHE_OK);
    assert_int_equal(removed, 700);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_open_close),
        T(test_blob_multi_chunk),
        T(test_small_and_empty_blobs),
        T(test_append_rules),
        T(test_partial_blobs),
        T(test_delete),
        T(test_verify_detects_corruption),
        T(test_manifests),
        T(test_tags),
        T(test_referrers),
        T(test_snapshots_mvcc),
        T(test_map_growth),
        T(test_growth_blocked_by_snapshot),
        T(test_concurrent_writers_and_growth),
        T(test_stats),
        T(test_reopen_persistence),
        T(test_touch),
        T(test_refs),
        T(test_deltas),
        T(test_pins),
        T(test_counters),
        T(test_evict_lru),
        T(test_evict_manifest_rows),
        T(test_evict_deltas_first),
        T(test_evict_many),
        T(test_totals_rebuilt),
        T(test_old_store_opens),
        T(test_check),
        T(test_blob_abort),
        T(test_append_chunks),
        T(test_verdicts),
        T(test_verdict_limits),
        T(test_verdict_prune),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
