/*
 * deltas.c — negotiation, lookup and computation of deltas (see deltas.h).
 *
 * Lookup reads the cache's delta index for each codec the client accepts.
 * What is missing is computed by one pool job per (base, target, codecs,
 * window) key — the pending table makes concurrent requests share it — which
 * loads both blobs, encodes with each codec, stores every delta as a blob
 * and indexes it, then decides the key so that the waiters look again.
 * Request headers are read as RFC 9110 lists of tokens; the digests they
 * carry are decoded with OpenSSL (base64) and verify.h (digest text).
 */
#include "deltas.h"

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "blobs.h"
#include "log.h"
#include "metrics.h"
#include "transfer.h"
#include "verify.h"

#define MAX_DELTA_INPUT ((size_t)1 << 31)
#define QUEUE_MAX 256

struct deltas {
    daemon_ctx *d;
    delta_pool *pool;
    pending_table *table;
    unsigned max_percent;
};

static const struct {
    unsigned want;
    delta_codec codec;
} order[] = {
    {WANT_BSZ, DELTA_CODEC_BSZ}, {WANT_ZSTD, DELTA_CODEC_ZSTD}, {WANT_VCDIFF, DELTA_CODEC_VCDIFF}};

const char *deltas_wire_name(delta_codec codec)
{
    switch (codec) {
    case DELTA_CODEC_ZSTD:
        return "dcz";
    case DELTA_CODEC_VCDIFF:
        return "vcdiff";
    case DELTA_CODEC_BSZ:
        return "sluice-bsz";
    default:
        return "identity";
    }
}

/* The delta index's codec name; zstd deltas differ by the window allowed. */
static void index_name(delta_codec codec, unsigned max_window, char out[16])
{
    if (codec == DELTA_CODEC_ZSTD)
        snprintf(out, 16, "zstd-w%u", max_window);
    else
        snprintf(out, 16, "%s", codec == DELTA_CODEC_VCDIFF ? "vcdiff" : "bsz");
}

/* ---------- negotiation ---------- */

/* Whether the comma-separated list has token (case-insensitive), not
 * disabled by q=0. */
static int list_has(const char *list, const char *token)
{
    size_t tlen = strlen(token);
    for (const char *p = list; p && *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,;");
        const char *params = p + n;
        size_t plen = strcspn(params, ",");
        if (n == tlen && strncasecmp(p, token, n) == 0) {
            const char *q = strstr(params, "q=");
            return !(q && q < params + plen && strtod(q + 2, NULL) == 0.0);
        }
        p = params + plen;
    }
    return 0;
}

/* RFC 9842: Available-Dictionary is an sf-binary, ":<base64>:". */
static int parse_available_dictionary(const char *v, uint8_t out[32])
{
    size_t n = v ? strlen(v) : 0;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    if (n != 46 || v[0] != ':' || v[45] != ':')
        return -1;
    unsigned char buf[48];
    if (EVP_DecodeBlock(buf, (const unsigned char *)v + 1, 44) != 33 || v[44] != '=')
        return -1;
    memcpy(out, buf, 32);
    return 0;
}

/* RFC 3229: the base is the entity tag in If-None-Match: "sha256:<hex>". */
static int parse_delta_base(const char *v, uint8_t out[32])
{
    if (!v)
        return -1;
    v += strspn(v, " \t");
    if (strncmp(v, "W/", 2) == 0)
        v += 2;
    if (*v != '"')
        return -1;
    const char *end = strchr(v + 1, '"');
    return end && verify_digest_parse(v + 1, (size_t)(end - v - 1), out) == VERIFY_OK ? 0 : -1;
}

int deltas_wanted(const struct evkeyvalq *headers, delta_want *want)
{
    struct evkeyvalq *h = (struct evkeyvalq *)headers;
    memset(want, 0, sizeof(*want));
    want->zstd_max_window_log = DELTA_DCZ_WINDOW_LOG;
    const char *win = evhttp_find_header(h, "Sluice-Zstd-Max-Window-Log");
    if (win) {
        long n = strtol(win, NULL, 10);
        if (n > DELTA_DCZ_WINDOW_LOG && n <= 31)
            want->zstd_max_window_log = (unsigned)n;
    }
    const char *aim = evhttp_find_header(h, "A-IM");
    if (aim && parse_delta_base(evhttp_find_header(h, "If-None-Match"), want->base) == 0) {
        want->codecs |= list_has(aim, "vcdiff") ? WANT_VCDIFF : 0;
        want->codecs |= list_has(aim, "sluice-bsz") ? WANT_BSZ : 0;
    }
    uint8_t dict[32];
    const char *ae = evhttp_find_header(h, "Accept-Encoding");
    if (ae && list_has(ae, "dcz") &&
        parse_available_dictionary(evhttp_find_header(h, "Available-Dictionary"), dict) == 0) {
        if (!want->codecs)
            memcpy(want->base, dict, 32);
        if (memcmp(want->base, dict, 32) == 0)
            want->codecs |= WANT_ZSTD;
    }
    return want->codecs != 0;
}

/* ---------- computing ---------- */

typedef struct {
    deltas *x;
    char key[PENDING_KEY_MAX];
    uint64_t generation;
    unsigned codecs;
    unsigned max_window;
    uint8_t base[32], target[32];
    int ok;
} job;

typedef struct {
    char *data;
    size_t len, cap;
} outbuf;

static int out_write(void *arg, const void *p, size_t n)
{
    outbuf *o = arg;
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 1 << 16;
        while (cap < o->len + n)
            cap *= 2;
        char *grown = realloc(o->data, cap);
        if (!grown)
            return -1;
        o->data = grown;
        o->cap = cap;
    }
    memcpy(o->data + o->len, p, n);
    o->len += n;
    return 0;
}

static int encode_one(job *j, delta_codec codec, const char *base, size_t blen, const char *target,
                      size_t tlen)
{
    delta_options opt;
    delta_options_init(&opt);
    opt.base_sha256 = j->base;
    unsigned sized = delta_zstd_window_log(blen, tlen);
    opt.zstd_window_log = sized > j->max_window ? j->max_window : sized;
    outbuf out = {0};
    delta_report rep;
    delta_status st = delta_encode(codec, base, blen, target, tlen, &opt, out_write, &out, &rep);
    int rc = -1;
    if (st == DELTA_OK) {
        uint8_t digest[32];
        char name[16];
        verify_sha256(out.data, out.len, digest);
        index_name(codec, j->max_window, name);
        if (blobs_store(j->x->d->cache, digest, out.data, out.len) == 0 &&
            cache_delta_put(j->x->d->cache, j->base, j->target, name, digest, out.len) == CACHE_OK)
            rc = 0;
        transfer_enforce_quota(j->x->d->cache, j->x->d);
    } else {
        log_warn("delta", "%s encode failed: %s %s", delta_codec_name(codec), delta_strerror(st),
                 rep.msg);
    }
    free(out.data);
    return rc;
}

static void compute(void *arg)
{
    job *j = arg;
    char *base = NULL, *target = NULL;
    size_t blen = 0, tlen = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (blobs_load(j->x->d->cache, j->base, MAX_DELTA_INPUT, &base, &blen) == 0 &&
        blobs_load(j->x->d->cache, j->target, MAX_DELTA_INPUT, &target, &tlen) == 0) {
        j->ok = 1;
        for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
            if (j->codecs & order[i].want)
                j->ok &= encode_one(j, order[i].codec, base, blen, target, tlen) == 0;
    }
    free(base);
    free(target);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    METRIC_ADD(delta_computed, 1);
    METRIC_ADD(delta_compute_ms,
               (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
}

static void compute_done(void *arg)
{
    job *j = arg;
    pending_decide(j->x->table, j->key, j->generation, j->ok, j->ok ? "" : "delta failed");
    free(j);
}

/* ---------- lookup ---------- */

typedef struct {
    delta_choice best;
    int found;
    unsigned missing;
} lookup;

static lookup look(deltas *x, const delta_want *want, const uint8_t target[32])
{
    lookup l = {.found = 0, .missing = 0};
    cache_snapshot *s = cache_snapshot_new(x->d->cache);
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        if (!(want->codecs & order[i].want))
            continue;
        char name[16];
        uint8_t d[32];
        uint64_t size;
        index_name(order[i].codec, want->zstd_max_window_log, name);
        cache_blob_info info;
        if (!s || cache_delta_get(s, want->base, target, name, d, &size) != CACHE_OK ||
            cache_blob_stat(s, d, &info) != CACHE_OK || info.state != CACHE_BLOB_COMPLETE) {
            l.missing |= order[i].want;
            continue;
        }
        if (!l.found || size < l.best.size) {
            l.best.codec = order[i].codec;
            memcpy(l.best.digest, d, 32);
            l.best.size = size;
            l.found = 1;
        }
    }
    if (s)
        cache_snapshot_unref(s);
    return l;
}

static deltas_state worth(deltas *x, const lookup *l, uint64_t target_size, delta_choice *out)
{
    if (!l->found || l->best.size * 100 > (uint64_t)x->max_percent * target_size)
        return DELTAS_FULL;
    *out = l->best;
    return DELTAS_SERVE;
}

static deltas_state start(deltas *x, const delta_want *want, const uint8_t target[32],
                          unsigned missing, pending_waiter *w)
{
    char bh[VERIFY_DIGEST_TEXT_LEN], th[VERIFY_DIGEST_TEXT_LEN], key[PENDING_KEY_MAX];
    verify_digest_format(want->base, bh);
    verify_digest_format(target, th);
    snprintf(key, sizeof(key), "d|%s|%s|%u|w%u", bh, th, missing, want->zstd_max_window_log);
    int ok = 0;
    uint64_t gen = 0;
    switch (pending_ask(x->table, key, w, &ok, NULL, 0, &gen)) {
    case PENDING_DONE:
        return DELTAS_FULL; /* computed, yet missing: it failed */
    case PENDING_CLOSED:
        return DELTAS_FULL;
    case PENDING_WAITING:
        return DELTAS_PENDING;
    case PENDING_FIRST:
        break;
    }
    job *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    j->x = x;
    snprintf(j->key, sizeof(j->key), "%s", key);
    j->generation = gen;
    j->codecs = missing;
    j->max_window = want->zstd_max_window_log;
    memcpy(j->base, want->base, 32);
    memcpy(j->target, target, 32);
    if (delta_pool_submit(x->pool, compute, compute_done, j) != 0) {
        pending_decide(x->table, key, gen, 0, "delta queue full");
        free(j);
        return DELTAS_FULL;
    }
    return DELTAS_PENDING;
}

deltas_state deltas_find(deltas *x, const delta_want *want, const uint8_t target[32],
                         uint64_t target_size, pending_waiter *w, delta_choice *out)
{
    lookup l = look(x, want, target);
    if (l.missing) {
        deltas_state st = start(x, want, target, l.missing, w);
        if (st == DELTAS_PENDING)
            return st;
    } else {
        METRIC_ADD(delta_cache_hits, 1);
    }
    deltas_state st = worth(x, &l, target_size, out);
    if (st == DELTAS_SERVE && out->codec == DELTA_CODEC_ZSTD) {
        cache_snapshot *s = cache_snapshot_new(x->d->cache);
        const void *p;
        size_t n;
        out->window_log = DELTA_DCZ_WINDOW_LOG;
        if (s && cache_blob_chunk(s, out->digest, 0, &p, &n, NULL) == CACHE_OK)
            delta_zstd_frame_window_log(p, n, &out->window_log);
        if (s)
            cache_snapshot_unref(s);
    }
    return st;
}

void deltas_precompute(deltas *x, const uint8_t base[32], const uint8_t target[32])
{
    delta_want want = {.codecs = WANT_ZSTD | WANT_VCDIFF | WANT_BSZ,
                       .zstd_max_window_log = DELTA_DCZ_WINDOW_LOG};
    memcpy(want.base, base, 32);
    lookup l = look(x, &want, target);
    if (l.missing)
        start(x, &want, target, l.missing, NULL);
}

void deltas_cancel(deltas *x, pending_waiter *w)
{
    pending_cancel(x->table, w);
}

/* ---------- life cycle ---------- */

deltas *deltas_new(daemon_ctx *d, unsigned threads, unsigned max_percent)
{
    deltas *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    x->d = d;
    x->max_percent = max_percent;
    if (!threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (unsigned)n : 1;
    }
    x->table = pending_new();
    x->pool = delta_pool_new(threads, QUEUE_MAX);
    if (!x->table || !x->pool) {
        deltas_free(x);
        return NULL;
    }
    return x;
}

void deltas_stop(deltas *x)
{
    pending_close(x->table);
    if (x->pool)
        delta_pool_shutdown(x->pool); /* drains; decisions into a closed table are dropped */
    x->pool = NULL;
}

void deltas_free(deltas *x)
{
    if (!x)
        return;
    if (x->pool)
        deltas_stop(x);
    if (x->table)
        pending_free(x->table);
    free(x);
}
