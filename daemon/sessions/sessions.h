/*
 * provend sessions: attested sessions and the signed RPC spoken in them.
 *
 * A client opens a session with its nonce and its Ed25519 key; provend
 * makes a fresh Ed25519 key for the session and a 16-byte id, and answers
 * an attestation document whose nonce is the client's, whose user_data is
 * the id and whose public_key is the session key.  Every later message is
 * a COSE_Sign1 (lib/proven_cose.c) over the id: the client's are checked
 * against the client key and a strictly increasing seq, the answers are
 * signed with the session key.  Keys and state never leave provend.
 *
 * Ops (frames on provend's socket, from nginx):
 *   session.create {nonce, public_key, app?, origin?}
 *                  -> {session: 16 bytes, document: bytes}
 *   session.check  {session, app?} -> {}  (the session lives)
 *   rpc.call       {session: 16 bytes, app?, message: bytes}
 *                  -> {message: bytes}, the signed answer
 * Error codes (nginx maps them to statuses): bad_request, bad_message
 * (400), unknown_session, bad_signature (401), forbidden (403), replayed
 * (409), busy (503), attestation_failed (500).
 *
 * Commands (the payload's "type"): WhoAmI, Identify, Anonymize, Execute,
 * ExecuteHash; the answer's data is {result, data}.
 *
 * Sessions live in memory, at most max of them; one unused for idle_s or
 * older than life_s is gone (unknown_session).  In a cluster each is also
 * written to the replicated storage, so that any node can serve it; each
 * node keeps its own last seq and last use.
 */

#ifndef PROVEND_SESSIONS_H
#define PROVEND_SESSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "apps/apps.h"
#include "proven.h"
#include "attest/provider.h"
#include "storage/storage.h"


#define PROVEND_SESSION_ID_LEN   16
#define PROVEND_ORIGIN_MAX       512
#define PROVEND_SESSIONS_MAX     100000
#define PROVEND_SESSION_IDLE_S   1800
#define PROVEND_SESSION_LIFE_S   86400


typedef struct provend_sessions_s  provend_sessions_t;

/* Starts an attestation binding these fields; done runs once, later. */
typedef int (*provend_sessions_attest_pt)(void *server,
    const proven_buf_t *nonce, const proven_buf_t *user_data,
    const proven_buf_t *public_key, provend_attest_done_pt done, void *data,
    char *err, size_t errlen);

typedef struct {
    void                        *loop;       /* uv_loop_t * */
    provend_apps_t              *apps;       /* NULL: no Execute */
    void                        *server;
    provend_sessions_attest_pt   attest;
    size_t                       max;        /* 0: PROVEND_SESSIONS_MAX */
    unsigned                     idle_s;     /* 0: PROVEND_SESSION_IDLE_S */
    unsigned                     life_s;     /* 0: PROVEND_SESSION_LIFE_S */
    int                          any_origin; /* local mode: no list */
    /*
     * In a cluster, the replicated storage: sessions are shared with the
     * other nodes (see sessions.c); NULL: they live in this node alone.
     */
    provend_storage_t           *storage;
} provend_sessions_config_t;


provend_sessions_t *provend_sessions_new(const provend_sessions_config_t *cfg,
    char *err, size_t errlen);

/* session.create, session.check, rpc.call */
extern const provend_op_t  provend_sessions_ops[];

/* Answers req through reply exactly once, now or later on the loop. */
void provend_sessions_dispatch(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

/*
 * Whether token is the grant of an Execute under way for app as identity
 * (hex of the identity key): its worker may then use that identity's
 * personal storage.
 */
int provend_sessions_grant_ok(provend_sessions_t *s, const char *token,
    const char *app, const char *identity);

/* Sessions open now. */
size_t provend_sessions_count(provend_sessions_t *s);

/* Stops the sweep timer; calls under way still answer. */
void provend_sessions_stop(provend_sessions_t *s);

/* After the loop has ended. */
void provend_sessions_free(provend_sessions_t *s);

#endif /* PROVEND_SESSIONS_H */
