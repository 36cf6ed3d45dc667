/*
 * rpc.call: a session's signed messages checked on the thread pool, in
 * order, and its commands (WhoAmI, Identify, Anonymize, Execute, the
 * registry's).
 */

#include <openssl/sha.h>

#include "sessions_int.h"
#include "chains/eth.h"


/* ---- rpc.call ------------------------------------------------------------ */

/* The live session id of app ("": none); NULL and *why if there is none. */
static provend_session_t *
provend_session_lookup(provend_sessions_t *s, const uint8_t *id,
    const char *app, const char **why)
{
    provend_session_t  *session;

    session = provend_session_find(s, id);
    if (session != NULL
        && provend_session_expired(s, session, uv_now(s->loop)))
    {
        provend_session_drop(s, session);
        *why = "the session has expired";
        return NULL;
    }
    if (session == NULL) {
        *why = "no such session";
        return NULL;
    }
    if (strcmp(session->app, app) != 0) {
        *why = app[0] == '\0' ? "the session is an application's: use "
                                "/app/NAME/rpc"
               : session->app[0] == '\0'
               ? "the session is not this application's"
               : "the session belongs to another application";
        return NULL;
    }
    return session;
}


/*
 * The live session req names ({session, app?}), or NULL once req is
 * answered with why not.
 */
static provend_session_t *
provend_sessions_arg_session(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    int                 has_app;
    char                app[PROVEND_NAME_MAX + 1], err[PROVEN_ERR_LEN];
    size_t              id_len;
    const char         *why;
    const uint8_t      *id;
    provend_session_t  *session;

    if (provend_sessions_arg_bytes(req->map, "session",
                                   PROVEND_SESSION_ID_LEN,
                                   PROVEND_SESSION_ID_LEN, &id, &id_len, err,
                                   sizeof(err)) != PROVEN_OK
        || provend_sessions_arg_text(req->map, "app", app, PROVEND_NAME_MAX,
                                     &has_app, err, sizeof(err)) != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", err);
        return NULL;
    }
    session = provend_session_lookup(s, id, app, &why);
    if (session == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "unknown_session", why);
    }
    return session;
}


/* session.check {session, app?}: {} while the session lives. */
void
provend_sessions_op_check(provend_sessions_t *s, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    provend_session_t  *session;

    session = provend_sessions_arg_session(s, req, reply, ctx);
    if (session == NULL) {
        return;
    }
    provend_session_touch(s, session);
    provend_ops_reply_ok(reply, ctx, req->id, cbor_new_definite_map(0));
}


/* An answer being signed on the thread pool. */
typedef struct {
    uv_work_t              work;
    provend_session_t     *session;
    provend_rpc_msg_t      msg;
    uint8_t               *payload;
    size_t                 payload_len;
    uint64_t               id;
    provend_ops_reply_pt   reply;
    void                  *ctx;
    uint8_t               *frame;         /* the response, made off the loop */
    size_t                 frame_len;
} provend_sign_job_t;


static void
provend_sign_work(uv_work_t *work)
{
    char                 err[PROVEN_ERR_LEN];
    size_t               msg_len;
    uint8_t             *msg, aad[PROVEN_SESSION_ANSWER_AAD_LEN];
    cbor_item_t         *answer;
    provend_sign_job_t  *job;

    job = work->data;
    /* bound to its request: its seq, and the hash of its bytes */
    memcpy(aad, job->session->id, PROVEND_SESSION_ID_LEN);
    memcpy(aad + PROVEND_SESSION_ID_LEN, job->msg.hash, 32);
    if (proven_cose_sign_eddsa(job->payload, job->payload_len, job->msg.seq,
                               aad, sizeof(aad), job->session->key, &msg,
                               &msg_len, err, sizeof(err)) != PROVEN_OK)
    {
        return;
    }
    answer = cbor_new_definite_map(1);
    if (answer != NULL
        && proven_cbor_map_put(answer, "message",
                               cbor_build_bytestring(msg, msg_len))
           == PROVEN_OK
        && proven_response_encode_ok(job->id, answer, &job->frame,
                                     &job->frame_len) != PROVEN_OK)
    {
        job->frame = NULL;
    }
    if (answer != NULL) {
        cbor_decref(&answer);
    }
    free(msg);
}


static void
provend_sign_done(uv_work_t *work, int status)
{
    provend_sign_job_t  *job;

    job = work->data;
    if (status != 0 || job->frame == NULL) {
        provend_ops_reply_error(job->reply, job->ctx, job->id, "internal",
                                "the answer could not be signed");
    } else {
        job->reply(job->ctx, job->frame, job->frame_len);
    }
    provend_session_unref(job->session);
    free(job->payload);
    free(job);
}


/*
 * Answers {"type": type, "data": {"result": result, "data": data}} signed
 * by the session key, bound to the request msg; takes data (a reference, NULL: null).  The payload is
 * built here, signed on the thread pool: Ed25519 is most of an answer's
 * cost, and the loop thread stays free for the next message.
 */
void
provend_rpc_answer(provend_sessions_t *s, provend_session_t *session,
    const provend_rpc_msg_t *msg, const char *type, const char *result, cbor_item_t *data,
    uint64_t id, provend_ops_reply_pt reply, void *ctx)
{
    int                  ok;
    cbor_item_t         *outer, *inner;
    provend_sign_job_t  *job;

    if (data == NULL) {
        data = cbor_new_null();
    }
    outer = cbor_new_definite_map(2);
    inner = cbor_new_definite_map(2);
    ok = outer != NULL && inner != NULL && data != NULL
         && proven_cbor_map_put(inner, "result", cbor_build_string(result))
            == PROVEN_OK;
    if (ok) {
        ok = proven_cbor_map_put(inner, "data", data) == PROVEN_OK;
        data = NULL;
        ok = ok && proven_cbor_map_put(outer, "type",
                                       cbor_build_string(type)) == PROVEN_OK;
        /* map_put takes inner's reference whatever it returns */
        ok = proven_cbor_map_put(outer, "data", inner) == PROVEN_OK && ok;
        inner = NULL;
    }

    job = ok ? calloc(1, sizeof(*job)) : NULL;
    if (job != NULL) {
        job->work.data = job;
        job->session = session;
        job->msg = *msg;
        job->id = id;
        job->reply = reply;
        job->ctx = ctx;
        if (proven_cbor_dump(outer, &job->payload, &job->payload_len)
            != PROVEN_OK
            || uv_queue_work(s->loop, &job->work, provend_sign_work,
                             provend_sign_done) != 0)
        {
            free(job->payload);
            free(job);
            job = NULL;
        } else {
            session->refs++;
        }
    }
    if (job == NULL) {
        provend_ops_reply_error(reply, ctx, id, "internal",
                                "out of memory");
    }

    if (data != NULL) {
        cbor_decref(&data);
    }
    if (inner != NULL) {
        cbor_decref(&inner);
    }
    if (outer != NULL) {
        cbor_decref(&outer);
    }
}


cbor_item_t *
provend_rpc_text(const char *text)
{
    return cbor_build_string(text);
}


int
provend_session_unproved(const provend_session_t *session)
{
    static const uint8_t  none[sizeof(session->identity_proof)];

    return memcmp(session->identity_proof, none, sizeof(none)) == 0;
}


void
provend_session_forget_links(provend_session_t *session)
{
    memset(session->eth_links, 0, sizeof(session->eth_links));
    session->eth_nlinks = 0;
    memset(session->radix_links, 0, sizeof(session->radix_links));
    session->radix_nlinks = 0;
    session->has_radix_challenge = 0;
}


static cbor_item_t *provend_rpc_texts(const char *const *texts, size_t n);


cbor_item_t *
provend_rpc_radix_links(const provend_session_t *session)
{
    size_t       i;
    const char  *texts[PROVEND_RADIX_LINKS_MAX];

    for (i = 0; i < session->radix_nlinks; i++) {
        texts[i] = session->radix_links[i];
    }
    return provend_rpc_texts(texts, session->radix_nlinks);
}


/* texts as a CBOR array of texts (NULL: out of memory) */
static cbor_item_t *
provend_rpc_texts(const char *const *texts, size_t n)
{
    int           ok;
    size_t        i;
    cbor_item_t  *list, *item;

    list = cbor_new_definite_array(n);
    for (i = 0; list != NULL && i < n; i++) {
        item = cbor_build_string(texts[i]);
        ok = item != NULL && cbor_array_push(list, item);
        if (item != NULL) {
            cbor_decref(&item);
        }
        if (!ok) {
            cbor_decref(&list);
        }
    }
    return list;
}


/* ["0x<address>", ...]: what the session linked. */
static cbor_item_t *
provend_rpc_eth_links(const provend_session_t *session)
{
    char         hex[PROVEND_ETH_LINKS_MAX][2 + 40 + 1];
    size_t       i;
    const char  *texts[PROVEND_ETH_LINKS_MAX];

    for (i = 0; i < session->eth_nlinks; i++) {
        hex[i][0] = '0';
        hex[i][1] = 'x';
        proven_hex_encode(session->eth_links[i], 20, hex[i] + 2);
        texts[i] = hex[i];
    }
    return provend_rpc_texts(texts, session->eth_nlinks);
}


static cbor_item_t *
provend_rpc_whoami(provend_session_t *session)
{
    int           ok;
    char          uuid[37];
    cbor_item_t  *data;

    proven_uuid_text(session->id, uuid);
    data = cbor_new_definite_map(5);
    ok = data != NULL
         && proven_cbor_map_put(data, "session_id", cbor_build_string(uuid))
            == PROVEN_OK
         && proven_cbor_map_put(data, "origin", session->has_origin
                                ? cbor_build_string(session->origin)
                                : cbor_new_null()) == PROVEN_OK
         && (!session->identified
             || proven_cbor_map_put(data, "identity",
                                    cbor_build_bytestring(
                                        session->identity,
                                        PROVEND_IDENTITY_KEY_LEN))
                == PROVEN_OK)
         && (session->eth_nlinks == 0
             || proven_cbor_map_put(data, "ethereum",
                                    provend_rpc_eth_links(session))
                == PROVEN_OK)
         && (session->radix_nlinks == 0
             || proven_cbor_map_put(data, "radix",
                                    provend_rpc_radix_links(session))
                == PROVEN_OK);
    if (!ok && data != NULL) {
        cbor_decref(&data);
    }
    return ok ? data : NULL;
}


/*
 * What a wallet signs to link its address to this session's identity
 * (EIP-191 personal_sign of this text): every line binds it to one
 * session of one node, one app and origin, and one identity, so it is
 * worth nothing anywhere else.  Its shape is a wallet's to show a person.
 */
static int
provend_rpc_link_message(const provend_session_t *session,
    const uint8_t address[20], char *out, size_t outlen)
{
    int   n;
    char  uuid[37], addr[41], identity[2 * PROVEND_IDENTITY_KEY_LEN + 1];

    proven_uuid_text(session->id, uuid);
    proven_hex_encode(address, 20, addr);
    proven_hex_encode(session->identity, PROVEND_IDENTITY_KEY_LEN, identity);
    n = snprintf(out, outlen, "proven-link-ethereum-v1\n"
                 "address: 0x%s\nidentity: %s\napp: %s\norigin: %s\n"
                 "session: %s", addr, identity, session->app,
                 session->has_origin ? session->origin : "", uuid);
    return n > 0 && (size_t) n < outlen ? n : -1;
}


/*
 * LinkEthereum {address: "0x<40 hex>", signature: 65 bytes (r, s, v)}:
 * the address's key signed provend_rpc_link_message.  An identified
 * session's only; another Identify or an Anonymize forgets the links.
 */
static const char *
provend_rpc_link_ethereum(provend_session_t *session, cbor_item_t *data)
{
    int             present;
    char            text[2 + 40 + 1], message[1024], err[PROVEN_ERR_LEN];
    size_t          i, len, n;
    uint8_t         address[20], signer[20], hash[32];
    const uint8_t  *sig;

    if (!session->identified) {
        return "identify first: an address is linked to an identity";
    }
    if (provend_sessions_arg_text(data, "address", text, sizeof(text) - 1,
                                  &present, err, sizeof(err)) != PROVEN_OK
        || !present || strncmp(text, "0x", 2) != 0 || strlen(text) != 42
        || proven_hex_decode(text + 2, 40, address, 20, &n) != PROVEN_OK
        || n != 20)
    {
        return "address must be 0x and 40 hex digits";
    }
    if (provend_sessions_arg_bytes(data, "signature", 65, 65, &sig, &len,
                                   NULL, 0) != PROVEN_OK)
    {
        return "signature must be the wallet's 65 bytes (r, s, v)";
    }
    n = (size_t) provend_rpc_link_message(session, address, message,
                                          sizeof(message));
    if ((int) n < 0
        || provend_eth_personal_hash((const uint8_t *) message, n, hash)
           != PROVEN_OK
        || provend_eth_recover(hash, sig, signer, err, sizeof(err))
           != PROVEN_OK
        || CRYPTO_memcmp(signer, address, 20) != 0)
    {
        return "the signature is not that address's over "
               "proven-link-ethereum-v1 with this session's identity, app, "
               "origin and id (EIP-191 personal_sign)";
    }
    for (i = 0; i < session->eth_nlinks; i++) {
        if (memcmp(session->eth_links[i], address, 20) == 0) {
            return NULL;
        }
    }
    if (session->eth_nlinks == PROVEND_ETH_LINKS_MAX) {
        return "4 addresses are linked already: the most a session holds";
    }
    memcpy(session->eth_links[session->eth_nlinks++], address, 20);
    return NULL;
}


/*
 * Identify: the identity key's signature over what binds it to this
 * session alone: its id, its app and its origin (proven_identify_message),
 * so that a proof given to one app's page or one origin is worth nothing
 * in another's session.
 */
static const char *
provend_rpc_identify(provend_session_t *session, cbor_item_t *data)
{
    int             ok;
    size_t          key_len, sig_len, len;
    uint8_t         signed_msg[PROVEN_IDENTIFY_MESSAGE_MAX];
    EVP_PKEY       *key;
    EVP_MD_CTX     *md;
    const uint8_t  *pub, *sig;

    if (provend_sessions_arg_bytes(data, "passkey_prf_public_key_bytes",
                                   32, 32, &pub, &key_len, NULL, 0)
        != PROVEN_OK)
    {
        return "passkey_prf_public_key_bytes must be a 32-byte Ed25519 key";
    }
    if (provend_sessions_arg_bytes(data, "session_id_signature_bytes", 64,
                                   64, &sig, &sig_len, NULL, 0) != PROVEN_OK)
    {
        return "session_id_signature_bytes must be a 64-byte signature";
    }
    if (proven_identify_message(session->app, session->origin, session->id,
                                signed_msg, &len) != PROVEN_OK)
    {
        return "the session's origin is too long to identify in";
    }

    if (!provend_ed25519_key_ok(pub)) {
        return "the identity key is not an Ed25519 key anyone holds (a "
               "point of small order, or none)";
    }
    key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, key_len);
    md = EVP_MD_CTX_new();
    ok = key != NULL && md != NULL
         && EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) == 1
         && EVP_DigestVerify(md, sig, sig_len, signed_msg, len) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    if (!ok) {
        return "the signature does not verify with that key over "
               "proven-identify-v1, this session's app, origin and id";
    }

    if (!session->identified
        || memcmp(session->identity, pub, PROVEND_IDENTITY_KEY_LEN) != 0)
    {
        provend_session_forget_links(session);  /* another identity's */
    }
    memcpy(session->identity, pub, PROVEND_IDENTITY_KEY_LEN);
    memcpy(session->identity_proof, sig, sizeof(session->identity_proof));
    session->identity_epoch++;
    session->identified = 1;
    return NULL;
}


static size_t
provend_grant_bucket(const char *token)
{
    return (size_t) (token[0] * 16 + token[1]) % PROVEND_GRANT_BUCKETS;
}


static provend_grant_t *
provend_grant_new(provend_sessions_t *s, const provend_session_t *session)
{
    uint8_t           raw[16];
    provend_grant_t  *g;

    g = calloc(1, sizeof(*g));
    if (g == NULL || RAND_bytes(raw, sizeof(raw)) != 1) {
        free(g);
        return NULL;
    }
    proven_hex_encode(raw, sizeof(raw), g->token);
    snprintf(g->app, sizeof(g->app), "%s", session->app);
    proven_hex_encode(session->identity, PROVEND_IDENTITY_KEY_LEN,
                      g->identity);
    /* the links as the call began: an Identify during it changes nothing */
    memcpy(g->eth_links, session->eth_links, sizeof(g->eth_links));
    g->eth_nlinks = session->eth_nlinks;
    memcpy(g->radix_links, session->radix_links, sizeof(g->radix_links));
    g->radix_nlinks = session->radix_nlinks;
    g->next = s->grants[provend_grant_bucket(g->token)];
    s->grants[provend_grant_bucket(g->token)] = g;
    return g;
}


static void
provend_grant_free(provend_sessions_t *s, provend_grant_t *grant)
{
    provend_grant_t  **p;

    for (p = &s->grants[provend_grant_bucket(grant->token)]; *p != NULL;
         p = &(*p)->next)
    {
        if (*p == grant) {
            *p = grant->next;
            break;
        }
    }
    OPENSSL_cleanse(grant, sizeof(*grant));
    free(grant);
}


/* The grant token names, if it is one of app's calls under way. */
static provend_grant_t *
provend_grant_find(provend_sessions_t *s, const char *token, const char *app)
{
    provend_grant_t  *g;

    if (token == NULL || strlen(token) != 32) {
        return NULL;
    }
    for (g = s->grants[provend_grant_bucket(token)]; g != NULL; g = g->next)
    {
        if (CRYPTO_memcmp(g->token, token, 32) == 0) {
            return strcmp(g->app, app) == 0 ? g : NULL;
        }
    }
    return NULL;
}


int
provend_sessions_grant_ok(provend_sessions_t *s, const char *token,
    const char *app, const char *identity)
{
    provend_grant_t  *g;

    g = provend_grant_find(s, token, app);
    return g != NULL && strcmp(g->identity, identity) == 0;
}


size_t
provend_sessions_grant_eth(provend_sessions_t *s, const char *token,
    const char *app, uint8_t addresses[PROVEND_ETH_LINKS_MAX][20])
{
    provend_grant_t  *g;

    g = provend_grant_find(s, token, app);
    if (g == NULL) {
        return 0;
    }
    memcpy(addresses, g->eth_links, g->eth_nlinks * 20);
    return g->eth_nlinks;
}


size_t
provend_sessions_grant_radix(provend_sessions_t *s, const char *token,
    const char *app, char accounts[PROVEND_RADIX_LINKS_MAX]
                                   [PROVEND_RADIX_LINK_SIZE])
{
    provend_grant_t  *g;

    g = provend_grant_find(s, token, app);
    if (g == NULL) {
        return 0;
    }
    memcpy(accounts, g->radix_links, sizeof(g->radix_links));
    return g->radix_nlinks;
}


/*
 * session.links {scope: {app}, grant} from an app's worker: who the call
 * runs for, as the call began: {identity: 64 hex digits, ethereum: [0x
 * addresses], radix: [accounts]}.  Another app's grant, or one whose call
 * ended: "forbidden".
 */
void
provend_sessions_op_links(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    int                  ok;
    char                 app[PROVEND_NAME_MAX + 1], grant[33];
    char                 hex[PROVEND_ETH_LINKS_MAX][43];
    const char          *texts[PROVEND_ETH_LINKS_MAX + PROVEND_RADIX_LINKS_MAX];
    size_t               i;
    cbor_item_t         *map, *scope;
    provend_grant_t     *g;
    provend_sessions_t  *s = subsystem;

    (void) op;
    scope = proven_cbor_map_get(req->map, "scope");
    g = NULL;
    if (scope != NULL && cbor_isa_map(scope)
        && proven_cbor_text_into(proven_cbor_map_get(scope, "app"), app,
                                 sizeof(app)) == PROVEN_OK
        && proven_cbor_text_into(proven_cbor_map_get(req->map, "grant"),
                                 grant, sizeof(grant)) == PROVEN_OK)
    {
        g = provend_grant_find(s, grant, app);
    }
    if (g == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "forbidden",
                                "the links are a session's call's: its "
                                "grant is not one of this app's calls under "
                                "way");
        return;
    }
    for (i = 0; i < g->eth_nlinks; i++) {
        hex[i][0] = '0';
        hex[i][1] = 'x';
        proven_hex_encode(g->eth_links[i], 20, hex[i] + 2);
        texts[i] = hex[i];
    }
    map = cbor_new_definite_map(3);
    ok = map != NULL
         && proven_cbor_map_put(map, "identity",
                                cbor_build_string(g->identity)) == PROVEN_OK
         && proven_cbor_map_put(map, "ethereum",
                                provend_rpc_texts(texts, g->eth_nlinks))
            == PROVEN_OK;
    for (i = 0; i < g->radix_nlinks; i++) {
        texts[i] = g->radix_links[i];
    }
    ok = ok && proven_cbor_map_put(map, "radix",
                                   provend_rpc_texts(texts, g->radix_nlinks))
               == PROVEN_OK;
    if (!ok) {
        if (map != NULL) {
            cbor_decref(&map);
        }
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    provend_ops_reply_ok(reply, ctx, req->id, map);
}


static int
provend_permit_is(const provend_nft_permit_t *p, const char *chain,
    const char *contract, const char *token_id)
{
    return strcmp(p->chain, chain) == 0 && strcmp(p->contract, contract) == 0
           && strcmp(p->token, token_id) == 0;
}


int
provend_sessions_grant_permit(provend_sessions_t *s, const char *token,
    const char *app, const char *chain, const char *contract,
    const char *token_id)
{
    size_t                 i;
    provend_grant_t       *g;
    provend_nft_permit_t  *p;

    g = provend_grant_find(s, token, app);
    if (g == NULL || strlen(chain) > PROVEND_CHAIN_MAX
        || strlen(contract) > PROVEND_CONTRACT_MAX
        || strlen(token_id) > PROVEND_TOKEN_MAX)
    {
        return PROVEN_ERR;
    }
    for (i = 0; i < g->npermits; i++) {
        if (provend_permit_is(&g->permits[i], chain, contract, token_id)) {
            return PROVEN_OK;
        }
    }
    if (g->npermits == PROVEND_NFT_PERMITS_MAX) {
        return PROVEN_ERR;
    }
    p = &g->permits[g->npermits++];
    snprintf(p->chain, sizeof(p->chain), "%s", chain);
    snprintf(p->contract, sizeof(p->contract), "%s", contract);
    snprintf(p->token, sizeof(p->token), "%s", token_id);
    return PROVEN_OK;
}


int
provend_sessions_grant_nft_ok(provend_sessions_t *s, const char *token,
    const char *app, const char *chain, const char *contract,
    const char *token_id)
{
    size_t            i;
    provend_grant_t  *g;

    g = provend_grant_find(s, token, app);
    for (i = 0; g != NULL && i < g->npermits; i++) {
        if (provend_permit_is(&g->permits[i], chain, contract, token_id)) {
            return 1;
        }
    }
    return 0;
}


/* A command whose answer comes later; holds the session. */
provend_rpc_t *
provend_rpc_new(provend_sessions_t *s, provend_session_t *session,
    const provend_rpc_msg_t *msg, const char *type, uint64_t id,
    provend_ops_reply_pt reply, void *ctx)
{
    provend_rpc_t  *rpc;

    rpc = calloc(1, sizeof(*rpc));
    if (rpc == NULL) {
        return NULL;
    }
    rpc->sessions = s;
    rpc->session = session;
    rpc->msg = *msg;
    snprintf(rpc->type, sizeof(rpc->type), "%s", type);
    rpc->started = uv_hrtime();
    rpc->id = id;
    rpc->reply = reply;
    rpc->ctx = ctx;
    session->refs++;
    return rpc;
}


void
provend_rpc_free(provend_rpc_t *rpc)
{
    if (rpc->running) {
        rpc->session->running--;
    }
    if (rpc->grant != NULL) {
        provend_grant_free(rpc->sessions, rpc->grant);
    }
    provend_session_unref(rpc->session);
    free(rpc);
}


static void
provend_rpc_executed(void *data, const char *failure, proven_response_t *res)
{
    int             ok;
    cbor_item_t    *out, *error, *logs;
    provend_rpc_t  *rpc;

    rpc = data;

    if (failure == NULL && res->ok) {
        provend_rpc_answer(rpc->sessions, rpc->session, &rpc->msg, rpc->type,
                           "success", res->result != NULL
                           ? cbor_incref(res->result) : NULL,
                           rpc->id, rpc->reply, rpc->ctx);
        provend_rpc_free(rpc);
        return;
    }

    error = failure == NULL ? proven_cbor_map_get(res->map, "error") : NULL;
    logs = error != NULL ? proven_cbor_map_get(error, "logs") : NULL;
    out = cbor_new_definite_map(4);
    ok = out != NULL
         && proven_cbor_map_put(out, "error", cbor_build_string(
                failure != NULL ? failure : res->message)) == PROVEN_OK
         && proven_cbor_map_put(out, "code", cbor_build_string(
                failure != NULL ? "worker_unavailable" : res->code))
            == PROVEN_OK
         && proven_cbor_map_put(out, "logs", logs != NULL
                                ? cbor_incref(logs)
                                : cbor_new_definite_array(0)) == PROVEN_OK
         && proven_cbor_map_put(out, "duration_us", cbor_build_uint64(
                (uv_hrtime() - rpc->started) / 1000)) == PROVEN_OK;
    if (!ok && out != NULL) {
        cbor_decref(&out);
    }
    provend_rpc_answer(rpc->sessions, rpc->session, &rpc->msg, rpc->type,
                       "failure", ok ? out : provend_rpc_text("out of memory"),
                       rpc->id, rpc->reply, rpc->ctx);
    provend_rpc_free(rpc);
}


/*
 * A handler as the runtime names it, "PATH#NAME": Proven's specifiers
 * "file:///PATH#NAME" are the same handler.
 */
static const char *
provend_rpc_handler(const char *spec)
{
    static const char  file[] = "file:///";

    return strncmp(spec, file, sizeof(file) - 1) == 0
           ? spec + sizeof(file) - 1 : spec;
}


/*
 * Execute {handler, args} and ExecuteHash {module_hash, handler, args}:
 * 1 when the answer comes later, else 0 with *result and *out set.
 */
static int
provend_rpc_execute(provend_sessions_t *s, provend_session_t *session,
    const provend_rpc_msg_t *msg, const char *type, cbor_item_t *data, int by_hash,
    uint64_t id, provend_ops_reply_pt reply, void *ctx, const char **result,
    cbor_item_t **out)
{
    int             rc, present;
    char            handler[PROVEND_HANDLER_MAX + 1], identity[65];
    char            err[PROVEN_ERR_LEN];
    size_t          hash_len;
    cbor_item_t    *args, *empty;
    const uint8_t  *hash;
    provend_rpc_t  *rpc;

    *result = "failure";
    if (!cbor_isa_map(data)
        || provend_sessions_arg_text(data, "handler", handler,
                                     PROVEND_HANDLER_MAX, &present, err,
                                     sizeof(err)) != PROVEN_OK
        || !present)
    {
        *out = provend_rpc_text("data must be a map with a \"handler\" "
                                "text (\"module#name\")");
        return 0;
    }
    hash = NULL;
    if (by_hash
        && provend_sessions_arg_bytes(data, "module_hash", 32, 32, &hash,
                                      &hash_len, NULL, 0) != PROVEN_OK)
    {
        *out = provend_rpc_text("module_hash must be the 32-byte id of a "
                                "package");
        return 0;
    }
    args = proven_cbor_map_get(data, "args");
    if (args != NULL && !cbor_isa_array(args)) {
        *out = provend_rpc_text("args must be an array of the handler's "
                                "arguments");
        return 0;
    }
    if (session->app[0] == '\0' || s->apps == NULL) {
        *out = provend_rpc_text("this session is not an application's: "
                                "open it with POST /app/NAME/session");
        return 0;
    }
    if (session->running >= PROVEND_SESSION_RUNS_MAX) {
        *out = provend_rpc_text("too many calls of this session are under "
                                "way; wait for their answers");
        return 0;
    }

    rpc = provend_rpc_new(s, session, msg, type, id, reply, ctx);
    if (rpc == NULL) {
        *out = provend_rpc_text("out of memory");
        return 0;
    }

    if (session->identified) {
        proven_hex_encode(session->identity, PROVEND_IDENTITY_KEY_LEN,
                          identity);
        rpc->grant = provend_grant_new(s, session);
        if (rpc->grant == NULL) {
            provend_rpc_free(rpc);
            *out = provend_rpc_text("out of memory");
            return 0;
        }
    }
    empty = args == NULL ? cbor_new_definite_array(0) : NULL;
    rc = provend_apps_run(s->apps, session->app, hash, provend_rpc_handler(handler),
                          args != NULL ? args : empty,
                          session->identified ? identity : NULL,
                          rpc->grant != NULL ? rpc->grant->token : NULL,
                          provend_rpc_executed, rpc);
    if (empty != NULL) {
        cbor_decref(&empty);
    }
    if (rc == PROVEN_OK) {
        rpc->running = 1;
        session->running++;
        return 1;
    }
    provend_rpc_free(rpc);

    if (rc == PROVEND_RUN_STOPPING) {
        *out = provend_rpc_text("the node is stopping");
    } else if (rc == PROVEND_RUN_HASH_UNKNOWN) {
        *result = "HashUnknown";
        *out = NULL;
    } else if (rc == PROVEND_RUN_NO_APP) {
        snprintf(err, sizeof(err), "no application \"%s\" is deployed",
                 session->app);
        *out = provend_rpc_text(err);
    } else {
        *out = provend_rpc_text("out of memory");
    }
    return 0;
}


/* The end of CreateApplication, AddAllowedOrigin and Deploy. */
static void
provend_rpc_registry_done(void *data, const char *code, const char *message,
    cbor_item_t *result)
{
    cbor_item_t    *out;
    provend_rpc_t  *rpc;

    rpc = data;
    if (code != NULL) {
        out = provend_rpc_text(message != NULL ? message : code);
        provend_rpc_answer(rpc->sessions, rpc->session, &rpc->msg, rpc->type,
                           "failure", out, rpc->id, rpc->reply, rpc->ctx);

    } else if (strcmp(rpc->type, "CreateApplication") == 0) {
        out = cbor_new_definite_map(1);
        if (out != NULL
            && proven_cbor_map_put(out, "application_id",
                                   cbor_incref(result)) != PROVEN_OK)
        {
            cbor_decref(&out);
        }
        provend_rpc_answer(rpc->sessions, rpc->session, &rpc->msg, rpc->type,
                           out != NULL ? "success" : "failure",
                           out != NULL ? out
                                       : provend_rpc_text("out of memory"),
                           rpc->id, rpc->reply, rpc->ctx);

    } else {
        provend_rpc_answer(rpc->sessions, rpc->session, &rpc->msg, rpc->type,
                           "success", result != NULL ? cbor_incref(result)
                                                     : NULL,
                           rpc->id, rpc->reply, rpc->ctx);
    }
    provend_rpc_free(rpc);
}


/*
 * CreateApplication, AddAllowedOrigin {application_id, origin},
 * ListApplicationsByOwner and Deploy {package, application_id?}: an
 * identified session's.  1 when the answer comes later, else 0 with
 * *result and *out set.
 */
static int
provend_rpc_registry(provend_sessions_t *s, provend_session_t *session,
    const provend_rpc_msg_t *msg, const char *type, cbor_item_t *data, uint64_t id,
    provend_ops_reply_pt reply, void *ctx, const char **result,
    cbor_item_t **out)
{
    int             rc, present;
    char            app[PROVEND_NAME_MAX + 1], err[PROVEN_ERR_LEN];
    char            origin[PROVEND_ORIGIN_MAX + 1];
    cbor_item_t    *package;
    provend_rpc_t  *rpc;

    *result = "failure";
    if (s->apps == NULL) {
        *out = provend_rpc_text("applications are unavailable on this "
                                "node");
        return 0;
    }
    if (!session->identified) {
        *out = provend_rpc_text("identify first: this needs an identity");
        return 0;
    }
    if (provend_session_unproved(session)) {
        /* a passkey signs in to an app, not to its owner's rights */
        *out = provend_rpc_text("this needs the identity's Identify proof "
                                "in this session (a passkey sign-in has "
                                "none)");
        return 0;
    }

    if (strcmp(type, "ListApplicationsByOwner") == 0) {
        *result = "success";
        *out = provend_apps_owned_by(s->apps, session->identity);
        return 0;
    }

    app[0] = '\0';
    origin[0] = '\0';
    package = NULL;
    if (strcmp(type, "CreateApplication") != 0) {
        if (data == NULL || !cbor_isa_map(data)
            || provend_sessions_arg_text(data, "application_id", app,
                                         PROVEND_NAME_MAX, &present, err,
                                         sizeof(err)) != PROVEN_OK)
        {
            *out = provend_rpc_text("data must be a map; application_id a "
                                    "text");
            return 0;
        }
        if (!present) {
            snprintf(app, sizeof(app), "%s", session->app);
        }
        if (app[0] == '\0') {
            *out = provend_rpc_text("which application? give "
                                    "application_id");
            return 0;
        }
    }
    if (strcmp(type, "AddAllowedOrigin") == 0
        && (provend_sessions_arg_text(data, "origin", origin,
                                      PROVEND_ORIGIN_MAX, &present, err,
                                      sizeof(err)) != PROVEN_OK
            || !present || origin[0] == '\0'))
    {
        *out = provend_rpc_text("origin must be a text such as "
                                "https://example.com");
        return 0;
    }
    if (strcmp(type, "Deploy") == 0) {
        package = proven_cbor_map_get(data, "package");
        if (package == NULL || !cbor_isa_bytestring(package)
            || !cbor_bytestring_is_definite(package))
        {
            *out = provend_rpc_text("package must be the package's bytes "
                                    "(proven app pack)");
            return 0;
        }
    }

    rpc = provend_rpc_new(s, session, msg, type, id, reply, ctx);
    if (rpc == NULL) {
        *out = provend_rpc_text("out of memory");
        return 0;
    }

    if (strcmp(type, "CreateApplication") == 0) {
        rc = provend_apps_create(s->apps, session->identity,
                                 provend_rpc_registry_done, rpc);
    } else if (strcmp(type, "AddAllowedOrigin") == 0) {
        rc = provend_apps_add_origin(s->apps, app, session->identity, origin,
                                     provend_rpc_registry_done, rpc);
    } else {
        rc = provend_apps_deploy_by_session(s->apps, app, package,
                                            session->identity, session->id,
                                            session->origin,
                                            session->identity_proof,
                                            provend_rpc_registry_done, rpc);
    }
    if (rc == PROVEN_OK) {
        return 1;
    }
    provend_rpc_free(rpc);
    *out = provend_rpc_text("out of memory");
    return 0;
}


/*
 * A verified message of session, its seq accepted: decodes the payload
 * and runs the command.  m points into the caller's bytes.
 */
static void
provend_rpc_dispatch(provend_sessions_t *s, provend_session_t *session,
    const proven_cose_eddsa_t *mm, const provend_rpc_msg_t *msg, uint64_t id,
    provend_ops_reply_pt reply, void *ctx)
{
    char                  err[PROVEN_ERR_LEN];
    char                  type[PROVEND_RPC_TYPE_MAX + 1];
    const char           *result, *why;
    cbor_item_t          *payload, *data, *out, *t;
    proven_cose_eddsa_t   m;

    m = *mm;
    /* depth-bounded: a client signs whatever nesting it likes */
    payload = proven_cbor_load(m.payload, m.payload_len, NULL, 0);
    t = payload != NULL ? proven_cbor_map_get(payload, "type") : NULL;
    if (t == NULL || !cbor_isa_string(t) || !cbor_string_is_definite(t)
        || cbor_string_length(t) == 0
        || cbor_string_length(t) > PROVEND_RPC_TYPE_MAX)
    {
        if (payload != NULL) {
            cbor_decref(&payload);
        }
        provend_ops_reply_error(reply, ctx, id, "bad_message",
                                "the payload is not a CBOR map {\"type\": "
                                "text, \"data\": any}");
        return;
    }
    memcpy(type, cbor_string_handle(t), cbor_string_length(t));
    type[cbor_string_length(t)] = '\0';
    data = proven_cbor_map_get(payload, "data");

    result = "success";
    out = NULL;

    if (strcmp(type, "WhoAmI") == 0) {
        result = session->identified ? "identified" : "anonymous";
        out = provend_rpc_whoami(session);

    } else if (strcmp(type, "Identify") == 0) {
        why = data != NULL && cbor_isa_map(data)
              ? provend_rpc_identify(session, data)
              : "data must be a map";
        if (why != NULL) {
            result = "failure";
            out = provend_rpc_text(why);
        }

    } else if (strcmp(type, "Anonymize") == 0) {
        session->identified = 0;
        memset(session->identity, 0, sizeof(session->identity));
        memset(session->identity_proof, 0, sizeof(session->identity_proof));
        provend_session_forget_links(session);
        session->identity_epoch++;

    } else if (strcmp(type, "PasskeyChallenge") == 0
               || strcmp(type, "RegisterPasskey") == 0
               || strcmp(type, "LoginPasskey") == 0)
    {
        if (provend_passkey_command(s, session, msg, type, data, id, reply,
                                    ctx, &result, &out))
        {
            cbor_decref(&payload);
            return;
        }

    } else if (strcmp(type, "RadixChallenge") == 0
               || strcmp(type, "LinkRadix") == 0)
    {
        if (provend_radix_command(s, session, msg, type, data, id, reply,
                                  ctx, &result, &out))
        {
            cbor_decref(&payload);
            return;
        }

    } else if (strcmp(type, "LinkEthereum") == 0) {
        why = data != NULL && cbor_isa_map(data)
              ? provend_rpc_link_ethereum(session, data)
              : "data must be a map";
        if (why != NULL) {
            result = "failure";
            out = provend_rpc_text(why);
        } else {
            out = provend_rpc_eth_links(session);
        }

    } else if (strcmp(type, "Execute") == 0
               || strcmp(type, "ExecuteHash") == 0)
    {
        if (provend_rpc_execute(s, session, msg, type,
                                data != NULL ? data : payload,
                                strcmp(type, "ExecuteHash") == 0, id,
                                reply, ctx, &result, &out))
        {
            cbor_decref(&payload);
            return;
        }

    } else if (strcmp(type, "CreateApplication") == 0
               || strcmp(type, "AddAllowedOrigin") == 0
               || strcmp(type, "ListApplicationsByOwner") == 0
               || strcmp(type, "Deploy") == 0)
    {
        if (session->app[0] != '\0') {
            /* an app's page holds this session: never the registry */
            cbor_decref(&payload);
            snprintf(err, sizeof(err), "%s is a management command: open "
                     "a session with POST /session for it", type);
            provend_ops_reply_error(reply, ctx, id, "forbidden", err);
            return;
        }
        if (provend_rpc_registry(s, session, msg, type, data, id,
                                 reply, ctx, &result, &out))
        {
            cbor_decref(&payload);
            return;
        }

    } else {
        result = "failure";
        snprintf(err, sizeof(err), "unknown command \"%s\"", type);
        out = provend_rpc_text(err);
    }

    provend_rpc_answer(s, session, msg, type, result, out, id, reply, ctx);
    cbor_decref(&payload);
}


/* A message being verified on the thread pool. */
struct provend_verify_s {
    uv_work_t              work;
    provend_sessions_t    *sessions;
    provend_session_t     *session;
    uint8_t               *msg;           /* a copy; m points into it */
    proven_cose_eddsa_t    m;
    provend_rpc_msg_t      bound;         /* seq, SHA-256 of msg */
    size_t                 msg_len;
    int                    verified;
    uint64_t               id;
    provend_ops_reply_pt   reply;
    void                  *ctx;
    provend_verify_t      *next;          /* the session's queue */
};


static void
provend_verify_work(uv_work_t *work)
{
    provend_verify_t  *v;

    v = work->data;
    v->verified = proven_cose_check_eddsa(&v->m, v->session->id,
                                          PROVEND_SESSION_ID_LEN,
                                          v->session->client_key, NULL, 0)
                  == PROVEN_OK;
    if (v->verified) {
        SHA256(v->msg, v->msg_len, v->bound.hash);
    }
}


static void provend_verify_done(uv_work_t *work, int status);


/* Starts the first message queued for the session, if none is running. */
static void
provend_verify_next(provend_sessions_t *s, provend_session_t *session)
{
    provend_verify_t  *v;

    while (!session->verifying && (v = session->queue) != NULL) {
        session->queue = v->next;
        session->queued--;
        if (session->queue == NULL) {
            session->queue_tail = NULL;
        }
        v->work.data = v;
        if (uv_queue_work(s->loop, &v->work, provend_verify_work,
                          provend_verify_done) == 0)
        {
            session->verifying = 1;
            return;
        }
        provend_ops_reply_error(v->reply, v->ctx, v->id, "internal",
                                "cannot queue the verification");
        provend_session_unref(v->session);
        free(v->msg);
        free(v);
    }
}


static void
provend_verify_done(uv_work_t *work, int status)
{
    char                 err[PROVEN_ERR_LEN];
    provend_verify_t    *v;
    provend_session_t   *session;
    provend_sessions_t  *s;

    v = work->data;
    s = v->sessions;
    session = v->session;
    session->verifying = 0;

    if (status != 0) {
        provend_ops_reply_error(v->reply, v->ctx, v->id, "internal",
                                "the verification was cancelled");
    } else if (!session->listed) {
        provend_ops_reply_error(v->reply, v->ctx, v->id, "unknown_session",
                                "the session has ended");
    } else if (!v->verified) {
        provend_ops_reply_error(v->reply, v->ctx, v->id, "bad_signature",
                                "the message is not signed by the "
                                "session's client key");
    } else if (v->m.seq <= session->seq) {
        snprintf(err, sizeof(err), "seq %llu is not above %llu, the last "
                 "one accepted", (unsigned long long) v->m.seq,
                 (unsigned long long) session->seq);
        provend_ops_reply_error(v->reply, v->ctx, v->id, "replayed", err);
    } else {
        session->seq = v->m.seq;
        v->bound.seq = v->m.seq;
        provend_session_touch(s, session);
        provend_rpc_dispatch(s, session, &v->m, &v->bound, v->id, v->reply,
                             v->ctx);
    }

    provend_verify_next(s, session);
    provend_session_unref(session);
    free(v->msg);
    free(v);
}


/*
 * rpc.call {session, app?, message}: the message is parsed here, its
 * signature checked on the thread pool, one at a time per session so that
 * its messages keep their order; then its seq and command, here again.
 */
void
provend_sessions_op_rpc(provend_sessions_t *s, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    char                  err[PROVEN_ERR_LEN];
    size_t                msg_len;
    const uint8_t        *msg;
    provend_verify_t     *v;
    provend_session_t    *session;
    proven_cose_eddsa_t   m;

    if (provend_sessions_arg_bytes(req->map, "message", 1,
                                   PROVEN_FRAME_MAX, &msg, &msg_len, err,
                                   sizeof(err)) != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", err);
        return;
    }
    session = provend_sessions_arg_session(s, req, reply, ctx);
    if (session == NULL) {
        return;
    }

    if (proven_cose_parse_eddsa(msg, msg_len, &m, err, sizeof(err))
        != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "bad_message", err);
        return;
    }
    if (session->queued >= PROVEND_SESSION_QUEUE_MAX) {
        provend_ops_reply_error(reply, ctx, req->id, "busy",
                                "too many messages of this session wait");
        return;
    }
    if (!provend_bucket_take(&session->messages, s->message_rate,
                             uv_now(s->loop)))
    {
        provend_ops_reply_error(reply, ctx, req->id, "rate_limited",
                                "too many messages in this session: slow "
                                "down");
        return;
    }

    v = calloc(1, sizeof(*v));
    if (v == NULL || (v->msg = malloc(msg_len)) == NULL) {
        free(v);
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    memcpy(v->msg, msg, msg_len);
    v->msg_len = msg_len;
    v->m = m;
    v->m.protected_hdr = v->msg + (m.protected_hdr - msg);
    v->m.payload = v->msg + (m.payload - msg);
    v->m.signature = v->msg + (m.signature - msg);
    v->sessions = s;
    v->session = session;
    v->id = req->id;
    v->reply = reply;
    v->ctx = ctx;
    session->refs++;

    if (session->queue_tail != NULL) {
        session->queue_tail->next = v;
    } else {
        session->queue = v;
    }
    session->queue_tail = v;
    session->queued++;
    provend_verify_next(s, session);
}
