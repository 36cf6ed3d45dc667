/*
 * A directory as a reproducible initramfs: a gzip'd cpio archive in the
 * "newc" format the kernel unpacks, the same bytes for the same tree
 * wherever and whenever it is made: entries sorted by path, owned by 0:0,
 * one fixed mtime, inode numbers counted from 1, gzip with no name and no
 * time.  Regular files, directories and symbolic links; anything else
 * (devices, sockets) is refused: devtmpfs makes /dev at boot.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "proven.h"
#include "proven_eif.h"


#define PROVEN_CPIO_PATH_MAX   4096
#define PROVEN_CPIO_ENTRIES    65536

typedef struct {
    char      **paths;              /* relative, sorted */
    size_t      n;
    size_t      cap;
    uint8_t    *out;                /* the archive, before gzip */
    size_t      len;
    size_t      size;
    int         failed;
} proven_cpio_t;


static int
proven_cpio_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/* Every path below root/rel, into c->paths (not sorted yet). */
static int
proven_cpio_walk(proven_cpio_t *c, const char *root, const char *rel,
    char *err, size_t errlen)
{
    char            path[PROVEN_CPIO_PATH_MAX], sub[PROVEN_CPIO_PATH_MAX];
    DIR            *d;
    struct dirent  *e;
    struct stat     st;

    snprintf(path, sizeof(path), "%s%s%s", root, rel[0] ? "/" : "", rel);
    d = opendir(path);
    if (d == NULL) {
        proven_errf(err, errlen, "%s: %s", path, strerror(errno));
        return PROVEN_ERR;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        if ((size_t) snprintf(sub, sizeof(sub), "%s%s%s", rel,
                              rel[0] ? "/" : "", e->d_name) >= sizeof(sub)
            || c->n >= PROVEN_CPIO_ENTRIES)
        {
            proven_errf(err, errlen, "%s: too long a path or too many "
                        "files (%d at most)", path, PROVEN_CPIO_ENTRIES);
            closedir(d);
            return PROVEN_ERR;
        }
        if (c->n == c->cap) {
            char  **more;

            more = realloc(c->paths, (c->cap ? 2 * c->cap : 64)
                                     * sizeof(char *));
            if (more == NULL) {
                closedir(d);
                proven_errf(err, errlen, "out of memory");
                return PROVEN_ERR;
            }
            c->paths = more;
            c->cap = c->cap ? 2 * c->cap : 64;
        }
        c->paths[c->n] = strdup(sub);
        if (c->paths[c->n] == NULL) {
            closedir(d);
            proven_errf(err, errlen, "out of memory");
            return PROVEN_ERR;
        }
        c->n++;
        if ((size_t) snprintf(path, sizeof(path), "%s/%s", root, sub)
            >= sizeof(path))
        {
            proven_errf(err, errlen, "%s/%s: too long a path", root, sub);
            closedir(d);
            return PROVEN_ERR;
        }
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)
            && proven_cpio_walk(c, root, sub, err, errlen) != PROVEN_OK)
        {
            closedir(d);
            return PROVEN_ERR;
        }
    }
    closedir(d);
    return PROVEN_OK;
}


static void
proven_cpio_put(proven_cpio_t *c, const void *p, size_t n)
{
    uint8_t  *more;

    if (c->failed) {
        return;
    }
    if (c->len + n + 3 > c->size) {
        more = realloc(c->out, 2 * (c->len + n) + 4096);
        if (more == NULL) {
            c->failed = 1;
            return;
        }
        c->out = more;
        c->size = 2 * (c->len + n) + 4096;
    }
    memcpy(c->out + c->len, p, n);
    c->len += n;
    while (c->len % 4 != 0) {               /* newc pads to 4 bytes */
        c->out[c->len++] = 0;
    }
}


/* A newc header and name (padded), then data (padded). */
static void
proven_cpio_entry(proven_cpio_t *c, unsigned ino, unsigned mode,
    unsigned nlink, uint64_t mtime, const char *name, const void *data,
    size_t size)
{
    char    head[111 + PROVEN_CPIO_PATH_MAX];
    size_t  n;

    n = (size_t) snprintf(head, sizeof(head),
                          "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X"
                          "%08X%08X%08X", ino, mode, 0u, 0u, nlink,
                          (unsigned) mtime, (unsigned) size, 0u, 0u, 0u, 0u,
                          (unsigned) strlen(name) + 1, 0u);
    memcpy(head + n, name, strlen(name) + 1);
    proven_cpio_put(c, head, n + strlen(name) + 1);
    if (size > 0) {
        proven_cpio_put(c, data, size);
    }
}


int
proven_cpio_dir(const char *dir, uint64_t mtime, uint8_t **out,
    size_t *outlen, char *err, size_t errlen)
{
    int             rc, fd;
    char            path[PROVEN_CPIO_PATH_MAX], link[PROVEN_CPIO_PATH_MAX];
    size_t          i, gz_cap;
    ssize_t         n;
    uint8_t        *data, *gz;
    z_stream        z;
    struct stat     st;
    proven_cpio_t   c;

    memset(&c, 0, sizeof(c));
    rc = PROVEN_ERR;
    gz = NULL;
    if (proven_cpio_walk(&c, dir, "", err, errlen) != PROVEN_OK) {
        goto done;
    }
    qsort(c.paths, c.n, sizeof(char *), proven_cpio_cmp);

    for (i = 0; i < c.n && !c.failed; i++) {
        if ((size_t) snprintf(path, sizeof(path), "%s/%s", dir, c.paths[i])
            >= sizeof(path) || lstat(path, &st) != 0)
        {
            proven_errf(err, errlen, "%s: %s", path, strerror(errno));
            goto done;
        }
        if (S_ISDIR(st.st_mode)) {
            proven_cpio_entry(&c, (unsigned) i + 1,
                              S_IFDIR | (st.st_mode & 07777), 2, mtime,
                              c.paths[i], NULL, 0);

        } else if (S_ISLNK(st.st_mode)) {
            n = readlink(path, link, sizeof(link));
            if (n < 0 || (size_t) n >= sizeof(link)) {
                proven_errf(err, errlen, "%s: cannot read the link", path);
                goto done;
            }
            proven_cpio_entry(&c, (unsigned) i + 1, S_IFLNK | 0777, 1, mtime,
                              c.paths[i], link, (size_t) n);

        } else if (S_ISREG(st.st_mode)) {
            if (st.st_size > 0xffffffffLL) {
                proven_errf(err, errlen, "%s: over 4 GiB", path);
                goto done;
            }
            data = malloc((size_t) st.st_size + 1);
            fd = open(path, O_RDONLY | O_CLOEXEC);
            n = data != NULL && fd >= 0
                ? read(fd, data, (size_t) st.st_size + 1) : -1;
            if (fd >= 0) {
                close(fd);
            }
            if (n != (ssize_t) st.st_size) {
                free(data);
                proven_errf(err, errlen, "%s: cannot read it whole", path);
                goto done;
            }
            proven_cpio_entry(&c, (unsigned) i + 1,
                              S_IFREG | (st.st_mode & 07777), 1, mtime,
                              c.paths[i], data, (size_t) n);
            free(data);

        } else {
            proven_errf(err, errlen, "%s: not a file, directory or link "
                        "(devices come from devtmpfs at boot)", path);
            goto done;
        }
    }
    proven_cpio_entry(&c, 0, 0, 1, 0, "TRAILER!!!", NULL, 0);
    if (c.failed) {
        proven_errf(err, errlen, "out of memory");
        goto done;
    }

    /* gzip, no name, no time (zlib's own header: mtime 0) */
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY)
        != Z_OK)
    {
        proven_errf(err, errlen, "out of memory");
        goto done;
    }
    gz_cap = deflateBound(&z, (uLong) c.len) + 64;
    gz = malloc(gz_cap);
    z.next_in = c.out;
    z.avail_in = (uInt) c.len;
    z.next_out = gz;
    z.avail_out = (uInt) gz_cap;
    if (gz == NULL || deflate(&z, Z_FINISH) != Z_STREAM_END) {
        deflateEnd(&z);
        proven_errf(err, errlen, "gzip failed");
        goto done;
    }
    *outlen = z.total_out;
    deflateEnd(&z);
    *out = gz;
    gz = NULL;
    rc = PROVEN_OK;

done:

    for (i = 0; i < c.n; i++) {
        free(c.paths[i]);
    }
    free(c.paths);
    free(c.out);
    free(gz);
    return rc;
}
