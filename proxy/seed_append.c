/*
 * seed_append.c — the committer thread of `sluice seed` (see
 * seed_append.h).
 *
 * How it works. Two buffers; at most one batch is queued at a time, in the
 * buffer the caller is not filling. The thread waits on a condition
 * variable for a batch, calls cache_blob_append_chunks (one write
 * transaction: LMDB's MDB_NOTLS lets any thread write) and records the
 * status; submit and wait block until the thread is idle, so cache writes
 * about one blob stay in order and the caller's other cache calls (begin,
 * complete, delete) never race a queued append.
 */
#include "seed_append.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct seed_appender {
    cache *c;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint8_t *buf[2];
    int cur; /* the buffer the caller fills */
    /* the queued batch (guarded by mu) */
    int busy, stop;
    uint8_t digest[CACHE_DIGEST_LEN];
    uint32_t index;
    size_t len;
    const uint8_t *data;
    cache_status last;
};

static void *run(void *arg)
{
    seed_appender *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->busy && !a->stop)
            pthread_cond_wait(&a->cv, &a->mu);
        if (!a->busy)
            break;
        pthread_mutex_unlock(&a->mu);
        cache_status st = cache_blob_append_chunks(a->c, a->digest, a->index, a->data, a->len);
        pthread_mutex_lock(&a->mu);
        a->last = st;
        a->busy = 0;
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

seed_appender *seed_appender_new(cache *c, size_t batch)
{
    seed_appender *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->c = c;
    a->buf[0] = malloc(batch);
    a->buf[1] = malloc(batch);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    if (a->buf[0] == NULL || a->buf[1] == NULL || pthread_create(&a->thread, NULL, run, a) != 0) {
        free(a->buf[0]);
        free(a->buf[1]);
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        free(a);
        return NULL;
    }
    return a;
}

void seed_appender_free(seed_appender *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a->buf[0]);
    free(a->buf[1]);
    free(a);
}

uint8_t *seed_appender_buf(seed_appender *a)
{
    return a->buf[a->cur];
}

/* Waits (mu held) until no batch is queued; returns and clears its status. */
static cache_status idle_locked(seed_appender *a)
{
    while (a->busy)
        pthread_cond_wait(&a->cv, &a->mu);
    cache_status st = a->last;
    a->last = CACHE_OK;
    return st;
}

cache_status seed_appender_submit(seed_appender *a, const uint8_t *digest, uint32_t index,
                                  size_t len)
{
    pthread_mutex_lock(&a->mu);
    cache_status st = idle_locked(a);
    if (st == CACHE_OK) {
        memcpy(a->digest, digest, CACHE_DIGEST_LEN);
        a->index = index;
        a->len = len;
        a->data = a->buf[a->cur];
        a->busy = 1;
        a->cur ^= 1;
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    return st;
}

cache_status seed_appender_wait(seed_appender *a)
{
    pthread_mutex_lock(&a->mu);
    cache_status st = idle_locked(a);
    pthread_mutex_unlock(&a->mu);
    return st;
}
