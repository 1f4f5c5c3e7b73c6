/*
 * cmd_export.h — `sluice export`: writes cached artifacts, with their
 * signatures, referrers and (optionally) deltas, as an OCI-layout tar that
 * `sluice seed` and `skopeo copy oci-archive:` read. See cmd_export.c.
 */
#ifndef SLUICE_CMD_EXPORT_H
#define SLUICE_CMD_EXPORT_H

/* argv[0] is "export". Returns 0 when the bundle was written, 1 when a
 * referenced object is missing or corrupt (no bundle is left behind), 2 on
 * usage or setup errors. */
int cmd_export(int argc, char **argv);

#endif
