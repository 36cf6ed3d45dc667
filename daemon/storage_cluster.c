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
#include "keys.h"
#include "log.h"
#include "util.h"


#define PROVEND_LOG_STREAM       "PROVEN_LOG"
#define PROVEND_LOG_SUBJECT      "proven.log"
#define PROVEND_TICK_STREAM      "PROVEN_TICKS"
#define PROVEND_TICK_SUBJECT     "proven.tick"
#define PROVEND_LOG_VERSION      1
#define PROVEND_LOG_AD           "proven-log-v1"
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


typedef struct provend_cwait_s  provend_cwait_t;

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

    /* the seqs handed and not answered yet: below the least, all is in */
    uint64_t                outstanding[PROVEND_APPLYING_MAX];

    /* reads waiting for an "after" this node has not applied yet */
    provend_storage_req_t  *parked;
    size_t                  nparked;

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


/* Milliseconds of a clock that never steps back. */
static uint64_t
provend_cstore_mono_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}


/* The last entry this node's copy holds with every one before it. */
static uint64_t
provend_cstore_applied(provend_cstore_t *cs)
{
    size_t    i;
    uint64_t  least;

    least = cs->handed + 1;
    for (i = 0; i < PROVEND_APPLYING_MAX; i++) {
        if (cs->outstanding[i] != 0 && cs->outstanding[i] < least) {
            least = cs->outstanding[i];
        }
    }
    return least - 1;
}


/* Reads parked for an "after" now applied (under the lock), unlinked. */
static provend_storage_req_t *
provend_cstore_unpark(provend_cstore_t *cs, int all)
{
    uint64_t                applied, now;
    provend_storage_req_t  *out, **pp, *req;

    applied = provend_cstore_applied(cs);
    now = provend_cstore_mono_ms();
    out = NULL;
    pp = &cs->parked;
    while ((req = *pp) != NULL) {
        if (all || req->after <= applied
            || req->after_until_ms <= now)
        {
            *pp = req->next;
            cs->nparked--;
            req->next = out;
            out = req;
        } else {
            pp = &req->next;
        }
    }
    return out;
}


static void provend_cstore_release_parked(provend_cstore_t *cs,
    provend_storage_req_t *list);
static void provend_cstore_add_log_seq(cbor_item_t **result, uint64_t seq);


/* ---- the entry's bytes -------------------------------------------------- */

typedef struct {
    uint8_t  *p;
    size_t    len;
    size_t    cap;
    int       failed;
    int       too_large;
} provend_wbuf_t;

typedef struct {
    const uint8_t  *p;
    size_t          len;
    int             failed;
} provend_rbuf_t;


static void
provend_w(provend_wbuf_t *w, const void *data, size_t len)
{
    size_t    cap;
    uint8_t  *p;

    if (w->failed || len == 0) {
        return;                 /* data may be NULL when len is 0 */
    }
    if (w->len + len > PROVEND_LOG_ENTRY_MAX) {
        w->failed = 1;
        w->too_large = 1;
        return;
    }
    if (w->len + len > w->cap) {
        cap = w->cap ? w->cap : 1024;
        while (cap < w->len + len) {
            cap *= 2;
        }
        p = realloc(w->p, cap);
        if (p == NULL) {
            w->failed = 1;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    memcpy(w->p + w->len, data, len);
    w->len += len;
}


static void
provend_w_u64(provend_wbuf_t *w, uint64_t v)
{
    uint8_t  b[8];

    proven_put_be64(b, v);
    provend_w(w, b, 8);
}


static void
provend_w_u8(provend_wbuf_t *w, unsigned v)
{
    uint8_t  b = (uint8_t) v;

    provend_w(w, &b, 1);
}


/* A length (u32) and the bytes. */
static void
provend_w_bytes(provend_wbuf_t *w, const void *data, size_t len)
{
    uint8_t  b[4];

    proven_put_be32(b, (uint32_t) len);
    provend_w(w, b, 4);
    provend_w(w, data, len);
}


static const uint8_t *
provend_r(provend_rbuf_t *r, size_t len)
{
    const uint8_t  *p;

    if (r->failed || r->len < len) {
        r->failed = 1;
        return NULL;
    }
    p = r->p;
    r->p += len;
    r->len -= len;
    return p;
}


static uint64_t
provend_r_u64(provend_rbuf_t *r)
{
    const uint8_t  *p;

    p = provend_r(r, 8);
    return p != NULL ? proven_get_be64(p) : 0;
}


static unsigned
provend_r_u8(provend_rbuf_t *r)
{
    const uint8_t  *p;

    p = provend_r(r, 1);
    return p != NULL ? *p : 0;
}


/* Bytes of at most max, in place; *len set. */
static const uint8_t *
provend_r_bytes(provend_rbuf_t *r, size_t max, size_t *len)
{
    const uint8_t  *p;

    p = provend_r(r, 4);
    if (p == NULL) {
        return NULL;
    }
    *len = proven_get_be32(p);
    if (*len > max) {
        r->failed = 1;
        return NULL;
    }
    return provend_r(r, *len);
}


/* A text field into out (max + 1 bytes). */
static void
provend_r_text(provend_rbuf_t *r, char *out, size_t max)
{
    size_t          len;
    const uint8_t  *p;

    p = provend_r_bytes(r, max, &len);
    if (p == NULL || memchr(p, '\0', len) != NULL) {
        r->failed = 1;
        out[0] = '\0';
        return;
    }
    memcpy(out, p, len);
    out[len] = '\0';
}


/* An owned copy with a NUL added (as the backends expect). */
static uint8_t *
provend_r_copy(provend_rbuf_t *r, size_t max, size_t *len)
{
    uint8_t        *out;
    const uint8_t  *p;

    p = provend_r_bytes(r, max, len);
    if (p == NULL) {
        return NULL;
    }
    out = malloc(*len + 1);
    if (out == NULL) {
        r->failed = 1;
        return NULL;
    }
    memcpy(out, p, *len);
    out[*len] = '\0';
    return out;
}


#define PROVEND_LOG_HAS_IF     1
#define PROVEND_LOG_HAS_VALUE  2
#define PROVEND_LOG_HAS_KEY    4

static void
provend_log_encode(provend_wbuf_t *w, const provend_storage_req_t *req,
    const uint8_t *id, int64_t time_ms)
{
    size_t                     i, j;
    uint64_t                   bits;
    const provend_scope_t     *sc;
    const provend_sql_stmt_t  *s;

    sc = &req->scope;
    provend_w_u8(w, PROVEND_LOG_VERSION);
    provend_w_u8(w, req->op);
    provend_w_u8(w, req->type);
    provend_w_u8(w, sc->kind);
    provend_w(w, id, PROVEND_LOG_ID_LEN);
    provend_w_u64(w, (uint64_t) time_ms);
    provend_w_bytes(w, sc->app, strlen(sc->app));
    provend_w_bytes(w, sc->identity, strlen(sc->identity));
    provend_w_bytes(w, sc->chain, strlen(sc->chain));
    provend_w_bytes(w, sc->contract, strlen(sc->contract));
    provend_w_bytes(w, sc->token, strlen(sc->token));
    provend_w_bytes(w, req->name, strlen(req->name));

    provend_w_u8(w, (req->has_if_revision ? PROVEND_LOG_HAS_IF : 0)
                    | (req->value != NULL ? PROVEND_LOG_HAS_VALUE : 0)
                    | (req->key != NULL ? PROVEND_LOG_HAS_KEY : 0));
    provend_w_u64(w, req->if_revision);
    provend_w_bytes(w, req->key, req->key != NULL ? req->key_len : 0);
    provend_w_bytes(w, req->value, req->value != NULL ? req->value_len : 0);

    provend_w_u64(w, req->nstmts);
    for (i = 0; i < req->nstmts; i++) {
        s = &req->stmts[i];
        provend_w_bytes(w, s->sql, s->sql_len);
        provend_w_u64(w, s->nparams);
        for (j = 0; j < s->nparams; j++) {
            provend_w_u8(w, s->params[j].type);
            memcpy(&bits, &s->params[j].f, sizeof(bits));
            provend_w_u64(w, s->params[j].type == PROVEND_SQL_REAL
                             ? bits : (uint64_t) s->params[j].i);
            provend_w_bytes(w, s->params[j].data,
                            s->params[j].data != NULL ? s->params[j].len : 0);
        }
    }
}


/* The request an entry describes; NULL when it is not one. */
static provend_storage_req_t *
provend_log_decode(const uint8_t *data, size_t len, uint8_t *id)
{
    size_t                  i, j, n;
    uint64_t                v;
    unsigned                op, flags;
    const uint8_t          *p;
    provend_rbuf_t          r;
    provend_sql_stmt_t     *s;
    provend_storage_req_t  *req;

    r.p = data;
    r.len = len;
    r.failed = 0;

    if (provend_r_u8(&r) != PROVEND_LOG_VERSION) {
        return NULL;
    }
    op = provend_r_u8(&r);
    if (op != PROVEND_OP_KV_SET && op != PROVEND_OP_KV_DELETE
        && op != PROVEND_OP_SQL_EXECUTE && op != PROVEND_OP_SQL_MIGRATE)
    {
        return NULL;
    }
    req = provend_storage_req_new((provend_storage_op_t) op);
    if (req == NULL) {
        return NULL;
    }
    req->type = (provend_kv_type_t) provend_r_u8(&r);
    req->scope.kind = (provend_scope_kind_t) provend_r_u8(&r);
    if (req->type > PROVEND_KV_KEY || req->scope.kind > PROVEND_SCOPE_NFT) {
        r.failed = 1;
    }
    p = provend_r(&r, PROVEND_LOG_ID_LEN);
    if (p != NULL) {
        memcpy(id, p, PROVEND_LOG_ID_LEN);
    }
    req->log_time_ms = (int64_t) provend_r_u64(&r);
    provend_r_text(&r, req->scope.app, PROVEND_NAME_MAX);
    provend_r_text(&r, req->scope.identity, PROVEND_IDENTITY_MAX);
    provend_r_text(&r, req->scope.chain, PROVEND_CHAIN_MAX);
    provend_r_text(&r, req->scope.contract, PROVEND_CONTRACT_MAX);
    provend_r_text(&r, req->scope.token, PROVEND_TOKEN_MAX);
    provend_r_text(&r, req->name, PROVEND_NAME_MAX);

    flags = provend_r_u8(&r);
    req->has_if_revision = (flags & PROVEND_LOG_HAS_IF) != 0;
    req->if_revision = provend_r_u64(&r);
    req->key = provend_r_copy(&r, PROVEND_KV_KEY_MAX, &req->key_len);
    if (!(flags & PROVEND_LOG_HAS_KEY) && req->key != NULL) {
        free(req->key);
        req->key = NULL;
    }
    req->value = provend_r_copy(&r, PROVEND_LOG_ENTRY_MAX, &req->value_len);
    if (!(flags & PROVEND_LOG_HAS_VALUE) && req->value != NULL) {
        free(req->value);
        req->value = NULL;
    }

    n = provend_r_u64(&r);
    if (!r.failed && n > 0) {
        if (n > PROVEND_SQL_BATCH_MAX) {
            r.failed = 1;
        } else {
            req->stmts = calloc(n, sizeof(*req->stmts));
            req->nstmts = req->stmts != NULL ? n : 0;
            r.failed |= req->stmts == NULL;
        }
    }
    for (i = 0; i < req->nstmts && !r.failed; i++) {
        s = &req->stmts[i];
        s->sql = (char *) provend_r_copy(&r, PROVEND_SQL_TEXT_MAX,
                                         &s->sql_len);
        n = provend_r_u64(&r);
        if (r.failed || n > PROVEND_SQL_PARAMS_MAX) {
            r.failed = 1;
            break;
        }
        if (n > 0) {
            s->params = calloc(n, sizeof(*s->params));
            s->nparams = s->params != NULL ? n : 0;
            r.failed |= s->params == NULL;
        }
        for (j = 0; j < s->nparams && !r.failed; j++) {
            s->params[j].type = (provend_sql_type_t) provend_r_u8(&r);
            v = provend_r_u64(&r);
            if (s->params[j].type == PROVEND_SQL_REAL) {
                memcpy(&s->params[j].f, &v, sizeof(v));
            } else {
                s->params[j].i = (int64_t) v;
            }
            s->params[j].data = provend_r_copy(&r, PROVEND_LOG_ENTRY_MAX,
                                               &s->params[j].len);
            if (s->params[j].type != PROVEND_SQL_TEXT
                && s->params[j].type != PROVEND_SQL_BLOB)
            {
                free(s->params[j].data);
                s->params[j].data = NULL;
                s->params[j].len = 0;
            }
            if (s->params[j].type > PROVEND_SQL_BLOB) {
                r.failed = 1;
            }
        }
    }

    /* what each op needs: no node may fill in what the writer left out */
    if (op == PROVEND_OP_KV_SET || op == PROVEND_OP_KV_DELETE) {
        r.failed |= req->key == NULL || req->nstmts != 0
                    || (op == PROVEND_OP_KV_SET && req->value == NULL);
    } else {
        r.failed |= req->nstmts == 0 || req->key != NULL
                    || req->value != NULL;
    }

    if (r.failed || r.len != 0 || req->scope.app[0] == '\0') {
        provend_storage_req_free(req);
        return NULL;
    }
    return req;
}


/* ---- waiting writes ----------------------------------------------------- */

static size_t
provend_cwait_bucket(const uint8_t *id)
{
    /* the counter's low bytes: consecutive writes spread */
    return ((size_t) id[14] << 8 | id[15]) % PROVEND_WAITERS_BUCKETS;
}


/* Takes the waiter with id out of the table (under the lock). */
static provend_cwait_t *
provend_cwait_take(provend_cstore_t *cs, const uint8_t *id)
{
    provend_cwait_t  **pp, *w;

    for (pp = &cs->waiters[provend_cwait_bucket(id)]; *pp != NULL;
         pp = &(*pp)->next)
    {
        w = *pp;
        if (memcmp(w->id, id, PROVEND_LOG_ID_LEN) == 0) {
            *pp = w->next;
            cs->nwaiters--;
            return w;
        }
    }
    return NULL;
}


static void
provend_cwait_free(provend_cwait_t *w)
{
    natsMsg_Destroy(w->retry);
    free(w);
}


static void
provend_cwait_answer(provend_cwait_t *w, provend_storage_status_t status,
    const char *message)
{
    provend_storage_req_fail(w->req, status, "%s", message);
    w->req->done(w->req);
    provend_cwait_free(w);
}


static void
provend_cwait_put(provend_cstore_t *cs, provend_cwait_t *w)
{
    size_t  b;

    b = provend_cwait_bucket(w->id);
    w->next = cs->waiters[b];
    cs->waiters[b] = w;
    cs->nwaiters++;
}


static natsStatus provend_cstore_publish(provend_cstore_t *cs,
    natsMsg **msg, const uint8_t *id);


/* Writes whose answer has waited too long: told so (the lock not held). */
/*
 * Writes whose answer has waited too long are told so; publishes refused
 * (no stream leader while one is elected) are sent again.
 */
static void
provend_cwait_sweep(provend_cstore_t *cs)
{
    size_t            i, nagain;
    uint64_t          now;
    natsMsg          *again[64];
    provend_storage_req_t  *parked;
    uint8_t           again_id[64][PROVEND_LOG_ID_LEN];
    provend_cwait_t  *late, **pp, *w;

    now = provend_now_ms();
    late = NULL;
    nagain = 0;
    pthread_mutex_lock(&cs->lock);
    for (i = 0; i < PROVEND_WAITERS_BUCKETS; i++) {
        pp = &cs->waiters[i];
        while ((w = *pp) != NULL) {
            if (w->deadline_ms <= now || cs->stopping) {
                *pp = w->next;
                cs->nwaiters--;
                w->next = late;
                late = w;
                continue;
            }
            if (w->retry != NULL && w->retry_ms <= now
                && nagain < sizeof(again) / sizeof(again[0]))
            {
                again[nagain] = w->retry;
                memcpy(again_id[nagain++], w->id, PROVEND_LOG_ID_LEN);
                w->retry = NULL;
            }
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&cs->lock);

    pthread_mutex_lock(&cs->lock);
    parked = cs->parked != NULL ? provend_cstore_unpark(cs, cs->stopping)
                                : NULL;
    pthread_mutex_unlock(&cs->lock);
    provend_cstore_release_parked(cs, parked);

    /* the same id: stored once however often it is sent */
    for (i = 0; i < nagain; i++) {
        if (provend_cstore_publish(cs, &again[i], again_id[i]) != NATS_OK) {
            natsMsg_Destroy(again[i]);   /* the deadline answers it */
        }
    }

    while ((w = late) != NULL) {
        late = w->next;
        provend_cwait_answer(w, PROVEND_ST_TIMEOUT,
                             cs->stopping
                             ? "provend is stopping; the write may still be "
                               "applied by the cluster"
                             : "the cluster did not apply this write in "
                               "time; it may still be applied");
    }
}


/* ---- applying the stream ------------------------------------------------ */

static void
provend_capply_done(provend_storage_req_t *req)
{
    size_t                  i;
    provend_capply_t       *a;
    provend_cstore_t       *cs;
    provend_storage_req_t  *w, *parked;

    a = req->data;
    cs = a->cs;
    w = a->waiter;

    if (w != NULL) {
        w->status = req->status;
        memcpy(w->error, req->error, sizeof(w->error));
        w->result = req->result;
        req->result = NULL;
        w->revision = req->revision;
        w->existed = req->existed;
        w->log_seq = a->seq;
        if (w->status == PROVEND_ST_OK && w->result != NULL) {
            provend_cstore_add_log_seq(&w->result, a->seq);
        }
        w->done(w);
    }

    pthread_mutex_lock(&cs->lock);
    if ((req->status == PROVEND_ST_STORAGE_ERROR
         || req->status == PROVEND_ST_INTERNAL) && !cs->broken)
    {
        /*
         * A failure of this node alone (a disk, memory): its copy and the
         * others' may differ from here, so it serves no more reads.
         */
        cs->broken = 1;
        provend_error("cluster storage: an entry failed on this node: %s; "
                      "its copy is not served (restart provend to make it "
                      "again from the log)", req->error);
    }
    cs->applying--;
    cs->applying_bytes -= a->bytes;
    for (i = 0; i < PROVEND_APPLYING_MAX; i++) {
        if (cs->outstanding[i] == a->seq) {
            cs->outstanding[i] = 0;
            break;
        }
    }
    parked = cs->parked != NULL ? provend_cstore_unpark(cs, 0) : NULL;
    cs->applied++;
    if (!cs->ready && cs->handed >= cs->target && cs->applying == 0) {
        cs->ready = 1;
        provend_info("cluster storage: caught up (%" PRIu64 " entries)",
                     cs->handed);
    }
    pthread_cond_broadcast(&cs->cond);
    pthread_mutex_unlock(&cs->lock);

    provend_cstore_release_parked(cs, parked);

    if (a->own) {
        pthread_mutex_lock(&cs->hook_lock);
        for (i = 0; i < PROVEND_HOOKS_MAX; i++) {
            if (cs->hooks[i].fn != NULL
                && strcmp(cs->hooks[i].db, req->name) == 0)
            {
                cs->hooks[i].fn(cs->hooks[i].data, req);
            }
        }
        pthread_mutex_unlock(&cs->hook_lock);
    }

    free(a);
    provend_storage_req_free(req);
}


static void
provend_cstore_on_entry(natsConnection *nc, natsSubscription *sub,
    natsMsg *msg, void *closure)
{
    int                     len, unreadable;
    size_t                  i;
    uint8_t                 id[PROVEND_LOG_ID_LEN], *plain;
    uint64_t                seq;
    jsMsgMetaData          *meta;
    provend_cwait_t        *w;
    provend_capply_t       *a;
    provend_cstore_t       *cs;
    provend_storage_req_t  *req;

    (void) nc;
    (void) sub;
    cs = closure;

    meta = NULL;
    if (natsMsg_GetMetaData(&meta, msg) != NATS_OK) {
        natsMsg_Destroy(msg);
        return;
    }
    seq = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);

    len = natsMsg_GetDataLength(msg);
    unreadable = len <= PROVEND_SEAL_OVERHEAD;

    pthread_mutex_lock(&cs->lock);
    if (seq <= cs->handed || cs->gap || cs->stopping) {
        /* seen already (an ordered consumer starting again), or after a
         * gap: the thread follows the log again from the first missing */
        pthread_mutex_unlock(&cs->lock);
        natsMsg_Destroy(msg);
        return;
    }
    if (seq != cs->handed + 1) {
        /* entries lost on the way (a slow consumer's drop): never skipped */
        cs->gap = 1;
        pthread_cond_broadcast(&cs->cond);
        pthread_mutex_unlock(&cs->lock);
        provend_warn("cluster storage: entry %" PRIu64 " came after %" PRIu64
                     ": following the log again from there", seq,
                     cs->handed);
        natsMsg_Destroy(msg);
        return;
    }
    /* the copy takes a bounded amount at a time: this thread waits */
    while ((cs->applying >= PROVEND_APPLYING_MAX
            || cs->applying_bytes >= PROVEND_APPLYING_BYTES)
           && !cs->stopping)
    {
        pthread_cond_wait(&cs->cond, &cs->lock);
    }
    pthread_mutex_unlock(&cs->lock);

    req = NULL;
    plain = len > PROVEND_SEAL_OVERHEAD ? malloc((size_t) len) : NULL;
    if (plain != NULL
        && provend_open(cs->key, (const uint8_t *) PROVEND_LOG_AD,
                        sizeof(PROVEND_LOG_AD) - 1,
                        (const uint8_t *) natsMsg_GetData(msg), (size_t) len,
                        plain) != PROVEN_OK)
    {
        free(plain);
        plain = NULL;
        unreadable = 1;     /* the same on every node: nobody applies it */
    }
    if (plain != NULL) {
        req = provend_log_decode(plain, (size_t) len - PROVEND_SEAL_OVERHEAD,
                                 id);
        unreadable = req == NULL;
        /* it may hold keys (a key store's, a session's) */
        OPENSSL_cleanse(plain, (size_t) len - PROVEND_SEAL_OVERHEAD);
    }
    free(plain);
    natsMsg_Destroy(msg);
    a = req != NULL ? calloc(1, sizeof(*a)) : NULL;

    pthread_mutex_lock(&cs->lock);
    if (seq != cs->handed + 1 || cs->gap || cs->stopping) {
        /* another subscription's callback got there meanwhile */
        pthread_mutex_unlock(&cs->lock);
        free(a);
        provend_storage_req_free(req);
        return;
    }
    if (a == NULL && !unreadable) {
        /* out of memory here alone: this entry is taken again */
        cs->gap = 1;
        pthread_cond_broadcast(&cs->cond);
        pthread_mutex_unlock(&cs->lock);
        provend_storage_req_free(req);
        return;
    }
    cs->handed = seq;
    if (a == NULL) {
        cs->skipped++;
        if (!cs->ready && cs->handed >= cs->target && cs->applying == 0) {
            cs->ready = 1;
        }
        pthread_mutex_unlock(&cs->lock);
        provend_error("cluster storage: entry %" PRIu64 " cannot be read: "
                      "skipped", seq);
        provend_storage_req_free(req);
        return;
    }
    w = provend_cwait_take(cs, id);
    cs->applying++;
    a->bytes = (size_t) len;
    a->seq = seq;
    cs->applying_bytes += a->bytes;
    for (i = 0; i < PROVEND_APPLYING_MAX; i++) {
        if (cs->outstanding[i] == 0) {
            cs->outstanding[i] = seq;
            break;
        }
    }
    pthread_mutex_unlock(&cs->lock);

    a->cs = cs;
    a->waiter = w != NULL ? w->req : NULL;
    /* the node's own databases: apps and sessions follow theirs */
    a->own = strcmp(req->scope.app, PROVEND_OWN_SCOPE) == 0;
    if (w != NULL) {
        provend_cwait_free(w);
    }

    req->done = provend_capply_done;
    req->data = a;
    provend_storage_submit(cs->local, req);
}


static int provend_cstore_readable(provend_cstore_t *cs,
    provend_storage_req_t *req);


/* ---- publishing --------------------------------------------------------- */

/*
 * Sends msg (taken when sent) with the write's id as its message id, so
 * that JetStream stores it once however often it is sent.
 */
static natsStatus
provend_cstore_publish(provend_cstore_t *cs, natsMsg **msg, const uint8_t *id)
{
    char          hex[2 * PROVEND_LOG_ID_LEN + 1];
    jsPubOptions  po;

    proven_hex_encode(id, PROVEND_LOG_ID_LEN, hex);
    jsPubOptions_Init(&po);
    po.MsgId = hex;
    po.MaxWait = PROVEND_PUBLISH_WAIT_MS;
    return js_PublishMsgAsync(cs->js, msg, &po);
}


/*
 * A publish refused or unanswered (while a stream leader is elected, say):
 * kept to be sent again by the sweep until the write's deadline.
 */
static void
provend_cstore_on_pub_err(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    size_t             idlen;
    uint8_t            id[PROVEND_LOG_ID_LEN];
    const char        *hex;
    provend_cwait_t   *w;
    provend_cstore_t  *cs;

    (void) js;
    cs = closure;
    hex = NULL;
    if (pae->Msg == NULL
        || natsMsgHeader_Get(pae->Msg, "Nats-Msg-Id", &hex) != NATS_OK
        || hex == NULL || strlen(hex) != 2 * PROVEND_LOG_ID_LEN
        || proven_hex_decode(hex, 2 * PROVEND_LOG_ID_LEN, id, sizeof(id),
                             &idlen) != PROVEN_OK
        || idlen != PROVEND_LOG_ID_LEN)
    {
        return;
    }

    provend_debug("cluster storage: a publish refused (%s): sent again",
                  pae->ErrText != NULL ? pae->ErrText
                                       : natsStatus_GetText(pae->Err));
    pthread_mutex_lock(&cs->lock);
    w = provend_cwait_take(cs, id);
    if (w != NULL) {
        if (w->retry == NULL) {
            w->retry = pae->Msg;        /* ours now */
            pae->Msg = NULL;
        }
        w->retry_ms = provend_now_ms() + PROVEND_RETRY_MS;
        provend_cwait_put(cs, w);
    }
    pthread_mutex_unlock(&cs->lock);
}


static void
provend_cstore_write(provend_storage_t *st, provend_storage_req_t *req)
{
    int                i;
    uint8_t            id[PROVEND_LOG_ID_LEN];
    uint8_t           *sealed;
    uint64_t           counter;
    natsMsg           *msg;
    natsStatus         s;
    provend_wbuf_t     w;
    provend_cwait_t   *wait;
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;

    if (req->local) {
        provend_storage_submit(cs->local, req);
        return;
    }

    /*
     * Not before this node has caught up: its write would wait behind the
     * whole backlog, time out, and still be applied later.
     */
    if (!provend_cstore_readable(cs, req)) {
        return;
    }

    pthread_mutex_lock(&cs->lock);
    if (!cs->started || cs->js == NULL || cs->stopping) {
        pthread_mutex_unlock(&cs->lock);
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                 "the cluster is not ready yet: this node "
                                 "has no cluster key or no NATS yet");
        req->done(req);
        return;
    }
    counter = ++cs->id_counter;
    pthread_mutex_unlock(&cs->lock);

    wait = calloc(1, sizeof(*wait));
    if (wait == NULL) {
        provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "out of memory");
        req->done(req);
        return;
    }
    memcpy(wait->id, cs->id_prefix, 8);
    for (i = 15; i >= 8; i--) {
        wait->id[i] = (uint8_t) counter;
        counter >>= 8;
    }

    /* a key store's key is made once, here, not by every replica */
    if (req->op == PROVEND_OP_KV_SET && req->value == NULL) {
        req->value = malloc(PROVEND_KEY_LEN);
        if (req->value == NULL
            || RAND_bytes(req->value, PROVEND_KEY_LEN) != 1)
        {
            free(wait);
            provend_storage_req_fail(req, PROVEND_ST_INTERNAL,
                                     "no random bytes for a key");
            req->done(req);
            return;
        }
        req->value_len = PROVEND_KEY_LEN;
    }

    memset(&w, 0, sizeof(w));
    provend_log_encode(&w, req, wait->id, (int64_t) provend_now_ms());
    sealed = w.failed ? NULL : malloc(w.len + PROVEND_SEAL_OVERHEAD);
    if (sealed == NULL
        || provend_seal(cs->key, (const uint8_t *) PROVEND_LOG_AD,
                        sizeof(PROVEND_LOG_AD) - 1, w.p, w.len, sealed)
           != PROVEN_OK)
    {
        OPENSSL_cleanse(w.p, w.len);
        free(w.p);
        free(sealed);
        free(wait);
        if (w.too_large) {
            provend_storage_req_fail(req, PROVEND_ST_TOO_LARGE,
                                     "a write in a cluster is at most %d "
                                     "bytes", PROVEND_LOG_ENTRY_MAX);
        } else {
            provend_storage_req_fail(req, PROVEND_ST_INTERNAL,
                                     "out of memory");
        }
        req->done(req);
        return;
    }

    msg = NULL;
    s = natsMsg_Create(&msg, PROVEND_LOG_SUBJECT, NULL,
                       (const char *) sealed,
                       (int) (w.len + PROVEND_SEAL_OVERHEAD));
    OPENSSL_cleanse(w.p, w.len);
    free(w.p);
    free(sealed);

    wait->req = req;
    wait->deadline_ms = provend_now_ms() + PROVEND_WRITE_WAIT_MS;
    memcpy(id, wait->id, sizeof(id));

    /* waiting before the publish: the entry may be applied before its ack */
    pthread_mutex_lock(&cs->lock);
    provend_cwait_put(cs, wait);
    pthread_mutex_unlock(&cs->lock);

    if (s == NATS_OK && provend_cstore_publish(cs, &msg, id) == NATS_OK) {
        return;
    }

    pthread_mutex_lock(&cs->lock);
    wait = provend_cwait_take(cs, id);
    if (wait != NULL && msg != NULL) {
        /* not sent (the connection is down): the sweep tries again */
        wait->retry = msg;
        wait->retry_ms = provend_now_ms() + PROVEND_RETRY_MS;
        provend_cwait_put(cs, wait);
        wait = NULL;
        msg = NULL;
    }
    pthread_mutex_unlock(&cs->lock);
    natsMsg_Destroy(msg);
    if (wait != NULL) {
        provend_cwait_answer(wait, PROVEND_ST_INTERNAL, "out of memory");
    }
}


/* ---- reads -------------------------------------------------------------- */

static int
provend_cstore_readable(provend_cstore_t *cs, provend_storage_req_t *req)
{
    int       ready, broken;
    uint64_t  handed, target;

    if (req->local) {
        return 1;
    }
    pthread_mutex_lock(&cs->lock);
    ready = cs->ready && !cs->broken;
    broken = cs->broken;
    handed = cs->handed;
    target = cs->target;
    pthread_mutex_unlock(&cs->lock);
    if (ready) {
        return 1;
    }
    if (broken) {
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                 "this node's copy of the cluster's data "
                                 "failed; it is made again when provend "
                                 "restarts");
    } else {
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                 "this node is catching up with the cluster "
                                 "(%" PRIu64 " of %" PRIu64 " entries)",
                                 handed, target);
    }
    req->done(req);
    return 0;
}


static void
provend_cstore_read(provend_storage_t *st, provend_storage_req_t *req)
{
    uint64_t           applied;
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;
    if (!provend_cstore_readable(cs, req)) {
        return;
    }
    if (req->after != 0) {
        /* read-your-writes from another node: wait for its "log_seq" */
        pthread_mutex_lock(&cs->lock);
        applied = provend_cstore_applied(cs);
        if (req->after > applied && cs->nparked < PROVEND_PARKED_MAX) {
            req->after_until_ms = provend_cstore_mono_ms()
                                  + PROVEND_AFTER_WAIT_MS;
            req->next = cs->parked;
            cs->parked = req;
            cs->nparked++;
            pthread_mutex_unlock(&cs->lock);
            return;
        }
        pthread_mutex_unlock(&cs->lock);
        if (req->after > applied) {
            provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                     "too many reads wait for entries this "
                                     "node has not applied yet");
            req->done(req);
            return;
        }
    }
    provend_storage_submit(cs->local, req);
}


/* Parked reads: now applied, to the copy; past their wait, told so. */
static void
provend_cstore_release_parked(provend_cstore_t *cs,
    provend_storage_req_t *list)
{
    int                     stopping, broken;
    uint64_t                applied;
    provend_storage_req_t  *req;

    while ((req = list) != NULL) {
        list = req->next;
        req->next = NULL;
        pthread_mutex_lock(&cs->lock);
        applied = provend_cstore_applied(cs);
        stopping = cs->stopping;
        broken = cs->broken;
        pthread_mutex_unlock(&cs->lock);
        if (req->after <= applied && !stopping && !broken) {
            provend_storage_submit(cs->local, req);
            continue;
        }
        if (stopping || broken) {
            provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR, "%s",
                                     stopping ? "provend is stopping"
                                              : "this node's copy of the "
                                                "cluster's data failed");
        } else {
            provend_storage_req_fail(req, PROVEND_ST_TIMEOUT,
                                     "this node has not applied the "
                                     "cluster's log up to %" PRIu64 " (it "
                                     "is at %" PRIu64 ")", req->after,
                                     applied);
        }
        req->done(req);
    }
}


/* SQL's answer map with "log_seq": n added (a definite map is rebuilt). */
static void
provend_cstore_add_log_seq(cbor_item_t **result, uint64_t seq)
{
    size_t             i, n;
    cbor_item_t       *map;
    struct cbor_pair  *pairs;

    if (!cbor_isa_map(*result)) {
        return;
    }
    n = cbor_map_size(*result);
    map = cbor_new_definite_map(n + 1);
    pairs = cbor_map_handle(*result);
    for (i = 0; map != NULL && i < n; i++) {
        if (!cbor_map_add(map, pairs[i])) {
            cbor_decref(&map);
        }
    }
    if (map == NULL
        || proven_cbor_map_put(map, "log_seq", cbor_build_uint64(seq))
           != PROVEN_OK)
    {
        if (map != NULL) {
            cbor_decref(&map);
        }
        return;                 /* the answer without it */
    }
    cbor_decref(result);
    *result = map;
}


static int
provend_cstore_peek(provend_storage_t *st, const provend_scope_t *scope,
    const char *store, provend_kv_type_t type, const uint8_t *key,
    size_t key_len, provend_kv_peek_pt fn, void *data)
{
    int                ready;
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;
    pthread_mutex_lock(&cs->lock);
    ready = cs->ready && !cs->broken;
    pthread_mutex_unlock(&cs->lock);

    /* not ready: the kv.get submitted instead says why */
    if (!ready || cs->local->kv_peek == NULL) {
        return PROVEN_ERR;
    }
    return cs->local->kv_peek(cs->local, scope, store, type, key, key_len,
                              fn, data);
}


static void
provend_cstore_hold(provend_storage_t *st)
{
    provend_storage_hold(((provend_cstore_t *) st)->local);
}


static void
provend_cstore_release(provend_storage_t *st)
{
    provend_storage_release(((provend_cstore_t *) st)->local);
}


/* ---- the connection and the stream -------------------------------------- */

static void
provend_cstore_on_sub_complete(void *closure)
{
    provend_csub_t    *st;
    provend_cstore_t  *cs;

    st = closure;
    cs = st->cs;
    pthread_mutex_lock(&cs->lock);
    st->done = 1;
    pthread_cond_broadcast(&cs->cond);
    pthread_mutex_unlock(&cs->lock);
}


/* Makes sure a stream exists; PROVEN_OK when it does. */
static int
provend_cstore_stream(provend_cstore_t *cs, jsCtx *js, const char *name,
    const char *subject, int64_t max_age_ns, int64_t window_ns,
    uint64_t *last)
{
    natsStatus        s;
    jsErrCode         jerr;
    jsStreamInfo     *si;
    jsStreamConfig    cfg;
    const char       *subjects[1];

    si = NULL;
    jerr = 0;
    s = js_GetStreamInfo(&si, js, name, NULL, &jerr);
    if (s == NATS_NOT_FOUND) {
        jsStreamConfig_Init(&cfg);
        subjects[0] = subject;
        cfg.Name = name;
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Replicas = (int64_t) cs->replicas;
        cfg.MaxMsgSize = PROVEND_LOG_ENTRY_MAX + 4096;
        cfg.Duplicates = window_ns;
        cfg.MaxAge = max_age_ns;
        s = js_AddStream(&si, js, &cfg, NULL, &jerr);
        if (s == NATS_OK) {
            provend_info("cluster storage: stream %s made with %u "
                         "replicas", name, cs->replicas);
        }
    }
    if (s != NATS_OK) {
        provend_debug("cluster storage: stream %s not there yet: %s (%d)",
                      name, natsStatus_GetText(s), (int) jerr);
        return PROVEN_ERR;
    }
    if (last != NULL) {
        *last = si->State.LastSeq;
    }
    jsStreamInfo_Destroy(si);
    return PROVEN_OK;
}


/*
 * Waits (a few seconds at most) for sub's last callback to return: 1 when
 * it has; 0 when it may still come (its state is then left allocated).
 */
static int
provend_cstore_unfollow(provend_cstore_t *cs, natsSubscription *sub,
    provend_csub_t *st)
{
    int              done;
    struct timespec  until;

    natsSubscription_Unsubscribe(sub);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&cs->lock);
    while (!st->done
           && pthread_cond_timedwait(&cs->cond, &cs->lock, &until) == 0)
    {
        /* woken: look again */
    }
    done = st->done;
    pthread_mutex_unlock(&cs->lock);
    natsSubscription_Destroy(sub);
    if (done) {
        free(st);
    }
    return done;
}


/*
 * Follows the log from the entry after the last handed to the copy, every
 * entry in order (libnats starts the consumer again if one goes amiss),
 * after dropping old (a subscription that lost entries).  NULL when it
 * cannot yet: the thread tries again.
 */
static natsSubscription *
provend_cstore_follow_again(provend_cstore_t *cs, jsCtx *js,
    natsSubscription *old)
{
    uint64_t           from;
    natsStatus         s;
    jsErrCode          jerr;
    jsSubOptions       so;
    provend_csub_t    *state;
    natsSubscription  *sub;

    if (old != NULL) {
        (void) provend_cstore_unfollow(cs, old, cs->sub_state);
        cs->sub_state = NULL;
    }
    state = calloc(1, sizeof(*state));
    if (state == NULL) {
        return NULL;
    }
    state->cs = cs;
    pthread_mutex_lock(&cs->lock);
    cs->gap = 0;
    from = cs->handed + 1;
    pthread_mutex_unlock(&cs->lock);

    jsSubOptions_Init(&so);
    so.Stream = PROVEND_LOG_STREAM;
    so.Ordered = true;
    if (from > 1) {
        so.Config.DeliverPolicy = js_DeliverByStartSequence;
        so.Config.OptStartSeq = from;
    } else {
        so.Config.DeliverPolicy = js_DeliverAll;
    }
    /*
     * Its consumer lives on one server: when that server dies, missed
     * heartbeats are what make libnats start another, so they come often.
     */
    so.Config.Heartbeat = 1000LL * 1000 * 1000;
    sub = NULL;
    jerr = 0;
    s = js_Subscribe(&sub, js, PROVEND_LOG_SUBJECT, provend_cstore_on_entry,
                     cs, NULL, &so, &jerr);
    if (s != NATS_OK) {
        provend_warn("cluster storage: cannot follow the log yet: %s (%d)",
                     natsStatus_GetText(s), (int) jerr);
        free(state);
        return NULL;
    }
    natsSubscription_SetPendingLimits(sub, -1, 256 * 1024 * 1024);
    if (natsSubscription_SetOnCompleteCB(sub, provend_cstore_on_sub_complete,
                                         state) != NATS_OK)
    {
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
        free(state);
        return NULL;
    }
    cs->sub_state = state;
    if (from > 1) {
        provend_info("cluster storage: following the log again from entry "
                     "%" PRIu64, from);
    }
    return sub;
}


/* Connects, makes the streams, follows the log; then sweeps late writes. */
static void *
provend_cstore_thread(void *arg)
{
    char               url[64];
    uint64_t           last;
    natsStatus         s;
    jsOptions          jo;
    natsOptions       *opts;
    natsConnection    *nc;
    jsCtx             *js;
    natsSubscription  *sub;
    provend_cstore_t  *cs;
    struct timespec    until;

    cs = arg;
    nc = NULL;
    js = NULL;

    snprintf(url, sizeof(url), "nats://127.0.0.1:%u", cs->client_port);
    s = natsOptions_Create(&opts);
    if (s == NATS_OK) {
        natsOptions_SetURL(opts, url);
        natsOptions_SetName(opts, "provend-storage");
        natsOptions_SetMaxReconnect(opts, -1);
        natsOptions_SetReconnectWait(opts, 250);
        natsOptions_SetReconnectBufSize(opts, 64 * 1024 * 1024);
        /* a write waits for its entry: no buffering for a flusher */
        natsOptions_SetSendAsap(opts, true);
    }

    for ( ;; ) {
        pthread_mutex_lock(&cs->lock);
        if (cs->stopping) {
            pthread_mutex_unlock(&cs->lock);
            goto done;
        }
        pthread_mutex_unlock(&cs->lock);

        if (nc == NULL && s == NATS_OK
            && natsConnection_Connect(&nc, opts) != NATS_OK)
        {
            nc = NULL;
        }
        if (nc != NULL && js == NULL) {
            jsOptions_Init(&jo);
            jo.Wait = PROVEND_PUBLISH_WAIT_MS;
            jo.PublishAsync.MaxPending = 4096;
            /* the loop's thread publishes: when full, refused at once
             * (sent again by the sweep) rather than waited for */
            jo.PublishAsync.StallWait = 10;
            jo.PublishAsync.ErrHandler = provend_cstore_on_pub_err;
            jo.PublishAsync.ErrHandlerClosure = cs;
            if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK) {
                js = NULL;
            }
        }
        if (js != NULL
            /* a claim holds for 15 minutes: a turn of sessions' pruning */
            && provend_cstore_stream(cs, js, PROVEND_TICK_STREAM,
                                     PROVEND_TICK_SUBJECT,
                                     3600LL * 1000 * 1000 * 1000,
                                     900LL * 1000 * 1000 * 1000, NULL)
               == PROVEN_OK
            /* a write sent again is stored once within 2 minutes */
            && provend_cstore_stream(cs, js, PROVEND_LOG_STREAM,
                                     PROVEND_LOG_SUBJECT, 0,
                                     120LL * 1000 * 1000 * 1000, &last)
               == PROVEN_OK)
        {
            break;
        }
        /* nats-server starting, or no JetStream leader yet */
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_mutex_lock(&cs->lock);
        if (!cs->stopping) {
            pthread_cond_timedwait(&cs->cond, &cs->lock, &until);
        }
        pthread_mutex_unlock(&cs->lock);
    }

    pthread_mutex_lock(&cs->lock);
    cs->target = last;
    cs->ready = last == 0;
    pthread_mutex_unlock(&cs->lock);
    provend_info("cluster storage: following the log (%" PRIu64 " entries "
                 "to apply)", last);

    pthread_mutex_lock(&cs->lock);
    cs->nc = nc;
    cs->js = js;
    sub = NULL;
    while (!cs->stopping) {
        if (sub == NULL || cs->gap) {
            pthread_mutex_unlock(&cs->lock);
            sub = provend_cstore_follow_again(cs, js, sub);
            pthread_mutex_lock(&cs->lock);
            cs->sub = sub;
        }
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 250 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cs->cond, &cs->lock, &until);
        pthread_mutex_unlock(&cs->lock);
        provend_cwait_sweep(cs);
        pthread_mutex_lock(&cs->lock);
    }
    pthread_mutex_unlock(&cs->lock);
    nc = NULL;
    js = NULL;

done:

    natsOptions_Destroy(opts);
    if (js != NULL) {
        jsCtx_Destroy(js);
    }
    if (nc != NULL) {
        natsConnection_Destroy(nc);
    }
    return NULL;
}


/* ---- the module --------------------------------------------------------- */

/*
 * Leaves the cluster: the thread joined, the log no longer followed,
 * publishes under way settled, the connection closed, waiting writes told.
 * Before nats-server stops (a libnats connection left reconnecting while
 * it is destroyed can crash), and again from close (then nothing to do).
 */
static void
provend_cstore_disconnect(provend_cstore_t *cs)
{
    pthread_mutex_lock(&cs->lock);
    cs->stopping = 1;
    pthread_cond_broadcast(&cs->cond);
    pthread_mutex_unlock(&cs->lock);

    if (cs->thread_started) {
        pthread_join(cs->thread, NULL);
        cs->thread_started = 0;
    }
    if (cs->sub != NULL) {
        /* its callback may still run on libnats' thread: wait for it */
        if (!provend_cstore_unfollow(cs, cs->sub, cs->sub_state)) {
            /* cs is left allocated rather than freed under that callback */
            provend_error("cluster storage: the log's subscription did not "
                          "end in time");
            cs->lingering = 1;
        }
        cs->sub = NULL;
    }
    if (cs->js != NULL && !cs->disconnected) {
        jsPubOptions  po;

        /* acks or errors of publishes under way: their handler uses cs */
        jsPubOptions_Init(&po);
        po.MaxWait = 2000;
        (void) js_PublishAsyncComplete(cs->js, &po);
    }
    if (cs->nc != NULL && !cs->disconnected) {
        natsConnection_Close(cs->nc);
    }
    cs->disconnected = 1;
    provend_cwait_sweep(cs);
}


static void
provend_cstore_close(provend_storage_t *st)
{
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;
    provend_cstore_disconnect(cs);

    /* entries handed to the copy are answered as it closes */
    provend_storage_close(cs->local);

    if (cs->js != NULL) {
        jsCtx_Destroy(cs->js);
    }
    if (cs->nc != NULL) {
        natsConnection_Destroy(cs->nc);
    }
    OPENSSL_cleanse(cs->key, sizeof(cs->key));
    if (cs->lingering) {
        return;
    }
    pthread_cond_destroy(&cs->cond);
    pthread_mutex_destroy(&cs->hook_lock);
    pthread_mutex_destroy(&cs->lock);
    free(cs);
}


void
provend_storage_cluster_disconnect(provend_storage_t *st)
{
    provend_cstore_disconnect((provend_cstore_t *) st);
}


provend_storage_t *
provend_storage_cluster_open(provend_storage_t *local, char *err,
    size_t errlen)
{
    provend_cstore_t  *cs;

    cs = calloc(1, sizeof(*cs));
    if (cs == NULL || RAND_bytes(cs->id_prefix, sizeof(cs->id_prefix)) != 1)
    {
        free(cs);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&cs->lock, NULL);
    pthread_mutex_init(&cs->hook_lock, NULL);
    pthread_cond_init(&cs->cond, NULL);
    cs->local = local;

    cs->st.name = "cluster";
    cs->st.data = cs;
    cs->st.kv_get = provend_cstore_read;
    cs->st.kv_set = provend_cstore_write;
    cs->st.kv_delete = provend_cstore_write;
    cs->st.kv_keys = provend_cstore_read;
    cs->st.kv_sign = provend_cstore_read;
    cs->st.sql_execute = provend_cstore_write;
    cs->st.sql_query = provend_cstore_read;
    cs->st.sql_migrate = provend_cstore_write;
    cs->st.kv_peek = provend_cstore_peek;
    cs->st.hold = provend_cstore_hold;
    cs->st.release = provend_cstore_release;
    cs->st.close = provend_cstore_close;
    return &cs->st;
}


int
provend_storage_cluster_start(provend_storage_t *st,
    const uint8_t cluster_key[PROVEND_KEY_LEN], unsigned client_port,
    unsigned replicas)
{
    int                rc;
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;
    pthread_mutex_lock(&cs->lock);
    if (cs->started) {
        pthread_mutex_unlock(&cs->lock);
        return PROVEN_OK;
    }
    rc = provend_keys_derive(cluster_key, PROVEND_LOG_AD,
                             sizeof(PROVEND_LOG_AD) - 1, cs->key,
                             sizeof(cs->key));
    cs->client_port = client_port;
    cs->replicas = replicas;
    if (rc == PROVEN_OK
        && pthread_create(&cs->thread, NULL, provend_cstore_thread, cs) == 0)
    {
        cs->thread_started = 1;
        cs->started = 1;
    } else {
        rc = PROVEN_ERR;
    }
    pthread_mutex_unlock(&cs->lock);
    return rc;
}


int
provend_storage_cluster_follow(provend_storage_t *st, const char *db,
    provend_storage_applied_pt fn, void *data)
{
    int                rc;
    size_t             i;
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;
    rc = PROVEN_ERR;
    pthread_mutex_lock(&cs->hook_lock);
    for (i = 0; i < PROVEND_HOOKS_MAX; i++) {
        if (fn == NULL && cs->hooks[i].data == data
            && strcmp(cs->hooks[i].db, db) == 0)
        {
            cs->hooks[i].fn = NULL;
            cs->hooks[i].data = NULL;
            rc = PROVEN_OK;
        } else if (fn != NULL && cs->hooks[i].fn == NULL) {
            snprintf(cs->hooks[i].db, sizeof(cs->hooks[i].db), "%s", db);
            cs->hooks[i].fn = fn;
            cs->hooks[i].data = data;
            rc = PROVEN_OK;
            break;
        }
    }
    pthread_mutex_unlock(&cs->hook_lock);
    return rc;
}


cbor_item_t *
provend_storage_cluster_status(provend_storage_t *st)
{
    int                ok;
    cbor_item_t       *map;
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;
    map = cbor_new_definite_map(6);
    if (map == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&cs->lock);
    ok = proven_cbor_map_put(map, "following", cbor_build_bool(cs->sub
                                                                != NULL))
            == PROVEN_OK
         && proven_cbor_map_put(map, "ready", cbor_build_bool(cs->ready))
            == PROVEN_OK
         && proven_cbor_map_put(map, "applied",
                                cbor_build_uint64(provend_cstore_applied(cs)))
            == PROVEN_OK
         && proven_cbor_map_put(map, "at_start",
                                cbor_build_uint64(cs->target)) == PROVEN_OK
         && proven_cbor_map_put(map, "unreadable",
                                cbor_build_uint64(cs->skipped)) == PROVEN_OK
         && proven_cbor_map_put(map, "writes_waiting",
                                cbor_build_uint64(cs->nwaiters)) == PROVEN_OK;
    pthread_mutex_unlock(&cs->lock);
    if (!ok) {
        cbor_decref(&map);
    }
    return map;
}


/* The JetStream context while the store is connected, else NULL. */
static jsCtx *
provend_cstore_js(provend_cstore_t *cs)
{
    jsCtx  *js;

    pthread_mutex_lock(&cs->lock);
    js = cs->stopping ? NULL : cs->js;
    pthread_mutex_unlock(&cs->lock);
    return js;
}


int
provend_storage_cluster_claim(provend_storage_t *st, const char *what)
{
    int                claimed;
    natsStatus         s;
    jsCtx             *js;
    jsPubAck          *pa;
    jsPubOptions       po;
    jsErrCode          jerr;

    js = provend_cstore_js((provend_cstore_t *) st);
    if (js == NULL) {
        return 0;
    }

    /* the first node to publish this id within the window has it */
    jsPubOptions_Init(&po);
    po.MsgId = what;
    po.MaxWait = PROVEND_PUBLISH_WAIT_MS;
    pa = NULL;
    jerr = 0;
    s = js_Publish(&pa, js, PROVEND_TICK_SUBJECT, what, (int) strlen(what),
                   &po, &jerr);
    claimed = s == NATS_OK && pa != NULL && !pa->Duplicate;
    jsPubAck_Destroy(pa);
    return claimed;
}


uint64_t
provend_storage_cluster_last(provend_storage_t *st)
{
    uint64_t           last;
    jsCtx             *js;
    jsErrCode          jerr;
    jsStreamInfo      *si;

    js = provend_cstore_js((provend_cstore_t *) st);
    if (js == NULL) {
        return 0;
    }
    si = NULL;
    jerr = 0;
    if (js_GetStreamInfo(&si, js, PROVEND_LOG_STREAM, NULL, &jerr)
        != NATS_OK)
    {
        return 0;
    }
    last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return last;
}
