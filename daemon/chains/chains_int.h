/*
 * What chains.c (reads) and follow.c (events) share: the module's state
 * and the endpoint's calls.
 */

#ifndef PROVEND_CHAINS_INT_H
#define PROVEND_CHAINS_INT_H

#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "proven.h"
#include "chains.h"
#include "eth.h"


#define CHAINS_ANSWER_MAX   (256 * 1024)        /* one answer */

typedef struct provend_follow_s  provend_follow_t;

struct provend_chains_s {
    uv_loop_t  *loop;
    char        rpc[1024];
    char        proxy[512];
    uint8_t     checkpoint[32];
    char        checkpoint_hex[67];
    uv_work_t  *work;                   /* the read under way, or NULL */
    int         cancel;                 /* stopping: reads end at once */
    int                   have_header;  /* the checkpoint's, proved */
    provend_eth_header_t  header;
    provend_follow_t     *follow;       /* events: follow.c, or NULL */
};


/* method(params) at the endpoint (params: a reference taken) by deadline
 * (uv_hrtime, ns), its answer max bytes at most: its "result", a new
 * reference; NULL and err. */
json_t *provend_chains_call(provend_chains_t *c, uint64_t deadline,
    const char *method, json_t *params, size_t max, char *err,
    size_t errlen);

/* "0x" and the hex of len bytes into out (2 * len + 3). */
void provend_chains_hex(const uint8_t *in, size_t len, char *out);

/* follow.c: started with the module when apps are given; stopped (the
 * thread told to end) on the loop, joined and freed after it. */
int provend_follow_start(provend_chains_t *c,
    const provend_chains_config_t *cfg, char *err, size_t errlen);
void provend_follow_stop(provend_chains_t *c);
void provend_follow_free(provend_chains_t *c);

/*
 * The followed block confirmations below the head (hashed here, linked
 * to the checkpoint; which chain is the endpoint's word): PROVEN_ERR and
 * err when none is (no apps, not caught up, too few blocks).  Any thread.
 */
int provend_follow_header(provend_chains_t *c, unsigned confirmations,
    provend_eth_header_t *header, char *err, size_t errlen);

#endif /* PROVEND_CHAINS_INT_H */
