/*
 * provend's command line: one table of options (name, argument, type,
 * bounds, default, help) that parses argv and prints the usage text, like
 * redis's config table.  A default is text parsed as a value would be,
 * so what the usage says is what runs.
 */

#ifndef PROVEND_OPTIONS_H
#define PROVEND_OPTIONS_H

#include <stddef.h>
#include <stdio.h>

#include "attest/provider.h"

#define PROVEND_MEASURE_MAX  64

typedef struct {
    const char         *data_dir;
    const char         *socket_path;      /* NULL: DATA/provend.sock */
    const char         *provider;         /* auto, nsm, dev */
    const char         *log_level;
    unsigned long       threads;          /* 0: online CPUs */
    unsigned long       kv_max_value;
    unsigned long       storage_heap_limit;   /* 0: SQLite's own */
    unsigned long       kv_memory_limit;  /* 0: the storage's default */
    const char         *runtime_dir;      /* NULL: no applications */
    const char         *node;             /* NULL: node from PATH */
    unsigned long       app_memory;       /* MB */
    const char         *app_sandbox;      /* on, off */
    unsigned long       app_workers;      /* 0: online CPUs, at most 4 */
    unsigned long       eth_poll_ms;      /* 0: 2000 */
    unsigned long       app_memory_total;
    unsigned long       app_idle;
    unsigned long       session_idle;     /* 0: the sessions' default */
    unsigned long       session_life;
    unsigned long       session_max;
    unsigned long       session_rate;
    unsigned long       radix_network;
    unsigned long       message_rate;
    const char         *session_origins;  /* any, listed; NULL: by provider */
    const char         *cluster_file;
    const char         *cluster_if;       /* --cluster when there */
    const char         *nats_server;
    const char         *pcrs_file;
    const char         *keyd;             /* NULL: no keyd */
    const char         *master_key;       /* file, enclave; NULL: by
                                             provider */
    const char         *acme_directory;   /* the node's certificate */
    const char         *acme_domain;
    const char         *acme_contact;
    const char         *acme_ca;
    const char         *acme_proxy;
    const char         *tls_live;
    const char         *eth_rpc;          /* chains/chains.h */
    const char         *eth_checkpoint;
    unsigned long       eth_chain_id;     /* 0: not configured */
    const char         *eth_tls;          /* required, optional; NULL */
    const char         *governance;       /* chains/governance.c */
    unsigned long       governance_confirmations;
    unsigned long       governance_every;
    const char         *eth_proxy;
    const char         *radix_gateway;    /* chains/radix.h */
    const char         *radix_proxy;
    const char         *radix_tls;        /* required, optional; NULL */
    unsigned long       radix_poll_ms;    /* 0: 2000 */
    const char         *keyd_identity;
    const char         *keyd_key_id;
    const char         *keyd_release;
    unsigned long       keyd_wait;
    const char         *backup;           /* --backup FILE, then exit */
    const char         *restore;          /* --restore FILE, then exit */
    const char         *restore_pending;  /* restored if there, then run */
    size_t              measure_count;
    provend_measure_t   measures[PROVEND_MEASURE_MAX];
} provend_options_t;

#define PROVEND_OPTIONS_OK    0
#define PROVEND_OPTIONS_ERR   2          /* a usage error: said on stderr */
#define PROVEND_OPTIONS_HELP  1          /* --help: usage on stdout */

/*
 * Fills o from the defaults, then argv (--name VALUE or --name=VALUE).
 * argv's strings are kept (not copied); --measure's are changed in place.
 */
int provend_options_parse(provend_options_t *o, int argc, char **argv);

void provend_options_usage(FILE *out);

#endif /* PROVEND_OPTIONS_H */
