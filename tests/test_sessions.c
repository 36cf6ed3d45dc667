/*
 * provend's sessions without nginx: session.create with a stand-in
 * attestation (its user_data binding the id and the client's key),
 * rpc.call checked on the thread pool (an answer signed for the same seq
 * and bound to the request's bytes, replays, seq out of range, other keys,
 * bad bytes), and the idle sweep.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <uv.h>

#include "proven.h"
#include "sessions/sessions.h"


static uv_loop_t  loop;
static uint8_t    attested_user_data[PROVEN_SESSION_USER_DATA_LEN];
static uint8_t    attested_key[32];
static int        answered;
static uint8_t   *last;            /* the last answer frame */
static size_t     last_len;


static int
fake_attest(void *server, const proven_buf_t *nonce,
    const proven_buf_t *user_data, const proven_buf_t *public_key,
    provend_attest_done_pt done, void *data, char *err, size_t errlen)
{
    (void) server; (void) nonce; (void) err; (void) errlen;
    assert_int_equal(user_data->len, PROVEN_SESSION_USER_DATA_LEN);
    memcpy(attested_user_data, user_data->data, user_data->len);
    assert_int_equal(public_key->len, 32);
    memcpy(attested_key, public_key->data, 32);
    done(data, PROVEN_OK, (const uint8_t *) "DOC", 3, NULL);
    return PROVEN_OK;
}


static void
on_reply(void *ctx, uint8_t *frame, size_t len)
{
    (void) ctx;
    free(last);
    last = frame;
    last_len = len;
    answered++;
}


/* Dispatches op with map (taken) and runs the loop until it is answered. */
static proven_response_t
call(provend_sessions_t *s, const char *op, cbor_item_t *map)
{
    char               err[PROVEN_ERR_LEN];
    int                before;
    proven_request_t   req;
    proven_response_t  res;

    memset(&req, 0, sizeof(req));
    req.id = 7;
    req.has_id = 1;
    snprintf(req.op, sizeof(req.op), "%s", op);
    req.map = map;

    before = answered;
    provend_sessions_dispatch(s, &req, on_reply, NULL);
    while (answered == before) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    cbor_decref(&map);
    assert_int_equal(proven_response_decode(last + PROVEN_FRAME_HEADER,
                                            last_len - PROVEN_FRAME_HEADER,
                                            &res, err, sizeof(err)),
                     PROVEN_OK);
    return res;
}


static EVP_PKEY *
new_key(uint8_t pub[32])
{
    size_t     len = 32;
    EVP_PKEY  *key;

    key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(key);
    assert_int_equal(EVP_PKEY_get_raw_public_key(key, pub, &len), 1);
    return key;
}


/* A session for client: its id into id. */
static void
create(provend_sessions_t *s, const uint8_t *client, uint8_t *id)
{
    cbor_item_t        *map, *v;
    proven_response_t   res;

    map = proven_request_new(0, "session.create");
    assert_int_equal(proven_cbor_map_put(map, "nonce",
                     cbor_build_bytestring((const uint8_t *) "n", 1)),
                     PROVEN_OK);
    assert_int_equal(proven_cbor_map_put(map, "public_key",
                     cbor_build_bytestring(client, 32)), PROVEN_OK);
    res = call(s, "session.create", map);
    assert_true(res.ok);
    v = proven_cbor_map_get(res.result, "session");
    assert_non_null(v);
    assert_int_equal(cbor_bytestring_length(v), 16);
    memcpy(id, cbor_bytestring_handle(v), 16);
    proven_response_free(&res);
}


static uint8_t  *sent;               /* the last message sent */
static size_t    sent_len;


/* rpc.call of {"type": "WhoAmI"} at seq, signed by key. */
static proven_response_t
whoami(provend_sessions_t *s, const uint8_t *id, uint64_t seq,
    EVP_PKEY *key)
{
    char          err[PROVEN_ERR_LEN];
    size_t        len;
    uint8_t      *msg;
    /* {"type": "WhoAmI", "data": null} */
    static const uint8_t  payload[] = {
        0xa2, 0x64, 't', 'y', 'p', 'e', 0x66, 'W', 'h', 'o', 'A', 'm', 'I',
        0x64, 'd', 'a', 't', 'a', 0xf6 };
    cbor_item_t  *map;

    assert_int_equal(proven_cose_sign_eddsa(payload, sizeof(payload), seq,
                                            id, 16, key, &msg, &len, err,
                                            sizeof(err)), PROVEN_OK);
    map = proven_request_new(0, "rpc.call");
    assert_int_equal(proven_cbor_map_put(map, "session",
                     cbor_build_bytestring(id, 16)), PROVEN_OK);
    assert_int_equal(proven_cbor_map_put(map, "message",
                     cbor_build_bytestring(msg, len)), PROVEN_OK);
    free(sent);
    sent = msg;
    sent_len = len;
    return call(s, "rpc.call", map);
}


static provend_sessions_t *
open_rated(unsigned idle_s, unsigned rate, unsigned message_rate)
{
    char                       err[PROVEN_ERR_LEN];
    provend_sessions_t        *s;
    provend_sessions_config_t  cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.loop = &loop;
    cfg.attest = fake_attest;
    cfg.idle_s = idle_s;
    cfg.rate = rate;
    cfg.message_rate = message_rate;
    s = provend_sessions_new(&cfg, err, sizeof(err));
    assert_non_null(s);
    return s;
}


static provend_sessions_t *
open_sessions(unsigned idle_s)
{
    return open_rated(idle_s, 0, 0);
}


static void
test_messages(void **state)
{
    uint8_t             pub[32], other_pub[32], id[16];
    uint64_t            seq;
    EVP_PKEY           *key, *other;
    proven_response_t   res;
    provend_sessions_t *s;
    const uint8_t      *payload;
    size_t              plen;
    char                err[PROVEN_ERR_LEN];
    cbor_item_t        *m;

    (void) state;
    s = open_sessions(0);
    key = new_key(pub);
    other = new_key(other_pub);
    create(s, pub, id);

    /* the document binds the id and this client's key */
    {
        uint8_t  want[PROVEN_SESSION_USER_DATA_LEN];

        proven_session_user_data(id, pub, want);
        assert_memory_equal(attested_user_data, want, sizeof(want));
        assert_memory_equal(attested_user_data, "proven-session-v1", 17);
    }

    res = whoami(s, id, 5, key);
    assert_true(res.ok);
    m = proven_cbor_map_get(res.result, "message");
    assert_non_null(m);
    /*
     * signed by the document's session key for seq 5, over the id and
     * the hash of the very request it answers (and of no other)
     */
    {
        uint8_t    aad[PROVEN_SESSION_ANSWER_AAD_LEN];
        EVP_PKEY  *session_key;

        session_key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL,
                                                  attested_key, 32);
        proven_session_answer_aad(id, sent, sent_len, aad);
        assert_int_equal(proven_cose_verify_eddsa(cbor_bytestring_handle(m),
                         cbor_bytestring_length(m), aad, sizeof(aad),
                         session_key, &seq, &payload, &plen, err,
                         sizeof(err)), PROVEN_OK);
        assert_int_equal(seq, 5);
        assert_non_null(memmem(payload, plen, "anonymous", 9));

        sent[sent_len - 1] ^= 1;
        proven_session_answer_aad(id, sent, sent_len, aad);
        assert_int_equal(proven_cose_verify_eddsa(cbor_bytestring_handle(m),
                         cbor_bytestring_length(m), aad, sizeof(aad),
                         session_key, &seq, &payload, &plen, err,
                         sizeof(err)), PROVEN_ERR);
        assert_int_equal(proven_cose_verify_eddsa(cbor_bytestring_handle(m),
                         cbor_bytestring_length(m), id, 16, session_key,
                         &seq, &payload, &plen, err, sizeof(err)),
                         PROVEN_ERR);
        EVP_PKEY_free(session_key);
    }
    proven_response_free(&res);

    res = whoami(s, id, 5, key);
    assert_false(res.ok);
    assert_string_equal(res.code, "replayed");
    proven_response_free(&res);

    res = whoami(s, id, 6, other);
    assert_false(res.ok);
    assert_string_equal(res.code, "bad_signature");
    proven_response_free(&res);

    /* the refused ones took no seq: 6 by the right key passes */
    res = whoami(s, id, 6, key);
    assert_true(res.ok);
    proven_response_free(&res);

    /* the largest seq a client may use, and nothing past it */
    res = whoami(s, id, PROVEN_COSE_SEQ_MAX, key);
    assert_true(res.ok);
    proven_response_free(&res);
    {
        /* a message signed with seq 2^53, by hand */
        size_t        len;
        uint8_t      *msg;
        cbor_item_t  *map;
        static const uint8_t  big[] = {
            0x84, 0x50, 0xa2, 0x01, 0x27, 0x63, 's', 'e', 'q',
            0x1b, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0xa0, 0x40, 0x58, 0x40 };

        len = sizeof(big) + 64;
        msg = calloc(1, len);
        assert_non_null(msg);
        memcpy(msg, big, sizeof(big));
        map = proven_request_new(0, "rpc.call");
        assert_int_equal(proven_cbor_map_put(map, "session",
                         cbor_build_bytestring(id, 16)), PROVEN_OK);
        assert_int_equal(proven_cbor_map_put(map, "message",
                         cbor_build_bytestring(msg, len)), PROVEN_OK);
        free(msg);
        res = call(s, "rpc.call", map);
        assert_false(res.ok);
        assert_string_equal(res.code, "bad_message");
        assert_non_null(strstr(res.message, "2^53"));
        proven_response_free(&res);
    }

    id[15] ^= 1;
    res = whoami(s, id, 7, key);
    assert_false(res.ok);
    assert_string_equal(res.code, "unknown_session");
    proven_response_free(&res);

    provend_sessions_stop(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    provend_sessions_free(s);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
}


static void
stop_loop(uv_timer_t *timer)
{
    uv_close((uv_handle_t *) timer, NULL);
}


/* Unused sessions are swept: none is lost from the sweep's list. */
static void
test_idle_sweep(void **state)
{
    int                  i;
    uint8_t              pub[32], id[16];
    EVP_PKEY            *key;
    uv_timer_t           wait;
    provend_sessions_t  *s;

    (void) state;
    s = open_sessions(1);
    key = new_key(pub);
    for (i = 0; i < 5; i++) {
        create(s, pub, id);
    }
    assert_int_equal(provend_sessions_count(s), 5);

    uv_timer_init(&loop, &wait);
    uv_timer_start(&wait, stop_loop, 2500, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(provend_sessions_count(s), 0);

    provend_sessions_stop(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    provend_sessions_free(s);
    EVP_PKEY_free(key);
}


/*
 * provend's own limits, whatever nginx lets through: new sessions a
 * second on the node, messages a second per session (bursts of twice).
 */
static void
test_rates(void **state)
{
    int                  i, refused;
    uint8_t              pub[32], id[16];
    EVP_PKEY            *key;
    cbor_item_t         *map;
    proven_response_t    res;
    provend_sessions_t  *s;

    (void) state;
    s = open_rated(0, 2, 3);
    key = new_key(pub);

    /* a burst of 4 (twice the rate), then refused */
    for (i = 0; i < 4; i++) {
        create(s, pub, id);
    }
    map = proven_request_new(0, "session.create");
    assert_int_equal(proven_cbor_map_put(map, "nonce",
                     cbor_build_bytestring((const uint8_t *) "n", 1)),
                     PROVEN_OK);
    assert_int_equal(proven_cbor_map_put(map, "public_key",
                     cbor_build_bytestring(pub, 32)), PROVEN_OK);
    res = call(s, "session.create", map);
    assert_false(res.ok);
    assert_string_equal(res.code, "rate_limited");
    assert_int_equal(proven_status_of(res.code, 500), 429);
    proven_response_free(&res);
    assert_int_equal(provend_sessions_count(s), 4);

    /* messages: a burst of 6, then refused, and the seq is not taken */
    refused = 0;
    for (i = 1; i <= 8; i++) {
        res = whoami(s, id, (uint64_t) i, key);
        if (!res.ok) {
            assert_string_equal(res.code, "rate_limited");
            refused++;
        }
        proven_response_free(&res);
    }
    assert_int_equal(refused, 2);

    provend_sessions_stop(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    provend_sessions_free(s);
    EVP_PKEY_free(key);
}


int
main(void)
{
    int  rc;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_idle_sweep),
        cmocka_unit_test(test_rates),
    };

    uv_loop_init(&loop);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    uv_loop_close(&loop);
    free(last);
    free(sent);
    return rc;
}
