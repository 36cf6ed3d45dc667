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
 * The same for a purpose (keyd.h): a backup made, or one to restore, its
 * id bound into the document.  attest makes the document (job holds its
 * fields): NULL, provend_attest_sync with provider, as at start; the
 * backup op's pool thread runs a job its loop prepared.  once: one
 * exchange, no asking again; wait_s: asking again that long, not
 * cfg's.  A refusal asking again cannot change ("not_newest") ends it.
 */
typedef struct {
    provend_keyd_for_t   purpose;
    uint8_t              backup_id[PROVEND_BACKUP_ID_LEN];
    uint8_t              backup_parent[PROVEND_BACKUP_ID_LEN];  /* made */
    int                (*attest)(void *arg, provend_attest_job_t *job);
    void                *attest_arg;
    int                  once;
    unsigned             wait_s;        /* 0: cfg's */
} provend_keyd_ask_t;

int provend_master_kek_for(const provend_keyd_client_t *cfg,
    provend_provider_t *provider, const provend_keyd_ask_t *ask,
    uint8_t kek[PROVEND_KEY_LEN], char *err, size_t errlen);

/*
 * Asks keyd for this node's key-encryption key (again and again, backing
 * off up to 5 s, while wait_s allows), then opens or makes the master key
 * sealed with it (provend_keys_load_sealed_master), its sealed bytes into
 * sealed.
 */
int provend_master_from_keyd(const provend_keyd_client_t *cfg,
    provend_provider_t *provider, const char *data_dir,
    uint8_t master[PROVEND_KEY_LEN],
    uint8_t sealed[PROVEND_MASTER_SEALED_LEN], char *err, size_t errlen);

#endif /* PROVEND_MASTER_H */
