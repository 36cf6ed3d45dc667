/* keyd's wire format and cryptography: see keyd.h. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cbor.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "keyd.h"
#include "util.h"


#define PROVEND_KEYD_BOX_INFO     "proven-keyd-box-v1"
#define PROVEND_KEYD_ANSWER_MARK  "proven-keyd-answer-v1"


int
provend_keyd_id_valid(const char *id)
{
    size_t  i, len;

    len = strlen(id);
    if (len == 0 || len > PROVEND_KEYD_ID_MAX) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9')
              || id[i] == '_' || id[i] == '-'))
        {
            return 0;
        }
    }
    return 1;
}


EVP_PKEY *
provend_keyd_load_ed25519(const char *path, int create, char *err,
    size_t errlen)
{
    size_t       len;
    uint8_t     *buf, seed[32];
    EVP_PKEY    *key;
    struct stat  st;

    if (stat(path, &st) != 0) {
        if (errno != ENOENT || !create) {
            proven_errf(err, errlen, "%s: %s", path, strerror(errno));
            return NULL;
        }
        if (RAND_bytes(seed, sizeof(seed)) != 1
            || proven_write_file(path, seed, sizeof(seed), 0600, err, errlen)
               != PROVEN_OK)
        {
            OPENSSL_cleanse(seed, sizeof(seed));
            if (err[0] == '\0') {
                proven_errf(err, errlen, "no random bytes");
            }
            return NULL;
        }
        OPENSSL_cleanse(seed, sizeof(seed));
    }

    if (proven_read_file(path, 33, &buf, &len, err, errlen) != PROVEN_OK) {
        return NULL;
    }
    key = NULL;
    if (len != 32) {
        proven_errf(err, errlen, "%s: %zu bytes, not an Ed25519 key (32)",
                    path, len);
    } else {
        key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, buf, 32);
        if (key == NULL) {
            proven_openssl_error(err, errlen, "Ed25519 key");
        }
    }
    OPENSSL_cleanse(buf, len);
    free(buf);
    return key;
}


int
provend_keyd_public(EVP_PKEY *key, uint8_t pub[PROVEND_KEYD_PUB_LEN])
{
    size_t  len;

    len = PROVEND_KEYD_PUB_LEN;
    return EVP_PKEY_get_raw_public_key(key, pub, &len) == 1
           && len == PROVEND_KEYD_PUB_LEN ? PROVEN_OK : PROVEN_ERR;
}


int
provend_keyd_sign(EVP_PKEY *key, const uint8_t *msg, size_t len,
    uint8_t sig[PROVEND_KEYD_SIG_LEN])
{
    int          ok;
    size_t       siglen;
    EVP_MD_CTX  *md;

    md = EVP_MD_CTX_new();
    siglen = PROVEND_KEYD_SIG_LEN;
    ok = md != NULL
         && EVP_DigestSignInit(md, NULL, NULL, NULL, key) == 1
         && EVP_DigestSign(md, sig, &siglen, msg, len) == 1
         && siglen == PROVEND_KEYD_SIG_LEN;
    EVP_MD_CTX_free(md);
    return ok ? PROVEN_OK : PROVEN_ERR;
}


int
provend_keyd_verify(const uint8_t pub[PROVEND_KEYD_PUB_LEN],
    const uint8_t *msg, size_t len, const uint8_t sig[PROVEND_KEYD_SIG_LEN])
{
    int          ok;
    EVP_PKEY    *key;
    EVP_MD_CTX  *md;

    key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub,
                                      PROVEND_KEYD_PUB_LEN);
    md = EVP_MD_CTX_new();
    ok = key != NULL && md != NULL
         && EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) == 1
         && EVP_DigestVerify(md, sig, PROVEND_KEYD_SIG_LEN, msg, len) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    return ok ? PROVEN_OK : PROVEN_ERR;
}


int
provend_keyd_box_key(EVP_PKEY *ours, const uint8_t theirs[32],
    const uint8_t asker_pub[32], const uint8_t ephemeral_pub[32],
    uint8_t out[PROVEND_KEY_LEN])
{
    return provend_keys_box(ours, theirs, PROVEND_KEYD_BOX_INFO, asker_pub,
                            ephemeral_pub, out);
}


size_t
provend_keyd_user_data(provend_keyd_for_t purpose,
    const uint8_t id[PROVEND_BACKUP_ID_LEN],
    const uint8_t parent[PROVEND_BACKUP_ID_LEN],
    uint8_t out[PROVEND_KEYD_USER_DATA_MAX])
{
    size_t  len;

    len = sizeof(PROVEN_KEYD_MARK) - 1;
    memcpy(out, PROVEN_KEYD_MARK, len);
    if (purpose == PROVEND_KEYD_FOR_KEY) {
        return len;
    }
    out[len++] = (uint8_t) purpose;
    memcpy(out + len, id, PROVEND_BACKUP_ID_LEN);
    len += PROVEND_BACKUP_ID_LEN;
    if (purpose == PROVEND_KEYD_FOR_BACKUP_MADE) {
        memcpy(out + len, parent, PROVEND_BACKUP_ID_LEN);
        len += PROVEND_BACKUP_ID_LEN;
    }
    return len;
}


size_t
provend_keyd_sealed_ad(const uint8_t nonce[PROVEND_KEYD_NONCE_LEN],
    const char *key_id, uint8_t out[PROVEND_KEYD_NONCE_LEN
                                    + PROVEND_KEYD_ID_MAX])
{
    size_t  len;

    len = strlen(key_id);     /* checked by provend_keyd_id_valid */
    memcpy(out, nonce, PROVEND_KEYD_NONCE_LEN);
    memcpy(out + PROVEND_KEYD_NONCE_LEN, key_id, len);
    return PROVEND_KEYD_NONCE_LEN + len;
}


size_t
provend_keyd_answer_message(const uint8_t nonce[32], const char *key_id,
    const uint8_t asker_pub[32], const uint8_t ephemeral_pub[32],
    const uint8_t sealed[PROVEND_KEYD_SEALED_LEN],
    uint8_t out[PROVEND_KEYD_ANSWER_MAX])
{
    size_t    len;
    uint8_t  *p;

    len = strlen(key_id);
    p = out;
    memcpy(p, PROVEND_KEYD_ANSWER_MARK, sizeof(PROVEND_KEYD_ANSWER_MARK) - 1);
    p += sizeof(PROVEND_KEYD_ANSWER_MARK) - 1;
    memcpy(p, nonce, 32);
    p += 32;
    *p++ = (uint8_t) len;
    memcpy(p, key_id, len);
    p += len;
    memcpy(p, asker_pub, 32);
    p += 32;
    memcpy(p, ephemeral_pub, 32);
    p += 32;
    memcpy(p, sealed, PROVEND_KEYD_SEALED_LEN);
    p += PROVEND_KEYD_SEALED_LEN;
    return (size_t) (p - out);
}


/* PROVEND_KEYD_RELEASE_MARK || payload, for signing and checking. */
static uint8_t *
provend_keyd_release_message(const uint8_t *payload, size_t len,
    size_t *outlen)
{
    uint8_t  *msg;

    msg = malloc(sizeof(PROVEND_KEYD_RELEASE_MARK) - 1 + len);
    if (msg != NULL) {
        memcpy(msg, PROVEND_KEYD_RELEASE_MARK,
               sizeof(PROVEND_KEYD_RELEASE_MARK) - 1);
        memcpy(msg + sizeof(PROVEND_KEYD_RELEASE_MARK) - 1, payload, len);
        *outlen = sizeof(PROVEND_KEYD_RELEASE_MARK) - 1 + len;
    }
    return msg;
}


int
provend_keyd_release_open(const uint8_t *buf, size_t len,
    provend_keyd_release_t *rel, char *err, size_t errlen)
{
    int           rc;
    size_t        i, n, msglen;
    uint8_t      *payload, *signer, *sig, *msg;
    uint64_t      index;
    cbor_item_t  *outer, *inner, *pcrs, *version;
    struct cbor_pair  *pairs;

    memset(rel, 0, sizeof(*rel));
    payload = signer = sig = msg = NULL;
    inner = NULL;
    rc = PROVEN_ERR;

    if (len > PROVEND_KEYD_RELEASE_MAX) {
        proven_errf(err, errlen, "a release is at most %d bytes",
                    PROVEND_KEYD_RELEASE_MAX);
        return PROVEN_ERR;
    }
    outer = proven_cbor_load(buf, len, err, errlen);
    if (outer == NULL) {
        return PROVEN_ERR;
    }
    if (!cbor_isa_array(outer) || cbor_array_size(outer) != 3
        || proven_cbor_bytes(cbor_array_handle(outer)[0],
                             PROVEND_KEYD_RELEASE_MAX, &payload, &n)
           != PROVEN_OK
        || proven_cbor_bytes(cbor_array_handle(outer)[1], 32, &signer,
                             &i) != PROVEN_OK || i != 32
        || proven_cbor_bytes(cbor_array_handle(outer)[2], 64, &sig, &i)
           != PROVEN_OK || i != 64)
    {
        proven_errf(err, errlen, "a release is [payload, signer (32 bytes), "
                    "signature (64 bytes)]");
        goto done;
    }
    msg = provend_keyd_release_message(payload, n, &msglen);
    if (msg == NULL) {
        proven_errf(err, errlen, "out of memory");
        goto done;
    }
    if (provend_keyd_verify(signer, msg, msglen, sig) != PROVEN_OK) {
        proven_errf(err, errlen, "the release's signature does not verify");
        goto done;
    }
    memcpy(rel->signer, signer, 32);

    inner = proven_cbor_load(payload, n, err, errlen);
    if (inner == NULL) {
        goto done;
    }
    version = cbor_isa_map(inner) ? proven_cbor_map_get(inner, "version")
                                  : NULL;
    pcrs = cbor_isa_map(inner) ? proven_cbor_map_get(inner, "pcrs") : NULL;
    if (version == NULL || proven_cbor_uint(version, &rel->version)
                           != PROVEN_OK
        || pcrs == NULL || !cbor_isa_map(pcrs) || cbor_map_size(pcrs) == 0
        || cbor_map_size(pcrs) > PROVEN_ATT_PCRS_MAX)
    {
        proven_errf(err, errlen, "a release's payload is {\"version\": uint, "
                    "\"pcrs\": {index: bytes}} with 1..%d PCRs",
                    PROVEN_ATT_PCRS_MAX);
        goto done;
    }
    pairs = cbor_map_handle(pcrs);
    for (i = 0; i < cbor_map_size(pcrs); i++) {
        uint8_t  *value;

        if (proven_cbor_uint(pairs[i].key, &index) != PROVEN_OK
            || index >= PROVEN_ATT_PCRS_MAX
            || proven_cbor_bytes(pairs[i].value, PROVEN_ATT_PCR_MAX, &value,
                                 &n) != PROVEN_OK)
        {
            value = NULL;
        }
        if (value == NULL || n == 0) {
            free(value);
            proven_errf(err, errlen, "a release's PCR is index (< %d): "
                        "bytes (1..%d)", PROVEN_ATT_PCRS_MAX,
                        PROVEN_ATT_PCR_MAX);
            goto done;
        }
        rel->pcrs[i].index = (uint32_t) index;
        rel->pcrs[i].len = n;
        memcpy(rel->pcrs[i].value, value, n);
        free(value);
    }
    rel->pcr_count = cbor_map_size(pcrs);
    if (!provend_keyd_pcrs_cover_image(rel->pcrs, rel->pcr_count)) {
        proven_errf(err, errlen, "a release must vouch for PCR0, PCR1 and "
                    "PCR2 (the whole image), or an old image would match");
        goto done;
    }
    rc = PROVEN_OK;

done:

    if (inner != NULL) {
        cbor_decref(&inner);
    }
    cbor_decref(&outer);
    free(payload);
    free(signer);
    free(sig);
    free(msg);
    return rc;
}


int
provend_keyd_release_make(EVP_PKEY *key, uint64_t version,
    const proven_pcr_t *pcrs, size_t pcr_count, uint8_t **out,
    size_t *outlen, char *err, size_t errlen)
{
    int           ok;
    size_t        i, plen, msglen;
    uint8_t       pub[32], sig[64], *payload, *msg;
    cbor_item_t  *map, *pmap, *arr;

    *out = NULL;
    payload = msg = NULL;
    arr = NULL;
    map = cbor_new_definite_map(2);
    pmap = cbor_new_definite_map(pcr_count);
    ok = map != NULL && pmap != NULL
         && proven_cbor_map_put(map, "version", cbor_build_uint64(version))
            == PROVEN_OK;
    for (i = 0; ok && i < pcr_count; i++) {
        ok = cbor_map_add(pmap, (struct cbor_pair) {
                 .key = cbor_move(cbor_build_uint32(pcrs[i].index)),
                 .value = cbor_move(cbor_build_bytestring(pcrs[i].value,
                                                          pcrs[i].len)) });
    }
    if (ok) {
        ok = proven_cbor_map_put(map, "pcrs", pmap) == PROVEN_OK;
        pmap = NULL;            /* the map's now, even on failure */
    }
    ok = ok && proven_cbor_dump(map, &payload, &plen) == PROVEN_OK
         && (msg = provend_keyd_release_message(payload, plen, &msglen))
            != NULL
         && provend_keyd_sign(key, msg, msglen, sig) == PROVEN_OK
         && provend_keyd_public(key, pub) == PROVEN_OK
         && (arr = cbor_new_definite_array(3)) != NULL
         && cbor_array_push(arr, cbor_move(cbor_build_bytestring(payload,
                                                                 plen)))
         && cbor_array_push(arr, cbor_move(cbor_build_bytestring(pub, 32)))
         && cbor_array_push(arr, cbor_move(cbor_build_bytestring(sig, 64)))
         && proven_cbor_dump(arr, out, outlen) == PROVEN_OK;
    if (!ok) {
        proven_errf(err, errlen, "cannot make the release (out of memory)");
    }
    if (pmap != NULL) {
        cbor_decref(&pmap);
    }
    if (map != NULL) {
        cbor_decref(&map);
    }
    if (arr != NULL) {
        cbor_decref(&arr);
    }
    free(payload);
    free(msg);
    return ok ? PROVEN_OK : PROVEN_ERR;
}


int
provend_keyd_pcrs_cover_image(const proven_pcr_t *pcrs, size_t count)
{
    size_t    i;
    unsigned  seen;

    seen = 0;
    for (i = 0; i < count; i++) {
        if (pcrs[i].index <= 2) {
            seen |= 1u << pcrs[i].index;
        }
    }
    return seen == 7;
}


int
provend_keyd_pcrs_match(const proven_attestation_doc_t *doc,
    const proven_pcr_t *pcrs, size_t count, uint32_t *which)
{
    size_t  i, j;

    for (i = 0; i < count; i++) {
        for (j = 0; j < doc->pcr_count; j++) {
            if (doc->pcrs[j].index == pcrs[i].index) {
                break;
            }
        }
        if (j == doc->pcr_count || doc->pcrs[j].len != pcrs[i].len
            || memcmp(doc->pcrs[j].value, pcrs[i].value, pcrs[i].len) != 0)
        {
            *which = pcrs[i].index;
            return 0;
        }
    }
    return 1;
}
