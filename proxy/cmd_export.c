/*
 * cmd_export.c — `sluice export`: cached artifacts as an OCI-layout tar.
 *
 *   sluice export [--cache DIR] [--config FILE] [--zstd]
 *                 [--deltas-from REF]... -o BUNDLE REF...
 *
 * REF is [REGISTRY/]REPO[:TAG] or [REGISTRY/]REPO@sha256:HEX (a tag defaults
 * to "latest"; no registry = the default upstream), resolved in the cache
 * the way the daemon keys repositories. The bundle holds, for every REF, the
 * manifest or index and everything it references (child manifests, configs,
 * layers), the cosign signatures (the "sha256-<hex>.sig" tag of each
 * manifest) and the referrers the cache knows, with their own objects, byte
 * for byte, so every digest is preserved.
 *
 * Format: a pax tar (optionally zstd-compressed) of an OCI image layout:
 * "oci-layout", "index.json", then "blobs/sha256/<hex>" for every object,
 * manifests first. index.json lists one descriptor per REF annotated with
 * org.opencontainers.image.ref.name = TAG (what skopeo's oci-archive:FILE:TAG
 * looks up) and io.containerd.image.name = REGISTRY/REPO:TAG (or @DIGEST;
 * what `sluice seed` takes the repository from), and likewise one per
 * signature and referrer.
 *
 * Deltas (Sluice-specific): with --deltas-from OLD, for every layer of the
 * exported artifacts and every layer of OLD (the version a site already
 * has) the cache's delta index is consulted; each delta found is added as
 * an extra blob (not referenced by any manifest, which the OCI layout
 * allows and other tools ignore) and listed in index.json's annotation
 * "dev.sluice.deltas.v1", whose value is a JSON array of
 * {"base": DIGEST, "target": DIGEST, "codec": NAME, "digest": DIGEST,
 * "size": N}. `sluice seed` stores, pins and indexes them.
 *
 * How it works. Everything to write is planned first under one cache
 * snapshot (manifests are parsed to find what they reference; every blob
 * must be COMPLETE with the size its descriptor says). Then the tar is
 * written with libarchive to a temporary file next to BUNDLE: manifests
 * from the manifests DB, blobs chunk by chunk with pread(2) from the cache's
 * data file at the chunks' offsets (a fresh snapshot every EXPORT_WINDOW
 * chunks, so a long export never holds map growth off), every object
 * hashed on the way and checked against its digest. On success the file is
 * fsync'd and renamed to BUNDLE; on any error it is removed.
 */
#include "cmd_export.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd_common.h"
#include "dl_libs.h"
#include "seed.h"

#define MAX_OLD 16
#define EXPORT_WINDOW 64 /* chunks read under one snapshot */
#define MAX_DEPTH 8

typedef struct {
    uint8_t digest[32];
    uint64_t size;
    int is_manifest;
} object;

typedef struct {
    cli_opts common;
    const char *output;
    int zstd;
    const char *old[MAX_OLD];
    size_t nold;
} export_opts;

typedef struct {
    config cfg;
    cache *c;
    cache_snapshot *s;
    object *objs;
    size_t nobjs, cap;
    seed_set seen; /* flags: 1 = object listed, 2 = index entry listed */
    json_t *entries;
    json_t *deltas;
    uint64_t total;
    unsigned images, attachments;
    int failed;
} exporter;

static void ex_error(exporter *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void ex_error(exporter *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sluice export: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    x->failed = 1;
}

static void digest_text(const uint8_t d[32], char out[VERIFY_DIGEST_TEXT_LEN])
{
    verify_digest_format(d, out);
}

/* ---- planning ---- */

/* Adds an object once; 1 when it was new. */
static int add_object(exporter *x, const uint8_t d[32], uint64_t size, int is_manifest)
{
    seed_blob *b = seed_set_get(&x->seen, d, 1);
    if (b->flags & 1)
        return 0;
    b->flags |= 1;
    if (x->nobjs == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 64;
        object *o = realloc(x->objs, cap * sizeof *o);
        if (o == NULL)
            abort();
        x->objs = o;
        x->cap = cap;
    }
    object *o = &x->objs[x->nobjs++];
    memcpy(o->digest, d, 32);
    o->size = size;
    o->is_manifest = is_manifest;
    x->total += size;
    return 1;
}

static int add_blob(exporter *x, json_t *desc, const char *owner)
{
    const char *ds = json_string_value(json_object_get(desc, "digest"));
    json_t *sz = json_object_get(desc, "size");
    uint8_t d[32];
    if (ds == NULL || verify_digest_parse(ds, strlen(ds), d) != VERIFY_OK || !json_is_integer(sz)) {
        ex_error(x, "%s: a descriptor without a valid sha256 digest and size", owner);
        return -1;
    }
    cache_blob_info info;
    if (cache_blob_stat(x->s, d, &info) != CACHE_OK || info.state != CACHE_BLOB_COMPLETE) {
        ex_error(x, "%s: blob %s is not in the cache (pull it through Sluice first)", owner, ds);
        return -1;
    }
    if (info.size != (uint64_t)json_integer_value(sz)) {
        ex_error(x, "%s: blob %s is cached with %llu bytes, its descriptor says %lld", owner, ds,
                 (unsigned long long)info.size, (long long)json_integer_value(sz));
        return -1;
    }
    add_object(x, d, info.size, 0);
    return 0;
}

static int add_manifest(exporter *x, const char *key, const uint8_t d[32], int attachments,
                        int depth);

/* Adds an index.json descriptor for manifest d. */
static void add_entry(exporter *x, const char *key, const char *tag, const uint8_t d[32])
{
    const char *mt;
    const void *body;
    size_t len;
    if (cache_manifest_get(x->s, d, &mt, &body, &len) != CACHE_OK)
        return;
    char text[VERIFY_DIGEST_TEXT_LEN], name[CLI_KEY_MAX + 200];
    digest_text(d, text);
    json_t *ann = json_object();
    if (tag != NULL) {
        json_object_set_new(ann, "org.opencontainers.image.ref.name", json_string(tag));
        snprintf(name, sizeof name, "%s:%s", key, tag);
    } else {
        snprintf(name, sizeof name, "%s@%s", key, text);
    }
    json_object_set_new(ann, "io.containerd.image.name", json_string(name));
    json_t *e =
        json_pack("{s:s, s:s, s:I}", "mediaType", mt, "digest", text, "size", (json_int_t)len);
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *at = json_object_get(root, "artifactType");
    if (json_is_string(at))
        json_object_set(e, "artifactType", at);
    json_decref(root);
    json_object_set_new(e, "annotations", ann);
    json_array_append_new(x->entries, e);
}

typedef struct {
    exporter *x;
    const char *key;
    int depth;
} referrer_walk;

static int on_referrer(void *arg, const uint8_t referrer[32], const char *json, size_t len)
{
    (void)json;
    (void)len;
    referrer_walk *w = arg;
    seed_blob *b = seed_set_get(&w->x->seen, referrer, 1);
    if (b->flags & 2)
        return 0;
    if (add_manifest(w->x, w->key, referrer, 0, w->depth) == 0) {
        b = seed_set_get(&w->x->seen, referrer, 1);
        b->flags |= 2;
        add_entry(w->x, w->key, NULL, referrer);
        w->x->attachments++;
    }
    return 0;
}

/* The cosign signature tag and the referrers of manifest d. */
static int add_attachments(exporter *x, const char *key, const uint8_t d[32], int depth)
{
    char text[VERIFY_DIGEST_TEXT_LEN], tag[80];
    uint8_t sig[32];
    digest_text(d, text);
    snprintf(tag, sizeof tag, "sha256-%s.sig", text + 7);
    if (cache_tag_get(x->s, key, tag, sig, NULL) == CACHE_OK &&
        !(seed_set_get(&x->seen, sig, 1)->flags & 2)) {
        if (add_manifest(x, key, sig, 0, depth) != 0)
            return -1;
        seed_set_get(&x->seen, sig, 1)->flags |= 2;
        add_entry(x, key, tag, sig);
        x->attachments++;
    }
    referrer_walk w = {.x = x, .key = key, .depth = depth};
    return cache_referrer_list(x->s, d, on_referrer, &w) < 0 ? -1 : 0;
}

static int add_children(exporter *x, const char *key, json_t *root, const char *owner, int depth)
{
    json_t *ms = json_object_get(root, "manifests");
    for (size_t i = 0; i < json_array_size(ms); i++) {
        const char *ds = json_string_value(json_object_get(json_array_get(ms, i), "digest"));
        uint8_t d[32];
        if (ds == NULL || verify_digest_parse(ds, strlen(ds), d) != VERIFY_OK) {
            ex_error(x, "%s: a child manifest without a valid sha256 digest", owner);
            return -1;
        }
        if (add_manifest(x, key, d, 1, depth + 1) != 0)
            return -1;
    }
    static const char *const arrays[] = {"layers", "blobs"};
    json_t *config = json_object_get(root, "config");
    if (json_is_object(config) && add_blob(x, config, owner) != 0)
        return -1;
    for (size_t a = 0; a < 2; a++) {
        json_t *arr = json_object_get(root, arrays[a]);
        for (size_t i = 0; i < json_array_size(arr); i++)
            if (add_blob(x, json_array_get(arr, i), owner) != 0)
                return -1;
    }
    return 0;
}

static int add_manifest(exporter *x, const char *key, const uint8_t d[32], int attachments,
                        int depth)
{
    char text[VERIFY_DIGEST_TEXT_LEN], owner[CLI_KEY_MAX + 100];
    digest_text(d, text);
    snprintf(owner, sizeof owner, "%s@%s", key, text);
    const char *mt;
    const void *body;
    size_t len;
    if (depth > MAX_DEPTH) {
        ex_error(x, "%s: manifests nested more than %d deep", owner, MAX_DEPTH);
        return -1;
    }
    if (cache_manifest_get(x->s, d, &mt, &body, &len) != CACHE_OK) {
        ex_error(x, "%s: manifest is not in the cache (pull it through Sluice first)", owner);
        return -1;
    }
    if (verify_digest_check(body, len, d) != VERIFY_OK) {
        ex_error(x, "%s: the cached manifest does not match its digest", owner);
        return -1;
    }
    if (!add_object(x, d, len, 1))
        return 0;
    json_t *root = json_loadb(body, len, 0, NULL);
    int rc = json_is_object(root) ? add_children(x, key, root, owner, depth) : -1;
    if (!json_is_object(root))
        ex_error(x, "%s: the cached manifest is not a JSON object", owner);
    json_decref(root);
    return rc == 0 && attachments ? add_attachments(x, key, d, depth) : rc;
}

/* Resolves REF to its key, tag and top manifest digest. */
static int resolve(exporter *x, const char *text, char key[CLI_KEY_MAX], char tag[OCI_TAG_MAX + 1],
                   uint8_t d[32])
{
    cli_ref r;
    char err[512];
    if (cli_parse_ref(text, &r, err, sizeof err) != 0 ||
        cli_repo_key(&x->cfg, r.registry, r.repository, key, CLI_KEY_MAX, err, sizeof err) != 0) {
        ex_error(x, "%s", err);
        return -1;
    }
    snprintf(tag, OCI_TAG_MAX + 1, "%s", r.tag[0] || r.has_digest ? r.tag : "latest");
    if (r.has_digest) {
        memcpy(d, r.digest, 32);
        return 0;
    }
    if (cache_tag_get(x->s, key, tag, d, NULL) != CACHE_OK) {
        ex_error(x, "%s: no tag %s of %s in the cache", text, tag, key);
        return -1;
    }
    return 0;
}

static int plan_ref(exporter *x, const char *text)
{
    char key[CLI_KEY_MAX], tag[OCI_TAG_MAX + 1];
    uint8_t d[32];
    if (resolve(x, text, key, tag, d) != 0 || add_manifest(x, key, d, 1, 0) != 0)
        return -1;
    seed_blob *b = seed_set_get(&x->seen, d, 1);
    if (!(b->flags & 2) || tag[0]) {
        b->flags |= 2;
        add_entry(x, key, tag[0] ? tag : NULL, d);
        x->images++;
    }
    return 0;
}

/* ---- deltas ---- */

typedef struct {
    exporter *x;
    const uint8_t *base, *target;
} delta_walk;

static int on_delta(void *arg, const char *codec, const uint8_t delta[32], uint64_t size)
{
    delta_walk *w = arg;
    cache_blob_info info;
    if (cache_blob_stat(w->x->s, delta, &info) != CACHE_OK || info.state != CACHE_BLOB_COMPLETE ||
        info.size != size)
        return 0; /* its bytes are gone: not offered */
    char b[VERIFY_DIGEST_TEXT_LEN], t[VERIFY_DIGEST_TEXT_LEN], dd[VERIFY_DIGEST_TEXT_LEN];
    digest_text(w->base, b);
    digest_text(w->target, t);
    digest_text(delta, dd);
    json_array_append_new(w->x->deltas,
                          json_pack("{s:s, s:s, s:s, s:s, s:I}", "base", b, "target", t, "codec",
                                    codec, "digest", dd, "size", (json_int_t)size));
    add_object(w->x, delta, size, 0);
    return 0;
}

/* The layers of OLD's manifests that the cache holds (bases). */
static void old_layers(exporter *x, const uint8_t d[32], seed_set *bases, int depth)
{
    const char *mt;
    const void *body;
    size_t len;
    if (depth > MAX_DEPTH || cache_manifest_get(x->s, d, &mt, &body, &len) != CACHE_OK)
        return;
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *ms = json_object_get(root, "manifests"), *ls = json_object_get(root, "layers");
    for (size_t i = 0; i < json_array_size(ms) + json_array_size(ls); i++) {
        int child = i < json_array_size(ms);
        json_t *desc = child ? json_array_get(ms, i) : json_array_get(ls, i - json_array_size(ms));
        const char *ds = json_string_value(json_object_get(desc, "digest"));
        uint8_t c[32];
        if (ds == NULL || verify_digest_parse(ds, strlen(ds), c) != VERIFY_OK)
            continue;
        if (child)
            old_layers(x, c, bases, depth + 1);
        else
            seed_set_get(bases, c, 1);
    }
    json_decref(root);
}

static int plan_deltas(exporter *x, const export_opts *o)
{
    seed_set bases = {0};
    for (size_t i = 0; i < o->nold; i++) {
        char key[CLI_KEY_MAX], tag[OCI_TAG_MAX + 1];
        uint8_t d[32];
        if (resolve(x, o->old[i], key, tag, d) != 0)
            break;
        old_layers(x, d, &bases, 0);
    }
    size_t n = x->nobjs; /* deltas added below are not targets */
    for (size_t t = 0; !x->failed && t < n; t++) {
        for (size_t k = 0; !x->objs[t].is_manifest && k < bases.cap; k++) {
            if (!bases.slots[k].used || !memcmp(bases.slots[k].digest, x->objs[t].digest, 32))
                continue;
            uint8_t target[32];
            memcpy(target, x->objs[t].digest, 32);
            delta_walk w = {.x = x, .base = bases.slots[k].digest, .target = target};
            cache_delta_list(x->s, w.base, target, on_delta, &w);
        }
    }
    seed_set_free(&bases);
    return x->failed ? -1 : 0;
}

/* ---- writing ---- */

static int write_header(exporter *x, struct archive *a, const char *name, int64_t size)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    int dir = size < 0;
    archive_entry_set_filetype(e, dir ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e, dir ? 0755 : 0644);
    archive_entry_set_size(e, dir ? 0 : size);
    archive_entry_set_mtime(e, 0, 0);
    int rc = archive_write_header(a, e);
    archive_entry_free(e);
    if (rc != ARCHIVE_OK)
        ex_error(x, "writing %s: %s", name, archive_error_string(a));
    return rc == ARCHIVE_OK ? 0 : -1;
}

static int write_data(exporter *x, struct archive *a, const void *p, size_t n, const char *name)
{
    if (n > 0 && archive_write_data(a, p, n) != (la_ssize_t)n) {
        ex_error(x, "writing %s: %s", name, archive_error_string(a));
        return -1;
    }
    return 0;
}

static int write_file(exporter *x, struct archive *a, const char *name, const void *p, size_t n)
{
    return write_header(x, a, name, (int64_t)n) == 0 ? write_data(x, a, p, n, name) : -1;
}

static int write_manifest(exporter *x, struct archive *a, const object *o, const char *name)
{
    cache_snapshot *s = cache_snapshot_new(x->c);
    const char *mt;
    const void *body;
    size_t len;
    int rc = -1;
    if (s == NULL || cache_manifest_get(s, o->digest, &mt, &body, &len) != CACHE_OK)
        ex_error(x, "%s: the manifest left the cache while exporting", name);
    else if (verify_digest_check(body, len, o->digest) != VERIFY_OK)
        ex_error(x, "%s: the cached manifest does not match its digest", name);
    else
        rc = write_file(x, a, name, body, len);
    cache_snapshot_unref(s);
    return rc;
}

/* Copies chunks [*next, *next + EXPORT_WINDOW) of a blob under one snapshot. */
static int copy_window(exporter *x, struct archive *a, const object *o, uint32_t *next,
                       uint8_t *buf, verify_hasher *h, const char *name, cli_progress *p)
{
    cache_snapshot *s = cache_snapshot_new(x->c);
    cache_blob_info info;
    if (s == NULL || cache_blob_stat(s, o->digest, &info) != CACHE_OK || info.size != o->size) {
        cache_snapshot_unref(s);
        ex_error(x, "%s: the blob left the cache while exporting", name);
        return -1;
    }
    int rc = 0;
    for (uint32_t end = *next + EXPORT_WINDOW; rc == 0 && *next < info.chunks && *next < end;
         (*next)++) {
        const void *ptr;
        size_t len;
        uint64_t off;
        rc = cache_blob_chunk(s, o->digest, *next, &ptr, &len, &off) == CACHE_OK &&
                     pread(cache_data_fd(x->c), buf, len, (off_t)off) == (ssize_t)len
                 ? 0
                 : -1;
        if (rc != 0) {
            ex_error(x, "%s: cannot read chunk %u from the cache", name, *next);
            break;
        }
        verify_hasher_update(h, buf, len);
        rc = write_data(x, a, buf, len, name);
        cli_progress_set(p, p->done + len);
    }
    cache_snapshot_unref(s);
    return rc;
}

static int write_blob(exporter *x, struct archive *a, const object *o, const char *name,
                      uint8_t *buf, verify_hasher *h, cli_progress *p)
{
    if (write_header(x, a, name, (int64_t)o->size) != 0)
        return -1;
    uint32_t chunks = (uint32_t)((o->size + CACHE_CHUNK_SIZE - 1) / CACHE_CHUNK_SIZE);
    uint32_t next = 0;
    verify_hasher_reset(h);
    while (next < chunks)
        if (copy_window(x, a, o, &next, buf, h, name, p) != 0)
            return -1;
    uint8_t got[32];
    verify_hasher_final(h, got);
    if (memcmp(got, o->digest, 32) != 0) {
        ex_error(x,
                 "%s: the cached blob does not match its digest (not exported; the daemon "
                 "evicts and refetches it)",
                 name);
        return -1;
    }
    return 0;
}

static char *index_json(exporter *x)
{
    json_t *idx = json_pack("{s:i, s:s, s:O}", "schemaVersion", 2, "mediaType",
                            "application/vnd.oci.image.index.v1+json", "manifests", x->entries);
    if (json_array_size(x->deltas) > 0) {
        char *d = json_dumps(x->deltas, JSON_COMPACT);
        json_object_set_new(idx, "annotations",
                            json_pack("{s:s}", SEED_DELTAS_ANNOTATION, d ? d : "[]"));
        free(d);
    }
    char *text = json_dumps(idx, JSON_COMPACT);
    json_decref(idx);
    return text;
}

static int write_objects(exporter *x, struct archive *a, const char *label)
{
    static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
    char *index = index_json(x);
    int rc = index ? 0 : -1;
    if (rc == 0)
        rc = write_file(x, a, "oci-layout", layout, strlen(layout));
    if (rc == 0)
        rc = write_file(x, a, "index.json", index, strlen(index));
    free(index);
    if (rc == 0)
        rc = write_header(x, a, "blobs/", -1);
    if (rc == 0)
        rc = write_header(x, a, "blobs/sha256/", -1);
    uint8_t *buf = malloc(CACHE_CHUNK_SIZE);
    verify_hasher *h = verify_hasher_new();
    cli_progress p;
    cli_progress_start(&p, label, x->total);
    for (int manifests = 1; manifests >= 0; manifests--) { /* manifests first */
        for (size_t i = 0; rc == 0 && buf && h && i < x->nobjs; i++) {
            char name[96];
            if (x->objs[i].is_manifest != manifests)
                continue;
            seed_blob_path(x->objs[i].digest, name);
            rc = manifests ? write_manifest(x, a, &x->objs[i], name)
                           : write_blob(x, a, &x->objs[i], name, buf, h, &p);
        }
    }
    cli_progress_end(&p);
    if (buf == NULL || h == NULL)
        rc = -1;
    free(buf);
    verify_hasher_free(h);
    return rc;
}

static int write_bundle(exporter *x, const export_opts *o, int fd)
{
    struct archive *a = archive_write_new();
    int rc = a && archive_write_set_format_pax_restricted(a) == ARCHIVE_OK ? 0 : -1;
    if (rc == 0 && o->zstd && archive_write_add_filter_zstd(a) != ARCHIVE_OK)
        rc = -1;
    if (rc == 0 && archive_write_open_fd(a, fd) != ARCHIVE_OK)
        rc = -1;
    if (rc != 0)
        ex_error(x, "%s: %s", o->output,
                 a ? archive_error_string(a) : dl_archive_error("out of memory"));
    if (rc == 0)
        rc = write_objects(x, a, o->output);
    if (a != NULL && archive_write_close(a) != ARCHIVE_OK && rc == 0) {
        ex_error(x, "%s: %s", o->output, archive_error_string(a));
        rc = -1;
    }
    archive_write_free(a);
    if (rc == 0 && fsync(fd) != 0) {
        ex_error(x, "%s: fsync: %s", o->output, strerror(errno));
        rc = -1;
    }
    return rc;
}

/* Writes to a temporary file next to the output and renames it. */
static int write_output(exporter *x, const export_opts *o)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", o->output) >= sizeof tmp) {
        ex_error(x, "%s: path too long", o->output);
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        ex_error(x, "%s: %s", o->output, strerror(errno));
        return -1;
    }
    int rc = write_bundle(x, o, fd);
    if (close(fd) != 0 && rc == 0)
        rc = -1;
    if (rc == 0 && rename(tmp, o->output) != 0) {
        ex_error(x, "%s: %s", o->output, strerror(errno));
        rc = -1;
    }
    if (rc != 0)
        unlink(tmp);
    return rc;
}

/* ---- command line ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sluice export [--cache DIR] [--config FILE] [--zstd] [--deltas-from REF]...\n"
            "                     -o BUNDLE REF...\n"
            "REF: [REGISTRY/]REPO[:TAG] or [REGISTRY/]REPO@sha256:HEX, as cached.\n"
            "Writes an OCI-layout tar with the artifacts, their signatures and referrers\n"
            "(and deltas from the versions named by --deltas-from) for `sluice seed`.\n");
}

static int parse_args(int argc, char **argv, export_opts *o)
{
    static const struct option opts[] = {{"cache", required_argument, NULL, 'c'},
                                         {"config", required_argument, NULL, 'f'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"zstd", no_argument, NULL, 'z'},
                                         {"deltas-from", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    *o = (export_opts){.common = {.cmd = "export"}};
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        if (opt == 'c')
            o->common.cache_dir = optarg;
        else if (opt == 'f')
            o->common.config_path = optarg;
        else if (opt == 'o')
            o->output = optarg;
        else if (opt == 'z')
            o->zstd = 1;
        else if (opt == 'd' && o->nold < MAX_OLD)
            o->old[o->nold++] = optarg;
        else if (opt == 'h')
            return usage(stdout), 1;
        else
            return usage(stderr), 2;
    }
    if (o->output == NULL || optind >= argc) {
        fprintf(stderr, "sluice export: %s\n",
                o->output ? "no REF given" : "-o BUNDLE is required");
        return usage(stderr), 2;
    }
    return 0;
}

static int plan(exporter *x, const export_opts *o, int argc, char **argv)
{
    x->s = cache_snapshot_new(x->c);
    if (x->s == NULL) {
        ex_error(x, "cannot read the cache");
        return -1;
    }
    for (int i = optind; i < argc; i++)
        plan_ref(x, argv[i]);
    if (!x->failed && o->nold > 0)
        plan_deltas(x, o);
    cache_snapshot_unref(x->s);
    x->s = NULL;
    return x->failed ? -1 : 0;
}

int cmd_export(int argc, char **argv)
{
    export_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    exporter x = {.entries = json_array(), .deltas = json_array()};
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    rc = 2;
    if (cli_load_config(&o.common, &x.cfg) == 0 &&
        (x.c = cli_open_cache(&o.common, &x.cfg, 0)) != NULL) {
        rc = plan(&x, &o, argc, argv) == 0 && write_output(&x, &o) == 0 ? 0 : 1;
        cache_close(x.c);
    }
    if (rc == 0) {
        char size[32];
        cli_format_size(x.total, size);
        printf("%s: %u artifacts, %u signatures/referrers, %zu deltas, %zu objects (%s); "
               "%.1f s\n",
               o.output, x.images, x.attachments, json_array_size(x.deltas), x.nobjs, size,
               cli_seconds_since(&start));
    }
    json_decref(x.entries);
    json_decref(x.deltas);
    free(x.objs);
    seed_set_free(&x.seen);
    config_free(&x.cfg);
    return rc;
}
