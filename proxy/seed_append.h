/*
 * seed_append.h — a committer thread for bulk blob writes (private to
 * proxy/, used by `sluice seed`): while it appends one batch to the cache
 * (a write transaction and its fsync), the caller reads and hashes the next
 * one into the other of two SEED_BATCH buffers.
 */
#ifndef SLUICE_SEED_APPEND_H
#define SLUICE_SEED_APPEND_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"

typedef struct seed_appender seed_appender;

/* Starts the thread with two buffers of `batch` bytes; NULL on failure. */
seed_appender *seed_appender_new(cache *c, size_t batch);
/* Waits for the last batch, stops the thread, frees everything. */
void seed_appender_free(seed_appender *a);
/* The buffer to fill now. */
uint8_t *seed_appender_buf(seed_appender *a);
/* Hands the filled buffer (len bytes: whole chunks, or the blob's last
 * bytes) to the thread as chunks index, index + 1, ... of digest, after the
 * previous batch is done; the caller then fills seed_appender_buf() again.
 * Returns the previous batch's status (CACHE_OK, or why it failed: then
 * this one is not queued). */
cache_status seed_appender_submit(seed_appender *a, const uint8_t *digest, uint32_t index,
                                  size_t len);
/* Waits until the queued batch is written; its status. */
cache_status seed_appender_wait(seed_appender *a);

#endif
