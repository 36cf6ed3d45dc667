/*
 * The kv.* and sql.* ops: frames in, parsed and bounded requests to the
 * storage backend, answers back on the loop thread.  A backend that
 * answers on its own thread (writes, SQL) has the response frame encoded
 * there and handed to the loop through one uv_async; one that answers
 * inside submit, on the loop (KV reads), is replied to at once.
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "core/log.h"
#include "storage.h"


typedef struct provend_ops_job_s  provend_ops_job_t;

struct provend_ops_job_s {
    provend_ops_storage_t  *ops;
    provend_ops_reply_pt    reply;
    void                   *ctx;
    uint64_t                id;
    uint8_t                *frame;
    size_t                  frame_len;
    provend_storage_req_t  *sr;         /* freed on the loop thread */
    provend_ops_job_t      *next;
};

/*
 * A request and its job in one allocation: provend_storage_req_free()
 * of the request frees both, so a job's fields are used before that.
 */
typedef struct {
    provend_storage_req_t  sr;
    provend_ops_job_t      job;
} provend_ops_slot_t;


/*
 * Lifetime: a backend thread touches a provend_ops_storage_t only inside
 * its lock (queue a job, signal the async), and every job is counted in
 * inflight until the loop has taken it from the queue under that lock.  So
 * once inflight is 0 no backend thread can still reach ops, and the loop
 * may close the handles and free it.
 *
 * Requests parsed in one turn of the loop are submitted together just
 * before the loop waits again (the prepare handle): the storage thread is
 * woken once for all of them and answers them as one batch.
 */
struct provend_ops_storage_s {
    uv_async_t           async;
    uv_prepare_t         prepare;
    provend_storage_t   *st;
    pthread_mutex_t      lock;
    provend_ops_job_t   *head;       /* answered, not yet replied */
    provend_ops_job_t  **tail;
    provend_ops_job_t   *queued;     /* parsed, not yet submitted */
    provend_ops_job_t  **queued_tail;
    size_t               inflight;   /* loop thread only */
    pthread_t            loop_thread;
    int                  stopping;
    int                  closed;
};

static void provend_ops_storage_op(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

#define PROVEND_CALLERS_ALL  (PROVEND_CALLER_SOCKET | PROVEND_CALLER_WORKER)

const provend_op_t  provend_ops_storage_table[] = {
    { "kv.get",      PROVEND_CALLERS_ALL, provend_ops_storage_op,
      PROVEND_OP_KV_GET },
    { "kv.set",      PROVEND_CALLERS_ALL, provend_ops_storage_op,
      PROVEND_OP_KV_SET },
    { "kv.delete",   PROVEND_CALLERS_ALL, provend_ops_storage_op,
      PROVEND_OP_KV_DELETE },
    { "kv.keys",     PROVEND_CALLERS_ALL, provend_ops_storage_op,
      PROVEND_OP_KV_KEYS },
    { "kv.sign",     PROVEND_CALLERS_ALL, provend_ops_storage_op,
      PROVEND_OP_KV_SIGN },
    { "sql.execute", PROVEND_CALLERS_ALL, provend_ops_storage_op,
      PROVEND_OP_SQL_EXECUTE },
    { "sql.query",   PROVEND_CALLERS_ALL, provend_ops_storage_op,
      PROVEND_OP_SQL_QUERY },
    { "sql.migrate", PROVEND_CALLERS_ALL, provend_ops_storage_op,
      PROVEND_OP_SQL_MIGRATE },
    { NULL, 0, NULL, 0 }
};


/* ---- arguments ----------------------------------------------------------- */

/* NULL when absent or null. */
static cbor_item_t *
provend_arg(const proven_request_t *req, const char *name)
{
    cbor_item_t  *item;

    item = proven_cbor_map_get(req->map, name);
    if (item == NULL || proven_cbor_is_null(item)) {
        return NULL;
    }

    return item;
}


/* A key or prefix: text or bytes of at most max. */
static int
provend_arg_key(cbor_item_t *item, const char *name, size_t max,
    uint8_t **out, size_t *len, char *err, size_t errlen)
{
    char  *text;

    if (cbor_isa_bytestring(item)) {
        if (proven_cbor_bytes(item, max, out, len) == PROVEN_OK) {
            return PROVEN_OK;
        }
    } else if (cbor_isa_string(item)) {
        if (proven_cbor_text(item, max, &text, len) == PROVEN_OK) {
            *out = (uint8_t *) text;
            return PROVEN_OK;
        }
    } else {
        proven_errf(err, errlen, "\"%s\" must be text or bytes", name);
        return PROVEN_ERR;
    }

    proven_errf(err, errlen, "\"%s\" is longer than %zu bytes", name, max);
    return PROVEN_ERR;
}


static int
provend_arg_uint(const proven_request_t *req, const char *name, int *has,
    uint64_t *value, char *err, size_t errlen)
{
    cbor_item_t  *item;

    *has = 0;
    item = provend_arg(req, name);
    if (item == NULL) {
        return PROVEN_OK;
    }

    if (proven_cbor_uint(item, value) != PROVEN_OK) {
        proven_errf(err, errlen, "\"%s\" must be an unsigned integer", name);
        return PROVEN_ERR;
    }

    *has = 1;
    return PROVEN_OK;
}


/* An optional name ("store", "db"): 1..64 of [a-z0-9_-]. */
static int
provend_arg_name(const proven_request_t *req, const char *name, char *out,
    char *err, size_t errlen)
{
    char         *text;
    size_t        len;
    cbor_item_t  *item;

    item = provend_arg(req, name);
    if (item == NULL) {
        return PROVEN_OK;
    }

    if (!cbor_isa_string(item)
        || proven_cbor_text(item, PROVEND_NAME_MAX, &text, &len) != PROVEN_OK)
    {
        proven_errf(err, errlen, "\"%s\" must be 1..%d of [a-z0-9_-]", name,
                    PROVEND_NAME_MAX);
        return PROVEN_ERR;
    }

    if (!provend_name_valid(text, len)) {
        free(text);
        proven_errf(err, errlen, "\"%s\" must be 1..%d of [a-z0-9_-]", name,
                    PROVEND_NAME_MAX);
        return PROVEN_ERR;
    }

    memcpy(out, text, len + 1);
    free(text);
    return PROVEN_OK;
}


static int
provend_arg_text(cbor_item_t *item, const char *name, size_t max,
    char **out, size_t *len, char *err, size_t errlen)
{
    if (item == NULL || !cbor_isa_string(item)) {
        proven_errf(err, errlen, "\"%s\" must be text", name);
        return PROVEN_ERR;
    }

    if (proven_cbor_text(item, max, out, len) != PROVEN_OK) {
        proven_errf(err, errlen, "\"%s\" is longer than %zu bytes", name, max);
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


static int
provend_sql_param(cbor_item_t *item, provend_sql_value_t *v, char *err,
    size_t errlen)
{
    char      *text;
    uint64_t   u;

    memset(v, 0, sizeof(*v));

    if (proven_cbor_is_null(item)) {
        v->type = PROVEND_SQL_NULL;
        return PROVEN_OK;
    }

    switch (cbor_typeof(item)) {

    case CBOR_TYPE_UINT:
        u = cbor_get_int(item);
        if (u > INT64_MAX) {
            break;
        }
        v->type = PROVEND_SQL_INTEGER;
        v->i = (int64_t) u;
        return PROVEN_OK;

    case CBOR_TYPE_NEGINT:
        u = cbor_get_int(item);
        if (u > INT64_MAX) {
            break;
        }
        v->type = PROVEND_SQL_INTEGER;
        v->i = -1 - (int64_t) u;
        return PROVEN_OK;

    case CBOR_TYPE_FLOAT_CTRL:
        if (proven_cbor_is_bool(item)
            || cbor_float_get_width(item) == CBOR_FLOAT_0)
        {
            break;
        }
        v->type = PROVEND_SQL_REAL;
        v->f = cbor_float_get_float(item);
        return PROVEN_OK;

    case CBOR_TYPE_STRING:
        if (proven_cbor_text(item, PROVEND_SQL_TEXT_MAX, &text, &v->len)
            != PROVEN_OK)
        {
            proven_errf(err, errlen, "a text param is longer than %d bytes",
                        PROVEND_SQL_TEXT_MAX);
            return PROVEN_ERR;
        }
        v->type = PROVEND_SQL_TEXT;
        v->data = (uint8_t *) text;
        return PROVEN_OK;

    case CBOR_TYPE_BYTESTRING:
        if (proven_cbor_bytes(item, PROVEN_FRAME_MAX, &v->data, &v->len)
            != PROVEN_OK)
        {
            proven_errf(err, errlen, "a bytes param is too long");
            return PROVEN_ERR;
        }
        v->type = PROVEND_SQL_BLOB;
        return PROVEN_OK;

    default:
        break;
    }

    proven_errf(err, errlen,
                "params are null, integers (64-bit), floats, text or "
                "bytes");
    return PROVEN_ERR;
}


/* {sql, params?} from map (or the request itself). */
static int
provend_sql_stmt(cbor_item_t *sql, cbor_item_t *params,
    provend_sql_stmt_t *s, char *err, size_t errlen)
{
    size_t         i, n;
    cbor_item_t  **items;

    if (provend_arg_text(sql, "sql", PROVEND_SQL_TEXT_MAX, &s->sql,
                         &s->sql_len, err, errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    if (params == NULL || proven_cbor_is_null(params)) {
        return PROVEN_OK;
    }

    if (!cbor_isa_array(params) || !cbor_array_is_definite(params)) {
        proven_errf(err, errlen, "\"params\" must be an array");
        return PROVEN_ERR;
    }

    n = cbor_array_size(params);
    if (n > PROVEND_SQL_PARAMS_MAX) {
        proven_errf(err, errlen, "at most %d params", PROVEND_SQL_PARAMS_MAX);
        return PROVEN_ERR;
    }

    if (n == 0) {
        return PROVEN_OK;
    }

    s->params = calloc(n, sizeof(*s->params));
    if (s->params == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }

    items = cbor_array_handle(params);
    for (i = 0; i < n; i++) {
        if (provend_sql_param(items[i], &s->params[i], err, errlen)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        s->nparams++;
    }

    return PROVEN_OK;
}


static int
provend_sql_args(const proven_request_t *req, provend_storage_req_t *sr,
    char *err, size_t errlen)
{
    size_t         i, n;
    cbor_item_t   *batch, **items, *list;

    batch = provend_arg(req, "batch");
    list = provend_arg(req, "migrations");

    if (sr->op == PROVEND_OP_SQL_MIGRATE) {
        if (list == NULL || !cbor_isa_array(list)
            || !cbor_array_is_definite(list))
        {
            proven_errf(err, errlen, "\"migrations\" must be an array of text");
            return PROVEN_ERR;
        }
        batch = list;

    } else if (batch != NULL) {
        if (sr->op != PROVEND_OP_SQL_EXECUTE || !cbor_isa_array(batch)
            || !cbor_array_is_definite(batch)
            || provend_arg(req, "sql") != NULL)
        {
            proven_errf(err, errlen,
                        "\"batch\" is an array of {sql, params?}, for "
                        "sql.execute, instead of \"sql\"");
            return PROVEN_ERR;
        }
    }

    if (batch == NULL) {
        sr->stmts = calloc(1, sizeof(*sr->stmts));
        if (sr->stmts == NULL) {
            proven_errf(err, errlen, "out of memory");
            return PROVEN_ERR;
        }
        sr->nstmts = 1;
        return provend_sql_stmt(provend_arg(req, "sql"),
                                provend_arg(req, "params"), &sr->stmts[0],
                                err, errlen);
    }

    n = cbor_array_size(batch);
    if (n > PROVEND_SQL_BATCH_MAX) {
        proven_errf(err, errlen,
                    "at most %d statements", PROVEND_SQL_BATCH_MAX);
        return PROVEN_ERR;
    }

    if (n == 0) {
        return PROVEN_OK;
    }

    sr->stmts = calloc(n, sizeof(*sr->stmts));
    if (sr->stmts == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }

    items = cbor_array_handle(batch);
    for (i = 0; i < n; i++) {
        sr->nstmts++;

        if (list != NULL) {
            if (provend_sql_stmt(items[i], NULL, &sr->stmts[i], err, errlen)
                != PROVEN_OK)
            {
                return PROVEN_ERR;
            }
            continue;
        }

        if (!cbor_isa_map(items[i])) {
            proven_errf(err, errlen, "batch entries are maps {sql, params?}");
            return PROVEN_ERR;
        }

        if (provend_sql_stmt(proven_cbor_map_get(items[i], "sql"),
                             proven_cbor_map_get(items[i], "params"),
                             &sr->stmts[i], err, errlen) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
    }

    return PROVEN_OK;
}


static int
provend_kv_args(const proven_request_t *req, provend_storage_req_t *sr,
    char *err, size_t errlen)
{
    int           has;
    char         *text;
    size_t        len;
    uint64_t      limit;
    cbor_item_t  *item;

    item = provend_arg(req, "type");
    if (item != NULL) {
        if (provend_arg_text(item, "type", 16, &text, &len, err, errlen)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }

        if (strcmp(text, "bytes") == 0) {
            sr->type = PROVEND_KV_BYTES;
        } else if (strcmp(text, "string") == 0) {
            sr->type = PROVEND_KV_STRING;
        } else if (strcmp(text, "key") == 0) {
            sr->type = PROVEND_KV_KEY;
        } else {
            free(text);
            proven_errf(err, errlen, "\"type\" is string, bytes or key");
            return PROVEN_ERR;
        }
        free(text);
    }

    if (sr->op == PROVEND_OP_KV_SIGN) {
        sr->type = PROVEND_KV_KEY;
    }

    if (sr->op == PROVEND_OP_KV_KEYS) {
        item = provend_arg(req, "prefix");
        if (item != NULL
            && provend_arg_key(item, "prefix", PROVEND_KV_KEY_MAX,
                               &sr->prefix, &sr->prefix_len, err, errlen)
               != PROVEN_OK)
        {
            return PROVEN_ERR;
        }

        if (provend_arg_uint(req, "limit", &has, &limit, err, errlen)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        if (has && (limit == 0 || limit > PROVEND_KV_LIMIT_MAX)) {
            proven_errf(err, errlen,
                        "\"limit\" is 1..%d", PROVEND_KV_LIMIT_MAX);
            return PROVEN_ERR;
        }
        sr->limit = has ? limit : 0;

        item = provend_arg(req, "cursor");
        if (item != NULL
            && provend_arg_text(item, "cursor", PROVEND_CURSOR_MAX,
                                &sr->cursor, &len, err, errlen) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        return PROVEN_OK;
    }

    item = provend_arg(req, "key");
    if (item == NULL) {
        proven_errf(err, errlen, "\"key\" is missing");
        return PROVEN_ERR;
    }

    if (provend_arg_key(item, "key", PROVEND_KV_KEY_MAX, &sr->key,
                        &sr->key_len, err, errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    if (sr->key_len == 0) {
        proven_errf(err, errlen, "\"key\" must not be empty");
        return PROVEN_ERR;
    }

    if (sr->op == PROVEND_OP_KV_SET) {
        item = provend_arg(req, "value");

        if (sr->type == PROVEND_KV_STRING) {
            if (item == NULL || !cbor_isa_string(item)) {
                proven_errf(err, errlen,
                            "a string store takes a text \"value\"");
                return PROVEN_ERR;
            }
            if (proven_cbor_text(item, PROVEN_FRAME_MAX, &text,
                                 &sr->value_len) != PROVEN_OK)
            {
                proven_errf(err, errlen, "\"value\" is too long");
                return PROVEN_ERR;
            }
            sr->value = (uint8_t *) text;

        } else if (item != NULL || sr->type == PROVEND_KV_BYTES) {
            if (item == NULL || !cbor_isa_bytestring(item)) {
                proven_errf(err, errlen, "a %s store takes a bytes \"value\"",
                            sr->type == PROVEND_KV_KEY ? "key"
                            : "bytes");
                return PROVEN_ERR;
            }
            if (proven_cbor_bytes(item, PROVEN_FRAME_MAX, &sr->value,
                                  &sr->value_len) != PROVEN_OK)
            {
                proven_errf(err, errlen, "\"value\" is too long");
                return PROVEN_ERR;
            }
        }
    }

    if (sr->op == PROVEND_OP_KV_SET || sr->op == PROVEND_OP_KV_DELETE) {
        if (provend_arg_uint(req, "if_revision", &sr->has_if_revision,
                             &sr->if_revision, err, errlen) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
    }

    if (sr->op == PROVEND_OP_KV_SIGN) {
        item = provend_arg(req, "message");
        if (item == NULL || !cbor_isa_bytestring(item)) {
            proven_errf(err, errlen, "\"message\" must be bytes");
            return PROVEN_ERR;
        }
        if (proven_cbor_bytes(item, PROVEND_KV_SIGN_MAX, &sr->message,
                              &sr->message_len) != PROVEN_OK)
        {
            proven_errf(err, errlen, "\"message\" is longer than %d bytes",
                        PROVEND_KV_SIGN_MAX);
            return PROVEN_ERR;
        }
    }

    return PROVEN_OK;
}


static int
provend_query_args(const proven_request_t *req, provend_storage_req_t *sr,
    char *err, size_t errlen)
{
    int           has;
    size_t        len;
    uint64_t      limit;
    cbor_item_t  *item;

    if (provend_arg_uint(req, "limit", &has, &limit, err, errlen)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    if (has && (limit == 0 || limit > PROVEND_SQL_LIMIT_MAX)) {
        proven_errf(err, errlen, "\"limit\" is 1..%d", PROVEND_SQL_LIMIT_MAX);
        return PROVEN_ERR;
    }
    sr->limit = has ? limit : 0;

    item = provend_arg(req, "cursor");
    if (item != NULL
        && provend_arg_text(item, "cursor", 32, &sr->cursor, &len, err,
                            errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


static int
provend_ops_parse(const proven_request_t *req, provend_storage_req_t *sr,
    char *err, size_t errlen)
{
    int  has;

    if (provend_scope_parse(proven_cbor_map_get(req->map, "scope"),
                            &sr->scope, err, errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    /* a read after a write elsewhere in a cluster: its "log_seq" */
    if (sr->op == PROVEND_OP_KV_GET || sr->op == PROVEND_OP_KV_KEYS
        || sr->op == PROVEND_OP_KV_SIGN || sr->op == PROVEND_OP_SQL_QUERY)
    {
        if (provend_arg_uint(req, "after", &has, &sr->after, err, errlen)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
    } else if (provend_arg(req, "after") != NULL) {
        proven_errf(err, errlen, "\"after\" is for reads");
        return PROVEN_ERR;
    }

    switch (sr->op) {

    case PROVEND_OP_SQL_EXECUTE:
    case PROVEND_OP_SQL_MIGRATE:
        return provend_arg_name(req, "db", sr->name, err, errlen)
               || provend_sql_args(req, sr, err, errlen);

    case PROVEND_OP_SQL_QUERY:
        if (provend_arg(req, "batch") != NULL) {
            proven_errf(err, errlen, "sql.query takes one \"sql\"");
            return PROVEN_ERR;
        }
        return provend_arg_name(req, "db", sr->name, err, errlen)
               || provend_sql_args(req, sr, err, errlen)
               || provend_query_args(req, sr, err, errlen);

    default:
        return provend_arg_name(req, "store", sr->name, err, errlen)
               || provend_kv_args(req, sr, err, errlen);
    }
}


/* ---- answers ------------------------------------------------------------- */

/*
 * {"id", "ok": true, "result": {"revision": n} or {"deleted": bool}}, and
 * in a cluster "log_seq": the write's place in the log.
 */
static void
provend_ops_write_answer(provend_ops_job_t *job, provend_storage_req_t *sr)
{
    proven_frame_builder_t  b;

    proven_frame_builder_init(&b, 64, 0);
    proven_frame_put_ok(&b, job->id);
    proven_frame_put_head(&b, PROVEN_CBOR_MAP, sr->log_seq != 0 ? 2 : 1);

    if (sr->log_seq != 0) {
        proven_frame_put_text(&b, "log_seq");
        proven_frame_put_uint(&b, sr->log_seq);
    }

    if (sr->op == PROVEND_OP_KV_SET) {
        proven_frame_put_text(&b, "revision");
        proven_frame_put_uint(&b, sr->revision);

    } else {
        proven_frame_put_text(&b, "deleted");
        proven_frame_put_bool(&b, sr->existed);
    }

    if (proven_frame_builder_finish(&b, &job->frame, &job->frame_len)
        != PROVEN_OK)
    {
        job->frame = NULL;
    }
}


/* The backend's thread (or ours for early errors): frame the answer. */
static void
provend_ops_done(provend_storage_req_t *sr)
{
    provend_ops_job_t      *job;
    provend_ops_storage_t  *ops;

    job = sr->data;
    ops = job->ops;

    if (sr->status == PROVEND_ST_OK && sr->result == NULL
        && (sr->op == PROVEND_OP_KV_SET || sr->op == PROVEND_OP_KV_DELETE))
    {
        provend_ops_write_answer(job, sr);

    } else if (sr->status == PROVEND_ST_OK) {
        if (proven_response_encode_ok(job->id, sr->result, &job->frame,
                                      &job->frame_len) != PROVEN_OK)
        {
            job->frame = NULL;
        }
    } else {
        if (sr->status == PROVEND_ST_STORAGE_ERROR
            || sr->status == PROVEND_ST_INTERNAL)
        {
            provend_error("request %llu: %s: %s",
                          (unsigned long long) job->id,
                          provend_storage_status_name(sr->status),
                          sr->error);
        } else {
            provend_debug("request %llu: %s: %s",
                          (unsigned long long) job->id,
                          provend_storage_status_name(sr->status),
                          sr->error);
        }

        if (proven_response_encode_error(job->id,
                                         provend_storage_status_name(
                                             sr->status),
                                         sr->error, &job->frame,
                                         &job->frame_len) != PROVEN_OK)
        {
            job->frame = NULL;
        }
    }

    /*
     * The result was built on this thread and is freed here; the request
     * itself (its buffers allocated by the loop) goes back to the loop, so
     * that neither thread frees into the other's malloc arena.
     */
    if (sr->result != NULL) {
        cbor_decref(&sr->result);
    }
    job->sr = sr;

    /* Answered inside submit, on the loop (KV reads): no hand-off. */
    if (pthread_equal(pthread_self(), ops->loop_thread)) {
        ops->inflight--;
        job->reply(job->ctx, job->frame, job->frame_len);
        provend_storage_req_free(sr);
        return;
    }

    /*
     * The signal goes out before the lock is released: the loop can only
     * take this job (and so see inflight reach 0, close the handle and free
     * ops) after the unlock, and this thread touches ops no more after it.
     */
    pthread_mutex_lock(&ops->lock);
    *ops->tail = job;
    ops->tail = &job->next;
    uv_async_send(&ops->async);
    pthread_mutex_unlock(&ops->lock);
}


static void
provend_ops_close(provend_ops_storage_t *ops)
{
    ops->closed = 1;
    uv_close((uv_handle_t *) &ops->async, NULL);
    uv_close((uv_handle_t *) &ops->prepare, NULL);
}


static void
provend_ops_on_async(uv_async_t *async)
{
    provend_ops_job_t      *job, *next;
    provend_ops_storage_t  *ops;

    ops = async->data;

    pthread_mutex_lock(&ops->lock);
    job = ops->head;
    ops->head = NULL;
    ops->tail = &ops->head;
    pthread_mutex_unlock(&ops->lock);

    for ( ; job != NULL; job = next) {
        next = job->next;
        ops->inflight--;
        job->reply(job->ctx, job->frame, job->frame_len);
        provend_storage_req_free(job->sr);      /* and job with it */
    }

    if (ops->stopping && ops->inflight == 0 && !ops->closed) {
        provend_ops_close(ops);
    }
}


/* Just before the loop waits: everything parsed this turn, at once. */
static void
provend_ops_on_prepare(uv_prepare_t *prepare)
{
    provend_ops_job_t      *job, *next;
    provend_ops_storage_t  *ops;

    ops = prepare->data;

    if (ops->queued == NULL) {
        return;
    }

    provend_storage_hold(ops->st);

    /*
     * An answer given inside submit (on this thread) can let its
     * connection parse more input, which queues more: taken too, since the
     * loop may next wait with no timeout.
     */
    while ((job = ops->queued) != NULL) {
        ops->queued = NULL;
        ops->queued_tail = &ops->queued;

        /* An early error answers inside submit and reuses job->next. */
        for ( ; job != NULL; job = next) {
            next = job->next;
            job->next = NULL;
            provend_storage_submit(ops->st, job->sr);
        }
    }

    provend_storage_release(ops->st);

    if (ops->stopping && ops->inflight == 0 && !ops->closed) {
        provend_ops_close(ops);
    }
}





static void
provend_ops_on_close_free(uv_handle_t *handle)
{
    free(handle->data);
}


static provend_storage_req_t *
provend_ops_slot_new(provend_storage_op_t op, provend_ops_job_t **job)
{
    provend_ops_slot_t  *slot;

    slot = calloc(1, sizeof(*slot));
    if (slot == NULL) {
        return NULL;
    }

    provend_storage_req_init(&slot->sr, op);
    *job = &slot->job;
    return &slot->sr;
}


/* Queues a parsed request for the next submit (the prepare handle). */
static void
provend_ops_enqueue(provend_ops_storage_t *ops, provend_ops_job_t *job,
    provend_storage_req_t *sr, uint64_t id, provend_ops_reply_pt reply,
    void *ctx)
{
    job->ops = ops;
    job->reply = reply;
    job->ctx = ctx;
    job->id = id;
    job->sr = sr;
    sr->data = job;
    sr->done = provend_ops_done;

    ops->inflight++;
    *ops->queued_tail = job;
    ops->queued_tail = &job->next;
}


/* ---- kv.get and kv.set without trees ------------------------------------- */

/*
 * The hottest ops, read in place by provend_kv_plain_parse(): no libcbor
 * tree for the request, and a kv.get answered straight into its frame
 * without a request object.  Anything else, errors included, goes the
 * general way, which says what is wrong.
 */

/* A kv.get's answer, written while the value cannot change. */
typedef struct {
    uint64_t           id;
    provend_kv_type_t  type;
    uint8_t           *frame;
    size_t             frame_len;
} provend_fast_get_t;


/* {"id", "ok": true, "result": {"value", "revision"}}, as the general way. */
static void
provend_fast_get_answer(void *data, const uint8_t *value, size_t len,
    uint64_t revision)
{
    provend_fast_get_t      *fg;
    proven_frame_builder_t   b;

    fg = data;

    proven_frame_builder_init(&b, 48 + len, 0);
    proven_frame_put_ok(&b, fg->id);
    proven_frame_put_head(&b, PROVEN_CBOR_MAP, 2);
    proven_frame_put_text(&b, "value");

    if (value == NULL) {
        proven_frame_put_null(&b);

    } else {
        proven_frame_put_string(&b, fg->type == PROVEND_KV_STRING
                                    ? PROVEN_CBOR_TEXT : PROVEN_CBOR_BYTES,
                                value, len);
    }

    proven_frame_put_text(&b, "revision");
    proven_frame_put_uint(&b, revision);

    if (proven_frame_builder_finish(&b, &fg->frame, &fg->frame_len)
        != PROVEN_OK)
    {
        fg->frame = NULL;
    }
}


/* kv.set from the fields read: owned copies in a request, queued. */
static int
provend_fast_set(provend_ops_storage_t *ops, const provend_kv_plain_t *f,
    provend_ops_reply_pt reply, void *ctx)
{
    provend_ops_job_t      *job;
    provend_storage_req_t  *sr;

    sr = provend_ops_slot_new(PROVEND_OP_KV_SET, &job);
    if (sr == NULL) {
        return 0;
    }

    sr->key = malloc(f->key_len);
    sr->value = malloc(f->value_len ? f->value_len : 1);
    if (sr->key == NULL || sr->value == NULL) {
        goto failed;
    }

    sr->scope = f->scope;
    memcpy(sr->name, f->store, sizeof(sr->name));
    sr->type = f->type;
    memcpy(sr->key, f->key, f->key_len);
    sr->key_len = f->key_len;
    if (f->value_len) {
        memcpy(sr->value, f->value, f->value_len);
    }
    sr->value_len = f->value_len;
    sr->has_if_revision = f->has_if_revision;
    sr->if_revision = f->if_revision;

    provend_ops_enqueue(ops, job, sr, f->id, reply, ctx);
    return 1;

failed:

    provend_storage_req_free(sr);
    return 0;       /* the general way reports the lack of memory */
}


int
provend_ops_storage_fast(provend_ops_storage_t *ops, const uint8_t *body,
    size_t len, provend_ops_reply_pt reply, void *ctx)
{
    provend_kv_plain_t  f;
    provend_fast_get_t  fg;

    if (ops->closed || ops->st->kv_peek == NULL
        || provend_kv_plain_parse(body, len, &f) != PROVEN_OK)
    {
        return 0;
    }

    if (f.set) {
        return provend_fast_set(ops, &f, reply, ctx);
    }

    fg.id = f.id;
    fg.type = f.type;
    fg.frame = NULL;

    if (ops->st->kv_peek(ops->st, &f.scope, f.store, f.type, f.key,
                         f.key_len, provend_fast_get_answer, &fg)
        != PROVEN_OK || fg.frame == NULL)
    {
        return 0;
    }

    reply(ctx, fg.frame, fg.frame_len);
    return 1;
}


/* ---- the interface ------------------------------------------------------- */

/* Parses req's arguments, answers through reply exactly once. */
static void
provend_ops_storage_op(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    char                    err[PROVEN_ERR_LEN];
    provend_ops_job_t      *job;
    provend_storage_req_t  *sr;
    provend_ops_storage_t  *ops;

    ops = subsystem;

    if (ops->closed) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "storage is not available");
        return;
    }

    sr = provend_ops_slot_new((provend_storage_op_t) op->arg, &job);
    if (sr == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }

    err[0] = '\0';
    if (provend_ops_parse(req, sr, err, sizeof(err)) != PROVEN_OK) {
        provend_info("request %llu: %s refused: %s",
                     (unsigned long long) req->id, req->op, err);
        provend_storage_req_free(sr);
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", err);
        return;
    }

    provend_ops_enqueue(ops, job, sr, req->id, reply, ctx);
}


provend_ops_storage_t *
provend_ops_storage_new(void *uv_loop, provend_storage_t *st, char *err,
    size_t errlen)
{
    provend_ops_storage_t  *ops;

    ops = calloc(1, sizeof(*ops));
    if (ops == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }

    if (uv_async_init(uv_loop, &ops->async, provend_ops_on_async) != 0) {
        free(ops);
        proven_errf(err, errlen, "cannot set up the storage answers");
        return NULL;
    }

    if (uv_prepare_init(uv_loop, &ops->prepare) != 0
        || uv_prepare_start(&ops->prepare, provend_ops_on_prepare) != 0)
    {
        /* The async is registered: ops is freed once it has closed. */
        ops->async.data = ops;
        uv_close((uv_handle_t *) &ops->async, provend_ops_on_close_free);
        proven_errf(err, errlen, "cannot set up the storage requests");
        return NULL;
    }

    pthread_mutex_init(&ops->lock, NULL);
    ops->loop_thread = pthread_self();
    ops->async.data = ops;
    ops->prepare.data = ops;
    ops->st = st;
    ops->tail = &ops->head;
    ops->queued_tail = &ops->queued;
    return ops;
}


void
provend_ops_storage_stop(provend_ops_storage_t *ops)
{
    ops->stopping = 1;

    if (ops->inflight == 0 && !ops->closed) {
        provend_ops_close(ops);
    }
}


void
provend_ops_storage_free(provend_ops_storage_t *ops)
{
    if (ops == NULL) {
        return;
    }

    pthread_mutex_destroy(&ops->lock);
    free(ops);
}
