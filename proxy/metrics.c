/*
 * metrics.c — Prometheus text exposition of g_metrics.
 *
 * Request counts are kept per route and per HTTP status in a fixed table of
 * the statuses Sluice answers (anything else lands in "other"), so counting
 * is one relaxed atomic add with no allocation.
 */
#include "metrics.h"

#include <event2/buffer.h>

metrics g_metrics;

static const int status_slots[METRICS_STATUS_SLOTS] = {200, 206, 226, 304, 400, 401, 403, 404,
                                                       405, 416, 429, 500, 502, 503, 504, 0};

static const char *route_names[ROUTE_COUNT] = {"base",   "manifest", "blob",   "tags", "referrers",
                                               "upload", "metrics",  "health", "other"};

const char *metrics_route_name(metrics_route route)
{
    return route_names[route];
}

static int status_slot(int status)
{
    for (int i = 0; i < METRICS_STATUS_SLOTS - 1; i++)
        if (status_slots[i] == status)
            return i;
    return METRICS_STATUS_SLOTS - 1;
}

void metrics_count_request(metrics_route route, int status)
{
    atomic_fetch_add_explicit(&g_metrics.requests[route][status_slot(status)], 1,
                              memory_order_relaxed);
}

static uint64_t load(atomic_uint_fast64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void render_requests(struct evbuffer *out)
{
    evbuffer_add_printf(out,
                        "# HELP sluice_requests_total Requests answered, by route and status.\n"
                        "# TYPE sluice_requests_total counter\n");
    for (int r = 0; r < ROUTE_COUNT; r++) {
        for (int s = 0; s < METRICS_STATUS_SLOTS; s++) {
            uint64_t v = load(&g_metrics.requests[r][s]);
            if (v == 0)
                continue;
            if (status_slots[s])
                evbuffer_add_printf(out, "sluice_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                                    route_names[r], status_slots[s], (unsigned long long)v);
            else
                evbuffer_add_printf(out,
                                    "sluice_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                                    route_names[r], (unsigned long long)v);
        }
    }
}

static void render_kinds(struct evbuffer *out, const char *name, const char *help,
                         atomic_uint_fast64_t *values)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    evbuffer_add_printf(out, "%s{kind=\"blob\"} %llu\n", name,
                        (unsigned long long)load(&values[KIND_BLOB]));
    evbuffer_add_printf(out, "%s{kind=\"manifest\"} %llu\n", name,
                        (unsigned long long)load(&values[KIND_MANIFEST]));
}

static void render_one(struct evbuffer *out, const char *name, const char *type, const char *help,
                       long long value)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", name, help, name, type, name,
                        value);
}

void metrics_render(struct evbuffer *out, uint64_t cache_bytes, uint64_t cache_blobs)
{
    metrics *m = &g_metrics;
    render_requests(out);
    render_kinds(out, "sluice_cache_hits_total", "Requests served from the cache.", m->cache_hits);
    render_kinds(out, "sluice_cache_misses_total", "Requests that needed the upstream.",
                 m->cache_misses);
    render_one(out, "sluice_bytes_served_total", "counter", "Body bytes sent to clients.",
               (long long)load(&m->bytes_served));
    render_one(out, "sluice_upstream_requests_total", "counter", "HTTP requests sent upstream.",
               (long long)load(&m->upstream_requests));
    render_one(out, "sluice_upstream_bytes_total", "counter", "Body bytes received from upstream.",
               (long long)load(&m->upstream_bytes));
    render_one(out, "sluice_upstream_errors_total", "counter",
               "Upstream requests that failed (refused, timeout, 5xx, cut).",
               (long long)load(&m->upstream_errors));
    render_one(out, "sluice_upstream_retries_total", "counter", "Upstream requests retried.",
               (long long)load(&m->upstream_retries));
    render_one(out, "sluice_upstream_resumes_total", "counter",
               "Interrupted blob transfers resumed with a Range request.",
               (long long)load(&m->upstream_resumes));
    render_one(out, "sluice_inflight_transfers", "gauge", "Upstream transfers in progress.",
               (long long)atomic_load(&m->inflight_transfers));
    render_one(out, "sluice_coalesced_waiters_total", "counter",
               "Requests that joined a transfer already in flight.",
               (long long)load(&m->coalesced_waiters));
    render_one(out, "sluice_digest_mismatches_total", "counter",
               "Upstream bodies rejected because their digest was wrong.",
               (long long)load(&m->digest_mismatches));
    render_one(out, "sluice_denied_total", "counter",
               "Requests denied by the trust policy (403 DENIED).", (long long)load(&m->denied));
    render_one(out, "sluice_trust_verifications_total", "counter",
               "Trust decisions made by verifying signatures (manifests, kernel modules).",
               (long long)load(&m->trust_verifications));
    render_one(out, "sluice_trust_verdicts_reused_total", "counter",
               "Trust decisions taken from verdicts stored in the cache under the current policy.",
               (long long)load(&m->trust_verdicts_reused));
    evbuffer_add_printf(out, "# HELP sluice_deltas_served_total Deltas served, by codec.\n"
                             "# TYPE sluice_deltas_served_total counter\n");
    static const char *codecs[3] = {"dcz", "vcdiff", "sluice-bsz"};
    for (int i = 0; i < 3; i++)
        evbuffer_add_printf(out, "sluice_deltas_served_total{codec=\"%s\"} %llu\n", codecs[i],
                            (unsigned long long)load(&m->deltas_served[i]));
    render_one(out, "sluice_delta_bytes_saved_total", "counter",
               "Full size minus delta size, summed over deltas served.",
               (long long)load(&m->delta_bytes_saved));
    render_one(out, "sluice_deltas_computed_total", "counter", "Delta computations run.",
               (long long)load(&m->delta_computed));
    render_one(out, "sluice_delta_compute_seconds_total", "counter", "Time spent computing deltas.",
               (long long)(load(&m->delta_compute_ms) / 1000));
    render_one(out, "sluice_delta_cache_hits_total", "counter",
               "Delta requests answered from deltas already cached.",
               (long long)load(&m->delta_cache_hits));
    render_one(out, "sluice_delta_fallbacks_total", "counter",
               "Delta requests answered with the full blob (too large, too slow, failed).",
               (long long)load(&m->delta_fallbacks));
    render_one(out, "sluice_parent_deltas_applied_total", "counter",
               "Child mode: blobs rebuilt from a parent Sluice's delta and verified.",
               (long long)load(&m->parent_deltas_applied));
    render_one(out, "sluice_parent_deltas_rejected_total", "counter",
               "Child mode: deltas from the parent that failed; the full blob was fetched.",
               (long long)load(&m->parent_deltas_rejected));
    render_one(out, "sluice_corrupt_evictions_total", "counter",
               "Cached objects found corrupt at rest and evicted.",
               (long long)load(&m->corrupt_evictions));
    render_one(out, "sluice_requests_in_progress", "gauge", "Requests being answered.",
               (long long)atomic_load(&m->requests_in_progress));
    render_one(out, "sluice_cache_size_bytes", "gauge", "Bytes of complete blobs in the cache.",
               (long long)cache_bytes);
    render_one(out, "sluice_cache_blobs", "gauge", "Complete blobs in the cache.",
               (long long)cache_blobs);
}
