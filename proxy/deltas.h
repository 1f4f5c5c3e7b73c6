/*
 * deltas.h — serving binary deltas: a client that holds version N of a blob
 * gets only what changed to version N+1, over the standard HTTP mechanisms.
 *
 *   RFC 9842 (Compression Dictionary Transport): the client sends
 *     Available-Dictionary: :<base64 SHA-256 of the base>:
 *     Accept-Encoding: ..., dcz
 *   and gets 200 with Content-Encoding: dcz and Vary: Accept-Encoding,
 *   Available-Dictionary; body = the 40-byte dcz header + a zstd frame with
 *   the base as prefix. RFC 9842 lets a dcz decoder refuse windows over
 *   8 MiB (log 23): Sluice compresses with a 23 window unless the request
 *   carries Sluice-Zstd-Max-Window-Log: N (a Sluice client), in which case
 *   the window fits base + target up to 2^N and the response says
 *   Sluice-Zstd-Window-Log: <log> when it is above 23.
 *   RFC 3229 (Delta encoding in HTTP): the client sends
 *     A-IM: vcdiff            (a Sluice client: A-IM: sluice-bsz, vcdiff)
 *     If-None-Match: "<base digest>"
 *   and gets 226 IM Used with IM: <codec> and Delta-Base: "<base digest>";
 *   body = a VCDIFF (RFC 3284), or Sluice's bsz format.
 * Docker-Content-Digest stays the target's digest: the client checks what it
 * rebuilds. A Range on a delta applies to the delta's bytes (206 for dcz;
 * 226 with Content-Range for the others).
 *
 * Deltas are computed on a worker pool (delta.h), once per (base, target,
 * codecs) however many clients ask, from blobs that are COMPLETE in the
 * cache, and cached there (content-addressed, indexed by base, target and
 * codec). Of the acceptable ones the smallest is served, and only if it is
 * at most `max_percent` of the target; otherwise the full blob is.
 */
#ifndef SLUICE_DELTAS_H
#define SLUICE_DELTAS_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "daemon.h"
#include "delta.h"
#include "pending.h"

struct evkeyvalq;
typedef struct deltas deltas;

enum { WANT_ZSTD = 1, WANT_VCDIFF = 2, WANT_BSZ = 4 };

typedef struct {
    unsigned codecs;              /* WANT_* the client accepts */
    uint8_t base[32];             /* the version it holds */
    unsigned zstd_max_window_log; /* DELTA_DCZ_WINDOW_LOG unless announced */
} delta_want;

typedef struct {
    delta_codec codec;
    uint8_t digest[32]; /* the delta, a COMPLETE blob in the cache */
    uint64_t size;
    unsigned window_log; /* zstd: what a decoder needs */
} delta_choice;

typedef enum { DELTAS_SERVE, DELTAS_FULL, DELTAS_PENDING } deltas_state;

/* threads 0 = one per core; max_percent: largest delta served, in percent
 * of the target's size. NULL on failure. */
deltas *deltas_new(daemon_ctx *d, unsigned threads, unsigned max_percent);
/* Shutdown, first step (loops still running): no new work, queued work
 * drained, waiters woken. */
void deltas_stop(deltas *x);
void deltas_free(deltas *x);

/* Reads the request's delta negotiation. 1 when the client asks for a delta
 * from a base it names; 0 otherwise (malformed or unknown headers included:
 * the full blob is served, never an error). */
int deltas_wanted(const struct evkeyvalq *headers, delta_want *want);

/* base and target must be COMPLETE in the cache. SERVE: *out is the delta
 * to send. FULL: none worth sending. PENDING: being computed; w waits (then
 * ask again). Reads the cache through a snapshot of its own. Any thread. */
deltas_state deltas_find(deltas *x, const delta_want *want, const uint8_t target[32],
                         uint64_t target_size, pending_waiter *w, delta_choice *out);
void deltas_cancel(deltas *x, pending_waiter *w);
/* Starts computing every codec's delta from base to target (both COMPLETE)
 * unless cached or under way; nobody waits. Any thread. */
void deltas_precompute(deltas *x, const uint8_t base[32], const uint8_t target[32]);

/* The IM / Content-Encoding token of a codec on the wire. */
const char *deltas_wire_name(delta_codec codec);

#endif
