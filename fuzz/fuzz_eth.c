/*
 * libFuzzer target: what an Ethereum endpoint the host answers for sends
 * (daemon/chains).  The first byte picks:
 *   0  RLP: an item, and its items when a list;
 *   1  a proof: nodes, each a 2-byte big-endian length then its bytes,
 *      after a 32-byte key; the root is node 0's own hash, so that the
 *      walk goes past it;
 *   2  a block header as JSON;
 *   3  a block's receipts as JSON, after the 32-byte receipts root;
 *   4  values of an ordered trie, each a 2-byte length then its bytes;
 *   5  a 32-byte hash and a 65-byte signature to recover.
 * None may crash, read past its input or loop; a found value must lie
 * inside the input.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proven.h"
#include "chains/eth.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static void
fuzz_rlp(const uint8_t *data, size_t size)
{
    size_t         used, n;
    provend_rlp_t  item, items[17];

    if (provend_rlp_item(data, size, &item, &used) != PROVEN_OK) {
        return;
    }
    if (used > size || item.data < data || item.data + item.len > data + size)
    {
        abort();
    }
    if (item.list) {
        (void) provend_rlp_list(&item, items, 17, &n);
    }
}


static void
fuzz_proof(const uint8_t *data, size_t size)
{
    int                  rc;
    char                 err[PROVEN_ERR_LEN];
    size_t               n, len;
    uint8_t              root[32];
    provend_rlp_t        value;
    provend_eth_node_t   nodes[PROVEND_ETH_PROOF_MAX];
    const uint8_t       *key, *end;

    if (size < 32) {
        return;
    }
    key = data;
    data += 32;
    end = data + size - 32;
    for (n = 0; n < PROVEND_ETH_PROOF_MAX && end - data >= 2; n++) {
        len = (size_t) data[0] << 8 | data[1];
        data += 2;
        if (len > (size_t) (end - data)) {
            break;
        }
        nodes[n].data = data;
        nodes[n].len = len;
        data += len;
    }
    if (n == 0) {
        return;
    }
    provend_keccak256(nodes[0].data, nodes[0].len, root);
    rc = provend_mpt_get(root, nodes, n, key, 32, &value, err, sizeof(err));
    if (rc == PROVEN_OK
        && (value.data < key || value.data + value.len > end))
    {
        abort();
    }
}


static void
fuzz_header(const uint8_t *data, size_t size)
{
    char                  err[PROVEN_ERR_LEN];
    json_t               *j;
    json_error_t          jerr;
    provend_eth_header_t  h;

    j = json_loadb((const char *) data, size, 0, &jerr);
    if (j != NULL) {
        (void) provend_eth_header(j, &h, err, sizeof(err));
        (void) provend_eth_chain(&h, 1, h.hash, err, sizeof(err));
        json_decref(j);
    }
}


static void
fuzz_receipts(const uint8_t *data, size_t size)
{
    char                err[PROVEN_ERR_LEN];
    size_t              n, i;
    json_t             *j;
    json_error_t        jerr;
    provend_eth_log_t  *logs;

    if (size < 32) {
        return;
    }
    j = json_loadb((const char *) data + 32, size - 32, 0, &jerr);
    if (j == NULL) {
        return;
    }
    if (provend_eth_receipts(j, data, &logs, &n, err, sizeof(err))
        == PROVEN_OK)
    {
        for (i = 0; i < n; i++) {
            if (logs[i].ntopics > 4 || logs[i].log_index != i) {
                abort();
            }
        }
        provend_eth_logs_free(logs, n);
    }
    json_decref(j);
}


static void
fuzz_trie(const uint8_t *data, size_t size)
{
    size_t               n, len;
    uint8_t              root[32];
    provend_eth_node_t   values[512];

    for (n = 0; n < 512 && size >= 2; n++) {
        len = (size_t) data[0] << 8 | data[1];
        data += 2;
        size -= 2;
        if (len > size) {
            break;
        }
        values[n].data = data;
        values[n].len = len;
        data += len;
        size -= len;
    }
    (void) provend_mpt_ordered_root(values, n, root);
}


static void
fuzz_signature(const uint8_t *data, size_t size)
{
    char     err[PROVEN_ERR_LEN];
    uint8_t  address[20];

    if (size >= 32 + 65) {
        (void) provend_eth_recover(data, data + 32, address, err,
                                   sizeof(err));
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    switch (data[0] % 6) {
    case 0:
        fuzz_rlp(data + 1, size - 1);
        break;
    case 1:
        fuzz_proof(data + 1, size - 1);
        break;
    case 2:
        fuzz_header(data + 1, size - 1);
        break;
    case 3:
        fuzz_receipts(data + 1, size - 1);
        break;
    case 4:
        fuzz_trie(data + 1, size - 1);
        break;
    default:
        fuzz_signature(data + 1, size - 1);
    }
    return 0;
}
