/*
 * provend storage: scopes, and the backend interface every caller (the
 * kv.* and sql.* ops, later the runtime) goes through, so that a replicated
 * backend (NATS JetStream) can replace the embedded SQLite one.
 *
 * A request is a provend_storage_req_t with parsed, owned arguments.  The
 * backend answers it exactly once by filling status/message/result and
 * calling req->done(req), from any thread (the embedded backend: KV reads
 * and argument errors on the submitting thread, before submit returns;
 * KV writes from its log thread; SQL from its storage thread).  A write
 * is answered only after it is durable.
 *
 * kv.set and kv.delete answer with req->revision (the new revision) and
 * req->existed (whether there was a key to delete), result left NULL;
 * every other op with a result map.
 *
 * Semantics a second backend must keep:
 *   - revisions are per key: 1 on creation, +1 on every set; a delete
 *     removes the key, so a later set starts at 1 again;
 *   - if_revision 0 means "must not exist"; it is checked against the
 *     latest write accepted, durable or not (the first writer wins; should
 *     that write then fail, the refused one saw a revision that never
 *     became durable);
 *   - a read sees durable writes only: a kv.get that arrives while a
 *     kv.set of its key is being made durable may answer the old value,
 *     never one that could still be lost;
 *   - an sql.execute batch and each migration are all or nothing;
 *   - SQL is applied as given: the embedded backend allows
 *     non-deterministic functions (random(), datetime('now')); a backend
 *     that replays statements on replicas opens it "deterministic" (see
 *     provend_storage_config_t).
 */

#ifndef PROVEND_STORAGE_H
#define PROVEND_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "proven.h"
#include "core/ops.h"

#define PROVEND_NAME_MAX          64      /* app, store, db */
#define PROVEND_IDENTITY_MAX      128
#define PROVEND_CHAIN_MAX         32
#define PROVEND_CONTRACT_MAX      128
#define PROVEND_TOKEN_MAX         130     /* 2^256 in decimal: 78; a
                                               Radix id "[<64 bytes>]" */
#define PROVEND_SCOPE_CANON_MAX   768     /* canonical string, bounded */

#define PROVEND_KV_KEY_MAX        1024
#define PROVEND_KV_VALUE_DEFAULT  (1024 * 1024)
#define PROVEND_KV_SIGN_MAX       (64 * 1024)
#define PROVEND_KV_LIMIT_DEFAULT  100
#define PROVEND_KV_LIMIT_MAX      1000
#define PROVEND_CURSOR_MAX        4096

#define PROVEND_SQL_TEXT_MAX      (1024 * 1024)
#define PROVEND_SQL_PARAMS_MAX    999
#define PROVEND_SQL_BATCH_MAX     1000
#define PROVEND_SQL_LIMIT_DEFAULT 500
#define PROVEND_SQL_LIMIT_MAX     5000
#define PROVEND_SQL_BYTES_MAX     (8 * 1024 * 1024)
#define PROVEND_SQL_TIMEOUT_MS    2000


/* ---- scopes -------------------------------------------------------------- */

typedef enum {
    PROVEND_SCOPE_APP = 0,
    PROVEND_SCOPE_PERSONAL,
    PROVEND_SCOPE_NFT
} provend_scope_kind_t;

typedef struct {
    provend_scope_kind_t  kind;
    char                  app[PROVEND_NAME_MAX + 1];
    char                  identity[PROVEND_IDENTITY_MAX + 1];  /* personal */
    char                  chain[PROVEND_CHAIN_MAX + 1];        /* nft */
    char                  contract[PROVEND_CONTRACT_MAX + 1];
    char                  token[PROVEND_TOKEN_MAX + 1];
} provend_scope_t;

/*
 * Parses the wire form {"app", "kind"?, "identity"?, "nft"?} (kind absent
 * means "app"); every rule of the spec: lengths, characters, no field of
 * another kind, contract "0x..." lowercased, token leading zeros stripped.
 */
int provend_scope_parse(const cbor_item_t *item, provend_scope_t *scope,
    char *err, size_t errlen);

/* 1..64 of [a-z0-9_-]: app, store and db names. */
int provend_name_valid(const char *name, size_t len);

/* 1..128 of [A-Za-z0-9._:@-]: a personal scope's identity. */
int provend_identity_valid(const char *identity, size_t len);

/*
 * "v1|app:<len>:<app>[|personal:<len>:<id> | |nft:<len>:<chain>|contract:
 * <len>:<contract>|token:<len>:<token>]|<what>:<len>:<name>" where what is
 * "kv-bytes", "kv-string", "kv-key" or "sql".  Every field is length
 * prefixed, so two different scopes never give the same string.
 */
/* Whether id is a Radix non-fungible id in its one text form: #n# (a u64,
 * no leading zeros), <string>, [bytes in lowercase hex], {ruid}. */
int provend_radix_nf_id_ok(const char *id);

int provend_scope_canonical(const provend_scope_t *scope, const char *what,
    const char *name, char *out, size_t outlen, size_t *len);


/* ---- requests ------------------------------------------------------------ */

typedef enum {
    PROVEND_ST_OK = 0,
    PROVEND_ST_BAD_REQUEST,
    PROVEND_ST_REVISION_MISMATCH,
    PROVEND_ST_NOT_FOUND,
    PROVEND_ST_SQL_ERROR,
    PROVEND_ST_SQL_DENIED,
    PROVEND_ST_TOO_LARGE,
    PROVEND_ST_TIMEOUT,
    PROVEND_ST_STORAGE_ERROR,
    PROVEND_ST_INTERNAL
} provend_storage_status_t;

/* The wire error code: "bad_request", "revision_mismatch", ... */
const char *provend_storage_status_name(provend_storage_status_t status);

typedef enum {
    PROVEND_KV_BYTES = 0,
    PROVEND_KV_STRING,
    PROVEND_KV_KEY
} provend_kv_type_t;

typedef enum {
    PROVEND_OP_KV_GET = 0,
    PROVEND_OP_KV_SET,
    PROVEND_OP_KV_DELETE,
    PROVEND_OP_KV_KEYS,
    PROVEND_OP_KV_SIGN,
    PROVEND_OP_SQL_EXECUTE,
    PROVEND_OP_SQL_QUERY,
    PROVEND_OP_SQL_MIGRATE
} provend_storage_op_t;

typedef enum {
    PROVEND_SQL_NULL = 0,
    PROVEND_SQL_INTEGER,
    PROVEND_SQL_REAL,
    PROVEND_SQL_TEXT,
    PROVEND_SQL_BLOB
} provend_sql_type_t;

typedef struct {
    provend_sql_type_t  type;
    int64_t             i;
    double              f;
    uint8_t            *data;       /* TEXT (NUL added) and BLOB, owned */
    size_t              len;
} provend_sql_value_t;

typedef struct {
    char                 *sql;      /* owned, NUL terminated */
    size_t                sql_len;
    provend_sql_value_t  *params;   /* owned */
    size_t                nparams;
} provend_sql_stmt_t;

typedef struct provend_storage_req_s  provend_storage_req_t;

struct provend_storage_req_s {
    provend_storage_op_t      op;
    provend_scope_t           scope;
    char                      name[PROVEND_NAME_MAX + 1];  /* store, db */
    provend_kv_type_t         type;

    /* kv: owned buffers */
    uint8_t                  *key;
    size_t                    key_len;
    uint8_t                  *value;      /* NULL: absent (key stores) */
    size_t                    value_len;
    int                       has_if_revision;
    uint64_t                  if_revision;
    uint8_t                  *prefix;     /* kv.keys; NULL: none */
    size_t                    prefix_len;
    uint8_t                  *message;    /* kv.sign */
    size_t                    message_len;
    uint64_t                  limit;      /* kv.keys, sql.query; 0: default */
    char                     *cursor;     /* NULL: from the start */

    /* sql: statements of sql.execute, sql.query (one) or migrations */
    provend_sql_stmt_t       *stmts;
    size_t                    nstmts;

    /* the answer */
    provend_storage_status_t  status;
    char                      error[PROVEN_ERR_LEN];
    cbor_item_t              *result;     /* owned; OK only */

    void                    (*done)(provend_storage_req_t *req);
    void                     *data;       /* the caller's */
    provend_storage_req_t    *next;       /* the backend's */
    void                     *priv;       /* the backend's */
    uint64_t                  revision;   /* kv.set's answer */
    int                       existed;    /* kv.delete's answer */

    /* the cluster backend (storage_cluster.c) */
    int                       local;      /* this node's copy only */
    int64_t                   log_time_ms; /* a replayed write: its
                                             writer's clock, for 'now' */
    uint64_t                  after;      /* a read: once this node has
                                             applied the log up to it */
    uint64_t                  after_until_ms;  /* the backend's */
    int                       blocking;   /* provend_storage_call waits */
    uint64_t                  log_seq;    /* a write's answer: its place
                                             in the log (0: one node) */
};

/* Zeroed request for op. */
provend_storage_req_t *provend_storage_req_new(provend_storage_op_t op);

/*
 * The same in memory the caller calloc()ed, with the request at its start
 * (provend_storage_req_free() frees that block).
 */
void provend_storage_req_init(provend_storage_req_t *req,
    provend_storage_op_t op);
void provend_storage_req_free(provend_storage_req_t *req);

/* Sets status and a formatted message. */
void provend_storage_req_fail(provend_storage_req_t *req,
    provend_storage_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


/*
 * The fields of a plain kv.get or kv.set frame, read in place (pointers
 * into the frame): {"id", "op", "scope" of kind app or personal,
 * "store"?, "key", "type"? of bytes or string, and for kv.set "value"
 * and "if_revision"?}, nothing else, every value well formed and within
 * the scope and name rules.
 */
typedef struct {
    int                set;          /* kv.set, else kv.get */
    uint64_t           id;
    provend_scope_t    scope;
    char               store[PROVEND_NAME_MAX + 1];
    provend_kv_type_t  type;
    const uint8_t     *key;          /* 1..PROVEND_KV_KEY_MAX bytes */
    size_t             key_len;
    const uint8_t     *value;
    size_t             value_len;
    int                value_major;  /* PROVEN_CBOR_TEXT or _BYTES */
    int                has_if_revision;
    uint64_t           if_revision;
} provend_kv_plain_t;

/*
 * PROVEN_OK for a plain frame body; PROVEN_ERR for anything else, which
 * the general decoder then takes (and reports if it is wrong).
 */
int provend_kv_plain_parse(const uint8_t *body, size_t len,
    provend_kv_plain_t *plain);


/* ---- the node's own databases ------------------------------------------ */

/* The scope (app) of what provend keeps for itself: the registry, ... */
#define PROVEND_OWN_SCOPE  "_proven"

/* An SQL request on the node's database db, with nstmts to fill. */
provend_storage_req_t *provend_storage_own_sql(provend_storage_op_t op,
    const char *db, size_t nstmts);

/* Statement i: a copy of sql, room for nparams parameters. */
int provend_storage_stmt(provend_storage_req_t *req, size_t i,
    const char *sql, size_t nparams);

/* A TEXT or BLOB parameter: a copy, NUL added as the backends expect. */
int provend_storage_param(provend_sql_stmt_t *s, size_t i,
    provend_sql_type_t type, const void *data, size_t len);
void provend_storage_param_int(provend_sql_stmt_t *s, size_t i, int64_t v);


/* ---- backends ------------------------------------------------------------ */

typedef struct provend_storage_s  provend_storage_t;

typedef void (*provend_storage_op_pt)(provend_storage_t *st,
    provend_storage_req_t *req);

/* Sees a committed KV value (NULL and revision 0: none); must not block. */
typedef void (*provend_kv_peek_pt)(void *data, const uint8_t *value,
    size_t len, uint64_t revision);

struct provend_storage_s {
    const char             *name;          /* "sqlite" */
    void                   *data;

    provend_storage_op_pt   kv_get;
    provend_storage_op_pt   kv_set;
    provend_storage_op_pt   kv_delete;
    provend_storage_op_pt   kv_keys;
    provend_storage_op_pt   kv_sign;
    provend_storage_op_pt   sql_execute;
    provend_storage_op_pt   sql_query;
    provend_storage_op_pt   sql_migrate;

    /*
     * Optional: between hold and release the backend takes no request
     * submitted, so that it takes them all as one batch on release.
     */
    /*
     * Optional, for the hot path: a kv.get answered on the caller's thread
     * without a request.  Calls fn once, while the value cannot change,
     * and returns PROVEN_OK; PROVEN_ERR for anything it does not serve (the
     * caller then submits the kv.get, which says what is wrong).
     */
    int                   (*kv_peek)(provend_storage_t *st,
                                     const provend_scope_t *scope,
                                     const char *store,
                                     provend_kv_type_t type,
                                     const uint8_t *key, size_t key_len,
                                     provend_kv_peek_pt fn, void *data);

    void                  (*hold)(provend_storage_t *st);
    void                  (*release)(provend_storage_t *st);

    /*
     * Optional: runs fn while the backend's files under DATA/storage hold
     * one state (every write answered is in them, none is under way) and
     * returns what fn returns.  Writes submitted meanwhile wait; so may
     * reads.  A backup of a running node (core/backup.c).
     */
    int                   (*quiesce)(provend_storage_t *st,
                                     int (*fn)(void *arg), void *arg);

    /* Answers everything submitted, makes it durable, frees st. */
    void                  (*close)(provend_storage_t *st);
};

typedef struct {
    const char     *data_dir;           /* databases under DATA/storage/ */
    const uint8_t  *master_key;         /* 32 bytes, copied */
    size_t          kv_max_value;       /* 0: PROVEND_KV_VALUE_DEFAULT */
    size_t          kv_memory_max;      /* 0: 1 GiB; every KV value */
    unsigned        sql_timeout_ms;     /* 0: PROVEND_SQL_TIMEOUT_MS */
    size_t          sql_max_bytes;      /* 0: PROVEND_SQL_BYTES_MAX */

    /*
     * Writes give the same result on every node that applies them in the
     * same order: random() and randomblob() are refused, 'now' is the
     * request's log_time_ms, and a write is stopped after a number of
     * SQLite steps rather than after a time.
     */
    int             deterministic;
} provend_storage_config_t;

/* The embedded backend (storage_sqlite.c). */
provend_storage_t *provend_storage_sqlite_open(
    const provend_storage_config_t *cfg, char *err, size_t errlen);

/* Hands req to the backend's function for req->op. */
void provend_storage_submit(provend_storage_t *st, provend_storage_req_t *req);

/*
 * A burst of submits from one thread: the backend is woken once, on
 * release, rather than once per request.  Never wait for an answer while
 * holding.
 */
void provend_storage_hold(provend_storage_t *st);
void provend_storage_release(provend_storage_t *st);

/*
 * Submits and waits for the answer (req->done is replaced); for tests and
 * callers that may block.  Returns req->status.
 */
provend_storage_status_t provend_storage_call(provend_storage_t *st,
    provend_storage_req_t *req);

void provend_storage_close(provend_storage_t *st);


/* ---- ops (ops_storage.c): the kv.* and sql.* frames ---------------------- */

typedef struct provend_ops_storage_s  provend_ops_storage_t;

/* Lives on the loop (uv_loop_t *, void * to keep libuv out of here). */
provend_ops_storage_t *provend_ops_storage_new(void *uv_loop,
    provend_storage_t *st, char *err, size_t errlen);

/* kv.* and sql.*: for provend's socket and apps' workers alike. */
extern const provend_op_t  provend_ops_storage_table[];

/*
 * kv.get and kv.set read in place from a frame body: 1 when taken (then
 * answered through reply exactly once, a kv.get before this returns), 0
 * when the frame is anything but their plain form, for
 * proven_request_decode() and dispatch to handle.
 */
int provend_ops_storage_fast(provend_ops_storage_t *ops,
    const uint8_t *body, size_t len, provend_ops_reply_pt reply, void *ctx);

/* Stops taking requests; the loop handle closes once all are answered. */
void provend_ops_storage_stop(provend_ops_storage_t *ops);

/* After the loop has run to its end. */
void provend_ops_storage_free(provend_ops_storage_t *ops);

#endif /* PROVEND_STORAGE_H */
