/*
 * cmd_seed.h — `sluice seed`: imports OCI image layouts (directories, or tar
 * archives of them, plain or compressed) into the cache, verified, under the
 * trust policy, pinned. See cmd_seed.c for the command line and seed.h for
 * how an input is imported.
 */
#ifndef SLUICE_CMD_SEED_H
#define SLUICE_CMD_SEED_H

/* argv[0] is "seed". Returns 0 when every input was imported whole, 1 when
 * anything was refused, denied or unreadable (each reported on stderr), 2 on
 * usage or setup errors. */
int cmd_seed(int argc, char **argv);

#endif
