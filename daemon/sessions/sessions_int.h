/* Internal to daemon/sessions/: shared by its files, included by no other
 * subsystem. */

#ifndef PROVEND_SESSIONS_INT_H
#define PROVEND_SESSIONS_INT_H

/*
 * provend sessions: the table, session.create, rpc.call and its commands.
 * See sessions.h.  Everything runs on the loop thread.
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <uv.h>

#include "cluster/cluster.h"
#include "core/log.h"
#include "sessions.h"
#include "core/util.h"


#define PROVEND_SESSION_BUCKETS  16384      /* a power of two */
#define PROVEND_RPC_TYPE_MAX     64
#define PROVEND_HANDLER_MAX      256
#define PROVEND_IDENTITY_KEY_LEN 32
#define PROVEND_GRANT_BUCKETS    256
#define PROVEND_SESSION_QUEUE_MAX 64       /* messages waiting per session */
#define PROVEND_SESSION_RUNS_MAX  32       /* Executes under way per session */
#define PROVEND_SESSIONS_DB       "sessions"
#define PROVEND_SESSIONS_PRUNE_MS (10 * 60 * 1000)
#define PROVEND_SESSION_RECORD_MAX 2048
#define PROVEND_SESSIONS_UPSERT                                             \
    "INSERT INTO sessions (id, created, version, record) "                  \
    "VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "                   \
    "version = excluded.version, record = excluded.record "                 \
    "WHERE excluded.version >= sessions.version"
#define PROVEND_LOADS_MAX         1024     /* sessions being read at once */


typedef struct provend_session_s  provend_session_t;
typedef struct provend_grant_s    provend_grant_t;
typedef struct provend_change_s   provend_change_t;
typedef struct provend_loading_s  provend_loading_t;

/* A shared record applied here: the identity it says the session has. */
struct provend_change_s {
    uint8_t            id[PROVEND_SESSION_ID_LEN];
    uint64_t           version;
    int                identified;
    uint8_t            identity[32];
    uint8_t            proof[64];
    provend_change_t  *next;
};
typedef struct provend_verify_s   provend_verify_t;

struct provend_session_s {
    uint8_t              id[PROVEND_SESSION_ID_LEN];
    EVP_PKEY            *client_key;
    EVP_PKEY            *key;              /* the session's own */
    char                 app[PROVEND_NAME_MAX + 1];   /* "": management */
    char                 origin[PROVEND_ORIGIN_MAX + 1];
    int                  has_origin;
    int                  identified;
    uint8_t              identity[PROVEND_IDENTITY_KEY_LEN];
    uint8_t              identity_proof[64];  /* its signature over id */
    int                  has_seq;
    uint64_t             seq;              /* the last one accepted */
    uint64_t             created_ms;
    uint64_t             created_wall_ms;  /* the same, since the epoch */
    uint64_t             version;          /* of its shared record */
    uint64_t             used_ms;
    unsigned             refs;             /* the table's, calls' */
    int                  verifying;        /* a message on the pool */
    provend_verify_t    *queue;            /* the next ones, in order */
    provend_verify_t    *queue_tail;
    unsigned             queued;
    unsigned             running;          /* Execute calls under way */
    int                  listed;           /* in the table */
    provend_session_t   *chain;            /* same bucket */
    provend_session_t   *older;            /* by last use */
    provend_session_t   *newer;
};

struct provend_sessions_s {
    uv_loop_t                   *loop;
    provend_apps_t              *apps;
    void                        *server;
    provend_sessions_attest_pt   attest;
    size_t                       max;
    size_t                       count;
    uint64_t                     idle_ms;
    uint64_t                     life_ms;
    int                          any_origin;
    provend_storage_t           *storage;    /* shared with the cluster */
    uint64_t                     pruned_ms;
    int                          pruning;
    uv_work_t                    prune_work;

    /* sessions ended here (idle, expired): not read back before their
     * life is over (one slot per bucket: a newer end takes it over) */
    uint8_t                    (*ended_id)[PROVEND_SESSION_ID_LEN];
    uint64_t                    *ended_until;   /* wall clock, ms */

    /* identity changes applied to the shared records, for the loop */
    uv_async_t                   changes;
    int                          changes_open;
    pthread_mutex_t              changes_lock;
    provend_change_t            *changes_head;
    size_t                       nchanges;

    provend_loading_t           *loading;    /* sessions being read */
    size_t                       nloading;
    uv_timer_t                   sweep;
    provend_session_t           *oldest;
    provend_session_t           *newest;
    provend_session_t           *buckets[PROVEND_SESSION_BUCKETS];
    provend_grant_t             *grants[PROVEND_GRANT_BUCKETS];
};

/* A session.create waiting for its document (and, shared, its record). */
typedef struct {
    provend_sessions_t    *sessions;
    provend_session_t     *session;
    uint64_t               id;
    provend_ops_reply_pt   reply;
    void                  *ctx;
    uv_work_t              work;
    provend_storage_req_t *write;
    cbor_item_t           *result;
} provend_creation_t;


/*
 * What lets an app's worker use an identity's personal storage: made for
 * one Execute from an identified session, gone when it answers.
 */
struct provend_grant_s {
    char                 token[33];          /* 16 random bytes, hex */
    char                 app[PROVEND_NAME_MAX + 1];
    char                 identity[2 * PROVEND_IDENTITY_KEY_LEN + 1];
    provend_grant_t     *next;
};

/* A command answered later (Execute). */
typedef struct {
    provend_sessions_t    *sessions;
    provend_session_t     *session;
    uint64_t               seq;
    char                   type[PROVEND_RPC_TYPE_MAX + 1];
    uint64_t               started;        /* uv_hrtime() */
    uint64_t               id;
    provend_ops_reply_pt   reply;
    void                  *ctx;
    provend_grant_t       *grant;          /* Execute as an identity */
    int                    running;        /* counted in session->running */
} provend_rpc_t;


size_t provend_session_bucket(const uint8_t *id);

void provend_session_unref(provend_session_t *session);

void provend_session_touch(provend_sessions_t *s, provend_session_t *session);

void provend_session_drop(provend_sessions_t *s, provend_session_t *session);

int provend_session_expired(provend_sessions_t *s, provend_session_t *session,
    uint64_t now);

provend_session_t *provend_session_find(provend_sessions_t *s,
    const uint8_t *id);

void provend_session_end(provend_sessions_t *s, provend_session_t *session);

int provend_session_ended_here(provend_sessions_t *s, const uint8_t *id);

int provend_sessions_arg_text(const cbor_item_t *map, const char *name,
    char *out, size_t max, int *present, char *err, size_t errlen);

int provend_sessions_arg_bytes(const cbor_item_t *map, const char *name,
    size_t min, size_t max, const uint8_t **out, size_t *len, char *err,
    size_t errlen);

int provend_sessions_share(provend_sessions_t *s, provend_session_t *session,
    provend_creation_t *c);

int provend_sessions_load_first(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

void provend_sessions_applied(void *data, const provend_storage_req_t *req);

void provend_sessions_on_changes(uv_async_t *handle);

void provend_sessions_prune(provend_sessions_t *s);

void provend_sessions_op_check(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

void provend_sessions_op_rpc(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

void provend_sessions_dispatch_now(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

#endif
