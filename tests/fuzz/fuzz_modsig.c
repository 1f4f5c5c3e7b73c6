/*
 * fuzz_modsig.c — libFuzzer target for kernel-module blobs
 * (verify/module.c): the appended-signature trailer, the CMS SignerInfo
 * parse and the ELF/.modinfo reader.
 *
 * How it works: each input is parsed as it is, and again with a valid
 * trailer (struct module_signature + magic) appended whose sig_len covers a
 * suffix of the input chosen by its first byte, so that mutations reach the
 * CMS parser and the ELF reader quickly. Buffers are heap copies of exactly
 * their length. The target aborts when a result breaks verify.h's
 * contract: signature offsets outside the blob, a module verdict of
 * "allowed" (no certificate is configured), or is_module disagreeing
 * between verify_module_is_module and verify_module_parse.
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

#define MAGIC VERIFY_MODULE_MAGIC
#define MAGIC_LEN (sizeof MAGIC - 1)

static verify_certs *empty;

static void check_blob(const uint8_t *p, size_t n)
{
    verify_module_info info;
    char err[256];
    if (verify_module_parse(p, n, &info, err, sizeof err) == 0) {
        CHECK(info.content_len <= n);
        if (info.has_signature)
            CHECK(info.sig_offset == info.content_len &&
                  info.sig_offset + info.sig_len + 12 + MAGIC_LEN == n);
        CHECK(info.is_module == verify_module_is_module(p, n));
    }
    verify_verdict v;
    CHECK(!verify_module_verify(p, n, empty, NULL, &v));
    CHECK(v.reason != VERIFY_ALLOWED);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (empty == NULL)
        empty = verify_certs_new();
    uint8_t *raw = malloc(size ? size : 1);
    CHECK(raw != NULL);
    memcpy(raw, data, size);
    check_blob(raw, size);
    free(raw);

    size_t sig_len = size > 0 ? (size * data[0]) / 256 : 0;
    size_t n = size + 12 + MAGIC_LEN;
    uint8_t *b = malloc(n);
    CHECK(b != NULL);
    memcpy(b, data, size);
    static const uint8_t head[8] = {0, 0, 2, 0, 0, 0, 0, 0};
    memcpy(b + size, head, 8);
    for (int i = 0; i < 4; i++)
        b[size + 8 + i] = (uint8_t)(sig_len >> (24 - 8 * i));
    memcpy(b + size + 12, MAGIC, MAGIC_LEN);
    check_blob(b, n);
    free(b);
    return 0;
}
