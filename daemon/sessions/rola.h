/*
 * Radix's ROLA for a session (rola.c): the hash a wallet signs, the
 * signature, and the key's virtual account address.
 */

#ifndef PROVEND_ROLA_H
#define PROVEND_ROLA_H

#include <stddef.h>
#include <stdint.h>

#define PROVEND_ROLA_CHALLENGE_LEN  32
#define PROVEND_RADIX_ADDRESS_MAX   80      /* account_tdx_2_1... : 66 */

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

#endif /* PROVEND_ROLA_H */
