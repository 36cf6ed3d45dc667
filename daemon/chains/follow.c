/*
 * Ethereum events for apps' runOnEthereumEvent handlers (issue 19).
 *
 * A thread of its own follows the endpoint's chain forward from the
 * checkpoint: each header hashed here and linked to the one before by its
 * parent hash, kept in a ring of the last FOLLOW_RING.  A header at a
 * height already followed that hashes otherwise is a reorganisation: the
 * new branch is walked back by parent hashes to a block of the ring, and
 * replaces what is above it.
 *
 * For each filter, the blocks from its cursor up to the tip less its
 * confirmations, each linked to the cursor's block (its child): a block
 * whose proved logs bloom holds neither the address nor a topic has no
 * such log and is passed over; else its receipts are fetched and proved
 * against its receipts root (receipts.c), and the matching logs are
 * handed to the handler one at a time, in block order, each on the app's
 * worker (woken if idle).  The cursor (block, hash, next log) is written
 * to the node's storage after each answer: a restart goes on after the
 * last event written as answered (one answered but not yet written comes
 * again: at least once).  A handler that fails holds its filter there,
 * tried again each poll.  A reorganisation that took the cursor's block
 * back moves the cursor back to the fork: the new blocks' events come
 * with their own hashes; where the fork is not known (a cursor read from
 * storage whose old branch the endpoint no longer serves), from the
 * checkpoint while the ring starts there (events after it coming again),
 * else held.  Each app's handlers get FOLLOW_APP_MS a poll; a held
 * filter is tried again after a wait that doubles, a minute at most.
 *
 * What the endpoint can still do: present a chain of its own making
 * after the checkpoint (no consensus is checked here; see README), hold
 * blocks back, or make a filter wait (answers it refuses hold it).  It
 * cannot alter, add or drop a log of a block it presents, nor replace a
 * block at or below the checkpoint.  The chain id (eth_chainId) and each
 * log's transactionHash are its word, unproved.
 *
 * The thread reads the ring without a lock (only it writes the ring) and
 * takes the bridge's mutex to write it, never over a network call.  What
 * it needs of the apps (their filters, a handler run) it asks of the loop
 * through the bridge (bridge.c), as Radix's events do.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/sha.h>
#include <uv.h>

#include "proven.h"
#include "chains_int.h"
#include "bridge.h"
#include "apps/apps.h"
#include "cluster/cluster.h"
#include "core/log.h"
#include "storage/storage.h"


#define FOLLOW_RING          512        /* headers kept: reorg depth */
#define FOLLOW_STEP          256        /* headers fetched per poll */
#define FOLLOW_SCAN          256        /* blocks scanned per filter, poll */
#define FOLLOW_EVENTS        64         /* events per filter, poll */
#define FOLLOW_CALL_MS       10000      /* one endpoint call */
#define FOLLOW_BLOCK_MS      120000     /* a block's receipts, all calls */
#define FOLLOW_RECEIPTS_MAX  (16 * 1024 * 1024)  /* a block's, as JSON */
#define FOLLOW_TXS_MAX       10000      /* a block's transactions */
#define FOLLOW_FILTERS_MAX   (PROVEND_APPS_MAX * PROVEND_ETH_FILTERS_MAX)
#define FOLLOW_DB            "chains"
#define FOLLOW_DONE          UINT32_MAX /* next_log: the block is done */
#define FOLLOW_LEASE_S       15         /* a cluster's delivering node */
#define FOLLOW_APP_MS        10000      /* an app's handlers, per poll */
#define FOLLOW_PROVED        8          /* blocks' proved logs kept */

typedef struct {
    uint64_t  number;
    uint8_t   hash[32], parent[32], receipts_root[32], state_root[32];
    uint8_t   bloom[256];
    uint64_t  written;                  /* f->writes when put in the ring */
} follow_block_t;

/* A filter's place: blocks before number done; in number (hash), logs
 * from next_log on to go (FOLLOW_DONE: none). */
typedef struct {
    char       key[2 * SHA256_DIGEST_LENGTH + 1];   /* follow_key */
    char       app[PROVEND_NAME_MAX + 1];
    char       handler[PROVEND_SCHEDULE_NAME_MAX + 1];
    uint64_t   number;
    uint8_t    hash[32];
    uint32_t   next_log;
    uint64_t   delivered;               /* since start */
    uint64_t   checked;                 /* f->writes when last seen linked
                                           to the chain; 0: not yet */
    uint64_t   retry_at;                /* held: uv_hrtime to try again */
    unsigned   failures;                /* in a row: the wait doubles */
    unsigned   seen;                    /* the poll it was last in */
    char       error[320];              /* why it is held, or "" */
} follow_cursor_t;

/* The apps' filters, asked of the loop. */
typedef struct {
    provend_bridge_call_t  call;
    provend_eth_filter_t  *filters;
    size_t                 nfilters;
} follow_filters_t;

struct provend_follow_s {
    provend_bridge_t       bridge;      /* its mutex: what follows */
    provend_chains_t      *c;
    unsigned               poll_ms;

    /* the thread's own (status reads them under mutex) */
    follow_block_t         ring[FOLLOW_RING];
    uint64_t               first, tip;  /* ring holds first..tip */
    int                    have_ring;
    int                    caught_up;   /* the ring reached the head */
    int                    no_block_receipts;  /* the endpoint lacks it */
    uint64_t               chain_id;
    uint64_t               reorgs;
    uint64_t               writes;      /* blocks put in the ring, ever */
    unsigned               poll;
    char                   error[PROVEN_ERR_LEN];
    follow_cursor_t       *cursors;
    size_t                 ncursors;

    /* the last blocks' proved logs, shared by the filters of a poll */
    struct {
        uint8_t             hash[32];
        provend_eth_log_t  *logs;
        size_t              n;
        int                 used;
    }                      proved[FOLLOW_PROVED];
    unsigned               proved_next;
};


static int
follow_stopping(provend_follow_t *f)
{
    return provend_bridge_stopping(&f->bridge);
}


static int
follow_lease_now(provend_follow_t *f)
{
    return provend_bridge_lease_now(&f->bridge);
}


/* ---- the loop's side ------------------------------------------------------ */

static void
follow_filters_on_loop(provend_bridge_call_t *call)
{
    follow_filters_t  *q = (follow_filters_t *) call;

    provend_bridge_answer(call, provend_apps_eth_filters(call->bridge->apps,
                                    &q->filters, &q->nfilters) == PROVEN_OK
                                ? NULL : "out of memory");
}


static void
follow_filters_drop(provend_bridge_call_t *call)
{
    follow_filters_t  *q = (follow_filters_t *) call;

    free(q->filters);
    free(q);
}


/* ---- the chain, followed ------------------------------------------------------ */

static follow_block_t *
follow_block(provend_follow_t *f, uint64_t number)
{
    if (!f->have_ring || number < f->first || number > f->tip) {
        return NULL;
    }
    return &f->ring[number % FOLLOW_RING];
}


/* A header by "number" (0x...) or by hash: fetched, hashed here. */
static int
follow_header(provend_follow_t *f, const char *method, const char *which,
    follow_block_t *b, char *err, size_t errlen)
{
    int                   rc;
    json_t               *got;
    provend_eth_header_t  h;

    got = provend_chains_call(f->c, uv_hrtime() + FOLLOW_CALL_MS * 1000000ULL,
                              method, json_pack("[s, b]", which, 0),
                              CHAINS_ANSWER_MAX, err, errlen);
    if (got == NULL) {
        return PROVEN_ERR;
    }
    rc = provend_eth_header(got, &h, err, errlen);
    json_decref(got);
    if (rc != PROVEN_OK) {
        return PROVEN_ERR;
    }
    b->number = h.number;
    memcpy(b->hash, h.hash, 32);
    memcpy(b->parent, h.parent, 32);
    memcpy(b->receipts_root, h.receipts_root, 32);
    memcpy(b->state_root, h.state_root, 32);
    memcpy(b->bloom, h.bloom, 256);
    return PROVEN_OK;
}


/* A quantity the endpoint answers: "0x" and 1 to 16 hex digits. */
static int
follow_number(provend_follow_t *f, const char *method, uint64_t *n,
    char *err, size_t errlen)
{
    int          ok;
    size_t       i, len;
    json_t      *got;
    const char  *t;

    got = provend_chains_call(f->c, uv_hrtime() + FOLLOW_CALL_MS * 1000000ULL,
                              method, json_array(), CHAINS_ANSWER_MAX, err,
                              errlen);
    if (got == NULL) {
        return PROVEN_ERR;
    }
    t = json_string_value(got);
    len = t != NULL ? strlen(t) : 0;
    ok = len >= 3 && len <= 18 && strncmp(t, "0x", 2) == 0;
    *n = 0;
    for (i = 2; ok && i < len; i++) {
        ok = (t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f')
             || (t[i] >= 'A' && t[i] <= 'F');
        *n = *n << 4 | (uint64_t) (t[i] <= '9' ? t[i] - '0'
                                   : (t[i] | 0x20) - 'a' + 10);
    }
    json_decref(got);
    if (!ok) {
        proven_errf(err, errlen, "%s: not a number", method);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/* b as the ring's tip (under the mutex: status reads first and tip). */
static void
follow_push(provend_follow_t *f, const follow_block_t *b)
{
    follow_block_t  *slot;

    slot = &f->ring[b->number % FOLLOW_RING];
    *slot = *b;
    slot->written = ++f->writes;
    f->tip = b->number;
    if (f->tip - f->first >= FOLLOW_RING) {
        f->first = f->tip - FOLLOW_RING + 1;
    }
}


/*
 * The endpoint's block top differs from the ring's at its height, or
 * does not extend the tip: walk its parents back to a block the ring
 * holds (network calls, outside the mutex: only this thread writes the
 * ring), then replace what is above it.  PROVEN_ERR when the fork is
 * below the ring (deeper than FOLLOW_RING, or below the checkpoint).
 */
static int
follow_reorg(provend_follow_t *f, const follow_block_t *top, char *err,
    size_t errlen)
{
    char             hex[67];
    size_t           n, i;
    follow_block_t  *branch, *have;

    branch = malloc(FOLLOW_RING * sizeof(*branch));
    if (branch == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    branch[0] = *top;
    n = 1;
    for ( ;; ) {
        have = branch[n - 1].number > 0
               ? follow_block(f, branch[n - 1].number - 1) : NULL;
        if (have != NULL && memcmp(have->hash, branch[n - 1].parent, 32) == 0)
        {
            break;                      /* the fork: have */
        }
        if (have == NULL || n == FOLLOW_RING) {
            free(branch);
            proven_errf(err, errlen, "the endpoint's chain leaves the "
                        "followed one at or below block %llu (the "
                        "checkpoint, or %d blocks back): not followed",
                        (unsigned long long) f->first, FOLLOW_RING);
            return PROVEN_ERR;
        }
        provend_chains_hex(branch[n - 1].parent, 32, hex);
        if (follow_header(f, "eth_getBlockByHash", hex, &branch[n], err,
                          errlen) != PROVEN_OK)
        {
            free(branch);
            return PROVEN_ERR;
        }
        if (memcmp(branch[n].hash, branch[n - 1].parent, 32) != 0
            || branch[n].number != branch[n - 1].number - 1)
        {
            free(branch);
            proven_errf(err, errlen, "the header asked for by hash is "
                        "another block");
            return PROVEN_ERR;
        }
        n++;
    }

    provend_warn("chains: a reorganisation: blocks from %llu replaced "
                 "(%zu new)", (unsigned long long) branch[n - 1].number, n);
    uv_mutex_lock(&f->bridge.mutex);
    f->reorgs++;
    f->tip = branch[n - 1].number - 1;
    for (i = n; i > 0; i--) {
        follow_push(f, &branch[i - 1]);
    }
    uv_mutex_unlock(&f->bridge.mutex);
    free(branch);
    return PROVEN_OK;
}


/* One poll's following: the ring up to the endpoint's head (a step). */
static int
follow_chain(provend_follow_t *f, char *err, size_t errlen)
{
    char             which[24];
    uint64_t         head, at, fetched, chain_id;
    follow_block_t   b, *have;

    if (!f->have_ring) {
        /* from the checkpoint, hashed here */
        if (follow_number(f, "eth_chainId", &chain_id, err, errlen)
            != PROVEN_OK
            || follow_header(f, "eth_getBlockByHash", f->c->checkpoint_hex,
                             &b, err, errlen) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        if (memcmp(b.hash, f->c->checkpoint, 32) != 0) {
            proven_errf(err, errlen, "the endpoint's header for the "
                        "checkpoint hashes to another block");
            return PROVEN_ERR;
        }
        if (f->c->chain_id != 0 && chain_id != f->c->chain_id) {
            /* the operator's word names the chain, not the endpoint's */
            proven_errf(err, errlen, "the endpoint says chain %llu; "
                        "--eth-chain-id is %llu",
                        (unsigned long long) chain_id,
                        (unsigned long long) f->c->chain_id);
            return PROVEN_ERR;
        }
        uv_mutex_lock(&f->bridge.mutex);
        f->chain_id = chain_id;
        f->first = b.number;
        f->have_ring = 1;
        follow_push(f, &b);
        uv_mutex_unlock(&f->bridge.mutex);
    }

    if (follow_number(f, "eth_blockNumber", &head, err, errlen)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    /* the block at min(tip, head) still ours?  If not, the fork. */
    at = head < f->tip ? head : f->tip;
    if (at < f->first) {
        proven_errf(err, errlen, "the endpoint's head (%llu) is below the "
                    "first block followed (%llu)", (unsigned long long) head,
                    (unsigned long long) f->first);
        return PROVEN_ERR;
    }
    snprintf(which, sizeof(which), "0x%llx", (unsigned long long) at);
    if (follow_header(f, "eth_getBlockByNumber", which, &b, err, errlen)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    if (b.number != at) {
        proven_errf(err, errlen, "asked for block %llu, the endpoint gave "
                    "%llu", (unsigned long long) at,
                    (unsigned long long) b.number);
        return PROVEN_ERR;
    }
    have = follow_block(f, at);
    if (memcmp(have->hash, b.hash, 32) != 0) {
        if (follow_reorg(f, &b, err, errlen) != PROVEN_OK) {
            return PROVEN_ERR;
        }
    } else if (at < f->tip) {
        /* the endpoint's chain is shorter now: what was above is gone
         * (cursors there see their block missing: follow_filter) */
        provend_warn("chains: a reorganisation: the endpoint's chain ends "
                     "at %llu now, not %llu", (unsigned long long) at,
                     (unsigned long long) f->tip);
        uv_mutex_lock(&f->bridge.mutex);
        f->reorgs++;
        f->tip = at;
        uv_mutex_unlock(&f->bridge.mutex);
    }

    /* forward, each block the child of the one before */
    for (fetched = 0; f->tip < head && fetched < FOLLOW_STEP; fetched++) {
        snprintf(which, sizeof(which), "0x%llx",
                 (unsigned long long) (f->tip + 1));
        if (follow_header(f, "eth_getBlockByNumber", which, &b, err, errlen)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        if (b.number != f->tip + 1) {
            proven_errf(err, errlen, "asked for block %llu, the endpoint "
                        "gave %llu", (unsigned long long) (f->tip + 1),
                        (unsigned long long) b.number);
            return PROVEN_ERR;
        }
        have = follow_block(f, f->tip);
        if (memcmp(have->hash, b.parent, 32) != 0) {
            if (follow_reorg(f, &b, err, errlen) != PROVEN_OK) {
                return PROVEN_ERR;
            }
            continue;
        }
        uv_mutex_lock(&f->bridge.mutex);
        follow_push(f, &b);
        uv_mutex_unlock(&f->bridge.mutex);
    }
    uv_mutex_lock(&f->bridge.mutex);
    f->caught_up = f->tip >= head;
    uv_mutex_unlock(&f->bridge.mutex);
    return PROVEN_OK;
}


/* ---- cursors ---------------------------------------------------------------------- */

static void
follow_key(provend_follow_t *f, const provend_eth_filter_t *flt,
    char key[2 * SHA256_DIGEST_LENGTH + 1])
{
    char      hex[67], all[1024];
    size_t    off;
    unsigned  i;
    uint8_t   digest[SHA256_DIGEST_LENGTH];

    /*
     * The filter whole, and the chain it is on (a node given another
     * endpoint or checkpoint starts its filters anew): hashed, so that no
     * length of handler name cuts one key into another.
     */
    provend_chains_hex(flt->address, 20, hex);
    off = (size_t) snprintf(all, sizeof(all), "%llu\n%s\n%s\n%s\n%s",
                            (unsigned long long) f->chain_id,
                            f->c->checkpoint_hex, flt->app, flt->handler,
                            hex);
    for (i = 0; i < 4; i++) {
        if (flt->topic_set & (1u << i)) {
            provend_chains_hex(flt->topics[i], 32, hex);
        } else {
            snprintf(hex, sizeof(hex), "*");
        }
        off += (size_t) snprintf(all + off, sizeof(all) - off, "\n%s", hex);
    }
    SHA256((const uint8_t *) all, off, digest);
    proven_hex_encode(digest, sizeof(digest), key);
}


static int
follow_sql(provend_follow_t *f, provend_storage_req_t *req, char *err,
    size_t errlen)
{
    if (provend_storage_call(f->bridge.storage, req) != PROVEND_ST_OK) {
        proven_errf(err, errlen, "cursor storage: %.200s", req->error);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/* The cursor written; new: only where none is yet (in a cluster, the
 * first node's to see the filter stands). */
static int
follow_cursor_save(provend_follow_t *f, const follow_cursor_t *cur, int new,
    char *err, size_t errlen)
{
    int                     rc;
    provend_storage_req_t  *req;

    req = provend_storage_own_sql(PROVEND_OP_SQL_EXECUTE, FOLLOW_DB, 1);
    if (req == NULL
        || provend_storage_stmt(req, 0, new ? "INSERT OR IGNORE INTO cursors "
                                "VALUES (?1, ?2, ?3, ?4)"
                                : "INSERT OR REPLACE INTO cursors "
                                "VALUES (?1, ?2, ?3, ?4)", 4) != PROVEN_OK
        || provend_storage_param(&req->stmts[0], 0, PROVEND_SQL_TEXT,
                                 cur->key, strlen(cur->key)) != PROVEN_OK
        || provend_storage_param(&req->stmts[0], 2, PROVEND_SQL_BLOB,
                                 cur->hash, 32) != PROVEN_OK)
    {
        provend_storage_req_free(req);
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    provend_storage_param_int(&req->stmts[0], 1, (int64_t) cur->number);
    provend_storage_param_int(&req->stmts[0], 3, (int64_t) cur->next_log);
    rc = follow_sql(f, req, err, errlen);
    provend_storage_req_free(req);
    return rc;
}


static int
follow_create_table(provend_follow_t *f, char *err, size_t errlen)
{
    int                     rc;
    provend_storage_req_t  *req;

    req = provend_storage_own_sql(PROVEND_OP_SQL_EXECUTE, FOLLOW_DB, 1);
    if (req == NULL
        || provend_storage_stmt(req, 0, "CREATE TABLE IF NOT EXISTS cursors "
                                "(key TEXT PRIMARY KEY, number INTEGER NOT "
                                "NULL, hash BLOB NOT NULL, next_log INTEGER "
                                "NOT NULL)", 0) != PROVEN_OK)
    {
        provend_storage_req_free(req);
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    req->local = 1;                     /* every node makes its own */
    rc = follow_sql(f, req, err, errlen);
    provend_storage_req_free(req);
    return rc;
}


/* key's cursor from storage into cur: 1 found, 0 none, -1 err. */
static int
follow_cursor_load(provend_follow_t *f, const char *key, follow_cursor_t *cur,
    char *err, size_t errlen)
{
    int                     found;
    size_t                  len;
    uint8_t                *hash;
    uint64_t                number, next_log;
    cbor_item_t            *rows, *row;
    provend_storage_req_t  *req;

    req = provend_storage_own_sql(PROVEND_OP_SQL_QUERY, FOLLOW_DB, 1);
    if (req == NULL
        || provend_storage_stmt(req, 0, "SELECT number, hash, next_log FROM "
                                "cursors WHERE key = ?1", 1) != PROVEN_OK
        || provend_storage_param(&req->stmts[0], 0, PROVEND_SQL_TEXT, key,
                                 strlen(key)) != PROVEN_OK)
    {
        provend_storage_req_free(req);
        proven_errf(err, errlen, "out of memory");
        return -1;
    }
    req->local = 1;
    if (f->bridge.clustered) {
        /* every write answered on any node, the last holder's included */
        req->after = provend_storage_cluster_last(f->bridge.storage);
    }
    if (follow_sql(f, req, err, errlen) != PROVEN_OK) {
        provend_storage_req_free(req);
        return -1;
    }
    rows = proven_cbor_map_get(req->result, "rows");
    row = rows != NULL && cbor_isa_array(rows) && cbor_array_size(rows) == 1
          ? cbor_array_handle(rows)[0] : NULL;
    hash = NULL;
    found = row != NULL && cbor_isa_array(row) && cbor_array_size(row) == 3
            && proven_cbor_uint(cbor_array_handle(row)[0], &number)
               == PROVEN_OK
            && proven_cbor_bytes(cbor_array_handle(row)[1], 32, &hash, &len)
               == PROVEN_OK && len == 32
            && proven_cbor_uint(cbor_array_handle(row)[2], &next_log)
               == PROVEN_OK && next_log <= FOLLOW_DONE;
    if (found) {
        uv_mutex_lock(&f->bridge.mutex);
        cur->number = number;
        memcpy(cur->hash, hash, 32);
        cur->next_log = (uint32_t) next_log;
        uv_mutex_unlock(&f->bridge.mutex);
    }
    free(hash);
    provend_storage_req_free(req);
    return found;
}


/*
 * The filter's cursor: kept, or from storage, or new: from the followed
 * head (events before it are not the handler's), written only where none
 * is yet and read back (in a cluster, the first node's stands).
 */
static follow_cursor_t *
follow_cursor(provend_follow_t *f, const provend_eth_filter_t *flt,
    char *err, size_t errlen)
{
    int                     found;
    char                    key[2 * SHA256_DIGEST_LENGTH + 1];
    size_t                  i;
    follow_cursor_t        *cur, *grown, fresh;
    follow_block_t         *b;

    follow_key(f, flt, key);
    for (i = 0; i < f->ncursors; i++) {
        if (strcmp(f->cursors[i].key, key) == 0) {
            f->cursors[i].seen = f->poll;
            return &f->cursors[i];
        }
    }
    if (f->ncursors == FOLLOW_FILTERS_MAX) {
        proven_errf(err, errlen, "more than %d filters", FOLLOW_FILTERS_MAX);
        return NULL;
    }

    memset(&fresh, 0, sizeof(fresh));
    snprintf(fresh.key, sizeof(fresh.key), "%s", key);
    snprintf(fresh.app, sizeof(fresh.app), "%s", flt->app);
    snprintf(fresh.handler, sizeof(fresh.handler), "%s", flt->handler);
    found = follow_cursor_load(f, key, &fresh, err, errlen);
    if (found == 0) {
        b = follow_block(f, f->tip);
        fresh.number = f->tip;
        memcpy(fresh.hash, b->hash, 32);
        fresh.next_log = FOLLOW_DONE;
        if (follow_cursor_save(f, &fresh, 1, err, errlen) != PROVEN_OK) {
            return NULL;
        }
        found = follow_cursor_load(f, key, &fresh, err, errlen);
        if (found == 0) {
            proven_errf(err, errlen, "the cursor written is not there");
        }
    }
    if (found <= 0) {
        return NULL;
    }
    fresh.seen = f->poll;

    uv_mutex_lock(&f->bridge.mutex);           /* status reads them */
    grown = realloc(f->cursors, (f->ncursors + 1) * sizeof(*grown));
    if (grown != NULL) {
        f->cursors = grown;
        f->cursors[f->ncursors] = fresh;
        f->ncursors++;
    }
    uv_mutex_unlock(&f->bridge.mutex);
    if (grown == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    cur = &f->cursors[f->ncursors - 1];
    return cur;
}


/* Cursors of filters no longer there (an app gone, or changed) dropped
 * from memory; kept in storage, so the same filter again goes on. */
static void
follow_cursors_sweep(provend_follow_t *f)
{
    size_t  i, kept;

    uv_mutex_lock(&f->bridge.mutex);
    for (i = 0, kept = 0; i < f->ncursors; i++) {
        if (f->cursors[i].seen == f->poll) {
            f->cursors[kept++] = f->cursors[i];
        }
    }
    f->ncursors = kept;
    uv_mutex_unlock(&f->bridge.mutex);
}


static void
follow_cursor_set(provend_follow_t *f, follow_cursor_t *cur, uint64_t number,
    const uint8_t hash[32], uint32_t next_log, const char *error,
    unsigned delivered)
{
    uv_mutex_lock(&f->bridge.mutex);
    cur->delivered += delivered;
    cur->number = number;
    memcpy(cur->hash, hash, 32);
    cur->next_log = next_log;
    snprintf(cur->error, sizeof(cur->error), "%s", error);
    if (*error == '\0') {
        cur->failures = 0;
        cur->retry_at = 0;
    }
    uv_mutex_unlock(&f->bridge.mutex);
}


/* The filter held at its cursor: why, said once (each poll tries again). */
static void
follow_held(provend_follow_t *f, const provend_eth_filter_t *flt,
    follow_cursor_t *cur, const char *why)
{
    if (strcmp(cur->error, why) != 0) {
        provend_warn("chains: %s of %s: %s", flt->handler, flt->app, why);
    }
    follow_cursor_set(f, cur, cur->number, cur->hash, cur->next_log, why, 0);
    cur->retry_at = provend_bridge_retry_at(&cur->failures);
}


/* ---- a filter's events --------------------------------------------------- */

static int
follow_matches(const provend_eth_filter_t *flt, const provend_eth_log_t *l)
{
    unsigned  i;

    if (memcmp(l->address, flt->address, 20) != 0) {
        return 0;
    }
    for (i = 0; i < 4; i++) {
        if ((flt->topic_set & (1u << i))
            && (i >= l->ntopics || memcmp(l->topics[i], flt->topics[i], 32)
                                   != 0))
        {
            return 0;
        }
    }
    return 1;
}


static int
follow_bloom_may(const provend_eth_filter_t *flt, const follow_block_t *b)
{
    unsigned  i;

    if (!provend_eth_bloom_has(b->bloom, flt->address, 20)) {
        return 0;
    }
    for (i = 0; i < 4; i++) {
        if ((flt->topic_set & (1u << i))
            && !provend_eth_bloom_has(b->bloom, flt->topics[i], 32))
        {
            return 0;
        }
    }
    return 1;
}


/*
 * Every log of block b, proved against its receipts root: the receipts
 * in one eth_getBlockReceipts, or, from an endpoint without it, one
 * eth_getTransactionReceipt per transaction; FOLLOW_BLOCK_MS and
 * FOLLOW_RECEIPTS_MAX bytes for the block at most (consensus bounds what
 * a block holds: 36M gas is 4.5 MB of log data).
 */
static int
follow_logs(provend_follow_t *f, const follow_block_t *b,
    provend_eth_log_t **logs, size_t *n, char *err, size_t errlen)
{
    int          rc;
    char         hex[67];
    size_t       i, used, total;
    json_t      *block, *txs, *receipts, *r;
    uint64_t     deadline, now;
    const char  *t;

    *logs = NULL;
    *n = 0;
    deadline = uv_hrtime() + FOLLOW_BLOCK_MS * 1000000ULL;
    provend_chains_hex(b->hash, 32, hex);
    receipts = NULL;
    if (!f->no_block_receipts) {
        receipts = provend_chains_call(f->c, deadline, "eth_getBlockReceipts",
                                       json_pack("[s]", hex),
                                       FOLLOW_RECEIPTS_MAX, err, errlen);
        if (receipts == NULL && strstr(err, "the endpoint said") != NULL
            && (strcasestr(err, "not exist") != NULL
                || strcasestr(err, "not found") != NULL
                || strcasestr(err, "not supported") != NULL
                || strcasestr(err, "not available") != NULL))
        {
            f->no_block_receipts = 1;   /* the method, not this block */
        } else if (receipts == NULL) {
            return PROVEN_ERR;
        }
    }
    if (receipts == NULL) {
        /* (10000 hashes: 700 KB) */
        block = provend_chains_call(f->c, deadline, "eth_getBlockByHash",
                                    json_pack("[s, b]", hex, 0),
                                    2 * 1024 * 1024, err, errlen);
        txs = json_object_get(block, "transactions");
        if (block == NULL) {
            return PROVEN_ERR;
        }
        if (!json_is_array(txs) || json_array_size(txs) > FOLLOW_TXS_MAX) {
            json_decref(block);
            proven_errf(err, errlen, "eth_getBlockByHash: transactions are "
                        "not a list of %d at most", FOLLOW_TXS_MAX);
            return PROVEN_ERR;
        }
        receipts = json_array();
        rc = receipts != NULL ? PROVEN_OK : PROVEN_ERR;
        total = 0;
        for (i = 0; rc == PROVEN_OK && i < json_array_size(txs); i++) {
            t = json_string_value(json_array_get(txs, i));
            if (total >= FOLLOW_RECEIPTS_MAX) {
                proven_errf(err, errlen, "the block's receipts are over "
                            "%d MiB", FOLLOW_RECEIPTS_MAX / 1024 / 1024);
                rc = PROVEN_ERR;
                break;
            }
            if (t == NULL || strlen(t) != 66 || strncmp(t, "0x", 2) != 0) {
                proven_errf(err, errlen, "eth_getBlockByHash: a transaction "
                            "that is not a hash");
                rc = PROVEN_ERR;
                break;
            }
            now = uv_hrtime();
            r = provend_chains_call(f->c, now + FOLLOW_CALL_MS * 1000000ULL
                                          < deadline
                                          ? now + FOLLOW_CALL_MS * 1000000ULL
                                          : deadline,
                                    "eth_getTransactionReceipt",
                                    json_pack("[s]", t),
                                    FOLLOW_RECEIPTS_MAX - total, err, errlen);
            used = r != NULL ? json_dumpb(r, NULL, 0, JSON_COMPACT) : 0;
            total += used;
            rc = r != NULL && json_array_append_new(receipts, r) == 0
                 ? PROVEN_OK : PROVEN_ERR;
        }
        json_decref(block);
        if (rc != PROVEN_OK) {
            json_decref(receipts);
            return PROVEN_ERR;
        }
    }
    /* what the endpoint said is checked here: the root decides */
    rc = provend_eth_receipts(receipts, b->receipts_root, logs, n, err,
                              errlen);
    json_decref(receipts);
    return rc;
}


/*
 * Block b's logs, proved once for all the filters that ask (kept for the
 * last FOLLOW_PROVED blocks, by hash): the caller reads them until its
 * next call, and never frees them.
 */
static int
follow_logs_of(provend_follow_t *f, const follow_block_t *b,
    const provend_eth_log_t **logs, size_t *n, char *err, size_t errlen)
{
    unsigned            i;
    provend_eth_log_t  *got;

    for (i = 0; i < FOLLOW_PROVED; i++) {
        if (f->proved[i].used && memcmp(f->proved[i].hash, b->hash, 32) == 0)
        {
            *logs = f->proved[i].logs;
            *n = f->proved[i].n;
            return PROVEN_OK;
        }
    }
    if (follow_logs(f, b, &got, n, err, errlen) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    i = f->proved_next++ % FOLLOW_PROVED;
    if (f->proved[i].used) {
        provend_eth_logs_free(f->proved[i].logs, f->proved[i].n);
    }
    memcpy(f->proved[i].hash, b->hash, 32);
    f->proved[i].logs = got;
    f->proved[i].n = *n;
    f->proved[i].used = 1;
    *logs = got;
    return PROVEN_OK;
}


static cbor_item_t *
follow_event(const follow_block_t *b, const provend_eth_log_t *l)
{
    int           ok;
    char          hex[67], *data;
    size_t        i;
    cbor_item_t  *ev, *topics, *args, *t;

    ev = cbor_new_definite_map(8);
    topics = cbor_new_definite_array(l->ntopics);
    args = cbor_new_definite_array(1);
    data = malloc(2 * l->data_len + 3);
    ok = ev != NULL && topics != NULL && args != NULL && data != NULL;
    for (i = 0; ok && i < l->ntopics; i++) {
        provend_chains_hex(l->topics[i], 32, hex);
        t = cbor_build_string(hex);
        ok = t != NULL && cbor_array_push(topics, t);
        if (t != NULL) {
            cbor_decref(&t);
        }
    }
    if (ok) {
        provend_chains_hex(b->hash, 32, hex);
        ok = proven_cbor_map_put(ev, "blockNumber",
                                 cbor_build_uint64(b->number)) == PROVEN_OK
             && proven_cbor_map_put(ev, "blockHash", cbor_build_string(hex))
                == PROVEN_OK;
        provend_chains_hex(l->tx_hash, 32, hex);
        ok = ok && proven_cbor_map_put(ev, "transactionHash",
                                       cbor_build_string(hex)) == PROVEN_OK
             && proven_cbor_map_put(ev, "transactionIndex",
                                    cbor_build_uint32(l->tx_index))
                == PROVEN_OK
             && proven_cbor_map_put(ev, "logIndex",
                                    cbor_build_uint32(l->log_index))
                == PROVEN_OK;
        provend_chains_hex(l->address, 20, hex);
        ok = ok && proven_cbor_map_put(ev, "address", cbor_build_string(hex))
                   == PROVEN_OK;
        provend_chains_hex(l->data, l->data_len, data);
        ok = ok && proven_cbor_map_put(ev, "data", cbor_build_string(data))
                   == PROVEN_OK;
        if (ok) {
            ok = proven_cbor_map_put(ev, "topics", topics) == PROVEN_OK;
            topics = NULL;              /* the map's, whatever it said */
        }
    }
    ok = ok && cbor_array_push(args, ev);
    free(data);
    if (topics != NULL) {
        cbor_decref(&topics);
    }
    if (ev != NULL) {
        cbor_decref(&ev);
    }
    if (!ok && args != NULL) {
        cbor_decref(&args);
    }
    return ok ? args : NULL;
}


/* One event to its handler: PROVEN_OK once it answered well. */
static int
follow_deliver(provend_follow_t *f, const provend_eth_filter_t *flt,
    const follow_block_t *b, const provend_eth_log_t *l, char *err,
    size_t errlen)
{
    cbor_item_t  *args;

    args = follow_event(b, l);
    if (args == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    return provend_bridge_run(&f->bridge, flt->app, flt->handler, "ethereum",
                              args, err, errlen);
}


/*
 * The fork below a cursor whose block left the chain: the highest block
 * below its number not put in the ring since the cursor was last seen
 * linked to it (ring writes counted); a cursor from storage, never seen
 * so, walks its old branch back by hash (each header hashed here and the
 * one asked for) to a block the ring holds.  Neither: the checkpoint,
 * while the ring starts there (no chain followed leaves it), events after
 * it coming again; else PROVEN_ERR, the fork not known.
 */
static int
follow_fork(provend_follow_t *f, const follow_cursor_t *cur,
    uint64_t *number, uint8_t hash[32])
{
    char             hex[67], err[PROVEN_ERR_LEN];
    size_t           steps;
    uint64_t         n;
    uint8_t          asked[32];
    follow_block_t   b, *have;

    if (cur->checked != 0 && cur->number > f->first) {
        n = cur->number - 1 < f->tip ? cur->number - 1 : f->tip;
        for ( ; n >= f->first; n--) {
            have = follow_block(f, n);
            if (have->written <= cur->checked) {
                memcpy(hash, have->hash, 32);
                *number = n;
                return PROVEN_OK;
            }
            if (n == f->first) {
                break;
            }
        }
    } else if (cur->checked == 0) {
        memcpy(b.parent, cur->hash, 32);
        b.number = cur->number + 1;
        for (steps = 0; steps < FOLLOW_RING && b.number > f->first;
             steps++)
        {
            provend_chains_hex(b.parent, 32, hex);
            memcpy(asked, b.parent, 32);
            n = b.number - 1;
            if (follow_header(f, "eth_getBlockByHash", hex, &b, err,
                              sizeof(err)) != PROVEN_OK || b.number != n
                || memcmp(b.hash, asked, 32) != 0)
            {
                break;
            }
            have = follow_block(f, b.number);
            if (have != NULL && memcmp(have->hash, b.hash, 32) == 0) {
                memcpy(hash, b.hash, 32);
                *number = b.number;
                return PROVEN_OK;
            }
        }
    }
    have = follow_block(f, f->first);
    if (have != NULL && memcmp(have->hash, f->c->checkpoint, 32) == 0) {
        memcpy(hash, have->hash, 32);
        *number = f->first;
        return PROVEN_OK;
    }
    return PROVEN_ERR;
}


/* Block n for a cursor: the ring's, or, below it, fetched by number (a
 * cursor left behind while the ring moved on); linked to the cursor
 * either way by the caller. */
static int
follow_block_at(provend_follow_t *f, uint64_t n, follow_block_t *b,
    char *err, size_t errlen)
{
    char             which[24];
    follow_block_t  *have;

    have = follow_block(f, n);
    if (have != NULL) {
        *b = *have;
        return PROVEN_OK;
    }
    snprintf(which, sizeof(which), "0x%llx", (unsigned long long) n);
    if (follow_header(f, "eth_getBlockByNumber", which, b, err, errlen)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    if (b->number != n) {
        proven_errf(err, errlen, "asked for block %llu, the endpoint gave "
                    "%llu", (unsigned long long) n,
                    (unsigned long long) b->number);
        return PROVEN_ERR;
    }
    b->written = 0;
    return PROVEN_OK;
}


/*
 * A filter's step: from its cursor up to the tip less its confirmations,
 * FOLLOW_SCAN blocks and FOLLOW_EVENTS events at most (then the next
 * filter's turn).  Each block is linked to the cursor (its parent is the
 * cursor's block, or it is that block): one that is not means the
 * cursor's block left the chain, and the cursor goes back to the fork.
 */
static void
follow_filter(provend_follow_t *f, const provend_eth_filter_t *flt,
    uint64_t *budget_ms)
{
    int                 linked, rc;
    char                err[PROVEN_ERR_LEN], msg[320];
    size_t              i, nlogs, scanned, events;
    uint64_t            target, n, fork, started, spent;
    uint32_t            from;
    uint8_t             hash[32];
    follow_block_t      b;
    follow_cursor_t    *cur;
    const provend_eth_log_t  *logs;

    cur = follow_cursor(f, flt, err, sizeof(err));
    if (cur == NULL) {
        provend_warn("chains: %s of %s: %s", flt->handler, flt->app, err);
        return;
    }
    if (f->tip < f->first + flt->confirmations) {
        return;                         /* none has its confirmations */
    }
    target = f->tip - flt->confirmations;
    if (cur->retry_at > uv_hrtime() || *budget_ms == 0) {
        return;                         /* held: tried again later */
    }

    events = 0;
    for (scanned = 0; scanned < FOLLOW_SCAN && events < FOLLOW_EVENTS
                      && !follow_stopping(f); scanned++)
    {
        n = cur->next_log == FOLLOW_DONE ? cur->number + 1 : cur->number;
        from = cur->next_log == FOLLOW_DONE ? 0 : cur->next_log;

        /* the cursor's block still an ancestor of the chain's?  (A
         * cursor above the tip waits: the chain is shorter now, and when
         * it grows back the link says whether its block is still there.) */
        if (cur->number > f->tip || n > target) {
            break;
        }
        if (follow_block_at(f, n, &b, err, sizeof(err)) != PROVEN_OK) {
            snprintf(msg, sizeof(msg), "block %llu: %s",
                     (unsigned long long) n, err);
            follow_held(f, flt, cur, msg);
            return;
        }
        linked = cur->next_log == FOLLOW_DONE
                 ? memcmp(b.parent, cur->hash, 32) == 0
                 : memcmp(b.hash, cur->hash, 32) == 0;
        if (!linked && cur->number < f->first) {
            /* the chain left the cursor's block further back than the
             * blocks kept: where to go on from is not known here */
            snprintf(msg, sizeof(msg), "block %llu is not the child of the "
                     "block its events were delivered from, below the %d "
                     "followed", (unsigned long long) n, FOLLOW_RING);
            follow_held(f, flt, cur, msg);
            return;
        }
        if (!linked && follow_fork(f, cur, &fork, hash) != PROVEN_OK) {
            snprintf(msg, sizeof(msg), "block %llu left the chain, and "
                     "where it forked is not known here: held",
                     (unsigned long long) cur->number);
            follow_held(f, flt, cur, msg);
            return;
        }
        if (!linked) {
            provend_info("chains: %s of %s: block %llu left the chain: "
                         "from %llu again", flt->handler, flt->app,
                         (unsigned long long) cur->number,
                         (unsigned long long) (fork + 1));
            follow_cursor_set(f, cur, fork, hash, FOLLOW_DONE, "", 0);
            cur->checked = f->writes;
            continue;
        }
        cur->checked = f->writes;

        logs = NULL;
        nlogs = 0;
        if (follow_bloom_may(flt, &b)
            && follow_logs_of(f, &b, &logs, &nlogs, err, sizeof(err))
               != PROVEN_OK)
        {
            snprintf(msg, sizeof(msg), "block %llu: %s",
                     (unsigned long long) n, err);
            follow_held(f, flt, cur, msg);
            return;
        }
        for (i = from; i < nlogs; i++) {
            if (!follow_matches(flt, &logs[i])) {
                continue;
            }
            /* in a cluster, still this node's turn? */
            if (events == FOLLOW_EVENTS || !follow_lease_now(f)) {
                return;
            }
            if (*budget_ms == 0) {
                return;                 /* the app's time this poll: spent */
            }
            started = uv_hrtime();
            rc = follow_deliver(f, flt, &b, &logs[i], err, sizeof(err));
            spent = (uv_hrtime() - started) / 1000000;
            *budget_ms -= spent < *budget_ms ? spent : *budget_ms;
            if (rc != PROVEN_OK) {
                snprintf(msg, sizeof(msg), "block %llu log %zu: %s",
                         (unsigned long long) n, i, err);
                follow_held(f, flt, cur, msg);
                return;
            }
            events++;
            follow_cursor_set(f, cur, n, b.hash, (uint32_t) i + 1, "", 1);
            if (follow_cursor_save(f, cur, 0, err, sizeof(err)) != PROVEN_OK) {
                /* delivered, not written: after a restart it comes again
                 * (at least once) */
                provend_warn("chains: %s of %s: %s", flt->handler, flt->app,
                             err);
                return;
            }
        }
        follow_cursor_set(f, cur, n, b.hash, FOLLOW_DONE, "", 0);
        if (follow_cursor_save(f, cur, 0, err, sizeof(err)) != PROVEN_OK) {
            provend_warn("chains: %s of %s: %s", flt->handler, flt->app, err);
            return;
        }
    }
}


/* ---- the thread ------------------------------------------------------------------ */

/* The lease (bridge.c): a node taking over reads the cursors anew. */
static int
follow_lease(provend_follow_t *f)
{
    int  held, taken;

    held = provend_bridge_lease(&f->bridge, &taken);
    if (taken) {
        uv_mutex_lock(&f->bridge.mutex);
        f->ncursors = 0;                /* another node's, maybe, since */
        uv_mutex_unlock(&f->bridge.mutex);
    }
    return held;
}

static void
follow_poll(provend_follow_t *f)
{
    int                held;
    uint64_t           budget_ms;
    char               err[PROVEN_ERR_LEN];
    size_t             i;
    follow_filters_t  *call;

    f->poll++;
    if (follow_chain(f, err, sizeof(err)) != PROVEN_OK) {
        if (strcmp(err, f->error) != 0) {
            provend_warn("chains: following the chain: %s", err);
        }
        uv_mutex_lock(&f->bridge.mutex);
        snprintf(f->error, sizeof(f->error), "%s", err);
        uv_mutex_unlock(&f->bridge.mutex);
        return;
    }
    uv_mutex_lock(&f->bridge.mutex);
    f->error[0] = '\0';
    uv_mutex_unlock(&f->bridge.mutex);
    if (!f->caught_up) {
        return;                 /* filters start from where the head is */
    }
    held = follow_lease(f);

    call = calloc(1, sizeof(*call));
    if (call == NULL) {
        return;
    }
    call->call.run = follow_filters_on_loop;
    call->call.drop = follow_filters_drop;
    switch (provend_bridge_ask(&f->bridge, &call->call)) {
    case 0:
        return;                         /* stopping: the loop's now */
    case 1:
        for (i = 0;
             call->call.ok && i < call->nfilters && !follow_stopping(f);
             i++)
        {
            if (call->filters[i].chain != 0
                && call->filters[i].chain != f->chain_id)
            {
                continue;               /* another chain's: not followed */
            }
            if (i == 0 || strcmp(call->filters[i].app,
                                 call->filters[i - 1].app) != 0)
            {
                budget_ms = FOLLOW_APP_MS;      /* each app's turn */
            }
            if (held) {
                follow_filter(f, &call->filters[i], &budget_ms);
            } else if (follow_cursor(f, &call->filters[i], err, sizeof(err))
                       == NULL)
            {
                /* another node delivers: a new filter's start is set
                 * here all the same, as soon as this node sees it */
                provend_warn("chains: %s: %s", call->filters[i].handler,
                             err);
            }
        }
        if (call->call.ok && i == call->nfilters) {
            follow_cursors_sweep(f);
        }
        free(call->filters);
        /* fall through */
    default:
        free(call);
    }
}


static void
follow_main(provend_bridge_t *b)
{
    char               err[PROVEN_ERR_LEN];
    provend_follow_t  *f = b->data;

    if (follow_create_table(f, err, sizeof(err)) != PROVEN_OK) {
        provend_warn("chains: events not followed: %s", err);
        return;
    }
    while (!follow_stopping(f)) {
        follow_poll(f);
        provend_bridge_sleep(b, f->poll_ms);
    }
}


/* ---- the module's ------------------------------------------------------------------- */

static void
follow_closed(provend_bridge_t *b)
{
    free(b->data);
}


int
provend_follow_start(provend_chains_t *c, const provend_chains_config_t *cfg,
    char *err, size_t errlen)
{
    provend_follow_t  *f;

    f = calloc(1, sizeof(*f));
    if (f == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    f->c = c;
    f->poll_ms = cfg->poll_ms != 0 ? cfg->poll_ms : 2000;
    f->bridge.loop = c->loop;
    f->bridge.apps = cfg->apps;
    f->bridge.storage = cfg->storage;
    f->bridge.clustered = cfg->clustered;
    f->bridge.lease_name = "chains-events";
    f->bridge.lease_s = FOLLOW_LEASE_S;
    f->bridge.main = follow_main;
    f->bridge.data = f;
    f->bridge.closed = follow_closed;
    if (provend_bridge_start(&f->bridge, err, errlen) != PROVEN_OK) {
        if (!f->bridge.closing) {
            free(f);                    /* else freed once closed */
        }
        return PROVEN_ERR;
    }
    c->follow = f;
    return PROVEN_OK;
}


void
provend_follow_stop(provend_chains_t *c)
{
    provend_follow_t  *f = c->follow;

    if (f == NULL) {
        return;
    }
    provend_bridge_stop(&f->bridge);
}


void
provend_follow_free(provend_chains_t *c)
{
    unsigned           i;
    provend_follow_t  *f = c->follow;

    if (f == NULL) {
        return;
    }
    provend_bridge_join(&f->bridge);
    for (i = 0; i < FOLLOW_PROVED; i++) {
        if (f->proved[i].used) {
            provend_eth_logs_free(f->proved[i].logs, f->proved[i].n);
        }
    }
    free(f->cursors);
    free(f);
    c->follow = NULL;
}


/* ---- eth.events: how the following goes ------------------------------- */

static cbor_item_t *
follow_status(void *data)
{
    int                ok;
    char               hex[67];
    size_t             i;
    cbor_item_t       *map, *list, *one;
    provend_follow_t  *f = data;

    map = cbor_new_definite_map(8);
    list = cbor_new_definite_array(f->ncursors);
    ok = map != NULL && list != NULL
         && proven_cbor_map_put(map, "chain_id",
                                cbor_build_uint64(f->chain_id)) == PROVEN_OK
         && proven_cbor_map_put(map, "first",
                                cbor_build_uint64(f->first)) == PROVEN_OK
         && proven_cbor_map_put(map, "tip",
                                cbor_build_uint64(f->tip)) == PROVEN_OK
         && proven_cbor_map_put(map, "caught_up",
                                cbor_build_bool(f->caught_up)) == PROVEN_OK
         && proven_cbor_map_put(map, "reorgs",
                                cbor_build_uint64(f->reorgs)) == PROVEN_OK
         && proven_cbor_map_put(map, "delivering",
                                cbor_build_bool(!f->bridge.clustered
                                                || f->bridge.lease_held))
            == PROVEN_OK
         && proven_cbor_map_put(map, "error",
                                cbor_build_string(f->error)) == PROVEN_OK;
    for (i = 0; ok && i < f->ncursors; i++) {
        follow_cursor_t  *cur = &f->cursors[i];

        one = cbor_new_definite_map(7);
        provend_chains_hex(cur->hash, 32, hex);
        ok = one != NULL
             && proven_cbor_map_put(one, "app",
                                    cbor_build_string(cur->app)) == PROVEN_OK
             && proven_cbor_map_put(one, "handler",
                                    cbor_build_string(cur->handler))
                == PROVEN_OK
             && proven_cbor_map_put(one, "block",
                                    cbor_build_uint64(cur->number))
                == PROVEN_OK
             && proven_cbor_map_put(one, "block_hash",
                                    cbor_build_string(hex)) == PROVEN_OK
             && proven_cbor_map_put(one, "next_log",
                                    cur->next_log == FOLLOW_DONE
                                    ? cbor_new_null()
                                    : cbor_build_uint32(cur->next_log))
                == PROVEN_OK
             && proven_cbor_map_put(one, "delivered",
                                    cbor_build_uint64(cur->delivered))
                == PROVEN_OK
             && proven_cbor_map_put(one, "error",
                                    cbor_build_string(cur->error))
                == PROVEN_OK;
        ok = ok && cbor_array_push(list, one);
        if (one != NULL) {
            cbor_decref(&one);
        }
    }
    if (ok) {
        ok = proven_cbor_map_put(map, "filters", list) == PROVEN_OK;
        list = NULL;                    /* the map's, whatever it said */
    }
    if (list != NULL) {
        cbor_decref(&list);
    }
    if (!ok && map != NULL) {
        cbor_decref(&map);
    }
    return ok ? map : NULL;
}


void
follow_op_events(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    provend_chains_t  *c = subsystem;

    (void) op;
    provend_bridge_op_status(c->follow != NULL ? &c->follow->bridge : NULL,
                             follow_status, req->id, reply, ctx,
                             "chains_unavailable",
                             "this node follows no events (no apps)");
}


int
provend_follow_header(provend_chains_t *c, unsigned confirmations,
    provend_eth_header_t *header, char *err, size_t errlen)
{
    int                rc;
    follow_block_t    *b;
    provend_follow_t  *f = c->follow;

    if (f == NULL) {
        proven_errf(err, errlen, "this node follows no chain past its "
                    "checkpoint (no apps)");
        return PROVEN_ERR;
    }
    rc = PROVEN_ERR;
    uv_mutex_lock(&f->bridge.mutex);
    if (!f->caught_up) {
        proven_errf(err, errlen, "the chain is not followed to its head "
                    "yet: %s", f->error[0] != '\0' ? f->error
                                                     : "catching up");
    } else if (f->tip < f->first + confirmations) {
        proven_errf(err, errlen, "fewer than %u blocks followed past the "
                    "checkpoint", confirmations);
    } else {
        b = follow_block(f, f->tip - confirmations);
        memset(header, 0, sizeof(*header));
        header->number = b->number;
        memcpy(header->hash, b->hash, 32);
        memcpy(header->parent, b->parent, 32);
        memcpy(header->state_root, b->state_root, 32);
        memcpy(header->receipts_root, b->receipts_root, 32);
        memcpy(header->bloom, b->bloom, 256);
        rc = PROVEN_OK;
    }
    uv_mutex_unlock(&f->bridge.mutex);
    return rc;
}
