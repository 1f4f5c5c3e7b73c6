/*
 * bsz_encode.c — the bsz encoder: header, optional ELF preconditioning of
 * the base, suffix array, cover search, the seven streams and their entropy
 * coding, in that order (format: delta/FORMAT.md). The cover differences
 * are made dense, then split in place into the non-zero runs (DIFF) and
 * the run lengths (RUNS): on module pairs 98% of the difference bytes are
 * zero, and the split codes them as small as LZMA2 codes the dense bytes
 * (within 1%, either way) while the decoder skips the zeros.
 *
 * Memory, stage by stage (every large block comes from dmem, so a stage's
 * memory is returned before the next one starts): the first cover search
 * holds the suffix array of the base (4 bytes per base byte); learning the
 * ELF map holds the field pairs the covers align (24 bytes each, 1.5-3x
 * the base for a kernel module); the second search holds the preconditioned
 * copy of the base and its suffix array (5x the base, the peak); the raw
 * streams take about one byte per target byte and are freed one by one as
 * they are compressed, by one entropy coder at a time (at most 4.2 MiB).
 * With the inputs themselves an encode thus stays near 7x the base.
 */
#include <divsufsort.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>

#include "bsz_format.h"
#include "elfmap.h"

/* Entropy coders' working memory: twice the base, at least 16 MiB (more than
 * LZMA2 with the 256 KiB dictionary bsz_entropy.c uses at most needs). */
#define MIN_BUDGET ((size_t)16 << 20)

typedef struct {
    dbuf s[BSZ_NSTREAMS];
} raw_streams;

static void raw_free(raw_streams *r)
{
    for (int i = 0; i < BSZ_NSTREAMS; i++)
        dbuf_free(&r->s[i]);
}

static int put_record(raw_streams *r, uint64_t add, uint64_t copy, int64_t seek)
{
    return dbuf_varint(&r->s[BSZ_S_ADD], add) || dbuf_varint(&r->s[BSZ_S_COPY], copy) ||
           dbuf_varint(&r->s[BSZ_S_SEEK], zigzag(seek));
}

/* Turns covers into control records, diff bytes and extra bytes. */
static int build_streams(const uint8_t *base, const uint8_t *target, size_t target_len,
                         const bsz_covers *cv, raw_streams *r)
{
    size_t npos = 0, opos = 0;
    for (size_t i = 0; i < cv->n; i++) {
        const bsz_cover *v = &cv->v[i];
        if (put_record(r, v->new_pos - npos, v->len, (int64_t)v->old_pos - (int64_t)opos) ||
            dbuf_put(&r->s[BSZ_S_EXTRA], target + npos, v->new_pos - npos) ||
            dbuf_reserve(&r->s[BSZ_S_DIFF], v->len))
            return -1;
        uint8_t *d = r->s[BSZ_S_DIFF].p + r->s[BSZ_S_DIFF].len;
        for (size_t k = 0; k < v->len; k++)
            d[k] = (uint8_t)(target[v->new_pos + k] - base[v->old_pos + k]);
        r->s[BSZ_S_DIFF].len += v->len;
        npos = v->new_pos + v->len;
        opos = v->old_pos + v->len;
    }
    if (npos < target_len)
        if (put_record(r, target_len - npos, 0, 0) ||
            dbuf_put(&r->s[BSZ_S_EXTRA], target + npos, target_len - npos))
            return -1;
    return 0;
}

static size_t run_end(const uint8_t *p, size_t i, size_t n, int nonzero)
{
    while (i < n && (p[i] != 0) == nonzero)
        i++;
    return i;
}

/* Splits the dense differences into (zero run, non-zero run) length pairs
 * appended to runs and the non-zero bytes, kept in diff (moved down in
 * place); trailing zeros are implicit. */
static int sparsify(dbuf *diff, dbuf *runs)
{
    uint8_t *p = diff->p;
    size_t n = diff->len, kept = 0, i = 0;
    while (i < n) {
        size_t start = run_end(p, i, n, 0);
        if (start == n)
            break;
        size_t end = run_end(p, start, n, 1);
        if (dbuf_varint(runs, start - i) || dbuf_varint(runs, end - start))
            return -1;
        memmove(p + kept, p + start, end - start);
        kept += end - start;
        i = end;
    }
    diff->len = kept;
    return 0;
}

static delta_status find_covers(const uint8_t *base, size_t base_len, const uint8_t *target,
                                size_t target_len, const delta_options *o, bsz_covers *cv)
{
    if (base_len < 4 || target_len < 4)
        return DELTA_OK;
    int32_t *sa = dmem_alloc(base_len * sizeof *sa);
    if (!sa)
        return DELTA_ENOMEM;
    delta_status st = DELTA_OK;
    if (divsufsort(base, sa, (int32_t)base_len) != 0)
        st = DELTA_ECODEC;
    else if (bsz_find_covers(base, base_len, sa, target, target_len, cv, o->progress,
                             o->progress_arg) != 0)
        st = DELTA_ENOMEM;
    dmem_free(sa);
    return st;
}

static delta_status encode_streams(raw_streams *r, size_t budget, dbuf *out)
{
    for (int i = 0; i < BSZ_NSTREAMS; i++) {
        delta_status st = bsz_stream_encode(i, r->s[i].p, r->s[i].len, budget, out);
        dbuf_free(&r->s[i]);
        if (st != DELTA_OK)
            return st;
    }
    return DELTA_OK;
}

static size_t entropy_budget(size_t base_len)
{
    return base_len > MIN_BUDGET / 2 ? base_len * 2 : MIN_BUDGET;
}

/* Covers against the plain base; then, if the ELF map helps, the map and
 * covers against the preconditioned base. */
static delta_status match(const uint8_t *base, size_t base_len, const uint8_t *target,
                          size_t target_len, const delta_options *o, elfmap_result *em,
                          bsz_covers *cv)
{
    delta_status st = find_covers(base, base_len, target, target_len, o, cv);
    if (st != DELTA_OK || !o->bsz_elf)
        return st;
    st = elfmap_build(base, base_len, target, target_len, cv, em);
    if (st != DELTA_OK || !em->base)
        return st;
    cv->n = 0;
    return find_covers(em->base, base_len, target, target_len, o, cv);
}

delta_status bsz_encode(const uint8_t *base, size_t base_len, const uint8_t *target,
                        size_t target_len, const delta_options *o, delta_sink *out,
                        delta_report *rep)
{
    if (base_len >= DELTA_BSZ_MAX_INPUT || target_len >= DELTA_BSZ_MAX_INPUT)
        return delta_fail(rep, DELTA_ELIMIT, "bsz handles inputs below 2 GiB");
    bsz_header h = {BSZ_VERSION, 0,
                    base_len,    lzma_crc64(base, base_len, 0),
                    target_len,  lzma_crc64(target, target_len, 0)};
    raw_streams r = {0};
    elfmap_result em = {0};
    bsz_covers cv = {0};
    delta_status st = match(base, base_len, target, target_len, o, &em, &cv);
    if (st == DELTA_OK && em.base) {
        h.flags |= BSZ_FLAG_ELF;
        r.s[BSZ_S_MAP] = em.map;
        em.map = (dbuf){0};
    }
    if (st == DELTA_OK && (build_streams(em.base ? em.base : base, target, target_len, &cv, &r) ||
                           sparsify(&r.s[BSZ_S_DIFF], &r.s[BSZ_S_RUNS])))
        st = DELTA_ENOMEM;
    bsz_covers_free(&cv);
    elfmap_result_free(&em);
    dbuf body = {0};
    if (st == DELTA_OK)
        st = encode_streams(&r, entropy_budget(base_len), &body);
    uint8_t head[BSZ_HEADER_LEN];
    bsz_header_write(head, &h);
    if (st == DELTA_OK)
        st = delta_sink_put(out, head, sizeof head);
    if (st == DELTA_OK)
        st = delta_sink_put(out, body.p, body.len);
    dbuf_free(&body);
    raw_free(&r);
    return st;
}
