/*
 * cmd_verify.c — `sluice verify`: the daemon's decision for a reference, and
 * the offline file-based checks of verify/:
 *
 *   sluice verify [--config FILE] [--cache DIR] [--upstream URL]
 *                 [--policy FILE] [--trusted-root ROOT.json] [--offline]
 *                 [REGISTRY/]REPO:TAG | [REGISTRY/]REPO@sha256:HEX
 *       Reference: parsed here, decided by cmd_verify_ref.c exactly as
 *       `sluice serve` with that configuration would, with the daemon's
 *       code (trust.c): the
 *       scope that matched, the signatures found and how each fares, then
 *       the verdict. Gathered signatures are cached like the daemon caches
 *       them; --offline decides from the cache alone.
 *
 *   sluice verify --file MODULE.ko [--cert CERT.pem ...]
 *       Kernel module: says whether the blob is a module, prints vermagic,
 *       signer, key id and hash algorithm, and verifies the appended
 *       signature against the certificates (PEM or DER, repeatable).
 *
 *   sluice verify --policy POLICY.json [--trusted-root ROOT.json]
 *                 --image-ref REGISTRY/REPO[:TAG]
 *                 (--manifest-digest sha256:HEX | --manifest FILE)
 *                 [--sig-dir DIR] [--sig FILE ...] [--bundle FILE ...]
 *                 [--time UNIX]
 *       Image: evaluates the policy for the image with the given cosign
 *       signatures and Sigstore bundles, as the proxy does. A signature file
 *       is one layer of a cosign "sha256-<hex>.sig" manifest in the format
 *       containers/image's dir: transport stores it: an optional "\0sigstore-
 *       json\n" prefix, then {"mimeType": LAYER MEDIA TYPE, "payload":
 *       BASE64 OF THE LAYER BLOB, "annotations": {LAYER ANNOTATIONS}}.
 *       --sig-dir takes every file named "signature-*" in DIR, sorted.
 *
 *   sluice verify --bundle BUNDLE.json --trusted-root ROOT.json
 *                 (--artifact FILE | --artifact-digest ALG:HEX)
 *                 [--key KEY.pub] [--identity SAN] [--issuer URL] [--time UNIX]
 *                 [--allow-no-tlog]
 *       Sigstore bundle ("verify-bundle"): keyless (certificate identity
 *       and issuer) or with a managed key. --allow-no-tlog accepts a bundle
 *       whose only signing time is an RFC 3161 timestamp.
 *
 * Output is "verdict: allowed|denied", "reason: <code>", "detail: <text>"
 * plus the facts found. Exit status: 0 allowed / valid, 1 denied, 2 usage or
 * input error. --time defaults to the current time.
 */
#include "cmd_verify.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "verify.h"

#define MAX_ITEMS 64
#define SIG_PREFIX "\0sigstore-json\n"
#define SIG_PREFIX_LEN 15

typedef struct {
    const char *file, *policy, *trusted_root, *image_ref, *manifest_digest, *manifest;
    const char *sig_dir, *artifact, *artifact_digest, *key, *identity, *issuer;
    const char *certs[MAX_ITEMS], *sigs[MAX_ITEMS], *bundles[MAX_ITEMS];
    size_t ncerts, nsigs, nbundles;
    int allow_no_tlog;
    long long now;
    int time_given;
    verify_ref_opts ref; /* REF mode: ref.ref is the positional argument */
} options;

/* ---- small helpers ---- */

static int usage(void)
{
    fprintf(stderr,
            "usage: sluice verify [--config FILE] [--cache DIR] [--upstream URL] [--policy FILE]\n"
            "                     [--trusted-root ROOT.json] [--offline]\n"
            "                     [REGISTRY/]REPO:TAG | [REGISTRY/]REPO@sha256:HEX\n"
            "       sluice verify --file MODULE.ko [--cert CERT.pem ...]\n"
            "       sluice verify --policy POLICY.json [--trusted-root ROOT.json]\n"
            "                     --image-ref REGISTRY/REPO[:TAG]\n"
            "                     (--manifest-digest sha256:HEX | --manifest FILE)\n"
            "                     [--sig-dir DIR] [--sig FILE ...] [--bundle FILE ...] "
            "[--time UNIX]\n"
            "       sluice verify --bundle BUNDLE.json --trusted-root ROOT.json\n"
            "                     (--artifact FILE | --artifact-digest ALG:HEX)\n"
            "                     [--key KEY.pub] [--identity SAN] [--issuer URL] [--time UNIX]\n"
            "                     [--allow-no-tlog]\n");
    return 2;
}

static int fail(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "sluice verify: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return 2;
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return fail("%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf != NULL) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        uint8_t *more = cap < (1u << 30) ? realloc(buf, cap * 2) : NULL;
        if (more == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = more;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (buf == NULL || bad) {
        free(buf);
        return fail("%s: %s", path, "cannot read");
    }
    *out = buf;
    *len = n;
    return 0;
}

static int print_verdict(const verify_verdict *v)
{
    printf("verdict: %s\nreason: %s\ndetail: %s\n", v->allowed ? "allowed" : "denied",
           verify_reason_name(v->reason), v->text);
    return v->allowed ? 0 : 1;
}

/* ---- options ---- */

static int add_item(const char **arr, size_t *n, const char *v)
{
    if (*n >= MAX_ITEMS)
        return fail("too many %s arguments (max %s)", "repeated", "64");
    arr[(*n)++] = v;
    return 0;
}

static int parse_time(const char *s, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0)
        return fail("invalid --time \"%s\"%s", s, "");
    *out = v;
    return 0;
}

static int parse_options(int argc, char **argv, options *o)
{
    static const struct option opts[] = {{"file", required_argument, NULL, 'f'},
                                         {"cert", required_argument, NULL, 'c'},
                                         {"policy", required_argument, NULL, 'p'},
                                         {"trusted-root", required_argument, NULL, 'r'},
                                         {"image-ref", required_argument, NULL, 'i'},
                                         {"manifest-digest", required_argument, NULL, 'd'},
                                         {"manifest", required_argument, NULL, 'm'},
                                         {"sig-dir", required_argument, NULL, 'D'},
                                         {"sig", required_argument, NULL, 's'},
                                         {"bundle", required_argument, NULL, 'b'},
                                         {"artifact", required_argument, NULL, 'a'},
                                         {"artifact-digest", required_argument, NULL, 'A'},
                                         {"key", required_argument, NULL, 'k'},
                                         {"identity", required_argument, NULL, 'I'},
                                         {"issuer", required_argument, NULL, 'O'},
                                         {"time", required_argument, NULL, 't'},
                                         {"allow-no-tlog", no_argument, NULL, 'T'},
                                         {"config", required_argument, NULL, 'C'},
                                         {"cache", required_argument, NULL, 'K'},
                                         {"upstream", required_argument, NULL, 'U'},
                                         {"offline", no_argument, NULL, 'F'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof *o);
    o->now = (long long)time(NULL);
    optind = 1;
    int c, rc = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            o->file = optarg;
            break;
        case 'c':
            rc = add_item(o->certs, &o->ncerts, optarg);
            break;
        case 'p':
            o->policy = optarg;
            break;
        case 'r':
            o->trusted_root = optarg;
            break;
        case 'i':
            o->image_ref = optarg;
            break;
        case 'd':
            o->manifest_digest = optarg;
            break;
        case 'm':
            o->manifest = optarg;
            break;
        case 'D':
            o->sig_dir = optarg;
            break;
        case 's':
            rc = add_item(o->sigs, &o->nsigs, optarg);
            break;
        case 'b':
            rc = add_item(o->bundles, &o->nbundles, optarg);
            break;
        case 'a':
            o->artifact = optarg;
            break;
        case 'A':
            o->artifact_digest = optarg;
            break;
        case 'k':
            o->key = optarg;
            break;
        case 'I':
            o->identity = optarg;
            break;
        case 'O':
            o->issuer = optarg;
            break;
        case 't':
            rc = parse_time(optarg, &o->now);
            o->time_given = 1;
            break;
        case 'C':
            o->ref.config_path = optarg;
            break;
        case 'K':
            o->ref.cache_dir = optarg;
            break;
        case 'U':
            o->ref.upstream = optarg;
            break;
        case 'F':
            o->ref.offline = 1;
            break;
        case 'T':
            o->allow_no_tlog = 1;
            break;
        case 'h':
            usage();
            return 0;
        default:
            return usage();
        }
    }
    if (rc == 0 && optind < argc)
        o->ref.ref = argv[optind++];
    if (rc == 0 && optind < argc)
        return fail("unexpected argument \"%s\"%s", argv[optind], "");
    return rc;
}

/* ---- --file: kernel modules ---- */

static int verify_module(const options *o)
{
    uint8_t *data = NULL;
    size_t len = 0;
    char err[1024];
    if (read_file(o->file, &data, &len) != 0)
        return 2;
    verify_certs *certs = verify_certs_new();
    int rc = certs == NULL ? fail("%s%s", "out of memory", "") : 0;
    for (size_t i = 0; rc == 0 && i < o->ncerts; i++)
        if (verify_certs_add_file(certs, o->certs[i], err, sizeof err) != 0)
            rc = fail("%s%s", err, "");
    if (rc == 0) {
        verify_module_info info;
        verify_verdict v;
        verify_module_verify(data, len, certs, &info, &v);
        printf("file: %s\nkernel module: %s\nvermagic: %s\nsigned: %s\n", o->file,
               info.is_module ? "yes" : "no", info.vermagic, info.has_signature ? "yes" : "no");
        if (info.has_signature)
            printf("signer: %s\nkey id: %s%s\nhash algorithm: %s\nsignature: %zu bytes at "
                   "offset %zu\n",
                   info.signer, info.key_id, info.key_id_is_skid ? " (subjectKeyIdentifier)" : "",
                   info.hash_algo, info.sig_len, info.sig_offset);
        rc = print_verdict(&v);
    }
    verify_certs_free(certs);
    free(data);
    return rc;
}

/* ---- --bundle with --trusted-root: verify-bundle ---- */

static int verify_one_bundle(const options *o, const verify_trust_root *root)
{
    uint8_t *json = NULL, *artifact = NULL;
    size_t jlen = 0, alen = 0;
    char err[1024];
    verify_pubkey *key = NULL;
    int rc = read_file(o->bundles[0], &json, &jlen);
    if (rc == 0 && o->artifact != NULL)
        rc = read_file(o->artifact, &artifact, &alen);
    if (rc == 0 && o->key != NULL && (key = verify_pubkey_load(o->key, err, sizeof err)) == NULL)
        rc = fail("%s%s", err, "");
    if (rc == 0) {
        verify_bundle_opts bo = {.trust_root = root,
                                 .key = key,
                                 .san = o->identity,
                                 .issuer = o->issuer,
                                 .artifact = artifact,
                                 .artifact_len = alen,
                                 .artifact_digest = o->artifact_digest,
                                 .now = o->now,
                                 .allow_no_tlog = o->allow_no_tlog};
        verify_bundle_result res;
        verify_bundle(json, jlen, &bo, &res);
        if (res.verdict.allowed)
            printf("identity: %s\nissuer: %s\nsigned at: %lld\n", res.san, res.issuer,
                   (long long)res.signed_time);
        rc = print_verdict(&res.verdict);
    }
    verify_pubkey_free(key);
    free(json);
    free(artifact);
    return rc;
}

static int verify_bundle_cmd(const options *o)
{
    if (o->nbundles != 1 || (o->artifact == NULL) == (o->artifact_digest == NULL))
        return usage();
    char err[1024];
    verify_trust_root *root = verify_trust_root_load(o->trusted_root, err, sizeof err);
    if (root == NULL)
        return fail("%s%s", err, "");
    int rc = verify_one_bundle(o, root);
    verify_trust_root_free(root);
    return rc;
}

/* ---- --policy: image evaluation ---- */

typedef struct {
    json_t *docs[MAX_ITEMS];
    uint8_t *payloads[MAX_ITEMS];
    verify_cosign_sig sigs[MAX_ITEMS];
    size_t n;
    uint8_t *bundle_data[MAX_ITEMS];
    verify_buf bundles[MAX_ITEMS];
    size_t nb;
} inputs;

static void inputs_free(inputs *in)
{
    for (size_t i = 0; i < in->n; i++) {
        json_decref(in->docs[i]);
        free(in->payloads[i]);
    }
    for (size_t i = 0; i < in->nb; i++)
        free(in->bundle_data[i]);
}

static const char *annotation(const json_t *ann, const char *key, size_t *len)
{
    const json_t *v = json_object_get(ann, key);
    *len = json_string_length(v);
    return json_string_value(v);
}

static int decode_payload(const char *b64, uint8_t **out, size_t *len)
{
    size_t n = strlen(b64);
    *out = malloc(n / 4 * 3 + 3);
    if (*out == NULL)
        return -1;
    int got = EVP_DecodeBlock(*out, (const unsigned char *)b64, (int)n);
    if (n % 4 != 0 || got < 0)
        return -1;
    *len = (size_t)got - (n > 0 && b64[n - 1] == '=') - (n > 1 && b64[n - 2] == '=');
    return 0;
}

static int load_sig(const char *path, inputs *in)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (in->n >= MAX_ITEMS)
        return fail("%s: too many signatures%s", path, "");
    if (read_file(path, &data, &len) != 0)
        return 2;
    size_t skip =
        len >= SIG_PREFIX_LEN && memcmp(data, SIG_PREFIX, SIG_PREFIX_LEN) == 0 ? SIG_PREFIX_LEN : 0;
    json_error_t je;
    json_t *doc = json_loadb((const char *)data + skip, len - skip, JSON_REJECT_DUPLICATES, &je);
    free(data);
    const char *payload = json_string_value(json_object_get(doc, "payload"));
    const json_t *ann = json_object_get(doc, "annotations");
    verify_cosign_sig *s = &in->sigs[in->n];
    in->docs[in->n] = doc;
    in->n++;
    if (payload == NULL || !json_is_object(ann) ||
        decode_payload(payload, &in->payloads[in->n - 1], &s->payload_len) != 0)
        return fail("%s: not a cosign signature file (%s)", path,
                    doc == NULL ? je.text : "payload/annotations");
    s->payload = in->payloads[in->n - 1];
    s->media_type = json_string_value(json_object_get(doc, "mimeType"));
    s->media_type_len = json_string_length(json_object_get(doc, "mimeType"));
    s->signature = annotation(ann, "dev.cosignproject.cosign/signature", &s->signature_len);
    s->certificate = annotation(ann, "dev.sigstore.cosign/certificate", &s->certificate_len);
    s->chain = annotation(ann, "dev.sigstore.cosign/chain", &s->chain_len);
    s->rekor_bundle = annotation(ann, "dev.sigstore.cosign/bundle", &s->rekor_bundle_len);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_sig_dir(const char *dir, inputs *in)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return fail("%s: %s", dir, strerror(errno));
    char *names[MAX_ITEMS];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < MAX_ITEMS)
        if (strncmp(e->d_name, "signature-", 10) == 0 && (names[n] = strdup(e->d_name)) != NULL)
            n++;
    closedir(d);
    qsort(names, n, sizeof names[0], by_name);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (rc == 0)
            rc = load_sig(path, in);
        free(names[i]);
    }
    return rc;
}

static int load_inputs(const options *o, inputs *in)
{
    int rc = o->sig_dir != NULL ? load_sig_dir(o->sig_dir, in) : 0;
    for (size_t i = 0; rc == 0 && i < o->nsigs; i++)
        rc = load_sig(o->sigs[i], in);
    for (size_t i = 0; rc == 0 && i < o->nbundles; i++) {
        rc = read_file(o->bundles[i], &in->bundle_data[i], &in->bundles[i].len);
        in->bundles[i].data = in->bundle_data[i];
        in->nb = rc == 0 ? i + 1 : i;
    }
    return rc;
}

/* REGISTRY/REPO[:TAG] into buf-backed pieces. */
static int split_ref(const char *ref, char *buf, size_t cap, verify_image *img)
{
    if (strlen(ref) >= cap)
        return fail("image reference too long: %s%s", ref, "");
    strcpy(buf, ref);
    char *slash = strchr(buf, '/');
    if (slash == NULL)
        return fail("--image-ref must be REGISTRY/REPO[:TAG], got \"%s\"%s", ref, "");
    *slash = '\0';
    img->registry = buf;
    img->repository = slash + 1;
    char *colon = strrchr(slash + 1, ':');
    if (colon != NULL) {
        *colon = '\0';
        img->tag = colon + 1;
    }
    return 0;
}

static int manifest_digest(const options *o, verify_image *img)
{
    if ((o->manifest == NULL) == (o->manifest_digest == NULL))
        return usage();
    if (o->manifest_digest != NULL) {
        if (verify_digest_parse(o->manifest_digest, strlen(o->manifest_digest),
                                img->manifest_digest) != VERIFY_OK)
            return fail("invalid --manifest-digest \"%s\"%s", o->manifest_digest, "");
        return 0;
    }
    uint8_t *data = NULL;
    size_t len = 0;
    if (read_file(o->manifest, &data, &len) != 0)
        return 2;
    verify_sha256(data, len, img->manifest_digest);
    free(data);
    return 0;
}

static int verify_image_cmd(const options *o)
{
    char err[1024], refbuf[1024], digest[VERIFY_DIGEST_TEXT_LEN];
    verify_image img = {0};
    inputs in;
    memset(&in, 0, sizeof in);
    if (o->image_ref == NULL)
        return usage();
    int rc = split_ref(o->image_ref, refbuf, sizeof refbuf, &img);
    if (rc == 0)
        rc = manifest_digest(o, &img);
    verify_policy_options po = {.trusted_root_path = o->trusted_root};
    verify_policy *p = rc == 0 ? verify_policy_load(o->policy, &po, err, sizeof err) : NULL;
    if (rc == 0 && p == NULL)
        rc = fail("%s%s", err, "");
    if (rc == 0)
        rc = load_inputs(o, &in);
    if (rc == 0) {
        verify_verdict v;
        verify_requirements req;
        verify_digest_format(img.manifest_digest, digest);
        if (verify_policy_requirements(p, img.registry, img.repository, img.tag, &req) == 0)
            printf("image: %s@%s\nscope: %s\n", o->image_ref, digest, req.scope);
        printf("signatures: %zu, bundles: %zu\n", in.n, in.nb);
        verify_image_evaluate(p, &img, in.sigs, in.n, in.bundles, in.nb, o->now, &v);
        rc = print_verdict(&v);
    }
    inputs_free(&in);
    verify_policy_free(p);
    return rc;
}

/* ---- REF: the daemon's decision ---- */

static int daemon_options(const options *o)
{
    return o->ref.config_path != NULL || o->ref.cache_dir != NULL || o->ref.upstream != NULL ||
           o->ref.offline;
}

static int file_options(const options *o)
{
    return o->file != NULL || o->image_ref != NULL || o->manifest_digest != NULL ||
           o->manifest != NULL || o->sig_dir != NULL || o->artifact != NULL ||
           o->artifact_digest != NULL || o->key != NULL || o->identity != NULL ||
           o->issuer != NULL || o->ncerts > 0 || o->nsigs > 0 || o->nbundles > 0 ||
           o->allow_no_tlog || o->time_given;
}

static int ref_args(options *o, verify_ref_opts *ref)
{
    if (ref == NULL)
        return fail("%s: deciding a REF is `sluice verify REF`'s job%s", o->ref.ref, "");
    if (file_options(o))
        return fail("a REF (%s) is decided from the cache and the upstream: the file options "
                    "do not apply%s",
                    o->ref.ref, "");
    *ref = o->ref;
    ref->policy = o->policy;
    ref->trusted_root = o->trusted_root;
    return CMD_VERIFY_REF;
}

int cmd_verify(int argc, char **argv)
{
    return cmd_verify_args(argc, argv, NULL);
}

int cmd_verify_args(int argc, char **argv, verify_ref_opts *ref)
{
    options o;
    int rc = parse_options(argc, argv, &o);
    if (rc != 0)
        return rc;
    if (o.ref.ref != NULL)
        return ref_args(&o, ref);
    if (daemon_options(&o))
        return fail("--config, --cache, --upstream and --offline go with a REF%s%s", "", "");
    if (o.file != NULL)
        return verify_module(&o);
    if (o.policy != NULL)
        return verify_image_cmd(&o);
    if (o.nbundles > 0 && o.trusted_root != NULL)
        return verify_bundle_cmd(&o);
    return usage();
}
