/*
 * Ethereum's encodings, for reads a node checks itself rather than trust
 * the RPC endpoint the host may answer for: Keccak-256 (the original
 * padding, not SHA3's), RLP, and Merkle-Patricia proofs (eth_getProof,
 * EIP-1186) against a state root.
 *
 * What a proof shows: that the account (or storage slot) has this value,
 * or none, in the trie whose root is the given hash.  Not that the root
 * is the chain's: the caller links it to a block header it trusts.
 */

#ifndef PROVEND_ETH_H
#define PROVEND_ETH_H

#include <stddef.h>
#include <stdint.h>

#include <cbor.h>
#include <jansson.h>

#define PROVEND_ETH_NODE_MAX     1024   /* an RLP node of a proof, bytes */
#define PROVEND_ETH_PROOF_MAX    64     /* nodes on a path */
#define PROVEND_ETH_ABSENT       1      /* proven not there */

/* Keccak-256 as Ethereum uses it (pad 0x01). */
void provend_keccak256(const void *in, size_t len, uint8_t out[32]);

/* An RLP item: its payload, and whether it is a list. */
typedef struct {
    const uint8_t  *data;
    size_t          len;
    int             list;
} provend_rlp_t;

/*
 * The item at the start of in: PROVEN_OK, *item and *used (its whole
 * encoding); PROVEN_ERR when it runs past len or is not canonical (a
 * length with leading zeros, a long form for a short length, a single
 * byte under 0x80 in a string of one).
 */
int provend_rlp_item(const uint8_t *in, size_t len, provend_rlp_t *item,
    size_t *used);

/* The items of a list, max at most: PROVEN_ERR beyond, or when one is
 * malformed or they do not fill it exactly. */
int provend_rlp_list(const provend_rlp_t *list, provend_rlp_t *items,
    size_t max, size_t *n);

/* A proof's node: its RLP encoding. */
typedef struct {
    const uint8_t  *data;
    size_t          len;
} provend_eth_node_t;

/*
 * Follows nodes (root first) from root along the path keccak(key): the
 * value stored at key (a span of one of the nodes), PROVEN_OK;
 * PROVEND_ETH_ABSENT when the proof shows there is none (an empty trie's
 * root with no nodes, or with the one empty node, included); PROVEN_ERR
 * and err when the proof does not hold (a node not the hash its parent
 * names, a node missing or left over, a malformed node).
 *
 * key is the caller's own: the 20-byte address asked for, or the storage
 * slot as 32 bytes (left-padded with zeros), never what the endpoint
 * echoes.  A storage value is itself RLP: a number of 32 bytes at most.
 */
int provend_mpt_get(const uint8_t root[32], const provend_eth_node_t *nodes,
    size_t n, const uint8_t *key, size_t key_len, provend_rlp_t *value,
    char *err, size_t errlen);

/* An account's fields, from its RLP: [nonce, balance, storageRoot,
 * codeHash]; quantities big-endian without leading zeros (up to 32). */
typedef struct {
    uint8_t  nonce[32], balance[32];
    size_t   nonce_len, balance_len;
    uint8_t  storage_root[32], code_hash[32];
} provend_eth_account_t;

int provend_eth_account(const provend_rlp_t *value,
    provend_eth_account_t *account);

/*
 * A block header as eth_getBlockByNumber gives it (JSON), hashed by this
 * node: keccak of the RLP of its fields, London's and those of later
 * forks that are present (baseFeePerGas, withdrawalsRoot, blobGasUsed,
 * excessBlobGas, parentBeaconBlockRoot, requestsHash; none after one
 * missing).  The endpoint's own "hash" is never taken.
 */
typedef struct {
    uint64_t  number, timestamp;
    uint8_t   hash[32], parent[32], state_root[32], receipts_root[32];
    uint8_t   bloom[256];           /* logsBloom */
} provend_eth_header_t;

int provend_eth_header(const json_t *block, provend_eth_header_t *header,
    char *err, size_t errlen);

/*
 * headers oldest first, the last one the checkpoint (its hash the one
 * configured, trusted), each one the parent of the next (number - 1, its
 * hash the next one's parent hash): PROVEN_OK, and every one of them, its
 * state root included, is bound by hashes to the checkpoint.  Only
 * ancestors can be bound so: a header newer than the checkpoint is
 * anyone's to make (no consensus is checked here), so none is taken.
 */
int provend_eth_chain(const provend_eth_header_t *headers, size_t n,
    const uint8_t checkpoint[32], char *err, size_t errlen);

/*
 * Whether a logs bloom (a header's, 2048 bits) may hold data (a log's
 * address or one of its topics): 0 means certainly not, so a block whose
 * proved header says 0 has no such log.
 */
int provend_eth_bloom_has(const uint8_t bloom[256], const uint8_t *data,
    size_t len);

/*
 * The root of the trie holding values[i] at key rlp(i), as a block's
 * transactions and receipts tries are made (n at most 65535).
 */
int provend_mpt_ordered_root(const provend_eth_node_t *values, size_t n,
    uint8_t root[32]);

/* A log of a block whose receipts were proved. */
typedef struct {
    uint8_t    address[20];
    uint8_t    topics[4][32];
    size_t     ntopics;
    uint8_t   *data;
    size_t     data_len;
    uint32_t   log_index;           /* in the block: its place, counted */
    uint32_t   tx_index;            /* its receipt's place */
    uint8_t    tx_hash[32];         /* the endpoint's word: not proved */
} provend_eth_log_t;

/*
 * receipts: a block's, in order, as eth_getTransactionReceipt gives each
 * (JSON: type, status or root, cumulativeGasUsed, logsBloom, logs of
 * {address, topics, data}).  Encoded as consensus does (EIP-2718: the
 * type byte, then the RLP list) into the receipts trie: PROVEN_OK when
 * its root is receipts_root, with every log of the block in order
 * (*logs, free with provend_eth_logs_free); else PROVEN_ERR and err.  A
 * receipt missing, added, reordered or altered changes the root.
 */
int provend_eth_receipts(const json_t *receipts,
    const uint8_t receipts_root[32], provend_eth_log_t **logs, size_t *nlogs,
    char *err, size_t errlen);
void provend_eth_logs_free(provend_eth_log_t *logs, size_t n);

/*
 * EIP-191 version 0x45 ("personal_sign"): keccak("\x19Ethereum Signed
 * Message:\n" || decimal length || message), the hash wallets sign.
 * PROVEN_ERR for a message over PROVEND_ETH_MESSAGE_MAX bytes (or out of
 * memory): no hash.
 */
#define PROVEND_ETH_MESSAGE_MAX  4096

int provend_eth_personal_hash(const uint8_t *message, size_t len,
    uint8_t hash[32]);

/*
 * The address whose secp256k1 key signed hash: signature is r || s || v
 * (65 bytes, v 27 or 28, or 0 or 1).  PROVEN_ERR with err for a
 * signature that recovers no key (r or s out of range, r no point's x)
 * or a hash of zero (mod n: anyone's to aim a key at).  Each signature
 * has a twin, (r, n - s) with v flipped, recovering the same address (no
 * low-s rule here): never key anything by a signature's bytes.
 */
int provend_eth_recover(const uint8_t hash[32], const uint8_t signature[65],
    uint8_t address[20], char *err, size_t errlen);

/* "0x" and exactly len (32 at most) bytes of hex from a CBOR text (a
 * request's or a manifest's): PROVEN_OK and out, else PROVEN_ERR. */
int provend_eth_cbor_hex(const cbor_item_t *item, uint8_t *out, size_t len);

#endif /* PROVEND_ETH_H */
