/*
 * keyd: releasing a key only to the right code.  The wire format and its
 * cryptography, shared by provend (which asks) and `proven keyd` (which
 * holds the keys and answers).
 *
 * An exchange is two requests over one transport address (frames as on
 * provend's socket):
 *
 *   {"op": "challenge"}
 *       -> {"nonce": 32 bytes}            fresh, single use, 60 s
 *   {"op": "release", "key_id": ID, "document": ATTESTATION,
 *    "release": RELEASE (optional),
 *    "backup_made" (and "backup_parent") or "backup_restore": a backup's
 *    id (optional, below)}
 *       -> {"ephemeral": 32 bytes, "sealed": 60 bytes, "signature": 64}
 *
 * The document carries the challenge's nonce, user_data PROVEN_KEYD_MARK
 * (which no caller of nginx or of provend's socket can have bound) and an
 * X25519 key the asker made for this exchange.  keyd releases the key when
 * the document chains to its root and its PCRs equal the policy's, or
 * equal those of a RELEASE signed by one of the policy's release keys.
 * The key is sealed to the document's X25519 key (provend_keyd_box_key)
 * with the nonce and key id as associated data, and the answer is signed
 * by keyd's Ed25519 identity, which the asker pins: whoever relays the
 * exchange can neither read the key nor hand the asker a key of its own.
 */

#ifndef PROVEND_KEYD_H
#define PROVEND_KEYD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "proven.h"
#include "keys.h"

#define PROVEN_KEYD_MARK            "proven-keyd-v1"
#define PROVEND_KEYD_NONCE_LEN      32
#define PROVEND_KEYD_PUB_LEN        32      /* X25519 and Ed25519 */
#define PROVEND_KEYD_SIG_LEN        64      /* Ed25519 */
#define PROVEND_KEYD_SEALED_LEN     (PROVEND_KEY_LEN + PROVEND_SEAL_OVERHEAD)
#define PROVEND_KEYD_ID_MAX         64
#define PROVEND_KEYD_DOC_MAX        (32 * 1024)
#define PROVEND_KEYD_RELEASE_MAX    4096
#define PROVEND_KEYD_FRAME_MAX      (48 * 1024)

/*
 * Backups (backup.h) are known to keyd: a node that makes one tells keyd
 * its id ("backup_made" in the release request) and the id of the backup
 * its data follows ("backup_parent": the one it was restored from, or
 * the one it made last; zeros for none).  keyd keeps the newest id per
 * key id and takes a new one only from a node whose parent is that
 * newest: a second node restored from the same backup (a clone) that
 * backs up after the first is refused, so no fork of the data becomes the
 * newest behind the other's back.  A restore ("backup_restore") gets the
 * key for the newest backup only: the host cannot roll a node's data back
 * by handing in an older one.  What is asked and the ids are bound into
 * the document's user_data, mark | purpose (1 byte) | id | parent (made
 * only), so a relay can change none of them.  A plain release binds the
 * mark alone.
 */
#define PROVEND_BACKUP_ID_LEN       16
#define PROVEND_KEYD_USER_DATA_MAX  (sizeof(PROVEN_KEYD_MARK) - 1 + 1      \
                                     + 2 * PROVEND_BACKUP_ID_LEN)

typedef enum {
    PROVEND_KEYD_FOR_KEY = 0,
    PROVEND_KEYD_FOR_BACKUP_MADE = 1,
    PROVEND_KEYD_FOR_BACKUP_RESTORE = 2
} provend_keyd_for_t;

/* The user_data of a document for keyd; id ignored for FOR_KEY, parent
 * used for FOR_BACKUP_MADE only. */
size_t provend_keyd_user_data(provend_keyd_for_t purpose,
    const uint8_t id[PROVEND_BACKUP_ID_LEN],
    const uint8_t parent[PROVEND_BACKUP_ID_LEN],
    uint8_t out[PROVEND_KEYD_USER_DATA_MAX]);

/* A key id: [a-z0-9_-], 1..64 characters. */
int provend_keyd_id_valid(const char *id);

/* Ed25519 keys as 32 raw bytes in a file (0600): the private one loaded,
 * or made when create is set and the file is absent. */
EVP_PKEY *provend_keyd_load_ed25519(const char *path, int create, char *err,
    size_t errlen);
int provend_keyd_public(EVP_PKEY *key, uint8_t pub[PROVEND_KEYD_PUB_LEN]);

int provend_keyd_sign(EVP_PKEY *key, const uint8_t *msg, size_t len,
    uint8_t sig[PROVEND_KEYD_SIG_LEN]);
int provend_keyd_verify(const uint8_t pub[PROVEND_KEYD_PUB_LEN],
    const uint8_t *msg, size_t len, const uint8_t sig[PROVEND_KEYD_SIG_LEN]);

/* The box key of an exchange, from either end: ours is our X25519 key,
 * theirs the other end's public key. */
int provend_keyd_box_key(EVP_PKEY *ours, const uint8_t theirs[32],
    const uint8_t asker_pub[32], const uint8_t ephemeral_pub[32],
    uint8_t out[PROVEND_KEY_LEN]);

/* The associated data of the sealed key: nonce || key id. */
size_t provend_keyd_sealed_ad(const uint8_t nonce[PROVEND_KEYD_NONCE_LEN],
    const char *key_id, uint8_t out[PROVEND_KEYD_NONCE_LEN
                                    + PROVEND_KEYD_ID_MAX]);

/* What keyd signs: a mark, the nonce, the key id (u8 length first), the
 * asker's key, the ephemeral key and the sealed key. */
#define PROVEND_KEYD_ANSWER_MAX  (32 + PROVEND_KEYD_NONCE_LEN + 1            \
                                  + PROVEND_KEYD_ID_MAX + 64                 \
                                  + PROVEND_KEYD_SEALED_LEN)
size_t provend_keyd_answer_message(const uint8_t nonce[32],
    const char *key_id, const uint8_t asker_pub[32],
    const uint8_t ephemeral_pub[32],
    const uint8_t sealed[PROVEND_KEYD_SEALED_LEN],
    uint8_t out[PROVEND_KEYD_ANSWER_MAX]);

/*
 * A release: another measurement an operator vouches for.  The file is a
 * CBOR array [payload, signer, signature]: payload the CBOR map
 * {"version": uint, "pcrs": {index: bytes}}, signer an Ed25519 public key,
 * signature over PROVEND_KEYD_RELEASE_MARK || payload.
 */
#define PROVEND_KEYD_RELEASE_MARK  "proven-keyd-release-v1"

typedef struct {
    uint64_t       version;
    size_t         pcr_count;
    proven_pcr_t   pcrs[PROVEN_ATT_PCRS_MAX];
    uint8_t        signer[PROVEND_KEYD_PUB_LEN];
} provend_keyd_release_t;

/* Decodes and checks the signature (by the signer it names: whether that
 * signer is trusted is the caller's question). */
int provend_keyd_release_open(const uint8_t *buf, size_t len,
    provend_keyd_release_t *rel, char *err, size_t errlen);

/* Signs a release of version and PCRs: a malloc()ed file in out. */
int provend_keyd_release_make(EVP_PKEY *key, uint64_t version,
    const proven_pcr_t *pcrs, size_t pcr_count, uint8_t **out,
    size_t *outlen, char *err, size_t errlen);

/* Whether pcrs name PCR0, PCR1 and PCR2: the image whole (a policy or a
 * release of fewer would match images it never meant, old ones too). */
int provend_keyd_pcrs_cover_image(const proven_pcr_t *pcrs, size_t count);

/* Whether doc holds every one of pcrs with an equal value; if not, the
 * index of the first that differs in *which. */
int provend_keyd_pcrs_match(const proven_attestation_doc_t *doc,
    const proven_pcr_t *pcrs, size_t count, uint32_t *which);

#endif /* PROVEND_KEYD_H */
