/* File system helpers: directories, whole files, the node id. */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "proven.h"
#include "util.h"



int
provend_json_text(const json_t *obj, const char *key, char *out, size_t size)
{
    json_t  *v;

    v = json_object_get(obj, key);
    if (v == NULL) {
        return PROVEN_AGAIN;
    }
    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) >= size)
    {
        return PROVEN_ERR;
    }
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return PROVEN_OK;
}


int
provend_mkdirs(const char *path, mode_t mode, char *err, size_t errlen)
{
    char         buf[4096];
    size_t       len, i;
    struct stat  st;

    len = strlen(path);
    if (len == 0 || len >= sizeof(buf)) {
        proven_errf(err, errlen, "directory path is empty or too long");
        return PROVEN_ERR;
    }

    memcpy(buf, path, len + 1);

    /* Each prefix ending before a '/', then the whole path. */
    for (i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') {
            continue;
        }

        buf[i] = '\0';

        if (mkdir(buf, mode) != 0 && errno != EEXIST) {
            proven_errf(err, errlen, "mkdir %s: %s", buf, strerror(errno));
            return PROVEN_ERR;
        }

        buf[i] = (i == len) ? '\0' : '/';
    }

    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        proven_errf(err, errlen, "%s is not a directory", path);
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


int
provend_node_id(const char *data_dir, char node_id[PROVEND_NODE_ID_LEN + 1],
    char *err, size_t errlen)
{
    int       rc;
    char      path[4096];
    size_t    len, i;
    uint8_t  *text, raw[PROVEND_NODE_ID_LEN / 2];

    if ((size_t) snprintf(path, sizeof(path), "%s/node-id", data_dir)
        >= sizeof(path))
    {
        proven_errf(err, errlen, "data directory path too long");
        return PROVEN_ERR;
    }

    if (access(path, F_OK) == 0) {
        if (proven_read_file(path, 256, &text, &len, err, errlen)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }

        while (len && (text[len - 1] == '\n' || text[len - 1] == '\r')) {
            len--;
        }

        rc = (len == PROVEND_NODE_ID_LEN) ? PROVEN_OK : PROVEN_ERR;
        for (i = 0; rc == PROVEN_OK && i < len; i++) {
            if (!((text[i] >= '0' && text[i] <= '9')
                  || (text[i] >= 'a' && text[i] <= 'f')))
            {
                rc = PROVEN_ERR;
            }
        }

        if (rc == PROVEN_OK) {
            memcpy(node_id, text, len);
            node_id[len] = '\0';
        } else {
            proven_errf(err, errlen, "%s does not hold %d lowercase hex digits",
                        path, PROVEND_NODE_ID_LEN);
        }

        free(text);
        return rc;
    }

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        proven_errf(err, errlen, "no random bytes for the node id");
        return PROVEN_ERR;
    }

    proven_hex_encode(raw, sizeof(raw), node_id);
    node_id[PROVEND_NODE_ID_LEN] = '\n';

    rc = proven_write_file(path, node_id, PROVEND_NODE_ID_LEN + 1, 0644,
                           err, errlen);
    node_id[PROVEND_NODE_ID_LEN] = '\0';
    return rc;
}


uint64_t
provend_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}


static int
provend_remove_one(const char *path, const struct stat *sb, int flag,
    struct FTW *ftw)
{
    (void) sb;
    (void) ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) == 0 ? 0 : -1;
}


int
provend_remove_tree(const char *path, char *err, size_t errlen)
{
    struct stat  sb;

    if (lstat(path, &sb) != 0 && errno == ENOENT) {
        return PROVEN_OK;
    }
    /* links are removed, never followed */
    if (nftw(path, provend_remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        proven_errf(err, errlen, "cannot remove %s: %s", path, strerror(errno));
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


provend_evp_pkey_t *
provend_ec_public_key(const char *group, const uint8_t *point, size_t len)
{
    EVP_PKEY      *key;
    EVP_PKEY_CTX  *ctx;
    OSSL_PARAM     params[3];

    key = NULL;
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                                 (char *) group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY,
                                                  (void *) point, len);
    params[2] = OSSL_PARAM_construct_end();
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1
        || EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
    {
        key = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    return key;
}


cbor_item_t *
provend_json_to_cbor(const json_t *value, unsigned depth)
{
    int           ok;
    size_t        i;
    const char   *key;
    json_t       *member;
    cbor_item_t  *out, *item;

    switch (json_typeof(value)) {
    case JSON_STRING:
        return cbor_build_stringn(json_string_value(value),
                                  json_string_length(value));
    case JSON_INTEGER:
        return json_integer_value(value) >= 0
               ? cbor_build_uint64((uint64_t) json_integer_value(value))
               : cbor_build_negint64((uint64_t) -(json_integer_value(value)
                                                  + 1));
    case JSON_REAL:
        return cbor_build_float8(json_real_value(value));
    case JSON_TRUE:
        return cbor_build_bool(true);
    case JSON_FALSE:
        return cbor_build_bool(false);
    case JSON_NULL:
        return cbor_new_null();
    case JSON_ARRAY:
    case JSON_OBJECT:
        break;
    }
    if (depth == 0) {
        return NULL;
    }
    ok = 1;
    if (json_is_array(value)) {
        out = cbor_new_definite_array(json_array_size(value));
        for (i = 0; out != NULL && ok && i < json_array_size(value); i++) {
            item = provend_json_to_cbor(json_array_get(value, i), depth - 1);
            ok = item != NULL && cbor_array_push(out, item);
            if (item != NULL) {
                cbor_decref(&item);
            }
        }
    } else {
        out = cbor_new_definite_map(json_object_size(value));
        json_object_foreach((json_t *) value, key, member) {
            if (out == NULL || !ok) {
                break;
            }
            item = provend_json_to_cbor(member, depth - 1);
            ok = item != NULL
                 && proven_cbor_map_put(out, key, item) == PROVEN_OK;
        }
    }
    if (out != NULL && !ok) {
        cbor_decref(&out);
    }
    return out;
}
