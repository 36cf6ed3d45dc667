/* Transport addresses: vsock:CID:PORT, unix:PATH, tcp:HOST:PORT. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "proven.h"
#include "net/proven_net.h"


/* A decimal number of at most max, the whole text. */
static int
proven_addr_number(const char *text, unsigned long max, unsigned long *out)
{
    char  *end;

    if (text[0] < '0' || text[0] > '9') {
        return PROVEN_ERR;
    }
    errno = 0;
    *out = strtoul(text, &end, 10);
    return errno == 0 && *end == '\0' && *out <= max ? PROVEN_OK : PROVEN_ERR;
}


static int
proven_addr_tcp(const char *rest, proven_addr_t *addr, char *err,
    size_t errlen)
{
    char                  host[64];
    const char           *colon;
    size_t                len;
    unsigned long         port;
    struct sockaddr_in   *in4;
    struct sockaddr_in6  *in6;

    /* [v6]:port or v4:port */
    colon = strrchr(rest, ':');
    if (colon == NULL || proven_addr_number(colon + 1, 65535, &port)
                         != PROVEN_OK)
    {
        proven_errf(err, errlen, "tcp:HOST:PORT needs a port (0..65535)");
        return PROVEN_ERR;
    }
    len = (size_t) (colon - rest);
    if (len >= 2 && rest[0] == '[' && rest[len - 1] == ']') {
        rest++;
        len -= 2;
    } else if (memchr(rest, ':', len) != NULL) {
        /* tcp:::1:80 reads two ways: the form says which */
        proven_errf(err, errlen, "tcp: an IPv6 host goes in brackets, "
                    "tcp:[::1]:PORT");
        return PROVEN_ERR;
    }
    if (len == 0 || len >= sizeof(host)) {
        proven_errf(err, errlen, "tcp:HOST:PORT needs a host");
        return PROVEN_ERR;
    }
    memcpy(host, rest, len);
    host[len] = '\0';

    in4 = (struct sockaddr_in *) &addr->sa;
    in6 = (struct sockaddr_in6 *) &addr->sa;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t) port);
        addr->len = sizeof(*in4);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t) port);
        addr->len = sizeof(*in6);
    } else {
        proven_errf(err, errlen, "tcp: \"%s\" is not a numeric address (no "
                    "name is looked up)", host);
        return PROVEN_ERR;
    }
    addr->kind = PROVEN_ADDR_TCP;
    return PROVEN_OK;
}


int
proven_addr_parse(const char *text, proven_addr_t *addr, char *err,
    size_t errlen)
{
    const char          *colon;
    unsigned long        cid, port;
    struct sockaddr_un  *un;
    struct sockaddr_vm  *vm;
    char                 cid_text[16];

    memset(addr, 0, sizeof(*addr));
    if (strlen(text) >= sizeof(addr->text)) {
        proven_errf(err, errlen, "an address is at most %d bytes",
                    PROVEN_ADDR_TEXT_MAX - 1);
        return PROVEN_ERR;
    }
    snprintf(addr->text, sizeof(addr->text), "%s", text);

    if (strncmp(text, "tcp:", 4) == 0) {
        return proven_addr_tcp(text + 4, addr, err, errlen);
    }

    if (strncmp(text, "unix:", 5) == 0) {
        un = (struct sockaddr_un *) &addr->sa;
        if (text[5] == '\0' || strlen(text + 5) >= sizeof(un->sun_path)) {
            proven_errf(err, errlen, "unix:PATH needs a path of 1 to %zu "
                        "bytes", sizeof(un->sun_path) - 1);
            return PROVEN_ERR;
        }
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof(un->sun_path), "%s", text + 5);
        addr->len = sizeof(*un);
        addr->kind = PROVEN_ADDR_UNIX;
        return PROVEN_OK;
    }

    if (strncmp(text, "vsock:", 6) == 0) {
        colon = strchr(text + 6, ':');
        if (colon == NULL || (size_t) (colon - text - 6) >= sizeof(cid_text))
        {
            proven_errf(err, errlen, "vsock:CID:PORT needs a CID and a port");
            return PROVEN_ERR;
        }
        memcpy(cid_text, text + 6, (size_t) (colon - text - 6));
        cid_text[colon - text - 6] = '\0';
        if (strcmp(cid_text, "any") == 0) {
            cid = VMADDR_CID_ANY;
        } else if (proven_addr_number(cid_text, UINT32_MAX - 1, &cid)
                   != PROVEN_OK)
        {
            proven_errf(err, errlen, "vsock: the CID is a number or \"any\", "
                        "not \"%s\"", cid_text);
            return PROVEN_ERR;
        }
        if (proven_addr_number(colon + 1, UINT32_MAX - 1, &port)
            != PROVEN_OK)
        {
            proven_errf(err, errlen, "vsock: the port is a number, not "
                        "\"%s\"", colon + 1);
            return PROVEN_ERR;
        }
        vm = (struct sockaddr_vm *) &addr->sa;
        vm->svm_family = AF_VSOCK;
        vm->svm_cid = (unsigned) cid;
        vm->svm_port = (unsigned) port;
        addr->len = sizeof(*vm);
        addr->kind = PROVEN_ADDR_VSOCK;
        return PROVEN_OK;
    }

    proven_errf(err, errlen, "\"%s\" is not vsock:CID:PORT, unix:PATH or "
                "tcp:HOST:PORT", text);
    return PROVEN_ERR;
}


/* A non-blocking, close-on-exec stream socket of the address's family. */
static int
proven_addr_socket(const proven_addr_t *addr, char *err, size_t errlen)
{
    int  fd;

    fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK
                | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        proven_errf(err, errlen, "%s: socket: %s", addr->text,
                    strerror(errno));
    }
    return fd;
}


int
proven_addr_listen(const proven_addr_t *addr, int backlog, char *err,
    size_t errlen)
{
    int                  fd, one, probe, live;
    struct stat          st;
    const char          *path;

    fd = proven_addr_socket(addr, err, errlen);
    if (fd < 0) {
        return -1;
    }

    one = 1;
    if (addr->kind == PROVEN_ADDR_TCP) {
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    }
    if (addr->kind == PROVEN_ADDR_UNIX) {
        /* a socket a dead listener left: replaced; a live listener's, or
           anything else: kept (a connect says which; on a unix socket it
           does not wait) */
        path = ((const struct sockaddr_un *) &addr->sa)->sun_path;
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            live = probe >= 0 && connect(probe, (const struct sockaddr *)
                                         &addr->sa, addr->len) == 0;
            if (probe >= 0) {
                close(probe);
            }
            if (live) {
                proven_errf(err, errlen, "%s: another process listens there",
                            addr->text);
                close(fd);
                return -1;
            }
            (void) unlink(path);
        }
    }

    if (bind(fd, (const struct sockaddr *) &addr->sa, addr->len) != 0
        || listen(fd, backlog) != 0)
    {
        proven_errf(err, errlen, "%s: %s", addr->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}


int
proven_addr_connect(const proven_addr_t *addr, char *err, size_t errlen)
{
    int  fd;

    fd = proven_addr_socket(addr, err, errlen);
    if (fd < 0) {
        return -1;
    }
    if (connect(fd, (const struct sockaddr *) &addr->sa, addr->len) != 0
        && errno != EINPROGRESS)
    {
        proven_errf(err, errlen, "%s: %s", addr->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}


int64_t
proven_net_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


int
proven_write_all(int fd, const void *buf, size_t len)
{
    ssize_t         n;
    const uint8_t  *p;

    for (p = buf; len > 0; p += n, len -= (size_t) n) {
        n = write(fd, p, len);
        if (n < 0 && errno == EINTR) {
            n = 0;
            continue;
        }
        if (n <= 0) {
            if (n == 0) {
                errno = EIO;
            }
            return PROVEN_ERR;
        }
    }
    return PROVEN_OK;
}
