/*
 * AWS Nitro attestation documents: decode, encode the payload, verify.
 * The format is Nitro's own (DESIGN "Attestation"), so genuine documents
 * and the dev provider's documents go through the same code.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>

#include "proven.h"


#define PROVEN_COSE_TAG_SIGN1    18
#define PROVEN_COSE_ALG_ES384    (-35)
#define PROVEN_ATT_PROTECTED_MAX 64
#define PROVEN_ATT_SIG_LEN       96

/* How many bytes of a mismatching value the error message shows. */
#define PROVEN_ATT_SHOW          32


/* tests/fixtures/aws-nitro-root.pem, SHA-256 641A0321...BB5B */
static const char  proven_aws_nitro_root_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL\n"
    "MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD\n"
    "VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4\n"
    "MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL\n"
    "DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG\n"
    "BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb\n"
    "48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE\n"
    "h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF\n"
    "R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC\n"
    "MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW\n"
    "rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N\n"
    "IwLz3/Y=\n"
    "-----END CERTIFICATE-----\n";


static const char  *proven_verify_status_names[] = {
    "ok",
    "malformed",
    "bad_signature",
    "bad_certificate",
    "untrusted_root",
    "expired",
    "nonce_mismatch",
    "pcr_mismatch",
    "internal",
    "tls_unbound",
};


/* The payload keys, in the order Nitro writes them. */
enum {
    PROVEN_ATT_MODULE_ID = 0,
    PROVEN_ATT_DIGEST,
    PROVEN_ATT_TIMESTAMP,
    PROVEN_ATT_PCRS,
    PROVEN_ATT_CERTIFICATE,
    PROVEN_ATT_CABUNDLE,
    PROVEN_ATT_PUBLIC_KEY,
    PROVEN_ATT_USER_DATA,
    PROVEN_ATT_NONCE,
    PROVEN_ATT_KEYS
};

static const char  *proven_att_keys[PROVEN_ATT_KEYS] = {
    "module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle",
    "public_key", "user_data", "nonce"
};


static void proven_att_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


static void
proven_att_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}


const char *
proven_verify_status_name(proven_verify_status_t status)
{
    if ((size_t) status
        >= sizeof(proven_verify_status_names) / sizeof(char *))
    {
        return "unknown";
    }

    return proven_verify_status_names[status];
}


X509 *
proven_aws_nitro_root(void)
{
    BIO   *bio;
    X509  *root;

    bio = BIO_new_mem_buf(proven_aws_nitro_root_pem, -1);
    if (bio == NULL) {
        return NULL;
    }

    root = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);

    return root;
}


/* ---- decode -------------------------------------------------------------- */


static int
proven_att_buf(const cbor_item_t *item, size_t min, size_t max,
    proven_buf_t *buf)
{
    if (proven_cbor_bytes(item, max, &buf->data, &buf->len) != PROVEN_OK
        || buf->len < min)
    {
        free(buf->data);
        buf->data = NULL;
        buf->len = 0;
        return PROVEN_ERR;
    }

    buf->present = 1;
    return PROVEN_OK;
}


/* Optional fields: absent or null leave buf empty. */
static int
proven_att_optional(const cbor_item_t *item, proven_buf_t *buf)
{
    if (proven_cbor_is_null(item)) {
        return PROVEN_OK;
    }

    return proven_att_buf(item, 0, PROVEN_ATT_FIELD_MAX, buf);
}


/* module_id and digest are printable ASCII in every genuine document. */
static int
proven_att_ascii(const cbor_item_t *item, char *out, size_t size)
{
    char    *text;
    size_t   i, len;

    if (proven_cbor_text(item, size - 1, &text, &len) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    for (i = 0; i < len; i++) {
        if (text[i] < 0x20 || text[i] > 0x7e) {
            free(text);
            return PROVEN_ERR;
        }
    }

    memcpy(out, text, len + 1);
    free(text);

    return len > 0 ? PROVEN_OK : PROVEN_ERR;
}


static int
proven_att_pcrs(const cbor_item_t *item, proven_attestation_doc_t *doc,
    char *err, size_t errlen)
{
    size_t             i, j, n, len;
    uint8_t           *value;
    uint64_t           index;
    proven_pcr_t       pcr;
    struct cbor_pair  *pairs;

    if (!cbor_isa_map(item)) {
        proven_att_err(err, errlen, "\"pcrs\" is not a map");
        return PROVEN_ERR;
    }

    n = cbor_map_size(item);
    if (n == 0 || n > PROVEN_ATT_PCRS_MAX) {
        proven_att_err(err, errlen, "%zu PCRs (1..%d)", n,
                       PROVEN_ATT_PCRS_MAX);
        return PROVEN_ERR;
    }

    pairs = cbor_map_handle(item);

    for (i = 0; i < n; i++) {
        if (proven_cbor_uint(pairs[i].key, &index) != PROVEN_OK
            || index >= PROVEN_ATT_PCRS_MAX)
        {
            proven_att_err(err, errlen, "PCR index is not an integer "
                           "below %d", PROVEN_ATT_PCRS_MAX);
            return PROVEN_ERR;
        }

        if (proven_cbor_bytes(pairs[i].value, PROVEN_ATT_PCR_MAX, &value,
                              &len) != PROVEN_OK)
        {
            proven_att_err(err, errlen, "PCR%u is not a byte string of at "
                           "most %d bytes", (unsigned) index,
                           PROVEN_ATT_PCR_MAX);
            return PROVEN_ERR;
        }

        pcr.index = (uint32_t) index;
        pcr.len = len;
        memcpy(pcr.value, value, len);
        free(value);

        /* insert in index order; any key order is valid CBOR */
        for (j = doc->pcr_count; j > 0; j--) {
            if (doc->pcrs[j - 1].index == pcr.index) {
                proven_att_err(err, errlen, "PCR%u appears twice",
                               pcr.index);
                return PROVEN_ERR;
            }

            if (doc->pcrs[j - 1].index < pcr.index) {
                break;
            }

            doc->pcrs[j] = doc->pcrs[j - 1];
        }

        doc->pcrs[j] = pcr;
        doc->pcr_count++;
    }

    return PROVEN_OK;
}


static int
proven_att_cabundle(const cbor_item_t *item, proven_attestation_doc_t *doc,
    char *err, size_t errlen)
{
    size_t         i, n;
    cbor_item_t  **certs;

    if (!cbor_isa_array(item)) {
        proven_att_err(err, errlen, "\"cabundle\" is not an array");
        return PROVEN_ERR;
    }

    n = cbor_array_size(item);
    if (n == 0 || n > PROVEN_ATT_CABUNDLE_MAX) {
        proven_att_err(err, errlen, "%zu certificates in \"cabundle\" "
                       "(1..%d)", n, PROVEN_ATT_CABUNDLE_MAX);
        return PROVEN_ERR;
    }

    certs = cbor_array_handle(item);

    for (i = 0; i < n; i++) {
        if (proven_att_buf(certs[i], 1, PROVEN_ATT_CERT_MAX,
                           &doc->cabundle[i]) != PROVEN_OK)
        {
            proven_att_err(err, errlen, "cabundle[%zu] is not a byte "
                           "string of 1..%d bytes", i, PROVEN_ATT_CERT_MAX);
            return PROVEN_ERR;
        }
        doc->cabundle_count++;
    }

    return PROVEN_OK;
}


static int
proven_att_field(int key, const cbor_item_t *value,
    proven_attestation_doc_t *doc, char *err, size_t errlen)
{
    proven_buf_t  *optional;

    switch (key) {

    case PROVEN_ATT_MODULE_ID:
        if (proven_att_ascii(value, doc->module_id, sizeof(doc->module_id))
            != PROVEN_OK)
        {
            proven_att_err(err, errlen, "\"module_id\" is not printable "
                           "text of 1..%d bytes", PROVEN_ATT_MODULE_ID_MAX);
            return PROVEN_ERR;
        }
        return PROVEN_OK;

    case PROVEN_ATT_DIGEST:
        if (proven_att_ascii(value, doc->digest, sizeof(doc->digest))
            != PROVEN_OK)
        {
            proven_att_err(err, errlen, "\"digest\" is not short text");
            return PROVEN_ERR;
        }
        return PROVEN_OK;

    case PROVEN_ATT_TIMESTAMP:
        if (proven_cbor_uint(value, &doc->timestamp) != PROVEN_OK
            || doc->timestamp == 0 || doc->timestamp > INT64_MAX)
        {
            proven_att_err(err, errlen, "\"timestamp\" is not a positive "
                           "integer");
            return PROVEN_ERR;
        }
        return PROVEN_OK;

    case PROVEN_ATT_PCRS:
        return proven_att_pcrs(value, doc, err, errlen);

    case PROVEN_ATT_CERTIFICATE:
        if (proven_att_buf(value, 1, PROVEN_ATT_CERT_MAX, &doc->certificate)
            != PROVEN_OK)
        {
            proven_att_err(err, errlen, "\"certificate\" is not a byte "
                           "string of 1..%d bytes", PROVEN_ATT_CERT_MAX);
            return PROVEN_ERR;
        }
        return PROVEN_OK;

    case PROVEN_ATT_CABUNDLE:
        return proven_att_cabundle(value, doc, err, errlen);

    default:
        optional = key == PROVEN_ATT_PUBLIC_KEY ? &doc->public_key
                   : key == PROVEN_ATT_USER_DATA ? &doc->user_data
                   : &doc->nonce;

        if (proven_att_optional(value, optional) != PROVEN_OK) {
            proven_att_err(err, errlen, "\"%s\" is neither null nor a byte "
                           "string of at most %d bytes",
                           proven_att_keys[key], PROVEN_ATT_FIELD_MAX);
            return PROVEN_ERR;
        }
        return PROVEN_OK;
    }
}


static size_t
proven_att_digest_len(const char *digest)
{
    if (strcmp(digest, "SHA384") == 0) {
        return 48;
    }

    if (strcmp(digest, "SHA256") == 0) {
        return 32;
    }

    if (strcmp(digest, "SHA512") == 0) {
        return 64;
    }

    return 0;
}


static int
proven_att_payload(proven_attestation_doc_t *doc, char *err, size_t errlen)
{
    int                k, rc;
    char              *name;
    size_t             i, n, namelen, pcrlen;
    unsigned           seen;
    cbor_item_t       *map;
    struct cbor_pair  *pairs;
    char               cause[PROVEN_ERR_LEN];

    rc = PROVEN_ERR;
    seen = 0;

    map = proven_cbor_load(doc->payload.data, doc->payload.len, cause,
                           sizeof(cause));
    if (map == NULL) {
        proven_att_err(err, errlen, "payload: %s", cause);
        return PROVEN_ERR;
    }

    if (!cbor_isa_map(map)) {
        proven_att_err(err, errlen, "payload is not a map");
        goto failed;
    }

    pairs = cbor_map_handle(map);
    n = cbor_map_size(map);

    for (i = 0; i < n; i++) {
        /* Keys we do not know are left alone, as Nitro may add some. */
        if (proven_cbor_text(pairs[i].key, 16, &name, &namelen)
            != PROVEN_OK)
        {
            continue;
        }

        for (k = 0; k < PROVEN_ATT_KEYS; k++) {
            if (strcmp(name, proven_att_keys[k]) == 0) {
                break;
            }
        }

        free(name);

        if (k == PROVEN_ATT_KEYS) {
            continue;
        }

        /* A duplicate key could read differently in another decoder. */
        if (seen & (1u << k)) {
            proven_att_err(err, errlen, "payload has \"%s\" twice",
                           proven_att_keys[k]);
            goto failed;
        }

        seen |= 1u << k;

        if (proven_att_field(k, pairs[i].value, doc, cause, sizeof(cause))
            != PROVEN_OK)
        {
            proven_att_err(err, errlen, "payload: %s", cause);
            goto failed;
        }
    }

    for (k = 0; k <= PROVEN_ATT_CABUNDLE; k++) {
        if (!(seen & (1u << k))) {
            proven_att_err(err, errlen, "payload lacks \"%s\"",
                           proven_att_keys[k]);
            goto failed;
        }
    }

    pcrlen = proven_att_digest_len(doc->digest);
    if (pcrlen == 0) {
        proven_att_err(err, errlen, "unknown digest \"%s\"", doc->digest);
        goto failed;
    }

    for (i = 0; i < doc->pcr_count; i++) {
        if (doc->pcrs[i].len != pcrlen) {
            proven_att_err(err, errlen, "PCR%u has %zu bytes, %s needs %zu",
                           doc->pcrs[i].index, doc->pcrs[i].len,
                           doc->digest, pcrlen);
            goto failed;
        }
    }

    rc = PROVEN_OK;

failed:

    cbor_decref(&map);
    return rc;
}


static int
proven_att_protected(const proven_buf_t *prot, char *err, size_t errlen)
{
    int           ok;
    cbor_item_t  *map, *alg;

    map = proven_cbor_load(prot->data, prot->len, NULL, 0);
    if (map == NULL) {
        proven_att_err(err, errlen, "protected header is not CBOR");
        return PROVEN_ERR;
    }

    alg = proven_cbor_map_get_int(map, 1);
    ok = alg != NULL && cbor_isa_negint(alg)
         && cbor_get_int(alg) == (uint64_t) (-PROVEN_COSE_ALG_ES384 - 1);

    cbor_decref(&map);

    if (!ok) {
        proven_att_err(err, errlen, "protected header does not say ES384 "
                       "(alg -35)");
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


int
proven_attestation_decode(const uint8_t *buf, size_t len,
    proven_attestation_doc_t *doc, char *err, size_t errlen)
{
    int            rc;
    cbor_item_t   *root, *inner, **parts;
    char           cause[PROVEN_ERR_LEN];

    memset(doc, 0, sizeof(*doc));
    rc = PROVEN_ERR;
    inner = NULL;

    /* libcbor 0.8 refuses the one-byte tags 6..20, COSE_Sign1's 18 among
     * them: take that header off here (the longer 0xd8 0x12 form works). */
    if (len > 1 && buf[0] == 0xc0 + PROVEN_COSE_TAG_SIGN1) {
        buf++;
        len--;
    }

    root = proven_cbor_load(buf, len, cause, sizeof(cause));
    if (root == NULL) {
        proven_att_err(err, errlen, "malformed document: %s", cause);
        return PROVEN_ERR;
    }

    if (cbor_isa_tag(root)) {
        if (cbor_tag_value(root) != PROVEN_COSE_TAG_SIGN1) {
            proven_att_err(err, errlen, "malformed document: CBOR tag %llu, "
                           "not COSE_Sign1 (18)",
                           (unsigned long long) cbor_tag_value(root));
            goto failed;
        }

        inner = cbor_tag_item(root);

    } else {
        inner = cbor_incref(root);
    }

    if (!cbor_isa_array(inner) || cbor_array_size(inner) != 4) {
        proven_att_err(err, errlen, "malformed document: not a COSE_Sign1 "
                       "array of 4");
        goto failed;
    }

    parts = cbor_array_handle(inner);

    if (proven_att_buf(parts[0], 1, PROVEN_ATT_PROTECTED_MAX,
                       &doc->protected_hdr) != PROVEN_OK)
    {
        proven_att_err(err, errlen, "malformed document: protected header "
                       "is not a byte string of 1..%d bytes",
                       PROVEN_ATT_PROTECTED_MAX);
        goto failed;
    }

    if (proven_att_protected(&doc->protected_hdr, cause, sizeof(cause))
        != PROVEN_OK)
    {
        proven_att_err(err, errlen, "malformed document: %s", cause);
        goto failed;
    }

    if (!cbor_isa_map(parts[1])) {
        proven_att_err(err, errlen, "malformed document: unprotected header "
                       "is not a map");
        goto failed;
    }

    if (proven_att_buf(parts[2], 1, len, &doc->payload) != PROVEN_OK) {
        proven_att_err(err, errlen, "malformed document: payload is not a "
                       "byte string");
        goto failed;
    }

    if (proven_att_buf(parts[3], PROVEN_ATT_SIG_LEN, PROVEN_ATT_SIG_LEN,
                       &doc->signature) != PROVEN_OK)
    {
        proven_att_err(err, errlen, "malformed document: signature is not "
                       "%d bytes (ES384 r||s)", PROVEN_ATT_SIG_LEN);
        goto failed;
    }

    if (proven_att_payload(doc, cause, sizeof(cause)) != PROVEN_OK) {
        proven_att_err(err, errlen, "malformed document: %s", cause);
        goto failed;
    }

    rc = PROVEN_OK;

failed:

    if (inner != NULL) {
        cbor_decref(&inner);
    }

    cbor_decref(&root);

    if (rc != PROVEN_OK) {
        proven_attestation_doc_free(doc);
    }

    return rc;
}


static void
proven_buf_free(proven_buf_t *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = 0;
    buf->present = 0;
}


void
proven_attestation_doc_free(proven_attestation_doc_t *doc)
{
    size_t  i;

    if (doc == NULL) {
        return;
    }

    proven_buf_free(&doc->certificate);

    for (i = 0; i < PROVEN_ATT_CABUNDLE_MAX; i++) {
        proven_buf_free(&doc->cabundle[i]);
    }

    doc->cabundle_count = 0;

    proven_buf_free(&doc->public_key);
    proven_buf_free(&doc->user_data);
    proven_buf_free(&doc->nonce);
    proven_buf_free(&doc->protected_hdr);
    proven_buf_free(&doc->payload);
    proven_buf_free(&doc->signature);
}


/* ---- encode -------------------------------------------------------------- */

/*
 * The payload is written straight into one buffer sized up front with
 * libcbor's encoders: this runs for every attestation request, and building
 * an item tree first would copy every certificate twice more.
 */

#define PROVEN_CBOR_HEAD  9

typedef struct {
    uint8_t  *buf;
    size_t    size;
    size_t    used;
    int       failed;
} proven_att_writer_t;


static void
proven_att_advance(proven_att_writer_t *w, size_t n)
{
    if (n == 0) {
        w->failed = 1;
    }

    w->used += n;
}


static void
proven_att_put_raw(proven_att_writer_t *w, const void *data, size_t len)
{
    if (w->failed || len > w->size - w->used) {
        w->failed = 1;
        return;
    }

    if (len > 0) {
        memcpy(w->buf + w->used, data, len);
    }
    w->used += len;
}


static void
proven_att_put_text(proven_att_writer_t *w, const char *text)
{
    size_t  len;

    if (w->failed) {
        return;
    }

    len = strlen(text);
    proven_att_advance(w, cbor_encode_string_start(len, w->buf + w->used,
                                                   w->size - w->used));
    proven_att_put_raw(w, text, len);
}


static void
proven_att_put_bytes(proven_att_writer_t *w, const uint8_t *data,
    size_t len)
{
    if (w->failed) {
        return;
    }

    proven_att_advance(w, cbor_encode_bytestring_start(len,
                           w->buf + w->used, w->size - w->used));
    proven_att_put_raw(w, data, len);
}


static void
proven_att_put_optional(proven_att_writer_t *w, const proven_buf_t *buf)
{
    if (w->failed) {
        return;
    }

    if (!buf->present) {
        proven_att_advance(w, cbor_encode_null(w->buf + w->used,
                                               w->size - w->used));
        return;
    }

    proven_att_put_bytes(w, buf->data, buf->len);
}


int
proven_attestation_encode_payload(const proven_attestation_doc_t *doc,
    uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
    int                  k;
    size_t               i, size;
    proven_att_writer_t  w;
    const proven_buf_t  *optional[3];

    if (doc->pcr_count > PROVEN_ATT_PCRS_MAX
        || doc->cabundle_count > PROVEN_ATT_CABUNDLE_MAX
        || strnlen(doc->module_id, sizeof(doc->module_id))
           > PROVEN_ATT_MODULE_ID_MAX
        || strnlen(doc->digest, sizeof(doc->digest)) >= sizeof(doc->digest)
        || !doc->certificate.present
        || doc->certificate.len > PROVEN_ATT_CERT_MAX
        || doc->public_key.len > PROVEN_ATT_FIELD_MAX
        || doc->user_data.len > PROVEN_ATT_FIELD_MAX
        || doc->nonce.len > PROVEN_ATT_FIELD_MAX)
    {
        proven_att_err(err, errlen, "attestation fields out of bounds");
        return PROVEN_ERR;
    }

    /* Every length below is bounded, so the sum cannot overflow. */
    size = PROVEN_CBOR_HEAD;

    for (k = 0; k < PROVEN_ATT_KEYS; k++) {
        size += PROVEN_CBOR_HEAD + strlen(proven_att_keys[k])
                + PROVEN_CBOR_HEAD;
    }

    size += strlen(doc->module_id) + strlen(doc->digest)
            + doc->certificate.len + doc->public_key.len
            + doc->user_data.len + doc->nonce.len;

    for (i = 0; i < doc->pcr_count; i++) {
        if (doc->pcrs[i].len > PROVEN_ATT_PCR_MAX) {
            proven_att_err(err, errlen, "PCR%u too long", doc->pcrs[i].index);
            return PROVEN_ERR;
        }
        size += 2 * PROVEN_CBOR_HEAD + doc->pcrs[i].len;
    }

    for (i = 0; i < doc->cabundle_count; i++) {
        if (doc->cabundle[i].len > PROVEN_ATT_CERT_MAX) {
            proven_att_err(err, errlen, "cabundle[%zu] too long", i);
            return PROVEN_ERR;
        }
        size += PROVEN_CBOR_HEAD + doc->cabundle[i].len;
    }

    w.buf = malloc(size);
    w.size = size;
    w.used = 0;
    w.failed = 0;

    if (w.buf == NULL) {
        proven_att_err(err, errlen, "out of memory");
        return PROVEN_ERR;
    }

    proven_att_advance(&w, cbor_encode_map_start(PROVEN_ATT_KEYS, w.buf,
                                                 w.size));

    proven_att_put_text(&w, "module_id");
    proven_att_put_text(&w, doc->module_id);
    proven_att_put_text(&w, "digest");
    proven_att_put_text(&w, doc->digest);
    proven_att_put_text(&w, "timestamp");
    if (!w.failed) {
        proven_att_advance(&w, cbor_encode_uint(doc->timestamp,
                               w.buf + w.used, w.size - w.used));
    }

    proven_att_put_text(&w, "pcrs");
    if (!w.failed) {
        proven_att_advance(&w, cbor_encode_map_start(doc->pcr_count,
                               w.buf + w.used, w.size - w.used));
    }

    for (i = 0; i < doc->pcr_count && !w.failed; i++) {
        proven_att_advance(&w, cbor_encode_uint(doc->pcrs[i].index,
                               w.buf + w.used, w.size - w.used));
        proven_att_put_bytes(&w, doc->pcrs[i].value, doc->pcrs[i].len);
    }

    proven_att_put_text(&w, "certificate");
    proven_att_put_bytes(&w, doc->certificate.data, doc->certificate.len);

    proven_att_put_text(&w, "cabundle");
    if (!w.failed) {
        proven_att_advance(&w, cbor_encode_array_start(doc->cabundle_count,
                               w.buf + w.used, w.size - w.used));
    }

    for (i = 0; i < doc->cabundle_count; i++) {
        proven_att_put_bytes(&w, doc->cabundle[i].data, doc->cabundle[i].len);
    }

    optional[0] = &doc->public_key;
    optional[1] = &doc->user_data;
    optional[2] = &doc->nonce;

    for (k = 0; k < 3; k++) {
        proven_att_put_text(&w, proven_att_keys[PROVEN_ATT_PUBLIC_KEY + k]);
        proven_att_put_optional(&w, optional[k]);
    }

    if (w.failed) {
        free(w.buf);
        proven_att_err(err, errlen, "cannot encode the payload");
        return PROVEN_ERR;
    }

    *out = w.buf;
    *outlen = w.used;
    return PROVEN_OK;
}


/* ---- verify -------------------------------------------------------------- */


static proven_verify_status_t
proven_att_x509_status(int error)
{
    switch (error) {

    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return PROVEN_VERIFY_EXPIRED;

    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_REJECTED:
        return PROVEN_VERIFY_UNTRUSTED_ROOT;

    case X509_V_ERR_OUT_OF_MEM:
        return PROVEN_VERIFY_INTERNAL;

    default:
        return PROVEN_VERIFY_BAD_CERTIFICATE;
    }
}


static X509 *
proven_att_x509(const proven_buf_t *der)
{
    X509                 *cert;
    const unsigned char  *p;

    p = der->data;
    cert = d2i_X509(NULL, &p, (long) der->len);

    /* trailing bytes would be outside what the signature covers */
    if (cert != NULL && p != der->data + der->len) {
        X509_free(cert);
        return NULL;
    }

    return cert;
}


static void
proven_att_show(const uint8_t *data, size_t len, char *out)
{
    if (len > PROVEN_ATT_SHOW) {
        proven_hex_encode(data, PROVEN_ATT_SHOW, out);
        strcpy(out + 2 * PROVEN_ATT_SHOW, "...");
        return;
    }

    proven_hex_encode(data, len, out);
}


/*
 * Builds the chain leaf -> cabundle (untrusted) -> opts->root (the only
 * trusted certificate) at the chosen time.  On success *leaf_key holds a
 * reference to the leaf's P-384 key.
 */
static proven_verify_status_t
proven_att_check_chain(const proven_attestation_doc_t *doc,
    const proven_verify_opts_t *opts, EVP_PKEY **leaf_key, char *err,
    size_t errlen)
{
    int                      e;
    char                     group[32];
    size_t                   i;
    X509                    *leaf, *root, *cert;
    EVP_PKEY                *key;
    X509_STORE              *store;
    STACK_OF(X509)          *bundle;
    X509_STORE_CTX          *ctx;
    proven_verify_status_t   status;

    status = PROVEN_VERIFY_INTERNAL;
    proven_att_err(err, errlen, "out of memory checking certificates");
    root = NULL;
    store = NULL;
    ctx = NULL;

    bundle = sk_X509_new_null();

    leaf = proven_att_x509(&doc->certificate);
    if (leaf == NULL) {
        status = PROVEN_VERIFY_BAD_CERTIFICATE;
        proven_att_err(err, errlen, "leaf certificate does not parse");
        goto failed;
    }

    key = X509_get0_pubkey(leaf);
    if (key == NULL || !EVP_PKEY_is_a(key, "EC")
        || EVP_PKEY_get_group_name(key, group, sizeof(group), NULL) != 1
        || strcmp(group, "secp384r1") != 0)
    {
        status = PROVEN_VERIFY_BAD_CERTIFICATE;
        proven_att_err(err, errlen, "leaf certificate key is not EC P-384");
        goto failed;
    }

    if (bundle == NULL) {
        goto failed;
    }

    for (i = 0; i < doc->cabundle_count; i++) {
        cert = proven_att_x509(&doc->cabundle[i]);
        if (cert == NULL) {
            status = PROVEN_VERIFY_BAD_CERTIFICATE;
            proven_att_err(err, errlen, "cabundle[%zu] does not parse", i);
            goto failed;
        }

        if (!sk_X509_push(bundle, cert)) {
            X509_free(cert);
            goto failed;
        }
    }

    root = opts->root ? X509_dup(opts->root) : proven_aws_nitro_root();
    store = X509_STORE_new();
    ctx = X509_STORE_CTX_new();

    if (root == NULL || store == NULL || ctx == NULL
        || X509_STORE_add_cert(store, root) != 1
        || X509_STORE_CTX_init(ctx, store, leaf, bundle) != 1)
    {
        goto failed;
    }

    if (opts->at == PROVEN_AT_DOC) {
        X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx),
                                   (time_t) (doc->timestamp / 1000));

    } else if (opts->at == PROVEN_AT_MS) {
        X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx),
                                   (time_t) (opts->at_ms / 1000));
    }

    if (X509_verify_cert(ctx) != 1) {
        e = X509_STORE_CTX_get_error(ctx);
        status = proven_att_x509_status(e);
        proven_att_err(err, errlen, "certificate chain: %s (depth %d)",
                       X509_verify_cert_error_string(e),
                       X509_STORE_CTX_get_error_depth(ctx));
        goto failed;
    }

    /* the key belongs to leaf, freed below: take a reference */
    if (EVP_PKEY_up_ref(key) != 1) {
        goto failed;
    }

    *leaf_key = key;
    status = PROVEN_VERIFY_OK;

failed:

    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    X509_free(root);
    sk_X509_pop_free(bundle, X509_free);
    X509_free(leaf);
    return status;
}


static proven_verify_status_t
proven_att_check_claims(const proven_attestation_doc_t *doc,
    const proven_verify_opts_t *opts, char *err, size_t errlen)
{
    size_t               i, j;
    const proven_pcr_t  *want, *have;
    char                 got[2 * PROVEN_ATT_SHOW + 4];
    char                 exp[2 * PROVEN_ATT_SHOW + 4];

    if (opts->nonce != NULL) {
        if (!doc->nonce.present) {
            proven_att_show(opts->nonce, opts->nonce_len, exp);
            proven_att_err(err, errlen, "nonce mismatch: document has none, "
                           "expected %s", exp);
            return PROVEN_VERIFY_NONCE_MISMATCH;
        }

        if (doc->nonce.len != opts->nonce_len
            || memcmp(doc->nonce.data, opts->nonce, opts->nonce_len) != 0)
        {
            proven_att_show(doc->nonce.data, doc->nonce.len, got);
            proven_att_show(opts->nonce, opts->nonce_len, exp);
            proven_att_err(err, errlen, "nonce mismatch: document has %s, "
                           "expected %s", got, exp);
            return PROVEN_VERIFY_NONCE_MISMATCH;
        }
    }

    for (i = 0; i < opts->pcr_count && i < PROVEN_ATT_PCRS_MAX; i++) {
        want = &opts->pcrs[i];
        have = NULL;

        for (j = 0; j < doc->pcr_count; j++) {
            if (doc->pcrs[j].index == want->index) {
                have = &doc->pcrs[j];
                break;
            }
        }

        if (have == NULL) {
            proven_att_err(err, errlen, "PCR mismatch: document has no "
                           "PCR%u", want->index);
            return PROVEN_VERIFY_PCR_MISMATCH;
        }

        if (want->len > PROVEN_ATT_PCR_MAX || have->len != want->len
            || memcmp(have->value, want->value, want->len) != 0)
        {
            proven_att_show(have->value, have->len, got);
            proven_att_show(want->value,
                            want->len > PROVEN_ATT_PCR_MAX
                            ? PROVEN_ATT_PCR_MAX : want->len, exp);
            proven_att_err(err, errlen, "PCR%u mismatch: document has %s, "
                           "expected %s", want->index, got, exp);
            return PROVEN_VERIFY_PCR_MISMATCH;
        }
    }

    return PROVEN_VERIFY_OK;
}


proven_verify_status_t
proven_attestation_verify(const uint8_t *buf, size_t len,
    const proven_verify_opts_t *opts, proven_attestation_doc_t *out,
    char *err, size_t errlen)
{
    EVP_PKEY                  *leaf_key;
    proven_verify_opts_t       defaults;
    proven_attestation_doc_t   local, *doc;
    proven_verify_status_t     status;
    char                       cause[PROVEN_ERR_LEN];

    doc = out ? out : &local;
    leaf_key = NULL;

    if (opts == NULL) {
        memset(&defaults, 0, sizeof(defaults));
        opts = &defaults;
    }

    if (proven_attestation_decode(buf, len, doc, err, errlen) != PROVEN_OK) {
        return PROVEN_VERIFY_MALFORMED;
    }

    status = proven_att_check_chain(doc, opts, &leaf_key, err, errlen);
    if (status != PROVEN_VERIFY_OK) {
        goto done;
    }

    if (proven_cose_verify_es384(doc->protected_hdr.data,
                                 doc->protected_hdr.len, doc->payload.data,
                                 doc->payload.len, doc->signature.data,
                                 doc->signature.len, leaf_key, cause,
                                 sizeof(cause)) != PROVEN_OK)
    {
        status = PROVEN_VERIFY_BAD_SIGNATURE;
        proven_att_err(err, errlen, "bad signature: %s", cause);
        goto done;
    }

    status = proven_att_check_claims(doc, opts, err, errlen);

done:

    EVP_PKEY_free(leaf_key);

    if (status == PROVEN_VERIFY_OK) {
        proven_att_err(err, errlen, "ok");
    }

    if (doc == &local) {
        proven_attestation_doc_free(&local);
    }

    return status;
}


/* ---- JSON ---------------------------------------------------------------- */


static json_t *
proven_att_base64(const proven_buf_t *buf)
{
    json_t         *s;
    unsigned char  *b64;

    if (!buf->present) {
        return json_null();
    }

    /* bounded by the decode limits, far below INT_MAX */
    b64 = malloc(4 * ((buf->len + 2) / 3) + 1);
    if (b64 == NULL) {
        return NULL;
    }

    EVP_EncodeBlock(b64, buf->data, (int) buf->len);
    s = json_string((const char *) b64);
    free(b64);

    return s;
}


static int
proven_att_json_set(json_t *obj, const char *key, json_t *value)
{
    if (value == NULL) {
        return PROVEN_ERR;
    }

    return json_object_set_new(obj, key, value) == 0 ? PROVEN_OK
                                                     : PROVEN_ERR;
}


char *
proven_attestation_to_json(const proven_attestation_doc_t *doc, int pretty)
{
    char     *text;
    size_t    i;
    json_t   *root, *pcrs, *bundle;
    char      index[16], hex[2 * PROVEN_ATT_PCR_MAX + 1];

    text = NULL;

    root = json_object();
    pcrs = json_object();
    bundle = json_array();

    if (root == NULL || pcrs == NULL || bundle == NULL
        || doc->pcr_count > PROVEN_ATT_PCRS_MAX
        || doc->cabundle_count > PROVEN_ATT_CABUNDLE_MAX)
    {
        goto failed;
    }

    for (i = 0; i < doc->pcr_count; i++) {
        if (doc->pcrs[i].len > PROVEN_ATT_PCR_MAX) {
            goto failed;
        }

        snprintf(index, sizeof(index), "%u", doc->pcrs[i].index);
        proven_hex_encode(doc->pcrs[i].value, doc->pcrs[i].len, hex);

        if (proven_att_json_set(pcrs, index, json_string(hex))
            != PROVEN_OK)
        {
            goto failed;
        }
    }

    for (i = 0; i < doc->cabundle_count; i++) {
        if (json_array_append_new(bundle, proven_att_base64(&doc->cabundle[i]))
            != 0)
        {
            goto failed;
        }
    }

    if (proven_att_json_set(root, "module_id", json_string(doc->module_id))
        != PROVEN_OK
        || proven_att_json_set(root, "digest", json_string(doc->digest))
           != PROVEN_OK
        || proven_att_json_set(root, "timestamp",
                               json_integer((json_int_t) doc->timestamp))
           != PROVEN_OK)
    {
        goto failed;
    }

    /* root takes over pcrs and bundle even when setting fails */
    if (proven_att_json_set(root, "pcrs", pcrs) != PROVEN_OK) {
        pcrs = NULL;
        goto failed;
    }
    pcrs = NULL;

    if (proven_att_json_set(root, "certificate",
                            proven_att_base64(&doc->certificate))
        != PROVEN_OK)
    {
        goto failed;
    }

    if (proven_att_json_set(root, "cabundle", bundle) != PROVEN_OK) {
        bundle = NULL;
        goto failed;
    }
    bundle = NULL;

    if (proven_att_json_set(root, "public_key",
                            proven_att_base64(&doc->public_key)) != PROVEN_OK
        || proven_att_json_set(root, "user_data",
                               proven_att_base64(&doc->user_data))
           != PROVEN_OK
        || proven_att_json_set(root, "nonce", proven_att_base64(&doc->nonce))
           != PROVEN_OK)
    {
        goto failed;
    }

    text = json_dumps(root, JSON_PRESERVE_ORDER
                            | (pretty ? JSON_INDENT(2) : JSON_COMPACT));

failed:

    json_decref(root);
    json_decref(pcrs);
    json_decref(bundle);
    return text;
}
