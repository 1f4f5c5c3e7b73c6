/*
 * cmd_delta.h — `sluice delta`, the operator's offline delta tool:
 *
 *   sluice delta create --from OLD --to NEW -o DELTA [--codec zstd|vcdiff|bsz|auto]
 *                       [--level N] [--window-log N] [--plain-vcdiff] [--no-elf]
 *   sluice delta apply --from OLD -o NEW [--max-window-log N] DELTA
 *
 * Files use the wire formats (delta/delta.h): zstd = dcz body (40-byte header
 * + frame), vcdiff = raw VCDIFF, bsz = Sluice's format; apply detects which.
 */
#ifndef SLUICE_CMD_DELTA_H
#define SLUICE_CMD_DELTA_H

/* argv[0] is "delta". Returns the process exit status: 0 success, 1 failure,
 * 2 usage error. */
int cmd_delta(int argc, char **argv);

#endif
