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
#define PROVEND_BACKUP_KEYD_WAIT_S  30


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
    const char *out, provend_backup_stats_t *stats, char *err,
    size_t errlen)
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
    if (stats != NULL) {
        stats->files = s.files;
        stats->bytes = s.bytes;
        stats->chunks = s.index;
        memcpy(stats->id, s.id, BK_ID_LEN);
    }
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
provend_backup_peek(const char *data_dir, const char *in,
    uint8_t id[PROVEND_BACKUP_ID_LEN], char *err, size_t errlen)
{
    int          fd, rc;
    char         path[4200];
    uint8_t      head[8 + BK_ID_LEN];
    struct stat  st;

    snprintf(path, sizeof(path), "%.4000s/storage", data_dir);
    if (lstat(path, &st) == 0) {
        proven_errf(err, errlen, "%.150s holds storage or a master key "
                    "already: restore into a data directory without",
                    data_dir);
        return PROVEN_ERR;
    }
    snprintf(path, sizeof(path), "%.4000s/keys/master.sealed", data_dir);
    if (lstat(path, &st) == 0) {
        proven_errf(err, errlen, "%.150s holds storage or a master key "
                    "already: restore into a data directory without",
                    data_dir);
        return PROVEN_ERR;
    }
    fd = open(in, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        proven_errf(err, errlen, "%.150s: not a readable file", in);
        if (fd >= 0) {
            close(fd);
        }
        return PROVEN_ERR;
    }
    (void) fcntl(fd, F_SETFL, 0);
    rc = bk_read_all(fd, head, sizeof(head), "its header", err, errlen);
    close(fd);
    if (rc == PROVEN_OK && memcmp(head, BK_MAGIC, 8) != 0) {
        proven_errf(err, errlen, "%.150s is not a backup of a node", in);
        rc = PROVEN_ERR;
    }
    if (rc == PROVEN_OK) {
        memcpy(id, head + 8, BK_ID_LEN);
    }
    return rc;
}


void
provend_backup_parent(const char *data_dir,
    uint8_t parent[PROVEND_BACKUP_ID_LEN])
{
    char      path[4200], err[PROVEN_ERR_LEN];
    size_t    len;
    uint8_t  *buf;

    memset(parent, 0, PROVEND_BACKUP_ID_LEN);
    snprintf(path, sizeof(path), "%.4000s/backups/parent", data_dir);
    if (access(path, F_OK) == 0
        && proven_read_file(path, PROVEND_BACKUP_ID_LEN + 1, &buf, &len,
                            err, sizeof(err)) == PROVEN_OK)
    {
        if (len == PROVEND_BACKUP_ID_LEN) {
            memcpy(parent, buf, len);
        }
        free(buf);
    }
}


int
provend_backup_set_parent(const char *data_dir,
    const uint8_t id[PROVEND_BACKUP_ID_LEN], char *err, size_t errlen)
{
    char  path[4200];

    snprintf(path, sizeof(path), "%.4000s/backups", data_dir);
    if (provend_mkdirs(path, 0700, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    snprintf(path, sizeof(path), "%.4000s/backups/parent", data_dir);
    return proven_write_file(path, id, PROVEND_BACKUP_ID_LEN, 0600, err,
                             errlen);
}


int
provend_backup_record(const provend_keyd_client_t *keyd,
    provend_provider_t *provider, const provend_keyd_ask_t *ask, char *err,
    size_t errlen)
{
    int      rc;
    char     hex[2 * BK_ID_LEN + 1];
    uint8_t  kek[PROVEND_KEY_LEN];

    rc = provend_master_kek_for(keyd, provider, ask, kek, err, errlen);
    OPENSSL_cleanse(kek, sizeof(kek));
    if (rc != PROVEN_OK) {
        return PROVEN_ERR;
    }
    proven_hex_encode(ask->backup_id, BK_ID_LEN, hex);
    provend_info("backup %s: keyd has it as the newest of key \"%s\"", hex,
                 keyd->key_id);
    return PROVEN_OK;
}


int
provend_backup_restore(const char *data_dir,
    const uint8_t kek[PROVEND_KEY_LEN], const uint8_t id[BK_ID_LEN],
    const char *in, char *err, size_t errlen)
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
    /* the backup keyd gave the key for, not a file put here since */
    if (memcmp(head + 8, id, BK_ID_LEN) != 0) {
        proven_errf(err, errlen, "%s changed since keyd was asked about it",
                    in);
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
        || proven_write_file(sealed_path, head + 8 + BK_ID_LEN,
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


/* ---- a running node's: the "backup" op ------------------------------------ */

typedef struct {
    uv_work_t               work;
    provend_backups_t      *backups;
    provend_ops_reply_pt    reply;
    void                   *ctx;
    uint64_t                id;
    int                     rc;
    char                    err[PROVEN_ERR_LEN];
    char                    path[4200];
    provend_backup_stats_t  stats;
    uint64_t                paused_ms;
    provend_attest_job_t    attest;     /* prepared on the loop */
} bk_job_t;

struct provend_backups_s {
    provend_backups_config_t  cfg;
    uint8_t                   master[PROVEND_KEY_LEN];
    uint8_t                   sealed[PROVEND_MASTER_SEALED_LEN];
    bk_job_t                 *job;          /* the one under way */
};


provend_backups_t *
provend_backups_new(const provend_backups_config_t *cfg, char *err,
    size_t errlen)
{
    provend_backups_t  *b;

    b = calloc(1, sizeof(*b));
    if (b == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    memcpy(b->master, cfg->master, PROVEND_KEY_LEN);
    memcpy(b->sealed, cfg->sealed, PROVEND_MASTER_SEALED_LEN);
    b->cfg.master = NULL;
    b->cfg.sealed = NULL;
    return b;
}


void
provend_backups_free(provend_backups_t *b)
{
    if (b == NULL) {
        return;
    }
    OPENSSL_cleanse(b->master, sizeof(b->master));
    free(b);
}


/* With the storage still: the file, and nothing else. */
static int
bk_job_quiesced(void *arg)
{
    bk_job_t           *job;
    provend_backups_t  *b;

    job = arg;
    b = job->backups;
    /* the header's sealed key: the bytes that opened the master key at
     * start (the file may have changed since, when the host writes the
     * disk) */
    return provend_backup_write(b->cfg.data_dir, b->master, b->sealed,
                                job->path, &job->stats, job->err,
                                sizeof(job->err));
}


/*
 * The document for keyd, on this pool thread: the provider's run step on
 * what its prepare took on the loop (job->attest.snapshot), which finish
 * drops there afterwards.
 */
static int
bk_job_attest(void *arg, provend_attest_job_t *attest)
{
    bk_job_t            *job;
    provend_provider_t  *p;

    job = arg;
    p = job->backups->cfg.provider;
    attest->snapshot = job->attest.snapshot;
    p->run(p, attest);
    attest->snapshot = NULL;
    return attest->rc;
}


static void
bk_job_work(uv_work_t *work)
{
    char                dir[4200];
    size_t              len;
    provend_keyd_ask_t  ask;
    uint64_t            start;
    bk_job_t           *job;
    provend_backups_t  *b;

    job = work->data;
    b = job->backups;
    job->rc = PROVEN_ERR;

    snprintf(dir, sizeof(dir), "%.4000s/backups", b->cfg.data_dir);
    snprintf(job->path, sizeof(job->path), "%.4000s/backup.pbk", dir);
    if (provend_mkdirs(dir, 0700, job->err, sizeof(job->err)) != PROVEN_OK) {
        return;
    }
    /* the one before, its copy taken or abandoned */
    if (unlink(job->path) != 0 && errno != ENOENT) {
        proven_errf(job->err, sizeof(job->err), "%.150s: %s", job->path,
                    strerror(errno));
        return;
    }

    start = provend_now_ms();
    job->rc = b->cfg.storage->quiesce(b->cfg.storage, bk_job_quiesced, job);
    job->paused_ms = provend_now_ms() - start;
    if (job->rc != PROVEN_OK) {
        return;
    }

    /* keyd must know it for a restore to get the key: one not known is
       no backup (and an older one stays the newest) */
    memset(&ask, 0, sizeof(ask));
    ask.purpose = PROVEND_KEYD_FOR_BACKUP_MADE;
    memcpy(ask.backup_id, job->stats.id, PROVEND_BACKUP_ID_LEN);
    provend_backup_parent(b->cfg.data_dir, ask.backup_parent);
    ask.attest = bk_job_attest;
    ask.attest_arg = job;
    ask.wait_s = PROVEND_BACKUP_KEYD_WAIT_S;   /* told again: harmless */
    if (provend_backup_record(b->cfg.keyd, b->cfg.provider, &ask, job->err,
                              sizeof(job->err)) != PROVEN_OK)
    {
        /* kept: keyd may have it as the newest, its answer lost on the
         * way, and then no other backup restores */
        len = strlen(job->err);
        snprintf(job->err + len, sizeof(job->err) - len, "; the backup is "
                 "kept in %.150s (keyd may have it as the newest)",
                 job->path);
        job->rc = PROVEN_ERR;
        return;
    }
    /* the next one follows this one */
    job->rc = provend_backup_set_parent(b->cfg.data_dir, job->stats.id,
                                        job->err, sizeof(job->err));
}


static void
bk_job_done(uv_work_t *work, int status)
{
    bk_job_t           *job;
    cbor_item_t        *map;
    provend_backups_t  *b;

    job = work->data;
    b = job->backups;
    b->job = NULL;
    b->cfg.provider->finish(b->cfg.provider, &job->attest);

    if (status != 0 || job->rc != PROVEN_OK) {
        if (status != 0) {
            proven_errf(job->err, sizeof(job->err), "cancelled");
        }
        provend_error("backup: %s", job->err);
        provend_ops_reply_error(job->reply, job->ctx, job->id,
                                "backup_failed", job->err);
        free(job);
        return;
    }

    provend_info("backup: storage held still for %llu ms",
                 (unsigned long long) job->paused_ms);
    map = cbor_new_definite_map(5);
    if (map != NULL
        && (proven_cbor_map_put(map, "path", cbor_build_string(job->path))
            != PROVEN_OK
            || proven_cbor_map_put(map, "bytes",
                                   cbor_build_uint64(job->stats.bytes))
               != PROVEN_OK
            || proven_cbor_map_put(map, "files",
                                   cbor_build_uint64(job->stats.files))
               != PROVEN_OK
            || proven_cbor_map_put(map, "chunks",
                                   cbor_build_uint64(job->stats.chunks))
               != PROVEN_OK
            || proven_cbor_map_put(map, "paused_ms",
                                   cbor_build_uint64(job->paused_ms))
               != PROVEN_OK))
    {
        cbor_decref(&map);
    }
    provend_ops_reply_ok(job->reply, job->ctx, job->id, map);
    free(job);
}


static void
bk_on_op(void *subsystem, const provend_op_t *op, const proven_request_t *req,
    provend_ops_reply_pt reply, void *ctx)
{
    int                 rc;
    bk_job_t           *job;
    provend_backups_t  *b;

    (void) op;
    b = subsystem;

    if (cbor_map_size(req->map) > 2) {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                "backup takes no arguments");
        return;
    }
    if (b->job != NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "conflict",
                                "a backup is under way");
        return;
    }
    job = calloc(1, sizeof(*job));
    if (job == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    job->backups = b;
    job->reply = reply;
    job->ctx = ctx;
    job->id = req->id;
    job->work.data = job;
    /* the provider's loop-thread step for the document keyd gets;
       rc stays an error so that finish learns nothing from it */
    job->attest.rc = PROVEN_ERR;
    if (b->cfg.provider->prepare(b->cfg.provider, &job->attest)
        != PROVEN_OK)
    {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                job->attest.err);
        free(job);
        return;
    }
    rc = uv_queue_work(b->cfg.loop, &job->work, bk_job_work, bk_job_done);
    if (rc != 0) {
        b->cfg.provider->finish(b->cfg.provider, &job->attest);
        free(job);
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                uv_strerror(rc));
        return;
    }
    b->job = job;
}


const provend_op_t  provend_backups_ops[] = {
    { "backup", PROVEND_CALLER_SOCKET, bk_on_op, 0 },
    { NULL, 0, NULL, 0 }
};
