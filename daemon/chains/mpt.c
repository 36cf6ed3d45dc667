/*
 * RLP (the Yellow Paper's appendix B) and Merkle-Patricia proofs
 * (appendix D; eth_getProof, EIP-1186): see eth.h.  Everything read here
 * comes from an RPC endpoint the host may answer for, so every length is
 * checked against what is there before it is used.
 */

#include <stdio.h>
#include <string.h>

#include "proven.h"
#include "eth.h"


/* ---- RLP ---------------------------------------------------------------- */

/* A big-endian length of n bytes, canonical (no leading zero). */
static int
rlp_length(const uint8_t *p, size_t n, size_t *len)
{
    size_t  i;

    if (n == 0 || n > sizeof(size_t) || p[0] == 0) {
        return PROVEN_ERR;
    }
    *len = 0;
    for (i = 0; i < n; i++) {
        *len = *len << 8 | p[i];
    }
    return PROVEN_OK;
}


int
provend_rlp_item(const uint8_t *in, size_t len, provend_rlp_t *item,
    size_t *used)
{
    size_t  head, body, n;

    if (len == 0) {
        return PROVEN_ERR;
    }
    item->list = in[0] >= 0xc0;
    if (in[0] < 0x80) {                     /* a byte, itself */
        head = 0;
        body = 1;
    } else if (in[0] <= 0xb7 || (in[0] >= 0xc0 && in[0] <= 0xf7)) {
        head = 1;
        body = in[0] - (item->list ? 0xc0 : 0x80);
    } else {
        n = in[0] - (item->list ? 0xf7 : 0xb7);
        head = 1 + n;
        if (len < head || rlp_length(in + 1, n, &body) != PROVEN_OK
            || body < 56)                   /* the short form's */
        {
            return PROVEN_ERR;
        }
    }
    if (body > len - head) {
        return PROVEN_ERR;
    }
    /* one byte under 0x80 is itself, never a string of one */
    if (!item->list && head == 1 && body == 1 && in[1] < 0x80) {
        return PROVEN_ERR;
    }
    item->data = in + head;
    item->len = body;
    *used = head + body;
    return PROVEN_OK;
}


int
provend_rlp_list(const provend_rlp_t *list, provend_rlp_t *items, size_t max,
    size_t *n)
{
    size_t  off, used;

    if (!list->list) {
        return PROVEN_ERR;
    }
    *n = 0;
    for (off = 0; off < list->len; off += used) {
        if (*n == max
            || provend_rlp_item(list->data + off, list->len - off,
                                &items[*n], &used) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        (*n)++;
    }
    return PROVEN_OK;
}


/* ---- Merkle-Patricia proofs --------------------------------------------- */

/* Nibble i of a path of bytes (high first). */
static unsigned
mpt_nibble(const uint8_t *path, size_t i)
{
    return i % 2 == 0 ? path[i / 2] >> 4 : path[i / 2] & 0x0f;
}


/*
 * A leaf's or extension's hex-prefix path against the key's nibbles from
 * at: 1 and *taken when it is a prefix of them, 0 when not; *leaf set.
 * PROVEN_ERR when the encoding is not one.
 */
static int
mpt_partial(const provend_rlp_t *hp, const uint8_t *key, size_t at,
    size_t *taken, int *leaf, int *match)
{
    size_t    i, n, first;
    unsigned  flag;

    if (hp->list || hp->len == 0) {
        return PROVEN_ERR;
    }
    flag = hp->data[0] >> 4;
    if (flag > 3 || (flag % 2 == 0 && (hp->data[0] & 0x0f) != 0)) {
        return PROVEN_ERR;
    }
    *leaf = flag >= 2;
    first = flag % 2 == 1 ? 1 : 2;          /* odd: a nibble in byte 0 */
    n = hp->len * 2 - first;
    *match = n <= 64 - at;
    for (i = 0; *match && i < n; i++) {
        *match = mpt_nibble(hp->data, first + i) == mpt_nibble(key, at + i);
    }
    *taken = n;
    return PROVEN_OK;
}


int
provend_mpt_get(const uint8_t root[32], const provend_eth_node_t *nodes,
    size_t n, const uint8_t *key, size_t key_len, provend_rlp_t *value,
    char *err, size_t errlen)
{
    int            leaf, match;
    size_t         at, step, used, count, taken;
    uint8_t        path[32], hash[32], want[32];
    provend_rlp_t  node, items[17], next;

    /* keccak(0x80): the root of a trie with nothing in it (an account
     * without storage), which a proof may show with no node, or the one */
    static const uint8_t  empty_root[32] = {
        0x56, 0xe8, 0x1f, 0x17, 0x1b, 0xcc, 0x55, 0xa6,
        0xff, 0x83, 0x45, 0xe6, 0x92, 0xc0, 0xf8, 0x6e,
        0x5b, 0x48, 0xe0, 0x1b, 0x99, 0x6c, 0xad, 0xc0,
        0x01, 0x62, 0x2f, 0xb5, 0xe3, 0x63, 0xb4, 0x21
    };

    if (memcmp(root, empty_root, 32) == 0
        && (n == 0
            || (n == 1 && nodes[0].len == 1 && nodes[0].data[0] == 0x80)))
    {
        return PROVEND_ETH_ABSENT;
    }
    if (n == 0 || n > PROVEND_ETH_PROOF_MAX) {
        proven_errf(err, errlen, "a proof of %zu nodes (1 to %d)", n,
                    PROVEND_ETH_PROOF_MAX);
        return PROVEN_ERR;
    }
    provend_keccak256(key, key_len, path);
    memcpy(want, root, 32);
    at = 0;
    step = 0;

    /* each node the hash its parent names, or one embedded in it */
    if (nodes[0].len > PROVEND_ETH_NODE_MAX) {
        goto too_long;
    }
    provend_keccak256(nodes[0].data, nodes[0].len, hash);
    if (memcmp(hash, want, 32) != 0) {
        proven_errf(err, errlen, "node 0 is not the root's");
        return PROVEN_ERR;
    }
    if (provend_rlp_item(nodes[0].data, nodes[0].len, &node, &used)
        != PROVEN_OK || used != nodes[0].len)
    {
        goto malformed;
    }

    for ( ;; ) {
        if (provend_rlp_list(&node, items, 17, &count) != PROVEN_OK
            || (count != 17 && count != 2))
        {
            goto malformed;
        }

        if (count == 17) {                  /* a branch */
            if (at == 64) {
                *value = items[16];
                goto found;
            }
            next = items[mpt_nibble(path, at)];
            at++;
        } else {                            /* a leaf or an extension */
            if (mpt_partial(&items[0], path, at, &taken, &leaf, &match)
                != PROVEN_OK)
            {
                goto malformed;
            }
            if (!match || (leaf && at + taken != 64)) {
                goto absent;                /* another key's */
            }
            at += taken;
            if (leaf) {
                *value = items[1];
                goto found;
            }
            next = items[1];
        }

        if (next.list) {
            /* embedded: under 32 bytes encoded, it is not hashed */
            node = next;
            continue;
        }
        if (next.len == 0) {
            goto absent;                    /* no child there */
        }
        if (next.len != 32) {
            goto malformed;
        }
        memcpy(want, next.data, 32);
        if (++step == n) {
            proven_errf(err, errlen, "the proof ends before the path does");
            return PROVEN_ERR;
        }
        if (nodes[step].len > PROVEND_ETH_NODE_MAX) {
            goto too_long;
        }
        provend_keccak256(nodes[step].data, nodes[step].len, hash);
        if (memcmp(hash, want, 32) != 0) {
            proven_errf(err, errlen, "node %zu is not the one its parent "
                        "names", step);
            return PROVEN_ERR;
        }
        if (provend_rlp_item(nodes[step].data, nodes[step].len, &node, &used)
            != PROVEN_OK || used != nodes[step].len)
        {
            goto malformed;
        }
    }

found:

    if (value->list || value->len == 0) {
        goto absent;                        /* an empty value: none */
    }
    if (step + 1 != n) {
        proven_errf(err, errlen, "%zu nodes past the value", n - step - 1);
        return PROVEN_ERR;
    }
    return PROVEN_OK;

absent:

    if (step + 1 != n) {
        proven_errf(err, errlen, "%zu nodes past the end of the path",
                    n - step - 1);
        return PROVEN_ERR;
    }
    return PROVEND_ETH_ABSENT;

too_long:

    proven_errf(err, errlen, "a node over %d bytes", PROVEND_ETH_NODE_MAX);
    return PROVEN_ERR;

malformed:

    proven_errf(err, errlen, "node %zu is not a trie node", step);
    return PROVEN_ERR;
}


/* A quantity: big-endian, no leading zero, 32 bytes at most. */
static int
eth_quantity(const provend_rlp_t *item, uint8_t out[32], size_t *len)
{
    if (item->list || item->len > 32
        || (item->len > 0 && item->data[0] == 0))
    {
        return PROVEN_ERR;
    }
    memcpy(out, item->data, item->len);
    *len = item->len;
    return PROVEN_OK;
}


int
provend_eth_account(const provend_rlp_t *value,
    provend_eth_account_t *account)
{
    size_t         used, n;
    provend_rlp_t  list, items[4];

    /* the value is a string holding the account's own RLP */
    if (value->list
        || provend_rlp_item(value->data, value->len, &list, &used)
           != PROVEN_OK
        || used != value->len
        || provend_rlp_list(&list, items, 4, &n) != PROVEN_OK || n != 4
        || eth_quantity(&items[0], account->nonce, &account->nonce_len)
           != PROVEN_OK
        || eth_quantity(&items[1], account->balance, &account->balance_len)
           != PROVEN_OK
        || items[2].list || items[2].len != 32
        || items[3].list || items[3].len != 32)
    {
        return PROVEN_ERR;
    }
    memcpy(account->storage_root, items[2].data, 32);
    memcpy(account->code_hash, items[3].data, 32);
    return PROVEN_OK;
}
