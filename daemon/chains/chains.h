/*
 * Reads of an Ethereum chain the node checks itself (issue 19): the
 * state at a configured checkpoint block, through a JSON-RPC endpoint the
 * host may answer for, every answer proved (eth.h).
 *
 *   provend --eth-rpc URL --eth-checkpoint BLOCK_HASH [--eth-proxy URL]
 *
 * Op on provend's socket:
 *   eth.account {"address": "0x<20 bytes>", "slots": ["0x<32 bytes>", ...]}
 *       (16 slots at most, each once) -> {"block", "block_hash",
 *       "account": null | {"nonce", "balance", "storage_root",
 *       "code_hash"}, "slots": {"0x<slot>": "0x<value>", ...}} (an
 *       absent account's slots "0x0": proved with it)
 *   The checkpoint's header is fetched by its hash and hashed here; the
 *   proofs are followed from its state root.  An endpoint that answers
 *   anything else: "chain_unverified", saying what did not hold.
 *   With "confirmations": N (0..128): at the block N below the head the
 *   node follows instead (follow.c: linked to the checkpoint, which chain
 *   being the endpoint's word), "unavailable" while it has none.
 */

#ifndef PROVEND_CHAINS_H
#define PROVEND_CHAINS_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/ops.h"


typedef struct provend_apps_s     provend_apps_t;
typedef struct provend_storage_s  provend_storage_t;
typedef struct provend_sessions_s provend_sessions_t;

typedef struct {
    uv_loop_t          *loop;
    const char         *rpc;    /* http(s) URL of a JSON-RPC endpoint */
    const char         *checkpoint;  /* 0x and 64 hex digits: a block hash */
    const char         *proxy;  /* an HTTP proxy (an enclave's egress) */
    uint64_t            chain_id;    /* the chain's id; 0: not configured
                                        (NFT scopes need it) */
    /* events (follow.c): with apps, their runOnEthereumEvent handlers */
    provend_apps_t     *apps;
    provend_storage_t  *storage;     /* the cursors */
    int                 clustered;   /* storage is the cluster's: one
                                        node at a time delivers */
    unsigned            poll_ms;     /* new blocks asked for; 0: 2000 */
    provend_sessions_t *sessions;    /* NFT scopes: the calls' links */
    /* governance.c: the contract whose allowed measurements peers need */
    const char         *governance;  /* 0x address, or NULL */
    unsigned            governance_confirmations;
    unsigned            governance_every_s;   /* 0: 60 */
} provend_chains_config_t;

typedef struct provend_chains_s  provend_chains_t;

provend_chains_t *provend_chains_open(const provend_chains_config_t *cfg,
    char *err, size_t errlen);
/* Stopping: a read under way ends at once (its caller told so). */
void provend_chains_stop(provend_chains_t *c);
void provend_chains_free(provend_chains_t *c);

/*
 * Governance (governance.c): whether a measurement, keccak256(PCR0 ||
 * PCR1 || PCR2), is one the contract allowed at the last read: 1, or 0
 * with why (none read yet, or not in the set).  Any thread.
 */
#define PROVEND_GOV_MAX  64

int provend_governance_allows(provend_chains_t *c, const uint8_t hash[32],
    char *why, size_t whylen);
int provend_governance_on(provend_chains_t *c);
/* changed(data) on the loop after a read that changed the set. */
void provend_governance_watch(provend_chains_t *c,
    void (*changed)(void *data), void *data);

extern const provend_op_t  provend_chains_ops[];

#endif /* PROVEND_CHAINS_H */
