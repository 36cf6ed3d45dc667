/*
 * Sealed backups of a node's storage (DATA/storage), taken and restored
 * with the node stopped, for the host to keep.  The file:
 *
 *   "PRVNBK01" | id (16 random bytes) | master.sealed (60 bytes)
 *   chunks: len (4, big-endian) | last (1) | sealed (len bytes)
 *
 * Each chunk is AES-256-GCM under HKDF(master, "proven-backup-v1" | id),
 * with id, its index and its last flag as associated data: a chunk
 * changed, moved, dropped or added, or a file cut short, does not open.
 * The chunks carry the files one after the other: path length (2), path
 * ("storage/..."), mode (4), size (8), bytes.  The master key in the
 * header is sealed with the key keyd releases: only a node of the right
 * code restores it (provend --restore), into a data directory without
 * storage, all or nothing.
 */

#ifndef PROVEND_BACKUP_H
#define PROVEND_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include "keys.h"

/* The backup of data_dir's storage into out (made anew, 0600). */
int provend_backup_write(const char *data_dir,
    const uint8_t master[PROVEND_KEY_LEN],
    const uint8_t sealed_master[PROVEND_MASTER_SEALED_LEN],
    const char *out, char *err, size_t errlen);

/* Restores in into data_dir, the master key opened with kek. */
int provend_backup_restore(const char *data_dir,
    const uint8_t kek[PROVEND_KEY_LEN], const char *in, char *err,
    size_t errlen);

#endif /* PROVEND_BACKUP_H */
