/*
 * fetch_http.c — the HTTP client of `sluice fetch` (see fetch.h): blocking
 * GETs with libcurl's easy API.
 *
 * How it works: one easy handle serves every request of a run, so libcurl
 * keeps the connection to the registry (or the Sluice) open between the
 * manifest and the blobs. Per request only the URL, the extra headers and
 * the callbacks change. Redirects are followed (http and https only; libcurl
 * does not send credentials to another host). Content decoding is off: a
 * `Content-Encoding: dcz` body reaches the sink as sent. The header callback
 * records the status and the headers a fetch looks at, starting afresh at
 * every status line so that a redirect's headers are forgotten; the write
 * callback counts the body bytes and hands them to the caller's sink, whose
 * non-zero return aborts the transfer. A stalled transfer (under 1 byte/s
 * for two minutes) fails rather than hanging a device for ever. Proxies come
 * from the environment (HTTPS_PROXY, NO_PROXY), as libcurl reads them.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "fetch.h"

#define USER_AGENT "sluice-fetch/0.1"
#define STALL_SECONDS 120L

struct fetch_http {
    CURL *curl;
    char *base_url;
    char errbuf[CURL_ERROR_SIZE];
};

typedef struct {
    fetch_response *r;
    fetch_sink sink;
    void *arg;
} request;

/* ---- memory buffers ---- */

int fetch_buf_add(fetch_buf *b, const void *p, size_t n)
{
    if (b->len > b->limit || n > b->limit - b->len)
        return -1;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *grown = realloc(b->p, cap);
        if (grown == NULL)
            return -1;
        b->p = grown;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

void fetch_buf_free(fetch_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int fetch_sink_buf(void *arg, const fetch_response *r, const void *p, size_t n)
{
    (void)r;
    return fetch_buf_add(arg, p, n);
}

/* ---- the handle ---- */

static int setup(fetch_http *h, int insecure, const char *cacert)
{
    CURL *c = h->curl;
    int bad = 0;
    bad |= curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_USERAGENT, USER_AGENT) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_MAXREDIRS, 8L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_HTTP_CONTENT_DECODING, 0L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, STALL_SECONDS) != CURLE_OK;
    if (insecure) {
        bad |= curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L) != CURLE_OK;
        bad |= curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L) != CURLE_OK;
    }
    if (cacert != NULL)
        bad |= curl_easy_setopt(c, CURLOPT_CAINFO, cacert) != CURLE_OK;
    return bad ? -1 : 0;
}

fetch_http *fetch_http_new(const char *base_url, int insecure, const char *cacert)
{
    fetch_http *h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    h->curl = curl_easy_init();
    h->base_url = strdup(base_url);
    if (h->curl == NULL || h->base_url == NULL || setup(h, insecure, cacert) != 0) {
        fprintf(stderr, "sluice fetch: cannot set up libcurl\n");
        fetch_http_free(h);
        return NULL;
    }
    return h;
}

void fetch_http_free(fetch_http *h)
{
    if (h == NULL)
        return;
    if (h->curl != NULL)
        curl_easy_cleanup(h->curl);
    free(h->base_url);
    free(h);
}

/* ---- callbacks ---- */

static void reset_headers(fetch_response *r)
{
    r->status = 0;
    r->content_type[0] = r->content_encoding[0] = r->im[0] = '\0';
    r->delta_base[0] = r->docker_digest[0] = '\0';
}

/* Copies a header's value, trimmed, when its name is `name`. */
static void take(const char *line, size_t n, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    if (n <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
        return;
    const char *v = line + nl + 1;
    const char *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && isspace((unsigned char)end[-1]))
        end--;
    snprintf(out, outlen, "%.*s", (int)(end - v), v);
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *arg)
{
    fetch_response *r = ((request *)arg)->r;
    size_t n = size * nmemb;
    if (n > 5 && strncmp(line, "HTTP/", 5) == 0) {
        reset_headers(r);
        const char *sp = memchr(line, ' ', n);
        r->status = sp != NULL ? strtol(sp + 1, NULL, 10) : 0;
        return n;
    }
    take(line, n, "Content-Type", r->content_type, sizeof r->content_type);
    take(line, n, "Content-Encoding", r->content_encoding, sizeof r->content_encoding);
    take(line, n, "IM", r->im, sizeof r->im);
    take(line, n, "Delta-Base", r->delta_base, sizeof r->delta_base);
    take(line, n, "Docker-Content-Digest", r->docker_digest, sizeof r->docker_digest);
    return n;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    request *q = arg;
    size_t n = size * nmemb;
    q->r->received += n;
    if (q->sink(q->arg, q->r, p, n) != 0) {
        q->r->aborted_by_sink = 1;
        return 0; /* CURLE_WRITE_ERROR */
    }
    return n;
}

/* ---- requests ---- */

static struct curl_slist *header_list(const char *const *headers, int *failed)
{
    struct curl_slist *list = NULL;
    *failed = 0;
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        struct curl_slist *next = curl_slist_append(list, headers[i]);
        if (next == NULL) {
            *failed = 1;
            break;
        }
        list = next;
    }
    return list;
}

static int set_request(fetch_http *h, const char *url, struct curl_slist *list, request *q)
{
    CURL *c = h->curl;
    int bad = 0;
    bad |= curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_HTTPGET, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_HTTPHEADER, list) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_HEADERDATA, q) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
    bad |= curl_easy_setopt(c, CURLOPT_WRITEDATA, q) != CURLE_OK;
    return bad ? -1 : 0;
}

int fetch_http_get(fetch_http *h, const char *path, const char *const *headers, fetch_sink sink,
                   void *arg, fetch_response *r)
{
    reset_headers(r);
    r->error[0] = '\0';
    r->aborted_by_sink = 0;
    r->received = 0;
    request q = {r, sink, arg};
    size_t ulen = strlen(h->base_url) + strlen(path) + 1;
    char *url = malloc(ulen);
    int failed = 0;
    struct curl_slist *list = header_list(headers, &failed);
    int rc = -1;
    if (url == NULL || failed) {
        snprintf(r->error, sizeof r->error, "out of memory");
    } else {
        snprintf(url, ulen, "%s%s", h->base_url, path);
        h->errbuf[0] = '\0';
        CURLcode cc =
            set_request(h, url, list, &q) == 0 ? curl_easy_perform(h->curl) : CURLE_FAILED_INIT;
        if (cc == CURLE_OK)
            rc = 0;
        else
            snprintf(r->error, sizeof r->error, "%s",
                     h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc));
    }
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(list);
    free(url);
    return rc;
}

/* ---- error text ---- */

/* "CODE: message; CODE: message" from an OCI error body; 0 when it is one. */
static int oci_errors(const fetch_buf *body, char *out, size_t len)
{
    json_t *doc = body->len ? json_loadb((const char *)body->p, body->len, 0, NULL) : NULL;
    json_t *errors = json_object_get(doc, "errors");
    size_t used = 0;
    int found = 0;
    for (size_t i = 0; json_is_array(errors) && i < json_array_size(errors) && used < len; i++) {
        json_t *e = json_array_get(errors, i);
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        if (code == NULL)
            continue;
        int w = snprintf(out + used, len - used, "%s%s%s%s", found ? "; " : "", code,
                         msg && *msg ? ": " : "", msg ? msg : "");
        used += w > 0 ? (size_t)w : 0;
        found = 1;
    }
    json_decref(doc);
    return found ? 0 : -1;
}

/* The body's first line, printable characters only. */
static void body_start(const fetch_buf *body, char *out, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; i < body->len && i < 200 && j + 1 < len; i++) {
        char ch = (char)body->p[i];
        if (ch == '\n')
            break;
        out[j++] = isprint((unsigned char)ch) ? ch : '?';
    }
    out[j] = '\0';
}

void fetch_http_describe(const fetch_response *r, const fetch_buf *body, char *out, size_t len)
{
    if (r->error[0]) {
        snprintf(out, len, "%s", r->error);
        return;
    }
    char detail[400] = "";
    if (body == NULL || oci_errors(body, detail, sizeof detail) != 0) {
        if (body != NULL)
            body_start(body, detail, sizeof detail);
    }
    if (r->status == 401 && detail[0] == '\0')
        snprintf(detail, sizeof detail, "authentication required (fetch pulls anonymously)");
    snprintf(out, len, "HTTP %ld%s%s", r->status, detail[0] ? ": " : "", detail);
}
