/*
 * The "proven-aead" SQLite VFS: every block of every file is sealed with
 * AES-256-GCM before it reaches the unix VFS underneath.  See vfs.h for the
 * layout.  Crash safety: the VFS does not advertise POWERSAFE_OVERWRITE and
 * reports a 4096-byte sector, so SQLite pads each synced WAL commit to a
 * block boundary and never rewrites a block holding committed frames.  The
 * unfinished last block of a -wal waits in memory for the next append and
 * is written before anything else happens to the file (a sync above all);
 * only unsynced frames wait, so a crash loses nothing committed.
 *
 * What it protects: confidentiality of everything SQLite writes, and the
 * integrity of each block in place (a changed, moved, swapped or foreign
 * block reads as an error, never as other data).
 *
 * What it does NOT protect against:
 * - rollback: an older copy of a block (same file, same place, same salt)
 *   or of a whole file authenticates fine; nothing binds a block to a
 *   version.  Freshness needs a counter kept outside the host's reach.
 * - truncation of whole trailing blocks: the file size is not
 *   authenticated, so a file cut at a block boundary reads as a shorter
 *   file (SQLite may then notice a missing page, or may not).  The last
 *   block of a -wal file that fails to authenticate is also dropped as a
 *   torn write, so changing it loses the newest uncommitted (or, if
 *   tampered with, committed) frames rather than giving an error.
 * - sizes and access patterns, which stay visible.
 *
 * Nonces are random (96 bits), so a key should seal well under 2^32
 * blocks.  Each file's key comes from its name and a random salt in its
 * header, chosen when the file is created, when it is truncated to zero,
 * and when SQLite starts a new WAL cycle (a write at offset 0 of a -wal
 * file, which only happens once every frame is checkpointed): the hot WAL
 * gets a new key every cycle.  A database file keeps its key for life;
 * rewriting 2^32 blocks (16 TiB) of one file would call for a rekey
 * (VACUUM INTO a new file).
 */

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#include "proven.h"
#include "core/keys.h"
#include "vfs.h"


#define PROVEND_VFS_INFO_PREFIX  "proven-vfs-v2:"

/* The header: magic, then the salt of the file's key. */
#define PROVEND_VFS_MAGIC        "proven-aead\0v2\0\0"
#define PROVEND_VFS_MAGIC_LEN    16

/* Far beyond any SQLite file; keeps block arithmetic from overflowing. */
#define PROVEND_VFS_SIZE_MAX     ((sqlite3_int64) 1 << 48)

#define provend_vfs_align8(n)    (((n) + 7) & ~(size_t) 7)

#define provend_vfs_phys_off(idx)                                          \
    (PROVEND_VFS_HEADER + (sqlite3_int64) (idx) * PROVEND_VFS_PHYS_BLOCK)

/*
 * Random nonces drawn this many at a time: each DRBG call has a fixed cost
 * (locks, a reseed check, an update step) as large as sealing the block.
 * Every nonce is still used once; nonces are public (stored in front of
 * each block), so the unused ones need no wiping.
 */
#define PROVEND_VFS_NONCES       32


typedef struct {
    sqlite3_file      base;
    sqlite3_file     *real;       /* the unix file, right after this one */
    const char       *name;       /* basename, for log lines */
    const char       *key_name;   /* basename, "" for a nameless file */
    int               is_wal;
    int               keyed;      /* the header was read or written */
    int               stale;      /* another connection may have changed it */
    sqlite3_int64     tail_ok;    /* -wal: physical size whose last block
                                     authenticated, -1 for unknown */
    EVP_CIPHER_CTX   *enc;        /* keyed per salt, a fresh nonce per block */
    EVP_CIPHER_CTX   *dec;
    sqlite3_int64     cache_idx;  /* block held in cache, -1 for none */
    size_t            cache_len;
    int               pending;    /* cache is the -wal's last block, not
                                     yet sealed and written */
    int               synced;     /* nothing written since the last sync */
    uint8_t           salt[PROVEND_VFS_SALT_LEN];
    size_t            nonces_left;  /* unused at the end of nonces */
    uint8_t           nonces[PROVEND_VFS_NONCES * PROVEND_NONCE_LEN];
    uint8_t           cache[PROVEND_VFS_BLOCK];
    uint8_t           phys[PROVEND_VFS_PHYS_BLOCK];
} provend_vfs_file_t;


static int provend_vfs_close(sqlite3_file *file);
static int provend_vfs_read(sqlite3_file *file, void *buf, int amt,
    sqlite3_int64 off);
static int provend_vfs_write(sqlite3_file *file, const void *buf, int amt,
    sqlite3_int64 off);
static int provend_vfs_truncate(sqlite3_file *file, sqlite3_int64 size);
static int provend_vfs_sync(sqlite3_file *file, int flags);
static int provend_vfs_file_size(sqlite3_file *file, sqlite3_int64 *size);
static int provend_vfs_lock(sqlite3_file *file, int level);
static int provend_vfs_unlock(sqlite3_file *file, int level);
static int provend_vfs_check_reserved_lock(sqlite3_file *file, int *out);
static int provend_vfs_file_control(sqlite3_file *file, int op, void *arg);
static int provend_vfs_sector_size(sqlite3_file *file);
static int provend_vfs_device_characteristics(sqlite3_file *file);


static sqlite3_vfs  *provend_vfs_real;
static uint8_t       provend_vfs_master[PROVEND_KEY_LEN];

/* Version 1: no shared memory and no memory-mapped pages of plain text. */
static const sqlite3_io_methods  provend_vfs_io = {
    1,
    provend_vfs_close,
    provend_vfs_read,
    provend_vfs_write,
    provend_vfs_truncate,
    provend_vfs_sync,
    provend_vfs_file_size,
    provend_vfs_lock,
    provend_vfs_unlock,
    provend_vfs_check_reserved_lock,
    provend_vfs_file_control,
    provend_vfs_sector_size,
    provend_vfs_device_characteristics,
    NULL, NULL, NULL, NULL, NULL, NULL
};


/* ---- header and key ------------------------------------------------------ */

/* HKDF(master, prefix || salt || basename) keys both directions. */
static int
provend_vfs_set_key(provend_vfs_file_t *f, const uint8_t *salt)
{
    int      ok;
    char     info[PROVEND_KEYS_INFO_MAX];
    size_t   prefix_len, name_len, info_len;
    uint8_t  key[PROVEND_KEY_LEN];

    prefix_len = sizeof(PROVEND_VFS_INFO_PREFIX) - 1;
    name_len = strlen(f->key_name);
    info_len = prefix_len + PROVEND_VFS_SALT_LEN + name_len;
    if (info_len > sizeof(info)) {
        return SQLITE_CANTOPEN;
    }

    memcpy(info, PROVEND_VFS_INFO_PREFIX, prefix_len);
    memcpy(info + prefix_len, salt, PROVEND_VFS_SALT_LEN);
    memcpy(info + prefix_len + PROVEND_VFS_SALT_LEN, f->key_name, name_len);

    ok = provend_keys_derive(provend_vfs_master, info, info_len, key,
                             sizeof(key)) == PROVEN_OK
         && EVP_EncryptInit_ex(f->enc, NULL, NULL, key, NULL) == 1
         && EVP_DecryptInit_ex(f->dec, NULL, NULL, key, NULL) == 1;

    OPENSSL_cleanse(key, sizeof(key));
    f->keyed = 0;
    f->cache_idx = -1;
    f->tail_ok = -1;

    if (!ok) {
        sqlite3_log(SQLITE_IOERR, "proven-aead: deriving the key of %s "
                    "failed", f->name);
        return SQLITE_IOERR;
    }

    memcpy(f->salt, salt, PROVEND_VFS_SALT_LEN);
    f->keyed = 1;
    return SQLITE_OK;
}


/* Keys the file from its header; phys is at least the header's size. */
static int
provend_vfs_load_header(provend_vfs_file_t *f)
{
    int      rc;
    uint8_t  hdr[PROVEND_VFS_HEADER];

    rc = f->real->pMethods->xRead(f->real, hdr, sizeof(hdr), 0);
    if (rc != SQLITE_OK) {
        return rc == SQLITE_IOERR_SHORT_READ ? SQLITE_IOERR_DATA : rc;
    }

    if (memcmp(hdr, PROVEND_VFS_MAGIC, PROVEND_VFS_MAGIC_LEN) != 0) {
        sqlite3_log(SQLITE_IOERR_DATA, "proven-aead: %s has no %s header",
                    f->name, PROVEND_VFS_NAME);
        return SQLITE_IOERR_DATA;
    }

    f->stale = 0;

    if (f->keyed
        && memcmp(f->salt, hdr + PROVEND_VFS_MAGIC_LEN,
                  PROVEND_VFS_SALT_LEN) == 0)
    {
        return SQLITE_OK;
    }

    return provend_vfs_set_key(f, hdr + PROVEND_VFS_MAGIC_LEN);
}


/*
 * Starts the file over: whatever is there (nothing, or a torn header) goes,
 * a header with a fresh salt takes its place.
 */
static int
provend_vfs_create_header(provend_vfs_file_t *f, sqlite3_int64 phys)
{
    int      rc;
    uint8_t  hdr[PROVEND_VFS_HEADER];

    if (phys > 0) {
        rc = f->real->pMethods->xTruncate(f->real, 0);
        if (rc != SQLITE_OK) {
            return rc;
        }
    }

    memset(hdr, 0, sizeof(hdr));
    memcpy(hdr, PROVEND_VFS_MAGIC, PROVEND_VFS_MAGIC_LEN);
    if (RAND_bytes(hdr + PROVEND_VFS_MAGIC_LEN, PROVEND_VFS_SALT_LEN) != 1) {
        return SQLITE_IOERR_WRITE;
    }

    rc = provend_vfs_set_key(f, hdr + PROVEND_VFS_MAGIC_LEN);
    if (rc != SQLITE_OK) {
        return rc;
    }

    /* Keyed only once the header is on disk. */
    f->keyed = 0;
    rc = f->real->pMethods->xWrite(f->real, hdr, sizeof(hdr), 0);
    if (rc != SQLITE_OK) {
        return rc;
    }

    f->keyed = 1;
    f->stale = 0;
    return SQLITE_OK;
}


/* ---- blocks -------------------------------------------------------------- */

static void
provend_vfs_block_ad(sqlite3_int64 idx, uint8_t ad[8])
{
    int  i;

    for (i = 7; i >= 0; i--) {
        ad[i] = (uint8_t) (idx & 0xff);
        idx >>= 8;
    }
}


/* Logical bytes held by block idx of a file of logical size size. */
static size_t
provend_vfs_block_len(sqlite3_int64 size, sqlite3_int64 idx)
{
    sqlite3_int64  start;

    start = idx * PROVEND_VFS_BLOCK;

    if (start >= size) {
        return 0;
    }

    return size - start >= PROVEND_VFS_BLOCK
           ? PROVEND_VFS_BLOCK : (size_t) (size - start);
}


/* The physical size a file of logical size size has when written whole. */
static sqlite3_int64
provend_vfs_phys_size(sqlite3_int64 size)
{
    sqlite3_int64  rem;

    rem = size % PROVEND_VFS_BLOCK;
    return provend_vfs_phys_off(size / PROVEND_VFS_BLOCK)
           + (rem > 0 ? rem + PROVEND_SEAL_OVERHEAD : 0);
}


/* Decrypts block idx (len logical bytes) into f->cache. */
static int
provend_vfs_load_block(provend_vfs_file_t *f, sqlite3_int64 idx, size_t len,
    int quiet)
{
    int       rc, n, ok;
    uint8_t   ad[8];
    uint8_t  *tag;

    if (f->cache_idx == idx && f->cache_len == len) {
        return SQLITE_OK;
    }

    f->cache_idx = -1;

    rc = f->real->pMethods->xRead(f->real, f->phys,
                                  (int) (len + PROVEND_SEAL_OVERHEAD),
                                  provend_vfs_phys_off(idx));
    if (rc == SQLITE_IOERR_SHORT_READ) {
        sqlite3_log(SQLITE_IOERR_DATA, "proven-aead: block %lld of %s is "
                    "cut short", (long long) idx, f->name);
        return SQLITE_IOERR_DATA;
    }

    if (rc != SQLITE_OK) {
        return rc;
    }

    provend_vfs_block_ad(idx, ad);
    tag = f->phys + PROVEND_NONCE_LEN + len;

    ok = EVP_DecryptInit_ex(f->dec, NULL, NULL, NULL, f->phys) == 1
         && EVP_DecryptUpdate(f->dec, NULL, &n, ad, sizeof(ad)) == 1
         && EVP_DecryptUpdate(f->dec, f->cache, &n,
                              f->phys + PROVEND_NONCE_LEN, (int) len) == 1
         && EVP_CIPHER_CTX_ctrl(f->dec, EVP_CTRL_GCM_SET_TAG,
                                PROVEND_TAG_LEN, tag) == 1
         && EVP_DecryptFinal_ex(f->dec, f->cache + n, &n) == 1;

    if (!ok) {
        OPENSSL_cleanse(f->cache, len);
        if (!quiet) {
            sqlite3_log(SQLITE_IOERR_DATA, "proven-aead: block %lld of %s "
                        "failed authentication (tampered, moved or torn)",
                        (long long) idx, f->name);
        }
        return SQLITE_IOERR_DATA;
    }

    f->cache_idx = idx;
    f->cache_len = len;
    return SQLITE_OK;
}


/* A fresh random nonce into out. */
static int
provend_vfs_nonce(provend_vfs_file_t *f, uint8_t *out)
{
    if (f->nonces_left == 0) {
        if (RAND_bytes(f->nonces, sizeof(f->nonces)) != 1) {
            return PROVEN_ERR;
        }
        f->nonces_left = PROVEND_VFS_NONCES;
    }

    f->nonces_left--;
    memcpy(out, f->nonces + f->nonces_left * PROVEND_NONCE_LEN,
           PROVEND_NONCE_LEN);
    return PROVEN_OK;
}


/* Seals the first len bytes of f->cache as block idx, with a new nonce. */
static int
provend_vfs_store_block(provend_vfs_file_t *f, sqlite3_int64 idx, size_t len)
{
    int       rc, n, ok;
    uint8_t   ad[8];
    uint8_t  *ct;

    f->cache_idx = -1;
    provend_vfs_block_ad(idx, ad);
    ct = f->phys + PROVEND_NONCE_LEN;

    ok = f->keyed
         && provend_vfs_nonce(f, f->phys) == PROVEN_OK
         && EVP_EncryptInit_ex(f->enc, NULL, NULL, NULL, f->phys) == 1
         && EVP_EncryptUpdate(f->enc, NULL, &n, ad, sizeof(ad)) == 1
         && EVP_EncryptUpdate(f->enc, ct, &n, f->cache, (int) len) == 1
         && EVP_EncryptFinal_ex(f->enc, ct + n, &n) == 1
         && EVP_CIPHER_CTX_ctrl(f->enc, EVP_CTRL_GCM_GET_TAG,
                                PROVEND_TAG_LEN, ct + len) == 1;

    if (!ok) {
        sqlite3_log(SQLITE_IOERR_WRITE, "proven-aead: sealing block %lld "
                    "of %s failed", (long long) idx, f->name);
        return SQLITE_IOERR_WRITE;
    }

    rc = f->real->pMethods->xWrite(f->real, f->phys,
                                   (int) (len + PROVEND_SEAL_OVERHEAD),
                                   provend_vfs_phys_off(idx));
    if (rc != SQLITE_OK) {
        return rc;
    }

    f->cache_idx = idx;
    f->cache_len = len;
    return SQLITE_OK;
}


/*
 * The logical size follows from the physical one, past the header.  A file
 * shorter than the header is empty (a torn creation); a tail too short to
 * hold a sealed byte is a torn extension and holds no data.  The last block
 * of a -wal file that fails to authenticate is a torn append too: SQLite
 * syncs each commit up to a block boundary before it writes past it, so
 * that block holds nothing committed.  It is cut off, and SQLite sees the
 * unfinished frames as never written.
 */
static int
provend_vfs_logical_size(provend_vfs_file_t *f, sqlite3_int64 *size,
    sqlite3_int64 *phys_out)
{
    int            rc;
    sqlite3_int64  phys, body, rem, idx;

    rc = f->real->pMethods->xFileSize(f->real, &phys);
    if (rc != SQLITE_OK) {
        return rc;
    }

    if (phys_out != NULL) {
        *phys_out = phys;
    }

    if (phys < PROVEND_VFS_HEADER) {
        f->keyed = 0;
        *size = 0;
        return SQLITE_OK;
    }

    if (!f->keyed || f->stale) {
        rc = provend_vfs_load_header(f);
        if (rc != SQLITE_OK) {
            return rc;
        }
    }

    body = phys - PROVEND_VFS_HEADER;
    rem = body % PROVEND_VFS_PHYS_BLOCK;
    *size = body / PROVEND_VFS_PHYS_BLOCK * PROVEND_VFS_BLOCK
            + (rem > PROVEND_SEAL_OVERHEAD ? rem - PROVEND_SEAL_OVERHEAD : 0);

    if (!f->is_wal || *size == 0 || phys == f->tail_ok) {
        return SQLITE_OK;
    }

    idx = (*size - 1) / PROVEND_VFS_BLOCK;
    rc = provend_vfs_load_block(f, idx, provend_vfs_block_len(*size, idx),
                                1);
    if (rc == SQLITE_IOERR_DATA) {
        sqlite3_log(SQLITE_WARNING, "proven-aead: dropping the last block "
                    "%lld of %s: it fails to authenticate (a torn write)",
                    (long long) idx, f->name);
        phys = provend_vfs_phys_off(idx);
        rc = f->real->pMethods->xTruncate(f->real, phys);
        *size = idx * PROVEND_VFS_BLOCK;
        if (phys_out != NULL) {
            *phys_out = phys;
        }
    }

    if (rc != SQLITE_OK) {
        return rc;
    }

    f->tail_ok = phys;
    return SQLITE_OK;
}


/*
 * Seals and writes the pending block.  Every method but an append that
 * continues it comes here first, so that what is on disk (and so the
 * logical size) is whole again before anything reads or syncs it.  A
 * failure leaves at most a torn last block, which a -wal drops.
 */
static int
provend_vfs_flush(provend_vfs_file_t *f)
{
    int            rc;
    size_t         len;
    sqlite3_int64  idx;

    if (!f->pending) {
        return SQLITE_OK;
    }

    f->pending = 0;
    idx = f->cache_idx;
    len = f->cache_len;

    rc = provend_vfs_store_block(f, idx, len);
    if (rc != SQLITE_OK) {
        f->cache_idx = -1;
        f->tail_ok = -1;
        return rc;
    }

    f->tail_ok = provend_vfs_phys_size(idx * PROVEND_VFS_BLOCK
                                       + (sqlite3_int64) len);
    return SQLITE_OK;
}


/*
 * Writes amt bytes of data (zeros when data is NULL) at logical offset off,
 * block by block, reading back only what a block keeps of its old bytes.
 * The caller makes sure off <= *size; *size follows the growth.
 */
static int
provend_vfs_write_range(provend_vfs_file_t *f, const uint8_t *data,
    sqlite3_int64 amt, sqlite3_int64 off, sqlite3_int64 *size,
    int defer_tail)
{
    int            rc;
    size_t         start, end, old_len, new_len;
    sqlite3_int64  idx, base, stop;

    stop = off + amt;

    while (off < stop) {
        idx = off / PROVEND_VFS_BLOCK;
        base = idx * PROVEND_VFS_BLOCK;
        start = (size_t) (off - base);
        end = stop - base >= PROVEND_VFS_BLOCK
              ? PROVEND_VFS_BLOCK : (size_t) (stop - base);

        old_len = provend_vfs_block_len(*size, idx);
        new_len = old_len > end ? old_len : end;

        if (old_len > 0 && !(start == 0 && end >= old_len)) {
            rc = provend_vfs_load_block(f, idx, old_len, 0);
            if (rc != SQLITE_OK) {
                return rc;
            }
        }

        /* The cache is being edited: not valid until sealed again. */
        f->cache_idx = -1;

        if (old_len < start) {
            memset(f->cache + old_len, 0, start - old_len);
        }

        if (data != NULL) {
            memcpy(f->cache + start, data, end - start);
            data += end - start;

        } else {
            memset(f->cache + start, 0, end - start);
        }

        if (base + (sqlite3_int64) new_len > *size) {
            *size = base + (sqlite3_int64) new_len;
        }

        /*
         * SQLite appends a WAL frame as a 24-byte header, then the page,
         * neither aligned to blocks: the unfinished last block waits in
         * the cache for the next append, so that each block is sealed
         * and written once, not once per write that touches it.
         */
        if (defer_tail && new_len < PROVEND_VFS_BLOCK
            && base + (sqlite3_int64) new_len == *size
            && base + (sqlite3_int64) end == stop)
        {
            f->cache_idx = idx;
            f->cache_len = new_len;
            f->pending = 1;
            return SQLITE_OK;
        }

        rc = provend_vfs_store_block(f, idx, new_len);
        if (rc != SQLITE_OK) {
            return rc;
        }

        off = base + (sqlite3_int64) end;
    }

    return SQLITE_OK;
}


/*
 * Any write: a header first if the file has none, a gap written as sealed
 * zeros (never left as a hole), then the data.  A write that fails after
 * growing the file (the disk filled up) is cut back to the old physical
 * size, so no fragment of a block is left to fail every later read.
 */
static int
provend_vfs_put(provend_vfs_file_t *f, const uint8_t *data,
    sqlite3_int64 amt, sqlite3_int64 off)
{
    int            rc;
    size_t         n;
    sqlite3_int64  size, phys;

    /* The next bytes of the pending block: into the cache only. */
    if (f->pending && data != NULL
        && off == f->cache_idx * PROVEND_VFS_BLOCK
                  + (sqlite3_int64) f->cache_len)
    {
        n = PROVEND_VFS_BLOCK - f->cache_len;
        if ((sqlite3_int64) n > amt) {
            n = (size_t) amt;
        }

        memcpy(f->cache + f->cache_len, data, n);
        f->cache_len += n;
        data += n;
        off += (sqlite3_int64) n;
        amt -= (sqlite3_int64) n;

        if (f->cache_len < PROVEND_VFS_BLOCK) {
            return SQLITE_OK;
        }

        rc = provend_vfs_flush(f);
        if (rc != SQLITE_OK || amt == 0) {
            return rc;
        }
    }

    rc = provend_vfs_flush(f);
    if (rc != SQLITE_OK) {
        return rc;
    }

    rc = provend_vfs_logical_size(f, &size, &phys);
    if (rc != SQLITE_OK) {
        return rc;
    }

    /*
     * SQLite writes the WAL header (offset 0) only to start a new cycle,
     * once every frame is checkpointed: the old frames are dead, and the
     * file starts over under a new salt, hence a new key.
     */
    if (f->is_wal && off == 0 && size > 0) {
        rc = f->real->pMethods->xTruncate(f->real, 0);
        if (rc != SQLITE_OK) {
            return rc;
        }

        f->keyed = 0;
        f->cache_idx = -1;
        size = 0;
        phys = 0;
    }

    if (!f->keyed) {
        rc = provend_vfs_create_header(f, phys);
        if (rc != SQLITE_OK) {
            goto failed;
        }
    }

    if (off > size) {
        rc = provend_vfs_write_range(f, NULL, off - size, size, &size, 0);
        if (rc != SQLITE_OK) {
            goto failed;
        }
    }

    /*
     * The first write after a sync goes to disk at once: SQLite syncs a
     * commit up to a block boundary, then writes the rest of the frame
     * that crosses it, and that block must be on disk before the next
     * one, so that a torn last block never holds a commit.
     */
    rc = provend_vfs_write_range(f, data, amt, off, &size,
                                 f->is_wal && data != NULL && !f->synced);
    f->synced = 0;
    if (rc != SQLITE_OK) {
        goto failed;
    }

    f->tail_ok = f->pending ? -1 : provend_vfs_phys_size(size);
    return SQLITE_OK;

failed:

    f->cache_idx = -1;
    f->pending = 0;
    f->tail_ok = -1;

    if (f->real->pMethods->xFileSize(f->real, &size) == SQLITE_OK
        && size > phys)
    {
        if (f->real->pMethods->xTruncate(f->real, phys) != SQLITE_OK) {
            sqlite3_log(rc, "proven-aead: cannot cut %s back after a "
                        "failed write", f->name);
        }

        if (phys < PROVEND_VFS_HEADER) {
            f->keyed = 0;
        }
    }

    return rc;
}


/* ---- io methods ---------------------------------------------------------- */

static int
provend_vfs_close(sqlite3_file *file)
{
    int                  rc, flushed;
    provend_vfs_file_t  *f = (provend_vfs_file_t *) file;

    flushed = provend_vfs_flush(f);
    rc = f->real->pMethods->xClose(f->real);
    if (rc == SQLITE_OK) {
        rc = flushed;
    }

    EVP_CIPHER_CTX_free(f->enc);
    EVP_CIPHER_CTX_free(f->dec);
    f->enc = NULL;
    f->dec = NULL;
    OPENSSL_cleanse(f->cache, sizeof(f->cache));
    f->nonces_left = 0;
    f->cache_idx = -1;

    return rc;
}


static int
provend_vfs_read(sqlite3_file *file, void *buf, int amt, sqlite3_int64 off)
{
    int                  rc;
    size_t               start, n;
    uint8_t             *out = buf;
    sqlite3_int64        size, avail, idx, done;
    provend_vfs_file_t  *f = (provend_vfs_file_t *) file;

    if (amt < 0 || off < 0 || off > PROVEND_VFS_SIZE_MAX) {
        return SQLITE_IOERR_READ;
    }

    rc = provend_vfs_flush(f);
    if (rc == SQLITE_OK) {
        rc = provend_vfs_logical_size(f, &size, NULL);
    }
    if (rc != SQLITE_OK) {
        memset(out, 0, (size_t) amt);
        return rc;
    }

    avail = off >= size ? 0 : size - off;
    if (avail > amt) {
        avail = amt;
    }

    for (done = 0; done < avail; done += (sqlite3_int64) n) {
        idx = (off + done) / PROVEND_VFS_BLOCK;
        start = (size_t) (off + done - idx * PROVEND_VFS_BLOCK);

        rc = provend_vfs_load_block(f, idx, provend_vfs_block_len(size, idx),
                                    0);
        if (rc != SQLITE_OK) {
            memset(out, 0, (size_t) amt);
            return rc;
        }

        n = f->cache_len - start;
        if ((sqlite3_int64) n > avail - done) {
            n = (size_t) (avail - done);
        }

        memcpy(out + done, f->cache + start, n);
    }

    /* SQLite counts on the zero fill past the end of the file. */
    if (avail < amt) {
        memset(out + avail, 0, (size_t) (amt - avail));
        return SQLITE_IOERR_SHORT_READ;
    }

    return SQLITE_OK;
}


static int
provend_vfs_write(sqlite3_file *file, const void *buf, int amt,
    sqlite3_int64 off)
{
    if (amt < 0 || off < 0 || off > PROVEND_VFS_SIZE_MAX) {
        return SQLITE_IOERR_WRITE;
    }

    return provend_vfs_put((provend_vfs_file_t *) file, buf, amt, off);
}


/*
 * Shrinking into the middle of a block re-seals what the block keeps.  The
 * order keeps every crash point readable as far as it can: first the
 * whole blocks past it go, then the shortened block is written over the
 * start of the old one, then the file is cut at its end.  A crash between
 * the last two leaves a torn last block (dropped in a -wal file, an error
 * elsewhere): a block's length is the file's, so no order can change it
 * atomically.  SQLite shrinks database files by whole pages (whole blocks,
 * atomic here) and a WAL only behind a synced commit, so what such a crash
 * loses was not needed.
 */
static int
provend_vfs_truncate(sqlite3_file *file, sqlite3_int64 new_size)
{
    int                  rc;
    size_t               rem;
    sqlite3_int64        size, phys, idx;
    provend_vfs_file_t  *f = (provend_vfs_file_t *) file;

    if (new_size < 0 || new_size > PROVEND_VFS_SIZE_MAX) {
        return SQLITE_IOERR_TRUNCATE;
    }

    rc = provend_vfs_flush(f);
    if (rc != SQLITE_OK) {
        return rc;
    }

    rc = provend_vfs_logical_size(f, &size, &phys);
    if (rc != SQLITE_OK) {
        return rc;
    }

    if (new_size >= size) {
        return new_size == size
               ? SQLITE_OK
               : provend_vfs_put(f, NULL, new_size - size, size);
    }

    f->tail_ok = -1;

    /* An empty file has no header: the next write picks a new salt. */
    if (new_size == 0) {
        f->keyed = 0;
        f->cache_idx = -1;
        return f->real->pMethods->xTruncate(f->real, 0);
    }

    idx = new_size / PROVEND_VFS_BLOCK;
    rem = (size_t) (new_size % PROVEND_VFS_BLOCK);

    if (rem == 0) {
        if (f->cache_idx >= idx) {
            f->cache_idx = -1;
        }

        return f->real->pMethods->xTruncate(f->real,
                                            provend_vfs_phys_off(idx));
    }

    rc = provend_vfs_load_block(f, idx, provend_vfs_block_len(size, idx), 0);
    if (rc != SQLITE_OK) {
        return rc;
    }

    if (phys > provend_vfs_phys_off(idx + 1)) {
        rc = f->real->pMethods->xTruncate(f->real,
                                          provend_vfs_phys_off(idx + 1));
        if (rc != SQLITE_OK) {
            return rc;
        }
    }

    rc = provend_vfs_store_block(f, idx, rem);
    if (rc != SQLITE_OK) {
        return rc;
    }

    rc = f->real->pMethods->xTruncate(f->real,
                                      provend_vfs_phys_size(new_size));
    if (rc != SQLITE_OK) {
        return rc;
    }

    f->tail_ok = provend_vfs_phys_size(new_size);
    return SQLITE_OK;
}


static int
provend_vfs_sync(sqlite3_file *file, int flags)
{
    int                  rc;
    provend_vfs_file_t  *f = (provend_vfs_file_t *) file;

    rc = provend_vfs_flush(f);
    if (rc != SQLITE_OK) {
        return rc;
    }

    f->synced = 1;
    return f->real->pMethods->xSync(f->real, flags);
}


static int
provend_vfs_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    int                  rc;
    provend_vfs_file_t  *f = (provend_vfs_file_t *) file;

    rc = provend_vfs_flush(f);
    if (rc != SQLITE_OK) {
        return rc;
    }

    return provend_vfs_logical_size(f, size, NULL);
}


/* Another connection may change the file while we hold no lock. */
static int
provend_vfs_lock(sqlite3_file *file, int level)
{
    int                  rc;
    provend_vfs_file_t  *f = (provend_vfs_file_t *) file;

    rc = provend_vfs_flush(f);
    if (rc != SQLITE_OK) {
        return rc;
    }

    f->cache_idx = -1;
    f->tail_ok = -1;
    f->stale = 1;
    return f->real->pMethods->xLock(f->real, level);
}


static int
provend_vfs_unlock(sqlite3_file *file, int level)
{
    int                  rc;
    provend_vfs_file_t  *f = (provend_vfs_file_t *) file;

    /* Unlocking must not fail: a write error shows at the next sync. */
    rc = provend_vfs_flush(f);
    if (rc != SQLITE_OK) {
        sqlite3_log(rc, "proven-aead: writing %s before unlocking failed",
                    f->name);
    }

    f->cache_idx = -1;
    f->tail_ok = -1;
    f->stale = 1;
    return f->real->pMethods->xUnlock(f->real, level);
}


static int
provend_vfs_check_reserved_lock(sqlite3_file *file, int *out)
{
    provend_vfs_file_t  *f = (provend_vfs_file_t *) file;

    return f->real->pMethods->xCheckReservedLock(f->real, out);
}


static int
provend_vfs_file_control(sqlite3_file *file, int op, void *arg)
{
    int                  rc;
    char               **name, *ours;
    provend_vfs_file_t  *f = (provend_vfs_file_t *) file;

    /* Some act on the file underneath (sync, size, persisting...). */
    rc = provend_vfs_flush(f);
    if (rc != SQLITE_OK) {
        return rc;
    }

    switch (op) {

    /*
     * These act on physical sizes or map the file: the unix VFS would grow
     * the file with plain zeros or hand out unsealed pages.
     */
    case SQLITE_FCNTL_SIZE_HINT:
    case SQLITE_FCNTL_CHUNK_SIZE:
    case SQLITE_FCNTL_MMAP_SIZE:
        return SQLITE_NOTFOUND;

    case SQLITE_FCNTL_VFSNAME:
        rc = f->real->pMethods->xFileControl(f->real, op, arg);
        name = arg;
        ours = sqlite3_mprintf("%s/%s", PROVEND_VFS_NAME,
                               rc == SQLITE_OK && *name ? *name : "?");
        if (ours == NULL) {
            return SQLITE_NOMEM;
        }

        if (rc == SQLITE_OK) {
            sqlite3_free(*name);
        }

        *name = ours;
        return SQLITE_OK;

    default:
        return f->real->pMethods->xFileControl(f->real, op, arg);
    }
}


/* A block is what a write may tear: SQLite then pads WAL commits to it. */
static int
provend_vfs_sector_size(sqlite3_file *file)
{
    int                  sector;
    provend_vfs_file_t  *f = (provend_vfs_file_t *) file;

    sector = f->real->pMethods->xSectorSize(f->real);
    return sector > PROVEND_VFS_BLOCK ? sector : PROVEND_VFS_BLOCK;
}


/*
 * Atomic and powersafe writes, and safe appends, do not survive the
 * read-modify-write of sealed blocks; what is left is layout independent.
 */
static int
provend_vfs_device_characteristics(sqlite3_file *file)
{
    provend_vfs_file_t  *f = (provend_vfs_file_t *) file;

    return f->real->pMethods->xDeviceCharacteristics(f->real)
           & (SQLITE_IOCAP_SEQUENTIAL | SQLITE_IOCAP_UNDELETABLE_WHEN_OPEN
              | SQLITE_IOCAP_IMMUTABLE);
}


/* ---- vfs methods --------------------------------------------------------- */

static int
provend_vfs_open(sqlite3_vfs *vfs, sqlite3_filename name,
    sqlite3_file *file, int flags, int *out_flags)
{
    int                  rc;
    const char          *base;
    provend_vfs_file_t  *f = (provend_vfs_file_t *) file;

    (void) vfs;

    memset(f, 0, sizeof(*f));
    f->real = (sqlite3_file *)
                  ((char *) f + provend_vfs_align8(sizeof(*f)));
    f->cache_idx = -1;
    f->tail_ok = -1;
    f->is_wal = (flags & SQLITE_OPEN_WAL) != 0;

    /*
     * The key comes from the basename and the salt in the header (read or
     * written on first use); a nameless temporary file has only its salt.
     */
    if (name != NULL) {
        base = strrchr(name, '/');
        base = base ? base + 1 : name;
        f->name = base;
        f->key_name = base;

    } else {
        f->name = "(temporary file)";
        f->key_name = "";
    }

    f->enc = EVP_CIPHER_CTX_new();
    f->dec = EVP_CIPHER_CTX_new();
    if (f->enc == NULL || f->dec == NULL) {
        rc = SQLITE_NOMEM;
        goto failed;
    }

    if (EVP_EncryptInit_ex(f->enc, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1
        || EVP_DecryptInit_ex(f->dec, EVP_aes_256_gcm(), NULL, NULL, NULL)
           != 1)
    {
        rc = SQLITE_CANTOPEN;
        goto failed;
    }

    rc = provend_vfs_real->xOpen(provend_vfs_real, name, f->real, flags,
                                 out_flags);
    if (rc != SQLITE_OK) {
        if (f->real->pMethods != NULL) {
            f->real->pMethods->xClose(f->real);
        }
        goto failed;
    }

    f->base.pMethods = &provend_vfs_io;
    return SQLITE_OK;

failed:

    EVP_CIPHER_CTX_free(f->enc);
    EVP_CIPHER_CTX_free(f->dec);
    f->enc = NULL;
    f->dec = NULL;
    f->base.pMethods = NULL;
    return rc;
}


static int
provend_vfs_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void) vfs;
    return provend_vfs_real->xDelete(provend_vfs_real, name, sync_dir);
}


static int
provend_vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void) vfs;
    return provend_vfs_real->xAccess(provend_vfs_real, name, flags, out);
}


static int
provend_vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n,
    char *out)
{
    (void) vfs;
    return provend_vfs_real->xFullPathname(provend_vfs_real, name, n, out);
}


static void *
provend_vfs_dl_open(sqlite3_vfs *vfs, const char *name)
{
    (void) vfs;
    return provend_vfs_real->xDlOpen(provend_vfs_real, name);
}


static void
provend_vfs_dl_error(sqlite3_vfs *vfs, int n, char *msg)
{
    (void) vfs;
    provend_vfs_real->xDlError(provend_vfs_real, n, msg);
}


static void
(*provend_vfs_dl_sym(sqlite3_vfs *vfs, void *handle, const char *sym))(void)
{
    (void) vfs;
    return provend_vfs_real->xDlSym(provend_vfs_real, handle, sym);
}


static void
provend_vfs_dl_close(sqlite3_vfs *vfs, void *handle)
{
    (void) vfs;
    provend_vfs_real->xDlClose(provend_vfs_real, handle);
}


static int
provend_vfs_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    (void) vfs;
    return provend_vfs_real->xRandomness(provend_vfs_real, n, out);
}


static int
provend_vfs_sleep(sqlite3_vfs *vfs, int us)
{
    (void) vfs;
    return provend_vfs_real->xSleep(provend_vfs_real, us);
}


/* The Julian day of the Unix epoch, in milliseconds (SQLite's unit). */
#define PROVEND_UNIX_EPOCH_JD_MS  210866760000000LL

static __thread int64_t  provend_vfs_fixed_ms;


void
provend_vfs_fix_time(int64_t unix_ms)
{
    provend_vfs_fixed_ms = unix_ms;
}


static int
provend_vfs_current_time(sqlite3_vfs *vfs, double *now)
{
    (void) vfs;
    if (provend_vfs_fixed_ms != 0) {
        *now = (double) (provend_vfs_fixed_ms + PROVEND_UNIX_EPOCH_JD_MS)
               / 86400000.0;
        return SQLITE_OK;
    }
    return provend_vfs_real->xCurrentTime(provend_vfs_real, now);
}


static int
provend_vfs_get_last_error(sqlite3_vfs *vfs, int n, char *msg)
{
    (void) vfs;
    return provend_vfs_real->xGetLastError(provend_vfs_real, n, msg);
}


static int
provend_vfs_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *now)
{
    (void) vfs;
    if (provend_vfs_fixed_ms != 0) {
        *now = provend_vfs_fixed_ms + PROVEND_UNIX_EPOCH_JD_MS;
        return SQLITE_OK;
    }
    return provend_vfs_real->xCurrentTimeInt64(provend_vfs_real, now);
}


static sqlite3_vfs  provend_vfs = {
    2,                      /* iVersion, lowered to 1 if the real one is */
    0,                      /* szOsFile, set on registration */
    0,                      /* mxPathname, set on registration */
    NULL,
    PROVEND_VFS_NAME,
    NULL,
    provend_vfs_open,
    provend_vfs_delete,
    provend_vfs_access,
    provend_vfs_full_pathname,
    provend_vfs_dl_open,
    provend_vfs_dl_error,
    provend_vfs_dl_sym,
    provend_vfs_dl_close,
    provend_vfs_randomness,
    provend_vfs_sleep,
    provend_vfs_current_time,
    provend_vfs_get_last_error,
    provend_vfs_current_time_int64,
    NULL, NULL, NULL
};


int
provend_vfs_register(const uint8_t master[PROVEND_KEY_LEN], char *err,
    size_t errlen)
{
    int           rc;
    sqlite3_vfs  *real;

    memcpy(provend_vfs_master, master, PROVEND_KEY_LEN);

    if (provend_vfs_real != NULL) {
        return PROVEN_OK;
    }

    real = sqlite3_vfs_find(NULL);
    if (real == NULL) {
        proven_errf(err, errlen, "sqlite has no default vfs");
        return PROVEN_ERR;
    }

    if (real->iVersion < 2 || real->xCurrentTimeInt64 == NULL) {
        provend_vfs.iVersion = 1;
    }

    provend_vfs.szOsFile = (int) (provend_vfs_align8(
                                      sizeof(provend_vfs_file_t))
                                  + (size_t) real->szOsFile);
    provend_vfs.mxPathname = real->mxPathname;
    provend_vfs_real = real;

    rc = sqlite3_vfs_register(&provend_vfs, 0);
    if (rc != SQLITE_OK) {
        provend_vfs_real = NULL;
        proven_errf(err, errlen, "registering the %s vfs: %s", PROVEND_VFS_NAME,
                    sqlite3_errstr(rc));
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}
