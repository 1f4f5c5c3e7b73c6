/*
 * oci.c — the OCI Distribution Spec v1.1 pull-API grammar (see oci.h): name
 * and tag validation, request-path routing, and single byte-range parsing.
 *
 * How it works. Everything is a bounded scan over (pointer, length): nothing
 * allocates, nothing reads past the length given, nothing needs a NUL.
 *
 * Routing parses from the end of the path, because repository names may
 * contain '/' but references, digests and upload ids may not: the last
 * segment is the reference, the one before it says what kind of route this
 * is, and everything between "/v2/" and that is the repository name. A path
 * whose shape matches no route is OCI_PARSE_NOT_FOUND; a known shape with a
 * bad name or reference gets the specific error, checked in path order (name
 * first). Besides "/blobs/uploads/" and "/blobs/uploads/<id>", the form
 * without the trailing slash ("/blobs/uploads") is also an upload route, as
 * it can never be a blob digest anyway.
 *
 * On return, *out is zeroed and then filled as far as parsing got: kind is
 * set for every recognised shape, name once it is valid, reference (and
 * digest/by_digest) only on success; reference stays empty for BASE, TAGS and
 * UPLOAD (an upload id is not kept: uploads are refused anyway). oci_parse_error_code() is NULL for
 * OCI_PARSE_OK.
 *
 * Ranges follow RFC 9110 14.1.2: a single "bytes=first-last", "bytes=first-"
 * or "bytes=-suffix". Anything else (other units, several ranges, spaces,
 * signs, numbers that do not fit 64 bits, last < first) is ignored, i.e.
 * OCI_RANGE_NONE, and the caller serves the whole body.
 */
#include "oci.h"

#include <string.h>
#include <strings.h>

#include "verify.h"

/* ---- names and tags ---------------------------------------------------- */

static int is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int is_alnum(char c)
{
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* Length of the run of [a-z0-9] at the start of p[0..n). */
static size_t lower_alnum_run(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && is_lower_alnum(p[i]))
        i++;
    return i;
}

/* Length of the separator (".", "_", "__" or "-+") at the start of p[0..n),
 * 0 if there is none. */
static size_t separator_len(const char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (p[0] == '.')
        return 1;
    if (p[0] == '_')
        return (n > 1 && p[1] == '_') ? 2 : 1;
    size_t i = 0;
    while (i < n && p[i] == '-')
        i++;
    return i;
}

/* One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* */
static int component_valid(const char *c, size_t len)
{
    size_t i = 0;
    for (;;) {
        size_t run = lower_alnum_run(c + i, len - i);
        if (run == 0)
            return 0;
        i += run;
        if (i == len)
            return 1;
        size_t sep = separator_len(c + i, len - i);
        if (sep == 0)
            return 0;
        i += sep;
    }
}

int oci_name_valid(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > OCI_NAME_MAX)
        return 0;
    size_t start = 0;
    while (start <= len) {
        const char *slash = memchr(name + start, '/', len - start);
        size_t end = slash ? (size_t)(slash - name) : len;
        if (end == start || !component_valid(name + start, end - start))
            return 0;
        start = end + 1;
    }
    return 1;
}

int oci_tag_valid(const char *tag, size_t len)
{
    if (tag == NULL || len == 0 || len > OCI_TAG_MAX)
        return 0;
    if (!is_alnum(tag[0]) && tag[0] != '_')
        return 0;
    for (size_t i = 1; i < len; i++) {
        char c = tag[i];
        if (!is_alnum(c) && c != '_' && c != '.' && c != '-')
            return 0;
    }
    return 1;
}

/* ---- routes ------------------------------------------------------------ */

/* A (pointer, length) view of part of the path. */
typedef struct {
    const char *p;
    size_t n;
} span;

static int span_eq(span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

static int span_ends_with(span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n >= n && memcmp(s.p + s.n - n, lit, n) == 0;
}

/* Splits s at its last '/' into head and tail; 0 if s has no '/'. */
static int split_last(span s, span *head, span *tail)
{
    size_t i = s.n;
    while (i > 0 && s.p[i - 1] != '/')
        i--;
    if (i == 0)
        return 0;
    *head = (span){s.p, i - 1};
    *tail = (span){s.p + i, s.n - i};
    return 1;
}

static oci_parse_status set_name(oci_route *out, span name)
{
    if (!oci_name_valid(name.p, name.n))
        return OCI_PARSE_NAME_INVALID;
    memcpy(out->name, name.p, name.n);
    out->name[name.n] = '\0';
    return OCI_PARSE_OK;
}

static oci_parse_status from_verify(verify_status st)
{
    if (st == VERIFY_OK)
        return OCI_PARSE_OK;
    if (st == VERIFY_DIGEST_UNSUPPORTED)
        return OCI_PARSE_DIGEST_UNSUPPORTED;
    return OCI_PARSE_DIGEST_INVALID;
}

static void set_reference(oci_route *out, span ref)
{
    memcpy(out->reference, ref.p, ref.n);
    out->reference[ref.n] = '\0';
}

static oci_parse_status set_digest(oci_route *out, span ref)
{
    uint8_t digest[VERIFY_DIGEST_LEN];
    oci_parse_status st = from_verify(verify_digest_parse(ref.p, ref.n, digest));
    if (st != OCI_PARSE_OK)
        return st;
    if (ref.n >= sizeof out->reference)
        return OCI_PARSE_DIGEST_INVALID;
    memcpy(out->digest, digest, sizeof out->digest);
    out->by_digest = 1;
    set_reference(out, ref);
    return OCI_PARSE_OK;
}

/* A manifest reference: a digest if it has a ':' (tags cannot), else a tag. */
static oci_parse_status set_manifest_ref(oci_route *out, span ref)
{
    if (memchr(ref.p, ':', ref.n) != NULL)
        return set_digest(out, ref);
    if (!oci_tag_valid(ref.p, ref.n))
        return OCI_PARSE_REFERENCE_INVALID;
    set_reference(out, ref);
    return OCI_PARSE_OK;
}

static oci_parse_status route(oci_route *out, oci_route_kind kind, span name)
{
    out->kind = kind;
    return set_name(out, name);
}

static oci_parse_status route_ref(oci_route *out, oci_route_kind kind, span name, span ref)
{
    oci_parse_status st = route(out, kind, name);
    if (st != OCI_PARSE_OK)
        return st;
    return kind == OCI_ROUTE_MANIFEST ? set_manifest_ref(out, ref) : set_digest(out, ref);
}

/* "<name>/blobs/uploads" with the "/blobs/uploads" still on. */
static oci_parse_status route_upload(oci_route *out, span head)
{
    span name = {head.p, head.n - strlen("/blobs/uploads")};
    return route(out, OCI_ROUTE_UPLOAD, name);
}

/* rest is the path after "/v2/": "<name>/<kind>/<last>". */
static oci_parse_status parse_repo_route(span rest, oci_route *out)
{
    span head, last, name, kind;
    if (!split_last(rest, &head, &last))
        return OCI_PARSE_NOT_FOUND;
    if (last.n == 0)
        return span_ends_with(head, "/blobs/uploads") ? route_upload(out, head)
                                                      : OCI_PARSE_NOT_FOUND;
    if (!split_last(head, &name, &kind))
        return OCI_PARSE_NOT_FOUND;
    if (span_eq(kind, "manifests"))
        return route_ref(out, OCI_ROUTE_MANIFEST, name, last);
    if (span_eq(kind, "blobs") && span_eq(last, "uploads"))
        return route(out, OCI_ROUTE_UPLOAD, name);
    if (span_eq(kind, "blobs"))
        return route_ref(out, OCI_ROUTE_BLOB, name, last);
    if (span_eq(kind, "referrers"))
        return route_ref(out, OCI_ROUTE_REFERRERS, name, last);
    if (span_eq(kind, "tags") && span_eq(last, "list"))
        return route(out, OCI_ROUTE_TAGS, name);
    if (span_eq(kind, "uploads") && span_ends_with(name, "/blobs"))
        return route_upload(out, head);
    return OCI_PARSE_NOT_FOUND;
}

oci_parse_status oci_route_parse(const char *path, size_t len, oci_route *out)
{
    memset(out, 0, sizeof *out);
    if (path == NULL || len < 3 || memcmp(path, "/v2", 3) != 0)
        return OCI_PARSE_NOT_FOUND;
    if (len == 3 || (len == 4 && path[3] == '/')) {
        out->kind = OCI_ROUTE_BASE;
        return OCI_PARSE_OK;
    }
    if (path[3] != '/')
        return OCI_PARSE_NOT_FOUND;
    return parse_repo_route((span){path + 4, len - 4}, out);
}

const char *oci_parse_error_code(oci_parse_status st)
{
    switch (st) {
    case OCI_PARSE_OK:
        return NULL;
    case OCI_PARSE_NOT_FOUND:
        return "NAME_UNKNOWN";
    case OCI_PARSE_NAME_INVALID:
        return "NAME_INVALID";
    case OCI_PARSE_DIGEST_INVALID:
        return "DIGEST_INVALID";
    case OCI_PARSE_DIGEST_UNSUPPORTED:
        return "UNSUPPORTED";
    case OCI_PARSE_REFERENCE_INVALID:
        return "MANIFEST_INVALID";
    }
    return "UNKNOWN";
}

int oci_parse_http_status(oci_parse_status st)
{
    switch (st) {
    case OCI_PARSE_OK:
        return 200;
    case OCI_PARSE_NOT_FOUND:
        return 404;
    case OCI_PARSE_NAME_INVALID:
    case OCI_PARSE_DIGEST_INVALID:
    case OCI_PARSE_DIGEST_UNSUPPORTED:
    case OCI_PARSE_REFERENCE_INVALID:
        return 400;
    }
    return 500;
}

/* ---- ranges ------------------------------------------------------------ */

/* Reads one or more decimal digits at *p into *out, advancing *p; -1 if there
 * are none or the number does not fit in 64 bits. */
static int read_u64(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
        s++;
    }
    if (s == *p)
        return -1;
    *p = s;
    *out = v;
    return 0;
}

static oci_range_status range_ok(uint64_t a, uint64_t b, uint64_t *first, uint64_t *last)
{
    if (first)
        *first = a;
    if (last)
        *last = b;
    return OCI_RANGE_OK;
}

/* "-n": the last n bytes. */
static oci_range_status suffix_range(const char *p, uint64_t size, uint64_t *first, uint64_t *last)
{
    uint64_t n;
    if (read_u64(&p, &n) != 0 || *p != '\0')
        return OCI_RANGE_NONE;
    if (n == 0 || size == 0)
        return OCI_RANGE_UNSATISFIABLE;
    if (n > size)
        n = size;
    return range_ok(size - n, size - 1, first, last);
}

/* "a-b" or "a-". */
static oci_range_status span_range(const char *p, uint64_t size, uint64_t *first, uint64_t *last)
{
    uint64_t a, b = UINT64_MAX;
    if (read_u64(&p, &a) != 0 || *p != '-')
        return OCI_RANGE_NONE;
    p++;
    if (*p != '\0' && (read_u64(&p, &b) != 0 || *p != '\0'))
        return OCI_RANGE_NONE;
    if (b < a)
        return OCI_RANGE_NONE;
    if (a >= size)
        return OCI_RANGE_UNSATISFIABLE;
    return range_ok(a, b < size ? b : size - 1, first, last);
}

oci_range_status oci_range_parse(const char *header, uint64_t size, uint64_t *first, uint64_t *last)
{
    if (header == NULL || strncasecmp(header, "bytes=", 6) != 0)
        return OCI_RANGE_NONE;
    const char *p = header + 6;
    if (*p == '-')
        return suffix_range(p + 1, size, first, last);
    return span_range(p, size, first, last);
}
