/*
 * The dev attestation provider: documents in Nitro's exact format, signed
 * by a local P-384 PKI (root -> intermediate -> short-lived leaf) kept in
 * DATA/attestation/, with PCRs measured from the files the node runs.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/log.h"
#include "provider.h"
#include "core/util.h"


#define PROVEND_DEV_PEM_MAX   (64 * 1024)
#define PROVEND_DEV_PATH_MAX  4096

/* Certificates start a minute early so small clock skew does not hurt. */
#define PROVEND_DEV_BACKDATE  60


typedef struct {
    const char  *name;          /* "root", "intermediate", "leaf" */
    const char  *key_file;
    const char  *cert_file;
    int64_t      lifetime;      /* seconds */
    int          is_ca;
    int          renew_early;   /* when a third of the lifetime is left */

    EVP_PKEY    *key;
    X509        *cert;
    uint8_t     *der;
    size_t       der_len;
    int64_t      not_before;
    int64_t      not_after;
} provend_dev_level_t;

enum { PROVEND_DEV_ROOT = 0, PROVEND_DEV_INTER, PROVEND_DEV_LEAF,
       PROVEND_DEV_LEVELS };

typedef struct {
    char                  dir[PROVEND_DEV_PATH_MAX];
    char                  node_id[64];
    char                  module_id[PROVEN_ATT_MODULE_ID_MAX + 1];
    char                 *self_exe;
    char                 *pcrs_file;
    provend_measure_t    *measures;
    size_t                measure_count;
    uint8_t               pcrs[PROVEND_PCR_COUNT][PROVEND_PCR_LEN];
    provend_dev_level_t   levels[PROVEND_DEV_LEVELS];
} provend_dev_t;

/* What one job needs, taken on the loop thread, immune to renewals. */
typedef struct {
    EVP_PKEY                  *key;
    uint8_t                   *blob;     /* leaf, root, intermediate DER */
    proven_attestation_doc_t   doc;
} provend_dev_snapshot_t;


static void provend_dev_destroy(provend_provider_t *p);


/* ---- measurements -------------------------------------------------------- */

static int
provend_dev_hash_file(const char *path, uint8_t digest[PROVEND_PCR_LEN],
    char *err, size_t errlen)
{
    int           fd, rc;
    ssize_t       n;
    uint8_t       buf[64 * 1024];
    EVP_MD_CTX   *md;
    struct stat   st;

    rc = PROVEN_ERR;
    md = NULL;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        proven_errf(err, errlen,
                    "cannot measure %s: %s", path, strerror(errno));
        return PROVEN_ERR;
    }

    if (fstat(fd, &st) != 0) {
        proven_errf(err, errlen,
                    "cannot measure %s: %s", path, strerror(errno));
        goto failed;
    }

    /* Directories, devices and pipes have no stable content to hash. */
    if (!S_ISREG(st.st_mode)) {
        proven_errf(err, errlen, "cannot measure %s: %s", path,
                    S_ISDIR(st.st_mode) ? "is a directory"
                    : "not a regular file");
        goto failed;
    }

    md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha384(), NULL) != 1) {
        proven_errf(err, errlen, "cannot start SHA384");
        goto failed;
    }

    for ( ;; ) {
        n = read(fd, buf, sizeof(buf));
        if (n == 0) {
            break;
        }
        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            proven_errf(err, errlen,
                        "cannot measure %s: %s", path, strerror(errno));
            goto failed;
        }
        if (EVP_DigestUpdate(md, buf, (size_t) n) != 1) {
            proven_errf(err, errlen, "SHA384 failed");
            goto failed;
        }
    }

    if (EVP_DigestFinal_ex(md, digest, NULL) != 1) {
        proven_errf(err, errlen, "SHA384 failed");
        goto failed;
    }

    rc = PROVEN_OK;

failed:

    EVP_MD_CTX_free(md);
    close(fd);
    return rc;
}


static int
provend_dev_sha384(const uint8_t *data, size_t len,
    uint8_t digest[PROVEND_PCR_LEN])
{
    return EVP_Digest(data, len, digest, NULL, EVP_sha384(), NULL) == 1
           ? PROVEN_OK : PROVEN_ERR;
}


static int
provend_dev_extend(uint8_t pcr[PROVEND_PCR_LEN], const char *path,
    char *err, size_t errlen)
{
    uint8_t  buf[2 * PROVEND_PCR_LEN];

    memcpy(buf, pcr, PROVEND_PCR_LEN);

    if (provend_dev_hash_file(path, buf + PROVEND_PCR_LEN, err, errlen)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    if (provend_dev_sha384(buf, sizeof(buf), pcr) != PROVEN_OK) {
        proven_errf(err, errlen, "SHA384 failed");
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


int
provend_dev_measure(const char *self_exe, const provend_measure_t *measures,
    size_t count, uint8_t pcrs[PROVEND_PCR_COUNT][PROVEND_PCR_LEN],
    char *err, size_t errlen)
{
    size_t   i;
    uint8_t  image[3 * PROVEND_PCR_LEN];

    memset(pcrs, 0, PROVEND_PCR_COUNT * PROVEND_PCR_LEN);

    if (provend_dev_extend(pcrs[2], self_exe ? self_exe : "/proc/self/exe",
                           err, errlen) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    for (i = 0; i < count; i++) {
        if (measures[i].index < 1
            || measures[i].index >= PROVEND_PCR_COUNT)
        {
            proven_errf(err, errlen, "PCR %u cannot be measured into (1..%d)",
                        measures[i].index, PROVEND_PCR_COUNT - 1);
            return PROVEN_ERR;
        }

        if (provend_dev_extend(pcrs[measures[i].index], measures[i].path,
                               err, errlen) != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
    }

    /* PCR0 stands for the whole image, as Nitro's does. */
    memcpy(image, pcrs[1], 3 * PROVEND_PCR_LEN);

    if (provend_dev_sha384(image, sizeof(image), pcrs[0]) != PROVEN_OK) {
        proven_errf(err, errlen, "SHA384 failed");
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


/*
 * An image's PCR0-2, measured by whoever loaded it (proven-host under
 * qemu plays the hypervisor): exactly 3 x 48 bytes, they replace the
 * provider's own.  Under qemu the host hands them in and could hand in
 * anything: the dev provider's documents are for tests, as ever.
 */
static int
provend_dev_image_pcrs(const char *path,
    uint8_t pcrs[PROVEND_PCR_COUNT][PROVEND_PCR_LEN], char *err,
    size_t errlen)
{
    int      fd;
    size_t   len;
    ssize_t  n;
    uint8_t  data[3 * PROVEND_PCR_LEN + 1];

    /* read to the end: sysfs (qemu's fw_cfg) gives no size to stat */
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        proven_errf(err, errlen, "open %s: %s", path, strerror(errno));
        return PROVEN_ERR;
    }
    for (len = 0; len < sizeof(data); len += (size_t) n) {
        n = read(fd, data + len, sizeof(data) - len);
        if (n < 0 && errno == EINTR) {
            n = 0;
            continue;
        }
        if (n <= 0) {
            break;
        }
    }
    close(fd);

    if (n < 0 || len != 3 * PROVEND_PCR_LEN) {
        proven_errf(err, errlen, "%s: %s, not PCR0-2 (%d bytes)", path,
                    n < 0 ? strerror(errno)
                    : len > 3 * PROVEND_PCR_LEN ? "too long" : "too short",
                    3 * PROVEND_PCR_LEN);
        return PROVEN_ERR;
    }

    memcpy(pcrs, data, len);
    return PROVEN_OK;
}


/* ---- the PKI ------------------------------------------------------------- */

static int
provend_dev_path(provend_dev_t *dev, const char *file, char *path)
{
    return (size_t) snprintf(path, PROVEND_DEV_PATH_MAX, "%s/%s", dev->dir,
                             file) < PROVEND_DEV_PATH_MAX
           ? PROVEN_OK : PROVEN_ERR;
}


static int64_t
provend_dev_asn1_time(const ASN1_TIME *t)
{
    struct tm  tm;

    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) {
        return -1;
    }

    return (int64_t) timegm(&tm);
}


static void
provend_dev_level_clear(provend_dev_level_t *lvl)
{
    EVP_PKEY_free(lvl->key);
    X509_free(lvl->cert);
    free(lvl->der);
    lvl->key = NULL;
    lvl->cert = NULL;
    lvl->der = NULL;
    lvl->der_len = 0;
}


/* Loads what is on disk; an absent or unreadable file leaves NULL. */
static void
provend_dev_level_load(provend_dev_t *dev, provend_dev_level_t *lvl)
{
    BIO      *bio;
    char      path[PROVEND_DEV_PATH_MAX], e[PROVEN_ERR_LEN];
    size_t    len;
    uint8_t  *pem;
    int       i;

    for (i = 0; i < 2; i++) {
        if (provend_dev_path(dev, i ? lvl->cert_file : lvl->key_file, path)
            != PROVEN_OK || access(path, F_OK) != 0)
        {
            continue;
        }

        if (proven_read_file(path, PROVEND_DEV_PEM_MAX, &pem, &len, e,
                             sizeof(e)) != PROVEN_OK)
        {
            provend_warn("dev %s: %s", lvl->name, e);
            continue;
        }

        bio = BIO_new_mem_buf(pem, (int) len);
        if (bio != NULL) {
            if (i) {
                lvl->cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
            } else {
                lvl->key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
            }
            BIO_free(bio);
        }

        free(pem);

        if ((i ? (void *) lvl->cert : (void *) lvl->key) == NULL) {
            provend_warn("dev %s: %s is not a PEM %s, ignored", lvl->name,
                         path, i ? "certificate" : "private key");
        }
    }
}


/* The reason the level needs new keys, or NULL when it is good. */
static const char *
provend_dev_level_check(provend_dev_level_t *lvl,
    provend_dev_level_t *parent, int64_t now)
{
    EVP_PKEY  *issuer_key;

    if (lvl->key == NULL || lvl->cert == NULL) {
        return "missing";
    }

    if (X509_check_private_key(lvl->cert, lvl->key) != 1) {
        return "certificate does not match the key";
    }

    issuer_key = parent ? parent->key : lvl->key;
    if (X509_verify(lvl->cert, issuer_key) != 1) {
        return "not issued by the current parent";
    }

    lvl->not_before = provend_dev_asn1_time(X509_get0_notBefore(lvl->cert));
    lvl->not_after = provend_dev_asn1_time(X509_get0_notAfter(lvl->cert));

    if (lvl->not_before < 0 || lvl->not_after <= lvl->not_before) {
        return "unreadable validity";
    }

    if (now >= lvl->not_after) {
        return "expired";
    }

    if (lvl->renew_early
        && lvl->not_after - now < (lvl->not_after - lvl->not_before) / 3)
    {
        return "due for renewal";
    }

    return NULL;
}


static int
provend_dev_write_pem(provend_dev_t *dev, const char *file, EVP_PKEY *key,
    X509 *cert, char *err, size_t errlen)
{
    int    rc;
    BIO   *bio;
    char   path[PROVEND_DEV_PATH_MAX], *data;
    long   len;

    if (provend_dev_path(dev, file, path) != PROVEN_OK) {
        proven_errf(err, errlen, "attestation directory path too long");
        return PROVEN_ERR;
    }

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }

    if ((key && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL,
                                         NULL) != 1)
        || (cert && PEM_write_bio_X509(bio, cert) != 1))
    {
        BIO_free(bio);
        proven_errf(err, errlen, "cannot write %s as PEM", file);
        return PROVEN_ERR;
    }

    len = BIO_get_mem_data(bio, &data);
    rc = proven_write_file(path, data, (size_t) len, key ? 0600 : 0644,
                           err, errlen);
    BIO_free(bio);
    return rc;
}


/* New key and certificate for lvl, written to disk before they are used. */
static int
provend_dev_level_new(provend_dev_t *dev, provend_dev_level_t *lvl,
    provend_dev_level_t *parent, int64_t now, char *err, size_t errlen)
{
    X509      *cert;
    char       cn[128];
    uint8_t   *der;
    size_t     der_len;
    EVP_PKEY  *key;

    cert = NULL;
    der = NULL;

    key = proven_pki_new_key(err, errlen);
    if (key == NULL) {
        return PROVEN_ERR;
    }

    snprintf(cn, sizeof(cn), "proven dev %s %.32s", lvl->name, dev->node_id);

    cert = proven_pki_new_cert(key, cn, parent ? parent->cert : NULL,
                               parent ? parent->key : NULL, lvl->is_ca,
                               now - PROVEND_DEV_BACKDATE,
                               now + lvl->lifetime, err, errlen);
    if (cert == NULL) {
        goto failed;
    }

    if (proven_pki_cert_der(cert, &der, &der_len) != PROVEN_OK) {
        proven_errf(err, errlen,
                    "cannot encode the dev %s certificate", lvl->name);
        goto failed;
    }

    if (provend_dev_write_pem(dev, lvl->key_file, key, NULL, err, errlen)
        != PROVEN_OK
        || provend_dev_write_pem(dev, lvl->cert_file, NULL, cert, err,
                                 errlen) != PROVEN_OK)
    {
        goto failed;
    }

    provend_dev_level_clear(lvl);
    lvl->key = key;
    lvl->cert = cert;
    lvl->der = der;
    lvl->der_len = der_len;
    lvl->not_before = now - PROVEND_DEV_BACKDATE;
    lvl->not_after = now + lvl->lifetime;
    return PROVEN_OK;

failed:

    free(der);
    X509_free(cert);
    EVP_PKEY_free(key);
    return PROVEN_ERR;
}


/*
 * Brings every level to a usable state: keeps what is good, makes new
 * keys for what is missing, broken, expired or due, and for every level
 * below a renewed one.  force_leaf renews the leaf in any case (SIGHUP).
 */
static int
provend_dev_ensure(provend_dev_t *dev, int force_leaf, char *err,
    size_t errlen)
{
    int                   i, renewed;
    int64_t               now;
    const char           *why;
    provend_dev_level_t  *lvl, *parent;

    now = (int64_t) time(NULL);
    renewed = 0;

    for (i = 0; i < PROVEND_DEV_LEVELS; i++) {
        lvl = &dev->levels[i];
        parent = i ? &dev->levels[i - 1] : NULL;

        why = provend_dev_level_check(lvl, parent, now);

        if (why == NULL && renewed) {
            why = "parent renewed";
        }

        if (why == NULL && force_leaf && i == PROVEND_DEV_LEAF) {
            why = "reload";
        }

        if (why == NULL) {
            if (lvl->der == NULL
                && proven_pki_cert_der(lvl->cert, &lvl->der, &lvl->der_len)
                   != PROVEN_OK)
            {
                proven_errf(err, errlen, "cannot encode the dev %s certificate",
                            lvl->name);
                return PROVEN_ERR;
            }
            continue;
        }

        if (i == PROVEND_DEV_ROOT && lvl->key != NULL) {
            provend_warn("dev root: %s, a new dev root is generated and "
                         "clients must pin it again", why);
        }

        if (provend_dev_level_new(dev, lvl, parent, now, err, errlen)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }

        provend_info("dev %s certificate %s (%s), valid until %lld",
                     lvl->name,
                     strcmp(why, "missing") == 0 ? "created" : "renewed", why,
                     (long long) lvl->not_after);
        renewed = 1;
    }

    return PROVEN_OK;
}


/* ---- provider interface ------------------------------------------------- */

static int
provend_dev_prepare(provend_provider_t *p, provend_attest_job_t *job)
{
    size_t                     i, off;
    provend_dev_t             *dev;
    provend_dev_level_t       *leaf, *root, *inter;
    proven_attestation_doc_t  *doc;
    provend_dev_snapshot_t    *snap;

    dev = p->data;
    leaf = &dev->levels[PROVEND_DEV_LEAF];
    inter = &dev->levels[PROVEND_DEV_INTER];
    root = &dev->levels[PROVEND_DEV_ROOT];

    snap = calloc(1, sizeof(*snap));
    if (snap == NULL) {
        goto nomem;
    }

    snap->blob = malloc(leaf->der_len + root->der_len + inter->der_len);
    if (snap->blob == NULL) {
        free(snap);
        goto nomem;
    }

    /* The job keeps its own reference: a renewal may free dev's. */
    if (EVP_PKEY_up_ref(leaf->key) != 1) {
        free(snap->blob);
        free(snap);
        goto nomem;
    }

    snap->key = leaf->key;
    doc = &snap->doc;

    snprintf(doc->module_id, sizeof(doc->module_id), "%s", dev->module_id);
    snprintf(doc->digest, sizeof(doc->digest), "SHA384");

    doc->pcr_count = PROVEND_PCR_COUNT;
    for (i = 0; i < PROVEND_PCR_COUNT; i++) {
        doc->pcrs[i].index = (uint32_t) i;
        doc->pcrs[i].len = PROVEND_PCR_LEN;
        memcpy(doc->pcrs[i].value, dev->pcrs[i], PROVEND_PCR_LEN);
    }

    off = 0;
    memcpy(snap->blob, leaf->der, leaf->der_len);
    doc->certificate.data = snap->blob;
    doc->certificate.len = leaf->der_len;
    doc->certificate.present = 1;
    off += leaf->der_len;

    /* Root first, as Nitro orders its cabundle. */
    memcpy(snap->blob + off, root->der, root->der_len);
    doc->cabundle[0].data = snap->blob + off;
    doc->cabundle[0].len = root->der_len;
    doc->cabundle[0].present = 1;
    off += root->der_len;

    memcpy(snap->blob + off, inter->der, inter->der_len);
    doc->cabundle[1].data = snap->blob + off;
    doc->cabundle[1].len = inter->der_len;
    doc->cabundle[1].present = 1;
    doc->cabundle_count = 2;

    job->snapshot = snap;
    return PROVEN_OK;

nomem:

    snprintf(job->err, sizeof(job->err), "out of memory");
    return PROVEN_ERR;
}


static void
provend_dev_run(provend_provider_t *p, provend_attest_job_t *job)
{
    size_t                     len;
    uint8_t                   *payload;
    proven_attestation_doc_t  *doc;
    provend_dev_snapshot_t    *snap;

    (void) p;

    snap = job->snapshot;
    doc = &snap->doc;

    doc->timestamp = provend_now_ms();
    doc->nonce = job->nonce;
    doc->user_data = job->user_data;
    doc->public_key = job->public_key;

    job->rc = PROVEN_ERR;

    if (proven_attestation_encode_payload(doc, &payload, &len, job->err,
                                          sizeof(job->err)) != PROVEN_OK)
    {
        return;
    }

    job->rc = proven_cose_sign_es384(payload, len, snap->key, &job->doc,
                                     &job->doc_len, job->err,
                                     sizeof(job->err));
    free(payload);
}


static void
provend_dev_finish(provend_provider_t *p, provend_attest_job_t *job)
{
    provend_dev_snapshot_t  *snap;

    (void) p;

    snap = job->snapshot;
    if (snap == NULL) {
        return;
    }

    EVP_PKEY_free(snap->key);
    free(snap->blob);
    free(snap);
    job->snapshot = NULL;
}


static void
provend_dev_status(provend_provider_t *p, provend_status_t *st)
{
    size_t          i;
    provend_dev_t  *dev;

    dev = p->data;

    memset(st, 0, sizeof(*st));
    snprintf(st->module_id, sizeof(st->module_id), "%s", dev->module_id);

    st->pcr_count = PROVEND_PCR_COUNT;
    for (i = 0; i < PROVEND_PCR_COUNT; i++) {
        st->pcrs[i].index = (uint32_t) i;
        st->pcrs[i].len = PROVEND_PCR_LEN;
        memcpy(st->pcrs[i].value, dev->pcrs[i], PROVEND_PCR_LEN);
    }
}


static int
provend_dev_reload(provend_provider_t *p, char *err, size_t errlen)
{
    int             rc;
    size_t          len;
    uint8_t         pcrs[PROVEND_PCR_COUNT][PROVEND_PCR_LEN];
    provend_dev_t  *dev;

    dev = p->data;

    rc = provend_dev_ensure(dev, 1, err, errlen);
    if (rc != PROVEN_OK) {
        return rc;
    }

    /* Measure into a copy: a file gone missing keeps the old values. */
    rc = provend_dev_measure(dev->self_exe, dev->measures,
                             dev->measure_count, pcrs, err, errlen);
    if (rc == PROVEN_OK && dev->pcrs_file != NULL) {
        rc = provend_dev_image_pcrs(dev->pcrs_file, pcrs, err, errlen);
    }
    if (rc != PROVEN_OK) {
        if (err) {
            len = strlen(err);
            snprintf(err + len, errlen - len, " (PCRs unchanged)");
        }
        return rc;
    }

    memcpy(dev->pcrs, pcrs, sizeof(pcrs));
    return PROVEN_OK;
}


static uint64_t
provend_dev_maintain(provend_provider_t *p)
{
    int                   i;
    char                  err[PROVEN_ERR_LEN];
    int64_t               now, at, next;
    provend_dev_t        *dev;
    provend_dev_level_t  *lvl;

    dev = p->data;

    if (provend_dev_ensure(dev, 0, err, sizeof(err)) != PROVEN_OK) {
        provend_error("dev certificate renewal failed: %s", err);
        return 60 * 1000;
    }

    now = (int64_t) time(NULL);
    next = 3600;

    for (i = PROVEND_DEV_INTER; i < PROVEND_DEV_LEVELS; i++) {
        lvl = &dev->levels[i];
        at = lvl->not_after - (lvl->not_after - lvl->not_before) / 3;
        if (at - now < next) {
            next = at - now;
        }
    }

    if (next < 1) {
        next = 1;
    }

    return (uint64_t) next * 1000;
}


provend_provider_t *
provend_dev_new(const provend_dev_config_t *cfg, char *err, size_t errlen)
{
    size_t               i;
    provend_dev_t       *dev;
    provend_provider_t  *p;

    static const provend_dev_level_t  levels[PROVEND_DEV_LEVELS] = {
        { "root", "root.key", "dev-root.pem",
          (int64_t) PROVEND_DEV_ROOT_DAYS * 86400, 1, 0,
          NULL, NULL, NULL, 0, 0, 0 },
        { "intermediate", "intermediate.key", "intermediate.pem",
          (int64_t) PROVEND_DEV_INTERMEDIATE_DAYS * 86400, 1, 1,
          NULL, NULL, NULL, 0, 0, 0 },
        { "leaf", "leaf.key", "leaf.pem",
          PROVEND_DEV_LEAF_SECONDS, 0, 1,
          NULL, NULL, NULL, 0, 0, 0 }
    };

    p = calloc(1, sizeof(*p));
    dev = calloc(1, sizeof(*dev));
    if (p == NULL || dev == NULL) {
        free(p);
        free(dev);
        proven_errf(err, errlen, "out of memory");
        return NULL;
    }

    p->name = "dev";
    p->data = dev;
    p->prepare = provend_dev_prepare;
    p->run = provend_dev_run;
    p->finish = provend_dev_finish;
    p->status = provend_dev_status;
    p->reload = provend_dev_reload;
    p->maintain = provend_dev_maintain;
    p->destroy = provend_dev_destroy;

    memcpy(dev->levels, levels, sizeof(levels));

    if (cfg->node_id == NULL || strlen(cfg->node_id) >= sizeof(dev->node_id)
        || (size_t) snprintf(dev->dir, sizeof(dev->dir), "%s/attestation",
                             cfg->data_dir) >= sizeof(dev->dir) - 32)
    {
        proven_errf(err, errlen, "bad node id or data directory");
        goto failed;
    }

    snprintf(dev->node_id, sizeof(dev->node_id), "%s", cfg->node_id);
    snprintf(dev->module_id, sizeof(dev->module_id), "proven-dev-%s",
             cfg->node_id);

    if (cfg->self_exe) {
        dev->self_exe = strdup(cfg->self_exe);
        if (dev->self_exe == NULL) {
            proven_errf(err, errlen, "out of memory");
            goto failed;
        }
    }

    if (cfg->measure_count) {
        dev->measures = calloc(cfg->measure_count, sizeof(*dev->measures));
        if (dev->measures == NULL) {
            proven_errf(err, errlen, "out of memory");
            goto failed;
        }
    }

    for (i = 0; i < cfg->measure_count; i++) {
        dev->measures[i].index = cfg->measures[i].index;
        dev->measures[i].path = strdup(cfg->measures[i].path);
        dev->measure_count++;
        if (dev->measures[i].path == NULL) {
            proven_errf(err, errlen, "out of memory");
            goto failed;
        }
    }

    if (provend_dev_measure(dev->self_exe, dev->measures, dev->measure_count,
                            dev->pcrs, err, errlen) != PROVEN_OK)
    {
        goto failed;
    }

    if (cfg->pcrs_file != NULL
        && ((dev->pcrs_file = strdup(cfg->pcrs_file)) == NULL
            || provend_dev_image_pcrs(dev->pcrs_file, dev->pcrs, err, errlen)
               != PROVEN_OK))
    {
        if (dev->pcrs_file == NULL) {
            proven_errf(err, errlen, "out of memory");
        }
        goto failed;
    }

    if (provend_mkdirs(dev->dir, 0700, err, errlen) != PROVEN_OK) {
        goto failed;
    }

    for (i = 0; i < PROVEND_DEV_LEVELS; i++) {
        provend_dev_level_load(dev, &dev->levels[i]);
    }

    if (provend_dev_ensure(dev, 0, err, errlen) != PROVEN_OK) {
        goto failed;
    }

    return p;

failed:

    provend_dev_destroy(p);
    return NULL;
}


static void
provend_dev_destroy(provend_provider_t *p)
{
    size_t          i;
    provend_dev_t  *dev;

    dev = p->data;

    for (i = 0; i < PROVEND_DEV_LEVELS; i++) {
        provend_dev_level_clear(&dev->levels[i]);
    }

    for (i = 0; i < dev->measure_count; i++) {
        free((char *) dev->measures[i].path);
    }

    free(dev->measures);
    free(dev->self_exe);
    free(dev->pcrs_file);
    free(dev);
    free(p);
}
