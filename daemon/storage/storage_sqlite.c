/*
 * The embedded storage backend: its thread and the storage interface
 * over the KV log and SQLite (see sql_int.h).
 */

#include "sql_int.h"


/* ---- the storage thread -------------------------------------------------- */

static int
provend_req_writes(const provend_storage_req_t *req)
{
    return req->op == PROVEND_OP_SQL_EXECUTE
           || req->op == PROVEND_OP_SQL_MIGRATE;
}


static void
provend_sqlite_run(provend_sqlite_t *sq, provend_storage_req_t *req)
{
    /* 'now' of a replayed write is its writer's, on every node */
    provend_vfs_fix_time(sq->deterministic ? req->log_time_ms : 0);

    /*
     * And SQLite's random numbers (a DEFAULT (randomblob(16)), a rowid
     * past the largest) the same sequence on every node for this entry.
     */
    if (sq->deterministic && req->log_time_ms != 0) {
        sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED,
                             (int) (req->log_time_ms & 0x7fffffff), NULL);
    }

    switch (req->op) {
    case PROVEND_OP_SQL_EXECUTE:  provend_sql_do_execute(sq, req); break;
    case PROVEND_OP_SQL_QUERY:    provend_sql_do_query(sq, req); break;
    case PROVEND_OP_SQL_MIGRATE:  provend_sql_do_migrate(sq, req); break;
    default:
        provend_storage_req_fail(req, PROVEND_ST_INTERNAL,
                                 "not an SQL operation");
        break;
    }
}


static void
provend_sqldb_commit(provend_sqldb_t *d)
{
    char  err[PROVEN_ERR_LEN];

    if (!d->in_txn) {
        return;
    }

    if (!d->txn_failed
        && provend_sqldb_exec(d, "COMMIT", err, sizeof(err)) != PROVEN_OK)
    {
        provend_error("storage: %s", err);
        d->txn_failed = 1;
    }

    if (d->txn_failed && !sqlite3_get_autocommit(d->db)) {
        (void) provend_sqldb_exec(d, "ROLLBACK", err, sizeof(err));
    }
}


/* The database whose open transaction is gen; NULL if none. */
static provend_sqldb_t *
provend_sqlite_txn(provend_sqlite_t *sq, uintptr_t gen)
{
    size_t  i;

    for (i = 0; i < PROVEND_SQL_OPEN_MAX; i++) {
        if (sq->dbs[i].in_txn && sq->dbs[i].txn_gen == gen) {
            return &sq->dbs[i];
        }
    }

    return NULL;
}


static void
provend_sqldb_reset_txn(provend_sqldb_t *d)
{
    d->in_txn = 0;
    d->txn_failed = 0;
    d->txn_blamed = 0;
    d->txn_gen = 0;
}


/*
 * Whether req made SQLite roll back the transaction it used (a timeout,
 * RAISE(ROLLBACK), INSERT OR ROLLBACK, out of memory...): the first
 * request after which the transaction is found gone is the culprit.
 */
static provend_sqldb_t *
provend_sqlite_culprit(provend_sqlite_t *sq, provend_storage_req_t *req)
{
    provend_sqldb_t  *d;

    if (req->priv == NULL) {
        return NULL;
    }

    d = provend_sqlite_txn(sq, (uintptr_t) req->priv);
    if (d == NULL || d->txn_blamed) {
        return NULL;
    }

    provend_sqldb_check_txn(d);
    if (!d->txn_failed) {
        return NULL;
    }

    d->txn_blamed = 1;
    if (req->status == PROVEND_ST_OK) {
        if (req->result != NULL) {
            cbor_decref(&req->result);
        }
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                 "the transaction was rolled back");
    }

    return d;
}


/*
 * After req rolled back d's transaction: takes the other requests of that
 * transaction out of *deferred (keeping their order), clears their answers
 * and returns them to be run again, in a new transaction.
 */
static provend_storage_req_t *
provend_sqlite_rerun(provend_sqldb_t *d, provend_storage_req_t **deferred,
    provend_storage_req_t ***tail)
{
    char                    err[PROVEN_ERR_LEN];
    uintptr_t               gen;
    provend_storage_req_t  *again, **again_tail, **link, *r;

    gen = d->txn_gen;
    again = NULL;
    again_tail = &again;

    for (link = deferred; *link != NULL; ) {
        r = *link;
        if ((uintptr_t) r->priv != gen) {
            link = &r->next;
            continue;
        }

        *link = r->next;
        r->next = NULL;
        r->priv = NULL;
        r->status = PROVEND_ST_OK;
        r->error[0] = '\0';
        if (r->result != NULL) {
            cbor_decref(&r->result);
        }
        *again_tail = r;
        again_tail = &r->next;
    }

    *tail = link;

    if (!sqlite3_get_autocommit(d->db)) {
        (void) provend_sqldb_exec(d, "ROLLBACK", err, sizeof(err));
    }
    provend_sqldb_reset_txn(d);

    return again;
}


/* Commits every open transaction, then answers what waited for it. */
static void
provend_sqlite_flush(provend_sqlite_t *sq, provend_storage_req_t *deferred)
{
    size_t                  i;
    provend_sqldb_t        *d;
    provend_storage_req_t  *req, *next;

    for (i = 0; i < PROVEND_SQL_OPEN_MAX; i++) {
        provend_sqldb_commit(&sq->dbs[i]);
    }

    for (req = deferred; req != NULL; req = next) {
        next = req->next;
        req->next = NULL;

        if (req->priv != NULL && req->status == PROVEND_ST_OK) {
            d = provend_sqlite_txn(sq, (uintptr_t) req->priv);

            /* Not found cannot happen; if it did, the outcome is unknown. */
            if (d == NULL || d->txn_failed) {
                provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                         req->op == PROVEND_OP_SQL_QUERY
                                         ? "the read saw writes that could "
                                           "not be stored"
                                         : "the write could not be stored");
            }
        }

        req->priv = NULL;
        req->done(req);
    }

    for (i = 0; i < PROVEND_SQL_OPEN_MAX; i++) {
        provend_sqldb_reset_txn(&sq->dbs[i]);
    }
}


/*
 * Answers the reads held for the end of the batch; called before anything
 * else is answered too, so answers leave in the order requests came.
 */
static void
provend_sqlite_answer(provend_storage_req_t **answered,
    provend_storage_req_t ***answered_tail)
{
    provend_storage_req_t  *req, *next;

    for (req = *answered; req != NULL; req = next) {
        next = req->next;
        req->next = NULL;
        req->done(req);
    }

    *answered = NULL;
    *answered_tail = answered;
}


static void
provend_sqlite_batch(provend_sqlite_t *sq, provend_storage_req_t *batch)
{
    int                     wrote, reruns;
    size_t                  i, open_txns;
    provend_sqldb_t        *d;
    provend_storage_req_t  *req, *next, *deferred, **tail, *again, *last;
    provend_storage_req_t  *answered, **answered_tail;

    wrote = 0;
    reruns = 0;
    deferred = NULL;
    tail = &deferred;
    answered = NULL;
    answered_tail = &answered;

    for (req = batch; req != NULL; req = next) {
        next = req->next;
        req->next = NULL;
        req->priv = NULL;

        /* Every slot in a transaction: commit what we have first. */
        if (req->op >= PROVEND_OP_SQL_EXECUTE) {
            open_txns = 0;
            for (i = 0; i < PROVEND_SQL_OPEN_MAX; i++) {
                open_txns += sq->dbs[i].in_txn;
            }
            if (open_txns == PROVEND_SQL_OPEN_MAX) {
                provend_sqlite_answer(&answered, &answered_tail);
                provend_sqlite_flush(sq, deferred);
                deferred = NULL;
                tail = &deferred;
                wrote = 0;
            }
        }

        provend_sqlite_run(sq, req);

        /*
         * The others of a transaction req rolled back did nothing wrong:
         * they run again before what follows, in a new transaction.  A
         * bounded number of times, so that hostile SQL cannot make the
         * thread redo everything once per statement.
         */
        d = provend_sqlite_culprit(sq, req);
        if (d != NULL && reruns < PROVEND_RERUN_ROUNDS) {
            reruns++;
            again = provend_sqlite_rerun(d, &deferred, &tail);

            provend_sqlite_answer(&answered, &answered_tail);
            req->priv = NULL;
            req->done(req);

            if (again != NULL) {
                for (last = again; last->next != NULL; last = last->next) {
                    /* the end of the list */
                }
                last->next = next;
                next = again;
            }
            continue;
        }

        if (provend_req_writes(req)) {
            wrote = 1;
        }

        /*
         * Answered together once the batch has run, before its commit:
         * the caller's thread is woken once for all of them, not once
         * per answer.
         */
        if (!wrote) {
            req->priv = NULL;
            *answered_tail = req;
            answered_tail = &req->next;
            continue;
        }

        /* Answered after the commit: it may have seen uncommitted data. */
        *tail = req;
        tail = &req->next;
    }

    provend_sqlite_answer(&answered, &answered_tail);

    provend_sqlite_flush(sq, deferred);
}


static void *
provend_sqlite_thread(void *arg)
{
    provend_sqlite_t       *sq;
    provend_storage_req_t  *batch;

    sq = arg;

    for ( ;; ) {
        pthread_mutex_lock(&sq->lock);
        sq->busy = 0;
        pthread_cond_broadcast(&sq->cond);      /* a pause waits for it */
        while ((sq->head == NULL || sq->held || sq->paused)
               && !sq->stopping)
        {
            pthread_cond_wait(&sq->cond, &sq->lock);
        }
        batch = sq->head;
        sq->busy = batch != NULL;
        if (sq->deterministic && batch != NULL) {
            /*
             * One write per transaction: what a rollback of a batch's
             * transaction does to the other writes in it would depend on
             * how this node's queue happened to fill.
             */
            sq->head = batch->next;
            batch->next = NULL;
            if (sq->head == NULL) {
                sq->tail = NULL;
            }
        } else {
            sq->head = NULL;
            sq->tail = NULL;
        }
        pthread_mutex_unlock(&sq->lock);

        if (batch == NULL) {
            break;
        }

        provend_sqlite_batch(sq, batch);
    }

    /* This thread's OpenSSL state (DRBG, error queue). */
    OPENSSL_thread_stop();
    return NULL;
}


/* ---- the interface ------------------------------------------------------- */

/* Bounds every argument on the caller's thread, before queueing. */
static int
provend_sqlite_check(provend_storage_req_t *req)
{
    size_t  i;

    if (!provend_name_valid(req->name, strlen(req->name))) {
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "store and db names are 1..%d of "
                                 "[a-z0-9_-]", PROVEND_NAME_MAX);
        return PROVEN_ERR;
    }

    switch (req->op) {

    case PROVEND_OP_SQL_QUERY:
        if (req->nstmts != 1 || req->limit > PROVEND_SQL_LIMIT_MAX) {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "one statement, limit at most %d",
                                     PROVEND_SQL_LIMIT_MAX);
            return PROVEN_ERR;
        }
        break;

    case PROVEND_OP_SQL_EXECUTE:
        if (req->nstmts == 0) {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "no statement");
            return PROVEN_ERR;
        }
        break;

    default:
        break;
    }

    if (req->nstmts > PROVEND_SQL_BATCH_MAX) {
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "at most %d statements",
                                 PROVEND_SQL_BATCH_MAX);
        return PROVEN_ERR;
    }

    for (i = 0; i < req->nstmts; i++) {
        if (req->stmts[i].sql == NULL
            || req->stmts[i].sql_len > PROVEND_SQL_TEXT_MAX
            || req->stmts[i].nparams > PROVEND_SQL_PARAMS_MAX)
        {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "SQL is at most %d bytes with at most "
                                     "%d params", PROVEND_SQL_TEXT_MAX,
                                     PROVEND_SQL_PARAMS_MAX);
            return PROVEN_ERR;
        }
    }

    return PROVEN_OK;
}


/* KV requests never reach the storage thread. */
static void
provend_sqlite_kv(provend_storage_t *st, provend_storage_req_t *req)
{
    provend_sqlite_t  *sq;

    sq = st->data;
    provend_kv_submit(sq->kv, req);
}


static int
provend_sqlite_kv_peek(provend_storage_t *st, const provend_scope_t *scope,
    const char *store, provend_kv_type_t type, const uint8_t *key,
    size_t key_len, provend_kv_peek_pt fn, void *data)
{
    provend_sqlite_t  *sq;

    sq = st->data;
    return provend_kv_peek(sq->kv, scope, store, type, key, key_len, fn,
                           data);
}


static void
provend_sqlite_enqueue(provend_storage_t *st, provend_storage_req_t *req)
{
    provend_sqlite_t  *sq;

    sq = st->data;
    req->status = PROVEND_ST_OK;
    req->error[0] = '\0';
    req->next = NULL;

    if (provend_sqlite_check(req) != PROVEN_OK) {
        req->done(req);
        return;
    }

    pthread_mutex_lock(&sq->lock);

    if (sq->stopping) {
        pthread_mutex_unlock(&sq->lock);
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                 "storage is closing");
        req->done(req);
        return;
    }

    if (sq->tail != NULL) {
        sq->tail->next = req;
    } else {
        sq->head = req;
    }
    sq->tail = req;

    if (!sq->held) {
        pthread_cond_broadcast(&sq->cond);
    }
    pthread_mutex_unlock(&sq->lock);
}


static void
provend_sqlite_hold(provend_storage_t *st)
{
    provend_sqlite_t  *sq;

    sq = st->data;

    pthread_mutex_lock(&sq->lock);
    sq->held = 1;
    pthread_mutex_unlock(&sq->lock);
}


static void
provend_sqlite_release(provend_storage_t *st)
{
    provend_sqlite_t  *sq;

    sq = st->data;

    pthread_mutex_lock(&sq->lock);
    sq->held = 0;
    if (sq->head != NULL) {
        pthread_cond_broadcast(&sq->cond);
    }
    pthread_mutex_unlock(&sq->lock);
}


/*
 * SQL held first, its batch under way waited for, then the KV log: KV
 * writes do not wait on an SQL batch (which an app can stretch to the SQL
 * timeout).  Neither thread ever waits on the other, so this cannot
 * deadlock.  fn sees files in which every write answered is, and no write
 * under way.
 */
static int
provend_sqlite_quiesce(provend_storage_t *st, int (*fn)(void *arg),
    void *arg)
{
    int                rc;
    provend_sqlite_t  *sq;

    sq = st->data;

    pthread_mutex_lock(&sq->lock);
    sq->paused = 1;
    while (sq->busy) {
        pthread_cond_wait(&sq->cond, &sq->lock);
    }
    pthread_mutex_unlock(&sq->lock);

    provend_kv_pause(sq->kv);

    rc = fn(arg);
    provend_kv_resume(sq->kv);

    pthread_mutex_lock(&sq->lock);
    sq->paused = 0;
    pthread_cond_broadcast(&sq->cond);
    pthread_mutex_unlock(&sq->lock);

    return rc;
}


static void
provend_sqlite_free(provend_sqlite_t *sq)
{
    size_t  i;

    for (i = 0; i < PROVEND_SQL_OPEN_MAX; i++) {
        provend_sqldb_close(&sq->dbs[i]);
    }

    OPENSSL_cleanse(sq->name_key, sizeof(sq->name_key));
    free(sq->dir);
    free(sq);
}


static void
provend_sqlite_close(provend_storage_t *st)
{
    provend_sqlite_t  *sq;

    sq = st->data;

    if (sq->thread_started) {
        pthread_mutex_lock(&sq->lock);
        sq->stopping = 1;
        pthread_cond_broadcast(&sq->cond);
        pthread_mutex_unlock(&sq->lock);
        pthread_join(sq->thread, NULL);
    }

    provend_kv_close(sq->kv);

    pthread_cond_destroy(&sq->cond);
    pthread_mutex_destroy(&sq->lock);
    provend_sqlite_free(sq);
}


provend_storage_t *
provend_storage_sqlite_open(const provend_storage_config_t *cfg, char *err,
    size_t errlen)
{
    char              *sqldir;
    provend_sqlite_t  *sq;

    sqldir = NULL;

    sq = calloc(1, sizeof(*sq));
    if (sq == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }

    pthread_mutex_init(&sq->lock, NULL);
    pthread_cond_init(&sq->cond, NULL);

    sq->st.name = "sqlite";
    sq->st.data = sq;
    sq->st.kv_get = provend_sqlite_kv;
    sq->st.kv_set = provend_sqlite_kv;
    sq->st.kv_delete = provend_sqlite_kv;
    sq->st.kv_keys = provend_sqlite_kv;
    sq->st.kv_sign = provend_sqlite_kv;
    sq->st.kv_peek = provend_sqlite_kv_peek;
    sq->st.sql_execute = provend_sqlite_enqueue;
    sq->st.sql_query = provend_sqlite_enqueue;
    sq->st.sql_migrate = provend_sqlite_enqueue;
    sq->st.hold = provend_sqlite_hold;
    sq->st.release = provend_sqlite_release;
    sq->st.quiesce = provend_sqlite_quiesce;
    sq->st.close = provend_sqlite_close;

    sq->timeout_ms = cfg->sql_timeout_ms ? cfg->sql_timeout_ms
                                         : PROVEND_SQL_TIMEOUT_MS;
    sq->max_bytes = cfg->sql_max_bytes ? cfg->sql_max_bytes
                                       : PROVEND_SQL_BYTES_MAX;
    sq->deterministic = cfg->deterministic;

    if (provend_keys_derive(cfg->master_key, "proven-sql-names-v1", 19,
                            sq->name_key, sizeof(sq->name_key)) != PROVEN_OK)
    {
        proven_errf(err, errlen, "cannot derive the storage keys");
        goto failed;
    }

    if (sqlite3_hard_heap_limit64(-1) == 0) {
        (void) sqlite3_hard_heap_limit64(PROVEND_HEAP_LIMIT_DEFAULT);
    }

    if (provend_vfs_register(cfg->master_key, err, errlen) != PROVEN_OK) {
        goto failed;
    }

    if (asprintf(&sq->dir, "%s/storage", cfg->data_dir) == -1) {
        sq->dir = NULL;
        proven_errf(err, errlen, "out of memory");
        goto failed;
    }

    if (asprintf(&sqldir, "%s/sql", sq->dir) == -1) {
        proven_errf(err, errlen, "out of memory");
        goto failed;
    }

    if (provend_mkdirs(sqldir, 0700, err, errlen) != PROVEN_OK) {
        goto failed;
    }

    sq->kv = provend_kv_open(sq->dir, cfg->master_key, cfg->kv_max_value,
                             cfg->kv_memory_max, err, errlen);
    if (sq->kv == NULL) {
        goto failed;
    }
    if (cfg->deterministic) {
        provend_kv_set_replica(sq->kv);
    }

    if (pthread_create(&sq->thread, NULL, provend_sqlite_thread, sq) != 0) {
        proven_errf(err, errlen, "cannot start the storage thread");
        goto failed;
    }

    sq->thread_started = 1;
    free(sqldir);
    return &sq->st;

failed:

    provend_kv_close(sq->kv);
    sq->kv = NULL;
    free(sqldir);
    pthread_cond_destroy(&sq->cond);
    pthread_mutex_destroy(&sq->lock);
    provend_sqlite_free(sq);
    return NULL;
}
