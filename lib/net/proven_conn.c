/* A frame connection in blocking style under deadlines: see proven_net.h. */

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proven.h"
#include "proven_net.h"


int
proven_conn_wait(proven_conn_t *c, short events, char *err, size_t errlen)
{
    int            n;
    int64_t        left;
    struct pollfd  pfd;

    for ( ;; ) {
        left = c->deadline - proven_net_now_ms();
        if (left <= 0) {
            proven_errf(err, errlen, "no answer in time");
            return PROVEN_ERR;
        }
        pfd.fd = c->fd;
        pfd.events = events;
        pfd.revents = 0;
        n = poll(&pfd, 1, (int) left);
        if (n > 0) {
            return PROVEN_OK;
        }
        if (n < 0 && errno != EINTR) {
            proven_errf(err, errlen, "poll: %s", strerror(errno));
            return PROVEN_ERR;
        }
    }
}


void
proven_conn_init(proven_conn_t *c, int fd, size_t max_body)
{
    c->fd = fd;
    c->exact = 0;
    c->deadline = proven_net_now_ms();
    proven_frame_reader_init(&c->reader, max_body);
}


void
proven_conn_deadline(proven_conn_t *c, int timeout_ms)
{
    c->deadline = proven_net_now_ms() + timeout_ms;
}


int
proven_conn_connect(proven_conn_t *c, const proven_addr_t *addr,
    int timeout_ms, size_t max_body, char *err, size_t errlen)
{
    int        fd, soerr;
    socklen_t  len;

    proven_conn_init(c, -1, max_body);
    proven_conn_deadline(c, timeout_ms);
    fd = proven_addr_connect(addr, err, errlen);
    if (fd < 0) {
        return PROVEN_ERR;
    }
    c->fd = fd;
    if (proven_conn_wait(c, POLLOUT, err, errlen) != PROVEN_OK) {
        proven_conn_close(c);
        return PROVEN_ERR;
    }
    len = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr) {
        proven_errf(err, errlen, "%s: %s", addr->text,
                    strerror(soerr ? soerr : errno));
        proven_conn_close(c);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


int
proven_conn_send(proven_conn_t *c, const uint8_t *buf, size_t len,
    char *err, size_t errlen)
{
    ssize_t  n;

    while (len > 0) {
        if (proven_conn_wait(c, POLLOUT, err, errlen) != PROVEN_OK) {
            return PROVEN_ERR;
        }
        n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }
            proven_errf(err, errlen, "send: %s", strerror(errno));
            return PROVEN_ERR;
        }
        buf += n;
        len -= (size_t) n;
    }
    return PROVEN_OK;
}


/* What is left of the frame being read (its header first), at most avail:
 * what an exact reader asks for, so the bytes after it stay unread. */
static size_t
proven_conn_frame_rest(const proven_conn_t *c, size_t avail)
{
    size_t          have, need;
    const uint8_t  *p;

    have = proven_frame_reader_pending(&c->reader);
    need = PROVEN_FRAME_HEADER;
    if (have >= PROVEN_FRAME_HEADER) {
        p = c->reader.buf + c->reader.start;
        need += ((size_t) p[0] << 24) | ((size_t) p[1] << 16)
                | ((size_t) p[2] << 8) | p[3];
    }
    need -= have < need ? have : need;
    return need < avail ? need : avail;
}


int
proven_conn_recv(proven_conn_t *c, const uint8_t **body, size_t *len,
    char *err, size_t errlen)
{
    int       rc;
    size_t    avail;
    ssize_t   n;
    uint8_t  *space;

    for ( ;; ) {
        rc = proven_frame_reader_next(&c->reader, body, len, err, errlen);
        if (rc != PROVEN_AGAIN) {
            return rc;
        }
        if (proven_conn_wait(c, POLLIN, err, errlen) != PROVEN_OK) {
            return PROVEN_ERR;
        }
        space = proven_frame_reader_space(&c->reader, &avail);
        if (space == NULL || avail == 0) {
            proven_errf(err, errlen, "out of memory");
            return PROVEN_ERR;
        }
        if (c->exact) {
            avail = proven_conn_frame_rest(c, avail);
        }
        n = recv(c->fd, space, avail, 0);
        if (n == 0) {
            proven_errf(err, errlen, "the peer closed the connection");
            return PROVEN_ERR;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }
            proven_errf(err, errlen, "recv: %s", strerror(errno));
            return PROVEN_ERR;
        }
        proven_frame_reader_fill(&c->reader, (size_t) n);
    }
}


void
proven_conn_close(proven_conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    proven_frame_reader_free(&c->reader);
}


int
proven_conn_call(proven_conn_t *c, const cbor_item_t *req,
    proven_response_t *res, char *err, size_t errlen)
{
    int             rc;
    size_t          len;
    uint8_t        *frame;
    const uint8_t  *body;

    memset(res, 0, sizeof(*res));
    if (proven_frame_encode(req, &frame, &len, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    rc = proven_conn_send(c, frame, len, err, errlen);
    free(frame);
    if (rc != PROVEN_OK
        || proven_conn_recv(c, &body, &len, err, errlen) != PROVEN_OK
        || proven_response_decode(body, len, res, err, errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


int
proven_conn_send_data(proven_conn_t *c, int fd, uint64_t len, int idle_ms,
    char *err, size_t errlen)
{
    int                     rc;
    size_t                  flen;
    ssize_t                 n;
    uint8_t                 buf[PROVEN_DATA_FRAME], *frame;
    proven_frame_builder_t  b;

    for ( ; len > 0; len -= (uint64_t) n) {
        n = read(fd, buf, len < sizeof(buf) ? (size_t) len : sizeof(buf));
        if (n <= 0) {
            proven_errf(err, errlen, "the file changed while read");
            return PROVEN_ERR;
        }
        proven_frame_builder_init(&b, (size_t) n + 16, PROVEN_DATA_FRAME + 64);
        proven_frame_put_head(&b, 5, 1);
        proven_frame_put_text(&b, "data");
        proven_frame_put_string(&b, PROVEN_CBOR_BYTES, buf, (size_t) n);
        if (proven_frame_builder_finish(&b, &frame, &flen) != PROVEN_OK) {
            proven_errf(err, errlen, "out of memory");
            return PROVEN_ERR;
        }
        if (idle_ms > 0) {
            proven_conn_deadline(c, idle_ms);
        }
        rc = proven_conn_send(c, frame, flen, err, errlen);
        free(frame);
        if (rc != PROVEN_OK) {
            return PROVEN_ERR;
        }
    }
    return PROVEN_OK;
}


int
proven_conn_recv_data(proven_conn_t *c, int fd, uint64_t want, int idle_ms,
    char *err, size_t errlen)
{
    int             rc;
    size_t          len;
    uint64_t        got;
    cbor_item_t    *frame, *data;
    const uint8_t  *body;

    for (got = 0; got < want; ) {
        if (idle_ms > 0) {
            proven_conn_deadline(c, idle_ms);
        }
        if (proven_conn_recv(c, &body, &len, err, errlen) != PROVEN_OK) {
            proven_errf(err, errlen, "the stream ended after %llu of %llu "
                        "bytes", (unsigned long long) got,
                        (unsigned long long) want);
            return PROVEN_ERR;
        }
        frame = proven_cbor_load(body, len, err, errlen);
        data = frame != NULL ? proven_cbor_map_get(frame, "data") : NULL;
        if (data == NULL || !cbor_isa_bytestring(data)
            || !cbor_bytestring_is_definite(data))
        {
            proven_errf(err, errlen, "a frame that is not {\"data\": bytes}");
            rc = PROVEN_ERR;
        } else if (cbor_bytestring_length(data) > want - got) {
            proven_errf(err, errlen, "more bytes than said");
            rc = PROVEN_ERR;
        } else {
            rc = proven_write_all(fd, cbor_bytestring_handle(data),
                                  cbor_bytestring_length(data));
            if (rc != PROVEN_OK) {
                proven_errf(err, errlen, "%s", strerror(errno));
            }
            got += cbor_bytestring_length(data);
        }
        if (frame != NULL) {
            cbor_decref(&frame);
        }
        if (rc != PROVEN_OK) {
            return PROVEN_ERR;
        }
    }
    return PROVEN_OK;
}
