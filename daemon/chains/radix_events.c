/*
 * Radix events for apps' runOnRadixEvent handlers (issue 20).
 *
 * A thread of its own reads the Gateway's /stream/transactions for each
 * filter (an emitter's address and an event's name): committed user
 * transactions, in ledger order, from the filter's cursor on, the
 * emitter's among them (event_global_emitters_filter), their receipts'
 * events opted in, page by page until next_cursor is null (a filter
 * already at the ledger's version asks nothing: a Gateway asked past its
 * ledger's end answers an error).  Each event the emitter's own
 * blueprint (object module Main) emitted under that name goes to the
 * handler, one at a time, on the app's worker; the cursor (state
 * version, next event) is written to the node's storage after each
 * answer, so a restart goes on after the last event written as answered
 * (one answered but not yet written comes again: at least once).  A
 * handler that fails holds its filter there, tried again after a wait
 * that doubles, a minute at most.  A new filter starts at the ledger's
 * state version when first seen: events before it are not its.  In a
 * cluster one node at a time delivers (the bridge's lease), the cursors
 * being the cluster's storage.  Each app's handlers get EVENTS_APP_MS a
 * poll, so one app's slow handlers hold the others back that long at
 * most.
 *
 * Radix commits with finality: a version once answered is never undone,
 * so there are no reorganisations to follow, unlike Ethereum's.  What
 * the Gateway says is its word (radix.h); it is still held to its own
 * order: versions rising, from where asked, not past its ledger state.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/sha.h>
#include <uv.h>

#include "proven.h"
#include "radix_int.h"
#include "bridge.h"
#include "apps/apps.h"
#include "cluster/cluster.h"
#include "core/log.h"
#include "core/util.h"
#include "storage/storage.h"


#define EVENTS_PAGE          50         /* transactions per Gateway page */
#define EVENTS_PAGES         4          /* pages per filter, poll */
#define EVENTS_PER_POLL      64         /* events per filter, poll */
#define EVENTS_TX_MAX        4096       /* a transaction's events */
#define EVENTS_DATA_DEPTH    160        /* an event's data as JSON: two
                                           levels per SBOR level, of 64 */
#define EVENTS_APP_MS        10000      /* an app's handlers, per poll */
#define EVENTS_DONE          UINT32_MAX /* next: the transaction is done */
#define EVENTS_LEASE_S       15
#define EVENTS_DB            "chains"
#define EVENTS_FILTERS_MAX   (PROVEND_APPS_MAX * PROVEND_RADIX_FILTERS_MAX)

typedef struct {
    char       key[2 * SHA256_DIGEST_LENGTH + 1];
    char       app[PROVEND_NAME_MAX + 1];
    char       handler[PROVEND_SCHEDULE_NAME_MAX + 1];
    uint64_t   version;                 /* transactions before it done */
    uint32_t   next;                    /* its events from next on to go */
    uint64_t   saved_version;           /* as last written */
    uint32_t   saved_next;
    uint64_t   delivered;               /* since start */
    uint64_t   retry_at;                /* held: uv_hrtime to try again */
    unsigned   failures;
    unsigned   seen;                    /* the poll it was last in */
    char       error[320];
} events_cursor_t;

struct radix_events_s {
    provend_bridge_t    bridge;         /* its mutex: what follows */
    provend_radix_t    *r;
    unsigned            poll_ms;
    unsigned            poll;
    uint64_t            ledger;         /* the Gateway's, at this poll */
    uint64_t            app_turn;       /* uv_hrtime: this app's began */
    char                error[PROVEN_ERR_LEN];
    events_cursor_t    *cursors;
    size_t              ncursors;
};

/* The apps' filters, asked of the loop. */
typedef struct {
    provend_bridge_call_t    call;
    provend_radix_filter_t  *filters;
    size_t                   nfilters;
} events_filters_t;


static int
events_stopping(radix_events_t *e)
{
    return provend_bridge_stopping(&e->bridge);
}


/* ---- the loop's side ------------------------------------------------------ */

static void
events_filters_on_loop(provend_bridge_call_t *call)
{
    events_filters_t  *q = (events_filters_t *) call;

    provend_bridge_answer(call, provend_apps_radix_filters(call->bridge->apps,
                                    &q->filters, &q->nfilters) == PROVEN_OK
                                ? NULL : "out of memory");
}


static void
events_filters_drop(provend_bridge_call_t *call)
{
    events_filters_t  *q = (events_filters_t *) call;

    free(q->filters);
    free(q);
}


/* ---- cursors ------------------------------------------------------------------ */

/* The filter whole and the network, hashed: no length of one field cuts
 * a key into another's. */
static void
events_key(radix_events_t *e, const provend_radix_filter_t *flt,
    char key[2 * SHA256_DIGEST_LENGTH + 1])
{
    int      len;
    char     all[1024];
    uint8_t  digest[SHA256_DIGEST_LENGTH];

    len = snprintf(all, sizeof(all), "radix-%u\n%s\n%s\n%s\n%s",
                   e->r->network, flt->app, flt->handler, flt->emitter,
                   flt->event);
    SHA256((const uint8_t *) all, (size_t) len, digest);
    proven_hex_encode(digest, sizeof(digest), key);
}


/* A statement on the node's own database; key, when given, is ?1. */
static provend_storage_req_t *
events_req(int op, const char *sql, int nparams, const char *key)
{
    provend_storage_req_t  *req;

    req = provend_storage_own_sql(op, EVENTS_DB, 1);
    if (req != NULL
        && (provend_storage_stmt(req, 0, sql, nparams) != PROVEN_OK
            || (key != NULL
                && provend_storage_param(&req->stmts[0], 0, PROVEND_SQL_TEXT,
                                         key, strlen(key)) != PROVEN_OK)))
    {
        provend_storage_req_free(req);
        return NULL;
    }
    return req;
}


static int
events_sql(radix_events_t *e, provend_storage_req_t *req, char *err,
    size_t errlen)
{
    int  rc;

    if (req == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    rc = PROVEN_OK;
    if (provend_storage_call(e->bridge.storage, req) != PROVEND_ST_OK) {
        proven_errf(err, errlen, "cursor storage: %.200s", req->error);
        rc = PROVEN_ERR;
    }
    return rc;
}


/* The cursor written; new: only where none is yet (in a cluster, the
 * first node's to see the filter stands). */
static int
events_save(radix_events_t *e, events_cursor_t *cur, int new, char *err,
    size_t errlen)
{
    int                     rc;
    provend_storage_req_t  *req;

    if (!new && cur->version == cur->saved_version
        && cur->next == cur->saved_next)
    {
        return PROVEN_OK;
    }
    req = events_req(PROVEND_OP_SQL_EXECUTE, new
                     ? "INSERT OR IGNORE INTO radix_cursors "
                       "VALUES (?1, ?2, ?3)"
                     : "INSERT OR REPLACE INTO radix_cursors "
                       "VALUES (?1, ?2, ?3)", 3, cur->key);
    if (req != NULL) {
        provend_storage_param_int(&req->stmts[0], 1, (int64_t) cur->version);
        provend_storage_param_int(&req->stmts[0], 2, (int64_t) cur->next);
    }
    rc = events_sql(e, req, err, errlen);
    if (rc == PROVEN_OK) {
        cur->saved_version = cur->version;
        cur->saved_next = cur->next;
    }
    provend_storage_req_free(req);
    return rc;
}


/* key's cursor from storage into cur: 1 found, 0 none, -1 err. */
static int
events_load(radix_events_t *e, events_cursor_t *cur, char *err,
    size_t errlen)
{
    int                     found;
    uint64_t                version, next;
    cbor_item_t            *rows, *row;
    provend_storage_req_t  *req;

    req = events_req(PROVEND_OP_SQL_QUERY, "SELECT version, next FROM "
                     "radix_cursors WHERE key = ?1", 1, cur->key);
    if (req != NULL) {
        req->local = 1;
        if (e->bridge.clustered) {
            /* every write answered on any node, the last holder's too */
            req->after = provend_storage_cluster_last(e->bridge.storage);
        }
    }
    if (events_sql(e, req, err, errlen) != PROVEN_OK) {
        provend_storage_req_free(req);
        return -1;
    }
    rows = proven_cbor_map_get(req->result, "rows");
    row = rows != NULL && cbor_isa_array(rows) && cbor_array_size(rows) == 1
          ? cbor_array_handle(rows)[0] : NULL;
    found = row != NULL && cbor_isa_array(row) && cbor_array_size(row) == 2
            && proven_cbor_uint(cbor_array_handle(row)[0], &version)
               == PROVEN_OK
            && proven_cbor_uint(cbor_array_handle(row)[1], &next)
               == PROVEN_OK && next <= EVENTS_DONE;
    if (found) {
        uv_mutex_lock(&e->bridge.mutex);
        cur->version = cur->saved_version = version;
        cur->next = cur->saved_next = (uint32_t) next;
        uv_mutex_unlock(&e->bridge.mutex);
    }
    provend_storage_req_free(req);
    return found;
}


/*
 * The filter's cursor: kept, or from storage, or new (from the ledger's
 * version at this poll), written only where none is yet and read back.
 */
static events_cursor_t *
events_cursor(radix_events_t *e, const provend_radix_filter_t *flt,
    char *err, size_t errlen)
{
    int               found;
    size_t            i;
    events_cursor_t   fresh, *grown;

    memset(&fresh, 0, sizeof(fresh));
    events_key(e, flt, fresh.key);
    for (i = 0; i < e->ncursors; i++) {
        if (strcmp(e->cursors[i].key, fresh.key) == 0) {
            e->cursors[i].seen = e->poll;
            return &e->cursors[i];
        }
    }
    if (e->ncursors == EVENTS_FILTERS_MAX) {
        proven_errf(err, errlen, "more than %d filters", EVENTS_FILTERS_MAX);
        return NULL;
    }
    snprintf(fresh.app, sizeof(fresh.app), "%s", flt->app);
    snprintf(fresh.handler, sizeof(fresh.handler), "%s", flt->handler);
    found = events_load(e, &fresh, err, errlen);
    if (found == 0) {
        fresh.version = e->ledger;
        fresh.next = EVENTS_DONE;
        if (events_save(e, &fresh, 1, err, errlen) != PROVEN_OK) {
            return NULL;
        }
        found = events_load(e, &fresh, err, errlen);
        if (found == 0) {
            proven_errf(err, errlen, "the cursor written is not there");
        }
    }
    if (found <= 0) {
        return NULL;
    }
    fresh.seen = e->poll;

    uv_mutex_lock(&e->bridge.mutex);        /* status reads them */
    grown = realloc(e->cursors, (e->ncursors + 1) * sizeof(*grown));
    if (grown != NULL) {
        e->cursors = grown;
        e->cursors[e->ncursors++] = fresh;
    }
    uv_mutex_unlock(&e->bridge.mutex);
    if (grown == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    return &e->cursors[e->ncursors - 1];
}


static void
events_set(radix_events_t *e, events_cursor_t *cur, uint64_t version,
    uint32_t next, const char *error)
{
    uv_mutex_lock(&e->bridge.mutex);
    cur->version = version;
    cur->next = next;
    if (error != cur->error) {
        snprintf(cur->error, sizeof(cur->error), "%s", error);
    }
    if (*error == '\0') {
        cur->failures = 0;
        cur->retry_at = 0;
    }
    uv_mutex_unlock(&e->bridge.mutex);
}


/* The filter held at its cursor: why, said once; tried again later. */
static void
events_held(radix_events_t *e, const provend_radix_filter_t *flt,
    events_cursor_t *cur, const char *why)
{
    if (strcmp(cur->error, why) != 0) {
        provend_warn("radix: %s of %s: %s", flt->handler, flt->app, why);
    }
    events_set(e, cur, cur->version, cur->next, why);
    cur->retry_at = provend_bridge_retry_at(&cur->failures);
}


/* ---- a filter's events --------------------------------------------------- */

/* Whether ev is the filter's: its name, and emitted by the address (a
 * component's or resource's method, or a package's function). */
static int
events_matches(const provend_radix_filter_t *flt, json_t *ev)
{
    json_t      *emitter;
    const char  *name, *type, *address;

    name = json_string_value(json_object_get(ev, "name"));
    emitter = json_object_get(ev, "emitter");
    type = json_string_value(json_object_get(emitter, "type"));
    if (name == NULL || type == NULL || strcmp(name, flt->event) != 0) {
        return 0;
    }
    /* a method of the entity's own blueprint: not its metadata, role
     * or royalty module's event of the same name */
    address = strcmp(type, "Method") == 0
              && json_string_value(json_object_get(emitter,
                                                   "object_module_id"))
                 != NULL
              && strcmp(json_string_value(json_object_get(emitter,
                                              "object_module_id")),
                        "Main") == 0
              ? json_string_value(json_object_get(
                    json_object_get(emitter, "entity"), "entity_address"))
              : strcmp(type, "Function") == 0
              ? json_string_value(json_object_get(emitter,
                                                  "package_address"))
              : NULL;
    return address != NULL && strcmp(address, flt->emitter) == 0;
}


/* The handler's argument: [{stateVersion, intentHash, timestamp,
 * emitter, eventName, eventIndex, data}]. */
static cbor_item_t *
events_arg(const provend_radix_filter_t *flt, json_t *tx, uint64_t version,
    json_t *ev, size_t index)
{
    int           ok;
    const char   *intent, *when;
    cbor_item_t  *args, *map, *data;

    intent = json_string_value(json_object_get(tx, "intent_hash"));
    when = json_string_value(json_object_get(tx, "round_timestamp"));
    data = provend_json_to_cbor(json_object_get(ev, "data"),
                                EVENTS_DATA_DEPTH);
    if (data == NULL && json_object_get(ev, "data") != NULL) {
        return NULL;            /* deeper than any SBOR value, or no memory */
    }
    map = cbor_new_definite_map(7);
    args = cbor_new_definite_array(1);
    ok = map != NULL && args != NULL
         && proven_cbor_map_put(map, "stateVersion",
                                cbor_build_uint64(version)) == PROVEN_OK
         && proven_cbor_map_put(map, "intentHash",
                                intent != NULL && strlen(intent) < 128
                                ? cbor_build_string(intent)
                                : cbor_new_null()) == PROVEN_OK
         && proven_cbor_map_put(map, "timestamp",
                                when != NULL && strlen(when) < 64
                                ? cbor_build_string(when)
                                : cbor_new_null()) == PROVEN_OK
         && proven_cbor_map_put(map, "emitter",
                                cbor_build_string(flt->emitter)) == PROVEN_OK
         && proven_cbor_map_put(map, "eventName",
                                cbor_build_string(flt->event)) == PROVEN_OK
         && proven_cbor_map_put(map, "eventIndex",
                                cbor_build_uint64(index)) == PROVEN_OK
         && proven_cbor_map_put(map, "data",
                                data != NULL ? data : cbor_new_null())
            == PROVEN_OK;
    ok = ok && cbor_array_push(args, map);
    if (map != NULL) {
        cbor_decref(&map);
    }
    if (!ok && args != NULL) {
        cbor_decref(&args);
    }
    return ok ? args : NULL;
}


/*
 * One transaction of the page: its events from the cursor on, the
 * filter's each to the handler.  PROVEN_OK: done (the cursor past it);
 * PROVEN_AGAIN: the poll's share taken or the lease lost (the cursor at
 * the next event); PROVEN_ERR: held there, err says why.
 */
static int
events_transaction(radix_events_t *e, const provend_radix_filter_t *flt,
    events_cursor_t *cur, json_t *tx, uint64_t version, unsigned *delivered,
    char *err, size_t errlen)
{
    size_t        i, start;
    json_t       *list;
    cbor_item_t  *args;

    list = json_object_get(json_object_get(tx, "receipt"), "events");
    if (list != NULL && (!json_is_array(list)
                         || json_array_size(list) > EVENTS_TX_MAX))
    {
        proven_errf(err, errlen, "the Gateway's transaction %llu has no "
                    "list of %d events at most",
                    (unsigned long long) version, EVENTS_TX_MAX);
        return PROVEN_ERR;
    }
    start = version == cur->version && cur->next != EVENTS_DONE
            ? cur->next : 0;
    for (i = start; i < json_array_size(list); i++) {
        if (!events_matches(flt, json_array_get(list, i))) {
            continue;
        }
        if (*delivered == EVENTS_PER_POLL
            || uv_hrtime() - e->app_turn > EVENTS_APP_MS * 1000000ULL
            || !provend_bridge_lease_now(&e->bridge) || events_stopping(e))
        {
            events_set(e, cur, version, (uint32_t) i, "");
            return PROVEN_AGAIN;
        }
        events_set(e, cur, version, (uint32_t) i, cur->error);
        args = events_arg(flt, tx, version, json_array_get(list, i), i);
        if (args == NULL) {
            proven_errf(err, errlen, "event %zu of transaction %llu: its "
                        "data is deeper than %d levels, or no memory", i,
                        (unsigned long long) version, EVENTS_DATA_DEPTH);
            return PROVEN_ERR;
        }
        if (provend_bridge_run(&e->bridge, flt->app, flt->handler, "radix",
                               args, err, errlen) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        (*delivered)++;
        uv_mutex_lock(&e->bridge.mutex);
        cur->delivered++;
        uv_mutex_unlock(&e->bridge.mutex);
        events_set(e, cur, version, (uint32_t) i + 1, "");
        if (events_save(e, cur, 0, err, errlen) != PROVEN_OK) {
            return PROVEN_ERR;
        }
    }
    events_set(e, cur, version, EVENTS_DONE, "");
    return PROVEN_OK;
}


/* One page of the emitter's transactions from the cursor: 1 the last
 * page (the cursor at the ledger's version), 0 more to come, PROVEN_AGAIN
 * stop for this poll, PROVEN_ERR held. */
static int
events_page(radix_events_t *e, const provend_radix_filter_t *flt,
    events_cursor_t *cur, unsigned *delivered, char *err, size_t errlen)
{
    int          rc, more;
    size_t       i, n;
    json_t      *ans, *items, *tx, *req;
    uint64_t     from, top, version, prev;
    const char  *status;

    from = cur->next == EVENTS_DONE ? cur->version + 1 : cur->version;
    if (from > e->ledger) {
        /* nothing committed since: a Gateway asked past its ledger's end
         * answers an error, not an empty page */
        return 1;
    }
    req = json_pack("{s:{s:I}, s:s, s:i, s:s, s:s, s:[s], s:{s:b}}",
                    "from_ledger_state", "state_version", (json_int_t) from,
                    "order", "Asc", "limit_per_page", EVENTS_PAGE,
                    "kind_filter", "User",
                    "transaction_status_filter", "Success",
                    "event_global_emitters_filter", flt->emitter,
                    "opt_ins", "receipt_events", 1);
    ans = provend_radix_post(e->r, "/stream/transactions", req,
                             RADIX_ANSWER_MAX,
                             uv_hrtime() + RADIX_CALL_MS * 1000000ULL, NULL,
                             err, errlen);
    if (ans == NULL) {
        return PROVEN_ERR;
    }
    top = (uint64_t) json_integer_value(json_object_get(
              json_object_get(ans, "ledger_state"), "state_version"));
    items = json_object_get(ans, "items");
    n = json_array_size(items);
    if (!json_is_array(items) || n > EVENTS_PAGE) {
        proven_errf(err, errlen, "the Gateway's page is not a list of %d "
                    "transactions at most", EVENTS_PAGE);
        json_decref(ans);
        return PROVEN_ERR;
    }
    /* the whole page in order before any of it is delivered: one out of
     * place would move the cursor past what comes after it */
    prev = 0;
    for (i = 0; i < n; i++) {
        tx = json_array_get(items, i);
        version = (uint64_t) json_integer_value(json_object_get(tx,
                                                  "state_version"));
        if (!json_is_integer(json_object_get(tx, "state_version"))
            || version < from || (i > 0 && version <= prev) || version > top)
        {
            proven_errf(err, errlen, "the Gateway's transactions are not in "
                        "ledger order from %llu to its state version %llu",
                        (unsigned long long) from, (unsigned long long) top);
            json_decref(ans);
            return PROVEN_ERR;
        }
        prev = version;
    }
    for (i = 0; i < n; i++) {
        tx = json_array_get(items, i);
        version = (uint64_t) json_integer_value(json_object_get(tx,
                                                  "state_version"));
        status = json_string_value(json_object_get(tx, "transaction_status"));
        if (status != NULL && strcmp(status, "CommittedSuccess") == 0) {
            rc = events_transaction(e, flt, cur, tx, version, delivered, err,
                                    errlen);
            if (rc != PROVEN_OK) {
                json_decref(ans);
                return rc;
            }
        } else {
            events_set(e, cur, version, EVENTS_DONE, "");
        }
    }
    more = json_is_string(json_object_get(ans, "next_cursor"));
    json_decref(ans);
    if (more) {
        return n > 0 ? 0 : 1;   /* (an empty page that says more: later) */
    }
    /* the whole stream to the ledger's version read: the cursor there */
    if (top > cur->version || (top == cur->version && cur->next
                                                      != EVENTS_DONE))
    {
        events_set(e, cur, top, EVENTS_DONE, "");
    }
    return 1;
}


static void
events_filter(radix_events_t *e, const provend_radix_filter_t *flt)
{
    int               rc;
    char              err[PROVEN_ERR_LEN];
    unsigned          page, delivered;
    events_cursor_t  *cur;

    cur = events_cursor(e, flt, err, sizeof(err));
    if (cur == NULL) {
        provend_warn("radix: %s of %s: %s", flt->handler, flt->app, err);
        return;
    }
    if (cur->retry_at != 0 && uv_hrtime() < cur->retry_at) {
        return;
    }
    if (!provend_radix_address_ok(e->r, flt->emitter, NULL)) {
        snprintf(err, sizeof(err), "emitter %s is not an address of "
                 "network %u", flt->emitter, e->r->network);
        events_held(e, flt, cur, err);
        return;
    }
    delivered = 0;
    rc = 0;
    for (page = 0; page < EVENTS_PAGES && rc == 0 && !events_stopping(e);
         page++)
    {
        rc = events_page(e, flt, cur, &delivered, err, sizeof(err));
    }
    if (rc == PROVEN_ERR) {
        events_held(e, flt, cur, err);
    }
    /* a node that lost the lease meanwhile leaves the cursor to the one
     * that holds it now */
    if (provend_bridge_lease_now(&e->bridge)
        && events_save(e, cur, 0, err, sizeof(err)) != PROVEN_OK)
    {
        events_held(e, flt, cur, err);
    }
}


/* ---- the thread ------------------------------------------------------------------ */

static void
events_poll(radix_events_t *e)
{
    int                held, taken;
    char               err[PROVEN_ERR_LEN];
    size_t             i;
    json_t            *ans;
    events_filters_t  *q;

    e->poll++;
    ans = provend_radix_post(e->r, "/status/gateway-status", json_object(),
                             64 * 1024,
                             uv_hrtime() + RADIX_CALL_MS * 1000000ULL, NULL,
                             err, sizeof(err));
    if (ans == NULL) {
        if (strcmp(err, e->error) != 0) {
            provend_warn("radix: %s", err);
        }
        uv_mutex_lock(&e->bridge.mutex);
        snprintf(e->error, sizeof(e->error), "%s", err);
        uv_mutex_unlock(&e->bridge.mutex);
        return;
    }
    uv_mutex_lock(&e->bridge.mutex);
    e->ledger = (uint64_t) json_integer_value(json_object_get(
                    json_object_get(ans, "ledger_state"), "state_version"));
    e->error[0] = '\0';
    uv_mutex_unlock(&e->bridge.mutex);
    json_decref(ans);

    held = provend_bridge_lease(&e->bridge, &taken);
    if (taken) {
        uv_mutex_lock(&e->bridge.mutex);
        e->ncursors = 0;                /* another node's, maybe, since */
        uv_mutex_unlock(&e->bridge.mutex);
    }
    q = calloc(1, sizeof(*q));
    if (q == NULL) {
        return;
    }
    q->call.run = events_filters_on_loop;
    q->call.drop = events_filters_drop;
    switch (provend_bridge_ask(&e->bridge, &q->call)) {
    case 0:
        return;                         /* stopping: the loop's now */
    case 1:
        for (i = 0; q->call.ok && i < q->nfilters && !events_stopping(e);
             i++)
        {
            if (i == 0 || strcmp(q->filters[i].app,
                                 q->filters[i - 1].app) != 0)
            {
                e->app_turn = uv_hrtime();      /* each app's turn */
            }
            if (held) {
                events_filter(e, &q->filters[i]);
            } else if (events_cursor(e, &q->filters[i], err, sizeof(err))
                       == NULL)
            {
                /* another node delivers: a new filter's start is set
                 * here all the same, as soon as this node sees it */
                provend_warn("radix: %s: %s", q->filters[i].handler, err);
            }
        }
        if (q->call.ok && i == q->nfilters) {
            /* filters gone (an app removed or changed): their cursors
             * stay in storage, the same filter again goes on */
            size_t  kept;

            uv_mutex_lock(&e->bridge.mutex);
            for (i = 0, kept = 0; i < e->ncursors; i++) {
                if (e->cursors[i].seen == e->poll) {
                    e->cursors[kept++] = e->cursors[i];
                }
            }
            e->ncursors = kept;
            uv_mutex_unlock(&e->bridge.mutex);
        }
        free(q->filters);
        /* fall through */
    default:
        free(q);
    }
}


static void
events_main(provend_bridge_t *b)
{
    char                    err[PROVEN_ERR_LEN];
    radix_events_t         *e = b->data;
    provend_storage_req_t  *req;

    req = events_req(PROVEND_OP_SQL_EXECUTE, "CREATE TABLE IF NOT EXISTS "
                     "radix_cursors (key TEXT PRIMARY KEY, version INTEGER "
                     "NOT NULL, next INTEGER NOT NULL)", 0, NULL);
    if (req != NULL) {
        req->local = 1;                 /* every node makes its own */
    }
    if (events_sql(e, req, err, sizeof(err)) != PROVEN_OK) {
        provend_storage_req_free(req);
        provend_warn("radix: events not followed: %s", err);
        return;
    }
    provend_storage_req_free(req);
    while (!events_stopping(e)) {
        events_poll(e);
        provend_bridge_sleep(b, e->poll_ms);
    }
}


/* ---- the module's ------------------------------------------------------------------- */

static void
events_closed(provend_bridge_t *b)
{
    free(b->data);
}


int
provend_radix_events_start(provend_radix_t *r,
    const provend_radix_config_t *cfg, char *err, size_t errlen)
{
    radix_events_t  *e;

    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    e->r = r;
    e->poll_ms = cfg->poll_ms != 0 ? cfg->poll_ms : 2000;
    e->bridge.loop = cfg->loop;
    e->bridge.apps = cfg->apps;
    e->bridge.storage = cfg->storage;
    e->bridge.clustered = cfg->clustered;
    e->bridge.lease_name = "radix-events";
    e->bridge.lease_s = EVENTS_LEASE_S;
    e->bridge.main = events_main;
    e->bridge.data = e;
    e->bridge.closed = events_closed;
    if (provend_bridge_start(&e->bridge, err, errlen) != PROVEN_OK) {
        if (!e->bridge.closing) {
            free(e);                    /* else freed once closed */
        }
        return PROVEN_ERR;
    }
    r->events = e;
    return PROVEN_OK;
}


void
provend_radix_events_stop(provend_radix_t *r)
{
    if (r->events != NULL) {
        provend_bridge_stop(&r->events->bridge);
    }
}


void
provend_radix_events_free(provend_radix_t *r)
{
    radix_events_t  *e = r->events;

    if (e == NULL) {
        return;
    }
    provend_bridge_join(&e->bridge);
    free(e->cursors);
    free(e);
    r->events = NULL;
}


/* ---- radix.events: how the following goes ------------------------------- */

static cbor_item_t *
events_status(void *data)
{
    int              ok;
    size_t           i;
    cbor_item_t     *map, *list, *one;
    radix_events_t  *e = data;

    map = cbor_new_definite_map(5);
    list = cbor_new_definite_array(e->ncursors);
    ok = map != NULL && list != NULL
         && proven_cbor_map_put(map, "network",
                                cbor_build_uint32(e->r->network)) == PROVEN_OK
         && proven_cbor_map_put(map, "ledger",
                                cbor_build_uint64(e->ledger)) == PROVEN_OK
         && proven_cbor_map_put(map, "delivering",
                                cbor_build_bool(
                                    provend_bridge_lease_now(&e->bridge)))
            == PROVEN_OK
         && proven_cbor_map_put(map, "error",
                                cbor_build_string(e->error)) == PROVEN_OK;
    for (i = 0; ok && i < e->ncursors; i++) {
        events_cursor_t  *cur = &e->cursors[i];

        one = cbor_new_definite_map(6);
        ok = one != NULL
             && proven_cbor_map_put(one, "app",
                                    cbor_build_string(cur->app)) == PROVEN_OK
             && proven_cbor_map_put(one, "handler",
                                    cbor_build_string(cur->handler))
                == PROVEN_OK
             && proven_cbor_map_put(one, "state_version",
                                    cbor_build_uint64(cur->version))
                == PROVEN_OK
             && proven_cbor_map_put(one, "next_event",
                                    cur->next == EVENTS_DONE
                                    ? cbor_new_null()
                                    : cbor_build_uint32(cur->next))
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
        list = NULL;
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
provend_radix_op_events(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    provend_radix_t  *r = subsystem;

    (void) op;
    provend_bridge_op_status(r->events != NULL ? &r->events->bridge : NULL,
                             events_status, req->id, reply, ctx,
                             "radix_unavailable",
                             "this node follows no Radix events");
}
