/*
 * bsz_format.h — constants and limits of the bsz format (specified in
 * delta/FORMAT.md) shared by its encoder and decoder, and the interfaces
 * between the bsz files: cover search, entropy coding and stream reading.
 */
#ifndef SLUICE_DELTA_BSZ_FORMAT_H
#define SLUICE_DELTA_BSZ_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

#define BSZ_MAGIC                                                                                  \
    "\x89"                                                                                         \
    "BSZ\r\n\x1a\n"
#define BSZ_MAGIC_LEN 8
/* Version 2 codes the cover differences sparsely (RUNS + DIFF); decoders
 * also read version 1, where DIFF holds every cover byte's difference. */
#define BSZ_VERSION 2
#define BSZ_VERSION_DENSE 1
#define BSZ_HEADER_LEN 44
#define BSZ_FLAG_ELF 0x01

enum {
    BSZ_S_MAP = 0,   /* ELF base map (elfmap.c); empty unless BSZ_FLAG_ELF */
    BSZ_S_ADD = 1,   /* per record: literal (extra) length, varint */
    BSZ_S_COPY = 2,  /* per record: cover length, varint */
    BSZ_S_SEEK = 3,  /* per record: base position change, zigzag varint */
    BSZ_S_DIFF = 4,  /* cover bytes: target - base (mod 256); v2: the non-zero runs only */
    BSZ_S_EXTRA = 5, /* literal bytes */
    BSZ_S_RUNS = 6,  /* v2: (zero run, non-zero run) lengths over the cover bytes, varints */
    BSZ_NSTREAMS = 7,
    BSZ_NSTREAMS_DENSE = 6 /* version 1 has no RUNS */
};

enum {
    BSZ_M_STORED = 0,
    BSZ_M_ZSTD = 1,     /* one zstd frame */
    BSZ_M_LZMA2 = 2,    /* raw LZMA2, dictionary size given */
    BSZ_M_X86LZMA2 = 3, /* raw x86 BCJ + LZMA2 */
};

/* Largest LZMA2 dictionary a decoder accepts (it is also never larger than
 * the stream, rounded up to the 4 KiB minimum). */
#define BSZ_MAX_DICT ((uint64_t)1 << 30)
#define BSZ_MIN_DICT 4096u
/* The ELF map is small; anything larger is refused. */
#define BSZ_MAX_MAP ((uint64_t)64 << 20)

typedef struct {
    uint8_t version;
    uint8_t flags;
    uint64_t base_len, base_crc, target_len, target_crc;
} bsz_header;

void bsz_header_write(uint8_t out[BSZ_HEADER_LEN], const bsz_header *h);
/* DELTA_OK, DELTA_EFORMAT (magic), DELTA_ECORRUPT (short, bad version or flags). */
delta_status bsz_header_parse(const uint8_t *p, size_t n, bsz_header *h);

/* Upper bound of a stream's raw length given the target length. */
uint64_t bsz_stream_max_raw(int stream, uint64_t target_len);

/* ---- cover search (bsz_match.c) ---- */

/* target[new_pos .. new_pos+len) is coded as differences against
 * base[old_pos .. old_pos+len). Covers are sorted and disjoint in the target. */
typedef struct {
    size_t new_pos, old_pos, len;
} bsz_cover;

typedef struct {
    bsz_cover *v;
    size_t n, cap;
} bsz_covers;

/* Finds covers of target in base. sa is base's suffix array (NULL when
 * base_len == 0). Returns 0, or -1 when out of memory. */
int bsz_find_covers(const uint8_t *base, size_t base_len, const int32_t *sa, const uint8_t *target,
                    size_t target_len, bsz_covers *out, delta_progress_fn progress, void *parg);
void bsz_covers_free(bsz_covers *c);

/* ---- entropy coding (bsz_entropy.c) ---- */

/* Appends the stream descriptor and payload for raw[0..n) to out, with the
 * smallest of the methods worth trying for this stream kind. mem_budget caps
 * the coders' working memory. Returns DELTA_OK or DELTA_ENOMEM/DELTA_ECODEC. */
delta_status bsz_stream_encode(int stream, const uint8_t *raw, size_t n, size_t mem_budget,
                               dbuf *out);

typedef struct bsz_reader bsz_reader;

/* A reader decoding one stream incrementally from its compressed payload
 * comp[0..comp_len) (which must outlive it). */
delta_status bsz_reader_new(int method, const uint8_t *comp, size_t comp_len, uint64_t raw_len,
                            uint64_t dict_size, unsigned zstd_max_wlog, bsz_reader **out);
/* Up to want bytes of decoded data: sets *p to them and returns how many
 * (0 only at the end of the stream), or -1 when the payload is corrupt. The
 * bytes stay valid until the next call. */
long bsz_reader_get(bsz_reader *r, size_t want, const uint8_t **p);
/* Reads one varint: 0 with *v set; 1 at the end of the stream if at_end_ok
 * (nothing consumed), -1 if the stream ends inside it or it is malformed. */
int bsz_reader_varint(bsz_reader *r, uint64_t *v, int at_end_ok);
/* Whether the whole stream has been consumed and its payload fully used. */
int bsz_reader_done(bsz_reader *r);
void bsz_reader_free(bsz_reader *r);

/* ---- decoding a stream ahead, on its own thread (bsz_ahead.c) ---- */

typedef struct bsz_ahead bsz_ahead;

/* How far a decoding thread may run ahead of its consumer. */
#define BSZ_AHEAD_WINDOW ((uint64_t)4 << 20)

/* Starts a thread decoding all raw_len bytes of r, which it then owns (and
 * frees), staying at most window bytes (at least 32 KiB) ahead of what the
 * consumer has taken; NULL if it could not start, r then still being the
 * caller's. */
bsz_ahead *bsz_ahead_start(bsz_reader *r, uint64_t raw_len, uint64_t window);
/* As bsz_reader_get, bsz_reader_varint and bsz_reader_done, waiting for
 * the thread when the caller has caught up with it. */
long bsz_ahead_get(bsz_ahead *a, size_t want, const uint8_t **p);
int bsz_ahead_varint(bsz_ahead *a, uint64_t *v, int at_end_ok);
int bsz_ahead_done(bsz_ahead *a);
/* Stops and joins the thread, frees the reader and the buffer. */
void bsz_ahead_free(bsz_ahead *a);

#endif
