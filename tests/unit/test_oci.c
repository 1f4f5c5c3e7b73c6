/*
 * test_oci.c — unit tests for proxy/oci.c: repository names, tags, request
 * routes, error mapping and byte ranges.
 *
 * How it works: each group is a table of inputs and expected results walked
 * by one cmocka test. Every input is copied into a heap buffer of exactly its
 * length (no NUL after it), so under AddressSanitizer any read past the
 * length the parser was given is a failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oci.h"

#define D_HEX "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define D "sha256:" D_HEX
#define D_UPPER "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
#define H32 "0123456789abcdef0123456789abcdef"
#define SHA512 "sha512:" H32 H32 H32 H32

/* A heap copy of s[0..len) with nothing after it. */
static char *exact(const char *s, size_t len)
{
    char *p = malloc(len ? len : 1);
    assert_non_null(p);
    memcpy(p, s, len);
    return p;
}

/* A string of n copies of c (plus NUL), for length limits. */
static char *repeat(char c, size_t n)
{
    char *p = malloc(n + 1);
    assert_non_null(p);
    memset(p, c, n);
    p[n] = '\0';
    return p;
}

/* ---- names ------------------------------------------------------------- */

static int name_ok(const char *s, size_t len)
{
    char *p = exact(s, len);
    int ok = oci_name_valid(p, len);
    free(p);
    return ok;
}

static void test_names(void **state)
{
    (void)state;
    static const char *const good[] = {
        "a",        "0",       "library/ubuntu", "a/b/c",        "foo.bar",    "foo_bar",
        "foo__bar", "foo-bar", "foo---bar",      "a0/b1.c2/d-3", "x.y_z__w-v", "123/456",
    };
    static const char *const bad[] = {
        "",           "A",         "Library/ubuntu",
        "a/",         "/a",        "a//b",
        "/",          "..",        ".",
        "a/../b",     "a/./b",     "%2e%2e",
        "a/%2e%2e/b", "%2E",       ".a",
        "a.",         "a..b",      "a._b",
        "a___b",      "a_-b",      "-a",
        "a-",         "_a",        "a_",
        "a b",        "a\tb",      "a:b",
        "a@b",        "a\xc3\xa4", "a\\b",
        "a/b/",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (!name_ok(good[i], strlen(good[i])))
            fail_msg("name \"%s\" should be valid", good[i]);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (name_ok(bad[i], strlen(bad[i])))
            fail_msg("name \"%s\" should be invalid", bad[i]);
    }
    assert_false(name_ok("a\0b", 3));
    assert_true(name_ok("abc/def", 3)); /* only len bytes count */
    assert_false(oci_name_valid(NULL, 0));
}

static void test_name_length(void **state)
{
    (void)state;
    char *max = repeat('a', OCI_NAME_MAX);
    assert_true(name_ok(max, OCI_NAME_MAX));
    char *over = repeat('a', OCI_NAME_MAX + 1);
    assert_false(name_ok(over, OCI_NAME_MAX + 1));
    max[127] = '/'; /* 127 + '/' + 127 */
    assert_true(name_ok(max, OCI_NAME_MAX));
    over[127] = '/';
    assert_false(name_ok(over, OCI_NAME_MAX + 1));
    free(max);
    free(over);
}

/* ---- tags -------------------------------------------------------------- */

static int tag_ok(const char *s, size_t len)
{
    char *p = exact(s, len);
    int ok = oci_tag_valid(p, len);
    free(p);
    return ok;
}

static void test_tags(void **state)
{
    (void)state;
    static const char *const good[] = {
        "latest", "v1.0", "_x", "1", "A-b_c.D", "sha256-" D_HEX ".sig", "a..b", "X__-._",
    };
    static const char *const bad[] = {
        "", ".x", "-x", "a:b", "a/b", "a b", "a+b", "a@b", "\xc3\xa4", "a\n",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (!tag_ok(good[i], strlen(good[i])))
            fail_msg("tag \"%s\" should be valid", good[i]);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (tag_ok(bad[i], strlen(bad[i])))
            fail_msg("tag \"%s\" should be invalid", bad[i]);
    }
    assert_false(tag_ok("a\0", 2));
    assert_false(oci_tag_valid(NULL, 0));
}

static void test_tag_length(void **state)
{
    (void)state;
    char *t = repeat('t', OCI_TAG_MAX + 1);
    assert_true(tag_ok(t, OCI_TAG_MAX));
    assert_false(tag_ok(t, OCI_TAG_MAX + 1));
    free(t);
}

/* ---- routes ------------------------------------------------------------ */

typedef struct {
    const char *path;
    oci_parse_status status;
    oci_route_kind kind; /* checked when status is OK */
    const char *name;
    const char *reference;
    int by_digest;
} route_case;

static const route_case routes[] = {
    {"/v2", OCI_PARSE_OK, OCI_ROUTE_BASE, "", "", 0},
    {"/v2/", OCI_PARSE_OK, OCI_ROUTE_BASE, "", "", 0},
    {"/v2/ubuntu/manifests/latest", OCI_PARSE_OK, OCI_ROUTE_MANIFEST, "ubuntu", "latest", 0},
    {"/v2/library/ubuntu/manifests/22.04", OCI_PARSE_OK, OCI_ROUTE_MANIFEST, "library/ubuntu",
     "22.04", 0},
    {"/v2/a/b/c/manifests/latest", OCI_PARSE_OK, OCI_ROUTE_MANIFEST, "a/b/c", "latest", 0},
    {"/v2/x/manifests/" D, OCI_PARSE_OK, OCI_ROUTE_MANIFEST, "x", D, 1},
    {"/v2/library/x/blobs/" D, OCI_PARSE_OK, OCI_ROUTE_BLOB, "library/x", D, 1},
    {"/v2/a/b/c/referrers/" D, OCI_PARSE_OK, OCI_ROUTE_REFERRERS, "a/b/c", D, 1},
    {"/v2/library/x/tags/list", OCI_PARSE_OK, OCI_ROUTE_TAGS, "library/x", "", 0},
    {"/v2/x/blobs/uploads/", OCI_PARSE_OK, OCI_ROUTE_UPLOAD, "x", "", 0},
    {"/v2/a/b/blobs/uploads/", OCI_PARSE_OK, OCI_ROUTE_UPLOAD, "a/b", "", 0},
    {"/v2/a/b/blobs/uploads/0a1b-2c3d", OCI_PARSE_OK, OCI_ROUTE_UPLOAD, "a/b", "", 0},
    {"/v2/x/blobs/uploads", OCI_PARSE_OK, OCI_ROUTE_UPLOAD, "x", "", 0},
    /* route words are also fine as name components */
    {"/v2/x/blobs/manifests/latest", OCI_PARSE_OK, OCI_ROUTE_MANIFEST, "x/blobs", "latest", 0},
    {"/v2/tags/tags/list", OCI_PARSE_OK, OCI_ROUTE_TAGS, "tags", "", 0},
    {"/v2/manifests/manifests/manifests", OCI_PARSE_OK, OCI_ROUTE_MANIFEST, "manifests",
     "manifests", 0},
    {"/v2/blobs/blobs/uploads/", OCI_PARSE_OK, OCI_ROUTE_UPLOAD, "blobs", "", 0},
    {"/v2/x/manifests/sha256-" D_HEX ".sig", OCI_PARSE_OK, OCI_ROUTE_MANIFEST, "x",
     "sha256-" D_HEX ".sig", 0},

    /* not a distribution route */
    {"", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"v2/", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v1/", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2x", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v22/x/tags/list", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/V2/x/tags/list", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2//", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/manifests/latest", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/tags/list", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/blobs/uploads/", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/blobs/uploads/id", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/manifests/", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/manifests/latest/", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/blobs/", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/referrers/", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/tags/", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/tags/lis", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/tags/list/", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/tags/list/extra", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/unknown/y", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/Manifests/latest", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/blobs/uploads/a/b", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/uploads/id", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},
    {"/v2/x/manifests/latest?n=1", OCI_PARSE_REFERENCE_INVALID, OCI_ROUTE_MANIFEST, "x", NULL, 0},

    /* known shape, bad name (checked before the reference) */
    {"/v2/Library/x/manifests/latest", OCI_PARSE_NAME_INVALID, OCI_ROUTE_MANIFEST, NULL, NULL, 0},
    {"/v2/a//b/manifests/latest", OCI_PARSE_NAME_INVALID, OCI_ROUTE_MANIFEST, NULL, NULL, 0},
    {"/v2//manifests/latest", OCI_PARSE_NAME_INVALID, OCI_ROUTE_MANIFEST, NULL, NULL, 0},
    {"/v2/../manifests/latest", OCI_PARSE_NAME_INVALID, OCI_ROUTE_MANIFEST, NULL, NULL, 0},
    {"/v2/a/../../manifests/latest", OCI_PARSE_NAME_INVALID, OCI_ROUTE_MANIFEST, NULL, NULL, 0},
    {"/v2/%2e%2e/manifests/latest", OCI_PARSE_NAME_INVALID, OCI_ROUTE_MANIFEST, NULL, NULL, 0},
    {"/v2/a/%2E%2E/tags/list", OCI_PARSE_NAME_INVALID, OCI_ROUTE_TAGS, NULL, NULL, 0},
    {"/v2/-a/blobs/" D, OCI_PARSE_NAME_INVALID, OCI_ROUTE_BLOB, NULL, NULL, 0},
    {"/v2/a./referrers/" D, OCI_PARSE_NAME_INVALID, OCI_ROUTE_REFERRERS, NULL, NULL, 0},
    {"/v2//blobs/uploads/", OCI_PARSE_NAME_INVALID, OCI_ROUTE_UPLOAD, NULL, NULL, 0},
    {"/v2/A/blobs/uploads/id", OCI_PARSE_NAME_INVALID, OCI_ROUTE_UPLOAD, NULL, NULL, 0},
    {"/v2/X/manifests/.bad", OCI_PARSE_NAME_INVALID, OCI_ROUTE_MANIFEST, NULL, NULL, 0},
    {"//v2/x/tags/list", OCI_PARSE_NOT_FOUND, 0, NULL, NULL, 0},

    /* known shape, bad digest */
    {"/v2/x/blobs/latest", OCI_PARSE_DIGEST_INVALID, OCI_ROUTE_BLOB, "x", NULL, 0},
    {"/v2/x/blobs/sha256:abc", OCI_PARSE_DIGEST_INVALID, OCI_ROUTE_BLOB, "x", NULL, 0},
    {"/v2/x/blobs/" D_UPPER, OCI_PARSE_DIGEST_INVALID, OCI_ROUTE_BLOB, "x", NULL, 0},
    {"/v2/x/blobs/" D "0", OCI_PARSE_DIGEST_INVALID, OCI_ROUTE_BLOB, "x", NULL, 0},
    {"/v2/x/blobs/sha256:", OCI_PARSE_DIGEST_INVALID, OCI_ROUTE_BLOB, "x", NULL, 0},
    {"/v2/x/blobs/:" D_HEX, OCI_PARSE_DIGEST_INVALID, OCI_ROUTE_BLOB, "x", NULL, 0},
    {"/v2/x/manifests/sha256:xyz", OCI_PARSE_DIGEST_INVALID, OCI_ROUTE_MANIFEST, "x", NULL, 0},
    {"/v2/x/manifests/" D_UPPER, OCI_PARSE_DIGEST_INVALID, OCI_ROUTE_MANIFEST, "x", NULL, 0},
    {"/v2/x/referrers/latest", OCI_PARSE_DIGEST_INVALID, OCI_ROUTE_REFERRERS, "x", NULL, 0},

    /* well-formed digest, algorithm other than sha256 */
    {"/v2/x/blobs/" SHA512, OCI_PARSE_DIGEST_UNSUPPORTED, OCI_ROUTE_BLOB, "x", NULL, 0},
    {"/v2/x/manifests/" SHA512, OCI_PARSE_DIGEST_UNSUPPORTED, OCI_ROUTE_MANIFEST, "x", NULL, 0},
    {"/v2/x/referrers/md5:0123", OCI_PARSE_DIGEST_UNSUPPORTED, OCI_ROUTE_REFERRERS, "x", NULL, 0},

    /* manifest reference neither tag nor digest */
    {"/v2/x/manifests/.bad", OCI_PARSE_REFERENCE_INVALID, OCI_ROUTE_MANIFEST, "x", NULL, 0},
    {"/v2/x/manifests/-x", OCI_PARSE_REFERENCE_INVALID, OCI_ROUTE_MANIFEST, "x", NULL, 0},
    {"/v2/x/manifests/a%20b", OCI_PARSE_REFERENCE_INVALID, OCI_ROUTE_MANIFEST, "x", NULL, 0},
};

static void check_route(const route_case *c, const char *path, size_t len)
{
    oci_route r;
    char *p = exact(path, len);
    oci_parse_status st = oci_route_parse(p, len, &r);
    free(p);
    if (st != c->status)
        fail_msg("%s: status %d, expected %d", c->path, st, c->status);
    if (st == OCI_PARSE_OK || st == OCI_PARSE_NAME_INVALID || c->name != NULL)
        assert_int_equal(r.kind, c->kind);
    if (c->name != NULL)
        assert_string_equal(r.name, c->name);
    if (st != OCI_PARSE_OK)
        return;
    if (c->reference != NULL)
        assert_string_equal(r.reference, c->reference);
    assert_int_equal(r.by_digest, c->by_digest);
}

static void test_routes(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        check_route(&routes[i], routes[i].path, strlen(routes[i].path));
}

static void test_route_digest_bytes(void **state)
{
    (void)state;
    oci_route r;
    const char *path = "/v2/library/x/blobs/" D;
    assert_int_equal(oci_route_parse(path, strlen(path), &r), OCI_PARSE_OK);
    assert_int_equal(r.digest[0], 0xe3);
    assert_int_equal(r.digest[1], 0xb0);
    assert_int_equal(r.digest[31], 0x55);
}

static void test_route_bounds(void **state)
{
    (void)state;
    oci_route r;
    /* only len bytes are looked at */
    const char *path = "/v2/x/tags/listXYZ";
    assert_int_equal(oci_route_parse(path, strlen(path) - 3, &r), OCI_PARSE_OK);
    assert_int_equal(r.kind, OCI_ROUTE_TAGS);
    assert_int_equal(oci_route_parse(path, 3, &r), OCI_PARSE_OK);
    assert_int_equal(r.kind, OCI_ROUTE_BASE);
    assert_int_equal(oci_route_parse(NULL, 0, &r), OCI_PARSE_NOT_FOUND);
    /* an embedded NUL is just a bad byte */
    static const char nul[] = "/v2/a\0b/tags/list";
    assert_int_equal(oci_route_parse(nul, sizeof nul - 1, &r), OCI_PARSE_NAME_INVALID);
    static const char nul_tag[] = "/v2/a/manifests/v\0";
    assert_int_equal(oci_route_parse(nul_tag, sizeof nul_tag - 1, &r), OCI_PARSE_REFERENCE_INVALID);
}

/* Names and tags at and past their limits, inside whole paths. */
static void test_route_lengths(void **state)
{
    (void)state;
    char *name = repeat('n', OCI_NAME_MAX + 1);
    char *tag = repeat('t', OCI_TAG_MAX + 1);
    char path[1024];
    route_case c = {path, OCI_PARSE_OK, OCI_ROUTE_MANIFEST, NULL, NULL, 0};

    snprintf(path, sizeof path, "/v2/%.*s/manifests/%.*s", OCI_NAME_MAX, name, OCI_TAG_MAX, tag);
    check_route(&c, path, strlen(path));
    oci_route r;
    assert_int_equal(oci_route_parse(path, strlen(path), &r), OCI_PARSE_OK);
    assert_int_equal(strlen(r.name), OCI_NAME_MAX);
    assert_int_equal(strlen(r.reference), OCI_TAG_MAX);

    snprintf(path, sizeof path, "/v2/%s/manifests/latest", name);
    c.status = OCI_PARSE_NAME_INVALID;
    check_route(&c, path, strlen(path));

    snprintf(path, sizeof path, "/v2/x/manifests/%s", tag);
    c.status = OCI_PARSE_REFERENCE_INVALID;
    check_route(&c, path, strlen(path));
    free(name);
    free(tag);
}

static void test_error_mapping(void **state)
{
    (void)state;
    assert_null(oci_parse_error_code(OCI_PARSE_OK));
    assert_int_equal(oci_parse_http_status(OCI_PARSE_OK), 200);
    assert_string_equal(oci_parse_error_code(OCI_PARSE_NOT_FOUND), "NAME_UNKNOWN");
    assert_int_equal(oci_parse_http_status(OCI_PARSE_NOT_FOUND), 404);
    assert_string_equal(oci_parse_error_code(OCI_PARSE_NAME_INVALID), "NAME_INVALID");
    assert_int_equal(oci_parse_http_status(OCI_PARSE_NAME_INVALID), 400);
    assert_string_equal(oci_parse_error_code(OCI_PARSE_DIGEST_INVALID), "DIGEST_INVALID");
    assert_int_equal(oci_parse_http_status(OCI_PARSE_DIGEST_INVALID), 400);
    assert_string_equal(oci_parse_error_code(OCI_PARSE_DIGEST_UNSUPPORTED), "UNSUPPORTED");
    assert_int_equal(oci_parse_http_status(OCI_PARSE_DIGEST_UNSUPPORTED), 400);
    assert_string_equal(oci_parse_error_code(OCI_PARSE_REFERENCE_INVALID), "MANIFEST_INVALID");
    assert_int_equal(oci_parse_http_status(OCI_PARSE_REFERENCE_INVALID), 400);
}

/* ---- ranges ------------------------------------------------------------ */

typedef struct {
    const char *header;
    uint64_t size;
    oci_range_status status;
    uint64_t first, last;
} range_case;

#define NONE OCI_RANGE_NONE
#define OK OCI_RANGE_OK
#define UNSAT OCI_RANGE_UNSATISFIABLE

static const range_case ranges[] = {
    {NULL, 10, NONE, 0, 0},
    {"bytes=0-0", 10, OK, 0, 0},
    {"bytes=0-9", 10, OK, 0, 9},
    {"bytes=2-5", 10, OK, 2, 5},
    {"bytes=5-100", 10, OK, 5, 9},
    {"bytes=5-", 10, OK, 5, 9},
    {"bytes=9-", 10, OK, 9, 9},
    {"bytes=0-", 10, OK, 0, 9},
    {"bytes=007-0009", 10, OK, 7, 9},
    {"Bytes=1-2", 10, OK, 1, 2},
    {"BYTES=1-2", 10, OK, 1, 2},
    {"bytes=10-", 10, UNSAT, 0, 0},
    {"bytes=10-20", 10, UNSAT, 0, 0},
    {"bytes=-3", 10, OK, 7, 9},
    {"bytes=-10", 10, OK, 0, 9},
    {"bytes=-100", 10, OK, 0, 9},
    {"bytes=-1", 1, OK, 0, 0},
    {"bytes=-0", 10, UNSAT, 0, 0},
    {"bytes=-000", 10, UNSAT, 0, 0},
    {"bytes=0-0", 0, UNSAT, 0, 0},
    {"bytes=0-", 0, UNSAT, 0, 0},
    {"bytes=-5", 0, UNSAT, 0, 0},
    {"bytes=18446744073709551615-", UINT64_MAX, UNSAT, 0, 0},
    {"bytes=18446744073709551614-", UINT64_MAX, OK, UINT64_MAX - 1, UINT64_MAX - 1},
    {"bytes=0-", UINT64_MAX, OK, 0, UINT64_MAX - 1},
    {"bytes=0-18446744073709551615", 100, OK, 0, 99},
    {"bytes=-18446744073709551615", 100, OK, 0, 99},
    /* ignored: serve the whole body */
    {"bytes=5-2", 10, NONE, 0, 0},
    {"bytes=0-1,3-4", 10, NONE, 0, 0},
    {"bytes=0-1, 3-4", 10, NONE, 0, 0},
    {"bytes=0-1,", 10, NONE, 0, 0},
    {"items=0-1", 10, NONE, 0, 0},
    {"bytes 0-1", 10, NONE, 0, 0},
    {"bytes=", 10, NONE, 0, 0},
    {"bytes=-", 10, NONE, 0, 0},
    {"bytes=--1", 10, NONE, 0, 0},
    {"bytes=1--2", 10, NONE, 0, 0},
    {"bytes=a-b", 10, NONE, 0, 0},
    {"bytes= 0-1", 10, NONE, 0, 0},
    {"bytes =0-1", 10, NONE, 0, 0},
    {"bytes=0 -1", 10, NONE, 0, 0},
    {"bytes=0-1 ", 10, NONE, 0, 0},
    {"bytes=+1-2", 10, NONE, 0, 0},
    {"bytes=0x1-2", 10, NONE, 0, 0},
    {"bytes=1", 10, NONE, 0, 0},
    {"bytes", 10, NONE, 0, 0},
    {"", 10, NONE, 0, 0},
    {"bytes=18446744073709551616-", 10, NONE, 0, 0},
    {"bytes=0-18446744073709551616", 10, NONE, 0, 0},
    {"bytes=-18446744073709551616", 10, NONE, 0, 0},
    {"bytes=99999999999999999999999-", 10, NONE, 0, 0},
    {"bytes=10-5", 10, NONE, 0, 0},
};

static void test_ranges(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        const range_case *c = &ranges[i];
        uint64_t first = 12345, last = 67890;
        oci_range_status st = oci_range_parse(c->header, c->size, &first, &last);
        if (st != c->status)
            fail_msg("\"%s\" size %llu: status %d, expected %d", c->header ? c->header : "(null)",
                     (unsigned long long)c->size, st, c->status);
        if (st == OCI_RANGE_OK) {
            assert_int_equal(first, c->first);
            assert_int_equal(last, c->last);
        } else {
            assert_int_equal(first, 12345); /* untouched */
            assert_int_equal(last, 67890);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),         cmocka_unit_test(test_name_length),
        cmocka_unit_test(test_tags),          cmocka_unit_test(test_tag_length),
        cmocka_unit_test(test_routes),        cmocka_unit_test(test_route_digest_bytes),
        cmocka_unit_test(test_route_bounds),  cmocka_unit_test(test_route_lengths),
        cmocka_unit_test(test_error_mapping), cmocka_unit_test(test_ranges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
