/*
 * bsz_match.c — the match search of bsz: which parts of the target are coded
 * as byte differences against which parts of the base ("covers"), the rest
 * going out as literal bytes.
 *
 * How it works (four passes over the target, in the spirit of bsdiff and
 * HDiffPatch, with a cost model tuned for an LZMA-class entropy stage):
 *  1. search: at each target position, the longest exact match in the base
 *     is found by binary search in the base's suffix array (with the
 *     longest-common-prefix bounds of the interval ends skipping bytes
 *     already known to match); among equally long matches the one nearest to
 *     the previous cover's diagonal wins. A match is taken when its length
 *     outweighs the control bytes it costs. If the previous cover's diagonal
 *     codes the new match's bytes with no more mismatches than a new control
 *     record costs, and the gap is short, the previous cover is extended
 *     instead (shifted code keeps its alignment across small edits). The
 *     search then resumes after the cover.
 *  2. extend: each cover grows backward and forward while the bytes it adds
 *     still match in a good enough proportion (differences are cheap, they
 *     compress to almost nothing when they repeat).
 *  3. select: covers on the same diagonal separated by a short gap are
 *     merged (the gap becomes differences rather than literals and a record
 *     is saved); a cover whose estimated saving does not pay for its record
 *     is dropped.
 *  4. extend again, into the room the dropped covers left.
 * Everything is linear in the target apart from the O(log n) searches.
 */
#include <stdlib.h>
#include <string.h>

#include "bsz_format.h"

/* Costs are in sixteenths of a byte of compressed output. */
#define COST_UNIT 16
/* A literal byte of typical binary content after compression. */
#define LIT_COST 9
/* A differing byte inside a cover. */
#define MISMATCH_COST 20
/* A match must be worth this much more than its control record. */
#define MIN_SCORE (2 * COST_UNIT)
/* Covers on one diagonal are merged across gaps up to this long. */
#define MAX_LINK_GAP 511
/* Candidates with an equally long match examined on each side. */
#define NEIGHBOURS 8

typedef struct {
    const uint8_t *old;
    size_t oldn;
    const uint8_t *neu;
    size_t newn;
    const int32_t *sa;
} mctx;

static size_t min_sz(size_t a, size_t b)
{
    return a < b ? a : b;
}

static size_t lcp(const uint8_t *a, const uint8_t *b, size_t max)
{
    size_t i = 0;
    while (i + 8 <= max) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y)
            return i + (size_t)(__builtin_ctzll(x ^ y) >> 3);
        i += 8;
    }
    while (i < max && a[i] == b[i])
        i++;
    return i;
}

static size_t lcp_at(const mctx *c, size_t i, size_t opos)
{
    return lcp(c->neu + i, c->old + opos, min_sz(c->newn - i, c->oldn - opos));
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Binary search for the suffix interval of target[i..]; returns the SA index
 * of the best of the two interval ends and its match length. */
static size_t sa_search(const mctx *c, size_t i, size_t *len)
{
    const uint8_t *s = c->neu + i;
    size_t slen = c->newn - i;
    size_t lo = 0, hi = c->oldn - 1;
    size_t llo = lcp_at(c, i, (size_t)c->sa[lo]), lhi = lcp_at(c, i, (size_t)c->sa[hi]);
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        size_t opos = (size_t)c->sa[mid], tlen = c->oldn - opos;
        size_t k = min_sz(llo, lhi);
        size_t m = k + lcp(s + k, c->old + opos + k, min_sz(slen, tlen) - k);
        if (m == tlen || (m < slen && c->old[opos + m] < s[m])) {
            lo = mid;
            llo = m;
        } else {
            hi = mid;
            lhi = m;
        }
    }
    *len = llo >= lhi ? llo : lhi;
    return llo >= lhi ? lo : hi;
}

static size_t dist(size_t a, size_t b)
{
    return a > b ? a - b : b - a;
}

/* Longest match of target[i..] in base; among those as long, the nearest to
 * hint (the base position the previous diagonal predicts). */
static size_t best_match(const mctx *c, size_t i, size_t hint, size_t *pos)
{
    size_t len;
    size_t at = sa_search(c, i, &len);
    size_t best = (size_t)c->sa[at];
    if (len == 0) {
        *pos = best;
        return 0;
    }
    for (int dir = -1; dir <= 1; dir += 2) {
        size_t j = at;
        for (int k = 0; k < NEIGHBOURS; k++) {
            if ((dir < 0 && j == 0) || (dir > 0 && j + 1 >= c->oldn))
                break;
            j = dir < 0 ? j - 1 : j + 1;
            size_t p = (size_t)c->sa[j];
            if (lcp_at(c, i, p) < len)
                break;
            if (dist(p, hint) < dist(best, hint))
                best = p;
        }
    }
    *pos = best;
    return len;
}

/* ---- cost model ---- */

static size_t new_end(const bsz_cover *v)
{
    return v->new_pos + v->len;
}

static long ctrl_cost(const bsz_cover *m, const bsz_cover *last)
{
    size_t add = m->new_pos - new_end(last);
    int64_t seek = (int64_t)m->old_pos - (int64_t)(last->old_pos + last->len);
    return (long)(varint_len(add) + varint_len(m->len) + varint_len(zigzag(seek))) * COST_UNIT;
}

static size_t mismatches(const mctx *c, size_t npos, size_t opos, size_t len)
{
    size_t n = 0;
    for (size_t k = 0; k < len; k++)
        n += c->neu[npos + k] != c->old[opos + k];
    return n;
}

static int collinear(const bsz_cover *a, const bsz_cover *b)
{
    return a->old_pos - a->new_pos == b->old_pos - b->new_pos;
}

/* ---- pass 1: search ---- */

static int push(bsz_covers *cv, bsz_cover m)
{
    if (cv->n == cv->cap) {
        size_t cap = cv->cap ? cv->cap * 2 : 256;
        bsz_cover *v = dmem_realloc(cv->v, cap * sizeof *v);
        if (!v)
            return -1;
        cv->v = v;
        cv->cap = cap;
    }
    cv->v[cv->n++] = m;
    return 0;
}

/* Extends last over the gap and m if its diagonal codes m well enough. */
static int try_link_extend(const mctx *c, bsz_cover *last, const bsz_cover *m)
{
    if (last->len == 0)
        return 0;
    size_t gap = m->new_pos - new_end(last);
    if (gap > MAX_LINK_GAP)
        return 0;
    if (collinear(last, m)) {
        last->len = new_end(m) - last->new_pos;
        return 1;
    }
    if (m->new_pos + last->old_pos < last->new_pos)
        return 0;
    size_t link_old = m->new_pos + last->old_pos - last->new_pos;
    if (link_old + m->len > c->oldn)
        return 0;
    long cost = (long)mismatches(c, m->new_pos, link_old, m->len) * MISMATCH_COST;
    if (cost > ctrl_cost(m, last))
        return 0;
    size_t len = new_end(m) - last->new_pos;
    size_t lim = min_sz(c->newn - last->new_pos, c->oldn - last->old_pos);
    len += lcp(c->neu + last->new_pos + len, c->old + last->old_pos + len, lim - len);
    while (len > 0 && c->neu[last->new_pos + len - 1] != c->old[last->old_pos + len - 1])
        len--;
    if (len > last->len)
        last->len = len;
    return 1;
}

/* Moves prev onto m's diagonal when that codes prev's bytes as well. */
static void try_collinear(const mctx *c, bsz_cover *prev, const bsz_cover *m)
{
    if (prev->len == 0 || collinear(prev, m) || m->old_pos + prev->new_pos < m->new_pos)
        return;
    size_t link_old = m->old_pos + prev->new_pos - m->new_pos;
    if (link_old + prev->len > c->oldn)
        return;
    size_t now = mismatches(c, prev->new_pos, prev->old_pos, prev->len);
    if (mismatches(c, prev->new_pos, link_old, prev->len) <= now)
        prev->old_pos = link_old;
}

static int search(const mctx *c, bsz_covers *cv, delta_progress_fn progress, void *parg)
{
    bsz_cover last = {0, 0, 0};
    size_t i = 0, next_report = 0;
    while (i + 4 <= c->newn) {
        if (progress && i >= next_report) {
            progress(parg, i, c->newn);
            next_report = i + (1u << 20);
        }
        size_t hint = i + last.old_pos - last.new_pos, pos;
        if (last.old_pos < last.new_pos && i < last.new_pos - last.old_pos)
            hint = 0;
        size_t len = best_match(c, i, hint, &pos);
        bsz_cover m = {i, pos, len};
        if ((long)len * COST_UNIT - ctrl_cost(&m, &last) < MIN_SCORE) {
            i++;
            continue;
        }
        if (cv->n > 0 && try_link_extend(c, &last, &m)) {
            cv->v[cv->n - 1] = last;
        } else {
            if (cv->n > 0)
                try_collinear(c, &cv->v[cv->n - 1], &m);
            if (push(cv, m) != 0)
                return -1;
            last = m;
        }
        i = new_end(&last) > i + 1 ? new_end(&last) : i + 1;
    }
    return 0;
}

/* ---- passes 2 and 4: extend ---- */

/* How far a cover may grow in direction dir (+1 forward, -1 backward) from
 * new position npos / old position opos without leaving [nmin, nmax): the
 * length with the best proportion of equal bytes, if that proportion is
 * good enough. */
static size_t extend_len(const mctx *c, size_t npos, size_t opos, int dir, size_t nmin, size_t nmax)
{
    size_t same = 0, best = 0;
    uint64_t best_ratio = 0;
    for (size_t len = 1;; len++) {
        if (dir > 0 && (npos + len > nmax || opos + len > c->oldn))
            break;
        if (dir < 0 && (npos < nmin + len || opos < len))
            break;
        /* Far past the best point with a poor proportion: stop looking. */
        if (len > best + 64 && (same << 10) / len < 300)
            break;
        size_t n = dir > 0 ? npos + len - 1 : npos - len;
        size_t o = dir > 0 ? opos + len - 1 : opos - len;
        if (c->neu[n] != c->old[o])
            continue;
        same++;
        uint64_t ratio = ((uint64_t)same << 10) / (len + 4);
        if (ratio >= best_ratio) {
            best_ratio = ratio;
            best = len;
        }
    }
    return (best_ratio < 480 || best <= 2) ? 0 : best;
}

static void extend(const mctx *c, bsz_covers *cv)
{
    size_t prev_end = 0;
    for (size_t i = 0; i < cv->n; i++) {
        bsz_cover *v = &cv->v[i];
        size_t next = i + 1 < cv->n ? cv->v[i + 1].new_pos : c->newn;
        size_t back = extend_len(c, v->new_pos, v->old_pos, -1, prev_end, next);
        v->new_pos -= back;
        v->old_pos -= back;
        v->len += back;
        v->len += extend_len(c, new_end(v), v->old_pos + v->len, 1, prev_end, next);
        prev_end = new_end(v);
    }
}

/* ---- pass 3: select ---- */

static int can_link(const bsz_cover *a, const bsz_cover *b)
{
    return collinear(a, b) && b->new_pos - new_end(a) <= MAX_LINK_GAP;
}

static long cover_saving(const mctx *c, const bsz_cover *v, const bsz_cover *last)
{
    long lit = (long)v->len * LIT_COST;
    long diff = (long)mismatches(c, v->new_pos, v->old_pos, v->len) * MISMATCH_COST;
    return lit - diff - ctrl_cost(v, last);
}

static void select_covers(const mctx *c, bsz_covers *cv)
{
    size_t out = 0;
    bsz_cover last = {0, 0, 0};
    for (size_t i = 0; i < cv->n; i++) {
        bsz_cover v = cv->v[i];
        if (out > 0 && can_link(&cv->v[out - 1], &v)) {
            cv->v[out - 1].len = new_end(&v) - cv->v[out - 1].new_pos;
            last = cv->v[out - 1];
            continue;
        }
        if (cover_saving(c, &v, &last) < MIN_SCORE)
            continue;
        cv->v[out++] = v;
        last = v;
    }
    cv->n = out;
}

int bsz_find_covers(const uint8_t *base, size_t base_len, const int32_t *sa, const uint8_t *target,
                    size_t target_len, bsz_covers *out, delta_progress_fn progress, void *parg)
{
    out->n = 0;
    if (base_len < 4 || target_len < 4)
        return 0;
    mctx c = {base, base_len, target, target_len, sa};
    if (search(&c, out, progress, parg) != 0)
        return -1;
    extend(&c, out);
    select_covers(&c, out);
    extend(&c, out);
    return 0;
}

void bsz_covers_free(bsz_covers *c)
{
    dmem_free(c->v);
    c->v = NULL;
    c->n = c->cap = 0;
}
