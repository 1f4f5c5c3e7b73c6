/*
 * pending.c — a mutex-guarded hash table of decisions and their waiters
 * (see pending.h). Buckets of singly linked entries, FNV-1a on the key;
 * entries live until the table is cleared, so a decision is made once per
 * generation.
 */
#include "pending.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 1024

typedef struct entry {
    struct entry *next;
    char *key;
    int decided;
    int result;
    char why[PENDING_WHY_MAX];
    pending_waiter **waiters;
    size_t nwaiters, capwaiters;
} entry;

struct pending_table {
    pthread_mutex_t mu;
    uint64_t generation;
    int closed;
    entry *buckets[BUCKETS];
};

static size_t hash_key(const char *s)
{
    size_t h = (size_t)1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * (size_t)1099511628211ull;
    return h % BUCKETS;
}

static entry *find(pending_table *t, const char *key)
{
    for (entry *e = t->buckets[hash_key(key)]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static entry *add(pending_table *t, const char *key)
{
    entry *e = calloc(1, sizeof(*e));
    if (!e || !(e->key = strdup(key)))
        abort();
    size_t b = hash_key(key);
    e->next = t->buckets[b];
    t->buckets[b] = e;
    return e;
}

static void wait_on(entry *e, pending_waiter *w)
{
    if (!w || atomic_load(&w->waiting))
        return;
    if (e->nwaiters == e->capwaiters) {
        e->capwaiters = e->capwaiters ? e->capwaiters * 2 : 4;
        e->waiters = realloc(e->waiters, e->capwaiters * sizeof(*e->waiters));
        if (!e->waiters)
            abort();
    }
    atomic_store(&w->waiting, 1);
    snprintf(w->key, sizeof(w->key), "%s", e->key);
    e->waiters[e->nwaiters++] = w;
}

static void wake_all(entry *e)
{
    for (size_t i = 0; i < e->nwaiters; i++) {
        atomic_store(&e->waiters[i]->waiting, 0);
        event_active(e->waiters[i]->wake, EV_READ, 0);
    }
    e->nwaiters = 0;
}

pending_table *pending_new(void)
{
    pending_table *t = calloc(1, sizeof(*t));
    if (t)
        pthread_mutex_init(&t->mu, NULL);
    return t;
}

pending_state pending_ask(pending_table *t, const char *key, pending_waiter *w, int *result,
                          char *why, size_t whylen, uint64_t *generation)
{
    pthread_mutex_lock(&t->mu);
    if (t->closed) {
        pthread_mutex_unlock(&t->mu);
        return PENDING_CLOSED;
    }
    entry *e = find(t, key);
    if (e && e->decided) {
        *result = e->result;
        if (why)
            snprintf(why, whylen, "%s", e->why);
        pthread_mutex_unlock(&t->mu);
        return PENDING_DONE;
    }
    pending_state st = e ? PENDING_WAITING : PENDING_FIRST;
    if (!e)
        e = add(t, key);
    wait_on(e, w);
    if (generation)
        *generation = t->generation;
    pthread_mutex_unlock(&t->mu);
    return st;
}

int pending_peek(pending_table *t, const char *key, int *result, char *why, size_t whylen)
{
    pthread_mutex_lock(&t->mu);
    entry *e = t->closed ? NULL : find(t, key);
    int decided = e && e->decided;
    if (decided) {
        *result = e->result;
        if (why && whylen && e->result) /* a reason goes with a 0 result only */
            why[0] = 0;
        else if (why && whylen)
            snprintf(why, whylen, "%s", e->why);
    }
    pthread_mutex_unlock(&t->mu);
    return decided;
}

uint64_t pending_generation(pending_table *t)
{
    pthread_mutex_lock(&t->mu);
    uint64_t g = t->generation;
    pthread_mutex_unlock(&t->mu);
    return g;
}

void pending_remember(pending_table *t, const char *key, uint64_t generation, int result,
                      const char *why)
{
    pthread_mutex_lock(&t->mu);
    if (!t->closed && generation == t->generation && !find(t, key)) {
        entry *e = add(t, key);
        e->decided = 1;
        e->result = result;
        snprintf(e->why, sizeof(e->why), "%s", why ? why : "");
    }
    pthread_mutex_unlock(&t->mu);
}

void pending_decide(pending_table *t, const char *key, uint64_t generation, int result,
                    const char *why)
{
    pthread_mutex_lock(&t->mu);
    entry *e = generation == t->generation ? find(t, key) : NULL;
    if (e) {
        e->decided = 1;
        e->result = result;
        snprintf(e->why, sizeof(e->why), "%s", why ? why : "");
        wake_all(e);
    }
    pthread_mutex_unlock(&t->mu);
}

void pending_cancel(pending_table *t, pending_waiter *w)
{
    if (!atomic_load(&w->waiting)) /* woken already: no entry lists it */
        return;
    pthread_mutex_lock(&t->mu);
    entry *e = atomic_load(&w->waiting) ? find(t, w->key) : NULL;
    for (size_t i = 0; e && i < e->nwaiters; i++) {
        if (e->waiters[i] == w) {
            e->waiters[i] = e->waiters[--e->nwaiters];
            break;
        }
    }
    atomic_store(&w->waiting, 0);
    pthread_mutex_unlock(&t->mu);
}

static void clear_locked(pending_table *t)
{
    for (size_t b = 0; b < BUCKETS; b++) {
        for (entry *e = t->buckets[b], *next; e; e = next) {
            next = e->next;
            wake_all(e); /* they ask again, under the new generation */
            free(e->waiters);
            free(e->key);
            free(e);
        }
        t->buckets[b] = NULL;
    }
    t->generation++;
}

void pending_clear(pending_table *t)
{
    pthread_mutex_lock(&t->mu);
    clear_locked(t);
    pthread_mutex_unlock(&t->mu);
}

void pending_close(pending_table *t)
{
    pthread_mutex_lock(&t->mu);
    t->closed = 1;
    clear_locked(t);
    pthread_mutex_unlock(&t->mu);
}

void pending_free(pending_table *t)
{
    if (!t)
        return;
    pending_clear(t);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
