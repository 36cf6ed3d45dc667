/*
 * Session messages (COSE_Sign1 with EdDSA): what a client written from
 * the protocol alone sends verifies; anything altered, another session's
 * id or another key does not.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <cmocka.h>
#include <openssl/evp.h>

#include "proven.h"


static const uint8_t  session[16] = {
    0x6f, 0x1c, 0x2a, 0x77, 0x90, 0x0b, 0x4e, 0x1d,
    0x8a, 0x55, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
};


static EVP_PKEY *
new_key(void)
{
    EVP_PKEY  *key;

    key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(key);
    return key;
}


/* An unsigned integer in its shortest form (what RFC 8949 asks). */
static cbor_item_t *
uint_item(uint64_t v)
{
    return v <= UINT8_MAX ? cbor_build_uint8((uint8_t) v)
           : v <= UINT16_MAX ? cbor_build_uint16((uint16_t) v)
           : v <= UINT32_MAX ? cbor_build_uint32((uint32_t) v)
           : cbor_build_uint64(v);
}


/* CBOR of item with libcbor, malloc()ed. */
static uint8_t *
dump(cbor_item_t *item, size_t *len)
{
    uint8_t  *buf;
    size_t    size;

    *len = cbor_serialize_alloc(item, &buf, &size);
    assert_true(*len > 0);
    cbor_decref(&item);
    return buf;
}


static cbor_item_t *
bytes(const void *p, size_t len)
{
    cbor_item_t  *b;

    b = cbor_build_bytestring(p, len);
    assert_non_null(b);
    return b;
}


/*
 * A message as the protocol describes it, built with libcbor and signed
 * with OpenSSL directly: none of lib/proven_cose.c takes part.
 */
static uint8_t *
client_message(EVP_PKEY *key, uint64_t seq, const char *payload,
    size_t *len)
{
    size_t        plen, tbslen, siglen;
    uint8_t      *prot, *tbs, sig[64];
    cbor_item_t  *header, *tbs_item, *msg, *unprotected;
    EVP_MD_CTX   *md;

    /* protected: {1: -8, "seq": n}, key 1 first */
    header = cbor_new_definite_map(2);
    assert_true(cbor_map_add(header, (struct cbor_pair) {
        .key = cbor_move(cbor_build_uint8(1)),
        .value = cbor_move(cbor_build_negint8(7)) }));     /* -8 */
    assert_true(cbor_map_add(header, (struct cbor_pair) {
        .key = cbor_move(cbor_build_string("seq")),
        .value = cbor_move(uint_item(seq)) }));
    prot = dump(header, &plen);

    tbs_item = cbor_new_definite_array(4);
    assert_true(cbor_array_push(tbs_item,
                                cbor_move(cbor_build_string("Signature1"))));
    assert_true(cbor_array_push(tbs_item, cbor_move(bytes(prot, plen))));
    assert_true(cbor_array_push(tbs_item,
                                cbor_move(bytes(session, sizeof(session)))));
    assert_true(cbor_array_push(tbs_item,
                                cbor_move(bytes(payload, strlen(payload)))));
    tbs = dump(tbs_item, &tbslen);

    md = EVP_MD_CTX_new();
    siglen = sizeof(sig);
    assert_int_equal(EVP_DigestSignInit(md, NULL, NULL, NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &siglen, tbs, tbslen), 1);
    EVP_MD_CTX_free(md);

    unprotected = cbor_new_definite_map(0);

    msg = cbor_new_definite_array(4);
    assert_true(cbor_array_push(msg, cbor_move(bytes(prot, plen))));
    assert_true(cbor_array_push(msg, cbor_move(unprotected)));
    assert_true(cbor_array_push(msg,
                                cbor_move(bytes(payload, strlen(payload)))));
    assert_true(cbor_array_push(msg, cbor_move(bytes(sig, siglen))));

    free(prot);
    free(tbs);
    return dump(msg, len);
}


static void
test_client_message_verifies(void **state)
{
    char            err[PROVEN_ERR_LEN];
    size_t          len, plen;
    uint8_t        *msg;
    uint64_t        seq;
    EVP_PKEY       *key;
    const uint8_t  *payload;

    (void) state;
    key = new_key();
    msg = client_message(key, 70000, "{\"type\":\"WhoAmI\"}", &len);

    assert_int_equal(proven_cose_verify_eddsa(msg, len, session,
                         sizeof(session), key, &seq, &payload, &plen, err,
                         sizeof(err)), PROVEN_OK);
    assert_int_equal(seq, 70000);
    assert_int_equal(plen, strlen("{\"type\":\"WhoAmI\"}"));
    assert_memory_equal(payload, "{\"type\":\"WhoAmI\"}", plen);

    free(msg);
    EVP_PKEY_free(key);
}


/* What we sign is what the client's code, built from the protocol, sends. */
static void
test_sign_matches_the_protocol(void **state)
{
    size_t    len, ours_len;
    uint8_t  *msg, *ours;
    EVP_PKEY *key;

    (void) state;
    key = new_key();
    msg = client_message(key, 5, "answer", &len);
    assert_int_equal(proven_cose_sign_eddsa((const uint8_t *) "answer", 6, 5,
                         session, sizeof(session), key, &ours, &ours_len,
                         NULL, 0), PROVEN_OK);

    /* Ed25519 is deterministic: the same bytes, signature included */
    assert_int_equal(ours_len, len);
    assert_memory_equal(ours, msg, len);

    free(msg);
    free(ours);
    EVP_PKEY_free(key);
}


static void
test_refusals(void **state)
{
    char            err[PROVEN_ERR_LEN];
    size_t          len, plen, bit;
    uint8_t        *msg, other_session[16];
    uint64_t        seq;
    EVP_PKEY       *key, *stranger;
    const uint8_t  *payload;

    (void) state;
    key = new_key();
    stranger = new_key();
    assert_int_equal(proven_cose_sign_eddsa((const uint8_t *) "hello", 5, 1,
                         session, sizeof(session), key, &msg, &len, err,
                         sizeof(err)), PROVEN_OK);

    /*
     * every single bit flipped: refused, by the parser or the signature,
     * the seq's own byte included (protocol v2 signs it)
     */
    for (bit = 0; bit < len * 8; bit++) {
        msg[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        assert_int_equal(proven_cose_verify_eddsa(msg, len, session,
                             sizeof(session), key, &seq, &payload, &plen,
                             err, sizeof(err)), PROVEN_ERR);
        msg[bit / 8] ^= (uint8_t) (1u << (bit % 8));
    }

    memcpy(other_session, session, sizeof(session));
    other_session[15] ^= 1;
    assert_int_equal(proven_cose_verify_eddsa(msg, len, other_session,
                         sizeof(other_session), key, &seq, &payload, &plen,
                         err, sizeof(err)), PROVEN_ERR);
    assert_string_equal(err, "the signature does not verify");

    assert_int_equal(proven_cose_verify_eddsa(msg, len, session,
                         sizeof(session), stranger, &seq, &payload, &plen,
                         err, sizeof(err)), PROVEN_ERR);

    /* cut short, and with a byte after it */
    assert_int_equal(proven_cose_verify_eddsa(msg, len - 1, session,
                         sizeof(session), key, &seq, &payload, &plen, err,
                         sizeof(err)), PROVEN_ERR);
    msg = realloc(msg, len + 1);
    assert_non_null(msg);
    msg[len] = 0x00;
    assert_int_equal(proven_cose_verify_eddsa(msg, len + 1, session,
                         sizeof(session), key, &seq, &payload, &plen, err,
                         sizeof(err)), PROVEN_ERR);
    assert_string_equal(err, "bytes follow the message");

    /* the untouched message still verifies */
    assert_int_equal(proven_cose_verify_eddsa(msg, len, session,
                         sizeof(session), key, &seq, &payload, &plen, err,
                         sizeof(err)), PROVEN_OK);

    free(msg);
    EVP_PKEY_free(key);
    EVP_PKEY_free(stranger);
}


/* A message with these protected bytes and a zero signature. */
static uint8_t *
with_protected(const uint8_t *prot, size_t plen, size_t *len)
{
    uint8_t  *msg, *p;

    msg = calloc(1, 1 + 1 + plen + 1 + 1 + 2 + 64);
    assert_non_null(msg);
    p = msg;
    *p++ = 0x84;
    *p++ = (uint8_t) (0x40 | plen);
    memcpy(p, prot, plen);
    p += plen;
    *p++ = 0xa0;                        /* {} */
    *p++ = 0x40;                        /* h'' */
    *p++ = 0x58;
    *p++ = 64;
    p += 64;
    *len = (size_t) (p - msg);
    return msg;
}


/* One seq, one encoding, in range: anything else is malformed. */
static void
test_seq_bounds_and_form(void **state)
{
    char                  err[PROVEN_ERR_LEN];
    size_t                len, i;
    uint8_t              *msg;
    proven_cose_eddsa_t   m;
    static const struct {
        uint8_t      prot[16];
        size_t       len;
        int          ok;
        const char  *why;
    } cases[] = {
        { { 0xa2, 0x01, 0x27, 0x63, 's', 'e', 'q', 0x05 }, 8, 1, "" },
        { { 0xa2, 0x01, 0x27, 0x63, 's', 'e', 'q', 0x18, 0x05 }, 9, 0,
          "canonical" },
        { { 0xa2, 0x01, 0x27, 0x63, 's', 'e', 'q', 0x00 }, 8, 0, "2^53" },
        { { 0xa2, 0x01, 0x27, 0x63, 's', 'e', 'q',
            0x1b, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff }, 16, 1,
          "" },
        { { 0xa2, 0x01, 0x27, 0x63, 's', 'e', 'q',
            0x1b, 0x00, 0x20, 0, 0, 0, 0, 0, 0 }, 16, 0, "2^53" },
        { { 0xa2, 0x01, 0x27, 0x63, 's', 'e', 'q',
            0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff }, 16, 0,
          "2^53" },
        { { 0xa2, 0x63, 's', 'e', 'q', 0x05, 0x01, 0x27 }, 8, 0,
          "protected header" },
        { { 0xa1, 0x01, 0x27 }, 3, 0, "protected header" },
        { { 0xa2, 0x01, 0x27, 0x63, 's', 'e', 'q', 0x20 }, 8, 0,
          "unsigned" },
        { { 0xa2, 0x01, 0x27, 0x63, 's', 'e', 'q', 0x05, 0x00 }, 9, 0,
          "unsigned" },
    };

    (void) state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        msg = with_protected(cases[i].prot, cases[i].len, &len);
        assert_int_equal(proven_cose_parse_eddsa(msg, len, &m, err,
                                                 sizeof(err)),
                         cases[i].ok ? PROVEN_OK : PROVEN_ERR);
        if (!cases[i].ok) {
            assert_non_null(strstr(err, cases[i].why));
        }
        free(msg);
    }
}


/* What protocol v2 binds, byte for byte. */
static void
test_bindings(void **state)
{
    size_t   len;
    uint8_t  key[32], ud[PROVEN_SESSION_USER_DATA_LEN];
    uint8_t  msg[PROVEN_IDENTIFY_MESSAGE_MAX];
    char     long_origin[300];

    (void) state;
    memset(key, 0x11, sizeof(key));
    proven_session_user_data(session, key, ud);
    assert_memory_equal(ud, "proven-session-v1", 17);
    assert_memory_equal(ud + 17, session, 16);
    /* SHA-256 of 32 bytes 0x11 */
    assert_int_equal(ud[33], 0x02);
    assert_int_equal(ud[64], 0xdc);

    assert_int_equal(proven_identify_message("hello", "https://a.example",
                                             session, msg, &len), PROVEN_OK);
    assert_int_equal(len, 18 + 1 + 5 + 1 + 17 + 16);
    assert_memory_equal(msg, "proven-identify-v1\x05hello\x11"
                        "https://a.example", 18 + 1 + 5 + 1 + 17);
    assert_memory_equal(msg + len - 16, session, 16);

    assert_int_equal(proven_identify_message("", "", session, msg, &len),
                     PROVEN_OK);
    assert_int_equal(len, 18 + 2 + 16);

    memset(long_origin, 'a', sizeof(long_origin) - 1);
    long_origin[sizeof(long_origin) - 1] = '\0';
    assert_int_equal(proven_identify_message("", long_origin, session, msg,
                                             &len), PROVEN_ERR);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_client_message_verifies),
        cmocka_unit_test(test_sign_matches_the_protocol),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_seq_bounds_and_form),
        cmocka_unit_test(test_bindings),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
