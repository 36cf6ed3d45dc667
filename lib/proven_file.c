/*
 * Whole files: written through a new file renamed over the old (a reader
 * sees the old or the new, never a part), read with a bound.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proven.h"


int
proven_write_file(const char *path, const void *data, size_t len,
    mode_t mode, char *err, size_t errlen)
{
    int          fd;
    char         tmp[4096];
    ssize_t      n;
    size_t       done;

    if ((size_t) snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        proven_errf(err, errlen, "path too long: %s", path);
        return PROVEN_ERR;
    }

    (void) unlink(tmp);

    /* O_EXCL with the final mode: the file is never readable by others. */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
              mode);
    if (fd == -1) {
        proven_errf(err, errlen, "open %s: %s", tmp, strerror(errno));
        return PROVEN_ERR;
    }

    for (done = 0; done < len; done += (size_t) n) {
        n = write(fd, (const uint8_t *) data + done, len - done);
        if (n <= 0) {
            if (n == -1 && errno == EINTR) {
                n = 0;
                continue;
            }
            proven_errf(err, errlen, "write %s: %s", tmp, strerror(errno));
            goto failed;
        }
    }

    if (fsync(fd) != 0) {
        proven_errf(err, errlen, "fsync %s: %s", tmp, strerror(errno));
        goto failed;
    }

    if (close(fd) != 0) {
        fd = -1;
        proven_errf(err, errlen, "close %s: %s", tmp, strerror(errno));
        goto failed;
    }

    fd = -1;

    if (rename(tmp, path) != 0) {
        proven_errf(err, errlen, "rename %s: %s", path, strerror(errno));
        goto failed;
    }

    return PROVEN_OK;

failed:

    if (fd != -1) {
        close(fd);
    }

    (void) unlink(tmp);
    return PROVEN_ERR;
}


int
proven_read_file(const char *path, size_t max, uint8_t **out,
    size_t *outlen, char *err, size_t errlen)
{
    int          fd;
    ssize_t      n;
    size_t       done;
    uint8_t     *buf;
    struct stat  st;

    buf = NULL;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd == -1) {
        proven_errf(err, errlen, "open %s: %s", path, strerror(errno));
        return PROVEN_ERR;
    }

    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        proven_errf(err, errlen, "%s is not a regular file", path);
        goto failed;
    }

    if ((uint64_t) st.st_size > max) {
        proven_errf(err, errlen, "%s is larger than %zu bytes", path, max);
        goto failed;
    }

    buf = malloc((size_t) st.st_size + 1);
    if (buf == NULL) {
        proven_errf(err, errlen, "out of memory");
        goto failed;
    }

    for (done = 0; done < (size_t) st.st_size; done += (size_t) n) {
        n = read(fd, buf + done, (size_t) st.st_size - done);
        if (n == -1 && errno == EINTR) {
            n = 0;
            continue;
        }
        if (n <= 0) {
            proven_errf(err, errlen, "read %s: %s", path,
                        n == 0 ? "file shrank" : strerror(errno));
            goto failed;
        }
    }

    close(fd);
    buf[done] = '\0';
    *out = buf;
    *outlen = done;
    return PROVEN_OK;

failed:

    free(buf);
    close(fd);
    return PROVEN_ERR;
}
