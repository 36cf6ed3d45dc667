/*
 * The embedded backend's KV stores.  Every live value is held in memory
 * (bounded: --kv-memory-limit), found through a keyed hash table and kept
 * in key order by a skip list for kv.keys; every change is appended to an
 * encrypted log under DATA/storage/kv/ and answered only once that append
 * is fsync'd.  This is the design of redis's append-only file, the peer
 * bench/storage measures against: a read touches neither the disk nor
 * another thread, and the writes of many clients share one write() and
 * one fdatasync().
 *
 * The log is a series of segments, DATA/storage/kv/<seqno: 16 hex>.log:
 *
 *   header   "PVKVLOG1" | seqno be64 | flags be64 | salt[32]    56 bytes
 *   record   len be32 | AES-256-GCM ciphertext (len bytes) | tag[16]
 *
 * Each segment has its own key, HKDF(master, "proven-kv-log-v1" | salt);
 * record i is sealed with the nonce 0^4 | be64 i and the associated data
 * header | be64 i | len, so a record cannot be altered, reordered or moved
 * to another segment without failing to open.  A segment is appended to
 * by one run of provend only (a restart starts a new one), so a counter
 * never comes back under the same key, not even after a torn tail.
 *
 * Record plaintext: op u8 | revision be64 | ad_len be32 | ad | sealed,
 * where ad = be32 len(canon) | canon | be32 len(key) | key (canon: the
 * canonical scope, store type and name) and sealed = the value sealed to
 * ad under a value key named by a salt (provend_kv_seal_value()): the form
 * that can be shipped to a replica as it is, and that no other key's place
 * accepts.  Every batch (one write() and one fdatasync()) ends with a
 * COMMIT record of the op alone.
 *
 * A "base" segment (flag 1) starts with a snapshot of every live key and
 * closes it with a BASE_END record.  Recovery replays the newest complete
 * base and every segment after it (their seqnos must follow without a
 * gap).  Compaction writes a new base once the log has grown to more than
 * twice the live data, then deletes the segments before it.
 *
 * Recovery replays whole batches, up to the last COMMIT of a segment that
 * opens: what follows is a batch a crash cut, never acknowledged (its
 * pages may even have landed out of order, a whole record after a torn
 * one).  A record that does not open with a record of a later batch
 * opening after it is tampering, since a batch is written only after the
 * one before is durable: the store refuses to open rather than serve an
 * older state.  Not detected (as in vfs.c): a segment cut back by whole
 * batches, or the newest segments deleted; that is a rollback.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "keys.h"
#include "log.h"
#include "storage_kv.h"
#include "util.h"


#define PROVEND_KV_MAGIC          "PVKVLOG1"
#define PROVEND_KV_HEADER_LEN     56
#define PROVEND_KV_SALT_LEN       32
#define PROVEND_KV_FLAG_BASE      1

/*
 * The most a segment holds before its header is synced: the header and
 * the first base's snapshot end.  Every segment's header is synced before
 * any other record is written after it, so a crash leaves a headerless or
 * endless first base only this long; anything longer was altered.
 */
#define PROVEND_KV_FIRST_LEN      (PROVEND_KV_HEADER_LEN + 4 + 1           \
                                   + PROVEND_TAG_LEN)

#define PROVEND_KV_OP_SET         1
#define PROVEND_KV_OP_DELETE      2
#define PROVEND_KV_OP_BASE_END    3
#define PROVEND_KV_OP_COMMIT      4           /* ends every batch */

#define PROVEND_KV_AD_MAX         (8 + PROVEND_SCOPE_CANON_MAX            \
                                   + PROVEND_KV_KEY_MAX)
#define PROVEND_KV_PLAIN_FIXED    13          /* op, revision, ad_len */
#define PROVEND_KV_VALUE_SALT     16
#define PROVEND_KV_VALUE_OVERHEAD (PROVEND_KV_VALUE_SALT + PROVEND_SEAL_OVERHEAD)
#define PROVEND_KV_VALUE_SEALS    ((uint64_t) 1 << 32)   /* per value key */
#define PROVEND_KV_VALUE_LIMIT    (8 * 1024 * 1024)   /* provend's maximum */
#define PROVEND_KV_PLAIN_MAX      (PROVEND_KV_PLAIN_FIXED + PROVEND_KV_AD_MAX \
                                   + PROVEND_KV_VALUE_OVERHEAD             \
                                   + PROVEND_KV_VALUE_LIMIT)
#define PROVEND_KV_RECORD_EXTRA   (4 + PROVEND_TAG_LEN)

#define PROVEND_KV_LEVELS         24
#define PROVEND_KV_BUCKETS_MIN    1024
#define PROVEND_KV_ENTRY_COST     64          /* bookkeeping per key */
#define PROVEND_KV_MEMORY_DEFAULT ((size_t) 1024 * 1024 * 1024)
#define PROVEND_KV_COMPACT_MIN    ((uint64_t) 64 * 1024 * 1024)
#define PROVEND_KV_SEGMENTS_MAX   64
#define PROVEND_KV_SNAPSHOT_STEP  256         /* keys per locked step */
#define PROVEND_ED25519_LEN       32


typedef struct provend_kv_entry_s  provend_kv_entry_t;

/*
 * One key.  The index structure (hash chain, skip list links, pending,
 * latest) changes under kv->lock; revision and value change only on the
 * log thread, under the lock too; the ad bytes never change.  An entry
 * is removed only on the log thread, so that thread may keep a pointer to
 * a committed entry across an unlock.
 */
struct provend_kv_entry_s {
    provend_kv_entry_t  *hash_next;
    uint64_t             hash;
    uint64_t             revision;     /* committed; 0: no value yet/now */
    uint64_t             latest;       /* with the writes pending */
    uint32_t             pending;      /* writes queued or being logged */
    uint32_t             ad_len;
    uint32_t             canon_len;
    uint32_t             key_len;
    uint8_t             *value;        /* plaintext; committed */
    size_t               value_len;
    int                  level;
    provend_kv_entry_t  *forward[];    /* level links, then the ad bytes */
};

#define provend_kv_ad(e)     ((uint8_t *) &(e)->forward[(e)->level])
#define provend_kv_canon(e)  (provend_kv_ad(e) + 4)
#define provend_kv_key(e)    (provend_kv_ad(e) + 8 + (e)->canon_len)


struct provend_kv_s {
    char                   *dir;             /* DATA/storage/kv */
    uint8_t                 master[PROVEND_KEY_LEN];
    uint64_t                hash_key[2];
    size_t                  max_value;
    size_t                  memory_max;
    int                     replica;         /* no fdatasync per batch */

    pthread_mutex_t         lock;
    pthread_cond_t          cond;
    pthread_t               thread;
    int                     thread_started;
    int                     stopping;
    provend_storage_req_t  *head;            /* writes to log */
    provend_storage_req_t  *tail;
    size_t                  memory;          /* entries and values */

    provend_kv_entry_t    **buckets;
    size_t                  nbuckets;        /* a power of two */
    size_t                  nentries;
    provend_kv_entry_t     *list;            /* skip list head */
    int                     level;
    uint64_t                rng;

    /* the log: the log thread's, or open's before it starts */
    int                     fd;              /* -1: none open */
    uint64_t                base_seqno;      /* 0: no segment yet */
    uint64_t                seqno;           /* the newest */
    uint8_t                 header[PROVEND_KV_HEADER_LEN];
    EVP_CIPHER_CTX         *ctx;             /* the open segment's key */
    EVP_CIPHER_CTX         *value_ctx;       /* the value key, log thread */
    uint8_t                 value_salt[PROVEND_KV_VALUE_SALT];
    uint64_t                value_seals;     /* under it; the nonce */
    uint8_t                 open_salt[PROVEND_KV_VALUE_SALT];  /* replay */
    uint8_t                 open_key[PROVEND_KEY_LEN];
    int                     open_key_set;
    uint64_t                counter;         /* its next record */
    off_t                   offset;          /* its durable end */
    uint64_t                log_bytes;       /* since the base */
    uint64_t                live_bytes;      /* records of live keys */
    uint64_t                compact_hold_bytes;   /* after a failure: */
    uint64_t                compact_hold_seqno;   /* wait for growth */
    int                     broken;          /* the log's end is unknown */
    uint8_t                *buf;
    size_t                  buf_len;
    size_t                  buf_cap;
};


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
static uint64_t
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


static size_t
provend_kv_entry_cost(size_t ad_len, int level)
{
    return sizeof(provend_kv_entry_t) + (size_t) level * sizeof(void *)
           + ad_len + PROVEND_KV_ENTRY_COST;
}


/* ---- the index ----------------------------------------------------------- */

static provend_kv_entry_t *
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
static provend_kv_entry_t *
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
static provend_kv_entry_t *
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


static void
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
static void
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


/* ---- records ------------------------------------------------------------- */

static int
provend_kv_reserve(provend_kv_t *kv, size_t more)
{
    size_t    cap;
    uint8_t  *p;

    if (kv->buf_len + more <= kv->buf_cap) {
        return PROVEN_OK;
    }

    cap = kv->buf_cap ? kv->buf_cap : 64 * 1024;
    while (cap < kv->buf_len + more) {
        cap *= 2;
    }

    p = realloc(kv->buf, cap);
    if (p == NULL) {
        return PROVEN_ERR;
    }

    kv->buf = p;
    kv->buf_cap = cap;
    return PROVEN_OK;
}


static void
provend_kv_nonce(uint64_t counter, uint8_t nonce[PROVEND_NONCE_LEN],
    uint8_t *aad_tail)
{
    memset(nonce, 0, 4);
    proven_put_be64(nonce + 4, counter);
    proven_put_be64(aad_tail, counter);
}


/* A value key: HKDF(master, "proven-kv-value-v2" | salt). */
static int
provend_kv_value_key(const provend_kv_t *kv,
    const uint8_t salt[PROVEND_KV_VALUE_SALT], uint8_t key[PROVEND_KEY_LEN])
{
    uint8_t  info[18 + PROVEND_KV_VALUE_SALT];

    memcpy(info, "proven-kv-value-v2", 18);
    memcpy(info + 18, salt, PROVEND_KV_VALUE_SALT);
    return provend_keys_derive(kv->master, (const char *) info, sizeof(info),
                               key, PROVEND_KEY_LEN);
}


/*
 * A value sealed to ad: salt | nonce | ciphertext | tag, where the salt
 * names the value key and the nonce counts the values sealed under it.
 * Every run of the log thread takes a new random salt, and a new one after
 * 2^32 values, so no nonce comes twice under a key (random nonces under
 * one key for the store's whole life would reach GCM's limit).  Anyone
 * with the master key opens it knowing only ad: a replica can take it as
 * it is.
 */
static int
provend_kv_seal_value(provend_kv_t *kv, const uint8_t *ad, size_t ad_len,
    const uint8_t *value, size_t len, uint8_t *out)
{
    int       n, ok;
    uint8_t  *nonce, *ct, key[PROVEND_KEY_LEN];

    if (kv->value_seals == 0 || kv->value_seals == PROVEND_KV_VALUE_SEALS) {
        ok = RAND_bytes(kv->value_salt, sizeof(kv->value_salt)) == 1
             && provend_kv_value_key(kv, kv->value_salt, key) == PROVEN_OK
             && EVP_EncryptInit_ex(kv->value_ctx, NULL, NULL, key, NULL)
                == 1;
        OPENSSL_cleanse(key, sizeof(key));
        if (!ok) {
            kv->value_seals = 0;
            return PROVEN_ERR;
        }
        kv->value_seals = 1;      /* nonce 0 is never used: 0 means unset */
    }

    memcpy(out, kv->value_salt, PROVEND_KV_VALUE_SALT);
    nonce = out + PROVEND_KV_VALUE_SALT;
    memset(nonce, 0, 4);
    proven_put_be64(nonce + 4, kv->value_seals++);
    ct = nonce + PROVEND_NONCE_LEN;

    if (EVP_EncryptInit_ex(kv->value_ctx, NULL, NULL, NULL, nonce) != 1
        || EVP_EncryptUpdate(kv->value_ctx, NULL, &n, ad, (int) ad_len) != 1)
    {
        return PROVEN_ERR;
    }

    n = 0;
    if (len > 0
        && EVP_EncryptUpdate(kv->value_ctx, ct, &n, value, (int) len) != 1)
    {
        return PROVEN_ERR;
    }

    return EVP_EncryptFinal_ex(kv->value_ctx, ct + n, &n) == 1
           && EVP_CIPHER_CTX_ctrl(kv->value_ctx, EVP_CTRL_GCM_GET_TAG,
                                  PROVEND_TAG_LEN, ct + len) == 1
           ? PROVEN_OK : PROVEN_ERR;
}


/*
 * Appends one record to kv->buf: op, revision, ad and the value sealed to
 * ad (NULL for delete and BASE_END), the whole sealed under the segment.
 */
static int
provend_kv_record(provend_kv_t *kv, int op, uint64_t revision,
    const uint8_t *ad, size_t ad_len, const uint8_t *value,
    size_t value_len)
{
    int       n;
    size_t    plain_len;
    uint8_t  *rec, *p, nonce[PROVEND_NONCE_LEN], aad_tail[12];

    plain_len = 1;
    if (op == PROVEND_KV_OP_SET || op == PROVEND_KV_OP_DELETE) {
        plain_len = PROVEND_KV_PLAIN_FIXED + ad_len;
        if (op == PROVEND_KV_OP_SET) {
            plain_len += PROVEND_KV_VALUE_OVERHEAD + value_len;
        }
    }

    if (provend_kv_reserve(kv, plain_len + PROVEND_KV_RECORD_EXTRA)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    rec = kv->buf + kv->buf_len;
    proven_put_be32(rec, (uint32_t) plain_len);

    p = rec + 4;
    p[0] = (uint8_t) op;
    if (op == PROVEND_KV_OP_SET || op == PROVEND_KV_OP_DELETE) {
        proven_put_be64(p + 1, revision);
        proven_put_be32(p + 9, (uint32_t) ad_len);
        memcpy(p + PROVEND_KV_PLAIN_FIXED, ad, ad_len);

        if (op == PROVEND_KV_OP_SET
            && provend_kv_seal_value(kv, ad, ad_len, value, value_len,
                                     p + PROVEND_KV_PLAIN_FIXED + ad_len)
               != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
    }

    provend_kv_nonce(kv->counter, nonce, aad_tail);
    proven_put_be32(aad_tail + 8, (uint32_t) plain_len);

    /* GCM encrypts in place. */
    if (EVP_EncryptInit_ex(kv->ctx, NULL, NULL, NULL, nonce) != 1
        || EVP_EncryptUpdate(kv->ctx, NULL, &n, kv->header,
                             PROVEND_KV_HEADER_LEN) != 1
        || EVP_EncryptUpdate(kv->ctx, NULL, &n, aad_tail, 12) != 1
        || EVP_EncryptUpdate(kv->ctx, p, &n, p, (int) plain_len) != 1
        || EVP_EncryptFinal_ex(kv->ctx, p + n, &n) != 1
        || EVP_CIPHER_CTX_ctrl(kv->ctx, EVP_CTRL_GCM_GET_TAG,
                               PROVEND_TAG_LEN, p + plain_len) != 1)
    {
        return PROVEN_ERR;
    }

    kv->buf_len += plain_len + PROVEND_KV_RECORD_EXTRA;
    kv->counter++;
    return PROVEN_OK;
}


/* A cipher context under the key of the segment whose header this is. */
static EVP_CIPHER_CTX *
provend_kv_segment_ctx(provend_kv_t *kv, const uint8_t *header, int encrypt)
{
    int              ok;
    uint8_t          info[16 + PROVEND_KV_SALT_LEN], key[PROVEND_KEY_LEN];
    EVP_CIPHER_CTX  *ctx;

    memcpy(info, "proven-kv-log-v1", 16);
    memcpy(info + 16, header + 24, PROVEND_KV_SALT_LEN);

    if (provend_keys_derive(kv->master, (const char *) info, sizeof(info),
                            key, sizeof(key)) != PROVEN_OK)
    {
        return NULL;
    }

    ctx = EVP_CIPHER_CTX_new();
    ok = ctx != NULL
         && (encrypt
             ? EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, NULL)
             : EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, NULL))
            == 1;
    OPENSSL_cleanse(key, sizeof(key));

    if (!ok) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }

    return ctx;
}


static int
provend_kv_path(const provend_kv_t *kv, uint64_t seqno, char *path,
    size_t len)
{
    return (size_t) snprintf(path, len, "%s/%016" PRIx64 ".log", kv->dir,
                             seqno) < len ? PROVEN_OK : PROVEN_ERR;
}


static int
provend_kv_sync_dir(const provend_kv_t *kv)
{
    int  fd, rc;

    fd = open(kv->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return PROVEN_ERR;
    }

    rc = fsync(fd);
    close(fd);
    return rc == 0 ? PROVEN_OK : PROVEN_ERR;
}


static int
provend_kv_write_all(int fd, const uint8_t *p, size_t len)
{
    ssize_t  n;

    while (len > 0) {
        n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return PROVEN_ERR;
        }
        p += n;
        len -= (size_t) n;
    }

    return PROVEN_OK;
}


/*
 * Creates segment seqno (its header in kv->header, its key in kv->ctx,
 * the write position after the header) and returns its descriptor.
 * Nothing in it is durable until the caller's fdatasync and dir sync.
 */
static int
provend_kv_segment_create(provend_kv_t *kv, uint64_t seqno, int base,
    char *err, size_t errlen)
{
    int              fd;
    char             path[4096];
    uint8_t          header[PROVEND_KV_HEADER_LEN];
    EVP_CIPHER_CTX  *ctx;

    if (provend_kv_path(kv, seqno, path, sizeof(path)) != PROVEN_OK) {
        proven_errf(err, errlen, "KV log path too long");
        return -1;
    }

    memcpy(header, PROVEND_KV_MAGIC, 8);
    proven_put_be64(header + 8, seqno);
    proven_put_be64(header + 16, base ? PROVEND_KV_FLAG_BASE : 0);

    if (RAND_bytes(header + 24, PROVEND_KV_SALT_LEN) != 1) {
        proven_errf(err, errlen, "no random bytes for a KV log segment");
        return -1;
    }

    ctx = provend_kv_segment_ctx(kv, header, 1);
    if (ctx == NULL) {
        proven_errf(err, errlen, "cannot set up the KV log key");
        return -1;
    }

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0
        || provend_kv_write_all(fd, header, PROVEND_KV_HEADER_LEN)
           != PROVEN_OK)
    {
        proven_errf(err, errlen, "%.160s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            (void) unlink(path);
        }
        EVP_CIPHER_CTX_free(ctx);
        return -1;
    }

    /* From here on records are sealed for the new segment. */
    memcpy(kv->header, header, PROVEND_KV_HEADER_LEN);
    EVP_CIPHER_CTX_free(kv->ctx);
    kv->ctx = ctx;
    kv->counter = 0;
    return fd;
}


static void
provend_kv_segment_close(provend_kv_t *kv)
{
    if (kv->fd >= 0) {
        close(kv->fd);
        kv->fd = -1;
    }
}


/*
 * The segment the log thread appends to: a new one per run (and after a
 * failed write); the very first one is an empty base.
 */
static int
provend_kv_segment_open(provend_kv_t *kv, char *err, size_t errlen)
{
    int  fd, base;

    if (kv->fd >= 0) {
        return PROVEN_OK;
    }

    base = kv->base_seqno == 0;
    fd = provend_kv_segment_create(kv, kv->seqno + 1, base, err, errlen);
    if (fd < 0) {
        return PROVEN_ERR;
    }

    kv->buf_len = 0;
    if (base
        && (provend_kv_record(kv, PROVEND_KV_OP_BASE_END, 0, NULL, 0, NULL,
                              0) != PROVEN_OK
            || provend_kv_write_all(fd, kv->buf, kv->buf_len) != PROVEN_OK))
    {
        proven_errf(err, errlen,
                    "cannot start the KV log: %s", strerror(errno));
        goto failed;
    }

    if (fdatasync(fd) != 0 || provend_kv_sync_dir(kv) != PROVEN_OK) {
        proven_errf(err, errlen, "cannot sync the KV log: %s", strerror(errno));
        goto failed;
    }

    kv->fd = fd;
    kv->seqno++;
    if (base) {
        kv->base_seqno = kv->seqno;
    }
    kv->offset = (off_t) (PROVEND_KV_HEADER_LEN + kv->buf_len);
    kv->log_bytes += (uint64_t) kv->offset;
    kv->buf_len = 0;
    return PROVEN_OK;

failed:

    {
        char  path[4096];

        close(fd);
        if (provend_kv_path(kv, kv->seqno + 1, path, sizeof(path))
            == PROVEN_OK)
        {
            (void) unlink(path);
        }
    }
    kv->buf_len = 0;
    return PROVEN_ERR;
}


/* ---- recovery ------------------------------------------------------------ */

typedef struct {
    int              fd;
    uint8_t          header[PROVEND_KV_HEADER_LEN];
    EVP_CIPHER_CTX  *ctx;
    uint64_t         counter;
    uint8_t         *plain;          /* PROVEND_KV_PLAIN_MAX + tag */
} provend_kv_reader_t;


static ssize_t
provend_kv_read_full(int fd, uint8_t *p, size_t len)
{
    ssize_t  n;
    size_t   got;

    for (got = 0; got < len; got += (size_t) n) {
        n = read(fd, p + got, len - got);
        if (n < 0 && errno == EINTR) {
            n = 0;
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -1 : (ssize_t) got;
        }
    }

    return (ssize_t) got;
}


/*
 * The next record's plaintext: 1 and *len, 0 at the end of the segment or
 * a record cut short, -1 when a whole record does not open, -2 when the
 * file cannot be read (not the same thing: nothing may be dropped for it).
 */
static int
provend_kv_read_record(provend_kv_reader_t *r, size_t *len)
{
    int      n;
    uint8_t  lenbuf[4], nonce[PROVEND_NONCE_LEN], aad_tail[12];
    size_t   plain_len;
    ssize_t  got;

    got = provend_kv_read_full(r->fd, lenbuf, 4);
    if (got != 4) {
        return got < 0 ? -2 : 0;
    }

    plain_len = proven_get_be32(lenbuf);
    if (plain_len == 0 || plain_len > PROVEND_KV_PLAIN_MAX) {
        return -1;
    }

    got = provend_kv_read_full(r->fd, r->plain, plain_len + PROVEND_TAG_LEN);
    if (got < 0) {
        return -2;
    }
    if ((size_t) got != plain_len + PROVEND_TAG_LEN) {
        return 0;
    }

    provend_kv_nonce(r->counter, nonce, aad_tail);
    memcpy(aad_tail + 8, lenbuf, 4);

    if (EVP_DecryptInit_ex(r->ctx, NULL, NULL, NULL, nonce) != 1
        || EVP_DecryptUpdate(r->ctx, NULL, &n, r->header,
                             PROVEND_KV_HEADER_LEN) != 1
        || EVP_DecryptUpdate(r->ctx, NULL, &n, aad_tail, 12) != 1
        || EVP_DecryptUpdate(r->ctx, r->plain, &n, r->plain,
                             (int) plain_len) != 1
        || EVP_CIPHER_CTX_ctrl(r->ctx, EVP_CTRL_GCM_SET_TAG, PROVEND_TAG_LEN,
                               r->plain + plain_len) != 1
        || EVP_DecryptFinal_ex(r->ctx, r->plain + n, &n) != 1)
    {
        return -1;
    }

    r->counter++;
    *len = plain_len;
    return 1;
}


/* Applies one replayed record to the index. */
static int
provend_kv_replay(provend_kv_t *kv, const uint8_t *p, size_t len,
    char *err, size_t errlen)
{
    int                  op;
    size_t               ad_len, canon_len, sealed_len;
    uint8_t             *value;
    uint64_t             revision, hash;
    const uint8_t       *ad;
    provend_kv_entry_t  *e;

    op = p[0];
    if (len < PROVEND_KV_PLAIN_FIXED
        || (op != PROVEND_KV_OP_SET && op != PROVEND_KV_OP_DELETE))
    {
        proven_errf(err, errlen, "KV log: a record of unknown kind");
        return PROVEN_ERR;
    }

    revision = proven_get_be64(p + 1);
    ad_len = proven_get_be32(p + 9);
    ad = p + PROVEND_KV_PLAIN_FIXED;

    if (ad_len < 8 || ad_len > PROVEND_KV_AD_MAX
        || ad_len > len - PROVEND_KV_PLAIN_FIXED)
    {
        proven_errf(err, errlen, "KV log: a record with a bad key");
        return PROVEN_ERR;
    }

    canon_len = proven_get_be32(ad);
    if (canon_len > ad_len - 8
        || 8 + canon_len + proven_get_be32(ad + 4 + canon_len) != ad_len)
    {
        proven_errf(err, errlen, "KV log: a record with a bad key");
        return PROVEN_ERR;
    }

    hash = provend_kv_hash(kv->hash_key, ad, ad_len);
    e = provend_kv_find(kv, ad, ad_len, hash);

    if (op == PROVEND_KV_OP_DELETE) {
        if (e != NULL) {
            provend_kv_commit_value(kv, e, 0, NULL, 0);
            provend_kv_remove(kv, e);
        }
        return PROVEN_OK;
    }

    sealed_len = len - PROVEND_KV_PLAIN_FIXED - ad_len;
    if (revision == 0 || sealed_len < PROVEND_KV_VALUE_OVERHEAD) {
        proven_errf(err, errlen, "KV log: a record with a bad value");
        return PROVEN_ERR;
    }

    value = malloc(sealed_len - PROVEND_KV_VALUE_OVERHEAD + 1);
    if (value == NULL) {
        proven_errf(err, errlen, "out of memory replaying the KV log");
        return PROVEN_ERR;
    }

    /* The value key of its salt: the last one is kept, runs are long. */
    if (!kv->open_key_set
        || memcmp(kv->open_salt, ad + ad_len, PROVEND_KV_VALUE_SALT) != 0)
    {
        memcpy(kv->open_salt, ad + ad_len, PROVEND_KV_VALUE_SALT);
        if (provend_kv_value_key(kv, kv->open_salt, kv->open_key)
            != PROVEN_OK)
        {
            free(value);
            proven_errf(err, errlen, "cannot derive a KV value key");
            return PROVEN_ERR;
        }
        kv->open_key_set = 1;
    }

    if (provend_open(kv->open_key, ad, ad_len,
                     ad + ad_len + PROVEND_KV_VALUE_SALT,
                     sealed_len - PROVEND_KV_VALUE_SALT, value) != PROVEN_OK)
    {
        free(value);
        proven_errf(err, errlen, "KV log: a value does not open under its key");
        return PROVEN_ERR;
    }

    if (e == NULL) {
        e = provend_kv_insert(kv, ad, ad_len, hash);
        if (e == NULL) {
            free(value);
            proven_errf(err, errlen, "out of memory replaying the KV log");
            return PROVEN_ERR;
        }
    }

    provend_kv_commit_value(kv, e, revision, value,
                            sealed_len - PROVEND_KV_VALUE_OVERHEAD);
    e->latest = revision;
    return PROVEN_OK;
}


/* Opens segment seqno and checks its header; -1 on failure. */
static int
provend_kv_open_segment(provend_kv_t *kv, uint64_t seqno,
    uint8_t header[PROVEND_KV_HEADER_LEN], int *is_base, char *err,
    size_t errlen)
{
    int       fd;
    char      path[4096];
    uint64_t  flags;

    if (provend_kv_path(kv, seqno, path, sizeof(path)) != PROVEN_OK) {
        proven_errf(err, errlen, "KV log path too long");
        return -1;
    }

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        proven_errf(err, errlen, "%.160s: %s", path, strerror(errno));
        return -1;
    }

    if (provend_kv_read_full(fd, header, PROVEND_KV_HEADER_LEN)
        != PROVEND_KV_HEADER_LEN
        || memcmp(header, PROVEND_KV_MAGIC, 8) != 0
        || proven_get_be64(header + 8) != seqno)
    {
        proven_errf(err, errlen,
                    "%.160s: not a KV log segment, or renamed", path);
        close(fd);
        return -1;
    }

    flags = proven_get_be64(header + 16);
    if (flags & ~(uint64_t) PROVEND_KV_FLAG_BASE) {
        proven_errf(err, errlen, "%.160s: unknown flags", path);
        close(fd);
        return -1;
    }

    *is_base = (flags & PROVEND_KV_FLAG_BASE) != 0;
    return fd;
}


/*
 * After a record that does not open at offset at: whether a record of a
 * later batch opens under a counter near its place (1: tampering), none
 * does (0: the torn last batch of a crash), or the file could not be read
 * (-1).  A crash leaves only a tail that never opens; a record altered,
 * moved or removed in the middle leaves records that do.  in_snapshot: the
 * damaged record is part of a base's snapshot, after which only a COMMIT
 * that follows a whole snapshot can come, so any COMMIT proves tampering.
 * Bounded: the first PROVEND_KV_PROBE records, each tried at
 * PROVEND_KV_PROBE counters.
 */
#define PROVEND_KV_PROBE  16

static int
provend_kv_damage_inside(provend_kv_reader_t *r, off_t at, int in_snapshot)
{
    int       k, opened, batch_ended;
    off_t     pos;
    size_t    len, plain_len;
    uint8_t   lenbuf[4];
    uint64_t  counter, c;

    counter = r->counter;
    pos = at;
    batch_ended = 0;

    for (k = 0; k < PROVEND_KV_PROBE; k++) {
        if (lseek(r->fd, pos, SEEK_SET) != pos
            || provend_kv_read_full(r->fd, lenbuf, 4) != 4)
        {
            return 0;
        }

        len = proven_get_be32(lenbuf);
        if (len == 0 || len > PROVEND_KV_PLAIN_MAX) {
            return 0;
        }

        opened = 0;
        for (c = counter; !opened && c < counter + PROVEND_KV_PROBE + k; c++)
        {
            r->counter = c;
            if (lseek(r->fd, pos, SEEK_SET) != pos) {
                return -1;
            }
            switch (provend_kv_read_record(r, &plain_len)) {
            case 1:
                /*
                 * Batches are written one after the other's fsync: a
                 * record past the end of the damaged one's batch proves
                 * that batch was durable.  Within the last batch, a whole
                 * record after a torn one is a crash's out-of-order write.
                 */
                if (batch_ended
                    || (in_snapshot && r->plain[0] == PROVEND_KV_OP_COMMIT))
                {
                    return 1;
                }
                if (r->plain[0] == PROVEND_KV_OP_COMMIT
                    || r->plain[0] == PROVEND_KV_OP_BASE_END)
                {
                    batch_ended = 1;
                }
                opened = 1;
                break;
            case -2:
                return -1;
            }
        }

        pos += (off_t) (4 + len + PROVEND_TAG_LEN);
    }

    return 0;
}


/*
 * Replays segment seqno into the index: its whole batches, up to the last
 * COMMIT (or snapshot end) that opens; records after it belong to a batch
 * a crash cut, never acknowledged.  *complete: it is not a base, or a base
 * whose snapshot is whole.  A record that does not open before the end of
 * a later batch is tampering: an error.
 */
static int
provend_kv_load_segment(provend_kv_t *kv, uint64_t seqno, int *is_base,
    int *complete, char *err, size_t errlen)
{
    int                  rc, seen_end, end_committed;
    off_t                at, end, committed;
    size_t               len;
    uint64_t             records;
    provend_kv_reader_t  r;

    memset(&r, 0, sizeof(r));
    rc = PROVEN_ERR;
    seen_end = 0;
    end_committed = 0;
    *complete = 0;

    r.fd = provend_kv_open_segment(kv, seqno, r.header, is_base, err,
                                   errlen);
    if (r.fd < 0) {
        return PROVEN_ERR;
    }

    r.ctx = provend_kv_segment_ctx(kv, r.header, 0);
    r.plain = malloc(PROVEND_KV_PLAIN_MAX + PROVEND_TAG_LEN);
    if (r.ctx == NULL || r.plain == NULL) {
        proven_errf(err, errlen, "out of memory replaying the KV log");
        goto done;
    }

    /* First pass: where the last whole batch ends. */
    committed = PROVEND_KV_HEADER_LEN;
    records = 0;

    for ( ;; ) {
        at = lseek(r.fd, 0, SEEK_CUR);
        rc = provend_kv_read_record(&r, &len);

        if (rc != 1) {
            break;
        }

        if (r.plain[0] == PROVEND_KV_OP_BASE_END) {
            if (!*is_base || seen_end || len != 1) {
                proven_errf(err, errlen,
                            "KV log segment %" PRIu64 ": a misplaced "
                            "snapshot end", seqno);
                rc = PROVEN_ERR;
                goto done;
            }
            seen_end = 1;
        }

        if (r.plain[0] == PROVEND_KV_OP_BASE_END
            || r.plain[0] == PROVEND_KV_OP_COMMIT)
        {
            if (len != 1 || (*is_base && !seen_end)) {
                proven_errf(err, errlen,
                            "KV log segment %" PRIu64 ": a misplaced "
                            "batch end", seqno);
                rc = PROVEN_ERR;
                goto done;
            }
            committed = lseek(r.fd, 0, SEEK_CUR);
            records = r.counter;
            end_committed = seen_end;
        }
    }

    if (rc == -1) {
        rc = provend_kv_damage_inside(&r, at, *is_base && !seen_end);
        if (rc < 0) {
            rc = -2;
        }
    }

    if (rc == -2) {
        proven_errf(err, errlen,
                    "KV log segment %" PRIu64 ": read error: %s", seqno,
                    strerror(errno));
        rc = PROVEN_ERR;
        goto done;
    }

    if (rc == 1) {
        proven_errf(err, errlen,
                    "KV log segment %" PRIu64 ": the record at %lld "
                    "does not open but a later batch does: the log was "
                    "tampered with", seqno, (long long) at);
        rc = PROVEN_ERR;
        goto done;
    }

    end = lseek(r.fd, 0, SEEK_END);
    if (committed < end) {
        provend_warn("KV log segment %" PRIu64 ": %lld bytes after the "
                     "last whole batch (a write cut by a crash) ignored",
                     seqno, (long long) (end - committed));
    }

    /* Second pass: apply what the first found whole. */
    if (lseek(r.fd, PROVEND_KV_HEADER_LEN, SEEK_SET)
        != PROVEND_KV_HEADER_LEN)
    {
        proven_errf(err, errlen,
                    "KV log segment %" PRIu64 ": cannot seek", seqno);
        rc = PROVEN_ERR;
        goto done;
    }
    r.counter = 0;

    while (r.counter < records) {
        if (provend_kv_read_record(&r, &len) != 1) {
            proven_errf(err, errlen,
                        "KV log segment %" PRIu64 ": changed while "
                        "being read", seqno);
            rc = PROVEN_ERR;
            goto done;
        }

        if (r.plain[0] == PROVEND_KV_OP_BASE_END
            || r.plain[0] == PROVEND_KV_OP_COMMIT)
        {
            continue;
        }

        if (provend_kv_replay(kv, r.plain, len, err, errlen) != PROVEN_OK) {
            rc = PROVEN_ERR;
            goto done;
        }
    }

    kv->log_bytes += (uint64_t) committed;
    *complete = !*is_base || end_committed;
    rc = PROVEN_OK;

done:

    if (r.plain != NULL) {
        OPENSSL_cleanse(r.plain, PROVEND_KV_PLAIN_MAX + PROVEND_TAG_LEN);
        free(r.plain);
    }
    EVP_CIPHER_CTX_free(r.ctx);
    close(r.fd);
    return rc;
}


static int
provend_kv_cmp_u64(const void *a, const void *b)
{
    uint64_t  x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}


/* The seqnos of the segments in kv->dir, ascending (malloc()ed). */
static int
provend_kv_list(provend_kv_t *kv, uint64_t **out, size_t *n, char *err,
    size_t errlen)
{
    DIR            *dir;
    char           *end;
    size_t          len, cap;
    uint64_t       *seqnos, *p, v;
    struct dirent  *de;

    *out = NULL;
    *n = 0;
    cap = 0;
    seqnos = NULL;

    dir = opendir(kv->dir);
    if (dir == NULL) {
        proven_errf(err, errlen, "%.160s: %s", kv->dir, strerror(errno));
        return PROVEN_ERR;
    }

    while ((de = readdir(dir)) != NULL) {
        len = strlen(de->d_name);
        if (len != 20 || strcmp(de->d_name + 16, ".log") != 0) {
            continue;
        }

        errno = 0;
        v = strtoull(de->d_name, &end, 16);
        if (errno != 0 || end != de->d_name + 16 || v == 0) {
            continue;
        }

        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            p = realloc(seqnos, cap * sizeof(*p));
            if (p == NULL) {
                free(seqnos);
                closedir(dir);
                proven_errf(err, errlen, "out of memory listing the KV log");
                return PROVEN_ERR;
            }
            seqnos = p;
        }
        seqnos[(*n)++] = v;
    }

    closedir(dir);
    if (*n > 1) {
        qsort(seqnos, *n, sizeof(*seqnos), provend_kv_cmp_u64);
    }
    *out = seqnos;
    return PROVEN_OK;
}


static void
provend_kv_clear(provend_kv_t *kv)
{
    provend_kv_entry_t  *e;

    while ((e = kv->list->forward[0]) != NULL) {
        provend_kv_commit_value(kv, e, 0, NULL, 0);
        provend_kv_remove(kv, e);
    }
    kv->log_bytes = 0;
    kv->live_bytes = 0;
}


static void
provend_kv_unlink(provend_kv_t *kv, uint64_t seqno)
{
    char  path[4096];

    if (provend_kv_path(kv, seqno, path, sizeof(path)) == PROVEN_OK
        && unlink(path) != 0 && errno != ENOENT)
    {
        provend_warn("%s: cannot remove: %s", path, strerror(errno));
    }
}


/*
 * Moves segment seqno out of the log's way (renamed to .dropped): recovery
 * never deletes what it judged a crash's leftover, in case it was wrong.
 */
static void
provend_kv_set_aside(provend_kv_t *kv, uint64_t seqno)
{
    char  path[4096], aside[4200];

    if (provend_kv_path(kv, seqno, path, sizeof(path)) != PROVEN_OK) {
        return;
    }
    (void) snprintf(aside, sizeof(aside), "%s.dropped", path);
    if (rename(path, aside) != 0) {
        provend_warn("%s: cannot set aside: %s", path, strerror(errno));
    }
}


/* The size of segment seqno, or -1. */
static off_t
provend_kv_segment_size(provend_kv_t *kv, uint64_t seqno)
{
    char         path[4096];
    struct stat  sb;

    if (provend_kv_path(kv, seqno, path, sizeof(path)) != PROVEN_OK
        || stat(path, &sb) != 0)
    {
        return -1;
    }
    return sb.st_size;
}


/*
 * The newest complete base and everything after it.  A base left without
 * its end by a crash (in compaction, or creating the very first segment)
 * can only be the newest segment: it is set aside, and the older segments
 * a finished compaction had not removed yet are removed.  A crash in
 * compaction leaves the older segments in place; one creating the first
 * segment leaves at most PROVEND_KV_FIRST_LEN bytes.  An endless base
 * that is neither was damaged: recovery refuses it rather than lose it.
 */
static int
provend_kv_recover(provend_kv_t *kv, char *err, size_t errlen)
{
    int        fd, is_base, complete;
    size_t     i, n, base;
    uint8_t    header[PROVEND_KV_HEADER_LEN];
    uint64_t  *seqnos;

    if (provend_kv_list(kv, &seqnos, &n, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    /*
     * The newest segment may have been cut by a crash before its header
     * was synced (short, or zeros): no write was ever answered from it.
     */
    if (n > 0) {
        char     path[4096];
        off_t    size;
        uint8_t  zero[PROVEND_KV_HEADER_LEN];

        memset(zero, 0, sizeof(zero));
        fd = -1;
        size = provend_kv_segment_size(kv, seqnos[n - 1]);

        if (size >= 0 && size <= PROVEND_KV_FIRST_LEN
            && provend_kv_path(kv, seqnos[n - 1], path, sizeof(path))
               == PROVEN_OK
            && (size < PROVEND_KV_HEADER_LEN
                || ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0
                    && provend_kv_read_full(fd, header, sizeof(header))
                       == PROVEND_KV_HEADER_LEN
                    && memcmp(header, zero, sizeof(zero)) == 0)))
        {
            provend_warn("KV log: segment %" PRIu64 " has no header (a "
                         "crash while creating it): set aside",
                         seqnos[n - 1]);
            provend_kv_set_aside(kv, seqnos[n - 1]);
            n--;
        }
        if (fd >= 0) {
            close(fd);
        }
    }

    base = (size_t) -1;

    for (i = n; i-- > 0; ) {
        fd = provend_kv_open_segment(kv, seqnos[i], header, &is_base, err,
                                     errlen);
        if (fd < 0) {
            goto failed;
        }
        close(fd);

        if (!is_base) {
            continue;
        }

        if (provend_kv_load_segment(kv, seqnos[i], &is_base, &complete,
                                    err, errlen) != PROVEN_OK)
        {
            goto failed;
        }

        if (complete) {
            base = i;
            break;
        }

        provend_kv_clear(kv);

        if (i != n - 1
            || (i == 0
                && provend_kv_segment_size(kv, seqnos[i])
                   > PROVEND_KV_FIRST_LEN))
        {
            proven_errf(err, errlen,
                        "KV log: base segment %" PRIu64 " is incomplete "
                        "and no crash leaves it so: damaged", seqnos[i]);
            goto failed;
        }

        provend_warn("KV log: segment %" PRIu64 " is an unfinished "
                     "snapshot (a crash while writing it): set aside",
                     seqnos[i]);
        provend_kv_set_aside(kv, seqnos[i]);
        n--;
    }

    if (base == (size_t) -1) {
        if (n > 0) {
            proven_errf(err, errlen,
                        "KV log: no base segment at or before %" PRIu64,
                        seqnos[0]);
            goto failed;
        }
        free(seqnos);
        return PROVEN_OK;        /* a new store */
    }

    kv->base_seqno = seqnos[base];

    for (i = base + 1; i < n; i++) {
        if (seqnos[i] != seqnos[i - 1] + 1) {
            proven_errf(err, errlen, "KV log: segment %" PRIu64 " is missing",
                        seqnos[i - 1] + 1);
            goto failed;
        }

        if (provend_kv_load_segment(kv, seqnos[i], &is_base, &complete,
                                    err, errlen) != PROVEN_OK)
        {
            goto failed;
        }
    }

    kv->seqno = seqnos[n - 1];

    for (i = 0; i < base; i++) {
        provend_kv_unlink(kv, seqnos[i]);
    }

    free(seqnos);
    return PROVEN_OK;

failed:

    free(seqnos);
    return PROVEN_ERR;
}


/* ---- the log thread ------------------------------------------------------ */

/* Seals the batch's records, writes them, syncs: PROVEN_OK or an error. */
static int
provend_kv_log_batch(provend_kv_t *kv, provend_storage_req_t *batch,
    int *unknown, char *err, size_t errlen)
{
    provend_kv_entry_t     *e;
    provend_storage_req_t  *req;

    if (provend_kv_segment_open(kv, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    kv->buf_len = 0;

    for (req = batch; req != NULL; req = req->next) {
        e = req->priv;
        if (provend_kv_record(kv, req->op == PROVEND_OP_KV_SET
                                  ? PROVEND_KV_OP_SET : PROVEND_KV_OP_DELETE,
                              req->revision, provend_kv_ad(e), e->ad_len,
                              req->value, req->value_len) != PROVEN_OK)
        {
            proven_errf(err, errlen, "cannot seal a KV log record");
            goto failed;
        }
    }

    /* Recovery replays whole batches only: up to their last COMMIT. */
    if (provend_kv_record(kv, PROVEND_KV_OP_COMMIT, 0, NULL, 0, NULL, 0)
        != PROVEN_OK)
    {
        proven_errf(err, errlen, "cannot seal a KV log record");
        goto failed;
    }

    if (provend_kv_write_all(kv->fd, kv->buf, kv->buf_len) != PROVEN_OK
        || (!kv->replica && fdatasync(kv->fd) != 0))
    {
        proven_errf(err, errlen, "KV log write failed: %s", strerror(errno));
        goto failed;
    }

    kv->offset += (off_t) kv->buf_len;
    kv->log_bytes += kv->buf_len;
    kv->buf_len = 0;
    return PROVEN_OK;

failed:

    /*
     * Nothing of this batch may come back after a restart: cut the file
     * back to its durable end.  The next batch goes to a new segment, so
     * these counters are never used again under this key.
     */
    if (ftruncate(kv->fd, kv->offset) != 0 || fdatasync(kv->fd) != 0) {
        provend_error("KV log: cannot cut a failed write back: %s",
                      strerror(errno));
        *unknown = 1;
        snprintf(err + strlen(err), errlen - strlen(err),
                 "; whether it was stored is known after a restart");
    }
    provend_kv_segment_close(kv);
    kv->buf_len = 0;
    return PROVEN_ERR;
}


/* Under the lock: the batch is durable. */
static void
provend_kv_apply(provend_kv_t *kv, provend_storage_req_t *req)
{
    provend_kv_entry_t  *e;

    e = req->priv;
    req->priv = NULL;

    if (req->op == PROVEND_OP_KV_SET) {
        /* the pending value was counted in memory already */
        kv->memory -= req->value_len;
        provend_kv_commit_value(kv, e, req->revision, req->value,
                                req->value_len);
        req->value = NULL;
        req->value_len = 0;
    } else {
        provend_kv_commit_value(kv, e, 0, NULL, 0);
    }

    if (--e->pending == 0 && e->revision == 0) {
        provend_kv_remove(kv, e);
    }
}


/* Under the lock: the write failed, or one it was computed on did. */
static void
provend_kv_undo(provend_kv_t *kv, provend_storage_req_t *req)
{
    provend_kv_entry_t  *e;

    e = req->priv;
    req->priv = NULL;

    if (req->op == PROVEND_OP_KV_SET) {
        kv->memory -= req->value_len;
    }

    e->latest = e->revision;
    if (--e->pending == 0 && e->revision == 0) {
        provend_kv_remove(kv, e);
    }
}


/* kv.set answers with req->revision, kv.delete with req->existed. */
static void
provend_kv_answer_write(provend_storage_req_t *req)
{
    req->done(req);
}


static void provend_kv_compact(provend_kv_t *kv);


static void *
provend_kv_thread(void *arg)
{
    int                     failed, unknown;
    char                    err[PROVEN_ERR_LEN];
    provend_kv_t           *kv;
    provend_storage_req_t  *batch, *req, *next, *last;

    kv = arg;

    for ( ;; ) {
        pthread_mutex_lock(&kv->lock);
        while (kv->head == NULL && !kv->stopping) {
            pthread_cond_wait(&kv->cond, &kv->lock);
        }
        batch = kv->head;
        kv->head = NULL;
        kv->tail = NULL;
        pthread_mutex_unlock(&kv->lock);

        if (batch == NULL) {
            break;      /* stopping, everything answered */
        }

        err[0] = '\0';
        unknown = 0;
        failed = provend_kv_log_batch(kv, batch, &unknown, err, sizeof(err))
                 != PROVEN_OK;

        pthread_mutex_lock(&kv->lock);

        /*
         * Records of a failed batch that could not be cut back may be
         * replayed by the next start: no write may be computed on a state
         * that does not hold them, so none is taken until then.
         */
        if (unknown) {
            kv->broken = 1;
        }

        if (failed) {
            /* Writes queued since were computed on this batch: fail them. */
            for (last = batch; last->next != NULL; last = last->next) {
                /* void */
            }
            last->next = kv->head;
            kv->head = NULL;
            kv->tail = NULL;
        }

        for (req = batch; req != NULL; req = req->next) {
            if (failed) {
                provend_kv_undo(kv, req);
                provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR, "%s",
                                         err);
            } else {
                provend_kv_apply(kv, req);
            }
        }

        pthread_mutex_unlock(&kv->lock);

        if (failed) {
            provend_error("storage: %s", err);
        }

        for (req = batch; req != NULL; req = next) {
            next = req->next;
            req->next = NULL;
            provend_kv_answer_write(req);
        }

        if (!failed) {
            provend_kv_compact(kv);
        }
    }

    /* This thread's OpenSSL state (DRBG, error queue). */
    OPENSSL_thread_stop();
    return NULL;
}


/*
 * When the log holds more than twice the live data (and 64 MiB at least),
 * or too many segments: a new base with a snapshot of every live key,
 * synced, then the older segments removed.  Runs on the log thread, so no
 * write commits meanwhile; readers and submitters wait only for the short
 * locked steps that collect keys.
 */
static void
provend_kv_compact(provend_kv_t *kv)
{
    int                  fd, i, n;
    char                 err[PROVEN_ERR_LEN];
    uint64_t             seqno, old_base, s;
    provend_kv_entry_t  *e, *step[PROVEND_KV_SNAPSHOT_STEP];

    if (!((kv->log_bytes > PROVEND_KV_COMPACT_MIN
           && kv->log_bytes > 2 * kv->live_bytes)
          || kv->seqno - kv->base_seqno >= PROVEND_KV_SEGMENTS_MAX)
        || (kv->log_bytes < kv->compact_hold_bytes
            && kv->seqno < kv->compact_hold_seqno))
    {
        return;
    }

    seqno = kv->seqno + 1;
    old_base = kv->base_seqno;

    fd = provend_kv_segment_create(kv, seqno, 1, err, sizeof(err));
    if (fd < 0) {
        provend_warn("storage: KV compaction: %s", err);
        /* the open segment keeps its key in kv->ctx: nothing changed */
        return;
    }

    kv->buf_len = 0;

    /* The header durable first: see PROVEND_KV_FIRST_LEN. */
    if (fdatasync(fd) != 0) {
        goto failed;
    }

    e = kv->list;

    for ( ;; ) {
        pthread_mutex_lock(&kv->lock);
        for (n = 0; n < PROVEND_KV_SNAPSHOT_STEP && e->forward[0]; ) {
            e = e->forward[0];
            if (e->revision != 0) {
                step[n++] = e;
            }
        }
        pthread_mutex_unlock(&kv->lock);

        if (n == 0) {
            break;
        }

        /* Committed values change only on this thread. */
        for (i = 0; i < n; i++) {
            if (provend_kv_record(kv, PROVEND_KV_OP_SET, step[i]->revision,
                                  provend_kv_ad(step[i]), step[i]->ad_len,
                                  step[i]->value, step[i]->value_len)
                != PROVEN_OK)
            {
                goto failed;
            }
        }

        if (kv->buf_len >= 4 * 1024 * 1024) {
            if (provend_kv_write_all(fd, kv->buf, kv->buf_len)
                != PROVEN_OK)
            {
                goto failed;
            }
            kv->buf_len = 0;
        }
    }

    if (provend_kv_record(kv, PROVEND_KV_OP_BASE_END, 0, NULL, 0, NULL, 0)
        != PROVEN_OK
        || provend_kv_write_all(fd, kv->buf, kv->buf_len) != PROVEN_OK
        || fdatasync(fd) != 0 || provend_kv_sync_dir(kv) != PROVEN_OK)
    {
        goto failed;
    }

    provend_kv_segment_close(kv);
    kv->fd = fd;
    kv->offset = lseek(fd, 0, SEEK_END);
    kv->seqno = seqno;
    kv->base_seqno = seqno;
    kv->log_bytes = (uint64_t) kv->offset;
    kv->buf_len = 0;
    kv->compact_hold_bytes = 0;
    kv->compact_hold_seqno = 0;

    for (s = old_base; s < seqno; s++) {
        provend_kv_unlink(kv, s);
    }
    (void) provend_kv_sync_dir(kv);

    provend_info("storage: KV log compacted to %" PRIu64 " bytes",
                 kv->log_bytes);
    return;

failed:

    provend_warn("storage: KV compaction failed: %s", strerror(errno));

    /* Not again at every batch: once the log has grown a good deal. */
    kv->compact_hold_bytes = kv->log_bytes + PROVEND_KV_COMPACT_MIN;
    kv->compact_hold_seqno = kv->seqno + 16;
    close(fd);
    provend_kv_unlink(kv, seqno);
    kv->buf_len = 0;

    /*
     * kv->ctx now holds the key of the dropped segment: the open one can
     * take no more records, so the next batch starts a new segment.
     */
    provend_kv_segment_close(kv);
}


/* ---- requests ------------------------------------------------------------ */

static const char *
provend_kv_type_name(provend_kv_type_t type)
{
    switch (type) {
    case PROVEND_KV_STRING:  return "kv-string";
    case PROVEND_KV_KEY:     return "kv-key";
    default:                 return "kv-bytes";
    }
}


/* The checks of every request, then ad for its scope, store and key. */
static int
provend_kv_check(provend_kv_t *kv, provend_storage_req_t *req, uint8_t *ad,
    size_t *ad_len, size_t *canon_len)
{
    char    canon[PROVEND_SCOPE_CANON_MAX];
    size_t  key_len;

    if (!provend_name_valid(req->name, strlen(req->name))) {
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "store and db names are 1..%d of "
                                 "[a-z0-9_-]", PROVEND_NAME_MAX);
        return PROVEN_ERR;
    }

    switch (req->op) {

    case PROVEND_OP_KV_SET:
        if (req->type == PROVEND_KV_KEY) {
            if (req->value != NULL && req->value_len != PROVEND_ED25519_LEN)
            {
                provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                         "a key store value is a 32-byte "
                                         "Ed25519 seed (or absent)");
                return PROVEN_ERR;
            }
        } else if (req->value == NULL) {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "\"value\" is missing");
            return PROVEN_ERR;
        } else if (req->value_len > kv->max_value) {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "value longer than %zu bytes",
                                     kv->max_value);
            return PROVEN_ERR;
        }
        /* fall through */

    case PROVEND_OP_KV_GET:
    case PROVEND_OP_KV_DELETE:
    case PROVEND_OP_KV_SIGN:
        if (req->key == NULL || req->key_len == 0
            || req->key_len > PROVEND_KV_KEY_MAX)
        {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "a key is 1..%d bytes",
                                     PROVEND_KV_KEY_MAX);
            return PROVEN_ERR;
        }
        if (req->op == PROVEND_OP_KV_SIGN
            && req->message_len > PROVEND_KV_SIGN_MAX)
        {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "message longer than %d bytes",
                                     PROVEND_KV_SIGN_MAX);
            return PROVEN_ERR;
        }
        break;

    case PROVEND_OP_KV_KEYS:
        if (req->limit > PROVEND_KV_LIMIT_MAX
            || req->prefix_len > PROVEND_KV_KEY_MAX
            || (req->cursor && strlen(req->cursor) > 2 * PROVEND_KV_KEY_MAX))
        {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "limit is at most %d, prefix at most "
                                     "%d bytes", PROVEND_KV_LIMIT_MAX,
                                     PROVEND_KV_KEY_MAX);
            return PROVEN_ERR;
        }
        break;

    default:
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "not a KV operation");
        return PROVEN_ERR;
    }

    if (req->op == PROVEND_OP_KV_SIGN) {
        req->type = PROVEND_KV_KEY;
    }

    if (provend_scope_canonical(&req->scope, provend_kv_type_name(req->type),
                                req->name, canon, sizeof(canon), canon_len)
        != PROVEN_OK)
    {
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "bad scope or store name");
        return PROVEN_ERR;
    }

    key_len = req->op == PROVEND_OP_KV_KEYS ? 0 : req->key_len;

    proven_put_be32(ad, (uint32_t) *canon_len);
    memcpy(ad + 4, canon, *canon_len);
    proven_put_be32(ad + 4 + *canon_len, (uint32_t) key_len);
    if (key_len) {
        memcpy(ad + 8 + *canon_len, req->key, key_len);
    }
    *ad_len = 8 + *canon_len + key_len;
    return PROVEN_OK;
}


static EVP_PKEY *
provend_kv_ed25519(const uint8_t *seed, size_t len)
{
    if (len != PROVEND_ED25519_LEN) {
        return NULL;
    }

    return EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, len);
}


/* {"value"|"public_key": ..., "revision"}; a missing key: value null. */
static void
provend_kv_get(provend_kv_t *kv, provend_storage_req_t *req,
    const uint8_t *ad, size_t ad_len)
{
    int                  have_seed;
    size_t               publen;
    uint8_t              seed[PROVEND_ED25519_LEN], pub[PROVEND_ED25519_LEN];
    uint64_t             hash, revision;
    EVP_PKEY            *pkey;
    cbor_item_t         *map, *value, *rev;
    provend_kv_entry_t  *e;

    hash = provend_kv_hash(kv->hash_key, ad, ad_len);
    value = NULL;
    revision = 0;
    have_seed = 0;

    pthread_mutex_lock(&kv->lock);
    e = provend_kv_find(kv, ad, ad_len, hash);
    if (e != NULL && e->revision != 0) {
        revision = e->revision;
        if (req->type == PROVEND_KV_STRING) {
            value = cbor_build_stringn((const char *) e->value,
                                       e->value_len);
        } else if (req->type == PROVEND_KV_BYTES) {
            value = cbor_build_bytestring(e->value, e->value_len);
        } else if (e->value_len == sizeof(seed)) {
            memcpy(seed, e->value, sizeof(seed));
            have_seed = 1;
        }
    }
    pthread_mutex_unlock(&kv->lock);

    if (revision == 0) {
        value = cbor_new_null();

    } else if (req->type == PROVEND_KV_KEY) {
        pkey = have_seed ? provend_kv_ed25519(seed, sizeof(seed)) : NULL;
        OPENSSL_cleanse(seed, sizeof(seed));
        publen = sizeof(pub);
        if (pkey == NULL
            || EVP_PKEY_get_raw_public_key(pkey, pub, &publen) != 1)
        {
            EVP_PKEY_free(pkey);
            provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                     "stored key is unusable");
            req->done(req);
            return;
        }
        EVP_PKEY_free(pkey);
        value = cbor_build_bytestring(pub, publen);
    }

    map = cbor_new_definite_map(2);
    rev = revision <= UINT32_MAX ? cbor_build_uint32((uint32_t) revision)
                                 : cbor_build_uint64(revision);

    if (map == NULL || value == NULL || rev == NULL
        || proven_cbor_map_put(map, req->type == PROVEND_KV_KEY
                                    ? "public_key" : "value", value)
           != PROVEN_OK)
    {
        goto nomem;
    }
    value = NULL;

    if (proven_cbor_map_put(map, "revision", rev) != PROVEN_OK) {
        rev = NULL;
        goto nomem;
    }

    req->result = map;
    req->done(req);
    return;

nomem:

    if (value != NULL) {
        cbor_decref(&value);
    }
    if (rev != NULL) {
        cbor_decref(&rev);
    }
    if (map != NULL) {
        cbor_decref(&map);
    }
    provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "out of memory");
    req->done(req);
}


static void
provend_kv_sign(provend_kv_t *kv, provend_storage_req_t *req,
    const uint8_t *ad, size_t ad_len)
{
    int                  found;
    size_t               siglen;
    uint8_t              seed[PROVEND_ED25519_LEN], sig[64];
    uint64_t             hash;
    EVP_PKEY            *pkey;
    EVP_MD_CTX          *ctx;
    cbor_item_t         *map;
    provend_kv_entry_t  *e;

    hash = provend_kv_hash(kv->hash_key, ad, ad_len);

    pthread_mutex_lock(&kv->lock);
    e = provend_kv_find(kv, ad, ad_len, hash);
    found = e != NULL && e->revision != 0 && e->value_len == sizeof(seed);
    if (found) {
        memcpy(seed, e->value, sizeof(seed));
    }
    pthread_mutex_unlock(&kv->lock);

    if (!found) {
        provend_storage_req_fail(req, PROVEND_ST_NOT_FOUND,
                                 "no such key in the key store");
        req->done(req);
        return;
    }

    pkey = provend_kv_ed25519(seed, sizeof(seed));
    OPENSSL_cleanse(seed, sizeof(seed));
    ctx = EVP_MD_CTX_new();
    siglen = sizeof(sig);

    if (pkey == NULL || ctx == NULL
        || EVP_DigestSignInit(ctx, NULL, NULL, NULL, pkey) != 1
        || EVP_DigestSign(ctx, sig, &siglen, req->message, req->message_len)
           != 1)
    {
        provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "signing failed");
        goto done;
    }

    map = cbor_new_definite_map(1);
    if (map == NULL
        || proven_cbor_map_put(map, "signature",
                               cbor_build_bytestring(sig, siglen))
           != PROVEN_OK)
    {
        if (map != NULL) {
            cbor_decref(&map);
        }
        provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "out of memory");
        goto done;
    }

    req->result = map;

done:

    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    req->done(req);
}


static int
provend_kv_utf8(const uint8_t *s, size_t len)
{
    size_t    i, n, k;
    uint32_t  cp;

    for (i = 0; i < len; i += n) {
        if (s[i] < 0x80) {
            n = 1;
            continue;
        }

        if ((s[i] & 0xe0) == 0xc0) {
            n = 2;
            cp = s[i] & 0x1f;
        } else if ((s[i] & 0xf0) == 0xe0) {
            n = 3;
            cp = s[i] & 0x0f;
        } else if ((s[i] & 0xf8) == 0xf0) {
            n = 4;
            cp = s[i] & 0x07;
        } else {
            return 0;
        }

        if (i + n > len) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }

        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800)
            || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))
            || (cp >= 0xd800 && cp <= 0xdfff))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * Keys in byte order from the cursor (hex of the last key returned) or
 * the prefix.  Keys that are UTF-8 come back as text, others as bytes:
 * a text key and the byte string of its UTF-8 are the same key.
 */
static void
provend_kv_keys(provend_kv_t *kv, provend_storage_req_t *req,
    const uint8_t *ad, size_t canon_len)
{
    char                *hex;
    size_t               n, from_len, last_len;
    uint8_t              from[PROVEND_KV_KEY_MAX], last[PROVEND_KV_KEY_MAX];
    uint64_t             limit;
    const uint8_t       *canon, *k;
    cbor_item_t         *map, *keys, *item, *cursor;
    provend_kv_entry_t  *e;

    canon = ad + 4;
    limit = req->limit ? req->limit : PROVEND_KV_LIMIT_DEFAULT;
    hex = NULL;
    cursor = NULL;
    last_len = 0;

    if (req->cursor != NULL) {
        if (proven_hex_decode(req->cursor, strlen(req->cursor), from,
                              sizeof(from), &from_len) != PROVEN_OK)
        {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "bad cursor");
            req->done(req);
            return;
        }
    } else {
        from_len = req->prefix_len;
        if (from_len) {
            memcpy(from, req->prefix, from_len);
        }
    }

    map = cbor_new_definite_map(2);
    keys = cbor_new_definite_array(limit);
    if (map == NULL || keys == NULL) {
        goto nomem_unlocked;
    }

    n = 0;

    pthread_mutex_lock(&kv->lock);

    /*
     * The store's keys from the prefix (or past the cursor) on: those with
     * the prefix follow one another, so the first without it ends them.
     */
    e = provend_kv_seek(kv, canon, canon_len, from, from_len, NULL);

    for ( ; e != NULL; e = e->forward[0]) {
        if (e->canon_len != canon_len
            || memcmp(provend_kv_canon(e), canon, canon_len) != 0)
        {
            break;
        }

        k = provend_kv_key(e);

        if (e->key_len < req->prefix_len
            || (req->prefix_len
                && memcmp(k, req->prefix, req->prefix_len) != 0))
        {
            break;
        }

        if (e->revision == 0
            || (req->cursor != NULL && e->key_len == from_len
                && memcmp(k, from, from_len) == 0))
        {
            continue;   /* not durable yet, or returned already */
        }

        if (n == limit) {
            /* One more exists: the cursor is the last key returned. */
            hex = malloc(2 * last_len + 1);
            if (hex == NULL) {
                goto nomem;
            }
            proven_hex_encode(last, last_len, hex);
            cursor = cbor_build_string(hex);
            if (cursor == NULL) {
                goto nomem;
            }
            break;
        }

        item = provend_kv_utf8(k, e->key_len)
               ? cbor_build_stringn((const char *) k, e->key_len)
               : cbor_build_bytestring(k, e->key_len);
        if (item == NULL || !cbor_array_push(keys, item)) {
            if (item != NULL) {
                cbor_decref(&item);
            }
            goto nomem;
        }
        cbor_decref(&item);

        memcpy(last, k, e->key_len);
        last_len = e->key_len;
        n++;
    }

    pthread_mutex_unlock(&kv->lock);

    if (cursor == NULL) {
        cursor = cbor_new_null();
    }

    if (cursor == NULL || proven_cbor_map_put(map, "keys", keys) != PROVEN_OK)
    {
        goto nomem_unlocked;
    }
    keys = NULL;

    if (proven_cbor_map_put(map, "cursor", cursor) != PROVEN_OK) {
        cursor = NULL;
        goto nomem_unlocked;
    }

    free(hex);
    req->result = map;
    req->done(req);
    return;

nomem:

    pthread_mutex_unlock(&kv->lock);

nomem_unlocked:

    if (cursor != NULL) {
        cbor_decref(&cursor);
    }
    if (keys != NULL) {
        cbor_decref(&keys);
    }
    if (map != NULL) {
        cbor_decref(&map);
    }
    free(hex);
    provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "out of memory");
    req->done(req);
}


/* Queues a set or delete for the log thread; the answer comes from it. */
static void
provend_kv_write(provend_kv_t *kv, provend_storage_req_t *req,
    const uint8_t *ad, size_t ad_len)
{
    size_t               cost;
    uint64_t             hash, latest;
    provend_kv_entry_t  *e;

    hash = provend_kv_hash(kv->hash_key, ad, ad_len);

    if (req->op == PROVEND_OP_KV_SET && req->value == NULL) {
        /* A key store makes its own key. */
        req->value = malloc(PROVEND_ED25519_LEN);
        if (req->value == NULL
            || RAND_bytes(req->value, PROVEND_ED25519_LEN) != 1)
        {
            provend_storage_req_fail(req, PROVEND_ST_INTERNAL,
                                     "no random bytes for a key");
            req->done(req);
            return;
        }
        req->value_len = PROVEND_ED25519_LEN;
    }

    pthread_mutex_lock(&kv->lock);

    if (kv->stopping || kv->broken) {
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR, "%s",
                                 kv->stopping
                                 ? "storage is closing"
                                 : "KV writes are refused until provend "
                                   "restarts: a failed write could not be "
                                   "undone in the log");
        pthread_mutex_unlock(&kv->lock);
        req->done(req);
        return;
    }

    e = provend_kv_find(kv, ad, ad_len, hash);
    latest = e != NULL ? e->latest : 0;

    if (req->has_if_revision && req->if_revision != latest) {
        pthread_mutex_unlock(&kv->lock);
        provend_storage_req_fail(req, PROVEND_ST_REVISION_MISMATCH,
                                 "revision is %llu, not %llu",
                                 (unsigned long long) latest,
                                 (unsigned long long) req->if_revision);
        req->done(req);
        return;
    }

    if (req->op == PROVEND_OP_KV_DELETE) {
        req->existed = latest != 0;
        if (e == NULL || (latest == 0 && e->pending == 0)) {
            pthread_mutex_unlock(&kv->lock);
            provend_kv_answer_write(req);    /* nothing to delete */
            return;
        }
        e->latest = 0;
        req->revision = 0;

    } else {
        cost = req->value_len
               + (e == NULL ? provend_kv_entry_cost(ad_len,
                                                    PROVEND_KV_LEVELS) : 0);
        if (kv->memory + cost > kv->memory_max) {
            pthread_mutex_unlock(&kv->lock);
            provend_storage_req_fail(req, PROVEND_ST_TOO_LARGE,
                                     "KV storage is full (%zu bytes in "
                                     "memory, limit %zu)", kv->memory,
                                     kv->memory_max);
            req->done(req);
            return;
        }

        if (e == NULL) {
            e = provend_kv_insert(kv, ad, ad_len, hash);
            if (e == NULL) {
                pthread_mutex_unlock(&kv->lock);
                provend_storage_req_fail(req, PROVEND_ST_INTERNAL,
                                         "out of memory");
                req->done(req);
                return;
            }
        }

        kv->memory += req->value_len;
        e->latest = latest + 1;
        req->revision = e->latest;
    }

    e->pending++;
    req->priv = e;
    req->next = NULL;

    if (kv->tail != NULL) {
        kv->tail->next = req;
    } else {
        kv->head = req;
        pthread_cond_signal(&kv->cond);
    }
    kv->tail = req;

    pthread_mutex_unlock(&kv->lock);
}


void
provend_kv_submit(provend_kv_t *kv, provend_storage_req_t *req)
{
    uint8_t  ad[PROVEND_KV_AD_MAX];
    size_t   ad_len, canon_len;

    req->status = PROVEND_ST_OK;
    req->error[0] = '\0';
    req->next = NULL;

    if (provend_kv_check(kv, req, ad, &ad_len, &canon_len) != PROVEN_OK) {
        req->done(req);
        return;
    }

    switch (req->op) {
    case PROVEND_OP_KV_GET:
        provend_kv_get(kv, req, ad, ad_len);
        break;
    case PROVEND_OP_KV_SIGN:
        provend_kv_sign(kv, req, ad, ad_len);
        break;
    case PROVEND_OP_KV_KEYS:
        provend_kv_keys(kv, req, ad, canon_len);
        break;
    default:
        provend_kv_write(kv, req, ad, ad_len);
        break;
    }
}


int
provend_kv_peek(provend_kv_t *kv, const provend_scope_t *scope,
    const char *store, provend_kv_type_t type, const uint8_t *key,
    size_t key_len, provend_kv_peek_pt fn, void *data)
{
    char                 canon[PROVEND_SCOPE_CANON_MAX];
    size_t               canon_len, ad_len;
    uint8_t              ad[PROVEND_KV_AD_MAX];
    uint64_t             hash;
    provend_kv_entry_t  *e;

    /* A key store answers with a public key: the general path does it. */
    if (type == PROVEND_KV_KEY || key_len == 0
        || key_len > PROVEND_KV_KEY_MAX
        || provend_scope_canonical(scope, provend_kv_type_name(type), store,
                                   canon, sizeof(canon), &canon_len)
           != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    proven_put_be32(ad, (uint32_t) canon_len);
    memcpy(ad + 4, canon, canon_len);
    proven_put_be32(ad + 4 + canon_len, (uint32_t) key_len);
    memcpy(ad + 8 + canon_len, key, key_len);
    ad_len = 8 + canon_len + key_len;

    hash = provend_kv_hash(kv->hash_key, ad, ad_len);

    pthread_mutex_lock(&kv->lock);
    e = provend_kv_find(kv, ad, ad_len, hash);
    if (e != NULL && e->revision != 0) {
        fn(data, e->value, e->value_len, e->revision);
    } else {
        fn(data, NULL, 0, 0);
    }
    pthread_mutex_unlock(&kv->lock);

    return PROVEN_OK;
}


/* ---- open and close ------------------------------------------------------ */

static void
provend_kv_free(provend_kv_t *kv)
{
    if (kv->list != NULL) {
        provend_kv_clear(kv);
        free(kv->list);
    }
    provend_kv_segment_close(kv);
    EVP_CIPHER_CTX_free(kv->ctx);
    EVP_CIPHER_CTX_free(kv->value_ctx);
    free(kv->buckets);
    free(kv->buf);
    free(kv->dir);
    OPENSSL_cleanse(kv->master, sizeof(kv->master));
    OPENSSL_cleanse(kv->open_key, sizeof(kv->open_key));
    OPENSSL_cleanse(kv->value_salt, sizeof(kv->value_salt));
    OPENSSL_cleanse(kv->hash_key, sizeof(kv->hash_key));
    pthread_cond_destroy(&kv->cond);
    pthread_mutex_destroy(&kv->lock);
    free(kv);
}


provend_kv_t *
provend_kv_open(const char *storage_dir, const uint8_t master_key[32],
    size_t max_value, size_t memory_max, char *err, size_t errlen)
{
    provend_kv_t  *kv;

    kv = calloc(1, sizeof(*kv));
    if (kv == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }

    pthread_mutex_init(&kv->lock, NULL);
    pthread_cond_init(&kv->cond, NULL);
    kv->fd = -1;
    kv->level = 1;
    kv->max_value = max_value ? max_value : PROVEND_KV_VALUE_DEFAULT;
    kv->memory_max = memory_max ? memory_max : PROVEND_KV_MEMORY_DEFAULT;
    kv->nbuckets = PROVEND_KV_BUCKETS_MIN;
    memcpy(kv->master, master_key, PROVEND_KEY_LEN);

    if (kv->max_value > PROVEND_KV_VALUE_LIMIT) {
        proven_errf(err, errlen, "KV values are at most %d bytes",
                    PROVEND_KV_VALUE_LIMIT);
        goto failed;
    }

    kv->buckets = calloc(kv->nbuckets, sizeof(*kv->buckets));
    kv->list = calloc(1, sizeof(*kv->list)
                         + PROVEND_KV_LEVELS * sizeof(kv->list->forward[0]));
    if (kv->buckets == NULL || kv->list == NULL
        || asprintf(&kv->dir, "%s/kv", storage_dir) == -1)
    {
        kv->dir = NULL;
        proven_errf(err, errlen, "out of memory");
        goto failed;
    }
    kv->list->level = PROVEND_KV_LEVELS;

    if (RAND_bytes((uint8_t *) kv->hash_key, sizeof(kv->hash_key)) != 1
        || RAND_bytes((uint8_t *) &kv->rng, sizeof(kv->rng)) != 1)
    {
        proven_errf(err, errlen, "no random bytes");
        goto failed;
    }
    kv->rng |= 1;

    kv->value_ctx = EVP_CIPHER_CTX_new();
    if (kv->value_ctx == NULL
        || EVP_EncryptInit_ex(kv->value_ctx, EVP_aes_256_gcm(), NULL, NULL,
                              NULL) != 1)
    {
        proven_errf(err, errlen, "cannot set up the KV value cipher");
        goto failed;
    }

    if (provend_mkdirs(kv->dir, 0700, err, errlen) != PROVEN_OK
        || provend_kv_recover(kv, err, errlen) != PROVEN_OK)
    {
        goto failed;
    }

    if (pthread_create(&kv->thread, NULL, provend_kv_thread, kv) != 0) {
        proven_errf(err, errlen, "cannot start the KV log thread");
        goto failed;
    }
    kv->thread_started = 1;

    provend_info("storage: %zu KV keys loaded (%" PRIu64 " log bytes)",
                 kv->nentries, kv->log_bytes);
    return kv;

failed:

    provend_kv_free(kv);
    return NULL;
}


void
provend_kv_close(provend_kv_t *kv)
{
    if (kv == NULL) {
        return;
    }

    if (kv->thread_started) {
        pthread_mutex_lock(&kv->lock);
        kv->stopping = 1;
        pthread_cond_signal(&kv->cond);
        pthread_mutex_unlock(&kv->lock);
        pthread_join(kv->thread, NULL);
    }

    provend_kv_free(kv);
}


void
provend_kv_set_replica(provend_kv_t *kv)
{
    kv->replica = 1;
}
