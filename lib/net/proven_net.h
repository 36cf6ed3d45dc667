/*
 * Transport addresses and the relay between two of them: the one form
 * every part of the node names a peer with,
 *
 *   vsock:CID:PORT   (an enclave and its host; CID "any" to listen)
 *   unix:PATH        (the stand-in for vsock in tests)
 *   tcp:HOST:PORT    (HOST numeric: 127.0.0.1, [::1]; no name is looked up)
 *
 * and a single-threaded relay that carries connections accepted on one to
 * the other, bytes moved with splice(2) (read and write where a socket
 * type cannot splice), half-closes and resets passed on both ways.  Kept
 * out of lib/ proper (the nginx modules compile the files of lib/ itself).
 */

#ifndef PROVEN_NET_H
#define PROVEN_NET_H

#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proven.h"

#define PROVEN_ADDR_TEXT_MAX  128

typedef enum {
    PROVEN_ADDR_TCP = 1,
    PROVEN_ADDR_UNIX,
    PROVEN_ADDR_VSOCK
} proven_addr_kind_t;

typedef struct {
    proven_addr_kind_t       kind;
    struct sockaddr_storage  sa;
    socklen_t                len;
    char                     text[PROVEN_ADDR_TEXT_MAX];
} proven_addr_t;

/* Parses TEXT; PROVEN_ERR with a message saying what is wrong. */
int proven_addr_parse(const char *text, proven_addr_t *addr, char *err,
    size_t errlen);

/* A listening socket (non-blocking, close-on-exec); a unix path left by a
 * dead listener is replaced, any other file is not.  -1 and err. */
int proven_addr_listen(const proven_addr_t *addr, int backlog, char *err,
    size_t errlen);

/* A non-blocking connect started (EINPROGRESS is success); -1 and err. */
int proven_addr_connect(const proven_addr_t *addr, char *err, size_t errlen);

/* Which side is the transport leg between two relays, whose frames carry
 * an end and a reset across (proven_relay.c) */
#define PROVEN_RELAY_RAW     0
#define PROVEN_RELAY_LISTEN  1
#define PROVEN_RELAY_TO      2

typedef struct {
    proven_addr_t   listen;
    int             adopt;              /* instead of listening, adopt_fd:
                                           one connected socket, carried
                                           until it ends (qemu's guestfwd
                                           hands one on stdin) */
    int             adopt_fd;
    int             adopt_to;           /* with adopt: adopt_to_fd is the
                                           target, connected already (the
                                           egress proxy's two ends) */
    int             adopt_to_fd;
    proven_addr_t   to;
    int             transport;          /* PROVEN_RELAY_* */
    int             proxy_protocol;     /* a PROXY v2 header first */
    unsigned        max_connections;    /* accepted at once; 0: 4096 */
    unsigned        idle_ms;            /* adopted: ends after so long
                                           without a byte; 0: never */
    int             verbose;            /* a line per connection */
} proven_relay_config_t;

typedef struct proven_relay_s  proven_relay_t;

proven_relay_t *proven_relay_new(const proven_relay_config_t *cfg,
    char *err, size_t errlen);

/* Runs until proven_relay_stop() (from a signal handler too) or an error:
 * PROVEN_OK or PROVEN_ERR. */
int proven_relay_run(proven_relay_t *r, char *err, size_t errlen);
void proven_relay_stop(proven_relay_t *r);
/* Connections that could not be carried (the target refused, ...). */
unsigned long proven_relay_failures(const proven_relay_t *r);
void proven_relay_free(proven_relay_t *r);

/* The PROXY protocol v2 header for a connection from src to dst (both
 * AF_INET or both AF_INET6; otherwise a LOCAL header): its length, at most
 * 52 bytes written to out. */
size_t proven_proxy_v2_header(const struct sockaddr *src,
    const struct sockaddr *dst, uint8_t out[52]);

/*
 * One frame-speaking connection used in blocking style, each step under a
 * deadline, so a silent or slow peer costs a bounded wait (a client of
 * keyd, keyd's own server).  The frames are lib's (4-byte length, CBOR).
 */
typedef struct {
    int                     fd;
    int64_t                 deadline;   /* CLOCK_MONOTONIC ms */
    int                     exact;      /* read no byte past a frame: the
                                           stream goes on in another form
                                           (the egress handshake) */
    proven_frame_reader_t   reader;
} proven_conn_t;

/* CLOCK_MONOTONIC in milliseconds: the clock of every deadline here. */
int64_t proven_net_now_ms(void);

/* All of len bytes to a blocking fd (a file): PROVEN_ERR with errno. */
int proven_write_all(int fd, const void *buf, size_t len);

/* Takes fd (non-blocking); frames of at most max_body bytes. */
void proven_conn_init(proven_conn_t *c, int fd, size_t max_body);
/* Connects to addr; the deadline is set timeout_ms from now. */
int proven_conn_connect(proven_conn_t *c, const proven_addr_t *addr,
    int timeout_ms, size_t max_body, char *err, size_t errlen);
void proven_conn_deadline(proven_conn_t *c, int timeout_ms);
/* Until c->fd is ready for events (POLLIN, POLLOUT) or the deadline
 * passes (PROVEN_ERR, "no answer in time"). */
int proven_conn_wait(proven_conn_t *c, short events, char *err,
    size_t errlen);
int proven_conn_send(proven_conn_t *c, const uint8_t *buf, size_t len,
    char *err, size_t errlen);
/* The next frame's body, valid until the next call; PROVEN_ERR with err
 * (the peer closed, the deadline passed, a frame out of bounds). */
int proven_conn_recv(proven_conn_t *c, const uint8_t **body, size_t *len,
    char *err, size_t errlen);
void proven_conn_close(proven_conn_t *c);
/* One request (lib's {"id", "op", ...}) and its response, under c's
 * deadline; res to proven_response_free (ok or not) on PROVEN_OK. */
int proven_conn_call(proven_conn_t *c, const cbor_item_t *req,
    proven_response_t *res, char *err, size_t errlen);

/*
 * A file carried as {"data": bytes} frames of at most PROVEN_DATA_FRAME
 * bytes (backups over the control channel): len bytes of fd sent, or
 * exactly want bytes received into fd; more, fewer or another frame is
 * an error.  idle_ms > 0: each frame under a deadline of its own; 0: c's
 * deadline, as the caller set it, for the whole.
 */
#define PROVEN_DATA_FRAME  (48 * 1024)

int proven_conn_send_data(proven_conn_t *c, int fd, uint64_t len,
    int idle_ms, char *err, size_t errlen);
int proven_conn_recv_data(proven_conn_t *c, int fd, uint64_t want,
    int idle_ms, char *err, size_t errlen);

/*
 * A server of a process per connection (proven_serve.c): each connection
 * accepted on fd is handle(arg, fd, 0) in a child of its own, so that
 * one peer can neither hold nor corrupt another's; at most max at once,
 * those beyond given to refuse (may be NULL) and closed.  Runs until
 * *stop.  tick (may be NULL) runs in the server about once a second and
 * may change the *nmore listeners in more (may be NULL), taken besides
 * fd: a connection on more[i] is handle(arg, fd, i + 1).
 */
typedef struct {
    unsigned                  max;
    unsigned                  lifetime_s;     /* 0: none (tunnels) */
    int                       wait_children;  /* at the end */
    volatile sig_atomic_t    *stop;
    void                    (*handle)(void *arg, int fd, size_t listener);
    void                    (*refuse)(void *arg, int fd);
    void                    (*tick)(void *arg);
    const int                *more;
    const size_t             *nmore;
    void                     *arg;
} proven_serve_t;

#define PROVEN_SERVE_LISTENERS  64

void proven_serve_forked(int fd, const proven_serve_t *s);

/*
 * Egress (proven_egress.c): a destination, HOST:PORT, where HOST is a
 * numeric address (IPv6 in brackets) or a DNS name (lowercased, no final
 * dot); and the allow-list a destination must be on, one HOST:PORT a
 * line ("*.NAME:PORT" for every name below NAME; "#" comments).
 */
#define PROVEN_EGRESS_NAME_MAX  253
#define PROVEN_ALLOW_MAX        1024

typedef struct {
    int       family;                   /* AF_INET, AF_INET6; 0: a name */
    char      host[PROVEN_EGRESS_NAME_MAX + 1];
    uint16_t  port;
} proven_egress_dest_t;

/* wildcard: "*.NAME" accepted (a pattern of a list). */
int proven_egress_parse_dest(const char *text, size_t len, int wildcard,
    proven_egress_dest_t *dest);
void proven_egress_dest_text(const proven_egress_dest_t *d, char *out,
    size_t size);
/* 1 for an address of the public internet; 0 for the rest of RFC 6890's
 * (loopback, private, shared, link-local such as cloud metadata, unique
 * local, documentation, multicast ...) and the IPv4 inside v4-mapped,
 * v4-compatible, NAT64 and 6to4 addresses judged as IPv4. */
int proven_egress_global(int family, const uint8_t *addr);

typedef struct {
    proven_egress_dest_t  *entries;
    size_t                 n, cap;
} proven_allow_t;

void proven_allow_init(proven_allow_t *list);
void proven_allow_free(proven_allow_t *list);
int proven_allow_add(proven_allow_t *list, const char *text, size_t len,
    char *err, size_t errlen);
/* A parsed entry, copied (PROVEN_ALLOW_MAX at most). */
int proven_allow_push(proven_allow_t *list, const proven_egress_dest_t *d,
    char *err, size_t errlen);
/* Adds the file's entries: PROVEN_ERR with the line that is wrong. */
int proven_allow_load(proven_allow_t *list, const char *path, char *err,
    size_t errlen);
/* 1 when d (no pattern) is on the list. */
int proven_allow_check(const proven_allow_t *list,
    const proven_egress_dest_t *d);

/* DNS messages for DoH: a query for name, and the first address of the
 * type asked in an answer (PROVEN_AGAIN: none of that type). */
#define PROVEN_DNS_A     1
#define PROVEN_DNS_AAAA  28
#define PROVEN_DNS_MAX   4096           /* an answer's bytes, at most */

int proven_dns_query(const char *name, int type, uint8_t *out, size_t size,
    size_t *len);
int proven_dns_answer(const uint8_t *msg, size_t len, int type, char *ip,
    size_t iplen, char *err, size_t errlen);

#endif /* PROVEN_NET_H */
