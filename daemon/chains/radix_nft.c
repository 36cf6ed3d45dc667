/*
 * Radix NFT scopes: an app's call may use the storage of a non-fungible
 * only while the call's session has linked (LinkRadix) the account that
 * holds it, as the Gateway reads its location: the global entity whose
 * vault holds it (radix.c).
 *
 *   radix.nft {scope: {app}, grant, resource: "resource_...", nf_id: "#1#"}
 *     -> {chain: "radix-<network>", contract: resource, owner,
 *        state_version}: the call's grant now holds its storage
 *     "not_owner": another entity holds it, or none (burned)
 *     "forbidden": the call's session linked no account (or it ended)
 *     "unavailable": the Gateway did not answer right
 *     "busy": RADIX_NFT_READS reads under way already
 *
 * Reads run on the pool, RADIX_NFT_READS at most at once (a host holding
 * the Gateway's answers back holds that many threads); none is kept: a
 * non-fungible that moved is refused at the next call's read.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "proven.h"
#include "radix_int.h"
#include "sessions/sessions.h"
#include "storage/storage.h"


#define RADIX_NFT_READS    2
#define RADIX_NFT_READ_MS  10000

typedef struct {
    uv_work_t              work;
    provend_radix_t       *r;
    provend_ops_reply_pt   reply;
    void                  *ctx;
    uint64_t               id;
    char                   app[PROVEND_NAME_MAX + 1];
    char                   grant[33];
    char                   resource[PROVEND_RADIX_ADDR_MAX + 1];
    char                   nf_id[PROVEND_TOKEN_MAX + 1];
    /* the read's */
    int                    rc;
    char                   owner[PROVEND_RADIX_ADDR_MAX + 1];
    uint64_t               state_version;
    char                   err[PROVEN_ERR_LEN];
} radix_nft_t;


static void
radix_nft_work(uv_work_t *work)
{
    radix_nft_t  *n = work->data;

    n->rc = provend_radix_nft_owner(n->r, n->resource, n->nf_id, n->owner,
                                    sizeof(n->owner), &n->state_version,
                                    uv_hrtime()
                                    + RADIX_NFT_READ_MS * 1000000ULL,
                                    n->err, sizeof(n->err));
}


static void
radix_nft_done(uv_work_t *work, int status)
{
    int               ok;
    char              chain[PROVEND_CHAIN_MAX + 1], msg[512];
    char              links[PROVEND_RADIX_LINKS_MAX][PROVEND_RADIX_LINK_SIZE];
    size_t            i, nlinks;
    cbor_item_t      *map;
    radix_nft_t      *n = work->data;
    provend_radix_t  *r = n->r;

    r->nft_reads--;
    if (status != 0 || n->rc == PROVEN_ERR) {
        provend_ops_reply_error(n->reply, n->ctx, n->id, "unavailable",
                                status != 0 ? "the node is stopping"
                                            : n->err);
        free(n);
        return;
    }
    nlinks = r->sessions != NULL
             ? provend_sessions_grant_radix(r->sessions, n->grant, n->app,
                                            links)
             : 0;
    if (nlinks == 0) {
        provend_ops_reply_error(n->reply, n->ctx, n->id, "forbidden",
                                "the call's session has linked no Radix "
                                "account (LinkRadix), or the call ended");
        free(n);
        return;
    }
    snprintf(chain, sizeof(chain), "radix-%u", r->network);
    for (i = 0; n->rc == 0 && i < nlinks; i++) {
        if (strcmp(links[i], n->owner) != 0) {
            continue;
        }
        if (provend_sessions_grant_permit(r->sessions, n->grant, n->app,
                                          chain, n->resource, n->nf_id)
            != PROVEN_OK)
        {
            provend_ops_reply_error(n->reply, n->ctx, n->id, "forbidden",
                                    "the call ended, or holds the most NFT "
                                    "scopes a call may");
            free(n);
            return;
        }
        map = cbor_new_definite_map(4);
        ok = map != NULL
             && proven_cbor_map_put(map, "chain", cbor_build_string(chain))
                == PROVEN_OK
             && proven_cbor_map_put(map, "contract",
                                    cbor_build_string(n->resource))
                == PROVEN_OK
             && proven_cbor_map_put(map, "owner",
                                    cbor_build_string(n->owner)) == PROVEN_OK
             && proven_cbor_map_put(map, "state_version",
                                    cbor_build_uint64(n->state_version))
                == PROVEN_OK;
        if (!ok) {
            if (map != NULL) {
                cbor_decref(&map);
            }
            provend_ops_reply_error(n->reply, n->ctx, n->id, "internal",
                                    "out of memory");
        } else {
            provend_ops_reply_ok(n->reply, n->ctx, n->id, map);
        }
        free(n);
        return;
    }
    /* who holds it is public on ledger: said, for the app */
    if (n->rc == 0) {
        snprintf(msg, sizeof(msg), "%.130s of %s is held by %s at state "
                 "version %llu, not by an account this session linked",
                 n->nf_id, n->resource, n->owner,
                 (unsigned long long) n->state_version);
    } else {
        snprintf(msg, sizeof(msg), "%.130s of %s is burned, or held by no "
                 "account, at state version %llu", n->nf_id, n->resource,
                 (unsigned long long) n->state_version);
    }
    provend_ops_reply_error(n->reply, n->ctx, n->id, "not_owner", msg);
    free(n);
}


void
provend_radix_op_nft(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx)
{
    char                  links[PROVEND_RADIX_LINKS_MAX]
                               [PROVEND_RADIX_LINK_SIZE];
    cbor_item_t          *scope;
    radix_nft_t          *n;
    provend_radix_t      *r = subsystem;
    const char           *bad;

    (void) op;
    n = calloc(1, sizeof(*n));
    if (n == NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "out of memory");
        return;
    }
    n->r = r;
    n->reply = reply;
    n->ctx = ctx;
    n->id = req->id;
    scope = proven_cbor_map_get(req->map, "scope");
    bad = NULL;
    /* the app: server.c has checked it is the worker's own */
    if (scope == NULL || !cbor_isa_map(scope)
        || proven_cbor_text_into(proven_cbor_map_get(scope, "app"), n->app,
                                 sizeof(n->app)) != PROVEN_OK)
    {
        bad = "\"scope\" must be {\"app\": the app}";
    } else if (proven_cbor_text_into(proven_cbor_map_get(req->map, "grant"),
                                     n->grant, sizeof(n->grant))
               != PROVEN_OK)
    {
        bad = "\"grant\" must be the call's grant";
    } else if (proven_cbor_text_into(proven_cbor_map_get(req->map,
                                                         "resource"),
                                     n->resource, sizeof(n->resource))
               != PROVEN_OK
               || !provend_radix_address_ok(r, n->resource, "resource"))
    {
        bad = "\"resource\" must be a resource address of the node's "
              "network";
    } else if (proven_cbor_text_into(proven_cbor_map_get(req->map, "nf_id"),
                                     n->nf_id, sizeof(n->nf_id))
               != PROVEN_OK || !provend_radix_nf_id_ok(n->nf_id))
    {
        bad = "\"nf_id\" must be a non-fungible id: #n#, <string>, [hex] or "
              "{ruid}";
    }
    if (bad != NULL) {
        provend_ops_reply_error(reply, ctx, req->id, "bad_request", bad);
        free(n);
        return;
    }
    /* refused now when no read could change the answer */
    if (r->sessions == NULL
        || provend_sessions_grant_radix(r->sessions, n->grant, n->app,
                                        links) == 0)
    {
        provend_ops_reply_error(reply, ctx, req->id, "forbidden",
                                "Radix NFT storage is for a call from a "
                                "session that linked the holder's account "
                                "(LinkRadix)");
        free(n);
        return;
    }
    if (r->nft_reads >= RADIX_NFT_READS || r->cancel) {
        provend_ops_reply_error(reply, ctx, req->id,
                                r->cancel ? "unavailable" : "busy",
                                r->cancel ? "the node is stopping"
                                : "2 Radix NFT reads are under way; try "
                                  "again");
        free(n);
        return;
    }
    n->work.data = n;
    if (uv_queue_work(r->loop, &n->work, radix_nft_work, radix_nft_done)
        != 0)
    {
        provend_ops_reply_error(reply, ctx, req->id, "internal",
                                "cannot start the read");
        free(n);
        return;
    }
    r->nft_reads++;
}
