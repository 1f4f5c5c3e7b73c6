/*
 * pending.h — decisions made once, off the event loops, that many requests
 * wait for: trust verdicts, delta computations.
 *
 * A table maps a text key to an entry that is either decided (an int result
 * and a reason) or being decided (a list of waiters). The first request to
 * ask about a key learns that it must start the work (PENDING_FIRST); the
 * others wait (PENDING_WAITING); whoever finishes calls pending_decide,
 * which wakes every waiter by activating its event — the waiter then asks
 * again and gets the answer. pending_clear forgets everything (e.g. a new
 * trust policy) and bumps the generation, so work started earlier cannot
 * decide into the new table. All functions are thread-safe.
 */
#ifndef SLUICE_PENDING_H
#define SLUICE_PENDING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct event;

#define PENDING_KEY_MAX 700
#define PENDING_WHY_MAX 1024

typedef struct pending_table pending_table;

/* One waiter waits for one key at a time. Owned by the caller, which must
 * pending_cancel it before freeing it. */
typedef struct pending_waiter {
    struct event *wake;
    atomic_int waiting; /* set by the waiter's thread, cleared under the table's lock */
    char key[PENDING_KEY_MAX];
} pending_waiter;

typedef enum { PENDING_DONE, PENDING_FIRST, PENDING_WAITING, PENDING_CLOSED } pending_state;

pending_table *pending_new(void);
/* Wakes whoever still waits and frees the table. */
void pending_free(pending_table *t);

/* DONE: *result and why are the decision. FIRST: the caller must do the
 * work and pending_decide(key, *generation, ...). WAITING: someone is on it.
 * In both of those, w (if not NULL and not already waiting) waits. CLOSED:
 * pending_close ran; nothing new starts. */
pending_state pending_ask(pending_table *t, const char *key, pending_waiter *w, int *result,
                          char *why, size_t whylen, uint64_t *generation);
/* 1 when key is decided (*result is the decision; why its reason when
 * *result is 0, else ""), else 0: a lookup that, unlike pending_ask, never
 * starts or joins a decision. */
int pending_peek(pending_table *t, const char *key, int *result, char *why, size_t whylen);
/* The current generation (see pending_clear). */
uint64_t pending_generation(pending_table *t);
/* Records a decision nobody asked to make — one that follows from others
 * read under `generation` — unless the table was cleared since or the key
 * already has an entry. */
void pending_remember(pending_table *t, const char *key, uint64_t generation, int result,
                      const char *why);
/* Records the decision (ignored if the table was cleared since generation)
 * and wakes the waiters. */
void pending_decide(pending_table *t, const char *key, uint64_t generation, int result,
                    const char *why);
/* Stops waiting (no-op when not waiting). */
void pending_cancel(pending_table *t, pending_waiter *w);
/* Forgets every entry, waking their waiters; new generation. */
void pending_clear(pending_table *t);
/* pending_clear, and from now on every ask answers CLOSED. */
void pending_close(pending_table *t);

#endif
