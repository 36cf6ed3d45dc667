/*
 * An ACME client for one certificate: see acme.h.  Every request is a
 * JWS of the account key (ES256, RFC 7515's flattened form); the nonce
 * each answer carries signs the next.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "proven.h"
#include "acme.h"
#include "core/util.h"


#define ACME_BODY_MAX       (256 * 1024)    /* a chain is a few KiB */
#define ACME_REQUEST_S      30
#define ACME_POLL_MS        500
#define ACME_URL_MAX        1024
#define ACME_NONCE_MAX      256
#define ACME_ID_OID         "1.3.6.1.5.5.7.1.31"    /* id-pe-acmeIdentifier */
#define ACME_NONCE_TRIES    5       /* RFC 8555 6.5: badNonce is retried */
#define ACME_AUTHZ_MAX      8
#define ACME_CN_MAX         64      /* X.520's ub-common-name */


typedef struct {
    long     status;
    char     nonce[ACME_NONCE_MAX];
    char     location[ACME_URL_MAX];
    char    *body;
    size_t   len;
    int      over;
} acme_resp_t;

typedef struct {
    const provend_acme_config_t  *cfg;
    CURL                         *curl;
    time_t                        deadline;
    char                          nonce[ACME_NONCE_MAX];
    char                          kid[ACME_URL_MAX];
    char                          new_nonce[ACME_URL_MAX];
    char                          new_account[ACME_URL_MAX];
    char                          new_order[ACME_URL_MAX];
    char                          revoke_cert[ACME_URL_MAX];
    char                          jwk[256];
    char                          thumb[44];
    char                          cerr[CURL_ERROR_SIZE];
} acme_t;


/* ---- encodings -------------------------------------------------------- */

/* base64url without padding, malloc()ed; NULL out of memory. */
static char *
acme_b64url(const uint8_t *in, size_t len)
{
    int     n;
    char   *out, *p;

    out = malloc(4 * ((len + 2) / 3) + 1);
    if (out == NULL) {
        return NULL;
    }
    n = EVP_EncodeBlock((unsigned char *) out, in, (int) len);
    while (n > 0 && out[n - 1] == '=') {
        n--;
    }
    out[n] = '\0';
    for (p = out; *p != '\0'; p++) {
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    }
    return out;
}


/* The key's public point as x and y (32 bytes each). */
static int
acme_point(EVP_PKEY *key, uint8_t x[32], uint8_t y[32])
{
    uint8_t  pub[65];
    size_t   len;

    if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, pub,
                                        sizeof(pub), &len) != 1
        || len != sizeof(pub) || pub[0] != 0x04)
    {
        return PROVEN_ERR;
    }
    memcpy(x, pub + 1, 32);
    memcpy(y, pub + 33, 32);
    return PROVEN_OK;
}


/* The JWK, its members in RFC 7638's order (what the thumbprint hashes). */
static int
acme_jwk(EVP_PKEY *key, char *out, size_t size)
{
    int      n;
    char    *x, *y;
    uint8_t  bx[32], by[32];

    if (acme_point(key, bx, by) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    x = acme_b64url(bx, 32);
    y = acme_b64url(by, 32);
    n = x != NULL && y != NULL
        ? snprintf(out, size, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\","
                   "\"y\":\"%s\"}", x, y)
        : -1;
    free(x);
    free(y);
    return n > 0 && (size_t) n < size ? PROVEN_OK : PROVEN_ERR;
}


int
provend_acme_thumbprint(EVP_PKEY *key, char out[44])
{
    char     jwk[256], *b64;
    uint8_t  digest[SHA256_DIGEST_LENGTH];

    if (acme_jwk(key, jwk, sizeof(jwk)) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    SHA256((const uint8_t *) jwk, strlen(jwk), digest);
    b64 = acme_b64url(digest, sizeof(digest));
    if (b64 == NULL) {
        return PROVEN_ERR;
    }
    memcpy(out, b64, 44);               /* 43 characters and the NUL */
    free(b64);
    return PROVEN_OK;
}


/* ES256 over text: r || s, base64url; NULL on failure. */
static char *
acme_sign(EVP_PKEY *key, const char *text)
{
    char           *out;
    size_t          len;
    uint8_t         der[80], raw[64];
    EVP_MD_CTX     *md;
    ECDSA_SIG      *sig;
    const BIGNUM   *r, *s;
    const uint8_t  *p;

    out = NULL;
    len = sizeof(der);
    md = EVP_MD_CTX_new();
    if (md == NULL
        || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1
        || EVP_DigestSign(md, der, &len, (const uint8_t *) text,
                          strlen(text)) != 1)
    {
        EVP_MD_CTX_free(md);
        return NULL;
    }
    EVP_MD_CTX_free(md);
    p = der;
    sig = d2i_ECDSA_SIG(NULL, &p, (long) len);
    if (sig != NULL) {
        ECDSA_SIG_get0(sig, &r, &s);
        if (BN_bn2binpad(r, raw, 32) == 32
            && BN_bn2binpad(s, raw + 32, 32) == 32)
        {
            out = acme_b64url(raw, sizeof(raw));
        }
        ECDSA_SIG_free(sig);
    }
    return out;
}


/* ---- HTTP --------------------------------------------------------------- */

static int
acme_cancelled(const acme_t *a)
{
    return a->cfg->cancel != NULL
           && __atomic_load_n(a->cfg->cancel, __ATOMIC_RELAXED);
}


static size_t
acme_on_body(char *data, size_t size, size_t n, void *arg)
{
    char         *grown;
    acme_resp_t  *r = arg;

    size *= n;
    if (r->len + size > ACME_BODY_MAX) {
        r->over = 1;
        return 0;
    }
    grown = realloc(r->body, r->len + size + 1);
    if (grown == NULL) {
        return 0;
    }
    r->body = grown;
    memcpy(r->body + r->len, data, size);
    r->len += size;
    r->body[r->len] = '\0';
    return size;
}


/* "Name: value\r\n" into out when the header is name. */
static void
acme_header(const char *line, size_t len, const char *name, char *out,
    size_t size)
{
    size_t  nlen, vlen;

    nlen = strlen(name);
    if (len <= nlen + 1 || strncasecmp(line, name, nlen) != 0
        || line[nlen] != ':')
    {
        return;
    }
    line += nlen + 1;
    len -= nlen + 1;
    while (len > 0 && (*line == ' ' || *line == '\t')) {
        line++;
        len--;
    }
    for (vlen = 0; vlen < len && line[vlen] != '\r' && line[vlen] != '\n';
         vlen++)
    {
        /* curl's header lines are not NUL-terminated */
    }
    if (vlen < size) {
        memcpy(out, line, vlen);
        out[vlen] = '\0';
    }
}


static size_t
acme_on_header(char *data, size_t size, size_t n, void *arg)
{
    acme_resp_t  *r = arg;

    /* a new response (after a 100, say): its own headers only */
    if (size * n > 5 && memcmp(data, "HTTP/", 5) == 0) {
        r->nonce[0] = '\0';
        r->location[0] = '\0';
    }
    acme_header(data, size * n, "Replay-Nonce", r->nonce, sizeof(r->nonce));
    acme_header(data, size * n, "Location", r->location,
                sizeof(r->location));
    return size * n;
}


/* Aborts a transfer once the order is cancelled. */
static int
acme_on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
    acme_t  *a = arg;

    (void) dltotal;
    (void) dlnow;
    (void) ultotal;
    (void) ulnow;
    return acme_cancelled(a);
}


static void
acme_resp_free(acme_resp_t *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
}


/* GET url, or POST body (a JWS) to it; the answer whatever its status. */
static int
acme_http(acme_t *a, const char *url, const char *body, acme_resp_t *r,
    char *err, size_t errlen)
{
    long                timeout;
    CURLcode            rc;
    struct curl_slist  *headers;

    memset(r, 0, sizeof(*r));
    if (acme_cancelled(a)) {
        proven_errf(err, errlen, "cancelled: the node is stopping");
        return PROVEN_ERR;
    }
    timeout = (long) (a->deadline - time(NULL));
    if (timeout <= 0) {
        proven_errf(err, errlen, "the order took longer than %ld s",
                    a->cfg->timeout_s);
        return PROVEN_ERR;
    }
    timeout = timeout < ACME_REQUEST_S ? timeout : ACME_REQUEST_S;
    headers = NULL;
    if (body != NULL) {
        headers = curl_slist_append(NULL,
                                    "Content-Type: application/jose+json");
        if (headers == NULL) {
            proven_errf(err, errlen, "out of memory");
            return PROVEN_ERR;
        }
    }
    a->cerr[0] = '\0';
    curl_easy_reset(a->curl);
    curl_easy_setopt(a->curl, CURLOPT_URL, url);
    curl_easy_setopt(a->curl, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(a->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(a->curl, CURLOPT_TIMEOUT, timeout);
    curl_easy_setopt(a->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(a->curl, CURLOPT_USERAGENT, "proven-acme");
    curl_easy_setopt(a->curl, CURLOPT_ERRORBUFFER, a->cerr);
    curl_easy_setopt(a->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(a->curl, CURLOPT_XFERINFOFUNCTION, acme_on_progress);
    curl_easy_setopt(a->curl, CURLOPT_XFERINFODATA, a);
    curl_easy_setopt(a->curl, CURLOPT_WRITEFUNCTION, acme_on_body);
    curl_easy_setopt(a->curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(a->curl, CURLOPT_HEADERFUNCTION, acme_on_header);
    curl_easy_setopt(a->curl, CURLOPT_HEADERDATA, r);
    if (a->cfg->ca_file != NULL) {
        curl_easy_setopt(a->curl, CURLOPT_CAINFO, a->cfg->ca_file);
    }
    if (a->cfg->proxy != NULL) {
        curl_easy_setopt(a->curl, CURLOPT_PROXY, a->cfg->proxy);
        curl_easy_setopt(a->curl, CURLOPT_NOPROXY, "");
        /* the proxy's own answer is not the server's */
        curl_easy_setopt(a->curl, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    }
    if (body != NULL) {
        curl_easy_setopt(a->curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(a->curl, CURLOPT_POSTFIELDS, body);
    }
    rc = curl_easy_perform(a->curl);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
        proven_errf(err, errlen, "%.200s: %s", url,
                    r->over ? "an answer over 256 KiB"
                    : acme_cancelled(a) ? "cancelled: the node is stopping"
                    : a->cerr[0] != '\0' ? a->cerr
                    : curl_easy_strerror(rc));
        acme_resp_free(r);
        return PROVEN_ERR;
    }
    curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->nonce[0] != '\0') {
        memcpy(a->nonce, r->nonce, sizeof(a->nonce));
    }
    return PROVEN_OK;
}


/* The answer's JSON object, or NULL with err (the problem it names). */
static json_t *
acme_json(const acme_resp_t *r, const char *step, char *err, size_t errlen)
{
    json_t        *j, *type, *detail;
    json_error_t   jerr;

    j = r->body != NULL ? json_loadb(r->body, r->len, 0, &jerr) : NULL;
    /* 201 made, 200 found (an account already there for the key) */
    if (r->status == 200 || r->status == 201) {
        if (json_is_object(j)) {
            return j;
        }
        proven_errf(err, errlen, "%s: the answer is not a JSON object", step);
        json_decref(j);
        return NULL;
    }
    type = json_object_get(j, "type");
    detail = json_object_get(j, "detail");
    proven_errf(err, errlen, "%s: HTTP %ld%s%.120s%s%.200s", step, r->status,
                json_is_string(type) ? " " : "",
                json_is_string(type) ? json_string_value(type) : "",
                json_is_string(detail) ? ": " : "",
                json_is_string(detail) ? json_string_value(detail) : "");
    json_decref(j);
    return NULL;
}


/*
 * POSTs payload (NULL: POST-as-GET, an empty payload) to url as a JWS:
 * with the account's JWK for newAccount, its kid after.  A badNonce
 * answer is tried again once, with the nonce it brought.
 */
static int
acme_post(acme_t *a, const char *url, const char *payload, acme_resp_t *r,
    char *err, size_t errlen)
{
    int           rc, tries;
    char         *prot, *prot64, *pay64, *sig, *input, *body;
    json_t       *head, *jwk, *type;
    acme_resp_t   got;
    json_error_t  jerr;

    for (tries = 0; tries < ACME_NONCE_TRIES; tries++) {
        if (a->nonce[0] == '\0') {
            if (acme_http(a, a->new_nonce, NULL, &got, err, errlen)
                != PROVEN_OK)
            {
                return PROVEN_ERR;
            }
            acme_resp_free(&got);
            if (a->nonce[0] == '\0') {
                proven_errf(err, errlen, "newNonce: no Replay-Nonce");
                return PROVEN_ERR;
            }
        }
        jwk = a->kid[0] == '\0' ? json_loads(a->jwk, 0, &jerr) : NULL;
        head = a->kid[0] == '\0'
               ? json_pack("{s:s, s:o, s:s, s:s}", "alg", "ES256", "jwk",
                           jwk, "nonce", a->nonce, "url", url)
               : json_pack("{s:s, s:s, s:s, s:s}", "alg", "ES256", "kid",
                           a->kid, "nonce", a->nonce, "url", url);
        a->nonce[0] = '\0';         /* each is good once */
        prot = head != NULL ? json_dumps(head, JSON_COMPACT) : NULL;
        json_decref(head);
        prot64 = prot != NULL ? acme_b64url((const uint8_t *) prot,
                                            strlen(prot)) : NULL;
        pay64 = payload != NULL ? acme_b64url((const uint8_t *) payload,
                                              strlen(payload))
                                : strdup("");
        input = NULL;
        sig = NULL;
        body = NULL;
        if (prot64 != NULL && pay64 != NULL
            && asprintf(&input, "%s.%s", prot64, pay64) != -1
            && (sig = acme_sign(a->cfg->account_key, input)) != NULL)
        {
            if (asprintf(&body, "{\"protected\":\"%s\",\"payload\":\"%s\","
                         "\"signature\":\"%s\"}", prot64, pay64, sig) == -1)
            {
                body = NULL;
            }
        }
        free(prot);
        free(prot64);
        free(pay64);
        free(input);
        free(sig);
        if (body == NULL) {
            proven_errf(err, errlen, "cannot sign a request");
            return PROVEN_ERR;
        }
        rc = acme_http(a, url, body, r, err, errlen);
        free(body);
        if (rc != PROVEN_OK) {
            return rc;
        }
        if (r->status != 400 || tries == ACME_NONCE_TRIES - 1) {
            return PROVEN_OK;
        }
        head = r->body != NULL ? json_loadb(r->body, r->len, 0, &jerr) : NULL;
        type = json_object_get(head, "type");
        rc = json_is_string(type)
             && strcmp(json_string_value(type),
                       "urn:ietf:params:acme:error:badNonce") == 0;
        json_decref(head);
        if (!rc) {
            return PROVEN_OK;
        }
        acme_resp_free(r);              /* again, with its nonce */
    }
    return PROVEN_OK;
}


/* POST-as-GET url until its status is no longer one of waiting. */
static json_t *
acme_poll(acme_t *a, const char *url, const char *step, const char *waiting,
    char *err, size_t errlen)
{
    json_t       *j, *status;
    acme_resp_t   r;

    for ( ; ; ) {
        if (acme_post(a, url, NULL, &r, err, errlen) != PROVEN_OK) {
            return NULL;
        }
        j = acme_json(&r, step, err, errlen);
        acme_resp_free(&r);
        if (j == NULL) {
            return NULL;
        }
        status = json_object_get(j, "status");
        if (!json_is_string(status)
            || strstr(waiting, json_string_value(status)) == NULL)
        {
            return j;
        }
        json_decref(j);
        if (time(NULL) >= a->deadline || acme_cancelled(a)) {
            proven_errf(err, errlen, "%s: still %s after %ld s", step,
                        waiting, a->cfg->timeout_s);
            return NULL;
        }
        usleep(ACME_POLL_MS * 1000);
    }
}


/* ---- certificates -------------------------------------------------------- */

/* DNS:domain as a subjectAltName extension. */
static X509_EXTENSION *
acme_san(const char *domain)
{
    char  value[PROVEND_ACME_NAME_MAX + 8];

    snprintf(value, sizeof(value), "DNS:%s", domain);
    return X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, value);
}


char *
provend_acme_challenge_cert(const char *domain, const char *key_authorization)
{
    int                  ok;
    BIO                 *bio;
    X509                *x;
    char                *pem;
    long                 len;
    uint8_t              inner[2 + SHA256_DIGEST_LENGTH], serial[16];
    BIGNUM              *bn;
    EVP_PKEY            *key;
    X509_NAME           *name;
    ASN1_OBJECT         *oid;
    X509_EXTENSION      *san, *id;
    ASN1_OCTET_STRING   *value;
    char                *data;

    /* extnValue: the DER of acmeIdentifier, an OCTET STRING of the hash */
    inner[0] = 0x04;
    inner[1] = SHA256_DIGEST_LENGTH;
    SHA256((const uint8_t *) key_authorization, strlen(key_authorization),
           inner + 2);

    pem = NULL;
    key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    x = X509_new();
    bn = BN_new();
    value = ASN1_OCTET_STRING_new();
    oid = OBJ_txt2obj(ACME_ID_OID, 1);
    san = acme_san(domain);
    id = NULL;
    bio = BIO_new(BIO_s_mem());
    ok = key != NULL && x != NULL && bn != NULL && value != NULL
         && oid != NULL && san != NULL && bio != NULL
         && RAND_bytes(serial, sizeof(serial)) == 1
         && ASN1_OCTET_STRING_set(value, inner, sizeof(inner)) == 1
         && (id = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, value)) != NULL;
    if (ok) {
        serial[0] &= 0x7f;              /* positive */
        name = X509_get_subject_name(x);
        ok = X509_set_version(x, 2) == 1
             && BN_bin2bn(serial, sizeof(serial), bn) != NULL
             && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL
             && X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL
             && X509_gmtime_adj(X509_getm_notAfter(x), 7 * 86400) != NULL
             && (strlen(domain) > ACME_CN_MAX
                 || X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                               (const uint8_t *) domain, -1,
                                               -1, 0) == 1)
             && X509_set_issuer_name(x, name) == 1
             && X509_set_pubkey(x, key) == 1
             && X509_add_ext(x, san, -1) == 1
             && X509_add_ext(x, id, -1) == 1
             && X509_sign(x, key, EVP_sha256()) > 0
             && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL,
                                         NULL) == 1
             && PEM_write_bio_X509(bio, x) == 1;
    }
    if (ok && (len = BIO_get_mem_data(bio, &data)) > 0
        && (pem = malloc((size_t) len + 1)) != NULL)
    {
        memcpy(pem, data, (size_t) len);
        pem[len] = '\0';
    }
    BIO_free(bio);
    X509_EXTENSION_free(id);
    X509_EXTENSION_free(san);
    ASN1_OBJECT_free(oid);
    ASN1_OCTET_STRING_free(value);
    BN_free(bn);
    X509_free(x);
    EVP_PKEY_free(key);
    return pem;
}


/* The CSR of key for domain, DER in base64url; NULL on failure. */
static char *
acme_csr(EVP_PKEY *key, const char *domain)
{
    int                         len, ok;
    char                       *out;
    uint8_t                    *der, *p;
    X509_REQ                   *req;
    X509_EXTENSION             *san;
    STACK_OF(X509_EXTENSION)   *exts;

    out = NULL;
    req = X509_REQ_new();
    san = acme_san(domain);
    exts = sk_X509_EXTENSION_new_null();
    ok = req != NULL && san != NULL && exts != NULL
         && sk_X509_EXTENSION_push(exts, san) > 0;
    if (ok) {
        san = NULL;                     /* the stack's now */
        /* the name is the SAN's; a CN only when X.520 allows it */
        ok = X509_REQ_set_version(req, 0) == 1
             && (strlen(domain) > ACME_CN_MAX
                 || X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req),
                                               "CN", MBSTRING_ASC,
                                               (const uint8_t *) domain, -1,
                                               -1, 0) == 1)
             && X509_REQ_set_pubkey(req, key) == 1
             && X509_REQ_add_extensions(req, exts) == 1
             && X509_REQ_sign(req, key, EVP_sha256()) > 0;
    }
    len = ok ? i2d_X509_REQ(req, NULL) : -1;
    if (len > 0 && (der = malloc((size_t) len)) != NULL) {
        p = der;
        if (i2d_X509_REQ(req, &p) == len) {
            out = acme_b64url(der, (size_t) len);
        }
        free(der);
    }
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_EXTENSION_free(san);
    X509_REQ_free(req);
    return out;
}


/* ---- the order ------------------------------------------------------------- */

/* One authorization: TLS-ALPN-01 answered, until it is decided. */
static int
acme_authorize(acme_t *a, const char *url, char *err, size_t errlen)
{
    int           rc;
    char          token[256], chall[ACME_URL_MAX], keyauth[320], *pem;
    size_t        i;
    json_t       *authz, *challenges, *c, *type, *problem;
    acme_resp_t   r;

    authz = acme_poll(a, url, "authorization", "", err, errlen);
    if (authz == NULL) {
        return PROVEN_ERR;
    }
    type = json_object_get(json_object_get(authz, "identifier"), "value");
    if (!json_is_string(type)
        || strcmp(json_string_value(type), a->cfg->domain) != 0)
    {
        json_decref(authz);
        proven_errf(err, errlen, "authorization: not for %s", a->cfg->domain);
        return PROVEN_ERR;
    }
    type = json_object_get(authz, "status");
    if (json_is_string(type) && strcmp(json_string_value(type), "valid") == 0)
    {
        json_decref(authz);             /* an authorization reused */
        return PROVEN_OK;
    }
    challenges = json_object_get(authz, "challenges");
    c = NULL;
    for (i = 0; json_is_array(challenges) && i < json_array_size(challenges);
         i++)
    {
        type = json_object_get(json_array_get(challenges, i), "type");
        if (json_is_string(type)
            && strcmp(json_string_value(type), "tls-alpn-01") == 0)
        {
            c = json_array_get(challenges, i);
        }
    }
    if (c == NULL
        || provend_json_text(c, "token", token, sizeof(token)) != PROVEN_OK
        || provend_json_text(c, "url", chall, sizeof(chall)) != PROVEN_OK
        || strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         "0123456789-_") != strlen(token))
    {
        json_decref(authz);
        proven_errf(err, errlen, "authorization: no tls-alpn-01 challenge "
                    "with a token and a URL");
        return PROVEN_ERR;
    }
    json_decref(authz);

    snprintf(keyauth, sizeof(keyauth), "%s.%s", token, a->thumb);
    pem = provend_acme_challenge_cert(a->cfg->domain, keyauth);
    if (pem == NULL) {
        proven_errf(err, errlen, "cannot make the challenge certificate");
        return PROVEN_ERR;
    }
    rc = a->cfg->publish(a->cfg->publish_data, a->cfg->domain, pem, err,
                         errlen);
    OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
    if (rc != PROVEN_OK) {
        return PROVEN_ERR;
    }

    /* ready: the server connects to us now */
    rc = acme_post(a, chall, "{}", &r, err, errlen);
    if (rc == PROVEN_OK) {
        c = acme_json(&r, "challenge", err, errlen);
        rc = c != NULL ? PROVEN_OK : PROVEN_ERR;
        json_decref(c);
        acme_resp_free(&r);
    }
    authz = rc == PROVEN_OK ? acme_poll(a, url, "authorization", "pending",
                                        err, errlen)
                            : NULL;
    (void) a->cfg->publish(a->cfg->publish_data, a->cfg->domain, NULL, NULL,
                           0);
    if (authz == NULL) {
        return PROVEN_ERR;
    }
    type = json_object_get(authz, "status");
    rc = json_is_string(type) && strcmp(json_string_value(type), "valid") == 0
         ? PROVEN_OK : PROVEN_ERR;
    if (rc != PROVEN_OK) {
        /* the challenge's error says what the server saw */
        challenges = json_object_get(authz, "challenges");
        problem = NULL;
        for (i = 0; json_is_array(challenges)
                    && i < json_array_size(challenges); i++)
        {
            problem = json_object_get(json_array_get(challenges, i),
                                      "error");
            if (problem != NULL) {
                break;
            }
        }
        proven_errf(err, errlen, "authorization %s: %.300s",
                    json_is_string(type) ? json_string_value(type) : "?",
                    json_is_string(json_object_get(problem, "detail"))
                    ? json_string_value(json_object_get(problem, "detail"))
                    : "no detail");
    }
    json_decref(authz);
    return rc;
}


/*
 * What every request of ours starts with: the directory (which names the
 * rest) and the account, made or found (200) for the account key.
 */
static int
acme_start(acme_t *a, const provend_acme_config_t *cfg, char *err,
    size_t errlen)
{
    char          *payload;
    json_t        *dir, *account;
    acme_resp_t    r;

    memset(a, 0, sizeof(*a));
    a->cfg = cfg;
    a->deadline = time(NULL) + cfg->timeout_s;
    a->curl = curl_easy_init();
    if (a->curl == NULL
        || acme_jwk(cfg->account_key, a->jwk, sizeof(a->jwk)) != PROVEN_OK
        || provend_acme_thumbprint(cfg->account_key, a->thumb) != PROVEN_OK)
    {
        proven_errf(err, errlen, "cannot set up (libcurl, the account key)");
        return PROVEN_ERR;
    }

    if (acme_http(a, cfg->directory, NULL, &r, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    dir = acme_json(&r, "directory", err, errlen);
    acme_resp_free(&r);
    if (dir == NULL) {
        return PROVEN_ERR;
    }
    if (provend_json_text(dir, "newNonce", a->new_nonce,
                          sizeof(a->new_nonce)) != PROVEN_OK
        || provend_json_text(dir, "newAccount", a->new_account,
                             sizeof(a->new_account)) != PROVEN_OK
        || provend_json_text(dir, "newOrder", a->new_order,
                             sizeof(a->new_order)) != PROVEN_OK)
    {
        json_decref(dir);
        proven_errf(err, errlen, "directory: no newNonce, newAccount or "
                    "newOrder");
        return PROVEN_ERR;
    }
    /* optional for an order, needed for a revocation */
    (void) provend_json_text(dir, "revokeCert", a->revoke_cert,
                             sizeof(a->revoke_cert));
    json_decref(dir);

    account = cfg->contact != NULL
              ? json_pack("{s:b, s:[s]}", "termsOfServiceAgreed", 1,
                          "contact", cfg->contact)
              : json_pack("{s:b}", "termsOfServiceAgreed", 1);
    payload = account != NULL ? json_dumps(account, JSON_COMPACT) : NULL;
    json_decref(account);
    if (payload == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    if (acme_post(a, a->new_account, payload, &r, err, errlen) != PROVEN_OK) {
        free(payload);
        return PROVEN_ERR;
    }
    free(payload);
    account = acme_json(&r, "newAccount", err, errlen);
    if (account == NULL || r.location[0] == '\0') {
        if (account != NULL) {
            json_decref(account);
            proven_errf(err, errlen, "newAccount: no Location");
        }
        acme_resp_free(&r);
        return PROVEN_ERR;
    }
    memcpy(a->kid, r.location, sizeof(a->kid));
    acme_resp_free(&r);
    json_decref(account);
    return PROVEN_OK;
}


int
provend_acme_order(const provend_acme_config_t *cfg, char **chain,
    char *err, size_t errlen)
{
    int           rc;
    char          order_url[ACME_URL_MAX], finalize[ACME_URL_MAX];
    char          cert_url[ACME_URL_MAX], *payload, *csr;
    size_t        i;
    json_t       *order, *authzs;
    acme_t        a;
    acme_resp_t   r;

    *chain = NULL;
    order = NULL;
    rc = PROVEN_ERR;
    if (acme_start(&a, cfg, err, errlen) != PROVEN_OK) {
        goto done;
    }

    /* the order, its authorizations, its finalization */
    if (asprintf(&payload, "{\"identifiers\":[{\"type\":\"dns\","
                 "\"value\":\"%s\"}]}", cfg->domain) == -1)
    {
        payload = NULL;
    }
    if (payload == NULL) {
        proven_errf(err, errlen, "out of memory");
        order = NULL;
        goto done;
    }
    if (acme_post(&a, a.new_order, payload, &r, err, errlen) != PROVEN_OK) {
        free(payload);
        order = NULL;
        goto done;
    }
    free(payload);
    order = acme_json(&r, "newOrder", err, errlen);
    if (order == NULL || r.location[0] == '\0'
        || provend_json_text(order, "finalize", finalize, sizeof(finalize))
           != PROVEN_OK
        || !json_is_array(authzs = json_object_get(order, "authorizations")))
    {
        if (order != NULL) {
            proven_errf(err, errlen, "newOrder: no Location, finalize or "
                        "authorizations");
        }
        acme_resp_free(&r);
        goto done;
    }
    memcpy(order_url, r.location, sizeof(order_url));
    acme_resp_free(&r);
    if (json_array_size(authzs) == 0
        || json_array_size(authzs) > ACME_AUTHZ_MAX)
    {
        proven_errf(err, errlen, "newOrder: %zu authorizations for one name",
                    json_array_size(authzs));
        goto done;
    }
    for (i = 0; i < json_array_size(authzs); i++) {
        if (!json_is_string(json_array_get(authzs, i))
            || acme_authorize(&a, json_string_value(json_array_get(authzs, i)),
                              err, errlen) != PROVEN_OK)
        {
            if (!json_is_string(json_array_get(authzs, i))) {
                proven_errf(err, errlen, "newOrder: an authorization is not "
                            "a URL");
            }
            goto done;
        }
    }
    json_decref(order);
    order = NULL;

    csr = acme_csr(cfg->cert_key, cfg->domain);
    if (csr == NULL || asprintf(&payload, "{\"csr\":\"%s\"}", csr) == -1) {
        free(csr);
        proven_errf(err, errlen, "cannot make the CSR");
        goto done;
    }
    free(csr);
    rc = acme_post(&a, finalize, payload, &r, err, errlen);
    free(payload);
    if (rc != PROVEN_OK) {
        goto done;
    }
    order = acme_json(&r, "finalize", err, errlen);
    acme_resp_free(&r);
    rc = PROVEN_ERR;
    if (order == NULL) {
        goto done;
    }
    json_decref(order);
    order = acme_poll(&a, order_url, "order", "pending ready processing",
                      err, errlen);
    if (order == NULL) {
        goto done;
    }
    if (!json_is_string(json_object_get(order, "status"))
        || strcmp(json_string_value(json_object_get(order, "status")),
                  "valid") != 0
        || provend_json_text(order, "certificate", cert_url, sizeof(cert_url))
           != PROVEN_OK)
    {
        proven_errf(err, errlen, "order: not valid, or no certificate URL");
        goto done;
    }

    if (acme_post(&a, cert_url, NULL, &r, err, errlen) != PROVEN_OK) {
        goto done;
    }
    if (r.status != 200 || r.body == NULL
        || strncmp(r.body, "-----BEGIN CERTIFICATE-----", 27) != 0)
    {
        proven_errf(err, errlen, "certificate: HTTP %ld, not a PEM chain",
                    r.status);
        acme_resp_free(&r);
        goto done;
    }
    *chain = r.body;
    r.body = NULL;
    acme_resp_free(&r);
    rc = PROVEN_OK;

done:

    json_decref(order);
    if (a.curl != NULL) {
        curl_easy_cleanup(a.curl);
    }
    return rc;
}


int
provend_acme_revoke(const provend_acme_config_t *cfg, const char *chain,
    int reason, char *err, size_t errlen)
{
    int           rc, der_len;
    BIO          *bio;
    X509         *leaf;
    char         *cert64, *payload;
    uint8_t      *der;
    acme_t        a;
    acme_resp_t   r;

    /* the first certificate of the chain: the one to revoke */
    bio = BIO_new_mem_buf(chain, -1);
    leaf = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    der = NULL;
    der_len = leaf != NULL ? i2d_X509(leaf, &der) : -1;
    X509_free(leaf);
    if (der_len <= 0) {
        proven_errf(err, errlen, "revoke: the chain holds no certificate");
        return PROVEN_ERR;
    }
    cert64 = acme_b64url(der, (size_t) der_len);
    OPENSSL_free(der);
    payload = NULL;
    if (cert64 == NULL
        || asprintf(&payload, "{\"certificate\":\"%s\",\"reason\":%d}",
                    cert64, reason) == -1)
    {
        payload = NULL;
    }
    free(cert64);
    if (payload == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }

    memset(&r, 0, sizeof(r));
    rc = acme_start(&a, cfg, err, errlen);
    if (rc == PROVEN_OK && a.revoke_cert[0] == '\0') {
        proven_errf(err, errlen, "directory: no revokeCert");
        rc = PROVEN_ERR;
    }
    if (rc == PROVEN_OK) {
        /* signed with the account that ordered it (its kid) */
        rc = acme_post(&a, a.revoke_cert, payload, &r, err, errlen);
        if (rc == PROVEN_OK && r.status != 200) {
            /* the server's problem document says why */
            json_decref(acme_json(&r, "revokeCert", err, errlen));
            rc = PROVEN_ERR;
        }
    }
    acme_resp_free(&r);
    free(payload);
    if (a.curl != NULL) {
        curl_easy_cleanup(a.curl);
    }
    return rc;
}
