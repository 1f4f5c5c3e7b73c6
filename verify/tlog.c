/*
 * tlog.c — Rekor transparency-log proofs, checked offline: signed entry
 * timestamps (SET), RFC 6962/9162 Merkle inclusion proofs and signed-note
 * checkpoints (vtlog_* in vinternal.h).
 *
 * How it works:
 *  - SET: Rekor signs (ECDSA, SHA-256) the canonical JSON of
 *    {"body","integratedTime","logID","logIndex"}; the object is rebuilt
 *    from its four typed values and serialised by jansson with
 *    JSON_SORT_KEYS|JSON_COMPACT, which for these ASCII keys and
 *    string/integer values is exactly RFC 8785 (what Rekor and cosign
 *    sign). The body is re-encoded as canonical base64 of its bytes.
 *  - Inclusion: leaf hash SHA-256(0x00 || entry), node SHA-256(0x01 || l ||
 *    r), the audit-path walk of RFC 9162 section 2.1.3.2.
 *  - Checkpoint (C2SP signed note): text lines "origin", "size",
 *    "base64(root)", optional extension lines, a blank line, then signature
 *    lines "— <name> base64(4-byte key hint || signature)". Only lines
 *    whose hint is the first 4 bytes of the log id (and, for Rekor v2
 *    logs, whose name is the log's host) are tried; unknown witnesses are
 *    ignored. The
 *    signature covers the text up to and including the newline before the
 *    blank line; ECDSA keys sign its SHA-256, Ed25519 keys the text itself.
 *    The size and root hash must equal the inclusion proof's.
 */
#include "vinternal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const vlog *vtlog_find(const vlog *logs, size_t n, const uint8_t *id, size_t idlen)
{
    for (size_t i = 0; i < n; i++)
        if (vmem_eq(logs[i].log_id, logs[i].log_id_len, id, idlen))
            return &logs[i];
    return NULL;
}

/* ---- SET ---- */

static char *set_canonical(const char *body_b64, int64_t t, const char *log_hex, int64_t index)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "body", json_string(body_b64));
    json_object_set_new(o, "integratedTime", json_integer((json_int_t)t));
    json_object_set_new(o, "logID", json_string(log_hex));
    json_object_set_new(o, "logIndex", json_integer((json_int_t)index));
    char *s = json_object_size(o) == 4 ? json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

int vtlog_verify_set(const vlog *log, const char *body_b64, int64_t integrated_time,
                     const char *log_id_hex, int64_t log_index, const uint8_t *set, size_t setlen,
                     vfail *f)
{
    if (!vkey_is_ecdsa(log->key))
        return vfail_set(f, VERIFY_DENIED_UNSUPPORTED, "Rekor key is not an ECDSA key");
    char *canon = set_canonical(body_b64, integrated_time, log_id_hex, log_index);
    if (canon == NULL)
        return vfail_set(f, VERIFY_DENIED_INTERNAL, "out of memory");
    int rc =
        vkey_verify(log->key, EVP_sha256(), (const uint8_t *)canon, strlen(canon), set, setlen, f);
    free(canon);
    if (rc != 0)
        return vfail_set(f, VERIFY_DENIED_TLOG,
                         "Rekor signed entry timestamp does not verify with the Rekor key");
    return 0;
}

/* ---- inclusion proofs ---- */

static void hash_leaf(const uint8_t *p, size_t n, uint8_t out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    static const uint8_t zero = 0;
    if (c == NULL || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(c, &zero, 1) != 1 || (n > 0 && EVP_DigestUpdate(c, p, n) != 1) ||
        EVP_DigestFinal_ex(c, out, NULL) != 1)
        memset(out, 0, 32);
    EVP_MD_CTX_free(c);
}

static void hash_children(const uint8_t l[32], const uint8_t r[32], uint8_t out[32])
{
    uint8_t buf[65];
    buf[0] = 1;
    memcpy(buf + 1, l, 32);
    memcpy(buf + 33, r, 32);
    verify_sha256(buf, sizeof buf, out);
}

int vtlog_verify_inclusion(const uint8_t *leaf, size_t leaflen, int64_t index, int64_t size,
                           const uint8_t *const *path, size_t npath, const uint8_t root[32],
                           vfail *f)
{
    if (index < 0 || size <= 0 || index >= size)
        return vfail_set(f, VERIFY_DENIED_TLOG, "inclusion proof index %lld outside tree size %lld",
                         (long long)index, (long long)size);
    uint64_t fn = (uint64_t)index, sn = (uint64_t)size - 1;
    uint8_t r[32];
    hash_leaf(leaf, leaflen, r);
    for (size_t i = 0; i < npath; i++) {
        if (sn == 0)
            return vfail_set(f, VERIFY_DENIED_TLOG, "inclusion proof has too many hashes");
        if ((fn & 1) || fn == sn) {
            hash_children(path[i], r, r);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            hash_children(r, path[i], r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    if (sn != 0 || memcmp(r, root, 32) != 0)
        return vfail_set(f, VERIFY_DENIED_TLOG, "inclusion proof does not hash to the root hash");
    return 0;
}

/* ---- checkpoints ---- */

typedef struct {
    const char *p;
    size_t n;
} span;

/* Next '\n'-terminated line of s (without the newline); false at the end or
 * on a final line without '\n'. */
static bool next_line(span *s, span *line)
{
    const char *nl = memchr(s->p, '\n', s->n);
    if (nl == NULL)
        return false;
    line->p = s->p;
    line->n = (size_t)(nl - s->p);
    s->n -= line->n + 1;
    s->p = nl + 1;
    return true;
}

static int parse_size(span l, int64_t *out)
{
    if (l.n == 0 || l.n > 19)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < l.n; i++) {
        if (l.p[i] < '0' || l.p[i] > '9')
            return -1;
        v = v * 10 + (l.p[i] - '0');
    }
    *out = v;
    return 0;
}

static int check_body(span text, int64_t size, const uint8_t root[32], vfail *f)
{
    span origin, sz, rh;
    int64_t got;
    vbytes h = {0};
    if (!next_line(&text, &origin) || origin.n == 0 || !next_line(&text, &sz) ||
        parse_size(sz, &got) != 0 || !next_line(&text, &rh) ||
        vb64_decode(rh.p, rh.n, &h, NULL) != 0 || h.n != 32) {
        vbytes_clear(&h);
        return vfail_set(f, VERIFY_DENIED_TLOG, "checkpoint: malformed origin, size or root hash");
    }
    bool same = got == size && memcmp(h.p, root, 32) == 0;
    vbytes_clear(&h);
    if (!same)
        return vfail_set(f, VERIFY_DENIED_TLOG,
                         "checkpoint is for another tree (size or root hash differs)");
    return 0;
}

static bool name_ok(const vlog *log, bool check_name, span name)
{
    return !check_name || log->host[0] == '\0' ||
           vmem_eq(name.p, name.n, log->host, strlen(log->host));
}

/* One signature line "— name base64": true when it is the log's and
 * verifies over text. */
static bool sig_line_ok(const vlog *log, bool check_name, span line, span text)
{
    static const char dash[] = "\xe2\x80\x94 "; /* U+2014 EM DASH, space */
    if (line.n < 4 || memcmp(line.p, dash, 4) != 0)
        return false;
    span rest = {line.p + 4, line.n - 4};
    const char *sp = memchr(rest.p, ' ', rest.n);
    if (sp == NULL)
        return false;
    span name = {rest.p, (size_t)(sp - rest.p)};
    vbytes sig = {0};
    if (!name_ok(log, check_name, name) ||
        vb64_decode(sp + 1, rest.n - name.n - 1, &sig, NULL) != 0)
        return false;
    bool ok = sig.n > 4 && log->log_id_len >= 4 && memcmp(sig.p, log->log_id, 4) == 0 &&
              vkey_verify(log->key, EVP_sha256(), (const uint8_t *)text.p, text.n, sig.p + 4,
                          sig.n - 4, NULL) == 0;
    vbytes_clear(&sig);
    return ok;
}

int vtlog_verify_checkpoint(const vlog *log, bool check_name, const char *note, size_t len,
                            int64_t size, const uint8_t root[32], vfail *f)
{
    span all = {note, len}, line;
    span text = {note, 0};
    bool blank = false;
    while (!blank && next_line(&all, &line)) {
        blank = line.n == 0;
        if (!blank)
            text.n = (size_t)(line.p + line.n + 1 - note);
    }
    if (!blank || text.n == 0)
        return vfail_set(f, VERIFY_DENIED_TLOG, "checkpoint: no blank line before signatures");
    if (check_body(text, size, root, f) != 0)
        return -1;
    while (next_line(&all, &line))
        if (sig_line_ok(log, check_name, line, text))
            return 0;
    return vfail_set(f, VERIFY_DENIED_TLOG, "checkpoint has no valid signature from the log");
}
