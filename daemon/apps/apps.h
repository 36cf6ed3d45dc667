/*
 * provend applications: the registry (each application's audit log and
 * the packages it deployed), the app.* ops, the runtime workers that serve
 * deployed packages, and the state page nginx reads to route to them.
 *
 * Ops (frames on provend's socket):
 *   app.head   {app}  -> {app, seq, head, owners, current?}  (seq 0 and a
 *              zero head for an application that does not exist yet)
 *   app.deploy {app, package, signer, signature}  -> {seq, hash, package}
 *   app.update {app, action: rollback|add_owner|remove_owner, package? |
 *              owner?, signer, signature}  -> {seq, hash}
 *   app.list   {}     -> {apps: [{app, seq, current, owners, sockets,
 *              idle, routes}]}
 *   app.audit  {app}  -> {app, entries: [entry bytes...]}
 *   app.wake   {app}  -> {socket}  (once a worker serves: nginx asks when
 *              the state page lists none)
 * A change is signed by an owner over proven_audit_message() for the
 * log's current head (see lib/proven.h); provend adds seq, prev and time.
 * A deploy is checked by proven-runtime (the package loads and declares
 * what its manifest says) before it is recorded.  Records live in the
 * storage backend under the node's own scope (app "_proven").
 *
 * Workers: a pool of proven-runtime processes per application with a
 * current package, each started by provend with the package on its
 * standard input, listening on DATA/run/apps/<app>/<n>.sock, its fd 3 a
 * socket pair to provend that serves kv.* and sql.* of that app only.
 * Each writes "ready", then "load BUSY CALLS" every second (its isolate's
 * event loop utilization in thousandths, its calls so far): the pool
 * grows by one while busy, shrinks when one fewer would do, and stops
 * altogether after idle_s without a call (apps with schedules excepted)
 * until app.wake.  A new deploy starts a new worker; once it is ready the
 * state page points to it and the workers of the old package are told to
 * stop.  When the last worker exits, another starts after a backoff.
 *
 * State page: DATA/run/state (its layout: lib/proven.h), mapped by nginx
 * read-only.  An app with no socket listed has no worker serving: nginx
 * wakes it.
 */

#ifndef PROVEND_APPS_H
#define PROVEND_APPS_H

#include <stddef.h>

#include "proven.h"
#include "schedule.h"
#include "storage/storage.h"

#define PROVEND_PACKAGE_MAX      (4 * 1024 * 1024 + 64 * 1024)
#define PROVEND_APPS_MAX         1024

typedef struct provend_apps_s  provend_apps_t;

typedef struct {
    void               *loop;           /* uv_loop_t * */
    provend_storage_t  *storage;        /* borrowed; required */
    const char         *data_dir;
    const char         *runtime_dir;    /* holds bin/proven-runtime.mjs */
    const char         *node;           /* NULL: "node" from PATH */
    int                 expose_errors;  /* local mode: error messages */
    unsigned            memory_mb;      /* per worker; 0: 128 */
    int                 sandbox;        /* wrap workers: sandbox.c */
    unsigned            workers_max;    /* per app; 0: CPUs, at most 4 */
    unsigned            memory_total_mb;  /* all workers; 0: no cap */
    unsigned            idle_s;         /* stop idle apps; 0: never */
    /*
     * storage is the cluster backend: other nodes' changes to the
     * registry are followed, and a schedule fires on one node per tick.
     */
    int                 clustered;

    /*
     * The worker's own line to provend (its fd 3): bind_pipe gives an
     * initialised uv_pipe_t for uv_spawn to open, serving that app's
     * storage only; start_pipe once spawned, drop_pipe if not.
     */
    void               *server;
    void             *(*bind_pipe)(void *server, const char *app);
    void              (*start_pipe)(void *server, void *pipe);
    void              (*drop_pipe)(void *server, void *pipe);
} provend_apps_config_t;

/* Loads the registry (blocking), writes the state page, starts workers. */
provend_apps_t *provend_apps_open(const provend_apps_config_t *cfg,
    char *err, size_t errlen);

/* The app.* ops, each answered through reply exactly once. */
extern const provend_op_t  provend_apps_ops[];

/*
 * Runs handler ("module#name", a run/runWithOptions handler) of app's
 * current package with args (borrowed; NULL: null; an array is spread as
 * the handler's arguments), waking the app if its
 * workers are stopped; identity (NULL: none) is the caller's verified
 * identity and grant what lets the worker use its personal storage.  package, if not NULL, is the 32-byte package id that must be
 * the current one.  done runs once with the worker's answer (as for
 * provend_worker_call) when this returns PROVEN_OK.
 */
#define PROVEND_RUN_NO_APP        1     /* no such app, or nothing deployed */
#define PROVEND_RUN_HASH_UNKNOWN  2     /* package is not the current one */
#define PROVEND_RUN_STOPPING      3     /* provend is stopping */

/* Whether app exists: deployed, or created over a session. */
int provend_apps_exists(provend_apps_t *apps, const char *app);

int provend_apps_run(provend_apps_t *apps, const char *app,
    const uint8_t *package, const char *handler, cbor_item_t *args,
    const char *identity, const char *grant, provend_worker_answer_pt done,
    void *data);

/*
 * The same for a handler run by its trigger (trigger "ethereum": a
 * runOnEthereumEvent handler, with the event provend proved): the
 * runtime runs such handlers for provend's own frames only, never for a
 * caller's Execute, which could hand them any event.
 */
int provend_apps_run_on(provend_apps_t *apps, const char *app,
    const uint8_t *package, const char *handler, cbor_item_t *args,
    const char *identity, const char *grant, const char *trigger,
    provend_worker_answer_pt done, void *data);

/*
 * For sessions (sessions.c).  done(data, code, message, result) runs once,
 * now or later: code NULL on success (result borrowed, may be NULL), else
 * a refusal code ("not_found", "forbidden", ...) and its message.  These
 * return PROVEN_ERR (done never runs) only when out of memory.
 */
typedef void (*provend_apps_done_pt)(void *data, const char *code,
    const char *message, cbor_item_t *result);

/* A new application (its name a UUID, the result text) owned by owner. */
int provend_apps_create(provend_apps_t *apps, const uint8_t *owner,
    provend_apps_done_pt done, void *data);

/* Lets pages of origin open sessions of app; identity must own it. */
int provend_apps_add_origin(provend_apps_t *apps, const char *app,
    const uint8_t *identity, const char *origin, provend_apps_done_pt done,
    void *data);

int provend_apps_origin_allowed(provend_apps_t *apps, const char *app,
    const char *origin);

/* The names of the apps identity owns (created or deployed), an array. */
cbor_item_t *provend_apps_owned_by(provend_apps_t *apps,
    const uint8_t *identity);

/*
 * Deploys package (a byte string item) to app as identity, proved by
 * signature, identity's Identify proof in that management session of
 * origin: the audit entry carries both (see lib/proven.h).  Checked like any deploy.
 */
int provend_apps_deploy_by_session(provend_apps_t *apps, const char *app,
    cbor_item_t *package, const uint8_t *identity, const uint8_t *session,
    const char *origin, const uint8_t *signature, provend_apps_done_pt done,
    void *data);

/*
 * runOnEthereumEvent handlers: the filters of every app's current
 * package, as chains/ follows them.  topics[i] counts only where bit i of
 * topic_set is; with an event signature, topic 0 is its keccak.
 */
#define PROVEND_ETH_FILTERS_MAX  64     /* an app's */

typedef struct {
    char      app[PROVEND_NAME_MAX + 1];
    char      handler[PROVEND_SCHEDULE_NAME_MAX + 1];    /* module#name */
    uint8_t   address[20];
    uint8_t   topics[4][32];
    unsigned  topic_set;
    unsigned  confirmations;            /* 0..128 */
    uint64_t  chain;                    /* a chain id; 0: the node's */
} provend_eth_filter_t;

/* Parses the manifest's (a CBOR array of handlers): a malloc()ed array,
 * NULL when none; PROVEN_ERR with err for a bad one. */
int provend_eth_filters_of(const cbor_item_t *handlers,
    provend_eth_filter_t **out, size_t *n, char *err, size_t errlen);

/* Every deployed app's filters, one malloc()ed array (NULL: none). */
int provend_apps_eth_filters(provend_apps_t *apps,
    provend_eth_filter_t **out, size_t *n);

/*
 * runOnRadixEvent handlers: an event of that name emitted by that global
 * entity (its address), as chains/radix_events.c follows them.
 */
#define PROVEND_RADIX_FILTERS_MAX  64   /* an app's */
#define PROVEND_RADIX_EVENT_MAX    128  /* an event's name */

typedef struct {
    char      app[PROVEND_NAME_MAX + 1];
    char      handler[PROVEND_SCHEDULE_NAME_MAX + 1];    /* module#name */
    char      emitter[91];              /* a Bech32m address */
    char      event[PROVEND_RADIX_EVENT_MAX + 1];
} provend_radix_filter_t;

int provend_radix_filters_of(const cbor_item_t *handlers,
    provend_radix_filter_t **out, size_t *n, char *err, size_t errlen);
int provend_apps_radix_filters(provend_apps_t *apps,
    provend_radix_filter_t **out, size_t *n);

/* Stops the workers and closes every handle; the loop then ends. */
void provend_apps_stop(provend_apps_t *apps);

/* After the loop has ended. */
void provend_apps_free(provend_apps_t *apps);

#endif /* PROVEND_APPS_H */
