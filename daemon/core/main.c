/*
 * provend: the Proven Node daemon.
 *
 *   provend [options]                  (core/options.c: provend --help)
 *   provend --sandbox-exec -- PROGRAM ARGS...   (around app workers)
 */

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <time.h>

#include <curl/curl.h>
#include <nats/nats.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#include "apps/sandbox.h"
#include "attest/provider.h"
#include "tls/acme.h"
#include "cluster/cluster.h"
#include "backup.h"
#include "keys.h"
#include "master.h"
#include "log.h"
#include "options.h"
#include "server.h"
#include "util.h"


/*
 * In a cluster: this node's copy of the replicated data, under
 * DATA/cluster, made again from the cluster's log at each start (the log
 * is what is durable), behind the cluster backend.
 */
static provend_storage_t *
provend_main_cluster_storage(provend_storage_config_t *st_cfg, char *err,
    size_t errlen)
{
    char                *dir, *copy;
    provend_storage_t   *local, *st;
    provend_storage_config_t  cfg;

    dir = NULL;
    copy = NULL;
    st = NULL;
    if (asprintf(&dir, "%s/cluster", st_cfg->data_dir) == -1
        || asprintf(&copy, "%s/storage", dir) == -1)
    {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (provend_remove_tree(copy, err, errlen) != PROVEN_OK
        || provend_mkdirs(dir, 0700, err, errlen) != PROVEN_OK)
    {
        goto done;
    }

    /* SQLite's 'localtime' must read the same on every node */
    setenv("TZ", "UTC", 1);
    tzset();

    cfg = *st_cfg;
    cfg.data_dir = dir;
    cfg.deterministic = 1;
    local = provend_storage_sqlite_open(&cfg, err, errlen);
    if (local != NULL) {
        st = provend_storage_cluster_open(local, err, errlen);
        if (st == NULL) {
            provend_storage_close(local);
        }
    }

done:

    free(copy);
    free(dir);
    return st;
}


/* DATA/provend.lock, held (flock) for the life of the process. */
static int
provend_main_lock(const char *data_dir, char *err, size_t errlen)
{
    int   fd;
    char  path[4200];

    snprintf(path, sizeof(path), "%s/provend.lock", data_dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        proven_errf(err, errlen, "%.150s/provend.lock: %s", data_dir,
                    strerror(errno));
        return PROVEN_ERR;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        proven_errf(err, errlen, "another provend (or a backup or restore) "
                    "uses %.150s: stop it first", data_dir);
        close(fd);
        return PROVEN_ERR;
    }
    return PROVEN_OK;           /* fd kept open: the lock lasts */
}


/* Whether path (which exists) lies in dir. */
static int
provend_main_under(const char *path, const char *dir)
{
    int     under;
    char   *rp, *rd;
    size_t  n;

    rp = realpath(path, NULL);
    rd = realpath(dir, NULL);
    n = rd != NULL ? strlen(rd) : 0;
    under = rp != NULL && rd != NULL && strncmp(rp, rd, n) == 0
            && (rp[n] == '/' || rp[n] == '\0');
    free(rp);
    free(rd);
    return under;
}


/* Whether file (which may not exist yet) would lie in dir/sub. */
static int
provend_main_under_dir(const char *file, const char *dir, const char *sub)
{
    int    under;
    char  *copy, inner[4200];

    copy = strdup(file);
    snprintf(inner, sizeof(inner), "%s/%s", dir, sub);
    under = copy != NULL && provend_main_under(dirname(copy), inner);
    free(copy);
    return under;
}


/* --keyd's companions, checked. */
static int
provend_main_keyd_config(const provend_options_t *o,
    provend_keyd_client_t *k, char *err, size_t errlen)
{
    int       rc;
    char     *text;
    size_t    len, n;
    uint8_t  *file;

    memset(k, 0, sizeof(*k));
    k->address = o->keyd;
    k->key_id = o->keyd_key_id;
    k->release_file = o->keyd_release;
    k->wait_s = (unsigned) o->keyd_wait;
    if (!provend_keyd_id_valid(k->key_id)) {
        proven_errf(err, errlen, "--keyd-key-id \"%s\": [a-z0-9_-], 1..64",
                    k->key_id);
        return PROVEN_ERR;
    }
    if (o->keyd_identity == NULL) {
        proven_errf(err, errlen, "--keyd needs --keyd-identity: the key "
                    "keyd's answers must be signed with");
        return PROVEN_ERR;
    }

    file = NULL;
    text = (char *) o->keyd_identity;
    len = strlen(text);
    if (text[0] == '@') {
        if (provend_main_under(text + 1, o->data_dir)) {
            proven_errf(err, errlen, "--keyd-identity %s is under --data, "
                        "on the disk the host writes: pin it where it is "
                        "measured (the image)", text);
            return PROVEN_ERR;
        }
        if (proven_read_file(text + 1, 256, &file, &len, err, errlen)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        text = (char *) file;
        while (len > 0 && strchr(" \t\r\n", text[len - 1]) != NULL) {
            len--;
        }
    }
    rc = proven_hex_decode(text, len, k->identity, sizeof(k->identity), &n);
    free(file);
    if (rc != PROVEN_OK || n != sizeof(k->identity)) {
        proven_errf(err, errlen, "--keyd-identity: not 64 hex digits");
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/*
 * --acme-domain @FILE: the name on FILE's first line (an enclave's agent
 * writes it, as the host's initialize names it); PROVEN_AGAIN when FILE
 * is not there (no certificate wanted).  Checked as a name by tls.c.
 */
static int
provend_main_acme_domain(const provend_options_t *o, char *out, size_t size)
{
    char     err[PROVEN_ERR_LEN];
    size_t   len;
    uint8_t *file;

    if (access(o->acme_domain + 1, F_OK) != 0 && errno == ENOENT) {
        return PROVEN_AGAIN;
    }
    if (proven_read_file(o->acme_domain + 1, size, &file, &len, err,
                         sizeof(err)) != PROVEN_OK)
    {
        fprintf(stderr, "provend: --acme-domain %s: %s\n", o->acme_domain,
                err);
        return PROVEN_ERR;
    }
    while (len > 0 && strchr(" \t\r\n", file[len - 1]) != NULL) {
        len--;
    }
    if (len == 0 || len >= size || memchr(file, '\n', len) != NULL) {
        free(file);
        fprintf(stderr, "provend: --acme-domain %s: one name, at most %zu "
                "characters\n", o->acme_domain, size - 1);
        return PROVEN_ERR;
    }
    memcpy(out, file, len);
    out[len] = '\0';
    free(file);
    return PROVEN_OK;
}


/*
 * The key to restore in with: data_dir without storage, in a backup, and
 * keyd releasing the key for it, which it does for the newest backup of
 * the key id only (a restore of an older one would roll the data back).
 */
static int
provend_main_restore_kek(const provend_options_t *o,
    const provend_keyd_client_t *keyd, provend_provider_t *provider,
    const char *in, uint8_t kek[PROVEND_KEY_LEN],
    uint8_t id[PROVEND_BACKUP_ID_LEN], char *err, size_t errlen)
{
    provend_keyd_ask_t  ask;

    memset(&ask, 0, sizeof(ask));
    ask.purpose = PROVEND_KEYD_FOR_BACKUP_RESTORE;
    if (provend_backup_peek(o->data_dir, in, ask.backup_id, err, errlen)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    memcpy(id, ask.backup_id, PROVEND_BACKUP_ID_LEN);
    return provend_master_kek_for(keyd, provider, &ask, kek, err, errlen);
}


/* --backup or --restore, with the node stopped: the exit status. */
static int
provend_main_backup(const provend_options_t *o, provend_provider_t *provider)
{
    int                     rc;
    char                    err[PROVEN_ERR_LEN], path[4200];
    size_t                  len;
    uint8_t                 master[PROVEND_KEY_LEN], kek[PROVEND_KEY_LEN];
    uint8_t                *sealed;
    provend_keyd_client_t   keyd;
    uint8_t                 id[PROVEND_BACKUP_ID_LEN];
    provend_keyd_ask_t      ask;
    provend_backup_stats_t  stats;

    err[0] = '\0';
    if (o->keyd == NULL || (o->backup != NULL && o->restore != NULL)) {
        provend_error("--backup or --restore (one of them) needs --keyd: "
                      "backups are sealed with the key keyd releases");
        return 1;
    }
    /* (main holds DATA's lock: no provend runs on it meanwhile) */
    if (o->backup != NULL && provend_main_under_dir(o->backup, o->data_dir,
                                                    "storage"))
    {
        provend_error("backup: %s is inside the storage it backs up",
                      o->backup);
        return 1;
    }
    if (provend_main_keyd_config(o, &keyd, err, sizeof(err)) != PROVEN_OK) {
        provend_error("%s", err);
        return 1;
    }

    if (o->restore != NULL) {
        rc = provend_main_restore_kek(o, &keyd, provider, o->restore, kek,
                                      id, err, sizeof(err));
        if (rc == PROVEN_OK) {
            rc = provend_backup_restore(o->data_dir, kek, id, o->restore,
                                        err, sizeof(err));
        }
        if (rc == PROVEN_OK) {
            rc = provend_backup_set_parent(o->data_dir, id, err,
                                           sizeof(err));
        }
        OPENSSL_cleanse(kek, sizeof(kek));
        if (rc != PROVEN_OK) {
            provend_error("restore: %s", err);
        }
        return rc == PROVEN_OK ? 0 : 1;
    }

    /* read once: the bytes opened are the bytes the header carries */
    snprintf(path, sizeof(path), "%s/keys/master.sealed", o->data_dir);
    sealed = NULL;
    rc = proven_read_file(path, PROVEND_MASTER_SEALED_LEN, &sealed, &len,
                          err, sizeof(err));
    if (rc == PROVEN_OK && len != PROVEND_MASTER_SEALED_LEN) {
        proven_errf(err, sizeof(err), "keys/master.sealed is not a sealed "
                    "master key");
        rc = PROVEN_ERR;
    }
    if (rc == PROVEN_OK) {
        rc = provend_master_kek(&keyd, provider, kek, err, sizeof(err));
    }
    if (rc == PROVEN_OK && provend_keys_open_master(kek, sealed, master)
                           != PROVEN_OK)
    {
        proven_errf(err, sizeof(err), "keys/master.sealed does not open with "
                    "the key keyd released");
        rc = PROVEN_ERR;
    }
    OPENSSL_cleanse(kek, sizeof(kek));
    if (rc == PROVEN_OK) {
        rc = provend_backup_write(o->data_dir, master, sealed, o->backup,
                                  &stats, err, sizeof(err));
    }
    OPENSSL_cleanse(master, sizeof(master));
    free(sealed);
    /* keyd told of it: a restore gets the key for the newest only */
    if (rc == PROVEN_OK) {
        memset(&ask, 0, sizeof(ask));
        ask.purpose = PROVEND_KEYD_FOR_BACKUP_MADE;
        memcpy(ask.backup_id, stats.id, PROVEND_BACKUP_ID_LEN);
        provend_backup_parent(o->data_dir, ask.backup_parent);
        rc = provend_backup_record(&keyd, provider, &ask, err, sizeof(err));
        if (rc == PROVEN_OK) {
            rc = provend_backup_set_parent(o->data_dir, stats.id, err,
                                           sizeof(err));
        }
    }
    if (rc != PROVEN_OK) {
        provend_error("backup: %s", err);
    }
    return rc == PROVEN_OK ? 0 : 1;
}


/*
 * --restore-pending: a backup the host handed in before this start.  A
 * backup that does not restore (other code, not the newest, changed, cut
 * short, storage already there) stops the start: running on without the
 * data asked for would look like a node that lost it.  It is renamed
 * FILE.restoring first: a restart after a crash between the restore and
 * the removal finds it there with the storage in place, and goes on.
 */
static int
provend_main_restore_pending(const provend_options_t *o,
    provend_provider_t *provider)
{
    int                     rc;
    char                    err[PROVEN_ERR_LEN], doing[4200], sealed[4200];
    uint8_t                 kek[PROVEND_KEY_LEN];
    uint8_t                 id[PROVEND_BACKUP_ID_LEN];
    provend_keyd_client_t   keyd;

    snprintf(doing, sizeof(doing), "%.4000s.restoring", o->restore_pending);
    snprintf(sealed, sizeof(sealed), "%.4000s/keys/master.sealed",
             o->data_dir);
    if (access(doing, F_OK) == 0 && access(sealed, F_OK) == 0) {
        provend_info("restore: %s was restored before a restart", doing);
        (void) unlink(doing);
        return PROVEN_OK;
    }
    if (access(doing, F_OK) != 0
        && (access(o->restore_pending, F_OK) != 0
            || rename(o->restore_pending, doing) != 0))
    {
        return PROVEN_OK;                   /* none handed in */
    }
    if (o->keyd == NULL) {
        provend_error("restore: %s: a backup restores only with --keyd "
                      "(it is sealed with the key keyd releases)", doing);
        return PROVEN_ERR;
    }
    rc = provend_main_keyd_config(o, &keyd, err, sizeof(err));
    if (rc == PROVEN_OK) {
        rc = provend_main_restore_kek(o, &keyd, provider, doing, kek, id,
                                      err, sizeof(err));
    }
    if (rc == PROVEN_OK) {
        rc = provend_backup_restore(o->data_dir, kek, id, doing, err,
                                    sizeof(err));
    }
    if (rc == PROVEN_OK) {
        rc = provend_backup_set_parent(o->data_dir, id, err, sizeof(err));
    }
    OPENSSL_cleanse(kek, sizeof(kek));
    if (rc != PROVEN_OK) {
        provend_error("restore: %s: %s", doing, err);
        return PROVEN_ERR;
    }
    (void) unlink(doing);
    return PROVEN_OK;
}


int
main(int argc, char **argv)
{
    int                      status, rc, enclave_keys, key_in_memory;
    char                     err[PROVEN_ERR_LEN], *sock_buf, *runtime_bin;
    char                     node_id[PROVEND_NODE_ID_LEN + 1], threads[24];
    long                     cpus;
    uint8_t                  master[PROVEND_KEY_LEN];
    uint8_t                  master_sealed[PROVEND_MASTER_SEALED_LEN];
    uint8_t                  cluster_file_key[PROVEND_KEY_LEN];
    char                     acme_domain[PROVEND_ACME_NAME_MAX + 1];
    const char              *socket_path, *provider_name;
    unsigned long            nthreads;
    provend_options_t        o;
    provend_provider_t      *provider;
    provend_dev_config_t     dev_cfg;
    provend_server_config_t  srv_cfg;
    provend_storage_t       *storage;
    provend_storage_config_t st_cfg;
    provend_keyd_client_t    keyd;

    sock_buf = NULL;
    key_in_memory = 0;
    provider = NULL;
    storage = NULL;
    status = 1;

    /* provend runs itself this way around each app worker (apps/) */
    if (argc >= 3 && strcmp(argv[1], "--sandbox-exec") == 0) {
        return provend_sandbox_exec(argc - 2, argv + 2);
    }

    switch (provend_options_parse(&o, argc, argv)) {

    case PROVEND_OPTIONS_HELP:
        provend_options_usage(stdout);
        return 0;

    case PROVEND_OPTIONS_ERR:
        fprintf(stderr, "provend: --help lists the options\n");
        return 2;
    }

    provend_log_set_level(provend_log_level_parse(o.log_level));

    if (o.cluster_if != NULL) {
        if (o.cluster_file != NULL) {
            fprintf(stderr, "provend: --cluster or --cluster-if, not both\n");
            return 2;
        }
        if (access(o.cluster_if, F_OK) == 0) {
            o.cluster_file = o.cluster_if;
        } else {
            provend_info("%s is not there: this node runs alone",
                         o.cluster_if);
        }
    }

    if (o.acme_domain != NULL && o.acme_domain[0] == '@') {
        switch (provend_main_acme_domain(&o, acme_domain,
                                         sizeof(acme_domain))) {
        case PROVEN_OK:
            o.acme_domain = acme_domain;
            break;
        case PROVEN_AGAIN:
            provend_info("%s is not there: no ACME certificate (the "
                         "fallback's served)", o.acme_domain + 1);
            o.acme_domain = NULL;
            o.acme_directory = NULL;
            break;
        default:
            return 2;
        }
    }

    if (o.storage_heap_limit != 0) {
        /* process wide; the storage backend keeps a limit set first */
        (void) sqlite3_hard_heap_limit64((sqlite3_int64) o.storage_heap_limit);
    }

    if (o.governance != NULL && (o.eth_rpc == NULL || o.cluster_file == NULL))
    {
        fprintf(stderr, "provend: --governance needs --eth-rpc (the contract "
                "is read from the chain) and --cluster (it says which peers "
                "to admit)\n");
        return 2;
    }

    /* before any thread: libcurl's global set-up is not thread-safe */
    /* (--cluster-if has set cluster_file when its file is there) */
    if ((o.cluster_file != NULL || o.acme_directory != NULL
         || o.eth_rpc != NULL || o.radix_gateway != NULL)
        && curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
    {
        fprintf(stderr, "provend: cannot set up libcurl\n");
        return 1;
    }

    nthreads = o.threads;
    socket_path = o.socket_path;
    provider_name = o.provider;

    /* libuv sizes its pool on first use: set it before any uv call. */
    if (nthreads == 0) {
        cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = cpus > 0 ? (unsigned long) cpus : 4;
    }

    snprintf(threads, sizeof(threads), "%lu", nthreads);
    setenv("UV_THREADPOOL_SIZE", threads, 1);

    /* A peer gone mid-write is an error to handle, not a reason to die. */
    signal(SIGPIPE, SIG_IGN);

    /* keys live in this process: no core file of it, and no other
       process of the same user may ptrace it or read its /proc/PID/mem */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        provend_warn("cannot make provend non-dumpable: %s", strerror(errno));
    }

    if (provend_mkdirs(o.data_dir, 0700, err, sizeof(err)) != PROVEN_OK
        || provend_node_id(o.data_dir, node_id, err,
                           sizeof(err)) != PROVEN_OK)
    {
        provend_error("%s", err);
        return 1;
    }

    /* one provend (or backup, or restore) on a data directory at once */
    if (provend_main_lock(o.data_dir, err, sizeof(err)) != PROVEN_OK) {
        provend_error("%s", err);
        return 1;
    }

    if (socket_path == NULL) {
        if (asprintf(&sock_buf, "%s/provend.sock", o.data_dir) == -1) {
            provend_error("out of memory");
            return 1;
        }
        socket_path = sock_buf;
    }

    if (strcmp(provider_name, "auto") == 0) {
        if (access(PROVEND_NSM_DEVICE, F_OK) == 0) {
            provider_name = "nsm";
        } else {
            provend_warn("no %s: using the dev attestation provider, whose "
                         "documents no client trusts by default",
                         PROVEND_NSM_DEVICE);
            provider_name = "dev";
        }
    }

    if (strcmp(provider_name, "nsm") == 0) {
        if (o.measure_count || o.pcrs_file) {
            provend_warn("--measure and --pcrs-file are ignored by the nsm provider: the "
                         "enclave measures itself");
        }
        provider = provend_nsm_new(PROVEND_NSM_DEVICE, NULL, err,
                                   sizeof(err));

    } else {
        memset(&dev_cfg, 0, sizeof(dev_cfg));
        dev_cfg.data_dir = o.data_dir;
        dev_cfg.node_id = node_id;
        dev_cfg.measures = o.measures;
        dev_cfg.measure_count = o.measure_count;
        dev_cfg.pcrs_file = o.pcrs_file;
        provider = provend_dev_new(&dev_cfg, err, sizeof(err));
    }

    if (provider == NULL) {
        provend_error("%s provider: %s", provider_name, err);
        goto done;
    }

    /* past the checkpoint, what a chain says is its endpoint's word: in
     * an enclave, a TLS-checked provider's, never the host's */
    if (o.eth_rpc != NULL && strncmp(o.eth_rpc, "https://", 8) != 0
        && (o.eth_tls != NULL ? strcmp(o.eth_tls, "required") == 0
                              : strcmp(provider_name, "nsm") == 0))
    {
        provend_error("--eth-rpc %s: an https:// endpoint is required "
                      "(--eth-tls): a plain one is the host's to answer "
                      "for, events, NFT owners and governance included",
                      o.eth_rpc);
        status = 2;
        goto done;
    }

    /* a Gateway's word, the same: TLS-checked in an enclave */
    if (o.radix_gateway != NULL
        && strncmp(o.radix_gateway, "https://", 8) != 0
        && (o.radix_tls != NULL ? strcmp(o.radix_tls, "required") == 0
                                : strcmp(provider_name, "nsm") == 0))
    {
        provend_error("--radix-gateway %s: an https:// Gateway is required "
                      "(--radix-tls): a plain one is the host's to answer "
                      "for, owner keys, events and NFT holders included",
                      o.radix_gateway);
        status = 2;
        goto done;
    }

    provend_info("node %s, provider %s, %lu signing threads", node_id,
                 provider->name, nthreads);

    /*
     * In an enclave the master key must never reach the disk in plain
     * text: with keyd it is sealed with a key released to this code only;
     * without, the node serves attestation but no storage rather than fall
     * back to a key file the host can read.
     */
    if (o.backup != NULL || o.restore != NULL) {
        status = provend_main_backup(&o, provider);
        goto done;
    }

    if (o.restore_pending != NULL
        && provend_main_restore_pending(&o, provider) != PROVEN_OK)
    {
        goto done;
    }

    enclave_keys = o.master_key != NULL ? strcmp(o.master_key, "enclave") == 0
                                        : strcmp(provider_name, "nsm") == 0;
    if ((o.acme_directory == NULL) != (o.acme_domain == NULL)) {
        provend_error("--acme-directory and --acme-domain go together");
        goto done;
    }
    if (o.acme_directory != NULL && enclave_keys && o.tls_live == NULL) {
        /* DATA/tls/live, the default, is on the disk the host stores */
        provend_error("enclave mode: --tls-live must name a directory of "
                      "the enclave's memory (such as /run/proven/tls): the "
                      "certificate's key is there in clear for nginx");
        goto done;
    }
    if (o.keyd == NULL && enclave_keys && o.cluster_file == NULL) {
        provend_warn("enclave mode without --keyd: storage is disabled, "
                     "kv.* and sql.* answer \"storage_unavailable\"");

    } else {
        if (o.keyd == NULL && enclave_keys) {
            /*
             * Clustered: the data is the cluster's log, sealed with the
             * cluster key admitted peers hand over; this node's copy is
             * made again from the log at each start, so the key of the
             * copy need outlive no start: made here, never written.
             */
            rc = PROVEN_OK;
            if (RAND_bytes(master, sizeof(master)) != 1) {
                rc = PROVEN_ERR;
                snprintf(err, sizeof(err), "no randomness");
            }
            key_in_memory = 1;
            provend_info("enclave mode without --keyd, clustered: the "
                         "cluster key comes from a peer and stays in "
                         "memory, as does this start's key of its copy");
        } else if (o.keyd != NULL) {
            rc = provend_main_keyd_config(&o, &keyd, err, sizeof(err));
            if (rc == PROVEN_OK) {
                rc = provend_master_from_keyd(&keyd, provider, o.data_dir,
                                              master, master_sealed, err,
                                              sizeof(err));
            }
        } else {
            rc = provend_keys_load_master(o.data_dir, master, err,
                                          sizeof(err));
        }
        if (rc != PROVEN_OK) {
            provend_error("master key: %s", err);
            goto done;
        }

        /* what seals the cluster key on disk, in enclave mode */
        if (o.keyd != NULL
            && provend_keys_derive(master, "proven-cluster-key-file-v1", 26,
                                   cluster_file_key,
                                   sizeof(cluster_file_key)) != PROVEN_OK)
        {
            OPENSSL_cleanse(master, sizeof(master));
            provend_error("master key: cannot derive");
            goto done;
        }

        memset(&st_cfg, 0, sizeof(st_cfg));
        st_cfg.data_dir = o.data_dir;
        st_cfg.master_key = master;
        st_cfg.kv_max_value = o.kv_max_value;
        st_cfg.kv_memory_max = o.kv_memory_limit;

        if (o.cluster_file == NULL) {
            storage = provend_storage_sqlite_open(&st_cfg, err, sizeof(err));
        } else {
            storage = provend_main_cluster_storage(&st_cfg, err, sizeof(err));
        }
        if (storage == NULL) {
            provend_error("storage: %s", err);
            goto done;
        }
    }

    memset(&srv_cfg, 0, sizeof(srv_cfg));
    srv_cfg.socket_path = socket_path;
    srv_cfg.node_id = node_id;
    srv_cfg.provider = provider;
    srv_cfg.storage = storage;
    srv_cfg.data_dir = o.data_dir;
    srv_cfg.node = o.node;
    srv_cfg.app_memory_mb = (unsigned) o.app_memory;
    srv_cfg.app_sandbox = strcmp(o.app_sandbox, "on") == 0;
    srv_cfg.app_workers = (unsigned) o.app_workers;
    srv_cfg.app_memory_total_mb = (unsigned) o.app_memory_total;
    srv_cfg.app_idle_s = (unsigned) o.app_idle;
    srv_cfg.expose_errors = strcmp(provider_name, "dev") == 0;
    srv_cfg.session_idle_s = (unsigned) o.session_idle;
    srv_cfg.session_life_s = (unsigned) o.session_life;
    srv_cfg.session_max = o.session_max;
    srv_cfg.session_rate = (unsigned) o.session_rate;
    srv_cfg.radix_network = (unsigned) o.radix_network;
    srv_cfg.message_rate = (unsigned) o.message_rate;
    srv_cfg.any_origin = o.session_origins != NULL
                         ? strcmp(o.session_origins, "any") == 0
                         : strcmp(provider_name, "dev") == 0;
    srv_cfg.cluster_file = o.cluster_file;
    srv_cfg.cluster_key_file_key = o.keyd != NULL && storage != NULL
                                   ? cluster_file_key : NULL;
    srv_cfg.cluster_key_in_memory = key_in_memory;
    srv_cfg.tls.directory = o.acme_directory;
    srv_cfg.tls.domain = o.acme_domain != NULL ? o.acme_domain : "";
    srv_cfg.tls.contact = o.acme_contact;
    srv_cfg.tls.ca_file = o.acme_ca;
    srv_cfg.tls.proxy = o.acme_proxy;
    srv_cfg.tls.live_dir = o.tls_live;
    srv_cfg.radix.gateway = o.radix_gateway;
    srv_cfg.radix.proxy = o.radix_proxy;
    srv_cfg.radix.poll_ms = (unsigned) o.radix_poll_ms;
    srv_cfg.chains.rpc = o.eth_rpc;
    srv_cfg.chains.checkpoint = o.eth_checkpoint;
    srv_cfg.chains.proxy = o.eth_proxy;
    srv_cfg.chains.poll_ms = (unsigned) o.eth_poll_ms;
    srv_cfg.chains.chain_id = o.eth_chain_id;
    srv_cfg.chains.governance = o.governance;
    srv_cfg.chains.governance_confirmations =
        (unsigned) o.governance_confirmations;
    srv_cfg.chains.governance_every_s = (unsigned) o.governance_every;
    /* ACME's keys are kept sealed with a master key that outlives a
     * start: not the one a clustered enclave without keyd makes */
    srv_cfg.tls.master = storage != NULL && !key_in_memory ? master : NULL;
    srv_cfg.nats_server = o.nats_server;
    /* kept for backups only where keyd's key seals it (not a key file) */
    srv_cfg.backup_master = o.keyd != NULL && storage != NULL ? master : NULL;
    srv_cfg.backup_keyd = o.keyd != NULL ? &keyd : NULL;
    srv_cfg.backup_sealed = master_sealed;

    if (o.runtime_dir != NULL
        && asprintf(&runtime_bin, "%s/bin/proven-runtime.mjs", o.runtime_dir)
           != -1)
    {
        if (access(runtime_bin, R_OK) == 0) {
            srv_cfg.runtime_dir = o.runtime_dir;
        } else {
            provend_warn("no %s: applications are disabled (--runtime "
                         "DIR)", runtime_bin);
        }
        free(runtime_bin);
    }

    if (provend_server_run(&srv_cfg, err, sizeof(err)) != PROVEN_OK) {
        provend_error("%s", err);
        goto done;
    }

    status = 0;

done:

    /* After the server: every storage answer has been delivered. */
    provend_storage_close(storage);
    if (o.cluster_file != NULL) {
        /* libnats' own threads, stopped before the process ends */
        nats_CloseAndWait(5000);
    }
    provend_provider_destroy(provider);
    OPENSSL_cleanse(master, sizeof(master));
    OPENSSL_cleanse(cluster_file_key, sizeof(cluster_file_key));
    free(sock_buf);
    return status;
}
