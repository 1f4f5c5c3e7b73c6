/*
 * fetch_layout.c — OCI image layouts for `sluice fetch` (see fetch.h): the
 * output layout it writes and the layouts that hold what a device already
 * has.
 *
 * How it works. A layout is the directory of the OCI image spec
 * (image-layout.md): `oci-layout`, `index.json` and `blobs/sha256/<hex>`.
 * Writing: the directories are created as needed, `oci-layout` once, and
 * `index.json` is read, edited with jansson (one entry per ref.name) and
 * written back whole through cli_file's atomic output, so a reader never
 * sees half an index. Reading what a device holds: each entry of
 * `index.json` is an image manifest, or an index whose child manifests are
 * followed one level; each manifest blob present is read, checked against
 * its digest and parsed, and its config and layers whose blob files are
 * present become delta_layer records (title annotation, media type,
 * position, size, digest). The last entry of index.json is taken as the
 * newest (age 1), as tools append the version they fetched last; layouts
 * loaded earlier are newer than those loaded later.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_file.h"
#include "fetch.h"

/* ---- paths and presence ---- */

void fetch_blob_path(const char *dir, const uint8_t digest[32], char *out, size_t len)
{
    char text[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(digest, text);
    snprintf(out, len, "%s/blobs/sha256/%s", dir, text + 7);
}

int fetch_layout_has(const char *dir, const uint8_t digest[32], uint64_t size)
{
    char path[PATH_MAX];
    struct stat st;
    fetch_blob_path(dir, digest, path, sizeof path);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == size;
}

int fetch_layout_exists(const char *dir)
{
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/index.json", dir);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST)
        return 0;
    fprintf(stderr, "sluice fetch: cannot create %s: %s\n", path, strerror(errno));
    return -1;
}

/* Writes dir/name with text unless it exists. */
static int write_missing(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (access(path, F_OK) == 0)
        return 0;
    return cli_write_file(FETCH_CMD, path, text, strlen(text));
}

int fetch_layout_prepare(const char *dir)
{
    char path[PATH_MAX];
    if (make_dir(dir) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/blobs", dir);
    if (make_dir(path) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/blobs/sha256", dir);
    if (make_dir(path) != 0)
        return -1;
    if (write_missing(dir, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}") != 0)
        return -1;
    return write_missing(dir, "index.json",
                         "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX
                         "\",\"manifests\":[]}");
}

/* ---- descriptors ---- */

int fetch_parse_desc(json_t *d, uint8_t digest[32], uint64_t *size, const char **media_type,
                     const char **why)
{
    const char *mt = json_string_value(json_object_get(d, "mediaType"));
    const char *dg = json_string_value(json_object_get(d, "digest"));
    json_t *sz = json_object_get(d, "size");
    *why = NULL;
    if (!json_is_object(d))
        *why = "a descriptor is not a JSON object";
    else if (mt == NULL || *mt == '\0')
        *why = "a descriptor has no mediaType";
    else if (dg == NULL)
        *why = "a descriptor has no digest";
    else if (!json_is_integer(sz) || json_integer_value(sz) < 0)
        *why = "a descriptor has no valid size";
    else if (verify_digest_parse(dg, strlen(dg), digest) == VERIFY_DIGEST_UNSUPPORTED)
        *why = "a descriptor uses a digest algorithm other than sha256 (unsupported)";
    else if (verify_digest_parse(dg, strlen(dg), digest) != VERIFY_OK)
        *why = "a descriptor has a malformed digest";
    if (*why != NULL)
        return -1;
    *size = (uint64_t)json_integer_value(sz);
    *media_type = mt;
    return 0;
}

const char *fetch_manifest_kind(const char *mt, json_t *doc)
{
    if (mt != NULL && *mt != '\0') {
        if (!strcmp(mt, MT_OCI_MANIFEST) || !strcmp(mt, MT_DOCKER_MANIFEST))
            return "manifest";
        if (!strcmp(mt, MT_OCI_INDEX) || !strcmp(mt, MT_DOCKER_LIST))
            return "index";
        return NULL;
    }
    if (json_is_array(json_object_get(doc, "manifests")))
        return "index";
    if (json_is_object(json_object_get(doc, "config")) &&
        json_is_array(json_object_get(doc, "layers")))
        return "manifest";
    return NULL;
}

/* ---- index.json ---- */

static json_t *load_index(const char *dir, int *bad)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/index.json", dir);
    *bad = 0;
    if (access(path, F_OK) != 0)
        return NULL;
    json_error_t err;
    json_t *idx = json_load_file(path, 0, &err);
    if (idx == NULL || !json_is_array(json_object_get(idx, "manifests"))) {
        fprintf(stderr, "sluice fetch: %s: not an OCI index (%s)\n", path,
                idx == NULL ? err.text : "no manifests array");
        json_decref(idx);
        *bad = 1;
        return NULL;
    }
    return idx;
}

static const char *ref_name(json_t *entry)
{
    return json_string_value(json_object_get(json_object_get(entry, "annotations"), ANN_REF_NAME));
}

/* Removes the entries that the new one replaces. */
static void drop_replaced(json_t *list, json_t *desc, const char *tag)
{
    const char *digest = json_string_value(json_object_get(desc, "digest"));
    for (size_t i = json_array_size(list); i-- > 0;) {
        json_t *e = json_array_get(list, i);
        const char *name = ref_name(e);
        const char *d = json_string_value(json_object_get(e, "digest"));
        if (tag != NULL ? (name != NULL && strcmp(name, tag) == 0)
                        : (name == NULL && d != NULL && strcmp(d, digest) == 0))
            json_array_remove(list, i);
    }
}

static int save_index(const char *dir, json_t *idx)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/index.json", dir);
    char *text = json_dumps(idx, JSON_COMPACT);
    if (text == NULL) {
        fprintf(stderr, "sluice fetch: out of memory\n");
        return -1;
    }
    int rc = cli_write_file(FETCH_CMD, path, text, strlen(text));
    free(text);
    return rc;
}

int fetch_layout_name(const char *dir, json_t *desc, const char *tag)
{
    int bad;
    json_t *idx = load_index(dir, &bad);
    if (bad)
        return -1;
    if (idx == NULL)
        idx = json_pack("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX,
                        "manifests");
    json_t *entry = json_deep_copy(desc);
    if (idx == NULL || entry == NULL) {
        json_decref(idx);
        json_decref(entry);
        fprintf(stderr, "sluice fetch: out of memory\n");
        return -1;
    }
    if (tag != NULL)
        json_object_set_new(entry, "annotations", json_pack("{s:s}", ANN_REF_NAME, tag));
    json_t *list = json_object_get(idx, "manifests");
    drop_replaced(list, desc, tag);
    json_array_append_new(list, entry);
    int rc = save_index(dir, idx);
    json_decref(idx);
    return rc;
}

/* ---- what a device holds ---- */

static int grow(void **arr, void **dirs, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t cap2 = *cap ? *cap * 2 : 16;
    void *a = realloc(*arr, cap2 * size);
    if (a != NULL)
        *arr = a;
    void *d = a != NULL ? realloc(*dirs, cap2 * sizeof(char *)) : NULL;
    if (d != NULL)
        *dirs = d;
    if (a == NULL || d == NULL)
        return -1;
    *cap = cap2;
    return 0;
}

static int add_layer(fetch_history *h, int config, const delta_layer *l, const char *dir)
{
    delta_layer **arr = config ? &h->configs : &h->layers;
    const char ***dirs = config ? &h->config_dirs : &h->layer_dirs;
    size_t *n = config ? &h->nconfigs : &h->nlayers;
    size_t *cap = config ? &h->cap_configs : &h->cap_layers;
    if (grow((void **)arr, (void **)dirs, cap, *n, sizeof(delta_layer)) != 0)
        return -1;
    (*arr)[*n] = *l;
    (*dirs)[*n] = dir;
    (*n)++;
    return 0;
}

static int keep_doc(fetch_history *h, json_t *doc)
{
    if (h->ndocs == h->cap_docs) {
        size_t cap = h->cap_docs ? h->cap_docs * 2 : 16;
        json_t **d = realloc(h->docs, cap * sizeof *d);
        if (d == NULL)
            return -1;
        h->docs = d;
        h->cap_docs = cap;
    }
    h->docs[h->ndocs++] = doc;
    return 0;
}

/* A descriptor of a blob present in dir as a delta_layer; 0 if usable. */
static int held(const char *dir, json_t *d, uint32_t position, uint32_t age, delta_layer *l)
{
    const char *why;
    memset(l, 0, sizeof *l);
    if (fetch_parse_desc(d, l->digest, &l->size, &l->media_type, &why) != 0 ||
        !fetch_layout_has(dir, l->digest, l->size))
        return -1;
    l->title = json_string_value(json_object_get(json_object_get(d, "annotations"), ANN_TITLE));
    l->position = position;
    l->age = age;
    return 0;
}

/* Reads and parses a JSON blob of dir, checked against its digest; NULL if
 * it is absent, too large, altered or not JSON. */
static json_t *read_json_blob(const char *dir, const uint8_t digest[32], uint64_t size)
{
    char path[PATH_MAX];
    cli_mapped m;
    if (size > FETCH_MANIFEST_MAX || !fetch_layout_has(dir, digest, size))
        return NULL;
    fetch_blob_path(dir, digest, path, sizeof path);
    if (cli_map_file(FETCH_CMD, path, &m) != 0)
        return NULL;
    json_t *doc = NULL;
    if (verify_digest_check(m.p, m.len, digest) == VERIFY_OK)
        doc = json_loadb((const char *)m.p, m.len, 0, NULL);
    else
        fprintf(stderr, "sluice fetch: warning: %s does not match its digest; not used\n", path);
    cli_unmap_file(&m);
    return doc;
}

static int add_manifest(fetch_history *h, const char *dir, json_t *doc)
{
    uint32_t age = ++h->next_age;
    delta_layer l;
    if (keep_doc(h, doc) != 0) {
        json_decref(doc);
        return -1;
    }
    if (held(dir, json_object_get(doc, "config"), 0, age, &l) == 0 && add_layer(h, 1, &l, dir) != 0)
        return -1;
    json_t *layers = json_object_get(doc, "layers");
    for (size_t i = 0; i < json_array_size(layers); i++)
        if (held(dir, json_array_get(layers, i), (uint32_t)i, age, &l) == 0 &&
            add_layer(h, 0, &l, dir) != 0)
            return -1;
    return 0;
}

/* One entry of index.json (or of an index it names, at depth 1). */
static int add_entry(fetch_history *h, const char *dir, json_t *entry, int depth)
{
    uint8_t digest[32];
    uint64_t size;
    const char *mt, *why;
    if (fetch_parse_desc(entry, digest, &size, &mt, &why) != 0)
        return 0;
    json_t *doc = read_json_blob(dir, digest, size);
    const char *kind = doc != NULL ? fetch_manifest_kind(mt, doc) : NULL;
    if (kind != NULL && strcmp(kind, "manifest") == 0)
        return add_manifest(h, dir, doc);
    int rc = 0;
    json_t *children = json_object_get(doc, "manifests");
    for (size_t i = json_array_size(children); kind != NULL && depth == 0 && i-- > 0 && !rc;)
        rc = add_entry(h, dir, json_array_get(children, i), 1);
    json_decref(doc);
    return rc;
}

int fetch_history_load(fetch_history *h, const char *dir)
{
    int bad;
    json_t *idx = load_index(dir, &bad);
    json_t *list = json_object_get(idx, "manifests");
    int rc = 0;
    for (size_t i = json_array_size(list); i-- > 0 && rc == 0;)
        rc = add_entry(h, dir, json_array_get(list, i), 0);
    json_decref(idx);
    return rc;
}

void fetch_history_free(fetch_history *h)
{
    for (size_t i = 0; i < h->ndocs; i++)
        json_decref(h->docs[i]);
    free(h->docs);
    free(h->layers);
    free(h->configs);
    free(h->layer_dirs);
    free(h->config_dirs);
    memset(h, 0, sizeof *h);
}
