/*
 * Who signed a message, as Ethereum wallets sign them (EIP-191 version
 * 0x45, "personal_sign"): the address whose key made a secp256k1
 * signature, recovered from it.  Only public values are handled here (a
 * signature and a message), so OpenSSL's elliptic-curve arithmetic serves
 * without needing to be constant-time.  See eth.h.
 */

#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>

#include "proven.h"
#include "eth.h"


int
provend_eth_personal_hash(const uint8_t *message, size_t len,
    uint8_t hash[32])
{
    int       head;
    char      prefix[64];
    uint8_t  *buf;

    /* "\x19Ethereum Signed Message:\n" and the length in decimal */
    head = snprintf(prefix, sizeof(prefix),
                    "\x19" "Ethereum Signed Message:\n%zu", len);
    buf = len <= PROVEND_ETH_MESSAGE_MAX
          ? OPENSSL_malloc((size_t) head + len + 1) : NULL;
    if (buf == NULL) {
        return PROVEN_ERR;
    }
    memcpy(buf, prefix, (size_t) head);
    if (len > 0) {
        memcpy(buf + head, message, len);
    }
    provend_keccak256(buf, (size_t) head + len, hash);
    OPENSSL_free(buf);
    return PROVEN_OK;
}


int
provend_eth_recover(const uint8_t hash[32], const uint8_t signature[65],
    uint8_t address[20], char *err, size_t errlen)
{
    int            rc, v;
    BIGNUM        *r, *s, *e, *n, *rinv, *u1, *u2;
    BN_CTX        *ctx;
    EC_GROUP      *group;
    EC_POINT      *R, *Q;
    unsigned char  pub[65], digest[32];

    /* v: 27 or 28 (0 or 1 from some signers); r and s in [1, n) */
    v = signature[64] >= 27 ? signature[64] - 27 : signature[64];
    if (v != 0 && v != 1) {
        proven_errf(err, errlen, "the signature's v is not 27 or 28");
        return PROVEN_ERR;
    }

    rc = PROVEN_ERR;
    ctx = BN_CTX_new();
    group = EC_GROUP_new_by_curve_name(NID_secp256k1);
    R = group != NULL ? EC_POINT_new(group) : NULL;
    Q = group != NULL ? EC_POINT_new(group) : NULL;
    r = BN_bin2bn(signature, 32, NULL);
    s = BN_bin2bn(signature + 32, 32, NULL);
    e = BN_bin2bn(hash, 32, NULL);
    n = BN_new();
    rinv = BN_new();
    u1 = BN_new();
    u2 = BN_new();
    if (ctx == NULL || group == NULL || R == NULL || Q == NULL || r == NULL
        || s == NULL || e == NULL || n == NULL || rinv == NULL || u1 == NULL
        || u2 == NULL || !EC_GROUP_get_order(group, n, ctx)
        || !BN_nnmod(e, e, n, ctx))
    {
        proven_errf(err, errlen, "no secp256k1 here (or out of memory)");
        goto done;
    }
    /*
     * A hash of zero (mod n) would make Q = r^-1 s R, which anyone who
     * knows a public key P can aim at it (R = kP, s = r/k): refused.
     */
    if (BN_is_zero(e)) {
        proven_errf(err, errlen, "a hash of zero is no message's");
        goto done;
    }
    if (BN_is_zero(r) || BN_is_zero(s) || BN_cmp(r, n) >= 0
        || BN_cmp(s, n) >= 0)
    {
        proven_errf(err, errlen, "the signature's r or s is out of range");
        goto done;
    }

    /*
     * R: the point whose x is r (r < n < p: the one x of the two an
     * ECDSA nonce can give, as v says 0 or 1) and whose y's parity is v.
     * Then the key Q = r^-1 (s R - e G) = (-e r^-1) G + (s r^-1) R.
     */
    if (!EC_POINT_set_compressed_coordinates(group, R, r, v, ctx)) {
        proven_errf(err, errlen, "the signature's r is no point's x");
        goto done;
    }
    if (!BN_mod_inverse(rinv, r, n, ctx)
        || !BN_mod_mul(u1, e, rinv, n, ctx)
        || !BN_mod_sub(u1, n, u1, n, ctx)           /* -e r^-1 */
        || !BN_mod_mul(u2, s, rinv, n, ctx)
        || !EC_POINT_mul(group, Q, u1, R, u2, ctx))
    {
        proven_errf(err, errlen, "the signature recovers no key");
        goto done;
    }
    if (EC_POINT_is_at_infinity(group, Q)
        || EC_POINT_point2oct(group, Q, POINT_CONVERSION_UNCOMPRESSED, pub,
                              sizeof(pub), ctx) != sizeof(pub))
    {
        proven_errf(err, errlen, "the signature recovers no key");
        goto done;
    }

    /* the address: the last 20 bytes of keccak(X || Y) */
    provend_keccak256(pub + 1, 64, digest);
    memcpy(address, digest + 12, 20);
    rc = PROVEN_OK;

done:

    BN_free(r);
    BN_free(s);
    BN_free(e);
    BN_free(n);
    BN_free(rinv);
    BN_free(u1);
    BN_free(u2);
    EC_POINT_free(R);
    EC_POINT_free(Q);
    EC_GROUP_free(group);
    BN_CTX_free(ctx);
    ERR_clear_error();                  /* a refused signature's reasons */
    return rc;
}
