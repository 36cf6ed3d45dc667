/*
 * provend keys: the node master key, per-purpose keys derived from it with
 * HKDF-SHA256, and AES-256-GCM sealing with random nonces.
 */

#ifndef PROVEND_KEYS_H
#define PROVEND_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#define PROVEND_KEY_LEN         32
#define PROVEND_NONCE_LEN       12
#define PROVEND_TAG_LEN         16
#define PROVEND_SEAL_OVERHEAD   (PROVEND_NONCE_LEN + PROVEND_TAG_LEN)

/* Longest info string provend_keys_derive() accepts (OpenSSL's limit). */
#define PROVEND_KEYS_INFO_MAX   1024

/*
 * Loads DATA/keys/master.key (32 random bytes, 0600, dir 0700), creating it
 * if missing (local mode; logs a warning that the master key is on disk).
 * A file of any other size, or one that cannot be read, is an error: it is
 * never replaced, since that would lose every sealed byte.
 */
int provend_keys_load_master(const char *data_dir,
    uint8_t key[PROVEND_KEY_LEN], char *err, size_t errlen);

#define PROVEND_MASTER_SEALED_LEN  (PROVEND_KEY_LEN + PROVEND_SEAL_OVERHEAD)

/*
 * Enclave mode: DATA/keys/master.sealed, the master key sealed with kek
 * (the key keyd released), opened; or, with none there and no storage yet,
 * a new master key made and written sealed.  A master key in clear on the
 * disk (which the host writes) is refused, not used.  The sealed bytes
 * that opened (or were written) into sealed_out, unless NULL: what a
 * backup's header carries.
 */
int provend_keys_load_sealed_master(const char *data_dir,
    const uint8_t kek[PROVEND_KEY_LEN], uint8_t key[PROVEND_KEY_LEN],
    uint8_t sealed_out[PROVEND_MASTER_SEALED_LEN], char *err,
    size_t errlen);

/* The master key sealed with kek, as master.sealed holds it. */
int provend_keys_open_master(const uint8_t kek[PROVEND_KEY_LEN],
    const uint8_t sealed[PROVEND_MASTER_SEALED_LEN],
    uint8_t key[PROVEND_KEY_LEN]);

/* HKDF-SHA256(master, info) -> out (no salt); out_len 1..8160. */
int provend_keys_derive(const uint8_t master[PROVEND_KEY_LEN],
    const char *info, size_t info_len, uint8_t *out, size_t out_len);

/*
 * A box key between two X25519 keys: HKDF-SHA256 of their shared secret
 * with info label || first || second (the two public keys in an order
 * both ends agree on, so the key is this pair's only).  label: at most 64
 * characters.
 */
int provend_keys_box(EVP_PKEY *ours, const uint8_t theirs[32],
    const char *label, const uint8_t first[32], const uint8_t second[32],
    uint8_t out[PROVEND_KEY_LEN]);

/*
 * AES-256-GCM with a random 12-byte nonce: out = nonce || ciphertext || tag,
 * len + PROVEND_SEAL_OVERHEAD bytes.  ad is bound to the value (the KV scope,
 * store and key), so a value moved elsewhere fails to open.  in and out must
 * not overlap.
 */
int provend_seal(const uint8_t key[PROVEND_KEY_LEN], const uint8_t *ad,
    size_t ad_len, const uint8_t *in, size_t len, uint8_t *out);

/*
 * The reverse: out receives len - PROVEND_SEAL_OVERHEAD bytes.  PROVEN_ERR
 * when len is too short or the tag does not match (out is then wiped).
 */
int provend_open(const uint8_t key[PROVEND_KEY_LEN], const uint8_t *ad,
    size_t ad_len, const uint8_t *in, size_t len, uint8_t *out);

/*
 * Files the host stores but cannot read or change unseen: data sealed with
 * key and ad (what it is, so a file moved to another name does not open),
 * written whole to path, 0600.
 */
int provend_seal_file(const uint8_t key[PROVEND_KEY_LEN], const char *ad,
    const void *data, size_t len, const char *path, char *err,
    size_t errlen);

/*
 * The reverse, for at most max bytes of data: *out (malloc()ed, a NUL
 * added, wiped by the caller when secret) and *outlen.  PROVEN_AGAIN when
 * there is no such file; PROVEN_ERR and err when it does not open.
 */
int provend_open_file(const uint8_t key[PROVEND_KEY_LEN], const char *ad,
    const char *path, size_t max, uint8_t **out, size_t *outlen, char *err,
    size_t errlen);

#endif /* PROVEND_KEYS_H */
