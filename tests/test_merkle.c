/*
 * Merkle trees of nonces (lib/proven_merkle.c): every position of trees
 * of 1 to 1000 leaves proves, and checks; roots as RFC 9162's recursive
 * definition makes them (written here again, the plain way); a proof
 * moved to another nonce, index or tree size, cut, lengthened or bent is
 * refused.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/sha.h>

#include "proven.h"


#define LEAVES  1000


/* RFC 9162 §2.1.1's MTH, recursively, from the nonces' leaf hashes. */
static void
mth(const uint8_t (*leaves)[32], size_t n, uint8_t out[32])
{
    size_t   k;
    uint8_t  buf[65];

    if (n == 1) {
        memcpy(out, leaves[0], 32);
        return;
    }
    for (k = 1; k * 2 < n; k *= 2) {
        /* the largest power of two below n */
    }
    buf[0] = 0x01;
    mth(leaves, k, buf + 1);
    mth(leaves + k, n - k, buf + 33);
    SHA256(buf, sizeof(buf), out);
}


static uint8_t (*nonce_leaves(size_t n))[32]
{
    size_t    i;
    uint8_t   nonce[8];
    uint8_t (*leaves)[32];

    leaves = calloc(n, 32);
    assert_non_null(leaves);
    for (i = 0; i < n; i++) {
        memcpy(nonce, "nonce", 5);
        nonce[5] = (uint8_t) (i >> 16);
        nonce[6] = (uint8_t) (i >> 8);
        nonce[7] = (uint8_t) i;
        assert_int_equal(proven_merkle_leaf(nonce, sizeof(nonce), leaves[i]),
                         PROVEN_OK);
    }
    return leaves;
}


static void
test_every_position(void **state)
{
    size_t           n, i, depth;
    uint8_t          root[32], want[32];
    uint8_t          path[PROVEN_MERKLE_DEPTH_MAX][32];
    uint8_t        (*leaves)[32];
    proven_merkle_t  t;

    (void) state;
    leaves = nonce_leaves(LEAVES);
    for (n = 1; n <= LEAVES; n++) {
        assert_int_equal(proven_merkle_build(&t, leaves, n), PROVEN_OK);
        proven_merkle_root(&t, root);
        if (n <= 130 || n % 97 == 0) {
            mth(leaves, n, want);
            assert_memory_equal(root, want, 32);
        }
        for (i = 0; i < n; i++) {
            depth = proven_merkle_path(&t, i, path);
            assert_true(depth <= PROVEN_MERKLE_DEPTH_MAX);
            assert_int_equal(proven_merkle_verify(leaves[i], i, n,
                                 (const uint8_t (*)[32]) path, depth, root),
                             PROVEN_OK);
        }
        proven_merkle_free(&t);
    }
    free(leaves);
}


/* A proof of one leaf, tried as every other claim it could be moved to. */
static void
test_moved_proofs(void **state)
{
    size_t           n, i, depth;
    uint8_t          root[32], bent[PROVEN_MERKLE_DEPTH_MAX + 1][32];
    uint8_t          path[PROVEN_MERKLE_DEPTH_MAX][32], other[32];
    uint8_t        (*leaves)[32];
    proven_merkle_t  t;
    static const size_t  sizes[] = { 2, 3, 5, 7, 8, 9, 64, 100, 1000 };

    (void) state;
    leaves = nonce_leaves(LEAVES);
    assert_int_equal(proven_merkle_leaf((const uint8_t *) "x", 1, other),
                     PROVEN_OK);
    for (n = 0; n < sizeof(sizes) / sizeof(sizes[0]); n++) {
        size_t  size = sizes[n];

        assert_int_equal(proven_merkle_build(&t, leaves, size), PROVEN_OK);
        proven_merkle_root(&t, root);
        for (i = 0; i < size; i++) {
            depth = proven_merkle_path(&t, i, path);
            /* another nonce at that place */
            assert_int_equal(proven_merkle_verify(other, i, size,
                                 (const uint8_t (*)[32]) path, depth, root),
                             PROVEN_ERR);
            /* the same nonce at another place */
            assert_int_equal(proven_merkle_verify(leaves[i], (i + 1) % size,
                                 size, (const uint8_t (*)[32]) path, depth,
                                 root), PROVEN_ERR);
            /* another tree size (the root does not fix it: a proof of
             * the first leaves of a tree holds in a larger one too, and
             * still shows the nonce was in the batch) never lets another
             * nonce in; nor does an index past the size */
            assert_int_equal(proven_merkle_verify(other, i, size + 1,
                                 (const uint8_t (*)[32]) path, depth, root),
                             PROVEN_ERR);
            assert_int_equal(proven_merkle_verify(other, i, size * 2,
                                 (const uint8_t (*)[32]) path, depth, root),
                             PROVEN_ERR);
            assert_int_equal(proven_merkle_verify(leaves[i], size, size,
                                 (const uint8_t (*)[32]) path, depth, root),
                             PROVEN_ERR);
            /* cut, lengthened, a byte bent */
            assert_int_equal(proven_merkle_verify(leaves[i], i, size,
                                 (const uint8_t (*)[32]) path, depth - 1,
                                 root), PROVEN_ERR);
            memcpy(bent, path, depth * 32);
            memcpy(bent[depth], root, 32);
            assert_int_equal(proven_merkle_verify(leaves[i], i, size,
                                 (const uint8_t (*)[32]) bent, depth + 1,
                                 root), PROVEN_ERR);
            bent[depth / 2][7] ^= 1;
            assert_int_equal(proven_merkle_verify(leaves[i], i, size,
                                 (const uint8_t (*)[32]) bent, depth, root),
                             PROVEN_ERR);
            /* a pair of leaves offered as one nonce (the bytes the node
             * above them hashes), at that node's place: its leaf is
             * tagged 0x00, the node 0x01, so it is not that node */
            if ((i ^ 1) < size) {
                uint8_t  pair[64], fake[32];

                memcpy(pair, leaves[i & ~(size_t) 1], 32);
                memcpy(pair + 32, leaves[i | 1], 32);
                assert_int_equal(proven_merkle_leaf(pair, 64, fake),
                                 PROVEN_OK);
                assert_int_equal(proven_merkle_verify(fake, i / 2,
                                     (size + 1) / 2,
                                     (const uint8_t (*)[32]) path + 1,
                                     depth - 1, root), PROVEN_ERR);
                /* (the node itself, taken for a leaf hash, would pass:
                 * why verify takes leaf hashes made by proven_merkle_leaf
                 * from the client's own nonce, never a hash it is given) */
                assert_int_equal(proven_merkle_verify(t.nodes
                                     + (t.start[1] + i / 2) * 32, i / 2,
                                     (size + 1) / 2,
                                     (const uint8_t (*)[32]) path + 1,
                                     depth - 1, root), PROVEN_OK);
            }
        }
        proven_merkle_free(&t);
    }
    free(leaves);
}


/* A tree of one: its root is the leaf, its proof empty; out of bounds. */
static void
test_bounds(void **state)
{
    uint8_t          leaf[32], root[32];
    uint8_t          path[PROVEN_MERKLE_DEPTH_MAX][32];
    proven_merkle_t  t;

    (void) state;
    assert_int_equal(proven_merkle_leaf((const uint8_t *) "only", 4, leaf),
                     PROVEN_OK);
    assert_int_equal(proven_merkle_build(&t, (const uint8_t (*)[32]) leaf, 1),
                     PROVEN_OK);
    proven_merkle_root(&t, root);
    assert_memory_equal(root, leaf, 32);
    assert_int_equal(proven_merkle_path(&t, 0, path), 0);
    assert_int_equal(proven_merkle_verify(leaf, 0, 1, NULL, 0, root),
                     PROVEN_OK);
    assert_int_equal(proven_merkle_verify(leaf, 0, 0, NULL, 0, root),
                     PROVEN_ERR);
    proven_merkle_free(&t);
    assert_int_equal(proven_merkle_build(&t, (const uint8_t (*)[32]) leaf, 0),
                     PROVEN_ERR);
    assert_int_equal(proven_merkle_build(&t, (const uint8_t (*)[32]) leaf,
                                         PROVEN_MERKLE_LEAVES_MAX + 1),
                     PROVEN_ERR);
    assert_int_equal(proven_merkle_verify(leaf, 0, PROVEN_MERKLE_LEAVES_MAX
                                          + 1, NULL, 0, root), PROVEN_ERR);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_position),
        cmocka_unit_test(test_moved_proofs),
        cmocka_unit_test(test_bounds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
