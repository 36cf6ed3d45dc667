/*
 * A framed stream over a libuv pipe (see stream.h): one reader, one
 * ordered write queue, back-pressure and calls by id, for every peer.
 */

#include <stdlib.h>
#include <string.h>

#include "stream.h"


typedef struct {
    uv_write_t          req;
    provend_stream_t   *s;
    uint8_t            *frame;
    size_t              queued;      /* its bytes in queued_bytes */
} provend_stream_write_t;

struct provend_stream_call_s {
    uint64_t                 id;
    uint64_t                 deadline;      /* uv_now */
    provend_stream_done_pt   done;
    void                    *data;
    provend_stream_call_t   *next;
};


static void provend_stream_dispatch(provend_stream_t *s);
static void provend_stream_reading(provend_stream_t *s);
static void provend_stream_break(provend_stream_t *s, const char *why);


static void
provend_stream_on_closed(uv_handle_t *handle)
{
    provend_stream_t  *s;

    s = handle->data;

    if (--s->handles > 0) {
        return;
    }

    proven_frame_reader_free(&s->reader);

    if (s->on_closed != NULL) {
        s->on_closed(s);
    }
}


int
provend_stream_init(uv_loop_t *loop, provend_stream_t *s, size_t max_body)
{
    provend_stream_t  owner;

    /* what the owner set before: kept */
    owner = *s;
    memset(s, 0, sizeof(*s));
    s->data = owner.data;
    s->on_frame = owner.on_frame;
    s->on_end = owner.on_end;
    s->on_written = owner.on_written;
    s->on_closed = owner.on_closed;

    if (uv_pipe_init(loop, &s->pipe, 0) != 0) {
        return PROVEN_ERR;
    }

    if (uv_timer_init(loop, &s->timer) != 0) {
        uv_close((uv_handle_t *) &s->pipe, NULL);
        return PROVEN_ERR;
    }

    s->pipe.data = s;
    s->timer.data = s;
    s->handles = 2;
    s->next_id = 1;
    proven_frame_reader_init(&s->reader, max_body);
    return PROVEN_OK;
}


/* ---- reading ------------------------------------------------------------- */

static void
provend_stream_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    provend_stream_t  *s;

    (void) suggested;

    s = handle->data;
    buf->base = (char *) proven_frame_reader_space(&s->reader, &buf->len);
}


static void
provend_stream_on_read(uv_stream_t *stream, ssize_t nread,
    const uv_buf_t *buf)
{
    provend_stream_t  *s;

    (void) buf;

    s = stream->data;

    if (nread == 0) {
        return;
    }

    if (nread < 0) {
        provend_stream_break(s, nread == UV_EOF ? NULL
                                                : uv_strerror((int) nread));
        return;
    }

    proven_frame_reader_fill(&s->reader, (size_t) nread);
    provend_stream_dispatch(s);
}


/* Reads while the owner takes frames: not paused, ended or closing. */
static void
provend_stream_reading(provend_stream_t *s)
{
    int  want;

    want = !s->paused && !s->ended && !s->closing && !s->connecting;

    if (want && !s->reading) {
        if (uv_read_start((uv_stream_t *) &s->pipe, provend_stream_on_alloc,
                          provend_stream_on_read) != 0)
        {
            provend_stream_break(s, "cannot read the socket");
            return;
        }
        s->reading = 1;

    } else if (!want && s->reading) {
        uv_read_stop((uv_stream_t *) &s->pipe);
        s->reading = 0;
    }
}


/* A response to one of our calls. */
static void
provend_stream_answer(provend_stream_t *s, const uint8_t *body, size_t len)
{
    char                     err[PROVEN_ERR_LEN];
    proven_response_t        res;
    provend_stream_call_t  **p, *c;

    if (proven_response_decode(body, len, &res, err, sizeof(err))
        != PROVEN_OK)
    {
        provend_stream_break(s, "a malformed answer");
        return;
    }

    for (p = &s->calls; (c = *p) != NULL; p = &c->next) {
        if (c->id == res.id) {
            *p = c->next;
            s->ncalls--;
            c->done(c->data, NULL, &res);
            free(c);
            break;
        }
    }

    /* an answer nobody waits for came after its call timed out */
    proven_response_free(&res);
}


/*
 * Hands the whole frames read, in order, while the owner takes them; a
 * resume from inside on_frame goes on here rather than nesting.
 */
static void
provend_stream_dispatch(provend_stream_t *s)
{
    int             rc;
    char            err[PROVEN_ERR_LEN];
    size_t          len;
    const uint8_t  *body;

    if (s->dispatching) {
        return;
    }

    s->dispatching = 1;

    while (!s->paused && !s->closing && !s->ended) {

        rc = proven_frame_reader_next(&s->reader, &body, &len, err,
                                      sizeof(err));
        if (rc == PROVEN_AGAIN) {
            break;
        }

        if (rc != PROVEN_OK) {
            s->bad_frame = 1;
            provend_stream_break(s, err);
            break;
        }

        if (s->on_frame != NULL) {
            s->on_frame(s, body, len);
        } else {
            provend_stream_answer(s, body, len);
        }
    }

    s->dispatching = 0;
    provend_stream_reading(s);
}


int
provend_stream_start(provend_stream_t *s)
{
    provend_stream_reading(s);
    return s->ended ? PROVEN_ERR : PROVEN_OK;
}


void
provend_stream_pause(provend_stream_t *s)
{
    s->paused = 1;

    if (!s->dispatching) {
        provend_stream_reading(s);
    }
}


void
provend_stream_resume(provend_stream_t *s)
{
    if (!s->paused) {
        return;
    }

    s->paused = 0;

    /* frames read before the pause come first */
    provend_stream_dispatch(s);
}


static void
provend_stream_fail_calls(provend_stream_t *s, const char *why)
{
    provend_stream_call_t  *c;

    while ((c = s->calls) != NULL) {
        s->calls = c->next;
        s->ncalls--;
        c->done(c->data, why, NULL);
        free(c);
    }
}


/* No more input: reading stops, calls fail, the owner is told once. */
static void
provend_stream_break(provend_stream_t *s, const char *why)
{
    if (s->ended) {
        return;
    }

    s->ended = 1;
    provend_stream_reading(s);
    provend_stream_fail_calls(s, why != NULL ? why
                                 : "the peer closed the connection");

    if (s->on_end != NULL) {
        s->on_end(s, why);
    }
}


/* ---- writing ------------------------------------------------------------- */

static void
provend_stream_written(provend_stream_t *s, int ok)
{
    if (s->on_written != NULL) {
        s->on_written(s, ok);
    }
}


static void
provend_stream_on_write(uv_write_t *req, int status)
{
    provend_stream_t        *s;
    provend_stream_write_t  *w;

    w = req->data;
    s = w->s;

    s->writes--;
    s->queued_bytes -= w->queued;
    free(w->frame);
    free(w);

    if (status < 0 && status != UV_ECANCELED) {
        provend_stream_break(s, uv_strerror(status));
    }

    provend_stream_written(s, status == 0);
}


int
provend_stream_write(provend_stream_t *s, uint8_t *frame, size_t len)
{
    int                      rc;
    size_t                   sent;
    uv_buf_t                 buf;
    uint8_t                **pending;
    size_t                  *pending_len;
    provend_stream_write_t  *w;

    if (frame == NULL || s->closing) {
        goto dropped;
    }

    if (s->connecting) {
        if (s->npending == PROVEND_STREAM_PENDING_MAX) {
            goto dropped;
        }

        pending = realloc(s->pending, (s->npending + 1) * sizeof(*pending));
        if (pending != NULL) {
            s->pending = pending;
        }

        pending_len = realloc(s->pending_len,
                              (s->npending + 1) * sizeof(*pending_len));
        if (pending_len != NULL) {
            s->pending_len = pending_len;
        }

        if (pending == NULL || pending_len == NULL) {
            goto dropped;
        }

        s->pending[s->npending] = frame;
        s->pending_len[s->npending] = len;
        s->npending++;
        return PROVEN_OK;
    }

    /*
     * Most frames fit in the socket buffer: written now, without a write
     * request and its callback.  UV_EAGAIN also when writes are queued,
     * so frames keep their order.
     */
    buf = uv_buf_init((char *) frame, (unsigned int) len);
    rc = s->writes == 0 ? uv_try_write((uv_stream_t *) &s->pipe, &buf, 1)
                        : UV_EAGAIN;

    if (rc < 0 && rc != UV_EAGAIN) {
        provend_stream_break(s, uv_strerror(rc));
        goto dropped;
    }

    sent = rc < 0 ? 0 : (size_t) rc;
    if (sent == len) {
        free(frame);
        provend_stream_written(s, 1);
        return PROVEN_OK;
    }

    w = malloc(sizeof(*w));
    if (w == NULL) {
        /* part of a frame may be out: the stream is no longer framed */
        provend_stream_break(s, "out of memory");
        goto dropped;
    }

    w->s = s;
    w->frame = frame;
    w->queued = len - sent;
    w->req.data = w;
    buf = uv_buf_init((char *) frame + sent, (unsigned int) (len - sent));

    rc = uv_write(&w->req, (uv_stream_t *) &s->pipe, &buf, 1,
                  provend_stream_on_write);
    if (rc != 0) {
        free(w);
        provend_stream_break(s, uv_strerror(rc));
        goto dropped;
    }

    s->writes++;
    s->queued_bytes += w->queued;
    return PROVEN_OK;

dropped:

    free(frame);
    provend_stream_written(s, 0);
    return PROVEN_ERR;
}


/* ---- connecting and calls ------------------------------------------------ */

/*
 * Each second: calls past their deadline are told so (taken off first: a
 * done may close the stream, which fails the others).
 */
static void
provend_stream_on_timer(uv_timer_t *timer)
{
    uint64_t                 now;
    provend_stream_t        *s;
    provend_stream_call_t  **p, *c, *late;

    s = timer->data;
    now = uv_now(timer->loop);
    late = NULL;

    for (p = &s->calls; (c = *p) != NULL; ) {
        if (c->deadline <= now) {
            *p = c->next;
            s->ncalls--;
            c->next = late;
            late = c;

        } else {
            p = &c->next;
        }
    }

    while ((c = late) != NULL) {
        late = c->next;
        c->done(c->data, "no answer in time", NULL);
        free(c);
    }
}


static void
provend_stream_on_connect(uv_connect_t *req, int status)
{
    size_t             i, n;
    uint8_t          **pending;
    size_t            *pending_len;
    provend_stream_t  *s;

    s = req->data;
    s->connecting = 0;

    pending = s->pending;
    pending_len = s->pending_len;
    n = s->npending;
    s->pending = NULL;
    s->pending_len = NULL;
    s->npending = 0;

    if (status != 0 && !s->closing) {
        provend_stream_break(s, uv_strerror(status));
    }

    /* in order; dropped (and told so) if the stream broke or closes */
    for (i = 0; i < n; i++) {
        if (status != 0 || s->ended) {
            free(pending[i]);
            provend_stream_written(s, 0);
            continue;
        }
        provend_stream_write(s, pending[i], pending_len[i]);
    }

    free(pending);
    free(pending_len);

    provend_stream_reading(s);
}


int
provend_stream_connect(uv_loop_t *loop, provend_stream_t *s,
    const char *path, size_t max_body)
{
    if (provend_stream_init(loop, s, max_body) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    s->connecting = 1;
    s->connect.data = s;

    uv_pipe_connect(&s->connect, &s->pipe, path, provend_stream_on_connect);
    return PROVEN_OK;
}


/* The request's "id" set to id (replaced if there is one). */
static int
provend_stream_set_id(cbor_item_t *request, uint64_t id)
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


int
provend_stream_usable(provend_stream_t *s)
{
    return !s->ended && !s->closing && s->ncalls < PROVEND_STREAM_CALLS_MAX
           && s->npending < PROVEND_STREAM_PENDING_MAX
           && s->queued_bytes < PROVEND_STREAM_QUEUED_MAX;
}


int
provend_stream_call(provend_stream_t *s, cbor_item_t *request,
    uint64_t timeout_ms, provend_stream_done_pt done, void *data)
{
    char                    err[PROVEN_ERR_LEN];
    size_t                  len;
    uint8_t                *frame;
    provend_stream_call_t  *c;

    if (!provend_stream_usable(s) || !cbor_isa_map(request)) {
        return PROVEN_ERR;
    }

    c = calloc(1, sizeof(*c));
    if (c == NULL
        || provend_stream_set_id(request, s->next_id) != PROVEN_OK
        || proven_frame_encode(request, &frame, &len, err, sizeof(err))
           != PROVEN_OK)
    {
        free(c);
        return PROVEN_ERR;
    }

    /* done only later: a write refused now is the caller's to know */
    if (provend_stream_write(s, frame, len) != PROVEN_OK || s->closing) {
        free(c);
        return PROVEN_ERR;
    }

    /* the deadlines' clock runs while calls wait */
    if (!uv_is_active((uv_handle_t *) &s->timer)) {
        uv_timer_start(&s->timer, provend_stream_on_timer, 1000, 1000);
        uv_unref((uv_handle_t *) &s->timer);
    }

    c->id = s->next_id++;
    c->deadline = uv_now(s->timer.loop) + timeout_ms;
    c->done = done;
    c->data = data;
    c->next = s->calls;
    s->calls = c;
    s->ncalls++;
    return PROVEN_OK;
}


void
provend_stream_close(provend_stream_t *s)
{
    if (s->closing) {
        return;
    }

    /* the owner's own doing: calls fail, on_end is not told */
    s->closing = 1;
    s->ended = 1;
    s->reading = 0;
    provend_stream_fail_calls(s, "the line was closed");

    uv_close((uv_handle_t *) &s->pipe, provend_stream_on_closed);
    uv_close((uv_handle_t *) &s->timer, provend_stream_on_closed);
}
