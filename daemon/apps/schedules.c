/*
 * Schedules: each minute's ticks, claimed by one node in a cluster.
 */

#include "apps_int.h"


/* ---- schedules ---------------------------------------------------------- */

/* Milliseconds to the start of the next UTC minute (and a little past). */
uint64_t
provend_apps_to_next_minute(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) (59 - ts.tv_sec % 60) * 1000
           + (uint64_t) (1000 - ts.tv_nsec / 1000000) + 5;
}


/* A schedule's tick in a cluster: fired by the node that claims it. */
typedef struct {
    uv_work_t        work;
    provend_apps_t  *apps;
    char             app[PROVEND_NAME_MAX + 1];
    char             handler[PROVEND_SCHEDULE_NAME_MAX + 1];
    uint64_t         minute;
    char             what[2 * SHA256_DIGEST_LENGTH + 1];
    int              claimed;
} provend_tick_t;


static void
provend_apps_tick_claim(uv_work_t *work)
{
    provend_tick_t  *t;

    t = work->data;
    t->claimed = provend_storage_cluster_claim(t->apps->storage, t->what);
}


static void
provend_apps_tick_claimed(uv_work_t *work, int status)
{
    provend_tick_t  *t;
    provend_app_t   *app;

    t = work->data;
    app = provend_apps_find(t->apps, t->app);
    if (status == 0 && t->claimed && !t->apps->stopping && app != NULL
        && app->nserving > 0)
    {
        provend_schedule_fire(t->apps->loop, app->serving[0]->socket,
                              app->name, t->handler, t->minute);
    }
    free(t);
}


static void
provend_apps_claim_tick(provend_apps_t *apps, provend_app_t *app,
    const provend_cron_t *cron, uint64_t minute)
{
    char             text[PROVEND_NAME_MAX + PROVEND_SCHEDULE_NAME_MAX + 32];
    uint8_t          digest[SHA256_DIGEST_LENGTH];
    provend_tick_t  *t;

    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return;
    }
    t->apps = apps;
    t->minute = minute;
    snprintf(t->app, sizeof(t->app), "%s", app->name);
    snprintf(t->handler, sizeof(t->handler), "%s", cron->handler);
    /* one id per app, handler and minute, the same on every node */
    snprintf(text, sizeof(text), "%s\n%s\n%llu", app->name, cron->handler,
             (unsigned long long) minute);
    SHA256((const uint8_t *) text, strlen(text), digest);
    proven_hex_encode(digest, sizeof(digest), t->what);

    t->work.data = t;
    if (uv_queue_work(apps->loop, &t->work, provend_apps_tick_claim,
                      provend_apps_tick_claimed) != 0)
    {
        free(t);
    }
}


/* Each minute: every schedule due now fires on its app's serving worker. */
void
provend_apps_on_minute(uv_timer_t *timer)
{
    size_t             i;
    time_t             now;
    struct tm          utc;
    provend_app_t     *app;
    provend_apps_t    *apps;

    apps = timer->data;
    now = time(NULL);
    gmtime_r(&now, &utc);

    /* a timer early or late by a clock step must not fire a minute twice */
    if (now / 60 == apps->fired_minute) {
        uv_timer_start(&apps->minute, provend_apps_on_minute,
                       provend_apps_to_next_minute(), 0);
        return;
    }
    apps->fired_minute = now / 60;


    for (app = apps->apps; app != NULL; app = app->next) {
        if (app->nserving == 0) {
            continue;
        }
        for (i = 0; i < app->nschedules; i++) {
            if (!provend_cron_due(&app->schedules[i], &utc)) {
                continue;
            }
            if (apps->clustered) {
                provend_apps_claim_tick(apps, app, &app->schedules[i],
                                        (uint64_t) (now - now % 60));
                continue;
            }
            provend_schedule_fire(apps->loop, app->serving[0]->socket,
                                  app->name, app->schedules[i].handler,
                                  (uint64_t) (now - now % 60));
        }
    }

    uv_timer_start(&apps->minute, provend_apps_on_minute,
                   provend_apps_to_next_minute(), 0);
}


/*
 * Each second: retired workers get their SIGTERM after the grace, and
 * SIGKILL if they outstay their drain; wakes waiting too long are told
 * no (each holds a slot of nginx's connection to provend).
 */
void
provend_apps_on_sweep(uv_timer_t *timer)
{
    uint64_t           now;
    provend_app_t     *app;
    provend_apps_t    *apps;
    provend_wake_t   **pw, *wake;
    provend_worker_t  *w;

    apps = timer->data;
    now = uv_now(apps->loop);

    for (w = apps->workers; w != NULL; w = w->next) {
        if (w->retired_ms == 0 || w->exited) {
            continue;
        }
        if (!w->termed && now - w->retired_ms >= PROVEND_RETIRE_GRACE_MS) {
            uv_process_kill(&w->process, SIGTERM);
            w->termed = 1;
        } else if (now - w->retired_ms >= PROVEND_RETIRED_KILL_MS) {
            provend_warn("apps: a replaced worker of pid %d did not stop: "
                         "killed", w->process.pid);
            uv_process_kill(&w->process, SIGKILL);
            w->retired_ms = now;        /* once more in 30 s at most */
        }
    }

    for (app = apps->apps; app != NULL; app = app->next) {
        provend_app_answer_deploys(app, now, "none served within 30 s");

        pw = &app->wakes;
        while ((wake = *pw) != NULL) {
            if (now - wake->since < PROVEND_WAKE_WAIT_MS) {
                pw = &wake->next;
                continue;
            }
            *pw = wake->next;
            app->nwakes--;
            provend_ops_reply_error(wake->reply, wake->ctx, wake->id,
                                    "unavailable", "the application's "
                                    "worker is not ready yet");
            free(wake);
        }
    }
}
