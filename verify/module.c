/*
 * module.c — Linux kernel-module appended signatures and module detection
 * (section 8 of verify.h).
 *
 * How it works:
 *  - Trailer (include/linux/module_signature.h, kernel/module_signature.c):
 *    the file ends with "~Module signature appended~\n"; the 12 bytes
 *    before it are struct module_signature {u8 algo, hash, id_type,
 *    signer_len, key_id_len, pad[3]; __be32 sig_len}. As the kernel's
 *    mod_check_sig: id_type must be 2 (PKCS#7), every other field except
 *    sig_len zero, and sig_len at most what precedes the struct; the CMS
 *    DER is the sig_len bytes before the struct, the signed content is
 *    everything before the CMS. A bare trailer (no content, as kmod's test
 *    blob) parses but never verifies, as in the kernel. All offsets are
 *    checked against the length before any read.
 *  - The CMS must be a detached SignedData that uses exactly sig_len bytes;
 *    its first SignerInfo gives the signer (issuer CN, or the whole issuer
 *    name), the key id (serial number, or subjectKeyIdentifier when the
 *    signer is identified by key id, as `sign-file -k` does) and the digest
 *    algorithm.
 *  - Verification is OpenSSL's CMS_verify in binary mode over the content,
 *    with only the configured certificates (CMS_NOINTERN) and no chain
 *    building (CMS_NO_SIGNER_CERT_VERIFY): like the kernel's keyring, a
 *    configured certificate is trusted as it is.
 *  - ELF: the header (32/64-bit, little/big endian) must be ET_REL; the
 *    section header table and the section-name string table are bounds
 *    checked; .modinfo holds NUL-separated "key=value" strings, of which
 *    "vermagic=" is reported.
 */
#include "vinternal.h"

#include <openssl/cms.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

#define MAGIC_LEN (sizeof VERIFY_MODULE_MAGIC - 1)
#define MODSIG_LEN 12
#define PKEY_ID_PKCS7 2

/* ---- ELF ---- */

typedef struct {
    const uint8_t *p;
    size_t n;
    bool is64, be;
} elf;

static uint64_t rd(const elf *e, size_t off, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) {
        int k = e->be ? i : bytes - 1 - i;
        v = v << 8 | e->p[off + (size_t)k];
    }
    return v;
}

static bool in_bounds(size_t n, uint64_t off, uint64_t len)
{
    return off <= n && len <= n - off;
}

typedef struct {
    uint64_t name, type, offset, size;
} shdr;

static bool read_shdr(const elf *e, uint64_t shoff, uint64_t entsize, uint64_t i, shdr *out)
{
    uint64_t off = shoff + i * entsize;
    size_t need = e->is64 ? 64 : 40;
    if (!in_bounds(e->n, off, need))
        return false;
    out->name = rd(e, (size_t)off, 4);
    out->type = rd(e, (size_t)off + 4, 4);
    out->offset = e->is64 ? rd(e, (size_t)off + 24, 8) : rd(e, (size_t)off + 16, 4);
    out->size = e->is64 ? rd(e, (size_t)off + 32, 8) : rd(e, (size_t)off + 20, 4);
    return true;
}

static bool elf_header(const uint8_t *p, size_t n, elf *e)
{
    if (n < 52 ||
        memcmp(p,
               "\x7f"
               "ELF",
               4) != 0 ||
        (p[4] != 1 && p[4] != 2) || (p[5] != 1 && p[5] != 2))
        return false;
    e->p = p;
    e->n = n;
    e->is64 = p[4] == 2;
    e->be = p[5] == 2;
    return (!e->is64 || n >= 64) && rd(e, 16, 2) == 1; /* ET_REL */
}

static bool name_is(const elf *e, const shdr *strtab, uint64_t name, const char *want)
{
    size_t wl = strlen(want) + 1;
    if (strtab->type == 8 || name >= strtab->size || !in_bounds(e->n, strtab->offset, strtab->size))
        return false;
    uint64_t off = strtab->offset + name;
    return wl <= strtab->size - name && memcmp(e->p + off, want, wl) == 0;
}

/* Finds .modinfo; true with its bounds when present and in the file. */
static bool find_modinfo(const elf *e, shdr *modinfo)
{
    uint64_t shoff = e->is64 ? rd(e, 40, 8) : rd(e, 32, 4);
    uint64_t entsize = rd(e, e->is64 ? 58 : 46, 2);
    uint64_t shnum = rd(e, e->is64 ? 60 : 48, 2);
    uint64_t shstrndx = rd(e, e->is64 ? 62 : 50, 2);
    shdr strtab;
    if (entsize < (e->is64 ? 64u : 40u) || shnum == 0 || shstrndx >= shnum ||
        !read_shdr(e, shoff, entsize, shstrndx, &strtab))
        return false;
    for (uint64_t i = 0; i < shnum; i++) {
        shdr s;
        if (!read_shdr(e, shoff, entsize, i, &s))
            return false;
        if (name_is(e, &strtab, s.name, ".modinfo") && s.type != 8 &&
            in_bounds(e->n, s.offset, s.size)) {
            *modinfo = s;
            return true;
        }
    }
    return false;
}

static void read_vermagic(const elf *e, const shdr *m, char *out, size_t outlen)
{
    static const char key[] = "vermagic=";
    const char *p = (const char *)e->p + m->offset;
    size_t n = (size_t)m->size;
    out[0] = '\0';
    for (size_t i = 0; i < n;) {
        const char *nul = memchr(p + i, '\0', n - i);
        size_t len = nul != NULL ? (size_t)(nul - (p + i)) : n - i;
        if (len >= sizeof key - 1 && memcmp(p + i, key, sizeof key - 1) == 0) {
            size_t vl = len - (sizeof key - 1);
            snprintf(out, outlen, "%.*s", (int)(vl < outlen ? vl : outlen - 1),
                     p + i + sizeof key - 1);
            return;
        }
        i += len + 1;
    }
}

static bool module_content(const uint8_t *p, size_t n, verify_module_info *info)
{
    elf e;
    shdr m;
    if (!elf_header(p, n, &e) || !find_modinfo(&e, &m))
        return false;
    if (info != NULL)
        read_vermagic(&e, &m, info->vermagic, sizeof info->vermagic);
    return true;
}

/* ---- trailer ---- */

static bool has_magic(const uint8_t *p, size_t n)
{
    return n >= MAGIC_LEN && memcmp(p + n - MAGIC_LEN, VERIFY_MODULE_MAGIC, MAGIC_LEN) == 0;
}

static int parse_trailer(const uint8_t *p, size_t n, verify_module_info *info, vfail *f)
{
    if (n < MAGIC_LEN + MODSIG_LEN)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "module signature trailer truncated");
    size_t modlen = n - MAGIC_LEN;
    const uint8_t *ms = p + modlen - MODSIG_LEN;
    uint32_t sig_len =
        (uint32_t)ms[8] << 24 | (uint32_t)ms[9] << 16 | (uint32_t)ms[10] << 8 | ms[11];
    if (ms[2] != PKEY_ID_PKCS7)
        return vfail_set(f, VERIFY_DENIED_UNSUPPORTED,
                         "module signature id_type %u is not PKCS#7 (2)", ms[2]);
    if (ms[0] || ms[1] || ms[3] || ms[4] || ms[5] || ms[6] || ms[7])
        return vfail_set(f, VERIFY_DENIED_MALFORMED,
                         "module signature header fields other than sig_len must be zero");
    if (sig_len == 0 || sig_len > modlen - MODSIG_LEN)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "module signature length %u out of range",
                         sig_len);
    info->has_signature = 1;
    info->sig_len = sig_len;
    info->sig_offset = modlen - MODSIG_LEN - sig_len;
    info->content_len = info->sig_offset;
    return 0;
}

/* ---- CMS ---- */

static CMS_ContentInfo *parse_cms(const uint8_t *p, size_t n, vfail *f)
{
    const unsigned char *q = p;
    CMS_ContentInfo *cms = d2i_CMS_ContentInfo(NULL, &q, (long)n);
    if (cms != NULL && (q != p + n || OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed ||
                        CMS_is_detached(cms) != 1)) {
        CMS_ContentInfo_free(cms);
        cms = NULL;
    }
    ERR_clear_error();
    if (cms == NULL)
        vfail_set(f, VERIFY_DENIED_MALFORMED,
                  "module signature is not a detached CMS SignedData of exactly sig_len bytes");
    return cms;
}

static void name_text(const X509_NAME *nm, char *out, size_t outlen)
{
    out[0] = '\0';
    if (X509_NAME_get_text_by_NID((X509_NAME *)nm, NID_commonName, out, (int)outlen) < 0)
        X509_NAME_oneline(nm, out, (int)outlen);
}

static void bytes_hex(const uint8_t *p, size_t n, char *out, size_t outlen)
{
    size_t max = (outlen - 1) / 2;
    vhex_encode(p, n < max ? n : max, out);
}

static int signer_info(CMS_ContentInfo *cms, verify_module_info *info, vfail *f)
{
    STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(cms);
    CMS_SignerInfo *si = sk_CMS_SignerInfo_value(sis, 0);
    ASN1_OCTET_STRING *keyid = NULL;
    X509_NAME *issuer = NULL;
    ASN1_INTEGER *serial = NULL;
    if (si == NULL || CMS_SignerInfo_get0_signer_id(si, &keyid, &issuer, &serial) != 1)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "module signature has no signer");
    if (keyid != NULL) {
        info->key_id_is_skid = 1;
        bytes_hex(ASN1_STRING_get0_data(keyid), (size_t)ASN1_STRING_length(keyid), info->key_id,
                  sizeof info->key_id);
        snprintf(info->signer, sizeof info->signer, "(identified by key id)");
    } else {
        name_text(issuer, info->signer, sizeof info->signer);
        bytes_hex(ASN1_STRING_get0_data(serial), (size_t)ASN1_STRING_length(serial), info->key_id,
                  sizeof info->key_id);
    }
    X509_ALGOR *dig = NULL;
    CMS_SignerInfo_get0_algs(si, NULL, NULL, &dig, NULL);
    const ASN1_OBJECT *obj = NULL;
    if (dig != NULL)
        X509_ALGOR_get0(&obj, NULL, NULL, dig);
    const char *sn = obj != NULL ? OBJ_nid2sn(OBJ_obj2nid(obj)) : NULL;
    snprintf(info->hash_algo, sizeof info->hash_algo, "%s", sn != NULL ? sn : "unknown");
    for (char *c = info->hash_algo; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    return 0;
}

/* ---- public API ---- */

int verify_module_is_module(const uint8_t *data, size_t len)
{
    if (data == NULL)
        return 0;
    verify_module_info info;
    memset(&info, 0, sizeof info);
    size_t n = len;
    if (has_magic(data, len) && parse_trailer(data, len, &info, NULL) == 0)
        n = info.content_len;
    return module_content(data, n, NULL) ? 1 : 0;
}

static int parse_all(const uint8_t *data, size_t len, verify_module_info *info,
                     CMS_ContentInfo **cms_out, vfail *f)
{
    memset(info, 0, sizeof *info);
    info->content_len = len;
    if (data == NULL)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "no data");
    if (has_magic(data, len)) {
        if (parse_trailer(data, len, info, f) != 0)
            return -1;
        CMS_ContentInfo *cms = parse_cms(data + info->sig_offset, info->sig_len, f);
        if (cms == NULL || signer_info(cms, info, f) != 0) {
            CMS_ContentInfo_free(cms);
            return -1;
        }
        if (cms_out != NULL)
            *cms_out = cms;
        else
            CMS_ContentInfo_free(cms);
    }
    info->is_module = module_content(data, info->content_len, info);
    return 0;
}

int verify_module_parse(const uint8_t *data, size_t len, verify_module_info *info, char *err,
                        size_t errlen)
{
    vfail f = {0};
    if (parse_all(data, len, info, NULL, &f) != 0) {
        verr_put(err, errlen, f.text);
        return -1;
    }
    return 0;
}

static void signer_subject(CMS_ContentInfo *cms, char *out, size_t outlen)
{
    STACK_OF(X509) *signers = CMS_get0_signers(cms);
    X509 *c = sk_X509_value(signers, 0);
    out[0] = '\0';
    if (c != NULL)
        name_text(X509_get_subject_name(c), out, outlen);
    sk_X509_free(signers);
}

static int cms_check(CMS_ContentInfo *cms, const uint8_t *content, size_t n,
                     const verify_certs *trusted, char *subject, size_t sublen, vfail *f)
{
    BIO *bio = BIO_new_mem_buf(content, (int)n);
    if (bio == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    ERR_clear_error();
    int ok = CMS_verify(cms, trusted->certs, NULL, bio, NULL,
                        CMS_BINARY | CMS_NOINTERN | CMS_NO_SIGNER_CERT_VERIFY);
    unsigned long e = ERR_peek_error();
    BIO_free(bio);
    ERR_clear_error();
    if (ok == 1) {
        signer_subject(cms, subject, sublen);
        return 0;
    }
    if (ERR_GET_REASON(e) == CMS_R_SIGNER_CERTIFICATE_NOT_FOUND)
        return vfail_set(f, VERIFY_DENIED_CERT_UNTRUSTED,
                         "no configured certificate matches the module's signer");
    return vfail_set(f, VERIFY_DENIED_BAD_SIGNATURE,
                     "module signature does not verify (module modified or wrong key)");
}

int verify_module_verify(const uint8_t *data, size_t len, const verify_certs *trusted,
                         verify_module_info *info, verify_verdict *out)
{
    vfail f = {0};
    verify_module_info local;
    verify_module_info *mi = info != NULL ? info : &local;
    CMS_ContentInfo *cms = NULL;
    char subject[256];
    int rc = parse_all(data, len, mi, &cms, &f);
    if (rc == 0 && !mi->has_signature)
        rc = vfail_set(&f, VERIFY_DENIED_NO_SIGNATURE, "module is not signed (no \"%s\" trailer)",
                       "~Module signature appended~");
    if (rc == 0 && mi->content_len == 0) /* the kernel's sig_len < file_len rule */
        rc = vfail_set(&f, VERIFY_DENIED_MALFORMED, "no module content before the signature");
    if (rc == 0 && verify_certs_count(trusted) == 0)
        rc = vfail_set(&f, VERIFY_DENIED_CERT_UNTRUSTED, "no trusted certificates configured");
    if (rc == 0)
        rc = cms_check(cms, data, mi->content_len, trusted, subject, sizeof subject, &f);
    CMS_ContentInfo_free(cms);
    if (rc != 0) {
        vfail_to_verdict(&f, out);
        return 0;
    }
    verdict_allow(out, "module signature valid: certificate \"%s\", key id %s, %s", subject,
                  mi->key_id, mi->hash_algo);
    return 1;
}
