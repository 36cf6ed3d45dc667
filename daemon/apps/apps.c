/*
 * provend applications: open and close the subsystem.  See apps.h for
 * the ops and the files, apps_int.h for what its files share.
 */

#include "apps_int.h"


/* ---- life --------------------------------------------------------------- */

provend_apps_t *
provend_apps_open(const provend_apps_config_t *cfg, char *err, size_t errlen)
{
    provend_app_t   *app;
    provend_apps_t  *apps;
    char            *dir, path[PATH_MAX];

    apps = calloc(1, sizeof(*apps));
    if (apps == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }

    apps->loop = cfg->loop;
    apps->storage = cfg->storage;
    apps->expose_errors = cfg->expose_errors;
    apps->memory_mb = cfg->memory_mb ? cfg->memory_mb : 128;
    apps->workers_max = cfg->workers_max;
    /* one cap on every app's workers: the memory they may take */
    apps->workers_total = cfg->memory_total_mb / apps->memory_mb;
    if (cfg->memory_total_mb != 0 && apps->workers_total == 0) {
        apps->workers_total = 1;
    }
    if (apps->workers_max == 0) {
        apps->workers_max = uv_available_parallelism();
        apps->workers_max = apps->workers_max > 4 ? 4 : apps->workers_max;
    }
    if (apps->workers_max > PROVEND_POOL_MAX) {
        apps->workers_max = PROVEND_POOL_MAX;
    }
    apps->idle_ms = (uint64_t) cfg->idle_s * 1000;
    apps->server = cfg->server;
    if (cfg->sandbox) {
        ssize_t  n = readlink("/proc/self/exe", apps->self,
                              sizeof(apps->self) - 1);

        apps->self[n > 0 ? n : 0] = '\0';
        if (n <= 0) {
            provend_warn("apps: cannot find provend's own path: workers run "
                         "without the process sandbox");
        }
        /* workers see none of the data directory but their sockets' */
        if (realpath(cfg->data_dir, apps->hide) == NULL) {
            apps->hide[0] = '\0';
        }
    }
    apps->bind_pipe = cfg->bind_pipe;
    apps->start_pipe = cfg->start_pipe;
    apps->drop_pipe = cfg->drop_pipe;
    apps->node = strdup(cfg->node ? cfg->node : "node");

    /* absolute: workers start in / (sandbox.c) */
    apps->runtime_dir = strdup(realpath(cfg->runtime_dir, path) != NULL
                               ? path : cfg->runtime_dir);
    if (apps->runtime_dir == NULL
        || asprintf(&apps->runtime_bin, "%s/bin/proven-runtime.mjs",
                    apps->runtime_dir) == -1)
    {
        apps->runtime_bin = NULL;
    }
    if (asprintf(&apps->run_dir, "%s/run",
                 realpath(cfg->data_dir, path) != NULL
                 ? path : cfg->data_dir) == -1)
    {
        apps->run_dir = NULL;
    }
    uv_timer_init(apps->loop, &apps->stop_timer);
    apps->stop_timer.data = apps;
    uv_timer_init(apps->loop, &apps->minute);
    apps->minute.data = apps;
    uv_timer_init(apps->loop, &apps->sweep);
    apps->sweep.data = apps;

    if (apps->node == NULL || apps->runtime_bin == NULL
        || apps->run_dir == NULL)
    {
        proven_errf(err, errlen, "out of memory");
        goto failed;
    }

    if (asprintf(&dir, "%s/apps", apps->run_dir) == -1) {
        proven_errf(err, errlen, "out of memory");
        goto failed;
    }
    if (provend_mkdirs(dir, 0700, err, errlen) != PROVEN_OK) {
        free(dir);
        goto failed;
    }
    free(dir);

    apps->clustered = cfg->clustered;
    if (apps->clustered) {
        if (uv_async_init(apps->loop, &apps->refresh, provend_apps_on_refresh)
            != 0)
        {
            proven_errf(err, errlen, "cannot set up the registry refresh");
            goto failed;
        }
        apps->refresh.data = apps;
        apps->refresh_open = 1;
        uv_unref((uv_handle_t *) &apps->refresh);
        (void) provend_storage_cluster_follow(apps->storage, PROVEND_APPS_DB,
                                              provend_apps_registry_changed,
                                              apps);
    }

    if (provend_apps_create_tables(apps, err, errlen) != PROVEN_OK
        || provend_apps_load(apps, err, errlen) != PROVEN_OK
        || provend_apps_page_open(apps, err, errlen) != PROVEN_OK)
    {
        goto failed;
    }

    provend_apps_publish(apps);
    for (app = apps->apps; app != NULL; app = app->next) {
        if (app->package != NULL) {
            provend_worker_start(apps, app);
        }
    }

    uv_timer_start(&apps->minute, provend_apps_on_minute,
                   provend_apps_to_next_minute(), 0);
    uv_unref((uv_handle_t *) &apps->minute);
    uv_timer_start(&apps->sweep, provend_apps_on_sweep, 1000, 1000);
    uv_unref((uv_handle_t *) &apps->sweep);

    provend_info("apps: %zu applications", apps->napps);
    return apps;

failed:

    provend_apps_stop(apps);
    uv_run(apps->loop, UV_RUN_NOWAIT);
    provend_apps_free(apps);
    return NULL;
}


static void
provend_apps_on_stop_timer(uv_timer_t *timer)
{
    provend_apps_t    *apps;
    provend_worker_t  *w;

    apps = timer->data;
    for (w = apps->workers; w != NULL; w = w->next) {
        if (!w->exited) {
            uv_process_kill(&w->process, SIGKILL);
        }
    }
}


void
provend_apps_stop(provend_apps_t *apps)
{
    int                waiting;
    provend_app_t     *app;
    provend_worker_t  *w;

    if (apps->stopping) {
        return;
    }
    apps->stopping = 1;
    waiting = 0;

    if (apps->refresh_open) {
        /* returns once a call under way has */
        (void) provend_storage_cluster_follow(apps->storage, PROVEND_APPS_DB,
                                              NULL, apps);
        uv_close((uv_handle_t *) &apps->refresh, NULL);
        apps->refresh_open = 0;
    }
    uv_timer_stop(&apps->minute);
    uv_timer_stop(&apps->sweep);
    for (app = apps->apps; app != NULL; app = app->next) {
        uv_timer_stop(&app->restart);
        provend_app_answer_wakes(app, NULL);
        provend_app_answer_deploys(app, 0, "provend is stopping");
    }
    for (w = apps->workers; w != NULL; w = w->next) {
        if (!w->exited) {
            uv_process_kill(&w->process, SIGTERM);
            waiting = 1;
        }
    }

    if (waiting) {
        uv_timer_start(&apps->stop_timer, provend_apps_on_stop_timer,
                       PROVEND_STOP_KILL_MS, 0);
        uv_unref((uv_handle_t *) &apps->stop_timer);
    }
}


/* After the loop ran out: closes what is left and frees everything. */
void
provend_apps_free(provend_apps_t *apps)
{
    provend_app_t  *app, *next;

    if (apps == NULL) {
        return;
    }

    if (!uv_is_closing((uv_handle_t *) &apps->stop_timer)) {
        uv_close((uv_handle_t *) &apps->stop_timer, NULL);
    }
    if (!uv_is_closing((uv_handle_t *) &apps->minute)) {
        uv_close((uv_handle_t *) &apps->minute, NULL);
    }
    if (!uv_is_closing((uv_handle_t *) &apps->sweep)) {
        uv_close((uv_handle_t *) &apps->sweep, NULL);
    }
    for (app = apps->apps; app != NULL; app = next) {
        next = app->next;
        uv_close((uv_handle_t *) &app->restart, provend_apps_on_app_closed);
    }
    apps->apps = NULL;
    uv_run(apps->loop, UV_RUN_NOWAIT);

    if (apps->page != NULL) {
        munmap(apps->page, PROVEN_STATE_SIZE);
    }
    free(apps->node);
    free(apps->runtime_dir);
    free(apps->runtime_bin);
    free(apps->run_dir);
    free(apps->data_dir);
    free(apps);
}
