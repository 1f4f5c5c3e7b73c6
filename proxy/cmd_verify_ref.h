/*
 * cmd_verify_ref.h — `sluice verify REF`: the daemon's trust decision for one
 * manifest of a configured upstream (cached or not), with its reasons.
 * cmd_verify.c parses the options (see cmd_verify_ref.c for how it decides).
 */
#ifndef SLUICE_CMD_VERIFY_REF_H
#define SLUICE_CMD_VERIFY_REF_H

typedef struct {
    const char *ref;          /* [REGISTRY/]REPO:TAG or [REGISTRY/]REPO@sha256:HEX */
    const char *config_path;  /* --config: the daemon's INI file, or NULL */
    const char *cache_dir;    /* --cache: overrides [cache] dir */
    const char *upstream;     /* --upstream: overrides [upstream] url */
    const char *policy;       /* --policy: overrides [trust] policy */
    const char *trusted_root; /* --trusted-root: overrides [trust] trusted_root */
    int offline;              /* --offline: never contact an upstream */
} verify_ref_opts;

/* Prints the reference, its digest, the explanation lines and the verdict
 * ("verdict:", "reason:", "detail:") on stdout; errors on stderr. Returns 0
 * when the daemon would serve the manifest, 1 when it would not (denied, or
 * the manifest is unknown / unreachable), 2 on usage or configuration errors
 * (bad REF, bad config or policy, no upstream, no cache offline). */
int cmd_verify_ref(const verify_ref_opts *o);

/* `sluice verify ARGS...` (argv[0] is "verify"), every form: the options
 * are parsed by cmd_verify_args; a REF runs cmd_verify_ref, the rest runs
 * in cmd_verify.c. */
int cmd_verify_main(int argc, char **argv);

#endif
