/*
 * A chain's events thread and provend's loop (bridge.h).  The thread
 * blocks on the network and on storage; what it needs of the apps (their
 * filters, a handler run) is asked of the loop through an async handle
 * and waited for, the wait cut short when provend stops.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proven.h"
#include "bridge.h"
#include "apps/apps.h"
#include "cluster/cluster.h"
#include "core/ops.h"


int
provend_bridge_stopping(provend_bridge_t *b)
{
    return __atomic_load_n(&b->stopping, __ATOMIC_ACQUIRE);
}


/* ---- the loop's side ------------------------------------------------------ */

void
provend_bridge_answer(provend_bridge_call_t *call, const char *failure)
{
    provend_bridge_t  *b = call->bridge;

    uv_mutex_lock(&b->mutex);
    if (call->abandoned) {
        /* the thread has gone on (provend stopping): the call is ours */
        uv_mutex_unlock(&b->mutex);
        if (call->drop != NULL) {
            call->drop(call);
        } else {
            free(call);
        }
        return;
    }
    if (failure != NULL) {
        snprintf(call->error, sizeof(call->error), "%s", failure);
    } else {
        call->ok = 1;
    }
    call->done = 1;
    uv_cond_broadcast(&b->cond);
    uv_mutex_unlock(&b->mutex);
}


static void
bridge_on_async(uv_async_t *async)
{
    provend_bridge_t       *b = async->data;
    provend_bridge_call_t  *call;

    uv_mutex_lock(&b->mutex);
    call = b->pending;
    b->pending = NULL;
    uv_mutex_unlock(&b->mutex);
    if (call != NULL) {
        call->run(call);
    }
}


int
provend_bridge_ask(provend_bridge_t *b, provend_bridge_call_t *call)
{
    call->bridge = b;
    uv_mutex_lock(&b->mutex);
    if (b->stopping) {
        uv_mutex_unlock(&b->mutex);
        return -1;
    }
    b->pending = call;
    uv_async_send(&b->async);
    while (!call->done && !b->stopping) {
        uv_cond_wait(&b->cond, &b->mutex);
    }
    if (!call->done) {
        /* not taken yet: still the caller's, and never to be taken */
        if (b->pending == call) {
            b->pending = NULL;
            uv_mutex_unlock(&b->mutex);
            return -1;
        }
        call->abandoned = 1;
        uv_mutex_unlock(&b->mutex);
        return 0;
    }
    uv_mutex_unlock(&b->mutex);
    return 1;
}


/* ---- a handler run ------------------------------------------------------- */

typedef struct {
    provend_bridge_call_t  call;
    const char            *app, *handler, *trigger;     /* the thread's */
    cbor_item_t           *args;
} bridge_run_t;


static void
bridge_run_done(void *data, const char *failure, proven_response_t *res)
{
    char                    said[160];
    provend_bridge_call_t  *call = data;

    if (failure == NULL && res != NULL && !res->ok) {
        snprintf(said, sizeof(said), "%.40s: %.110s", res->code,
                 res->message);
        failure = said;
    }
    provend_bridge_answer(call, failure);
}


static void
bridge_run_on_loop(provend_bridge_call_t *call)
{
    int            rc;
    bridge_run_t  *run = (bridge_run_t *) call;
    cbor_item_t   *args;

    /* the event is the loop's from here (libcbor's counts are not
     * atomic: only this thread touches them now); the run holds its own */
    args = run->args;
    run->args = NULL;
    rc = provend_apps_run_on(call->bridge->apps, run->app, NULL,
                             run->handler, args, NULL, NULL, run->trigger,
                             bridge_run_done, call);
    cbor_decref(&args);
    if (rc != PROVEN_OK) {
        provend_bridge_answer(call, rc == PROVEND_RUN_STOPPING
                                    ? "provend is stopping"
                                    : rc == PROVEND_RUN_NO_APP
                                    ? "the app is not deployed"
                                    : "out of memory");
    }
}


int
provend_bridge_run(provend_bridge_t *b, const char *app, const char *handler,
    const char *trigger, cbor_item_t *args, char *err, size_t errlen)
{
    int            rc;
    bridge_run_t  *run;

    run = calloc(1, sizeof(*run));
    if (run == NULL) {
        cbor_decref(&args);
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    run->call.run = bridge_run_on_loop;
    run->app = app;
    run->handler = handler;
    run->trigger = trigger;
    run->args = args;
    rc = provend_bridge_ask(b, &run->call);
    if (rc == 0) {
        proven_errf(err, errlen, "provend is stopping");
        return PROVEN_ERR;          /* the loop frees it when answered */
    }
    if (run->args != NULL) {
        cbor_decref(&run->args);    /* never taken by the loop */
    }
    if (rc < 0 || !run->call.ok) {
        proven_errf(err, errlen, "the handler: %s",
                    rc < 0 ? "provend is stopping" : run->call.error);
        free(run);
        return PROVEN_ERR;
    }
    free(run);
    return PROVEN_OK;
}


/* ---- the thread ------------------------------------------------------------------ */

void
provend_bridge_sleep(provend_bridge_t *b, unsigned ms)
{
    uint64_t  wake;

    uv_mutex_lock(&b->mutex);
    wake = uv_hrtime() + (uint64_t) ms * 1000000ULL;
    while (!b->stopping && uv_hrtime() < wake) {
        (void) uv_cond_timedwait(&b->cond, &b->mutex, wake - uv_hrtime());
    }
    uv_mutex_unlock(&b->mutex);
}


uint64_t
provend_bridge_retry_at(unsigned *failures)
{
    uint64_t  wait_ms;

    wait_ms = *failures < 6 ? 1000ULL << *failures : 60000;
    (*failures)++;
    return uv_hrtime() + wait_ms * 1000000ULL;
}


int
provend_bridge_lease_now(provend_bridge_t *b)
{
    return !b->clustered
           || (b->lease_held
               && (uint64_t) time(NULL) / b->lease_s == b->lease_window);
}


/*
 * In a cluster, one node at a time delivers: the first to claim each
 * window of lease_s seconds (JetStream keeps one claim per id).  A node
 * taking over reads the cursors anew, as the last holder left them in
 * the replicated storage: at a hand-over, an event whose answer the last
 * holder had not yet written may come twice (at least once).
 */
int
provend_bridge_lease(provend_bridge_t *b, int *taken)
{
    char      what[96];
    int       held;
    uint64_t  window;

    *taken = 0;
    if (!b->clustered) {
        return 1;
    }
    window = (uint64_t) time(NULL) / b->lease_s;
    if (window == b->lease_window) {
        return b->lease_held;
    }
    snprintf(what, sizeof(what), "%s-%llu", b->lease_name,
             (unsigned long long) window);
    held = provend_storage_cluster_claim(b->storage, what);
    *taken = held && !(b->lease_held && window == b->lease_window + 1);
    uv_mutex_lock(&b->mutex);
    b->lease_window = window;
    b->lease_held = held;
    uv_mutex_unlock(&b->mutex);
    return held;
}


static void
bridge_on_closed(uv_handle_t *handle)
{
    provend_bridge_t  *b = handle->data;

    uv_cond_destroy(&b->cond);
    uv_mutex_destroy(&b->mutex);
    if (b->closed != NULL) {
        b->closed(b);
    }
}


static void
bridge_main(void *arg)
{
    provend_bridge_t  *b = arg;

    b->main(b);
}


int
provend_bridge_start(provend_bridge_t *b, char *err, size_t errlen)
{
    if (uv_mutex_init(&b->mutex) != 0) {
        proven_errf(err, errlen, "cannot make a mutex");
        return PROVEN_ERR;
    }
    if (uv_cond_init(&b->cond) != 0) {
        uv_mutex_destroy(&b->mutex);
        proven_errf(err, errlen, "cannot make a condition");
        return PROVEN_ERR;
    }
    if (uv_async_init(b->loop, &b->async, bridge_on_async) != 0) {
        uv_cond_destroy(&b->cond);
        uv_mutex_destroy(&b->mutex);
        proven_errf(err, errlen, "cannot make an async handle");
        return PROVEN_ERR;
    }
    b->async.data = b;
    if (b->lease_s == 0) {
        b->lease_s = 15;
    }
    if (uv_thread_create(&b->thread, bridge_main, b) != 0) {
        /* the handle is the loop's until closed: b->closed(b) then */
        b->stopping = 1;
        b->closing = 1;
        uv_close((uv_handle_t *) &b->async, bridge_on_closed);
        proven_errf(err, errlen, "cannot start the events thread");
        return PROVEN_ERR;
    }
    b->started = 1;
    return PROVEN_OK;
}


void
provend_bridge_stop(provend_bridge_t *b)
{
    uv_mutex_lock(&b->mutex);
    __atomic_store_n(&b->stopping, 1, __ATOMIC_RELEASE);
    uv_cond_broadcast(&b->cond);
    uv_mutex_unlock(&b->mutex);
    uv_close((uv_handle_t *) &b->async, NULL);
}


void
provend_bridge_join(provend_bridge_t *b)
{
    if (b->started) {
        uv_thread_join(&b->thread);
    }
    uv_cond_destroy(&b->cond);
    uv_mutex_destroy(&b->mutex);
}


void
provend_bridge_op_status(provend_bridge_t *b,
    cbor_item_t *(*status)(void *data), uint64_t id,
    void (*reply)(void *ctx, uint8_t *frame, size_t len), void *ctx,
    const char *code, const char *why)
{
    cbor_item_t  *map;

    if (b == NULL) {
        provend_ops_reply_error(reply, ctx, id, code, why);
        return;
    }
    uv_mutex_lock(&b->mutex);
    map = status(b->data);
    uv_mutex_unlock(&b->mutex);
    if (map == NULL) {
        provend_ops_reply_error(reply, ctx, id, "internal", "out of memory");
        return;
    }
    provend_ops_reply_ok(reply, ctx, id, map);
}
