/*
 * Ethereum's encodings (daemon/chains): Keccak-256 against known answers
 * (@noble/hashes gave the longer ones), RLP's canonical forms,
 * Merkle-Patricia proofs as ganache 7.9.2 answers eth_getProof, and block
 * headers hashed here, linked to a checkpoint
 * (tests/fixtures/eth/ganache-proofs.json, made by the .gen.js beside
 * it): accounts and storage slots found, absent ones shown absent, and
 * what an endpoint the host answers for could change refused.  Run from
 * the repository root (or with $PROVEN_FIXTURES).
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "proven.h"
#include "chains/eth.h"


#define NODES_MAX  16

typedef struct {
    uint8_t             bytes[NODES_MAX][2048];
    provend_eth_node_t  nodes[NODES_MAX];
    size_t              n;
} proof_t;


static json_t  *fixture;


/* "0x..." into out: its length, or -1. */
static long
unhex(const char *text, uint8_t *out, size_t size)
{
    size_t  n;

    if (strncmp(text, "0x", 2) != 0
        || proven_hex_decode(text + 2, strlen(text + 2), out, size, &n)
           != PROVEN_OK)
    {
        return -1;
    }
    return (long) n;
}


static void
load_proof(json_t *array, proof_t *p)
{
    size_t  i;
    long    len;

    p->n = json_array_size(array);
    assert_true(p->n > 0 && p->n <= NODES_MAX);
    for (i = 0; i < p->n; i++) {
        len = unhex(json_string_value(json_array_get(array, i)),
                    p->bytes[i], sizeof(p->bytes[i]));
        assert_true(len > 0);
        p->nodes[i].data = p->bytes[i];
        p->nodes[i].len = (size_t) len;
    }
}


static json_t *
proof_of(size_t i)
{
    return json_array_get(json_object_get(fixture, "proofs"), i);
}


/* a "0x..." quantity (odd digits allowed) as big-endian bytes without
 * leading zeros: its length */
static size_t
quantity(const char *text, uint8_t out[32])
{
    char    even[70];
    size_t  n, lead, digits;

    digits = strlen(text + 2);
    assert_true(strncmp(text, "0x", 2) == 0 && digits < 65);
    snprintf(even, sizeof(even), "%s%s", digits % 2 ? "0" : "", text + 2);
    assert_int_equal(proven_hex_decode(even, strlen(even), out, 32, &n),
                     PROVEN_OK);
    for (lead = 0; lead < n && out[lead] == 0; lead++) {
        /* skipped */
    }
    memmove(out, out + lead, n - lead);
    return n - lead;
}


/* the 32 bytes of a "0x..." hash */
static void
hash32(const char *text, uint8_t out[32])
{
    assert_int_equal(unhex(text, out, 32), 32);
}


static int
setup(void **state)
{
    char          path[1024];
    const char   *dir;
    json_error_t  jerr;

    (void) state;
    dir = getenv("PROVEN_FIXTURES");
    snprintf(path, sizeof(path), "%s/eth/ganache-proofs.json",
             dir != NULL ? dir : "tests/fixtures");
    fixture = json_load_file(path, 0, &jerr);
    if (fixture == NULL) {
        fprintf(stderr, "%s: %s (run from the repository root)\n", path,
                jerr.text);
        return -1;
    }
    return 0;
}


static int
teardown(void **state)
{
    (void) state;
    json_decref(fixture);
    return 0;
}


/* ---- Keccak-256 --------------------------------------------------------- */

static void
check_keccak(const void *in, size_t len, const char *want)
{
    char     hex[65];
    uint8_t  out[32];

    provend_keccak256(in, len, out);
    proven_hex_encode(out, 32, hex);
    assert_string_equal(hex, want);
}


static void
test_keccak(void **state)
{
    size_t   i;
    uint8_t  a[137], seq[1000];

    (void) state;
    check_keccak("", 0, "c5d2460186f7233c927e7db2dcc703c0"
                        "e500b653ca82273b7bfad8045d85a470");
    check_keccak("abc", 3, "4e03657aea45a94fc7d47ba826c8d667"
                           "c0d1e6e33a64a036ec44f58fa12d6c45");
    /* around the rate (136 bytes): padding in the block, or a block more */
    memset(a, 'a', sizeof(a));
    check_keccak(a, 135, "34367dc248bbd832f4e3e69dfaac2f92"
                         "638bd0bbd18f2912ba4ef454919cf446");
    check_keccak(a, 136, "a6c4d403279fe3e0af03729caada8374"
                         "b5ca54d8065329a3ebcaeb4b60aa386e");
    check_keccak(a, 137, "d869f639c7046b4929fc92a4d988a8b2"
                         "2c55fbadb802c0c66ebcd484f1915f39");
    for (i = 0; i < sizeof(seq); i++) {
        seq[i] = (uint8_t) (i % 251);
    }
    check_keccak(seq, sizeof(seq), "af692982e84a5a9688359025660a7857"
                                   "cd28ee7c8d867cfa1677baf2e6d1f63b");
}


/* ---- RLP ---------------------------------------------------------------- */

static int
rlp(const uint8_t *in, size_t len, provend_rlp_t *item)
{
    size_t  used;

    if (provend_rlp_item(in, len, item, &used) != PROVEN_OK) {
        return -1;
    }
    return (int) used;
}


static void
test_rlp(void **state)
{
    size_t         n;
    uint8_t        buf[80];
    provend_rlp_t  item, items[4];

    (void) state;

    /* a byte under 0x80 is itself; 0x80 the empty string */
    assert_int_equal(rlp((const uint8_t *) "\x2a", 1, &item), 1);
    assert_true(!item.list && item.len == 1 && item.data[0] == 0x2a);
    assert_int_equal(rlp((const uint8_t *) "\x80", 1, &item), 1);
    assert_true(!item.list && item.len == 0);
    assert_int_equal(rlp((const uint8_t *) "\x81\xff", 2, &item), 2);

    /* not canonical: a byte under 0x80 as a string of one */
    assert_int_equal(rlp((const uint8_t *) "\x81\x2a", 2, &item), -1);

    /* 56 bytes: the long form; 55 in the long form is refused */
    buf[0] = 0xb8;
    buf[1] = 56;
    memset(buf + 2, 'x', 56);
    assert_int_equal(rlp(buf, 58, &item), 58);
    assert_int_equal(item.len, 56);
    buf[1] = 55;
    assert_int_equal(rlp(buf, 57, &item), -1);
    /* a length with a leading zero */
    buf[0] = 0xb9;
    buf[1] = 0;
    buf[2] = 56;
    assert_int_equal(rlp(buf, 59, &item), -1);

    /* past the end: a string, a list, a length's own bytes */
    assert_int_equal(rlp((const uint8_t *) "\x83" "ab", 3, &item), -1);
    assert_int_equal(rlp((const uint8_t *) "\xc3\x01\x02", 3, &item), -1);
    assert_int_equal(rlp((const uint8_t *) "\xbb\x01", 2, &item), -1);
    /* a length beyond any buffer */
    memcpy(buf, "\xbf\x7f\xff\xff\xff\xff\xff\xff\xff", 9);
    assert_int_equal(rlp(buf, 9, &item), -1);

    /* a list: its items; one that overruns the list is refused */
    assert_int_equal(rlp((const uint8_t *) "\xc4\x01\x82\xaa\xbb", 5, &item),
                     5);
    assert_true(item.list);
    assert_int_equal(provend_rlp_list(&item, items, 4, &n), PROVEN_OK);
    assert_int_equal(n, 2);
    assert_int_equal(items[1].len, 2);
    assert_int_equal(rlp((const uint8_t *) "\xc3\x01\x82\xaa\xbb", 5, &item),
                     4);
    assert_int_equal(provend_rlp_list(&item, items, 4, &n), PROVEN_ERR);
    /* more items than the caller takes */
    assert_int_equal(rlp((const uint8_t *) "\xc3\x01\x02\x03", 4, &item), 4);
    assert_int_equal(provend_rlp_list(&item, items, 2, &n), PROVEN_ERR);
}


/* ---- proofs ------------------------------------------------------------- */

static void
test_accounts(void **state)
{
    int                     rc;
    char                    err[PROVEN_ERR_LEN];
    size_t                  i, len;
    uint8_t                 root[32], addr[20], want[32];
    proof_t                *p;
    json_t                 *j;
    provend_rlp_t           value;
    provend_eth_account_t   acct;

    (void) state;
    p = malloc(sizeof(*p));
    assert_non_null(p);
    hash32(json_string_value(json_object_get(fixture, "stateRoot")), root);

    for (i = 0; i < 2; i++) {
        j = proof_of(i);
        load_proof(json_object_get(j, "accountProof"), p);
        assert_int_equal(unhex(json_string_value(json_object_get(j,
                                                                 "address")),
                               addr, sizeof(addr)), 20);
        rc = provend_mpt_get(root, p->nodes, p->n, addr, 20, &value, err,
                             sizeof(err));
        assert_int_equal(rc, PROVEN_OK);
        assert_int_equal(provend_eth_account(&value, &acct), PROVEN_OK);

        hash32(json_string_value(json_object_get(j, "storageHash")), want);
        assert_memory_equal(acct.storage_root, want, 32);
        hash32(json_string_value(json_object_get(j, "codeHash")), want);
        assert_memory_equal(acct.code_hash, want, 32);
        /* balance and nonce as ganache gave them ("0x0": no bytes) */
        len = quantity(json_string_value(json_object_get(j, "balance")),
                       want);
        assert_int_equal(acct.balance_len, len);
        assert_memory_equal(acct.balance, want, len);
        len = quantity(json_string_value(json_object_get(j, "nonce")), want);
        assert_int_equal(acct.nonce_len, len);
        assert_memory_equal(acct.nonce, want, len);
        /* the contract's nonce 1, the sender's 2 */
        assert_int_equal(len, 1);
        assert_int_equal(want[0], i + 1);
    }

    /* an address with no account: the proof shows it absent */
    j = proof_of(2);
    load_proof(json_object_get(j, "accountProof"), p);
    assert_int_equal(unhex(json_string_value(json_object_get(j, "address")),
                           addr, sizeof(addr)), 20);
    assert_int_equal(provend_mpt_get(root, p->nodes, p->n, addr, 20, &value,
                                     err, sizeof(err)), PROVEND_ETH_ABSENT);
    free(p);
}


static void
test_storage(void **state)
{
    char           err[PROVEN_ERR_LEN];
    size_t         i, used;
    uint8_t        root[32], slot[32];
    proof_t       *p;
    json_t        *j, *s;
    provend_rlp_t  value, number;

    /* storage[0] = 1, storage[1] = 42, slot 2 never written */
    static const int  want[3] = { 1, 42, -1 };

    (void) state;
    p = malloc(sizeof(*p));
    assert_non_null(p);
    j = proof_of(0);
    hash32(json_string_value(json_object_get(j, "storageHash")), root);
    for (i = 0; i < 3; i++) {
        s = json_array_get(json_object_get(j, "storageProof"), i);
        load_proof(json_object_get(s, "proof"), p);
        hash32(json_string_value(json_object_get(s, "key")), slot);
        if (want[i] < 0) {
            assert_int_equal(provend_mpt_get(root, p->nodes, p->n, slot, 32,
                                             &value, err, sizeof(err)),
                             PROVEND_ETH_ABSENT);
            continue;
        }
        assert_int_equal(provend_mpt_get(root, p->nodes, p->n, slot, 32,
                                         &value, err, sizeof(err)),
                         PROVEN_OK);
        /* the value: the RLP of the number */
        assert_int_equal(provend_rlp_item(value.data, value.len, &number,
                                          &used), PROVEN_OK);
        assert_int_equal(number.len, 1);
        assert_int_equal(number.data[0], want[i]);
    }

    /* an account without storage: its root the empty trie's, where any
     * slot is absent with no node, or the one empty node */
    hash32(json_string_value(json_object_get(proof_of(1), "storageHash")),
           root);
    memset(slot, 0, sizeof(slot));
    assert_int_equal(provend_mpt_get(root, p->nodes, 0, slot, 32, &value,
                                     err, sizeof(err)), PROVEND_ETH_ABSENT);
    p->bytes[0][0] = 0x80;
    p->nodes[0].data = p->bytes[0];
    p->nodes[0].len = 1;
    assert_int_equal(provend_mpt_get(root, p->nodes, 1, slot, 32, &value,
                                     err, sizeof(err)), PROVEND_ETH_ABSENT);
    /* but no node under any other root proves anything */
    root[0] ^= 1;
    assert_int_equal(provend_mpt_get(root, p->nodes, 0, slot, 32, &value,
                                     err, sizeof(err)), PROVEN_ERR);
    free(p);
}


/* What an endpoint that lies could send, each refused. */
static void
test_lies(void **state)
{
    char           err[PROVEN_ERR_LEN];
    uint8_t        root[32], addr[20], other[20];
    proof_t       *p;
    json_t        *j;
    provend_rlp_t  value;

    (void) state;
    p = malloc(sizeof(*p));
    assert_non_null(p);
    hash32(json_string_value(json_object_get(fixture, "stateRoot")), root);
    j = proof_of(0);
    assert_int_equal(unhex(json_string_value(json_object_get(j, "address")),
                           addr, sizeof(addr)), 20);
    assert_int_equal(unhex(json_string_value(json_object_get(proof_of(1),
                                                             "address")),
                           other, sizeof(other)), 20);

    /* a byte of the leaf changed (its code hash's, here) */
    load_proof(json_object_get(j, "accountProof"), p);
    p->bytes[p->n - 1][p->nodes[p->n - 1].len - 3] ^= 0x01;
    assert_int_equal(provend_mpt_get(root, p->nodes, p->n, addr, 20, &value,
                                     err, sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "is not the one its parent names"));

    /* another root (a block the caller did not ask for) */
    load_proof(json_object_get(j, "accountProof"), p);
    root[0] ^= 0x01;
    assert_int_equal(provend_mpt_get(root, p->nodes, p->n, addr, 20, &value,
                                     err, sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "not the root's"));
    root[0] ^= 0x01;

    /* the proof cut short, or with a node more */
    p->n--;
    assert_int_equal(provend_mpt_get(root, p->nodes, p->n, addr, 20, &value,
                                     err, sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "ends before the path does"));
    p->n++;
    p->nodes[p->n] = p->nodes[0];
    p->n++;
    assert_int_equal(provend_mpt_get(root, p->nodes, p->n, addr, 20, &value,
                                     err, sizeof(err)), PROVEN_ERR);
    p->n--;

    /* one account's proof given for another: never its value */
    assert_int_not_equal(provend_mpt_get(root, p->nodes, p->n, other, 20,
                                         &value, err, sizeof(err)),
                         PROVEN_OK);

    /* bounds: no nodes, too many, a node over the limit */
    assert_int_equal(provend_mpt_get(root, p->nodes, 0, addr, 20, &value,
                                     err, sizeof(err)), PROVEN_ERR);
    assert_int_equal(provend_mpt_get(root, p->nodes,
                                     PROVEND_ETH_PROOF_MAX + 1, addr, 20,
                                     &value, err, sizeof(err)), PROVEN_ERR);
    p->nodes[0].len = PROVEND_ETH_NODE_MAX + 1;
    assert_int_equal(provend_mpt_get(root, p->nodes, p->n, addr, 20, &value,
                                     err, sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "over"));
    free(p);
}


/* ---- a trie built here: an extension, a branch, two leaves -------------- */

static size_t
enc_str(uint8_t *out, const uint8_t *d, size_t n)
{
    size_t  h;

    if (n == 1 && d[0] < 0x80) {
        out[0] = d[0];
        return 1;
    }
    assert_true(n < 56);
    out[0] = (uint8_t) (0x80 + n);
    h = 1;
    memcpy(out + h, d, n);
    return h + n;
}


static size_t
enc_list(uint8_t *out, const uint8_t *items, size_t n)
{
    size_t  h;

    if (n < 56) {
        out[0] = (uint8_t) (0xc0 + n);
        h = 1;
    } else {
        assert_true(n < 256);
        out[0] = 0xf8;
        out[1] = (uint8_t) n;
        h = 2;
    }
    memmove(out + h, items, n);
    return h + n;
}


static unsigned
nib(const uint8_t *path, size_t i)
{
    return i % 2 == 0 ? path[i / 2] >> 4 : path[i / 2] & 0x0f;
}


/* A leaf for the path's nibbles from 2 on (62: even, flag 2), value v. */
static size_t
enc_leaf(uint8_t *out, const uint8_t path[32], uint8_t v)
{
    size_t   i, n;
    uint8_t  hp[32], items[64];

    hp[0] = 0x20;
    for (i = 2; i < 64; i += 2) {
        hp[i / 2] = (uint8_t) (nib(path, i) << 4 | nib(path, i + 1));
    }
    n = enc_str(items, hp, 32);
    n += enc_str(items + n, &v, 1);
    return enc_list(out, items, n);
}


static void
test_built_trie(void **state)
{
    char                err[PROVEN_ERR_LEN];
    size_t              i, n, a, b, c, d;
    uint8_t             key[4][32], path[4][32], leaf[2][80], branch[200];
    uint8_t             ext[64], items[600], hp, lh[2][32], bh[32], root[32];
    unsigned            slot;
    provend_rlp_t       value;
    provend_eth_node_t  nodes[3];

    (void) state;

    /* slots a and b whose paths share their first nibble only; c one
     * whose first nibble differs; d one sharing it but with neither's
     * second */
    memset(key, 0, sizeof(key));
    a = b = c = d = 0;
    for (i = 0; i < 4096 && (b == 0 || c == 0 || d == 0); i++) {
        uint8_t  k[32], h[32];

        memset(k, 0, sizeof(k));
        k[30] = (uint8_t) (i >> 8);
        k[31] = (uint8_t) i;
        provend_keccak256(k, 32, h);
        if (i == 0) {
            a = 1;
            memcpy(key[0], k, 32);
            memcpy(path[0], h, 32);
        } else if (b == 0 && nib(h, 0) == nib(path[0], 0)
                   && nib(h, 1) != nib(path[0], 1))
        {
            b = 1;
            memcpy(key[1], k, 32);
            memcpy(path[1], h, 32);
        } else if (c == 0 && nib(h, 0) != nib(path[0], 0)) {
            c = 1;
            memcpy(key[2], k, 32);
            memcpy(path[2], h, 32);
        } else if (b != 0 && d == 0 && nib(h, 0) == nib(path[0], 0)
                   && nib(h, 1) != nib(path[0], 1)
                   && nib(h, 1) != nib(path[1], 1))
        {
            d = 1;
            memcpy(key[3], k, 32);
            memcpy(path[3], h, 32);
        }
    }
    assert_true(a && b && c && d);

    /* two leaves, under a branch at nibble 1, under an extension of one
     * nibble (odd: flag 1) */
    for (i = 0; i < 2; i++) {
        n = enc_leaf(leaf[i], path[i], (uint8_t) (7 + i));
        provend_keccak256(leaf[i], n, lh[i]);
        nodes[2].len = n;           /* the same length for both */
    }
    n = 0;
    for (slot = 0; slot < 16; slot++) {
        if (slot == nib(path[0], 1)) {
            n += enc_str(items + n, lh[0], 32);
        } else if (slot == nib(path[1], 1)) {
            n += enc_str(items + n, lh[1], 32);
        } else {
            items[n++] = 0x80;
        }
    }
    items[n++] = 0x80;                      /* no value at the branch */
    n = enc_list(branch, items, n);
    provend_keccak256(branch, n, bh);
    nodes[1].data = branch;
    nodes[1].len = n;
    hp = (uint8_t) (0x10 | nib(path[0], 0));
    n = enc_str(items, &hp, 1);
    n += enc_str(items + n, bh, 32);
    n = enc_list(ext, items, n);
    provend_keccak256(ext, n, root);
    nodes[0].data = ext;
    nodes[0].len = n;

    /* each slot's value found through the extension and the branch */
    for (i = 0; i < 2; i++) {
        nodes[2].data = leaf[i];
        assert_int_equal(provend_mpt_get(root, nodes, 3, key[i], 32, &value,
                                         err, sizeof(err)), PROVEN_OK);
        assert_int_equal(value.len, 1);
        assert_int_equal(value.data[0], 7 + i);
        /* the other slot's leaf under this path: not the one named */
        nodes[2].data = leaf[1 - i];
        assert_int_equal(provend_mpt_get(root, nodes, 3, key[i], 32, &value,
                                         err, sizeof(err)), PROVEN_ERR);
    }
    /* c leaves the extension's path; d finds the branch's slot empty */
    assert_int_equal(provend_mpt_get(root, nodes, 1, key[2], 32, &value,
                                     err, sizeof(err)), PROVEND_ETH_ABSENT);
    assert_int_equal(provend_mpt_get(root, nodes, 2, key[3], 32, &value,
                                     err, sizeof(err)), PROVEND_ETH_ABSENT);
    /* and absence claimed with a node less than the path needs */
    assert_int_equal(provend_mpt_get(root, nodes, 1, key[0], 32, &value,
                                     err, sizeof(err)), PROVEN_ERR);
}


/* ---- headers ------------------------------------------------------------ */

static void
check_headers(json_t *headers, provend_eth_header_t *out, size_t *n)
{
    char     err[PROVEN_ERR_LEN];
    size_t   i;
    uint8_t  want[32];

    *n = json_array_size(headers);
    assert_true(*n > 1 && *n <= 8);
    for (i = 0; i < *n; i++) {
        assert_int_equal(provend_eth_header(json_array_get(headers, i),
                                            &out[i], err, sizeof(err)),
                         PROVEN_OK);
        /* the hash computed here is the one ganache gave */
        hash32(json_string_value(json_object_get(json_array_get(headers, i),
                                                 "hash")), want);
        assert_memory_equal(out[i].hash, want, 32);
        assert_int_equal(out[i].number, i);
    }
}


static void
test_headers(void **state)
{
    char                   err[PROVEN_ERR_LEN];
    size_t                 n, used;
    uint8_t                root[32], addr[20];
    json_t                *h, *copy;
    proof_t               *p;
    provend_rlp_t          value;
    provend_eth_header_t   hd[8], one;

    (void) state;

    /* London's fields (no withdrawalsRoot), then Shanghai's */
    check_headers(json_object_get(json_object_get(fixture, "london"),
                                  "headers"), hd, &n);
    check_headers(json_object_get(fixture, "headers"), hd, &n);

    /* the head as the checkpoint: every block back to 0 is bound to it,
     * its state root the one the proofs are of; a proof holds there */
    assert_int_equal(provend_eth_chain(hd, n, hd[n - 1].hash, err,
                                       sizeof(err)), PROVEN_OK);
    hash32(json_string_value(json_object_get(fixture, "stateRoot")), root);
    assert_memory_equal(hd[n - 1].state_root, root, 32);
    p = malloc(sizeof(*p));
    assert_non_null(p);
    load_proof(json_object_get(proof_of(0), "accountProof"), p);
    assert_int_equal(unhex(json_string_value(json_object_get(proof_of(0),
                                                             "address")),
                           addr, sizeof(addr)), 20);
    assert_int_equal(provend_mpt_get(hd[n - 1].state_root, p->nodes, p->n,
                                     addr, 20, &value, err, sizeof(err)),
                     PROVEN_OK);
    free(p);
    (void) used;

    /* another checkpoint */
    root[0] ^= 1;
    assert_int_equal(provend_eth_chain(hd, n, root, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "is not the checkpoint"));

    /* a block 1 of another chain in the middle: numbers right, hashes not */
    one = hd[1];
    assert_int_equal(provend_eth_header(json_array_get(json_object_get(
        json_object_get(fixture, "london"), "headers"), 1), &hd[1], err,
        sizeof(err)), PROVEN_OK);
    assert_int_equal(hd[1].number, 1);
    assert_int_equal(provend_eth_chain(hd, n, hd[n - 1].hash, err,
                                       sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "block 1 is not the parent of block 2"));
    hd[1] = one;
    /* a block left out */
    assert_int_equal(provend_eth_chain(hd + 1, n - 1, hd[n - 1].hash, err,
                                       sizeof(err)), PROVEN_OK);
    one = hd[1];
    hd[1] = hd[0];
    assert_int_equal(provend_eth_chain(hd + 1, n - 1, hd[n - 1].hash, err,
                                       sizeof(err)), PROVEN_ERR);
    hd[1] = one;

    /* a state root changed by the endpoint: in the head, its hash is not
     * the checkpoint; in block 2, not the parent block 3 names */
    copy = json_deep_copy(json_array_get(json_object_get(fixture, "headers"),
                                         n - 1));
    json_object_set_new(copy, "stateRoot", json_string(
        "0x1111111111111111111111111111111111111111111111111111111111111111"));
    one = hd[n - 1];
    assert_int_equal(provend_eth_header(copy, &hd[n - 1], err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(provend_eth_chain(hd, n, one.hash, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "is not the checkpoint"));
    hd[n - 1] = one;
    json_decref(copy);
    h = json_array_get(json_object_get(fixture, "headers"), 2);
    copy = json_deep_copy(h);
    json_object_set_new(copy, "stateRoot", json_string(
        "0x1111111111111111111111111111111111111111111111111111111111111111"));
    assert_int_equal(provend_eth_header(copy, &hd[2], err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(provend_eth_chain(hd, n, hd[n - 1].hash, err,
                                       sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "block 2 is not the parent of block 3"));

    /* malformed headers, each said */
    json_object_del(copy, "nonce");
    assert_int_equal(provend_eth_header(copy, &one, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "without nonce"));
    json_decref(copy);

    copy = json_deep_copy(h);
    json_object_del(copy, "baseFeePerGas");
    assert_int_equal(provend_eth_header(copy, &one, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "withdrawalsRoot but not the fields"));
    json_decref(copy);

    copy = json_deep_copy(h);
    json_object_set_new(copy, "miner", json_string("0x1234"));
    assert_int_equal(provend_eth_header(copy, &one, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "miner is not of its size"));
    json_object_set_new(copy, "miner", json_integer(7));
    assert_int_equal(provend_eth_header(copy, &one, err, sizeof(err)),
                     PROVEN_ERR);
    json_decref(copy);

    copy = json_deep_copy(h);
    json_object_set_new(copy, "gasUsed", json_string("0xzz"));
    assert_int_equal(provend_eth_header(copy, &one, err, sizeof(err)),
                     PROVEN_ERR);
    json_object_set_new(copy, "gasUsed", json_string(
        "0x01000000000000000000000000000000000000000000000000000000000000"
        "0000"));
    assert_int_equal(provend_eth_header(copy, &one, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "a number of 32 bytes at most"));
    json_decref(copy);

    copy = json_deep_copy(h);
    {
        char  extra[2 + 2 * 300 + 1];

        memcpy(extra, "0x", 2);
        memset(extra + 2, 'a', 2 * 300);
        extra[sizeof(extra) - 1] = '\0';
        json_object_set_new(copy, "extraData", json_string(extra));
    }
    assert_int_equal(provend_eth_header(copy, &one, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "extraData"));
    json_decref(copy);
}


/* ---- receipts and blooms -------------------------------------------------- */

static json_t *
load_receipts_fixture(void)
{
    char          path[1024];
    const char   *dir;
    json_t       *f;
    json_error_t  jerr;

    dir = getenv("PROVEN_FIXTURES");
    snprintf(path, sizeof(path), "%s/eth/ganache-receipts.json",
             dir != NULL ? dir : "tests/fixtures");
    f = json_load_file(path, 0, &jerr);
    assert_non_null(f);
    return f;
}


/* provend_eth_receipts of block i's (altered: a copy) against its header */
static int
receipts_of(json_t *block, json_t *receipts, provend_eth_log_t **logs,
    size_t *n, char *err, size_t errlen)
{
    provend_eth_header_t  h;

    assert_int_equal(provend_eth_header(json_object_get(block, "header"), &h,
                                        err, errlen), PROVEN_OK);
    return provend_eth_receipts(receipts, h.receipts_root, logs, n, err,
                                errlen);
}


static void
test_receipts(void **state)
{
    char                  err[PROVEN_ERR_LEN];
    size_t                n, i;
    json_t               *f, *blocks, *b, *copy, *log;
    uint8_t               emitter[20], topic[32], other[20], hash[32];
    provend_eth_log_t    *logs;
    provend_eth_header_t  h;

    (void) state;
    f = load_receipts_fixture();
    blocks = json_object_get(f, "blocks");
    assert_int_equal(unhex(json_string_value(json_object_get(f, "emitter")),
                           emitter, 20), 20);
    memset(topic, 0, 32);
    topic[31] = 1;
    memset(other, 0, 20);
    other[19] = 0xaa;

    /* three transactions, legacy and EIP-1559: two logs, counted in the
     * block (ganache's own receipts number each from 0) */
    b = json_array_get(blocks, 0);
    assert_int_equal(receipts_of(b, json_object_get(b, "receipts"), &logs,
                                 &n, err, sizeof(err)), PROVEN_OK);
    assert_int_equal(n, 2);
    assert_int_equal(logs[0].log_index, 0);
    assert_int_equal(logs[0].tx_index, 0);
    assert_int_equal(logs[1].log_index, 1);
    assert_int_equal(logs[1].tx_index, 2);
    assert_memory_equal(logs[0].address, emitter, 20);
    assert_int_equal(logs[0].ntopics, 1);
    assert_memory_equal(logs[0].topics[0], topic, 32);
    assert_int_equal(logs[0].data_len, 4);
    assert_memory_equal(logs[0].data, "\xde\xad\xbe\xef", 4);
    assert_int_equal(logs[1].data_len, 1);
    hash32(json_string_value(json_object_get(json_array_get(
        json_object_get(b, "receipts"), 2), "transactionHash")), hash);
    assert_memory_equal(logs[1].tx_hash, hash, 32);
    provend_eth_logs_free(logs, n);

    /* the bloom: the emitter and its topic in; another address out */
    assert_int_equal(provend_eth_header(json_object_get(b, "header"), &h,
                                        err, sizeof(err)), PROVEN_OK);
    assert_true(provend_eth_bloom_has(h.bloom, emitter, 20));
    assert_true(provend_eth_bloom_has(h.bloom, topic, 32));
    assert_false(provend_eth_bloom_has(h.bloom, other, 20));

    /* 130 receipts: keys of one and two bytes (rlp(128) is 0x81 0x80) */
    b = json_array_get(blocks, 1);
    assert_int_equal(json_array_size(json_object_get(b, "receipts")), 130);
    assert_int_equal(receipts_of(b, json_object_get(b, "receipts"), &logs,
                                 &n, err, sizeof(err)), PROVEN_OK);
    assert_int_equal(n, 13);
    for (i = 0; i < n; i++) {
        assert_int_equal(logs[i].log_index, i);
        assert_int_equal(logs[i].tx_index, 10 * i);
        assert_int_equal(logs[i].data_len, 2);
        assert_int_equal(logs[i].data[0] << 8 | logs[i].data[1], 256 + 10 * i);
    }
    provend_eth_logs_free(logs, n);

    /* no transactions: the empty trie, and a bloom with nothing */
    b = json_array_get(blocks, 2);
    assert_int_equal(receipts_of(b, json_object_get(b, "receipts"), &logs,
                                 &n, err, sizeof(err)), PROVEN_OK);
    assert_int_equal(n, 0);
    assert_int_equal(provend_eth_header(json_object_get(b, "header"), &h,
                                        err, sizeof(err)), PROVEN_OK);
    assert_false(provend_eth_bloom_has(h.bloom, emitter, 20));

    /* what an endpoint may alter, each caught by the root */
    b = json_array_get(blocks, 0);
    copy = json_deep_copy(json_object_get(b, "receipts"));
    log = json_array_get(json_object_get(json_array_get(copy, 0), "logs"), 0);
    json_object_set_new(log, "data", json_string("0xdeadbeee"));
    assert_int_equal(receipts_of(b, copy, &logs, &n, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "not those of the block"));
    json_decref(copy);

    copy = json_deep_copy(json_object_get(b, "receipts"));
    json_array_remove(copy, 1);                 /* a receipt held back */
    assert_int_equal(receipts_of(b, copy, &logs, &n, err, sizeof(err)),
                     PROVEN_ERR);
    json_decref(copy);

    copy = json_deep_copy(json_object_get(b, "receipts"));
    json_array_insert(copy, 0, json_array_get(copy, 2));   /* reordered */
    json_array_remove(copy, 3);
    assert_int_equal(receipts_of(b, copy, &logs, &n, err, sizeof(err)),
                     PROVEN_ERR);
    json_decref(copy);

    copy = json_deep_copy(json_object_get(b, "receipts"));
    log = json_array_get(json_object_get(json_array_get(copy, 2), "logs"), 0);
    json_array_set_new(json_object_get(log, "topics"), 0, json_string(
        "0x0000000000000000000000000000000000000000000000000000000000000002"));
    assert_int_equal(receipts_of(b, copy, &logs, &n, err, sizeof(err)),
                     PROVEN_ERR);
    json_decref(copy);

    copy = json_deep_copy(json_object_get(b, "receipts"));
    json_object_set_new(json_array_get(copy, 1), "status", json_string("0x0"));
    assert_int_equal(receipts_of(b, copy, &logs, &n, err, sizeof(err)),
                     PROVEN_ERR);
    json_decref(copy);

    copy = json_deep_copy(json_object_get(b, "receipts"));
    json_object_set_new(json_array_get(copy, 0), "type", json_string("0xff"));
    assert_int_equal(receipts_of(b, copy, &logs, &n, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "EIP-2718"));
    json_decref(copy);

    copy = json_deep_copy(json_object_get(b, "receipts"));
    log = json_array_get(json_object_get(json_array_get(copy, 0), "logs"), 0);
    json_object_set_new(log, "topics", json_pack("[s,s,s,s,s]", "0x00",
                        "0x00", "0x00", "0x00", "0x00"));
    assert_int_equal(receipts_of(b, copy, &logs, &n, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "4 at most"));
    json_decref(copy);

    json_decref(f);
}


/* ---- EIP-191 signatures ---------------------------------------------------- */

static void
test_signatures(void **state)
{
    char           path[1024], err[PROVEN_ERR_LEN];
    size_t         i;
    long           len;
    json_t        *f, *one;
    uint8_t        account[20], address[20], hash[32], sig[65], msg[256];
    uint8_t        big[PROVEND_ETH_MESSAGE_MAX + 1];
    const char    *dir;
    json_error_t   jerr;

    (void) state;
    dir = getenv("PROVEN_FIXTURES");
    snprintf(path, sizeof(path), "%s/eth/ganache-signatures.json",
             dir != NULL ? dir : "tests/fixtures");
    f = json_load_file(path, 0, &jerr);
    assert_non_null(f);
    assert_int_equal(unhex(json_string_value(json_object_get(f, "account")),
                           account, 20), 20);

    /* every message of the fixture, v 27 and 28 among them */
    for (i = 0; i < json_array_size(json_object_get(f, "signatures")); i++) {
        one = json_array_get(json_object_get(f, "signatures"), i);
        len = unhex(json_string_value(json_object_get(one, "message")), msg,
                    sizeof(msg));
        assert_true(len >= 0);
        assert_int_equal(unhex(json_string_value(json_object_get(one,
                               "signature")), sig, 65), 65);
        assert_int_equal(provend_eth_personal_hash(msg, (size_t) len, hash),
                         PROVEN_OK);
        assert_int_equal(provend_eth_recover(hash, sig, address, err,
                                             sizeof(err)), PROVEN_OK);
        assert_memory_equal(address, account, 20);

        /* v as 0 or 1 too */
        sig[64] -= 27;
        assert_int_equal(provend_eth_recover(hash, sig, address, err,
                                             sizeof(err)), PROVEN_OK);
        assert_memory_equal(address, account, 20);
        sig[64] += 27;

        /* another message, or the other v: another address */
        if (len == 0) {
            msg[0] = 0;
        }
        msg[0] ^= 1;
        provend_eth_personal_hash(msg, len > 0 ? (size_t) len : 1, hash);
        assert_int_equal(provend_eth_recover(hash, sig, address, err,
                                             sizeof(err)), PROVEN_OK);
        assert_memory_not_equal(address, account, 20);
        msg[0] ^= 1;
        provend_eth_personal_hash(msg, (size_t) len, hash);
        sig[64] ^= 1;                   /* 27 <-> 26 or 28 <-> 29 */
        sig[64] = sig[64] == 26 ? 28 : sig[64] == 29 ? 27 : sig[64];
        if (provend_eth_recover(hash, sig, address, err, sizeof(err))
            == PROVEN_OK)
        {
            assert_memory_not_equal(address, account, 20);
        }
    }

    /* what recovers no key */
    memset(big, 'x', sizeof(big));
    assert_int_equal(provend_eth_personal_hash(big, sizeof(big), hash),
                     PROVEN_ERR);
    one = json_array_get(json_object_get(f, "signatures"), 0);
    unhex(json_string_value(json_object_get(one, "signature")), sig, 65);
    memset(hash, 0, 32);            /* zero: a key anyone can aim */
    assert_int_equal(provend_eth_recover(hash, sig, address, err,
                                         sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "hash of zero"));
    provend_eth_personal_hash(NULL, 0, hash);
    sig[64] = 29;
    assert_int_equal(provend_eth_recover(hash, sig, address, err,
                                         sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "v is not 27 or 28"));
    sig[64] = 27;
    memset(sig, 0, 32);                                 /* r = 0 */
    assert_int_equal(provend_eth_recover(hash, sig, address, err,
                                         sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "out of range"));
    memset(sig, 0xff, 64);                              /* r, s >= n */
    assert_int_equal(provend_eth_recover(hash, sig, address, err,
                                         sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "out of range"));

    json_decref(f);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_keccak),
        cmocka_unit_test(test_rlp),
        cmocka_unit_test(test_accounts),
        cmocka_unit_test(test_storage),
        cmocka_unit_test(test_lies),
        cmocka_unit_test(test_built_trie),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_receipts),
        cmocka_unit_test(test_signatures),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
