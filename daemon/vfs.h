/*
 * "proven-aead": a SQLite VFS that encrypts every file SQLite opens
 * through it (database, -wal, -journal, temporary files) with AES-256-GCM.
 *
 * Each file is a run of logical 4096-byte blocks (the last may be partial),
 * stored as nonce(12) || ciphertext || tag(16) under a per-file key
 * HKDF(master, "proven-vfs-v1:" + basename), with the block index (8 bytes,
 * big endian) as associated data: a changed, moved or foreign block fails
 * to authenticate and the read returns SQLITE_IOERR_DATA (and a sqlite3_log
 * line), never wrong data.  Temporary files get a random key.
 *
 * There is no shared memory (io methods version 1): WAL needs
 * "PRAGMA locking_mode=EXCLUSIVE" set BEFORE "PRAGMA journal_mode=WAL",
 * otherwise SQLite silently stays in the rollback journal mode.  Databases
 * must have distinct basenames: the basename selects the key.
 */

#ifndef PROVEND_VFS_H
#define PROVEND_VFS_H

#include <stddef.h>
#include <stdint.h>

#include "keys.h"

#define PROVEND_VFS_NAME        "proven-aead"
#define PROVEND_VFS_BLOCK       4096
#define PROVEND_VFS_PHYS_BLOCK  (PROVEND_VFS_BLOCK + PROVEND_SEAL_OVERHEAD)

/*
 * Registers the VFS over the default one (not as the default).  Calling it
 * again only replaces the master key used for files opened afterwards.
 */
int provend_vfs_register(const uint8_t master[PROVEND_KEY_LEN], char *err,
    size_t errlen);

#endif /* PROVEND_VFS_H */
