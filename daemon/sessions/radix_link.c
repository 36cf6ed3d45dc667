/*
 * Radix accounts linked to a session's identity (ROLA, rola.c):
 *
 *   RadixChallenge -> {challenge: 32 bytes}, single-use
 *   LinkRadix {account, public_key, curve, signature, dapp_definition}
 *       -> the accounts linked
 *
 * The wallet's signature is checked here at once.  Which keys own the
 * account is the ledger's: with a Gateway (--radix-gateway), its
 * owner_keys metadata, read on the pool: where set, the key's hash must
 * be among them (a key the owner replaced links nothing); where never
 * set, the account must be the key's virtual account.  Without a
 * Gateway, the virtual account only (an account whose keys changed is
 * then taken by its first key: the README says so).
 */

#include <openssl/rand.h>

#include "sessions_int.h"
#include "chains/radix.h"


#define RADIX_JOBS_MAX   1      /* Gateway reads on the pool at once */
#define RADIX_READ_MS    10000

typedef struct {
    uv_work_t              work;
    provend_rpc_t         *rpc;
    provend_radix_t       *radix;
    uint64_t               epoch;       /* the session's, at the start */
    char                   account[PROVEND_RADIX_ADDRESS_MAX + 1];
    int                    curve;
    uint8_t                key_hash[29];
    int                    virtual_ok;  /* the key's virtual account */
    int                    ok;
    char                   why[PROVEN_ERR_LEN];
} radix_job_t;


/* account linked to the session: NULL, or why not. */
static const char *
radix_link(provend_session_t *session, const char *account)
{
    size_t  i;

    for (i = 0; i < session->radix_nlinks; i++) {
        if (strcmp(session->radix_links[i], account) == 0) {
            return NULL;
        }
    }
    if (session->radix_nlinks == PROVEND_RADIX_LINKS_MAX) {
        return "4 accounts are linked already: the most a session holds";
    }
    snprintf(session->radix_links[session->radix_nlinks++],
             sizeof(session->radix_links[0]), "%s", account);
    return NULL;
}


/* ---- the ledger's word, on the pool ---------------------------------------- */

static void
radix_work(uv_work_t *work)
{
    int                        set;
    char                       err[PROVEN_ERR_LEN];
    size_t                     i, n;
    radix_job_t               *j = work->data;
    provend_radix_key_hash_t   keys[PROVEND_RADIX_OWNER_KEYS];

    set = provend_radix_owner_keys(j->radix, j->account, keys, &n,
                                   uv_hrtime() + RADIX_READ_MS * 1000000ULL,
                                   err, sizeof(err));
    if (set == PROVEN_ERR) {
        proven_errf(j->why, sizeof(j->why), "the account's owner keys could "
                    "not be read: %.200s", err);
        return;
    }
    if (set == 0) {
        j->ok = j->virtual_ok;
        if (!j->ok) {
            proven_errf(j->why, sizeof(j->why), "the account has no "
                        "owner_keys on ledger and is not that key's virtual "
                        "account on this node's network");
        }
        return;
    }
    for (i = 0; i < n; i++) {
        if (keys[i].curve == j->curve
            && memcmp(keys[i].hash, j->key_hash, 29) == 0)
        {
            j->ok = 1;
            return;
        }
    }
    proven_errf(j->why, sizeof(j->why), "the key is not among the account's "
                "owner_keys on ledger");
}


static void
radix_done(uv_work_t *work, int status)
{
    const char         *why;
    radix_job_t        *j = work->data;
    provend_rpc_t      *rpc = j->rpc;
    provend_session_t  *session = rpc->session;

    session->radix_busy = 0;
    rpc->sessions->radix_jobs--;
    why = NULL;
    if (status != 0) {
        why = "cancelled";
    } else if (!j->ok) {
        why = j->why;
    } else if (session->identity_epoch != j->epoch || !session->identified) {
        /* an Identify or Anonymize came after it, and stands */
        why = "the session's identity changed while the account was "
              "checked: not linked";
    } else {
        why = radix_link(session, j->account);
    }
    provend_rpc_answer(rpc->sessions, session, &rpc->msg, rpc->type,
                       why == NULL ? "success" : "failure",
                       why == NULL ? provend_rpc_radix_links(session)
                                   : provend_rpc_text(why),
                       rpc->id, rpc->reply, rpc->ctx);
    provend_rpc_free(rpc);
    free(j);
}


/* ---- the commands -------------------------------------------------------------- */

static const char *
radix_challenge(provend_session_t *session, cbor_item_t **out)
{
    if (RAND_bytes(session->radix_challenge,
                   sizeof(session->radix_challenge)) != 1)
    {
        return "no randomness";
    }
    session->has_radix_challenge = 1;
    *out = cbor_new_definite_map(1);
    if (*out != NULL
        && proven_cbor_map_put(*out, "challenge",
               cbor_build_bytestring(session->radix_challenge,
                                     sizeof(session->radix_challenge)))
           != PROVEN_OK)
    {
        cbor_decref(out);
    }
    return *out != NULL ? NULL : "out of memory";
}


/*
 * LinkRadix's checks that need no ledger, into j: the challenge this
 * session was given (spent by this attempt), the signature over ROLA's
 * message with this session's origin, the key's virtual account.
 */
static const char *
radix_check(provend_sessions_t *s, provend_session_t *session,
    cbor_item_t *data, radix_job_t *j)
{
    int                   present;
    char                  derived[PROVEND_RADIX_ADDRESS_MAX + 1];
    char                  dapp[256], curve_name[16], err[PROVEN_ERR_LEN];
    size_t                pub_len, sig_len;
    uint8_t               challenge[PROVEND_ROLA_CHALLENGE_LEN], hash[32];
    const uint8_t        *pub, *sig;
    provend_rola_curve_t  curve;

    if (!session->identified) {
        return "identify first: an account is linked to an identity";
    }
    if (!session->has_radix_challenge) {
        return "ask RadixChallenge first: each challenge serves one proof";
    }
    memcpy(challenge, session->radix_challenge, sizeof(challenge));
    session->has_radix_challenge = 0;
    if (!session->has_origin || session->origin[0] == '\0') {
        return "ROLA binds the page's origin: this session has none";
    }
    if (data == NULL || !cbor_isa_map(data)) {
        return "data must be a map";
    }
    if (provend_sessions_arg_text(data, "account", j->account,
                                  PROVEND_RADIX_ADDRESS_MAX, &present, err,
                                  sizeof(err)) != PROVEN_OK || !present
        || provend_sessions_arg_text(data, "dapp_definition", dapp, 255,
                                     &present, err, sizeof(err)) != PROVEN_OK
        || !present
        || provend_sessions_arg_text(data, "curve", curve_name,
                                     sizeof(curve_name) - 1, &present, err,
                                     sizeof(err)) != PROVEN_OK || !present
        || provend_sessions_arg_bytes(data, "public_key", 32, 33, &pub,
                                      &pub_len, NULL, 0) != PROVEN_OK
        || provend_sessions_arg_bytes(data, "signature", 64, 65, &sig,
                                      &sig_len, NULL, 0) != PROVEN_OK)
    {
        return "LinkRadix takes account, dapp_definition and curve (texts), "
               "public_key and signature (bytes)";
    }
    if (strcmp(curve_name, "curve25519") == 0) {
        curve = PROVEND_ROLA_ED25519;
    } else if (strcmp(curve_name, "secp256k1") == 0) {
        curve = PROVEND_ROLA_SECP256K1;
    } else {
        return "curve must be curve25519 or secp256k1";
    }
    if (!provend_radix_address_valid(j->account, s->radix_network,
                                     "account"))
    {
        return "the account is not an account address of this node's "
               "network (Bech32m, its checksum held)";
    }
    if (provend_rola_hash(challenge, dapp, session->origin, hash, err,
                          sizeof(err)) != PROVEN_OK)
    {
        return "the dApp definition address must be 16 to 255 characters";
    }
    if (provend_rola_verify(curve, pub, pub_len, sig, sig_len, hash, err,
                            sizeof(err)) != PROVEN_OK)
    {
        return "the signature is not that key's over ROLA's message with "
               "this session's challenge, its origin and that dApp "
               "definition";
    }
    if (provend_rola_key_hash(pub, pub_len, j->key_hash) != PROVEN_OK
        || provend_rola_virtual_account(s->radix_network, curve, pub,
                                        pub_len, derived, sizeof(derived))
           != PROVEN_OK)
    {
        return "the key's account cannot be derived";
    }
    j->curve = curve == PROVEND_ROLA_ED25519 ? 0 : 1;
    j->virtual_ok = strcmp(derived, j->account) == 0;
    return NULL;
}


int
provend_radix_command(provend_sessions_t *s, provend_session_t *session,
    const provend_rpc_msg_t *msg, const char *type, cbor_item_t *data,
    uint64_t id, provend_ops_reply_pt reply, void *ctx, const char **result,
    cbor_item_t **out)
{
    const char   *why;
    radix_job_t  *j;

    *out = NULL;
    if (strcmp(type, "RadixChallenge") == 0) {
        why = radix_challenge(session, out);
        goto answered;
    }
    /* before the challenge is spent: a busy node costs the wallet no
     * second proof */
    if (session->radix_busy) {
        why = "a LinkRadix of this session is under way";
        goto answered;
    }
    if (s->radix != NULL && s->radix_jobs >= RADIX_JOBS_MAX) {
        why = "busy: another account is being checked on ledger by this "
              "node; try again (the challenge is still good)";
        goto answered;
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL) {
        why = "out of memory";
        goto answered;
    }
    why = radix_check(s, session, data, j);
    if (why == NULL && s->radix == NULL) {
        /* no ledger to ask: the key's virtual account only */
        why = j->virtual_ok ? radix_link(session, j->account)
              : "the account is not that key's virtual account on this "
                "node's network (an account whose owner keys changed is "
                "checked on ledger: a node with --radix-gateway)";
        *out = why == NULL ? provend_rpc_radix_links(session) : NULL;
    }
    if (why != NULL || s->radix == NULL) {
        free(j);
        goto answered;
    }
    j->radix = s->radix;
    j->epoch = session->identity_epoch;
    j->rpc = provend_rpc_new(s, session, msg, type, id, reply, ctx);
    j->work.data = j;
    if (j->rpc == NULL
        || uv_queue_work(s->loop, &j->work, radix_work, radix_done) != 0)
    {
        if (j->rpc != NULL) {
            provend_rpc_free(j->rpc);
        }
        free(j);
        why = "cannot start the ledger read";
        goto answered;
    }
    session->radix_busy = 1;
    s->radix_jobs++;
    return 1;

answered:

    if (why != NULL) {
        *result = "failure";
        *out = provend_rpc_text(why);
    }
    return 0;
}
