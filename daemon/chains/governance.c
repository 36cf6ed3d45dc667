/*
 * Governance: the measurements a cluster's nodes may run, as a contract on
 * chain says (tests/chains/contracts/Governance.sol), read here with
 * storage proofs at the block the node follows `confirmations` below the
 * head, again every `every_ms`.  The contract keeps them as
 *
 *   bytes32[] allowed;   // slot 0: its length; keccak256(0) + i: each
 *
 * each keccak256(PCR0 || PCR1 || PCR2) of an image (48 bytes each).  The
 * cluster asks provend_governance_allows() from any thread (admissions on
 * the pool, cluster-key requests on libnats' thread) and is told on the
 * loop when the set has changed (a removed measurement's peers dropped).
 *
 * What it proves is what eth.account proves: the set is in the contract's
 * storage at a block linked by parent hashes to the checkpoint; which
 * chain past the checkpoint is canonical is the endpoint's word, so a
 * host running the endpoint can hold back a change (serve an older
 * chain), never make one the owners did not.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "proven.h"
#include "chains_int.h"
#include "core/log.h"


#define GOV_SLOTS_PER_READ  CHAINS_SLOTS_MAX


struct provend_gov_s {
    uint8_t                contract[20];
    char                   contract_hex[43];
    unsigned               confirmations;
    uint64_t               every_ms;
    uv_timer_t             timer;
    int                    timer_open;
    chains_read_t         *reading;

    /* a read in parts: the header, the count, what came so far */
    provend_eth_header_t   header;
    uint64_t               count;
    size_t                 got;
    uint8_t                next[PROVEND_GOV_MAX][32];

    void                 (*changed)(void *data);
    void                  *changed_data;

    uv_mutex_t             mutex;       /* all below: any thread reads */
    int                    loaded;
    size_t                 n;
    uint8_t                allowed[PROVEND_GOV_MAX][32];
    uint64_t               block;
    uint8_t                block_hash[32];
    uint64_t               reads;
    char                   error[PROVEN_ERR_LEN];
};


static void gov_read(provend_chains_t *c);


/* slot + i, 256-bit big-endian */
static void
gov_slot_add(const uint8_t base[32], uint64_t i, uint8_t out[32])
{
    int       k;
    unsigned  sum, carry;

    carry = 0;
    for (k = 31; k >= 0; k--) {
        sum = base[k] + (unsigned) (i & 0xff) + carry;
        out[k] = (uint8_t) sum;
        carry = sum >> 8;
        i >>= 8;
    }
}


static void
gov_failed(provend_gov_t *g, const char *why)
{
    uv_mutex_lock(&g->mutex);
    if (strcmp(g->error, why) != 0) {
        provend_warn("chains: governance %s: %s", g->contract_hex, why);
    }
    snprintf(g->error, sizeof(g->error), "%s", why);
    uv_mutex_unlock(&g->mutex);
}


/* A part read: the next part asked for, or the whole set published. */
static void
gov_read_done(uv_work_t *work, int status)
{
    int                 same;
    char                msg[PROVEN_ERR_LEN];
    size_t              i, first;
    chains_read_t      *r = work->data;
    provend_chains_t   *c = r->c;
    provend_gov_t      *g = c->gov;

    g->reading = NULL;
    if (status != 0 || r->rc != PROVEN_OK) {
        gov_failed(g, status != 0 ? "cancelled" : r->err);
        free(r);
        return;
    }
    if (!r->exists) {
        snprintf(msg, sizeof(msg), "no contract at %s at block %llu",
                 g->contract_hex, (unsigned long long) r->header.number);
        gov_failed(g, msg);
        free(r);
        return;
    }

    first = 0;
    if (g->got == 0 && g->count == UINT64_MAX) {
        /* the first part: the count, then the first elements */
        if (r->value_lens[0] > 8) {
            g->count = UINT64_MAX - 1;
        } else {
            g->count = 0;
            for (i = 0; i < r->value_lens[0]; i++) {
                g->count = g->count << 8 | r->values[0][i];
            }
        }
        if (g->count > PROVEND_GOV_MAX) {
            snprintf(msg, sizeof(msg), "the contract allows more than %d "
                     "measurements: none taken", PROVEND_GOV_MAX);
            gov_failed(g, msg);
            free(r);
            return;
        }
        first = 1;
    }
    for (i = first; i < r->nslots && g->got < g->count; i++) {
        memset(g->next[g->got], 0, 32);
        memcpy(g->next[g->got] + 32 - r->value_lens[i], r->values[i],
               r->value_lens[i]);
        g->got++;
    }
    free(r);
    if (g->got < g->count) {
        gov_read(c);
        return;
    }

    uv_mutex_lock(&g->mutex);
    same = g->loaded && g->n == g->count
           && memcmp(g->allowed, g->next, g->n * 32) == 0;
    g->n = g->count;
    memcpy(g->allowed, g->next, g->n * 32);
    g->block = g->header.number;
    memcpy(g->block_hash, g->header.hash, 32);
    g->loaded = 1;
    g->reads++;
    if (g->error[0] != '\0') {
        provend_info("chains: governance %s read again", g->contract_hex);
    }
    g->error[0] = '\0';
    uv_mutex_unlock(&g->mutex);

    /* read again every every_ms from now on */
    uv_timer_set_repeat(&g->timer, g->every_ms);

    if (!same) {
        provend_info("chains: governance %s allows %zu measurement%s at "
                     "block %llu", g->contract_hex, (size_t) g->count,
                     g->count == 1 ? "" : "s",
                     (unsigned long long) g->header.number);
        if (g->changed != NULL) {
            g->changed(g->changed_data);
        }
    }
}


/* The next part of the read under way (g->header, g->got). */
static void
gov_read(provend_chains_t *c)
{
    size_t          k;
    uint8_t         zero[32], base[32];
    chains_read_t  *r;
    provend_gov_t  *g = c->gov;

    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        gov_failed(g, "out of memory");
        return;
    }
    memset(zero, 0, sizeof(zero));
    provend_keccak256(zero, 32, base);     /* the array's elements */
    r->nslots = 0;
    if (g->got == 0 && g->count == UINT64_MAX) {
        memset(r->slots[r->nslots++], 0, 32);       /* its length */
    }
    for (k = g->got; r->nslots < GOV_SLOTS_PER_READ && k < PROVEND_GOV_MAX
                     && (g->count == UINT64_MAX || k < g->count); k++)
    {
        gov_slot_add(base, k, r->slots[r->nslots++]);
    }
    if (provend_chains_read_at(c, r, g->contract, &g->header, gov_read_done)
        != PROVEN_OK)
    {
        free(r);
        gov_failed(g, "cannot start the read");
        return;
    }
    g->reading = r;
}


static void
gov_on_timer(uv_timer_t *timer)
{
    char               why[PROVEN_ERR_LEN];
    provend_chains_t  *c = timer->data;
    provend_gov_t     *g = c->gov;

    if (g->reading != NULL || c->cancel) {
        return;
    }
    if (provend_follow_header(c, g->confirmations, &g->header, why,
                              sizeof(why)) != PROVEN_OK)
    {
        gov_failed(g, why);
        return;
    }
    g->count = UINT64_MAX;                  /* not known yet */
    g->got = 0;
    gov_read(c);
}


/* ---- what others ask ------------------------------------------------------ */

int
provend_governance_allows(provend_chains_t *c, const uint8_t hash[32],
    char *why, size_t whylen)
{
    int             ok;
    size_t          i;
    char            hex[67];
    provend_gov_t  *g = c != NULL ? c->gov : NULL;

    if (g == NULL) {
        proven_errf(why, whylen, "this node reads no governance contract");
        return 0;
    }
    ok = 0;
    uv_mutex_lock(&g->mutex);
    for (i = 0; g->loaded && i < g->n; i++) {
        if (memcmp(g->allowed[i], hash, 32) == 0) {
            ok = 1;
            break;
        }
    }
    if (!ok) {
        provend_chains_hex(hash, 32, hex);
        if (!g->loaded) {
            proven_errf(why, whylen, "the governance contract is not read "
                        "yet: %s", g->error[0] != '\0' ? g->error
                                                       : "waiting");
        } else {
            proven_errf(why, whylen, "its measurement %s is not one the "
                        "governance contract %s allows at block %llu", hex,
                        g->contract_hex, (unsigned long long) g->block);
        }
    }
    uv_mutex_unlock(&g->mutex);
    return ok;
}


int
provend_governance_on(provend_chains_t *c)
{
    return c != NULL && c->gov != NULL;
}


void
provend_governance_watch(provend_chains_t *c, void (*changed)(void *data),
    void *data)
{
    if (c != NULL && c->gov != NULL) {
        c->gov->changed = changed;
        c->gov->changed_data = data;
    }
}


void
provend_governance_op_status(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    int                ok;
    char               hex[67];
    size_t             i;
    cbor_item_t       *map, *list, *item;
    provend_chains_t  *c = subsystem;
    provend_gov_t     *g = c->gov;

    (void) op;
    if (g == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "unavailable",
                                "this node reads no governance contract "
                                "(--governance)");
        return;
    }
    map = cbor_new_definite_map(6);
    uv_mutex_lock(&g->mutex);
    list = cbor_new_definite_array(g->n);
    ok = map != NULL && list != NULL
         && proven_cbor_map_put(map, "contract",
                                cbor_build_string(g->contract_hex))
            == PROVEN_OK
         && proven_cbor_map_put(map, "loaded", cbor_build_bool(g->loaded))
            == PROVEN_OK
         && proven_cbor_map_put(map, "block", cbor_build_uint64(g->block))
            == PROVEN_OK
         && proven_cbor_map_put(map, "reads", cbor_build_uint64(g->reads))
            == PROVEN_OK
         && proven_cbor_map_put(map, "error", g->error[0] != '\0'
                                ? cbor_build_string(g->error)
                                : cbor_new_null()) == PROVEN_OK;
    for (i = 0; ok && i < g->n; i++) {
        provend_chains_hex(g->allowed[i], 32, hex);
        item = cbor_build_string(hex);
        ok = item != NULL && cbor_array_push(list, item);
        if (item != NULL) {
            cbor_decref(&item);
        }
    }
    uv_mutex_unlock(&g->mutex);
    if (ok) {
        ok = proven_cbor_map_put(map, "allowed", list) == PROVEN_OK;
        list = NULL;
    }
    if (list != NULL) {
        cbor_decref(&list);
    }
    if (!ok && map != NULL) {
        cbor_decref(&map);
    }
    provend_ops_reply_ok(reply, ctx, req->id, map);
}


/* ---- the module --------------------------------------------------------------- */

int
provend_governance_open(provend_chains_t *c,
    const provend_chains_config_t *cfg, char *err, size_t errlen)
{
    size_t          n;
    provend_gov_t  *g;

    if (cfg->governance == NULL) {
        return PROVEN_OK;
    }
    if (cfg->apps == NULL || cfg->storage == NULL) {
        proven_errf(err, errlen, "--governance: the node must follow the "
                    "chain (apps and storage) to read it");
        return PROVEN_ERR;
    }
    g = calloc(1, sizeof(*g));
    if (g == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    if (strncmp(cfg->governance, "0x", 2) != 0
        || strlen(cfg->governance) != 42
        || proven_hex_decode(cfg->governance + 2, 40, g->contract, 20, &n)
           != PROVEN_OK || n != 20
        || cfg->governance_confirmations > 128)
    {
        free(g);
        proven_errf(err, errlen, "--governance: a contract's address (0x and "
                    "40 hex digits); --governance-confirmations 0 to 128");
        return PROVEN_ERR;
    }
    provend_chains_hex(g->contract, 20, g->contract_hex);
    g->confirmations = cfg->governance_confirmations;
    g->every_ms = cfg->governance_every_s != 0
                  ? (uint64_t) cfg->governance_every_s * 1000 : 60000;
    if (uv_mutex_init(&g->mutex) != 0
        || uv_timer_init(c->loop, &g->timer) != 0)
    {
        free(g);
        proven_errf(err, errlen, "governance: cannot make its timer");
        return PROVEN_ERR;
    }
    g->timer.data = c;
    g->timer_open = 1;
    c->gov = g;
    /* at once (the follower may not be there yet: tried each second until
     * the first read), then every every_ms */
    uv_timer_start(&g->timer, gov_on_timer, 1000, 1000);
    provend_info("chains: governance from %s, %u confirmations, read every "
                 "%llu s", g->contract_hex, g->confirmations,
                 (unsigned long long) (g->every_ms / 1000));
    return PROVEN_OK;
}


void
provend_governance_stop(provend_chains_t *c)
{
    provend_gov_t  *g = c->gov;

    if (g == NULL) {
        return;
    }
    if (g->timer_open) {
        uv_timer_stop(&g->timer);
        uv_close((uv_handle_t *) &g->timer, NULL);
        g->timer_open = 0;
    }
    if (g->reading != NULL) {
        (void) uv_cancel((uv_req_t *) &g->reading->work);
    }
}


void
provend_governance_free(provend_chains_t *c)
{
    if (c->gov == NULL) {
        return;
    }
    uv_mutex_destroy(&c->gov->mutex);
    free(c->gov);
    c->gov = NULL;
}
