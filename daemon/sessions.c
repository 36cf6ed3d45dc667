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

#include "cluster.h"
#include "log.h"
#include "sessions.h"
#include "util.h"


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


static int provend_sessions_share(provend_sessions_t *s,
    provend_session_t *session, provend_creation_t *c);
static int provend_session_ended_here(provend_sessions_t *s,
    const uint8_t *id);
static void provend_sessions_prune(provend_sessions_t *s);

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


/* ---- the table ----------------------------------------------------------- */

static size_t
provend_session_bucket(const uint8_t *id)
{
    uint32_t  h;

    /* ids are random: their first bytes spread well enough */
    memcpy(&h, id, sizeof(h));
    return h & (PROVEND_SESSION_BUCKETS - 1);
}


static void
provend_session_unref(provend_session_t *session)
{
    if (--session->refs > 0) {
        return;
    }
    EVP_PKEY_free(session->client_key);
    EVP_PKEY_free(session->key);
    OPENSSL_cleanse(session, sizeof(*session));
    free(session);
}


static void
provend_session_unlink_use(provend_sessions_t *s, provend_session_t *session)
{
    if (session->older == NULL && session->newer == NULL
        && s->oldest != session)
    {
        return;                         /* not in the list (a new one) */
    }
    if (session->older != NULL) {
        session->older->newer = session->newer;
    } else {
        s->oldest = session->newer;
    }
    if (session->newer != NULL) {
        session->newer->older = session->older;
    } else {
        s->newest = session->older;
    }
    session->older = NULL;
    session->newer = NULL;
}


static void
provend_session_touch(provend_sessions_t *s, provend_session_t *session)
{
    session->used_ms = uv_now(s->loop);
    if (s->newest == session) {
        return;
    }
    provend_session_unlink_use(s, session);
    session->older = s->newest;
    if (s->newest != NULL) {
        s->newest->newer = session;
    } else {
        s->oldest = session;
    }
    s->newest = session;
}


static void
provend_session_drop(provend_sessions_t *s, provend_session_t *session)
{
    provend_session_t  **p;

    if (!session->listed) {
        return;
    }
    for (p = &s->buckets[provend_session_bucket(session->id)]; *p != NULL;
         p = &(*p)->chain)
    {
        if (*p == session) {
            *p = session->chain;
            break;
        }
    }
    provend_session_unlink_use(s, session);
    session->listed = 0;
    s->count--;
    provend_session_unref(session);
}


static int
provend_session_expired(provend_sessions_t *s, provend_session_t *session,
    uint64_t now)
{
    uint64_t  wall;

    /* its life runs from its making, wherever that was: the wall clock */
    wall = provend_now_ms();
    return now - session->used_ms >= s->idle_ms
           || now - session->created_ms >= s->life_ms
           || (wall > session->created_wall_ms
               && wall - session->created_wall_ms >= s->life_ms);
}


static provend_session_t *
provend_session_find(provend_sessions_t *s, const uint8_t *id)
{
    provend_session_t  *session;

    for (session = s->buckets[provend_session_bucket(id)]; session != NULL;
         session = session->chain)
    {
        if (memcmp(session->id, id, PROVEND_SESSION_ID_LEN) == 0) {
            return session;
        }
    }
    return NULL;
}


/* Ends session here: dropped, and not read back from the shared records
 * before its life is over (its idle time is this node's). */
static void
provend_session_end(provend_sessions_t *s, provend_session_t *session)
{
    size_t  b;

    if (s->ended_id != NULL) {
        b = provend_session_bucket(session->id);
        memcpy(s->ended_id[b], session->id, PROVEND_SESSION_ID_LEN);
        s->ended_until[b] = session->created_wall_ms + s->life_ms;
    }
    provend_session_drop(s, session);
}


static int
provend_session_ended_here(provend_sessions_t *s, const uint8_t *id)
{
    size_t  b;

    if (s->ended_id == NULL) {
        return 0;
    }
    b = provend_session_bucket(id);
    return memcmp(s->ended_id[b], id, PROVEND_SESSION_ID_LEN) == 0
           && s->ended_until[b] > provend_now_ms();
}


static void
provend_sessions_on_sweep(uv_timer_t *timer)
{
    uint64_t             now;
    provend_sessions_t  *s;
    provend_session_t   *session, *next;

    s = timer->data;
    now = uv_now(s->loop);

    /* the idle ones are the oldest by use; the absolute limit is checked
     * on every use as well */
    for (session = s->oldest; session != NULL; session = next) {
        next = session->newer;
        if (now - session->used_ms < s->idle_ms) {
            break;
        }
        provend_session_end(s, session);
    }

    if (s->storage != NULL && now - s->pruned_ms >= PROVEND_SESSIONS_PRUNE_MS)
    {
        s->pruned_ms = now;
        provend_sessions_prune(s);
    }
}


/* ---- session.create ----------------------------------------------------- */

/* An optional text argument of at most max bytes, into out (NUL ended). */
static int
provend_sessions_arg_text(const cbor_item_t *map, const char *name,
    char *out, size_t max, int *present, char *err, size_t errlen)
{
    cbor_item_t  *item;

    *present = 0;
    out[0] = '\0';
    item = proven_cbor_map_get(map, name);
    if (item == NULL || proven_cbor_is_null(item)) {
        return PROVEN_OK;
    }
    if (proven_cbor_text_into(item, out, max + 1) != PROVEN_OK) {
        proven_errf(err, errlen, "\"%s\" must be a text of at most %zu "
                    "bytes, without a NUL", name, max);
        return PROVEN_ERR;
    }
    *present = 1;
    return PROVEN_OK;
}


/* A byte string argument of min..max bytes, borrowed. */
static int
provend_sessions_arg_bytes(const cbor_item_t *map, const char *name,
    size_t min, size_t max, const uint8_t **out, size_t *len, char *err,
    size_t errlen)
{
    cbor_item_t  *item;

    item = proven_cbor_map_get(map, name);
    if (item == NULL || !cbor_isa_bytestring(item)
        || !cbor_bytestring_is_definite(item)
        || cbor_bytestring_length(item) < min
        || cbor_bytestring_length(item) > max)
    {
        if (min == max) {
            proven_errf(err, errlen, "\"%s\" must be %zu bytes", name, min);
        } else {
            proven_errf(err, errlen, "\"%s\" must be %zu to %zu bytes", name,
                        min, max);
        }
        return PROVEN_ERR;
    }
    *out = cbor_bytestring_handle(item);
    *len = cbor_bytestring_length(item);
    return PROVEN_OK;
}


static void
provend_sessions_attested(void *data, int rc, const uint8_t *doc,
    size_t doc_len, const char *err)
{
    int                  ok;
    cbor_item_t         *result;
    provend_creation_t  *c;

    c = data;
    if (rc != PROVEN_OK) {
        provend_session_drop(c->sessions, c->session);
        provend_ops_reply_error(c->reply, c->ctx, c->id,
                                "attestation_failed", err);
        goto done;
    }

    result = cbor_new_definite_map(2);
    ok = result != NULL
         && proven_cbor_map_put(result, "session",
                                cbor_build_bytestring(c->session->id,
                                                     PROVEND_SESSION_ID_LEN))
            == PROVEN_OK
         && proven_cbor_map_put(result, "document",
                                cbor_build_bytestring(doc, doc_len))
            == PROVEN_OK;
    if (!ok && result != NULL) {
        cbor_decref(&result);
    }
    if (!ok) {
        provend_session_drop(c->sessions, c->session);
    }
    if (ok && c->sessions->storage != NULL) {
        /* in a cluster: answered once every node can find it */
        c->result = result;
        if (provend_sessions_share(c->sessions, c->session, c) == PROVEN_OK)
        {
            return;
        }
        c->result = NULL;
        cbor_decref(&result);
        provend_session_drop(c->sessions, c->session);
        provend_ops_reply_error(c->reply, c->ctx, c->id, "internal",
                                "out of memory");
        goto done;
    }
    provend_ops_reply_ok(c->reply, c->ctx, c->id, ok ? result : NULL);

done:

    provend_session_unref(c->session);
    free(c);
}


static EVP_PKEY *
provend_sessions_new_key(uint8_t pub[32])
{
    size_t     len;
    EVP_PKEY  *key;

    key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    len = 32;
    if (key != NULL
        && (EVP_PKEY_get_raw_public_key(key, pub, &len) != 1 || len != 32))
    {
        EVP_PKEY_free(key);
        key = NULL;
    }
    return key;
}


static void
provend_sessions_op_create(provend_sessions_t *s, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    int                  has_app, has_origin;
    char                 err[PROVEN_ERR_LEN];
    size_t               nonce_len, key_len;
    uint8_t              pub[32];
    const uint8_t       *nonce, *client;
    proven_buf_t         b_nonce, b_id, b_pub;
    provend_session_t   *session;
    provend_creation_t  *c;

    session = calloc(1, sizeof(*session));
    if (session == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    session->refs = 1;

    if (provend_sessions_arg_bytes(req->map, "nonce", 1,
                                   PROVEN_ATT_FIELD_MAX, &nonce, &nonce_len,
                                   err, sizeof(err)) != PROVEN_OK
        || provend_sessions_arg_bytes(req->map, "public_key", 32, 32,
                                      &client, &key_len, err, sizeof(err))
           != PROVEN_OK
        || provend_sessions_arg_text(req->map, "app", session->app,
                                     PROVEND_NAME_MAX, &has_app, err,
                                     sizeof(err)) != PROVEN_OK
        || provend_sessions_arg_text(req->map, "origin", session->origin,
                                     PROVEND_ORIGIN_MAX, &has_origin, err,
                                     sizeof(err)) != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", err);
        goto failed;
    }
    session->has_origin = has_origin;

    if (has_app) {
        if (s->apps == NULL || !provend_apps_exists(s->apps, session->app)) {
            snprintf(err, sizeof(err), "no application \"%s\" on this node",
                     session->app);
            provend_ops_reply_error(reply, ctx, req->id, "not_found", err);
            goto failed;
        }
        if (!has_origin) {
            provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                    "an application's session needs the "
                                    "Origin of the page that opens it");
            goto failed;
        }
        if (!s->any_origin
            && !provend_apps_origin_allowed(s->apps, session->app,
                                            session->origin))
        {
            snprintf(err, sizeof(err), "the origin \"%.120s\" is not "
                     "allowed for \"%s\"", session->origin, session->app);
            provend_ops_reply_error(reply, ctx, req->id, "forbidden", err);
            goto failed;
        }
    }

    if (s->count >= s->max) {
        provend_ops_reply_error(reply, ctx, req->id, "busy",
                                "too many sessions are open on this node");
        goto failed;
    }

    session->client_key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL,
                                                      client, key_len);
    session->key = provend_sessions_new_key(pub);
    c = calloc(1, sizeof(*c));
    if (session->client_key == NULL || session->key == NULL || c == NULL
        || proven_uuid_v4(session->id) != PROVEN_OK)
    {
        free(c);
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "cannot make the session's keys");
        goto failed;
    }

    session->created_ms = uv_now(s->loop);
    session->created_wall_ms = provend_now_ms();
    session->listed = 1;
    session->chain = s->buckets[provend_session_bucket(session->id)];
    s->buckets[provend_session_bucket(session->id)] = session;
    s->count++;
    provend_session_touch(s, session);

    c->sessions = s;
    c->session = session;
    c->id = req->id;
    c->reply = reply;
    c->ctx = ctx;
    session->refs++;

    memset(&b_nonce, 0, sizeof(b_nonce));
    b_nonce.data = (uint8_t *) nonce;
    b_nonce.len = nonce_len;
    b_nonce.present = 1;
    b_id = b_nonce;
    b_id.data = session->id;
    b_id.len = PROVEND_SESSION_ID_LEN;
    b_pub = b_nonce;
    b_pub.data = pub;
    b_pub.len = sizeof(pub);

    if (s->attest(s->server, &b_nonce, &b_id, &b_pub,
                  provend_sessions_attested, c, err, sizeof(err))
        != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "attestation_failed",
                                err);
        provend_session_drop(s, session);
        free(c);
        goto failed;
    }
    return;

failed:

    provend_session_unref(session);
}


/* ---- in a cluster: sessions every node can find --------------------- */

/*
 * A session's record in the node's database "sessions" (replicated like
 * every write): {app, origin?, client, key (the session's private key),
 * created (ms since the epoch), identity?, proof?}.  Written when the
 * session is made and when its identity changes; a node asked for a
 * session it does not hold reads it from its copy.  What each node keeps
 * to itself: the last seq it accepted and the last use (idle time).
 */
static cbor_item_t *
provend_session_record(const provend_session_t *session)
{
    int           ok;
    size_t        len;
    uint8_t       raw[32];
    cbor_item_t  *map;

    map = cbor_new_definite_map(8);
    if (map == NULL) {
        return NULL;
    }
    ok = proven_cbor_map_put(map, "app", cbor_build_string(session->app))
         == PROVEN_OK
         && (!session->has_origin
             || proven_cbor_map_put(map, "origin",
                                    cbor_build_string(session->origin))
                == PROVEN_OK);
    len = sizeof(raw);
    ok = ok && EVP_PKEY_get_raw_public_key(session->client_key, raw, &len)
               == 1 && len == 32
         && proven_cbor_map_put(map, "client",
                                cbor_build_bytestring(raw, 32)) == PROVEN_OK;
    len = sizeof(raw);
    ok = ok && EVP_PKEY_get_raw_private_key(session->key, raw, &len) == 1
         && len == 32
         && proven_cbor_map_put(map, "key", cbor_build_bytestring(raw, 32))
            == PROVEN_OK
         && proven_cbor_map_put(map, "created",
                                cbor_build_uint64(session->created_wall_ms))
            == PROVEN_OK
         && proven_cbor_map_put(map, "version",
                                cbor_build_uint64(session->version))
            == PROVEN_OK
         && (!session->identified
             || (proven_cbor_map_put(map, "identity",
                     cbor_build_bytestring(session->identity,
                                           PROVEND_IDENTITY_KEY_LEN))
                 == PROVEN_OK
                 && proven_cbor_map_put(map, "proof",
                     cbor_build_bytestring(session->identity_proof, 64))
                    == PROVEN_OK));
    OPENSSL_cleanse(raw, sizeof(raw));
    if (!ok) {
        cbor_decref(&map);
    }
    return map;
}


static void
provend_sessions_write(uv_work_t *work)
{
    provend_creation_t  *c;

    c = work->data;
    (void) provend_storage_call(c->sessions->storage, c->write);
}


static void
provend_sessions_written(uv_work_t *work, int status)
{
    provend_creation_t  *c;

    c = work->data;
    if (status != 0 || c->write->status != PROVEND_ST_OK) {
        provend_error("sessions: a session could not be shared: %s",
                      c->write->error);
        provend_session_drop(c->sessions, c->session);
        provend_ops_reply_error(c->reply, c->ctx, c->id, "storage_error",
                                "the session could not be shared with the "
                                "cluster");
        cbor_decref(&c->result);
    } else {
        provend_ops_reply_ok(c->reply, c->ctx, c->id, c->result);
    }
    provend_storage_req_free(c->write);
    provend_session_unref(c->session);
    free(c);
}


static void
provend_sessions_shared(provend_storage_req_t *req)
{
    if (req->status != PROVEND_ST_OK) {
        provend_warn("sessions: a change of identity was not shared: %s",
                     req->error);
    }
    provend_storage_req_free(req);
}


/*
 * Writes session's record: for c (a creation), on the pool and then
 * answers c; else in the background (an identity change: the node that
 * made it has it at once, the others a moment later).
 */
static int
provend_sessions_share(provend_sessions_t *s, provend_session_t *session,
    provend_creation_t *c)
{
    int                     rc;
    uint8_t                *record;
    size_t                  record_len;
    cbor_item_t            *map;
    provend_storage_req_t  *req;

    if (s->storage == NULL) {
        return PROVEN_OK;
    }
    /* nodes take a record only if it is newer than what they have */
    session->version++;
    record = NULL;
    map = provend_session_record(session);
    rc = map != NULL ? proven_cbor_dump(map, &record, &record_len)
                     : PROVEN_ERR;
    if (map != NULL) {
        cbor_decref(&map);
    }
    req = rc == PROVEN_OK
          ? provend_storage_own_sql(PROVEND_OP_SQL_EXECUTE,
                                    PROVEND_SESSIONS_DB, 1)
          : NULL;
    if (req == NULL
        /*
         * The newest version stays, and between equal versions (two nodes
         * changing it at once) the later in the log: the same everywhere.
         */
        || provend_storage_stmt(req, 0, PROVEND_SESSIONS_UPSERT, 4)
           != PROVEN_OK
        || provend_storage_param(&req->stmts[0], 0, PROVEND_SQL_BLOB,
                                 session->id, PROVEND_SESSION_ID_LEN)
           != PROVEN_OK
        || provend_storage_param(&req->stmts[0], 3, PROVEND_SQL_BLOB, record,
                                 record_len) != PROVEN_OK)
    {
        if (record != NULL) {
            OPENSSL_cleanse(record, record_len);
        }
        free(record);
        provend_storage_req_free(req);
        return PROVEN_ERR;
    }
    provend_storage_param_int(&req->stmts[0], 1,
                              (int64_t) session->created_wall_ms);
    provend_storage_param_int(&req->stmts[0], 2, (int64_t) session->version);
    OPENSSL_cleanse(record, record_len);
    free(record);

    if (c == NULL) {
        req->done = provend_sessions_shared;
        provend_storage_submit(s->storage, req);
        return PROVEN_OK;
    }
    c->write = req;
    c->work.data = c;
    if (uv_queue_work(s->loop, &c->work, provend_sessions_write,
                      provend_sessions_written) != 0)
    {
        c->write = NULL;
        provend_storage_req_free(req);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/* A 32-byte field of the record, or NULL. */
static const uint8_t *
provend_record_key(const cbor_item_t *map, const char *name, size_t len)
{
    cbor_item_t  *item;

    item = proven_cbor_map_get(map, name);
    return item != NULL && cbor_isa_bytestring(item)
           && cbor_bytestring_is_definite(item)
           && cbor_bytestring_length(item) == len
           ? cbor_bytestring_handle(item) : NULL;
}


/* A text field into out (max + 1 bytes); absent: 0 and "". */
static int
provend_record_text(const cbor_item_t *map, const char *name, char *out,
    size_t max, int *has)
{
    cbor_item_t  *item;

    out[0] = '\0';
    *has = 0;
    item = proven_cbor_map_get(map, name);
    if (item == NULL) {
        return PROVEN_OK;
    }
    if (proven_cbor_text_into(item, out, max + 1) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    *has = 1;
    return PROVEN_OK;
}


/* A request held while its session is read from the shared records. */
typedef struct provend_held_s  provend_held_t;

struct provend_held_s {
    proven_request_t       req;        /* its map: a reference of ours */
    provend_ops_reply_pt   reply;
    void                  *ctx;
    provend_held_t        *next;
};

/*
 * A session this node does not hold, being read: one read per id, the
 * requests naming it held in order, and the newest identity change
 * applied meanwhile (the record read may be older).
 */
struct provend_loading_s {
    uv_work_t              work;
    provend_sessions_t    *sessions;
    uint8_t                id[PROVEND_SESSION_ID_LEN];
    uint8_t               *record;     /* NULL: none */
    size_t                 record_len;
    provend_held_t        *held;
    provend_held_t       **held_tail;
    provend_change_t      *change;
    provend_loading_t     *next;
};


/* The record of id from this node's copy, "after" a place in the log. */
static int
provend_sessions_query_record(provend_loading_t *l, uint64_t after)
{
    cbor_item_t            *rows, *row, *bytes;
    provend_storage_req_t  *req;

    req = provend_storage_own_sql(PROVEND_OP_SQL_QUERY, PROVEND_SESSIONS_DB,
                                  1);
    if (req == NULL
        || provend_storage_stmt(req, 0, "SELECT record FROM sessions "
                                "WHERE id = ?", 1) != PROVEN_OK
        || provend_storage_param(&req->stmts[0], 0, PROVEND_SQL_BLOB, l->id,
                                 PROVEND_SESSION_ID_LEN) != PROVEN_OK)
    {
        provend_storage_req_free(req);
        return PROVEN_ERR;
    }
    req->after = after;
    if (provend_storage_call(l->sessions->storage, req) != PROVEND_ST_OK) {
        provend_storage_req_free(req);
        return PROVEN_ERR;
    }
    rows = proven_cbor_map_get(req->result, "rows");
    row = rows != NULL && cbor_isa_array(rows) && cbor_array_size(rows) == 1
          ? cbor_array_handle(rows)[0] : NULL;
    bytes = row != NULL && cbor_isa_array(row) && cbor_array_size(row) == 1
            ? cbor_array_handle(row)[0] : NULL;
    if (bytes != NULL
        && proven_cbor_bytes(bytes, PROVEND_SESSION_RECORD_MAX, &l->record,
                             &l->record_len) != PROVEN_OK)
    {
        l->record = NULL;
    }
    if (bytes != NULL && cbor_isa_bytestring(bytes)
        && cbor_bytestring_is_definite(bytes))
    {
        /* the copy in the answer holds the session's key */
        OPENSSL_cleanse(cbor_bytestring_handle(bytes),
                        cbor_bytestring_length(bytes));
    }
    provend_storage_req_free(req);
    return PROVEN_OK;
}


/*
 * On the pool: the record, from this node's copy (the loop never waits).
 * Not there: maybe made a moment ago on another node and not applied here
 * yet, so asked again once this node holds the log as it is now.
 */
static void
provend_sessions_read_record(uv_work_t *work)
{
    uint64_t            last;
    provend_loading_t  *l;

    l = work->data;
    if (provend_sessions_query_record(l, 0) != PROVEN_OK
        || l->record != NULL)
    {
        return;
    }
    last = provend_storage_cluster_last(l->sessions->storage);
    if (last != 0) {
        (void) provend_sessions_query_record(l, last);
    }
}


/*
 * The session a record describes, put in the table; NULL if it is
 * malformed, past its life, or the table is full.
 */
static provend_session_t *
provend_sessions_from_record(provend_sessions_t *s, const uint8_t *id,
    const uint8_t *record, size_t record_len)
{
    int                     has_app;
    uint64_t                created, now_wall, age;
    cbor_item_t            *map;
    const uint8_t          *client, *key, *identity, *proof;
    provend_session_t      *session;
    struct cbor_load_result  loaded;

    if (s->count >= s->max) {
        return NULL;
    }
    key = NULL;
    map = cbor_load(record, record_len, &loaded);
    session = calloc(1, sizeof(*session));
    if (map == NULL || session == NULL) {
        goto failed;
    }
    session->refs = 1;
    memcpy(session->id, id, PROVEND_SESSION_ID_LEN);

    client = provend_record_key(map, "client", 32);
    key = provend_record_key(map, "key", 32);
    identity = provend_record_key(map, "identity", PROVEND_IDENTITY_KEY_LEN);
    proof = provend_record_key(map, "proof", 64);
    if (!cbor_isa_map(map) || client == NULL || key == NULL
        || proven_cbor_uint(proven_cbor_map_get(map, "created"), &created)
           != PROVEN_OK
        || provend_record_text(map, "app", session->app, PROVEND_NAME_MAX,
                               &has_app) != PROVEN_OK || !has_app
        || provend_record_text(map, "origin", session->origin,
                               PROVEND_ORIGIN_MAX, &session->has_origin)
           != PROVEN_OK)
    {
        provend_warn("sessions: a shared session record is malformed");
        goto failed;
    }

    /* its life runs from when it was made, wherever that was */
    now_wall = provend_now_ms();
    age = now_wall > created ? now_wall - created : 0;
    if (age >= s->life_ms) {
        goto failed;
    }
    session->client_key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL,
                                                      client, 32);
    session->key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, key,
                                                32);
    if (session->client_key == NULL || session->key == NULL) {
        goto failed;
    }
    if (identity != NULL && proof != NULL) {
        memcpy(session->identity, identity, PROVEND_IDENTITY_KEY_LEN);
        memcpy(session->identity_proof, proof, 64);
        session->identified = 1;
    }
    if (proven_cbor_uint(proven_cbor_map_get(map, "version"),
                         &session->version) != PROVEN_OK)
    {
        session->version = 0;
    }
    session->created_wall_ms = created;
    session->created_ms = uv_now(s->loop) > age ? uv_now(s->loop) - age : 0;
    OPENSSL_cleanse((void *) key, 32);
    cbor_decref(&map);

    session->listed = 1;
    session->chain = s->buckets[provend_session_bucket(session->id)];
    s->buckets[provend_session_bucket(session->id)] = session;
    s->count++;
    provend_session_touch(s, session);
    return session;

failed:

    if (key != NULL) {
        OPENSSL_cleanse((void *) key, 32);
    }
    if (map != NULL) {
        cbor_decref(&map);
    }
    if (session != NULL) {
        provend_session_unref(session);
    }
    return NULL;
}


static void provend_sessions_dispatch_now(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);


static provend_loading_t *
provend_sessions_loading(provend_sessions_t *s, const uint8_t *id)
{
    provend_loading_t  *l;

    for (l = s->loading; l != NULL; l = l->next) {
        if (memcmp(l->id, id, PROVEND_SESSION_ID_LEN) == 0) {
            return l;
        }
    }
    return NULL;
}


static void
provend_sessions_record_read(uv_work_t *work, int status)
{
    provend_held_t      *h;
    provend_session_t   *session;
    provend_loading_t   *l, **pp;
    provend_sessions_t  *s;

    l = work->data;
    s = l->sessions;
    for (pp = &s->loading; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            s->nloading--;
            break;
        }
    }

    session = NULL;
    if (status == 0 && l->record != NULL
        && provend_session_find(s, l->id) == NULL)
    {
        session = provend_sessions_from_record(s, l->id, l->record,
                                               l->record_len);
    }
    if (session != NULL && l->change != NULL
        && l->change->version >= session->version)
    {
        /* an identity change applied while the record was read */
        session->version = l->change->version;
        session->identified = l->change->identified;
        memcpy(session->identity, l->change->identity,
               sizeof(l->change->identity));
        memcpy(session->identity_proof, l->change->proof,
               sizeof(l->change->proof));
    }
    if (l->record != NULL) {
        OPENSSL_cleanse(l->record, l->record_len);
        free(l->record);
    }
    free(l->change);

    /* found or not, the requests go on, in the order they came */
    while ((h = l->held) != NULL) {
        l->held = h->next;
        provend_sessions_dispatch_now(s, &h->req, h->reply, h->ctx);
        cbor_decref(&h->req.map);
        free(h);
    }
    free(l);
}


/*
 * PROVEN_OK when req (rpc.call, session.check) names a session this node
 * does not hold but may find in its copy: it is dispatched once the
 * record has been read (on the pool: the loop never waits for storage).
 */
static int
provend_sessions_load_first(provend_sessions_t *s, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    size_t              len;
    const uint8_t      *id;
    provend_held_t     *h;
    provend_loading_t  *l;

    if (s->storage == NULL
        || provend_sessions_arg_bytes(req->map, "session",
                                      PROVEND_SESSION_ID_LEN,
                                      PROVEND_SESSION_ID_LEN, &id, &len,
                                      NULL, 0) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    l = provend_sessions_loading(s, id);
    if (l == NULL
        && (provend_session_find(s, id) != NULL
            || provend_session_ended_here(s, id)
            || s->nloading >= PROVEND_LOADS_MAX))
    {
        return PROVEN_ERR;
    }

    h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return PROVEN_ERR;
    }
    h->req = *req;
    h->req.map = cbor_incref(req->map);
    h->reply = reply;
    h->ctx = ctx;

    if (l != NULL) {
        /* behind the ones already held: their order is the session's */
        *l->held_tail = h;
        l->held_tail = &h->next;
        return PROVEN_OK;
    }

    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        cbor_decref(&h->req.map);
        free(h);
        return PROVEN_ERR;
    }
    l->sessions = s;
    memcpy(l->id, id, PROVEND_SESSION_ID_LEN);
    l->held = h;
    l->held_tail = &h->next;
    l->work.data = l;
    if (uv_queue_work(s->loop, &l->work, provend_sessions_read_record,
                      provend_sessions_record_read) != 0)
    {
        cbor_decref(&h->req.map);
        free(h);
        free(l);
        return PROVEN_ERR;
    }
    l->next = s->loading;
    s->loading = l;
    s->nloading++;
    return PROVEN_OK;
}


/*
 * On a storage thread: a shared record applied to this node's copy (its
 * own writes included).  The identity it carries goes to the loop, where
 * a session held here takes it if the record is newer than its own.
 */
static void
provend_sessions_applied(void *data, const provend_storage_req_t *req)
{
    uint64_t                 version;
    cbor_item_t             *map;
    const uint8_t           *identity, *proof;
    provend_change_t        *c;
    provend_sessions_t      *s;
    const provend_sql_stmt_t *st;
    struct cbor_load_result  loaded;

    s = data;
    st = req->nstmts == 1 ? &req->stmts[0] : NULL;
    if (req->status != PROVEND_ST_OK || st == NULL || st->nparams != 4
        || strcmp(st->sql, PROVEND_SESSIONS_UPSERT) != 0
        || st->params[0].len != PROVEND_SESSION_ID_LEN
        || st->params[3].data == NULL)
    {
        return;                 /* a prune, or not ours */
    }
    map = cbor_load(st->params[3].data, st->params[3].len, &loaded);
    c = map != NULL ? calloc(1, sizeof(*c)) : NULL;
    if (c == NULL
        || proven_cbor_uint(proven_cbor_map_get(map, "version"), &version)
           != PROVEN_OK)
    {
        free(c);
        if (map != NULL) {
            cbor_decref(&map);
        }
        return;
    }
    memcpy(c->id, st->params[0].data, PROVEND_SESSION_ID_LEN);
    c->version = version;
    identity = provend_record_key(map, "identity", 32);
    proof = provend_record_key(map, "proof", 64);
    if (identity != NULL && proof != NULL) {
        c->identified = 1;
        memcpy(c->identity, identity, 32);
        memcpy(c->proof, proof, 64);
    }
    /* the record holds the session's key: wiped before it is freed */
    if (provend_record_key(map, "key", 32) != NULL) {
        OPENSSL_cleanse((void *) provend_record_key(map, "key", 32), 32);
    }
    cbor_decref(&map);

    pthread_mutex_lock(&s->changes_lock);
    if (s->nchanges < PROVEND_SESSIONS_MAX) {
        c->next = s->changes_head;
        s->changes_head = c;
        s->nchanges++;
        c = NULL;
    }
    pthread_mutex_unlock(&s->changes_lock);
    if (c != NULL) {
        provend_warn("sessions: too many identity changes waiting: one "
                     "dropped");
        free(c);
    }
    uv_async_send(&s->changes);
}


/* On the loop: identity changes made on other nodes, to the sessions here. */
static void
provend_sessions_on_changes(uv_async_t *handle)
{
    provend_change_t    *list, *c, *rev;
    provend_session_t   *session;
    provend_loading_t   *l;
    provend_sessions_t  *s;

    s = handle->data;
    pthread_mutex_lock(&s->changes_lock);
    list = s->changes_head;
    s->changes_head = NULL;
    s->nchanges = 0;
    pthread_mutex_unlock(&s->changes_lock);

    /* pushed newest first: taken in the order they were applied */
    rev = NULL;
    while ((c = list) != NULL) {
        list = c->next;
        c->next = rev;
        rev = c;
    }
    while ((c = rev) != NULL) {
        rev = c->next;
        session = provend_session_find(s, c->id);
        /* equal versions (two nodes at once): the later in the log */
        if (session != NULL && c->version >= session->version) {
            session->version = c->version;
            session->identified = c->identified;
            memcpy(session->identity, c->identity, sizeof(c->identity));
            memcpy(session->identity_proof, c->proof, sizeof(c->proof));
        } else if (session == NULL
                   && (l = provend_sessions_loading(s, c->id)) != NULL
                   && (l->change == NULL
                       || c->version >= l->change->version))
        {
            /* being read: taken once the record is in */
            free(l->change);
            l->change = c;
            c->next = NULL;
            continue;
        }
        free(c);
    }
}


/*
 * On the pool: the shared records past every session's life removed, by
 * one node per ten minutes (the first to claim the turn), and only when
 * there are some (every write stays in the log).
 */
/* One statement on the records made before `before` (its one "?"). */
static provend_storage_req_t *
provend_sessions_older(provend_storage_op_t op, const char *sql,
    int64_t before)
{
    provend_storage_req_t  *req;

    req = provend_storage_own_sql(op, PROVEND_SESSIONS_DB, 1);
    if (req == NULL || provend_storage_stmt(req, 0, sql, 1) != PROVEN_OK) {
        provend_storage_req_free(req);
        return NULL;
    }
    provend_storage_param_int(&req->stmts[0], 0, before);
    return req;
}


static void
provend_sessions_prune_work(uv_work_t *work)
{
    char                    turn[64];
    int64_t                 before;
    uint64_t                now;
    cbor_item_t            *rows;
    provend_sessions_t     *s;
    provend_storage_req_t  *req;

    s = work->data;
    now = provend_now_ms();
    before = (int64_t) (now > s->life_ms ? now - s->life_ms : 0);

    req = provend_sessions_older(PROVEND_OP_SQL_QUERY, "SELECT 1 FROM "
                                 "sessions WHERE created < ? LIMIT 1",
                                 before);
    if (req == NULL) {
        return;
    }
    rows = provend_storage_call(s->storage, req) == PROVEND_ST_OK
           ? proven_cbor_map_get(req->result, "rows") : NULL;
    if (rows == NULL || !cbor_isa_array(rows) || cbor_array_size(rows) == 0)
    {
        provend_storage_req_free(req);
        return;
    }
    provend_storage_req_free(req);

    snprintf(turn, sizeof(turn), "sessions-prune-%llu",
             (unsigned long long) (now / PROVEND_SESSIONS_PRUNE_MS));
    if (!provend_storage_cluster_claim(s->storage, turn)) {
        return;
    }
    req = provend_sessions_older(PROVEND_OP_SQL_EXECUTE, "DELETE FROM "
                                 "sessions WHERE created < ?", before);
    if (req == NULL) {
        return;
    }
    if (provend_storage_call(s->storage, req) != PROVEND_ST_OK) {
        /* the next turn tries again */
        provend_debug("sessions: old records not removed: %s", req->error);
    }
    provend_storage_req_free(req);
}


static void
provend_sessions_prune_done(uv_work_t *work, int status)
{
    provend_sessions_t  *s;

    (void) status;
    s = work->data;
    s->pruning = 0;
}


static void
provend_sessions_prune(provend_sessions_t *s)
{
    if (s->pruning) {
        return;
    }
    s->prune_work.data = s;
    if (uv_queue_work(s->loop, &s->prune_work, provend_sessions_prune_work,
                      provend_sessions_prune_done) == 0)
    {
        s->pruning = 1;
    }
}


/* ---- rpc.call ------------------------------------------------------------ */

/* The live session id of app ("": none); NULL and *why if there is none. */
static provend_session_t *
provend_session_lookup(provend_sessions_t *s, const uint8_t *id,
    const char *app, const char **why)
{
    provend_session_t  *session;

    session = provend_session_find(s, id);
    if (session != NULL
        && provend_session_expired(s, session, uv_now(s->loop)))
    {
        provend_session_end(s, session);
        *why = "the session has expired";
        return NULL;
    }
    if (session == NULL) {
        *why = "no such session";
        return NULL;
    }
    if (strcmp(session->app, app) != 0) {
        *why = app[0] == '\0' ? "the session is an application's: use "
                                "/app/NAME/rpc"
               : session->app[0] == '\0'
               ? "the session is not this application's"
               : "the session belongs to another application";
        return NULL;
    }
    return session;
}


/*
 * The live session req names ({session, app?}), or NULL once req is
 * answered with why not.
 */
static provend_session_t *
provend_sessions_arg_session(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    int                 has_app;
    char                app[PROVEND_NAME_MAX + 1], err[PROVEN_ERR_LEN];
    size_t              id_len;
    const char         *why;
    const uint8_t      *id;
    provend_session_t  *session;

    if (provend_sessions_arg_bytes(req->map, "session",
                                   PROVEND_SESSION_ID_LEN,
                                   PROVEND_SESSION_ID_LEN, &id, &id_len, err,
                                   sizeof(err)) != PROVEN_OK
        || provend_sessions_arg_text(req->map, "app", app, PROVEND_NAME_MAX,
                                     &has_app, err, sizeof(err)) != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", err);
        return NULL;
    }
    session = provend_session_lookup(s, id, app, &why);
    if (session == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "unknown_session", why);
    }
    return session;
}


/* session.check {session, app?}: {} while the session lives. */
static void
provend_sessions_op_check(provend_sessions_t *s, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    provend_session_t  *session;

    session = provend_sessions_arg_session(s, req, reply, ctx);
    if (session == NULL) {
        return;
    }
    provend_session_touch(s, session);
    provend_ops_reply_ok(reply, ctx, req->id, cbor_new_definite_map(0));
}

/* An answer being signed on the thread pool. */
typedef struct {
    uv_work_t              work;
    provend_session_t     *session;
    uint64_t               seq;
    uint8_t               *payload;
    size_t                 payload_len;
    uint64_t               id;
    provend_ops_reply_pt   reply;
    void                  *ctx;
    uint8_t               *frame;         /* the response, made off the loop */
    size_t                 frame_len;
} provend_sign_job_t;


static void
provend_sign_work(uv_work_t *work)
{
    char                 err[PROVEN_ERR_LEN];
    size_t               msg_len;
    uint8_t             *msg;
    cbor_item_t         *answer;
    provend_sign_job_t  *job;

    job = work->data;
    if (proven_cose_sign_eddsa(job->payload, job->payload_len, job->seq,
                               job->session->id, PROVEND_SESSION_ID_LEN,
                               job->session->key, &msg, &msg_len, err,
                               sizeof(err)) != PROVEN_OK)
    {
        return;
    }
    answer = cbor_new_definite_map(1);
    if (answer != NULL
        && proven_cbor_map_put(answer, "message",
                               cbor_build_bytestring(msg, msg_len))
           == PROVEN_OK
        && proven_response_encode_ok(job->id, answer, &job->frame,
                                     &job->frame_len) != PROVEN_OK)
    {
        job->frame = NULL;
    }
    if (answer != NULL) {
        cbor_decref(&answer);
    }
    free(msg);
}


static void
provend_sign_done(uv_work_t *work, int status)
{
    provend_sign_job_t  *job;

    job = work->data;
    if (status != 0 || job->frame == NULL) {
        provend_ops_reply_error(job->reply, job->ctx, job->id, "internal",
                                "the answer could not be signed");
    } else {
        job->reply(job->ctx, job->frame, job->frame_len);
    }
    provend_session_unref(job->session);
    free(job->payload);
    free(job);
}


/*
 * Answers {"type": type, "data": {"result": result, "data": data}} signed
 * by the session key; takes data (a reference, NULL: null).  The payload is
 * built here, signed on the thread pool: Ed25519 is most of an answer's
 * cost, and the loop thread stays free for the next message.
 */
static void
provend_rpc_answer(provend_sessions_t *s, provend_session_t *session,
    uint64_t seq, const char *type, const char *result, cbor_item_t *data,
    uint64_t id, provend_ops_reply_pt reply, void *ctx)
{
    int                  ok;
    cbor_item_t         *outer, *inner;
    provend_sign_job_t  *job;

    if (data == NULL) {
        data = cbor_new_null();
    }
    outer = cbor_new_definite_map(2);
    inner = cbor_new_definite_map(2);
    ok = outer != NULL && inner != NULL && data != NULL
         && proven_cbor_map_put(inner, "result", cbor_build_string(result))
            == PROVEN_OK;
    if (ok) {
        ok = proven_cbor_map_put(inner, "data", data) == PROVEN_OK;
        data = NULL;
        ok = ok && proven_cbor_map_put(outer, "type",
                                       cbor_build_string(type)) == PROVEN_OK;
        /* map_put takes inner's reference whatever it returns */
        ok = proven_cbor_map_put(outer, "data", inner) == PROVEN_OK && ok;
        inner = NULL;
    }

    job = ok ? calloc(1, sizeof(*job)) : NULL;
    if (job != NULL) {
        job->work.data = job;
        job->session = session;
        job->seq = seq;
        job->id = id;
        job->reply = reply;
        job->ctx = ctx;
        if (proven_cbor_dump(outer, &job->payload, &job->payload_len)
            != PROVEN_OK
            || uv_queue_work(s->loop, &job->work, provend_sign_work,
                             provend_sign_done) != 0)
        {
            free(job->payload);
            free(job);
            job = NULL;
        } else {
            session->refs++;
        }
    }
    if (job == NULL) {
        provend_ops_reply_error(reply, ctx, id, "internal",
                                "out of memory");
    }

    if (data != NULL) {
        cbor_decref(&data);
    }
    if (inner != NULL) {
        cbor_decref(&inner);
    }
    if (outer != NULL) {
        cbor_decref(&outer);
    }
}


static cbor_item_t *
provend_rpc_text(const char *text)
{
    return cbor_build_string(text);
}


static cbor_item_t *
provend_rpc_whoami(provend_session_t *session)
{
    int           ok;
    char          uuid[37];
    cbor_item_t  *data;

    proven_uuid_text(session->id, uuid);
    data = cbor_new_definite_map(3);
    ok = data != NULL
         && proven_cbor_map_put(data, "session_id", cbor_build_string(uuid))
            == PROVEN_OK
         && proven_cbor_map_put(data, "origin", session->has_origin
                                ? cbor_build_string(session->origin)
                                : cbor_new_null()) == PROVEN_OK
         && (!session->identified
             || proven_cbor_map_put(data, "identity",
                                    cbor_build_bytestring(
                                        session->identity,
                                        PROVEND_IDENTITY_KEY_LEN))
                == PROVEN_OK);
    if (!ok && data != NULL) {
        cbor_decref(&data);
    }
    return ok ? data : NULL;
}


/* Identify: the identity key's signature over the session id. */
static const char *
provend_rpc_identify(provend_session_t *session, cbor_item_t *data)
{
    int             ok;
    size_t          key_len, sig_len;
    EVP_PKEY       *key;
    EVP_MD_CTX     *md;
    const uint8_t  *pub, *sig;

    if (provend_sessions_arg_bytes(data, "passkey_prf_public_key_bytes",
                                   32, 32, &pub, &key_len, NULL, 0)
        != PROVEN_OK)
    {
        return "passkey_prf_public_key_bytes must be a 32-byte Ed25519 key";
    }
    if (provend_sessions_arg_bytes(data, "session_id_signature_bytes", 64,
                                   64, &sig, &sig_len, NULL, 0) != PROVEN_OK)
    {
        return "session_id_signature_bytes must be a 64-byte signature";
    }

    key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, key_len);
    md = EVP_MD_CTX_new();
    ok = key != NULL && md != NULL
         && EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) == 1
         && EVP_DigestVerify(md, sig, sig_len, session->id,
                             PROVEND_SESSION_ID_LEN) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    if (!ok) {
        return "the signature over the session id does not verify with "
               "that key";
    }

    memcpy(session->identity, pub, PROVEND_IDENTITY_KEY_LEN);
    memcpy(session->identity_proof, sig, sizeof(session->identity_proof));
    session->identified = 1;
    return NULL;
}


static size_t
provend_grant_bucket(const char *token)
{
    return (size_t) (token[0] * 16 + token[1]) % PROVEND_GRANT_BUCKETS;
}


static provend_grant_t *
provend_grant_new(provend_sessions_t *s, const char *app,
    const uint8_t *identity)
{
    uint8_t           raw[16];
    provend_grant_t  *g;

    g = calloc(1, sizeof(*g));
    if (g == NULL || RAND_bytes(raw, sizeof(raw)) != 1) {
        free(g);
        return NULL;
    }
    proven_hex_encode(raw, sizeof(raw), g->token);
    snprintf(g->app, sizeof(g->app), "%s", app);
    proven_hex_encode(identity, PROVEND_IDENTITY_KEY_LEN, g->identity);
    g->next = s->grants[provend_grant_bucket(g->token)];
    s->grants[provend_grant_bucket(g->token)] = g;
    return g;
}


static void
provend_grant_free(provend_sessions_t *s, provend_grant_t *grant)
{
    provend_grant_t  **p;

    for (p = &s->grants[provend_grant_bucket(grant->token)]; *p != NULL;
         p = &(*p)->next)
    {
        if (*p == grant) {
            *p = grant->next;
            break;
        }
    }
    OPENSSL_cleanse(grant, sizeof(*grant));
    free(grant);
}


int
provend_sessions_grant_ok(provend_sessions_t *s, const char *token,
    const char *app, const char *identity)
{
    provend_grant_t  *g;

    if (strlen(token) != 32) {
        return 0;
    }
    for (g = s->grants[provend_grant_bucket(token)]; g != NULL; g = g->next)
    {
        if (CRYPTO_memcmp(g->token, token, 32) == 0) {
            return strcmp(g->app, app) == 0
                   && strcmp(g->identity, identity) == 0;
        }
    }
    return 0;
}


/* A command whose answer comes later; holds the session. */
static provend_rpc_t *
provend_rpc_new(provend_sessions_t *s, provend_session_t *session,
    uint64_t seq, const char *type, uint64_t id, provend_ops_reply_pt reply,
    void *ctx)
{
    provend_rpc_t  *rpc;

    rpc = calloc(1, sizeof(*rpc));
    if (rpc == NULL) {
        return NULL;
    }
    rpc->sessions = s;
    rpc->session = session;
    rpc->seq = seq;
    snprintf(rpc->type, sizeof(rpc->type), "%s", type);
    rpc->started = uv_hrtime();
    rpc->id = id;
    rpc->reply = reply;
    rpc->ctx = ctx;
    session->refs++;
    return rpc;
}


static void
provend_rpc_free(provend_rpc_t *rpc)
{
    if (rpc->running) {
        rpc->session->running--;
    }
    if (rpc->grant != NULL) {
        provend_grant_free(rpc->sessions, rpc->grant);
    }
    provend_session_unref(rpc->session);
    free(rpc);
}


static void
provend_rpc_executed(void *data, const char *failure, proven_response_t *res)
{
    int             ok;
    cbor_item_t    *out, *error, *logs;
    provend_rpc_t  *rpc;

    rpc = data;

    if (failure == NULL && res->ok) {
        provend_rpc_answer(rpc->sessions, rpc->session, rpc->seq, rpc->type,
                           "success", res->result != NULL
                           ? cbor_incref(res->result) : NULL,
                           rpc->id, rpc->reply, rpc->ctx);
        provend_rpc_free(rpc);
        return;
    }

    error = failure == NULL ? proven_cbor_map_get(res->map, "error") : NULL;
    logs = error != NULL ? proven_cbor_map_get(error, "logs") : NULL;
    out = cbor_new_definite_map(4);
    ok = out != NULL
         && proven_cbor_map_put(out, "error", cbor_build_string(
                failure != NULL ? failure : res->message)) == PROVEN_OK
         && proven_cbor_map_put(out, "code", cbor_build_string(
                failure != NULL ? "worker_unavailable" : res->code))
            == PROVEN_OK
         && proven_cbor_map_put(out, "logs", logs != NULL
                                ? cbor_incref(logs)
                                : cbor_new_definite_array(0)) == PROVEN_OK
         && proven_cbor_map_put(out, "duration_us", cbor_build_uint64(
                (uv_hrtime() - rpc->started) / 1000)) == PROVEN_OK;
    if (!ok && out != NULL) {
        cbor_decref(&out);
    }
    provend_rpc_answer(rpc->sessions, rpc->session, rpc->seq, rpc->type,
                       "failure", ok ? out : provend_rpc_text("out of memory"),
                       rpc->id, rpc->reply, rpc->ctx);
    provend_rpc_free(rpc);
}


/*
 * Execute {handler, args} and ExecuteHash {module_hash, handler, args}:
 * 1 when the answer comes later, else 0 with *result and *out set.
 */
static int
provend_rpc_execute(provend_sessions_t *s, provend_session_t *session,
    uint64_t seq, const char *type, cbor_item_t *data, int by_hash,
    uint64_t id, provend_ops_reply_pt reply, void *ctx, const char **result,
    cbor_item_t **out)
{
    int             rc, present;
    char            handler[PROVEND_HANDLER_MAX + 1], identity[65];
    char            err[PROVEN_ERR_LEN];
    size_t          hash_len;
    cbor_item_t    *args, *empty;
    const uint8_t  *hash;
    provend_rpc_t  *rpc;

    *result = "failure";
    if (!cbor_isa_map(data)
        || provend_sessions_arg_text(data, "handler", handler,
                                     PROVEND_HANDLER_MAX, &present, err,
                                     sizeof(err)) != PROVEN_OK
        || !present)
    {
        *out = provend_rpc_text("data must be a map with a \"handler\" "
                                "text (\"module#name\")");
        return 0;
    }
    hash = NULL;
    if (by_hash
        && provend_sessions_arg_bytes(data, "module_hash", 32, 32, &hash,
                                      &hash_len, NULL, 0) != PROVEN_OK)
    {
        *out = provend_rpc_text("module_hash must be the 32-byte id of a "
                                "package");
        return 0;
    }
    args = proven_cbor_map_get(data, "args");
    if (args != NULL && !cbor_isa_array(args)) {
        *out = provend_rpc_text("args must be an array of the handler's "
                                "arguments");
        return 0;
    }
    if (session->app[0] == '\0' || s->apps == NULL) {
        *out = provend_rpc_text("this session is not an application's: "
                                "open it with POST /app/NAME/session");
        return 0;
    }
    if (session->running >= PROVEND_SESSION_RUNS_MAX) {
        *out = provend_rpc_text("too many calls of this session are under "
                                "way; wait for their answers");
        return 0;
    }

    rpc = provend_rpc_new(s, session, seq, type, id, reply, ctx);
    if (rpc == NULL) {
        *out = provend_rpc_text("out of memory");
        return 0;
    }

    if (session->identified) {
        proven_hex_encode(session->identity, PROVEND_IDENTITY_KEY_LEN,
                          identity);
        rpc->grant = provend_grant_new(s, session->app, session->identity);
        if (rpc->grant == NULL) {
            provend_rpc_free(rpc);
            *out = provend_rpc_text("out of memory");
            return 0;
        }
    }
    empty = args == NULL ? cbor_new_definite_array(0) : NULL;
    rc = provend_apps_run(s->apps, session->app, hash, handler,
                          args != NULL ? args : empty,
                          session->identified ? identity : NULL,
                          rpc->grant != NULL ? rpc->grant->token : NULL,
                          provend_rpc_executed, rpc);
    if (empty != NULL) {
        cbor_decref(&empty);
    }
    if (rc == PROVEN_OK) {
        rpc->running = 1;
        session->running++;
        return 1;
    }
    provend_rpc_free(rpc);

    if (rc == PROVEND_RUN_STOPPING) {
        *out = provend_rpc_text("the node is stopping");
    } else if (rc == PROVEND_RUN_HASH_UNKNOWN) {
        *result = "HashUnknown";
        *out = NULL;
    } else if (rc == PROVEND_RUN_NO_APP) {
        snprintf(err, sizeof(err), "no application \"%s\" is deployed",
                 session->app);
        *out = provend_rpc_text(err);
    } else {
        *out = provend_rpc_text("out of memory");
    }
    return 0;
}


/* The end of CreateApplication, AddAllowedOrigin and Deploy. */
static void
provend_rpc_registry_done(void *data, const char *code, const char *message,
    cbor_item_t *result)
{
    cbor_item_t    *out;
    provend_rpc_t  *rpc;

    rpc = data;
    if (code != NULL) {
        out = provend_rpc_text(message != NULL ? message : code);
        provend_rpc_answer(rpc->sessions, rpc->session, rpc->seq, rpc->type,
                           "failure", out, rpc->id, rpc->reply, rpc->ctx);

    } else if (strcmp(rpc->type, "CreateApplication") == 0) {
        out = cbor_new_definite_map(1);
        if (out != NULL
            && proven_cbor_map_put(out, "application_id",
                                   cbor_incref(result)) != PROVEN_OK)
        {
            cbor_decref(&out);
        }
        provend_rpc_answer(rpc->sessions, rpc->session, rpc->seq, rpc->type,
                           out != NULL ? "success" : "failure",
                           out != NULL ? out
                                       : provend_rpc_text("out of memory"),
                           rpc->id, rpc->reply, rpc->ctx);

    } else {
        provend_rpc_answer(rpc->sessions, rpc->session, rpc->seq, rpc->type,
                           "success", result != NULL ? cbor_incref(result)
                                                     : NULL,
                           rpc->id, rpc->reply, rpc->ctx);
    }
    provend_rpc_free(rpc);
}


/*
 * CreateApplication, AddAllowedOrigin {application_id, origin},
 * ListApplicationsByOwner and Deploy {package, application_id?}: an
 * identified session's.  1 when the answer comes later, else 0 with
 * *result and *out set.
 */
static int
provend_rpc_registry(provend_sessions_t *s, provend_session_t *session,
    uint64_t seq, const char *type, cbor_item_t *data, uint64_t id,
    provend_ops_reply_pt reply, void *ctx, const char **result,
    cbor_item_t **out)
{
    int             rc, present;
    char            app[PROVEND_NAME_MAX + 1], err[PROVEN_ERR_LEN];
    char            origin[PROVEND_ORIGIN_MAX + 1];
    cbor_item_t    *package;
    provend_rpc_t  *rpc;

    *result = "failure";
    if (s->apps == NULL) {
        *out = provend_rpc_text("applications are unavailable on this "
                                "node");
        return 0;
    }
    if (!session->identified) {
        *out = provend_rpc_text("identify first: this needs an identity");
        return 0;
    }

    if (strcmp(type, "ListApplicationsByOwner") == 0) {
        *result = "success";
        *out = provend_apps_owned_by(s->apps, session->identity);
        return 0;
    }

    app[0] = '\0';
    origin[0] = '\0';
    package = NULL;
    if (strcmp(type, "CreateApplication") != 0) {
        if (data == NULL || !cbor_isa_map(data)
            || provend_sessions_arg_text(data, "application_id", app,
                                         PROVEND_NAME_MAX, &present, err,
                                         sizeof(err)) != PROVEN_OK)
        {
            *out = provend_rpc_text("data must be a map; application_id a "
                                    "text");
            return 0;
        }
        if (!present) {
            snprintf(app, sizeof(app), "%s", session->app);
        }
        if (app[0] == '\0') {
            *out = provend_rpc_text("which application? give "
                                    "application_id");
            return 0;
        }
    }
    if (strcmp(type, "AddAllowedOrigin") == 0
        && (provend_sessions_arg_text(data, "origin", origin,
                                      PROVEND_ORIGIN_MAX, &present, err,
                                      sizeof(err)) != PROVEN_OK
            || !present || origin[0] == '\0'))
    {
        *out = provend_rpc_text("origin must be a text such as "
                                "https://example.com");
        return 0;
    }
    if (strcmp(type, "Deploy") == 0) {
        package = proven_cbor_map_get(data, "package");
        if (package == NULL || !cbor_isa_bytestring(package)
            || !cbor_bytestring_is_definite(package))
        {
            *out = provend_rpc_text("package must be the package's bytes "
                                    "(proven app pack)");
            return 0;
        }
    }

    rpc = provend_rpc_new(s, session, seq, type, id, reply, ctx);
    if (rpc == NULL) {
        *out = provend_rpc_text("out of memory");
        return 0;
    }

    if (strcmp(type, "CreateApplication") == 0) {
        rc = provend_apps_create(s->apps, session->identity,
                                 provend_rpc_registry_done, rpc);
    } else if (strcmp(type, "AddAllowedOrigin") == 0) {
        rc = provend_apps_add_origin(s->apps, app, session->identity, origin,
                                     provend_rpc_registry_done, rpc);
    } else {
        rc = provend_apps_deploy_by_session(s->apps, app, package,
                                            session->identity, session->id,
                                            session->identity_proof,
                                            provend_rpc_registry_done, rpc);
    }
    if (rc == PROVEN_OK) {
        return 1;
    }
    provend_rpc_free(rpc);
    *out = provend_rpc_text("out of memory");
    return 0;
}


/*
 * A verified message of session, its seq accepted: decodes the payload
 * and runs the command.  m points into the caller's bytes.
 */
static void
provend_rpc_dispatch(provend_sessions_t *s, provend_session_t *session,
    const proven_cose_eddsa_t *mm, uint64_t id, provend_ops_reply_pt reply,
    void *ctx)
{
    char                  err[PROVEN_ERR_LEN];
    char                  type[PROVEND_RPC_TYPE_MAX + 1];
    const char           *result, *why;
    cbor_item_t          *payload, *data, *out, *t;
    proven_cose_eddsa_t   m;
    struct cbor_load_result  loaded;

    m = *mm;
    payload = cbor_load(m.payload, m.payload_len, &loaded);
    t = payload != NULL && loaded.read == m.payload_len
        ? proven_cbor_map_get(payload, "type") : NULL;
    if (t == NULL || !cbor_isa_string(t) || !cbor_string_is_definite(t)
        || cbor_string_length(t) == 0
        || cbor_string_length(t) > PROVEND_RPC_TYPE_MAX)
    {
        if (payload != NULL) {
            cbor_decref(&payload);
        }
        provend_ops_reply_error(reply, ctx, id, "bad_message",
                                "the payload is not a CBOR map {\"type\": "
                                "text, \"data\": any}");
        return;
    }
    memcpy(type, cbor_string_handle(t), cbor_string_length(t));
    type[cbor_string_length(t)] = '\0';
    data = proven_cbor_map_get(payload, "data");

    result = "success";
    out = NULL;

    if (strcmp(type, "WhoAmI") == 0) {
        result = session->identified ? "identified" : "anonymous";
        out = provend_rpc_whoami(session);

    } else if (strcmp(type, "Identify") == 0) {
        why = data != NULL && cbor_isa_map(data)
              ? provend_rpc_identify(session, data)
              : "data must be a map";
        if (why != NULL) {
            result = "failure";
            out = provend_rpc_text(why);
        } else {
            (void) provend_sessions_share(s, session, NULL);
        }

    } else if (strcmp(type, "Anonymize") == 0) {
        session->identified = 0;
        memset(session->identity, 0, sizeof(session->identity));
        memset(session->identity_proof, 0, sizeof(session->identity_proof));
        (void) provend_sessions_share(s, session, NULL);

    } else if (strcmp(type, "Execute") == 0
               || strcmp(type, "ExecuteHash") == 0)
    {
        if (provend_rpc_execute(s, session, m.seq, type,
                                data != NULL ? data : payload,
                                strcmp(type, "ExecuteHash") == 0, id,
                                reply, ctx, &result, &out))
        {
            cbor_decref(&payload);
            return;
        }

    } else if (strcmp(type, "CreateApplication") == 0
               || strcmp(type, "AddAllowedOrigin") == 0
               || strcmp(type, "ListApplicationsByOwner") == 0
               || strcmp(type, "Deploy") == 0)
    {
        if (provend_rpc_registry(s, session, m.seq, type, data, id,
                                 reply, ctx, &result, &out))
        {
            cbor_decref(&payload);
            return;
        }

    } else {
        result = "failure";
        snprintf(err, sizeof(err), "unknown command \"%s\"", type);
        out = provend_rpc_text(err);
    }

    provend_rpc_answer(s, session, m.seq, type, result, out, id, reply,
                       ctx);
    cbor_decref(&payload);
}




/* A message being verified on the thread pool. */
struct provend_verify_s {
    uv_work_t              work;
    provend_sessions_t    *sessions;
    provend_session_t     *session;
    uint8_t               *msg;           /* a copy; m points into it */
    proven_cose_eddsa_t    m;
    int                    verified;
    uint64_t               id;
    provend_ops_reply_pt   reply;
    void                  *ctx;
    provend_verify_t      *next;          /* the session's queue */
};


static void
provend_verify_work(uv_work_t *work)
{
    provend_verify_t  *v;

    v = work->data;
    v->verified = proven_cose_check_eddsa(&v->m, v->session->id,
                                          PROVEND_SESSION_ID_LEN,
                                          v->session->client_key, NULL, 0)
                  == PROVEN_OK;
}


static void provend_verify_done(uv_work_t *work, int status);


/* Starts the first message queued for the session, if none is running. */
static void
provend_verify_next(provend_sessions_t *s, provend_session_t *session)
{
    provend_verify_t  *v;

    while (!session->verifying && (v = session->queue) != NULL) {
        session->queue = v->next;
        session->queued--;
        if (session->queue == NULL) {
            session->queue_tail = NULL;
        }
        v->work.data = v;
        if (uv_queue_work(s->loop, &v->work, provend_verify_work,
                          provend_verify_done) == 0)
        {
            session->verifying = 1;
            return;
        }
        provend_ops_reply_error(v->reply, v->ctx, v->id, "internal",
                                "cannot queue the verification");
        provend_session_unref(v->session);
        free(v->msg);
        free(v);
    }
}


static void
provend_verify_done(uv_work_t *work, int status)
{
    char                 err[PROVEN_ERR_LEN];
    provend_verify_t    *v;
    provend_session_t   *session;
    provend_sessions_t  *s;

    v = work->data;
    s = v->sessions;
    session = v->session;
    session->verifying = 0;

    if (status != 0) {
        provend_ops_reply_error(v->reply, v->ctx, v->id, "internal",
                                "the verification was cancelled");
    } else if (!session->listed) {
        provend_ops_reply_error(v->reply, v->ctx, v->id, "unknown_session",
                                "the session has ended");
    } else if (!v->verified) {
        provend_ops_reply_error(v->reply, v->ctx, v->id, "bad_signature",
                                "the message is not signed by the "
                                "session's client key");
    } else if (session->has_seq && v->m.seq <= session->seq) {
        snprintf(err, sizeof(err), "seq %llu is not above %llu, the last "
                 "one accepted", (unsigned long long) v->m.seq,
                 (unsigned long long) session->seq);
        provend_ops_reply_error(v->reply, v->ctx, v->id, "replayed", err);
    } else {
        session->has_seq = 1;
        session->seq = v->m.seq;
        provend_session_touch(s, session);
        provend_rpc_dispatch(s, session, &v->m, v->id, v->reply, v->ctx);
    }

    provend_verify_next(s, session);
    provend_session_unref(session);
    free(v->msg);
    free(v);
}


/*
 * rpc.call {session, app?, message}: the message is parsed here, its
 * signature checked on the thread pool, one at a time per session so that
 * its messages keep their order; then its seq and command, here again.
 */
static void
provend_sessions_op_rpc(provend_sessions_t *s, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    char                  err[PROVEN_ERR_LEN];
    size_t                msg_len;
    const uint8_t        *msg;
    provend_verify_t     *v;
    provend_session_t    *session;
    proven_cose_eddsa_t   m;

    if (provend_sessions_arg_bytes(req->map, "message", 1,
                                   PROVEN_FRAME_MAX, &msg, &msg_len, err,
                                   sizeof(err)) != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", err);
        return;
    }
    session = provend_sessions_arg_session(s, req, reply, ctx);
    if (session == NULL) {
        return;
    }

    if (proven_cose_parse_eddsa(msg, msg_len, &m, err, sizeof(err))
        != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_message", err);
        return;
    }
    if (session->queued >= PROVEND_SESSION_QUEUE_MAX) {
        provend_ops_reply_error(reply, ctx, req->id, "busy",
                                "too many messages of this session wait");
        return;
    }

    v = calloc(1, sizeof(*v));
    if (v == NULL || (v->msg = malloc(msg_len)) == NULL) {
        free(v);
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    memcpy(v->msg, msg, msg_len);
    v->m = m;
    v->m.payload = v->msg + (m.payload - msg);
    v->m.signature = v->msg + (m.signature - msg);
    v->sessions = s;
    v->session = session;
    v->id = req->id;
    v->reply = reply;
    v->ctx = ctx;
    session->refs++;

    if (session->queue_tail != NULL) {
        session->queue_tail->next = v;
    } else {
        session->queue = v;
    }
    session->queue_tail = v;
    session->queued++;
    provend_verify_next(s, session);
}


/* ---- the module ---------------------------------------------------------- */

int
provend_sessions_handles(const char *op)
{
    return strncmp(op, "session.", 8) == 0 || strncmp(op, "rpc.", 4) == 0;
}


void
provend_sessions_dispatch(provend_sessions_t *s, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    /* in a cluster, a session made on another node is read first */
    if ((strcmp(req->op, "rpc.call") == 0
         || strcmp(req->op, "session.check") == 0)
        && provend_sessions_load_first(s, req, reply, ctx) == PROVEN_OK)
    {
        return;
    }
    provend_sessions_dispatch_now(s, req, reply, ctx);
}


static void
provend_sessions_dispatch_now(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    char  msg[PROVEN_ERR_LEN];

    if (strcmp(req->op, "rpc.call") == 0) {
        provend_sessions_op_rpc(s, req, reply, ctx);
    } else if (strcmp(req->op, "session.check") == 0) {
        provend_sessions_op_check(s, req, reply, ctx);
    } else if (strcmp(req->op, "session.create") == 0) {
        provend_sessions_op_create(s, req, reply, ctx);
    } else {
        snprintf(msg, sizeof(msg), "unknown op \"%s\"", req->op);
        provend_ops_reply_error(reply, ctx, req->id, "unknown_op", msg);
    }
}


provend_sessions_t *
provend_sessions_new(const provend_sessions_config_t *cfg, char *err,
    size_t errlen)
{
    provend_sessions_t  *s;

    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = cfg->loop;
    s->apps = cfg->apps;
    s->server = cfg->server;
    s->attest = cfg->attest;
    s->max = cfg->max ? cfg->max : PROVEND_SESSIONS_MAX;
    s->idle_ms = (uint64_t) (cfg->idle_s ? cfg->idle_s
                                         : PROVEND_SESSION_IDLE_S) * 1000;
    s->life_ms = (uint64_t) (cfg->life_s ? cfg->life_s
                                         : PROVEND_SESSION_LIFE_S) * 1000;
    s->any_origin = cfg->any_origin;

    if (cfg->storage != NULL) {
        provend_storage_req_t  *req;

        /* every node makes its own table: the same on each */
        req = provend_storage_own_sql(PROVEND_OP_SQL_EXECUTE,
                                      PROVEND_SESSIONS_DB, 1);
        if (req == NULL
            || provend_storage_stmt(req, 0, "CREATE TABLE IF NOT EXISTS "
                                    "sessions (id BLOB PRIMARY KEY, "
                                    "created INTEGER NOT NULL, "
                                    "version INTEGER NOT NULL, "
                                    "record BLOB NOT NULL)", 0)
               != PROVEN_OK)
        {
            provend_storage_req_free(req);
            free(s);
            proven_errf(err, errlen, "out of memory");
            return NULL;
        }
        req->local = 1;
        if (provend_storage_call(cfg->storage, req) != PROVEND_ST_OK) {
            proven_errf(err, errlen, "sessions: %s", req->error);
            provend_storage_req_free(req);
            free(s);
            return NULL;
        }
        provend_storage_req_free(req);

        s->ended_id = calloc(PROVEND_SESSION_BUCKETS, sizeof(*s->ended_id));
        s->ended_until = calloc(PROVEND_SESSION_BUCKETS,
                                sizeof(*s->ended_until));
        if (s->ended_id == NULL || s->ended_until == NULL
            || uv_async_init(s->loop, &s->changes,
                             provend_sessions_on_changes) != 0)
        {
            free(s->ended_id);
            free(s->ended_until);
            free(s);
            proven_errf(err, errlen, "out of memory");
            return NULL;
        }
        pthread_mutex_init(&s->changes_lock, NULL);
        s->changes.data = s;
        s->changes_open = 1;
        uv_unref((uv_handle_t *) &s->changes);
        s->storage = cfg->storage;
        s->pruned_ms = uv_now(s->loop);
        (void) provend_storage_cluster_follow(s->storage, PROVEND_SESSIONS_DB,
                                              provend_sessions_applied, s);
    }

    uv_timer_init(s->loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_start(&s->sweep, provend_sessions_on_sweep, 1000, 1000);
    uv_unref((uv_handle_t *) &s->sweep);
    return s;
}


size_t
provend_sessions_count(provend_sessions_t *s)
{
    return s->count;
}


void
provend_sessions_stop(provend_sessions_t *s)
{
    if (!uv_is_closing((uv_handle_t *) &s->sweep)) {
        uv_close((uv_handle_t *) &s->sweep, NULL);
    }
    if (s->changes_open) {
        /* returns once a call under way has */
        (void) provend_storage_cluster_follow(s->storage, PROVEND_SESSIONS_DB,
                                              NULL, s);
        uv_close((uv_handle_t *) &s->changes, NULL);
        s->changes_open = 0;
    }
}


void
provend_sessions_free(provend_sessions_t *s)
{
    while (s->oldest != NULL) {
        provend_session_drop(s, s->oldest);
    }
    if (s->storage != NULL) {
        provend_change_t  *c;

        while ((c = s->changes_head) != NULL) {
            s->changes_head = c->next;
            free(c);
        }
        pthread_mutex_destroy(&s->changes_lock);
        free(s->ended_id);
        free(s->ended_until);
    }
    free(s);
}
