/*
 * The KV log's compaction: a new base with every live key, then the
 * older segments removed.
 */

#include "kv_int.h"


/*
 * When the log holds more than twice the live data (and 64 MiB at least),
 * or too many segments: a new base with a snapshot of every live key,
 * synced, then the older segments removed.  Runs on the log thread, so no
 * write commits meanwhile; readers and submitters wait only for the short
 * locked steps that collect keys.
 */
void
provend_kv_compact(provend_kv_t *kv)
{
    int                  fd, i, n;
    char                 err[PROVEN_ERR_LEN];
    uint64_t             seqno, old_base, s;
    provend_kv_entry_t  *e, *step[PROVEND_KV_SNAPSHOT_STEP];

    if (!((kv->log_bytes > PROVEND_KV_COMPACT_MIN
           && kv->log_bytes > 2 * kv->live_bytes)
          || kv->seqno - kv->base_seqno >= PROVEND_KV_SEGMENTS_MAX)
        || (kv->log_bytes < kv->compact_hold_bytes
            && kv->seqno < kv->compact_hold_seqno))
    {
        return;
    }

    seqno = kv->seqno + 1;
    old_base = kv->base_seqno;

    fd = provend_kv_segment_create(kv, seqno, 1, err, sizeof(err));
    if (fd < 0) {
        provend_warn("storage: KV compaction: %s", err);
        /* the open segment keeps its key in kv->ctx: nothing changed */
        return;
    }

    kv->buf_len = 0;

    /* The header durable first: see PROVEND_KV_FIRST_LEN. */
    if (fdatasync(fd) != 0) {
        goto failed;
    }

    e = kv->list;

    for ( ;; ) {
        pthread_mutex_lock(&kv->lock);
        for (n = 0; n < PROVEND_KV_SNAPSHOT_STEP && e->forward[0]; ) {
            e = e->forward[0];
            if (e->revision != 0) {
                step[n++] = e;
            }
        }
        pthread_mutex_unlock(&kv->lock);

        if (n == 0) {
            break;
        }

        /* Committed values change only on this thread. */
        for (i = 0; i < n; i++) {
            if (provend_kv_record(kv, PROVEND_KV_OP_SET, step[i]->revision,
                                  provend_kv_ad(step[i]), step[i]->ad_len,
                                  step[i]->value, step[i]->value_len)
                != PROVEN_OK)
            {
                goto failed;
            }
        }

        if (kv->buf_len >= 4 * 1024 * 1024) {
            if (provend_kv_write_all(fd, kv->buf, kv->buf_len)
                != PROVEN_OK)
            {
                goto failed;
            }
            kv->buf_len = 0;
        }
    }

    if (provend_kv_record(kv, PROVEND_KV_OP_BASE_END, 0, NULL, 0, NULL, 0)
        != PROVEN_OK
        || provend_kv_write_all(fd, kv->buf, kv->buf_len) != PROVEN_OK
        || fdatasync(fd) != 0 || provend_kv_sync_dir(kv) != PROVEN_OK)
    {
        goto failed;
    }

    provend_kv_segment_close(kv);
    kv->fd = fd;
    kv->offset = lseek(fd, 0, SEEK_END);
    kv->seqno = seqno;
    kv->base_seqno = seqno;
    kv->log_bytes = (uint64_t) kv->offset;
    kv->buf_len = 0;
    kv->compact_hold_bytes = 0;
    kv->compact_hold_seqno = 0;

    for (s = old_base; s < seqno; s++) {
        provend_kv_unlink(kv, s);
    }
    (void) provend_kv_sync_dir(kv);

    provend_info("storage: KV log compacted to %" PRIu64 " bytes",
                 kv->log_bytes);
    return;

failed:

    provend_warn("storage: KV compaction failed: %s", strerror(errno));

    /* Not again at every batch: once the log has grown a good deal. */
    kv->compact_hold_bytes = kv->log_bytes + PROVEND_KV_COMPACT_MIN;
    kv->compact_hold_seqno = kv->seqno + 16;
    close(fd);
    provend_kv_unlink(kv, seqno);
    kv->buf_len = 0;

    /*
     * kv->ctx now holds the key of the dropped segment: the open one can
     * take no more records, so the next batch starts a new segment.
     */
    provend_kv_segment_close(kv);
}
