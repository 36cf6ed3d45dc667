/*
 * Merkle trees of nonces, as RFC 9162 §2.1 makes them (proven.h).  The
 * tree is built bottom-up: each level pairs its nodes in order, the last
 * one of an odd level going up as it is; that is the RFC's tree (split at
 * the largest power of two below n), built once for every proof of a
 * batch rather than once per proof.
 */

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "proven.h"


int
proven_merkle_leaf(const uint8_t *nonce, size_t len, uint8_t out[32])
{
    int                   ok;
    static const uint8_t  tag = 0x00;
    EVP_MD_CTX           *md;

    md = EVP_MD_CTX_new();
    ok = md != NULL
         && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1
         && EVP_DigestUpdate(md, &tag, 1) == 1
         && EVP_DigestUpdate(md, nonce, len) == 1
         && EVP_DigestFinal_ex(md, out, NULL) == 1;
    EVP_MD_CTX_free(md);
    return ok ? PROVEN_OK : PROVEN_ERR;
}


static void
merkle_node(const uint8_t left[32], const uint8_t right[32], uint8_t out[32])
{
    uint8_t  buf[1 + 64];

    buf[0] = 0x01;
    memcpy(buf + 1, left, 32);
    memcpy(buf + 33, right, 32);
    SHA256(buf, sizeof(buf), out);
}


int
proven_merkle_build(proven_merkle_t *t, const uint8_t (*leaves)[32],
    size_t n)
{
    size_t    total, count, level, i;
    uint8_t  *below, *here;

    memset(t, 0, sizeof(*t));
    if (n == 0 || n > PROVEN_MERKLE_LEAVES_MAX) {
        return PROVEN_ERR;
    }
    /* every level's nodes: fewer than 2n in all */
    total = 0;
    for (count = n, level = 0; ; count = (count + 1) / 2, level++) {
        t->start[level] = total;
        t->count[level] = count;
        total += count;
        if (count == 1) {
            break;
        }
    }
    t->levels = level + 1;
    t->nodes = malloc(total * 32);
    if (t->nodes == NULL) {
        return PROVEN_ERR;
    }
    t->leaves = n;
    memcpy(t->nodes, leaves, n * 32);
    for (level = 1; level < t->levels; level++) {
        below = t->nodes + t->start[level - 1] * 32;
        here = t->nodes + t->start[level] * 32;
        for (i = 0; i < t->count[level]; i++) {
            if (2 * i + 1 < t->count[level - 1]) {
                merkle_node(below + 2 * i * 32, below + (2 * i + 1) * 32,
                            here + i * 32);
            } else {
                memcpy(here + i * 32, below + 2 * i * 32, 32);  /* goes up */
            }
        }
    }
    return PROVEN_OK;
}


void
proven_merkle_root(const proven_merkle_t *t, uint8_t root[32])
{
    memcpy(root, t->nodes + t->start[t->levels - 1] * 32, 32);
}


size_t
proven_merkle_path(const proven_merkle_t *t, size_t index,
    uint8_t path[PROVEN_MERKLE_DEPTH_MAX][32])
{
    size_t  level, depth, sibling;

    depth = 0;
    for (level = 0; level + 1 < t->levels; level++, index /= 2) {
        sibling = index ^ 1;
        if (sibling < t->count[level]) {
            memcpy(path[depth++], t->nodes + (t->start[level] + sibling) * 32,
                   32);
        }
    }
    return depth;
}


void
proven_merkle_free(proven_merkle_t *t)
{
    free(t->nodes);
    t->nodes = NULL;
}


int
proven_merkle_verify(const uint8_t leaf[32], size_t index, size_t size,
    const uint8_t (*path)[32], size_t depth, const uint8_t root[32])
{
    size_t   i, fn, sn;
    uint8_t  r[32];

    if (index >= size || size > PROVEN_MERKLE_LEAVES_MAX
        || depth > PROVEN_MERKLE_DEPTH_MAX)
    {
        return PROVEN_ERR;
    }
    fn = index;
    sn = size - 1;
    memcpy(r, leaf, 32);
    for (i = 0; i < depth; i++) {
        if (sn == 0) {
            return PROVEN_ERR;          /* a path longer than the tree */
        }
        if ((fn & 1) || fn == sn) {
            merkle_node(path[i], r, r);
            /* levels where this node has no sibling: it goes up as is */
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            merkle_node(r, path[i], r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && CRYPTO_memcmp(r, root, 32) == 0 ? PROVEN_OK
                                                      : PROVEN_ERR;
}
