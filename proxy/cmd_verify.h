/*
 * cmd_verify.h — the file-based forms of `sluice verify` (see cmd_verify.c):
 * kernel-module signatures, cosign signatures under a policy, and Sigstore
 * bundles, all checked offline with verify/.
 */
#ifndef SLUICE_CMD_VERIFY_H
#define SLUICE_CMD_VERIFY_H

/* argv[0] is "verify". Prints the verdict and its reasons on stdout (usage
 * errors on stderr). Returns 0 only when the verdict is "allowed"/"valid",
 * 1 when denied, 2 on usage or input errors. */
int cmd_verify(int argc, char **argv);

#endif
