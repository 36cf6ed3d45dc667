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
 * confirmations: a block whose proved logs bloom holds neither the
 * address nor a topic has no such log and is passed over; else its
 * receipts are fetched and proved against its receipts root (receipts.c),
 * and the matching logs are handed to the handler one at a time, in
 * block order, each on the app's worker (woken if idle).  The cursor
 * (block, hash, next log) is written to the node's storage after each
 * answer: a restart resumes after the last acknowledged event, never
 * before it, never after.  A handler that fails holds its filter there:
 * tried again next poll (at least once).  A reorganisation that took a
 * delivered block back moves the cursor back to below the fork: the new
 * blocks' events come with their own hashes.
 *
 * What the endpoint can still do: present a chain of its own making
 * after the checkpoint (no consensus is checked here; see README), or
 * hold blocks back.  It cannot alter, add or drop a log of a block it
 * presents, nor replace a block below the checkpoint.
 *
 * The thread never touches the loop's state: what it needs of the apps
 * (their filters, a handler run) is asked of the loop through an async
 * handle and waited for, the wait cut short when provend stops.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "proven.h"
#include "chains_int.h"
#include <time.h>

#include "apps/apps.h"
#include "cluster/cluster.h"
#include "core/log.h"
#include "storage/storage.h"


#define FOLLOW_RING          512        /* headers kept: reorg depth */
#define FOLLOW_STEP          64         /* headers fetched per poll */
#define FOLLOW_SCAN          64         /* blocks scanned per filter, poll */
#define FOLLOW_CALL_MS       10000      /* one endpoint call */
#define FOLLOW_FILTERS_MAX   1024       /* tracked cursors */
#define FOLLOW_DB            "chains"
#define FOLLOW_DONE          UINT32_MAX /* next_log: the block is done */
#define FOLLOW_LEASE_S       15         /* a cluster's delivering node */

typedef struct {
    uint64_t  number;
    uint8_t   hash[32], parent[32], receipts_root[32], bloom[256];
} follow_block_t;

/* A filter's place: blocks before number done; in number (hash), logs
 * from next_log on to go (FOLLOW_DONE: none). */
typedef struct {
    char       key[512];
    uint64_t   number;
    uint8_t    hash[32];
    uint32_t   next_log;
    uint64_t   delivered;               /* since start */
    unsigned   seen;                    /* the poll it was last in */
    char       error[320];              /* why it is held, or "" */
} follow_cursor_t;

typedef enum { CALL_FILTERS, CALL_RUN } follow_call_kind_t;

typedef struct {
    provend_follow_t      *owner;
    follow_call_kind_t     kind;
    const provend_eth_filter_t  *filter;    /* CALL_RUN */
    cbor_item_t           *args;            /* CALL_RUN, owned */
    provend_eth_filter_t  *filters;         /* CALL_FILTERS' answer */
    size_t                 nfilters;
    int                    done, abandoned, ok;
    char                   error[160];
} follow_call_t;

struct provend_follow_s {
    provend_chains_t      *c;
    provend_apps_t        *apps;
    provend_storage_t     *storage;
    int                    clustered;
    unsigned               poll_ms;
    uint64_t               lease_window;    /* last asked for, or 0 */
    int                    lease_held;      /* this node delivers now */
    uv_thread_t            thread;
    int                    started;
    uv_async_t             async;
    uv_mutex_t             mutex;       /* what follows, and the calls */
    uv_cond_t              cond;
    int                    stopping;
    follow_call_t         *pending;     /* for the loop to take */

    /* the thread's own (status reads them under mutex) */
    follow_block_t         ring[FOLLOW_RING];
    uint64_t               first, tip;  /* ring holds first..tip */
    int                    have_ring;
    int                    caught_up;   /* the ring reached the head */
    uint64_t               chain_id;
    uint64_t               reorgs;
    uint64_t               reorg_from;  /* this poll's lowest replaced */
    unsigned               poll;
    char                   error[PROVEN_ERR_LEN];
    follow_cursor_t       *cursors;
    size_t                 ncursors;
};


/* ---- the loop's side ------------------------------------------------------ */

static void
follow_run_done(void *data, const char *failure, proven_response_t *res)
{
    follow_call_t     *call = data;
    provend_follow_t  *f = call->owner;

    uv_mutex_lock(&f->mutex);
    if (call->abandoned) {
        /* the thread has gone on (provend stopping): the call is ours */
        uv_mutex_unlock(&f->mutex);
        cbor_decref(&call->args);
        free(call);
        return;
    }
    if (failure != NULL) {
        snprintf(call->error, sizeof(call->error), "%s", failure);
    } else if (res != NULL && !res->ok) {
        snprintf(call->error, sizeof(call->error), "%.40s: %.110s", res->code,
                 res->message);
    } else {
        call->ok = 1;
    }
    call->done = 1;
    uv_cond_broadcast(&f->cond);
    uv_mutex_unlock(&f->mutex);
}


static void
follow_on_async(uv_async_t *async)
{
    int                rc;
    follow_call_t     *call;
    provend_follow_t  *f = async->data;

    uv_mutex_lock(&f->mutex);
    call = f->pending;
    f->pending = NULL;
    uv_mutex_unlock(&f->mutex);
    if (call == NULL) {
        return;
    }

    if (call->kind == CALL_FILTERS) {
        rc = provend_apps_eth_filters(f->apps, &call->filters,
                                      &call->nfilters);
        uv_mutex_lock(&f->mutex);
        call->ok = rc == PROVEN_OK;
        call->done = 1;
        uv_cond_broadcast(&f->cond);
        uv_mutex_unlock(&f->mutex);
        return;
    }

    rc = provend_apps_run(f->apps, call->filter->app, NULL,
                          call->filter->handler, call->args, NULL, NULL,
                          follow_run_done, call);
    if (rc != PROVEN_OK) {
        follow_run_done(call, rc == PROVEND_RUN_STOPPING ? "provend is "
                        "stopping" : "the app is not deployed", NULL);
    }
}


/* The thread: call done by the loop (1), or provend stopping (0: call is
 * the loop's to free, if it ever answers). */
static int
follow_ask_loop(provend_follow_t *f, follow_call_t *call)
{
    call->owner = f;
    uv_mutex_lock(&f->mutex);
    if (f->stopping) {
        uv_mutex_unlock(&f->mutex);
        return -1;
    }
    f->pending = call;
    uv_async_send(&f->async);
    while (!call->done && !f->stopping) {
        uv_cond_wait(&f->cond, &f->mutex);
    }
    if (!call->done) {
        /* taken by the loop, or not: either way it is not ours now */
        if (f->pending == call) {
            f->pending = NULL;
            uv_mutex_unlock(&f->mutex);
            return -1;
        }
        call->abandoned = 1;
        uv_mutex_unlock(&f->mutex);
        return 0;
    }
    uv_mutex_unlock(&f->mutex);
    return 1;
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
                              method, json_pack("[s, b]", which, 0), err,
                              errlen);
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
    memcpy(b->bloom, h.bloom, 256);
    return PROVEN_OK;
}


static int
follow_number(provend_follow_t *f, const char *method, uint64_t *n,
    char *err, size_t errlen)
{
    char         *end;
    json_t       *got;
    const char   *t;

    got = provend_chains_call(f->c, uv_hrtime() + FOLLOW_CALL_MS * 1000000ULL,
                              method, json_array(), err, errlen);
    if (got == NULL) {
        return PROVEN_ERR;
    }
    t = json_string_value(got);
    if (t == NULL || strncmp(t, "0x", 2) != 0 || strlen(t) > 18
        || strlen(t) < 3)
    {
        json_decref(got);
        proven_errf(err, errlen, "%s: not a number", method);
        return PROVEN_ERR;
    }
    *n = strtoull(t + 2, &end, 16);
    if (*end != '\0') {
        json_decref(got);
        proven_errf(err, errlen, "%s: not a number", method);
        return PROVEN_ERR;
    }
    json_decref(got);
    return PROVEN_OK;
}


static void
follow_push(provend_follow_t *f, const follow_block_t *b)
{
    f->ring[b->number % FOLLOW_RING] = *b;
    f->tip = b->number;
    if (f->tip - f->first >= FOLLOW_RING) {
        f->first = f->tip - FOLLOW_RING + 1;
    }
}


/*
 * The endpoint's block at height (its header by number) differs from the
 * ring's, or extends nothing: walk its parents back to a block the ring
 * holds, then replace what is above it.  PROVEN_ERR when the fork is
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
        have = follow_block(f, branch[n - 1].number - 1);
        if (branch[n - 1].number > 0 && have != NULL
            && memcmp(have->hash, branch[n - 1].parent, 32) == 0)
        {
            break;                      /* the fork: have */
        }
        if (have == NULL || n == FOLLOW_RING || branch[n - 1].number == 0) {
            free(branch);
            proven_errf(err, errlen, "the endpoint's chain leaves the "
                        "followed one below block %llu (the checkpoint, or "
                        "%d blocks back): not followed",
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
    if (f->reorg_from == 0 || branch[n - 1].number < f->reorg_from) {
        f->reorg_from = branch[n - 1].number;
    }
    f->reorgs++;
    f->tip = branch[n - 1].number - 1;
    for (i = n; i > 0; i--) {
        follow_push(f, &branch[i - 1]);
    }
    free(branch);
    return PROVEN_OK;
}


/* One poll's following: the ring up to the endpoint's head (a step). */
static int
follow_chain(provend_follow_t *f, char *err, size_t errlen)
{
    char             which[24];
    uint64_t         head, at, fetched;
    follow_block_t   b, *have;

    if (!f->have_ring) {
        /* from the checkpoint, hashed here */
        if (follow_number(f, "eth_chainId", &f->chain_id, err, errlen)
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
        uv_mutex_lock(&f->mutex);
        f->first = b.number;
        f->have_ring = 1;
        follow_push(f, &b);
        uv_mutex_unlock(&f->mutex);
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
                    "checkpoint", (unsigned long long) head);
        return PROVEN_ERR;
    }
    snprintf(which, sizeof(which), "0x%llx", (unsigned long long) at);
    if (follow_header(f, "eth_getBlockByNumber", which, &b, err, errlen)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }
    have = follow_block(f, at);
    if (b.number != at) {
        proven_errf(err, errlen, "asked for block %llu, the endpoint gave "
                    "%llu", (unsigned long long) at,
                    (unsigned long long) b.number);
        return PROVEN_ERR;
    }
    uv_mutex_lock(&f->mutex);
    if (memcmp(have->hash, b.hash, 32) != 0) {
        if (at == f->first) {
            uv_mutex_unlock(&f->mutex);
            proven_errf(err, errlen, "the endpoint's block %llu is not the "
                        "checkpoint", (unsigned long long) at);
            return PROVEN_ERR;
        }
        if (follow_reorg(f, &b, err, errlen) != PROVEN_OK) {
            uv_mutex_unlock(&f->mutex);
            return PROVEN_ERR;
        }
    } else if (at < f->tip) {
        /* the endpoint's chain is shorter now: what was above is gone */
        if (f->reorg_from == 0 || at + 1 < f->reorg_from) {
            f->reorg_from = at + 1;
        }
        provend_warn("chains: a reorganisation: the endpoint's chain ends "
                     "at %llu now, not %llu", (unsigned long long) at,
                     (unsigned long long) f->tip);
        f->reorgs++;
        f->tip = at;
    }
    uv_mutex_unlock(&f->mutex);

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
        uv_mutex_lock(&f->mutex);
        have = follow_block(f, f->tip);
        if (memcmp(have->hash, b.parent, 32) == 0) {
            follow_push(f, &b);
        } else if (follow_reorg(f, &b, err, errlen) != PROVEN_OK) {
            uv_mutex_unlock(&f->mutex);
            return PROVEN_ERR;
        }
        uv_mutex_unlock(&f->mutex);
    }
    f->caught_up = f->tip >= head;
    return PROVEN_OK;
}


/* ---- cursors ---------------------------------------------------------------------- */

static void
follow_key(const provend_eth_filter_t *flt, char *key, size_t size)
{
    char      hex[67];
    size_t    off;
    unsigned  i;

    provend_chains_hex(flt->address, 20, hex);
    off = (size_t) snprintf(key, size, "%s\n%s\n%s", flt->app, flt->handler,
                            hex);
    for (i = 0; i < 4 && off < size; i++) {
        if (flt->topic_set & (1u << i)) {
            provend_chains_hex(flt->topics[i], 32, hex);
        } else {
            snprintf(hex, sizeof(hex), "*");
        }
        off += (size_t) snprintf(key + off, size - off, "\n%s", hex);
    }
}


static int
follow_sql(provend_follow_t *f, provend_storage_req_t *req, char *err,
    size_t errlen)
{
    if (provend_storage_call(f->storage, req) != PROVEND_ST_OK) {
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


/* The filter's cursor: kept, or from storage, or new (from the followed
 * head: events before it are not the handler's). */
static follow_cursor_t *
follow_cursor(provend_follow_t *f, const provend_eth_filter_t *flt,
    char *err, size_t errlen)
{
    char                    key[512];
    size_t                  i, len;
    uint8_t                *hash;
    uint64_t                number, next_log;
    cbor_item_t            *rows, *row;
    follow_cursor_t        *cur, *grown;
    follow_block_t         *b;
    provend_storage_req_t  *req;

    follow_key(flt, key, sizeof(key));
    for (i = 0; i < f->ncursors; i++) {
        if (strcmp(f->cursors[i].key, key) == 0) {
            return &f->cursors[i];
        }
    }
    if (f->ncursors == FOLLOW_FILTERS_MAX) {
        proven_errf(err, errlen, "more than %d filters", FOLLOW_FILTERS_MAX);
        return NULL;
    }
    uv_mutex_lock(&f->mutex);           /* status reads them */
    grown = realloc(f->cursors, (f->ncursors + 1) * sizeof(*grown));
    if (grown != NULL) {
        f->cursors = grown;
    }
    uv_mutex_unlock(&f->mutex);
    if (grown == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    cur = &f->cursors[f->ncursors];
    memset(cur, 0, sizeof(*cur));
    snprintf(cur->key, sizeof(cur->key), "%s", key);

    req = provend_storage_own_sql(PROVEND_OP_SQL_QUERY, FOLLOW_DB, 1);
    if (req == NULL
        || provend_storage_stmt(req, 0, "SELECT number, hash, next_log FROM "
                                "cursors WHERE key = ?1", 1) != PROVEN_OK
        || provend_storage_param(&req->stmts[0], 0, PROVEND_SQL_TEXT, key,
                                 strlen(key)) != PROVEN_OK)
    {
        provend_storage_req_free(req);
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    req->local = 1;
    if (f->clustered) {
        /* every write answered on any node, the last holder's included */
        req->after = provend_storage_cluster_last(f->storage);
    }
    if (follow_sql(f, req, err, errlen) != PROVEN_OK) {
        provend_storage_req_free(req);
        return NULL;
    }
    rows = proven_cbor_map_get(req->result, "rows");
    row = rows != NULL && cbor_isa_array(rows) && cbor_array_size(rows) == 1
          ? cbor_array_handle(rows)[0] : NULL;
    hash = NULL;
    if (row != NULL && cbor_isa_array(row) && cbor_array_size(row) == 3
        && proven_cbor_uint(cbor_array_handle(row)[0], &number) == PROVEN_OK
        && proven_cbor_bytes(cbor_array_handle(row)[1], 32, &hash, &len)
           == PROVEN_OK && len == 32
        && proven_cbor_uint(cbor_array_handle(row)[2], &next_log)
           == PROVEN_OK && next_log <= FOLLOW_DONE)
    {
        cur->number = number;
        memcpy(cur->hash, hash, 32);
        cur->next_log = (uint32_t) next_log;
        free(hash);
        provend_storage_req_free(req);
        uv_mutex_lock(&f->mutex);
        f->ncursors++;
        uv_mutex_unlock(&f->mutex);
        return cur;
    }
    free(hash);
    provend_storage_req_free(req);

    /* new: done up to the head as it is now (what came before the
     * handler is not its), its confirmations counted from there on */
    number = f->tip;
    b = follow_block(f, number);
    cur->number = number;
    memcpy(cur->hash, b->hash, 32);
    cur->next_log = FOLLOW_DONE;
    if (follow_cursor_save(f, cur, 1, err, errlen) != PROVEN_OK) {
        return NULL;
    }
    uv_mutex_lock(&f->mutex);
    f->ncursors++;
    uv_mutex_unlock(&f->mutex);
    return cur;
}


static void
follow_cursor_set(provend_follow_t *f, follow_cursor_t *cur, uint64_t number,
    const uint8_t hash[32], uint32_t next_log, const char *error,
    unsigned delivered)
{
    uv_mutex_lock(&f->mutex);
    cur->delivered += delivered;
    cur->number = number;
    memcpy(cur->hash, hash, 32);
    cur->next_log = next_log;
    snprintf(cur->error, sizeof(cur->error), "%s", error);
    uv_mutex_unlock(&f->mutex);
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


/* Every log of block b, proved against its receipts root. */
static int
follow_logs(provend_follow_t *f, const follow_block_t *b,
    provend_eth_log_t **logs, size_t *n, char *err, size_t errlen)
{
    int       rc;
    char      hex[67];
    size_t    i;
    json_t   *block, *txs, *receipts, *r;
    uint64_t  deadline;

    *logs = NULL;
    *n = 0;
    deadline = uv_hrtime() + FOLLOW_CALL_MS * 1000000ULL;
    provend_chains_hex(b->hash, 32, hex);
    block = provend_chains_call(f->c, deadline, "eth_getBlockByHash",
                                json_pack("[s, b]", hex, 0), err, errlen);
    txs = json_object_get(block, "transactions");
    if (block == NULL || !json_is_array(txs)) {
        if (block != NULL) {
            proven_errf(err, errlen, "eth_getBlockByHash: no transactions");
        }
        json_decref(block);
        return PROVEN_ERR;
    }
    receipts = json_array();
    rc = receipts != NULL ? PROVEN_OK : PROVEN_ERR;
    for (i = 0; rc == PROVEN_OK && i < json_array_size(txs); i++) {
        if (!json_is_string(json_array_get(txs, i))) {
            proven_errf(err, errlen, "eth_getBlockByHash: a transaction "
                        "that is not a hash");
            rc = PROVEN_ERR;
            break;
        }
        r = provend_chains_call(f->c, deadline, "eth_getTransactionReceipt",
                                json_pack("[O]", json_array_get(txs, i)),
                                err, errlen);
        rc = r != NULL && json_array_append_new(receipts, r) == 0
             ? PROVEN_OK : PROVEN_ERR;
    }
    json_decref(block);
    if (rc == PROVEN_OK) {
        /* what the endpoint said is checked here: the root decides */
        rc = provend_eth_receipts(receipts, b->receipts_root, logs, n, err,
                                  errlen);
    }
    json_decref(receipts);
    return rc;
}


static cbor_item_t *
follow_event(const follow_block_t *b, const provend_eth_log_t *l)
{
    int           ok;
    char          hex[67], *data;
    size_t        i;
    cbor_item_t  *ev, *topics, *args;

    ev = cbor_new_definite_map(8);
    topics = cbor_new_definite_array(l->ntopics);
    args = cbor_new_definite_array(1);
    data = malloc(2 * l->data_len + 3);
    ok = ev != NULL && topics != NULL && args != NULL && data != NULL;
    for (i = 0; ok && i < l->ntopics; i++) {
        provend_chains_hex(l->topics[i], 32, hex);
        ok = cbor_array_push(topics, cbor_move(cbor_build_string(hex)));
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
        ok = ok && proven_cbor_map_put(ev, "topics", topics) == PROVEN_OK;
        topics = NULL;
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
    int             rc;
    follow_call_t  *call;

    call = calloc(1, sizeof(*call));
    if (call == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    call->kind = CALL_RUN;
    call->filter = flt;
    call->args = follow_event(b, l);
    if (call->args == NULL) {
        free(call);
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    rc = follow_ask_loop(f, call);
    if (rc == 0) {
        proven_errf(err, errlen, "provend is stopping");
        return PROVEN_ERR;          /* the loop frees it when answered */
    }
    cbor_decref(&call->args);
    if (rc < 0 || !call->ok) {
        proven_errf(err, errlen, "the handler: %s",
                    rc < 0 ? "provend is stopping" : call->error);
        free(call);
        return PROVEN_ERR;
    }
    free(call);
    return PROVEN_OK;
}


/* A filter's step: from its cursor up to the tip less its confirmations. */
static void
follow_filter(provend_follow_t *f, const provend_eth_filter_t *flt)
{
    char                err[PROVEN_ERR_LEN], msg[320];
    size_t              i, nlogs, scanned;
    uint64_t            target, n;
    uint32_t            from;
    follow_block_t      b, *have;
    follow_cursor_t    *cur;
    provend_eth_log_t  *logs;

    cur = follow_cursor(f, flt, err, sizeof(err));
    if (cur == NULL) {
        provend_warn("chains: %s: %s", flt->handler, err);
        return;
    }
    cur->seen = f->poll;

    /* its block taken back by a reorganisation: below the fork again */
    uv_mutex_lock(&f->mutex);
    have = follow_block(f, cur->number);
    if (cur->number >= f->first
        && ((have != NULL && memcmp(have->hash, cur->hash, 32) != 0)
            || (have == NULL && f->reorg_from != 0
                && f->reorg_from <= cur->number)))
    {
        n = f->reorg_from > f->first ? f->reorg_from - 1 : f->first;
        if (n >= cur->number) {
            n = cur->number > f->first ? cur->number - 1 : f->first;
        }
        have = follow_block(f, n);
        provend_info("chains: %s of %s: block %llu left the chain: from "
                     "%llu again", flt->handler, flt->app,
                     (unsigned long long) cur->number,
                     (unsigned long long) (n + 1));
        cur->number = n;
        memcpy(cur->hash, have->hash, 32);
        cur->next_log = FOLLOW_DONE;
    } else if (have == NULL && cur->number > f->tip) {
        uv_mutex_unlock(&f->mutex);
        return;                         /* not reached yet */
    }
    target = f->tip >= f->first + flt->confirmations
             ? f->tip - flt->confirmations : f->first;
    uv_mutex_unlock(&f->mutex);

    for (scanned = 0; scanned < FOLLOW_SCAN && !f->stopping; scanned++) {
        n = cur->next_log == FOLLOW_DONE ? cur->number + 1 : cur->number;
        from = cur->next_log == FOLLOW_DONE ? 0 : cur->next_log;
        if (n > target) {
            break;
        }
        uv_mutex_lock(&f->mutex);
        have = follow_block(f, n);
        if (have == NULL) {
            uv_mutex_unlock(&f->mutex);
            break;
        }
        b = *have;
        uv_mutex_unlock(&f->mutex);

        logs = NULL;
        nlogs = 0;
        if (follow_bloom_may(flt, &b)
            && follow_logs(f, &b, &logs, &nlogs, err, sizeof(err))
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
            if (follow_deliver(f, flt, &b, &logs[i], err, sizeof(err))
                != PROVEN_OK)
            {
                snprintf(msg, sizeof(msg), "block %llu log %zu: %s",
                         (unsigned long long) n, i, err);
                follow_held(f, flt, cur, msg);
                provend_eth_logs_free(logs, nlogs);
                return;
            }
            follow_cursor_set(f, cur, n, b.hash, (uint32_t) i + 1, "", 1);
            if (follow_cursor_save(f, cur, 0, err, sizeof(err)) != PROVEN_OK) {
                provend_warn("chains: %s of %s: %s", flt->handler, flt->app,
                             err);
                provend_eth_logs_free(logs, nlogs);
                return;
            }
        }
        provend_eth_logs_free(logs, nlogs);
        follow_cursor_set(f, cur, n, b.hash, FOLLOW_DONE, "", 0);
        if (follow_cursor_save(f, cur, 0, err, sizeof(err)) != PROVEN_OK) {
            provend_warn("chains: %s of %s: %s", flt->handler, flt->app, err);
            return;
        }
    }
}


/* ---- the thread ------------------------------------------------------------------ */

/*
 * In a cluster, one node at a time delivers: the first to claim each
 * window of FOLLOW_LEASE_S seconds (JetStream keeps one claim per id).
 * A node taking over reads the cursors anew, as the last holder left
 * them in the replicated storage: at a hand-over, an event whose answer
 * the last holder had not yet written may come twice (at least once).
 */
static int
follow_lease(provend_follow_t *f)
{
    char      what[64];
    int       held;
    uint64_t  window;

    if (!f->clustered) {
        return 1;
    }
    window = (uint64_t) time(NULL) / FOLLOW_LEASE_S;
    if (window == f->lease_window) {
        return f->lease_held;
    }
    snprintf(what, sizeof(what), "chains-events-%llu",
             (unsigned long long) window);
    held = provend_storage_cluster_claim(f->storage, what);
    uv_mutex_lock(&f->mutex);
    if (held && !f->lease_held) {
        f->ncursors = 0;                /* another node's, maybe, since */
    }
    f->lease_window = window;
    f->lease_held = held;
    uv_mutex_unlock(&f->mutex);
    return held;
}

static void
follow_poll(provend_follow_t *f)
{
    int              held;
    char             err[PROVEN_ERR_LEN];
    size_t           i;
    follow_call_t   *call;

    f->poll++;
    f->reorg_from = 0;
    if (follow_chain(f, err, sizeof(err)) != PROVEN_OK) {
        if (strcmp(err, f->error) != 0) {
            provend_warn("chains: following the chain: %s", err);
        }
        uv_mutex_lock(&f->mutex);
        snprintf(f->error, sizeof(f->error), "%s", err);
        uv_mutex_unlock(&f->mutex);
        return;
    }
    uv_mutex_lock(&f->mutex);
    f->error[0] = '\0';
    uv_mutex_unlock(&f->mutex);
    if (!f->caught_up) {
        return;                 /* filters start from where the head is */
    }
    held = follow_lease(f);

    call = calloc(1, sizeof(*call));
    if (call == NULL) {
        return;
    }
    call->kind = CALL_FILTERS;
    switch (follow_ask_loop(f, call)) {
    case 0:
        return;                         /* stopping: the loop's now */
    case 1:
        for (i = 0; call->ok && i < call->nfilters && !f->stopping; i++) {
            if (call->filters[i].chain != 0
                && call->filters[i].chain != f->chain_id)
            {
                continue;               /* another chain's: not followed */
            }
            if (held) {
                follow_filter(f, &call->filters[i]);
            } else if (follow_cursor(f, &call->filters[i], err, sizeof(err))
                       == NULL)
            {
                /* another node delivers: a new filter's start is set
                 * here all the same, as soon as this node sees it */
                provend_warn("chains: %s: %s", call->filters[i].handler,
                             err);
            }
        }
        free(call->filters);
        /* fall through */
    default:
        free(call);
    }
}


static void
follow_main(void *arg)
{
    char               err[PROVEN_ERR_LEN];
    uint64_t           wake;
    provend_follow_t  *f = arg;

    if (follow_create_table(f, err, sizeof(err)) != PROVEN_OK) {
        provend_warn("chains: events not followed: %s", err);
        return;
    }
    uv_mutex_lock(&f->mutex);
    while (!f->stopping) {
        uv_mutex_unlock(&f->mutex);
        follow_poll(f);
        uv_mutex_lock(&f->mutex);
        wake = uv_hrtime() + (uint64_t) f->poll_ms * 1000000ULL;
        while (!f->stopping && uv_hrtime() < wake) {
            (void) uv_cond_timedwait(&f->cond, &f->mutex,
                                     wake - uv_hrtime());
        }
    }
    uv_mutex_unlock(&f->mutex);
}


/* ---- the module's ------------------------------------------------------------------- */

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
    f->apps = cfg->apps;
    f->storage = cfg->storage;
    f->clustered = cfg->clustered;
    f->poll_ms = cfg->poll_ms != 0 ? cfg->poll_ms : 2000;
    if (uv_mutex_init(&f->mutex) != 0) {
        free(f);
        proven_errf(err, errlen, "cannot make a mutex");
        return PROVEN_ERR;
    }
    if (uv_cond_init(&f->cond) != 0) {
        uv_mutex_destroy(&f->mutex);
        free(f);
        proven_errf(err, errlen, "cannot make a condition");
        return PROVEN_ERR;
    }
    if (uv_async_init(c->loop, &f->async, follow_on_async) != 0) {
        uv_cond_destroy(&f->cond);
        uv_mutex_destroy(&f->mutex);
        free(f);
        proven_errf(err, errlen, "cannot make an async handle");
        return PROVEN_ERR;
    }
    f->async.data = f;
    c->follow = f;
    if (uv_thread_create(&f->thread, follow_main, f) != 0) {
        proven_errf(err, errlen, "cannot start the events thread");
        return PROVEN_ERR;              /* freed with the module */
    }
    f->started = 1;
    return PROVEN_OK;
}


void
provend_follow_stop(provend_chains_t *c)
{
    provend_follow_t  *f = c->follow;

    if (f == NULL) {
        return;
    }
    uv_mutex_lock(&f->mutex);
    f->stopping = 1;
    uv_cond_broadcast(&f->cond);
    uv_mutex_unlock(&f->mutex);
    uv_close((uv_handle_t *) &f->async, NULL);
}


void
provend_follow_free(provend_chains_t *c)
{
    provend_follow_t  *f = c->follow;

    if (f == NULL) {
        return;
    }
    if (f->started) {
        uv_thread_join(&f->thread);
    }
    uv_cond_destroy(&f->cond);
    uv_mutex_destroy(&f->mutex);
    free(f->cursors);
    free(f);
    c->follow = NULL;
}


/* ---- eth.events: how the following goes ------------------------------- */

static cbor_item_t *
follow_status(provend_follow_t *f)
{
    int           ok;
    char          hex[67];
    size_t        i, nl;
    cbor_item_t  *map, *list, *one;

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
                                cbor_build_bool(!f->clustered
                                                || f->lease_held))
            == PROVEN_OK
         && proven_cbor_map_put(map, "error",
                                cbor_build_string(f->error)) == PROVEN_OK;
    for (i = 0; ok && i < f->ncursors; i++) {
        follow_cursor_t  *cur = &f->cursors[i];

        one = cbor_new_definite_map(6);
        nl = strcspn(cur->key, "\n");
        provend_chains_hex(cur->hash, 32, hex);
        ok = one != NULL
             && proven_cbor_map_put(one, "filter",
                                    cbor_build_string(cur->key)) == PROVEN_OK
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
        (void) nl;
        ok = ok && cbor_array_push(list, one);
        if (one != NULL) {
            cbor_decref(&one);
        }
    }
    ok = ok && proven_cbor_map_put(map, "filters", list) == PROVEN_OK;
    list = NULL;
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
    cbor_item_t       *map;
    provend_chains_t  *c = subsystem;
    provend_follow_t  *f = c->follow;

    (void) op;
    if (f == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "chains_unavailable",
                                "this node follows no events (no apps)");
        return;
    }
    uv_mutex_lock(&f->mutex);
    map = follow_status(f);
    uv_mutex_unlock(&f->mutex);
    if (map == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    provend_ops_reply_ok(reply, ctx, req->id, map);
}
