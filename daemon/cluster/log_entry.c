/*
 * The replicated log's entries: their bytes (sealed under the cluster
 * key) and the writes waiting for theirs to be applied.
 */

#include "log_int.h"


typedef struct {
    const uint8_t  *p;
    size_t          len;
    int             failed;
} provend_rbuf_t;


static void
provend_w(provend_wbuf_t *w, const void *data, size_t len)
{
    size_t    cap;
    uint8_t  *p;

    if (w->failed || len == 0) {
        return;                 /* data may be NULL when len is 0 */
    }
    if (w->len + len > PROVEND_LOG_ENTRY_MAX) {
        w->failed = 1;
        w->too_large = 1;
        return;
    }
    if (w->len + len > w->cap) {
        cap = w->cap ? w->cap : 1024;
        while (cap < w->len + len) {
            cap *= 2;
        }
        p = realloc(w->p, cap);
        if (p == NULL) {
            w->failed = 1;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    memcpy(w->p + w->len, data, len);
    w->len += len;
}


static void
provend_w_u64(provend_wbuf_t *w, uint64_t v)
{
    uint8_t  b[8];

    proven_put_be64(b, v);
    provend_w(w, b, 8);
}


static void
provend_w_u8(provend_wbuf_t *w, unsigned v)
{
    uint8_t  b = (uint8_t) v;

    provend_w(w, &b, 1);
}


/* A length (u32) and the bytes. */
static void
provend_w_bytes(provend_wbuf_t *w, const void *data, size_t len)
{
    uint8_t  b[4];

    proven_put_be32(b, (uint32_t) len);
    provend_w(w, b, 4);
    provend_w(w, data, len);
}


static const uint8_t *
provend_r(provend_rbuf_t *r, size_t len)
{
    const uint8_t  *p;

    if (r->failed || r->len < len) {
        r->failed = 1;
        return NULL;
    }
    p = r->p;
    r->p += len;
    r->len -= len;
    return p;
}


static uint64_t
provend_r_u64(provend_rbuf_t *r)
{
    const uint8_t  *p;

    p = provend_r(r, 8);
    return p != NULL ? proven_get_be64(p) : 0;
}


static unsigned
provend_r_u8(provend_rbuf_t *r)
{
    const uint8_t  *p;

    p = provend_r(r, 1);
    return p != NULL ? *p : 0;
}


/* Bytes of at most max, in place; *len set. */
static const uint8_t *
provend_r_bytes(provend_rbuf_t *r, size_t max, size_t *len)
{
    const uint8_t  *p;

    p = provend_r(r, 4);
    if (p == NULL) {
        return NULL;
    }
    *len = proven_get_be32(p);
    if (*len > max) {
        r->failed = 1;
        return NULL;
    }
    return provend_r(r, *len);
}


/* A text field into out (max + 1 bytes). */
static void
provend_r_text(provend_rbuf_t *r, char *out, size_t max)
{
    size_t          len;
    const uint8_t  *p;

    p = provend_r_bytes(r, max, &len);
    if (p == NULL || memchr(p, '\0', len) != NULL) {
        r->failed = 1;
        out[0] = '\0';
        return;
    }
    memcpy(out, p, len);
    out[len] = '\0';
}


/* An owned copy with a NUL added (as the backends expect). */
static uint8_t *
provend_r_copy(provend_rbuf_t *r, size_t max, size_t *len)
{
    uint8_t        *out;
    const uint8_t  *p;

    p = provend_r_bytes(r, max, len);
    if (p == NULL) {
        return NULL;
    }
    out = malloc(*len + 1);
    if (out == NULL) {
        r->failed = 1;
        return NULL;
    }
    memcpy(out, p, *len);
    out[*len] = '\0';
    return out;
}


#define PROVEND_LOG_HAS_IF     1


#define PROVEND_LOG_HAS_VALUE  2


#define PROVEND_LOG_HAS_KEY    4


void
provend_log_encode(provend_wbuf_t *w, const provend_storage_req_t *req,
    const uint8_t *id, int64_t time_ms)
{
    size_t                     i, j;
    uint64_t                   bits;
    const provend_scope_t     *sc;
    const provend_sql_stmt_t  *s;

    sc = &req->scope;
    provend_w_u8(w, PROVEND_LOG_VERSION);
    provend_w_u8(w, req->op);
    provend_w_u8(w, req->type);
    provend_w_u8(w, sc->kind);
    provend_w(w, id, PROVEND_LOG_ID_LEN);
    provend_w_u64(w, (uint64_t) time_ms);
    provend_w_bytes(w, sc->app, strlen(sc->app));
    provend_w_bytes(w, sc->identity, strlen(sc->identity));
    provend_w_bytes(w, sc->chain, strlen(sc->chain));
    provend_w_bytes(w, sc->contract, strlen(sc->contract));
    provend_w_bytes(w, sc->token, strlen(sc->token));
    provend_w_bytes(w, req->name, strlen(req->name));

    provend_w_u8(w, (req->has_if_revision ? PROVEND_LOG_HAS_IF : 0)
                    | (req->value != NULL ? PROVEND_LOG_HAS_VALUE : 0)
                    | (req->key != NULL ? PROVEND_LOG_HAS_KEY : 0));
    provend_w_u64(w, req->if_revision);
    provend_w_bytes(w, req->key, req->key != NULL ? req->key_len : 0);
    provend_w_bytes(w, req->value, req->value != NULL ? req->value_len : 0);

    provend_w_u64(w, req->nstmts);
    for (i = 0; i < req->nstmts; i++) {
        s = &req->stmts[i];
        provend_w_bytes(w, s->sql, s->sql_len);
        provend_w_u64(w, s->nparams);
        for (j = 0; j < s->nparams; j++) {
            provend_w_u8(w, s->params[j].type);
            memcpy(&bits, &s->params[j].f, sizeof(bits));
            provend_w_u64(w, s->params[j].type == PROVEND_SQL_REAL
                             ? bits : (uint64_t) s->params[j].i);
            provend_w_bytes(w, s->params[j].data,
                            s->params[j].data != NULL ? s->params[j].len : 0);
        }
    }
}


/* The request an entry describes; NULL when it is not one. */
provend_storage_req_t *
provend_log_decode(const uint8_t *data, size_t len, uint8_t *id)
{
    size_t                  i, j, n;
    uint64_t                v;
    unsigned                op, flags;
    const uint8_t          *p;
    provend_rbuf_t          r;
    provend_sql_stmt_t     *s;
    provend_storage_req_t  *req;

    r.p = data;
    r.len = len;
    r.failed = 0;

    if (provend_r_u8(&r) != PROVEND_LOG_VERSION) {
        return NULL;
    }
    op = provend_r_u8(&r);
    if (op != PROVEND_OP_KV_SET && op != PROVEND_OP_KV_DELETE
        && op != PROVEND_OP_SQL_EXECUTE && op != PROVEND_OP_SQL_MIGRATE)
    {
        return NULL;
    }
    req = provend_storage_req_new((provend_storage_op_t) op);
    if (req == NULL) {
        return NULL;
    }
    req->type = (provend_kv_type_t) provend_r_u8(&r);
    req->scope.kind = (provend_scope_kind_t) provend_r_u8(&r);
    if (req->type > PROVEND_KV_KEY || req->scope.kind > PROVEND_SCOPE_NFT) {
        r.failed = 1;
    }
    p = provend_r(&r, PROVEND_LOG_ID_LEN);
    if (p != NULL) {
        memcpy(id, p, PROVEND_LOG_ID_LEN);
    }
    req->log_time_ms = (int64_t) provend_r_u64(&r);
    provend_r_text(&r, req->scope.app, PROVEND_NAME_MAX);
    provend_r_text(&r, req->scope.identity, PROVEND_IDENTITY_MAX);
    provend_r_text(&r, req->scope.chain, PROVEND_CHAIN_MAX);
    provend_r_text(&r, req->scope.contract, PROVEND_CONTRACT_MAX);
    provend_r_text(&r, req->scope.token, PROVEND_TOKEN_MAX);
    provend_r_text(&r, req->name, PROVEND_NAME_MAX);

    flags = provend_r_u8(&r);
    req->has_if_revision = (flags & PROVEND_LOG_HAS_IF) != 0;
    req->if_revision = provend_r_u64(&r);
    req->key = provend_r_copy(&r, PROVEND_KV_KEY_MAX, &req->key_len);
    if (!(flags & PROVEND_LOG_HAS_KEY) && req->key != NULL) {
        free(req->key);
        req->key = NULL;
        req->key_len = 0;
    }
    req->value = provend_r_copy(&r, PROVEND_LOG_ENTRY_MAX, &req->value_len);
    if (!(flags & PROVEND_LOG_HAS_VALUE) && req->value != NULL) {
        free(req->value);
        req->value = NULL;
        req->value_len = 0;
    }

    n = provend_r_u64(&r);
    if (!r.failed && n > 0) {
        if (n > PROVEND_SQL_BATCH_MAX) {
            r.failed = 1;
        } else {
            req->stmts = calloc(n, sizeof(*req->stmts));
            req->nstmts = req->stmts != NULL ? n : 0;
            r.failed |= req->stmts == NULL;
        }
    }
    for (i = 0; i < req->nstmts && !r.failed; i++) {
        s = &req->stmts[i];
        s->sql = (char *) provend_r_copy(&r, PROVEND_SQL_TEXT_MAX,
                                         &s->sql_len);
        n = provend_r_u64(&r);
        if (r.failed || n > PROVEND_SQL_PARAMS_MAX) {
            r.failed = 1;
            break;
        }
        if (n > 0) {
            s->params = calloc(n, sizeof(*s->params));
            s->nparams = s->params != NULL ? n : 0;
            r.failed |= s->params == NULL;
        }
        for (j = 0; j < s->nparams && !r.failed; j++) {
            s->params[j].type = (provend_sql_type_t) provend_r_u8(&r);
            v = provend_r_u64(&r);
            if (s->params[j].type == PROVEND_SQL_REAL) {
                memcpy(&s->params[j].f, &v, sizeof(v));
            } else {
                s->params[j].i = (int64_t) v;
            }
            s->params[j].data = provend_r_copy(&r, PROVEND_LOG_ENTRY_MAX,
                                               &s->params[j].len);
            if (s->params[j].type != PROVEND_SQL_TEXT
                && s->params[j].type != PROVEND_SQL_BLOB)
            {
                free(s->params[j].data);
                s->params[j].data = NULL;
                s->params[j].len = 0;
            }
            if (s->params[j].type > PROVEND_SQL_BLOB) {
                r.failed = 1;
            }
        }
    }

    /* what each op needs: no node may fill in what the writer left out */
    if (op == PROVEND_OP_KV_SET || op == PROVEND_OP_KV_DELETE) {
        r.failed |= req->key == NULL || req->nstmts != 0
                    || (op == PROVEND_OP_KV_SET && req->value == NULL);
    } else {
        r.failed |= req->nstmts == 0 || req->key != NULL
                    || req->value != NULL;
    }

    if (r.failed || r.len != 0 || req->scope.app[0] == '\0') {
        provend_storage_req_free(req);
        return NULL;
    }
    return req;
}


/* ---- waiting writes ----------------------------------------------------- */

static size_t
provend_cwait_bucket(const uint8_t *id)
{
    /* the counter's low bytes: consecutive writes spread */
    return ((size_t) id[14] << 8 | id[15]) % PROVEND_WAITERS_BUCKETS;
}


/* Takes the waiter with id out of the table (under the lock). */
provend_cwait_t *
provend_cwait_take(provend_cstore_t *cs, const uint8_t *id)
{
    provend_cwait_t  **pp, *w;

    for (pp = &cs->waiters[provend_cwait_bucket(id)]; *pp != NULL;
         pp = &(*pp)->next)
    {
        w = *pp;
        if (memcmp(w->id, id, PROVEND_LOG_ID_LEN) == 0) {
            *pp = w->next;
            cs->nwaiters--;
            return w;
        }
    }
    return NULL;
}


void
provend_cwait_free(provend_cwait_t *w)
{
    natsMsg_Destroy(w->retry);
    free(w);
}


void
provend_cwait_answer(provend_cwait_t *w, provend_storage_status_t status,
    const char *message)
{
    provend_storage_req_fail(w->req, status, "%s", message);
    w->req->done(w->req);
    provend_cwait_free(w);
}


void
provend_cwait_put(provend_cstore_t *cs, provend_cwait_t *w)
{
    size_t  b;

    b = provend_cwait_bucket(w->id);
    w->next = cs->waiters[b];
    cs->waiters[b] = w;
    cs->nwaiters++;
}


/* Writes whose answer has waited too long: told so (the lock not held). */
/*
 * Writes whose answer has waited too long are told so; publishes refused
 * (no stream leader while one is elected) are sent again.
 */
void
provend_cwait_sweep(provend_cstore_t *cs)
{
    size_t            i, nagain;
    uint64_t          now;
    natsMsg          *again[64];
    provend_storage_req_t  *parked;
    uint8_t           again_id[64][PROVEND_LOG_ID_LEN];
    provend_cwait_t  *late, **pp, *w;

    now = provend_now_ms();
    late = NULL;
    nagain = 0;
    pthread_mutex_lock(&cs->lock);
    for (i = 0; i < PROVEND_WAITERS_BUCKETS; i++) {
        pp = &cs->waiters[i];
        while ((w = *pp) != NULL) {
            if (w->deadline_ms <= now || cs->stopping) {
                *pp = w->next;
                cs->nwaiters--;
                w->next = late;
                late = w;
                continue;
            }
            if (w->retry != NULL && w->retry_ms <= now
                && nagain < sizeof(again) / sizeof(again[0]))
            {
                again[nagain] = w->retry;
                memcpy(again_id[nagain++], w->id, PROVEND_LOG_ID_LEN);
                w->retry = NULL;
            }
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&cs->lock);

    pthread_mutex_lock(&cs->lock);
    parked = cs->parked != NULL ? provend_cstore_unpark(cs, cs->stopping)
                                : NULL;
    pthread_mutex_unlock(&cs->lock);
    provend_cstore_release_parked(cs, parked);
    provend_cstore_release_catching(cs);

    /* the same id: stored once however often it is sent */
    for (i = 0; i < nagain; i++) {
        if (provend_cstore_publish(cs, &again[i], again_id[i]) != NATS_OK) {
            natsMsg_Destroy(again[i]);   /* the deadline answers it */
        }
    }

    while ((w = late) != NULL) {
        late = w->next;
        provend_cwait_answer(w, PROVEND_ST_TIMEOUT,
                             cs->stopping
                             ? "provend is stopping; the write may still be "
                               "applied by the cluster"
                             : "the cluster did not apply this write in "
                               "time; it may still be applied");
    }
}
