/*
 * policy.c — loads a containers-policy.json(5) trust policy (section 5 of
 * verify.h): strict parsing with JSON-path error messages, the trust
 * material its sigstoreSigned requirements name, the policy hash, scope
 * lookup for docker images, and signedIdentity matching.
 *
 * How it works:
 *  - jansson parses the document with duplicate keys rejected; every object
 *    is checked against the exact key set containers/image accepts, so a
 *    typo ("keypath") is an error at startup rather than a silently
 *    weaker policy. Errors read "<file>: <JSON path>: <problem>".
 *  - Requirements of "default" and transports.docker are built with their
 *    trust material: keyPath(s)/keyData(s) become OpenSSL keys, fulcio and
 *    pki CA files become certificate stacks, Rekor keys become vlog entries
 *    (log id = SHA-256 of the key). Other transports are validated for
 *    syntax only (they are for podman/skopeo on the same host and may name
 *    files that exist only there).
 *  - The hash is SHA-256 over a domain tag with VERIFY_REVISION, the
 *    policy bytes, and the path and contents of every file read, plus the
 *    trusted root if one was given: any change of trust material (or of
 *    the verifier's judgement) gives a new hash.
 *  - Lookup follows containers/image's docker transport: the image's
 *    identity (name:tag or name@digest), its repository, each parent
 *    namespace, host[:port], then "*.<parent domains>" wildcards (port
 *    dropped), then the transport default "" and finally "default".
 *  - signedIdentity follows policy_reference_match.go: references are
 *    normalized (docker.io/library/...), a name-only signed reference never
 *    satisfies the exact kinds, remapIdentity rewrites the image's prefix
 *    (which must end at '/', ':' or '@') and then applies
 *    matchRepoDigestOrExact.
 */
#include "vpolicy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V_STR2(x) #x
#define V_STR(x) V_STR2(x)

typedef struct {
    const char *name;
    vfail *f;
    EVP_MD_CTX *hash;
    bool load; /* build trust material (docker transport and default) */
} pctx;

static int perr(pctx *c, const char *path, const char *fmt, ...) V_PRINTF(3, 4);

static int perr(pctx *c, const char *path, const char *fmt, ...)
{
    char msg[VERIFY_TEXT_MAX / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return vfail_set(c->f, VERIFY_DENIED_MALFORMED, "%s: %s: %s", c->name, path, msg);
}

static void hash_chunk(pctx *c, const void *p, size_t n)
{
    uint64_t len = n;
    EVP_DigestUpdate(c->hash, &len, sizeof len);
    if (n > 0)
        EVP_DigestUpdate(c->hash, p, n);
}

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

/* ---- freeing ---- */

static void req_clear(vreq *r)
{
    for (size_t i = 0; i < r->nkeys; i++)
        EVP_PKEY_free(r->keys[i]);
    free(r->keys);
    for (size_t i = 0; i < r->nrekor; i++)
        vlog_clear(&r->rekor[i]);
    free(r->rekor);
    vcerts_free(r->fulcio_cas);
    vcerts_free(r->pki_roots);
    vcerts_free(r->pki_intermediates);
    free(r->oidc_issuer);
    free(r->subject_email);
    free(r->pki_email);
    free(r->pki_hostname);
    memset(r, 0, sizeof *r);
}

static void scope_clear(vscope *s)
{
    for (size_t i = 0; i < s->n; i++)
        req_clear(&s->reqs[i]);
    free(s->reqs);
    free(s->scope);
    memset(s, 0, sizeof *s);
}

void verify_policy_free(verify_policy *p)
{
    if (p == NULL)
        return;
    scope_clear(&p->global);
    for (size_t i = 0; i < p->ndocker; i++)
        scope_clear(&p->docker[i]);
    free(p->docker);
    verify_trust_root_free(p->root);
    free(p);
}

/* ---- small typed accessors ---- */

static int keys_only(pctx *c, const json_t *o, const char *path, const char *const *keys)
{
    if (!json_is_object(o))
        return perr(c, path, "expected a JSON object");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        bool known = false;
        for (size_t i = 0; keys[i] != NULL && !known; i++)
            known = strcmp(keys[i], k) == 0;
        if (!known)
            return perr(c, path, "unknown key \"%s\"", k);
    }
    return 0;
}

/* A required non-empty string member. */
static const char *need_str(pctx *c, const json_t *o, const char *key, const char *path)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v) || json_string_length(v) == 0) {
        perr(c, path, "\"%s\" %s", key, v == NULL ? "is missing" : "must be a non-empty string");
        return NULL;
    }
    return json_string_value(v);
}

/* ---- signedIdentity ---- */

static bool prefix_valid(const char *s)
{
    const char *slash = strchr(s, '/');
    if (slash == NULL)
        return vref_domain_valid(s, strlen(s));
    return vref_domain_valid(s, (size_t)(slash - s)) &&
           vref_path_valid(slash + 1, strlen(slash + 1));
}

static int identity_fields(pctx *c, const json_t *o, const char *path, const char *type,
                           videntity *id)
{
    static const char *const only_type[] = {"type", NULL};
    static const char *const ref_keys[] = {"type", "dockerReference", NULL};
    static const char *const repo_keys[] = {"type", "dockerRepository", NULL};
    static const char *const remap_keys[] = {"type", "prefix", "signedPrefix", NULL};
    if (id->type == IDM_EXACT_REFERENCE) {
        const char *r =
            keys_only(c, o, path, ref_keys) == 0 ? need_str(c, o, "dockerReference", path) : NULL;
        if (r == NULL)
            return -1;
        if (vref_parse_normalized(r, &id->ref) != 0 || vref_name_only(&id->ref))
            return perr(c, path, "dockerReference \"%s\" is not a reference with a tag or digest",
                        r);
        return 0;
    }
    if (id->type == IDM_EXACT_REPOSITORY) {
        const char *r =
            keys_only(c, o, path, repo_keys) == 0 ? need_str(c, o, "dockerRepository", path) : NULL;
        if (r == NULL)
            return -1;
        if (vref_parse_normalized(r, &id->ref) != 0)
            return perr(c, path, "dockerRepository \"%s\" is not a valid repository", r);
        return 0;
    }
    if (id->type == IDM_REMAP_IDENTITY) {
        if (keys_only(c, o, path, remap_keys) != 0)
            return -1;
        const char *pre = need_str(c, o, "prefix", path);
        const char *sig = pre != NULL ? need_str(c, o, "signedPrefix", path) : NULL;
        if (sig == NULL)
            return -1;
        if (!prefix_valid(pre) || !prefix_valid(sig) || strlen(pre) >= sizeof id->prefix ||
            strlen(sig) >= sizeof id->signed_prefix)
            return perr(c, path, "prefix \"%s\" / signedPrefix \"%s\" is not host[:port][/path]",
                        pre, sig);
        snprintf(id->prefix, sizeof id->prefix, "%s", pre);
        snprintf(id->signed_prefix, sizeof id->signed_prefix, "%s", sig);
        return 0;
    }
    (void)type;
    return keys_only(c, o, path, only_type);
}

static int parse_identity(pctx *c, const json_t *o, const char *path, videntity *id)
{
    static const struct {
        const char *name;
        videntity_type type;
    } kinds[] = {
        {"matchExact", IDM_MATCH_EXACT},
        {"matchRepoDigestOrExact", IDM_MATCH_REPO_DIGEST_OR_EXACT},
        {"matchRepository", IDM_MATCH_REPOSITORY},
        {"exactReference", IDM_EXACT_REFERENCE},
        {"exactRepository", IDM_EXACT_REPOSITORY},
        {"remapIdentity", IDM_REMAP_IDENTITY},
    };
    memset(id, 0, sizeof *id);
    if (!json_is_object(o))
        return perr(c, path, "expected a JSON object");
    const char *type = need_str(c, o, "type", path);
    if (type == NULL)
        return -1;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(type, kinds[i].name) == 0) {
            id->type = kinds[i].type;
            return identity_fields(c, o, path, type, id);
        }
    return perr(c, path, "unknown signedIdentity type \"%s\"", type);
}

static int opt_identity(pctx *c, const json_t *o, const char *key, const char *path, videntity *id)
{
    json_t *v = json_object_get(o, key);
    if (v == NULL) {
        memset(id, 0, sizeof *id);
        id->type = IDM_MATCH_REPO_DIGEST_OR_EXACT;
        return 0;
    }
    char sub[VERIFY_TEXT_MAX / 4];
    vtrunc(sub, sizeof sub, "%s.%s", path, key);
    return parse_identity(c, v, sub, id);
}

/* ---- trust material ---- */

/* The bytes named by a *Path (file) or *Data (base64) member. */
static int material(pctx *c, const json_t *v, bool is_path, const char *path, vbytes *out)
{
    vfail inner = {0};
    out->p = NULL;
    out->n = 0;
    if (!json_is_string(v) || json_string_length(v) == 0)
        return perr(c, path, "must be a non-empty string");
    const char *s = json_string_value(v);
    if (!is_path) {
        if (vb64_decode(s, json_string_length(v), out, &inner) != 0)
            return perr(c, path, "%s", inner.text);
        return 0;
    }
    if (!c->load)
        return 0;
    if (vfile_read(s, out, &inner) != 0)
        return perr(c, path, "%s", inner.text);
    hash_chunk(c, s, strlen(s));
    hash_chunk(c, out->p, out->n);
    return 0;
}

static int push_key(pctx *c, vreq *r, const vbytes *b, const char *path)
{
    if (!c->load)
        return 0;
    vfail inner = {0};
    EVP_PKEY *k = vkey_parse(b->p, b->n, &inner);
    if (k == NULL)
        return perr(c, path, "%s", inner.text);
    EVP_PKEY **keys = realloc(r->keys, (r->nkeys + 1) * sizeof *keys);
    if (keys == NULL) {
        EVP_PKEY_free(k);
        return perr(c, path, "out of memory");
    }
    r->keys = keys;
    r->keys[r->nkeys++] = k;
    return 0;
}

static int push_rekor(pctx *c, vreq *r, const vbytes *b, const char *path)
{
    if (!c->load)
        return 0;
    vfail inner = {0};
    EVP_PKEY *k = vkey_parse(b->p, b->n, &inner);
    if (k == NULL)
        return perr(c, path, "Rekor key: %s", inner.text);
    if (!vkey_is_ecdsa(k)) {
        EVP_PKEY_free(k);
        return perr(c, path, "Rekor public key is not an ECDSA key");
    }
    vlog *logs = realloc(r->rekor, (r->nrekor + 1) * sizeof *logs);
    if (logs == NULL) {
        EVP_PKEY_free(k);
        return perr(c, path, "out of memory");
    }
    r->rekor = logs;
    if (vlog_init_key(&r->rekor[r->nrekor], k, &inner) != 0) {
        EVP_PKEY_free(k);
        return perr(c, path, "%s", inner.text);
    }
    r->nrekor++;
    return 0;
}

typedef int (*material_sink)(pctx *c, vreq *r, const vbytes *b, const char *path);

/* One member of the keyPath/keyPaths/keyData/keyDatas family. */
static int material_member(pctx *c, vreq *r, const json_t *v, const char *key, const char *path,
                           material_sink sink)
{
    size_t kl = strlen(key);
    bool plural = key[kl - 1] == 's';
    bool is_path = strstr(key, "Path") != NULL;
    char sub[VERIFY_TEXT_MAX / 4];
    vtrunc(sub, sizeof sub, "%s.%s", path, key);
    if (plural && (!json_is_array(v) || json_array_size(v) == 0))
        return perr(c, sub, "must be a non-empty array");
    size_t n = plural ? json_array_size(v) : 1;
    for (size_t i = 0; i < n; i++) {
        char item[VERIFY_TEXT_MAX / 4];
        vtrunc(item, sizeof item, plural ? "%s[%zu]" : "%s", sub, i);
        vbytes b;
        if (material(c, plural ? json_array_get(v, i) : v, is_path, item, &b) != 0)
            return -1;
        int rc = (is_path && !c->load) ? 0 : sink(c, r, &b, item);
        vbytes_clear(&b);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int count_present(const json_t *o, const char *const *names)
{
    int n = 0;
    for (size_t i = 0; names[i] != NULL; i++)
        n += json_object_get(o, names[i]) != NULL;
    return n;
}

/* Loads each of `names` present in o into r via sink. */
static int material_family(pctx *c, vreq *r, const json_t *o, const char *path,
                           const char *const *names, material_sink sink)
{
    for (size_t i = 0; names[i] != NULL; i++) {
        json_t *v = json_object_get(o, names[i]);
        if (v != NULL && material_member(c, r, v, names[i], path, sink) != 0)
            return -1;
    }
    return 0;
}

static int load_certs(pctx *c, const json_t *o, const char *pkey, const char *dkey,
                      const char *path, bool required, STACK_OF(X509) * *out)
{
    json_t *pv = json_object_get(o, pkey), *dv = json_object_get(o, dkey);
    *out = NULL;
    if (pv != NULL && dv != NULL)
        return perr(c, path, "\"%s\" and \"%s\" cannot be used together", pkey, dkey);
    if (pv == NULL && dv == NULL)
        return required ? perr(c, path, "one of \"%s\" and \"%s\" is required", pkey, dkey) : 0;
    char sub[VERIFY_TEXT_MAX / 4];
    vtrunc(sub, sizeof sub, "%s.%s", path, pv != NULL ? pkey : dkey);
    vbytes b;
    if (material(c, pv != NULL ? pv : dv, pv != NULL, sub, &b) != 0)
        return -1;
    if (b.p == NULL)
        return 0; /* syntax-only pass */
    vfail inner = {0};
    *out = vcerts_parse(b.p, b.n, &inner);
    vbytes_clear(&b);
    if (*out == NULL)
        return perr(c, sub, "%s", inner.text);
    return 0;
}

static int opt_text(pctx *c, const json_t *o, const char *key, const char *path, char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0)
        return perr(c, path, "\"%s\" must be a non-empty string", key);
    *out = dupstr(json_string_value(v));
    return *out == NULL ? perr(c, path, "out of memory") : 0;
}

static int parse_fulcio(pctx *c, const json_t *o, const char *path, vreq *r)
{
    static const char *const keys[] = {"caPath", "caData", "oidcIssuer", "subjectEmail", NULL};
    if (keys_only(c, o, path, keys) != 0 ||
        load_certs(c, o, "caPath", "caData", path, true, &r->fulcio_cas) != 0 ||
        opt_text(c, o, "oidcIssuer", path, &r->oidc_issuer) != 0 ||
        opt_text(c, o, "subjectEmail", path, &r->subject_email) != 0)
        return -1;
    if (r->oidc_issuer == NULL)
        return perr(c, path, "\"oidcIssuer\" is required");
    if (r->subject_email == NULL)
        return perr(c, path, "\"subjectEmail\" is required");
    return 0;
}

static int parse_pki(pctx *c, const json_t *o, const char *path, vreq *r)
{
    static const char *const keys[] = {"caRootsPath",
                                       "caRootsData",
                                       "caIntermediatesPath",
                                       "caIntermediatesData",
                                       "subjectEmail",
                                       "subjectHostname",
                                       NULL};
    r->has_pki = true;
    if (keys_only(c, o, path, keys) != 0 ||
        load_certs(c, o, "caRootsPath", "caRootsData", path, true, &r->pki_roots) != 0 ||
        load_certs(c, o, "caIntermediatesPath", "caIntermediatesData", path, false,
                   &r->pki_intermediates) != 0 ||
        opt_text(c, o, "subjectEmail", path, &r->pki_email) != 0 ||
        opt_text(c, o, "subjectHostname", path, &r->pki_hostname) != 0)
        return -1;
    if (r->pki_email == NULL && r->pki_hostname == NULL)
        return perr(c, path,
                    "at least one of \"subjectEmail\" and \"subjectHostname\" is required");
    return 0;
}

static int parse_sigstore(pctx *c, const json_t *o, const char *path, vreq *r)
{
    static const char *const keys[] = {"type",
                                       "keyPath",
                                       "keyPaths",
                                       "keyData",
                                       "keyDatas",
                                       "fulcio",
                                       "pki",
                                       "rekorPublicKeyPath",
                                       "rekorPublicKeyPaths",
                                       "rekorPublicKeyData",
                                       "rekorPublicKeyDatas",
                                       "signedIdentity",
                                       NULL};
    static const char *const key_names[] = {"keyPath", "keyPaths", "keyData", "keyDatas", NULL};
    static const char *const rekor_names[] = {"rekorPublicKeyPath", "rekorPublicKeyPaths",
                                              "rekorPublicKeyData", "rekorPublicKeyDatas", NULL};
    if (keys_only(c, o, path, keys) != 0)
        return -1;
    int nkey = count_present(o, key_names), nrekor = count_present(o, rekor_names);
    json_t *fulcio = json_object_get(o, "fulcio"), *pki = json_object_get(o, "pki");
    int sources = nkey + (fulcio != NULL) + (pki != NULL);
    if (sources != 1)
        return perr(c, path,
                    "exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki must be "
                    "specified (found %d)",
                    sources);
    if (nrekor > 1)
        return perr(c, path, "at most one of the rekorPublicKey* members may be specified");
    if (fulcio != NULL && nrekor == 0)
        return perr(c, path, "a rekorPublicKey* member is required with fulcio");
    if (pki != NULL && nrekor != 0)
        return perr(c, path, "rekorPublicKey* members are not supported with pki");
    if (material_family(c, r, o, path, key_names, push_key) != 0 ||
        material_family(c, r, o, path, rekor_names, push_rekor) != 0)
        return -1;
    char sub[VERIFY_TEXT_MAX / 4];
    vtrunc(sub, sizeof sub, "%s.%s", path, fulcio != NULL ? "fulcio" : "pki");
    if (fulcio != NULL && parse_fulcio(c, fulcio, sub, r) != 0)
        return -1;
    if (pki != NULL && parse_pki(c, pki, sub, r) != 0)
        return -1;
    return opt_identity(c, o, "signedIdentity", path, &r->identity);
}

static int parse_signed_by(pctx *c, const json_t *o, const char *path, vreq *r)
{
    static const char *const keys[] = {"type",    "keyType",        "keyPath", "keyPaths",
                                       "keyData", "signedIdentity", NULL};
    static const char *const key_types[] = {"GPGKeys", "signedByGPGKeys", "X509Certificates",
                                            "signedByX509CAs", NULL};
    if (keys_only(c, o, path, keys) != 0)
        return -1;
    const char *kt = need_str(c, o, "keyType", path);
    if (kt == NULL)
        return -1;
    bool known = false;
    for (size_t i = 0; key_types[i] != NULL; i++)
        known = known || strcmp(kt, key_types[i]) == 0;
    if (!known)
        return perr(c, path, "unrecognized keyType \"%s\"", kt);
    int n = (json_object_get(o, "keyPath") != NULL) + (json_object_get(o, "keyPaths") != NULL) +
            (json_object_get(o, "keyData") != NULL);
    if (n != 1)
        return perr(c, path, "exactly one of keyPath, keyPaths and keyData must be specified");
    return opt_identity(c, o, "signedIdentity", path, &r->identity);
}

static int parse_requirement(pctx *c, const json_t *o, const char *path, vreq *r)
{
    static const char *const only_type[] = {"type", NULL};
    static const char *const base_keys[] = {"type", "baseLayerIdentity", NULL};
    memset(r, 0, sizeof *r);
    if (!json_is_object(o))
        return perr(c, path, "a requirement must be a JSON object");
    const char *type = need_str(c, o, "type", path);
    if (type == NULL)
        return -1;
    if (strcmp(type, "insecureAcceptAnything") == 0 || strcmp(type, "reject") == 0) {
        r->type = type[0] == 'r' ? REQ_REJECT : REQ_ACCEPT;
        return keys_only(c, o, path, only_type);
    }
    if (strcmp(type, "sigstoreSigned") == 0) {
        r->type = REQ_SIGSTORE;
        return parse_sigstore(c, o, path, r);
    }
    if (strcmp(type, "signedBy") == 0 || strcmp(type, "signedBaseLayer") == 0) {
        if (c->load)
            return perr(c, path,
                        "\"%s\" (GPG simple signing) cannot be verified by Sluice; use "
                        "sigstoreSigned for the docker transport",
                        type);
        r->type = strcmp(type, "signedBy") == 0 ? REQ_SIGNED_BY : REQ_SIGNED_BASE_LAYER;
        if (r->type == REQ_SIGNED_BY)
            return parse_signed_by(c, o, path, r);
        if (keys_only(c, o, path, base_keys) != 0)
            return -1;
        json_t *bli = json_object_get(o, "baseLayerIdentity");
        char sub[VERIFY_TEXT_MAX / 4];
        vtrunc(sub, sizeof sub, "%s.baseLayerIdentity", path);
        return bli == NULL ? perr(c, path, "\"baseLayerIdentity\" is required")
                           : parse_identity(c, bli, sub, &r->identity);
    }
    return perr(c, path, "unknown requirement type \"%s\"", type);
}

static int parse_requirements(pctx *c, const json_t *a, const char *path, vscope *s)
{
    if (!json_is_array(a) || json_array_size(a) == 0)
        return perr(c, path, "must be a non-empty array of requirements");
    s->reqs = calloc(json_array_size(a), sizeof *s->reqs);
    if (s->reqs == NULL)
        return perr(c, path, "out of memory");
    for (size_t i = 0; i < json_array_size(a); i++) {
        char sub[VERIFY_TEXT_MAX / 4];
        vtrunc(sub, sizeof sub, "%s[%zu]", path, i);
        s->n = i + 1;
        if (parse_requirement(c, json_array_get(a, i), sub, &s->reqs[i]) != 0)
            return -1;
    }
    return 0;
}

/* ---- scopes ---- */

static bool wildcard_scope_valid(const char *s)
{
    return strncmp(s, "*.", 2) == 0 && strchr(s + 2, ':') == NULL &&
           vref_domain_valid(s + 2, strlen(s + 2));
}

/* host[:port][/path][:tag|@digest] */
static bool docker_scope_valid(const char *s)
{
    if (wildcard_scope_valid(s))
        return true;
    const char *slash = strchr(s, '/');
    if (slash == NULL)
        return vref_domain_valid(s, strlen(s));
    vref r;
    char canon[VERIFY_REF_MAX + 300];
    if (vref_parse_normalized(s, &r) != 0)
        return false;
    vref_string(&r, canon, sizeof canon);
    return strcmp(canon, s) == 0; /* fully expanded form only */
}

static int parse_docker(pctx *c, const json_t *o, const char *path, verify_policy *p)
{
    if (!json_is_object(o))
        return perr(c, path, "expected a JSON object of scopes");
    p->docker = calloc(json_object_size(o) + 1, sizeof *p->docker);
    if (p->docker == NULL)
        return perr(c, path, "out of memory");
    const char *scope;
    json_t *reqs;
    json_object_foreach((json_t *)o, scope, reqs)
    {
        char sub[VERIFY_TEXT_MAX / 4];
        vtrunc(sub, sizeof sub, "%s[\"%s\"]", path, scope);
        if (scope[0] != '\0' && !docker_scope_valid(scope))
            return perr(c, sub,
                        "invalid docker scope (want host[:port], host[:port]/namespace, "
                        "host[:port]/repo[:tag|@digest] or *.domain)");
        vscope *s = &p->docker[p->ndocker++];
        if ((s->scope = dupstr(scope)) == NULL)
            return perr(c, sub, "out of memory");
        if (parse_requirements(c, reqs, sub, s) != 0)
            return -1;
    }
    return 0;
}

/* Other transports: validated, not kept. */
static int parse_other_transport(pctx *c, const json_t *o, const char *path)
{
    if (!json_is_object(o))
        return perr(c, path, "expected a JSON object of scopes");
    const char *scope;
    json_t *reqs;
    bool load = c->load;
    c->load = false;
    int rc = 0;
    json_object_foreach((json_t *)o, scope, reqs)
    {
        char sub[VERIFY_TEXT_MAX / 4];
        vtrunc(sub, sizeof sub, "%s[\"%s\"]", path, scope);
        vscope tmp = {0};
        rc = parse_requirements(c, reqs, sub, &tmp);
        scope_clear(&tmp);
        if (rc != 0)
            break;
    }
    c->load = load;
    return rc;
}

static int parse_transports(pctx *c, const json_t *o, verify_policy *p)
{
    if (!json_is_object(o))
        return perr(c, "$.transports", "expected a JSON object");
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)o, name, v)
    {
        char sub[VERIFY_TEXT_MAX / 4];
        vtrunc(sub, sizeof sub, "$.transports.%s", name);
        int rc = strcmp(name, "docker") == 0 ? parse_docker(c, v, sub, p)
                                             : parse_other_transport(c, v, sub);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int parse_policy(pctx *c, const json_t *j, verify_policy *p)
{
    static const char *const keys[] = {"default", "transports", NULL};
    if (keys_only(c, j, "$", keys) != 0)
        return -1;
    json_t *def = json_object_get(j, "default");
    if (def == NULL)
        return perr(c, "$", "\"default\" is required");
    if (parse_requirements(c, def, "$.default", &p->global) != 0)
        return -1;
    json_t *tr = json_object_get(j, "transports");
    return tr != NULL ? parse_transports(c, tr, p) : 0;
}

static int attach_root(pctx *c, const verify_policy_options *opts, verify_policy *p)
{
    if (opts == NULL || opts->trusted_root_path == NULL)
        return 0;
    char err[VERIFY_TEXT_MAX / 2];
    p->root = verify_trust_root_load(opts->trusted_root_path, err, sizeof err);
    if (p->root == NULL)
        return vfail_set(c->f, VERIFY_DENIED_MALFORMED, "%s: trusted root: %s", c->name, err);
    hash_chunk(c, p->root->raw.p, p->root->raw.n);
    return 0;
}

verify_policy *verify_policy_parse(const void *json, size_t len, const char *name,
                                   const verify_policy_options *opts, char *err, size_t errlen)
{
    vfail f = {0};
    pctx c = {name != NULL ? name : "policy", &f, EVP_MD_CTX_new(), true};
    verify_policy *p = calloc(1, sizeof *p);
    json_t *j = NULL;
    int rc = -1;
    if (p == NULL || c.hash == NULL || EVP_DigestInit_ex(c.hash, EVP_sha256(), NULL) != 1) {
        vfail_set(&f, VERIFY_DENIED_INTERNAL, "out of memory");
    } else if ((j = vjson_parse(json, len, &f)) == NULL) {
        vfail_wrap(&f, "%s", c.name);
    } else {
        static const char revision[] = "sluice-policy-v1 verifier " V_STR(VERIFY_REVISION);
        hash_chunk(&c, revision, sizeof revision - 1);
        hash_chunk(&c, json, len);
        rc = parse_policy(&c, j, p);
        if (rc == 0)
            rc = attach_root(&c, opts, p);
    }
    if (rc == 0 && EVP_DigestFinal_ex(c.hash, p->hash, NULL) != 1)
        rc = vfail_set(&f, VERIFY_DENIED_INTERNAL, "hash failed");
    json_decref(j);
    EVP_MD_CTX_free(c.hash);
    if (rc != 0) {
        verr_put(err, errlen, f.text);
        verify_policy_free(p);
        return NULL;
    }
    return p;
}

verify_policy *verify_policy_load(const char *path, const verify_policy_options *opts, char *err,
                                  size_t errlen)
{
    vfail f = {0};
    vbytes b;
    if (vfile_read(path, &b, &f) != 0) {
        verr_put(err, errlen, f.text);
        return NULL;
    }
    verify_policy *p = verify_policy_parse(b.p, b.n, path, opts, err, errlen);
    vbytes_clear(&b);
    return p;
}

void verify_policy_hash(const verify_policy *p, uint8_t out[VERIFY_DIGEST_LEN])
{
    memcpy(out, p->hash, VERIFY_DIGEST_LEN);
}

/* ---- lookup ---- */

static const vscope *find_scope(const verify_policy *p, const char *scope)
{
    for (size_t i = 0; i < p->ndocker; i++)
        if (strcmp(p->docker[i].scope, scope) == 0)
            return &p->docker[i];
    return NULL;
}

static const vscope *lookup_wildcards(const verify_policy *p, const char *name)
{
    char host[VERIFY_REF_MAX];
    snprintf(host, sizeof host, "%.*s", (int)strcspn(name, "/:"), name);
    for (const char *dot = strchr(host, '.'); dot != NULL; dot = strchr(dot + 1, '.')) {
        char wild[VERIFY_REF_MAX + 2];
        vtrunc(wild, sizeof wild, "*%s", dot);
        const vscope *s = find_scope(p, wild);
        if (s != NULL)
            return s;
    }
    return NULL;
}

const vscope *vpolicy_lookup(const verify_policy *p, const vref *image)
{
    char buf[VERIFY_REF_MAX + 300];
    vref_string(image, buf, sizeof buf);
    const vscope *s = vref_name_only(image) ? NULL : find_scope(p, buf);
    snprintf(buf, sizeof buf, "%s", image->name);
    while (s == NULL) {
        s = find_scope(p, buf); /* repository, namespaces, then host[:port] */
        char *slash = strrchr(buf, '/');
        if (slash == NULL)
            break;
        *slash = '\0';
    }
    if (s == NULL)
        s = lookup_wildcards(p, image->name);
    if (s == NULL)
        s = find_scope(p, "");
    return s != NULL ? s : &p->global;
}

int verify_policy_requirements(const verify_policy *p, const char *registry, const char *repository,
                               const char *tag, verify_requirements *out)
{
    memset(out, 0, sizeof *out);
    vref image;
    if (vref_image(registry, repository, tag, NULL, &image) != 0)
        return -1;
    const vscope *s = vpolicy_lookup(p, &image);
    out->is_global_default = s == &p->global;
    snprintf(out->scope, sizeof out->scope, "%s", s->scope != NULL ? s->scope : "default");
    out->count = s->n;
    out->accept_anything = 1;
    for (size_t i = 0; i < s->n; i++) {
        out->accept_anything &= s->reqs[i].type == REQ_ACCEPT;
        out->rejects |= s->reqs[i].type == REQ_REJECT;
        out->needs_signatures |= s->reqs[i].type == REQ_SIGSTORE;
        out->checks_now |= s->reqs[i].type == REQ_SIGSTORE && s->reqs[i].has_pki;
    }
    return 0;
}

/* ---- signedIdentity ---- */

static bool repo_digest_or_exact(const vref *intended, const vref *sig)
{
    char a[VERIFY_REF_MAX + 300], b[VERIFY_REF_MAX + 300];
    if (vref_name_only(sig))
        return false;
    if (intended->tag[0] != '\0') {
        vref_string(intended, a, sizeof a);
        vref_string(sig, b, sizeof b);
        return strcmp(a, b) == 0;
    }
    if (intended->digest[0] != '\0')
        return strcmp(sig->name, intended->name) == 0;
    return false;
}

static bool ref_matches_prefix(const char *ref, const char *prefix)
{
    size_t n = strlen(prefix);
    if (strncmp(ref, prefix, n) != 0)
        return false;
    return ref[n] == '\0' || ref[n] == '/' || ref[n] == ':' || ref[n] == '@';
}

static bool remap_matches(const videntity *id, const vref *image, const vref *sig)
{
    char s[VERIFY_REF_MAX + 300], rewritten[2 * VERIFY_REF_MAX + 300];
    vref_string(image, s, sizeof s);
    if (!ref_matches_prefix(s, id->prefix))
        return repo_digest_or_exact(image, sig);
    int n =
        snprintf(rewritten, sizeof rewritten, "%s%s", id->signed_prefix, s + strlen(id->prefix));
    vref remapped;
    if (n < 0 || (size_t)n >= sizeof rewritten || vref_parse_canonical(rewritten, &remapped) != 0)
        return false;
    return repo_digest_or_exact(&remapped, sig);
}

bool videntity_matches(const videntity *id, const vref *image, const char *signed_ref)
{
    vref sig;
    char a[VERIFY_REF_MAX + 300], b[VERIFY_REF_MAX + 300];
    if (vref_parse_normalized(signed_ref, &sig) != 0)
        return false;
    switch (id->type) {
    case IDM_MATCH_EXACT:
    case IDM_EXACT_REFERENCE: {
        const vref *want = id->type == IDM_MATCH_EXACT ? image : &id->ref;
        if (vref_name_only(want) || vref_name_only(&sig))
            return false;
        vref_string(want, a, sizeof a);
        vref_string(&sig, b, sizeof b);
        return strcmp(a, b) == 0;
    }
    case IDM_MATCH_REPO_DIGEST_OR_EXACT:
        return repo_digest_or_exact(image, &sig);
    case IDM_MATCH_REPOSITORY:
        return strcmp(sig.name, image->name) == 0;
    case IDM_EXACT_REPOSITORY:
        return strcmp(sig.name, id->ref.name) == 0;
    case IDM_REMAP_IDENTITY:
        return remap_matches(id, image, &sig);
    }
    return false;
}
