/*
 * The node's own TLS certificate, from an ACME CA (tls.c, acme.c).
 *
 * With --acme-directory URL and --acme-domain NAME, provend keeps a
 * certificate for NAME: ordered with TLS-ALPN-01 when it has none, or
 * once a third of its lifetime is left (again after 1, 2, 4 ... 60
 * minutes when an order fails).  Its keys are made here and kept only
 * sealed with a key of the master key's (DATA/tls/acme/: account.sealed,
 * NAME.key.sealed, NAME.crt); nginx reads the live pair from --tls-live
 * DIR (DIR/NAME.pem: key, then chain, 0600: in an enclave a directory of
 * its memory, /run) and a pending challenge from DIR/challenge/NAME.pem.
 *
 * Ops (provend's socket): tls.status {} -> {domain, state: "none" |
 * "ordering" | "valid", not_after, renew_at, orders, last_error?};
 * tls.renew {} orders now (conflict while one is under way).
 */

#ifndef PROVEND_TLS_H
#define PROVEND_TLS_H

#include <stdint.h>

#include "core/keys.h"
#include "core/ops.h"


typedef struct provend_tls_s  provend_tls_t;

typedef struct {
    void            *loop;          /* uv_loop_t * */
    const char      *data_dir;
    const char      *live_dir;      /* NULL: DATA/tls/live */
    const char      *directory;
    const char      *domain;
    const char      *contact;       /* or NULL */
    const char      *ca_file;       /* the ACME server's CA, or NULL */
    const char      *proxy;         /* an HTTP proxy, or NULL */
    const uint8_t   *master;        /* seals the keys */
} provend_tls_config_t;

provend_tls_t *provend_tls_open(const provend_tls_config_t *cfg, char *err,
    size_t errlen);
void provend_tls_stop(provend_tls_t *t);
void provend_tls_free(provend_tls_t *t);

/* tls.status, tls.renew */
extern const provend_op_t  provend_tls_ops[];

#endif /* PROVEND_TLS_H */
