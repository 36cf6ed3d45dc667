/* File system helpers: directories, whole files, the node id. */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "proven.h"
#include "util.h"



int
provend_mkdirs(const char *path, mode_t mode, char *err, size_t errlen)
{
    char         buf[4096];
    size_t       len, i;
    struct stat  st;

    len = strlen(path);
    if (len == 0 || len >= sizeof(buf)) {
        proven_errf(err, errlen, "directory path is empty or too long");
        return PROVEN_ERR;
    }

    memcpy(buf, path, len + 1);

    /* Each prefix ending before a '/', then the whole path. */
    for (i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') {
            continue;
        }

        buf[i] = '\0';

        if (mkdir(buf, mode) != 0 && errno != EEXIST) {
            proven_errf(err, errlen, "mkdir %s: %s", buf, strerror(errno));
            return PROVEN_ERR;
        }

        buf[i] = (i == len) ? '\0' : '/';
    }

    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        proven_errf(err, errlen, "%s is not a directory", path);
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


int
provend_write_file(const char *path, const void *data, size_t len,
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
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
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
provend_read_file(const char *path, size_t max, uint8_t **out,
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


int
provend_node_id(const char *data_dir, char node_id[PROVEND_NODE_ID_LEN + 1],
    char *err, size_t errlen)
{
    int       rc;
    char      path[4096];
    size_t    len, i;
    uint8_t  *text, raw[PROVEND_NODE_ID_LEN / 2];

    if ((size_t) snprintf(path, sizeof(path), "%s/node-id", data_dir)
        >= sizeof(path))
    {
        proven_errf(err, errlen, "data directory path too long");
        return PROVEN_ERR;
    }

    if (access(path, F_OK) == 0) {
        if (provend_read_file(path, 256, &text, &len, err, errlen)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }

        while (len && (text[len - 1] == '\n' || text[len - 1] == '\r')) {
            len--;
        }

        rc = (len == PROVEND_NODE_ID_LEN) ? PROVEN_OK : PROVEN_ERR;
        for (i = 0; rc == PROVEN_OK && i < len; i++) {
            if (!((text[i] >= '0' && text[i] <= '9')
                  || (text[i] >= 'a' && text[i] <= 'f')))
            {
                rc = PROVEN_ERR;
            }
        }

        if (rc == PROVEN_OK) {
            memcpy(node_id, text, len);
            node_id[len] = '\0';
        } else {
            proven_errf(err, errlen, "%s does not hold %d lowercase hex digits",
                        path, PROVEND_NODE_ID_LEN);
        }

        free(text);
        return rc;
    }

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        proven_errf(err, errlen, "no random bytes for the node id");
        return PROVEN_ERR;
    }

    proven_hex_encode(raw, sizeof(raw), node_id);
    node_id[PROVEND_NODE_ID_LEN] = '\n';

    rc = provend_write_file(path, node_id, PROVEND_NODE_ID_LEN + 1, 0644,
                            err, errlen);
    node_id[PROVEND_NODE_ID_LEN] = '\0';
    return rc;
}


uint64_t
provend_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}


static int
provend_remove_one(const char *path, const struct stat *sb, int flag,
    struct FTW *ftw)
{
    (void) sb;
    (void) ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) == 0 ? 0 : -1;
}


int
provend_remove_tree(const char *path, char *err, size_t errlen)
{
    struct stat  sb;

    if (lstat(path, &sb) != 0 && errno == ENOENT) {
        return PROVEN_OK;
    }
    /* links are removed, never followed */
    if (nftw(path, provend_remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        proven_errf(err, errlen, "cannot remove %s: %s", path, strerror(errno));
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}
