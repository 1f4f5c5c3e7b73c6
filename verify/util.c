/*
 * util.c — small helpers every verify/ file uses: failure records and
 * verdicts, strict base64 and hex, bounded file reading, RFC 3339 and ASN.1
 * times, and strict JSON member access (declared in vinternal.h).
 *
 * How it works:
 *  - vfail carries a reason code and a message; vfail_wrap prefixes
 *    context ("signature 2: ") so the final verdict text says where the
 *    failure was found. Messages are truncated, never overflowed.
 *  - Base64 is decoded with OpenSSL's EVP_DecodeBlock after checking the
 *    alphabet, the length (multiple of 4) and the padding ourselves:
 *    EVP_DecodeBlock skips whitespace and does not report padding, so the
 *    exact output length is computed from the '=' count.
 *  - JSON is parsed by jansson with JSON_REJECT_DUPLICATES; vjson_* give
 *    typed access and name the JSON path of anything missing or mistyped.
 */
#include "vinternal.h"

#include <errno.h>
#include <openssl/asn1.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- failures and verdicts ---- */

int vfail_set(vfail *f, verify_reason r, const char *fmt, ...)
{
    if (f == NULL)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    f->reason = r;
    vsnprintf(f->text, sizeof f->text, fmt, ap);
    va_end(ap);
    return -1;
}

int vfail_wrap(vfail *f, const char *fmt, ...)
{
    if (f == NULL)
        return -1;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t pl = strlen(prefix), tl = strnlen(f->text, sizeof f->text - 1);
    if (pl + 2 >= sizeof f->text)
        pl = sizeof f->text - 3;
    if (pl + 2 + tl >= sizeof f->text)
        tl = sizeof f->text - pl - 3;
    memmove(f->text + pl + 2, f->text, tl);
    memcpy(f->text, prefix, pl);
    memcpy(f->text + pl, ": ", 2);
    f->text[pl + 2 + tl] = '\0';
    return -1;
}

void vfail_to_verdict(const vfail *f, verify_verdict *v)
{
    v->allowed = 0;
    v->reason = f->reason == VERIFY_ALLOWED ? VERIFY_DENIED_INTERNAL : f->reason;
    snprintf(v->text, sizeof v->text, "%s", f->text);
}

void verdict_allow(verify_verdict *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    v->allowed = 1;
    v->reason = VERIFY_ALLOWED;
    vsnprintf(v->text, sizeof v->text, fmt, ap);
    va_end(ap);
}

void vtrunc(char *out, size_t outlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, outlen, fmt, ap);
    va_end(ap);
}

void verr_put(char *err, size_t errlen, const char *text)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", text);
}

const char *verify_reason_name(verify_reason r)
{
    static const char *const names[] = {
        [VERIFY_ALLOWED] = "allowed",
        [VERIFY_DENIED_NO_SIGNATURE] = "no-signature",
        [VERIFY_DENIED_REJECTED] = "rejected-by-policy",
        [VERIFY_DENIED_MALFORMED] = "malformed",
        [VERIFY_DENIED_BAD_SIGNATURE] = "bad-signature",
        [VERIFY_DENIED_DIGEST_MISMATCH] = "digest-mismatch",
        [VERIFY_DENIED_IDENTITY] = "identity-mismatch",
        [VERIFY_DENIED_CERT_UNTRUSTED] = "untrusted-certificate",
        [VERIFY_DENIED_CERT_EXPIRED] = "expired-certificate",
        [VERIFY_DENIED_CERT_IDENTITY] = "certificate-identity-mismatch",
        [VERIFY_DENIED_TLOG] = "bad-rekor-entry",
        [VERIFY_DENIED_TIMESTAMP] = "no-trusted-timestamp",
        [VERIFY_DENIED_UNSUPPORTED] = "unsupported",
        [VERIFY_DENIED_INTERNAL] = "internal-error",
    };
    if ((unsigned)r >= sizeof names / sizeof names[0] || names[r] == NULL)
        return "unknown";
    return names[r];
}

/* ---- bytes ---- */

void vbytes_clear(vbytes *b)
{
    if (b == NULL)
        return;
    free(b->p);
    b->p = NULL;
    b->n = 0;
}

bool vmem_eq(const void *a, size_t an, const void *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static bool b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* Number of '=' at the end, after checking that every other char is in the
 * alphabet and padding appears only in the last two positions. */
static int b64_padding(const char *s, size_t len)
{
    size_t pad = 0;
    while (pad < 2 && pad < len && s[len - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < len - pad; i++)
        if (!b64_char((unsigned char)s[i]))
            return -1;
    return (int)pad;
}

int vb64_decode(const char *s, size_t len, vbytes *out, vfail *f)
{
    out->p = NULL;
    out->n = 0;
    if (s == NULL || len % 4 != 0 || len > V_INPUT_MAX)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "invalid base64 (length %zu)", len);
    int pad = len == 0 ? 0 : b64_padding(s, len);
    if (pad < 0)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "invalid base64 character");
    out->p = malloc(len / 4 * 3 + 1);
    if (out->p == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    if (len == 0)
        return 0;
    int n = EVP_DecodeBlock(out->p, (const unsigned char *)s, (int)len);
    if (n < 0 || (size_t)n != len / 4 * 3) {
        vbytes_clear(out);
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "invalid base64");
    }
    out->n = (size_t)n - (size_t)pad;
    return 0;
}

int vb64_decode_nl(const char *s, size_t len, vbytes *out, vfail *f)
{
    if (len > V_INPUT_MAX)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "base64 input too large");
    char *clean = malloc(len + 1);
    if (clean == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] != '\r' && s[i] != '\n')
            clean[n++] = s[i];
    int rc = vb64_decode(clean, n, out, f);
    free(clean);
    return rc;
}

char *vb64_encode(const uint8_t *p, size_t n)
{
    if (n > V_INPUT_MAX)
        return NULL;
    char *s = malloc((n + 2) / 3 * 4 + 1);
    if (s == NULL)
        return NULL;
    EVP_EncodeBlock((unsigned char *)s, p, (int)n);
    return s;
}

void vhex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int vhex_decode(const char *s, size_t len, uint8_t *out, size_t outlen)
{
    if (len != 2 * outlen)
        return -1;
    for (size_t i = 0; i < outlen; i++) {
        int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int vfile_read(const char *path, vbytes *out, vfail *f)
{
    out->p = NULL;
    out->n = 0;
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > V_INPUT_MAX) {
        fclose(fp);
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "%s: not a regular file of at most %u bytes",
                         path, V_INPUT_MAX);
    }
    out->p = malloc((size_t)st.st_size + 1);
    if (out->p == NULL) {
        fclose(fp);
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    }
    out->n = fread(out->p, 1, (size_t)st.st_size, fp);
    bool bad = ferror(fp) || out->n != (size_t)st.st_size;
    fclose(fp);
    if (bad) {
        vbytes_clear(out);
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "cannot read %s", path);
    }
    out->p[out->n] = 0;
    return 0;
}

/* ---- times ---- */

static int parse_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int parse_zone(const char *z, int *offset)
{
    *offset = 0;
    if ((z[0] == 'Z' || z[0] == 'z') && z[1] == '\0')
        return 0;
    int hh, mm;
    if ((z[0] != '+' && z[0] != '-') || strlen(z) != 6 || z[3] != ':' ||
        parse_digits(z + 1, 2, &hh) || parse_digits(z + 4, 2, &mm) || hh > 23 || mm > 59)
        return -1;
    *offset = (z[0] == '-' ? -1 : 1) * (hh * 3600 + mm * 60);
    return 0;
}

int vtime_parse_rfc3339(const char *s, int64_t *out)
{
    struct tm tm = {0};
    int y, mo, d, h, mi, se;
    if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':' || parse_digits(s, 4, &y) || parse_digits(s + 5, 2, &mo) ||
        parse_digits(s + 8, 2, &d) || parse_digits(s + 11, 2, &h) || parse_digits(s + 14, 2, &mi) ||
        parse_digits(s + 17, 2, &se))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
        return -1;
    const char *z = s + 19;
    if (*z == '.') {
        z++;
        if (*z < '0' || *z > '9')
            return -1;
        while (*z >= '0' && *z <= '9')
            z++;
    }
    int offset;
    if (parse_zone(z, &offset) != 0)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    *out = (int64_t)timegm(&tm) - offset;
    return 0;
}

int64_t vtime_from_asn1(const ASN1_TIME *t, bool *ok)
{
    struct tm tm;
    *ok = t != NULL && ASN1_TIME_to_tm(t, &tm) == 1;
    return *ok ? (int64_t)timegm(&tm) : 0;
}

/* ---- JSON ---- */

json_t *vjson_parse(const void *data, size_t len, vfail *f)
{
    if (data == NULL || len > V_INPUT_MAX) {
        vfail_set(f, VERIFY_DENIED_MALFORMED, "JSON document missing or too large");
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL)
        vfail_set(f, VERIFY_DENIED_MALFORMED, "invalid JSON at line %d column %d: %s", je.line,
                  je.column, je.text);
    return j;
}

int vjson_only_keys(const json_t *obj, const char *const *keys, const char *path, vfail *f)
{
    if (!json_is_object(obj))
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "%s: not a JSON object", path);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        bool known = false;
        for (size_t i = 0; keys[i] != NULL && !known; i++)
            known = strcmp(keys[i], k) == 0;
        if (!known)
            return vfail_set(f, VERIFY_DENIED_MALFORMED, "%s: unknown key \"%s\"", path, k);
    }
    return 0;
}

const char *vjson_str(const json_t *obj, const char *key, const char *path, vfail *f)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v)) {
        vfail_set(f, VERIFY_DENIED_MALFORMED, "%s.%s: %s", path, key,
                  v == NULL ? "missing" : "not a string");
        return NULL;
    }
    return json_string_value(v);
}

const char *vjson_opt_str(const json_t *obj, const char *key, const char *path, vfail *f, bool *bad)
{
    json_t *v = json_object_get(obj, key);
    *bad = false;
    if (v == NULL)
        return NULL;
    if (!json_is_string(v)) {
        *bad = true;
        vfail_set(f, VERIFY_DENIED_MALFORMED, "%s.%s: not a string", path, key);
        return NULL;
    }
    return json_string_value(v);
}

json_t *vjson_obj(const json_t *obj, const char *key, const char *path, vfail *f)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_object(v)) {
        vfail_set(f, VERIFY_DENIED_MALFORMED, "%s.%s: %s", path, key,
                  v == NULL ? "missing" : "not an object");
        return NULL;
    }
    return v;
}

int vjson_int64(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || n > 20)
        return -1;
    char *end = NULL;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno != 0 || end != s + n || (s[0] != '-' && (s[0] < '0' || s[0] > '9')))
        return -1;
    *out = (int64_t)x;
    return 0;
}

int vjson_b64(const json_t *obj, const char *key, const char *path, vbytes *out, vfail *f)
{
    out->p = NULL;
    out->n = 0;
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "%s.%s: %s", path, key,
                         v == NULL ? "missing" : "not a string");
    /* protobuf JSON bytes: standard base64; line breaks are skipped as by
     * Go's decoder (bundles made with `base64` carry them). */
    if (vb64_decode_nl(json_string_value(v), json_string_length(v), out, f) != 0)
        return vfail_wrap(f, "%s.%s", path, key);
    return 0;
}
