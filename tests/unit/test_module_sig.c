/*
 * test_module_sig.c — unit tests for kernel-module signatures (verify/
 * module.c) and the `sluice verify --file` CLI (proxy/cmd_verify.c).
 *
 * Vectors: data/sigstore/kernel-module (Debian sign-file and kmod, with
 * PROVENANCE.md), data/module-sig (made by its make.sh with the openssl
 * CLI), data/modules/nvme-core (real Debian modules, signed with a key we do
 * not have). Malformed trailers are also built in memory so that ASan sees
 * every read against an exact-length buffer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cmd_verify.h"
#include "verify.h"

#define DEB "data/sigstore/kernel-module/debian-sign-file/"
#define OWN "data/module-sig/"
#define MAGIC VERIFY_MODULE_MAGIC
#define MAGIC_LEN (sizeof MAGIC - 1)

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static verify_certs *certs_of(const char *a, const char *b)
{
    verify_certs *c = verify_certs_new();
    char err[512];
    assert_non_null(c);
    if (a != NULL)
        assert_int_equal(verify_certs_add_file(c, a, err, sizeof err), 0);
    if (b != NULL)
        assert_int_equal(verify_certs_add_file(c, b, err, sizeof err), 0);
    return c;
}

static verify_reason check_file(const char *path, const char *cert, verify_module_info *info)
{
    size_t n;
    uint8_t *p = slurp(path, &n);
    verify_certs *c = certs_of(cert, NULL);
    verify_verdict v;
    int ok = verify_module_verify(p, n, c, info, &v);
    assert_int_equal(ok, v.allowed);
    assert_int_equal(v.allowed, v.reason == VERIFY_ALLOWED);
    verify_certs_free(c);
    free(p);
    return v.reason;
}

/* ---- Debian sign-file vectors (PROVENANCE.md table) ---- */

static void test_debian_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *file, *cert;
        verify_reason want;
    } cases[] = {
        {"mod-simple.rsa-sha256.ko", "rsa_signing_key.crt.pem", VERIFY_ALLOWED},
        {"mod-simple.rsa-sha256.ko", "rsa_signing_key.x509", VERIFY_ALLOWED},
        {"mod-simple.rsa-sha256.ko", "ec_signing_key.crt.pem", VERIFY_DENIED_CERT_UNTRUSTED},
        {"mod-simple.rsa-sha256-keyid.ko", "rsa_signing_key.crt.pem", VERIFY_ALLOWED},
        {"mod-simple.rsa-sha512.ko", "rsa_signing_key.crt.pem", VERIFY_ALLOWED},
        {"mod-simple.ecdsa-p384-sha384.ko", "ec_signing_key.crt.pem", VERIFY_ALLOWED},
        {"mod-simple.ecdsa-p384-sha384.ko", "rsa_signing_key.x509", VERIFY_DENIED_CERT_UNTRUSTED},
        {"mod-simple.rsa-sha256.tampered.ko", "rsa_signing_key.crt.pem",
         VERIFY_DENIED_BAD_SIGNATURE},
        {"mod-simple-x86_64.unsigned.ko", "rsa_signing_key.crt.pem", VERIFY_DENIED_NO_SIGNATURE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[256], cert[256];
        snprintf(path, sizeof path, DEB "%s", cases[i].file);
        snprintf(cert, sizeof cert, DEB "%s", cases[i].cert);
        verify_module_info info;
        verify_reason r = check_file(path, cert, &info);
        if (r != cases[i].want)
            fail_msg("%s with %s: got %s", cases[i].file, cases[i].cert, verify_reason_name(r));
        assert_true(info.is_module);
        assert_string_equal(info.vermagic, "3.19.0 SMP mod_unload ");
    }
}

static void test_debian_signer_info(void **state)
{
    (void)state;
    verify_module_info info;
    check_file(DEB "mod-simple.rsa-sha256.ko", DEB "rsa_signing_key.crt.pem", &info);
    assert_true(info.has_signature);
    assert_int_equal(info.sig_len, 686);
    assert_string_equal(info.signer, "sigstore-offline test module signing key");
    assert_false(info.key_id_is_skid);
    assert_int_equal(strncmp(info.key_id, "7f4b4c48", 8), 0);
    assert_string_equal(info.hash_algo, "sha256");
    check_file(DEB "mod-simple.rsa-sha256-keyid.ko", DEB "rsa_signing_key.crt.pem", &info);
    assert_true(info.key_id_is_skid);
    assert_int_equal(info.sig_len, 631);
    assert_int_equal(strncmp(info.key_id, "2736310f", 8), 0); /* SKID 27:36:31:0F:... */
    check_file(DEB "mod-simple.ecdsa-p384-sha384.ko", DEB "ec_signing_key.crt.pem", &info);
    assert_string_equal(info.hash_algo, "sha384");
    assert_int_equal(info.sig_len, 268);
}

/* mod-simple-x86_64.unsigned.ko.p7s is the detached CMS alone: appending it
 * with a trailer must give a valid module (identical to rsa-sha256.ko). */
static uint8_t *with_trailer(const uint8_t *mod, size_t mlen, const uint8_t *sig, size_t slen,
                             const uint8_t ms[8], uint32_t sig_len, size_t *out)
{
    size_t n = mlen + slen + 12 + MAGIC_LEN;
    uint8_t *p = malloc(n);
    assert_non_null(p);
    memcpy(p, mod, mlen);
    memcpy(p + mlen, sig, slen);
    memcpy(p + mlen + slen, ms, 8);
    for (int i = 0; i < 4; i++)
        p[mlen + slen + 8 + i] = (uint8_t)(sig_len >> (24 - 8 * i));
    memcpy(p + mlen + slen + 12, MAGIC, MAGIC_LEN);
    *out = n;
    return p;
}

static void test_detached_p7s(void **state)
{
    (void)state;
    static const uint8_t ms[8] = {0, 0, 2, 0, 0, 0, 0, 0};
    size_t ml, sl, n, ref;
    uint8_t *mod = slurp(DEB "mod-simple-x86_64.unsigned.ko", &ml);
    uint8_t *sig = slurp(DEB "mod-simple-x86_64.unsigned.ko.p7s", &sl);
    uint8_t *blob = with_trailer(mod, ml, sig, sl, ms, (uint32_t)sl, &n);
    uint8_t *signed_ko = slurp(DEB "mod-simple.rsa-sha256.ko", &ref);
    assert_int_equal(n, ref);
    assert_memory_equal(blob, signed_ko, n);
    verify_certs *c = certs_of(DEB "rsa_signing_key.x509", NULL);
    verify_verdict v;
    assert_true(verify_module_verify(blob, n, c, NULL, &v));
    verify_certs_free(c);
    free(mod);
    free(sig);
    free(blob);
    free(signed_ko);
}

/* ---- kmod's bare trailer: parses, cannot verify ---- */

static void test_kmod_dummy(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = slurp("data/sigstore/kernel-module/kmod-testsuite/dummy.pkcs7", &n);
    verify_module_info info;
    char err[256];
    assert_int_equal(verify_module_parse(p, n, &info, err, sizeof err), 0);
    assert_true(info.has_signature);
    assert_false(info.is_module);
    assert_int_equal(info.sig_len, 681);
    assert_int_equal(info.content_len, 0);
    assert_string_equal(info.signer, "Build time autogenerated kernel key");
    assert_string_equal(info.key_id, "26dac3eb0f0d1a56a2d8b213f0d753471d0d4868");
    assert_string_equal(info.hash_algo, "sha256");
    assert_false(verify_module_is_module(p, n));
    verify_certs *c = certs_of(DEB "rsa_signing_key.crt.pem", NULL);
    verify_verdict v;
    assert_false(verify_module_verify(p, n, c, NULL, &v));
    verify_certs_free(c);
    free(p);
}

/* ---- vectors made by data/module-sig/make.sh ---- */

static void test_own_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        verify_reason want;
    } cases[] = {
        {"mod.rsa-sha256.ko", VERIFY_ALLOWED},
        {"mod.rsa-sha256-keyid.ko", VERIFY_ALLOWED},
        {"mod.ec-p256-sha256.ko", VERIFY_ALLOWED},
        {"mod.ec-p256-sha512.ko", VERIFY_ALLOWED},
        {"mod.other-key.ko", VERIFY_DENIED_CERT_UNTRUSTED},
        {"mod.rsa-sha256.tampered.ko", VERIFY_DENIED_BAD_SIGNATURE},
        {"mod.bad-id-type.ko", VERIFY_DENIED_UNSUPPORTED},
        {"mod.sig-len-too-big.ko", VERIFY_DENIED_MALFORMED},
        {"mod.truncated-trailer.ko", VERIFY_DENIED_UNSUPPORTED},
    };
    verify_certs *c = certs_of(OWN "rsa.crt.pem", OWN "ec.crt.pem");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, OWN "%s", cases[i].file);
        size_t n;
        uint8_t *p = slurp(path, &n);
        verify_verdict v;
        verify_module_verify(p, n, c, NULL, &v);
        if (v.reason != cases[i].want)
            fail_msg("%s: got %s (%s)", cases[i].file, verify_reason_name(v.reason), v.text);
        free(p);
    }
    verify_certs_free(c);
}

/* ---- malformed trailers, in exact-length buffers ---- */

static verify_reason verify_blob(const uint8_t *p, size_t n)
{
    verify_certs *c = certs_of(DEB "rsa_signing_key.crt.pem", NULL);
    verify_verdict v;
    verify_module_verify(p, n, c, NULL, &v);
    verify_certs_free(c);
    return v.reason;
}

static void test_malformed_trailers(void **state)
{
    (void)state;
    size_t ml, sl, n;
    uint8_t *mod = slurp(DEB "mod-simple-x86_64.unsigned.ko", &ml);
    uint8_t *sig = slurp(DEB "mod-simple-x86_64.unsigned.ko.p7s", &sl);
    const uint8_t good[8] = {0, 0, 2, 0, 0, 0, 0, 0};
    const uint8_t pad[8] = {0, 0, 2, 0, 0, 0, 1, 0};
    const uint8_t signer[8] = {0, 0, 2, 5, 0, 0, 0, 0};
    uint8_t *b = with_trailer(mod, ml, sig, sl, pad, (uint32_t)sl, &n);
    assert_int_equal(verify_blob(b, n), VERIFY_DENIED_MALFORMED);
    free(b);
    b = with_trailer(mod, ml, sig, sl, signer, (uint32_t)sl, &n);
    assert_int_equal(verify_blob(b, n), VERIFY_DENIED_MALFORMED);
    free(b);
    b = with_trailer(mod, ml, sig, sl, good, 0, &n); /* sig_len 0 */
    assert_int_equal(verify_blob(b, n), VERIFY_DENIED_MALFORMED);
    free(b);
    b = with_trailer(mod, ml, sig, sl, good, (uint32_t)sl - 1, &n); /* CMS cut short */
    assert_int_equal(verify_blob(b, n), VERIFY_DENIED_MALFORMED);
    free(b);
    b = with_trailer(mod, 0, sig, sl, good, (uint32_t)sl, &n); /* sig_len == all that precedes */
    assert_int_equal(verify_blob(b, n), VERIFY_DENIED_MALFORMED);
    free(b);
    b = with_trailer(mod, ml, sig, 0, good, 0xffffffffu, &n);
    assert_int_equal(verify_blob(b, n), VERIFY_DENIED_MALFORMED);
    free(b);
    /* magic only, and a few bytes before it */
    for (size_t extra = 0; extra < 12; extra++) {
        uint8_t *m = malloc(MAGIC_LEN + extra);
        memset(m, 0, extra);
        memcpy(m + extra, MAGIC, MAGIC_LEN);
        assert_int_not_equal(verify_blob(m, MAGIC_LEN + extra), VERIFY_ALLOWED);
        free(m);
    }
    free(mod);
    free(sig);
}

/* ---- module detection ---- */

static void test_is_module(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = slurp(DEB "mod-simple-x86_64.unsigned.ko", &n);
    assert_true(verify_module_is_module(p, n));
    p[16] = 2; /* ET_EXEC: not a relocatable object */
    assert_false(verify_module_is_module(p, n));
    p[16] = 1;
    for (size_t cut = 0; cut < n; cut += 97)
        verify_module_is_module(p, cut); /* truncated ELF: no out-of-bounds read */
    free(p);
    p = slurp("data/modules/nvme-core/new.ko", &n);
    verify_module_info info;
    char err[256];
    assert_true(verify_module_is_module(p, n));
    assert_int_equal(verify_module_parse(p, n, &info, err, sizeof err), 0);
    assert_true(info.is_module && info.has_signature);
    assert_int_equal(strncmp(info.vermagic, "6.1.0-", 6), 0);
    assert_string_equal(info.signer, "Build time autogenerated kernel key");
    assert_string_equal(info.hash_algo, "sha256");
    assert_int_equal(verify_blob(p, n), VERIFY_DENIED_CERT_UNTRUSTED);
    free(p);
    static const uint8_t junk[] = "not a module at all";
    assert_false(verify_module_is_module(junk, sizeof junk));
    assert_false(verify_module_is_module(NULL, 0));
}

/* ---- CLI ---- */

static int run(const char *a1, const char *a2, const char *a3, const char *a4, const char *a5)
{
    char *argv[] = {"verify", (char *)a1, (char *)a2, (char *)a3, (char *)a4, (char *)a5, NULL};
    int argc = 1;
    while (argv[argc] != NULL)
        argc++;
    fflush(stdout);
    return cmd_verify(argc, argv);
}

static void test_cli_file(void **state)
{
    (void)state;
    assert_int_equal(run("--file", DEB "mod-simple.rsa-sha256.ko", "--cert",
                         DEB "rsa_signing_key.crt.pem", NULL),
                     0);
    assert_int_equal(run("--file", DEB "mod-simple.rsa-sha256.tampered.ko", "--cert",
                         DEB "rsa_signing_key.crt.pem", NULL),
                     1);
    assert_int_equal(run("--file", DEB "mod-simple.rsa-sha256.ko", NULL, NULL, NULL), 1);
    assert_int_equal(run("--file", "data/does-not-exist.ko", NULL, NULL, NULL), 2);
    assert_int_equal(run("--file", DEB "mod-simple.rsa-sha256.ko", "--cert",
                         DEB "mod-simple.rsa-sha256.ko", NULL),
                     2);
    assert_int_equal(run("--bogus", NULL, NULL, NULL, NULL), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_debian_vectors), cmocka_unit_test(test_debian_signer_info),
        cmocka_unit_test(test_detached_p7s),   cmocka_unit_test(test_kmod_dummy),
        cmocka_unit_test(test_own_vectors),    cmocka_unit_test(test_malformed_trailers),
        cmocka_unit_test(test_is_module),      cmocka_unit_test(test_cli_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
