/*
 * upstream.h — the client side: HTTP requests to upstream registries.
 *
 * One thread runs its own libevent loop driving libcurl's multi-socket API,
 * so every upstream transfer in the process shares one connection pool, one
 * DNS cache and one token cache, and no worker loop ever waits on the
 * network. Other threads submit requests; all callbacks run on the upstream
 * thread.
 *
 * Per request the client handles, invisibly to the caller:
 *  - auth: anonymous first; on a 401 it answers a Bearer challenge
 *    (WWW-Authenticate: Bearer realm=...,service=...,scope=...) by getting a
 *    token from the realm (with Basic credentials when configured), cached per
 *    (upstream, scope) until it expires; a Basic challenge is answered with
 *    the configured credentials;
 *  - redirects (e.g. 307 to object storage), without forwarding the
 *    Authorization header to another host (libcurl's rule);
 *  - HTTPS_PROXY/NO_PROXY from the environment (libcurl's rule), TLS verified
 *    unless the upstream says tls_verify = false, ca_file if configured;
 *  - failures: connect errors, timeouts, 5xx and 429 are retried up to
 *    `retries` times with exponential backoff; a body cut mid-way is resumed
 *    with a Range request from the first byte not yet delivered (a server that
 *    answers the range with 200 has the delivered prefix skipped), so the
 *    caller sees one continuous body.
 */
#ifndef SLUICE_UPSTREAM_H
#define SLUICE_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct upstream upstream;

typedef enum {
    UPSTREAM_OK = 0,
    UPSTREAM_NOT_FOUND,    /* 404: the upstream does not have it */
    UPSTREAM_DENIED,       /* 401/403 after auth was attempted */
    UPSTREAM_TOO_MANY,     /* 429 after retries */
    UPSTREAM_BAD_RESPONSE, /* other 4xx, or a malformed answer */
    UPSTREAM_UNAVAILABLE,  /* connection refused/reset, 5xx, cut: after retries */
    UPSTREAM_TIMEOUT,      /* connect or transfer timeout: after retries */
    UPSTREAM_CANCELLED,    /* shutdown, or the consumer aborted */
    UPSTREAM_OFFLINE,      /* offline mode: no upstream is ever contacted */
} upstream_result;

typedef struct {
    int status;             /* final HTTP status (of the first successful response) */
    int64_t content_length; /* full body length, -1 if unknown */
    char content_type[128];
    char docker_content_digest[80];
    char im[32]; /* RFC 3229 IM of a 226 answer: the delta codec, else "" */
} upstream_response;

/* The consumer's side of a request; all called on the upstream thread. */
typedef struct {
    /* Once, before any data, with the final successful response's headers. */
    void (*on_headers)(void *arg, const upstream_response *resp);
    /* Body bytes in order. Returns 1 to take them, 0 to pause the transfer
     * (the same bytes are offered again after upstream_unpause). */
    int (*on_data)(void *arg, const void *data, size_t len);
    /* Exactly once, at the end, successful or not. */
    void (*on_done)(void *arg, upstream_result result, const upstream_response *resp);
} upstream_callbacks;

typedef struct {
    const config_upstream *conf;
    char path[1024];        /* e.g. "/v2/library/x/manifests/latest" */
    char repository[256];   /* for the token scope "repository:NAME:pull" */
    const char *accept;     /* Accept header value, or NULL */
    int head;               /* HEAD instead of GET */
    int resumable;          /* a cut body may be resumed with Range */
    int no_retry;           /* fail at the first error (the caller has a fallback) */
    char if_none_match[96]; /* with a_im: the base a delta is asked against */
    const char *a_im;       /* RFC 3229 A-IM: the delta codecs accepted, or NULL */
    uint64_t offset;        /* start the body here (a Range request), e.g. to resume a
                               transfer an earlier run left unfinished; content_length
                               is still the whole body's */
} upstream_request;

/* Starts the upstream thread. NULL on failure. With offline set, every
 * request ends at once with UPSTREAM_OFFLINE.
 *
 * Circuit breaker: when a request to an upstream fails without any answer
 * (refused, unreachable, connect timeout), that upstream is considered down
 * for its `breaker` seconds: requests to it end at once with
 * UPSTREAM_UNAVAILABLE instead of each waiting for a connect timeout, so
 * whatever can be answered from the cache is answered at LAN speed. Any
 * answer from the upstream closes the breaker. */
upstream *upstream_start(int offline);
/* Cancels whatever is in flight (each gets on_done(UPSTREAM_CANCELLED)),
 * stops and joins the thread. Later submissions are cancelled at once and
 * unpause/cancel calls are ignored, until upstream_free. */
void upstream_stop(upstream *u);
void upstream_free(upstream *u);
/* Queues a request. Its id (never 0) is stored in *id (if not NULL) before
 * the request can start, so callbacks may already use it. Any thread. */
void upstream_submit(upstream *u, const upstream_request *req, const upstream_callbacks *cb,
                     void *arg, uint64_t *id);
/* Resumes a paused request (no-op if it has finished). Any thread. */
void upstream_unpause(upstream *u, uint64_t id);
/* Cancels a request (no-op if finished); on_done follows with CANCELLED. */
void upstream_cancel(upstream *u, uint64_t id);

const char *upstream_result_name(upstream_result r);
/* Whether this upstream answered as a Sluice (Sluice-Capabilities header):
 * then it serves deltas between Sluices. Any thread. */
int upstream_is_sluice(upstream *u, const config_upstream *conf);
#define SLUICE_CAPABILITIES_HEADER "Sluice-Capabilities"
#define SLUICE_CAPABILITIES "delta=sluice-bsz,vcdiff,dcz"
/* The registry host[:port] of an upstream URL ("https://r.io:443/x" -> "r.io:443"). */
void upstream_host_of(const char *url, char *out, size_t outlen);

#endif
