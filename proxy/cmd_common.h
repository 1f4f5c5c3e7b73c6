/*
 * cmd_common.h — what the offline cache commands (`sluice seed`, `export`,
 * `gc`, `stat`) share: the --config / --cache / --max-size options, opening
 * the cache the way the daemon does, naming repositories the way the daemon
 * keys them, image references, byte counts for people, and a progress bar.
 *
 * Repository keys. The daemon stores tags and refs under
 * "<registry host[:port] of the upstream URL>/<repository>" (see
 * transfer_repo_key). A reference names a registry as a client sees it: when
 * that matches a configured upstream (its ?ns= name, or the host of its URL)
 * the key uses that upstream's URL host; a reference without a registry uses
 * the default upstream; any other registry is used as written.
 */
#ifndef SLUICE_CMD_COMMON_H
#define SLUICE_CMD_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "cache.h"
#include "config.h"
#include "oci.h"

#define CLI_KEY_MAX 600 /* "host:port/repository" */

/* Options every cache command takes. */
typedef struct {
    const char *cmd;         /* "seed", "export", ... (for messages) */
    const char *config_path; /* --config */
    const char *cache_dir;   /* --cache, overrides [cache] dir */
    const char *max_size;    /* --max-size, overrides [cache] max_size */
} cli_opts;

/* Loads the config file (if any) and applies the overrides; on error prints
 * "sluice CMD: ..." and returns -1. cfg is initialised either way (free it). */
int cli_load_config(const cli_opts *o, config *cfg);

/* Opens cfg's cache with its map size and sync setting. Without `create`, a
 * directory that holds no cache is an error. Prints errors; NULL on failure. */
cache *cli_open_cache(const cli_opts *o, const config *cfg, int create);

/* An image reference: [REGISTRY/]REPOSITORY[:TAG][@DIGEST]. */
typedef struct {
    char registry[256]; /* "" when the reference names none */
    char repository[OCI_NAME_MAX + 1];
    char tag[OCI_TAG_MAX + 1]; /* "" when none */
    int has_digest;
    uint8_t digest[32];
} cli_ref;

/* 0, or -1 with a reason in err. */
int cli_parse_ref(const char *text, cli_ref *out, char *err, size_t errlen);
/* 1 when text is a plain tag rather than a reference. */
int cli_is_tag(const char *text);

/* The key "<host>/<repository>" for a registry ("" = default upstream) and a
 * repository. 0, or -1 with a reason in err. */
int cli_repo_key(const config *cfg, const char *registry, const char *repository, char *out,
                 size_t outlen, char *err, size_t errlen);
/* Splits a key into registry host and repository (both NUL-terminated). */
void cli_split_key(const char *key, char *registry, size_t rlen, char *repository, size_t plen);

/* "1.5 GiB", "312 KiB", "17 B". */
void cli_format_size(uint64_t bytes, char out[32]);
double cli_seconds_since(const struct timespec *start);

/* A progress bar on stderr when it is a terminal (bytes, rate, ETA),
 * redrawn at most ten times a second; silent otherwise. */
typedef struct {
    char label[64];
    uint64_t total, done;
    struct timespec start, last;
    int tty;
    int shown;
} cli_progress;

void cli_progress_start(cli_progress *p, const char *label, uint64_t total);
void cli_progress_set(cli_progress *p, uint64_t done);
/* Erases the bar (before a message is printed); the next update redraws it. */
void cli_progress_clear(cli_progress *p);
/* Draws the final state and ends the line. */
void cli_progress_end(cli_progress *p);

#endif
