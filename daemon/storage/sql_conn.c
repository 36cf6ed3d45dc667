/*
 * SQL databases: connections to SQLite through the encrypting VFS, and
 * their transactions.
 */

#include "sql_int.h"


/* ---- connections --------------------------------------------------------- */

static int
provend_sqldb_progress(void *data)
{
    provend_sqldb_t  *d;
    struct timespec   now;

    d = data;
    if (d->internal) {
        return 0;
    }

    if (d->steps_left != 0) {
        if (--d->steps_left == 0) {
            d->timed_out = 1;
            return 1;
        }
        return 0;
    }

    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > d->deadline.tv_sec
        || (now.tv_sec == d->deadline.tv_sec
            && now.tv_nsec > d->deadline.tv_nsec))
    {
        d->timed_out = 1;
        return 1;
    }

    return 0;
}


void
provend_sqldb_arm(provend_sqldb_t *d, int writes)
{
    unsigned  ms;

    /* a replayed write must stop at the same step on every node */
    d->steps_left = writes && d->sq->deterministic ? PROVEND_WRITE_STEPS_MAX
                                                   : 0;

    ms = d->sq->timeout_ms;
    clock_gettime(CLOCK_MONOTONIC, &d->deadline);
    d->deadline.tv_sec += ms / 1000;
    d->deadline.tv_nsec += (long) (ms % 1000) * 1000000L;
    if (d->deadline.tv_nsec >= 1000000000L) {
        d->deadline.tv_sec++;
        d->deadline.tv_nsec -= 1000000000L;
    }

    d->timed_out = 0;
    d->denied = 0;
}


static int
provend_is_proven_name(const char *name)
{
    return name != NULL && strncasecmp(name, "_proven", 7) == 0;
}


/* PRAGMAs an app may run: they read the schema, touch no file. */
static int
provend_pragma_allowed(const char *name, const char *arg)
{
    size_t  i;

    static const char *const  with_arg[] = {
        "table_info", "table_xinfo", "index_list", "index_info",
        "index_xinfo", "foreign_key_list", "foreign_key_check", NULL
    };
    static const char *const  no_arg[] = {
        "table_list", "user_version", "schema_version", "page_count",
        "page_size", "freelist_count", "integrity_check", "quick_check",
        "collation_list", "foreign_keys", "encoding", "data_version",
        "application_id", "foreign_key_check", NULL
    };

    for (i = 0; with_arg[i] != NULL; i++) {
        if (strcasecmp(name, with_arg[i]) == 0) {
            return !provend_is_proven_name(arg);
        }
    }

    if (arg != NULL) {
        return 0;
    }

    for (i = 0; no_arg[i] != NULL; i++) {
        if (strcasecmp(name, no_arg[i]) == 0) {
            return 1;
        }
    }

    return 0;
}


static int
provend_sqldb_authorize(void *data, int action, const char *a,
    const char *b, const char *dbname, const char *trigger)
{
    provend_sqldb_t  *d;

    (void) trigger;

    d = data;
    if (d->internal) {
        return SQLITE_OK;
    }

    switch (action) {

    case SQLITE_ATTACH:
    case SQLITE_DETACH:
        snprintf(d->denied_what, sizeof(d->denied_what),
                 "ATTACH and DETACH are not allowed");
        goto denied;

    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
        snprintf(d->denied_what, sizeof(d->denied_what),
                 "transactions are managed by provend (use a batch)");
        goto denied;

    case SQLITE_PRAGMA:
        if (provend_pragma_allowed(a, b)) {
            return SQLITE_OK;
        }
        snprintf(d->denied_what, sizeof(d->denied_what),
                 "PRAGMA %.64s is not allowed", a ? a : "");
        goto denied;

    case SQLITE_FUNCTION:
        /*
         * fts3_tokenizer() registers a tokenizer from a pointer given as a
         * blob (Debian builds it enabled): code execution.
         */
        if (b != NULL && (strcasecmp(b, "load_extension") == 0
                          || strcasecmp(b, "fts3_tokenizer") == 0))
        {
            snprintf(d->denied_what, sizeof(d->denied_what),
                     "%s is not allowed", b);
            goto denied;
        }
        /* replicas replay statements: each must give what the others do */
        if (d->sq->deterministic && b != NULL
            && (strcasecmp(b, "random") == 0
                || strcasecmp(b, "randomblob") == 0
                || strcasecmp(b, "changes") == 0
                || strcasecmp(b, "total_changes") == 0))
        {
            snprintf(d->denied_what, sizeof(d->denied_what),
                     "%s() is not allowed in a cluster: every node replays "
                     "the statement and must get the same result (pass the "
                     "value as a parameter)", b);
            goto denied;
        }
        return SQLITE_OK;

    case SQLITE_CREATE_VTABLE:
    case SQLITE_DROP_VTABLE:
        /* Only modules reviewed for hostile SQL; b is the module. */
        if (b == NULL || (strcasecmp(b, "fts5") != 0
                          && strcasecmp(b, "rtree") != 0))
        {
            snprintf(d->denied_what, sizeof(d->denied_what),
                     "virtual table module %.64s is not allowed (fts5 and "
                     "rtree are)", b ? b : "");
            goto denied;
        }
        if (provend_is_proven_name(a)) {
            snprintf(d->denied_what, sizeof(d->denied_what),
                     "names starting with _proven are reserved");
            goto denied;
        }
        return SQLITE_OK;

    case SQLITE_ALTER_TABLE:
        /* The new name is not shown here: checked after the statement. */
        d->altered = 1;
        break;

    default:
        break;
    }

    if (dbname != NULL && strcmp(dbname, "main") != 0
        && strcmp(dbname, "temp") != 0)
    {
        snprintf(d->denied_what, sizeof(d->denied_what),
                 "only the main database may be used");
        goto denied;
    }

    if (provend_is_proven_name(a) || provend_is_proven_name(b)) {
        snprintf(d->denied_what, sizeof(d->denied_what),
                 "names starting with _proven are reserved");
        goto denied;
    }

    return SQLITE_OK;

denied:

    d->denied = 1;
    return SQLITE_DENY;
}


/* Our own statement (pragmas, savepoints): no authorizer, no timeout. */
int
provend_sqldb_exec(provend_sqldb_t *d, const char *sql, char *err,
    size_t errlen)
{
    int  rc;

    d->internal = 1;
    rc = sqlite3_exec(d->db, sql, NULL, NULL, NULL);
    d->internal = 0;

    if (rc != SQLITE_OK) {
        proven_errf(err, errlen, "%s: %s", sql, sqlite3_errmsg(d->db));
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


/*
 * Every database is opened here: the encrypting VFS, WAL in EXCLUSIVE
 * locking mode (the WAL index in memory, no -shm file), fsync on commit,
 * and for app databases the guards against statements that reach outside.
 */
int
provend_sqldb_open(provend_sqlite_t *sq, provend_sqldb_t *d,
    const char *path, int app, char *err, size_t errlen)
{
    int  rc;

    memset(d, 0, sizeof(*d));
    d->sq = sq;

    rc = sqlite3_open_v2(path, &d->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                         | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
                         PROVEND_VFS_NAME);
    if (rc != SQLITE_OK) {
        proven_errf(err, errlen, "open %s: %s", path,
                    d->db ? sqlite3_errmsg(d->db)
                    : sqlite3_errstr(rc));
        goto failed;
    }

    sqlite3_db_config(d->db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, NULL);
    sqlite3_db_config(d->db, SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, NULL);
    sqlite3_db_config(d->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(d->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    sqlite3_limit(d->db, SQLITE_LIMIT_ATTACHED, 0);
    sqlite3_limit(d->db, SQLITE_LIMIT_SQL_LENGTH, PROVEND_SQL_TEXT_MAX);
    sqlite3_limit(d->db, SQLITE_LIMIT_VARIABLE_NUMBER,
                  PROVEND_SQL_PARAMS_MAX);
    sqlite3_limit(d->db, SQLITE_LIMIT_LENGTH, PROVEND_SQL_LENGTH_MAX);
    sqlite3_extended_result_codes(d->db, 1);

    if (provend_sqldb_exec(d, "PRAGMA locking_mode=EXCLUSIVE;"
                              "PRAGMA journal_mode=WAL;"
                              "PRAGMA synchronous=FULL;"
                              "PRAGMA temp_store=MEMORY;"
                              "PRAGMA trusted_schema=OFF;", err, errlen)
        != PROVEN_OK)
    {
        goto failed;
    }

    /* a replica's copy is made again from the cluster's log at start */
    if (sq->deterministic
        && provend_sqldb_exec(d, "PRAGMA synchronous=OFF;", err, errlen)
           != PROVEN_OK)
    {
        goto failed;
    }

    if (app) {
        /* One value, one row of results: bounded below what we send. */
        sqlite3_limit(d->db, SQLITE_LIMIT_LENGTH, PROVEND_APP_LENGTH_MAX);
        sqlite3_limit(d->db, SQLITE_LIMIT_COLUMN, PROVEND_APP_COLUMN_MAX);

        /*
         * Ours exists before any app statement: an app table renamed to
         * it later fails as "already exists".
         */
        if (provend_sqldb_exec(d, PROVEND_MIGRATIONS_SCHEMA, err, errlen)
            != PROVEN_OK)
        {
            goto failed;
        }

        sqlite3_set_authorizer(d->db, provend_sqldb_authorize, d);
        sqlite3_progress_handler(d->db, PROVEND_PROGRESS_STEPS,
                                 provend_sqldb_progress, d);
    }

    return PROVEN_OK;

failed:

    sqlite3_close(d->db);
    d->db = NULL;
    return PROVEN_ERR;
}


void
provend_sqldb_close(provend_sqldb_t *d)
{
    if (d->db == NULL) {
        return;
    }

    /* The last connection in WAL mode checkpoints and removes the WAL. */
    if (sqlite3_close(d->db) != SQLITE_OK) {
        provend_error("storage: closing a database: %s",
                      sqlite3_errmsg(d->db));
        sqlite3_close_v2(d->db);
    }

    d->db = NULL;
    d->id[0] = '\0';
}


/*
 * A request that touched d waits for the commit of d's open transaction
 * (if any) and fails with it.  It names the transaction, not the slot: a
 * slot may hold another database by the time of the commit.
 */
void
provend_sqldb_depend(provend_sqldb_t *d, provend_storage_req_t *req)
{
    req->priv = d->in_txn ? (void *) d->txn_gen : NULL;
}


/* The write transaction of this batch on d, begun on first use. */
int
provend_sqldb_begin(provend_sqldb_t *d, provend_storage_req_t *req)
{
    char  err[PROVEN_ERR_LEN];

    if (d->in_txn) {
        provend_sqldb_depend(d, req);
        if (d->txn_failed) {
            provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                     "an earlier write in this commit "
                                     "failed to store");
            return PROVEN_ERR;
        }
        return PROVEN_OK;
    }

    if (provend_sqldb_exec(d, "BEGIN IMMEDIATE", err, sizeof(err))
        != PROVEN_OK)
    {
        provend_error("storage: %s", err);
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR, "%s", err);
        return PROVEN_ERR;
    }

    d->in_txn = 1;
    d->txn_gen = ++d->sq->txn_clock;
    if (d->txn_gen == 0) {
        d->txn_gen = ++d->sq->txn_clock;
    }
    provend_sqldb_depend(d, req);
    return PROVEN_OK;
}


/* After a failed write: SQLite may have rolled the transaction back. */
void
provend_sqldb_check_txn(provend_sqldb_t *d)
{
    if (d->in_txn && !d->txn_failed && sqlite3_get_autocommit(d->db)) {
        provend_error("storage: a write transaction was rolled back: %s",
                      sqlite3_errmsg(d->db));
        d->txn_failed = 1;
    }
}


static provend_storage_status_t
provend_sqlite_status_of(provend_sqldb_t *d, int rc)
{
    switch (rc & 0xff) {
    case SQLITE_AUTH:
        return PROVEND_ST_SQL_DENIED;
    case SQLITE_INTERRUPT:
        return d->timed_out ? PROVEND_ST_TIMEOUT : PROVEND_ST_INTERNAL;
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_NOTADB:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
        return PROVEND_ST_STORAGE_ERROR;
    case SQLITE_NOMEM:
        /* App SQL over the heap limit; our own statements never are. */
        return d->id[0] != '\0' ? PROVEND_ST_TOO_LARGE : PROVEND_ST_INTERNAL;
    default:
        return d->denied ? PROVEND_ST_SQL_DENIED : PROVEND_ST_SQL_ERROR;
    }
}


void
provend_sqldb_fail(provend_sqldb_t *d, provend_storage_req_t *req, int rc)
{
    provend_storage_status_t  status;

    status = provend_sqlite_status_of(d, rc);

    switch (status) {
    case PROVEND_ST_SQL_DENIED:
        provend_storage_req_fail(req, status, "%s",
                                 d->denied ? d->denied_what
                                           : sqlite3_errmsg(d->db));
        break;
    case PROVEND_ST_TIMEOUT:
        provend_storage_req_fail(req, status,
                                 "statement ran longer than %u ms",
                                 d->sq->timeout_ms);
        break;
    case PROVEND_ST_TOO_LARGE:
        provend_storage_req_fail(req, status,
                                 "statement needs more memory than the "
                                 "storage heap limit of %lld bytes: read "
                                 "or build less at once",
                                 (long long) sqlite3_hard_heap_limit64(-1));
        break;
    case PROVEND_ST_STORAGE_ERROR:
        provend_error("storage: %s", sqlite3_errmsg(d->db));
        provend_storage_req_fail(req, status, "%s", sqlite3_errmsg(d->db));
        break;
    default:
        provend_storage_req_fail(req, status, "%s", sqlite3_errmsg(d->db));
        break;
    }
}


cbor_item_t *
provend_build_uint(uint64_t v)
{
    return v <= UINT32_MAX ? cbor_build_uint32((uint32_t) v)
                           : cbor_build_uint64(v);
}
