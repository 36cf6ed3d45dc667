/*
 * The provend server loop.  Each connection reads frames into a bounded
 * buffer; each request is answered by id, attestations on the thread pool,
 * so many may be in flight.  A connection with PROVEND_PENDING_MAX requests
 * unanswered (including responses not yet written) is not read from until
 * answers drain: a client that does not read cannot make us buffer more.
 */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "backup.h"
#include "keyd.h"
#include "log.h"
#include "cluster/cluster.h"
#include "tls/tls.h"
#include "server.h"
#include "sessions/sessions.h"
#include "stream.h"
#include "util.h"


#define PROVEND_BACKLOG    128


typedef struct provend_conn_s    provend_conn_t;

typedef struct {
    uv_loop_t                       loop;
    uv_pipe_t                       listener;
    uv_signal_t                     sigterm;
    uv_signal_t                     sigint;
    uv_signal_t                     sighup;
    uv_timer_t                      maintain;
    uv_timer_t                      grace;
    const provend_server_config_t  *cfg;
    size_t                          max_pending;
    uint64_t                        started;      /* uv_hrtime() */
    size_t                          pending;      /* all connections */
    int                             stopping;
    int                             grace_started;
    provend_conn_t                 *conns;
    provend_ops_storage_t          *storage_ops;
    provend_apps_t                 *apps;
    provend_sessions_t             *sessions;
    provend_cluster_t              *cluster;
    provend_tls_t                  *tls;
    provend_chains_t               *chains;
    provend_radix_t                *radix;
    provend_backups_t              *backups;
    provend_dispatch_t              dispatch;
} provend_server_t;

struct provend_conn_s {
    provend_stream_t   stream;      /* frames in and out */
    provend_server_t  *srv;
    provend_conn_t    *prev;
    provend_conn_t    *next;
    unsigned           refs;        /* the stream's handles, and jobs */
    size_t             pending;     /* frames read, answers not written */
    int                draining;    /* no more input; close when answered */
    int                closing;     /* closed: no more output */
    char               app[PROVEND_NAME_MAX + 1];  /* an app's worker */
    uint64_t           number;      /* in log lines: "*N" */
};

typedef struct {
    uv_work_t             work;
    provend_server_t     *srv;
    provend_ops_reply_pt  reply;    /* the attest op: answered framed */
    void                 *ctx;
    uint64_t              id;
    provend_attest_done_pt done;    /* or another caller: told */
    void                 *data;
    provend_attest_job_t  job;
    uint8_t              *frame;    /* the response, built off the loop */
    size_t                frame_len;
} provend_server_job_t;


static void provend_conn_progress(provend_conn_t *conn);
static void provend_conn_request(provend_conn_t *conn, const uint8_t *body,
    size_t len);


/* ---- connections --------------------------------------------------------- */

static void
provend_conn_unref(provend_conn_t *conn)
{
    if (--conn->refs > 0) {
        return;
    }

    free(conn);
}


/* The stream's handles are closed: every write was told. */
static void
provend_conn_on_closed(provend_stream_t *stream)
{
    provend_conn_t    *conn;
    provend_server_t  *srv;

    conn = stream->data;
    srv = conn->srv;

    if (conn->prev) {
        conn->prev->next = conn->next;
    } else {
        srv->conns = conn->next;
    }

    if (conn->next) {
        conn->next->prev = conn->prev;
    }

    if (srv->stopping && srv->conns == NULL && srv->grace_started
        && !uv_is_closing((uv_handle_t *) &srv->grace))
    {
        uv_close((uv_handle_t *) &srv->grace, NULL);
    }

    provend_conn_unref(conn);
}


static void
provend_conn_close(provend_conn_t *conn)
{
    if (conn->closing) {
        return;
    }

    conn->closing = 1;
    conn->draining = 1;
    provend_stream_close(&conn->stream);
}


/* Every frame read gets exactly one answer (or none when closed). */
static void
provend_conn_counted(provend_conn_t *conn)
{
    conn->pending++;
    conn->srv->pending++;
}


/* One answer fewer to wait for. */
static void
provend_conn_answered(provend_conn_t *conn)
{
    conn->pending--;
    conn->srv->pending--;
}


/*
 * An answer left, or was dropped: a connection that cannot write (even
 * one whose peer ended its input) closes, which drops the answers queued.
 */
static void
provend_conn_on_written(provend_stream_t *stream, int ok)
{
    provend_conn_t  *conn;

    conn = stream->data;
    provend_conn_answered(conn);

    if (!ok) {
        provend_conn_close(conn);
    }

    provend_conn_progress(conn);
}


/* Sends one answer; takes frame.  Every read frame gets exactly one. */
static void
provend_conn_send(void *ctx, uint8_t *frame, size_t len)
{
    provend_conn_t  *conn;

    /* a closed stream drops it, and says so through on_written */
    conn = ctx;
    (void) provend_stream_write(&conn->stream, frame, len);
}


static void
provend_conn_send_error(provend_conn_t *conn, uint64_t id, const char *code,
    const char *message)
{
    provend_ops_reply_error(provend_conn_send, conn, id, code, message);
}


/* A broken request: answer if we can, then close once answers are out. */
static void
provend_conn_fail(provend_conn_t *conn, const char *code, const char *msg)
{
    provend_info_id(conn->number, "closing a connection: %s", msg);

    conn->draining = 1;
    provend_conn_send_error(conn, 0, code, msg);
}


/* A whole frame read: counted, answered (now or later). */
static void
provend_conn_on_frame(provend_stream_t *stream, const uint8_t *body,
    size_t len)
{
    provend_conn_t  *conn;

    conn = stream->data;

    if (conn->draining) {
        return;                 /* after a broken frame: nothing more */
    }

    provend_conn_counted(conn);
    provend_conn_request(conn, body, len);
    provend_conn_progress(conn);
}


/*
 * No more input.  The peer is done asking (EOF): answer what it asked,
 * then close.  A frame out of bounds: say so, then close once answered.
 * A read or write error: close now.
 */
static void
provend_conn_on_end(provend_stream_t *stream, const char *why)
{
    provend_conn_t  *conn;

    conn = stream->data;

    if (why == NULL) {
        conn->draining = 1;

    } else if (stream->bad_frame) {
        provend_conn_counted(conn);
        provend_conn_fail(conn, "bad_frame", why);

    } else {
        provend_debug_id(conn->number, "connection failed: %s", why);
        provend_conn_close(conn);
    }

    provend_conn_progress(conn);
}


/* Reads while fewer answers than the limit are pending; closes drained. */
static void
provend_conn_progress(provend_conn_t *conn)
{
    if (conn->closing) {
        return;
    }

    if (conn->draining) {
        provend_stream_pause(&conn->stream);

        if (conn->pending == 0) {
            provend_conn_close(conn);
        }

        return;
    }

    if (conn->pending >= conn->srv->max_pending
        || conn->stream.queued_bytes >= PROVEND_STREAM_QUEUED_MAX)
    {
        if (!conn->stream.paused) {
            provend_debug_id(conn->number, "connection paused: %zu requests "
                             "pending", conn->pending);
        }

        provend_stream_pause(&conn->stream);
        return;
    }

    provend_stream_resume(&conn->stream);
}


/* A connection of the server's loop: on its list, its stream set up. */
static provend_conn_t *
provend_conn_new(provend_server_t *srv, const char *app)
{
    provend_conn_t  *conn;

    conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        return NULL;
    }

    conn->srv = srv;
    conn->refs = 1;
    conn->number = provend_log_next_id();
    snprintf(conn->app, sizeof(conn->app), "%s", app != NULL ? app : "");

    conn->stream.data = conn;
    conn->stream.on_frame = provend_conn_on_frame;
    conn->stream.on_end = provend_conn_on_end;
    conn->stream.on_written = provend_conn_on_written;
    conn->stream.on_closed = provend_conn_on_closed;

    if (provend_stream_init(&srv->loop, &conn->stream, PROVEN_FRAME_MAX)
        != PROVEN_OK)
    {
        free(conn);
        return NULL;
    }

    conn->next = srv->conns;
    if (srv->conns) {
        srv->conns->prev = conn;
    }
    srv->conns = conn;
    return conn;
}


/* ---- requests ------------------------------------------------------------ */

static void
provend_job_work(uv_work_t *work)
{
    cbor_item_t           *doc;
    provend_server_job_t  *sj;
    provend_provider_t    *p;

    sj = work->data;
    p = sj->srv->cfg->provider;

    p->run(p, &sj->job);

    if (sj->job.rc != PROVEN_OK || sj->reply == NULL) {
        return;
    }

    /* The response is framed here too: the loop thread only writes it. */
    doc = cbor_build_bytestring(sj->job.doc, sj->job.doc_len);
    if (doc == NULL) {
        return;
    }

    if (proven_response_encode_ok(sj->id, doc, &sj->frame, &sj->frame_len)
        != PROVEN_OK)
    {
        sj->frame = NULL;
    }

    cbor_decref(&doc);
}


static void
provend_job_done(uv_work_t *work, int status)
{
    provend_server_job_t  *sj;
    provend_provider_t    *p;

    sj = work->data;
    p = sj->srv->cfg->provider;

    p->finish(p, &sj->job);

    if (status != 0) {
        snprintf(sj->job.err, sizeof(sj->job.err),
                 "attestation was cancelled");
        sj->job.rc = PROVEN_ERR;
    } else if (sj->job.rc != PROVEN_OK) {
        provend_error("attestation failed: %s", sj->job.err);
    }

    if (sj->done != NULL) {
        sj->done(sj->data, sj->job.rc, sj->job.doc, sj->job.doc_len,
                 sj->job.err);

    } else if (sj->job.rc != PROVEN_OK) {
        provend_ops_reply_error(sj->reply, sj->ctx, sj->id,
                                status != 0 ? "internal"
                                            : "attestation_failed",
                                sj->job.err);

    } else if (sj->frame == NULL) {
        provend_ops_reply_error(sj->reply, sj->ctx, sj->id, "internal",
                                "cannot encode the response");

    } else {
        sj->reply(sj->ctx, sj->frame, sj->frame_len);
        sj->frame = NULL;
    }

    provend_attest_job_free(&sj->job);
    free(sj->frame);
    free(sj);
}


/* Starts sj, filled in: PROVEN_ERR with sj->job.err if it cannot. */
static int
provend_job_start(provend_server_job_t *sj)
{
    int                  rc;
    provend_provider_t  *p;

    p = sj->srv->cfg->provider;
    sj->work.data = sj;

    if (p->prepare(p, &sj->job) != PROVEN_OK) {
        provend_error("attestation failed: %s", sj->job.err);
        return PROVEN_ERR;
    }

    rc = uv_queue_work(&sj->srv->loop, &sj->work, provend_job_work,
                       provend_job_done);
    if (rc != 0) {
        p->finish(p, &sj->job);
        snprintf(sj->job.err, sizeof(sj->job.err), "%s", uv_strerror(rc));
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/* Whether user_data starts with a mark only provend itself binds. */
static int
provend_reserved_mark(const proven_buf_t *user_data)
{
    size_t       i;
    static const char  *marks[] = {
        PROVEN_SESSION_MARK, PROVEN_CLUSTER_EXCHANGE_MARK, PROVEN_KEYD_MARK
    };

    for (i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
        if (user_data->present && user_data->len >= strlen(marks[i])
            && memcmp(user_data->data, marks[i], strlen(marks[i])) == 0)
        {
            return 1;
        }
    }
    return 0;
}


/* For the cluster: a request for a session of this node, from another. */
static void
provend_server_serve_session(void *data, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    provend_sessions_serve_forwarded(data, req, reply, ctx);
}


/* For the cluster: a peer's measurement, as the governance contract
 * allows it (any thread). */
static int
provend_server_measure_allowed(void *chains, const uint8_t hash[32],
    char *why, size_t whylen)
{
    return provend_governance_allows(chains, hash, why, whylen);
}


/* For sessions: an attestation whose document goes to done. */
static int
provend_server_attest(void *server, const proven_buf_t *nonce,
    const proven_buf_t *user_data, const proven_buf_t *public_key,
    provend_attest_done_pt done, void *data, char *err, size_t errlen)
{
    provend_server_job_t  *sj;

    sj = calloc(1, sizeof(*sj));
    if (sj == NULL
        || provend_attest_job_init(&sj->job, nonce, user_data, public_key)
           != PROVEN_OK)
    {
        proven_errf(err, errlen, "out of memory");
        free(sj);
        return PROVEN_ERR;
    }
    sj->srv = server;
    sj->done = done;
    sj->data = data;

    if (provend_job_start(sj) != PROVEN_OK) {
        proven_errf(err, errlen, "%s", sj->job.err);
        provend_attest_job_free(&sj->job);
        free(sj);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/* An optional byte string argument of at most PROVEN_ATT_FIELD_MAX bytes. */
static int
provend_arg_bytes(const proven_request_t *req, const char *name,
    proven_buf_t *out, char *err, size_t errlen)
{
    cbor_item_t  *item;

    memset(out, 0, sizeof(*out));

    item = proven_cbor_map_get(req->map, name);
    if (item == NULL || proven_cbor_is_null(item)) {
        return PROVEN_OK;
    }

    if (!cbor_isa_bytestring(item)) {
        proven_errf(err, errlen, "\"%s\" must be a byte string", name);
        return PROVEN_ERR;
    }

    if (proven_cbor_bytes(item, PROVEN_ATT_FIELD_MAX, &out->data, &out->len)
        != PROVEN_OK)
    {
        proven_errf(err, errlen, "\"%s\" is longer than %d bytes", name,
                    PROVEN_ATT_FIELD_MAX);
        return PROVEN_ERR;
    }

    out->present = 1;
    return PROVEN_OK;
}


static void
provend_op_attest(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    char                   err[PROVEN_ERR_LEN];
    provend_server_job_t  *sj;

    (void) op;

    sj = calloc(1, sizeof(*sj));
    if (sj == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }

    sj->srv = subsystem;
    sj->reply = reply;
    sj->ctx = ctx;
    sj->id = req->id;
    provend_attest_job_init(&sj->job, NULL, NULL, NULL);

    if (provend_arg_bytes(req, "nonce", &sj->job.nonce, err, sizeof(err))
        != PROVEN_OK
        || provend_arg_bytes(req, "user_data", &sj->job.user_data, err,
                             sizeof(err)) != PROVEN_OK
        || provend_arg_bytes(req, "public_key", &sj->job.public_key, err,
                             sizeof(err)) != PROVEN_OK)
    {
        provend_info("attest refused: %s", err);
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", err);
        goto failed;
    }

    /*
     * The marks provend binds itself (a session's, the cluster exchange)
     * are never for a caller, not even a local one: only nginx's TLS
     * binding comes through here (nginx refuses every "proven-" mark from
     * its own callers).
     */
    if (provend_reserved_mark(&sj->job.user_data)) {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                "user_data may not start with a mark "
                                "provend binds itself");
        goto failed;
    }

    if (provend_job_start(sj) != PROVEN_OK) {
        provend_ops_reply_error(reply, ctx, req->id, "attestation_failed",
                                sj->job.err);
        goto failed;
    }

    return;

failed:

    provend_attest_job_free(&sj->job);
    free(sj);
}


static cbor_item_t *
provend_build_uint(uint64_t v)
{
    return v <= UINT32_MAX ? cbor_build_uint32((uint32_t) v)
                           : cbor_build_uint64(v);
}


static cbor_item_t *
provend_status_map(provend_server_t *srv)
{
    size_t              i;
    cbor_item_t        *map, *pcrs, *key, *value;
    provend_status_t    st;
    provend_provider_t *p;

    p = srv->cfg->provider;
    p->status(p, &st);

    map = cbor_new_definite_map(7);
    pcrs = cbor_new_definite_map(st.pcr_count);
    if (map == NULL || pcrs == NULL) {
        goto failed;
    }

    for (i = 0; i < st.pcr_count; i++) {
        key = cbor_build_uint8((uint8_t) st.pcrs[i].index);
        value = cbor_build_bytestring(st.pcrs[i].value, st.pcrs[i].len);

        if (key == NULL || value == NULL
            || !cbor_map_add(pcrs, (struct cbor_pair) { key, value }))
        {
            if (key) {
                cbor_decref(&key);
            }
            if (value) {
                cbor_decref(&value);
            }
            goto failed;
        }

        cbor_decref(&key);
        cbor_decref(&value);
    }

    if (proven_cbor_map_put(map, "node_id",
                            cbor_build_string(srv->cfg->node_id))
        != PROVEN_OK
        || proven_cbor_map_put(map, "provider", cbor_build_string(p->name))
           != PROVEN_OK
        || proven_cbor_map_put(map, "module_id",
                               cbor_build_string(st.module_id)) != PROVEN_OK
        || proven_cbor_map_put(map, "version",
                               cbor_build_string(PROVEND_VERSION))
           != PROVEN_OK
        || proven_cbor_map_put(map, "uptime_ms",
                               provend_build_uint((uv_hrtime() - srv->started)
                                                  / 1000000)) != PROVEN_OK
        || proven_cbor_map_put(map, "pcrs", cbor_incref(pcrs)) != PROVEN_OK
        || proven_cbor_map_put(map, "pending",
                               provend_build_uint(srv->pending)) != PROVEN_OK)
    {
        goto failed;
    }

    cbor_decref(&pcrs);
    return map;

failed:

    if (pcrs != NULL) {
        cbor_decref(&pcrs);
    }

    if (map != NULL) {
        cbor_decref(&map);
    }

    return NULL;
}


static void
provend_op_status(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    (void) op;

    provend_ops_reply_ok(reply, ctx, req->id, provend_status_map(subsystem));
}


/* The server's own ops. */
static const provend_op_t  provend_server_ops[] = {
    { "attest", PROVEND_CALLER_SOCKET, provend_op_attest, 0 },
    { "status", PROVEND_CALLER_SOCKET, provend_op_status, 0 },
    { NULL, 0, NULL, 0 }
};


/* The storage ops answer later, from the loop thread; dispatch took a ref. */
static void
provend_conn_on_storage_reply(void *ctx, uint8_t *frame, size_t len)
{
    provend_conn_t  *conn;

    conn = ctx;
    provend_conn_send(conn, frame, len);
    provend_conn_unref(conn);
}


/*
 * An app's worker reaches storage of its own app only, and nothing else of
 * provend: kv.*, sql.*, nft.open and radix.nft with a scope naming that
 * app, of kind "app"; "personal" for the identity of a call under way;
 * "nft" for a token whose owner the call's session linked (chains/nft.c,
 * chains/radix_nft.c).
 */
static int
provend_conn_allowed(provend_conn_t *conn, const proven_request_t *req,
    char *msg, size_t msglen)
{
    char          grant[64], identity[PROVEND_IDENTITY_MAX + 1];
    char          chain[PROVEND_CHAIN_MAX + 1];
    char          contract[PROVEND_CONTRACT_MAX + 1];
    char          token[PROVEND_TOKEN_MAX + 1];
    cbor_item_t  *scope, *app, *kind, *nft;

    scope = proven_cbor_map_get(req->map, "scope");
    app = scope != NULL && cbor_isa_map(scope)
          ? proven_cbor_map_get(scope, "app") : NULL;
    kind = scope != NULL && cbor_isa_map(scope)
           ? proven_cbor_map_get(scope, "kind") : NULL;

    if (app == NULL || !cbor_isa_string(app) || !cbor_string_is_definite(app)
        || cbor_string_length(app) != strlen(conn->app)
        || memcmp(cbor_string_handle(app), conn->app,
                  strlen(conn->app)) != 0)
    {
        snprintf(msg, msglen, "an app's worker may use its own app's "
                 "storage only");
        return 0;
    }

    if (kind == NULL
        || (cbor_isa_string(kind) && cbor_string_is_definite(kind)
            && cbor_string_length(kind) == 3
            && memcmp(cbor_string_handle(kind), "app", 3) == 0))
    {
        return 1;
    }

    if (cbor_isa_string(kind) && cbor_string_is_definite(kind)
        && cbor_string_length(kind) == 8
        && memcmp(cbor_string_handle(kind), "personal", 8) == 0)
    {
        /* only while provend runs a call of that identity on this app */
        if (proven_cbor_text_into(proven_cbor_map_get(req->map, "grant"),
                                  grant, sizeof(grant)) == PROVEN_OK
            && proven_cbor_text_into(proven_cbor_map_get(scope, "identity"),
                                     identity, sizeof(identity)) == PROVEN_OK
            && provend_sessions_grant_ok(conn->srv->sessions, grant,
                                         conn->app, identity))
        {
            return 1;
        }
        snprintf(msg, msglen, "personal storage is for the identity of a "
                 "session's call under way");
        return 0;
    }

    if (cbor_isa_string(kind) && cbor_string_is_definite(kind)
        && cbor_string_length(kind) == 3
        && memcmp(cbor_string_handle(kind), "nft", 3) == 0)
    {
        /* only for an NFT whose owner the call's session linked, proved
         * by nft.open (chains/nft.c) during this call */
        nft = proven_cbor_map_get(scope, "nft");
        if (conn->srv->sessions != NULL && nft != NULL && cbor_isa_map(nft)
            && proven_cbor_text_into(proven_cbor_map_get(req->map, "grant"),
                                     grant, sizeof(grant)) == PROVEN_OK
            && proven_cbor_text_into(proven_cbor_map_get(nft, "chain"),
                                     chain, sizeof(chain)) == PROVEN_OK
            && proven_cbor_text_into(proven_cbor_map_get(nft, "contract"),
                                     contract, sizeof(contract)) == PROVEN_OK
            && proven_cbor_text_into(proven_cbor_map_get(nft, "token"),
                                     token, sizeof(token)) == PROVEN_OK
            && provend_sessions_grant_nft_ok(conn->srv->sessions, grant,
                                             conn->app, chain, contract,
                                             token))
        {
            return 1;
        }
        snprintf(msg, msglen, "NFT storage is for a call whose session "
                 "linked the token's owner, opened with nft.open");
        return 0;
    }

    snprintf(msg, msglen, "scope \"kind\" must be app, personal or nft");
    return 0;
}


/* One whole frame body; takes body. */
static void
provend_conn_request(provend_conn_t *conn, const uint8_t *body, size_t len)
{
    int                     rc;
    char                    err[PROVEN_ERR_LEN], msg[PROVEN_ERR_LEN + 64];
    proven_request_t        req;
    const provend_route_t  *route;

    /* kv.get and kv.set in their plain form: no tree, no copy. */
    if (conn->srv->storage_ops != NULL && conn->app[0] == '\0') {
        conn->refs++;
        if (provend_ops_storage_fast(conn->srv->storage_ops, body, len,
                                     provend_conn_on_storage_reply, conn))
        {
            return;
        }
        conn->refs--;
    }

    rc = proven_request_decode(body, len, &req, err, sizeof(err));

    if (rc != PROVEN_OK) {
        if (req.has_id) {
            /* Well framed, just wrong: the connection stays usable. */
            provend_info_id(conn->number, "bad request %llu: %s",
                            (unsigned long long) req.id, err);
            provend_conn_send_error(conn, req.id, "bad_request", err);
        } else {
            snprintf(msg, sizeof(msg), "malformed request: %s", err);
            provend_conn_fail(conn, "bad_frame", msg);
        }
        return;
    }

    provend_debug_id(conn->number, "request %llu: %s",
                     (unsigned long long) req.id, req.op);

    route = provend_dispatch_find(&conn->srv->dispatch, req.op);

    if (route == NULL) {
        snprintf(msg, sizeof(msg), "unknown op \"%s\"", req.op);
        provend_info_id(conn->number, "request %llu: %s",
                        (unsigned long long) req.id, msg);
        provend_conn_send_error(conn, req.id, "unknown_op", msg);

    } else if (conn->app[0] != '\0'
               && (!(route->op->callers & PROVEND_CALLER_WORKER)
                   || !provend_conn_allowed(conn, &req, msg, sizeof(msg))))
    {
        if (!(route->op->callers & PROVEND_CALLER_WORKER)) {
            snprintf(msg, sizeof(msg), "an app's worker may use kv.*, "
                     "sql.* and nft.open only, not \"%s\"", req.op);
        }
        provend_info_id(conn->number, "request %llu from the worker of %s: "
                        "%s", (unsigned long long) req.id, conn->app, msg);
        provend_conn_send_error(conn, req.id, "forbidden", msg);

    } else if (!(route->op->callers & PROVEND_CALLER_SOCKET)
               && conn->app[0] == '\0')
    {
        snprintf(msg, sizeof(msg), "\"%s\" is for an app's worker only",
                 req.op);
        provend_conn_send_error(conn, req.id, "forbidden", msg);

    } else if (route->subsystem == NULL) {
        provend_info_id(conn->number, "request %llu: %s: %s",
                        (unsigned long long) req.id, req.op,
                        route->unavailable_message);
        provend_conn_send_error(conn, req.id, route->unavailable_code,
                                route->unavailable_message);

    } else {
        conn->refs++;
        route->op->handler(route->subsystem, route->op, &req,
                           provend_conn_on_storage_reply, conn);
    }

    proven_request_free(&req);
}


static void
provend_server_on_connection(uv_stream_t *listener, int status)
{
    provend_conn_t    *conn;
    provend_server_t  *srv;

    srv = listener->data;

    if (status < 0) {
        provend_warn("accept failed: %s", uv_strerror(status));
        return;
    }

    conn = provend_conn_new(srv, NULL);
    if (conn == NULL) {
        provend_error("out of memory for a connection");
        return;
    }

    if (uv_accept(listener, (uv_stream_t *) &conn->stream.pipe) != 0) {
        provend_conn_close(conn);
        return;
    }

    (void) provend_stream_start(&conn->stream);
}


/*
 * An app worker's end of a socket pair: uv_spawn() opens the pipe this
 * returns (stdio), and requests on it act for that app only.
 */
static void *
provend_server_bind_pipe(void *data, const char *app)
{
    provend_conn_t  *conn;

    conn = provend_conn_new(data, app);

    return conn != NULL ? &conn->stream.pipe : NULL;
}


static provend_conn_t *
provend_server_pipe_conn(void *pipe)
{
    provend_stream_t  *stream;

    stream = ((uv_pipe_t *) pipe)->data;
    return stream->data;
}


static void
provend_server_start_pipe(void *data, void *pipe)
{
    (void) data;
    (void) provend_stream_start(&provend_server_pipe_conn(pipe)->stream);
}


static void
provend_server_drop_pipe(void *data, void *pipe)
{
    (void) data;
    provend_conn_close(provend_server_pipe_conn(pipe));
}


/* ---- the server ---------------------------------------------------------- */

static void
provend_server_on_maintain(uv_timer_t *timer)
{
    uint64_t             next;
    provend_server_t    *srv;
    provend_provider_t  *p;

    srv = timer->data;
    p = srv->cfg->provider;

    next = p->maintain(p);
    uv_timer_start(&srv->maintain, provend_server_on_maintain, next, 0);
}


static void
provend_server_on_grace(uv_timer_t *timer)
{
    provend_conn_t    *conn, *next;
    provend_server_t  *srv;

    srv = timer->data;

    for (conn = srv->conns; conn != NULL; conn = next) {
        next = conn->next;
        provend_warn("closing a connection that did not finish in %d s",
                     PROVEND_STOP_GRACE);
        provend_conn_close(conn);
    }

    uv_close((uv_handle_t *) &srv->grace, NULL);
}


static void
provend_server_stop(provend_server_t *srv)
{
    provend_conn_t  *conn, *next;

    if (srv->stopping) {
        return;
    }

    srv->stopping = 1;

    /* Stop accepting first, so nobody connects to a closing server. */
    uv_close((uv_handle_t *) &srv->listener, NULL);
    if (unlink(srv->cfg->socket_path) != 0 && errno != ENOENT) {
        provend_warn("unlink %s: %s", srv->cfg->socket_path,
                     strerror(errno));
    }

    uv_close((uv_handle_t *) &srv->sigterm, NULL);
    uv_close((uv_handle_t *) &srv->sigint, NULL);
    uv_close((uv_handle_t *) &srv->sighup, NULL);
    uv_close((uv_handle_t *) &srv->maintain, NULL);

    /* Its loop handle closes once the last storage answer is delivered. */
    if (srv->storage_ops != NULL) {
        provend_ops_storage_stop(srv->storage_ops);
    }

    if (srv->apps != NULL) {
        provend_apps_stop(srv->apps);
    }
    if (srv->sessions != NULL) {
        provend_sessions_stop(srv->sessions);
    }
    if (srv->cluster != NULL) {
        /* a read ending after this tells the cluster nothing */
        provend_governance_watch(srv->chains, NULL, NULL);
        provend_cluster_stop(srv->cluster);
    }
    provend_tls_stop(srv->tls);
    provend_chains_stop(srv->chains);
    provend_radix_stop(srv->radix);

    for (conn = srv->conns; conn != NULL; conn = next) {
        next = conn->next;
        conn->draining = 1;
        provend_conn_progress(conn);
    }

    if (srv->conns != NULL) {
        srv->grace_started = 1;
        uv_timer_start(&srv->grace, provend_server_on_grace,
                       PROVEND_STOP_GRACE * 1000, 0);
    } else {
        uv_close((uv_handle_t *) &srv->grace, NULL);
    }
}


static void
provend_server_on_signal(uv_signal_t *handle, int signum)
{
    char                 err[PROVEN_ERR_LEN];
    provend_server_t    *srv;
    provend_provider_t  *p;

    srv = handle->data;
    p = srv->cfg->provider;

    if (signum == SIGHUP) {
        provend_info("SIGHUP: reloading the %s provider", p->name);

        if (p->reload(p, err, sizeof(err)) != PROVEN_OK) {
            provend_error("reload failed: %s", err);
            return;
        }

        uv_timer_start(&srv->maintain, provend_server_on_maintain,
                       p->maintain(p), 0);
        provend_info("reloaded");
        return;
    }

    provend_info("%s: stopping, %zu requests in flight",
                 signum == SIGTERM ? "SIGTERM" : "SIGINT", srv->pending);
    provend_server_stop(srv);
}


/* Replaces a stale socket file, refuses to steal a live one. */
static int
provend_server_prepare_path(const char *path, char *err, size_t errlen)
{
    int                 fd, rc;
    char                dir[sizeof(((struct sockaddr_un *) 0)->sun_path)];
    char               *slash;
    struct stat         st;
    struct sockaddr_un  sa;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        proven_errf(err, errlen, "socket path longer than %zu bytes: %s",
                    sizeof(sa.sun_path) - 1, path);
        return PROVEN_ERR;
    }

    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (slash != NULL && slash != dir) {
        *slash = '\0';
        if (provend_mkdirs(dir, 0700, err, errlen) != PROVEN_OK) {
            return PROVEN_ERR;
        }
    }

    if (lstat(path, &st) != 0) {
        return PROVEN_OK;
    }

    if (!S_ISSOCK(st.st_mode)) {
        proven_errf(err, errlen, "%s exists and is not a socket", path);
        return PROVEN_ERR;
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        proven_errf(err, errlen, "socket: %s", strerror(errno));
        return PROVEN_ERR;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path));

    rc = connect(fd, (struct sockaddr *) &sa, sizeof(sa));
    close(fd);

    if (rc == 0) {
        proven_errf(err, errlen, "another process is listening on %s", path);
        return PROVEN_ERR;
    }

    provend_info("replacing the stale socket %s", path);

    if (unlink(path) != 0) {
        proven_errf(err, errlen, "unlink %s: %s", path, strerror(errno));
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


static int
provend_server_listen(provend_server_t *srv, char *err, size_t errlen)
{
    int          rc;
    mode_t       mask;
    const char  *path;

    path = srv->cfg->socket_path;

    if (provend_server_prepare_path(path, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    /* The socket is born 0600: no window where others may connect. */
    mask = umask(0177);
    rc = uv_pipe_bind(&srv->listener, path);
    umask(mask);

    if (rc != 0) {
        proven_errf(err, errlen, "bind %s: %s", path, uv_strerror(rc));
        return PROVEN_ERR;
    }

    rc = uv_listen((uv_stream_t *) &srv->listener, PROVEND_BACKLOG,
                   provend_server_on_connection);
    if (rc != 0) {
        unlink(path);
        proven_errf(err, errlen, "listen %s: %s", path, uv_strerror(rc));
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


static void
provend_server_thread_stop(uv_work_t *work)
{
    /* Frees this thread's OpenSSL state (error queue, DRBG). */
    OPENSSL_thread_stop();
    uv_barrier_wait(work->data);
}


static void
provend_server_thread_stopped(uv_work_t *work, int status)
{
    (void) work;
    (void) status;
}


/*
 * Pool threads outlive the loop and OpenSSL's atexit cleanup runs before
 * libuv joins them, so their per-thread OpenSSL state would leak.  One job
 * per thread, held at a barrier until all run, reaches every thread once.
 * The count is the pool size as libuv computes it; fewer would only leave
 * some state behind, more would wait forever.
 */
static void
provend_server_release_threads(provend_server_t *srv)
{
    int           i, n;
    uv_work_t    *works;
    uv_barrier_t  barrier;
    const char   *env;

    env = getenv("UV_THREADPOOL_SIZE");
    n = env ? atoi(env) : 4;
    if (n < 1) {
        n = 1;
    }
    if (n > 1024) {
        n = 1024;
    }

    works = calloc((size_t) n, sizeof(*works));
    if (works == NULL || uv_barrier_init(&barrier, (unsigned int) n) != 0) {
        free(works);
        return;
    }

    /* uv_queue_work fails only for a NULL work callback. */
    for (i = 0; i < n; i++) {
        works[i].data = &barrier;
        (void) uv_queue_work(&srv->loop, &works[i],
                             provend_server_thread_stop,
                             provend_server_thread_stopped);
    }

    uv_run(&srv->loop, UV_RUN_DEFAULT);
    uv_barrier_destroy(&barrier);
    free(works);
}


static void
provend_server_on_walk_close(uv_handle_t *handle, void *arg)
{
    (void) arg;

    if (!uv_is_closing(handle)) {
        uv_close(handle, NULL);
    }
}


/* Every subsystem's ops, with what answers while one is missing. */
static int
provend_server_register_ops(provend_server_t *srv, char *err, size_t errlen)
{
    provend_dispatch_t  *d;

    d = &srv->dispatch;

    if (provend_dispatch_add(d, provend_server_ops, srv, NULL, NULL, err,
                             errlen) != PROVEN_OK
        || provend_dispatch_add(d, provend_ops_storage_table,
                                srv->storage_ops, "storage_unavailable",
                                "storage is unavailable: no master key "
                                "provider in enclave mode yet", err, errlen)
           != PROVEN_OK
        || provend_dispatch_add(d, provend_apps_ops, srv->apps,
                                "apps_unavailable", "applications are "
                                "unavailable: no storage or no runtime on "
                                "this node", err, errlen) != PROVEN_OK
        || provend_dispatch_add(d, provend_sessions_ops, srv->sessions,
                                "sessions_unavailable", "sessions are "
                                "unavailable on this node", err, errlen)
           != PROVEN_OK
        || provend_dispatch_add(d, provend_tls_ops, srv->tls,
                                "tls_unavailable", "this node keeps no "
                                "certificate of its own (no --acme-directory)",
                                err, errlen) != PROVEN_OK
        || provend_dispatch_add(d, provend_chains_ops, srv->chains,
                                "chains_unavailable", "this node reads no "
                                "chain (no --eth-rpc)", err, errlen)
           != PROVEN_OK
        || provend_dispatch_add(d, provend_radix_ops, srv->radix,
                                "radix_unavailable", "this node reads no "
                                "Radix ledger (no --radix-gateway)", err,
                                errlen) != PROVEN_OK
        || provend_dispatch_add(d, provend_cluster_ops, srv->cluster,
                                "not_clustered", "this node runs alone (no "
                                "--cluster)", err, errlen) != PROVEN_OK
        || provend_dispatch_add(d, provend_backups_ops, srv->backups,
                                "backup_unavailable",
                                srv->cfg->cluster_file != NULL
                                ? "a clustered node's storage is made again "
                                  "from its cluster's log: it is not "
                                  "backed up"
                                : "backups are sealed with the key keyd "
                                  "releases: this node has no --keyd (or "
                                  "no storage)", err, errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


int
provend_server_run(const provend_server_config_t *cfg, char *err,
    size_t errlen)
{
    int                 rc;
    provend_server_t   *srv;
    provend_provider_t *p;

    p = cfg->provider;
    rc = PROVEN_ERR;

    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }

    srv->cfg = cfg;
    srv->max_pending = cfg->max_pending ? cfg->max_pending
                                        : PROVEND_PENDING_MAX;
    srv->started = uv_hrtime();

    if (uv_loop_init(&srv->loop) != 0) {
        proven_errf(err, errlen, "cannot start the event loop");
        free(srv);
        return PROVEN_ERR;
    }

    uv_pipe_init(&srv->loop, &srv->listener, 0);
    uv_signal_init(&srv->loop, &srv->sigterm);
    uv_signal_init(&srv->loop, &srv->sigint);
    uv_signal_init(&srv->loop, &srv->sighup);
    uv_timer_init(&srv->loop, &srv->maintain);
    uv_timer_init(&srv->loop, &srv->grace);

    srv->listener.data = srv;
    srv->sigterm.data = srv;
    srv->sigint.data = srv;
    srv->sighup.data = srv;
    srv->maintain.data = srv;
    srv->grace.data = srv;

    if (uv_signal_start(&srv->sigterm, provend_server_on_signal, SIGTERM)
        != 0
        || uv_signal_start(&srv->sigint, provend_server_on_signal, SIGINT)
           != 0
        || uv_signal_start(&srv->sighup, provend_server_on_signal, SIGHUP)
           != 0)
    {
        proven_errf(err, errlen, "cannot install signal handlers");
        goto failed;
    }

    if (cfg->storage != NULL) {
        srv->storage_ops = provend_ops_storage_new(&srv->loop, cfg->storage,
                                                   err, errlen);
        if (srv->storage_ops == NULL) {
            goto failed;
        }
    }

    if (provend_server_listen(srv, err, errlen) != PROVEN_OK) {
        goto failed;
    }

    /* After the socket: nothing below fails, so workers never outlive it. */
    if (cfg->storage != NULL && cfg->runtime_dir != NULL) {
        provend_apps_config_t  apps_cfg;

        memset(&apps_cfg, 0, sizeof(apps_cfg));
        apps_cfg.loop = &srv->loop;
        apps_cfg.storage = cfg->storage;
        apps_cfg.data_dir = cfg->data_dir;
        apps_cfg.runtime_dir = cfg->runtime_dir;
        apps_cfg.node = cfg->node;
        apps_cfg.expose_errors = cfg->expose_errors;
        apps_cfg.memory_mb = cfg->app_memory_mb;
        apps_cfg.sandbox = cfg->app_sandbox;
        apps_cfg.workers_max = cfg->app_workers;
        apps_cfg.memory_total_mb = cfg->app_memory_total_mb;
        apps_cfg.idle_s = cfg->app_idle_s;
        apps_cfg.clustered = cfg->cluster_file != NULL;
        apps_cfg.server = srv;
        apps_cfg.bind_pipe = provend_server_bind_pipe;
        apps_cfg.start_pipe = provend_server_start_pipe;
        apps_cfg.drop_pipe = provend_server_drop_pipe;

        srv->apps = provend_apps_open(&apps_cfg, err, errlen);
        if (srv->apps == NULL) {
            provend_server_stop(srv);
            uv_run(&srv->loop, UV_RUN_DEFAULT);
            goto failed;
        }
    }

    {
        provend_sessions_config_t  sessions_cfg;

        memset(&sessions_cfg, 0, sizeof(sessions_cfg));
        sessions_cfg.loop = &srv->loop;
        sessions_cfg.apps = srv->apps;
        sessions_cfg.server = srv;
        sessions_cfg.attest = provend_server_attest;
        sessions_cfg.max = cfg->session_max;
        sessions_cfg.rate = cfg->session_rate;
        sessions_cfg.message_rate = cfg->message_rate;
        sessions_cfg.idle_s = cfg->session_idle_s;
        sessions_cfg.life_s = cfg->session_life_s;
        sessions_cfg.any_origin = cfg->any_origin;
        sessions_cfg.clustered = cfg->cluster_file != NULL;
        sessions_cfg.storage = cfg->storage;    /* passkeys */
        sessions_cfg.radix_network = cfg->radix_network;

        srv->sessions = provend_sessions_new(&sessions_cfg, err, errlen);
        if (srv->sessions == NULL) {
            provend_server_stop(srv);
            uv_run(&srv->loop, UV_RUN_DEFAULT);
            goto failed;
        }
    }

    if (cfg->tls.directory != NULL) {
        provend_tls_config_t  tls_cfg;

        tls_cfg = cfg->tls;
        tls_cfg.loop = &srv->loop;
        tls_cfg.data_dir = cfg->data_dir;
        srv->tls = provend_tls_open(&tls_cfg, err, errlen);
        if (srv->tls == NULL) {
            provend_server_stop(srv);
            uv_run(&srv->loop, UV_RUN_DEFAULT);
            goto failed;
        }
    }

    if (cfg->chains.rpc != NULL) {
        provend_chains_config_t  chains_cfg;

        chains_cfg = cfg->chains;
        chains_cfg.loop = &srv->loop;
        chains_cfg.apps = srv->apps;            /* events: their handlers */
        chains_cfg.storage = cfg->storage;
        chains_cfg.clustered = cfg->cluster_file != NULL;
        chains_cfg.sessions = srv->sessions;    /* NFT scopes */
        srv->chains = provend_chains_open(&chains_cfg, err, errlen);
        if (srv->chains == NULL) {
            provend_server_stop(srv);
            uv_run(&srv->loop, UV_RUN_DEFAULT);
            goto failed;
        }
    }

    if (cfg->radix.gateway != NULL) {
        provend_radix_config_t  radix_cfg;

        radix_cfg = cfg->radix;
        radix_cfg.loop = &srv->loop;
        radix_cfg.network = cfg->radix_network != 0 ? cfg->radix_network : 1;
        /* events: the apps' handlers, their cursors in storage */
        radix_cfg.apps = cfg->storage != NULL ? srv->apps : NULL;
        radix_cfg.storage = cfg->storage;
        radix_cfg.clustered = cfg->cluster_file != NULL;
        radix_cfg.sessions = srv->sessions;     /* NFT scopes */
        srv->radix = provend_radix_open(&radix_cfg, err, errlen);
        if (srv->radix == NULL) {
            provend_server_stop(srv);
            uv_run(&srv->loop, UV_RUN_DEFAULT);
            goto failed;
        }
        if (srv->sessions != NULL) {
            provend_sessions_set_radix(srv->sessions, srv->radix);
        }
    }

    if (cfg->cluster_file != NULL) {
        provend_cluster_config_t  cluster_cfg;

        memset(&cluster_cfg, 0, sizeof(cluster_cfg));
        cluster_cfg.loop = &srv->loop;
        cluster_cfg.provider = p;
        cluster_cfg.data_dir = cfg->data_dir;
        cluster_cfg.file = cfg->cluster_file;
        cluster_cfg.nats_server = cfg->nats_server;
        cluster_cfg.server = srv;
        cluster_cfg.attest = provend_server_attest;
        cluster_cfg.storage = cfg->storage;     /* main made it the cluster's */
        cluster_cfg.key_file_key = cfg->cluster_key_file_key;
        cluster_cfg.key_in_memory = cfg->cluster_key_in_memory;
        cluster_cfg.session_tag = provend_sessions_tag(srv->sessions);
        cluster_cfg.serve_session = provend_server_serve_session;
        cluster_cfg.serve_session_data = srv->sessions;
        if (provend_governance_on(srv->chains)) {
            /* peers: any measurement the contract allows */
            cluster_cfg.measure_allowed = provend_server_measure_allowed;
            cluster_cfg.measure_data = srv->chains;
        }

        srv->cluster = provend_cluster_open(&cluster_cfg, err, errlen);
        if (srv->cluster == NULL) {
            provend_server_stop(srv);
            uv_run(&srv->loop, UV_RUN_DEFAULT);
            goto failed;
        }
        provend_sessions_set_forward(srv->sessions, provend_cluster_forward,
                                     srv->cluster);
        provend_governance_watch(srv->chains,
                                 provend_cluster_measurements_changed,
                                 srv->cluster);
    }

    if (cfg->storage != NULL && cfg->storage->quiesce != NULL
        && cfg->backup_master != NULL && cfg->backup_keyd != NULL)
    {
        provend_backups_config_t  backups_cfg;

        backups_cfg.loop = &srv->loop;
        backups_cfg.storage = cfg->storage;
        backups_cfg.data_dir = cfg->data_dir;
        backups_cfg.master = cfg->backup_master;
        backups_cfg.sealed = cfg->backup_sealed;
        backups_cfg.keyd = cfg->backup_keyd;
        backups_cfg.provider = p;
        srv->backups = provend_backups_new(&backups_cfg, err, errlen);
        if (srv->backups == NULL) {
            provend_server_stop(srv);
            uv_run(&srv->loop, UV_RUN_DEFAULT);
            goto failed;
        }
    }

    if (provend_server_register_ops(srv, err, errlen) != PROVEN_OK) {
        provend_server_stop(srv);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
        goto failed;
    }

    uv_timer_start(&srv->maintain, provend_server_on_maintain,
                   p->maintain(p), 0);

    provend_info("listening on %s (provider %s, %zu requests in flight "
                 "per connection)", cfg->socket_path, p->name,
                 srv->max_pending);

    uv_run(&srv->loop, UV_RUN_DEFAULT);

    provend_info("stopped");
    rc = PROVEN_OK;

failed:

    if (srv->apps != NULL) {
        provend_apps_stop(srv->apps);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
        provend_apps_free(srv->apps);
        srv->apps = NULL;
    }

    if (srv->sessions != NULL) {
        provend_sessions_stop(srv->sessions);
    }

    /* Whatever is still open (setup failures) is closed before we free. */
    uv_walk(&srv->loop, provend_server_on_walk_close, NULL);
    uv_run(&srv->loop, UV_RUN_DEFAULT);

    provend_server_release_threads(srv);

    if (uv_loop_close(&srv->loop) != 0) {
        provend_warn("event loop still busy at exit");
    }

    if (srv->sessions != NULL) {
        provend_sessions_free(srv->sessions);
    }
    if (srv->cluster != NULL) {
        provend_cluster_free(srv->cluster);
    }
    provend_backups_free(srv->backups);
    provend_tls_free(srv->tls);
    provend_chains_free(srv->chains);
    provend_radix_free(srv->radix);
    provend_ops_storage_free(srv->storage_ops);
    provend_dispatch_free(&srv->dispatch);
    free(srv);
    return rc;
}
