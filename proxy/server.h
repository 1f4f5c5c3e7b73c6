/*
 * server.h — runs the daemon (`sluice serve`) until SIGTERM/SIGINT.
 */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include "config.h"

/* Runs with cfg (validated); config_path is re-read on SIGHUP (may be NULL).
 * Returns the process exit code. */
int server_run(config *cfg, const char *config_path);

#endif
