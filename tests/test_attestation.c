/*
 * Attestation documents: the genuine Nitro document, tampered copies, and
 * documents from a dev PKI (root -> intermediate -> leaf) as provend's dev
 * provider makes them.  Run from the repository root (fixtures are read
 * from tests/fixtures, or from $PROVEN_FIXTURES).
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/pem.h>

#include "proven.h"


#define NITRO_DOC         "nitro-real-2022-09-15.cose"
#define NITRO_ROOT        "aws-nitro-root.pem"
#define NITRO_TIMESTAMP   1663263808848ULL
#define NITRO_MODULE_ID   "i-0697c9729fa547b20-enc0183422ede9a5dc8"
#define NITRO_NONCE       "47b5fba6979cbf7e567e2629"
#define NITRO_PUBLIC_KEY  \
    "15db1c67adc9fce91f7da323c708b6e639f0585af8a4a091127f2dfdcfeaf808"
#define NITRO_PCR0                                                         \
    "ea4212ee889ba1b4dbfe744aadecca8b1930de60a3a1ce3b0c79f42b231700fc"     \
    "561c3d9b34f0565ed9eb6f460996624c"
#define NITRO_PCR8                                                         \
    "6f1ff0f2a7a0b1c4e02a3a544eb0ff2dffb8b2922b8908d46365c0f0120934092"    \
    "149ec35814c8d944ef1b8fb564b46c7"


typedef struct {
    EVP_PKEY  *key;
    X509      *cert;
    uint8_t   *der;
    size_t     len;
} dev_cert_t;

static struct {
    uint8_t     *nitro;
    size_t       nitro_len;
    X509        *aws_root;
    dev_cert_t   root, inter, leaf;
} fx;


/* ---- helpers ------------------------------------------------------------- */


static uint8_t *
read_fixture(const char *name, size_t *len)
{
    FILE        *f;
    long         size;
    uint8_t     *buf;
    const char  *dir;
    char         path[1024];

    dir = getenv("PROVEN_FIXTURES");
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : "tests/fixtures",
             name);

    f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s (run from the repository root)\n",
                path);
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);

    buf = malloc((size_t) size);
    if (buf != NULL && fread(buf, 1, (size_t) size, f) != (size_t) size) {
        free(buf);
        buf = NULL;
    }

    fclose(f);
    *len = (size_t) size;
    return buf;
}


static int
dev_cert(dev_cert_t *c, const char *cn, dev_cert_t *issuer, int is_ca)
{
    time_t  now;
    char    err[PROVEN_ERR_LEN];

    now = time(NULL);

    c->key = proven_pki_new_key(err, sizeof(err));
    if (c->key == NULL) {
        return -1;
    }

    c->cert = proven_pki_new_cert(c->key, cn, issuer ? issuer->cert : NULL,
                                  issuer ? issuer->key : NULL, is_ca,
                                  now - 3600, now + 3 * 3600, err,
                                  sizeof(err));
    if (c->cert == NULL) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }

    return proven_pki_cert_der(c->cert, &c->der, &c->len);
}


static void
dev_cert_free(dev_cert_t *c)
{
    EVP_PKEY_free(c->key);
    X509_free(c->cert);
    free(c->der);
}


static int
setup(void **state)
{
    BIO     *bio;
    size_t   len;
    uint8_t *pem;

    (void) state;

    fx.nitro = read_fixture(NITRO_DOC, &fx.nitro_len);
    pem = read_fixture(NITRO_ROOT, &len);
    if (fx.nitro == NULL || pem == NULL) {
        return -1;
    }

    bio = BIO_new_mem_buf(pem, (int) len);
    fx.aws_root = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    free(pem);

    if (fx.aws_root == NULL
        || dev_cert(&fx.root, "proven dev root", NULL, 1) != PROVEN_OK
        || dev_cert(&fx.inter, "proven dev intermediate", &fx.root, 1)
           != PROVEN_OK
        || dev_cert(&fx.leaf, "proven dev leaf", &fx.inter, 0) != PROVEN_OK)
    {
        return -1;
    }

    return 0;
}


static int
teardown(void **state)
{
    (void) state;

    free(fx.nitro);
    X509_free(fx.aws_root);
    dev_cert_free(&fx.root);
    dev_cert_free(&fx.inter);
    dev_cert_free(&fx.leaf);
    return 0;
}


static proven_verify_status_t
verify(const uint8_t *buf, size_t len, const proven_verify_opts_t *opts,
    char *err)
{
    return proven_attestation_verify(buf, len, opts, NULL, err,
                                     PROVEN_ERR_LEN);
}


static void
set_buf(proven_buf_t *b, const uint8_t *data, size_t len)
{
    b->data = (uint8_t *) data;
    b->len = len;
    b->present = data != NULL;
}


/* A dev document's fields; the buffers are borrowed (do not free). */
static void
dev_fields(proven_attestation_doc_t *doc)
{
    size_t  i;

    memset(doc, 0, sizeof(*doc));
    strcpy(doc->module_id, "proven-dev-test");
    strcpy(doc->digest, "SHA384");
    doc->timestamp = (uint64_t) time(NULL) * 1000;

    doc->pcr_count = 16;
    for (i = 0; i < 16; i++) {
        doc->pcrs[i].index = (uint32_t) i;
        doc->pcrs[i].len = 48;
        memset(doc->pcrs[i].value, (int) i + 0x10, 48);
    }

    set_buf(&doc->certificate, fx.leaf.der, fx.leaf.len);
    doc->cabundle_count = 2;
    set_buf(&doc->cabundle[0], fx.root.der, fx.root.len);
    set_buf(&doc->cabundle[1], fx.inter.der, fx.inter.len);
}


static void
sign_payload(const uint8_t *payload, size_t len, uint8_t **out,
    size_t *outlen)
{
    char  err[PROVEN_ERR_LEN];

    assert_int_equal(proven_cose_sign_es384(payload, len, fx.leaf.key, out,
                                            outlen, err, sizeof(err)),
                     PROVEN_OK);
}


static void
dev_document(const proven_attestation_doc_t *doc, uint8_t **out,
    size_t *outlen)
{
    size_t    len;
    uint8_t  *payload;
    char      err[PROVEN_ERR_LEN];

    assert_int_equal(proven_attestation_encode_payload(doc, &payload, &len,
                                                       err, sizeof(err)),
                     PROVEN_OK);
    sign_payload(payload, len, out, outlen);
    free(payload);
}


/* A byte or text string in two chunks when indef, else definite. */
static cbor_item_t *
string_item(const void *data, size_t len, int text, int indef)
{
    size_t        half;
    cbor_item_t  *item, *chunk;

    if (!indef) {
        return text ? cbor_build_stringn(data, len)
                    : cbor_build_bytestring(data, len);
    }

    half = len / 2;
    item = text ? cbor_new_indefinite_string()
                : cbor_new_indefinite_bytestring();

    chunk = text ? cbor_build_stringn(data, half)
                 : cbor_build_bytestring(data, half);
    assert_true(text ? cbor_string_add_chunk(item, cbor_move(chunk))
                     : cbor_bytestring_add_chunk(item, cbor_move(chunk)));

    chunk = text ? cbor_build_stringn((const char *) data + half, len - half)
                 : cbor_build_bytestring((const uint8_t *) data + half,
                                         len - half);
    assert_true(text ? cbor_string_add_chunk(item, cbor_move(chunk))
                     : cbor_bytestring_add_chunk(item, cbor_move(chunk)));

    return item;
}


static void
put(cbor_item_t *map, const char *key, cbor_item_t *value, int indef)
{
    assert_true(cbor_map_add(map, (struct cbor_pair) {
        .key = cbor_move(string_item(key, strlen(key), 1, indef)),
        .value = cbor_move(value) }));
}


static cbor_item_t *
optional_item(const proven_buf_t *b, int indef)
{
    return b->present ? string_item(b->data, b->len, 0, indef)
                      : cbor_new_null();
}


/*
 * The payload built with libcbor items and no bounds, so that tests can make
 * what encode_payload refuses.  indef: every map, array and string of
 * indefinite length, keys in reverse order.
 */
static void
build_payload(const proven_attestation_doc_t *doc, int indef, uint8_t **out,
    size_t *len)
{
    size_t        i;
    cbor_item_t  *map, *pcrs, *bundle, *tail[3];

    map = indef ? cbor_new_indefinite_map() : cbor_new_definite_map(9);
    pcrs = indef ? cbor_new_indefinite_map()
                 : cbor_new_definite_map(doc->pcr_count);
    bundle = indef ? cbor_new_indefinite_array()
                   : cbor_new_definite_array(doc->cabundle_count);

    for (i = 0; i < doc->pcr_count; i++) {
        assert_true(cbor_map_add(pcrs, (struct cbor_pair) {
            .key = cbor_move(cbor_build_uint8((uint8_t) doc->pcrs[i].index)),
            .value = cbor_move(string_item(doc->pcrs[i].value,
                                           doc->pcrs[i].len, 0, indef)) }));
    }

    for (i = 0; i < doc->cabundle_count; i++) {
        assert_true(cbor_array_push(bundle, cbor_move(string_item(
            doc->cabundle[i].data, doc->cabundle[i].len, 0, indef))));
    }

    tail[0] = optional_item(&doc->nonce, indef);
    tail[1] = optional_item(&doc->user_data, indef);
    tail[2] = optional_item(&doc->public_key, indef);

    if (indef) {
        put(map, "nonce", tail[0], indef);
        put(map, "user_data", tail[1], indef);
        put(map, "public_key", tail[2], indef);
        put(map, "cabundle", bundle, indef);
        put(map, "certificate", string_item(doc->certificate.data,
            doc->certificate.len, 0, indef), indef);
        put(map, "pcrs", pcrs, indef);
        put(map, "timestamp", cbor_build_uint64(doc->timestamp), indef);
        put(map, "digest", string_item(doc->digest, strlen(doc->digest), 1,
                                       indef), indef);
        put(map, "module_id", string_item(doc->module_id,
            strlen(doc->module_id), 1, indef), indef);

    } else {
        put(map, "module_id", cbor_build_string(doc->module_id), 0);
        put(map, "digest", cbor_build_string(doc->digest), 0);
        put(map, "timestamp", cbor_build_uint64(doc->timestamp), 0);
        put(map, "pcrs", pcrs, 0);
        put(map, "certificate", string_item(doc->certificate.data,
            doc->certificate.len, 0, 0), 0);
        put(map, "cabundle", bundle, 0);
        put(map, "public_key", tail[2], 0);
        put(map, "user_data", tail[1], 0);
        put(map, "nonce", tail[0], 0);
    }

    assert_int_equal(proven_cbor_dump(map, out, len), PROVEN_OK);
    cbor_decref(&map);
}


static void
hex(const char *text, uint8_t *out, size_t *len)
{
    assert_int_equal(proven_hex_decode(text, strlen(text), out, 128, len),
                     PROVEN_OK);
}


static uint8_t *
find(uint8_t *buf, size_t len, const proven_buf_t *needle)
{
    uint8_t  *p;

    p = memmem(buf, len, needle->data, needle->len);
    assert_non_null(p);
    return p;
}


/* ---- the genuine document ------------------------------------------------ */


static void
test_nitro_verifies(void **state)
{
    char                      *json;
    size_t                     len;
    uint8_t                    want[128];
    proven_attestation_doc_t   doc;
    proven_verify_opts_t       opts;
    char                       err[PROVEN_ERR_LEN];

    (void) state;

    memset(&opts, 0, sizeof(opts));
    opts.at = PROVEN_AT_DOC;

    /* the built-in root */
    assert_int_equal(verify(fx.nitro, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_OK);

    /* the fixture's root, with the document's nonce and PCRs */
    opts.root = fx.aws_root;
    hex(NITRO_NONCE, want, &len);
    opts.nonce = want;
    opts.nonce_len = len;
    opts.pcr_count = 2;
    opts.pcrs[0].index = 0;
    hex(NITRO_PCR0, opts.pcrs[0].value, &opts.pcrs[0].len);
    opts.pcrs[1].index = 8;
    hex(NITRO_PCR8, opts.pcrs[1].value, &opts.pcrs[1].len);

    assert_int_equal(proven_attestation_verify(fx.nitro, fx.nitro_len, &opts,
                                               &doc, err, sizeof(err)),
                     PROVEN_VERIFY_OK);

    assert_string_equal(doc.module_id, NITRO_MODULE_ID);
    assert_string_equal(doc.digest, "SHA384");
    assert_true(doc.timestamp == NITRO_TIMESTAMP);
    assert_int_equal(doc.pcr_count, 16);
    assert_int_equal(doc.pcrs[0].index, 0);
    assert_int_equal(doc.pcrs[15].index, 15);
    assert_memory_equal(doc.pcrs[0].value, opts.pcrs[0].value, 48);
    assert_true(doc.nonce.present);
    assert_int_equal(doc.nonce.len, 12);
    assert_memory_equal(doc.nonce.data, want, 12);
    hex(NITRO_PUBLIC_KEY, want, &len);
    assert_int_equal(doc.public_key.len, 32);
    assert_memory_equal(doc.public_key.data, want, 32);
    assert_int_equal(doc.user_data.len, 250);
    assert_true(doc.cabundle_count >= 1);
    assert_int_equal(doc.signature.len, 96);
    assert_memory_equal(doc.protected_hdr.data, proven_cose_es384_protected,
                        4);

    json = proven_attestation_to_json(&doc, 0);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"module_id\":\"" NITRO_MODULE_ID "\""));
    assert_non_null(strstr(json, "\"timestamp\":1663263808848"));
    assert_non_null(strstr(json, "\"0\":\"" NITRO_PCR0 "\""));
    assert_non_null(strstr(json, "\"nonce\":\"R7X7ppecv35WfiYp\""));
    assert_non_null(strstr(json, "\"cabundle\":[\"MII"));
    free(json);

    json = proven_attestation_to_json(&doc, 1);
    assert_non_null(json);
    assert_non_null(strstr(json, "\n  \"digest\": \"SHA384\""));
    free(json);

    proven_attestation_doc_free(&doc);

    /* CBOR tag 18 in front is accepted too */
    {
        uint8_t  *tagged = malloc(fx.nitro_len + 1);

        assert_non_null(tagged);
        tagged[0] = 0xd2;
        memcpy(tagged + 1, fx.nitro, fx.nitro_len);
        opts.pcr_count = 0;
        opts.nonce = NULL;
        assert_int_equal(verify(tagged, fx.nitro_len + 1, &opts, err),
                         PROVEN_VERIFY_OK);
        free(tagged);

        /* the same tag in its two-byte form */
        tagged = malloc(fx.nitro_len + 2);
        assert_non_null(tagged);
        tagged[0] = 0xd8;
        tagged[1] = 18;
        memcpy(tagged + 2, fx.nitro, fx.nitro_len);
        assert_int_equal(verify(tagged, fx.nitro_len + 2, &opts, err),
                         PROVEN_VERIFY_OK);
        free(tagged);
    }
}


static void
test_nitro_payload_encoding(void **state)
{
    size_t                    len;
    uint8_t                  *payload;
    proven_attestation_doc_t  doc;
    char                      err[PROVEN_ERR_LEN];

    (void) state;

    /* encode_payload writes what Nitro writes, byte for byte */
    assert_int_equal(proven_attestation_decode(fx.nitro, fx.nitro_len, &doc,
                                               err, sizeof(err)), PROVEN_OK);
    assert_int_equal(proven_attestation_encode_payload(&doc, &payload, &len,
                                                       err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(len, doc.payload.len);
    assert_memory_equal(payload, doc.payload.data, len);
    free(payload);
    proven_attestation_doc_free(&doc);
}


static void
test_nitro_time(void **state)
{
    proven_verify_opts_t  opts;
    char                  err[PROVEN_ERR_LEN];

    (void) state;

    memset(&opts, 0, sizeof(opts));

    /* now: its certificates are long expired */
    opts.at = PROVEN_AT_NOW;
    assert_int_equal(verify(fx.nitro, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_EXPIRED);
    assert_non_null(strstr(err, "expired"));

    /* a day before: not yet valid */
    opts.at = PROVEN_AT_MS;
    opts.at_ms = NITRO_TIMESTAMP - 86400000ULL;
    assert_int_equal(verify(fx.nitro, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_EXPIRED);

    /* a minute later: still fine */
    opts.at_ms = NITRO_TIMESTAMP + 60000;
    assert_int_equal(verify(fx.nitro, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_OK);
}


static void
test_nitro_tampered(void **state)
{
    uint8_t                  *copy, *p;
    proven_attestation_doc_t  doc;
    proven_verify_opts_t      opts;
    char                      err[PROVEN_ERR_LEN];

    (void) state;

    memset(&opts, 0, sizeof(opts));
    opts.at = PROVEN_AT_DOC;

    assert_int_equal(proven_attestation_decode(fx.nitro, fx.nitro_len, &doc,
                                               err, sizeof(err)), PROVEN_OK);
    copy = malloc(fx.nitro_len);
    assert_non_null(copy);

    /* a flipped bit in the signature */
    memcpy(copy, fx.nitro, fx.nitro_len);
    copy[fx.nitro_len - 10] ^= 0x01;
    assert_int_equal(verify(copy, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_BAD_SIGNATURE);
    assert_non_null(strstr(err, "signature"));

    /* a changed character inside user_data: still decodes */
    memcpy(copy, fx.nitro, fx.nitro_len);
    p = find(copy, fx.nitro_len, &doc.user_data);
    p[doc.user_data.len / 2] ^= 0x01;
    assert_int_equal(verify(copy, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_BAD_SIGNATURE);

    /* a changed byte in the leaf certificate's signature */
    memcpy(copy, fx.nitro, fx.nitro_len);
    p = find(copy, fx.nitro_len, &doc.certificate);
    p[doc.certificate.len - 2] ^= 0x01;
    assert_int_equal(verify(copy, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_BAD_CERTIFICATE);
    assert_non_null(strstr(err, "signature failure"));

    /* a leaf that no longer parses */
    memcpy(copy, fx.nitro, fx.nitro_len);
    p = find(copy, fx.nitro_len, &doc.certificate);
    p[0] = 0x31;
    assert_int_equal(verify(copy, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_BAD_CERTIFICATE);
    assert_non_null(strstr(err, "parse"));

    /* an intermediate's signature */
    memcpy(copy, fx.nitro, fx.nitro_len);
    p = find(copy, fx.nitro_len, &doc.cabundle[doc.cabundle_count - 1]);
    p[doc.cabundle[doc.cabundle_count - 1].len - 2] ^= 0x01;
    assert_int_equal(verify(copy, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_BAD_CERTIFICATE);

    free(copy);
    proven_attestation_doc_free(&doc);
}


static void
test_nitro_wrong_root(void **state)
{
    proven_verify_opts_t  opts;
    char                  err[PROVEN_ERR_LEN];

    (void) state;

    memset(&opts, 0, sizeof(opts));
    opts.at = PROVEN_AT_DOC;
    opts.root = fx.root.cert;

    assert_int_equal(verify(fx.nitro, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_UNTRUSTED_ROOT);
    assert_non_null(strstr(err, "certificate chain"));
}


static void
test_nitro_claims(void **state)
{
    size_t                len;
    uint8_t               nonce[128];
    proven_verify_opts_t  opts;
    char                  err[PROVEN_ERR_LEN];

    (void) state;

    memset(&opts, 0, sizeof(opts));
    opts.at = PROVEN_AT_DOC;

    hex("00ff", nonce, &len);
    opts.nonce = nonce;
    opts.nonce_len = len;
    assert_int_equal(verify(fx.nitro, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_NONCE_MISMATCH);
    assert_string_equal(err, "nonce mismatch: document has " NITRO_NONCE
                        ", expected 00ff");

    /* a prefix of the right nonce is not the nonce */
    hex(NITRO_NONCE, nonce, &len);
    opts.nonce_len = len - 1;
    assert_int_equal(verify(fx.nitro, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_NONCE_MISMATCH);
    opts.nonce = NULL;

    opts.pcr_count = 1;
    opts.pcrs[0].index = 0;
    hex(NITRO_PCR8, opts.pcrs[0].value, &opts.pcrs[0].len);
    assert_int_equal(verify(fx.nitro, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_PCR_MISMATCH);
    assert_non_null(strstr(err, "PCR0 mismatch"));

    /* an index the document does not have */
    opts.pcrs[0].index = 20;
    assert_int_equal(verify(fx.nitro, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_PCR_MISMATCH);

    /* a shorter value is a mismatch, not a prefix match */
    opts.pcrs[0].index = 0;
    hex(NITRO_PCR0, opts.pcrs[0].value, &opts.pcrs[0].len);
    opts.pcrs[0].len = 32;
    assert_int_equal(verify(fx.nitro, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_PCR_MISMATCH);
}


static void
test_malformed(void **state)
{
    size_t                    i;
    uint8_t                  *copy;
    proven_attestation_doc_t  doc;
    proven_verify_opts_t      opts;
    char                      err[PROVEN_ERR_LEN];
    static const uint8_t      garbage[] = "not an attestation document";
    /* [h'a1013822', {}, h'a0', h'00'] */
    static const uint8_t      tiny[] = {
        0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x41, 0xa0, 0x41, 0x00
    };

    (void) state;

    memset(&opts, 0, sizeof(opts));
    opts.at = PROVEN_AT_DOC;

    assert_int_equal(verify(fx.nitro, fx.nitro_len - 1, &opts, err),
                     PROVEN_VERIFY_MALFORMED);
    assert_non_null(strstr(err, "malformed"));
    assert_int_equal(verify(fx.nitro, fx.nitro_len / 2, &opts, err),
                     PROVEN_VERIFY_MALFORMED);
    assert_int_equal(verify(garbage, sizeof(garbage), &opts, err),
                     PROVEN_VERIFY_MALFORMED);
    assert_int_equal(verify(garbage, 0, &opts, err),
                     PROVEN_VERIFY_MALFORMED);
    assert_int_equal(verify(tiny, sizeof(tiny), &opts, err),
                     PROVEN_VERIFY_MALFORMED);

    copy = malloc(fx.nitro_len + 1);
    assert_non_null(copy);

    /* a trailing byte */
    memcpy(copy, fx.nitro, fx.nitro_len);
    copy[fx.nitro_len] = 0x00;
    assert_int_equal(verify(copy, fx.nitro_len + 1, &opts, err),
                     PROVEN_VERIFY_MALFORMED);

    /* another tag */
    copy[0] = 0xd1;
    memcpy(copy + 1, fx.nitro, fx.nitro_len);
    assert_int_equal(verify(copy, fx.nitro_len + 1, &opts, err),
                     PROVEN_VERIFY_MALFORMED);

    /* another algorithm in the protected header: -35 becomes -36 */
    memcpy(copy, fx.nitro, fx.nitro_len);
    assert_memory_equal(copy + 2, proven_cose_es384_protected, 4);
    copy[5] = 0x23;
    assert_int_equal(verify(copy, fx.nitro_len, &opts, err),
                     PROVEN_VERIFY_MALFORMED);

    /* every truncation fails cleanly, and leaves nothing to free */
    for (i = 0; i < fx.nitro_len; i += 7) {
        assert_int_equal(proven_attestation_decode(fx.nitro, i, &doc, err,
                                                   sizeof(err)), PROVEN_ERR);
        assert_null(doc.payload.data);
    }

    free(copy);
}


/* ---- documents from a dev PKI -------------------------------------------- */


static void
test_dev_document(void **state)
{
    size_t                    len;
    uint8_t                  *buf;
    proven_attestation_doc_t  fields, doc;
    proven_verify_opts_t      opts;
    char                      err[PROVEN_ERR_LEN];
    static const uint8_t      nonce[] = { 0x00, 0xff };

    (void) state;

    dev_fields(&fields);
    set_buf(&fields.nonce, nonce, sizeof(nonce));
    dev_document(&fields, &buf, &len);

    memset(&opts, 0, sizeof(opts));
    opts.root = fx.root.cert;
    opts.nonce = nonce;
    opts.nonce_len = sizeof(nonce);
    opts.pcr_count = 1;
    opts.pcrs[0] = fields.pcrs[4];

    assert_int_equal(proven_attestation_verify(buf, len, &opts, &doc, err,
                                               sizeof(err)),
                     PROVEN_VERIFY_OK);
    assert_string_equal(doc.module_id, "proven-dev-test");
    assert_false(doc.user_data.present);
    assert_false(doc.public_key.present);
    proven_attestation_doc_free(&doc);

    opts.at = PROVEN_AT_DOC;
    assert_int_equal(verify(buf, len, &opts, err), PROVEN_VERIFY_OK);

    /* the dev root is never the default */
    opts.root = NULL;
    assert_int_equal(verify(buf, len, &opts, err),
                     PROVEN_VERIFY_UNTRUSTED_ROOT);
    opts.root = fx.aws_root;
    assert_int_equal(verify(buf, len, &opts, err),
                     PROVEN_VERIFY_UNTRUSTED_ROOT);

    /* the intermediate alone is not a root either */
    opts.root = fx.inter.cert;
    assert_int_equal(verify(buf, len, &opts, err),
                     PROVEN_VERIFY_UNTRUSTED_ROOT);

    /* two hours after the leaf expired */
    opts.root = fx.root.cert;
    opts.at = PROVEN_AT_MS;
    opts.at_ms = ((uint64_t) time(NULL) + 5 * 3600) * 1000;
    assert_int_equal(verify(buf, len, &opts, err), PROVEN_VERIFY_EXPIRED);

    free(buf);

    /* signed by a key that is not the leaf's */
    {
        EVP_PKEY  *other = proven_pki_new_key(err, sizeof(err));
        uint8_t   *payload;
        size_t     plen;

        assert_non_null(other);
        assert_int_equal(proven_attestation_encode_payload(&fields, &payload,
                                                           &plen, err,
                                                           sizeof(err)),
                         PROVEN_OK);
        assert_int_equal(proven_cose_sign_es384(payload, plen, other, &buf,
                                                &len, err, sizeof(err)),
                         PROVEN_OK);
        opts.at = PROVEN_AT_NOW;
        assert_int_equal(verify(buf, len, &opts, err),
                         PROVEN_VERIFY_BAD_SIGNATURE);
        free(buf);
        free(payload);
        EVP_PKEY_free(other);
    }
}


static void
test_indefinite_reencoding(void **state)
{
    size_t                    len, plen;
    uint8_t                  *payload, *buf;
    proven_attestation_doc_t  nitro, fields, doc;
    proven_verify_opts_t      opts;
    char                      err[PROVEN_ERR_LEN];

    (void) state;

    /* the genuine document's claims, re-encoded with indefinite lengths
     * everywhere and keys in another order, re-signed by the dev PKI */
    assert_int_equal(proven_attestation_decode(fx.nitro, fx.nitro_len,
                                               &nitro, err, sizeof(err)),
                     PROVEN_OK);

    fields = nitro;
    set_buf(&fields.certificate, fx.leaf.der, fx.leaf.len);
    fields.cabundle_count = 2;
    set_buf(&fields.cabundle[0], fx.root.der, fx.root.len);
    set_buf(&fields.cabundle[1], fx.inter.der, fx.inter.len);

    build_payload(&fields, 1, &payload, &plen);
    assert_true(payload[0] == 0xbf);
    sign_payload(payload, plen, &buf, &len);

    memset(&opts, 0, sizeof(opts));
    opts.root = fx.root.cert;
    opts.nonce = nitro.nonce.data;
    opts.nonce_len = nitro.nonce.len;
    opts.pcr_count = 2;
    opts.pcrs[0] = nitro.pcrs[0];
    opts.pcrs[1] = nitro.pcrs[8];

    assert_int_equal(proven_attestation_verify(buf, len, &opts, &doc, err,
                                               sizeof(err)),
                     PROVEN_VERIFY_OK);
    assert_string_equal(doc.module_id, NITRO_MODULE_ID);
    assert_true(doc.timestamp == NITRO_TIMESTAMP);
    assert_int_equal(doc.pcr_count, 16);
    assert_int_equal(doc.user_data.len, nitro.user_data.len);
    assert_memory_equal(doc.user_data.data, nitro.user_data.data,
                        nitro.user_data.len);
    assert_memory_equal(doc.public_key.data, nitro.public_key.data, 32);
    /* the signature covers the bytes as sent, not a re-encoding */
    assert_int_equal(doc.payload.len, plen);
    assert_memory_equal(doc.payload.data, payload, plen);
    proven_attestation_doc_free(&doc);

    opts.root = NULL;
    assert_int_equal(verify(buf, len, &opts, err),
                     PROVEN_VERIFY_UNTRUSTED_ROOT);

    free(buf);
    free(payload);
    proven_attestation_doc_free(&nitro);
}


static void
test_field_sizes(void **state)
{
    int                       indef;
    size_t                    len, plen;
    uint8_t                  *buf, *payload, *big;
    proven_attestation_doc_t  fields, doc;
    proven_verify_opts_t      opts;
    char                      err[PROVEN_ERR_LEN];

    (void) state;

    big = malloc(PROVEN_ATT_FIELD_MAX + 1);
    assert_non_null(big);
    memset(big, 0xab, PROVEN_ATT_FIELD_MAX + 1);

    memset(&opts, 0, sizeof(opts));
    opts.root = fx.root.cert;

    /* null everywhere, then expecting a nonce is a mismatch */
    dev_fields(&fields);
    dev_document(&fields, &buf, &len);
    assert_int_equal(proven_attestation_verify(buf, len, &opts, &doc, err,
                                               sizeof(err)),
                     PROVEN_VERIFY_OK);
    assert_false(doc.nonce.present);
    assert_null(doc.nonce.data);
    proven_attestation_doc_free(&doc);

    opts.nonce = big;
    opts.nonce_len = 0;
    assert_int_equal(verify(buf, len, &opts, err),
                     PROVEN_VERIFY_NONCE_MISMATCH);
    assert_non_null(strstr(err, "none"));
    opts.nonce = NULL;
    free(buf);

    /* empty byte strings are present and empty */
    set_buf(&fields.nonce, big, 0);
    dev_document(&fields, &buf, &len);
    assert_int_equal(proven_attestation_verify(buf, len, &opts, &doc, err,
                                               sizeof(err)),
                     PROVEN_VERIFY_OK);
    assert_true(doc.nonce.present);
    assert_int_equal(doc.nonce.len, 0);
    proven_attestation_doc_free(&doc);
    free(buf);

    /* the maximum, definite and chunked */
    for (indef = 0; indef <= 1; indef++) {
        set_buf(&fields.nonce, big, PROVEN_ATT_FIELD_MAX);
        set_buf(&fields.user_data, big, PROVEN_ATT_FIELD_MAX);
        set_buf(&fields.public_key, big, PROVEN_ATT_FIELD_MAX);
        build_payload(&fields, indef, &payload, &plen);
        sign_payload(payload, plen, &buf, &len);
        free(payload);

        opts.nonce = big;
        opts.nonce_len = PROVEN_ATT_FIELD_MAX;
        assert_int_equal(proven_attestation_verify(buf, len, &opts, &doc,
                                                   err, sizeof(err)),
                         PROVEN_VERIFY_OK);
        assert_int_equal(doc.user_data.len, PROVEN_ATT_FIELD_MAX);
        assert_int_equal(doc.public_key.len, PROVEN_ATT_FIELD_MAX);
        proven_attestation_doc_free(&doc);
        opts.nonce = NULL;
        free(buf);
    }

    /* one byte more is refused at decode, for each field */
    set_buf(&fields.nonce, NULL, 0);
    set_buf(&fields.user_data, NULL, 0);
    set_buf(&fields.public_key, NULL, 0);

    for (indef = 0; indef < 3; indef++) {
        proven_buf_t  *b = indef == 0 ? &fields.nonce
                           : indef == 1 ? &fields.user_data
                           : &fields.public_key;

        set_buf(b, big, PROVEN_ATT_FIELD_MAX + 1);
        assert_int_equal(proven_attestation_encode_payload(&fields, &payload,
                                                           &plen, err,
                                                           sizeof(err)),
                         PROVEN_ERR);
        build_payload(&fields, indef == 1, &payload, &plen);
        sign_payload(payload, plen, &buf, &len);
        free(payload);

        assert_int_equal(proven_attestation_decode(buf, len, &doc, err,
                                                   sizeof(err)), PROVEN_ERR);
        assert_non_null(strstr(err, "at most 1024"));
        assert_int_equal(verify(buf, len, &opts, err),
                         PROVEN_VERIFY_MALFORMED);
        free(buf);
        set_buf(b, NULL, 0);
    }

    /* a float where null or bytes belong is malformed, not a crash */
    {
        cbor_item_t  *map, *item;
        uint8_t      *raw;
        size_t        rawlen;

        build_payload(&fields, 0, &payload, &plen);
        map = proven_cbor_load(payload, plen, err, sizeof(err));
        assert_non_null(map);
        item = proven_cbor_map_get(map, "nonce");
        assert_non_null(item);
        free(payload);

        /* rebuild with the nonce value replaced by the float 1.5 */
        cbor_map_handle(map)[8].value = cbor_build_float2(1.5f);
        cbor_decref(&item);
        assert_int_equal(proven_cbor_dump(map, &raw, &rawlen), PROVEN_OK);
        sign_payload(raw, rawlen, &buf, &len);
        assert_int_equal(verify(buf, len, &opts, err),
                         PROVEN_VERIFY_MALFORMED);
        free(raw);
        free(buf);
        cbor_decref(&map);
    }

    free(big);
}


static void
test_debug_pcrs_and_bad_pcrs(void **state)
{
    size_t                    len, plen;
    uint8_t                  *buf, *payload;
    proven_attestation_doc_t  fields, doc;
    proven_verify_opts_t      opts;
    char                      err[PROVEN_ERR_LEN];

    (void) state;

    memset(&opts, 0, sizeof(opts));
    opts.root = fx.root.cert;

    /* debug mode: PCR0-2 are all zero */
    dev_fields(&fields);
    memset(fields.pcrs[0].value, 0, 48);
    memset(fields.pcrs[1].value, 0, 48);
    memset(fields.pcrs[2].value, 0, 48);
    dev_document(&fields, &buf, &len);

    opts.pcr_count = 1;
    opts.pcrs[0] = fields.pcrs[1];
    assert_int_equal(proven_attestation_verify(buf, len, &opts, &doc, err,
                                               sizeof(err)),
                     PROVEN_VERIFY_OK);
    assert_int_equal(doc.pcrs[0].len, 48);
    assert_int_equal(doc.pcrs[2].value[47], 0);
    proven_attestation_doc_free(&doc);
    free(buf);

    /* a PCR of the wrong size for SHA384 */
    fields.pcrs[3].len = 32;
    build_payload(&fields, 0, &payload, &plen);
    sign_payload(payload, plen, &buf, &len);
    assert_int_equal(verify(buf, len, &opts, err), PROVEN_VERIFY_MALFORMED);
    assert_non_null(strstr(err, "PCR3"));
    free(payload);
    free(buf);
    fields.pcrs[3].len = 48;

    /* a duplicated PCR index */
    fields.pcrs[3].index = 2;
    build_payload(&fields, 0, &payload, &plen);
    sign_payload(payload, plen, &buf, &len);
    assert_int_equal(verify(buf, len, &opts, err), PROVEN_VERIFY_MALFORMED);
    assert_non_null(strstr(err, "twice"));
    free(payload);
    free(buf);
    fields.pcrs[3].index = 3;

    /* an index out of range */
    fields.pcrs[15].index = PROVEN_ATT_PCRS_MAX;
    build_payload(&fields, 0, &payload, &plen);
    sign_payload(payload, plen, &buf, &len);
    assert_int_equal(verify(buf, len, &opts, err), PROVEN_VERIFY_MALFORMED);
    free(payload);
    free(buf);
    fields.pcrs[15].index = 15;

    /* PCRs out of order still come out ordered */
    {
        proven_pcr_t  tmp = fields.pcrs[0];

        fields.pcrs[0] = fields.pcrs[15];
        fields.pcrs[15] = tmp;
        build_payload(&fields, 1, &payload, &plen);
        sign_payload(payload, plen, &buf, &len);
        assert_int_equal(proven_attestation_decode(buf, len, &doc, err,
                                                   sizeof(err)), PROVEN_OK);
        assert_int_equal(doc.pcrs[0].index, 0);
        assert_int_equal(doc.pcrs[15].index, 15);
        proven_attestation_doc_free(&doc);
        free(payload);
        free(buf);
    }
}


static void
test_status_names(void **state)
{
    (void) state;

    assert_string_equal(proven_verify_status_name(PROVEN_VERIFY_OK), "ok");
    assert_string_equal(proven_verify_status_name(PROVEN_VERIFY_MALFORMED),
                        "malformed");
    assert_string_equal(
        proven_verify_status_name(PROVEN_VERIFY_UNTRUSTED_ROOT),
        "untrusted_root");
    assert_string_equal(proven_verify_status_name(PROVEN_VERIFY_INTERNAL),
                        "internal");
    assert_string_equal(proven_verify_status_name(99), "unknown");
}


static void
test_builtin_root(void **state)
{
    X509  *root;

    (void) state;

    root = proven_aws_nitro_root();
    assert_non_null(root);
    assert_int_equal(X509_cmp(root, fx.aws_root), 0);
    X509_free(root);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_builtin_root),
        cmocka_unit_test(test_nitro_verifies),
        cmocka_unit_test(test_nitro_payload_encoding),
        cmocka_unit_test(test_nitro_time),
        cmocka_unit_test(test_nitro_tampered),
        cmocka_unit_test(test_nitro_wrong_root),
        cmocka_unit_test(test_nitro_claims),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_dev_document),
        cmocka_unit_test(test_indefinite_reencoding),
        cmocka_unit_test(test_field_sizes),
        cmocka_unit_test(test_debug_pcrs_and_bad_pcrs),
        cmocka_unit_test(test_status_names),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
