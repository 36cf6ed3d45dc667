/*
 * What the host adds to the enclave's reach (peers.c): initialize's
 * egress additions and cluster peers, and add_peer's.
 *
 * The image fixes what may be added: --permit's patterns bound every
 * destination, and the cluster's template (--cluster-template: its name,
 * NATS ports, root, the PCRs peers must match, the egress proxy) is the
 * image's.  The host names only this node and its peers:
 *
 *   "cluster": {"node": NAME, "peers": [{"name", "attestation": URL,
 *                                        "route": "HOST:PORT"}, ...]}
 *
 * Each peer's attestation host:port and route go to --extra (so the
 * egress proxy takes them), the route to --forwards as a port of the
 * enclave's loopback (--forward-port, then the next ones) that egress
 * carries to it, since nats-server cannot use a proxy; and --cluster, the
 * file provend joins (--cluster-if), is the template with node and peers,
 * each peer's route that loopback port.  Peers are admitted by provend on
 * their attestation alone: the host can only name whom to ask.
 */

#ifndef PROVEN_AGENT_PEERS_H
#define PROVEN_AGENT_PEERS_H

#include <string.h>

#include <cbor.h>

#include "proven.h"


typedef struct {
    const char  *extra, *permit;            /* NULL: no additions */
    const char  *template, *file, *forwards; /* NULL: no cluster */
    unsigned     forward_port;
    const char  *provend;                   /* its socket, or NULL */
} agent_peers_t;

/*
 * initialize's config.allow and config.cluster (either NULL): the files
 * written (nothing when refused), or PROVEN_ERR and err.
 */
int agent_peers_initialize(const agent_peers_t *p, const cbor_item_t *allow,
    const cbor_item_t *cluster, const char **code, char *err, size_t errlen);

/*
 * add_peer {name, attestation, route}: the peer in the files, then given
 * to provend (cluster.add_peer) if it runs.  NULL with *code and err when
 * refused.
 */
cbor_item_t *agent_peers_add(const agent_peers_t *p,
    const proven_request_t *req, const char **code, char *err,
    size_t errlen);

/* text written whole to path (a new file renamed over it), 0600. */
static inline int
agent_write_file(const char *path, const char *text, char *err,
    size_t errlen)
{
    return proven_write_file(path, text, strlen(text), 0600, err, errlen);
}

#endif /* PROVEN_AGENT_PEERS_H */
