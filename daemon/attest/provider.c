/* What every provider shares: attestation jobs. */

#include <stdlib.h>
#include <string.h>

#include "provider.h"


static int
provend_buf_copy(proven_buf_t *dst, const proven_buf_t *src)
{
    if (src == NULL || !src->present) {
        return PROVEN_OK;
    }

    if (src->len > PROVEN_ATT_FIELD_MAX) {
        return PROVEN_ERR;
    }

    /* One byte more, so that an empty byte string has a buffer too. */
    dst->data = malloc(src->len + 1);
    if (dst->data == NULL) {
        return PROVEN_ERR;
    }

    if (src->len) {
        memcpy(dst->data, src->data, src->len);
    }

    dst->len = src->len;
    dst->present = 1;
    return PROVEN_OK;
}


int
provend_attest_job_init(provend_attest_job_t *job, const proven_buf_t *nonce,
    const proven_buf_t *user_data, const proven_buf_t *public_key)
{
    memset(job, 0, sizeof(*job));
    job->rc = PROVEN_ERR;

    if (provend_buf_copy(&job->nonce, nonce) != PROVEN_OK
        || provend_buf_copy(&job->user_data, user_data) != PROVEN_OK
        || provend_buf_copy(&job->public_key, public_key) != PROVEN_OK)
    {
        provend_attest_job_free(job);
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


void
provend_attest_job_free(provend_attest_job_t *job)
{
    free(job->nonce.data);
    free(job->user_data.data);
    free(job->public_key.data);
    free(job->doc);
    memset(job, 0, sizeof(*job));
}


int
provend_attest_sync(provend_provider_t *p, provend_attest_job_t *job)
{
    if (p->prepare(p, job) != PROVEN_OK) {
        job->rc = PROVEN_ERR;
        return PROVEN_ERR;
    }

    p->run(p, job);
    p->finish(p, job);
    return job->rc;
}


void
provend_provider_destroy(provend_provider_t *p)
{
    if (p != NULL) {
        p->destroy(p);
    }
}
