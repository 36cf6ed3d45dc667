/* Small helpers for provend: file system, JSON members. */

#ifndef PROVEND_UTIL_H
#define PROVEND_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cbor.h>
#include <jansson.h>

#define PROVEND_NODE_ID_LEN  32     /* hex digits of 16 random bytes */

/*
 * obj's member key, a text of 1 to size - 1 bytes, copied into out:
 * PROVEN_OK; PROVEN_AGAIN when absent; PROVEN_ERR when not such a text.
 */
int provend_json_text(const json_t *obj, const char *key, char *out,
    size_t size);

/* A JSON value as CBOR (objects as maps of text keys, integers, reals,
 * texts, true, false, null), depth levels at most: NULL when deeper or
 * out of memory. */
cbor_item_t *provend_json_to_cbor(const json_t *value,
    unsigned depth);

/* mkdir -p with mode for the directories it creates. */
int provend_mkdirs(const char *path, mode_t mode, char *err, size_t errlen);


/* DATA/node-id: read it, or create it once with 16 random bytes in hex. */
int provend_node_id(const char *data_dir,
    char node_id[PROVEND_NODE_ID_LEN + 1], char *err, size_t errlen);

/* rm -r path (links removed, not followed); absent is not an error. */
int provend_remove_tree(const char *path, char *err, size_t errlen);

/* Milliseconds since the epoch. */
uint64_t provend_now_ms(void);

/* An EC public key of group ("P-256", "secp256k1") from its encoded point
 * (compressed or not): NULL when it is no point of that curve. */
typedef struct evp_pkey_st  provend_evp_pkey_t;
provend_evp_pkey_t *provend_ec_public_key(const char *group,
    const uint8_t *point, size_t len);

#endif /* PROVEND_UTIL_H */
