/*
 * verify_bench.c — benchmark driver for bench/verify.sh: how many image
 * verifications per second verify/ does, on one thread.
 *
 *   verify_bench --policy POLICY.json --registry HOST[:PORT] --repo REPO
 *                [--tag TAG] (--manifest FILE | --digest sha256:HEX)
 *                --sig FILE [--sig FILE ...] [--seconds S] [--time UNIX]
 *
 * How it works. It loads the policy once (as the daemon does at startup) and
 * the signature files — one layer of a cosign "sha256-<hex>.sig" manifest
 * each, in the containers/image dir: format (an optional "\0sigstore-json\n"
 * prefix, then {"mimeType", "payload": base64 of the layer blob,
 * "annotations"}) — then calls verify_image_evaluate, the call the daemon's
 * verifier thread makes for each manifest it decides, in a loop for S
 * seconds (default 3) after one untimed call whose verdict must be
 * "allowed" (a benchmark of a failing check would measure the wrong path).
 * It prints "RESULT <calls> <seconds> <calls per second> <reason>" on
 * stdout and the verdict on stderr. Built by bench/verify.sh with cc
 * against a build's libsluice_verify.a; not part of the meson build.
 */
#include <getopt.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "verify.h"

#define MAX_SIGS 16
#define SIG_PREFIX "\0sigstore-json\n"
#define SIG_PREFIX_LEN 15

typedef struct {
    const char *policy, *registry, *repo, *tag, *manifest, *digest;
    const char *sig_files[MAX_SIGS];
    size_t nsig_files;
    double seconds;
    long long now;
} options;

typedef struct {
    json_t *docs[MAX_SIGS];
    unsigned char *payloads[MAX_SIGS];
    verify_cosign_sig sigs[MAX_SIGS];
    size_t n;
} signatures;

static int die(const char *what, const char *detail)
{
    fprintf(stderr, "verify_bench: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return 2;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *data = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            char *more = realloc(data, cap + 1);
            if (!more) {
                free(data);
                fclose(f);
                return NULL;
            }
            data = more;
        }
        got = fread(data + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    data[n] = 0;
    *len = n;
    return data;
}

/* ---- signature files ---- */

static const char *annotation(const json_t *ann, const char *key, size_t *len)
{
    const json_t *v = json_object_get(ann, key);
    *len = json_string_length(v);
    return json_string_value(v);
}

static int decode_b64(const char *b64, unsigned char **out, size_t *len)
{
    size_t n = strlen(b64);
    if (n % 4 != 0 || !(*out = malloc(n / 4 * 3 + 3)))
        return -1;
    int got = EVP_DecodeBlock(*out, (const unsigned char *)b64, (int)n);
    if (got < 0)
        return -1;
    *len = (size_t)got - (n > 0 && b64[n - 1] == '=') - (n > 1 && b64[n - 2] == '=');
    return 0;
}

static void fill_sig(verify_cosign_sig *s, const json_t *doc)
{
    const json_t *ann = json_object_get(doc, "annotations");
    s->media_type = json_string_value(json_object_get(doc, "mimeType"));
    s->media_type_len = json_string_length(json_object_get(doc, "mimeType"));
    s->signature = annotation(ann, "dev.cosignproject.cosign/signature", &s->signature_len);
    s->certificate = annotation(ann, "dev.sigstore.cosign/certificate", &s->certificate_len);
    s->chain = annotation(ann, "dev.sigstore.cosign/chain", &s->chain_len);
    s->rekor_bundle = annotation(ann, "dev.sigstore.cosign/bundle", &s->rekor_bundle_len);
}

static int load_sig(const char *path, signatures *in)
{
    size_t len = 0;
    char *data = slurp(path, &len);
    if (!data)
        return die("cannot read", path);
    size_t skip =
        len >= SIG_PREFIX_LEN && memcmp(data, SIG_PREFIX, SIG_PREFIX_LEN) == 0 ? SIG_PREFIX_LEN : 0;
    json_t *doc = json_loadb(data + skip, len - skip, 0, NULL);
    free(data);
    const char *payload = json_string_value(json_object_get(doc, "payload"));
    size_t i = in->n++;
    in->docs[i] = doc;
    if (!payload || decode_b64(payload, &in->payloads[i], &in->sigs[i].payload_len) != 0)
        return die("not a cosign signature file", path);
    in->sigs[i].payload = in->payloads[i];
    fill_sig(&in->sigs[i], doc);
    return 0;
}

static void signatures_free(signatures *in)
{
    for (size_t i = 0; i < in->n; i++) {
        json_decref(in->docs[i]);
        free(in->payloads[i]);
    }
}

/* ---- options ---- */

static int parse_options(int argc, char **argv, options *o)
{
    static const struct option opts[] = {
        {"policy", required_argument, NULL, 'p'},   {"registry", required_argument, NULL, 'r'},
        {"repo", required_argument, NULL, 'R'},     {"tag", required_argument, NULL, 't'},
        {"manifest", required_argument, NULL, 'm'}, {"digest", required_argument, NULL, 'd'},
        {"sig", required_argument, NULL, 's'},      {"seconds", required_argument, NULL, 'S'},
        {"time", required_argument, NULL, 'T'},     {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof(*o));
    o->seconds = 3;
    o->now = (long long)time(NULL);
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            o->policy = optarg;
            break;
        case 'r':
            o->registry = optarg;
            break;
        case 'R':
            o->repo = optarg;
            break;
        case 't':
            o->tag = optarg;
            break;
        case 'm':
            o->manifest = optarg;
            break;
        case 'd':
            o->digest = optarg;
            break;
        case 'S':
            o->seconds = atof(optarg);
            break;
        case 'T':
            o->now = atoll(optarg);
            break;
        case 's':
            if (o->nsig_files == MAX_SIGS)
                return die("too many --sig", NULL);
            o->sig_files[o->nsig_files++] = optarg;
            break;
        default:
            return die("bad option", NULL);
        }
    }
    if (!o->policy || !o->registry || !o->repo || !o->nsig_files || !o->manifest == !o->digest ||
        optind != argc || o->seconds <= 0)
        return die("usage: verify_bench --policy P --registry R --repo REPO [--tag T] "
                   "(--manifest FILE | --digest D) --sig FILE... [--seconds S] [--time UNIX]",
                   NULL);
    return 0;
}

static int manifest_digest(const options *o, uint8_t out[VERIFY_DIGEST_LEN])
{
    if (o->digest)
        return verify_digest_parse(o->digest, strlen(o->digest), out) == VERIFY_OK
                   ? 0
                   : die("bad --digest", o->digest);
    size_t len = 0;
    char *data = slurp(o->manifest, &len);
    if (!data)
        return die("cannot read", o->manifest);
    verify_sha256(data, len, out);
    free(data);
    return 0;
}

/* ---- the loop ---- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run(const options *o, const verify_policy *p, const verify_image *img,
               const signatures *in)
{
    verify_verdict v;
    verify_image_evaluate(p, img, in->sigs, in->n, NULL, 0, o->now, &v);
    fprintf(stderr, "verify_bench: %s (%s): %s\n", v.allowed ? "allowed" : "denied",
            verify_reason_name(v.reason), v.text);
    if (!v.allowed)
        return 1;
    unsigned long long calls = 0;
    double start = now_seconds(), elapsed = 0;
    int allowed = 1;
    while (elapsed < o->seconds) {
        allowed &= verify_image_evaluate(p, img, in->sigs, in->n, NULL, 0, o->now, &v);
        calls++;
        elapsed = now_seconds() - start;
    }
    if (!allowed) {
        fprintf(stderr, "verify_bench: a timed call was denied: %s\n", v.text);
        return 1;
    }
    printf("RESULT %llu %.3f %.1f %s\n", calls, elapsed, (double)calls / elapsed,
           verify_reason_name(v.reason));
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    signatures in;
    memset(&in, 0, sizeof(in));
    verify_image img = {0};
    char err[1024];
    if (parse_options(argc, argv, &o) != 0)
        return 2;
    img.registry = o.registry;
    img.repository = o.repo;
    img.tag = o.tag;
    int rc = manifest_digest(&o, img.manifest_digest);
    for (size_t i = 0; rc == 0 && i < o.nsig_files; i++)
        rc = load_sig(o.sig_files[i], &in);
    verify_policy *p = rc == 0 ? verify_policy_load(o.policy, NULL, err, sizeof(err)) : NULL;
    if (rc == 0 && !p)
        rc = die("policy", err);
    if (rc == 0)
        rc = run(&o, p, &img, &in);
    verify_policy_free(p);
    signatures_free(&in);
    return rc;
}
