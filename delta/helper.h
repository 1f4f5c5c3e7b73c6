/*
 * helper.h — running an external program (xdelta3) as a filter: a read-only
 * file given to it as fd 3, its stdin fed from memory or a delta_src, its
 * stdout streamed to a delta_sink, its stderr captured for the error message.
 */
#ifndef SLUICE_DELTA_HELPER_H
#define SLUICE_DELTA_HELPER_H

#include "internal.h"

typedef struct {
    const char *const *argv; /* argv[0] is the program (PATH lookup unless it has a '/') */
    const uint8_t *file;     /* contents of the child's fd 3 (a memfd), or NULL for none */
    size_t file_len;
    const uint8_t *in_mem; /* stdin from memory ... */
    size_t in_len;
    delta_src *in_src; /* ... or from this source (when in_mem is NULL) */
    delta_sink *out;   /* stdout goes here */
    int exit_code;     /* set when the child exited normally, else -1 */
    char err[384];     /* the child's stderr (truncated), NUL-terminated */
} helper_job;

/* The fd number the file is given as in the child ("/dev/fd/3"). */
#define HELPER_FILE_FD 3

/* Runs the job to completion. DELTA_OK means the child exited with status 0
 * and all its output reached the sink. DELTA_EHELPER: it could not be
 * started, was killed by a signal or exited non-zero (exit_code tells which).
 * DELTA_ESINK / DELTA_ELIMIT / DELTA_ESOURCE: the sink or source failed; the
 * child has been killed and reaped. */
delta_status helper_run(helper_job *job, delta_report *rep);

#endif
