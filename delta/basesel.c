/*
 * basesel.c — base selection: for each layer of a target manifest, which
 * layer of an earlier manifest of the same repository a delta should start
 * from (rules in delta.h, delta_select_bases).
 *
 * How it works: for each target layer, one pass over the earlier layers
 * ranks every candidate by a key (title match and media type first, then
 * age, size distance and index) and keeps the best; a first pass rules the
 * layer out when its digest is already among the earlier layers. Quadratic
 * in the number of layers, which is small (manifests hold tens of layers).
 */
#include <string.h>

#include "delta.h"

static int str_eq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static uint64_t size_distance(uint64_t a, uint64_t b)
{
    return a > b ? a - b : b - a;
}

/* How well e fits t: 0 = not a candidate; among candidates higher tiers win,
 * ties are broken by the caller. */
static int tier(const delta_layer *t, const delta_layer *e, int title_mode)
{
    int same_type = str_eq(t->media_type, e->media_type);
    if (title_mode)
        return str_eq(t->title, e->title) ? 1 + same_type : 0;
    if (e->position != t->position || !same_type)
        return 0;
    return (!e->title || !t->title || str_eq(t->title, e->title)) ? 1 : 0;
}

/* Whether candidate a beats candidate b (both of the same tier) for t. */
static int better(const delta_layer *t, const delta_layer *a, const delta_layer *b)
{
    if (a->age != b->age)
        return a->age < b->age;
    return size_distance(a->size, t->size) < size_distance(b->size, t->size);
}

static long pick(const delta_layer *t, const delta_layer *earlier, size_t nearlier, int title_mode)
{
    long best = -1;
    int best_tier = 0;
    for (size_t j = 0; j < nearlier; j++) {
        int k = tier(t, &earlier[j], title_mode);
        if (k == 0)
            continue;
        if (k > best_tier || (k == best_tier && better(t, &earlier[j], &earlier[best]))) {
            best = (long)j;
            best_tier = k;
        }
    }
    return best;
}

static int already_held(const delta_layer *t, const delta_layer *earlier, size_t nearlier)
{
    for (size_t j = 0; j < nearlier; j++)
        if (memcmp(t->digest, earlier[j].digest, DELTA_SHA256_LEN) == 0)
            return 1;
    return 0;
}

void delta_select_bases(const delta_layer *target, size_t ntarget, const delta_layer *earlier,
                        size_t nearlier, long *base)
{
    for (size_t i = 0; i < ntarget; i++) {
        const delta_layer *t = &target[i];
        base[i] = -1;
        if (already_held(t, earlier, nearlier))
            continue;
        if (t->title)
            base[i] = pick(t, earlier, nearlier, 1);
        if (base[i] < 0)
            base[i] = pick(t, earlier, nearlier, 0);
    }
}
