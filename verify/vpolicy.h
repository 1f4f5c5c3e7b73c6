/*
 * vpolicy.h — the parsed form of a containers-policy.json(5) policy, shared
 * by policy.c (which builds it) and sigstore.c (which evaluates images
 * against it). Internal to verify/.
 *
 * A policy is the global default requirement list plus the scopes of
 * transports.docker; each requirement of type sigstoreSigned carries its
 * trust material already loaded (OpenSSL keys and certificates), so
 * evaluation never touches the file system and is read-only.
 */
#ifndef SLUICE_VPOLICY_H
#define SLUICE_VPOLICY_H

#include "vinternal.h"

typedef enum {
    IDM_MATCH_EXACT,
    IDM_MATCH_REPO_DIGEST_OR_EXACT,
    IDM_MATCH_REPOSITORY,
    IDM_EXACT_REFERENCE,
    IDM_EXACT_REPOSITORY,
    IDM_REMAP_IDENTITY,
} videntity_type;

typedef struct {
    videntity_type type;
    vref ref; /* exactReference / exactRepository */
    char prefix[VERIFY_REF_MAX];
    char signed_prefix[VERIFY_REF_MAX];
} videntity;

typedef enum {
    REQ_ACCEPT,
    REQ_REJECT,
    REQ_SIGSTORE,
    REQ_SIGNED_BY,
    REQ_SIGNED_BASE_LAYER
} vreq_type;

typedef struct {
    vreq_type type;
    videntity identity;
    /* sigstoreSigned trust material: exactly one of keys, fulcio, pki */
    EVP_PKEY **keys;
    size_t nkeys;
    STACK_OF(X509) * fulcio_cas;
    char *oidc_issuer;
    char *subject_email;
    bool has_pki;
    STACK_OF(X509) * pki_roots;
    STACK_OF(X509) * pki_intermediates;
    char *pki_email;
    char *pki_hostname;
    vlog *rekor; /* rekorPublicKey*: log id = SHA-256 of the key */
    size_t nrekor;
} vreq;

typedef struct {
    char *scope; /* "" = transport default; NULL for the global default */
    vreq *reqs;
    size_t n;
} vscope;

struct verify_policy {
    vscope global;
    vscope *docker;
    size_t ndocker;
    verify_trust_root *root; /* optional, from verify_policy_options */
    uint8_t hash[VERIFY_DIGEST_LEN];
};

/* The most specific scope for the image (never NULL). */
const vscope *vpolicy_lookup(const verify_policy *p, const vref *image);
/* Does signedIdentity accept a signature claiming `signed_ref` for image? */
bool videntity_matches(const videntity *id, const vref *image, const char *signed_ref);

#endif
