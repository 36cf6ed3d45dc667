/*
 * Reads of an Ethereum chain, each proved here (chains.h): eth.account.
 * A read runs on libuv's thread pool (blocking libcurl, bounded in time)
 * and answers when done; a few at a time.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "proven.h"
#include "fetch/proven_fetch.h"
#include "chains.h"
#include "eth.h"
#include "core/log.h"


#define CHAINS_TIMEOUT_MS   10000
#define CHAINS_ANSWER_MAX   (1024 * 1024)
#define CHAINS_SLOTS_MAX    16
#define CHAINS_READS_MAX    4           /* under way at once */


struct provend_chains_s {
    uv_loop_t  *loop;
    char        rpc[1024];
    char        proxy[512];
    uint8_t     checkpoint[32];
    char        checkpoint_hex[67];
    unsigned    reads;                  /* under way */
};

typedef struct {
    uv_work_t              work;
    provend_chains_t      *c;
    provend_ops_reply_pt   reply;
    void                  *ctx;
    uint64_t               id;
    uint8_t                address[20];
    uint8_t                slots[CHAINS_SLOTS_MAX][32];
    size_t                 nslots;

    /* what was proved */
    int                    rc;
    char                   err[PROVEN_ERR_LEN];
    provend_eth_header_t   header;
    int                    exists;
    provend_eth_account_t  account;
    uint8_t                values[CHAINS_SLOTS_MAX][32];
    size_t                 value_lens[CHAINS_SLOTS_MAX];
} chains_read_t;


/* ---- the endpoint ------------------------------------------------------------ */

/* method(params) at the endpoint: its "result" (a new reference). */
static json_t *
chains_call(provend_chains_t *c, const char *method, json_t *params,
    char *err, size_t errlen)
{
    char                *body;
    json_t              *req, *ans, *result;
    json_error_t         jerr;
    proven_fetch_t       f;
    proven_fetch_opts_t  fo;

    req = json_pack("{s:s, s:i, s:s, s:o}", "jsonrpc", "2.0", "id", 1,
                    "method", method, "params", params);
    body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (body == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    memset(&fo, 0, sizeof(fo));
    fo.timeout_ms = CHAINS_TIMEOUT_MS;
    fo.max = CHAINS_ANSWER_MAX;
    fo.accept = "application/json";
    fo.post = body;
    fo.post_len = strlen(body);
    fo.content_type = "application/json";
    fo.proxy = c->proxy[0] != '\0' ? c->proxy : NULL;
    if (proven_fetch(c->rpc, &fo, &f, err, errlen) != PROVEN_OK) {
        free(body);
        proven_fetch_free(&f);
        return NULL;
    }
    free(body);
    ans = f.status == 200 ? json_loadb((const char *) f.body, f.len, 0, &jerr)
                          : NULL;
    result = json_object_get(ans, "result");
    if (result == NULL || json_is_null(result)) {
        json_t  *e = json_object_get(json_object_get(ans, "error"),
                                     "message");

        proven_errf(err, errlen, "%s: %s%.200s", method,
                    f.status != 200 ? "HTTP status not 200"
                    : ans == NULL ? "the answer is not JSON"
                    : json_is_string(e) ? "" : "no result",
                    json_is_string(e) ? json_string_value(e) : "");
        json_decref(ans);
        proven_fetch_free(&f);
        return NULL;
    }
    json_incref(result);
    json_decref(ans);
    proven_fetch_free(&f);
    return result;
}


static void
chains_hex(const uint8_t *in, size_t len, char *out)
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

static void
chains_read_work(uv_work_t *work)
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
     * taken for which block it is */
    got = chains_call(c, "eth_getBlockByHash",
                      json_pack("[s, b]", c->checkpoint_hex, 0), r->err,
                      sizeof(r->err));
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

    params = json_array();
    chains_hex(r->address, 20, hex);
    json_array_append_new(params, json_string(hex));
    json_array_append_new(params, json_array());
    for (i = 0; i < r->nslots; i++) {
        chains_hex(r->slots[i], 32, hex);
        json_array_append_new(json_array_get(params, 1), json_string(hex));
    }
    snprintf(block, sizeof(block), "0x%llx",
             (unsigned long long) r->header.number);
    json_array_append_new(params, json_string(block));
    got = chains_call(c, "eth_getProof", params, r->err, sizeof(r->err));
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


/* A number's bytes as 0x hex without leading zeros ("0x0" for none). */
static cbor_item_t *
chains_quantity(const uint8_t *p, size_t len)
{
    char  hex[2 + 64 + 1];

    if (len == 0) {
        return cbor_build_string("0x0");
    }
    chains_hex(p, len, hex);
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

    r->c->reads--;
    if (status != 0 || r->rc != PROVEN_OK) {
        provend_ops_reply_error(r->reply, r->ctx, r->id, "chain_unverified",
                                status != 0 ? "cancelled" : r->err);
        free(r);
        return;
    }
    map = cbor_new_definite_map(4);
    slots = cbor_new_definite_map(r->exists ? r->nslots : 0);
    acct = r->exists ? cbor_new_definite_map(4) : cbor_new_null();
    chains_hex(r->header.hash, 32, hex);
    ok = map != NULL && slots != NULL && acct != NULL
         && proven_cbor_map_put(map, "block",
                                cbor_build_uint64(r->header.number))
            == PROVEN_OK
         && proven_cbor_map_put(map, "block_hash", cbor_build_string(hex))
            == PROVEN_OK;
    if (ok && r->exists) {
        chains_hex(r->account.storage_root, 32, hex);
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
        chains_hex(r->account.code_hash, 32, hex);
        ok = ok && proven_cbor_map_put(acct, "code_hash",
                                       cbor_build_string(hex)) == PROVEN_OK;
        for (i = 0; ok && i < r->nslots; i++) {
            chains_hex(r->slots[i], 32, hex);
            ok = proven_cbor_map_put(slots, hex,
                                     chains_quantity(r->values[i],
                                                     r->value_lens[i]))
                 == PROVEN_OK;
        }
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


/* "0x" and exactly len bytes of hex. */
static int
chains_arg_hex(const cbor_item_t *item, uint8_t *out, size_t len)
{
    char    text[2 + 64 + 1];
    size_t  n;

    if (item == NULL
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
    size_t             i;
    cbor_item_t       *slots;
    chains_read_t     *r;
    provend_chains_t  *c = subsystem;

    (void) op;
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    if (chains_arg_hex(proven_cbor_map_get(req->map, "address"), r->address,
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
        if (chains_arg_hex(cbor_array_handle(slots)[i], r->slots[i], 32)
            != PROVEN_OK)
        {
            free(r);
            provend_ops_reply_error(reply, ctx, req->id, "bad_request",
                                    "each slot must be 0x and 64 hex digits "
                                    "(32 bytes, left-padded)");
            return;
        }
    }
    if (c->reads == CHAINS_READS_MAX) {
        free(r);
        provend_ops_reply_error(reply, ctx, req->id, "busy",
                                "4 reads of the chain are under way");
        return;
    }
    r->c = c;
    r->reply = reply;
    r->ctx = ctx;
    r->id = req->id;
    r->work.data = r;
    if (uv_queue_work(c->loop, &r->work, chains_read_work, chains_read_done)
        != 0)
    {
        free(r);
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "cannot start the read");
        return;
    }
    c->reads++;
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
    snprintf(c->rpc, sizeof(c->rpc), "%s", cfg->rpc);
    snprintf(c->proxy, sizeof(c->proxy), "%s",
             cfg->proxy != NULL ? cfg->proxy : "");
    chains_hex(c->checkpoint, 32, c->checkpoint_hex);
    provend_info("chains: Ethereum reads at checkpoint %s, proved, from %s",
                 c->checkpoint_hex, c->rpc);
    return c;
}


void
provend_chains_free(provend_chains_t *c)
{
    free(c);
}


const provend_op_t  provend_chains_ops[] = {
    { "eth.account", PROVEND_CALLER_SOCKET, chains_op_account, 0 },
    { NULL, 0, NULL, 0 }
};
