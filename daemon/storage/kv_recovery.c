/*
 * The KV log's recovery at start: segments read back, verified and
 * replayed into the index.
 */

#include "kv_int.h"


/* ---- recovery ------------------------------------------------------------ */

typedef struct {
    int              fd;
    uint8_t          header[PROVEND_KV_HEADER_LEN];
    EVP_CIPHER_CTX  *ctx;
    uint64_t         counter;
    uint8_t         *plain;          /* PROVEND_KV_PLAIN_MAX + tag */
} provend_kv_reader_t;


static ssize_t
provend_kv_read_full(int fd, uint8_t *p, size_t len)
{
    ssize_t  n;
    size_t   got;

    for (got = 0; got < len; got += (size_t) n) {
        n = read(fd, p + got, len - got);
        if (n < 0 && errno == EINTR) {
            n = 0;
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -1 : (ssize_t) got;
        }
    }

    return (ssize_t) got;
}


/*
 * The next record's plaintext: 1 and *len, 0 at the end of the segment or
 * a record cut short, -1 when a whole record does not open, -2 when the
 * file cannot be read (not the same thing: nothing may be dropped for it).
 */
static int
provend_kv_read_record(provend_kv_reader_t *r, size_t *len)
{
    int      n;
    uint8_t  lenbuf[4], nonce[PROVEND_NONCE_LEN], aad_tail[12];
    size_t   plain_len;
    ssize_t  got;

    got = provend_kv_read_full(r->fd, lenbuf, 4);
    if (got != 4) {
        return got < 0 ? -2 : 0;
    }

    plain_len = proven_get_be32(lenbuf);
    if (plain_len == 0 || plain_len > PROVEND_KV_PLAIN_MAX) {
        return -1;
    }

    got = provend_kv_read_full(r->fd, r->plain, plain_len + PROVEND_TAG_LEN);
    if (got < 0) {
        return -2;
    }
    if ((size_t) got != plain_len + PROVEND_TAG_LEN) {
        return 0;
    }

    provend_kv_nonce(r->counter, nonce, aad_tail);
    memcpy(aad_tail + 8, lenbuf, 4);

    if (EVP_DecryptInit_ex(r->ctx, NULL, NULL, NULL, nonce) != 1
        || EVP_DecryptUpdate(r->ctx, NULL, &n, r->header,
                             PROVEND_KV_HEADER_LEN) != 1
        || EVP_DecryptUpdate(r->ctx, NULL, &n, aad_tail, 12) != 1
        || EVP_DecryptUpdate(r->ctx, r->plain, &n, r->plain,
                             (int) plain_len) != 1
        || EVP_CIPHER_CTX_ctrl(r->ctx, EVP_CTRL_GCM_SET_TAG, PROVEND_TAG_LEN,
                               r->plain + plain_len) != 1
        || EVP_DecryptFinal_ex(r->ctx, r->plain + n, &n) != 1)
    {
        return -1;
    }

    r->counter++;
    *len = plain_len;
    return 1;
}


/* Applies one replayed record to the index. */
static int
provend_kv_replay(provend_kv_t *kv, const uint8_t *p, size_t len,
    char *err, size_t errlen)
{
    int                  op;
    size_t               ad_len, canon_len, sealed_len;
    uint8_t             *value;
    uint64_t             revision, hash;
    const uint8_t       *ad;
    provend_kv_entry_t  *e;

    op = p[0];
    if (len < PROVEND_KV_PLAIN_FIXED
        || (op != PROVEND_KV_OP_SET && op != PROVEND_KV_OP_DELETE))
    {
        proven_errf(err, errlen, "KV log: a record of unknown kind");
        return PROVEN_ERR;
    }

    revision = proven_get_be64(p + 1);
    ad_len = proven_get_be32(p + 9);
    ad = p + PROVEND_KV_PLAIN_FIXED;

    if (ad_len < 8 || ad_len > PROVEND_KV_AD_MAX
        || ad_len > len - PROVEND_KV_PLAIN_FIXED)
    {
        proven_errf(err, errlen, "KV log: a record with a bad key");
        return PROVEN_ERR;
    }

    canon_len = proven_get_be32(ad);
    if (canon_len > ad_len - 8
        || 8 + canon_len + proven_get_be32(ad + 4 + canon_len) != ad_len)
    {
        proven_errf(err, errlen, "KV log: a record with a bad key");
        return PROVEN_ERR;
    }

    hash = provend_kv_hash(kv->hash_key, ad, ad_len);
    e = provend_kv_find(kv, ad, ad_len, hash);

    if (op == PROVEND_KV_OP_DELETE) {
        if (e != NULL) {
            provend_kv_commit_value(kv, e, 0, NULL, 0);
            provend_kv_remove(kv, e);
        }
        return PROVEN_OK;
    }

    sealed_len = len - PROVEND_KV_PLAIN_FIXED - ad_len;
    if (revision == 0 || sealed_len < PROVEND_KV_VALUE_OVERHEAD) {
        proven_errf(err, errlen, "KV log: a record with a bad value");
        return PROVEN_ERR;
    }

    value = malloc(sealed_len - PROVEND_KV_VALUE_OVERHEAD + 1);
    if (value == NULL) {
        proven_errf(err, errlen, "out of memory replaying the KV log");
        return PROVEN_ERR;
    }

    /* The value key of its salt: the last one is kept, runs are long. */
    if (!kv->open_key_set
        || memcmp(kv->open_salt, ad + ad_len, PROVEND_KV_VALUE_SALT) != 0)
    {
        memcpy(kv->open_salt, ad + ad_len, PROVEND_KV_VALUE_SALT);
        if (provend_kv_value_key(kv, kv->open_salt, kv->open_key)
            != PROVEN_OK)
        {
            free(value);
            proven_errf(err, errlen, "cannot derive a KV value key");
            return PROVEN_ERR;
        }
        kv->open_key_set = 1;
    }

    if (provend_open(kv->open_key, ad, ad_len,
                     ad + ad_len + PROVEND_KV_VALUE_SALT,
                     sealed_len - PROVEND_KV_VALUE_SALT, value) != PROVEN_OK)
    {
        free(value);
        proven_errf(err, errlen, "KV log: a value does not open under its key");
        return PROVEN_ERR;
    }

    if (e == NULL) {
        e = provend_kv_insert(kv, ad, ad_len, hash);
        if (e == NULL) {
            free(value);
            proven_errf(err, errlen, "out of memory replaying the KV log");
            return PROVEN_ERR;
        }
    }

    provend_kv_commit_value(kv, e, revision, value,
                            sealed_len - PROVEND_KV_VALUE_OVERHEAD);
    e->latest = revision;
    return PROVEN_OK;
}


/* Opens segment seqno and checks its header; -1 on failure. */
static int
provend_kv_open_segment(provend_kv_t *kv, uint64_t seqno,
    uint8_t header[PROVEND_KV_HEADER_LEN], int *is_base, char *err,
    size_t errlen)
{
    int       fd;
    char      path[4096];
    uint64_t  flags;

    if (provend_kv_path(kv, seqno, path, sizeof(path)) != PROVEN_OK) {
        proven_errf(err, errlen, "KV log path too long");
        return -1;
    }

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        proven_errf(err, errlen, "%.160s: %s", path, strerror(errno));
        return -1;
    }

    if (provend_kv_read_full(fd, header, PROVEND_KV_HEADER_LEN)
        != PROVEND_KV_HEADER_LEN
        || memcmp(header, PROVEND_KV_MAGIC, 8) != 0
        || proven_get_be64(header + 8) != seqno)
    {
        proven_errf(err, errlen,
                    "%.160s: not a KV log segment, or renamed", path);
        close(fd);
        return -1;
    }

    flags = proven_get_be64(header + 16);
    if (flags & ~(uint64_t) PROVEND_KV_FLAG_BASE) {
        proven_errf(err, errlen, "%.160s: unknown flags", path);
        close(fd);
        return -1;
    }

    *is_base = (flags & PROVEND_KV_FLAG_BASE) != 0;
    return fd;
}


/*
 * After a record that does not open at offset at: whether a record of a
 * later batch opens under a counter near its place (1: tampering), none
 * does (0: the torn last batch of a crash), or the file could not be read
 * (-1).  A crash leaves only a tail that never opens; a record altered,
 * moved or removed in the middle leaves records that do.  in_snapshot: the
 * damaged record is part of a base's snapshot, after which only a COMMIT
 * that follows a whole snapshot can come, so any COMMIT proves tampering.
 * Bounded: the first PROVEND_KV_PROBE records, each tried at
 * PROVEND_KV_PROBE counters.
 */
#define PROVEND_KV_PROBE  16


static int
provend_kv_damage_inside(provend_kv_reader_t *r, off_t at, int in_snapshot)
{
    int       k, opened, batch_ended;
    off_t     pos;
    size_t    len, plain_len;
    uint8_t   lenbuf[4];
    uint64_t  counter, c;

    counter = r->counter;
    pos = at;
    batch_ended = 0;

    for (k = 0; k < PROVEND_KV_PROBE; k++) {
        if (lseek(r->fd, pos, SEEK_SET) != pos
            || provend_kv_read_full(r->fd, lenbuf, 4) != 4)
        {
            return 0;
        }

        len = proven_get_be32(lenbuf);
        if (len == 0 || len > PROVEND_KV_PLAIN_MAX) {
            return 0;
        }

        opened = 0;
        for (c = counter; !opened && c < counter + PROVEND_KV_PROBE + k; c++)
        {
            r->counter = c;
            if (lseek(r->fd, pos, SEEK_SET) != pos) {
                return -1;
            }
            switch (provend_kv_read_record(r, &plain_len)) {
            case 1:
                /*
                 * Batches are written one after the other's fsync: a
                 * record past the end of the damaged one's batch proves
                 * that batch was durable.  Within the last batch, a whole
                 * record after a torn one is a crash's out-of-order write.
                 */
                if (batch_ended
                    || (in_snapshot && r->plain[0] == PROVEND_KV_OP_COMMIT))
                {
                    return 1;
                }
                if (r->plain[0] == PROVEND_KV_OP_COMMIT
                    || r->plain[0] == PROVEND_KV_OP_BASE_END)
                {
                    batch_ended = 1;
                }
                opened = 1;
                break;
            case -2:
                return -1;
            }
        }

        pos += (off_t) (4 + len + PROVEND_TAG_LEN);
    }

    return 0;
}


/*
 * Replays segment seqno into the index: its whole batches, up to the last
 * COMMIT (or snapshot end) that opens; records after it belong to a batch
 * a crash cut, never acknowledged.  *complete: it is not a base, or a base
 * whose snapshot is whole.  A record that does not open before the end of
 * a later batch is tampering: an error.
 */
static int
provend_kv_load_segment(provend_kv_t *kv, uint64_t seqno, int *is_base,
    int *complete, char *err, size_t errlen)
{
    int                  rc, seen_end, end_committed;
    off_t                at, end, committed;
    size_t               len;
    uint64_t             records;
    provend_kv_reader_t  r;

    memset(&r, 0, sizeof(r));
    rc = PROVEN_ERR;
    seen_end = 0;
    end_committed = 0;
    *complete = 0;

    r.fd = provend_kv_open_segment(kv, seqno, r.header, is_base, err,
                                   errlen);
    if (r.fd < 0) {
        return PROVEN_ERR;
    }

    r.ctx = provend_kv_segment_ctx(kv, r.header, 0);
    r.plain = malloc(PROVEND_KV_PLAIN_MAX + PROVEND_TAG_LEN);
    if (r.ctx == NULL || r.plain == NULL) {
        proven_errf(err, errlen, "out of memory replaying the KV log");
        goto done;
    }

    /* First pass: where the last whole batch ends. */
    committed = PROVEND_KV_HEADER_LEN;
    records = 0;

    for ( ;; ) {
        at = lseek(r.fd, 0, SEEK_CUR);
        rc = provend_kv_read_record(&r, &len);

        if (rc != 1) {
            break;
        }

        if (r.plain[0] == PROVEND_KV_OP_BASE_END) {
            if (!*is_base || seen_end || len != 1) {
                proven_errf(err, errlen,
                            "KV log segment %" PRIu64 ": a misplaced "
                            "snapshot end", seqno);
                rc = PROVEN_ERR;
                goto done;
            }
            seen_end = 1;
        }

        if (r.plain[0] == PROVEND_KV_OP_BASE_END
            || r.plain[0] == PROVEND_KV_OP_COMMIT)
        {
            if (len != 1 || (*is_base && !seen_end)) {
                proven_errf(err, errlen,
                            "KV log segment %" PRIu64 ": a misplaced "
                            "batch end", seqno);
                rc = PROVEN_ERR;
                goto done;
            }
            committed = lseek(r.fd, 0, SEEK_CUR);
            records = r.counter;
            end_committed = seen_end;
        }
    }

    if (rc == -1) {
        rc = provend_kv_damage_inside(&r, at, *is_base && !seen_end);
        if (rc < 0) {
            rc = -2;
        }
    }

    if (rc == -2) {
        proven_errf(err, errlen,
                    "KV log segment %" PRIu64 ": read error: %s", seqno,
                    strerror(errno));
        rc = PROVEN_ERR;
        goto done;
    }

    if (rc == 1) {
        proven_errf(err, errlen,
                    "KV log segment %" PRIu64 ": the record at %lld "
                    "does not open but a later batch does: the log was "
                    "tampered with", seqno, (long long) at);
        rc = PROVEN_ERR;
        goto done;
    }

    end = lseek(r.fd, 0, SEEK_END);
    if (committed < end) {
        provend_warn("KV log segment %" PRIu64 ": %lld bytes after the "
                     "last whole batch (a write cut by a crash) ignored",
                     seqno, (long long) (end - committed));
    }

    /* Second pass: apply what the first found whole. */
    if (lseek(r.fd, PROVEND_KV_HEADER_LEN, SEEK_SET)
        != PROVEND_KV_HEADER_LEN)
    {
        proven_errf(err, errlen,
                    "KV log segment %" PRIu64 ": cannot seek", seqno);
        rc = PROVEN_ERR;
        goto done;
    }
    r.counter = 0;

    while (r.counter < records) {
        if (provend_kv_read_record(&r, &len) != 1) {
            proven_errf(err, errlen,
                        "KV log segment %" PRIu64 ": changed while "
                        "being read", seqno);
            rc = PROVEN_ERR;
            goto done;
        }

        if (r.plain[0] == PROVEND_KV_OP_BASE_END
            || r.plain[0] == PROVEND_KV_OP_COMMIT)
        {
            continue;
        }

        if (provend_kv_replay(kv, r.plain, len, err, errlen) != PROVEN_OK) {
            rc = PROVEN_ERR;
            goto done;
        }
    }

    kv->log_bytes += (uint64_t) committed;
    *complete = !*is_base || end_committed;
    rc = PROVEN_OK;

done:

    if (r.plain != NULL) {
        OPENSSL_cleanse(r.plain, PROVEND_KV_PLAIN_MAX + PROVEND_TAG_LEN);
        free(r.plain);
    }
    EVP_CIPHER_CTX_free(r.ctx);
    close(r.fd);
    return rc;
}


static int
provend_kv_cmp_u64(const void *a, const void *b)
{
    uint64_t  x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}


/* The seqnos of the segments in kv->dir, ascending (malloc()ed). */
static int
provend_kv_list(provend_kv_t *kv, uint64_t **out, size_t *n, char *err,
    size_t errlen)
{
    DIR            *dir;
    char           *end;
    size_t          len, cap;
    uint64_t       *seqnos, *p, v;
    struct dirent  *de;

    *out = NULL;
    *n = 0;
    cap = 0;
    seqnos = NULL;

    dir = opendir(kv->dir);
    if (dir == NULL) {
        proven_errf(err, errlen, "%.160s: %s", kv->dir, strerror(errno));
        return PROVEN_ERR;
    }

    while ((de = readdir(dir)) != NULL) {
        len = strlen(de->d_name);
        if (len != 20 || strcmp(de->d_name + 16, ".log") != 0) {
            continue;
        }

        errno = 0;
        v = strtoull(de->d_name, &end, 16);
        if (errno != 0 || end != de->d_name + 16 || v == 0) {
            continue;
        }

        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            p = realloc(seqnos, cap * sizeof(*p));
            if (p == NULL) {
                free(seqnos);
                closedir(dir);
                proven_errf(err, errlen, "out of memory listing the KV log");
                return PROVEN_ERR;
            }
            seqnos = p;
        }
        seqnos[(*n)++] = v;
    }

    closedir(dir);
    if (*n > 1) {
        qsort(seqnos, *n, sizeof(*seqnos), provend_kv_cmp_u64);
    }
    *out = seqnos;
    return PROVEN_OK;
}


void
provend_kv_clear(provend_kv_t *kv)
{
    provend_kv_entry_t  *e;

    while ((e = kv->list->forward[0]) != NULL) {
        provend_kv_commit_value(kv, e, 0, NULL, 0);
        provend_kv_remove(kv, e);
    }
    kv->log_bytes = 0;
    kv->live_bytes = 0;
}


void
provend_kv_unlink(provend_kv_t *kv, uint64_t seqno)
{
    char  path[4096];

    if (provend_kv_path(kv, seqno, path, sizeof(path)) == PROVEN_OK
        && unlink(path) != 0 && errno != ENOENT)
    {
        provend_warn("%s: cannot remove: %s", path, strerror(errno));
    }
}


/*
 * Moves segment seqno out of the log's way (renamed to .dropped): recovery
 * never deletes what it judged a crash's leftover, in case it was wrong.
 */
static void
provend_kv_set_aside(provend_kv_t *kv, uint64_t seqno)
{
    char  path[4096], aside[4200];

    if (provend_kv_path(kv, seqno, path, sizeof(path)) != PROVEN_OK) {
        return;
    }
    (void) snprintf(aside, sizeof(aside), "%s.dropped", path);
    if (rename(path, aside) != 0) {
        provend_warn("%s: cannot set aside: %s", path, strerror(errno));
    }
}


/* The size of segment seqno, or -1. */
static off_t
provend_kv_segment_size(provend_kv_t *kv, uint64_t seqno)
{
    char         path[4096];
    struct stat  sb;

    if (provend_kv_path(kv, seqno, path, sizeof(path)) != PROVEN_OK
        || stat(path, &sb) != 0)
    {
        return -1;
    }
    return sb.st_size;
}


/*
 * The newest complete base and everything after it.  A base left without
 * its end by a crash (in compaction, or creating the very first segment)
 * can only be the newest segment: it is set aside, and the older segments
 * a finished compaction had not removed yet are removed.  A crash in
 * compaction leaves the older segments in place; one creating the first
 * segment leaves at most PROVEND_KV_FIRST_LEN bytes.  An endless base
 * that is neither was damaged: recovery refuses it rather than lose it.
 */
int
provend_kv_recover(provend_kv_t *kv, char *err, size_t errlen)
{
    int        fd, is_base, complete;
    size_t     i, n, base;
    uint8_t    header[PROVEND_KV_HEADER_LEN];
    uint64_t  *seqnos;

    if (provend_kv_list(kv, &seqnos, &n, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    /*
     * The newest segment may have been cut by a crash before its header
     * was synced (short, or zeros): no write was ever answered from it.
     */
    if (n > 0) {
        char     path[4096];
        off_t    size;
        uint8_t  zero[PROVEND_KV_HEADER_LEN];

        memset(zero, 0, sizeof(zero));
        fd = -1;
        size = provend_kv_segment_size(kv, seqnos[n - 1]);

        if (size >= 0 && size <= PROVEND_KV_FIRST_LEN
            && provend_kv_path(kv, seqnos[n - 1], path, sizeof(path))
               == PROVEN_OK
            && (size < PROVEND_KV_HEADER_LEN
                || ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0
                    && provend_kv_read_full(fd, header, sizeof(header))
                       == PROVEND_KV_HEADER_LEN
                    && memcmp(header, zero, sizeof(zero)) == 0)))
        {
            provend_warn("KV log: segment %" PRIu64 " has no header (a "
                         "crash while creating it): set aside",
                         seqnos[n - 1]);
            provend_kv_set_aside(kv, seqnos[n - 1]);
            n--;
        }
        if (fd >= 0) {
            close(fd);
        }
    }

    base = (size_t) -1;

    for (i = n; i-- > 0; ) {
        fd = provend_kv_open_segment(kv, seqnos[i], header, &is_base, err,
                                     errlen);
        if (fd < 0) {
            goto failed;
        }
        close(fd);

        if (!is_base) {
            continue;
        }

        if (provend_kv_load_segment(kv, seqnos[i], &is_base, &complete,
                                    err, errlen) != PROVEN_OK)
        {
            goto failed;
        }

        if (complete) {
            base = i;
            break;
        }

        provend_kv_clear(kv);

        if (i != n - 1
            || (i == 0
                && provend_kv_segment_size(kv, seqnos[i])
                   > PROVEND_KV_FIRST_LEN))
        {
            proven_errf(err, errlen,
                        "KV log: base segment %" PRIu64 " is incomplete "
                        "and no crash leaves it so: damaged", seqnos[i]);
            goto failed;
        }

        provend_warn("KV log: segment %" PRIu64 " is an unfinished "
                     "snapshot (a crash while writing it): set aside",
                     seqnos[i]);
        provend_kv_set_aside(kv, seqnos[i]);
        n--;
    }

    if (base == (size_t) -1) {
        if (n > 0) {
            proven_errf(err, errlen,
                        "KV log: no base segment at or before %" PRIu64,
                        seqnos[0]);
            goto failed;
        }
        free(seqnos);
        return PROVEN_OK;        /* a new store */
    }

    kv->base_seqno = seqnos[base];

    for (i = base + 1; i < n; i++) {
        if (seqnos[i] != seqnos[i - 1] + 1) {
            proven_errf(err, errlen, "KV log: segment %" PRIu64 " is missing",
                        seqnos[i - 1] + 1);
            goto failed;
        }

        if (provend_kv_load_segment(kv, seqnos[i], &is_base, &complete,
                                    err, errlen) != PROVEN_OK)
        {
            goto failed;
        }
    }

    kv->seqno = seqnos[n - 1];

    for (i = 0; i < base; i++) {
        provend_kv_unlink(kv, seqnos[i]);
    }

    free(seqnos);
    return PROVEN_OK;

failed:

    free(seqnos);
    return PROVEN_ERR;
}
