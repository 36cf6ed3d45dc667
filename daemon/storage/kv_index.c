/*
 * The KV stores' index: small helpers, the keyed hash table and the skip
 * list that keeps keys in order (see kv_int.h for the design).
 */

#include "kv_int.h"


/* ---- small helpers ------------------------------------------------------- */

#define PROVEND_ROTL(x, b)  (((x) << (b)) | ((x) >> (64 - (b))))


#define PROVEND_SIPROUND                                                   \
    do {                                                                   \
        v0 += v1; v1 = PROVEND_ROTL(v1, 13); v1 ^= v0;                     \
        v0 = PROVEND_ROTL(v0, 32);                                         \
        v2 += v3; v3 = PROVEND_ROTL(v3, 16); v3 ^= v2;                     \
        v0 += v3; v3 = PROVEND_ROTL(v3, 21); v3 ^= v0;                     \
        v2 += v1; v1 = PROVEND_ROTL(v1, 17); v1 ^= v2;                     \
        v2 = PROVEND_ROTL(v2, 32);                                         \
    } while (0)


/*
 * SipHash-2-4 under a random key: keys come from applications, and a
 * keyed hash keeps them from piling entries into one bucket.
 */
uint64_t
provend_kv_hash(const uint64_t key[2], const uint8_t *p, size_t len)
{
    size_t    i, tail;
    uint64_t  v0, v1, v2, v3, m, last;

    v0 = key[0] ^ 0x736f6d6570736575ULL;
    v1 = key[1] ^ 0x646f72616e646f6dULL;
    v2 = key[0] ^ 0x6c7967656e657261ULL;
    v3 = key[1] ^ 0x7465646279746573ULL;

    for (i = 0; i + 8 <= len; i += 8) {
        memcpy(&m, p + i, 8);     /* host order: the hash never leaves us */
        v3 ^= m;
        PROVEND_SIPROUND;
        PROVEND_SIPROUND;
        v0 ^= m;
    }

    last = (uint64_t) len << 56;
    for (tail = 0; i + tail < len; tail++) {
        last |= (uint64_t) p[i + tail] << (8 * tail);
    }

    v3 ^= last;
    PROVEND_SIPROUND;
    PROVEND_SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    PROVEND_SIPROUND;
    PROVEND_SIPROUND;
    PROVEND_SIPROUND;
    PROVEND_SIPROUND;

    return v0 ^ v1 ^ v2 ^ v3;
}


/* Key order within a store: bytes, then length; stores grouped apart. */
static int
provend_kv_order(const provend_kv_entry_t *e, const uint8_t *canon,
    size_t canon_len, const uint8_t *key, size_t key_len)
{
    int     rc;
    size_t  n;

    if (e->canon_len != canon_len) {
        return e->canon_len < canon_len ? -1 : 1;
    }

    rc = memcmp(provend_kv_canon(e), canon, canon_len);
    if (rc != 0) {
        return rc;
    }

    n = e->key_len < key_len ? e->key_len : key_len;
    rc = n ? memcmp(provend_kv_key(e), key, n) : 0;
    if (rc != 0) {
        return rc;
    }

    return e->key_len < key_len ? -1 : e->key_len > key_len;
}


/* The record bytes a live entry takes in a snapshot. */
static uint64_t
provend_kv_record_size(const provend_kv_entry_t *e)
{
    return PROVEND_KV_RECORD_EXTRA + PROVEND_KV_PLAIN_FIXED + e->ad_len
           + PROVEND_KV_VALUE_OVERHEAD + e->value_len;
}


size_t
provend_kv_entry_cost(size_t ad_len, int level)
{
    return sizeof(provend_kv_entry_t) + (size_t) level * sizeof(void *)
           + ad_len + PROVEND_KV_ENTRY_COST;
}


/* ---- the index ----------------------------------------------------------- */

provend_kv_entry_t *
provend_kv_find(provend_kv_t *kv, const uint8_t *ad, size_t ad_len,
    uint64_t hash)
{
    provend_kv_entry_t  *e;

    for (e = kv->buckets[hash & (kv->nbuckets - 1)]; e; e = e->hash_next) {
        if (e->hash == hash && e->ad_len == ad_len
            && memcmp(provend_kv_ad(e), ad, ad_len) == 0)
        {
            return e;
        }
    }

    return NULL;
}


/* The first entry >= (canon, key); update[] gets its predecessors. */
provend_kv_entry_t *
provend_kv_seek(provend_kv_t *kv, const uint8_t *canon, size_t canon_len,
    const uint8_t *key, size_t key_len, provend_kv_entry_t **update)
{
    int                  i;
    provend_kv_entry_t  *x;

    x = kv->list;

    for (i = kv->level - 1; i >= 0; i--) {
        while (x->forward[i] != NULL
               && provend_kv_order(x->forward[i], canon, canon_len, key,
                                   key_len) < 0)
        {
            x = x->forward[i];
        }
        if (update != NULL) {
            update[i] = x;
        }
    }

    return x->forward[0];
}


static int
provend_kv_grow(provend_kv_t *kv)
{
    size_t                i, n;
    provend_kv_entry_t  **b, *e, *next;

    n = kv->nbuckets * 2;
    b = calloc(n, sizeof(*b));
    if (b == NULL) {
        return PROVEN_ERR;      /* longer chains, still correct */
    }

    for (i = 0; i < kv->nbuckets; i++) {
        for (e = kv->buckets[i]; e != NULL; e = next) {
            next = e->hash_next;
            e->hash_next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }

    free(kv->buckets);
    kv->buckets = b;
    kv->nbuckets = n;
    return PROVEN_OK;
}


/* A new entry with no value (revision 0) for ad, in both structures. */
provend_kv_entry_t *
provend_kv_insert(provend_kv_t *kv, const uint8_t *ad, size_t ad_len,
    uint64_t hash)
{
    int                  i, level;
    size_t               canon_len;
    provend_kv_entry_t  *e, *update[PROVEND_KV_LEVELS];

    /* p = 1/4 per level: about 1.33 links per key */
    level = 1;
    for ( ;; ) {
        kv->rng ^= kv->rng << 13;
        kv->rng ^= kv->rng >> 7;
        kv->rng ^= kv->rng << 17;
        if (level == PROVEND_KV_LEVELS || (kv->rng & 3) != 0) {
            break;
        }
        level++;
    }

    e = malloc(sizeof(*e) + (size_t) level * sizeof(e->forward[0])
               + ad_len);
    if (e == NULL) {
        return NULL;
    }

    memset(e, 0, sizeof(*e));
    e->level = level;
    e->hash = hash;
    e->ad_len = (uint32_t) ad_len;
    canon_len = proven_get_be32(ad);
    e->canon_len = (uint32_t) canon_len;
    e->key_len = proven_get_be32(ad + 4 + canon_len);
    memcpy(provend_kv_ad(e), ad, ad_len);

    (void) provend_kv_seek(kv, provend_kv_canon(e), e->canon_len,
                           provend_kv_key(e), e->key_len, update);

    if (level > kv->level) {
        for (i = kv->level; i < level; i++) {
            update[i] = kv->list;
        }
        kv->level = level;
    }

    for (i = 0; i < level; i++) {
        e->forward[i] = update[i]->forward[i];
        update[i]->forward[i] = e;
    }

    e->hash_next = kv->buckets[hash & (kv->nbuckets - 1)];
    kv->buckets[hash & (kv->nbuckets - 1)] = e;
    kv->nentries++;
    kv->memory += provend_kv_entry_cost(ad_len, level);

    if (kv->nentries > kv->nbuckets) {
        (void) provend_kv_grow(kv);
    }

    return e;
}


void
provend_kv_remove(provend_kv_t *kv, provend_kv_entry_t *e)
{
    int                   i;
    provend_kv_entry_t  **pp, *update[PROVEND_KV_LEVELS];

    (void) provend_kv_seek(kv, provend_kv_canon(e), e->canon_len,
                           provend_kv_key(e), e->key_len, update);

    for (i = 0; i < e->level; i++) {
        if (update[i]->forward[i] == e) {
            update[i]->forward[i] = e->forward[i];
        }
    }

    while (kv->level > 1 && kv->list->forward[kv->level - 1] == NULL) {
        kv->level--;
    }

    for (pp = &kv->buckets[e->hash & (kv->nbuckets - 1)]; *pp != NULL;
         pp = &(*pp)->hash_next)
    {
        if (*pp == e) {
            *pp = e->hash_next;
            break;
        }
    }

    kv->nentries--;
    kv->memory -= provend_kv_entry_cost(e->ad_len, e->level)
                  + e->value_len;

    if (e->value != NULL) {
        OPENSSL_cleanse(e->value, e->value_len);
        free(e->value);
    }
    free(e);
}


/* Replaces e's committed value (takes value) at revision. */
void
provend_kv_commit_value(provend_kv_t *kv, provend_kv_entry_t *e,
    uint64_t revision, uint8_t *value, size_t value_len)
{
    if (e->revision != 0) {
        kv->live_bytes -= provend_kv_record_size(e);
    }

    if (e->value != NULL) {
        OPENSSL_cleanse(e->value, e->value_len);
        free(e->value);
    }
    kv->memory -= e->value_len;

    e->value = value;
    e->value_len = value != NULL ? value_len : 0;
    e->revision = revision;
    kv->memory += e->value_len;

    if (revision != 0) {
        kv->live_bytes += provend_kv_record_size(e);
    }
}
