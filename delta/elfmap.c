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
 * one host section and the rewritten sections can be copied independently.
 *
 * Learning (encoder): the covers found against the plain base align target
 * bytes with base bytes; each target field whose aligned base position holds
 * a field of the same class gives a pair (old value, new value). Per class,
 * the pairs sorted by old value form runs of equal difference; runs too
 * weakly supported to pay for themselves are absorbed by their neighbours
 * (see denoise), and the remaining runs become segments "from value f on,
 * add d", applied modulo the field's width.
 *
 * Applying (decoder and encoder alike): the base's fields are extracted by
 * the same code, each field of a mapped class is rewritten in a copy of its
 * host section, and an elfmap_view stitches base and copies together. The map
 * is validated completely (known classes in increasing order, sections that
 * exist, segment starts strictly increasing); a bad map is DELTA_ECORRUPT.
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

typedef struct {
    uint32_t name, type, link, info;
    uint64_t off, size, entsize;
    int usable; /* inside the file and not overlapping an earlier usable one */
} elf_sec;

typedef struct {
    const uint8_t *p;
    size_t len;
    elf_sec *s;
    size_t n;
    size_t shstrndx;
    size_t symtab; /* 0 = none */
    size_t nsyms;
} elf_file;

typedef struct {
    uint64_t off;
    uint32_t cls; /* kind | section << 3 */
    uint16_t host;
    uint8_t width;
} field;

typedef struct {
    field *v;
    size_t n, cap;
} field_list;

/* Extraction calls this for every field; non-zero stops it. */
typedef int (*field_fn)(void *ctx, const field *f);

typedef struct {
    field_fn fn;
    void *ctx;
} field_sink;

/* ---- parsing ---- */

static int range_ok(uint64_t off, uint64_t size, size_t len)
{
    return off <= len && size <= len - off;
}

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

static int elf_parse(elf_file *e, const uint8_t *p, size_t len)
{
    memset(e, 0, sizeof *e);
    if (len < 64 || memcmp(p,
                           "\x7f"
                           "ELF\x02\x01",
                           6) != 0)
        return -1;
    uint64_t shoff = le64(p + 0x28);
    size_t shnum = le16(p + 0x3c);
    if (le16(p + 0x3a) != 64 || shnum == 0 || shnum >= SHN_LORESERVE ||
        !range_ok(shoff, (uint64_t)shnum * 64, len) || le16(p + 0x3e) >= shnum)
        return -1;
    e->s = calloc(shnum, sizeof *e->s);
    if (!e->s)
        return -1;
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
    free(e->s);
    e->s = NULL;
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

/* ---- field extraction ---- */

static int add_field(const field_sink *f, uint64_t off, uint32_t kind, size_t sec, size_t host,
                     uint8_t width)
{
    field fd = {off, kind | (uint32_t)sec << 3, (uint16_t)host, width};
    return f->fn(f->ctx, &fd);
}

static int list_add(void *ctx, const field *fd)
{
    field_list *f = ctx;
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 1024;
        field *v = realloc(f->v, cap * sizeof *v);
        if (!v)
            return -1;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = *fd;
    return 0;
}

static int sec_defined(const elf_file *e, uint32_t shndx)
{
    return shndx > 0 && shndx < e->n && shndx < SHN_LORESERVE;
}

static int symtab_fields(const elf_file *e, const field_sink *f)
{
    const elf_sec *s = &e->s[e->symtab];
    for (size_t i = 1; i < e->nsyms; i++) {
        const uint8_t *sym = e->p + s->off + ENT * i;
        uint64_t at = s->off + ENT * i;
        uint32_t shndx = le16(sym + 6), type = sym[4] & 0xf;
        if (le32(sym) != 0 && add_field(f, at, K_STRTAB, 0, e->symtab, 4))
            return -1;
        if (!sec_defined(e, shndx))
            continue;
        if (add_field(f, at + 6, K_SHNDX, 0, e->symtab, 2))
            return -1;
        if (type != STT_SECTION && type != STT_FILE &&
            add_field(f, at + 8, K_SECOFF, shndx, e->symtab, 8))
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
    if (!sec_defined(e, s->info))
        return 0;
    for (uint64_t at = s->off; at + ENT <= s->off + s->size; at += ENT) {
        uint32_t sym = le32(e->p + at + 12);
        if (add_field(f, at, K_SECOFF, s->info, k, 8))
            return -1;
        if (sym == 0 || sym >= e->nsyms)
            continue;
        if (add_field(f, at + 12, K_SYMIDX, 0, k, 4))
            return -1;
        uint32_t target = section_symbol(e, sym);
        if (target && add_field(f, at + 16, K_SECOFF, target, k, 8))
            return -1;
    }
    return 0;
}

/* Bytes of kind-specific data after a btf_type, and where its type/name
 * fields are: sets *ok = 0 for an unknown kind. */
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

static int btf_word(const elf_file *e, const field_sink *f, uint64_t at, uint32_t kind, size_t host)
{
    return le32(e->p + at) != 0 ? add_field(f, at, kind, 0, host, 4) : 0;
}

static int btf_members(const elf_file *e, const field_sink *f, uint64_t at, const btf_shape *b,
                       size_t host)
{
    for (uint64_t m = at; b->stride && m + b->stride <= at + b->extra; m += b->stride) {
        if ((b->m_str >= 0 && btf_word(e, f, m + (uint64_t)b->m_str, K_BTF_STR, host)) ||
            (b->m_type >= 0 && btf_word(e, f, m + (uint64_t)b->m_type, K_BTF_TYPE, host)) ||
            (b->m_type2 >= 0 && btf_word(e, f, m + (uint64_t)b->m_type2, K_BTF_TYPE, host)))
            return -1;
    }
    return 0;
}

static int btf_types(const elf_file *e, size_t k, uint64_t pos, uint64_t end, const field_sink *f)
{
    while (pos + 12 <= end) {
        uint32_t info = le32(e->p + pos + 4);
        btf_shape b;
        if (!btf_kind_shape((info >> 24) & 0x1f, info & 0xffff, &b) || b.extra > end - pos - 12)
            return 0;
        if (btf_word(e, f, pos, K_BTF_STR, k) ||
            (b.head_type && btf_word(e, f, pos + 8, K_BTF_TYPE, k)) ||
            btf_members(e, f, pos + 12, &b, k))
            return -1;
        pos += 12 + b.extra;
    }
    return 0;
}

static int btf_fields(const elf_file *e, size_t k, const field_sink *f)
{
    const elf_sec *s = &e->s[k];
    const uint8_t *h = e->p + s->off;
    if (s->size < 24 || le16(h) != 0xeb9f || h[2] != 1)
        return 0;
    uint64_t hdr = le32(h + 4), toff = le32(h + 8), tlen = le32(h + 12);
    if (hdr < 24 || hdr > s->size || toff > s->size - hdr || tlen > s->size - hdr - toff)
        return 0;
    uint64_t start = s->off + hdr + toff;
    return btf_types(e, k, start, start + tlen, f);
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

static int cmp_field(const void *a, const void *b)
{
    const field *x = a, *y = b;
    return (x->off > y->off) - (x->off < y->off);
}

static int extract(elf_file *e, const field_sink *f)
{
    find_symtab(e);
    if (e->symtab && symtab_fields(e, f))
        return -1;
    for (size_t i = 1; i < e->n; i++) {
        const elf_sec *s = &e->s[i];
        if (!s->usable)
            continue;
        const char *name = sec_name(e, i);
        if (e->symtab && s->type == SHT_RELA && s->link == e->symtab && s->entsize == ENT &&
            rela_fields(e, i, f))
            return -1;
        if (name && strcmp(name, ".BTF") == 0 && btf_fields(e, i, f))
            return -1;
    }
    return 0;
}

/* All fields of e, sorted by offset. */
static int extract_list(elf_file *e, field_list *f)
{
    field_sink sink = {list_add, f};
    if (extract(e, &sink) != 0)
        return -1;
    qsort(f->v, f->n, sizeof *f->v, cmp_field);
    return 0;
}

/* ---- the view ---- */

delta_status elfmap_view_plain(elfmap_view *v, const uint8_t *base, size_t len)
{
    memset(v, 0, sizeof *v);
    v->pieces = malloc(sizeof *v->pieces);
    if (!v->pieces)
        return DELTA_ENOMEM;
    v->pieces[0] = (elfmap_piece){0, len, base};
    v->npieces = 1;
    v->len = len;
    return DELTA_OK;
}

const uint8_t *elfmap_view_at(const elfmap_view *v, uint64_t pos, size_t *run)
{
    size_t lo = 0, hi = v->npieces;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (v->pieces[mid].off <= pos)
            lo = mid;
        else
            hi = mid;
    }
    const elfmap_piece *p = &v->pieces[lo];
    *run = p->off + p->len - (size_t)pos;
    return p->p + (pos - p->off);
}

void elfmap_view_free(elfmap_view *v)
{
    for (size_t i = 0; i < v->ncopies; i++)
        free(v->copies[i]);
    free(v->copies);
    free(v->pieces);
    memset(v, 0, sizeof *v);
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
} class_map;

typedef struct {
    class_map *c;
    size_t n;
} map_t;

static void map_free(map_t *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->c[i].seg);
    free(m->c);
    m->c = NULL;
    m->n = 0;
}

static delta_status parse_segments(const uint8_t *p, size_t n, size_t *pos, class_map *c)
{
    uint64_t nseg;
    if (varint_get(p, n, pos, &nseg) || nseg == 0 || nseg > MAX_SEGMENTS || nseg > n - *pos)
        return DELTA_ECORRUPT;
    c->seg = malloc((size_t)nseg * sizeof *c->seg);
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
    m->c = calloc((size_t)count, sizeof *m->c);
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

static const class_map *map_find(const map_t *m, uint32_t cls)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->c[mid].cls == cls)
            return &m->c[mid];
        if (m->c[mid].cls < cls)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static uint64_t read_w(const uint8_t *p, int w)
{
    return w == 8 ? le64(p) : w == 4 ? le32(p) : le16(p);
}

static void write_w(uint8_t *p, int w, uint64_t v)
{
    for (int i = 0; i < w; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The class's new value for v; *hint is the segment used last time, tried
 * first (a class's values mostly come in increasing order). */
static uint64_t remap(const class_map *c, uint64_t v, int w, size_t *hint)
{
    size_t k = *hint;
    size_t lo;
    if (k < c->nseg && c->seg[k].from <= v && (k + 1 == c->nseg || v < c->seg[k + 1].from)) {
        lo = k + 1;
    } else if (k + 1 < c->nseg && c->seg[k + 1].from <= v &&
               (k + 2 == c->nseg || v < c->seg[k + 2].from)) {
        lo = k + 2;
    } else {
        size_t hi = c->nseg;
        lo = 0;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (c->seg[mid].from <= v)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    if (lo == 0)
        return v;
    *hint = lo - 1;
    uint64_t r = v + c->seg[lo - 1].delta;
    return w == 8 ? r : r & (((uint64_t)1 << (8 * w)) - 1);
}

/* ---- applying ---- */

typedef struct {
    const elf_file *e;
    const map_t *m;
    elfmap_view *v;
    uint8_t **copy;        /* per section index: its rewritten copy, or NULL */
    const class_map *last; /* the class of the previous field (fields come in runs) */
    size_t hint;           /* remap's segment hint for that class */
} rewriter;

static int cmp_piece(const void *a, const void *b)
{
    const elfmap_piece *x = a, *y = b;
    return (x->off > y->off) - (x->off < y->off);
}

/* Builds the view's pieces: the copies, and the base between them. */
static delta_status build_pieces(elfmap_view *v, const elf_file *e, uint8_t **copy)
{
    size_t nc = 0;
    elfmap_piece *pc = malloc((2 * v->ncopies + 1) * sizeof *pc);
    elfmap_piece *out = malloc((2 * v->ncopies + 1) * sizeof *out);
    if (!pc || !out) {
        free(pc);
        free(out);
        return DELTA_ENOMEM;
    }
    for (size_t k = 1; k < e->n; k++)
        if (copy[k])
            pc[nc++] = (elfmap_piece){(size_t)e->s[k].off, (size_t)e->s[k].size, copy[k]};
    qsort(pc, nc, sizeof *pc, cmp_piece);
    size_t n = 0, at = 0;
    for (size_t i = 0; i < nc; i++) {
        if (pc[i].off > at)
            out[n++] = (elfmap_piece){at, pc[i].off - at, e->p + at};
        out[n++] = pc[i];
        at = pc[i].off + pc[i].len;
    }
    if (at < e->len || n == 0)
        out[n++] = (elfmap_piece){at, e->len - at, e->p + at};
    free(pc);
    v->pieces = out;
    v->npieces = n;
    v->len = e->len;
    return DELTA_OK;
}

/* The copy of host section k, made on first use. */
static uint8_t *copy_of(rewriter *rw, size_t k)
{
    if (rw->copy[k])
        return rw->copy[k];
    const elf_sec *s = &rw->e->s[k];
    uint8_t *c = malloc((size_t)s->size);
    if (!c)
        return NULL;
    memcpy(c, rw->e->p + s->off, (size_t)s->size);
    rw->copy[k] = c;
    rw->v->copies[rw->v->ncopies++] = c;
    return c;
}

static int rewrite_field(void *ctx, const field *fd)
{
    rewriter *rw = ctx;
    const class_map *c = rw->last;
    if (!c || c->cls != fd->cls) {
        c = map_find(rw->m, fd->cls);
        rw->hint = 0;
    }
    if (!c)
        return 0;
    rw->last = c;
    uint64_t old = read_w(rw->e->p + fd->off, fd->width);
    uint64_t neu = remap(c, old, fd->width, &rw->hint);
    if (neu == old)
        return 0;
    uint8_t *copy = copy_of(rw, fd->host);
    if (!copy)
        return -1;
    write_w(copy + (fd->off - rw->e->s[fd->host].off), fd->width, neu);
    return 0;
}

static delta_status apply_parsed(elf_file *e, const map_t *m, elfmap_view *v)
{
    rewriter rw = {e, m, v, calloc(e->n, sizeof(uint8_t *)), NULL, 0};
    v->copies = calloc(e->n, sizeof *v->copies);
    delta_status st = DELTA_ENOMEM;
    if (rw.copy && v->copies) {
        field_sink sink = {rewrite_field, &rw};
        if (extract(e, &sink) == 0)
            st = build_pieces(v, e, rw.copy);
    }
    free(rw.copy);
    return st;
}

delta_status elfmap_apply(const uint8_t *base, size_t len, const uint8_t *map, size_t n,
                          elfmap_view *out)
{
    memset(out, 0, sizeof *out);
    elf_file e;
    if (elf_parse(&e, base, len) != 0)
        return DELTA_ECORRUPT;
    map_t m;
    delta_status st = map_parse(map, n, e.n, &m);
    if (st == DELTA_OK)
        st = apply_parsed(&e, &m, out);
    if (st != DELTA_OK)
        elfmap_view_free(out);
    map_free(&m);
    elf_free(&e);
    return st;
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
        pair *v = realloc(l->v, cap * sizeof *v);
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
    uint32_t *tr = calloc(t->n, sizeof *tr);
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

static const field *field_at(const field_list *f, uint64_t off)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (f->v[mid].off == off)
            return &f->v[mid];
        if (f->v[mid].off < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
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
    const field_list *bf, *tf;
    const uint32_t *tr;
} learn_ctx;

/* The pair for target field fd inside cover cv, if its base twin exists. */
static int pair_for(const learn_ctx *lc, const field *fd, const bsz_cover *cv, pair_list *out)
{
    uint64_t q = fd->off - cv->new_pos + cv->old_pos;
    const field *bfd = field_at(lc->bf, q);
    uint32_t cls = translate_cls(fd->cls, lc->tr);
    if (!bfd || cls == 0 || bfd->cls != cls || bfd->width != fd->width)
        return 0;
    return add_pair(out, (pair){cls, fd->width, read_w(lc->b->p + q, fd->width),
                                read_w(lc->t->p + fd->off, fd->width)});
}

static int collect_pairs(const learn_ctx *lc, const bsz_covers *cv, pair_list *out)
{
    size_t c = 0;
    for (size_t i = 0; i < lc->tf->n; i++) {
        const field *fd = &lc->tf->v[i];
        while (c < cv->n && cv->v[c].new_pos + cv->v[c].len <= fd->off)
            c++;
        if (c == cv->n)
            break;
        const bsz_cover *v = &cv->v[c];
        if (fd->off < v->new_pos || fd->off + fd->width > v->new_pos + v->len)
            continue;
        if (pair_for(lc, fd, v, out))
            return -1;
    }
    return 0;
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
    run *r = malloc((pl->n + 1) * sizeof *r);
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
                free(r);
                return -1;
            }
            (*nclasses)++;
        }
        i = j;
    }
    free(r);
    return 0;
}

static delta_status learn(const elf_file *b, const elf_file *t, const bsz_covers *cv, dbuf *map)
{
    field_list bf = {0}, tf = {0};
    pair_list pl = {0};
    dbuf body = {0};
    uint32_t *tr = section_translation(b, t);
    delta_status st = DELTA_ENOMEM;
    size_t nclasses = 0;
    if (tr && extract_list((elf_file *)b, &bf) == 0 && extract_list((elf_file *)t, &tf) == 0) {
        learn_ctx lc = {b, t, &bf, &tf, tr};
        if (collect_pairs(&lc, cv, &pl) == 0 && fit_all(&pl, &body, &nclasses) == 0)
            st = DELTA_OK;
    }
    if (st == DELTA_OK && nclasses > 0 &&
        (dbuf_varint(map, nclasses) || dbuf_put(map, body.p, body.len)))
        st = DELTA_ENOMEM;
    free(tr);
    free(bf.v);
    free(tf.v);
    free(pl.v);
    dbuf_free(&body);
    return st;
}

static delta_status flatten(const elfmap_view *v, uint8_t **out)
{
    uint8_t *p = malloc(v->len ? v->len : 1);
    if (!p)
        return DELTA_ENOMEM;
    for (size_t i = 0; i < v->npieces; i++)
        memcpy(p + v->pieces[i].off, v->pieces[i].p, v->pieces[i].len);
    *out = p;
    return DELTA_OK;
}

delta_status elfmap_build(const uint8_t *base, size_t base_len, const uint8_t *target,
                          size_t target_len, const bsz_covers *covers, elfmap_result *out)
{
    memset(out, 0, sizeof *out);
    elf_file b, t;
    if (elf_parse(&b, base, base_len) != 0)
        return DELTA_OK;
    if (elf_parse(&t, target, target_len) != 0) {
        elf_free(&b);
        return DELTA_OK;
    }
    delta_status st = learn(&b, &t, covers, &out->map);
    elf_free(&b);
    elf_free(&t);
    if (st != DELTA_OK || out->map.len == 0)
        return st;
    elfmap_view v;
    st = elfmap_apply(base, base_len, out->map.p, out->map.len, &v);
    if (st == DELTA_OK)
        st = flatten(&v, &out->base);
    elfmap_view_free(&v);
    return st;
}

void elfmap_result_free(elfmap_result *r)
{
    dbuf_free(&r->map);
    free(r->base);
    r->base = NULL;
}
