/*
 * payload.c — the cosign simple-signing payload (verify_payload_parse in
 * verify.h): the JSON document a cosign signature signs, naming the image
 * by manifest digest and docker reference.
 *
 * How it works: the bytes are parsed by jansson (duplicate keys rejected,
 * invalid UTF-8 and embedded NULs rejected) and then walked with exact key
 * sets, as containers/image's "paranoid" unmarshalling does: unknown or
 * missing keys in "critical", "image" and "identity" are errors, because a
 * signer may rely on any of them; "optional" may be null, and of its keys
 * only "creator" (string) and "timestamp" (integer; a float with a
 * fraction is refused) are interpreted. The digest must satisfy the OCI
 * digest grammar with a registered algorithm (sha256/sha384/sha512 hex of
 * the right length); whether it equals the manifest is the caller's check.
 */
#include "vinternal.h"

#include <stdio.h>
#include <string.h>

static const char *const TOP_KEYS[] = {"critical", "optional", NULL};
static const char *const CRITICAL_KEYS[] = {"type", "image", "identity", NULL};
static const char *const IMAGE_KEYS[] = {"docker-manifest-digest", NULL};
static const char *const IDENTITY_KEYS[] = {"docker-reference", NULL};

static int exact_keys(const json_t *o, const char *const *keys, const char *path, vfail *f)
{
    if (vjson_only_keys(o, keys, path, f) != 0)
        return -1;
    for (size_t i = 0; keys[i] != NULL; i++)
        if (json_object_get(o, keys[i]) == NULL)
            return vfail_set(f, VERIFY_DENIED_MALFORMED, "%s.%s: missing", path, keys[i]);
    return 0;
}

static int copy_str(const char *s, char *out, size_t cap, const char *what, vfail *f)
{
    size_t n = strlen(s);
    if (n == 0 || n >= cap)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "%s: empty or too long", what);
    memcpy(out, s, n + 1);
    return 0;
}

static bool digest_text_valid(const char *s)
{
    static const struct {
        const char *alg;
        size_t hex;
    } algs[] = {{"sha256:", 64}, {"sha384:", 96}, {"sha512:", 128}};
    for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
        size_t al = strlen(algs[i].alg);
        if (strncmp(s, algs[i].alg, al) != 0)
            continue;
        if (strlen(s + al) != algs[i].hex)
            return false;
        for (const char *p = s + al; *p; p++)
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                return false;
        return true;
    }
    return false;
}

static int parse_critical(const json_t *c, verify_payload *out, vfail *f)
{
    if (exact_keys(c, CRITICAL_KEYS, "critical", f) != 0)
        return -1;
    const char *type = vjson_str(c, "type", "critical", f);
    if (type == NULL)
        return -1;
    if (strcmp(type, VERIFY_PAYLOAD_TYPE) != 0)
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "critical.type: unrecognized type \"%.100s\"",
                         type);
    const json_t *image = json_object_get(c, "image");
    const json_t *identity = json_object_get(c, "identity");
    if (exact_keys(image, IMAGE_KEYS, "critical.image", f) != 0 ||
        exact_keys(identity, IDENTITY_KEYS, "critical.identity", f) != 0)
        return -1;
    const char *digest = vjson_str(image, "docker-manifest-digest", "critical.image", f);
    const char *ref = vjson_str(identity, "docker-reference", "critical.identity", f);
    if (digest == NULL || ref == NULL)
        return -1;
    if (!digest_text_valid(digest))
        return vfail_set(f, VERIFY_DENIED_MALFORMED,
                         "critical.image.docker-manifest-digest: invalid digest \"%.100s\"",
                         digest);
    if (copy_str(digest, out->manifest_digest, sizeof out->manifest_digest,
                 "critical.image.docker-manifest-digest", f) != 0)
        return -1;
    return copy_str(ref, out->docker_reference, sizeof out->docker_reference,
                    "critical.identity.docker-reference", f);
}

static int parse_timestamp(const json_t *t, verify_payload *out, vfail *f)
{
    if (json_is_integer(t)) {
        out->timestamp = (int64_t)json_integer_value(t);
    } else if (json_is_real(t)) {
        double d = json_real_value(t);
        if (!(d > -9.2e18 && d < 9.2e18) || (double)(int64_t)d != d)
            return vfail_set(f, VERIFY_DENIED_MALFORMED, "optional.timestamp: not an integer");
        out->timestamp = (int64_t)d;
    } else {
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "optional.timestamp: not a number");
    }
    out->has_timestamp = 1;
    return 0;
}

static int parse_optional(const json_t *o, verify_payload *out, vfail *f)
{
    if (json_is_null(o))
        return 0;
    if (!json_is_object(o))
        return vfail_set(f, VERIFY_DENIED_MALFORMED, "optional: neither null nor an object");
    const json_t *creator = json_object_get(o, "creator");
    if (creator != NULL) {
        if (!json_is_string(creator))
            return vfail_set(f, VERIFY_DENIED_MALFORMED, "optional.creator: not a string");
        snprintf(out->creator, sizeof out->creator, "%s", json_string_value(creator));
        out->has_creator = 1;
    }
    const json_t *ts = json_object_get(o, "timestamp");
    return ts != NULL ? parse_timestamp(ts, out, f) : 0;
}

static int parse_payload(const void *data, size_t len, verify_payload *out, vfail *f)
{
    memset(out, 0, sizeof *out);
    json_t *j = vjson_parse(data, len, f);
    if (j == NULL)
        return -1;
    int rc = exact_keys(j, TOP_KEYS, "payload", f);
    if (rc == 0)
        rc = parse_critical(json_object_get(j, "critical"), out, f);
    if (rc == 0)
        rc = parse_optional(json_object_get(j, "optional"), out, f);
    json_decref(j);
    return rc;
}

int vpayload_parse(const void *data, size_t len, verify_payload *out, vfail *f)
{
    if (parse_payload(data, len, out, f) != 0)
        return vfail_wrap(f, "simple-signing payload");
    return 0;
}

int verify_payload_parse(const void *data, size_t len, verify_payload *out, char *err,
                         size_t errlen)
{
    vfail f = {0};
    if (vpayload_parse(data, len, out, &f) != 0) {
        verr_put(err, errlen, f.text);
        return -1;
    }
    return 0;
}
