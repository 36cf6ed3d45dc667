/* A process per connection: see proven_net.h. */

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proven.h"
#include "net/proven_net.h"


void
proven_serve_forked(int fd, const proven_serve_t *s)
{
    int            cfd;
    pid_t          pid;
    unsigned       children;
    struct pollfd  pfd;

    children = 0;
    while (!*s->stop) {
        while (children > 0 && waitpid(-1, NULL, WNOHANG) > 0) {
            children--;
        }
        pfd.fd = fd;
        pfd.events = POLLIN;
        if (poll(&pfd, 1, 200) <= 0) {
            continue;
        }
        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            continue;
        }
        if (children >= s->max) {
            if (s->refuse != NULL) {
                s->refuse(s->arg, cfd);
            }
            close(cfd);
            continue;
        }
        pid = fork();
        if (pid == 0) {
            close(fd);
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            if (s->lifetime_s > 0) {
                alarm(s->lifetime_s);   /* its whole life, bounded */
            }
            s->handle(s->arg, cfd);
            _exit(0);
        }
        close(cfd);
        children += pid > 0;
    }
    while (s->wait_children && children-- > 0 && wait(NULL) > 0) {
        /* the connections under way end within their lifetime */
    }
}
