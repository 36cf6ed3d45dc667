/*
 * provend's server: a libuv loop serving CBOR frames on a unix socket.
 * Ops: "attest" {nonce?, user_data?, public_key?} -> document (bytes);
 * "status" -> {node_id, provider, module_id, version, uptime_ms, pcrs,
 * pending}.  Attestations are signed on the libuv thread pool.  Every
 * other op is a subsystem's (core/ops.h): "kv.*" and "sql.*" go to the
 * storage backend (storage/ops_storage.c) when there is one, "app.*" to
 * the applications (apps/), which need storage too, "session.*" and
 * "rpc.*" to sessions/, "cluster.*" to cluster/, "backup" to
 * core/backup.c.  Connections are framed
 * streams (core/stream.h).
 */

#ifndef PROVEND_SERVER_H
#define PROVEND_SERVER_H

#include <stddef.h>

#include "apps/apps.h"
#include "attest/provider.h"
#include "core/master.h"
#include "storage/storage.h"
#include "tls/tls.h"
#include "chains/chains.h"
#include "chains/radix.h"

#ifndef PROVEND_VERSION
#define PROVEND_VERSION  "0.1.0"
#endif

/* Requests read from one connection and not yet answered. */
#define PROVEND_PENDING_MAX   64

/* Seconds a stopping server waits for in-flight work and slow readers. */
#define PROVEND_STOP_GRACE    5

typedef struct {
    const char          *socket_path;
    const char          *node_id;
    provend_provider_t  *provider;      /* borrowed */
    provend_storage_t   *storage;       /* borrowed; NULL: no kv.*, sql.* */
    size_t               max_pending;   /* per connection; 0: default */

    /* applications (app.*): need storage; runtime_dir NULL: none */
    const char          *data_dir;
    const char          *runtime_dir;
    const char          *node;
    int                  expose_errors;
    unsigned             app_memory_mb;
    int                  app_sandbox;
    unsigned             app_workers;      /* most per app; 0: default */
    unsigned             app_memory_total_mb;
    unsigned             app_idle_s;       /* 0: never idle */

    /* sessions (session.*, rpc.*): 0 means the default */
    size_t               session_max;
    unsigned             session_rate;        /* 0: the default */
    unsigned             radix_network;       /* LinkRadix's; 0: 1 */
    unsigned             message_rate;
    unsigned             session_idle_s;
    unsigned             session_life_s;
    int                  any_origin;       /* app sessions from any page */

    /* a cluster (cluster.*): NULL, none */
    const char          *cluster_file;
    const uint8_t       *cluster_key_file_key;  /* enclave mode: seals
                                                   DATA/keys/cluster.sealed */
    int                  cluster_key_in_memory; /* enclave mode without
                                                   keyd: never on disk */

    /* the node's certificate: directory NULL, none (loop and data_dir
     * are the server's) */
    provend_tls_config_t  tls;
    /* Ethereum reads: rpc NULL, none (loop is the server's) */
    provend_chains_config_t  chains;
    provend_radix_config_t   radix;       /* radix.gateway NULL: none */
    const char          *nats_server;

    /* the "backup" op (core/backup.h): the master key keyd's key seals,
       and keyd, told of each backup; NULL: no backups (no keyd, or no
       storage) */
    const uint8_t       *backup_master;
    const uint8_t       *backup_sealed;     /* the bytes that opened it */
    const provend_keyd_client_t  *backup_keyd;
} provend_server_config_t;

/*
 * Binds the socket (mode 0600, a stale socket file is replaced), serves
 * until SIGTERM or SIGINT, then stops accepting, finishes in-flight
 * requests, closes and unlinks the socket.  SIGHUP reloads the provider.
 * Returns PROVEN_OK after a clean stop.
 */
int provend_server_run(const provend_server_config_t *cfg, char *err,
    size_t errlen);

#endif /* PROVEND_SERVER_H */
