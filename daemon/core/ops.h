/*
 * provend's ops: every subsystem lists the ops it serves in one table of
 * {name, callers, handler, arg}, like redis's command table.  The server
 * registers the table of each subsystem it runs, with that subsystem (or
 * NULL and the error to answer while it is unavailable), and looks every
 * request's op up in one place.  Who may call an op comes from its
 * callers: provend's socket (nginx and the CLI, both local and trusted)
 * and the line of an app's worker (its own app's storage only).
 *
 * A handler answers through reply exactly once, now or later, with a
 * whole response frame.
 */

#ifndef PROVEND_OPS_H
#define PROVEND_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "proven.h"

/* Called once per dispatched request with the whole response frame. */
typedef void (*provend_ops_reply_pt)(void *ctx, uint8_t *frame, size_t len);

#define PROVEND_CALLER_SOCKET  0x01    /* provend.sock: nginx, the CLI */
#define PROVEND_CALLER_WORKER  0x02    /* an app's worker: its own storage */

typedef struct provend_op_s  provend_op_t;

typedef void (*provend_op_handler_pt)(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

struct provend_op_s {
    const char             *name;       /* "area.verb" */
    unsigned                callers;    /* PROVEND_CALLER_* */
    provend_op_handler_pt   handler;
    int                     arg;        /* the handler's own, per op */
};

/* An op of one table: the table ends with an entry whose name is NULL. */
const provend_op_t *provend_op_find(const provend_op_t *table,
    const char *name);

/* What the dispatcher found: the op, and the subsystem it runs on. */
typedef struct {
    const provend_op_t  *op;
    void                *subsystem;             /* NULL: unavailable */
    const char          *unavailable_code;
    const char          *unavailable_message;
} provend_route_t;

typedef struct {
    provend_route_t  *routes;                   /* sorted by name */
    size_t            nroutes;
} provend_dispatch_t;

/*
 * Adds every op of table, served by subsystem; while subsystem is NULL
 * its ops answer code and message.  An op already registered is an
 * error (two subsystems cannot both serve it).
 */
int provend_dispatch_add(provend_dispatch_t *d, const provend_op_t *table,
    void *subsystem, const char *code, const char *message, char *err,
    size_t errlen);

const provend_route_t *provend_dispatch_find(const provend_dispatch_t *d,
    const char *name);

void provend_dispatch_free(provend_dispatch_t *d);

/* An error answer {"id", "ok": false, "error"} handed to reply. */
void provend_ops_reply_error(provend_ops_reply_pt reply, void *ctx,
    uint64_t id, const char *code, const char *message);

/* An answer {"id", "ok": true, "result"}; takes result (NULL: out of
 * memory, answered as an error). */
void provend_ops_reply_ok(provend_ops_reply_pt reply, void *ctx,
    uint64_t id, cbor_item_t *result);

#endif /* PROVEND_OPS_H */
