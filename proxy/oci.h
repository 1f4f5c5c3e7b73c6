/*
 * oci.h — the grammar of the OCI Distribution Spec v1.1 pull API, as pure
 * functions over untrusted request text: repository names, tags, request
 * paths (routes) and single byte ranges. No allocation, no I/O; every input is
 * bounded by explicit lengths. Fuzzed by tests/fuzz/fuzz_oci.c.
 *
 * Names: path components matching [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* joined by
 * '/', at most OCI_NAME_MAX bytes. Tags: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
 * Digests: see verify.h (only sha256 is supported).
 */
#ifndef SLUICE_OCI_H
#define SLUICE_OCI_H

#include <stddef.h>
#include <stdint.h>

#define OCI_NAME_MAX 255
#define OCI_TAG_MAX 128

int oci_name_valid(const char *name, size_t len);
int oci_tag_valid(const char *tag, size_t len);

typedef enum {
    OCI_ROUTE_BASE,      /* /v2/ */
    OCI_ROUTE_MANIFEST,  /* /v2/<name>/manifests/<reference> */
    OCI_ROUTE_BLOB,      /* /v2/<name>/blobs/<digest> */
    OCI_ROUTE_TAGS,      /* /v2/<name>/tags/list */
    OCI_ROUTE_REFERRERS, /* /v2/<name>/referrers/<digest> */
    OCI_ROUTE_UPLOAD,    /* /v2/<name>/blobs/uploads/[<id>] (push: refused) */
} oci_route_kind;

typedef enum {
    OCI_PARSE_OK = 0,
    OCI_PARSE_NOT_FOUND,          /* not a distribution route at all */
    OCI_PARSE_NAME_INVALID,       /* route shape ok, repository name invalid */
    OCI_PARSE_DIGEST_INVALID,     /* a digest where one is required is malformed */
    OCI_PARSE_DIGEST_UNSUPPORTED, /* well-formed digest, algorithm not sha256 */
    OCI_PARSE_REFERENCE_INVALID,  /* manifest reference neither a tag nor a digest */
} oci_parse_status;

typedef struct {
    oci_route_kind kind;
    char name[OCI_NAME_MAX + 1];      /* NUL-terminated repository name */
    char reference[OCI_TAG_MAX + 72]; /* tag or digest text, NUL-terminated */
    int by_digest;                    /* reference is a digest */
    uint8_t digest[32];               /* parsed when by_digest (and for blobs, referrers) */
} oci_route;

/* Parses a request path (no query string; the caller strips '?...'). The
 * path is taken as given: percent-encoded bytes are not decoded, so "%2e%2e"
 * is simply an invalid name. */
oci_parse_status oci_route_parse(const char *path, size_t len, oci_route *out);

/* The OCI error code ("NAME_INVALID", ...) and HTTP status for a parse error. */
const char *oci_parse_error_code(oci_parse_status st);
int oci_parse_http_status(oci_parse_status st);

typedef enum {
    OCI_RANGE_NONE = 0,      /* no header, or one to ignore (RFC 9110 14.2:
                                malformed or multi-range: serve the full body) */
    OCI_RANGE_OK,            /* single satisfiable range [first, last] */
    OCI_RANGE_UNSATISFIABLE, /* 416 with Content-Range: bytes * /size */
} oci_range_status;

/* Parses a Range header value ("bytes=a-b", "bytes=a-", "bytes=-n") against a
 * representation of `size` bytes. header may be NULL. */
oci_range_status oci_range_parse(const char *header, uint64_t size, uint64_t *first,
                                 uint64_t *last);

#endif
