/*
 * daemon.h — what the threads of `sluice serve` share.
 *
 * The daemon is: N worker threads, each an event loop with its own evhttp
 * server on its own SO_REUSEPORT listener; one upstream thread (upstream.h);
 * one cache writer thread (writer.h); one LMDB environment (cache.h); and
 * one table of transfers in flight (transfer.h) through which concurrent
 * misses share a single upstream fetch.
 */
#ifndef SLUICE_DAEMON_H
#define SLUICE_DAEMON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "cache.h"
#include "config.h"
#include "upstream.h"
#include "writer.h"

struct event_base;
struct evhttp;
struct event;
struct evhttp_bound_socket;
typedef struct transfer_table transfer_table;

typedef struct daemon_ctx {
    config *cfg;
    cache *cache;
    writer *writer;
    upstream *upstream;
    transfer_table *transfers;
    struct trust *trust;
    struct deltas *deltas;
    atomic_uint tag_ttl;     /* reloadable */
    atomic_int log_requests; /* reloadable */
    const char *config_path; /* for SIGHUP, may be NULL */
} daemon_ctx;

typedef struct worker {
    daemon_ctx *d;
    int index;
    pthread_t thread;
    struct event_base *base;
    struct evhttp *http;
    struct event *stop_ev;
    struct event *drain_ev; /* stop accepting (closes this worker's listener) */
    struct event *tick_ev;  /* refreshes `snap` once a second */
    struct evhttp_bound_socket *bound;
    cache_snapshot *snap; /* this thread's current read snapshot */
    void *ssl_ctx;        /* SSL_CTX*, NULL for plain HTTP */
    int listen_fd;
    struct routes_local *routes; /* routes.c's per-worker state */
} worker;

/* The worker's up-to-date snapshot (see cache_snapshot_current); NULL on failure. */
cache_snapshot *worker_snapshot(worker *w);

#endif
