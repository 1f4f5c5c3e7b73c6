/*
 * metrics.h — process-wide counters for /metrics (Prometheus text format).
 *
 * Every counter is a relaxed atomic: any thread may bump any counter without
 * locks, and the renderer reads a consistent-enough view (each value is exact,
 * the set is not a snapshot, which Prometheus does not require).
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

struct evbuffer;

typedef enum {
    ROUTE_BASE,
    ROUTE_MANIFEST,
    ROUTE_BLOB,
    ROUTE_TAGS,
    ROUTE_REFERRERS,
    ROUTE_UPLOAD,
    ROUTE_METRICS,
    ROUTE_HEALTH,
    ROUTE_OTHER,
    ROUTE_COUNT
} metrics_route;

typedef enum { KIND_BLOB, KIND_MANIFEST, KIND_COUNT } metrics_kind;

#define METRICS_STATUS_SLOTS 16

typedef struct {
    atomic_uint_fast64_t requests[ROUTE_COUNT][METRICS_STATUS_SLOTS];
    atomic_uint_fast64_t cache_hits[KIND_COUNT];
    atomic_uint_fast64_t cache_misses[KIND_COUNT];
    atomic_uint_fast64_t bytes_served;
    atomic_uint_fast64_t upstream_requests;
    atomic_uint_fast64_t upstream_bytes;
    atomic_uint_fast64_t upstream_errors;
    atomic_uint_fast64_t upstream_retries;
    atomic_uint_fast64_t upstream_resumes;
    atomic_int_fast64_t inflight_transfers;
    atomic_uint_fast64_t coalesced_waiters;
    atomic_uint_fast64_t corrupt_evictions;
    atomic_uint_fast64_t digest_mismatches;
    atomic_uint_fast64_t denied;
    atomic_uint_fast64_t trust_verifications;   /* signature evaluations run by the daemon */
    atomic_uint_fast64_t trust_verdicts_reused; /* decisions taken from the cache's verdicts */
    atomic_uint_fast64_t deltas_served[3];      /* dcz, vcdiff, sluice-bsz */
    atomic_uint_fast64_t delta_bytes_saved;
    atomic_uint_fast64_t delta_computed;
    atomic_uint_fast64_t delta_compute_ms;
    atomic_uint_fast64_t delta_cache_hits;
    atomic_uint_fast64_t delta_fallbacks;        /* delta wanted, full blob served */
    atomic_uint_fast64_t parent_deltas_applied;  /* child mode: deltas rebuilt and verified */
    atomic_uint_fast64_t parent_deltas_rejected; /* child mode: bad deltas, full blob fetched */
    atomic_int_fast64_t requests_in_progress;
} metrics;

extern metrics g_metrics;

#define METRIC_ADD(field, n) atomic_fetch_add_explicit(&g_metrics.field, (n), memory_order_relaxed)

void metrics_count_request(metrics_route route, int status);
/* Appends the whole exposition; cache_bytes is the store's current size. */
void metrics_render(struct evbuffer *out, uint64_t cache_bytes, uint64_t cache_blobs);
const char *metrics_route_name(metrics_route route);

#endif
