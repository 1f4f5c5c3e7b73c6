/*
 * cmd_verify.h — the options of `sluice verify` and its file-based forms (see
 * cmd_verify.c): kernel-module signatures, cosign signatures under a policy,
 * and Sigstore bundles, all checked offline with verify/. The REF form runs
 * in cmd_verify_ref.c.
 */
#ifndef SLUICE_CMD_VERIFY_H
#define SLUICE_CMD_VERIFY_H

#include "cmd_verify_ref.h"

/* argv[0] is "verify". Prints the verdict and its reasons on stdout (usage
 * errors on stderr). Returns 0 only when the verdict is "allowed"/"valid",
 * 1 when denied, 2 on usage or input errors. Arguments that name a REF are
 * a usage error here. */
int cmd_verify(int argc, char **argv);

/* The same, except that arguments naming a REF fill *ref and return
 * CMD_VERIFY_REF: the caller then runs cmd_verify_ref(ref), which needs the
 * daemon's code (this file and its unit test do not; see cmd_verify_main). */
#define CMD_VERIFY_REF 3
int cmd_verify_args(int argc, char **argv, verify_ref_opts *ref);

#endif
