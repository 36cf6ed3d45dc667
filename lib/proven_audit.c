/*
 * The application audit log: canonical entries, owner signatures, and the
 * one replay rule provend and `proven app audit` share.  See proven.h.
 */

#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "proven.h"


#define PROVEN_AUDIT_DOMAIN  "proven-app-audit-v1"


static const char  *proven_audit_actions[] = {
    NULL, "deploy", "rollback", "add_owner", "remove_owner"
};


const char *
proven_audit_action_name(proven_audit_action_t action)
{
    if (action < PROVEN_AUDIT_DEPLOY || action > PROVEN_AUDIT_REMOVE_OWNER) {
        return "unknown";
    }
    return proven_audit_actions[action];
}


proven_audit_action_t
proven_audit_action_parse(const char *name)
{
    int  i;

    for (i = PROVEN_AUDIT_DEPLOY; i <= PROVEN_AUDIT_REMOVE_OWNER; i++) {
        if (strcmp(name, proven_audit_actions[i]) == 0) {
            return (proven_audit_action_t) i;
        }
    }
    return 0;
}


static int
proven_audit_has_package(const proven_audit_entry_t *e)
{
    return e->action == PROVEN_AUDIT_DEPLOY
           || e->action == PROVEN_AUDIT_ROLLBACK;
}


static int
proven_audit_has_owner(const proven_audit_entry_t *e)
{
    return e->action == PROVEN_AUDIT_ADD_OWNER
           || e->action == PROVEN_AUDIT_REMOVE_OWNER;
}


/* A text key and a value written by the caller: keys come in order. */
static uint8_t *
proven_audit_key(uint8_t *p, const char *key)
{
    return proven_cbor_put_string(p, PROVEN_CBOR_TEXT, key, strlen(key));
}


static int
proven_audit_app_valid(const char *app)
{
    size_t  i, len;

    len = strlen(app);
    if (len == 0 || len > PROVEN_AUDIT_APP_MAX) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        if (!((app[i] >= 'a' && app[i] <= 'z')
              || (app[i] >= '0' && app[i] <= '9')
              || ((app[i] == '-' || app[i] == '_') && i > 0)))
        {
            return 0;
        }
    }
    return 1;
}


/*
 * Both encodings are small and fixed in shape: written by hand in
 * canonical key order (shorter keys first, then bytewise).  The bound
 * PROVEN_AUDIT_ENTRY_MAX covers the largest.
 */
int
proven_audit_message(const proven_audit_entry_t *e, uint8_t *out,
    size_t cap, size_t *len)
{
    uint8_t  *p;

    if (cap < PROVEN_AUDIT_ENTRY_MAX || !proven_audit_app_valid(e->app)) {
        return PROVEN_ERR;
    }

    p = proven_cbor_put_head(out, PROVEN_CBOR_MAP, 5);
    p = proven_audit_key(p, "app");
    p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, e->app, strlen(e->app));
    p = proven_audit_key(p, "prev");
    p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, e->prev,
                               PROVEN_AUDIT_HASH_LEN);
    if (proven_audit_has_owner(e)) {
        p = proven_audit_key(p, "owner");
        p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, e->owner,
                                   PROVEN_AUDIT_KEY_LEN);
    }
    p = proven_audit_key(p, "action");
    p = proven_audit_key(p, proven_audit_action_name(e->action));
    p = proven_audit_key(p, "domain");
    p = proven_audit_key(p, PROVEN_AUDIT_DOMAIN);
    if (proven_audit_has_package(e)) {
        p = proven_audit_key(p, "package");
        p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, e->package,
                                   PROVEN_AUDIT_HASH_LEN);
    }

    *len = (size_t) (p - out);
    return PROVEN_OK;
}


int
proven_audit_encode(const proven_audit_entry_t *e, uint8_t *out, size_t cap,
    size_t *len)
{
    uint8_t  *p;

    if (cap < PROVEN_AUDIT_ENTRY_MAX || !proven_audit_app_valid(e->app)
        || proven_audit_action_name(e->action)[0] == 'u')
    {
        return PROVEN_ERR;
    }

    if (e->has_session && strlen(e->origin) > PROVEN_AUDIT_ORIGIN_MAX) {
        return PROVEN_ERR;
    }
    p = proven_cbor_put_head(out, PROVEN_CBOR_MAP, e->has_session ? 10 : 8);
    p = proven_audit_key(p, "app");
    p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, e->app, strlen(e->app));
    p = proven_audit_key(p, "seq");
    p = proven_cbor_put_head(p, PROVEN_CBOR_UINT, e->seq);
    p = proven_audit_key(p, "prev");
    p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, e->prev,
                               PROVEN_AUDIT_HASH_LEN);
    p = proven_audit_key(p, "time");
    p = proven_cbor_put_head(p, PROVEN_CBOR_UINT, e->time);
    if (proven_audit_has_owner(e)) {
        p = proven_audit_key(p, "owner");
        p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, e->owner,
                                   PROVEN_AUDIT_KEY_LEN);
    }
    p = proven_audit_key(p, "action");
    p = proven_audit_key(p, proven_audit_action_name(e->action));
    p = proven_audit_key(p, "signer");
    p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, e->signer,
                               PROVEN_AUDIT_KEY_LEN);
    if (proven_audit_has_package(e)) {
        p = proven_audit_key(p, "package");
        p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, e->package,
                                   PROVEN_AUDIT_HASH_LEN);
    }
    if (e->has_session) {
        p = proven_audit_key(p, "session");
        p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, e->session,
                                   PROVEN_AUDIT_SESSION_LEN);
        p = proven_audit_key(p, "origin");
        p = proven_cbor_put_string(p, PROVEN_CBOR_TEXT, e->origin,
                                   strlen(e->origin));
    }
    p = proven_audit_key(p, "signature");
    p = proven_cbor_put_string(p, PROVEN_CBOR_BYTES, e->signature,
                               PROVEN_AUDIT_SIG_LEN);

    *len = (size_t) (p - out);
    return PROVEN_OK;
}


/* A string of exactly len bytes into out. */
static int
proven_audit_fixed(proven_cbor_span_t *r, int major, uint8_t *out,
    size_t len)
{
    size_t          have;
    const uint8_t  *s;

    if (proven_cbor_span_string(r, major, &s, &have) != PROVEN_OK
        || have != len)
    {
        return PROVEN_ERR;
    }
    memcpy(out, s, len);
    return PROVEN_OK;
}


/*
 * Reads the fields in whatever order, then requires the bytes to be
 * exactly the canonical encoding of what was read: one entry, one form.
 */
int
proven_audit_decode(const uint8_t *buf, size_t len, proven_audit_entry_t *e,
    char *err, size_t errlen)
{
    int                  major;
    char                 name[16];
    size_t               klen, slen, outlen;
    uint8_t              again[PROVEN_AUDIT_ENTRY_MAX];
    uint64_t             pairs, i, v;
    const uint8_t       *k, *s;
    proven_cbor_span_t   r;

    memset(e, 0, sizeof(*e));

    if (len > PROVEN_AUDIT_ENTRY_MAX) {
        proven_errf(err, errlen, "audit entry of %zu bytes is too long", len);
        return PROVEN_ERR;
    }

    r.p = buf;
    r.end = buf + len;

    if (proven_cbor_span_map(&r, &pairs) != PROVEN_OK || pairs > 16) {
        proven_errf(err, errlen, "audit entry is not a map");
        return PROVEN_ERR;
    }

    for (i = 0; i < pairs; i++) {
        if (proven_cbor_span_string(&r, PROVEN_CBOR_TEXT, &k, &klen)
            != PROVEN_OK || klen >= sizeof(name))
        {
            proven_errf(err, errlen, "audit entry has a bad key");
            return PROVEN_ERR;
        }
        memcpy(name, k, klen);
        name[klen] = '\0';

        if (strcmp(name, "app") == 0) {
            if (proven_cbor_span_string(&r, PROVEN_CBOR_TEXT, &s, &slen)
                != PROVEN_OK || slen > PROVEN_AUDIT_APP_MAX)
            {
                goto bad_value;
            }
            memcpy(e->app, s, slen);
            e->app[slen] = '\0';

        } else if (strcmp(name, "seq") == 0 || strcmp(name, "time") == 0) {
            if (proven_cbor_span_head(&r, &major, &v) != PROVEN_OK
                || major != PROVEN_CBOR_UINT)
            {
                goto bad_value;
            }
            *(name[0] == 's' ? &e->seq : &e->time) = v;

        } else if (strcmp(name, "action") == 0) {
            if (proven_cbor_span_string(&r, PROVEN_CBOR_TEXT, &s, &slen)
                != PROVEN_OK || slen >= sizeof(name))
            {
                goto bad_value;
            }
            memcpy(name, s, slen);
            name[slen] = '\0';
            e->action = proven_audit_action_parse(name);

        } else if (strcmp(name, "prev") == 0 || strcmp(name, "package") == 0) {
            if (proven_audit_fixed(&r, PROVEN_CBOR_BYTES,
                                   name[1] == 'r' ? e->prev : e->package,
                                   PROVEN_AUDIT_HASH_LEN) != PROVEN_OK)
            {
                goto bad_value;
            }

        } else if (strcmp(name, "owner") == 0 || strcmp(name, "signer") == 0) {
            if (proven_audit_fixed(&r, PROVEN_CBOR_BYTES,
                                   name[0] == 'o' ? e->owner : e->signer,
                                   PROVEN_AUDIT_KEY_LEN) != PROVEN_OK)
            {
                goto bad_value;
            }

        } else if (strcmp(name, "session") == 0) {
            if (proven_audit_fixed(&r, PROVEN_CBOR_BYTES, e->session,
                                   PROVEN_AUDIT_SESSION_LEN) != PROVEN_OK)
            {
                goto bad_value;
            }
            e->has_session = 1;

        } else if (strcmp(name, "origin") == 0) {
            if (proven_cbor_span_string(&r, PROVEN_CBOR_TEXT, &s, &slen)
                != PROVEN_OK || slen > PROVEN_AUDIT_ORIGIN_MAX
                || memchr(s, '\0', slen) != NULL)
            {
                goto bad_value;
            }
            memcpy(e->origin, s, slen);
            e->origin[slen] = '\0';

        } else if (strcmp(name, "signature") == 0) {
            if (proven_audit_fixed(&r, PROVEN_CBOR_BYTES, e->signature,
                                   PROVEN_AUDIT_SIG_LEN) != PROVEN_OK)
            {
                goto bad_value;
            }

        } else {
            proven_errf(err, errlen,
                        "audit entry has an unknown field \"%s\"", name);
            return PROVEN_ERR;
        }
    }

    if (r.p != r.end) {
        proven_errf(err, errlen, "audit entry has trailing bytes");
        return PROVEN_ERR;
    }

    if (e->action == 0
        || proven_audit_encode(e, again, sizeof(again), &outlen) != PROVEN_OK
        || outlen != len || memcmp(again, buf, len) != 0)
    {
        proven_errf(err, errlen, "audit entry is not in canonical form");
        return PROVEN_ERR;
    }

    return PROVEN_OK;

bad_value:

    proven_errf(err, errlen, "audit entry field \"%s\" has a bad value", name);
    return PROVEN_ERR;
}


void
proven_audit_hash(const uint8_t *entry, size_t len,
    uint8_t hash[PROVEN_AUDIT_HASH_LEN])
{
    SHA256(entry, len, hash);
}


int
proven_audit_sign(proven_audit_entry_t *e, EVP_PKEY *key, char *err,
    size_t errlen)
{
    int          rc;
    size_t       len, siglen, publen;
    uint8_t      msg[PROVEN_AUDIT_ENTRY_MAX];
    EVP_MD_CTX  *md;

    publen = PROVEN_AUDIT_KEY_LEN;
    if (EVP_PKEY_get_raw_public_key(key, e->signer, &publen) != 1
        || publen != PROVEN_AUDIT_KEY_LEN)
    {
        proven_errf(err, errlen, "the owner key is not an Ed25519 key");
        return PROVEN_ERR;
    }

    if (proven_audit_message(e, msg, sizeof(msg), &len) != PROVEN_OK) {
        proven_errf(err, errlen, "cannot encode the audit message");
        return PROVEN_ERR;
    }

    md = EVP_MD_CTX_new();
    siglen = PROVEN_AUDIT_SIG_LEN;
    rc = md != NULL
         && EVP_DigestSignInit(md, NULL, NULL, NULL, key) == 1
         && EVP_DigestSign(md, e->signature, &siglen, msg, len) == 1
         && siglen == PROVEN_AUDIT_SIG_LEN;
    EVP_MD_CTX_free(md);

    if (!rc) {
        proven_openssl_error(err, errlen, "signing the audit entry");
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


int
proven_audit_verify(const proven_audit_entry_t *e, char *err, size_t errlen)
{
    int          rc;
    size_t       len;
    uint8_t      msg[PROVEN_AUDIT_ENTRY_MAX];
    EVP_PKEY    *key;
    EVP_MD_CTX  *md;

    if (e->has_session) {
        /* the owner's Identify proof in a management session (app "") */
        if (sizeof(msg) < PROVEN_IDENTIFY_MESSAGE_MAX
            || proven_identify_message("", e->origin, e->session, msg, &len)
               != PROVEN_OK)
        {
            proven_errf(err, errlen, "the entry's origin is too long");
            return PROVEN_ERR;
        }
    } else if (proven_audit_message(e, msg, sizeof(msg), &len) != PROVEN_OK)
    {
        proven_errf(err, errlen, "cannot encode the audit message");
        return PROVEN_ERR;
    }

    key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, e->signer,
                                      PROVEN_AUDIT_KEY_LEN);
    md = EVP_MD_CTX_new();
    rc = key != NULL && md != NULL
         && EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) == 1
         && EVP_DigestVerify(md, e->signature, PROVEN_AUDIT_SIG_LEN, msg,
                             len) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);

    if (!rc) {
        proven_errf(err, errlen, e->has_session
                    ? "the signature is not the signer's Identify proof "
                    "for that session"
                    : "the signature is not the signer's over this "
                    "change");
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


static ssize_t
proven_audit_owner_index(const proven_app_state_t *st, const uint8_t *key)
{
    size_t  i;

    for (i = 0; i < st->nowners; i++) {
        if (memcmp(st->owners[i], key, PROVEN_AUDIT_KEY_LEN) == 0) {
            return (ssize_t) i;
        }
    }
    return -1;
}


static int
proven_audit_was_deployed(const proven_app_state_t *st, const uint8_t *id)
{
    size_t  i;

    for (i = 0; i < st->ndeployed; i++) {
        if (memcmp(st->deployed[i], id, PROVEN_AUDIT_HASH_LEN) == 0) {
            return 1;
        }
    }
    return 0;
}


int
proven_audit_apply(proven_app_state_t *st, const proven_audit_entry_t *e,
    const uint8_t hash[PROVEN_AUDIT_HASH_LEN], char *err, size_t errlen)
{
    size_t    n;
    ssize_t   at;
    uint8_t (*grown)[PROVEN_AUDIT_HASH_LEN];
    uint8_t   zero[PROVEN_AUDIT_HASH_LEN];

    memset(zero, 0, sizeof(zero));

    if (!proven_audit_app_valid(e->app)
        || (st->seq > 0 && strcmp(e->app, st->app) != 0))
    {
        proven_errf(err, errlen, "entry %llu is for application \"%s\"",
                    (unsigned long long) e->seq, e->app);
        return PROVEN_ERR;
    }

    if (e->seq != st->seq + 1) {
        proven_errf(err, errlen, "entry %llu where %llu was expected",
                    (unsigned long long) e->seq,
                    (unsigned long long) st->seq + 1);
        return PROVEN_ERR;
    }

    if (memcmp(e->prev, st->seq == 0 ? zero : st->head,
               PROVEN_AUDIT_HASH_LEN) != 0)
    {
        proven_errf(err, errlen,
                    "entry %llu does not follow the log's head (it was "
                    "signed for another state of the log)",
                    (unsigned long long) e->seq);
        return PROVEN_ERR;
    }

    if (proven_audit_verify(e, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    if (st->seq == 0) {
        if (e->action != PROVEN_AUDIT_DEPLOY) {
            proven_errf(err, errlen,
                        "the first entry of an application must be a "
                        "deploy");
            return PROVEN_ERR;
        }
    } else if (proven_audit_owner_index(st, e->signer) < 0) {
        proven_errf(err, errlen,
                    "the signer is not an owner of \"%s\"", st->app);
        return PROVEN_ERR;
    }

    switch (e->action) {

    case PROVEN_AUDIT_DEPLOY:
    case PROVEN_AUDIT_ROLLBACK:
        if (e->action == PROVEN_AUDIT_ROLLBACK
            && (!proven_audit_was_deployed(st, e->package)
                || (st->has_current
                    && memcmp(st->current, e->package,
                              PROVEN_AUDIT_HASH_LEN) == 0)))
        {
            proven_errf(err, errlen, "a rollback goes to an earlier deployed "
                        "package that is not the current one");
            return PROVEN_ERR;
        }

        if (!proven_audit_was_deployed(st, e->package)) {
            n = st->ndeployed + 1;
            grown = realloc(st->deployed, n * sizeof(*grown));
            if (grown == NULL) {
                proven_errf(err, errlen, "out of memory");
                return PROVEN_ERR;
            }
            st->deployed = grown;
            memcpy(st->deployed[st->ndeployed], e->package,
                   PROVEN_AUDIT_HASH_LEN);
            st->ndeployed = n;
        }

        if (st->seq == 0) {
            memcpy(st->owners[0], e->signer, PROVEN_AUDIT_KEY_LEN);
            st->nowners = 1;
            snprintf(st->app, sizeof(st->app), "%s", e->app);
        }
        memcpy(st->current, e->package, PROVEN_AUDIT_HASH_LEN);
        st->has_current = 1;
        break;

    case PROVEN_AUDIT_ADD_OWNER:
        if (proven_audit_owner_index(st, e->owner) >= 0) {
            proven_errf(err, errlen, "that key is an owner already");
            return PROVEN_ERR;
        }
        if (st->nowners == PROVEN_AUDIT_OWNERS_MAX) {
            proven_errf(err, errlen, "an application has at most %d owners",
                        PROVEN_AUDIT_OWNERS_MAX);
            return PROVEN_ERR;
        }
        memcpy(st->owners[st->nowners++], e->owner, PROVEN_AUDIT_KEY_LEN);
        break;

    case PROVEN_AUDIT_REMOVE_OWNER:
        at = proven_audit_owner_index(st, e->owner);
        if (at < 0) {
            proven_errf(err, errlen, "that key is not an owner");
            return PROVEN_ERR;
        }
        if (st->nowners == 1) {
            proven_errf(err, errlen, "the last owner cannot be removed");
            return PROVEN_ERR;
        }
        memmove(st->owners[at], st->owners[at + 1],
                (st->nowners - (size_t) at - 1) * PROVEN_AUDIT_KEY_LEN);
        st->nowners--;
        break;

    default:
        proven_errf(err, errlen, "unknown action");
        return PROVEN_ERR;
    }

    st->seq = e->seq;
    memcpy(st->head, hash, PROVEN_AUDIT_HASH_LEN);
    return PROVEN_OK;
}


void
proven_app_state_free(proven_app_state_t *st)
{
    free(st->deployed);
    st->deployed = NULL;
    st->ndeployed = 0;
}
