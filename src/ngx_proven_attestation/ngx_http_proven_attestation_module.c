/*
 * ngx_http_proven_attestation_module: attestation documents from provend.
 *
 *     location = /attestation { proven_attestation; }
 *         GET ?nonce=HEX&user_data=B64URL&public_key=B64URL[&format=json]
 *         -> the document (application/cbor) or its JSON view.
 *
 *     proven_attestation_bind_tls on;   public_key = the served TLS key,
 *                                       user_data = PROVEN_TLS_BINDING_MARK
 *     proven_attestation_header on;     X-Request-Attestation: HEX
 *                                       -> X-Attestation: BASE64 document
 *
 * Errors are JSON: {"error":{"code":"bad_request","message":"..."}}.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_proven_core.h"


typedef struct {
    ngx_flag_t                  enable;
    ngx_flag_t                  bind_tls;
    ngx_flag_t                  header;
} ngx_http_proven_attestation_loc_conf_t;


typedef enum {
    NGX_HTTP_PROVEN_ATTESTATION_HEADER_NONE = 0,
    NGX_HTTP_PROVEN_ATTESTATION_HEADER_PENDING,
    NGX_HTTP_PROVEN_ATTESTATION_HEADER_DONE
} ngx_http_proven_attestation_header_state_e;


typedef struct {
    ngx_uint_t                  json;          /* answer with the JSON view */
    ngx_uint_t                  header_state;
    ngx_str_t                   header_value;  /* X-Attestation, base64 */
} ngx_http_proven_attestation_ctx_t;


/* One decoded argument of the attest op. */
typedef struct {
    u_char                     *data;
    size_t                      len;
    ngx_uint_t                  present;
} ngx_http_proven_attestation_arg_t;


typedef struct {
    ngx_http_proven_attestation_arg_t  nonce;
    ngx_http_proven_attestation_arg_t  user_data;
    ngx_http_proven_attestation_arg_t  public_key;
    ngx_str_t                          format;
    ngx_uint_t                         has_format;
} ngx_http_proven_attestation_args_t;


/* A client mistake, reported as 400 with this code and message. */
typedef struct {
    const char                 *code;
    const char                 *name;     /* the parameter, or NULL */
    const char                 *message;
} ngx_http_proven_attestation_fault_t;


static ngx_int_t ngx_http_proven_attestation_handler(ngx_http_request_t *r);
static void ngx_http_proven_attestation_done(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data);
static ngx_int_t ngx_http_proven_attestation_header_handler(
    ngx_http_request_t *r);
static void ngx_http_proven_attestation_header_done(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data);
static ngx_int_t ngx_http_proven_attestation_header_filter(
    ngx_http_request_t *r);

static ngx_int_t ngx_http_proven_attestation_parse_args(ngx_http_request_t *r,
    ngx_http_proven_attestation_args_t *args,
    ngx_http_proven_attestation_fault_t *fault);
static ngx_int_t ngx_http_proven_attestation_decode(ngx_http_request_t *r,
    const char *name, ngx_str_t *value, ngx_uint_t hex,
    ngx_http_proven_attestation_arg_t *arg,
    ngx_http_proven_attestation_fault_t *fault);
static ngx_int_t ngx_http_proven_attestation_bind_tls(ngx_http_request_t *r,
    ngx_http_proven_attestation_args_t *args,
    ngx_http_proven_attestation_fault_t *fault);
static ngx_int_t ngx_http_proven_attestation_call(ngx_http_request_t *r,
    ngx_http_proven_attestation_args_t *args,
    ngx_http_proven_daemon_handler_pt handler, void *data);
static ngx_int_t ngx_http_proven_attestation_document(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    ngx_str_t *doc, ngx_int_t *rc);
static ngx_int_t ngx_http_proven_attestation_send_fault(ngx_http_request_t *r,
    ngx_http_proven_attestation_fault_t *fault);
static ngx_int_t ngx_http_proven_attestation_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message);
static ngx_int_t ngx_http_proven_attestation_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *type, u_char *data, size_t len);
static ngx_table_elt_t *ngx_http_proven_attestation_find_header(
    ngx_http_request_t *r, ngx_str_t *name, ngx_uint_t *count);
static ngx_http_proven_attestation_ctx_t *ngx_http_proven_attestation_get_ctx(
    ngx_http_request_t *r);
static ngx_http_proven_attestation_ctx_t *
    ngx_http_proven_attestation_find_ctx(ngx_http_request_t *r);
static void ngx_http_proven_attestation_ctx_cleanup(void *data);

static void *ngx_http_proven_attestation_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_proven_attestation_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_proven_attestation(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_proven_attestation_init(ngx_conf_t *cf);


static ngx_command_t  ngx_http_proven_attestation_commands[] = {

    { ngx_string("proven_attestation"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_proven_attestation,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("proven_attestation_bind_tls"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_proven_attestation_loc_conf_t, bind_tls),
      NULL },

    { ngx_string("proven_attestation_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_proven_attestation_loc_conf_t, header),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_proven_attestation_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_proven_attestation_init,      /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_proven_attestation_create_loc_conf, /* create location conf */
    ngx_http_proven_attestation_merge_loc_conf   /* merge location conf */
};


ngx_module_t  ngx_http_proven_attestation_module = {
    NGX_MODULE_V1,
    &ngx_http_proven_attestation_module_ctx, /* module context */
    ngx_http_proven_attestation_commands,  /* module directives */
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


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

static ngx_str_t  ngx_http_proven_attestation_cbor_type =
    ngx_string("application/cbor");
static ngx_str_t  ngx_http_proven_attestation_json_type =
    ngx_string("application/json");
static ngx_str_t  ngx_http_proven_attestation_request_header =
    ngx_string("X-Request-Attestation");
static ngx_str_t  ngx_http_proven_attestation_accept = ngx_string("Accept");
static ngx_str_t  ngx_http_proven_attestation_private =
    ngx_string("private, no-store");


/* ---- GET /attestation ---------------------------------------------------- */

static ngx_int_t
ngx_http_proven_attestation_handler(ngx_http_request_t *r)
{
    ngx_int_t                                rc;
    ngx_uint_t                               count;
    ngx_table_elt_t                         *accept;
    ngx_http_proven_attestation_ctx_t       *ctx;
    ngx_http_proven_attestation_args_t       args;
    ngx_http_proven_attestation_fault_t      fault;
    ngx_http_proven_attestation_loc_conf_t  *palcf;

    palcf = ngx_http_get_module_loc_conf(r,
                                         ngx_http_proven_attestation_module);

    if (!palcf->enable) {
        return NGX_DECLINED;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "proven attestation: \"%V\"", &r->uri);

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "proven attestation: method %V not allowed",
                      &r->method_name);

        return ngx_http_proven_attestation_send_error(r,
                   NGX_HTTP_NOT_ALLOWED, "method_not_allowed",
                   "only GET and HEAD are allowed");
    }

    ctx = ngx_http_proven_attestation_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_proven_attestation_parse_args(r, &args, &fault) != NGX_OK) {
        return ngx_http_proven_attestation_send_fault(r, &fault);
    }

    if (palcf->bind_tls
        && ngx_http_proven_attestation_bind_tls(r, &args, &fault) != NGX_OK)
    {
        if (fault.code == NULL) {
            return ngx_http_proven_attestation_send_error(r,
                       NGX_HTTP_INTERNAL_SERVER_ERROR, "internal",
                       "cannot read the TLS certificate");
        }

        return ngx_http_proven_attestation_send_fault(r, &fault);
    }

    if (args.has_format) {
        ctx->json = (args.format.len == 4
                     && ngx_strncmp(args.format.data, "json", 4) == 0);

    } else {
        accept = ngx_http_proven_attestation_find_header(r,
                     &ngx_http_proven_attestation_accept, &count);

        ctx->json = (accept != NULL
                     && ngx_strlcasestrn(accept->value.data,
                                         accept->value.data
                                         + accept->value.len,
                                         (u_char *) "application/json",
                                         16 - 1)
                        != NULL
                     && ngx_strlcasestrn(accept->value.data,
                                         accept->value.data
                                         + accept->value.len,
                                         (u_char *) "application/cbor",
                                         16 - 1)
                        == NULL);
    }

    rc = ngx_http_proven_attestation_call(r, &args,
                                          ngx_http_proven_attestation_done,
                                          ctx);
    if (rc != NGX_OK) {
        return ngx_http_proven_attestation_send_error(r,
                   NGX_HTTP_INTERNAL_SERVER_ERROR, "internal",
                   "cannot ask provend");
    }

    if (!r->discard_body) {
        r->read_event_handler = ngx_http_test_reading;
    }

    r->main->count++;

    return NGX_DONE;
}


static void
ngx_http_proven_attestation_done(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data)
{
    ngx_http_proven_attestation_ctx_t  *ctx = data;

    char                      err[PROVEN_ERR_LEN], *json;
    size_t                    len;
    u_char                   *body;
    ngx_int_t                 rc;
    ngx_str_t                 doc;
    proven_attestation_doc_t  att;

    if (ngx_http_proven_attestation_document(r, status, res, &doc, &rc)
        != NGX_OK)
    {
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (!ctx->json) {
        rc = ngx_http_proven_attestation_send(r, NGX_HTTP_OK,
                 &ngx_http_proven_attestation_cbor_type, doc.data, doc.len);
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (proven_attestation_decode(doc.data, doc.len, &att, err, sizeof(err))
        != PROVEN_OK)
    {
        proven_attestation_doc_free(&att);

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "proven attestation: document from provend does not "
                      "decode: %s", err);

        rc = ngx_http_proven_attestation_send_error(r, NGX_HTTP_BAD_GATEWAY,
                 "daemon_error", "provend sent a malformed document");
        ngx_http_finalize_request(r, rc);
        return;
    }

    json = proven_attestation_to_json(&att, 1);
    proven_attestation_doc_free(&att);

    if (json == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "proven attestation: cannot render the JSON view");

        rc = ngx_http_proven_attestation_send_error(r,
                 NGX_HTTP_INTERNAL_SERVER_ERROR, "internal",
                 "cannot render the JSON view");
        ngx_http_finalize_request(r, rc);
        return;
    }

    len = ngx_strlen(json);

    body = ngx_pnalloc(r->pool, len + 1);
    if (body == NULL) {
        free(json);
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    ngx_memcpy(body, json, len);
    free(json);

    if (len == 0 || body[len - 1] != '\n') {
        body[len++] = '\n';
    }

    rc = ngx_http_proven_attestation_send(r, NGX_HTTP_OK,
             &ngx_http_proven_attestation_json_type, body, len);
    ngx_http_finalize_request(r, rc);
}


/* ---- X-Request-Attestation ----------------------------------------------- */

static ngx_int_t
ngx_http_proven_attestation_header_handler(ngx_http_request_t *r)
{
    ngx_int_t                                rc;
    ngx_uint_t                               count;
    ngx_table_elt_t                         *h;
    ngx_http_proven_attestation_ctx_t       *ctx;
    ngx_http_proven_attestation_args_t       args;
    ngx_http_proven_attestation_fault_t      fault;
    ngx_http_proven_attestation_loc_conf_t  *palcf;

    palcf = ngx_http_get_module_loc_conf(r,
                                         ngx_http_proven_attestation_module);

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_proven_attestation_find_ctx(r);

    if (ctx != NULL) {
        switch (ctx->header_state) {
        case NGX_HTTP_PROVEN_ATTESTATION_HEADER_PENDING:
            return NGX_DONE;
        case NGX_HTTP_PROVEN_ATTESTATION_HEADER_DONE:
            return NGX_DECLINED;
        }
    }

    if (!palcf->header) {
        return NGX_DECLINED;
    }

    h = ngx_http_proven_attestation_find_header(r,
            &ngx_http_proven_attestation_request_header, &count);

    if (h == NULL) {
        return NGX_DECLINED;
    }

    ngx_memzero(&args, sizeof(ngx_http_proven_attestation_args_t));
    ngx_memzero(&fault, sizeof(ngx_http_proven_attestation_fault_t));

    if (count > 1) {
        fault.code = "bad_request";
        fault.name = "X-Request-Attestation";
        fault.message = "given more than once";
        goto client_error;
    }

    if (ngx_http_proven_attestation_decode(r, "X-Request-Attestation",
                                           &h->value, 1, &args.nonce, &fault)
        != NGX_OK)
    {
        goto client_error;
    }

    if (palcf->bind_tls
        && ngx_http_proven_attestation_bind_tls(r, &args, &fault) != NGX_OK)
    {
        if (fault.code == NULL) {
            rc = ngx_http_proven_attestation_send_error(r,
                     NGX_HTTP_INTERNAL_SERVER_ERROR, "internal",
                     "cannot read the TLS certificate");
            ngx_http_finalize_request(r, rc);
            return NGX_DONE;
        }

        goto client_error;
    }

    ctx = ngx_http_proven_attestation_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_proven_attestation_call(r, &args,
             ngx_http_proven_attestation_header_done, ctx);
    if (rc != NGX_OK) {
        rc = ngx_http_proven_attestation_send_error(r,
                 NGX_HTTP_INTERNAL_SERVER_ERROR, "internal",
                 "cannot ask provend");
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    ctx->header_state = NGX_HTTP_PROVEN_ATTESTATION_HEADER_PENDING;
    r->read_event_handler = ngx_http_test_reading;

    /* phases resume from header_done */
    return NGX_DONE;

client_error:

    rc = ngx_http_proven_attestation_send_fault(r, &fault);
    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static void
ngx_http_proven_attestation_header_done(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data)
{
    ngx_http_proven_attestation_ctx_t  *ctx = data;

    ngx_int_t  rc;
    ngx_str_t  doc, *value;

    ctx->header_state = NGX_HTTP_PROVEN_ATTESTATION_HEADER_DONE;
    r->read_event_handler = ngx_http_block_reading;

    if (ngx_http_proven_attestation_document(r, status, res, &doc, &rc)
        != NGX_OK)
    {
        ngx_http_finalize_request(r, rc);
        return;
    }

    value = &ctx->header_value;

    value->data = ngx_pnalloc(r->pool, ngx_base64_encoded_length(doc.len));
    if (value->data == NULL) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    ngx_encode_base64(value, &doc);

    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_http_proven_attestation_header_filter(ngx_http_request_t *r)
{
    ngx_http_proven_attestation_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_proven_attestation_find_ctx(r);

    if (ctx == NULL || ctx->header_value.len == 0) {
        return ngx_http_next_header_filter(r);
    }

    if (ngx_http_proven_add_header(r, "X-Attestation",
                                               &ctx->header_value)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the document answers one client's nonce: no shared cache may keep it */
    if (ngx_http_proven_add_header(r, "Cache-Control",
                                               &ngx_http_proven_attestation_private)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_next_header_filter(r);
}


/* ---- arguments ----------------------------------------------------------- */

static ngx_int_t
ngx_http_proven_attestation_parse_args(ngx_http_request_t *r,
    ngx_http_proven_attestation_args_t *args,
    ngx_http_proven_attestation_fault_t *fault)
{
    u_char                             *p, *end, *amp, *eq, *dst, *src;
    ngx_int_t                           rc;
    ngx_str_t                           name, value;
    ngx_uint_t                          hex;
    const char                         *label;
    ngx_http_proven_attestation_arg_t  *arg;

    ngx_memzero(args, sizeof(ngx_http_proven_attestation_args_t));
    ngx_memzero(fault, sizeof(ngx_http_proven_attestation_fault_t));

    p = r->args.data;
    end = r->args.data + r->args.len;

    while (p < end) {
        amp = ngx_strlchr(p, end, '&');
        if (amp == NULL) {
            amp = end;
        }

        eq = ngx_strlchr(p, amp, '=');

        name.data = p;
        name.len = (eq ? eq : amp) - p;

        value.data = eq ? eq + 1 : amp;
        value.len = amp - value.data;

        p = amp + 1;

        if (name.len == 5 && ngx_strncmp(name.data, "nonce", 5) == 0) {
            arg = &args->nonce;
            label = "nonce";
            hex = 1;

        } else if (name.len == 9
                   && ngx_strncmp(name.data, "user_data", 9) == 0)
        {
            arg = &args->user_data;
            label = "user_data";
            hex = 0;

        } else if (name.len == 10
                   && ngx_strncmp(name.data, "public_key", 10) == 0)
        {
            arg = &args->public_key;
            label = "public_key";
            hex = 0;

        } else if (name.len == 6 && ngx_strncmp(name.data, "format", 6) == 0) {
            if (args->has_format) {
                fault->name = "format";
                fault->message = "given more than once";
                goto failed;
            }

            args->has_format = 1;
            args->format = value;

            if (!(value.len == 4 && ngx_strncmp(value.data, "json", 4) == 0)
                && !(value.len == 4
                     && ngx_strncmp(value.data, "cbor", 4) == 0))
            {
                fault->name = "format";
                fault->message = "must be json or cbor";
                goto failed;
            }

            continue;

        } else {
            /* others (cache busters, ...) are not ours to judge */
            continue;
        }

        if (arg->present) {
            fault->name = label;
            fault->message = "given more than once";
            goto failed;
        }

        /* hex and base64url need no escapes, but clients may add them */
        if (ngx_strlchr(value.data, value.data + value.len, '%') != NULL) {
            dst = ngx_pnalloc(r->pool, value.len);
            if (dst == NULL) {
                fault->code = NULL;
                return NGX_ERROR;
            }

            src = value.data;
            value.data = dst;
            ngx_unescape_uri(&dst, &src, value.len, 0);
            value.len = dst - value.data;
        }

        rc = ngx_http_proven_attestation_decode(r, label, &value, hex, arg,
                                                fault);
        if (rc != NGX_OK) {
            /* fault says whose fault: code NULL when it is ours */
            return rc;
        }

        if (arg == &args->user_data
            && arg->len >= sizeof(PROVEN_MARK_PREFIX) - 1
            && ngx_memcmp(arg->data, PROVEN_MARK_PREFIX,
                          sizeof(PROVEN_MARK_PREFIX) - 1) == 0)
        {
            fault->name = "user_data";
            fault->message = "reserved: \"proven-\" marks the node's own "
                             "documents (the TLS binding, the cluster)";
            goto failed;
        }
    }

    return NGX_OK;

failed:

    fault->code = "bad_request";

    return NGX_DECLINED;
}


/* Decodes hex or base64url (padding optional) into arg, bounded. */
static ngx_int_t
ngx_http_proven_attestation_decode(ngx_http_request_t *r, const char *name,
    ngx_str_t *value, ngx_uint_t hex, ngx_http_proven_attestation_arg_t *arg,
    ngx_http_proven_attestation_fault_t *fault)
{
    int      rc;
    size_t   len, n;
    u_char  *p, *last;

    fault->code = "bad_request";
    fault->name = name;

    /* header values may carry surrounding blanks */
    p = value->data;
    last = value->data + value->len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    len = last - p;

    if (len == 0) {
        fault->message = "empty";
        return NGX_DECLINED;
    }

    if (hex) {
        n = len / 2;

    } else {
        n = len;

        while (n > 0 && p[n - 1] == '=') {
            n--;
        }

        n = n / 4 * 3 + (n % 4 > 1 ? n % 4 - 1 : 0);
    }

    if (n > PROVEN_ATT_FIELD_MAX) {
        fault->message = "longer than 1024 bytes";
        return NGX_DECLINED;
    }

    arg->data = ngx_pnalloc(r->pool, PROVEN_ATT_FIELD_MAX);
    if (arg->data == NULL) {
        fault->code = NULL;
        return NGX_ERROR;
    }

    if (hex) {
        rc = proven_hex_decode((const char *) p, len, arg->data,
                               PROVEN_ATT_FIELD_MAX, &arg->len);

    } else {
        rc = proven_base64url_decode((const char *) p, len, arg->data,
                                     PROVEN_ATT_FIELD_MAX, &arg->len);
    }

    if (rc != PROVEN_OK) {
        fault->message = hex ? "not valid hex" : "not valid base64url";
        return NGX_DECLINED;
    }

    arg->present = 1;
    fault->code = NULL;
    fault->name = NULL;

    return NGX_OK;
}


/*
 * public_key = the DER SubjectPublicKeyInfo of the certificate this TLS
 * connection serves.  NGX_ERROR with fault->code NULL: our fault.
 */
static ngx_int_t
ngx_http_proven_attestation_bind_tls(ngx_http_request_t *r,
    ngx_http_proven_attestation_args_t *args,
    ngx_http_proven_attestation_fault_t *fault)
{
#if (NGX_HTTP_SSL)
    int      len;
    X509    *cert;
    u_char  *p;
#endif

    if (args->public_key.present) {
        fault->code = "bad_request";
        fault->name = "public_key";
        fault->message = "not accepted here: the TLS certificate key is "
                         "bound";
        return NGX_DECLINED;
    }
    if (args->user_data.present) {
        fault->code = "bad_request";
        fault->name = "user_data";
        fault->message = "not accepted here: it marks the TLS binding";
        return NGX_DECLINED;
    }

#if (NGX_HTTP_SSL)

    if (r->connection->ssl != NULL) {
        fault->code = NULL;

        cert = SSL_get_certificate(r->connection->ssl->connection);
        if (cert == NULL) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "proven attestation: no certificate on this TLS "
                          "connection");
            return NGX_ERROR;
        }

        len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), NULL);
        if (len <= 0 || len > PROVEN_ATT_FIELD_MAX) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "proven attestation: cannot encode the TLS "
                          "certificate key (%d bytes)", len);
            return NGX_ERROR;
        }

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        args->public_key.data = p;
        args->public_key.len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &p);
        args->public_key.present = 1;

        /* says that public_key is this server's TLS key, not a caller's */
        args->user_data.data = (u_char *) PROVEN_TLS_BINDING_MARK;
        args->user_data.len = sizeof(PROVEN_TLS_BINDING_MARK) - 1;
        args->user_data.present = 1;

        return NGX_OK;
    }

#endif

    fault->code = "tls_required";
    fault->name = NULL;
    fault->message = "this location binds attestations to TLS: use HTTPS";

    return NGX_DECLINED;
}


/* ---- talking to provend -------------------------------------------------- */

static ngx_int_t
ngx_http_proven_attestation_call(ngx_http_request_t *r,
    ngx_http_proven_attestation_args_t *args,
    ngx_http_proven_daemon_handler_pt handler, void *data)
{
    ngx_int_t                           rc;
    ngx_uint_t                          i;
    cbor_item_t                        *map;
    ngx_http_proven_attestation_arg_t  *arg;

    static const char  *names[] = { "nonce", "user_data", "public_key" };

    map = proven_request_new(0, "attest");
    if (map == NULL) {
        goto failed;
    }

    for (i = 0; i < 3; i++) {
        arg = (i == 0) ? &args->nonce
              : (i == 1) ? &args->user_data : &args->public_key;

        if (!arg->present) {
            continue;
        }

        if (proven_cbor_map_put(map, names[i],
                                cbor_build_bytestring(arg->data, arg->len))
            != PROVEN_OK)
        {
            goto failed;
        }
    }

    rc = ngx_http_proven_daemon_call(r, map, handler, data);

    cbor_decref(&map);

    return rc;

failed:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "proven attestation: cannot build the request");

    if (map != NULL) {
        cbor_decref(&map);
    }

    return NGX_ERROR;
}


/*
 * NGX_OK: doc is the document of an attest answer, copied into the request
 * pool.  Otherwise the error response is sent (or could not be) and *rc is
 * for ngx_http_finalize_request().
 */
static ngx_int_t
ngx_http_proven_attestation_document(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    ngx_str_t *doc, ngx_int_t *rc)
{
    size_t    len;
    uint8_t  *bytes;

    switch (status) {

    case NGX_HTTP_PROVEN_DAEMON_OK:
        break;

    case NGX_HTTP_PROVEN_DAEMON_ERROR:
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "proven attestation: provend refused: %s: %s",
                      res->code, res->message);

        *rc = ngx_http_proven_attestation_send_error(r, NGX_HTTP_BAD_GATEWAY,
                   "daemon_error", "provend could not attest");
        return NGX_DONE;

    case NGX_HTTP_PROVEN_DAEMON_TIMEOUT:
        /* core logged the error line */
        *rc = ngx_http_proven_attestation_send_error(r,
                   NGX_HTTP_SERVICE_UNAVAILABLE, "daemon_unavailable",
                   "provend did not answer in time");
        return NGX_DONE;

    default: /* NGX_HTTP_PROVEN_DAEMON_UNREACHABLE */
        *rc = ngx_http_proven_attestation_send_error(r,
                   NGX_HTTP_SERVICE_UNAVAILABLE, "daemon_unavailable",
                   "provend is unreachable");
        return NGX_DONE;
    }

    if (res->result == NULL
        || proven_cbor_bytes(res->result, PROVEN_FRAME_MAX, &bytes, &len)
           != PROVEN_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "proven attestation: provend answered attest without "
                      "a byte string");

        *rc = ngx_http_proven_attestation_send_error(r, NGX_HTTP_BAD_GATEWAY,
                   "daemon_error", "provend sent no document");
        return NGX_DONE;
    }

    doc->data = ngx_pnalloc(r->pool, len ? len : 1);
    if (doc->data == NULL) {
        free(bytes);
        *rc = NGX_ERROR;
        return NGX_ERROR;
    }

    ngx_memcpy(doc->data, bytes, len);
    doc->len = len;
    free(bytes);

    if (len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "proven attestation: provend sent an empty document");

        *rc = ngx_http_proven_attestation_send_error(r, NGX_HTTP_BAD_GATEWAY,
                   "daemon_error", "provend sent no document");
        return NGX_DONE;
    }

    return NGX_OK;
}


/* ---- responses ----------------------------------------------------------- */

static ngx_int_t
ngx_http_proven_attestation_send_fault(ngx_http_request_t *r,
    ngx_http_proven_attestation_fault_t *fault)
{
    u_char  *p, *last;
    u_char   message[256];

    if (fault->code == NULL) {
        /* not the client's: an allocation failed */
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = message + sizeof(message) - 1;

    if (fault->name != NULL) {
        p = ngx_slprintf(message, last, "%s: %s", fault->name,
                         fault->message);

    } else {
        p = ngx_slprintf(message, last, "%s", fault->message);
    }

    *p = '\0';

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "proven attestation: bad request: %s", message);

    return ngx_http_proven_attestation_send_error(r, NGX_HTTP_BAD_REQUEST,
                                                  fault->code,
                                                  (char *) message);
}


/*
 * {"error":{"code":...,"message":...}} by core, not cached; a 405 says
 * what is allowed.
 */
static ngx_int_t
ngx_http_proven_attestation_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message)
{
    ngx_str_t  allow, no_store;

    ngx_str_set(&no_store, "no-store");
    ngx_str_set(&allow, "GET, HEAD");

    if (ngx_http_proven_add_header(r, "Cache-Control", &no_store) != NGX_OK
        || (status == NGX_HTTP_NOT_ALLOWED
            && ngx_http_proven_add_header(r, "Allow", &allow) != NGX_OK))
    {
        return NGX_ERROR;
    }

    return ngx_http_proven_send_error(r, status, code, message, NULL);
}


/* A document answers one nonce: never cached. */
static ngx_int_t
ngx_http_proven_attestation_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *data, size_t len)
{
    ngx_str_t  no_store;

    ngx_str_set(&no_store, "no-store");

    if (ngx_http_proven_add_header(r, "Cache-Control", &no_store) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_proven_send(r, status, type, data, len);
}


/* The first request header called name; count says how many there are. */
static ngx_table_elt_t *
ngx_http_proven_attestation_find_header(ngx_http_request_t *r,
    ngx_str_t *name, ngx_uint_t *count)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *found;

    found = NULL;
    *count = 0;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == name->len
            && ngx_strncasecmp(h[i].key.data, name->data, name->len) == 0)
        {
            if (found == NULL) {
                found = &h[i];
            }

            (*count)++;
        }
    }

    return found;
}


static ngx_http_proven_attestation_ctx_t *
ngx_http_proven_attestation_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t                 *cln;
    ngx_http_proven_attestation_ctx_t  *ctx;

    ctx = ngx_http_proven_attestation_find_ctx(r);

    if (ctx != NULL) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_proven_attestation_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     ctx->json = 0;
     *     ctx->header_state = NGX_HTTP_PROVEN_ATTESTATION_HEADER_NONE;
     *     ctx->header_value = { 0, NULL };
     */

    /* a marker that lets find_ctx() see ctx again after a redirect */
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_proven_attestation_ctx_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_proven_attestation_module);

    return ctx;
}


/*
 * Internal redirects (index, try_files, error_page) wipe module contexts;
 * the document asked for by X-Request-Attestation must survive them, or
 * it would be signed twice and maybe never sent.  The pool keeps it.
 */
static ngx_http_proven_attestation_ctx_t *
ngx_http_proven_attestation_find_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t                 *cln;
    ngx_http_proven_attestation_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_proven_attestation_module);

    if (ctx != NULL || !(r->internal || r->filter_finalize)) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_proven_attestation_ctx_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_proven_attestation_module);
            return ctx;
        }
    }

    return NULL;
}


static void
ngx_http_proven_attestation_ctx_cleanup(void *data)
{
    /* nothing to free: the handler only marks the context */
}


/* ---- configuration ------------------------------------------------------- */

static void *
ngx_http_proven_attestation_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_proven_attestation_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool,
                       sizeof(ngx_http_proven_attestation_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     nothing: every field is a flag
     */

    conf->enable = NGX_CONF_UNSET;
    conf->bind_tls = NGX_CONF_UNSET;
    conf->header = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_proven_attestation_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_proven_attestation_loc_conf_t  *prev = parent;
    ngx_http_proven_attestation_loc_conf_t  *conf = child;

    /* a content handler is not inherited: enable is per location */
    ngx_conf_init_value(conf->enable, 0);
    ngx_conf_merge_value(conf->bind_tls, prev->bind_tls, 0);
    ngx_conf_merge_value(conf->header, prev->header, 0);

    if ((conf->enable || conf->header)
        && !ngx_http_proven_daemon_configured(cf))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "proven attestation: no proven_daemon configured");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_proven_attestation(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_proven_attestation_loc_conf_t  *palcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (palcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    palcf->enable = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_proven_attestation_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_proven_attestation_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /*
     * The rewrite phase, so that the document is there before `return`
     * answers: a phase runs its handlers last registered first, and the
     * rewrite module registered before us.
     */
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_REWRITE_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_proven_attestation_header_handler;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_proven_attestation_header_filter;

    return NGX_OK;
}
