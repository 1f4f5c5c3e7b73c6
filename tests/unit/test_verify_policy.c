/*
 * test_verify_policy.c — unit tests for the containers-policy.json(5)
 * loader (verify/policy.c, reference.c): strict parsing with file and JSON
 * path in every error, scope lookup (most specific wins, wildcards,
 * transport and global defaults), the policy hash, and signedIdentity
 * semantics exercised through image evaluation with signatures made here
 * with OpenSSL (see tsign.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tsign.h"
#include "verify.h"

#define FIX "data/sigstore/containers-image/fixtures/"

static verify_policy *parse(const char *json, char *err, size_t errlen)
{
    return verify_policy_parse(json, strlen(json), "policy.json", NULL, err, errlen);
}

static void expect_error(const char *json, const char *want)
{
    char err[1024] = "";
    verify_policy *p = parse(json, err, sizeof err);
    if (p != NULL)
        fail_msg("accepted: %s", json);
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
    assert_int_equal(strncmp(err, "policy.json: ", 13), 0);
}

/* ---- parsing ---- */

static void test_accepts_common_policies(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "{\"default\":[{\"type\":\"insecureAcceptAnything\"}]}",
        /* Debian's /etc/containers/policy.json */
        "{\"default\":[{\"type\":\"insecureAcceptAnything\"}],\"transports\":{\"docker-daemon\":"
        "{\"\":[{\"type\":\"insecureAcceptAnything\"}]}}}",
        "{\"default\":[{\"type\":\"reject\"}],\"transports\":{\"docker\":{"
        "\"docker.io/library/busybox\":[{\"type\":\"insecureAcceptAnything\"}],"
        "\"*.temporary-project.example.com\":[{\"type\":\"insecureAcceptAnything\"}],"
        "\"hostname:5000/myns/official:latest\":[{\"type\":\"reject\"}],"
        "\"\":[{\"type\":\"reject\"}]},"
        "\"atomic\":{\"hostname:5000/myns/official\":[{\"type\":\"signedBy\",\"keyType\":"
        "\"GPGKeys\",\"keyPath\":\"/nonexistent/official-pubkey.gpg\"}]},"
        "\"dir\":{\"\":[{\"type\":\"insecureAcceptAnything\"}]}}}",
        "{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"" FIX "cosign.pub\","
        "\"signedIdentity\":{\"type\":\"remapIdentity\",\"prefix\":\"mirror:5000/vendor\","
        "\"signedPrefix\":\"vendor.example.com\"}}]}",
        "{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPaths\":[\"" FIX "cosign.pub\",\"" FIX
        "cosign2.pub\"],\"rekorPublicKeyPath\":\"data/sigstore/containers-image/"
        "internal-testdata/rekor.pub\"}]}",
        "{\"default\":[{\"type\":\"sigstoreSigned\",\"pki\":{\"caRootsPath\":\"" FIX
        "pki_root_crts.pem\",\"subjectHostname\":\"myhost.example.com\"},\"signedIdentity\":{"
        "\"type\":\"exactRepository\",\"dockerRepository\":\"busybox\"}}]}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char err[1024] = "";
        verify_policy *p = parse(ok[i], err, sizeof err);
        if (p == NULL)
            fail_msg("policy %zu rejected: %s", i, err);
        verify_policy_free(p);
    }
}

static void test_rejects_invalid(void **state)
{
    (void)state;
    expect_error("{\"default\":[{\"type\":\"reject\"}],\"defualt\":[]}",
                 "$: unknown key \"defualt\"");
    expect_error("{\"transports\":{}}", "\"default\" is required");
    expect_error("{\"default\":[]}", "$.default: must be a non-empty array");
    expect_error("{\"default\":[{\"type\":\"accept\"}]}", "$.default[0]: unknown requirement type");
    expect_error("{\"default\":[{\"type\":\"reject\",\"x\":1}]}",
                 "$.default[0]: unknown key \"x\"");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"keypath\":\"/k\"}]}",
                 "unknown key \"keypath\"");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\"}]}", "exactly one of keyPath");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"" FIX
                 "cosign.pub\",\"keyData\":\"AAAA\"}]}",
                 "exactly one of keyPath");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"/nonexistent.pub\"}]}",
                 "$.default[0].keyPath: cannot open /nonexistent.pub");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"keyData\":\"!!!!\"}]}",
                 "$.default[0].keyData: invalid base64");
    /* base64 of "not a key" */
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"keyData\":\"bm90IGEga2V5\"}]}",
                 "$.default[0].keyData: not a PEM or DER public key");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPaths\":[]}]}",
                 "keyPaths: must be a non-empty array");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"fulcio\":{\"caPath\":\"" FIX
                 "fulcio_v1.crt.pem\",\"oidcIssuer\":\"https://x\",\"subjectEmail\":\"a@b\"}}]}",
                 "rekorPublicKey* member is required with fulcio");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"fulcio\":{\"caPath\":\"" FIX
                 "fulcio_v1.crt.pem\",\"subjectEmail\":\"a@b\"},\"rekorPublicKeyPath\":\"" FIX
                 "../internal-testdata/rekor.pub\"}]}",
                 "\"oidcIssuer\" is required");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"" FIX
                 "cosign.pub\",\"rekorPublicKeyPath\":\"" FIX "some-rsa-key.pub\"}]}",
                 "Rekor public key is not an ECDSA key");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"pki\":{\"caRootsPath\":\"" FIX
                 "cosign.pub\",\"subjectEmail\":\"a@b\"}}]}",
                 "pki.caRootsPath: PEM block \"PUBLIC KEY\" is not a certificate");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"" FIX
                 "cosign.pub\",\"signedIdentity\":{\"type\":\"matchRepository\",\"x\":1}}]}",
                 "$.default[0].signedIdentity: unknown key \"x\"");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"" FIX
                 "cosign.pub\",\"signedIdentity\":{\"type\":\"exactReference\","
                 "\"dockerReference\":\"busybox\"}}]}",
                 "is not a reference with a tag or digest");
    expect_error("{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"" FIX
                 "cosign.pub\",\"signedIdentity\":{\"type\":\"remapIdentity\",\"prefix\":"
                 "\"bad prefix\",\"signedPrefix\":\"x.example\"}}]}",
                 "is not host[:port][/path]");
    expect_error("{\"default\":[{\"type\":\"reject\"}],\"transports\":{\"docker\":{"
                 "\"Not A Scope!\":[{\"type\":\"reject\"}]}}}",
                 "$.transports.docker[\"Not A Scope!\"]: invalid docker scope");
    expect_error("{\"default\":[{\"type\":\"reject\"}],\"transports\":{\"docker\":{"
                 "\"example*.*.com\":[{\"type\":\"reject\"}]}}}",
                 "invalid docker scope");
    expect_error(
        "{\"default\":[{\"type\":\"signedBy\",\"keyType\":\"GPGKeys\",\"keyPath\":\"/k\"}]}",
        "cannot be verified by Sluice");
    expect_error("{\"default\":[{\"type\":\"reject\"}],\"transports\":{\"atomic\":{\"x.io\":"
                 "[{\"type\":\"signedBy\",\"keyType\":\"Foo\",\"keyPath\":\"/k\"}]}}}",
                 "$.transports.atomic[\"x.io\"][0]: unrecognized keyType");
    expect_error("{\"default\":[{\"type\":\"reject\"}],\"default\":[{\"type\":\"reject\"}]}",
                 "duplicate");
    expect_error("{\"default\":[{\"type\":\"reject\"}]", "invalid JSON");
    expect_error("[]", "$: expected a JSON object");
}

static void test_load_names_file(void **state)
{
    (void)state;
    char path[] = "/tmp/sluice-policy-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *bad = "{\"default\":[{\"type\":\"reject\",\"extra\":true}]}";
    assert_int_equal(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    close(fd);
    char err[1024];
    assert_null(verify_policy_load(path, NULL, err, sizeof err));
    assert_int_equal(strncmp(err, path, strlen(path)), 0);
    assert_non_null(strstr(err, ": $.default[0]: unknown key \"extra\""));
    unlink(path);
    assert_null(verify_policy_load("/nonexistent/policy.json", NULL, err, sizeof err));
    verify_policy_options o = {.trusted_root_path = "/nonexistent/root.json"};
    const char *ok = "{\"default\":[{\"type\":\"reject\"}]}";
    assert_null(verify_policy_parse(ok, strlen(ok), "p", &o, err, sizeof err));
    assert_non_null(strstr(err, "trusted root"));
}

/* ---- scopes ---- */

static const char SCOPES[] =
    "{\"default\":[{\"type\":\"reject\"}],\"transports\":{\"docker\":{"
    "\"\":[{\"type\":\"insecureAcceptAnything\"},{\"type\":\"insecureAcceptAnything\"}],"
    "\"reg.example.com\":[{\"type\":\"insecureAcceptAnything\"}],"
    "\"reg.example.com:5000\":[{\"type\":\"reject\"}],"
    "\"reg.example.com/team\":[{\"type\":\"reject\"}],"
    "\"reg.example.com/team/app\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"" FIX
    "cosign.pub\"}],"
    "\"reg.example.com/team/app:stable\":[{\"type\":\"insecureAcceptAnything\"}],"
    "\"*.example.com\":[{\"type\":\"reject\"},{\"type\":\"reject\"},{\"type\":\"reject\"}],"
    "\"*.dev.example.com\":[{\"type\":\"insecureAcceptAnything\"},{\"type\":\"reject\"}],"
    "\"docker.io/library/busybox\":[{\"type\":\"reject\"},{\"type\":\"insecureAcceptAnything\"},"
    "{\"type\":\"insecureAcceptAnything\"},{\"type\":\"insecureAcceptAnything\"}]}}}";

static void expect_scope(const verify_policy *p, const char *reg, const char *repo, const char *tag,
                         const char *scope)
{
    verify_requirements r;
    assert_int_equal(verify_policy_requirements(p, reg, repo, tag, &r), 0);
    if (strcmp(r.scope, scope) != 0)
        fail_msg("%s/%s:%s matched \"%s\", want \"%s\"", reg, repo, tag ? tag : "(digest)", r.scope,
                 scope);
}

static void test_scope_lookup(void **state)
{
    (void)state;
    char err[1024];
    verify_policy *p = parse(SCOPES, err, sizeof err);
    assert_non_null(p);
    expect_scope(p, "reg.example.com", "team/app", "stable", "reg.example.com/team/app:stable");
    expect_scope(p, "reg.example.com", "team/app", "latest", "reg.example.com/team/app");
    expect_scope(p, "reg.example.com", "team/app", NULL, "reg.example.com/team/app");
    expect_scope(p, "reg.example.com", "team/other", NULL, "reg.example.com/team");
    expect_scope(p, "reg.example.com", "team/app/sub", "v1", "reg.example.com/team/app");
    expect_scope(p, "reg.example.com", "solo", NULL, "reg.example.com");
    expect_scope(p, "reg.example.com:5000", "solo", NULL, "reg.example.com:5000");
    expect_scope(p, "other.example.com", "x", NULL, "*.example.com");
    expect_scope(p, "a.dev.example.com:443", "x", NULL, "*.dev.example.com");
    expect_scope(p, "docker.io", "busybox", "latest", "docker.io/library/busybox");
    expect_scope(p, "index.docker.io", "library/busybox", NULL, "docker.io/library/busybox");
    expect_scope(p, "quay.io", "x/y", "1", "");
    verify_requirements r;
    assert_int_equal(verify_policy_requirements(p, "reg.example.com", "team/app", "latest", &r), 0);
    assert_true(r.needs_signatures && !r.accept_anything && !r.rejects);
    assert_int_equal(verify_policy_requirements(p, "quay.io", "x", NULL, &r), 0);
    assert_true(r.accept_anything && r.count == 2 && !r.is_global_default);
    assert_int_equal(verify_policy_requirements(p, "x.dev.example.com", "x", NULL, &r), 0);
    assert_true(r.rejects && !r.accept_anything);
    assert_int_equal(verify_policy_requirements(p, "bad host!", "x", NULL, &r), -1);
    assert_int_equal(verify_policy_requirements(p, "quay.io", "Upper/Case", NULL, &r), -1);
    assert_int_equal(verify_policy_requirements(p, "quay.io", "x", "bad tag!", &r), -1);
    verify_policy_free(p);
    p = parse("{\"default\":[{\"type\":\"reject\"}]}", err, sizeof err);
    assert_int_equal(verify_policy_requirements(p, "quay.io", "x", NULL, &r), 0);
    assert_true(r.is_global_default && r.rejects);
    assert_string_equal(r.scope, "default");
    verify_policy_free(p);
}

/* ---- hash ---- */

static void test_policy_hash(void **state)
{
    (void)state;
    char err[1024], keyfile[] = "/tmp/sluice-key-XXXXXX";
    uint8_t h1[32], h2[32], h3[32], h4[32];
    tkey *k1 = tkey_new(TKEY_EC_P256), *k2 = tkey_new(TKEY_EC_P256);
    int fd = mkstemp(keyfile);
    assert_true(fd >= 0);
    close(fd);
    tkey_write_pub(k1, keyfile);
    char json[512];
    snprintf(json, sizeof json, "{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"%s\"}]}",
             keyfile);
    verify_policy *p = parse(json, err, sizeof err);
    assert_non_null(p);
    verify_policy_hash(p, h1);
    verify_policy_free(p);
    p = parse(json, err, sizeof err);
    verify_policy_hash(p, h2);
    verify_policy_free(p);
    assert_memory_equal(h1, h2, 32);
    tkey_write_pub(k2, keyfile); /* same policy text, other key */
    p = parse(json, err, sizeof err);
    verify_policy_hash(p, h3);
    verify_policy_free(p);
    assert_memory_not_equal(h1, h3, 32);
    p = parse("{\"default\":[{\"type\":\"reject\"}]}", err, sizeof err);
    verify_policy_hash(p, h4);
    verify_policy_free(p);
    assert_memory_not_equal(h1, h4, 32);
    unlink(keyfile);
    tkey_free(k1);
    tkey_free(k2);
}

/* ---- signedIdentity semantics (containers-policy.json(5)) ---- */

typedef struct {
    const char *identity;   /* signedIdentity JSON, or NULL for the default */
    const char *signed_ref; /* docker-reference in the payload */
    const char *tag;        /* image requested by tag, or NULL (by digest) */
    int want;
} idcase;

static int eval_identity(tkey *k, const idcase *c)
{
    char json[2048], *kd = tkey_pub_b64(k);
    uint8_t digest[32];
    memset(digest, 0x5a, sizeof digest);
    snprintf(json, sizeof json,
             "{\"default\":[{\"type\":\"sigstoreSigned\",\"keyData\":\"%s\"%s%s%s}]}", kd,
             c->identity ? ",\"signedIdentity\":" : "", c->identity ? c->identity : "", "");
    free(kd);
    char err[1024];
    verify_policy *p = parse(json, err, sizeof err);
    if (p == NULL)
        fail_msg("%s", err);
    tsig s;
    tsig_make(&s, k, c->signed_ref, digest);
    verify_image img = {"mirror.example.com:5000", "team/app", c->tag, {0}};
    memcpy(img.manifest_digest, digest, 32);
    verify_verdict v;
    verify_image_evaluate(p, &img, &s.sig, 1, NULL, 0, 1700000000, &v);
    if (!v.allowed && v.reason != VERIFY_DENIED_IDENTITY)
        fail_msg("%s: unexpected %s: %s", c->signed_ref, verify_reason_name(v.reason), v.text);
    tsig_free(&s);
    verify_policy_free(p);
    return v.allowed;
}

static void test_signed_identity(void **state)
{
    (void)state;
    static const char REPO[] = "{\"type\":\"matchRepository\"}";
    static const char EXACT[] = "{\"type\":\"matchExact\"}";
    static const char REMAP[] =
        "{\"type\":\"remapIdentity\",\"prefix\":\"mirror.example.com:5000\","
        "\"signedPrefix\":\"vendor.example.com\"}";
    static const char EXREF[] = "{\"type\":\"exactReference\",\"dockerReference\":"
                                "\"vendor.example.com/team/app:v1\"}";
    static const char EXREPO[] = "{\"type\":\"exactRepository\",\"dockerRepository\":"
                                 "\"vendor.example.com/team/app\"}";
    static const idcase cases[] = {
        /* default = matchRepoDigestOrExact */
        {NULL, "mirror.example.com:5000/team/app:v1", "v1", 1},
        {NULL, "mirror.example.com:5000/team/app:v2", "v1", 0},
        {NULL, "mirror.example.com:5000/team/app:v2", NULL, 1},
        {NULL, "mirror.example.com:5000/team/app", NULL, 0}, /* cosign: repository only */
        {NULL, "mirror.example.com:5000/team/app", "v1", 0},
        {NULL, "mirror.example.com:5000/team/other:v1", NULL, 0},
        {REPO, "mirror.example.com:5000/team/app", "v1", 1},
        {REPO, "mirror.example.com:5000/team/app:v9", NULL, 1},
        {REPO, "mirror.example.com:5000/team/other", "v1", 0},
        {EXACT, "mirror.example.com:5000/team/app:v1", "v1", 1},
        {EXACT, "mirror.example.com:5000/team/app:v1", NULL, 0},
        {EXACT, "mirror.example.com:5000/team/app", "v1", 0},
        {REMAP, "vendor.example.com/team/app:v1", "v1", 1},
        {REMAP, "vendor.example.com/team/app:v2", "v1", 0},
        {REMAP, "vendor.example.com/team/app:v2", NULL, 1},
        {REMAP, "mirror.example.com:5000/team/app:v1", "v1", 0},
        {EXREF, "vendor.example.com/team/app:v1", "v7", 1},
        {EXREF, "vendor.example.com/team/app:v2", "v1", 0},
        {EXREPO, "vendor.example.com/team/app", NULL, 1},
        {EXREPO, "vendor.example.com/team/app:anything", "x", 1},
        {EXREPO, "vendor.example.com/team/other", "x", 0},
        {REPO, "not a reference", "v1", 0},
    };
    tkey *k = tkey_new(TKEY_EC_P256);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (eval_identity(k, &cases[i]) != cases[i].want)
            fail_msg("case %zu (%s, tag %s): want %d", i, cases[i].signed_ref,
                     cases[i].tag ? cases[i].tag : "-", cases[i].want);
    tkey_free(k);
}

static void test_docker_io_normalization(void **state)
{
    (void)state;
    idcase c = {"{\"type\":\"matchRepository\"}", "busybox", "latest", 1};
    tkey *k = tkey_new(TKEY_EC_P256);
    char json[1024], *kd = tkey_pub_b64(k), err[512];
    snprintf(
        json, sizeof json,
        "{\"default\":[{\"type\":\"sigstoreSigned\",\"keyData\":\"%s\",\"signedIdentity\":%s}]}",
        kd, c.identity);
    free(kd);
    verify_policy *p = parse(json, err, sizeof err);
    uint8_t digest[32] = {1};
    tsig s;
    tsig_make(&s, k, "busybox", digest);
    verify_image img = {"docker.io", "busybox", "latest", {1}};
    verify_verdict v;
    assert_true(verify_image_evaluate(p, &img, &s.sig, 1, NULL, 0, 0, &v));
    verify_image img2 = {"index.docker.io", "library/busybox", NULL, {1}};
    assert_true(verify_image_evaluate(p, &img2, &s.sig, 1, NULL, 0, 0, &v));
    tsig_free(&s);
    verify_policy_free(p);
    tkey_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_common_policies),
        cmocka_unit_test(test_rejects_invalid),
        cmocka_unit_test(test_load_names_file),
        cmocka_unit_test(test_scope_lookup),
        cmocka_unit_test(test_policy_hash),
        cmocka_unit_test(test_signed_identity),
        cmocka_unit_test(test_docker_io_normalization),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
