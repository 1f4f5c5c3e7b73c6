/*
 * cmd_cache.h — `sluice gc` (least-recently-used eviction down to max_size,
 * by hand) and `sluice stat` (what the cache holds and what it has done).
 * See cmd_cache.c.
 */
#ifndef SLUICE_CMD_CACHE_H
#define SLUICE_CMD_CACHE_H

/* argv[0] is "gc". 0 when the cache is within its bound afterwards, 1 when
 * pinned or in-flight content alone exceeds it, 2 on usage or setup errors. */
int cmd_gc(int argc, char **argv);

/* argv[0] is "stat". 0, 1 when --verify found objects that do not match
 * their digest, 2 on usage or setup errors. */
int cmd_stat(int argc, char **argv);

#endif
