/*
 * provend sessions: attested sessions and the signed RPC spoken in them
 * (protocol v2, README "Sessions and signed RPC").
 *
 * A client opens a session with its nonce and its Ed25519 key; provend
 * makes a fresh Ed25519 key for the session and a 16-byte id, and answers
 * an attestation document whose nonce is the client's, whose public_key is
 * the session key and whose user_data binds the id and the client's key
 * (proven_session_user_data).  Every later message is a COSE_Sign1
 * (lib/proven_cose.c) with its seq in the signed header: the client's are
 * checked against the client key and a strictly increasing seq, the
 * answers signed with the session key over the id and the hash of the
 * request they answer.  Keys and state never leave provend.
 *
 * Ops (frames on provend's socket, from nginx):
 *   session.create {nonce, public_key, app?, origin?}
 *                  -> {session: 16 bytes, document: bytes}
 *   session.check  {session, app?} -> {}  (the session lives)
 *   rpc.call       {session: 16 bytes, app?, message: bytes}
 *                  -> {message: bytes}, the signed answer
 * Error codes (nginx maps them to statuses): bad_request, bad_message
 * (400), unknown_session, bad_signature (401), forbidden (403), replayed
 * (409), rate_limited (429: past --session-rate or --message-rate, token
 * buckets of provend's own, whatever nginx lets through), busy (503),
 * attestation_failed (500).
 *
 * Commands (the payload's "type"): WhoAmI, Identify, Anonymize, Execute,
 * ExecuteHash; on management sessions only, the registry's
 * (CreateApplication, AddAllowedOrigin, ListApplicationsByOwner, Deploy).
 * The answer's data is {result, data}.
 *
 * Sessions live in memory, at most max of them; one unused for idle_s or
 * older than life_s is gone (unknown_session).  In a cluster a session
 * lives on the node that made it, alone: its id starts with that node's
 * tag, and every other node forwards its messages there (cluster/
 * forward.c), so that its seq is checked in one place.  When that node is
 * gone, so is the session.
 */

#ifndef PROVEND_SESSIONS_H
#define PROVEND_SESSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "apps/apps.h"
#include "proven.h"
#include "attest/provider.h"


#define PROVEND_SESSION_ID_LEN   PROVEN_SESSION_ID_LEN
#define PROVEND_ORIGIN_MAX       255      /* it is signed with a u8 length */
#define PROVEND_SESSIONS_MAX     100000
#define PROVEND_SESSION_IDLE_S   1800
#define PROVEND_SESSION_LIFE_S   86400
#define PROVEND_SESSION_RATE     500      /* new ones a second, node-wide */
#define PROVEND_MESSAGE_RATE     200      /* a second, per session */


typedef struct provend_sessions_s  provend_sessions_t;

/* Starts an attestation binding these fields; done runs once, later. */
typedef int (*provend_sessions_attest_pt)(void *server,
    const proven_buf_t *nonce, const proven_buf_t *user_data,
    const proven_buf_t *public_key, provend_attest_done_pt done, void *data,
    char *err, size_t errlen);

/*
 * Hands req (rpc.call or session.check) to the node whose sessions carry
 * tag; reply gets that node's answer frame, or an error, once.
 */
typedef void (*provend_sessions_forward_pt)(void *data, uint32_t tag,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

typedef struct {
    void                        *loop;       /* uv_loop_t * */
    provend_apps_t              *apps;       /* NULL: no Execute */
    void                        *server;
    provend_sessions_attest_pt   attest;
    size_t                       max;        /* 0: PROVEND_SESSIONS_MAX */
    unsigned                     idle_s;     /* 0: PROVEND_SESSION_IDLE_S */
    unsigned                     life_s;     /* 0: PROVEND_SESSION_LIFE_S */
    unsigned                     rate;       /* 0: PROVEND_SESSION_RATE */
    unsigned                     message_rate;   /* 0: the default */
    int                          any_origin; /* local mode: no list */
    int                          clustered;  /* ids carry this node's tag */
    provend_storage_t           *storage;    /* passkeys; NULL: none */
    unsigned                     radix_network;  /* 0: 1, mainnet */
} provend_sessions_config_t;


provend_sessions_t *provend_sessions_new(const provend_sessions_config_t *cfg,
    char *err, size_t errlen);

/* session.create, session.check, rpc.call */
extern const provend_op_t  provend_sessions_ops[];

/* Answers req through reply exactly once, now or later on the loop. */
void provend_sessions_dispatch(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

/* In a cluster: this node's tag, and how to reach the others'. */
uint32_t provend_sessions_tag(provend_sessions_t *s);
void provend_sessions_set_forward(provend_sessions_t *s,
    provend_sessions_forward_pt forward, void *data);

/* A Radix Gateway: LinkRadix reads accounts' owner keys there. */
typedef struct provend_radix_s  provend_radix_t;
void provend_sessions_set_radix(provend_sessions_t *s, provend_radix_t *r);

/*
 * A request another node forwarded (rpc.call, session.check): served like
 * one from nginx, for a session of this node only, never forwarded again.
 */
void provend_sessions_serve_forwarded(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

/*
 * Whether token is the grant of an Execute under way for app as identity
 * (hex of the identity key): its worker may then use that identity's
 * personal storage.
 */
int provend_sessions_grant_ok(provend_sessions_t *s, const char *token,
    const char *app, const char *identity);

/*
 * NFT scopes (chains/nft.c).  The Ethereum addresses the session of an
 * Execute under way for app linked (LinkEthereum), as they were when the
 * call began: how many (0: none, or token is no grant of app's).
 */
#define PROVEND_ETH_LINKS_MAX     4
#define PROVEND_NFT_PERMITS_MAX   16

size_t provend_sessions_grant_eth(provend_sessions_t *s, const char *token,
    const char *app, uint8_t addresses[PROVEND_ETH_LINKS_MAX][20]);

/* The Radix accounts the session of a call linked (LinkRadix), as the
 * call began: how many (0: none, or token is no grant of app's). */
#define PROVEND_RADIX_LINKS_MAX   4
#define PROVEND_RADIX_LINK_SIZE   91        /* an address and its NUL */

size_t provend_sessions_grant_radix(provend_sessions_t *s, const char *token,
    const char *app, char accounts[PROVEND_RADIX_LINKS_MAX]
                                   [PROVEND_RADIX_LINK_SIZE]);

/*
 * An NFT whose owner was proved to be one of those addresses: its storage
 * (chain, contract, token as a storage scope names them) is the call's
 * until it answers.  PROVEN_ERR when the grant is gone or holds
 * PROVEND_NFT_PERMITS_MAX already.
 */
int provend_sessions_grant_permit(provend_sessions_t *s, const char *token,
    const char *app, const char *chain, const char *contract,
    const char *token_id);

/* Whether that permit is held by the grant token of app's call. */
int provend_sessions_grant_nft_ok(provend_sessions_t *s, const char *token,
    const char *app, const char *chain, const char *contract,
    const char *token_id);

/* Sessions open now. */
size_t provend_sessions_count(provend_sessions_t *s);

/* Stops the sweep timer; calls under way still answer. */
void provend_sessions_stop(provend_sessions_t *s);

/* After the loop has ended. */
void provend_sessions_free(provend_sessions_t *s);

#endif /* PROVEND_SESSIONS_H */
