/* A process per connection: see proven_net.h. */

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proven.h"
#include "net/proven_net.h"


void
proven_serve_forked(int fd, const proven_serve_t *s)
{
    int            cfd, failed;
    pid_t          pid;
    size_t         i, n, listener;
    time_t         ticked;
    unsigned       children;
    struct pollfd  pfd[PROVEN_SERVE_LISTENERS + 1];

    children = 0;
    ticked = 0;
    while (!*s->stop) {
        while (children > 0 && waitpid(-1, NULL, WNOHANG) > 0) {
            children--;
        }
        if (s->tick != NULL && time(NULL) != ticked) {
            ticked = time(NULL);
            s->tick(s->arg);
        }
        pfd[0].fd = fd;
        n = 1;
        for (i = 0; s->more != NULL && i < *s->nmore
                    && n < PROVEN_SERVE_LISTENERS + 1; i++)
        {
            pfd[n++].fd = s->more[i];
        }
        for (i = 0; i < n; i++) {
            pfd[i].events = POLLIN;
            pfd[i].revents = 0;
        }
        if (poll(pfd, n, 200) <= 0) {
            continue;
        }
        failed = 0;
        for (i = 0; i < n; i++) {
            if (!(pfd[i].revents & POLLIN)) {
                failed |= pfd[i].revents != 0;
                continue;
            }
            listener = i;
            cfd = accept4(pfd[i].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
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
                /* a server started again must be able to listen while
                 * this connection lives on */
                for (i = 0; i < n; i++) {
                    close(pfd[i].fd);
                }
                signal(SIGINT, SIG_DFL);
                signal(SIGTERM, SIG_DFL);
                if (s->lifetime_s > 0) {
                    alarm(s->lifetime_s);   /* its whole life, bounded */
                }
                s->handle(s->arg, cfd, listener);
                _exit(0);
            }
            close(cfd);
            children += pid > 0;
        }
        if (failed) {
            /* a listener in error would wake poll at once, for ever */
            (void) poll(NULL, 0, 200);
        }
    }
    while (s->wait_children && children-- > 0 && wait(NULL) > 0) {
        /* the connections under way end within their lifetime */
    }
}
