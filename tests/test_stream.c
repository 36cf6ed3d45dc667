/*
 * provend's framed stream (daemon/core/stream.c) over a socket pair: calls
 * answered by id, in any order; a deadline; back-pressure; a frame larger
 * than the socket's buffer; a length out of bounds; closing with calls
 * waiting.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "proven.h"
#include "core/stream.h"


typedef struct {
    uv_loop_t          loop;
    provend_stream_t   server;        /* answers, or holds back */
    provend_stream_t   client;        /* calls */
    int                hold;          /* the server answers nothing */
    size_t             frames;        /* seen by the server */
    size_t             answered;      /* calls done, with an answer */
    size_t             failed;        /* calls done, with a failure */
    char               failure[PROVEN_ERR_LEN];
    size_t             big;           /* a big frame's length, seen */
    size_t             ended;
    int                bad_frame;
    int                closed;
} pair_t;


static void
server_frame(provend_stream_t *s, const uint8_t *body, size_t len)
{
    size_t              flen;
    uint8_t            *frame;
    pair_t             *p;
    proven_request_t    req;
    cbor_item_t        *echo;

    p = s->data;
    p->frames++;

    if (len > 100000) {
        p->big = len;
    }

    if (p->hold
        || proven_request_decode(body, len, &req, NULL, 0) != PROVEN_OK)
    {
        return;
    }

    echo = proven_cbor_map_get(req.map, "n");
    assert_int_equal(proven_response_encode_ok(req.id, echo, &frame, &flen),
                     PROVEN_OK);
    proven_request_free(&req);
    assert_int_equal(provend_stream_write(s, frame, flen), PROVEN_OK);
}


static void
server_end(provend_stream_t *s, const char *why)
{
    pair_t  *p;

    p = s->data;
    p->ended = 1;
    p->bad_frame = s->bad_frame;
    (void) why;
}


static void
counted_closed(provend_stream_t *s)
{
    pair_t  *p;

    p = s->data;
    p->closed++;
}


static void
call_done(void *data, const char *failure, proven_response_t *res)
{
    pair_t  *p;

    p = data;

    if (failure != NULL) {
        p->failed++;
        snprintf(p->failure, sizeof(p->failure), "%s", failure);
        return;
    }

    assert_true(res->ok);
    p->answered++;
}


static void
pair_open(pair_t *p)
{
    int  fds[2];

    memset(p, 0, sizeof(*p));
    assert_int_equal(uv_loop_init(&p->loop), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);

    p->server.data = p;
    p->server.on_frame = server_frame;
    p->server.on_end = server_end;
    p->server.on_closed = counted_closed;
    assert_int_equal(provend_stream_init(&p->loop, &p->server, 1 << 20),
                     PROVEN_OK);
    assert_int_equal(uv_pipe_open(&p->server.pipe, fds[0]), 0);
    assert_int_equal(provend_stream_start(&p->server), PROVEN_OK);

    p->client.data = p;
    p->client.on_closed = counted_closed;
    assert_int_equal(provend_stream_init(&p->loop, &p->client, 1 << 20),
                     PROVEN_OK);
    assert_int_equal(uv_pipe_open(&p->client.pipe, fds[1]), 0);
    assert_int_equal(provend_stream_start(&p->client), PROVEN_OK);
}


static void
pair_close(pair_t *p)
{
    provend_stream_close(&p->server);
    provend_stream_close(&p->client);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    assert_int_equal(p->closed, 2);
    assert_int_equal(uv_loop_close(&p->loop), 0);
}


static void
run_until(pair_t *p, size_t *counter, size_t want)
{
    int  i;

    for (i = 0; i < 10000 && *counter < want; i++) {
        uv_run(&p->loop, UV_RUN_NOWAIT);
    }
}


static cbor_item_t *
numbered(uint64_t n)
{
    cbor_item_t  *req;

    req = proven_request_new(0, "echo");
    assert_non_null(req);
    assert_int_equal(proven_cbor_map_put(req, "n", cbor_build_uint64(n)),
                     PROVEN_OK);
    return req;
}


static void
test_calls_answered(void **state)
{
    pair_t        p;
    uint64_t      i;
    cbor_item_t  *req;

    (void) state;

    pair_open(&p);

    for (i = 0; i < 200; i++) {
        req = numbered(i);
        assert_int_equal(provend_stream_call(&p.client, req, 5000,
                                             call_done, &p), PROVEN_OK);
        cbor_decref(&req);
    }

    run_until(&p, &p.answered, 200);
    assert_int_equal(p.answered, 200);
    assert_int_equal(p.failed, 0);
    assert_int_equal(p.client.ncalls, 0);

    pair_close(&p);
}


/* Paused, the server takes no frame; resumed, it takes them all. */
static void
test_back_pressure(void **state)
{
    int           i;
    pair_t        p;
    cbor_item_t  *req;

    (void) state;

    pair_open(&p);
    provend_stream_pause(&p.server);

    for (i = 0; i < 50; i++) {
        req = numbered(i);
        assert_int_equal(provend_stream_call(&p.client, req, 5000,
                                             call_done, &p), PROVEN_OK);
        cbor_decref(&req);
    }

    for (i = 0; i < 200; i++) {
        uv_run(&p.loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(p.frames, 0);

    provend_stream_resume(&p.server);
    run_until(&p, &p.answered, 50);
    assert_int_equal(p.frames, 50);
    assert_int_equal(p.answered, 50);

    pair_close(&p);
}


/* A frame larger than the socket buffer leaves whole, through the queue. */
static void
test_big_frame(void **state)
{
    size_t    len;
    uint8_t  *frame;
    pair_t    p;

    (void) state;

    pair_open(&p);

    len = PROVEN_FRAME_HEADER + 900000;
    frame = malloc(len);
    assert_non_null(frame);
    memset(frame, 0x41, len);
    proven_frame_put_length(frame, (uint32_t) (len - PROVEN_FRAME_HEADER));
    assert_int_equal(provend_stream_write(&p.client, frame, len), PROVEN_OK);

    run_until(&p, &p.big, 1);
    assert_int_equal(p.big, 900000);

    pair_close(&p);
}


/* A length out of bounds ends the stream, saying it was the framing. */
static void
test_bad_length(void **state)
{
    size_t    len;
    uint8_t  *frame;
    pair_t    p;

    (void) state;

    pair_open(&p);

    len = PROVEN_FRAME_HEADER;
    frame = calloc(1, len);                 /* length 0 */
    assert_non_null(frame);
    assert_int_equal(provend_stream_write(&p.client, frame, len), PROVEN_OK);

    run_until(&p, &p.ended, 1);
    assert_true(p.ended);
    assert_true(p.bad_frame);
    assert_true(p.server.ended);

    pair_close(&p);
}


/* A call with no answer fails at its deadline. */
static void
test_deadline(void **state)
{
    int           i;
    pair_t        p;
    cbor_item_t  *req;

    (void) state;

    pair_open(&p);
    p.hold = 1;

    req = numbered(1);
    assert_int_equal(provend_stream_call(&p.client, req, 100, call_done, &p),
                     PROVEN_OK);
    cbor_decref(&req);

    for (i = 0; i < 300 && p.failed == 0; i++) {
        uv_run(&p.loop, UV_RUN_NOWAIT);
        usleep(10000);
    }

    assert_int_equal(p.failed, 1);
    assert_string_equal(p.failure, "no answer in time");
    assert_int_equal(p.client.ncalls, 0);

    pair_close(&p);
}


/* Unanswered calls fail: when the stream closes. */
static void
test_close_fails_calls(void **state)
{
    pair_t        p;
    cbor_item_t  *req;

    (void) state;

    pair_open(&p);
    p.hold = 1;

    req = numbered(1);
    assert_int_equal(provend_stream_call(&p.client, req, 60000, call_done,
                                         &p), PROVEN_OK);
    cbor_decref(&req);
    run_until(&p, &p.frames, 1);
    assert_int_equal(p.answered, 0);

    provend_stream_close(&p.client);
    assert_int_equal(p.failed, 1);
    assert_string_equal(p.failure, "the line was closed");

    /* a closed stream takes no more calls */
    req = numbered(2);
    assert_int_equal(provend_stream_call(&p.client, req, 1000, call_done,
                                         &p), PROVEN_ERR);
    cbor_decref(&req);

    pair_close(&p);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_calls_answered),
        cmocka_unit_test(test_back_pressure),
        cmocka_unit_test(test_big_frame),
        cmocka_unit_test(test_bad_length),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_close_fails_calls),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
