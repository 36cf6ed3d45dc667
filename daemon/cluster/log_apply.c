/*
 * The replicated log: applying the stream to this node's copy,
 * publishing writes, and reads after a place in the log.
 */

#include "log_int.h"


/* Milliseconds of a clock that never steps back. */
uint64_t
provend_cstore_mono_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}


/* The last entry this node's copy holds with every one before it. */
uint64_t
provend_cstore_applied(provend_cstore_t *cs)
{
    size_t    i;
    uint64_t  least;

    least = cs->handed + 1;
    for (i = 0; i < PROVEND_APPLYING_MAX; i++) {
        if (cs->outstanding[i] != 0 && cs->outstanding[i] < least) {
            least = cs->outstanding[i];
        }
    }
    return least - 1;
}


/* Reads parked for an "after" now applied (under the lock), unlinked. */
provend_storage_req_t *
provend_cstore_unpark(provend_cstore_t *cs, int all)
{
    uint64_t                applied, now;
    provend_storage_req_t  *out, **pp, *req;

    applied = provend_cstore_applied(cs);
    now = provend_cstore_mono_ms();
    out = NULL;
    pp = &cs->parked;
    while ((req = *pp) != NULL) {
        if (all || req->after <= applied
            || req->after_until_ms <= now)
        {
            *pp = req->next;
            cs->nparked--;
            req->next = out;
            out = req;
        } else {
            pp = &req->next;
        }
    }
    return out;
}


static void provend_cstore_add_log_seq(cbor_item_t **result, uint64_t seq);


/* ---- applying the stream ------------------------------------------------ */

static void
provend_capply_done(provend_storage_req_t *req)
{
    size_t                  i;
    provend_capply_t       *a;
    provend_cstore_t       *cs;
    provend_storage_req_t  *w, *parked;

    a = req->data;
    cs = a->cs;
    w = a->waiter;

    if (w != NULL) {
        w->status = req->status;
        memcpy(w->error, req->error, sizeof(w->error));
        w->result = req->result;
        req->result = NULL;
        w->revision = req->revision;
        w->existed = req->existed;
        w->log_seq = a->seq;
        if (w->status == PROVEND_ST_OK && w->result != NULL) {
            provend_cstore_add_log_seq(&w->result, a->seq);
        }
        w->done(w);
    }

    pthread_mutex_lock(&cs->lock);
    if ((req->status == PROVEND_ST_STORAGE_ERROR
         || req->status == PROVEND_ST_INTERNAL) && !cs->broken)
    {
        /*
         * A failure of this node alone (a disk, memory): its copy and the
         * others' may differ from here, so it serves no more reads.
         */
        cs->broken = 1;
        provend_error("cluster storage: an entry failed on this node: %s; "
                      "its copy is not served (restart provend to make it "
                      "again from the log)", req->error);
    }
    cs->applying--;
    cs->applying_bytes -= a->bytes;
    for (i = 0; i < PROVEND_APPLYING_MAX; i++) {
        if (cs->outstanding[i] == a->seq) {
            cs->outstanding[i] = 0;
            break;
        }
    }
    parked = cs->parked != NULL ? provend_cstore_unpark(cs, 0) : NULL;
    cs->applied++;
    if (!cs->ready && cs->handed >= cs->target && cs->applying == 0) {
        cs->ready = 1;
        provend_info("cluster storage: caught up (%" PRIu64 " entries)",
                     cs->handed);
    }
    pthread_cond_broadcast(&cs->cond);
    pthread_mutex_unlock(&cs->lock);

    provend_cstore_release_parked(cs, parked);

    if (a->own) {
        pthread_mutex_lock(&cs->hook_lock);
        for (i = 0; i < PROVEND_HOOKS_MAX; i++) {
            if (cs->hooks[i].fn != NULL
                && strcmp(cs->hooks[i].db, req->name) == 0)
            {
                cs->hooks[i].fn(cs->hooks[i].data, req);
            }
        }
        pthread_mutex_unlock(&cs->hook_lock);
    }

    free(a);
    provend_storage_req_free(req);
}


/* ---- each entry once ------------------------------------------------------ */

/* The window's bits moved up by n (bit d becomes bit d + n). */
static void
provend_writer_shift(provend_writer_t *w, uint64_t n)
{
    size_t    words, bits, i;
    uint64_t  next[PROVEND_REPLAY_WINDOW / 64];

    memset(next, 0, sizeof(next));
    if (n < PROVEND_REPLAY_WINDOW) {
        words = (size_t) (n / 64);
        bits = (size_t) (n % 64);
        for (i = 0; i + words < PROVEND_REPLAY_WINDOW / 64; i++) {
            next[i + words] |= w->seen[i] << bits;
            if (bits != 0 && i + words + 1 < PROVEND_REPLAY_WINDOW / 64) {
                next[i + words + 1] |= w->seen[i] >> (64 - bits);
            }
        }
    }
    memcpy(w->seen, next, sizeof(next));
}


/*
 * Under cs->lock, in log order (so every node decides alike): whether the
 * entry with this id (writer prefix, counter) comes for the first time;
 * it is then marked seen.  Too old for the window: not the first time.
 */
int
provend_cstore_first_time(provend_cstore_t *cs, const uint8_t *id)
{
    size_t             b;
    uint64_t           counter, d;
    provend_writer_t  *w;

    counter = proven_get_be64(id + 8);
    b = (size_t) (proven_get_be32(id) % PROVEND_WRITER_BUCKETS);
    for (w = cs->writers[b]; w != NULL; w = w->next) {
        if (memcmp(w->prefix, id, 8) == 0) {
            break;
        }
    }
    if (w == NULL) {
        w = calloc(1, sizeof(*w));
        if (w == NULL) {
            return 1;           /* alike everywhere but for memory: apply */
        }
        memcpy(w->prefix, id, 8);
        w->max = counter;
        w->seen[0] = 1;
        w->next = cs->writers[b];
        cs->writers[b] = w;
        return 1;
    }
    if (counter > w->max) {
        provend_writer_shift(w, counter - w->max);
        w->max = counter;
        w->seen[0] |= 1;
        return 1;
    }
    d = w->max - counter;
    if (d >= PROVEND_REPLAY_WINDOW || (w->seen[d / 64] >> (d % 64)) & 1) {
        return 0;
    }
    w->seen[d / 64] |= UINT64_C(1) << (d % 64);
    return 1;
}


void
provend_cstore_writers_free(provend_cstore_t *cs)
{
    size_t             b;
    provend_writer_t  *w;

    for (b = 0; b < PROVEND_WRITER_BUCKETS; b++) {
        while ((w = cs->writers[b]) != NULL) {
            cs->writers[b] = w->next;
            free(w);
        }
    }
}


/* The associated data of the entry with this id: the mark, then the id. */
static void
provend_log_ad(const uint8_t *id, uint8_t ad[sizeof(PROVEND_LOG_AD) - 1
                                             + PROVEND_LOG_ID_LEN])
{
    memcpy(ad, PROVEND_LOG_AD, sizeof(PROVEND_LOG_AD) - 1);
    memcpy(ad + sizeof(PROVEND_LOG_AD) - 1, id, PROVEND_LOG_ID_LEN);
}


void
provend_cstore_on_entry(natsConnection *nc, natsSubscription *sub,
    natsMsg *msg, void *closure)
{
    int                     len, unreadable, repeat;
    size_t                  i;
    uint8_t                 id[PROVEND_LOG_ID_LEN], *plain;
    uint8_t                 ad[sizeof(PROVEND_LOG_AD) - 1
                               + PROVEND_LOG_ID_LEN];
    const uint8_t          *data;
    uint64_t                seq;
    jsMsgMetaData          *meta;
    provend_cwait_t        *w;
    provend_capply_t       *a;
    provend_cstore_t       *cs;
    provend_storage_req_t  *req;

    (void) nc;
    (void) sub;
    cs = closure;

    meta = NULL;
    if (natsMsg_GetMetaData(&meta, msg) != NATS_OK) {
        natsMsg_Destroy(msg);
        return;
    }
    seq = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);

    /* the entry's id in the clear, then the entry sealed under it */
    data = (const uint8_t *) natsMsg_GetData(msg);
    len = natsMsg_GetDataLength(msg) - PROVEND_LOG_ID_LEN;
    unreadable = len <= PROVEND_SEAL_OVERHEAD;
    repeat = 0;

    pthread_mutex_lock(&cs->lock);
    if (seq <= cs->handed || cs->gap || cs->stopping) {
        /* seen already (an ordered consumer starting again), or after a
         * gap: the thread follows the log again from the first missing */
        pthread_mutex_unlock(&cs->lock);
        natsMsg_Destroy(msg);
        return;
    }
    if (seq != cs->handed + 1) {
        /* entries lost on the way (a slow consumer's drop): never skipped */
        cs->gap = 1;
        pthread_cond_broadcast(&cs->cond);
        pthread_mutex_unlock(&cs->lock);
        provend_warn("cluster storage: entry %" PRIu64 " came after %" PRIu64
                     ": following the log again from there", seq,
                     cs->handed);
        natsMsg_Destroy(msg);
        return;
    }
    /* the copy takes a bounded amount at a time: this thread waits */
    while ((cs->applying >= PROVEND_APPLYING_MAX
            || cs->applying_bytes >= PROVEND_APPLYING_BYTES)
           && !cs->stopping)
    {
        pthread_cond_wait(&cs->cond, &cs->lock);
    }
    pthread_mutex_unlock(&cs->lock);

    req = NULL;
    plain = len > PROVEND_SEAL_OVERHEAD ? malloc((size_t) len) : NULL;
    if (plain != NULL) {
        provend_log_ad(data, ad);
    }
    if (plain != NULL
        && provend_open(cs->key, ad, sizeof(ad), data + PROVEND_LOG_ID_LEN,
                        (size_t) len, plain) != PROVEN_OK)
    {
        free(plain);
        plain = NULL;
        unreadable = 1;     /* the same on every node: nobody applies it */
    }
    if (plain != NULL) {
        req = provend_log_decode(plain, (size_t) len - PROVEND_SEAL_OVERHEAD,
                                 id);
        if (req != NULL && memcmp(id, data, PROVEND_LOG_ID_LEN) != 0) {
            provend_storage_req_free(req);      /* sealed under another */
            req = NULL;
        }
        unreadable = req == NULL;
        /* it may hold keys (a key store's, a session's) */
        OPENSSL_cleanse(plain, (size_t) len - PROVEND_SEAL_OVERHEAD);
    }
    free(plain);
    natsMsg_Destroy(msg);
    a = req != NULL ? calloc(1, sizeof(*a)) : NULL;

    pthread_mutex_lock(&cs->lock);
    if (seq != cs->handed + 1 || cs->gap || cs->stopping) {
        /* another subscription's callback got there meanwhile */
        pthread_mutex_unlock(&cs->lock);
        free(a);
        provend_storage_req_free(req);
        return;
    }
    if (a == NULL && !unreadable) {
        /* out of memory here alone: this entry is taken again */
        cs->gap = 1;
        pthread_cond_broadcast(&cs->cond);
        pthread_mutex_unlock(&cs->lock);
        provend_storage_req_free(req);
        return;
    }
    cs->handed = seq;
    if (a != NULL && !provend_cstore_first_time(cs, id)) {
        repeat = 1;
        free(a);
        a = NULL;
    }
    if (a == NULL) {
        if (repeat) {
            cs->repeats++;
        } else {
            cs->skipped++;
        }
        if (!cs->ready && cs->handed >= cs->target && cs->applying == 0) {
            cs->ready = 1;
        }
        pthread_mutex_unlock(&cs->lock);
        if (repeat) {
            provend_warn("cluster storage: entry %" PRIu64 " repeats one "
                         "applied already: skipped", seq);
        } else {
            provend_error("cluster storage: entry %" PRIu64 " cannot be "
                          "read: skipped", seq);
        }
        provend_storage_req_free(req);
        return;
    }
    w = provend_cwait_take(cs, id);
    cs->applying++;
    a->bytes = (size_t) len;
    a->seq = seq;
    cs->applying_bytes += a->bytes;
    for (i = 0; i < PROVEND_APPLYING_MAX; i++) {
        if (cs->outstanding[i] == 0) {
            cs->outstanding[i] = seq;
            break;
        }
    }
    pthread_mutex_unlock(&cs->lock);

    a->cs = cs;
    a->waiter = w != NULL ? w->req : NULL;
    /* the node's own databases: apps and sessions follow theirs */
    a->own = strcmp(req->scope.app, PROVEND_OWN_SCOPE) == 0;
    if (w != NULL) {
        provend_cwait_free(w);
    }

    req->done = provend_capply_done;
    req->data = a;
    provend_storage_submit(cs->local, req);
}


static int provend_cstore_readable(provend_cstore_t *cs,
    provend_storage_req_t *req, int may_hold);
static int provend_cstore_hold_until_ready(provend_cstore_t *cs,
    provend_storage_req_t *req);
static void provend_cstore_do_write(provend_cstore_t *cs,
    provend_storage_req_t *req, int may_hold);
static void provend_cstore_do_read(provend_cstore_t *cs,
    provend_storage_req_t *req, int may_hold);


/* ---- publishing --------------------------------------------------------- */

/*
 * Sends msg (taken when sent) with the write's id as its message id, so
 * that JetStream stores it once however often it is sent.
 */
natsStatus
provend_cstore_publish(provend_cstore_t *cs, natsMsg **msg, const uint8_t *id)
{
    char          hex[2 * PROVEND_LOG_ID_LEN + 1];
    jsPubOptions  po;

    proven_hex_encode(id, PROVEND_LOG_ID_LEN, hex);
    jsPubOptions_Init(&po);
    po.MsgId = hex;
    po.MaxWait = PROVEND_PUBLISH_WAIT_MS;
    return js_PublishMsgAsync(cs->js, msg, &po);
}


/*
 * A publish refused or unanswered (while a stream leader is elected, say):
 * kept to be sent again by the sweep until the write's deadline.
 */
void
provend_cstore_on_pub_err(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    size_t             idlen;
    uint8_t            id[PROVEND_LOG_ID_LEN];
    const char        *hex;
    provend_cwait_t   *w;
    provend_cstore_t  *cs;

    (void) js;
    cs = closure;
    hex = NULL;
    if (pae->Msg == NULL
        || natsMsgHeader_Get(pae->Msg, "Nats-Msg-Id", &hex) != NATS_OK
        || hex == NULL || strlen(hex) != 2 * PROVEND_LOG_ID_LEN
        || proven_hex_decode(hex, 2 * PROVEND_LOG_ID_LEN, id, sizeof(id),
                             &idlen) != PROVEN_OK
        || idlen != PROVEND_LOG_ID_LEN)
    {
        return;
    }

    provend_debug("cluster storage: a publish refused (%s): sent again",
                  pae->ErrText != NULL ? pae->ErrText
                                       : natsStatus_GetText(pae->Err));
    pthread_mutex_lock(&cs->lock);
    w = provend_cwait_take(cs, id);
    if (w != NULL) {
        if (w->retry == NULL) {
            w->retry = pae->Msg;        /* ours now */
            pae->Msg = NULL;
        }
        w->retry_ms = provend_now_ms() + PROVEND_RETRY_MS;
        provend_cwait_put(cs, w);
    }
    pthread_mutex_unlock(&cs->lock);
}


void
provend_cstore_write(provend_storage_t *st, provend_storage_req_t *req)
{
    provend_cstore_do_write((provend_cstore_t *) st, req, 1);
}


/* may_hold: 0 for a request held before, now released in its turn. */
static void
provend_cstore_do_write(provend_cstore_t *cs, provend_storage_req_t *req,
    int may_hold)
{
    int                i;
    uint8_t            id[PROVEND_LOG_ID_LEN];
    uint8_t            ad[sizeof(PROVEND_LOG_AD) - 1 + PROVEND_LOG_ID_LEN];
    uint8_t           *sealed;
    uint64_t           counter;
    natsMsg           *msg;
    natsStatus         s;
    provend_wbuf_t     w;
    provend_cwait_t   *wait;

    if (req->local) {
        provend_storage_submit(cs->local, req);
        return;
    }

    /*
     * Not before this node has caught up: its write would wait behind the
     * whole backlog, time out, and still be applied later.
     */
    if (!provend_cstore_readable(cs, req, may_hold)) {
        return;
    }

    pthread_mutex_lock(&cs->lock);
    if (!cs->started || cs->js == NULL || cs->stopping) {
        pthread_mutex_unlock(&cs->lock);
        if (may_hold && provend_cstore_hold_until_ready(cs, req)) {
            return;
        }
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                 "the cluster is not ready yet: this node "
                                 "has no cluster key or no NATS yet");
        req->done(req);
        return;
    }
    counter = ++cs->id_counter;
    pthread_mutex_unlock(&cs->lock);

    wait = calloc(1, sizeof(*wait));
    if (wait == NULL) {
        provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "out of memory");
        req->done(req);
        return;
    }
    memcpy(wait->id, cs->id_prefix, 8);
    for (i = 15; i >= 8; i--) {
        wait->id[i] = (uint8_t) counter;
        counter >>= 8;
    }

    /* a key store's key is made once, here, not by every replica */
    if (req->op == PROVEND_OP_KV_SET && req->value == NULL) {
        req->value = malloc(PROVEND_KEY_LEN);
        if (req->value == NULL
            || RAND_bytes(req->value, PROVEND_KEY_LEN) != 1)
        {
            free(wait);
            provend_storage_req_fail(req, PROVEND_ST_INTERNAL,
                                     "no random bytes for a key");
            req->done(req);
            return;
        }
        req->value_len = PROVEND_KEY_LEN;
    }

    memset(&w, 0, sizeof(w));
    provend_log_encode(&w, req, wait->id, (int64_t) provend_now_ms());
    /* the id in the clear, then the entry sealed under it */
    sealed = w.failed ? NULL : malloc(PROVEND_LOG_ID_LEN + w.len
                                      + PROVEND_SEAL_OVERHEAD);
    if (sealed != NULL) {
        memcpy(sealed, wait->id, PROVEND_LOG_ID_LEN);
        provend_log_ad(wait->id, ad);
    }
    if (sealed == NULL
        || provend_seal(cs->key, ad, sizeof(ad), w.p, w.len,
                        sealed + PROVEND_LOG_ID_LEN) != PROVEN_OK)
    {
        OPENSSL_cleanse(w.p, w.len);
        free(w.p);
        free(sealed);
        free(wait);
        if (w.too_large) {
            provend_storage_req_fail(req, PROVEND_ST_TOO_LARGE,
                                     "a write in a cluster is at most %d "
                                     "bytes", PROVEND_LOG_ENTRY_MAX);
        } else {
            provend_storage_req_fail(req, PROVEND_ST_INTERNAL,
                                     "out of memory");
        }
        req->done(req);
        return;
    }

    msg = NULL;
    s = natsMsg_Create(&msg, PROVEND_LOG_SUBJECT, NULL,
                       (const char *) sealed,
                       (int) (PROVEND_LOG_ID_LEN + w.len
                              + PROVEND_SEAL_OVERHEAD));
    OPENSSL_cleanse(w.p, w.len);
    free(w.p);
    free(sealed);

    wait->req = req;
    wait->deadline_ms = provend_now_ms() + PROVEND_WRITE_WAIT_MS;
    memcpy(id, wait->id, sizeof(id));

    /* waiting before the publish: the entry may be applied before its ack */
    pthread_mutex_lock(&cs->lock);
    provend_cwait_put(cs, wait);
    pthread_mutex_unlock(&cs->lock);

    if (s == NATS_OK && provend_cstore_publish(cs, &msg, id) == NATS_OK) {
        return;
    }

    pthread_mutex_lock(&cs->lock);
    wait = provend_cwait_take(cs, id);
    if (wait != NULL && msg != NULL) {
        /* not sent (the connection is down): the sweep tries again */
        wait->retry = msg;
        wait->retry_ms = provend_now_ms() + PROVEND_RETRY_MS;
        provend_cwait_put(cs, wait);
        wait = NULL;
        msg = NULL;
    }
    pthread_mutex_unlock(&cs->lock);
    natsMsg_Destroy(msg);
    if (wait != NULL) {
        provend_cwait_answer(wait, PROVEND_ST_INTERNAL, "out of memory");
    }
}


/* ---- requests before the copy is ready ---------------------------------- */

/* What a held request keeps in memory: its key, value and statements. */
static size_t
provend_cstore_req_bytes(const provend_storage_req_t *req)
{
    size_t  i, j, n;

    n = sizeof(*req) + req->key_len + req->value_len;
    for (i = 0; i < req->nstmts; i++) {
        n += req->stmts[i].sql_len;
        for (j = 0; j < req->stmts[i].nparams; j++) {
            n += sizeof(req->stmts[i].params[j])
                 + req->stmts[i].params[j].len;
        }
    }
    return n;
}


/*
 * A request that arrives before this node has caught up with the log, or
 * before it has NATS, waits for it rather than fail: not a caller that
 * blocks a thread on the answer (the pool's threads would all wait),
 * bounded in number and bytes, and past PROVEND_CATCHUP_WAIT_MS told why
 * (by the cluster thread's sweep, or before it runs by the loop's tick).
 * 1: held (answered later).
 */
static int
provend_cstore_hold_until_ready(provend_cstore_t *cs,
    provend_storage_req_t *req)
{
    int     held;
    size_t  bytes;

    if (req->blocking) {
        return 0;
    }

    bytes = provend_cstore_req_bytes(req);

    pthread_mutex_lock(&cs->lock);
    held = !cs->stopping && !cs->broken
           && cs->ncatching < PROVEND_PARKED_MAX
           && cs->catching_bytes + bytes <= PROVEND_CATCHUP_BYTES;
    if (held) {
        req->after_until_ms = provend_cstore_mono_ms()
                              + PROVEND_CATCHUP_WAIT_MS;
        req->next = NULL;
        if (cs->catching_tail != NULL) {
            cs->catching_tail->next = req;
        } else {
            cs->catching = req;
        }
        cs->catching_tail = req;
        cs->ncatching++;
        cs->catching_bytes += bytes;
    }
    pthread_mutex_unlock(&cs->lock);
    return held;
}


static int
provend_cstore_is_write(provend_storage_op_t op)
{
    return op == PROVEND_OP_KV_SET || op == PROVEND_OP_KV_DELETE
           || op == PROVEND_OP_SQL_EXECUTE || op == PROVEND_OP_SQL_MIGRATE;
}


/*
 * From the cluster thread's sweep: once the copy is ready, the held
 * requests are taken in their order, a batch per sweep, as if they came
 * now; before, those past their wait are told why; when provend stops
 * or the copy failed, all are.
 */
void
provend_cstore_release_catching(provend_cstore_t *cs)
{
    int                     go, broken, stopping;
    size_t                  n;
    uint64_t                now, handed, target;
    provend_storage_req_t  *list, **tail, **pp, *req;

    now = provend_cstore_mono_ms();
    list = NULL;
    tail = &list;
    n = 0;

    pthread_mutex_lock(&cs->lock);
    broken = cs->broken;
    stopping = cs->stopping;
    go = cs->ready && !broken && cs->js != NULL && !stopping;
    handed = cs->handed;
    target = cs->target;
    pp = &cs->catching;
    cs->catching_tail = NULL;
    while ((req = *pp) != NULL) {
        if ((go && n < PROVEND_CATCHUP_BATCH) || broken || stopping
            || req->after_until_ms <= now)
        {
            *pp = req->next;
            cs->ncatching--;
            cs->catching_bytes -= provend_cstore_req_bytes(req);
            req->next = NULL;
            *tail = req;
            tail = &req->next;
            n++;
        } else {
            cs->catching_tail = req;
            pp = &req->next;
        }
    }
    pthread_mutex_unlock(&cs->lock);

    while ((req = list) != NULL) {
        list = req->next;
        req->next = NULL;

        if (go) {
            req->after_until_ms = 0;
            if (provend_cstore_is_write(req->op)) {
                provend_cstore_do_write(cs, req, 0);
            } else {
                provend_cstore_do_read(cs, req, 0);
            }
            continue;
        }

        if (broken || stopping) {
            provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR, "%s",
                                     broken ? "this node's copy of the "
                                              "cluster's data failed"
                                            : "provend is stopping");
        } else {
            provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                     "this node is catching up with the "
                                     "cluster (%" PRIu64 " of %" PRIu64
                                     " entries) for longer than %d s",
                                     handed, target,
                                     PROVEND_CATCHUP_WAIT_MS / 1000);
        }
        req->done(req);
    }
}


/* ---- reads -------------------------------------------------------------- */

/*
 * Whether req may go on now: the copy is ready and (may_hold) no request
 * held before it waits, so requests keep their order.  Else it is held,
 * or told why not (answered).
 */
static int
provend_cstore_readable(provend_cstore_t *cs, provend_storage_req_t *req,
    int may_hold)
{
    int       ready, broken, behind;
    uint64_t  handed, target;

    if (req->local) {
        return 1;
    }
    pthread_mutex_lock(&cs->lock);
    ready = cs->ready && !cs->broken;
    broken = cs->broken;
    behind = cs->catching != NULL;
    handed = cs->handed;
    target = cs->target;
    pthread_mutex_unlock(&cs->lock);
    if (ready && !(may_hold && behind)) {
        return 1;
    }
    if (may_hold && !broken && provend_cstore_hold_until_ready(cs, req)) {
        return 0;
    }
    if (ready) {
        return 1;
    }
    if (broken) {
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                 "this node's copy of the cluster's data "
                                 "failed; it is made again when provend "
                                 "restarts");
    } else {
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                 "this node is catching up with the cluster "
                                 "(%" PRIu64 " of %" PRIu64 " entries)",
                                 handed, target);
    }
    req->done(req);
    return 0;
}


void
provend_cstore_read(provend_storage_t *st, provend_storage_req_t *req)
{
    provend_cstore_do_read((provend_cstore_t *) st, req, 1);
}


static void
provend_cstore_do_read(provend_cstore_t *cs, provend_storage_req_t *req,
    int may_hold)
{
    uint64_t  applied;

    if (!provend_cstore_readable(cs, req, may_hold)) {
        return;
    }
    if (req->after != 0) {
        /* read-your-writes from another node: wait for its "log_seq" */
        pthread_mutex_lock(&cs->lock);
        applied = provend_cstore_applied(cs);
        if (req->after > applied && cs->nparked < PROVEND_PARKED_MAX) {
            req->after_until_ms = provend_cstore_mono_ms()
                                  + PROVEND_AFTER_WAIT_MS;
            req->next = cs->parked;
            cs->parked = req;
            cs->nparked++;
            pthread_mutex_unlock(&cs->lock);
            return;
        }
        pthread_mutex_unlock(&cs->lock);
        if (req->after > applied) {
            provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                     "too many reads wait for entries this "
                                     "node has not applied yet");
            req->done(req);
            return;
        }
    }
    provend_storage_submit(cs->local, req);
}


/* Parked reads: now applied, to the copy; past their wait, told so. */
void
provend_cstore_release_parked(provend_cstore_t *cs,
    provend_storage_req_t *list)
{
    int                     stopping, broken;
    uint64_t                applied;
    provend_storage_req_t  *req;

    while ((req = list) != NULL) {
        list = req->next;
        req->next = NULL;
        pthread_mutex_lock(&cs->lock);
        applied = provend_cstore_applied(cs);
        stopping = cs->stopping;
        broken = cs->broken;
        pthread_mutex_unlock(&cs->lock);
        if (req->after <= applied && !stopping && !broken) {
            provend_storage_submit(cs->local, req);
            continue;
        }
        if (stopping || broken) {
            provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR, "%s",
                                     stopping ? "provend is stopping"
                                              : "this node's copy of the "
                                                "cluster's data failed");
        } else {
            provend_storage_req_fail(req, PROVEND_ST_TIMEOUT,
                                     "this node has not applied the "
                                     "cluster's log up to %" PRIu64 " (it "
                                     "is at %" PRIu64 ")", req->after,
                                     applied);
        }
        req->done(req);
    }
}


/* SQL's answer map with "log_seq": n added (a definite map is rebuilt). */
static void
provend_cstore_add_log_seq(cbor_item_t **result, uint64_t seq)
{
    size_t             i, n;
    cbor_item_t       *map;
    struct cbor_pair  *pairs;

    if (!cbor_isa_map(*result)) {
        return;
    }
    n = cbor_map_size(*result);
    map = cbor_new_definite_map(n + 1);
    pairs = cbor_map_handle(*result);
    for (i = 0; map != NULL && i < n; i++) {
        if (!cbor_map_add(map, pairs[i])) {
            cbor_decref(&map);
        }
    }
    if (map == NULL
        || proven_cbor_map_put(map, "log_seq", cbor_build_uint64(seq))
           != PROVEN_OK)
    {
        if (map != NULL) {
            cbor_decref(&map);
        }
        return;                 /* the answer without it */
    }
    cbor_decref(result);
    *result = map;
}


int
provend_cstore_peek(provend_storage_t *st, const provend_scope_t *scope,
    const char *store, provend_kv_type_t type, const uint8_t *key,
    size_t key_len, provend_kv_peek_pt fn, void *data)
{
    int                ready;
    provend_cstore_t  *cs;

    cs = (provend_cstore_t *) st;
    pthread_mutex_lock(&cs->lock);
    ready = cs->ready && !cs->broken;
    pthread_mutex_unlock(&cs->lock);

    /* not ready: the kv.get submitted instead says why */
    if (!ready || cs->local->kv_peek == NULL) {
        return PROVEN_ERR;
    }
    return cs->local->kv_peek(cs->local, scope, store, type, key, key_len,
                              fn, data);
}


void
provend_cstore_hold(provend_storage_t *st)
{
    provend_storage_hold(((provend_cstore_t *) st)->local);
}


void
provend_cstore_release(provend_storage_t *st)
{
    provend_storage_release(((provend_cstore_t *) st)->local);
}
