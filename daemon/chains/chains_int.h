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
typedef struct provend_nft_s     provend_nft_t;
typedef struct provend_gov_s     provend_gov_t;

struct provend_chains_s {
    uv_loop_t  *loop;
    char        rpc[1024];
    char        proxy[512];
    uint8_t     checkpoint[32];
    char        checkpoint_hex[67];
    uint64_t    chain_id;               /* configured; 0: none */
    uv_work_t  *work;                   /* the read under way, or NULL */
    int         cancel;                 /* stopping: reads end at once */
    int                   have_header;  /* the checkpoint's, proved */
    provend_eth_header_t  header;
    provend_follow_t     *follow;       /* events: follow.c, or NULL */
    provend_nft_t        *nft;          /* nft.c */
    provend_gov_t        *gov;          /* governance.c, or NULL */
};


/* method(params) at the endpoint (params: a reference taken) by deadline
 * (uv_hrtime, ns), its answer max bytes at most: its "result", a new
 * reference; NULL and err. */
json_t *provend_chains_call(provend_chains_t *c, uint64_t deadline,
    const char *method, json_t *params, size_t max, char *err,
    size_t errlen);

#define CHAINS_SLOTS_MAX    16
#define CHAINS_TIMEOUT_MS   10000       /* a whole read */

/* A read of an account and its slots at one header: on the pool. */
typedef struct {
    uv_work_t              work;
    provend_chains_t      *c;
    provend_ops_reply_pt   reply;
    void                  *ctx;
    uint64_t               id;
    uint8_t                address[20];
    uint8_t                slots[CHAINS_SLOTS_MAX][32];
    size_t                 nslots;
    uint64_t               deadline;    /* uv_hrtime, ns */
    int                    have_header; /* kept from a read before */
    int                    followed;    /* a followed block's, not kept */

    /* what was proved */
    int                    rc;
    char                   err[PROVEN_ERR_LEN];
    provend_eth_header_t   header;
    int                    exists;
    provend_eth_account_t  account;
    uint8_t                values[CHAINS_SLOTS_MAX][32];
    size_t                 value_lens[CHAINS_SLOTS_MAX];
} chains_read_t;

/* A read's work (provend_chains_read_work): r->rc and r->err, and what was
 * proved. */
void provend_chains_read_work(uv_work_t *work);

/* r's slots of address read at a followed header on the pool, done on the
 * loop: PROVEN_ERR when it cannot start (r is the caller's then). */
int provend_chains_read_at(provend_chains_t *c, chains_read_t *r,
    const uint8_t address[20], const provend_eth_header_t *header,
    uv_after_work_cb done);

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

/* nft.c: NFT ownership proved for apps' calls (nft.open). */
int provend_nft_open(provend_chains_t *c, const provend_chains_config_t *cfg,
    char *err, size_t errlen);
void provend_nft_stop(provend_chains_t *c);
void provend_nft_free(provend_chains_t *c);
void provend_nft_op_open(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

/* governance.c: started after the follower, when configured. */
int provend_governance_open(provend_chains_t *c,
    const provend_chains_config_t *cfg, char *err, size_t errlen);
void provend_governance_stop(provend_chains_t *c);
void provend_governance_free(provend_chains_t *c);
void provend_governance_op_status(void *subsystem, const provend_op_t *op,
    const proven_request_t *req, provend_ops_reply_pt reply, void *ctx);

#endif /* PROVEND_CHAINS_INT_H */
