/*
 * Enclave mode's master key: asked of keyd (keyd.h) at start, before the
 * node serves anything.  keyd releases a key-encryption key to this code
 * only; the master key itself is made here and lives on the host's disk
 * only sealed with it (keys.c).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "net/proven_net.h"
#include "attest/provider.h"
#include "keyd.h"
#include "log.h"
#include "master.h"
#include "util.h"


#define PROVEND_KEYD_TIMEOUT_MS   10000
#define PROVEND_KEYD_BACKOFF_MS   500
#define PROVEND_KEYD_BACKOFF_MAX  5000
#define PROVEND_KEYD_FINAL        2       /* a refusal not to ask again */


/* One request on c, its ok result in res (the caller frees res). */
static int
provend_master_call(proven_conn_t *c, cbor_item_t *req,
    proven_response_t *res, char *err, size_t errlen)
{
    int  rc;

    if (req == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    rc = proven_conn_call(c, req, res, err, errlen);
    cbor_decref(&req);
    if (rc != PROVEN_OK) {
        return PROVEN_ERR;
    }
    if (!res->ok) {
        proven_errf(err, errlen, "keyd refused: %s: %s", res->code,
                    res->message);
        /* an answer asking again cannot change */
        return strcmp(res->code, "not_newest") == 0 ? PROVEND_KEYD_FINAL
                                                     : PROVEN_ERR;
    }
    return PROVEN_OK;
}


/* One exchange with keyd: the key-encryption key into kek. */
static int
provend_master_ask(const provend_keyd_client_t *cfg, const proven_addr_t *addr,
    provend_provider_t *provider, const provend_keyd_ask_t *ask,
    const uint8_t *release, size_t release_len,
    uint8_t kek[PROVEND_KEY_LEN], char *err, size_t errlen)
{
    uint8_t                user_data[PROVEND_KEYD_USER_DATA_MAX];
    const char            *field;
    int                    rc;
    size_t                 len, msglen;
    uint8_t                nonce[PROVEND_KEYD_NONCE_LEN], pub[32], eph[32];
    uint8_t                sealed[PROVEND_KEYD_SEALED_LEN], sig[64];
    uint8_t                box[PROVEND_KEY_LEN];
    uint8_t                ad[PROVEND_KEYD_NONCE_LEN + PROVEND_KEYD_ID_MAX];
    uint8_t                msg[PROVEND_KEYD_ANSWER_MAX];
    EVP_PKEY              *xkey;
    cbor_item_t           *req;
    proven_buf_t           bnonce, bud, bpub;
    proven_conn_t          c;
    proven_response_t      res;
    provend_attest_job_t   job;

    memset(&job, 0, sizeof(job));
    memset(&res, 0, sizeof(res));
    xkey = NULL;
    rc = PROVEN_ERR;

    if (proven_conn_connect(&c, addr, PROVEND_KEYD_TIMEOUT_MS,
                            PROVEND_KEYD_FRAME_MAX, err, errlen)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    if (provend_master_call(&c, proven_request_new(1, "challenge"), &res, err,
                            errlen) != PROVEN_OK)
    {
        goto done;
    }
    if (proven_cbor_fixed(res.result, "nonce", nonce, sizeof(nonce))
        != PROVEN_OK)
    {
        proven_errf(err, errlen, "keyd's challenge holds no 32-byte nonce");
        goto done;
    }
    proven_response_free(&res);

    /* a key of this exchange only, bound into the document */
    len = sizeof(pub);
    xkey = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    if (xkey == NULL || EVP_PKEY_get_raw_public_key(xkey, pub, &len) != 1) {
        proven_errf(err, errlen, "cannot make an X25519 key");
        goto done;
    }
    bnonce = (proven_buf_t) { nonce, sizeof(nonce), 1 };
    bud = (proven_buf_t) { user_data,
                           provend_keyd_user_data(ask->purpose,
                                                  ask->backup_id,
                                                  ask->backup_parent,
                                                  user_data),
                           1 };
    bpub = (proven_buf_t) { pub, sizeof(pub), 1 };
    if (provend_attest_job_init(&job, &bnonce, &bud, &bpub) != PROVEN_OK
        || (ask->attest != NULL ? ask->attest(ask->attest_arg, &job)
                                : provend_attest_sync(provider, &job))
           != PROVEN_OK)
    {
        proven_errf(err, errlen, "attestation for keyd: %s",
                    job.err[0] ? job.err : "out of memory");
        goto done;
    }

    field = ask->purpose == PROVEND_KEYD_FOR_BACKUP_MADE ? "backup_made"
            : ask->purpose == PROVEND_KEYD_FOR_BACKUP_RESTORE
              ? "backup_restore" : NULL;
    req = proven_request_new(2, "release");
    if (req != NULL
        && (proven_cbor_map_put(req, "key_id",
                                cbor_build_string(cfg->key_id)) != PROVEN_OK
            || proven_cbor_map_put(req, "document",
                                   cbor_build_bytestring(job.doc,
                                                         job.doc_len))
               != PROVEN_OK
            || (release != NULL
                && proven_cbor_map_put(req, "release",
                                       cbor_build_bytestring(release,
                                                             release_len))
                   != PROVEN_OK)
            || (field != NULL
                && proven_cbor_map_put(req, field,
                                       cbor_build_bytestring(
                                           ask->backup_id,
                                           PROVEND_BACKUP_ID_LEN))
                   != PROVEN_OK)
            || (ask->purpose == PROVEND_KEYD_FOR_BACKUP_MADE
                && proven_cbor_map_put(req, "backup_parent",
                                       cbor_build_bytestring(
                                           ask->backup_parent,
                                           PROVEND_BACKUP_ID_LEN))
                   != PROVEN_OK)))
    {
        cbor_decref(&req);
        req = NULL;
    }
    proven_conn_deadline(&c, PROVEND_KEYD_TIMEOUT_MS);
    rc = provend_master_call(&c, req, &res, err, errlen);
    if (rc != PROVEN_OK) {
        rc = rc == PROVEND_KEYD_FINAL ? rc : PROVEN_ERR;
        goto done;
    }
    rc = PROVEN_ERR;
    if (proven_cbor_fixed(res.result, "ephemeral", eph, sizeof(eph))
        != PROVEN_OK
        || proven_cbor_fixed(res.result, "sealed", sealed, sizeof(sealed))
           != PROVEN_OK
        || proven_cbor_fixed(res.result, "signature", sig, sizeof(sig))
           != PROVEN_OK)
    {
        proven_errf(err, errlen, "keyd's answer is not {ephemeral (32), "
                    "sealed (%d), signature (64)}", PROVEND_KEYD_SEALED_LEN);
        goto done;
    }

    /* keyd's, or anyone's: only the pinned identity's signature says */
    msglen = provend_keyd_answer_message(nonce, cfg->key_id, pub, eph, sealed,
                                         msg);
    if (provend_keyd_verify(cfg->identity, msg, msglen, sig) != PROVEN_OK) {
        proven_errf(err, errlen, "the answer is not signed by the keyd this "
                    "node trusts (--keyd-identity)");
        goto done;
    }
    len = provend_keyd_sealed_ad(nonce, cfg->key_id, ad);
    if (provend_keyd_box_key(xkey, eph, pub, eph, box) != PROVEN_OK
        || provend_open(box, ad, len, sealed, sizeof(sealed), kek)
           != PROVEN_OK)
    {
        proven_errf(err, errlen, "the key keyd sealed does not open");
        goto done;
    }
    rc = PROVEN_OK;

done:

    OPENSSL_cleanse(box, sizeof(box));
    proven_response_free(&res);
    provend_attest_job_free(&job);
    EVP_PKEY_free(xkey);
    proven_conn_close(&c);
    return rc;
}


int
provend_master_kek(const provend_keyd_client_t *cfg,
    provend_provider_t *provider, uint8_t kek[PROVEND_KEY_LEN], char *err,
    size_t errlen)
{
    provend_keyd_ask_t  ask;

    memset(&ask, 0, sizeof(ask));
    return provend_master_kek_for(cfg, provider, &ask, kek, err, errlen);
}


int
provend_master_kek_for(const provend_keyd_client_t *cfg,
    provend_provider_t *provider, const provend_keyd_ask_t *ask,
    uint8_t kek[PROVEND_KEY_LEN], char *err, size_t errlen)
{
    int              rc;
    size_t           release_len;
    uint8_t         *release;
    unsigned         backoff, wait_s;
    uint64_t         until;
    proven_addr_t    addr;
    struct timespec  ts;

    if (proven_addr_parse(cfg->address, &addr, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    release = NULL;
    release_len = 0;
    if (cfg->release_file != NULL
        && proven_read_file(cfg->release_file, PROVEND_KEYD_RELEASE_MAX,
                            &release, &release_len, err, errlen)
           != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    wait_s = ask->wait_s != 0 ? ask->wait_s : cfg->wait_s;
    until = provend_now_ms() + (uint64_t) wait_s * 1000;
    backoff = PROVEND_KEYD_BACKOFF_MS;
    for ( ;; ) {
        err[0] = '\0';
        rc = provend_master_ask(cfg, &addr, provider, ask, release,
                                release_len, kek, err, errlen);
        if (rc == PROVEND_KEYD_FINAL) {
            rc = PROVEN_ERR;
            break;
        }
        if (rc == PROVEN_OK || ask->once
            || (wait_s != 0 && provend_now_ms() + backoff > until))
        {
            break;
        }
        provend_warn("keyd %s: %s; asking again in %u ms", addr.text, err,
                     backoff);
        ts.tv_sec = backoff / 1000;
        ts.tv_nsec = (long) (backoff % 1000) * 1000000;
        nanosleep(&ts, NULL);
        backoff = backoff * 2 > PROVEND_KEYD_BACKOFF_MAX
                  ? PROVEND_KEYD_BACKOFF_MAX : backoff * 2;
    }
    free(release);
    if (rc == PROVEN_OK) {
        provend_info("keyd %s released key \"%s\"", addr.text, cfg->key_id);
    }
    return rc;
}


int
provend_master_from_keyd(const provend_keyd_client_t *cfg,
    provend_provider_t *provider, const char *data_dir,
    uint8_t master[PROVEND_KEY_LEN],
    uint8_t sealed[PROVEND_MASTER_SEALED_LEN], char *err, size_t errlen)
{
    int      rc;
    uint8_t  kek[PROVEND_KEY_LEN];

    if (provend_master_kek(cfg, provider, kek, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    rc = provend_keys_load_sealed_master(data_dir, kek, master, sealed, err,
                                         errlen);
    OPENSSL_cleanse(kek, sizeof(kek));
    if (rc == PROVEN_OK) {
        provend_info("master key: released by keyd %s (key \"%s\")",
                     cfg->address, cfg->key_id);
    }
    return rc;
}
