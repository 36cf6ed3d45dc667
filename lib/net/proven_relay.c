/*
 * The relay: connections accepted on one transport address carried to
 * another, one thread, epoll, level-triggered.  Each connection is two
 * sockets and two directions; a direction moves bytes from its source
 * into a pipe and from the pipe to its destination with splice(2), so they
 * never enter user space (a socket type that cannot splice falls back to
 * read and write through a buffer of the same size).  A source's end of
 * file becomes a shutdown(SHUT_WR) of the destination once the pipe is
 * empty (half-closes pass); an error or a reset on either side closes both
 * with SO_LINGER 0, so the other side sees a reset too.
 */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "proven.h"
#include "net/proven_net.h"


#define PROVEN_RELAY_CHUNK      (64 * 1024)     /* a pipe's default size */
#define PROVEN_RELAY_EVENTS     256
#define PROVEN_RELAY_MAX_CONN   4096
#define PROVEN_RELAY_FAIR       (4 * PROVEN_RELAY_CHUNK)  /* an event's share */
#define PROVEN_RELAY_ACCEPTS    64                        /* a turn's accepts */
#define PROVEN_RELAY_PAUSE_MS   100     /* out of descriptors: accept later */


typedef struct proven_relay_conn_s  proven_relay_conn_t;

/* One direction: bytes from src to dst. */
typedef struct {
    int       pipe[2];          /* -1 until the first bytes */
    size_t    pending;          /* in the pipe (or buf) */
    uint8_t  *buf;              /* copies: a PROXY header, or a socket
                                   type splice cannot read */
    size_t    buf_off;
    int       copy;             /* splice cannot: always copy */
    int       eof;              /* src said end of file */
    int       shut;             /* dst got SHUT_WR (or an END frame) */
    int       src_closed;       /* a framed src closed after its END */

    /* the transport leg's frames (see below) */
    int       src_framed, dst_framed;
    uint8_t   hdr_in[4];
    size_t    hdr_in_len;
    size_t    in_left;          /* of the DATA frame being read */
    uint8_t   hdr_out[4];
    size_t    hdr_out_off;
    size_t    out_left;         /* of the DATA frame being written */
    int       end_queued, end_waits;
    int       in_full;          /* the pipe took no more: wait for dst */
    size_t    moved;            /* in this event: bounded, for fairness */
} proven_relay_dir_t;

/* What epoll's data points at: a side of a connection, or the listener. */
typedef struct {
    proven_relay_conn_t  *conn;
    int                   side;         /* 0 client, 1 target */
} proven_relay_end_t;

struct proven_relay_conn_s {
    int                   fd[2];        /* client, target */
    uint32_t              events[2];    /* registered with epoll */
    int                   registered[2];
    int                   hup[2];       /* epoll said it hung up */
    int                   connected;    /* the target's connect finished */
    proven_relay_dir_t    dir[2];       /* 0: client -> target, 1: back */
    proven_relay_end_t    end[2];
    int                   dead;         /* closed: freed after the batch */
    proven_relay_conn_t  *next_dead;
    proven_relay_conn_t  *prev, *next;  /* the live ones, for _free */
};

struct proven_relay_s {
    proven_relay_config_t   cfg;
    int                     epfd;
    int                     listen_fd;
    volatile sig_atomic_t   stop;
    unsigned                live;
    uint64_t                accepted, refused, failed;
    proven_relay_end_t      listen_end;
    proven_relay_conn_t    *dead;
    proven_relay_conn_t    *conns;      /* live */
    int                     paused;     /* the listener, for a while */
    int64_t                 paused_at;
};


proven_relay_t *
proven_relay_new(const proven_relay_config_t *cfg, char *err, size_t errlen)
{
    proven_relay_t     *r;
    struct rlimit       files;
    struct epoll_event  ev;

    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    r->cfg = *cfg;
    if (r->cfg.max_connections == 0) {
        r->cfg.max_connections = PROVEN_RELAY_MAX_CONN;
    }
    r->epfd = -1;

    /* six descriptors a connection (two sockets, two pipes): no more
     * connections than the descriptors allow, a few kept for the rest */
    if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
        if (files.rlim_cur < files.rlim_max) {
            files.rlim_cur = files.rlim_max;
            (void) setrlimit(RLIMIT_NOFILE, &files);
            (void) getrlimit(RLIMIT_NOFILE, &files);
        }
        if (files.rlim_cur < 16 + 6) {
            proven_errf(err, errlen, "too few file descriptors (%lu)",
                        (unsigned long) files.rlim_cur);
            free(r);
            return NULL;
        }
        if ((files.rlim_cur - 16) / 6 < r->cfg.max_connections) {
            r->cfg.max_connections = (unsigned) ((files.rlim_cur - 16) / 6);
        }
    }

    if (cfg->adopt) {
        r->listen_fd = -1;
        r->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (r->epfd < 0 || fcntl(cfg->adopt_fd, F_SETFL,
                                 fcntl(cfg->adopt_fd, F_GETFL) | O_NONBLOCK)
                           != 0
            || (cfg->adopt_to
                && fcntl(cfg->adopt_to_fd, F_SETFL,
                         fcntl(cfg->adopt_to_fd, F_GETFL) | O_NONBLOCK) != 0))
        {
            proven_errf(err, errlen, "fd %d: %s", cfg->adopt_fd,
                        strerror(errno));
            proven_relay_free(r);
            return NULL;
        }
        return r;
    }
    r->listen_fd = proven_addr_listen(&cfg->listen, 1024, err, errlen);
    if (r->listen_fd < 0) {
        free(r);
        return NULL;
    }
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    r->listen_end.conn = NULL;
    ev.events = EPOLLIN;
    ev.data.ptr = &r->listen_end;
    if (r->epfd < 0
        || epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->listen_fd, &ev) != 0)
    {
        proven_errf(err, errlen, "epoll: %s", strerror(errno));
        proven_relay_free(r);
        return NULL;
    }
    return r;
}


void
proven_relay_stop(proven_relay_t *r)
{
    r->stop = 1;
}


unsigned long
proven_relay_failures(const proven_relay_t *r)
{
    return r->failed;
}


static void proven_relay_close(proven_relay_t *r, proven_relay_conn_t *c,
    int reset);


void
proven_relay_free(proven_relay_t *r)
{
    proven_relay_conn_t  *dead;

    if (r == NULL) {
        return;
    }
    /* connections still live end as resets: their peers must not wait */
    while (r->conns != NULL) {
        proven_relay_close(r, r->conns, 1);
    }
    while ((dead = r->dead) != NULL) {
        r->dead = dead->next_dead;
        free(dead);
    }
    if (r->listen_fd >= 0) {
        close(r->listen_fd);
    }
    if (r->epfd >= 0) {
        close(r->epfd);
    }
    free(r);
}


/* ---- a connection ------------------------------------------------------ */

static void proven_relay_say_reset(proven_relay_conn_t *c);

/*
 * Closes both sockets at once (a reset: SO_LINGER 0, so each peer sees
 * one); the memory waits for the end of the batch of events, which may
 * still name the connection.
 */
static void
proven_relay_close(proven_relay_t *r, proven_relay_conn_t *c, int reset)
{
    int            i;
    struct linger  lg = { 1, 0 };

    if (c->dead) {
        return;
    }
    if (reset) {
        proven_relay_say_reset(c);
    }
    for (i = 0; i < 2; i++) {
        if (c->fd[i] >= 0) {
            if (reset) {
                (void) setsockopt(c->fd[i], SOL_SOCKET, SO_LINGER, &lg,
                                  sizeof(lg));
            }
            close(c->fd[i]);        /* leaves the epoll set with it */
        }
        if (c->dir[i].pipe[0] >= 0) {
            close(c->dir[i].pipe[0]);
            close(c->dir[i].pipe[1]);
        }
        free(c->dir[i].buf);
    }
    r->live--;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        r->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    if (r->cfg.verbose) {
        fprintf(stderr, "relay: a connection %s\n",
                reset ? "reset" : "closed");
    }
    c->dead = 1;
    c->next_dead = r->dead;
    r->dead = c;
}


/* The events side needs: readable when its inbound direction has room,
 * writable when its outbound one has bytes (or the connect is pending). */
static int
proven_relay_interest(proven_relay_t *r, proven_relay_conn_t *c)
{
    int                  side, keep;
    uint32_t             want;
    proven_relay_dir_t  *in, *out;
    struct epoll_event   ev;

    for (side = 0; side < 2; side++) {
        if (c->fd[side] < 0) {
            continue;
        }
        in = &c->dir[side];             /* from this side */
        out = &c->dir[1 - side];        /* to this side */
        want = 0;
        if (side == 1 && !c->connected) {
            want = EPOLLOUT;
        } else {
            if ((!in->eof && !in->in_full && in->pending < PROVEN_RELAY_CHUNK
                 && (c->connected || side == 1))
                || (in->eof && in->src_framed && !in->src_closed))
            {
                want |= EPOLLIN | EPOLLRDHUP;
            }
            if (out->pending > 0 || out->end_waits) {
                want |= EPOLLOUT;
            }
        }
        /*
         * Nothing wanted, the socket stays in the set all the same: epoll
         * reports an error (a reset) whatever the interest, and a reset
         * after the peer's end of file must still reach the other side.
         * Out once it has hung up (both its directions shut, what we know
         * or what the kernel knows first, its end of file still unread
         * behind a full pipe): a hang-up is reported for good, and left
         * in it would wake the loop forever while the other side drains.
         */
        keep = want != 0 || !(c->hup[side] || (in->eof && out->shut));
        if (want == c->events[side] && keep == c->registered[side]) {
            continue;
        }
        ev.events = want;
        ev.data.ptr = &c->end[side];
        if (!keep) {
            if (c->registered[side]
                && epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd[side], &ev) != 0)
            {
                return -1;
            }
            c->registered[side] = 0;
        } else if (epoll_ctl(r->epfd, c->registered[side] ? EPOLL_CTL_MOD
                                                          : EPOLL_CTL_ADD,
                             c->fd[side], &ev) != 0)
        {
            return -1;
        } else {
            c->registered[side] = 1;
        }
        c->events[side] = want;
    }
    return 0;
}


/*
 * The transport leg (--transport listen|to) is framed, so that an end and
 * a reset cross it as what they are (a unix socket or vsock has no reset
 * of its own): a 4-byte big-endian header, the top two bits the type,
 * the rest the length of the DATA that follows (1..64 KiB).
 */
#define PROVEN_FRAME_DATA   0u
#define PROVEN_FRAME_END    1u
#define PROVEN_FRAME_RESET  2u

static void
proven_frame_header(uint8_t h[4], uint32_t type, uint32_t len)
{
    uint32_t  v = (type << 30) | len;

    h[0] = (uint8_t) (v >> 24);
    h[1] = (uint8_t) (v >> 16);
    h[2] = (uint8_t) (v >> 8);
    h[3] = (uint8_t) v;
}


/* Into the pipe (or buf) from src: up to room bytes; 0, or -1 on error. */
static ssize_t
proven_relay_take(proven_relay_dir_t *dir, int src, size_t room)
{
    if (dir->buf == NULL) {
        if (dir->pipe[0] < 0
            && pipe2(dir->pipe, O_NONBLOCK | O_CLOEXEC) != 0)
        {
            return -1;
        }
        return splice(src, NULL, dir->pipe[1], NULL, room,
                      SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    }
    return read(src, dir->buf + dir->buf_off + dir->pending, room);
}


/* From the pipe (or buf) to dst: up to len bytes. */
static ssize_t
proven_relay_give(proven_relay_dir_t *dir, int dst, size_t len)
{
    ssize_t  n;

    if (dir->buf == NULL) {
        /* no SPLICE_F_MORE: it corks TCP, and a relay does not know
         * whether more is coming (a request's last byte would wait) */
        return splice(dir->pipe[0], NULL, dst, NULL, len,
                      SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    }
    n = send(dst, dir->buf + dir->buf_off, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
        dir->buf_off += (size_t) n;
    }
    return n;
}


/* Sends what is left of the frame header; 1 when it is all out. */
static int
proven_relay_header_out(proven_relay_dir_t *dir, int dst)
{
    ssize_t  n;

    while (dir->hdr_out_off < 4) {
        n = send(dst, dir->hdr_out + dir->hdr_out_off, 4 - dir->hdr_out_off,
                 MSG_NOSIGNAL | MSG_DONTWAIT | MSG_MORE);
        if (n <= 0) {
            return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        }
        dir->hdr_out_off += (size_t) n;
    }
    return 1;
}


/* Moves what it can in direction d; -1: the connection must be reset. */
static int
proven_relay_move(proven_relay_conn_t *c, int d)
{
    int                  src, dst, rc;
    size_t               room, want;
    ssize_t              n;
    uint32_t             v;
    proven_relay_dir_t  *dir;

    dir = &c->dir[d];
    src = c->fd[d];
    dst = c->fd[1 - d];

    dir->moved = 0;
    if (dir->eof && dir->src_framed && !dir->src_closed) {
        /*
         * After END only a RESET may come, or the leg's close, which
         * before our own END has gone out is a reset too (the other relay
         * closes the leg only once both directions have ended).
         */
        n = recv(src, dir->hdr_in + dir->hdr_in_len, 4 - dir->hdr_in_len,
                 MSG_DONTWAIT);
        if (n > 0) {
            dir->hdr_in_len += (size_t) n;
            if (dir->hdr_in_len == 4) {
                return -1;              /* RESET, or bytes past the END */
            }
        } else if (n == 0) {
            dir->src_closed = 1;
            if (!c->dir[1 - d].shut || dir->hdr_in_len > 0) {
                return -1;              /* a RESET cut short is one too */
            }
        } else if (errno != EAGAIN && errno != EINTR) {
            return -1;
        }
    }
    for (;;) {
        /* from the source, while there is room */
        if (dir->buf != NULL && dir->pending == 0) {
            dir->buf_off = 0;
        } else if (dir->buf != NULL && dir->buf_off > 0
                   && dir->buf_off + dir->pending == PROVEN_RELAY_CHUNK)
        {
            /* the room is behind what is left: move it to the front */
            memmove(dir->buf, dir->buf + dir->buf_off, dir->pending);
            dir->buf_off = 0;
        }
        if (dir->moved >= PROVEN_RELAY_FAIR) {
            break;          /* the others' turn; level-triggered, it is back */
        }
        room = PROVEN_RELAY_CHUNK - dir->pending
               - (dir->buf != NULL ? dir->buf_off : 0);
        n = -1;
        errno = EAGAIN;
        if (!dir->eof && room > 0 && dir->src_framed && dir->in_left == 0) {
            /* a frame header, perhaps in pieces */
            n = recv(src, dir->hdr_in + dir->hdr_in_len, 4 - dir->hdr_in_len,
                     MSG_DONTWAIT);
            if (n == 0) {
                return -1;              /* the leg ended without END */
            }
            if (n > 0) {
                dir->hdr_in_len += (size_t) n;
                if (dir->hdr_in_len < 4) {
                    continue;
                }
                dir->hdr_in_len = 0;
                v = ((uint32_t) dir->hdr_in[0] << 24)
                    | ((uint32_t) dir->hdr_in[1] << 16)
                    | ((uint32_t) dir->hdr_in[2] << 8) | dir->hdr_in[3];
                if (v >> 30 == PROVEN_FRAME_END && (v & 0x3fffffff) == 0) {
                    dir->eof = 1;
                } else if (v >> 30 == PROVEN_FRAME_DATA
                           && (v & 0x3fffffff) >= 1
                           && (v & 0x3fffffff) <= PROVEN_RELAY_CHUNK)
                {
                    dir->in_left = v & 0x3fffffff;
                } else {
                    return -1;          /* RESET, or not a frame */
                }
                continue;
            }
        } else if (!dir->eof && room > 0) {
            want = dir->src_framed && dir->in_left < room ? dir->in_left
                                                          : room;
            n = proven_relay_take(dir, src, want);
            if (n < 0 && errno == EINVAL && dir->buf == NULL
                && dir->pending == 0)
            {
                /* this socket type cannot splice: copy */
                dir->buf = malloc(PROVEN_RELAY_CHUNK);
                if (dir->buf == NULL) {
                    return -1;
                }
                dir->copy = 1;
                continue;
            }
            if (n > 0) {
                dir->pending += (size_t) n;
                if (dir->src_framed) {
                    dir->in_left -= (size_t) n;
                }
            } else if (n < 0 && errno == EAGAIN && dir->pending > 0
                       && dir->buf == NULL)
            {
                /*
                 * Readable, yet the pipe takes nothing: its slots are full
                 * of small pieces.  Not read again until some leave, or
                 * the loop would spin.
                 */
                dir->in_full = 1;
            } else if (n == 0) {
                if (dir->src_framed) {
                    return -1;          /* ended inside a frame */
                }
                dir->eof = 1;
            }
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return -1;
        }

        /* to the destination, while it takes them */
        if (dir->pending > 0) {
            if (dir->dst_framed && dir->out_left == 0) {
                /* a new DATA frame for what is there now */
                dir->out_left = dir->pending;
                proven_frame_header(dir->hdr_out, PROVEN_FRAME_DATA,
                                    (uint32_t) dir->out_left);
                dir->hdr_out_off = 0;
            }
            rc = dir->dst_framed ? proven_relay_header_out(dir, dst) : 1;
            if (rc < 0) {
                return -1;
            }
            n = 0;
            if (rc == 1) {
                n = proven_relay_give(dir, dst, dir->dst_framed
                                                ? dir->out_left
                                                : dir->pending);
            }
            if (n > 0) {
                dir->pending -= (size_t) n;
                dir->moved += (size_t) n;
                dir->in_full = 0;
                if (dir->dst_framed) {
                    dir->out_left -= (size_t) n;
                }
                if (dir->pending == 0 && dir->buf != NULL && !dir->copy) {
                    /* the PROXY header is out: splice from now on */
                    free(dir->buf);
                    dir->buf = NULL;
                }
                continue;               /* room again: read more */
            }
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                return -1;
            }
        }
        break;
    }

    if (dir->eof && dir->pending == 0 && !dir->shut) {
        /* the half-close passes on: an END frame, or SHUT_WR */
        if (dir->dst_framed) {
            if (!dir->end_queued) {
                proven_frame_header(dir->hdr_out, PROVEN_FRAME_END, 0);
                dir->hdr_out_off = 0;
                dir->end_queued = 1;
            }
            rc = proven_relay_header_out(dir, dst);
            if (rc < 0) {
                return -1;
            }
            if (rc == 0) {
                dir->end_waits = 1;     /* writable again: finish it */
                return 0;
            }
            dir->end_waits = 0;
        } else {
            (void) shutdown(dst, SHUT_WR);
        }
        dir->shut = 1;
    }
    return 0;
}


/* Before a reset: a RESET frame to a framed side, if it takes it now. */
static void
proven_relay_say_reset(proven_relay_conn_t *c)
{
    int      d;
    uint8_t  h[4];

    for (d = 0; d < 2; d++) {
        if (c->dir[d].dst_framed && c->fd[1 - d] >= 0 && c->connected) {
            proven_frame_header(h, PROVEN_FRAME_RESET, 0);
            /* mid-header or mid-frame a RESET would be read as data: the
             * leg's end without END says the same.  After a whole END it
             * still says that the other direction was reset. */
            if (c->dir[d].out_left == 0 && c->dir[d].hdr_out_off % 4 == 0) {
                (void) send(c->fd[1 - d], h, 4, MSG_NOSIGNAL | MSG_DONTWAIT);
            }
        }
    }
}


/* The listener out of the set for a while (see its use). */
static void
proven_relay_pause(proven_relay_t *r)
{
    struct epoll_event  ev;

    if (r->paused) {
        return;
    }
    ev.events = 0;
    ev.data.ptr = &r->listen_end;
    (void) epoll_ctl(r->epfd, EPOLL_CTL_MOD, r->listen_fd, &ev);
    r->paused = 1;
    r->paused_at = proven_net_now_ms();
}


static void
proven_relay_resume(proven_relay_t *r)
{
    struct epoll_event  ev;

    if (!r->paused) {
        return;
    }
    ev.events = EPOLLIN;
    ev.data.ptr = &r->listen_end;
    (void) epoll_ctl(r->epfd, EPOLL_CTL_MOD, r->listen_fd, &ev);
    r->paused = 0;
}


/* Carries the connection fd (accepted, or adopted) to the target. */
static void
proven_relay_begin(proven_relay_t *r, int fd,
    const struct sockaddr_storage *peer)
{
    int                   target, side, one, adopted;
    char                  err[PROVEN_ERR_LEN];
    uint8_t               header[52];
    size_t                header_len;
    socklen_t             len;
    proven_relay_conn_t  *c;
    struct sockaddr_storage  local;

    one = 1;
    if (r->live >= r->cfg.max_connections) {
        r->refused++;
        close(fd);
        return;
    }

    adopted = r->cfg.adopt && r->cfg.adopt_to;
    if (adopted) {
        target = r->cfg.adopt_to_fd;    /* closed with the connection */
    } else {
        target = proven_addr_connect(&r->cfg.to, err, sizeof(err));
    }
    c = target >= 0 ? calloc(1, sizeof(*c)) : NULL;
    if (c == NULL) {
        if (r->cfg.verbose) {
            fprintf(stderr, "relay: %s\n", target < 0 ? err
                                                      : "out of memory");
        }
        r->failed++;
        if (target >= 0) {
            close(target);
        }
        {
            struct linger  lg = { 1, 0 };

            (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(fd);
        return;
    }

    /* bytes pass on as they come: no Nagle delay on either TCP side */
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    (void) setsockopt(target, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd[0] = fd;
    c->fd[1] = target;
    c->connected = adopted;
    for (side = 0; side < 2; side++) {
        c->dir[side].pipe[0] = c->dir[side].pipe[1] = -1;
        c->end[side].conn = c;
        c->end[side].side = side;
    }
    /* direction 0 reads the client, 1 the target */
    c->dir[0].src_framed = r->cfg.transport == PROVEN_RELAY_LISTEN;
    c->dir[0].dst_framed = r->cfg.transport == PROVEN_RELAY_TO;
    c->dir[1].src_framed = r->cfg.transport == PROVEN_RELAY_TO;
    c->dir[1].dst_framed = r->cfg.transport == PROVEN_RELAY_LISTEN;
    r->live++;
    c->next = r->conns;
    if (r->conns != NULL) {
        r->conns->prev = c;
    }
    r->conns = c;

    /* the target learns the client's address first, if asked */
    if (r->cfg.proxy_protocol) {
        len = sizeof(local);
        if (getsockname(fd, (struct sockaddr *) &local, &len) != 0) {
            local.ss_family = AF_UNSPEC;
        }
        header_len = proven_proxy_v2_header((const struct sockaddr *) peer,
                                            (struct sockaddr *) &local,
                                            header);
        c->dir[0].buf = malloc(PROVEN_RELAY_CHUNK);
        if (c->dir[0].buf == NULL) {
            proven_relay_close(r, c, 1);
            return;
        }
        /* sent ahead of the client's bytes, through the copy path */
        memcpy(c->dir[0].buf, header, header_len);
        c->dir[0].pending = header_len;
    }

    if (proven_relay_interest(r, c) != 0) {
        proven_relay_close(r, c, 1);
    }
}


static void
proven_relay_accept(proven_relay_t *r)
{
    int                      fd, i;
    socklen_t                len;
    struct sockaddr_storage  peer;

    for (i = 0; i < PROVEN_RELAY_ACCEPTS; i++) {
        len = sizeof(peer);
        fd = accept4(r->listen_fd, (struct sockaddr *) &peer, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                /*
                 * Out of descriptors or memory: the listener would stay
                 * readable and wake the loop at once, forever.  It sleeps
                 * a while (or until a connection closes) instead.
                 */
                r->failed++;
                proven_relay_pause(r);
            }
            return;
        }
        r->accepted++;
        proven_relay_begin(r, fd, &peer);
    }
}


static void
proven_relay_event(proven_relay_t *r, proven_relay_conn_t *c, int side,
    uint32_t events)
{
    int        soerr, d;
    socklen_t  len;

    if (c->dead) {
        return;
    }
    if (events & EPOLLHUP) {
        c->hup[side] = 1;               /* out of the set when idle */
    }
    if (side == 0 && !c->connected) {
        /* the client is not read before the target answers: only its
         * end (always reported) matters */
        if (events & (EPOLLERR | EPOLLHUP)) {
            proven_relay_close(r, c, 1);
        }
        return;
    }
    if (side == 1 && !c->connected) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            return;
        }
        len = sizeof(soerr);
        if (getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &soerr, &len) != 0
            || soerr != 0)
        {
            if (r->cfg.verbose) {
                fprintf(stderr, "relay: %s: %s\n", r->cfg.to.text,
                        strerror(soerr ? soerr : errno));
            }
            r->failed++;
            proven_relay_close(r, c, 1);
            return;
        }
        c->connected = 1;
    }

    if (events & EPOLLERR) {
        proven_relay_close(r, c, 1);
        return;
    }

    for (d = 0; d < 2; d++) {
        if (proven_relay_move(c, d) != 0) {
            proven_relay_close(r, c, 1);
            return;
        }
    }

    if (c->dir[0].shut && c->dir[1].shut) {
        proven_relay_close(r, c, 0);
        return;
    }
    if (proven_relay_interest(r, c) != 0) {
        proven_relay_close(r, c, 1);
    }
}


int
proven_relay_run(proven_relay_t *r, char *err, size_t errlen)
{
    int                   n, i;
    int64_t               last;
    proven_relay_end_t   *end;
    proven_relay_conn_t  *dead;
    struct epoll_event    events[PROVEN_RELAY_EVENTS];

    if (r->cfg.adopt) {
        struct sockaddr_storage  peer;
        socklen_t                len;

        len = sizeof(peer);
        if (getpeername(r->cfg.adopt_fd, (struct sockaddr *) &peer, &len)
            != 0)
        {
            peer.ss_family = AF_UNSPEC;
        }
        r->accepted++;
        proven_relay_begin(r, r->cfg.adopt_fd, &peer);
    }
    /* an adopted connection is the only one: done when it is */
    last = proven_net_now_ms();
    while (!r->stop && !(r->cfg.adopt && r->live == 0)) {
        n = epoll_wait(r->epfd, events, PROVEN_RELAY_EVENTS,
                       r->paused ? PROVEN_RELAY_PAUSE_MS : 1000);
        if (n > 0) {
            last = proven_net_now_ms();
        } else if (n == 0 && r->cfg.adopt && r->cfg.idle_ms
                   && proven_net_now_ms() - last >= r->cfg.idle_ms)
        {
            break;                      /* idle: both ends closed below */
        }
        if (r->paused && proven_net_now_ms() >= r->paused_at
                                                  + PROVEN_RELAY_PAUSE_MS)
        {
            proven_relay_resume(r);
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            proven_errf(err, errlen, "epoll_wait: %s", strerror(errno));
            return PROVEN_ERR;
        }
        for (i = 0; i < n; i++) {
            end = events[i].data.ptr;
            if (end->conn == NULL) {
                proven_relay_accept(r);
            } else {
                proven_relay_event(r, end->conn, end->side, events[i].events);
            }
        }
        while ((dead = r->dead) != NULL) {
            r->dead = dead->next_dead;
            free(dead);
        }
    }
    return PROVEN_OK;
}


/* ---- PROXY protocol v2 ---------------------------------------------------- */

size_t
proven_proxy_v2_header(const struct sockaddr *src, const struct sockaddr *dst,
    uint8_t out[52])
{
    static const uint8_t  sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };
    size_t                n;
    const struct sockaddr_in   *s4, *d4;
    const struct sockaddr_in6  *s6, *d6;

    memcpy(out, sig, sizeof(sig));
    n = 16;
    if (src->sa_family == AF_INET && dst->sa_family == AF_INET) {
        s4 = (const struct sockaddr_in *) src;
        d4 = (const struct sockaddr_in *) dst;
        out[12] = 0x21;                 /* version 2, PROXY */
        out[13] = 0x11;                 /* TCP over IPv4 */
        memcpy(out + 16, &s4->sin_addr, 4);
        memcpy(out + 20, &d4->sin_addr, 4);
        memcpy(out + 24, &s4->sin_port, 2);
        memcpy(out + 26, &d4->sin_port, 2);
        n += 12;
    } else if (src->sa_family == AF_INET6 && dst->sa_family == AF_INET6) {
        s6 = (const struct sockaddr_in6 *) src;
        d6 = (const struct sockaddr_in6 *) dst;
        out[12] = 0x21;
        out[13] = 0x21;                 /* TCP over IPv6 */
        memcpy(out + 16, &s6->sin6_addr, 16);
        memcpy(out + 32, &d6->sin6_addr, 16);
        memcpy(out + 48, &s6->sin6_port, 2);
        memcpy(out + 50, &d6->sin6_port, 2);
        n += 36;
    } else {
        out[12] = 0x20;                 /* version 2, LOCAL */
        out[13] = 0x00;
    }
    out[14] = (uint8_t) ((n - 16) >> 8);
    out[15] = (uint8_t) (n - 16);
    return n;
}
