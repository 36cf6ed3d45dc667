/* proven-host backup and restore over the control channel: see backup.h. */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proven.h"
#include "net/proven_net.h"
#include "backup.h"

#define HOST_BACKUP_CALL_MS   (10 * 60 * 1000)   /* provend writes it */
#define HOST_BACKUP_IDLE_MS   60000              /* then no frame for */


static int
host_backup_connect(const char *control, proven_conn_t *c, int quiet)
{
    char           err[PROVEN_ERR_LEN];
    proven_addr_t  addr;

    if (proven_addr_parse(control, &addr, err, sizeof(err)) != PROVEN_OK
        || proven_conn_connect(c, &addr, HOST_BACKUP_IDLE_MS, 1 << 20, err,
                               sizeof(err)) != PROVEN_OK)
    {
        if (!quiet) {
            fprintf(stderr, "proven-host: the control channel %s: %s\n",
                    control, err);
        }
        return -1;
    }
    return 0;
}


int
host_backup(const char *control, const char *file)
{
    int                fd, rc;
    char               err[PROVEN_ERR_LEN], tmp[4200];
    uint64_t           bytes;
    cbor_item_t       *req;
    proven_conn_t      c;
    proven_response_t  res;

    if (access(file, F_OK) == 0) {
        fprintf(stderr, "proven-host: backup: %s exists\n", file);
        return 1;
    }
    snprintf(tmp, sizeof(tmp), "%.4000s.part.%ld", file, (long) getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "proven-host: backup: %s: %s\n", tmp,
                strerror(errno));
        return 1;
    }
    rc = 1;
    err[0] = '\0';
    req = proven_request_new(1, "backup");
    if (req == NULL || host_backup_connect(control, &c, 0) != 0) {
        goto done;
    }
    proven_conn_deadline(&c, HOST_BACKUP_CALL_MS);
    if (proven_conn_call(&c, req, &res, err, sizeof(err)) != PROVEN_OK) {
        fprintf(stderr, "proven-host: backup: %s\n", err);
        proven_conn_close(&c);
        goto done;
    }
    if (!res.ok
        || proven_cbor_uint(proven_cbor_map_get(res.result, "bytes"), &bytes)
           != PROVEN_OK)
    {
        fprintf(stderr, "proven-host: backup refused: %s\n",
                res.ok ? "no size said" : res.message);
    } else if (proven_conn_recv_data(&c, fd, bytes, HOST_BACKUP_IDLE_MS, err,
                                     sizeof(err)) != PROVEN_OK
               || fsync(fd) != 0)
    {
        fprintf(stderr, "proven-host: backup: %s\n",
                err[0] ? err : strerror(errno));
    } else if (link(tmp, file) != 0) {      /* never over another file */
        fprintf(stderr, "proven-host: backup: %s: %s\n", file,
                strerror(errno));
    } else {
        printf("backup: %llu bytes to %s\n", (unsigned long long) bytes,
               file);
        rc = 0;
    }
    proven_response_free(&res);
    proven_conn_close(&c);

done:

    if (req != NULL) {
        cbor_decref(&req);
    }
    close(fd);
    (void) unlink(tmp);
    return rc;
}


int
host_restore(const char *control, const char *file, int quiet)
{
    int                fd, rc;
    char               err[PROVEN_ERR_LEN];
    size_t             len;
    uint8_t           *frame;
    cbor_item_t       *req;
    struct stat        st;
    proven_conn_t      c;
    const uint8_t     *body;
    proven_response_t  res;

    fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "proven-host: restore: %s: %s\n", file,
                fd < 0 ? strerror(errno) : "not a file");
        if (fd >= 0) {
            close(fd);
        }
        return 1;
    }
    rc = 1;
    frame = NULL;
    req = proven_request_new(1, "restore");
    if (req == NULL
        || proven_cbor_map_put(req, "bytes",
                               cbor_build_uint64((uint64_t) st.st_size))
           != PROVEN_OK
        || proven_frame_encode(req, &frame, &len, err, sizeof(err))
           != PROVEN_OK
        || host_backup_connect(control, &c, quiet) != 0)
    {
        rc = HOST_UNREACHABLE;
        goto done;
    }
    err[0] = '\0';
    /* a failure: the agent's answer, read next, may say why */
    if (proven_conn_send(&c, frame, len, err, sizeof(err)) == PROVEN_OK) {
        (void) proven_conn_send_data(&c, fd, (uint64_t) st.st_size,
                                     HOST_BACKUP_IDLE_MS, err, sizeof(err));
    }
    /* the answer: at the end, or early when the agent refused */
    proven_conn_deadline(&c, HOST_BACKUP_IDLE_MS);
    if (proven_conn_recv(&c, &body, &len, err, sizeof(err)) == PROVEN_OK
        && proven_response_decode(body, len, &res, err, sizeof(err))
           == PROVEN_OK)
    {
        if (res.ok) {
            printf("restore: %llu bytes handed in\n",
                   (unsigned long long) st.st_size);
            rc = 0;
        } else if (strcmp(res.code, "exists") == 0) {
            rc = HOST_HANDED_ALREADY;
        }
        if (!res.ok && !(quiet && rc == HOST_HANDED_ALREADY)) {
            fprintf(stderr, "proven-host: restore refused: %s\n",
                    res.message);
        }
        proven_response_free(&res);
    } else if (quiet) {
        /* under qemu a connect succeeds before the guest listens: no
         * answer at all is a guest not up yet */
        rc = HOST_UNREACHABLE;
    } else {
        fprintf(stderr, "proven-host: restore: %s\n", err);
    }
    proven_conn_close(&c);

done:

    free(frame);
    if (req != NULL) {
        cbor_decref(&req);
    }
    close(fd);
    return rc;
}
