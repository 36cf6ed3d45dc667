/*
 * Passkeys over a session (issue 20): the node's side of WebAuthn's two
 * ceremonies, each with a challenge the node makes for the session and
 * takes back at its first use.
 *
 *   PasskeyChallenge            -> {challenge: 32 bytes, rp_id}
 *   RegisterPasskey {client_data_json, attestation_object}   (identified)
 *                               -> {credential_id}
 *   LoginPasskey {credential_id, client_data_json, authenticator_data,
 *                 signature}    -> {identity}: the session is identified
 *                                  as the identity that registered it
 *
 * The relying party is the session's origin's host; the origin must be
 * the session's (a page of another origin gets nothing from a ceremony).
 * A passkey is an app's: registered in a session of that app by an
 * identity that proved itself with Identify (not with another passkey),
 * it signs in sessions of that app only, never the management session
 * (whose commands change apps).  Credentials are kept in the node's own
 * database "passkeys" (replicated in a cluster): id, identity, app, key,
 * sign count, 16 per identity and app.  A login moves the count with a
 * compare-and-set, so two logins with one count (a cloned authenticator)
 * cannot both pass; a replayed answer is stopped by its challenge, spent.
 *
 * The ceremonies' storage runs on the pool (blocking calls), the checks
 * with it; the session is changed on the loop when the answer is given.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "sessions_int.h"
#include "webauthn.h"


#define PASSKEYS_DB       "passkeys"
#define PASSKEYS_PER_APP  16       /* of one identity */
#define PASSKEY_JOBS_MAX  1        /* on the pool at once: the others wait
                                      for signing and checking messages */


typedef struct {
    uv_work_t                 work;
    provend_rpc_t            *rpc;
    provend_storage_t        *storage;
    int                       login;
    uint8_t                   challenge[PROVEND_PASSKEY_CHALLENGE_LEN];
    char                      origin[PROVEND_ORIGIN_MAX + 1];
    char                      rp_id[PROVEND_ORIGIN_MAX + 1];
    uint8_t                   identity[PROVEND_IDENTITY_KEY_LEN];
    uint8_t                  *client_data, *second, *sig;  /* copies */
    size_t                    cd_len, second_len, sig_len;
    uint8_t                   cred_id[PROVEND_WEBAUTHN_ID_MAX];
    size_t                    cred_id_len;
    char                      app[PROVEND_NAME_MAX + 1];
    uint64_t                  epoch;        /* the session's, at the start */

    /* the outcome */
    int                       ok;
    char                      why[PROVEN_ERR_LEN];
    provend_webauthn_cred_t   cred;
} passkey_job_t;


/* "https://host[:port]" -> host: the relying party's id. */
static int
passkey_rp_id(const char *origin, char *out, size_t max)
{
    size_t       n;
    const char  *host;

    host = strstr(origin, "://");
    if (host == NULL) {
        return PROVEN_ERR;
    }
    host += 3;
    n = strcspn(host, ":/");
    if (n == 0 || n >= max || host[0] == '[') {
        return PROVEN_ERR;          /* an IP literal is no relying party */
    }
    memcpy(out, host, n);
    out[n] = '\0';
    return PROVEN_OK;
}


/* ---- storage, on the pool ------------------------------------------------ */

static provend_storage_req_t *
passkey_sql(provend_storage_op_t op, const char *sql, size_t nparams)
{
    provend_storage_req_t  *req;

    req = provend_storage_own_sql(op, PASSKEYS_DB, 1);
    if (req != NULL
        && provend_storage_stmt(req, 0, sql, nparams) != PROVEN_OK)
    {
        provend_storage_req_free(req);
        req = NULL;
    }
    return req;
}


static int
passkey_call(passkey_job_t *j, provend_storage_req_t *req)
{
    if (req == NULL) {
        proven_errf(j->why, sizeof(j->why), "out of memory");
        return PROVEN_ERR;
    }
    if (provend_storage_call(j->storage, req) != PROVEND_ST_OK) {
        proven_errf(j->why, sizeof(j->why), "passkey storage: %s: %.200s",
                    provend_storage_status_name(req->status), req->error);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


int
provend_passkeys_init(provend_sessions_t *s, char *err, size_t errlen)
{
    int                     rc;
    provend_storage_req_t  *req;

    req = passkey_sql(PROVEND_OP_SQL_EXECUTE, "CREATE TABLE IF NOT EXISTS "
                      "credentials (id BLOB PRIMARY KEY, identity BLOB NOT "
                      "NULL, app TEXT NOT NULL, alg INTEGER NOT NULL, key "
                      "BLOB NOT NULL, sign_count INTEGER NOT NULL, rp_id TEXT "
                      "NOT NULL)", 0);
    if (req == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    req->local = 1;                 /* every node makes its own, the same */
    rc = PROVEN_OK;
    if (provend_storage_call(s->storage, req) != PROVEND_ST_OK) {
        proven_errf(err, errlen, "passkeys: %s: %.150s",
                    provend_storage_status_name(req->status), req->error);
        rc = PROVEN_ERR;
    }
    provend_storage_req_free(req);
    return rc;
}


/* Fewer than PASSKEYS_PER_APP of this identity for this app. */
static int
passkey_count_ok(passkey_job_t *j)
{
    int                     rc;
    uint64_t                n;
    cbor_item_t            *rows, *row;
    provend_storage_req_t  *req;

    req = passkey_sql(PROVEND_OP_SQL_QUERY, "SELECT count(*) FROM "
                      "credentials WHERE identity = ? AND app = ?", 2);
    if (req != NULL
        && (provend_storage_param(&req->stmts[0], 0, PROVEND_SQL_BLOB,
                                  j->identity, sizeof(j->identity))
            | provend_storage_param(&req->stmts[0], 1, PROVEND_SQL_TEXT,
                                    j->app, strlen(j->app))) != PROVEN_OK)
    {
        provend_storage_req_free(req);
        req = NULL;
    }
    rc = passkey_call(j, req);
    if (rc == PROVEN_OK) {
        rows = proven_cbor_map_get(req->result, "rows");
        row = rows != NULL && cbor_isa_array(rows)
              && cbor_array_size(rows) == 1 ? cbor_array_handle(rows)[0]
                                            : NULL;
        n = 0;
        if (row == NULL || !cbor_isa_array(row)
            || cbor_array_size(row) != 1
            || proven_cbor_uint(cbor_array_handle(row)[0], &n) != PROVEN_OK
            || n >= PASSKEYS_PER_APP)
        {
            proven_errf(j->why, sizeof(j->why), "this identity has %d "
                        "passkeys for this app already", PASSKEYS_PER_APP);
            rc = PROVEN_ERR;
        }
    }
    provend_storage_req_free(req);
    return rc;
}


static void
passkey_register_work(passkey_job_t *j)
{
    int                        rc;
    provend_storage_req_t     *req;
    provend_webauthn_expect_t  e = { j->rp_id, j->origin, j->challenge,
                                     sizeof(j->challenge) };

    if (provend_webauthn_register(&e, j->client_data, j->cd_len, j->second,
                                  j->second_len, &j->cred, j->why,
                                  sizeof(j->why)) != PROVEN_OK
        || passkey_count_ok(j) != PROVEN_OK)
    {
        return;
    }
    req = passkey_sql(PROVEND_OP_SQL_EXECUTE, "INSERT INTO credentials "
                      "(id, identity, alg, key, sign_count, rp_id, app) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO "
                      "NOTHING", 7);
    rc = req == NULL ? PROVEN_ERR : PROVEN_OK;
    if (rc == PROVEN_OK) {
        provend_sql_stmt_t  *st = &req->stmts[0];

        rc = provend_storage_param(st, 0, PROVEND_SQL_BLOB, j->cred.id,
                                   j->cred.id_len)
             | provend_storage_param(st, 1, PROVEND_SQL_BLOB, j->identity,
                                     sizeof(j->identity))
             | provend_storage_param(st, 3, PROVEND_SQL_BLOB, j->cred.key,
                                     j->cred.key_len)
             | provend_storage_param(st, 5, PROVEND_SQL_TEXT, j->rp_id,
                                     strlen(j->rp_id))
             | provend_storage_param(st, 6, PROVEND_SQL_TEXT, j->app,
                                     strlen(j->app));
        provend_storage_param_int(st, 2, j->cred.alg);
        provend_storage_param_int(st, 4, j->cred.sign_count);
    }
    if (rc == PROVEN_OK && passkey_call(j, req) == PROVEN_OK) {
        /* a credential id is one authenticator's: never taken over */
        cbor_item_t  *changes = proven_cbor_map_get(req->result, "changes");
        uint64_t      n = 0;

        if (changes == NULL || proven_cbor_uint(changes, &n) != PROVEN_OK
            || n != 1)
        {
            proven_errf(j->why, sizeof(j->why), "this credential is "
                        "registered already");
        } else {
            j->ok = 1;
        }
    } else if (rc != PROVEN_OK) {
        proven_errf(j->why, sizeof(j->why), "out of memory");
    }
    provend_storage_req_free(req);
}


static void
passkey_login_work(passkey_job_t *j)
{
    int                        found;
    uint64_t                   n;
    uint32_t                   count;
    cbor_item_t               *rows, *row, **cols;
    provend_storage_req_t     *req;
    provend_webauthn_expect_t  e = { j->rp_id, j->origin, j->challenge,
                                     sizeof(j->challenge) };

    /* what needs no storage first: a stranger's answer costs no read */
    if (provend_webauthn_client_data(&e, "webauthn.get", j->client_data,
                                     j->cd_len, j->why, sizeof(j->why))
        != PROVEN_OK)
    {
        return;
    }
    req = passkey_sql(PROVEND_OP_SQL_QUERY, "SELECT identity, alg, key, "
                      "sign_count, rp_id FROM credentials WHERE id = ? AND "
                      "app = ?", 2);
    if (req != NULL
        && (provend_storage_param(&req->stmts[0], 0, PROVEND_SQL_BLOB,
                                  j->cred_id, j->cred_id_len)
            | provend_storage_param(&req->stmts[0], 1, PROVEND_SQL_TEXT,
                                    j->app, strlen(j->app))) != PROVEN_OK)
    {
        provend_storage_req_free(req);
        req = NULL;
    }
    if (passkey_call(j, req) != PROVEN_OK) {
        provend_storage_req_free(req);
        return;
    }
    rows = proven_cbor_map_get(req->result, "rows");
    row = rows != NULL && cbor_isa_array(rows) && cbor_array_size(rows) == 1
          ? cbor_array_handle(rows)[0] : NULL;
    found = 0;
    if (row != NULL && cbor_isa_array(row) && cbor_array_size(row) == 5) {
        int64_t   alg;
        uint64_t  u;

        cols = cbor_array_handle(row);
        memset(&j->cred, 0, sizeof(j->cred));
        memcpy(j->cred.id, j->cred_id, j->cred_id_len);
        j->cred.id_len = j->cred_id_len;
        alg = cbor_isa_negint(cols[1]) ? -1 - (int64_t) cbor_get_int(cols[1])
                                       : 0;
        found = cbor_isa_bytestring(cols[0])
                && cbor_bytestring_length(cols[0]) == PROVEND_IDENTITY_KEY_LEN
                && (alg == PROVEND_WEBAUTHN_ES256
                    || alg == PROVEND_WEBAUTHN_EDDSA)
                && cbor_isa_bytestring(cols[2])
                && cbor_bytestring_length(cols[2])
                   == (alg == PROVEND_WEBAUTHN_ES256 ? 65u : 32u)
                && proven_cbor_uint(cols[3], &u) == PROVEN_OK
                && u <= UINT32_MAX
                && cbor_isa_string(cols[4])
                && cbor_string_length(cols[4]) == strlen(j->rp_id)
                && memcmp(cbor_string_handle(cols[4]), j->rp_id,
                          strlen(j->rp_id)) == 0;
        if (found) {
            memcpy(j->identity, cbor_bytestring_handle(cols[0]),
                   PROVEND_IDENTITY_KEY_LEN);
            j->cred.alg = (int) alg;
            j->cred.key_len = cbor_bytestring_length(cols[2]);
            memcpy(j->cred.key, cbor_bytestring_handle(cols[2]),
                   j->cred.key_len);
            j->cred.sign_count = (uint32_t) u;
        }
    }
    provend_storage_req_free(req);
    if (!found) {
        proven_errf(j->why, sizeof(j->why), "no passkey of this id for this "
                    "app at %.150s: register it first", j->rp_id);
        return;
    }
    if (provend_webauthn_login(&e, &j->cred, j->client_data, j->cd_len,
                               j->second, j->second_len, j->sig, j->sig_len,
                               &count, j->why, sizeof(j->why)) != PROVEN_OK)
    {
        return;
    }

    /* the count moves only from the one read: another login with it (a
     * copy of the authenticator, a replay elsewhere) changes nothing */
    req = passkey_sql(PROVEND_OP_SQL_EXECUTE, "UPDATE credentials SET "
                      "sign_count = ? WHERE id = ? AND sign_count = ?", 3);
    if (req != NULL) {
        provend_storage_param_int(&req->stmts[0], 0, count);
        provend_storage_param_int(&req->stmts[0], 2, j->cred.sign_count);
        if (provend_storage_param(&req->stmts[0], 1, PROVEND_SQL_BLOB,
                                  j->cred_id, j->cred_id_len) != PROVEN_OK)
        {
            provend_storage_req_free(req);
            req = NULL;
        }
    }
    if (passkey_call(j, req) == PROVEN_OK) {
        n = 0;
        if (proven_cbor_uint(proven_cbor_map_get(req->result, "changes"), &n)
            != PROVEN_OK || n != 1)
        {
            proven_errf(j->why, sizeof(j->why), "the sign count moved "
                        "meanwhile: a login with the same count came "
                        "first");
        } else {
            j->ok = 1;
        }
    }
    provend_storage_req_free(req);
}


static void
passkey_work(uv_work_t *work)
{
    passkey_job_t  *j = work->data;

    if (j->login) {
        passkey_login_work(j);
    } else {
        passkey_register_work(j);
    }
}


static void
passkey_job_free(passkey_job_t *j)
{
    free(j->client_data);
    free(j->second);
    free(j->sig);
    OPENSSL_cleanse(j, sizeof(*j));
    free(j);
}


/* ---- answers, on the loop ---------------------------------------------------- */

static void
passkey_done(uv_work_t *work, int status)
{
    int                 ok;
    cbor_item_t        *out;
    passkey_job_t      *j = work->data;
    provend_rpc_t      *rpc = j->rpc;
    provend_session_t  *session = rpc->session;

    session->passkey_busy = 0;
    rpc->sessions->passkey_jobs--;
    out = NULL;
    if (status != 0) {
        proven_errf(j->why, sizeof(j->why), "cancelled");
        j->ok = 0;
    }
    if (j->ok && j->login && session->identity_epoch != j->epoch) {
        /* an Identify or Anonymize came after it, and stands */
        proven_errf(j->why, sizeof(j->why), "the session's identity changed "
                    "while the passkey was checked: not signed in");
        j->ok = 0;
    }
    if (j->ok && j->login) {
        /* the identity that registered it, as Identify would make it */
        if (!session->identified
            || memcmp(session->identity, j->identity,
                      PROVEND_IDENTITY_KEY_LEN) != 0)
        {
            provend_session_forget_links(session);
            memset(session->identity_proof, 0,
                   sizeof(session->identity_proof));
        }
        memcpy(session->identity, j->identity, PROVEND_IDENTITY_KEY_LEN);
        session->identified = 1;
        session->identity_epoch++;
    }
    if (j->ok) {
        out = cbor_new_definite_map(1);
        ok = out != NULL
             && proven_cbor_map_put(out, j->login ? "identity"
                                                  : "credential_id",
                    j->login ? cbor_build_bytestring(j->identity,
                                                     PROVEND_IDENTITY_KEY_LEN)
                             : cbor_build_bytestring(j->cred.id,
                                                     j->cred.id_len))
                == PROVEN_OK;
        if (!ok && out != NULL) {
            cbor_decref(&out);
        }
    }
    provend_rpc_answer(rpc->sessions, session, &rpc->msg, rpc->type,
                       j->ok && out != NULL ? "success" : "failure",
                       j->ok ? out : provend_rpc_text(j->why), rpc->id,
                       rpc->reply, rpc->ctx);
    provend_rpc_free(rpc);
    passkey_job_free(j);
}


/* A byte string argument, copied into *out. */
static int
passkey_arg(cbor_item_t *data, const char *name, size_t max, uint8_t **out,
    size_t *len)
{
    const uint8_t  *p;

    if (provend_sessions_arg_bytes(data, name, 1, max, &p, len, NULL, 0)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    *out = malloc(*len);
    if (*out == NULL) {
        return PROVEN_ERR;
    }
    memcpy(*out, p, *len);
    return PROVEN_OK;
}


int
provend_passkey_command(provend_sessions_t *s, provend_session_t *session,
    const provend_rpc_msg_t *msg, const char *type, cbor_item_t *data,
    uint64_t id, provend_ops_reply_pt reply, void *ctx, const char **result,
    cbor_item_t **out)
{
    int             rc;
    size_t          len;
    cbor_item_t    *map;
    const uint8_t  *cid;
    passkey_job_t  *j;
    char            rp_id[PROVEND_ORIGIN_MAX + 1];

    *result = "failure";
    *out = NULL;
    if (s->storage == NULL) {
        *out = provend_rpc_text("passkeys are unavailable on this node (no "
                                "storage)");
        return 0;
    }
    if (session->app[0] == '\0') {
        *out = provend_rpc_text("passkeys sign in to an app's sessions; the "
                                "management session needs Identify");
        return 0;
    }
    if (!session->has_origin || session->origin[0] == '\0'
        || passkey_rp_id(session->origin, rp_id, sizeof(rp_id))
           != PROVEN_OK)
    {
        *out = provend_rpc_text("a passkey needs the session's page origin "
                                "(a host name: its relying party)");
        return 0;
    }

    if (strcmp(type, "PasskeyChallenge") == 0) {
        if (RAND_bytes(session->passkey_challenge,
                       sizeof(session->passkey_challenge)) != 1)
        {
            *out = provend_rpc_text("no randomness");
            return 0;
        }
        session->has_passkey_challenge = 1;
        map = cbor_new_definite_map(2);
        if (map != NULL
            && (proven_cbor_map_put(map, "challenge",
                    cbor_build_bytestring(session->passkey_challenge,
                        sizeof(session->passkey_challenge))) != PROVEN_OK
                || proven_cbor_map_put(map, "rp_id",
                                       cbor_build_string(rp_id))
                   != PROVEN_OK))
        {
            cbor_decref(&map);
        }
        *result = map != NULL ? "success" : "failure";
        *out = map != NULL ? map : provend_rpc_text("out of memory");
        return 0;
    }

    /* the challenge is spent by this attempt, whatever it comes to */
    if (!session->has_passkey_challenge) {
        *out = provend_rpc_text("ask PasskeyChallenge first: each challenge "
                                "serves one ceremony");
        return 0;
    }
    if (session->passkey_busy || s->passkey_jobs >= PASSKEY_JOBS_MAX) {
        *out = provend_rpc_text(session->passkey_busy
                                ? "a passkey ceremony of this session is "
                                  "under way"
                                : "busy: another passkey ceremony is under "
                                  "way on this node; try again");
        return 0;
    }
    if (data == NULL || !cbor_isa_map(data)) {
        *out = provend_rpc_text("data must be a map");
        return 0;
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL) {
        *out = provend_rpc_text("out of memory");
        return 0;
    }
    memcpy(j->challenge, session->passkey_challenge, sizeof(j->challenge));
    session->has_passkey_challenge = 0;
    OPENSSL_cleanse(session->passkey_challenge,
                    sizeof(session->passkey_challenge));
    j->login = strcmp(type, "LoginPasskey") == 0;
    j->storage = s->storage;
    j->epoch = session->identity_epoch;
    snprintf(j->app, sizeof(j->app), "%s", session->app);
    snprintf(j->origin, sizeof(j->origin), "%s", session->origin);
    snprintf(j->rp_id, sizeof(j->rp_id), "%s", rp_id);

    rc = passkey_arg(data, "client_data_json",
                     PROVEND_WEBAUTHN_CLIENT_DATA_MAX, &j->client_data,
                     &j->cd_len);
    if (j->login) {
        rc |= passkey_arg(data, "authenticator_data",
                          PROVEND_WEBAUTHN_AUTH_DATA_MAX, &j->second,
                          &j->second_len)
              | passkey_arg(data, "signature", PROVEND_WEBAUTHN_SIG_MAX,
                            &j->sig, &j->sig_len);
        if (provend_sessions_arg_bytes(data, "credential_id", 1,
                                       PROVEND_WEBAUTHN_ID_MAX, &cid, &len,
                                       NULL, 0) == PROVEN_OK)
        {
            memcpy(j->cred_id, cid, len);
            j->cred_id_len = len;
        } else {
            rc = PROVEN_ERR;
        }
    } else {
        if (!session->identified || provend_session_unproved(session)) {
            passkey_job_free(j);
            *out = provend_rpc_text("identify first (Identify, with the "
                                    "identity key): a passkey is registered "
                                    "for an identity that proved itself");
            return 0;
        }
        memcpy(j->identity, session->identity, PROVEND_IDENTITY_KEY_LEN);
        rc |= passkey_arg(data, "attestation_object",
                          PROVEND_WEBAUTHN_AUTH_DATA_MAX + 256, &j->second,
                          &j->second_len);
    }
    if (rc != PROVEN_OK) {
        passkey_job_free(j);
        *out = provend_rpc_text(strcmp(type, "LoginPasskey") == 0
            ? "LoginPasskey takes credential_id, client_data_json, "
              "authenticator_data and signature, each bytes"
            : "RegisterPasskey takes client_data_json and "
              "attestation_object, each bytes");
        return 0;
    }

    j->rpc = provend_rpc_new(s, session, msg, type, id, reply, ctx);
    if (j->rpc == NULL) {
        passkey_job_free(j);
        *out = provend_rpc_text("out of memory");
        return 0;
    }
    j->work.data = j;
    if (uv_queue_work(s->loop, &j->work, passkey_work, passkey_done) != 0) {
        provend_rpc_free(j->rpc);
        passkey_job_free(j);
        *out = provend_rpc_text("cannot start the check");
        return 0;
    }
    session->passkey_busy = 1;
    s->passkey_jobs++;
    return 1;
}
