/* Internal to daemon/cluster/: shared by its files, included by no other
 * subsystem. */

#ifndef PROVEND_LOG_INT_H
#define PROVEND_LOG_INT_H

/*
 * The replicated storage backend: a log on NATS JetStream in front of the
 * embedded backend.
 *
 * Every write (kv.set, kv.delete, sql.execute, sql.migrate) is sealed with
 * a key derived from the cluster key and published to the stream
 * PROVEN_LOG (replicas min(3, nodes), file storage, kept whole).  Every
 * node reads the stream in order with an ordered consumer and applies each
 * entry to its own embedded backend, so that all nodes hold the same data:
 * the same if_revision checks, per-key revisions, SQL constraints and
 * errors, in the same order.  The node that published a write answers it
 * with what its own copy made of the entry: a write is answered once the
 * stream has it on a majority of the nodes and this node has applied it.
 * Reads are this node's copy (reads right after a write on the same node
 * see it).
 *
 * What a replica would decide differently is decided once, by the writer,
 * and carried in the entry: the key a key store makes, SQL's 'now' (the
 * writer's clock); random() is refused and a statement is bounded in
 * SQLite steps, not time (storage_sqlite.c's "deterministic").
 *
 * The copy lives under DATA/cluster and is made again from the stream at
 * each start (the stream, on three nodes, is what is durable); until this
 * node has applied what the stream held when it started, reads answer
 * "catching up".  Publishes carry a message id, so a retried publish is
 * stored once.
 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "cluster.h"
#include "core/keys.h"
#include "core/log.h"
#include "core/util.h"


#define PROVEND_LOG_STREAM       "PROVEN_LOG"
#define PROVEND_LOG_SUBJECT      "proven.log"
#define PROVEND_TICK_STREAM      "PROVEN_TICKS"
#define PROVEND_TICK_SUBJECT     "proven.tick"
#define PROVEND_LOG_VERSION      1
#define PROVEND_LOG_AD           "proven-log-v2"  /* then the entry's id */
#define PROVEND_LOG_ENTRY_MAX    (8 * 1024 * 1024)   /* nats max_payload */
#define PROVEND_LOG_ID_LEN       16
#define PROVEND_WRITE_WAIT_MS    15000    /* a write's whole answer */
#define PROVEND_PUBLISH_WAIT_MS  5000     /* one publish's ack */
#define PROVEND_RETRY_MS         250      /* a publish refused: again */
#define PROVEND_APPLYING_MAX     256      /* entries handed to the copy */
#define PROVEND_APPLYING_BYTES   (64 * 1024 * 1024)
#define PROVEND_WAITERS_BUCKETS  1024
#define PROVEND_AFTER_WAIT_MS    5000     /* a read waiting for "after" */
#define PROVEND_PARKED_MAX       4096
#define PROVEND_CATCHUP_WAIT_MS  20000    /* a request before the copy is */
#define PROVEND_CATCHUP_BYTES    (16 * 1024 * 1024)  /* held, in all */
#define PROVEND_CATCHUP_BATCH    256      /* released per sweep */


typedef struct provend_cwait_s  provend_cwait_t;
typedef struct provend_writer_s provend_writer_t;

/*
 * Each writer's entries seen in the log (its id prefix): the highest
 * counter and which of the PROVEND_REPLAY_WINDOW below it came, so that
 * an entry published again (by anyone on NATS, past JetStream's own
 * duplicate window) is applied once; out of order within the window is
 * fine (a publish sent again after a later one).
 */
#define PROVEND_REPLAY_WINDOW    1024
#define PROVEND_WRITER_BUCKETS   256

struct provend_writer_s {
    uint8_t            prefix[8];
    uint64_t           max;
    uint64_t           seen[PROVEND_REPLAY_WINDOW / 64];  /* bit d: max-d */
    provend_writer_t  *next;
};

/* One subscription's end: told when its last callback has returned. */
typedef struct {
    struct provend_cstore_s  *cs;
    int                       done;
} provend_csub_t;

#define PROVEND_HOOKS_MAX  4

/* Told of each entry applied to one of the node's own databases. */
typedef struct {
    char                         db[PROVEND_NAME_MAX + 1];
    provend_storage_applied_pt   fn;
    void                        *data;
} provend_cstore_hook_t;

/* A write of this node, until its entry is applied here. */
struct provend_cwait_s {
    uint8_t                 id[PROVEND_LOG_ID_LEN];
    provend_storage_req_t  *req;
    uint64_t                deadline_ms;
    natsMsg                *retry;        /* refused: sent again at */
    uint64_t                retry_ms;
    provend_cwait_t        *next;
};

typedef struct provend_cstore_s {
    provend_storage_t       st;
    provend_storage_t      *local;

    pthread_mutex_t         lock;
    pthread_cond_t          cond;
    pthread_t               thread;
    int                     thread_started;
    int                     stopping;

    /* set by start */
    int                     started;
    uint8_t                 key[PROVEND_KEY_LEN];    /* entries' seal */
    unsigned                client_port;
    unsigned                replicas;
    unsigned                stream_waits; /* tries before the streams */

    natsConnection         *nc;
    jsCtx                  *js;
    natsSubscription       *sub;
    provend_csub_t         *sub_state;

    /* applying */
    uint64_t                target;       /* the stream's end at start */
    uint64_t                handed;       /* the last seq handed over */
    unsigned                applying;     /* handed, not answered yet */
    size_t                  applying_bytes;
    int                     ready;        /* caught up once */
    int                     broken;       /* the copy failed an entry */
    int                     disconnected;
    int                     lingering;    /* a callback may still come */
    int                     gap;          /* follow again from handed + 1 */
    uint64_t                applied;      /* entries answered by the copy */
    uint64_t                skipped;      /* entries that did not open */
    uint64_t                repeats;      /* entries applied already */
    provend_writer_t       *writers[PROVEND_WRITER_BUCKETS];

    /* the seqs handed and not answered yet: below the least, all is in */
    uint64_t                outstanding[PROVEND_APPLYING_MAX];

    /* reads waiting for an "after" this node has not applied yet */
    provend_storage_req_t  *parked;
    size_t                  nparked;

    /* requests that came before this node caught up (or had NATS), in
       their order */
    provend_storage_req_t  *catching;
    provend_storage_req_t  *catching_tail;
    size_t                  ncatching;
    size_t                  catching_bytes;

    /* this node's writes */
    uint8_t                 id_prefix[8];
    uint64_t                id_counter;
    provend_cwait_t        *waiters[PROVEND_WAITERS_BUCKETS];
    size_t                  nwaiters;

    /* held while a hook runs: unset, it has returned */
    pthread_mutex_t         hook_lock;
    provend_cstore_hook_t   hooks[PROVEND_HOOKS_MAX];
} provend_cstore_t;

/* One entry handed to the copy. */
typedef struct {
    provend_cstore_t       *cs;
    provend_storage_req_t  *waiter;       /* ours to answer, or NULL */
    int                     own;          /* the node's own scope */
    size_t                  bytes;
    uint64_t                seq;
} provend_capply_t;


uint64_t provend_cstore_mono_ms(void);
int provend_cstore_first_time(provend_cstore_t *cs, const uint8_t *id);
void provend_cstore_writers_free(provend_cstore_t *cs);
uint64_t provend_cstore_applied(provend_cstore_t *cs);
provend_storage_req_t *provend_cstore_unpark(provend_cstore_t *cs, int all);
void provend_cstore_release_catching(provend_cstore_t *cs);


/* ---- the entry's bytes -------------------------------------------------- */

typedef struct {
    uint8_t  *p;
    size_t    len;
    size_t    cap;
    int       failed;
    int       too_large;
} provend_wbuf_t;


void provend_log_encode(provend_wbuf_t *w, const provend_storage_req_t *req,
    const uint8_t *id, int64_t time_ms);

provend_storage_req_t *provend_log_decode(const uint8_t *data, size_t len,
    uint8_t *id);

provend_cwait_t *provend_cwait_take(provend_cstore_t *cs, const uint8_t *id);

void provend_cwait_free(provend_cwait_t *w);

void provend_cwait_answer(provend_cwait_t *w, provend_storage_status_t status,
    const char *message);

void provend_cwait_put(provend_cstore_t *cs, provend_cwait_t *w);

void provend_cwait_sweep(provend_cstore_t *cs);

void provend_cstore_on_entry(natsConnection *nc, natsSubscription *sub,
    natsMsg *msg, void *closure);

natsStatus provend_cstore_publish(provend_cstore_t *cs, natsMsg **msg,
    const uint8_t *id);

void provend_cstore_on_pub_err(jsCtx *js, jsPubAckErr *pae, void *closure);

void provend_cstore_write(provend_storage_t *st, provend_storage_req_t *req);

void provend_cstore_read(provend_storage_t *st, provend_storage_req_t *req);

void provend_cstore_release_parked(provend_cstore_t *cs,
    provend_storage_req_t *list);

int provend_cstore_peek(provend_storage_t *st, const provend_scope_t *scope,
    const char *store, provend_kv_type_t type, const uint8_t *key,
    size_t key_len, provend_kv_peek_pt fn, void *data);

void provend_cstore_hold(provend_storage_t *st);

void provend_cstore_release(provend_storage_t *st);

#endif
