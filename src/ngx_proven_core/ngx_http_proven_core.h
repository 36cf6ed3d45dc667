/*
 * ngx_http_proven_core: the provend client every ngx_proven module uses.
 *
 * Configuration (http level, once):
 *
 *     proven_daemon unix:/path/to/provend.sock [timeout=5s] [connections=2];
 *
 * Each worker keeps `connections` non-blocking unix socket connections to
 * provend, opened lazily by the first call that needs one.  Calls are
 * spread over them round robin and many calls share one connection: each
 * request frame carries an "id" the response echoes.  A connection that
 * breaks fails every call pending on it at once; the next call reconnects.
 * After a failed connect() the connection refuses calls for a short while
 * (they fail as unreachable) instead of retrying on every request.
 *
 * Frames are the ones of lib/proven.h: a 4-byte big-endian length and one
 * CBOR map, request {"id", "op", ...arguments}, response {"id", "ok",
 * "result"} or {"id", "ok": false, "error": {"code", "message"}}.
 *
 * Logging: lines start with "proven daemon: ".  Every call that fails
 * because provend is unreachable or too slow logs exactly one error line
 * (in the request's log context); callers should not log those again.
 * An answer with "ok": false is the caller's business to log.
 *
 * Modules that use this header are linked against nothing from core: in a
 * dynamic build load ngx_http_proven_core_module.so first, it carries
 * libproven and these functions.
 */

#ifndef _NGX_HTTP_PROVEN_CORE_H_INCLUDED_
#define _NGX_HTTP_PROVEN_CORE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <proven.h>


typedef enum {
    /* provend answered "ok": true; res->result holds the result */
    NGX_HTTP_PROVEN_DAEMON_OK = 0,

    /* provend answered "ok": false; res->code and res->message say why */
    NGX_HTTP_PROVEN_DAEMON_ERROR,

    /* no connection, or it broke before the answer came; res is NULL */
    NGX_HTTP_PROVEN_DAEMON_UNREACHABLE,

    /* no answer within the proven_daemon timeout; res is NULL */
    NGX_HTTP_PROVEN_DAEMON_TIMEOUT
} ngx_http_proven_daemon_status_e;


/*
 * Called exactly once per accepted call, always later from the event loop,
 * never from inside ngx_http_proven_daemon_call() itself.
 *
 * res (NULL unless the status is OK or ERROR) belongs to core and is freed
 * when the handler returns: copy what you keep.  The handler runs outside
 * the request's own event handlers, so it must drive the request on by
 * itself (ngx_http_finalize_request(), ngx_http_core_run_phases(), ...);
 * core runs the connection's posted requests after it returns.
 */
typedef void (*ngx_http_proven_daemon_handler_pt)(ngx_http_request_t *r,
    ngx_http_proven_daemon_status_e status, proven_response_t *res,
    void *data);


/*
 * Sends request, a CBOR map with a text "op" and the op's arguments, to
 * provend.  Core adds the "id" (an "id" already in the map is ignored).
 * request is only read: the caller keeps its reference and may release it
 * as soon as this returns.
 *
 * Returns NGX_OK when the call is under way: handler(r, status, res, data)
 * will run once.  If the request is finalized and freed first (client gone,
 * request terminated), the call is cancelled and handler never runs.
 *
 * Returns NGX_ERROR, and handler never runs, when proven_daemon is not
 * configured, request is not a map with a text "op", or memory ran out;
 * the reason is logged.  A daemon that is down is not NGX_ERROR: the
 * handler gets NGX_HTTP_PROVEN_DAEMON_UNREACHABLE.
 */
ngx_int_t ngx_http_proven_daemon_call(ngx_http_request_t *r,
    cbor_item_t *request, ngx_http_proven_daemon_handler_pt handler,
    void *data);


/* The same with its own timeout (0: the proven_daemon timeout). */
ngx_int_t ngx_http_proven_daemon_call_timeout(ngx_http_request_t *r,
    cbor_item_t *request, ngx_msec_t timeout,
    ngx_http_proven_daemon_handler_pt handler, void *data);


/*
 * Other frame endpoints: an app's runtime worker listening on the unix
 * socket path.  Peers are per nginx worker, made on first use, keep their
 * connections open between calls (several calls share one), and are
 * dropped after a minute without calls.  NULL: the path cannot be one.
 */
typedef struct ngx_http_proven_peer_s  ngx_http_proven_peer_t;

ngx_http_proven_peer_t *ngx_http_proven_peer_get(ngx_http_request_t *r,
    u_char *path, size_t len);

/*
 * Calls sent to the peer at path from this nginx worker and not yet
 * answered (0 for a peer not made yet); makes no peer.
 */
ngx_uint_t ngx_http_proven_peer_pending(ngx_http_request_t *r, u_char *path,
    size_t len);

/*
 * As ngx_http_proven_daemon_call(), to peer, with its own timeout (0: the
 * proven_daemon timeout).  The handler's statuses mean the same; failures
 * log one line starting "proven app: ".
 */
ngx_int_t ngx_http_proven_peer_call(ngx_http_request_t *r,
    ngx_http_proven_peer_t *peer, cbor_item_t *request, ngx_msec_t timeout,
    ngx_http_proven_daemon_handler_pt handler, void *data);


/*
 * The same with the request's arguments already encoded: pairs holds
 * npairs CBOR key/value pairs ("op" among them, no "id", no map head),
 * copied before this returns.  For hot paths that write frames directly.
 */
ngx_int_t ngx_http_proven_peer_call_encoded(ngx_http_request_t *r,
    ngx_http_proven_peer_t *peer, const u_char *pairs, size_t len,
    ngx_uint_t npairs, ngx_msec_t timeout,
    ngx_http_proven_daemon_handler_pt handler, void *data);


/*
 * Sends a frame (pairs as above) whose answer nobody waits for, on a
 * connection of peer already open; for a request that is going away.
 * NGX_DECLINED: no connection is open (nothing is sent).
 */
ngx_int_t ngx_http_proven_peer_notify(ngx_http_proven_peer_t *peer,
    const u_char *pairs, size_t len, ngx_uint_t npairs);


/*
 * For other modules' configuration checks (merge or postconfiguration
 * handlers of the http block): 1 when proven_daemon is set at http level.
 */
ngx_uint_t ngx_http_proven_daemon_configured(ngx_conf_t *cf);


/* A stable lowercase name: "ok", "error", "unreachable", "timeout". */
const char *ngx_http_proven_daemon_status_name(
    ngx_http_proven_daemon_status_e status);


/*
 * The request body (read already) in one ngx_alloc()ed buffer of at most
 * max bytes; NULL when larger (*too_large set) or out of memory.
 */
u_char *ngx_http_proven_body(ngx_http_request_t *r, size_t max, size_t *len,
    ngx_int_t *too_large);

/* A whole response: status, type (NULL: none) and data (kept by caller). */
ngx_int_t ngx_http_proven_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *data, size_t len);

/* Adds the response header key: value (both kept by the caller). */
ngx_int_t ngx_http_proven_add_header(ngx_http_request_t *r, const char *key,
    ngx_str_t *value);

/* {"error": {"code", "message", "error_id"?}} as application/json. */
ngx_int_t ngx_http_proven_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message, const char *error_id);


extern ngx_module_t  ngx_http_proven_core_module;


#endif /* _NGX_HTTP_PROVEN_CORE_H_INCLUDED_ */
