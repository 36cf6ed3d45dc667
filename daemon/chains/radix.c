/*
 * Radix through a Gateway (radix.h): its calls, owner keys, where a
 * non-fungible is.  Every call blocks (libcurl): sessions and workers
 * make them on libuv's pool, the events thread on its own.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "proven.h"
#include "fetch/proven_fetch.h"
#include "radix_int.h"
#include "core/log.h"
#include "sessions/rola.h"


/* The name a Gateway gives the network in its ledger_state. */
static const char *
radix_network_name(unsigned network)
{
    switch (network) {
    case 1:
        return "mainnet";
    case 2:
        return "stokenet";
    case 240:
        return "localnet";
    case 242:
        return "simulator";
    default:
        return NULL;                    /* not checked: its addresses are */
    }
}


unsigned
provend_radix_network(const provend_radix_t *r)
{
    return r->network;
}


int
provend_radix_address_ok(const provend_radix_t *r, const char *text,
    const char *entity)
{
    return text != NULL
           && provend_radix_address_valid(text, r->network, entity);
}


/* The Gateway's words (an error's message), printable ASCII, bounded. */
static void
radix_said(const char *in, char *out, size_t max)
{
    size_t  i;

    for (i = 0; in != NULL && in[i] != '\0' && i < max - 1; i++) {
        out[i] = in[i] >= 0x20 && in[i] < 0x7f ? in[i] : '?';
    }
    out[i] = '\0';
}


json_t *
provend_radix_post(provend_radix_t *r, const char *path, json_t *body,
    size_t max, uint64_t deadline, const int *cancel, char *err,
    size_t errlen)
{
    char                 url[1200], why[PROVEN_ERR_LEN], said[121];
    char                *text;
    json_t              *ans, *ledger;
    json_int_t           version;
    uint64_t             now;
    json_error_t         jerr;
    proven_fetch_t       f;
    proven_fetch_opts_t  fo;
    const char          *network, *expected;

    text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    now = uv_hrtime();
    if (text == NULL || now >= deadline) {
        free(text);
        proven_errf(err, errlen, text == NULL ? "out of memory"
                    : "%s: no time left", path);
        return NULL;
    }
    snprintf(url, sizeof(url), "%s%s", r->gateway, path);
    memset(&fo, 0, sizeof(fo));
    fo.timeout_ms = (long) ((deadline - now) / 1000000) + 1;
    fo.cancel = cancel != NULL ? cancel : &r->cancel;
    fo.max = max;
    fo.accept = "application/json";
    fo.post = text;
    fo.post_len = strlen(text);
    fo.content_type = "application/json";
    fo.proxy = r->proxy[0] != '\0' ? r->proxy : NULL;
    if (proven_fetch(url, &fo, &f, why, sizeof(why)) != PROVEN_OK) {
        free(text);
        proven_fetch_free(&f);
        proven_errf(err, errlen, "the Gateway's %s: %.200s", path, why);
        return NULL;
    }
    free(text);
    ans = json_loadb((const char *) f.body, f.len, 0, &jerr);
    if (f.status != 200 || !json_is_object(ans)) {
        radix_said(json_string_value(json_object_get(ans, "message")), said,
                   sizeof(said));
        proven_errf(err, errlen, "the Gateway's %s: %s%s%s", path,
                    f.status != 200 ? "HTTP status not 200"
                                    : "the answer is not a JSON object",
                    said[0] != '\0' ? ": " : "", said);
        json_decref(ans);
        proven_fetch_free(&f);
        return NULL;
    }
    proven_fetch_free(&f);

    /* the ledger it answers from: the node's network, a version */
    ledger = json_object_get(ans, "ledger_state");
    network = json_string_value(json_object_get(ledger, "network"));
    version = json_integer_value(json_object_get(ledger, "state_version"));
    expected = radix_network_name(r->network);
    if (network == NULL || !json_is_integer(json_object_get(ledger,
                                                            "state_version"))
        || version < 0)
    {
        proven_errf(err, errlen, "the Gateway's %s: no ledger_state with a "
                    "network and a state_version", path);
        json_decref(ans);
        return NULL;
    }
    if (expected != NULL && strcmp(network, expected) != 0) {
        radix_said(network, said, 40);
        proven_errf(err, errlen, "the Gateway's %s: it answers for network "
                    "\"%s\", this node is on %s (--radix-network %u)", path,
                    said, expected, r->network);
        json_decref(ans);
        return NULL;
    }
    return ans;
}


/* ---- owner keys ------------------------------------------------------------ */

int
provend_radix_owner_keys(provend_radix_t *r, const char *account,
    provend_radix_key_hash_t *keys, size_t *n, uint64_t deadline, char *err,
    size_t errlen)
{
    int          set;
    size_t       i, len;
    json_t      *ans, *item, *meta, *entry, *typed, *values, *v;
    const char  *type, *hex;

    *n = 0;
    ans = provend_radix_post(r, "/state/entity/details",
                             json_pack("{s:[s], s:{s:[s]}}", "addresses",
                                       account, "opt_ins",
                                       "explicit_metadata", "owner_keys"),
                             RADIX_ANSWER_MAX, deadline, NULL, err, errlen);
    if (ans == NULL) {
        return PROVEN_ERR;
    }
    item = json_array_get(json_object_get(ans, "items"), 0);
    if (json_array_size(json_object_get(ans, "items")) != 1
        || json_string_value(json_object_get(item, "address")) == NULL
        || strcmp(json_string_value(json_object_get(item, "address")),
                  account) != 0)
    {
        proven_errf(err, errlen, "the Gateway's entity details are not the "
                    "account's");
        json_decref(ans);
        return PROVEN_ERR;
    }

    /* explicit_metadata.items: owner_keys, once at most; an answer
     * without the list it was asked for says nothing of the keys (a
     * Gateway that ignored the opt-in): never "not set" */
    meta = json_object_get(json_object_get(item, "explicit_metadata"),
                           "items");
    if (!json_is_array(meta)) {
        proven_errf(err, errlen, "the Gateway's entity details have no "
                    "explicit_metadata list (owner_keys asked for)");
        json_decref(ans);
        return PROVEN_ERR;
    }
    entry = NULL;
    for (i = 0; i < json_array_size(meta); i++) {
        v = json_array_get(meta, i);
        if (json_string_value(json_object_get(v, "key")) != NULL
            && strcmp(json_string_value(json_object_get(v, "key")),
                      "owner_keys") == 0)
        {
            if (entry != NULL) {
                proven_errf(err, errlen, "the Gateway gives owner_keys "
                            "twice");
                json_decref(ans);
                return PROVEN_ERR;
            }
            entry = v;
        }
    }
    if (entry == NULL) {
        json_decref(ans);
        return 0;                       /* never set: the virtual key's */
    }
    typed = json_object_get(json_object_get(entry, "value"), "typed");
    type = json_string_value(json_object_get(typed, "type"));
    values = json_object_get(typed, "values");
    if (type == NULL || strcmp(type, "PublicKeyHashArray") != 0
        || !json_is_array(values)
        || json_array_size(values) > PROVEND_RADIX_OWNER_KEYS)
    {
        proven_errf(err, errlen, "the account's owner_keys are not a list "
                    "of %d key hashes at most", PROVEND_RADIX_OWNER_KEYS);
        json_decref(ans);
        return PROVEN_ERR;
    }
    set = 1;
    for (i = 0; i < json_array_size(values); i++) {
        v = json_array_get(values, i);
        type = json_string_value(json_object_get(v, "key_hash_type"));
        hex = json_string_value(json_object_get(v, "hash_hex"));
        if (type == NULL || hex == NULL || strlen(hex) != 58
            || (strcmp(type, "EddsaEd25519") != 0
                && strcmp(type, "EcdsaSecp256k1") != 0)
            || proven_hex_decode(hex, 58, keys[*n].hash, 29, &len)
               != PROVEN_OK || len != 29)
        {
            proven_errf(err, errlen, "an owner key hash is not EddsaEd25519 "
                        "or EcdsaSecp256k1 and 58 hex digits");
            json_decref(ans);
            return PROVEN_ERR;
        }
        keys[*n].curve = strcmp(type, "EddsaEd25519") == 0 ? 0 : 1;
        (*n)++;
    }
    json_decref(ans);
    return set;
}


/* ---- where a non-fungible is --------------------------------------------- */

int
provend_radix_nft_owner(provend_radix_t *r, const char *resource,
    const char *id, char *owner, size_t max, uint64_t *state_version,
    uint64_t deadline, char *err, size_t errlen)
{
    json_t      *ans, *item, *burned;
    const char  *holder, *text;

    *owner = '\0';
    ans = provend_radix_post(r, "/state/non-fungible/location",
                             json_pack("{s:s, s:[s]}", "resource_address",
                                       resource, "non_fungible_ids", id),
                             RADIX_ANSWER_MAX, deadline, NULL, err, errlen);
    if (ans == NULL) {
        return PROVEN_ERR;
    }
    *state_version = (uint64_t) json_integer_value(
        json_object_get(json_object_get(ans, "ledger_state"),
                        "state_version"));
    item = json_array_get(json_object_get(ans, "non_fungible_ids"), 0);
    text = json_string_value(json_object_get(ans, "resource_address"));
    burned = json_object_get(item, "is_burned");
    if (text == NULL || strcmp(text, resource) != 0
        || json_array_size(json_object_get(ans, "non_fungible_ids")) != 1
        || json_string_value(json_object_get(item, "non_fungible_id"))
           == NULL
        || strcmp(json_string_value(json_object_get(item,
                                                    "non_fungible_id")),
                  id) != 0
        || !json_is_boolean(burned))
    {
        proven_errf(err, errlen, "the Gateway's location is not that "
                    "non-fungible's");
        json_decref(ans);
        return PROVEN_ERR;
    }
    holder = json_string_value(json_object_get(item,
                                   "owning_vault_global_ancestor_address"));
    if (json_is_true(burned) || holder == NULL) {
        json_decref(ans);
        return 1;
    }
    if (!provend_radix_address_ok(r, holder, NULL) || strlen(holder) >= max) {
        proven_errf(err, errlen, "the Gateway's holder of the non-fungible "
                    "is not an address of this network");
        json_decref(ans);
        return PROVEN_ERR;
    }
    snprintf(owner, max, "%s", holder);
    json_decref(ans);
    return 0;
}


/* ---- the module ---------------------------------------------------------------- */

provend_radix_t *
provend_radix_open(const provend_radix_config_t *cfg, char *err,
    size_t errlen)
{
    size_t            len;
    provend_radix_t  *r;

    len = strlen(cfg->gateway);
    if ((strncmp(cfg->gateway, "http://", 7) != 0
         && strncmp(cfg->gateway, "https://", 8) != 0)
        || len >= sizeof(r->gateway) || len < 8)
    {
        proven_errf(err, errlen, "--radix-gateway must be an http(s):// URL "
                    "of %zu characters at most", sizeof(r->gateway) - 1);
        return NULL;
    }
    if (cfg->proxy != NULL && strlen(cfg->proxy) >= sizeof(r->proxy)) {
        proven_errf(err, errlen, "--radix-proxy is too long");
        return NULL;
    }
    if (cfg->network == 0 || cfg->network > 255) {
        proven_errf(err, errlen, "--radix-network must be 1 to 255");
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }
    r->loop = cfg->loop;
    r->network = cfg->network;
    r->sessions = cfg->sessions;
    /* the base without a trailing slash: paths start with one */
    while (len > 8 && cfg->gateway[len - 1] == '/') {
        len--;
    }
    memcpy(r->gateway, cfg->gateway, len);
    r->gateway[len] = '\0';
    snprintf(r->proxy, sizeof(r->proxy), "%s",
             cfg->proxy != NULL ? cfg->proxy : "");
    if (cfg->apps != NULL
        && provend_radix_events_start(r, cfg, err, errlen) != PROVEN_OK)
    {
        free(r);
        return NULL;
    }
    return r;
}


void
provend_radix_stop(provend_radix_t *r)
{
    if (r == NULL) {
        return;
    }
    __atomic_store_n(&r->cancel, 1, __ATOMIC_RELEASE);
    provend_radix_events_stop(r);
}


void
provend_radix_free(provend_radix_t *r)
{
    if (r == NULL) {
        return;
    }
    provend_radix_events_free(r);
    free(r);
}


const provend_op_t  provend_radix_ops[] = {
    { "radix.events", PROVEND_CALLER_SOCKET, provend_radix_op_events, 0 },
    { "radix.nft", PROVEND_CALLER_WORKER, provend_radix_op_nft, 0 },
    { NULL, 0, NULL, 0 }
};
