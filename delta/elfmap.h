/*
 * elfmap.h — bsz's module-aware step: preconditioning an ELF base (a kernel
 * module, any ELF64 little-endian object) so that its numbering matches the
 * target's before the two are diffed. See elfmap.c and delta/FORMAT.md.
 */
#ifndef SLUICE_DELTA_ELFMAP_H
#define SLUICE_DELTA_ELFMAP_H

#include "bsz_format.h"

/* A read-only view of the (preconditioned) base: the base's bytes except in
 * the sections the map rewrote, which come from copies. */
typedef struct {
    size_t off, len;
    const uint8_t *p;
} elfmap_piece;

typedef struct {
    elfmap_piece *pieces; /* sorted, contiguous, covering [0, len) */
    size_t npieces;
    size_t len;
    uint8_t **copies; /* owned section copies */
    size_t ncopies;
} elfmap_view;

/* The identity view of base. */
delta_status elfmap_view_plain(elfmap_view *v, const uint8_t *base, size_t len);
/* Pointer to the view's byte at pos (< len) and how many bytes follow it
 * contiguously in that piece. */
const uint8_t *elfmap_view_at(const elfmap_view *v, uint64_t pos, size_t *run);
void elfmap_view_free(elfmap_view *v);

/* Decoder side: applies the map map[0..n) to base. DELTA_ECORRUPT if the map
 * is malformed or does not fit this base. */
delta_status elfmap_apply(const uint8_t *base, size_t len, const uint8_t *map, size_t n,
                          elfmap_view *out);

/* Encoder side: given covers of target against the plain base, learns the
 * renumbering and, if base and target are ELF objects it helps, returns the
 * serialized map and the preconditioned base (exactly what elfmap_apply
 * rebuilds from it). Otherwise map is empty and base NULL. */
typedef struct {
    dbuf map;
    uint8_t *base; /* base_len bytes, malloc'd, or NULL */
} elfmap_result;

delta_status elfmap_build(const uint8_t *base, size_t base_len, const uint8_t *target,
                          size_t target_len, const bsz_covers *covers, elfmap_result *out);
void elfmap_result_free(elfmap_result *r);

#endif
