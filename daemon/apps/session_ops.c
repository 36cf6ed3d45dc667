/*
 * What sessions ask of applications: created apps, allowed origins,
 * owners, deploys over RPC, and the runs of handlers (Execute).
 */

#include "apps_int.h"


/* ---- for sessions: created apps, origins, owners, deploys -------------- */

typedef struct {
    uv_work_t              work;
    provend_apps_t        *apps;
    char                   app[PROVEND_NAME_MAX + 1];
    uint8_t                owner[PROVEN_AUDIT_KEY_LEN];
    char                  *origin;        /* NULL: a creation */
    provend_storage_status_t status;
    char                   error[PROVEN_ERR_LEN];
    provend_apps_done_pt   done;
    void                  *data;
} provend_registry_job_t;


static void
provend_registry_write(uv_work_t *work)
{
    provend_registry_job_t  *job;
    provend_storage_req_t   *req;

    job = work->data;
    job->status = PROVEND_ST_INTERNAL;
    snprintf(job->error, sizeof(job->error), "out of memory");

    req = provend_apps_sql(PROVEND_OP_SQL_EXECUTE, 1);
    if (req == NULL
        || provend_apps_stmt(req, 0, job->origin == NULL
                             ? "INSERT INTO created (app, owner) "
                               "VALUES (?, ?)"
                             : "INSERT OR IGNORE INTO origins (app, origin) "
                               "VALUES (?, ?)", 2) != PROVEN_OK
        || provend_apps_param(&req->stmts[0], 0, PROVEND_SQL_TEXT, job->app,
                              strlen(job->app)) != PROVEN_OK
        || (job->origin == NULL
            ? provend_apps_param(&req->stmts[0], 1, PROVEND_SQL_BLOB,
                                 job->owner, PROVEN_AUDIT_KEY_LEN)
            : provend_apps_param(&req->stmts[0], 1, PROVEND_SQL_TEXT,
                                 job->origin, strlen(job->origin)))
           != PROVEN_OK)
    {
        provend_storage_req_free(req);
        return;
    }
    job->status = provend_storage_call(job->apps->storage, req);
    snprintf(job->error, sizeof(job->error), "%s", req->error);
    provend_storage_req_free(req);
}


static void
provend_registry_written(uv_work_t *work, int status)
{
    cbor_item_t             *result;
    provend_app_t           *app;
    provend_registry_job_t  *job;

    job = work->data;
    app = provend_apps_find(job->apps, job->app);

    if (status != 0 || job->status != PROVEND_ST_OK || app == NULL) {
        provend_error("apps: registry write for %s failed: %s", job->app,
                      job->error);
        if (app != NULL) {
            app->busy = 0;
        }
        if (job->origin == NULL && app != NULL && app->state.seq == 0
            && app->nserving == 0 && app->starting == NULL)
        {
            provend_apps_remove(job->apps, app);
        }
        job->done(job->data, "storage_error", job->error, NULL);

    } else if (job->origin == NULL) {
        app->busy = 0;
        provend_info("apps: %s created over a session", job->app);
        result = cbor_build_string(job->app);
        job->done(job->data, result == NULL ? "internal" : NULL,
                  "out of memory", result);
        if (result != NULL) {
            cbor_decref(&result);
        }

    } else {
        size_t  i;

        app->busy = 0;
        /* a refresh after the copy here applied it may have added it */
        for (i = 0; i < app->norigins; i++) {
            if (strcmp(app->origins[i], job->origin) == 0) {
                break;
            }
        }
        if (i == app->norigins && app->norigins < PROVEND_ORIGINS_MAX) {
            app->origins[app->norigins++] = job->origin;
            job->origin = NULL;
        }
        job->done(job->data, NULL, NULL, NULL);
    }

    provend_apps_refresh_soon(job->apps);
    free(job->origin);
    free(job);
}


static int
provend_registry_queue(provend_registry_job_t *job)
{
    job->work.data = job;
    return uv_queue_work(job->apps->loop, &job->work, provend_registry_write,
                         provend_registry_written) == 0
           ? PROVEN_OK : PROVEN_ERR;
}


static int
provend_app_owned_by(provend_app_t *app, const uint8_t *identity)
{
    size_t  i;

    if (app->state.seq == 0) {
        return app->reserved
               && memcmp(app->reserved_owner, identity,
                         PROVEN_AUDIT_KEY_LEN) == 0;
    }
    for (i = 0; i < app->state.nowners; i++) {
        if (memcmp(app->state.owners[i], identity, PROVEN_AUDIT_KEY_LEN)
            == 0)
        {
            return 1;
        }
    }
    return 0;
}


int
provend_apps_create(provend_apps_t *apps, const uint8_t *owner,
    provend_apps_done_pt done, void *data)
{
    size_t                   mine, all;
    uint8_t                  id[16];
    provend_app_t           *app;
    provend_registry_job_t  *job;

    if (apps->stopping) {
        done(data, "unavailable", "provend is stopping", NULL);
        return PROVEN_OK;
    }

    /* apps created and never deployed are bounded, per owner and in all,
     * so that identities made for the purpose cannot fill the node */
    mine = all = 0;
    for (app = apps->apps; app != NULL; app = app->next) {
        if (app->reserved && app->state.seq == 0) {
            all++;
            mine += memcmp(app->reserved_owner, owner,
                           PROVEN_AUDIT_KEY_LEN) == 0;
        }
    }
    if (mine >= PROVEND_CREATED_PER_OWNER) {
        done(data, "too_large", "deploy the applications you created "
             "before you create more", NULL);
        return PROVEN_OK;
    }
    if (apps->napps >= PROVEND_APPS_MAX || all >= PROVEND_CREATED_MAX) {
        done(data, "too_large", "this node holds as many applications as it "
             "may", NULL);
        return PROVEN_OK;
    }

    job = calloc(1, sizeof(*job));
    if (job == NULL || proven_uuid_v4(id) != PROVEN_OK) {
        free(job);
        return PROVEN_ERR;
    }
    /* a UUID's text: [0-9a-f-], a valid app name */
    proven_uuid_text(id, job->app);
    job->apps = apps;
    memcpy(job->owner, owner, PROVEN_AUDIT_KEY_LEN);
    job->done = done;
    job->data = data;

    app = provend_apps_add(apps, job->app);
    if (app == NULL) {
        free(job);
        return PROVEN_ERR;
    }
    app->reserved = 1;
    app->busy = 1;
    memcpy(app->reserved_owner, owner, PROVEN_AUDIT_KEY_LEN);

    if (provend_registry_queue(job) != PROVEN_OK) {
        provend_apps_remove(apps, app);
        free(job);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


int
provend_apps_add_origin(provend_apps_t *apps, const char *name,
    const uint8_t *identity, const char *origin, provend_apps_done_pt done,
    void *data)
{
    char                     err[PROVEN_ERR_LEN];
    size_t                   i;
    provend_app_t           *app;
    provend_registry_job_t  *job;

    if (apps->stopping) {
        done(data, "unavailable", "provend is stopping", NULL);
        return PROVEN_OK;
    }
    app = provend_apps_find(apps, name);
    if (app == NULL || (app->state.seq == 0 && !app->reserved)) {
        snprintf(err, sizeof(err), "no application \"%s\"", name);
        done(data, "not_found", err, NULL);
        return PROVEN_OK;
    }
    if (!provend_app_owned_by(app, identity)) {
        done(data, "forbidden", "only an owner may allow origins", NULL);
        return PROVEN_OK;
    }
    for (i = 0; i < app->norigins; i++) {
        if (strcmp(app->origins[i], origin) == 0) {
            done(data, NULL, NULL, NULL);
            return PROVEN_OK;
        }
    }
    if (app->norigins >= PROVEND_ORIGINS_MAX) {
        done(data, "too_large", "an application allows at most 64 origins",
             NULL);
        return PROVEN_OK;
    }
    if (app->busy) {
        done(data, "conflict", "another change to this application is under "
             "way; try again", NULL);
        return PROVEN_OK;
    }

    job = calloc(1, sizeof(*job));
    if (job == NULL || (job->origin = strdup(origin)) == NULL) {
        free(job);
        return PROVEN_ERR;
    }
    snprintf(job->app, sizeof(job->app), "%s", name);
    job->apps = apps;
    job->done = done;
    job->data = data;
    app->busy = 1;

    if (provend_registry_queue(job) != PROVEN_OK) {
        app->busy = 0;
        free(job->origin);
        free(job);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


int
provend_apps_origin_allowed(provend_apps_t *apps, const char *name,
    const char *origin)
{
    size_t          i;
    provend_app_t  *app;

    app = provend_apps_find(apps, name);
    for (i = 0; app != NULL && i < app->norigins; i++) {
        if (strcmp(app->origins[i], origin) == 0) {
            return 1;
        }
    }
    return 0;
}


cbor_item_t *
provend_apps_owned_by(provend_apps_t *apps, const uint8_t *identity)
{
    cbor_item_t    *list, *name;
    provend_app_t  *app;

    list = cbor_new_indefinite_array();
    for (app = apps->apps; list != NULL && app != NULL; app = app->next) {
        if (!provend_app_owned_by(app, identity)) {
            continue;
        }
        name = cbor_build_string(app->name);
        if (name == NULL || !cbor_array_push(list, name)) {
            if (name != NULL) {
                cbor_decref(&name);
            }
            cbor_decref(&list);
            return NULL;
        }
        cbor_decref(&name);
    }
    return list;
}


typedef struct {
    provend_apps_done_pt   done;
    void                  *data;
} provend_session_change_t;


/* app.deploy's answer frame, for the session that asked. */
static void
provend_session_changed(void *ctx, uint8_t *frame, size_t len)
{
    char                       err[PROVEN_ERR_LEN];
    proven_response_t          res;
    provend_session_change_t  *sc;

    sc = ctx;
    if (frame == NULL || len < PROVEN_FRAME_HEADER
        || proven_response_decode(frame + PROVEN_FRAME_HEADER,
                                  len - PROVEN_FRAME_HEADER, &res, err,
                                  sizeof(err)) != PROVEN_OK)
    {
        sc->done(sc->data, "internal", "out of memory", NULL);
    } else {
        sc->done(sc->data, res.ok ? NULL : res.code, res.message,
                 res.ok ? res.result : NULL);
        proven_response_free(&res);
    }
    free(frame);
    free(sc);
}


int
provend_apps_deploy_by_session(provend_apps_t *apps, const char *name,
    cbor_item_t *package, const uint8_t *identity, const uint8_t *session,
    const char *origin, const uint8_t *signature, provend_apps_done_pt done,
    void *data)
{
    int                        ok;
    proven_request_t           req;
    provend_session_change_t  *sc;

    if (apps->stopping) {
        done(data, "unavailable", "provend is stopping", NULL);
        return PROVEN_OK;
    }
    sc = malloc(sizeof(*sc));
    if (sc == NULL) {
        return PROVEN_ERR;
    }
    sc->done = done;
    sc->data = data;

    memset(&req, 0, sizeof(req));
    snprintf(req.op, sizeof(req.op), "app.deploy");
    req.map = cbor_new_definite_map(6);
    ok = req.map != NULL
         && proven_cbor_map_put(req.map, "app", cbor_build_string(name))
            == PROVEN_OK
         && proven_cbor_map_put(req.map, "package", cbor_incref(package))
            == PROVEN_OK
         && proven_cbor_map_put(req.map, "signer", cbor_build_bytestring(
                identity, PROVEN_AUDIT_KEY_LEN)) == PROVEN_OK
         && proven_cbor_map_put(req.map, "signature", cbor_build_bytestring(
                signature, PROVEN_AUDIT_SIG_LEN)) == PROVEN_OK
         && proven_cbor_map_put(req.map, "session", cbor_build_bytestring(
                session, PROVEN_AUDIT_SESSION_LEN)) == PROVEN_OK
         && proven_cbor_map_put(req.map, "origin", cbor_build_string(origin))
            == PROVEN_OK;
    if (!ok) {
        if (req.map != NULL) {
            cbor_decref(&req.map);
        }
        free(sc);
        return PROVEN_ERR;
    }
    provend_apps_op_change(apps, &req, 1, 1, provend_session_changed, sc);
    cbor_decref(&req.map);
    return PROVEN_OK;
}


/* ---- runs for sessions -------------------------------------------------- */

#define PROVEND_RUN_TIMEOUT_MS   (310 * 1000)   /* past any handler's own */


#define PROVEND_RUN_ANSWER_MAX   (PROVEN_FRAME_MAX)


typedef struct {
    provend_apps_t           *apps;
    char                      app[PROVEND_NAME_MAX + 1];
    cbor_item_t              *request;      /* the app.run frame's map */
    provend_worker_answer_pt  done;
    void                     *data;
} provend_run_t;


static void
provend_run_free(provend_run_t *run)
{
    cbor_decref(&run->request);
    free(run);
}


/* On the worker's kept line (made when it has none that works). */
static void
provend_run_send(provend_run_t *run, provend_worker_t *w)
{
    if (w->chan != NULL && !provend_chan_usable(w->chan)) {
        provend_chan_release(w->chan);
        w->chan = NULL;
    }
    if (w->chan == NULL) {
        w->chan = provend_chan_open(run->apps->loop, w->socket);
    }
    if (w->chan == NULL
        || provend_chan_call(w->chan, run->request, PROVEND_RUN_TIMEOUT_MS,
                             run->done, run->data) != PROVEN_OK)
    {
        run->done(run->data, "the worker's line is full or broken", NULL);
    }
    provend_run_free(run);
}


/* A worker named by its socket (an app.wake answer) but not serving. */
static void
provend_run_send_once(provend_run_t *run, const char *socket)
{
    if (provend_worker_call(run->apps->loop, socket, run->request,
                            PROVEND_RUN_TIMEOUT_MS, PROVEND_RUN_ANSWER_MAX,
                            run->done, run->data) != PROVEN_OK)
    {
        run->done(run->data, "out of memory", NULL);
    }
    provend_run_free(run);
}


/* The answer to the app.wake a run made for itself: a frame, or NULL. */
static void
provend_run_woken(void *ctx, uint8_t *frame, size_t len)
{
    char                text[PROVEN_ERR_LEN + 64], err[PROVEN_ERR_LEN];
    size_t              i;
    cbor_item_t        *socket;
    provend_app_t      *app;
    provend_run_t      *run;
    proven_response_t   res;

    run = ctx;
    if (frame == NULL || len < PROVEN_FRAME_HEADER
        || proven_response_decode(frame + PROVEN_FRAME_HEADER,
                                  len - PROVEN_FRAME_HEADER, &res, err,
                                  sizeof(err)) != PROVEN_OK)
    {
        free(frame);
        run->done(run->data, "the application's worker did not start",
                  NULL);
        provend_run_free(run);
        return;
    }
    free(frame);

    socket = res.ok && cbor_isa_map(res.result)
             ? proven_cbor_map_get(res.result, "socket") : NULL;
    if (socket == NULL || !cbor_isa_string(socket)
        || !cbor_string_is_definite(socket)
        || cbor_string_length(socket) == 0
        || cbor_string_length(socket) > PROVEND_SOCKET_MAX)
    {
        snprintf(text, sizeof(text), "%s", res.ok ? "no worker socket"
                 : res.message);
        proven_response_free(&res);
        run->done(run->data, text, NULL);
        provend_run_free(run);
        return;
    }

    snprintf(text, sizeof(text), "%.*s", (int) cbor_string_length(socket),
             (const char *) cbor_string_handle(socket));
    proven_response_free(&res);

    app = provend_apps_find(run->apps, run->app);
    for (i = 0; app != NULL && i < app->nserving; i++) {
        if (strcmp(app->serving[i]->socket, text) == 0) {
            provend_run_send(run, app->serving[i]);
            return;
        }
    }
    provend_run_send_once(run, text);
}


int
provend_apps_exists(provend_apps_t *apps, const char *name)
{
    provend_app_t  *app;

    app = provend_apps_find(apps, name);
    return app != NULL && (app->reserved || app->state.seq > 0);
}


int
provend_apps_run(provend_apps_t *apps, const char *name,
    const uint8_t *package, const char *handler, cbor_item_t *args,
    const char *identity, const char *grant, provend_worker_answer_pt done,
    void *data)
{
    return provend_apps_run_on(apps, name, package, handler, args, identity,
                               grant, NULL, done, data);
}


int
provend_apps_run_on(provend_apps_t *apps, const char *name,
    const uint8_t *package, const char *handler, cbor_item_t *args,
    const char *identity, const char *grant, const char *trigger,
    provend_worker_answer_pt done, void *data)
{
    int               ok;
    provend_app_t    *app;
    provend_run_t    *run;
    proven_request_t  wake;

    if (apps->stopping) {
        return PROVEND_RUN_STOPPING;
    }
    app = provend_apps_find(apps, name);
    if (app == NULL || app->package == NULL || !app->state.has_current) {
        return PROVEND_RUN_NO_APP;
    }
    if (package != NULL
        && memcmp(package, app->state.current, PROVEN_AUDIT_HASH_LEN) != 0)
    {
        return PROVEND_RUN_HASH_UNKNOWN;
    }

    run = calloc(1, sizeof(*run));
    if (run == NULL) {
        return PROVEN_ERR;
    }
    run->apps = apps;
    snprintf(run->app, sizeof(run->app), "%s", name);
    run->done = done;
    run->data = data;
    run->request = proven_request_new(1, "app.run");
    ok = run->request != NULL
         && proven_cbor_map_put(run->request, "handler",
                                cbor_build_string(handler)) == PROVEN_OK
         && proven_cbor_map_put(run->request, "args",
                                args != NULL ? cbor_incref(args)
                                             : cbor_new_null()) == PROVEN_OK
         && (args == NULL || !cbor_isa_array(args)
             || proven_cbor_map_put(run->request, "spread",
                                    cbor_build_bool(true)) == PROVEN_OK)
         && (trigger == NULL
             || proven_cbor_map_put(run->request, "trigger",
                                    cbor_build_string(trigger)) == PROVEN_OK)
         && (identity == NULL
             || (proven_cbor_map_put(run->request, "identity",
                                     cbor_build_string(identity))
                 == PROVEN_OK
                 && proven_cbor_map_put(run->request, "grant",
                                        cbor_build_string(grant))
                    == PROVEN_OK));
    if (!ok) {
        if (run->request != NULL) {
            cbor_decref(&run->request);
        }
        free(run);
        return PROVEN_ERR;
    }

    app->last_call = uv_now(apps->loop);

    if (app->nserving > 0) {
        provend_run_send(run, app->serving[apps->next_run++
                                           % app->nserving]);
        return PROVEN_OK;
    }

    /* Asleep or restarting: wait for a worker as nginx's requests do. */
    memset(&wake, 0, sizeof(wake));
    wake.id = 0;
    snprintf(wake.op, sizeof(wake.op), "app.wake");
    wake.map = cbor_new_definite_map(1);
    if (wake.map == NULL
        || proven_cbor_map_put(wake.map, "app", cbor_build_string(name))
           != PROVEN_OK)
    {
        if (wake.map != NULL) {
            cbor_decref(&wake.map);
        }
        provend_run_free(run);
        return PROVEN_ERR;
    }
    provend_apps_op_wake(apps, &wake, provend_run_woken, run);
    cbor_decref(&wake.map);
    return PROVEN_OK;
}


/* ---- the app.* ops of provend's socket ---------------------------------- */

/* Refused while provend stops (answered here): 1. */
static int
provend_apps_refused(provend_apps_t *apps, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    if (!apps->stopping) {
        return 0;
    }

    provend_ops_reply_error(reply, ctx, req->id, "unavailable",
                            "provend is stopping");
    return 1;
}


typedef void (*provend_apps_op_pt)(provend_apps_t *apps,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

/* The ops of the table below that take the request alone, by their arg. */
static const provend_apps_op_pt  provend_apps_op_fns[] = {
    provend_apps_op_head,
    provend_apps_op_list,
    provend_apps_op_audit,
    provend_apps_op_wake
};


static void
provend_apps_on_op(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    if (!provend_apps_refused(subsystem, req, reply, ctx)) {
        provend_apps_op_fns[op->arg](subsystem, req, reply, ctx);
    }
}


/* app.deploy (arg 1) and app.update (arg 0). */
static void
provend_apps_on_change(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    if (!provend_apps_refused(subsystem, req, reply, ctx)) {
        provend_apps_op_change(subsystem, req, op->arg, 0, reply, ctx);
    }
}


const provend_op_t  provend_apps_ops[] = {
    { "app.head",   PROVEND_CALLER_SOCKET, provend_apps_on_op, 0 },
    { "app.deploy", PROVEND_CALLER_SOCKET, provend_apps_on_change, 1 },
    { "app.update", PROVEND_CALLER_SOCKET, provend_apps_on_change, 0 },
    { "app.list",   PROVEND_CALLER_SOCKET, provend_apps_on_op, 1 },
    { "app.audit",  PROVEND_CALLER_SOCKET, provend_apps_on_op, 2 },
    { "app.wake",   PROVEND_CALLER_SOCKET, provend_apps_on_op, 3 },
    { NULL, 0, NULL, 0 }
};
