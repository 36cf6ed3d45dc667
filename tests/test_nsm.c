/*
 * The nsm provider against a fake /dev/nsm: the fake decodes the CBOR
 * request the way the Nitro Secure Module does and answers with a genuine
 * Nitro document, an Error, garbage or too much.  Run from the repository
 * root (fixtures from tests/fixtures, or from $PROVEN_FIXTURES).
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "attest/provider.h"
#include "core/util.h"


#define FAKE_FD      42
#define NITRO_DOC    "nitro-real-2022-09-15.cose"
#define NITRO_MODULE "i-0697c9729fa547b20-enc0183422ede9a5dc8"

typedef enum {
    FAKE_DOCUMENT = 0,      /* {"Attestation": {"document": fixture}} */
    FAKE_ERROR,             /* {"Error": "InvalidArgument"} */
    FAKE_GARBAGE,           /* bytes that are not CBOR */
    FAKE_OVERSIZED,         /* claims more than the buffer holds */
    FAKE_NO_DOCUMENT,       /* {"Attestation": {}} */
    FAKE_EIO                /* the ioctl itself fails */
} fake_mode_t;

static struct {
    fake_mode_t   mode;
    uint8_t      *doc;
    size_t        doc_len;
    int           opened;
    int           closed;
    int           calls;
    int           bad_request;  /* the fake did not understand a request */

    /* what the last Attestation request asked for */
    int           has_nonce, has_user_data, has_public_key;
    uint8_t       nonce[PROVEN_ATT_FIELD_MAX];
    size_t        nonce_len;
} fake;


static int
fake_open(const char *path)
{
    if (strcmp(path, "/nonexistent/nsm") == 0) {
        errno = ENOENT;
        return -1;
    }

    fake.opened++;
    return FAKE_FD;
}


static int
fake_close(int fd)
{
    assert_int_equal(fd, FAKE_FD);
    fake.closed++;
    return 0;
}


/* Serializes item into the caller's response buffer, as the driver does. */
static int
fake_answer(provend_nsm_message_t *msg, cbor_item_t *item)
{
    size_t    len;
    uint8_t  *buf;

    assert_int_equal(proven_cbor_dump(item, &buf, &len), PROVEN_OK);
    cbor_decref(&item);

    if (len > msg->response.iov_len) {
        free(buf);
        errno = EMSGSIZE;
        return -1;
    }

    memcpy(msg->response.iov_base, buf, len);
    msg->response.iov_len = len;
    free(buf);
    return 0;
}


static cbor_item_t *
fake_map1(const char *key, cbor_item_t *value)
{
    cbor_item_t  *map;

    map = cbor_new_definite_map(1);
    assert_non_null(map);
    assert_int_equal(proven_cbor_map_put(map, key, value), PROVEN_OK);
    return map;
}


static void
fake_field(cbor_item_t *args, const char *name, int *has, uint8_t *out,
    size_t *outlen)
{
    uint8_t      *data;
    size_t        len;
    cbor_item_t  *item;

    item = proven_cbor_map_get(args, name);
    if (item == NULL) {
        fake.bad_request++;
        return;
    }

    *has = !cbor_is_null(item);
    if (!*has) {
        return;
    }

    assert_int_equal(proven_cbor_bytes(item, PROVEN_ATT_FIELD_MAX, &data,
                                       &len), PROVEN_OK);
    if (out != NULL) {
        memcpy(out, data, len);
        *outlen = len;
    }
    free(data);
}


static int
fake_ioctl(int fd, unsigned long request, void *arg)
{
    size_t                  ignored;
    cbor_item_t            *req, *args, *body;
    provend_nsm_message_t  *msg;

    assert_int_equal(fd, FAKE_FD);
    assert_true(request == PROVEND_NSM_IOCTL);

    msg = arg;
    fake.calls++;

    assert_true(msg->request.iov_len <= PROVEND_NSM_REQUEST_MAX);
    assert_true(msg->response.iov_len >= 4096);

    req = proven_cbor_load(msg->request.iov_base, msg->request.iov_len,
                           NULL, 0);
    assert_non_null(req);

    /* Unit requests are bare text, like DescribeNSM. */
    if (cbor_isa_string(req)) {
        assert_int_equal(cbor_string_length(req), 11);
        assert_memory_equal(cbor_string_handle(req), "DescribeNSM", 11);
        cbor_decref(&req);

        body = cbor_new_definite_map(2);
        assert_int_equal(proven_cbor_map_put(body, "module_id",
                         cbor_build_string(NITRO_MODULE)), PROVEN_OK);
        assert_int_equal(proven_cbor_map_put(body, "digest",
                         cbor_build_string("SHA384")), PROVEN_OK);
        return fake_answer(msg, fake_map1("DescribeNSM", body));
    }

    args = proven_cbor_map_get(req, "Attestation");
    assert_non_null(args);
    assert_true(cbor_isa_map(args));
    assert_int_equal(cbor_map_size(args), 3);

    fake_field(args, "nonce", &fake.has_nonce, fake.nonce, &fake.nonce_len);
    fake_field(args, "user_data", &fake.has_user_data, NULL, &ignored);
    fake_field(args, "public_key", &fake.has_public_key, NULL, &ignored);
    cbor_decref(&req);

    switch (fake.mode) {

    case FAKE_DOCUMENT:
        body = fake_map1("document",
                         cbor_build_bytestring(fake.doc, fake.doc_len));
        return fake_answer(msg, fake_map1("Attestation", body));

    case FAKE_ERROR:
        return fake_answer(msg, fake_map1("Error",
                                cbor_build_string("InvalidArgument")));

    case FAKE_GARBAGE:
        memcpy(msg->response.iov_base, "\xff\x00garbage", 9);
        msg->response.iov_len = 9;
        return 0;

    case FAKE_OVERSIZED:
        msg->response.iov_len += 1;
        return 0;

    case FAKE_NO_DOCUMENT:
        return fake_answer(msg, fake_map1("Attestation",
                                          cbor_new_definite_map(0)));

    case FAKE_EIO:
        errno = EIO;
        return -1;
    }

    return -1;
}


static const provend_nsm_ops_t  fake_ops = {
    fake_open, fake_ioctl, fake_close
};


static int
setup(void **state)
{
    char         path[4096], err[PROVEN_ERR_LEN];
    const char  *dir;

    (void) state;

    dir = getenv("PROVEN_FIXTURES");
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/fixtures",
             NITRO_DOC);

    if (proven_read_file(path, 1 << 20, &fake.doc, &fake.doc_len, err,
                         sizeof(err)) != PROVEN_OK)
    {
        fprintf(stderr, "fixture: %s\n", err);
        return -1;
    }

    return 0;
}


static int
teardown(void **state)
{
    (void) state;
    free(fake.doc);
    return 0;
}


static void
reset_fake(fake_mode_t mode)
{
    uint8_t  *doc;
    size_t    len;

    doc = fake.doc;
    len = fake.doc_len;
    memset(&fake, 0, sizeof(fake));
    fake.doc = doc;
    fake.doc_len = len;
    fake.mode = mode;
}


static void
test_request_encoding(void **state)
{
    char           err[PROVEN_ERR_LEN];
    size_t         len;
    uint8_t       *buf, *data;
    cbor_item_t   *req, *args;
    proven_buf_t   nonce = { (uint8_t *) "\x01\x02\x03", 3, 1 };
    proven_buf_t   pk = { (uint8_t *) "", 0, 1 };

    (void) state;

    assert_int_equal(provend_nsm_request_encode(&nonce, NULL, &pk, &buf,
                                                &len, err, sizeof(err)),
                     PROVEN_OK);

    req = proven_cbor_load(buf, len, err, sizeof(err));
    free(buf);
    assert_non_null(req);
    assert_true(cbor_isa_map(req));
    assert_int_equal(cbor_map_size(req), 1);

    args = proven_cbor_map_get(req, "Attestation");
    assert_non_null(args);
    assert_int_equal(cbor_map_size(args), 3);

    assert_true(cbor_is_null(proven_cbor_map_get(args, "user_data")));

    assert_int_equal(proven_cbor_bytes(proven_cbor_map_get(args, "nonce"),
                                       16, &data, &len), PROVEN_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(data, "\x01\x02\x03", 3);
    free(data);

    /* An empty public key is a present, empty byte string, not null. */
    assert_true(cbor_isa_bytestring(proven_cbor_map_get(args,
                                                        "public_key")));
    assert_int_equal(cbor_bytestring_length(
                         proven_cbor_map_get(args, "public_key")), 0);
    cbor_decref(&req);

    /* More than an attestation field may hold is refused up front. */
    nonce.len = PROVEN_ATT_FIELD_MAX + 1;
    nonce.data = calloc(1, nonce.len);
    assert_non_null(nonce.data);
    assert_int_equal(provend_nsm_request_encode(&nonce, NULL, NULL, &buf,
                                                &len, err, sizeof(err)),
                     PROVEN_ERR);
    free(nonce.data);
}


static void
test_response_decoding(void **state)
{
    char      err[PROVEN_ERR_LEN];
    size_t    len;
    uint8_t  *doc, big[PROVEND_NSM_RESPONSE_MAX + 1];

    (void) state;

    /* {"Error": "InternalError"} */
    static const uint8_t  error[] =
        "\xa1\x65" "Error" "\x6d" "InternalError";
    /* {"Attestation": {"document": h'0102'}} */
    static const uint8_t  ok[] =
        "\xa1\x6b" "Attestation" "\xa1\x68" "document" "\x42\x01\x02";
    /* the same with indefinite lengths */
    static const uint8_t  indef[] =
        "\xbf\x6b" "Attestation" "\xbf\x68" "document"
        "\x5f\x41\x01\x41\x02\xff" "\xff\xff";
    /* {"Attestation": {"document": "text"}} */
    static const uint8_t  text[] =
        "\xa1\x6b" "Attestation" "\xa1\x68" "document" "\x64" "text";
    /* {"Attestation": {"document": h''}} */
    static const uint8_t  empty[] =
        "\xa1\x6b" "Attestation" "\xa1\x68" "document" "\x40";
    /* "Attestation" */
    static const uint8_t  bare[] = "\x6b" "Attestation";

    assert_int_equal(provend_nsm_response_decode(ok, sizeof(ok) - 1, &doc,
                                                 &len, err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(len, 2);
    assert_memory_equal(doc, "\x01\x02", 2);
    free(doc);

    assert_int_equal(provend_nsm_response_decode(indef, sizeof(indef) - 1,
                                                 &doc, &len, err,
                                                 sizeof(err)), PROVEN_OK);
    assert_int_equal(len, 2);
    free(doc);

    assert_int_equal(provend_nsm_response_decode(error, sizeof(error) - 1,
                                                 &doc, &len, err,
                                                 sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "InternalError"));

    assert_int_equal(provend_nsm_response_decode(text, sizeof(text) - 1,
                                                 &doc, &len, err,
                                                 sizeof(err)), PROVEN_ERR);
    assert_int_equal(provend_nsm_response_decode(empty, sizeof(empty) - 1,
                                                 &doc, &len, err,
                                                 sizeof(err)), PROVEN_ERR);
    assert_int_equal(provend_nsm_response_decode(bare, sizeof(bare) - 1,
                                                 &doc, &len, err,
                                                 sizeof(err)), PROVEN_ERR);

    /* Truncations of a good response never decode. */
    for (len = 0; len < sizeof(ok) - 1; len++) {
        size_t  dlen;

        assert_int_equal(provend_nsm_response_decode(ok, len, &doc, &dlen,
                                                     err, sizeof(err)),
                         PROVEN_ERR);
    }

    memset(big, 0x40, sizeof(big));
    assert_int_equal(provend_nsm_response_decode(big, sizeof(big), &doc,
                                                 &len, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "larger"));
}


static void
test_provider_attests(void **state)
{
    char                   err[PROVEN_ERR_LEN];
    provend_status_t       st;
    provend_provider_t    *p;
    provend_attest_job_t   job;
    proven_buf_t           nonce = { (uint8_t *) "\xaa\xbb", 2, 1 };

    (void) state;

    reset_fake(FAKE_DOCUMENT);

    p = provend_nsm_new("/dev/nsm", &fake_ops, err, sizeof(err));
    assert_non_null(p);
    assert_string_equal(p->name, "nsm");
    assert_int_equal(fake.opened, 1);

    /* DescribeNSM answered at start: the module id is known already. */
    p->status(p, &st);
    assert_string_equal(st.module_id, NITRO_MODULE);
    assert_int_equal(st.pcr_count, 0);

    assert_int_equal(provend_attest_job_init(&job, &nonce, NULL, NULL),
                     PROVEN_OK);
    assert_int_equal(provend_attest_sync(p, &job), PROVEN_OK);
    assert_int_equal(job.doc_len, fake.doc_len);
    assert_memory_equal(job.doc, fake.doc, fake.doc_len);
    provend_attest_job_free(&job);

    assert_int_equal(fake.bad_request, 0);
    assert_true(fake.has_nonce);
    assert_false(fake.has_user_data);
    assert_false(fake.has_public_key);
    assert_int_equal(fake.nonce_len, 2);
    assert_memory_equal(fake.nonce, "\xaa\xbb", 2);

    /* status now shows what the document said. */
    p->status(p, &st);
    assert_string_equal(st.module_id, NITRO_MODULE);
    assert_int_equal(st.pcr_count, 16);
    assert_int_equal(st.pcrs[0].index, 0);
    assert_int_equal(st.pcrs[0].len, 48);
    assert_memory_equal(st.pcrs[0].value, "\xea\x42\x12\xee", 4);

    provend_provider_destroy(p);
    assert_int_equal(fake.closed, 1);
}


static void
expect_attest_error(fake_mode_t mode, const char *reason)
{
    char                  err[PROVEN_ERR_LEN];
    provend_provider_t   *p;
    provend_attest_job_t  job;

    reset_fake(mode);

    p = provend_nsm_new("/dev/nsm", &fake_ops, err, sizeof(err));
    assert_non_null(p);

    assert_int_equal(provend_attest_job_init(&job, NULL, NULL, NULL),
                     PROVEN_OK);
    assert_int_equal(provend_attest_sync(p, &job), PROVEN_ERR);
    assert_null(job.doc);
    if (strstr(job.err, reason) == NULL) {
        fail_msg("error \"%s\" does not mention \"%s\"", job.err, reason);
    }
    provend_attest_job_free(&job);

    assert_false(fake.has_nonce);
    provend_provider_destroy(p);
    assert_int_equal(fake.closed, 1);
}


static void
test_provider_errors(void **state)
{
    (void) state;

    expect_attest_error(FAKE_ERROR, "InvalidArgument");
    expect_attest_error(FAKE_GARBAGE, "");
    expect_attest_error(FAKE_OVERSIZED, "buffer");
    expect_attest_error(FAKE_NO_DOCUMENT, "document");
    expect_attest_error(FAKE_EIO, "ioctl");
}


static void
test_exchange_bounds(void **state)
{
    char      err[PROVEN_ERR_LEN];
    size_t    len;
    uint8_t   req[PROVEND_NSM_REQUEST_MAX + 1], resp[64];

    (void) state;

    reset_fake(FAKE_DOCUMENT);
    memset(req, 0xa0, sizeof(req));

    /* Requests larger than the driver takes never reach it. */
    len = sizeof(resp);
    assert_int_equal(provend_nsm_exchange(&fake_ops, FAKE_FD, req,
                                          sizeof(req), resp, &len, err,
                                          sizeof(err)), PROVEN_ERR);
    assert_int_equal(fake.calls, 0);
}


static void
test_open_fails(void **state)
{
    char                 err[PROVEN_ERR_LEN];
    provend_provider_t  *p;

    (void) state;

    p = provend_nsm_new("/nonexistent/nsm", &fake_ops, err, sizeof(err));
    assert_null(p);
    assert_non_null(strstr(err, "/nonexistent/nsm"));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_request_encoding),
        cmocka_unit_test(test_response_decoding),
        cmocka_unit_test(test_provider_attests),
        cmocka_unit_test(test_provider_errors),
        cmocka_unit_test(test_exchange_bounds),
        cmocka_unit_test(test_open_fails),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
