/*
 * fuzz_payload.c — libFuzzer target for untrusted signature data: the
 * simple-signing payload parser (verify/payload.c), the cosign signature
 * path of image evaluation (base64 signature, Rekor SET annotation JSON,
 * certificate PEM) and the Sigstore bundle parser (verify/bundle.c).
 *
 * How it works: the input is tried as a payload, as every annotation of a
 * .sig layer against fixed policies (a key policy and a Fulcio+Rekor
 * policy, built in memory with a fixed test key), and as a bundle against
 * an empty trusted root. Inputs are heap copies of exactly their length so
 * that ASan sees any over-read. The target aborts when a parsed payload
 * breaks its contract (empty reference, invalid digest) or when any input
 * is allowed (nothing can carry a valid signature by the fixed key).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* An ECDSA P-256 public key (base64 of its PEM) whose private key is not
 * known to the fuzzer. */
static const char KEY_B64[] =
    "LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0KTUZrd0V3WUhLb1pJemowQ0FRWUlLb1pJemowREFRY0RRZ0FFQmZZR1NM"
    "QmhncFJnMzVHTkxQcXd5THRORkhKYgpmSzNFRlBUKytIT3Y0RDhwS1Z5V1JBRnRBZUhVS2RMKzFuc1BjbG9oUllrR3lz"
    "WUJXUGl2cWNwaFlnPT0KLS0tLS1FTkQgUFVCTElDIEtFWS0tLS0tCg==";

static verify_policy *policies[2];
static verify_trust_root *root;

static void init(void)
{
    static const char *const docs[] = {
        "{\"default\":[{\"type\":\"sigstoreSigned\",\"keyData\":\"%s\",\"rekorPublicKeyData\":"
        "\"%s\",\"signedIdentity\":{\"type\":\"matchRepository\"}}]}",
        "{\"default\":[{\"type\":\"sigstoreSigned\",\"keyData\":\"%s\"}]}",
    };
    char json[2048], err[1024];
    for (int i = 0; i < 2; i++) {
        snprintf(json, sizeof json, docs[i], KEY_B64, KEY_B64);
        policies[i] = verify_policy_parse(json, strlen(json), "fuzz", NULL, err, sizeof err);
        CHECK(policies[i] != NULL);
    }
    const char *tr =
        "{\"mediaType\":\"application/vnd.dev.sigstore.trustedroot+json;version=0.1\"}";
    root = verify_trust_root_parse(tr, strlen(tr), err, sizeof err);
    CHECK(root != NULL);
}

static void fuzz_payload(const char *p, size_t n)
{
    verify_payload pl;
    if (verify_payload_parse(p, n, &pl, NULL, 0) != 0)
        return;
    CHECK(pl.docker_reference[0] != '\0');
    CHECK(strncmp(pl.manifest_digest, "sha", 3) == 0);
}

static void fuzz_layer(const char *p, size_t n)
{
    static const char payload[] = "{\"critical\":{\"identity\":{\"docker-reference\":\"r.io/a\"},"
                                  "\"image\":{\"docker-manifest-digest\":\"sha256:0000000000000000"
                                  "000000000000000000000000000000000000000000000000\"},\"type\":"
                                  "\"cosign container image signature\"},\"optional\":null}";
    verify_cosign_sig sigs[4] = {
        {NULL, 0, (const uint8_t *)p, n, "MEUCIQ==", 8, NULL, 0, NULL, 0, NULL, 0},
        {NULL, 0, (const uint8_t *)payload, sizeof payload - 1, p, n, NULL, 0, NULL, 0, NULL, 0},
        {NULL, 0, (const uint8_t *)payload, sizeof payload - 1, "MEUCIQ==", 8, p, n, p, n, p, n},
        {p, n, (const uint8_t *)payload, sizeof payload - 1, "MEUCIQ==", 8, NULL, 0, NULL, 0, p, n},
    };
    verify_buf bundle = {(const uint8_t *)p, n};
    verify_image img = {"r.io", "a", NULL, {0}};
    for (int i = 0; i < 2; i++) {
        verify_verdict v;
        CHECK(!verify_image_evaluate(policies[i], &img, sigs, 4, &bundle, 1, 1700000000, &v));
        CHECK(v.reason != VERIFY_ALLOWED && v.text[0] != '\0');
    }
}

static void fuzz_bundle(const char *p, size_t n)
{
    verify_bundle_opts o = {.trust_root = root,
                            .artifact_digest = "sha256:000000000000000000000000000000000000000000"
                                               "0000000000000000000000",
                            .now = 1700000000};
    verify_bundle_result r;
    CHECK(!verify_bundle(p, n, &o, &r));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (policies[0] == NULL)
        init();
    char *copy = malloc(size ? size : 1);
    CHECK(copy != NULL);
    memcpy(copy, data, size);
    fuzz_payload(copy, size);
    fuzz_layer(copy, size);
    fuzz_bundle(copy, size);
    free(copy);
    return 0;
}
