/*
 * The keys and the "proven-aead" VFS as the storage layer uses them: no
 * plain text reaches the disk, everything written reads back, any changed,
 * moved or foreign block is an error and never wrong data, odd offsets and
 * truncations behave like a plain file, a SIGKILLed writer loses no
 * committed transaction, a torn append or a full disk gives an error or
 * drops only unfinished WAL frames (never corruption), and each new file or
 * WAL cycle gets a new salt.  Also prints the VFS's cost against plain unix.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "proven.h"
#include "core/keys.h"
#include "storage/vfs.h"


/* Never written anywhere in plain text when the VFS does its job. */
#define MARKER       "zq7MarkerPlainText"
#define ROWS         3000
#define FILE_MAX     (64 * 1024 * 1024)
#define MODEL_MAX    40000

/* Where block i of a file starts on disk. */
#define PHYS_AT(i)                                                         \
    (PROVEND_VFS_HEADER + (size_t) (i) * PROVEND_VFS_PHYS_BLOCK)

static char     top_dir[64];
static int      tamper_logs;     /* SQLITE_IOERR_DATA lines from the vfs */
static uint8_t  master[PROVEND_KEY_LEN];


/* ---- helpers ------------------------------------------------------------- */

static void
sqlite_log(void *arg, int code, const char *msg)
{
    (void) arg;

    if (code == SQLITE_IOERR_DATA && strncmp(msg, "proven-aead: ", 13) == 0)
    {
        tamper_logs++;
    }
}


static void
path_in(char *out, size_t len, const char *name)
{
    assert_true((size_t) snprintf(out, len, "%s/%s", top_dir, name) < len);
}


static uint8_t *
slurp(const char *path, size_t *len)
{
    FILE     *fp;
    long      n;
    uint8_t  *buf;

    fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    n = ftell(fp);
    assert_true(n >= 0 && n < FILE_MAX);
    rewind(fp);
    buf = malloc((size_t) n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t) n, fp), (size_t) n);
    fclose(fp);
    *len = (size_t) n;
    return buf;
}


static void
spill(const char *path, const uint8_t *buf, size_t len)
{
    FILE  *fp;

    fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}


static int
contains(const uint8_t *buf, size_t len, const char *needle)
{
    return memmem(buf, len, needle, strlen(needle)) != NULL;
}


/* Files under dir (recursively) holding the marker. */
static int
scan_dir(const char *dir, const char *needle)
{
    int             found;
    DIR            *d;
    char            path[512];
    size_t          len;
    uint8_t        *buf;
    struct stat     st;
    struct dirent  *de;

    found = 0;
    d = opendir(dir);
    assert_non_null(d);

    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }

        assert_true((size_t) snprintf(path, sizeof(path), "%s/%s", dir,
                                      de->d_name) < sizeof(path));
        assert_int_equal(lstat(path, &st), 0);

        if (S_ISDIR(st.st_mode)) {
            found += scan_dir(path, needle);

        } else if (S_ISREG(st.st_mode)) {
            buf = slurp(path, &len);
            if (contains(buf, len, needle)) {
                print_message("marker found in %s\n", path);
                found++;
            }
            free(buf);
        }
    }

    closedir(d);
    return found;
}


static void
exec_ok(sqlite3 *db, const char *sql)
{
    char  *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        print_error("%s: %s\n", sql, msg ? msg : "?");
        sqlite3_free(msg);
        fail();
    }
}


/* The storage layer's settings; the order of the first two matters. */
static int
db_open(const char *path, const char *vfs, sqlite3 **out)
{
    int            rc;
    sqlite3       *db;
    sqlite3_stmt  *st;

    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE
                         | SQLITE_OPEN_CREATE, vfs);
    if (rc != SQLITE_OK) {
        sqlite3_close(db);
        return rc;
    }

    rc = sqlite3_exec(db, "PRAGMA locking_mode=EXCLUSIVE", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st,
                                NULL);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            rc = strcmp((const char *) sqlite3_column_text(st, 0), "wal")
                 == 0 ? SQLITE_OK : SQLITE_ERROR;
        }
        sqlite3_finalize(st);
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db, "PRAGMA synchronous=FULL;"
                          "PRAGMA temp_store=MEMORY", NULL, NULL, NULL);
    }

    if (rc != SQLITE_OK) {
        rc = sqlite3_extended_errcode(db) ? sqlite3_extended_errcode(db) : rc;
        sqlite3_close(db);
        return rc;
    }

    *out = db;
    return SQLITE_OK;
}


static void
fill(sqlite3 *db, int rows)
{
    int            i;
    char           k[64], v[160];
    sqlite3_stmt  *st;

    exec_ok(db, "CREATE TABLE IF NOT EXISTS t_" MARKER
            " (k TEXT PRIMARY KEY, v TEXT NOT NULL, n INTEGER)");
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO t_" MARKER
                                        " VALUES (?, ?, ?)", -1, &st, NULL),
                     SQLITE_OK);

    exec_ok(db, "BEGIN");

    for (i = 0; i < rows; i++) {
        snprintf(k, sizeof(k), "%s-key-%06d", MARKER, i);
        snprintf(v, sizeof(v), "%s-value-%06d-padding-padding-padding-%d",
                 MARKER, i, i * 7);
        sqlite3_bind_text(st, 1, k, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, v, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 3, i);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);

        /* Several commits, so that the WAL holds several transactions. */
        if (i % 500 == 499) {
            exec_ok(db, "COMMIT; BEGIN");
        }
    }

    exec_ok(db, "COMMIT");
    sqlite3_finalize(st);
}


/*
 * integrity_check reports pages it cannot read as rows ending in
 * "error code=N": N is the I/O error; anything else is corruption.
 */
static int
integrity(sqlite3 *db, sqlite3_stmt *st)
{
    int          rc, code;
    const char  *text, *at;

    rc = SQLITE_OK;

    while (sqlite3_step(st) == SQLITE_ROW) {
        text = (const char *) sqlite3_column_text(st, 0);
        if (text == NULL || strcmp(text, "ok") == 0) {
            continue;
        }

        at = strstr(text, "error code=");
        code = at ? atoi(at + 11) : SQLITE_CORRUPT;
        if (rc == SQLITE_OK || (code & 0xff) == SQLITE_IOERR) {
            rc = code;
        }
    }

    if (rc == SQLITE_OK && sqlite3_errcode(db) != SQLITE_DONE) {
        rc = sqlite3_extended_errcode(db);
    }

    return rc;
}


/*
 * Reads every row and every page; SQLITE_OK only if all rows are exactly
 * what fill() wrote.  Any row that comes back must be right, error or not.
 */
static int
verify(const char *path, int rows)
{
    int            rc, i;
    char           k[64], v[160];
    sqlite3       *db;
    sqlite3_stmt  *st;

    rc = db_open(path, PROVEND_VFS_NAME, &db);
    if (rc != SQLITE_OK) {
        return rc;
    }

    rc = sqlite3_prepare_v2(db, "SELECT k, v, n FROM t_" MARKER
                            " ORDER BY n", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        rc = sqlite3_extended_errcode(db);
        sqlite3_close(db);
        return rc;
    }

    for (i = 0; (rc = sqlite3_step(st)) == SQLITE_ROW; i++) {
        snprintf(k, sizeof(k), "%s-key-%06d", MARKER, i);
        snprintf(v, sizeof(v), "%s-value-%06d-padding-padding-padding-%d",
                 MARKER, i, i * 7);
        assert_int_equal(sqlite3_column_int(st, 2), i);
        assert_string_equal((const char *) sqlite3_column_text(st, 0), k);
        assert_string_equal((const char *) sqlite3_column_text(st, 1), v);
    }

    sqlite3_finalize(st);

    if (rc == SQLITE_DONE) {
        rc = i == rows ? SQLITE_OK : SQLITE_MISMATCH;
    } else {
        rc = sqlite3_extended_errcode(db);
    }

    /* The index pages as well. */
    if (rc == SQLITE_OK) {
        rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            rc = integrity(db, st);
            sqlite3_finalize(st);
        }
    }

    sqlite3_close(db);
    return rc;
}


static void
make_db(const char *name, int rows, char *path, size_t len)
{
    sqlite3  *db;

    path_in(path, len, name);
    (void) unlink(path);
    assert_int_equal(db_open(path, PROVEND_VFS_NAME, &db), SQLITE_OK);
    fill(db, rows);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}


static double
now_s(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}


/* ---- keys ---------------------------------------------------------------- */

static void
test_master_key(void **state)
{
    char         dir[128], path[192], err[PROVEN_ERR_LEN];
    uint8_t      key[PROVEND_KEY_LEN], again[PROVEND_KEY_LEN];
    struct stat  st;

    (void) state;

    path_in(dir, sizeof(dir), "keytest");
    assert_int_equal(provend_keys_load_master(dir, key, err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(provend_keys_load_master(dir, again, err, sizeof(err)),
                     PROVEN_OK);
    assert_memory_equal(key, again, sizeof(key));

    snprintf(path, sizeof(path), "%s/keys", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    snprintf(path, sizeof(path), "%s/keys/master.key", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, PROVEND_KEY_LEN);

    /* A short key is an error and stays as it is. */
    spill(path, key, 16);
    assert_int_equal(provend_keys_load_master(dir, again, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "16 bytes"));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 16);

    /* So is a long one, and an unreadable one. */
    spill(path, (const uint8_t *) "0123456789abcdef0123456789abcdef!", 33);
    assert_int_equal(provend_keys_load_master(dir, again, err, sizeof(err)),
                     PROVEN_ERR);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(provend_keys_load_master(dir, again, err, sizeof(err)),
                     PROVEN_ERR);
    assert_int_equal(rmdir(path), 0);
}


static void
test_derive(void **state)
{
    uint8_t  a[32], b[32], c[32], d[64];

    (void) state;

    assert_int_equal(provend_keys_derive(master, "x", 1, a, 32), PROVEN_OK);
    assert_int_equal(provend_keys_derive(master, "x", 1, b, 32), PROVEN_OK);
    assert_int_equal(provend_keys_derive(master, "y", 1, c, 32), PROVEN_OK);
    assert_int_equal(provend_keys_derive(master, "x", 1, d, 64), PROVEN_OK);
    assert_memory_equal(a, b, 32);
    assert_memory_not_equal(a, c, 32);
    assert_memory_equal(a, d, 32);      /* HKDF-Expand is a prefix stream */
    assert_int_equal(provend_keys_derive(master, "x", 1, a, 0), PROVEN_ERR);
    assert_int_equal(provend_keys_derive(master, "x", 1, d, 255 * 32 + 1),
                     PROVEN_ERR);
}


static void
test_seal_open(void **state)
{
    size_t    i, len;
    uint8_t   sealed[100 + PROVEND_SEAL_OVERHEAD], again[sizeof(sealed)];
    uint8_t   plain[100], out[100], key2[32];
    const char  *ad = "v1|app:4:demo|kv:7:default|key:3:abc";

    (void) state;

    for (i = 0; i < sizeof(plain); i++) {
        plain[i] = (uint8_t) (i * 31);
    }

    len = sizeof(sealed);
    assert_int_equal(provend_seal(master, (const uint8_t *) ad, strlen(ad),
                                  plain, sizeof(plain), sealed), PROVEN_OK);
    assert_int_equal(provend_open(master, (const uint8_t *) ad, strlen(ad),
                                  sealed, len, out), PROVEN_OK);
    assert_memory_equal(out, plain, sizeof(plain));

    /* Random nonces: the same value never seals the same way twice. */
    assert_int_equal(provend_seal(master, (const uint8_t *) ad, strlen(ad),
                                  plain, sizeof(plain), again), PROVEN_OK);
    assert_memory_not_equal(sealed, again, PROVEND_NONCE_LEN);

    /* Another place (AD), another key. */
    assert_int_equal(provend_open(master, (const uint8_t *) ad,
                                  strlen(ad) - 1, sealed, len, out),
                     PROVEN_ERR);
    assert_int_equal(provend_open(master, NULL, 0, sealed, len, out),
                     PROVEN_ERR);
    memcpy(key2, master, 32);
    key2[0] ^= 1;
    assert_int_equal(provend_open(key2, (const uint8_t *) ad, strlen(ad),
                                  sealed, len, out), PROVEN_ERR);

    /* Every bit of nonce, ciphertext and tag counts. */
    for (i = 0; i < len * 8; i++) {
        sealed[i / 8] ^= (uint8_t) (1 << (i % 8));
        assert_int_equal(provend_open(master, (const uint8_t *) ad,
                                      strlen(ad), sealed, len, out),
                         PROVEN_ERR);
        sealed[i / 8] ^= (uint8_t) (1 << (i % 8));
    }

    /* Truncated, too short, and the empty value. */
    assert_int_equal(provend_open(master, (const uint8_t *) ad, strlen(ad),
                                  sealed, len - 1, out), PROVEN_ERR);
    assert_int_equal(provend_open(master, NULL, 0, sealed,
                                  PROVEND_SEAL_OVERHEAD - 1, out),
                     PROVEN_ERR);
    assert_int_equal(provend_seal(master, NULL, 0, NULL, 0, sealed),
                     PROVEN_OK);
    assert_int_equal(provend_open(master, NULL, 0, sealed,
                                  PROVEND_SEAL_OVERHEAD, out), PROVEN_OK);
}


/* ---- databases through the vfs ------------------------------------------- */

static void
test_no_plain_text(void **state)
{
    char      path[128], plain_dir[128], plain_path[160];
    sqlite3  *db;

    (void) state;

    path_in(path, sizeof(path), "scan.db");
    assert_int_equal(db_open(path, PROVEND_VFS_NAME, &db), SQLITE_OK);
    fill(db, ROWS);

    /* While open: the WAL holds everything, never checkpointed yet. */
    assert_int_equal(scan_dir(top_dir, MARKER), 0);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(scan_dir(top_dir, MARKER), 0);

    assert_int_equal(verify(path, ROWS), SQLITE_OK);
    assert_int_equal(scan_dir(top_dir, MARKER), 0);

    /* The scan itself works: the same data through unix is found. */
    path_in(plain_dir, sizeof(plain_dir), "plain");
    assert_int_equal(mkdir(plain_dir, 0700), 0);
    snprintf(plain_path, sizeof(plain_path), "%s/scan.db", plain_dir);
    assert_int_equal(db_open(plain_path, NULL, &db), SQLITE_OK);
    fill(db, 10);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_true(scan_dir(plain_dir, MARKER) > 0);
    assert_int_equal(unlink(plain_path), 0);
    assert_int_equal(rmdir(plain_dir), 0);

    /* The wrong master key reads nothing. */
    {
        char     err[PROVEN_ERR_LEN];
        uint8_t  other[PROVEND_KEY_LEN];

        memcpy(other, master, sizeof(other));
        other[5] ^= 0x40;
        assert_int_equal(provend_vfs_register(other, err, sizeof(err)),
                         PROVEN_OK);
        assert_int_not_equal(verify(path, ROWS), SQLITE_OK);
        assert_int_equal(provend_vfs_register(master, err, sizeof(err)),
                         PROVEN_OK);
        assert_int_equal(verify(path, ROWS), SQLITE_OK);
    }
}


static void
test_rollback_journal_mode_refused(void **state)
{
    char           path[128];
    sqlite3       *db;
    sqlite3_stmt  *st;

    (void) state;

    /* WAL first, exclusive second: SQLite keeps the rollback journal. */
    path_in(path, sizeof(path), "order.db");
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE
                                     | SQLITE_OPEN_CREATE, PROVEND_VFS_NAME),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1,
                                        &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *) sqlite3_column_text(st, 0), "delete");
    sqlite3_finalize(st);

    /* The rollback journal is encrypted as well. */
    fill(db, 200);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(scan_dir(top_dir, MARKER), 0);
    assert_int_equal(verify(path, 200), SQLITE_OK);
}


static void
test_tamper_bit_flip(void **state)
{
    int       rc, logs;
    char      path[128];
    size_t    len, nblocks, i, pos;
    uint8_t  *orig, *copy;

    (void) state;

    make_db("flip.db", ROWS, path, sizeof(path));
    assert_int_equal(verify(path, ROWS), SQLITE_OK);
    orig = slurp(path, &len);
    copy = malloc(len);
    assert_non_null(copy);

    nblocks = (len - PROVEND_VFS_HEADER + PROVEND_VFS_PHYS_BLOCK - 1)
              / PROVEND_VFS_PHYS_BLOCK;
    assert_true(nblocks > 10);

    /* One bit in each block, in the nonce, the ciphertext or the tag. */
    for (i = 0; i < nblocks; i++) {
        pos = PHYS_AT(i);
        pos += (i % 3 == 0) ? i % 12
               : (i % 3 == 1) ? 12 + (i * 97) % 4096
               : PROVEND_VFS_PHYS_BLOCK - 1 - i % 16;
        if (pos >= len) {
            pos = len - 1;
        }

        memcpy(copy, orig, len);
        copy[pos] ^= (uint8_t) (1 << (i % 8));
        spill(path, copy, len);

        logs = tamper_logs;
        rc = verify(path, ROWS);
        if ((rc & 0xff) != SQLITE_IOERR) {
            print_error("block %zu byte %zu: %d\n", i, pos, rc);
        }
        assert_int_equal(rc & 0xff, SQLITE_IOERR);
        assert_true(tamper_logs > logs);
    }

    /* The header: its magic, and the salt the key comes from. */
    for (i = 0; i < PROVEND_VFS_HEADER - 8; i += 5) {
        memcpy(copy, orig, len);
        copy[i] ^= 0x10;
        spill(path, copy, len);
        logs = tamper_logs;
        assert_int_equal(verify(path, ROWS) & 0xff, SQLITE_IOERR);
        assert_true(tamper_logs > logs);
    }

    /* Cut short by one byte: the last tag no longer matches. */
    spill(path, orig, len - 1);
    assert_int_equal(verify(path, ROWS) & 0xff, SQLITE_IOERR);

    spill(path, orig, len);
    assert_int_equal(verify(path, ROWS), SQLITE_OK);
    free(orig);
    free(copy);
}


static void
test_tamper_moved_blocks(void **state)
{
    int       rc, logs;
    char      path[128], other[128];
    size_t    len, olen, a, b;
    uint8_t  *orig, *copy, *foreign, tmp[PROVEND_VFS_PHYS_BLOCK];

    (void) state;

    make_db("move.db", ROWS, path, sizeof(path));
    make_db("other.db", ROWS, other, sizeof(other));
    orig = slurp(path, &len);
    foreign = slurp(other, &olen);
    copy = malloc(len);
    assert_non_null(copy);
    assert_true(len >= 8 * PROVEND_VFS_PHYS_BLOCK);
    assert_true(olen >= 8 * PROVEND_VFS_PHYS_BLOCK);

    /* Two blocks swapped within the file. */
    for (a = 1; a < 4; a++) {
        b = a + 3;
        memcpy(copy, orig, len);
        memcpy(tmp, copy + PHYS_AT(a), sizeof(tmp));
        memcpy(copy + PHYS_AT(a), copy + PHYS_AT(b), sizeof(tmp));
        memcpy(copy + PHYS_AT(b), tmp, sizeof(tmp));
        spill(path, copy, len);
        logs = tamper_logs;
        rc = verify(path, ROWS);
        assert_int_equal(rc & 0xff, SQLITE_IOERR);
        assert_true(tamper_logs > logs);
    }

    /* The same block of another database (same content, other key). */
    for (a = 0; a < 6; a++) {
        memcpy(copy, orig, len);
        memcpy(copy + PHYS_AT(a), foreign + PHYS_AT(a),
               PROVEND_VFS_PHYS_BLOCK);
        spill(path, copy, len);
        logs = tamper_logs;
        rc = verify(path, ROWS);
        assert_int_equal(rc & 0xff, SQLITE_IOERR);
        assert_true(tamper_logs > logs);
    }

    spill(path, orig, len);
    assert_int_equal(verify(path, ROWS), SQLITE_OK);
    free(orig);
    free(copy);
    free(foreign);
}


/* ---- io methods at odd offsets ------------------------------------------- */

static sqlite3_file *
raw_open(const char *path, int flags)
{
    int            out;
    sqlite3_vfs   *vfs;
    sqlite3_file  *f;

    vfs = sqlite3_vfs_find(PROVEND_VFS_NAME);
    assert_non_null(vfs);
    f = calloc(1, (size_t) vfs->szOsFile);
    assert_non_null(f);
    assert_int_equal(vfs->xOpen(vfs, path, f, flags | SQLITE_OPEN_READWRITE
                                | SQLITE_OPEN_CREATE, &out), SQLITE_OK);
    return f;
}


static void
raw_close(sqlite3_file *f)
{
    assert_int_equal(f->pMethods->xClose(f), SQLITE_OK);
    free(f);
}


static sqlite3_int64
raw_size(sqlite3_file *f)
{
    sqlite3_int64  size;

    assert_int_equal(f->pMethods->xFileSize(f, &size), SQLITE_OK);
    return size;
}


static void
raw_compare(sqlite3_file *f, const uint8_t *model, sqlite3_int64 size)
{
    uint8_t  *buf;

    assert_int_equal(raw_size(f), size);
    buf = malloc((size_t) size + 100);
    assert_non_null(buf);
    memset(buf, 0xee, (size_t) size + 100);
    assert_int_equal(f->pMethods->xRead(f, buf, (int) size + 100, 0),
                     SQLITE_IOERR_SHORT_READ);
    assert_memory_equal(buf, model, (size_t) size);
    assert_true(size + 100 > size);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(buf[size + i], 0);
    }
    free(buf);
}


static void
test_odd_offsets(void **state)
{
    int            i;
    char           path[128];
    char           info[64];
    uint8_t        data[100], buf[200], key[32], ad[8];
    uint8_t       *model, *raw, out[PROVEND_VFS_BLOCK];
    size_t         raw_len;
    struct stat    st;
    sqlite3_int64  size, off, amt;
    sqlite3_file  *f;

    (void) state;

    path_in(path, sizeof(path), "raw.bin");
    f = raw_open(path, SQLITE_OPEN_MAIN_DB);

    for (i = 0; i < 100; i++) {
        data[i] = (uint8_t) (i + 1);
    }

    /* 100 bytes at 5000: two blocks, the gap sealed zeros. */
    assert_int_equal(f->pMethods->xWrite(f, data, 100, 5000), SQLITE_OK);
    assert_int_equal(raw_size(f), 5100);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, PROVEND_VFS_HEADER + PROVEND_VFS_PHYS_BLOCK
                     + PROVEND_SEAL_OVERHEAD + 5100 - PROVEND_VFS_BLOCK);
    assert_int_equal(f->pMethods->xRead(f, buf, 100, 5000), SQLITE_OK);
    assert_memory_equal(buf, data, 100);
    assert_int_equal(f->pMethods->xRead(f, buf, 150, 4950), SQLITE_OK);
    for (i = 0; i < 50; i++) {
        assert_int_equal(buf[i], 0);
    }
    assert_memory_equal(buf + 50, data, 100);
    assert_int_equal(f->pMethods->xRead(f, buf, 200, 5050),
                     SQLITE_IOERR_SHORT_READ);
    assert_memory_equal(buf, data + 50, 50);
    for (i = 50; i < 200; i++) {
        assert_int_equal(buf[i], 0);
    }

    /* Truncate into the first byte of the second block. */
    assert_int_equal(f->pMethods->xTruncate(f, 4097), SQLITE_OK);
    assert_int_equal(raw_size(f), 4097);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, PROVEND_VFS_HEADER + PROVEND_VFS_PHYS_BLOCK
                     + PROVEND_SEAL_OVERHEAD + 1);
    assert_int_equal(f->pMethods->xWrite(f, data, 100, 4000), SQLITE_OK);
    assert_int_equal(f->pMethods->xTruncate(f, 4097), SQLITE_OK);
    assert_int_equal(f->pMethods->xRead(f, buf, 97, 4000), SQLITE_OK);
    assert_memory_equal(buf, data, 97);
    assert_int_equal(f->pMethods->xRead(f, buf, 1, 4097),
                     SQLITE_IOERR_SHORT_READ);
    assert_int_equal(f->pMethods->xTruncate(f, 4096), SQLITE_OK);
    assert_int_equal(raw_size(f), 4096);
    assert_int_equal(f->pMethods->xTruncate(f, 0), SQLITE_OK);
    assert_int_equal(raw_size(f), 0);
    assert_int_equal(f->pMethods->xRead(f, buf, 10, 0),
                     SQLITE_IOERR_SHORT_READ);

    /* Random writes and truncations against a plain memory model. */
    model = calloc(1, MODEL_MAX);
    assert_non_null(model);
    size = 0;
    srand(7);

    for (i = 0; i < 400; i++) {
        off = rand() % (MODEL_MAX / 2);
        amt = 1 + rand() % (MODEL_MAX / 4);

        if (i % 9 == 8) {
            if (off < size) {
                memset(model + off, 0, (size_t) (size - off));
            }
            assert_int_equal(f->pMethods->xTruncate(f, off), SQLITE_OK);
            size = off;

        } else {
            uint8_t  *chunk = malloc((size_t) amt);

            assert_non_null(chunk);
            for (sqlite3_int64 j = 0; j < amt; j++) {
                chunk[j] = (uint8_t) rand();
            }
            assert_int_equal(f->pMethods->xWrite(f, chunk, (int) amt, off),
                             SQLITE_OK);
            memcpy(model + off, chunk, (size_t) amt);
            if (off + amt > size) {
                size = off + amt;
            }
            free(chunk);
        }

        if (i % 20 == 0) {
            raw_compare(f, model, size);
        }
    }

    raw_compare(f, model, size);
    raw_close(f);

    f = raw_open(path, SQLITE_OPEN_MAIN_DB);
    raw_compare(f, model, size);
    raw_close(f);

    /*
     * The layout: a header (magic, salt), then blocks as provend_seal makes
     * them (nonce || ciphertext || tag, AD the index) under
     * HKDF(master, "proven-vfs-v2:" || salt || basename).
     */
    raw = slurp(path, &raw_len);
    assert_true(raw_len > PHYS_AT(2));
    assert_memory_equal(raw, "proven-aead\0v2\0\0", 16);
    memcpy(info, "proven-vfs-v2:", 14);
    memcpy(info + 14, raw + 16, PROVEND_VFS_SALT_LEN);
    memcpy(info + 14 + PROVEND_VFS_SALT_LEN, "raw.bin", 7);
    assert_int_equal(provend_keys_derive(master, info,
                                         14 + PROVEND_VFS_SALT_LEN + 7,
                                         key, 32), PROVEN_OK);
    memset(ad, 0, sizeof(ad));
    ad[7] = 1;
    assert_int_equal(provend_open(key, ad, 8, raw + PHYS_AT(1),
                                  PROVEND_VFS_PHYS_BLOCK, out), PROVEN_OK);
    assert_memory_equal(out, model + PROVEND_VFS_BLOCK, PROVEND_VFS_BLOCK);
    ad[7] = 0;
    assert_int_equal(provend_open(key, ad, 8, raw + PHYS_AT(1),
                                  PROVEND_VFS_PHYS_BLOCK, out), PROVEN_ERR);
    free(raw);
    free(model);

    /* A nameless temporary file works with its own random key. */
    f = raw_open(NULL, SQLITE_OPEN_TEMP_JOURNAL | SQLITE_OPEN_DELETEONCLOSE
                 | SQLITE_OPEN_EXCLUSIVE);
    assert_int_equal(f->pMethods->xWrite(f, data, 100, 9000), SQLITE_OK);
    assert_int_equal(raw_size(f), 9100);
    assert_int_equal(f->pMethods->xRead(f, buf, 100, 9000), SQLITE_OK);
    assert_memory_equal(buf, data, 100);
    raw_close(f);

    /* What the VFS promises SQLite about its writes. */
    f = raw_open(path, SQLITE_OPEN_MAIN_DB);
    assert_true(f->pMethods->xSectorSize(f) >= PROVEND_VFS_BLOCK);
    assert_int_equal(f->pMethods->xDeviceCharacteristics(f)
                     & (SQLITE_IOCAP_POWERSAFE_OVERWRITE
                        | SQLITE_IOCAP_ATOMIC | SQLITE_IOCAP_SAFE_APPEND
                        | SQLITE_IOCAP_ATOMIC4K), 0);
    raw_close(f);
    assert_int_equal(unlink(path), 0);
}


/* ---- crash --------------------------------------------------------------- */

static void
crash_writer(const char *path, int fd)
{
    int            i;
    char           v[64];
    sqlite3       *db;
    sqlite3_stmt  *st;

    if (db_open(path, PROVEND_VFS_NAME, &db) != SQLITE_OK
        || sqlite3_exec(db, "CREATE TABLE c (id INTEGER PRIMARY KEY, "
                        "v TEXT)", NULL, NULL, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(db, "INSERT INTO c VALUES (?, ?)", -1, &st,
                              NULL) != SQLITE_OK)
    {
        _exit(2);
    }

    /* One row per transaction; its id is told only once it committed. */
    for (i = 1; ; i++) {
        snprintf(v, sizeof(v), "%s-crash-%d", MARKER, i);
        sqlite3_bind_int(st, 1, i);
        sqlite3_bind_text(st, 2, v, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE) {
            _exit(3);
        }
        sqlite3_reset(st);
        if (write(fd, &i, sizeof(i)) != sizeof(i)) {
            _exit(4);
        }
    }
}


static void
test_crash(void **state)
{
    int            p[2], i, round, last, id, status, count;
    char           path[128], v[64];
    pid_t          pid;
    sqlite3       *db;
    sqlite3_stmt  *st;

    (void) state;

    path_in(path, sizeof(path), "crash.db");

    for (round = 0; round < 3; round++) {
        (void) unlink(path);
        assert_int_equal(pipe(p), 0);

        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            crash_writer(path, p[1]);
        }

        close(p[1]);

        /* Kill it after a varying number of acknowledged commits. */
        last = 0;
        for (i = 0; i < 150 + round * 170; i++) {
            assert_int_equal(read(p[0], &id, sizeof(id)), sizeof(id));
            last = id;
        }

        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));

        /* Commits acknowledged while the kill was on its way count too. */
        while (read(p[0], &id, sizeof(id)) == sizeof(id)) {
            last = id;
        }
        close(p[0]);

        assert_int_equal(scan_dir(top_dir, MARKER), 0);

        assert_int_equal(db_open(path, PROVEND_VFS_NAME, &db), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT id, v FROM c "
                                            "ORDER BY id", -1, &st, NULL),
                         SQLITE_OK);
        for (count = 0; sqlite3_step(st) == SQLITE_ROW; count++) {
            snprintf(v, sizeof(v), "%s-crash-%d", MARKER, count + 1);
            assert_int_equal(sqlite3_column_int(st, 0), count + 1);
            assert_string_equal((const char *) sqlite3_column_text(st, 1),
                                v);
        }
        assert_int_equal(sqlite3_errcode(db), SQLITE_DONE);
        sqlite3_finalize(st);
        assert_true(count >= last);
        assert_true(count <= last + 1);
        exec_ok(db, "PRAGMA integrity_check");
        assert_int_equal(sqlite3_close(db), SQLITE_OK);
    }
}


/* ---- torn writes and a full disk ----------------------------------------- */

static void
append_bytes(const char *path, size_t n)
{
    FILE    *fp;
    size_t   i;

    fp = fopen(path, "ab");
    assert_non_null(fp);
    for (i = 0; i < n; i++) {
        assert_int_equal(fputc((int) (i * 37 + 11) & 0xff, fp),
                         (int) (i * 37 + 11) & 0xff);
    }
    assert_int_equal(fclose(fp), 0);
}


/* A database whose WAL still holds its commits: the writer never closed. */
static void
make_db_with_wal(const char *name, int rows, char *path, size_t len)
{
    int       status;
    pid_t     pid;
    sqlite3  *db;

    path_in(path, len, name);
    (void) unlink(path);

    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (db_open(path, PROVEND_VFS_NAME, &db) != SQLITE_OK) {
            _exit(2);
        }
        sqlite3_exec(db, "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL);
        fill(db, rows);
        _exit(0);
    }

    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}


static void
test_torn_tail(void **state)
{
    int       logs;
    char      path[128], wal[160];
    size_t    db_len, wal_len;
    uint8_t  *db_orig, *wal_orig, *copy;

    (void) state;

    make_db_with_wal("torn.db", ROWS, path, sizeof(path));
    snprintf(wal, sizeof(wal), "%s-wal", path);
    db_orig = slurp(path, &db_len);
    wal_orig = slurp(wal, &wal_len);
    assert_true(wal_len > PHYS_AT(4));

    /* Fragments too short to hold a sealed byte count for nothing. */
    append_bytes(path, PROVEND_SEAL_OVERHEAD);
    append_bytes(wal, PROVEND_SEAL_OVERHEAD);
    logs = tamper_logs;
    assert_int_equal(verify(path, ROWS), SQLITE_OK);
    assert_int_equal(tamper_logs, logs);

    /* A longer torn append to the WAL: the last block is dropped. */
    spill(path, db_orig, db_len);
    spill(wal, wal_orig, wal_len);
    append_bytes(wal, 100);
    assert_int_equal(verify(path, ROWS), SQLITE_OK);
    assert_int_equal(tamper_logs, logs);

    /* So is a torn last block of the WAL itself. */
    spill(path, db_orig, db_len);
    copy = malloc(wal_len);
    assert_non_null(copy);
    memcpy(copy, wal_orig, wal_len);
    copy[wal_len - 5] ^= 0x01;
    spill(wal, copy, wal_len);
    assert_int_equal(verify(path, ROWS), SQLITE_OK);
    assert_int_equal(tamper_logs, logs);

    /* Anywhere else in the WAL it is an error. */
    spill(path, db_orig, db_len);
    memcpy(copy, wal_orig, wal_len);
    copy[PHYS_AT(1) + 100] ^= 0x01;
    spill(wal, copy, wal_len);
    assert_int_equal(verify(path, ROWS) & 0xff, SQLITE_IOERR);
    assert_true(tamper_logs > logs);

    /* And in any other file, a torn last block too. */
    spill(path, db_orig, db_len);
    (void) unlink(wal);
    append_bytes(path, 100);
    {
        sqlite3_file  *f;
        uint8_t        buf[64];

        f = raw_open(path, SQLITE_OPEN_MAIN_DB);
        logs = tamper_logs;
        assert_int_equal(f->pMethods->xRead(f, buf, sizeof(buf),
                                            (sqlite3_int64) (db_len
                                                - PROVEND_VFS_HEADER)
                                            / PROVEND_VFS_PHYS_BLOCK
                                            * PROVEND_VFS_BLOCK),
                         SQLITE_IOERR_DATA);
        assert_true(tamper_logs > logs);
        raw_close(f);
    }

    free(copy);
    free(db_orig);
    free(wal_orig);
    (void) unlink(path);
}


/*
 * RLIMIT_FSIZE stands in for a full disk: the write past it is cut short
 * (the unix VFS leaves a fragment) and then fails.  In a child, with
 * SIGXFSZ ignored so that the write returns EFBIG.
 */
static void
disk_full_child(const char *path, const char *db_path, int fd)
{
    int            i, rc;
    uint8_t        block[PROVEND_VFS_BLOCK];
    sqlite3       *db;
    sqlite3_stmt  *st;
    sqlite3_file  *f;
    sqlite3_vfs   *vfs;
    struct rlimit  rl;
    sqlite3_int64  size;

    /* Only the soft limit moves: it has to go up again below. */
    signal(SIGXFSZ, SIG_IGN);
    if (getrlimit(RLIMIT_FSIZE, &rl) != 0) {
        _exit(10);
    }
    rl.rlim_cur = PHYS_AT(3) + 1000;
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) {
        _exit(10);
    }

    /* Raw: three blocks fit, the fourth does not. */
    vfs = sqlite3_vfs_find(PROVEND_VFS_NAME);
    f = calloc(1, (size_t) vfs->szOsFile);
    if (f == NULL || vfs->xOpen(vfs, path, f, SQLITE_OPEN_MAIN_DB
                                | SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                &i) != SQLITE_OK)
    {
        _exit(11);
    }

    memset(block, 0x5a, sizeof(block));
    for (i = 0; i < 3; i++) {
        if (f->pMethods->xWrite(f, block, sizeof(block),
                                i * PROVEND_VFS_BLOCK) != SQLITE_OK)
        {
            _exit(12);
        }
    }

    rc = f->pMethods->xWrite(f, block, sizeof(block), 3 * PROVEND_VFS_BLOCK);
    if (rc == SQLITE_OK) {
        _exit(13);
    }

    if (f->pMethods->xFileSize(f, &size) != SQLITE_OK
        || size != 3 * PROVEND_VFS_BLOCK
        || f->pMethods->xRead(f, block, sizeof(block), 2 * PROVEND_VFS_BLOCK)
           != SQLITE_OK)
    {
        _exit(14);
    }

    f->pMethods->xClose(f);
    free(f);

    /* A database: rows until the disk is full; each told once committed. */
    rl.rlim_cur = 256 * 1024;
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0
        || db_open(db_path, PROVEND_VFS_NAME, &db) != SQLITE_OK
        || sqlite3_exec(db, "CREATE TABLE d (id INTEGER PRIMARY KEY, "
                        "v BLOB)", NULL, NULL, NULL) != SQLITE_OK
        || sqlite3_prepare_v2(db, "INSERT INTO d VALUES (?, "
                              "randomblob(1500))", -1, &st, NULL)
           != SQLITE_OK)
    {
        _exit(15);
    }

    for (i = 1; i < 100000; i++) {
        sqlite3_bind_int(st, 1, i);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            break;
        }
        if (write(fd, &i, sizeof(i)) != sizeof(i)) {
            _exit(16);
        }
    }

    /* An error, not corruption: SQLITE_FULL or an I/O error. */
    if (rc != SQLITE_FULL && (rc & 0xff) != SQLITE_IOERR) {
        _exit(17);
    }

    /* Left as a crash would leave it. */
    _exit(0);
}


static void
test_disk_full(void **state)
{
    int            p[2], id, last, status, count;
    char           path[128], db_path[128];
    pid_t          pid;
    sqlite3       *db;
    sqlite3_stmt  *st;
    struct stat    sb;

    (void) state;

    path_in(path, sizeof(path), "full.bin");
    path_in(db_path, sizeof(db_path), "full.db");
    (void) unlink(path);
    (void) unlink(db_path);
    assert_int_equal(pipe(p), 0);

    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        disk_full_child(path, db_path, p[1]);
    }

    close(p[1]);
    last = 0;
    while (read(p[0], &id, sizeof(id)) == sizeof(id)) {
        last = id;
    }
    close(p[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(last > 10);

    /* The failed write was cut back to the last whole block. */
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, PHYS_AT(3));

    /* Every committed row is there, nothing is corrupt. */
    assert_int_equal(db_open(db_path, PROVEND_VFS_NAME, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT id FROM d ORDER BY id",
                                        -1, &st, NULL), SQLITE_OK);
    for (count = 0; sqlite3_step(st) == SQLITE_ROW; count++) {
        assert_int_equal(sqlite3_column_int(st, 0), count + 1);
    }
    assert_int_equal(sqlite3_errcode(db), SQLITE_DONE);
    sqlite3_finalize(st);
    assert_true(count >= last);
    assert_true(count <= last + 1);
    exec_ok(db, "PRAGMA integrity_check");
    exec_ok(db, "INSERT INTO d VALUES (NULL, x'00')");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    (void) unlink(path);
}


/* ---- salts --------------------------------------------------------------- */

static void
read_salt(const char *path, uint8_t salt[PROVEND_VFS_SALT_LEN])
{
    size_t    len;
    uint8_t  *raw;

    raw = slurp(path, &len);
    assert_true(len >= PROVEND_VFS_HEADER);
    memcpy(salt, raw + 16, PROVEND_VFS_SALT_LEN);
    free(raw);
}


/*
 * WAL appends as SQLite makes them (a 24-byte frame header, then the page)
 * wait for the unfinished last block in memory: whatever comes next (a
 * read, a size, a sync, a write elsewhere, a close) must see every byte,
 * and after a sync the file on disk must hold them all.
 */
static void
test_wal_appends(void **state)
{
    int            i;
    char           path[128];
    uint8_t       *model, header[24], page[PROVEND_VFS_BLOCK];
    size_t         raw_len;
    uint8_t       *raw;
    sqlite3_int64  off;
    sqlite3_file  *f;

    (void) state;

    path_in(path, sizeof(path), "appends.wal");
    (void) unlink(path);

    model = calloc(1, MODEL_MAX);
    assert_non_null(model);

    f = raw_open(path, SQLITE_OPEN_WAL);
    off = 32;
    memset(model, 0x57, 32);
    assert_int_equal(f->pMethods->xWrite(f, model, 32, 0), SQLITE_OK);

    for (i = 0; off + 24 + (sqlite3_int64) sizeof(page) <= MODEL_MAX; i++) {
        memset(header, 0x40 + i, sizeof(header));
        memset(page, 0x80 + i, sizeof(page));

        assert_int_equal(f->pMethods->xWrite(f, header, sizeof(header), off),
                         SQLITE_OK);
        memcpy(model + off, header, sizeof(header));
        off += (sqlite3_int64) sizeof(header);

        assert_int_equal(f->pMethods->xWrite(f, page, sizeof(page), off),
                         SQLITE_OK);
        memcpy(model + off, page, sizeof(page));
        off += (sqlite3_int64) sizeof(page);

        /* Between appends: a size, a read, a sync or a rewrite. */
        switch (i % 4) {
        case 0:
            assert_int_equal(raw_size(f), off);
            break;
        case 1:
            raw_compare(f, model, off);
            break;
        case 2:
            assert_int_equal(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL),
                             SQLITE_OK);
            break;
        default:
            memset(header, 0x20 + i, sizeof(header));
            assert_int_equal(f->pMethods->xWrite(f, header, sizeof(header),
                                                 off - 100), SQLITE_OK);
            memcpy(model + off - 100, header, sizeof(header));
            break;
        }
    }

    raw_compare(f, model, off);

    /* Synced: the file underneath is whole without a close. */
    assert_int_equal(f->pMethods->xSync(f, SQLITE_SYNC_NORMAL), SQLITE_OK);
    raw = slurp(path, &raw_len);
    assert_int_equal(raw_len, PHYS_AT(off / PROVEND_VFS_BLOCK)
                              + (off % PROVEND_VFS_BLOCK
                                 ? off % PROVEND_VFS_BLOCK
                                   + PROVEND_SEAL_OVERHEAD
                                 : 0));
    free(raw);

    /* An append left waiting is written by the close. */
    memset(header, 0x11, sizeof(header));
    assert_int_equal(f->pMethods->xWrite(f, header, sizeof(header), off),
                     SQLITE_OK);
    memcpy(model + off, header, sizeof(header));
    off += (sqlite3_int64) sizeof(header);
    raw_close(f);

    f = raw_open(path, SQLITE_OPEN_WAL);
    assert_int_equal(raw_size(f), off);
    raw_compare(f, model, off);
    raw_close(f);

    assert_int_equal(unlink(path), 0);
    free(model);
}


static void
test_new_salt(void **state)
{
    char           path[128];
    uint8_t        data[100], buf[100];
    uint8_t        a[PROVEND_VFS_SALT_LEN], b[PROVEND_VFS_SALT_LEN];
    struct stat    sb;
    sqlite3_file  *f;

    (void) state;

    memset(data, 0x33, sizeof(data));
    path_in(path, sizeof(path), "salt.db");
    (void) unlink(path);

    /* Created: no header until the first write. */
    f = raw_open(path, SQLITE_OPEN_MAIN_DB);
    assert_int_equal(raw_size(f), 0);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, 0);
    assert_int_equal(f->pMethods->xWrite(f, data, 100, 0), SQLITE_OK);
    read_salt(path, a);

    /* Truncated to zero, written again: a new salt. */
    assert_int_equal(f->pMethods->xTruncate(f, 0), SQLITE_OK);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, 0);
    assert_int_equal(f->pMethods->xWrite(f, data, 100, 0), SQLITE_OK);
    read_salt(path, b);
    assert_memory_not_equal(a, b, sizeof(a));
    raw_close(f);

    /* Deleted and created again: a new one too. */
    assert_int_equal(unlink(path), 0);
    f = raw_open(path, SQLITE_OPEN_MAIN_DB);
    assert_int_equal(f->pMethods->xWrite(f, data, 100, 0), SQLITE_OK);
    read_salt(path, a);
    assert_memory_not_equal(a, b, sizeof(a));

    /* Rewriting offset 0 of a database keeps the file and its salt. */
    assert_int_equal(f->pMethods->xWrite(f, data, 100, 5000), SQLITE_OK);
    assert_int_equal(f->pMethods->xWrite(f, data, 10, 0), SQLITE_OK);
    read_salt(path, b);
    assert_memory_equal(a, b, sizeof(a));
    assert_int_equal(raw_size(f), 5100);
    raw_close(f);
    assert_int_equal(unlink(path), 0);

    /* A WAL written at offset 0 starts a new cycle: new salt, old gone. */
    f = raw_open(path, SQLITE_OPEN_WAL);
    assert_int_equal(f->pMethods->xWrite(f, data, 100, 5000), SQLITE_OK);
    read_salt(path, a);
    assert_int_equal(f->pMethods->xWrite(f, data, 32, 0), SQLITE_OK);
    read_salt(path, b);
    assert_memory_not_equal(a, b, sizeof(a));
    assert_int_equal(raw_size(f), 32);
    assert_int_equal(f->pMethods->xRead(f, buf, 32, 0), SQLITE_OK);
    assert_memory_equal(buf, data, 32);
    raw_close(f);
    assert_int_equal(unlink(path), 0);
}


/* ---- throughput, printed only -------------------------------------------- */

static double
rows_per_s(const char *path, const char *vfs, int rows, double *read_rate)
{
    int            i;
    double         t0, t1;
    sqlite3       *db;
    sqlite3_stmt  *st;

    (void) unlink(path);
    assert_int_equal(db_open(path, vfs, &db), SQLITE_OK);
    exec_ok(db, "CREATE TABLE b (id INTEGER PRIMARY KEY, v BLOB)");
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO b VALUES (?, "
                                        "randomblob(100))", -1, &st, NULL),
                     SQLITE_OK);

    /* Transactions of 100 rows, each a durable commit. */
    t0 = now_s();
    for (i = 0; i < rows; i++) {
        if (i % 100 == 0) {
            exec_ok(db, "BEGIN");
        }
        sqlite3_bind_int(st, 1, i);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
        if (i % 100 == 99) {
            exec_ok(db, "COMMIT");
        }
    }
    t1 = now_s();
    sqlite3_finalize(st);

    /* Point reads by key. */
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT v FROM b WHERE id = ?",
                                        -1, &st, NULL), SQLITE_OK);
    *read_rate = now_s();
    for (i = 0; i < rows; i++) {
        sqlite3_bind_int(st, 1, (i * 7919) % rows);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        sqlite3_reset(st);
    }
    *read_rate = rows / (now_s() - *read_rate);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    /* Cold reads after reopening go through the blocks. */
    return rows / (t1 - t0);
}


static void
test_throughput(void **state)
{
    char    path[128];
    double  aead_w, aead_r, unix_w, unix_r;

    (void) state;

    path_in(path, sizeof(path), "bench.db");
    aead_w = rows_per_s(path, PROVEND_VFS_NAME, 20000, &aead_r);
    unix_w = rows_per_s(path, NULL, 20000, &unix_r);
    print_message("vfs throughput: writes (100-row transactions, "
                  "synchronous=FULL) %s %.0f rows/s, unix %.0f rows/s, "
                  "ratio %.2f; point reads %s %.0f rows/s, unix %.0f rows/s, "
                  "ratio %.2f\n", PROVEND_VFS_NAME, aead_w, unix_w,
                  aead_w / unix_w, PROVEND_VFS_NAME, aead_r, unix_r,
                  aead_r / unix_r);
    (void) unlink(path);
}


/* ---- main ---------------------------------------------------------------- */

static int
remove_tree(const char *dir)
{
    char  cmd[256];

    /* Only ever our own mkdtemp() directory. */
    if (strncmp(dir, "/tmp/test_vfs.", 14) != 0) {
        return -1;
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd);
}


int
main(void)
{
    int    rc;
    char   err[PROVEN_ERR_LEN];

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_master_key),
        cmocka_unit_test(test_derive),
        cmocka_unit_test(test_seal_open),
        cmocka_unit_test(test_no_plain_text),
        cmocka_unit_test(test_rollback_journal_mode_refused),
        cmocka_unit_test(test_tamper_bit_flip),
        cmocka_unit_test(test_tamper_moved_blocks),
        cmocka_unit_test(test_odd_offsets),
        cmocka_unit_test(test_crash),
        cmocka_unit_test(test_torn_tail),
        cmocka_unit_test(test_wal_appends),
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_new_salt),
        cmocka_unit_test(test_throughput),
    };

    /* Before anything initialises SQLite. */
    sqlite3_config(SQLITE_CONFIG_LOG, sqlite_log, NULL);

    snprintf(top_dir, sizeof(top_dir), "/tmp/test_vfs.XXXXXX");
    if (mkdtemp(top_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }

    if (provend_keys_load_master(top_dir, master, err, sizeof(err))
        != PROVEN_OK
        || provend_vfs_register(master, err, sizeof(err)) != PROVEN_OK)
    {
        fprintf(stderr, "setup: %s\n", err);
        remove_tree(top_dir);
        return 1;
    }

    rc = cmocka_run_group_tests(tests, NULL, NULL);

    if (rc == 0 || getenv("PROVEND_TEST_KEEP") == NULL) {
        remove_tree(top_dir);
    } else {
        fprintf(stderr, "kept %s\n", top_dir);
    }

    return rc;
}
