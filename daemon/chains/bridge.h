/*
 * What a chain's events thread needs of provend's loop (bridge.c), shared
 * by Ethereum's (follow.c) and Radix's (radix_events.c): its thread, a
 * call run on the loop and waited for (cut short when provend stops), an
 * app's handler run so, a sleep that stopping wakes, and a cluster's
 * lease (one node at a time delivers).
 */

#ifndef PROVEND_BRIDGE_H
#define PROVEND_BRIDGE_H

#include <stdint.h>

#include <cbor.h>
#include <uv.h>


typedef struct provend_apps_s     provend_apps_t;
typedef struct provend_storage_s  provend_storage_t;

typedef struct provend_bridge_s       provend_bridge_t;
typedef struct provend_bridge_call_s  provend_bridge_call_t;

struct provend_bridge_call_s {
    provend_bridge_t  *bridge;
    /* on the loop; the call ends with provend_bridge_answer() */
    void             (*run)(provend_bridge_call_t *call);
    /* frees a call the thread gave up on (provend stopping), once
     * answered; NULL: free() */
    void             (*drop)(provend_bridge_call_t *call);
    void              *data;
    int                done, abandoned, ok;
    char               error[160];
};

struct provend_bridge_s {
    uv_loop_t              *loop;
    provend_apps_t         *apps;
    provend_storage_t      *storage;
    int                     clustered;
    const char             *lease_name;     /* "chains-events" ... */
    unsigned                lease_s;
    uint64_t                lease_window;   /* last asked for, or 0 */
    int                     lease_held;     /* this node delivers now */
    void                  (*main)(provend_bridge_t *b);
    void                   *data;
    /* a start that failed after the async handle was made: called once
     * the loop has closed it (b's owner freed there) */
    void                  (*closed)(provend_bridge_t *b);

    uv_thread_t             thread;
    uv_async_t              async;
    uv_mutex_t              mutex;          /* the calls; callers' data */
    uv_cond_t               cond;
    int                     stopping;
    int                     started;
    int                     closing;        /* closed(b) will come */
    provend_bridge_call_t  *pending;        /* for the loop to take */
};

/* b's loop, apps, storage, clustered, lease_name, main, data and
 * closed set: main(b) started on a thread of its own.  PROVEN_ERR: b is
 * the loop's until closed(b) (or, before its async handle was made,
 * the caller's at once: closed not called, b->closing 0). */
int provend_bridge_start(provend_bridge_t *b, char *err, size_t errlen);
/* On the loop: the thread told to end, the async handle closed; then,
 * once the loop has ended, provend_bridge_join(). */
void provend_bridge_stop(provend_bridge_t *b);
void provend_bridge_join(provend_bridge_t *b);
int provend_bridge_stopping(provend_bridge_t *b);

/*
 * The thread: call run on the loop and waited for: 1 answered; 0
 * provend stopping with the call taken (abandoned: dropped when
 * answered); -1 stopping before the loop took it (still the caller's).
 */
int provend_bridge_ask(provend_bridge_t *b, provend_bridge_call_t *call);
/* The loop: the call's answer (failure NULL: ok). */
void provend_bridge_answer(provend_bridge_call_t *call, const char *failure);

/* The thread: app's handler run with args (taken) on its worker, the
 * trigger named; PROVEN_OK once it answered well, else err. */
int provend_bridge_run(provend_bridge_t *b, const char *app,
    const char *handler, const char *trigger, cbor_item_t *args, char *err,
    size_t errlen);

/* When a filter held failures times in a row is tried again (uv_hrtime):
 * after 1 s, 2 s, 4 s ... a minute at most, so that one that keeps
 * failing does not take every poll's time; *failures counted. */
uint64_t provend_bridge_retry_at(unsigned *failures);

/* The thread: waits ms, or until stopping. */
void provend_bridge_sleep(provend_bridge_t *b, unsigned ms);

/*
 * The thread: whether this node delivers in the lease window it is in
 * (claimed when new; alone: always).  *taken set when the window was
 * claimed but not the one before: another node may have moved the
 * cursors since, so they are read anew.
 */
int provend_bridge_lease(provend_bridge_t *b, int *taken);
/* Whether the lease is held for the window it is in now (no claim). */
int provend_bridge_lease_now(provend_bridge_t *b);

/*
 * An op's answer (the loop): status(b->data) built under b's mutex; b
 * NULL (nothing followed): the error code and why.
 */
void provend_bridge_op_status(provend_bridge_t *b,
    cbor_item_t *(*status)(void *data), uint64_t id,
    void (*reply)(void *ctx, uint8_t *frame, size_t len), void *ctx,
    const char *code, const char *why);

#endif /* PROVEND_BRIDGE_H */
