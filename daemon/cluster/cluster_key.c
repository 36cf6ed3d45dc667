/*
 * The cluster key: one AES key every admitted node holds, for what the
 * cluster replicates.  See cluster.h.
 *
 * The node whose name sorts first in the cluster file makes it (once, kept
 * in DATA/keys/cluster.key); the others ask for it over NATS, where only
 * admitted nodes are (routes are mutual TLS with admitted certificates,
 * client ports on loopback).  Each node has a long-lived X25519 exchange
 * key and a document of its own binding it (user_data the exchange mark).
 * A request carries the asker's key and document; a holder checks that
 * document as admission does (chain, PCRs, mark), derives a box key from
 * X25519 and HKDF, and answers with its own key, document and the sealed
 * cluster key.  The asker checks the holder's document the same way.
 *
 * Holders answer on libnats' thread: what that thread reads (the key, our
 * exchange key and document, our PCRs) is under a mutex.
 */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <uv.h>

#include "cluster.h"
#include "log_int.h"
#include "core/keys.h"
#include "core/log.h"
#include "core/util.h"


#define PROVEND_CKEY_SUBJECT    "_proven.cluster.key"
#define PROVEND_CKEY_INFO       "proven-cluster-key-v1"
#define PROVEND_CKEY_FILE_AD    "proven-cluster-key-file-v1"
#define PROVEND_CKEY_TIMEOUT_MS 2000
#define PROVEND_CKEY_RENEW_MS   (10 * 60 * 1000)
#define PROVEND_CKEY_SEED_ASKS  3       /* unanswered, before the seed makes
                                         * a key: one may exist already */


struct provend_ckey_s {
    uv_loop_t            *loop;
    char                  path[4200];      /* DATA/keys/cluster.key */
    char                  dir[4096];
    int                   seed;            /* makes the key if it has none */
    int                   sealed;          /* on disk sealed with file_key */
    int                   in_memory;       /* never on disk */
    uint8_t               file_key[PROVEND_KEY_LEN];
    X509                 *root;
    void                 *server;
    provend_cluster_attest_pt  attest;
    natsConnection       *nc;
    natsSubscription     *sub;
    int                   asking;          /* a request under way */
    int                   attesting;

    int                   asks;            /* unanswered, the seed's */
    const char           *waiting;         /* why no key yet, for status */
    uint64_t              doc_at;          /* uv_now of our document */

    pthread_mutex_t       lock;            /* all below */
    pthread_cond_t        done_cond;
    int                   sub_done;        /* its last callback returned */
    int                   stopping;
    int                   have;
    uint8_t               key[PROVEND_KEY_LEN];
    EVP_PKEY             *xkey;            /* our X25519 exchange key */
    uint8_t               xpub[32];
    uint8_t              *doc;             /* binding xpub; NULL: not yet */
    size_t                doc_len;
    size_t                npcrs;
    proven_pcr_t          pcrs[PROVEN_ATT_PCRS_MAX];   /* peers must match */
    provend_measure_allowed_pt  measure;   /* or this allows, when set */
    void                 *measure_data;
};

typedef struct {
    uv_work_t             work;
    provend_ckey_t       *ck;
    uint8_t              *request;
    size_t                request_len;
    natsMsg              *reply;
    natsStatus            status;
    int                   log;          /* unanswered, the seed's: the
                                           cluster's log has had entries
                                           (1), has none (0), unknown (-1) */
} provend_ckey_ask_t;


/* ---- checks both sides make ------------------------------------------------ */

/*
 * doc (another node's) chains to root, matches our PCRs and binds a 32-byte
 * X25519 key with the exchange mark: that key into pub.
 */
static int
provend_ckey_check_doc(provend_ckey_t *ck, const uint8_t *doc, size_t len,
    uint8_t pub[32], char *err, size_t errlen)
{
    int                       rc;
    size_t                    i, j, npcrs;
    proven_pcr_t              pcrs[PROVEN_ATT_PCRS_MAX];
    proven_verify_opts_t      opts;
    proven_verify_status_t    vs;
    proven_attestation_doc_t  d;

    pthread_mutex_lock(&ck->lock);
    npcrs = ck->npcrs;
    memcpy(pcrs, ck->pcrs, sizeof(pcrs));
    pthread_mutex_unlock(&ck->lock);

    if (npcrs == 0 && ck->measure == NULL) {
        snprintf(err, errlen, "this node does not know its own PCRs yet");
        return PROVEN_ERR;
    }

    memset(&opts, 0, sizeof(opts));
    opts.root = ck->root;
    opts.at = PROVEN_AT_NOW;
    vs = proven_attestation_verify(doc, len, &opts, &d, err, errlen);
    rc = PROVEN_ERR;
    if (vs != PROVEN_VERIFY_OK) {
        goto done;
    }
    if (ck->measure != NULL) {
        /* the governance contract's set, not our own PCRs: a cluster
         * upgrades node by node */
        uint8_t  hash[32];

        if (provend_cluster_measurement(&d, hash) != PROVEN_OK) {
            snprintf(err, errlen, "its document lacks PCR 0, 1 or 2");
            goto done;
        }
        if (!ck->measure(ck->measure_data, hash, err, errlen)) {
            goto done;
        }
        npcrs = 0;
    }
    for (i = 0; i < npcrs; i++) {
        for (j = 0; j < d.pcr_count; j++) {
            if (d.pcrs[j].index == pcrs[i].index) {
                break;
            }
        }
        if (j == d.pcr_count || d.pcrs[j].len != pcrs[i].len
            || memcmp(d.pcrs[j].value, pcrs[i].value, pcrs[i].len) != 0)
        {
            snprintf(err, errlen, "its PCR %u is not this node's",
                     pcrs[i].index);
            goto done;
        }
    }
    if (!d.user_data.present
        || d.user_data.len != sizeof(PROVEN_CLUSTER_EXCHANGE_MARK) - 1
        || memcmp(d.user_data.data, PROVEN_CLUSTER_EXCHANGE_MARK,
                  d.user_data.len) != 0
        || !d.public_key.present || d.public_key.len != 32)
    {
        snprintf(err, errlen, "not a cluster exchange document");
        goto done;
    }
    memcpy(pub, d.public_key.data, 32);
    rc = PROVEN_OK;

done:

    proven_attestation_doc_free(&d);
    return rc;
}


/* The box key between our exchange key and theirs, for this pair. */
static int
provend_ckey_box_key(EVP_PKEY *ours, const uint8_t ours_pub[32],
    const uint8_t theirs[32], int we_ask, uint8_t out[PROVEND_KEY_LEN])
{
    /* info: the mark, the asker's key, the holder's key */
    return provend_keys_box(ours, theirs, PROVEND_CKEY_INFO,
                            we_ask ? ours_pub : theirs,
                            we_ask ? theirs : ours_pub, out);
}


/* ---- holding: answering on libnats' thread --------------------------------- */

static void
provend_ckey_on_request(natsConnection *nc, natsSubscription *sub,
    natsMsg *msg, void *closure)
{
    char                     err[PROVEN_ERR_LEN];
    size_t                   len;
    uint8_t                  theirs[32], box_key[PROVEND_KEY_LEN];
    uint8_t                  sealed[PROVEND_KEY_LEN + PROVEND_SEAL_OVERHEAD];
    uint8_t                 *out;
    cbor_item_t             *req, *pub, *doc, *answer;
    provend_ckey_t          *ck;

    (void) sub;
    ck = closure;
    answer = NULL;
    out = NULL;
    req = proven_cbor_load((const uint8_t *) natsMsg_GetData(msg),
                           (size_t) natsMsg_GetDataLength(msg), err,
                           sizeof(err));
    pub = req != NULL ? proven_cbor_map_get(req, "pub") : NULL;
    doc = req != NULL ? proven_cbor_map_get(req, "doc") : NULL;

    pthread_mutex_lock(&ck->lock);
    if (ck->stopping || !ck->have || ck->doc == NULL
        || natsMsg_GetReply(msg) == NULL
        || pub == NULL || doc == NULL || !cbor_isa_bytestring(doc)
        || !cbor_bytestring_is_definite(doc))
    {
        pthread_mutex_unlock(&ck->lock);
        goto done;                      /* another holder may answer */
    }
    pthread_mutex_unlock(&ck->lock);

    if (provend_ckey_check_doc(ck, cbor_bytestring_handle(doc),
                               cbor_bytestring_length(doc), theirs, err,
                               sizeof(err)) != PROVEN_OK)
    {
        provend_warn("cluster: a request for the cluster key refused: %s",
                     err);
        goto done;
    }

    pthread_mutex_lock(&ck->lock);
    if (provend_ckey_box_key(ck->xkey, ck->xpub, theirs, 0, box_key)
        == PROVEN_OK
        && provend_seal(box_key, ck->xpub, 32, ck->key, PROVEND_KEY_LEN,
                        sealed) == PROVEN_OK)
    {
        answer = cbor_new_definite_map(3);
        if (answer != NULL
            && (proven_cbor_map_put(answer, "pub",
                                    cbor_build_bytestring(ck->xpub, 32))
                != PROVEN_OK
                || proven_cbor_map_put(answer, "doc",
                       cbor_build_bytestring(ck->doc, ck->doc_len))
                   != PROVEN_OK
                || proven_cbor_map_put(answer, "box",
                       cbor_build_bytestring(sealed, sizeof(sealed)))
                   != PROVEN_OK))
        {
            cbor_decref(&answer);
        }
    }
    pthread_mutex_unlock(&ck->lock);
    OPENSSL_cleanse(box_key, sizeof(box_key));

    if (answer != NULL && proven_cbor_dump(answer, &out, &len) == PROVEN_OK) {
        natsConnection_Publish(nc, natsMsg_GetReply(msg), out, (int) len);
    }

done:

    free(out);
    if (answer != NULL) {
        cbor_decref(&answer);
    }
    if (req != NULL) {
        cbor_decref(&req);
    }
    natsMsg_Destroy(msg);
}


/* ---- asking ------------------------------------------------------------------ */

static void
provend_ckey_ask_work(uv_work_t *work)
{
    jsCtx               *js;
    jsErrCode            jerr;
    jsOptions            jo;
    natsStatus           s;
    jsStreamInfo        *si;
    provend_ckey_ask_t  *a;

    a = work->data;
    a->status = natsConnection_Request(&a->reply, a->ck->nc,
                                       PROVEND_CKEY_SUBJECT, a->request,
                                       (int) a->request_len,
                                       PROVEND_CKEY_TIMEOUT_MS);
    a->log = -1;
    if (a->status == NATS_OK || !a->ck->seed) {
        return;
    }
    /*
     * No holder answered.  Before the seed makes a key, the cluster's
     * JetStream (its meta leader: a quorum of the nodes) must say the
     * log has never held an entry: entries mean a key exists, held by
     * nodes this one cannot reach now (the host may be holding the
     * routes back), and a second key would split the cluster.
     */
    js = NULL;
    si = NULL;
    jerr = 0;
    jsOptions_Init(&jo);
    jo.Wait = PROVEND_CKEY_TIMEOUT_MS;
    s = natsConnection_JetStream(&js, a->ck->nc, &jo);
    if (s == NATS_OK) {
        s = js_GetStreamInfo(&si, js, PROVEND_LOG_STREAM, NULL, &jerr);
    }
    if (s == NATS_NOT_FOUND) {
        a->log = 0;
    } else if (s == NATS_OK) {
        a->log = si->State.LastSeq > 0;
    }
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
}


/* The key in DATA/keys/cluster.key (in enclave mode cluster.sealed, sealed
 * with a key of the master key's), the rename itself synced. */
static int
provend_ckey_save(provend_ckey_t *ck, const uint8_t *key)
{
    int      fd, rc;
    char     err[PROVEN_ERR_LEN];

    if (ck->in_memory) {
        return PROVEN_OK;
    }
    rc = ck->sealed
         ? provend_seal_file(ck->file_key, PROVEND_CKEY_FILE_AD, key,
                             PROVEND_KEY_LEN, ck->path, err, sizeof(err))
         : proven_write_file(ck->path, key, PROVEND_KEY_LEN, 0600, err,
                             sizeof(err));
    if (rc != PROVEN_OK) {
        provend_error("cluster: %s", err);
        return PROVEN_ERR;
    }
    fd = open(ck->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void) fsync(fd);
        close(fd);
    }
    return PROVEN_OK;
}


static void
provend_ckey_ask_done(uv_work_t *work, int status)
{
    char                     err[PROVEN_ERR_LEN];
    uint8_t                  theirs[32], box_key[PROVEND_KEY_LEN];
    uint8_t                  key[PROVEND_KEY_LEN];
    cbor_item_t             *ans, *pub, *doc, *box;
    provend_ckey_t          *ck;
    provend_ckey_ask_t      *a;

    a = work->data;
    ck = a->ck;
    ck->asking = 0;
    ans = NULL;

    if (status != 0 || a->status != NATS_OK || a->reply == NULL) {
        provend_debug("cluster: no holder of the cluster key answered (%s)",
                      status != 0 ? "cancelled"
                                  : natsStatus_GetText(a->status));
        if (!ck->seed || a->log == 0) {
            ck->asks++;
            ck->waiting = ck->seed ? "no holder answered: making the key "
                                     "after a few asks"
                                   : "asking holders: none answered yet";
        } else if (a->log == 1) {
            ck->waiting = "the cluster's log holds entries: waiting for a "
                          "holder of its key";
            provend_warn("cluster: the cluster's log holds entries, so its "
                         "key exists: waiting for a holder rather than "
                         "making another");
        } else {
            ck->waiting = "the cluster's JetStream has no quorum yet";
            provend_debug("cluster: the cluster's JetStream does not say "
                          "whether its log holds entries (no quorum yet)");
        }
        goto done;
    }

    ans = proven_cbor_load((const uint8_t *) natsMsg_GetData(a->reply),
                           (size_t) natsMsg_GetDataLength(a->reply), err,
                           sizeof(err));
    pub = ans != NULL ? proven_cbor_map_get(ans, "pub") : NULL;
    doc = ans != NULL ? proven_cbor_map_get(ans, "doc") : NULL;
    box = ans != NULL ? proven_cbor_map_get(ans, "box") : NULL;
    if (pub == NULL || doc == NULL || box == NULL
        || !cbor_isa_bytestring(doc) || !cbor_bytestring_is_definite(doc)
        || !cbor_isa_bytestring(box) || !cbor_bytestring_is_definite(box)
        || cbor_bytestring_length(box)
           != PROVEND_KEY_LEN + PROVEND_SEAL_OVERHEAD)
    {
        provend_warn("cluster: a malformed answer for the cluster key");
        ck->waiting = "an answer was refused (see the log)";
        goto done;
    }
    if (provend_ckey_check_doc(ck, cbor_bytestring_handle(doc),
                               cbor_bytestring_length(doc), theirs, err,
                               sizeof(err)) != PROVEN_OK)
    {
        provend_warn("cluster: an answer for the cluster key refused: %s",
                     err);
        ck->waiting = "an answer was refused (see the log)";
        goto done;
    }

    pthread_mutex_lock(&ck->lock);
    if (provend_ckey_box_key(ck->xkey, ck->xpub, theirs, 1, box_key)
        != PROVEN_OK
        || provend_open(box_key, theirs, 32, cbor_bytestring_handle(box),
                        cbor_bytestring_length(box), key) != PROVEN_OK)
    {
        pthread_mutex_unlock(&ck->lock);
        provend_warn("cluster: the cluster key does not open");
        ck->waiting = "an answer was refused (see the log)";
        goto done;
    }
    pthread_mutex_unlock(&ck->lock);

    if (provend_ckey_save(ck, key) != PROVEN_OK) {
        goto done;                      /* said by save */
    }
    pthread_mutex_lock(&ck->lock);
    memcpy(ck->key, key, PROVEND_KEY_LEN);
    ck->have = 1;
    pthread_mutex_unlock(&ck->lock);
    provend_info("cluster: received the cluster key from an attested "
                 "holder");

done:

    OPENSSL_cleanse(box_key, sizeof(box_key));
    OPENSSL_cleanse(key, sizeof(key));
    if (ans != NULL) {
        cbor_decref(&ans);
    }
    if (a->reply != NULL) {
        natsMsg_Destroy(a->reply);
    }
    free(a->request);
    free(a);
}


/* The seed's first key, once no holder answered. */
static void
provend_ckey_make(provend_ckey_t *ck)
{
    uint8_t  key[PROVEND_KEY_LEN];

    if (RAND_bytes(key, sizeof(key)) != 1
        || provend_ckey_save(ck, key) != PROVEN_OK)
    {
        provend_error("cluster: %s: cannot make the cluster key", ck->path);
        OPENSSL_cleanse(key, sizeof(key));
        return;
    }
    pthread_mutex_lock(&ck->lock);
    memcpy(ck->key, key, PROVEND_KEY_LEN);
    ck->have = 1;
    pthread_mutex_unlock(&ck->lock);
    OPENSSL_cleanse(key, sizeof(key));
    if (ck->in_memory) {
        provend_info("cluster: made the cluster key; kept in memory only");
    } else if (ck->sealed) {
        provend_info("cluster: made the cluster key; kept on disk only "
                     "sealed (%s)", ck->path);
    } else {
        provend_warn("cluster: made the cluster key in %s: it is stored on "
                     "disk in plain text (local mode)", ck->path);
    }
}


static void
provend_ckey_attested(void *data, int rc, const uint8_t *doc, size_t len,
    const char *err)
{
    provend_ckey_t  *ck;
    uint8_t         *copy;

    ck = data;
    ck->attesting = 0;
    if (rc != PROVEN_OK) {
        provend_warn("cluster: no exchange document: %s", err);
        return;
    }
    copy = malloc(len);
    if (copy == NULL) {
        return;
    }
    memcpy(copy, doc, len);
    pthread_mutex_lock(&ck->lock);
    free(ck->doc);
    ck->doc = copy;
    ck->doc_len = len;
    pthread_mutex_unlock(&ck->lock);
    ck->doc_at = uv_now(ck->loop);
}


void
provend_ckey_tick(provend_ckey_t *ck, const proven_pcr_t *pcrs,
    size_t npcrs, int can_ask, int alone)
{
    int                  have;
    char                 err[PROVEN_ERR_LEN];
    size_t               len;
    uint8_t             *out;
    cbor_item_t         *req;
    proven_buf_t         nonce, ud, pub;
    provend_ckey_ask_t  *a;

    pthread_mutex_lock(&ck->lock);
    ck->npcrs = npcrs;
    memcpy(ck->pcrs, pcrs, npcrs * sizeof(*pcrs));
    have = ck->have;
    pthread_mutex_unlock(&ck->lock);

    if (ck->doc == NULL
        || uv_now(ck->loop) - ck->doc_at > PROVEND_CKEY_RENEW_MS)
    {
        /* documents age (their leaf certificates live hours): renewed
         * well before, and the old one used meanwhile */
        if (!ck->attesting) {
            memset(&nonce, 0, sizeof(nonce));
            memset(&ud, 0, sizeof(ud));
            ud.data = (uint8_t *) PROVEN_CLUSTER_EXCHANGE_MARK;
            ud.len = sizeof(PROVEN_CLUSTER_EXCHANGE_MARK) - 1;
            ud.present = 1;
            pub = ud;
            pub.data = ck->xpub;
            pub.len = 32;
            if (ck->attest(ck->server, &nonce, &ud, &pub,
                           provend_ckey_attested, ck, err, sizeof(err))
                == PROVEN_OK)
            {
                ck->attesting = 1;
            }
        }
        if (ck->doc == NULL) {
            ck->waiting = "making this node's exchange document";
            return;
        }
    }
    if (!have && ck->seed && (alone || ck->asks >= PROVEND_CKEY_SEED_ASKS)) {
        /* asked and no holder answered: the cluster has no key yet */
        provend_ckey_make(ck);
        return;
    }
    if (!have && !can_ask) {
        ck->waiting = "no peer admitted yet";
    }
    if (have || !can_ask || ck->asking) {
        return;
    }

    req = cbor_new_definite_map(2);
    out = NULL;
    if (req == NULL
        || proven_cbor_map_put(req, "pub", cbor_build_bytestring(ck->xpub,
                                                                 32))
           != PROVEN_OK
        || proven_cbor_map_put(req, "doc", cbor_build_bytestring(ck->doc,
                                                                 ck->doc_len))
           != PROVEN_OK
        || proven_cbor_dump(req, &out, &len) != PROVEN_OK
        || (a = calloc(1, sizeof(*a))) == NULL)
    {
        free(out);
        if (req != NULL) {
            cbor_decref(&req);
        }
        return;
    }
    cbor_decref(&req);
    a->ck = ck;
    a->request = out;
    a->request_len = len;
    a->work.data = a;
    if (uv_queue_work(ck->loop, &a->work, provend_ckey_ask_work,
                      provend_ckey_ask_done) != 0)
    {
        free(out);
        free(a);
        return;
    }
    ck->asking = 1;
}


const char *
provend_ckey_waiting(provend_ckey_t *ck)
{
    return ck->waiting != NULL ? ck->waiting : "starting";
}


int
provend_ckey_fingerprint(provend_ckey_t *ck, char hex[17])
{
    int      have;
    uint8_t  digest[SHA256_DIGEST_LENGTH];

    pthread_mutex_lock(&ck->lock);
    have = ck->have;
    if (have) {
        /* names the key without giving it away */
        SHA256(ck->key, PROVEND_KEY_LEN, digest);
    }
    pthread_mutex_unlock(&ck->lock);
    if (have) {
        proven_hex_encode(digest, 8, hex);
    }
    return have;
}


int
provend_ckey_get(provend_ckey_t *ck, uint8_t key[PROVEND_KEY_LEN])
{
    int  have;

    pthread_mutex_lock(&ck->lock);
    have = ck->have;
    if (have) {
        memcpy(key, ck->key, PROVEND_KEY_LEN);
    }
    pthread_mutex_unlock(&ck->lock);
    return have;
}


/* ---- the module ------------------------------------------------------------ */

static void
provend_ckey_on_complete(void *closure)
{
    provend_ckey_t  *ck;

    ck = closure;
    pthread_mutex_lock(&ck->lock);
    ck->sub_done = 1;
    pthread_cond_broadcast(&ck->done_cond);
    pthread_mutex_unlock(&ck->lock);
}


static void
provend_ckey_on_connected(natsConnection *nc, void *closure)
{
    (void) nc;
    (void) closure;
    provend_debug("cluster: connected to our nats-server");
}


void
provend_ckey_set_measure(provend_ckey_t *ck,
    provend_measure_allowed_pt measure, void *data)
{
    /* before libnats' thread answers anyone: set once at the start */
    ck->measure = measure;
    ck->measure_data = data;
}


provend_ckey_t *
provend_ckey_open(void *loop, const char *data_dir, int seed, X509 *root,
    unsigned client_port, void *server, provend_cluster_attest_pt attest,
    const uint8_t *file_key, int in_memory, char *err, size_t errlen)
{
    int              fd;
    uint8_t          buf[PROVEND_KEY_LEN + PROVEND_SEAL_OVERHEAD + 1];
    struct stat      sb;
    size_t           len;
    ssize_t          n;
    natsStatus       s;
    natsOptions     *opts;
    provend_ckey_t  *ck;

    ck = calloc(1, sizeof(*ck));
    if (ck == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&ck->lock, NULL);
    pthread_cond_init(&ck->done_cond, NULL);
    ck->loop = loop;
    ck->seed = seed;
    ck->root = root;
    ck->server = server;
    ck->attest = attest;
    snprintf(ck->dir, sizeof(ck->dir), "%.4000s/keys", data_dir);
    snprintf(ck->path, sizeof(ck->path), "%s/cluster.key", ck->dir);
    (void) mkdir(ck->dir, 0700);
    if (file_key != NULL) {
        /* the host writes this disk: a key in clear there may be its own */
        if (access(ck->path, F_OK) == 0) {
            snprintf(err, errlen, "%s is a cluster key in clear, which "
                     "enclave mode never uses: remove it", ck->path);
            goto failed;
        }
        ck->sealed = 1;
        memcpy(ck->file_key, file_key, PROVEND_KEY_LEN);
        snprintf(ck->path, sizeof(ck->path), "%s/cluster.sealed", ck->dir);
    }

    ck->in_memory = in_memory;
    fd = in_memory ? -1 : open(ck->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW
                                         | O_NONBLOCK);
    if (in_memory) {
        /* nothing of a file: this start's key comes from a peer */
    } else if (fd >= 0) {
        /* one byte more than it holds: a longer file is not one */
        n = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode)
            ? read(fd, buf, sizeof(buf)) : -1;
        close(fd);
        if (ck->sealed) {
            n = n == PROVEND_KEY_LEN + PROVEND_SEAL_OVERHEAD
                && provend_open(ck->file_key,
                                (const uint8_t *) PROVEND_CKEY_FILE_AD,
                                sizeof(PROVEND_CKEY_FILE_AD) - 1, buf,
                                (size_t) n, ck->key) == PROVEN_OK
                ? PROVEND_KEY_LEN : -1;
        } else if (n == PROVEND_KEY_LEN) {
            memcpy(ck->key, buf, PROVEND_KEY_LEN);
        }
        OPENSSL_cleanse(buf, sizeof(buf));
        if (n != PROVEND_KEY_LEN) {
            OPENSSL_cleanse(ck->key, sizeof(ck->key));
            snprintf(err, errlen, "%s: not a %d-byte key%s", ck->path,
                     PROVEND_KEY_LEN, ck->sealed ? " sealed with this "
                     "node's master key" : "");
            goto failed;
        }
        ck->have = 1;
    } else if (errno != ENOENT) {
        snprintf(err, errlen, "%s: %s", ck->path, strerror(errno));
        goto failed;
    }

    ck->xkey = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    len = 32;
    if (ck->xkey == NULL
        || EVP_PKEY_get_raw_public_key(ck->xkey, ck->xpub, &len) != 1)
    {
        snprintf(err, errlen, "cannot make the exchange key");
        goto failed;
    }

    /* the connection to our own nats-server comes up when it does */
    opts = provend_cluster_nats_options(client_port, 500);
    s = opts != NULL ? NATS_OK : NATS_NO_MEMORY;
    if (s == NATS_OK) {
        /* with a callback, Connect returns at once and keeps trying */
        natsOptions_SetRetryOnFailedConnect(opts, true,
                                            provend_ckey_on_connected, ck);
        s = natsConnection_Connect(&ck->nc, opts);
        natsOptions_Destroy(opts);
    }
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
        snprintf(err, errlen, "cannot set up the NATS client: %s",
                 natsStatus_GetText(s));
        goto failed;
    }
    s = natsConnection_Subscribe(&ck->sub, ck->nc, PROVEND_CKEY_SUBJECT,
                                 provend_ckey_on_request, ck);
    if (s == NATS_OK) {
        /* told when its last callback has returned: free waits for it */
        s = natsSubscription_SetOnCompleteCB(ck->sub,
                                             provend_ckey_on_complete, ck);
    }
    if (s != NATS_OK) {
        snprintf(err, errlen, "cannot subscribe: %s", natsStatus_GetText(s));
        goto failed;
    }
    return ck;

failed:

    provend_ckey_free(ck);
    return NULL;
}


void
provend_ckey_stop(provend_ckey_t *ck)
{
    pthread_mutex_lock(&ck->lock);
    ck->stopping = 1;
    pthread_mutex_unlock(&ck->lock);
    if (ck->sub != NULL) {
        natsSubscription_Unsubscribe(ck->sub);
    }
    if (ck->nc != NULL) {
        natsConnection_Close(ck->nc);
    }
}


void
provend_ckey_free(provend_ckey_t *ck)
{
    struct timespec  until;

    if (ck->sub != NULL) {
        /* a callback may still run on libnats' thread: wait for it */
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        pthread_mutex_lock(&ck->lock);
        while (!ck->sub_done
               && pthread_cond_timedwait(&ck->done_cond, &ck->lock, &until)
                  == 0)
        {
            /* woken: look again */
        }
        pthread_mutex_unlock(&ck->lock);
        natsSubscription_Destroy(ck->sub);
    }
    if (ck->nc != NULL) {
        natsConnection_Destroy(ck->nc);
    }
    EVP_PKEY_free(ck->xkey);
    free(ck->doc);
    OPENSSL_cleanse(ck->key, sizeof(ck->key));
    OPENSSL_cleanse(ck->file_key, sizeof(ck->file_key));
    pthread_cond_destroy(&ck->done_cond);
    pthread_mutex_destroy(&ck->lock);
    free(ck);
}
