/*
 * proven-relay --listen ADDR --to ADDR [--proxy-protocol] [--max N]
 *              [--verbose]
 *
 * Carries every connection accepted on one transport address to the other
 * (lib/net): on the host, the node's public TCP ports to the enclave's
 * vsock (--transport to); inside the enclave, vsock to nginx on loopback
 * (--transport listen).  TLS passes
 * through untouched.  SIGINT or SIGTERM stops it.
 */

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proven.h"
#include "net/proven_net.h"


static proven_relay_t  *relay;


static void
relay_on_signal(int sig)
{
    (void) sig;
    if (relay != NULL) {
        proven_relay_stop(relay);
    }
}


/*
 * --listen fd:N: N must be a connected stream socket.  qemu's guestfwd
 * gives one socket as stdin, stdout and stderr: the relay takes a copy of
 * its own, and every standard descriptor that is that socket becomes
 * /dev/null, so nothing of ours is written to it and closing our copy
 * closes the connection.
 */
static int
relay_adopt(proven_relay_config_t *cfg, int fd)
{
    int                      type, null, own, i;
    socklen_t                len;
    struct stat              a, b;
    struct sockaddr_storage  peer;

    len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0
        || type != SOCK_STREAM || fstat(fd, &a) != 0)
    {
        return -1;
    }
    len = sizeof(peer);
    if (getpeername(fd, (struct sockaddr *) &peer, &len) != 0) {
        return -1;                      /* a listener, or not connected */
    }
    own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (own < 0 || null < 0) {
        return -1;
    }
    for (i = 0; i <= 2; i++) {
        if (i == fd || (fstat(i, &b) == 0 && a.st_dev == b.st_dev
                        && a.st_ino == b.st_ino))
        {
            if (dup2(null, i) < 0) {
                return -1;
            }
        }
    }
    if (fd > 2) {
        close(fd);
    }
    close(null);
    cfg->adopt = 1;
    cfg->adopt_fd = own;
    return 0;
}


static void
relay_usage(FILE *out)
{
    fprintf(out,
        "usage: proven-relay --listen ADDR --to ADDR [--transport listen|to]\n"
        "                    [--proxy-protocol] [--max N] [--verbose]\n"
        "\n"
        "ADDR: vsock:CID:PORT (CID any to listen), unix:PATH or\n"
        "tcp:HOST:PORT (a numeric host); --listen fd:N carries the one\n"
        "connected socket N (qemu's guestfwd hands one on stdin), then ends.  --proxy-protocol sends a PROXY v2\n"
        "header with the client's address first; --max: connections at\n"
        "once (default 4096), more are refused.  --transport names the side\n"
        "that is the leg between two relays (the host's and the enclave's):\n"
        "framed there, so that an end and a reset cross it as they are.\n");
}


int
main(int argc, char **argv)
{
    int                     i, rc;
    char                    err[PROVEN_ERR_LEN], *end;
    unsigned long           max;
    struct sigaction        sa;
    proven_relay_config_t   cfg;
    const char             *listen_text, *to_text;

    memset(&cfg, 0, sizeof(cfg));
    listen_text = to_text = NULL;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_text = argv[++i];
        } else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) {
            to_text = argv[++i];
        } else if (strcmp(argv[i], "--transport") == 0 && i + 1 < argc) {
            i++;
            if (strcmp(argv[i], "listen") == 0) {
                cfg.transport = PROVEN_RELAY_LISTEN;
            } else if (strcmp(argv[i], "to") == 0) {
                cfg.transport = PROVEN_RELAY_TO;
            } else {
                fprintf(stderr, "proven-relay: --transport is listen or to\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--proxy-protocol") == 0) {
            cfg.proxy_protocol = 1;
        } else if (strcmp(argv[i], "--verbose") == 0) {
            cfg.verbose = 1;
        } else if (strcmp(argv[i], "--max") == 0 && i + 1 < argc) {
            max = strtoul(argv[++i], &end, 10);
            if (*end != '\0' || max < 1 || max > 1000000) {
                fprintf(stderr, "proven-relay: --max wants 1 to 1000000\n");
                return 2;
            }
            cfg.max_connections = (unsigned) max;
        } else if (strcmp(argv[i], "--help") == 0) {
            relay_usage(stdout);
            return 0;
        } else {
            relay_usage(stderr);
            return 2;
        }
    }
    if (listen_text == NULL || to_text == NULL) {
        relay_usage(stderr);
        return 2;
    }
    if (strncmp(listen_text, "fd:", 3) == 0) {
        /* one connection handed over (qemu's guestfwd: on stdin) */
        max = strtoul(listen_text + 3, &end, 10);
        if (listen_text[3] < '0' || listen_text[3] > '9' || *end != '\0'
            || max > 1023 || relay_adopt(&cfg, (int) max) != 0)
        {
            fprintf(stderr, "proven-relay: --listen fd:N wants a connected "
                    "stream socket N\n");
            return 2;
        }
        snprintf(cfg.listen.text, sizeof(cfg.listen.text), "%s", listen_text);
    } else if (proven_addr_parse(listen_text, &cfg.listen, err, sizeof(err))
               != PROVEN_OK)
    {
        fprintf(stderr, "proven-relay: %s\n", err);
        return 2;
    }
    if (proven_addr_parse(to_text, &cfg.to, err, sizeof(err)) != PROVEN_OK) {
        fprintf(stderr, "proven-relay: %s\n", err);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    relay = proven_relay_new(&cfg, err, sizeof(err));
    if (relay == NULL) {
        fprintf(stderr, "proven-relay: %s\n", err);
        return 1;
    }
    sa.sa_handler = relay_on_signal;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    fprintf(stderr, "proven-relay: %s -> %s\n", cfg.listen.text, cfg.to.text);
    rc = proven_relay_run(relay, err, sizeof(err));
    if (rc != PROVEN_OK) {
        fprintf(stderr, "proven-relay: %s\n", err);
    }
    /* one connection that could not be carried is a failure to say */
    if (rc == PROVEN_OK && cfg.adopt && proven_relay_failures(relay) > 0) {
        rc = PROVEN_ERR;
    }
    proven_relay_free(relay);
    return rc == PROVEN_OK ? 0 : 1;
}
