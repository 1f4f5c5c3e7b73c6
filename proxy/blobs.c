/*
 * blobs.c — assembles a blob's chunks into one buffer under one snapshot,
 * and writes a buffer as chunks (see blobs.h).
 */
#include "blobs.h"

#include <stdlib.h>
#include <string.h>

#include "verify.h"

static int copy_chunks(cache_snapshot *s, const uint8_t digest[32], const cache_blob_info *info,
                       char *out)
{
    size_t at = 0;
    for (uint32_t i = 0; i < info->chunks; i++) {
        const void *p;
        size_t n;
        if (cache_blob_chunk(s, digest, i, &p, &n, NULL) != CACHE_OK || at + n > info->size)
            return -1;
        memcpy(out + at, p, n);
        at += n;
    }
    return at == info->size ? 0 : -1;
}

int blobs_load(cache *c, const uint8_t digest[32], size_t max, char **data, size_t *len)
{
    cache_snapshot *s = cache_snapshot_new(c);
    if (!s)
        return -1;
    cache_blob_info info;
    char *buf = NULL;
    int rc = -1;
    if (cache_blob_stat(s, digest, &info) == CACHE_OK && info.state == CACHE_BLOB_COMPLETE &&
        info.size <= max && (buf = malloc(info.size + 1)) &&
        copy_chunks(s, digest, &info, buf) == 0 &&
        verify_digest_check(buf, info.size, digest) == VERIFY_OK) {
        buf[info.size] = 0;
        *data = buf;
        *len = info.size;
        buf = NULL;
        rc = 0;
    }
    free(buf);
    cache_snapshot_unref(s);
    return rc;
}

int blobs_store(cache *c, const uint8_t digest[32], const void *data, size_t len)
{
    int complete = 0;
    if (cache_blob_begin(c, digest, &complete) != CACHE_OK)
        return -1;
    if (complete)
        return 0;
    uint32_t i = 0;
    for (size_t at = 0; at < len; at += CACHE_CHUNK_SIZE, i++) {
        size_t n = len - at < CACHE_CHUNK_SIZE ? len - at : CACHE_CHUNK_SIZE;
        if (cache_blob_append(c, digest, i, (const char *)data + at, n) != CACHE_OK) {
            cache_blob_abort(c, digest);
            return -1;
        }
    }
    return cache_blob_complete(c, digest, len) == CACHE_OK ? 0 : -1;
}
