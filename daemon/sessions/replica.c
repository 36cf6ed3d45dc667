/*
 * Sessions in a cluster: records every node can find, identity changes
 * applied in order, old records pruned.
 */

#include "sessions_int.h"


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
int
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
int
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
void
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
void
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


void
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
