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
 * Op: cluster.status {} -> {cluster, node, nats: {running, pid, client,
 * route, monitor}, members: [{name, admitted, reason?}]}
 */

#ifndef PROVEND_CLUSTER_H
#define PROVEND_CLUSTER_H

#include <stddef.h>

#include "proven.h"
#include "provider.h"
#include "storage.h"


#define PROVEND_CLUSTER_PEERS_MAX  16


typedef struct provend_cluster_s  provend_cluster_t;

typedef struct {
    void                *loop;          /* uv_loop_t * */
    provend_provider_t  *provider;      /* our own PCRs */
    const char          *data_dir;
    const char          *file;          /* the cluster file */
    const char          *nats_server;   /* NULL: "nats-server" from PATH */
} provend_cluster_config_t;

/* Reads the file, writes the NATS configuration, starts nats-server. */
provend_cluster_t *provend_cluster_open(const provend_cluster_config_t *cfg,
    char *err, size_t errlen);

int provend_cluster_handles(const char *op);
void provend_cluster_dispatch(provend_cluster_t *c,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

/* Stops nats-server and the admissions; the loop then ends. */
void provend_cluster_stop(provend_cluster_t *c);
void provend_cluster_free(provend_cluster_t *c);

#endif /* PROVEND_CLUSTER_H */
