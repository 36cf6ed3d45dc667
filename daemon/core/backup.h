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
 * storage, all or nothing.  A running node's backup is the same file,
 * written while its storage holds still (the "backup" op, below).
 */

#ifndef PROVEND_BACKUP_H
#define PROVEND_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "keys.h"
#include "master.h"
#include "ops.h"
#include "storage/storage.h"

typedef struct {
    uint64_t  files, bytes, chunks;
    uint8_t   id[PROVEND_BACKUP_ID_LEN];
} provend_backup_stats_t;

/* The backup of data_dir's storage into out (made anew, 0600); stats may
 * be NULL. */
int provend_backup_write(const char *data_dir,
    const uint8_t master[PROVEND_KEY_LEN],
    const uint8_t sealed_master[PROVEND_MASTER_SEALED_LEN],
    const char *out, provend_backup_stats_t *stats, char *err,
    size_t errlen);

/*
 * Before asking keyd for a restore: data_dir has no storage yet, and in
 * is a backup; its id (what keyd is asked about) into id.
 */
int provend_backup_peek(const char *data_dir, const char *in,
    uint8_t id[PROVEND_BACKUP_ID_LEN], char *err, size_t errlen);

/*
 * DATA/backups/parent: the backup this node's data follows, the one it
 * was restored from or made last (keyd.h); zeros when none.
 */
void provend_backup_parent(const char *data_dir,
    uint8_t parent[PROVEND_BACKUP_ID_LEN]);
int provend_backup_set_parent(const char *data_dir,
    const uint8_t id[PROVEND_BACKUP_ID_LEN], char *err, size_t errlen);

/*
 * keyd told of a backup made (keyd.h): it is now the one backup of the
 * key id a restore gets the key for.  With the retries of cfg.
 */
int provend_backup_record(const provend_keyd_client_t *keyd,
    provend_provider_t *provider, const provend_keyd_ask_t *ask, char *err,
    size_t errlen);

/* Restores in, the backup id (the one keyd gave kek for), into
 * data_dir, the master key opened with kek. */
int provend_backup_restore(const char *data_dir,
    const uint8_t kek[PROVEND_KEY_LEN],
    const uint8_t id[PROVEND_BACKUP_ID_LEN], const char *in, char *err,
    size_t errlen);


/*
 * A running node's backups: the "backup" op (provend's socket only, in an
 * enclave the agent's, for proven-host backup).  On a pool thread, with
 * the storage quiesced (storage.h) only while the file is written, it
 * writes DATA/backups/backup.pbk anew, tells keyd it is the newest (a
 * backup keyd was not told of is removed and the op fails) and answers
 * {"path", "bytes", "files", "chunks", "paused_ms"}; the caller copies it
 * out and removes it.  One at a time ("conflict" for a second).
 */
typedef struct provend_backups_s  provend_backups_t;

typedef struct {
    uv_loop_t                    *loop;
    provend_storage_t            *storage;      /* with quiesce */
    const char                   *data_dir;
    const uint8_t                *master;       /* sealed by keyd's key */
    const uint8_t                *sealed;       /* so: the header's */
    const provend_keyd_client_t  *keyd;         /* told of each backup */
    provend_provider_t           *provider;
} provend_backups_config_t;

provend_backups_t *provend_backups_new(const provend_backups_config_t *cfg,
    char *err, size_t errlen);
/* After the loop has run out: no backup is under way. */
void provend_backups_free(provend_backups_t *b);

extern const provend_op_t  provend_backups_ops[];

#endif /* PROVEND_BACKUP_H */
