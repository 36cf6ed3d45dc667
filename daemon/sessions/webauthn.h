/*
 * WebAuthn's relying-party checks for passkeys (webauthn.c): a
 * registration's attestationObject ("none") and an assertion, each against
 * the challenge the node gave, the session's origin and the relying
 * party's id.  Pure functions: the caller keeps challenges single-use and
 * credentials stored.
 */

#ifndef PROVEND_WEBAUTHN_H
#define PROVEND_WEBAUTHN_H

#include <stddef.h>
#include <stdint.h>

#define PROVEND_WEBAUTHN_ES256            (-7)
#define PROVEND_WEBAUTHN_EDDSA            (-8)
#define PROVEND_WEBAUTHN_ID_MAX           255    /* a credential id */
#define PROVEND_WEBAUTHN_CHALLENGE_MAX    64
#define PROVEND_WEBAUTHN_CLIENT_DATA_MAX  4096
#define PROVEND_WEBAUTHN_AUTH_DATA_MAX    1024
#define PROVEND_WEBAUTHN_SIG_MAX          128    /* DER ES256: 72 */

typedef struct {
    uint8_t   id[PROVEND_WEBAUTHN_ID_MAX];
    size_t    id_len;
    int       alg;                  /* PROVEND_WEBAUTHN_ES256, _EDDSA */
    uint8_t   key[65];              /* 04 || x || y, or Ed25519's 32 */
    size_t    key_len;
    uint32_t  sign_count;
} provend_webauthn_cred_t;

typedef struct {
    const char     *rp_id;          /* the origin's host */
    const char     *origin;         /* as the browser writes it */
    const uint8_t  *challenge;
    size_t          challenge_len;
} provend_webauthn_expect_t;

/* clientDataJSON alone (type, challenge, origin, crossOrigin): what can be
 * checked before a credential is looked up. */
int provend_webauthn_client_data(const provend_webauthn_expect_t *e,
    const char *type, const uint8_t *json, size_t len, char *err,
    size_t errlen);

/*
 * A new credential: clientDataJSON of type webauthn.create with the
 * challenge and origin expected, an attestationObject {fmt: "none",
 * attStmt: {}, authData} whose rpIdHash is SHA-256(rp_id), user present
 * and verified, with an ES256 or EdDSA key.  PROVEN_OK and cred, or
 * PROVEN_ERR and err saying what did not hold.
 */
int provend_webauthn_register(const provend_webauthn_expect_t *e,
    const uint8_t *client_data, size_t cd_len,
    const uint8_t *attestation, size_t att_len,
    provend_webauthn_cred_t *cred, char *err, size_t errlen);

/*
 * An assertion of cred: webauthn.get, the same checks, its signature over
 * authenticatorData || SHA-256(clientDataJSON), and a sign count above the
 * stored one (unless both are 0).  PROVEN_OK with the new count in *count.
 */
int provend_webauthn_login(const provend_webauthn_expect_t *e,
    const provend_webauthn_cred_t *cred, const uint8_t *client_data,
    size_t cd_len, const uint8_t *auth_data, size_t ad_len,
    const uint8_t *sig, size_t sig_len, uint32_t *count, char *err,
    size_t errlen);

#endif /* PROVEND_WEBAUTHN_H */
