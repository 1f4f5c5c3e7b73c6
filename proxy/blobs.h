/*
 * blobs.h — whole blobs into and out of the cache, for the threads that may
 * block and hold a blob in memory: the trust verifier (signature payloads,
 * bundles, kernel modules) and the delta workers (bases and targets).
 * Never on an event loop.
 */
#ifndef SLUICE_BLOBS_H
#define SLUICE_BLOBS_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"

/* Reads COMPLETE blob `digest` (at most max bytes) into a malloc'd buffer
 * (NUL-terminated for convenience) and checks its SHA-256. 0, or -1 when
 * absent, too large, unreadable or corrupt. */
int blobs_load(cache *c, const uint8_t digest[32], size_t max, char **data, size_t *len);

/* Stores data as COMPLETE blob `digest` (the caller checked the digest). A
 * blob already complete is left alone; on failure nothing is left behind. */
int blobs_store(cache *c, const uint8_t digest[32], const void *data, size_t len);

#endif
