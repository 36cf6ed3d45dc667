/*
 * provend in a cluster: nats-server as a child, peers admitted by their
 * attestation.  See cluster.h.  Everything runs on the loop thread but the
 * admission checks, which fetch over HTTPS and so run on the thread pool.
 */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <uv.h>

#include "cluster.h"
#include "chains/eth.h"
#include "fetch/proven_fetch.h"
#include "core/log.h"
#include "core/util.h"


#define PROVEND_NAME_LEN         63
#define PROVEND_ADMIT_EVERY_MS   2000
#define PROVEND_ADMIT_RETRY_MS   5000
#define PROVEND_ADMIT_TIMEOUT_S  4        /* on the shared thread pool */
#define PROVEND_RECHECK_MS       15000    /* an admitted peer attested again */
#define PROVEND_RECHECK_MISSES   3        /* unanswered, before it is dropped */
#define PROVEND_DOC_MAX          (64 * 1024)
#define PROVEND_NATS_RESTART_MS  500
#define PROVEND_NATS_RESTART_MAX 30000
#define PROVEND_NATS_SETTLE_MS   1500     /* before it takes a SIGHUP */
#define PROVEND_NATS_STOP_MS     10000    /* SIGTERM, then SIGKILL */


typedef struct {
    char          name[PROVEND_NAME_LEN + 1];
    char          url[512];
    char          route[128];            /* host:port of its NATS routes */
    int           admitted;
    int           checking;
    uint64_t      next_try;               /* uv_now */
    char          reason[PROVEN_ERR_LEN];
    char         *cert_pem;              /* its TLS certificate, admitted */
    uint8_t       spki[SHA256_DIGEST_LENGTH];  /* its TLS key's, admitted */
    size_t        npcrs;                 /* admitted: what it measured */
    proven_pcr_t  pcrs[PROVEN_ATT_PCRS_MAX];
    int           has_measurement;       /* admitted by governance: */
    uint8_t       measurement[32];       /* its keccak(PCR0 || 1 || 2) */
    uint64_t      recheck_at;            /* admitted: attested again then */
    unsigned      recheck_misses;        /* in a row, unanswered */
} provend_peer_t;

struct provend_cluster_s {
    uv_loop_t           *loop;
    provend_provider_t  *provider;
    char                 cluster[PROVEND_NAME_LEN + 1];
    char                 node[PROVEND_NAME_LEN + 1];
    unsigned             client_port;
    unsigned             route_port;
    unsigned             monitor_port;
    char                 nats_dir[4096];
    char                 nats_bin[4096];
    char                 tls_cert[4096];
    char                 tls_key[4096];
    X509                *root;
    uint8_t              own_spki[SHA256_DIGEST_LENGTH];   /* our TLS key's */
    char                 proxy[256];    /* admissions' HTTP proxy, or "" */
    int                  match[PROVEN_ATT_PCRS_MAX];
    size_t               nmatch;
    provend_measure_allowed_pt  measure_allowed;  /* or NULL: match */
    void                *measure_data;
    provend_peer_t       peers[PROVEND_CLUSTER_PEERS_MAX];
    size_t               npeers;
    provend_ckey_t      *ckey;
    provend_forward_t   *forward;       /* sessions of other nodes */
    provend_storage_t   *storage;       /* the cluster backend, or NULL */

    uv_process_t         nats;
    int                  nats_running;
    int                  nats_pid;
    unsigned             backoff_ms;
    uv_timer_t           restart;
    uv_timer_t           admit;
    uv_timer_t           reload;        /* a SIGHUP put off */
    uint64_t             nats_since;    /* uv_now when started */
    unsigned             handles;
    int                  alone;         /* started with no peers */
    int                  stopping;
};

/* One admission check, on the thread pool. */
typedef struct {
    uv_work_t            work;
    provend_cluster_t   *c;
    provend_peer_t      *peer;
    char                 url[700];
    char                 proxy[256];
    uint8_t              nonce[32];
    X509                *root;          /* a reference of its own */
    size_t               npcrs;
    proven_pcr_t         pcrs[PROVEN_ATT_PCRS_MAX];   /* ours, to match */
    provend_measure_allowed_pt  measure_allowed;      /* or this */
    void                *measure_data;
    uint8_t              measurement[32];
    int                  recheck;       /* of a peer admitted already */
    int                  answered;      /* it served a document */
    int                  ok;
    char                 reason[PROVEN_ERR_LEN];
    char                *cert_pem;
    uint8_t              spki[SHA256_DIGEST_LENGTH];
} provend_admission_t;


/* ---- the NATS configuration ----------------------------------------------- */

/*
 * What provend's own connections show nats-server's client port: a
 * token made at each start, given to nats-server in its environment
 * (nats.conf names the variable), never written to a file.  The port
 * is on loopback and only this node's provend uses it; routes between
 * nodes have their own mutual TLS.  (The cluster key cannot be what it
 * derives from: the key itself is fetched over this port.)
 */
static char  provend_nats_token[2 * 32 + 1];


const char *
provend_cluster_nats_token(void)
{
    return provend_nats_token;
}


natsOptions *
provend_cluster_nats_options(unsigned client_port, int reconnect_ms)
{
    char          url[64];
    natsOptions  *opts;

    if (natsOptions_Create(&opts) != NATS_OK) {
        return NULL;
    }
    snprintf(url, sizeof(url), "nats://127.0.0.1:%u", client_port);
    if (natsOptions_SetURL(opts, url) != NATS_OK
        || natsOptions_SetToken(opts, provend_nats_token) != NATS_OK
        /* its own server only: never one another node advertised */
        || natsOptions_SetIgnoreDiscoveredServers(opts, true) != NATS_OK
        || natsOptions_SetMaxReconnect(opts, -1) != NATS_OK
        || natsOptions_SetReconnectWait(opts, reconnect_ms) != NATS_OK)
    {
        natsOptions_Destroy(opts);
        return NULL;
    }
    return opts;
}

/*
 * nats.conf and the certificates routes trust: the admitted peers' (and
 * our own, so that the file is never empty).
 */
static int
provend_cluster_write_conf(provend_cluster_t *c, char *err, size_t errlen)
{
    int     rc;
    char    path[4200], *text, *p, *own;
    size_t  i, n, cap, admitted;

    /* trusted.pem: our certificate, then each admitted peer's */
    if (proven_read_file(c->tls_cert, 65536, (uint8_t **) &own, &n, err,
                         errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    cap = strlen(own) + 1;
    for (i = 0; i < c->npeers; i++) {
        if (c->peers[i].admitted) {
            cap += strlen(c->peers[i].cert_pem) + 1;
        }
    }
    text = malloc(cap + 1);
    if (text == NULL) {
        free(own);
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    p = text;
    p += sprintf(p, "%s\n", own);
    for (i = 0; i < c->npeers; i++) {
        if (c->peers[i].admitted) {
            p += sprintf(p, "%s\n", c->peers[i].cert_pem);
        }
    }
    free(own);
    snprintf(path, sizeof(path), "%s/trusted.pem", c->nats_dir);
    rc = proven_write_file(path, text, strlen(text), 0600, err, errlen);
    free(text);
    if (rc != PROVEN_OK) {
        return rc;
    }

    cap = 1024 + 3 * strlen(c->nats_dir) + strlen(c->tls_cert)
          + strlen(c->tls_key) + 2 * sizeof(c->node) + sizeof(c->cluster)
          + c->npeers * (sizeof(c->peers[0].route) + 32);
    text = malloc(cap);
    if (text == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    p = text;
    p += snprintf(p, cap, "# written by provend: changes are overwritten\n"
                  "server_name: \"%s\"\n"
                  "listen: \"127.0.0.1:%u\"\n"
                  "http: \"127.0.0.1:%u\"\n"
                  "log_file: \"%s/nats.log\"\n"
                  "pid_file: \"%s/nats.pid\"\n"
                  "max_payload: 9MB\n"
                  "authorization {\n  token: $PROVEN_NATS_TOKEN\n}\n"
                  "jetstream {\n  store_dir: \"%s/jetstream\"\n"
                  "  max_memory_store: 256MB\n  max_file_store: 4GB\n}\n",
                  c->node, c->client_port, c->monitor_port, c->nats_dir,
                  c->nats_dir, c->nats_dir);
    admitted = 0;
    if (c->npeers > 0) {
        /* routes over mutual TLS: only admitted peers' certificates */
        p += snprintf(p, cap - (size_t) (p - text),
                      "cluster {\n  name: \"%s\"\n"
                      "  listen: \"0.0.0.0:%u\"\n"
                      "  tls {\n    cert_file: \"%s\"\n"
                      "    key_file: \"%s\"\n"
                      "    ca_file: \"%s/trusted.pem\"\n    verify: true\n"
                      "    timeout: 5\n  }\n  routes: [\n",
                      c->cluster, c->route_port, c->tls_cert, c->tls_key,
                      c->nats_dir);
        for (i = 0; i < c->npeers; i++) {
            if (c->peers[i].admitted) {
                p += snprintf(p, cap - (size_t) (p - text),
                              "    \"nats-route://%s\"\n",
                              c->peers[i].route);
                admitted++;
            }
        }
        snprintf(p, cap - (size_t) (p - text), "  ]\n}\n");
    }

    snprintf(path, sizeof(path), "%s/nats.conf", c->nats_dir);
    rc = proven_write_file(path, text, strlen(text), 0600, err, errlen);
    free(text);
    if (rc == PROVEN_OK) {
        provend_debug("cluster: nats.conf written with %zu routes", admitted);
    }
    return rc;
}


/* ---- nats-server, our child ------------------------------------------------ */

static void provend_cluster_spawn(provend_cluster_t *c);


static void
provend_cluster_closed(uv_handle_t *handle)
{
    provend_cluster_t  *c;

    c = handle->data;
    c->handles--;
}


static void
provend_cluster_on_restart(uv_timer_t *timer)
{
    provend_cluster_t  *c;

    c = timer->data;
    if (!c->stopping && !c->nats_running) {
        provend_cluster_spawn(c);
    }
}


static void
provend_cluster_on_nats_exit(uv_process_t *process, int64_t status,
    int signal)
{
    provend_cluster_t  *c;

    c = process->data;
    c->nats_running = 0;
    c->nats_pid = 0;
    uv_close((uv_handle_t *) process, provend_cluster_closed);

    if (c->stopping) {
        provend_info("cluster: nats-server stopped");
        if (!uv_is_closing((uv_handle_t *) &c->restart)) {
            uv_close((uv_handle_t *) &c->restart, provend_cluster_closed);
        }
        return;
    }
    if (uv_now(c->loop) - c->nats_since > PROVEND_NATS_RESTART_MAX) {
        c->backoff_ms = PROVEND_NATS_RESTART_MS;   /* it had run well */
    }
    provend_warn("cluster: nats-server exited (status %lld, signal %d); "
                 "restarting in %u ms (its log: %s/nats.log)",
                 (long long) status, signal, c->backoff_ms, c->nats_dir);
    uv_timer_start(&c->restart, provend_cluster_on_restart, c->backoff_ms,
                   0);
    c->backoff_ms = c->backoff_ms * 2 > PROVEND_NATS_RESTART_MAX
                    ? PROVEND_NATS_RESTART_MAX : c->backoff_ms * 2;
}


static void
provend_cluster_spawn(provend_cluster_t *c)
{
    int                    rc;
    char                   conf[4200], token[96], path[4096];
    char                  *args[4], *env[3];
    const char            *search;
    uv_stdio_container_t   stdio[3];
    uv_process_options_t   opts;

    snprintf(conf, sizeof(conf), "%s/nats.conf", c->nats_dir);
    args[0] = c->nats_bin;
    args[1] = "-c";
    args[2] = conf;
    args[3] = NULL;

    memset(&opts, 0, sizeof(opts));
    memset(stdio, 0, sizeof(stdio));
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_IGNORE;
    stdio[2].flags = UV_INHERIT_FD;       /* a failure to start is seen */
    stdio[2].data.fd = 2;
    /* the client token in its environment alone, never in a file */
    /* quoted: nats-server reads the variable as a value of its config */
    snprintf(token, sizeof(token), "PROVEN_NATS_TOKEN=\"%s\"",
             provend_nats_token);
    search = getenv("PATH");
    snprintf(path, sizeof(path), "PATH=%s",
             search != NULL ? search : "/usr/bin:/bin");
    env[0] = token;
    env[1] = path;                      /* where "nats-server" is found */
    env[2] = NULL;
    opts.file = c->nats_bin;
    opts.args = args;
    opts.env = env;
    opts.exit_cb = provend_cluster_on_nats_exit;
    opts.stdio = stdio;
    opts.stdio_count = 3;

    c->nats.data = c;
    rc = uv_spawn(c->loop, &c->nats, &opts);
    if (rc != 0) {
        provend_error("cluster: cannot start %s: %s", c->nats_bin,
                      uv_strerror(rc));
        uv_close((uv_handle_t *) &c->nats, provend_cluster_closed);
        c->handles++;
        uv_timer_start(&c->restart, provend_cluster_on_restart,
                       PROVEND_NATS_RESTART_MAX, 0);
        return;
    }
    c->handles++;
    c->nats_running = 1;
    c->nats_pid = c->nats.pid;
    c->nats_since = uv_now(c->loop);
    provend_info("cluster: nats-server %d on 127.0.0.1:%u (routes :%u, "
                 "monitor :%u)", c->nats_pid, c->client_port, c->route_port,
                 c->monitor_port);
}


static void
provend_cluster_on_reload(uv_timer_t *timer)
{
    uint64_t            up;
    provend_cluster_t  *c;

    c = timer->data;
    if (!c->nats_running || c->stopping) {
        return;                 /* a new one reads the file as it starts */
    }
    up = uv_now(c->loop) - c->nats_since;
    if (up < PROVEND_NATS_SETTLE_MS) {
        uv_timer_start(&c->reload, provend_cluster_on_reload,
                       PROVEND_NATS_SETTLE_MS - up, 0);
        return;
    }
    uv_process_kill(&c->nats, SIGHUP);
}


static void
provend_cluster_reload(provend_cluster_t *c)
{
    char      err[PROVEN_ERR_LEN];
    uint64_t  up;

    if (provend_cluster_write_conf(c, err, sizeof(err)) != PROVEN_OK) {
        provend_error("cluster: %s", err);
        return;
    }
    if (!c->nats_running) {
        return;                 /* it reads the new file when it starts */
    }
    /* a SIGHUP before nats-server has set its handlers would stop it */
    up = uv_now(c->loop) - c->nats_since;
    uv_timer_start(&c->reload, provend_cluster_on_reload,
                   up < PROVEND_NATS_SETTLE_MS ? PROVEND_NATS_SETTLE_MS - up
                                               : 0, 0);
}


/* ---- admissions ------------------------------------------------------------- */

static void
provend_admission_work(uv_work_t *work)
{
    int                        same;
    char                       url[800], hex[65], err[PROVEN_ERR_LEN];
    size_t                     i, j, der_len;
    BIO                       *bio;
    X509                      *cert;
    uint8_t                   *der, *p;
    proven_fetch_t             body;
    proven_fetch_opts_t        fo;
    provend_admission_t       *a;
    proven_verify_opts_t       opts;
    proven_verify_status_t     vs;
    proven_attestation_doc_t   doc;

    a = work->data;
    memset(&doc, 0, sizeof(doc));

    proven_hex_encode(a->nonce, sizeof(a->nonce), hex);
    snprintf(url, sizeof(url), "%s?nonce=%s", a->url, hex);

    memset(&fo, 0, sizeof(fo));
    fo.timeout_ms = PROVEND_ADMIT_TIMEOUT_S * 1000L;
    fo.max = PROVEND_DOC_MAX;
    fo.want_cert = 1;
    /* who answers is proved by the document, not by a web PKI: the key
     * of this TLS certificate must be the one the document binds */
    fo.insecure = 1;
    fo.proxy = a->proxy[0] != '\0' ? a->proxy : NULL;

    if (proven_fetch(url, &fo, &body, err, sizeof(err)) != PROVEN_OK) {
        snprintf(a->reason, sizeof(a->reason), "cannot fetch %.120s: %.100s",
                 a->url, err);
        goto done;
    }
    if (body.status != 200) {
        snprintf(a->reason, sizeof(a->reason), "%.120s answered %ld", a->url,
                 body.status);
        goto done;
    }
    a->answered = 1;

    memset(&opts, 0, sizeof(opts));
    opts.root = a->root;
    opts.at = PROVEN_AT_NOW;
    opts.nonce = a->nonce;
    opts.nonce_len = sizeof(a->nonce);
    vs = proven_attestation_verify(body.body, body.len, &opts, &doc, err,
                                   sizeof(err));
    if (vs != PROVEN_VERIFY_OK) {
        snprintf(a->reason, sizeof(a->reason), "its document does not "
                 "verify: %s: %.180s", proven_verify_status_name(vs), err);
        goto done;
    }

    if (a->measure_allowed != NULL) {
        /* any measurement the governance contract allows */
        if (provend_cluster_measurement(&doc, a->measurement) != PROVEN_OK) {
            snprintf(a->reason, sizeof(a->reason), "its document lacks PCR "
                     "0, 1 or 2 of 48 bytes");
            goto done;
        }
        if (!a->measure_allowed(a->measure_data, a->measurement, err,
                                sizeof(err)))
        {
            snprintf(a->reason, sizeof(a->reason), "%s", err);
            goto done;
        }
        /* what it runs, for cluster.status (matched by itself below) */
        a->npcrs = 0;
        for (j = 0; j < doc.pcr_count; j++) {
            if (doc.pcrs[j].index <= 2) {
                a->pcrs[a->npcrs++] = doc.pcrs[j];
            }
        }
    }
    for (i = 0; i < a->npcrs; i++) {
        same = 0;
        for (j = 0; j < doc.pcr_count; j++) {
            if (doc.pcrs[j].index == a->pcrs[i].index) {
                same = doc.pcrs[j].len == a->pcrs[i].len
                       && memcmp(doc.pcrs[j].value, a->pcrs[i].value,
                                 a->pcrs[i].len) == 0;
                break;
            }
        }
        if (!same) {
            snprintf(a->reason, sizeof(a->reason), "its PCR %u is not this "
                     "node's: another measurement", a->pcrs[i].index);
            goto done;
        }
    }

    /* only a document made by a TLS-bound endpoint binds the TLS key: a
     * caller of a plain endpoint could have named any key */
    if (!doc.user_data.present
        || doc.user_data.len != sizeof(PROVEN_TLS_BINDING_MARK) - 1
        || memcmp(doc.user_data.data, PROVEN_TLS_BINDING_MARK,
                  doc.user_data.len) != 0)
    {
        snprintf(a->reason, sizeof(a->reason), "its document is not one of "
                 "a TLS-bound endpoint (proven_attestation_bind_tls)");
        goto done;
    }

    a->cert_pem = body.cert_pem;
    body.cert_pem = NULL;
    cert = NULL;
    der = NULL;
    if (a->cert_pem != NULL
        && (bio = BIO_new_mem_buf(a->cert_pem, -1)) != NULL)
    {
        cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
    }
    der_len = 0;
    if (cert != NULL) {
        int  n = i2d_PUBKEY(X509_get0_pubkey(cert), NULL);

        if (n > 0 && (der = malloc((size_t) n)) != NULL) {
            p = der;
            der_len = (size_t) i2d_PUBKEY(X509_get0_pubkey(cert), &p);
        }
        X509_free(cert);
    }
    if (der == NULL || !doc.public_key.present
        || doc.public_key.len != der_len
        || memcmp(doc.public_key.data, der, der_len) != 0)
    {
        snprintf(a->reason, sizeof(a->reason), "its document does not bind "
                 "the key of the TLS certificate it answered with");
        free(der);
        goto done;
    }
    SHA256(der, der_len, a->spki);
    free(der);
    a->ok = 1;

done:

    proven_attestation_doc_free(&doc);
    proven_fetch_free(&body);
}


/*
 * nats.conf written anew and nats-server started again on it: a reload
 * closes the routes this node asked for to a peer no longer listed, but
 * not one the peer opened to it, nor does a certificate no longer trusted
 * end a connection made with it.  A dropped peer's connections end only
 * with the process (JetStream here is back within seconds).
 */
static void
provend_cluster_cut(provend_cluster_t *c)
{
    char  err[PROVEN_ERR_LEN];

    if (provend_cluster_write_conf(c, err, sizeof(err)) != PROVEN_OK) {
        provend_error("cluster: %s", err);
        return;
    }
    if (c->nats_running) {
        provend_info("cluster: nats-server restarted to end a dropped "
                     "peer's routes");
        uv_process_kill(&c->nats, SIGTERM);
    }
}


/* An admitted peer no longer is: its route and certificate leave
 * nats.conf (the caller reloads it, or restarts nats-server), and it is
 * asked again later. */
static void
provend_cluster_drop(provend_cluster_t *c, provend_peer_t *peer,
    const char *why)
{
    peer->admitted = 0;
    peer->has_measurement = 0;
    free(peer->cert_pem);
    peer->cert_pem = NULL;
    snprintf(peer->reason, sizeof(peer->reason), "dropped: %.200s", why);
    provend_warn("cluster: %s dropped: %s", peer->name, why);
    peer->next_try = uv_now(c->loop) + PROVEND_ADMIT_RETRY_MS;
}


/*
 * An admitted peer attested again: the host may have restarted it with
 * other code (its TLS key kept on a disk the host holds), so what it runs
 * now is checked as at its admission.  A document that does not hold
 * drops it; a peer that does not answer is dropped after a few misses
 * (one restarting is not).
 */
static void
provend_cluster_rechecked(provend_cluster_t *c, provend_peer_t *peer,
    provend_admission_t *a, int status)
{
    if (c->stopping || !peer->admitted) {
        return;
    }
    peer->recheck_at = uv_now(c->loop) + PROVEND_RECHECK_MS;
    if (status == 0 && a->ok) {
        peer->recheck_misses = 0;
        peer->npcrs = a->npcrs;
        memcpy(peer->pcrs, a->pcrs, a->npcrs * sizeof(a->pcrs[0]));
        peer->has_measurement = a->measure_allowed != NULL;
        memcpy(peer->measurement, a->measurement, 32);
        if (memcmp(peer->spki, a->spki, sizeof(a->spki)) != 0) {
            /* another TLS key, attested: routes trust the new one */
            memcpy(peer->spki, a->spki, sizeof(peer->spki));
            free(peer->cert_pem);
            peer->cert_pem = a->cert_pem;
            a->cert_pem = NULL;
            provend_cluster_reload(c);
        }
        return;
    }
    if (status == 0 && !a->answered
        && ++peer->recheck_misses < PROVEND_RECHECK_MISSES)
    {
        return;
    }
    provend_cluster_drop(c, peer, status != 0 ? "the check was cancelled"
                                              : a->reason);
    if (a->answered) {
        provend_cluster_cut(c);         /* it runs what may not stay */
    } else {
        provend_cluster_reload(c);      /* away: no route to close */
    }
}


static void
provend_admission_done(uv_work_t *work, int status)
{
    provend_peer_t       *peer;
    provend_cluster_t    *c;
    provend_admission_t  *a;

    a = work->data;
    c = a->c;
    peer = a->peer;
    peer->checking = 0;

    /* the host may point a peer's name at this node, or at a peer already
     * admitted under another: one node is one member, and never ours */
    if (status == 0 && a->ok) {
        size_t  i;

        /* the set may have changed while the check ran on the pool */
        if (a->measure_allowed != NULL
            && !a->measure_allowed(a->measure_data, a->measurement,
                                   a->reason, sizeof(a->reason)))
        {
            a->ok = 0;
        }

        if (memcmp(a->spki, c->own_spki, sizeof(a->spki)) == 0) {
            a->ok = 0;
            snprintf(a->reason, sizeof(a->reason), "it answered with this "
                     "node's own TLS key: it is this node");
        }
        for (i = 0; a->ok && i < c->npeers; i++) {
            if (c->peers[i].admitted && &c->peers[i] != peer
                && memcmp(a->spki, c->peers[i].spki, sizeof(a->spki)) == 0)
            {
                a->ok = 0;
                snprintf(a->reason, sizeof(a->reason), "it answered with "
                         "the TLS key of %s, admitted already: the same "
                         "node", c->peers[i].name);
            }
        }
    }

    if (a->recheck) {
        provend_cluster_rechecked(c, peer, a, status);

    } else if (status == 0 && a->ok && !c->stopping) {
        peer->admitted = 1;
        peer->recheck_at = uv_now(c->loop) + PROVEND_RECHECK_MS;
        peer->recheck_misses = 0;
        memcpy(peer->spki, a->spki, sizeof(peer->spki));
        /* the PCRs matched: its document's values, equal to ours */
        peer->npcrs = a->npcrs;
        memcpy(peer->pcrs, a->pcrs, a->npcrs * sizeof(a->pcrs[0]));
        peer->has_measurement = a->measure_allowed != NULL;
        memcpy(peer->measurement, a->measurement, 32);
        peer->cert_pem = a->cert_pem;
        a->cert_pem = NULL;
        peer->reason[0] = '\0';
        provend_info("cluster: admitted %s: its attestation checks out; "
                     "route to %s", peer->name, peer->route);
        provend_cluster_reload(c);
        if (!c->nats_running && !uv_is_active((uv_handle_t *) &c->restart))
        {
            provend_cluster_spawn(c);
        }

    } else if (!c->stopping) {
        snprintf(peer->reason, sizeof(peer->reason), "%s",
                 status != 0 ? "the check was cancelled" : a->reason);
        provend_warn("cluster: %s not admitted: %s; asking again in %d s",
                     peer->name, peer->reason, PROVEND_ADMIT_RETRY_MS / 1000);
        peer->next_try = uv_now(c->loop) + PROVEND_ADMIT_RETRY_MS;
    }

    X509_free(a->root);
    free(a->cert_pem);
    free(a);
}


int
provend_cluster_measurement(const proven_attestation_doc_t *doc,
    uint8_t hash[32])
{
    size_t   i, j;
    uint8_t  pcrs[3 * 48];

    for (i = 0; i < 3; i++) {
        for (j = 0; j < doc->pcr_count; j++) {
            if (doc->pcrs[j].index == i) {
                break;
            }
        }
        if (j == doc->pcr_count || doc->pcrs[j].len != 48) {
            return PROVEN_ERR;
        }
        memcpy(pcrs + 48 * i, doc->pcrs[j].value, 48);
    }
    provend_keccak256(pcrs, sizeof(pcrs), hash);
    return PROVEN_OK;
}


/*
 * The governance contract's set changed: an admitted peer whose
 * measurement it no longer holds is dropped (its route and certificate
 * leave nats.conf) and asked again as any peer not admitted.
 */
void
provend_cluster_measurements_changed(void *cluster)
{
    int                 dropped;
    char                why[PROVEN_ERR_LEN];
    size_t              i;
    provend_peer_t     *peer;
    provend_cluster_t  *c = cluster;

    if (c == NULL || c->measure_allowed == NULL || c->stopping) {
        return;
    }
    dropped = 0;
    for (i = 0; i < c->npeers; i++) {
        peer = &c->peers[i];
        if (!peer->admitted || !peer->has_measurement
            || c->measure_allowed(c->measure_data, peer->measurement, why,
                                  sizeof(why)))
        {
            continue;
        }
        provend_cluster_drop(c, peer, why);
        dropped = 1;
    }
    if (dropped) {
        provend_cluster_cut(c);
    }
}


/*
 * Our own PCRs that peers must match, into the admission; PROVEN_ERR when
 * we do not know one of ours yet (an NSM node learns them with its first
 * document): no peer is admitted on fewer.
 */
static int
provend_cluster_match_pcrs(provend_cluster_t *c, const provend_status_t *st,
    provend_admission_t *a)
{
    size_t  i, j;

    for (i = 0; i < c->nmatch; i++) {
        for (j = 0; j < st->pcr_count; j++) {
            if ((int) st->pcrs[j].index == c->match[i]) {
                a->pcrs[a->npcrs++] = st->pcrs[j];
                break;
            }
        }
        if (j == st->pcr_count) {
            return PROVEN_ERR;
        }
    }
    return PROVEN_OK;
}


static void
provend_cluster_on_admit(uv_timer_t *timer)
{
    size_t                i;
    provend_peer_t       *peer;
    provend_status_t      st;
    provend_cluster_t    *c;
    provend_admission_t  *a;

    c = timer->data;
    c->provider->status(c->provider, &st);

    if (c->storage != NULL) {
        provend_storage_cluster_tick(c->storage);
    }

    /* the cluster key: asked for once a peer can answer */
    {
        provend_admission_t  own;
        int                  any;

        memset(&own, 0, sizeof(own));
        any = 0;
        for (i = 0; i < c->npeers; i++) {
            any |= c->peers[i].admitted;
        }
        if (provend_cluster_match_pcrs(c, &st, &own) == PROVEN_OK) {
            provend_ckey_tick(c->ckey, own.pcrs, own.npcrs,
                              any && c->nats_running, c->alone);
        }
    }

    /* the replicated storage: once the key is here and NATS runs */
    if (c->storage != NULL && c->nats_running) {
        uint8_t  key[PROVEND_KEY_LEN];

        if (provend_ckey_get(c->ckey, key)) {
            (void) provend_storage_cluster_start(c->storage, key,
                                                 c->client_port,
                                                 c->npeers + 1 < 3
                                                 ? (unsigned) c->npeers + 1
                                                 : 3);
            OPENSSL_cleanse(key, sizeof(key));
        }
    }

    for (i = 0; i < c->npeers; i++) {
        if (c->peers[i].checking) {
            return;             /* one at a time: the pool is shared */
        }
    }
    for (i = 0; i < c->npeers; i++) {
        peer = &c->peers[i];
        if (uv_now(c->loop) < (peer->admitted ? peer->recheck_at
                                              : peer->next_try))
        {
            continue;
        }
        a = calloc(1, sizeof(*a));
        if (a == NULL || RAND_bytes(a->nonce, sizeof(a->nonce)) != 1) {
            free(a);
            continue;
        }
        a->c = c;
        a->peer = peer;
        a->recheck = peer->admitted;
        snprintf(a->url, sizeof(a->url), "%s", peer->url);
        snprintf(a->proxy, sizeof(a->proxy), "%s", c->proxy);
        if (provend_cluster_match_pcrs(c, &st, a) != PROVEN_OK) {
            snprintf(peer->reason, sizeof(peer->reason), "this node does "
                     "not know its own PCRs yet");
            free(a);
            continue;
        }
        a->measure_allowed = c->measure_allowed;
        a->measure_data = c->measure_data;
        a->root = c->root;
        X509_up_ref(a->root);
        a->work.data = a;
        if (uv_queue_work(c->loop, &a->work, provend_admission_work,
                          provend_admission_done) != 0)
        {
            X509_free(a->root);
            free(a);
            continue;
        }
        peer->checking = 1;
        return;
    }
}


/* ---- the cluster file ------------------------------------------------------- */

/* Text that goes into a quoted NATS setting as it is. */
static int
provend_cluster_safe(const char *s)
{
    for ( ; *s != '\0'; s++) {
        if ((unsigned char) *s < 0x20 || *s == 0x7f || *s == '"'
            || *s == '\\')
        {
            return 0;
        }
    }
    return 1;
}


/* A name or host:port: letters, digits and . _ : - only. */
static int
provend_cluster_word(const char *s)
{
    if (*s == '\0') {
        return 0;
    }
    for ( ; *s != '\0'; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')
              || (*s >= '0' && *s <= '9') || *s == '.' || *s == '_'
              || *s == ':' || *s == '-'))
        {
            return 0;
        }
    }
    return 1;
}

static int
provend_cluster_text(json_t *obj, const char *key, char *out, size_t size,
    int required, char *err, size_t errlen)
{
    int  rc;

    rc = provend_json_text(obj, key, out, size);
    if (rc == PROVEN_OK || (rc == PROVEN_AGAIN && !required)) {
        return PROVEN_OK;
    }
    proven_errf(err, errlen, "\"%s\" must be a text of 1..%zu characters",
                key, size - 1);
    return PROVEN_ERR;
}


static int
provend_cluster_port(json_t *obj, const char *key, unsigned *out, char *err,
    size_t errlen)
{
    json_t  *v;

    v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < 1
        || json_integer_value(v) > 65535)
    {
        proven_errf(err, errlen, "nats.%s must be a port number", key);
        return PROVEN_ERR;
    }
    *out = (unsigned) json_integer_value(v);
    return PROVEN_OK;
}


/*
 * A peer to admit, from the file or cluster.add_peer: PROVEN_AGAIN when
 * its name is taken (ours or a peer's), PROVEN_ERR for the rest.
 */
static int
provend_cluster_add(provend_cluster_t *c, const char *name, const char *url,
    const char *route, char *err, size_t errlen)
{
    size_t           i;
    provend_peer_t  *p;

    if (strncmp(url, "https://", 8) != 0 || strlen(url) >= sizeof(p->url)
        || !provend_cluster_safe(url) || strpbrk(url, "?# ") != NULL
        || !provend_cluster_word(route) || strlen(route) >= sizeof(p->route)
        || strchr(route, ':') == NULL
        || !provend_cluster_word(name) || strlen(name) > PROVEND_NAME_LEN)
    {
        proven_errf(err, errlen, "peer %.63s: a plain name, its attestation "
                    "URL https://... (no query: the nonce is ours to add), "
                    "its route HOST:PORT", name);
        return PROVEN_ERR;
    }
    for (i = 0; i < c->npeers; i++) {
        if (strcmp(c->peers[i].name, name) == 0) {
            break;
        }
    }
    if (i < c->npeers || strcmp(name, c->node) == 0) {
        proven_errf(err, errlen, "peer %s: the name is taken", name);
        return PROVEN_AGAIN;
    }
    if (c->npeers == PROVEND_CLUSTER_PEERS_MAX) {
        proven_errf(err, errlen, "peer %s: %d peers at most", name,
                    PROVEND_CLUSTER_PEERS_MAX);
        return PROVEN_ERR;
    }
    p = &c->peers[c->npeers++];
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->url, sizeof(p->url), "%s", url);
    snprintf(p->route, sizeof(p->route), "%s", route);
    return PROVEN_OK;
}


static int
provend_cluster_read(provend_cluster_t *c, const char *file,
    const char *data_dir, char *err, size_t errlen)
{
    int            rc;
    char           root[4096];
    FILE          *f;
    size_t         i;
    json_t        *j, *nats, *tls, *peers, *peer, *match, *v;
    json_error_t   jerr;

    j = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL || !json_is_object(j)) {
        proven_errf(err, errlen, "%s: %s (line %d)", file,
                    j == NULL ? jerr.text : "not an object",
                    jerr.line);
        json_decref(j);
        return PROVEN_ERR;
    }

    rc = PROVEN_ERR;
    nats = json_object_get(j, "nats");
    tls = json_object_get(j, "tls");
    peers = json_object_get(j, "peers");
    match = json_object_get(j, "match_pcrs");
    snprintf(c->tls_cert, sizeof(c->tls_cert), "%s/tls/cert.pem", data_dir);
    snprintf(c->tls_key, sizeof(c->tls_key), "%s/tls/key.pem", data_dir);

    if (provend_cluster_text(j, "cluster", c->cluster, sizeof(c->cluster), 1,
                             err, errlen) != PROVEN_OK
        || provend_cluster_text(j, "node", c->node, sizeof(c->node), 1, err,
                                errlen) != PROVEN_OK
        || provend_cluster_text(j, "root", root, sizeof(root), 1, err,
                                errlen) != PROVEN_OK
        || !json_is_object(nats)
        || provend_cluster_port(nats, "client", &c->client_port, err,
                                errlen) != PROVEN_OK
        || provend_cluster_port(nats, "route", &c->route_port, err, errlen)
           != PROVEN_OK
        || provend_cluster_port(nats, "monitor", &c->monitor_port, err,
                                errlen) != PROVEN_OK
        || (tls != NULL
            && (provend_cluster_text(tls, "cert", c->tls_cert,
                                     sizeof(c->tls_cert), 1, err, errlen)
                != PROVEN_OK
                || provend_cluster_text(tls, "key", c->tls_key,
                                        sizeof(c->tls_key), 1, err, errlen)
                   != PROVEN_OK)))
    {
        if (!json_is_object(nats)) {
            proven_errf(err, errlen,
                        "\"nats\" must be {client, route, monitor}");
        }
        goto done;
    }

    f = fopen(root, "r");
    c->root = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f != NULL) {
        fclose(f);
    }
    if (c->root == NULL) {
        proven_errf(err, errlen, "root %s: not a PEM certificate", root);
        goto done;
    }

    if (match == NULL || json_array_size(match) == 0) {
        proven_errf(err, errlen,
                    "\"match_pcrs\" must name the PCRs peers share "
                    "with this node (at least one)");
        goto done;
    }
    if (match != NULL) {
        if (!json_is_array(match)
            || json_array_size(match) > PROVEN_ATT_PCRS_MAX)
        {
            proven_errf(err, errlen, "\"match_pcrs\" must be PCR indexes");
            goto done;
        }
        json_array_foreach(match, i, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0
                || json_integer_value(v) >= PROVEN_ATT_PCRS_MAX)
            {
                proven_errf(err, errlen, "\"match_pcrs\" must be PCR indexes");
                goto done;
            }
            c->match[c->nmatch++] = (int) json_integer_value(v);
        }
    }

    if (!json_is_array(peers)
        || json_array_size(peers) > PROVEND_CLUSTER_PEERS_MAX)
    {
        proven_errf(err, errlen, "\"peers\" must be a list of at most %d",
                    PROVEND_CLUSTER_PEERS_MAX);
        goto done;
    }
    if (!provend_cluster_word(c->node) || !provend_cluster_word(c->cluster))
    {
        proven_errf(err, errlen, "cluster and node names are plain words");
        goto done;
    }
    json_array_foreach(peers, i, peer) {
        char  name[PROVEND_NAME_LEN + 1], url[512], route[128];

        if (!json_is_object(peer)
            || provend_cluster_text(peer, "name", name, sizeof(name), 1, err,
                                    errlen) != PROVEN_OK
            || provend_cluster_text(peer, "attestation", url, sizeof(url), 1,
                                    err, errlen) != PROVEN_OK
            || provend_cluster_text(peer, "route", route, sizeof(route), 1,
                                    err, errlen) != PROVEN_OK)
        {
            if (!json_is_object(peer)) {
                proven_errf(err, errlen, "a peer must be {name, attestation, "
                            "route}");
            }
            goto done;
        }
        if (provend_cluster_add(c, name, url, route, err, errlen)
            != PROVEN_OK)
        {
            goto done;
        }
    }
    if (provend_cluster_text(j, "proxy", c->proxy, sizeof(c->proxy), 0, err,
                             errlen) != PROVEN_OK)
    {
        goto done;
    }
    if (c->proxy[0] != '\0' && strncmp(c->proxy, "http://", 7) != 0) {
        proven_errf(err, errlen, "\"proxy\": an http:// URL (an HTTP "
                    "CONNECT proxy, such as the enclave's egress)");
        goto done;
    }
    if (!provend_cluster_safe(c->tls_cert) || !provend_cluster_safe(c->tls_key)
        || !provend_cluster_safe(data_dir))
    {
        proven_errf(err, errlen, "paths in the NATS configuration may not hold "
                    "quotes, backslashes or control characters");
        goto done;
    }
    rc = PROVEN_OK;

done:

    json_decref(j);
    return rc;
}


/* ---- the module --------------------------------------------------------------- */

/*
 * A nats-server a killed provend left running holds our ports: its pid
 * file names it, /proc says whether it still is nats-server.
 */
static void
provend_cluster_leftover(provend_cluster_t *c)
{
    int    pid, i;
    char   path[4200], cmd[256];
    FILE  *f;
    size_t n;

    snprintf(path, sizeof(path), "%s/nats.pid", c->nats_dir);
    f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    pid = 0;
    if (fscanf(f, "%d", &pid) != 1) {
        pid = 0;
    }
    fclose(f);
    if (pid <= 1) {
        return;
    }
    snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
    f = fopen(path, "r");
    n = f != NULL ? fread(cmd, 1, sizeof(cmd) - 1, f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    cmd[n] = '\0';
    if (n == 0 || strstr(cmd, "nats-server") == NULL) {
        return;
    }
    provend_warn("cluster: stopping nats-server %d, left by an earlier "
                 "provend", pid);
    kill(pid, SIGTERM);
    for (i = 0; i < 50 && kill(pid, 0) == 0; i++) {
        usleep(100 * 1000);
    }
    if (kill(pid, 0) == 0) {
        kill(pid, SIGKILL);
    }
}


/* The hash of our TLS key, which a peer's must not be. */
static int
provend_cluster_own_key(provend_cluster_t *c, char *err, size_t errlen)
{
    int       n;
    BIO      *bio;
    X509     *cert;
    uint8_t  *der, *p;

    cert = NULL;
    bio = BIO_new_file(c->tls_cert, "r");
    if (bio != NULL) {
        cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
    }
    n = cert != NULL ? i2d_PUBKEY(X509_get0_pubkey(cert), NULL) : 0;
    der = n > 0 ? malloc((size_t) n) : NULL;
    if (der == NULL) {
        X509_free(cert);
        proven_errf(err, errlen, "%s: not a certificate", c->tls_cert);
        return PROVEN_ERR;
    }
    p = der;
    n = i2d_PUBKEY(X509_get0_pubkey(cert), &p);
    SHA256(der, (size_t) n, c->own_spki);
    free(der);
    X509_free(cert);
    return PROVEN_OK;
}


provend_cluster_t *
provend_cluster_open(const provend_cluster_config_t *cfg, char *err,
    size_t errlen)
{
    int                 seed;
    size_t              i;
    provend_cluster_t  *c;

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    c->loop = cfg->loop;
    c->storage = cfg->storage;
    c->provider = cfg->provider;
    c->backoff_ms = PROVEND_NATS_RESTART_MS;
    snprintf(c->nats_bin, sizeof(c->nats_bin), "%s",
             cfg->nats_server != NULL ? cfg->nats_server : "nats-server");
    snprintf(c->nats_dir, sizeof(c->nats_dir), "%s/nats", cfg->data_dir);

    {
        uint8_t  raw[32];

        if (RAND_bytes(raw, sizeof(raw)) != 1) {
            proven_errf(err, errlen, "no random bytes for the NATS token");
            free(c);
            return NULL;
        }
        proven_hex_encode(raw, sizeof(raw), provend_nats_token);
        OPENSSL_cleanse(raw, sizeof(raw));
    }

    if (provend_cluster_read(c, cfg->file, cfg->data_dir, err, errlen)
        != PROVEN_OK)
    {
        X509_free(c->root);
        free(c);
        return NULL;
    }
    if (provend_cluster_own_key(c, err, errlen) != PROVEN_OK
        || (mkdir(c->nats_dir, 0700) != 0 && errno != EEXIST)
        || provend_cluster_write_conf(c, err, errlen) != PROVEN_OK)
    {
        if (err != NULL && err[0] == '\0') {
            proven_errf(err, errlen, "%s: %s", c->nats_dir, strerror(errno));
        }
        X509_free(c->root);
        free(c);
        return NULL;
    }

    provend_cluster_leftover(c);

    /* the node named first makes the cluster key */
    seed = 1;
    for (i = 0; i < c->npeers; i++) {
        seed = seed && strcmp(c->node, c->peers[i].name) < 0;
    }
    c->ckey = provend_ckey_open(c->loop, cfg->data_dir, seed, c->root,
                                c->client_port, cfg->server, cfg->attest,
                                cfg->key_file_key, cfg->key_in_memory, err,
                                errlen);
    if (c->ckey == NULL) {
        X509_free(c->root);
        free(c);
        return NULL;
    }
    c->measure_allowed = cfg->measure_allowed;
    c->measure_data = cfg->measure_data;
    provend_ckey_set_measure(c->ckey, cfg->measure_allowed,
                             cfg->measure_data);
    if (cfg->serve_session != NULL) {
        char  ferr[PROVEN_ERR_LEN];

        ferr[0] = '\0';
        c->forward = provend_forward_open(c->loop, c->client_port,
                                          cfg->session_tag,
                                          cfg->serve_session,
                                          cfg->serve_session_data, ferr,
                                          sizeof(ferr));
        if (ferr[0] != '\0') {
            provend_error("cluster: %s: sessions of other nodes cannot "
                          "be reached", ferr);
        }
    }

    uv_timer_init(c->loop, &c->restart);
    uv_timer_init(c->loop, &c->admit);
    uv_timer_init(c->loop, &c->reload);
    c->restart.data = c;
    c->admit.data = c;
    c->reload.data = c;
    c->handles = 3;
    uv_timer_start(&c->admit, provend_cluster_on_admit, 100,
                   PROVEND_ADMIT_EVERY_MS);

    provend_info("cluster %s: node %s, %zu peers to admit", c->cluster,
                 c->node, c->npeers);
    /* a JetStream cluster will not start without a route: nats-server
     * starts with the first peer admitted (alone: at once) */
    if (c->npeers == 0) {
        c->alone = 1;
        provend_cluster_spawn(c);
    }
    return c;
}





/* {"1": hex, ...}: the measurements an admitted peer showed. */
static cbor_item_t *
provend_cluster_pcrs(const provend_peer_t *peer)
{
    char          index[16], hex[2 * PROVEN_ATT_PCR_MAX + 1];
    size_t        i;
    cbor_item_t  *map;

    map = cbor_new_definite_map(peer->npcrs);
    for (i = 0; map != NULL && i < peer->npcrs; i++) {
        snprintf(index, sizeof(index), "%u", peer->pcrs[i].index);
        proven_hex_encode(peer->pcrs[i].value, peer->pcrs[i].len, hex);
        if (proven_cbor_map_put(map, index, cbor_build_string(hex))
            != PROVEN_OK)
        {
            cbor_decref(&map);
        }
    }
    return map;
}


static cbor_item_t *
provend_cluster_status(provend_cluster_t *c)
{
    int           ok, have;
    char          fp[17];
    size_t        i;
    cbor_item_t  *map, *nats, *members, *m;

    have = provend_ckey_fingerprint(c->ckey, fp);
    map = cbor_new_definite_map(6 + !have);
    nats = cbor_new_definite_map(5);
    members = cbor_new_definite_array(c->npeers);
    ok = map != NULL && nats != NULL && members != NULL
         && proven_cbor_map_put(nats, "running",
                                cbor_build_bool(c->nats_running)) == PROVEN_OK
         && proven_cbor_map_put(nats, "pid",
                                cbor_build_uint32((uint32_t) c->nats_pid))
            == PROVEN_OK
         && proven_cbor_map_put(nats, "client",
                                cbor_build_uint16((uint16_t) c->client_port))
            == PROVEN_OK
         && proven_cbor_map_put(nats, "route",
                                cbor_build_uint16((uint16_t) c->route_port))
            == PROVEN_OK
         && proven_cbor_map_put(nats, "monitor",
                                cbor_build_uint16((uint16_t) c->monitor_port))
            == PROVEN_OK;

    for (i = 0; ok && i < c->npeers; i++) {
        char  hex[2 + 64 + 1];

        hex[0] = '0';
        hex[1] = 'x';
        proven_hex_encode(c->peers[i].measurement, 32, hex + 2);
        m = cbor_new_definite_map(2 + (c->peers[i].reason[0] != '\0')
                                  + (c->peers[i].admitted != 0)
                                  + (c->peers[i].has_measurement != 0));
        ok = m != NULL
             && proven_cbor_map_put(m, "name",
                                    cbor_build_string(c->peers[i].name))
                == PROVEN_OK
             && proven_cbor_map_put(m, "admitted",
                                    cbor_build_bool(c->peers[i].admitted))
                == PROVEN_OK
             && (c->peers[i].reason[0] == '\0'
                 || proven_cbor_map_put(m, "reason",
                        cbor_build_string(c->peers[i].reason)) == PROVEN_OK)
             && (!c->peers[i].admitted
                 || proven_cbor_map_put(m, "pcrs",
                                        provend_cluster_pcrs(&c->peers[i]))
                    == PROVEN_OK)
             && (!c->peers[i].has_measurement
                 || proven_cbor_map_put(m, "measurement",
                                        cbor_build_string(hex)) == PROVEN_OK)
             && cbor_array_push(members, m);
        if (m != NULL) {
            cbor_decref(&m);
        }
    }

    ok = ok
         && proven_cbor_map_put(map, "cluster", cbor_build_string(c->cluster))
            == PROVEN_OK
         && proven_cbor_map_put(map, "node", cbor_build_string(c->node))
            == PROVEN_OK
         && proven_cbor_map_put(map, "key",
                                have ? cbor_build_string(fp)
                                     : cbor_new_null())
            == PROVEN_OK
         && (have
             || proven_cbor_map_put(map, "key_wait",
                    cbor_build_string(provend_ckey_waiting(c->ckey)))
                == PROVEN_OK);
    if (ok && c->storage != NULL) {
        ok = proven_cbor_map_put(map, "storage",
                                 provend_storage_cluster_status(c->storage))
             == PROVEN_OK;
    }
    if (ok) {
        ok = proven_cbor_map_put(map, "nats", nats) == PROVEN_OK;
        nats = NULL;
        ok = proven_cbor_map_put(map, "members", members) == PROVEN_OK && ok;
        members = NULL;
    }
    if (nats != NULL) {
        cbor_decref(&nats);
    }
    if (members != NULL) {
        cbor_decref(&members);
    }
    if (!ok && map != NULL) {
        cbor_decref(&map);
    }
    return ok ? map : NULL;
}


static void
provend_cluster_op_status(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    (void) op;

    provend_ops_reply_ok(reply, ctx, req->id,
                         provend_cluster_status(subsystem));
}


/*
 * cluster.add_peer {name, attestation, route}: one more peer to admit,
 * for this run (the cluster file is the operator's, or in an enclave its
 * agent's, which adds it there too).  It is admitted as the file's are.
 */
static void
provend_cluster_op_add_peer(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    int                 rc;
    char                name[PROVEND_NAME_LEN + 1], url[512], route[128];
    char                err[PROVEN_ERR_LEN];
    cbor_item_t        *result;
    provend_cluster_t  *c = subsystem;

    (void) op;

    if (proven_cbor_text_into(proven_cbor_map_get(req->map, "name"), name,
                              sizeof(name)) != PROVEN_OK
        || proven_cbor_text_into(proven_cbor_map_get(req->map,
                                                     "attestation"),
                                 url, sizeof(url)) != PROVEN_OK
        || proven_cbor_text_into(proven_cbor_map_get(req->map, "route"),
                                 route, sizeof(route)) != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "invalid",
                                "cluster.add_peer: {name, attestation, "
                                "route}, texts");
        return;
    }
    /* a node that started alone runs JetStream alone, which nats-server
     * cannot turn into a cluster by a reload */
    if (c->alone) {
        provend_ops_reply_error(reply, ctx, req->id, "conflict",
                                "this node started alone: it joins a "
                                "cluster by a restart with peers");
        return;
    }
    rc = provend_cluster_add(c, name, url, route, err, sizeof(err));
    if (rc != PROVEN_OK) {
        provend_ops_reply_error(reply, ctx, req->id,
                                rc == PROVEN_AGAIN ? "exists" : "invalid",
                                err);
        return;
    }
    provend_info("cluster: peer %s added (route %s): to admit", name, route);
    result = cbor_new_definite_map(2);
    if (result != NULL
        && (proven_cbor_map_put(result, "name", cbor_build_string(name))
            != PROVEN_OK
            || proven_cbor_map_put(result, "peers",
                                   cbor_build_uint8((uint8_t) c->npeers))
               != PROVEN_OK))
    {
        cbor_decref(&result);
    }
    provend_ops_reply_ok(reply, ctx, req->id, result);
}


const provend_op_t  provend_cluster_ops[] = {
    { "cluster.status", PROVEND_CALLER_SOCKET, provend_cluster_op_status, 0 },
    { "cluster.add_peer", PROVEND_CALLER_SOCKET, provend_cluster_op_add_peer,
      0 },
    { NULL, 0, NULL, 0 }
};


static void
provend_cluster_on_kill(uv_timer_t *timer)
{
    provend_cluster_t  *c;

    c = timer->data;
    if (c->nats_running) {
        provend_warn("cluster: nats-server did not stop: SIGKILL");
        uv_process_kill(&c->nats, SIGKILL);
    }
}


void
provend_cluster_forward(void *data, uint32_t tag,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    provend_cluster_t  *c;

    c = data;
    if (c->forward == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "unknown_session",
                                "no session of another node can be reached");
        return;
    }
    provend_forward_call(c->forward, tag, req, reply, ctx);
}


void
provend_cluster_stop(provend_cluster_t *c)
{
    if (c->stopping) {
        return;
    }
    c->stopping = 1;
    provend_ckey_stop(c->ckey);
    if (c->forward != NULL) {
        provend_forward_stop(c->forward);
    }
    if (c->storage != NULL) {
        /* its connection closed while its server still answers */
        provend_storage_cluster_disconnect(c->storage);
    }
    uv_close((uv_handle_t *) &c->admit, provend_cluster_closed);
    uv_close((uv_handle_t *) &c->reload, provend_cluster_closed);
    if (c->nats_running) {
        /* the restart timer waits for it, then kills it */
        uv_process_kill(&c->nats, SIGTERM);
        uv_timer_start(&c->restart, provend_cluster_on_kill,
                       PROVEND_NATS_STOP_MS, 0);
    } else {
        uv_close((uv_handle_t *) &c->restart, provend_cluster_closed);
    }
}


void
provend_cluster_free(provend_cluster_t *c)
{
    size_t  i;

    for (i = 0; i < c->npeers; i++) {
        free(c->peers[i].cert_pem);
    }
    provend_ckey_free(c->ckey);
    provend_forward_free(c->forward);
    X509_free(c->root);
    free(c);
}
