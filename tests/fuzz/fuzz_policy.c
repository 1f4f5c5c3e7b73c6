/*
 * fuzz_policy.c — libFuzzer target for the containers-policy.json(5) loader
 * (verify/policy.c, reference.c) and scope lookup.
 *
 * How it works: each input is parsed as a policy document (files named by
 * keyPath etc. do not exist under the fuzzer, so loading fails cleanly
 * there; inline keyData/caData are decoded and parsed). When it loads, the
 * requirements of a few fixed images are looked up and an image with no
 * signatures is evaluated. Besides memory and UB errors, the target aborts
 * when a result breaks verify.h's contract: a failed load without an error
 * message, an allowed verdict for a scope that is not all
 * insecureAcceptAnything, or a verdict whose reason disagrees with it.
 *
 * Run: see meson.build here; seeds in corpus/fuzz_policy.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "verify.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static void probe(const verify_policy *p, const char *reg, const char *repo, const char *tag)
{
    verify_requirements r;
    if (verify_policy_requirements(p, reg, repo, tag, &r) != 0)
        return;
    CHECK(r.count > 0 || r.is_global_default);
    verify_image img = {reg, repo, tag, {0}};
    verify_verdict v;
    int ok = verify_image_evaluate(p, &img, NULL, 0, NULL, 0, 1700000000, &v);
    CHECK(ok == v.allowed && (v.reason == VERIFY_ALLOWED) == (v.allowed == 1));
    CHECK(!ok || r.accept_anything);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    CHECK(copy != NULL);
    memcpy(copy, data, size);
    char err[1024] = "";
    verify_policy *p = verify_policy_parse(copy, size, "fuzz", NULL, err, sizeof err);
    if (p == NULL) {
        CHECK(err[0] != '\0');
    } else {
        uint8_t h[VERIFY_DIGEST_LEN];
        verify_policy_hash(p, h);
        probe(p, "docker.io", "library/busybox", "latest");
        probe(p, "reg.example.com:5000", "team/app", NULL);
        probe(p, "a.b.example.com", "x/y/z", "v1");
        verify_policy_free(p);
    }
    free(copy);
    return 0;
}
