/*
 * provend in a cluster: the node's NATS server and who may join it.
 *
 * A cluster file (JSON) names this node and its peers:
 *
 *   {"cluster": "proven", "node": "n1",
 *    "nats": {"client": 9084, "route": 9085, "monitor": 9086},
 *    "tls": {"cert": "DATA/tls/cert.pem", "key": "DATA/tls/key.pem"},
 *    "root": "path/to/root.pem",          peers' documents chain to it
 *    "match_pcrs": [1, 2],                peers must measure as we do
 *    "peers": [{"name": "n2", "attestation": "https://127.0.0.1:9091/attestation",
 *               "route": "127.0.0.1:9095"}, ...]}
 *
 * provend runs nats-server as its child (JetStream on, client and
 * monitoring ports on loopback, restarted when it exits) from a
 * configuration it writes under DATA/nats.  A peer is admitted only after
 * provend has asked it for an attestation with a fresh nonce, over HTTPS,
 * and checked the document: the chain to root, the nonce, the PCRs listed
 * in match_pcrs (at least one) equal to this node's own, user_data the
 * mark of a TLS-bound endpoint (PROVEN_TLS_BINDING_MARK: no caller can
 * have chosen its key) and public_key equal to the key of the TLS
 * certificate the peer answered with.  Only
 * then is its route added and its certificate trusted for routes (mutual
 * TLS: an unadmitted server cannot join), and nats-server reloaded.  A
 * peer that fails is logged and asked again later, never admitted.  One
 * check runs at a time (they share libuv's thread pool).  nats-server
 * writes DATA/nats/nats.pid: one left running by a provend that was killed
 * is stopped at the next start.
 *
 * Once the cluster key is here, the replicated storage (storage_cluster.c,
 * below) starts: every write an entry of the stream PROVEN_LOG, applied by
 * every node in order to its own copy.
 *
 * Op: cluster.status {} -> {cluster, node, key: the cluster key's
 * fingerprint or null, storage: {following, ready, applied, at_start,
 * unreadable, writes_waiting}, nats: {running, pid, client, route,
 * monitor}, members: [{name, admitted, reason?, pcrs?: {index: hex}}]}
 */

#ifndef PROVEND_CLUSTER_H
#define PROVEND_CLUSTER_H

#include <stddef.h>

#include <nats/nats.h>

#include "core/keys.h"
#include "core/ops.h"
#include "proven.h"
#include "attest/provider.h"
#include "storage/storage.h"


#define PROVEND_CLUSTER_PEERS_MAX  16


typedef struct provend_cluster_s  provend_cluster_t;
typedef struct provend_ckey_s     provend_ckey_t;
typedef struct provend_forward_s  provend_forward_t;

/* Serves a request another node forwarded; reply answers it once. */
typedef void (*provend_forward_serve_pt)(void *data,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

/* Starts an attestation binding these fields (server.c's). */
typedef int (*provend_cluster_attest_pt)(void *server,
    const proven_buf_t *nonce, const proven_buf_t *user_data,
    const proven_buf_t *public_key, provend_attest_done_pt done, void *data,
    char *err, size_t errlen);

/*
 * Whether a measurement, keccak256(PCR0 || PCR1 || PCR2) of a peer's
 * document, may join (the governance contract's word): 1, or 0 with why.
 * Any thread.
 */
typedef int (*provend_measure_allowed_pt)(void *data, const uint8_t hash[32],
    char *why, size_t whylen);

/* That hash from a document: PROVEN_ERR when it lacks PCR 0, 1 or 2 of
 * 48 bytes. */
int provend_cluster_measurement(const proven_attestation_doc_t *doc,
    uint8_t hash[32]);

typedef struct {
    void                *loop;          /* uv_loop_t * */
    provend_provider_t  *provider;      /* our own PCRs */
    /* NULL: peers must have our own PCRs; else any measurement it allows
     * (and an admitted peer whose measurement it drops is dropped) */
    provend_measure_allowed_pt  measure_allowed;
    void                *measure_data;
    const char          *data_dir;
    const char          *file;          /* the cluster file */
    const char          *nats_server;   /* NULL: "nats-server" from PATH */
    void                *server;
    provend_cluster_attest_pt  attest;
    provend_storage_t   *storage;       /* the cluster backend, or NULL */
    const uint8_t       *key_file_key;  /* enclave mode: the cluster key is
                                           sealed with it on disk; NULL */
    int                  key_in_memory; /* enclave mode without keyd: the
                                           key is never on disk */
    /* sessions: this node's tag, and what serves requests for them */
    uint32_t             session_tag;
    provend_forward_serve_pt   serve_session;
    void                *serve_session_data;
} provend_cluster_config_t;

/* The set measure_allowed answers from has changed: peers checked again
 * (on the loop). */
void provend_cluster_measurements_changed(void *cluster);

/* Reads the file, writes the NATS configuration, starts nats-server. */
provend_cluster_t *provend_cluster_open(const provend_cluster_config_t *cfg,
    char *err, size_t errlen);

/*
 * Hands req to the node whose sessions carry tag (forward.c); data: the
 * cluster.  A provend_sessions_forward_pt.
 */
void provend_cluster_forward(void *data, uint32_t tag,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

/* The token provend's NATS connections give their own nats-server. */
const char *provend_cluster_nats_token(void);

/*
 * Options for a connection of provend's to its own nats-server (the
 * client port on loopback, the token, never a server another node
 * advertised, reconnecting for good every reconnect_ms); NULL out of
 * memory.  The caller adds its own, connects, destroys them.
 */
natsOptions *provend_cluster_nats_options(unsigned client_port,
    int reconnect_ms);

/* cluster.status */
extern const provend_op_t  provend_cluster_ops[];

/* Stops nats-server and the admissions; the loop then ends. */
void provend_cluster_stop(provend_cluster_t *c);
void provend_cluster_free(provend_cluster_t *c);


/*
 * The cluster key (cluster_key.c): the node named first in the cluster
 * file makes it; the others get it over NATS from a holder, each side
 * checking the other's attestation (chain, PCRs, the exchange mark) and
 * the key sealed to their X25519 exchange keys.  DATA/keys/cluster.key;
 * with file_key (enclave mode) DATA/keys/cluster.sealed, sealed with it,
 * and a cluster.key in clear is refused; in_memory (enclave mode without
 * keyd): in memory alone, asked of the peers again at each start.
 */
/* Documents of cluster-key requests and answers: checked by measure
 * (NULL: our own PCRs must match). */
void provend_ckey_set_measure(provend_ckey_t *ck,
    provend_measure_allowed_pt measure, void *data);

provend_ckey_t *provend_ckey_open(void *loop, const char *data_dir,
    int seed, X509 *root, unsigned client_port, void *server,
    provend_cluster_attest_pt attest, const uint8_t *file_key,
    int in_memory, char *err, size_t errlen);
/*
 * Each admission tick: our PCRs peers must match; asks when it may (a
 * peer admitted).  The seed makes the key after asking in vain a few
 * times (a key may exist already: its DATA may be new) while the
 * cluster's JetStream says its log has never held an entry (entries: a
 * key exists, its holders out of reach), or at once when it has no
 * peers at all.
 */
void provend_ckey_tick(provend_ckey_t *ck, const proven_pcr_t *pcrs,
    size_t npcrs, int can_ask, int alone);
/* 1 and the first 8 bytes of SHA-256(key) in hex when the key is here. */
int provend_ckey_fingerprint(provend_ckey_t *ck, char hex[17]);
/* Why the key is not here yet, for an operator (loop thread). */
const char *provend_ckey_waiting(provend_ckey_t *ck);
void provend_ckey_stop(provend_ckey_t *ck);
void provend_ckey_free(provend_ckey_t *ck);

/* 1 and the key when this node holds it. */
int provend_ckey_get(provend_ckey_t *ck, uint8_t key[PROVEND_KEY_LEN]);


/*
 * Session forwarding (forward.c): serves requests for sessions of tag
 * with serve, and sends others' to their node.  Returns NULL only out of
 * memory; when it cannot work, err says why and its calls answer busy.
 */
provend_forward_t *provend_forward_open(void *loop, unsigned client_port,
    uint32_t tag, provend_forward_serve_pt serve, void *serve_data,
    char *err, size_t errlen);
void provend_forward_call(void *fw, uint32_t tag,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);
void provend_forward_stop(provend_forward_t *fw);
void provend_forward_free(provend_forward_t *fw);


/*
 * The replicated storage backend (storage_cluster.c): writes go through a
 * log on JetStream, sealed with a key derived from the cluster key, and
 * every node applies the log in order to local, its own embedded backend
 * (opened "deterministic", its data made again from the log at each
 * start).  Reads are local's, once this node has caught up.  Until start,
 * writes answer storage_error.  Taking local: close closes it.
 */
provend_storage_t *provend_storage_cluster_open(provend_storage_t *local,
    char *err, size_t errlen);

/*
 * Stops taking writes and closes the connection to nats-server (before it
 * is stopped); reads of the copy go on until close.
 */
void provend_storage_cluster_disconnect(provend_storage_t *st);

/*
 * From the loop, every second or so: requests held while the node has
 * no cluster key yet are told once past their wait.
 */
void provend_storage_cluster_tick(provend_storage_t *st);

/* Once the cluster key is here; later calls do nothing. */
int provend_storage_cluster_start(provend_storage_t *st,
    const uint8_t cluster_key[PROVEND_KEY_LEN], unsigned client_port,
    unsigned replicas);

/*
 * fn(data, applied) after each entry applied to the node's own database
 * db (scope PROVEND_OWN_SCOPE), on a storage thread, applied borrowed.
 * fn NULL: the hook for (db, data) removed, and one running has
 * returned.  PROVEN_ERR when all PROVEND_HOOKS_MAX slots are taken.
 */
typedef void (*provend_storage_applied_pt)(void *data,
    const provend_storage_req_t *applied);

int provend_storage_cluster_follow(provend_storage_t *st, const char *db,
    provend_storage_applied_pt fn, void *data);

/* {following, ready, applied, at_start, unreadable, writes_waiting} */
cbor_item_t *provend_storage_cluster_status(provend_storage_t *st);

/*
 * 1 when this node is the first in the cluster to claim what (a schedule's
 * tick): JetStream keeps one message per id for 15 minutes.  Blocks
 * for a round trip; 0 when another node has it or the cluster is away.
 */
int provend_storage_cluster_claim(provend_storage_t *st, const char *what);

/*
 * The log's last entry as JetStream has it now (a round trip; 0 when the
 * cluster is away): a read with that "after" sees every write answered
 * before the call, on any node.
 */
uint64_t provend_storage_cluster_last(provend_storage_t *st);

#endif /* PROVEND_CLUSTER_H */
