/*
 * The node's certificate, kept by ACME orders: see tls.h.  Orders run on
 * libuv's thread pool (each bounded in time); the rest on the loop.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <uv.h>

#include "acme.h"
#include "tls.h"
#include "core/log.h"
#include "core/util.h"


#define TLS_CHECK_MS        (60 * 1000)
#define TLS_ORDER_S         300             /* one order, at most */
#define TLS_RETRY_MIN_S     60
#define TLS_RETRY_MAX_S     3600
#define TLS_PEM_MAX         (64 * 1024)
#define TLS_SEAL_INFO       "proven-tls-keys-v1"
#define TLS_AD_ACCOUNT      "proven-acme-account-v1"
#define TLS_AD_CERT         "proven-acme-cert-key-v1"
#define TLS_AD_CHAIN        "proven-acme-chain-v1"


struct provend_tls_s {
    uv_loop_t      *loop;
    char            dir[4096];              /* DATA/tls/acme */
    char            live[4096];
    char            domain[PROVEND_ACME_NAME_MAX + 1];
    char            directory[1024];
    char            contact[512];
    char            ca_file[4096];
    char            proxy[512];
    uint8_t         seal_key[PROVEND_KEY_LEN];
    EVP_PKEY       *account;
    int             have;                   /* a certificate */
    char           *chain;                  /* the live one's: what a
                                               revocation names (never
                                               the disk's, which the host
                                               may roll back) */
    time_t          not_before, not_after;
    int             ordering;
    unsigned        orders, failures, revocations;
    time_t          next_try;
    char            last_error[PROVEN_ERR_LEN];
    uv_timer_t      timer;
    int             stopping;
    int             cancel;                 /* an order under way stops */
    uv_work_t      *work;                   /* that order's */
};

typedef struct {
    uv_work_t       work;
    provend_tls_t  *t;
    EVP_PKEY       *cert_key;
    char           *chain;
    char           *revoke;                 /* the chain to revoke first */
    int             reason;
    int             revoked;
    int             rc;
    char            err[PROVEN_ERR_LEN];
} tls_order_t;


/* ---- what is kept, sealed ------------------------------------------------ */

/*
 * data sealed to path, bound to what it is and the domain (label:domain
 * as associated data): a file moved to another name does not open.
 */
static int
tls_seal_file(provend_tls_t *t, const char *label, const void *data,
    size_t len, const char *path, char *err, size_t errlen)
{
    char  ad[320];

    snprintf(ad, sizeof(ad), "%s:%s", label, t->domain);
    return provend_seal_file(t->seal_key, ad, data, len, path, err, errlen);
}


/*
 * path opened into *out (malloc()ed, NUL added): PROVEN_AGAIN when there
 * is no such file, PROVEN_ERR when it does not open.
 */
static int
tls_open_file(provend_tls_t *t, const char *label, const char *path,
    char **out, char *err, size_t errlen)
{
    char    ad[320];
    size_t  len;

    snprintf(ad, sizeof(ad), "%s:%s", label, t->domain);
    return provend_open_file(t->seal_key, ad, path, TLS_PEM_MAX,
                             (uint8_t **) out, &len, err, errlen);
}


/* A key as PEM (malloc()ed), or NULL. */
static char *
tls_key_pem(EVP_PKEY *key)
{
    BIO   *bio;
    char  *data, *pem;
    long   len;

    pem = NULL;
    bio = BIO_new(BIO_s_mem());
    if (bio != NULL
        && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1
        && (len = BIO_get_mem_data(bio, &data)) > 0
        && (pem = malloc((size_t) len + 1)) != NULL)
    {
        memcpy(pem, data, (size_t) len);
        pem[len] = '\0';
        OPENSSL_cleanse(data, (size_t) len);
    }
    BIO_free_all(bio);
    return pem;
}


/* Frees a secret's text, wiped first. */
static void
tls_free_secret(char *text)
{
    if (text != NULL) {
        OPENSSL_cleanse(text, strlen(text));
        free(text);
    }
}


static int
tls_save_key(provend_tls_t *t, EVP_PKEY *key, const char *label,
    const char *path, char *err, size_t errlen)
{
    int    rc;
    char  *pem;

    pem = tls_key_pem(key);
    if (pem == NULL) {
        proven_errf(err, errlen, "cannot write a key");
        return PROVEN_ERR;
    }
    rc = tls_seal_file(t, label, pem, strlen(pem), path, err, errlen);
    tls_free_secret(pem);
    return rc;
}


/* The key sealed at path into *out: PROVEN_AGAIN when there is none. */
static int
tls_load_key(provend_tls_t *t, const char *label, const char *path,
    EVP_PKEY **out, char *err, size_t errlen)
{
    int    rc;
    BIO   *bio;
    char  *pem;

    *out = NULL;
    rc = tls_open_file(t, label, path, &pem, err, errlen);
    if (rc != PROVEN_OK) {
        return rc;
    }
    bio = BIO_new_mem_buf(pem, -1);
    *out = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
                       : NULL;
    BIO_free(bio);
    tls_free_secret(pem);
    if (*out == NULL) {
        ERR_clear_error();
        proven_errf(err, errlen, "%s holds no key", path);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


static EVP_PKEY *
tls_new_key(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}


/* ---- the certificate ------------------------------------------------------ */

/* The chain's first certificate's validity, if it is key's. */
static int
tls_validity(const char *chain, EVP_PKEY *key, time_t *from, time_t *to)
{
    int         ok;
    BIO        *bio;
    X509       *x;
    struct tm   tm;

    bio = BIO_new_mem_buf(chain, -1);
    x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    ok = x != NULL && X509_check_private_key(x, key) == 1
         && ASN1_TIME_to_tm(X509_get0_notBefore(x), &tm) == 1;
    if (ok) {
        *from = timegm(&tm);
        ok = ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1;
        *to = timegm(&tm);
    }
    X509_free(x);
    if (!ok) {
        ERR_clear_error();
    }
    return ok ? PROVEN_OK : PROVEN_ERR;
}


/* LIVE/NAME.pem: the key, then the chain, for nginx. */
static int
tls_write_live(provend_tls_t *t, EVP_PKEY *key, const char *chain, char *err,
    size_t errlen)
{
    int    rc;
    BIO   *bio;
    char   path[4400], *pem;
    long   len;

    snprintf(path, sizeof(path), "%s/%s.pem", t->live, t->domain);
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL
        || PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1
        || BIO_puts(bio, chain) <= 0
        || (len = BIO_get_mem_data(bio, &pem)) <= 0)
    {
        BIO_free_all(bio);
        proven_errf(err, errlen, "cannot write the live pair");
        return PROVEN_ERR;
    }
    rc = proven_write_file(path, pem, (size_t) len, 0600, err, errlen);
    OPENSSL_cleanse(pem, (size_t) len);
    BIO_free_all(bio);
    return rc;
}


/* The certificate kept (its key sealed): made live if it still holds. */
static void
tls_load_cert(provend_tls_t *t)
{
    int        rc;
    char       path[4400], err[PROVEN_ERR_LEN];
    char      *chain;
    EVP_PKEY  *key;

    snprintf(path, sizeof(path), "%s/%s.key.sealed", t->dir, t->domain);
    rc = tls_load_key(t, TLS_AD_CERT, path, &key, err, sizeof(err));
    if (rc != PROVEN_OK) {
        if (rc == PROVEN_ERR) {
            provend_warn("tls: %s: ordering a new certificate", err);
        }
        return;
    }
    /* sealed too: the host cannot swap in a chain of its choosing for
     * the key (its public half is public) */
    snprintf(path, sizeof(path), "%s/%s.crt.sealed", t->dir, t->domain);
    err[0] = '\0';
    if (tls_open_file(t, TLS_AD_CHAIN, path, &chain, err, sizeof(err))
        != PROVEN_OK
        || tls_validity(chain, key, &t->not_before, &t->not_after)
           != PROVEN_OK
        || t->not_after <= time(NULL)
        || tls_write_live(t, key, chain, err, sizeof(err)) != PROVEN_OK)
    {
        provend_warn("tls: the certificate kept for %s is not usable%s%s: "
                     "ordering a new one", t->domain, err[0] ? ": " : "",
                     err);
        t->not_before = t->not_after = 0;
    } else {
        t->have = 1;
        t->chain = chain;
        chain = NULL;
        provend_info("tls: the certificate for %s kept, valid until %ld",
                     t->domain, (long) t->not_after);
    }
    free(chain);
    EVP_PKEY_free(key);
}


/* Renewed once a third of its lifetime is left. */
static time_t
tls_renew_at(const provend_tls_t *t)
{
    return t->not_before + (t->not_after - t->not_before) * 2 / 3;
}


/* ---- orders ----------------------------------------------------------------- */

/* The challenge certificate where nginx serves it, or removed. */
static int
tls_publish(void *data, const char *domain, const char *pem, char *err,
    size_t errlen)
{
    char            path[4400];
    provend_tls_t  *t = data;

    snprintf(path, sizeof(path), "%s/challenge/%s.pem", t->live, domain);
    if (pem == NULL) {
        (void) unlink(path);
        return PROVEN_OK;
    }
    return proven_write_file(path, pem, strlen(pem), 0600, err, errlen);
}


static void
tls_order_work(uv_work_t *work)
{
    tls_order_t            *o = work->data;
    provend_tls_t          *t = o->t;
    provend_acme_config_t   cfg;

    o->cert_key = tls_new_key();
    if (o->cert_key == NULL) {
        o->rc = PROVEN_ERR;
        snprintf(o->err, sizeof(o->err), "cannot make a key");
        return;
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.cancel = &t->cancel;
    cfg.directory = t->directory;
    cfg.domain = t->domain;
    cfg.contact = t->contact[0] != '\0' ? t->contact : NULL;
    cfg.ca_file = t->ca_file[0] != '\0' ? t->ca_file : NULL;
    cfg.proxy = t->proxy[0] != '\0' ? t->proxy : NULL;
    cfg.account_key = t->account;
    cfg.cert_key = o->cert_key;
    cfg.publish = tls_publish;
    cfg.publish_data = t;
    cfg.timeout_s = TLS_ORDER_S;
    if (o->revoke != NULL) {
        /* no new order when the old certificate still holds */
        if (provend_acme_revoke(&cfg, o->revoke, o->reason, o->err,
                                sizeof(o->err)) != PROVEN_OK)
        {
            o->rc = PROVEN_ERR;
            return;
        }
        o->revoked = 1;
    }
    o->rc = provend_acme_order(&cfg, &o->chain, o->err, sizeof(o->err));
}


static void
tls_order_done(uv_work_t *work, int status)
{
    char            path[4400], err[PROVEN_ERR_LEN];
    time_t          from, to;
    unsigned        wait;
    tls_order_t    *o = work->data;
    provend_tls_t  *t = o->t;

    t->ordering = 0;
    t->work = NULL;
    t->orders++;
    if (o->revoked) {
        /* still served until a new one comes, but no longer one to keep */
        t->revocations++;
        t->have = 0;
        free(t->chain);
        t->chain = NULL;
        provend_info("tls: the certificate for %s revoked", t->domain);
    }
    if (status == 0 && o->rc == PROVEN_OK
        && (strlen(o->chain) > TLS_PEM_MAX
            || tls_validity(o->chain, o->cert_key, &from, &to) != PROVEN_OK
            || to <= time(NULL)))
    {
        o->rc = PROVEN_ERR;
        snprintf(o->err, sizeof(o->err), "the chain is over 64 KiB, or its "
                 "certificate is not for the key of the CSR, or expired");
    }
    if (status == 0 && o->rc == PROVEN_OK) {
        /* sealed first: a live pair is never one a restart cannot find */
        snprintf(path, sizeof(path), "%s/%s.key.sealed", t->dir, t->domain);
        if (tls_save_key(t, o->cert_key, TLS_AD_CERT, path, err,
                         sizeof(err)) == PROVEN_OK)
        {
            snprintf(path, sizeof(path), "%s/%s.crt.sealed", t->dir,
                     t->domain);
            if (tls_seal_file(t, TLS_AD_CHAIN, o->chain, strlen(o->chain),
                              path, err, sizeof(err)) == PROVEN_OK
                && tls_write_live(t, o->cert_key, o->chain, err, sizeof(err))
                   == PROVEN_OK)
            {
                t->have = 1;
                free(t->chain);
                t->chain = o->chain;
                o->chain = NULL;
                t->not_before = from;
                t->not_after = to;
                t->failures = 0;
                t->last_error[0] = '\0';
                provend_info("tls: a certificate for %s, valid until %ld",
                             t->domain, (long) to);
                goto done;
            }
        }
        snprintf(o->err, sizeof(o->err), "%s", err);
    }

    if (status != 0) {
        snprintf(o->err, sizeof(o->err), "the order was cancelled");
    }
    t->failures++;
    wait = TLS_RETRY_MIN_S << (t->failures < 7 ? t->failures - 1 : 6);
    wait = wait < TLS_RETRY_MAX_S ? wait : TLS_RETRY_MAX_S;
    t->next_try = time(NULL) + wait;
    snprintf(t->last_error, sizeof(t->last_error), "%s", o->err);
    provend_warn("tls: no certificate for %s: %s; again in %u s", t->domain,
                 o->err, wait);

done:

    free(o->chain);
    free(o->revoke);
    EVP_PKEY_free(o->cert_key);
    free(o);
}


/* An order on the pool; revoke (taken) first when not NULL. */
static int
tls_order(provend_tls_t *t, char *revoke, int reason)
{
    tls_order_t  *o;

    if (t->ordering || t->stopping) {
        free(revoke);
        return PROVEN_AGAIN;
    }
    o = calloc(1, sizeof(*o));
    if (o == NULL) {
        free(revoke);
        return PROVEN_ERR;
    }
    o->t = t;
    o->revoke = revoke;
    o->reason = reason;
    o->work.data = o;
    if (uv_queue_work(t->loop, &o->work, tls_order_work, tls_order_done)
        != 0)
    {
        free(o);
        return PROVEN_ERR;
    }
    t->ordering = 1;
    t->work = &o->work;
    provend_info("tls: ordering a certificate for %s from %s", t->domain,
                 t->directory);
    return PROVEN_OK;
}


static void
tls_on_timer(uv_timer_t *timer)
{
    time_t          now;
    provend_tls_t  *t = timer->data;

    now = time(NULL);
    if ((!t->have || now >= tls_renew_at(t)) && now >= t->next_try) {
        (void) tls_order(t, NULL, 0);
    }
}


/* ---- the module ---------------------------------------------------------- */

provend_tls_t *
provend_tls_open(const provend_tls_config_t *cfg, char *err, size_t errlen)
{
    int             rc;
    char            path[4400];
    size_t          n;
    provend_tls_t  *t;

    err[0] = '\0';
    n = strlen(cfg->domain);
    if (n == 0 || n > PROVEND_ACME_NAME_MAX || cfg->domain[0] == '.'
        || cfg->domain[0] == '-'
        || strspn(cfg->domain, "abcdefghijklmnopqrstuvwxyz0123456789.-") != n)
    {
        proven_errf(err, errlen, "--acme-domain %s: a DNS name, lower case",
                    cfg->domain);
        return NULL;
    }
    if (strncmp(cfg->directory, "https://", 8) != 0) {
        proven_errf(err, errlen, "--acme-directory %s: an https URL",
                    cfg->directory);
        return NULL;
    }
    if (cfg->master == NULL) {
        proven_errf(err, errlen, "ACME needs a master key that outlives a "
                    "start (a key file, or keyd's): its keys are kept sealed "
                    "with it");
        return NULL;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    t->loop = cfg->loop;
    snprintf(t->dir, sizeof(t->dir), "%s/tls/acme", cfg->data_dir);
    if (cfg->live_dir != NULL) {
        snprintf(t->live, sizeof(t->live), "%s", cfg->live_dir);
    } else {
        snprintf(t->live, sizeof(t->live), "%s/tls/live", cfg->data_dir);
    }
    snprintf(t->domain, sizeof(t->domain), "%s", cfg->domain);
    snprintf(t->directory, sizeof(t->directory), "%s", cfg->directory);
    snprintf(t->contact, sizeof(t->contact), "%s",
             cfg->contact != NULL ? cfg->contact : "");
    snprintf(t->ca_file, sizeof(t->ca_file), "%s",
             cfg->ca_file != NULL ? cfg->ca_file : "");
    snprintf(t->proxy, sizeof(t->proxy), "%s",
             cfg->proxy != NULL ? cfg->proxy : "");
    snprintf(path, sizeof(path), "%s/challenge", t->live);
    if (provend_keys_derive(cfg->master, TLS_SEAL_INFO,
                            sizeof(TLS_SEAL_INFO) - 1, t->seal_key,
                            sizeof(t->seal_key)) != PROVEN_OK
        || provend_mkdirs(t->dir, 0700, err, errlen) != PROVEN_OK
        || provend_mkdirs(path, 0700, err, errlen) != PROVEN_OK)
    {
        goto failed;
    }

    /* the account: made here once, kept sealed */
    snprintf(path, sizeof(path), "%s/account.sealed", t->dir);
    rc = tls_load_key(t, TLS_AD_ACCOUNT, path, &t->account, err, errlen);
    if (rc == PROVEN_ERR) {
        /* nothing rests on the account: a new one replaces it */
        provend_warn("tls: %s: a new ACME account", err);
        err[0] = '\0';
    }
    if (rc != PROVEN_OK
        && ((t->account = tls_new_key()) == NULL
            || tls_save_key(t, t->account, TLS_AD_ACCOUNT, path, err, errlen)
               != PROVEN_OK))
    {
        goto failed;
    }

    /* a challenge a crash left behind is for no pending authorization */
    (void) tls_publish(t, t->domain, NULL, NULL, 0);
    tls_load_cert(t);
    uv_timer_init(t->loop, &t->timer);
    t->timer.data = t;
    uv_timer_start(&t->timer, tls_on_timer, 0, TLS_CHECK_MS);
    return t;

failed:

    if (err[0] == '\0') {
        proven_errf(err, errlen, "cannot set up ACME");
    }
    EVP_PKEY_free(t->account);
    OPENSSL_cleanse(t->seal_key, sizeof(t->seal_key));
    free(t);
    return NULL;
}


void
provend_tls_stop(provend_tls_t *t)
{
    if (t == NULL || t->stopping) {
        return;
    }
    t->stopping = 1;
    /* an order under way ends at its next step (and before it starts) */
    __atomic_store_n(&t->cancel, 1, __ATOMIC_RELAXED);
    if (t->work != NULL) {
        (void) uv_cancel((uv_req_t *) t->work);
    }
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *) &t->timer, NULL);
}


void
provend_tls_free(provend_tls_t *t)
{
    if (t == NULL) {
        return;
    }
    free(t->chain);
    EVP_PKEY_free(t->account);
    OPENSSL_cleanse(t->seal_key, sizeof(t->seal_key));
    free(t);
}


static void
tls_op_status(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    int             ok;
    cbor_item_t    *m;
    provend_tls_t  *t = subsystem;

    (void) op;
    m = cbor_new_indefinite_map();
    ok = m != NULL
         && proven_cbor_map_put(m, "domain", cbor_build_string(t->domain))
            == PROVEN_OK
         && proven_cbor_map_put(m, "state", cbor_build_string(
                                    t->ordering ? "ordering"
                                    : t->have ? "valid" : "none"))
            == PROVEN_OK
         && proven_cbor_map_put(m, "not_after",
                                cbor_build_uint64((uint64_t) t->not_after))
            == PROVEN_OK
         && proven_cbor_map_put(m, "renew_at",
                                cbor_build_uint64(t->have
                                    ? (uint64_t) tls_renew_at(t) : 0))
            == PROVEN_OK
         && proven_cbor_map_put(m, "orders", cbor_build_uint32(t->orders))
            == PROVEN_OK
         && proven_cbor_map_put(m, "revocations",
                                cbor_build_uint32(t->revocations))
            == PROVEN_OK
         && (t->last_error[0] == '\0'
             || proven_cbor_map_put(m, "last_error",
                                    cbor_build_string(t->last_error))
                == PROVEN_OK);
    if (!ok && m != NULL) {
        cbor_decref(&m);
    }
    provend_ops_reply_ok(reply, ctx, req->id, m);
}


static void
tls_op_renew(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    int             rc;
    provend_tls_t  *t = subsystem;

    (void) op;
    rc = tls_order(t, NULL, 0);
    if (rc == PROVEN_AGAIN) {
        provend_ops_reply_error(reply, ctx, req->id, "conflict",
                                t->stopping ? "the node is stopping"
                                            : "an order is under way");
    } else if (rc != PROVEN_OK) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "cannot start an order");
    } else {
        t->next_try = 0;
        provend_ops_reply_ok(reply, ctx, req->id, cbor_new_null());
    }
}


/*
 * tls.revoke {reason}: the live certificate revoked (RFC 5280 reason 0
 * unspecified, 1 keyCompromise, 3 affiliationChanged, 4 superseded, 5
 * cessationOfOperation; 0 unless given), then a new one ordered.
 * Answered once under way: tls.status says how it went.
 */
static void
tls_op_revoke(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    int             rc;
    char            path[4400], *chain;
    uint64_t        reason;
    cbor_item_t    *item;
    provend_tls_t  *t = subsystem;

    (void) op;
    reason = 0;
    item = proven_cbor_map_get(req->map, "reason");
    if (item != NULL && !proven_cbor_is_null(item)
        && (proven_cbor_uint(item, &reason) != PROVEN_OK
            || (reason != 0 && reason != 1 && (reason < 3 || reason > 5))))
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                "\"reason\" must be 0, 1, 3, 4 or 5 (RFC "
                                "5280's unspecified, keyCompromise, "
                                "affiliationChanged, superseded, "
                                "cessationOfOperation)");
        return;
    }
    if (t->ordering || t->stopping) {
        provend_ops_reply_error(reply, ctx, req->id, "conflict",
                                t->stopping ? "the node is stopping"
                                            : "an order is under way");
        return;
    }
    if (!t->have || t->chain == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "conflict",
                                "no certificate to revoke");
        return;
    }
    chain = strdup(t->chain);
    if (chain == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    /* no start from now on takes it up again, whatever comes of this */
    snprintf(path, sizeof(path), "%s/%s.key.sealed", t->dir, t->domain);
    (void) unlink(path);
    snprintf(path, sizeof(path), "%s/%s.crt.sealed", t->dir, t->domain);
    (void) unlink(path);
    rc = tls_order(t, chain, (int) reason);
    if (rc != PROVEN_OK) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "cannot start the revocation");
        return;
    }
    t->next_try = 0;
    provend_info("tls: revoking the certificate for %s (reason %d)",
                 t->domain, (int) reason);
    provend_ops_reply_ok(reply, ctx, req->id, cbor_new_null());
}


const provend_op_t  provend_tls_ops[] = {
    { "tls.status", PROVEND_CALLER_SOCKET, tls_op_status, 0 },
    { "tls.renew", PROVEND_CALLER_SOCKET, tls_op_renew, 0 },
    { "tls.revoke", PROVEND_CALLER_SOCKET, tls_op_revoke, 0 },
    { NULL, 0, NULL, 0 }
};
