/*
 * upstream.c — libcurl multi-socket client on a dedicated libevent loop.
 *
 * How it works. upstream_start() spawns a thread with its own event_base and
 * one CURLM. libcurl tells us which sockets to watch (socket_cb) and when to
 * time out (timer_cb); libevent events call curl_multi_socket_action back
 * (the "hiperfifo" pattern from libcurl's documentation). Other threads talk
 * to this loop only through a mutex-protected message list and event_active.
 *
 * A request (ureq) goes through attempts. Each attempt is one easy handle;
 * its header callback learns the final response's status and headers (via
 * curl_easy_header), its write callback passes 2xx bodies to the consumer and
 * swallows the bodies of error answers. When an attempt ends, finish_attempt
 * decides: done, authenticate (401 + challenge), retry after a backoff timer
 * (transport errors, 5xx, 429), resume with Range (a cut body), or fail.
 * A Bearer challenge spawns a token request (itself a ureq with internal
 * callbacks); the waiting request restarts when the token arrives.
 */
#include "upstream.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "metrics.h"

#define TOKEN_MAX_BODY (64 * 1024)
#define BACKOFF_BASE_MS 100
#define MAX_REDIRECTS 5

typedef struct token {
    struct token *next;
    char *key; /* "url|scope" or "url|basic" */
    char *value;
    time_t expires;
} token;

typedef struct ureq ureq;

struct ureq {
    ureq *prev, *next; /* live list */
    uint64_t id;
    upstream *u;
    upstream_request spec;
    upstream_callbacks cb;
    void *arg;

    CURL *easy;
    struct curl_slist *headers;
    struct event *retry_timer;
    unsigned attempt;
    uint64_t delivered;     /* body bytes given to the consumer */
    uint64_t attempt_start; /* delivered when this attempt began */
    uint64_t skip;          /* bytes of this response to drop (200 to a Range) */
    int status;             /* current attempt's final status, 0 until known */
    int headers_delivered;
    int auth_retried;
    int use_basic;
    char *challenge;   /* WWW-Authenticate of a 401 */
    char *token_scope; /* scope this request's token is for */
    upstream_response resp;

    /* token requests */
    ureq *waiter; /* the request waiting for this token */
    char *body;
    size_t body_len;
    char *url;      /* absolute URL (token realm) instead of conf->url + path */
    char *redirect; /* where the last answer sent us (no credentials go there) */
    int attempted;  /* an attempt was started (the breaker learns from it) */
    int broken;     /* the answer cannot be used (e.g. a wrong Content-Range) */
    unsigned redirects;
};

typedef enum { MSG_SUBMIT, MSG_UNPAUSE, MSG_CANCEL } msg_type;

typedef struct msg {
    struct msg *next;
    msg_type type;
    uint64_t id;
    ureq *req;
} msg;

struct upstream {
    pthread_t thread;
    struct event_base *base;
    struct event *wake;
    struct event *timer;
    CURLM *multi;
    pthread_mutex_t mu;
    msg *msgs, *msgs_tail;
    atomic_int stopping;
    uint64_t next_id;
    ureq *live;
    token *tokens;
    int offline;
    const config_upstream *sluices[CONFIG_MAX_UPSTREAMS]; /* answered as a Sluice (under mu) */
    struct breaker {
        const config_upstream *conf;
        int64_t until_ms; /* monotonic; down until then */
    } breakers[CONFIG_MAX_UPSTREAMS];
};

typedef struct {
    struct event *ev;
    curl_socket_t fd;
} sock_watch;

static void start_attempt(ureq *r);
static void check_multi(upstream *u);

/* ---------- small helpers ---------- */

const char *upstream_result_name(upstream_result r)
{
    static const char *names[] = {"ok",           "not_found",   "denied",  "too_many_requests",
                                  "bad_response", "unavailable", "timeout", "cancelled",
                                  "offline"};
    return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "unknown";
}

void upstream_host_of(const char *url, char *out, size_t outlen)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    size_t n = strcspn(p, "/?#");
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, p, n);
    out[n] = 0;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        abort();
    return d;
}

static void live_add(upstream *u, ureq *r)
{
    r->prev = NULL;
    r->next = u->live;
    if (u->live)
        u->live->prev = r;
    u->live = r;
}

static void live_remove(upstream *u, ureq *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        u->live = r->next;
    if (r->next)
        r->next->prev = r->prev;
}

static uint64_t take_id(upstream *u)
{
    pthread_mutex_lock(&u->mu);
    uint64_t id = ++u->next_id;
    pthread_mutex_unlock(&u->mu);
    return id;
}

static ureq *live_find(upstream *u, uint64_t id)
{
    for (ureq *r = u->live; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

/* ---------- token cache ---------- */

static token **token_slot(upstream *u, const char *key)
{
    time_t now = time(NULL);
    token **pp = &u->tokens;
    while (*pp) {
        token *t = *pp;
        if (t->expires <= now) { /* prune expired ones as we walk */
            *pp = t->next;
            free(t->key);
            free(t->value);
            free(t);
            continue;
        }
        if (strcmp(t->key, key) == 0)
            return pp;
        pp = &t->next;
    }
    return NULL;
}

static void token_key(const ureq *r, const char *scope, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s|%s", r->spec.conf->url, scope);
}

static const char *token_lookup(upstream *u, const char *key)
{
    token **pp = token_slot(u, key);
    return pp ? (*pp)->value : NULL;
}

static void token_drop(upstream *u, const char *key)
{
    token **pp = token_slot(u, key);
    if (pp) {
        token *t = *pp;
        *pp = t->next;
        free(t->key);
        free(t->value);
        free(t);
    }
}

static void token_store(upstream *u, const char *key, const char *value, long ttl)
{
    token_drop(u, key);
    token *t = calloc(1, sizeof(*t));
    if (!t)
        abort();
    t->key = xstrdup(key);
    t->value = xstrdup(value);
    /* Renew a little early so a token never expires in flight. */
    t->expires = time(NULL) + (ttl > 20 ? ttl - 10 : ttl);
    t->next = u->tokens;
    u->tokens = t;
}

static void default_scope(const ureq *r, char *out, size_t outlen)
{
    snprintf(out, outlen, "repository:%s:pull", r->spec.repository);
}

/* ---------- WWW-Authenticate ---------- */

/* Finds auth-param `name` in a challenge's parameter list (RFC 9110 11.2):
 * name=token or name="quoted string" separated by commas. libcurl answers
 * challenges itself but does not expose Bearer realms, hence this parser. */
static int challenge_param(const char *params, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    const char *p = params;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        const char *key = p;
        while (*p && *p != '=' && *p != ',')
            p++;
        if (*p != '=')
            return -1;
        size_t klen = (size_t)(p - key);
        p++;
        size_t n = 0;
        int match = klen == nlen && strncasecmp(key, name, nlen) == 0;
        if (*p == '"') {
            p++;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1])
                    p++;
                if (match && n + 1 < outlen)
                    out[n++] = *p;
                p++;
            }
            if (*p != '"')
                return -1;
            p++;
        } else {
            while (*p && *p != ',' && *p != ' ') {
                if (match && n + 1 < outlen)
                    out[n++] = *p;
                p++;
            }
        }
        if (match) {
            out[n] = 0;
            return 0;
        }
    }
    return -1;
}

static int challenge_is(const char *challenge, const char *scheme)
{
    size_t n = strlen(scheme);
    return strncasecmp(challenge, scheme, n) == 0 && (challenge[n] == ' ' || challenge[n] == 0);
}

/* ---------- libcurl callbacks ---------- */

static void capture_header(CURL *easy, const char *name, char *out, size_t outlen)
{
    struct curl_header *h;
    out[0] = 0;
    if (curl_easy_header(easy, name, 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
        snprintf(out, outlen, "%s", h->value);
}

static int64_t header_int(CURL *easy, const char *name)
{
    char buf[32];
    capture_header(easy, name, buf, sizeof(buf));
    if (!buf[0])
        return -1;
    char *end;
    long long v = strtoll(buf, &end, 10);
    return (*end == 0 && v >= 0) ? v : -1;
}

/* Total length from "bytes a-b/total"; -1 if absent or "*". */
static int64_t content_range_total(CURL *easy, uint64_t *first)
{
    char buf[96];
    capture_header(easy, "Content-Range", buf, sizeof(buf));
    unsigned long long a, b, total;
    if (sscanf(buf, "bytes %llu-%llu/%llu", &a, &b, &total) != 3)
        return -1;
    *first = a;
    return (int64_t)total;
}

static void note_sluice(upstream *u, const config_upstream *conf)
{
    pthread_mutex_lock(&u->mu);
    for (size_t i = 0; i < CONFIG_MAX_UPSTREAMS; i++) {
        if (u->sluices[i] == conf)
            break;
        if (!u->sluices[i]) {
            u->sluices[i] = conf;
            break;
        }
    }
    pthread_mutex_unlock(&u->mu);
}

int upstream_is_sluice(upstream *u, const config_upstream *conf)
{
    int yes = 0;
    pthread_mutex_lock(&u->mu);
    for (size_t i = 0; i < CONFIG_MAX_UPSTREAMS && u->sluices[i] && !yes; i++)
        yes = u->sluices[i] == conf;
    pthread_mutex_unlock(&u->mu);
    return yes;
}

static void on_success_headers(ureq *r)
{
    CURL *e = r->easy;
    r->skip = 0;
    if (r->headers_delivered) {
        /* A resumed attempt: 206 must start where we stopped; 200 restarts. */
        uint64_t first = 0;
        if (r->status == 206 && content_range_total(e, &first) >= 0 && first == r->delivered)
            return;
        r->skip = r->delivered;
        return;
    }
    r->resp.status = r->status;
    r->resp.content_length = header_int(e, "Content-Length");
    if (r->delivered > 0) { /* asked to start mid-body (spec.offset) */
        uint64_t first = 0;
        int64_t total = r->status == 206 ? content_range_total(e, &first) : -1;
        if (r->status != 206)
            r->skip = r->delivered; /* the whole body: drop what we have */
        else if (total >= 0 && first == r->delivered)
            r->resp.content_length = total;
        else
            r->broken = 1; /* a range we did not ask for */
    }
    capture_header(e, "Content-Type", r->resp.content_type, sizeof(r->resp.content_type));
    capture_header(e, "Docker-Content-Digest", r->resp.docker_content_digest,
                   sizeof(r->resp.docker_content_digest));
    capture_header(e, "IM", r->resp.im, sizeof(r->resp.im));
    char caps[128];
    capture_header(e, SLUICE_CAPABILITIES_HEADER, caps, sizeof(caps));
    if (caps[0])
        note_sluice(r->u, r->spec.conf);
    r->headers_delivered = 1;
    if (r->cb.on_headers)
        r->cb.on_headers(r->arg, &r->resp);
}

static size_t header_cb(char *buf, size_t size, size_t n, void *userp)
{
    ureq *r = userp;
    size_t len = size * n;
    if (len > 2 || (len == 2 && buf[0] != '\r') || (len == 1 && buf[0] != '\n'))
        return len; /* only the blank line ending a header block matters */
    long code = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code == 100)
        return len;
    r->status = (int)code;
    if (code == 401) {
        char ch[1024];
        capture_header(r->easy, "WWW-Authenticate", ch, sizeof(ch));
        free(r->challenge);
        r->challenge = xstrdup(ch);
    } else if (code >= 200 && code < 300) {
        on_success_headers(r);
    }
    return len;
}

static size_t write_cb(char *data, size_t size, size_t n, void *userp)
{
    ureq *r = userp;
    size_t len = size * n;
    if (r->status < 200 || r->status >= 300 || r->broken)
        return len; /* body of an error answer: not the consumer's */
    size_t skip = r->skip < len ? (size_t)r->skip : len;
    if (skip) {
        r->skip -= skip;
        data += skip;
        if (skip == len)
            return len;
    }
    size_t give = len - skip;
    if (r->cb.on_data && !r->cb.on_data(r->arg, data, give)) {
        r->skip += skip; /* offered again in full on unpause */
        return CURL_WRITEFUNC_PAUSE;
    }
    r->delivered += give;
    METRIC_ADD(upstream_bytes, give);
    return len;
}

/* ---------- attempts ---------- */

static void free_attempt(ureq *r)
{
    if (r->easy) {
        curl_multi_remove_handle(r->u->multi, r->easy);
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
    }
    curl_slist_free_all(r->headers);
    r->headers = NULL;
}

/* ---------- circuit breaker (upstream thread only) ---------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct breaker *breaker_of(upstream *u, const config_upstream *conf)
{
    for (size_t i = 0; i < CONFIG_MAX_UPSTREAMS; i++)
        if (u->breakers[i].conf == conf || !u->breakers[i].conf) {
            u->breakers[i].conf = conf;
            return &u->breakers[i];
        }
    return NULL;
}

static int breaker_open(upstream *u, const config_upstream *conf)
{
    struct breaker *b = breaker_of(u, conf);
    return b && b->until_ms > now_ms();
}

/* A request ended: no answer at all trips the breaker, any answer resets it. */
static void breaker_note(ureq *r, upstream_result result)
{
    struct breaker *b = breaker_of(r->u, r->spec.conf);
    if (!b || result == UPSTREAM_CANCELLED || result == UPSTREAM_OFFLINE)
        return;
    int no_answer = r->status == 0 && !r->headers_delivered &&
                    (result == UPSTREAM_UNAVAILABLE || result == UPSTREAM_TIMEOUT);
    if (no_answer && r->spec.conf->breaker) {
        if (b->until_ms <= now_ms())
            log_warn("upstream", "%s unreachable: answering from the cache for %us",
                     r->spec.conf->url, r->spec.conf->breaker);
        b->until_ms = now_ms() + (int64_t)r->spec.conf->breaker * 1000;
    } else if (!no_answer) {
        b->until_ms = 0;
    }
}

static void finish(ureq *r, upstream_result result)
{
    upstream *u = r->u;
    if (r->attempted)
        breaker_note(r, result);
    free_attempt(r);
    live_remove(u, r);
    for (ureq *o = u->live; o; o = o->next)
        if (o->waiter == r) /* its token request outlives it: detach */
            o->waiter = NULL;
    if (r->retry_timer)
        event_free(r->retry_timer);
    if (result != UPSTREAM_OK && result != UPSTREAM_NOT_FOUND && result != UPSTREAM_CANCELLED)
        METRIC_ADD(upstream_errors, 1);
    if (r->cb.on_done)
        r->cb.on_done(r->arg, result, &r->resp);
    free(r->challenge);
    free(r->token_scope);
    free(r->body);
    free(r->url);
    free(r->redirect);
    free(r);
}

static void add_header(ureq *r, const char *fmt, const char *value)
{
    char line[4096];
    snprintf(line, sizeof(line), fmt, value);
    struct curl_slist *l = curl_slist_append(r->headers, line);
    if (!l)
        abort();
    r->headers = l;
}

static void set_auth(ureq *r, CURL *e)
{
    const config_upstream *c = r->spec.conf;
    if (r->use_basic && c->username) {
        curl_easy_setopt(e, CURLOPT_USERNAME, c->username);
        curl_easy_setopt(e, CURLOPT_PASSWORD, c->password ? c->password : "");
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        return;
    }
    char scope[512], key[1024];
    if (r->token_scope)
        snprintf(scope, sizeof(scope), "%s", r->token_scope);
    else
        default_scope(r, scope, sizeof(scope));
    token_key(r, scope, key, sizeof(key));
    const char *tok = token_lookup(r->u, key);
    if (tok)
        add_header(r, "Authorization: Bearer %s", tok);
}

static void configure_easy(ureq *r, CURL *e, const char *url)
{
    const config_upstream *c = r->spec.conf;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    /* Redirects are followed by finish_attempt, never with credentials. */
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)c->connect_timeout);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)c->transfer_timeout);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "sluice/0.1");
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, c->tls_verify ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, c->tls_verify ? 2L : 0L);
    if (c->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
}

static void start_attempt(ureq *r)
{
    CURL *e = curl_easy_init();
    if (!e) {
        finish(r, UPSTREAM_UNAVAILABLE);
        return;
    }
    r->easy = e;
    r->attempted = 1;
    r->status = 0;
    r->attempt_start = r->delivered;
    r->skip = 0;
    char url[4096];
    if (r->redirect)
        snprintf(url, sizeof(url), "%s", r->redirect);
    else
        snprintf(url, sizeof(url), "%s%s", r->url ? "" : r->spec.conf->url,
                 r->url ? r->url : r->spec.path);
    configure_easy(r, e, url);
    if (r->spec.head)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    if (r->spec.accept)
        add_header(r, "Accept: %s", r->spec.accept);
    if (r->spec.a_im) {
        add_header(r, "A-IM: %s", r->spec.a_im);
        add_header(r, "If-None-Match: %s", r->spec.if_none_match);
    }
    if (r->delivered > 0) {
        char range[64];
        snprintf(range, sizeof(range), "%llu-", (unsigned long long)r->delivered);
        curl_easy_setopt(e, CURLOPT_RANGE, range);
        METRIC_ADD(upstream_resumes, 1);
    }
    if (r->redirect) {
        /* object storage: its URL carries its own authorization */
    } else if (!r->url) { /* a token request authenticates with Basic, if anything */
        set_auth(r, e);
    } else if (r->spec.conf->username) {
        curl_easy_setopt(e, CURLOPT_USERNAME, r->spec.conf->username);
        curl_easy_setopt(e, CURLOPT_PASSWORD, r->spec.conf->password ? r->spec.conf->password : "");
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    METRIC_ADD(upstream_requests, 1);
    if (curl_multi_add_handle(r->u->multi, e) != CURLM_OK)
        finish(r, UPSTREAM_UNAVAILABLE);
}

static void retry_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_attempt(arg);
}

/* Retries after a backoff, or fails with `result` when retries are spent. A
 * request that already gave the consumer bytes can continue only if it is
 * resumable. Progress made by this attempt earns the retries back. */
static void retry_or_fail(ureq *r, upstream_result result)
{
    free_attempt(r);
    /* Start over at the registry: a storage URL may have expired. */
    free(r->redirect);
    r->redirect = NULL;
    r->redirects = 0;
    if (r->delivered > r->attempt_start)
        r->attempt = 0;
    if (r->spec.no_retry || r->attempt >= r->spec.conf->retries ||
        (r->headers_delivered && r->delivered > 0 && !r->spec.resumable) || r->u->stopping) {
        finish(r, result);
        return;
    }
    unsigned delay = BACKOFF_BASE_MS << (r->attempt < 6 ? r->attempt : 6);
    r->attempt++;
    METRIC_ADD(upstream_retries, 1);
    if (!r->retry_timer)
        r->retry_timer = evtimer_new(r->u->base, retry_fire, r);
    struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
    evtimer_add(r->retry_timer, &tv);
}

/* ---------- tokens ---------- */

static int token_on_data(void *arg, const void *data, size_t len)
{
    ureq *t = arg;
    if (t->body_len + len > TOKEN_MAX_BODY)
        return 1; /* drop: the parse below fails and the waiter is denied */
    char *nb = realloc(t->body, t->body_len + len + 1);
    if (!nb)
        abort();
    memcpy(nb + t->body_len, data, len);
    t->body = nb;
    t->body_len += len;
    t->body[t->body_len] = 0;
    return 1;
}

static int parse_token(const char *body, size_t len, char **value, long *ttl)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!root)
        return -1;
    const char *tok = json_string_value(json_object_get(root, "token"));
    if (!tok)
        tok = json_string_value(json_object_get(root, "access_token"));
    json_t *exp = json_object_get(root, "expires_in");
    *ttl = json_is_integer(exp) ? (long)json_integer_value(exp) : 60;
    if (*ttl < 1)
        *ttl = 60;
    *value = tok ? xstrdup(tok) : NULL;
    json_decref(root);
    return tok ? 0 : -1;
}

static void token_on_done(void *arg, upstream_result result, const upstream_response *resp)
{
    (void)resp;
    ureq *t = arg;
    ureq *r = t->waiter;
    if (!r)
        return;
    char *value = NULL;
    long ttl = 0;
    if (result != UPSTREAM_OK || !t->body || parse_token(t->body, t->body_len, &value, &ttl)) {
        finish(r, result == UPSTREAM_CANCELLED ? UPSTREAM_CANCELLED : UPSTREAM_DENIED);
        return;
    }
    char key[1024];
    token_key(r, r->token_scope, key, sizeof(key));
    token_store(r->u, key, value, ttl);
    free(value);
    start_attempt(r);
}

static ureq *new_ureq(upstream *u, const upstream_request *spec, const upstream_callbacks *cb,
                      void *arg)
{
    ureq *r = calloc(1, sizeof(*r));
    if (!r)
        abort();
    r->u = u;
    r->spec = *spec;
    r->cb = *cb;
    r->arg = arg;
    r->resp.content_length = -1;
    r->delivered = spec->offset;
    return r;
}

/* Starts a token request for r's Bearer challenge; r waits without an easy
 * handle until token_on_done restarts it. */
static int request_token(ureq *r)
{
    char realm[1024], service[256] = "", scope[512];
    const char *params = r->challenge + strlen("Bearer");
    if (challenge_param(params, "realm", realm, sizeof(realm)) != 0)
        return -1;
    challenge_param(params, "service", service, sizeof(service));
    if (challenge_param(params, "scope", scope, sizeof(scope)) != 0)
        default_scope(r, scope, sizeof(scope));
    free(r->token_scope);
    r->token_scope = xstrdup(scope);

    static const upstream_callbacks token_cb = {NULL, token_on_data, token_on_done};
    upstream_request spec = {.conf = r->spec.conf, .accept = "application/json"};
    ureq *t = new_ureq(r->u, &spec, &token_cb, NULL);
    t->arg = t;
    t->waiter = r;
    char *s_service = curl_easy_escape(NULL, service, 0);
    char *s_scope = curl_easy_escape(NULL, scope, 0);
    size_t n = strlen(realm) + strlen(s_service) + strlen(s_scope) + 32;
    t->url = malloc(n);
    if (!t->url)
        abort();
    snprintf(t->url, n, "%s%sservice=%s&scope=%s", realm, strchr(realm, '?') ? "&" : "?", s_service,
             s_scope);
    curl_free(s_service);
    curl_free(s_scope);
    t->id = take_id(r->u);
    live_add(r->u, t);
    start_attempt(t);
    return 0;
}

/* A 401: answer the challenge once, else the upstream denies us. */
static void handle_unauthorized(ureq *r)
{
    free_attempt(r);
    if (r->auth_retried || r->url || !r->challenge) {
        finish(r, UPSTREAM_DENIED);
        return;
    }
    r->auth_retried = 1;
    if (r->token_scope) { /* a cached token was refused: forget it */
        char key[1024];
        token_key(r, r->token_scope, key, sizeof(key));
        token_drop(r->u, key);
    }
    if (challenge_is(r->challenge, "Bearer")) {
        if (request_token(r) != 0)
            finish(r, UPSTREAM_DENIED);
        return;
    }
    if (challenge_is(r->challenge, "Basic") && r->spec.conf->username) {
        r->use_basic = 1;
        start_attempt(r);
        return;
    }
    finish(r, UPSTREAM_DENIED);
}

static int is_redirect(int st)
{
    return st == 301 || st == 302 || st == 303 || st == 307 || st == 308;
}

/* Follows a redirect (e.g. a registry's 307 to object storage) as a new
 * attempt to the absolute Location, without the Authorization header. */
static void follow_redirect(ureq *r)
{
    char *target = NULL;
    curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_URL, &target);
    if (!target || r->redirects >= MAX_REDIRECTS) {
        free_attempt(r);
        finish(r, UPSTREAM_BAD_RESPONSE);
        return;
    }
    char *next = xstrdup(target); /* owned by the easy handle freed below */
    free_attempt(r);
    free(r->redirect);
    r->redirect = next;
    r->redirects++;
    start_attempt(r);
}

static void finish_attempt(ureq *r, CURLcode code)
{
    if (code == CURLE_OK) {
        int st = r->status;
        if (is_redirect(st)) {
            follow_redirect(r);
        } else if (r->broken) {
            free_attempt(r);
            finish(r, UPSTREAM_BAD_RESPONSE);
        } else if (st >= 200 && st < 300) {
            free_attempt(r);
            finish(r, UPSTREAM_OK);
        } else if (st == 401) {
            handle_unauthorized(r);
        } else if (st == 404) {
            free_attempt(r);
            finish(r, UPSTREAM_NOT_FOUND);
        } else if (st == 403) {
            free_attempt(r);
            finish(r, UPSTREAM_DENIED);
        } else if (st == 429) {
            retry_or_fail(r, UPSTREAM_TOO_MANY);
        } else if (st >= 500) {
            retry_or_fail(r, UPSTREAM_UNAVAILABLE);
        } else {
            free_attempt(r);
            finish(r, UPSTREAM_BAD_RESPONSE);
        }
        return;
    }
    if (code == CURLE_OPERATION_TIMEDOUT)
        retry_or_fail(r, UPSTREAM_TIMEOUT);
    else
        retry_or_fail(r, UPSTREAM_UNAVAILABLE);
}

/* ---------- libcurl multi-socket glue ---------- */

static void check_multi(upstream *u)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(u->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        ureq *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        finish_attempt(r, m->data.result);
    }
}

static void socket_event(evutil_socket_t fd, short what, void *arg)
{
    upstream *u = arg;
    int flags = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(u->multi, fd, flags, &running);
    check_multi(u);
}

static void timer_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    upstream *u = arg;
    int running;
    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi(u);
}

static int socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)e;
    upstream *u = userp;
    sock_watch *w = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (w) {
            event_free(w->ev);
            free(w);
        }
        curl_multi_assign(u->multi, s, NULL);
        return 0;
    }
    short kind =
        EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (!w) {
        w = calloc(1, sizeof(*w));
        if (!w)
            abort();
        w->fd = s;
        curl_multi_assign(u->multi, s, w);
    } else {
        event_free(w->ev);
    }
    w->ev = event_new(u->base, s, kind, socket_event, u);
    event_add(w->ev, NULL);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    upstream *u = userp;
    if (timeout_ms < 0) {
        evtimer_del(u->timer);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(u->timer, &tv);
    return 0;
}

/* ---------- the thread and its mailbox ---------- */

static void cancel_unstarted(ureq *r);

/* Hands m to the loop; after upstream_stop a submission is cancelled here. */
static void post(upstream *u, msg *m)
{
    pthread_mutex_lock(&u->mu);
    if (u->stopping) {
        pthread_mutex_unlock(&u->mu);
        if (m->type == MSG_SUBMIT)
            cancel_unstarted(m->req);
        free(m);
        return;
    }
    if (u->msgs_tail)
        u->msgs_tail->next = m;
    else
        u->msgs = m;
    u->msgs_tail = m;
    pthread_mutex_unlock(&u->mu);
    event_active(u->wake, EV_READ, 0);
}

static void handle_msg(upstream *u, msg *m)
{
    if (m->type == MSG_SUBMIT) {
        live_add(u, m->req);
        if (u->stopping)
            finish(m->req, UPSTREAM_CANCELLED);
        else if (u->offline)
            finish(m->req, UPSTREAM_OFFLINE);
        else if (breaker_open(u, m->req->spec.conf))
            finish(m->req, UPSTREAM_UNAVAILABLE);
        else
            start_attempt(m->req);
        return;
    }
    ureq *r = live_find(u, m->id);
    if (!r)
        return;
    if (m->type == MSG_UNPAUSE && r->easy)
        curl_easy_pause(r->easy, CURLPAUSE_CONT);
    else if (m->type == MSG_CANCEL)
        finish(r, UPSTREAM_CANCELLED);
}

static void cancel_all(upstream *u)
{
    /* Token requests finish their waiter too: restart the walk each time. */
    while (u->live)
        finish(u->live, UPSTREAM_CANCELLED);
}

static void wake_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    upstream *u = arg;
    pthread_mutex_lock(&u->mu);
    msg *m = u->msgs;
    u->msgs = u->msgs_tail = NULL;
    int stopping = u->stopping;
    pthread_mutex_unlock(&u->mu);
    while (m) {
        msg *next = m->next;
        handle_msg(u, m);
        free(m);
        m = next;
    }
    check_multi(u);
    if (stopping) {
        cancel_all(u);
        event_base_loopbreak(u->base);
    }
}

static void *upstream_main(void *arg)
{
    upstream *u = arg;
    pthread_setname_np(pthread_self(), "sluice-upstrm");
    event_base_loop(u->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

upstream *upstream_start(int offline)
{
    upstream *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->offline = offline;
    pthread_mutex_init(&u->mu, NULL);
    u->base = event_base_new();
    u->multi = curl_multi_init();
    if (!u->base || !u->multi)
        goto fail;
    u->wake = event_new(u->base, -1, 0, wake_event, u);
    u->timer = evtimer_new(u->base, timer_event, u);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 32L);
    if (pthread_create(&u->thread, NULL, upstream_main, u) != 0)
        goto fail;
    return u;
fail:
    if (u->multi)
        curl_multi_cleanup(u->multi);
    if (u->base)
        event_base_free(u->base);
    free(u);
    return NULL;
}

/* A request that never reached the loop, cancelled on the caller's thread. */
static void cancel_unstarted(ureq *r)
{
    if (r->cb.on_done)
        r->cb.on_done(r->arg, UPSTREAM_CANCELLED, &r->resp);
    free(r);
}

void upstream_stop(upstream *u)
{
    pthread_mutex_lock(&u->mu);
    u->stopping = 1;
    pthread_mutex_unlock(&u->mu);
    event_active(u->wake, EV_READ, 0); /* the loop cancels what is live */
    pthread_join(u->thread, NULL);
    /* Requests submitted after the last wake: cancel them too. */
    pthread_mutex_lock(&u->mu);
    msg *m = u->msgs;
    u->msgs = u->msgs_tail = NULL;
    pthread_mutex_unlock(&u->mu);
    for (msg *next; m; m = next) {
        next = m->next;
        if (m->type == MSG_SUBMIT)
            cancel_unstarted(m->req);
        free(m);
    }
}

void upstream_free(upstream *u)
{
    for (msg *m = u->msgs, *next; m; m = next) { /* unpause/cancel after stop */
        next = m->next;
        free(m);
    }
    while (u->tokens)
        token_drop(u, u->tokens->key);
    event_free(u->wake);
    event_free(u->timer);
    curl_multi_cleanup(u->multi);
    event_base_free(u->base);
    pthread_mutex_destroy(&u->mu);
    free(u);
}

void upstream_submit(upstream *u, const upstream_request *req, const upstream_callbacks *cb,
                     void *arg, uint64_t *id)
{
    ureq *r = new_ureq(u, req, cb, arg);
    r->id = take_id(u);
    if (id)
        *id = r->id; /* before post: r may be finished and freed right after */
    msg *m = calloc(1, sizeof(*m));
    if (!m)
        abort();
    m->type = MSG_SUBMIT;
    m->req = r;
    m->id = r->id;
    post(u, m);
}

static void post_id(upstream *u, msg_type type, uint64_t id)
{
    msg *m = calloc(1, sizeof(*m));
    if (!m)
        abort();
    m->type = type;
    m->id = id;
    post(u, m);
}

void upstream_unpause(upstream *u, uint64_t id)
{
    post_id(u, MSG_UNPAUSE, id);
}

void upstream_cancel(upstream *u, uint64_t id)
{
    post_id(u, MSG_CANCEL, id);
}
