/*
 * SQL: statements, parameters and results, migrations, the limits that
 * keep replicas deterministic.
 */

#include "sql_int.h"


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


void
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
void
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
void
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
