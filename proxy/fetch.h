/*
 * fetch.h — the parts of `sluice fetch` (private to proxy/; the command is
 * cmd_fetch.h):
 *
 *   fetch_http.c    blocking HTTP GETs with libcurl's easy API: one handle
 *                   (connections reused), redirects followed (registries
 *                   send blobs to object storage with 307), TLS verified
 *                   unless --insecure, content decoding off (a dcz body is
 *                   ours to decode); the response headers a fetch needs are
 *                   captured before the body is handed to a sink; OCI error
 *                   bodies are turned into one line of text.
 *   fetch_layout.c  OCI image layouts on disk: preparing the output layout,
 *                   finding blobs already present, reading the manifests of
 *                   the versions a device holds (the base candidates for
 *                   deltas), and naming the fetched image in index.json.
 *   cmd_fetch.c     the command: reference, manifests, the per-blob choice
 *                   between local copy, delta and whole blob, verification,
 *                   and the report.
 */
#ifndef SLUICE_FETCH_H
#define SLUICE_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "delta.h"
#include "verify.h"

#define FETCH_CMD "fetch"
#define FETCH_MANIFEST_MAX (4u << 20) /* as the daemon's manifest limit */
#define FETCH_ERROR_MAX (64u << 10)   /* error bodies kept for the message */

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define ANN_TITLE "org.opencontainers.image.title"
#define ANN_REF_NAME "org.opencontainers.image.ref.name"

/* ---- growable memory buffer ---- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    size_t limit; /* adding beyond this fails */
} fetch_buf;

/* 0, or -1 when the limit would be passed or memory runs out. */
int fetch_buf_add(fetch_buf *b, const void *p, size_t n);
void fetch_buf_free(fetch_buf *b);

/* ---- HTTP (fetch_http.c) ---- */

typedef struct fetch_http fetch_http;

/* What a response said; fields are reset at each status line (redirects). */
typedef struct {
    long status;
    char content_type[128];
    char content_encoding[64];
    char im[64];
    char delta_base[128];
    char docker_digest[128];
    uint64_t received;   /* body bytes received */
    char error[512];     /* transport error ("" if none) */
    int aborted_by_sink; /* the sink returned non-zero */
} fetch_response;

/* Body sink: r's headers are final when it is first called. Non-zero aborts
 * the transfer. */
typedef int (*fetch_sink)(void *arg, const fetch_response *r, const void *p, size_t n);

/* base_url: "http[s]://host[:port]"; cacert may be NULL. NULL on failure
 * (printed). */
fetch_http *fetch_http_new(const char *base_url, int insecure, const char *cacert);
void fetch_http_free(fetch_http *h);

/* GET base_url + path with the extra headers (NULL-terminated, may be NULL).
 * 0 when a response completed (whatever its status), -1 on a transport error
 * or a sink abort (r->error says which). */
int fetch_http_get(fetch_http *h, const char *path, const char *const *headers, fetch_sink sink,
                   void *arg, fetch_response *r);

/* The sink that collects a body into a fetch_buf (arg). */
int fetch_sink_buf(void *arg, const fetch_response *r, const void *p, size_t n);

/* One line for a failed request: the transport error, or the status and the
 * OCI error body's codes and messages ("404: MANIFEST_UNKNOWN: manifest
 * unknown"), or the start of a non-JSON body. */
void fetch_http_describe(const fetch_response *r, const fetch_buf *body, char *out, size_t len);

/* ---- OCI layouts (fetch_layout.c) ---- */

/* dir/blobs/sha256/<hex> into out. */
void fetch_blob_path(const char *dir, const uint8_t digest[32], char *out, size_t len);

/* 1 when dir looks like an OCI image layout (has an index.json). */
int fetch_layout_exists(const char *dir);

/* 1 when dir holds a regular blob file for digest of exactly size bytes. */
int fetch_layout_has(const char *dir, const uint8_t digest[32], uint64_t size);

/* Creates dir/blobs/sha256, dir/oci-layout and an empty dir/index.json when
 * missing, so that dir is a valid layout from the start. 0, or -1 (printed). */
int fetch_layout_prepare(const char *dir);

/* Names desc (a manifest or index descriptor, borrowed) in dir/index.json:
 * with ref.name = tag (replacing an entry of that name), or without a name
 * (once per digest) when tag is NULL. Rewritten atomically. 0, or -1
 * (printed). */
int fetch_layout_name(const char *dir, json_t *desc, const char *tag);

/* The layers and configs of the versions a device holds: every image
 * manifest listed in the index.json of the layouts loaded (directly, or one
 * level down through an index), whose blob file is present. Entries whose
 * files are missing or unreadable are left out: this is only a choice of
 * delta bases. */
typedef struct {
    delta_layer *layers, *configs;
    const char **layer_dirs, **config_dirs; /* the layout holding each one */
    size_t nlayers, nconfigs, cap_layers, cap_configs;
    json_t **docs; /* the manifests, kept for the strings layers point to */
    size_t ndocs, cap_docs;
    uint32_t next_age;
} fetch_history;

/* Adds the versions held in layout dir (which must outlive h); the layouts
 * loaded first count as newer. A missing index.json adds nothing. 0, or -1
 * when out of memory. */
int fetch_history_load(fetch_history *h, const char *dir);
void fetch_history_free(fetch_history *h);

/* Reads a descriptor {mediaType, digest, size}: 0, or -1 with why. */
int fetch_parse_desc(json_t *d, uint8_t digest[32], uint64_t *size, const char **media_type,
                     const char **why);

/* "manifest", "index", or NULL: what a document of this media type is
 * (mt may be NULL; then the document's own keys decide). */
const char *fetch_manifest_kind(const char *mt, json_t *doc);

#endif
