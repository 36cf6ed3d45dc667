/*
 * WebAuthn, the checks a relying party makes (W3C Web Authentication,
 * level 3, sections 7.1 and 7.2), for passkeys: attestation "none" only
 * (a passkey's maker is not what we trust: the identity its PRF derives
 * is), ES256 and EdDSA keys, user presence and verification required, the
 * sign counter checked.  See webauthn.h.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>

#include "proven.h"
#include "webauthn.h"
#include "core/util.h"
#include "rola.h"


#define WA_FLAG_UP   0x01           /* user present */
#define WA_FLAG_UV   0x04           /* user verified */
#define WA_FLAG_AT   0x40           /* attested credential data */
#define WA_FLAG_ED   0x80           /* extensions */

#define WA_AUTH_DATA_HEAD  37       /* rpIdHash, flags, signCount */


/* ---- clientDataJSON --------------------------------------------------------- */

/*
 * The browser's account of the ceremony: its type, our challenge, the
 * page's origin, and not made inside another origin's frame.
 */
int
provend_webauthn_client_data(const provend_webauthn_expect_t *e, const char *type,
    const uint8_t *json, size_t len, char *err, size_t errlen)
{
    int           ok;
    size_t        n;
    uint8_t       challenge[PROVEND_WEBAUTHN_CHALLENGE_MAX];
    json_t       *cd, *cross;
    const char   *t, *c, *o;
    json_error_t  jerr;

    if (len == 0 || len > PROVEND_WEBAUTHN_CLIENT_DATA_MAX) {
        proven_errf(err, errlen, "clientDataJSON must be 1 to %d bytes",
                    PROVEND_WEBAUTHN_CLIENT_DATA_MAX);
        return PROVEN_ERR;
    }
    cd = json_loadb((const char *) json, len, JSON_REJECT_DUPLICATES, &jerr);
    t = json_string_value(json_object_get(cd, "type"));
    c = json_string_value(json_object_get(cd, "challenge"));
    o = json_string_value(json_object_get(cd, "origin"));
    cross = json_object_get(cd, "crossOrigin");
    ok = 0;
    if (cd == NULL || !json_is_object(cd) || t == NULL || c == NULL
        || o == NULL)
    {
        proven_errf(err, errlen, "clientDataJSON is not JSON with type, "
                    "challenge and origin");
    } else if (strcmp(t, type) != 0) {
        proven_errf(err, errlen, "clientDataJSON's type is not %s", type);
    } else if (proven_base64url_decode(c, strlen(c), challenge,
                                       sizeof(challenge), &n) != PROVEN_OK
               || n != e->challenge_len
               || CRYPTO_memcmp(challenge, e->challenge, n) != 0)
    {
        proven_errf(err, errlen, "clientDataJSON's challenge is not the one "
                    "this node gave the session");
    } else if (strcmp(o, e->origin) != 0) {
        proven_errf(err, errlen, "clientDataJSON's origin is not the "
                    "session's");
    } else if (cross != NULL && !json_is_boolean(cross)) {
        proven_errf(err, errlen, "clientDataJSON's crossOrigin is not a "
                    "boolean");
    } else if (cross != NULL && json_is_true(cross)) {
        proven_errf(err, errlen, "made in a frame of another origin "
                    "(crossOrigin)");
    } else {
        ok = 1;
    }
    json_decref(cd);
    return ok ? PROVEN_OK : PROVEN_ERR;
}


/* ---- authenticatorData ------------------------------------------------------ */

/* rpIdHash, user presence and verification; the sign count into *count. */
static int
wa_auth_head(const provend_webauthn_expect_t *e, const uint8_t *ad,
    size_t len, uint32_t *count, char *err, size_t errlen)
{
    uint8_t  rp_hash[SHA256_DIGEST_LENGTH];

    if (len < WA_AUTH_DATA_HEAD || len > PROVEND_WEBAUTHN_AUTH_DATA_MAX) {
        proven_errf(err, errlen, "authenticatorData must be 37 to %d bytes",
                    PROVEND_WEBAUTHN_AUTH_DATA_MAX);
        return PROVEN_ERR;
    }
    SHA256((const uint8_t *) e->rp_id, strlen(e->rp_id), rp_hash);
    if (CRYPTO_memcmp(ad, rp_hash, sizeof(rp_hash)) != 0) {
        proven_errf(err, errlen, "the credential is not one of relying party "
                    "%s (rpIdHash)", e->rp_id);
        return PROVEN_ERR;
    }
    if ((ad[32] & (WA_FLAG_UP | WA_FLAG_UV)) != (WA_FLAG_UP | WA_FLAG_UV)) {
        proven_errf(err, errlen, "the authenticator did not verify the user "
                    "(flags UP and UV)");
        return PROVEN_ERR;
    }
    *count = (uint32_t) ad[33] << 24 | (uint32_t) ad[34] << 16
             | (uint32_t) ad[35] << 8 | ad[36];
    return PROVEN_OK;
}


/* A COSE_Key of ES256 (EC2, P-256) or EdDSA (OKP, Ed25519) into cred. */
static int
wa_cose_key(const cbor_item_t *key, provend_webauthn_cred_t *cred)
{
    size_t               i, n;
    int64_t              label, v, kty, alg, crv;
    struct cbor_pair    *pairs;
    const cbor_item_t   *x, *y;

    if (!cbor_isa_map(key) || !cbor_map_is_definite(key)
        || cbor_map_size(key) > 8)
    {
        return PROVEN_ERR;
    }
    kty = alg = crv = 0;
    x = y = NULL;
    pairs = cbor_map_handle(key);
    n = cbor_map_size(key);
    for (i = 0; i < n; i++) {
        size_t  k;

        if (!(cbor_isa_uint(pairs[i].key) || cbor_isa_negint(pairs[i].key))
            || cbor_get_int(pairs[i].key) > 255)
        {
            return PROVEN_ERR;      /* COSE's labels here: small numbers */
        }
        label = cbor_isa_uint(pairs[i].key)
                ? (int64_t) cbor_get_int(pairs[i].key)
                : -1 - (int64_t) cbor_get_int(pairs[i].key);
        for (k = 0; k < i; k++) {
            if (cbor_isa_uint(pairs[k].key) == cbor_isa_uint(pairs[i].key)
                && cbor_get_int(pairs[k].key) == cbor_get_int(pairs[i].key))
            {
                return PROVEN_ERR;  /* one label, twice */
            }
        }
        if (label == -2 || label == -3) {
            if (!cbor_isa_bytestring(pairs[i].value)
                || !cbor_bytestring_is_definite(pairs[i].value))
            {
                return PROVEN_ERR;
            }
            if (label == -2) {
                x = pairs[i].value;
            } else {
                y = pairs[i].value;
            }
            continue;
        }
        if ((cbor_isa_uint(pairs[i].value) || cbor_isa_negint(pairs[i].value))
            && cbor_get_int(pairs[i].value) <= 65535)
        {
            v = cbor_isa_uint(pairs[i].value)
                ? (int64_t) cbor_get_int(pairs[i].value)
                : -1 - (int64_t) cbor_get_int(pairs[i].value);
        } else if (label == 1 || label == 3 || label == -1) {
            return PROVEN_ERR;      /* kty, alg, crv: small numbers */
        } else {
            continue;               /* key_ops and the like: not ours */
        }
        if (label == 1) {
            kty = v;
        } else if (label == 3) {
            alg = v;
        } else if (label == -1) {
            crv = v;
        }
    }

    if (kty == 2 && alg == PROVEND_WEBAUTHN_ES256 && crv == 1 && x != NULL
        && y != NULL && cbor_bytestring_length(x) == 32
        && cbor_bytestring_length(y) == 32)
    {
        cred->alg = PROVEND_WEBAUTHN_ES256;
        cred->key[0] = 0x04;                    /* uncompressed point */
        memcpy(cred->key + 1, cbor_bytestring_handle(x), 32);
        memcpy(cred->key + 33, cbor_bytestring_handle(y), 32);
        cred->key_len = 65;
        return PROVEN_OK;
    }
    if (kty == 1 && alg == PROVEND_WEBAUTHN_EDDSA && crv == 6 && x != NULL
        && y == NULL && cbor_bytestring_length(x) == 32
        && provend_ed25519_key_ok(cbor_bytestring_handle(x)))
    {
        cred->alg = PROVEND_WEBAUTHN_EDDSA;
        memcpy(cred->key, cbor_bytestring_handle(x), 32);
        cred->key_len = 32;
        return PROVEN_OK;
    }
    return PROVEN_ERR;
}


/* ---- signatures ------------------------------------------------------------- */

static EVP_PKEY *
wa_public_key(const provend_webauthn_cred_t *cred)
{
    if (cred->alg == PROVEND_WEBAUTHN_EDDSA) {
        return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, cred->key,
                                           32);
    }
    return provend_ec_public_key("P-256", cred->key, 65);
}


/* The signature over authenticatorData || SHA-256(clientDataJSON). */
static int
wa_verify(const provend_webauthn_cred_t *cred, const uint8_t *ad,
    size_t ad_len, const uint8_t *client_data, size_t cd_len,
    const uint8_t *sig, size_t sig_len)
{
    int          ok;
    uint8_t     *signed_data;
    EVP_PKEY    *key;
    EVP_MD_CTX  *md;

    if (sig_len == 0 || sig_len > PROVEND_WEBAUTHN_SIG_MAX) {
        return 0;
    }
    signed_data = malloc(ad_len + SHA256_DIGEST_LENGTH);
    key = wa_public_key(cred);
    md = EVP_MD_CTX_new();
    ok = 0;
    if (signed_data != NULL && key != NULL && md != NULL) {
        memcpy(signed_data, ad, ad_len);
        SHA256(client_data, cd_len, signed_data + ad_len);
        ok = EVP_DigestVerifyInit(md, NULL,
                                  cred->alg == PROVEND_WEBAUTHN_ES256
                                  ? EVP_sha256() : NULL, NULL, key) == 1
             && EVP_DigestVerify(md, sig, sig_len, signed_data,
                                 ad_len + SHA256_DIGEST_LENGTH) == 1;
    }
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    free(signed_data);
    return ok;
}


/* ---- the ceremonies --------------------------------------------------------- */

int
provend_webauthn_register(const provend_webauthn_expect_t *e,
    const uint8_t *client_data, size_t cd_len,
    const uint8_t *attestation, size_t att_len,
    provend_webauthn_cred_t *cred, char *err, size_t errlen)
{
    int                      rc;
    size_t                   at, id_len, used, ad_len;
    uint32_t                 count;
    EVP_PKEY                *point;
    cbor_item_t             *att, *fmt, *stmt, *ad_item, *key, *ext;
    const uint8_t           *ad;

    memset(cred, 0, sizeof(*cred));
    if (provend_webauthn_client_data(e, "webauthn.create", client_data, cd_len, err,
                       errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    if (att_len == 0 || att_len > PROVEND_WEBAUTHN_AUTH_DATA_MAX + 256) {
        proven_errf(err, errlen, "attestationObject too long");
        return PROVEN_ERR;
    }
    att = proven_cbor_load(attestation, att_len, NULL, 0);
    fmt = proven_cbor_map_get(att, "fmt");
    stmt = proven_cbor_map_get(att, "attStmt");
    ad_item = proven_cbor_map_get(att, "authData");
    rc = PROVEN_ERR;
    key = ext = NULL;
    if (att == NULL || fmt == NULL || !cbor_isa_string(fmt)
        || !cbor_string_is_definite(fmt) || stmt == NULL
        || !cbor_isa_map(stmt) || ad_item == NULL
        || !cbor_isa_bytestring(ad_item)
        || !cbor_bytestring_is_definite(ad_item))
    {
        proven_errf(err, errlen, "attestationObject is not CBOR {fmt, "
                    "attStmt, authData}");
        goto done;
    }
    /* "none": who made the authenticator is not what is trusted here */
    if (cbor_string_length(fmt) != 4
        || memcmp(cbor_string_handle(fmt), "none", 4) != 0
        || cbor_map_size(stmt) != 0)
    {
        proven_errf(err, errlen, "attestation must be \"none\" (ask with "
                    "attestation: \"none\")");
        goto done;
    }
    ad = cbor_bytestring_handle(ad_item);
    ad_len = cbor_bytestring_length(ad_item);
    if (wa_auth_head(e, ad, ad_len, &count, err, errlen) != PROVEN_OK) {
        goto done;
    }
    if (!(ad[32] & WA_FLAG_AT) || ad_len < WA_AUTH_DATA_HEAD + 18) {
        proven_errf(err, errlen, "authenticatorData holds no credential");
        goto done;
    }
    /* aaguid (16), the id's length (2), the id, the COSE key */
    at = WA_AUTH_DATA_HEAD + 16;
    id_len = (size_t) ad[at] << 8 | ad[at + 1];
    at += 2;
    if (id_len == 0 || id_len > PROVEND_WEBAUTHN_ID_MAX
        || at + id_len >= ad_len)
    {
        proven_errf(err, errlen, "the credential id must be 1 to %d bytes",
                    PROVEND_WEBAUTHN_ID_MAX);
        goto done;
    }
    memcpy(cred->id, ad + at, id_len);
    cred->id_len = id_len;
    at += id_len;
    /* one item, checked as any CBOR taken in (sizes against the input)
     * before libcbor builds it; extensions may follow */
    key = proven_cbor_load_first(ad + at, ad_len - at, &used, NULL, 0);
    if (key == NULL || wa_cose_key(key, cred) != PROVEN_OK)
    {
        proven_errf(err, errlen, "the credential's key is not an ES256 "
                    "(P-256) or EdDSA (Ed25519) COSE key");
        goto done;
    }
    at += used;
    if (ad[32] & WA_FLAG_ED) {
        ext = at < ad_len ? proven_cbor_load(ad + at, ad_len - at, NULL, 0)
                          : NULL;
        if (ext == NULL || !cbor_isa_map(ext)) {
            proven_errf(err, errlen, "authenticatorData's extensions are not "
                        "one CBOR map");
            goto done;
        }
    } else if (at != ad_len) {
        proven_errf(err, errlen, "bytes after the credential's key");
        goto done;
    }
    /* a key that could never sign takes no id */
    point = wa_public_key(cred);
    if (point == NULL) {
        proven_errf(err, errlen, "the credential's key is not a point of "
                    "its curve");
        goto done;
    }
    EVP_PKEY_free(point);
    cred->sign_count = count;
    rc = PROVEN_OK;

done:

    if (att != NULL) {
        cbor_decref(&att);
    }
    if (key != NULL) {
        cbor_decref(&key);
    }
    if (ext != NULL) {
        cbor_decref(&ext);
    }
    if (rc != PROVEN_OK) {
        memset(cred, 0, sizeof(*cred));
    }
    return rc;
}


int
provend_webauthn_login(const provend_webauthn_expect_t *e,
    const provend_webauthn_cred_t *cred, const uint8_t *client_data,
    size_t cd_len, const uint8_t *auth_data, size_t ad_len,
    const uint8_t *sig, size_t sig_len, uint32_t *count, char *err,
    size_t errlen)
{
    if (provend_webauthn_client_data(e, "webauthn.get", client_data, cd_len, err, errlen)
        != PROVEN_OK
        || wa_auth_head(e, auth_data, ad_len, count, err, errlen)
           != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    if (!wa_verify(cred, auth_data, ad_len, client_data, cd_len, sig,
                   sig_len))
    {
        proven_errf(err, errlen, "the signature does not verify with the "
                    "credential's key");
        return PROVEN_ERR;
    }
    /* an authenticator that counts never goes back: one that does was
     * copied (0 and 0: one that does not count, as many passkeys) */
    if ((*count != 0 || cred->sign_count != 0) && *count <= cred->sign_count)
    {
        proven_errf(err, errlen, "the sign count went from %u to %u: a "
                    "cloned authenticator?", cred->sign_count, *count);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}
