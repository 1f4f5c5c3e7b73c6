/*
 * cmd_fetch.h — `sluice fetch`, the device side of deltas:
 *
 *   sluice fetch [--insecure] [--cacert FILE] [--have DIR] [--all-platforms]
 *                -o OUTDIR URL/REPO:TAG|URL/REPO@sha256:HEX
 *
 * Fetches an image or artifact from a registry or a Sluice (URL is
 * http[s]://host[:port]) into the OCI image layout OUTDIR, asking for each
 * blob as a delta from the version the device already holds (in OUTDIR or
 * in the layout --have DIR), rebuilding and verifying it, and prints per blob
 * and in total the bytes transferred against the full size.
 *
 * Exit status: 0 success, 1 a transfer or verification failure, 2 a usage
 * error (bad option or malformed reference).
 */
#ifndef SLUICE_CMD_FETCH_H
#define SLUICE_CMD_FETCH_H

/* argv[0] is "fetch". Returns the process exit status. */
int cmd_fetch(int argc, char **argv);

#endif
