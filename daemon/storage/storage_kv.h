/*
 * The embedded backend's KV stores (storage_kv.c): values in memory,
 * changes in an encrypted append-only log under DATA/storage/kv/.
 * storage_sqlite.c hands every kv.* request here.
 */

#ifndef PROVEND_STORAGE_KV_H
#define PROVEND_STORAGE_KV_H

#include <stddef.h>
#include <stdint.h>

#include "storage.h"

typedef struct provend_kv_s  provend_kv_t;

/*
 * Replays the log of storage_dir/kv (created if missing) into memory.
 * Fails on a log that was tampered with, rather than serve wrong data.
 */
provend_kv_t *provend_kv_open(const char *storage_dir,
    const uint8_t master_key[32], size_t max_value, size_t memory_max,
    char *err, size_t errlen);

/*
 * Any kv.* request.  Reads and refusals are answered before this returns,
 * on the caller's thread; writes from the log's thread once fsync'd.
 */
void provend_kv_submit(provend_kv_t *kv, provend_storage_req_t *req);

/*
 * A cluster node's copy, made again from the cluster's log at each start:
 * its batches are written but not fdatasync'd (the log is what is
 * durable).  Before any write.
 */
void provend_kv_set_replica(provend_kv_t *kv);

/* The backend's kv_peek (storage.h): a kv.get of a bytes or string store. */
int provend_kv_peek(provend_kv_t *kv, const provend_scope_t *scope,
    const char *store, provend_kv_type_t type, const uint8_t *key,
    size_t key_len, provend_kv_peek_pt fn, void *data);

/*
 * Once this returns, every write answered is in the log's files and none
 * is being written (nor a compaction under way): the files hold one
 * state, until provend_kv_resume().  Writes submitted meanwhile wait in
 * the queue; reads go on.
 */
void provend_kv_pause(provend_kv_t *kv);
void provend_kv_resume(provend_kv_t *kv);

/* Answers every write submitted (made durable), stops, frees kv. */
void provend_kv_close(provend_kv_t *kv);

#endif /* PROVEND_STORAGE_KV_H */
