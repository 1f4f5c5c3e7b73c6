/*
 * fuzz_oci.c — libFuzzer target for the untrusted-request grammar: routes
 * (proxy/oci.c), repository names, tags, byte ranges, and digest parsing
 * (verify/digest.c).
 *
 * How it works: each input is tried as it is and behind the prefix a real
 * request would have ("/v2/" for routes, "bytes=" for ranges), so that
 * mutations reach the deep parts of the parsers quickly. Inputs are copied
 * into heap buffers of exactly their length (NUL-terminated only where the
 * API takes a C string), so AddressSanitizer flags any read past the end.
 * Besides memory and UB errors, the target aborts when a result breaks the
 * contract of oci.h or verify.h, e.g. an accepted route whose name does not
 * validate, or a range outside the representation.
 *
 * Run: build with -Dfuzz=true (see meson.build here), then
 *   ./fuzz_oci -dict=tests/fuzz/oci.dict tests/fuzz/corpus/fuzz_oci
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oci.h"
#include "verify.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* A heap copy of prefix + data, exactly that long, optionally NUL-ended. */
static char *concat(const char *prefix, const uint8_t *data, size_t size, int nul, size_t *len)
{
    size_t plen = strlen(prefix);
    char *p = malloc(plen + size + (nul ? 1 : 0) + 1);
    CHECK(p != NULL);
    memcpy(p, prefix, plen);
    if (size > 0)
        memcpy(p + plen, data, size);
    if (nul)
        p[plen + size] = '\0';
    *len = plen + size;
    return p;
}

static void check_digest_text(const char *text, const uint8_t digest[VERIFY_DIGEST_LEN])
{
    char formatted[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(digest, formatted);
    CHECK(strcmp(formatted, text) == 0);
}

static void check_route_ok(const oci_route *r)
{
    size_t nlen = strnlen(r->name, sizeof r->name);
    size_t rlen = strnlen(r->reference, sizeof r->reference);
    CHECK(nlen < sizeof r->name && rlen < sizeof r->reference);
    if (r->kind == OCI_ROUTE_BASE) {
        CHECK(nlen == 0 && rlen == 0);
        return;
    }
    CHECK(oci_name_valid(r->name, nlen));
    if (r->kind == OCI_ROUTE_BLOB || r->kind == OCI_ROUTE_REFERRERS)
        CHECK(r->by_digest);
    if (r->by_digest)
        check_digest_text(r->reference, r->digest);
    else if (r->kind == OCI_ROUTE_MANIFEST)
        CHECK(oci_tag_valid(r->reference, rlen));
    else
        CHECK(rlen == 0);
}

static void fuzz_route(const char *path, size_t len)
{
    oci_route r;
    oci_parse_status st = oci_route_parse(path, len, &r);
    if (st == OCI_PARSE_OK) {
        CHECK(len >= 3 && memcmp(path, "/v2", 3) == 0);
        check_route_ok(&r);
        CHECK(oci_parse_error_code(st) == NULL);
        return;
    }
    const char *code = oci_parse_error_code(st);
    int http = oci_parse_http_status(st);
    CHECK(code != NULL && (http == 400 || http == 404));
}

/* Every byte of s[0..len) is one of set (a NUL byte never is). */
static int all_in(const char *s, size_t len, const char *set)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\0' || strchr(set, s[i]) == NULL)
            return 0;
    }
    return 1;
}

static void fuzz_name_tag(const char *s, size_t len)
{
    if (oci_name_valid(s, len)) {
        CHECK(len > 0 && len <= OCI_NAME_MAX && s[0] != '/' && s[len - 1] != '/');
        CHECK(all_in(s, len, "abcdefghijklmnopqrstuvwxyz0123456789._-/"));
    }
    if (oci_tag_valid(s, len)) {
        CHECK(len > 0 && len <= OCI_TAG_MAX && s[0] != '.' && s[0] != '-');
        CHECK(all_in(s, len, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"));
    }
}

static void fuzz_digest(const char *s, size_t len)
{
    uint8_t digest[VERIFY_DIGEST_LEN];
    if (verify_digest_parse(s, len, digest) != VERIFY_OK)
        return;
    CHECK(len == VERIFY_DIGEST_TEXT_LEN - 1);
    char text[VERIFY_DIGEST_TEXT_LEN];
    memcpy(text, s, len);
    text[len] = '\0';
    check_digest_text(text, digest);
}

static void fuzz_range(const char *header, uint64_t size)
{
    uint64_t first = 0, last = 0;
    oci_range_status st = oci_range_parse(header, size, &first, &last);
    if (st == OCI_RANGE_OK)
        CHECK(first <= last && last < size);
    else
        CHECK(st == OCI_RANGE_NONE || st == OCI_RANGE_UNSATISFIABLE);
}

/* Representation sizes: fixed edge cases plus one taken from the input. */
static void fuzz_ranges(const char *header, const uint8_t *data, size_t size)
{
    static const uint64_t sizes[] = {0, 1, 10, 1000, UINT64_MAX};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        fuzz_range(header, sizes[i]);
    uint64_t from_data = 0;
    memcpy(&from_data, data, size < sizeof from_data ? size : sizeof from_data);
    fuzz_range(header, from_data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len;
    char *raw = concat("", data, size, 0, &len);
    fuzz_route(raw, len);
    fuzz_name_tag(raw, len);
    fuzz_digest(raw, len);
    free(raw);

    char *path = concat("/v2/", data, size, 0, &len);
    fuzz_route(path, len);
    free(path);

    char *text = concat("", data, size, 1, &len);
    fuzz_ranges(text, data, size);
    free(text);
    char *header = concat("bytes=", data, size, 1, &len);
    fuzz_ranges(header, data, size);
    free(header);
    return 0;
}
