/*
 * writer.h — the one thread that writes to the cache.
 *
 * LMDB has a single writer; its write transactions may wait on fsync. The
 * event loops therefore never write: they hand closures to this thread, which
 * runs them one at a time in submission order (so jobs about one object
 * — begin, chunks, finish — stay ordered). A job reports back by itself, e.g.
 * by activating an event on the loop that wants the answer.
 */
#ifndef SLUICE_WRITER_H
#define SLUICE_WRITER_H

#include <stddef.h>

#include "cache.h"

typedef struct writer writer;
typedef void (*writer_job_fn)(cache *c, void *arg);

writer *writer_start(cache *c);
/* Runs every queued job, then joins the thread and frees w. */
void writer_stop(writer *w);
/* Queues fn(cache, arg). Never blocks for long (takes a mutex). */
void writer_submit(writer *w, writer_job_fn fn, void *arg);
/* Jobs queued and not yet finished. */
size_t writer_backlog(writer *w);

#endif
