/* provend's options: the table, its parser and its usage text. */

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"


/* Where `make` left proven-runtime; --runtime overrides it. */
#ifndef PROVEND_RUNTIME_DIR
#define PROVEND_RUNTIME_DIR  "runtime"
#endif

#define PROVEND_KV_VALUE_LIMIT  (8ul * 1024 * 1024)   /* fits in a frame */

typedef enum {
    PROVEND_OPT_TEXT = 0,
    PROVEND_OPT_PATH_OR_NONE,     /* "none": NULL */
    PROVEND_OPT_CHOICE,           /* one of choices, "a|b|c" */
    PROVEND_OPT_UINT,             /* min..max */
    PROVEND_OPT_MEASURE           /* N:PATH, repeated */
} provend_opt_type_t;

typedef struct {
    const char          *name;
    const char          *arg;         /* in the usage text */
    provend_opt_type_t   type;
    size_t               offset;      /* into provend_options_t */
    unsigned long        min;
    unsigned long        max;
    const char          *choices;
    const char          *deflt;       /* NULL: none */
    const char          *help;
} provend_opt_t;

#define provend_opt_at(o, opt)  ((char *) (o) + (opt)->offset)
#define PROVEND_OFF(field)      offsetof(provend_options_t, field)

static const provend_opt_t  provend_opts[] = {

    { "data", "DIR", PROVEND_OPT_TEXT, PROVEND_OFF(data_dir), 0, 0, NULL,
      "./var", "state directory" },

    { "socket", "PATH", PROVEND_OPT_TEXT, PROVEND_OFF(socket_path), 0, 0,
      NULL, NULL, "unix socket (default DATA/provend.sock)" },

    { "provider", "NAME", PROVEND_OPT_CHOICE, PROVEND_OFF(provider), 0, 0,
      "auto|nsm|dev", "auto",
      "attestation provider (auto: nsm when /dev/nsm exists, else dev)" },

    { "log-level", "LEVEL", PROVEND_OPT_CHOICE, PROVEND_OFF(log_level), 0, 0,
      "debug|info|warn|error", "info", "the least level logged" },

    { "measure", "N:PATH", PROVEND_OPT_MEASURE, 0, 1, 15, NULL, NULL,
      "dev provider: extend PCR N (1..15) with the SHA384 of PATH, in the "
      "order given; repeated" },

    { "threads", "N", PROVEND_OPT_UINT, PROVEND_OFF(threads), 1, 1024, NULL,
      NULL, "signing threads (default: online CPUs)" },

    { "kv-max-value", "BYTES", PROVEND_OPT_UINT, PROVEND_OFF(kv_max_value), 1,
      PROVEND_KV_VALUE_LIMIT, NULL, "1048576", "largest KV value" },

    { "storage-heap-limit", "BYTES", PROVEND_OPT_UINT,
      PROVEND_OFF(storage_heap_limit), 64ul * 1024 * 1024, LONG_MAX, NULL,
      NULL, "memory SQLite may use (default 1073741824); a statement "
      "needing more fails" },

    { "kv-memory-limit", "BYTES", PROVEND_OPT_UINT,
      PROVEND_OFF(kv_memory_limit), 1024ul * 1024, LONG_MAX, NULL, NULL,
      "memory for every KV key and value (default 1073741824); a set "
      "beyond it fails" },

    { "runtime", "DIR|none", PROVEND_OPT_PATH_OR_NONE,
      PROVEND_OFF(runtime_dir), 0, 0, NULL, PROVEND_RUNTIME_DIR,
      "proven-runtime for applications; none: no applications" },

    { "node", "PATH", PROVEND_OPT_TEXT, PROVEND_OFF(node), 0, 0, NULL, NULL,
      "the Node.js that runs it (default: node from PATH)" },

    { "app-memory", "MB", PROVEND_OPT_UINT, PROVEND_OFF(app_memory), 16,
      16384, NULL, "128", "heap of each app worker" },

    { "app-memory-total", "MB", PROVEND_OPT_UINT,
      PROVEND_OFF(app_memory_total), 16, 1048576, NULL, "4096",
      "the memory all app workers may take, together: a worker that would "
      "pass it idles the app called least recently first" },

    { "app-sandbox", "on|off", PROVEND_OPT_CHOICE, PROVEND_OFF(app_sandbox),
      0, 0, "on|off", "on", "workers in their own network namespace, with a "
      "seccomp filter and rlimits" },

    { "app-workers", "N", PROVEND_OPT_UINT, PROVEND_OFF(app_workers), 1, 16,
      NULL, NULL, "most worker processes per app (default: online CPUs, at "
      "most 4); more start under load" },

    { "app-idle", "SECONDS", PROVEND_OPT_UINT, PROVEND_OFF(app_idle), 0,
      86400, NULL, "600", "stop an app's workers after so long without a "
      "call (0: never); the next request starts one.  Apps with schedules "
      "never idle" },

    { "session-idle", "SECONDS", PROVEND_OPT_UINT, PROVEND_OFF(session_idle),
      1, 30 * 86400, NULL, NULL, "a session unused so long is gone (default "
      "1800)" },

    { "session-life", "SECONDS", PROVEND_OPT_UINT, PROVEND_OFF(session_life),
      1, 30 * 86400, NULL, NULL, "and any session this old (default 86400)" },

    { "session-max", "N", PROVEND_OPT_UINT, PROVEND_OFF(session_max), 1,
      10000000, NULL, NULL, "sessions open at once (default 100000)" },

    { "radix-network", "ID", PROVEND_OPT_UINT, PROVEND_OFF(radix_network), 1,
      255, NULL, "1", "the Radix network whose accounts sessions link "
      "(LinkRadix: 1 mainnet, 2 stokenet)" },

    { "session-rate", "N", PROVEND_OPT_UINT, PROVEND_OFF(session_rate), 1,
      1000000, NULL, NULL, "new sessions a second on this node, in bursts "
      "of twice that (default 500): each costs a key and a signature" },

    { "message-rate", "N", PROVEND_OPT_UINT, PROVEND_OFF(message_rate), 1,
      1000000, NULL, NULL, "messages a second of one session, WebSocket "
      "frames included, in bursts of twice that (default 200)" },

    { "session-origins", "any|listed", PROVEND_OPT_CHOICE,
      PROVEND_OFF(session_origins), 0, 0, "any|listed", NULL,
      "which pages may open an app's session (default: any with the dev "
      "provider, else listed)" },

    { "cluster", "FILE", PROVEND_OPT_TEXT, PROVEND_OFF(cluster_file), 0, 0,
      NULL, NULL, "join the cluster the file describes (see "
      "daemon/cluster/cluster.h): runs nats-server, admits peers by their "
      "attestation" },

    { "cluster-if", "FILE", PROVEND_OPT_TEXT, PROVEND_OFF(cluster_if), 0, 0,
      NULL, NULL, "as --cluster when FILE is there, alone when it is not "
      "(an enclave's: its agent writes FILE when the host's initialize "
      "names peers)" },

    { "nats-server", "PATH", PROVEND_OPT_TEXT, PROVEND_OFF(nats_server), 0, 0,
      NULL, NULL, "the nats-server to run (default: from PATH)" },

    { "pcrs-file", "PATH", PROVEND_OPT_TEXT, PROVEND_OFF(pcrs_file), 0, 0,
      NULL, NULL, "dev provider: PCR0-2 are the 3 x 48 bytes of PATH (an "
      "image's, handed in by whoever booted it: proven-host under qemu) "
      "instead of its own measurements" },

    { "keyd", "ADDR", PROVEND_OPT_TEXT, PROVEND_OFF(keyd), 0, 0, NULL, NULL,
      "enclave mode's storage: the master key is sealed with a key keyd at "
      "ADDR (vsock:CID:PORT, unix:PATH, tcp:HOST:PORT) releases to this "
      "code only (needs --keyd-identity)" },

    { "master-key", "file|enclave", PROVEND_OPT_CHOICE,
      PROVEND_OFF(master_key), 0, 0, "file|enclave", NULL,
      "where the master key comes from (default: enclave with the nsm "
      "provider, else file): file, DATA/keys/master.key; enclave, never a "
      "file of its own: from keyd (--keyd), or clustered, made at each "
      "start for the node's copy of the cluster's data (sealed with the "
      "cluster key, which admitted peers hand over), else no storage" },

    { "acme-directory", "URL", PROVEND_OPT_TEXT, PROVEND_OFF(acme_directory),
      0, 0, NULL, NULL, "keep a certificate for --acme-domain from this ACME "
      "CA (its directory URL), by TLS-ALPN-01: see daemon/tls/tls.h" },

    { "acme-domain", "NAME", PROVEND_OPT_TEXT, PROVEND_OFF(acme_domain), 0,
      0, NULL, NULL, "the DNS name of the node's certificate; @FILE: the "
      "name in FILE (none there: no certificate ordered)" },

    { "acme-contact", "URI", PROVEND_OPT_TEXT, PROVEND_OFF(acme_contact), 0,
      0, NULL, NULL, "the ACME account's contact (mailto:...)" },

    { "acme-ca", "FILE", PROVEND_OPT_TEXT, PROVEND_OFF(acme_ca), 0, 0, NULL,
      NULL, "the CA the ACME server's HTTPS certificate chains to (default: "
      "the system's)" },

    { "acme-proxy", "URL", PROVEND_OPT_TEXT, PROVEND_OFF(acme_proxy), 0, 0,
      NULL, NULL, "an HTTP proxy to the ACME server (an enclave's egress)" },

    { "tls-live", "DIR", PROVEND_OPT_TEXT, PROVEND_OFF(tls_live), 0, 0, NULL,
      NULL, "where nginx reads the certificate and its key (default "
      "DATA/tls/live; in an enclave a directory of its memory)" },

    { "eth-rpc", "URL", PROVEND_OPT_TEXT, PROVEND_OFF(eth_rpc), 0, 0, NULL,
      NULL, "an Ethereum JSON-RPC endpoint: eth.account reads, each proved "
      "against --eth-checkpoint (see daemon/chains/chains.h)" },

    { "eth-checkpoint", "HASH", PROVEND_OPT_TEXT, PROVEND_OFF(eth_checkpoint),
      0, 0, NULL, NULL, "the block hash reads are proved against (0x and 64 "
      "hex digits)" },

    { "eth-proxy", "URL", PROVEND_OPT_TEXT, PROVEND_OFF(eth_proxy), 0, 0,
      NULL, NULL, "an HTTP proxy to the endpoint (an enclave's egress)" },

    { "eth-tls", "required|optional", PROVEND_OPT_CHOICE, PROVEND_OFF(eth_tls),
      0, 0, "required|optional", NULL, "whether --eth-rpc must be https:// "
      "(default: required in an enclave, where a plain endpoint is the "
      "host's to answer for; optional with the dev provider)" },

    { "eth-chain-id", "N", PROVEND_OPT_UINT, PROVEND_OFF(eth_chain_id), 1,
      ULONG_MAX, NULL, NULL, "the chain's id (1: Ethereum): an endpoint that "
      "says another is not followed; NFT scopes are named by it" },

    { "eth-poll-ms", "MS", PROVEND_OPT_UINT, PROVEND_OFF(eth_poll_ms), 100,
      600000, NULL, NULL, "how often the endpoint is asked for new blocks, "
      "for apps' runOnEthereumEvent handlers (default 2000)" },

    { "radix-gateway", "URL", PROVEND_OPT_TEXT, PROVEND_OFF(radix_gateway),
      0, 0, NULL, NULL, "a Radix Gateway (its API's base URL): accounts' "
      "owner keys for LinkRadix, apps' runOnRadixEvent handlers and Radix "
      "NFT scopes (see daemon/chains/radix.h)" },

    { "radix-proxy", "URL", PROVEND_OPT_TEXT, PROVEND_OFF(radix_proxy), 0, 0,
      NULL, NULL, "an HTTP proxy to the Gateway (an enclave's egress)" },

    { "radix-tls", "required|optional", PROVEND_OPT_CHOICE,
      PROVEND_OFF(radix_tls), 0, 0, "required|optional", NULL,
      "whether --radix-gateway must be https:// (default: required in an "
      "enclave; optional with the dev provider)" },

    { "radix-poll-ms", "MS", PROVEND_OPT_UINT, PROVEND_OFF(radix_poll_ms),
      100, 600000, NULL, NULL, "how often the Gateway is asked for new "
      "transactions, for runOnRadixEvent handlers (default 2000)" },

    { "governance", "ADDRESS", PROVEND_OPT_TEXT, PROVEND_OFF(governance), 0,
      0, NULL, NULL, "a governance contract (0x and 40 hex digits): cluster "
      "peers are admitted when it allows their PCR0-2, read with proofs" },

    { "governance-confirmations", "N", PROVEND_OPT_UINT,
      PROVEND_OFF(governance_confirmations), 0, 128, NULL, "12",
      "how deep a change to it must be before it counts" },

    { "governance-every", "SECONDS", PROVEND_OPT_UINT,
      PROVEND_OFF(governance_every), 1, 86400, NULL, "60",
      "how often it is read again (a removed measurement's peers dropped)" },

    { "keyd-identity", "HEX", PROVEND_OPT_TEXT, PROVEND_OFF(keyd_identity),
      0, 0, NULL, NULL, "the Ed25519 key keyd signs with (64 hex digits, or "
      "@FILE holding them): an answer signed by any other is refused" },

    { "keyd-key-id", "ID", PROVEND_OPT_TEXT, PROVEND_OFF(keyd_key_id), 0, 0,
      NULL, "master", "which of keyd's keys ([a-z0-9_-], 1..64)" },

    { "keyd-release", "FILE", PROVEND_OPT_TEXT, PROVEND_OFF(keyd_release),
      0, 0, NULL, NULL, "a release of this code's PCRs signed by one of "
      "keyd's release keys (proven keyd sign-release), sent with the ask" },

    { "keyd-wait", "SECONDS", PROVEND_OPT_UINT, PROVEND_OFF(keyd_wait), 0,
      86400, NULL, "0", "how long to keep asking keyd before giving up "
      "(0: for ever)" },

    { "backup", "FILE", PROVEND_OPT_TEXT, PROVEND_OFF(backup), 0, 0, NULL,
      NULL, "with the node stopped: write a sealed backup of DATA/storage "
      "to FILE (new), then exit; needs --keyd" },

    { "restore", "FILE", PROVEND_OPT_TEXT, PROVEND_OFF(restore), 0, 0, NULL,
      NULL, "restore a sealed backup into DATA (without storage yet), then "
      "exit: only with the key keyd releases to this code; needs --keyd" },

    { "restore-pending", "FILE", PROVEND_OPT_TEXT,
      PROVEND_OFF(restore_pending), 0, 0, NULL, NULL, "if FILE exists (a "
      "backup handed in before the start: proven-host run --restore), "
      "restore it as --restore does, remove it, then run; a backup that "
      "does not restore stops provend" },

    { NULL, NULL, 0, 0, 0, 0, NULL, NULL, NULL }
};


static int
provend_opt_uint(const char *s, unsigned long min, unsigned long max,
    unsigned long *out)
{
    char           *end;
    unsigned long   v;

    if (*s < '0' || *s > '9') {
        return -1;
    }

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return -1;
    }

    *out = v;
    return 0;
}


static int
provend_opt_choice(const char *choices, const char *value)
{
    size_t       len;
    const char  *p, *bar;

    len = strlen(value);

    for (p = choices; *p != '\0'; p = *bar ? bar + 1 : bar) {
        bar = strchr(p, '|');
        if (bar == NULL) {
            bar = p + strlen(p);
        }

        if ((size_t) (bar - p) == len && memcmp(p, value, len) == 0) {
            return 0;
        }
    }

    return -1;
}


/* One option's value into o; 0, or -1 said on stderr. */
static int
provend_opt_set(provend_options_t *o, const provend_opt_t *opt, char *value)
{
    char           *colon;
    unsigned long   pcr;

    switch (opt->type) {

    case PROVEND_OPT_TEXT:
        *(const char **) provend_opt_at(o, opt) = value;
        return 0;

    case PROVEND_OPT_PATH_OR_NONE:
        *(const char **) provend_opt_at(o, opt) =
            strcmp(value, "none") == 0 ? NULL : value;
        return 0;

    case PROVEND_OPT_CHOICE:
        if (provend_opt_choice(opt->choices, value) != 0) {
            fprintf(stderr, "provend: --%s must be one of %s, not \"%s\"\n",
                    opt->name, opt->choices, value);
            return -1;
        }

        *(const char **) provend_opt_at(o, opt) = value;
        return 0;

    case PROVEND_OPT_UINT:
        if (provend_opt_uint(value, opt->min, opt->max,
                             (unsigned long *) provend_opt_at(o, opt))
            != 0)
        {
            fprintf(stderr, "provend: --%s must be %lu..%lu (%s)\n",
                    opt->name, opt->min, opt->max, opt->arg);
            return -1;
        }

        return 0;

    case PROVEND_OPT_MEASURE:
        colon = strchr(value, ':');
        if (colon == NULL || colon[1] == '\0') {
            fprintf(stderr, "provend: --%s wants N:PATH\n", opt->name);
            return -1;
        }

        *colon = '\0';
        if (provend_opt_uint(value, opt->min, opt->max, &pcr) != 0) {
            fprintf(stderr, "provend: --%s PCR must be %lu..%lu\n",
                    opt->name, opt->min, opt->max);
            return -1;
        }

        if (o->measure_count == PROVEND_MEASURE_MAX) {
            fprintf(stderr, "provend: at most %d --%s\n",
                    PROVEND_MEASURE_MAX, opt->name);
            return -1;
        }

        o->measures[o->measure_count].index = (uint32_t) pcr;
        o->measures[o->measure_count].path = colon + 1;
        o->measure_count++;
        return 0;
    }

    return -1;
}


int
provend_options_parse(provend_options_t *o, int argc, char **argv)
{
    int                  i;
    char                *arg, *value, *eq;
    size_t               len;
    const provend_opt_t  *opt;

    memset(o, 0, sizeof(*o));

    for (opt = provend_opts; opt->name != NULL; opt++) {
        /* the defaults are the table's own text: they cannot fail */
        if (opt->deflt != NULL
            && provend_opt_set(o, opt, (char *) opt->deflt) != 0)
        {
            return PROVEND_OPTIONS_ERR;
        }
    }

    for (i = 1; i < argc; i++) {
        arg = argv[i];

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            return PROVEND_OPTIONS_HELP;
        }

        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            fprintf(stderr, "provend: unexpected argument \"%s\"\n", arg);
            return PROVEND_OPTIONS_ERR;
        }

        arg += 2;
        eq = strchr(arg, '=');
        len = eq != NULL ? (size_t) (eq - arg) : strlen(arg);

        for (opt = provend_opts; opt->name != NULL; opt++) {
            if (strlen(opt->name) == len
                && memcmp(opt->name, arg, len) == 0)
            {
                break;
            }
        }

        if (opt->name == NULL) {
            fprintf(stderr, "provend: unknown option \"--%.*s\"\n",
                    (int) len, arg);
            return PROVEND_OPTIONS_ERR;
        }

        if (eq != NULL) {
            value = eq + 1;

        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            value = argv[++i];

        } else {
            fprintf(stderr, "provend: --%s wants %s\n", opt->name, opt->arg);
            return PROVEND_OPTIONS_ERR;
        }

        if (provend_opt_set(o, opt, value) != 0) {
            return PROVEND_OPTIONS_ERR;
        }
    }

    return PROVEND_OPTIONS_OK;
}


/* text from column col on, folded at 78 columns under its first line */
static void
provend_usage_fold(FILE *out, const char *text, size_t col)
{
    size_t       len, indent;
    const char  *p, *space, *cut;

    p = text;
    indent = col;

    while (*p != '\0') {
        cut = NULL;
        for (space = p; *space != '\0'; space++) {
            if (*space == ' ' && col + (size_t) (space - p) <= 78) {
                cut = space;
            }
        }

        len = strlen(p);
        if (col + len <= 78 || cut == NULL) {
            fprintf(out, "%s\n", p);
            return;
        }

        fprintf(out, "%.*s\n%*s", (int) (cut - p), p, (int) indent, "");
        col = indent;
        p = cut + 1;
        while (*p == ' ') {
            p++;
        }
    }

    fprintf(out, "\n");
}


void
provend_options_usage(FILE *out)
{
    int                  n;
    char                 help[512];
    size_t               col;
    const provend_opt_t  *opt;

    fprintf(out, "usage: provend [options]\n"
                 "       provend --sandbox-exec -- PROGRAM ARGS..."
                 "   (around app workers)\n"
                 "options:\n");

    for (opt = provend_opts; opt->name != NULL; opt++) {
        n = fprintf(out, "  --%s %s", opt->name, opt->arg);
        col = n > 0 ? (size_t) n : 0;

        if (col < 28) {
            fprintf(out, "%*s", (int) (28 - col), "");
        } else {
            fprintf(out, "\n%28s", "");
        }

        col = 28;

        if (opt->deflt != NULL) {
            snprintf(help, sizeof(help), "%s (default %s)", opt->help,
                     opt->deflt);
            provend_usage_fold(out, help, col);

        } else {
            provend_usage_fold(out, opt->help, col);
        }
    }
}
