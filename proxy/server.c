/*
 * server.c — `sluice serve`: threads, listeners, signals, shutdown.
 *
 * Startup opens the cache, starts the writer and upstream threads, then one
 * worker thread per core (or `workers`), each with its own event_base, its
 * own evhttp and its own listening socket bound with SO_REUSEPORT to the same
 * address, so the kernel spreads connections across workers with no shared
 * accept lock. With tls_cert/tls_key each connection is a
 * bufferevent_openssl.
 *
 * The main thread only waits for signals. SIGHUP re-reads the config file and
 * applies what can change at run time (tag_ttl, log_requests). SIGTERM or
 * SIGINT shuts down in an order where nobody is left holding a dangling
 * pointer: stop accepting; let requests in progress finish (grace period);
 * stop the upstream (cancelling transfers, whose waiters then answer);
 * stop the workers; drain the writer; free the upstream; close the cache.
 */
#include "server.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "dl_libs.h"
#include "log.h"
#include "metrics.h"
#include "routes.h"
#include "transfer.h"
#include "deltas.h"
#include "trust.h"

#define GRACE_SECONDS 10
#define MAX_HEADERS_SIZE 16384
#define MAX_BODY_SIZE 1024
#define CONN_TIMEOUT_SECONDS 120
#define MAX_SINGLE_WRITE (1 << 20)
#define COUNTER_FLUSH_SECONDS 5

typedef struct server {
    daemon_ctx d;
    cache_counters flushed; /* what the counters in the cache already include */
    worker *workers;
    unsigned n_workers;
    SSL_CTX *ssl;
    struct event_base *main_base;
    int stopping;
} server;

cache_snapshot *worker_snapshot(worker *w)
{
    return cache_snapshot_current(w->d->cache, &w->snap);
}

/* ---------- listeners ---------- */

static int open_listener(const struct sockaddr *sa, int salen, char *err, size_t errlen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    /* TCP_NODELAY is inherited by accepted sockets: a response's headers
     * and a small body written separately must not wait for a delayed ACK. */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        bind(fd, sa, (socklen_t)salen) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errlen, "cannot listen: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Each connection's bufferevent: TLS when configured. libevent writes at
 * most 16 KiB per socket event by default, which caps a fast client at a
 * fraction of what sendfile can do; large writes let one event move a
 * whole chunk. */
static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
    worker *w = arg;
    struct bufferevent *bev;
    if (w->ssl_ctx)
        bev = bufferevent_openssl_socket_new(base, -1, SSL_new(w->ssl_ctx),
                                             BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    else
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (bev)
        bufferevent_set_max_single_write(bev, MAX_SINGLE_WRITE);
    return bev;
}

static SSL_CTX *make_ssl_ctx(const config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "TLS: cannot use %s / %s: %s", cfg->tls_cert, cfg->tls_key,
                 ERR_reason_error_string(ERR_get_error()));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* ---------- workers ---------- */

static void worker_stop_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker *w = arg;
    if (w->http) {
        evhttp_free(w->http); /* closes connections; their waiters finish below */
        w->http = NULL;
    }
    event_del(w->tick_ev);
    event_base_loopexit(w->base, NULL);
}

static void worker_drain_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker *w = arg;
    if (w->http && w->bound)
        evhttp_del_accept_socket(w->http, w->bound); /* closes the listening fd */
    w->bound = NULL;
    w->listen_fd = -1;
}

/* An idle worker must not pin an old snapshot: that would keep LMDB from
 * reusing pages and from growing the map (see cache.h). */
static void worker_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker_snapshot(arg);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    char name[16]; /* shown by top -H, ps -L, gdb */
    snprintf(name, sizeof(name), "sluice-http%d", w->index);
    pthread_setname_np(pthread_self(), name);
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* A worker's loop. With epoll's changelist, the enable/disable pairs evhttp
 * makes on every request (read off while answering, write on until the
 * answer is out) are merged into one epoll_ctl per loop iteration instead of
 * one each. We never dup(2) a socket, which is the case it mishandles. */
static struct event_base *new_worker_base(void)
{
    struct event_config *ec = event_config_new();
    if (!ec)
        return NULL;
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *base = event_base_new_with_config(ec);
    event_config_free(ec);
    return base;
}

static int worker_init(worker *w, daemon_ctx *d, int index, SSL_CTX *ssl, int fd)
{
    w->d = d;
    w->index = index;
    w->ssl_ctx = ssl;
    w->listen_fd = fd;
    w->base = new_worker_base();
    if (!w->base || routes_worker_init(w) != 0)
        return -1;
    w->http = evhttp_new(w->base);
    w->stop_ev = event_new(w->base, -1, 0, worker_stop_cb, w);
    w->drain_ev = event_new(w->base, -1, 0, worker_drain_cb, w);
    w->tick_ev = event_new(w->base, -1, EV_PERSIST, worker_tick_cb, w);
    if (!w->http || !w->stop_ev || !w->drain_ev || !w->tick_ev)
        return -1;
    struct timeval second = {1, 0};
    event_add(w->tick_ev, &second);
    w->bound = evhttp_accept_socket_with_handle(w->http, fd);
    if (!w->bound)
        return -1;
    evhttp_set_gencb(w->http, routes_handle, w);
    evhttp_set_max_headers_size(w->http, MAX_HEADERS_SIZE);
    evhttp_set_max_body_size(w->http, MAX_BODY_SIZE);
    evhttp_set_timeout(w->http, CONN_TIMEOUT_SECONDS);
    evhttp_set_default_content_type(w->http, NULL);
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS);
    evhttp_set_bevcb(w->http, make_bev, w);
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

static void worker_free(worker *w)
{
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->drain_ev)
        event_free(w->drain_ev);
    if (w->tick_ev)
        event_free(w->tick_ev);
    if (w->http)
        evhttp_free(w->http);
    routes_worker_free(w);
    if (w->snap)
        cache_snapshot_unref(w->snap);
    if (w->base)
        event_base_free(w->base);
}

static unsigned worker_count(const config *cfg)
{
    if (cfg->workers)
        return cfg->workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static int start_workers(server *s, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (evutil_parse_sockaddr_port(s->d.cfg->listen, (struct sockaddr *)&ss, &sslen) != 0) {
        snprintf(err, errlen, "listen: cannot parse '%s'", s->d.cfg->listen);
        return -1;
    }
    s->n_workers = worker_count(s->d.cfg);
    s->workers = calloc(s->n_workers, sizeof(worker));
    if (!s->workers)
        return -1;
    for (unsigned i = 0; i < s->n_workers; i++) {
        int fd = open_listener((struct sockaddr *)&ss, sslen, err, errlen);
        if (fd < 0)
            return -1;
        if (worker_init(&s->workers[i], &s->d, (int)i, s->ssl, fd) != 0) {
            snprintf(err, errlen, "cannot start worker %u", i);
            return -1;
        }
    }
    return 0;
}

/* ---------- persistent counters (`sluice stat`) ---------- */

static uint64_t now_value(atomic_uint_fast64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* What the metrics gained since the last flush; remembers the new totals. */
static cache_counters counters_since(server *s)
{
    cache_counters now = {.hits = now_value(&g_metrics.cache_hits[KIND_BLOB]) +
                                  now_value(&g_metrics.cache_hits[KIND_MANIFEST]),
                          .misses = now_value(&g_metrics.cache_misses[KIND_BLOB]) +
                                    now_value(&g_metrics.cache_misses[KIND_MANIFEST]),
                          .bytes_served = now_value(&g_metrics.bytes_served),
                          .bytes_upstream = now_value(&g_metrics.upstream_bytes),
                          .bytes_saved_deltas = now_value(&g_metrics.delta_bytes_saved)};
    cache_counters delta = {.hits = now.hits - s->flushed.hits,
                            .misses = now.misses - s->flushed.misses,
                            .bytes_served = now.bytes_served - s->flushed.bytes_served,
                            .bytes_upstream = now.bytes_upstream - s->flushed.bytes_upstream,
                            .bytes_saved_deltas =
                                now.bytes_saved_deltas - s->flushed.bytes_saved_deltas};
    s->flushed = now;
    return delta;
}

static void job_add_counters(cache *c, void *arg)
{
    cache_counters_add(c, arg);
    free(arg);
}

static void flush_counters_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server *s = arg;
    cache_counters *delta = malloc(sizeof(*delta));
    if (!delta)
        return;
    *delta = counters_since(s);
    writer_submit(s->d.writer, job_add_counters, delta);
}

/* ---------- signals ---------- */

static void reload(server *s)
{
    if (!s->d.config_path) {
        log_info("server", "SIGHUP: no config file to reload");
        return;
    }
    config fresh;
    char err[512];
    config_init(&fresh);
    if (config_load_file(&fresh, s->d.config_path, err, sizeof(err)) != 0) {
        log_error("server", "reload refused, keeping the running config: %s", err);
    } else {
        if (trust_reload(s->d.trust, &fresh, err, sizeof(err)) != 0) {
            log_error("server", "reload refused, keeping the running config: %s", err);
            config_free(&fresh);
            return;
        }
        atomic_store(&s->d.tag_ttl, fresh.tag_ttl);
        atomic_store(&s->d.log_requests, fresh.log_requests);
        log_info("server",
                 "reloaded %s (tag_ttl=%u log_requests=%d policy=%s; every verdict dropped; "
                 "listener, cache and upstreams change on restart)",
                 s->d.config_path, fresh.tag_ttl, fresh.log_requests,
                 fresh.policy ? fresh.policy : "none");
    }
    config_free(&fresh);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    server *s = arg;
    if (sig == SIGHUP) {
        reload(s);
        return;
    }
    log_info("server", "signal %d: shutting down", (int)sig);
    event_base_loopbreak(s->main_base);
}

/* ---------- shutdown ---------- */

static void wait_idle(int seconds)
{
    for (int i = 0; i < seconds * 20 && atomic_load(&g_metrics.requests_in_progress) > 0; i++)
        usleep(50 * 1000);
}

static void stop_accepting(server *s)
{
    for (unsigned i = 0; i < s->n_workers; i++)
        if (s->workers[i].thread)
            event_active(s->workers[i].drain_ev, EV_READ, 0);
}

static void stop_workers(server *s)
{
    for (unsigned i = 0; i < s->n_workers; i++) {
        worker *w = &s->workers[i];
        if (w->thread) {
            event_active(w->stop_ev, EV_READ, 0);
            pthread_join(w->thread, NULL);
        }
        worker_free(w);
    }
    free(s->workers);
    s->workers = NULL;
}

static void teardown(server *s)
{
    if (s->workers) {
        stop_accepting(s);
        wait_idle(GRACE_SECONDS);
    }
    if (s->d.upstream)
        upstream_stop(s->d.upstream); /* transfers fail; their waiters answer */
    if (s->d.trust)
        trust_stop(s->d.trust); /* pending decisions end; their waiters answer */
    if (s->d.deltas)
        deltas_stop(s->d.deltas);
    wait_idle(2);
    if (s->workers)
        stop_workers(s);
    if (s->d.writer) {
        writer_stop(s->d.writer);
        cache_counters last = counters_since(s);
        cache_counters_add(s->d.cache, &last);
    }
    if (s->d.upstream)
        upstream_free(s->d.upstream);
    if (s->d.trust)
        trust_free(s->d.trust);
    if (s->d.deltas)
        deltas_free(s->d.deltas);
    if (s->d.transfers)
        transfer_table_free(s->d.transfers);
    if (s->d.cache)
        cache_close(s->d.cache);
    if (s->ssl)
        SSL_CTX_free(s->ssl);
    routes_cleanup();
}

/* ---------- run ---------- */

static int open_cache(server *s, char *err, size_t errlen)
{
    const config *cfg = s->d.cfg;
    cache_options opts = {.map_size = cfg->map_size, .no_sync = !cfg->sync};
    char cerr[256] = "";
    if (cache_open(&s->d.cache, cfg->cache_dir, &opts, cerr, sizeof(cerr)) != CACHE_OK) {
        snprintf(err, errlen, "cache: %s", cerr);
        return -1;
    }
    return 0;
}

static int start(server *s, char *err, size_t errlen)
{
    if (open_cache(s, err, errlen) != 0)
        return -1;
    s->d.writer = writer_start(s->d.cache);
    s->d.upstream = upstream_start(s->d.cfg->offline);
    s->d.transfers = transfer_table_new();
    if (!s->d.writer || !s->d.upstream || !s->d.transfers) {
        snprintf(err, errlen, "cannot start threads");
        return -1;
    }
    if (!(s->d.trust = trust_new(&s->d, s->d.cfg, err, errlen)))
        return -1;
    if (!(s->d.deltas = deltas_new(&s->d, s->d.cfg->delta_workers, s->d.cfg->delta_max_percent))) {
        snprintf(err, errlen, "cannot start the delta workers");
        return -1;
    }
    if (s->d.cfg->tls_cert && !(s->ssl = make_ssl_ctx(s->d.cfg, err, errlen)))
        return -1;
    return start_workers(s, err, errlen);
}

static void log_startup(server *s)
{
    const config *cfg = s->d.cfg;
    for (unsigned i = 0; i < cfg->n_upstreams; i++)
        log_info("server", "upstream name=\"%s\" url=%s", cfg->upstreams[i].name,
                 cfg->upstreams[i].url);
    if (cfg->offline)
        log_info("server", "offline: no upstream will be contacted; serving the cache only");
    if (cfg->policy)
        log_info("server", "trust policy %s: manifests and blobs are served only when allowed",
                 cfg->policy);
    else
        log_warn("server", "no trust policy ([trust] policy / --policy): accepting anything "
                           "(insecureAcceptAnything)");
    if (cfg->module_scopes)
        log_info("server", "kernel modules in [%s] must be signed by [%s]", cfg->module_scopes,
                 cfg->module_certs);
    log_info("server", "listening on %s://%s workers=%u cache=%s tag_ttl=%us",
             s->ssl ? "https" : "http", cfg->listen, s->n_workers, cfg->cache_dir, cfg->tag_ttl);
}

int server_run(config *cfg, const char *config_path)
{
    server s = {0};
    s.d.cfg = cfg;
    s.d.config_path = config_path;
    atomic_init(&s.d.tag_ttl, cfg->tag_ttl);
    atomic_init(&s.d.log_requests, cfg->log_requests);
    evthread_use_pthreads();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("server", "%s", dl_curl_error("cannot initialise libcurl"));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    char err[512] = "";
    int rc = 0;
    if (start(&s, err, sizeof(err)) != 0) {
        log_error("server", "%s", err[0] ? err : "startup failed");
        rc = 1;
    } else {
        s.main_base = event_base_new();
        struct event *sigs[3];
        int signums[3] = {SIGTERM, SIGINT, SIGHUP};
        for (int i = 0; i < 3; i++) {
            sigs[i] = evsignal_new(s.main_base, signums[i], signal_cb, &s);
            event_add(sigs[i], NULL);
        }
        log_startup(&s);
        struct event *flush = event_new(s.main_base, -1, EV_PERSIST, flush_counters_cb, &s);
        struct timeval every = {COUNTER_FLUSH_SECONDS, 0};
        event_add(flush, &every);
        event_base_dispatch(s.main_base);
        event_free(flush);
        for (int i = 0; i < 3; i++)
            event_free(sigs[i]);
        event_base_free(s.main_base);
    }
    teardown(&s);
    curl_global_cleanup();
    libevent_global_shutdown();
    if (rc == 0)
        log_info("server", "stopped");
    return rc;
}
