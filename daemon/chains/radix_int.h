/*
 * What radix.c (the Gateway) and radix_events.c (events) share.
 */

#ifndef PROVEND_RADIX_INT_H
#define PROVEND_RADIX_INT_H

#include <stdint.h>

#include "proven.h"
#include "radix.h"


#define RADIX_ANSWER_MAX    (4 * 1024 * 1024)   /* one Gateway answer */
#define RADIX_CALL_MS       10000               /* one Gateway call */

typedef struct radix_events_s  radix_events_t;

struct provend_radix_s {
    uv_loop_t       *loop;
    char             gateway[1024];     /* no trailing / */
    char             proxy[512];
    unsigned         network;
    int              cancel;            /* stopping: calls end at once */
    provend_sessions_t *sessions;       /* NFT scopes: the calls' links */
    unsigned         nft_reads;         /* radix_nft.c's, on the pool */
    radix_events_t  *events;            /* radix_events.c, or NULL */
};

/* radix_events.c: started with the module when apps are given. */
int provend_radix_events_start(provend_radix_t *r,
    const provend_radix_config_t *cfg, char *err, size_t errlen);
void provend_radix_events_stop(provend_radix_t *r);
void provend_radix_events_free(provend_radix_t *r);
void provend_radix_op_events(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

/* radix_nft.c: where a non-fungible is, for an app's NFT scope. */
void provend_radix_op_nft(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

#endif /* PROVEND_RADIX_INT_H */
