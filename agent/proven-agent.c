/*
 * proven-agent --control ADDR --ready PATH [--extra FILE --permit FILE]
 *              [--init-socket PATH] [--log-socket PATH] [--log-buffer BYTES]
 *              [--provend PATH] [--restore PATH [--restore-max BYTES]]
 *              [--cluster-template FILE --cluster FILE --forwards FILE
 *               [--forward-port PORT]] [--tls-domain FILE]
 *
 * The enclave's end of the host's control channel, the first service init
 * runs.  On ADDR (vsock:any:PORT; under qemu tcp:0.0.0.0:PORT behind
 * hostfwd) the host sends requests in lib's frames, {"id", "op", ...}, and
 * gets {"id", "ok", "result"} or {"id", "ok": false, "error"}:
 *
 *   initialize {"config": {"allow": ["HOST:PORT", ...],
 *                          "cluster": {"node", "peers": [...]},
 *                          "tls": {"domain": NAME}}}
 *       once: the egress additions (each within the image's --permit
 *       patterns) go to --extra, the cluster's peers to the files provend
 *       and egress read (peers.h), the name of the node's certificate to
 *       --tls-domain (an image that orders certificates: provend and
 *       nginx read it), then --ready appears and init starts the
 *       services after this one.  Anything else in config is refused:
 *       what the enclave runs is the image's, not the host's.
 *   add_peer {"name", "attestation", "route"}   after an initialize with
 *       a cluster: one more peer, in those files and given to provend
 *   status      init's services, whether initialized, the log counters
 *   shutdown {"grace": S}   init stops the services (S seconds each before
 *       SIGKILL, 1 to 300, 10 by default) and powers off
 *   logs        the connection becomes the log stream: frames
 *       {"lines": [...], "dropped": N} as lines come
 *   backup      provend (--provend, its socket) writes a sealed backup of
 *       its storage; the answer {"bytes", ...} is followed by exactly
 *       bytes of {"data": bytes} frames, then the copy is removed
 *   restore {"bytes": N}   before initialize only, followed by N bytes of
 *       {"data"} frames: a sealed backup for provend to restore as it
 *       starts (--restore, its --restore-pending), at most --restore-max
 *       bytes; answered once all are written
 *
 * A backup or a restore runs in a child of its own with the connection,
 * one at a time, so that logs and status go on meanwhile.  The backup is
 * sealed by provend with the key keyd releases to the same code alone
 * and authenticates itself chunk by chunk: the host gets nothing from
 * reading it and a refusal from changing it.
 *
 * Log lines come from init (every service's output) on --log-socket, a
 * SOCK_SEQPACKET socket, a record a line.  They
 * wait in a buffer of --log-buffer bytes (256 KiB); when the host reads
 * slower than they come, the oldest go, and the next batch says how many.
 * Nothing here trusts the host: it can ask for status and logs (which it
 * could read on the console anyway), add permitted destinations once, and
 * stop the node, which it can always do.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proven.h"
#include "net/proven_net.h"
#include "peers.h"


#define AGENT_CONNS           8         /* control connections at once */
#define AGENT_WRITERS         8         /* local log writers at once */
#define AGENT_FRAME_MAX       (64 * 1024)
#define AGENT_IDLE_MS         60000     /* a control connection's silence */
#define AGENT_LINE_MAX        4096
#define AGENT_LINES_MAX       8192
#define AGENT_BATCH_LINES     512
#define AGENT_BATCH_BYTES     (48 * 1024)
#define AGENT_LOG_BUFFER      (256 * 1024)
#define AGENT_GRACE_DEFAULT   10
#define AGENT_GRACE_MAX       300
#define AGENT_INIT_MS         2000
#define AGENT_BACKUP_MS       (10 * 60 * 1000)  /* provend writes it */
#define AGENT_DATA_MS         60000     /* a data frame's */
#define AGENT_RESTORE_MAX     (256 * 1024 * 1024)
#define AGENT_RATE_MIN        (256 * 1024)      /* bytes/s a transfer keeps */
#define AGENT_CHILD_WAITS     20        /* of 10 ms, for one ending */
#define AGENT_FORWARD_PORT    7100      /* the first peer's route, inside */
#define AGENT_PEERS_MAX       16


typedef struct {
    int                     fd;         /* -1: free */
    proven_frame_reader_t   reader;
    uint8_t                *out;        /* a frame being written */
    size_t                  out_len, out_off;
    int64_t                 last_ms;
    int                     logs;       /* the log stream */
    int                     handed;     /* to a child (backup, restore) */
} agent_conn_t;

typedef struct {
    int      fd;
    char     buf[AGENT_LINE_MAX];
} agent_writer_t;

typedef struct {
    char            *lines[AGENT_LINES_MAX];    /* a ring */
    size_t           head, count, bytes, cap;
    uint64_t         dropped, dropped_total, shipped_total;
} agent_log_t;

typedef struct {
    proven_addr_t    control;
    const char      *ready, *init_socket, *log_socket;
    const char      *provend, *restore;
    const char      *tls_domain;        /* NULL: the image orders no
                                           certificate */
    agent_peers_t    peers;             /* the host's additions */
    uint64_t         restore_max;
    int              initialized;
    int              listen_fd, log_fd;
    pid_t            child;     /* a backup or restore under way */
    int              child_restores;
    agent_conn_t     conns[AGENT_CONNS];
    agent_writer_t   writers[AGENT_WRITERS];
    agent_log_t      log;
} agent_t;


static volatile sig_atomic_t  agent_stop;


static void
agent_on_signal(int sig)
{
    (void) sig;
    agent_stop = 1;
}


/* Only to wake poll: the loop reaps the child at once. */
static void
agent_on_child(int sig)
{
    (void) sig;
}


/* ---- the log buffer ------------------------------------------------------ */

static void
agent_log_drop_oldest(agent_log_t *l)
{
    char  *line;

    line = l->lines[l->head];
    l->bytes -= strlen(line);
    free(line);
    l->head = (l->head + 1) % AGENT_LINES_MAX;
    l->count--;
    l->dropped++;
    l->dropped_total++;
}


static void
agent_log_add(agent_log_t *l, const char *text, size_t len)
{
    size_t   i;
    char    *line;

    if (len == 0) {
        return;
    }
    while (l->count > 0 && (l->count == AGENT_LINES_MAX
                            || l->bytes + len > l->cap))
    {
        agent_log_drop_oldest(l);
    }
    line = malloc(len + 1);
    if (line == NULL) {
        l->dropped++;
        l->dropped_total++;
        return;
    }
    /* text, one line: a NUL would cut it short (and its count), a CR or
     * an escape make what looks like another line on the host's side */
    for (i = 0; i < len; i++) {
        line[i] = (unsigned char) text[i] < 0x20 || text[i] == 0x7f
                  ? '?' : text[i];
    }
    line[len] = '\0';
    l->lines[(l->head + l->count) % AGENT_LINES_MAX] = line;
    l->count++;
    l->bytes += len;
}


/* A batch {"lines": [...], "dropped": N} of what waits; NULL if nothing. */
static uint8_t *
agent_log_batch(agent_log_t *l, size_t *len)
{
    size_t                  n, bytes, i;
    uint8_t                *frame;
    proven_frame_builder_t  b;

    if (l->count == 0 && l->dropped == 0) {
        return NULL;
    }
    n = 0;
    bytes = 0;
    while (n < l->count && n < AGENT_BATCH_LINES
           && bytes < AGENT_BATCH_BYTES)
    {
        bytes += strlen(l->lines[(l->head + n) % AGENT_LINES_MAX]);
        n++;
    }
    proven_frame_builder_init(&b, bytes + 64, AGENT_FRAME_MAX);
    proven_frame_put_head(&b, 5, 2);
    proven_frame_put_text(&b, "lines");
    proven_frame_put_head(&b, 4, n);
    for (i = 0; i < n; i++) {
        proven_frame_put_text(&b, l->lines[(l->head + i) % AGENT_LINES_MAX]);
    }
    proven_frame_put_text(&b, "dropped");
    proven_frame_put_uint(&b, l->dropped);
    if (proven_frame_builder_finish(&b, &frame, len) != PROVEN_OK) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        l->bytes -= strlen(l->lines[l->head]);
        free(l->lines[l->head]);
        l->head = (l->head + 1) % AGENT_LINES_MAX;
        l->count--;
    }
    l->shipped_total += n;
    l->dropped = 0;
    return frame;
}


/* A record from a local writer (init): one line, cut at the buffer. */
static int
agent_writer_read(agent_t *a, agent_writer_t *w)
{
    ssize_t  n;

    n = read(w->fd, w->buf, sizeof(w->buf));
    if (n <= 0) {
        return n == 0 || (errno != EAGAIN && errno != EINTR) ? -1 : 0;
    }
    if (w->buf[n - 1] == '\n') {
        n--;
    }
    agent_log_add(&a->log, w->buf, (size_t) n);
    return 0;
}


/* ---- init's control socket ------------------------------------------------ */

/* Sends command to init and returns its answer (up to "end" or "ok"). */
static int
agent_ask_init(agent_t *a, const char *command, char *answer, size_t size,
    char *err, size_t errlen)
{
    int            fd;
    size_t         have;
    ssize_t        n;
    int64_t        deadline;
    struct pollfd  pfd;
    struct sockaddr_un  sun;

    /* never blocking: init may be busy (its backlog full), and the agent
     * serves everyone else meanwhile */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", a->init_socket);
    if (fd < 0 || connect(fd, (struct sockaddr *) &sun, sizeof(sun)) != 0
        || send(fd, command, strlen(command), MSG_NOSIGNAL)
           != (ssize_t) strlen(command))
    {
        proven_errf(err, errlen, "init (%.100s): %s", a->init_socket,
                    strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return PROVEN_ERR;
    }
    have = 0;
    deadline = proven_net_now_ms() + AGENT_INIT_MS;
    for ( ;; ) {
        answer[have] = '\0';
        if (strcmp(answer, "ok\n") == 0
            || (have >= 4 && strcmp(answer + have - 4, "end\n") == 0))
        {
            break;
        }
        pfd.fd = fd;
        pfd.events = POLLIN;
        if (have + 1 >= size || proven_net_now_ms() >= deadline) {
            proven_errf(err, errlen, "init did not answer");
            close(fd);
            return PROVEN_ERR;
        }
        if (poll(&pfd, 1, (int) (deadline - proven_net_now_ms())) < 0) {
            if (errno == EINTR) {
                continue;               /* a child ended (SIGCHLD) */
            }
            proven_errf(err, errlen, "init did not answer");
            close(fd);
            return PROVEN_ERR;
        }
        n = read(fd, answer + have, size - have - 1);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            continue;
        }
        if (n <= 0) {
            proven_errf(err, errlen, "init did not answer");
            close(fd);
            return PROVEN_ERR;
        }
        have += (size_t) n;
    }
    close(fd);
    return PROVEN_OK;
}


/* ---- requests ------------------------------------------------------------ */

/*
 * config.tls, {"domain": NAME}: NAME (lower case, labels of 1 to 63 of
 * [a-z0-9-] not starting or ending with "-", 253 at most) into out.  The
 * host may name the node's certificate: it could point a name of its own
 * at the node anyway; the key stays inside, and clients pin the key the
 * attestation binds, not the name.
 */
static int
agent_tls_domain(agent_t *a, const cbor_item_t *tls, char *out, size_t size,
    const char **code, char *err, size_t errlen)
{
    char                c;
    size_t              i, label;
    struct cbor_pair   *pairs;

    if (a->tls_domain == NULL) {
        *code = "invalid";
        proven_errf(err, errlen, "config.tls: this image orders no "
                    "certificate (no ACME directory in it)");
        return PROVEN_ERR;
    }
    if (!cbor_isa_map(tls) || cbor_map_size(tls) != 1) {
        proven_errf(err, errlen, "config.tls: {\"domain\": NAME}");
        return PROVEN_ERR;
    }
    pairs = cbor_map_handle(tls);
    if (proven_cbor_text_into(pairs[0].key, out, size) != PROVEN_OK
        || strcmp(out, "domain") != 0
        || proven_cbor_text_into(pairs[0].value, out, size) != PROVEN_OK)
    {
        proven_errf(err, errlen, "config.tls: {\"domain\": NAME}, NAME "
                    "253 characters at most");
        return PROVEN_ERR;
    }
    label = 0;
    for (i = 0; out[i] != '\0'; i++) {
        c = out[i];
        if (c == '.') {
            if (label == 0 || out[i - 1] == '-') {
                break;
            }
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                   || (c == '-' && label > 0))
        {
            if (++label > 63) {
                break;
            }
        } else {
            break;
        }
    }
    if (out[i] != '\0' || label == 0 || out[i - 1] == '-' || i > 253) {
        proven_errf(err, errlen, "config.tls.domain: not a DNS name in "
                    "lower case (labels of 1 to 63 of a-z, 0-9 and inner "
                    "\"-\", 253 at most)");
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


static cbor_item_t *
agent_initialize(agent_t *a, proven_request_t *req, const char **code,
    char *err, size_t errlen)
{
    int           fd;
    char          key[16], domain[PROVEN_EGRESS_NAME_MAX + 2];
    size_t        i;
    cbor_item_t  *config, *tls;
    struct cbor_pair  *pairs;

    /* a restore is whole once its file is in place (before its answer,
     * maybe before its child is reaped) */
    if (a->initialized
        || (a->child > 0 && a->child_restores
            && access(a->restore, F_OK) != 0))
    {
        *code = "conflict";
        proven_errf(err, errlen, a->initialized ? "already initialized"
                    : "a backup is being handed in: initialize once it is");
        return NULL;
    }
    config = proven_cbor_map_get(req->map, "config");
    if (config != NULL && !cbor_isa_map(config)) {
        proven_errf(err, errlen, "config: a map");
        return NULL;
    }
    if (config != NULL) {
        pairs = cbor_map_handle(config);
        for (i = 0; i < cbor_map_size(config); i++) {
            if (proven_cbor_text_into(pairs[i].key, key, sizeof(key))
                != PROVEN_OK
                || (strcmp(key, "allow") != 0 && strcmp(key, "cluster") != 0
                    && strcmp(key, "tls") != 0))
            {
                proven_errf(err, errlen, "config: only \"allow\", "
                            "\"cluster\" and \"tls\" are the host's to set "
                            "(the rest is the image's)");
                return NULL;
            }
        }
        tls = proven_cbor_map_get(config, "tls");
        if (tls != NULL
            && agent_tls_domain(a, tls, domain, sizeof(domain), code, err,
                                errlen) != PROVEN_OK)
        {
            return NULL;
        }
        if (agent_peers_initialize(&a->peers,
                                   proven_cbor_map_get(config, "allow"),
                                   proven_cbor_map_get(config, "cluster"),
                                   code, err, errlen) != PROVEN_OK)
        {
            return NULL;
        }
        if (tls != NULL) {
            strcat(domain, "\n");
            if (agent_write_file(a->tls_domain, domain, err, errlen)
                != PROVEN_OK)
            {
                *code = "internal";
                return NULL;
            }
        }
    }
    fd = open(a->ready, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        *code = "internal";
        proven_errf(err, errlen, "%.200s: %s", a->ready, strerror(errno));
        return NULL;
    }
    close(fd);
    a->initialized = 1;
    fprintf(stderr, "agent: initialized\n");
    return cbor_new_null();
}


/* add_peer: once initialized, with a cluster (peers.c). */
static cbor_item_t *
agent_add_peer(agent_t *a, proven_request_t *req, const char **code,
    char *err, size_t errlen)
{
    if (!a->initialized) {
        *code = "conflict";
        proven_errf(err, errlen, "not initialized: initialize names the "
                    "first peers");
        return NULL;
    }
    return agent_peers_add(&a->peers, req, code, err, errlen);
}


static cbor_item_t *
agent_status(agent_t *a, const char **code, char *err, size_t errlen)
{
    char          answer[4096], *line, *save;
    cbor_item_t  *map, *services, *logs;

    map = cbor_new_definite_map(3);
    services = cbor_new_indefinite_array();
    logs = cbor_new_definite_map(3);
    if (map == NULL || services == NULL || logs == NULL) {
        goto oom;
    }
    /* before initialize, init waits for it, not at its socket */
    if (!a->initialized) {
        snprintf(answer, sizeof(answer), "end\n");
    } else if (agent_ask_init(a, "status\n", answer, sizeof(answer), err,
                              errlen) != PROVEN_OK)
    {
        *code = "unavailable";
        goto fail;
    }
    for (line = strtok_r(answer, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save))
    {
        if (strcmp(line, "end") != 0
            && !cbor_array_push(services, cbor_move(cbor_build_string(line))))
        {
            goto oom;
        }
    }
    if (proven_cbor_map_put(logs, "buffered",
                            cbor_build_uint64(a->log.count)) != PROVEN_OK
        || proven_cbor_map_put(logs, "shipped",
                               cbor_build_uint64(a->log.shipped_total))
           != PROVEN_OK
        || proven_cbor_map_put(logs, "dropped",
                               cbor_build_uint64(a->log.dropped_total))
           != PROVEN_OK
        || proven_cbor_map_put(map, "initialized",
                               cbor_build_bool(a->initialized)) != PROVEN_OK
        || proven_cbor_map_put(map, "services", services) != PROVEN_OK
        || proven_cbor_map_put(map, "logs", logs) != PROVEN_OK)
    {
        services = logs = NULL;
        goto oom;
    }
    return map;

oom:

    *code = "internal";
    proven_errf(err, errlen, "out of memory");

fail:

    if (map != NULL) {
        cbor_decref(&map);
    }
    if (services != NULL) {
        cbor_decref(&services);
    }
    if (logs != NULL) {
        cbor_decref(&logs);
    }
    return NULL;
}


static cbor_item_t *
agent_shutdown(agent_t *a, proven_request_t *req, const char **code,
    char *err, size_t errlen)
{
    char          command[64], answer[64];
    uint64_t      grace;
    cbor_item_t  *item;

    grace = AGENT_GRACE_DEFAULT;
    item = proven_cbor_map_get(req->map, "grace");
    if (item != NULL && (proven_cbor_uint(item, &grace) != PROVEN_OK
                         || grace < 1 || grace > AGENT_GRACE_MAX))
    {
        proven_errf(err, errlen, "grace: seconds, 1 to %d",
                    AGENT_GRACE_MAX);
        return NULL;
    }
    snprintf(command, sizeof(command), "shutdown %u\n", (unsigned) grace);
    if (agent_ask_init(a, command, answer, sizeof(answer), err, errlen)
        != PROVEN_OK)
    {
        *code = "unavailable";
        return NULL;
    }
    fprintf(stderr, "agent: shutdown asked (%u s grace)\n",
            (unsigned) grace);
    return cbor_new_null();
}


static void
agent_send(agent_conn_t *c, uint8_t *frame, size_t len)
{
    free(c->out);
    c->out = frame;
    c->out_len = len;
    c->out_off = 0;
}


static void agent_conn_close(agent_conn_t *c);


/* One log stream: a new one ends the one before (a host that reconnects,
 * or one that stopped reading). */
static void
agent_logs_take(agent_t *a, agent_conn_t *c)
{
    int  i;

    for (i = 0; i < AGENT_CONNS; i++) {
        if (&a->conns[i] != c && a->conns[i].fd >= 0 && a->conns[i].logs) {
            agent_conn_close(&a->conns[i]);
        }
    }
    c->logs = 1;
}


/* ---- backups: in a child with the connection ------------------------------ */

/* One response frame to the host; the child's last word when an error. */
static int
agent_child_answer(proven_conn_t *h, uint64_t id, const char *code,
    const char *message, cbor_item_t *result)
{
    int       rc;
    char      err[PROVEN_ERR_LEN];
    size_t    len;
    uint8_t  *frame;

    rc = code != NULL
         ? proven_response_encode_error(id, code, message, &frame, &len)
         : proven_response_encode_ok(id, result, &frame, &len);
    if (result != NULL) {
        cbor_decref(&result);
    }
    if (rc != PROVEN_OK) {
        return PROVEN_ERR;
    }
    proven_conn_deadline(h, AGENT_DATA_MS);
    rc = proven_conn_send(h, frame, len, err, sizeof(err));
    free(frame);
    return rc;
}


/* to[key] = from[from_key] as a number (0 when provend did not say). */
static int
agent_copy_uint(cbor_item_t *to, const char *key, const cbor_item_t *from,
    const char *from_key)
{
    uint64_t  v;

    if (proven_cbor_uint(proven_cbor_map_get(from, from_key), &v)
        != PROVEN_OK)
    {
        v = 0;
    }
    return proven_cbor_map_put(to, key, cbor_build_uint64(v));
}


/* provend's backup, then the file's bytes to the host: the exit status. */
static int
agent_backup_child(agent_t *a, proven_conn_t *h, uint64_t id)
{
    int                     fd;
    char                    err[PROVEN_ERR_LEN], addr_text[200], path[4096];
    int64_t                 deadline;
    cbor_item_t            *req, *result;
    struct stat             st;
    proven_addr_t           addr;
    proven_conn_t           p;
    proven_response_t       res;

    snprintf(addr_text, sizeof(addr_text), "unix:%.180s", a->provend);
    req = proven_request_new(1, "backup");
    if (req == NULL
        || proven_addr_parse(addr_text, &addr, err, sizeof(err)) != PROVEN_OK
        || proven_conn_connect(&p, &addr, AGENT_INIT_MS, 1 << 20, err,
                               sizeof(err)) != PROVEN_OK)
    {
        agent_child_answer(h, id, "unavailable", "provend is not reachable",
                           NULL);
        return 1;
    }
    proven_conn_deadline(&p, AGENT_BACKUP_MS);
    if (proven_conn_call(&p, req, &res, err, sizeof(err)) != PROVEN_OK) {
        agent_child_answer(h, id, "unavailable", err, NULL);
        return 1;
    }
    proven_conn_close(&p);
    cbor_decref(&req);
    if (!res.ok) {
        agent_child_answer(h, id, res.code, res.message, NULL);
        return 1;
    }
    fd = -1;
    if (proven_cbor_text_into(proven_cbor_map_get(res.result, "path"), path,
                              sizeof(path)) != PROVEN_OK
        || (fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0
        || fstat(fd, &st) != 0)
    {
        agent_child_answer(h, id, "internal", "provend's backup is not "
                           "where it said", NULL);
        return 1;
    }
    /* ours alone from here: gone from the enclave's memory once sent, or
     * once this child ends, whatever the host does */
    (void) unlink(path);
    if ((uint64_t) st.st_size > a->restore_max) {
        snprintf(err, sizeof(err), "the backup is %lld bytes, more than "
                 "this image takes back (--restore-max %llu)",
                 (long long) st.st_size,
                 (unsigned long long) a->restore_max);
        agent_child_answer(h, id, "too_large", err, NULL);
        return 1;
    }
    deadline = proven_net_now_ms() + AGENT_DATA_MS
               + (int64_t) ((uint64_t) st.st_size / AGENT_RATE_MIN * 1000);
    fprintf(stderr, "agent: backup: %lld bytes to the host\n",
            (long long) st.st_size);
    result = cbor_new_definite_map(4);
    if (result == NULL
        || proven_cbor_map_put(result, "bytes",
                               cbor_build_uint64((uint64_t) st.st_size))
           != PROVEN_OK
        || agent_copy_uint(result, "files", res.result, "files")
           != PROVEN_OK
        || agent_copy_uint(result, "stored_bytes", res.result, "bytes")
           != PROVEN_OK
        || agent_copy_uint(result, "paused_ms", res.result, "paused_ms")
           != PROVEN_OK
        || agent_child_answer(h, id, NULL, NULL, result) != PROVEN_OK)
    {
        return 1;
    }
    proven_response_free(&res);
    h->deadline = deadline;
    if (proven_conn_send_data(h, fd, (uint64_t) st.st_size, 0, err,
                              sizeof(err)) != PROVEN_OK)
    {
        fprintf(stderr, "agent: backup: the host: %s\n", err);
        return 1;
    }
    close(fd);
    return 0;
}


/* N bytes of data frames into --restore (whole, or not at all). */
static int
agent_restore_child(agent_t *a, proven_conn_t *h, uint64_t id,
    uint64_t bytes)
{
    int             fd, rc;
    char            err[PROVEN_ERR_LEN], tmp[4200];

    snprintf(tmp, sizeof(tmp), "%.4000s.part", a->restore);
    (void) unlink(tmp);                 /* a dead child's: none writes it */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
              0600);
    if (fd < 0) {
        agent_child_answer(h, id, "internal", strerror(errno), NULL);
        return 1;
    }
    /* all of it within a time its size allows: a host that trickles a
     * byte a minute holds initialize back for minutes, not for ever */
    h->deadline = proven_net_now_ms() + AGENT_DATA_MS
                  + (int64_t) (bytes / AGENT_RATE_MIN * 1000);
    rc = proven_conn_recv_data(h, fd, bytes, 0, err, sizeof(err));
    if (rc != PROVEN_OK || fsync(fd) != 0 || close(fd) != 0
        || rename(tmp, a->restore) != 0)
    {
        if (rc == PROVEN_OK) {
            snprintf(err, sizeof(err), "%s", strerror(errno));
        }
        fprintf(stderr, "agent: restore: %s\n", err);
        (void) unlink(tmp);
        agent_child_answer(h, id, "bad_request", err, NULL);
        return 1;
    }
    fprintf(stderr, "agent: restore: %llu bytes handed in\n",
            (unsigned long long) bytes);
    return agent_child_answer(h, id, NULL, NULL,
                              cbor_build_uint64(bytes)) == PROVEN_OK ? 0 : 1;
}


/*
 * backup and restore: checked here, then the connection goes to a child
 * (c->handed: the caller closes the parent's copy).  NULL: answered now.
 */
static cbor_item_t *
agent_transfer(agent_t *a, agent_conn_t *c, proven_request_t *req,
    const char **code, char *err, size_t errlen)
{
    int            i, restore, rc;
    pid_t          pid, agent;
    uint64_t       bytes;
    proven_conn_t  h;

    restore = strcmp(req->op, "restore") == 0;
    bytes = 0;
    /* one that has answered may not have ended yet: a moment for it */
    for (i = 0; a->child > 0 && i < AGENT_CHILD_WAITS; i++) {
        if (waitpid(a->child, NULL, WNOHANG) == a->child) {
            a->child = 0;
            break;
        }
        usleep(10 * 1000);
    }
    if (a->child > 0) {
        *code = "conflict";
        proven_errf(err, errlen, "a backup or restore is under way");
        return NULL;
    }
    if (!restore && a->provend == NULL) {
        *code = "unavailable";
        proven_errf(err, errlen, "this image makes no backups (no --provend)");
        return NULL;
    }
    if (restore) {
        if (a->restore == NULL) {
            *code = "unavailable";
            proven_errf(err, errlen, "this image takes no backups (no "
                        "--restore)");
            return NULL;
        }
        if (a->initialized || access(a->restore, F_OK) == 0) {
            *code = a->initialized ? "conflict" : "exists";
            proven_errf(err, errlen, a->initialized
                        ? "initialized already: a backup is handed in "
                          "before, for provend to restore as it starts"
                        : "a backup was handed in already");
            return NULL;
        }
        if (proven_cbor_uint(proven_cbor_map_get(req->map, "bytes"), &bytes)
            != PROVEN_OK || bytes == 0 || bytes > a->restore_max)
        {
            *code = bytes > a->restore_max ? "too_large" : "bad_request";
            proven_errf(err, errlen, "bytes: the backup's size, 1 to %llu",
                        (unsigned long long) a->restore_max);
            return NULL;
        }
    }

    agent = getpid();
    pid = fork();
    if (pid < 0) {
        *code = "internal";
        proven_errf(err, errlen, "fork: %s", strerror(errno));
        return NULL;
    }
    if (pid > 0) {
        a->child = pid;
        a->child_restores = restore;
        c->handed = 1;
        return NULL;
    }

    /* the child: this connection alone, the rest closed; it ends with
     * the agent (init stops the agent alone, and a new agent knows of no
     * child) */
    (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != agent) {
        _exit(1);                       /* it ended before the line above */
    }
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    for (i = 0; i < AGENT_CONNS; i++) {
        if (&a->conns[i] != c && a->conns[i].fd >= 0) {
            close(a->conns[i].fd);
        }
    }
    for (i = 0; i < AGENT_WRITERS; i++) {
        if (a->writers[i].fd >= 0) {
            close(a->writers[i].fd);
        }
    }
    close(a->listen_fd);
    if (a->log_fd >= 0) {
        close(a->log_fd);
    }
    memset(&h, 0, sizeof(h));
    h.fd = c->fd;
    h.reader = c->reader;           /* what came after the request, kept */
    rc = restore ? agent_restore_child(a, &h, req->id, bytes)
                 : agent_backup_child(a, &h, req->id);
    _exit(rc);
}


static void
agent_request(agent_t *a, agent_conn_t *c, const uint8_t *body, size_t len)
{
    char               err[PROVEN_ERR_LEN];
    uint8_t           *frame;
    size_t             flen;
    const char        *code;
    cbor_item_t       *result;
    proven_request_t   req;

    code = "bad_request";
    err[0] = '\0';
    result = NULL;
    if (proven_request_decode(body, len, &req, err, sizeof(err))
        != PROVEN_OK)
    {
        req.map = NULL;
    } else if (strcmp(req.op, "initialize") == 0) {
        result = agent_initialize(a, &req, &code, err, sizeof(err));
    } else if (strcmp(req.op, "add_peer") == 0) {
        result = agent_add_peer(a, &req, &code, err, sizeof(err));
    } else if (strcmp(req.op, "status") == 0) {
        result = agent_status(a, &code, err, sizeof(err));
    } else if (strcmp(req.op, "shutdown") == 0) {
        result = agent_shutdown(a, &req, &code, err, sizeof(err));
    } else if (strcmp(req.op, "logs") == 0) {
        result = cbor_new_null();
        agent_logs_take(a, c);          /* after this answer: batches */
    } else if (strcmp(req.op, "backup") == 0
               || strcmp(req.op, "restore") == 0)
    {
        result = agent_transfer(a, c, &req, &code, err, sizeof(err));
    } else {
        code = "unknown_op";
        snprintf(err, sizeof(err), "unknown op \"%s\" (initialize, add_peer, "
                 "status, shutdown, logs, backup, restore)", req.op);
    }
    if (c->handed) {
        /* the child answers */
    } else if (result != NULL) {
        if (proven_response_encode_ok(req.id, result, &frame, &flen)
            == PROVEN_OK)
        {
            agent_send(c, frame, flen);
        }
        cbor_decref(&result);
    } else if (proven_response_encode_error(req.has_id ? req.id : 0, code,
                                            err, &frame, &flen)
               == PROVEN_OK)
    {
        agent_send(c, frame, flen);
    }
    if (req.map != NULL) {
        proven_request_free(&req);
    }
}


/* ---- connections ------------------------------------------------------------ */

static void
agent_conn_close(agent_conn_t *c)
{
    close(c->fd);
    c->fd = -1;
    proven_frame_reader_free(&c->reader);
    free(c->out);
    c->out = NULL;
    c->logs = 0;
    c->handed = 0;
}


static int agent_conn_parse(agent_t *a, agent_conn_t *c);


static int
agent_conn_write(agent_t *a, agent_conn_t *c)
{
    ssize_t  n;

    if (c->out == NULL && c->logs) {
        c->out = agent_log_batch(&a->log, &c->out_len);
        c->out_off = 0;
        c->last_ms = proven_net_now_ms();       /* its time to go starts now */
    }
    while (c->out != NULL) {
        n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        }
        c->out_off += (size_t) n;
        c->last_ms = proven_net_now_ms();       /* the host reads: progress */
        if (c->out_off == c->out_len) {
            free(c->out);
            c->out = NULL;
            if (c->logs) {
                c->out = agent_log_batch(&a->log, &c->out_len);
                c->out_off = 0;
            } else if (agent_conn_parse(a, c) != 0) {
                return -1;
            }
        }
    }
    return 0;
}


static int
agent_conn_read(agent_t *a, agent_conn_t *c)
{
    size_t    avail;
    ssize_t   n;
    uint8_t  *space;

    space = proven_frame_reader_space(&c->reader, &avail);
    if (space == NULL || avail == 0) {
        return -1;
    }
    n = recv(c->fd, space, avail, 0);
    if (n <= 0) {
        return n == 0 || (errno != EAGAIN && errno != EINTR) ? -1 : 0;
    }
    proven_frame_reader_fill(&c->reader, (size_t) n);
    c->last_ms = proven_net_now_ms();
    return agent_conn_parse(a, c);
}


/* The requests buffered, one at a time: the next waits until its answer
 * is out (then agent_conn_write comes back here). */
static int
agent_conn_parse(agent_t *a, agent_conn_t *c)
{
    int             rc;
    char            err[PROVEN_ERR_LEN];
    size_t          len;
    const uint8_t  *body;

    while (c->out == NULL && !c->logs) {
        rc = proven_frame_reader_next(&c->reader, &body, &len, err,
                                      sizeof(err));
        if (rc == PROVEN_AGAIN) {
            break;
        }
        if (rc != PROVEN_OK) {
            return -1;
        }
        agent_request(a, c, body, len);
        if (c->handed) {
            return -1;                  /* the child has it: close ours */
        }
    }
    return 0;
}


static int
agent_listen_unix(const char *path)
{
    int                 fd;
    struct sockaddr_un  sun;

    /* a record a line: a writer that cannot send whole drops whole */
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *) &sun, sizeof(sun)) != 0
        || chmod(path, 0600) != 0 || listen(fd, 8) != 0)
    {
        fprintf(stderr, "agent: %s: %s\n", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}


static int
agent_run(agent_t *a)
{
    int             cfd, lfd, fd, i, n, k;
    char            err[PROVEN_ERR_LEN];
    int64_t         now;
    struct pollfd   fds[2 + AGENT_CONNS + AGENT_WRITERS];
    agent_conn_t   *c;

    cfd = proven_addr_listen(&a->control, 8, err, sizeof(err));
    if (cfd < 0) {
        fprintf(stderr, "agent: %s\n", err);
        return 1;
    }
    lfd = a->log_socket != NULL ? agent_listen_unix(a->log_socket) : -1;
    if (a->log_socket != NULL && lfd < 0) {
        return 1;
    }
    a->listen_fd = cfd;
    a->log_fd = lfd;
    fprintf(stderr, "agent: control on %s\n", a->control.text);

    while (!agent_stop) {
        while (a->child > 0 && waitpid(a->child, NULL, WNOHANG) == a->child) {
            a->child = 0;
        }
        n = 0;
        fds[n++] = (struct pollfd) { .fd = cfd, .events = POLLIN };
        fds[n++] = (struct pollfd) { .fd = lfd, .events = POLLIN };
        for (i = 0; i < AGENT_CONNS; i++) {
            c = &a->conns[i];
            if (c->logs && c->out == NULL && (a->log.count || a->log.dropped))
            {
                (void) agent_conn_write(a, c);
            }
            fds[n++] = (struct pollfd) {
                .fd = c->fd,
                .events = (short) ((c->out ? POLLOUT : 0)
                                   | (c->out == NULL && !c->logs ? POLLIN : 0)
                                   | (c->logs ? POLLIN : 0))
            };
        }
        for (i = 0; i < AGENT_WRITERS; i++) {
            fds[n++] = (struct pollfd) { .fd = a->writers[i].fd,
                                         .events = POLLIN };
        }
        if (poll(fds, (nfds_t) n, 500) < 0 && errno != EINTR) {
            break;
        }
        now = proven_net_now_ms();

        if (fds[0].revents & POLLIN) {
            fd = accept4(cfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            for (i = 0; fd >= 0 && i < AGENT_CONNS; i++) {
                if (a->conns[i].fd < 0) {
                    c = &a->conns[i];
                    c->fd = fd;
                    c->last_ms = now;
                    proven_frame_reader_init(&c->reader, AGENT_FRAME_MAX);
                    fd = -1;
                }
            }
            if (fd >= 0) {
                close(fd);              /* too many at once */
            }
        }
        if (fds[1].revents & POLLIN) {
            fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            for (i = 0; fd >= 0 && i < AGENT_WRITERS; i++) {
                if (a->writers[i].fd < 0) {
                    a->writers[i].fd = fd;
                    fd = -1;
                }
            }
            if (fd >= 0) {
                close(fd);
            }
        }
        for (i = 0; i < AGENT_CONNS; i++) {
            c = &a->conns[i];
            k = 2 + i;
            if (c->fd < 0) {
                continue;
            }
            if ((fds[k].revents & (POLLERR | POLLHUP))
                || ((fds[k].revents & POLLIN) && c->logs
                    && recv(c->fd, err, sizeof(err), MSG_DONTWAIT) == 0)
                || ((fds[k].revents & POLLIN) && !c->logs
                    && agent_conn_read(a, c) != 0)
                || agent_conn_write(a, c) != 0
                || ((!c->logs || c->out != NULL)
                    && now - c->last_ms > AGENT_IDLE_MS))
            {
                agent_conn_close(c);
            }
        }
        for (i = 0; i < AGENT_WRITERS; i++) {
            k = 2 + AGENT_CONNS + i;
            if (a->writers[i].fd >= 0
                && (fds[k].revents & (POLLIN | POLLHUP | POLLERR))
                && agent_writer_read(a, &a->writers[i]) != 0)
            {
                close(a->writers[i].fd);
                a->writers[i].fd = -1;
            }
        }
    }
    close(cfd);
    if (lfd >= 0) {
        close(lfd);
    }
    return 0;
}


static void
agent_usage(void)
{
    fprintf(stderr,
        "usage: proven-agent --control ADDR --ready PATH "
        "[--extra FILE --permit FILE]\n"
        "                    [--init-socket PATH] [--log-socket PATH] "
        "[--log-buffer BYTES]\n"
        "                    [--provend PATH] [--restore PATH "
        "[--restore-max BYTES]]\n"
        "                    [--cluster-template FILE --cluster FILE "
        "--forwards FILE\n"
        "                     [--forward-port PORT]] [--tls-domain FILE]\n");
}


int
main(int argc, char **argv)
{
    int               opt, i, have_control;
    long              n;
    char              err[PROVEN_ERR_LEN], *end;
    agent_t          *a;
    struct sigaction  sa;

    static const struct option  options[] = {
        { "control",     required_argument, NULL, 'c' },
        { "ready",       required_argument, NULL, 'r' },
        { "extra",       required_argument, NULL, 'x' },
        { "permit",      required_argument, NULL, 'p' },
        { "init-socket", required_argument, NULL, 'i' },
        { "log-socket",  required_argument, NULL, 'l' },
        { "log-buffer",  required_argument, NULL, 'b' },
        { "provend",     required_argument, NULL, 'P' },
        { "restore",     required_argument, NULL, 'R' },
        { "restore-max", required_argument, NULL, 'M' },
        { "cluster-template", required_argument, NULL, 'T' },
        { "cluster",     required_argument, NULL, 'C' },
        { "forwards",    required_argument, NULL, 'F' },
        { "forward-port", required_argument, NULL, 'o' },
        { "tls-domain",  required_argument, NULL, 'D' },
        { NULL, 0, NULL, 0 }
    };

    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return 1;
    }
    a->init_socket = "/run/proven/init.sock";
    a->log.cap = AGENT_LOG_BUFFER;
    a->restore_max = AGENT_RESTORE_MAX;
    a->peers.forward_port = AGENT_FORWARD_PORT;
    have_control = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            if (proven_addr_parse(optarg, &a->control, err, sizeof(err))
                != PROVEN_OK)
            {
                fprintf(stderr, "proven-agent: --control: %s\n", err);
                return 2;
            }
            have_control = 1;
            break;
        case 'r':
            a->ready = optarg;
            break;
        case 'x':
            a->peers.extra = optarg;
            break;
        case 'p':
            a->peers.permit = optarg;
            break;
        case 'T':
            a->peers.template = optarg;
            break;
        case 'C':
            a->peers.file = optarg;
            break;
        case 'F':
            a->peers.forwards = optarg;
            break;
        case 'D':
            a->tls_domain = optarg;
            break;
        case 'o':
            errno = 0;
            n = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || n < 1
                || n > 65535 - AGENT_PEERS_MAX)
            {
                fprintf(stderr, "proven-agent: --forward-port %s: 1 to "
                        "%d\n", optarg, 65535 - AGENT_PEERS_MAX);
                return 2;
            }
            a->peers.forward_port = (unsigned) n;
            break;
        case 'i':
            a->init_socket = optarg;
            break;
        case 'l':
            a->log_socket = optarg;
            break;
        case 'P':
            a->provend = optarg;
            a->peers.provend = optarg;
            break;
        case 'R':
            a->restore = optarg;
            break;
        case 'M':
            errno = 0;
            n = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || n < 1
                || n > 64L * 1024 * 1024 * 1024)
            {
                fprintf(stderr, "proven-agent: --restore-max %s: 1 to "
                        "64 GiB\n", optarg);
                return 2;
            }
            a->restore_max = (uint64_t) n;
            break;
        case 'b':
            errno = 0;
            n = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || n < 4096
                || n > 64L * 1024 * 1024)
            {
                fprintf(stderr, "proven-agent: --log-buffer %s: 4096 to "
                        "64 MiB\n", optarg);
                return 2;
            }
            a->log.cap = (size_t) n;
            break;
        default:
            agent_usage();
            return 2;
        }
    }
    if (optind != argc || !have_control || a->ready == NULL
        || (a->peers.extra == NULL) != (a->peers.permit == NULL)
        || (a->peers.template != NULL)
           != (a->peers.file != NULL && a->peers.forwards != NULL
               && a->peers.extra != NULL))
    {
        agent_usage();
        return 2;
    }
    for (i = 0; i < AGENT_CONNS; i++) {
        a->conns[i].fd = -1;
    }
    for (i = 0; i < AGENT_WRITERS; i++) {
        a->writers[i].fd = -1;
    }
    /* restarted by init after initialize (/run is the boot's own): the
     * host does not get to initialize twice */
    a->initialized = access(a->ready, F_OK) == 0;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = agent_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = agent_on_child;
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    i = agent_run(a);
    free(a);
    return i;
}
