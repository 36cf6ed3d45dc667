/* Enclave mode's master key, released by keyd: see master.c and keyd.h. */

#ifndef PROVEND_MASTER_H
#define PROVEND_MASTER_H

#include <stddef.h>
#include <stdint.h>

#include "attest/provider.h"
#include "keyd.h"

typedef struct {
    const char  *address;            /* --keyd: a transport address */
    uint8_t      identity[PROVEND_KEYD_PUB_LEN];   /* --keyd-identity */
    const char  *key_id;             /* --keyd-key-id */
    const char  *release_file;       /* --keyd-release, or NULL */
    unsigned     wait_s;             /* --keyd-wait: 0 asks for ever */
} provend_keyd_client_t;

/* The asking alone: keyd's key-encryption key into kek. */
int provend_master_kek(const provend_keyd_client_t *cfg,
    provend_provider_t *provider, uint8_t kek[PROVEND_KEY_LEN], char *err,
    size_t errlen);

/*
 * Asks keyd for this node's key-encryption key (again and again, backing
 * off up to 5 s, while wait_s allows), then opens or makes the master key
 * sealed with it (provend_keys_load_sealed_master).
 */
int provend_master_from_keyd(const provend_keyd_client_t *cfg,
    provend_provider_t *provider, const char *data_dir,
    uint8_t master[PROVEND_KEY_LEN], char *err, size_t errlen);

#endif /* PROVEND_MASTER_H */
