/* Internal to daemon/sessions/: shared by its files, included by no other
 * subsystem. */

#ifndef PROVEND_SESSIONS_INT_H
#define PROVEND_SESSIONS_INT_H

/*
 * provend sessions: the table, session.create, rpc.call and its commands.
 * See sessions.h.  Everything runs on the loop thread.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <uv.h>

#include "core/log.h"
#include "sessions.h"
#include "core/util.h"
#include "rola.h"
#include "chains/radix.h"


#define PROVEND_SESSION_BUCKETS  16384      /* a power of two */
#define PROVEND_RPC_TYPE_MAX     64
#define PROVEND_HANDLER_MAX      256
#define PROVEND_IDENTITY_KEY_LEN 32
#define PROVEND_GRANT_BUCKETS    256
#define PROVEND_SESSION_QUEUE_MAX 64       /* messages waiting per session */
#define PROVEND_SESSION_RUNS_MAX  32       /* Executes under way per session */
#define PROVEND_PASSKEY_CHALLENGE_LEN  32


/* A token bucket: rate a second, up to twice that at once. */
typedef struct {
    double               tokens;
    uint64_t             at_ms;
} provend_bucket_t;

int provend_bucket_take(provend_bucket_t *b, unsigned rate, uint64_t now);

typedef struct provend_session_s  provend_session_t;
typedef struct provend_grant_s    provend_grant_t;
typedef struct provend_verify_s   provend_verify_t;

struct provend_session_s {
    uint8_t              id[PROVEND_SESSION_ID_LEN];
    EVP_PKEY            *client_key;
    EVP_PKEY            *key;              /* the session's own */
    char                 app[PROVEND_NAME_MAX + 1];   /* "": management */
    char                 origin[PROVEND_ORIGIN_MAX + 1];
    int                  has_origin;
    int                  identified;
    uint8_t              identity[PROVEND_IDENTITY_KEY_LEN];
    uint8_t              identity_proof[64];  /* its Identify signature */
    uint8_t              eth_links[PROVEND_ETH_LINKS_MAX][20];
    size_t               eth_nlinks;       /* LinkEthereum, this identity */
    uint8_t              passkey_challenge[PROVEND_PASSKEY_CHALLENGE_LEN];
    int                  has_passkey_challenge;   /* single-use */
    int                  passkey_busy;     /* a ceremony on the pool */
    uint64_t             identity_epoch;   /* each change of identity */
    uint8_t              radix_challenge[PROVEND_ROLA_CHALLENGE_LEN];
    int                  has_radix_challenge;      /* single-use */
    char                 radix_links[PROVEND_RADIX_LINKS_MAX]
                                    [PROVEND_RADIX_LINK_SIZE];
    size_t               radix_nlinks;     /* LinkRadix, this identity */
    int                  radix_busy;       /* owner keys read on the pool */
    uint64_t             seq;              /* the last accepted; 0: none */
    uint64_t             created_ms;
    uint64_t             used_ms;
    provend_bucket_t     messages;         /* --message-rate */
    unsigned             refs;             /* the table's, calls' */
    int                  verifying;        /* a message on the pool */
    provend_verify_t    *queue;            /* the next ones, in order */
    provend_verify_t    *queue_tail;
    unsigned             queued;
    unsigned             running;          /* Execute calls under way */
    int                  listed;           /* in the table */
    provend_session_t   *chain;            /* same bucket */
    provend_session_t   *older;            /* by last use */
    provend_session_t   *newer;
};

struct provend_sessions_s {
    uv_loop_t                   *loop;
    provend_apps_t              *apps;
    void                        *server;
    provend_sessions_attest_pt   attest;
    provend_storage_t           *storage;      /* passkeys; NULL: none */
    unsigned                     passkey_jobs; /* on the pool now */
    unsigned                     radix_network;  /* ROLA's accounts */
    provend_radix_t             *radix;        /* a Gateway, or NULL */
    unsigned                     radix_jobs;   /* on the pool now */
    size_t                       max;
    size_t                       count;
    uint64_t                     idle_ms;
    uint64_t                     life_ms;
    unsigned                     rate;
    unsigned                     message_rate;
    provend_bucket_t             creations;    /* --session-rate */
    int                          any_origin;

    /*
     * In a cluster: the first 4 bytes of every session id made here, and
     * how a message for a session of another node reaches that node.
     */
    uint32_t                     tag;          /* 0: alone */
    provend_sessions_forward_pt  forward;
    void                        *forward_data;

    uv_timer_t                   sweep;
    provend_session_t           *oldest;
    provend_session_t           *newest;
    provend_session_t           *buckets[PROVEND_SESSION_BUCKETS];
    provend_grant_t             *grants[PROVEND_GRANT_BUCKETS];
};

/* A session.create waiting for its document. */
typedef struct {
    provend_sessions_t    *sessions;
    provend_session_t     *session;
    uint64_t               id;
    provend_ops_reply_pt   reply;
    void                  *ctx;
} provend_creation_t;


/*
 * What lets an app's worker use an identity's personal storage: made for
 * one Execute from an identified session, gone when it answers.
 */
typedef struct {
    char                 chain[PROVEND_CHAIN_MAX + 1];
    char                 contract[PROVEND_CONTRACT_MAX + 1];
    char                 token[PROVEND_TOKEN_MAX + 1];
} provend_nft_permit_t;

struct provend_grant_s {
    char                 token[33];          /* 16 random bytes, hex */
    char                 app[PROVEND_NAME_MAX + 1];
    char                 identity[2 * PROVEND_IDENTITY_KEY_LEN + 1];
    uint8_t              eth_links[PROVEND_ETH_LINKS_MAX][20];
    size_t               eth_nlinks;
    char                 radix_links[PROVEND_RADIX_LINKS_MAX]
                                    [PROVEND_RADIX_LINK_SIZE];
    size_t               radix_nlinks;
    provend_nft_permit_t permits[PROVEND_NFT_PERMITS_MAX];
    size_t               npermits;
    provend_grant_t     *next;
};

/* What an answer is bound to: its request's seq and the hash of its bytes. */
typedef struct {
    uint64_t               seq;
    uint8_t                hash[32];
} provend_rpc_msg_t;

/* A command answered later (Execute). */
typedef struct {
    provend_sessions_t    *sessions;
    provend_session_t     *session;
    provend_rpc_msg_t      msg;            /* what the answer binds */
    char                   type[PROVEND_RPC_TYPE_MAX + 1];
    uint64_t               started;        /* uv_hrtime() */
    uint64_t               id;
    provend_ops_reply_pt   reply;
    void                  *ctx;
    provend_grant_t       *grant;          /* Execute as an identity */
    int                    running;        /* counted in session->running */
} provend_rpc_t;


size_t provend_session_bucket(const uint8_t *id);

void provend_session_unref(provend_session_t *session);

void provend_session_touch(provend_sessions_t *s, provend_session_t *session);

void provend_session_drop(provend_sessions_t *s, provend_session_t *session);

int provend_session_expired(provend_sessions_t *s, provend_session_t *session,
    uint64_t now);

provend_session_t *provend_session_find(provend_sessions_t *s,
    const uint8_t *id);

int provend_sessions_arg_text(const cbor_item_t *map, const char *name,
    char *out, size_t max, int *present, char *err, size_t errlen);

int provend_sessions_arg_bytes(const cbor_item_t *map, const char *name,
    size_t min, size_t max, const uint8_t **out, size_t *len, char *err,
    size_t errlen);

/* commands.c, for the commands of other files (passkeys.c). */
provend_rpc_t *provend_rpc_new(provend_sessions_t *s,
    provend_session_t *session, const provend_rpc_msg_t *msg,
    const char *type, uint64_t id, provend_ops_reply_pt reply, void *ctx);
void provend_rpc_free(provend_rpc_t *rpc);
/* Answers the command signed, {"result", "data"}; takes data. */
void provend_rpc_answer(provend_sessions_t *s, provend_session_t *session,
    const provend_rpc_msg_t *msg, const char *type, const char *result,
    cbor_item_t *data, uint64_t id, provend_ops_reply_pt reply, void *ctx);
cbor_item_t *provend_rpc_text(const char *text);
/* Identified without an Identify signature (a passkey's sign-in). */
int provend_session_unproved(const provend_session_t *session);
/* After an identity change: what was linked to the last one forgotten. */
void provend_session_forget_links(provend_session_t *session);

/* session.links: an app's call's identity and links (commands.c). */
void provend_sessions_op_links(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

/* ["account_...", ...]: the Radix accounts the session linked. */
cbor_item_t *provend_rpc_radix_links(const provend_session_t *session);

/*
 * radix_link.c: RadixChallenge, LinkRadix.  1 when the answer comes
 * later, else 0 with *result and *out set.
 */
int provend_radix_command(provend_sessions_t *s, provend_session_t *session,
    const provend_rpc_msg_t *msg, const char *type, cbor_item_t *data,
    uint64_t id, provend_ops_reply_pt reply, void *ctx, const char **result,
    cbor_item_t **out);

/*
 * passkeys.c: PasskeyChallenge, RegisterPasskey, LoginPasskey.  1 when
 * the answer comes later, else 0 with *result and *out set.
 */
int provend_passkeys_init(provend_sessions_t *s, char *err, size_t errlen);
int provend_passkey_command(provend_sessions_t *s, provend_session_t *session,
    const provend_rpc_msg_t *msg, const char *type, cbor_item_t *data,
    uint64_t id, provend_ops_reply_pt reply, void *ctx, const char **result,
    cbor_item_t **out);

void provend_sessions_op_check(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

void provend_sessions_op_rpc(provend_sessions_t *s,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

#endif
