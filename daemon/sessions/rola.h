/*
 * Radix's ROLA for a session (rola.c): the hash a wallet signs, the
 * signature, and the key's virtual account address.
 */

#ifndef PROVEND_ROLA_H
#define PROVEND_ROLA_H

#include <stddef.h>
#include <stdint.h>

#define PROVEND_ROLA_CHALLENGE_LEN  32
#define PROVEND_RADIX_ADDRESS_MAX   90      /* account_tdx_2_1... : 69; in
                                               PROVEND_RADIX_LINK_SIZE */

typedef enum {
    PROVEND_ROLA_ED25519 = 0,               /* "curve25519" */
    PROVEND_ROLA_SECP256K1                  /* "secp256k1" */
} provend_rola_curve_t;

/* BLAKE2b-256('R' || challenge || len || dApp definition || origin). */
int provend_rola_hash(const uint8_t challenge[PROVEND_ROLA_CHALLENGE_LEN],
    const char *dapp_definition, const char *origin, uint8_t hash[32],
    char *err, size_t errlen);

/* Ed25519 (key 32, signature 64) or secp256k1 (compressed key 33,
 * signature 65: recovery id, r, s) over hash. */
int provend_rola_verify(provend_rola_curve_t curve, const uint8_t *pub,
    size_t pub_len, const uint8_t *sig, size_t sig_len,
    const uint8_t hash[32], char *err, size_t errlen);

/* The virtual account address of a key on network (1: mainnet, 2:
 * stokenet, ...), Bech32m, into out. */
int provend_rola_virtual_account(unsigned network,
    provend_rola_curve_t curve, const uint8_t *pub, size_t pub_len,
    char *out, size_t max);

/* The tail of the network's address prefixes: "rdx" (1), "loc" (240),
 * "sim" (242), else "tdx_<hex>_" into buf; NULL: no such network. */
const char *provend_radix_hrp_tail(unsigned network, char *buf, size_t max);

/* Whether text is a Bech32m address (checksum held) of the network, its
 * prefix "<entity>_<tail>" (entity NULL: any). */
int provend_radix_address_valid(const char *text, unsigned network,
    const char *entity);

/* The last 29 bytes of BLAKE2b-256 of a key: what owner_keys holds. */
int provend_rola_key_hash(const uint8_t *pub, size_t pub_len,
    uint8_t out[29]);

/* Whether an Ed25519 public key is a point of the prime-order group, not
 * of small order: a key no one holds (the identity point, for which
 * OpenSSL takes a "signature" of any message) is refused.  For every
 * Ed25519 key a session is given: its own, Identify's, a passkey's. */
int provend_ed25519_key_ok(const uint8_t pub[32]);

#endif /* PROVEND_ROLA_H */
