/* Sealed backups of a node's storage: see backup.h. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "proven.h"
#include "backup.h"
#include "log.h"
#include "util.h"


#define BK_MAGIC       "PRVNBK01"
#define BK_ID_LEN      16
#define BK_HEAD_LEN    (8 + BK_ID_LEN + PROVEND_MASTER_SEALED_LEN)
#define BK_CHUNK       (1024 * 1024)          /* plain bytes a chunk */
#define BK_INFO        "proven-backup-v1"
#define BK_PATH_MAX    1024
#define BK_DEPTH_MAX   16


/* ---- chunks ------------------------------------------------------------- */

typedef struct {
    int        fd;
    uint8_t    key[PROVEND_KEY_LEN];
    uint8_t    id[BK_ID_LEN];
    uint64_t   index;
    uint8_t   *plain;                        /* BK_CHUNK bytes */
    size_t     len;
    uint8_t   *sealed;                       /* BK_CHUNK + overhead */
    uint64_t   files, bytes;
} bk_stream_t;


/* The key and the plain bytes wiped, the buffers freed. */
static void
bk_stream_free(bk_stream_t *s)
{
    OPENSSL_cleanse(s->key, sizeof(s->key));
    if (s->plain != NULL) {
        OPENSSL_cleanse(s->plain, BK_CHUNK);
    }
    free(s->plain);
    free(s->sealed);
}


static int
bk_key(const uint8_t master[PROVEND_KEY_LEN], const uint8_t id[BK_ID_LEN],
    uint8_t key[PROVEND_KEY_LEN])
{
    char  info[sizeof(BK_INFO) - 1 + BK_ID_LEN];

    memcpy(info, BK_INFO, sizeof(BK_INFO) - 1);
    memcpy(info + sizeof(BK_INFO) - 1, id, BK_ID_LEN);
    return provend_keys_derive(master, info, sizeof(info), key,
                               PROVEND_KEY_LEN);
}


/* id | index | last: a chunk opens only in its place. */
static void
bk_ad(const bk_stream_t *s, int last, uint8_t ad[BK_ID_LEN + 9])
{
    memcpy(ad, s->id, BK_ID_LEN);
    proven_put_be64(ad + BK_ID_LEN, s->index);
    ad[BK_ID_LEN + 8] = (uint8_t) last;
}


/*
 * All of len bytes written to fd, or read from it (what: for the message
 * when the file ends first: a backup cut short).
 */
static int
bk_io_all(int fd, uint8_t *p, size_t len, int writing, const char *what,
    char *err, size_t errlen)
{
    ssize_t  n;

    while (len > 0) {
        n = writing ? write(fd, p, len) : read(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            if (writing || n < 0) {
                proven_errf(err, errlen, "%s: %s", writing ? "write" : "read",
                            strerror(errno));
            } else {
                proven_errf(err, errlen, "the backup is cut short (in %s)",
                            what);
            }
            return PROVEN_ERR;
        }
        p += n;
        len -= (size_t) n;
    }
    return PROVEN_OK;
}

#define bk_write_all(fd, p, len, err, errlen)                                \
    bk_io_all(fd, (uint8_t *) (p), len, 1, NULL, err, errlen)
#define bk_read_all(fd, p, len, what, err, errlen)                           \
    bk_io_all(fd, p, len, 0, what, err, errlen)


static int
bk_flush(bk_stream_t *s, int last, char *err, size_t errlen)
{
    uint8_t  head[5], ad[BK_ID_LEN + 9];

    bk_ad(s, last, ad);
    if (provend_seal(s->key, ad, sizeof(ad), s->plain, s->len, s->sealed)
        != PROVEN_OK)
    {
        proven_errf(err, errlen, "cannot seal a chunk");
        return PROVEN_ERR;
    }
    proven_put_be32(head, (uint32_t) (s->len + PROVEND_SEAL_OVERHEAD));
    head[4] = (uint8_t) last;
    if (bk_write_all(s->fd, head, sizeof(head), err, errlen) != PROVEN_OK
        || bk_write_all(s->fd, s->sealed, s->len + PROVEND_SEAL_OVERHEAD,
                        err, errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    s->index++;
    s->len = 0;
    return PROVEN_OK;
}


static int
bk_put(bk_stream_t *s, const void *data, size_t len, char *err,
    size_t errlen)
{
    size_t          n;
    const uint8_t  *p;

    p = data;
    while (len > 0) {
        n = BK_CHUNK - s->len < len ? BK_CHUNK - s->len : len;
        memcpy(s->plain + s->len, p, n);
        s->len += n;
        p += n;
        len -= n;
        if (s->len == BK_CHUNK && bk_flush(s, 0, err, errlen) != PROVEN_OK) {
            return PROVEN_ERR;
        }
    }
    return PROVEN_OK;
}


/* ---- writing ------------------------------------------------------------ */

/* One file (name in dir dfd, never a link): its entry, then its bytes. */
static int
bk_put_file(bk_stream_t *s, int dfd, const char *name, const char *rel,
    char *err, size_t errlen)
{
    int          fd, rc;
    ssize_t      n;
    uint8_t      head[2 + BK_PATH_MAX + 12], buf[64 * 1024];
    size_t       plen;
    uint64_t     left;
    struct stat  st;

    fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        proven_errf(err, errlen, "%s: not a regular file", rel);
        if (fd >= 0) {
            close(fd);
        }
        return PROVEN_ERR;
    }
    plen = strlen(rel);
    head[0] = (uint8_t) (plen >> 8);
    head[1] = (uint8_t) plen;
    memcpy(head + 2, rel, plen);
    proven_put_be32(head + 2 + plen, (uint32_t) (st.st_mode & 0700));
    proven_put_be64(head + 6 + plen, (uint64_t) st.st_size);
    rc = bk_put(s, head, 14 + plen, err, errlen);

    /* exactly the size said: a file that changes meanwhile is an error */
    for (left = (uint64_t) st.st_size; rc == PROVEN_OK && left > 0;
         left -= (uint64_t) n)
    {
        n = read(fd, buf, left < sizeof(buf) ? (size_t) left : sizeof(buf));
        if (n <= 0) {
            proven_errf(err, errlen, "%s changed while read", rel);
            rc = PROVEN_ERR;
            break;
        }
        rc = bk_put(s, buf, (size_t) n, err, errlen);
    }
    close(fd);
    s->files++;
    s->bytes += (uint64_t) st.st_size;
    return rc;
}


/* The tree under directory fd dfd (taken over), named rel. */
static int
bk_put_tree(bk_stream_t *s, int dfd, const char *rel, int depth, char *err,
    size_t errlen)
{
    int             rc, cfd;
    DIR            *d;
    char            child[BK_PATH_MAX];
    struct stat     st;
    struct dirent  *e;

    d = depth <= BK_DEPTH_MAX ? fdopendir(dfd) : NULL;
    if (d == NULL) {
        proven_errf(err, errlen, "%s: %s", rel,
                    depth > BK_DEPTH_MAX ? "too deep" : strerror(errno));
        close(dfd);
        return PROVEN_ERR;
    }
    rc = PROVEN_OK;
    while (rc == PROVEN_OK && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        if ((size_t) snprintf(child, sizeof(child), "%s/%s", rel, e->d_name)
            >= sizeof(child))
        {
            proven_errf(err, errlen, "%s/...: path too long", rel);
            rc = PROVEN_ERR;
        } else if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW)
                   != 0)
        {
            proven_errf(err, errlen, "%s: %s", child, strerror(errno));
            rc = PROVEN_ERR;
        } else if (S_ISDIR(st.st_mode)) {
            cfd = openat(dirfd(d), e->d_name,
                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            rc = cfd >= 0 ? bk_put_tree(s, cfd, child, depth + 1, err, errlen)
                          : PROVEN_ERR;
            if (cfd < 0) {
                proven_errf(err, errlen, "%s: %s", child, strerror(errno));
            }
        } else {
            rc = bk_put_file(s, dirfd(d), e->d_name, child, err, errlen);
        }
    }
    closedir(d);
    return rc;
}


int
provend_backup_write(const char *data_dir,
    const uint8_t master[PROVEND_KEY_LEN],
    const uint8_t sealed_master[PROVEND_MASTER_SEALED_LEN],
    const char *out, char *err, size_t errlen)
{
    int          rc, dfd;
    char         path[4200];
    uint8_t      head[BK_HEAD_LEN];
    bk_stream_t  s;

    memset(&s, 0, sizeof(s));
    snprintf(path, sizeof(path), "%s/storage", data_dir);
    dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        proven_errf(err, errlen, "%s: %s", path, strerror(errno));
        return PROVEN_ERR;
    }
    s.plain = malloc(BK_CHUNK);
    s.sealed = malloc(BK_CHUNK + PROVEND_SEAL_OVERHEAD);
    s.fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    rc = PROVEN_ERR;
    if (s.plain == NULL || s.sealed == NULL || s.fd < 0
        || RAND_bytes(s.id, sizeof(s.id)) != 1
        || bk_key(master, s.id, s.key) != PROVEN_OK)
    {
        proven_errf(err, errlen, "%s: %s", out,
                    s.fd < 0 ? strerror(errno) : "out of memory");
        close(dfd);
        goto done;
    }
    memcpy(head, BK_MAGIC, 8);
    memcpy(head + 8, s.id, BK_ID_LEN);
    memcpy(head + 8 + BK_ID_LEN, sealed_master, PROVEND_MASTER_SEALED_LEN);
    if (bk_write_all(s.fd, head, sizeof(head), err, errlen) != PROVEN_OK) {
        close(dfd);
        goto done;
    }
    if (bk_put_tree(&s, dfd, "storage", 0, err, errlen) != PROVEN_OK
        || bk_flush(&s, 1, err, errlen) != PROVEN_OK)
    {
        goto done;
    }
    if (fsync(s.fd) != 0) {
        proven_errf(err, errlen, "fsync %s: %s", out, strerror(errno));
        goto done;
    }
    provend_info("backup: %llu files, %llu bytes, in %llu chunks, to %s",
                 (unsigned long long) s.files, (unsigned long long) s.bytes,
                 (unsigned long long) s.index, out);
    rc = PROVEN_OK;

done:

    if (s.fd >= 0) {
        close(s.fd);
        if (rc != PROVEN_OK) {
            (void) unlink(out);
        }
    }
    bk_stream_free(&s);
    return rc;
}


/* ---- restoring ---------------------------------------------------------- */

typedef struct {
    int          root_fd;                /* DATA/storage.restore.XXXXXX */
    uint8_t      head[2 + BK_PATH_MAX + 12];
    size_t       have;                   /* bytes of head held */
    size_t       need;                   /* bytes of head wanted */
    int          fd;                     /* the file being written */
    uint64_t     left;                   /* its bytes still to come */
    uint64_t     files;
} bk_files_t;


/* "storage/..." and nothing that leaves it. */
static int
bk_path_ok(const char *p)
{
    return strncmp(p, "storage/", 8) == 0 && strstr(p, "/../") == NULL
           && strstr(p, "//") == NULL && strcmp(p + strlen(p) - 3, "/..") != 0
           && strstr(p, "/./") == NULL && p[strlen(p) - 1] != '/';
}


/*
 * Opens the file a whole entry head names, its directories made, each
 * step relative to the one before and never through a link: the host may
 * change DATA while a restore runs.
 */
static int
bk_open_entry(bk_files_t *f, size_t plen, char *err, size_t errlen)
{
    int       dfd, next;
    char      path[BK_PATH_MAX + 1], *part, *slash;
    uint32_t  mode;

    memcpy(path, f->head + 2, plen);
    path[plen] = '\0';
    if (memchr(path, '\0', plen) != NULL || !bk_path_ok(path)) {
        proven_errf(err, errlen, "the backup names a path outside storage");
        return PROVEN_ERR;
    }
    mode = proven_get_be32(f->head + 2 + plen) & 0700;
    f->left = proven_get_be64(f->head + 6 + plen);

    dfd = dup(f->root_fd);
    for (part = path + 8; dfd >= 0 && (slash = strchr(part, '/')) != NULL;
         part = slash + 1)
    {
        *slash = '\0';
        if (mkdirat(dfd, part, 0700) != 0 && errno != EEXIST) {
            close(dfd);
            dfd = -1;
            break;
        }
        next = openat(dfd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW
                                 | O_CLOEXEC);
        close(dfd);
        dfd = next;
    }
    f->fd = dfd >= 0 ? openat(dfd, part, O_WRONLY | O_CREAT | O_EXCL
                                         | O_NOFOLLOW | O_CLOEXEC,
                              mode | 0600)
                     : -1;
    if (dfd >= 0) {
        close(dfd);
    }
    if (f->fd < 0) {
        proven_errf(err, errlen, "restoring %.*s: %s", (int) plen,
                    (char *) f->head + 2, strerror(errno));
        return PROVEN_ERR;
    }
    f->files++;
    return PROVEN_OK;
}


static int
bk_close_entry(bk_files_t *f, char *err, size_t errlen)
{
    int  rc;

    rc = fsync(f->fd) == 0 ? PROVEN_OK : PROVEN_ERR;
    if (close(f->fd) != 0) {
        rc = PROVEN_ERR;
    }
    f->fd = -1;
    f->need = 2;
    f->have = 0;
    if (rc != PROVEN_OK) {
        proven_errf(err, errlen, "writing a restored file: %s",
                    strerror(errno));
    }
    return rc;
}


/* The files' bytes, as the chunks open. */
static int
bk_feed(bk_files_t *f, const uint8_t *p, size_t len, char *err,
    size_t errlen)
{
    size_t  n, plen;

    while (len > 0) {
        if (f->fd < 0) {
            n = f->need - f->have < len ? f->need - f->have : len;
            memcpy(f->head + f->have, p, n);
            f->have += n;
            p += n;
            len -= n;
            if (f->have < f->need) {
                continue;
            }
            plen = ((size_t) f->head[0] << 8) | f->head[1];
            if (plen == 0 || plen > BK_PATH_MAX) {
                proven_errf(err, errlen, "the backup holds a bad entry");
                return PROVEN_ERR;
            }
            if (f->need == 2) {
                f->need = 2 + plen + 12;
                continue;
            }
            if (bk_open_entry(f, plen, err, errlen) != PROVEN_OK) {
                return PROVEN_ERR;
            }
        }
        n = f->left < len ? (size_t) f->left : len;
        if (n > 0 && bk_write_all(f->fd, p, n, err, errlen) != PROVEN_OK) {
            return PROVEN_ERR;
        }
        p += n;
        len -= n;
        f->left -= n;
        if (f->left == 0 && bk_close_entry(f, err, errlen) != PROVEN_OK) {
            return PROVEN_ERR;
        }
    }
    return PROVEN_OK;
}


int
provend_backup_restore(const char *data_dir,
    const uint8_t kek[PROVEND_KEY_LEN], const char *in, char *err,
    size_t errlen)
{
    int          rc, last;
    char         tmp[4200], storage[4200], keys[4200], sealed_path[4300];
    uint8_t      head[BK_HEAD_LEN], chead[5], ad[BK_ID_LEN + 9], extra;
    uint8_t      master[PROVEND_KEY_LEN];
    size_t       len;
    struct stat  st;
    bk_stream_t  s;
    bk_files_t   f;

    memset(&s, 0, sizeof(s));
    memset(&f, 0, sizeof(f));
    f.fd = -1;
    f.need = 2;
    rc = PROVEN_ERR;
    snprintf(storage, sizeof(storage), "%s/storage", data_dir);
    tmp[0] = '\0';
    snprintf(keys, sizeof(keys), "%s/keys", data_dir);
    snprintf(sealed_path, sizeof(sealed_path), "%s/master.sealed", keys);
    f.root_fd = -1;

    if (lstat(storage, &st) == 0 || lstat(sealed_path, &st) == 0) {
        proven_errf(err, errlen, "%s holds storage or a master key already: "
                    "restore into a data directory without", data_dir);
        return PROVEN_ERR;
    }
    s.fd = open(in, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (s.fd < 0 || fstat(s.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        proven_errf(err, errlen, "%s: not a readable file", in);
        goto done;
    }
    (void) fcntl(s.fd, F_SETFL, 0);
    if (bk_read_all(s.fd, head, sizeof(head), "its header", err, errlen)
        != PROVEN_OK)
    {
        goto done;
    }
    if (memcmp(head, BK_MAGIC, 8) != 0) {
        proven_errf(err, errlen, "%s is not a backup of a node", in);
        goto done;
    }
    memcpy(s.id, head + 8, BK_ID_LEN);
    if (provend_keys_open_master(kek, head + 8 + BK_ID_LEN, master)
        != PROVEN_OK)
    {
        proven_errf(err, errlen, "its master key does not open with the key "
                    "keyd released: another node's key, or a changed file");
        goto done;
    }
    rc = bk_key(master, s.id, s.key);
    OPENSSL_cleanse(master, sizeof(master));
    s.plain = malloc(BK_CHUNK);
    s.sealed = malloc(BK_CHUNK + PROVEND_SEAL_OVERHEAD);
    if (rc != PROVEN_OK || s.plain == NULL || s.sealed == NULL) {
        proven_errf(err, errlen, "out of memory");
        rc = PROVEN_ERR;
        goto done;
    }
    rc = PROVEN_ERR;
    /* a name of its own, which the host cannot have made ready */
    snprintf(tmp, sizeof(tmp), "%s/storage.restore.XXXXXX", data_dir);
    if (mkdtemp(tmp) == NULL
        || (f.root_fd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW
                                  | O_CLOEXEC)) < 0)
    {
        proven_errf(err, errlen, "%s: %s", tmp, strerror(errno));
        tmp[0] = '\0';
        goto done;
    }

    /* every chunk opens, in its place, up to the one marked last */
    for (last = 0; !last; s.index++) {
        if (bk_read_all(s.fd, chead, sizeof(chead), "a chunk's header", err,
                        errlen) != PROVEN_OK)
        {
            goto done;
        }
        len = proven_get_be32(chead);
        last = chead[4];
        if (len < PROVEND_SEAL_OVERHEAD
            || len > BK_CHUNK + PROVEND_SEAL_OVERHEAD || last > 1)
        {
            proven_errf(err, errlen, "chunk %llu: a bad header",
                        (unsigned long long) s.index);
            goto done;
        }
        bk_ad(&s, last, ad);
        if (bk_read_all(s.fd, s.sealed, len, "a chunk", err, errlen)
            != PROVEN_OK)
        {
            goto done;
        }
        if (provend_open(s.key, ad, sizeof(ad), s.sealed, len, s.plain)
            != PROVEN_OK)
        {
            proven_errf(err, errlen, "chunk %llu does not open: the backup "
                        "was changed", (unsigned long long) s.index);
            goto done;
        }
        if (bk_feed(&f, s.plain, len - PROVEND_SEAL_OVERHEAD, err, errlen)
            != PROVEN_OK)
        {
            goto done;
        }
    }
    if (read(s.fd, &extra, 1) != 0 || f.fd >= 0 || f.have != 0) {
        proven_errf(err, errlen, "the backup %s", f.fd >= 0 || f.have != 0
                    ? "ends inside a file" : "goes on past its last chunk");
        goto done;
    }

    /* all of it here: storage, then its sealed master key, take their
       place (a crash between leaves storage without its key, which the
       node refuses to start on: never a node started empty) */
    if (rename(tmp, storage) != 0) {
        proven_errf(err, errlen, "%s: %s", storage, strerror(errno));
        goto done;
    }
    tmp[0] = '\0';
    if (provend_mkdirs(keys, 0700, err, errlen) != PROVEN_OK
        || provend_write_file(sealed_path, head + 8 + BK_ID_LEN,
                              PROVEND_MASTER_SEALED_LEN, 0600, err, errlen)
           != PROVEN_OK)
    {
        goto done;
    }
    rc = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rc >= 0) {
        (void) fsync(rc);
        close(rc);
    }
    provend_info("restore: %llu files from %s into %s",
                 (unsigned long long) f.files, in, storage);
    rc = PROVEN_OK;

done:

    if (f.fd >= 0) {
        close(f.fd);
    }
    if (f.root_fd >= 0) {
        close(f.root_fd);
    }
    if (rc != PROVEN_OK && tmp[0] != '\0') {
        (void) provend_remove_tree(tmp, NULL, 0);
    }
    if (s.fd >= 0) {
        close(s.fd);
    }
    bk_stream_free(&s);
    return rc;
}
