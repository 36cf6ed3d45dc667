/*
 * provend applications: registry, app.* ops, runtime workers, state page.
 * See apps.h for the ops and the files.  Everything here runs on the loop
 * thread except the storage calls, which block and so run on libuv's
 * thread pool (uv_queue_work).
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <uv.h>

#include "apps.h"
#include "cluster.h"
#include "log.h"
#include "sandbox.h"
#include "schedule.h"
#include "util.h"


#define PROVEND_APPS_DB           "registry"
#define PROVEND_APPS_PAGE         1000
#define PROVEND_CHECK_TIMEOUT_MS  30000
#define PROVEND_RESTART_MIN_MS    100
#define PROVEND_RESTART_MAX_MS    30000
#define PROVEND_STOP_KILL_MS      12000      /* workers drain up to 10 s */
#define PROVEND_ROUTES_MAX        256
#define PROVEND_SOCKET_MAX        107        /* sun_path, with its NUL */
#define PROVEND_CHECKS_MAX        4          /* deploy checks at once */
#define PROVEND_RETIRE_GRACE_MS   2000       /* nginx sees the new page */
#define PROVEND_RETIRED_KILL_MS   30000      /* a replaced worker's drain */
#define PROVEND_WAKE_WAIT_MS      4000       /* under nginx's own timeout */

/*
 * The pool of an app's workers: it grows by one while the workers are
 * over PROVEND_POOL_HOT thousandths busy on average for
 * PROVEND_POOL_HOT_MS, and shrinks by one when one worker fewer would be
 * under half busy for PROVEND_POOL_COLD_MS.
 */
#define PROVEND_POOL_MAX          16
#define PROVEND_POOL_HOT          700
#define PROVEND_POOL_HOT_MS       2000
#define PROVEND_POOL_COLD_MS      10000
#define PROVEND_WAKES_MAX         4096       /* requests waiting per app */
#define PROVEND_ORIGINS_MAX       64         /* allowed origins per app */
#define PROVEND_CREATED_PER_OWNER 8          /* created, not deployed yet */
#define PROVEND_CREATED_MAX       256


typedef struct provend_app_s     provend_app_t;
typedef struct provend_worker_s  provend_worker_t;
typedef struct provend_wake_s    provend_wake_t;

/* An app.wake waiting for a worker to be ready. */
struct provend_wake_s {
    provend_wake_t        *next;
    uint64_t               since;        /* uv_now when asked */
    uint64_t               id;
    provend_ops_reply_pt   reply;
    void                  *ctx;
};

struct provend_worker_s {
    uv_process_t     process;
    uv_pipe_t        in;            /* the package, then closed */
    uv_pipe_t        out;           /* "ready\n" */
    uv_write_t       write;
    provend_apps_t  *apps;
    provend_app_t   *app;           /* NULL once replaced */
    uint8_t         *package;       /* its own copy, freed when written */
    size_t           package_len;
    char             socket[PROVEND_SOCKET_MAX + 1];
    char             line[64];      /* its standard output, by lines */
    size_t           line_len;
    unsigned         handles;       /* open, to close before free */
    unsigned         package_gen;   /* app->package_gen it runs */
    unsigned         busy;          /* thousandths, the last second */
    uint64_t         calls;         /* started since its thread began */
    provend_chan_t  *chan;          /* provend's kept line to it (runs) */
    int              ready;
    int              exited;
    uint64_t         retired_ms;    /* uv_now when replaced, or 0 */
    int              termed;        /* SIGTERM sent */
    int              skip_line;     /* an overlong line: to its end */
    provend_worker_t *prev;         /* every worker, until closed */
    provend_worker_t *next;
};

struct provend_app_s {
    char                name[PROVEND_NAME_MAX + 1];
    proven_app_state_t  state;
    uint8_t           **entries;    /* encoded audit entries, in order */
    size_t             *entry_lens;
    size_t              nentries;
    size_t              entries_cap;
    uint8_t            *package;    /* the current package's bytes */
    size_t              package_len;
    cbor_item_t        *routes;     /* [[method, path], ...] */
    provend_cron_t     *schedules;  /* runOnSchedule handlers */
    size_t              nschedules;
    provend_worker_t   *serving[PROVEND_POOL_MAX];
    size_t              nserving;
    provend_worker_t   *starting;   /* not ready yet */
    uv_timer_t          restart;
    unsigned            backoff_ms;
    unsigned            generation;  /* of worker sockets */
    unsigned            package_gen; /* bumped when the package changes */
    uint64_t            hot_since;   /* uv_now, or 0 */
    uint64_t            cold_since;
    uint64_t            last_call;   /* uv_now of the last call seen */
    int                 idle;        /* workers stopped: wake on demand */
    provend_wake_t     *wakes;
    size_t              nwakes;
    int                 busy;       /* a change is under way */
    int                 reserved;   /* created over a session: its owner */
    uint8_t             reserved_owner[PROVEN_AUDIT_KEY_LEN];
    char               *origins[PROVEND_ORIGINS_MAX];  /* may open sessions */
    size_t              norigins;
    provend_apps_t     *apps;
    provend_app_t      *next;
};

struct provend_apps_s {
    uv_loop_t              *loop;
    provend_storage_t      *storage;
    char                   *data_dir;
    char                   *runtime_dir;  /* absolute */
    char                   *runtime_bin;
    char                   *node;
    char                   *run_dir;
    char                    self[4096];  /* provend, for --sandbox-exec */
    char                    hide[4096];  /* the data directory, absolute */
    int                     expose_errors;
    unsigned                memory_mb;
    unsigned                workers_max;  /* per app */
    uint64_t                idle_ms;      /* 0: never */
    void                   *server;
    void                 *(*bind_pipe)(void *server, const char *app);
    void                  (*start_pipe)(void *server, void *pipe);
    void                  (*drop_pipe)(void *server, void *pipe);
    provend_app_t          *apps;
    size_t                  napps;
    provend_worker_t       *workers;  /* running or closing */
    uint8_t                *page;   /* the state page, mapped */
    uv_timer_t              stop_timer;
    uv_timer_t              minute;   /* schedules */
    uv_timer_t              sweep;    /* each second: retired, wakes */
    int                     stopping;
    size_t                  next_run;     /* round robin of runs */
    unsigned                checks;       /* deploy checks running */
    time_t                  fired_minute; /* schedules fired for it */

    /* in a cluster: another node's changes come through the registry */
    int                     clustered;
    uv_async_t              refresh;      /* the registry changed */
    int                     refresh_open;
};

/* One app.deploy or app.update on its way: check, record, apply. */
typedef struct {
    provend_apps_t         *apps;
    provend_app_t          *app;
    uint64_t                id;
    provend_ops_reply_pt    reply;
    void                   *ctx;
    proven_audit_entry_t    entry;
    uint8_t                 encoded[PROVEN_AUDIT_ENTRY_MAX];
    size_t                  encoded_len;
    uint8_t                 hash[PROVEN_AUDIT_HASH_LEN];
    uint8_t                *package;        /* deploy; rollback: loaded */
    size_t                  package_len;
    cbor_item_t            *routes;
    provend_cron_t         *schedules;
    size_t                  nschedules;

    /* the check by proven-runtime */
    uv_process_t            process;
    uv_pipe_t               in;
    uv_pipe_t               err_pipe;
    uv_write_t              write;
    uv_timer_t              timer;
    unsigned                handles;
    int64_t                 exit_status;
    int                     timed_out;
    char                    errtext[512];
    size_t                  errtext_len;

    /* the record */
    uv_work_t               work;
    provend_storage_status_t status;
    char                    error[PROVEN_ERR_LEN];
} provend_change_t;


static void provend_apps_publish(provend_apps_t *apps);
static void provend_worker_start(provend_apps_t *apps, provend_app_t *app);
static void provend_app_restart_later(provend_app_t *app);
static int provend_app_current_serves(provend_app_t *app);
static void provend_apps_refresh_soon(provend_apps_t *apps);


/* ---- answers ------------------------------------------------------------ */

/* Takes result (a reference); NULL result: out of memory. */
#define provend_apps_reply_ok  provend_ops_reply_ok


/* ---- the registry in storage -------------------------------------------- */

static provend_storage_req_t *
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


#define provend_apps_stmt       provend_storage_stmt
#define provend_apps_param      provend_storage_param
#define provend_apps_param_int  provend_storage_param_int


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


static int
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
static int
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

static provend_app_t *
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


static provend_app_t *
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


static void
provend_apps_on_app_closed(uv_handle_t *handle)
{
    provend_app_t   *app;
    provend_wake_t  *wake;
    size_t           i;

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
    for (i = 0; i < app->norigins; i++) {
        free(app->origins[i]);
    }
    proven_app_state_free(&app->state);
    while ((wake = app->wakes) != NULL) {   /* answered by stop, if run */
        app->wakes = wake->next;
        free(wake);
    }
    free(app);
}


/* Unlinks app (no worker, no change under way) and frees it. */
static void
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


static int
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
static int
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
static int
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


static void
provend_apps_on_refresh(uv_async_t *handle)
{
    provend_apps_refresh(handle->data);
}


/* On a storage thread: the registry's copy here changed. */
static void
provend_apps_registry_changed(void *data, const provend_storage_req_t *req)
{
    provend_apps_t  *apps;

    (void) req;
    apps = data;
    uv_async_send(&apps->refresh);
}


/* After a change of this node's own: one from elsewhere may have waited. */
static void
provend_apps_refresh_soon(provend_apps_t *apps)
{
    if (apps->clustered && apps->refresh_open) {
        uv_async_send(&apps->refresh);
    }
}


/* ---- the state page ----------------------------------------------------- */

static int
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
static cbor_item_t *
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
static void
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
static void
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
static void
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
            app->starting = NULL;
            provend_app_answer_wakes(app, NULL);
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
    uv_close((uv_handle_t *) process, provend_worker_on_closed);
}


static void
provend_worker_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    provend_worker_t  *w;

    (void) suggested;
    w = handle->data;
    buf->base = w->line + w->line_len;
    buf->len = sizeof(w->line) - w->line_len;
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
        && fchown(fd, PROVEND_SANDBOX_UID, PROVEND_SANDBOX_UID) != 0)
    {
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
    w->in.data = w;
    w->out.data = w;
    w->process.data = w;
    w->write.data = w;
    w->handles = 3;

    memset(&options, 0, sizeof(options));
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *) &w->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *) &w->out;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
    stdio[3].data.stream = line;
    options.file = argv[0];
    options.args = argv;
    options.exit_cb = provend_worker_on_exit;
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
    return 0;
}


/*
 * Starts a worker; when that fails, the requests waiting for one hear so
 * and another try comes after the backoff.
 */
static void
provend_worker_start(provend_apps_t *apps, provend_app_t *app)
{
    if (provend_worker_spawn(apps, app) == 0) {
        return;
    }
    provend_app_answer_wakes(app, NULL);
    if (!apps->stopping) {
        provend_app_restart_later(app);
    }
}


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
    char               hex[2 * PROVEN_AUDIT_HASH_LEN + 1];
    provend_app_t     *app;
    provend_change_t  *c;
    cbor_item_t       *result;
    char               err[PROVEN_ERR_LEN];

    c = work->data;
    app = c->app;

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
    provend_apps_reply_ok(c->reply, c->ctx, c->id, result);
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


static void
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


static void
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


static void
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
static void
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
static void
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
    const uint8_t *signature, provend_apps_done_pt done, void *data)
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
    req.map = cbor_new_definite_map(5);
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
                session, PROVEN_AUDIT_SESSION_LEN)) == PROVEN_OK;
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


int
provend_apps_handles(const char *op)
{
    return strncmp(op, "app.", 4) == 0;
}


void
provend_apps_dispatch(provend_apps_t *apps, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    char  msg[PROVEN_ERR_LEN];

    if (apps->stopping) {
        provend_ops_reply_error(reply, ctx, req->id, "unavailable",
                                 "provend is stopping");
    } else if (strcmp(req->op, "app.head") == 0) {
        provend_apps_op_head(apps, req, reply, ctx);
    } else if (strcmp(req->op, "app.deploy") == 0) {
        provend_apps_op_change(apps, req, 1, 0, reply, ctx);
    } else if (strcmp(req->op, "app.update") == 0) {
        provend_apps_op_change(apps, req, 0, 0, reply, ctx);
    } else if (strcmp(req->op, "app.list") == 0) {
        provend_apps_op_list(apps, req, reply, ctx);
    } else if (strcmp(req->op, "app.audit") == 0) {
        provend_apps_op_audit(apps, req, reply, ctx);
    } else if (strcmp(req->op, "app.wake") == 0) {
        provend_apps_op_wake(apps, req, reply, ctx);
    } else {
        snprintf(msg, sizeof(msg), "unknown op \"%s\"", req->op);
        provend_ops_reply_error(reply, ctx, req->id, "unknown_op", msg);
    }
}


/* ---- schedules ---------------------------------------------------------- */

/* Milliseconds to the start of the next UTC minute (and a little past). */
static uint64_t
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
static void
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
static void
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
