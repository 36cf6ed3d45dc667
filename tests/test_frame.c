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


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_frame_length_bounds),
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_request_errors),
        cmocka_unit_test(test_response_round_trip),
        cmocka_unit_test(test_response_errors),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
