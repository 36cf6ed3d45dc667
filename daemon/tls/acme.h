/*
 * An ACME client (RFC 8555) for one certificate, with TLS-ALPN-01 (RFC
 * 8737) challenges: libcurl, OpenSSL, jansson.  Blocking: run it on a
 * thread of its own.
 *
 * The account key (ES256) and the certificate key (P-256) are the
 * caller's: made inside the enclave and kept only sealed.  While an
 * authorization is pending, the challenge certificate for it is written
 * where nginx serves it to `acme-tls/1` ClientHellos (publish), and
 * removed once the authorization is decided.
 */

#ifndef PROVEND_ACME_H
#define PROVEND_ACME_H

#include <stddef.h>

#include <openssl/evp.h>


#define PROVEND_ACME_NAME_MAX   253


/* Hands a challenge certificate (PEM, key then certificate) to nginx;
 * pem NULL: withdraws it.  PROVEN_OK when in place. */
typedef int (*provend_acme_publish_pt)(void *data, const char *domain,
    const char *pem, char *err, size_t errlen);

typedef struct {
    const char              *directory;     /* https://.../directory */
    const char              *domain;
    const char              *contact;       /* mailto:..., or NULL */
    const char              *ca_file;       /* the server's CA, or NULL */
    const char              *proxy;         /* an HTTP proxy, or NULL */
    EVP_PKEY                *account_key;   /* P-256 */
    EVP_PKEY                *cert_key;      /* P-256, for the CSR */
    provend_acme_publish_pt  publish;
    void                    *publish_data;
    long                     timeout_s;     /* the whole order */
    int                     *cancel;        /* set (atomically) to stop the
                                               order at its next step */
} provend_acme_config_t;

/*
 * Orders a certificate for cfg->domain: account (made or found), order,
 * TLS-ALPN-01 authorizations, finalize with a CSR of cert_key, download.
 * PROVEN_OK and the chain (PEM, malloc()ed) in *chain; else err says
 * which step failed and what the server said.
 */
int provend_acme_order(const provend_acme_config_t *cfg, char **chain,
    char *err, size_t errlen);

/*
 * Revokes the first certificate of chain (PEM) with the account that
 * ordered it (RFC 8555 7.6); reason: an RFC 5280 CRLReason code.
 * PROVEN_OK once the server says it is revoked; else err says why.
 */
int provend_acme_revoke(const provend_acme_config_t *cfg, const char *chain,
    int reason, char *err, size_t errlen);

/*
 * The challenge certificate of RFC 8737 for domain and a key
 * authorization: self-signed with a key of its own, one dNSName, the
 * critical acmeIdentifier extension holding SHA-256(key_authorization).
 * PEM (key, then certificate), malloc()ed; NULL out of memory.
 */
char *provend_acme_challenge_cert(const char *domain,
    const char *key_authorization);

/* base64url(SHA-256 of the key's JWK), RFC 7638: 43 characters and NUL. */
int provend_acme_thumbprint(EVP_PKEY *key, char out[44]);

#endif /* PROVEND_ACME_H */
