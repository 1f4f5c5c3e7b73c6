/*
 * fuzz_bsz.c — libFuzzer target for the bsz decoder (delta/bsz_decode.c,
 * bsz_entropy.c, elfmap.c): every input is decoded as a bsz delta against
 * two fixed bases, a small ELF64 object (symbol table, relocations, .BTF, so
 * the ELF map is exercised) and plain bytes.
 *
 * How it works: a real delta only gets past the header when its base length
 * and CRC-64 match, which a mutator would never guess, so the target writes
 * the right values into those header fields before decoding (inputs shorter
 * than a header are decoded as they are). The decoder must end with a status
 * and never produce more than the target length it accepted; streamed
 * decoding in small chunks, every stream in line, must agree with in-memory
 * decoding with every compressed stream decoded ahead on a thread. Inputs whose
 * magic is not bsz are skipped (other decoders have their own targets).
 *
 * Seeds in tests/fuzz/corpus/fuzz_bsz are real deltas against these bases.
 * Run: build with -Dfuzz=true (see meson.build here), then
 *   ./fuzz_bsz tests/fuzz/corpus/fuzz_bsz
 */
#include <lzma.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "delta.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

enum { ELF_SIZE = 2048, SH_OFF = 1024, NSEC = 7 };

static void section(uint8_t *e, int i, uint32_t name, uint32_t type, uint64_t off, uint64_t size,
                    uint32_t link, uint32_t info, uint64_t entsize)
{
    uint8_t *h = e + SH_OFF + 64 * i;
    put32(h, name);
    put32(h + 4, type);
    put64(h + 24, off);
    put64(h + 32, size);
    put32(h + 40, link);
    put32(h + 44, info);
    put64(h + 56, entsize);
}

/* A small relocatable ELF64: .text, .symtab (4 symbols), .strtab,
 * .rela.text (6 relocations), .BTF (a few types), .shstrtab. */
static void build_elf(uint8_t *e)
{
    memset(e, 0, ELF_SIZE);
    memcpy(e,
           "\x7f"
           "ELF\x02\x01\x01",
           7);
    put64(e + 0x28, SH_OFF);
    e[0x3a] = 64;
    e[0x3c] = NSEC;
    e[0x3e] = 6;
    for (int i = 0; i < 128; i++)
        e[64 + i] = (uint8_t)(0x90 + i % 7);
    static const char shstr[] = "\0.text\0.symtab\0.strtab\0.rela.text\0.BTF\0.shstrtab";
    memcpy(e + 900, shstr, sizeof shstr);
    memcpy(e + 200, "\0foo\0bar\0baz", 13);
    for (int s = 1; s < 4; s++) { /* symbols: name, FUNC, .text, value */
        uint8_t *sym = e + 256 + 24 * s;
        put32(sym, (uint32_t)(1 + 4 * (s - 1)));
        sym[4] = 0x12;
        sym[6] = 1;
        put64(sym + 8, (uint64_t)(16 * s));
    }
    e[256 + 24 * 4 + 4] = 3; /* a section symbol for .text */
    e[256 + 24 * 4 + 6] = 1;
    for (int r = 0; r < 6; r++) {
        uint8_t *rel = e + 400 + 24 * r;
        put64(rel, (uint64_t)(8 + 12 * r));
        put64(rel + 8, ((uint64_t)(1 + r % 4) << 32) | 2);
        put64(rel + 16, (uint64_t)(r * 5));
    }
    uint8_t *b = e + 560; /* BTF: header, INT, PTR, STRUCT with 2 members, FUNC_PROTO */
    b[0] = 0x9f, b[1] = 0xeb, b[2] = 1;
    put32(b + 4, 24);
    put32(b + 8, 0);
    put32(b + 12, 84);
    put32(b + 16, 84);
    put32(b + 20, 16);
    uint8_t *t = b + 24;
    put32(t, 1), put32(t + 4, 1u << 24), put32(t + 8, 4), put32(t + 12, 32);
    put32(t + 16, 0), put32(t + 20, 2u << 24), put32(t + 24, 1);
    put32(t + 28, 5), put32(t + 32, (4u << 24) | 2), put32(t + 36, 16);
    put32(t + 40, 9), put32(t + 44, 1), put32(t + 48, 0);
    put32(t + 52, 1), put32(t + 56, 2), put32(t + 60, 64);
    put32(t + 64, 0), put32(t + 68, (13u << 24) | 1), put32(t + 72, 2);
    put32(t + 76, 5), put32(t + 80, 3);
    section(e, 1, 1, 1, 64, 128, 0, 0, 0);
    section(e, 2, 7, 2, 256, 24 * 5, 3, 1, 24);
    section(e, 3, 15, 3, 200, 13, 0, 0, 0);
    section(e, 4, 23, 4, 400, 24 * 6, 2, 1, 24);
    section(e, 5, 34, 1, 560, 24 + 84 + 16, 0, 0, 0);
    section(e, 6, 39, 3, 900, sizeof shstr, 0, 0, 0);
}

typedef struct {
    size_t len, limit;
    uint8_t *p;
} out_buf;

static int sink(void *arg, const void *p, size_t n)
{
    out_buf *o = arg;
    CHECK(n > 0 && n <= DELTA_CHUNK && o->len + n <= o->limit);
    if (o->p)
        memcpy(o->p + o->len, p, n);
    o->len += n;
    return 0;
}

typedef struct {
    const uint8_t *p;
    size_t n, pos;
} reader;

static long read_some(void *arg, void *buf, size_t cap)
{
    reader *r = arg;
    size_t k = r->n - r->pos;
    if (k > cap)
        k = cap;
    if (k > 3)
        k = 3;
    memcpy(buf, r->p + r->pos, k);
    r->pos += k;
    return (long)k;
}

static void decode_against(const uint8_t *base, size_t base_len, const uint8_t *data, size_t size)
{
    uint8_t *d = malloc(size ? size : 1);
    CHECK(d != NULL);
    memcpy(d, data, size);
    if (size >= 44) {
        put64(d + 12, base_len);
        put64(d + 20, lzma_crc64(base, base_len, 0));
    }
    delta_options o;
    delta_options_init(&o);
    o.max_target = 1 << 20;
    out_buf a = {0, o.max_target, malloc(o.max_target)};
    CHECK(a.p != NULL);
    o.bsz_ahead = DELTA_AHEAD_ALL; /* every compressed stream on a thread of its own */
    delta_status st = delta_decode(base, base_len, d, size, &o, sink, &a, NULL);
    CHECK(st == DELTA_OK || st < 0);
    out_buf b = {0, o.max_target, NULL};
    reader r = {d, size, 0};
    o.bsz_ahead = DELTA_AHEAD_OFF; /* every stream in line */
    delta_status st2 = delta_decode_stream(base, base_len, read_some, &r, &o, sink, &b, NULL);
    CHECK(st2 == st);
    if (st == DELTA_OK)
        CHECK(a.len == b.len);
    free(a.p);
    free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t elf[ELF_SIZE], plain[4096];
    static int ready;
    if (!ready) {
        build_elf(elf);
        for (size_t i = 0; i < sizeof plain; i++)
            plain[i] = (uint8_t)((i * 2654435761u) >> 11);
        ready = 1;
    }
    if (delta_detect(data, size) != DELTA_CODEC_BSZ)
        return 0;
    decode_against(elf, sizeof elf, data, size);
    decode_against(plain, sizeof plain, data, size);
    return 0;
}
