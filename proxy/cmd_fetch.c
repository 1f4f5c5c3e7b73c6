/*
 * cmd_fetch.c — `sluice fetch` (cmd_fetch.h): a device fetches an image or
 * artifact into an OCI layout, each blob as a delta from the version it
 * already holds where the server offers one, and reports what that saved.
 *
 * How it works.
 *  1. The reference URL/REPO:TAG or URL/REPO@sha256:... is split into the
 *     registry's base URL and an OCI name, tag and digest (oci.h grammar).
 *  2. The manifest is fetched with every manifest type in Accept; its
 *     SHA-256 must equal Docker-Content-Digest when the server sends one and
 *     the requested digest when the reference has one. From an index the
 *     entry for the running platform (or the only entry) is taken, or every
 *     entry with --all-platforms; each child is fetched by digest and
 *     checked the same way, and its size against its descriptor.
 *  3. The versions the device holds are read from the layouts --have and
 *     OUTDIR (fetch_layout.c) and delta_select_bases (delta.h) picks for each
 *     config and layer the earlier blob to use as its base: same title
 *     annotation, else same position and media type.
 *  4. Each blob is, in order of preference: already in OUTDIR (same name and
 *     size: fetch writes blob files only once verified); copied from --have
 *     while hashed; fetched as a delta; fetched whole. The delta request
 *     names the base both ways Sluice understands (RFC 3229 A-IM +
 *     If-None-Match, RFC 9842 Accept-Encoding: dcz + Available-Dictionary)
 *     and the largest zstd window this client decodes. A 226 response (or a
 *     200 with Content-Encoding: dcz) is collected in memory (at most the
 *     blob's size: a larger delta is pointless) and decoded by delta_decode
 *     against the mmapped base; any other 200 body is streamed as is. Either
 *     way the output is hashed as it is written to a temporary file next to
 *     its final name (cli_file.h), which it takes only when size and digest
 *     match. A delta that fails to decode or rebuilds wrong bytes is reported
 *     and the blob is fetched again whole, without delta headers.
 *  5. Only when every blob is in place are the manifests written and the
 *     image named in OUTDIR/index.json (org.opencontainers.image.ref.name =
 *     the tag), so OUTDIR never names an incomplete image; the table of
 *     bytes transferred per object and the summary go to stdout.
 */
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "cli_file.h"
#include "cmd_fetch.h"
#include "dl_libs.h"
#include "fetch.h"
#include "oci.h"

/* The largest zstd window this client decodes, announced to the server. */
#define WINDOW_LOG DELTA_ZSTD_MAX_WINDOW_LOG_DEFAULT
#define COPY_CHUNK DELTA_CHUNK

#if defined(__x86_64__)
#define HOST_ARCH "amd64"
#elif defined(__aarch64__)
#define HOST_ARCH "arm64"
#elif defined(__arm__)
#define HOST_ARCH "arm"
#elif defined(__i386__)
#define HOST_ARCH "386"
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_ARCH "ppc64le"
#elif defined(__s390x__)
#define HOST_ARCH "s390x"
#elif defined(__riscv) && __riscv_xlen == 64
#define HOST_ARCH "riscv64"
#else
#define HOST_ARCH "unknown"
#endif

/* ---- arguments and the reference ---- */

typedef struct {
    int insecure, all_platforms;
    const char *cacert, *have, *outdir, *ref;
} args;

typedef struct {
    char url[512]; /* scheme://host[:port] */
    char repo[OCI_NAME_MAX + 1];
    char tag[OCI_TAG_MAX + 1]; /* "" when none */
    int has_digest;
    uint8_t digest[32];
    char reference[VERIFY_DIGEST_TEXT_LEN + OCI_TAG_MAX]; /* what to ask for */
} reference;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: sluice fetch [--insecure] [--cacert FILE] [--have DIR] [--all-platforms]\n"
        "                    -o OUTDIR URL/REPO:TAG|URL/REPO@sha256:HEX\n"
        "\n"
        "  URL              http://HOST[:PORT] or https://HOST[:PORT] of a registry or a Sluice\n"
        "  -o, --output     the OCI image layout to write (created if missing)\n"
        "  --have DIR       an OCI layout holding the previous version: blobs are copied\n"
        "                   from it, and fetched as deltas from its layers\n"
        "  --all-platforms  from an index, fetch every platform (default: linux/" HOST_ARCH ",\n"
        "                   or the only one)\n"
        "  --insecure       do not verify the server's TLS certificate\n"
        "  --cacert FILE    CA bundle to verify the server's TLS certificate\n"
        "\n"
        "exit status: 0 fetched and verified, 1 transfer or verification failure, 2 usage\n");
}

static int parse_args(int argc, char **argv, args *a)
{
    static const struct option opts[] = {{"insecure", no_argument, NULL, 'k'},
                                         {"cacert", required_argument, NULL, 'C'},
                                         {"have", required_argument, NULL, 'H'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"all-platforms", no_argument, NULL, 'A'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'k':
            a->insecure = 1;
            break;
        case 'C':
            a->cacert = optarg;
            break;
        case 'H':
            a->have = optarg;
            break;
        case 'o':
            a->outdir = optarg;
            break;
        case 'A':
            a->all_platforms = 1;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (a->outdir == NULL || optind + 1 != argc) {
        fprintf(stderr, "sluice fetch: %s\n",
                a->outdir == NULL ? "-o OUTDIR is required" : "give exactly one reference");
        usage(stderr);
        return -1;
    }
    a->ref = argv[optind];
    return 0;
}

static int fail(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return -1;
}

/* The "http[s]://host[:port]" prefix; *rest points after its '/'. */
static int parse_url(const char *text, reference *r, const char **rest, char *err, size_t len)
{
    size_t scheme = strncmp(text, "http://", 7) == 0    ? 7
                    : strncmp(text, "https://", 8) == 0 ? 8
                                                        : 0;
    if (scheme == 0)
        return fail(err, len,
                    "'%s': expected URL/REPO:TAG or URL/REPO@sha256:HEX with URL "
                    "http://HOST[:PORT] or https://HOST[:PORT]",
                    text);
    const char *host = text + scheme, *slash = strchr(host, '/');
    if (slash == NULL || slash == host)
        return fail(err, len, "'%s': no host, or no repository after it", text);
    if (memchr(host, '@', (size_t)(slash - host)) || strpbrk(text, "?# "))
        return fail(err, len, "'%s': user names, spaces, queries and fragments are not allowed",
                    text);
    if ((size_t)(slash - text) >= sizeof r->url)
        return fail(err, len, "'%s': URL too long", text);
    snprintf(r->url, sizeof r->url, "%.*s", (int)(slash - text), text);
    *rest = slash + 1;
    return 0;
}

static int parse_reference(const char *text, reference *r, char *err, size_t len)
{
    memset(r, 0, sizeof *r);
    const char *name = NULL;
    if (parse_url(text, r, &name, err, len) != 0)
        return -1;
    const char *at = strchr(name, '@');
    size_t n = at != NULL ? (size_t)(at - name) : strlen(name);
    if (at != NULL && verify_digest_parse(at + 1, strlen(at + 1), r->digest) != VERIFY_OK)
        return fail(err, len, "'%s': '%s' is not a sha256 digest", text, at + 1);
    r->has_digest = at != NULL;
    const char *colon = memrchr(name, ':', n);
    if (colon != NULL) {
        size_t tl = n - (size_t)(colon + 1 - name);
        if (!oci_tag_valid(colon + 1, tl))
            return fail(err, len, "'%s': '%.*s' is not a valid tag", text, (int)tl, colon + 1);
        snprintf(r->tag, sizeof r->tag, "%.*s", (int)tl, colon + 1);
        n = (size_t)(colon - name);
    }
    if (!oci_name_valid(name, n))
        return fail(err, len, "'%s': '%.*s' is not a valid repository name", text, (int)n, name);
    if (colon == NULL && at == NULL)
        return fail(err, len, "'%s': no tag or digest (add :TAG or @sha256:HEX)", text);
    snprintf(r->repo, sizeof r->repo, "%.*s", (int)n, name);
    if (r->has_digest)
        snprintf(r->reference, sizeof r->reference, "%s", at + 1);
    else
        snprintf(r->reference, sizeof r->reference, "%s", r->tag);
    return 0;
}

/* ---- the run and its report ---- */

typedef struct {
    char digest[VERIFY_DIGEST_TEXT_LEN];
    const char *type;
    char name[64];
    uint64_t size, sent;
    char how[256];
} row;

typedef struct {
    const args *a;
    reference ref;
    fetch_http *http;
    fetch_history hist;
    row *rows;
    size_t nrows, caprows;
    unsigned deltas, fulls, locals, failures;
} run;

static void add_row(run *x, const uint8_t digest[32], const char *type, const char *name,
                    uint64_t size, uint64_t sent, const char *fmt, ...)
{
    if (x->nrows == x->caprows) {
        size_t cap = x->caprows ? x->caprows * 2 : 16;
        row *grown = realloc(x->rows, cap * sizeof *grown);
        if (grown == NULL) {
            fprintf(stderr, "sluice fetch: out of memory (report incomplete)\n");
            return;
        }
        x->rows = grown;
        x->caprows = cap;
    }
    row *r = &x->rows[x->nrows++];
    verify_digest_format(digest, r->digest);
    r->type = type;
    snprintf(r->name, sizeof r->name, "%s", name != NULL && *name ? name : "-");
    r->size = size;
    r->sent = sent;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->how, sizeof r->how, fmt, ap);
    va_end(ap);
}

static double percent(uint64_t part, uint64_t whole)
{
    return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

static void print_report(const run *x)
{
    uint64_t size = 0, sent = 0;
    printf("%-19s %-8s %-20s %12s %12s %7s  %s\n", "OBJECT", "TYPE", "NAME", "SIZE", "SENT",
           "SENT%", "HOW");
    for (size_t i = 0; i < x->nrows; i++) {
        const row *r = &x->rows[i];
        printf("%-19.19s %-8s %-20.20s %12llu %12llu %6.1f%%  %s\n", r->digest, r->type, r->name,
               (unsigned long long)r->size, (unsigned long long)r->sent, percent(r->sent, r->size),
               r->how);
        size += r->size;
        sent += r->sent;
    }
    printf(
        "total: %llu of %llu bytes transferred (%.1f%%); blobs: %u delta, %u whole, %u local%s\n",
        (unsigned long long)sent, (unsigned long long)size, percent(sent, size), x->deltas,
        x->fulls, x->locals, x->failures ? ", FAILED" : "");
    fflush(stdout);
}

/* ---- manifests ---- */

typedef struct {
    fetch_buf body;
    uint8_t digest[32];
    char media_type[128];
    const char *kind; /* "manifest" or "index" */
    json_t *doc;
    json_t *desc; /* how index.json names it (platform, artifactType) */
} manifest;

static const char *const manifest_headers[] = {
    "Accept: " MT_OCI_MANIFEST ", " MT_OCI_INDEX ", " MT_DOCKER_MANIFEST ", " MT_DOCKER_LIST, NULL};

static void manifest_free(manifest *m)
{
    fetch_buf_free(&m->body);
    json_decref(m->doc);
    json_decref(m->desc);
    memset(m, 0, sizeof *m);
}

/* The media type: the document's own, else a known Content-Type. */
static void media_type_of(manifest *m, const fetch_response *r)
{
    const char *own = json_string_value(json_object_get(m->doc, "mediaType"));
    char ct[sizeof r->content_type];
    snprintf(ct, sizeof ct, "%.*s", (int)strcspn(r->content_type, "; "), r->content_type);
    if (own != NULL)
        snprintf(m->media_type, sizeof m->media_type, "%s", own);
    else if (fetch_manifest_kind(ct, m->doc) != NULL)
        snprintf(m->media_type, sizeof m->media_type, "%s", ct);
    m->kind = fetch_manifest_kind(m->media_type, m->doc);
    if (m->kind != NULL && m->media_type[0] == '\0')
        snprintf(m->media_type, sizeof m->media_type, "%s",
                 strcmp(m->kind, "index") == 0 ? MT_OCI_INDEX : MT_OCI_MANIFEST);
}

/* Digest checks, then parsing. 0, or -1 after printing why. */
static int check_manifest(const char *what, const fetch_response *r, const uint8_t *want,
                          manifest *m)
{
    char got[VERIFY_DIGEST_TEXT_LEN], wanted[VERIFY_DIGEST_TEXT_LEN];
    verify_sha256(m->body.p, m->body.len, m->digest);
    verify_digest_format(m->digest, got);
    if (r->docker_digest[0] && strcmp(r->docker_digest, got) != 0) {
        fprintf(stderr,
                "sluice fetch: %s: verification failed: the server says %s, the manifest "
                "it sent hashes to %s\n",
                what, r->docker_digest, got);
        return -1;
    }
    if (want != NULL && memcmp(want, m->digest, 32) != 0) {
        verify_digest_format(want, wanted);
        fprintf(stderr,
                "sluice fetch: %s: verification failed: the manifest hashes to %s, not %s\n", what,
                got, wanted);
        return -1;
    }
    json_error_t err;
    m->doc = json_loadb((const char *)m->body.p, m->body.len, 0, &err);
    if (!json_is_object(m->doc)) {
        fprintf(stderr, "sluice fetch: %s: the manifest is not a JSON object (%s)\n", what,
                m->doc == NULL ? err.text : "another JSON value");
        return -1;
    }
    media_type_of(m, r);
    if (m->kind == NULL) {
        fprintf(stderr, "sluice fetch: %s: unsupported manifest type '%s'\n", what,
                m->media_type[0] ? m->media_type : r->content_type);
        return -1;
    }
    return 0;
}

/* GETs /v2/REPO/manifests/REF; want: the digest it must have, or NULL. */
static int get_manifest(run *x, const char *ref, const uint8_t *want, manifest *m)
{
    char path[1024], what[1024];
    fetch_response r;
    snprintf(path, sizeof path, "/v2/%s/manifests/%s", x->ref.repo, ref);
    snprintf(what, sizeof what, "%s/%s%s%s", x->ref.url, x->ref.repo, want ? "@" : ":", ref);
    m->body.limit = FETCH_MANIFEST_MAX;
    int rc = fetch_http_get(x->http, path, manifest_headers, fetch_sink_buf, &m->body, &r);
    if (rc != 0 || r.status != 200) {
        char why[700];
        if (r.aborted_by_sink)
            snprintf(why, sizeof why, "manifest larger than %u bytes", FETCH_MANIFEST_MAX);
        else
            fetch_http_describe(&r, &m->body, why, sizeof why);
        fprintf(stderr, "sluice fetch: %s: %s\n", what, why);
        return -1;
    }
    if (check_manifest(what, &r, want, m) != 0)
        return -1;
    add_row(x, m->digest, m->kind, NULL, m->body.len, r.received, "whole");
    return 0;
}

/* The descriptor index.json gets for m (from its index entry, if any). */
static int describe_manifest(manifest *m, json_t *entry)
{
    char digest[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(m->digest, digest);
    m->desc = json_pack("{s:s, s:s, s:I}", "mediaType", m->media_type, "digest", digest, "size",
                        (json_int_t)m->body.len);
    if (m->desc == NULL)
        return -1;
    json_t *platform = json_object_get(entry, "platform");
    json_t *type = json_object_get(m->doc, "artifactType");
    if (json_is_object(platform))
        json_object_set(m->desc, "platform", platform);
    if (json_is_string(type))
        json_object_set(m->desc, "artifactType", type);
    return 0;
}

/* ---- choosing from an index ---- */

static int platform_is(json_t *entry, const char *os, const char *arch)
{
    json_t *p = json_object_get(entry, "platform");
    const char *o = json_string_value(json_object_get(p, "os"));
    const char *a = json_string_value(json_object_get(p, "architecture"));
    return o != NULL && a != NULL && strcmp(o, os) == 0 && strcmp(a, arch) == 0;
}

static void list_platforms(json_t *list, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < json_array_size(list) && used < len; i++) {
        json_t *p = json_object_get(json_array_get(list, i), "platform");
        const char *o = json_string_value(json_object_get(p, "os"));
        const char *a = json_string_value(json_object_get(p, "architecture"));
        int w =
            snprintf(out + used, len - used, "%s%s/%s", i ? ", " : "", o ? o : "?", a ? a : "?");
        used += w > 0 ? (size_t)w : 0;
    }
}

/* The entries of index doc to fetch: a new array, or NULL after printing
 * why. */
static json_t *choose_entries(const run *x, json_t *doc)
{
    json_t *list = json_object_get(doc, "manifests");
    size_t n = json_array_size(list);
    if (n == 0) {
        fprintf(stderr, "sluice fetch: %s: the index lists no manifests\n", x->a->ref);
        return NULL;
    }
    if (x->a->all_platforms)
        return json_copy(list);
    for (size_t i = 0; i < n; i++)
        if (platform_is(json_array_get(list, i), "linux", HOST_ARCH))
            return json_pack("[O]", json_array_get(list, i));
    if (n == 1)
        return json_copy(list);
    char platforms[512];
    list_platforms(list, platforms, sizeof platforms);
    fprintf(stderr,
            "sluice fetch: %s: no linux/%s image in the index (it has %s); use "
            "--all-platforms to fetch them all\n",
            x->a->ref, HOST_ARCH, platforms);
    return NULL;
}

/* Fetches the image manifest an index entry names, checked against it. */
static int get_child(run *x, json_t *entry, manifest *m)
{
    uint8_t digest[32];
    uint64_t size;
    const char *mt, *why;
    char text[VERIFY_DIGEST_TEXT_LEN];
    if (fetch_parse_desc(entry, digest, &size, &mt, &why) != 0) {
        fprintf(stderr, "sluice fetch: %s: bad index entry: %s\n", x->a->ref, why);
        return -1;
    }
    verify_digest_format(digest, text);
    if (get_manifest(x, text, digest, m) != 0)
        return -1;
    if (m->body.len != size || strcmp(m->kind, "manifest") != 0) {
        fprintf(stderr, "sluice fetch: %s: %s\n", text,
                m->body.len != size ? "verification failed: size differs from the index entry"
                                    : "an index inside an index is not supported");
        return -1;
    }
    return describe_manifest(m, entry);
}

/* ---- the blobs to fetch ---- */

typedef struct {
    uint8_t digest[32];
    uint64_t size;
    const char *media_type, *title, *type;
    const delta_layer *base; /* NULL: no delta */
    const char *base_dir;
} blob;

typedef struct {
    blob *v;
    size_t n, cap;
} blob_list;

static int blob_listed(const blob_list *l, const uint8_t digest[32])
{
    for (size_t i = 0; i < l->n; i++)
        if (memcmp(l->v[i].digest, digest, 32) == 0)
            return 1;
    return 0;
}

/* Appends descriptor d (of manifest m) unless already listed; 0 or -1. */
static int add_blob(blob_list *l, json_t *d, const char *type, const char *where)
{
    blob b = {.type = type};
    const char *why;
    if (fetch_parse_desc(d, b.digest, &b.size, &b.media_type, &why) != 0) {
        fprintf(stderr, "sluice fetch: %s: %s\n", where, why);
        return -1;
    }
    if (blob_listed(l, b.digest))
        return 0;
    b.title = json_string_value(json_object_get(json_object_get(d, "annotations"), ANN_TITLE));
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        blob *grown = realloc(l->v, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        l->v = grown;
        l->cap = cap;
    }
    l->v[l->n++] = b;
    return 0;
}

static void as_layer(const blob *b, uint32_t position, delta_layer *l)
{
    memset(l, 0, sizeof *l);
    l->title = b->title;
    l->media_type = b->media_type;
    l->position = position;
    l->size = b->size;
    memcpy(l->digest, b->digest, 32);
}

/* Picks the base of blob b (at position) among the held layers or configs. */
static void choose_base(const run *x, blob *b, uint32_t position, int config)
{
    const fetch_history *h = &x->hist;
    delta_layer target;
    long pick = -1;
    as_layer(b, position, &target);
    if (config)
        delta_select_bases(&target, 1, h->configs, h->nconfigs, &pick);
    else
        delta_select_bases(&target, 1, h->layers, h->nlayers, &pick);
    if (pick < 0)
        return;
    b->base = config ? &h->configs[pick] : &h->layers[pick];
    b->base_dir = config ? h->config_dirs[pick] : h->layer_dirs[pick];
}

/* Lists the config and layers of image manifest m with their bases. */
static int plan_image(run *x, const manifest *m, blob_list *l)
{
    json_t *layers = json_object_get(m->doc, "layers");
    char where[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(m->digest, where);
    if (!json_is_array(layers)) {
        fprintf(stderr, "sluice fetch: %s: the manifest has no layers array\n", where);
        return -1;
    }
    size_t first = l->n;
    if (add_blob(l, json_object_get(m->doc, "config"), "config", where) != 0)
        return -1;
    if (l->n > first)
        choose_base(x, &l->v[first], 0, 1);
    for (size_t i = 0; i < json_array_size(layers); i++) {
        size_t before = l->n;
        if (add_blob(l, json_array_get(layers, i), "layer", where) != 0)
            return -1;
        if (l->n > before)
            choose_base(x, &l->v[before], (uint32_t)i, 0);
    }
    return 0;
}

/* ---- fetching one blob ---- */

enum { MODE_NONE, MODE_FULL, MODE_DELTA, MODE_ERROR };

typedef struct {
    run *x;
    const blob *b;
    char dest[PATH_MAX];
    cli_out out;
    int out_open;
    verify_hasher *hasher;
    uint64_t written;
    int asked_delta, mode;
    fetch_buf delta, err;
    char codec[64];
    char why[PATH_MAX + 256];
} download;

static int open_output(download *d)
{
    verify_hasher_reset(d->hasher);
    d->written = 0;
    if (cli_out_open(&d->out, FETCH_CMD, d->dest) != 0) {
        snprintf(d->why, sizeof d->why, "cannot create a temporary file in the output");
        return -1;
    }
    d->out_open = 1;
    return 0;
}

static void close_output(download *d)
{
    if (d->out_open)
        cli_out_abort(&d->out);
    d->out_open = 0;
}

/* Hashes and writes output bytes; a delta_write_fn. */
static int write_output(void *arg, const void *p, size_t n)
{
    download *d = arg;
    if (n > d->b->size - d->written) {
        snprintf(d->why, sizeof d->why, "more bytes than the %llu the manifest declares",
                 (unsigned long long)d->b->size);
        return -1;
    }
    verify_hasher_update(d->hasher, p, n);
    d->written += n;
    if (cli_out_write(&d->out, p, n) != 0) {
        snprintf(d->why, sizeof d->why, "writing %s: %s", d->out.tmp,
                 strerror(d->out.failed_errno));
        return -1;
    }
    return 0;
}

/* Size and digest checks, then the rename. 0 when the blob is in place. */
static int finish_output(download *d)
{
    uint8_t got[32];
    char text[VERIFY_DIGEST_TEXT_LEN];
    if (d->written != d->b->size) {
        snprintf(d->why, sizeof d->why, "got %llu bytes, the manifest declares %llu",
                 (unsigned long long)d->written, (unsigned long long)d->b->size);
        close_output(d);
        return -1;
    }
    verify_hasher_final(d->hasher, got);
    if (memcmp(got, d->b->digest, 32) != 0) {
        verify_digest_format(got, text);
        snprintf(d->why, sizeof d->why, "the bytes hash to %s", text);
        close_output(d);
        return -1;
    }
    d->out_open = 0;
    if (cli_out_commit(&d->out) != 0) {
        snprintf(d->why, sizeof d->why, "cannot write %s", d->dest);
        return -1;
    }
    return 0;
}

static int is_dcz(const fetch_response *r)
{
    return strcasecmp(r->content_encoding, "dcz") == 0;
}

static int decide(download *d, const fetch_response *r)
{
    if (d->asked_delta && (r->status == 226 || (r->status == 200 && is_dcz(r)))) {
        snprintf(d->codec, sizeof d->codec, "%s",
                 r->status != 226 ? "dcz"
                 : r->im[0]       ? r->im
                                  : "unnamed");
        d->delta.limit = d->b->size;
        return MODE_DELTA;
    }
    if (r->status == 200 && (!r->content_encoding[0] || !strcmp(r->content_encoding, "identity")))
        return open_output(d) == 0 ? MODE_FULL : MODE_ERROR;
    d->err.limit = FETCH_ERROR_MAX;
    return MODE_ERROR;
}

static int blob_sink(void *arg, const fetch_response *r, const void *p, size_t n)
{
    download *d = arg;
    if (d->mode == MODE_NONE)
        d->mode = decide(d, r);
    if (d->mode == MODE_FULL)
        return write_output(d, p, n);
    if (d->mode == MODE_DELTA) {
        if (fetch_buf_add(&d->delta, p, n) == 0)
            return 0;
        snprintf(d->why, sizeof d->why, "the delta is larger than the blob");
        return -1;
    }
    if (d->why[0])
        return -1;                /* the output could not be created */
    fetch_buf_add(&d->err, p, n); /* an error body: its start is enough */
    return 0;
}

/* The delta request headers for base digest `base` (storage in hdr). */
static void delta_headers(const uint8_t base[32], char hdr[3][128], const char *out[7])
{
    char text[VERIFY_DIGEST_TEXT_LEN];
    unsigned char b64[48];
    verify_digest_format(base, text);
    EVP_EncodeBlock(b64, base, 32);
    snprintf(hdr[0], 128, "If-None-Match: \"%s\"", text);
    snprintf(hdr[1], 128, "Available-Dictionary: :%s:", (const char *)b64);
    snprintf(hdr[2], 128, "Sluice-Zstd-Max-Window-Log: %d", WINDOW_LOG);
    out[0] = "A-IM: sluice-bsz, vcdiff";
    out[1] = hdr[0];
    out[2] = "Accept-Encoding: dcz";
    out[3] = hdr[1];
    out[4] = hdr[2];
    out[5] = NULL;
}

/* Rebuilds the blob from the collected delta and its base. */
static int apply_delta(download *d, const fetch_response *r)
{
    const delta_layer *base = d->b->base;
    char text[VERIFY_DIGEST_TEXT_LEN], quoted[VERIFY_DIGEST_TEXT_LEN + 2], path[PATH_MAX];
    verify_digest_format(base->digest, text);
    snprintf(quoted, sizeof quoted, "\"%s\"", text);
    if (r->status == 226 && r->delta_base[0] && strcmp(r->delta_base, quoted) != 0) {
        snprintf(d->why, sizeof d->why, "a delta from another base (%s)", r->delta_base);
        return -1;
    }
    cli_mapped m;
    fetch_blob_path(d->b->base_dir, base->digest, path, sizeof path);
    if (cli_map_file(FETCH_CMD, path, &m) != 0) {
        snprintf(d->why, sizeof d->why, "cannot read the base %s", path);
        return -1;
    }
    if (open_output(d) != 0) {
        cli_unmap_file(&m);
        return -1;
    }
    delta_options opt;
    delta_options_init(&opt);
    opt.base_sha256 = base->digest;
    opt.max_target = d->b->size;
    opt.zstd_max_window_log = WINDOW_LOG;
    delta_report rep;
    delta_status st =
        delta_decode(m.p, m.len, d->delta.p, d->delta.len, &opt, write_output, d, &rep);
    cli_unmap_file(&m);
    if (st == DELTA_OK)
        return finish_output(d);
    if (st != DELTA_ESINK || !d->why[0]) /* else write_output said why */
        snprintf(d->why, sizeof d->why, "%s", rep.msg[0] ? rep.msg : delta_strerror(st));
    close_output(d);
    return -1;
}

static void reset_download(download *d, int with_delta)
{
    close_output(d);
    fetch_buf_free(&d->delta);
    fetch_buf_free(&d->err);
    d->mode = MODE_NONE;
    d->asked_delta = with_delta;
    d->written = 0;
    d->why[0] = d->codec[0] = '\0';
}

/* The response's verdict once the body is in. */
static int conclude(download *d, const fetch_response *r, int rc)
{
    char text[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(d->b->digest, text);
    if (rc == 0 && r->docker_digest[0] && strcmp(r->docker_digest, text) != 0 &&
        d->mode != MODE_ERROR) {
        snprintf(d->why, sizeof d->why, "the server answered for %s", r->docker_digest);
        close_output(d);
        return -1;
    }
    if (rc != 0) {
        if (!d->why[0])
            snprintf(d->why, sizeof d->why, "%s", r->error);
        close_output(d);
        return -1;
    }
    if (d->mode == MODE_FULL)
        return finish_output(d);
    if (d->mode == MODE_DELTA)
        return apply_delta(d, r);
    if (!d->why[0])
        fetch_http_describe(r, &d->err, d->why, sizeof d->why);
    return -1;
}

/* One GET of the blob, with or without delta headers; 0 when in place. */
static int attempt(download *d, int with_delta, uint64_t *sent)
{
    char path[1024], digest[VERIFY_DIGEST_TEXT_LEN], hdr[3][128];
    const char *headers[7] = {NULL};
    fetch_response r;
    reset_download(d, with_delta);
    verify_digest_format(d->b->digest, digest);
    snprintf(path, sizeof path, "/v2/%s/blobs/%s", d->x->ref.repo, digest);
    if (with_delta)
        delta_headers(d->b->base->digest, hdr, headers);
    int rc = fetch_http_get(d->x->http, path, headers, blob_sink, d, &r);
    if (d->mode == MODE_NONE)
        d->mode = decide(d, &r); /* an empty body */
    *sent += r.received;
    return conclude(d, &r, rc);
}

/* Copies the --have layout's file, hashed on the way; 0 when in place. */
static int copy_held(download *d, const char *dir)
{
    char path[PATH_MAX];
    cli_mapped m;
    reset_download(d, 0);
    fetch_blob_path(dir, d->b->digest, path, sizeof path);
    if (cli_map_file(FETCH_CMD, path, &m) != 0)
        return -1;
    int rc = open_output(d);
    for (size_t off = 0; rc == 0 && off < m.len; off += COPY_CHUNK)
        rc = write_output(d, m.p + off, m.len - off < COPY_CHUNK ? m.len - off : COPY_CHUNK);
    cli_unmap_file(&m);
    if (rc == 0)
        return finish_output(d);
    close_output(d);
    return -1;
}

/* Why a delta might have failed on this side: a damaged base file. */
static void check_base(download *d)
{
    char path[PATH_MAX];
    cli_mapped m;
    fetch_blob_path(d->b->base_dir, d->b->base->digest, path, sizeof path);
    if (cli_map_file(FETCH_CMD, path, &m) != 0)
        return;
    if (verify_digest_check(m.p, m.len, d->b->base->digest) != VERIFY_OK)
        fprintf(stderr, "sluice fetch: the base %s is damaged: its bytes do not match its digest\n",
                path);
    cli_unmap_file(&m);
}

static void short_digest(const uint8_t digest[32], char out[VERIFY_DIGEST_TEXT_LEN])
{
    verify_digest_format(digest, out);
    out[19] = '\0';
}

/* Delta first when there is a base, whole blob otherwise or after a failed
 * delta. Adds the row. */
static void fetch_remote(run *x, download *d)
{
    const blob *b = d->b;
    char text[VERIFY_DIGEST_TEXT_LEN], base[VERIFY_DIGEST_TEXT_LEN],
        rejected[sizeof d->why + 160] = "";
    uint64_t sent = 0;
    verify_digest_format(b->digest, text);
    int ok = -1, delta = 0;
    if (b->base != NULL) {
        short_digest(b->base->digest, base);
        ok = attempt(d, 1, &sent);
        delta = ok == 0 && d->mode == MODE_DELTA;
        if (ok != 0 && d->mode == MODE_DELTA) {
            fprintf(stderr, "sluice fetch: %s: delta (%s) rejected: %s; fetching it whole\n", text,
                    d->codec, d->why);
            check_base(d);
            snprintf(rejected, sizeof rejected, " (delta %s from %s rejected: %s)", d->codec, base,
                     d->why);
            ok = attempt(d, 0, &sent);
        }
    } else {
        ok = attempt(d, 0, &sent);
    }
    if (ok != 0) {
        fprintf(stderr, "sluice fetch: %s: %s\n", text, d->why);
        x->failures++;
        add_row(x, b->digest, b->type, b->title, b->size, sent, "FAILED: %s%s", d->why, rejected);
    } else if (delta) {
        x->deltas++;
        add_row(x, b->digest, b->type, b->title, b->size, sent, "delta %s from %s", d->codec, base);
    } else {
        x->fulls++;
        add_row(x, b->digest, b->type, b->title, b->size, sent, "whole%s%s", rejected,
                b->base != NULL && !rejected[0] ? " (no delta offered)" : "");
    }
}

static void fetch_blob(run *x, const blob *b)
{
    download d = {.x = x, .b = b};
    const char *have = x->a->have;
    if (fetch_layout_has(x->a->outdir, b->digest, b->size)) {
        x->locals++;
        add_row(x, b->digest, b->type, b->title, b->size, 0, "already in the output");
        return;
    }
    d.hasher = verify_hasher_new();
    if (d.hasher == NULL) {
        x->failures++;
        add_row(x, b->digest, b->type, b->title, b->size, 0, "FAILED: out of memory");
        return;
    }
    fetch_blob_path(x->a->outdir, b->digest, d.dest, sizeof d.dest);
    if (have != NULL && fetch_layout_has(have, b->digest, b->size) && copy_held(&d, have) == 0) {
        x->locals++;
        add_row(x, b->digest, b->type, b->title, b->size, 0, "copied from --have");
    } else {
        if (have != NULL && fetch_layout_has(have, b->digest, b->size)) {
            char text[VERIFY_DIGEST_TEXT_LEN];
            verify_digest_format(b->digest, text);
            fprintf(stderr, "sluice fetch: %s: the copy in %s is unusable (%s); fetching it\n",
                    text, have, d.why);
        }
        fetch_remote(x, &d);
    }
    reset_download(&d, 0);
    verify_hasher_free(d.hasher);
}

/* ---- the whole fetch ---- */

static int store_manifest(const run *x, const manifest *m)
{
    char path[PATH_MAX];
    if (fetch_layout_has(x->a->outdir, m->digest, m->body.len))
        return 0;
    fetch_blob_path(x->a->outdir, m->digest, path, sizeof path);
    return cli_write_file(FETCH_CMD, path, m->body.p, m->body.len);
}

/* Manifests, then the name in index.json: OUTDIR names only complete images. */
static int commit_layout(run *x, manifest *top, manifest *images, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (store_manifest(x, &images[i]) != 0)
            return -1;
    int whole_index = images != top && x->a->all_platforms;
    if (whole_index && store_manifest(x, top) != 0)
        return -1;
    manifest *named = whole_index || images == top ? top : &images[0];
    if (named->desc == NULL && describe_manifest(named, NULL) != 0)
        return -1;
    return fetch_layout_name(x->a->outdir, named->desc, x->ref.tag[0] ? x->ref.tag : NULL);
}

/* The image manifests to fetch blobs for: top itself or from its index. */
static int resolve_images(run *x, manifest *top, manifest **images, size_t *n)
{
    if (strcmp(top->kind, "manifest") == 0) {
        *images = top;
        *n = 1;
        return 0;
    }
    json_t *entries = choose_entries(x, top->doc);
    if (entries == NULL)
        return -1;
    *n = json_array_size(entries);
    *images = calloc(*n, sizeof **images);
    int rc = *images != NULL ? 0 : -1;
    for (size_t i = 0; i < *n && rc == 0; i++)
        rc = get_child(x, json_array_get(entries, i), &(*images)[i]);
    json_decref(entries);
    return rc;
}

static void free_images(manifest *top, manifest *images, size_t n)
{
    if (images != top && images != NULL) {
        for (size_t i = 0; i < n; i++)
            manifest_free(&images[i]);
        free(images);
    }
}

static int fetch_all(run *x)
{
    manifest top = {0}, *images = NULL;
    blob_list blobs = {0};
    size_t n = 0;
    int rc = get_manifest(x, x->ref.reference, x->ref.has_digest ? x->ref.digest : NULL, &top);
    if (rc == 0)
        rc = resolve_images(x, &top, &images, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = plan_image(x, &images[i], &blobs);
    for (size_t i = 0; rc == 0 && i < blobs.n; i++)
        fetch_blob(x, &blobs.v[i]);
    if (rc == 0 && x->failures == 0)
        rc = commit_layout(x, &top, images, n);
    if (rc != 0)
        x->failures++;
    free(blobs.v);
    free_images(&top, images, n);
    manifest_free(&top);
    return x->failures ? 1 : 0;
}

static int prepare(run *x)
{
    if (fetch_layout_prepare(x->a->outdir) != 0)
        return -1;
    if ((x->a->have != NULL && fetch_history_load(&x->hist, x->a->have) != 0) ||
        fetch_history_load(&x->hist, x->a->outdir) != 0) {
        fprintf(stderr, "sluice fetch: out of memory\n");
        return -1;
    }
    x->http = fetch_http_new(x->ref.url, x->a->insecure, x->a->cacert);
    return x->http != NULL ? 0 : -1;
}

int cmd_fetch(int argc, char **argv)
{
    args a = {0};
    run x = {.a = &a};
    char err[1024];
    int p = parse_args(argc, argv, &a);
    if (p != 0)
        return p > 0 ? 0 : 2;
    if (parse_reference(a.ref, &x.ref, err, sizeof err) != 0) {
        fprintf(stderr, "sluice fetch: %s\n", err);
        return 2;
    }
    if (a.have != NULL && !fetch_layout_exists(a.have)) {
        fprintf(stderr, "sluice fetch: --have %s: not an OCI image layout (no index.json)\n",
                a.have);
        return 2;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "sluice fetch: %s\n", dl_curl_error("cannot initialise libcurl"));
        return 1;
    }
    int rc = prepare(&x) == 0 ? fetch_all(&x) : 1;
    if (x.nrows > 0)
        print_report(&x);
    fetch_http_free(x.http);
    fetch_history_free(&x.hist);
    free(x.rows);
    curl_global_cleanup();
    return rc;
}
