/* Internal to daemon/storage/: shared by its files, included by no other
 * subsystem. */

#ifndef PROVEND_KV_INT_H
#define PROVEND_KV_INT_H

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

#include "core/keys.h"
#include "core/log.h"
#include "storage_kv.h"
#include "core/util.h"


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
    int                     paused;          /* a backup: take no batch */
    int                     busy;            /* a batch (or compaction) */
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


uint64_t provend_kv_hash(const uint64_t key[2], const uint8_t *p, size_t len);

size_t provend_kv_entry_cost(size_t ad_len, int level);

provend_kv_entry_t *provend_kv_find(provend_kv_t *kv, const uint8_t *ad,
    size_t ad_len, uint64_t hash);

provend_kv_entry_t *provend_kv_seek(provend_kv_t *kv, const uint8_t *canon,
    size_t canon_len, const uint8_t *key, size_t key_len,
    provend_kv_entry_t **update);

provend_kv_entry_t *provend_kv_insert(provend_kv_t *kv, const uint8_t *ad,
    size_t ad_len, uint64_t hash);

void provend_kv_remove(provend_kv_t *kv, provend_kv_entry_t *e);

void provend_kv_commit_value(provend_kv_t *kv, provend_kv_entry_t *e,
    uint64_t revision, uint8_t *value, size_t value_len);

void provend_kv_nonce(uint64_t counter, uint8_t nonce[PROVEND_NONCE_LEN],
    uint8_t *aad_tail);

int provend_kv_value_key(const provend_kv_t *kv,
    const uint8_t salt[PROVEND_KV_VALUE_SALT], uint8_t key[PROVEND_KEY_LEN]);

int provend_kv_record(provend_kv_t *kv, int op, uint64_t revision,
    const uint8_t *ad, size_t ad_len, const uint8_t *value, size_t value_len);

EVP_CIPHER_CTX *provend_kv_segment_ctx(provend_kv_t *kv, const uint8_t *header,
    int encrypt);

int provend_kv_path(const provend_kv_t *kv, uint64_t seqno, char *path,
    size_t len);

int provend_kv_sync_dir(const provend_kv_t *kv);

int provend_kv_write_all(int fd, const uint8_t *p, size_t len);

int provend_kv_segment_create(provend_kv_t *kv, uint64_t seqno, int base,
    char *err, size_t errlen);

void provend_kv_segment_close(provend_kv_t *kv);

void provend_kv_clear(provend_kv_t *kv);

void provend_kv_unlink(provend_kv_t *kv, uint64_t seqno);

int provend_kv_recover(provend_kv_t *kv, char *err, size_t errlen);

void provend_kv_answer_write(provend_storage_req_t *req);

void *provend_kv_thread(void *arg);

void provend_kv_compact(provend_kv_t *kv);

#endif
