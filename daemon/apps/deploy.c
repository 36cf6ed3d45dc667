/*
 * Changes (app.deploy, app.update: checked by proven-runtime, then
 * recorded) and the app.* ops.
 */

#include "apps_int.h"


/* ---- changes: app.deploy and app.update --------------------------------- */

static void
provend_change_free(provend_change_t *c)
{
    provend_apps_refresh_soon(c->apps);
    if (c->package != NULL) {
        free(c->package);
    }
    if (c->routes != NULL) {
        cbor_decref(&c->routes);
    }
    free(c->schedules);
    free(c);
}


/* Ends a change that failed: the app is free again (gone if it was new). */
static void
provend_change_fail(provend_change_t *c, const char *code,
    const char *message)
{
    provend_app_t  *app;

    app = c->app;
    app->busy = 0;
    if (app->state.seq == 0 && !app->reserved && app->nserving == 0
        && app->starting == NULL)
    {
        provend_apps_remove(c->apps, app);
    }

    provend_info("apps: %s of %s refused: %s: %s",
                 proven_audit_action_name(c->entry.action), c->entry.app,
                 code, message);
    provend_ops_reply_error(c->reply, c->ctx, c->id, code, message);
    provend_change_free(c);
}


/* Writes the entry (and a deploy's package) in one transaction. */
static void
provend_change_record(uv_work_t *work)
{
    size_t                  n;
    provend_change_t       *c;
    provend_storage_req_t  *req;

    c = work->data;
    c->status = PROVEND_ST_INTERNAL;
    snprintf(c->error, sizeof(c->error), "out of memory");

    /* a rollback serves a package recorded before */
    if (c->entry.action == PROVEN_AUDIT_ROLLBACK
        && provend_apps_load_package(c->apps->storage, c->entry.package,
                                     &c->package, &c->package_len,
                                     c->error, sizeof(c->error))
           != PROVEN_OK)
    {
        c->status = PROVEND_ST_STORAGE_ERROR;
        return;
    }

    n = c->entry.action == PROVEN_AUDIT_DEPLOY ? 2 : 1;
    req = provend_apps_sql(PROVEND_OP_SQL_EXECUTE, n);
    if (req == NULL
        || provend_apps_stmt(req, 0, "INSERT INTO audit (app, seq, entry) "
                             "VALUES (?, ?, ?)", 3) != PROVEN_OK
        || provend_apps_param(&req->stmts[0], 0, PROVEND_SQL_TEXT,
                              c->entry.app, strlen(c->entry.app))
           != PROVEN_OK
        || provend_apps_param(&req->stmts[0], 2, PROVEND_SQL_BLOB,
                              c->encoded, c->encoded_len) != PROVEN_OK)
    {
        provend_storage_req_free(req);
        return;
    }
    provend_apps_param_int(&req->stmts[0], 1, (int64_t) c->entry.seq);

    if (n == 2
        && (provend_apps_stmt(req, 1, "INSERT OR IGNORE INTO packages "
                              "(id, bytes) VALUES (?, ?)", 2) != PROVEN_OK
            || provend_apps_param(&req->stmts[1], 0, PROVEND_SQL_BLOB,
                                  c->entry.package, PROVEN_AUDIT_HASH_LEN)
               != PROVEN_OK
            || provend_apps_param(&req->stmts[1], 1, PROVEND_SQL_BLOB,
                                  c->package, c->package_len) != PROVEN_OK))
    {
        provend_storage_req_free(req);
        return;
    }

    c->status = provend_storage_call(c->apps->storage, req);
    snprintf(c->error, sizeof(c->error), "%s", req->error);
    provend_storage_req_free(req);
}


static void
provend_change_recorded(uv_work_t *work, int status)
{
    int                started;
    char               hex[2 * PROVEN_AUDIT_HASH_LEN + 1];
    provend_app_t     *app;
    provend_change_t  *c;
    cbor_item_t       *result;
    char               err[PROVEN_ERR_LEN];

    c = work->data;
    app = c->app;
    started = 0;

    if (status != 0 || c->status != PROVEND_ST_OK) {
        provend_change_fail(c, "storage_error", c->error);
        return;
    }

    if (provend_apps_keep_entry(app, c->encoded, c->encoded_len)
        != PROVEN_OK
        || proven_audit_apply(&app->state, &c->entry, c->hash, err,
                              sizeof(err)) != PROVEN_OK)
    {
        /* recorded but not applied: a restart replays it */
        provend_error("apps: %s: recorded change %llu not applied: %s",
                      app->name, (unsigned long long) c->entry.seq, err);
        provend_change_fail(c, "internal", "the change was recorded but "
                            "not applied; restart provend");
        return;
    }
    app->busy = 0;

    if (c->package != NULL) {
        /* a rollback's package came from storage: read its manifest now */
        if (c->routes == NULL
            && provend_apps_manifest(c->package, c->package_len, &c->routes,
                                     &c->schedules, &c->nschedules, err,
                                     sizeof(err)) != PROVEN_OK)
        {
            provend_error("apps: %s: the package rolled back to is not "
                          "served: %s", app->name, err);
        }
        if (c->routes != NULL) {
            free(app->schedules);
            app->schedules = c->schedules;
            app->nschedules = c->nschedules;
            c->schedules = NULL;
            free(app->package);
            app->package = c->package;
            app->package_len = c->package_len;
            c->package = NULL;
            if (app->routes != NULL) {
                cbor_decref(&app->routes);
            }
            app->routes = c->routes;
            c->routes = NULL;
            app->package_gen++;
            app->idle = 0;
            uv_timer_stop(&app->restart);
            if (!c->apps->stopping) {
                provend_worker_start(c->apps, app);
                started = 1;
            }
        }
    }

    provend_info("apps: %s: %s recorded as entry %llu",
                 app->name, proven_audit_action_name(c->entry.action),
                 (unsigned long long) c->entry.seq);

    result = cbor_new_definite_map(3);
    proven_hex_encode(c->hash, PROVEN_AUDIT_HASH_LEN, hex);
    if (result != NULL
        && (proven_cbor_map_put(result, "seq", cbor_build_uint64(c->entry.seq))
            != PROVEN_OK
            || proven_cbor_map_put(result, "hash", cbor_build_string(hex))
               != PROVEN_OK))
    {
        cbor_decref(&result);
    }
    if (result != NULL && app->state.has_current) {
        proven_hex_encode(app->state.current, PROVEN_AUDIT_HASH_LEN, hex);
        if (proven_cbor_map_put(result, "package", cbor_build_string(hex))
            != PROVEN_OK)
        {
            cbor_decref(&result);
        }
    }
    if (started) {
        provend_app_hold_deploy(app, c->id, c->entry.seq, result, c->reply,
                                c->ctx);
    } else {
        provend_apps_reply_ok(c->reply, c->ctx, c->id, result);
    }

    provend_change_free(c);
}


static void
provend_change_queue_record(provend_change_t *c)
{
    int  rc;

    c->work.data = c;
    rc = uv_queue_work(c->apps->loop, &c->work, provend_change_record,
                       provend_change_recorded);
    if (rc != 0) {
        provend_change_fail(c, "internal", uv_strerror(rc));
    }
}


static void
provend_change_on_check_closed(uv_handle_t *handle)
{
    provend_change_t  *c;

    c = handle->data;
    if (--c->handles > 0) {
        return;
    }
    c->apps->checks--;

    if (c->timed_out) {
        provend_change_fail(c, "bad_package", "the package did not load "
                            "within 30 s");
    } else if (c->exit_status != 0) {
        /* proven-runtime's own words, without its prefix and newline */
        char  *msg = c->errtext;

        if (strncmp(msg, "proven-runtime: ", 16) == 0) {
            msg += 16;
        }
        msg[strcspn(msg, "\n")] = '\0';
        provend_change_fail(c, "bad_package",
                            msg[0] ? msg : "the package does not load");
    } else {
        provend_change_queue_record(c);
    }
}


static void
provend_change_close_check(provend_change_t *c)
{
    uv_handle_t  *handles[4];
    size_t        i;

    handles[0] = (uv_handle_t *) &c->process;
    handles[1] = (uv_handle_t *) &c->in;
    handles[2] = (uv_handle_t *) &c->err_pipe;
    handles[3] = (uv_handle_t *) &c->timer;
    for (i = 0; i < 4; i++) {
        if (!uv_is_closing(handles[i])) {
            uv_close(handles[i], provend_change_on_check_closed);
        }
    }
}


static void
provend_change_on_check_exit(uv_process_t *process, int64_t status,
    int signal)
{
    provend_change_t  *c;

    c = process->data;
    c->exit_status = signal ? 128 + signal : status;
    provend_change_close_check(c);
}


static void
provend_change_on_check_timeout(uv_timer_t *timer)
{
    provend_change_t  *c;

    c = timer->data;
    c->timed_out = 1;
    uv_process_kill(&c->process, SIGKILL);
}


static void
provend_change_err_alloc(uv_handle_t *handle, size_t suggested,
    uv_buf_t *buf)
{
    provend_change_t  *c;

    (void) suggested;
    c = handle->data;
    if (c->errtext_len >= sizeof(c->errtext) - 1) {
        static char  sink[256];

        buf->base = sink;               /* read past our share: dropped */
        buf->len = sizeof(sink);
        return;
    }
    buf->base = c->errtext + c->errtext_len;
    buf->len = sizeof(c->errtext) - 1 - c->errtext_len;
}


static void
provend_change_on_err(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    provend_change_t  *c;

    c = stream->data;
    if (nread < 0) {
        uv_read_stop(stream);
        return;
    }
    if (buf->base == c->errtext + c->errtext_len) {
        c->errtext_len += (size_t) nread;
        c->errtext[c->errtext_len] = '\0';
    }
}


static void
provend_change_on_written(uv_write_t *req, int status)
{
    provend_change_t  *c;

    (void) status;
    c = req->data;
    if (!uv_is_closing((uv_handle_t *) &c->in)) {
        uv_close((uv_handle_t *) &c->in, provend_change_on_check_closed);
    }
}


/* proven-runtime check: the package loads and declares its manifest. */
static void
provend_change_check(provend_change_t *c)
{
    int                    rc, argc;
    char                  *argv[24];
    uv_buf_t               buf;
    provend_apps_t        *apps;
    uv_process_options_t   options;
    uv_stdio_container_t   stdio[3];

    /* the package's top-level code runs here: sandboxed as a worker is */
    apps = c->apps;
    argc = 0;
    if (apps->self[0] != '\0') {
        argv[argc++] = apps->self;
        argv[argc++] = "--sandbox-exec";
        if (apps->hide[0] != '\0') {
            argv[argc++] = "--hide";
            argv[argc++] = apps->hide;
            argv[argc++] = "--keep-ro";
            argv[argc++] = apps->runtime_dir;
        }
        argv[argc++] = "--";
    }
    argv[argc++] = apps->node;
    argv[argc++] = "--experimental-vm-modules";
    argv[argc++] = "--no-warnings";
    argv[argc++] = apps->runtime_bin;
    argv[argc++] = "check";
    argv[argc++] = "--app";
    argv[argc++] = c->entry.app;
    argv[argc++] = "--package";
    argv[argc++] = "-";
    argv[argc] = NULL;

    uv_pipe_init(apps->loop, &c->in, 0);
    uv_pipe_init(apps->loop, &c->err_pipe, 0);
    uv_timer_init(apps->loop, &c->timer);
    c->in.data = c;
    c->err_pipe.data = c;
    c->timer.data = c;
    c->process.data = c;
    c->write.data = c;
    c->handles = 4;

    memset(&options, 0, sizeof(options));
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *) &c->in;
    stdio[1].flags = UV_IGNORE;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *) &c->err_pipe;
    options.file = argv[0];
    options.args = argv;
    options.exit_cb = provend_change_on_check_exit;
    options.flags = UV_PROCESS_DETACHED;      /* setsid(): no terminal */
    options.stdio = stdio;
    options.stdio_count = 3;

    rc = uv_spawn(apps->loop, &c->process, &options);
    if (rc != 0) {
        snprintf(c->errtext, sizeof(c->errtext), "cannot run %s to check "
                 "the package: %s", apps->node, uv_strerror(rc));
        c->exit_status = 127;
        provend_change_close_check(c);
        return;
    }

    uv_timer_start(&c->timer, provend_change_on_check_timeout,
                   PROVEND_CHECK_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *) &c->err_pipe, provend_change_err_alloc,
                  provend_change_on_err);

    buf = uv_buf_init((char *) c->package, (unsigned) c->package_len);
    if (uv_write(&c->write, (uv_stream_t *) &c->in, &buf, 1,
                 provend_change_on_written) != 0)
    {
        uv_close((uv_handle_t *) &c->in, provend_change_on_check_closed);
    }
}


/* ---- ops ---------------------------------------------------------------- */

/* The "app" argument: a valid name that is not the node's own. */
static int
provend_apps_arg_app(const cbor_item_t *map, char *name, char *err,
    size_t errlen)
{
    cbor_item_t  *v;
    size_t        len;

    v = proven_cbor_map_get(map, "app");
    if (v == NULL || !cbor_isa_string(v) || !cbor_string_is_definite(v)
        || (len = cbor_string_length(v)) == 0 || len > PROVEND_NAME_MAX)
    {
        proven_errf(err, errlen, "\"app\" must be a name of 1..%d characters",
                    PROVEND_NAME_MAX);
        return PROVEN_ERR;
    }
    memcpy(name, cbor_string_handle(v), len);
    name[len] = '\0';

    if (!provend_name_valid(name, len) || name[0] == '_' || name[0] == '-') {
        proven_errf(err, errlen,
                    "app names are [a-z0-9_-], not starting with _ "
                    "or -");
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


void
provend_apps_op_head(provend_apps_t *apps, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    int             rc;
    char            name[PROVEND_NAME_MAX + 1], err[PROVEN_ERR_LEN];
    size_t          i;
    uint8_t         zero[PROVEN_AUDIT_HASH_LEN];
    cbor_item_t    *result, *owners;
    provend_app_t  *app;

    if (provend_apps_arg_app(req->map, name, err, sizeof(err)) != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", err);
        return;
    }

    memset(zero, 0, sizeof(zero));
    app = provend_apps_find(apps, name);
    if (app != NULL && app->state.seq == 0) {
        app = NULL;                     /* its first deploy is under way */
    }

    result = cbor_new_definite_map(app && app->state.has_current ? 5 : 4);
    owners = cbor_new_definite_array(app ? app->state.nowners : 0);
    if (result == NULL || owners == NULL) {
        goto failed;
    }
    for (i = 0; app != NULL && i < app->state.nowners; i++) {
        cbor_item_t  *key = cbor_build_bytestring(app->state.owners[i],
                                               PROVEN_AUDIT_KEY_LEN);

        if (key == NULL || !cbor_array_push(owners, key)) {
            goto failed;
        }
        cbor_decref(&key);
    }

    /* map_put takes owners' reference whatever it returns */
    rc = proven_cbor_map_put(result, "owners", owners);
    owners = NULL;
    if (rc != PROVEN_OK
        || proven_cbor_map_put(result, "app", cbor_build_string(name))
           != PROVEN_OK
        || proven_cbor_map_put(result, "seq",
                            cbor_build_uint64(app ? app->state.seq : 0))
           != PROVEN_OK
        || proven_cbor_map_put(result, "head",
                            cbor_build_bytestring(app ? app->state.head : zero,
                                               PROVEN_AUDIT_HASH_LEN))
           != PROVEN_OK)
    {
        goto failed;
    }

    if (app != NULL && app->state.has_current
        && proven_cbor_map_put(result, "current",
                            cbor_build_bytestring(app->state.current,
                                               PROVEN_AUDIT_HASH_LEN))
           != PROVEN_OK)
    {
        goto failed;
    }

    provend_apps_reply_ok(reply, ctx, req->id, result);
    return;

failed:

    if (owners != NULL) {
        cbor_decref(&owners);
    }
    if (result != NULL) {
        cbor_decref(&result);
    }
    provend_apps_reply_ok(reply, ctx, req->id, NULL);
}


void
provend_apps_op_audit(provend_apps_t *apps, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    int             rc;
    char            name[PROVEND_NAME_MAX + 1], err[PROVEN_ERR_LEN];
    size_t          i;
    cbor_item_t    *result, *entries, *e;
    provend_app_t  *app;

    if (provend_apps_arg_app(req->map, name, err, sizeof(err)) != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", err);
        return;
    }

    app = provend_apps_find(apps, name);
    if (app == NULL || app->nentries == 0) {
        snprintf(err, sizeof(err), "no application \"%s\"", name);
        provend_ops_reply_error(reply, ctx, req->id, "not_found", err);
        return;
    }

    result = cbor_new_definite_map(2);
    entries = cbor_new_definite_array(app->nentries);
    if (result == NULL || entries == NULL) {
        goto failed;
    }
    for (i = 0; i < app->nentries; i++) {
        e = cbor_build_bytestring(app->entries[i], app->entry_lens[i]);
        if (e == NULL || !cbor_array_push(entries, e)) {
            goto failed;
        }
        cbor_decref(&e);
    }

    rc = proven_cbor_map_put(result, "entries", entries);
    entries = NULL;
    if (rc != PROVEN_OK
        || proven_cbor_map_put(result, "app", cbor_build_string(name))
           != PROVEN_OK)
    {
        goto failed;
    }

    provend_apps_reply_ok(reply, ctx, req->id, result);
    return;

failed:

    if (entries != NULL) {
        cbor_decref(&entries);
    }
    if (result != NULL) {
        cbor_decref(&result);
    }
    provend_apps_reply_ok(reply, ctx, req->id, NULL);
}


void
provend_apps_op_list(provend_apps_t *apps, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    int             rc;
    char            hex[2 * PROVEN_AUDIT_HASH_LEN + 1];
    size_t          i;
    cbor_item_t    *result, *list, *item, *owners, *key;
    provend_app_t  *app;

    result = cbor_new_definite_map(1);
    list = cbor_new_indefinite_array();
    if (result == NULL || list == NULL) {
        goto failed;
    }

    for (app = apps->apps; app != NULL; app = app->next) {
        if (app->state.seq == 0) {
            continue;
        }

        item = cbor_new_indefinite_map();
        owners = cbor_new_definite_array(app->state.nowners);
        if (item == NULL || owners == NULL || !cbor_array_push(list, item)) {
            if (owners != NULL) {
                cbor_decref(&owners);
            }
            if (item != NULL) {
                cbor_decref(&item);
            }
            goto failed;
        }
        cbor_decref(&item);

        for (i = 0; i < app->state.nowners; i++) {
            proven_hex_encode(app->state.owners[i], PROVEN_AUDIT_KEY_LEN,
                              hex);
            key = cbor_build_string(hex);
            if (key == NULL || !cbor_array_push(owners, key)) {
                cbor_decref(&owners);
                goto failed;
            }
            cbor_decref(&key);
        }

        proven_hex_encode(app->state.current, PROVEN_AUDIT_HASH_LEN, hex);
        if (proven_cbor_map_put(item, "owners", owners) != PROVEN_OK
            || proven_cbor_map_put(item, "app", cbor_build_string(app->name))
               != PROVEN_OK
            || proven_cbor_map_put(item, "seq",
                                   cbor_build_uint64(app->state.seq))
               != PROVEN_OK
            || proven_cbor_map_put(item, "current", cbor_build_string(hex))
               != PROVEN_OK
            || (app->routes != NULL
                && proven_cbor_map_put(item, "routes",
                                       cbor_incref(app->routes))
                   != PROVEN_OK)
            || proven_cbor_map_put(item, "sockets",
                                   provend_apps_sockets(app)) != PROVEN_OK
            || proven_cbor_map_put(item, "idle", cbor_build_bool(app->idle))
               != PROVEN_OK)
        {
            goto failed;
        }
    }

    rc = proven_cbor_map_put(result, "apps", list);
    list = NULL;
    if (rc != PROVEN_OK) {
        goto failed;
    }
    provend_apps_reply_ok(reply, ctx, req->id, result);
    return;

failed:

    if (list != NULL) {
        cbor_decref(&list);
    }
    if (result != NULL) {
        cbor_decref(&result);
    }
    provend_apps_reply_ok(reply, ctx, req->id, NULL);
}


/*
 * app.deploy and app.update: the entry is built here on the log's head and
 * must verify before anything else happens; the app is busy until the
 * change is recorded or refused, so its head cannot move meanwhile.
 */
void
provend_apps_op_change(provend_apps_t *apps, const proven_request_t *req,
    int deploy, int by_session, provend_ops_reply_pt reply, void *ctx)
{
    char                   name[PROVEND_NAME_MAX + 1], err[PROVEN_ERR_LEN];
    char                   action[16];
    size_t                 len;
    cbor_item_t           *v;
    provend_app_t         *app;
    provend_change_t      *c;
    proven_app_state_t     trial;

    err[0] = '\0';
    if (provend_apps_arg_app(req->map, name, err, sizeof(err)) != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", err);
        return;
    }

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        provend_apps_reply_ok(reply, ctx, req->id, NULL);
        return;
    }
    c->apps = apps;
    c->id = req->id;
    c->reply = reply;
    c->ctx = ctx;
    snprintf(c->entry.app, sizeof(c->entry.app), "%s", name);

    if (proven_cbor_fixed(req->map, "signer", c->entry.signer,
                               PROVEN_AUDIT_KEY_LEN) != PROVEN_OK
        || proven_cbor_fixed(req->map, "signature", c->entry.signature,
                                  PROVEN_AUDIT_SIG_LEN) != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                 "\"signer\" (32 bytes) and \"signature\" "
                                 "(64 bytes) are required");
        free(c);
        return;
    }

    /* only sessions (sessions.c) make changes proved by a session */
    if (by_session) {
        if (proven_cbor_fixed(req->map, "session", c->entry.session,
                              PROVEN_AUDIT_SESSION_LEN) != PROVEN_OK)
        {
            provend_ops_reply_error(reply, ctx, req->id, "internal",
                                    "no session id");
            free(c);
            return;
        }
        c->entry.has_session = 1;
        v = proven_cbor_map_get(req->map, "origin");
        if (v == NULL
            || proven_cbor_text_into(v, c->entry.origin,
                                     sizeof(c->entry.origin)) != PROVEN_OK)
        {
            provend_ops_reply_error(reply, ctx, req->id, "internal",
                                    "no session origin");
            free(c);
            return;
        }
    }

    if (deploy) {
        c->entry.action = PROVEN_AUDIT_DEPLOY;
        v = proven_cbor_map_get(req->map, "package");
        if (v == NULL || proven_cbor_bytes(v, PROVEND_PACKAGE_MAX,
                                           &c->package, &c->package_len)
                       != PROVEN_OK)
        {
            snprintf(err, sizeof(err), "\"package\" must be the package's "
                     "bytes, at most %d", PROVEND_PACKAGE_MAX);
            provend_ops_reply_error(reply, ctx, req->id, "bad_request", err);
            free(c);
            return;
        }
        SHA256(c->package, c->package_len, c->entry.package);

        if (provend_apps_manifest(c->package, c->package_len, &c->routes,
                                  &c->schedules, &c->nschedules, err,
                                  sizeof(err)) != PROVEN_OK)
        {
            provend_ops_reply_error(reply, ctx, req->id, "bad_package", err);
            provend_change_free(c);
            return;
        }

    } else {
        v = proven_cbor_map_get(req->map, "action");
        len = v != NULL && cbor_isa_string(v) && cbor_string_is_definite(v)
              ? cbor_string_length(v) : sizeof(action);
        if (len < sizeof(action)) {
            memcpy(action, cbor_string_handle(v), len);
            action[len] = '\0';
            c->entry.action = proven_audit_action_parse(action);
        }

        if (c->entry.action == PROVEN_AUDIT_ROLLBACK) {
            if (proven_cbor_fixed(req->map, "package", c->entry.package,
                                       PROVEN_AUDIT_HASH_LEN) != PROVEN_OK)
            {
                provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                         "a rollback names the package id "
                                         "(32 bytes) to go back to");
                free(c);
                return;
            }
        } else if (c->entry.action == PROVEN_AUDIT_ADD_OWNER
                   || c->entry.action == PROVEN_AUDIT_REMOVE_OWNER)
        {
            if (proven_cbor_fixed(req->map, "owner", c->entry.owner,
                                       PROVEN_AUDIT_KEY_LEN) != PROVEN_OK)
            {
                provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                         "an owner change names the owner's "
                                         "Ed25519 public key (32 bytes)");
                free(c);
                return;
            }
        } else {
            provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                     "\"action\" must be rollback, "
                                     "add_owner or remove_owner");
            free(c);
            return;
        }
    }

    app = provend_apps_find(apps, name);
    if (app == NULL && by_session) {
        snprintf(err, sizeof(err), "no application \"%s\": create it "
                 "first (CreateApplication)", name);
        provend_ops_reply_error(reply, ctx, req->id, "not_found", err);
        provend_change_free(c);
        return;
    }
    if (app != NULL && app->reserved && app->state.seq == 0
        && memcmp(app->reserved_owner, c->entry.signer,
                  PROVEN_AUDIT_KEY_LEN) != 0)
    {
        snprintf(err, sizeof(err), "\"%s\" was created by another owner",
                 name);
        provend_ops_reply_error(reply, ctx, req->id, "forbidden", err);
        provend_change_free(c);
        return;
    }
    if (app == NULL && !deploy) {
        snprintf(err, sizeof(err), "no application \"%s\"", name);
        provend_ops_reply_error(reply, ctx, req->id, "not_found", err);
        provend_change_free(c);
        return;
    }
    if (app != NULL && app->busy) {
        provend_ops_reply_error(reply, ctx, req->id, "conflict",
                                 "another change to this application is "
                                 "under way; try again");
        provend_change_free(c);
        return;
    }
    if (app == NULL) {
        if (apps->napps >= PROVEND_APPS_MAX) {
            provend_ops_reply_error(reply, ctx, req->id, "too_large",
                                     "this node holds as many applications "
                                     "as it may");
            provend_change_free(c);
            return;
        }
        app = provend_apps_add(apps, name);
        if (app == NULL) {
            provend_apps_reply_ok(reply, ctx, req->id, NULL);
            provend_change_free(c);
            return;
        }
    }
    c->app = app;
    app->busy = 1;

    c->entry.seq = app->state.seq + 1;
    memcpy(c->entry.prev, app->state.head, PROVEN_AUDIT_HASH_LEN);
    c->entry.time = (uint64_t) time(NULL);

    if (proven_audit_encode(&c->entry, c->encoded, sizeof(c->encoded),
                            &c->encoded_len) != PROVEN_OK)
    {
        provend_change_fail(c, "internal", "cannot encode the entry");
        return;
    }
    proven_audit_hash(c->encoded, c->encoded_len, c->hash);

    if (proven_audit_verify(&c->entry, err, sizeof(err)) != PROVEN_OK) {
        provend_change_fail(c, "forbidden", "the signature does not cover "
                            "this change on the log's current head (fetch "
                            "app.head and sign again)");
        return;
    }

    /* the rules, on a copy: the real state changes once recorded */
    trial = app->state;
    trial.deployed = NULL;
    if (app->state.ndeployed > 0) {
        trial.deployed = malloc(app->state.ndeployed
                                * sizeof(*trial.deployed));
        if (trial.deployed == NULL) {
            provend_change_fail(c, "internal", "out of memory");
            return;
        }
        memcpy(trial.deployed, app->state.deployed,
               app->state.ndeployed * sizeof(*trial.deployed));
    }
    if (proven_audit_apply(&trial, &c->entry, c->hash, err, sizeof(err))
        != PROVEN_OK)
    {
        proven_app_state_free(&trial);
        provend_change_fail(c, strstr(err, "not an owner") ? "forbidden"
                                                            : "bad_request",
                            err);
        return;
    }
    proven_app_state_free(&trial);

    if (deploy) {
        if (apps->checks >= PROVEND_CHECKS_MAX) {
            provend_change_fail(c, "busy", "other deploys are being checked; "
                                "try again in a moment");
            return;
        }
        apps->checks++;
        provend_change_check(c);
    } else {
        provend_change_queue_record(c);
    }
}


/*
 * app.wake {app} -> {socket}: nginx found no serving worker for the app
 * (idle, or its worker restarting); answered once one is ready.
 */
void
provend_apps_op_wake(provend_apps_t *apps, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    char             name[PROVEND_NAME_MAX + 1], err[PROVEN_ERR_LEN];
    provend_app_t   *app;
    provend_wake_t  *wake;

    if (provend_apps_arg_app(req->map, name, err, sizeof(err)) != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", err);
        return;
    }

    app = provend_apps_find(apps, name);
    if (app == NULL || app->package == NULL) {
        snprintf(err, sizeof(err), "no application \"%s\" is deployed",
                 name);
        provend_ops_reply_error(reply, ctx, req->id, "not_found", err);
        return;
    }

    if (app->nserving > 0) {
        /* the caller's table was older than the pool */
        provend_apps_reply_socket(reply, ctx, req->id,
                                  app->serving[0]->socket);
        return;
    }

    if (app->nwakes >= PROVEND_WAKES_MAX) {
        provend_ops_reply_error(reply, ctx, req->id, "busy", "too many "
                                "requests wait for this application's worker");
        return;
    }
    wake = malloc(sizeof(*wake));
    if (wake == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    wake->id = req->id;
    wake->since = uv_now(apps->loop);
    wake->reply = reply;
    wake->ctx = ctx;
    wake->next = app->wakes;
    app->wakes = wake;
    app->nwakes++;

    /* a restart under backoff waits its turn; otherwise one starts now */
    app->last_call = uv_now(apps->loop);
    if (app->starting == NULL
        && !uv_is_active((uv_handle_t *) &app->restart))
    {
        provend_info("apps: %s is called: starting a worker", app->name);
        provend_worker_start(apps, app);
    }
}
