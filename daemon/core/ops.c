/* provend's op tables, the dispatcher over them, and the common answers. */

#include <stdlib.h>
#include <string.h>

#include "ops.h"


const provend_op_t *
provend_op_find(const provend_op_t *table, const char *name)
{
    for ( /* void */ ; table->name != NULL; table++) {
        if (strcmp(table->name, name) == 0) {
            return table;
        }
    }

    return NULL;
}


static int
provend_route_cmp(const void *a, const void *b)
{
    const provend_route_t  *ra = a, *rb = b;

    return strcmp(ra->op->name, rb->op->name);
}


int
provend_dispatch_add(provend_dispatch_t *d, const provend_op_t *table,
    void *subsystem, const char *code, const char *message, char *err,
    size_t errlen)
{
    size_t            n, i;
    provend_route_t  *routes;

    for (n = 0; table[n].name != NULL; n++) {
        if (provend_dispatch_find(d, table[n].name) != NULL) {
            proven_errf(err, errlen, "op \"%s\" is registered twice",
                        table[n].name);
            return PROVEN_ERR;
        }
    }

    routes = realloc(d->routes, (d->nroutes + n) * sizeof(*routes));
    if (routes == NULL && d->nroutes + n > 0) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }

    d->routes = routes;

    for (i = 0; i < n; i++) {
        routes[d->nroutes + i].op = &table[i];
        routes[d->nroutes + i].subsystem = subsystem;
        routes[d->nroutes + i].unavailable_code = code;
        routes[d->nroutes + i].unavailable_message = message;
    }

    d->nroutes += n;
    qsort(d->routes, d->nroutes, sizeof(*routes), provend_route_cmp);
    return PROVEN_OK;
}


const provend_route_t *
provend_dispatch_find(const provend_dispatch_t *d, const char *name)
{
    int     c;
    size_t  lo, hi, mid;

    lo = 0;
    hi = d->nroutes;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        c = strcmp(name, d->routes[mid].op->name);

        if (c == 0) {
            return &d->routes[mid];
        }

        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


void
provend_dispatch_free(provend_dispatch_t *d)
{
    free(d->routes);
    d->routes = NULL;
    d->nroutes = 0;
}


void
provend_ops_reply_error(provend_ops_reply_pt reply, void *ctx, uint64_t id,
    const char *code, const char *message)
{
    size_t    len;
    uint8_t  *frame;

    if (proven_response_encode_error(id, code, message, &frame, &len)
        != PROVEN_OK)
    {
        frame = NULL;
        len = 0;
    }

    reply(ctx, frame, len);
}


void
provend_ops_reply_ok(provend_ops_reply_pt reply, void *ctx, uint64_t id,
    cbor_item_t *result)
{
    size_t    len;
    uint8_t  *frame;

    if (result == NULL) {
        provend_ops_reply_error(reply, ctx, id, "internal", "out of memory");
        return;
    }

    if (proven_response_encode_ok(id, result, &frame, &len) != PROVEN_OK) {
        frame = NULL;
        len = 0;
    }

    cbor_decref(&result);
    reply(ctx, frame, len);
}
