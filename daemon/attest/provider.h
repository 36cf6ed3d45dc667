/*
 * Attestation providers behind one small interface, so the server does not
 * care whether documents come from the Nitro Secure Module or from the dev
 * PKI.  An attestation is a job in three steps:
 *   prepare  (loop thread)  takes what run needs, e.g. a reference to the
 *                           signing key, so a reload cannot free it;
 *   run      (any thread)   produces the document; touches only the job;
 *   finish   (loop thread)  drops what prepare took, learns from the result.
 */

#ifndef PROVEND_PROVIDER_H
#define PROVEND_PROVIDER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#include "proven.h"

#define PROVEND_PCR_COUNT  16
#define PROVEND_PCR_LEN    48   /* SHA384 */

typedef struct {
    /* request fields, owned copies; present == 0 means null */
    proven_buf_t   nonce;
    proven_buf_t   user_data;
    proven_buf_t   public_key;

    void          *snapshot;   /* the provider's, from prepare to finish */

    /* result: doc (malloc()ed, caller frees) or rc PROVEN_ERR and err */
    int            rc;
    uint8_t       *doc;
    size_t         doc_len;
    char           err[PROVEN_ERR_LEN];
} provend_attest_job_t;

/* The outcome of an attestation for another part of provend. */
typedef void (*provend_attest_done_pt)(void *data, int rc,
    const uint8_t *doc, size_t doc_len, const char *err);

typedef struct {
    char           module_id[PROVEN_ATT_MODULE_ID_MAX + 1];
    size_t         pcr_count;
    proven_pcr_t   pcrs[PROVEN_ATT_PCRS_MAX];
} provend_status_t;

typedef struct provend_provider_s  provend_provider_t;

struct provend_provider_s {
    const char  *name;          /* "dev" or "nsm" */
    void        *data;

    int        (*prepare)(provend_provider_t *p, provend_attest_job_t *job);
    void       (*run)(provend_provider_t *p, provend_attest_job_t *job);
    void       (*finish)(provend_provider_t *p, provend_attest_job_t *job);

    void       (*status)(provend_provider_t *p, provend_status_t *st);

    /* SIGHUP: re-measure, renew; on failure the old state stays in use. */
    int        (*reload)(provend_provider_t *p, char *err, size_t errlen);

    /* Renews what is due; returns ms until it wants to be called again. */
    uint64_t   (*maintain)(provend_provider_t *p);

    void       (*destroy)(provend_provider_t *p);
};

/* Copies the request fields into job (zeroed first); NULL means null. */
int provend_attest_job_init(provend_attest_job_t *job,
    const proven_buf_t *nonce, const proven_buf_t *user_data,
    const proven_buf_t *public_key);
void provend_attest_job_free(provend_attest_job_t *job);

/* prepare, run and finish on the calling thread (tests, tools). */
int provend_attest_sync(provend_provider_t *p, provend_attest_job_t *job);

void provend_provider_destroy(provend_provider_t *p);


/* ---- dev provider (daemon/provider_dev.c) ------------------------------- */

#define PROVEND_DEV_ROOT_DAYS          3650
#define PROVEND_DEV_INTERMEDIATE_DAYS  365
#define PROVEND_DEV_LEAF_SECONDS       (3 * 3600)

typedef struct {
    uint32_t     index;        /* 1..15 */
    const char  *path;         /* a regular file */
} provend_measure_t;

typedef struct {
    const char               *data_dir;   /* keys in DATA/attestation/ */
    const char               *node_id;    /* 32 hex digits */
    const char               *self_exe;   /* NULL: /proc/self/exe */
    const provend_measure_t  *measures;
    size_t                    measure_count;
    const char               *pcrs_file;  /* NULL, or PCR0-2 from it */
} provend_dev_config_t;

provend_provider_t *provend_dev_new(const provend_dev_config_t *cfg,
    char *err, size_t errlen);

/*
 * TPM-style measurement: every PCR starts at zeros; PCR2 is extended with
 * self_exe, then each measure extends its PCR in order, as
 * PCR = SHA384(PCR || SHA384(contents)); finally
 * PCR0 = SHA384(PCR1 || PCR2 || PCR3).
 */
int provend_dev_measure(const char *self_exe,
    const provend_measure_t *measures, size_t count,
    uint8_t pcrs[PROVEND_PCR_COUNT][PROVEND_PCR_LEN], char *err,
    size_t errlen);


/* ---- nsm provider (daemon/provider_nsm.c) ------------------------------- */

#define PROVEND_NSM_DEVICE        "/dev/nsm"
#define PROVEND_NSM_REQUEST_MAX   (4 * 1024)
#define PROVEND_NSM_RESPONSE_MAX  (16 * 1024)

/* The Linux nsm driver's ioctl argument: two user buffers. */
typedef struct {
    struct iovec  request;
    struct iovec  response;     /* in: capacity, out: bytes written */
} provend_nsm_message_t;

#define PROVEND_NSM_IOCTL  _IOWR(0x0A, 0, provend_nsm_message_t)

/* The device calls, replaceable so tests can plug in a fake device. */
typedef struct {
    int  (*open)(const char *path);
    int  (*ioctl)(int fd, unsigned long request, void *arg);
    int  (*close)(int fd);
} provend_nsm_ops_t;

extern const provend_nsm_ops_t  provend_nsm_sys_ops;

/* ops NULL: the real device calls. */
provend_provider_t *provend_nsm_new(const char *path,
    const provend_nsm_ops_t *ops, char *err, size_t errlen);

/* {"Attestation": {"user_data", "nonce", "public_key"}}, nulls if absent */
int provend_nsm_request_encode(const proven_buf_t *nonce,
    const proven_buf_t *user_data, const proven_buf_t *public_key,
    uint8_t **out, size_t *outlen, char *err, size_t errlen);

/* {"Attestation": {"document": bstr}} or {"Error": text} */
int provend_nsm_response_decode(const uint8_t *buf, size_t len,
    uint8_t **doc, size_t *doc_len, char *err, size_t errlen);

/* One request/response exchange on an open device. */
int provend_nsm_exchange(const provend_nsm_ops_t *ops, int fd,
    const uint8_t *req, size_t req_len, uint8_t *resp, size_t *resp_len,
    char *err, size_t errlen);

#endif /* PROVEND_PROVIDER_H */
