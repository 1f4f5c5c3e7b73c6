/*
 * pool.c — the delta worker pool: a fixed set of pthreads taking jobs from a
 * FIFO queue, so that the proxy's event loops never run an encode.
 *
 * How it works: one mutex guards a singly linked queue; submit appends and
 * signals a condition variable; each worker waits on it, pops the oldest
 * job, runs job(arg) then done(arg) without the lock held, and loops.
 * Shutdown sets a flag under the lock and broadcasts: workers keep popping
 * until the queue is empty and only then exit (the queue drains), after
 * which the threads are joined and the pool freed. Submissions after
 * shutdown started, or beyond max_queue waiting jobs, are refused.
 */
#include <pthread.h>
#include <stdlib.h>

#include "delta.h"

typedef struct job {
    struct job *next;
    delta_job_fn run, done;
    void *arg;
} job;

struct delta_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    job *head, *tail;
    size_t queued, max_queue;
    int stopping;
    unsigned nthreads;
    pthread_t *threads;
};

/* The next job, or NULL when the pool is stopping and the queue is empty. */
static job *next_job(delta_pool *p)
{
    pthread_mutex_lock(&p->lock);
    while (!p->head && !p->stopping)
        pthread_cond_wait(&p->wake, &p->lock);
    job *j = p->head;
    if (j) {
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
    }
    pthread_mutex_unlock(&p->lock);
    return j;
}

static void *worker(void *arg)
{
    delta_pool *p = arg;
    job *j;
    while ((j = next_job(p)) != NULL) {
        j->run(j->arg);
        if (j->done)
            j->done(j->arg);
        free(j);
    }
    return NULL;
}

static void stop_threads(delta_pool *p, unsigned started)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < started; i++)
        pthread_join(p->threads[i], NULL);
}

static void pool_free(delta_pool *p)
{
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
}

delta_pool *delta_pool_new(unsigned threads, size_t max_queue)
{
    if (threads < 1 || threads > 256)
        return NULL;
    delta_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->threads = calloc(threads, sizeof *p->threads);
    if (!p->threads || pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p->threads);
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->wake, NULL) != 0) {
        pthread_mutex_destroy(&p->lock);
        free(p->threads);
        free(p);
        return NULL;
    }
    p->max_queue = max_queue;
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
            stop_threads(p, i);
            pool_free(p);
            return NULL;
        }
    }
    p->nthreads = threads;
    return p;
}

int delta_pool_submit(delta_pool *p, delta_job_fn run, delta_job_fn done, void *arg)
{
    if (!p || !run)
        return -1;
    job *j = malloc(sizeof *j);
    if (!j)
        return -1;
    *j = (job){NULL, run, done, arg};
    pthread_mutex_lock(&p->lock);
    int ok = !p->stopping && (p->max_queue == 0 || p->queued < p->max_queue);
    if (ok) {
        if (p->tail)
            p->tail->next = j;
        else
            p->head = j;
        p->tail = j;
        p->queued++;
        pthread_cond_signal(&p->wake);
    }
    pthread_mutex_unlock(&p->lock);
    if (!ok)
        free(j);
    return ok ? 0 : -1;
}

size_t delta_pool_pending(delta_pool *p)
{
    pthread_mutex_lock(&p->lock);
    size_t n = p->queued;
    pthread_mutex_unlock(&p->lock);
    return n;
}

void delta_pool_shutdown(delta_pool *p)
{
    if (!p)
        return;
    stop_threads(p, p->nthreads);
    pool_free(p);
}
