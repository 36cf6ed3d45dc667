/*
 * proven-host: the host's side of an enclave.  For now one mode:
 *
 *   proven-host run --qemu IMAGE.eif [--http PORT] [--https PORT]
 *                   [--memory MB] [--cpus N]
 *
 * boots the image's own kernel, cmdline and ramdisks (the ramdisks one
 * after the other, as one initramfs) under qemu, forwards 127.0.0.1:PORT
 * to the guest's 80 and 443, and plays the hypervisor's part in
 * measurement: it computes PCR0-2 from the image's sections itself and
 * hands them to the guest as qemu's fw_cfg file opt/proven/pcrs (3 x 48
 * bytes), which provend's dev provider reports.  A host can hand in any
 * PCRs: under qemu documents are the dev provider's, for tests.  On Nitro
 * the hypervisor measures and the NSM signs.
 *
 * The guest's console is this program's standard output.  SIGINT or
 * SIGTERM asks the guest's init to shut down (a line on its control
 * serial port) and waits for it to power off; a second one, or 60 s
 * (--stop-after), kills qemu, as does proven-host's own end (qemu's
 * parent-death signal).  Exit status: qemu's (0 when the guest powered
 * off).
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proven.h"
#include "image/proven_eif.h"
#include "net/proven_net.h"
#include "backup.h"


#define HOST_STOP_SECONDS   60                  /* the default */
#define HOST_CMDLINE_MAX    4096
#define HOST_MEMORY_MAX     (1024 * 1024)        /* MB */
#define HOST_CPUS_MAX       64
#define HOST_KEYD_GUEST     "10.0.2.100:7000"   /* what the guest dials */
#define HOST_EGRESS_GUEST   "10.0.2.100:7003"
#define HOST_GUEST_HTTPS    5443                /* the guest's relays */
#define HOST_GUEST_HTTP     5080
#define HOST_GUEST_CONTROL  7002                /* its proven-agent */
#define HOST_GUEST_ROUTE    5085                /* NATS routes, to provend's */
#define HOST_PEERS_MAX      16
#define HOST_CONTROL_PORT   8090                /* the default, ours */
#define HOST_ALLOW_MAX      64
#define HOST_INIT_WAIT_S    300                 /* for the agent to answer */
#define HOST_REQUEST_MS     5000
#define HOST_BACKOFF_MAX_S  30                  /* between restarts */
#define HOST_SAFE  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"    \
                   "0123456789._/:+-"


static volatile sig_atomic_t  host_signals;

/* The control channel and the data plane around the guest. */
typedef struct {
    unsigned      control_port;
    const char   *egress;           /* the host's egress allow-list */
    const char   *log;              /* shipped lines: appended here */
    const char   *allow[HOST_ALLOW_MAX];    /* initialize's additions */
    size_t        nallow;
    unsigned      grace;            /* shutdown's, seconds */
    const char   *restore;          /* a backup handed in first */
    const char   *node;             /* initialize's cluster, or NULL */
    unsigned      route_port;       /* ours, to the guest's routes; 0 */
    const char   *peers[HOST_PEERS_MAX];   /* NAME,ATTESTATION,ROUTE */
    size_t        npeers;
    char          control[64];      /* tcp:127.0.0.1:PORT */
} host_channel_t;


static void
host_on_signal(int sig)
{
    (void) sig;
    host_signals++;
}


static void
host_usage(FILE *out)
{
    fprintf(out,
        "usage: proven-host run --qemu IMAGE.eif [--http PORT] [--https PORT]\n"
        "                       [--memory MB] [--cpus N] [--accel tcg|kvm]\n"
        "                       [--stop-after SECONDS] [--qemu-binary PATH]\n"
        "                       [--keyd ADDR] [--restart N]\n"
        "                       [--control-port PORT] [--egress FILE]\n"
        "                       [--allow-extra HOST:PORT]... [--log FILE]\n"
        "                       [--grace SECONDS] [--restore FILE]\n"
        "                       [--node NAME --peer NAME,URL,HOST:PORT...\n"
        "                        [--route PORT]]\n"
        "       proven-host control ADDR status|shutdown [--grace SECONDS]\n"
        "       proven-host control ADDR add_peer NAME URL HOST:PORT\n"
        "       proven-host backup ADDR FILE\n"
        "       proven-host restore ADDR FILE\n"
        "\n"
        "Boots the image under qemu (emulated: TCG, unless --accel kvm) with\n"
        "127.0.0.1:PORT forwarded to the guest's 80 (--http, default 8080)\n"
        "and 443 (--https, default 8443); hands the guest the PCRs it computes\n"
        "from the image (fw_cfg opt/proven/pcrs) and prints them.  Memory and\n"
        "CPUs default to the image's.  Ctrl-C shuts the guest down cleanly;\n"
        "a guest still up --stop-after seconds later (60) is killed, as on a\n"
        "second Ctrl-C.  --keyd ADDR: the guest's connections to\n"
        "tcp:" HOST_KEYD_GUEST " are carried to keyd at ADDR (unix:PATH,\n"
        "tcp:HOST:PORT), one proven-relay each; the guest reaches nothing else.\n"
        "--restart N: a guest that stops without being asked to (a failed\n"
        "enclave) is booted again, up to N times, after 1, 2, 4 ... 30 s.\n"
        "The HTTP and HTTPS ports are proven-relays to the guest's own;\n"
        "127.0.0.1:PORT (--control-port, 8090) reaches its proven-agent:\n"
        "proven-host sends it initialize (--allow-extra: egress additions\n"
        "the image permits), ships its logs (to --log FILE, or stdout), and\n"
        "turns SIGINT/SIGTERM into shutdown (--grace, 10 s).  --egress\n"
        "FILE: the guest's way out, to the destinations FILE lists.\n"
        "--node NAME --peer NAME,URL,HOST:PORT: initialize makes the guest\n"
        "node NAME of the image's cluster, with these peers (their\n"
        "attestation URL and NATS route, each within the image's permitted\n"
        "egress, and on --egress FILE's list); --route PORT: 127.0.0.1:PORT\n"
        "carried to the guest's NATS routes, for its peers.  add_peer: one\n"
        "more peer for a running guest.\n"
        "--restore FILE: a sealed backup handed to the guest before\n"
        "initialize; its provend restores it (with the key keyd releases\n"
        "to the same code only) before it starts.\n"
        "backup ADDR FILE: a running guest's sealed backup, over its control\n"
        "channel, to FILE (new); restore ADDR FILE: hands one to a guest not\n"
        "yet initialized.\n"
        "\n"
        "exit status: qemu's (0 when the guest powered off), 1 failed,\n"
        "2 usage error\n");
}


/* Writes data to path (flags: O_TRUNC or O_APPEND); -1 said on stderr. */
static int
host_put(const char *path, int flags, const void *data, size_t len)
{
    int      fd;
    ssize_t  n;
    size_t   done;

    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0600);
    for (done = 0, n = 0; fd >= 0 && done < len; done += (size_t) n) {
        n = write(fd, (const uint8_t *) data + done, len - done);
        if (n <= 0) {
            break;
        }
    }
    if (fd < 0 || done < len || close(fd) != 0) {
        fprintf(stderr, "proven-host: %s: %s\n", path, strerror(errno));
        if (fd >= 0 && done < len) {
            close(fd);
        }
        return -1;
    }
    return 0;
}


static int
host_write(const char *dir, const char *name, const void *data, size_t len,
    char *path, size_t size)
{
    snprintf(path, size, "%s/%s", dir, name);
    return host_put(path, O_TRUNC, data, len);
}


static void
host_print_pcrs(const proven_eif_t *eif)
{
    char  hex[3][2 * PROVEN_EIF_PCR_LEN + 1];

    proven_hex_encode(eif->pcr0, PROVEN_EIF_PCR_LEN, hex[0]);
    proven_hex_encode(eif->pcr1, PROVEN_EIF_PCR_LEN, hex[1]);
    proven_hex_encode(eif->pcr2, PROVEN_EIF_PCR_LEN, hex[2]);
    printf("{\n  \"Measurements\": {\n"
           "    \"HashAlgorithm\": \"Sha384 { ... }\",\n"
           "    \"PCR0\": \"%s\",\n    \"PCR1\": \"%s\",\n"
           "    \"PCR2\": \"%s\"\n  }\n}\n", hex[0], hex[1], hex[2]);
    fflush(stdout);
}


/*
 * n free ports of 127.0.0.1 (for qemu's hostfwd, on our side only), each
 * held until all are found: closed one by one, the kernel could hand out
 * the same port twice.  -1 when none is free.
 */
static int
host_free_ports(unsigned *ports, int n)
{
    int                 fds[4], i, rc;
    socklen_t           len;
    struct sockaddr_in  sin;

    rc = 0;
    for (i = 0; i < n && i < 4; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(sin);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *) &sin, sizeof(sin))
                          != 0
            || getsockname(fds[i], (struct sockaddr *) &sin, &len) != 0)
        {
            rc = -1;
        }
        ports[i] = ntohs(sin.sin_port);
    }
    while (i-- > 0) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    return rc;
}


/* Our sibling program NAME (built beside us); -1 said on stderr. */
static int
host_sibling(const char *name, char *path, size_t size)
{
    ssize_t  n;

    n = readlink("/proc/self/exe", path, size - 32);
    if (n <= 0) {
        fprintf(stderr, "proven-host: /proc/self/exe: %s\n", strerror(errno));
        return -1;
    }
    path[n] = '\0';
    snprintf(strrchr(path, '/') + 1, 32, "%s", name);
    if (access(path, X_OK) != 0) {
        fprintf(stderr, "proven-host: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}


/* argv in a child that ends with us; its pid, or -1. */
static pid_t
host_spawn(char *const argv[])
{
    pid_t  pid;

    pid = fork();
    if (pid == 0) {
        /* a group of its own, as qemu's: the terminal's Ctrl-C is ours to
         * relay, and the relays carry the guest's last answers */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execv(argv[0], argv);
        fprintf(stderr, "proven-host: %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}


static void
host_reap(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGTERM);
        (void) waitpid(*pid, NULL, 0);
    }
    *pid = 0;
}


/*
 * One request to the guest's agent, {"id", "op", ...args}: its response
 * (free with proven_response_free, and c with proven_conn_close) or
 * PROVEN_ERR and err.
 */
static int
host_request(const char *control, cbor_item_t *req, proven_conn_t *c,
    proven_response_t *res, char *err, size_t errlen)
{
    proven_addr_t  addr;

    if (proven_addr_parse(control, &addr, err, errlen) != PROVEN_OK
        || proven_conn_connect(c, &addr, HOST_REQUEST_MS, 1 << 20, err,
                               errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    proven_conn_deadline(c, HOST_REQUEST_MS);
    if (proven_conn_call(c, req, res, err, errlen) != PROVEN_OK) {
        proven_conn_close(c);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/* An op over the control channel: its response, or NULL said on stderr. */
static int
host_control_op(const char *control, const char *op, unsigned grace,
    proven_response_t *res)
{
    int            rc;
    char           err[PROVEN_ERR_LEN];
    cbor_item_t   *req;
    proven_conn_t  c;

    req = proven_request_new(1, op);
    if (req == NULL
        || (grace > 0 && proven_cbor_map_put(req, "grace",
                                             cbor_build_uint32(grace))
                         != PROVEN_OK))
    {
        return -1;
    }
    rc = host_request(control, req, &c, res, err, sizeof(err));
    cbor_decref(&req);
    if (rc != PROVEN_OK) {
        fprintf(stderr, "proven-host: the control channel %s: %s\n", control,
                err);
        return -1;
    }
    proven_conn_close(&c);
    return 0;
}


/* shutdown {"grace"} over the control channel: 0 when the agent took it. */
static int
host_control_shutdown(const char *control, unsigned grace)
{
    int                rc;
    proven_response_t  res;

    if (host_control_op(control, "shutdown", grace, &res) != 0) {
        return -1;
    }
    rc = res.ok ? 0 : -1;
    if (res.ok) {
        fprintf(stderr, "proven-host: asked the guest to shut down (control "
                "channel, %u s grace)\n", grace);
    } else {
        fprintf(stderr, "proven-host: shutdown refused: %s\n", res.message);
    }
    proven_response_free(&res);
    return rc;
}


/* Prints a batch {"lines", "dropped"} of the guest's logs. */
static void
host_print_logs(FILE *out, const uint8_t *body, size_t len)
{
    size_t        i;
    char          line[4200], err[PROVEN_ERR_LEN];
    uint64_t      dropped;
    cbor_item_t  *batch, *lines;

    batch = proven_cbor_load(body, len, err, sizeof(err));
    lines = batch != NULL ? proven_cbor_map_get(batch, "lines") : NULL;
    if (lines == NULL || !cbor_isa_array(lines)) {
        fprintf(stderr, "proven-host: a log batch that is not one\n");
        if (batch != NULL) {
            cbor_decref(&batch);
        }
        return;
    }
    if (proven_cbor_uint(proven_cbor_map_get(batch, "dropped"), &dropped)
        == PROVEN_OK && dropped > 0)
    {
        fprintf(out, "log: (%llu lines dropped: the host read too slowly)\n",
                (unsigned long long) dropped);
    }
    for (i = 0; i < cbor_array_size(lines); i++) {
        if (proven_cbor_text_into(cbor_array_handle(lines)[i], line,
                                  sizeof(line)) == PROVEN_OK)
        {
            fprintf(out, "log: %s\n", line);
        }
    }
    fflush(out);
    cbor_decref(&batch);
}


/* A peer as --peer and add_peer name it: {name, attestation, route}. */
static cbor_item_t *
host_peer(const char *name, const char *url, const char *route)
{
    cbor_item_t  *peer;

    peer = cbor_new_definite_map(3);
    if (peer == NULL
        || proven_cbor_map_put(peer, "name", cbor_build_string(name))
           != PROVEN_OK
        || proven_cbor_map_put(peer, "attestation", cbor_build_string(url))
           != PROVEN_OK
        || proven_cbor_map_put(peer, "route", cbor_build_string(route))
           != PROVEN_OK)
    {
        if (peer != NULL) {
            cbor_decref(&peer);
        }
        return NULL;
    }
    return peer;
}


/* initialize's config but its allow: the cluster, with --node. */
static cbor_item_t *
host_config(const host_channel_t *ch)
{
    char          buf[1024], *url, *route;
    size_t        i;
    cbor_item_t  *config, *cluster, *peers, *peer;

    config = cbor_new_definite_map(ch->node != NULL ? 2 : 1);
    if (config == NULL || ch->node == NULL) {
        return config;
    }
    cluster = cbor_new_definite_map(2);
    peers = cbor_new_definite_array(ch->npeers);
    if (cluster == NULL || peers == NULL
        || proven_cbor_map_put(config, "cluster", cluster) != PROVEN_OK
        || proven_cbor_map_put(cluster, "node", cbor_build_string(ch->node))
           != PROVEN_OK
        || proven_cbor_map_put(cluster, "peers", peers) != PROVEN_OK)
    {
        cbor_decref(&config);
        return NULL;
    }
    for (i = 0; i < ch->npeers; i++) {
        /* NAME,URL,ROUTE: two commas, as main took it */
        snprintf(buf, sizeof(buf), "%s", ch->peers[i]);
        url = strchr(buf, ',');
        *url++ = '\0';
        route = strrchr(url, ',');
        *route++ = '\0';
        peer = host_peer(buf, url, route);
        if (peer == NULL || !cbor_array_push(peers, cbor_move(peer))) {
            cbor_decref(&config);
            return NULL;
        }
    }
    return config;
}


/*
 * The control channel's host side for one boot, a process of its own:
 * initialize, asked until the agent answers (the guest boots meanwhile),
 * then the log stream, taken again whenever it ends.
 */
static void
host_control_loop(const host_channel_t *ch)
{
    int                tries;
    size_t             i, len;
    char               err[PROVEN_ERR_LEN];
    FILE              *out;
    time_t             deadline;
    cbor_item_t       *req, *config, *allow;
    const uint8_t     *body;
    proven_conn_t      c;
    proven_response_t  res;

    out = ch->log != NULL ? fopen(ch->log, "a") : stdout;
    if (out == NULL) {
        fprintf(stderr, "proven-host: --log %s: %s\n", ch->log,
                strerror(errno));
        _exit(1);
    }
    req = proven_request_new(1, "initialize");
    config = host_config(ch);
    allow = cbor_new_definite_array(ch->nallow);
    for (i = 0; allow != NULL && i < ch->nallow; i++) {
        (void) cbor_array_push(allow,
                               cbor_move(cbor_build_string(ch->allow[i])));
    }
    if (req == NULL || config == NULL || allow == NULL
        || proven_cbor_map_put(config, "allow", allow) != PROVEN_OK
        || proven_cbor_map_put(req, "config", config) != PROVEN_OK)
    {
        fprintf(stderr, "proven-host: out of memory\n");
        _exit(1);
    }
    deadline = time(NULL) + HOST_INIT_WAIT_S;
    for (tries = 0; ch->restore != NULL; tries++) {
        switch (host_restore(ch->control, ch->restore, 1)) {
        case 0:
            break;
        case HOST_HANDED_ALREADY:
            if (tries > 0) {
                break;              /* ours, its answer lost on the way */
            }
            fprintf(stderr, "proven-host: the guest has a backup handed in "
                    "already, not by this boot's proven-host\n");
            _exit(1);
        case HOST_UNREACHABLE:
            if (time(NULL) < deadline) {
                usleep(500 * 1000);
                continue;
            }
            fprintf(stderr, "proven-host: no agent answered in %d s\n",
                    HOST_INIT_WAIT_S);
            _exit(1);
        default:
            fprintf(stderr, "proven-host: the guest is not initialized: it "
                    "powers off\n");
            _exit(1);
        }
        break;
    }
    for ( ; ; ) {
        if (host_request(ch->control, req, &c, &res, err, sizeof(err))
            == PROVEN_OK)
        {
            proven_conn_close(&c);
            if (res.ok || strcmp(res.code, "conflict") == 0) {
                fprintf(stderr, res.ok ? "proven-host: the guest is "
                        "initialized\n" : "proven-host: the guest was "
                        "initialized already, not by this boot's "
                        "proven-host: its --allow-extra may be missing\n");
                proven_response_free(&res);
                break;
            }
            fprintf(stderr, "proven-host: initialize refused: %s\n",
                    res.message);
            _exit(1);
        }
        if (time(NULL) >= deadline) {
            fprintf(stderr, "proven-host: no agent answered in %d s: %s\n",
                    HOST_INIT_WAIT_S, err);
            _exit(1);
        }
        usleep(500 * 1000);
    }
    cbor_decref(&req);

    req = proven_request_new(2, "logs");
    for ( ;; ) {
        if (req != NULL
            && host_request(ch->control, req, &c, &res, err, sizeof(err))
               == PROVEN_OK)
        {
            proven_response_free(&res);
            for ( ;; ) {
                proven_conn_deadline(&c, 24 * 3600 * 1000);
                if (proven_conn_recv(&c, &body, &len, err, sizeof(err))
                    != PROVEN_OK)
                {
                    break;
                }
                host_print_logs(out, body, len);
            }
            proven_conn_close(&c);
        }
        sleep(1);
    }
}


/* Asks the guest's init to shut down over its control serial port. */
static void
host_ask_shutdown(const char *control)
{
    int                 fd;
    struct sockaddr_un  addr;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    if ((size_t) snprintf(addr.sun_path, sizeof(addr.sun_path), "%.100s",
                          control) >= sizeof(addr.sun_path)
        || fd < 0 || connect(fd, (struct sockaddr *) &addr, sizeof(addr)) != 0
        || write(fd, "\nshutdown\n", 10) != 10)
    {
        fprintf(stderr, "proven-host: the guest's control line: %s\n",
                strerror(errno));
    } else {
        fprintf(stderr, "proven-host: asked the guest to shut down\n");
    }
    if (fd >= 0) {
        /* kept open until qemu exits: a closed socket chardev drops input */
        (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
}


/*
 * --keyd ADDR: the guest's connections to HOST_KEYD_GUEST, each handed by
 * qemu (guestfwd) to a proven-relay of its own that carries it to ADDR.
 * Nothing else leaves the guest (restrict=on): this stands in for the
 * vsock port a Nitro host relays to keyd.  Appends the rule to netdev.
 */
static int
host_keyd_rule(const char *keyd, char *netdev, size_t size)
{
    char           self[4096], err[PROVEN_ERR_LEN];
    ssize_t        n;
    proven_addr_t  addr;

    if (host_sibling("proven-relay", self, sizeof(self)) != 0) {
        return -1;
    }
    if (proven_addr_parse(keyd, &addr, err, sizeof(err)) != PROVEN_OK) {
        fprintf(stderr, "proven-host: --keyd %s: %s\n", keyd, err);
        return -1;
    }
    /* qemu splits its options at commas, libslirp the command as a shell
       would: only characters neither reads as anything */
    if (strspn(keyd, HOST_SAFE) != strlen(keyd)
        || strspn(self, HOST_SAFE) != strlen(self))
    {
        fprintf(stderr, "proven-host: --keyd: %s and %s may hold only "
                "[A-Za-z0-9._/:+-]: anything else would not pass through "
                "qemu's options\n", keyd, self);
        return -1;
    }
    n = (ssize_t) strlen(netdev);
    if ((size_t) snprintf(netdev + n, size - (size_t) n,
                          ",guestfwd=tcp:%s-cmd:%s --listen fd:0 --to %s",
                          HOST_KEYD_GUEST, self, keyd)
        >= size - (size_t) n)
    {
        fprintf(stderr, "proven-host: --keyd %s: too long\n", keyd);
        return -1;
    }
    return 0;
}


static int
host_run(const char *image, const char *qemu, const char *accel,
    unsigned http, unsigned https, unsigned long memory, unsigned long cpus,
    unsigned long stop_after, const char *keyd, unsigned long restarts,
    host_channel_t *ch)
{
    char          relay[4096], egress[4096], sock[100], to[64], from[64];
    char          fwd[600];
    unsigned      guest_ports[3];
    pid_t         helpers[4] = { 0, 0, 0, 0 }, ctl;
    int           fd, status, rc, asked, killed, kernels, cmdlines;
    unsigned      backoff;
    unsigned long boots;
    pid_t         got;
    char          dir[64];
    const char   *tmp;
    char          kernel[256], initrd[256], pcrs[256], control[100];
    char          cmdline[HOST_CMDLINE_MAX], err[PROVEN_ERR_LEN];
    char          fwcfg[300], netdev[8192], mem[32], smp[32], chardev[300];
    size_t        i;
    uint8_t      *map, pcr_blob[3 * PROVEN_EIF_PCR_LEN];
    pid_t         pid;
    time_t        deadline;
    struct stat   st;
    proven_eif_t  eif;
    struct sigaction  sa;

    fd = open(image, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "proven-host: %s: %s\n", image, strerror(errno));
        return 1;
    }
    if (st.st_size <= 0) {
        fprintf(stderr, "proven-host: %s: empty\n", image);
        close(fd);
        return 1;
    }
    map = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        fprintf(stderr, "proven-host: %s: %s\n", image, strerror(errno));
        return 1;
    }
    if (proven_eif_read(map, (size_t) st.st_size, &eif, err, sizeof(err))
        != PROVEN_OK)
    {
        fprintf(stderr, "proven-host: %s: %s\n", image, err);
        return 1;
    }
    /* damage, not an attack (the PCRs are what a client checks) */
    if (eif.crc_computed != eif.crc_stored) {
        fprintf(stderr, "proven-host: %s: the CRC is %08x, the header says "
                "%08x: the file was changed or damaged\n", image,
                eif.crc_computed, eif.crc_stored);
        return 1;
    }

    /* under $TMPDIR, short enough for the control socket's path */
    tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] != '/' || strlen(tmp) > 40) {
        tmp = "/tmp";
    }
    snprintf(dir, sizeof(dir), "%s/proven-host.XXXXXX", tmp);
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "proven-host: %s: %s\n", dir, strerror(errno));
        return 1;
    }

    /* the image's parts, for qemu: the kernel, one initramfs, the PCRs */
    cmdline[0] = kernel[0] = initrd[0] = pcrs[0] = control[0] = '\0';
    kernels = cmdlines = 0;
    rc = 1;
    if (host_write(dir, "initrd", "", 0, initrd, sizeof(initrd)) != 0) {
        goto done;
    }
    for (i = 0; i < eif.nsections; i++) {
        const proven_eif_section_t  *s = &eif.sections[i];

        if (s->type == PROVEN_EIF_KERNEL) {
            if (kernels++ > 0) {
                fprintf(stderr, "proven-host: %s has two kernels\n", image);
                goto done;
            }
            if (host_write(dir, "kernel", s->data, s->size, kernel,
                           sizeof(kernel)) != 0)
            {
                goto done;
            }
        } else if (s->type == PROVEN_EIF_CMDLINE) {
            if (cmdlines++ > 0) {
                fprintf(stderr, "proven-host: %s has two cmdlines\n",
                        image);
                goto done;
            }
            if (s->size >= sizeof(cmdline)) {
                fprintf(stderr, "proven-host: the cmdline is over %d bytes\n",
                        HOST_CMDLINE_MAX - 1);
                goto done;
            }
            /* the section may end with NULs; qemu takes a C string */
            memcpy(cmdline, s->data, s->size);
            cmdline[s->size] = '\0';
        } else if (s->type == PROVEN_EIF_RAMDISK) {
            /* the ramdisks one after the other, in order */
            if (host_put(initrd, O_APPEND, s->data, s->size) != 0) {
                goto done;
            }
        }
    }
    if (kernels == 0 || cmdlines == 0) {
        fprintf(stderr, "proven-host: %s has no %s\n", image,
                kernels == 0 ? "kernel" : "cmdline");
        goto done;
    }
    memcpy(pcr_blob, eif.pcr0, PROVEN_EIF_PCR_LEN);
    memcpy(pcr_blob + PROVEN_EIF_PCR_LEN, eif.pcr1, PROVEN_EIF_PCR_LEN);
    memcpy(pcr_blob + 2 * PROVEN_EIF_PCR_LEN, eif.pcr2, PROVEN_EIF_PCR_LEN);
    if (host_write(dir, "pcrs", pcr_blob, sizeof(pcr_blob), pcrs,
                   sizeof(pcrs)) != 0)
    {
        goto done;
    }
    munmap(map, (size_t) st.st_size);
    snprintf(control, sizeof(control), "%s/control.sock", dir);

    host_print_pcrs(&eif);

    snprintf(fwcfg, sizeof(fwcfg), "name=opt/proven/pcrs,file=%s", pcrs);
    /*
     * In: the public ports are proven-relays (--transport to) to ports of
     * ours that qemu forwards to the guest's relays, which hand each
     * connection to nginx: the transport leg framed, as over vsock.  The
     * control channel: a port of ours forwarded to the guest's agent.
     */
    snprintf(ch->control, sizeof(ch->control), "tcp:127.0.0.1:%u",
             ch->control_port);
    if (host_free_ports(guest_ports, 3) != 0
        || host_sibling("proven-relay", relay, sizeof(relay)) != 0)
    {
        fprintf(stderr, "proven-host: no port of 127.0.0.1 is free\n");
        goto done;
    }
    snprintf(netdev, sizeof(netdev),
             "user,id=net0,restrict=on,"
             "hostfwd=tcp:127.0.0.1:%u-:%d,hostfwd=tcp:127.0.0.1:%u-:%d,"
             "hostfwd=tcp:127.0.0.1:%u-:%d",
             guest_ports[0], HOST_GUEST_HTTP, guest_ports[1], HOST_GUEST_HTTPS,
             ch->control_port, HOST_GUEST_CONTROL);
    if (ch->route_port != 0) {
        /* peers' NATS routes, carried as HTTPS is (their TLS ends in
         * nats-server, which takes only admitted peers' certificates) */
        snprintf(fwd, sizeof(fwd), ",hostfwd=tcp:127.0.0.1:%u-:%d",
                 guest_ports[2], HOST_GUEST_ROUTE);
        strcat(netdev, fwd);
        snprintf(from, sizeof(from), "tcp:127.0.0.1:%u", ch->route_port);
        snprintf(to, sizeof(to), "tcp:127.0.0.1:%u", guest_ports[2]);
        helpers[3] = host_spawn((char *[]) { relay, "--listen", from,
                                             "--to", to, "--transport", "to",
                                             NULL });
    }
    for (i = 0; i < 2; i++) {
        snprintf(from, sizeof(from), "tcp:127.0.0.1:%u", i ? https : http);
        snprintf(to, sizeof(to), "tcp:127.0.0.1:%u", guest_ports[i]);
        helpers[i] = host_spawn((char *[]) { relay, "--listen", from,
                                             "--to", to, "--transport", "to",
                                             NULL });
    }
    /* out: the guest's egress proxy, to ours, which checks our list */
    if (ch->egress != NULL) {
        snprintf(sock, sizeof(sock), "unix:%s/egress.sock", dir);
        if (host_sibling("proven-egress", egress, sizeof(egress)) != 0) {
            goto done;
        }
        helpers[2] = host_spawn((char *[]) { egress, "host", "--listen",
                                             sock, "--allow",
                                             (char *) ch->egress, NULL });
        if (strspn(relay, HOST_SAFE) != strlen(relay)
            || strspn(sock, HOST_SAFE) != strlen(sock))
        {
            fprintf(stderr, "proven-host: %s: only [A-Za-z0-9._/:+-] pass "
                    "through qemu's options\n", relay);
            goto done;
        }
        if ((size_t) snprintf(fwd, sizeof(fwd),
                              ",guestfwd=tcp:%s-cmd:%.400s --listen fd:0 "
                              "--to %s", HOST_EGRESS_GUEST, relay, sock)
            >= sizeof(fwd) || strlen(netdev) + strlen(fwd) >= sizeof(netdev))
        {
            fprintf(stderr, "proven-host: %s: a path too long\n", relay);
            goto done;
        }
        strcat(netdev, fwd);
    }
    if (keyd != NULL && host_keyd_rule(keyd, netdev, sizeof(netdev)) != 0) {
        goto done;
    }
    /* the image says bytes, qemu wants MB */
    snprintf(mem, sizeof(mem), "%lu",
             memory ? memory : (unsigned long) (eif.default_mem >> 20));
    snprintf(smp, sizeof(smp), "%lu", cpus ? cpus : eif.default_cpus);
    snprintf(chardev, sizeof(chardev),
             "socket,id=control,path=%s,server=on,wait=off", control);

    sa.sa_handler = host_on_signal;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    boots = 0;

boot:

    (void) unlink(control);     /* qemu makes it anew at each boot */
    pid = fork();
    if (pid == 0) {
        /* a group of its own: the terminal's Ctrl-C is ours to relay; and
         * gone with us, whatever ends us */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fd = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, STDIN_FILENO);
        }
        execlp(qemu, qemu,
               "-accel", accel, "-cpu", "max",
               "-machine", "q35", "-m", mem, "-smp", smp,
               "-display", "none", "-vga", "none", "-no-reboot",
               "-nodefaults", "-monitor", "none",
               "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
               "-fw_cfg", fwcfg,
               "-netdev", netdev,
               "-device", "virtio-net-pci,netdev=net0,romfile=",
               "-chardev", "stdio,id=console,signal=off",
               "-serial", "chardev:console",
               "-chardev", chardev, "-serial", "chardev:control",
               (char *) NULL);
        fprintf(stderr, "proven-host: cannot run %s: %s\n", qemu,
                strerror(errno));
        _exit(127);
    }
    if (pid < 0) {
        fprintf(stderr, "proven-host: fork: %s\n", strerror(errno));
        goto done;
    }
    /* this boot's control channel: initialize, then its logs */
    ctl = fork();
    if (ctl == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGINT, SIG_IGN);        /* the terminal's: ours to relay */
        signal(SIGTERM, SIG_DFL);       /* ours, when the guest is gone */
        host_control_loop(ch);
        _exit(0);
    }

    /*
     * Polled, not a blocking waitpid: a signal between a check and the
     * wait cannot be lost, and the deadline holds whatever the guest does.
     */
    asked = 0;
    killed = 0;
    deadline = 0;
    status = 0;
    for (;;) {
        got = waitpid(pid, &status, WNOHANG);
        if (got == pid) {
            break;
        }
        if (got < 0 && errno != EINTR) {
            fprintf(stderr, "proven-host: waitpid: %s\n", strerror(errno));
            status = 1 << 8;
            break;
        }
        if (host_signals && !asked) {
            asked = 1;
            /* the serial line when the agent cannot take it */
            if (host_control_shutdown(ch->control, ch->grace) != 0) {
                host_ask_shutdown(control);
            }
            deadline = time(NULL) + (time_t) stop_after;
        } else if (!killed && (host_signals > 1
                               || (deadline && time(NULL) >= deadline)))
        {
            fprintf(stderr, "proven-host: stopping qemu\n");
            kill(pid, SIGKILL);
            killed = 1;
        }
        nanosleep(&(struct timespec) { 0, 100 * 1000 * 1000 }, NULL);
    }

    host_reap(&ctl);
    rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    fprintf(stderr, "proven-host: the guest stopped (%s %d)\n",
            WIFEXITED(status) ? "exit" : "signal",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));

    /* stopped by itself, not asked to: a failed enclave, booted again */
    if (!host_signals && boots < restarts) {
        backoff = boots < 5 ? 1u << boots : HOST_BACKOFF_MAX_S;
        boots++;
        fprintf(stderr, "proven-host: booting it again in %u s (restart %lu "
                "of %lu)\n", backoff, boots, restarts);
        for (deadline = time(NULL) + backoff;
             !host_signals && time(NULL) < deadline; )
        {
            nanosleep(&(struct timespec) { 0, 100 * 1000 * 1000 }, NULL);
        }
        if (!host_signals) {
            goto boot;
        }
    }

done:

    for (i = 0; i < 4; i++) {
        host_reap(&helpers[i]);
    }
    if (kernel[0]) {
        unlink(kernel);
    }
    if (initrd[0]) {
        unlink(initrd);
    }
    if (pcrs[0]) {
        unlink(pcrs);
    }
    if (control[0]) {
        unlink(control);
        snprintf(control, sizeof(control), "%s/egress.sock", dir);
        unlink(control);
    }
    rmdir(dir);
    return rc;
}


static int
host_number(const char *text, unsigned long max, unsigned long *out)
{
    char  *end;

    errno = 0;
    *out = strtoul(text, &end, 10);
    return errno == 0 && end != text && *end == '\0' && *out >= 1
           && *out <= max && text[0] != '-' ? 0 : -1;
}


/* proven-host control ADDR add_peer NAME URL HOST:PORT */
static int
host_control_add_peer(const char *control, const char *name, const char *url,
    const char *route)
{
    int                rc;
    char               err[PROVEN_ERR_LEN];
    cbor_item_t       *req, *peer;
    proven_conn_t      c;
    proven_response_t  res;
    struct cbor_pair  *pairs;
    size_t             i;

    req = proven_request_new(1, "add_peer");
    peer = host_peer(name, url, route);
    if (req == NULL || peer == NULL) {
        fprintf(stderr, "proven-host: out of memory\n");
        return 1;
    }
    /* the peer's fields are the request's */
    pairs = cbor_map_handle(peer);
    for (i = 0; i < cbor_map_size(peer); i++) {
        if (!cbor_map_add(req, (struct cbor_pair) {
                              .key = pairs[i].key, .value = pairs[i].value }))
        {
            fprintf(stderr, "proven-host: out of memory\n");
            return 1;
        }
    }
    rc = host_request(control, req, &c, &res, err, sizeof(err));
    cbor_decref(&req);
    cbor_decref(&peer);
    if (rc != PROVEN_OK) {
        fprintf(stderr, "proven-host: the control channel %s: %s\n", control,
                err);
        return 1;
    }
    proven_conn_close(&c);
    rc = res.ok ? 0 : 1;
    if (res.ok) {
        printf("added %s: the guest admits it on its attestation\n", name);
    } else {
        fprintf(stderr, "proven-host: add_peer: %s: %s\n", res.code,
                res.message);
    }
    proven_response_free(&res);
    return rc;
}


/* proven-host control ADDR status|shutdown [--grace S] */
static int
host_control_main(int argc, char **argv)
{
    size_t             i;
    unsigned long      grace;
    cbor_item_t       *item;
    proven_response_t  res;

    grace = 0;
    if (argc == 7 && strcmp(argv[3], "add_peer") == 0) {
        return host_control_add_peer(argv[2], argv[4], argv[5], argv[6]);
    }
    if (argc == 6 && strcmp(argv[4], "--grace") == 0
        && host_number(argv[5], 300, &grace) == 0)
    {
        argc = 4;
    }
    if (argc != 4 || (strcmp(argv[3], "status") != 0
                      && strcmp(argv[3], "shutdown") != 0))
    {
        host_usage(stderr);
        return 2;
    }
    if (strcmp(argv[3], "shutdown") == 0) {
        return host_control_shutdown(argv[2], grace ? (unsigned) grace : 10)
               == 0 ? 0 : 1;
    }
    if (host_control_op(argv[2], "status", 0, &res) != 0) {
        return 1;
    }
    if (!res.ok) {
        fprintf(stderr, "proven-host: status: %s\n", res.message);
        proven_response_free(&res);
        return 1;
    }
    item = proven_cbor_map_get(res.result, "initialized");
    printf("initialized: %s\n", item != NULL && cbor_is_bool(item)
                                 && cbor_get_bool(item) ? "yes" : "no");
    item = proven_cbor_map_get(res.result, "services");
    for (i = 0; item != NULL && cbor_isa_array(item)
                && i < cbor_array_size(item); i++)
    {
        char  line[300];

        if (proven_cbor_text_into(cbor_array_handle(item)[i], line,
                                  sizeof(line)) == PROVEN_OK)
        {
            printf("service: %s\n", line);
        }
    }
    item = proven_cbor_map_get(res.result, "logs");
    if (item != NULL) {
        uint64_t  n[3] = { 0, 0, 0 };

        (void) proven_cbor_uint(proven_cbor_map_get(item, "buffered"), &n[0]);
        (void) proven_cbor_uint(proven_cbor_map_get(item, "shipped"), &n[1]);
        (void) proven_cbor_uint(proven_cbor_map_get(item, "dropped"), &n[2]);
        printf("logs: %llu buffered, %llu shipped, %llu dropped\n",
               (unsigned long long) n[0], (unsigned long long) n[1],
               (unsigned long long) n[2]);
    }
    proven_response_free(&res);
    return 0;
}


int
main(int argc, char **argv)
{
    int            opt;
    const char    *image, *qemu, *accel, *keyd;
    unsigned long  http, https, memory, cpus, stop_after, restarts, *target;
    unsigned long  max, port, grace;
    host_channel_t ch;

    static const struct option  options[] = {
        { "qemu",        required_argument, NULL, 'q' },
        { "qemu-binary", required_argument, NULL, 'b' },
        { "accel",       required_argument, NULL, 'a' },
        { "http",        required_argument, NULL, 'p' },
        { "https",       required_argument, NULL, 's' },
        { "memory",      required_argument, NULL, 'm' },
        { "cpus",        required_argument, NULL, 'c' },
        { "stop-after",  required_argument, NULL, 't' },
        { "keyd",        required_argument, NULL, 'k' },
        { "restart",     required_argument, NULL, 'r' },
        { "control-port", required_argument, NULL, 'C' },
        { "egress",      required_argument, NULL, 'e' },
        { "allow-extra", required_argument, NULL, 'x' },
        { "node",        required_argument, NULL, 'N' },
        { "peer",        required_argument, NULL, 'P' },
        { "route",       required_argument, NULL, 'O' },
        { "log",         required_argument, NULL, 'l' },
        { "grace",       required_argument, NULL, 'g' },
        { "restore",     required_argument, NULL, 'R' },
        { "help",        no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    if (argc >= 2 && strcmp(argv[1], "control") == 0) {
        return host_control_main(argc, argv);
    }
    if (argc >= 2 && (strcmp(argv[1], "backup") == 0
                      || strcmp(argv[1], "restore") == 0))
    {
        if (argc != 4) {
            host_usage(stderr);
            return 2;
        }
        return argv[1][0] == 'b' ? host_backup(argv[2], argv[3])
                                 : host_restore(argv[2], argv[3], 0) == 0
                                   ? 0 : 1;
    }
    if (argc < 2 || strcmp(argv[1], "run") != 0) {
        int  help = argc == 2 && (strcmp(argv[1], "--help") == 0
                                  || strcmp(argv[1], "-h") == 0);

        host_usage(help ? stdout : stderr);
        return help ? 0 : 2;
    }

    image = keyd = NULL;
    qemu = "qemu-system-x86_64";
    accel = "tcg";
    http = 8080;
    https = 8443;
    memory = 0;
    cpus = 0;
    stop_after = HOST_STOP_SECONDS;
    restarts = 0;
    memset(&ch, 0, sizeof(ch));
    ch.control_port = HOST_CONTROL_PORT;
    ch.grace = 10;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        target = NULL;
        max = 65535;
        switch (opt) {
        case 'q':
            image = optarg;
            continue;
        case 'k':
            keyd = optarg;
            continue;
        case 'e':
            ch.egress = optarg;
            continue;
        case 'l':
            ch.log = optarg;
            continue;
        case 'R':
            ch.restore = optarg;
            continue;
        case 'x':
            if (ch.nallow == HOST_ALLOW_MAX) {
                fprintf(stderr, "proven-host: at most %d --allow-extra\n",
                        HOST_ALLOW_MAX);
                return 2;
            }
            ch.allow[ch.nallow++] = optarg;
            continue;
        case 'N':
            ch.node = optarg;
            continue;
        case 'P':
            /* NAME,URL,HOST:PORT: the agent checks each part */
            if (ch.npeers == HOST_PEERS_MAX || strlen(optarg) >= 1000
                || strchr(optarg, ',') == NULL
                || strchr(optarg, ',') == strrchr(optarg, ','))
            {
                fprintf(stderr, "proven-host: --peer NAME,URL,HOST:PORT, "
                        "at most %d\n", HOST_PEERS_MAX);
                return 2;
            }
            ch.peers[ch.npeers++] = optarg;
            continue;
        case 'O':
            if (host_number(optarg, 65535, &port) != 0) {
                fprintf(stderr, "proven-host: --route wants a number from 1 "
                        "to 65535, not \"%s\"\n", optarg);
                return 2;
            }
            ch.route_port = (unsigned) port;
            continue;
        case 'C':
            if (host_number(optarg, 65535, &port) != 0) {
                fprintf(stderr, "proven-host: --control-port wants a number "
                        "from 1 to 65535, not \"%s\"\n", optarg);
                return 2;
            }
            ch.control_port = (unsigned) port;
            continue;
        case 'g':
            if (host_number(optarg, 300, &grace) != 0) {
                fprintf(stderr, "proven-host: --grace wants seconds from 1 "
                        "to 300, not \"%s\"\n", optarg);
                return 2;
            }
            ch.grace = (unsigned) grace;
            continue;
        case 'b':
            qemu = optarg;
            continue;
        case 'a':
            if (strcmp(optarg, "tcg") != 0 && strcmp(optarg, "kvm") != 0) {
                fprintf(stderr, "proven-host: --accel is tcg or kvm\n");
                return 2;
            }
            accel = optarg;
            continue;
        case 'p':
            target = &http;
            break;
        case 's':
            target = &https;
            break;
        case 'm':
            target = &memory;
            max = HOST_MEMORY_MAX;
            break;
        case 'c':
            target = &cpus;
            max = HOST_CPUS_MAX;
            break;
        case 't':
            target = &stop_after;
            max = 3600;
            break;
        case 'r':
            if (strcmp(optarg, "0") == 0) {
                restarts = 0;
                continue;
            }
            target = &restarts;
            max = 1000000;
            break;
        case 'h':
            host_usage(stdout);
            return 0;
        default:
            host_usage(stderr);
            return 2;
        }
        if (host_number(optarg, max, target) != 0) {
            fprintf(stderr, "proven-host: --%s wants a number from 1 to %lu, "
                    "not \"%s\"\n", opt == 'p' ? "http" : opt == 's' ? "https"
                                  : opt == 'm' ? "memory" : opt == 'c' ? "cpus"
                                  : opt == 'r' ? "restart" : "stop-after",
                    max, optarg);
            return 2;
        }
    }

    if (image == NULL || optind != argc) {
        fprintf(stderr, "proven-host: run --qemu IMAGE.eif is needed (the "
                        "vsock data plane comes with Nitro)\n");
        return 2;
    }
    if ((ch.node == NULL) != (ch.npeers == 0)
        || (ch.route_port != 0 && ch.node == NULL))
    {
        fprintf(stderr, "proven-host: --node NAME goes with one --peer or "
                        "more (and --route with them)\n");
        return 2;
    }

    return host_run(image, qemu, accel, (unsigned) http, (unsigned) https,
                    memory, cpus, stop_after, keyd, restarts, &ch);
}
