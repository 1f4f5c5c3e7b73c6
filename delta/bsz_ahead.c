/*
 * bsz_ahead.c — a bsz stream decoded ahead of its reader, on a thread of its
 * own, so that a decoder's LZMA2 work overlaps the rest of its work.
 *
 * Why: replaying a bsz delta of a module spends about a third of its time
 * decoding LZMA2 (the non-zero differences and their run lengths: 3-5 ms of
 * a 15-25 ms decode of a 2-5 MB module) and the rest copying and
 * transforming the base, adding the differences, checking CRC-64 and
 * writing out; the two do not depend on each other's timing, so on a
 * machine with a second core the LZMA2 time mostly disappears.
 *
 * How it works: bsz_ahead_start() takes over a bsz_reader and starts a
 * thread that pulls the whole stream from it into one buffer of the
 * stream's raw length (its pages are touched only as bytes arrive) and
 * publishes how much is ready after every piece. The consumer reads from
 * the buffer up to the published length without locking; only when it
 * catches up does it wait on the condition variable. The thread stays at
 * most a window (BSZ_AHEAD_WINDOW in the decoder) ahead of what the
 * consumer has taken, which the consumer publishes as it goes, waking the
 * thread only if it waits: a hostile stream that decodes to far more than
 * the replay accepts costs no more than the window before the replay finds
 * it out. The thread ends at
 * the end of the stream (after checking that the coder finished exactly
 * there, as bsz_reader_done does), on a corrupt payload, or when
 * bsz_ahead_free() cancels it; bsz_ahead_free() always joins it before
 * freeing anything. The decoder decides which streams are worth a thread
 * (bsz_decode.c) and falls back to reading in line when a thread cannot be
 * started.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bsz_format.h"

#define PIECE (32u * 1024u)

enum { RUNNING = 0, COMPLETE = 1, CORRUPT = -1 };

struct bsz_ahead {
    bsz_reader *src; /* the thread's alone until joined */
    uint8_t *buf;    /* dmem, len bytes */
    uint64_t len;
    uint64_t window;          /* how far the thread may run ahead of the consumer */
    uint64_t pos;             /* consumer: next byte to hand out */
    uint64_t seen;            /* consumer: ready as last read */
    uint64_t published;       /* consumer: taken as last stored */
    _Atomic uint64_t ready;   /* bytes decoded, published after each piece */
    _Atomic uint64_t taken;   /* pos, published by the consumer */
    _Atomic int thread_waits; /* the thread waits for room in the window */
    pthread_mutex_t mu;       /* guards status and cancel; with cv (data) and room */
    pthread_cond_t cv, room;
    int status, cancel;
    pthread_t thread;
};

static void publish(bsz_ahead *a, uint64_t ready, int status)
{
    pthread_mutex_lock(&a->mu);
    atomic_store_explicit(&a->ready, ready, memory_order_release);
    if (status != RUNNING)
        a->status = status;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static int cancelled(bsz_ahead *a)
{
    pthread_mutex_lock(&a->mu);
    int c = a->cancel;
    pthread_mutex_unlock(&a->mu);
    return c;
}

/* The thread: waits while it is a window ahead of the consumer; 0 if
 * cancelled meanwhile. (thread_waits is set before the check and taken is
 * set before the consumer reads thread_waits, both sequentially
 * consistent, so either the thread sees the consumer's progress or the
 * consumer sees it waiting and signals, under the lock it waits with.) */
static int wait_for_room(bsz_ahead *a, uint64_t got)
{
    if (got - atomic_load(&a->taken) < a->window)
        return 1;
    pthread_mutex_lock(&a->mu);
    atomic_store(&a->thread_waits, 1);
    while (!a->cancel && got - atomic_load(&a->taken) >= a->window)
        pthread_cond_wait(&a->room, &a->mu);
    atomic_store(&a->thread_waits, 0);
    int go = !a->cancel;
    pthread_mutex_unlock(&a->mu);
    return go;
}

/* The consumer: publishes how far it has read, waking the thread if it waits. */
static void publish_taken(bsz_ahead *a)
{
    a->published = a->pos;
    atomic_store(&a->taken, a->pos);
    if (atomic_load(&a->thread_waits)) {
        pthread_mutex_lock(&a->mu);
        pthread_cond_signal(&a->room);
        pthread_mutex_unlock(&a->mu);
    }
}

/* After the consumer advanced: publishes every PIECE bytes (each is a
 * sequentially consistent store; the consumer takes a few bytes at a time),
 * and always before it waits (wait_for), so the two never wait for each
 * other: the thread waits only a window (>= PIECE) ahead of the published
 * position, the consumer only when fewer than 10 bytes are ready. */
static void took(bsz_ahead *a)
{
    if (a->pos - a->published >= PIECE)
        publish_taken(a);
}

static void *decode_thread(void *arg)
{
    bsz_ahead *a = arg;
    uint64_t got = 0;
    while (!cancelled(a) && wait_for_room(a, got)) {
        const uint8_t *p;
        long n = bsz_reader_get(a->src, PIECE, &p);
        if (n < 0 || (uint64_t)n > a->len - got) {
            publish(a, got, CORRUPT);
            return NULL;
        }
        if (n == 0) {
            publish(a, got, got == a->len && bsz_reader_done(a->src) ? COMPLETE : CORRUPT);
            return NULL;
        }
        memcpy(a->buf + got, p, (size_t)n);
        got += (uint64_t)n;
        publish(a, got, RUNNING);
    }
    return NULL;
}

bsz_ahead *bsz_ahead_start(bsz_reader *r, uint64_t raw_len, uint64_t window)
{
    if (raw_len > SIZE_MAX)
        return NULL;
    bsz_ahead *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->buf = dmem_alloc((size_t)raw_len);
    a->src = r;
    a->len = raw_len;
    a->window = window > PIECE ? window : PIECE;
    atomic_init(&a->ready, 0);
    atomic_init(&a->taken, 0);
    atomic_init(&a->thread_waits, 0);
    if (a->buf && pthread_mutex_init(&a->mu, NULL) == 0) {
        if (pthread_cond_init(&a->cv, NULL) == 0) {
            if (pthread_cond_init(&a->room, NULL) == 0) {
                if (pthread_create(&a->thread, NULL, decode_thread, a) == 0)
                    return a;
                pthread_cond_destroy(&a->room);
            }
            pthread_cond_destroy(&a->cv);
        }
        pthread_mutex_destroy(&a->mu);
    }
    dmem_free(a->buf);
    free(a);
    return NULL;
}

/* Waits until at least want bytes are ready from pos (want <= len - pos)
 * or the thread has ended; returns how many are ready from pos. */
static uint64_t wait_for(bsz_ahead *a, uint64_t want)
{
    if (a->seen - a->pos >= want)
        return a->seen - a->pos;
    a->seen = atomic_load_explicit(&a->ready, memory_order_acquire);
    if (a->seen - a->pos >= want)
        return a->seen - a->pos;
    publish_taken(a);
    pthread_mutex_lock(&a->mu);
    while ((a->seen = atomic_load_explicit(&a->ready, memory_order_acquire)) - a->pos < want &&
           a->status == RUNNING)
        pthread_cond_wait(&a->cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
    return a->seen - a->pos;
}

long bsz_ahead_get(bsz_ahead *a, size_t want, const uint8_t **p)
{
    if (a->pos == a->len || want == 0)
        return 0;
    uint64_t n = wait_for(a, 1);
    if (n == 0)
        return -1; /* the thread ended before the declared length */
    if (n > want)
        n = want;
    *p = a->buf + a->pos;
    a->pos += n;
    took(a);
    return (long)n;
}

int bsz_ahead_varint(bsz_ahead *a, uint64_t *v, int at_end_ok)
{
    if (a->pos == a->len)
        return at_end_ok ? 1 : -1;
    uint64_t left = a->len - a->pos;
    uint64_t n = wait_for(a, left < 10 ? left : 10);
    size_t pos = 0;
    if (n == 0 || varint_get(a->buf + a->pos, n < 10 ? (size_t)n : 10, &pos, v) != 0)
        return -1;
    a->pos += pos;
    took(a);
    return 0;
}

int bsz_ahead_done(bsz_ahead *a)
{
    if (a->pos != a->len)
        return 0;
    pthread_mutex_lock(&a->mu);
    while (a->status == RUNNING)
        pthread_cond_wait(&a->cv, &a->mu);
    int ok = a->status == COMPLETE;
    pthread_mutex_unlock(&a->mu);
    return ok;
}

void bsz_ahead_free(bsz_ahead *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->cancel = 1;
    pthread_cond_signal(&a->room);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    pthread_cond_destroy(&a->room);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    bsz_reader_free(a->src);
    dmem_free(a->buf);
    free(a);
}
