/*
 * bench/chains: what provend checks of a chain, timed (the peer is
 * peer.mjs, the same work with EthereumJS's trie): on the ganache fixtures
 * of tests/fixtures/eth,
 *   proofs:   an account and its storage slots read from eth_getProof
 *             answers (hex JSON in, values out), as eth.account and
 *             nft.open do: proofs checked a second;
 *   receipts: a block of 130 receipts encoded as consensus does into its
 *             trie, the root compared with its header's, as the follower
 *             does for events: blocks a second.
 * Prints one JSON line.
 *   proofs FIXTURES_DIR SECONDS
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "proven.h"
#include "chains/eth.h"


static double
now_s(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}


/* "0x..." into out (size bytes): its length, or -1 */
static long
unhex(const char *text, uint8_t *out, size_t size)
{
    size_t  n;

    if (text == NULL || strncmp(text, "0x", 2) != 0
        || proven_hex_decode(text + 2, strlen(text + 2), out, size, &n)
           != PROVEN_OK)
    {
        return -1;
    }
    return (long) n;
}


/* A proof from its JSON hex nodes, each decoded (as chains.c does on every
 * read): 0 when it holds the value at key under root. */
static int
prove(const uint8_t root[32], json_t *array, const uint8_t *key,
    size_t key_len, provend_rlp_t *value)
{
    int                 rc;
    char                err[PROVEN_ERR_LEN];
    long                len;
    size_t              i, n;
    uint8_t            *bytes[PROVEND_ETH_PROOF_MAX];
    provend_eth_node_t  nodes[PROVEND_ETH_PROOF_MAX];

    n = json_array_size(array);
    if (n > PROVEND_ETH_PROOF_MAX) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        bytes[i] = malloc(PROVEND_ETH_NODE_MAX);
        len = bytes[i] != NULL
              ? unhex(json_string_value(json_array_get(array, i)), bytes[i],
                      PROVEND_ETH_NODE_MAX) : -1;
        if (len < 0) {
            for (n = i + 1; n > 0; n--) {
                free(bytes[n - 1]);
            }
            return -1;
        }
        nodes[i].data = bytes[i];
        nodes[i].len = (size_t) len;
    }
    rc = provend_mpt_get(root, nodes, n, key, key_len, value, err,
                         sizeof(err));
    for (i = 0; i < n; i++) {
        free(bytes[i]);
    }
    return rc == PROVEN_ERR ? -1 : 0;
}


int
main(int argc, char **argv)
{
    char                   path[1024], err[PROVEN_ERR_LEN];
    double                 seconds, start, proofs_s, blocks_s;
    size_t                 i, s, nlogs;
    uint8_t                root[32], addr[20], slot[32];
    json_t                *pf, *rf, *p, *sp, *block;
    uint64_t               proofs, blocks;
    json_error_t           jerr;
    provend_rlp_t          value;
    provend_eth_log_t     *logs;
    provend_eth_header_t   header;
    provend_eth_account_t  acct;

    if (argc != 3) {
        fprintf(stderr, "usage: proofs FIXTURES_DIR SECONDS\n");
        return 2;
    }
    seconds = atof(argv[2]);
    snprintf(path, sizeof(path), "%s/eth/ganache-proofs.json", argv[1]);
    pf = json_load_file(path, 0, &jerr);
    snprintf(path, sizeof(path), "%s/eth/ganache-receipts.json", argv[1]);
    rf = json_load_file(path, 0, &jerr);
    if (pf == NULL || rf == NULL
        || unhex(json_string_value(json_object_get(pf, "stateRoot")), root,
                 32) != 32)
    {
        fprintf(stderr, "proofs: cannot read the fixtures in %s\n", argv[1]);
        return 1;
    }

    /* the contract and the sender: each account, then each slot of it */
    proofs = 0;
    start = now_s();
    do {
        for (i = 0; i < 2; i++) {
            p = json_array_get(json_object_get(pf, "proofs"), i);
            if (unhex(json_string_value(json_object_get(p, "address")), addr,
                      20) != 20
                || prove(root, json_object_get(p, "accountProof"), addr, 20,
                         &value) != 0
                || provend_eth_account(&value, &acct) != PROVEN_OK)
            {
                fprintf(stderr, "proofs: an account proof does not hold\n");
                return 1;
            }
            proofs++;
            json_array_foreach(json_object_get(p, "storageProof"), s, sp) {
                if (unhex(json_string_value(json_object_get(sp, "key")), slot,
                          32) != 32
                    || prove(acct.storage_root, json_object_get(sp, "proof"),
                             slot, 32, &value) != 0)
                {
                    fprintf(stderr, "proofs: a storage proof does not "
                            "hold\n");
                    return 1;
                }
                proofs++;
            }
        }
    } while (now_s() - start < seconds);
    proofs_s = proofs / (now_s() - start);

    block = json_array_get(json_object_get(rf, "blocks"), 1);
    if (provend_eth_header(json_object_get(block, "header"), &header, err,
                           sizeof(err)) != PROVEN_OK)
    {
        fprintf(stderr, "proofs: %s\n", err);
        return 1;
    }
    blocks = 0;
    start = now_s();
    do {
        if (provend_eth_receipts(json_object_get(block, "receipts"),
                                 header.receipts_root, &logs, &nlogs, err,
                                 sizeof(err)) != PROVEN_OK)
        {
            fprintf(stderr, "proofs: %s\n", err);
            return 1;
        }
        provend_eth_logs_free(logs, nlogs);
        blocks++;
    } while (now_s() - start < seconds);
    blocks_s = blocks / (now_s() - start);

    printf("{\"proofs_per_s\": %.0f, \"blocks_per_s\": %.1f, "
           "\"receipts\": %zu}\n", proofs_s, blocks_s,
           json_array_size(json_object_get(block, "receipts")));
    json_decref(pf);
    json_decref(rf);
    return 0;
}
