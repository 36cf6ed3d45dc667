/*
 * ngx_http_proven_rpc_module: attested sessions and signed RPC.
 *
 *     location = /session                  { proven_rpc; }
 *     location ~ ^/app/[^/]+/session$      { proven_rpc; }
 *     location ~ ^/(app/[^/]+/)?rpc/(http|ws)$ { proven_rpc; }
 *
 *     proven_rpc_max_message 1m;       larger messages: 413, or close 1009
 *     proven_rpc_ws_idle 5m;           a WebSocket quiet so long is closed
 *     proven_rpc_timeout 330s;         no answer from provend by then: 504
 *
 * The handler reads what to do from the path:
 *   POST [/app/NAME]/session        multipart/form-data or application/cbor
 *                                   {nonce, public_key}: the attestation
 *                                   document of a new session
 *   POST [/app/NAME]/rpc/http?session=ID   one signed message, one answer
 *   GET  [/app/NAME]/rpc/ws?session=ID     a WebSocket (RFC 6455) carrying
 *                                   one message per binary frame
 * Sessions, keys, seq and the commands are provend's (daemon/sessions/):
 * this module carries bytes and maps provend's refusals to statuses.
 *
 * Refusals are unsigned JSON {"error": {"code", "message"}}: 400 bad
 * input, 401 unknown or expired session or a bad signature, 403 origin not
 * allowed, 404, 405, 409 replayed seq, 413, 415, 502/504 provend down or
 * slow.  On a WebSocket a refusal is a text frame carrying that JSON; one
 * that ends the session also closes the socket (1008).  A text frame from
 * the client closes it with 1003, a protocol error with 1002, a message
 * over proven_rpc_max_message with 1009.
 *
 * A WebSocket handles one message at a time: the next frame is read once
 * the answer to the last is written, so a client cannot queue unbounded
 * work and the session sees its messages in order.
 *
 * Log lines start with "proven rpc: ".
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_sha1.h>

#include <string.h>

#include "ngx_http_proven_core.h"


#define NGX_HTTP_PROVEN_RPC_SESSION_BODY_MAX  16384
#define NGX_HTTP_PROVEN_RPC_APP_MAX           64
#define NGX_HTTP_PROVEN_RPC_ID_LEN            16
#define NGX_HTTP_PROVEN_RPC_CLOSE_WAIT        5000

#define NGX_HTTP_PROVEN_RPC_SESSION           1
#define NGX_HTTP_PROVEN_RPC_HTTP              2
#define NGX_HTTP_PROVEN_RPC_WS                3

/* WebSocket opcodes and close codes */



typedef struct {
    ngx_flag_t    enable;
    size_t        max_message;
    ngx_msec_t    ws_idle;
    ngx_msec_t    timeout;
} ngx_http_proven_rpc_loc_conf_t;

typedef struct {
    ngx_uint_t    what;                 /* SESSION, HTTP, WS */
    ngx_str_t     app;                  /* empty: management */
    u_char        session[NGX_HTTP_PROVEN_RPC_ID_LEN];

    /* WebSocket */
    u_char       *in;                   /* bytes read, not yet parsed */
    size_t        in_len;
    size_t        in_cap;
    u_char       *msg;                  /* a fragmented message so far */
    size_t        msg_len;
    size_t        msg_cap;
    ngx_uint_t    msg_open;
    u_char       *out;                  /* bytes to write */
    size_t        out_pos;
    size_t        out_len;
    size_t        out_cap;
    unsigned      calling:1;            /* rpc.call under way */
    unsigned      closing:1;            /* close once out is written */
    unsigned      draining:1;           /* close sent: reading to the end */
    unsigned      peer_closed:1;        /* the client's close frame came */
    unsigned      done:1;               /* finalized */
} ngx_http_proven_rpc_ctx_t;


static ngx_int_t ngx_http_proven_rpc_handler(ngx_http_request_t *r);
static void ngx_http_proven_rpc_session_body(ngx_http_request_t *r);
static void ngx_http_proven_rpc_http_body(ngx_http_request_t *r);
static void ngx_http_proven_rpc_answer(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data);
static ngx_int_t ngx_http_proven_rpc_ws_start(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx);
static void ngx_http_proven_rpc_ws_checked(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data);
static void ngx_http_proven_rpc_ws_read(ngx_http_request_t *r);
static void ngx_http_proven_rpc_ws_write(ngx_http_request_t *r);
static void ngx_http_proven_rpc_ws_answer(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data);
static void ngx_http_proven_rpc_ws_drain(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx);
static void ngx_http_proven_rpc_ws_close(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx, ngx_uint_t code, const char *reason);
static void ngx_http_proven_rpc_ws_cleanup(void *data);
static void *ngx_http_proven_rpc_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_proven_rpc_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_proven_rpc(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_proven_rpc_commands[] = {

    { ngx_string("proven_rpc"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_proven_rpc,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("proven_rpc_max_message"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_proven_rpc_loc_conf_t, max_message),
      NULL },

    { ngx_string("proven_rpc_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_proven_rpc_loc_conf_t, timeout),
      NULL },

    { ngx_string("proven_rpc_ws_idle"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_proven_rpc_loc_conf_t, ws_idle),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_proven_rpc_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_proven_rpc_create_loc_conf,   /* create location configuration */
    ngx_http_proven_rpc_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_proven_rpc_module = {
    NGX_MODULE_V1,
    &ngx_http_proven_rpc_module_ctx,       /* module context */
    ngx_http_proven_rpc_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_proven_rpc_cbor_type =
    ngx_string("application/cbor");


/* ---- what the request asks ----------------------------------------------- */

/* [/app/NAME](/session | /rpc/http | /rpc/ws) */
static ngx_int_t
ngx_http_proven_rpc_target(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx)
{
    u_char     *p, *end, *name;
    ngx_str_t   rest;

    p = r->uri.data;
    end = p + r->uri.len;

    if (r->uri.len > 5 && ngx_strncmp(p, "/app/", 5) == 0) {
        name = p + 5;
        for (p = name; p < end && *p != '/'; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
                  || *p == '_' || *p == '-'))
            {
                return NGX_DECLINED;
            }
        }
        if (p == name || p - name > NGX_HTTP_PROVEN_RPC_APP_MAX
            || *name == '_' || *name == '-')
        {
            return NGX_DECLINED;
        }
        ctx->app.data = name;
        ctx->app.len = p - name;
    }

    rest.data = p;
    rest.len = end - p;

    if (rest.len == 8 && ngx_strncmp(rest.data, "/session", 8) == 0) {
        ctx->what = NGX_HTTP_PROVEN_RPC_SESSION;
    } else if (rest.len == 9 && ngx_strncmp(rest.data, "/rpc/http", 9) == 0)
    {
        ctx->what = NGX_HTTP_PROVEN_RPC_HTTP;
    } else if (rest.len == 7 && ngx_strncmp(rest.data, "/rpc/ws", 7) == 0) {
        ctx->what = NGX_HTTP_PROVEN_RPC_WS;
    } else {
        return NGX_DECLINED;
    }
    return NGX_OK;
}


/* The "session" argument: the canonical UUID text of 16 bytes. */
static ngx_int_t
ngx_http_proven_rpc_session_arg(ngx_http_request_t *r, u_char *id)
{
    u_char     *p;
    ngx_int_t   hi, lo;
    ngx_str_t   value;
    ngx_uint_t  i, n;

    if (ngx_http_arg(r, (u_char *) "session", 7, &value) != NGX_OK
        || value.len != 36)
    {
        return NGX_ERROR;
    }

    p = value.data;
    n = 0;
    for (i = 0; i < 36; ) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (p[i] != '-') {
                return NGX_ERROR;
            }
            i++;
            continue;
        }
        hi = ngx_hextoi(&p[i], 1);
        lo = ngx_hextoi(&p[i + 1], 1);
        if (hi == NGX_ERROR || lo == NGX_ERROR) {
            return NGX_ERROR;
        }
        id[n++] = (u_char) (hi << 4 | lo);
        i += 2;
    }
    return NGX_OK;
}


static ngx_table_elt_t *
ngx_http_proven_rpc_header(ngx_http_request_t *r, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {
        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }
            part = part->next;
            h = part->elts;
            i = 0;
        }
        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/* Whether the comma separated header value lists token. */
static ngx_uint_t
ngx_http_proven_rpc_has_token(ngx_table_elt_t *h, const char *token)
{
    size_t   len;
    u_char  *p, *end, *start;

    if (h == NULL) {
        return 0;
    }
    len = ngx_strlen(token);
    p = h->value.data;
    end = p + h->value.len;

    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }
        start = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t') {
            p++;
        }
        if ((size_t) (p - start) == len
            && ngx_strncasecmp(start, (u_char *) token, len) == 0)
        {
            return 1;
        }
    }
    return 0;
}


/* ---- the handler --------------------------------------------------------- */

/* 405 with Allow: method (a static string). */
static ngx_int_t
ngx_http_proven_rpc_not_allowed(ngx_http_request_t *r, const char *method,
    const char *message)
{
    ngx_str_t  allow;

    allow.data = (u_char *) method;
    allow.len = ngx_strlen(method);

    if (ngx_http_proven_add_header(r, "Allow", &allow) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_proven_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                      "method_not_allowed", message, NULL);
}


static ngx_int_t
ngx_http_proven_rpc_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_http_proven_rpc_ctx_t       *ctx;
    ngx_http_proven_rpc_loc_conf_t  *prlcf;

    prlcf = ngx_http_get_module_loc_conf(r, ngx_http_proven_rpc_module);

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_proven_rpc_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ngx_http_set_ctx(r, ctx, ngx_http_proven_rpc_module);

    if (ngx_http_proven_rpc_target(r, ctx) != NGX_OK) {
        return ngx_http_proven_send_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                   "sessions are at [/app/NAME]/session, messages at "
                   "[/app/NAME]/rpc/http and [/app/NAME]/rpc/ws", NULL);
    }

    /* /rpc/http also takes the WebSocket upgrade, as /rpc/ws does */
    if (ctx->what != NGX_HTTP_PROVEN_RPC_SESSION
        && r->method == NGX_HTTP_GET
        && ngx_http_proven_rpc_header(r, "Upgrade") != NULL)
    {
        ctx->what = NGX_HTTP_PROVEN_RPC_WS;
    }

    if (ctx->what == NGX_HTTP_PROVEN_RPC_WS) {
        if (r->method != NGX_HTTP_GET) {
            return ngx_http_proven_rpc_not_allowed(r, "GET",
                       "a WebSocket opens with GET");
        }
        return ngx_http_proven_rpc_ws_start(r, ctx);
    }

    if (r->method != NGX_HTTP_POST) {
        return ngx_http_proven_rpc_not_allowed(r, "POST",
                   ctx->what == NGX_HTTP_PROVEN_RPC_SESSION
                   ? "a session is opened with POST"
                   : "a message is sent with POST (or GET with a "
                     "WebSocket upgrade)");
    }

    if (ctx->what == NGX_HTTP_PROVEN_RPC_HTTP
        && ngx_http_proven_rpc_session_arg(r, ctx->session) != NGX_OK)
    {
        return ngx_http_proven_send_error(r, NGX_HTTP_BAD_REQUEST,
                   "bad_request", "the \"session\" argument must be a "
                   "session id (a UUID)", NULL);
    }

    if (r->headers_in.content_length_n
        > (off_t) (ctx->what == NGX_HTTP_PROVEN_RPC_SESSION
                   ? NGX_HTTP_PROVEN_RPC_SESSION_BODY_MAX
                   : prlcf->max_message))
    {
        return ngx_http_proven_send_error(r,
                   NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "too_large",
                   ctx->what == NGX_HTTP_PROVEN_RPC_SESSION
                   ? "a session request is at most 16384 bytes"
                   : "the message is larger than proven_rpc_max_message",
                   NULL);
    }

    r->request_body_in_single_buf = 1;
    rc = ngx_http_read_client_request_body(r,
             ctx->what == NGX_HTTP_PROVEN_RPC_SESSION
             ? ngx_http_proven_rpc_session_body
             : ngx_http_proven_rpc_http_body);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }
    return NGX_DONE;
}


/* ---- sessions ------------------------------------------------------------ */

/*
 * The parts "nonce" and "public_key" of a multipart/form-data body, as
 * byte strings put into map.  NULL: fine; else what is wrong.
 */
static const char *
ngx_http_proven_rpc_multipart(ngx_http_request_t *r, u_char *body,
    size_t len, cbor_item_t *map)
{
    size_t                     i;
    ngx_str_t                 *type;
    const char                *why;
    proven_multipart_field_t   fields[2];

    fields[0].name = "nonce";
    fields[1].name = "public_key";

    type = &r->headers_in.content_type->value;

    why = proven_multipart_fields(type->data, type->len, body, len, fields,
                                  2);
    if (why != NULL) {
        return why;
    }

    for (i = 0; i < 2; i++) {
        if (!fields[i].found) {
            return "the fields nonce and public_key are needed";
        }

        if (proven_cbor_map_put(map, fields[i].name,
                                cbor_build_bytestring(fields[i].data,
                                                      fields[i].len))
            != PROVEN_OK)
        {
            return "out of memory";
        }
    }

    return NULL;
}


/* nonce and public_key of an application/cbor map body into map. */
static const char *
ngx_http_proven_rpc_cbor_fields(u_char *body, size_t len, cbor_item_t *map)
{
    size_t                    i;
    cbor_item_t              *in, *item;
    struct cbor_load_result   loaded;
    static const char        *names[] = { "nonce", "public_key" };

    in = cbor_load(body, len, &loaded);
    if (in == NULL || loaded.read != len || !cbor_isa_map(in)) {
        if (in != NULL) {
            cbor_decref(&in);
        }
        return "the body is not one CBOR map";
    }
    for (i = 0; i < 2; i++) {
        item = proven_cbor_map_get(in, names[i]);
        if (item == NULL) {
            cbor_decref(&in);
            return "the fields nonce and public_key are needed";
        }
        if (proven_cbor_map_put(map, names[i], cbor_incref(item))
            != PROVEN_OK)
        {
            cbor_decref(&in);
            return "out of memory";
        }
    }
    cbor_decref(&in);
    return NULL;
}


/* The Origin header's value, NUL ended in the request's pool, or NULL. */
static char *
ngx_http_proven_rpc_origin(ngx_http_request_t *r)
{
    u_char           *s;
    ngx_table_elt_t  *h;

    h = ngx_http_proven_rpc_header(r, "Origin");
    if (h == NULL || h->value.len == 0) {
        return NULL;
    }
    s = ngx_pnalloc(r->pool, h->value.len + 1);
    if (s != NULL) {
        ngx_memcpy(s, h->value.data, h->value.len);
        s[h->value.len] = '\0';
    }
    return (char *) s;
}


static void
ngx_http_proven_rpc_session_body(ngx_http_request_t *r)
{
    char                       *origin, *app;
    size_t                      len;
    u_char                     *body;
    ngx_int_t                   too_large, rc;
    ngx_str_t                  *type;
    const char                 *why;
    cbor_item_t                *req;
    ngx_http_proven_rpc_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_rpc_module);

    body = ngx_http_proven_body(r, NGX_HTTP_PROVEN_RPC_SESSION_BODY_MAX,
                                &len, &too_large);
    if (body == NULL) {
        ngx_http_finalize_request(r, too_large
            ? ngx_http_proven_send_error(r,
                  NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "too_large",
                  "a session request is at most 16384 bytes", NULL)
            : NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    origin = ngx_http_proven_rpc_origin(r);
    req = proven_request_new(0, "session.create");
    if (req == NULL) {
        ngx_free(body);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    type = r->headers_in.content_type != NULL
           ? &r->headers_in.content_type->value : NULL;
    if (type != NULL && type->len >= 16
        && ngx_strncasecmp(type->data, (u_char *) "application/cbor", 16)
           == 0)
    {
        why = ngx_http_proven_rpc_cbor_fields(body, len, req);
    } else if (type != NULL && type->len >= 19
               && ngx_strncasecmp(type->data,
                                  (u_char *) "multipart/form-data", 19) == 0)
    {
        why = ngx_http_proven_rpc_multipart(r, body, len, req);
    } else {
        ngx_free(body);
        cbor_decref(&req);
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
            "a session request is multipart/form-data or application/cbor",
            NULL));
        return;
    }
    ngx_free(body);

    if (why != NULL) {
        cbor_decref(&req);
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_BAD_REQUEST, "bad_request", why, NULL));
        return;
    }

    if (ctx->app.len > 0) {
        if (origin == NULL) {
            cbor_decref(&req);
            ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
                NGX_HTTP_BAD_REQUEST, "origin_required", "an application's "
                "session needs the Origin header", NULL));
            return;
        }
        app = (char *) ngx_pnalloc(r->pool, ctx->app.len + 1);
        if (app == NULL
            || proven_cbor_map_put(req, "app", cbor_build_string(
                   (char *) ngx_cpystrn((u_char *) app, ctx->app.data,
                                        ctx->app.len + 1) - ctx->app.len))
               != PROVEN_OK)
        {
            cbor_decref(&req);
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }
    if (origin != NULL
        && proven_cbor_map_put(req, "origin", cbor_build_string(origin))
           != PROVEN_OK)
    {
        cbor_decref(&req);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_http_proven_daemon_call(r, req, ngx_http_proven_rpc_answer,
                                     NULL);
    cbor_decref(&req);
    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    }
}


/* ---- messages over HTTP -------------------------------------------------- */

/* The rpc.call request for message (copied). */
static cbor_item_t *
ngx_http_proven_rpc_call_request(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx, u_char *message, size_t len)
{
    u_char       *app;
    cbor_item_t  *req;

    req = proven_request_new(0, "rpc.call");
    if (req == NULL) {
        return NULL;
    }
    if (proven_cbor_map_put(req, "session", cbor_build_bytestring(
            ctx->session, NGX_HTTP_PROVEN_RPC_ID_LEN)) != PROVEN_OK
        || proven_cbor_map_put(req, "message",
                               cbor_build_bytestring(message, len))
           != PROVEN_OK)
    {
        cbor_decref(&req);
        return NULL;
    }
    if (ctx->app.len > 0) {
        app = ngx_pnalloc(r->pool, ctx->app.len + 1);
        if (app == NULL
            || proven_cbor_map_put(req, "app", cbor_build_string((char *)
                   ngx_cpystrn(app, ctx->app.data, ctx->app.len + 1)
                   - ctx->app.len)) != PROVEN_OK)
        {
            cbor_decref(&req);
            return NULL;
        }
    }
    return req;
}


static void
ngx_http_proven_rpc_http_body(ngx_http_request_t *r)
{
    size_t                           len;
    u_char                          *body;
    ngx_int_t                        too_large, rc;
    ngx_str_t                       *type;
    cbor_item_t                     *req;
    ngx_http_proven_rpc_ctx_t       *ctx;
    ngx_http_proven_rpc_loc_conf_t  *prlcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_rpc_module);
    prlcf = ngx_http_get_module_loc_conf(r, ngx_http_proven_rpc_module);

    type = r->headers_in.content_type != NULL
           ? &r->headers_in.content_type->value : NULL;
    if (type != NULL
        && !(type->len >= 16
             && ngx_strncasecmp(type->data, (u_char *) "application/cbor",
                                16) == 0))
    {
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
            "a message is application/cbor", NULL));
        return;
    }

    body = ngx_http_proven_body(r, prlcf->max_message, &len, &too_large);
    if (body == NULL) {
        ngx_http_finalize_request(r, too_large
            ? ngx_http_proven_send_error(r,
                  NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "too_large",
                  "the message is larger than proven_rpc_max_message", NULL)
            : NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
    if (len == 0) {
        ngx_free(body);
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_BAD_REQUEST, "bad_message", "the body is empty; it "
            "must be one COSE_Sign1 message", NULL));
        return;
    }

    req = ngx_http_proven_rpc_call_request(r, ctx, body, len);
    ngx_free(body);
    if (req == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
    rc = ngx_http_proven_daemon_call_timeout(r, req, prlcf->timeout,
                                             ngx_http_proven_rpc_answer,
                                             NULL);
    cbor_decref(&req);
    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    }
}


/* A refusal from provend, or provend's absence, as a status and JSON. */
static ngx_int_t
ngx_http_proven_rpc_refuse(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res)
{
    if (status == NGX_HTTP_PROVEN_DAEMON_ERROR) {
        return ngx_http_proven_send_error(r,
                   proven_status_of(res->code,
                                    NGX_HTTP_INTERNAL_SERVER_ERROR),
                   res->code, res->message, NULL);
    }
    return ngx_http_proven_send_error(r,
               status == NGX_HTTP_PROVEN_DAEMON_TIMEOUT
               ? NGX_HTTP_GATEWAY_TIME_OUT : NGX_HTTP_BAD_GATEWAY,
               "provend_unavailable", "the node's daemon did not answer",
               NULL);
}


/* The answer of session.create (document) or rpc.call (message). */
static void
ngx_http_proven_rpc_answer(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data)
{
    u_char                     *copy;
    cbor_item_t                *bytes;
    ngx_http_proven_rpc_ctx_t  *ctx;

    (void) data;
    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_rpc_module);

    if (status != NGX_HTTP_PROVEN_DAEMON_OK) {
        ngx_http_finalize_request(r, ngx_http_proven_rpc_refuse(r, status,
                                                                 res));
        return;
    }

    bytes = proven_cbor_map_get(res->result,
                                ctx->what == NGX_HTTP_PROVEN_RPC_SESSION
                                ? "document" : "message");
    if (bytes == NULL || !cbor_isa_bytestring(bytes)
        || !cbor_bytestring_is_definite(bytes))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "proven rpc: provend's answer has no bytes");
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    copy = ngx_pnalloc(r->pool, cbor_bytestring_length(bytes));
    if (copy == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
    ngx_memcpy(copy, cbor_bytestring_handle(bytes),
               cbor_bytestring_length(bytes));

    ngx_http_finalize_request(r, ngx_http_proven_send(r, NGX_HTTP_OK,
                                  &ngx_http_proven_rpc_cbor_type, copy,
                                  cbor_bytestring_length(bytes)));
}


/* ---- WebSocket ----------------------------------------------------------- */

static ngx_int_t
ngx_http_proven_rpc_ws_start(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx)
{
    ngx_int_t         rc;
    ngx_str_t         value;
    ngx_table_elt_t  *key, *version;
    cbor_item_t      *req;

    if (r->http_version != NGX_HTTP_VERSION_11
        || !ngx_http_proven_rpc_has_token(
               ngx_http_proven_rpc_header(r, "Upgrade"), "websocket")
        || !ngx_http_proven_rpc_has_token(
               ngx_http_proven_rpc_header(r, "Connection"), "upgrade"))
    {
        return ngx_http_proven_send_error(r, NGX_HTTP_BAD_REQUEST,
                   "bad_request", "this is a WebSocket endpoint: HTTP/1.1 "
                   "with Upgrade: websocket and Connection: Upgrade", NULL);
    }

    version = ngx_http_proven_rpc_header(r, "Sec-WebSocket-Version");
    if (version == NULL || version->value.len != 2
        || ngx_strncmp(version->value.data, "13", 2) != 0)
    {
        ngx_str_set(&value, "13");
        if (ngx_http_proven_add_header(r, "Sec-WebSocket-Version", &value)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        return ngx_http_proven_send_error(r, 426, "bad_request",
                   "Sec-WebSocket-Version must be 13", NULL);
    }

    key = ngx_http_proven_rpc_header(r, "Sec-WebSocket-Key");
    if (key == NULL || key->value.len != 24) {
        return ngx_http_proven_send_error(r, NGX_HTTP_BAD_REQUEST,
                   "bad_request", "Sec-WebSocket-Key must be 16 bytes in "
                   "base64", NULL);
    }

    if (ngx_http_proven_rpc_session_arg(r, ctx->session) != NGX_OK) {
        return ngx_http_proven_send_error(r, NGX_HTTP_BAD_REQUEST,
                   "bad_request", "the \"session\" argument must be a "
                   "session id (a UUID)", NULL);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    /* an unknown session is told with a status, before the upgrade */
    req = proven_request_new(0, "session.check");
    if (req == NULL
        || proven_cbor_map_put(req, "session", cbor_build_bytestring(
               ctx->session, NGX_HTTP_PROVEN_RPC_ID_LEN)) != PROVEN_OK
        || (ctx->app.len > 0
            && proven_cbor_map_put(req, "app", cbor_build_stringn(
                   (char *) ctx->app.data, ctx->app.len)) != PROVEN_OK))
    {
        if (req != NULL) {
            cbor_decref(&req);
        }
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_proven_daemon_call(r, req, ngx_http_proven_rpc_ws_checked,
                                     NULL);
    cbor_decref(&req);
    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->main->count++;
    return NGX_DONE;
}


/* Room for n more bytes in a growing buffer of at most max bytes. */
static ngx_int_t
ngx_http_proven_rpc_reserve(ngx_http_request_t *r, u_char **buf,
    size_t *cap, size_t len, size_t n, size_t max)
{
    u_char  *grown;
    size_t   want;

    if (len + n <= *cap) {
        return NGX_OK;
    }
    if (len + n > max) {
        return NGX_DECLINED;
    }
    want = ngx_max(*cap * 2, len + n);
    want = ngx_max(want, 4096);
    want = ngx_min(want, max);

    grown = ngx_alloc(want, r->connection->log);
    if (grown == NULL) {
        return NGX_ERROR;
    }
    if (len > 0) {
        ngx_memcpy(grown, *buf, len);
    }
    ngx_free(*buf);
    *buf = grown;
    *cap = want;
    return NGX_OK;
}


/* Appends a frame (unmasked, FIN) to the output. */
static ngx_int_t
ngx_http_proven_rpc_ws_frame(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx, ngx_uint_t opcode, const u_char *data,
    size_t len)
{
    u_char                          *p;

    /* answers are bounded by provend's frames, not by max_message */
    if (ngx_http_proven_rpc_reserve(r, &ctx->out, &ctx->out_cap,
                                    ctx->out_len,
                                    len + PROVEN_WS_HEAD_MAX,
                                    PROVEN_FRAME_MAX
                                    + 4 * PROVEN_WS_HEAD_MAX
                                    + PROVEN_WS_CONTROL_MAX)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = ctx->out + ctx->out_len;
    p += proven_ws_put_head(p, opcode, len);

    if (len > 0) {
        p = ngx_cpymem(p, data, len);
    }
    ctx->out_len = p - ctx->out;
    return NGX_OK;
}


/* A refusal as a text frame of JSON {"error": {code, message}}. */
static ngx_int_t
ngx_http_proven_rpc_ws_refusal(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx, const char *code, const char *message)
{
    u_char     *p, *buf;
    size_t      len;
    ngx_int_t   rc;

    /* both escaped: an answer may come from another node */
    len = 6 * ngx_strlen(code) + 6 * ngx_strlen(message) + 64;
    buf = ngx_alloc(len, r->connection->log);
    if (buf == NULL) {
        return NGX_ERROR;
    }
    p = ngx_cpymem(buf, "{\"error\":{\"code\":\"", 18);
    p = (u_char *) ngx_escape_json(p, (u_char *) code, ngx_strlen(code));
    p = ngx_cpymem(p, "\",\"message\":\"", 13);
    p = (u_char *) ngx_escape_json(p, (u_char *) message,
                                   ngx_strlen(message));
    p = ngx_cpymem(p, "\"}}", 3);
    rc = ngx_http_proven_rpc_ws_frame(r, ctx, PROVEN_WS_TEXT, buf,
                                      p - buf);
    ngx_free(buf);
    return rc;
}


static void
ngx_http_proven_rpc_ws_checked(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data)
{
    u_char                          *p, hash[20];
    ngx_str_t                        accept, digest;
    ngx_sha1_t                       sha1;
    ngx_table_elt_t                 *key;
    ngx_connection_t                *c;
    ngx_pool_cleanup_t              *cln;
    ngx_http_proven_rpc_ctx_t       *ctx;
    ngx_http_proven_rpc_loc_conf_t  *prlcf;

    (void) data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_rpc_module);
    prlcf = ngx_http_get_module_loc_conf(r, ngx_http_proven_rpc_module);

    if (status != NGX_HTTP_PROVEN_DAEMON_OK) {
        ngx_http_finalize_request(r, ngx_http_proven_rpc_refuse(r, status,
                                                                 res));
        return;
    }

    /* Sec-WebSocket-Accept: base64(SHA-1(key GUID)) */
    key = ngx_http_proven_rpc_header(r, "Sec-WebSocket-Key");
    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, key->value.data, key->value.len);
    ngx_sha1_update(&sha1, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    ngx_sha1_final(hash, &sha1);
    digest.data = hash;
    digest.len = sizeof(hash);
    accept.data = ngx_pnalloc(r->pool, ngx_base64_encoded_length(20));
    if (accept.data == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
    ngx_encode_base64(&accept, &digest);

    /* the switch is written by hand: nothing of HTTP follows it */
    if (ngx_http_proven_rpc_reserve(r, &ctx->out, &ctx->out_cap, 0, 256,
                                    256) != NGX_OK)
    {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
    p = ngx_sprintf(ctx->out, "HTTP/1.1 101 Switching Protocols\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Accept: %V\r\n\r\n", &accept);
    ctx->out_len = p - ctx->out;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
    cln->handler = ngx_http_proven_rpc_ws_cleanup;
    cln->data = ctx;

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    r->header_sent = 1;
    r->keepalive = 0;
    r->lingering_close = 0;
    c->log->action = "speaking WebSocket";

    /* frames the client sent right after its request */
    if (r->header_in != NULL && r->header_in->last > r->header_in->pos) {
        if (ngx_http_proven_rpc_reserve(r, &ctx->in, &ctx->in_cap, 0,
                r->header_in->last - r->header_in->pos,
                prlcf->max_message + PROVEN_WS_HEAD_MAX)
            != NGX_OK)
        {
            ngx_http_finalize_request(r, NGX_HTTP_CLOSE);
            return;
        }
        ctx->in_len = r->header_in->last - r->header_in->pos;
        ngx_memcpy(ctx->in, r->header_in->pos, ctx->in_len);
        r->header_in->pos = r->header_in->last;
    }

    r->read_event_handler = ngx_http_proven_rpc_ws_read;
    r->write_event_handler = ngx_http_proven_rpc_ws_write;

    ngx_http_proven_rpc_ws_write(r);
}


static void
ngx_http_proven_rpc_ws_cleanup(void *data)
{
    ngx_http_proven_rpc_ctx_t  *ctx = data;

    ngx_free(ctx->in);
    ngx_free(ctx->msg);
    ngx_free(ctx->out);
    ctx->in = NULL;
    ctx->msg = NULL;
    ctx->out = NULL;
}


/* Ends the WebSocket and the request, once. */
static void
ngx_http_proven_rpc_ws_end(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx)
{
    if (ctx->done) {
        return;
    }
    ctx->done = 1;
    ngx_http_finalize_request(r, NGX_HTTP_CLOSE);
}


/* Writes a close frame with code, then ends once it is out. */
static void
ngx_http_proven_rpc_ws_close(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx, ngx_uint_t code, const char *reason)
{
    u_char  payload[PROVEN_WS_CONTROL_MAX];
    size_t  len;

    if (ctx->closing) {
        return;
    }
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "proven rpc: closing the WebSocket: %ui %s", code, reason);

    payload[0] = (u_char) (code >> 8);
    payload[1] = (u_char) code;
    len = ngx_min(ngx_strlen(reason), sizeof(payload) - 2);
    ngx_memcpy(payload + 2, reason, len);

    ctx->closing = 1;
    if (ngx_http_proven_rpc_ws_frame(r, ctx, PROVEN_WS_CLOSE,
                                     payload, len + 2) != NGX_OK)
    {
        ngx_http_proven_rpc_ws_end(r, ctx);
        return;
    }
    ngx_http_proven_rpc_ws_write(r);
}


/* Starts rpc.call for the message assembled in ctx->msg. */
static void
ngx_http_proven_rpc_ws_call(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx)
{
    ngx_int_t                        rc;
    cbor_item_t                     *req;
    ngx_http_proven_rpc_loc_conf_t  *prlcf;

    prlcf = ngx_http_get_module_loc_conf(r, ngx_http_proven_rpc_module);

    req = ngx_http_proven_rpc_call_request(r, ctx, ctx->msg, ctx->msg_len);
    ctx->msg_len = 0;
    if (req == NULL) {
        ngx_http_proven_rpc_ws_close(r, ctx, PROVEN_WS_INTERNAL,
                                     "out of memory");
        return;
    }

    /* quiet is counted from the answer, not from the message */
    if (r->connection->read->timer_set) {
        ngx_del_timer(r->connection->read);
    }
    rc = ngx_http_proven_daemon_call_timeout(r, req, prlcf->timeout,
                                             ngx_http_proven_rpc_ws_answer,
                                             NULL);
    cbor_decref(&req);
    if (rc != NGX_OK) {
        ngx_http_proven_rpc_ws_close(r, ctx, PROVEN_WS_INTERNAL,
                                     "provend cannot be called");
        return;
    }
    ctx->calling = 1;
}


static void
ngx_http_proven_rpc_ws_answer(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data)
{
    cbor_item_t                *bytes;
    ngx_http_proven_rpc_ctx_t  *ctx;

    (void) data;
    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_rpc_module);
    ctx->calling = 0;

    if (ctx->closing) {
        ngx_http_proven_rpc_ws_write(r);
        return;
    }

    if (status == NGX_HTTP_PROVEN_DAEMON_OK) {
        bytes = proven_cbor_map_get(res->result, "message");
        if (bytes == NULL || !cbor_isa_bytestring(bytes)
            || !cbor_bytestring_is_definite(bytes)
            || ngx_http_proven_rpc_ws_frame(r, ctx,
                   PROVEN_WS_BINARY, cbor_bytestring_handle(bytes),
                   cbor_bytestring_length(bytes)) != NGX_OK)
        {
            ngx_http_proven_rpc_ws_close(r, ctx, PROVEN_WS_INTERNAL,
                                         "no answer to send");
            return;
        }

    } else if (status == NGX_HTTP_PROVEN_DAEMON_ERROR) {
        if (ngx_http_proven_rpc_ws_refusal(r, ctx, res->code, res->message)
            != NGX_OK)
        {
            ngx_http_proven_rpc_ws_end(r, ctx);
            return;
        }
        if (ngx_strcmp(res->code, "unknown_session") == 0) {
            ngx_http_proven_rpc_ws_close(r, ctx, PROVEN_WS_POLICY,
                                         "the session is gone");
            return;
        }

    } else {
        ngx_http_proven_rpc_ws_close(r, ctx, PROVEN_WS_INTERNAL,
                                     "the node's daemon did not answer");
        return;
    }

    ngx_http_proven_rpc_ws_write(r);
}


/*
 * Parses frames in ctx->in while nothing else is under way: answers
 * control frames, assembles a message and hands it to provend.
 * NGX_AGAIN: more bytes are needed.  NGX_OK: something is under way.
 */
static ngx_int_t
ngx_http_proven_rpc_ws_parse(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx)
{
    u_char                          *payload;
    size_t                           head, len;
    ngx_int_t                        rc;
    ngx_uint_t                       fin, opcode;
    proven_ws_frame_t                f;
    proven_ws_message_t              msg;
    ngx_http_proven_rpc_loc_conf_t  *prlcf;

    prlcf = ngx_http_get_module_loc_conf(r, ngx_http_proven_rpc_module);

    while (!ctx->calling && !ctx->closing && ctx->out_len == 0) {

        msg.open = ctx->msg_open;
        msg.len = ctx->msg_len;
        msg.max = prlcf->max_message;

        rc = proven_ws_parse_head(ctx->in, ctx->in_len, &msg, &f);

        if (rc == PROVEN_AGAIN) {
            return NGX_AGAIN;
        }

        if (rc != PROVEN_OK) {
            ngx_http_proven_rpc_ws_close(r, ctx, f.close_code, f.reason);
            return NGX_OK;
        }

        /* bounded: a control frame, or a data frame within max_message */
        fin = f.fin;
        opcode = f.opcode;
        head = f.head;
        len = (size_t) f.len;

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "proven rpc: ws frame opcode:%ui fin:%ui len:%uz",
                       opcode, fin, len);

        if (ctx->in_len < head + len) {
            /* the whole frame must fit: it is bounded above */
            if (ngx_http_proven_rpc_reserve(r, &ctx->in, &ctx->in_cap,
                    ctx->in_len, head + len - ctx->in_len,
                    prlcf->max_message + PROVEN_WS_HEAD_MAX)
                != NGX_OK)
            {
                ngx_http_proven_rpc_ws_close(r, ctx, PROVEN_WS_INTERNAL,
                                             "out of memory");
                return NGX_OK;
            }

            return NGX_AGAIN;
        }

        payload = ctx->in + head;
        proven_ws_unmask(payload, len, ctx->in + f.mask_at);

        switch (opcode) {

        case PROVEN_WS_PING:
            if (ngx_http_proven_rpc_ws_frame(r, ctx, PROVEN_WS_PONG,
                                             payload, len) != NGX_OK)
            {
                ngx_http_proven_rpc_ws_end(r, ctx);
                return NGX_OK;
            }
            break;

        case PROVEN_WS_PONG:
            break;

        case PROVEN_WS_CLOSE:
            ctx->peer_closed = 1;
            ngx_http_proven_rpc_ws_close(r, ctx, PROVEN_WS_NORMAL,
                                         "closed by the client");
            return NGX_OK;

        default:                                  /* BINARY, CONT */
            if (ngx_http_proven_rpc_reserve(r, &ctx->msg, &ctx->msg_cap,
                                            ctx->msg_len, len,
                                            prlcf->max_message)
                != NGX_OK)
            {
                ngx_http_proven_rpc_ws_close(r, ctx,
                                             PROVEN_WS_INTERNAL,
                                             "out of memory");
                return NGX_OK;
            }
            if (len > 0) {
                ngx_memcpy(ctx->msg + ctx->msg_len, payload, len);
                ctx->msg_len += len;
            }
            ctx->msg_open = !fin;
        }

        /* the frame is consumed */
        ctx->in_len -= head + len;
        if (ctx->in_len > 0) {
            ngx_memmove(ctx->in, ctx->in + head + len, ctx->in_len);
        }

        if (opcode <= PROVEN_WS_BINARY && fin) {
            if (ctx->msg_len == 0) {
                if (ngx_http_proven_rpc_ws_refusal(r, ctx, "bad_message",
                        "an empty message") != NGX_OK)
                {
                    ngx_http_proven_rpc_ws_end(r, ctx);
                    return NGX_OK;
                }
                continue;
            }
            ngx_http_proven_rpc_ws_call(r, ctx);
            return NGX_OK;
        }
    }

    return NGX_OK;
}


/* After the close frame: discard input until EOF or the close wait. */
static void
ngx_http_proven_rpc_ws_drain(ngx_http_request_t *r,
    ngx_http_proven_rpc_ctx_t *ctx)
{
    u_char             buf[4096];
    ssize_t            n;
    ngx_connection_t  *c;

    c = r->connection;
    if (c->read->timedout) {
        ngx_http_proven_rpc_ws_end(r, ctx);
        return;
    }
    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));
        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
                ngx_http_proven_rpc_ws_end(r, ctx);
            }
            return;
        }
        if (n == 0 || n == NGX_ERROR) {
            ngx_http_proven_rpc_ws_end(r, ctx);
            return;
        }
    }
}


static void
ngx_http_proven_rpc_ws_read(ngx_http_request_t *r)
{
    ssize_t                          n;
    ngx_int_t                        rc;
    ngx_event_t                     *rev;
    ngx_connection_t                *c;
    ngx_http_proven_rpc_ctx_t       *ctx;
    ngx_http_proven_rpc_loc_conf_t  *prlcf;

    c = r->connection;
    rev = c->read;
    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_rpc_module);
    prlcf = ngx_http_get_module_loc_conf(r, ngx_http_proven_rpc_module);

    if (ctx->done) {
        return;
    }

    if (ctx->draining) {
        ngx_http_proven_rpc_ws_drain(r, ctx);
        return;
    }

    if (rev->timedout) {
        rev->timedout = 0;
        if (ctx->closing) {
            ngx_http_proven_rpc_ws_end(r, ctx);
        } else {
            ngx_http_proven_rpc_ws_close(r, ctx,
                                         PROVEN_WS_GOING_AWAY,
                                         "idle for too long");
        }
        return;
    }

    for ( ;; ) {
        rc = ngx_http_proven_rpc_ws_parse(r, ctx);
        if (ctx->done) {
            return;
        }
        if (rc == NGX_OK) {
            /* an answer, a call or a close is under way; reads wait: with
             * edge-triggered events they resume by hand (ws_write) */
            if (ctx->out_len > 0) {
                ngx_http_proven_rpc_ws_write(r);
            }
            return;
        }

        if (ngx_http_proven_rpc_reserve(r, &ctx->in, &ctx->in_cap,
                ctx->in_len, 1,
                prlcf->max_message + PROVEN_WS_HEAD_MAX)
            != NGX_OK)
        {
            ngx_http_proven_rpc_ws_close(r, ctx, PROVEN_WS_INTERNAL,
                                         "out of memory");
            return;
        }

        n = c->recv(c, ctx->in + ctx->in_len, ctx->in_cap - ctx->in_len);
        if (n == NGX_AGAIN) {
            break;
        }
        if (n == 0 || n == NGX_ERROR) {
            /* the client went away without a close frame */
            ngx_http_proven_rpc_ws_end(r, ctx);
            return;
        }
        ctx->in_len += n;
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_proven_rpc_ws_end(r, ctx);
        return;
    }
    ngx_add_timer(rev, prlcf->ws_idle);
}


static void
ngx_http_proven_rpc_ws_write(ngx_http_request_t *r)
{
    ssize_t                     n;
    ngx_event_t                *wev;
    ngx_connection_t           *c;
    ngx_http_core_loc_conf_t   *clcf;
    ngx_http_proven_rpc_ctx_t  *ctx;

    c = r->connection;
    wev = c->write;
    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_rpc_module);

    if (ctx->done) {
        return;
    }
    if (wev->timedout) {
        ngx_http_proven_rpc_ws_end(r, ctx);
        return;
    }

    while (ctx->out_pos < ctx->out_len) {
        n = c->send(c, ctx->out + ctx->out_pos, ctx->out_len - ctx->out_pos);
        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_proven_rpc_ws_end(r, ctx);
                return;
            }
            clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
            ngx_add_timer(wev, ctx->closing ? NGX_HTTP_PROVEN_RPC_CLOSE_WAIT
                                            : clcf->send_timeout);
            return;
        }
        if (n == NGX_ERROR) {
            ngx_http_proven_rpc_ws_end(r, ctx);
            return;
        }
        ctx->out_pos += n;
    }

    ctx->out_pos = 0;
    ctx->out_len = 0;
    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    if (ctx->closing) {
        if (!ctx->calling && ctx->peer_closed) {
            /* the answer to the client's close: nothing more comes */
            ngx_http_proven_rpc_ws_end(r, ctx);

        } else if (!ctx->calling && !ctx->draining) {
            /* the close frame is out: read what the client still sends
             * until it closes too, so that closing does not reset the
             * connection under our close frame */
            ctx->draining = 1;
            ngx_add_timer(c->read, NGX_HTTP_PROVEN_RPC_CLOSE_WAIT);
            ngx_http_proven_rpc_ws_drain(r, ctx);
        }
        return;
    }

    /* written: read on (bytes may wait in ctx->in or in the kernel,
     * where an edge-triggered event will not tell again); posted rather
     * than called, so a stream of pings does not nest calls */
    if (!ctx->calling) {
        ngx_post_event(c->read, &ngx_posted_events);
    }
}


/* ---- configuration ------------------------------------------------------- */

static void *
ngx_http_proven_rpc_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_proven_rpc_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_proven_rpc_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }
    conf->enable = NGX_CONF_UNSET;
    conf->max_message = NGX_CONF_UNSET_SIZE;
    conf->ws_idle = NGX_CONF_UNSET_MSEC;
    conf->timeout = NGX_CONF_UNSET_MSEC;
    return conf;
}


static char *
ngx_http_proven_rpc_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_proven_rpc_loc_conf_t  *prev = parent;
    ngx_http_proven_rpc_loc_conf_t  *conf = child;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_size_value(conf->max_message, prev->max_message,
                              1024 * 1024);
    ngx_conf_merge_msec_value(conf->ws_idle, prev->ws_idle, 300000);
    /* past any handler's own limit (300 s), so provend answers first */
    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 330000);

    if (conf->max_message == 0 || conf->max_message > 8 * 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "proven rpc: proven_rpc_max_message must be "
                           "1..8m");
        return NGX_CONF_ERROR;
    }
    if (conf->enable && !ngx_http_proven_daemon_configured(cf)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "proven rpc: proven_rpc needs proven_daemon at "
                           "http level");
        return NGX_CONF_ERROR;
    }
    return NGX_CONF_OK;
}


static char *
ngx_http_proven_rpc(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_proven_rpc_loc_conf_t  *prlcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (prlcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }
    prlcf->enable = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_proven_rpc_handler;
    return NGX_CONF_OK;
}
