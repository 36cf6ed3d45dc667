/* Internal to daemon/apps/: shared by its files, included by no other
 * subsystem. */

#ifndef PROVEND_APPS_INT_H
#define PROVEND_APPS_INT_H

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
#include "cluster/cluster.h"
#include "core/log.h"
#include "sandbox.h"
#include "schedule.h"
#include "core/util.h"


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
#define PROVEND_DEPLOY_WAIT_MS    30000      /* a deploy's worker to serve */
#define PROVEND_DEPLOYS_HELD_MAX  64         /* answers held, in all */

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

/* A worker's stderr line logged at most this long (longer: split). */
#define PROVEND_WORKER_LOG_LINE  1024
typedef struct provend_wake_s    provend_wake_t;
typedef struct provend_deployed_s  provend_deployed_t;

/*
 * A change's answer (a deploy, a rollback), held until a worker of the
 * package it recorded serves on this node, so that a request sent once
 * the deploy returns finds that version.
 */
struct provend_deployed_s {
    uint64_t               id;
    uint64_t               seq;          /* its audit entry */
    uint64_t               since;        /* uv_now */
    cbor_item_t           *result;       /* owned */
    provend_ops_reply_pt   reply;
    void                  *ctx;
};

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
    uv_pipe_t        err;           /* its standard error, to the log */
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
    char             name[PROVEND_NAME_MAX + 1];    /* its app's */
    char             err_line[PROVEND_WORKER_LOG_LINE];
    size_t           err_len;
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
    provend_eth_filter_t *eth_filters;  /* runOnEthereumEvent handlers */
    size_t              neth_filters;
    provend_radix_filter_t *radix_filters;  /* runOnRadixEvent handlers */
    size_t              nradix_filters;
    unsigned            filters_gen;    /* package_gen + 1 they are of */
    provend_worker_t   *serving[PROVEND_POOL_MAX];
    size_t              nserving;
    provend_worker_t   *starting;   /* not ready yet */
    uv_timer_t          restart;
    unsigned            backoff_ms;
    unsigned            generation;  /* of worker sockets */
    unsigned            uid;         /* its workers' as root; 0: none yet */
    unsigned            package_gen; /* bumped when the package changes */
    uint64_t            hot_since;   /* uv_now, or 0 */
    uint64_t            cold_since;
    uint64_t            last_call;   /* uv_now of the last call seen */
    int                 idle;        /* workers stopped: wake on demand */
    provend_wake_t     *wakes;
    size_t              nwakes;
    provend_deployed_t *deployed;    /* a change's answer, held */
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
    size_t                  deploys_held;  /* provend_deployed_t, in all */
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
    unsigned                next_uid;     /* the next app's, as root */
    unsigned                workers_total;  /* of all apps; 0: no cap */
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


/* ---- answers ------------------------------------------------------------ */

/* Takes result (a reference); NULL result: out of memory. */
#define provend_apps_reply_ok  provend_ops_reply_ok


#define provend_apps_stmt       provend_storage_stmt


#define provend_apps_param      provend_storage_param


#define provend_apps_param_int  provend_storage_param_int


provend_storage_req_t *provend_apps_sql(provend_storage_op_t op, size_t nstmts);

int provend_apps_create_tables(provend_apps_t *apps, char *err, size_t errlen);

int provend_apps_load_package(provend_storage_t *st, const uint8_t *id,
    uint8_t **out, size_t *len, char *err, size_t errlen);

provend_app_t *provend_apps_find(provend_apps_t *apps, const char *name);

provend_app_t *provend_apps_add(provend_apps_t *apps, const char *name);

void provend_apps_on_app_closed(uv_handle_t *handle);

void provend_apps_remove(provend_apps_t *apps, provend_app_t *app);

int provend_apps_keep_entry(provend_app_t *app, const uint8_t *entry,
    size_t len);

int provend_apps_manifest(const uint8_t *package, size_t len,
    cbor_item_t **routes_out, provend_cron_t **schedules, size_t *nschedules,
    char *err, size_t errlen);

int provend_apps_load(provend_apps_t *apps, char *err, size_t errlen);

void provend_apps_on_refresh(uv_async_t *handle);

void provend_apps_registry_changed(void *data,
    const provend_storage_req_t *req);

void provend_apps_refresh_soon(provend_apps_t *apps);

int provend_apps_page_open(provend_apps_t *apps, char *err, size_t errlen);

cbor_item_t *provend_apps_sockets(provend_app_t *app);

void provend_apps_publish(provend_apps_t *apps);

void provend_apps_reply_socket(provend_ops_reply_pt reply, void *ctx,
    uint64_t id, const char *socket);

void provend_app_answer_wakes(provend_app_t *app, const char *socket);
void provend_app_hold_deploy(provend_app_t *app, uint64_t id, uint64_t seq,
    cbor_item_t *result, provend_ops_reply_pt reply, void *ctx);
void provend_app_answer_deploys(provend_app_t *app, uint64_t now,
    const char *why);

void provend_worker_start(provend_apps_t *apps, provend_app_t *app);

void provend_apps_op_head(provend_apps_t *apps, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx);

void provend_apps_op_audit(provend_apps_t *apps, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx);

void provend_apps_op_list(provend_apps_t *apps, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx);

void provend_apps_op_change(provend_apps_t *apps, const proven_request_t *req,
    int deploy, int by_session, provend_ops_reply_pt reply, void *ctx);

void provend_apps_op_wake(provend_apps_t *apps, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx);

uint64_t provend_apps_to_next_minute(void);

void provend_apps_on_minute(uv_timer_t *timer);

void provend_apps_on_sweep(uv_timer_t *timer);

#endif
