/* A small P-384 PKI for the dev attestation provider and for tests. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "proven.h"


#define PROVEN_PKI_SERIAL_BITS  127




EVP_PKEY *
proven_pki_new_key(char *err, size_t errlen)
{
    EVP_PKEY  *key;

    key = EVP_EC_gen("P-384");
    if (key == NULL) {
        proven_openssl_error(err, errlen, "cannot generate a P-384 key");
    }

    return key;
}


static int
proven_pki_add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    int             ok;
    X509_EXTENSION *ext;

    ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (ext == NULL) {
        return PROVEN_ERR;
    }

    ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);

    return ok == 1 ? PROVEN_OK : PROVEN_ERR;
}


X509 *
proven_pki_new_cert(EVP_PKEY *key, const char *common_name, X509 *issuer,
    EVP_PKEY *issuer_key, int is_ca, int64_t not_before, int64_t not_after,
    char *err, size_t errlen)
{
    X509          *cert;
    BIGNUM        *serial;
    X509_NAME     *name;
    X509V3_CTX     ctx;

    serial = NULL;

    if (key == NULL || common_name == NULL || not_after < not_before
        || (issuer != NULL && issuer_key == NULL))
    {
        if (err) {
            snprintf(err, errlen, "bad certificate parameters");
        }
        return NULL;
    }

    if (issuer == NULL) {
        issuer_key = key;
    }

    cert = X509_new();
    serial = BN_new();
    name = X509_NAME_new();
    if (cert == NULL || serial == NULL || name == NULL) {
        goto failed;
    }

    /* A positive random serial, as RFC 5280 asks (at most 20 bytes). */
    if (X509_set_version(cert, 2) != 1
        || BN_rand(serial, PROVEN_PKI_SERIAL_BITS, BN_RAND_TOP_ONE,
                   BN_RAND_BOTTOM_ANY) != 1
        || BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert)) == NULL)
    {
        goto failed;
    }

    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                   (const unsigned char *) common_name, -1,
                                   -1, 0) != 1
        || X509_set_subject_name(cert, name) != 1
        || X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer)
                                             : name) != 1)
    {
        goto failed;
    }

    if (ASN1_TIME_set(X509_getm_notBefore(cert), (time_t) not_before) == NULL
        || ASN1_TIME_set(X509_getm_notAfter(cert), (time_t) not_after)
           == NULL
        || X509_set_pubkey(cert, key) != 1)
    {
        goto failed;
    }

    X509V3_set_ctx(&ctx, issuer ? issuer : cert, cert, NULL, NULL, 0);

    if (proven_pki_add_ext(cert, &ctx, NID_subject_key_identifier, "hash")
        != PROVEN_OK
        || proven_pki_add_ext(cert, &ctx, NID_authority_key_identifier,
                              "keyid:always") != PROVEN_OK)
    {
        goto failed;
    }

    if (is_ca) {
        if (proven_pki_add_ext(cert, &ctx, NID_basic_constraints,
                               "critical,CA:TRUE") != PROVEN_OK
            || proven_pki_add_ext(cert, &ctx, NID_key_usage,
                                  "critical,keyCertSign,cRLSign")
               != PROVEN_OK)
        {
            goto failed;
        }

    } else {
        if (proven_pki_add_ext(cert, &ctx, NID_basic_constraints,
                               "critical,CA:FALSE") != PROVEN_OK
            || proven_pki_add_ext(cert, &ctx, NID_key_usage,
                                  "critical,digitalSignature") != PROVEN_OK)
        {
            goto failed;
        }
    }

    if (X509_sign(cert, issuer_key, EVP_sha384()) <= 0) {
        goto failed;
    }

    BN_free(serial);
    X509_NAME_free(name);
    return cert;

failed:

    proven_openssl_error(err, errlen, "cannot create certificate");
    X509_free(cert);
    BN_free(serial);
    X509_NAME_free(name);
    return NULL;
}


int
proven_pki_cert_der(X509 *cert, uint8_t **out, size_t *outlen)
{
    int             n;
    unsigned char  *der, *p;

    n = i2d_X509(cert, NULL);
    if (n <= 0) {
        return PROVEN_ERR;
    }

    /* malloc()ed, not OPENSSL_malloc()ed: the caller free()s it. */
    der = malloc((size_t) n);
    if (der == NULL) {
        return PROVEN_ERR;
    }

    p = der;
    if (i2d_X509(cert, &p) != n) {
        free(der);
        return PROVEN_ERR;
    }

    *out = der;
    *outlen = (size_t) n;
    return PROVEN_OK;
}
