/*
 * Cron expressions for runOnSchedule, and firing a handler on a worker.
 * See schedule.h.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include <uv.h>

#include "core/log.h"
#include "proven.h"
#include "schedule.h"


#define PROVEND_FIRE_TIMEOUT_MS  (310 * 1000)   /* past any handler's own */
#define PROVEND_FIRE_ANSWER_MAX  (64 * 1024)


/* A number of at most 3 digits at *p, moving *p past it; -1 if none. */
static int
provend_cron_number(const char **p)
{
    int  n, digits;

    n = 0;
    for (digits = 0; **p >= '0' && **p <= '9'; (*p)++) {
        if (++digits > 3) {
            return -1;
        }
        n = n * 10 + (**p - '0');
    }
    return digits ? n : -1;
}


/* One field ("*", "a", "a-b", each maybe "/n", in a list) into bits. */
static int
provend_cron_field(const char *field, int lo, int hi, uint64_t *bits,
    int *any)
{
    int          a, b, step, n, single;
    const char  *p;

    *bits = 0;
    *any = strcmp(field, "*") == 0;
    p = field;

    for ( ;; ) {
        single = 0;
        if (*p == '*') {
            p++;
            a = lo;
            b = hi;
        } else {
            a = provend_cron_number(&p);
            b = a;
            single = 1;
            if (*p == '-') {
                p++;
                b = provend_cron_number(&p);
                single = 0;
            }
        }

        step = 1;
        if (*p == '/') {
            p++;
            step = provend_cron_number(&p);
            if (single) {
                b = hi;                 /* "a/n": from a to the end */
            }
        }

        if (a < lo || b > hi || a > b || step < 1 || step > hi) {
            return PROVEN_ERR;
        }
        for (n = a; n <= b; n += step) {
            *bits |= (uint64_t) 1 << n;
        }

        if (*p == '\0') {
            break;
        }
        if (*p++ != ',') {
            return PROVEN_ERR;
        }
    }

    return PROVEN_OK;
}


int
provend_cron_parse(const char *expr, provend_cron_t *cron, char *err,
    size_t errlen)
{
    int            i, any;
    char           copy[128], *field[6], *save, *tok;
    uint64_t       bits;
    static const int  lo[] = { 0, 0, 1, 1, 0 };
    static const int  hi[] = { 59, 23, 31, 12, 6 };

    if (strlen(expr) >= sizeof(copy)) {
        proven_errf(err, errlen, "cron expression too long");
        return PROVEN_ERR;
    }
    snprintf(copy, sizeof(copy), "%s", expr);

    i = 0;
    for (tok = strtok_r(copy, " \t", &save); tok != NULL && i < 6;
         tok = strtok_r(NULL, " \t", &save))
    {
        field[i++] = tok;
    }
    if (i != 5) {
        proven_errf(err, errlen, "\"%s\" is not five cron fields", expr);
        return PROVEN_ERR;
    }

    for (i = 0; i < 5; i++) {
        if (provend_cron_field(field[i], lo[i], hi[i], &bits, &any)
            != PROVEN_OK)
        {
            proven_errf(err, errlen, "cron field \"%s\" is not valid for %d-%d",
                        field[i], lo[i], hi[i]);
            return PROVEN_ERR;
        }
        switch (i) {
        case 0: cron->minutes = bits; break;
        case 1: cron->hours = (uint32_t) bits; break;
        case 2: cron->days = (uint32_t) bits; cron->days_any = any; break;
        case 3: cron->months = (uint16_t) bits; break;
        default: cron->weekdays = (uint8_t) bits; cron->weekdays_any = any;
        }
    }

    return PROVEN_OK;
}


int
provend_cron_due(const provend_cron_t *cron, const struct tm *utc)
{
    int  day, weekday;

    if (!(cron->minutes & ((uint64_t) 1 << utc->tm_min))
        || !(cron->hours & (1u << utc->tm_hour))
        || !(cron->months & (1u << (utc->tm_mon + 1))))
    {
        return 0;
    }

    day = (cron->days & (1u << utc->tm_mday)) != 0;
    weekday = (cron->weekdays & (1u << utc->tm_wday)) != 0;

    if (cron->days_any && cron->weekdays_any) {
        return 1;
    }
    if (cron->days_any) {
        return weekday;
    }
    if (cron->weekdays_any) {
        return day;
    }
    return day || weekday;
}


int
provend_schedules_of(const cbor_item_t *handlers, provend_cron_t **out,
    size_t *n, char *err, size_t errlen)
{
    int              rc;
    char             kind[16], module[PROVEND_SCHEDULE_NAME_MAX + 1];
    char             name[PROVEND_SCHEDULE_NAME_MAX + 1], expr[128];
    size_t           i, count;
    cbor_item_t     *h;
    provend_cron_t  *list, *c;

    *out = NULL;
    *n = 0;
    if (err) {
        err[0] = '\0';
    }

    rc = PROVEN_ERR;
    list = NULL;
    if (handlers == NULL || !cbor_isa_array(handlers)) {
        proven_errf(err, errlen, "the package has no handler list");
        goto done;
    }

    count = 0;
    for (i = 0; i < cbor_array_size(handlers); i++) {
        h = cbor_array_handle(handlers)[i];
        if (!cbor_isa_map(h)
            || proven_cbor_text_into(proven_cbor_map_get(h, "kind"), kind,
                                     sizeof(kind)) != PROVEN_OK
            || strcmp(kind, "schedule") != 0)
        {
            continue;
        }

        if (count == PROVEND_SCHEDULES_MAX) {
            proven_errf(err, errlen,
                        "more than %d schedules", PROVEND_SCHEDULES_MAX);
            goto done;
        }
        if (list == NULL) {
            list = calloc(PROVEND_SCHEDULES_MAX, sizeof(*list));
            if (list == NULL) {
                proven_errf(err, errlen, "out of memory");
                goto done;
            }
        }

        c = &list[count];
        if (proven_cbor_text_into(proven_cbor_map_get(h, "module"), module,
                                  sizeof(module)) != PROVEN_OK
            || proven_cbor_text_into(proven_cbor_map_get(h, "name"), name,
                                     sizeof(name)) != PROVEN_OK
            || proven_cbor_text_into(proven_cbor_map_get(h, "cron"), expr,
                                     sizeof(expr)) != PROVEN_OK
            || (size_t) snprintf(c->handler, sizeof(c->handler), "%s#%s",
                                 module, name) >= sizeof(c->handler)
            || provend_cron_parse(expr, c, err, errlen) != PROVEN_OK)
        {
            if (err && err[0] == '\0') {   /* not a cron message */
                proven_errf(err, errlen,
                            "a schedule handler of the manifest is "
                            "malformed");
            }
            goto done;
        }
        count++;
    }

    *out = list;
    *n = count;
    list = NULL;
    rc = PROVEN_OK;

done:

    free(list);
    return rc;
}


/* ---- calling a worker ---------------------------------------------------- */

typedef struct {
    uv_pipe_t                 pipe;
    uv_connect_t              connect;
    uv_write_t                write;
    uv_timer_t                timer;
    uint8_t                  *frame;
    size_t                    frame_len;
    proven_frame_reader_t     answer;
    unsigned                  handles;
    provend_worker_answer_pt  done;        /* NULL once called */
    void                     *data;
} provend_call_t;


static void
provend_call_closed(uv_handle_t *handle)
{
    provend_call_t  *c;

    c = handle->data;
    if (--c->handles > 0) {
        return;
    }
    free(c->frame);
    proven_frame_reader_free(&c->answer);
    free(c);
}


/* Tells the caller once, then closes; failure NULL: res is the answer. */
static void
provend_call_end(provend_call_t *c, const char *failure,
    proven_response_t *res)
{
    if (c->done != NULL) {
        c->done(c->data, failure, res);
        c->done = NULL;
    }
    if (!uv_is_closing((uv_handle_t *) &c->pipe)) {
        uv_close((uv_handle_t *) &c->pipe, provend_call_closed);
    }
    if (!uv_is_closing((uv_handle_t *) &c->timer)) {
        uv_close((uv_handle_t *) &c->timer, provend_call_closed);
    }
}


static void
provend_call_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    provend_call_t  *c;

    (void) suggested;
    c = handle->data;
    buf->base = (char *) proven_frame_reader_space(&c->answer, &buf->len);
}


static void
provend_call_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    int                rc;
    char               err[PROVEN_ERR_LEN];
    size_t             len;
    const uint8_t     *body;
    provend_call_t    *c;
    proven_response_t  res;

    (void) buf;
    c = stream->data;
    if (nread < 0) {
        provend_call_end(c, "the worker closed the connection", NULL);
        return;
    }
    proven_frame_reader_fill(&c->answer, (size_t) nread);

    rc = proven_frame_reader_next(&c->answer, &body, &len, err, sizeof(err));
    if (rc == PROVEN_AGAIN) {
        return;
    }

    if (rc != PROVEN_OK) {
        provend_call_end(c, "the answer is too long", NULL);
        return;
    }

    if (proven_response_decode(body, len, &res, err, sizeof(err))
        != PROVEN_OK)
    {
        provend_call_end(c, "a malformed answer", NULL);
        return;
    }
    provend_call_end(c, NULL, &res);
    proven_response_free(&res);
}


static void
provend_call_written(uv_write_t *req, int status)
{
    provend_call_t  *c;

    c = req->data;
    if (status != 0) {
        provend_call_end(c, uv_strerror(status), NULL);
        return;
    }
    uv_read_start((uv_stream_t *) &c->pipe, provend_call_alloc,
                  provend_call_read);
}


static void
provend_call_connected(uv_connect_t *req, int status)
{
    uv_buf_t         buf;
    provend_call_t  *c;

    c = req->data;
    if (status != 0) {
        provend_call_end(c, uv_strerror(status), NULL);
        return;
    }

    buf = uv_buf_init((char *) c->frame, (unsigned) c->frame_len);
    if (uv_write(&c->write, (uv_stream_t *) &c->pipe, &buf, 1,
                 provend_call_written) != 0)
    {
        provend_call_end(c, "cannot write", NULL);
    }
}


static void
provend_call_timeout(uv_timer_t *timer)
{
    provend_call_end(timer->data, "no answer in time", NULL);
}


int
provend_worker_call(void *loop, const char *socket_path, cbor_item_t *request,
    uint64_t timeout_ms, size_t answer_max, provend_worker_answer_pt done,
    void *data)
{
    char             err[PROVEN_ERR_LEN];
    provend_call_t  *c;

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return PROVEN_ERR;
    }
    if (answer_max <= PROVEN_FRAME_HEADER
        || proven_frame_encode(request, &c->frame, &c->frame_len, err,
                               sizeof(err)) != PROVEN_OK)
    {
        free(c);
        return PROVEN_ERR;
    }
    proven_frame_reader_init(&c->answer, answer_max - PROVEN_FRAME_HEADER);
    c->done = done;
    c->data = data;

    uv_pipe_init(loop, &c->pipe, 0);
    uv_timer_init(loop, &c->timer);
    c->pipe.data = c;
    c->timer.data = c;
    c->connect.data = c;
    c->write.data = c;
    c->handles = 2;

    uv_timer_start(&c->timer, provend_call_timeout, timeout_ms, 0);
    uv_unref((uv_handle_t *) &c->timer);
    uv_pipe_connect(&c->connect, &c->pipe, socket_path,
                    provend_call_connected);
    return PROVEN_OK;
}


/* ---- a kept line to a worker --------------------------------------------- */

#define PROVEND_CHAN_CALLS_MAX  4096     /* in flight on one line */

typedef struct provend_chan_call_s  provend_chan_call_t;

struct provend_chan_call_s {
    uint64_t                  id;
    uint64_t                  deadline;    /* uv_now */
    provend_worker_answer_pt  done;
    void                     *data;
    provend_chan_call_t      *next;
};

typedef struct {
    uv_write_t       req;
    uint8_t         *frame;
} provend_chan_write_t;

struct provend_chan_s {
    uv_loop_t            *loop;
    uv_pipe_t             pipe;
    uv_connect_t          connect;
    uv_timer_t            timer;
    unsigned              handles;
    int                   connected;
    int                   broken;       /* no more calls: make another */
    int                   released;     /* the owner let go */
    uint64_t              next_id;
    provend_chan_call_t  *calls;        /* waiting for their answers */
    size_t                ncalls;
    provend_chan_write_t *queued[64];   /* before the connect completes */
    size_t                nqueued;
    proven_frame_reader_t in;
};


static void
provend_chan_closed(uv_handle_t *handle)
{
    provend_chan_t  *ch;

    ch = handle->data;
    if (--ch->handles > 0) {
        return;
    }
    proven_frame_reader_free(&ch->in);
    free(ch);
}


/* Fails every call waiting and closes the line; it frees itself. */
static void
provend_chan_break(provend_chan_t *ch, const char *why)
{
    size_t                i;
    provend_chan_call_t  *c;

    ch->broken = 1;
    while ((c = ch->calls) != NULL) {
        ch->calls = c->next;
        c->done(c->data, why, NULL);
        free(c);
    }
    ch->ncalls = 0;
    for (i = 0; i < ch->nqueued; i++) {
        free(ch->queued[i]->frame);
        free(ch->queued[i]);
    }
    ch->nqueued = 0;
    if (!uv_is_closing((uv_handle_t *) &ch->pipe)) {
        uv_close((uv_handle_t *) &ch->pipe, provend_chan_closed);
    }
    if (ch->released && !uv_is_closing((uv_handle_t *) &ch->timer)) {
        uv_close((uv_handle_t *) &ch->timer, provend_chan_closed);
    }
}


static void
provend_chan_written(uv_write_t *req, int status)
{
    provend_chan_t        *ch;
    provend_chan_write_t  *w;

    w = (provend_chan_write_t *) req;
    ch = req->data;
    free(w->frame);
    free(w);
    if (status != 0 && !ch->broken) {
        provend_chan_break(ch, uv_strerror(status));
    }
}


static int
provend_chan_write(provend_chan_t *ch, provend_chan_write_t *w)
{
    uv_buf_t  buf;
    uint32_t  len;

    if (proven_frame_length(w->frame, &len, NULL, 0) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    buf = uv_buf_init((char *) w->frame, len + PROVEN_FRAME_HEADER);
    w->req.data = ch;
    return uv_write(&w->req, (uv_stream_t *) &ch->pipe, &buf, 1,
                    provend_chan_written) == 0 ? PROVEN_OK : PROVEN_ERR;
}


static void
provend_chan_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    provend_chan_t  *ch;

    (void) suggested;
    ch = handle->data;
    buf->base = (char *) proven_frame_reader_space(&ch->in, &buf->len);
}


static void
provend_chan_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    int                    rc;
    char                   err[PROVEN_ERR_LEN];
    size_t                 len;
    const uint8_t         *body;
    proven_response_t      res;
    provend_chan_t        *ch;
    provend_chan_call_t  **p, *c;

    (void) buf;
    ch = stream->data;
    if (nread < 0) {
        provend_chan_break(ch, "the worker closed the connection");
        return;
    }
    proven_frame_reader_fill(&ch->in, (size_t) nread);

    for ( ;; ) {
        rc = proven_frame_reader_next(&ch->in, &body, &len, err,
                                      sizeof(err));
        if (rc == PROVEN_AGAIN) {
            return;
        }

        if (rc != PROVEN_OK
            || proven_response_decode(body, len, &res, err, sizeof(err))
               != PROVEN_OK)
        {
            provend_chan_break(ch, "a malformed answer");
            return;
        }

        for (p = &ch->calls; (c = *p) != NULL; p = &c->next) {
            if (c->id == res.id) {
                *p = c->next;
                ch->ncalls--;
                c->done(c->data, NULL, &res);
                free(c);
                break;
            }
        }
        /* an answer nobody waits for came after its call timed out */
        proven_response_free(&res);
        if (ch->broken) {
            return;
        }
    }
}


static void
provend_chan_connected(uv_connect_t *req, int status)
{
    size_t           i;
    provend_chan_t  *ch;

    ch = req->data;
    if (ch->broken) {
        return;
    }
    if (status != 0) {
        provend_chan_break(ch, uv_strerror(status));
        return;
    }
    ch->connected = 1;
    for (i = 0; i < ch->nqueued; i++) {
        if (provend_chan_write(ch, ch->queued[i]) != PROVEN_OK) {
            free(ch->queued[i]->frame);
            free(ch->queued[i]);
            ch->queued[i] = NULL;
        }
    }
    ch->nqueued = 0;
    uv_read_start((uv_stream_t *) &ch->pipe, provend_chan_alloc,
                  provend_chan_read);
}


/* Each second: calls past their deadline are told so. */
static void
provend_chan_on_timer(uv_timer_t *timer)
{
    uint64_t               now;
    provend_chan_t        *ch;
    provend_chan_call_t  **p, *c;

    ch = timer->data;
    now = uv_now(ch->loop);
    for (p = &ch->calls; (c = *p) != NULL; ) {
        if (c->deadline <= now) {
            *p = c->next;
            ch->ncalls--;
            c->done(c->data, "no answer in time", NULL);
            free(c);
        } else {
            p = &c->next;
        }
    }
}


/* The request's "id" set to id (replaced if there is one). */
static int
provend_chan_set_id(cbor_item_t *request, uint64_t id)
{
    size_t             i;
    cbor_item_t       *v;
    struct cbor_pair  *pairs;

    pairs = cbor_map_handle(request);
    for (i = 0; i < cbor_map_size(request); i++) {
        if (cbor_isa_string(pairs[i].key)
            && cbor_string_is_definite(pairs[i].key)
            && cbor_string_length(pairs[i].key) == 2
            && memcmp(cbor_string_handle(pairs[i].key), "id", 2) == 0)
        {
            v = cbor_build_uint64(id);
            if (v == NULL) {
                return PROVEN_ERR;
            }
            cbor_decref(&pairs[i].value);
            pairs[i].value = v;
            return PROVEN_OK;
        }
    }
    return proven_cbor_map_put(request, "id", cbor_build_uint64(id));
}


provend_chan_t *
provend_chan_open(void *loop, const char *socket_path)
{
    provend_chan_t  *ch;

    ch = calloc(1, sizeof(*ch));
    if (ch == NULL) {
        return NULL;
    }
    ch->loop = loop;
    ch->next_id = 1;
    proven_frame_reader_init(&ch->in, PROVEN_FRAME_MAX);
    uv_pipe_init(loop, &ch->pipe, 0);
    uv_timer_init(loop, &ch->timer);
    ch->pipe.data = ch;
    ch->timer.data = ch;
    ch->connect.data = ch;
    ch->handles = 2;
    uv_timer_start(&ch->timer, provend_chan_on_timer, 1000, 1000);
    uv_unref((uv_handle_t *) &ch->timer);
    uv_pipe_connect(&ch->connect, &ch->pipe, socket_path,
                    provend_chan_connected);
    return ch;
}


int
provend_chan_usable(provend_chan_t *ch)
{
    return !ch->broken && ch->ncalls < PROVEND_CHAN_CALLS_MAX
           && ch->nqueued < sizeof(ch->queued) / sizeof(ch->queued[0]);
}


int
provend_chan_call(provend_chan_t *ch, cbor_item_t *request,
    uint64_t timeout_ms, provend_worker_answer_pt done, void *data)
{
    char                   err[PROVEN_ERR_LEN];
    size_t                 len;
    provend_chan_call_t   *c;
    provend_chan_write_t  *w;

    if (!provend_chan_usable(ch)) {
        return PROVEN_ERR;
    }
    c = calloc(1, sizeof(*c));
    w = calloc(1, sizeof(*w));
    if (c == NULL || w == NULL
        || provend_chan_set_id(request, ch->next_id) != PROVEN_OK
        || proven_frame_encode(request, &w->frame, &len, err, sizeof(err))
           != PROVEN_OK)
    {
        free(c);
        free(w);
        return PROVEN_ERR;
    }
    c->id = ch->next_id++;
    c->deadline = uv_now(ch->loop) + timeout_ms;
    c->done = done;
    c->data = data;

    if (ch->connected) {
        if (provend_chan_write(ch, w) != PROVEN_OK) {
            free(w->frame);
            free(w);
            free(c);
            provend_chan_break(ch, "cannot write");
            return PROVEN_ERR;
        }
    } else {
        ch->queued[ch->nqueued++] = w;
    }
    c->next = ch->calls;
    ch->calls = c;
    ch->ncalls++;
    return PROVEN_OK;
}


void
provend_chan_release(provend_chan_t *ch)
{
    ch->released = 1;
    provend_chan_break(ch, "the worker is gone");
}


/* ---- firing ------------------------------------------------------------- */

typedef struct {
    char           app[65];
    char           handler[PROVEND_SCHEDULE_NAME_MAX + 1];
} provend_fire_t;


static void
provend_fire_done(void *data, const char *failure, proven_response_t *res)
{
    provend_fire_t  *f;

    f = data;
    if (failure != NULL) {
        provend_warn("apps: schedule %s of %s: %s", f->handler, f->app,
                     failure);
    } else if (!res->ok) {
        provend_warn("apps: schedule %s of %s: %.64s: %.256s", f->handler,
                     f->app, res->code, res->message);
    } else {
        provend_debug("apps: schedule %s of %s ran", f->handler, f->app);
    }
    free(f);
}


void
provend_schedule_fire(void *loop, const char *socket_path, const char *app,
    const char *handler, uint64_t scheduled_at)
{
    int              ok;
    cbor_item_t     *req, *args;
    provend_fire_t  *f;

    f = calloc(1, sizeof(*f));
    if (f == NULL) {
        provend_error("apps: out of memory firing a schedule of %s", app);
        return;
    }
    snprintf(f->app, sizeof(f->app), "%s", app);
    snprintf(f->handler, sizeof(f->handler), "%s", handler);

    req = proven_request_new(1, "app.run");
    args = cbor_new_definite_map(1);
    ok = req != NULL && args != NULL;
    if (ok) {
        /* map_put takes the value's reference, whatever it returns */
        ok = proven_cbor_map_put(args, "scheduledAt",
                                 cbor_build_uint64(scheduled_at * 1000))
             == PROVEN_OK;
        ok = proven_cbor_map_put(req, "handler", cbor_build_string(handler))
             == PROVEN_OK && ok;
        ok = proven_cbor_map_put(req, "args", args) == PROVEN_OK && ok;
        args = NULL;
        ok = ok && provend_worker_call(loop, socket_path, req,
                                       PROVEND_FIRE_TIMEOUT_MS,
                                       PROVEND_FIRE_ANSWER_MAX,
                                       provend_fire_done, f) == PROVEN_OK;
    }
    if (args != NULL) {
        cbor_decref(&args);
    }
    if (req != NULL) {
        cbor_decref(&req);
    }
    if (!ok) {
        provend_error("apps: cannot fire the schedule %s of %s", handler,
                      app);
        free(f);
    }
}
