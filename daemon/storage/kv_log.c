/*
 * The KV log: sealed records, segments, and the log thread that appends
 * and fsyncs batches.
 */

#include "kv_int.h"


/* ---- records ------------------------------------------------------------- */

static int
provend_kv_reserve(provend_kv_t *kv, size_t more)
{
    size_t    cap;
    uint8_t  *p;

    if (kv->buf_len + more <= kv->buf_cap) {
        return PROVEN_OK;
    }

    cap = kv->buf_cap ? kv->buf_cap : 64 * 1024;
    while (cap < kv->buf_len + more) {
        cap *= 2;
    }

    p = realloc(kv->buf, cap);
    if (p == NULL) {
        return PROVEN_ERR;
    }

    kv->buf = p;
    kv->buf_cap = cap;
    return PROVEN_OK;
}


void
provend_kv_nonce(uint64_t counter, uint8_t nonce[PROVEND_NONCE_LEN],
    uint8_t *aad_tail)
{
    memset(nonce, 0, 4);
    proven_put_be64(nonce + 4, counter);
    proven_put_be64(aad_tail, counter);
}


/* A value key: HKDF(master, "proven-kv-value-v2" | salt). */
int
provend_kv_value_key(const provend_kv_t *kv,
    const uint8_t salt[PROVEND_KV_VALUE_SALT], uint8_t key[PROVEND_KEY_LEN])
{
    uint8_t  info[18 + PROVEND_KV_VALUE_SALT];

    memcpy(info, "proven-kv-value-v2", 18);
    memcpy(info + 18, salt, PROVEND_KV_VALUE_SALT);
    return provend_keys_derive(kv->master, (const char *) info, sizeof(info),
                               key, PROVEND_KEY_LEN);
}


/*
 * A value sealed to ad: salt | nonce | ciphertext | tag, where the salt
 * names the value key and the nonce counts the values sealed under it.
 * Every run of the log thread takes a new random salt, and a new one after
 * 2^32 values, so no nonce comes twice under a key (random nonces under
 * one key for the store's whole life would reach GCM's limit).  Anyone
 * with the master key opens it knowing only ad: a replica can take it as
 * it is.
 */
static int
provend_kv_seal_value(provend_kv_t *kv, const uint8_t *ad, size_t ad_len,
    const uint8_t *value, size_t len, uint8_t *out)
{
    int       n, ok;
    uint8_t  *nonce, *ct, key[PROVEND_KEY_LEN];

    if (kv->value_seals == 0 || kv->value_seals == PROVEND_KV_VALUE_SEALS) {
        ok = RAND_bytes(kv->value_salt, sizeof(kv->value_salt)) == 1
             && provend_kv_value_key(kv, kv->value_salt, key) == PROVEN_OK
             && EVP_EncryptInit_ex(kv->value_ctx, NULL, NULL, key, NULL)
                == 1;
        OPENSSL_cleanse(key, sizeof(key));
        if (!ok) {
            kv->value_seals = 0;
            return PROVEN_ERR;
        }
        kv->value_seals = 1;      /* nonce 0 is never used: 0 means unset */
    }

    memcpy(out, kv->value_salt, PROVEND_KV_VALUE_SALT);
    nonce = out + PROVEND_KV_VALUE_SALT;
    memset(nonce, 0, 4);
    proven_put_be64(nonce + 4, kv->value_seals++);
    ct = nonce + PROVEND_NONCE_LEN;

    if (EVP_EncryptInit_ex(kv->value_ctx, NULL, NULL, NULL, nonce) != 1
        || EVP_EncryptUpdate(kv->value_ctx, NULL, &n, ad, (int) ad_len) != 1)
    {
        return PROVEN_ERR;
    }

    n = 0;
    if (len > 0
        && EVP_EncryptUpdate(kv->value_ctx, ct, &n, value, (int) len) != 1)
    {
        return PROVEN_ERR;
    }

    return EVP_EncryptFinal_ex(kv->value_ctx, ct + n, &n) == 1
           && EVP_CIPHER_CTX_ctrl(kv->value_ctx, EVP_CTRL_GCM_GET_TAG,
                                  PROVEND_TAG_LEN, ct + len) == 1
           ? PROVEN_OK : PROVEN_ERR;
}


/*
 * Appends one record to kv->buf: op, revision, ad and the value sealed to
 * ad (NULL for delete and BASE_END), the whole sealed under the segment.
 */
int
provend_kv_record(provend_kv_t *kv, int op, uint64_t revision,
    const uint8_t *ad, size_t ad_len, const uint8_t *value,
    size_t value_len)
{
    int       n;
    size_t    plain_len;
    uint8_t  *rec, *p, nonce[PROVEND_NONCE_LEN], aad_tail[12];

    plain_len = 1;
    if (op == PROVEND_KV_OP_SET || op == PROVEND_KV_OP_DELETE) {
        plain_len = PROVEND_KV_PLAIN_FIXED + ad_len;
        if (op == PROVEND_KV_OP_SET) {
            plain_len += PROVEND_KV_VALUE_OVERHEAD + value_len;
        }
    }

    if (provend_kv_reserve(kv, plain_len + PROVEND_KV_RECORD_EXTRA)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    rec = kv->buf + kv->buf_len;
    proven_put_be32(rec, (uint32_t) plain_len);

    p = rec + 4;
    p[0] = (uint8_t) op;
    if (op == PROVEND_KV_OP_SET || op == PROVEND_KV_OP_DELETE) {
        proven_put_be64(p + 1, revision);
        proven_put_be32(p + 9, (uint32_t) ad_len);
        memcpy(p + PROVEND_KV_PLAIN_FIXED, ad, ad_len);

        if (op == PROVEND_KV_OP_SET
            && provend_kv_seal_value(kv, ad, ad_len, value, value_len,
                                     p + PROVEND_KV_PLAIN_FIXED + ad_len)
               != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
    }

    provend_kv_nonce(kv->counter, nonce, aad_tail);
    proven_put_be32(aad_tail + 8, (uint32_t) plain_len);

    /* GCM encrypts in place. */
    if (EVP_EncryptInit_ex(kv->ctx, NULL, NULL, NULL, nonce) != 1
        || EVP_EncryptUpdate(kv->ctx, NULL, &n, kv->header,
                             PROVEND_KV_HEADER_LEN) != 1
        || EVP_EncryptUpdate(kv->ctx, NULL, &n, aad_tail, 12) != 1
        || EVP_EncryptUpdate(kv->ctx, p, &n, p, (int) plain_len) != 1
        || EVP_EncryptFinal_ex(kv->ctx, p + n, &n) != 1
        || EVP_CIPHER_CTX_ctrl(kv->ctx, EVP_CTRL_GCM_GET_TAG,
                               PROVEND_TAG_LEN, p + plain_len) != 1)
    {
        return PROVEN_ERR;
    }

    kv->buf_len += plain_len + PROVEND_KV_RECORD_EXTRA;
    kv->counter++;
    return PROVEN_OK;
}


/* A cipher context under the key of the segment whose header this is. */
EVP_CIPHER_CTX *
provend_kv_segment_ctx(provend_kv_t *kv, const uint8_t *header, int encrypt)
{
    int              ok;
    uint8_t          info[16 + PROVEND_KV_SALT_LEN], key[PROVEND_KEY_LEN];
    EVP_CIPHER_CTX  *ctx;

    memcpy(info, "proven-kv-log-v1", 16);
    memcpy(info + 16, header + 24, PROVEND_KV_SALT_LEN);

    if (provend_keys_derive(kv->master, (const char *) info, sizeof(info),
                            key, sizeof(key)) != PROVEN_OK)
    {
        return NULL;
    }

    ctx = EVP_CIPHER_CTX_new();
    ok = ctx != NULL
         && (encrypt
             ? EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, NULL)
             : EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, NULL))
            == 1;
    OPENSSL_cleanse(key, sizeof(key));

    if (!ok) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }

    return ctx;
}


int
provend_kv_path(const provend_kv_t *kv, uint64_t seqno, char *path,
    size_t len)
{
    return (size_t) snprintf(path, len, "%s/%016" PRIx64 ".log", kv->dir,
                             seqno) < len ? PROVEN_OK : PROVEN_ERR;
}


int
provend_kv_sync_dir(const provend_kv_t *kv)
{
    int  fd, rc;

    fd = open(kv->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return PROVEN_ERR;
    }

    rc = fsync(fd);
    close(fd);
    return rc == 0 ? PROVEN_OK : PROVEN_ERR;
}


int
provend_kv_write_all(int fd, const uint8_t *p, size_t len)
{
    ssize_t  n;

    while (len > 0) {
        n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return PROVEN_ERR;
        }
        p += n;
        len -= (size_t) n;
    }

    return PROVEN_OK;
}


/*
 * Creates segment seqno (its header in kv->header, its key in kv->ctx,
 * the write position after the header) and returns its descriptor.
 * Nothing in it is durable until the caller's fdatasync and dir sync.
 */
int
provend_kv_segment_create(provend_kv_t *kv, uint64_t seqno, int base,
    char *err, size_t errlen)
{
    int              fd;
    char             path[4096];
    uint8_t          header[PROVEND_KV_HEADER_LEN];
    EVP_CIPHER_CTX  *ctx;

    if (provend_kv_path(kv, seqno, path, sizeof(path)) != PROVEN_OK) {
        proven_errf(err, errlen, "KV log path too long");
        return -1;
    }

    memcpy(header, PROVEND_KV_MAGIC, 8);
    proven_put_be64(header + 8, seqno);
    proven_put_be64(header + 16, base ? PROVEND_KV_FLAG_BASE : 0);

    if (RAND_bytes(header + 24, PROVEND_KV_SALT_LEN) != 1) {
        proven_errf(err, errlen, "no random bytes for a KV log segment");
        return -1;
    }

    ctx = provend_kv_segment_ctx(kv, header, 1);
    if (ctx == NULL) {
        proven_errf(err, errlen, "cannot set up the KV log key");
        return -1;
    }

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0
        || provend_kv_write_all(fd, header, PROVEND_KV_HEADER_LEN)
           != PROVEN_OK)
    {
        proven_errf(err, errlen, "%.160s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            (void) unlink(path);
        }
        EVP_CIPHER_CTX_free(ctx);
        return -1;
    }

    /* From here on records are sealed for the new segment. */
    memcpy(kv->header, header, PROVEND_KV_HEADER_LEN);
    EVP_CIPHER_CTX_free(kv->ctx);
    kv->ctx = ctx;
    kv->counter = 0;
    return fd;
}


void
provend_kv_segment_close(provend_kv_t *kv)
{
    if (kv->fd >= 0) {
        close(kv->fd);
        kv->fd = -1;
    }
}


/*
 * The segment the log thread appends to: a new one per run (and after a
 * failed write); the very first one is an empty base.
 */
static int
provend_kv_segment_open(provend_kv_t *kv, char *err, size_t errlen)
{
    int  fd, base;

    if (kv->fd >= 0) {
        return PROVEN_OK;
    }

    base = kv->base_seqno == 0;
    fd = provend_kv_segment_create(kv, kv->seqno + 1, base, err, errlen);
    if (fd < 0) {
        return PROVEN_ERR;
    }

    kv->buf_len = 0;
    if (base
        && (provend_kv_record(kv, PROVEND_KV_OP_BASE_END, 0, NULL, 0, NULL,
                              0) != PROVEN_OK
            || provend_kv_write_all(fd, kv->buf, kv->buf_len) != PROVEN_OK))
    {
        proven_errf(err, errlen,
                    "cannot start the KV log: %s", strerror(errno));
        goto failed;
    }

    if (fdatasync(fd) != 0 || provend_kv_sync_dir(kv) != PROVEN_OK) {
        proven_errf(err, errlen, "cannot sync the KV log: %s", strerror(errno));
        goto failed;
    }

    kv->fd = fd;
    kv->seqno++;
    if (base) {
        kv->base_seqno = kv->seqno;
    }
    kv->offset = (off_t) (PROVEND_KV_HEADER_LEN + kv->buf_len);
    kv->log_bytes += (uint64_t) kv->offset;
    kv->buf_len = 0;
    return PROVEN_OK;

failed:

    {
        char  path[4096];

        close(fd);
        if (provend_kv_path(kv, kv->seqno + 1, path, sizeof(path))
            == PROVEN_OK)
        {
            (void) unlink(path);
        }
    }
    kv->buf_len = 0;
    return PROVEN_ERR;
}


/* ---- the log thread ------------------------------------------------------ */

/* Seals the batch's records, writes them, syncs: PROVEN_OK or an error. */
static int
provend_kv_log_batch(provend_kv_t *kv, provend_storage_req_t *batch,
    int *unknown, char *err, size_t errlen)
{
    provend_kv_entry_t     *e;
    provend_storage_req_t  *req;

    if (provend_kv_segment_open(kv, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    kv->buf_len = 0;

    for (req = batch; req != NULL; req = req->next) {
        e = req->priv;
        if (provend_kv_record(kv, req->op == PROVEND_OP_KV_SET
                                  ? PROVEND_KV_OP_SET : PROVEND_KV_OP_DELETE,
                              req->revision, provend_kv_ad(e), e->ad_len,
                              req->value, req->value_len) != PROVEN_OK)
        {
            proven_errf(err, errlen, "cannot seal a KV log record");
            goto failed;
        }
    }

    /* Recovery replays whole batches only: up to their last COMMIT. */
    if (provend_kv_record(kv, PROVEND_KV_OP_COMMIT, 0, NULL, 0, NULL, 0)
        != PROVEN_OK)
    {
        proven_errf(err, errlen, "cannot seal a KV log record");
        goto failed;
    }

    if (provend_kv_write_all(kv->fd, kv->buf, kv->buf_len) != PROVEN_OK
        || (!kv->replica && fdatasync(kv->fd) != 0))
    {
        proven_errf(err, errlen, "KV log write failed: %s", strerror(errno));
        goto failed;
    }

    kv->offset += (off_t) kv->buf_len;
    kv->log_bytes += kv->buf_len;
    kv->buf_len = 0;
    return PROVEN_OK;

failed:

    /*
     * Nothing of this batch may come back after a restart: cut the file
     * back to its durable end.  The next batch goes to a new segment, so
     * these counters are never used again under this key.
     */
    if (ftruncate(kv->fd, kv->offset) != 0 || fdatasync(kv->fd) != 0) {
        provend_error("KV log: cannot cut a failed write back: %s",
                      strerror(errno));
        *unknown = 1;
        snprintf(err + strlen(err), errlen - strlen(err),
                 "; whether it was stored is known after a restart");
    }
    provend_kv_segment_close(kv);
    kv->buf_len = 0;
    return PROVEN_ERR;
}


/* Under the lock: the batch is durable. */
static void
provend_kv_apply(provend_kv_t *kv, provend_storage_req_t *req)
{
    provend_kv_entry_t  *e;

    e = req->priv;
    req->priv = NULL;

    if (req->op == PROVEND_OP_KV_SET) {
        /* the pending value was counted in memory already */
        kv->memory -= req->value_len;
        provend_kv_commit_value(kv, e, req->revision, req->value,
                                req->value_len);
        req->value = NULL;
        req->value_len = 0;
    } else {
        provend_kv_commit_value(kv, e, 0, NULL, 0);
    }

    if (--e->pending == 0 && e->revision == 0) {
        provend_kv_remove(kv, e);
    }
}


/* Under the lock: the write failed, or one it was computed on did. */
static void
provend_kv_undo(provend_kv_t *kv, provend_storage_req_t *req)
{
    provend_kv_entry_t  *e;

    e = req->priv;
    req->priv = NULL;

    if (req->op == PROVEND_OP_KV_SET) {
        kv->memory -= req->value_len;
    }

    e->latest = e->revision;
    if (--e->pending == 0 && e->revision == 0) {
        provend_kv_remove(kv, e);
    }
}


/* kv.set answers with req->revision, kv.delete with req->existed. */
void
provend_kv_answer_write(provend_storage_req_t *req)
{
    req->done(req);
}


void *
provend_kv_thread(void *arg)
{
    int                     failed, unknown;
    char                    err[PROVEN_ERR_LEN];
    provend_kv_t           *kv;
    provend_storage_req_t  *batch, *req, *next, *last;

    kv = arg;

    for ( ;; ) {
        pthread_mutex_lock(&kv->lock);
        kv->busy = 0;
        pthread_cond_broadcast(&kv->cond);      /* a pause waits for it */
        while ((kv->head == NULL || kv->paused) && !kv->stopping) {
            pthread_cond_wait(&kv->cond, &kv->lock);
        }
        batch = kv->head;
        kv->head = NULL;
        kv->tail = NULL;
        kv->busy = batch != NULL;
        pthread_mutex_unlock(&kv->lock);

        if (batch == NULL) {
            break;      /* stopping, everything answered */
        }

        err[0] = '\0';
        unknown = 0;
        failed = provend_kv_log_batch(kv, batch, &unknown, err, sizeof(err))
                 != PROVEN_OK;

        pthread_mutex_lock(&kv->lock);

        /*
         * Records of a failed batch that could not be cut back may be
         * replayed by the next start: no write may be computed on a state
         * that does not hold them, so none is taken until then.
         */
        if (unknown) {
            kv->broken = 1;
        }

        if (failed) {
            /* Writes queued since were computed on this batch: fail them. */
            for (last = batch; last->next != NULL; last = last->next) {
                /* void */
            }
            last->next = kv->head;
            kv->head = NULL;
            kv->tail = NULL;
        }

        for (req = batch; req != NULL; req = req->next) {
            if (failed) {
                provend_kv_undo(kv, req);
                provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR, "%s",
                                         err);
            } else {
                provend_kv_apply(kv, req);
            }
        }

        pthread_mutex_unlock(&kv->lock);

        if (failed) {
            provend_error("storage: %s", err);
        }

        for (req = batch; req != NULL; req = next) {
            next = req->next;
            req->next = NULL;
            provend_kv_answer_write(req);
        }

        if (!failed) {
            provend_kv_compact(kv);
        }
    }

    /* This thread's OpenSSL state (DRBG, error queue). */
    OPENSSL_thread_stop();
    return NULL;
}
