/*
 * "proven-aead": a SQLite VFS that encrypts every file SQLite opens
 * through it (database, -wal, -journal, temporary files) with AES-256-GCM.
 *
 * Each file starts with a 32-byte header (16 bytes of magic, a random
 * 16-byte salt), written with the file's first block.  Then come logical
 * 4096-byte blocks (the last may be partial), each stored as nonce(12) ||
 * ciphertext || tag(16) under the file's key HKDF(master,
 * "proven-vfs-v2:" || salt || basename), with the block index (8 bytes,
 * big endian) as associated data: a changed, moved or foreign block fails
 * to authenticate and the read returns SQLITE_IOERR_DATA (and a
 * sqlite3_log line), never wrong data.  Logical offset o of block i lives
 * at physical offset 32 + i * 4124.  The salt is new whenever the file
 * starts over (created, truncated to zero, a new WAL cycle).  See vfs.c for
 * what it does not protect against.
 *
 * There is no shared memory (io methods version 1): WAL needs
 * "PRAGMA locking_mode=EXCLUSIVE" set BEFORE "PRAGMA journal_mode=WAL",
 * otherwise SQLite silently stays in the rollback journal mode.  Databases
 * must have distinct basenames: the basename is part of the key.
 */

#ifndef PROVEND_VFS_H
#define PROVEND_VFS_H

#include <stddef.h>
#include <stdint.h>

#include "core/keys.h"

#define PROVEND_VFS_NAME        "proven-aead"
#define PROVEND_VFS_BLOCK       4096
#define PROVEND_VFS_PHYS_BLOCK  (PROVEND_VFS_BLOCK + PROVEND_SEAL_OVERHEAD)
#define PROVEND_VFS_HEADER      32
#define PROVEND_VFS_SALT_LEN    16

/*
 * Registers the VFS over the default one (not as the default).  Calling it
 * again only replaces the master key used for files opened afterwards.
 */
int provend_vfs_register(const uint8_t master[PROVEND_KEY_LEN], char *err,
    size_t errlen);

/*
 * What SQLite's 'now' is on the calling thread: unix_ms, or the clock
 * when 0 (a replayed write sees its writer's time on every node).
 */
void provend_vfs_fix_time(int64_t unix_ms);

#endif /* PROVEND_VFS_H */
