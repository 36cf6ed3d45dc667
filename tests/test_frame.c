/* Frame codec: lengths, request and response maps. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proven.h"


static void
test_frame_length_bounds(void **state)
{
    uint32_t  len;
    uint8_t   header[PROVEN_FRAME_HEADER];
    char      err[PROVEN_ERR_LEN];

    (void) state;

    proven_frame_put_length(header, 0);
    assert_int_equal(proven_frame_length(header, &len, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "frame length"));

    proven_frame_put_length(header, 1);
    assert_int_equal(proven_frame_length(header, &len, err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(len, 1);

    proven_frame_put_length(header, PROVEN_FRAME_MAX);
    assert_memory_equal(header, "\x01\x00\x00\x00", 4);
    assert_int_equal(proven_frame_length(header, &len, err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(len, 16 * 1024 * 1024);

    proven_frame_put_length(header, PROVEN_FRAME_MAX + 1);
    assert_int_equal(proven_frame_length(header, &len, NULL, 0), PROVEN_ERR);

    memset(header, 0xff, sizeof(header));
    assert_int_equal(proven_frame_length(header, &len, err, sizeof(err)),
                     PROVEN_ERR);
}


/* Decodes a request from CBOR given as bytes. */
static int
decode_request(const uint8_t *buf, size_t len, proven_request_t *req,
    char *err)
{
    return proven_request_decode(buf, len, req, err, PROVEN_ERR_LEN);
}


static void
test_request_round_trip(void **state)
{
    size_t            len;
    uint8_t          *frame;
    uint32_t          body;
    cbor_item_t      *map;
    proven_request_t  req;
    char              err[PROVEN_ERR_LEN];

    (void) state;

    map = proven_request_new((uint64_t) 1 << 40, "kv.get");
    assert_non_null(map);
    assert_int_equal(proven_cbor_map_put(map, "key",
                                         cbor_build_string("a")), PROVEN_OK);
    assert_int_equal(proven_frame_encode(map, &frame, &len, err,
                                         sizeof(err)), PROVEN_OK);
    cbor_decref(&map);

    assert_int_equal(proven_frame_length(frame, &body, err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(body + PROVEN_FRAME_HEADER, len);

    assert_int_equal(decode_request(frame + PROVEN_FRAME_HEADER, body, &req,
                                    err), PROVEN_OK);
    assert_true(req.has_id);
    assert_true(req.id == (uint64_t) 1 << 40);
    assert_string_equal(req.op, "kv.get");
    assert_non_null(proven_cbor_map_get(req.map, "key"));
    proven_request_free(&req);
    free(frame);
}


static void
test_request_errors(void **state)
{
    proven_request_t  req;
    char              err[PROVEN_ERR_LEN];
    uint8_t           buf[128];
    size_t            n;
    /* [1] */
    static const uint8_t  not_map[] = { 0x81, 0x01 };
    /* {"op": "x"} */
    static const uint8_t  no_id[] = { 0xa1, 0x62, 'o', 'p', 0x61, 'x' };
    /* {"id": -1, "op": "x"} */
    static const uint8_t  neg_id[] = {
        0xa2, 0x62, 'i', 'd', 0x20, 0x62, 'o', 'p', 0x61, 'x'
    };
    /* {"id": 7} */
    static const uint8_t  no_op[] = { 0xa1, 0x62, 'i', 'd', 0x07 };
    /* {"id": 7, "op": h'78'} */
    static const uint8_t  op_bytes[] = {
        0xa2, 0x62, 'i', 'd', 0x07, 0x62, 'o', 'p', 0x41, 'x'
    };
    /* {"id": 7, "op": ""} */
    static const uint8_t  op_empty[] = {
        0xa2, 0x62, 'i', 'd', 0x07, 0x62, 'o', 'p', 0x60
    };
    static const uint8_t  garbage[] = { 0xff, 0x00, 0x13 };

    (void) state;

    assert_int_equal(decode_request(not_map, sizeof(not_map), &req, err),
                     PROVEN_ERR);
    assert_false(req.has_id);

    assert_int_equal(decode_request(no_id, sizeof(no_id), &req, err),
                     PROVEN_ERR);
    assert_false(req.has_id);
    assert_non_null(strstr(err, "id"));

    assert_int_equal(decode_request(neg_id, sizeof(neg_id), &req, err),
                     PROVEN_ERR);
    assert_false(req.has_id);

    /* the id is usable for an error response */
    assert_int_equal(decode_request(no_op, sizeof(no_op), &req, err),
                     PROVEN_ERR);
    assert_true(req.has_id);
    assert_int_equal(req.id, 7);
    assert_null(req.map);
    proven_request_free(&req);

    assert_int_equal(decode_request(op_bytes, sizeof(op_bytes), &req, err),
                     PROVEN_ERR);
    assert_true(req.has_id);
    assert_int_equal(decode_request(op_empty, sizeof(op_empty), &req, err),
                     PROVEN_ERR);
    assert_int_equal(decode_request(garbage, sizeof(garbage), &req, err),
                     PROVEN_ERR);
    assert_int_equal(decode_request(no_op, sizeof(no_op) - 1, &req, err),
                     PROVEN_ERR);

    /* op of 63 bytes fits, 64 does not */
    for (n = 63; n <= 64; n++) {
        buf[0] = 0xa2;
        memcpy(buf + 1, "\x62id\x07\x62op\x78", 8);
        buf[9] = (uint8_t) n;
        memset(buf + 10, 'o', n);

        if (n == 63) {
            assert_int_equal(decode_request(buf, 10 + n, &req, err),
                             PROVEN_OK);
            assert_int_equal(strlen(req.op), 63);
            proven_request_free(&req);

        } else {
            assert_int_equal(decode_request(buf, 10 + n, &req, err),
                             PROVEN_ERR);
            assert_true(req.has_id);
        }
    }

    /* trailing bytes after the map */
    memcpy(buf, no_op, sizeof(no_op));
    buf[sizeof(no_op)] = 0x00;
    assert_int_equal(decode_request(buf, sizeof(no_op) + 1, &req, err),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "trailing"));
}


static void
test_response_round_trip(void **state)
{
    size_t             len;
    uint8_t           *frame;
    uint64_t           v;
    cbor_item_t       *result;
    proven_response_t  res;
    char               err[PROVEN_ERR_LEN];

    (void) state;

    result = cbor_new_definite_map(1);
    assert_int_equal(proven_cbor_map_put(result, "n", cbor_build_uint8(5)),
                     PROVEN_OK);
    assert_int_equal(proven_response_encode_ok(42, result, &frame, &len),
                     PROVEN_OK);
    /* result is borrowed: still ours */
    assert_int_equal(cbor_refcount(result), 1);
    cbor_decref(&result);

    assert_int_equal(proven_response_decode(frame + PROVEN_FRAME_HEADER,
                                            len - PROVEN_FRAME_HEADER, &res,
                                            err, sizeof(err)), PROVEN_OK);
    assert_int_equal(res.id, 42);
    assert_true(res.ok);
    assert_int_equal(proven_cbor_uint(proven_cbor_map_get(res.result, "n"),
                                      &v), PROVEN_OK);
    assert_int_equal(v, 5);
    proven_response_free(&res);
    free(frame);

    assert_int_equal(proven_response_encode_ok(1, NULL, &frame, &len),
                     PROVEN_OK);
    assert_int_equal(proven_response_decode(frame + PROVEN_FRAME_HEADER,
                                            len - PROVEN_FRAME_HEADER, &res,
                                            err, sizeof(err)), PROVEN_OK);
    assert_true(res.ok);
    assert_true(cbor_is_null(res.result));
    proven_response_free(&res);
    free(frame);

    assert_int_equal(proven_response_encode_error(UINT64_MAX, "bad_request",
                                                  "nonce is not hex", &frame,
                                                  &len), PROVEN_OK);
    assert_int_equal(proven_response_decode(frame + PROVEN_FRAME_HEADER,
                                            len - PROVEN_FRAME_HEADER, &res,
                                            err, sizeof(err)), PROVEN_OK);
    assert_false(res.ok);
    assert_true(res.id == UINT64_MAX);
    assert_string_equal(res.code, "bad_request");
    assert_string_equal(res.message, "nonce is not hex");
    assert_null(res.result);
    proven_response_free(&res);
    free(frame);
}


static void
test_response_errors(void **state)
{
    size_t             len;
    uint8_t           *frame;
    char              *message;
    proven_response_t  res;
    char               err[PROVEN_ERR_LEN];
    /* {"id": 1, "ok": false} */
    static const uint8_t  no_error[] = {
        0xa2, 0x62, 'i', 'd', 0x01, 0x62, 'o', 'k', 0xf4
    };
    /* {"id": 1, "ok": 1} */
    static const uint8_t  ok_int[] = {
        0xa2, 0x62, 'i', 'd', 0x01, 0x62, 'o', 'k', 0x01
    };
    /* {"id": 1, "ok": 1.5} (libcbor 0.8 asserts on cbor_is_bool(1.5)) */
    static const uint8_t  ok_float[] = {
        0xa2, 0x62, 'i', 'd', 0x01, 0x62, 'o', 'k', 0xf9, 0x3e, 0x00
    };
    /* {"ok": true} */
    static const uint8_t  no_id[] = { 0xa1, 0x62, 'o', 'k', 0xf5 };

    (void) state;

    assert_int_equal(proven_response_decode(no_error, sizeof(no_error), &res,
                                            err, sizeof(err)), PROVEN_ERR);
    assert_null(res.map);
    assert_int_equal(proven_response_decode(ok_int, sizeof(ok_int), &res,
                                            err, sizeof(err)), PROVEN_ERR);
    assert_int_equal(proven_response_decode(ok_float, sizeof(ok_float),
                                            &res, err, sizeof(err)),
                     PROVEN_ERR);
    assert_int_equal(proven_response_decode(no_id, sizeof(no_id), &res,
                                            err, sizeof(err)), PROVEN_ERR);

    /* a long message is truncated, not refused */
    message = malloc(1000);
    assert_non_null(message);
    memset(message, 'm', 999);
    message[999] = '\0';
    assert_int_equal(proven_response_encode_error(3, "internal", message,
                                                  &frame, &len), PROVEN_OK);
    assert_int_equal(proven_response_decode(frame + PROVEN_FRAME_HEADER,
                                            len - PROVEN_FRAME_HEADER, &res,
                                            err, sizeof(err)), PROVEN_OK);
    assert_int_equal(strlen(res.message), sizeof(res.message) - 1);
    proven_response_free(&res);
    free(frame);

    /* a code that does not fit is refused */
    memset(message, 'c', 64);
    message[64] = '\0';
    assert_int_equal(proven_response_encode_error(3, message, "m", &frame,
                                                  &len), PROVEN_OK);
    assert_int_equal(proven_response_decode(frame + PROVEN_FRAME_HEADER,
                                            len - PROVEN_FRAME_HEADER, &res,
                                            err, sizeof(err)), PROVEN_ERR);
    free(frame);
    free(message);
}


/* Three answers, fed one byte at a time: each pops whole, in order. */
static void
test_reader_byte_by_byte(void **state)
{
    char                   err[PROVEN_ERR_LEN];
    size_t                 all_len, len[3], i, body_len;
    uint8_t               *frame[3], *all;
    uint64_t               got;
    const uint8_t         *body;
    proven_response_t      res;
    proven_frame_reader_t  r;

    (void) state;

    all_len = 0;
    for (i = 0; i < 3; i++) {
        assert_int_equal(proven_response_encode_ok(i + 7, NULL, &frame[i],
                                                   &len[i]), PROVEN_OK);
        all_len += len[i];
    }

    all = malloc(all_len);
    assert_non_null(all);
    memcpy(all, frame[0], len[0]);
    memcpy(all + len[0], frame[1], len[1]);
    memcpy(all + len[0] + len[1], frame[2], len[2]);

    proven_frame_reader_init(&r, 0);
    got = 0;

    for (i = 0; i < all_len; i++) {
        assert_int_equal(proven_frame_reader_feed(&r, all + i, 1, err,
                                                  sizeof(err)), PROVEN_OK);

        while (proven_frame_reader_next(&r, &body, &body_len, err,
                                        sizeof(err)) == PROVEN_OK)
        {
            assert_int_equal(proven_response_decode(body, body_len, &res,
                                                    err, sizeof(err)),
                             PROVEN_OK);
            assert_int_equal(res.id, got + 7);
            proven_response_free(&res);
            got++;
        }
    }

    assert_int_equal(got, 3);
    assert_int_equal(proven_frame_reader_pending(&r), 0);

    proven_frame_reader_free(&r);
    free(all);
    for (i = 0; i < 3; i++) {
        free(frame[i]);
    }
}


/* A length out of bounds fails the reader, and it stays failed. */
static void
test_reader_bad_lengths(void **state)
{
    char                   err[PROVEN_ERR_LEN];
    size_t                 len;
    uint8_t                header[PROVEN_FRAME_HEADER], ok[5];
    const uint8_t         *body;
    proven_frame_reader_t  r;

    (void) state;

    proven_frame_reader_init(&r, 0);
    proven_frame_put_length(header, 0);
    assert_int_equal(proven_frame_reader_feed(&r, header, sizeof(header),
                                              err, sizeof(err)), PROVEN_OK);
    assert_int_equal(proven_frame_reader_next(&r, &body, &len, err,
                                              sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "bad frame length 0"));

    /* a good frame after it is not read: the stream lost its framing */
    proven_frame_put_length(ok, 1);
    ok[4] = 0xa0;
    assert_int_equal(proven_frame_reader_feed(&r, ok, sizeof(ok), err,
                                              sizeof(err)), PROVEN_OK);
    assert_int_equal(proven_frame_reader_next(&r, &body, &len, err,
                                              sizeof(err)), PROVEN_ERR);
    proven_frame_reader_free(&r);

    /* over the reader's own bound, below the protocol's */
    proven_frame_reader_init(&r, 100);
    proven_frame_put_length(header, 101);
    assert_int_equal(proven_frame_reader_feed(&r, header, sizeof(header),
                                              err, sizeof(err)), PROVEN_OK);
    assert_int_equal(proven_frame_reader_next(&r, &body, &len, err,
                                              sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "over the limit of 100"));
    proven_frame_reader_free(&r);

    /* over the protocol's */
    proven_frame_reader_init(&r, 0);
    proven_frame_put_length(header, PROVEN_FRAME_MAX + 1);
    assert_int_equal(proven_frame_reader_feed(&r, header, sizeof(header),
                                              err, sizeof(err)), PROVEN_OK);
    assert_int_equal(proven_frame_reader_next(&r, &body, &len, err,
                                              sizeof(err)), PROVEN_ERR);
    proven_frame_reader_free(&r);
}


/*
 * A header that announces 16 MiB pins no more than what arrived; the
 * buffer of a big frame is let go once the frame is popped.
 */
static void
test_reader_memory_follows_bytes(void **state)
{
    char                   err[PROVEN_ERR_LEN];
    size_t                 len, avail, have, n;
    uint8_t                header[PROVEN_FRAME_HEADER], *space;
    const uint8_t         *body;
    proven_frame_reader_t  r;

    (void) state;

    proven_frame_reader_init(&r, 0);
    proven_frame_put_length(header, PROVEN_FRAME_MAX);
    assert_int_equal(proven_frame_reader_feed(&r, header, sizeof(header),
                                              err, sizeof(err)), PROVEN_OK);
    assert_int_equal(proven_frame_reader_next(&r, &body, &len, err,
                                              sizeof(err)), PROVEN_AGAIN);
    assert_true(r.cap <= 2 * PROVEN_FRAME_READ_CHUNK);

    /* the body, read into the reader's own space as a socket would */
    have = 0;
    while (have < PROVEN_FRAME_MAX) {
        space = proven_frame_reader_space(&r, &avail);
        assert_non_null(space);
        assert_true(avail > 0 && avail <= PROVEN_FRAME_READ_CHUNK);
        n = PROVEN_FRAME_MAX - have < avail ? PROVEN_FRAME_MAX - have
                                            : avail;
        memset(space, 0x5a, n);
        proven_frame_reader_fill(&r, n);
        have += n;
    }

    assert_int_equal(proven_frame_reader_next(&r, &body, &len, err,
                                              sizeof(err)), PROVEN_OK);
    assert_int_equal(len, PROVEN_FRAME_MAX);
    assert_int_equal(body[0], 0x5a);
    assert_int_equal(body[len - 1], 0x5a);
    assert_true(r.cap <= PROVEN_FRAME_HEADER + PROVEN_FRAME_MAX
                         + PROVEN_FRAME_READ_CHUNK);

    space = proven_frame_reader_space(&r, &avail);
    assert_non_null(space);
    assert_true(r.cap <= PROVEN_FRAME_READ_CHUNK);

    proven_frame_reader_free(&r);
}


/* What the builder writes reads back as the same response. */
static void
test_builder_round_trip(void **state)
{
    char                    err[PROVEN_ERR_LEN];
    size_t                  len;
    uint8_t                *frame, value[3000];
    uint32_t                body_len;
    cbor_item_t            *item;
    uint64_t                n;
    proven_response_t       res;
    proven_frame_builder_t  b;

    (void) state;

    memset(value, 0x33, sizeof(value));

    /* a small hint: the builder grows */
    proven_frame_builder_init(&b, 8, 0);
    proven_frame_put_ok(&b, 1u << 20);
    proven_frame_put_head(&b, PROVEN_CBOR_MAP, 3);
    proven_frame_put_text(&b, "value");
    proven_frame_put_string(&b, PROVEN_CBOR_BYTES, value, sizeof(value));
    proven_frame_put_text(&b, "revision");
    proven_frame_put_uint(&b, UINT64_MAX);
    proven_frame_put_text(&b, "gone");
    proven_frame_put_null(&b);
    assert_int_equal(proven_frame_builder_finish(&b, &frame, &len),
                     PROVEN_OK);

    assert_int_equal(proven_frame_length(frame, &body_len, err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(body_len + PROVEN_FRAME_HEADER, len);
    assert_int_equal(proven_response_decode(frame + PROVEN_FRAME_HEADER,
                                            len - PROVEN_FRAME_HEADER, &res,
                                            err, sizeof(err)), PROVEN_OK);
    assert_int_equal(res.id, 1u << 20);
    assert_true(res.ok);

    item = proven_cbor_map_get(res.result, "value");
    assert_non_null(item);
    assert_int_equal(cbor_bytestring_length(item), sizeof(value));
    assert_memory_equal(cbor_bytestring_handle(item), value, sizeof(value));
    assert_int_equal(proven_cbor_uint(proven_cbor_map_get(res.result,
                                                          "revision"), &n),
                     PROVEN_OK);
    assert_true(n == UINT64_MAX);
    assert_true(proven_cbor_is_null(proven_cbor_map_get(res.result,
                                                        "gone")));

    proven_response_free(&res);
    free(frame);
}


/* Past its bound the builder fails once, at finish, and hands nothing. */
static void
test_builder_bound(void **state)
{
    size_t                  len;
    uint8_t                *frame, value[200];
    proven_frame_builder_t  b;

    (void) state;

    memset(value, 1, sizeof(value));

    proven_frame_builder_init(&b, 16, 100);
    proven_frame_put_ok(&b, 1);
    proven_frame_put_string(&b, PROVEN_CBOR_BYTES, value, sizeof(value));
    proven_frame_put_null(&b);
    frame = NULL;
    assert_int_equal(proven_frame_builder_finish(&b, &frame, &len),
                     PROVEN_ERR);
    assert_null(frame);

    /* exactly at the bound is fine */
    proven_frame_builder_init(&b, 16, 100);
    proven_frame_put_raw(&b, value, 100);
    assert_int_equal(proven_frame_builder_finish(&b, &frame, &len),
                     PROVEN_OK);
    assert_int_equal(len, PROVEN_FRAME_HEADER + 100);
    free(frame);

    /* an empty frame is not a frame */
    proven_frame_builder_init(&b, 16, 0);
    assert_int_equal(proven_frame_builder_finish(&b, &frame, &len),
                     PROVEN_ERR);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_frame_length_bounds),
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_request_errors),
        cmocka_unit_test(test_response_round_trip),
        cmocka_unit_test(test_response_errors),
        cmocka_unit_test(test_reader_byte_by_byte),
        cmocka_unit_test(test_reader_bad_lengths),
        cmocka_unit_test(test_reader_memory_follows_bytes),
        cmocka_unit_test(test_builder_round_trip),
        cmocka_unit_test(test_builder_bound),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
