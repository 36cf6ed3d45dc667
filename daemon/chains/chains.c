/*
 * Reads of an Ethereum chain, each proved here (chains.h): eth.account.
 * A read runs on libuv's thread pool (blocking libcurl, 10 s for the
 * whole read) and answers when done; one at a time, so that a host
 * holding the endpoint's answers back holds one of the pool's threads at
 * most (attestations and sessions use the others).  The checkpoint's
 * header, once proved, is kept: it never changes.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "proven.h"
#include "fetch/proven_fetch.h"
#include "chains_int.h"
#include "core/log.h"


/* ---- the endpoint ------------------------------------------------------------ */

json_t *
provend_chains_call(provend_chains_t *c, uint64_t deadline,
    const char *method, json_t *params, size_t max, char *err, size_t errlen)
{
    char      why[PROVEN_ERR_LEN];
    uint64_t  now;

    char                *body;
    json_t              *req, *ans, *result;
    json_error_t         jerr;
    proven_fetch_t       f;
    proven_fetch_opts_t  fo;

    req = json_pack("{s:s, s:i, s:s, s:o}", "jsonrpc", "2.0", "id", 1,
                    "method", method, "params", params);
    body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    now = uv_hrtime();
    if (body == NULL || now >= deadline) {
        free(body);
        proven_errf(err, errlen, body == NULL ? "out of memory"
                    : "%s: no time left of the read's 10 s", method);
        return NULL;
    }
    memset(&fo, 0, sizeof(fo));
    fo.timeout_ms = (long) ((deadline - now) / 1000000) + 1;
    fo.cancel = &c->cancel;
    fo.max = max;
    fo.accept = "application/json";
    fo.post = body;
    fo.post_len = strlen(body);
    fo.content_type = "application/json";
    fo.proxy = c->proxy[0] != '\0' ? c->proxy : NULL;
    if (proven_fetch(c->rpc, &fo, &f, why, sizeof(why)) != PROVEN_OK) {
        free(body);
        proven_fetch_free(&f);
        proven_errf(err, errlen, "%s: %.200s", method, why);
        return NULL;
    }
    free(body);
    ans = f.status == 200 ? json_loadb((const char *) f.body, f.len, 0, &jerr)
                          : NULL;
    result = json_object_get(ans, "result");
    if (result == NULL || json_is_null(result)) {
        size_t       i;
        char         said[121];
        const char  *e;

        /* the endpoint's words, printable ASCII only, said as its */
        e = json_string_value(json_object_get(json_object_get(ans, "error"),
                                              "message"));
        for (i = 0; e != NULL && e[i] != '\0' && i < sizeof(said) - 1; i++) {
            said[i] = e[i] >= 0x20 && e[i] < 0x7f ? e[i] : '?';
        }
        said[i] = '\0';
        proven_errf(err, errlen, "%s: %s%s", method,
                    f.status != 200 ? "HTTP status not 200"
                    : ans == NULL ? "the answer is not JSON"
                    : e != NULL ? "the endpoint said: " : "no result",
                    e != NULL ? said : "");
        json_decref(ans);
        proven_fetch_free(&f);
        return NULL;
    }
    json_incref(result);
    json_decref(ans);
    proven_fetch_free(&f);
    return result;
}


void
provend_chains_hex(const uint8_t *in, size_t len, char *out)
{
    out[0] = '0';
    out[1] = 'x';
    proven_hex_encode(in, len, out + 2);
}


/* A proof's nodes from a JSON array of "0x..." texts (freed by caller). */
static int
chains_nodes(json_t *array, provend_eth_node_t *nodes, uint8_t **bytes,
    size_t *n)
{
    size_t       i, len;
    const char  *t;

    *n = 0;
    if (!json_is_array(array)
        || json_array_size(array) > PROVEND_ETH_PROOF_MAX)
    {
        return PROVEN_ERR;
    }
    *n = json_array_size(array);
    for (i = 0; i < *n; i++) {
        t = json_string_value(json_array_get(array, i));
        bytes[i] = t != NULL && strncmp(t, "0x", 2) == 0
                   && strlen(t) <= 2 + 2 * PROVEND_ETH_NODE_MAX
                   ? malloc(PROVEND_ETH_NODE_MAX) : NULL;
        if (bytes[i] == NULL
            || proven_hex_decode(t + 2, strlen(t + 2), bytes[i],
                                 PROVEND_ETH_NODE_MAX, &len) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        nodes[i].data = bytes[i];
        nodes[i].len = len;
    }
    return PROVEN_OK;
}


static void
chains_nodes_free(uint8_t **bytes, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        free(bytes[i]);
        bytes[i] = NULL;
    }
}


/* ---- a read ------------------------------------------------------------------ */

void
provend_chains_read_work(uv_work_t *work)
{
    int                  rc;
    char                 hex[67], block[24];
    size_t               i, n, used;
    json_t              *params, *got, *proofs, *sp;
    uint8_t             *bytes[PROVEND_ETH_PROOF_MAX];
    chains_read_t       *r = work->data;
    provend_chains_t    *c = r->c;
    provend_rlp_t        value, number;
    provend_eth_node_t   nodes[PROVEND_ETH_PROOF_MAX];

    r->rc = PROVEN_ERR;
    memset(bytes, 0, sizeof(bytes));
    n = 0;

    /* the checkpoint's header, hashed here: the endpoint's word is not
     * taken for which block it is (once proved, r->header came kept) */
    if (!r->have_header) {
        got = provend_chains_call(c, r->deadline, "eth_getBlockByHash",
                          json_pack("[s, b]", c->checkpoint_hex, 0),
                          CHAINS_ANSWER_MAX, r->err, sizeof(r->err));
        if (got == NULL) {
            return;
        }
        rc = provend_eth_header(got, &r->header, r->err, sizeof(r->err));
        json_decref(got);
        if (rc != PROVEN_OK) {
            return;
        }
        if (memcmp(r->header.hash, c->checkpoint, 32) != 0) {
            proven_errf(r->err, sizeof(r->err), "the endpoint's header for "
                        "the checkpoint hashes to another block");
            return;
        }
    }

    params = json_array();
    provend_chains_hex(r->address, 20, hex);
    json_array_append_new(params, json_string(hex));
    json_array_append_new(params, json_array());
    for (i = 0; i < r->nslots; i++) {
        provend_chains_hex(r->slots[i], 32, hex);
        json_array_append_new(json_array_get(params, 1), json_string(hex));
    }
    snprintf(block, sizeof(block), "0x%llx",
             (unsigned long long) r->header.number);
    json_array_append_new(params, json_string(block));
    got = provend_chains_call(c, r->deadline, "eth_getProof", params,
                              CHAINS_ANSWER_MAX, r->err, sizeof(r->err));
    if (got == NULL) {
        return;
    }

    /* the account, from the checkpoint's state root */
    if (chains_nodes(json_object_get(got, "accountProof"), nodes, bytes, &n)
        != PROVEN_OK)
    {
        proven_errf(r->err, sizeof(r->err), "eth_getProof: accountProof is "
                    "not a list of hex nodes");
        goto done;
    }
    rc = provend_mpt_get(r->header.state_root, nodes, n, r->address, 20,
                         &value, r->err, sizeof(r->err));
    if (rc == PROVEN_ERR) {
        goto done;
    }
    r->exists = rc == PROVEN_OK;
    if (r->exists && provend_eth_account(&value, &r->account) != PROVEN_OK) {
        proven_errf(r->err, sizeof(r->err), "the proved account is not "
                    "[nonce, balance, storageRoot, codeHash]");
        goto done;
    }
    chains_nodes_free(bytes, n);
    n = 0;

    /* each slot, from the account's storage root (none: all zero) */
    proofs = json_object_get(got, "storageProof");
    if (r->exists && (!json_is_array(proofs)
                      || json_array_size(proofs) != r->nslots))
    {
        proven_errf(r->err, sizeof(r->err), "eth_getProof: %zu storage "
                    "proofs for %zu slots", json_array_size(proofs),
                    r->nslots);
        goto done;
    }
    for (i = 0; r->exists && i < r->nslots; i++) {
        /* the slot is the one asked for: the endpoint's "key" not read */
        sp = json_array_get(proofs, i);
        if (chains_nodes(json_object_get(sp, "proof"), nodes, bytes, &n)
            != PROVEN_OK)
        {
            proven_errf(r->err, sizeof(r->err), "eth_getProof: a storage "
                        "proof is not a list of hex nodes");
            goto done;
        }
        rc = provend_mpt_get(r->account.storage_root, nodes, n, r->slots[i],
                             32, &value, r->err, sizeof(r->err));
        if (rc == PROVEN_ERR) {
            goto done;
        }
        r->value_lens[i] = 0;
        if (rc == PROVEN_OK) {
            /* the leaf holds the RLP of a number of 32 bytes at most */
            if (provend_rlp_item(value.data, value.len, &number, &used)
                != PROVEN_OK || used != value.len || number.list
                || number.len > 32
                || (number.len > 0 && number.data[0] == 0))
            {
                proven_errf(r->err, sizeof(r->err), "slot %zu's proved "
                            "value is not a number", i);
                goto done;
            }
            memcpy(r->values[i], number.data, number.len);
            r->value_lens[i] = number.len;
        }
        chains_nodes_free(bytes, n);
        n = 0;
    }
    r->rc = PROVEN_OK;

done:

    chains_nodes_free(bytes, n);
    json_decref(got);
}


int
provend_chains_read_at(provend_chains_t *c, chains_read_t *r,
    const uint8_t address[20], const provend_eth_header_t *header,
    uv_after_work_cb done)
{
    r->c = c;
    memcpy(r->address, address, 20);
    r->header = *header;
    r->have_header = 1;
    r->followed = 1;
    r->deadline = uv_hrtime() + CHAINS_TIMEOUT_MS * 1000000ULL;
    r->work.data = r;
    return uv_queue_work(c->loop, &r->work, provend_chains_read_work, done)
           == 0 ? PROVEN_OK : PROVEN_ERR;
}


/* A number's bytes as 0x hex without leading zeros ("0x0" for none). */
static cbor_item_t *
chains_quantity(const uint8_t *p, size_t len)
{
    char  hex[2 + 64 + 1];

    if (len == 0) {
        return cbor_build_string("0x0");
    }
    provend_chains_hex(p, len, hex);
    /* one leading zero digit of the first byte dropped, as JSON-RPC */
    if (hex[2] == '0') {
        memmove(hex + 2, hex + 3, strlen(hex + 3) + 1);
    }
    return cbor_build_string(hex);
}


static void
chains_read_done(uv_work_t *work, int status)
{
    int                ok;
    char               hex[67];
    size_t             i;
    cbor_item_t       *map, *acct, *slots;
    chains_read_t     *r = work->data;

    r->c->work = NULL;
    if (r->rc == PROVEN_OK && status == 0 && !r->c->have_header
        && !r->followed)
    {
        r->c->header = r->header;       /* proved: kept */
        r->c->have_header = 1;
    }
    if (status != 0 || r->rc != PROVEN_OK) {
        provend_ops_reply_error(r->reply, r->ctx, r->id, "chain_unverified",
                                status != 0 ? "cancelled" : r->err);
        free(r);
        return;
    }
    map = cbor_new_definite_map(4);
    slots = cbor_new_definite_map(r->nslots);
    acct = r->exists ? cbor_new_definite_map(4) : cbor_new_null();
    provend_chains_hex(r->header.hash, 32, hex);
    ok = map != NULL && slots != NULL && acct != NULL
         && proven_cbor_map_put(map, "block",
                                cbor_build_uint64(r->header.number))
            == PROVEN_OK
         && proven_cbor_map_put(map, "block_hash", cbor_build_string(hex))
            == PROVEN_OK;
    if (ok && r->exists) {
        provend_chains_hex(r->account.storage_root, 32, hex);
        ok = proven_cbor_map_put(acct, "nonce",
                                 chains_quantity(r->account.nonce,
                                                 r->account.nonce_len))
             == PROVEN_OK
             && proven_cbor_map_put(acct, "balance",
                                    chains_quantity(r->account.balance,
                                                    r->account.balance_len))
                == PROVEN_OK
             && proven_cbor_map_put(acct, "storage_root",
                                    cbor_build_string(hex)) == PROVEN_OK;
        provend_chains_hex(r->account.code_hash, 32, hex);
        ok = ok && proven_cbor_map_put(acct, "code_hash",
                                       cbor_build_string(hex)) == PROVEN_OK;
    }
    /* an absent account's slots: proved zero with it (value_lens 0) */
    for (i = 0; ok && i < r->nslots; i++) {
        provend_chains_hex(r->slots[i], 32, hex);
        ok = proven_cbor_map_put(slots, hex,
                                 chains_quantity(r->values[i],
                                                 r->value_lens[i]))
             == PROVEN_OK;
    }
    if (ok) {
        ok = proven_cbor_map_put(map, "account", acct) == PROVEN_OK;
        acct = NULL;
        ok = proven_cbor_map_put(map, "slots", slots) == PROVEN_OK && ok;
        slots = NULL;
    }
    if (acct != NULL) {
        cbor_decref(&acct);
    }
    if (slots != NULL) {
        cbor_decref(&slots);
    }
    if (!ok && map != NULL) {
        cbor_decref(&map);
    }
    provend_ops_reply_ok(r->reply, r->ctx, r->id, map);
    free(r);
}


/* "0x" and exactly len bytes of hex, from a CBOR text (a request's or a
 * manifest's argument). */
int
provend_eth_cbor_hex(const cbor_item_t *item, uint8_t *out, size_t len)
{
    char    text[2 + 64 + 1];
    size_t  n;

    if (item == NULL || len > 32
        || proven_cbor_text_into(item, text, sizeof(text)) != PROVEN_OK
        || strncmp(text, "0x", 2) != 0 || strlen(text) != 2 + 2 * len
        || proven_hex_decode(text + 2, 2 * len, out, len, &n) != PROVEN_OK
        || n != len)
    {
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


static void
chains_op_account(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    char               why[PROVEN_ERR_LEN];
    size_t             i;
    uint64_t           confirmations;
    cbor_item_t       *slots, *conf;
    chains_read_t     *r;
    provend_chains_t  *c = subsystem;

    (void) op;
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    if (provend_eth_cbor_hex(proven_cbor_map_get(req->map, "address"), r->address,
                       20) != PROVEN_OK)
    {
        free(r);
        provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                "\"address\" must be 0x and 40 hex digits");
        return;
    }
    slots = proven_cbor_map_get(req->map, "slots");
    if (slots != NULL
        && (!cbor_isa_array(slots) || cbor_array_size(slots)
                                      > CHAINS_SLOTS_MAX))
    {
        free(r);
        provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                "\"slots\" must be a list of 16 slots at "
                                "most");
        return;
    }
    r->nslots = slots != NULL ? cbor_array_size(slots) : 0;
    for (i = 0; i < r->nslots; i++) {
        if (provend_eth_cbor_hex(cbor_array_handle(slots)[i], r->slots[i], 32)
            != PROVEN_OK)
        {
            free(r);
            provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                    "each slot must be 0x and 64 hex digits "
                                    "(32 bytes, left-padded)");
            return;
        }
    }
    for (i = 1; i < r->nslots; i++) {
        size_t  j;

        for (j = 0; j < i; j++) {
            if (memcmp(r->slots[i], r->slots[j], 32) == 0) {
                free(r);
                provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                        "a slot asked for twice");
                return;
            }
        }
    }
    if (c->work != NULL || c->cancel) {
        free(r);
        provend_ops_reply_error(reply, ctx, req->id, "busy",
                                c->cancel ? "the node is stopping"
                                          : "a read of the chain is under "
                                            "way: one at a time");
        return;
    }
    r->c = c;
    r->deadline = uv_hrtime() + CHAINS_TIMEOUT_MS * 1000000ULL;
    r->have_header = c->have_header;
    r->header = c->header;

    /* at a followed block: that many confirmations below the head */
    conf = proven_cbor_map_get(req->map, "confirmations");
    if (conf != NULL) {
        if (proven_cbor_uint(conf, &confirmations) != PROVEN_OK
            || confirmations > 128)
        {
            free(r);
            provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                    "\"confirmations\" must be 0 to 128");
            return;
        }
        if (provend_follow_header(c, (unsigned) confirmations, &r->header,
                                  why, sizeof(why)) != PROVEN_OK)
        {
            free(r);
            provend_ops_reply_error(reply, ctx, req->id, "unavailable",
                                    why);
            return;
        }
        r->have_header = 1;
        r->followed = 1;
    }
    r->reply = reply;
    r->ctx = ctx;
    r->id = req->id;
    r->work.data = r;
    if (uv_queue_work(c->loop, &r->work, provend_chains_read_work, chains_read_done)
        != 0)
    {
        free(r);
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "cannot start the read");
        return;
    }
    c->work = &r->work;
}


/* ---- the module -------------------------------------------------------------- */

provend_chains_t *
provend_chains_open(const provend_chains_config_t *cfg, char *err,
    size_t errlen)
{
    size_t             n;
    provend_chains_t  *c;

    if (strncmp(cfg->rpc, "http://", 7) != 0
        && strncmp(cfg->rpc, "https://", 8) != 0)
    {
        proven_errf(err, errlen, "--eth-rpc %s: an http(s) URL", cfg->rpc);
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    if (cfg->checkpoint == NULL || strncmp(cfg->checkpoint, "0x", 2) != 0
        || strlen(cfg->checkpoint) != 66
        || proven_hex_decode(cfg->checkpoint + 2, 64, c->checkpoint, 32, &n)
           != PROVEN_OK || n != 32)
    {
        free(c);
        proven_errf(err, errlen, "--eth-checkpoint: a block hash (0x and 64 "
                    "hex digits) is needed: reads are proved against it");
        return NULL;
    }
    if (strlen(cfg->rpc) >= sizeof(c->rpc)
        || (cfg->proxy != NULL && strlen(cfg->proxy) >= sizeof(c->proxy)))
    {
        free(c);
        proven_errf(err, errlen, "--eth-rpc or --eth-proxy: too long");
        return NULL;
    }
    c->loop = cfg->loop;
    c->chain_id = cfg->chain_id;
    snprintf(c->rpc, sizeof(c->rpc), "%s", cfg->rpc);
    snprintf(c->proxy, sizeof(c->proxy), "%s",
             cfg->proxy != NULL ? cfg->proxy : "");
    provend_chains_hex(c->checkpoint, 32, c->checkpoint_hex);
    /* scheme and host alone: a hosted endpoint's path may hold its key,
     * and logs go to the host */
    n = strcspn(c->rpc + (c->rpc[4] == 's' ? 8 : 7), "/?#");
    provend_info("chains: Ethereum reads at checkpoint %s, proved, from "
                 "%.*s", c->checkpoint_hex,
                 (int) (n + (c->rpc[4] == 's' ? 8 : 7)), c->rpc);
    /* (governance before the follower's thread: a bad option stops here
     * with no thread to join) */
    if (provend_nft_open(c, cfg, err, errlen) != PROVEN_OK
        || provend_governance_open(c, cfg, err, errlen) != PROVEN_OK
        || (cfg->apps != NULL && cfg->storage != NULL
            && provend_follow_start(c, cfg, err, errlen) != PROVEN_OK))
    {
        provend_chains_free(c);
        return NULL;
    }
    return c;
}


void
provend_chains_stop(provend_chains_t *c)
{
    if (c == NULL || c->cancel) {
        return;
    }
    /* a read under way ends at once; one not begun never begins */
    __atomic_store_n(&c->cancel, 1, __ATOMIC_RELAXED);
    if (c->work != NULL) {
        (void) uv_cancel((uv_req_t *) c->work);
    }
    provend_nft_stop(c);
    provend_governance_stop(c);
    provend_follow_stop(c);
}


void
provend_chains_free(provend_chains_t *c)
{
    if (c == NULL) {
        return;
    }
    provend_follow_free(c);
    provend_nft_free(c);
    provend_governance_free(c);
    free(c);
}


void follow_op_events(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

const provend_op_t  provend_chains_ops[] = {
    { "eth.account", PROVEND_CALLER_SOCKET, chains_op_account, 0 },
    { "eth.events", PROVEND_CALLER_SOCKET, follow_op_events, 0 },
    { "nft.open", PROVEND_CALLER_WORKER, provend_nft_op_open, 0 },
    { "gov.status", PROVEND_CALLER_SOCKET, provend_governance_op_status, 0 },
    { NULL, 0, NULL, 0 }
};
