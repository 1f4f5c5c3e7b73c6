/*
 * verify.h — Sluice's trust layer: content digests, trust policy, cosign /
 * Sigstore signature verification (key-based and keyless, offline) and
 * kernel-module appended signatures.
 *
 * The sections below read as the specification of each part:
 *   1. Digests                     (digest.c)
 *   2. Verdicts and reasons        (util.c)
 *   3. Keys, certificates, trusted roots (keys.c, certs.c, trustroot.c)
 *   4. Simple-signing payloads     (payload.c)
 *   5. Trust policy                (policy.c, reference.c)
 *   6. Image evaluation            (sigstore.c, rekor.c, tlog.c)
 *   7. Sigstore bundles            (bundle.c, rekor.c, tlog.c, tsa.c)
 *   8. Kernel-module signatures    (module.c)
 * vinternal.h and vpolicy.h are private to verify/.
 * Everything uses OpenSSL 3 (EVP, X509, CMS, TS, CT) and jansson; nothing
 * here does I/O except the *_load functions, which read one named file.
 *
 * Digests. OCI names content by "<algorithm>:<encoded>" (OCI image spec,
 * descriptor.md). Sluice stores and compares SHA-256 digests as 32 raw bytes;
 * the text form is "sha256:" followed by exactly 64 lowercase hex digits.
 * Other registered algorithms (sha512) are recognised as valid grammar but
 * reported as unsupported, so the caller can answer the right OCI error
 * (DIGEST_INVALID vs UNSUPPORTED).
 *
 * Hashing is incremental: a verify_hasher takes bytes in any split and its
 * result does not depend on how they were split. It uses OpenSSL's EVP API.
 *
 * Nothing in section 1 allocates except verify_hasher_new; nothing here
 * blocks.
 */
#ifndef SLUICE_VERIFY_H
#define SLUICE_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#define VERIFY_DIGEST_LEN 32
/* "sha256:" + 64 hex + NUL */
#define VERIFY_DIGEST_TEXT_LEN 72

typedef enum {
    VERIFY_OK = 0,
    VERIFY_DIGEST_MALFORMED = -1,   /* not "<alg>:<encoded>" per the grammar */
    VERIFY_DIGEST_UNSUPPORTED = -2, /* valid grammar, algorithm other than sha256 */
    VERIFY_DIGEST_MISMATCH = -3,    /* bytes do not hash to the expected digest */
    VERIFY_NOMEM = -4,
} verify_status;

/* Parses the text digest s[0..len) into out. Accepts only the canonical form
 * for sha256 (lowercase hex, exactly 64 digits). */
verify_status verify_digest_parse(const char *s, size_t len, uint8_t out[VERIFY_DIGEST_LEN]);

/* Writes "sha256:<hex>" and a NUL into out. */
void verify_digest_format(const uint8_t digest[VERIFY_DIGEST_LEN],
                          char out[VERIFY_DIGEST_TEXT_LEN]);

/* One-shot SHA-256 of data into out. */
void verify_sha256(const void *data, size_t len, uint8_t out[VERIFY_DIGEST_LEN]);

/* VERIFY_OK when data hashes to expected, else VERIFY_DIGEST_MISMATCH. */
verify_status verify_digest_check(const void *data, size_t len,
                                  const uint8_t expected[VERIFY_DIGEST_LEN]);

typedef struct verify_hasher verify_hasher;

verify_hasher *verify_hasher_new(void);
void verify_hasher_update(verify_hasher *h, const void *data, size_t len);
/* Finishes into out; the hasher may then be reset and reused. */
void verify_hasher_final(verify_hasher *h, uint8_t out[VERIFY_DIGEST_LEN]);
void verify_hasher_reset(verify_hasher *h);
uint64_t verify_hasher_bytes(const verify_hasher *h);
void verify_hasher_free(verify_hasher *h);

/* ======================================================================
 * 2. Verdicts and reasons
 *
 * Every check ends in a verdict: allowed, or denied with a reason code
 * (for metrics and tests) and a one-line text saying why (for logs and the
 * `sluice verify` CLI). Verdicts are plain values: no allocation, safe to
 * copy into a cache next to the manifest digest and the policy hash.
 * Conventions for the rest of this header: functions returning int give 0
 * on success and -1 on failure; `err`/`errlen` (may be NULL/0) receive a
 * NUL-terminated message on failure. Every input buffer comes with its
 * length and is never read past it; none needs a NUL terminator.
 * ====================================================================== */

typedef enum {
    VERIFY_ALLOWED = 0,
    VERIFY_DENIED_NO_SIGNATURE,    /* a signature was required and none was found */
    VERIFY_DENIED_REJECTED,        /* the policy says "reject" for this scope */
    VERIFY_DENIED_MALFORMED,       /* payload, base64, JSON, PEM or bundle could not be parsed */
    VERIFY_DENIED_BAD_SIGNATURE,   /* signature does not verify: wrong key or tampered bytes */
    VERIFY_DENIED_DIGEST_MISMATCH, /* signature is valid but for another manifest / artifact */
    VERIFY_DENIED_IDENTITY,        /* signed docker-reference refused by signedIdentity */
    VERIFY_DENIED_CERT_UNTRUSTED,  /* certificate does not chain to a trusted CA */
    VERIFY_DENIED_CERT_EXPIRED,    /* signing time outside the certificate's (or CA's) validity */
    VERIFY_DENIED_CERT_IDENTITY,   /* OIDC issuer or subject (SAN) is not the expected one */
    VERIFY_DENIED_TLOG,            /* Rekor entry missing or bad: SET, body, inclusion proof */
    VERIFY_DENIED_TIMESTAMP,       /* no trusted signing time (RFC 3161 / integrated time) */
    VERIFY_DENIED_UNSUPPORTED,     /* well-formed but not supported (algorithm, entry kind) */
    VERIFY_DENIED_INTERNAL,        /* out of memory or library failure: fails closed */
} verify_reason;

#define VERIFY_TEXT_MAX 1024

typedef struct {
    int allowed;          /* 1 when allowed, else 0 */
    verify_reason reason; /* VERIFY_ALLOWED iff allowed */
    char text[VERIFY_TEXT_MAX];
} verify_verdict;

/* Stable short name of a reason, e.g. "no-signature", "identity-mismatch". */
const char *verify_reason_name(verify_reason r);

/* ======================================================================
 * 3. Keys, certificates and Sigstore trusted roots
 *
 * verify_pubkey: one public key (ECDSA P-256/P-384/P-521, RSA, Ed25519),
 * from PEM ("PUBLIC KEY", "RSA PUBLIC KEY") or DER SubjectPublicKeyInfo.
 * verify_certs: a set of X.509 certificates from PEM (any number of
 * CERTIFICATE blocks) or DER. verify_trust_root: a Sigstore
 * trusted_root.json (application/vnd.dev.sigstore.trustedroot+json): Rekor
 * logs, Fulcio CAs, CT logs and timestamp authorities, each with its
 * validity window. All three are immutable once built and may be shared by
 * any number of threads.
 * ====================================================================== */

typedef struct verify_pubkey verify_pubkey;
typedef struct verify_certs verify_certs;
typedef struct verify_trust_root verify_trust_root;

verify_pubkey *verify_pubkey_parse(const void *data, size_t len, char *err, size_t errlen);
verify_pubkey *verify_pubkey_load(const char *path, char *err, size_t errlen);
void verify_pubkey_free(verify_pubkey *k);

verify_certs *verify_certs_new(void);
/* Adds every certificate in data (PEM blocks, or one DER certificate). */
int verify_certs_add(verify_certs *c, const void *data, size_t len, char *err, size_t errlen);
int verify_certs_add_file(verify_certs *c, const char *path, char *err, size_t errlen);
size_t verify_certs_count(const verify_certs *c);
void verify_certs_free(verify_certs *c);

verify_trust_root *verify_trust_root_parse(const void *json, size_t len, char *err, size_t errlen);
verify_trust_root *verify_trust_root_load(const char *path, char *err, size_t errlen);
void verify_trust_root_free(verify_trust_root *r);

/* ======================================================================
 * 4. Simple-signing payloads
 *
 * The bytes cosign signs for an image (layer
 * application/vnd.dev.cosign.simplesigning.v1+json), parsed as strictly as
 * containers/image does: exactly {"critical","optional"}; critical is
 * exactly {"type","image","identity"} with type "cosign container image
 * signature", image exactly {"docker-manifest-digest"} (a valid digest),
 * identity exactly {"docker-reference"}; optional is null or an object whose
 * "creator" must be a string and "timestamp" an integer; other optional keys
 * are ignored. Duplicate keys anywhere are rejected.
 * ====================================================================== */

#define VERIFY_PAYLOAD_TYPE "cosign container image signature"
#define VERIFY_REF_MAX 512
#define VERIFY_DIGEST_TEXT_MAX 160 /* "sha512:" + 128 hex + NUL fits */

typedef struct {
    char docker_reference[VERIFY_REF_MAX];
    char manifest_digest[VERIFY_DIGEST_TEXT_MAX];
    int has_creator;
    char creator[256];
    int has_timestamp;
    int64_t timestamp;
} verify_payload;

int verify_payload_parse(const void *data, size_t len, verify_payload *out, char *err,
                         size_t errlen);

/* ======================================================================
 * 5. Trust policy: containers-policy.json(5)
 *
 * The file podman and skopeo read: {"default": [...], "transports": {...}}.
 * Requirements: insecureAcceptAnything, reject, sigstoreSigned (keyPath,
 * keyPaths, keyData, keyDatas, fulcio {caPath|caData, oidcIssuer,
 * subjectEmail}, pki {caRootsPath|caRootsData, caIntermediatesPath|
 * caIntermediatesData, subjectEmail, subjectHostname}, rekorPublicKeyPath(s)
 * / rekorPublicKeyData(s), signedIdentity). signedIdentity: matchExact,
 * matchRepoDigestOrExact (the default), matchRepository, exactReference,
 * exactRepository, remapIdentity, with the man page's semantics. signedBy
 * and signedBaseLayer (GPG) parse but are only allowed in transports other
 * than "docker" (Sluice cannot verify GPG); other transports are parsed
 * and validated but never evaluated.
 *
 * Scopes of transports.docker: "host[:port]", "host[:port]/namespace[/...]",
 * "host[:port]/repo", "host[:port]/repo:tag" or "...@digest", and
 * "*.example.com" wildcards. For an image the most specific scope wins:
 * exact reference, repository, each parent namespace, host[:port], then
 * "*.sub.domain", "*.domain" (port dropped), then the transport default
 * "", then "default".
 *
 * Loading is strict: an unknown key, a wrong type, a duplicated key, a bad
 * scope, an unreadable key file or an invalid key fails with
 * "<file>: <JSON path>: <what is wrong>", e.g.
 * "policy.json: $.transports.docker["r.example"][0].keyPath: ...".
 * Key and CA files named by the policy are read at load time (relative
 * paths from the current directory); the policy hash covers the policy
 * bytes and every file it read, so any change to trust material changes it.
 * A loaded policy is immutable: concurrent evaluations are safe.
 * ====================================================================== */

typedef struct verify_policy verify_policy;

typedef struct {
    /* Optional Sigstore trusted_root.json. It lends keyless bundle checks
     * what containers-policy.json cannot say: Rekor log keys by log id,
     * RFC 3161 timestamp authorities and CT logs (SCTs are checked only when
     * it is given). NULL: the policy's own keys only. */
    const char *trusted_root_path;
} verify_policy_options;

verify_policy *verify_policy_load(const char *path, const verify_policy_options *opts, char *err,
                                  size_t errlen);
/* `name` is what error messages call the document (e.g. its file name). */
verify_policy *verify_policy_parse(const void *json, size_t len, const char *name,
                                   const verify_policy_options *opts, char *err, size_t errlen);
void verify_policy_free(verify_policy *p);

/* The verifier's revision: raised whenever a change to verify/ can give
 * another verdict for the same policy and evidence (e.g. 2: bundles whose
 * in-toto subject has no name are judged instead of refused). */
#define VERIFY_REVISION 2

/* SHA-256 identifying the policy, all trust material it loaded and
 * VERIFY_REVISION: verdicts kept under it (even across restarts and
 * upgrades) are verdicts this policy and this verifier would give again. */
void verify_policy_hash(const verify_policy *p, uint8_t out[VERIFY_DIGEST_LEN]);

typedef struct {
    char scope[VERIFY_REF_MAX]; /* the scope that matched; "" = transport default */
    int is_global_default;      /* no docker scope matched: "default" applies */
    size_t count;               /* number of requirements */
    int accept_anything;        /* all are insecureAcceptAnything: nothing to verify */
    int rejects;                /* contains "reject": every image is denied */
    int needs_signatures;       /* contains sigstoreSigned: fetch .sig tag and referrers */
    int checks_now;             /* a requirement (pki) checks certificates at the time of
                                   evaluation: its verdicts hold only when they are made */
} verify_requirements;

/* The requirements for registry ("host[:port]") / repository (path,
 * "library/busybox"), requested by `tag` (NULL when by digest). -1 when
 * registry or repository is not a valid name. */
int verify_policy_requirements(const verify_policy *p, const char *registry, const char *repository,
                               const char *tag, verify_requirements *out);

/* ======================================================================
 * 6. Image evaluation
 *
 * Decides whether a manifest may be served under the policy, from what the
 * proxy gathered: the layers of the cosign "sha256-<hex>.sig" manifest
 * (one verify_cosign_sig per layer) and the Sigstore bundles found among
 * the manifest's referrers. Every requirement of the matching scope must be
 * satisfied; a sigstoreSigned requirement is satisfied by one accepted
 * signature:
 *   - .sig layers: mediaType must be simplesigning (others are ignored);
 *     the signature is checked with the requirement's key(s), or the
 *     certificate is checked against the Fulcio CA (chain at the Rekor
 *     integrated time, OIDC issuer extension, email SAN) or private PKI
 *     roots (chain at `now`, email / hostname); with Rekor keys the bundle
 *     annotation's SET must verify and its hashedrekord body must name this
 *     payload, signature and key/certificate. Then the payload's
 *     docker-manifest-digest must be this manifest and its docker-reference
 *     must satisfy signedIdentity.
 *   - bundles (v0.1-v0.3): a DSSE envelope with an in-toto statement whose
 *     subject has this manifest's sha256; the subject name is the signed
 *     identity, and a subject without a name (cosign v3 writes none: the
 *     bundle is attached to the image it signs) claims the image itself,
 *     as requested (by tag or by digest). Verified as in section 7 with the
 *     requirement's keys / CA and Rekor keys (plus the trusted root of
 *     verify_policy_options).
 * The result depends only on the arguments, so callers cache it keyed by
 * (manifest digest, tag, verify_policy_hash); with keys and keyless
 * signatures it does not depend on `now` (keyless certificates are checked
 * at the Rekor integrated time), PKI chains do (checks_now in
 * verify_requirements).
 * ====================================================================== */

#define VERIFY_SIMPLESIGNING_MEDIA_TYPE "application/vnd.dev.cosign.simplesigning.v1+json"

typedef struct {
    const char *registry;   /* host[:port] */
    const char *repository; /* e.g. "library/busybox" */
    const char *tag;        /* requested tag, NULL when requested by digest */
    uint8_t manifest_digest[VERIFY_DIGEST_LEN];
} verify_image;

typedef struct {
    const char *media_type; /* layer mediaType; NULL = simplesigning */
    size_t media_type_len;
    const uint8_t *payload; /* the layer blob */
    size_t payload_len;
    const char *signature; /* dev.cosignproject.cosign/signature (base64) */
    size_t signature_len;
    const char *certificate; /* dev.sigstore.cosign/certificate (PEM) or NULL */
    size_t certificate_len;
    const char *chain; /* dev.sigstore.cosign/chain (PEM) or NULL */
    size_t chain_len;
    const char *rekor_bundle; /* dev.sigstore.cosign/bundle (JSON) or NULL */
    size_t rekor_bundle_len;
} verify_cosign_sig;

typedef struct {
    const uint8_t *data;
    size_t len;
} verify_buf;

/* Fills *out and returns out->allowed. `now` is Unix time in seconds. */
int verify_image_evaluate(const verify_policy *p, const verify_image *img,
                          const verify_cosign_sig *sigs, size_t nsigs, const verify_buf *bundles,
                          size_t nbundles, int64_t now, verify_verdict *out);

/* ======================================================================
 * 7. Sigstore bundles (offline "verify-bundle")
 *
 * Media types application/vnd.dev.sigstore.bundle+json;version=0.1|0.2|0.3
 * and application/vnd.dev.sigstore.bundle.v0.3+json. Content is a
 * messageSignature over the artifact or a DSSE envelope (exactly one
 * signature, PAE-signed) whose in-toto statement names the artifact's
 * digest. The signer is the given managed key, or the certificate
 * (x509CertificateChain leaf / certificate) chained to a Fulcio CA of the
 * trusted root that is valid at the signing time, with at least one valid
 * SCT from a CT log of the root, and matching san/issuer when given.
 * Signing time comes from verified timestamps: the integrated time of a
 * Rekor v1 entry whose SET verifies, and RFC 3161 timestamps from the
 * root's timestamp authorities; at least one is required and each must lie
 * in the certificate's validity. Every transparency log entry must come
 * from a log of the root valid at that time, its body must match the
 * bundle (hashedrekord 0.0.1/0.0.2, dsse 0.0.1, intoto 0.0.2), its inclusion
 * proof must hash to the root hash of a checkpoint signed by that log
 * (required from bundle v0.2 on), and at least one entry must verify.
 * ====================================================================== */

typedef struct {
    const verify_trust_root *trust_root; /* required */
    const verify_pubkey *key;            /* managed key; NULL for keyless */
    const char *san;                     /* expected certificate identity, exact; NULL: any */
    const char *issuer;                  /* expected OIDC issuer, exact; NULL: any */
    const uint8_t *artifact;             /* the signed artifact's bytes, or NULL and: */
    size_t artifact_len;
    const char *artifact_digest; /* "sha256:<hex>" (or sha384/sha512) of the artifact */
    int64_t key_not_before;      /* managed key validity (Unix seconds, inclusive); */
    int64_t key_not_after;       /* 0 = unbounded. Signing times must lie inside. */
    int allow_no_tlog;           /* accept a bundle with no transparency-log entry when
                                    an RFC 3161 timestamp gives its time (default: a
                                    verified log entry is required) */
    int64_t now;                 /* Unix seconds */
} verify_bundle_opts;

typedef struct {
    verify_verdict verdict;
    int is_dsse;
    char payload_type[128];   /* DSSE payloadType */
    int64_t signed_time;      /* earliest verified timestamp, Unix seconds */
    char san[VERIFY_REF_MAX]; /* certificate identity (first SAN), if keyless */
    char issuer[256];         /* OIDC issuer extension, if keyless */
} verify_bundle_result;

/* Returns out->verdict.allowed. */
int verify_bundle(const void *json, size_t len, const verify_bundle_opts *o,
                  verify_bundle_result *out);

/* ======================================================================
 * 8. Kernel-module appended signatures
 *
 * A signed module is [module][CMS SignedData, DER, sig_len bytes]
 * [struct module_signature: algo, hash, id_type, signer_len, key_id_len,
 * pad[3], __be32 sig_len][VERIFY_MODULE_MAGIC]. As in the kernel, the
 * trailer must have id_type 2 (PKCS#7) and all other fields but sig_len
 * zero, and sig_len must fit inside the file. The signature is a detached
 * CMS over the module bytes before it, checked (OpenSSL CMS, binary mode)
 * against the configured certificates directly, without a chain, as the
 * kernel's keyring does. A blob is a kernel module when it is an ELF
 * relocatable object (32/64-bit, either endianness) with a .modinfo
 * section; "vermagic=" is read from .modinfo.
 * ====================================================================== */

#define VERIFY_MODULE_MAGIC "~Module signature appended~\n"

typedef struct {
    int is_module;      /* ELF relocatable with .modinfo */
    int has_signature;  /* a well-formed trailer is present */
    size_t content_len; /* bytes the signature covers (all bytes when unsigned) */
    size_t sig_offset;  /* CMS DER offset and length */
    size_t sig_len;
    char vermagic[256]; /* "" when absent */
    char signer[256];   /* issuer CN (or full name) of the SignerInfo */
    char key_id[160];   /* hex serial number, or subject key identifier */
    int key_id_is_skid; /* key_id is a subjectKeyIdentifier */
    char hash_algo[32]; /* e.g. "sha256" */
} verify_module_info;

/* 1 when data is a kernel module (signed or not), else 0. */
int verify_module_is_module(const uint8_t *data, size_t len);

/* Reads trailer, CMS signer info and .modinfo; 0 for an unsigned or a
 * well-formed signed blob, -1 when the trailer or CMS is malformed. */
int verify_module_parse(const uint8_t *data, size_t len, verify_module_info *info, char *err,
                        size_t errlen);

/* Parses into *info (may be NULL) and verifies the signature against
 * `trusted`; fills *out and returns out->allowed. Unsigned modules are
 * denied with VERIFY_DENIED_NO_SIGNATURE. */
int verify_module_verify(const uint8_t *data, size_t len, const verify_certs *trusted,
                         verify_module_info *info, verify_verdict *out);

#endif
