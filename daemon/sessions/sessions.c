/*
 * Sessions: the table, session.create, and the subsystem's life.  See
 * sessions.h for the ops, sessions_int.h for what its files share.
 */

#include "sessions_int.h"


/* ---- the table ----------------------------------------------------------- */

size_t
provend_session_bucket(const uint8_t *id)
{
    uint32_t  h;

    /*
     * The last 4 bytes: random in every id (the first 4 are the node's
     * tag in a cluster, the same for all of its sessions)
     */
    memcpy(&h, id + PROVEND_SESSION_ID_LEN - sizeof(h), sizeof(h));
    return h & (PROVEND_SESSION_BUCKETS - 1);
}


void
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


void
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


void
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


int
provend_session_expired(provend_sessions_t *s, provend_session_t *session,
    uint64_t now)
{
    return now - session->used_ms >= s->idle_ms
           || now - session->created_ms >= s->life_ms;
}


provend_session_t *
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
        provend_session_drop(s, session);
    }
}


/* ---- rates -------------------------------------------------------------- */

/* 1 and one token taken, or 0 when the bucket is empty. */
int
provend_bucket_take(provend_bucket_t *b, unsigned rate, uint64_t now)
{
    double  burst;

    burst = 2.0 * rate;
    if (b->at_ms == 0) {
        b->tokens = burst;
    } else if (now > b->at_ms) {
        b->tokens += (double) (now - b->at_ms) * rate / 1000.0;
        if (b->tokens > burst) {
            b->tokens = burst;
        }
    }
    b->at_ms = now > 0 ? now : 1;
    if (b->tokens < 1.0) {
        return 0;
    }
    b->tokens -= 1.0;
    return 1;
}


/* ---- session.create ----------------------------------------------------- */

/* An optional text argument of at most max bytes, into out (NUL ended). */
int
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
int
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
    uint8_t              pub[32], user_data[PROVEN_SESSION_USER_DATA_LEN];
    const uint8_t       *nonce, *client;
    proven_buf_t         b_nonce, b_user_data, b_pub;
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
    if (!provend_ed25519_key_ok(client)) {
        /* a key of small order: anyone could sign as the client */
        provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                "public_key is not an Ed25519 key anyone "
                                "holds (a point of small order, or none)");
        goto failed;
    }

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
    if (!provend_bucket_take(&s->creations, s->rate, uv_now(s->loop))) {
        provend_ops_reply_error(reply, ctx, req->id, "rate_limited",
                                "too many new sessions on this node: try "
                                "again in a moment");
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
    if (s->tag != 0) {
        /* in a cluster: where the session lives, for the other nodes */
        proven_put_be32(session->id, s->tag);
    }
    proven_session_user_data(session->id, client, user_data);

    session->created_ms = uv_now(s->loop);
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
    b_user_data = b_nonce;
    b_user_data.data = user_data;
    b_user_data.len = sizeof(user_data);
    b_pub = b_nonce;
    b_pub.data = pub;
    b_pub.len = sizeof(pub);

    if (s->attest(s->server, &b_nonce, &b_user_data, &b_pub,
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


/* ---- the module ---------------------------------------------------------- */

/* What an op of the table runs, once its session is here. */
#define PROVEND_SESSIONS_CREATE  0
#define PROVEND_SESSIONS_CHECK   1
#define PROVEND_SESSIONS_RPC     2

static void provend_sessions_on_op(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

const provend_op_t  provend_sessions_ops[] = {
    { "session.create", PROVEND_CALLER_SOCKET, provend_sessions_on_op,
      PROVEND_SESSIONS_CREATE },
    { "session.check",  PROVEND_CALLER_SOCKET, provend_sessions_on_op,
      PROVEND_SESSIONS_CHECK },
    { "rpc.call",       PROVEND_CALLER_SOCKET, provend_sessions_on_op,
      PROVEND_SESSIONS_RPC },
    { "session.links",  PROVEND_CALLER_WORKER, provend_sessions_op_links, 0 },
    { NULL, 0, NULL, 0 }
};


static void
provend_sessions_run(provend_sessions_t *s, int what,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    switch (what) {

    case PROVEND_SESSIONS_RPC:
        provend_sessions_op_rpc(s, req, reply, ctx);
        break;

    case PROVEND_SESSIONS_CHECK:
        provend_sessions_op_check(s, req, reply, ctx);
        break;

    default:
        provend_sessions_op_create(s, req, reply, ctx);
    }
}


/*
 * In a cluster, a session made on another node is that node's alone:
 * PROVEN_OK when req names one (by its id's tag) and went there.
 */
static int
provend_sessions_forwarded(provend_sessions_t *s, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    size_t          len;
    uint32_t        tag;
    const uint8_t  *id;

    if (s->tag == 0
        || provend_sessions_arg_bytes(req->map, "session",
                                      PROVEND_SESSION_ID_LEN,
                                      PROVEND_SESSION_ID_LEN, &id, &len,
                                      NULL, 0) != PROVEN_OK)
    {
        return PROVEN_ERR;              /* answered where it is run */
    }
    tag = proven_get_be32(id);
    if (tag == s->tag || provend_session_find(s, id) != NULL) {
        return PROVEN_ERR;
    }
    if (s->forward == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "unknown_session",
                                "the node that holds this session cannot "
                                "be reached yet");
        return PROVEN_OK;
    }
    s->forward(s->forward_data, tag, req, reply, ctx);
    return PROVEN_OK;
}


static void
provend_sessions_on_op(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    provend_sessions_t  *s;

    s = subsystem;
    if (op->arg != PROVEND_SESSIONS_CREATE
        && provend_sessions_forwarded(s, req, reply, ctx) == PROVEN_OK)
    {
        return;
    }
    provend_sessions_run(s, op->arg, req, reply, ctx);
}


void
provend_sessions_dispatch(provend_sessions_t *s, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    char                 msg[PROVEN_ERR_LEN];
    const provend_op_t  *op;

    op = provend_op_find(provend_sessions_ops, req->op);
    if (op == NULL) {
        snprintf(msg, sizeof(msg), "unknown op \"%s\"", req->op);
        provend_ops_reply_error(reply, ctx, req->id, "unknown_op", msg);
        return;
    }

    op->handler(s, op, req, reply, ctx);
}


void
provend_sessions_serve_forwarded(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    const provend_op_t  *op;

    op = provend_op_find(provend_sessions_ops, req->op);
    if (op == NULL || op->arg == PROVEND_SESSIONS_CREATE) {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                "only rpc.call and session.check are "
                                "forwarded");
        return;
    }
    provend_sessions_run(s, op->arg, req, reply, ctx);
}


uint32_t
provend_sessions_tag(provend_sessions_t *s)
{
    return s->tag;
}


void
provend_sessions_set_radix(provend_sessions_t *s, provend_radix_t *r)
{
    s->radix = r;
}


void
provend_sessions_set_forward(provend_sessions_t *s,
    provend_sessions_forward_pt forward, void *data)
{
    s->forward = forward;
    s->forward_data = data;
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
    s->storage = cfg->storage;
    s->radix_network = cfg->radix_network != 0 ? cfg->radix_network : 1;
    /* before a cluster's log is applied: its rows need the table */
    if (s->storage != NULL && provend_passkeys_init(s, err, errlen)
                              != PROVEN_OK)
    {
        free(s);
        return NULL;
    }
    s->rate = cfg->rate ? cfg->rate : PROVEND_SESSION_RATE;
    s->message_rate = cfg->message_rate ? cfg->message_rate
                                        : PROVEND_MESSAGE_RATE;

    while (cfg->clustered && s->tag == 0) {
        uint8_t  raw[4];

        /* a new tag at each start: sessions end with their node */
        if (RAND_bytes(raw, sizeof(raw)) != 1) {
            free(s);
            proven_errf(err, errlen, "no randomness for the session tag");
            return NULL;
        }
        s->tag = proven_get_be32(raw);
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
    s->forward = NULL;
}


void
provend_sessions_free(provend_sessions_t *s)
{
    while (s->oldest != NULL) {
        provend_session_drop(s, s->oldest);
    }
    free(s);
}
