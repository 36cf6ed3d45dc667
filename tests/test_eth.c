/*
 * Ethereum's encodings (daemon/chains): Keccak-256 against known answers
 * (@noble/hashes gave the longer ones), RLP's canonical forms, and
 * Merkle-Patricia proofs as ganache 7.9.2 answers eth_getProof
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


/* ---- Keccak-256 ------------------------------------------------------------- */

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


/* ---- RLP ------------------------------------------------------------------- */

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


/* ---- proofs ------------------------------------------------------------------ */

static void
test_accounts(void **state)
{
    int                     rc;
    char                    err[PROVEN_ERR_LEN];
    long                    len;
    size_t                  i;
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
        len = unhex(json_string_value(json_object_get(j, "balance")), want,
                    sizeof(want));
        /* "0x0" has an odd length: no bytes, as RLP's zero */
        if (len > 0) {
            assert_int_equal(acct.balance_len, (size_t) len);
            assert_memory_equal(acct.balance, want, (size_t) len);
        }
    }
    /* the nonces ganache gave: the contract 1, the sender 2 */
    assert_int_equal(acct.nonce_len, 1);
    assert_int_equal(acct.nonce[0], 2);

    /* an address with no account: the proof shows it absent */
    j = proof_of(2);
    load_proof(json_object_get(j, "accountProof"), p);
    assert_int_equal(unhex(json_string_value(json_object_get(j, "address")),
                           addr, sizeof(addr)), 20);
    assert_int_equal(provend_mpt_get(root, p->nodes, p->n, addr, 20, &value,
                                     err, sizeof(err)), PROVEN_AGAIN);
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
                             PROVEN_AGAIN);
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

    /* a byte of the leaf changed (a balance, a storage root) */
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


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_keccak),
        cmocka_unit_test(test_rlp),
        cmocka_unit_test(test_accounts),
        cmocka_unit_test(test_storage),
        cmocka_unit_test(test_lies),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
