/*
 * test_sigstore.c — unit tests for cosign / Sigstore verification
 * (verify/sigstore.c, bundle.c, tlog.c, rekor.c, tsa.c, certs.c,
 * payload.c, trustroot.c).
 *
 * Every vector of data/sigstore (see each PROVENANCE.md) is checked for its
 * expected result: containers/image's .sig layers under policies written
 * here, the 69 sigstore-conformance bundle-verify cases (a "_fail" suffix
 * must fail), sigstore-go's and cosign's bundles. Negative cases are made
 * from them or with keys generated here (tsign.h): tampered payload, wrong
 * key, digest mismatch, identity mismatch, expired certificate, bad SET,
 * malformed base64 / JSON / PEM.
 */
#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "tsign.h"
#include "verify.h"

#define CI "data/sigstore/containers-image/"
#define FIX CI "fixtures/"
#define REKOR_PUB CI "internal-testdata/rekor.pub"
#define CONF "data/sigstore/sigstore-conformance/bundle-verify/"
#define PROD_ROOT "data/sigstore/root-signing/targets/trusted_root.json"
#define SGO "data/sigstore/sigstore-go/"
#define NOW 1790000000 /* 2026-09-21: after every vector's signing time */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    p[n] = '\0';
    fclose(f);
    if (len != NULL)
        *len = (size_t)n;
    return p;
}

/* ---- payloads ---- */

static void test_payload_valid(void **state)
{
    (void)state;
    verify_payload pl;
    char err[256];
    const char *p = "{\"critical\":{\"identity\":{\"docker-reference\":\"r.io/a\"},\"image\":{"
                    "\"docker-manifest-digest\":\"sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fc"
                    "a12f6831de8ddc45e5986a00\"},\"type\":\"cosign container image signature\"},"
                    "\"optional\":{\"creator\":\"me\",\"timestamp\":1458239713,\"other\":[1]}}";
    assert_int_equal(verify_payload_parse(p, strlen(p), &pl, err, sizeof err), 0);
    assert_string_equal(pl.docker_reference, "r.io/a");
    assert_true(pl.has_creator && pl.has_timestamp && pl.timestamp == 1458239713);
    assert_string_equal(pl.creator, "me");
}

static void test_payload_invalid(void **state)
{
    (void)state;
    static const char D[] = "\"sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e59"
                            "86a00\"";
    char bad[16][512];
    const char *tmpl[] = {
        "{\"critical\":{\"identity\":{\"docker-reference\":\"r\"},\"image\":{\"docker-manifest-"
        "digest\":%s},\"type\":\"cosign container image "
        "signature\",\"extra\":1},\"optional\":null}",
        "{\"critical\":{\"identity\":{\"docker-reference\":\"r\"},\"image\":{\"docker-manifest-"
        "digest\":%s},\"type\":\"another type\"},\"optional\":null}",
        "{\"critical\":{\"identity\":{},\"image\":{\"docker-manifest-digest\":%s},\"type\":"
        "\"cosign container image signature\"},\"optional\":null}",
        "{\"critical\":{\"identity\":{\"docker-reference\":1},\"image\":{\"docker-manifest-"
        "digest\":%s},\"type\":\"cosign container image signature\"},\"optional\":null}",
        "{\"critical\":{\"identity\":{\"docker-reference\":\"r\"},\"image\":{\"docker-manifest-"
        "digest\":%s},\"type\":\"cosign container image signature\"},\"optional\":{"
        "\"timestamp\":1.5}}",
        "{\"critical\":{\"identity\":{\"docker-reference\":\"r\"},\"image\":{\"docker-manifest-"
        "digest\":%s},\"type\":\"cosign container image signature\"}}",
        "{\"critical\":{\"identity\":{\"docker-reference\":\"r\"},\"image\":{\"docker-manifest-"
        "digest\":%s},\"type\":\"cosign container image signature\"},\"optional\":null,"
        "\"optional\":null}",
        "{\"critical\":{\"identity\":{\"docker-reference\":\"r\"},\"image\":{\"docker-manifest-"
        "digest\":%s},\"type\":\"cosign container image signature\"},\"optional\":5}",
        "[%s]",
        "{\"critical\":{\"identity\":{\"docker-reference\":\"r\"},\"image\":{\"docker-manifest-"
        "digest\":%s},\"type\":\"cosign container image signature\"},\"optional\":null",
    };
    size_t n = sizeof tmpl / sizeof tmpl[0];
    for (size_t i = 0; i < n; i++)
        snprintf(bad[i], sizeof bad[i], tmpl[i], D);
    snprintf(bad[n], sizeof bad[n],
             "{\"critical\":{\"identity\":{\"docker-reference\":\"r\"},\"image\":{\"docker-"
             "manifest-digest\":\"sha256:ABCD\"},\"type\":\"cosign container image signature\"},"
             "\"optional\":null}");
    for (size_t i = 0; i <= n; i++) {
        verify_payload pl;
        char err[256];
        if (verify_payload_parse(bad[i], strlen(bad[i]), &pl, err, sizeof err) == 0)
            fail_msg("accepted payload %zu: %s", i, bad[i]);
    }
    verify_payload pl;
    assert_int_equal(verify_payload_parse("", 0, &pl, NULL, 0), -1);
}

/* ---- containers/image .sig layers ---- */

typedef struct {
    json_t *doc;
    uint8_t *payload;
    verify_cosign_sig sig;
} layer;

static const char *ann(const json_t *a, const char *k, size_t *n)
{
    const json_t *v = json_object_get(a, k);
    *n = json_string_length(v);
    return json_string_value(v);
}

/* Reads a containers/image "dir:" signature file (0x00 "sigstore-json\n"
 * then {mimeType, payload, annotations}). */
static void layer_load(layer *l, const char *path)
{
    size_t n;
    char *raw = slurp(path, &n);
    assert_non_null(raw);
    assert_true(n > 15 && raw[0] == 0);
    json_error_t je;
    memset(l, 0, sizeof *l);
    l->doc = json_loadb(raw + 15, n - 15, 0, &je);
    free(raw);
    assert_non_null(l->doc);
    const char *b64 = json_string_value(json_object_get(l->doc, "payload"));
    size_t bl = strlen(b64);
    l->payload = malloc(bl);
    int got = EVP_DecodeBlock(l->payload, (const unsigned char *)b64, (int)bl);
    l->sig.payload = l->payload;
    l->sig.payload_len = (size_t)got - (b64[bl - 1] == '=') - (b64[bl - 2] == '=');
    const json_t *a = json_object_get(l->doc, "annotations");
    const json_t *mt = json_object_get(l->doc, "mimeType");
    l->sig.media_type = json_string_value(mt);
    l->sig.media_type_len = json_string_length(mt);
    l->sig.signature = ann(a, "dev.cosignproject.cosign/signature", &l->sig.signature_len);
    l->sig.certificate = ann(a, "dev.sigstore.cosign/certificate", &l->sig.certificate_len);
    l->sig.chain = ann(a, "dev.sigstore.cosign/chain", &l->sig.chain_len);
    l->sig.rekor_bundle = ann(a, "dev.sigstore.cosign/bundle", &l->sig.rekor_bundle_len);
}

static void layer_free(layer *l)
{
    json_decref(l->doc);
    free(l->payload);
}

static void manifest_digest(const char *dir, uint8_t out[32])
{
    char path[256];
    size_t n;
    snprintf(path, sizeof path, FIX "%s/manifest.json", dir);
    char *m = slurp(path, &n);
    assert_non_null(m);
    verify_sha256(m, n, out);
    free(m);
}

static verify_policy *policy(const char *json)
{
    char err[1024];
    verify_policy *p =
        verify_policy_parse(json, strlen(json), "test-policy", NULL, err, sizeof err);
    if (p == NULL)
        fail_msg("%s", err);
    return p;
}

static const char KEY1[] = "{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"" FIX
                           "cosign.pub\",\"signedIdentity\":{\"type\":\"matchRepository\"}}]}";
static const char KEY2[] = "{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"" FIX
                           "cosign2.pub\",\"signedIdentity\":{\"type\":\"matchRepository\"}}]}";
static const char KEYS12[] = "{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPaths\":[\"" FIX
                             "cosign2.pub\",\"" FIX "cosign.pub\"],\"signedIdentity\":{\"type\":"
                             "\"matchRepository\"}}]}";
static const char KEY2_REKOR[] = "{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"" FIX
                                 "cosign2.pub\",\"rekorPublicKeyPath\":\"" REKOR_PUB
                                 "\",\"signedIdentity\":{\"type\":\"matchRepository\"}}]}";
static const char FULCIO[] =
    "{\"default\":[{\"type\":\"sigstoreSigned\",\"fulcio\":{\"caPath\":\"" FIX
    "fulcio_v1.crt.pem\",\"oidcIssuer\":\"https://github.com/login/oauth\",\"subjectEmail\":"
    "\"mitr@redhat.com\"},\"rekorPublicKeyPath\":\"" REKOR_PUB
    "\",\"signedIdentity\":{\"type\":\"matchRepository\"}}]}";
static const char FULCIO_OTHER_EMAIL[] =
    "{\"default\":[{\"type\":\"sigstoreSigned\",\"fulcio\":{\"caPath\":\"" FIX
    "fulcio_v1.crt.pem\",\"oidcIssuer\":\"https://github.com/login/oauth\",\"subjectEmail\":"
    "\"someone@example.com\"},\"rekorPublicKeyPath\":\"" REKOR_PUB "\"}]}";
static const char FULCIO_OTHER_ISSUER[] =
    "{\"default\":[{\"type\":\"sigstoreSigned\",\"fulcio\":{\"caPath\":\"" FIX
    "fulcio_v1.crt.pem\",\"oidcIssuer\":\"https://accounts.google.com\",\"subjectEmail\":"
    "\"mitr@redhat.com\"},\"rekorPublicKeyPath\":\"" REKOR_PUB
    "\",\"signedIdentity\":{\"type\":\"matchRepository\"}}]}";
static const char PKI[] =
    "{\"default\":[{\"type\":\"sigstoreSigned\",\"pki\":{\"caRootsPath\":\"" FIX
    "pki_root_crts.pem\",\"caIntermediatesPath\":\"" FIX
    "pki_intermediate_crts.pem\",\"subjectEmail\":\"qiwan@redhat.com\"},"
    "\"signedIdentity\":{\"type\":\"matchRepository\"}}]}";
static const char PKI_HOST[] =
    "{\"default\":[{\"type\":\"sigstoreSigned\",\"pki\":{\"caRootsPath\":"
    "\"" FIX "pki_root_crts.pem\",\"subjectHostname\":\"myhost.example."
    "com\"},\"signedIdentity\":{\"type\":\"matchRepository\"}}]}";

typedef struct {
    const char *name;
    const char *policy;
    const char *sig;      /* signature file under fixtures/ */
    const char *manifest; /* dir under fixtures/ holding manifest.json */
    const char *registry, *repo, *tag;
    int64_t now;
    verify_reason want;
} ci_case;

static const ci_case CI_CASES[] = {
    {"key valid", KEY1, "dir-img-cosign-valid/signature-1", "dir-img-cosign-valid",
     "192.168.64.2:5000", "cosign-signed-single-sample", NULL, NOW, VERIFY_ALLOWED},
    {"key valid, any of keyPaths", KEYS12, "dir-img-cosign-valid/signature-1",
     "dir-img-cosign-valid", "192.168.64.2:5000", "cosign-signed-single-sample", NULL, NOW,
     VERIFY_ALLOWED},
    {"wrong key", KEY2, "dir-img-cosign-valid/signature-1", "dir-img-cosign-valid",
     "192.168.64.2:5000", "cosign-signed-single-sample", NULL, NOW, VERIFY_DENIED_BAD_SIGNATURE},
    {"second signature", KEY1, "dir-img-cosign-valid-2/signature-2", "dir-img-cosign-valid",
     "192.168.64.2:5000", "cosign-signed-single-sample", NULL, NOW, VERIFY_ALLOWED},
    {"modified manifest", KEY1, "dir-img-cosign-valid/signature-1",
     "dir-img-cosign-modified-manifest", "192.168.64.2:5000", "cosign-signed-single-sample", NULL,
     NOW, VERIFY_DENIED_DIGEST_MISMATCH},
    {"other attachment", KEY1, "dir-img-cosign-other-attachment/signature-1",
     "dir-img-cosign-valid", "192.168.64.2:5000", "cosign-signed-single-sample", NULL, NOW,
     VERIFY_DENIED_NO_SIGNATURE},
    {"unknown key", KEY1, "unknown-cosign-key.signature", "dir-img-cosign-valid",
     "192.168.64.2:5000", "cosign-signed-single-sample", NULL, NOW, VERIFY_DENIED_BAD_SIGNATURE},
    {"unknown key 2", KEY2, "unknown-cosign-key.signature", "dir-img-cosign-valid",
     "192.168.64.2:5000", "cosign-signed-single-sample", NULL, NOW, VERIFY_DENIED_BAD_SIGNATURE},
    {"skopeo tag", KEY1, "dir-img-cosign-valid-with-tag/signature-1",
     "dir-img-cosign-valid-with-tag", "192.168.64.2:5000", "skopeo-signed", "tag", NOW,
     VERIFY_ALLOWED},
    {"skopeo identity mismatch", KEY1, "dir-img-cosign-valid-with-tag/signature-1",
     "dir-img-cosign-valid-with-tag", "192.168.64.2:5000", "other-repo", "tag", NOW,
     VERIFY_DENIED_IDENTITY},
    {"key + rekor", KEY2_REKOR, "dir-img-cosign-key-rekor-valid/signature-1",
     "dir-img-cosign-key-rekor-valid", "192.168.64.2:5000", "cosign-signed/key-1", NULL, NOW,
     VERIFY_ALLOWED},
    {"rekor required, no SET", KEY2_REKOR, "dir-img-cosign-valid/signature-1",
     "dir-img-cosign-valid", "192.168.64.2:5000", "cosign-signed-single-sample", NULL, NOW,
     VERIFY_DENIED_TLOG},
    {"fulcio + rekor", FULCIO, "dir-img-cosign-fulcio-rekor-valid/signature-1",
     "dir-img-cosign-fulcio-rekor-valid", "192.168.64.2:5000", "cosign-signed/fulcio-rekor-1", NULL,
     NOW, VERIFY_ALLOWED},
    {"fulcio other email", FULCIO_OTHER_EMAIL, "dir-img-cosign-fulcio-rekor-valid/signature-1",
     "dir-img-cosign-fulcio-rekor-valid", "192.168.64.2:5000", "cosign-signed/fulcio-rekor-1", NULL,
     NOW, VERIFY_DENIED_CERT_IDENTITY},
    {"fulcio other issuer", FULCIO_OTHER_ISSUER, "dir-img-cosign-fulcio-rekor-valid/signature-1",
     "dir-img-cosign-fulcio-rekor-valid", "192.168.64.2:5000", "cosign-signed/fulcio-rekor-1", NULL,
     NOW, VERIFY_DENIED_CERT_IDENTITY},
    {"fulcio, key-only signature", FULCIO, "dir-img-cosign-valid/signature-1",
     "dir-img-cosign-valid", "192.168.64.2:5000", "cosign-signed-single-sample", NULL, NOW,
     VERIFY_DENIED_TLOG},
    {"pki", PKI, "dir-img-cosign-pki-valid/signature-1", "dir-img-cosign-pki-valid",
     "localhost:5000", "test", NULL, NOW, VERIFY_ALLOWED},
    {"pki hostname, chain from annotation", PKI_HOST, "dir-img-cosign-pki-valid/signature-1",
     "dir-img-cosign-pki-valid", "localhost:5000", "test", NULL, NOW, VERIFY_ALLOWED},
    {"pki expired", PKI, "dir-img-cosign-pki-valid/signature-1", "dir-img-cosign-pki-valid",
     "localhost:5000", "test", NULL, 4102444800 /* 2100 */, VERIFY_DENIED_CERT_EXPIRED},
};

static verify_reason eval_layer(const char *pol, const verify_cosign_sig *s, size_t n,
                                const char *mdir, const char *reg, const char *repo,
                                const char *tag, int64_t now, verify_verdict *v)
{
    verify_policy *p = policy(pol);
    verify_image img = {reg, repo, tag, {0}};
    manifest_digest(mdir, img.manifest_digest);
    int ok = verify_image_evaluate(p, &img, s, n, NULL, 0, now, v);
    assert_int_equal(ok, v->allowed);
    verify_policy_free(p);
    return v->reason;
}

static void test_containers_image_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof CI_CASES / sizeof CI_CASES[0]; i++) {
        const ci_case *c = &CI_CASES[i];
        char path[256];
        snprintf(path, sizeof path, FIX "%s", c->sig);
        layer l;
        layer_load(&l, path);
        verify_verdict v;
        verify_reason r =
            eval_layer(c->policy, &l.sig, 1, c->manifest, c->registry, c->repo, c->tag, c->now, &v);
        if (r != c->want)
            fail_msg("%s: got %s: %s", c->name, verify_reason_name(r), v.text);
        layer_free(&l);
    }
}

/* The keyless vector with parts removed or broken (PROVENANCE: INVALID if
 * SET removed, cert removed, chain removed). */
static void test_fulcio_negatives(void **state)
{
    (void)state;
    layer l;
    layer_load(&l, FIX "dir-img-cosign-fulcio-rekor-valid/signature-1");
    verify_cosign_sig s = l.sig;
    const char *D = "dir-img-cosign-fulcio-rekor-valid", *R = "cosign-signed/fulcio-rekor-1";
    const char *REG = "192.168.64.2:5000";
    verify_verdict v;
    s.rekor_bundle = NULL;
    assert_int_equal(eval_layer(FULCIO, &s, 1, D, REG, R, NULL, NOW, &v), VERIFY_DENIED_TLOG);
    s = l.sig;
    s.certificate = NULL;
    assert_int_equal(eval_layer(FULCIO, &s, 1, D, REG, R, NULL, NOW, &v),
                     VERIFY_DENIED_CERT_UNTRUSTED);
    s = l.sig;
    s.chain = NULL;
    assert_int_equal(eval_layer(FULCIO, &s, 1, D, REG, R, NULL, NOW, &v),
                     VERIFY_DENIED_CERT_UNTRUSTED);
    /* bad SET: one character of SignedEntryTimestamp changed */
    char *set = strndup(l.sig.rekor_bundle, l.sig.rekor_bundle_len);
    char *sig = strstr(set, "\"SignedEntryTimestamp\":\"") + 24;
    sig[10] = sig[10] == 'A' ? 'B' : 'A';
    s = l.sig;
    s.rekor_bundle = set;
    assert_int_equal(eval_layer(FULCIO, &s, 1, D, REG, R, NULL, NOW, &v), VERIFY_DENIED_TLOG);
    /* SET for another payload: the key-based Rekor vector's SET */
    layer other;
    layer_load(&other, FIX "dir-img-cosign-key-rekor-valid/signature-1");
    s = l.sig;
    s.rekor_bundle = other.sig.rekor_bundle;
    s.rekor_bundle_len = other.sig.rekor_bundle_len;
    assert_int_equal(eval_layer(FULCIO, &s, 1, D, REG, R, NULL, NOW, &v), VERIFY_DENIED_TLOG);
    /* malformed certificate PEM */
    s = l.sig;
    s.certificate = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    s.certificate_len = strlen(s.certificate);
    assert_int_equal(eval_layer(FULCIO, &s, 1, D, REG, R, NULL, NOW, &v), VERIFY_DENIED_MALFORMED);
    /* malformed SET JSON */
    s = l.sig;
    s.rekor_bundle = "{\"SignedEntryTimestamp\":";
    s.rekor_bundle_len = strlen(s.rekor_bundle);
    assert_int_equal(eval_layer(FULCIO, &s, 1, D, REG, R, NULL, NOW, &v), VERIFY_DENIED_MALFORMED);
    free(set);
    layer_free(&other);
    layer_free(&l);
}

/* Rekor SET from internal-testdata: rekor-set over rekor-payload with
 * rekor-sig by rekor-cert (a Fulcio leaf since expired). */
static void test_rekor_set_vector(void **state)
{
    (void)state;
    size_t pn, sn, cn, bn;
    char *payload = slurp(CI "internal-testdata/rekor-payload", &pn);
    char *sig = slurp(CI "internal-testdata/rekor-sig", &sn);
    char *cert = slurp(CI "internal-testdata/rekor-cert", &cn);
    char *set = slurp(CI "internal-testdata/rekor-set", &bn);
    verify_cosign_sig s = {NULL, 0, (uint8_t *)payload, pn, sig, sn, cert, cn, NULL, 0, set, bn};
    char pol[1024];
    snprintf(pol, sizeof pol,
             "{\"default\":[{\"type\":\"sigstoreSigned\",\"fulcio\":{\"caPath\":\"%s\","
             "\"oidcIssuer\":\"https://github.com/login/oauth\",\"subjectEmail\":\"mitr@redhat."
             "com\"},\"rekorPublicKeyPath\":\"%s\",\"signedIdentity\":{\"type\":"
             "\"matchRepository\"}}]}",
             FIX "fulcio_v1.crt.pem", REKOR_PUB);
    verify_policy *p = policy(pol);
    verify_payload pl;
    assert_int_equal(verify_payload_parse(payload, pn, &pl, NULL, 0), 0);
    verify_image img = {"x.io", "y", NULL, {0}};
    verify_digest_parse(pl.manifest_digest, strlen(pl.manifest_digest), img.manifest_digest);
    char *slash = strchr(pl.docker_reference, '/');
    *slash = '\0';
    img.registry = pl.docker_reference;
    img.repository = slash + 1;
    verify_verdict v;
    /* SET and signature verify; the leaf chains only with fulcio-chain. */
    assert_false(verify_image_evaluate(p, &img, &s, 1, NULL, 0, NOW, &v));
    assert_int_equal(v.reason, VERIFY_DENIED_CERT_UNTRUSTED);
    size_t chn;
    char *chain = slurp(FIX "fulcio-chain", &chn);
    s.chain = chain;
    s.chain_len = chn;
    if (!verify_image_evaluate(p, &img, &s, 1, NULL, 0, NOW, &v))
        fail_msg("%s", v.text);
    verify_policy_free(p);
    /* the same SET must fail with an RSA "Rekor" key: refused at load */
    snprintf(pol, sizeof pol,
             "{\"default\":[{\"type\":\"sigstoreSigned\",\"keyPath\":\"%s\","
             "\"rekorPublicKeyPath\":\"%s\"}]}",
             FIX "cosign.pub", FIX "some-rsa-key.pub");
    char err[512];
    assert_null(verify_policy_parse(pol, strlen(pol), "p", NULL, err, sizeof err));
    free(payload);
    free(sig);
    free(cert);
    free(set);
    free(chain);
}

/* ---- generated keys: every algorithm, and the usual attacks ---- */

static verify_verdict eval_generated(const tkey *policy_key, const verify_cosign_sig *sigs,
                                     size_t n, const uint8_t digest[32])
{
    char json[2048], *kd = tkey_pub_b64(policy_key);
    snprintf(json, sizeof json,
             "{\"default\":[{\"type\":\"reject\"}],\"transports\":{\"docker\":{\"reg.example:5000/"
             "app\":[{\"type\":\"sigstoreSigned\",\"keyData\":\"%s\",\"signedIdentity\":{"
             "\"type\":\"matchRepository\"}}]}}}",
             kd);
    free(kd);
    verify_policy *p = policy(json);
    verify_image img = {"reg.example:5000", "app", "v1", {0}};
    memcpy(img.manifest_digest, digest, 32);
    verify_verdict v;
    verify_image_evaluate(p, &img, sigs, n, NULL, 0, NOW, &v);
    verify_policy_free(p);
    return v;
}

static void test_key_algorithms(void **state)
{
    (void)state;
    static const tkey_type types[] = {TKEY_EC_P256, TKEY_EC_P384, TKEY_RSA, TKEY_ED25519};
    uint8_t d[32];
    memset(d, 7, sizeof d);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        tkey *k = tkey_new(types[i]), *other = tkey_new(types[i]);
        tsig s;
        tsig_make(&s, k, "reg.example:5000/app", d);
        verify_verdict v = eval_generated(k, &s.sig, 1, d);
        if (!v.allowed)
            fail_msg("key type %zu: %s", i, v.text);
        v = eval_generated(other, &s.sig, 1, d);
        assert_int_equal(v.reason, VERIFY_DENIED_BAD_SIGNATURE);
        tsig_free(&s);
        tkey_free(k);
        tkey_free(other);
    }
}

static void test_generated_negatives(void **state)
{
    (void)state;
    tkey *k = tkey_new(TKEY_EC_P256);
    uint8_t d[32], d2[32];
    memset(d, 1, sizeof d);
    memset(d2, 2, sizeof d2);
    tsig good, tampered, other_digest, other_repo, bad_b64;
    tsig_make(&good, k, "reg.example:5000/app", d);
    tsig_make(&tampered, k, "reg.example:5000/app", d);
    tampered.payload[strlen(tampered.payload) - 3] = 'X'; /* "null" -> "nuXl" after signing */
    tsig_make(&other_digest, k, "reg.example:5000/app", d2);
    tsig_make(&other_repo, k, "reg.example:5000/evil", d);
    tsig_make(&bad_b64, k, "reg.example:5000/app", d);
    bad_b64.b64[5] = '*';
    verify_verdict v = eval_generated(k, &good.sig, 1, d);
    assert_true(v.allowed);
    assert_int_equal(eval_generated(k, &tampered.sig, 1, d).reason, VERIFY_DENIED_BAD_SIGNATURE);
    assert_int_equal(eval_generated(k, &other_digest.sig, 1, d).reason,
                     VERIFY_DENIED_DIGEST_MISMATCH);
    assert_int_equal(eval_generated(k, &other_repo.sig, 1, d).reason, VERIFY_DENIED_IDENTITY);
    assert_int_equal(eval_generated(k, &bad_b64.sig, 1, d).reason, VERIFY_DENIED_MALFORMED);
    assert_int_equal(eval_generated(k, NULL, 0, d).reason, VERIFY_DENIED_NO_SIGNATURE);
    /* a signed payload that is not valid JSON */
    tsig junk;
    tsig_over(&junk, k, strdup("{\"critical\":"));
    assert_int_equal(eval_generated(k, &junk.sig, 1, d).reason, VERIFY_DENIED_MALFORMED);
    /* several signatures: one good one is enough, reasons listed otherwise */
    verify_cosign_sig many[3] = {tampered.sig, other_repo.sig, good.sig};
    assert_true(eval_generated(k, many, 3, d).allowed);
    v = eval_generated(k, many, 2, d);
    assert_false(v.allowed);
    assert_non_null(strstr(v.text, "none of the 2 signatures"));
    assert_non_null(strstr(v.text, "signature 2: signature for identity"));
    tsig_free(&good);
    tsig_free(&tampered);
    tsig_free(&other_digest);
    tsig_free(&other_repo);
    tsig_free(&bad_b64);
    tsig_free(&junk);
    tkey_free(k);
}

static void test_scope_requirements(void **state)
{
    (void)state;
    verify_policy *p = policy("{\"default\":[{\"type\":\"reject\"}],\"transports\":{\"docker\":{"
                              "\"open.example\":[{\"type\":\"insecureAcceptAnything\"}]}}}");
    verify_image img = {"open.example", "x", NULL, {0}};
    verify_verdict v;
    assert_true(verify_image_evaluate(p, &img, NULL, 0, NULL, 0, NOW, &v));
    img.registry = "closed.example";
    assert_false(verify_image_evaluate(p, &img, NULL, 0, NULL, 0, NOW, &v));
    assert_int_equal(v.reason, VERIFY_DENIED_REJECTED);
    img.registry = "bad registry";
    assert_false(verify_image_evaluate(p, &img, NULL, 0, NULL, 0, NOW, &v));
    assert_int_equal(v.reason, VERIFY_DENIED_MALFORMED);
    verify_policy_free(p);
}

/* Which verdicts depend on the time they are made: only PKI chains
 * (checked at `now`); keys and keyless (Rekor time) do not. */
static void test_time_dependence(void **state)
{
    (void)state;
    const char *const policies[] = {PKI, PKI_HOST, KEY1, FULCIO};
    const int want[] = {1, 1, 0, 0};
    for (size_t i = 0; i < 4; i++) {
        verify_policy *p = policy(policies[i]);
        verify_requirements r;
        assert_int_equal(verify_policy_requirements(p, "localhost:5000", "test", NULL, &r), 0);
        assert_int_equal(r.checks_now, want[i]);
        verify_policy_free(p);
    }
    /* and a PKI verdict does change with the time of evaluation */
    layer l;
    layer_load(&l, FIX "dir-img-cosign-pki-valid/signature-1");
    verify_verdict v;
    assert_int_equal(eval_layer(PKI, &l.sig, 1, "dir-img-cosign-pki-valid", "localhost:5000",
                                "test", NULL, NOW, &v),
                     VERIFY_ALLOWED);
    assert_int_equal(eval_layer(PKI, &l.sig, 1, "dir-img-cosign-pki-valid", "localhost:5000",
                                "test", NULL, 4102444800, &v),
                     VERIFY_DENIED_CERT_EXPIRED);
    layer_free(&l);
}

/* ---- Sigstore bundles ---- */

typedef struct {
    int pass, fail;
} tally;

static int conformance_case(const char *name)
{
    char dir[512], path[600], root[600], art[600], *id, *iss, *bundle;
    size_t bl, al;
    snprintf(dir, sizeof dir, CONF "%s/", name);
    snprintf(path, sizeof path, "%sbundle.sigstore.json", dir);
    bundle = slurp(path, &bl);
    if (bundle == NULL)
        return -1;
    snprintf(root, sizeof root, "%strusted_root.json", dir);
    struct stat st;
    char err[512];
    verify_trust_root *r =
        verify_trust_root_load(stat(root, &st) == 0 ? root : PROD_ROOT, err, sizeof err);
    assert_non_null(r);
    snprintf(art, sizeof art, "%sartifact", dir);
    char *artifact = slurp(stat(art, &st) == 0 ? art : CONF "a.txt", &al);
    snprintf(path, sizeof path, "%sidentity", dir);
    id = slurp(path, NULL);
    snprintf(path, sizeof path, "%sissuer", dir);
    iss = slurp(path, NULL);
    snprintf(path, sizeof path, "%skey.pub", dir);
    verify_pubkey *key = stat(path, &st) == 0 ? verify_pubkey_load(path, err, sizeof err) : NULL;
    verify_bundle_opts o = {
        .trust_root = r,
        .key = key,
        .san = key  ? NULL
               : id ? id
                    : "https://github.com/sigstore-conformance/extremely-dangerous-public-"
                      "oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@"
                      "refs/heads/main",
        .issuer = key   ? NULL
                  : iss ? iss
                        : "https://token.actions.githubusercontent.com",
        .artifact = (uint8_t *)artifact,
        .artifact_len = al,
        .now = NOW};
    verify_bundle_result res;
    int ok = verify_bundle(bundle, bl, &o, &res);
    assert_int_equal(ok, res.verdict.allowed);
    verify_pubkey_free(key);
    verify_trust_root_free(r);
    free(bundle);
    free(artifact);
    free(id);
    free(iss);
    return ok;
}

static void test_conformance_vectors(void **state)
{
    (void)state;
    DIR *d = opendir(CONF);
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int ok = conformance_case(e->d_name);
        if (ok < 0)
            continue; /* README.md, a.txt */
        size_t len = strlen(e->d_name);
        int want = !(len > 5 && strcmp(e->d_name + len - 5, "_fail") == 0);
        if (ok != want)
            fail_msg("%s: %s", e->d_name, ok ? "verified, must fail" : "failed, must verify");
        n++;
    }
    closedir(d);
    assert_int_equal(n, 70); /* every directory of bundle-verify/ */
}

static int run_bundle(const char *bundle_path, const char *root_path, const char *digest,
                      const char *key_path, const char *san, const char *issuer,
                      verify_bundle_result *res)
{
    size_t bl;
    char err[512], *bundle = slurp(bundle_path, &bl);
    verify_trust_root *r = verify_trust_root_load(root_path, err, sizeof err);
    assert_non_null(bundle);
    assert_non_null(r);
    verify_pubkey *key = key_path ? verify_pubkey_load(key_path, err, sizeof err) : NULL;
    verify_bundle_opts o = {.trust_root = r,
                            .key = key,
                            .san = san,
                            .issuer = issuer,
                            .artifact_digest = digest,
                            .now = NOW};
    int ok = verify_bundle(bundle, bl, &o, res);
    verify_pubkey_free(key);
    verify_trust_root_free(r);
    free(bundle);
    return ok;
}

#define COSIGN_DIGEST "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
#define NPM_DIGEST                                                                                 \
    "sha512:"                                                                                      \
    "76176ffa33808b54602c7c35de5c6e9a4deb96066dba6533f50ac234f4f1f4c6b3527515dc17c06fbe2860"       \
    "030f410eee69ea20079bd3a2c6f3dcf3b329b10751"

static void test_cosign_bundle(void **state)
{
    (void)state;
    verify_bundle_result r;
    const char *B = "data/sigstore/cosign/oci-attestation.sigstore.json";
    const char *R = "data/sigstore/cosign/trusted_root_pgi.json";
    assert_true(run_bundle(B, R, COSIGN_DIGEST, NULL, "cody@soyland.com",
                           "https://github.com/login/oauth", &r));
    assert_int_equal(r.signed_time, 1740770291);
    assert_string_equal(r.payload_type, "application/vnd.in-toto+json");
    assert_false(run_bundle(B, R,
                            "sha256:"
                            "0000000000000000000000000000000000000000000000000000000000000001",
                            NULL, NULL, NULL, &r));
    assert_int_equal(r.verdict.reason, VERIFY_DENIED_DIGEST_MISMATCH);
    assert_false(run_bundle(B, R, COSIGN_DIGEST, NULL, "wrong", NULL, &r));
    assert_int_equal(r.verdict.reason, VERIFY_DENIED_CERT_IDENTITY);
    assert_false(run_bundle(B, R, COSIGN_DIGEST, NULL, NULL, "https://accounts.google.com", &r));
    assert_int_equal(r.verdict.reason, VERIFY_DENIED_CERT_IDENTITY);
    /* the production root of today knows the same Rekor key and Fulcio CA */
    assert_true(run_bundle(B, PROD_ROOT, COSIGN_DIGEST, NULL, NULL, NULL, &r));
}

static void test_sigstore_go_bundles(void **state)
{
    (void)state;
    verify_bundle_result r;
    const char *PG = SGO "examples/trusted-root-public-good.json";
    assert_true(run_bundle(SGO "examples/bundle-provenance.json", PG, NPM_DIGEST, NULL, NULL,
                           "https://token.actions.githubusercontent.com", &r));
    assert_int_equal(strncmp(r.san, "https://github.com/sigstore/sigstore-js/", 40), 0);
    assert_true(run_bundle(SGO "examples/bundle-publish.json", PG, NPM_DIGEST,
                           SGO "examples/publish_key.pub", NULL, NULL, &r));
    assert_false(
        run_bundle(SGO "examples/bundle-publish.json", PG, NPM_DIGEST, NULL, NULL, NULL, &r));
    const char *JS = SGO "testing-data/bundles/sigstore.js@2.0.0-provenance.sigstore.json";
    json_t *b = json_load_file(JS, 0, NULL);
    const char *payload =
        json_string_value(json_object_get(json_object_get(b, "dsseEnvelope"), "payload"));
    size_t pl = strlen(payload);
    char *stmt = malloc(pl);
    EVP_DecodeBlock((unsigned char *)stmt, (const unsigned char *)payload, (int)pl);
    json_t *st = json_loads(stmt, JSON_DISABLE_EOF_CHECK, NULL);
    json_t *dg = json_object_get(json_array_get(json_object_get(st, "subject"), 0), "digest");
    char digest[200];
    snprintf(digest, sizeof digest, "sha512:%s", json_string_value(json_object_get(dg, "sha512")));
    assert_true(run_bundle(JS, PG, digest, NULL,
                           "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@"
                           "refs/heads/main",
                           "https://token.actions.githubusercontent.com", &r));
    assert_false(run_bundle(SGO "testing-data/bundles/dsse-2sigs.sigstore.json", PG, digest, NULL,
                            NULL, NULL, &r));
    assert_non_null(strstr(r.verdict.text, "exactly one signature"));
    json_decref(st);
    json_decref(b);
    free(stmt);
    const char *ON = SGO "testing-data/bundles/othername.sigstore.json";
    const char *SC = SGO "testing-data/trusted-roots/scaffolding.json";
    const char *OD = "sha256:bc103b4a84971ef6459b294a2b98568a2bfb72cded09d4acd1e16366a401f95b";
    assert_true(run_bundle(ON, SC, OD, NULL, "foo!oidc.local", "http://oidc.local:8080", &r));
    assert_false(run_bundle(ON, SC, OD, NULL, "foo@oidc.local", NULL, &r));
    assert_int_equal(r.verdict.reason, VERIFY_DENIED_CERT_IDENTITY);
}

static void test_public_key_validity(void **state)
{
    (void)state;
    size_t bl;
    char err[512],
        *bundle = slurp(SGO "testing-data/bundles/public-key-validity.sigstore.json", &bl);
    verify_trust_root *r = verify_trust_root_load(
        SGO "testing-data/trusted-roots/public-key-validity.json", err, sizeof err);
    verify_pubkey *k =
        verify_pubkey_load(SGO "testing-data/public-keys/public-key-validity.pem", err, sizeof err);
    static const uint8_t content[] = "test content";
    verify_bundle_opts o = {.trust_root = r,
                            .key = k,
                            .artifact = content,
                            .artifact_len = 12,
                            .allow_no_tlog = 1,
                            .now = NOW};
    verify_bundle_result res;
    assert_true(verify_bundle(bundle, bl, &o, &res));
    o.key_not_before = 0;
    o.key_not_after = 1;
    assert_false(verify_bundle(bundle, bl, &o, &res));
    assert_non_null(strstr(res.verdict.text, "validity window"));
    o.key_not_after = 0;
    o.allow_no_tlog = 0; /* by default a transparency-log entry is required */
    assert_false(verify_bundle(bundle, bl, &o, &res));
    assert_int_equal(res.verdict.reason, VERIFY_DENIED_TLOG);
    verify_pubkey_free(k);
    verify_trust_root_free(r);
    free(bundle);
}

static void test_bundle_malformed(void **state)
{
    (void)state;
    char err[512];
    verify_trust_root *r = verify_trust_root_load(PROD_ROOT, err, sizeof err);
    static const char *const bad[] = {
        "",
        "{",
        "[]",
        "{\"mediaType\":\"application/vnd.dev.sigstore.bundle.v0.3+json\"}",
        "{\"mediaType\":\"application/vnd.dev.sigstore.bundle.v0.3+json\",\"verificationMaterial\":"
        "{\"publicKey\":{\"hint\":\"x\"}},\"messageSignature\":{\"messageDigest\":{\"algorithm\":"
        "\"SHA2_256\",\"digest\":\"@@@@\"},\"signature\":\"AAAA\"}}",
        "{\"mediaType\":\"application/vnd.dev.sigstore.bundle.v0.3+json\",\"verificationMaterial\":"
        "{\"certificate\":{\"rawBytes\":\"AAAA\"}},\"dsseEnvelope\":{\"payload\":\"\","
        "\"payloadType\":\"x\",\"signatures\":[]}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        verify_bundle_opts o = {.trust_root = r, .artifact_digest = COSIGN_DIGEST, .now = NOW};
        verify_bundle_result res;
        assert_false(verify_bundle(bad[i], strlen(bad[i]), &o, &res));
        assert_int_not_equal(res.verdict.reason, VERIFY_ALLOWED);
    }
    verify_trust_root_free(r);
    assert_null(verify_trust_root_parse("{\"mediaType\":\"x\"}", 17, err, sizeof err));
    assert_null(verify_trust_root_parse("{\"mediaType\":\"application/vnd.dev.sigstore.trustedroot+"
                                        "json;version=0.1\",\"tlogs\":{}}",
                                        80, err, sizeof err));
    assert_null(verify_pubkey_parse("-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n",
                                    57, err, sizeof err));
    verify_certs *c = verify_certs_new();
    assert_int_equal(verify_certs_add(c, "-----BEGIN CERTIFICATE-----\n!!\n", 31, err, sizeof err),
                     -1);
    assert_int_equal(verify_certs_count(c), 0);
    verify_certs_free(c);
}

/* Image evaluation with a cosign v3-style bundle from the referrers. */
static void test_image_with_bundle(void **state)
{
    (void)state;
    size_t a, b, bl;
    char *inter = slurp("data/sigstore/root-signing/targets/fulcio_intermediate_v1.crt.pem", &a);
    char *root = slurp("data/sigstore/root-signing/targets/fulcio_v1.crt.pem", &b);
    char both[8192], json[16384];
    snprintf(both, sizeof both, "%s\n%s", inter, root); /* the first has no final newline */
    char *ca = tb64((uint8_t *)both, strlen(both));
    snprintf(json, sizeof json,
             "{\"default\":[{\"type\":\"reject\"}],\"transports\":{\"docker\":{\"127.0.0.1:60943\":"
             "[{\"type\":\"sigstoreSigned\",\"fulcio\":{\"caData\":\"%s\",\"oidcIssuer\":"
             "\"https://github.com/login/oauth\",\"subjectEmail\":\"cody@soyland.com\"},"
             "\"rekorPublicKeyPath\":\"data/sigstore/root-signing/targets/rekor.pub\","
             "\"signedIdentity\":{\"type\":\"matchRepository\"}}]}}}",
             ca);
    verify_policy *p = policy(json);
    char *bundle = slurp("data/sigstore/cosign/oci-attestation.sigstore.json", &bl);
    verify_buf buf = {(uint8_t *)bundle, bl};
    verify_image img = {"127.0.0.1:60943", "repo", "latest", {0}};
    verify_digest_parse(COSIGN_DIGEST, strlen(COSIGN_DIGEST), img.manifest_digest);
    verify_verdict v;
    if (!verify_image_evaluate(p, &img, NULL, 0, &buf, 1, NOW, &v))
        fail_msg("%s", v.text);
    img.repository = "other";
    assert_false(verify_image_evaluate(p, &img, NULL, 0, &buf, 1, NOW, &v));
    assert_int_equal(v.reason, VERIFY_DENIED_IDENTITY);
    img.repository = "repo";
    img.manifest_digest[0] ^= 1;
    assert_false(verify_image_evaluate(p, &img, NULL, 0, &buf, 1, NOW, &v));
    assert_int_equal(v.reason, VERIFY_DENIED_DIGEST_MISMATCH);
    verify_policy_free(p);
    free(inter);
    free(root);
    free(ca);
    free(bundle);
}

/* Keyless bundles made by sigstore-js against its mock Fulcio and Rekor
 * (data/sigstore/sigstore-js-mock/PROVENANCE.md). Two things real bundles
 * do that the verifier once refused: cosign v3 writes no subject name in
 * its statement (the image the bundle is attached to is the identity), and
 * protobuf JSON leaves out zero values, so the inclusion proof of the first
 * entry of a log has no "logIndex" (nor "hashes"). */
#define JSM "data/sigstore/sigstore-js-mock/"
#define JSM_DIGEST "sha256:1f652fe1e485225bbe82b54d58dcceb6a0677d6d572fe1d9008995224df96ff6"

static verify_policy *mock_policy(const char *email, const char *issuer, const char *identity)
{
    char json[2048];
    snprintf(
        json, sizeof json,
        "{\"default\":[{\"type\":\"reject\"}],\"transports\":{\"docker\":{\"registry.example\":"
        "[{\"type\":\"sigstoreSigned\",\"fulcio\":{\"caPath\":\"" JSM "fulcio-root.pem\","
        "\"oidcIssuer\":\"%s\",\"subjectEmail\":\"%s\"},\"rekorPublicKeyPath\":\"" JSM
        "rekor.pub.pem\"%s}]}}}",
        issuer, email, identity);
    return policy(json);
}

static verify_reason eval_mock(const verify_policy *p, const char *bundle_file, const char *repo,
                               const char *tag, int64_t now)
{
    char path[256];
    size_t bl;
    snprintf(path, sizeof path, JSM "%s", bundle_file);
    char *bundle = slurp(path, &bl);
    assert_non_null(bundle);
    verify_buf buf = {(uint8_t *)bundle, bl};
    verify_image img = {"registry.example", repo, tag, {0}};
    verify_digest_parse(JSM_DIGEST, strlen(JSM_DIGEST), img.manifest_digest);
    verify_verdict v;
    int ok = verify_image_evaluate(p, &img, NULL, 0, &buf, 1, now, &v);
    assert_int_equal(ok, v.allowed);
    free(bundle);
    return v.reason;
}

static void test_mock_keyless_bundles(void **state)
{
    (void)state;
    static const char *const V3 = "cosign-v3-style.sigstore.json";
    static const char *const NAMED = "named-subject.sigstore.json";
    const char *E = "builder@vendor.example", *I = "https://issuer.vendor.example";
    verify_policy *p = mock_policy(E, I, "");
    /* no subject name: the image itself, by tag or by digest, at any time (the
     * certificate lived ten minutes; signing time is Rekor's) */
    assert_int_equal(eval_mock(p, V3, "drivers/nvme", "v1", (int64_t)time(NULL)), VERIFY_ALLOWED);
    assert_int_equal(eval_mock(p, V3, "drivers/nvme", NULL, 4102444800), VERIFY_ALLOWED);
    /* a named subject is the signed identity: a bare repository is not an exact reference */
    assert_int_equal(eval_mock(p, NAMED, "drivers/nvme", "v1", NOW), VERIFY_DENIED_IDENTITY);
    verify_policy_free(p);
    p = mock_policy(E, I, ",\"signedIdentity\":{\"type\":\"matchRepository\"}");
    assert_int_equal(eval_mock(p, NAMED, "drivers/nvme", "v1", NOW), VERIFY_ALLOWED);
    assert_int_equal(eval_mock(p, NAMED, "drivers/other", "v1", NOW), VERIFY_DENIED_IDENTITY);
    assert_int_equal(eval_mock(p, V3, "drivers/other", "v1", NOW), VERIFY_ALLOWED);
    verify_policy_free(p);
    p = mock_policy(E, I,
                    ",\"signedIdentity\":{\"type\":\"exactRepository\",\"dockerRepository\":"
                    "\"registry.example/drivers/other\"}");
    assert_int_equal(eval_mock(p, V3, "drivers/nvme", "v1", NOW), VERIFY_DENIED_IDENTITY);
    assert_int_equal(eval_mock(p, V3, "drivers/other", "v1", NOW), VERIFY_ALLOWED);
    verify_policy_free(p);
    p = mock_policy("someone@vendor.example", I, "");
    assert_int_equal(eval_mock(p, V3, "drivers/nvme", "v1", NOW), VERIFY_DENIED_CERT_IDENTITY);
    verify_policy_free(p);
    p = mock_policy(E, "https://accounts.example", "");
    assert_int_equal(eval_mock(p, V3, "drivers/nvme", "v1", NOW), VERIFY_DENIED_CERT_IDENTITY);
    verify_policy_free(p);
}

/* ---- one policy, many threads ---- */

typedef struct {
    const verify_policy *p;
    const verify_cosign_sig *s;
    int allowed;
} worker_arg;

static void *worker(void *arg)
{
    worker_arg *w = arg;
    w->allowed = 1;
    for (int i = 0; i < 20; i++) {
        verify_image img = {"192.168.64.2:5000", "cosign-signed-single-sample", NULL, {0}};
        manifest_digest("dir-img-cosign-valid", img.manifest_digest);
        verify_verdict v;
        w->allowed &= verify_image_evaluate(w->p, &img, w->s, 1, NULL, 0, NOW, &v);
    }
    return NULL;
}

static void test_concurrent_evaluation(void **state)
{
    (void)state;
    verify_policy *p = policy(KEY1);
    layer l;
    layer_load(&l, FIX "dir-img-cosign-valid/signature-1");
    pthread_t t[4];
    worker_arg w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_arg){p, &l.sig, 0};
        assert_int_equal(pthread_create(&t[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_true(w[i].allowed);
    }
    layer_free(&l);
    verify_policy_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payload_valid),
        cmocka_unit_test(test_payload_invalid),
        cmocka_unit_test(test_containers_image_vectors),
        cmocka_unit_test(test_fulcio_negatives),
        cmocka_unit_test(test_rekor_set_vector),
        cmocka_unit_test(test_key_algorithms),
        cmocka_unit_test(test_generated_negatives),
        cmocka_unit_test(test_scope_requirements),
        cmocka_unit_test(test_time_dependence),
        cmocka_unit_test(test_conformance_vectors),
        cmocka_unit_test(test_cosign_bundle),
        cmocka_unit_test(test_sigstore_go_bundles),
        cmocka_unit_test(test_public_key_validity),
        cmocka_unit_test(test_bundle_malformed),
        cmocka_unit_test(test_image_with_bundle),
        cmocka_unit_test(test_mock_keyless_bundles),
        cmocka_unit_test(test_concurrent_evaluation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
