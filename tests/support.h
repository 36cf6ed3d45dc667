/*
 * Helpers shared by the tests that drive provend over its socket.  Include
 * after <cmocka.h>: send_all() asserts.
 */

#ifndef PROVEN_TESTS_SUPPORT_H
#define PROVEN_TESTS_SUPPORT_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static void
sleep_ms(long ms)
{
    struct timespec  ts = { ms / 1000, (ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}


static int
try_connect(const char *path)
{
    int                 fd;
    struct sockaddr_un  sa;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        return -1;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);

    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }

    return fd;
}


static void
send_all(int fd, const void *buf, size_t len)
{
    ssize_t  w;
    size_t   done;

    for (done = 0; done < len; done += (size_t) w) {
        w = send(fd, (const uint8_t *) buf + done, len - done, MSG_NOSIGNAL);
        assert_true(w > 0);
    }
}


static void
remove_tree(const char *path)
{
    pid_t  pid;

    /* Test scaffolding only: rm -rf of our own mkdtemp directory. */
    pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", path, (char *) NULL);
        _exit(127);
    }
    if (pid > 0) {
        waitpid(pid, NULL, 0);
    }
}

#endif /* PROVEN_TESTS_SUPPORT_H */
