/*
 * COSE_Sign1 (RFC 9052): with ES384, the subset Nitro attestation documents
 * use (the Sig_structure is hashed in pieces straight from the caller's
 * buffers, so signing copies the payload once, into the output); and with
 * EdDSA, for session messages (Ed25519 signs its message whole, so the
 * Sig_structure is put together first).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/sha.h>

#include "proven.h"


#define PROVEN_ES384_COORD   48
#define PROVEN_ES384_SIG     (2 * PROVEN_ES384_COORD)

/* CBOR headers are at most 9 bytes. */
#define PROVEN_CBOR_HEAD_MAX  9


const uint8_t  proven_cose_es384_protected[4] = { 0xa1, 0x01, 0x38, 0x22 };

/* 0x84: array(4), then text(10) "Signature1" */
static const uint8_t  proven_cose_sig1_head[] = {
    0x84, 0x6a, 'S', 'i', 'g', 'n', 'a', 't', 'u', 'r', 'e', '1'
};




/*
 * Writes everything of the Sig_structure that precedes the payload bytes:
 * array head, context, protected bstr, empty external_aad, payload head.
 */
static size_t
proven_cose_sig_prefix(uint8_t *buf, size_t size, const uint8_t *prot,
    size_t plen, size_t payload_len)
{
    size_t  n, w;

    n = sizeof(proven_cose_sig1_head);
    memcpy(buf, proven_cose_sig1_head, n);

    w = cbor_encode_bytestring_start(plen, buf + n, size - n);
    if (w == 0) {
        return 0;
    }
    n += w;

    /* protected is short (the caller bounds it), so it fits here */
    memcpy(buf + n, prot, plen);
    n += plen;

    buf[n++] = 0x40;   /* h'' */

    w = cbor_encode_bytestring_start(payload_len, buf + n, size - n);
    if (w == 0) {
        return 0;
    }

    return n + w;
}


int
proven_cose_sign_es384(const uint8_t *payload, size_t len, EVP_PKEY *key,
    uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
    int                   rc;
    size_t                n, w, prefix_len, derlen;
    uint8_t              *doc;
    uint8_t               prefix[64], der[128];
    ECDSA_SIG            *sig;
    const BIGNUM         *r, *s;
    EVP_MD_CTX           *md;
    const unsigned char  *p;

    rc = PROVEN_ERR;
    doc = NULL;
    sig = NULL;

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        proven_openssl_error(err, errlen, "out of memory");
        goto failed;
    }

    prefix_len = proven_cose_sig_prefix(prefix, sizeof(prefix),
                                        proven_cose_es384_protected,
                                        sizeof(proven_cose_es384_protected),
                                        len);
    if (prefix_len == 0) {
        proven_openssl_error(err, errlen, "cannot encode Sig_structure");
        goto failed;
    }

    derlen = sizeof(der);

    if (EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, key) != 1
        || EVP_DigestSignUpdate(md, prefix, prefix_len) != 1
        || EVP_DigestSignUpdate(md, payload, len) != 1
        || EVP_DigestSignFinal(md, der, &derlen) != 1)
    {
        proven_openssl_error(err, errlen, "ES384 signing failed");
        goto failed;
    }

    p = der;
    sig = d2i_ECDSA_SIG(NULL, &p, (long) derlen);
    if (sig == NULL) {
        proven_openssl_error(err, errlen, "bad ECDSA signature from OpenSSL");
        goto failed;
    }

    /* array(4) + protected + {} + payload + bstr(96) signature */
    n = 1 + 1 + sizeof(proven_cose_es384_protected) + 1
        + PROVEN_CBOR_HEAD_MAX + len + 2 + PROVEN_ES384_SIG;

    doc = malloc(n);
    if (doc == NULL) {
        proven_openssl_error(err, errlen, "out of memory");
        goto failed;
    }

    w = 0;
    doc[w++] = 0x84;
    doc[w++] = 0x40 | sizeof(proven_cose_es384_protected);
    memcpy(doc + w, proven_cose_es384_protected,
           sizeof(proven_cose_es384_protected));
    w += sizeof(proven_cose_es384_protected);
    doc[w++] = 0xa0;
    w += cbor_encode_bytestring_start(len, doc + w, n - w);
    memcpy(doc + w, payload, len);
    w += len;
    doc[w++] = 0x58;
    doc[w++] = PROVEN_ES384_SIG;

    ECDSA_SIG_get0(sig, &r, &s);

    if (BN_bn2binpad(r, doc + w, PROVEN_ES384_COORD) != PROVEN_ES384_COORD
        || BN_bn2binpad(s, doc + w + PROVEN_ES384_COORD, PROVEN_ES384_COORD)
           != PROVEN_ES384_COORD)
    {
        proven_openssl_error(err, errlen, "signing key is not P-384");
        goto failed;
    }

    w += PROVEN_ES384_SIG;

    *out = doc;
    *outlen = w;
    doc = NULL;
    rc = PROVEN_OK;

failed:

    free(doc);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(md);
    return rc;
}


int
proven_cose_verify_es384(const uint8_t *protected_hdr, size_t plen,
    const uint8_t *payload, size_t len, const uint8_t *sig, size_t siglen,
    EVP_PKEY *key, char *err, size_t errlen)
{
    int             rc, ok;
    size_t          prefix_len;
    uint8_t         prefix[PROVEN_CBOR_HEAD_MAX * 2 + 64 + 32];
    uint8_t        *der;
    BIGNUM         *r, *s;
    ECDSA_SIG      *ecsig;
    EVP_MD_CTX     *md;
    int             derlen;

    rc = PROVEN_ERR;
    der = NULL;
    r = NULL;
    s = NULL;
    ecsig = NULL;
    md = NULL;

    if (siglen != PROVEN_ES384_SIG) {
        if (err) {
            snprintf(err, errlen, "ES384 signature is %zu bytes, not %d",
                     siglen, PROVEN_ES384_SIG);
        }
        return PROVEN_ERR;
    }

    if (plen > 64) {
        if (err) {
            snprintf(err, errlen, "protected header of %zu bytes is too "
                     "long", plen);
        }
        return PROVEN_ERR;
    }

    prefix_len = proven_cose_sig_prefix(prefix, sizeof(prefix),
                                        protected_hdr, plen, len);
    if (prefix_len == 0) {
        proven_openssl_error(err, errlen, "cannot encode Sig_structure");
        goto failed;
    }

    ecsig = ECDSA_SIG_new();
    r = BN_bin2bn(sig, PROVEN_ES384_COORD, NULL);
    s = BN_bin2bn(sig + PROVEN_ES384_COORD, PROVEN_ES384_COORD, NULL);
    if (ecsig == NULL || r == NULL || s == NULL
        || ECDSA_SIG_set0(ecsig, r, s) != 1)
    {
        proven_openssl_error(err, errlen, "out of memory");
        goto failed;
    }

    r = NULL;
    s = NULL;

    derlen = i2d_ECDSA_SIG(ecsig, &der);
    if (derlen <= 0) {
        proven_openssl_error(err, errlen, "cannot encode ECDSA signature");
        goto failed;
    }

    md = EVP_MD_CTX_new();
    if (md == NULL
        || EVP_DigestVerifyInit(md, NULL, EVP_sha384(), NULL, key) != 1
        || EVP_DigestVerifyUpdate(md, prefix, prefix_len) != 1
        || EVP_DigestVerifyUpdate(md, payload, len) != 1)
    {
        proven_openssl_error(err, errlen, "cannot verify with this key");
        goto failed;
    }

    ok = EVP_DigestVerifyFinal(md, der, (size_t) derlen);
    if (ok != 1) {
        ERR_clear_error();
        if (err) {
            snprintf(err, errlen, "COSE ES384 signature does not verify");
        }
        goto failed;
    }

    rc = PROVEN_OK;

failed:

    OPENSSL_free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(ecsig);
    EVP_MD_CTX_free(md);
    return rc;
}


/* ---- EdDSA session messages (protocol v2) ---------------------------------- */

/* map(2), 1: -8, text(3) "seq": the protected header's bytes before n */
static const uint8_t  proven_cose_eddsa_head[] = {
    0xa2, 0x01, 0x27, 0x63, 's', 'e', 'q'
};


static void
proven_cose_say(char *err, size_t errlen, const char *what)
{
    if (err != NULL) {
        snprintf(err, errlen, "%s", what);
    }
}


/*
 * The protected header's bytes for seq: the canonical {1: -8, "seq": n},
 * into out (PROVEN_COSE_EDDSA_PROTECTED_MAX bytes); its length.
 */
static size_t
proven_cose_eddsa_protected(uint64_t seq, uint8_t *out)
{
    memcpy(out, proven_cose_eddsa_head, sizeof(proven_cose_eddsa_head));
    return (size_t) (proven_cbor_put_head(out + sizeof(proven_cose_eddsa_head),
                                          PROVEN_CBOR_UINT, seq) - out);
}


/* ["Signature1", protected, aad, payload], malloc()ed. */
static uint8_t *
proven_cose_eddsa_tbs(const uint8_t *prot, size_t plen, const uint8_t *aad,
    size_t aadlen, const uint8_t *payload, size_t len, size_t *tbslen)
{
    uint8_t  *tbs, *p;

    tbs = malloc(sizeof(proven_cose_sig1_head) + 3 * PROVEN_CBOR_HEAD_MAX
                 + plen + aadlen + len);
    if (tbs == NULL) {
        return NULL;
    }
    p = tbs;
    memcpy(p, proven_cose_sig1_head, sizeof(proven_cose_sig1_head));
    p += sizeof(proven_cose_sig1_head);
    p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, prot, plen);
    p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, aad, aadlen);
    p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, payload, len);
    *tbslen = (size_t) (p - tbs);
    return tbs;
}


int
proven_cose_sign_eddsa(const uint8_t *payload, size_t len, uint64_t seq,
    const uint8_t *aad, size_t aadlen, EVP_PKEY *key, uint8_t **out,
    size_t *outlen, char *err, size_t errlen)
{
    int          rc;
    size_t       tbslen, siglen, plen;
    uint8_t     *tbs, *msg, *p, sig[PROVEN_EDDSA_SIG];
    uint8_t      prot[PROVEN_COSE_EDDSA_PROTECTED_MAX];
    EVP_MD_CTX  *md;

    rc = PROVEN_ERR;
    msg = NULL;
    if (seq < 1 || seq > PROVEN_COSE_SEQ_MAX) {
        proven_cose_say(err, errlen, "seq must be 1 to 2^53-1");
        return PROVEN_ERR;
    }
    plen = proven_cose_eddsa_protected(seq, prot);
    md = EVP_MD_CTX_new();
    tbs = proven_cose_eddsa_tbs(prot, plen, aad, aadlen, payload, len,
                                &tbslen);
    if (md == NULL || tbs == NULL) {
        proven_cose_say(err, errlen, "out of memory");
        goto done;
    }

    siglen = sizeof(sig);
    if (EVP_DigestSignInit(md, NULL, NULL, NULL, key) != 1
        || EVP_DigestSign(md, sig, &siglen, tbs, tbslen) != 1
        || siglen != PROVEN_EDDSA_SIG)
    {
        proven_openssl_error(err, errlen, "EdDSA signing failed");
        goto done;
    }

    /* array(4), bstr(protected), {}, payload, signature */
    msg = malloc(1 + 1 + plen + 1 + 2 * PROVEN_CBOR_HEAD_MAX + len
                 + PROVEN_EDDSA_SIG);
    if (msg == NULL) {
        proven_cose_say(err, errlen, "out of memory");
        goto done;
    }
    p = proven_cbor_put_head(msg, PROVEN_CBOR_ARRAY, 4);
    p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, prot, plen);
    p = proven_cbor_put_head(p, PROVEN_CBOR_MAP, 0);
    p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, payload, len);
    p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, sig, siglen);

    *out = msg;
    *outlen = (size_t) (p - msg);
    msg = NULL;
    rc = PROVEN_OK;

done:

    free(msg);
    free(tbs);
    EVP_MD_CTX_free(md);
    return rc;
}


int
proven_cose_parse_eddsa(const uint8_t *msg, size_t len,
    proven_cose_eddsa_t *m, char *err, size_t errlen)
{
    int                  major;
    size_t               plen, siglen, want_len;
    uint64_t             arg, pairs;
    uint8_t              want[PROVEN_COSE_EDDSA_PROTECTED_MAX];
    const uint8_t       *prot;
    proven_cbor_span_t   r, h;

    r.p = msg;
    r.end = msg + len;

    if (proven_cbor_span_head(&r, &major, &arg) != PROVEN_OK
        || major != PROVEN_CBOR_ARRAY || arg != 4)
    {
        proven_cose_say(err, errlen, "not a COSE_Sign1 array of four");
        return PROVEN_ERR;
    }

    /*
     * The protected header: exactly the canonical bytes of {1: -8, "seq":
     * n} for its n, so that one seq has one encoding and is signed.
     */
    if (proven_cbor_span_string(&r, PROVEN_CBOR_BYTES, &prot, &plen)
        != PROVEN_OK
        || plen <= sizeof(proven_cose_eddsa_head)
        || memcmp(prot, proven_cose_eddsa_head,
                  sizeof(proven_cose_eddsa_head)) != 0)
    {
        proven_cose_say(err, errlen, "the protected header is not the "
                        "bytes of {1: -8, \"seq\": n}");
        return PROVEN_ERR;
    }
    h.p = prot + sizeof(proven_cose_eddsa_head);
    h.end = prot + plen;
    if (proven_cbor_span_head(&h, &major, &m->seq) != PROVEN_OK
        || major != PROVEN_CBOR_UINT || h.p != h.end)
    {
        proven_cose_say(err, errlen, "the protected header's seq is not an "
                        "unsigned integer");
        return PROVEN_ERR;
    }
    if (m->seq < 1 || m->seq > PROVEN_COSE_SEQ_MAX) {
        proven_cose_say(err, errlen, "seq must be 1 to 2^53-1");
        return PROVEN_ERR;
    }
    want_len = proven_cose_eddsa_protected(m->seq, want);
    if (want_len != plen || memcmp(want, prot, plen) != 0) {
        proven_cose_say(err, errlen, "the protected header is not in "
                        "canonical CBOR (seq in its shortest form)");
        return PROVEN_ERR;
    }
    m->protected_hdr = prot;
    m->protected_len = plen;

    if (proven_cbor_span_map(&r, &pairs) != PROVEN_OK || pairs != 0) {
        proven_cose_say(err, errlen, "the unprotected header is not {}");
        return PROVEN_ERR;
    }
    if (proven_cbor_span_string(&r, PROVEN_CBOR_BYTES, &m->payload,
                                &m->payload_len) != PROVEN_OK)
    {
        proven_cose_say(err, errlen, "the payload is not a byte string");
        return PROVEN_ERR;
    }
    if (proven_cbor_span_string(&r, PROVEN_CBOR_BYTES, &m->signature,
                                &siglen) != PROVEN_OK
        || siglen != PROVEN_EDDSA_SIG)
    {
        proven_cose_say(err, errlen, "the signature is not 64 bytes");
        return PROVEN_ERR;
    }
    if (r.p != r.end) {
        proven_cose_say(err, errlen, "bytes follow the message");
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


int
proven_cose_check_eddsa(const proven_cose_eddsa_t *m, const uint8_t *aad,
    size_t aadlen, EVP_PKEY *key, char *err, size_t errlen)
{
    int          rc;
    size_t       tbslen;
    uint8_t     *tbs;
    EVP_MD_CTX  *md;

    rc = PROVEN_ERR;
    md = EVP_MD_CTX_new();
    tbs = proven_cose_eddsa_tbs(m->protected_hdr, m->protected_len, aad,
                                aadlen, m->payload, m->payload_len, &tbslen);
    if (md == NULL || tbs == NULL) {
        proven_cose_say(err, errlen, "out of memory");
    } else if (EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) != 1
               || EVP_DigestVerify(md, m->signature, PROVEN_EDDSA_SIG, tbs,
                                   tbslen) != 1)
    {
        ERR_clear_error();
        proven_cose_say(err, errlen, "the signature does not verify");
    } else {
        rc = PROVEN_OK;
    }
    free(tbs);
    EVP_MD_CTX_free(md);
    return rc;
}


int
proven_cose_verify_eddsa(const uint8_t *msg, size_t len,
    const uint8_t *aad, size_t aadlen, EVP_PKEY *key, uint64_t *seq,
    const uint8_t **payload, size_t *payload_len, char *err, size_t errlen)
{
    proven_cose_eddsa_t  m;

    if (proven_cose_parse_eddsa(msg, len, &m, err, errlen) != PROVEN_OK
        || proven_cose_check_eddsa(&m, aad, aadlen, key, err, errlen)
           != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    *seq = m.seq;
    *payload = m.payload;
    *payload_len = m.payload_len;
    return PROVEN_OK;
}


/* ---- what protocol v2 binds -------------------------------------------------- */

void
proven_session_user_data(const uint8_t id[PROVEN_SESSION_ID_LEN],
    const uint8_t client_key[32], uint8_t out[PROVEN_SESSION_USER_DATA_LEN])
{
    size_t  n;

    n = sizeof(PROVEN_SESSION_MARK) - 1;
    memcpy(out, PROVEN_SESSION_MARK, n);
    memcpy(out + n, id, PROVEN_SESSION_ID_LEN);
    SHA256(client_key, 32, out + n + PROVEN_SESSION_ID_LEN);
}


void
proven_session_answer_aad(const uint8_t id[PROVEN_SESSION_ID_LEN],
    const uint8_t *request, size_t len,
    uint8_t aad[PROVEN_SESSION_ANSWER_AAD_LEN])
{
    memcpy(aad, id, PROVEN_SESSION_ID_LEN);
    SHA256(request, len, aad + PROVEN_SESSION_ID_LEN);
}


int
proven_identify_message(const char *app, const char *origin,
    const uint8_t id[PROVEN_SESSION_ID_LEN],
    uint8_t out[PROVEN_IDENTIFY_MESSAGE_MAX], size_t *len)
{
    size_t    app_len, origin_len, n;
    uint8_t  *p;

    app_len = strlen(app);
    origin_len = strlen(origin);
    if (app_len > 255 || origin_len > 255) {
        return PROVEN_ERR;
    }
    p = out;
    n = sizeof(PROVEN_IDENTIFY_MARK) - 1;
    memcpy(p, PROVEN_IDENTIFY_MARK, n);
    p += n;
    *p++ = (uint8_t) app_len;
    memcpy(p, app, app_len);
    p += app_len;
    *p++ = (uint8_t) origin_len;
    memcpy(p, origin, origin_len);
    p += origin_len;
    memcpy(p, id, PROVEN_SESSION_ID_LEN);
    p += PROVEN_SESSION_ID_LEN;
    *len = (size_t) (p - out);
    return PROVEN_OK;
}
