/*
 * ngx_http_proven_core_module: the provend client (see the header for the
 * API).  Per worker: a few unix socket connections to provend, each with a
 * queue of frames to write, a read buffer bounded to one frame and a tree
 * of calls waiting for their answer, keyed by id.  Other frame endpoints
 * (apps' runtime workers) are peers served the same way, made on first
 * use and dropped once idle.
 *
 * Calls and frames live in malloc()ed memory owned by this module, not in
 * request pools: a frame half written when its request goes away must still
 * be written whole, or the stream to provend would be corrupted.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <sys/socket.h>
#include <sys/un.h>

#include <jansson.h>

#include "ngx_http_proven_core.h"


/* Calls fail at once for this long after a failed connect(). */
#define NGX_HTTP_PROVEN_CORE_BACKOFF      500
#define NGX_HTTP_PROVEN_CORE_MAX_CONNS    64
#define NGX_HTTP_PROVEN_CORE_REASON_LEN   160
#define NGX_HTTP_PROVEN_PEER_CONNS        2
#define NGX_HTTP_PROVEN_PEER_IDLE         60000
#define NGX_HTTP_PROVEN_PEERS_MAX         1024
#define NGX_HTTP_PROVEN_PEER_CONNECT_WAIT 2000   /* a worker being replaced */
#define NGX_HTTP_PROVEN_PEER_RETRY        20


typedef struct ngx_http_proven_core_call_s  ngx_http_proven_core_call_t;
typedef struct ngx_http_proven_core_conn_s  ngx_http_proven_core_conn_t;


/* One frame endpoint: provend, or an app's runtime worker. */
struct ngx_http_proven_peer_s {
    ngx_str_t                         name;         /* the socket path */
    const char                       *what;         /* log prefix */
    struct sockaddr_un                sockaddr;
    socklen_t                         socklen;
    ngx_msec_t                        timeout;      /* default per call */
    ngx_msec_t                        backoff;      /* after connect fails */
    ngx_msec_t                        connect_wait; /* calls retry so long */
    ngx_uint_t                        connections;
    ngx_http_proven_core_conn_t      *conns;
    ngx_uint_t                        next_conn;
    uint64_t                          next_id;
    ngx_msec_t                        used;         /* last call */
    ngx_uint_t                        calls;        /* not yet delivered */
    ngx_queue_t                       queue;        /* in peers */
};


typedef struct {
    ngx_url_t                        *url;          /* NULL: not configured */
    ngx_msec_t                        timeout;
    ngx_uint_t                        connections;

    /* per worker, set up by init_process */
    ngx_http_proven_peer_t           *daemon;
    ngx_queue_t                       peers;        /* apps' workers */
    ngx_uint_t                        npeers;
} ngx_http_proven_core_main_conf_t;


/* Per main request: core's cleanup entries, to reuse. */
typedef struct {
    ngx_array_t                       cleanups;  /* ngx_http_cleanup_t * */
} ngx_http_proven_core_ctx_t;


/* One frame waiting in a connection's write queue. */
typedef struct {
    ngx_queue_t                       queue;
    ngx_http_proven_core_call_t      *call;   /* NULL: call over, frame not */
    uint8_t                          *data;   /* malloc()ed by libproven */
    size_t                            len;
    size_t                            sent;
} ngx_http_proven_core_out_t;


struct ngx_http_proven_core_call_s {
    ngx_rbtree_node_t                 node;   /* key: id, in conn->calls */
    uint64_t                          id;
    ngx_http_request_t               *r;
    ngx_http_proven_daemon_handler_pt handler;
    void                             *data;
    ngx_http_cleanup_t               *cleanup;
    ngx_http_proven_peer_t           *peer;
    ngx_msec_t                        timeout;
    ngx_http_proven_core_conn_t      *conn;   /* non-NULL while in the tree */
    ngx_http_proven_core_out_t       *out;    /* non-NULL while unwritten */
    ngx_http_proven_core_out_t       *held;   /* frame of a call waiting to
                                                 connect, in no queue */
    ngx_msec_t                        connect_until;
    ngx_event_t                       event;  /* timeout, deferred failure */
    ngx_err_t                         err;
    char                              reason[NGX_HTTP_PROVEN_CORE_REASON_LEN];
};


struct ngx_http_proven_core_conn_s {
    ngx_http_proven_peer_t           *peer;
    ngx_connection_t                 *connection;   /* NULL: closed */
    unsigned                          connected:1;  /* connect() finished */
    ngx_msec_t                        retry_at;     /* backoff end */
    ngx_err_t                         connect_err;
    ngx_rbtree_t                      calls;
    ngx_rbtree_node_t                 sentinel;
    ngx_queue_t                       out;
    proven_frame_reader_t             reader;
};


static ngx_http_proven_core_conn_t *ngx_http_proven_core_pick(
    ngx_http_proven_peer_t *peer);
static ngx_http_proven_peer_t *ngx_http_proven_peer_new(
    ngx_http_proven_core_main_conf_t *pcmcf, u_char *path, size_t len,
    ngx_msec_t timeout, ngx_uint_t connections, const char *what);
static void ngx_http_proven_peer_close(ngx_http_proven_peer_t *peer);
static void ngx_http_proven_core_send(ngx_http_proven_core_call_t *call);
static ngx_int_t ngx_http_proven_core_start(ngx_http_request_t *r,
    ngx_http_proven_peer_t *peer, cbor_item_t *request, const u_char *pairs,
    size_t len, ngx_uint_t npairs, ngx_msec_t timeout,
    ngx_http_proven_daemon_handler_pt handler, void *data);
static ngx_uint_t ngx_http_proven_peer_busy(ngx_http_proven_peer_t *peer);
static ngx_int_t ngx_http_proven_core_connect(
    ngx_http_proven_core_conn_t *conn);
static void ngx_http_proven_core_write_handler(ngx_event_t *wev);
static void ngx_http_proven_core_read_handler(ngx_event_t *rev);
static ngx_int_t ngx_http_proven_core_connect_finished(
    ngx_http_proven_core_conn_t *conn);
static ngx_int_t ngx_http_proven_core_process_frames(
    ngx_http_proven_core_conn_t *conn);
static void ngx_http_proven_core_close(ngx_http_proven_core_conn_t *conn,
    ngx_err_t err, const char *reason, ngx_uint_t backoff);
static ngx_http_proven_core_call_t *ngx_http_proven_core_lookup(
    ngx_http_proven_core_conn_t *conn, uint64_t id);
static void ngx_http_proven_core_detach(ngx_http_proven_core_call_t *call);
static void ngx_http_proven_core_fail_later(ngx_http_proven_core_call_t *call,
    ngx_err_t err, const char *reason);
static void ngx_http_proven_core_call_event(ngx_event_t *ev);
static void ngx_http_proven_core_deliver(ngx_http_proven_core_call_t *call,
    ngx_http_proven_daemon_status_e status, proven_response_t *res);
static void ngx_http_proven_core_cancel(void *data);
static uint8_t *ngx_http_proven_core_encode(cbor_item_t *request,
    uint64_t id, size_t *len, ngx_log_t *log);

static void *ngx_http_proven_core_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_proven_core_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_http_proven_daemon(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_proven_core_init_process(ngx_cycle_t *cycle);
static void ngx_http_proven_core_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_proven_core_commands[] = {

    { ngx_string("proven_daemon"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
      ngx_http_proven_daemon,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_proven_core_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_proven_core_create_main_conf, /* create main configuration */
    ngx_http_proven_core_init_main_conf,   /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_proven_core_module = {
    NGX_MODULE_V1,
    &ngx_http_proven_core_module_ctx,      /* module context */
    ngx_http_proven_core_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_proven_core_init_process,     /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_proven_core_exit_process,     /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* ---- the API ------------------------------------------------------------- */

ngx_int_t
ngx_http_proven_daemon_call(ngx_http_request_t *r, cbor_item_t *request,
    ngx_http_proven_daemon_handler_pt handler, void *data)
{
    return ngx_http_proven_daemon_call_timeout(r, request, 0, handler, data);
}


ngx_int_t
ngx_http_proven_daemon_call_timeout(ngx_http_request_t *r,
    cbor_item_t *request, ngx_msec_t timeout,
    ngx_http_proven_daemon_handler_pt handler, void *data)
{
    ngx_http_proven_core_main_conf_t  *pcmcf;

    pcmcf = ngx_http_get_module_main_conf(r, ngx_http_proven_core_module);

    if (pcmcf == NULL || pcmcf->url == NULL || pcmcf->daemon == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "proven daemon: no proven_daemon configured");
        return NGX_ERROR;
    }

    return ngx_http_proven_peer_call(r, pcmcf->daemon, request, timeout,
                                     handler, data);
}


/* The peer of this nginx worker for path, or NULL. */
static ngx_http_proven_peer_t *
ngx_http_proven_peer_find(ngx_http_proven_core_main_conf_t *pcmcf,
    u_char *path, size_t len)
{
    ngx_queue_t             *q;
    ngx_http_proven_peer_t  *peer;

    for (q = ngx_queue_head(&pcmcf->peers);
         q != ngx_queue_sentinel(&pcmcf->peers);
         q = ngx_queue_next(q))
    {
        peer = ngx_queue_data(q, ngx_http_proven_peer_t, queue);
        if (peer->name.len == len
            && ngx_strncmp(peer->name.data, path, len) == 0)
        {
            return peer;
        }
    }
    return NULL;
}


ngx_uint_t
ngx_http_proven_peer_pending(ngx_http_request_t *r, u_char *path,
    size_t len)
{
    ngx_http_proven_peer_t  *peer;

    peer = ngx_http_proven_peer_find(
               ngx_http_get_module_main_conf(r, ngx_http_proven_core_module),
               path, len);
    return peer != NULL ? peer->calls : 0;
}


ngx_http_proven_peer_t *
ngx_http_proven_peer_get(ngx_http_request_t *r, u_char *path, size_t len)
{
    ngx_queue_t                       *q, *next;
    ngx_http_proven_peer_t            *peer;
    ngx_http_proven_core_main_conf_t  *pcmcf;

    pcmcf = ngx_http_get_module_main_conf(r, ngx_http_proven_core_module);

    peer = ngx_http_proven_peer_find(pcmcf, path, len);
    if (peer != NULL) {
        peer->used = ngx_current_msec;
        return peer;
    }

    /* a new deploy means a new socket: workers gone idle are let go */
    for (q = ngx_queue_head(&pcmcf->peers);
         q != ngx_queue_sentinel(&pcmcf->peers);
         q = next)
    {
        next = ngx_queue_next(q);
        peer = ngx_queue_data(q, ngx_http_proven_peer_t, queue);

        if (((ngx_msec_int_t) (ngx_current_msec - peer->used)
             > NGX_HTTP_PROVEN_PEER_IDLE
             || pcmcf->npeers >= NGX_HTTP_PROVEN_PEERS_MAX)
            && !ngx_http_proven_peer_busy(peer))
        {
            ngx_http_proven_peer_close(peer);
            ngx_queue_remove(q);
            pcmcf->npeers--;
            ngx_free(peer);
        }
    }

    peer = ngx_http_proven_peer_new(pcmcf, path, len, pcmcf->timeout,
                                    NGX_HTTP_PROVEN_PEER_CONNS, "proven app");
    if (peer != NULL) {
        peer->backoff = 0;
        peer->connect_wait = NGX_HTTP_PROVEN_PEER_CONNECT_WAIT;
    }
    if (peer == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "proven app: cannot use the socket \"%*s\"", len,
                      path);
        return NULL;
    }

    ngx_queue_insert_head(&pcmcf->peers, &peer->queue);
    pcmcf->npeers++;
    return peer;
}


ngx_int_t
ngx_http_proven_peer_call(ngx_http_request_t *r, ngx_http_proven_peer_t *peer,
    cbor_item_t *request, ngx_msec_t timeout,
    ngx_http_proven_daemon_handler_pt handler, void *data)
{
    return ngx_http_proven_core_start(r, peer, request, NULL, 0, 0, timeout,
                                      handler, data);
}


ngx_int_t
ngx_http_proven_peer_call_encoded(ngx_http_request_t *r,
    ngx_http_proven_peer_t *peer, const u_char *pairs, size_t len,
    ngx_uint_t npairs, ngx_msec_t timeout,
    ngx_http_proven_daemon_handler_pt handler, void *data)
{
    return ngx_http_proven_core_start(r, peer, NULL, pairs, len, npairs,
                                      timeout, handler, data);
}


/* The frame {"id": id, <npairs pairs>} around pairs (malloc()ed). */
static uint8_t *
ngx_http_proven_core_frame(const u_char *pairs, size_t len,
    ngx_uint_t npairs, uint64_t id, size_t *frame_len)
{
    uint8_t                 *frame;
    proven_frame_builder_t   b;

    proven_frame_builder_init(&b, 16 + len, PROVEN_FRAME_MAX);
    proven_frame_put_head(&b, PROVEN_CBOR_MAP, npairs + 1);
    proven_frame_put_text(&b, "id");
    proven_frame_put_uint(&b, id);
    proven_frame_put_raw(&b, pairs, len);

    if (proven_frame_builder_finish(&b, &frame, frame_len) != PROVEN_OK) {
        return NULL;
    }

    return frame;
}


/*
 * A request cleanup entry for a call.  A request making call after call
 * (a streamed body) reuses the entries of its calls that are over (their
 * handler is NULL), or the request's list would grow by one per call.
 * Only core's own entries are reused: other modules clear theirs too.
 */
static ngx_http_cleanup_t *
ngx_http_proven_core_cleanup(ngx_http_request_t *r)
{
    ngx_uint_t                   i;
    ngx_http_cleanup_t          *cln, **entries, **entry;
    ngx_http_proven_core_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_proven_core_module);
    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->main->pool, sizeof(ngx_http_proven_core_ctx_t));
        if (ctx == NULL
            || ngx_array_init(&ctx->cleanups, r->main->pool, 2,
                              sizeof(ngx_http_cleanup_t *)) != NGX_OK)
        {
            return NULL;
        }
        ngx_http_set_ctx(r->main, ctx, ngx_http_proven_core_module);
    }

    entries = ctx->cleanups.elts;
    for (i = 0; i < ctx->cleanups.nelts; i++) {
        if (entries[i]->handler == NULL) {
            return entries[i];
        }
    }

    cln = ngx_http_cleanup_add(r, 0);
    entry = cln != NULL ? ngx_array_push(&ctx->cleanups) : NULL;
    if (entry == NULL) {
        return NULL;
    }
    *entry = cln;
    return cln;
}


static ngx_int_t
ngx_http_proven_core_start(ngx_http_request_t *r,
    ngx_http_proven_peer_t *peer, cbor_item_t *request, const u_char *pairs,
    size_t len, ngx_uint_t npairs, ngx_msec_t timeout,
    ngx_http_proven_daemon_handler_pt handler, void *data)
{
    ngx_http_cleanup_t                *cln;
    ngx_http_proven_core_out_t        *out;
    ngx_http_proven_core_call_t       *call;

    call = ngx_calloc(sizeof(ngx_http_proven_core_call_t), r->connection->log);
    if (call == NULL) {
        return NGX_ERROR;
    }

    out = ngx_calloc(sizeof(ngx_http_proven_core_out_t), r->connection->log);
    if (out == NULL) {
        ngx_free(call);
        return NGX_ERROR;
    }

    call->id = ++peer->next_id;

    out->data = request != NULL
                ? ngx_http_proven_core_encode(request, call->id, &out->len,
                                              r->connection->log)
                : ngx_http_proven_core_frame(pairs, len, npairs, call->id,
                                             &out->len);
    if (out->data == NULL) {
        ngx_free(out);
        ngx_free(call);
        return NGX_ERROR;
    }

    cln = ngx_http_proven_core_cleanup(r);
    if (cln == NULL) {
        free(out->data);
        ngx_free(out);
        ngx_free(call);
        return NGX_ERROR;
    }

    cln->handler = ngx_http_proven_core_cancel;
    cln->data = call;

    call->r = r;
    call->handler = handler;
    call->data = data;
    call->cleanup = cln;
    call->peer = peer;
    call->timeout = timeout ? timeout : peer->timeout;
    call->node.key = (ngx_rbtree_key_t) call->id;

    call->event.handler = ngx_http_proven_core_call_event;
    call->event.data = call;
    call->event.log = r->connection->log;

    peer->used = ngx_current_msec;
    peer->calls++;
    call->held = out;
    call->connect_until = ngx_current_msec + peer->connect_wait;

    ngx_http_proven_core_send(call);
    return NGX_OK;
}


/*
 * Puts the call's frame on a connection of its peer.  When none can be
 * opened: an app worker's peer retries for a moment (its worker may be
 * being replaced), provend's fails the call at once.
 */
static void
ngx_http_proven_core_send(ngx_http_proven_core_call_t *call)
{
    ngx_http_proven_peer_t       *peer;
    ngx_http_proven_core_out_t   *out;
    ngx_http_proven_core_conn_t  *conn;

    peer = call->peer;
    out = call->held;
    conn = ngx_http_proven_core_pick(peer);

    if (ngx_http_proven_core_connect(conn) != NGX_OK) {
        if ((ngx_msec_int_t) (call->connect_until - ngx_current_msec) > 0) {
            ngx_add_timer(&call->event, NGX_HTTP_PROVEN_PEER_RETRY);
            return;
        }
        call->held = NULL;
        free(out->data);
        ngx_free(out);
        ngx_http_proven_core_fail_later(call, conn->connect_err,
                                        "connect() failed");
        return;
    }

    call->held = NULL;
    out->call = call;
    call->out = out;
    ngx_queue_insert_tail(&conn->out, &out->queue);

    call->conn = conn;
    ngx_rbtree_insert(&conn->calls, &call->node);

    ngx_add_timer(&call->event, call->timeout);

    /*
     * Written from the event loop, not from here: a handler running inside
     * our read handler may start calls, and a write error must not close
     * the connection under the reader's feet.
     */
    if (conn->connected) {
        ngx_post_event(conn->connection->write, &ngx_posted_events);
    }
}


ngx_int_t
ngx_http_proven_peer_notify(ngx_http_proven_peer_t *peer, const u_char *pairs,
    size_t len, ngx_uint_t npairs)
{
    ngx_uint_t                    i;
    ngx_http_proven_core_out_t   *out;
    ngx_http_proven_core_conn_t  *conn;

    conn = NULL;
    for (i = 0; i < peer->connections; i++) {
        if (peer->conns[i].connection != NULL && peer->conns[i].connected) {
            conn = &peer->conns[i];
            break;
        }
    }
    if (conn == NULL) {
        return NGX_DECLINED;
    }

    out = ngx_calloc(sizeof(ngx_http_proven_core_out_t), ngx_cycle->log);
    if (out == NULL) {
        return NGX_ERROR;
    }
    /* its answer finds no call and is dropped, as a late one is */
    out->data = ngx_http_proven_core_frame(pairs, len, npairs,
                                           ++peer->next_id, &out->len);
    if (out->data == NULL) {
        ngx_free(out);
        return NGX_ERROR;
    }
    ngx_queue_insert_tail(&conn->out, &out->queue);
    ngx_post_event(conn->connection->write, &ngx_posted_events);
    return NGX_OK;
}


ngx_uint_t
ngx_http_proven_daemon_configured(ngx_conf_t *cf)
{
    ngx_http_proven_core_main_conf_t  *pcmcf;

    pcmcf = ngx_http_conf_get_module_main_conf(cf,
                                               ngx_http_proven_core_module);

    return pcmcf != NULL && pcmcf->url != NULL;
}


const char *
ngx_http_proven_daemon_status_name(ngx_http_proven_daemon_status_e status)
{
    switch (status) {
    case NGX_HTTP_PROVEN_DAEMON_OK:
        return "ok";
    case NGX_HTTP_PROVEN_DAEMON_ERROR:
        return "error";
    case NGX_HTTP_PROVEN_DAEMON_UNREACHABLE:
        return "unreachable";
    case NGX_HTTP_PROVEN_DAEMON_TIMEOUT:
        return "timeout";
    }

    return "unknown";
}


/*
 * A frame for request with "id" first: a new definite map that shares the
 * caller's keys and values (cbor_map_add takes its own references).
 */
static uint8_t *
ngx_http_proven_core_encode(cbor_item_t *request, uint64_t id, size_t *len,
    ngx_log_t *log)
{
    char               err[PROVEN_ERR_LEN];
    size_t             i, n;
    uint8_t           *frame;
    cbor_item_t       *map, *op;
    struct cbor_pair  *pairs, pair;

    frame = NULL;
    map = NULL;
    pair.key = NULL;
    pair.value = NULL;

    op = proven_cbor_map_get(request, "op");
    if (op == NULL || !cbor_isa_string(op)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "proven daemon: request without a text \"op\"");
        return NULL;
    }

    n = cbor_map_size(request);
    pairs = cbor_map_handle(request);

    map = cbor_new_definite_map(n + 1);
    if (map == NULL) {
        goto failed;
    }

    pair.key = cbor_build_string("id");
    pair.value = cbor_build_uint64(id);
    if (pair.key == NULL || pair.value == NULL || !cbor_map_add(map, pair)) {
        goto failed;
    }

    cbor_decref(&pair.key);
    cbor_decref(&pair.value);

    for (i = 0; i < n; i++) {
        if (cbor_isa_string(pairs[i].key)
            && cbor_string_is_definite(pairs[i].key)
            && cbor_string_length(pairs[i].key) == 2
            && ngx_strncmp(cbor_string_handle(pairs[i].key), "id", 2) == 0)
        {
            continue;
        }

        if (!cbor_map_add(map, pairs[i])) {
            goto failed;
        }
    }

    if (proven_frame_encode(map, &frame, len, err, sizeof(err))
        != PROVEN_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "proven daemon: cannot encode request: %s", err);
        frame = NULL;
        goto failed;
    }

    cbor_decref(&map);

    return frame;

failed:

    if (frame == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "proven daemon: cannot build request frame");
    }

    if (pair.key != NULL) {
        cbor_decref(&pair.key);
    }

    if (pair.value != NULL) {
        cbor_decref(&pair.value);
    }

    if (map != NULL) {
        cbor_decref(&map);
    }

    return NULL;
}


/* ---- connections --------------------------------------------------------- */

/*
 * Round robin over the connections that are open or may be opened: one
 * backing off after a failed connect() must not fail calls that another,
 * healthy one could carry.
 */
static ngx_http_proven_core_conn_t *
ngx_http_proven_core_pick(ngx_http_proven_peer_t *peer)
{
    ngx_uint_t                    i, start;
    ngx_http_proven_core_conn_t  *conn;

    start = peer->next_conn++;

    for (i = 0; i < peer->connections; i++) {
        conn = &peer->conns[(start + i) % peer->connections];

        if (conn->connection != NULL
            || (ngx_msec_int_t) (conn->retry_at - ngx_current_msec) <= 0)
        {
            return conn;
        }
    }

    return &peer->conns[start % peer->connections];
}


static ngx_int_t
ngx_http_proven_core_connect(ngx_http_proven_core_conn_t *conn)
{
    int                rc;
    ngx_err_t          err;
    ngx_int_t          event;
    ngx_event_t       *rev, *wev;
    ngx_socket_t       s;
    ngx_connection_t  *c;

    if (conn->connection != NULL) {
        return NGX_OK;
    }

    if ((ngx_msec_int_t) (conn->retry_at - ngx_current_msec) > 0) {
        return NGX_DECLINED;
    }

    s = ngx_socket(AF_UNIX, SOCK_STREAM, 0);
    if (s == (ngx_socket_t) -1) {
        conn->connect_err = ngx_socket_errno;
        goto backoff;
    }

    c = ngx_get_connection(s, ngx_cycle->log);
    if (c == NULL) {
        conn->connect_err = 0;
        ngx_close_socket(s);
        goto backoff;
    }

    c->type = SOCK_STREAM;
    c->data = conn;
    c->recv = ngx_recv;
    c->send = ngx_send;
    c->recv_chain = ngx_recv_chain;
    c->send_chain = ngx_send_chain;
    c->log = ngx_cycle->log;
    c->log_error = NGX_ERROR_INFO;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);
    c->start_time = ngx_current_msec;

    rev = c->read;
    wev = c->write;
    rev->log = c->log;
    wev->log = c->log;
    rev->handler = ngx_http_proven_core_read_handler;
    wev->handler = ngx_http_proven_core_write_handler;

    if (ngx_nonblocking(s) == -1) {
        conn->connect_err = ngx_socket_errno;
        goto failed;
    }

    if (ngx_add_conn) {
        if (ngx_add_conn(c) == NGX_ERROR) {
            conn->connect_err = 0;
            goto failed;
        }
    }

    rc = connect(s, (struct sockaddr *) &conn->peer->sockaddr,
                 conn->peer->socklen);

    if (rc == -1) {
        err = ngx_socket_errno;

        if (err != NGX_EINPROGRESS) {
            conn->connect_err = err;
            goto failed;
        }
    }

    conn->connection = c;
    conn->connected = (rc == 0);

    if (!ngx_add_conn) {
        event = (ngx_event_flags & NGX_USE_CLEAR_EVENT) ? NGX_CLEAR_EVENT
                                                        : NGX_LEVEL_EVENT;

        if (ngx_add_event(rev, NGX_READ_EVENT, event) != NGX_OK) {
            conn->connect_err = 0;
            conn->connection = NULL;
            goto failed;
        }

        if (rc == -1
            && ngx_add_event(wev, NGX_WRITE_EVENT, event) != NGX_OK)
        {
            conn->connect_err = 0;
            conn->connection = NULL;
            goto failed;
        }
    }

    if (rc == 0) {
        wev->ready = 1;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "%s: connection *%uA to %V opened", conn->peer->what,
                   c->number, &conn->peer->name);

    return NGX_OK;

failed:

    ngx_close_connection(c);

backoff:

    conn->retry_at = ngx_current_msec + conn->peer->backoff;

    return NGX_DECLINED;
}


/* A non-blocking connect() in progress has ended: did it work? */
static ngx_int_t
ngx_http_proven_core_connect_finished(ngx_http_proven_core_conn_t *conn)
{
    int        err;
    socklen_t  len;

    if (conn->connected) {
        return NGX_OK;
    }

    err = 0;
    len = sizeof(int);

    if (getsockopt(conn->connection->fd, SOL_SOCKET, SO_ERROR,
                   (void *) &err, &len) == -1)
    {
        err = ngx_socket_errno;
    }

    if (err != 0) {
        conn->connect_err = err;
        ngx_http_proven_core_close(conn, err, "connect() failed", 1);
        return NGX_ERROR;
    }

    conn->connected = 1;

    return NGX_OK;
}


static void
ngx_http_proven_core_write_handler(ngx_event_t *wev)
{
    ssize_t                       n;
    ngx_connection_t             *c;
    ngx_http_proven_core_out_t   *out;
    ngx_http_proven_core_conn_t  *conn;

    c = wev->data;
    conn = c->data;

    if (ngx_http_proven_core_connect_finished(conn) != NGX_OK) {
        return;
    }

    while (!ngx_queue_empty(&conn->out)) {
        out = ngx_queue_data(ngx_queue_head(&conn->out),
                             ngx_http_proven_core_out_t, queue);

        n = c->send(c, out->data + out->sent, out->len - out->sent);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "%s: send: %z", conn->peer->what, n);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR) {
            /* ngx_unix_send() said why */
            ngx_http_proven_core_close(conn, 0, "send() failed", 0);
            return;
        }

        out->sent += n;

        if (out->sent < out->len) {
            if (!wev->ready) {
                break;                  /* the socket took what it could */
            }
            continue;
        }

        ngx_queue_remove(&out->queue);

        if (out->call != NULL) {
            out->call->out = NULL;
        }

        free(out->data);
        ngx_free(out);
    }

    if (ngx_handle_write_event(wev, 0) != NGX_OK) {
        ngx_http_proven_core_close(conn, 0, "cannot watch the socket", 0);
    }
}


static void
ngx_http_proven_core_read_handler(ngx_event_t *rev)
{
    u_char                       *buf;
    size_t                        size;
    ssize_t                       n;
    ngx_connection_t             *c;
    ngx_http_proven_core_conn_t  *conn;

    c = rev->data;
    conn = c->data;

    if (ngx_http_proven_core_connect_finished(conn) != NGX_OK) {
        return;
    }

    for ( ;; ) {

        buf = proven_frame_reader_space(&conn->reader, &size);
        if (buf == NULL || size == 0) {
            ngx_http_proven_core_close(conn, 0, "out of memory", 0);
            return;
        }

        n = c->recv(c, buf, size);

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "%s: recv: %z", conn->peer->what, n);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0) {
            ngx_http_proven_core_close(conn, 0,
                                       "provend closed the connection", 0);
            return;
        }

        if (n == NGX_ERROR) {
            /* ngx_unix_recv() said why */
            ngx_http_proven_core_close(conn, 0, "recv() failed", 0);
            return;
        }

        proven_frame_reader_fill(&conn->reader, n);

        if (ngx_http_proven_core_process_frames(conn) != NGX_OK) {
            return;
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_proven_core_close(conn, 0, "cannot watch the socket", 0);
    }
}


/*
 * Answers every complete frame in the read buffer and makes room for the
 * next one.  NGX_ERROR: the connection was closed.
 */
static ngx_int_t
ngx_http_proven_core_process_frames(ngx_http_proven_core_conn_t *conn)
{
    char                          err[PROVEN_ERR_LEN];
    size_t                        len;
    ngx_int_t                     rc;
    const uint8_t                *body;
    proven_response_t             res;
    ngx_http_proven_core_call_t  *call;

    for ( ;; ) {

        rc = proven_frame_reader_next(&conn->reader, &body, &len, err,
                                      sizeof(err));

        if (rc == PROVEN_AGAIN) {
            return NGX_OK;
        }

        if (rc != PROVEN_OK) {
            ngx_log_error(NGX_LOG_ERR, conn->connection->log, 0,
                          "proven daemon: bad frame from provend: %s", err);
            ngx_http_proven_core_close(conn, 0, "bad frame from provend", 0);
            return NGX_ERROR;
        }

        if (proven_response_decode(body, len, &res, err, sizeof(err))
            != PROVEN_OK)
        {
            ngx_log_error(NGX_LOG_ERR, conn->connection->log, 0,
                          "proven daemon: bad response from provend: %s",
                          err);
            ngx_http_proven_core_close(conn, 0, "bad response from provend",
                                       0);
            return NGX_ERROR;
        }

        call = ngx_http_proven_core_lookup(conn, res.id);

        if (call == NULL) {
            /* its request went away, or it timed out */
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, conn->connection->log, 0,
                           "proven daemon: late answer to call %uL",
                           res.id);
            proven_response_free(&res);
            continue;
        }

        ngx_http_proven_core_detach(call);

        ngx_http_proven_core_deliver(call,
                                     res.ok ? NGX_HTTP_PROVEN_DAEMON_OK
                                            : NGX_HTTP_PROVEN_DAEMON_ERROR,
                                     &res);

        proven_response_free(&res);
    }
}


/*
 * Closes the connection and fails every call on it (from the event loop,
 * so no handler runs inside this function).
 */
static void
ngx_http_proven_core_close(ngx_http_proven_core_conn_t *conn, ngx_err_t err,
    const char *reason, ngx_uint_t backoff)
{
    ngx_queue_t                  *q;
    ngx_rbtree_node_t            *node;
    ngx_http_proven_core_out_t   *out;
    ngx_http_proven_core_call_t  *call;

    if (conn->connection != NULL) {
        ngx_log_error(NGX_LOG_INFO, conn->connection->log, err,
                      "%s: connection to %V closed: %s", conn->peer->what,
                      &conn->peer->name, reason);

        ngx_close_connection(conn->connection);
        conn->connection = NULL;
    }

    conn->connected = 0;

    if (backoff) {
        conn->retry_at = ngx_current_msec + conn->peer->backoff;
    }

    while (!ngx_queue_empty(&conn->out)) {
        q = ngx_queue_head(&conn->out);
        out = ngx_queue_data(q, ngx_http_proven_core_out_t, queue);
        ngx_queue_remove(q);

        if (out->call != NULL) {
            out->call->out = NULL;
        }

        free(out->data);
        ngx_free(out);
    }

    while (conn->calls.root != conn->calls.sentinel) {
        node = ngx_rbtree_min(conn->calls.root, conn->calls.sentinel);
        call = (ngx_http_proven_core_call_t *) node;

        ngx_http_proven_core_detach(call);
        ngx_http_proven_core_fail_later(call, err, reason);
    }

    proven_frame_reader_free(&conn->reader);
}


static ngx_http_proven_core_call_t *
ngx_http_proven_core_lookup(ngx_http_proven_core_conn_t *conn, uint64_t id)
{
    ngx_rbtree_key_t    key;
    ngx_rbtree_node_t  *node, *sentinel;

    key = (ngx_rbtree_key_t) id;
    node = conn->calls.root;
    sentinel = conn->calls.sentinel;

    while (node != sentinel) {
        if (key < node->key) {
            node = node->left;
            continue;
        }

        if (key > node->key) {
            node = node->right;
            continue;
        }

        if (((ngx_http_proven_core_call_t *) node)->id == id) {
            return (ngx_http_proven_core_call_t *) node;
        }

        /* same key, different id: only when keys are 32 bits and wrap */
        return NULL;
    }

    return NULL;
}


/* ---- calls --------------------------------------------------------------- */

/* Takes call out of its timer, posted queue, tree and write queue. */
static void
ngx_http_proven_core_detach(ngx_http_proven_core_call_t *call)
{
    ngx_http_proven_core_out_t  *out;

    if (call->event.timer_set) {
        ngx_del_timer(&call->event);
    }

    if (call->event.posted) {
        ngx_delete_posted_event(&call->event);
    }

    if (call->conn != NULL) {
        ngx_rbtree_delete(&call->conn->calls, &call->node);
        call->conn = NULL;
    }

    if (call->held != NULL) {
        free(call->held->data);
        ngx_free(call->held);
        call->held = NULL;
    }

    out = call->out;

    if (out != NULL) {
        call->out = NULL;

        if (out->sent == 0) {
            ngx_queue_remove(&out->queue);
            free(out->data);
            ngx_free(out);

        } else {
            /* half written: the rest must still go out */
            out->call = NULL;
        }
    }
}


static void
ngx_http_proven_core_fail_later(ngx_http_proven_core_call_t *call,
    ngx_err_t err, const char *reason)
{
    call->err = err;
    ngx_cpystrn((u_char *) call->reason, (u_char *) reason,
                sizeof(call->reason));

    ngx_post_event(&call->event, &ngx_posted_events);
}


/* The call's timer fired, or its failure was posted. */
static void
ngx_http_proven_core_call_event(ngx_event_t *ev)
{
    ngx_http_proven_core_call_t  *call;

    call = ev->data;

    if (ev->timedout && call->held != NULL) {
        ev->timedout = 0;
        ngx_http_proven_core_send(call);
        return;
    }

    if (ev->timedout) {
        ev->timedout = 0;

        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "%s: no answer from %V within %Mms", call->peer->what,
                      &call->peer->name, call->timeout);

        ngx_http_proven_core_detach(call);
        ngx_http_proven_core_deliver(call, NGX_HTTP_PROVEN_DAEMON_TIMEOUT,
                                     NULL);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ev->log, call->err,
                  "%s: %V unreachable: %s", call->peer->what,
                  &call->peer->name, call->reason);

    ngx_http_proven_core_detach(call);
    ngx_http_proven_core_deliver(call, NGX_HTTP_PROVEN_DAEMON_UNREACHABLE,
                                 NULL);
}


/* call is detached; it is freed before its handler runs. */
static void
ngx_http_proven_core_deliver(ngx_http_proven_core_call_t *call,
    ngx_http_proven_daemon_status_e status, proven_response_t *res)
{
    void                               *data;
    ngx_connection_t                   *c;
    ngx_http_request_t                 *r;
    ngx_http_proven_daemon_handler_pt   handler;

    r = call->r;
    c = r->connection;
    handler = call->handler;
    data = call->data;

    call->peer->calls--;
    call->cleanup->handler = NULL;
    ngx_free(call);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "proven daemon: call done: %s \"%V\"",
                   ngx_http_proven_daemon_status_name(status), &r->uri);

    handler(r, status, res, data);

    ngx_http_run_posted_requests(c);
}


/* The request is going away before its answer came. */
static void
ngx_http_proven_core_cancel(void *data)
{
    ngx_http_proven_core_call_t  *call = data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, call->event.log, 0,
                   "proven daemon: call %uL cancelled", call->id);

    ngx_http_proven_core_detach(call);
    call->peer->calls--;
    ngx_free(call);
}


/* ---- configuration ------------------------------------------------------- */

static void *
ngx_http_proven_core_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_proven_core_main_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_proven_core_main_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->url = NULL;
     *     conf->conns = NULL;
     *     conf->next_conn = 0;
     *     conf->next_id = 0;
     */

    conf->timeout = NGX_CONF_UNSET_MSEC;
    conf->connections = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_proven_core_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_proven_core_main_conf_t  *pcmcf = conf;

    ngx_conf_init_msec_value(pcmcf->timeout, 5000);
    ngx_conf_init_uint_value(pcmcf->connections, 2);

    return NGX_CONF_OK;
}


static char *
ngx_http_proven_daemon(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_proven_core_main_conf_t  *pcmcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value, s;
    ngx_url_t  *u;
    ngx_uint_t  i;

    if (pcmcf->url != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "unix:", 5) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "proven daemon: \"%V\" is not a unix: socket",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    u = ngx_pcalloc(cf->pool, sizeof(ngx_url_t));
    if (u == NULL) {
        return NGX_CONF_ERROR;
    }

    u->url = value[1];
    u->no_resolve = 1;

    if (ngx_parse_url(cf->pool, u) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "proven daemon: %s in \"%V\"",
                           u->err ? u->err : "bad address", &u->url);
        return NGX_CONF_ERROR;
    }

    if (u->naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "proven daemon: no address in \"%V\"", &u->url);
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.len = value[i].len - 8;
            s.data = value[i].data + 8;

            pcmcf->timeout = ngx_parse_time(&s, 0);
            if (pcmcf->timeout == (ngx_msec_t) NGX_ERROR
                || pcmcf->timeout == 0)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "connections=", 12) == 0) {
            n = ngx_atoi(value[i].data + 12, value[i].len - 12);
            if (n < 1 || n > NGX_HTTP_PROVEN_CORE_MAX_CONNS) {
                goto invalid;
            }

            pcmcf->connections = (ngx_uint_t) n;
            continue;
        }

        goto invalid;
    }

    pcmcf->url = u;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "proven daemon: invalid parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}


/* ---- worker life --------------------------------------------------------- */

/*
 * Whether a call of the peer is still to be delivered: on a connection,
 * waiting to connect, or posted to fail (counted from the call's start to
 * its delivery or cancellation, so a freed peer is never referred to).
 */
static ngx_uint_t
ngx_http_proven_peer_busy(ngx_http_proven_peer_t *peer)
{
    return peer->calls > 0;
}


/* A peer with its connections, none open yet (ngx_alloc()ed). */
static ngx_http_proven_peer_t *
ngx_http_proven_peer_new(ngx_http_proven_core_main_conf_t *pcmcf,
    u_char *path, size_t len, ngx_msec_t timeout, ngx_uint_t connections,
    const char *what)
{
    u_char                       *p;
    ngx_uint_t                    i;
    ngx_http_proven_peer_t       *peer;
    ngx_http_proven_core_conn_t  *conn;

    (void) pcmcf;

    if (len == 0 || len >= sizeof(peer->sockaddr.sun_path)) {
        return NULL;
    }

    p = ngx_calloc(sizeof(ngx_http_proven_peer_t)
                   + connections * sizeof(ngx_http_proven_core_conn_t)
                   + len + 1, ngx_cycle->log);
    if (p == NULL) {
        return NULL;
    }

    peer = (ngx_http_proven_peer_t *) p;
    peer->conns = (ngx_http_proven_core_conn_t *) (peer + 1);
    peer->name.data = (u_char *) (peer->conns + connections);
    peer->name.len = len;
    ngx_memcpy(peer->name.data, path, len);

    peer->sockaddr.sun_family = AF_UNIX;
    ngx_memcpy(peer->sockaddr.sun_path, path, len);
    peer->socklen = offsetof(struct sockaddr_un, sun_path) + len + 1;
    peer->timeout = timeout;
    peer->backoff = NGX_HTTP_PROVEN_CORE_BACKOFF;
    peer->connections = connections;
    peer->what = what;
    peer->used = ngx_current_msec;

    for (i = 0; i < connections; i++) {
        conn = &peer->conns[i];
        conn->peer = peer;
        conn->retry_at = ngx_current_msec;
        ngx_rbtree_init(&conn->calls, &conn->sentinel,
                        ngx_rbtree_insert_value);
        ngx_queue_init(&conn->out);
        proven_frame_reader_init(&conn->reader, PROVEN_FRAME_MAX);
    }

    return peer;
}


/* The worker is leaving, or the peer is idle: calls end without handlers. */
static void
ngx_http_proven_peer_close(ngx_http_proven_peer_t *peer)
{
    ngx_uint_t                    i;
    ngx_rbtree_node_t            *node;
    ngx_http_proven_core_conn_t  *conn;
    ngx_http_proven_core_call_t  *call;

    for (i = 0; i < peer->connections; i++) {
        conn = &peer->conns[i];

        while (conn->calls.root != conn->calls.sentinel) {
            node = ngx_rbtree_min(conn->calls.root, conn->calls.sentinel);
            call = (ngx_http_proven_core_call_t *) node;

            ngx_http_proven_core_detach(call);
            call->cleanup->handler = NULL;
            ngx_free(call);
        }

        ngx_http_proven_core_close(conn, 0, "worker exiting", 0);
    }
}


static ngx_int_t
ngx_http_proven_core_init_process(ngx_cycle_t *cycle)
{
    struct sockaddr_un                *sun;
    ngx_http_proven_core_main_conf_t  *pcmcf;

    pcmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                                ngx_http_proven_core_module);

    if (pcmcf == NULL) {
        return NGX_OK;
    }

    ngx_queue_init(&pcmcf->peers);

    if (pcmcf->url == NULL) {
        return NGX_OK;
    }

    sun = (struct sockaddr_un *) pcmcf->url->addrs[0].sockaddr;
    pcmcf->daemon = ngx_http_proven_peer_new(pcmcf, (u_char *) sun->sun_path,
                                             ngx_strlen(sun->sun_path),
                                             pcmcf->timeout,
                                             pcmcf->connections,
                                             "proven daemon");
    if (pcmcf->daemon == NULL) {
        return NGX_ERROR;
    }
    pcmcf->daemon->name = pcmcf->url->url;

    return NGX_OK;
}


static void
ngx_http_proven_core_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t                       *q;
    ngx_http_proven_peer_t            *peer;
    ngx_http_proven_core_main_conf_t  *pcmcf;

    pcmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                                ngx_http_proven_core_module);

    if (pcmcf == NULL) {
        return;
    }

    if (pcmcf->daemon != NULL) {
        ngx_http_proven_peer_close(pcmcf->daemon);
    }

    if (pcmcf->peers.next == NULL) {
        return;                         /* init_process never ran */
    }

    while (!ngx_queue_empty(&pcmcf->peers)) {
        q = ngx_queue_head(&pcmcf->peers);
        peer = ngx_queue_data(q, ngx_http_proven_peer_t, queue);
        ngx_queue_remove(q);
        ngx_http_proven_peer_close(peer);
        ngx_free(peer);
    }
}


/* ---- helpers for the other modules ----------------------------------------- */

static ngx_str_t  ngx_http_proven_json_type =
    ngx_string("application/json");


u_char *
ngx_http_proven_body(ngx_http_request_t *r, size_t max, size_t *len,
    ngx_int_t *too_large)
{
    u_char       *body, *p;
    size_t        size;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    *len = 0;
    *too_large = 0;
    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return ngx_alloc(1, r->connection->log);
    }

    size = 0;
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        size += b->in_file ? (size_t) (b->file_last - b->file_pos)
                           : (size_t) (b->last - b->pos);
    }
    if (size > max) {
        *too_large = 1;
        return NULL;
    }

    body = ngx_alloc(size ? size : 1, r->connection->log);
    if (body == NULL) {
        return NULL;
    }

    p = body;
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                ngx_free(body);
                return NULL;
            }
            p += n;
        } else if (b->last > b->pos) {
            /* an empty buffer may have no memory at all */
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    *len = size;
    return body;
}


ngx_int_t
ngx_http_proven_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *data, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    if (type != NULL) {
        r->headers_out.content_type = *type;
        r->headers_out.content_type_len = type->len;
    }

    if (len == 0 || r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
        return ngx_http_send_header(r);
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }
    b->pos = data;
    b->last = data + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;
    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_proven_add_header(ngx_http_request_t *r, const char *key,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *value;

    return NGX_OK;
}


ngx_int_t
ngx_http_proven_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message, const char *error_id)
{
    char       *text;
    size_t      len;
    u_char     *body;
    json_t     *json;
    ngx_int_t   rc;

    if (!r->request_body) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    json = error_id
           ? json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code,
                       "message", message, "error_id", error_id)
           : json_pack("{s:{s:s,s:s}}", "error", "code", code,
                       "message", message);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    text = json_dumps(json, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(json);
    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(text);
    body = ngx_pnalloc(r->pool, len + 1);
    if (body == NULL) {
        free(text);
        return NGX_ERROR;
    }
    ngx_memcpy(body, text, len);
    body[len] = '\n';
    free(text);

    return ngx_http_proven_send(r, status,
                                    &ngx_http_proven_json_type, body,
                                    len + 1);
}
