/*
 * provend: the Proven Node daemon.
 *
 *   provend [--data DIR] [--socket PATH] [--provider auto|nsm|dev]
 *           [--log-level debug|info|warn|error] [--measure N:PATH]...
 *           [--threads N] [--kv-max-value BYTES]
 *           [--storage-heap-limit BYTES] [--kv-memory-limit BYTES]
 *           [--runtime DIR|none] [--node PATH] [--app-memory MB]
 *           [--app-sandbox on|off] [--app-workers N] [--app-idle SECONDS]
 *           [--session-idle SECONDS] [--session-life SECONDS]
 *           [--session-max N] [--session-origins any|listed]
 *           [--cluster FILE] [--nats-server PATH]
 *   provend --sandbox-exec -- PROGRAM ARGS...   (around app workers)
 */

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include <curl/curl.h>
#include <nats/nats.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <sqlite3.h>

#include "cluster.h"
#include "keys.h"
#include "log.h"
#include "provider.h"
#include "sandbox.h"
#include "server.h"
#include "util.h"


#define PROVEND_MEASURE_MAX  64
#define PROVEND_THREADS_MAX  1024
#define PROVEND_KV_VALUE_MAX (8ul * 1024 * 1024)   /* fits in a frame */
#define PROVEND_HEAP_MIN     (64ul * 1024 * 1024)  /* room for 8 MiB values */
#define PROVEND_KV_MEMORY_MIN (1024ul * 1024)

/* Where `make` left proven-runtime; --runtime overrides it. */
#ifndef PROVEND_RUNTIME_DIR
#define PROVEND_RUNTIME_DIR  "runtime"
#endif


static void
provend_usage(FILE *out)
{
    fprintf(out,
        "usage: provend [--data DIR] [--socket PATH]"
        " [--provider auto|nsm|dev]\n"
        "               [--log-level debug|info|warn|error]"
        " [--measure N:PATH]...\n"
        "               [--threads N] [--kv-max-value BYTES]\n"
        "               [--storage-heap-limit BYTES]"
        " [--kv-memory-limit BYTES]\n"
        "               [--runtime DIR|none] [--node PATH]"
        " [--app-memory MB]\n"
        "               [--app-sandbox on|off] [--app-workers N]\n"
        "               [--app-idle SECONDS] [--session-idle SECONDS]\n"
        "               [--session-life SECONDS] [--session-max N]\n"
        "               [--session-origins any|listed]\n"
        "               [--cluster FILE] [--nats-server PATH]\n"
        "  --data DIR        state directory (default ./var)\n"
        "  --socket PATH     unix socket (default DATA/provend.sock)\n"
        "  --provider NAME   attestation provider (default auto: nsm when\n"
        "                    /dev/nsm exists, else dev)\n"
        "  --measure N:PATH  dev provider: extend PCR N (1..15) with the\n"
        "                    SHA384 of PATH, in order given\n"
        "  --threads N       signing threads (default: online CPUs)\n"
        "  --kv-max-value BYTES  largest KV value (default 1048576)\n"
        "  --storage-heap-limit BYTES  memory SQLite may use (default\n"
        "                    1073741824); a statement needing more fails\n"
        "  --kv-memory-limit BYTES  memory for every KV key and value\n"
        "                    (default 1073741824); a set beyond it fails\n"
        "  --runtime DIR     proven-runtime for applications (default\n"
        "                    " PROVEND_RUNTIME_DIR "); none: no apps\n"
        "  --node PATH       the Node.js that runs it (default: node)\n"
        "  --app-memory MB   heap of each app worker (default 128)\n"
        "  --app-sandbox on|off  workers in their own network namespace,\n"
        "                    with a seccomp filter and rlimits (default on)\n"
        "  --app-workers N   most worker processes per app (1..16, default:\n"
        "                    online CPUs, at most 4); more start under load\n"
        "  --app-idle SECONDS  stop an app's workers after so long without a\n"
        "                    call (default 600; 0: never); the next request\n"
        "                    starts one.  Apps with schedules never idle\n"
        "  --session-idle SECONDS  a session unused so long is gone\n"
        "                    (default 1800)\n"
        "  --session-life SECONDS  and any session this old (default\n"
        "                    86400)\n"
        "  --session-max N   sessions open at once (default 100000)\n"
        "  --session-origins any|listed  which pages may open an app's\n"
        "                    session (default: any with the dev provider,\n"
        "                    else listed)\n"
        "  --cluster FILE    join the cluster the file describes (see\n"
        "                    daemon/cluster.h): runs nats-server, admits\n"
        "                    peers by their attestation\n"
        "  --nats-server PATH  the nats-server to run (default: from PATH)\n");
}


static int
provend_parse_uint(const char *s, unsigned long min, unsigned long max,
    unsigned long *out)
{
    char           *end;
    unsigned long   v;

    if (*s < '0' || *s > '9') {
        return PROVEN_ERR;
    }

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return PROVEN_ERR;
    }

    *out = v;
    return PROVEN_OK;
}


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


int
main(int argc, char **argv)
{
    int                      c, level, status;
    char                     err[PROVEN_ERR_LEN], *colon, *sock_buf;
    char                     node_id[PROVEND_NODE_ID_LEN + 1], threads[16];
    long                     cpus;
    size_t                   measure_count;
    const char              *data_dir, *socket_path, *provider_name;
    const char              *runtime_dir, *node;
    const char              *cluster_file, *nats_server;
    unsigned long            app_memory, app_workers, app_idle;
    unsigned long            session_idle, session_life, session_max;
    int                      any_origin;
    int                      app_sandbox;
    char                    *runtime_bin;
    uint8_t                  master[PROVEND_KEY_LEN];
    unsigned long            value, nthreads, kv_max_value, kv_memory;
    provend_provider_t      *provider;
    provend_measure_t        measures[PROVEND_MEASURE_MAX];
    provend_dev_config_t     dev_cfg;
    provend_server_config_t  srv_cfg;
    provend_storage_t       *storage;
    provend_storage_config_t st_cfg;

    static const struct option  options[] = {
        { "data",      required_argument, NULL, 'd' },
        { "socket",    required_argument, NULL, 's' },
        { "provider",  required_argument, NULL, 'p' },
        { "log-level", required_argument, NULL, 'l' },
        { "measure",   required_argument, NULL, 'm' },
        { "threads",   required_argument, NULL, 't' },
        { "kv-max-value", required_argument, NULL, 'k' },
        { "storage-heap-limit", required_argument, NULL, 'H' },
        { "kv-memory-limit", required_argument, NULL, 'M' },
        { "runtime",   required_argument, NULL, 'r' },
        { "node",      required_argument, NULL, 'n' },
        { "app-memory", required_argument, NULL, 'A' },
        { "app-sandbox", required_argument, NULL, 'S' },
        { "app-workers", required_argument, NULL, 'W' },
        { "app-idle", required_argument, NULL, 'I' },
        { "session-idle", required_argument, NULL, 'i' },
        { "session-life", required_argument, NULL, 'L' },
        { "session-max", required_argument, NULL, 'x' },
        { "session-origins", required_argument, NULL, 'o' },
        { "cluster",   required_argument, NULL, 'C' },
        { "nats-server", required_argument, NULL, 'N' },
        { "help",      no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    data_dir = "./var";
    socket_path = NULL;
    provider_name = "auto";
    measure_count = 0;
    nthreads = 0;
    sock_buf = NULL;
    provider = NULL;
    storage = NULL;
    kv_max_value = PROVEND_KV_VALUE_DEFAULT;
    kv_memory = 0;
    runtime_dir = PROVEND_RUNTIME_DIR;
    node = NULL;
    app_memory = 128;
    app_sandbox = 1;
    app_workers = 0;
    app_idle = 600;
    session_idle = 0;
    session_life = 0;
    session_max = 0;
    any_origin = -1;
    cluster_file = NULL;
    nats_server = NULL;
    status = 1;

    /* provend runs itself this way around each app worker (apps.c) */
    if (argc >= 3 && strcmp(argv[1], "--sandbox-exec") == 0) {
        return provend_sandbox_exec(argc - 2, argv + 2);
    }

    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {

        case 'd':
            data_dir = optarg;
            break;

        case 's':
            socket_path = optarg;
            break;

        case 'p':
            if (strcmp(optarg, "auto") != 0 && strcmp(optarg, "nsm") != 0
                && strcmp(optarg, "dev") != 0)
            {
                fprintf(stderr, "provend: unknown provider \"%s\"\n",
                        optarg);
                return 2;
            }
            provider_name = optarg;
            break;

        case 'l':
            level = provend_log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "provend: unknown log level \"%s\"\n",
                        optarg);
                return 2;
            }
            provend_log_set_level((provend_log_level_t) level);
            break;

        case 'm':
            colon = strchr(optarg, ':');
            if (colon == NULL || colon[1] == '\0') {
                fprintf(stderr, "provend: --measure wants N:PATH\n");
                return 2;
            }

            *colon = '\0';
            if (provend_parse_uint(optarg, 1, PROVEND_PCR_COUNT - 1, &value)
                != PROVEN_OK)
            {
                fprintf(stderr, "provend: --measure PCR must be 1..%d\n",
                        PROVEND_PCR_COUNT - 1);
                return 2;
            }

            if (measure_count == PROVEND_MEASURE_MAX) {
                fprintf(stderr, "provend: at most %d --measure\n",
                        PROVEND_MEASURE_MAX);
                return 2;
            }

            measures[measure_count].index = (uint32_t) value;
            measures[measure_count].path = colon + 1;
            measure_count++;
            break;

        case 't':
            if (provend_parse_uint(optarg, 1, PROVEND_THREADS_MAX, &nthreads)
                != PROVEN_OK)
            {
                fprintf(stderr, "provend: --threads must be 1..%d\n",
                        PROVEND_THREADS_MAX);
                return 2;
            }
            break;

        case 'k':
            if (provend_parse_uint(optarg, 1, PROVEND_KV_VALUE_MAX,
                                   &kv_max_value) != PROVEN_OK)
            {
                fprintf(stderr, "provend: --kv-max-value must be 1..%lu\n",
                        PROVEND_KV_VALUE_MAX);
                return 2;
            }
            break;

        case 'H':
            if (provend_parse_uint(optarg, PROVEND_HEAP_MIN, LONG_MAX,
                                   &value) != PROVEN_OK)
            {
                fprintf(stderr, "provend: --storage-heap-limit must be at "
                        "least %lu\n", PROVEND_HEAP_MIN);
                return 2;
            }
            /* Process wide; the storage backend keeps a limit set first. */
            (void) sqlite3_hard_heap_limit64((sqlite3_int64) value);
            break;

        case 'M':
            if (provend_parse_uint(optarg, PROVEND_KV_MEMORY_MIN, LONG_MAX,
                                   &kv_memory) != PROVEN_OK)
            {
                fprintf(stderr, "provend: --kv-memory-limit must be at "
                        "least %lu\n", PROVEND_KV_MEMORY_MIN);
                return 2;
            }
            break;

        case 'r':
            runtime_dir = strcmp(optarg, "none") == 0 ? NULL : optarg;
            break;

        case 'n':
            node = optarg;
            break;

        case 'A':
            if (provend_parse_uint(optarg, 16, 16384, &app_memory)
                != PROVEN_OK)
            {
                fprintf(stderr, "provend: --app-memory must be 16..16384 "
                        "(MB)\n");
                return 2;
            }
            break;

        case 'S':
            if (strcmp(optarg, "on") != 0 && strcmp(optarg, "off") != 0) {
                fprintf(stderr, "provend: --app-sandbox is on or off\n");
                return 2;
            }
            app_sandbox = strcmp(optarg, "on") == 0;
            break;

        case 'W':
            if (provend_parse_uint(optarg, 1, 16, &app_workers) != PROVEN_OK)
            {
                fprintf(stderr, "provend: --app-workers must be 1..16\n");
                return 2;
            }
            break;

        case 'I':
            if (provend_parse_uint(optarg, 0, 86400, &app_idle) != PROVEN_OK)
            {
                fprintf(stderr, "provend: --app-idle must be 0..86400 "
                        "(seconds)\n");
                return 2;
            }
            break;

        case 'i':
        case 'L':
            if (provend_parse_uint(optarg, 1, 30 * 86400, &value)
                != PROVEN_OK)
            {
                fprintf(stderr, "provend: --session-%s must be 1..2592000 "
                        "(seconds)\n", c == 'i' ? "idle" : "life");
                return 2;
            }
            *(c == 'i' ? &session_idle : &session_life) = value;
            break;

        case 'x':
            if (provend_parse_uint(optarg, 1, 10000000, &session_max)
                != PROVEN_OK)
            {
                fprintf(stderr, "provend: --session-max must be "
                        "1..10000000\n");
                return 2;
            }
            break;

        case 'o':
            if (strcmp(optarg, "any") != 0 && strcmp(optarg, "listed") != 0)
            {
                fprintf(stderr, "provend: --session-origins must be any or "
                        "listed\n");
                return 2;
            }
            any_origin = strcmp(optarg, "any") == 0;
            break;

        case 'C':
            cluster_file = optarg;
            break;

        case 'N':
            nats_server = optarg;
            break;

        case 'h':
            provend_usage(stdout);
            return 0;

        default:
            provend_usage(stderr);
            return 2;
        }
    }

    /* before any thread: libcurl's global set-up is not thread-safe */
    if (cluster_file != NULL && curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "provend: cannot set up libcurl\n");
        return 1;
    }

    if (optind != argc) {
        provend_usage(stderr);
        return 2;
    }

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

    if (provend_mkdirs(data_dir, 0700, err, sizeof(err)) != PROVEN_OK
        || provend_node_id(data_dir, node_id, err,
                           sizeof(err)) != PROVEN_OK)
    {
        provend_error("%s", err);
        return 1;
    }

    if (socket_path == NULL) {
        if (asprintf(&sock_buf, "%s/provend.sock", data_dir) == -1) {
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
        if (measure_count) {
            provend_warn("--measure is ignored by the nsm provider: the "
                         "enclave measures itself");
        }
        provider = provend_nsm_new(PROVEND_NSM_DEVICE, NULL, err,
                                   sizeof(err));

    } else {
        memset(&dev_cfg, 0, sizeof(dev_cfg));
        dev_cfg.data_dir = data_dir;
        dev_cfg.node_id = node_id;
        dev_cfg.measures = measures;
        dev_cfg.measure_count = measure_count;
        provider = provend_dev_new(&dev_cfg, err, sizeof(err));
    }

    if (provider == NULL) {
        provend_error("%s provider: %s", provider_name, err);
        goto done;
    }

    provend_info("node %s, provider %s, %lu signing threads", node_id,
                 provider->name, nthreads);

    /*
     * In an enclave the master key must never reach the disk in plain
     * text, and the provider that will hold it (sealed to the enclave's
     * measurements) does not exist yet: serve attestation without storage
     * rather than fall back to a key file the host can read.
     */
    if (strcmp(provider_name, "nsm") == 0) {
        provend_warn("no master key provider in enclave mode yet: storage "
                     "is disabled, kv.* and sql.* answer "
                     "\"storage_unavailable\"");

    } else {
        if (provend_keys_load_master(data_dir, master, err, sizeof(err))
            != PROVEN_OK)
        {
            provend_error("master key: %s", err);
            goto done;
        }

        memset(&st_cfg, 0, sizeof(st_cfg));
        st_cfg.data_dir = data_dir;
        st_cfg.master_key = master;
        st_cfg.kv_max_value = kv_max_value;
        st_cfg.kv_memory_max = kv_memory;

        if (cluster_file == NULL) {
            storage = provend_storage_sqlite_open(&st_cfg, err, sizeof(err));
        } else {
            storage = provend_main_cluster_storage(&st_cfg, err, sizeof(err));
        }
        OPENSSL_cleanse(master, sizeof(master));
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
    srv_cfg.data_dir = data_dir;
    srv_cfg.node = node;
    srv_cfg.app_memory_mb = (unsigned) app_memory;
    srv_cfg.app_sandbox = app_sandbox;
    srv_cfg.app_workers = (unsigned) app_workers;
    srv_cfg.app_idle_s = (unsigned) app_idle;
    srv_cfg.expose_errors = strcmp(provider_name, "dev") == 0;
    srv_cfg.session_idle_s = (unsigned) session_idle;
    srv_cfg.session_life_s = (unsigned) session_life;
    srv_cfg.session_max = session_max;
    srv_cfg.any_origin = any_origin >= 0 ? any_origin
                         : strcmp(provider_name, "dev") == 0;
    srv_cfg.cluster_file = cluster_file;
    srv_cfg.nats_server = nats_server;

    if (runtime_dir != NULL
        && asprintf(&runtime_bin, "%s/bin/proven-runtime.mjs", runtime_dir)
           != -1)
    {
        if (access(runtime_bin, R_OK) == 0) {
            srv_cfg.runtime_dir = runtime_dir;
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
    if (cluster_file != NULL) {
        /* libnats' own threads, stopped before the process ends */
        nats_CloseAndWait(5000);
    }
    provend_provider_destroy(provider);
    free(sock_buf);
    return status;
}
