/*
 * The KV stores' requests (kv.get, kv.set, kv.delete, kv.keys, key
 * stores) and the backend's open and close.
 */

#include "kv_int.h"


/* ---- requests ------------------------------------------------------------ */

static const char *
provend_kv_type_name(provend_kv_type_t type)
{
    switch (type) {
    case PROVEND_KV_STRING:  return "kv-string";
    case PROVEND_KV_KEY:     return "kv-key";
    default:                 return "kv-bytes";
    }
}


/* The checks of every request, then ad for its scope, store and key. */
static int
provend_kv_check(provend_kv_t *kv, provend_storage_req_t *req, uint8_t *ad,
    size_t *ad_len, size_t *canon_len)
{
    char    canon[PROVEND_SCOPE_CANON_MAX];
    size_t  key_len;

    if (!provend_name_valid(req->name, strlen(req->name))) {
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "store and db names are 1..%d of "
                                 "[a-z0-9_-]", PROVEND_NAME_MAX);
        return PROVEN_ERR;
    }

    switch (req->op) {

    case PROVEND_OP_KV_SET:
        if (req->type == PROVEND_KV_KEY) {
            if (req->value != NULL && req->value_len != PROVEND_ED25519_LEN)
            {
                provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                         "a key store value is a 32-byte "
                                         "Ed25519 seed (or absent)");
                return PROVEN_ERR;
            }
        } else if (req->value == NULL) {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "\"value\" is missing");
            return PROVEN_ERR;
        } else if (req->value_len > kv->max_value) {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "value longer than %zu bytes",
                                     kv->max_value);
            return PROVEN_ERR;
        }
        /* fall through */

    case PROVEND_OP_KV_GET:
    case PROVEND_OP_KV_DELETE:
    case PROVEND_OP_KV_SIGN:
        if (req->key == NULL || req->key_len == 0
            || req->key_len > PROVEND_KV_KEY_MAX)
        {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "a key is 1..%d bytes",
                                     PROVEND_KV_KEY_MAX);
            return PROVEN_ERR;
        }
        if (req->op == PROVEND_OP_KV_SIGN
            && req->message_len > PROVEND_KV_SIGN_MAX)
        {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "message longer than %d bytes",
                                     PROVEND_KV_SIGN_MAX);
            return PROVEN_ERR;
        }
        break;

    case PROVEND_OP_KV_KEYS:
        if (req->limit > PROVEND_KV_LIMIT_MAX
            || req->prefix_len > PROVEND_KV_KEY_MAX
            || (req->cursor && strlen(req->cursor) > 2 * PROVEND_KV_KEY_MAX))
        {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "limit is at most %d, prefix at most "
                                     "%d bytes", PROVEND_KV_LIMIT_MAX,
                                     PROVEND_KV_KEY_MAX);
            return PROVEN_ERR;
        }
        break;

    default:
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "not a KV operation");
        return PROVEN_ERR;
    }

    if (req->op == PROVEND_OP_KV_SIGN) {
        req->type = PROVEND_KV_KEY;
    }

    if (provend_scope_canonical(&req->scope, provend_kv_type_name(req->type),
                                req->name, canon, sizeof(canon), canon_len)
        != PROVEN_OK)
    {
        provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                 "bad scope or store name");
        return PROVEN_ERR;
    }

    key_len = req->op == PROVEND_OP_KV_KEYS ? 0 : req->key_len;

    proven_put_be32(ad, (uint32_t) *canon_len);
    memcpy(ad + 4, canon, *canon_len);
    proven_put_be32(ad + 4 + *canon_len, (uint32_t) key_len);
    if (key_len) {
        memcpy(ad + 8 + *canon_len, req->key, key_len);
    }
    *ad_len = 8 + *canon_len + key_len;
    return PROVEN_OK;
}


static EVP_PKEY *
provend_kv_ed25519(const uint8_t *seed, size_t len)
{
    if (len != PROVEND_ED25519_LEN) {
        return NULL;
    }

    return EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, len);
}


/* {"value"|"public_key": ..., "revision"}; a missing key: value null. */
static void
provend_kv_get(provend_kv_t *kv, provend_storage_req_t *req,
    const uint8_t *ad, size_t ad_len)
{
    int                  have_seed;
    size_t               publen;
    uint8_t              seed[PROVEND_ED25519_LEN], pub[PROVEND_ED25519_LEN];
    uint64_t             hash, revision;
    EVP_PKEY            *pkey;
    cbor_item_t         *map, *value, *rev;
    provend_kv_entry_t  *e;

    hash = provend_kv_hash(kv->hash_key, ad, ad_len);
    value = NULL;
    revision = 0;
    have_seed = 0;

    pthread_mutex_lock(&kv->lock);
    e = provend_kv_find(kv, ad, ad_len, hash);
    if (e != NULL && e->revision != 0) {
        revision = e->revision;
        if (req->type == PROVEND_KV_STRING) {
            value = cbor_build_stringn((const char *) e->value,
                                       e->value_len);
        } else if (req->type == PROVEND_KV_BYTES) {
            value = cbor_build_bytestring(e->value, e->value_len);
        } else if (e->value_len == sizeof(seed)) {
            memcpy(seed, e->value, sizeof(seed));
            have_seed = 1;
        }
    }
    pthread_mutex_unlock(&kv->lock);

    if (revision == 0) {
        value = cbor_new_null();

    } else if (req->type == PROVEND_KV_KEY) {
        pkey = have_seed ? provend_kv_ed25519(seed, sizeof(seed)) : NULL;
        OPENSSL_cleanse(seed, sizeof(seed));
        publen = sizeof(pub);
        if (pkey == NULL
            || EVP_PKEY_get_raw_public_key(pkey, pub, &publen) != 1)
        {
            EVP_PKEY_free(pkey);
            provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR,
                                     "stored key is unusable");
            req->done(req);
            return;
        }
        EVP_PKEY_free(pkey);
        value = cbor_build_bytestring(pub, publen);
    }

    map = cbor_new_definite_map(2);
    rev = revision <= UINT32_MAX ? cbor_build_uint32((uint32_t) revision)
                                 : cbor_build_uint64(revision);

    if (map == NULL || value == NULL || rev == NULL
        || proven_cbor_map_put(map, req->type == PROVEND_KV_KEY
                                    ? "public_key" : "value", value)
           != PROVEN_OK)
    {
        goto nomem;
    }
    value = NULL;

    if (proven_cbor_map_put(map, "revision", rev) != PROVEN_OK) {
        rev = NULL;
        goto nomem;
    }

    req->result = map;
    req->done(req);
    return;

nomem:

    if (value != NULL) {
        cbor_decref(&value);
    }
    if (rev != NULL) {
        cbor_decref(&rev);
    }
    if (map != NULL) {
        cbor_decref(&map);
    }
    provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "out of memory");
    req->done(req);
}


static void
provend_kv_sign(provend_kv_t *kv, provend_storage_req_t *req,
    const uint8_t *ad, size_t ad_len)
{
    int                  found;
    size_t               siglen;
    uint8_t              seed[PROVEND_ED25519_LEN], sig[64];
    uint64_t             hash;
    EVP_PKEY            *pkey;
    EVP_MD_CTX          *ctx;
    cbor_item_t         *map;
    provend_kv_entry_t  *e;

    hash = provend_kv_hash(kv->hash_key, ad, ad_len);

    pthread_mutex_lock(&kv->lock);
    e = provend_kv_find(kv, ad, ad_len, hash);
    found = e != NULL && e->revision != 0 && e->value_len == sizeof(seed);
    if (found) {
        memcpy(seed, e->value, sizeof(seed));
    }
    pthread_mutex_unlock(&kv->lock);

    if (!found) {
        provend_storage_req_fail(req, PROVEND_ST_NOT_FOUND,
                                 "no such key in the key store");
        req->done(req);
        return;
    }

    pkey = provend_kv_ed25519(seed, sizeof(seed));
    OPENSSL_cleanse(seed, sizeof(seed));
    ctx = EVP_MD_CTX_new();
    siglen = sizeof(sig);

    if (pkey == NULL || ctx == NULL
        || EVP_DigestSignInit(ctx, NULL, NULL, NULL, pkey) != 1
        || EVP_DigestSign(ctx, sig, &siglen, req->message, req->message_len)
           != 1)
    {
        provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "signing failed");
        goto done;
    }

    map = cbor_new_definite_map(1);
    if (map == NULL
        || proven_cbor_map_put(map, "signature",
                               cbor_build_bytestring(sig, siglen))
           != PROVEN_OK)
    {
        if (map != NULL) {
            cbor_decref(&map);
        }
        provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "out of memory");
        goto done;
    }

    req->result = map;

done:

    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    req->done(req);
}


static int
provend_kv_utf8(const uint8_t *s, size_t len)
{
    size_t    i, n, k;
    uint32_t  cp;

    for (i = 0; i < len; i += n) {
        if (s[i] < 0x80) {
            n = 1;
            continue;
        }

        if ((s[i] & 0xe0) == 0xc0) {
            n = 2;
            cp = s[i] & 0x1f;
        } else if ((s[i] & 0xf0) == 0xe0) {
            n = 3;
            cp = s[i] & 0x0f;
        } else if ((s[i] & 0xf8) == 0xf0) {
            n = 4;
            cp = s[i] & 0x07;
        } else {
            return 0;
        }

        if (i + n > len) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }

        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800)
            || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))
            || (cp >= 0xd800 && cp <= 0xdfff))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * Keys in byte order from the cursor (hex of the last key returned) or
 * the prefix.  Keys that are UTF-8 come back as text, others as bytes:
 * a text key and the byte string of its UTF-8 are the same key.
 */
static void
provend_kv_keys(provend_kv_t *kv, provend_storage_req_t *req,
    const uint8_t *ad, size_t canon_len)
{
    char                *hex;
    size_t               n, from_len, last_len;
    uint8_t              from[PROVEND_KV_KEY_MAX], last[PROVEND_KV_KEY_MAX];
    uint64_t             limit;
    const uint8_t       *canon, *k;
    cbor_item_t         *map, *keys, *item, *cursor;
    provend_kv_entry_t  *e;

    canon = ad + 4;
    limit = req->limit ? req->limit : PROVEND_KV_LIMIT_DEFAULT;
    hex = NULL;
    cursor = NULL;
    last_len = 0;

    if (req->cursor != NULL) {
        if (proven_hex_decode(req->cursor, strlen(req->cursor), from,
                              sizeof(from), &from_len) != PROVEN_OK)
        {
            provend_storage_req_fail(req, PROVEND_ST_BAD_REQUEST,
                                     "bad cursor");
            req->done(req);
            return;
        }
    } else {
        from_len = req->prefix_len;
        if (from_len) {
            memcpy(from, req->prefix, from_len);
        }
    }

    map = cbor_new_definite_map(2);
    keys = cbor_new_definite_array(limit);
    if (map == NULL || keys == NULL) {
        goto nomem_unlocked;
    }

    n = 0;

    pthread_mutex_lock(&kv->lock);

    /*
     * The store's keys from the prefix (or past the cursor) on: those with
     * the prefix follow one another, so the first without it ends them.
     */
    e = provend_kv_seek(kv, canon, canon_len, from, from_len, NULL);

    for ( ; e != NULL; e = e->forward[0]) {
        if (e->canon_len != canon_len
            || memcmp(provend_kv_canon(e), canon, canon_len) != 0)
        {
            break;
        }

        k = provend_kv_key(e);

        if (e->key_len < req->prefix_len
            || (req->prefix_len
                && memcmp(k, req->prefix, req->prefix_len) != 0))
        {
            break;
        }

        if (e->revision == 0
            || (req->cursor != NULL && e->key_len == from_len
                && memcmp(k, from, from_len) == 0))
        {
            continue;   /* not durable yet, or returned already */
        }

        if (n == limit) {
            /* One more exists: the cursor is the last key returned. */
            hex = malloc(2 * last_len + 1);
            if (hex == NULL) {
                goto nomem;
            }
            proven_hex_encode(last, last_len, hex);
            cursor = cbor_build_string(hex);
            if (cursor == NULL) {
                goto nomem;
            }
            break;
        }

        item = provend_kv_utf8(k, e->key_len)
               ? cbor_build_stringn((const char *) k, e->key_len)
               : cbor_build_bytestring(k, e->key_len);
        if (item == NULL || !cbor_array_push(keys, item)) {
            if (item != NULL) {
                cbor_decref(&item);
            }
            goto nomem;
        }
        cbor_decref(&item);

        memcpy(last, k, e->key_len);
        last_len = e->key_len;
        n++;
    }

    pthread_mutex_unlock(&kv->lock);

    if (cursor == NULL) {
        cursor = cbor_new_null();
    }

    if (cursor == NULL || proven_cbor_map_put(map, "keys", keys) != PROVEN_OK)
    {
        goto nomem_unlocked;
    }
    keys = NULL;

    if (proven_cbor_map_put(map, "cursor", cursor) != PROVEN_OK) {
        cursor = NULL;
        goto nomem_unlocked;
    }

    free(hex);
    req->result = map;
    req->done(req);
    return;

nomem:

    pthread_mutex_unlock(&kv->lock);

nomem_unlocked:

    if (cursor != NULL) {
        cbor_decref(&cursor);
    }
    if (keys != NULL) {
        cbor_decref(&keys);
    }
    if (map != NULL) {
        cbor_decref(&map);
    }
    free(hex);
    provend_storage_req_fail(req, PROVEND_ST_INTERNAL, "out of memory");
    req->done(req);
}


/* Queues a set or delete for the log thread; the answer comes from it. */
static void
provend_kv_write(provend_kv_t *kv, provend_storage_req_t *req,
    const uint8_t *ad, size_t ad_len)
{
    size_t               cost;
    uint64_t             hash, latest;
    provend_kv_entry_t  *e;

    hash = provend_kv_hash(kv->hash_key, ad, ad_len);

    if (req->op == PROVEND_OP_KV_SET && req->value == NULL) {
        /* A key store makes its own key. */
        req->value = malloc(PROVEND_ED25519_LEN);
        if (req->value == NULL
            || RAND_bytes(req->value, PROVEND_ED25519_LEN) != 1)
        {
            provend_storage_req_fail(req, PROVEND_ST_INTERNAL,
                                     "no random bytes for a key");
            req->done(req);
            return;
        }
        req->value_len = PROVEND_ED25519_LEN;
    }

    pthread_mutex_lock(&kv->lock);

    if (kv->stopping || kv->broken) {
        provend_storage_req_fail(req, PROVEND_ST_STORAGE_ERROR, "%s",
                                 kv->stopping
                                 ? "storage is closing"
                                 : "KV writes are refused until provend "
                                   "restarts: a failed write could not be "
                                   "undone in the log");
        pthread_mutex_unlock(&kv->lock);
        req->done(req);
        return;
    }

    e = provend_kv_find(kv, ad, ad_len, hash);
    latest = e != NULL ? e->latest : 0;

    if (req->has_if_revision && req->if_revision != latest) {
        pthread_mutex_unlock(&kv->lock);
        provend_storage_req_fail(req, PROVEND_ST_REVISION_MISMATCH,
                                 "revision is %llu, not %llu",
                                 (unsigned long long) latest,
                                 (unsigned long long) req->if_revision);
        req->done(req);
        return;
    }

    if (req->op == PROVEND_OP_KV_DELETE) {
        req->existed = latest != 0;
        if (e == NULL || (latest == 0 && e->pending == 0)) {
            pthread_mutex_unlock(&kv->lock);
            provend_kv_answer_write(req);    /* nothing to delete */
            return;
        }
        e->latest = 0;
        req->revision = 0;

    } else {
        cost = req->value_len
               + (e == NULL ? provend_kv_entry_cost(ad_len,
                                                    PROVEND_KV_LEVELS) : 0);
        if (kv->memory + cost > kv->memory_max) {
            pthread_mutex_unlock(&kv->lock);
            provend_storage_req_fail(req, PROVEND_ST_TOO_LARGE,
                                     "KV storage is full (%zu bytes in "
                                     "memory, limit %zu)", kv->memory,
                                     kv->memory_max);
            req->done(req);
            return;
        }

        if (e == NULL) {
            e = provend_kv_insert(kv, ad, ad_len, hash);
            if (e == NULL) {
                pthread_mutex_unlock(&kv->lock);
                provend_storage_req_fail(req, PROVEND_ST_INTERNAL,
                                         "out of memory");
                req->done(req);
                return;
            }
        }

        kv->memory += req->value_len;
        e->latest = latest + 1;
        req->revision = e->latest;
    }

    e->pending++;
    req->priv = e;
    req->next = NULL;

    if (kv->tail != NULL) {
        kv->tail->next = req;
    } else {
        kv->head = req;
        pthread_cond_broadcast(&kv->cond);
    }
    kv->tail = req;

    pthread_mutex_unlock(&kv->lock);
}


void
provend_kv_submit(provend_kv_t *kv, provend_storage_req_t *req)
{
    uint8_t  ad[PROVEND_KV_AD_MAX];
    size_t   ad_len, canon_len;

    req->status = PROVEND_ST_OK;
    req->error[0] = '\0';
    req->next = NULL;

    if (provend_kv_check(kv, req, ad, &ad_len, &canon_len) != PROVEN_OK) {
        req->done(req);
        return;
    }

    switch (req->op) {
    case PROVEND_OP_KV_GET:
        provend_kv_get(kv, req, ad, ad_len);
        break;
    case PROVEND_OP_KV_SIGN:
        provend_kv_sign(kv, req, ad, ad_len);
        break;
    case PROVEND_OP_KV_KEYS:
        provend_kv_keys(kv, req, ad, canon_len);
        break;
    default:
        provend_kv_write(kv, req, ad, ad_len);
        break;
    }
}


int
provend_kv_peek(provend_kv_t *kv, const provend_scope_t *scope,
    const char *store, provend_kv_type_t type, const uint8_t *key,
    size_t key_len, provend_kv_peek_pt fn, void *data)
{
    char                 canon[PROVEND_SCOPE_CANON_MAX];
    size_t               canon_len, ad_len;
    uint8_t              ad[PROVEND_KV_AD_MAX];
    uint64_t             hash;
    provend_kv_entry_t  *e;

    /* A key store answers with a public key: the general path does it. */
    if (type == PROVEND_KV_KEY || key_len == 0
        || key_len > PROVEND_KV_KEY_MAX
        || provend_scope_canonical(scope, provend_kv_type_name(type), store,
                                   canon, sizeof(canon), &canon_len)
           != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    proven_put_be32(ad, (uint32_t) canon_len);
    memcpy(ad + 4, canon, canon_len);
    proven_put_be32(ad + 4 + canon_len, (uint32_t) key_len);
    memcpy(ad + 8 + canon_len, key, key_len);
    ad_len = 8 + canon_len + key_len;

    hash = provend_kv_hash(kv->hash_key, ad, ad_len);

    pthread_mutex_lock(&kv->lock);
    e = provend_kv_find(kv, ad, ad_len, hash);
    if (e != NULL && e->revision != 0) {
        fn(data, e->value, e->value_len, e->revision);
    } else {
        fn(data, NULL, 0, 0);
    }
    pthread_mutex_unlock(&kv->lock);

    return PROVEN_OK;
}


/* ---- open and close ------------------------------------------------------ */

static void
provend_kv_free(provend_kv_t *kv)
{
    if (kv->list != NULL) {
        provend_kv_clear(kv);
        free(kv->list);
    }
    provend_kv_segment_close(kv);
    EVP_CIPHER_CTX_free(kv->ctx);
    EVP_CIPHER_CTX_free(kv->value_ctx);
    free(kv->buckets);
    free(kv->buf);
    free(kv->dir);
    OPENSSL_cleanse(kv->master, sizeof(kv->master));
    OPENSSL_cleanse(kv->open_key, sizeof(kv->open_key));
    OPENSSL_cleanse(kv->value_salt, sizeof(kv->value_salt));
    OPENSSL_cleanse(kv->hash_key, sizeof(kv->hash_key));
    pthread_cond_destroy(&kv->cond);
    pthread_mutex_destroy(&kv->lock);
    free(kv);
}


provend_kv_t *
provend_kv_open(const char *storage_dir, const uint8_t master_key[32],
    size_t max_value, size_t memory_max, char *err, size_t errlen)
{
    provend_kv_t  *kv;

    kv = calloc(1, sizeof(*kv));
    if (kv == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }

    pthread_mutex_init(&kv->lock, NULL);
    pthread_cond_init(&kv->cond, NULL);
    kv->fd = -1;
    kv->level = 1;
    kv->max_value = max_value ? max_value : PROVEND_KV_VALUE_DEFAULT;
    kv->memory_max = memory_max ? memory_max : PROVEND_KV_MEMORY_DEFAULT;
    kv->nbuckets = PROVEND_KV_BUCKETS_MIN;
    memcpy(kv->master, master_key, PROVEND_KEY_LEN);

    if (kv->max_value > PROVEND_KV_VALUE_LIMIT) {
        proven_errf(err, errlen, "KV values are at most %d bytes",
                    PROVEND_KV_VALUE_LIMIT);
        goto failed;
    }

    kv->buckets = calloc(kv->nbuckets, sizeof(*kv->buckets));
    kv->list = calloc(1, sizeof(*kv->list)
                         + PROVEND_KV_LEVELS * sizeof(kv->list->forward[0]));
    if (kv->buckets == NULL || kv->list == NULL
        || asprintf(&kv->dir, "%s/kv", storage_dir) == -1)
    {
        kv->dir = NULL;
        proven_errf(err, errlen, "out of memory");
        goto failed;
    }
    kv->list->level = PROVEND_KV_LEVELS;

    if (RAND_bytes((uint8_t *) kv->hash_key, sizeof(kv->hash_key)) != 1
        || RAND_bytes((uint8_t *) &kv->rng, sizeof(kv->rng)) != 1)
    {
        proven_errf(err, errlen, "no random bytes");
        goto failed;
    }
    kv->rng |= 1;

    kv->value_ctx = EVP_CIPHER_CTX_new();
    if (kv->value_ctx == NULL
        || EVP_EncryptInit_ex(kv->value_ctx, EVP_aes_256_gcm(), NULL, NULL,
                              NULL) != 1)
    {
        proven_errf(err, errlen, "cannot set up the KV value cipher");
        goto failed;
    }

    if (provend_mkdirs(kv->dir, 0700, err, errlen) != PROVEN_OK
        || provend_kv_recover(kv, err, errlen) != PROVEN_OK)
    {
        goto failed;
    }

    if (pthread_create(&kv->thread, NULL, provend_kv_thread, kv) != 0) {
        proven_errf(err, errlen, "cannot start the KV log thread");
        goto failed;
    }
    kv->thread_started = 1;

    provend_info("storage: %zu KV keys loaded (%" PRIu64 " log bytes)",
                 kv->nentries, kv->log_bytes);
    return kv;

failed:

    provend_kv_free(kv);
    return NULL;
}


void
provend_kv_close(provend_kv_t *kv)
{
    if (kv == NULL) {
        return;
    }

    if (kv->thread_started) {
        pthread_mutex_lock(&kv->lock);
        kv->stopping = 1;
        pthread_cond_broadcast(&kv->cond);
        pthread_mutex_unlock(&kv->lock);
        pthread_join(kv->thread, NULL);
    }

    provend_kv_free(kv);
}


void
provend_kv_pause(provend_kv_t *kv)
{
    pthread_mutex_lock(&kv->lock);
    kv->paused = 1;
    while (kv->busy) {
        pthread_cond_wait(&kv->cond, &kv->lock);
    }
    pthread_mutex_unlock(&kv->lock);
}


void
provend_kv_resume(provend_kv_t *kv)
{
    pthread_mutex_lock(&kv->lock);
    kv->paused = 0;
    pthread_cond_broadcast(&kv->cond);
    pthread_mutex_unlock(&kv->lock);
}


void
provend_kv_set_replica(provend_kv_t *kv)
{
    kv->replica = 1;
}
