/*
 * Sessions across the cluster: a session lives on the node that made it,
 * and the other nodes hand its messages there over NATS, so that one node
 * alone checks its seq and holds its key (see sessions.h).
 *
 * Each node subscribes to _proven.session.TAG (TAG: the 8 hex digits every
 * id it makes starts with) and serves what comes there like a request
 * from nginx.  A node asked about a session of another tag publishes the
 * request there with a reply subject of its own inbox, and hands the
 * answer frame back as it came: the answer is signed by the session key,
 * so what it carries needs no trust in the path.  No subscriber (the node
 * is gone, and its sessions with it): unknown_session, at once.
 *
 * libnats calls back on its own threads: what they receive is queued
 * under a mutex and taken on the loop.
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>
#include <uv.h>

#include "cluster.h"
#include "core/log.h"
#include "core/util.h"


#define PROVEND_FORWARD_SUBJECT   "_proven.session"
#define PROVEND_FORWARD_WAIT_MS   (320 * 1000)   /* past an Execute's own */
#define PROVEND_FORWARD_PENDING   4096           /* calls waiting, and */
#define PROVEND_FORWARD_INCOMING  4096           /* requests to serve */
#define PROVEND_FORWARD_BUCKETS   1024


typedef struct provend_fwd_msg_s   provend_fwd_msg_t;
typedef struct provend_fwd_call_s  provend_fwd_call_t;

/* What libnats handed over: a request to serve, or an answer. */
struct provend_fwd_msg_s {
    natsMsg             *msg;
    int                  answer;
    provend_fwd_msg_t   *next;
};

/* A request sent to another node, waiting for its answer. */
struct provend_fwd_call_s {
    uint64_t               n;           /* its reply subject's last token */
    uint64_t               id;          /* the request's, for errors */
    uint64_t               deadline;    /* uv_now */
    provend_ops_reply_pt   reply;
    void                  *ctx;
    provend_fwd_call_t    *next;        /* same bucket */
};

/* A forwarded request being served here. */
typedef struct {
    struct provend_forward_s  *fw;
    char                      *reply_subject;
} provend_fwd_serving_t;

struct provend_forward_s {
    uv_loop_t                  *loop;
    provend_forward_serve_pt    serve;
    void                       *serve_data;
    natsConnection             *nc;
    natsSubscription           *requests;
    natsSubscription           *answers;
    char                        inbox[128];
    uint64_t                    next_n;
    size_t                      npending;
    provend_fwd_call_t         *pending[PROVEND_FORWARD_BUCKETS];
    uv_timer_t                  sweep;
    uv_async_t                  wake;
    int                         closed;
    unsigned                    serving;    /* requests of others, here */

    pthread_mutex_t             lock;       /* all below */
    pthread_cond_t              done_cond;
    int                         stopping;
    int                         subs_done;  /* last callbacks returned */
    provend_fwd_msg_t          *head;
    provend_fwd_msg_t         **tail;
    size_t                      nqueued;
};


static void
provend_forward_on_msg(natsConnection *nc, natsSubscription *sub,
    natsMsg *msg, void *closure)
{
    int                 full;
    provend_fwd_msg_t  *m;
    provend_forward_t  *fw;

    (void) nc;
    fw = closure;
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        natsMsg_Destroy(msg);
        return;
    }
    (void) sub;
    m->msg = msg;
    /* fw->answers may not be set yet: told apart by subject */
    m->answer = strncmp(natsMsg_GetSubject(msg), fw->inbox,
                        strlen(fw->inbox)) == 0;

    pthread_mutex_lock(&fw->lock);
    full = fw->stopping
           || (!m->answer && fw->nqueued >= PROVEND_FORWARD_INCOMING);
    if (!full) {
        *fw->tail = m;
        fw->tail = &m->next;
        fw->nqueued++;
    }
    if (!full) {
        uv_async_send(&fw->wake);       /* under the lock: not yet closed */
    }
    pthread_mutex_unlock(&fw->lock);

    if (full) {
        /* the asking node's call ends at its deadline */
        natsMsg_Destroy(msg);
        free(m);
    }
}


static void
provend_forward_on_complete(void *closure)
{
    provend_forward_t  *fw;

    fw = closure;
    pthread_mutex_lock(&fw->lock);
    fw->subs_done++;
    pthread_cond_signal(&fw->done_cond);
    pthread_mutex_unlock(&fw->lock);
}


/* ---- serving what other nodes forward ------------------------------------ */

static void
provend_forward_served(void *ctx, uint8_t *frame, size_t len)
{
    provend_fwd_serving_t  *sv;

    sv = ctx;
    sv->fw->serving--;
    if (!sv->fw->closed && frame != NULL) {
        (void) natsConnection_Publish(sv->fw->nc, sv->reply_subject, frame,
                                      (int) len);
    }
    free(frame);
    free(sv->reply_subject);
    free(sv);
}


static void
provend_forward_serve(provend_forward_t *fw, natsMsg *msg)
{
    char                    err[PROVEN_ERR_LEN];
    proven_request_t        req;
    provend_fwd_serving_t  *sv;

    /* answers go to an inbox, never to a subject of the asker's choosing */
    if (natsMsg_GetReply(msg) == NULL
        || strncmp(natsMsg_GetReply(msg), "_INBOX.", 7) != 0)
    {
        return;
    }
    if (proven_request_decode((const uint8_t *) natsMsg_GetData(msg),
                              (size_t) natsMsg_GetDataLength(msg), &req,
                              err, sizeof(err)) != PROVEN_OK)
    {
        provend_warn("cluster: a malformed forwarded request: %s", err);
        return;
    }
    sv = calloc(1, sizeof(*sv));
    if (sv == NULL
        || (sv->reply_subject = strdup(natsMsg_GetReply(msg))) == NULL)
    {
        free(sv);
        proven_request_free(&req);
        return;
    }
    sv->fw = fw;
    fw->serving++;
    fw->serve(fw->serve_data, &req, provend_forward_served, sv);
    proven_request_free(&req);
}


/* ---- asking another node --------------------------------------------------- */

static provend_fwd_call_t **
provend_forward_slot(provend_forward_t *fw, uint64_t n)
{
    provend_fwd_call_t  **p;

    for (p = &fw->pending[n % PROVEND_FORWARD_BUCKETS]; *p != NULL;
         p = &(*p)->next)
    {
        if ((*p)->n == n) {
            break;
        }
    }
    return p;
}


static void
provend_forward_answer(provend_forward_t *fw, natsMsg *msg)
{
    int                   len;
    uint8_t              *frame;
    uint64_t              n;
    const char           *subject, *last;
    provend_fwd_call_t   *call, **p;
    proven_response_t     res;

    subject = natsMsg_GetSubject(msg);
    last = subject != NULL ? strrchr(subject, '.') : NULL;
    if (last == NULL || last[1] < '0' || last[1] > '9') {
        return;
    }
    n = strtoull(last + 1, NULL, 10);
    p = provend_forward_slot(fw, n);
    if ((call = *p) == NULL) {
        return;                         /* answered already, or too late */
    }
    *p = call->next;
    fw->npending--;

    len = natsMsg_GetDataLength(msg);
    if (natsMsg_IsNoResponders(msg) || len <= 0) {
        provend_ops_reply_error(call->reply, call->ctx, call->id,
                                "unknown_session", "the node that held "
                                "this session is gone: open another");
        free(call);
        return;
    }

    /* a whole frame of an answer to this request, or nothing */
    frame = malloc((size_t) len);
    if (frame == NULL
        || (size_t) len < PROVEN_FRAME_HEADER
        || proven_get_be32((const uint8_t *) natsMsg_GetData(msg))
           != (uint32_t) len - PROVEN_FRAME_HEADER
        || proven_response_decode((const uint8_t *) natsMsg_GetData(msg)
                                  + PROVEN_FRAME_HEADER,
                                  (size_t) len - PROVEN_FRAME_HEADER, &res,
                                  NULL, 0) != PROVEN_OK)
    {
        free(frame);
        provend_ops_reply_error(call->reply, call->ctx, call->id, "internal",
                                "the node that holds this session answered "
                                "with a malformed frame");
        free(call);
        return;
    }
    n = res.id;
    proven_response_free(&res);
    if (n != call->id) {
        free(frame);
        provend_ops_reply_error(call->reply, call->ctx, call->id, "internal",
                                "the node that holds this session answered "
                                "another request");
        free(call);
        return;
    }
    memcpy(frame, natsMsg_GetData(msg), (size_t) len);
    call->reply(call->ctx, frame, (size_t) len);
    free(call);
}


void
provend_forward_call(void *data, uint32_t tag, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    char                 subject[64], reply_subject[160];
    size_t               len;
    uint8_t             *body;
    natsStatus           st;
    provend_fwd_call_t  *call;
    provend_forward_t   *fw;

    fw = data;
    if (fw->closed || fw->npending >= PROVEND_FORWARD_PENDING) {
        provend_ops_reply_error(reply, ctx, req->id, "busy",
                                "too many messages wait for other nodes");
        return;
    }
    call = calloc(1, sizeof(*call));
    if (call == NULL
        || proven_cbor_dump(req->map, &body, &len) != PROVEN_OK)
    {
        free(call);
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    call->n = ++fw->next_n;
    call->id = req->id;
    call->deadline = uv_now(fw->loop) + PROVEND_FORWARD_WAIT_MS;
    call->reply = reply;
    call->ctx = ctx;

    snprintf(subject, sizeof(subject), PROVEND_FORWARD_SUBJECT ".%08x", tag);
    snprintf(reply_subject, sizeof(reply_subject), "%s.%llu", fw->inbox,
             (unsigned long long) call->n);
    st = natsConnection_PublishRequest(fw->nc, subject, reply_subject, body,
                                       (int) len);
    free(body);
    if (st != NATS_OK) {
        provend_ops_reply_error(reply, ctx, req->id, "unknown_session",
                                "the node that holds this session cannot "
                                "be reached");
        free(call);
        return;
    }
    call->next = fw->pending[call->n % PROVEND_FORWARD_BUCKETS];
    fw->pending[call->n % PROVEND_FORWARD_BUCKETS] = call;
    fw->npending++;
}


/* ---- the loop's side --------------------------------------------------------- */

static void
provend_forward_on_wake(uv_async_t *handle)
{
    provend_fwd_msg_t  *list, *m;
    provend_forward_t  *fw;

    fw = handle->data;
    pthread_mutex_lock(&fw->lock);
    list = fw->head;
    fw->head = NULL;
    fw->tail = &fw->head;
    fw->nqueued = 0;
    pthread_mutex_unlock(&fw->lock);

    while ((m = list) != NULL) {
        list = m->next;
        if (!fw->closed) {
            if (m->answer) {
                provend_forward_answer(fw, m->msg);
            } else {
                provend_forward_serve(fw, m->msg);
            }
        }
        natsMsg_Destroy(m->msg);
        free(m);
    }
}


/* Calls past their deadline, and, closing, every call, answered. */
static void
provend_forward_expire(provend_forward_t *fw, int all)
{
    size_t               b;
    uint64_t             now;
    provend_fwd_call_t  *call, **p;

    now = uv_now(fw->loop);
    for (b = 0; b < PROVEND_FORWARD_BUCKETS; b++) {
        p = &fw->pending[b];
        while ((call = *p) != NULL) {
            if (!all && call->deadline > now) {
                p = &call->next;
                continue;
            }
            *p = call->next;
            fw->npending--;
            provend_ops_reply_error(call->reply, call->ctx, call->id,
                                    "unknown_session", "the node that holds "
                                    "this session did not answer");
            free(call);
        }
    }
}


static void
provend_forward_on_sweep(uv_timer_t *timer)
{
    provend_forward_expire(timer->data, 0);
}


static void
provend_forward_on_connected(natsConnection *nc, void *closure)
{
    (void) nc;
    (void) closure;
    provend_debug("cluster: session forwarding connected to NATS");
}


provend_forward_t *
provend_forward_open(void *loop, unsigned client_port, uint32_t tag,
    provend_forward_serve_pt serve, void *serve_data, char *err,
    size_t errlen)
{
    char                subject[64], answers[160];
    natsStatus          st;
    natsInbox          *inbox;
    natsOptions        *opts;
    provend_forward_t  *fw;

    fw = calloc(1, sizeof(*fw));
    if (fw == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    fw->loop = loop;
    fw->serve = serve;
    fw->serve_data = serve_data;
    fw->tail = &fw->head;
    pthread_mutex_init(&fw->lock, NULL);
    pthread_cond_init(&fw->done_cond, NULL);
    uv_async_init(fw->loop, &fw->wake, provend_forward_on_wake);
    fw->wake.data = fw;
    uv_timer_init(fw->loop, &fw->sweep);
    fw->sweep.data = fw;
    uv_timer_start(&fw->sweep, provend_forward_on_sweep, 1000, 1000);
    uv_unref((uv_handle_t *) &fw->sweep);
    uv_unref((uv_handle_t *) &fw->wake);

    inbox = NULL;
    st = natsInbox_Create(&inbox);
    if (st == NATS_OK) {
        snprintf(fw->inbox, sizeof(fw->inbox), "%s", (const char *) inbox);
        natsInbox_Destroy(inbox);
    }

    opts = NULL;
    if (st == NATS_OK) {
        opts = provend_cluster_nats_options(client_port, 500);
        st = opts != NULL ? NATS_OK : NATS_NO_MEMORY;
    }
    if (st == NATS_OK) {
        natsOptions_SetRetryOnFailedConnect(opts, true,
                                            provend_forward_on_connected, fw);
        st = natsConnection_Connect(&fw->nc, opts);
        if (st == NATS_NOT_YET_CONNECTED) {
            st = NATS_OK;
        }
    }
    natsOptions_Destroy(opts);

    snprintf(subject, sizeof(subject), PROVEND_FORWARD_SUBJECT ".%08x", tag);
    snprintf(answers, sizeof(answers), "%s.*", fw->inbox);
    if (st == NATS_OK) {
        st = natsConnection_Subscribe(&fw->requests, fw->nc, subject,
                                      provend_forward_on_msg, fw);
    }
    if (st == NATS_OK) {
        st = natsSubscription_SetOnCompleteCB(fw->requests,
                                              provend_forward_on_complete,
                                              fw);
    }
    if (st == NATS_OK) {
        st = natsConnection_Subscribe(&fw->answers, fw->nc, answers,
                                      provend_forward_on_msg, fw);
    }
    if (st == NATS_OK) {
        st = natsSubscription_SetOnCompleteCB(fw->answers,
                                              provend_forward_on_complete,
                                              fw);
    }
    if (st != NATS_OK) {
        proven_errf(err, errlen, "session forwarding: %s",
                    natsStatus_GetText(st));
        provend_forward_stop(fw);
    }
    return fw;
}


void
provend_forward_stop(provend_forward_t *fw)
{
    if (fw->closed) {
        return;
    }
    fw->closed = 1;
    pthread_mutex_lock(&fw->lock);
    fw->stopping = 1;                   /* callbacks from now on: dropped */
    pthread_mutex_unlock(&fw->lock);
    if (fw->requests != NULL) {
        natsSubscription_Unsubscribe(fw->requests);
    }
    if (fw->answers != NULL) {
        natsSubscription_Unsubscribe(fw->answers);
    }
    if (fw->nc != NULL) {
        natsConnection_Close(fw->nc);
    }
    provend_forward_expire(fw, 1);
    uv_close((uv_handle_t *) &fw->sweep, NULL);
    uv_close((uv_handle_t *) &fw->wake, NULL);
}


void
provend_forward_free(provend_forward_t *fw)
{
    struct timespec     until;
    provend_fwd_msg_t  *m;

    if (fw == NULL) {
        return;
    }
    /* after the loop: a callback may still run on libnats' thread */
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&fw->lock);
    while (fw->subs_done < (fw->requests != NULL) + (fw->answers != NULL)
           && pthread_cond_timedwait(&fw->done_cond, &fw->lock, &until) == 0)
    {
        /* woken: look again */
    }
    pthread_mutex_unlock(&fw->lock);
    natsSubscription_Destroy(fw->requests);
    natsSubscription_Destroy(fw->answers);
    natsConnection_Destroy(fw->nc);
    while ((m = fw->head) != NULL) {
        fw->head = m->next;
        natsMsg_Destroy(m->msg);
        free(m);
    }
    pthread_cond_destroy(&fw->done_cond);
    pthread_mutex_destroy(&fw->lock);
    if (fw->serving > 0) {
        return;     /* answers may still come (provend is exiting): kept */
    }
    free(fw);
}
