/*
 * The registry: applications, their audit logs and packages in the node's
 * own storage, held in memory, and other nodes' changes followed in a
 * cluster.
 */

#include "apps_int.h"


/* ---- the registry in storage -------------------------------------------- */

provend_storage_req_t *
provend_apps_sql(provend_storage_op_t op, size_t nstmts)
{
    provend_storage_req_t  *req;

    req = provend_storage_own_sql(op, PROVEND_APPS_DB, nstmts);

    /*
     * In a cluster, reads are this node's copy even while it catches up:
     * what arrives later comes through provend_apps_refresh().
     */
    if (req != NULL) {
        req->local = op == PROVEND_OP_SQL_QUERY;
    }
    return req;
}


/* Runs req to its end (blocking); PROVEN_OK or err filled. */
static int
provend_apps_call(provend_storage_t *st, provend_storage_req_t *req,
    char *err, size_t errlen)
{
    if (provend_storage_call(st, req) != PROVEND_ST_OK) {
        proven_errf(err, errlen, "registry storage: %s: %s",
                    provend_storage_status_name(req->status),
                    req->error);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


int
provend_apps_create_tables(provend_apps_t *apps, char *err, size_t errlen)
{
    int                     rc;
    provend_storage_req_t  *req;

    req = provend_apps_sql(PROVEND_OP_SQL_EXECUTE, 4);
    if (req != NULL) {
        /* every node makes its own: the same on each */
        req->local = 1;
    }
    if (req == NULL
        || provend_apps_stmt(req, 0, "CREATE TABLE IF NOT EXISTS audit ("
                             "app TEXT NOT NULL, seq INTEGER NOT NULL, "
                             "entry BLOB NOT NULL, PRIMARY KEY (app, seq))",
                             0) != PROVEN_OK
        || provend_apps_stmt(req, 1, "CREATE TABLE IF NOT EXISTS packages ("
                             "id BLOB PRIMARY KEY, bytes BLOB NOT NULL)", 0)
           != PROVEN_OK
        || provend_apps_stmt(req, 2, "CREATE TABLE IF NOT EXISTS created ("
                             "app TEXT PRIMARY KEY, owner BLOB NOT NULL)", 0)
           != PROVEN_OK
        || provend_apps_stmt(req, 3, "CREATE TABLE IF NOT EXISTS origins ("
                             "app TEXT NOT NULL, origin TEXT NOT NULL, "
                             "PRIMARY KEY (app, origin))", 0) != PROVEN_OK)
    {
        provend_storage_req_free(req);
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }

    rc = provend_apps_call(apps->storage, req, err, errlen);
    provend_storage_req_free(req);
    return rc;
}


/* The package with id, from storage: malloc()ed bytes. */
int
provend_apps_load_package(provend_storage_t *st, const uint8_t *id,
    uint8_t **out, size_t *len, char *err, size_t errlen)
{
    int                     rc;
    cbor_item_t            *rows, *row;
    provend_storage_req_t  *req;

    *out = NULL;
    req = provend_apps_sql(PROVEND_OP_SQL_QUERY, 1);
    if (req == NULL
        || provend_apps_stmt(req, 0, "SELECT bytes FROM packages "
                             "WHERE id = ?", 1) != PROVEN_OK
        || provend_apps_param(&req->stmts[0], 0, PROVEND_SQL_BLOB, id,
                              PROVEN_AUDIT_HASH_LEN) != PROVEN_OK)
    {
        provend_storage_req_free(req);
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }

    rc = provend_apps_call(st, req, err, errlen);
    if (rc == PROVEN_OK) {
        rows = proven_cbor_map_get(req->result, "rows");
        row = rows != NULL && cbor_isa_array(rows)
              && cbor_array_size(rows) == 1
              ? cbor_array_handle(rows)[0] : NULL;
        if (row == NULL || !cbor_isa_array(row) || cbor_array_size(row) != 1
            || proven_cbor_bytes(cbor_array_handle(row)[0],
                                 PROVEND_PACKAGE_MAX, out, len)
               != PROVEN_OK)
        {
            proven_errf(err, errlen, "registry: a deployed package is missing");
            rc = PROVEN_ERR;
        }
    }

    provend_storage_req_free(req);
    return rc;
}


/* ---- applications in memory --------------------------------------------- */

provend_app_t *
provend_apps_find(provend_apps_t *apps, const char *name)
{
    provend_app_t  *app;

    for (app = apps->apps; app != NULL; app = app->next) {
        if (strcmp(app->name, name) == 0) {
            return app;
        }
    }
    return NULL;
}


provend_app_t *
provend_apps_add(provend_apps_t *apps, const char *name)
{
    provend_app_t  *app;

    app = calloc(1, sizeof(*app));
    if (app == NULL) {
        return NULL;
    }

    snprintf(app->name, sizeof(app->name), "%s", name);
    app->apps = apps;
    app->backoff_ms = PROVEND_RESTART_MIN_MS;
    uv_timer_init(apps->loop, &app->restart);
    app->restart.data = app;

    app->next = apps->apps;
    apps->apps = app;
    apps->napps++;
    return app;
}


void
provend_apps_on_app_closed(uv_handle_t *handle)
{
    size_t               i;
    provend_app_t       *app;
    provend_wake_t      *wake;
    provend_deployed_t  *deployed;

    app = handle->data;
    for (i = 0; i < app->nentries; i++) {
        free(app->entries[i]);
    }
    free(app->entries);
    free(app->entry_lens);
    free(app->package);
    if (app->routes != NULL) {
        cbor_decref(&app->routes);
    }
    free(app->schedules);
    free(app->eth_filters);
    free(app->radix_filters);
    for (i = 0; i < app->norigins; i++) {
        free(app->origins[i]);
    }
    proven_app_state_free(&app->state);
    while ((wake = app->wakes) != NULL) {   /* answered by stop, if run */
        app->wakes = wake->next;
        free(wake);
    }
    deployed = app->deployed;                 /* answered by stop */
    if (deployed != NULL) {
        app->apps->deploys_held--;
        if (deployed->result != NULL) {
            cbor_decref(&deployed->result);
        }
        free(deployed);
    }
    free(app);
}


/* Unlinks app (no worker, no change under way) and frees it. */
void
provend_apps_remove(provend_apps_t *apps, provend_app_t *app)
{
    provend_app_t  **p;

    for (p = &apps->apps; *p != NULL; p = &(*p)->next) {
        if (*p == app) {
            *p = app->next;
            apps->napps--;
            break;
        }
    }
    uv_close((uv_handle_t *) &app->restart, provend_apps_on_app_closed);
}


int
provend_apps_keep_entry(provend_app_t *app, const uint8_t *entry,
    size_t len)
{
    size_t     cap;
    size_t    *lens;
    uint8_t  **entries, *copy;

    if (app->nentries == app->entries_cap) {
        cap = app->entries_cap ? app->entries_cap * 2 : 8;
        entries = realloc(app->entries, cap * sizeof(*entries));
        if (entries == NULL) {
            return PROVEN_ERR;
        }
        app->entries = entries;
        lens = realloc(app->entry_lens, cap * sizeof(*lens));
        if (lens == NULL) {
            return PROVEN_ERR;
        }
        app->entry_lens = lens;
        app->entries_cap = cap;
    }

    copy = malloc(len);
    if (copy == NULL) {
        return PROVEN_ERR;
    }
    memcpy(copy, entry, len);
    app->entries[app->nentries] = copy;
    app->entry_lens[app->nentries++] = len;
    return PROVEN_OK;
}


/*
 * What provend needs of a package's manifest, from one decoding: the
 * routes ([[method, path], ...] of its http handlers) and the schedules.
 * Also checks the package is a format 1 map; its content was (or will be)
 * checked by proven-runtime.
 */
int
provend_apps_manifest(const uint8_t *package, size_t len,
    cbor_item_t **routes_out, provend_cron_t **schedules, size_t *nschedules,
    char *err, size_t errlen)
{
    size_t        i, n;
    cbor_item_t  *pkg, *handlers, *h, *kind, *method, *path, *routes, *pair;
    uint64_t      format;

    *routes_out = NULL;
    pkg = proven_cbor_load(package, len, err, errlen);
    if (pkg == NULL) {
        return PROVEN_ERR;
    }

    routes = NULL;
    handlers = proven_cbor_map_get(pkg, "handlers");
    if (!cbor_isa_map(pkg)
        || proven_cbor_uint(proven_cbor_map_get(pkg, "format"), &format)
           != PROVEN_OK || format != 1
        || handlers == NULL || !cbor_isa_array(handlers))
    {
        proven_errf(err, errlen, "not a format 1 package");
        goto done;
    }

    n = cbor_array_size(handlers);
    routes = cbor_new_definite_array(n < PROVEND_ROUTES_MAX
                                     ? n : PROVEND_ROUTES_MAX);
    if (routes == NULL) {
        proven_errf(err, errlen, "out of memory");
        goto done;
    }

    for (i = 0; i < n; i++) {
        h = cbor_array_handle(handlers)[i];
        kind = cbor_isa_map(h) ? proven_cbor_map_get(h, "kind") : NULL;
        if (kind == NULL || !cbor_isa_string(kind)
            || cbor_string_length(kind) != 4
            || memcmp(cbor_string_handle(kind), "http", 4) != 0)
        {
            continue;
        }

        method = proven_cbor_map_get(h, "method");
        path = proven_cbor_map_get(h, "path");
        if (method == NULL || path == NULL || !cbor_isa_string(method)
            || !cbor_isa_string(path) || cbor_string_length(path) > 256
            || cbor_string_length(method) > 16)
        {
            proven_errf(err, errlen,
                        "a handler of the manifest has a bad route");
            cbor_decref(&routes);
            goto done;
        }

        if (cbor_array_size(routes) == PROVEND_ROUTES_MAX) {
            proven_errf(err, errlen,
                        "more than %d HTTP routes", PROVEND_ROUTES_MAX);
            cbor_decref(&routes);
            goto done;
        }

        pair = cbor_new_definite_array(2);
        if (pair == NULL
            || !cbor_array_push(pair, method) || !cbor_array_push(pair, path)
            || !cbor_array_push(routes, pair))
        {
            if (pair != NULL) {
                cbor_decref(&pair);
            }
            proven_errf(err, errlen, "out of memory");
            cbor_decref(&routes);
            goto done;
        }
        cbor_decref(&pair);
    }

    if (provend_schedules_of(handlers, schedules, nschedules, err, errlen)
        != PROVEN_OK)
    {
        cbor_decref(&routes);
    }

done:

    cbor_decref(&pkg);
    *routes_out = routes;
    return routes != NULL ? PROVEN_OK : PROVEN_ERR;
}


/* One row of "created" (pass 0) or "origins" (pass 1) into memory. */
static int
provend_apps_created_row(provend_apps_t *apps, int pass, cbor_item_t *row,
    char *err, size_t errlen)
{
    char            name[PROVEND_NAME_MAX + 1];
    size_t          len, i;
    cbor_item_t    *a, *b;
    provend_app_t  *app;

    a = cbor_isa_array(row) && cbor_array_size(row) == 2
        ? cbor_array_handle(row)[0] : NULL;
    b = a != NULL ? cbor_array_handle(row)[1] : NULL;
    if (a == NULL || !cbor_isa_string(a) || !cbor_string_is_definite(a)
        || cbor_string_length(a) > PROVEND_NAME_MAX)
    {
        proven_errf(err, errlen, "registry: a malformed row");
        return PROVEN_ERR;
    }
    len = cbor_string_length(a);
    memcpy(name, cbor_string_handle(a), len);
    name[len] = '\0';

    app = provend_apps_find(apps, name);
    if (pass == 0) {
        if (app == NULL) {
            app = provend_apps_add(apps, name);
        }
        if (app == NULL || !cbor_isa_bytestring(b)
            || cbor_bytestring_length(b) != PROVEN_AUDIT_KEY_LEN)
        {
            proven_errf(err, errlen, "registry: a malformed created row");
            return PROVEN_ERR;
        }
        app->reserved = 1;
        memcpy(app->reserved_owner, cbor_bytestring_handle(b),
               PROVEN_AUDIT_KEY_LEN);
        return PROVEN_OK;
    }

    if (app != NULL && cbor_isa_string(b) && cbor_string_is_definite(b)) {
        for (i = 0; i < app->norigins; i++) {
            if (strlen(app->origins[i]) == cbor_string_length(b)
                && memcmp(app->origins[i], cbor_string_handle(b),
                          cbor_string_length(b)) == 0)
            {
                return PROVEN_OK;
            }
        }
    }
    if (app != NULL && app->norigins < PROVEND_ORIGINS_MAX
        && cbor_isa_string(b) && cbor_string_is_definite(b))
    {
        app->origins[app->norigins] = strndup(
            (const char *) cbor_string_handle(b), cbor_string_length(b));
        if (app->origins[app->norigins] == NULL) {
            proven_errf(err, errlen, "out of memory");
            return PROVEN_ERR;
        }
        app->norigins++;
    }
    return PROVEN_OK;
}


/*
 * Applications created over sessions and not deployed yet, and every
 * app's allowed origins (tables "created" and "origins"), page by page.
 */
static int
provend_apps_load_created(provend_apps_t *apps, char *err, size_t errlen)
{
    int                     rc, pass;
    char                   *cursor;
    size_t                  i, n;
    cbor_item_t            *rows, *next;
    provend_storage_req_t  *req;

    for (pass = 0; pass < 2; pass++) {
        cursor = NULL;
        do {
            req = provend_apps_sql(PROVEND_OP_SQL_QUERY, 1);
            if (req == NULL
                || provend_apps_stmt(req, 0, pass == 0
                                     ? "SELECT app, owner FROM created "
                                       "ORDER BY app"
                                     : "SELECT app, origin FROM origins "
                                       "ORDER BY app, origin", 0)
                   != PROVEN_OK)
            {
                provend_storage_req_free(req);
                free(cursor);
                proven_errf(err, errlen, "out of memory");
                return PROVEN_ERR;
            }
            req->limit = PROVEND_APPS_PAGE;
            req->cursor = cursor;
            cursor = NULL;

            rc = provend_apps_call(apps->storage, req, err, errlen);
            rows = rc == PROVEN_OK ? proven_cbor_map_get(req->result, "rows")
                                   : NULL;
            n = rows != NULL && cbor_isa_array(rows) ? cbor_array_size(rows)
                                                     : 0;
            for (i = 0; i < n && rc == PROVEN_OK; i++) {
                rc = provend_apps_created_row(apps, pass,
                                              cbor_array_handle(rows)[i],
                                              err, errlen);
            }
            next = rc == PROVEN_OK ? proven_cbor_map_get(req->result,
                                                         "cursor")
                                   : NULL;
            if (next != NULL && cbor_isa_string(next)) {
                cursor = strndup((const char *) cbor_string_handle(next),
                                 cbor_string_length(next));
            }
            provend_storage_req_free(req);
            if (rc != PROVEN_OK) {
                free(cursor);
                return PROVEN_ERR;
            }
        } while (cursor != NULL);
    }
    return PROVEN_OK;
}


/*
 * Reads every audit entry back and replays each chain: a chain that does
 * not verify stops provend (the data directory holds something provend
 * never wrote, and the encryption below should have caught it).
 */
int
provend_apps_load(provend_apps_t *apps, char *err, size_t errlen)
{
    int                     rc;
    char                    name[PROVEND_NAME_MAX + 1], *cursor;
    size_t                  i, n, len, elen;
    uint8_t                 hash[PROVEN_AUDIT_HASH_LEN], *entry;
    cbor_item_t            *rows, *row, *next;
    provend_app_t          *app;
    proven_audit_entry_t    e;
    provend_storage_req_t  *req;

    cursor = NULL;

    for ( ;; ) {
        req = provend_apps_sql(PROVEND_OP_SQL_QUERY, 1);
        if (req == NULL
            || provend_apps_stmt(req, 0, "SELECT app, entry FROM audit "
                                 "ORDER BY app, seq", 0) != PROVEN_OK)
        {
            provend_storage_req_free(req);
            free(cursor);
            proven_errf(err, errlen, "out of memory");
            return PROVEN_ERR;
        }
        req->limit = PROVEND_APPS_PAGE;
        req->cursor = cursor;
        cursor = NULL;

        if (provend_apps_call(apps->storage, req, err, errlen) != PROVEN_OK) {
            provend_storage_req_free(req);
            return PROVEN_ERR;
        }

        rows = proven_cbor_map_get(req->result, "rows");
        n = rows != NULL && cbor_isa_array(rows) ? cbor_array_size(rows) : 0;
        rc = PROVEN_OK;

        for (i = 0; i < n && rc == PROVEN_OK; i++) {
            row = cbor_array_handle(rows)[i];
            entry = NULL;
            if (!cbor_isa_array(row) || cbor_array_size(row) != 2
                || !cbor_isa_string(cbor_array_handle(row)[0])
                || cbor_string_length(cbor_array_handle(row)[0])
                   > PROVEND_NAME_MAX
                || proven_cbor_bytes(cbor_array_handle(row)[1],
                                     PROVEN_AUDIT_ENTRY_MAX, &entry, &elen)
                   != PROVEN_OK)
            {
                proven_errf(err, errlen, "registry: a malformed audit row");
                rc = PROVEN_ERR;
                break;
            }

            len = cbor_string_length(cbor_array_handle(row)[0]);
            memcpy(name, cbor_string_handle(cbor_array_handle(row)[0]), len);
            name[len] = '\0';

            app = provend_apps_find(apps, name);
            if (app == NULL) {
                app = provend_apps_add(apps, name);
            }

            proven_audit_hash(entry, elen, hash);
            if (app == NULL
                || proven_audit_decode(entry, elen, &e, err, errlen)
                   != PROVEN_OK
                || proven_audit_apply(&app->state, &e, hash, err, errlen)
                   != PROVEN_OK
                || provend_apps_keep_entry(app, entry, elen) != PROVEN_OK)
            {
                rc = PROVEN_ERR;
            }
            free(entry);
        }

        next = proven_cbor_map_get(req->result, "cursor");
        if (rc == PROVEN_OK && next != NULL && cbor_isa_string(next)) {
            cursor = strndup((const char *) cbor_string_handle(next),
                             cbor_string_length(next));
        }
        provend_storage_req_free(req);

        if (rc != PROVEN_OK) {
            free(cursor);
            return PROVEN_ERR;
        }
        if (cursor == NULL) {
            break;
        }
    }

    if (provend_apps_load_created(apps, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    for (app = apps->apps; app != NULL; app = app->next) {
        if (!app->state.has_current) {
            continue;
        }
        if (provend_apps_load_package(apps->storage, app->state.current,
                                      &app->package, &app->package_len,
                                      err, errlen) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        if (provend_apps_manifest(app->package, app->package_len,
                                  &app->routes, &app->schedules,
                                  &app->nschedules, err, errlen)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
    }

    return PROVEN_OK;
}


/* ---- another node's changes (a cluster) --------------------------------- */

/*
 * The audit entries of app after its seq, applied in memory; then, if its
 * current package changed, that package loaded and served.
 */
static int
provend_apps_catch_up(provend_apps_t *apps, provend_app_t *app)
{
    int                     rc, had, changed, more;
    size_t                  i, n, elen;
    uint8_t                 before[PROVEN_AUDIT_HASH_LEN];
    uint8_t                 hash[PROVEN_AUDIT_HASH_LEN], *entry;
    uint8_t                *package;
    size_t                  package_len, nschedules;
    char                    err[2 * PROVEN_ERR_LEN];
    cbor_item_t            *rows, *row, *routes;
    provend_cron_t         *schedules;
    proven_audit_entry_t    e;
    provend_storage_req_t  *req;

    had = app->state.has_current;
    memcpy(before, app->state.current, sizeof(before));

    /* page after page: a node that was away may be far behind */
    do {
        req = provend_apps_sql(PROVEND_OP_SQL_QUERY, 1);
        if (req == NULL
            || provend_apps_stmt(req, 0, "SELECT entry FROM audit "
                                 "WHERE app = ? AND seq > ? ORDER BY seq", 2)
               != PROVEN_OK
            || provend_apps_param(&req->stmts[0], 0, PROVEND_SQL_TEXT,
                                  app->name, strlen(app->name))
               != PROVEN_OK)
        {
            provend_storage_req_free(req);
            return PROVEN_ERR;
        }
        provend_apps_param_int(&req->stmts[0], 1, (int64_t) app->state.seq);
        req->limit = PROVEND_APPS_PAGE;

        rc = provend_apps_call(apps->storage, req, err, sizeof(err));
        rows = rc == PROVEN_OK ? proven_cbor_map_get(req->result, "rows")
                               : NULL;
        n = rows != NULL && cbor_isa_array(rows) ? cbor_array_size(rows) : 0;
        more = n == PROVEND_APPS_PAGE;
        for (i = 0; i < n && rc == PROVEN_OK; i++) {
            row = cbor_array_handle(rows)[i];
            entry = NULL;
            if (!cbor_isa_array(row) || cbor_array_size(row) != 1
                || proven_cbor_bytes(cbor_array_handle(row)[0],
                                     PROVEN_AUDIT_ENTRY_MAX, &entry, &elen)
                   != PROVEN_OK)
            {
                snprintf(err, sizeof(err), "a malformed audit row");
                rc = PROVEN_ERR;
                break;
            }
            proven_audit_hash(entry, elen, hash);
            if (proven_audit_decode(entry, elen, &e, err, sizeof(err))
                != PROVEN_OK
                || proven_audit_apply(&app->state, &e, hash, err, sizeof(err))
                   != PROVEN_OK
                || provend_apps_keep_entry(app, entry, elen) != PROVEN_OK)
            {
                rc = PROVEN_ERR;
            }
            free(entry);
        }
        provend_storage_req_free(req);
        if (rc != PROVEN_OK) {
            provend_error("apps: %s: another node's change not applied: %s",
                          app->name, err);
            return PROVEN_ERR;
        }
    } while (more);

    changed = app->state.has_current
              && (!had || memcmp(before, app->state.current,
                                 sizeof(before)) != 0);
    if (!changed) {
        return PROVEN_OK;
    }

    package = NULL;
    routes = NULL;
    schedules = NULL;
    nschedules = 0;
    if (provend_apps_load_package(apps->storage, app->state.current,
                                  &package, &package_len, err, sizeof(err))
        != PROVEN_OK
        || provend_apps_manifest(package, package_len, &routes, &schedules,
                                 &nschedules, err, sizeof(err)) != PROVEN_OK)
    {
        provend_error("apps: %s: the package another node deployed is not "
                      "served: %s", app->name, err);
        free(package);
        return PROVEN_ERR;
    }

    free(app->schedules);
    app->schedules = schedules;
    app->nschedules = nschedules;
    free(app->package);
    app->package = package;
    app->package_len = package_len;
    if (app->routes != NULL) {
        cbor_decref(&app->routes);
    }
    app->routes = routes;
    app->package_gen++;
    app->idle = 0;
    uv_timer_stop(&app->restart);
    provend_info("apps: %s: serving entry %llu, deployed by another node",
                 app->name, (unsigned long long) app->state.seq);
    if (!apps->stopping) {
        provend_worker_start(apps, app);
    }
    return PROVEN_OK;
}


/*
 * Reads the registry again after another node changed it (in a cluster,
 * every node applies every change to its copy): new entries, created
 * applications, allowed origins.  Apps with a change of this node's own
 * under way are left to it; it asks again when done.
 */
static void
provend_apps_refresh(provend_apps_t *apps)
{
    char                    name[PROVEND_NAME_MAX + 1];
    char                    err[2 * PROVEN_ERR_LEN];
    size_t                  i, n, len;
    uint64_t                seq;
    cbor_item_t            *rows, *row;
    provend_app_t          *app;
    provend_storage_req_t  *req;

    if (apps->stopping) {
        return;
    }

    req = provend_apps_sql(PROVEND_OP_SQL_QUERY, 1);
    if (req == NULL
        || provend_apps_stmt(req, 0, "SELECT app, MAX(seq) FROM audit "
                             "GROUP BY app ORDER BY app", 0) != PROVEN_OK)
    {
        provend_storage_req_free(req);
        return;
    }
    req->limit = PROVEND_SQL_LIMIT_MAX;

    if (provend_apps_call(apps->storage, req, err, sizeof(err))
        != PROVEN_OK)
    {
        provend_error("apps: %s", err);
        provend_storage_req_free(req);
        return;
    }

    rows = proven_cbor_map_get(req->result, "rows");
    n = rows != NULL && cbor_isa_array(rows) ? cbor_array_size(rows) : 0;
    for (i = 0; i < n; i++) {
        row = cbor_array_handle(rows)[i];
        if (!cbor_isa_array(row) || cbor_array_size(row) != 2
            || !cbor_isa_string(cbor_array_handle(row)[0])
            || !cbor_string_is_definite(cbor_array_handle(row)[0])
            || cbor_string_length(cbor_array_handle(row)[0])
               > PROVEND_NAME_MAX
            || proven_cbor_uint(cbor_array_handle(row)[1], &seq)
               != PROVEN_OK)
        {
            continue;
        }
        len = cbor_string_length(cbor_array_handle(row)[0]);
        memcpy(name, cbor_string_handle(cbor_array_handle(row)[0]), len);
        name[len] = '\0';

        app = provend_apps_find(apps, name);
        if (app == NULL) {
            if (apps->napps >= PROVEND_APPS_MAX) {
                continue;
            }
            app = provend_apps_add(apps, name);
            if (app == NULL) {
                continue;
            }
        }
        if (!app->busy && app->state.seq < seq) {
            (void) provend_apps_catch_up(apps, app);
        }
    }
    provend_storage_req_free(req);

    if (provend_apps_load_created(apps, err, sizeof(err)) != PROVEN_OK) {
        provend_error("apps: %s", err);
    }
    provend_apps_publish(apps);
}


void
provend_apps_on_refresh(uv_async_t *handle)
{
    provend_apps_refresh(handle->data);
}


/* On a storage thread: the registry's copy here changed. */
void
provend_apps_registry_changed(void *data, const provend_storage_req_t *req)
{
    provend_apps_t  *apps;

    (void) req;
    apps = data;
    uv_async_send(&apps->refresh);
}


/* After a change of this node's own: one from elsewhere may have waited. */
void
provend_apps_refresh_soon(provend_apps_t *apps)
{
    if (apps->clustered && apps->refresh_open) {
        uv_async_send(&apps->refresh);
    }
}
