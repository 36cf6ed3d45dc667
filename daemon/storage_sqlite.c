/*
 * The embedded storage backend: SQLite databases under DATA/storage/,
 * opened through the encrypting VFS, and the KV stores (storage_kv.c).
 *
 *   kv/<seqno>.log      every KV store: the encrypted log (storage_kv.c)
 *   sql/<hex>.db        one database per (scope, db name); the name is an
 *                       HMAC of the canonical scope, so it reveals nothing
 *
 * One storage thread owns every connection (WAL with EXCLUSIVE locking
 * allows no second one).  It takes everything queued at once: reads are
 * answered as they run; writes run in one transaction per database, each
 * in its own savepoint so one failure does not fail the others, and are
 * answered only after COMMIT returned (synchronous=FULL: fsync'd).  So
 * concurrent writers share one fsync (group commit).  A read queued after
 * a write of the same batch waits for that commit, so nobody sees data
 * that could still be rolled back.  A request that makes SQLite roll the
 * whole transaction back fails alone: the others of that transaction run
 * again in a new one (a few times a batch at most).
 */

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "keys.h"
#include "log.h"
#include "storage.h"
#include "storage_kv.h"
#include "util.h"
#include "vfs.h"


#define PROVEND_SQL_OPEN_MAX   64     /* open SQL databases kept */
#define PROVEND_SQL_LENGTH_MAX (16 * 1024 * 1024)  /* one value, our own */
#define PROVEND_APP_LENGTH_MAX (8 * 1024 * 1024)   /* one value, app db */
#define PROVEND_APP_COLUMN_MAX 500
#define PROVEND_PROGRESS_STEPS 1000
/*
 * A deterministic write's bound, in progress calls of 1000 steps: the same
 * on every node whatever its speed (about a second of a busy statement).
 */
#define PROVEND_WRITE_STEPS_MAX  20000
#define PROVEND_RERUN_ROUNDS   3      /* re-runs after rollbacks, a batch */

/*
 * SQLite's heap, process wide: one SELECT of 500 randomblob(8000000)
 * columns would otherwise allocate gigabytes before any result check sees
 * its row.  A limit the process set before opening (provend's
 * --storage-heap-limit) is kept.
 */
#define PROVEND_HEAP_LIMIT_DEFAULT  (1024LL * 1024 * 1024)

/* Created when a database is opened, before any app statement runs. */
#define PROVEND_MIGRATIONS_SCHEMA                                          \
    "CREATE TABLE IF NOT EXISTS main._proven_migrations (version INTEGER " \
    "PRIMARY KEY, sha256 BLOB NOT NULL)"


typedef struct provend_sqlite_s  provend_sqlite_t;

typedef struct {
    sqlite3            *db;
    provend_sqlite_t   *sq;
    char                id[2 * 32 + 1];   /* hex HMAC */
    uint64_t            used;             /* LRU clock */
    int                 in_txn;           /* this batch began one */
    int                 txn_failed;       /* aborted: its writes are lost */
    int                 txn_blamed;       /* a request was failed for it */
    uintptr_t           txn_gen;          /* which transaction: 0 none */
    int                 internal;         /* our statements: no authorizer */
    int                 denied;           /* the authorizer said no */
    int                 altered;          /* an ALTER TABLE was prepared */
    char                denied_what[128];
    int                 timed_out;
    struct timespec     deadline;
    unsigned            steps_left;       /* deterministic: 0 clock */
} provend_sqldb_t;

struct provend_sqlite_s {
    provend_storage_t       st;
    char                   *dir;            /* DATA/storage */
    uint8_t                 name_key[PROVEND_KEY_LEN];
    unsigned                timeout_ms;
    size_t                  max_bytes;
    int                     deterministic;

    provend_kv_t           *kv;

    provend_sqldb_t         dbs[PROVEND_SQL_OPEN_MAX];
    uint64_t                clock;
    uintptr_t               txn_clock;      /* last txn_gen given out */

    pthread_t               thread;
    int                     thread_started;
    pthread_mutex_t         lock;
    pthread_cond_t          cond;
    provend_storage_req_t  *head;
    provend_storage_req_t  *tail;
    int                     held;           /* the queue fills, untaken */
    int                     stopping;
};


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


static void
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
static int
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
static int
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


static void
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
static void
provend_sqldb_depend(provend_sqldb_t *d, provend_storage_req_t *req)
{
    req->priv = d->in_txn ? (void *) d->txn_gen : NULL;
}


/* The write transaction of this batch on d, begun on first use. */
static int
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
static void
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


static void
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


static cbor_item_t *
provend_build_uint(uint64_t v)
{
    return v <= UINT32_MAX ? cbor_build_uint32((uint32_t) v)
                           : cbor_build_uint64(v);
}


/* ---- SQL ----------------------------------------------------------------- */

/* The open database for req's (scope, db), opened if needed (LRU). */
static provend_sqldb_t *
provend_sql_db(provend_sqlite_t *sq, provend_storage_req_t *req)
{
    char              canon[PROVEND_SCOPE_CANON_MAX], id[2 * 32 + 1];
    char              err[PROVEN_ERR_LEN], *path;
    size_t            i, canon_len;
    uint8_t           mac[32];
    unsigned int      maclen;
    provend_sqldb_t  *d, *victim;

    if (provend_scope_canonical(&req->scope, "sql", req->name, canon,
                                sizeof(canon), &canon_len) != PROVEN_OK)
    {
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "bad scope or db name");
        return NULL;
    }

    maclen = sizeof(mac);
    if (HMAC(EVP_sha256(), sq->name_key, sizeof(sq->name_key),
             (const uint8_t *) canon, canon_len, mac, &maclen) == NULL)
    {
        provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "HMAC failed");
        return NULL;
    }

    proven_hex_encode(mac, maclen, id);
    victim = NULL;

    for (i = 0; i < PROVEND_SQL_OPEN_MAX; i++) {
        d = &sq->dbs[i];

        if (d->db != NULL && strcmp(d->id, id) == 0) {
            d->used = ++sq->clock;
            return d;
        }

        /* A database in this batch's transaction stays open. */
        if (d->in_txn) {
            continue;
        }

        if (victim == NULL || (victim->db != NULL
                               && (d->db == NULL || d->used < victim->used)))
        {
            victim = d;
        }
    }

    if (victim == NULL) {
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                 "too many databases written at once");
        return NULL;
    }

    provend_sqldb_close(victim);

    if (asprintf(&path, "%s/sql/%s.db", sq->dir, id) == -1) {
        provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "out of memory");
        return NULL;
    }

    if (provend_sqldb_open(sq, victim, path, 1, err, sizeof(err))
        != PROVEN_OK)
    {
        free(path);
        provend_error("storage: %s", err);
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR, "%s", err);
        return NULL;
    }

    free(path);
    snprintf(victim->id, sizeof(victim->id), "%s", id);
    victim->used = ++sq->clock;
    return victim;
}


static int
provend_sql_bind(provend_sqldb_t *d, sqlite3_stmt *stmt,
    const provend_sql_stmt_t *s, provend_storage_req_t *req)
{
    int                         rc;
    size_t                      i;
    const provend_sql_value_t  *v;

    if (s->nparams > (size_t) sqlite3_bind_parameter_count(stmt)) {
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "%zu params for %d placeholders",
                                 s->nparams,
                                 sqlite3_bind_parameter_count(stmt));
        return PROVEN_ERR;
    }

    for (i = 0; i < s->nparams; i++) {
        v = &s->params[i];

        switch (v->type) {
        case PROVEND_SQL_INTEGER:
            rc = sqlite3_bind_int64(stmt, (int) i + 1, v->i);
            break;
        case PROVEND_SQL_REAL:
            rc = sqlite3_bind_double(stmt, (int) i + 1, v->f);
            break;
        case PROVEND_SQL_TEXT:
            rc = sqlite3_bind_text64(stmt, (int) i + 1, (const char *) v->data,
                                     v->len, SQLITE_STATIC, SQLITE_UTF8);
            break;
        case PROVEND_SQL_BLOB:
            if (v->len == 0) {
                rc = sqlite3_bind_zeroblob(stmt, (int) i + 1, 0);
            } else {
                rc = sqlite3_bind_blob64(stmt, (int) i + 1, v->data, v->len,
                                         SQLITE_STATIC);
            }
            break;
        default:
            rc = sqlite3_bind_null(stmt, (int) i + 1);
            break;
        }

        if (rc != SQLITE_OK) {
            provend_sqldb_fail(d, req, rc);
            return PROVEN_ERR;
        }
    }

    return PROVEN_OK;
}


/* Prepares exactly one app statement of s; NULL with req failed. */
static sqlite3_stmt *
provend_sql_prepare(provend_sqldb_t *d, const provend_sql_stmt_t *s,
    provend_storage_req_t *req)
{
    int            rc;
    const char    *tail;
    sqlite3_stmt  *stmt, *extra;

    d->altered = 0;

    rc = sqlite3_prepare_v3(d->db, s->sql, (int) s->sql_len, 0, &stmt,
                            &tail);
    if (rc != SQLITE_OK) {
        provend_sqldb_fail(d, req, rc);
        return NULL;
    }

    if (stmt == NULL) {
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "no SQL statement");
        return NULL;
    }

    /* A second statement would run unseen by the caller: refuse it. */
    extra = NULL;
    rc = sqlite3_prepare_v3(d->db, tail, (int) (s->sql + s->sql_len - tail),
                            0, &extra, NULL);
    if (rc != SQLITE_OK || extra != NULL) {
        sqlite3_finalize(extra);
        sqlite3_finalize(stmt);
        if (rc != SQLITE_OK) {
            provend_sqldb_fail(d, req, rc);
        } else {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "one statement per \"sql\" (use a "
                                     "batch)");
        }
        return NULL;
    }

    if (provend_sql_bind(d, stmt, s, req) != PROVEN_OK) {
        sqlite3_finalize(stmt);
        return NULL;
    }

    return stmt;
}


/*
 * After an ALTER TABLE: the authorizer never saw the new name, so look
 * for a reserved one in the schemas (temp too: it would shadow main's).
 * The request's savepoint undoes the rename.
 */
static int
provend_sql_renamed_ok(provend_sqldb_t *d, provend_storage_req_t *req)
{
    int            rc;
    sqlite3_stmt  *stmt;

    if (!d->altered) {
        return PROVEN_OK;
    }

    d->altered = 0;
    d->internal = 1;

    rc = sqlite3_prepare_v2(d->db,
                            "SELECT 1 FROM main.sqlite_schema WHERE name "
                            "LIKE '\\_proven%' ESCAPE '\\' AND name <> "
                            "'_proven_migrations' UNION ALL SELECT 1 FROM "
                            "temp.sqlite_schema WHERE name LIKE "
                            "'\\_proven%' ESCAPE '\\'", -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
        sqlite3_finalize(stmt);
    }

    d->internal = 0;

    if (rc == SQLITE_DONE) {
        return PROVEN_OK;
    }

    if (rc == SQLITE_ROW) {
        provend_storage_req_fail(req, PROVEND_ST_SQL_DENIED,
                                 "names starting with _proven are reserved");
    } else {
        provend_sqldb_fail(d, req, rc);
    }

    return PROVEN_ERR;
}


/* Runs every statement of a script (migrations); no params. */
static int
provend_sql_script(provend_sqldb_t *d, const char *sql, size_t len,
    provend_storage_req_t *req)
{
    int            rc;
    const char    *p, *end, *tail;
    sqlite3_stmt  *stmt;

    p = sql;
    end = sql + len;

    while (p < end) {
        d->altered = 0;

        rc = sqlite3_prepare_v3(d->db, p, (int) (end - p), 0, &stmt, &tail);
        if (rc != SQLITE_OK) {
            provend_sqldb_fail(d, req, rc);
            return PROVEN_ERR;
        }

        if (stmt == NULL) {
            break;
        }

        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
            /* a migration's rows are not returned */
        }

        sqlite3_finalize(stmt);

        if (rc != SQLITE_DONE) {
            provend_sqldb_fail(d, req, rc);
            return PROVEN_ERR;
        }

        if (provend_sql_renamed_ok(d, req) != PROVEN_OK) {
            return PROVEN_ERR;
        }

        p = tail;
    }

    return PROVEN_OK;
}


static cbor_item_t *
provend_build_int(int64_t v)
{
    if (v >= 0) {
        return provend_build_uint((uint64_t) v);
    }

    return cbor_build_negint64((uint64_t) (-1 - v));
}


/* Savepoints: each write request is all or nothing within the commit. */
static int
provend_sql_savepoint(provend_sqldb_t *d, provend_storage_req_t *req)
{
    char  err[PROVEN_ERR_LEN];

    if (provend_sqldb_begin(d, req) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    if (provend_sqldb_exec(d, "SAVEPOINT provend_req", err, sizeof(err))
        != PROVEN_OK)
    {
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR, "%s", err);
        provend_sqldb_check_txn(d);
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


static void
provend_sql_end(provend_sqldb_t *d, provend_storage_req_t *req)
{
    char  err[PROVEN_ERR_LEN];

    provend_sqldb_check_txn(d);
    if (d->txn_failed) {
        if (req->status == PROVEND_ST_OK) {
            provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                     "the write transaction was lost");
        }
        return;
    }

    if (req->status != PROVEND_ST_OK
        && provend_sqldb_exec(d, "ROLLBACK TO provend_req", err, sizeof(err))
           != PROVEN_OK)
    {
        provend_error("storage: %s", err);
        d->txn_failed = 1;
        return;
    }

    if (provend_sqldb_exec(d, "RELEASE provend_req", err, sizeof(err))
        != PROVEN_OK)
    {
        provend_error("storage: %s", err);
        d->txn_failed = 1;
        if (req->status == PROVEND_ST_OK) {
            provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR, "%s",
                                     err);
        }
    }
}


static void
provend_sql_do_execute(provend_sqlite_t *sq, provend_storage_req_t *req)
{
    int               rc;
    size_t            i;
    int64_t           total;
    uint64_t          changes;
    cbor_item_t      *map;
    sqlite3_stmt     *stmt;
    provend_sqldb_t  *d;

    d = provend_sql_db(sq, req);
    if (d == NULL || provend_sql_savepoint(d, req) != PROVEN_OK) {
        return;
    }

    /* One deadline for the whole batch, not one per statement. */
    provend_sqldb_arm(d, req->op != PROVEND_OP_SQL_QUERY);

    /* Left at 0 unless one of these statements inserts a rowid row. */
    sqlite3_set_last_insert_rowid(d->db, 0);
    changes = 0;

    for (i = 0; i < req->nstmts; i++) {
        stmt = provend_sql_prepare(d, &req->stmts[i], req);
        if (stmt == NULL) {
            goto done;
        }

        total = (int64_t) sqlite3_total_changes64(d->db);

        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
            /* rows of an executed statement are not returned */
        }

        if (rc != SQLITE_DONE) {
            provend_sqldb_fail(d, req, rc);
            sqlite3_finalize(stmt);
            goto done;
        }

        sqlite3_finalize(stmt);

        if (provend_sql_renamed_ok(d, req) != PROVEN_OK) {
            goto done;
        }

        /*
         * sqlite3_changes64() keeps the count of the last INSERT, UPDATE
         * or DELETE, maybe another request's: it is this statement's only
         * if the total moved.  (Rows changed by triggers are not counted,
         * as in SQLite's changes().)
         */
        if ((int64_t) sqlite3_total_changes64(d->db) != total) {
            changes += (uint64_t) sqlite3_changes64(d->db);
        }
    }

    map = cbor_new_definite_map(2);
    if (map == NULL
        || proven_cbor_map_put(map, "changes", provend_build_uint(changes))
           != PROVEN_OK
        || proven_cbor_map_put(map, "last_insert_rowid",
                               provend_build_int(
                                   sqlite3_last_insert_rowid(d->db)))
           != PROVEN_OK)
    {
        if (map != NULL) {
            cbor_decref(&map);
        }
        provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "out of memory");
        goto done;
    }

    req->result = map;

done:

    provend_sql_end(d, req);
}


/* What column i adds to the result (an upper bound), before copying it. */
static size_t
provend_sql_column_size(sqlite3_stmt *stmt, int i)
{
    switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER:
    case SQLITE_FLOAT:
        return 9;
    case SQLITE_TEXT:
    case SQLITE_BLOB:
        return (size_t) sqlite3_column_bytes(stmt, i) + 9;
    default:
        return 1;
    }
}


static cbor_item_t *
provend_sql_column(sqlite3_stmt *stmt, int i)
{
    const unsigned char  *text;

    switch (sqlite3_column_type(stmt, i)) {

    case SQLITE_INTEGER:
        return provend_build_int(sqlite3_column_int64(stmt, i));

    case SQLITE_FLOAT:
        return cbor_build_float8(sqlite3_column_double(stmt, i));

    case SQLITE_TEXT:
        text = sqlite3_column_text(stmt, i);
        return cbor_build_stringn((const char *) text,
                                  (size_t) sqlite3_column_bytes(stmt, i));

    case SQLITE_BLOB:
        return cbor_build_bytestring(sqlite3_column_blob(stmt, i),
                                     (size_t) sqlite3_column_bytes(stmt, i));

    default:
        return cbor_new_null();
    }
}


static int
provend_parse_offset(const char *cursor, uint64_t *offset)
{
    char  *end;

    if (cursor[0] < '0' || cursor[0] > '9') {
        return PROVEN_ERR;
    }

    errno = 0;
    *offset = strtoull(cursor, &end, 10);
    return errno == 0 && *end == '\0' ? PROVEN_OK : PROVEN_ERR;
}


/*
 * Rows from the cursor on.  The cursor is the number of rows already
 * returned: the statement runs again and skips them, so a cursor is only
 * as stable as the data under it (order with ORDER BY).
 */
static void
provend_sql_do_query(provend_sqlite_t *sq, provend_storage_req_t *req)
{
    int               rc, i, ncols;
    char              next[32];
    size_t            bytes, size;
    uint64_t          offset, limit, n;
    cbor_item_t      *map, *columns, *rows, *row, *item, *cursor;
    sqlite3_stmt     *stmt;
    provend_sqldb_t  *d;

    map = NULL;
    columns = NULL;
    rows = NULL;
    row = NULL;
    cursor = NULL;
    stmt = NULL;
    offset = 0;

    if (req->cursor != NULL
        && provend_parse_offset(req->cursor, &offset) != PROVEN_OK)
    {
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST, "bad cursor");
        return;
    }

    d = provend_sql_db(sq, req);
    if (d == NULL) {
        return;
    }

    provend_sqldb_depend(d, req);
    provend_sqldb_arm(d, req->op != PROVEND_OP_SQL_QUERY);

    stmt = provend_sql_prepare(d, &req->stmts[0], req);
    if (stmt == NULL) {
        return;
    }

    if (!sqlite3_stmt_readonly(stmt)) {
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "sql.query only reads: use sql.execute");
        goto done;
    }

    limit = req->limit ? req->limit : PROVEND_SQL_LIMIT_DEFAULT;
    ncols = sqlite3_column_count(stmt);
    bytes = 0;

    map = cbor_new_definite_map(3);
    columns = cbor_new_definite_array((size_t) ncols);
    rows = cbor_new_definite_array(limit);
    if (map == NULL || columns == NULL || rows == NULL) {
        goto nomem;
    }

    for (i = 0; i < ncols; i++) {
        item = cbor_build_string(sqlite3_column_name(stmt, i)
                                 ? sqlite3_column_name(stmt, i) : "");
        if (item == NULL || !cbor_array_push(columns, item)) {
            if (item != NULL) {
                cbor_decref(&item);
            }
            goto nomem;
        }
        cbor_decref(&item);
    }

    n = 0;

    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (offset > 0) {
            offset--;
            continue;
        }

        if (n == limit) {
            snprintf(next, sizeof(next), "%llu", (unsigned long long)
                     ((req->cursor ? strtoull(req->cursor, NULL, 10) : 0)
                      + limit));
            cursor = cbor_build_string(next);
            if (cursor == NULL) {
                goto nomem;
            }
            rc = SQLITE_DONE;
            break;
        }

        row = cbor_new_definite_array((size_t) ncols);
        if (row == NULL) {
            goto nomem;
        }

        for (i = 0; i < ncols; i++) {
            /* Counted before the copy: one row can be huge. */
            size = provend_sql_column_size(stmt, i);
            if (size > sq->max_bytes - bytes) {
                provend_storage_req_fail(req, PROVEND_ST_TOO_LARGE,
                                         "result larger than %zu bytes: use "
                                         "a smaller limit", sq->max_bytes);
                goto done;
            }
            bytes += size;

            item = provend_sql_column(stmt, i);
            if (item == NULL || !cbor_array_push(row, item)) {
                if (item != NULL) {
                    cbor_decref(&item);
                }
                goto nomem;
            }
            cbor_decref(&item);
        }

        if (!cbor_array_push(rows, row)) {
            goto nomem;
        }
        /* rows holds it now; decref leaves the pointer when not freed. */
        cbor_decref(&row);
        row = NULL;
        n++;
    }

    if (rc != SQLITE_DONE) {
        provend_sqldb_fail(d, req, rc);
        goto done;
    }

    if (cursor == NULL) {
        cursor = cbor_new_null();
        if (cursor == NULL) {
            goto nomem;
        }
    }

    if (proven_cbor_map_put(map, "columns", columns) != PROVEN_OK) {
        columns = NULL;
        goto nomem;
    }
    columns = NULL;

    if (proven_cbor_map_put(map, "rows", rows) != PROVEN_OK) {
        rows = NULL;
        goto nomem;
    }
    rows = NULL;

    if (proven_cbor_map_put(map, "cursor", cursor) != PROVEN_OK) {
        cursor = NULL;
        goto nomem;
    }
    cursor = NULL;

    req->result = map;
    map = NULL;
    goto done;

nomem:

    provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "out of memory");

done:

    sqlite3_finalize(stmt);
    if (row != NULL) {
        cbor_decref(&row);
    }
    if (rows != NULL) {
        cbor_decref(&rows);
    }
    if (columns != NULL) {
        cbor_decref(&columns);
    }
    if (cursor != NULL) {
        cbor_decref(&cursor);
    }
    if (map != NULL) {
        cbor_decref(&map);
    }
}


/* Our own statement with one blob/int binding set; no authorizer. */
static int
provend_sql_internal(provend_sqldb_t *d, const char *sql, int64_t version,
    const uint8_t *hash, sqlite3_stmt **rows, provend_storage_req_t *req)
{
    int            rc;
    sqlite3_stmt  *stmt;

    d->internal = 1;
    rc = sqlite3_prepare_v2(d->db, sql, -1, &stmt, NULL);
    d->internal = 0;

    if (rc != SQLITE_OK) {
        provend_sqldb_fail(d, req, rc);
        return PROVEN_ERR;
    }

    if (version >= 0) {
        sqlite3_bind_int64(stmt, 1, version);
        sqlite3_bind_blob(stmt, 2, hash, 32, SQLITE_STATIC);
    }

    if (rows != NULL) {
        *rows = stmt;
        return PROVEN_OK;
    }

    d->internal = 1;
    rc = sqlite3_step(stmt);
    d->internal = 0;
    sqlite3_finalize(stmt);

    if (rc != SQLITE_DONE) {
        provend_sqldb_fail(d, req, rc);
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


/*
 * Migration i (from 1) is applied once and recorded with the SHA-256 of its
 * text, so an edited migration that was already applied is refused.
 */
static void
provend_sql_do_migrate(provend_sqlite_t *sq, provend_storage_req_t *req)
{
    int               rc;
    size_t            i, applied, have;
    uint8_t           hash[32];
    cbor_item_t      *map;
    sqlite3_stmt     *stmt;
    provend_sqldb_t  *d;

    d = provend_sql_db(sq, req);
    if (d == NULL || provend_sql_savepoint(d, req) != PROVEN_OK) {
        return;
    }

    /* One deadline for every migration of the call. */
    provend_sqldb_arm(d, req->op != PROVEND_OP_SQL_QUERY);

    /* last_insert_rowid() of a migration is its own, on every node */
    sqlite3_set_last_insert_rowid(d->db, 0);

    if (provend_sql_internal(d, PROVEND_MIGRATIONS_SCHEMA, -1, NULL, NULL,
                             req) != PROVEN_OK
        || provend_sql_internal(d, "SELECT version, sha256 FROM "
                                "main._proven_migrations ORDER BY version",
                                -1, NULL, &stmt, req) != PROVEN_OK)
    {
        goto done;
    }

    have = 0;
    rc = SQLITE_DONE;

    d->internal = 1;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (have < req->nstmts) {
            SHA256((const uint8_t *) req->stmts[have].sql,
                   req->stmts[have].sql_len, hash);
            if (sqlite3_column_bytes(stmt, 1) != 32
                || memcmp(sqlite3_column_blob(stmt, 1), hash, 32) != 0)
            {
                provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                         "migration %zu differs from the "
                                         "one applied", have + 1);
                break;
            }
        }
        have++;
    }
    d->internal = 0;
    sqlite3_finalize(stmt);

    if (req->status != PROVEND_ST_OK) {
        goto done;
    }

    if (rc != SQLITE_DONE) {
        provend_sqldb_fail(d, req, rc);
        goto done;
    }

    applied = 0;

    for (i = have; i < req->nstmts; i++) {
        if (provend_sql_script(d, req->stmts[i].sql, req->stmts[i].sql_len,
                               req) != PROVEN_OK)
        {
            snprintf(req->error + strlen(req->error),
                     sizeof(req->error) - strlen(req->error),
                     " (migration %zu)", i + 1);
            goto done;
        }

        SHA256((const uint8_t *) req->stmts[i].sql, req->stmts[i].sql_len,
               hash);

        if (provend_sql_internal(d, "INSERT INTO main._proven_migrations "
                                 "(version, sha256) VALUES (?1, ?2)",
                                 (int64_t) i + 1, hash, NULL, req)
            != PROVEN_OK)
        {
            goto done;
        }

        applied++;
    }

    map = cbor_new_definite_map(2);
    if (map == NULL
        || proven_cbor_map_put(map, "applied", provend_build_uint(applied))
           != PROVEN_OK
        || proven_cbor_map_put(map, "version",
                               provend_build_uint(have > req->nstmts
                                                  ? have : req->nstmts))
           != PROVEN_OK)
    {
        if (map != NULL) {
            cbor_decref(&map);
        }
        provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "out of memory");
        goto done;
    }

    req->result = map;

done:

    provend_sql_end(d, req);
}


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
        while ((sq->head == NULL || sq->held) && !sq->stopping) {
            pthread_cond_wait(&sq->cond, &sq->lock);
        }
        batch = sq->head;
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
        pthread_cond_signal(&sq->cond);
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
        pthread_cond_signal(&sq->cond);
    }
    pthread_mutex_unlock(&sq->lock);
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
        pthread_cond_signal(&sq->cond);
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
