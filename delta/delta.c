/*
 * delta.c — the public entry points of delta/: option defaults, status and
 * codec names, format detection, the dcz header, zstd window sizing, and the
 * encode/decode dispatch (including AUTO, which encodes with every codec into
 * memory and writes the smallest).
 *
 * Each codec lives in its own file (zstd_codec.c, vcdiff.c, bsz_*.c) behind
 * the entry points declared in internal.h; this file validates arguments,
 * resolves options, wraps the caller's callbacks into a delta_sink /
 * delta_src and fills the delta_report.
 */
#include <string.h>

#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include "bsz_format.h"
#include "internal.h"

static const uint8_t ZSTD_FRAME_MAGIC[4] = {0x28, 0xb5, 0x2f, 0xfd};
static const uint8_t VCDIFF_MAGIC[4] = {0xd6, 0xc3, 0xc4, 0x00};

void delta_options_init(delta_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->zstd_level = DELTA_ZSTD_LEVEL_DEFAULT;
    opt->zstd_window_log = 0;
    opt->zstd_max_window_log = DELTA_ZSTD_MAX_WINDOW_LOG_DEFAULT;
    opt->vcdiff_level = DELTA_VCDIFF_LEVEL_DEFAULT;
    opt->bsz_elf = 1;
    opt->max_target = DELTA_MAX_TARGET_DEFAULT;
}

const char *delta_strerror(int status)
{
    switch (status) {
    case DELTA_OK:
        return "success";
    case DELTA_EINVAL:
        return "invalid argument";
    case DELTA_ENOMEM:
        return "out of memory";
    case DELTA_ECORRUPT:
        return "corrupt or truncated delta";
    case DELTA_EBASE:
        return "delta was made against a different base";
    case DELTA_ELIMIT:
        return "size limit exceeded";
    case DELTA_EFORMAT:
        return "not a known delta format";
    case DELTA_ESINK:
        return "output callback failed";
    case DELTA_ESOURCE:
        return "input callback failed";
    case DELTA_EHELPER:
        return "xdelta3 helper failed";
    case DELTA_ECODEC:
        return "compression library error";
    default:
        return "unknown delta status";
    }
}

static const char *const CODEC_NAMES[] = {"none", "zstd", "vcdiff", "bsz", "auto"};

const char *delta_codec_name(delta_codec codec)
{
    if ((unsigned)codec >= sizeof CODEC_NAMES / sizeof CODEC_NAMES[0])
        return NULL;
    return CODEC_NAMES[codec];
}

delta_status delta_codec_parse(const char *name, delta_codec *out)
{
    if (!name || !out)
        return DELTA_EINVAL;
    for (unsigned i = DELTA_CODEC_ZSTD; i <= DELTA_CODEC_AUTO; i++) {
        if (strcmp(name, CODEC_NAMES[i]) == 0) {
            *out = (delta_codec)i;
            return DELTA_OK;
        }
    }
    return DELTA_EINVAL;
}

/* ---- detection ---- */

static int has_prefix(const uint8_t *p, size_t n, const void *magic, size_t mlen)
{
    return n >= mlen && memcmp(p, magic, mlen) == 0;
}

delta_codec delta_detect(const void *p, size_t n)
{
    const uint8_t *b = p;
    if (!b)
        return DELTA_CODEC_NONE;
    if (has_prefix(b, n, DELTA_DCZ_MAGIC, 8) || has_prefix(b, n, ZSTD_FRAME_MAGIC, 4))
        return DELTA_CODEC_ZSTD;
    if (has_prefix(b, n, VCDIFF_MAGIC, 4))
        return DELTA_CODEC_VCDIFF;
    if (has_prefix(b, n, BSZ_MAGIC, BSZ_MAGIC_LEN))
        return DELTA_CODEC_BSZ;
    return DELTA_CODEC_NONE;
}

/* Whether p[0..n), n < DELTA_DETECT_LEN, could still grow into a known magic. */
static int is_magic_prefix(const uint8_t *p, size_t n)
{
    static const void *const magics[] = {DELTA_DCZ_MAGIC, ZSTD_FRAME_MAGIC, VCDIFF_MAGIC,
                                         BSZ_MAGIC};
    static const size_t lens[] = {8, 4, 4, BSZ_MAGIC_LEN};
    for (size_t i = 0; i < 4; i++)
        if (n > 0 && n < lens[i] && memcmp(p, magics[i], n) == 0)
            return 1;
    return 0;
}

/* ---- dcz ---- */

void delta_dcz_header_write(uint8_t out[DELTA_DCZ_HEADER_LEN],
                            const uint8_t base_sha256[DELTA_SHA256_LEN])
{
    memcpy(out, DELTA_DCZ_MAGIC, 8);
    memcpy(out + 8, base_sha256, DELTA_SHA256_LEN);
}

delta_status delta_dcz_header_parse(const void *p, size_t n, uint8_t base_sha256[DELTA_SHA256_LEN])
{
    if (!p && n > 0)
        return DELTA_EINVAL;
    size_t m = n < 8 ? n : 8;
    if (m == 0 || memcmp(p, DELTA_DCZ_MAGIC, m) != 0)
        return DELTA_EFORMAT;
    if (n < DELTA_DCZ_HEADER_LEN)
        return DELTA_ECORRUPT;
    if (base_sha256)
        memcpy(base_sha256, (const uint8_t *)p + 8, DELTA_SHA256_LEN);
    return DELTA_OK;
}

/* ---- zstd windows ---- */

unsigned delta_zstd_window_log(uint64_t base_len, uint64_t target_len)
{
    uint64_t need = base_len + target_len;
    if (need < base_len)
        need = UINT64_MAX;
    unsigned log = ZSTD_WINDOWLOG_MIN;
    while (log < 31 && ((uint64_t)1 << log) < need)
        log++;
    return log;
}

delta_status delta_zstd_frame_window_log(const void *p, size_t n, unsigned *window_log)
{
    const uint8_t *b = p;
    if (!b || !window_log)
        return DELTA_EINVAL;
    if (has_prefix(b, n, DELTA_DCZ_MAGIC, 8)) {
        if (n < DELTA_DCZ_HEADER_LEN)
            return DELTA_ECORRUPT;
        b += DELTA_DCZ_HEADER_LEN;
        n -= DELTA_DCZ_HEADER_LEN;
    }
    if (n < 4)
        return n == 0 ? DELTA_ECORRUPT : DELTA_EFORMAT;
    if (!has_prefix(b, n, ZSTD_FRAME_MAGIC, 4))
        return DELTA_EFORMAT;
    ZSTD_frameHeader fh;
    size_t r = ZSTD_getFrameHeader(&fh, b, n);
    if (r != 0 || fh.frameType != ZSTD_frame)
        return DELTA_ECORRUPT;
    unsigned log = ZSTD_WINDOWLOG_MIN;
    while (log < 63 && ((uint64_t)1 << log) < fh.windowSize)
        log++;
    *window_log = log;
    return DELTA_OK;
}

/* ---- encode ---- */

static void report_init(delta_report *rep, delta_codec codec)
{
    if (!rep)
        return;
    rep->codec = codec;
    rep->out_len = 0;
    rep->msg[0] = '\0';
}

static delta_status check_options(const delta_options *o, delta_report *rep)
{
    if (o->zstd_level < 1 || o->zstd_level > ZSTD_maxCLevel())
        return delta_fail(rep, DELTA_EINVAL, "zstd level must be 1..%d", ZSTD_maxCLevel());
    if (o->zstd_window_log != 0 && (o->zstd_window_log < 10 || o->zstd_window_log > 31))
        return delta_fail(rep, DELTA_EINVAL, "zstd window log must be 10..31");
    if (o->zstd_max_window_log < 10 || o->zstd_max_window_log > 31)
        return delta_fail(rep, DELTA_EINVAL, "zstd max window log must be 10..31");
    if (o->vcdiff_level < 0 || o->vcdiff_level > 9)
        return delta_fail(rep, DELTA_EINVAL, "vcdiff level must be 0..9");
    return DELTA_OK;
}

static delta_status encode_one(delta_codec codec, const uint8_t *base, size_t base_len,
                               const uint8_t *target, size_t target_len, const delta_options *o,
                               delta_sink *out, delta_report *rep)
{
    delta_status st;
    switch (codec) {
    case DELTA_CODEC_ZSTD:
        st = zstd_encode(base, base_len, target, target_len, o, out, rep);
        break;
    case DELTA_CODEC_VCDIFF:
        st = vcdiff_encode(base, base_len, target, target_len, o, out, rep);
        break;
    case DELTA_CODEC_BSZ:
        st = bsz_encode(base, base_len, target, target_len, o, out, rep);
        break;
    default:
        return DELTA_EINVAL;
    }
    return st == DELTA_OK ? delta_sink_flush(out) : st;
}

/* Encodes with codec into *buf; the output is small compared to the inputs. */
static delta_status encode_to_buf(delta_codec codec, const uint8_t *base, size_t base_len,
                                  const uint8_t *target, size_t target_len, const delta_options *o,
                                  dbuf *buf, delta_report *rep)
{
    delta_sink s;
    if (delta_sink_init(&s, dbuf_sink, buf, UINT64_MAX) != DELTA_OK)
        return DELTA_ENOMEM;
    delta_status st = encode_one(codec, base, base_len, target, target_len, o, &s, rep);
    delta_sink_free(&s);
    if (st == DELTA_ESINK)
        st = DELTA_ENOMEM;
    return st;
}

/* AUTO with a digest callback: the zstd candidate is made with a
 * placeholder digest, which the real one replaces only if it is chosen. */
static delta_status fill_dcz_digest(const delta_options *o, dbuf *best, delta_report *rep)
{
    uint8_t digest[DELTA_SHA256_LEN];
    if (best->len < DELTA_DCZ_HEADER_LEN || o->base_sha256_fn(o->base_sha256_arg, digest) != 0)
        return delta_fail(rep, DELTA_EINVAL, "the base's SHA-256 could not be computed");
    memcpy(best->p + DELTA_DCZ_HEADER_LEN - DELTA_SHA256_LEN, digest, DELTA_SHA256_LEN);
    return DELTA_OK;
}

static delta_status encode_auto(const uint8_t *base, size_t base_len, const uint8_t *target,
                                size_t target_len, const delta_options *o, delta_sink *out,
                                delta_report *rep)
{
    static const delta_codec order[] = {DELTA_CODEC_BSZ, DELTA_CODEC_ZSTD, DELTA_CODEC_VCDIFF};
    static const uint8_t placeholder[DELTA_SHA256_LEN];
    delta_options lazy = *o;
    int digest_later = !o->base_sha256 && o->base_sha256_fn;
    if (digest_later)
        lazy.base_sha256 = placeholder;
    dbuf best = {0};
    delta_codec best_codec = DELTA_CODEC_NONE;
    delta_status st = DELTA_OK;
    for (size_t i = 0; i < 3 && st == DELTA_OK; i++) {
        dbuf cur = {0};
        st = encode_to_buf(order[i], base, base_len, target, target_len, &lazy, &cur, rep);
        if (st == DELTA_OK && (best_codec == DELTA_CODEC_NONE || cur.len < best.len)) {
            dbuf_free(&best);
            best = cur;
            best_codec = order[i];
        } else {
            dbuf_free(&cur);
        }
    }
    if (st == DELTA_OK && digest_later && best_codec == DELTA_CODEC_ZSTD)
        st = fill_dcz_digest(o, &best, rep);
    if (st == DELTA_OK)
        st = delta_sink_put(out, best.p, best.len);
    if (st == DELTA_OK)
        st = delta_sink_flush(out);
    if (rep)
        rep->codec = best_codec;
    dbuf_free(&best);
    return st;
}

delta_status delta_encode(delta_codec codec, const void *base, size_t base_len, const void *target,
                          size_t target_len, const delta_options *opt, delta_write_fn write,
                          void *warg, delta_report *report)
{
    report_init(report, codec);
    if ((!base && base_len) || (!target && target_len) || !write)
        return delta_fail(report, DELTA_EINVAL, "missing input or sink");
    if (codec < DELTA_CODEC_ZSTD || codec > DELTA_CODEC_AUTO)
        return delta_fail(report, DELTA_EINVAL, "unknown codec %d", (int)codec);
    delta_options o;
    delta_options_resolve(opt, &o);
    delta_status st = check_options(&o, report);
    if (st != DELTA_OK)
        return st;
    const uint8_t *b = base ? base : (const uint8_t *)"";
    const uint8_t *t = target ? target : (const uint8_t *)"";
    delta_sink s;
    if (delta_sink_init(&s, write, warg, UINT64_MAX) != DELTA_OK)
        return delta_fail(report, DELTA_ENOMEM, "out of memory");
    if (codec == DELTA_CODEC_AUTO)
        st = encode_auto(b, base_len, t, target_len, &o, &s, report);
    else
        st = encode_one(codec, b, base_len, t, target_len, &o, &s, report);
    if (report)
        report->out_len = s.written - s.len;
    delta_sink_free(&s);
    if (st != DELTA_OK)
        return delta_fail(report, st, "%s", delta_strerror(st));
    return DELTA_OK;
}

/* ---- decode ---- */

static delta_status decode_src(const uint8_t *base, size_t base_len, delta_src *in,
                               const delta_options *o, delta_sink *out, delta_report *rep)
{
    const uint8_t *head;
    size_t n = delta_src_peek(in, DELTA_DETECT_LEN, &head);
    if (in->failed)
        return delta_fail(rep, DELTA_ESOURCE, "reading the delta failed");
    delta_codec codec = delta_detect(head, n);
    if (rep)
        rep->codec = codec;
    switch (codec) {
    case DELTA_CODEC_ZSTD:
        return zstd_decode(base, base_len, in, o, out, rep);
    case DELTA_CODEC_VCDIFF:
        return vcdiff_decode(base, base_len, in, o, out, rep);
    case DELTA_CODEC_BSZ:
        return bsz_decode(base, base_len, in, o, out, rep);
    default:
        if (n < DELTA_DETECT_LEN && (n == 0 || is_magic_prefix(head, n)))
            return delta_fail(rep, DELTA_ECORRUPT, "delta truncated to %zu bytes", n);
        return delta_fail(rep, DELTA_EFORMAT, "unknown delta magic");
    }
}

static delta_status decode_common(const void *base, size_t base_len, delta_src *in,
                                  const delta_options *opt, delta_write_fn write, void *warg,
                                  delta_report *report)
{
    report_init(report, DELTA_CODEC_NONE);
    if ((!base && base_len) || !write)
        return delta_fail(report, DELTA_EINVAL, "missing base or sink");
    delta_options o;
    delta_options_resolve(opt, &o);
    delta_status st = check_options(&o, report);
    if (st != DELTA_OK)
        return st;
    delta_sink s;
    if (delta_sink_init(&s, write, warg, o.max_target) != DELTA_OK)
        return delta_fail(report, DELTA_ENOMEM, "out of memory");
    s.progress = o.progress;
    s.progress_arg = o.progress_arg;
    const uint8_t *b = base ? base : (const uint8_t *)"";
    st = decode_src(b, base_len, in, &o, &s, report);
    if (st == DELTA_OK)
        st = delta_sink_flush(&s);
    if (report)
        report->out_len = s.written - s.len;
    delta_sink_free(&s);
    if (st == DELTA_ELIMIT)
        return delta_fail(report, st, "output exceeds the limit of %llu bytes",
                          (unsigned long long)o.max_target);
    if (st != DELTA_OK)
        return delta_fail(report, st, "%s", delta_strerror(st));
    return DELTA_OK;
}

delta_status delta_decode(const void *base, size_t base_len, const void *delta, size_t delta_len,
                          const delta_options *opt, delta_write_fn write, void *warg,
                          delta_report *report)
{
    if (!delta && delta_len) {
        report_init(report, DELTA_CODEC_NONE);
        return delta_fail(report, DELTA_EINVAL, "missing delta");
    }
    delta_src in;
    delta_src_mem(&in, delta, delta_len);
    return decode_common(base, base_len, &in, opt, write, warg, report);
}

delta_status delta_decode_stream(const void *base, size_t base_len, delta_read_fn read, void *rarg,
                                 const delta_options *opt, delta_write_fn write, void *warg,
                                 delta_report *report)
{
    if (!read) {
        report_init(report, DELTA_CODEC_NONE);
        return delta_fail(report, DELTA_EINVAL, "missing reader");
    }
    delta_src in;
    delta_src_reader(&in, read, rarg);
    return decode_common(base, base_len, &in, opt, write, warg, report);
}
