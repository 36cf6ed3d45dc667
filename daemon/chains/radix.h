/*
 * Radix through a Gateway (issue 20): what ROLA needs of the ledger (an
 * account's owner keys), where a non-fungible is (NFT scopes), and
 * events for apps' runOnRadixEvent handlers (radix_events.c).
 *
 *   provend --radix-gateway URL [--radix-proxy URL] [--radix-network ID]
 *           [--radix-tls required|optional]
 *
 * A Gateway is an indexer of the ledger: its answers carry no proof a
 * node can check (Radix offers no light client), so they are its word.
 * What this file holds the host to: in an enclave the Gateway is reached
 * over TLS only (the host relays the bytes, cannot answer for it); every
 * answer is bounded, parsed strictly, and on the node's network (its
 * ledger_state.network, the addresses' prefixes).
 *
 * Ops:
 *   radix.events null -> the following's state (filters, cursors, errors)
 *       (provend's socket)
 *   radix.nft: an app's worker opens a non-fungible's storage (radix_nft.c)
 */

#ifndef PROVEND_RADIX_H
#define PROVEND_RADIX_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "core/ops.h"


typedef struct provend_apps_s     provend_apps_t;
typedef struct provend_storage_s  provend_storage_t;
typedef struct provend_sessions_s provend_sessions_t;

typedef struct {
    uv_loop_t          *loop;
    const char         *gateway;      /* http(s) base URL, no trailing / */
    const char         *proxy;        /* an HTTP proxy, or NULL */
    unsigned            network;      /* 1 mainnet, 2 stokenet, ... */
    provend_apps_t     *apps;         /* events: their handlers, or NULL */
    provend_storage_t  *storage;      /* the cursors */
    int                 clustered;
    unsigned            poll_ms;      /* 0: 2000 */
    provend_sessions_t *sessions;     /* NFT scopes: the calls' links */
} provend_radix_config_t;

typedef struct provend_radix_s  provend_radix_t;

#define PROVEND_RADIX_ADDR_MAX   90       /* a Bech32m address, in text */
#define PROVEND_RADIX_OWNER_KEYS 32       /* owner_keys read, at most */

provend_radix_t *provend_radix_open(const provend_radix_config_t *cfg,
    char *err, size_t errlen);
void provend_radix_stop(provend_radix_t *r);
void provend_radix_free(provend_radix_t *r);

/*
 * The Gateway's answer to POST path body (a reference taken), max bytes
 * at most, by deadline (uv_hrtime ns): a new reference, its ledger_state
 * checked to be the node's network; NULL with err.  Blocking: not on the
 * loop.  cancel: set by another thread, the call ends (or NULL).
 */
json_t *provend_radix_post(provend_radix_t *r, const char *path,
    json_t *body, size_t max, uint64_t deadline, const int *cancel,
    char *err, size_t errlen);

/* A key's hash as owner_keys holds it: the last 29 bytes of its
 * BLAKE2b-256, and its curve (0 Ed25519, 1 secp256k1). */
typedef struct {
    uint8_t   hash[29];
    int       curve;
} provend_radix_key_hash_t;

/*
 * account's owner_keys metadata: 1 set (its hashes in keys, *n of them),
 * 0 not set (the account is still its virtual key's), PROVEN_ERR with
 * err.  Blocking.
 */
int provend_radix_owner_keys(provend_radix_t *r, const char *account,
    provend_radix_key_hash_t *keys, size_t *n, uint64_t deadline,
    char *err, size_t errlen);

/*
 * Where a non-fungible is: the global entity (an account, or another
 * component) whose vault holds it, into owner; 0 held, 1 burned or in
 * no global entity (owner ""), PROVEN_ERR with err.  Blocking.
 */
int provend_radix_nft_owner(provend_radix_t *r, const char *resource,
    const char *id, char *owner, size_t max, uint64_t *state_version,
    uint64_t deadline, char *err, size_t errlen);

/* Whether text is an address of the node's network of that entity
 * ("account", "component", "resource", ...; NULL any): Bech32m, its
 * checksum held (sessions/rola.c). */
int provend_radix_address_ok(const provend_radix_t *r, const char *text,
    const char *entity);
unsigned provend_radix_network(const provend_radix_t *r);

extern const provend_op_t  provend_radix_ops[];

#endif /* PROVEND_RADIX_H */
