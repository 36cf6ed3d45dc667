/*
 * WebAuthn's relying-party checks (daemon/sessions/webauthn.c), against
 * ceremonies made here as an authenticator makes them: a P-256 (ES256) and
 * an Ed25519 (EdDSA) credential registered with attestation "none", then
 * asserted.  What a page of another origin, a relay replaying an old
 * answer, an authenticator that did not verify its user, or a copied
 * authenticator (its counter behind) could send is refused, saying why.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cbor.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/sha.h>

#include "proven.h"
#include "sessions/webauthn.h"


#define RP_ID    "notes.example"
#define ORIGIN   "https://notes.example"

static const uint8_t  challenge[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
static const provend_webauthn_expect_t  expect = {
    RP_ID, ORIGIN, challenge, sizeof(challenge)
};


/* base64url of in, no padding */
static void
b64url(const uint8_t *in, size_t len, char *out)
{
    static const char  abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t    i, o;
    uint32_t  v;

    for (i = 0, o = 0; i < len; i += 3) {
        v = (uint32_t) in[i] << 16
            | (i + 1 < len ? (uint32_t) in[i + 1] << 8 : 0)
            | (i + 2 < len ? in[i + 2] : 0);
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        if (i + 1 < len) {
            out[o++] = abc[v >> 6 & 63];
        }
        if (i + 2 < len) {
            out[o++] = abc[v & 63];
        }
    }
    out[o] = '\0';
}


/* clientDataJSON as a browser writes it */
static size_t
client_data(char *out, size_t max, const char *type, const uint8_t *c,
    const char *origin, const char *extra)
{
    char  b64[64];

    b64url(c, 32, b64);
    return (size_t) snprintf(out, max, "{\"type\":\"%s\",\"challenge\":"
                             "\"%s\",\"origin\":\"%s\"%s}", type, b64,
                             origin, extra);
}


/* rpIdHash || flags || count (big-endian) */
static size_t
auth_head(uint8_t *out, const char *rp_id, uint8_t flags, uint32_t count)
{
    SHA256((const uint8_t *) rp_id, strlen(rp_id), out);
    out[32] = flags;
    out[33] = (uint8_t) (count >> 24);
    out[34] = (uint8_t) (count >> 16);
    out[35] = (uint8_t) (count >> 8);
    out[36] = (uint8_t) count;
    return 37;
}


/* map's CBOR into out (max bytes), map released: its length */
static size_t
serialized(cbor_item_t *map, uint8_t *out, size_t max)
{
    size_t    len, n;
    uint8_t  *buf;

    len = cbor_serialize_alloc(map, &buf, &n);
    assert_true(len > 0 && len <= max);
    memcpy(out, buf, len);
    free(buf);
    cbor_decref(&map);
    return len;
}


/* The COSE_Key of key, CBOR into out: its length. */
static size_t
cose_key(EVP_PKEY *key, int alg, uint8_t *out, size_t max)
{
    size_t        n;
    uint8_t       raw[65];
    cbor_item_t  *map;

    map = cbor_new_definite_map(5);
    if (alg == PROVEND_WEBAUTHN_ES256) {
        assert_int_equal(EVP_PKEY_get_octet_string_param(key,
                             OSSL_PKEY_PARAM_PUB_KEY, raw, sizeof(raw), &n),
                         1);
        assert_int_equal(n, 65);
        assert_true(cbor_map_add(map, (struct cbor_pair) {
            cbor_move(cbor_build_uint8(1)), cbor_move(cbor_build_uint8(2)) }));
        assert_true(cbor_map_add(map, (struct cbor_pair) {
            cbor_move(cbor_build_uint8(3)), cbor_move(cbor_build_negint8(6)) }));
        assert_true(cbor_map_add(map, (struct cbor_pair) {
            cbor_move(cbor_build_negint8(0)), cbor_move(cbor_build_uint8(1)) }));
        assert_true(cbor_map_add(map, (struct cbor_pair) {
            cbor_move(cbor_build_negint8(1)),
            cbor_move(cbor_build_bytestring(raw + 1, 32)) }));
        assert_true(cbor_map_add(map, (struct cbor_pair) {
            cbor_move(cbor_build_negint8(2)),
            cbor_move(cbor_build_bytestring(raw + 33, 32)) }));
    } else {
        n = 32;
        assert_int_equal(EVP_PKEY_get_raw_public_key(key, raw, &n), 1);
        assert_true(cbor_map_add(map, (struct cbor_pair) {
            cbor_move(cbor_build_uint8(1)), cbor_move(cbor_build_uint8(1)) }));
        assert_true(cbor_map_add(map, (struct cbor_pair) {
            cbor_move(cbor_build_uint8(3)), cbor_move(cbor_build_negint8(7)) }));
        assert_true(cbor_map_add(map, (struct cbor_pair) {
            cbor_move(cbor_build_negint8(0)), cbor_move(cbor_build_uint8(6)) }));
        assert_true(cbor_map_add(map, (struct cbor_pair) {
            cbor_move(cbor_build_negint8(1)),
            cbor_move(cbor_build_bytestring(raw, 32)) }));
    }
    return serialized(map, out, max);
}


/* {fmt, attStmt: {}, authData} */
static size_t
attestation(const char *fmt, const uint8_t *ad, size_t ad_len, uint8_t *out,
    size_t max)
{
    cbor_item_t  *map;

    map = cbor_new_definite_map(3);
    assert_true(cbor_map_add(map, (struct cbor_pair) {
        cbor_move(cbor_build_string("fmt")),
        cbor_move(cbor_build_string(fmt)) }));
    assert_true(cbor_map_add(map, (struct cbor_pair) {
        cbor_move(cbor_build_string("attStmt")),
        cbor_move(cbor_new_definite_map(0)) }));
    assert_true(cbor_map_add(map, (struct cbor_pair) {
        cbor_move(cbor_build_string("authData")),
        cbor_move(cbor_build_bytestring(ad, ad_len)) }));
    return serialized(map, out, max);
}


/* A registration's authData: the head, aaguid, id, key, then extra. */
static size_t
reg_auth_data(uint8_t *out, EVP_PKEY *key, int alg, uint8_t flags,
    const char *rp_id, const uint8_t *extra, size_t extra_len)
{
    size_t  at;

    at = auth_head(out, rp_id, flags, 0);
    memset(out + at, 0xaa, 16);                 /* aaguid */
    at += 16;
    out[at++] = 0;
    out[at++] = 16;                             /* id length */
    memset(out + at, 0x5c, 16);
    at += 16;
    at += cose_key(key, alg, out + at, 256);
    if (extra_len > 0) {
        memcpy(out + at, extra, extra_len);
    }
    return at + extra_len;
}


static size_t
sign(EVP_PKEY *key, int alg, const uint8_t *ad, size_t ad_len,
    const char *cd, uint8_t *sig)
{
    size_t       len;
    uint8_t      data[1024];
    EVP_MD_CTX  *md;

    memcpy(data, ad, ad_len);
    SHA256((const uint8_t *) cd, strlen(cd), data + ad_len);
    md = EVP_MD_CTX_new();
    len = 128;
    assert_int_equal(EVP_DigestSignInit(md, NULL,
                         alg == PROVEND_WEBAUTHN_ES256 ? EVP_sha256() : NULL,
                         NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &len, data, ad_len + 32), 1);
    EVP_MD_CTX_free(md);
    return len;
}


/* A registration refused, saying why. */
static void
refused(const char *cd, size_t cd_len, const uint8_t *att, size_t att_len,
    const char *why)
{
    char                     err[PROVEN_ERR_LEN];
    provend_webauthn_cred_t  cred;

    assert_int_equal(provend_webauthn_register(&expect, (const uint8_t *) cd,
                         cd_len, att, att_len, &cred, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, why));
}


/* One credential of each kind, registered and asserted. */
static void
ceremonies(int alg)
{
    char                      cd[512], err[PROVEN_ERR_LEN];
    size_t                    cd_len, ad_len, att_len, sig_len;
    uint8_t                   ad[512], att[768], sig[128];
    uint8_t                   other[32];
    uint32_t                  count;
    EVP_PKEY                 *key;
    provend_webauthn_cred_t   cred;

    key = alg == PROVEND_WEBAUTHN_ES256 ? EVP_EC_gen("P-256")
                                        : EVP_PKEY_Q_keygen(NULL, NULL,
                                                            "ED25519");
    assert_non_null(key);

    /* registration */
    cd_len = client_data(cd, sizeof(cd), "webauthn.create", challenge, ORIGIN,
                         "");
    ad_len = reg_auth_data(ad, key, alg, 0x45, RP_ID, NULL, 0);
    att_len = attestation("none", ad, ad_len, att, sizeof(att));
    assert_int_equal(provend_webauthn_register(&expect, (uint8_t *) cd,
                         cd_len, att, att_len, &cred, err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(cred.alg, alg);
    assert_int_equal(cred.id_len, 16);
    assert_int_equal(cred.id[0], 0x5c);

    /* with an extensions map after the key (hmac-secret, as PRF's) */
    {
        static const uint8_t  ext[] = { 0xa1, 0x6b, 'h', 'm', 'a', 'c', '-',
                                        's', 'e', 'c', 'r', 'e', 't', 0xf5 };
        provend_webauthn_cred_t  c2;

        ad_len = reg_auth_data(ad, key, alg, 0xc5, RP_ID, ext, sizeof(ext));
        att_len = attestation("none", ad, ad_len, att, sizeof(att));
        assert_int_equal(provend_webauthn_register(&expect, (uint8_t *) cd,
                             cd_len, att, att_len, &c2, err, sizeof(err)),
                         PROVEN_OK);
        /* the same bytes without the ED flag: bytes after the key */
        ad[32] = 0x45;
        att_len = attestation("none", ad, ad_len, att, sizeof(att));
        assert_int_equal(provend_webauthn_register(&expect, (uint8_t *) cd,
                             cd_len, att, att_len, &c2, err, sizeof(err)),
                         PROVEN_ERR);
        assert_non_null(strstr(err, "after the credential's key"));
    }

    /* what is refused at registration */
    ad_len = reg_auth_data(ad, key, alg, 0x41, RP_ID, NULL, 0);   /* no UV */
    att_len = attestation("none", ad, ad_len, att, sizeof(att));
    refused(cd, cd_len, att, att_len, "did not verify the user");
    ad_len = reg_auth_data(ad, key, alg, 0x45, "evil.example", NULL, 0);
    att_len = attestation("none", ad, ad_len, att, sizeof(att));
    refused(cd, cd_len, att, att_len, "relying party");
    ad_len = reg_auth_data(ad, key, alg, 0x45, RP_ID, NULL, 0);
    att_len = attestation("packed", ad, ad_len, att, sizeof(att));
    refused(cd, cd_len, att, att_len, "\"none\"");
    att_len = attestation("none", ad, ad_len, att, sizeof(att));
    cd_len = client_data(cd, sizeof(cd), "webauthn.get", challenge, ORIGIN,
                         "");
    refused(cd, cd_len, att, att_len, "type");
    memset(other, 7, sizeof(other));
    cd_len = client_data(cd, sizeof(cd), "webauthn.create", other, ORIGIN,
                         "");
    refused(cd, cd_len, att, att_len, "challenge");
    cd_len = client_data(cd, sizeof(cd), "webauthn.create", challenge,
                         "https://evil.example", "");
    refused(cd, cd_len, att, att_len, "origin");
    cd_len = client_data(cd, sizeof(cd), "webauthn.create", challenge, ORIGIN,
                         ",\"crossOrigin\":\"no\"");
    refused(cd, cd_len, att, att_len, "not a boolean");
    cd_len = client_data(cd, sizeof(cd), "webauthn.create", challenge, ORIGIN,
                         ",\"crossOrigin\":true");
    refused(cd, cd_len, att, att_len, "crossOrigin");
    assert_int_equal(provend_webauthn_register(&expect, (uint8_t *) "{",
                         1, att, att_len, &cred, err, sizeof(err)),
                     PROVEN_ERR);
    assert_int_equal(provend_webauthn_register(&expect, (uint8_t *) cd,
                         cd_len, att, att_len / 2, &cred, err, sizeof(err)),
                     PROVEN_ERR);

    /* registered again, for the logins */
    cd_len = client_data(cd, sizeof(cd), "webauthn.create", challenge, ORIGIN,
                         "");
    ad_len = reg_auth_data(ad, key, alg, 0x45, RP_ID, NULL, 0);
    att_len = attestation("none", ad, ad_len, att, sizeof(att));
    assert_int_equal(provend_webauthn_register(&expect, (uint8_t *) cd,
                         cd_len, att, att_len, &cred, err, sizeof(err)),
                     PROVEN_OK);

    /* a login, count 1 */
    cd_len = client_data(cd, sizeof(cd), "webauthn.get", challenge, ORIGIN,
                         "");
    ad_len = auth_head(ad, RP_ID, 0x05, 1);
    sig_len = sign(key, alg, ad, ad_len, cd, sig);
    assert_int_equal(provend_webauthn_login(&expect, &cred, (uint8_t *) cd,
                         cd_len, ad, ad_len, sig, sig_len, &count, err,
                         sizeof(err)), PROVEN_OK);
    assert_int_equal(count, 1);
    cred.sign_count = count;

    /* the same answer again: its count is not above the stored one */
    assert_int_equal(provend_webauthn_login(&expect, &cred, (uint8_t *) cd,
                         cd_len, ad, ad_len, sig, sig_len, &count, err,
                         sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "cloned"));

    /* a changed signature, a changed authData, another challenge */
    ad_len = auth_head(ad, RP_ID, 0x05, 2);
    sig_len = sign(key, alg, ad, ad_len, cd, sig);
    sig[sig_len - 1] ^= 1;
    assert_int_equal(provend_webauthn_login(&expect, &cred, (uint8_t *) cd,
                         cd_len, ad, ad_len, sig, sig_len, &count, err,
                         sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "does not verify"));
    sig[sig_len - 1] ^= 1;
    ad[36] = 3;                             /* the count, after signing */
    assert_int_equal(provend_webauthn_login(&expect, &cred, (uint8_t *) cd,
                         cd_len, ad, ad_len, sig, sig_len, &count, err,
                         sizeof(err)), PROVEN_ERR);
    ad[36] = 2;
    cd_len = client_data(cd, sizeof(cd), "webauthn.get", other, ORIGIN, "");
    assert_int_equal(provend_webauthn_login(&expect, &cred, (uint8_t *) cd,
                         cd_len, ad, ad_len, sig, sig_len, &count, err,
                         sizeof(err)), PROVEN_ERR);
    assert_non_null(strstr(err, "challenge"));
    cd_len = client_data(cd, sizeof(cd), "webauthn.get", challenge, ORIGIN,
                         "");
    assert_int_equal(provend_webauthn_login(&expect, &cred, (uint8_t *) cd,
                         cd_len, ad, ad_len, sig, sig_len, &count, err,
                         sizeof(err)), PROVEN_OK);
    assert_int_equal(count, 2);

    /* an authenticator that never counts: 0 and 0 */
    cred.sign_count = 0;
    ad_len = auth_head(ad, RP_ID, 0x05, 0);
    sig_len = sign(key, alg, ad, ad_len, cd, sig);
    assert_int_equal(provend_webauthn_login(&expect, &cred, (uint8_t *) cd,
                         cd_len, ad, ad_len, sig, sig_len, &count, err,
                         sizeof(err)), PROVEN_OK);
    /* the user not verified */
    ad_len = auth_head(ad, RP_ID, 0x01, 5);
    sig_len = sign(key, alg, ad, ad_len, cd, sig);
    assert_int_equal(provend_webauthn_login(&expect, &cred, (uint8_t *) cd,
                         cd_len, ad, ad_len, sig, sig_len, &count, err,
                         sizeof(err)), PROVEN_ERR);

    EVP_PKEY_free(key);
}


static void
test_es256(void **state)
{
    (void) state;
    ceremonies(PROVEND_WEBAUTHN_ES256);
}


static void
test_eddsa(void **state)
{
    (void) state;
    ceremonies(PROVEND_WEBAUTHN_EDDSA);
}


/* A key of another algorithm (RS256, -257) or curve: refused. */
static void
test_other_keys(void **state)
{
    char                     cd[512], err[PROVEN_ERR_LEN];
    size_t                   cd_len, ad_len, att_len, len, n;
    uint8_t                  ad[512], att[768], *buf;
    cbor_item_t             *map;
    provend_webauthn_cred_t  cred;

    (void) state;
    map = cbor_new_definite_map(2);
    assert_true(cbor_map_add(map, (struct cbor_pair) {
        cbor_move(cbor_build_uint8(1)), cbor_move(cbor_build_uint8(3)) }));
    assert_true(cbor_map_add(map, (struct cbor_pair) {
        cbor_move(cbor_build_uint8(3)), cbor_move(cbor_build_negint16(256)) }));
    len = cbor_serialize_alloc(map, &buf, &n);
    cbor_decref(&map);
    ad_len = auth_head(ad, RP_ID, 0x45, 0);
    memset(ad + ad_len, 0, 16);
    ad_len += 16;
    ad[ad_len++] = 0;
    ad[ad_len++] = 1;
    ad[ad_len++] = 0x77;
    memcpy(ad + ad_len, buf, len);
    ad_len += len;
    free(buf);
    att_len = attestation("none", ad, ad_len, att, sizeof(att));
    cd_len = client_data(cd, sizeof(cd), "webauthn.create", challenge, ORIGIN,
                         "");
    refused(cd, cd_len, att, att_len, "ES256");

    /* an Ed25519 key with its x twice (the last would win), and a map
     * claiming 2^28 pairs in a few bytes: refused before any is built */
    {
        static const uint8_t  twice[] = {
            0xa5, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06,
            0x21, 0x58, 0x20, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
            0x21, 0x58, 0x20, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
                  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2 };
        static const uint8_t  huge[] = { 0xba, 0x10, 0x00, 0x00, 0x00 };
        /* the identity point as an Ed25519 key: OpenSSL takes R = it and
         * s = 0 as its signature of any message, so anyone could sign in
         * with it (libsodium refuses points of small order) */
        static const uint8_t  weak[] = {
            0xa4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06,
            0x21, 0x58, 0x20, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
        const uint8_t        *keys[] = { twice, huge, weak };
        size_t                lens[] = { sizeof(twice), sizeof(huge),
                                         sizeof(weak) };
        size_t                k, head;

        for (k = 0; k < 3; k++) {
            head = auth_head(ad, RP_ID, 0x45, 0) + 16;
            ad[head++] = 0;
            ad[head++] = 1;
            ad[head++] = 0x77;
            memcpy(ad + head, keys[k], lens[k]);
            att_len = attestation("none", ad, head + lens[k], att,
                                  sizeof(att));
            assert_int_equal(provend_webauthn_register(&expect,
                                 (uint8_t *) cd, cd_len, att, att_len, &cred,
                                 err, sizeof(err)), PROVEN_ERR);
        }
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_es256),
        cmocka_unit_test(test_eddsa),
        cmocka_unit_test(test_other_keys),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
