/*
 * One HTTP(S) GET (or POST) through libcurl, for provend (admitting a
 * peer, a chain's JSON-RPC) and the `proven` command (attest, cluster
 * status): http and https only, no
 * redirects, a deadline, a bounded body.  Kept out of lib/ proper so that
 * the nginx modules, which compile the files of lib/ itself, do not link
 * libcurl.
 * curl_global_init() is the caller's, once, before any thread.
 */

#ifndef PROVEN_FETCH_H
#define PROVEN_FETCH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    long          timeout_ms;
    size_t        max;          /* the largest body taken */
    int           insecure;     /* no TLS check: who answers is proved
                                   otherwise (an attestation) */
    int           want_cert;    /* the peer's TLS certificate, as PEM */
    const char   *accept;       /* an Accept header, or NULL */
    const char   *proxy;        /* an HTTP proxy for every URL (in an
                                   enclave, its egress), or NULL:
                                   libcurl's *_proxy variables */
    const char   *post;         /* a body to POST, or NULL: a GET */
    size_t        post_len;
    const char   *content_type; /* the POST's, or NULL */
    const int    *cancel;       /* set (atomically, by another thread):
                                   the fetch ends at once; or NULL */
} proven_fetch_opts_t;

typedef struct {
    long          status;       /* HTTP */
    uint8_t      *body;         /* malloc()ed, NUL terminated */
    size_t        len;
    int           too_large;    /* more than max bytes came */
    char         *cert_pem;     /* want_cert: malloc()ed, or NULL */
} proven_fetch_t;

/*
 * GETs (or POSTs opts->post to) url into f.  PROVEN_OK once an answer came (any status: the caller
 * reads f->status); PROVEN_ERR with err filled when none did, or it was
 * larger than max.  Free f with proven_fetch_free() either way.
 */
int proven_fetch(const char *url, const proven_fetch_opts_t *opts,
    proven_fetch_t *f, char *err, size_t errlen);
void proven_fetch_free(proven_fetch_t *f);

#endif /* PROVEN_FETCH_H */
