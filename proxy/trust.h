/*
 * trust.h — invariant 2 in the daemon: a manifest is served only while its
 * verdict under the current trust policy is "allowed"; a blob only when an
 * allowed manifest of the same repository references it; in repositories
 * that require it, a kernel module only with a valid appended signature
 * from a configured certificate.
 *
 * Verdicts come from verify.h. Gathering what they need — the cosign
 * "sha256-<hex>.sig" manifest and its payload blobs, Sigstore bundles among
 * the manifest's referrers (the referrers API, else the "sha256-<hex>"
 * fallback tag) — and checking signatures is I/O and CPU work, so it runs
 * on a verifier thread; the event loops only look verdicts up. Fetched
 * signature material is cached like any other content (so the site can
 * decide offline, and devices that verify for themselves get it too).
 * Signature artifacts themselves ("evidence") are always servable.
 *
 * Verdicts are kept in memory per (repository, tag or digest-only, manifest
 * digest) under the policy generation; SIGHUP (trust_reload) drops them all.
 * Each decided verdict is also stored in the cache (cache.h's verdicts)
 * under a hash of the policy, every key, certificate and trusted root it
 * names, verify.h's revision and the module settings, with the repository,
 * the tag ("" by digest) and the manifest's digest — so a tag that moves
 * to another manifest is verified again. Before queuing a verification the
 * first question about a key looks there: a stored allowance is used as
 * long as the hash is the same (keyless ones were checked at their Rekor
 * time, not at the wall clock), except in scopes whose pki requirements
 * check certificates at the current time; a stored denial (which evidence
 * published later may lift) and a pki allowance are used for tag_ttl after
 * they were decided. So a restarted daemon serves what it allowed before
 * without verifying it again, even with the upstream gone, and a changed
 * policy (a new hash) finds nothing. The daemon drops the stored verdicts
 * of former policies when it starts and on SIGHUP; `sluice verify` shows
 * the stored verdict and stores its own decision the same way.
 */
#ifndef SLUICE_TRUST_H
#define SLUICE_TRUST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "daemon.h"
#include "pending.h"
#include "verify.h"

struct event;
typedef struct trust trust;

typedef enum { TRUST_ALLOWED, TRUST_DENIED, TRUST_PENDING } trust_state;

/* Stops waiting (no-op when not waiting). */
void trust_cancel(trust *t, pending_waiter *w);

/* Loads cfg's policy, trusted root and module certificates and starts the
 * verifier thread. With no policy, manifests are accepted (the caller logs
 * it). NULL with err set ("policy.json: $.path: what is wrong"). */
trust *trust_new(daemon_ctx *d, const config *cfg, char *err, size_t errlen);
/* Replaces the policy and module settings from cfg; every verdict made
 * under the old ones is dropped. -1 with err set keeps the old ones. */
int trust_reload(trust *t, const config *cfg, char *err, size_t errlen);
/* Shutdown, first step: runs the queued verifications, wakes every waiter;
 * later questions are answered DENIED ("shutting down"). Call while the
 * event loops still run. */
void trust_stop(trust *t);
/* Frees everything (after the loops have stopped). */
void trust_free(trust *t);
int trust_has_policy(trust *t);

/* Waiting for a decision: see pending.h (a pending_waiter waits for one
 * decision at a time; cancel it before freeing it). */

/* Whether manifest `digest` of repository `repo` at upstream `up`, requested
 * by `tag` (NULL: by digest), may be served. PENDING: a decision is being
 * made; w (if not NULL and not already waiting) waits for it. DENIED: `why`
 * says why. Cheap when the verdict is known. Any thread. */
trust_state trust_check_manifest(trust *t, const config_upstream *up, const char *repo,
                                 const char *tag, const uint8_t digest[32], pending_waiter *w,
                                 char *why, size_t whylen);

/* Whether blob `digest` of `repo` may be served (see above). `complete` says
 * whether the blob is in the cache: a kernel-module check needs the bytes,
 * so in module-signature scopes an incomplete blob is NEEDS_BYTES (fetch it
 * whole, then ask again). */
typedef enum {
    TRUST_BLOB_OK,
    TRUST_BLOB_DENIED,
    TRUST_BLOB_PENDING,
    TRUST_BLOB_NEEDS_BYTES
} trust_blob_state;
trust_blob_state trust_check_blob(trust *t, const config_upstream *up, const char *repo,
                                  const uint8_t digest[32], int complete, pending_waiter *w,
                                  char *why, size_t whylen);

/* Deciding on the calling thread, for `sluice verify REF`. Both functions
 * block (they wait for the upstream thread like the verifier does): never
 * call them on an event loop. */

/* Finds manifest `tag` of repo (tag NULL: manifest `digest`) as the daemon's
 * manifest route does: a cached tag younger than tag_ttl as it is, else the
 * upstream (what it returns is cached), else the cache. Sets digest. 0 found,
 * 1 unknown, -1 neither the upstream nor the cache could answer. */
int trust_find_manifest(trust *t, const config_upstream *up, const char *repo, const char *tag,
                        uint8_t digest[32]);

/* One line of explanation: the scope that matched, the signatures found and
 * how each one fares on its own. */
typedef void (*trust_note_fn)(void *arg, const char *line);

/* trust_check_manifest's decision, made here instead of on the verifier
 * thread and without the verdict table: the same policy lookup, evidence
 * gathering (upstream, cache) and verify.h evaluation. Fills *out (reason
 * and text, allowed or not); ALLOWED or DENIED. note (may be NULL) hears
 * the explanation. */
trust_state trust_decide_manifest(trust *t, const config_upstream *up, const char *repo,
                                  const char *tag, const uint8_t digest[32], trust_note_fn note,
                                  void *note_arg, verify_verdict *out);

#endif
