/*
 * NFT scopes: an app's call may use the storage of an ERC-721 token only
 * while the call's session has linked (LinkEthereum, sessions/commands.c)
 * the address that owns it.  Who owns it is read from the contract's
 * storage, proved (eth_getProof, the same read as eth.account) at the
 * block the node follows `confirmations` below the head, never from
 * ownerOf: an eth_call's answer is the endpoint's word, a storage proof
 * is not.  So the node has to know where the contract keeps its owners:
 * the entry keccak256(token . owners_slot) of the mapping at owners_slot
 * (2 for OpenZeppelin's ERC721 and for contracts laid out like it; the
 * app says another).
 *
 *   nft.open {scope: {app}, grant, contract: "0x<40 lowercase hex>",
 *             token: "<decimal>", owners_slot?: N | "0x<64 hex>",
 *             confirmations?: 0..128 (12)}
 *     -> {chain: "eth-<chain id>", owner, block, block_hash}: the call's
 *        grant now holds the token's storage (server.c checks it)
 *     "not_owner": another address owns it, or none does
 *     "forbidden": the call's session linked no address (or it ended)
 *     "unavailable": the node follows no chain, or not far enough yet
 *     "chain_unverified": the endpoint's proof did not hold
 *     "busy": NFT_QUEUE_MAX opens wait already
 *
 * Reads run one at a time on the pool (a host holding its answers back
 * holds one thread); the others wait in order.  An owner read is kept for
 * its block: the opens of that block need no read, and a new block
 * (a transfer among them) is read anew, so a token that moved is refused
 * as soon as its transfer is `confirmations` deep.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "proven.h"
#include "chains_int.h"
#include "core/log.h"
#include "sessions/sessions.h"


#define NFT_QUEUE_MAX          64
#define NFT_QUEUE_APP_MAX      16   /* one app's: the others keep theirs */
#define NFT_CACHE              64
#define NFT_CONFIRMATIONS      12
#define NFT_CONFIRMATIONS_MAX  128


typedef struct nft_open_s  nft_open_t;

struct nft_open_s {
    nft_open_t            *next;
    provend_ops_reply_pt   reply;
    void                  *ctx;
    uint64_t               id;
    char                   app[PROVEND_NAME_MAX + 1];
    char                   grant[33];
    uint8_t                contract[20];
    char                   contract_hex[2 + 40 + 1];
    /* the scope's contract: contract_hex, and ":0x<slot>" unless the
     * owners mapping is at 2, so that storage opened by one mapping is
     * never another's (an approvals mapping read as owners) */
    char                   scope[2 + 40 + 3 + 64 + 1];
    char                   token[PROVEND_TOKEN_MAX + 1];
    uint8_t                entry[32];   /* the owners mapping's slot */
    unsigned               confirmations;
};

/* An owner proved at a block: 0 when none (value_len 0). */
typedef struct {
    int                    used;
    uint8_t                contract[20];
    uint8_t                entry[32];
    uint8_t                block[32];
    uint8_t                owner[20];
    int                    owned;
} nft_owner_t;

struct provend_nft_s {
    provend_sessions_t    *sessions;
    nft_open_t            *head, *tail;
    size_t                 queued;
    chains_read_t         *reading;     /* on the pool, or NULL */
    nft_open_t            *current;     /* whose read it is */
    nft_owner_t            cache[NFT_CACHE];
    unsigned               cache_next;
    int                    stopping;
};


static void nft_next(provend_chains_t *c);


/* ---- the token and its entry ------------------------------------------- */

/* A canonical decimal (no leading zero but "0") below 2^256, big-endian. */
static int
nft_token_bytes(const char *dec, uint8_t out[32])
{
    int       i;
    size_t    k, len;
    unsigned  v, carry;

    len = strlen(dec);
    if (len == 0 || len > PROVEND_TOKEN_MAX || (dec[0] == '0' && len > 1)) {
        return PROVEN_ERR;
    }
    memset(out, 0, 32);
    for (k = 0; k < len; k++) {
        if (dec[k] < '0' || dec[k] > '9') {
            return PROVEN_ERR;
        }
        carry = (unsigned) (dec[k] - '0');
        for (i = 31; i >= 0; i--) {
            v = out[i] * 10u + carry;
            out[i] = (uint8_t) v;
            carry = v >> 8;
        }
        if (carry != 0) {
            return PROVEN_ERR;                  /* 2^256 or more */
        }
    }
    return PROVEN_OK;
}


/* owners_slot: absent (2), a number, or 0x and 64 hex digits. */
static int
nft_owners_slot(const cbor_item_t *item, uint8_t slot[32])
{
    int       i;
    uint64_t  n;

    memset(slot, 0, 32);
    if (item == NULL) {
        slot[31] = 2;
        return PROVEN_OK;
    }
    if (cbor_isa_uint(item)) {
        if (proven_cbor_uint(item, &n) != PROVEN_OK) {
            return PROVEN_ERR;
        }
        for (i = 31; i >= 24; i--) {
            slot[i] = (uint8_t) n;
            n >>= 8;
        }
        return PROVEN_OK;
    }
    return provend_eth_cbor_hex(item, slot, 32);
}


static void
nft_scope_contract(nft_open_t *o, const uint8_t slot[32])
{
    size_t  i;
    char    hex[65];
    static const uint8_t  owners_at_2[32] = { [31] = 2 };

    if (memcmp(slot, owners_at_2, 32) == 0) {
        snprintf(o->scope, sizeof(o->scope), "%s", o->contract_hex);
        return;
    }
    proven_hex_encode(slot, 32, hex);
    for (i = 0; i < 63 && hex[i] == '0'; i++) {
        /* the shortest hex */
    }
    snprintf(o->scope, sizeof(o->scope), "%s:0x%s", o->contract_hex,
             hex + i);
}


/* ---- answers ------------------------------------------------------------ */

static void
nft_open_free(nft_open_t *o)
{
    free(o);
}


static void
nft_answer_owned(nft_open_t *o, const provend_eth_header_t *header,
    uint64_t chain_id, const uint8_t owner[20], provend_nft_t *nft)
{
    int           ok;
    char          chain[PROVEND_CHAIN_MAX + 1], hex[67], owner_hex[43];
    cbor_item_t  *map;

    snprintf(chain, sizeof(chain), "eth-%llu", (unsigned long long) chain_id);
    if (provend_sessions_grant_permit(nft->sessions, o->grant, o->app, chain,
                                      o->scope, o->token)
        != PROVEN_OK)
    {
        provend_ops_reply_error(o->reply, o->ctx, o->id, "forbidden",
                                "the call has ended, or has opened 16 NFTs "
                                "already (the most a call holds)");
        return;
    }
    provend_chains_hex(owner, 20, owner_hex);
    provend_chains_hex(header->hash, 32, hex);
    map = cbor_new_definite_map(5);
    ok = map != NULL
         && proven_cbor_map_put(map, "chain", cbor_build_string(chain))
            == PROVEN_OK
         && proven_cbor_map_put(map, "contract", cbor_build_string(o->scope))
            == PROVEN_OK
         && proven_cbor_map_put(map, "owner", cbor_build_string(owner_hex))
            == PROVEN_OK
         && proven_cbor_map_put(map, "block",
                                cbor_build_uint64(header->number))
            == PROVEN_OK
         && proven_cbor_map_put(map, "block_hash", cbor_build_string(hex))
            == PROVEN_OK;
    if (!ok && map != NULL) {
        cbor_decref(&map);
    }
    provend_ops_reply_ok(o->reply, o->ctx, o->id, map);
}


/*
 * The owner is known at header: the open is answered, the token's storage
 * granted if one of the addresses the call's session linked owns it.
 */
static void
nft_decide(provend_nft_t *nft, nft_open_t *o,
    const provend_eth_header_t *header, uint64_t chain_id,
    const nft_owner_t *known)
{
    char     msg[PROVEN_ERR_LEN], owner_hex[43];
    size_t   i, n;
    uint8_t  links[PROVEND_ETH_LINKS_MAX][20];

    n = nft->sessions != NULL
        ? provend_sessions_grant_eth(nft->sessions, o->grant, o->app, links)
        : 0;
    if (n == 0) {
        provend_ops_reply_error(o->reply, o->ctx, o->id, "forbidden",
                                "the call's session has linked no Ethereum "
                                "address (LinkEthereum), or the call ended");
        return;
    }
    for (i = 0; known->owned && i < n; i++) {
        if (memcmp(links[i], known->owner, 20) == 0) {
            nft_answer_owned(o, header, chain_id, known->owner, nft);
            return;
        }
    }
    if (known->owned) {
        /* the owner's address is public on chain: said, for the app */
        provend_chains_hex(known->owner, 20, owner_hex);
        snprintf(msg, sizeof(msg), "token %.78s of %s is owned by %s at "
                 "block %llu, not by an address this session linked",
                 o->token, o->contract_hex, owner_hex,
                 (unsigned long long) header->number);
    } else {
        snprintf(msg, sizeof(msg), "token %.78s of %s has no owner at block "
                 "%llu (not minted, or burned)", o->token, o->contract_hex,
                 (unsigned long long) header->number);
    }
    provend_ops_reply_error(o->reply, o->ctx, o->id, "not_owner", msg);
}


static nft_owner_t *
nft_cache_find(provend_nft_t *nft, const nft_open_t *o,
    const uint8_t block[32])
{
    size_t  i;

    for (i = 0; i < NFT_CACHE; i++) {
        if (nft->cache[i].used
            && memcmp(nft->cache[i].block, block, 32) == 0
            && memcmp(nft->cache[i].entry, o->entry, 32) == 0
            && memcmp(nft->cache[i].contract, o->contract, 20) == 0)
        {
            return &nft->cache[i];
        }
    }
    return NULL;
}


/* ---- the read ----------------------------------------------------------- */

static void
nft_read_done(uv_work_t *work, int status)
{
    char                   msg[PROVEN_ERR_LEN];
    nft_owner_t           *known;
    chains_read_t         *r = work->data;
    provend_chains_t      *c = r->c;
    provend_nft_t         *nft = c->nft;
    nft_open_t            *o = nft->current;

    nft->reading = NULL;
    nft->current = NULL;

    if (status != 0 || r->rc != PROVEN_OK) {
        provend_ops_reply_error(o->reply, o->ctx, o->id, "chain_unverified",
                                status != 0 ? "cancelled: the node is "
                                              "stopping" : r->err);
    } else if (r->value_lens[0] > 20) {
        snprintf(msg, sizeof(msg), "%s's slot for token %.78s holds no "
                 "address (%zu bytes): is owners_slot where the contract "
                 "keeps its owners mapping?", o->contract_hex, o->token,
                 r->value_lens[0]);
        provend_ops_reply_error(o->reply, o->ctx, o->id, "not_owner", msg);
    } else {
        known = &nft->cache[nft->cache_next];
        nft->cache_next = (nft->cache_next + 1) % NFT_CACHE;
        memset(known, 0, sizeof(*known));
        memcpy(known->contract, o->contract, 20);
        memcpy(known->entry, o->entry, 32);
        memcpy(known->block, r->header.hash, 32);
        /* an address right-aligned; an absent account's slot is zero */
        known->owned = r->exists && r->value_lens[0] > 0;
        memcpy(known->owner + 20 - r->value_lens[0], r->values[0],
               r->value_lens[0]);
        known->used = 1;
        nft_decide(nft, o, &r->header, c->chain_id, known);
    }
    nft_open_free(o);
    free(r);
    nft_next(c);
}


/* The next open waiting: answered from what is known, or read. */
static void
nft_next(provend_chains_t *c)
{
    char                  why[PROVEN_ERR_LEN];
    nft_open_t           *o;
    nft_owner_t          *known;
    chains_read_t        *r;
    provend_nft_t        *nft = c->nft;
    provend_eth_header_t  header;

    while (nft->reading == NULL && nft->head != NULL) {
        o = nft->head;
        nft->head = o->next;
        if (nft->head == NULL) {
            nft->tail = NULL;
        }
        nft->queued--;

        if (nft->stopping || c->cancel) {
            provend_ops_reply_error(o->reply, o->ctx, o->id, "unavailable",
                                    "the node is stopping");
            nft_open_free(o);
            continue;
        }
        /* the block as it is now: one that waited reads the newest */
        if (provend_follow_header(c, o->confirmations, &header, why,
                                  sizeof(why)) != PROVEN_OK)
        {
            provend_ops_reply_error(o->reply, o->ctx, o->id, "unavailable",
                                    why);
            nft_open_free(o);
            continue;
        }
        known = nft_cache_find(nft, o, header.hash);
        if (known != NULL) {
            nft_decide(nft, o, &header, c->chain_id, known);
            nft_open_free(o);
            continue;
        }

        r = calloc(1, sizeof(*r));
        if (r == NULL) {
            provend_ops_reply_error(o->reply, o->ctx, o->id, "internal",
                                    "out of memory");
            nft_open_free(o);
            continue;
        }
        memcpy(r->slots[0], o->entry, 32);
        r->nslots = 1;
        if (provend_chains_read_at(c, r, o->contract, &header, nft_read_done)
            != PROVEN_OK)
        {
            free(r);
            provend_ops_reply_error(o->reply, o->ctx, o->id, "internal",
                                    "cannot start the read");
            nft_open_free(o);
            continue;
        }
        nft->reading = r;
        nft->current = o;
    }
}


static size_t
nft_queued_of(const provend_nft_t *nft, const char *app)
{
    size_t             n;
    const nft_open_t  *o;

    n = 0;
    for (o = nft->head; o != NULL; o = o->next) {
        n += strcmp(o->app, app) == 0;
    }
    return n;
}


/* ---- the op ------------------------------------------------------------- */

void
provend_nft_op_open(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    size_t             n;
    uint8_t            buf[64], links[PROVEND_ETH_LINKS_MAX][20];
    uint64_t           confirmations;
    nft_open_t        *o;
    cbor_item_t       *scope, *conf;
    provend_chains_t  *c = subsystem;
    provend_nft_t     *nft = c->nft;
    const char        *bad;

    (void) op;
    o = calloc(1, sizeof(*o));
    if (o == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    o->reply = reply;
    o->ctx = ctx;
    o->id = req->id;
    o->confirmations = NFT_CONFIRMATIONS;
    scope = proven_cbor_map_get(req->map, "scope");
    conf = proven_cbor_map_get(req->map, "confirmations");
    bad = NULL;

    /* the app: server.c has checked it is the worker's own */
    if (scope == NULL || !cbor_isa_map(scope)
        || proven_cbor_text_into(proven_cbor_map_get(scope, "app"), o->app,
                                 sizeof(o->app)) != PROVEN_OK)
    {
        bad = "\"scope\" must be {\"app\": the app}";
    } else if (proven_cbor_text_into(proven_cbor_map_get(req->map, "grant"),
                                     o->grant, sizeof(o->grant))
               != PROVEN_OK)
    {
        bad = "\"grant\" must be the call's grant";
    } else if (proven_cbor_text_into(proven_cbor_map_get(req->map,
                                                         "contract"),
                                     o->contract_hex,
                                     sizeof(o->contract_hex)) != PROVEN_OK
               || strncmp(o->contract_hex, "0x", 2) != 0
               || strlen(o->contract_hex) != 42
               || strspn(o->contract_hex + 2, "0123456789abcdef") != 40
               || proven_hex_decode(o->contract_hex + 2, 40, o->contract, 20,
                                    &n) != PROVEN_OK)
    {
        bad = "\"contract\" must be 0x and 40 lowercase hex digits";
    } else if (proven_cbor_text_into(proven_cbor_map_get(req->map, "token"),
                                     o->token, sizeof(o->token)) != PROVEN_OK
               || nft_token_bytes(o->token, buf) != PROVEN_OK)
    {
        bad = "\"token\" must be the token's id in decimal, below 2^256, "
              "without leading zeros";
    } else if (nft_owners_slot(proven_cbor_map_get(req->map, "owners_slot"),
                               buf + 32) != PROVEN_OK)
    {
        bad = "\"owners_slot\" must be a slot number or 0x and 64 hex digits";
    } else if (conf != NULL
               && (proven_cbor_uint(conf, &confirmations) != PROVEN_OK
                   || confirmations > NFT_CONFIRMATIONS_MAX))
    {
        bad = "\"confirmations\" must be 0 to 128";
    }
    if (bad != NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", bad);
        nft_open_free(o);
        return;
    }
    if (conf != NULL) {
        o->confirmations = (unsigned) confirmations;
    }
    /* Solidity's mapping entry: keccak256(key . slot), both 32 bytes */
    provend_keccak256(buf, 64, o->entry);
    nft_scope_contract(o, buf + 32);

    /* refused now when no read could change the answer */
    if (nft->sessions == NULL
        || provend_sessions_grant_eth(nft->sessions, o->grant, o->app, links)
           == 0)
    {
        provend_ops_reply_error(reply, ctx, req->id, "forbidden",
                                "NFT storage is for a call from a session "
                                "that linked the owner's Ethereum address "
                                "(LinkEthereum)");
        nft_open_free(o);
        return;
    }
    if (c->chain_id == 0) {
        /* the scope's name: the operator's word, never the endpoint's */
        provend_ops_reply_error(reply, ctx, req->id, "unavailable",
                                "NFT scopes need the chain's id in the "
                                "node's configuration (--eth-chain-id)");
        nft_open_free(o);
        return;
    }
    if (nft->stopping || c->cancel) {
        provend_ops_reply_error(reply, ctx, req->id, "unavailable",
                                "the node is stopping");
        nft_open_free(o);
        return;
    }
    if (nft->queued >= NFT_QUEUE_MAX
        || nft_queued_of(nft, o->app) >= NFT_QUEUE_APP_MAX)
    {
        provend_ops_reply_error(reply, ctx, req->id, "busy",
                                nft->queued >= NFT_QUEUE_MAX
                                ? "64 NFT ownership reads wait already"
                                : "16 of this app's NFT ownership reads "
                                  "wait already");
        nft_open_free(o);
        return;
    }
    if (nft->tail != NULL) {
        nft->tail->next = o;
    } else {
        nft->head = o;
    }
    nft->tail = o;
    nft->queued++;
    nft_next(c);
}


/* ---- the module --------------------------------------------------------- */

int
provend_nft_open(provend_chains_t *c, const provend_chains_config_t *cfg,
    char *err, size_t errlen)
{
    c->nft = calloc(1, sizeof(*c->nft));
    if (c->nft == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }
    c->nft->sessions = cfg->sessions;
    return PROVEN_OK;
}


void
provend_nft_stop(provend_chains_t *c)
{
    if (c->nft == NULL) {
        return;
    }
    c->nft->stopping = 1;
    if (c->nft->reading != NULL) {
        (void) uv_cancel((uv_req_t *) &c->nft->reading->work);
    }
    /* those waiting are answered now, the one reading when it ends */
    if (c->nft->reading == NULL) {
        nft_next(c);
    }
}


void
provend_nft_free(provend_chains_t *c)
{
    nft_open_t  *o;

    if (c->nft == NULL) {
        return;
    }
    while (c->nft->head != NULL) {
        o = c->nft->head;
        c->nft->head = o->next;
        nft_open_free(o);
    }
    free(c->nft);
    c->nft = NULL;
}
