/*
 * delta.h — Sluice's binary deltas: three codecs, format detection, the dcz
 * header, a worker pool to run encodes off the event loops, and base selection.
 *
 * This header is the specification of the delta/ library. It depends on no
 * other Sluice folder and knows nothing of HTTP: the proxy maps these codecs
 * onto the wire (see "Wire mapping" below) and the `sluice delta` CLI onto files.
 *
 * Terms. The *base* is the version a client already has; the *target* is the
 * version it wants; a *delta* is what turns base into target. Encoders and
 * decoders take the base and the target as whole buffers (mmap them) and
 * stream what they produce through a sink callback, in chunks of at most
 * DELTA_CHUNK bytes. Nothing here computes cryptographic digests: the
 * SHA-256 of the base, which the dcz header carries, is an argument.
 *
 * Codecs
 * ------
 *   DELTA_CODEC_ZSTD    the body of RFC 9842 `dcz`: a 40-byte header
 *                       (5E 2A 4D 18 20 00 00 00 + SHA-256 of the base) then
 *                       one zstd frame compressed with the base as a raw
 *                       prefix (ZSTD_CCtx_refPrefix), long-distance matching,
 *                       the window sized to base + target, content size and
 *                       XXH64 checksum in the frame. Interoperates with
 *                       `zstd -d --patch-from=BASE --long=31` once the 40
 *                       bytes are stripped. In-process.
 *   DELTA_CODEC_VCDIFF  the body of RFC 3229 `vcdiff`: an RFC 3284 VCDIFF made
 *                       by the `xdelta3` program run as a helper process (the
 *                       base passed as a memfd, /dev/fd/3; the target or delta
 *                       through pipes). Readable by `xdelta3 -d -s BASE`.
 *                       xdelta3's LZMA secondary compression is used unless
 *                       delta_options.vcdiff_plain asks for plain RFC 3284.
 *   DELTA_CODEC_BSZ     Sluice's approximate-match format, used between
 *                       Sluices and by `sluice fetch` / `sluice delta`: a
 *                       bsdiff-class delta (suffix array of the base,
 *                       matches tolerating byte differences, separate
 *                       control / diff / extra streams, each entropy-coded
 *                       with the smaller of zstd and LZMA2), optionally over
 *                       a base preconditioned for ELF objects such as kernel
 *                       modules (symbol indices, section offsets, string
 *                       offsets and BTF type ids remapped to the target's
 *                       numbering). The byte format is specified in
 *                       delta/FORMAT.md.
 *   DELTA_CODEC_AUTO    encode only: every codec, the smallest output wins
 *                       (ties: bsz, then zstd, then vcdiff).
 *
 * Decoding detects the format by its magic (delta_detect): a dcz header, a
 * bare zstd frame, a VCDIFF header or a bsz header.
 *
 * Safety. Every decoder treats the delta as hostile: sizes are checked against
 * limits before anything is allocated, every read is bounds-checked, a
 * decoder never produces more than the declared (bsz, zstd) or allowed
 * (delta_options.max_target) output, and a corrupt, truncated or foreign
 * delta ends with an error status, never a crash. Output already passed to
 * the sink before an error is detected must be discarded by the caller (the
 * CLI writes to a temporary file it removes; the proxy holds back the tail
 * until the digest matches). bsz checks a CRC-64 of the base before it starts
 * and of the output at the end; zstd checks the frame's XXH64 and, when the
 * caller gives the base's SHA-256, the dcz header; xdelta3 checks Adler-32
 * per window. Checking the target's digest remains the caller's job.
 *
 * Memory. Beyond base and target, encoding holds: bsz, a 32-bit suffix array
 * of the base and, with the ELF map, a preconditioned copy of the base (5x
 * the base at the peak), then its streams and one entropy coder of at most
 * 4.2 MiB at a time; zstd, search tables of at most 2.5x base + target;
 * vcdiff, an xdelta3 process with 256 KiB target windows (about 8x the base
 * for a few MiB). AUTO runs the codecs one after another, keeping only the
 * smallest output so far, so its peak is that of its largest codec. Large
 * blocks are mapped and unmapped directly, so memory a stage frees is
 * returned to the system at once. Bases of DELTA_BSZ_MAX_INPUT bytes or more
 * are refused by bsz with DELTA_ELIMIT. Decoding streams: apart from the
 * base, bsz holds its compressed streams, two 256 KiB dictionaries and one
 * DELTA_CHUNK output buffer (the ELF map is applied to the base as it is
 * read, never to a copy), and the decoded bytes of each stream a thread
 * decodes ahead (delta_options.bsz_ahead; at most a quarter of the target
 * each); zstd holds a window as large as the target (the
 * frame's window covers base and target); vcdiff, an xdelta3 process reading
 * the base through a 1 MiB cache.
 *
 * Threads. All functions are reentrant; encoders and decoders keep all state
 * on the stack or the heap of the call. A bsz decode may run threads of its
 * own (delta_options.bsz_ahead), always joined before it returns. CPU-heavy
 * calls (every encode, large decodes) belong on a delta_pool thread, not on
 * an event loop.
 *
 * Wire mapping (implemented by the proxy)
 * ---------------------------------------
 *   dcz:    `Content-Encoding: dcz`, body = delta_encode(DELTA_CODEC_ZSTD).
 *           RFC 9842 lets a dcz decoder limit the window to 8 MiB (window
 *           log 23, DELTA_DCZ_WINDOW_LOG). A delta whose frame needs more
 *           (delta_zstd_window_log) is served only to clients that announce
 *           a larger limit, and the response then carries
 *           `Sluice-Zstd-Window-Log: <log>` (DELTA_HTTP_WINDOW_HEADER) so that
 *           a Sluice client sets delta_options.zstd_max_window_log to it. A
 *           server may instead force delta_options.zstd_window_log =
 *           DELTA_DCZ_WINDOW_LOG, which keeps any dcz decoder happy at some
 *           cost in size when base + target exceed 8 MiB.
 *   vcdiff: `226 IM Used`, `IM: vcdiff`, body = delta_encode(DELTA_CODEC_VCDIFF).
 *   bsz:    between Sluices only (`sluice fetch`), body = delta_encode(DELTA_CODEC_BSZ).
 */
#ifndef SLUICE_DELTA_H
#define SLUICE_DELTA_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* Codecs, status codes                                                      */

typedef enum {
    DELTA_CODEC_NONE = 0, /* delta_detect: not a format this library reads */
    DELTA_CODEC_ZSTD = 1,
    DELTA_CODEC_VCDIFF = 2,
    DELTA_CODEC_BSZ = 3,
    DELTA_CODEC_AUTO = 4, /* delta_encode only */
} delta_codec;

typedef enum {
    DELTA_OK = 0,
    DELTA_EINVAL = -1,   /* bad argument: NULL pointer, unknown codec, option out of range */
    DELTA_ENOMEM = -2,   /* allocation failed */
    DELTA_ECORRUPT = -3, /* the delta is malformed, truncated or fails its checksums */
    DELTA_EBASE = -4,    /* the delta was made against another base */
    DELTA_ELIMIT = -5,   /* a size exceeds this library's or the caller's limits */
    DELTA_EFORMAT = -6,  /* not a delta format this library reads (unknown magic) */
    DELTA_ESINK = -7,    /* the write callback returned non-zero */
    DELTA_ESOURCE = -8,  /* the read callback returned an error */
    DELTA_EHELPER = -9,  /* xdelta3 could not be run, failed or exited non-zero */
    DELTA_ECODEC = -10,  /* zstd, liblzma or libdivsufsort reported an internal error */
} delta_status;

/* A static, human-readable description of a delta_status ("corrupt delta", ...). */
const char *delta_strerror(int status);

/* "zstd", "vcdiff", "bsz", "auto"; "none" for DELTA_CODEC_NONE, NULL if unknown. */
const char *delta_codec_name(delta_codec codec);

/* Parses one of the names above (except "none") into *out; DELTA_EINVAL otherwise. */
delta_status delta_codec_parse(const char *name, delta_codec *out);

/* ------------------------------------------------------------------------ */
/* Callbacks                                                                 */

/* Output sink: consumes p[0..n), n >= 1 and n <= DELTA_CHUNK. Returns 0 to
 * continue; any other value aborts the call with DELTA_ESINK. */
typedef int (*delta_write_fn)(void *arg, const void *p, size_t n);

/* Input source for delta_decode_stream: fills up to cap bytes of buf and
 * returns how many (> 0), 0 at end of input, or -1 on error (DELTA_ESOURCE). */
typedef long (*delta_read_fn)(void *arg, void *buf, size_t cap);

/* Progress: done out of total units (bytes of target for encode and decode;
 * total is 0 when unknown). Called from the encoding/decoding thread, at most
 * every DELTA_CHUNK bytes or so. */
typedef void (*delta_progress_fn)(void *arg, uint64_t done, uint64_t total);
/* Computes the base's SHA-256 (32 bytes) into out; 0 on success. */
typedef int (*delta_sha256_fn)(void *arg, uint8_t *out);

/* The largest chunk a sink receives. */
#define DELTA_CHUNK (256u * 1024u)

/* ------------------------------------------------------------------------ */
/* Options and report                                                        */

#define DELTA_ZSTD_LEVEL_DEFAULT 19
#define DELTA_VCDIFF_LEVEL_DEFAULT 9
/* Decode-side cap on a zstd window unless the caller raises it: 2^27 = 128 MiB,
 * zstd's own default limit. */
#define DELTA_ZSTD_MAX_WINDOW_LOG_DEFAULT 27
/* The largest output a decode produces unless the caller says otherwise. */
#define DELTA_MAX_TARGET_DEFAULT ((uint64_t)64 << 30)
/* bsz handles bases and targets below 2 GiB (32-bit suffix array). */
#define DELTA_BSZ_MAX_INPUT ((uint64_t)1 << 31)

typedef struct {
    /* zstd codec: compression level 1..22 (default 19). */
    int zstd_level;
    /* zstd codec: window log 10..31, or 0 (default) to size the window to the
     * inputs, delta_zstd_window_log(base_len, target_len). */
    unsigned zstd_window_log;
    /* Decoding zstd (dcz frames and bsz streams): the largest window log
     * accepted, 10..31 (default DELTA_ZSTD_MAX_WINDOW_LOG_DEFAULT). */
    unsigned zstd_max_window_log;
    /* vcdiff codec: xdelta3 level 0..9 (default 9). */
    int vcdiff_level;
    /* vcdiff codec: 1 = no secondary compression (plain RFC 3284 that any
     * VCDIFF decoder reads); 0 (default) = xdelta3's LZMA secondary. */
    int vcdiff_plain;
    /* The xdelta3 program, looked up in PATH unless it contains a '/'.
     * NULL = "xdelta3". */
    const char *xdelta3_path;
    /* bsz: 1 (default) = precondition ELF bases (kernel modules) when both
     * inputs are ELF objects; 0 = plain approximate matching only. */
    int bsz_elf;
    /* SHA-256 of the base (32 bytes) or NULL. Encoding DELTA_CODEC_ZSTD (and
     * AUTO) requires it: it goes into the dcz header. Decoding compares it
     * with the dcz header and fails with DELTA_EBASE on a mismatch. */
    const uint8_t *base_sha256;
    /* Encoding, when base_sha256 is NULL: asked for it only when a dcz
     * header is written — with AUTO, only when zstd's delta is the one
     * chosen — so a caller that hashes the base just for the header pays
     * nothing (time, or OpenSSL's start-up memory) when another codec wins. */
    delta_sha256_fn base_sha256_fn;
    void *base_sha256_arg;
    /* Decoding: the largest output accepted (default DELTA_MAX_TARGET_DEFAULT).
     * The proxy sets the target descriptor's size. */
    uint64_t max_target;
    /* Decoding bsz: whether large LZMA2 streams are decoded ahead on threads
     * of their own (DELTA_AHEAD_*; default AUTO). */
    int bsz_ahead;
    /* Optional progress reporting. */
    delta_progress_fn progress;
    void *progress_arg;
} delta_options;

/* delta_options.bsz_ahead. AUTO: when more than one CPU is online, each
 * LZMA2 stream of at least 16 KiB and at most a quarter of the target is
 * decoded by a thread of its own into a buffer of its raw length, ahead of
 * the replay that reads it (3-5 ms of a 15-25 ms decode of a kernel module
 * overlap the rest). OFF: every stream is decoded in line. ALL: every
 * compressed stream gets a thread (tests compare the two paths). */
enum { DELTA_AHEAD_AUTO = 0, DELTA_AHEAD_OFF = 1, DELTA_AHEAD_ALL = 2 };

/* Fills *opt with the defaults documented above. */
void delta_options_init(delta_options *opt);

/* What a call did; every field is set, even on error. */
typedef struct {
    delta_codec codec; /* the codec used (for AUTO: the one chosen) */
    uint64_t out_len;  /* bytes passed to the sink */
    char msg[512];     /* "" on success; otherwise details (e.g. xdelta3's stderr) */
} delta_report;

/* ------------------------------------------------------------------------ */
/* Encoding and decoding                                                     */

/* Encodes the delta from base[0..base_len) to target[0..target_len) with
 * codec and streams it to write(warg, ...). opt may be NULL (defaults; not for
 * DELTA_CODEC_ZSTD, whose dcz header needs opt->base_sha256 or
 * opt->base_sha256_fn). report may be
 * NULL. Empty and identical inputs are valid. AUTO buffers each candidate in
 * memory (deltas are small) and writes only the smallest. */
delta_status delta_encode(delta_codec codec, const void *base, size_t base_len, const void *target,
                          size_t target_len, const delta_options *opt, delta_write_fn write,
                          void *warg, delta_report *report);

/* Decodes delta[0..delta_len) (any format delta_detect knows) against base
 * and streams the target to write(warg, ...). */
delta_status delta_decode(const void *base, size_t base_len, const void *delta, size_t delta_len,
                          const delta_options *opt, delta_write_fn write, void *warg,
                          delta_report *report);

/* The same, pulling the delta from read(rarg, ...) as it arrives (e.g. from a
 * socket or a pipe). */
delta_status delta_decode_stream(const void *base, size_t base_len, delta_read_fn read, void *rarg,
                                 const delta_options *opt, delta_write_fn write, void *warg,
                                 delta_report *report);

/* ------------------------------------------------------------------------ */
/* Format detection                                                          */

/* Bytes delta_detect needs to tell every format apart. */
#define DELTA_DETECT_LEN 8

/* The codec whose magic starts p[0..n): DELTA_CODEC_ZSTD for a dcz header or a
 * bare zstd frame (28 B5 2F FD), DELTA_CODEC_VCDIFF for D6 C3 C4 00,
 * DELTA_CODEC_BSZ for the bsz magic; DELTA_CODEC_NONE otherwise or when n is
 * too short to tell. */
delta_codec delta_detect(const void *p, size_t n);

/* For a bsz delta: the target length its header declares. DELTA_EFORMAT if
 * p[0..n) does not start with a bsz header, DELTA_ECORRUPT if too short. */
delta_status delta_bsz_target_len(const void *p, size_t n, uint64_t *target_len);

/* ------------------------------------------------------------------------ */
/* dcz (RFC 9842)                                                            */

#define DELTA_DCZ_HEADER_LEN 40
#define DELTA_SHA256_LEN 32
/* The dcz magic: a zstd skippable frame (0x184D2A5E) of 32 bytes. */
#define DELTA_DCZ_MAGIC "\x5e\x2a\x4d\x18\x20\x00\x00\x00"

/* Writes the 40-byte dcz header for a base whose SHA-256 is base_sha256. */
void delta_dcz_header_write(uint8_t out[DELTA_DCZ_HEADER_LEN],
                            const uint8_t base_sha256[DELTA_SHA256_LEN]);

/* Parses a dcz header at the start of p[0..n) and copies the base's SHA-256
 * into base_sha256 (may be NULL). DELTA_ECORRUPT if n < 40 but the bytes so
 * far match, DELTA_EFORMAT if the magic differs. */
delta_status delta_dcz_header_parse(const void *p, size_t n, uint8_t base_sha256[DELTA_SHA256_LEN]);

/* ------------------------------------------------------------------------ */
/* zstd windows                                                              */

/* The window RFC 9842 guarantees a dcz decoder supports: 8 MiB. */
#define DELTA_DCZ_WINDOW_LOG 23
/* The response header by which a Sluice announces a larger window. */
#define DELTA_HTTP_WINDOW_HEADER "Sluice-Zstd-Window-Log"

/* The window log DELTA_CODEC_ZSTD uses by default for these input sizes: the
 * smallest power of two holding base + target (so that every byte of the
 * base stays reachable), clamped to 10..31. */
unsigned delta_zstd_window_log(uint64_t base_len, uint64_t target_len);

/* The window log a decoder needs for the zstd frame at the start of p[0..n)
 * (after a dcz header, if any): ceil(log2(frame window size)). DELTA_EFORMAT
 * if p is neither, DELTA_ECORRUPT if the header is truncated or invalid. */
delta_status delta_zstd_frame_window_log(const void *p, size_t n, unsigned *window_log);

/* ------------------------------------------------------------------------ */
/* Worker pool                                                               */

/* A fixed number of threads taking jobs from a FIFO queue. done(arg) runs on
 * the same pool thread right after job(arg); to get back to an event loop,
 * done typically activates an event there. */
typedef struct delta_pool delta_pool;
typedef void (*delta_job_fn)(void *arg);

/* threads 1..256; max_queue = jobs waiting beyond those running (0 = no
 * limit). NULL on bad arguments or when threads cannot be created. */
delta_pool *delta_pool_new(unsigned threads, size_t max_queue);

/* Queues job; 0 on success, -1 when the queue is full or the pool is
 * shutting down (then neither callback will run). done may be NULL. */
int delta_pool_submit(delta_pool *pool, delta_job_fn job, delta_job_fn done, void *arg);

/* Jobs queued and not yet started. */
size_t delta_pool_pending(delta_pool *pool);

/* Refuses new jobs, lets every queued job run to completion (drains), joins
 * the threads and frees the pool. Must not be called from a pool thread. */
void delta_pool_shutdown(delta_pool *pool);

/* ------------------------------------------------------------------------ */
/* Base selection                                                            */

/* One layer descriptor, from the target manifest or an earlier one in the
 * same repository. Strings are NUL-terminated; title may be NULL. */
typedef struct {
    const char *title;      /* annotation org.opencontainers.image.title, or NULL */
    const char *media_type; /* the descriptor's mediaType */
    uint32_t position;      /* index in its manifest's layers array */
    uint32_t age;           /* earlier manifests: 1 = newest, larger = older */
    uint64_t size;
    uint8_t digest[DELTA_SHA256_LEN];
} delta_layer;

/* For each target[i] picks the earlier layer to use as its base and stores
 * its index in base[i], or -1 when no delta should be made. Rules, in order:
 *   - no base when the target's digest already appears among earlier layers
 *     (the client has it) or when there is no candidate;
 *   - if the target has a title: the earlier layers with the same title;
 *     among them those with the same media type first;
 *   - otherwise, or when no earlier layer has that title: the earlier layers
 *     at the same position with the same media type whose title is absent
 *     or equal;
 *   - among candidates: the newest (smallest age), then the size closest to
 *     the target's, then the lowest index.
 * Pure function: no allocation, no I/O. */
void delta_select_bases(const delta_layer *target, size_t ntarget, const delta_layer *earlier,
                        size_t nearlier, long *base);

#endif
