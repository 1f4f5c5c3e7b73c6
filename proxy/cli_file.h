/*
 * cli_file.h — files for the command-line tools (`sluice delta`, `sluice
 * fetch`): inputs mapped read-only, and outputs that appear under their name
 * only complete.
 *
 * Atomic output: cli_out_open creates a temporary file next to the
 * destination (same directory, ".<name>.XXXXXX", so the final rename stays
 * on one file system); bytes go through a buffer into it; cli_out_commit
 * flushes, fsyncs, renames it over the destination and fsyncs the directory.
 * cli_out_abort (and every failing commit) removes the temporary file, so a
 * failed or interrupted run never leaves a partial file under the
 * destination's name.
 *
 * Errors are printed to stderr as "sluice CMD: ..." where CMD is the
 * command's name given to each call.
 */
#ifndef SLUICE_CLI_FILE_H
#define SLUICE_CLI_FILE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

/* A regular file mapped read-only (an empty file maps to a valid pointer). */
typedef struct {
    const char *path;
    const uint8_t *p;
    size_t len;
} cli_mapped;

/* 0, or -1 after printing why. */
int cli_map_file(const char *cmd, const char *path, cli_mapped *m);
void cli_unmap_file(cli_mapped *m);

/* An output file being written; see above. */
typedef struct {
    const char *cmd;
    const char *dest;
    char tmp[PATH_MAX];
    int fd;
    uint8_t *buf;
    size_t len;
    int failed_errno;
} cli_out;

/* Creates the temporary file for dest (which must stay valid until commit
 * or abort). 0, or -1 after printing why. */
int cli_out_open(cli_out *o, const char *cmd, const char *dest);
/* Appends p[0..n); a delta_write_fn (delta.h): 0, or -1 on a write error
 * (reported by cli_out_commit or left to the caller after cli_out_abort). */
int cli_out_write(void *arg, const void *p, size_t n);
/* Flushes, fsyncs (mode 0644) and renames into place. 0, or -1 after printing
 * why and removing the temporary file. */
int cli_out_commit(cli_out *o);
/* Closes and removes the temporary file; safe to call twice. */
void cli_out_abort(cli_out *o);

/* dest := p[0..n), atomically as above. 0, or -1 after printing why. */
int cli_write_file(const char *cmd, const char *dest, const void *p, size_t n);

#endif
