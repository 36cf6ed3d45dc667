/* The application audit log: what a chain accepts and what it refuses. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "proven.h"


static EVP_PKEY  *alice, *bob;


static EVP_PKEY *
new_key(void)
{
    EVP_PKEY  *key;

    key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(key);
    return key;
}


static void
public_of(EVP_PKEY *key, uint8_t out[PROVEN_AUDIT_KEY_LEN])
{
    size_t  len = PROVEN_AUDIT_KEY_LEN;

    assert_int_equal(EVP_PKEY_get_raw_public_key(key, out, &len), 1);
}


/* Builds, signs and applies the next entry of st; PROVEN_OK or not. */
static int
append(proven_app_state_t *st, const char *app, proven_audit_action_t action,
    uint8_t fill, EVP_PKEY *signer, EVP_PKEY *owner, char *err)
{
    size_t                len;
    uint8_t               buf[PROVEN_AUDIT_ENTRY_MAX];
    uint8_t               hash[PROVEN_AUDIT_HASH_LEN];
    proven_audit_entry_t  e, back;

    memset(&e, 0, sizeof(e));
    snprintf(e.app, sizeof(e.app), "%s", app);
    e.seq = st->seq + 1;
    memcpy(e.prev, st->head, sizeof(e.prev));
    e.time = 1700000000 + e.seq;
    e.action = action;
    memset(e.package, fill, sizeof(e.package));
    if (owner != NULL) {
        public_of(owner, e.owner);
    }
    assert_int_equal(proven_audit_sign(&e, signer, err, PROVEN_ERR_LEN),
                     PROVEN_OK);

    assert_int_equal(proven_audit_encode(&e, buf, sizeof(buf), &len),
                     PROVEN_OK);
    assert_int_equal(proven_audit_decode(buf, len, &back, err,
                                         PROVEN_ERR_LEN), PROVEN_OK);
    assert_memory_equal(&back, &e, sizeof(e));

    proven_audit_hash(buf, len, hash);
    return proven_audit_apply(st, &e, hash, err, PROVEN_ERR_LEN);
}


static void
test_chain(void **state)
{
    char                err[PROVEN_ERR_LEN];
    uint8_t             key[PROVEN_AUDIT_KEY_LEN], head[32];
    proven_app_state_t  st;

    (void) state;
    memset(&st, 0, sizeof(st));

    /* the first entry must be a deploy; its signer becomes the owner */
    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_ROLLBACK, 1, alice,
                            NULL, err), PROVEN_ERR);
    assert_non_null(strstr(err, "must be a deploy"));
    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_DEPLOY, 1, alice,
                            NULL, err), PROVEN_OK);
    public_of(alice, key);
    assert_int_equal(st.nowners, 1);
    assert_memory_equal(st.owners[0], key, sizeof(key));
    assert_int_equal(st.current[0], 1);

    /* bob is no owner until alice adds him */
    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_DEPLOY, 2, bob, NULL,
                            err), PROVEN_ERR);
    assert_non_null(strstr(err, "not an owner"));
    assert_int_equal(st.seq, 1);
    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_ADD_OWNER, 0, alice,
                            bob, err), PROVEN_OK);
    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_DEPLOY, 2, bob, NULL,
                            err), PROVEN_OK);
    assert_int_equal(st.current[0], 2);

    /* rollback: only to an earlier package, not the current one */
    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_ROLLBACK, 3, alice,
                            NULL, err), PROVEN_ERR);
    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_ROLLBACK, 2, alice,
                            NULL, err), PROVEN_ERR);
    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_ROLLBACK, 1, alice,
                            NULL, err), PROVEN_OK);
    assert_int_equal(st.current[0], 1);

    /* owners: no duplicate, never the last one removed */
    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_ADD_OWNER, 0, alice,
                            bob, err), PROVEN_ERR);
    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_REMOVE_OWNER, 0, bob,
                            alice, err), PROVEN_OK);
    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_REMOVE_OWNER, 0, bob,
                            bob, err), PROVEN_ERR);
    assert_non_null(strstr(err, "last owner"));
    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_DEPLOY, 4, alice,
                            NULL, err), PROVEN_ERR);

    /* another app's name in the chain */
    memcpy(head, st.head, sizeof(head));
    assert_int_equal(append(&st, "other", PROVEN_AUDIT_DEPLOY, 4, bob, NULL,
                            err), PROVEN_ERR);
    assert_memory_equal(st.head, head, sizeof(head));
    assert_int_equal(st.seq, 5);

    proven_app_state_free(&st);
}


/* A signed change replayed elsewhere, or altered, does not apply. */
static void
test_replay_and_tamper(void **state)
{
    char                  err[PROVEN_ERR_LEN];
    size_t                len, i;
    uint8_t               buf[PROVEN_AUDIT_ENTRY_MAX], hash[32];
    proven_app_state_t    st, other;
    proven_audit_entry_t  e, back;

    (void) state;
    memset(&st, 0, sizeof(st));
    memset(&other, 0, sizeof(other));

    assert_int_equal(append(&st, "demo", PROVEN_AUDIT_DEPLOY, 1, alice,
                            NULL, err), PROVEN_OK);

    /* alice signs deploy 2 on top of entry 1 */
    memset(&e, 0, sizeof(e));
    snprintf(e.app, sizeof(e.app), "demo");
    e.seq = 2;
    memcpy(e.prev, st.head, 32);
    e.action = PROVEN_AUDIT_DEPLOY;
    memset(e.package, 2, 32);
    assert_int_equal(proven_audit_sign(&e, alice, err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(proven_audit_encode(&e, buf, sizeof(buf), &len),
                     PROVEN_OK);

    /* every single bit flipped: refused by decode, verify or apply */
    for (i = 0; i < len * 8; i++) {
        proven_app_state_t  copy;

        buf[i / 8] ^= (uint8_t) (1 << (i % 8));
        copy = st;
        copy.deployed = NULL;
        copy.ndeployed = 0;
        if (proven_audit_decode(buf, len, &back, err, sizeof(err))
            == PROVEN_OK)
        {
            proven_audit_hash(buf, len, hash);
            if (back.time == e.time && back.seq == e.seq) {
                assert_int_equal(proven_audit_apply(&copy, &back, hash, err,
                                                    sizeof(err)),
                                 PROVEN_ERR);
            }
        }
        proven_app_state_free(&copy);
        buf[i / 8] ^= (uint8_t) (1 << (i % 8));
    }

    /* the same signed change on a chain with another head */
    assert_int_equal(append(&other, "demo", PROVEN_AUDIT_DEPLOY, 9, alice,
                            NULL, err), PROVEN_OK);
    proven_audit_hash(buf, len, hash);
    assert_int_equal(proven_audit_apply(&other, &e, hash, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "does not follow"));

    /* and on its own chain it applies */
    assert_int_equal(proven_audit_apply(&st, &e, hash, err, sizeof(err)),
                     PROVEN_OK);

    proven_app_state_free(&st);
    proven_app_state_free(&other);
}


/* Decode takes one form only: canonical, known fields, fixed sizes. */
static void
test_decode_strict(void **state)
{
    char                  err[PROVEN_ERR_LEN];
    uint8_t               buf[PROVEN_AUDIT_ENTRY_MAX];
    proven_audit_entry_t  e;

    (void) state;

    /* {"app": "x"}: fields missing */
    memcpy(buf, "\xa1\x63" "app" "\x61" "x", 7);
    assert_int_equal(proven_audit_decode(buf, 7, &e, err, sizeof(err)),
                     PROVEN_ERR);

    /* {"zzz": 1}: unknown */
    memcpy(buf, "\xa1\x63" "zzz" "\x01", 6);
    assert_int_equal(proven_audit_decode(buf, 6, &e, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "unknown field"));

    /* not a map, and too long */
    buf[0] = 0x01;
    assert_int_equal(proven_audit_decode(buf, 1, &e, err, sizeof(err)),
                     PROVEN_ERR);
    assert_int_equal(proven_audit_decode(buf, PROVEN_AUDIT_ENTRY_MAX + 1, &e,
                                         err, sizeof(err)), PROVEN_ERR);
}


/* A deploy proved by a session: the owner's signature over its id. */
static proven_audit_entry_t
session_entry(const proven_app_state_t *st, EVP_PKEY *identity,
    const uint8_t session[PROVEN_AUDIT_SESSION_LEN], uint8_t fill)
{
    size_t                len, proof_len;
    uint8_t               proof[PROVEN_IDENTIFY_MESSAGE_MAX];
    EVP_MD_CTX           *md;
    proven_audit_entry_t  e;

    memset(&e, 0, sizeof(e));
    snprintf(e.app, sizeof(e.app), "app");
    e.seq = st->seq + 1;
    memcpy(e.prev, st->head, sizeof(e.prev));
    e.time = 1700000000 + e.seq;
    e.action = PROVEN_AUDIT_DEPLOY;
    memset(e.package, fill, sizeof(e.package));
    public_of(identity, e.signer);
    e.has_session = 1;
    memcpy(e.session, session, PROVEN_AUDIT_SESSION_LEN);
    snprintf(e.origin, sizeof(e.origin), "https://owner.example");

    /* the owner's Identify proof in that management session */
    assert_int_equal(proven_identify_message("", e.origin, session, proof,
                                             &proof_len), PROVEN_OK);
    md = EVP_MD_CTX_new();
    len = sizeof(e.signature);
    assert_int_equal(EVP_DigestSignInit(md, NULL, NULL, NULL, identity), 1);
    assert_int_equal(EVP_DigestSign(md, e.signature, &len, proof,
                                     proof_len), 1);
    EVP_MD_CTX_free(md);
    return e;
}


static int
apply_entry(proven_app_state_t *st, proven_audit_entry_t *e, char *err)
{
    size_t                len;
    uint8_t               buf[PROVEN_AUDIT_ENTRY_MAX];
    uint8_t               hash[PROVEN_AUDIT_HASH_LEN];
    proven_audit_entry_t  back;

    assert_int_equal(proven_audit_encode(e, buf, sizeof(buf), &len),
                     PROVEN_OK);
    assert_int_equal(proven_audit_decode(buf, len, &back, err,
                                         PROVEN_ERR_LEN), PROVEN_OK);
    assert_memory_equal(&back, e, sizeof(*e));
    proven_audit_hash(buf, len, hash);
    return proven_audit_apply(st, e, hash, err, PROVEN_ERR_LEN);
}


/*
 * Entries made over a session (RPC Deploy): "session" is encoded and
 * decoded canonically, the signature is checked over the session id, and
 * the owner rule still holds.
 */
static void
test_session_entries(void **state)
{
    char                  err[PROVEN_ERR_LEN];
    uint8_t               session[PROVEN_AUDIT_SESSION_LEN];
    uint8_t               other[PROVEN_AUDIT_SESSION_LEN];
    proven_app_state_t    st;
    proven_audit_entry_t  e;

    (void) state;
    memset(&st, 0, sizeof(st));
    memset(session, 0x5e, sizeof(session));
    memset(other, 0x07, sizeof(other));

    e = session_entry(&st, alice, session, 1);
    assert_int_equal(apply_entry(&st, &e, err), PROVEN_OK);
    assert_int_equal(st.nowners, 1);

    /* the proof of another session is not this one's */
    e = session_entry(&st, alice, session, 2);
    memcpy(e.session, other, sizeof(other));
    assert_int_equal(apply_entry(&st, &e, err), PROVEN_ERR);
    assert_non_null(strstr(err, "Identify proof"));

    /* nor of the same session at another origin */
    e = session_entry(&st, alice, session, 2);
    snprintf(e.origin, sizeof(e.origin), "https://evil.example");
    assert_int_equal(apply_entry(&st, &e, err), PROVEN_ERR);
    assert_non_null(strstr(err, "Identify proof"));

    /* a proof made by someone who is not an owner */
    e = session_entry(&st, bob, session, 2);
    assert_int_equal(apply_entry(&st, &e, err), PROVEN_ERR);
    assert_non_null(strstr(err, "not an owner"));

    /* the same owner in another session */
    e = session_entry(&st, alice, other, 2);
    assert_int_equal(apply_entry(&st, &e, err), PROVEN_OK);
    assert_int_equal(st.seq, 2);

    proven_app_state_free(&st);
}


int
main(void)
{
    int  rc;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_replay_and_tamper),
        cmocka_unit_test(test_decode_strict),
        cmocka_unit_test(test_session_entries),
    };

    alice = new_key();
    bob = new_key();
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    EVP_PKEY_free(alice);
    EVP_PKEY_free(bob);
    return rc;
}
