/*
 * Cluster storage: the NATS connection, the JetStream stream, and the
 * storage interface over them (see log_int.h for the design).
 */

#include "log_int.h"


/* ---- the connection and the stream -------------------------------------- */

static void
provend_cstore_on_sub_complete(void *closure)
{
    provend_csub_t    *st;
    provend_cstore_t  *cs;

    st = closure;
    cs = st->cs;
    pthread_mutex_lock(&cs->lock);
    st->done = 1;
    pthread_cond_broadcast(&cs->cond);
    pthread_mutex_unlock(&cs->lock);
}


/* Makes sure a stream exists; PROVEN_OK when it does. */
static int
provend_cstore_stream(provend_cstore_t *cs, jsCtx *js, const char *name,
    const char *subject, int64_t max_age_ns, int64_t window_ns,
    uint64_t *last)
{
    natsStatus        s;
    jsErrCode         jerr;
    jsStreamInfo     *si;
    jsStreamConfig    cfg;
    const char       *subjects[1];

    si = NULL;
    jerr = 0;
    s = js_GetStreamInfo(&si, js, name, NULL, &jerr);
    if (s == NATS_NOT_FOUND) {
        jsStreamConfig_Init(&cfg);
        subjects[0] = subject;
        cfg.Name = name;
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Replicas = (int64_t) cs->replicas;
        cfg.MaxMsgSize = PROVEND_LOG_ENTRY_MAX + 4096;
        cfg.Duplicates = window_ns;
        cfg.MaxAge = max_age_ns;
        s = js_AddStream(&si, js, &cfg, NULL, &jerr);
        if (s == NATS_OK) {
            provend_info("cluster storage: stream %s made with %u "
                         "replicas", name, cs->replicas);
        }
    }
    if (s != NATS_OK) {
        /* said each 10th time (about 10 s): a JetStream slow to answer
         * after a cold start shows in the log, not only as a wait */
        if (++cs->stream_waits % 10 == 0) {
            provend_info("cluster storage: stream %s not there yet after "
                         "%u tries: %s (%d)", name, cs->stream_waits,
                         natsStatus_GetText(s), (int) jerr);
        } else {
            provend_debug("cluster storage: stream %s not there yet: %s "
                          "(%d)", name, natsStatus_GetText(s), (int) jerr);
        }
        return PROVEN_ERR;
    }
    if (last != NULL) {
        *last = si->State.LastSeq;
    }
    jsStreamInfo_Destroy(si);
    return PROVEN_OK;
}


/*
 * Waits (a few seconds at most) for sub's last callback to return: 1 when
 * it has; 0 when it may still come (its state is then left allocated).
 */
static int
provend_cstore_unfollow(provend_cstore_t *cs, natsSubscription *sub,
    provend_csub_t *st)
{
    int              done;
    struct timespec  until;

    natsSubscription_Unsubscribe(sub);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&cs->lock);
    while (!st->done
           && pthread_cond_timedwait(&cs->cond, &cs->lock, &until) == 0)
    {
        /* woken: look again */
    }
    done = st->done;
    pthread_mutex_unlock(&cs->lock);
    natsSubscription_Destroy(sub);
    if (done) {
        free(st);
    }
    return done;
}


/*
 * Follows the log from the entry after the last handed to the copy, every
 * entry in order (libnats starts the consumer again if one goes amiss),
 * after dropping old (a subscription that lost entries).  NULL when it
 * cannot yet: the thread tries again.
 */
static natsSubscription *
provend_cstore_follow_again(provend_cstore_t *cs, jsCtx *js,
    natsSubscription *old)
{
    uint64_t           from;
    natsStatus         s;
    jsErrCode          jerr;
    jsSubOptions       so;
    provend_csub_t    *state;
    natsSubscription  *sub;

    if (old != NULL) {
        (void) provend_cstore_unfollow(cs, old, cs->sub_state);
        cs->sub_state = NULL;
    }
    state = calloc(1, sizeof(*state));
    if (state == NULL) {
        return NULL;
    }
    state->cs = cs;
    pthread_mutex_lock(&cs->lock);
    cs->gap = 0;
    from = cs->handed + 1;
    pthread_mutex_unlock(&cs->lock);

    jsSubOptions_Init(&so);
    so.Stream = PROVEND_LOG_STREAM;
    so.Ordered = true;
    if (from > 1) {
        so.Config.DeliverPolicy = js_DeliverByStartSequence;
        so.Config.OptStartSeq = from;
    } else {
        so.Config.DeliverPolicy = js_DeliverAll;
    }
    /*
     * Its consumer lives on one server: when that server dies, missed
     * heartbeats are what make libnats start another, so they come often.
     */
    so.Config.Heartbeat = 1000LL * 1000 * 1000;
    sub = NULL;
    jerr = 0;
    s = js_Subscribe(&sub, js, PROVEND_LOG_SUBJECT, provend_cstore_on_entry,
                     cs, NULL, &so, &jerr);
    if (s != NATS_OK) {
        provend_warn("cluster storage: cannot follow the log yet: %s (%d)",
                     natsStatus_GetText(s), (int) jerr);
        free(state);
        return NULL;
    }
    natsSubscription_SetPendingLimits(sub, -1, 256 * 1024 * 1024);
    if (natsSubscription_SetOnCompleteCB(sub, provend_cstore_on_sub_complete,
                                         state) != NATS_OK)
    {
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
        free(state);
        return NULL;
    }
    cs->sub_state = state;
    if (from > 1) {
        provend_info("cluster storage: following the log again from entry "
                     "%" PRIu64, from);
    }
    return sub;
}


/* Connects, makes the streams, follows the log; then sweeps late writes. */
static void *
provend_cstore_thread(void *arg)
{
    uint64_t           last;
    natsStatus         s;
    jsOptions          jo;
    natsOptions       *opts;
    natsConnection    *nc;
    jsCtx             *js;
    natsSubscription  *sub;
    provend_cstore_t  *cs;
    struct timespec    until;

    cs = arg;
    nc = NULL;
    js = NULL;

    opts = provend_cluster_nats_options(cs->client_port, 250);
    s = opts != NULL ? NATS_OK : NATS_NO_MEMORY;
    if (s == NATS_OK) {
        natsOptions_SetName(opts, "provend-storage");
        natsOptions_SetReconnectBufSize(opts, 64 * 1024 * 1024);
        /* a write waits for its entry: no buffering for a flusher */
        natsOptions_SetSendAsap(opts, true);
    }

    for ( ;; ) {
        pthread_mutex_lock(&cs->lock);
        if (cs->stopping) {
            pthread_mutex_unlock(&cs->lock);
            goto done;
        }
        pthread_mutex_unlock(&cs->lock);

        if (nc == NULL && s == NATS_OK
            && natsConnection_Connect(&nc, opts) != NATS_OK)
        {
            nc = NULL;
        }
        if (nc != NULL && js == NULL) {
            jsOptions_Init(&jo);
            jo.Wait = PROVEND_PUBLISH_WAIT_MS;
            jo.PublishAsync.MaxPending = 4096;
            /* the loop's thread publishes: when full, refused at once
             * (sent again by the sweep) rather than waited for */
            jo.PublishAsync.StallWait = 10;
            jo.PublishAsync.ErrHandler = provend_cstore_on_pub_err;
            jo.PublishAsync.ErrHandlerClosure = cs;
            if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK) {
                js = NULL;
            }
        }
        if (js != NULL
            /* a claim holds for 15 minutes: a turn of sessions' pruning */
            && provend_cstore_stream(cs, js, PROVEND_TICK_STREAM,
                                     PROVEND_TICK_SUBJECT,
                                     3600LL * 1000 * 1000 * 1000,
                                     900LL * 1000 * 1000 * 1000, NULL)
               == PROVEN_OK
            /* a write sent again is stored once within 2 minutes */
            && provend_cstore_stream(cs, js, PROVEND_LOG_STREAM,
                                     PROVEND_LOG_SUBJECT, 0,
                                     120LL * 1000 * 1000 * 1000, &last)
               == PROVEN_OK)
        {
            break;
        }
        /* nats-server starting, or no JetStream leader yet */
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_mutex_lock(&cs->lock);
        if (!cs->stopping) {
            pthread_cond_timedwait(&cs->cond, &cs->lock, &until);
        }
        pthread_mutex_unlock(&cs->lock);

        /* requests held meanwhile are told once past their wait */
        provend_cstore_release_catching(cs);
    }

    pthread_mutex_lock(&cs->lock);
    cs->target = last;
    cs->ready = last == 0;
    pthread_mutex_unlock(&cs->lock);
    provend_info("cluster storage: following the log (%" PRIu64 " entries "
                 "to apply)", last);

    pthread_mutex_lock(&cs->lock);
    cs->nc = nc;
    cs->js = js;
    sub = NULL;
    while (!cs->stopping) {
        if (sub == NULL || cs->gap) {
            pthread_mutex_unlock(&cs->lock);
            sub = provend_cstore_follow_again(cs, js, sub);
            pthread_mutex_lock(&cs->lock);
            cs->sub = sub;
        }
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 250 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cs->cond, &cs->lock, &until);
        pthread_mutex_unlock(&cs->lock);
        provend_cwait_sweep(cs);
        pthread_mutex_lock(&cs->lock);
    }
    pthread_mutex_unlock(&cs->lock);
    nc = NULL;
    js = NULL;

done:

    natsOptions_Destroy(opts);
    if (js != NULL) {
        jsCtx_Destroy(js);
    }
    if (nc != NULL) {
        natsConnection_Destroy(nc);
    }
    return NULL;
}


/* ---- the module --------------------------------------------------------- */

/*
 * Leaves the cluster: the thread joined, the log no longer followed,
 * publishes under way settled, the connection closed, waiting writes told.
 * Before nats-server stops (a libnats connection left reconnecting while
 * it is destroyed can crash), and again from close (then nothing to do).
 */
static void
provend_cstore_disconnect(provend_cstore_t *cs)
{
    pthread_mutex_lock(&cs->lock);
    cs->stopping = 1;
    pthread_cond_broadcast(&cs->cond);
    pthread_mutex_unlock(&cs->lock);

    if (cs->thread_started) {
        pthread_join(cs->thread, NULL);
        cs->thread_started = 0;
    }
    if (cs->sub != NULL) {
        /* its callback may still run on libnats' thread: wait for it */
        if (!provend_cstore_unfollow(cs, cs->sub, cs->sub_state)) {
            /* cs is left allocated rather than freed under that callback */
            provend_error("cluster storage: the log's subscription did not "
                          "end in time");
            cs->lingering = 1;
        }
        cs->sub = NULL;
    }
    if (cs->js != NULL && !cs->disconnected) {
        jsPubOptions  po;

        /* acks or errors of publishes under way: their handler uses cs */
        jsPubOptions_Init(&po);
        po.MaxWait = 2000;
        (void) js_PublishAsyncComplete(cs->js, &po);
    }
    if (cs->nc != NULL && !cs->disconnected) {
        natsConnection_Close(cs->nc);
    }
    cs->disconnected = 1;
    provend_cwait_sweep(cs);
}


static void
provend_cstore_close(provend_storage_t *st)
{
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;
    provend_cstore_disconnect(cs);

    /* entries handed to the copy are answered as it closes */
    provend_storage_close(cs->local);

    if (cs->js != NULL) {
        jsCtx_Destroy(cs->js);
    }
    if (cs->nc != NULL) {
        natsConnection_Destroy(cs->nc);
    }
    OPENSSL_cleanse(cs->key, sizeof(cs->key));
    if (cs->lingering) {
        return;
    }
    pthread_cond_destroy(&cs->cond);
    pthread_mutex_destroy(&cs->hook_lock);
    provend_cstore_writers_free(cs);
    pthread_mutex_destroy(&cs->lock);
    free(cs);
}


void
provend_storage_cluster_disconnect(provend_storage_t *st)
{
    provend_cstore_disconnect((provend_cstore_t *) st);
}


provend_storage_t *
provend_storage_cluster_open(provend_storage_t *local, char *err,
    size_t errlen)
{
    provend_cstore_t  *cs;

    cs = calloc(1, sizeof(*cs));
    if (cs == NULL || RAND_bytes(cs->id_prefix, sizeof(cs->id_prefix)) != 1)
    {
        free(cs);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&cs->lock, NULL);
    pthread_mutex_init(&cs->hook_lock, NULL);
    pthread_cond_init(&cs->cond, NULL);
    cs->local = local;

    cs->st.name = "cluster";
    cs->st.data = cs;
    cs->st.kv_get = provend_cstore_read;
    cs->st.kv_set = provend_cstore_write;
    cs->st.kv_delete = provend_cstore_write;
    cs->st.kv_keys = provend_cstore_read;
    cs->st.kv_sign = provend_cstore_read;
    cs->st.sql_execute = provend_cstore_write;
    cs->st.sql_query = provend_cstore_read;
    cs->st.sql_migrate = provend_cstore_write;
    cs->st.kv_peek = provend_cstore_peek;
    cs->st.hold = provend_cstore_hold;
    cs->st.release = provend_cstore_release;
    cs->st.close = provend_cstore_close;
    return &cs->st;
}


void
provend_storage_cluster_tick(provend_storage_t *st)
{
    int                started;
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;

    pthread_mutex_lock(&cs->lock);
    started = cs->thread_started;
    pthread_mutex_unlock(&cs->lock);

    /* once it runs, the cluster thread sweeps them itself */
    if (!started) {
        provend_cstore_release_catching(cs);
    }
}


int
provend_storage_cluster_start(provend_storage_t *st,
    const uint8_t cluster_key[PROVEND_KEY_LEN], unsigned client_port,
    unsigned replicas)
{
    int                rc;
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;
    pthread_mutex_lock(&cs->lock);
    if (cs->started) {
        pthread_mutex_unlock(&cs->lock);
        return PROVEN_OK;
    }
    rc = provend_keys_derive(cluster_key, PROVEND_LOG_AD,
                             sizeof(PROVEND_LOG_AD) - 1, cs->key,
                             sizeof(cs->key));
    cs->client_port = client_port;
    cs->replicas = replicas;
    if (rc == PROVEN_OK
        && pthread_create(&cs->thread, NULL, provend_cstore_thread, cs) == 0)
    {
        cs->thread_started = 1;
        cs->started = 1;
    } else {
        rc = PROVEN_ERR;
    }
    pthread_mutex_unlock(&cs->lock);
    return rc;
}


int
provend_storage_cluster_follow(provend_storage_t *st, const char *db,
    provend_storage_applied_pt fn, void *data)
{
    int                rc;
    size_t             i;
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;
    rc = PROVEN_ERR;
    pthread_mutex_lock(&cs->hook_lock);
    for (i = 0; i < PROVEND_HOOKS_MAX; i++) {
        if (fn == NULL && cs->hooks[i].data == data
            && strcmp(cs->hooks[i].db, db) == 0)
        {
            cs->hooks[i].fn = NULL;
            cs->hooks[i].data = NULL;
            rc = PROVEN_OK;
        } else if (fn != NULL && cs->hooks[i].fn == NULL) {
            snprintf(cs->hooks[i].db, sizeof(cs->hooks[i].db), "%s", db);
            cs->hooks[i].fn = fn;
            cs->hooks[i].data = data;
            rc = PROVEN_OK;
            break;
        }
    }
    pthread_mutex_unlock(&cs->hook_lock);
    return rc;
}


cbor_item_t *
provend_storage_cluster_status(provend_storage_t *st)
{
    int                ok;
    cbor_item_t       *map;
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;
    map = cbor_new_definite_map(7);
    if (map == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&cs->lock);
    ok = proven_cbor_map_put(map, "following", cbor_build_bool(cs->sub
                                                                != NULL))
            == PROVEN_OK
         && proven_cbor_map_put(map, "ready", cbor_build_bool(cs->ready))
            == PROVEN_OK
         && proven_cbor_map_put(map, "applied",
                                cbor_build_uint64(provend_cstore_applied(cs)))
            == PROVEN_OK
         && proven_cbor_map_put(map, "at_start",
                                cbor_build_uint64(cs->target)) == PROVEN_OK
         && proven_cbor_map_put(map, "unreadable",
                                cbor_build_uint64(cs->skipped)) == PROVEN_OK
         && proven_cbor_map_put(map, "repeats",
                                cbor_build_uint64(cs->repeats)) == PROVEN_OK
         && proven_cbor_map_put(map, "writes_waiting",
                                cbor_build_uint64(cs->nwaiters)) == PROVEN_OK;
    pthread_mutex_unlock(&cs->lock);
    if (!ok) {
        cbor_decref(&map);
    }
    return map;
}


/* The JetStream context while the store is connected, else NULL. */
static jsCtx *
provend_cstore_js(provend_cstore_t *cs)
{
    jsCtx  *js;

    pthread_mutex_lock(&cs->lock);
    js = cs->stopping ? NULL : cs->js;
    pthread_mutex_unlock(&cs->lock);
    return js;
}


int
provend_storage_cluster_claim(provend_storage_t *st, const char *what)
{
    int                claimed;
    natsStatus         s;
    jsCtx             *js;
    jsPubAck          *pa;
    jsPubOptions       po;
    jsErrCode          jerr;

    js = provend_cstore_js((provend_cstore_t *) st);
    if (js == NULL) {
        return 0;
    }

    /* the first node to publish this id within the window has it */
    jsPubOptions_Init(&po);
    po.MsgId = what;
    po.MaxWait = PROVEND_PUBLISH_WAIT_MS;
    pa = NULL;
    jerr = 0;
    s = js_Publish(&pa, js, PROVEND_TICK_SUBJECT, what, (int) strlen(what),
                   &po, &jerr);
    claimed = s == NATS_OK && pa != NULL && !pa->Duplicate;
    jsPubAck_Destroy(pa);
    return claimed;
}


uint64_t
provend_storage_cluster_last(provend_storage_t *st)
{
    uint64_t           last;
    jsCtx             *js;
    jsErrCode          jerr;
    jsStreamInfo      *si;

    js = provend_cstore_js((provend_cstore_t *) st);
    if (js == NULL) {
        return 0;
    }
    si = NULL;
    jerr = 0;
    if (js_GetStreamInfo(&si, js, PROVEND_LOG_STREAM, NULL, &jerr)
        != NATS_OK)
    {
        return 0;
    }
    last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return last;
}
