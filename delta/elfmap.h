/*
 * elfmap.h — bsz's module-aware step: preconditioning an ELF base (a kernel
 * module, any ELF64 little-endian object) so that its numbering matches the
 * target's before the two are diffed. See elfmap.c and delta/FORMAT.md.
 */
#ifndef SLUICE_DELTA_ELFMAP_H
#define SLUICE_DELTA_ELFMAP_H

#include "bsz_format.h"

/* The preconditioned base, produced range by range on demand: the base's
 * bytes with the map applied to the fields in that range. Holds the base's
 * section table, an index of the sections with fields (a bitmap of 1/16 of
 * .BTF's size) and the parsed map; never a copy of the base. */
typedef struct elfmap_xform elfmap_xform;

/* Parses the map map[0..n) against base, which must outlive the transform.
 * DELTA_ECORRUPT if the map is malformed or does not fit this base. */
delta_status elfmap_xform_new(const uint8_t *base, size_t len, const uint8_t *map, size_t n,
                              elfmap_xform **out);
/* Writes bytes [pos, pos + n) of the preconditioned base (pos + n <= len) to
 * dst. Any split of a range into reads gives the same bytes. */
void elfmap_xform_read(elfmap_xform *x, uint64_t pos, size_t n, uint8_t *dst);
void elfmap_xform_free(elfmap_xform *x);

/* Encoder side: given covers of target against the plain base, learns the
 * renumbering and, if base and target are ELF objects it helps, returns the
 * serialized map and the preconditioned base (elfmap_xform_read of all of
 * it, as a decoder will see it). Otherwise map is empty and base NULL. */
typedef struct {
    dbuf map;
    uint8_t *base; /* base_len bytes from dmem, or NULL */
} elfmap_result;

delta_status elfmap_build(const uint8_t *base, size_t base_len, const uint8_t *target,
                          size_t target_len, const bsz_covers *covers, elfmap_result *out);
void elfmap_result_free(elfmap_result *r);

#endif
