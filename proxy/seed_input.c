/*
 * seed_input.c — where `sluice seed` gets bytes from (see seed.h): an OCI
 * layout directory, or a tar archive of one read with libarchive.
 *
 * How it works.
 *   Blobs are written through the cache's chunked blob API: cache_blob_begin,
 *   then SEED_BATCH bytes (8 chunks of CACHE_CHUNK_SIZE) per write
 *   transaction with cache_blob_append_chunks, hashed with verify_hasher as
 *   they pass, then cache_blob_complete only if the digest and the size
 *   match; otherwise the PARTIAL blob is deleted. The appends run on a
 *   committer thread (seed_append.h) while this thread reads and hashes the
 *   next batch, so reading, hashing and the commits' fsyncs overlap. Memory
 *   is two batch buffers whatever the blob size; a kill loses at most the
 *   batches not yet committed (the PARTIAL blob is restarted next run). A PARTIAL blob met on the
 * way (a crash of an earlier run, or an interrupted daemon transfer) is restarted from nothing, as
 * the daemon does; a blob already COMPLETE is not read again. Directory: oci-layout and index.json
 * are read into memory; blobs are read from blobs/sha256/<hex> (opened relative to that directory,
 * with O_NOFOLLOW so a symlink cannot point elsewhere) only when an entry being imported needs
 * them. A blob missing from the directory but already in the cache is fine (an incremental layout).
 *   Tar: one pass over the archive (libarchive detects gzip, zstd, xz, ...
 *   and plain tar). Entry names are checked against the layout grammar:
 *   "oci-layout", "index.json", "blobs/", "blobs/sha256/" and
 *   "blobs/sha256/<64 lowercase hex>", optionally under "./"; anything else
 *   (absolute paths, "..", other files, links, devices) is reported and
 *   skipped, never written anywhere. Every blob entry is stored and
 *   verified as it streams; the index is interpreted afterwards
 *   (seed_layout.c), which reads manifests back from the cache. A read
 *   error (corrupt compression, truncation) ends the stream: what was
 *   verified so far stays usable, the blob being read is dropped.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dl_libs.h"
#include "seed.h"
#include "seed_append.h"

#define LAYOUT_FILE_MAX 4096 /* oci-layout */
#define TAR_BLOCK (1u << 20)

/* ---- messages ---- */

static void vreport(seed_ctx *x, const char *fmt, va_list ap)
{
    cli_progress_clear(&x->progress);
    fprintf(stderr, "sluice seed: %s: ", x->input);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void seed_error(seed_ctx *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(x, fmt, ap);
    va_end(ap);
    x->errors++;
}

void seed_note(seed_ctx *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(x, fmt, ap);
    va_end(ap);
}

void seed_blob_path(const uint8_t digest[32], char out[96])
{
    char text[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(digest, text);
    snprintf(out, 96, "blobs/sha256/%s", text + 7);
}

/* ---- the digest set (open addressing; digests are uniformly random) ---- */

static size_t slot_of(const uint8_t d[32], size_t cap)
{
    uint64_t h;
    memcpy(&h, d, sizeof h);
    return (size_t)(h & (cap - 1));
}

static int set_grow(seed_set *s)
{
    size_t cap = s->cap ? s->cap * 2 : 256;
    seed_blob *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->slots[i].used)
            continue;
        size_t j = slot_of(s->slots[i].digest, cap);
        while (slots[j].used)
            j = (j + 1) & (cap - 1);
        slots[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

seed_blob *seed_set_get(seed_set *s, const uint8_t digest[32], int create)
{
    if (create && (s->n + 1) * 2 > s->cap && set_grow(s) != 0)
        abort(); /* out of memory for a few bytes per object */
    if (s->cap == 0)
        return NULL;
    size_t i = slot_of(digest, s->cap);
    for (; s->slots[i].used; i = (i + 1) & (s->cap - 1))
        if (memcmp(s->slots[i].digest, digest, 32) == 0)
            return &s->slots[i];
    if (!create)
        return NULL;
    seed_blob *b = &s->slots[i];
    memset(b, 0, sizeof *b);
    memcpy(b->digest, digest, 32);
    b->used = 1;
    s->n++;
    return b;
}

void seed_set_free(seed_set *s)
{
    free(s->slots);
    *s = (seed_set){0};
}

/* ---- writing one blob through the cache ---- */

/* Begins a blob; a PARTIAL one with chunks is restarted. 1 when the blob is
 * already COMPLETE, 0 when begun, -1 on error. */
static int blob_begin(seed_ctx *x, const uint8_t digest[32], const char *what)
{
    int complete = 0;
    cache_status st = cache_blob_begin(x->c, digest, &complete);
    cache_snapshot *s = st == CACHE_OK && !complete ? cache_snapshot_new(x->c) : NULL;
    cache_blob_info info;
    if (s != NULL && cache_blob_stat(s, digest, &info) == CACHE_OK && info.size > 0) {
        cache_snapshot_unref(s);
        s = NULL;
        st = cache_blob_abort(x->c, digest);
        if (st == CACHE_OK || st == CACHE_NOTFOUND)
            st = cache_blob_begin(x->c, digest, &complete);
    }
    cache_snapshot_unref(s);
    if (st != CACHE_OK) {
        seed_error(x, "%s: cannot store it: %s", what, cache_strerror(st));
        return -1;
    }
    return complete;
}

typedef struct {
    uint8_t *buf;   /* the batch being filled */
    uint32_t index; /* its first chunk */
    size_t fill;    /* bytes in buf */
    uint64_t total;
} blob_writer;

/* Hashes the batch and queues it: whole chunks, or the blob's last bytes. */
static int writer_flush(seed_ctx *x, const uint8_t digest[32], blob_writer *w, const char *what)
{
    if (w->fill == 0)
        return 0;
    verify_hasher_update(x->hasher, w->buf, w->fill);
    cache_status st = seed_appender_submit(x->ap, digest, w->index, w->fill);
    if (st != CACHE_OK) {
        seed_error(x, "%s: cannot store it: %s", what, cache_strerror(st));
        return -1;
    }
    w->buf = seed_appender_buf(x->ap);
    w->index += (uint32_t)((w->fill + CACHE_CHUNK_SIZE - 1) / CACHE_CHUNK_SIZE);
    w->total += w->fill;
    w->fill = 0;
    return 0;
}

/* Waits for the last batch; 0 or -1 (reported). */
static int writer_drain(seed_ctx *x, const char *what)
{
    cache_status st = seed_appender_wait(x->ap);
    if (st != CACHE_OK)
        seed_error(x, "%s: cannot store it: %s", what, cache_strerror(st));
    return st == CACHE_OK ? 0 : -1;
}

/* Drops a blob whose writing failed. */
static void writer_abort(seed_ctx *x, const uint8_t digest[32])
{
    seed_appender_wait(x->ap);
    cache_blob_abort(x->c, digest);
    verify_hasher_reset(x->hasher);
}

/* Checks digest and size of what was appended and completes the blob, or
 * deletes it. 0 or -1 (reported). */
static int blob_finish(seed_ctx *x, const uint8_t digest[32], uint64_t total, int64_t expect,
                       const char *what)
{
    if (writer_drain(x, what) != 0) {
        writer_abort(x, digest);
        return -1;
    }
    uint8_t got[32];
    verify_hasher_final(x->hasher, got);
    verify_hasher_reset(x->hasher);
    char text[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(got, text);
    int rc = -1;
    if (memcmp(got, digest, 32) != 0)
        seed_error(x, "%s: content does not match its digest (it hashes to %s)", what, text);
    else if (expect >= 0 && total != (uint64_t)expect)
        seed_error(x, "%s: %llu bytes, but its descriptor says %lld", what,
                   (unsigned long long)total, (long long)expect);
    else if (cache_blob_complete(x->c, digest, total) != CACHE_OK)
        seed_error(x, "%s: cannot complete it in the cache", what);
    else
        rc = 0;
    if (rc != 0)
        cache_blob_abort(x->c, digest);
    return rc;
}

static void count_new(seed_ctx *x, seed_blob *b, uint64_t size)
{
    b->flags |= SB_NEW | SB_READY;
    b->size = size;
    x->blobs_new++;
    x->bytes_new += size;
}

/* ---- reading back from the cache ---- */

static int copy_from_cache(cache_snapshot *s, const uint8_t d[32], size_t max, uint8_t **buf,
                           size_t *len)
{
    cache_blob_info info;
    const char *mt;
    const void *body;
    size_t n;
    if (cache_manifest_get(s, d, &mt, &body, &n) == CACHE_OK) {
        if (n > max || (*buf = malloc(n ? n : 1)) == NULL)
            return -1;
        memcpy(*buf, body, n);
        *len = n;
        return 0;
    }
    if (cache_blob_stat(s, d, &info) != CACHE_OK || info.state != CACHE_BLOB_COMPLETE)
        return 1;
    if (info.size > max || (*buf = malloc(info.size ? info.size : 1)) == NULL)
        return -1;
    size_t off = 0;
    for (uint32_t i = 0; i < info.chunks; i++) {
        const void *p;
        if (cache_blob_chunk(s, d, i, &p, &n, NULL) != CACHE_OK || off + n > info.size) {
            free(*buf);
            return -1;
        }
        memcpy(*buf + off, p, n);
        off += n;
    }
    *len = off;
    return off == info.size ? 0 : -1;
}

/* 0 found and verified, 1 absent, -1 unusable. */
static int read_small_cached(seed_ctx *x, const uint8_t d[32], size_t max, uint8_t **buf,
                             size_t *len)
{
    cache_snapshot *s = cache_snapshot_new(x->c);
    if (s == NULL)
        return -1;
    int rc = copy_from_cache(s, d, max, buf, len);
    cache_snapshot_unref(s);
    if (rc == 0 && verify_digest_check(*buf, *len, d) != VERIFY_OK) {
        free(*buf);
        rc = -1;
    }
    return rc;
}

/* ---- directory input ---- */

/* Reads exactly n bytes (a regular file may return them in pieces). */
static int read_full(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Reads a whole small file relative to dirfd into a malloc'd, NUL-terminated
 * buffer; 0, 1 if absent, -1 on error (why says what). */
static int read_file_at(int dirfd, const char *name, size_t max, uint8_t **buf, size_t *len,
                        char *why, size_t whylen)
{
    *buf = NULL;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0) {
        snprintf(why, whylen, "%s", strerror(errno));
        return errno == ENOENT ? 1 : -1;
    }
    uint8_t *p = NULL;
    int rc = -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        snprintf(why, whylen, "not a regular file");
    else if ((uint64_t)st.st_size > max)
        snprintf(why, whylen, "larger than %zu bytes", max);
    else if ((p = malloc((size_t)st.st_size + 1)) == NULL)
        snprintf(why, whylen, "out of memory");
    else if (read_full(fd, p, (size_t)st.st_size) != 0)
        snprintf(why, whylen, "read error or short file");
    else
        rc = 0;
    close(fd);
    if (rc != 0) {
        free(p);
        return rc;
    }
    p[st.st_size] = 0;
    *buf = p;
    *len = (size_t)st.st_size;
    return 0;
}

/* oci-layout must be {"imageLayoutVersion": "1.x..."}. */
static int check_layout_file(seed_ctx *x, const char *text, size_t len)
{
    json_t *root = json_loadb(text, len, 0, NULL);
    const char *v = json_string_value(json_object_get(root, "imageLayoutVersion"));
    int ok = v != NULL && strncmp(v, "1.", 2) == 0;
    if (!ok)
        seed_error(x, "oci-layout: no imageLayoutVersion 1.x (not an OCI image layout)");
    json_decref(root);
    return ok ? 0 : -1;
}

int seed_open_dir(seed_ctx *x)
{
    int dfd = open(x->input, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        seed_error(x, "cannot open it: %s", strerror(errno));
        return -1;
    }
    char why[128];
    uint8_t *layout = NULL;
    size_t len = 0;
    int rc = read_file_at(dfd, "oci-layout", LAYOUT_FILE_MAX, &layout, &len, why, sizeof why);
    if (rc != 0)
        seed_error(x, "oci-layout: %s (not an OCI image layout)", why);
    else
        rc = check_layout_file(x, (const char *)layout, len);
    free(layout);
    x->have_layout_file = rc == 0;
    uint8_t *index = NULL;
    if (rc == 0 && (rc = read_file_at(dfd, "index.json", SEED_INDEX_MAX, &index, &x->index_len, why,
                                      sizeof why)) != 0)
        seed_error(x, "index.json: %s", why);
    x->index_json = (char *)index;
    x->blobs_fd = rc == 0 ? openat(dfd, "blobs/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    close(dfd);
    return rc == 0 ? 0 : -1;
}

/* Streams an open blob file into the cache. */
static int stream_file(seed_ctx *x, int fd, const uint8_t digest[32], uint64_t size,
                       const char *what)
{
    blob_writer w = {.buf = seed_appender_buf(x->ap)};
    for (;;) {
        ssize_t n = read(fd, w.buf + w.fill, SEED_BATCH - w.fill);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            seed_error(x, "%s: read error: %s", what, strerror(errno));
            writer_abort(x, digest);
            return -1;
        }
        w.fill += (size_t)n;
        int done = n == 0;
        if ((w.fill == SEED_BATCH || (done && w.fill > 0)) &&
            writer_flush(x, digest, &w, what) != 0) {
            writer_abort(x, digest);
            return -1;
        }
        cli_progress_set(&x->progress, x->progress_base + w.total);
        if (done)
            break;
    }
    return blob_finish(x, digest, w.total, (int64_t)size, what);
}

static int check_cached(seed_ctx *x, seed_blob *b, uint64_t size, const char *what);

static int store_from_dir(seed_ctx *x, seed_blob *b, uint64_t size, const char *what)
{
    char path[96];
    seed_blob_path(b->digest, path);
    errno = ENOENT; /* a layout without blobs/sha256 */
    int fd =
        x->blobs_fd >= 0 ? openat(x->blobs_fd, path + 13, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
    if (fd < 0) {
        seed_error(x, "%s: missing from the layout (%s)", what, strerror(errno));
        return -1;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    int rc = blob_begin(x, b->digest, what);
    if (rc == 0 && (rc = stream_file(x, fd, b->digest, size, what)) == 0)
        count_new(x, b, size);
    else if (rc == 1)
        rc = check_cached(x, b, size, what) == 0 ? 0 : -1; /* completed meanwhile */
    close(fd);
    return rc;
}

/* ---- tar input ---- */

typedef enum { E_SKIP_DIR, E_LAYOUT, E_INDEX, E_BLOB, E_BAD } entry_kind;

static int is_hex64(const char *s)
{
    size_t n = strspn(s, "0123456789abcdef");
    return n == 64 && s[64] == '\0';
}

/* Classifies an entry by name and type; for E_BAD, why says what is wrong. */
static entry_kind classify(const char *name, mode_t type, uint8_t digest[32], const char **why)
{
    while (name[0] == '.' && name[1] == '/')
        name += 2;
    *why = "not part of an OCI image layout";
    if (name[0] == '/' || strstr(name, "..") != NULL) {
        *why = "absolute path or \"..\" in the name (path traversal)";
        return E_BAD;
    }
    static const char *const dirs[] = {"", ".", "blobs", "blobs/", "blobs/sha256", "blobs/sha256/"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        if (strcmp(name, dirs[i]) == 0)
            return type == AE_IFDIR ? E_SKIP_DIR : E_BAD;
    if (type != AE_IFREG) {
        *why = "not a regular file (links and devices are refused)";
        return E_BAD;
    }
    if (strcmp(name, "oci-layout") == 0)
        return E_LAYOUT;
    if (strcmp(name, "index.json") == 0)
        return E_INDEX;
    if (strncmp(name, "blobs/sha256/", 13) == 0 && is_hex64(name + 13)) {
        char text[72];
        snprintf(text, sizeof text, "sha256:%s", name + 13);
        verify_digest_parse(text, strlen(text), digest);
        return E_BLOB;
    }
    if (strncmp(name, "blobs/", 6) == 0)
        *why = "not blobs/sha256/<64 lowercase hex digits> (only sha256 is supported)";
    return E_BAD;
}

/* Reads the current entry whole (small files). */
static int read_entry(seed_ctx *x, struct archive *a, const char *name, size_t max, char **out,
                      size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (buf == NULL) {
            seed_error(x, "%s: out of memory", name);
            return -1;
        }
        la_ssize_t r = archive_read_data(a, buf + n, cap - n);
        if (r < 0) {
            seed_error(x, "%s: %s", name, archive_error_string(a));
            free(buf);
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == cap) {
            if (cap >= max) {
                seed_error(x, "%s: larger than %zu bytes", name, max);
                free(buf);
                return -1;
            }
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (nb == NULL)
                free(buf);
            buf = nb;
        }
    }
    buf[n] = '\0';
    free(*out);
    *out = buf;
    *len = n;
    return 0;
}

static void tar_progress(seed_ctx *x, struct archive *a)
{
    cli_progress_set(&x->progress, (uint64_t)archive_filter_bytes(a, -1));
}

/* Streams the current entry's bytes into the begun blob: 0, -1 when the
 * blob is bad, -2 when the archive cannot be read further. */
static int stream_entry(seed_ctx *x, struct archive *a, const uint8_t digest[32], int64_t size,
                        const char *what)
{
    blob_writer w = {.buf = seed_appender_buf(x->ap)};
    int rc = -1;
    for (;;) {
        la_ssize_t n = archive_read_data(a, w.buf + w.fill, SEED_BATCH - w.fill);
        if (n < 0) {
            seed_error(x, "%s: %s", what, archive_error_string(a));
            rc = -2;
            break;
        }
        w.fill += (size_t)n;
        if ((w.fill == SEED_BATCH || (n == 0 && w.fill > 0)) &&
            writer_flush(x, digest, &w, what) != 0)
            break;
        tar_progress(x, a);
        if (n == 0)
            return blob_finish(x, digest, w.total, size, what);
    }
    writer_abort(x, digest);
    return rc;
}

/* 1 when digest is a manifest the cache already holds. */
static int manifest_stored(seed_ctx *x, const uint8_t digest[32])
{
    cache_snapshot *s = cache_snapshot_new(x->c);
    const char *mt;
    const void *body;
    size_t len;
    int found = s != NULL && cache_manifest_get(s, digest, &mt, &body, &len) == CACHE_OK;
    cache_snapshot_unref(s);
    return found;
}

/* One blob entry. -1 only when the archive cannot be read further. */
static int tar_blob(seed_ctx *x, struct archive *a, struct archive_entry *e,
                    const uint8_t digest[32], const char *name)
{
    seed_blob *b = seed_set_get(&x->blobs, digest, 1);
    if (b->flags & (SB_SEEN | SB_BAD))
        return 0; /* a repeated entry: the first one counts */
    b->flags |= SB_SEEN;
    int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
    if (manifest_stored(x, digest))
        return 0; /* read from the manifests instead */
    int rc = blob_begin(x, digest, name);
    if (rc == 1)
        return 0; /* already cached: counted when an entry uses it */
    if (rc == 0)
        rc = stream_entry(x, a, digest, size, name);
    if (rc == 0) {
        count_new(x, b, (uint64_t)size);
        return 0;
    }
    b->flags |= SB_BAD;
    return rc == -2 ? -1 : 0;
}

static int tar_entry(seed_ctx *x, struct archive *a, struct archive_entry *e)
{
    const char *name = archive_entry_pathname(e);
    uint8_t digest[32];
    const char *why;
    size_t len;
    switch (classify(name ? name : "", archive_entry_filetype(e), digest, &why)) {
    case E_SKIP_DIR:
        return 0;
    case E_LAYOUT: {
        char *layout = NULL;
        int rc = read_entry(x, a, "oci-layout", LAYOUT_FILE_MAX, &layout, &len);
        if (rc == 0 && check_layout_file(x, layout, len) == 0)
            x->have_layout_file = 1;
        free(layout);
        return rc;
    }
    case E_INDEX:
        return read_entry(x, a, "index.json", SEED_INDEX_MAX, &x->index_json, &x->index_len);
    case E_BLOB:
        return tar_blob(x, a, e, digest, name);
    case E_BAD:
        break;
    }
    seed_error(x, "entry \"%s\": %s; skipped", name ? name : "", why);
    return 0;
}

static struct archive *tar_open(seed_ctx *x)
{
    struct archive *a = archive_read_new();
    if (a == NULL) {
        seed_error(x, "%s", dl_archive_error("out of memory"));
        return NULL;
    }
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    if (archive_read_open_filename(a, x->input, TAR_BLOCK) != ARCHIVE_OK) {
        seed_error(x, "cannot read it as a tar archive: %s", archive_error_string(a));
        archive_read_free(a);
        return NULL;
    }
    return a;
}

int seed_stream_tar(seed_ctx *x)
{
    struct archive *a = tar_open(x);
    if (a == NULL)
        return -1;
    struct archive_entry *e;
    int rc, stop = 0;
    while (!stop && (rc = archive_read_next_header(a, &e)) != ARCHIVE_EOF) {
        if (rc == ARCHIVE_WARN)
            seed_note(x, "warning: %s", archive_error_string(a));
        if (rc < ARCHIVE_WARN) {
            seed_error(x, "archive unreadable after %lld bytes: %s; the rest is ignored",
                       (long long)archive_filter_bytes(a, -1), archive_error_string(a));
            break;
        }
        stop = tar_entry(x, a, e) != 0;
        tar_progress(x, a);
    }
    archive_read_free(a);
    if (!x->have_layout_file)
        seed_error(x, "no oci-layout file in the archive (not an OCI image layout)");
    if (x->index_json == NULL)
        seed_error(x, "no index.json in the archive: nothing can be tagged or imported");
    return x->have_layout_file && x->index_json != NULL ? 0 : -1;
}

/* ---- what seed_layout.c calls ---- */

/* 0 when digest is COMPLETE in the cache with this size, 1 when it is not
 * there, -1 when it is there with another size (reported). */
static int check_cached(seed_ctx *x, seed_blob *b, uint64_t size, const char *what)
{
    cache_snapshot *s = cache_snapshot_new(x->c);
    cache_blob_info info;
    cache_status st = s != NULL ? cache_blob_stat(s, b->digest, &info) : CACHE_IO;
    cache_snapshot_unref(s);
    if (st != CACHE_OK || info.state != CACHE_BLOB_COMPLETE)
        return 1;
    if (info.size != size) {
        seed_error(x, "%s: stored with %llu bytes, but its descriptor says %llu", what,
                   (unsigned long long)info.size, (unsigned long long)size);
        b->flags |= SB_BAD;
        return -1;
    }
    if (!(b->flags & SB_NEW))
        x->blobs_cached++;
    b->flags |= SB_READY;
    b->size = size;
    return 0;
}

int seed_store_blob(seed_ctx *x, const uint8_t digest[32], uint64_t size, const char *what)
{
    seed_blob *b = seed_set_get(&x->blobs, digest, 1);
    if (b->flags & SB_READY)
        return b->size == size ? 0
                               : (seed_error(x, "%s: size %llu, but %llu elsewhere", what,
                                             (unsigned long long)size, (unsigned long long)b->size),
                                  -1);
    if (b->flags & SB_BAD)
        return -1; /* reported when it was read */
    int rc = check_cached(x, b, size, what);
    if (rc != 1)
        return rc;
    if (!x->is_dir) {
        seed_error(x, "%s: missing from the archive", what);
        return -1;
    }
    rc = store_from_dir(x, b, size, what);
    if (rc != 0)
        b->flags |= SB_BAD;
    return rc;
}

int seed_read_small(seed_ctx *x, const uint8_t digest[32], size_t max, uint8_t **buf, size_t *len,
                    const char *what)
{
    char path[96], why[128] = "";
    seed_blob *b = seed_set_get(&x->blobs, digest, 0);
    if (b != NULL && (b->flags & SB_BAD))
        return -1;
    int rc = 1;
    *buf = NULL;
    if (x->is_dir && x->blobs_fd >= 0) {
        seed_blob_path(digest, path);
        rc = read_file_at(x->blobs_fd, path + 13, max, buf, len, why, sizeof why);
        if (rc == 0 && verify_digest_check(*buf, *len, digest) != VERIFY_OK) {
            free(*buf);
            seed_error(x, "%s: content does not match its digest", what);
            return -1;
        }
    }
    if (rc == 1)
        rc = read_small_cached(x, digest, max, buf, len);
    if (rc == 1)
        seed_error(x, "%s: missing from the %s", what, x->is_dir ? "layout" : "archive");
    else if (rc < 0)
        seed_error(x, "%s: unreadable%s%s", what, why[0] ? ": " : "", why);
    return rc == 0 ? 0 : -1;
}

void seed_drop_unused(seed_ctx *x)
{
    for (size_t i = 0; i < x->blobs.cap; i++) {
        seed_blob *b = &x->blobs.slots[i];
        if (b->used && (b->flags & SB_NEW) && !(b->flags & SB_KEEP) &&
            cache_blob_delete(x->c, b->digest) == CACHE_OK) {
            x->blobs_new--;
            x->bytes_new -= b->size;
        }
    }
}
