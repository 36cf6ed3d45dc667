/*
 * The nsm attestation provider: asks the Nitro Secure Module for documents
 * through the Linux nsm driver (one ioctl carries a CBOR request and
 * receives a CBOR response).  The device calls sit behind
 * provend_nsm_ops_t so tests can answer with a fake device.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "provider.h"



typedef struct {
    int                       fd;
    const provend_nsm_ops_t  *ops;
    provend_status_t          last;     /* from the last document */
} provend_nsm_t;


static int
provend_nsm_sys_open(const char *path)
{
    return open(path, O_RDWR | O_CLOEXEC);
}


static int
provend_nsm_sys_ioctl(int fd, unsigned long request, void *arg)
{
    return ioctl(fd, request, arg);
}


const provend_nsm_ops_t  provend_nsm_sys_ops = {
    provend_nsm_sys_open,
    provend_nsm_sys_ioctl,
    close
};


static cbor_item_t *
provend_nsm_field(const proven_buf_t *buf)
{
    if (buf == NULL || !buf->present) {
        return cbor_new_null();
    }

    return cbor_build_bytestring(buf->data, buf->len);
}


int
provend_nsm_request_encode(const proven_buf_t *nonce,
    const proven_buf_t *user_data, const proven_buf_t *public_key,
    uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
    int                  rc;
    size_t               i;
    cbor_item_t         *request, *args;
    const proven_buf_t  *fields[3];

    rc = PROVEN_ERR;
    args = NULL;

    fields[0] = user_data;
    fields[1] = nonce;
    fields[2] = public_key;

    for (i = 0; i < 3; i++) {
        if (fields[i] && fields[i]->present
            && fields[i]->len > PROVEN_ATT_FIELD_MAX)
        {
            proven_errf(err, errlen, "nsm request field larger than %d bytes",
                        PROVEN_ATT_FIELD_MAX);
            return PROVEN_ERR;
        }
    }

    request = cbor_new_definite_map(1);
    args = cbor_new_definite_map(3);
    if (request == NULL || args == NULL) {
        goto failed;
    }

    if (proven_cbor_map_put(args, "user_data", provend_nsm_field(user_data))
        != PROVEN_OK
        || proven_cbor_map_put(args, "nonce", provend_nsm_field(nonce))
           != PROVEN_OK
        || proven_cbor_map_put(args, "public_key",
                               provend_nsm_field(public_key)) != PROVEN_OK)
    {
        goto failed;
    }

    /* map_put takes over args whatever it returns. */
    rc = proven_cbor_map_put(request, "Attestation", args);
    args = NULL;
    if (rc != PROVEN_OK) {
        goto failed;
    }

    rc = PROVEN_ERR;

    if (proven_cbor_dump(request, out, outlen) != PROVEN_OK) {
        goto failed;
    }

    rc = PROVEN_OK;

failed:

    if (rc != PROVEN_OK) {
        proven_errf(err, errlen, "cannot encode the nsm request");
    }

    if (args != NULL) {
        cbor_decref(&args);
    }

    if (request != NULL) {
        cbor_decref(&request);
    }

    return rc;
}


/* The one key of a response map: {"Attestation": ...} or {"Error": ...} */
static cbor_item_t *
provend_nsm_response_load(const uint8_t *buf, size_t len, const char *want,
    cbor_item_t **body, char *err, size_t errlen)
{
    char         *text;
    size_t        tlen;
    cbor_item_t  *root, *item;

    root = proven_cbor_load(buf, len, err, errlen);
    if (root == NULL) {
        return NULL;
    }

    item = proven_cbor_map_get(root, "Error");
    if (item != NULL) {
        if (proven_cbor_text(item, 128, &text, &tlen) == PROVEN_OK) {
            proven_errf(err, errlen, "nsm error: %s", text);
            free(text);
        } else {
            proven_errf(err, errlen, "nsm error (not text)");
        }
        goto failed;
    }

    item = proven_cbor_map_get(root, want);
    if (item == NULL || !cbor_isa_map(item)) {
        proven_errf(err, errlen, "nsm response without a \"%s\" map", want);
        goto failed;
    }

    *body = item;
    return root;

failed:

    cbor_decref(&root);
    return NULL;
}


int
provend_nsm_response_decode(const uint8_t *buf, size_t len, uint8_t **doc,
    size_t *doc_len, char *err, size_t errlen)
{
    int           rc;
    cbor_item_t  *root, *body;

    if (len > PROVEND_NSM_RESPONSE_MAX) {
        proven_errf(err, errlen, "nsm response larger than %d bytes",
                    PROVEND_NSM_RESPONSE_MAX);
        return PROVEN_ERR;
    }

    root = provend_nsm_response_load(buf, len, "Attestation", &body, err,
                                     errlen);
    if (root == NULL) {
        return PROVEN_ERR;
    }

    rc = proven_cbor_bytes(proven_cbor_map_get(body, "document"),
                           PROVEND_NSM_RESPONSE_MAX, doc, doc_len);
    if (rc != PROVEN_OK) {
        proven_errf(err, errlen, "nsm attestation without a \"document\" byte "
                    "string");
    } else if (*doc_len == 0) {
        free(*doc);
        *doc = NULL;
        proven_errf(err, errlen, "nsm returned an empty document");
        rc = PROVEN_ERR;
    }

    cbor_decref(&root);
    return rc;
}


int
provend_nsm_exchange(const provend_nsm_ops_t *ops, int fd,
    const uint8_t *req, size_t req_len, uint8_t *resp, size_t *resp_len,
    char *err, size_t errlen)
{
    size_t                 cap;
    provend_nsm_message_t  msg;

    if (req_len > PROVEND_NSM_REQUEST_MAX) {
        proven_errf(err, errlen, "nsm request larger than %d bytes",
                    PROVEND_NSM_REQUEST_MAX);
        return PROVEN_ERR;
    }

    cap = *resp_len;

    memset(&msg, 0, sizeof(msg));
    msg.request.iov_base = (void *) req;
    msg.request.iov_len = req_len;
    msg.response.iov_base = resp;
    msg.response.iov_len = cap;

    if (ops->ioctl(fd, PROVEND_NSM_IOCTL, &msg) != 0) {
        proven_errf(err, errlen, "nsm ioctl: %s", strerror(errno));
        return PROVEN_ERR;
    }

    /* A driver that claims more than the buffer holds is not believed. */
    if (msg.response.iov_len == 0 || msg.response.iov_len > cap) {
        proven_errf(err, errlen, "nsm response of %zu bytes (buffer %zu)",
                    msg.response.iov_len, cap);
        return PROVEN_ERR;
    }

    *resp_len = msg.response.iov_len;
    return PROVEN_OK;
}


static void
provend_nsm_run(provend_provider_t *p, provend_attest_job_t *job)
{
    size_t          req_len, resp_len;
    uint8_t        *req, *resp;
    provend_nsm_t  *nsm;

    nsm = p->data;
    req = NULL;
    job->rc = PROVEN_ERR;

    resp = malloc(PROVEND_NSM_RESPONSE_MAX);
    if (resp == NULL) {
        snprintf(job->err, sizeof(job->err), "out of memory");
        return;
    }

    if (provend_nsm_request_encode(&job->nonce, &job->user_data,
                                   &job->public_key, &req, &req_len,
                                   job->err, sizeof(job->err)) != PROVEN_OK)
    {
        goto failed;
    }

    resp_len = PROVEND_NSM_RESPONSE_MAX;

    if (provend_nsm_exchange(nsm->ops, nsm->fd, req, req_len, resp,
                             &resp_len, job->err, sizeof(job->err))
        != PROVEN_OK)
    {
        goto failed;
    }

    job->rc = provend_nsm_response_decode(resp, resp_len, &job->doc,
                                          &job->doc_len, job->err,
                                          sizeof(job->err));

failed:

    free(req);
    free(resp);
}


static int
provend_nsm_prepare(provend_provider_t *p, provend_attest_job_t *job)
{
    (void) p;
    (void) job;

    /* The device holds all state; nothing to pin. */
    return PROVEN_OK;
}


static void
provend_nsm_finish(provend_provider_t *p, provend_attest_job_t *job)
{
    size_t                    i;
    provend_nsm_t            *nsm;
    proven_attestation_doc_t  doc;

    nsm = p->data;

    if (job->rc != PROVEN_OK) {
        return;
    }

    /* status reports what the module said about itself last. */
    if (proven_attestation_decode(job->doc, job->doc_len, &doc, NULL, 0)
        == PROVEN_OK)
    {
        snprintf(nsm->last.module_id, sizeof(nsm->last.module_id), "%s",
                 doc.module_id);
        nsm->last.pcr_count = doc.pcr_count;
        for (i = 0; i < doc.pcr_count; i++) {
            nsm->last.pcrs[i] = doc.pcrs[i];
        }
    }

    proven_attestation_doc_free(&doc);
}


static void
provend_nsm_status(provend_provider_t *p, provend_status_t *st)
{
    provend_nsm_t  *nsm;

    nsm = p->data;
    *st = nsm->last;
}


static int
provend_nsm_reload(provend_provider_t *p, char *err, size_t errlen)
{
    (void) p;
    (void) err;
    (void) errlen;

    /* The module measures itself; there is nothing to renew. */
    return PROVEN_OK;
}


static uint64_t
provend_nsm_maintain(provend_provider_t *p)
{
    (void) p;
    return 3600 * 1000;
}


static void
provend_nsm_destroy(provend_provider_t *p)
{
    provend_nsm_t  *nsm;

    nsm = p->data;

    if (nsm->fd != -1) {
        nsm->ops->close(nsm->fd);
    }

    free(nsm);
    free(p);
}


/* DescribeNSM gives the module id before the first attestation. */
static void
provend_nsm_describe(provend_nsm_t *nsm)
{
    char          e[PROVEN_ERR_LEN], *id;
    size_t        req_len, resp_len, id_len;
    uint8_t      *req, *resp;
    cbor_item_t  *item, *root, *body;

    req = NULL;
    root = NULL;

    resp = malloc(PROVEND_NSM_RESPONSE_MAX);
    item = cbor_build_string("DescribeNSM");
    if (resp == NULL || item == NULL
        || proven_cbor_dump(item, &req, &req_len) != PROVEN_OK)
    {
        snprintf(e, sizeof(e), "out of memory");
        goto failed;
    }

    resp_len = PROVEND_NSM_RESPONSE_MAX;

    if (provend_nsm_exchange(nsm->ops, nsm->fd, req, req_len, resp,
                             &resp_len, e, sizeof(e)) != PROVEN_OK)
    {
        goto failed;
    }

    root = provend_nsm_response_load(resp, resp_len, "DescribeNSM", &body,
                                     e, sizeof(e));
    if (root == NULL) {
        goto failed;
    }

    if (proven_cbor_text(proven_cbor_map_get(body, "module_id"),
                         PROVEN_ATT_MODULE_ID_MAX, &id, &id_len)
        != PROVEN_OK)
    {
        snprintf(e, sizeof(e), "DescribeNSM without a module_id");
        goto failed;
    }

    snprintf(nsm->last.module_id, sizeof(nsm->last.module_id), "%s", id);
    free(id);
    goto done;

failed:

    provend_warn("nsm: DescribeNSM failed: %s", e);

done:

    if (root != NULL) {
        cbor_decref(&root);
    }

    if (item != NULL) {
        cbor_decref(&item);
    }

    free(req);
    free(resp);
}


provend_provider_t *
provend_nsm_new(const char *path, const provend_nsm_ops_t *ops, char *err,
    size_t errlen)
{
    provend_nsm_t       *nsm;
    provend_provider_t  *p;

    p = calloc(1, sizeof(*p));
    nsm = calloc(1, sizeof(*nsm));
    if (p == NULL || nsm == NULL) {
        free(p);
        free(nsm);
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }

    nsm->ops = ops ? ops : &provend_nsm_sys_ops;
    nsm->fd = nsm->ops->open(path ? path : PROVEND_NSM_DEVICE);
    if (nsm->fd == -1) {
        proven_errf(err, errlen,
                    "open %s: %s", path ? path : PROVEND_NSM_DEVICE,
                    strerror(errno));
        free(nsm);
        free(p);
        return NULL;
    }

    p->name = "nsm";
    p->data = nsm;
    p->prepare = provend_nsm_prepare;
    p->run = provend_nsm_run;
    p->finish = provend_nsm_finish;
    p->status = provend_nsm_status;
    p->reload = provend_nsm_reload;
    p->maintain = provend_nsm_maintain;
    p->destroy = provend_nsm_destroy;

    provend_nsm_describe(nsm);
    return p;
}
