/*
 * reference.c — Docker image references as containers/image and
 * distribution/reference define them (vref_* in vinternal.h), for policy
 * scopes and signedIdentity matching.
 *
 * How it works: a reference is name[:tag][@digest]; name is
 * [domain/]path, domain = host components ([A-Za-z0-9] runs joined by '-',
 * separated by '.') with an optional ":port"; path components are
 * [a-z0-9]+ joined by '.', '_', '__' or runs of '-'; a tag is
 * [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; a digest is algorithm ":" hex, with
 * sha256/sha384/sha512 of their exact lowercase lengths. Normalization
 * (ParseNormalizedNamed) applies Docker's rules: a first component without
 * '.' or ':' that is not "localhost" and is lowercase is not a domain (the
 * domain becomes docker.io), index.docker.io is docker.io, and a docker.io
 * name with one component gets "library/". The full name is limited to
 * 255 characters. Everything is parsed in place from bounded strings; the
 * result is a vref with fixed-size fields.
 */
#include "vinternal.h"

#include <stdio.h>
#include <string.h>

#define NAME_TOTAL_MAX 255

static bool alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool digit(char c)
{
    return c >= '0' && c <= '9';
}

/* [A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])? */
static bool domain_component(const char *s, size_t n)
{
    if (n == 0 || !alnum(s[0]) || !alnum(s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!alnum(s[i]) && s[i] != '-')
            return false;
    return true;
}

static bool host_valid(const char *s, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (!domain_component(s + start, i - start))
                return false;
            start = i + 1;
        }
    }
    return true;
}

bool vref_domain_valid(const char *s, size_t len)
{
    const char *colon = memchr(s, ':', len);
    if (colon == NULL)
        return host_valid(s, len);
    size_t hn = (size_t)(colon - s), pn = len - hn - 1;
    if (pn == 0 || pn > 5)
        return false;
    for (size_t i = 0; i < pn; i++)
        if (!digit(colon[1 + i]))
            return false;
    return host_valid(s, hn);
}

/* [a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)* */
static bool path_component(const char *s, size_t n)
{
    if (n == 0 || !lower_alnum(s[0]) || !lower_alnum(s[n - 1]))
        return false;
    for (size_t i = 0; i < n;) {
        if (lower_alnum(s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        if (s[i] == '-') {
            while (j < n && s[j] == '-')
                j++;
        } else if (s[i] == '_' && i + 1 < n && s[i + 1] == '_') {
            j = i + 2;
        } else if (s[i] == '.' || s[i] == '_') {
            j = i + 1;
        } else {
            return false;
        }
        if (j >= n || !lower_alnum(s[j]))
            return false;
        i = j;
    }
    return true;
}

bool vref_path_valid(const char *s, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '/') {
            if (!path_component(s + start, i - start))
                return false;
            start = i + 1;
        }
    }
    return true;
}

bool vref_tag_valid(const char *s, size_t len)
{
    if (len == 0 || len > 128 || !(alnum(s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < len; i++)
        if (!alnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return false;
    return true;
}

static bool lower_hex_len(const char *s, size_t n, size_t want)
{
    if (n != want)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!digit(s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
            return false;
    return true;
}

static bool digest_valid(const char *s, size_t n)
{
    const char *colon = memchr(s, ':', n);
    if (colon == NULL)
        return false;
    size_t an = (size_t)(colon - s), hn = n - an - 1;
    const char *hex = colon + 1;
    if (an == 6 && memcmp(s, "sha256", 6) == 0)
        return lower_hex_len(hex, hn, 64);
    if (an == 6 && memcmp(s, "sha384", 6) == 0)
        return lower_hex_len(hex, hn, 96);
    if (an == 6 && memcmp(s, "sha512", 6) == 0)
        return lower_hex_len(hex, hn, 128);
    return false;
}

static int copy_field(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        return -1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

/* Splits name[:tag][@digest] of s[0..len); name must be domain/path. */
static int parse_full(const char *s, size_t len, vref *out)
{
    memset(out, 0, sizeof *out);
    const char *at = memchr(s, '@', len);
    size_t nlen = at != NULL ? (size_t)(at - s) : len;
    if (at != NULL && (!digest_valid(at + 1, len - nlen - 1) ||
                       copy_field(out->digest, sizeof out->digest, at + 1, len - nlen - 1) != 0))
        return -1;
    const char *slash = memchr(s, '/', nlen);
    if (slash == NULL)
        return -1;
    size_t tagpos = nlen;
    for (size_t i = nlen; i > (size_t)(slash - s); i--)
        if (s[i - 1] == ':') {
            tagpos = i - 1;
            break;
        }
    if (tagpos < nlen &&
        (!vref_tag_valid(s + tagpos + 1, nlen - tagpos - 1) ||
         copy_field(out->tag, sizeof out->tag, s + tagpos + 1, nlen - tagpos - 1) != 0))
        return -1;
    size_t dlen = (size_t)(slash - s);
    if (tagpos > NAME_TOTAL_MAX || !vref_domain_valid(s, dlen) ||
        !vref_path_valid(slash + 1, tagpos - dlen - 1))
        return -1;
    return copy_field(out->name, sizeof out->name, s, tagpos);
}

static bool is_identifier(const char *s, size_t n)
{
    return lower_hex_len(s, n, 64);
}

static bool has_upper(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            return true;
    return false;
}

/* Docker's splitDockerDomain: is the first component a registry domain? */
static bool first_is_domain(const char *s, size_t n)
{
    return memchr(s, '.', n) != NULL || memchr(s, ':', n) != NULL ||
           (n == 9 && memcmp(s, "localhost", 9) == 0) || has_upper(s, n);
}

int vref_parse_normalized(const char *s, vref *out)
{
    size_t len = strlen(s);
    if (len == 0 || len >= VERIFY_REF_MAX || is_identifier(s, len))
        return -1;
    const char *slash = memchr(s, '/', len);
    char buf[VERIFY_REF_MAX + 32];
    const char *domain = "docker.io", *rem = s;
    size_t dlen = 9;
    if (slash != NULL && first_is_domain(s, (size_t)(slash - s))) {
        domain = s;
        dlen = (size_t)(slash - s);
        rem = slash + 1;
    }
    if (dlen == 15 && memcmp(domain, "index.docker.io", 15) == 0) {
        domain = "docker.io";
        dlen = 9;
    }
    bool official = dlen == 9 && memcmp(domain, "docker.io", 9) == 0 && strchr(rem, '/') == NULL;
    size_t remote = strcspn(rem, ":@");
    if (has_upper(rem, remote))
        return -1;
    int n =
        snprintf(buf, sizeof buf, "%.*s/%s%s", (int)dlen, domain, official ? "library/" : "", rem);
    if (n < 0 || (size_t)n >= sizeof buf)
        return -1;
    return parse_full(buf, (size_t)n, out);
}

void vref_string(const vref *r, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%s%s%s%s", r->name, r->tag[0] ? ":" : "", r->tag,
             r->digest[0] ? "@" : "", r->digest);
}

int vref_parse_canonical(const char *s, vref *out)
{
    char again[VERIFY_REF_MAX + 300];
    if (vref_parse_normalized(s, out) != 0)
        return -1;
    vref_string(out, again, sizeof again);
    return strcmp(again, s) == 0 ? 0 : -1;
}

bool vref_name_only(const vref *r)
{
    return r->tag[0] == '\0' && r->digest[0] == '\0';
}

int vref_image(const char *registry, const char *repository, const char *tag,
               const uint8_t digest[VERIFY_DIGEST_LEN], vref *out)
{
    memset(out, 0, sizeof *out);
    if (registry == NULL || repository == NULL)
        return -1;
    size_t rl = strlen(registry), pl = strlen(repository);
    if (rl == 15 && memcmp(registry, "index.docker.io", 15) == 0) {
        registry = "docker.io";
        rl = 9;
    }
    bool official = rl == 9 && memcmp(registry, "docker.io", 9) == 0 && !strchr(repository, '/');
    if (!vref_domain_valid(registry, rl) || !vref_path_valid(repository, pl))
        return -1;
    int n = snprintf(out->name, sizeof out->name, "%s/%s%s", registry, official ? "library/" : "",
                     repository);
    if (n < 0 || n > NAME_TOTAL_MAX)
        return -1;
    if (tag != NULL) {
        if (!vref_tag_valid(tag, strlen(tag)))
            return -1;
        snprintf(out->tag, sizeof out->tag, "%s", tag);
    } else if (digest != NULL) {
        char text[VERIFY_DIGEST_TEXT_LEN];
        verify_digest_format(digest, text);
        snprintf(out->digest, sizeof out->digest, "%s", text);
    }
    return 0;
}
