/*
 * writer.c — a FIFO of closures drained by one pthread (see writer.h).
 *
 * A singly linked queue under a mutex, a condition variable to wake the
 * thread, and a stop flag honoured only once the queue is empty, so shutdown
 * never drops a write.
 */
#include "writer.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct job {
    struct job *next;
    writer_job_fn fn;
    void *arg;
} job;

struct writer {
    cache *cache;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    size_t backlog;
    int stopping;
};

static job *take_job(writer *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->head && !w->stopping)
        pthread_cond_wait(&w->cv, &w->mu);
    job *j = w->head;
    if (j) {
        w->head = j->next;
        if (!w->head)
            w->tail = NULL;
    }
    pthread_mutex_unlock(&w->mu);
    return j;
}

static void *writer_main(void *arg)
{
    writer *w = arg;
    job *j;
    pthread_setname_np(pthread_self(), "sluice-writer");
    while ((j = take_job(w)) != NULL) {
        j->fn(w->cache, j->arg);
        free(j);
        pthread_mutex_lock(&w->mu);
        w->backlog--;
        pthread_mutex_unlock(&w->mu);
    }
    return NULL;
}

writer *writer_start(cache *c)
{
    writer *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->cache = c;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        free(w);
        return NULL;
    }
    return w;
}

void writer_stop(writer *w)
{
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

void writer_submit(writer *w, writer_job_fn fn, void *arg)
{
    job *j = malloc(sizeof(*j));
    if (!j)
        abort(); /* out of memory for 24 bytes: nothing sensible remains */
    j->next = NULL;
    j->fn = fn;
    j->arg = arg;
    pthread_mutex_lock(&w->mu);
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    w->backlog++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

size_t writer_backlog(writer *w)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->backlog;
    pthread_mutex_unlock(&w->mu);
    return n;
}
