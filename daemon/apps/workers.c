/*
 * The state page nginx reads, and the runtime workers that serve each
 * application: start, pool, retire, restart, wake.
 */

#include "apps_int.h"


static void provend_app_restart_later(provend_app_t *app);
static int provend_app_current_serves(provend_app_t *app);


/* ---- the state page ----------------------------------------------------- */

int
provend_apps_page_open(provend_apps_t *apps, char *err, size_t errlen)
{
    int    fd;
    char  *path;
    void  *page;

    if (asprintf(&path, "%s/state", apps->run_dir) == -1) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }

    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, PROVEN_STATE_SIZE) != 0) {
        proven_errf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        free(path);
        return PROVEN_ERR;
    }
    free(path);

    page = mmap(NULL, PROVEN_STATE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                fd, 0);
    close(fd);
    if (page == MAP_FAILED) {
        proven_errf(err, errlen,
                    "cannot map the state page: %s", strerror(errno));
        return PROVEN_ERR;
    }

    apps->page = page;
    proven_state_init(apps->page);
    return PROVEN_OK;
}


/* The sockets of the app's serving workers, as a CBOR array. */
cbor_item_t *
provend_apps_sockets(provend_app_t *app)
{
    size_t        i;
    cbor_item_t  *list, *item;

    list = cbor_new_definite_array(app->nserving);
    if (list == NULL) {
        return NULL;
    }
    for (i = 0; i < app->nserving; i++) {
        item = cbor_build_string(app->serving[i]->socket);
        if (item == NULL || !cbor_array_push(list, item)) {
            if (item != NULL) {
                cbor_decref(&item);
            }
            cbor_decref(&list);
            return NULL;
        }
        cbor_decref(&item);
    }
    return list;
}


/*
 * What nginx needs: for each app with a package its serving workers'
 * sockets (none: nginx asks provend to wake it) and routes.
 */
void
provend_apps_publish(provend_apps_t *apps)
{
    char            hex[2 * PROVEN_AUDIT_HASH_LEN + 1];
    size_t          len;
    uint8_t        *data;
    cbor_item_t    *root, *map, *entry;
    provend_app_t  *app;
    struct cbor_pair  pair;

    if (apps->page == NULL) {
        return;
    }

    root = cbor_new_definite_map(1);
    map = cbor_new_indefinite_map();
    if (root == NULL || map == NULL) {
        goto failed;
    }

    for (app = apps->apps; app != NULL; app = app->next) {
        if (app->package == NULL || app->routes == NULL) {
            continue;
        }

        proven_hex_encode(app->state.current, PROVEN_AUDIT_HASH_LEN, hex);
        entry = cbor_new_definite_map(3);
        if (entry == NULL
            || proven_cbor_map_put(entry, "sockets",
                                   provend_apps_sockets(app)) != PROVEN_OK
            || proven_cbor_map_put(entry, "package", cbor_build_string(hex))
               != PROVEN_OK
            || proven_cbor_map_put(entry, "routes", cbor_incref(app->routes))
               != PROVEN_OK)
        {
            if (entry != NULL) {
                cbor_decref(&entry);
            }
            goto failed;
        }

        pair.key = cbor_build_string(app->name);
        pair.value = entry;
        if (pair.key == NULL || !cbor_map_add(map, pair)) {
            if (pair.key != NULL) {
                cbor_decref(&pair.key);
            }
            cbor_decref(&entry);
            goto failed;
        }
        cbor_decref(&pair.key);
        cbor_decref(&entry);
    }

    /* map_put takes map's reference whatever it returns */
    entry = map;
    map = NULL;
    if (proven_cbor_map_put(root, "apps", entry) != PROVEN_OK) {
        goto failed;
    }

    if (proven_cbor_dump(root, &data, &len) != PROVEN_OK) {
        goto failed;
    }
    cbor_decref(&root);

    if (len > PROVEN_STATE_SIZE - PROVEN_STATE_HEADER) {
        provend_error("apps: the state page cannot hold %zu bytes: routes "
                      "of the latest change are not served", len);
        free(data);
        return;
    }

    proven_state_publish(apps->page, data, len);
    free(data);
    return;

failed:

    provend_error("apps: out of memory publishing the state page");
    if (map != NULL) {
        cbor_decref(&map);
    }
    if (root != NULL) {
        cbor_decref(&root);
    }
}


/* ---- workers ------------------------------------------------------------ */

static void
provend_worker_on_closed(uv_handle_t *handle)
{
    provend_worker_t  *w;

    w = handle->data;
    if (--w->handles > 0) {
        return;
    }
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        w->apps->workers = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    }
    if (w->socket[0] != '\0') {
        (void) unlink(w->socket);
    }
    if (w->package != NULL) {
        OPENSSL_cleanse(w->package, w->package_len);
        free(w->package);
    }
    free(w);
}


static void
provend_worker_close_pipe(uv_pipe_t *pipe)
{
    if (!uv_is_closing((uv_handle_t *) pipe)) {
        uv_close((uv_handle_t *) pipe, provend_worker_on_closed);
    }
}


/* The answer to app.wake: {socket}. */
void
provend_apps_reply_socket(provend_ops_reply_pt reply, void *ctx, uint64_t id,
    const char *socket)
{
    cbor_item_t  *result;

    result = cbor_new_definite_map(1);
    if (result != NULL
        && proven_cbor_map_put(result, "socket", cbor_build_string(socket))
           != PROVEN_OK)
    {
        cbor_decref(&result);
        result = NULL;
    }
    provend_apps_reply_ok(reply, ctx, id, result);
}


/* Answers every app.wake waiting: with socket, or unavailable. */
void
provend_app_answer_wakes(provend_app_t *app, const char *socket)
{
    provend_wake_t  *wake;

    while ((wake = app->wakes) != NULL) {
        app->wakes = wake->next;
        app->nwakes--;
        if (socket == NULL) {
            provend_ops_reply_error(wake->reply, wake->ctx, wake->id,
                                    "unavailable", "the application's "
                                    "worker did not start");
        } else {
            provend_apps_reply_socket(wake->reply, wake->ctx, wake->id,
                                      socket);
        }
        free(wake);
    }
}


/* The held answer d (unlinked): ok, or why == NULL ? ok : not_serving. */
static void
provend_app_answer_deploy(provend_app_t *app, provend_deployed_t *d,
    const char *why)
{
    char  msg[PROVEN_ERR_LEN + 128];

    app->apps->deploys_held--;

    if (why == NULL) {
        provend_apps_reply_ok(d->reply, d->ctx, d->id, d->result);

    } else {
        snprintf(msg, sizeof(msg), "entry %llu of %s was recorded, but no "
                 "worker of it serves on this node: %s",
                 (unsigned long long) d->seq, app->name, why);
        provend_ops_reply_error(d->reply, d->ctx, d->id, "not_serving", msg);
        if (d->result != NULL) {
            cbor_decref(&d->result);
        }
    }

    free(d);
}


/*
 * Holds a change's answer until a worker of its package serves.  One per
 * app: a newer change's worker replaces the one an older change waited
 * for, so the older is answered now (recorded, and superseded).
 */
void
provend_app_hold_deploy(provend_app_t *app, uint64_t id, uint64_t seq,
    cbor_item_t *result, provend_ops_reply_pt reply, void *ctx)
{
    provend_deployed_t  *d;

    d = app->deployed;
    if (d != NULL) {
        app->deployed = NULL;
        provend_app_answer_deploy(app, d, NULL);
    }

    d = app->apps->deploys_held < PROVEND_DEPLOYS_HELD_MAX
        ? calloc(1, sizeof(*d)) : NULL;
    if (d == NULL) {
        /* recorded all the same: answered now rather than held */
        provend_apps_reply_ok(reply, ctx, id, result);
        return;
    }

    d->id = id;
    d->seq = seq;
    d->since = uv_now(app->apps->loop);
    d->result = result;
    d->reply = reply;
    d->ctx = ctx;
    app->deployed = d;
    app->apps->deploys_held++;
}


/*
 * Answers the held change: why NULL, once its package (or a later one)
 * serves; else, if held since before now - the wait (now 0: at once), it
 * is told why no worker of it serves.
 */
void
provend_app_answer_deploys(provend_app_t *app, uint64_t now,
    const char *why)
{
    provend_deployed_t  *d;

    d = app->deployed;
    if (d == NULL) {
        return;
    }

    if (why == NULL && !provend_app_current_serves(app)) {
        return;
    }

    if (why != NULL && now != 0 && now - d->since < PROVEND_DEPLOY_WAIT_MS) {
        return;
    }

    app->deployed = NULL;
    provend_app_answer_deploy(app, d, why);
}


/* Takes w out of the serving pool; 1 if it was there. */
static int
provend_app_unserve(provend_app_t *app, provend_worker_t *w)
{
    size_t  i;

    for (i = 0; i < app->nserving; i++) {
        if (app->serving[i] == w) {
            memmove(&app->serving[i], &app->serving[i + 1],
                    (app->nserving - i - 1) * sizeof(app->serving[0]));
            app->nserving--;
            return 1;
        }
    }
    return 0;
}


static void
provend_apps_on_restart(uv_timer_t *timer)
{
    provend_app_t   *app;
    provend_apps_t  *apps;

    app = timer->data;
    apps = app->apps;
    if (!apps->stopping && app->starting == NULL && app->package != NULL
        && !provend_app_current_serves(app)
        && (!app->idle || app->nwakes > 0))
    {
        provend_worker_start(apps, app);
    }
}


static void
provend_worker_on_exit(uv_process_t *process, int64_t status, int signal)
{
    provend_app_t     *app;
    provend_apps_t    *apps;
    provend_worker_t  *w;

    w = process->data;
    apps = w->apps;
    app = w->app;
    w->exited = 1;
    if (w->chan != NULL) {
        provend_chan_release(w->chan);
        w->chan = NULL;
    }

    if (app != NULL) {
        if (provend_app_unserve(app, w)) {
            provend_apps_publish(apps);
        }
        if (app->starting == w) {
            char  why[128];

            app->starting = NULL;
            provend_app_answer_wakes(app, NULL);
            snprintf(why, sizeof(why), "its worker exited before it served "
                     "(status %lld, signal %d); provend starts it again",
                     (long long) status, signal);
            provend_app_answer_deploys(app, 0, why);
        }

        /* the last worker of the current package gone: another, after a
           backoff (an idle app's only if someone waits for it) */
        if (!apps->stopping && app->starting == NULL
            && !provend_app_current_serves(app))
        {
            provend_warn("apps: the worker of %s exited (status %lld, "
                         "signal %d); restarting", app->name,
                         (long long) status, signal);
            provend_app_restart_later(app);
        } else if (!apps->stopping) {
            provend_warn("apps: a worker of %s exited (status %lld, signal "
                         "%d); %zu still serve", app->name,
                         (long long) status, signal, app->nserving);
        }
    }

    provend_worker_close_pipe(&w->in);
    provend_worker_close_pipe(&w->out);
    provend_worker_close_pipe(&w->err);
    uv_close((uv_handle_t *) process, provend_worker_on_closed);
}


/* Reads go on where the last line stopped: stdout's, or stderr's. */
static void
provend_worker_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    provend_worker_t  *w;

    (void) suggested;
    w = handle->data;
    if (handle == (uv_handle_t *) &w->err) {
        buf->base = w->err_line + w->err_len;
        buf->len = sizeof(w->err_line) - w->err_len;
    } else {
        buf->base = w->line + w->line_len;
        buf->len = sizeof(w->line) - w->line_len;
    }
}


/*
 * A worker replaced by another or no longer needed.  SIGKILL: now (one
 * that serves nothing yet).  SIGTERM: by the sweep, PROVEND_RETIRE_GRACE_MS
 * after the page without it went out, so that requests nginx routed with
 * the page before still find it; then SIGKILL if it is still there
 * PROVEND_RETIRED_KILL_MS later (its runtime drains for 10 s at most, but
 * a process may also not be listening).
 */
static void
provend_worker_retire(provend_worker_t *w, int sig)
{
    w->app = NULL;
    w->retired_ms = uv_now(w->apps->loop);
    if (sig == SIGKILL && !w->exited) {
        uv_process_kill(&w->process, SIGKILL);
        w->termed = 1;
    }
}


/* Arms the restart timer with the backoff, which doubles each time. */
static void
provend_app_restart_later(provend_app_t *app)
{
    uv_timer_start(&app->restart, provend_apps_on_restart, app->backoff_ms,
                   0);
    app->backoff_ms = app->backoff_ms * 2 > PROVEND_RESTART_MAX_MS
                      ? PROVEND_RESTART_MAX_MS : app->backoff_ms * 2;
}


/* Whether a worker of the current package serves. */
static int
provend_app_current_serves(provend_app_t *app)
{
    size_t  i;

    for (i = 0; i < app->nserving; i++) {
        if (app->serving[i]->package_gen == app->package_gen) {
            return 1;
        }
    }
    return 0;
}


/*
 * The worker serves: it joins the pool, and if it runs a newer package,
 * the workers of the older one are told to stop.
 */
static void
provend_worker_ready(provend_worker_t *w)
{
    size_t            i;
    provend_app_t    *app;

    app = w->app;
    w->ready = 1;
    if (app == NULL || app->starting != w) {
        return;
    }

    app->starting = NULL;
    app->idle = 0;
    app->backoff_ms = PROVEND_RESTART_MIN_MS;
    app->hot_since = 0;
    app->cold_since = 0;
    app->last_call = uv_now(w->apps->loop);

    for (i = app->nserving; i-- > 0; ) {
        if (app->serving[i]->package_gen != w->package_gen) {
            /* in-flight requests finish: the runtime drains on SIGTERM */
            provend_worker_retire(app->serving[i], SIGTERM);
            provend_app_unserve(app, app->serving[i]);
        }
    }
    if (app->nserving == PROVEND_POOL_MAX) {
        provend_worker_retire(w, SIGTERM);
        return;
    }
    app->serving[app->nserving++] = w;

    provend_apps_publish(w->apps);
    provend_info("apps: %s serves on %s (%zu worker%s)", app->name,
                 w->socket, app->nserving, app->nserving == 1 ? "" : "s");
    provend_app_answer_wakes(app, w->socket);
    provend_app_answer_deploys(app, 0, NULL);
}


/* No call for idle_ms: every worker retired until app.wake. */
static void
provend_app_sleep(provend_app_t *app)
{
    provend_info("apps: %s had no call for %llu s: its workers stop until "
                 "the next request", app->name,
                 (unsigned long long) (app->apps->idle_ms / 1000));
    app->idle = 1;
    while (app->nserving > 0) {
        provend_worker_retire(app->serving[--app->nserving], SIGTERM);
    }
    provend_apps_publish(app->apps);
}


/*
 * Under the one cap on all workers (--app-memory-total): 0 when app may
 * start one more, once the app called least recently (not app, none of
 * whose calls or starts is under way) has been idled if it had to be;
 * -1 when there is no such app.  Its schedules and next request wake it.
 */
static int
provend_apps_make_room(provend_apps_t *apps, provend_app_t *app)
{
    unsigned           live;
    provend_app_t     *a, *lru;
    provend_worker_t  *w;

    if (apps->workers_total == 0) {
        return 0;
    }
    live = 0;
    for (w = apps->workers; w != NULL; w = w->next) {
        live += w->app != NULL && !w->exited;
    }
    while (live >= apps->workers_total) {
        lru = NULL;
        for (a = apps->apps; a != NULL; a = a->next) {
            if (a == app || a->nserving == 0 || a->starting != NULL
                || a->nwakes > 0)
            {
                continue;
            }
            if (lru == NULL || a->last_call < lru->last_call) {
                lru = a;
            }
        }
        if (lru == NULL) {
            return -1;
        }
        provend_info("apps: %s is idled, the app called least recently: "
                     "%s needs a worker and all %u the memory cap allows "
                     "run", lru->name, app->name, apps->workers_total);
        live -= (unsigned) lru->nserving;
        provend_app_sleep(lru);
    }
    return 0;
}


/*
 * A serving worker's report of its last second: the pool grows, shrinks
 * or goes idle (see PROVEND_POOL_*).
 */
static void
provend_worker_load(provend_worker_t *w, unsigned busy, uint64_t calls)
{
    size_t             i;
    uint64_t           now, sum;
    provend_app_t     *app;
    provend_apps_t    *apps;
    provend_worker_t  *victim;

    app = w->app;
    apps = w->apps;
    if (app == NULL || !w->ready || apps->stopping) {
        return;
    }
    now = uv_now(apps->loop);
    if (calls != w->calls) {
        app->last_call = now;
    }
    w->calls = calls;
    w->busy = busy > 1000 ? 1000 : busy;

    sum = 0;
    for (i = 0; i < app->nserving; i++) {
        sum += app->serving[i]->busy;
    }

    if (app->nserving > 0 && sum >= PROVEND_POOL_HOT * app->nserving) {
        app->hot_since = app->hot_since ? app->hot_since : now;
    } else {
        app->hot_since = 0;
    }
    if (app->nserving > 1 && sum < 500 * (app->nserving - 1)) {
        app->cold_since = app->cold_since ? app->cold_since : now;
    } else {
        app->cold_since = 0;
    }

    if (app->hot_since && now - app->hot_since >= PROVEND_POOL_HOT_MS
        && app->starting == NULL && app->nserving < apps->workers_max)
    {
        app->hot_since = 0;
        provend_info("apps: %s is busy (%llu/1000 on average): one more "
                     "worker", app->name,
                     (unsigned long long) (sum / app->nserving));
        provend_worker_start(apps, app);

    } else if (app->cold_since && now - app->cold_since >= PROVEND_POOL_COLD_MS)
    {
        app->cold_since = 0;
        victim = app->serving[--app->nserving];
        provend_apps_publish(apps);
        provend_worker_retire(victim, SIGTERM);
        provend_info("apps: %s needs fewer workers: %zu serve", app->name,
                     app->nserving);

    } else if (apps->idle_ms != 0 && app->nschedules == 0
               && app->starting == NULL && app->nwakes == 0
               && now - app->last_call >= apps->idle_ms)
    {
        provend_app_sleep(app);
    }
}


/* One line from a worker: "ready", or "load BUSY CALLS" each second. */
static void
provend_worker_line(provend_worker_t *w, char *line)
{
    char                *end;
    unsigned long        busy;
    unsigned long long   calls;

    if (strcmp(line, "ready") == 0) {
        if (!w->ready) {
            provend_worker_ready(w);
        }
        return;
    }
    if (strncmp(line, "load ", 5) == 0) {
        errno = 0;
        busy = strtoul(line + 5, &end, 10);
        if (*end == ' ') {
            calls = strtoull(end + 1, &end, 10);
            if (*end == '\0' && errno == 0) {
                provend_worker_load(w, (unsigned) (busy > 1000 ? 1000 : busy),
                                    calls);
            }
        }
    }
}


static void
provend_worker_on_read(uv_stream_t *stream, ssize_t nread,
    const uv_buf_t *buf)
{
    char              *nl;
    size_t             n;
    provend_worker_t  *w;

    (void) buf;
    w = stream->data;

    if (nread < 0) {
        uv_read_stop(stream);
        return;
    }

    w->line_len += (size_t) nread;
    while ((nl = memchr(w->line, '\n', w->line_len)) != NULL) {
        *nl = '\0';
        if (!w->skip_line) {
            provend_worker_line(w, w->line);
        }
        w->skip_line = 0;
        n = (size_t) (nl - w->line) + 1;
        memmove(w->line, w->line + n, w->line_len - n);
        w->line_len -= n;
    }
    if (w->line_len == sizeof(w->line)) {
        w->line_len = 0;             /* not ours: dropped to its end */
        w->skip_line = 1;
    }
}


/*
 * What a worker writes to its standard error goes to provend's log, line
 * by line, under its app's name: never to the operator's terminal, and
 * never as lines of provend's own (the log escapes control bytes).
 */
static void
provend_worker_on_stderr(uv_stream_t *stream, ssize_t nread,
    const uv_buf_t *buf)
{
    char              *nl;
    size_t             n;
    provend_worker_t  *w;

    (void) buf;
    w = stream->data;
    if (nread > 0) {
        w->err_len += (size_t) nread;
    }
    while ((nl = memchr(w->err_line, '\n', w->err_len)) != NULL
           || w->err_len == sizeof(w->err_line)
           || (nread < 0 && w->err_len > 0))
    {
        n = nl != NULL ? (size_t) (nl - w->err_line) : w->err_len;
        provend_info("apps: %s: %.*s", w->name, (int) n, w->err_line);
        n += nl != NULL;
        memmove(w->err_line, w->err_line + n, w->err_len - n);
        w->err_len -= n;
    }
    if (nread < 0) {
        uv_read_stop(stream);
    }
}


static void
provend_worker_on_written(uv_write_t *req, int status)
{
    provend_worker_t  *w;

    (void) status;
    w = req->data;
    OPENSSL_cleanse(w->package, w->package_len);
    free(w->package);
    w->package = NULL;
    provend_worker_close_pipe(&w->in);
}


/*
 * run/apps/NAME: the one directory of the data directory an app's worker
 * sees (it holds that app's sockets only, so no app can take another's
 * socket name).  A root provend's workers run as nobody, who owns it.
 */
static int
provend_worker_socket_dir(provend_apps_t *apps, provend_app_t *app,
    char *dir, size_t dir_size, char *keep, size_t keep_size)
{
    int  fd;

    if ((size_t) snprintf(dir, dir_size, "%s/apps/%s", apps->run_dir,
                          app->name) >= dir_size
        || (size_t) snprintf(keep, keep_size, "%s/run/apps/%s", apps->hide,
                             app->name) >= keep_size)
    {
        provend_error("apps: the socket directory of %s is too long",
                      app->name);
        return -1;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        provend_error("apps: cannot make %s: %s", dir, strerror(errno));
        return -1;
    }

    /* not through a link a worker of old may have left in its place */
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        provend_error("apps: %s is not a directory of its own: %s", dir,
                      strerror(errno));
        return -1;
    }
    if (apps->self[0] != '\0' && apps->hide[0] != '\0' && geteuid() == 0
        && app->uid == 0)
    {
        /* one uid per app for this provend's life: its workers' alone */
        app->uid = PROVEND_SANDBOX_APP_UID + apps->next_uid++;
    }
    if (app->uid != 0 && fchown(fd, app->uid, app->uid) != 0) {
        provend_error("apps: cannot give %s to the workers' user: %s", dir,
                      strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}


/* Starts a worker process for app; -1 if it could not be started. */
static int
provend_worker_spawn(provend_apps_t *apps, provend_app_t *app)
{
    int                    rc, argc;
    char                  *argv[32], memory[16], dir[PROVEND_SOCKET_MAX + 1];
    char                   uid[16];
    char                   keep[4096];
    void                  *line;
    uv_buf_t               buf;
    provend_worker_t      *w;
    uv_process_options_t   options;
    uv_stdio_container_t   stdio[4];

    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        provend_error("apps: out of memory starting %s", app->name);
        return -1;
    }
    w->apps = apps;
    w->app = app;
    snprintf(w->name, sizeof(w->name), "%s", app->name);

    app->generation++;
    if (provend_worker_socket_dir(apps, app, dir, sizeof(dir), keep,
                                  sizeof(keep)) != 0)
    {
        free(w);
        return -1;
    }
    if ((size_t) snprintf(w->socket, sizeof(w->socket), "%s/%u.sock", dir,
                          app->generation)
        >= sizeof(w->socket))
    {
        provend_error("apps: the worker socket path for %s is longer than "
                      "a unix socket allows: use a shorter --data path",
                      app->name);
        free(w);
        return -1;
    }

    w->package = malloc(app->package_len);
    if (w->package == NULL) {
        provend_error("apps: out of memory starting %s", app->name);
        free(w);
        return -1;
    }
    memcpy(w->package, app->package, app->package_len);
    w->package_len = app->package_len;
    w->package_gen = app->package_gen;

    w->next = apps->workers;
    if (w->next != NULL) {
        w->next->prev = w;
    }
    apps->workers = w;

    snprintf(memory, sizeof(memory), "%u", apps->memory_mb);
    argc = 0;
    if (apps->self[0] != '\0') {
        argv[argc++] = apps->self;
        argv[argc++] = "--sandbox-exec";
        if (apps->hide[0] != '\0') {
            argv[argc++] = "--hide";
            argv[argc++] = apps->hide;
            argv[argc++] = "--keep";
            argv[argc++] = keep;
            argv[argc++] = "--keep-ro";
            argv[argc++] = apps->runtime_dir;
        }
        if (app->uid != 0) {
            snprintf(uid, sizeof(uid), "%u", app->uid);
            argv[argc++] = "--uid";
            argv[argc++] = uid;
        }
        argv[argc++] = "--";
    }
    argv[argc++] = apps->node;
    argv[argc++] = "--experimental-vm-modules";
    argv[argc++] = "--no-warnings";
    argv[argc++] = apps->runtime_bin;
    argv[argc++] = "serve";
    argv[argc++] = "--app";
    argv[argc++] = app->name;
    argv[argc++] = "--package";
    argv[argc++] = "-";
    argv[argc++] = "--listen";
    argv[argc++] = w->socket;
    argv[argc++] = "--memory-mb";
    argv[argc++] = memory;
    if (apps->expose_errors) {
        argv[argc++] = "--expose-errors";
    }
    line = apps->bind_pipe != NULL ? apps->bind_pipe(apps->server, app->name)
                                   : NULL;
    if (line != NULL) {
        argv[argc++] = "--provend-fd";
        argv[argc++] = "3";
    }
    argv[argc] = NULL;

    uv_pipe_init(apps->loop, &w->in, 0);
    uv_pipe_init(apps->loop, &w->out, 0);
    uv_pipe_init(apps->loop, &w->err, 0);
    w->in.data = w;
    w->out.data = w;
    w->err.data = w;
    w->process.data = w;
    w->write.data = w;
    w->handles = 4;

    memset(&options, 0, sizeof(options));
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *) &w->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *) &w->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *) &w->err;
    stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
    stdio[3].data.stream = line;
    options.file = argv[0];
    options.args = argv;
    options.exit_cb = provend_worker_on_exit;
    /* setsid(): no controlling terminal, whatever the sandbox does */
    options.flags = UV_PROCESS_DETACHED;
    options.stdio = stdio;
    options.stdio_count = line != NULL ? 4 : 3;

    rc = uv_spawn(apps->loop, &w->process, &options);
    if (line != NULL) {
        (rc == 0 ? apps->start_pipe : apps->drop_pipe)(apps->server, line);
    }
    if (rc != 0) {
        provend_error("apps: cannot start the worker of %s (%s): %s",
                      app->name, apps->node, uv_strerror(rc));
        w->app = NULL;
        w->exited = 1;
        provend_worker_close_pipe(&w->in);
        provend_worker_close_pipe(&w->out);
        provend_worker_close_pipe(&w->err);
        uv_close((uv_handle_t *) &w->process, provend_worker_on_closed);
        return -1;
    }

    /* a worker still starting with an older package serves nothing yet:
       SIGKILL (it may not handle SIGTERM so early) */
    if (app->starting != NULL) {
        provend_worker_retire(app->starting, SIGKILL);
    }
    app->starting = w;
    buf = uv_buf_init((char *) w->package, (unsigned) w->package_len);
    if (uv_write(&w->write, (uv_stream_t *) &w->in, &buf, 1,
                 provend_worker_on_written) != 0)
    {
        provend_worker_close_pipe(&w->in);
    }
    uv_read_start((uv_stream_t *) &w->out, provend_worker_alloc,
                  provend_worker_on_read);
    uv_read_start((uv_stream_t *) &w->err, provend_worker_alloc,
                  provend_worker_on_stderr);
    return 0;
}


/*
 * Starts a worker; when that fails, the requests waiting for one hear so
 * and another try comes after the backoff.
 */
void
provend_worker_start(provend_apps_t *apps, provend_app_t *app)
{
    if (provend_apps_make_room(apps, app) != 0) {
        provend_warn("apps: no room for a worker of %s: all %u workers the "
                     "memory cap allows serve apps with calls under way",
                     app->name, apps->workers_total);
    } else if (provend_worker_spawn(apps, app) == 0) {
        return;
    }
    provend_app_answer_wakes(app, NULL);
    if (!apps->stopping) {
        provend_app_restart_later(app);
    }
}
