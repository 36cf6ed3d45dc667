/*
 * ngx_http_proven_app_module: HTTP triggers of deployed applications.
 *
 *     proven_app_state /path/to/DATA/run/state;     (http)
 *
 *     location /app/ { proven_app; }         /app/NAME/<path> -> NAME
 *     location /     { proven_app hello; }   every path -> app hello
 *
 *     proven_app_max_body 1m;                larger bodies: 413
 *     proven_app_timeout 30s;                no answer by then: 504
 *
 * Which apps exist, their routes and their runtime workers' sockets come
 * from the state page provend publishes (lib/proven.h), mapped read-only
 * and re-read only when its sequence changes: no call per request to
 * learn them.  A request for an unknown app or route is answered 404 here;
 * a known one goes to one of the app's workers (the one with the fewest
 * calls under way from this nginx worker) as an "app.http" frame over a
 * kept connection (core's peers), and the frame that comes back is the
 * response.  An app with no worker serving (idle, or restarting) is woken
 * with an "app.wake" call to provend, answered once a worker is ready.
 * GET <app>/audit is the app's audit log as JSON, from provend.
 *
 * Errors are JSON {"error": {"code", "message"}}: app_not_found and
 * route_not_found 404, method_not_allowed 405, body_too_large 413,
 * handler_error 500 (with "error_id"), worker_unavailable 502,
 * timeout 504, busy 503.  Log lines start with "proven app: ".
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <fcntl.h>
#include <sys/mman.h>

#include <jansson.h>

#include "ngx_http_proven_core.h"


#define NGX_HTTP_PROVEN_APP_HEADERS_MAX   100
#define NGX_HTTP_PROVEN_APP_NAME_MAX      64
#define NGX_HTTP_PROVEN_APP_WORKERS_MAX   16
#define NGX_HTTP_PROVEN_APP_SOCKET_MAX    107
#define NGX_HTTP_PROVEN_APP_CHUNK_MAX     (1024 * 1024)   /* as the runtime */
#define NGX_HTTP_PROVEN_APP_CHUNK_MIN     (64 * 1024)     /* buffer size */


typedef struct {
    ngx_str_t                  method;
    ngx_array_t                segments;       /* of ngx_str_t; ":x" params */
} ngx_http_proven_app_route_t;


typedef struct {
    ngx_str_t                  name;
    ngx_array_t                sockets;        /* ngx_str_t; may be empty */
    ngx_array_t                routes;         /* ngx_http_proven_app_route_t */
} ngx_http_proven_app_entry_t;


typedef struct {
    ngx_str_t                  state_path;

    /* per worker */
    u_char                    *page;           /* mapped, or NULL */
    uint32_t                   seq;            /* of the parsed table */
    ngx_uint_t                 parsed;
    ngx_pool_t                *pool;           /* the table's */
    ngx_array_t               *apps;           /* ngx_http_proven_app_entry_t */
} ngx_http_proven_app_main_conf_t;


typedef struct {
    ngx_flag_t                 enable;
    ngx_str_t                  name;           /* empty: from the URI */
    ngx_http_complex_value_t  *name_cv;        /* or from variables */
    size_t                     max_body;
    ngx_msec_t                 timeout;
    ngx_flag_t                 shared_origin;  /* apps share this origin */
} ngx_http_proven_app_loc_conf_t;


typedef struct {
    ngx_str_t                  app;
    ngx_str_t                  path;
    ngx_str_t                 *sockets;        /* of the app when routed */
    ngx_uint_t                 nsockets;
    u_char                    *frame;          /* pairs, while a wake runs */
    size_t                     frame_len;
    ngx_uint_t                 frame_pairs;
    ngx_str_t                  worker;         /* the socket that answered */

    /* a streamed body: pulled chunk by chunk from the same worker */
    uint64_t                   stream;
    ngx_uint_t                 stream_open;    /* the worker may hold it */
    u_char                    *chunk;          /* one buffer, reused */
    size_t                     chunk_size;
    ngx_buf_t                  chunk_buf;
} ngx_http_proven_app_ctx_t;


static ngx_int_t ngx_http_proven_app_handler(ngx_http_request_t *r);
static void ngx_http_proven_app_body_ready(ngx_http_request_t *r);
static void ngx_http_proven_app_free_frame(void *data);
static ngx_int_t ngx_http_proven_app_copy_text(ngx_pool_t *pool,
    cbor_item_t *item, ngx_str_t *out, size_t max);
static ngx_str_t *ngx_http_proven_app_pick(ngx_http_request_t *r,
    ngx_http_proven_app_ctx_t *ctx);
static void ngx_http_proven_app_send_frame(ngx_http_request_t *r,
    ngx_http_proven_app_ctx_t *ctx, ngx_str_t *socket);
static void ngx_http_proven_app_wake(ngx_http_request_t *r,
    ngx_http_proven_app_ctx_t *ctx);
static void ngx_http_proven_app_woken(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data);
static void ngx_http_proven_app_stream_start(ngx_http_request_t *r,
    ngx_http_proven_app_ctx_t *ctx, ngx_uint_t status, ngx_str_t *type);
static void ngx_http_proven_app_pull(ngx_http_request_t *r,
    ngx_http_proven_app_ctx_t *ctx);
static void ngx_http_proven_app_stream_cleanup(void *data);
static void ngx_http_proven_app_chunk(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data);
static void ngx_http_proven_app_stream_write(ngx_http_request_t *r);
static void ngx_http_proven_app_answer(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data);
static ngx_int_t ngx_http_proven_app_audit(ngx_http_request_t *r,
    ngx_str_t *app);
static void ngx_http_proven_app_audit_answer(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data);
static ngx_http_proven_app_entry_t *ngx_http_proven_app_find(
    ngx_http_request_t *r, ngx_str_t *name);
static ngx_int_t ngx_http_proven_app_refresh(
    ngx_http_proven_app_main_conf_t *pamcf, ngx_log_t *log);

static void *ngx_http_proven_app_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_proven_app_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_proven_app_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_proven_app(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void ngx_http_proven_app_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_proven_app_commands[] = {

    { ngx_string("proven_app"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_proven_app,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("proven_app_state"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_proven_app_main_conf_t, state_path),
      NULL },

    { ngx_string("proven_app_max_body"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_proven_app_loc_conf_t, max_body),
      NULL },

    { ngx_string("proven_app_shared_origin"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_proven_app_loc_conf_t, shared_origin),
      NULL },

    { ngx_string("proven_app_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_proven_app_loc_conf_t, timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_proven_app_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_proven_app_create_main_conf,  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_proven_app_create_loc_conf,   /* create location configuration */
    ngx_http_proven_app_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_proven_app_module = {
    NGX_MODULE_V1,
    &ngx_http_proven_app_module_ctx,       /* module context */
    ngx_http_proven_app_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_proven_app_exit_process,      /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_proven_app_json_type =
    ngx_string("application/json");


/* ---- the request --------------------------------------------------------- */

/*
 * Splits the URI into the app's name and the path the app sees: after the
 * location's prefix, "NAME/rest" for proven_app; everything for
 * proven_app NAME.
 */
/* [a-z0-9_-], 1..64 bytes, not starting with _ or -. */
static ngx_uint_t
ngx_http_proven_app_name_ok(ngx_str_t *name)
{
    ngx_uint_t  i;

    if (name->len == 0 || name->len > NGX_HTTP_PROVEN_APP_NAME_MAX
        || name->data[0] == '_' || name->data[0] == '-')
    {
        return 0;
    }
    for (i = 0; i < name->len; i++) {
        if (!((name->data[i] >= 'a' && name->data[i] <= 'z')
              || (name->data[i] >= '0' && name->data[i] <= '9')
              || name->data[i] == '_' || name->data[i] == '-'))
        {
            return 0;
        }
    }
    return 1;
}


static ngx_int_t
ngx_http_proven_app_target(ngx_http_request_t *r,
    ngx_http_proven_app_loc_conf_t *palcf, ngx_http_proven_app_ctx_t *ctx)
{
    u_char                    *p, *end, *slash;
    size_t                     prefix;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    prefix = 0;
    if (
#if (NGX_PCRE)
        clcf->regex == NULL &&
#endif
        clcf->name.len <= r->uri.len
        && ngx_strncmp(r->uri.data, clcf->name.data, clcf->name.len) == 0)
    {
        prefix = clcf->name.len;
        if (prefix > 0 && clcf->name.data[prefix - 1] == '/') {
            prefix--;                   /* keep the slash in the path */
        }
    }

    p = r->uri.data + prefix;
    end = r->uri.data + r->uri.len;

    if (palcf->name_cv != NULL) {
        /* "proven_app $app": a name from the Host (NAME.<domain>) */
        if (ngx_http_complex_value(r, palcf->name_cv, &ctx->app) != NGX_OK
            || !ngx_http_proven_app_name_ok(&ctx->app))
        {
            return NGX_DECLINED;
        }
    } else if (palcf->name.len) {
        ctx->app = palcf->name;
    }
    if (ctx->app.len) {
        ctx->path.data = p;
        ctx->path.len = end - p;
        if (ctx->path.len == 0) {
            ngx_str_set(&ctx->path, "/");
        }
        return NGX_OK;
    }

    if (p < end && *p == '/') {
        p++;
    }
    slash = ngx_strlchr(p, end, '/');
    ctx->app.data = p;
    ctx->app.len = (slash ? slash : end) - p;
    if (slash) {
        ctx->path.data = slash;
        ctx->path.len = end - slash;
    } else {
        ngx_str_set(&ctx->path, "/");
    }

    return ctx->app.len > 0 && ctx->app.len <= NGX_HTTP_PROVEN_APP_NAME_MAX
           ? NGX_OK : NGX_DECLINED;
}


/* Whether route takes method and path: 1 yes, 0 no, -1 path only. */
static ngx_int_t
ngx_http_proven_app_route_match(ngx_http_proven_app_route_t *route,
    ngx_str_t *method, ngx_str_t *path, ngx_uint_t *literals)
{
    u_char      *p, *end, *next;
    ngx_str_t   *seg;
    ngx_uint_t   i, n;

    seg = route->segments.elts;
    n = route->segments.nelts;
    p = path->data + 1;
    end = path->data + path->len;
    if (end > p && end[-1] == '/') {
        end--;                           /* "/a/" is "/a" */
    }

    *literals = 0;
    for (i = 0; i < n; i++) {
        if (p > end) {
            return 0;
        }
        next = ngx_strlchr(p, end, '/');
        if (next == NULL) {
            next = end;
        }
        if (seg[i].len > 0 && seg[i].data[0] == ':') {
            if (next == p) {
                return 0;
            }
        } else {
            if ((size_t) (next - p) != seg[i].len
                || ngx_strncmp(p, seg[i].data, seg[i].len) != 0)
            {
                return 0;
            }
            (*literals)++;
        }
        p = next + 1;
    }
    if (n == 0 ? p < end : p <= end) {
        return 0;                        /* more segments than the route */
    }

    if (route->method.len == method->len
        && ngx_strncmp(route->method.data, method->data, method->len) == 0)
    {
        return 1;
    }
    if (method->len == 4 && ngx_strncmp(method->data, "HEAD", 4) == 0
        && route->method.len == 3
        && ngx_strncmp(route->method.data, "GET", 3) == 0)
    {
        return 1;
    }
    return -1;
}


/* NGX_OK when a route takes the request, else the error is sent. */
static ngx_int_t
ngx_http_proven_app_route(ngx_http_request_t *r,
    ngx_http_proven_app_entry_t *app, ngx_str_t *path, ngx_int_t *rc)
{
    u_char                       *p;
    ngx_int_t                     m;
    ngx_uint_t                    i, literals, found;
    ngx_str_t                     allow;
    ngx_http_proven_app_route_t  *routes;
    u_char                        methods[128];

    routes = app->routes.elts;
    found = 0;
    p = methods;

    for (i = 0; i < app->routes.nelts; i++) {
        m = ngx_http_proven_app_route_match(&routes[i], &r->method_name,
                                            path, &literals);
        if (m == 1) {
            return NGX_OK;
        }
        if (m == -1 && (size_t) (methods + sizeof(methods) - p)
                       > routes[i].method.len + 2)
        {
            if (found++) {
                *p++ = ',';
                *p++ = ' ';
            }
            p = ngx_cpymem(p, routes[i].method.data, routes[i].method.len);
        }
    }

    if (found) {
        allow.len = p - methods;
        allow.data = ngx_pnalloc(r->pool, allow.len);
        if (allow.data == NULL
            || ngx_http_proven_add_header(r, "Allow", &allow) != NGX_OK)
        {
            *rc = NGX_ERROR;
            return NGX_DONE;
        }
        ngx_memcpy(allow.data, methods, allow.len);
        *rc = ngx_http_proven_send_error(r, NGX_HTTP_NOT_ALLOWED,
                  "method_not_allowed", "the route does not take this "
                  "method", NULL);
        return NGX_DONE;
    }

    *rc = ngx_http_proven_send_error(r, NGX_HTTP_NOT_FOUND,
              "route_not_found", "the application has no route for this "
              "path", NULL);
    return NGX_DONE;
}


static ngx_int_t
ngx_http_proven_app_handler(ngx_http_request_t *r)
{
    u_char                          *name;
    ngx_int_t                        rc;
    ngx_str_t                       *socket;
    ngx_uint_t                       i;
    ngx_http_proven_app_ctx_t       *ctx;
    ngx_http_proven_app_entry_t     *app;
    ngx_http_proven_app_loc_conf_t  *palcf;

    palcf = ngx_http_get_module_loc_conf(r, ngx_http_proven_app_module);

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_proven_app_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ngx_http_set_ctx(r, ctx, ngx_http_proven_app_module);

    if (ngx_http_proven_app_target(r, palcf, ctx) != NGX_OK) {
        return ngx_http_proven_send_error(r, NGX_HTTP_NOT_FOUND,
                   "app_not_found", "the path names no application", NULL);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "proven app: \"%V\" route \"%V\"", &ctx->app,
                   &ctx->path);

    /* the public audit log: read from provend, not from the app */
    if (ctx->path.len == 6 && ngx_strncmp(ctx->path.data, "/audit", 6) == 0
        && (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)))
    {
        return ngx_http_proven_app_audit(r, &ctx->app);
    }

    app = ngx_http_proven_app_find(r, &ctx->app);
    if (app == NULL) {
        name = ngx_pnalloc(r->pool, ctx->app.len + 64);
        if (name == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        ngx_sprintf(name, "no application \"%V\" is deployed here%Z",
                    &ctx->app);
        return ngx_http_proven_send_error(r, NGX_HTTP_NOT_FOUND,
                   "app_not_found", (char *) name, NULL);
    }

    if (ngx_http_proven_app_route(r, app, &ctx->path, &rc) != NGX_OK) {
        return rc;
    }

    /* the table may be replaced before the body is in: keep the sockets */
    ctx->nsockets = app->sockets.nelts;
    if (ctx->nsockets > 0) {
        ctx->sockets = ngx_palloc(r->pool, ctx->nsockets * sizeof(ngx_str_t));
        if (ctx->sockets == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        for (i = 0; i < ctx->nsockets; i++) {
            socket = &((ngx_str_t *) app->sockets.elts)[i];
            ctx->sockets[i].data = ngx_pstrdup(r->pool, socket);
            if (ctx->sockets[i].data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
            ctx->sockets[i].len = socket->len;
        }
    }

    if (r->headers_in.content_length_n > (off_t) palcf->max_body) {
        return ngx_http_proven_send_error(r,
                   NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "body_too_large",
                   "the request body is larger than proven_app_max_body",
                   NULL);
    }

    r->request_body_in_single_buf = 1;
    rc = ngx_http_read_client_request_body(r, ngx_http_proven_app_body_ready);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }
    return NGX_DONE;
}


/*
 * The app.http frame's pairs, written straight into one buffer (no libcbor
 * tree): "op", "method", "path", "query", "headers" ([[name, value]], the
 * first hundred), "body" when there is one.
 */
static void
ngx_http_proven_app_body_ready(ngx_http_request_t *r)
{
    u_char                          *body, *pairs, *p;
    size_t                           len, size;
    ngx_int_t                        too_large;
    ngx_uint_t                       i, n, npairs, written;
    ngx_list_part_t                 *part;
    ngx_table_elt_t                 *h;
    ngx_pool_cleanup_t              *cln;
    ngx_http_proven_app_ctx_t       *ctx;
    ngx_http_proven_app_loc_conf_t  *palcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_app_module);
    palcf = ngx_http_get_module_loc_conf(r, ngx_http_proven_app_module);

    body = ngx_http_proven_body(r, palcf->max_body, &len, &too_large);
    if (body == NULL) {
        ngx_http_finalize_request(r, too_large
            ? ngx_http_proven_send_error(r,
                  NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "body_too_large",
                  "the request body is larger than proven_app_max_body",
                  NULL)
            : NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* an upper bound: every head at most 9 bytes */
    size = 5 * 9 + 64 + r->method_name.len + ctx->path.len + r->args.len
           + 9 + len;
    n = 0;
    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;
        for (i = 0; i < part->nelts
                    && n < NGX_HTTP_PROVEN_APP_HEADERS_MAX; i++, n++)
        {
            size += 1 + 18 + h[i].key.len + h[i].value.len;
        }
    }

    pairs = ngx_alloc(size, r->connection->log);
    if (pairs == NULL) {
        ngx_free(body);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = proven_cbor_put_string(pairs, PROVEN_CBOR_TEXT, "op", 2);
    p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, "app.http", 8);
    p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, "method", 6);
    p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, r->method_name.data,
                               r->method_name.len);
    p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, "path", 4);
    p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, ctx->path.data,
                               ctx->path.len);
    p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, "query", 5);
    p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, r->args.data,
                               r->args.len);
    p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, "headers", 7);
    p = proven_cbor_put_head(p, PROVEN_CBOR_ARRAY, n);
    npairs = 5;

    written = 0;
    for (part = &r->headers_in.headers.part; part && written < n;
         part = part->next)
    {
        h = part->elts;
        for (i = 0; i < part->nelts && written < n; i++, written++) {
            p = proven_cbor_put_head(p, PROVEN_CBOR_ARRAY, 2);
            p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, h[i].key.data,
                                       h[i].key.len);
            p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, h[i].value.data,
                                       h[i].value.len);
        }
    }

    if (len > 0) {
        p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, "body", 4);
        p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, body, len);
        npairs++;
    }
    ngx_free(body);

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_free(pairs);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
    cln->handler = ngx_http_proven_app_free_frame;
    cln->data = ctx;
    ctx->frame = pairs;
    ctx->frame_len = p - pairs;
    ctx->frame_pairs = npairs;

    /*
     * The reference reading the body took is the answer's (or the wake's):
     * its handler finalizes the request.
     */
    if (ctx->nsockets == 0) {
        ngx_http_proven_app_wake(r, ctx);
        return;
    }
    ngx_http_proven_app_send_frame(r, ctx, ngx_http_proven_app_pick(r, ctx));
}


static void
ngx_http_proven_app_free_frame(void *data)
{
    ngx_http_proven_app_ctx_t  *ctx = data;

    if (ctx->frame != NULL) {
        ngx_free(ctx->frame);
        ctx->frame = NULL;
    }
}


/*
 * The worker with the fewest calls under way from this nginx worker; ties
 * go round, so a pool shares even a light load.
 */
static ngx_str_t *
ngx_http_proven_app_pick(ngx_http_request_t *r,
    ngx_http_proven_app_ctx_t *ctx)
{
    ngx_uint_t                 i, k, load, best_load;
    ngx_str_t                 *best;
    static ngx_uint_t          turn;

    if (ctx->nsockets == 1) {
        return &ctx->sockets[0];
    }

    turn++;
    best = NULL;
    best_load = 0;
    for (i = 0; i < ctx->nsockets; i++) {
        k = (turn + i) % ctx->nsockets;
        load = ngx_http_proven_peer_pending(r, ctx->sockets[k].data,
                                            ctx->sockets[k].len);
        if (best == NULL || load < best_load) {
            best = &ctx->sockets[k];
            best_load = load;
        }
    }
    return best;
}


static void
ngx_http_proven_app_send_frame(ngx_http_request_t *r,
    ngx_http_proven_app_ctx_t *ctx, ngx_str_t *socket)
{
    ngx_int_t                        rc;
    ngx_http_proven_peer_t          *peer;
    ngx_http_proven_app_loc_conf_t  *palcf;

    palcf = ngx_http_get_module_loc_conf(r, ngx_http_proven_app_module);

    ctx->worker = *socket;
    peer = ngx_http_proven_peer_get(r, socket->data, socket->len);
    if (peer == NULL) {
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_BAD_GATEWAY, "worker_unavailable",
            "the application's worker cannot be reached", NULL));
        return;
    }

    rc = ngx_http_proven_peer_call_encoded(r, peer, ctx->frame,
                                           ctx->frame_len, ctx->frame_pairs,
                                           palcf->timeout,
                                           ngx_http_proven_app_answer, NULL);
    ngx_http_proven_app_free_frame(ctx);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    }
}


/* No worker serves the app: provend starts one and says where. */
static void
ngx_http_proven_app_wake(ngx_http_request_t *r,
    ngx_http_proven_app_ctx_t *ctx)
{
    ngx_int_t     rc;
    cbor_item_t  *req;

    req = proven_request_new(0, "app.wake");
    if (req == NULL
        || proven_cbor_map_put(req, "app",
                               cbor_build_stringn((char *) ctx->app.data,
                                                  ctx->app.len)) != PROVEN_OK)
    {
        if (req != NULL) {
            cbor_decref(&req);
        }
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_http_proven_daemon_call(r, req, ngx_http_proven_app_woken, NULL);
    cbor_decref(&req);
    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_BAD_GATEWAY, "worker_unavailable",
            "no worker serves the application and proven_daemon is not "
            "set to start one", NULL));
    }
}


static void
ngx_http_proven_app_woken(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data)
{
    ngx_str_t                   socket;
    cbor_item_t                *item;
    ngx_http_proven_app_ctx_t  *ctx;

    (void) data;
    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_app_module);

    if (status == NGX_HTTP_PROVEN_DAEMON_ERROR
        && ngx_strcmp(res->code, "not_found") == 0)
    {
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_NOT_FOUND, "app_not_found", res->message, NULL));
        return;
    }

    item = status == NGX_HTTP_PROVEN_DAEMON_OK
           ? proven_cbor_map_get(res->result, "socket") : NULL;
    if (item == NULL
        || ngx_http_proven_app_copy_text(r->pool, item, &socket,
                                         NGX_HTTP_PROVEN_APP_SOCKET_MAX)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "proven app: no worker for \"%V\": %s", &ctx->app,
                      status == NGX_HTTP_PROVEN_DAEMON_ERROR
                      ? res->message
                      : ngx_http_proven_daemon_status_name(status));
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_BAD_GATEWAY, "worker_unavailable",
            "the application's worker did not start", NULL));
        return;
    }

    ngx_http_proven_app_send_frame(r, ctx, &socket);
}


/* ---- the answer ---------------------------------------------------------- */

static ngx_uint_t
ngx_http_proven_app_header_allowed(cbor_item_t *name, ngx_flag_t shared)
{
    size_t       len;
    ngx_uint_t   i;
    const char  *p;

    static const char  *hop[] = {
        "connection", "keep-alive", "transfer-encoding", "content-length",
        "upgrade", "te", "trailer", "proxy-connection", "server", "date",
        NULL
    };
    static const char  *shared_only[] = {
        "set-cookie", "set-cookie2", "service-worker-allowed", NULL
    };

    len = cbor_string_length(name);
    p = (const char *) cbor_string_handle(name);
    if (len == 0 || len > 256) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        /* a token: no separators, controls or spaces */
        if (p[i] <= 0x20 || p[i] >= 0x7f || ngx_strchr("()<>@,;:\\\"/[]?={}",
                                                       p[i]))
        {
            return 0;
        }
    }
    for (i = 0; hop[i] != NULL; i++) {
        if (ngx_strlen(hop[i]) == len
            && ngx_strncasecmp((u_char *) hop[i], (u_char *) p, len) == 0)
        {
            return 0;
        }
    }
    /*
     * On an origin apps share, what would reach past the app: its cookies
     * go to every app, and a service worker's scope could cover them all
     */
    for (i = 0; shared && shared_only[i] != NULL; i++) {
        if (ngx_strlen(shared_only[i]) == len
            && ngx_strncasecmp((u_char *) shared_only[i], (u_char *) p, len)
               == 0)
        {
            return 0;
        }
    }
    return 1;
}


static ngx_int_t
ngx_http_proven_app_value_ok(cbor_item_t *value)
{
    size_t          i, len;
    const u_char   *p;

    len = cbor_string_length(value);
    p = cbor_string_handle(value);
    if (len > 8192) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0') {
            return 0;
        }
    }
    return 1;
}


/* A worker's error answer as HTTP. */
static ngx_int_t
ngx_http_proven_app_worker_error(ngx_http_request_t *r,
    proven_response_t *res)
{
    char         *id;
    ngx_uint_t    status;
    cbor_item_t  *error, *error_id;

    status = proven_status_of(res->code, NGX_HTTP_BAD_GATEWAY);

    id = NULL;
    error = proven_cbor_map_get(res->map, "error");
    error_id = error ? proven_cbor_map_get(error, "error_id") : NULL;
    if (error_id != NULL && cbor_isa_string(error_id)
        && cbor_string_is_definite(error_id)
        && cbor_string_length(error_id) <= 64)
    {
        id = ngx_pnalloc(r->pool, cbor_string_length(error_id) + 1);
        if (id != NULL) {
            ngx_memcpy(id, cbor_string_handle(error_id),
                       cbor_string_length(error_id));
            id[cbor_string_length(error_id)] = '\0';
        }
    }

    if (status == NGX_HTTP_INTERNAL_SERVER_ERROR) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "proven app: handler error %s: %s", id ? id : "-",
                      res->message);
    } else if (status == NGX_HTTP_BAD_GATEWAY) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "proven app: worker error %s: %s", res->code,
                      res->message);
    }

    return ngx_http_proven_send_error(r, status,
               status == NGX_HTTP_BAD_GATEWAY ? "worker_unavailable"
                                              : res->code,
               res->message, id);
}


static void
ngx_http_proven_app_answer(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data)
{
    u_char                     *body;
    size_t                      i, n, len;
    uint64_t                    code;
    ngx_int_t                   rc;
    ngx_str_t                   type;
    cbor_item_t                *headers, *pair, *name, *value, *bytes;
    cbor_item_t                *stream;
    ngx_table_elt_t            *h;
    ngx_http_proven_app_ctx_t  *ctx;
    ngx_http_proven_app_loc_conf_t  *palcf;

    (void) data;
    palcf = ngx_http_get_module_loc_conf(r, ngx_http_proven_app_module);

    switch (status) {

    case NGX_HTTP_PROVEN_DAEMON_OK:
        break;

    case NGX_HTTP_PROVEN_DAEMON_ERROR:
        ngx_http_finalize_request(r,
                                  ngx_http_proven_app_worker_error(r, res));
        return;

    case NGX_HTTP_PROVEN_DAEMON_TIMEOUT:
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_GATEWAY_TIME_OUT, "timeout", "the application did not "
            "answer within proven_app_timeout", NULL));
        return;

    default:
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_BAD_GATEWAY, "worker_unavailable", "the application's "
            "worker is unreachable or stopped; try again", NULL));
        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_app_module);
    headers = res->result ? proven_cbor_map_get(res->result, "headers")
                          : NULL;
    bytes = res->result ? proven_cbor_map_get(res->result, "body") : NULL;
    stream = res->result ? proven_cbor_map_get(res->result, "stream") : NULL;

    if (res->result == NULL
        || proven_cbor_uint(proven_cbor_map_get(res->result, "status"),
                            &code) != PROVEN_OK
        || code < 100 || code > 599
        || (stream != NULL
            && proven_cbor_uint(stream, &ctx->stream) != PROVEN_OK)
        || (headers != NULL && !cbor_isa_array(headers))
        || (bytes != NULL && (!cbor_isa_bytestring(bytes)
                              || !cbor_bytestring_is_definite(bytes))))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "proven app: malformed answer from the worker");
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_BAD_GATEWAY, "worker_unavailable", "the application's "
            "worker sent a malformed answer", NULL));
        return;
    }

    if (palcf->shared_origin) {
        /* an app's page on an origin others share: no script, no storage
           or service worker of that origin, no cookies (an opaque one) */
        ngx_str_t  sandbox = ngx_string("sandbox");

        if (ngx_http_proven_add_header(r, "Content-Security-Policy",
                                       &sandbox) != NGX_OK)
        {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }
    }

    ngx_str_null(&type);
    n = headers ? cbor_array_size(headers) : 0;
    for (i = 0; i < n && i < NGX_HTTP_PROVEN_APP_HEADERS_MAX; i++) {
        pair = cbor_array_handle(headers)[i];
        if (!cbor_isa_array(pair) || cbor_array_size(pair) != 2) {
            continue;
        }
        name = cbor_array_handle(pair)[0];
        value = cbor_array_handle(pair)[1];
        if (!cbor_isa_string(name) || !cbor_string_is_definite(name)
            || !cbor_isa_string(value) || !cbor_string_is_definite(value)
            || !ngx_http_proven_app_header_allowed(name,
                                                   palcf->shared_origin)
            || !ngx_http_proven_app_value_ok(value))
        {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "proven app: a response header was dropped");
            continue;
        }

        if (cbor_string_length(name) == 12
            && ngx_strncasecmp(cbor_string_handle(name),
                               (u_char *) "content-type", 12) == 0)
        {
            type.len = cbor_string_length(value);
            type.data = ngx_pnalloc(r->pool, type.len + 1);
            if (type.data == NULL) {
                ngx_http_finalize_request(r, NGX_ERROR);
                return;
            }
            ngx_memcpy(type.data, cbor_string_handle(value), type.len);
            continue;
        }

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }
        h->hash = 1;
        h->key.len = cbor_string_length(name);
        h->key.data = ngx_pnalloc(r->pool, h->key.len);
        h->value.len = cbor_string_length(value);
        h->value.data = ngx_pnalloc(r->pool, h->value.len + 1);
        if (h->key.data == NULL || h->value.data == NULL) {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }
        ngx_memcpy(h->key.data, cbor_string_handle(name), h->key.len);
        ngx_memcpy(h->value.data, cbor_string_handle(value), h->value.len);
    }

    if (stream != NULL) {
        ngx_http_proven_app_stream_start(r, ctx, (ngx_uint_t) code,
                                         type.len ? &type : NULL);
        return;
    }

    len = bytes ? cbor_bytestring_length(bytes) : 0;
    body = NULL;
    if (len > 0) {
        body = ngx_pnalloc(r->pool, len);
        if (body == NULL) {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }
        ngx_memcpy(body, cbor_bytestring_handle(bytes), len);
    }

    rc = ngx_http_proven_send(r, (ngx_uint_t) code,
                                  type.len ? &type : NULL, body, len);
    ngx_http_finalize_request(r, rc);
}


/* ---- the audit log ------------------------------------------------------- */

/* ---- streamed bodies ----------------------------------------------------- */

/*
 * The handler's body is an async iterable: the head goes out now (no
 * length: chunked), then one chunk at a time is pulled from the worker
 * ("app.next"), each only once everything before it has left nginx, so at
 * most one chunk per response is held here, in one buffer.  A response
 * that ends early (client gone, error) tells the worker to drop the
 * stream ("app.cancel").
 */
static void
ngx_http_proven_app_stream_start(ngx_http_request_t *r,
    ngx_http_proven_app_ctx_t *ctx, ngx_uint_t status, ngx_str_t *type)
{
    ngx_int_t            rc;
    ngx_http_cleanup_t  *cln;

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }
    cln->handler = ngx_http_proven_app_stream_cleanup;
    cln->data = r;
    ctx->stream_open = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = -1;
    if (type != NULL) {
        r->headers_out.content_type = *type;
        r->headers_out.content_type_len = type->len;
    }
    if (r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        ngx_http_finalize_request(r, rc);    /* the cleanup cancels */
        return;
    }

    /* a client that goes away is noticed while a chunk is awaited */
    r->read_event_handler = ngx_http_test_reading;
    ngx_http_proven_app_pull(r, ctx);
}


/* The two pairs of app.next or app.cancel, at frame (64 bytes do). */
static u_char *
ngx_http_proven_app_stream_op(u_char *frame, const char *op,
    uint64_t stream)
{
    u_char  *p;

    p = proven_cbor_put_string(frame, PROVEN_CBOR_TEXT, "op", 2);
    p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, op, ngx_strlen(op));
    p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, "stream", 6);
    return proven_cbor_put_head(p, PROVEN_CBOR_UINT, stream);
}


static void
ngx_http_proven_app_stream_cleanup(void *data)
{
    ngx_http_request_t  *r = data;

    u_char                     *p, frame[64];
    ngx_http_proven_peer_t     *peer;
    ngx_http_proven_app_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_app_module);
    if (ctx == NULL || !ctx->stream_open) {
        return;
    }
    ctx->stream_open = 0;

    p = ngx_http_proven_app_stream_op(frame, "app.cancel", ctx->stream);

    /* no connection open: the worker ends it after 30 s unread */
    peer = ngx_http_proven_peer_get(r, ctx->worker.data, ctx->worker.len);
    if (peer != NULL) {
        (void) ngx_http_proven_peer_notify(peer, frame, p - frame, 2);
    }
}


static void
ngx_http_proven_app_pull(ngx_http_request_t *r,
    ngx_http_proven_app_ctx_t *ctx)
{
    u_char                          *p, frame[64];
    ngx_int_t                        rc;
    ngx_http_proven_peer_t          *peer;
    ngx_http_proven_app_loc_conf_t  *palcf;

    palcf = ngx_http_get_module_loc_conf(r, ngx_http_proven_app_module);

    p = ngx_http_proven_app_stream_op(frame, "app.next", ctx->stream);

    peer = ngx_http_proven_peer_get(r, ctx->worker.data, ctx->worker.len);
    rc = peer == NULL ? NGX_ERROR
         : ngx_http_proven_peer_call_encoded(r, peer, frame, p - frame, 2,
               palcf->timeout, ngx_http_proven_app_chunk, NULL);
    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_ERROR);
    }
}


/* Whether all written so far has left nginx (ngx_http_writer's test). */
static ngx_uint_t
ngx_http_proven_app_flushed(ngx_http_request_t *r)
{
    return !(r->buffered || r->postponed
             || (r == r->main && r->connection->buffered));
}


/* Waits for the client to take what is buffered (rate limits obeyed). */
static void
ngx_http_proven_app_stream_wait(ngx_http_request_t *r)
{
    ngx_event_t               *wev;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    wev = r->connection->write;

    r->write_event_handler = ngx_http_proven_app_stream_write;
    if (!wev->delayed) {
        ngx_add_timer(wev, clcf->send_timeout);
    }
    if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_ERROR);
    }
}


static void
ngx_http_proven_app_chunk(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data)
{
    size_t                      len, size;
    ngx_int_t                   rc, more;
    ngx_buf_t                  *b;
    ngx_chain_t                 out;
    cbor_item_t                *bytes, *more_item;
    ngx_event_t                *wev;
    ngx_http_proven_app_ctx_t  *ctx;

    (void) data;
    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_app_module);

    /* an error answer means the worker dropped the stream already */
    if (status == NGX_HTTP_PROVEN_DAEMON_ERROR) {
        ctx->stream_open = 0;
    }

    bytes = status == NGX_HTTP_PROVEN_DAEMON_OK && res->result != NULL
            ? proven_cbor_map_get(res->result, "chunk") : NULL;
    more_item = bytes != NULL ? proven_cbor_map_get(res->result, "more")
                              : NULL;
    if (bytes == NULL || !cbor_isa_bytestring(bytes)
        || !cbor_bytestring_is_definite(bytes)
        || cbor_bytestring_length(bytes) > NGX_HTTP_PROVEN_APP_CHUNK_MAX
        || more_item == NULL || !cbor_is_bool(more_item))
    {
        /* the head is out: all that is left is to cut the response */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "proven app: the streamed body of \"%V\" broke: %s",
                      &ctx->app,
                      status == NGX_HTTP_PROVEN_DAEMON_ERROR ? res->message
                      : status == NGX_HTTP_PROVEN_DAEMON_OK
                        ? "a malformed or oversized chunk"
                        : ngx_http_proven_daemon_status_name(status));
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    more = cbor_get_bool(more_item);
    if (!more) {
        ctx->stream_open = 0;
    }

    /* nothing written before is held anywhere now (see flushed): the
       buffer is free to reuse, or to replace by a larger one */
    len = cbor_bytestring_length(bytes);
    if (len > ctx->chunk_size) {
        for (size = NGX_HTTP_PROVEN_APP_CHUNK_MIN; size < len; size *= 2) {
            /* void */
        }
        if (ctx->chunk != NULL) {
            ngx_pfree(r->pool, ctx->chunk);
        }
        ctx->chunk = ngx_palloc(r->pool, size);
        if (ctx->chunk == NULL) {
            ctx->chunk_size = 0;
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }
        ctx->chunk_size = size;
    }

    b = &ctx->chunk_buf;
    ngx_memzero(b, sizeof(ngx_buf_t));
    if (len > 0) {
        ngx_memcpy(ctx->chunk, cbor_bytestring_handle(bytes), len);
        b->pos = ctx->chunk;
        b->last = ctx->chunk + len;
        b->memory = 1;
    }
    b->flush = 1;
    b->last_buf = (!more && r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    out.buf = b;
    out.next = NULL;

    rc = ngx_http_output_filter(r, &out);
    if (!more || rc == NGX_ERROR) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (!ngx_http_proven_app_flushed(r)) {
        ngx_http_proven_app_stream_wait(r);
        return;
    }

    wev = r->connection->write;
    if (wev->timer_set && !wev->delayed) {
        ngx_del_timer(wev);
    }
    ngx_http_proven_app_pull(r, ctx);
}


/* The client's socket can take more (as ngx_http_writer). */
static void
ngx_http_proven_app_stream_write(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_event_t                *wev;
    ngx_http_core_loc_conf_t   *clcf;

    wev = r->connection->write;
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (wev->timedout) {
        if (!wev->delayed) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, NGX_ETIMEDOUT,
                          "proven app: client timed out");
            r->connection->timedout = 1;
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }
        wev->timedout = 0;
        wev->delayed = 0;
        if (!wev->ready) {
            ngx_http_proven_app_stream_wait(r);
            return;
        }
    }

    if (wev->delayed) {
        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_ERROR);
        }
        return;
    }

    rc = ngx_http_output_filter(r, NULL);
    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    if (!ngx_http_proven_app_flushed(r)) {
        ngx_http_proven_app_stream_wait(r);
        return;
    }

    /* a rate limit's delay stays: the next write waits for it */
    if (wev->timer_set && !wev->delayed) {
        ngx_del_timer(wev);
    }
    r->write_event_handler = ngx_http_request_empty_handler;
    ngx_http_proven_app_pull(r,
        ngx_http_get_module_ctx(r, ngx_http_proven_app_module));
}


static ngx_int_t
ngx_http_proven_app_audit(ngx_http_request_t *r, ngx_str_t *app)
{
    ngx_int_t     rc;
    cbor_item_t  *req;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    req = proven_request_new(0, "app.audit");
    if (req == NULL
        || proven_cbor_map_put(req, "app",
                               cbor_build_stringn((char *) app->data,
                                                  app->len)) != PROVEN_OK)
    {
        if (req != NULL) {
            cbor_decref(&req);
        }
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->main->count++;
    rc = ngx_http_proven_daemon_call(r, req,
                                     ngx_http_proven_app_audit_answer, NULL);
    cbor_decref(&req);
    if (rc != NGX_OK) {
        r->main->count--;
        return ngx_http_proven_send_error(r,
                   NGX_HTTP_SERVICE_UNAVAILABLE, "daemon_unavailable",
                   "the audit log needs proven_daemon", NULL);
    }
    return NGX_DONE;
}


static json_t *
ngx_http_proven_app_hex(const uint8_t *p, size_t len)
{
    char  hex[2 * PROVEN_AUDIT_ENTRY_MAX + 1];

    if (len > PROVEN_AUDIT_ENTRY_MAX) {
        return NULL;
    }
    proven_hex_encode(p, len, hex);
    return json_string(hex);
}


/*
 * Every entry with its fields, its hash and its exact bytes ("cbor"), so
 * a reader can check the chain without trusting this JSON.
 */
static void
ngx_http_proven_app_audit_answer(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data)
{
    char                  err[PROVEN_ERR_LEN], *text;
    size_t                i, n, len;
    uint8_t               hash[PROVEN_AUDIT_HASH_LEN];
    json_t               *root, *list, *e;
    ngx_int_t             rc;
    cbor_item_t          *entries, *item;
    proven_audit_entry_t  entry;

    (void) data;

    if (status == NGX_HTTP_PROVEN_DAEMON_ERROR
        && ngx_strcmp(res->code, "not_found") == 0)
    {
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_NOT_FOUND, "app_not_found", res->message, NULL));
        return;
    }
    if (status != NGX_HTTP_PROVEN_DAEMON_OK) {
        ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
            NGX_HTTP_SERVICE_UNAVAILABLE, "daemon_unavailable",
            "provend could not give the audit log", NULL));
        return;
    }

    entries = proven_cbor_map_get(res->result, "entries");
    n = entries && cbor_isa_array(entries) ? cbor_array_size(entries) : 0;

    root = json_object();
    list = json_array();
    if (root == NULL || list == NULL) {
        goto failed;
    }
    json_object_set_new(root, "app", json_stringn(
        (char *) ((ngx_http_proven_app_ctx_t *)
                  ngx_http_get_module_ctx(r, ngx_http_proven_app_module))
            ->app.data,
        ((ngx_http_proven_app_ctx_t *)
         ngx_http_get_module_ctx(r, ngx_http_proven_app_module))->app.len));
    json_object_set(root, "entries", list);

    for (i = 0; i < n; i++) {
        item = cbor_array_handle(entries)[i];
        if (!cbor_isa_bytestring(item) || !cbor_bytestring_is_definite(item)
            || proven_audit_decode(cbor_bytestring_handle(item),
                                   (len = cbor_bytestring_length(item)),
                                   &entry, err, sizeof(err)) != PROVEN_OK)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "proven app: provend sent a bad audit entry");
            goto failed;
        }
        proven_audit_hash(cbor_bytestring_handle(item), len, hash);

        e = json_object();
        if (e == NULL || json_array_append_new(list, e) != 0) {
            goto failed;
        }
        json_object_set_new(e, "seq", json_integer((json_int_t) entry.seq));
        json_object_set_new(e, "time",
                            json_integer((json_int_t) entry.time));
        json_object_set_new(e, "action", json_string(
                            proven_audit_action_name(entry.action)));
        if (entry.action == PROVEN_AUDIT_DEPLOY
            || entry.action == PROVEN_AUDIT_ROLLBACK)
        {
            json_object_set_new(e, "package",
                ngx_http_proven_app_hex(entry.package, 32));
        } else {
            json_object_set_new(e, "owner",
                                ngx_http_proven_app_hex(entry.owner, 32));
        }
        json_object_set_new(e, "signer",
                            ngx_http_proven_app_hex(entry.signer, 32));
        if (entry.has_session) {
            json_object_set_new(e, "session",
                                ngx_http_proven_app_hex(entry.session, 16));
            json_object_set_new(e, "origin", json_string(entry.origin));
        }
        json_object_set_new(e, "prev",
                            ngx_http_proven_app_hex(entry.prev, 32));
        json_object_set_new(e, "hash", ngx_http_proven_app_hex(hash, 32));
        json_object_set_new(e, "signature",
                            ngx_http_proven_app_hex(entry.signature, 64));
        json_object_set_new(e, "cbor", ngx_http_proven_app_hex(
                            cbor_bytestring_handle(item), len));
    }

    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(list);
    json_decref(root);
    if (text == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    len = ngx_strlen(text);
    {
        u_char  *copy = ngx_pnalloc(r->pool, len + 1);

        if (copy == NULL) {
            free(text);
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }
        ngx_memcpy(copy, text, len);
        copy[len] = '\n';
        free(text);
        rc = ngx_http_proven_send(r, NGX_HTTP_OK,
                                      &ngx_http_proven_app_json_type, copy,
                                      len + 1);
    }
    ngx_http_finalize_request(r, rc);
    return;

failed:

    json_decref(list);
    json_decref(root);
    ngx_http_finalize_request(r, ngx_http_proven_send_error(r,
        NGX_HTTP_BAD_GATEWAY, "daemon_error", "the audit log could not be "
        "read", NULL));
}


/* ---- responses ----------------------------------------------------------- */

/* ---- the state page ------------------------------------------------------ */

static ngx_http_proven_app_entry_t *
ngx_http_proven_app_find(ngx_http_request_t *r, ngx_str_t *name)
{
    ngx_uint_t                        i;
    ngx_http_proven_app_entry_t      *apps;
    ngx_http_proven_app_main_conf_t  *pamcf;

    pamcf = ngx_http_get_module_main_conf(r, ngx_http_proven_app_module);

    if (ngx_http_proven_app_refresh(pamcf, r->connection->log) != NGX_OK
        || pamcf->apps == NULL)
    {
        return NULL;
    }

    apps = pamcf->apps->elts;
    for (i = 0; i < pamcf->apps->nelts; i++) {
        if (apps[i].name.len == name->len
            && ngx_strncmp(apps[i].name.data, name->data, name->len) == 0)
        {
            return &apps[i];
        }
    }
    return NULL;
}


static ngx_int_t
ngx_http_proven_app_copy_text(ngx_pool_t *pool, cbor_item_t *item,
    ngx_str_t *out, size_t max)
{
    if (item == NULL || !cbor_isa_string(item)
        || !cbor_string_is_definite(item) || cbor_string_length(item) > max)
    {
        return NGX_ERROR;
    }
    out->len = cbor_string_length(item);
    out->data = ngx_pnalloc(pool, out->len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }
    ngx_memcpy(out->data, cbor_string_handle(item), out->len);
    out->data[out->len] = '\0';
    return NGX_OK;
}


/* Parses the page's CBOR into a new table (in pool). */
static ngx_array_t *
ngx_http_proven_app_parse(ngx_pool_t *pool, u_char *data, size_t len,
    ngx_log_t *log)
{
    char                          err[PROVEN_ERR_LEN];
    u_char                       *p, *end, *slash;
    size_t                        i, j, n;
    ngx_str_t                     path, *seg, *socket;
    cbor_item_t                  *root, *apps, *routes, *route, *sockets;
    struct cbor_pair             *pairs;
    ngx_array_t                  *table;
    ngx_http_proven_app_entry_t  *app;
    ngx_http_proven_app_route_t  *r;

    root = proven_cbor_load(data, len, err, sizeof(err));
    if (root == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "proven app: the state page is unreadable: %s", err);
        return NULL;
    }

    table = NULL;
    apps = cbor_isa_map(root) ? proven_cbor_map_get(root, "apps") : NULL;
    if (apps == NULL || !cbor_isa_map(apps)) {
        goto done;
    }

    n = cbor_map_size(apps);
    pairs = cbor_map_handle(apps);
    table = ngx_array_create(pool, n ? n : 1,
                             sizeof(ngx_http_proven_app_entry_t));
    if (table == NULL) {
        goto done;
    }

    for (i = 0; i < n; i++) {
        app = ngx_array_push(table);
        if (app == NULL
            || ngx_http_proven_app_copy_text(pool, pairs[i].key, &app->name,
                                             NGX_HTTP_PROVEN_APP_NAME_MAX)
               != NGX_OK
            || !cbor_isa_map(pairs[i].value))
        {
            table = NULL;
            goto done;
        }

        sockets = proven_cbor_map_get(pairs[i].value, "sockets");
        if (sockets == NULL || !cbor_isa_array(sockets)
            || cbor_array_size(sockets) > NGX_HTTP_PROVEN_APP_WORKERS_MAX
            || ngx_array_init(&app->sockets, pool,
                              cbor_array_size(sockets) + 1,
                              sizeof(ngx_str_t)) != NGX_OK)
        {
            table = NULL;
            goto done;
        }
        for (j = 0; j < cbor_array_size(sockets); j++) {
            socket = ngx_array_push(&app->sockets);
            if (socket == NULL
                || ngx_http_proven_app_copy_text(pool,
                       cbor_array_handle(sockets)[j], socket,
                       NGX_HTTP_PROVEN_APP_SOCKET_MAX) != NGX_OK)
            {
                table = NULL;
                goto done;
            }
        }

        routes = proven_cbor_map_get(pairs[i].value, "routes");
        if (routes == NULL || !cbor_isa_array(routes)
            || ngx_array_init(&app->routes, pool,
                              cbor_array_size(routes) + 1,
                              sizeof(ngx_http_proven_app_route_t))
               != NGX_OK)
        {
            table = NULL;
            goto done;
        }

        for (j = 0; j < cbor_array_size(routes); j++) {
            route = cbor_array_handle(routes)[j];
            r = ngx_array_push(&app->routes);
            if (r == NULL || !cbor_isa_array(route)
                || cbor_array_size(route) != 2
                || ngx_http_proven_app_copy_text(pool,
                       cbor_array_handle(route)[0], &r->method, 16) != NGX_OK
                || ngx_http_proven_app_copy_text(pool,
                       cbor_array_handle(route)[1], &path, 256) != NGX_OK
                || path.len == 0 || path.data[0] != '/'
                || ngx_array_init(&r->segments, pool, 4, sizeof(ngx_str_t))
                   != NGX_OK)
            {
                table = NULL;
                goto done;
            }

            p = path.data + 1;
            end = path.data + path.len;
            if (end > p && end[-1] == '/') {
                end--;
            }
            while (p < end) {
                slash = ngx_strlchr(p, end, '/');
                if (slash == NULL) {
                    slash = end;
                }
                seg = ngx_array_push(&r->segments);
                if (seg == NULL) {
                    table = NULL;
                    goto done;
                }
                seg->data = p;
                seg->len = slash - p;
                p = slash + 1;
            }
        }
    }

done:

    cbor_decref(&root);
    if (table == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "proven app: the state page holds a malformed table");
    }
    return table;
}


/*
 * Re-reads the table when provend has published a new one: the bytes are
 * copied between two reads of an even, equal sequence (provend writes
 * with the sequence odd), so a copy is never half old, half new.
 */
static ngx_int_t
ngx_http_proven_app_refresh(ngx_http_proven_app_main_conf_t *pamcf,
    ngx_log_t *log)
{
    int           fd, rc;
    void         *page;
    size_t        len;
    uint8_t      *copy;
    uint32_t      seq;
    ngx_pool_t   *pool;
    ngx_array_t  *table;

    if (pamcf->page == NULL) {
        if (pamcf->state_path.len == 0) {
            return NGX_ERROR;
        }
        fd = open((char *) pamcf->state_path.data, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            return NGX_ERROR;
        }
        page = mmap(NULL, PROVEN_STATE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
        close(fd);
        if (page == MAP_FAILED) {
            ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                          "proven app: cannot map \"%V\"",
                          &pamcf->state_path);
            return NGX_ERROR;
        }
        if (!proven_state_valid(page)) {
            munmap(page, PROVEN_STATE_SIZE);
            return NGX_ERROR;
        }
        pamcf->page = page;
    }

    if (pamcf->parsed && proven_state_seq(pamcf->page) == pamcf->seq) {
        return NGX_OK;
    }

    rc = proven_state_copy(pamcf->page, &copy, &len, &seq);

    if (rc == PROVEN_AGAIN) {
        return pamcf->parsed ? NGX_OK : NGX_ERROR;
    }

    if (rc != PROVEN_OK) {
        return NGX_ERROR;
    }

    /*
     * The cycle's log, not the request's: the table outlives the request
     * (and its connection's log), and destroying its pool logs.
     */
    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        free(copy);
        return NGX_ERROR;
    }

    table = ngx_http_proven_app_parse(pool, copy, len, log);
    free(copy);
    if (table == NULL) {
        ngx_destroy_pool(pool);
        return pamcf->parsed ? NGX_OK : NGX_ERROR;
    }

    if (pamcf->pool != NULL) {
        ngx_destroy_pool(pamcf->pool);
    }
    pamcf->pool = pool;
    pamcf->apps = table;
    pamcf->seq = seq;
    pamcf->parsed = 1;
    return NGX_OK;
}


/* ---- configuration ------------------------------------------------------- */

static void *
ngx_http_proven_app_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_proven_app_main_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_proven_app_main_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->state_path = { 0, NULL };
     *     conf->page = NULL;
     *     conf->seq = 0;
     *     conf->parsed = 0;
     *     conf->pool = NULL;
     *     conf->apps = NULL;
     */

    return conf;
}


static void *
ngx_http_proven_app_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_proven_app_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_proven_app_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->name = { 0, NULL };
     */

    conf->enable = NGX_CONF_UNSET;
    conf->max_body = NGX_CONF_UNSET_SIZE;
    conf->timeout = NGX_CONF_UNSET_MSEC;
    conf->shared_origin = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_proven_app_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_proven_app_loc_conf_t  *prev = parent;
    ngx_http_proven_app_loc_conf_t  *conf = child;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_size_value(conf->max_body, prev->max_body, 1024 * 1024);
    ngx_conf_merge_msec_value(conf->timeout, prev->timeout, 30000);
    ngx_conf_merge_value(conf->shared_origin, prev->shared_origin, 0);

    if (conf->max_body > 8 * 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "proven app: proven_app_max_body is at most 8m");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_proven_app(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_proven_app_loc_conf_t  *palcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (palcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;
    if (cf->args->nelts == 2 && ngx_http_script_variables_count(&value[1])) {
        /* checked per request: a name that is none is a 404 */
        ngx_http_compile_complex_value_t  ccv;

        palcf->name_cv = ngx_palloc(cf->pool,
                                    sizeof(ngx_http_complex_value_t));
        if (palcf->name_cv == NULL) {
            return NGX_CONF_ERROR;
        }
        ngx_memzero(&ccv, sizeof(ccv));
        ccv.cf = cf;
        ccv.value = &value[1];
        ccv.complex_value = palcf->name_cv;
        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    } else if (cf->args->nelts == 2) {
        if (!ngx_http_proven_app_name_ok(&value[1])) {
            goto invalid;
        }
        palcf->name = value[1];
    }

    palcf->enable = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_proven_app_handler;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "proven app: \"%V\" is not an application name "
                       "([a-z0-9_-], 1..64, not starting with _ or -)",
                       &value[1]);
    return NGX_CONF_ERROR;
}


/* ---- worker life --------------------------------------------------------- */

static void
ngx_http_proven_app_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_proven_app_main_conf_t  *pamcf;

    pamcf = ngx_http_cycle_get_module_main_conf(cycle,
                                                ngx_http_proven_app_module);
    if (pamcf == NULL) {
        return;
    }
    if (pamcf->pool != NULL) {
        ngx_destroy_pool(pamcf->pool);
        pamcf->pool = NULL;
    }
    if (pamcf->page != NULL) {
        munmap(pamcf->page, PROVEN_STATE_SIZE);
        pamcf->page = NULL;
    }
}
