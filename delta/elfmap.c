/*
 * elfmap.c — module-aware preconditioning of the base for bsz.
 *
 * Why: between two builds of a kernel module most bytes that differ are
 * numbers that moved together: symbol indices in relocations (a symbol was
 * added), offsets inside sections (a function grew, so every later
 * relocation offset, addend and symbol value shifts), string-table offsets,
 * and the type ids and string offsets of .BTF (whose numbering continues
 * vmlinux's, so it shifts whenever the kernel's types change). A byte-wise
 * diff pays for each of them. Here the encoder learns, per class of number,
 * a piecewise-constant renumbering old -> new and sends it (the "map",
 * typically a few hundred bytes); both sides apply it to the base's fields,
 * and the target is then diffed against that preconditioned base, where
 * those fields already hold the target's values.
 *
 * Fields (ELF64 little-endian objects; anything else has none):
 *   SYMIDX      r_info's symbol index, in SHT_RELA sections of the symtab
 *   STRTAB      st_name of every symbol
 *   SHNDX       st_shndx of symbols in ordinary sections
 *   SECOFF(s)   offsets inside section s: r_offset of relocations applying
 *               to s, st_value of symbols defined in s, r_addend of
 *               relocations against s's section symbol
 *   BTF_TYPE    type ids in .BTF (member, parameter, pointee, array, ...)
 *   BTF_STR     name offsets in .BTF
 * A section's fields are taken only if the section lies inside the file and
 * does not overlap one taken before (in section order), so every field has
 * one host section.
 *
 * Where the fields are: the host sections (the symbol table, its RELA
 * sections, .BTF) are indexed once per file (elf_index): symbol and
 * relocation fields sit at fixed places in 24-byte entries, so they are
 * found by arithmetic; .BTF's records have variable lengths, so one walk
 * marks its field words in a bitmap (2 bits per 4-byte word, 1/16 of the
 * section). host_fields() lists the fields of a host that meet a byte range,
 * and it is the one definition of "field" that everything else uses: the
 * encoder's learning, the lookup of the base's field at an offset, and the
 * transform.
 *
 * Learning (encoder): the covers found against the plain base align target
 * bytes with base bytes; each target field whose aligned base position holds
 * a field of the same class gives a pair (old value, new value). Per class,
 * the pairs sorted by old value form runs of equal difference; runs too
 * weakly supported to pay for themselves are absorbed by their neighbours
 * (see denoise), and the remaining runs become segments "from value f on,
 * add d", applied modulo the field's width.
 *
 * Applying (decoder and encoder alike): elfmap_xform_read produces any range
 * of the preconditioned base on demand: the base's bytes, with each field of
 * a mapped class in that range rewritten from its original value. Nothing
 * is copied ahead, so a decoder needs only the index (a few KiB) on top of
 * the base, and the encoder builds its preconditioned copy of the base with
 * the very same function. The map is validated completely (known classes in
 * increasing order, sections that exist, segment starts strictly
 * increasing); a bad map is DELTA_ECORRUPT.
 */
#include <stdlib.h>
#include <string.h>

#include "elfmap.h"

enum { K_SYMIDX = 1, K_STRTAB, K_SHNDX, K_SECOFF, K_BTF_TYPE, K_BTF_STR, K_LAST = K_BTF_STR };

#define SHT_SYMTAB 2
#define SHT_RELA 4
#define SHT_NOBITS 8
#define SHN_LORESERVE 0xff00u
#define STT_SECTION 3
#define STT_FILE 4
#define ENT 24 /* Elf64_Sym and Elf64_Rela */

/* Bound on segments per class and classes per map a decoder accepts. */
#define MAX_SEGMENTS (1u << 20)

/* The roles of a host section (a section can have several: a symbol table
 * or a RELA section named .BTF). */
enum { ROLE_SYMTAB = 1, ROLE_RELA = 2, ROLE_BTF = 4 };

/* BTF word codes in the bitmap. */
enum { BW_NONE = 0, BW_STR = 1, BW_TYPE = 2 };

typedef struct {
    uint32_t name, type, link, info;
    uint64_t off, size, entsize;
    int usable; /* inside the file and not overlapping an earlier usable one */
} elf_sec;

typedef struct {
    size_t sec;          /* section index */
    uint64_t start, end; /* the section's bytes in the file */
    unsigned roles;
    uint8_t *btf;          /* ROLE_BTF: 2 bits per word of [bstart, bend) */
    uint64_t bstart, bend; /* ROLE_BTF: the type records */
} host;

typedef struct {
    const uint8_t *p;
    size_t len;
    elf_sec *s;
    size_t n;
    size_t shstrndx;
    size_t symtab; /* 0 = none */
    size_t nsyms;
    host *h; /* host sections, sorted by offset */
    size_t nh;
} elf_file;

typedef struct {
    uint64_t off;
    uint32_t cls; /* kind | section << 3 */
    uint8_t width;
} field;

/* host_fields calls this for every field; non-zero stops it. */
typedef int (*field_fn)(void *ctx, const field *f);

/* ---- parsing ---- */

static int range_ok(uint64_t off, uint64_t size, size_t len)
{
    return off <= len && size <= len - off;
}

/* Kernel modules have tens of sections (a few hundred with one section per
 * function); a file with more is not one this transform is for. The bound
 * also keeps the section checks below, which are quadratic, cheap on
 * hostile input (65k sections would cost seconds). */
#define ELF_MAX_SECTIONS 4096

static int overlaps_usable(const elf_file *e, size_t k)
{
    const elf_sec *a = &e->s[k];
    for (size_t i = 1; i < k; i++) {
        const elf_sec *b = &e->s[i];
        if (b->usable && a->off < b->off + b->size && b->off < a->off + a->size)
            return 1;
    }
    return 0;
}

static void parse_section(elf_file *e, size_t i, const uint8_t *h)
{
    elf_sec *s = &e->s[i];
    s->name = le32(h);
    s->type = le32(h + 4);
    s->off = le64(h + 24);
    s->size = le64(h + 32);
    s->link = le32(h + 40);
    s->info = le32(h + 44);
    s->entsize = le64(h + 56);
    s->usable = i > 0 && s->type != SHT_NOBITS && s->size > 0 && range_ok(s->off, s->size, e->len);
}

static int elf_parse_headers(elf_file *e, const uint8_t *p, size_t len)
{
    memset(e, 0, sizeof *e);
    if (len < 64 || memcmp(p,
                           "\x7f"
                           "ELF\x02\x01",
                           6) != 0)
        return -1;
    uint64_t shoff = le64(p + 0x28);
    size_t shnum = le16(p + 0x3c);
    if (le16(p + 0x3a) != 64 || shnum == 0 || shnum > ELF_MAX_SECTIONS ||
        !range_ok(shoff, (uint64_t)shnum * 64, len) || le16(p + 0x3e) >= shnum)
        return -1;
    e->s = dmem_calloc(shnum, sizeof *e->s);
    if (!e->s)
        return -2;
    e->p = p;
    e->len = len;
    e->n = shnum;
    e->shstrndx = le16(p + 0x3e);
    for (size_t i = 0; i < shnum; i++)
        parse_section(e, i, p + shoff + 64 * i);
    for (size_t i = 1; i < shnum; i++)
        if (e->s[i].usable && overlaps_usable(e, i))
            e->s[i].usable = 0;
    return 0;
}

static void elf_free(elf_file *e)
{
    for (size_t i = 0; i < e->nh; i++)
        dmem_free(e->h[i].btf);
    dmem_free(e->h);
    dmem_free(e->s);
    memset(e, 0, sizeof *e);
}

/* The section's name, or NULL when it is not a NUL-terminated string of shstrtab. */
static const char *sec_name(const elf_file *e, size_t i)
{
    const elf_sec *st = &e->s[e->shstrndx];
    if (!range_ok(st->off, st->size, e->len) || st->type == SHT_NOBITS || e->s[i].name >= st->size)
        return NULL;
    const char *s = (const char *)e->p + st->off + e->s[i].name;
    return memchr(s, 0, st->size - e->s[i].name) ? s : NULL;
}

static int sec_defined(const elf_file *e, uint32_t shndx)
{
    return shndx > 0 && shndx < e->n && shndx < SHN_LORESERVE;
}

static void find_symtab(elf_file *e)
{
    for (size_t i = 1; i < e->n; i++) {
        const elf_sec *s = &e->s[i];
        if (s->type == SHT_SYMTAB && s->usable && s->entsize == ENT && s->size % ENT == 0) {
            e->symtab = i;
            e->nsyms = s->size / ENT;
            return;
        }
    }
}

/* ---- the .BTF bitmap ---- */

/* Bytes of kind-specific data after a btf_type, and where its type/name
 * fields are; 0 for an unknown kind. */
typedef struct {
    size_t extra;      /* bytes after the 12-byte btf_type */
    int head_type;     /* the size_or_type word is a type id */
    size_t stride;     /* per-member record size, 0 if none */
    int m_str, m_type; /* offsets in a member record, -1 if absent */
    int m_type2;       /* a second type field (array index type), -1 if absent */
} btf_shape;

static int btf_kind_shape(uint32_t kind, uint32_t vlen, btf_shape *b)
{
    *b = (btf_shape){0, 0, 0, -1, -1, -1};
    switch (kind) {
    case 1:  /* INT */
    case 14: /* VAR */
    case 17: /* DECL_TAG */
        b->extra = 4;
        b->head_type = kind != 1;
        return 1;
    case 2:
    case 8:
    case 9:
    case 10:
    case 11:
    case 12:
    case 18:
        b->head_type = 1;
        return 1;
    case 3: /* ARRAY */
        b->extra = 12;
        b->stride = 12;
        b->m_type = 0;
        b->m_type2 = 4;
        return 1;
    case 4:
    case 5: /* STRUCT, UNION */
        *b = (btf_shape){12 * (size_t)vlen, 0, 12, 0, 4, -1};
        return 1;
    case 6: /* ENUM */
        *b = (btf_shape){8 * (size_t)vlen, 0, 8, 0, -1, -1};
        return 1;
    case 7:
    case 16: /* FWD, FLOAT */
        return 1;
    case 13: /* FUNC_PROTO */
        *b = (btf_shape){8 * (size_t)vlen, 1, 8, 0, 4, -1};
        return 1;
    case 15: /* DATASEC */
        *b = (btf_shape){12 * (size_t)vlen, 0, 12, -1, 0, -1};
        return 1;
    case 19: /* ENUM64 */
        *b = (btf_shape){12 * (size_t)vlen, 0, 12, 0, -1, -1};
        return 1;
    default:
        return 0;
    }
}

static void btf_mark(host *h, uint64_t at, unsigned code)
{
    uint64_t w = (at - h->bstart) / 4;
    h->btf[w / 4] |= (uint8_t)(code << (2 * (w % 4)));
}

static void btf_members(host *h, uint64_t at, const btf_shape *b)
{
    for (uint64_t m = at; b->stride && m + b->stride <= at + b->extra; m += b->stride) {
        if (b->m_str >= 0)
            btf_mark(h, m + (uint64_t)b->m_str, BW_STR);
        if (b->m_type >= 0)
            btf_mark(h, m + (uint64_t)b->m_type, BW_TYPE);
        if (b->m_type2 >= 0)
            btf_mark(h, m + (uint64_t)b->m_type2, BW_TYPE);
    }
}

/* Walks the type records, as far as they are well-formed, marking the words
 * that hold names and type ids. */
static void btf_walk(const elf_file *e, host *h)
{
    uint64_t pos = h->bstart, end = h->bend;
    while (pos + 12 <= end) {
        uint32_t info = le32(e->p + pos + 4);
        btf_shape b;
        if (!btf_kind_shape((info >> 24) & 0x1f, info & 0xffff, &b) || b.extra > end - pos - 12)
            return;
        btf_mark(h, pos, BW_STR);
        if (b.head_type)
            btf_mark(h, pos + 8, BW_TYPE);
        btf_members(h, pos + 12, &b);
        pos += 12 + b.extra;
    }
}

/* Sets up ROLE_BTF for a section named .BTF with a consistent header;
 * returns -1 when out of memory. */
static int btf_host(const elf_file *e, host *h)
{
    const elf_sec *s = &e->s[h->sec];
    const uint8_t *p = e->p + s->off;
    if (s->size < 24 || le16(p) != 0xeb9f || p[2] != 1)
        return 0;
    uint64_t hdr = le32(p + 4), toff = le32(p + 8), tlen = le32(p + 12);
    if (hdr < 24 || hdr > s->size || toff > s->size - hdr || tlen > s->size - hdr - toff)
        return 0;
    h->bstart = s->off + hdr + toff;
    h->bend = h->bstart + tlen;
    h->btf = dmem_calloc(tlen / 16 + 1, 1);
    if (!h->btf)
        return -1;
    h->roles |= ROLE_BTF;
    btf_walk(e, h);
    return 0;
}

/* ---- host sections ---- */

static unsigned plain_roles(const elf_file *e, size_t i)
{
    const elf_sec *s = &e->s[i];
    if (i == e->symtab)
        return ROLE_SYMTAB;
    if (e->symtab && s->type == SHT_RELA && s->link == e->symtab && s->entsize == ENT &&
        sec_defined(e, s->info))
        return ROLE_RELA;
    return 0;
}

static int cmp_host(const void *a, const void *b)
{
    const host *x = a, *y = b;
    uint64_t ox = x->start, oy = y->start;
    return (ox > oy) - (ox < oy);
}

/* Finds the host sections and their roles. */
static int index_hosts(elf_file *e)
{
    find_symtab(e);
    e->h = dmem_calloc(e->n, sizeof *e->h);
    if (!e->h)
        return -1;
    for (size_t i = 1; i < e->n; i++) {
        if (!e->s[i].usable)
            continue;
        const char *name = sec_name(e, i);
        host *h = &e->h[e->nh];
        *h = (host){i, e->s[i].off, e->s[i].off + e->s[i].size, plain_roles(e, i), NULL, 0, 0};
        if (name && strcmp(name, ".BTF") == 0 && btf_host(e, h) != 0)
            return -1;
        if (h->roles)
            e->nh++;
    }
    qsort(e->h, e->nh, sizeof *e->h, cmp_host);
    return 0;
}

/* Parses an ELF file and indexes its host sections: 0, -1 when p is not an
 * ELF object this module reads, -2 when out of memory. */
static int elf_open(elf_file *e, const uint8_t *p, size_t len)
{
    int rc = elf_parse_headers(e, p, len);
    if (rc == 0 && index_hosts(e) != 0)
        rc = -2;
    if (rc != 0)
        elf_free(e);
    return rc;
}

/* The first host whose section ends after pos (hosts do not overlap). */
static size_t host_from(const elf_file *e, uint64_t pos)
{
    size_t lo = 0, hi = e->nh;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e->h[mid].end <= pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- fields ---- */

/* The transform's state (below); rewrite() renumbers one field in its
 * output. emit() and rewrite() are forced inline: every field of a base
 * passes through them when a decoder reads it (300k fields for a 5 MB
 * module), and inlined at each call site, with the field's kind and width
 * as constants, they cost 30% fewer instructions than as calls. */
#define FIELD_INLINE static inline __attribute__((always_inline))
typedef struct rewriter rewriter;
FIELD_INLINE void rewrite(rewriter *rw, uint64_t off, uint32_t cls, unsigned width);

typedef struct {
    field_fn fn; /* called for each field, unless rw is set */
    void *ctx;
    rewriter *rw;  /* the transform: fields are rewritten on the spot */
    uint64_t a, b; /* fields that meet [a, b) */
} field_sink;

FIELD_INLINE int emit(const field_sink *f, uint64_t off, uint32_t kind, size_t sec, uint8_t width)
{
    if (off + width <= f->a || off >= f->b)
        return 0;
    uint32_t cls = kind | (uint32_t)sec << 3;
    if (f->rw) {
        rewrite(f->rw, off, cls, width);
        return 0;
    }
    field fd = {off, cls, width};
    return f->fn(f->ctx, &fd);
}

/* The entries of a table of 24-byte entries at [off, off + count * 24) that
 * meet [a, b): first index and one past the last. */
static void entry_range(uint64_t off, uint64_t count, uint64_t a, uint64_t b, uint64_t *i0,
                        uint64_t *i1)
{
    *i0 = a > off ? (a - off) / ENT : 0;
    *i1 = b > off ? (b - off + ENT - 1) / ENT : 0;
    if (*i1 > count)
        *i1 = count;
}

static int symtab_fields(const elf_file *e, const field_sink *f)
{
    const elf_sec *s = &e->s[e->symtab];
    uint64_t i0, i1;
    entry_range(s->off, e->nsyms, f->a, f->b, &i0, &i1);
    for (uint64_t i = i0 ? i0 : 1; i < i1; i++) {
        uint64_t at = s->off + ENT * i;
        const uint8_t *sym = e->p + at;
        uint32_t shndx = le16(sym + 6), type = sym[4] & 0xf;
        if (le32(sym) != 0 && emit(f, at, K_STRTAB, 0, 4))
            return -1;
        if (!sec_defined(e, shndx))
            continue;
        if (emit(f, at + 6, K_SHNDX, 0, 2))
            return -1;
        if (type != STT_SECTION && type != STT_FILE && emit(f, at + 8, K_SECOFF, shndx, 8))
            return -1;
    }
    return 0;
}

/* The section a section symbol stands for, or 0. */
static uint32_t section_symbol(const elf_file *e, uint32_t sym)
{
    const uint8_t *p = e->p + e->s[e->symtab].off + ENT * (size_t)sym;
    uint32_t shndx = le16(p + 6);
    return (p[4] & 0xf) == STT_SECTION && sec_defined(e, shndx) ? shndx : 0;
}

static int rela_fields(const elf_file *e, size_t k, const field_sink *f)
{
    const elf_sec *s = &e->s[k];
    uint64_t i0, i1;
    entry_range(s->off, s->size / ENT, f->a, f->b, &i0, &i1);
    for (uint64_t i = i0; i < i1; i++) {
        uint64_t at = s->off + ENT * i;
        uint32_t sym = le32(e->p + at + 12);
        if (emit(f, at, K_SECOFF, s->info, 8))
            return -1;
        if (sym == 0 || sym >= e->nsyms)
            continue;
        if (emit(f, at + 12, K_SYMIDX, 0, 4))
            return -1;
        uint32_t target = section_symbol(e, sym);
        if (target && emit(f, at + 16, K_SECOFF, target, 8))
            return -1;
    }
    return 0;
}

static int btf_fields(const elf_file *e, const host *h, const field_sink *f)
{
    uint64_t a = f->a > h->bstart ? f->a : h->bstart, b = f->b < h->bend ? f->b : h->bend;
    if (a >= b)
        return 0;
    /* Words are 4-aligned from bstart; start with the one that holds a. */
    for (uint64_t w = (a - h->bstart) / 4; h->bstart + 4 * w + 4 <= h->bend; w++) {
        uint64_t at = h->bstart + 4 * w;
        if (at >= b)
            break;
        unsigned code = (h->btf[w / 4] >> (2 * (w % 4))) & 3;
        if (code == BW_NONE || le32(e->p + at) == 0)
            continue;
        if (emit(f, at, code == BW_STR ? K_BTF_STR : K_BTF_TYPE, 0, 4))
            return -1;
    }
    return 0;
}

/* The fields of host h that meet [f->a, f->b): symbol or relocation fields
 * first, then .BTF's, each in increasing offset (where a section has two
 * roles and fields overlap, the later one wins). */
static int host_fields(const elf_file *e, const host *h, const field_sink *f)
{
    if ((h->roles & ROLE_SYMTAB) && symtab_fields(e, f))
        return -1;
    if ((h->roles & ROLE_RELA) && rela_fields(e, h->sec, f))
        return -1;
    if ((h->roles & ROLE_BTF) && btf_fields(e, h, f))
        return -1;
    return 0;
}

/* Every field of e that meets [f->a, f->b), host by host. */
static int walk_fields(const elf_file *e, const field_sink *f)
{
    for (size_t i = host_from(e, f->a); i < e->nh && e->h[i].start < f->b; i++)
        if (host_fields(e, &e->h[i], f))
            return -1;
    return 0;
}

static int fields_in(const elf_file *e, uint64_t a, uint64_t b, field_fn fn, void *ctx)
{
    field_sink f = {fn, ctx, NULL, a, b};
    return walk_fields(e, &f);
}

/* ---- the map ---- */

typedef struct {
    uint64_t from;
    uint64_t delta;
} segment;

typedef struct {
    uint32_t cls;
    segment *seg;
    size_t nseg;
    size_t hint; /* the segment used last (a class's values mostly increase) */
    /* Decoder, classes of many segments: bucket[i] is the segment holding
     * seg[0].from + (i << shift), for i <= nbucket, so that a lookup
     * searches only the segments between two buckets. */
    uint32_t *bucket;
    size_t nbucket;
    unsigned shift;
} class_map;

typedef struct {
    class_map *c;
    size_t n;
} map_t;

static void map_free(map_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        dmem_free(m->c[i].seg);
        dmem_free(m->c[i].bucket);
    }
    dmem_free(m->c);
    m->c = NULL;
    m->n = 0;
}

static delta_status parse_segments(const uint8_t *p, size_t n, size_t *pos, class_map *c)
{
    uint64_t nseg;
    if (varint_get(p, n, pos, &nseg) || nseg == 0 || nseg > MAX_SEGMENTS || nseg > n - *pos)
        return DELTA_ECORRUPT;
    c->seg = dmem_alloc((size_t)nseg * sizeof *c->seg);
    if (!c->seg)
        return DELTA_ENOMEM;
    uint64_t from = 0, delta = 0;
    for (size_t i = 0; i < nseg; i++) {
        uint64_t gap, zd;
        if (varint_get(p, n, pos, &gap) || varint_get(p, n, pos, &zd))
            return DELTA_ECORRUPT;
        if ((i > 0 && gap == 0) || gap > UINT64_MAX - from)
            return DELTA_ECORRUPT;
        from += gap;
        delta += (uint64_t)unzigzag(zd);
        c->seg[i] = (segment){from, delta};
    }
    c->nseg = (size_t)nseg;
    return DELTA_OK;
}

static delta_status parse_class(const uint8_t *p, size_t n, size_t *pos, size_t nsec, uint32_t prev,
                                class_map *c)
{
    uint64_t kind, sec = 0;
    if (varint_get(p, n, pos, &kind) || kind < K_SYMIDX || kind > K_LAST)
        return DELTA_ECORRUPT;
    if (kind == K_SECOFF && (varint_get(p, n, pos, &sec) || sec == 0 || sec >= nsec))
        return DELTA_ECORRUPT;
    c->cls = (uint32_t)kind | (uint32_t)sec << 3;
    if (prev != 0 && c->cls <= prev)
        return DELTA_ECORRUPT;
    return parse_segments(p, n, pos, c);
}

static delta_status map_parse(const uint8_t *p, size_t n, size_t nsec, map_t *m)
{
    size_t pos = 0;
    uint64_t count;
    memset(m, 0, sizeof *m);
    if (varint_get(p, n, &pos, &count) || count == 0 || count > n)
        return DELTA_ECORRUPT;
    m->c = dmem_calloc((size_t)count, sizeof *m->c);
    if (!m->c)
        return DELTA_ENOMEM;
    m->n = (size_t)count;
    for (size_t i = 0; i < m->n; i++) {
        delta_status st = parse_class(p, n, &pos, nsec, i ? m->c[i - 1].cls : 0, &m->c[i]);
        if (st != DELTA_OK)
            return st;
    }
    return pos == n ? DELTA_OK : DELTA_ECORRUPT;
}

static uint64_t read_w(const uint8_t *p, int w)
{
    return w == 8 ? le64(p) : w == 4 ? le32(p) : le16(p);
}

/* Classes with fewer segments are searched whole. */
#define BUCKET_MIN_SEGMENTS 32

/* The value where bucket i starts (saturating). */
static uint64_t bucket_start(const class_map *c, size_t i)
{
    uint64_t lo = c->seg[0].from;
    if (c->shift > 0 && (uint64_t)i > (UINT64_MAX - lo) >> c->shift)
        return UINT64_MAX;
    uint64_t off = (uint64_t)i << c->shift;
    return off > UINT64_MAX - lo ? UINT64_MAX : lo + off;
}

/* Builds c's bucket index: about as many buckets as segments (a power of
 * two), each spanning 2^shift values from the first start. */
static delta_status index_class(class_map *c)
{
    if (c->nseg < BUCKET_MIN_SEGMENTS)
        return DELTA_OK;
    size_t nb = 1;
    while (nb < c->nseg)
        nb <<= 1;
    uint64_t span = c->seg[c->nseg - 1].from - c->seg[0].from;
    unsigned shift = 0;
    while ((span >> shift) >= nb)
        shift++;
    c->bucket = dmem_alloc((nb + 1) * sizeof *c->bucket);
    if (!c->bucket)
        return DELTA_ENOMEM;
    c->nbucket = nb;
    c->shift = shift;
    size_t k = 0;
    for (size_t i = 0; i <= nb; i++) {
        uint64_t v = bucket_start(c, i);
        while (k + 1 < c->nseg && c->seg[k + 1].from <= v)
            k++;
        c->bucket[i] = (uint32_t)k;
    }
    return DELTA_OK;
}

/* The segment holding v: the last one whose start is <= v, or nseg when v is
 * below the first. Tries the hint first; otherwise a binary search, between
 * two buckets when the class has them, without data-dependent branches
 * (values of most classes come in no order, and a mispredicted branch per
 * step would cost more than the search). */
static size_t find_segment(const class_map *c, uint64_t v)
{
    size_t k = c->hint;
    if (c->seg[k].from <= v && (k + 1 == c->nseg || v < c->seg[k + 1].from))
        return k;
    if (v < c->seg[0].from)
        return c->nseg;
    const segment *s = c->seg;
    size_t n = c->nseg;
    if (c->bucket) {
        uint64_t i = (v - c->seg[0].from) >> c->shift;
        if (i >= c->nbucket)
            return c->nseg - 1;
        s = c->seg + c->bucket[i];
        n = (size_t)(c->bucket[i + 1] - c->bucket[i]) + 1;
    }
    for (; n > 1; n -= n / 2)
        s = s[n / 2].from <= v ? s + n / 2 : s;
    return (size_t)(s - c->seg);
}

/* The class's new value for v, a field of w bytes. */
static uint64_t remap(class_map *c, uint64_t v, int w)
{
    size_t k = find_segment(c, v);
    if (k == c->nseg)
        return v;
    c->hint = k;
    uint64_t r = v + c->seg[k].delta;
    return w == 8 ? r : r & (((uint64_t)1 << (8 * w)) - 1);
}

/* ---- the transform ---- */

struct elfmap_xform {
    elf_file e;
    map_t m;
    class_map **secoff;          /* per section: its SECOFF class, or NULL */
    class_map *kind[K_LAST + 1]; /* the other classes, by kind */
};

static class_map *class_of(const elfmap_xform *x, uint32_t cls)
{
    uint32_t kind = cls & 7;
    return kind == K_SECOFF ? x->secoff[cls >> 3] : x->kind[kind];
}

struct rewriter {
    elfmap_xform *x;
    uint64_t pos; /* dst holds the transformed base from here */
    size_t n;
    uint8_t *dst;
};

/* Writes the part of the new value of the field at off that falls into dst
 * (an unchanged value is not written: where two fields overlap, the later
 * one only wins if it changes). */
FIELD_INLINE void rewrite(rewriter *rw, uint64_t off, uint32_t cls, unsigned width)
{
    class_map *c = class_of(rw->x, cls);
    if (!c)
        return;
    uint64_t old = read_w(rw->x->e.p + off, (int)width);
    uint64_t neu = remap(c, old, (int)width);
    if (neu == old)
        return;
    if (off >= rw->pos && off + width <= rw->pos + rw->n) {
        uint8_t *d = rw->dst + (off - rw->pos);
        if (width == 8)
            put_le64(d, neu);
        else if (width == 4)
            put_le32(d, (uint32_t)neu);
        else
            d[0] = (uint8_t)neu, d[1] = (uint8_t)(neu >> 8);
        return;
    }
    for (unsigned i = 0; i < width; i++) {
        uint64_t at = off + i;
        if (at >= rw->pos && at < rw->pos + rw->n)
            rw->dst[at - rw->pos] = (uint8_t)(neu >> (8 * i));
    }
}

void elfmap_xform_read(elfmap_xform *x, uint64_t pos, size_t n, uint8_t *dst)
{
    memcpy(dst, x->e.p + pos, n);
    rewriter rw = {x, pos, n, dst};
    field_sink f = {NULL, NULL, &rw, pos, pos + n};
    /* rewriting never fails */
    (void)walk_fields(&x->e, &f);
}

static delta_status xform_tables(elfmap_xform *x)
{
    x->secoff = dmem_calloc(x->e.n, sizeof *x->secoff);
    if (!x->secoff)
        return DELTA_ENOMEM;
    for (size_t i = 0; i < x->m.n; i++) {
        class_map *c = &x->m.c[i];
        if (index_class(c) != DELTA_OK)
            return DELTA_ENOMEM;
        if ((c->cls & 7) == K_SECOFF)
            x->secoff[c->cls >> 3] = c;
        else
            x->kind[c->cls & 7] = c;
    }
    return DELTA_OK;
}

delta_status elfmap_xform_new(const uint8_t *base, size_t len, const uint8_t *map, size_t n,
                              elfmap_xform **out)
{
    *out = NULL;
    elfmap_xform *x = dmem_calloc(1, sizeof *x);
    if (!x)
        return DELTA_ENOMEM;
    int rc = elf_open(&x->e, base, len);
    delta_status st = rc == 0 ? DELTA_OK : rc == -1 ? DELTA_ECORRUPT : DELTA_ENOMEM;
    if (st == DELTA_OK)
        st = map_parse(map, n, x->e.n, &x->m);
    if (st == DELTA_OK)
        st = xform_tables(x);
    if (st != DELTA_OK) {
        elfmap_xform_free(x);
        return st;
    }
    *out = x;
    return DELTA_OK;
}

void elfmap_xform_free(elfmap_xform *x)
{
    if (!x)
        return;
    map_free(&x->m);
    dmem_free(x->secoff);
    elf_free(&x->e);
    dmem_free(x);
}
/* ---- learning (encoder) ---- */

typedef struct {
    uint32_t cls;
    uint8_t width;
    uint64_t from, to;
} pair;

typedef struct {
    pair *v;
    size_t n, cap;
} pair_list;

static int add_pair(pair_list *l, pair p)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        pair *v = dmem_realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = p;
    return 0;
}

/* Target section index -> base section index with the same name and the
 * same rank among sections of that name; 0 when there is none. */
static uint32_t *section_translation(const elf_file *b, const elf_file *t)
{
    uint32_t *tr = dmem_calloc(t->n, sizeof *tr);
    if (!tr)
        return NULL;
    for (size_t i = 1; i < t->n; i++) {
        const char *name = sec_name(t, i);
        size_t rank = 0;
        for (size_t k = 1; name && k < i; k++)
            rank += sec_name(t, k) && strcmp(sec_name(t, k), name) == 0;
        for (size_t k = 1; name && k < b->n; k++) {
            const char *bn = sec_name(b, k);
            if (bn && strcmp(bn, name) == 0 && rank-- == 0) {
                tr[i] = (uint32_t)k;
                break;
            }
        }
    }
    return tr;
}

static uint32_t translate_cls(uint32_t cls, const uint32_t *tr)
{
    if ((cls & 7) != K_SECOFF)
        return cls;
    uint32_t bsec = tr[cls >> 3];
    return bsec ? K_SECOFF | bsec << 3 : 0;
}

typedef struct {
    const elf_file *b, *t;
    const uint32_t *tr;
    const bsz_covers *cv;
    pair_list *out;
} learn_ctx;

typedef struct {
    uint64_t off;
    uint32_t cls;
    uint8_t width;
    int found;
} twin;

static int find_twin(void *ctx, const field *fd)
{
    twin *w = ctx;
    if (fd->off == w->off && fd->cls == w->cls && fd->width == w->width)
        w->found = 1;
    return 0;
}

/* The cover holding target bytes [off, off + n), or NULL. */
static const bsz_cover *cover_at(const bsz_covers *cv, uint64_t off, size_t n)
{
    size_t lo = 0, hi = cv->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cv->v[mid].new_pos + cv->v[mid].len <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == cv->n || off < cv->v[lo].new_pos || off + n > cv->v[lo].new_pos + cv->v[lo].len)
        return NULL;
    return &cv->v[lo];
}

/* The pair for target field fd, if a cover aligns it with a field of the
 * same class in the base. */
static int pair_for(void *ctx, const field *fd)
{
    const learn_ctx *lc = ctx;
    const bsz_cover *v = cover_at(lc->cv, fd->off, fd->width);
    uint32_t cls = translate_cls(fd->cls, lc->tr);
    if (!v || cls == 0)
        return 0;
    twin w = {fd->off - v->new_pos + v->old_pos, cls, fd->width, 0};
    if (fields_in(lc->b, w.off, w.off + 1, find_twin, &w) != 0 || !w.found)
        return 0;
    return add_pair(lc->out, (pair){cls, fd->width, read_w(lc->b->p + w.off, fd->width),
                                    read_w(lc->t->p + fd->off, fd->width)});
}

static uint64_t diff_of(const pair *p)
{
    uint64_t d = p->to - p->from;
    if (p->width < 8) {
        /* sign-extend the width's difference */
        unsigned bits = 8u * p->width;
        d &= ((uint64_t)1 << bits) - 1;
        if (d >> (bits - 1))
            d |= ~(((uint64_t)1 << bits) - 1);
    }
    return d;
}

static int cmp_pair(const void *a, const void *b)
{
    const pair *x = a, *y = b;
    if (x->cls != y->cls)
        return x->cls < y->cls ? -1 : 1;
    if (x->from != y->from)
        return x->from < y->from ? -1 : 1;
    uint64_t dx = diff_of(x), dy = diff_of(y);
    return (dx > dy) - (dx < dy);
}

typedef struct {
    uint64_t from, delta;
    size_t support;
} run;

/* Runs of equal difference over one class's pairs (sorted), one entry per
 * distinct old value, keeping its most frequent difference. */
static size_t make_runs(const pair *p, size_t n, run *r)
{
    size_t nr = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i, best = i, best_count = 0;
        while (j < n && p[j].from == p[i].from) {
            size_t k = j;
            while (k < n && p[k].from == p[i].from && diff_of(&p[k]) == diff_of(&p[j]))
                k++;
            if (k - j > best_count) {
                best_count = k - j;
                best = j;
            }
            j = k;
        }
        uint64_t d = diff_of(&p[best]);
        if (nr > 0 && r[nr - 1].delta == d)
            r[nr - 1].support++;
        else
            r[nr++] = (run){p[i].from, d, 1};
        i = j;
    }
    return nr;
}

/* Drops runs too weakly supported to pay for a segment — single pairs between
 * runs of one difference, and in classes with many pairs (where the runs
 * come from many small code changes and most short ones are noise) runs of
 * fewer than 4 or 6 pairs — then merges runs that became neighbours with
 * equal differences, and drops leading runs of difference 0. */
static size_t denoise(run *r, size_t n, size_t total)
{
    size_t min_support = total < 1024 ? 1 : total < 4096 ? 4 : 6;
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        int lone = out > 0 && (r[i].support < min_support || (r[i].support < 2 && i + 1 < n &&
                                                              r[out - 1].delta == r[i + 1].delta));
        if (lone)
            continue;
        if (out > 0 && r[out - 1].delta == r[i].delta) {
            r[out - 1].support += r[i].support;
            continue;
        }
        r[out++] = r[i];
    }
    size_t start = 0;
    while (start < out && r[start].delta == 0)
        start++;
    memmove(r, r + start, (out - start) * sizeof *r);
    return out - start;
}

static int emit_class(dbuf *m, uint32_t cls, const run *r, size_t n)
{
    if (dbuf_varint(m, cls & 7) || ((cls & 7) == K_SECOFF && dbuf_varint(m, cls >> 3)) ||
        dbuf_varint(m, n))
        return -1;
    uint64_t prev = 0, prev_delta = 0;
    for (size_t i = 0; i < n; i++) {
        if (dbuf_varint(m, r[i].from - prev) ||
            dbuf_varint(m, zigzag((int64_t)(r[i].delta - prev_delta))))
            return -1;
        prev = r[i].from;
        prev_delta = r[i].delta;
    }
    return 0;
}

/* Fits every class and serializes the map body (without the class count). */
static int fit_all(pair_list *pl, dbuf *body, size_t *nclasses)
{
    qsort(pl->v, pl->n, sizeof *pl->v, cmp_pair);
    run *r = dmem_alloc((pl->n + 1) * sizeof *r);
    if (!r)
        return -1;
    *nclasses = 0;
    for (size_t i = 0; i < pl->n;) {
        size_t j = i;
        while (j < pl->n && pl->v[j].cls == pl->v[i].cls)
            j++;
        size_t nr = denoise(r, make_runs(pl->v + i, j - i, r), j - i);
        if (nr > 0) {
            if (emit_class(body, pl->v[i].cls, r, nr)) {
                dmem_free(r);
                return -1;
            }
            (*nclasses)++;
        }
        i = j;
    }
    dmem_free(r);
    return 0;
}

static delta_status learn(const elf_file *b, const elf_file *t, const bsz_covers *cv, dbuf *map)
{
    pair_list pl = {0};
    dbuf body = {0};
    uint32_t *tr = section_translation(b, t);
    delta_status st = DELTA_ENOMEM;
    size_t nclasses = 0;
    if (tr) {
        learn_ctx lc = {b, t, tr, cv, &pl};
        if (fields_in(t, 0, t->len, pair_for, &lc) == 0 && fit_all(&pl, &body, &nclasses) == 0)
            st = DELTA_OK;
    }
    if (st == DELTA_OK && nclasses > 0 &&
        (dbuf_varint(map, nclasses) || dbuf_put(map, body.p, body.len)))
        st = DELTA_ENOMEM;
    dmem_free(tr);
    dmem_free(pl.v);
    dbuf_free(&body);
    return st;
}

/* The preconditioned base: the whole of it through the transform. */
static delta_status precondition(const uint8_t *base, size_t base_len, const dbuf *map,
                                 uint8_t **out)
{
    elfmap_xform *x;
    delta_status st = elfmap_xform_new(base, base_len, map->p, map->len, &x);
    if (st != DELTA_OK)
        return st;
    *out = dmem_alloc(base_len);
    if (*out)
        elfmap_xform_read(x, 0, base_len, *out);
    else
        st = DELTA_ENOMEM;
    elfmap_xform_free(x);
    return st;
}

delta_status elfmap_build(const uint8_t *base, size_t base_len, const uint8_t *target,
                          size_t target_len, const bsz_covers *covers, elfmap_result *out)
{
    memset(out, 0, sizeof *out);
    elf_file b, t;
    int rb = elf_open(&b, base, base_len);
    if (rb != 0)
        return rb == -1 ? DELTA_OK : DELTA_ENOMEM;
    int rt = elf_open(&t, target, target_len);
    if (rt != 0) {
        elf_free(&b);
        return rt == -1 ? DELTA_OK : DELTA_ENOMEM;
    }
    delta_status st = learn(&b, &t, covers, &out->map);
    elf_free(&b);
    elf_free(&t);
    if (st != DELTA_OK || out->map.len == 0)
        return st;
    return precondition(base, base_len, &out->map, &out->base);
}

void elfmap_result_free(elfmap_result *r)
{
    dbuf_free(&r->map);
    dmem_free(r->base);
    r->base = NULL;
}
