/*
 * Radix's ROLA (Radix Off-Ledger Authentication): a wallet signs, with an
 * account's key, the BLAKE2b-256 of
 *
 *   'R' || challenge (32 bytes) || length of the dApp definition address
 *   (one byte) || that address || the origin
 *
 * and the relying party checks the signature and that the key is the
 * account's.  Here the account must be the key's virtual account (the
 * address derived from the key, as the Radix engine derives it: an entity
 * byte, then the last 29 bytes of BLAKE2b-256 of the key, in Bech32m);
 * an account whose owner keys were changed on ledger needs a Gateway
 * read, which is not done yet.  BLAKE2b-256 is libsodium's (Debian 12's
 * OpenSSL has BLAKE2b-512 only).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "proven.h"
#include "rola.h"
#include "core/util.h"


#define ROLA_ENTITY_ED25519_ACCOUNT    0x51
#define ROLA_ENTITY_SECP256K1_ACCOUNT  0xd1
#define ROLA_ORIGIN_MAX                255


int
provend_rola_hash(const uint8_t challenge[PROVEND_ROLA_CHALLENGE_LEN],
    const char *dapp_definition, const char *origin, uint8_t hash[32],
    char *err, size_t errlen)
{
    size_t   dlen, olen, at;
    uint8_t  msg[1 + PROVEND_ROLA_CHALLENGE_LEN + 1 + 255
                 + ROLA_ORIGIN_MAX];

    dlen = strlen(dapp_definition);
    olen = strlen(origin);
    /* one length byte, and Radix's own tools write none below 16 */
    if (dlen < 16 || dlen > 255 || olen > ROLA_ORIGIN_MAX) {
        proven_errf(err, errlen, "the dApp definition address must be 16 to "
                    "255 characters, the origin 255 at most");
        return PROVEN_ERR;
    }
    at = 0;
    msg[at++] = 'R';
    memcpy(msg + at, challenge, PROVEND_ROLA_CHALLENGE_LEN);
    at += PROVEND_ROLA_CHALLENGE_LEN;
    msg[at++] = (uint8_t) dlen;
    memcpy(msg + at, dapp_definition, dlen);
    at += dlen;
    memcpy(msg + at, origin, olen);
    at += olen;
    if (sodium_init() < 0
        || crypto_generichash(hash, 32, msg, at, NULL, 0) != 0)
    {
        proven_errf(err, errlen, "BLAKE2b failed");
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/* secp256k1: r || s of the 65 bytes (the first, the recovery id, unused)
 * over hash, with a compressed key of 33 bytes. */
static int
rola_secp256k1(const uint8_t pub[33], const uint8_t sig[65],
    const uint8_t hash[32])
{
    int             ok;
    size_t          der_len;
    uint8_t        *der;
    BIGNUM         *r, *s;
    EVP_PKEY       *key;
    ECDSA_SIG      *es;
    EVP_PKEY_CTX   *ctx;

    key = provend_ec_public_key("secp256k1", pub, 33);
    if (key == NULL) {
        return 0;
    }

    ok = 0;
    der = NULL;
    es = ECDSA_SIG_new();
    r = BN_bin2bn(sig + 1, 32, NULL);
    s = BN_bin2bn(sig + 33, 32, NULL);
    if (es != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(es, r, s)) {
        r = s = NULL;                   /* es has them */
        der_len = (size_t) i2d_ECDSA_SIG(es, &der);
        ctx = EVP_PKEY_CTX_new(key, NULL);
        ok = der != NULL && ctx != NULL && EVP_PKEY_verify_init(ctx) == 1
             && EVP_PKEY_verify(ctx, der, der_len, hash, 32) == 1;
        EVP_PKEY_CTX_free(ctx);
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    OPENSSL_free(der);
    EVP_PKEY_free(key);
    return ok;
}


int
provend_rola_verify(provend_rola_curve_t curve, const uint8_t *pub,
    size_t pub_len, const uint8_t *sig, size_t sig_len,
    const uint8_t hash[32], char *err, size_t errlen)
{
    int  ok;

    if (curve == PROVEND_ROLA_ED25519) {
        if (pub_len != 32 || sig_len != 64) {
            proven_errf(err, errlen, "curve25519: a key of 32 bytes and a "
                        "signature of 64");
            return PROVEN_ERR;
        }
        /* libsodium's: it refuses keys and R of small order (OpenSSL
         * takes the identity point's "signature" of anything), so no
         * account of a key nobody holds can be linked */
        ok = sodium_init() >= 0
             && crypto_sign_verify_detached(sig, hash, 32, pub) == 0;
    } else {
        if (pub_len != 33 || sig_len != 65) {
            proven_errf(err, errlen, "secp256k1: a compressed key of 33 "
                        "bytes and a signature of 65");
            return PROVEN_ERR;
        }
        ok = rola_secp256k1(pub, sig, hash);
    }
    if (!ok) {
        proven_errf(err, errlen, "the signature is not that key's over "
                    "ROLA's message (R, this session's challenge, the dApp "
                    "definition, the origin)");
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/* ---- Bech32m (BIP-350) ------------------------------------------------------ */

static uint32_t
bech32_polymod(const uint8_t *v, size_t n)
{
    size_t    i;
    int       k;
    uint32_t  chk, top;
    static const uint32_t  gen[5] = { 0x3b6a57b2, 0x26508e6d, 0x1ea119fa,
                                      0x3d4233dd, 0x2a1462b3 };

    chk = 1;
    for (i = 0; i < n; i++) {
        top = chk >> 25;
        chk = (chk & 0x1ffffff) << 5 ^ v[i];
        for (k = 0; k < 5; k++) {
            if ((top >> k) & 1) {
                chk ^= gen[k];
            }
        }
    }
    return chk;
}


static int
bech32m_encode(const char *hrp, const uint8_t *data, size_t len, char *out,
    size_t max)
{
    size_t    i, h, n, o, acc_bits;
    uint8_t   v[256];
    uint32_t  acc, chk;
    static const char  abc[] = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

    h = strlen(hrp);
    if (2 * h + 1 + (len * 8 + 4) / 5 + 6 > sizeof(v)) {
        return PROVEN_ERR;
    }
    /* the hrp expanded, then the data in 5-bit groups (padded) */
    n = 0;
    for (i = 0; i < h; i++) {
        v[n++] = (uint8_t) (hrp[i] >> 5);
    }
    v[n++] = 0;
    for (i = 0; i < h; i++) {
        v[n++] = (uint8_t) (hrp[i] & 31);
    }
    o = n;
    acc = 0;
    acc_bits = 0;
    for (i = 0; i < len; i++) {
        acc = acc << 8 | data[i];
        acc_bits += 8;
        while (acc_bits >= 5) {
            acc_bits -= 5;
            v[n++] = (uint8_t) (acc >> acc_bits & 31);
        }
    }
    if (acc_bits > 0) {
        v[n++] = (uint8_t) (acc << (5 - acc_bits) & 31);
    }
    memset(v + n, 0, 6);
    chk = bech32_polymod(v, n + 6) ^ 0x2bc830a3;
    for (i = 0; i < 6; i++) {
        v[n + i] = (uint8_t) (chk >> 5 * (5 - i) & 31);
    }
    n += 6;
    if (h + 1 + (n - o) + 1 > max) {
        return PROVEN_ERR;
    }
    memcpy(out, hrp, h);
    out[h] = '1';
    for (i = o; i < n; i++) {
        out[h + 1 + i - o] = abc[v[i]];
    }
    out[h + 1 + n - o] = '\0';
    return PROVEN_OK;
}


const char *
provend_radix_hrp_tail(unsigned network, char *buf, size_t max)
{
    switch (network) {
    case 1:
        return "rdx";
    case 240:
        return "loc";
    case 242:
        return "sim";
    default:
        if (network == 0 || network > 255) {
            return NULL;
        }
        snprintf(buf, max, "tdx_%x_", network);
        return buf;
    }
}


int
provend_radix_address_valid(const char *text, unsigned network,
    const char *entity)
{
    char         tailbuf[16], hrp[48];
    size_t       i, h, n, len;
    uint8_t      v[2 * 48 + 1 + PROVEND_RADIX_ADDRESS_MAX];
    const char  *tail, *sep, *at;
    static const char  abc[] = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

    tail = provend_radix_hrp_tail(network, tailbuf, sizeof(tailbuf));
    len = strnlen(text, PROVEND_RADIX_ADDRESS_MAX + 1);
    sep = strrchr(text, '1');
    if (tail == NULL || len > PROVEND_RADIX_ADDRESS_MAX || sep == NULL) {
        return 0;
    }
    h = (size_t) (sep - text);
    if (h == 0 || h >= sizeof(hrp) || len - h - 1 < 6) {
        return 0;
    }
    memcpy(hrp, text, h);
    hrp[h] = '\0';
    /* the prefix: <entity>_<network's tail>, the entity named or any */
    if (h <= strlen(tail) + 1 || strcmp(hrp + h - strlen(tail), tail) != 0
        || hrp[h - strlen(tail) - 1] != '_'
        || (entity != NULL
            && (strlen(entity) != h - strlen(tail) - 1
                || strncmp(hrp, entity, strlen(entity)) != 0)))
    {
        return 0;
    }
    n = 0;
    for (i = 0; i < h; i++) {
        if (!((hrp[i] >= 'a' && hrp[i] <= 'z') || hrp[i] == '_'
              || (hrp[i] >= '0' && hrp[i] <= '9')))
        {
            return 0;
        }
        v[n++] = (uint8_t) (hrp[i] >> 5);
    }
    v[n++] = 0;
    for (i = 0; i < h; i++) {
        v[n++] = (uint8_t) (hrp[i] & 31);
    }
    for (i = h + 1; i < len; i++) {
        at = text[i] != '\0' ? strchr(abc, text[i]) : NULL;
        if (at == NULL) {
            return 0;
        }
        v[n++] = (uint8_t) (at - abc);
    }
    return bech32_polymod(v, n) == 0x2bc830a3;
}


int
provend_rola_key_hash(const uint8_t *pub, size_t pub_len, uint8_t out[29])
{
    uint8_t  hash[32];

    if (sodium_init() < 0 || crypto_generichash(hash, 32, pub, pub_len,
                                                  NULL, 0) != 0)
    {
        return PROVEN_ERR;
    }
    memcpy(out, hash + 3, 29);
    return PROVEN_OK;
}


int
provend_rola_virtual_account(unsigned network, provend_rola_curve_t curve,
    const uint8_t *pub, size_t pub_len, char *out, size_t max)
{
    char         hrp[32], tailbuf[16];
    uint8_t      data[30];
    const char  *tail;

    tail = provend_radix_hrp_tail(network, tailbuf, sizeof(tailbuf));
    if (tail == NULL) {
        return PROVEN_ERR;
    }
    snprintf(hrp, sizeof(hrp), "account_%s", tail);
    if (provend_rola_key_hash(pub, pub_len, data + 1) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    data[0] = curve == PROVEND_ROLA_ED25519 ? ROLA_ENTITY_ED25519_ACCOUNT
                                            : ROLA_ENTITY_SECP256K1_ACCOUNT;
    return bech32m_encode(hrp, data, sizeof(data), out, max);
}


int
provend_ed25519_key_ok(const uint8_t pub[32])
{
    return sodium_init() >= 0 && crypto_core_ed25519_is_valid_point(pub) == 1;
}
