/* WebSocket frame heads and multipart/form-data fields (libproven). */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proven.h"


/* A masked client frame of payload into out; its length. */
static size_t
client_frame(uint8_t *out, unsigned first, const uint8_t *payload,
    size_t len)
{
    size_t   n, i;
    uint8_t  mask[4] = { 0x11, 0x22, 0x33, 0x44 };

    n = 0;
    out[n++] = (uint8_t) first;

    if (len < 126) {
        out[n++] = (uint8_t) (0x80 | len);
    } else if (len < 65536) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t) (len >> 8);
        out[n++] = (uint8_t) len;
    } else {
        out[n++] = 0x80 | 127;
        proven_put_be64(out + n, len);
        n += 8;
    }

    memcpy(out + n, mask, 4);
    n += 4;

    for (i = 0; i < len; i++) {
        out[n + i] = payload[i] ^ mask[i & 3];
    }

    return n + len;
}


static void
test_ws_frames(void **state)
{
    size_t               n;
    uint8_t              buf[70000], payload[66000];
    proven_ws_frame_t    f;
    proven_ws_message_t  msg = { 0, 0, 1 << 20 };

    (void) state;

    memset(payload, 'p', sizeof(payload));

    /* a whole binary frame: head, then the payload unmasked in place */
    n = client_frame(buf, 0x80 | PROVEN_WS_BINARY, payload, 5);
    assert_int_equal(proven_ws_parse_head(buf, n, &msg, &f), PROVEN_OK);
    assert_true(f.fin);
    assert_int_equal(f.opcode, PROVEN_WS_BINARY);
    assert_int_equal(f.head, 6);
    assert_int_equal(f.len, 5);
    proven_ws_unmask(buf + f.head, 5, buf + f.mask_at);
    assert_memory_equal(buf + f.head, "ppppp", 5);

    /* each prefix of a 16- and a 64-bit length's head needs more bytes */
    n = client_frame(buf, 0x80 | PROVEN_WS_BINARY, payload, 300);
    for (size_t have = 0; have < 8; have++) {
        assert_int_equal(proven_ws_parse_head(buf, have, &msg, &f),
                         PROVEN_AGAIN);
    }
    assert_int_equal(proven_ws_parse_head(buf, 8, &msg, &f), PROVEN_OK);
    assert_int_equal(f.len, 300);

    n = client_frame(buf, 0x80 | PROVEN_WS_BINARY, payload, 65536);
    assert_int_equal(proven_ws_parse_head(buf, 13, &msg, &f),
                     PROVEN_AGAIN);
    assert_int_equal(proven_ws_parse_head(buf, 14, &msg, &f), PROVEN_OK);
    assert_int_equal(f.head, 14);
    assert_int_equal(f.len, 65536);
    (void) n;
}


static void
test_ws_refusals(void **state)
{
    size_t               n;
    uint8_t              buf[512], payload[200];
    proven_ws_frame_t    f;
    proven_ws_message_t  msg = { 0, 0, 100 };

    (void) state;

    memset(payload, 0, sizeof(payload));

    /* unmasked */
    buf[0] = 0x80 | PROVEN_WS_BINARY;
    buf[1] = 1;
    assert_int_equal(proven_ws_parse_head(buf, 3, &msg, &f), PROVEN_ERR);
    assert_int_equal(f.close_code, PROVEN_WS_PROTOCOL_ERROR);
    assert_string_equal(f.reason, "client frames must be masked");

    /* reserved bits */
    n = client_frame(buf, 0x80 | 0x40 | PROVEN_WS_BINARY, payload, 1);
    assert_int_equal(proven_ws_parse_head(buf, n, &msg, &f), PROVEN_ERR);
    assert_string_equal(f.reason, "reserved bits are set");

    /* text is not ours */
    n = client_frame(buf, 0x80 | PROVEN_WS_TEXT, payload, 1);
    assert_int_equal(proven_ws_parse_head(buf, n, &msg, &f), PROVEN_ERR);
    assert_int_equal(f.close_code, PROVEN_WS_UNSUPPORTED);

    /* a ping of 126 bytes, a fragmented ping, a close of 1 byte */
    n = client_frame(buf, 0x80 | PROVEN_WS_PING, payload, 126);
    assert_int_equal(proven_ws_parse_head(buf, n, &msg, &f), PROVEN_ERR);
    n = client_frame(buf, PROVEN_WS_PING, payload, 1);
    assert_int_equal(proven_ws_parse_head(buf, n, &msg, &f), PROVEN_ERR);
    n = client_frame(buf, 0x80 | PROVEN_WS_CLOSE, payload, 1);
    assert_int_equal(proven_ws_parse_head(buf, n, &msg, &f), PROVEN_ERR);
    assert_string_equal(f.reason, "a close frame of 1 byte");

    /* fragments out of order */
    n = client_frame(buf, 0x80 | PROVEN_WS_CONT, payload, 1);
    assert_int_equal(proven_ws_parse_head(buf, n, &msg, &f), PROVEN_ERR);
    msg.open = 1;
    n = client_frame(buf, 0x80 | PROVEN_WS_BINARY, payload, 1);
    assert_int_equal(proven_ws_parse_head(buf, n, &msg, &f), PROVEN_ERR);

    /* past the message's bound, counting what came before */
    msg.open = 1;
    msg.len = 90;
    n = client_frame(buf, 0x80 | PROVEN_WS_CONT, payload, 11);
    assert_int_equal(proven_ws_parse_head(buf, n, &msg, &f), PROVEN_ERR);
    assert_int_equal(f.close_code, PROVEN_WS_TOO_BIG);
    n = client_frame(buf, 0x80 | PROVEN_WS_CONT, payload, 10);
    assert_int_equal(proven_ws_parse_head(buf, n, &msg, &f), PROVEN_OK);

    /* a 64-bit length near its top does not wrap the bound */
    msg.open = 0;
    msg.len = 0;
    buf[0] = 0x80 | PROVEN_WS_BINARY;
    buf[1] = 0x80 | 127;
    memset(buf + 2, 0xff, 8);
    assert_int_equal(proven_ws_parse_head(buf, 14, &msg, &f), PROVEN_ERR);
    assert_int_equal(f.close_code, PROVEN_WS_TOO_BIG);
}


static void
test_ws_server_heads(void **state)
{
    uint8_t  head[PROVEN_WS_HEAD_MAX];

    (void) state;

    assert_int_equal(proven_ws_put_head(head, PROVEN_WS_PONG, 125), 2);
    assert_int_equal(head[0], 0x8a);
    assert_int_equal(head[1], 125);
    assert_int_equal(proven_ws_put_head(head, PROVEN_WS_BINARY, 126), 4);
    assert_int_equal(head[1], 126);
    assert_int_equal(head[2] << 8 | head[3], 126);
    assert_int_equal(proven_ws_put_head(head, PROVEN_WS_BINARY, 70000), 10);
    assert_int_equal(head[1], 127);
    assert_true(proven_get_be64(head + 2) == 70000);
}


#define CT  "multipart/form-data; boundary=XyZ"

static const char *
fields_of(const char *ct, const char *body, proven_multipart_field_t *f)
{
    f[0].name = "nonce";
    f[1].name = "public_key";
    return proven_multipart_fields((const uint8_t *) ct, strlen(ct),
                                   (const uint8_t *) body, strlen(body), f,
                                   2);
}


static void
test_multipart(void **state)
{
    proven_multipart_field_t  f[2];

    (void) state;

    assert_null(fields_of(CT,
        "--XyZ\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\n"
        "abc\r\n--XyZ\r\nContent-Disposition: form-data; "
        "name=\"other\"\r\n\r\nskip\r\n--XyZ\r\nContent-Disposition: "
        "form-data; name=\"public_key\"\r\n\r\nK\r\nK\r\n--XyZ--\r\n", f));
    assert_true(f[0].found && f[1].found);
    assert_int_equal(f[0].len, 3);
    assert_memory_equal(f[0].data, "abc", 3);
    assert_int_equal(f[1].len, 4);
    assert_memory_equal(f[1].data, "K\r\nK", 4);

    /* a quoted boundary, any case of its parameter */
    assert_null(fields_of("multipart/form-data; BOUNDARY=\"XyZ\"",
        "--XyZ\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\n"
        "1\r\n--XyZ--", f));
    assert_true(f[0].found && !f[1].found);

    assert_string_equal(fields_of("multipart/form-data", "--x--", f),
                        "multipart/form-data needs a boundary");
    assert_string_equal(fields_of("multipart/form-data; boundary=", "", f),
                        "the multipart boundary must be 1..70 characters");
    assert_string_equal(fields_of(CT, "--Other\r\n", f),
        "the body does not start with the multipart boundary");
    assert_string_equal(fields_of(CT, "--XyZ\r\nname=\"nonce\"\r\n", f),
                        "a multipart part has no end of headers");
    assert_string_equal(fields_of(CT,
        "--XyZ\r\nname=\"nonce\"\r\n\r\nno end", f),
        "a multipart part is not closed by the boundary");
    assert_string_equal(fields_of(CT,
        "--XyZ\r\nname=\"nonce\"\r\n\r\n1\r\n--XyZ\r\nname=\"nonce\"\r\n\r\n"
        "2\r\n--XyZ--", f),
        "a multipart field is given twice");
    assert_string_equal(fields_of(CT, "--XyZ", f),
                        "a multipart boundary is not followed by CRLF");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_ws_frames),
        cmocka_unit_test(test_ws_refusals),
        cmocka_unit_test(test_ws_server_heads),
        cmocka_unit_test(test_multipart),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
