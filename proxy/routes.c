/*
 * routes.c — the downstream API on a worker's event loop.
 *
 * Every request gets a reqctx. Requests answered from the cache (the hot
 * path) are answered at once: manifests are copied (they are small), blobs
 * go out as file segments of LMDB's data file (sendfile, no copy through
 * user space) while a reference on the worker's read snapshot keeps those
 * pages from being reused. A miss joins or starts a transfer (transfer.h)
 * and becomes a waiter: its wake event is activated by the producers, and
 * the pump sends whatever is newly available, one piece at a time, the next
 * piece only when evhttp has written the previous one (so a slow client
 * costs no memory). All evhttp calls happen in this file, on the loop thread,
 * from event callbacks we own (never inside evhttp's own callbacks), so a
 * connection can be dropped safely when a transfer fails mid-body.
 *
 * The first time this process serves a cached blob, the cache writer thread
 * re-hashes it (invariant 3); a corrupt blob is deleted and fetched again.
 */
#include "routes.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "daemon.h"
#include "deltas.h"
#include "log.h"
#include "metrics.h"
#include "oci.h"
#include "transfer.h"
#include "trust.h"
#include "verify.h"

#define MAX_SMALL_BODY (4u << 20)
#define SMALL_PIECE_MAX                                                                            \
    (16u << 10) /* blob pieces up to this size go out from memory, not by file */

typedef struct reqctx reqctx;
typedef void (*wake_fn)(reqctx *c);
typedef void (*small_done_fn)(reqctx *c);

struct reqctx {
    atomic_int refs;
    reqctx *next_free; /* on the worker's free list */
    worker *w;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    metrics_route route;
    int status;
    uint64_t bytes;
    struct timespec start;
    const char *cache_result;
    int head;
    int logged;
    int started_transfer;   /* this request's miss started the upstream fetch */
    pending_waiter trust_w; /* waiting for a trust decision */
    int trust_waited;       /* trust_w was ever used: cancel it at the end */
    int trust_rounds;
    int hold_for_bytes; /* a module check needs the whole blob first */
    delta_want want;    /* what delta the client asks for, if want_delta */
    int want_delta;
    int delta_gave_up;      /* serve the full blob after all */
    int base_fetched;       /* the base was fetched for this request already */
    int delta_waited;       /* delta_w was used: cancel it at the end */
    pending_waiter delta_w; /* waiting for a delta computation */
    struct event *delta_timer;
    uint64_t upstream_bytes;
    const char *method;
    char uri[512];
    oci_route r;
    const config_upstream *up;
    char repo_key[600];
    struct evkeyvalq query;
    int have_query;

    struct event *wake;
    wake_fn on_wake;
    int client_gone;

    /* waiting on a transfer */
    transfer *t;
    transfer_waiter tw;
    uint64_t offset, end; /* next byte to send, end of range (exclusive) */
    int ranged;
    uint64_t range_first, range_last;
    int headers_sent, write_pending;

    /* waiting on a small upstream fetch or a writer job */
    small_done_fn small_done;
    upstream_result small_result;
    upstream_response small_resp;
    char *small_body;
    size_t small_len;
    int job_result;
};

static void serve_blob(reqctx *c);
static void serve_manifest(reqctx *c);

/* ---------- what was verified since start ---------- */

/* Cached blobs and manifests are re-hashed the first time this process
 * serves them (invariant 3); these sets remember which were. Open
 * addressing on the digest's first 8 bytes (already uniformly random),
 * linear probing, grown at half load. Only additions: an object evicted
 * later is found again by the cache's own checks. The process-wide sets are
 * behind a mutex; each worker keeps a copy of what it has looked up, so a
 * hit costs no lock. */
typedef enum { VERIFIED_BLOB, VERIFIED_MANIFEST, VERIFIED_KINDS } verified_kind;

typedef struct verified_set {
    uint8_t (*slots)[32];
    unsigned char *used;
    size_t n, cap;
} verified_set;

static pthread_mutex_t g_verified_mu = PTHREAD_MUTEX_INITIALIZER;
static verified_set g_verified[VERIFIED_KINDS];

/* A worker's own state: its front of the verified sets, its free request
 * contexts (so a request costs no large allocation), the Date header of the
 * current second (evhttp would format one per response). Only the worker's
 * loop thread touches it. */
struct routes_local {
    verified_set verified[VERIFIED_KINDS];
    reqctx *free_ctxs;
    unsigned n_free;
    time_t date_second;
    char date[64];
};

#define MAX_FREE_CTXS 256

static size_t slot_of(const uint8_t d[32], size_t cap)
{
    uint64_t h;
    memcpy(&h, d, sizeof(h));
    return (size_t)(h & (cap - 1));
}

static int set_find(const verified_set *v, const uint8_t d[32])
{
    if (!v->cap)
        return 0;
    for (size_t i = slot_of(d, v->cap); v->used[i]; i = (i + 1) & (v->cap - 1))
        if (memcmp(v->slots[i], d, 32) == 0)
            return 1;
    return 0;
}

static void set_insert(verified_set *v, const uint8_t d[32])
{
    size_t i = slot_of(d, v->cap);
    while (v->used[i])
        i = (i + 1) & (v->cap - 1);
    memcpy(v->slots[i], d, 32);
    v->used[i] = 1;
    v->n++;
}

static void set_grow(verified_set *v)
{
    verified_set bigger = {.cap = v->cap ? v->cap * 2 : 256};
    bigger.slots = malloc(bigger.cap * 32);
    bigger.used = calloc(bigger.cap, 1);
    if (!bigger.slots || !bigger.used)
        abort();
    for (size_t i = 0; i < v->cap; i++)
        if (v->used[i])
            set_insert(&bigger, v->slots[i]);
    free(v->slots);
    free(v->used);
    *v = bigger;
}

static void set_add(verified_set *v, const uint8_t d[32])
{
    if (set_find(v, d))
        return;
    if ((v->n + 1) * 2 > v->cap)
        set_grow(v);
    set_insert(v, d);
}

static void set_free(verified_set *v)
{
    free(v->slots);
    free(v->used);
    memset(v, 0, sizeof(*v));
}

static int verified_has(worker *w, verified_kind k, const uint8_t d[32])
{
    if (set_find(&w->routes->verified[k], d))
        return 1;
    pthread_mutex_lock(&g_verified_mu);
    int found = set_find(&g_verified[k], d);
    pthread_mutex_unlock(&g_verified_mu);
    if (found)
        set_add(&w->routes->verified[k], d);
    return found;
}

static void verified_add(worker *w, verified_kind k, const uint8_t d[32])
{
    pthread_mutex_lock(&g_verified_mu);
    set_add(&g_verified[k], d);
    pthread_mutex_unlock(&g_verified_mu);
    set_add(&w->routes->verified[k], d);
}

void routes_cleanup(void)
{
    pthread_mutex_lock(&g_verified_mu);
    for (int k = 0; k < VERIFIED_KINDS; k++)
        set_free(&g_verified[k]);
    pthread_mutex_unlock(&g_verified_mu);
}

int routes_worker_init(worker *w)
{
    w->routes = calloc(1, sizeof(*w->routes));
    return w->routes ? 0 : -1;
}

/* The worker's Date header value, formatted once a second. */
static const char *worker_date(worker *w)
{
    struct routes_local *l = w->routes;
    time_t now = time(NULL);
    if (now != l->date_second) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(l->date, sizeof(l->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        l->date_second = now;
    }
    return l->date;
}

/* ---------- request context ---------- */

static void ctx_destroy(reqctx *c)
{
    if (c->wake)
        event_free(c->wake);
    free(c);
}

void routes_worker_free(worker *w)
{
    struct routes_local *l = w->routes;
    if (!l)
        return;
    while (l->free_ctxs) {
        reqctx *c = l->free_ctxs;
        l->free_ctxs = c->next_free;
        ctx_destroy(c);
    }
    for (int k = 0; k < VERIFIED_KINDS; k++)
        set_free(&l->verified[k]);
    free(l);
    w->routes = NULL;
}

/* The last reference: back to the worker's free list (its wake event kept
 * for the next request), or freed. */
static void ctx_unref(reqctx *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (c->have_query)
        evhttp_clear_headers(&c->query);
    free(c->small_body);
    atomic_fetch_sub(&g_metrics.requests_in_progress, 1);
    struct routes_local *l = c->w->routes;
    if (!c->wake || !l || l->n_free >= MAX_FREE_CTXS) {
        ctx_destroy(c);
        return;
    }
    event_del(c->wake); /* also takes it off the active queue */
    c->next_free = l->free_ctxs;
    l->free_ctxs = c;
    l->n_free++;
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    reqctx *c = arg;
    if (c->on_wake)
        c->on_wake(c);
}

static void log_request(reqctx *c)
{
    if (c->logged)
        return;
    c->logged = 1;
    metrics_count_request(c->route, c->status);
    if (!atomic_load(&c->w->d->log_requests))
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms = (double)(now.tv_sec - c->start.tv_sec) * 1e3 +
                (double)(now.tv_nsec - c->start.tv_nsec) / 1e6;
    log_info("request",
             "method=%s path=\"%s\" status=%d bytes=%llu ms=%.2f cache=%s upstream_bytes=%llu "
             "route=%s",
             c->method, c->uri, c->status, (unsigned long long)c->bytes, ms,
             c->cache_result ? c->cache_result : "-", (unsigned long long)c->upstream_bytes,
             metrics_route_name(c->route));
}

/* The client closed its connection: evhttp has detached c->req from it. */
static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    reqctx *c = arg;
    c->client_gone = 1;
    c->evcon = NULL;
    event_active(c->wake, EV_READ, 0);
}

static void watch_close(reqctx *c)
{
    c->evcon = evhttp_request_get_connection(c->req);
    if (c->evcon)
        evhttp_connection_set_closecb(c->evcon, conn_closed, c);
}

static void unwatch_close(reqctx *c)
{
    if (c->evcon)
        evhttp_connection_set_closecb(c->evcon, NULL, NULL);
    c->evcon = NULL;
}

/* Ends the request: c->req is answered or freed, and forgotten. */
static void finish(reqctx *c)
{
    if (c->t && c->started_transfer) {
        pthread_mutex_lock(&c->t->mu);
        if (c->t->kind == TRANSFER_BLOB)
            c->upstream_bytes = c->t->received;
        else if (c->t->state == T_DONE) /* body_len is the upstream thread's until then */
            c->upstream_bytes = c->t->body_len;
        pthread_mutex_unlock(&c->t->mu);
    }
    log_request(c);
    unwatch_close(c);
    if (c->trust_waited)
        trust_cancel(c->w->d->trust, &c->trust_w);
    if (c->delta_waited)
        deltas_cancel(c->w->d->deltas, &c->delta_w);
    if (c->delta_timer) {
        event_free(c->delta_timer);
        c->delta_timer = NULL;
    }
    if (c->client_gone && c->req)
        evhttp_send_reply_end(c->req); /* detached by evhttp: this frees it */
    c->req = NULL;
    c->on_wake = NULL;
    if (c->t) {
        pthread_mutex_lock(&c->t->mu);
        transfer_remove_waiter(c->t, &c->tw);
        pthread_mutex_unlock(&c->t->mu);
        transfer_unref(c->t);
        c->t = NULL;
    }
    ctx_unref(c);
}

/* ---------- responses ---------- */

static void add_header(reqctx *c, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(c->req), name, value);
}

/* (Headers on every response are formatted by hand: printf is a
 * measurable part of serving a small object.) */
static void add_header_u64(reqctx *c, const char *name, uint64_t v)
{
    char buf[24], *p = buf + sizeof(buf);
    *--p = 0;
    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    add_header(c, name, p);
}

static void add_digest_headers(reqctx *c, const uint8_t digest[32])
{
    char etag[VERIFY_DIGEST_TEXT_LEN + 2];
    verify_digest_format(digest, etag + 1);
    add_header(c, "Docker-Content-Digest", etag + 1);
    etag[0] = '"';
    etag[VERIFY_DIGEST_TEXT_LEN] = '"';
    etag[VERIFY_DIGEST_TEXT_LEN + 1] = 0;
    add_header(c, "ETag", etag);
}

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 206:
        return "Partial Content";
    case 226:
        return "IM Used";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 416:
        return "Range Not Satisfiable";
    case 429:
        return "Too Many Requests";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Internal Server Error";
    }
}

/* Sends a complete response; body may be NULL. Ends the request. */
static void reply(reqctx *c, int status, struct evbuffer *body)
{
    c->status = status;
    if (body && !c->head)
        c->bytes += evbuffer_get_length(body);
    METRIC_ADD(bytes_served, c->head || !body ? 0 : evbuffer_get_length(body));
    struct evbuffer *empty = NULL;
    if (c->head || !body) {
        empty = evbuffer_new();
        body = empty;
    }
    unwatch_close(c);
    add_header(c, "Date", worker_date(c->w));
    evhttp_send_reply(c->req, status, reason_of(status), body);
    if (empty)
        evbuffer_free(empty);
    finish(c);
}

static void reply_json(reqctx *c, int status, const char *json, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, json, len);
    add_header(c, "Content-Type", "application/json");
    add_header_u64(c, "Content-Length", len);
    reply(c, status, b);
    evbuffer_free(b);
}

static void reply_error(reqctx *c, int status, const char *code, const char *message)
{
    json_t *doc = json_pack("{s:[{s:s,s:s}]}", "errors", "code", code, "message", message);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    reply_json(c, status, text, strlen(text));
    free(text);
}

static void reply_upstream_error(reqctx *c, upstream_result r, const char *unknown_code,
                                 const char *detail)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "upstream: %s%s%s", upstream_result_name(r), detail ? ": " : "",
             detail ? detail : "");
    switch (r) {
    case UPSTREAM_NOT_FOUND:
        reply_error(c, 404, unknown_code, msg);
        break;
    case UPSTREAM_TOO_MANY:
        reply_error(c, 429, "TOOMANYREQUESTS", msg);
        break;
    case UPSTREAM_TIMEOUT:
        reply_error(c, 504, "UNAVAILABLE", msg);
        break;
    case UPSTREAM_CANCELLED:
        reply_error(c, 503, "UNAVAILABLE", msg);
        break;
    case UPSTREAM_OFFLINE:
        reply_error(c, 503, "UNAVAILABLE", "offline: not in the cache");
        break;
    default:
        reply_error(c, 502, "UNAVAILABLE", msg);
        break;
    }
}

/* Drops the client's connection mid-body: it sees a short read, never a
 * complete body with wrong bytes. */
static void abort_response(reqctx *c)
{
    c->status = 502;
    struct evhttp_connection *evcon = c->evcon;
    unwatch_close(c);
    log_request(c);
    if (evcon) {
        evhttp_connection_free(evcon); /* frees c->req too */
        c->req = NULL;
    } else {
        c->client_gone = 1; /* detached: finish frees it */
    }
    finish(c);
}

/* ---------- blobs from the cache ---------- */

static void segment_done(struct evbuffer_file_segment const *seg, int flags, void *arg)
{
    (void)seg;
    (void)flags;
    cache_snapshot_unref(arg);
}

static void reference_done(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    cache_snapshot_unref(arg);
}

/* Appends bytes [from, from+len) of chunk `index`, held by a reference on
 * the snapshot until written: small pieces as references into LMDB's map
 * (headers and body then leave in one writev, nothing copied), larger ones
 * as a file segment of LMDB's data file (sendfile). */
static int add_chunk_segment(reqctx *c, struct evbuffer *out, cache_snapshot *snap,
                             const uint8_t digest[32], uint32_t index, size_t from, size_t len)
{
    const void *data;
    size_t clen;
    uint64_t foff;
    if (cache_blob_chunk(snap, digest, index, &data, &clen, &foff) != CACHE_OK || from + len > clen)
        return -1;
    if (len <= SMALL_PIECE_MAX) {
        cache_snapshot_ref(snap);
        if (evbuffer_add_reference(out, (const char *)data + from, len, reference_done, snap) == 0)
            return 0;
        cache_snapshot_unref(snap);
        return -1;
    }
    unsigned flags = c->w->ssl_ctx ? EVBUF_FS_DISABLE_SENDFILE : 0;
    struct evbuffer_file_segment *seg = evbuffer_file_segment_new(
        cache_data_fd(c->w->d->cache), (ev_off_t)(foff + from), (ev_off_t)len, flags);
    if (!seg)
        return -1;
    cache_snapshot_ref(snap);
    evbuffer_file_segment_add_cleanup_cb(seg, segment_done, snap);
    int rc = evbuffer_add_file_segment(out, seg, 0, (ev_off_t)len);
    evbuffer_file_segment_free(seg);
    return rc;
}

static int add_blob_range(reqctx *c, struct evbuffer *out, cache_snapshot *snap,
                          const uint8_t digest[32], uint64_t first, uint64_t end)
{
    while (first < end) {
        uint32_t index = (uint32_t)(first / CACHE_CHUNK_SIZE);
        size_t from = (size_t)(first % CACHE_CHUNK_SIZE);
        uint64_t n = CACHE_CHUNK_SIZE - from;
        if (n > end - first)
            n = end - first;
        if (add_chunk_segment(c, out, snap, digest, index, from, (size_t)n) != 0)
            return -1;
        first += n;
    }
    return 0;
}

/* Range handling shared by cache hits and waiters. 0 to go on, -1 answered. */
static int apply_range(reqctx *c, uint64_t size)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(c->req), "Range");
    uint64_t first = 0, last = 0;
    switch (oci_range_parse(h, size, &first, &last)) {
    case OCI_RANGE_UNSATISFIABLE: {
        char cr[64];
        snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)size);
        add_header(c, "Content-Range", cr);
        reply_error(c, 416, "BLOB_UNKNOWN", "requested range not satisfiable");
        return -1;
    }
    case OCI_RANGE_OK:
        c->ranged = 1;
        c->range_first = first;
        c->range_last = last;
        c->offset = first;
        c->end = last + 1;
        return 0;
    default:
        c->ranged = 0;
        c->offset = 0;
        c->end = size;
        return 0;
    }
}

static void add_blob_headers(reqctx *c, const uint8_t digest[32], uint64_t size)
{
    add_digest_headers(c, digest);
    add_header(c, "Content-Type", "application/octet-stream");
    add_header(c, "Accept-Ranges", "bytes");
    add_header_u64(c, "Content-Length", c->end - c->offset);
    if (c->ranged) {
        char cr[96];
        snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)c->range_first,
                 (unsigned long long)c->range_last, (unsigned long long)size);
        add_header(c, "Content-Range", cr);
    }
}

static int etag_matches(reqctx *c, const uint8_t digest[32])
{
    const char *inm = evhttp_find_header(evhttp_request_get_input_headers(c->req), "If-None-Match");
    if (!inm)
        return 0;
    char hex[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(digest, hex);
    return strstr(inm, hex) != NULL || strcmp(inm, "*") == 0;
}

/* A buffer for blob bytes. On plain sockets it is marked as draining to a
 * descriptor: only then does libevent keep file segments as sendfile(2)
 * chains instead of mapping them into memory. */
static struct evbuffer *body_buffer(reqctx *c)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        abort();
    if (!c->w->ssl_ctx)
        evbuffer_set_flags(b, EVBUFFER_FLAG_DRAINS_TO_FD);
    return b;
}

static void send_cached_blob(reqctx *c, cache_snapshot *snap, const cache_blob_info *info)
{
    const uint8_t *digest = c->r.digest;
    if (etag_matches(c, digest)) {
        add_digest_headers(c, digest);
        reply(c, 304, NULL);
        return;
    }
    if (apply_range(c, info->size) != 0)
        return;
    add_blob_headers(c, digest, info->size);
    struct evbuffer *body = body_buffer(c);
    if (!c->head && add_blob_range(c, body, snap, digest, c->offset, c->end) != 0) {
        evbuffer_free(body);
        evhttp_clear_headers(evhttp_request_get_output_headers(c->req));
        reply_error(c, 500, "UNKNOWN", "cache read failed");
        return;
    }
    reply(c, c->ranged ? 206 : 200, body);
    evbuffer_free(body);
}

static void job_verify_blob(cache *cache, void *arg)
{
    reqctx *c = arg;
    c->job_result = cache_blob_verify(cache, c->r.digest);
    if (c->job_result == CACHE_CORRUPT) {
        cache_blob_delete(cache, c->r.digest);
        METRIC_ADD(corrupt_evictions, 1);
        log_warn("cache", "blob corrupt at rest, evicted: digest=%s", c->r.reference);
    }
    event_active(c->wake, EV_READ, 0);
}

static void verify_done(reqctx *c)
{
    ctx_unref(c); /* the job's reference */
    if (c->client_gone) {
        finish(c);
        return;
    }
    if (c->job_result == CACHE_OK)
        verified_add(c->w, VERIFIED_BLOB, c->r.digest);
    serve_blob(c); /* a corrupt blob is gone now: this fetches it again */
}

/* ---------- blobs through a transfer ---------- */

static void blob_pump(reqctx *c);

static void piece_written(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    reqctx *c = arg;
    c->write_pending = 0;
    event_active(c->wake, EV_READ, 0);
}

static void mem_piece_done(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    chunk_unref(arg);
}

/* Appends up to `limit` bytes at c->offset: from a chunk buffer still in
 * memory, else from LMDB. Under t->mu. Returns bytes added (0 on failure). */
static size_t take_piece(reqctx *c, struct evbuffer *out, uint64_t limit)
{
    transfer *t = c->t;
    size_t off, len;
    chunk_buf *chunk = transfer_mem_chunk(t, c->offset, &off, &len);
    uint64_t want = limit - c->offset;
    if (chunk) {
        size_t n = len < want ? len : (size_t)want;
        evbuffer_add_reference(out, chunk->data + off, n, mem_piece_done, chunk);
        return n;
    }
    cache_snapshot *snap = worker_snapshot(c->w);
    uint32_t index = (uint32_t)(c->offset / CACHE_CHUNK_SIZE);
    size_t from = (size_t)(c->offset % CACHE_CHUNK_SIZE);
    size_t n = CACHE_CHUNK_SIZE - from;
    if (n > want)
        n = (size_t)want;
    if (snap && add_chunk_segment(c, out, snap, t->digest, index, from, n) == 0)
        return n;
    /* Evicted since it completed (max_size): the snapshot the writer took
     * at completion still sees it. Reads through it are serialised by t->mu. */
    if (t->keep && add_chunk_segment(c, out, t->keep, t->digest, index, from, n) == 0)
        return n;
    return 0;
}

static int start_blob_response(reqctx *c, uint64_t total)
{
    if (total == UINT64_MAX) { /* length unknown: chunked, no ranges */
        c->offset = 0;
        c->end = UINT64_MAX;
        add_digest_headers(c, c->r.digest);
        add_header(c, "Content-Type", "application/octet-stream");
    } else {
        if (apply_range(c, total) != 0)
            return -1;
        add_blob_headers(c, c->r.digest, total);
    }
    c->status = c->ranged ? 206 : 200;
    if (c->head) {
        reply(c, c->status, NULL);
        return -1;
    }
    unwatch_close(c);
    add_header(c, "Date", worker_date(c->w));
    evhttp_send_reply_start(c->req, c->status, reason_of(c->status));
    watch_close(c);
    c->headers_sent = 1;
    return 0;
}

static void blob_pump(reqctx *c)
{
    transfer *t = c->t;
    if (c->client_gone) {
        finish(c);
        return;
    }
    pthread_mutex_lock(&t->mu);
    transfer_state st = t->state;
    uint64_t total = t->total, received = t->received;
    upstream_result err = t->error;
    const char *msg = t->error_msg;
    pthread_mutex_unlock(&t->mu);

    if (st == T_FAILED) {
        if (c->headers_sent)
            abort_response(c);
        else
            reply_upstream_error(c, err, "BLOB_UNKNOWN", msg);
        return;
    }
    if (st == T_PENDING || c->write_pending)
        return;
    if (!c->headers_sent && start_blob_response(c, total) != 0)
        return;
    if (st == T_DONE && c->end == UINT64_MAX)
        c->end = total;
    /* Until the digest is verified, hold back the last byte of the range. */
    uint64_t limit = st == T_DONE ? c->end : (received < c->end - 1 ? received : c->end - 1);
    if (c->offset < limit) {
        struct evbuffer *out = body_buffer(c);
        pthread_mutex_lock(&t->mu);
        size_t n = take_piece(c, out, limit);
        pthread_mutex_unlock(&t->mu);
        if (n == 0) {
            evbuffer_free(out);
            abort_response(c);
            return;
        }
        c->offset += n;
        c->bytes += n;
        METRIC_ADD(bytes_served, n);
        c->write_pending = 1;
        evhttp_send_reply_chunk_with_cb(c->req, out, piece_written, c);
        evbuffer_free(out);
        return;
    }
    if (st == T_DONE && c->offset >= c->end) {
        unwatch_close(c);
        evhttp_send_reply_end(c->req); /* may free c->req at once */
        c->req = NULL;
        finish(c);
    }
}

/* ---------- trust (invariant 2) ---------- */

#define MAX_TRUST_ROUNDS 4

static void detach_transfer(reqctx *c)
{
    if (!c->t)
        return;
    pthread_mutex_lock(&c->t->mu);
    transfer_remove_waiter(c->t, &c->tw);
    pthread_mutex_unlock(&c->t->mu);
    transfer_unref(c->t);
    c->t = NULL;
}

static void deny(reqctx *c, const char *why)
{
    METRIC_ADD(denied, 1);
    log_warn("trust", "denied %s %s: %s", c->method, c->uri, why);
    reply_error(c, 403, "DENIED", why);
}

static void trust_rewake(reqctx *c)
{
    if (c->client_gone) {
        finish(c);
        return;
    }
    c->on_wake = NULL;
    if (c->r.kind == OCI_ROUTE_BLOB)
        serve_blob(c);
    else
        serve_manifest(c);
}

/* After a PENDING answer: wait for the decision, then start over. */
static void await_decision(reqctx *c)
{
    if (++c->trust_rounds > MAX_TRUST_ROUNDS) {
        reply_error(c, 503, "UNAVAILABLE", "the trust decision did not settle");
        return;
    }
    detach_transfer(c);
    c->on_wake = trust_rewake;
    watch_close(c);
}

/* 1: the manifest may be served; 0: c was answered (403) or waits. */
static int manifest_trusted(reqctx *c, const uint8_t digest[32])
{
    char why[VERIFY_TEXT_MAX];
    why[0] = 0; /* (not = "": that would clear all of it on every request) */
    c->trust_waited = 1;
    const char *tag = c->r.by_digest ? NULL : c->r.reference;
    switch (trust_check_manifest(c->w->d->trust, c->up, c->r.name, tag, digest, &c->trust_w, why,
                                 sizeof(why))) {
    case TRUST_ALLOWED:
        return 1;
    case TRUST_DENIED:
        deny(c, why);
        return 0;
    default:
        await_decision(c);
        return 0;
    }
}

/* 1: the blob may be served; 2: only once it is whole in the cache (a
 * kernel-module check reads it); 0: c was answered (403) or waits. */
static int blob_trusted(reqctx *c, int complete)
{
    char why[VERIFY_TEXT_MAX];
    why[0] = 0; /* (not = "": that would clear all of it on every request) */
    c->trust_waited = 1;
    switch (trust_check_blob(c->w->d->trust, c->up, c->r.name, c->r.digest, complete, &c->trust_w,
                             why, sizeof(why))) {
    case TRUST_BLOB_OK:
        return 1;
    case TRUST_BLOB_NEEDS_BYTES:
        return 2;
    case TRUST_BLOB_DENIED:
        deny(c, why);
        return 0;
    default:
        await_decision(c);
        return 0;
    }
}

static void wait_on_transfer(reqctx *c, transfer *t, wake_fn fn)
{
    c->t = t;
    c->on_wake = fn;
    c->tw.wake = c->wake;
    watch_close(c);
    pthread_mutex_lock(&t->mu);
    transfer_add_waiter(t, &c->tw);
    pthread_mutex_unlock(&t->mu);
    event_active(c->wake, EV_READ, 0);
}

/* The state of the transfer c waits on (the upstream thread moves it). */
static transfer_state waited_state(reqctx *c)
{
    pthread_mutex_lock(&c->t->mu);
    transfer_state st = c->t->state;
    pthread_mutex_unlock(&c->t->mu);
    return st;
}

/* The blob must be whole before it is checked: wait for the transfer to
 * finish, then serve it like a cache hit. */
static void blob_fill_wake(reqctx *c)
{
    if (c->client_gone) {
        finish(c);
        return;
    }
    transfer_state st = waited_state(c);
    if (st == T_FAILED) {
        reply_upstream_error(c, c->t->error, "BLOB_UNKNOWN", c->t->error_msg);
    } else if (st == T_DONE) {
        detach_transfer(c);
        unwatch_close(c);
        serve_blob(c);
    }
}

static void blob_miss(reqctx *c)
{
    int trusted = blob_trusted(c, 0);
    if (!trusted)
        return;
    transfer_spec spec = {.kind = TRANSFER_BLOB,
                          .up = c->up,
                          .repo = c->r.name,
                          .reference = c->r.reference,
                          .by_digest = 1,
                          .digest = c->r.digest};
    int joined = 0;
    transfer *t = transfer_get(c->w->d, &spec, &joined);
    if (!t) { /* it completed just now */
        serve_blob(c);
        return;
    }
    METRIC_ADD(cache_misses[KIND_BLOB], 1);
    c->cache_result = joined ? "coalesced" : "miss";
    c->started_transfer = !joined;
    /* A module check, or a delta, needs the whole target first. */
    int whole_first = trusted == 2 || (c->want_delta && !c->delta_gave_up);
    wait_on_transfer(c, t, whole_first ? blob_fill_wake : blob_pump);
}

/* ---------- access times (least-recently-used eviction) ---------- */

#define TOUCH_EVERY 60 /* seconds: at most one access-time write per blob per minute */

static void job_touch(cache *cache, void *arg)
{
    cache_touch(cache, arg, (uint64_t)time(NULL));
    free(arg);
}

static void touch_if_stale(reqctx *c, const cache_blob_info *info)
{
    uint64_t now = (uint64_t)time(NULL);
    if (now < info->accessed + TOUCH_EVERY)
        return;
    uint8_t *digest = malloc(32);
    if (!digest)
        return;
    memcpy(digest, c->r.digest, 32);
    writer_submit(c->w->d->writer, job_touch, digest);
}

/* ---------- deltas ---------- */

static void send_delta(reqctx *c, const delta_choice *ch, uint64_t target_size)
{
    cache_snapshot *snap = worker_snapshot(c->w);
    if (!snap) {
        reply_error(c, 500, "UNKNOWN", "cache unavailable");
        return;
    }
    if (apply_range(c, ch->size) != 0)
        return; /* 416 answered */
    char base[VERIFY_DIGEST_TEXT_LEN], quoted[VERIFY_DIGEST_TEXT_LEN + 2];
    verify_digest_format(c->want.base, base);
    snprintf(quoted, sizeof(quoted), "\"%s\"", base);
    add_blob_headers(c, c->r.digest, ch->size);
    evhttp_remove_header(evhttp_request_get_output_headers(c->req), "ETag");
    int status;
    if (ch->codec == DELTA_CODEC_ZSTD) {
        add_header(c, "Content-Encoding", "dcz");
        add_header(c, "Vary", "Accept-Encoding, Available-Dictionary");
        if (ch->window_log > DELTA_DCZ_WINDOW_LOG)
            add_header_u64(c, DELTA_HTTP_WINDOW_HEADER, ch->window_log);
        status = c->ranged ? 206 : 200;
    } else {
        add_header(c, "IM", deltas_wire_name(ch->codec));
        add_header(c, "Delta-Base", quoted);
        status = 226;
    }
    struct evbuffer *body = body_buffer(c);
    if (!c->head && add_blob_range(c, body, snap, ch->digest, c->offset, c->end) != 0) {
        evbuffer_free(body);
        evhttp_clear_headers(evhttp_request_get_output_headers(c->req));
        reply_error(c, 500, "UNKNOWN", "cache read failed");
        return;
    }
    int idx = ch->codec == DELTA_CODEC_ZSTD ? 0 : ch->codec == DELTA_CODEC_VCDIFF ? 1 : 2;
    METRIC_ADD(deltas_served[idx], 1);
    METRIC_ADD(delta_bytes_saved, target_size > ch->size ? target_size - ch->size : 0);
    c->cache_result = deltas_wire_name(ch->codec);
    reply(c, status, body);
    evbuffer_free(body);
}

static void give_up_delta(reqctx *c)
{
    c->delta_gave_up = 1;
    METRIC_ADD(delta_fallbacks, 1);
}

/* Woken while waiting for a delta: serve again (the delta, or the blob). */
static void delta_rewake(reqctx *c)
{
    if (c->client_gone) {
        finish(c);
        return;
    }
    c->on_wake = NULL;
    serve_blob(c);
}

/* The delta took longer than the bound: the full blob, now. */
static void delta_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    reqctx *c = arg;
    if (c->delta_waited)
        deltas_cancel(c->w->d->deltas, &c->delta_w);
    give_up_delta(c);
    delta_rewake(c);
}

/* The base had to be fetched first; with it (or without) start over. */
static void base_fill_wake(reqctx *c)
{
    if (c->client_gone) {
        finish(c);
        return;
    }
    transfer_state st = waited_state(c);
    if (st != T_DONE && st != T_FAILED)
        return;
    if (st == T_FAILED)
        give_up_delta(c);
    detach_transfer(c);
    unwatch_close(c);
    serve_blob(c);
}

/* 1: waiting for the base's transfer; 0: it is cached already. */
static int fetch_base(reqctx *c)
{
    char hex[VERIFY_DIGEST_TEXT_LEN];
    verify_digest_format(c->want.base, hex);
    transfer_spec spec = {.kind = TRANSFER_BLOB,
                          .up = c->up,
                          .repo = c->r.name,
                          .reference = hex,
                          .by_digest = 1,
                          .digest = c->want.base};
    int joined = 0;
    c->base_fetched = 1;
    transfer *t = transfer_get(c->w->d, &spec, &joined);
    if (!t)
        return 0;
    wait_on_transfer(c, t, base_fill_wake);
    return 1;
}

static void arm_delta_timer(reqctx *c)
{
    if (c->delta_timer)
        return;
    c->delta_timer = evtimer_new(c->w->base, delta_timeout, c);
    struct timeval tv = {(time_t)c->w->d->cfg->delta_max_wait, 0};
    evtimer_add(c->delta_timer, &tv);
}

static int base_cached(reqctx *c)
{
    cache_snapshot *snap = worker_snapshot(c->w);
    cache_blob_info base;
    return snap && cache_blob_stat(snap, c->want.base, &base) == CACHE_OK &&
           base.state == CACHE_BLOB_COMPLETE;
}

/* A cached target the client holds an older version of: serve the delta if
 * one is worth it (1: handled — served or waiting); 0: serve it whole. */
static int delta_path(reqctx *c, const cache_blob_info *info)
{
    if (!c->want_delta || c->delta_gave_up || etag_matches(c, c->r.digest) ||
        memcmp(c->want.base, c->r.digest, 32) == 0)
        return 0;
    if (!base_cached(c)) {
        if (!c->base_fetched && fetch_base(c))
            return 1;
        if (!base_cached(c)) {
            give_up_delta(c);
            return 0;
        }
    }
    delta_choice ch;
    switch (deltas_find(c->w->d->deltas, &c->want, c->r.digest, info->size, &c->delta_w, &ch)) {
    case DELTAS_SERVE:
        send_delta(c, &ch, info->size);
        return 1;
    case DELTAS_PENDING:
        c->delta_waited = 1;
        arm_delta_timer(c);
        c->on_wake = delta_rewake;
        watch_close(c);
        return 1;
    default:
        give_up_delta(c);
        return 0;
    }
}

static void serve_blob(reqctx *c)
{
    cache_snapshot *snap = worker_snapshot(c->w);
    cache_blob_info info;
    if (snap && cache_blob_stat(snap, c->r.digest, &info) == CACHE_OK &&
        info.state == CACHE_BLOB_COMPLETE) {
        if (!verified_has(c->w, VERIFIED_BLOB, c->r.digest)) {
            atomic_fetch_add(&c->refs, 1);
            c->on_wake = verify_done;
            watch_close(c);
            writer_submit(c->w->d->writer, job_verify_blob, c);
            return;
        }
        unwatch_close(c);
        if (blob_trusted(c, 1) != 1)
            return;
        touch_if_stale(c, &info);
        if (delta_path(c, &info))
            return;
        METRIC_ADD(cache_hits[KIND_BLOB], 1);
        if (!c->cache_result)
            c->cache_result = "hit";
        send_cached_blob(c, snap, &info);
        return;
    }
    unwatch_close(c);
    blob_miss(c);
}

/* ---------- manifests ---------- */

static void send_manifest(reqctx *c, const uint8_t digest[32], const char *media_type,
                          const void *body, size_t len, int stale)
{
    if (stale)
        add_header(c, "Warning", "110 sluice \"upstream unreachable: last known digest\"");
    if (etag_matches(c, digest)) {
        add_digest_headers(c, digest);
        reply(c, 304, NULL);
        return;
    }
    add_digest_headers(c, digest);
    add_header(c, "Content-Type",
               media_type && media_type[0] ? media_type
                                           : "application/vnd.oci.image.manifest.v1+json");
    add_header_u64(c, "Content-Length", len);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, body, len);
    reply(c, 200, b);
    evbuffer_free(b);
}

/* Serves manifest `digest` from the cache if it is there and intact. */
static int send_cached_manifest(reqctx *c, const uint8_t digest[32], int stale)
{
    cache_snapshot *snap = worker_snapshot(c->w);
    const char *mt;
    const void *body;
    size_t len;
    if (!snap || cache_manifest_get(snap, digest, &mt, &body, &len) != CACHE_OK)
        return -1;
    if (!verified_has(c->w, VERIFIED_MANIFEST, digest)) {
        if (verify_digest_check(body, len, digest) != VERIFY_OK) {
            METRIC_ADD(corrupt_evictions, 1);
            return -1; /* refetched below; the put replaces the corrupt record */
        }
        verified_add(c->w, VERIFIED_MANIFEST, digest);
    }
    if (manifest_trusted(c, digest))
        send_manifest(c, digest, mt, body, len, stale);
    return 0;
}

/* A cache hit ends the request (c is gone after 0). */
static int manifest_hit(reqctx *c, const uint8_t digest[32])
{
    const char *before = c->cache_result;
    c->cache_result = "hit";
    if (send_cached_manifest(c, digest, 0) == 0) {
        METRIC_ADD(cache_hits[KIND_MANIFEST], 1);
        return 0;
    }
    c->cache_result = before;
    return -1;
}

static void manifest_wake(reqctx *c)
{
    transfer *t = c->t;
    if (c->client_gone) {
        finish(c);
        return;
    }
    pthread_mutex_lock(&t->mu);
    transfer_state st = t->state;
    pthread_mutex_unlock(&t->mu);
    if (st == T_FAILED) {
        reply_upstream_error(c, t->error, "MANIFEST_UNKNOWN", t->error_msg);
        return;
    }
    if (st != T_DONE)
        return;
    unwatch_close(c);
    if (t->outcome == M_FETCHED) {
        if (manifest_trusted(c, t->digest))
            send_manifest(c, t->digest, t->media_type, t->body, t->body_len, 0);
        return;
    }
    if (send_cached_manifest(c, t->digest, t->outcome == M_STALE) != 0)
        reply_upstream_error(c, UPSTREAM_UNAVAILABLE, "MANIFEST_UNKNOWN",
                             "cached manifest unreadable");
}

static void manifest_miss(reqctx *c, const uint8_t *cached_digest)
{
    transfer_spec spec = {.kind = TRANSFER_MANIFEST,
                          .up = c->up,
                          .repo = c->r.name,
                          .reference = c->r.reference,
                          .by_digest = c->r.by_digest,
                          .digest = c->r.digest,
                          .cached_digest = cached_digest};
    int joined = 0;
    transfer *t = transfer_get(c->w->d, &spec, &joined);
    if (!t) {
        serve_manifest(c);
        return;
    }
    METRIC_ADD(cache_misses[KIND_MANIFEST], 1);
    c->cache_result = cached_digest ? "revalidate" : joined ? "coalesced" : "miss";
    c->started_transfer = !joined;
    wait_on_transfer(c, t, manifest_wake);
}

static void serve_manifest(reqctx *c)
{
    if (c->r.by_digest) {
        if (manifest_hit(c, c->r.digest) != 0)
            manifest_miss(c, NULL);
        return;
    }
    cache_snapshot *snap = worker_snapshot(c->w);
    uint8_t digest[32];
    uint64_t confirmed = 0;
    const char *mt;
    const void *body;
    size_t len;
    int known = snap &&
                cache_tag_get(snap, c->repo_key, c->r.reference, digest, &confirmed) == CACHE_OK &&
                cache_manifest_get(snap, digest, &mt, &body, &len) == CACHE_OK;
    uint64_t now = (uint64_t)time(NULL);
    if (known && now - confirmed < atomic_load(&c->w->d->tag_ttl) && manifest_hit(c, digest) == 0)
        return;
    manifest_miss(c, known ? digest : NULL);
}

/* ---------- small upstream fetches: tags/list and referrers ---------- */

static int small_on_data(void *arg, const void *data, size_t len)
{
    reqctx *c = arg;
    if (c->small_len + len > MAX_SMALL_BODY)
        return 1; /* dropped: the JSON parse fails later */
    char *nb = realloc(c->small_body, c->small_len + len + 1);
    if (!nb)
        abort();
    memcpy(nb + c->small_len, data, len);
    c->small_body = nb;
    c->small_len += len;
    nb[c->small_len] = 0;
    return 1;
}

static void small_on_done(void *arg, upstream_result result, const upstream_response *resp)
{
    reqctx *c = arg;
    c->small_result = result;
    c->small_resp = *resp;
    event_active(c->wake, EV_READ, 0);
}

static void small_wake(reqctx *c)
{
    ctx_unref(c); /* the upstream request's reference */
    if (c->client_gone) {
        finish(c);
        return;
    }
    unwatch_close(c);
    c->small_done(c);
}

static void small_fetch(reqctx *c, const char *path, small_done_fn done)
{
    static const upstream_callbacks cb = {NULL, small_on_data, small_on_done};
    upstream_request req = {.conf = c->up, .accept = "application/json"};
    snprintf(req.path, sizeof(req.path), "%s", path);
    snprintf(req.repository, sizeof(req.repository), "%s", c->r.name);
    c->small_done = done;
    c->on_wake = small_wake;
    watch_close(c);
    atomic_fetch_add(&c->refs, 1);
    upstream_submit(c->w->d->upstream, &req, &cb, c, NULL);
}

static const char *query(reqctx *c, const char *key)
{
    return c->have_query ? evhttp_find_header(&c->query, key) : NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct {
    const char **tags;
    size_t n, cap;
    char **owned;
} tag_vec;

static void tag_vec_push(tag_vec *v, const char *s, int own)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->tags = realloc(v->tags, v->cap * sizeof(*v->tags));
        v->owned = realloc(v->owned, v->cap * sizeof(*v->owned));
        if (!v->tags || !v->owned)
            abort();
    }
    v->owned[v->n] = own ? (char *)s : NULL;
    v->tags[v->n++] = s;
}

static void tag_vec_free(tag_vec *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->owned[i]);
    free(v->tags);
    free(v->owned);
}

static int collect_cached_tag(void *arg, const char *tag, size_t len)
{
    char *s = strndup(tag, len);
    if (!s)
        abort();
    tag_vec_push(arg, s, 1);
    return 0;
}

/* Answers tags/list from a sorted list: `last` and `n` as in the spec, with a
 * Link header to the next page when the page is full. */
static void send_tag_page(reqctx *c, tag_vec *v)
{
    qsort(v->tags, v->n, sizeof(*v->tags), cmp_str);
    const char *last = query(c, "last");
    const char *ns = query(c, "n");
    size_t limit = ns ? (size_t)strtoull(ns, NULL, 10) : v->n;
    if (ns && limit == 0 && strcmp(ns, "0") != 0) {
        reply_error(c, 400, "UNSUPPORTED", "n must be a non-negative integer");
        return;
    }
    json_t *arr = json_array();
    size_t taken = 0, i = 0;
    while (i < v->n && last && strcmp(v->tags[i], last) <= 0)
        i++;
    for (; i < v->n && taken < limit; i++, taken++)
        json_array_append_new(arr, json_string(v->tags[i]));
    if (i < v->n && taken == limit && taken > 0) {
        char link[1024];
        snprintf(link, sizeof(link), "</v2/%s/tags/list?n=%zu&last=%s>; rel=\"next\"", c->r.name,
                 limit, v->tags[i - 1]);
        add_header(c, "Link", link);
    }
    json_t *doc = json_pack("{s:s,s:o}", "name", c->r.name, "tags", arr);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    reply_json(c, 200, text, strlen(text));
    free(text);
}

static void tags_from_cache(reqctx *c)
{
    tag_vec v = {0};
    cache_snapshot *snap = worker_snapshot(c->w);
    if (snap)
        cache_tag_list(snap, c->repo_key, NULL, 0, collect_cached_tag, &v);
    if (v.n == 0)
        reply_upstream_error(c, c->small_result, "NAME_UNKNOWN", "no cached tags");
    else
        send_tag_page(c, &v);
    tag_vec_free(&v);
}

static void tags_done(reqctx *c)
{
    json_t *doc = NULL;
    if (c->small_result == UPSTREAM_OK)
        doc = json_loadb(c->small_body ? c->small_body : "", c->small_len, 0, NULL);
    json_t *tags = json_object_get(doc, "tags");
    if (c->small_result == UPSTREAM_NOT_FOUND) {
        reply_error(c, 404, "NAME_UNKNOWN", "repository not known upstream");
    } else if (!doc || !(json_is_array(tags) || json_is_null(tags))) {
        tags_from_cache(c);
    } else {
        tag_vec v = {0};
        size_t i;
        json_t *e;
        json_array_foreach(tags, i, e)
        {
            if (json_is_string(e))
                tag_vec_push(&v, json_string_value(e), 0);
        }
        send_tag_page(c, &v);
        tag_vec_free(&v);
    }
    json_decref(doc);
}

typedef struct {
    json_t *manifests;
    const char *artifact_type;
} referrer_walk;

static int collect_referrer(void *arg, const uint8_t referrer[32], const char *json, size_t len)
{
    (void)referrer;
    referrer_walk *rw = arg;
    json_t *d = json_loadb(json, len, 0, NULL);
    if (!d)
        return 0;
    const char *at = json_string_value(json_object_get(d, "artifactType"));
    if (!rw->artifact_type || (at && strcmp(at, rw->artifact_type) == 0))
        json_array_append(rw->manifests, d);
    json_decref(d);
    return 0;
}

static void referrers_done(reqctx *c)
{
    if (c->small_result == UPSTREAM_OK && c->small_body) {
        json_t *doc = json_loadb(c->small_body, c->small_len, 0, NULL);
        if (json_is_array(json_object_get(doc, "manifests"))) {
            json_decref(doc);
            add_header(c, "Content-Type", "application/vnd.oci.image.index.v1+json");
            struct evbuffer *b = evbuffer_new();
            evbuffer_add(b, c->small_body, c->small_len);
            add_header_u64(c, "Content-Length", c->small_len);
            reply(c, 200, b);
            evbuffer_free(b);
            return;
        }
        json_decref(doc);
    }
    /* The upstream has no referrers API (or is down): answer from the cache. */
    referrer_walk rw = {json_array(), query(c, "artifactType")};
    cache_snapshot *snap = worker_snapshot(c->w);
    if (snap)
        cache_referrer_list(snap, c->r.digest, collect_referrer, &rw);
    if (rw.artifact_type)
        add_header(c, "OCI-Filters-Applied", "artifactType");
    json_t *doc = json_pack("{s:i,s:s,s:o}", "schemaVersion", 2, "mediaType",
                            "application/vnd.oci.image.index.v1+json", "manifests", rw.manifests);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, text, strlen(text));
    add_header(c, "Content-Type", "application/vnd.oci.image.index.v1+json");
    add_header_u64(c, "Content-Length", strlen(text));
    reply(c, 200, b);
    evbuffer_free(b);
    free(text);
}

/* ---------- dispatch ---------- */

static void serve_metrics(reqctx *c)
{
    cache_stats st = {0};
    cache_stat(c->w->d->cache, &st);
    struct evbuffer *b = evbuffer_new();
    metrics_render(b, st.blob_bytes, st.blobs);
    add_header(c, "Content-Type", "text/plain; version=0.0.4");
    add_header_u64(c, "Content-Length", evbuffer_get_length(b));
    reply(c, 200, b);
    evbuffer_free(b);
}

/* containerd's ?ns=HOST names the registry it wants mirrored: a named
 * upstream, or the default one if HOST is its own host. Content of any other
 * registry is not ours to serve from the default upstream. */
static const config_upstream *select_upstream(const config *cfg, const char *ns)
{
    const config_upstream *up = config_upstream_for(cfg, ns);
    if (!up || !ns || !ns[0] || up->name[0])
        return up;
    char host[256];
    upstream_host_of(up->url, host, sizeof(host));
    return strcasecmp(host, ns) == 0 ? up : NULL;
}

static int method_allowed(reqctx *c)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(c->req);
    c->head = m == EVHTTP_REQ_HEAD;
    return m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD;
}

static void dispatch_oci(reqctx *c, const char *path)
{
    oci_parse_status ps = oci_route_parse(path, strlen(path), &c->r);
    if (ps == OCI_PARSE_OK && c->r.kind == OCI_ROUTE_UPLOAD)
        c->route = ROUTE_UPLOAD;
    if (ps == OCI_PARSE_OK && c->r.kind != OCI_ROUTE_UPLOAD)
        c->route = (metrics_route)(ROUTE_BASE + (int)c->r.kind);
    if (!method_allowed(c)) {
        add_header(c, "Allow", "GET, HEAD");
        reply_error(c, 405, "UNSUPPORTED", "sluice is a read-only mirror: push to the upstream");
        return;
    }
    if (ps != OCI_PARSE_OK) {
        reply_error(c, oci_parse_http_status(ps), oci_parse_error_code(ps), "invalid request");
        return;
    }
    if (c->r.kind == OCI_ROUTE_UPLOAD) {
        reply_error(c, 405, "UNSUPPORTED", "sluice is a read-only mirror");
        return;
    }
    add_header(c, "Docker-Distribution-API-Version", "registry/2.0");
    add_header(c, SLUICE_CAPABILITIES_HEADER, SLUICE_CAPABILITIES);
    if (c->r.kind == OCI_ROUTE_BASE) {
        reply_json(c, 200, "{}", 2);
        return;
    }
    c->up = select_upstream(c->w->d->cfg, query(c, "ns"));
    if (!c->up) {
        reply_error(c, 404, "NAME_UNKNOWN", "no upstream configured for this registry (ns)");
        return;
    }
    transfer_repo_key(c->up, c->r.name, c->repo_key, sizeof(c->repo_key));
    char path_buf[1024];
    switch (c->r.kind) {
    case OCI_ROUTE_BLOB:
        c->want_delta = deltas_wanted(evhttp_request_get_input_headers(c->req), &c->want);
        serve_blob(c);
        break;
    case OCI_ROUTE_MANIFEST:
        serve_manifest(c);
        break;
    case OCI_ROUTE_TAGS:
        snprintf(path_buf, sizeof(path_buf), "/v2/%s/tags/list", c->r.name);
        small_fetch(c, path_buf, tags_done);
        break;
    case OCI_ROUTE_REFERRERS: {
        const char *at = query(c, "artifactType");
        snprintf(path_buf, sizeof(path_buf), "/v2/%s/referrers/%s%s%s", c->r.name, c->r.reference,
                 at ? "?artifactType=" : "", at ? at : "");
        small_fetch(c, path_buf, referrers_done);
        break;
    }
    default:
        reply_error(c, 404, "NAME_UNKNOWN", "unknown route");
        break;
    }
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    default:
        return "OTHER";
    }
}

/* Copies the request target for the log, escaping what would break a line. */
static void copy_uri(char *out, size_t outlen, const char *uri)
{
    size_t n = 0;
    for (; uri && *uri && n + 5 < outlen; uri++) {
        unsigned char ch = (unsigned char)*uri;
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
            n += (size_t)snprintf(out + n, outlen - n, "\\x%02x", ch);
        else
            out[n++] = (char)ch;
    }
    out[n] = 0;
}

/* A zeroed context, from the worker's free list when it has one. */
static reqctx *ctx_alloc(worker *w)
{
    struct routes_local *l = w->routes;
    reqctx *c = l->free_ctxs;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c || !(c->wake = event_new(w->base, -1, 0, wake_cb, c)))
            abort();
        return c;
    }
    l->free_ctxs = c->next_free;
    l->n_free--;
    struct event *wake = c->wake; /* already bound to c */
    memset(c, 0, sizeof(*c));
    c->wake = wake;
    return c;
}

static reqctx *ctx_new(worker *w, struct evhttp_request *req)
{
    reqctx *c = ctx_alloc(w);
    atomic_init(&c->refs, 1);
    c->w = w;
    c->req = req;
    c->route = ROUTE_OTHER;
    c->method = method_name(evhttp_request_get_command(req));
    copy_uri(c->uri, sizeof(c->uri), evhttp_request_get_uri(req));
    clock_gettime(CLOCK_MONOTONIC, &c->start);
    c->trust_w.wake = c->wake;
    c->delta_w.wake = c->wake;
    atomic_fetch_add(&g_metrics.requests_in_progress, 1);
    return c;
}

void routes_handle(struct evhttp_request *req, void *arg)
{
    reqctx *c = ctx_new(arg, req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
    if (q && evhttp_parse_query_str(q, &c->query) == 0)
        c->have_query = 1;
    if (!path) {
        reply_error(c, 400, "UNSUPPORTED", "malformed request target");
    } else if (strcmp(path, "/healthz") == 0) {
        c->route = ROUTE_HEALTH;
        reply_json(c, 200, "{\"status\":\"ok\"}", 15);
    } else if (strcmp(path, "/metrics") == 0) {
        c->route = ROUTE_METRICS;
        serve_metrics(c);
    } else if (strncmp(path, "/v2", 3) == 0 && (path[3] == '/' || path[3] == 0)) {
        dispatch_oci(c, path);
    } else {
        reply_error(c, 404, "NAME_UNKNOWN", "not an OCI distribution route");
    }
}
