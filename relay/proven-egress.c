/*
 * The enclave's one way out, checked on both sides.
 *
 *   proven-egress proxy --listen tcp:127.0.0.1:3128 --to ADDR
 *                       --allow FILE [--extra FILE --permit FILE]
 *                       [--forwards FILE] [--doh URL [--ca FILE]]
 *                       [--max N] [--verbose]
 *   proven-egress host  --listen ADDR --allow FILE [--max N] [--verbose]
 *
 * Inside, "proxy" is an HTTP CONNECT proxy on loopback (libcurl's
 * https_proxy, Node's agents): a destination must be on the image's
 * allow-list (--allow; --extra holds what the host's initialize added,
 * each entry within a --permit pattern of the image).  Names are resolved
 * inside, over DoH (--doh, an https URL whose host is an address, checked
 * against --ca): the host never answers a name.  The proxy then opens a
 * connection over the transport (--to) and asks the host's side for the
 * destination, in one frame {"host", "port", "ip"}.  --forwards FILE
 * ("PORT HOST:PORT" lines) adds ports of loopback each carried to one
 * destination the same way, for what cannot use a proxy (NATS routes to
 * cluster peers).  --extra and --forwards are read again when they change
 * (the agent's add_peer), each second at most.
 *
 * On the host, "host" checks that frame against its own list (the
 * operator's), connects to the address, answers {"ok": true} or
 * {"error": MESSAGE} in one frame, and from then both relay (the
 * transport leg framed as proven-relay's).  A name that resolved to the
 * host's own addresses (loopback, link-local: cloud metadata, any,
 * multicast) is refused unless that address is on the list too.
 *
 * Each connection is a process of its own (--max at once, 256 by
 * default), its handshake bounded in time and size; refusals are logged
 * on stderr, one line each.  SIGINT or SIGTERM stops accepting.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "proven.h"
#include "net/proven_net.h"


#define EGRESS_HEAD_MAX        8192
#define EGRESS_HANDSHAKE_MS    10000
#define EGRESS_CONNECT_MS      5000
#define EGRESS_DOH_MS          5000
#define EGRESS_FRAME_MAX       1024
#define EGRESS_MAX_CONNS       256
#define EGRESS_IDLE_MS         (5 * 60 * 1000)  /* a tunnel with no bytes */
#define EGRESS_FORWARDS_MAX    32


/* A port of the enclave's loopback carried to one destination. */
typedef struct {
    uint16_t               port;
    proven_egress_dest_t   dest;
} egress_forward_t;

typedef struct {
    int              host_side;
    proven_addr_t    listen;
    proven_addr_t    to;
    proven_allow_t   allow;         /* image's and DoH's, then extra's */
    proven_allow_t   image;         /* the image's and DoH's */
    const char      *extra, *permit, *forwards;
    struct stat      extra_st, forwards_st;     /* as last read */
    egress_forward_t forward[EGRESS_FORWARDS_MAX];
    int              forward_fds[EGRESS_FORWARDS_MAX];
    size_t           nforward;
    int              forwards_again;    /* a port not listened on yet */
    const char      *doh;
    const char      *ca;
    char             proxy_url[PROVEN_ADDR_TEXT_MAX + 16];
    unsigned         max;
    int              verbose;
} egress_t;


static volatile sig_atomic_t  egress_stop;

static void egress_tick(void *arg);


static void
egress_on_signal(int sig)
{
    (void) sig;
    egress_stop = 1;
}


static void
egress_log(const char *fmt, ...)
{
    char     line[600];
    va_list  ap;

    char    *p;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* what either side sent, as text: no line of its own making */
    for (p = line; *p != '\0'; p++) {
        if ((unsigned char) *p < 0x20 || *p == 0x7f) {
            *p = '?';
        }
    }
    fprintf(stderr, "egress: %s\n", line);
}


/* ---- the proxy, inside -------------------------------------------------- */

static void
egress_reply(int fd, int status, const char *reason, const char *message)
{
    char  buf[1024];
    int   n;

    n = snprintf(buf, sizeof(buf),
                 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                 "Content-Length: %zu\r\n%sConnection: close\r\n\r\n%s\n",
                 status, reason, strlen(message) + 1,
                 status == 405 ? "Allow: CONNECT\r\n" : "", message);
    if (n > 0) {
        (void) send(fd, buf, (size_t) n < sizeof(buf) ? (size_t) n
                                                      : sizeof(buf) - 1,
                    MSG_NOSIGNAL);
    }
}


/*
 * The request head, and not one byte more: what follows is the client's
 * (a TLS hello sent without waiting for the 200).  Each read asks for no
 * more than the bytes the end of the head still needs.
 */
static int
egress_read_head(proven_conn_t *c, char *head, size_t *len)
{
    char      err[PROVEN_ERR_LEN];
    size_t    have, want;
    ssize_t   n;

    have = 0;
    for ( ;; ) {
        if (have >= 4 && memcmp(head + have - 4, "\r\n\r\n", 4) == 0) {
            head[have] = '\0';
            *len = have;
            return PROVEN_OK;
        }
        if (have >= EGRESS_HEAD_MAX - 1) {
            return PROVEN_ERR;
        }
        want = 4;
        if (have >= 3 && memcmp(head + have - 3, "\r\n\r", 3) == 0) {
            want = 1;
        } else if (have >= 2 && memcmp(head + have - 2, "\r\n", 2) == 0) {
            want = 2;
        } else if (have >= 1 && head[have - 1] == '\r') {
            want = 3;
        }
        if (want > EGRESS_HEAD_MAX - 1 - have) {
            want = EGRESS_HEAD_MAX - 1 - have;
        }
        n = recv(c->fd, head + have, want, 0);
        if (n > 0) {
            have += (size_t) n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)
            || proven_conn_wait(c, POLLIN, err, sizeof(err)) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
    }
}


typedef struct {
    uint8_t  buf[PROVEN_DNS_MAX];
    size_t   len;
    int      over;
} egress_body_t;


static size_t
egress_body_write(char *data, size_t size, size_t n, void *arg)
{
    egress_body_t  *b = arg;

    size *= n;
    if (size > sizeof(b->buf) - b->len) {
        b->over = 1;
        return 0;
    }
    memcpy(b->buf + b->len, data, size);
    b->len += size;
    return size;
}


/* name's address of the type, asked of the DoH server through this very
 * proxy (its address is on the list). */
static int
egress_doh(egress_t *e, const char *name, int type, char *ip, size_t iplen,
    char *err, size_t errlen)
{
    int                 rc;
    long                status;
    CURL               *h;
    CURLcode            cc;
    uint8_t             query[PROVEN_EGRESS_NAME_MAX + 32];
    size_t              qlen;
    egress_body_t      *body;
    struct curl_slist  *headers;

    if (proven_dns_query(name, type, query, sizeof(query), &qlen)
        != PROVEN_OK)
    {
        proven_errf(err, errlen, "%.200s: not a name DNS can carry", name);
        return PROVEN_ERR;
    }
    body = calloc(1, sizeof(*body));
    h = curl_easy_init();
    headers = curl_slist_append(NULL, "Content-Type: application/dns-message");
    headers = headers ? curl_slist_append(headers,
                                          "Accept: application/dns-message")
                      : NULL;
    if (body == NULL || h == NULL || headers == NULL) {
        proven_errf(err, errlen, "out of memory");
        rc = PROVEN_ERR;
        goto done;
    }
    curl_easy_setopt(h, CURLOPT_URL, e->doh);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_PROXY, e->proxy_url);
    curl_easy_setopt(h, CURLOPT_HTTPPROXYTUNNEL, 1L);
    curl_easy_setopt(h, CURLOPT_CAINFO, e->ca);    /* that bundle alone */
    curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, (char *) query);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long) qlen);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, egress_body_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long) EGRESS_DOH_MS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    cc = curl_easy_perform(h);
    status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK || status != 200) {
        proven_errf(err, errlen, "DoH %s: %s", e->doh,
                    body->over ? "answer too large"
                    : cc != CURLE_OK ? curl_easy_strerror(cc)
                    : "not 200");
        rc = PROVEN_ERR;
        goto done;
    }
    rc = proven_dns_answer(body->buf, body->len, type, ip, iplen, err,
                           errlen);

done:

    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    free(body);
    return rc;
}


/* The frame {"host", "port", "ip"} to the host's side, and its answer. */
static int
egress_ask_host(egress_t *e, proven_conn_t *t, const proven_egress_dest_t *d,
    const char *ip, char *err, size_t errlen)
{
    int                     rc;
    uint8_t                *frame;
    size_t                  flen, blen;
    const uint8_t          *body;
    cbor_item_t            *answer, *item;
    char                    why[PROVEN_ERR_LEN];
    proven_frame_builder_t  b;

    if (proven_conn_connect(t, &e->to, EGRESS_CONNECT_MS, EGRESS_FRAME_MAX,
                            why, sizeof(why)) != PROVEN_OK)
    {
        proven_errf(err, errlen, "the host's side: %.200s", why);
        return PROVEN_ERR;
    }
    t->exact = 1;
    proven_conn_deadline(t, EGRESS_HANDSHAKE_MS);
    proven_frame_builder_init(&b, 128, EGRESS_FRAME_MAX);
    proven_frame_put_head(&b, 5, 3);
    proven_frame_put_text(&b, "host");
    proven_frame_put_text(&b, d->host);
    proven_frame_put_text(&b, "port");
    proven_frame_put_uint(&b, d->port);
    proven_frame_put_text(&b, "ip");
    proven_frame_put_text(&b, ip);
    if (proven_frame_builder_finish(&b, &frame, &flen) != PROVEN_OK) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    rc = proven_conn_send(t, frame, flen, why, sizeof(why));
    free(frame);
    if (rc != PROVEN_OK
        || proven_conn_recv(t, &body, &blen, why, sizeof(why)) != PROVEN_OK)
    {
        proven_errf(err, errlen, "the host's side: %.200s", why);
        return PROVEN_ERR;
    }
    answer = proven_cbor_load(body, blen, why, sizeof(why));
    if (answer == NULL) {
        proven_errf(err, errlen, "the host's side: %.200s", why);
        return PROVEN_ERR;
    }
    rc = PROVEN_OK;
    item = proven_cbor_map_get(answer, "ok");
    if (item == NULL || !cbor_is_bool(item) || !cbor_get_bool(item)) {
        item = proven_cbor_map_get(answer, "error");
        if (item == NULL || proven_cbor_text_into(item, why, sizeof(why))
                            != PROVEN_OK)
        {
            snprintf(why, sizeof(why), "no answer");
        }
        item = proven_cbor_map_get(answer, "refused");
        if (item != NULL && cbor_is_bool(item) && cbor_get_bool(item)) {
            proven_errf(err, errlen, "the host refused: %.200s", why);
            rc = PROVEN_AGAIN;
        } else {
            proven_errf(err, errlen, "the host's side: %.200s", why);
            rc = PROVEN_ERR;
        }
    }
    cbor_decref(&answer);
    return rc;
}


/* Both ends connected: the relay carries them until either ends (the
 * transport leg framed, on the side transport names). */
static void
egress_carry(int client, int target, int transport, const proven_addr_t *to)
{
    char                   err[PROVEN_ERR_LEN];
    proven_relay_t        *r;
    proven_relay_config_t  cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.adopt = 1;
    cfg.adopt_fd = client;
    cfg.adopt_to = 1;
    cfg.adopt_to_fd = target;
    cfg.to = *to;
    cfg.transport = transport;
    cfg.idle_ms = EGRESS_IDLE_MS;
    r = proven_relay_new(&cfg, err, sizeof(err));
    if (r == NULL) {
        egress_log("%s", err);
        return;
    }
    (void) proven_relay_run(r, err, sizeof(err));
    proven_relay_free(r);
}


/* The destination ip:port as a list would name it, and its bytes. */
static int
egress_dest_of(const char *ip, uint16_t port, proven_egress_dest_t *d,
    uint8_t addr[16])
{
    memset(d, 0, sizeof(*d));
    d->family = strchr(ip, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(d->family, ip, addr) != 1) {
        return PROVEN_ERR;
    }
    inet_ntop(d->family, addr, d->host, sizeof(d->host));
    d->port = port;
    return PROVEN_OK;
}


/*
 * Whether the enclave may reach d, its address (its own, or the name's
 * over DoH), and a connection t to the host's side that has connected
 * to it: PROVEN_OK; else *status and msg say why, for the client.
 */
static int
egress_reach(egress_t *e, const proven_egress_dest_t *d, proven_conn_t *t,
    int *status, char *msg, size_t msglen)
{
    int                    rc, i;
    char                   ip[INET6_ADDRSTRLEN], err[PROVEN_ERR_LEN];
    char                   text[PROVEN_EGRESS_NAME_MAX + 16];
    uint8_t                addr[16];
    proven_egress_dest_t   as_ip;

    proven_conn_init(t, -1, 0);
    proven_egress_dest_text(d, text, sizeof(text));
    if (!proven_allow_check(&e->allow, d)) {
        egress_log("refused %s: not on the enclave's allow-list", text);
        snprintf(msg, msglen, "%s is not on the enclave's allow-list", text);
        *status = 403;
        return PROVEN_ERR;
    }

    /* the address: the destination's own, or the name's over DoH */
    *status = 502;
    if (d->family != 0) {
        memcpy(ip, d->host, strlen(d->host) + 1);   /* an address */
    } else if (e->doh == NULL) {
        egress_log("cannot resolve %s: no DoH server", d->host);
        snprintf(msg, msglen, "cannot resolve %s: no DoH server (--doh)",
                 d->host);
        return PROVEN_ERR;
    } else {
        rc = PROVEN_AGAIN;
        for (i = 0; i < 2 && rc == PROVEN_AGAIN; i++) {
            rc = egress_doh(e, d->host, i == 0 ? PROVEN_DNS_A
                                               : PROVEN_DNS_AAAA,
                            ip, sizeof(ip), err, sizeof(err));
        }
        if (rc != PROVEN_OK) {
            egress_log("cannot resolve %s: %s", d->host, err);
            snprintf(msg, msglen, "cannot resolve %s: %s", d->host, err);
            return PROVEN_ERR;
        }
        /* a name of a listed domain must not lead into a private network
         * (or the host) unless that address is listed itself */
        if (egress_dest_of(ip, d->port, &as_ip, addr) != PROVEN_OK
            || (!proven_egress_global(as_ip.family, addr)
                && !proven_allow_check(&e->allow, &as_ip)))
        {
            egress_log("refused %s at %s: not a public address", text, ip);
            snprintf(msg, msglen, "%s resolved to %s, not a public address "
                     "(list it to allow it)", text, ip);
            *status = 403;
            return PROVEN_ERR;
        }
    }

    rc = egress_ask_host(e, t, d, ip, err, sizeof(err));
    if (rc != PROVEN_OK) {
        egress_log("%s (%s): %s", text, ip, err);
        snprintf(msg, msglen, "%s: %s", text, err);
        *status = rc == PROVEN_AGAIN ? 403 : 502;
        proven_conn_close(t);
        return PROVEN_ERR;
    }
    if (e->verbose) {
        egress_log("%s (%s)", text, ip);
    }
    return PROVEN_OK;
}


static void
egress_proxy_conn(egress_t *e, int fd)
{
    int                    status;
    char                   head[EGRESS_HEAD_MAX], err[PROVEN_ERR_LEN];
    char                   msg[PROVEN_ERR_LEN + 300];
    char                  *sp, *ver;
    size_t                 len;
    proven_conn_t          client, t;
    proven_egress_dest_t   d;
    static const char      ok[] = "HTTP/1.1 200 Connection established"
                                  "\r\n\r\n";

    proven_conn_init(&client, fd, 0);
    proven_conn_deadline(&client, EGRESS_HANDSHAKE_MS);
    if (egress_read_head(&client, head, &len) != PROVEN_OK) {
        egress_log("refused a request: no head within 10 s and 8 KiB");
        egress_reply(fd, 400, "Bad Request",
                     "no request head (ended, too slow, or over 8 KiB)");
        return;
    }
    /* CONNECT AUTHORITY HTTP/1.x */
    sp = strchr(head, ' ');
    if (sp == NULL || (size_t) (sp - head) != 7
        || memcmp(head, "CONNECT", 7) != 0)
    {
        egress_log("refused a request that is not CONNECT");
        egress_reply(fd, 405, "Method Not Allowed",
                     "only CONNECT: the enclave's way out is a tunnel");
        return;
    }
    ver = strchr(sp + 1, ' ');
    if (ver == NULL || strncmp(ver, " HTTP/1.", 8) != 0
        || proven_egress_parse_dest(sp + 1, (size_t) (ver - sp - 1), 0, &d)
           != PROVEN_OK)
    {
        egress_log("refused a CONNECT to no HOST:PORT");
        egress_reply(fd, 400, "Bad Request",
                     "CONNECT HOST:PORT HTTP/1.1 expected");
        return;
    }
    proven_conn_deadline(&client, EGRESS_HANDSHAKE_MS);   /* for the 200 */
    if (egress_reach(e, &d, &t, &status, msg, sizeof(msg)) != PROVEN_OK) {
        egress_reply(fd, status, status == 403 ? "Forbidden"
                                               : "Bad Gateway", msg);
        return;
    }
    if (proven_conn_send(&client, (const uint8_t *) ok, sizeof(ok) - 1, err,
                         sizeof(err)) != PROVEN_OK)
    {
        egress_log("the client of %s: %s", d.host, err);
        proven_conn_close(&t);
        return;
    }

    /* from here the relay's: the client raw, the host's side framed */
    proven_frame_reader_free(&t.reader);
    egress_carry(fd, t.fd, PROVEN_RELAY_TO, &e->to);
}


/*
 * A connection to a forward's port: carried to its one destination, as a
 * CONNECT to it would be (for what cannot use a proxy: NATS routes).
 * A refusal closes it; the log says why.
 */
static void
egress_forward_conn(egress_t *e, int fd, const proven_egress_dest_t *d)
{
    int            status;
    char           msg[PROVEN_ERR_LEN + 300];
    proven_conn_t  t;

    if (egress_reach(e, d, &t, &status, msg, sizeof(msg)) != PROVEN_OK) {
        return;
    }
    proven_frame_reader_free(&t.reader);
    egress_carry(fd, t.fd, PROVEN_RELAY_TO, &e->to);
}


/* ---- the host's side ---------------------------------------------------- */

static void
egress_host_answer(proven_conn_t *c, const char *error, int refused)
{
    uint8_t                *frame;
    size_t                  flen;
    char                    err[PROVEN_ERR_LEN];
    proven_frame_builder_t  b;

    proven_frame_builder_init(&b, 128, EGRESS_FRAME_MAX);
    proven_frame_put_head(&b, 5, error == NULL ? 1 : 2);
    if (error == NULL) {
        proven_frame_put_text(&b, "ok");
        proven_frame_put_bool(&b, 1);
    } else {
        proven_frame_put_text(&b, "error");
        proven_frame_put_text(&b, error);
        proven_frame_put_text(&b, "refused");
        proven_frame_put_bool(&b, refused);
    }
    if (proven_frame_builder_finish(&b, &frame, &flen) == PROVEN_OK) {
        (void) proven_conn_send(c, frame, flen, err, sizeof(err));
        free(frame);
    }
}


static void
egress_host_conn(egress_t *e, int fd)
{
    char                   err[PROVEN_ERR_LEN], msg[PROVEN_ERR_LEN + 300];
    char                   host[PROVEN_EGRESS_NAME_MAX + 1];
    char                   ip[INET6_ADDRSTRLEN + 2], text[300], to[320];
    uint8_t                addr[16];
    uint64_t               port;
    size_t                 blen;
    const uint8_t         *body;
    cbor_item_t           *req;
    proven_conn_t          c, t;
    proven_addr_t          dst;
    proven_egress_dest_t   d, as_ip;

    proven_conn_init(&c, fd, EGRESS_FRAME_MAX);
    c.exact = 1;
    proven_conn_deadline(&c, EGRESS_HANDSHAKE_MS);
    if (proven_conn_recv(&c, &body, &blen, err, sizeof(err)) != PROVEN_OK) {
        egress_log("a request that did not come: %s", err);
        proven_conn_close(&c);
        return;
    }
    req = proven_cbor_load(body, blen, err, sizeof(err));
    if (req == NULL
        || proven_cbor_text_into(proven_cbor_map_get(req, "host"), host,
                                 sizeof(host)) != PROVEN_OK
        || proven_cbor_uint(proven_cbor_map_get(req, "port"), &port)
           != PROVEN_OK
        || port == 0 || port > 65535
        || proven_cbor_text_into(proven_cbor_map_get(req, "ip"), ip,
                                 INET6_ADDRSTRLEN) != PROVEN_OK)
    {
        egress_log("refused a malformed request");
        egress_host_answer(&c, "a request is {\"host\", \"port\", \"ip\"}",
                           1);
        goto done;
    }

    /* the destination as the enclave named it, and the address it gave */
    snprintf(text, sizeof(text), strchr(host, ':') ? "[%s]:%u" : "%s:%u",
             host, (unsigned) port);
    if (proven_egress_parse_dest(text, strlen(text), 0, &d) != PROVEN_OK
        || egress_dest_of(ip, (uint16_t) port, &as_ip, addr) != PROVEN_OK)
    {
        egress_log("refused %s (%s): not a destination", text, ip);
        egress_host_answer(&c, "not a destination", 1);
        goto done;
    }
    proven_egress_dest_text(&d, text, sizeof(text));
    if (!proven_allow_check(&e->allow, &d)) {
        egress_log("refused %s: not on the host's allow-list", text);
        snprintf(msg, sizeof(msg), "%s is not on the host's allow-list",
                 text);
        egress_host_answer(&c, msg, 1);
        goto done;
    }
    if (d.family != 0 ? strcmp(d.host, as_ip.host) != 0
        : !proven_egress_global(as_ip.family, addr)
          && !proven_allow_check(&e->allow, &as_ip))
    {
        egress_log("refused %s at %s: not its address, or not a public "
                   "one", text, as_ip.host);
        snprintf(msg, sizeof(msg), "%.270s at %.64s: not a public address "
                 "(the host's own, a private network's; list it to allow "
                 "it)", text, as_ip.host);
        egress_host_answer(&c, msg, 1);
        goto done;
    }

    snprintf(to, sizeof(to), as_ip.family == AF_INET6 ? "tcp:[%s]:%u"
                                                       : "tcp:%s:%u",
             as_ip.host, (unsigned) d.port);
    if (proven_addr_parse(to, &dst, err, sizeof(err)) != PROVEN_OK
        || proven_conn_connect(&t, &dst, EGRESS_CONNECT_MS, 0, err,
                               sizeof(err)) != PROVEN_OK)
    {
        egress_log("%s: %s", text, err);
        snprintf(msg, sizeof(msg), "connect %s: %.200s", to + 4, err);
        egress_host_answer(&c, msg, 0);
        goto done;
    }
    if (e->verbose) {
        egress_log("%s (%s)", text, as_ip.host);
    }
    egress_host_answer(&c, NULL, 0);
    proven_frame_reader_free(&t.reader);
    proven_frame_reader_free(&c.reader);
    cbor_decref(&req);
    egress_carry(c.fd, t.fd, PROVEN_RELAY_LISTEN, &dst);
    return;

done:

    if (req != NULL) {
        cbor_decref(&req);
    }
    proven_conn_close(&c);
}


/* ---- both ---------------------------------------------------------------- */

static void
egress_conn(void *arg, int fd, size_t listener)
{
    egress_t  *e = arg;

    if (e->host_side) {
        egress_host_conn(e, fd);
    } else if (listener > 0 && listener <= e->nforward) {
        egress_forward_conn(e, fd, &e->forward[listener - 1].dest);
    } else {
        egress_proxy_conn(e, fd);
    }
}


static void
egress_refuse(void *arg, int fd)
{
    egress_t       *e = arg;
    time_t          now;
    static time_t   said;
    static unsigned since;

    /* a line a second at most: a client that loops must not flood the log */
    since++;
    now = time(NULL);
    if (now != said) {
        egress_log("refused %u connection(s): %u at once", since, e->max);
        said = now;
        since = 0;
    }
    if (!e->host_side) {
        egress_reply(fd, 503, "Service Unavailable",
                     "too many connections at once");
    }
}


static int
egress_serve(egress_t *e)
{
    int               fd;
    char              err[PROVEN_ERR_LEN];
    proven_serve_t    srv;
    struct sigaction  sa;

    fd = proven_addr_listen(&e->listen, 128, err, sizeof(err));
    if (fd < 0) {
        fprintf(stderr, "proven-egress: %s\n", err);
        return 1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = egress_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    egress_log("%s side, listening on %s, %zu allowed",
               e->host_side ? "host's" : "enclave's", e->listen.text,
               e->allow.n);

    memset(&srv, 0, sizeof(srv));
    srv.max = e->max;
    srv.stop = &egress_stop;
    srv.handle = egress_conn;
    srv.refuse = egress_refuse;
    srv.arg = e;
    if (!e->host_side) {
        srv.tick = egress_tick;
        srv.more = e->forward_fds;
        srv.nmore = &e->nforward;
    }
    proven_serve_forked(fd, &srv);
    close(fd);
    return 0;
}


/* A file's identity and version, to see it changed: 1 when it did. */
static int
egress_changed(const char *path, struct stat *last)
{
    struct stat  st;

    if (path == NULL) {
        return 0;
    }
    if (stat(path, &st) != 0) {
        memset(&st, 0, sizeof(st));
    }
    if (st.st_ino == last->st_ino && st.st_size == last->st_size
        && st.st_mtim.tv_sec == last->st_mtim.tv_sec
        && st.st_mtim.tv_nsec == last->st_mtim.tv_nsec)
    {
        return 0;
    }
    *last = st;
    return 1;
}


/*
 * The list again: the image's, then initialize's and add_peer's
 * additions (--extra), each an exact destination the image permits.  On
 * an error the list is as it was.
 */
static int
egress_load_extra(egress_t *e, char *err, size_t errlen)
{
    size_t          i;
    proven_allow_t  add, permits, list;
    char            text[300];

    proven_allow_init(&add);
    proven_allow_init(&permits);
    proven_allow_init(&list);
    for (i = 0; i < e->image.n; i++) {
        if (proven_allow_push(&list, &e->image.entries[i], err, errlen)
            != PROVEN_OK)
        {
            goto fail;
        }
    }
    if (e->extra != NULL && access(e->extra, F_OK) == 0) {
        if (e->permit == NULL) {
            proven_errf(err, errlen, "--extra needs --permit");
            goto fail;
        }
        if (proven_allow_load(&add, e->extra, err, errlen) != PROVEN_OK
            || proven_allow_load(&permits, e->permit, err, errlen)
               != PROVEN_OK)
        {
            goto fail;
        }
    }
    for (i = 0; i < add.n; i++) {
        if (add.entries[i].host[0] == '*'
            || !proven_allow_check(&permits, &add.entries[i]))
        {
            proven_egress_dest_text(&add.entries[i], text, sizeof(text));
            proven_errf(err, errlen, "%.60s: %.100s is not one the image "
                        "permits (%.60s)", e->extra, text, e->permit);
            goto fail;
        }
        if (proven_allow_push(&list, &add.entries[i], err, errlen)
            != PROVEN_OK)
        {
            goto fail;
        }
    }
    proven_allow_free(&e->allow);
    e->allow = list;
    proven_allow_free(&add);
    proven_allow_free(&permits);
    return PROVEN_OK;

fail:

    proven_allow_free(&list);
    proven_allow_free(&add);
    proven_allow_free(&permits);
    return PROVEN_ERR;
}


/*
 * The lines of --forwards, "PORT HOST:PORT": 127.0.0.1:PORT carried to
 * HOST:PORT (each connection checked as a CONNECT is, so a destination
 * off the list is refused then).  A port once listened on stays; its
 * destination is the file's latest.  PROVEN_AGAIN when a port could not
 * be listened on yet (tried again each tick).
 */
static int
egress_load_forwards(egress_t *e)
{
    int                    fd, rc;
    char                   line[400], addr[64], err[PROVEN_ERR_LEN];
    char                  *sp, *end;
    long                   port;
    FILE                  *f;
    size_t                 i, len;
    proven_addr_t          at;
    egress_forward_t      *fw;
    proven_egress_dest_t   d;

    f = fopen(e->forwards, "r");
    if (f == NULL) {
        return PROVEN_OK;               /* none yet */
    }
    rc = PROVEN_OK;
    while (fgets(line, sizeof(line), f) != NULL) {
        len = strcspn(line, "\r\n");
        line[len] = '\0';
        if (len == 0 || line[0] == '#') {
            continue;
        }
        errno = 0;
        port = strtol(line, &end, 10);
        sp = end;
        if (errno != 0 || port < 1 || port > 65535 || *sp != ' '
            || proven_egress_parse_dest(sp + 1, strlen(sp + 1), 0, &d)
               != PROVEN_OK)
        {
            egress_log("%s: \"%.100s\" is not PORT HOST:PORT", e->forwards,
                       line);
            continue;
        }
        for (i = 0; i < e->nforward; i++) {
            if (e->forward[i].port == port) {
                break;
            }
        }
        if (i < e->nforward) {
            fw = &e->forward[i];
            if (strcmp(fw->dest.host, d.host) != 0
                || fw->dest.port != d.port)
            {
                fw->dest = d;
                egress_log("forwarding 127.0.0.1:%ld to %s now", port,
                           sp + 1);
            }
            continue;
        }
        if (e->nforward == EGRESS_FORWARDS_MAX) {
            egress_log("%s: %d forwards at most", e->forwards,
                       EGRESS_FORWARDS_MAX);
            break;
        }
        snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%ld", port);
        if (proven_addr_parse(addr, &at, err, sizeof(err)) != PROVEN_OK
            || (fd = proven_addr_listen(&at, 128, err, sizeof(err))) < 0)
        {
            egress_log("cannot forward %ld yet: %s", port, err);
            rc = PROVEN_AGAIN;
            continue;
        }
        fw = &e->forward[e->nforward];
        fw->port = (uint16_t) port;
        fw->dest = d;
        e->forward_fds[e->nforward++] = fd;
        egress_log("forwarding 127.0.0.1:%ld to %s", port, sp + 1);
    }
    fclose(f);
    return rc;
}


/* Each second: the host's additions and the forwards, if they changed. */
static void
egress_tick(void *arg)
{
    char       err[PROVEN_ERR_LEN];
    egress_t  *e = arg;

    if (egress_changed(e->extra, &e->extra_st)
        && egress_load_extra(e, err, sizeof(err)) != PROVEN_OK)
    {
        egress_log("the additions stay as they were: %s", err);
    }
    if (egress_changed(e->forwards, &e->forwards_st) || e->forwards_again) {
        e->forwards_again = egress_load_forwards(e) == PROVEN_AGAIN;
    }
}


/* The DoH server goes on the enclave's list: its address, not a name. */
static int
egress_allow_doh(egress_t *e, char *err, size_t errlen)
{
    int     rc;
    char   *host, *port, text[300];
    CURLU  *u;

    u = curl_url();
    host = port = NULL;
    rc = PROVEN_ERR;
    if (u == NULL
        || curl_url_set(u, CURLUPART_URL, e->doh, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK
        || curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT)
           != CURLUE_OK
        || strncmp(e->doh, "https://", 8) != 0)
    {
        proven_errf(err, errlen, "--doh %s: not an https URL", e->doh);
        goto done;
    }
    snprintf(text, sizeof(text), "%s:%s", host, port);
    if (strspn(host, "0123456789.") != strlen(host) && host[0] != '[') {
        proven_errf(err, errlen, "--doh %s: the host must be an address "
                    "(a name would need DNS first)", e->doh);
        goto done;
    }
    rc = proven_allow_add(&e->image, text, strlen(text), err, errlen);

done:

    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}


static void
egress_usage(void)
{
    fprintf(stderr,
        "usage: proven-egress proxy --listen tcp:127.0.0.1:PORT --to ADDR "
        "--allow FILE\n"
        "                           [--extra FILE --permit FILE] "
        "[--forwards FILE]\n"
        "                           [--doh URL [--ca FILE]]"
        " [--max N] [--verbose]\n"
        "       proven-egress host --listen ADDR --allow FILE [--max N] "
        "[--verbose]\n");
}


int
main(int argc, char **argv)
{
    int          opt, have_to, have_listen, have_allow;
    char         err[PROVEN_ERR_LEN], *end;
    const char  *extra, *permit;
    long         n;
    egress_t     e;

    static const struct option  options[] = {
        { "listen",  required_argument, NULL, 'l' },
        { "to",      required_argument, NULL, 't' },
        { "allow",   required_argument, NULL, 'a' },
        { "extra",   required_argument, NULL, 'x' },
        { "permit",  required_argument, NULL, 'p' },
        { "forwards", required_argument, NULL, 'f' },
        { "doh",     required_argument, NULL, 'd' },
        { "ca",      required_argument, NULL, 'c' },
        { "max",     required_argument, NULL, 'm' },
        { "verbose", no_argument,       NULL, 'v' },
        { NULL, 0, NULL, 0 }
    };

    memset(&e, 0, sizeof(e));
    proven_allow_init(&e.allow);
    proven_allow_init(&e.image);
    e.max = EGRESS_MAX_CONNS;
    if (argc < 2 || (strcmp(argv[1], "proxy") != 0
                     && strcmp(argv[1], "host") != 0))
    {
        egress_usage();
        return 2;
    }
    e.host_side = strcmp(argv[1], "host") == 0;
    have_to = have_listen = have_allow = 0;
    extra = permit = NULL;
    err[0] = '\0';
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'l':
            have_listen = 1;
            if (proven_addr_parse(optarg, &e.listen, err, sizeof(err))
                != PROVEN_OK)
            {
                goto bad;
            }
            break;
        case 't':
            have_to = 1;
            if (proven_addr_parse(optarg, &e.to, err, sizeof(err))
                != PROVEN_OK)
            {
                goto bad;
            }
            break;
        case 'a':
            have_allow = 1;
            if (proven_allow_load(&e.image, optarg, err, sizeof(err))
                != PROVEN_OK)
            {
                goto bad;
            }
            break;
        case 'x':
            extra = optarg;
            break;
        case 'p':
            permit = optarg;
            break;
        case 'f':
            e.forwards = optarg;
            break;
        case 'd':
            e.doh = optarg;
            break;
        case 'c':
            e.ca = optarg;
            break;
        case 'm':
            errno = 0;
            n = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || n < 1 || n > 4096) {
                snprintf(err, sizeof(err), "--max %s: 1 to 4096", optarg);
                goto bad;
            }
            e.max = (unsigned) n;
            break;
        case 'v':
            e.verbose = 1;
            break;
        default:
            egress_usage();
            return 2;
        }
    }
    if (optind != argc || !have_listen || !have_allow
        || have_to == e.host_side)
    {
        egress_usage();
        return 2;
    }
    if (!e.host_side) {
        if (e.listen.kind != PROVEN_ADDR_TCP) {
            snprintf(err, sizeof(err), "--listen: the proxy is an HTTP "
                     "proxy: tcp:127.0.0.1:PORT");
            goto bad;
        }
        snprintf(e.proxy_url, sizeof(e.proxy_url), "http://%.*s",
                 (int) (sizeof(e.proxy_url) - 8), e.listen.text + 4);
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            snprintf(err, sizeof(err), "libcurl would not start");
            goto bad;
        }
        if (e.doh != NULL && e.ca == NULL) {
            snprintf(err, sizeof(err), "--doh needs --ca: the DoH server is "
                     "believed on the image's CA bundle alone");
            goto bad;
        }
        if (e.doh != NULL
            && egress_allow_doh(&e, err, sizeof(err)) != PROVEN_OK)
        {
            goto bad;
        }
        e.extra = extra;
        e.permit = permit;
        (void) egress_changed(e.extra, &e.extra_st);
        if (egress_load_extra(&e, err, sizeof(err)) != PROVEN_OK) {
            goto bad;
        }
    } else if (extra != NULL || e.doh != NULL || e.ca != NULL
               || e.forwards != NULL)
    {
        snprintf(err, sizeof(err), "--extra, --forwards, --doh and --ca are "
                 "the enclave's side's");
        goto bad;
    } else {
        e.allow = e.image;
        proven_allow_init(&e.image);
    }
    n = egress_serve(&e);
    proven_allow_free(&e.allow);
    proven_allow_free(&e.image);
    return (int) n;

bad:

    fprintf(stderr, "proven-egress: %s\n", err);
    proven_allow_free(&e.allow);
    proven_allow_free(&e.image);
    return 2;
}
