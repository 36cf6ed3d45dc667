/* Internal to daemon/storage/: shared by its files, included by no other
 * subsystem. */

#ifndef PROVEND_SQL_INT_H
#define PROVEND_SQL_INT_H

/*
 * The embedded storage backend: SQLite databases under DATA/storage/,
 * opened through the encrypting VFS, and the KV stores (kv_*.c, storage_kv.c).
 *
 *   kv/<seqno>.log      every KV store: the encrypted log (kv_log.c)
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

#include "core/keys.h"
#include "core/log.h"
#include "storage.h"
#include "storage_kv.h"
#include "core/util.h"
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
    int                     paused;         /* a backup: take no batch */
    int                     busy;           /* a batch under way */
    int                     stopping;
};


void provend_sqldb_arm(provend_sqldb_t *d, int writes);

int provend_sqldb_exec(provend_sqldb_t *d, const char *sql, char *err,
    size_t errlen);

int provend_sqldb_open(provend_sqlite_t *sq, provend_sqldb_t *d,
    const char *path, int app, char *err, size_t errlen);

void provend_sqldb_close(provend_sqldb_t *d);

void provend_sqldb_depend(provend_sqldb_t *d, provend_storage_req_t *req);

int provend_sqldb_begin(provend_sqldb_t *d, provend_storage_req_t *req);

void provend_sqldb_check_txn(provend_sqldb_t *d);

void provend_sqldb_fail(provend_sqldb_t *d, provend_storage_req_t *req, int rc);

cbor_item_t *provend_build_uint(uint64_t v);

void provend_sql_do_execute(provend_sqlite_t *sq, provend_storage_req_t *req);

void provend_sql_do_query(provend_sqlite_t *sq, provend_storage_req_t *req);

void provend_sql_do_migrate(provend_sqlite_t *sq, provend_storage_req_t *req);

#endif
