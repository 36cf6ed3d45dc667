/*
 * The node master key and what is built on it: HKDF-SHA256 derivation and
 * AES-256-GCM sealing, all through OpenSSL's EVP interfaces.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "proven.h"
#include "keys.h"
#include "log.h"
#include "util.h"


#define PROVEND_KEYS_PATH_MAX  4096

/* HKDF can produce at most 255 blocks of the digest. */
#define PROVEND_KEYS_OUT_MAX   (255 * 32)


static int provend_keys_read(const char *path, uint8_t key[PROVEND_KEY_LEN],
    char *err, size_t errlen);
static int provend_keys_create(const char *dir, const char *path,
    char *err, size_t errlen);


int
provend_keys_load_master(const char *data_dir, uint8_t key[PROVEND_KEY_LEN],
    char *err, size_t errlen)
{
    int          attempt;
    char         dir[PROVEND_KEYS_PATH_MAX], path[PROVEND_KEYS_PATH_MAX];
    struct stat  st;

    if ((size_t) snprintf(dir, sizeof(dir), "%s/keys", data_dir)
        >= sizeof(dir)
        || (size_t) snprintf(path, sizeof(path), "%s/master.key", dir)
        >= sizeof(path))
    {
        proven_errf(err, errlen, "data directory path too long");
        return PROVEN_ERR;
    }

    if (provend_mkdirs(dir, 0700, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    /* An existing directory may have been made with a wider mode. */
    if (chmod(dir, 0700) != 0) {
        proven_errf(err, errlen, "chmod %s: %s", dir, strerror(errno));
        return PROVEN_ERR;
    }

    /* Two tries: another process may create the key between ours. */
    for (attempt = 0; attempt < 2; attempt++) {
        if (lstat(path, &st) == 0) {
            return provend_keys_read(path, key, err, errlen);
        }

        if (errno != ENOENT) {
            proven_errf(err, errlen, "stat %s: %s", path, strerror(errno));
            return PROVEN_ERR;
        }

        if (provend_keys_create(dir, path, err, errlen) != PROVEN_OK) {
            return PROVEN_ERR;
        }
    }

    proven_errf(err, errlen, "%s: could not create the master key", path);
    return PROVEN_ERR;
}


static int
provend_keys_read(const char *path, uint8_t key[PROVEND_KEY_LEN], char *err,
    size_t errlen)
{
    size_t       len;
    uint8_t     *buf;
    struct stat  st;

    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        proven_errf(err, errlen, "%s is not a regular file", path);
        return PROVEN_ERR;
    }

    if (st.st_mode & 077) {
        provend_warn("%s is readable by other users (mode %03o)", path,
                     (unsigned) (st.st_mode & 0777));
    }

    /* One byte more than a key so that a longer file is seen as such. */
    if (proven_read_file(path, PROVEND_KEY_LEN + 1, &buf, &len, err, errlen)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    if (len != PROVEND_KEY_LEN) {
        OPENSSL_cleanse(buf, len);
        free(buf);
        proven_errf(err, errlen,
                    "%s holds %zu bytes, not a %d-byte key", path, len,
                    PROVEND_KEY_LEN);
        return PROVEN_ERR;
    }

    memcpy(key, buf, PROVEND_KEY_LEN);
    OPENSSL_cleanse(buf, len);
    free(buf);
    return PROVEN_OK;
}


/*
 * The key is written whole to a private temporary file and then linked into
 * place: a crash never leaves a short key, and link() never replaces a key
 * another process made meanwhile.
 */
static int
provend_keys_create(const char *dir, const char *path, char *err,
    size_t errlen)
{
    int       fd, dfd, rc;
    char      tmp[PROVEND_KEYS_PATH_MAX];
    ssize_t   n;
    uint8_t   key[PROVEND_KEY_LEN];

    rc = PROVEN_ERR;
    fd = -1;

    if ((size_t) snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path,
                          (long) getpid())
        >= sizeof(tmp))
    {
        proven_errf(err, errlen, "key path too long");
        return PROVEN_ERR;
    }

    if (RAND_bytes(key, sizeof(key)) != 1) {
        proven_errf(err, errlen, "RAND_bytes failed");
        return PROVEN_ERR;
    }

    (void) unlink(tmp);

    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd == -1) {
        proven_errf(err, errlen, "open %s: %s", tmp, strerror(errno));
        goto failed;
    }

    do {
        n = write(fd, key, sizeof(key));
    } while (n == -1 && errno == EINTR);

    if (n != (ssize_t) sizeof(key)) {
        proven_errf(err, errlen, "write %s: %s", tmp,
                    n == -1 ? strerror(errno) : "short write");
        goto failed;
    }

    if (fsync(fd) != 0) {
        proven_errf(err, errlen, "fsync %s: %s", tmp, strerror(errno));
        goto failed;
    }

    if (close(fd) != 0) {
        fd = -1;
        proven_errf(err, errlen, "close %s: %s", tmp, strerror(errno));
        goto failed;
    }

    fd = -1;

    if (link(tmp, path) != 0 && errno != EEXIST) {
        proven_errf(err, errlen, "link %s: %s", path, strerror(errno));
        goto failed;
    }

    /* The new name must survive a crash as well. */
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd != -1) {
        (void) fsync(dfd);
        close(dfd);
    }

    provend_warn("generated a master key in %s: it is stored on disk in "
                 "plain text (local mode)", path);
    rc = PROVEN_OK;

failed:

    if (fd != -1) {
        close(fd);
    }

    (void) unlink(tmp);
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}


int
provend_keys_derive(const uint8_t master[PROVEND_KEY_LEN], const char *info,
    size_t info_len, uint8_t *out, size_t out_len)
{
    int           rc;
    EVP_KDF      *kdf;
    EVP_KDF_CTX  *ctx;
    OSSL_PARAM    params[4];

    if (info_len > PROVEND_KEYS_INFO_MAX || out_len == 0
        || out_len > PROVEND_KEYS_OUT_MAX)
    {
        return PROVEN_ERR;
    }

    rc = PROVEN_ERR;
    ctx = NULL;

    kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    if (kdf == NULL) {
        goto failed;
    }

    ctx = EVP_KDF_CTX_new(kdf);
    if (ctx == NULL) {
        goto failed;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                                  (void *) master,
                                                  PROVEND_KEY_LEN);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                                  (void *) info, info_len);
    params[3] = OSSL_PARAM_construct_end();

    if (EVP_KDF_derive(ctx, out, out_len, params) != 1) {
        OPENSSL_cleanse(out, out_len);
        goto failed;
    }

    rc = PROVEN_OK;

failed:

    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return rc;
}


int
provend_seal(const uint8_t key[PROVEND_KEY_LEN], const uint8_t *ad,
    size_t ad_len, const uint8_t *in, size_t len, uint8_t *out)
{
    int               rc, n;
    uint8_t          *ct;
    EVP_CIPHER_CTX   *ctx;

    /* EVP lengths are ints. */
    if (len > (size_t) INT32_MAX - PROVEND_SEAL_OVERHEAD
        || ad_len > (size_t) INT32_MAX)
    {
        return PROVEN_ERR;
    }

    rc = PROVEN_ERR;
    ct = out + PROVEND_NONCE_LEN;

    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        return PROVEN_ERR;
    }

    if (RAND_bytes(out, PROVEND_NONCE_LEN) != 1
        || EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, out) != 1)
    {
        goto failed;
    }

    if (ad_len > 0
        && EVP_EncryptUpdate(ctx, NULL, &n, ad, (int) ad_len) != 1)
    {
        goto failed;
    }

    n = 0;
    if (len > 0 && EVP_EncryptUpdate(ctx, ct, &n, in, (int) len) != 1) {
        goto failed;
    }

    if (EVP_EncryptFinal_ex(ctx, ct + n, &n) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, PROVEND_TAG_LEN,
                               ct + len) != 1)
    {
        goto failed;
    }

    rc = PROVEN_OK;

failed:

    EVP_CIPHER_CTX_free(ctx);
    return rc;
}


int
provend_open(const uint8_t key[PROVEND_KEY_LEN], const uint8_t *ad,
    size_t ad_len, const uint8_t *in, size_t len, uint8_t *out)
{
    int               rc, n;
    size_t            ct_len;
    EVP_CIPHER_CTX   *ctx;

    if (len < PROVEND_SEAL_OVERHEAD || len > (size_t) INT32_MAX
        || ad_len > (size_t) INT32_MAX)
    {
        return PROVEN_ERR;
    }

    rc = PROVEN_ERR;
    ct_len = len - PROVEND_SEAL_OVERHEAD;

    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        return PROVEN_ERR;
    }

    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, in) != 1) {
        goto failed;
    }

    if (ad_len > 0
        && EVP_DecryptUpdate(ctx, NULL, &n, ad, (int) ad_len) != 1)
    {
        goto failed;
    }

    n = 0;
    if (ct_len > 0
        && EVP_DecryptUpdate(ctx, out, &n, in + PROVEND_NONCE_LEN,
                             (int) ct_len) != 1)
    {
        goto failed;
    }

    /* The tag comparison inside OpenSSL is constant-time. */
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, PROVEND_TAG_LEN,
                            (void *) (in + len - PROVEND_TAG_LEN)) != 1
        || EVP_DecryptFinal_ex(ctx, out + n, &n) != 1)
    {
        goto failed;
    }

    rc = PROVEN_OK;

failed:

    if (rc != PROVEN_OK && ct_len > 0) {
        OPENSSL_cleanse(out, ct_len);
    }

    EVP_CIPHER_CTX_free(ctx);
    return rc;
}


#define PROVEND_MASTER_SEALED_AD  "proven-master-v1"


int
provend_keys_open_master(const uint8_t kek[PROVEND_KEY_LEN],
    const uint8_t sealed[PROVEND_MASTER_SEALED_LEN],
    uint8_t key[PROVEND_KEY_LEN])
{
    return provend_open(kek, (const uint8_t *) PROVEND_MASTER_SEALED_AD,
                        sizeof(PROVEND_MASTER_SEALED_AD) - 1, sealed,
                        PROVEND_MASTER_SEALED_LEN, key);
}

int
provend_keys_load_sealed_master(const char *data_dir,
    const uint8_t kek[PROVEND_KEY_LEN], uint8_t key[PROVEND_KEY_LEN],
    uint8_t sealed_out[PROVEND_MASTER_SEALED_LEN], char *err,
    size_t errlen)
{
    int          rc;
    char         dir[PROVEND_KEYS_PATH_MAX], path[PROVEND_KEYS_PATH_MAX];
    char         other[PROVEND_KEYS_PATH_MAX];
    size_t       len;
    uint8_t     *buf, sealed[PROVEND_KEY_LEN + PROVEND_SEAL_OVERHEAD];
    struct stat  st;

    if ((size_t) snprintf(dir, sizeof(dir), "%s/keys", data_dir)
        >= sizeof(dir)
        || (size_t) snprintf(path, sizeof(path), "%s/master.sealed", dir)
        >= sizeof(path)
        || (size_t) snprintf(other, sizeof(other), "%s/master.key", dir)
        >= sizeof(other))
    {
        proven_errf(err, errlen, "data directory path too long");
        return PROVEN_ERR;
    }
    if (provend_mkdirs(dir, 0700, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    if (lstat(path, &st) == 0) {
        if (proven_read_file(path, sizeof(sealed) + 1, &buf, &len, err,
                             errlen) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        rc = len == sizeof(sealed)
             ? provend_keys_open_master(kek, buf, key) : PROVEN_ERR;
        if (rc == PROVEN_OK && sealed_out != NULL) {
            memcpy(sealed_out, buf, sizeof(sealed));
        }
        free(buf);
        if (rc != PROVEN_OK) {
            proven_errf(err, errlen, "%s does not open with the key keyd "
                        "released: changed, or sealed for another key",
                        path);
        }
        return rc;
    }
    if (errno != ENOENT) {
        proven_errf(err, errlen, "stat %s: %s", path, strerror(errno));
        return PROVEN_ERR;
    }

    /* The host writes this disk: a key in clear on it may be the host's. */
    if (lstat(other, &st) == 0) {
        proven_errf(err, errlen, "%s is a master key in clear, which enclave "
                    "mode never uses: remove it (and the data sealed with "
                    "it) to start afresh", other);
        return PROVEN_ERR;
    }

    /* A new key would make what is stored unreadable: say so instead. */
    if ((size_t) snprintf(other, sizeof(other), "%s/storage", data_dir)
        < sizeof(other) && lstat(other, &st) == 0)
    {
        proven_errf(err, errlen, "%s exists but %s is gone: its data cannot "
                    "be opened without the master key it was sealed with",
                    other, path);
        return PROVEN_ERR;
    }

    if (RAND_bytes(key, PROVEND_KEY_LEN) != 1
        || provend_seal(kek, (const uint8_t *) PROVEND_MASTER_SEALED_AD,
                        sizeof(PROVEND_MASTER_SEALED_AD) - 1, key,
                        PROVEND_KEY_LEN, sealed) != PROVEN_OK)
    {
        OPENSSL_cleanse(key, PROVEND_KEY_LEN);
        proven_errf(err, errlen, "cannot make a master key");
        return PROVEN_ERR;
    }
    if (proven_write_file(path, sealed, sizeof(sealed), 0600, err, errlen)
        != PROVEN_OK)
    {
        OPENSSL_cleanse(key, PROVEND_KEY_LEN);
        return PROVEN_ERR;
    }
    if (sealed_out != NULL) {
        memcpy(sealed_out, sealed, sizeof(sealed));
    }
    provend_info("master key made; kept on disk only sealed (%s)", path);
    return PROVEN_OK;
}


int
provend_keys_box(EVP_PKEY *ours, const uint8_t theirs[32], const char *label,
    const uint8_t first[32], const uint8_t second[32],
    uint8_t out[PROVEND_KEY_LEN])
{
    int            ok;
    char           info[64 + 64];
    size_t         len, label_len;
    uint8_t        shared[32];
    EVP_PKEY      *peer;
    EVP_PKEY_CTX  *ctx;

    label_len = strlen(label);
    if (label_len > 64) {
        return PROVEN_ERR;
    }
    peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, theirs, 32);
    ctx = EVP_PKEY_CTX_new(ours, NULL);
    len = sizeof(shared);
    ok = peer != NULL && ctx != NULL
         && EVP_PKEY_derive_init(ctx) == 1
         && EVP_PKEY_derive_set_peer(ctx, peer) == 1
         && EVP_PKEY_derive(ctx, shared, &len) == 1 && len == 32;
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(peer);

    memcpy(info, label, label_len);
    memcpy(info + label_len, first, 32);
    memcpy(info + label_len + 32, second, 32);
    ok = ok && provend_keys_derive(shared, info, label_len + 64, out,
                                   PROVEND_KEY_LEN) == PROVEN_OK;
    OPENSSL_cleanse(shared, sizeof(shared));
    return ok ? PROVEN_OK : PROVEN_ERR;
}


int
provend_seal_file(const uint8_t key[PROVEND_KEY_LEN], const char *ad,
    const void *data, size_t len, const char *path, char *err,
    size_t errlen)
{
    int       rc;
    uint8_t  *sealed;

    sealed = malloc(len + PROVEND_SEAL_OVERHEAD);
    if (sealed == NULL
        || provend_seal(key, (const uint8_t *) ad, strlen(ad), data, len,
                        sealed) != PROVEN_OK)
    {
        free(sealed);
        proven_errf(err, errlen, "cannot seal %s", path);
        return PROVEN_ERR;
    }
    rc = proven_write_file(path, sealed, len + PROVEND_SEAL_OVERHEAD, 0600,
                           err, errlen);
    free(sealed);
    return rc;
}


int
provend_open_file(const uint8_t key[PROVEND_KEY_LEN], const char *ad,
    const char *path, size_t max, uint8_t **out, size_t *outlen, char *err,
    size_t errlen)
{
    size_t    len;
    uint8_t  *sealed, *data;

    *out = NULL;
    *outlen = 0;
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        return PROVEN_AGAIN;
    }
    if (proven_read_file(path, max + PROVEND_SEAL_OVERHEAD, &sealed, &len,
                         err, errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    data = len > PROVEND_SEAL_OVERHEAD ? malloc(len) : NULL;
    if (data == NULL
        || provend_open(key, (const uint8_t *) ad, strlen(ad), sealed, len,
                        data) != PROVEN_OK)
    {
        free(data);
        free(sealed);
        proven_errf(err, errlen, "%s does not open with this node's master "
                    "key", path);
        return PROVEN_ERR;
    }
    free(sealed);
    data[len - PROVEND_SEAL_OVERHEAD] = '\0';
    *out = data;
    *outlen = len - PROVEND_SEAL_OVERHEAD;
    return PROVEN_OK;
}
