/*
 * provend as users see it: the built daemon (build/bin/provend next to this
 * test's directory, or $PROVEND_BIN) runs as a child with a temporary data
 * directory and is driven over its unix socket with CBOR frames.  When
 * PROVEND_BIN is a wrapper (valgrind), PROVEND_EXE names the real binary
 * that PCR2 measures; PROVEND_TEST_KEEP keeps the directory and logs.
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>

#include "proven.h"
#include "attest/provider.h"
#include "core/util.h"
#include "support.h"


#define IO_TIMEOUT_MS   10000
#define ARGS_MAX        16

typedef struct {
    char    dir[128];       /* temporary, removed at the end */
    char    data[160];
    char    sock[200];
    char    log[200];
    pid_t   pid;
} node_t;

static char    provend_bin[PATH_MAX];
static pid_t   spawned[64];    /* killed at the end if a test failed */
static size_t  nspawned;
static char    top_dir[64];
static node_t  shared;         /* one node for the tests that can share */


/* ---- helpers: the daemon ------------------------------------------------- */


static void
node_init(node_t *n, const char *name)
{
    memset(n, 0, sizeof(*n));
    snprintf(n->dir, sizeof(n->dir), "%s/%s", top_dir, name);
    assert_int_equal(mkdir(n->dir, 0700), 0);
    snprintf(n->data, sizeof(n->data), "%s/var", n->dir);
    snprintf(n->sock, sizeof(n->sock), "%s/provend.sock", n->data);
    snprintf(n->log, sizeof(n->log), "%s/provend.log", n->dir);
}


/* Runs provend with extra arguments (NULL terminated); no wait. */
static pid_t
node_spawn(node_t *n, const char **extra)
{
    int          fd, i, argc;
    pid_t        pid;
    const char  *argv[ARGS_MAX + 8];

    argc = 0;
    argv[argc++] = provend_bin;
    argv[argc++] = "--data";
    argv[argc++] = n->data;
    argv[argc++] = "--log-level";
    argv[argc++] = "debug";
    argv[argc++] = "--provider";
    argv[argc++] = "dev";
    for (i = 0; extra != NULL && extra[i] != NULL && i < ARGS_MAX; i++) {
        argv[argc++] = extra[i];
    }
    argv[argc] = NULL;

    pid = fork();
    assert_true(pid != -1);

    if (pid > 0 && nspawned < sizeof(spawned) / sizeof(spawned[0])) {
        spawned[nspawned++] = pid;
    }

    if (pid == 0) {
        fd = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd != -1) {
            dup2(fd, 2);
        }
        execv(provend_bin, (char **) argv);
        _exit(127);
    }

    return pid;
}


/* Waits for the child's exit, at most timeout_ms; its status or -1. */
static int
node_wait(pid_t pid, long timeout_ms)
{
    int   status;
    long  waited;

    for (waited = 0; waited <= timeout_ms; waited += 10) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            return WIFEXITED(status) ? WEXITSTATUS(status)
                                     : 128 + WTERMSIG(status);
        }
        sleep_ms(10);
    }

    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}


static void
node_start(node_t *n, const char **extra)
{
    int   fd, i;

    n->pid = node_spawn(n, extra);

    for (i = 0; i < 1000; i++) {
        fd = try_connect(n->sock);
        if (fd != -1) {
            close(fd);
            return;
        }

        if (waitpid(n->pid, NULL, WNOHANG) == n->pid) {
            n->pid = 0;
            fail_msg("provend exited at start, see %s", n->log);
        }

        sleep_ms(10);
    }

    fail_msg("provend did not listen on %s, see %s", n->sock, n->log);
}


/* SIGTERM: a clean exit 0 that removes the socket. */
static void
node_stop(node_t *n)
{
    struct stat  st;

    if (n->pid <= 0) {
        return;
    }

    assert_int_equal(kill(n->pid, SIGTERM), 0);
    assert_int_equal(node_wait(n->pid, 10000), 0);
    n->pid = 0;
    assert_int_equal(lstat(n->sock, &st), -1);
}


static int
run_expect_exit(node_t *n, const char **extra)
{
    return node_wait(node_spawn(n, extra), 10000);
}


/* ---- helpers: the client ------------------------------------------------- */

static int
client(node_t *n)
{
    int  fd;

    fd = try_connect(n->sock);
    assert_true(fd != -1);
    return fd;
}


/* 0 with n bytes, 1 on EOF before any byte, -1 on error or timeout. */
static int
recv_exact(int fd, uint8_t *buf, size_t len)
{
    ssize_t        r;
    size_t         done;
    struct pollfd  pfd;

    for (done = 0; done < len; done += (size_t) r) {
        pfd.fd = fd;
        pfd.events = POLLIN;
        if (poll(&pfd, 1, IO_TIMEOUT_MS) != 1) {
            return -1;
        }

        r = recv(fd, buf + done, len - done, 0);
        if (r == 0) {
            return done == 0 ? 1 : -1;
        }
        if (r < 0) {
            if (errno == ECONNRESET) {
                return done == 0 ? 1 : -1;
            }
            return -1;
        }
    }

    return 0;
}


static void
send_request(int fd, cbor_item_t *req)
{
    size_t    len;
    uint8_t  *frame;

    assert_non_null(req);
    assert_int_equal(proven_frame_encode(req, &frame, &len, NULL, 0),
                     PROVEN_OK);
    cbor_decref(&req);
    send_all(fd, frame, len);
    free(frame);
}


static void
recv_response(int fd, proven_response_t *res)
{
    char      err[PROVEN_ERR_LEN];
    uint8_t   header[PROVEN_FRAME_HEADER], *body;
    uint32_t  len;

    assert_int_equal(recv_exact(fd, header, sizeof(header)), 0);
    assert_int_equal(proven_frame_length(header, &len, err, sizeof(err)),
                     PROVEN_OK);

    body = malloc(len);
    assert_non_null(body);
    assert_int_equal(recv_exact(fd, body, len), 0);

    if (proven_response_decode(body, len, res, err, sizeof(err))
        != PROVEN_OK)
    {
        free(body);
        fail_msg("bad response: %s", err);
    }

    free(body);
}


/* The peer closes: nothing more arrives. */
static void
expect_eof(int fd)
{
    uint8_t  byte;

    assert_int_equal(recv_exact(fd, &byte, 1), 1);
}


static cbor_item_t *
attest_request(uint64_t id, const uint8_t *nonce, size_t nonce_len)
{
    cbor_item_t  *req;

    req = proven_request_new(id, "attest");
    assert_non_null(req);

    if (nonce != NULL) {
        assert_int_equal(proven_cbor_map_put(req, "nonce",
                         cbor_build_bytestring(nonce, nonce_len)),
                         PROVEN_OK);
    }

    return req;
}


static X509 *
dev_root(node_t *n)
{
    FILE  *f;
    X509  *root;
    char   path[512];

    snprintf(path, sizeof(path), "%s/attestation/dev-root.pem", n->data);
    f = fopen(path, "r");
    assert_non_null(f);
    root = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(root);
    return root;
}


static char *
read_text(const char *dir, const char *file)
{
    char      path[512];
    size_t    len;
    uint8_t  *buf;

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    assert_int_equal(proven_read_file(path, 1 << 20, &buf, &len, NULL, 0),
                     PROVEN_OK);
    return (char *) buf;
}


/* A document answered on fd for nonce verifies with n's dev root. */
static void
expect_verified_document(node_t *n, const proven_response_t *res,
    const uint8_t *nonce, size_t nonce_len, proven_attestation_doc_t *doc)
{
    char                    err[PROVEN_ERR_LEN];
    proven_verify_opts_t    opts;
    proven_verify_status_t  status;

    assert_true(res->ok);
    assert_non_null(res->result);
    assert_true(cbor_isa_bytestring(res->result));
    assert_true(cbor_bytestring_is_definite(res->result));

    memset(&opts, 0, sizeof(opts));
    opts.root = dev_root(n);
    opts.at = PROVEN_AT_NOW;
    opts.nonce = nonce;
    opts.nonce_len = nonce_len;

    status = proven_attestation_verify(cbor_bytestring_handle(res->result),
                                       cbor_bytestring_length(res->result),
                                       &opts, doc, err, sizeof(err));
    X509_free(opts.root);

    if (status != PROVEN_VERIFY_OK) {
        fail_msg("document does not verify: %s: %s",
                 proven_verify_status_name(status), err);
    }
}


static void
status_of(node_t *n, proven_response_t *res)
{
    int  fd;

    fd = client(n);
    send_request(fd, proven_request_new(1, "status"));
    recv_response(fd, res);
    close(fd);
    assert_true(res->ok);
}


static const uint8_t *
status_pcr(const proven_response_t *res, uint8_t index)
{
    size_t        i, n;
    cbor_item_t  *pcrs;
    struct cbor_pair  *pairs;

    pcrs = proven_cbor_map_get(res->result, "pcrs");
    assert_non_null(pcrs);
    assert_true(cbor_isa_map(pcrs));

    n = cbor_map_size(pcrs);
    pairs = cbor_map_handle(pcrs);

    for (i = 0; i < n; i++) {
        if (cbor_isa_uint(pairs[i].key)
            && cbor_get_int(pairs[i].key) == index)
        {
            assert_int_equal(cbor_bytestring_length(pairs[i].value), 48);
            return cbor_bytestring_handle(pairs[i].value);
        }
    }

    fail_msg("no PCR %u in status", index);
    return NULL;
}


/* ---- tests --------------------------------------------------------------- */

static void
test_attest_verifies(void **state)
{
    int                        fd;
    char                      *node_id, module_id[128];
    uint8_t                    nonce[16];
    proven_response_t          res;
    proven_attestation_doc_t   doc;

    (void) state;

    memcpy(nonce, "provend-test-n0!", 16);

    fd = client(&shared);
    send_request(fd, attest_request(5, nonce, sizeof(nonce)));
    recv_response(fd, &res);
    close(fd);

    assert_int_equal(res.id, 5);
    expect_verified_document(&shared, &res, nonce, sizeof(nonce), &doc);

    node_id = read_text(shared.data, "node-id");
    node_id[PROVEND_NODE_ID_LEN] = '\0';
    snprintf(module_id, sizeof(module_id), "proven-dev-%s", node_id);
    free(node_id);

    assert_string_equal(doc.module_id, module_id);
    assert_string_equal(doc.digest, "SHA384");
    assert_int_equal(doc.pcr_count, 16);
    assert_int_equal(doc.pcrs[2].len, 48);
    assert_int_equal(doc.cabundle_count, 2);
    assert_false(doc.user_data.present);
    assert_false(doc.public_key.present);
    assert_true(doc.timestamp / 1000 + 60 >= (uint64_t) time(NULL));

    proven_attestation_doc_free(&doc);
    proven_response_free(&res);
}


static void
test_attest_fields(void **state)
{
    int                        fd;
    uint8_t                    big[PROVEN_ATT_FIELD_MAX];
    cbor_item_t               *req;
    proven_response_t          res;
    proven_attestation_doc_t   doc;

    (void) state;

    memset(big, 0x5a, sizeof(big));

    /* The largest allowed fields, and no nonce at all. */
    req = proven_request_new(6, "attest");
    assert_int_equal(proven_cbor_map_put(req, "user_data",
                     cbor_build_bytestring(big, sizeof(big))), PROVEN_OK);
    assert_int_equal(proven_cbor_map_put(req, "public_key",
                     cbor_build_bytestring(big, 32)), PROVEN_OK);
    assert_int_equal(proven_cbor_map_put(req, "nonce", cbor_new_null()),
                     PROVEN_OK);

    fd = client(&shared);
    send_request(fd, req);
    recv_response(fd, &res);
    close(fd);

    expect_verified_document(&shared, &res, NULL, 0, &doc);
    assert_true(doc.user_data.present);
    assert_int_equal(doc.user_data.len, sizeof(big));
    assert_memory_equal(doc.user_data.data, big, sizeof(big));
    assert_true(doc.public_key.present);
    assert_int_equal(doc.public_key.len, 32);
    assert_false(doc.nonce.present);

    proven_attestation_doc_free(&doc);
    proven_response_free(&res);
}


static void
test_status(void **state)
{
    char               *text, *node_id;
    size_t              len;
    uint64_t            v;
    cbor_item_t        *result;
    proven_response_t   res;

    (void) state;

    status_of(&shared, &res);
    result = res.result;
    assert_true(cbor_isa_map(result));

    node_id = read_text(shared.data, "node-id");
    node_id[PROVEND_NODE_ID_LEN] = '\0';

    assert_int_equal(proven_cbor_text(proven_cbor_map_get(result, "node_id"),
                                      64, &text, &len), PROVEN_OK);
    assert_string_equal(text, node_id);
    free(text);

    assert_int_equal(proven_cbor_text(proven_cbor_map_get(result,
                                      "module_id"), 128, &text, &len),
                     PROVEN_OK);
    assert_int_equal(strncmp(text, "proven-dev-", 11), 0);
    assert_string_equal(text + 11, node_id);
    free(text);
    free(node_id);

    assert_int_equal(proven_cbor_text(proven_cbor_map_get(result,
                                      "provider"), 16, &text, &len),
                     PROVEN_OK);
    assert_string_equal(text, "dev");
    free(text);

    assert_int_equal(proven_cbor_text(proven_cbor_map_get(result, "version"),
                                      64, &text, &len), PROVEN_OK);
    assert_true(len > 0);
    free(text);

    assert_int_equal(proven_cbor_uint(proven_cbor_map_get(result,
                                      "uptime_ms"), &v), PROVEN_OK);
    assert_int_equal(proven_cbor_uint(proven_cbor_map_get(result,
                                      "pending"), &v), PROVEN_OK);
    assert_true(v >= 1);    /* this very request */

    assert_int_equal(cbor_map_size(proven_cbor_map_get(result, "pcrs")), 16);
    (void) status_pcr(&res, 0);
    (void) status_pcr(&res, 2);
    (void) status_pcr(&res, 15);

    proven_response_free(&res);
}


static void
expect_error(int fd, uint64_t id, const char *code, const char *words)
{
    proven_response_t  res;

    recv_response(fd, &res);
    assert_int_equal(res.id, id);
    assert_false(res.ok);
    assert_string_equal(res.code, code);
    if (words != NULL && strstr(res.message, words) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", res.message, words);
    }
    proven_response_free(&res);
}


static void
test_bad_requests(void **state)
{
    int                 fd;
    uint8_t             big[PROVEN_ATT_FIELD_MAX + 1], *padding;
    cbor_item_t        *req;
    proven_response_t   res;

    (void) state;

    memset(big, 1, sizeof(big));
    fd = client(&shared);

    send_request(fd, attest_request(10, big, sizeof(big)));
    expect_error(fd, 10, "bad_request", "1024");

    req = proven_request_new(11, "attest");
    assert_int_equal(proven_cbor_map_put(req, "public_key",
                     cbor_build_bytestring(big, sizeof(big))), PROVEN_OK);
    send_request(fd, req);
    expect_error(fd, 11, "bad_request", "public_key");

    req = proven_request_new(12, "attest");
    assert_int_equal(proven_cbor_map_put(req, "nonce",
                     cbor_build_string("00ff")), PROVEN_OK);
    send_request(fd, req);
    expect_error(fd, 12, "bad_request", "byte string");

    /* keyd releases keys to documents with its mark only: no caller of
       provend's socket gets one for a key of its choosing */
    req = proven_request_new(17, "attest");
    assert_int_equal(proven_cbor_map_put(req, "user_data",
                     cbor_build_bytestring((const uint8_t *) "proven-keyd-v1",
                                           14)), PROVEN_OK);
    assert_int_equal(proven_cbor_map_put(req, "public_key",
                     cbor_build_bytestring(big, 32)), PROVEN_OK);
    send_request(fd, req);
    expect_error(fd, 17, "bad_request", "mark");

    send_request(fd, proven_request_new(13, "no.such.op"));
    expect_error(fd, 13, "unknown_op", "no.such.op");

    /* A map with an id but no op: answered, the connection stays. */
    req = cbor_new_definite_map(1);
    assert_int_equal(proven_cbor_map_put(req, "id", cbor_build_uint8(14)),
                     PROVEN_OK);
    send_request(fd, req);
    expect_error(fd, 14, "bad_request", "op");

    /* Still serving this connection after all of that. */
    send_request(fd, proven_request_new(15, "status"));
    recv_response(fd, &res);
    assert_int_equal(res.id, 15);
    assert_true(res.ok);
    proven_response_free(&res);

    /* A 1 MiB frame: its buffer grows past the first allocation. */
    padding = calloc(1, 1024 * 1024);
    assert_non_null(padding);
    req = proven_request_new(16, "status");
    assert_int_equal(proven_cbor_map_put(req, "padding",
                     cbor_build_bytestring(padding, 1024 * 1024)), PROVEN_OK);
    free(padding);
    send_request(fd, req);
    recv_response(fd, &res);
    assert_int_equal(res.id, 16);
    assert_true(res.ok);
    proven_response_free(&res);

    close(fd);
}


/* Sends raw bytes on one connection while another stays usable. */
static void
expect_garbage_closes(const uint8_t *bytes, size_t len, const char *code)
{
    int                 bad, good;
    proven_response_t   res;

    good = client(&shared);
    bad = client(&shared);

    send_all(bad, bytes, len);
    expect_error(bad, 0, code, NULL);
    expect_eof(bad);
    close(bad);

    send_request(good, proven_request_new(77, "status"));
    recv_response(good, &res);
    assert_int_equal(res.id, 77);
    assert_true(res.ok);
    proven_response_free(&res);
    close(good);
}


static void
test_garbage_frames(void **state)
{
    (void) state;

    /* length 0 */
    expect_garbage_closes((const uint8_t *) "\0\0\0\0", 4, "bad_frame");

    /* 17 MiB, more than a frame may hold; nothing is allocated for it */
    expect_garbage_closes((const uint8_t *) "\x01\x10\x00\x00", 4,
                          "bad_frame");

    /* a body that is not CBOR */
    expect_garbage_closes((const uint8_t *) "\0\0\0\x03\xff\xff\xff", 7,
                          "bad_frame");

    /* CBOR but not a map, then more bytes that must not be read */
    expect_garbage_closes((const uint8_t *) "\0\0\0\x01\x01\0\0\0\x01\xa0",
                          10, "bad_frame");

    /* a map without an id cannot be answered by id */
    expect_garbage_closes((const uint8_t *) "\0\0\0\x01\xa0", 5,
                          "bad_frame");
}


static void
test_pipelined(void **state)
{
    int                 fd, seen, i;
    size_t              len, total;
    uint8_t            *frame, buf[4096];
    proven_response_t   res;
    cbor_item_t        *reqs[3];
    const uint8_t       nonces[2][4] = { "n007", "n008" };

    (void) state;

    reqs[0] = attest_request(7, nonces[0], 4);
    reqs[1] = attest_request(8, nonces[1], 4);
    reqs[2] = proven_request_new(9, "status");

    /* All three in one write: the server must split the frames. */
    total = 0;
    for (i = 0; i < 3; i++) {
        assert_int_equal(proven_frame_encode(reqs[i], &frame, &len, NULL, 0),
                         PROVEN_OK);
        assert_true(total + len <= sizeof(buf));
        memcpy(buf + total, frame, len);
        total += len;
        free(frame);
        cbor_decref(&reqs[i]);
    }

    fd = client(&shared);
    send_all(fd, buf, total);

    seen = 0;
    for (i = 0; i < 3; i++) {
        recv_response(fd, &res);
        assert_true(res.id >= 7 && res.id <= 9);
        assert_false(seen & (1 << (res.id - 7)));
        seen |= 1 << (res.id - 7);

        if (res.id != 9) {
            expect_verified_document(&shared, &res, nonces[res.id - 7], 4,
                                     NULL);
        }
        proven_response_free(&res);
    }

    assert_int_equal(seen, 7);
    close(fd);
}


/* More requests than may be pending: all answered as the client reads. */
static void
test_backpressure(void **state)
{
    int                 fd, i, n;
    size_t              len, total;
    uint8_t            *frame, *buf;
    cbor_item_t        *req;
    proven_response_t   res;
    uint8_t             seen[300];

    (void) state;

    n = (int) sizeof(seen);
    buf = malloc((size_t) n * 64);
    assert_non_null(buf);

    total = 0;
    for (i = 0; i < n; i++) {
        req = i % 10 == 0 ? attest_request((uint64_t) i, NULL, 0)
                          : proven_request_new((uint64_t) i, "status");
        assert_int_equal(proven_frame_encode(req, &frame, &len, NULL, 0),
                         PROVEN_OK);
        cbor_decref(&req);
        assert_true(len <= 64);
        memcpy(buf + total, frame, len);
        total += len;
        free(frame);
    }

    fd = client(&shared);
    send_all(fd, buf, total);
    free(buf);

    memset(seen, 0, sizeof(seen));
    for (i = 0; i < n; i++) {
        recv_response(fd, &res);
        assert_true(res.ok);
        assert_true(res.id < (uint64_t) n);
        assert_false(seen[res.id]);
        seen[res.id] = 1;
        proven_response_free(&res);
    }

    close(fd);
}


/* provend's own count of answers not yet written, from "status". */
static uint64_t
pending_answers(void)
{
    int                 fd;
    uint64_t            pending;
    proven_response_t   res;

    fd = client(&shared);
    send_request(fd, proven_request_new(1, "status"));
    recv_response(fd, &res);
    assert_true(res.ok);
    assert_int_equal(proven_cbor_uint(proven_cbor_map_get(res.result,
                                                          "pending"),
                                      &pending), PROVEN_OK);
    proven_response_free(&res);
    close(fd);

    /* this connection's own status request */
    return pending - 1;
}


/* A kv.* request of the "big" store of app "queue". */
static cbor_item_t *
kv_request(uint64_t id, const char *op, const uint8_t *value, size_t len)
{
    cbor_item_t  *req, *scope;

    req = proven_request_new(id, op);
    scope = cbor_new_definite_map(2);
    assert_non_null(req);
    assert_non_null(scope);
    assert_int_equal(proven_cbor_map_put(scope, "app",
                                         cbor_build_string("queue")),
                     PROVEN_OK);
    assert_int_equal(proven_cbor_map_put(scope, "kind",
                                         cbor_build_string("app")),
                     PROVEN_OK);
    assert_int_equal(proven_cbor_map_put(req, "scope", scope), PROVEN_OK);
    assert_int_equal(proven_cbor_map_put(req, "store",
                                         cbor_build_string("big")),
                     PROVEN_OK);
    assert_int_equal(proven_cbor_map_put(req, "type",
                                         cbor_build_string("bytes")),
                     PROVEN_OK);
    assert_int_equal(proven_cbor_map_put(req, "key", cbor_build_string("k")),
                     PROVEN_OK);
    if (value != NULL) {
        assert_int_equal(proven_cbor_map_put(req, "value",
                             cbor_build_bytestring(value, len)),
                         PROVEN_OK);
    }
    return req;
}


/*
 * A client that asks for many big answers, reads none, ends its input
 * and goes: the answers queued for it are dropped and its connection
 * closed, rather than kept (with their memory) until provend stops.
 */
static void
test_gone_with_answers_queued(void **state)
{
    int                 fd, i;
    size_t              len;
    uint8_t            *frame, *value;
    uint64_t            left;
    cbor_item_t        *req;
    proven_response_t   res;

    (void) state;

    value = calloc(1, 1000000);
    assert_non_null(value);
    fd = client(&shared);
    send_request(fd, kv_request(1, "kv.set", value, 1000000));
    recv_response(fd, &res);
    assert_true(res.ok);
    proven_response_free(&res);
    close(fd);
    free(value);

    fd = client(&shared);
    for (i = 0; i < 10; i++) {
        req = kv_request((uint64_t) i, "kv.get", NULL, 0);
        assert_int_equal(proven_frame_encode(req, &frame, &len, NULL, 0),
                         PROVEN_OK);
        cbor_decref(&req);
        send_all(fd, frame, len);
        free(frame);
    }
    assert_int_equal(shutdown(fd, SHUT_WR), 0);

    /*
     * The answers (10 MB: under the queue's bound, so provend reads on
     * and sees the end) cannot all be in the socket: some are queued.
     */
    usleep(300000);
    close(fd);

    left = 1;
    for (i = 0; i < 100 && left != 0; i++) {
        usleep(50000);
        left = pending_answers();
    }

    assert_int_equal(left, 0);
}


/*
 * What a peer names (an op; an app's worker would do the same) cannot
 * start a line of provend's log: a forged "[error]" line stays inside
 * the line that quotes it.
 */
static void
test_log_lines_cannot_be_forged(void **state)
{
    int                 fd;
    char                line[4096];
    FILE               *log;
    proven_response_t   res;

    (void) state;

    fd = client(&shared);
    send_request(fd, proven_request_new(77, "x\n2099/01/01 00:00:00 [error] "
                                            "1#1: forged"));
    recv_response(fd, &res);
    assert_false(res.ok);
    assert_string_equal(res.code, "unknown_op");
    proven_response_free(&res);
    close(fd);

    log = fopen(shared.log, "r");
    assert_non_null(log);
    while (fgets(line, sizeof(line), log) != NULL) {
        assert_true(strncmp(line, "2099/01/01", 10) != 0);
    }
    fclose(log);
}


/* A request trickling in one byte at a time. */
static void
test_partial_frames(void **state)
{
    int                 fd;
    size_t              len, i;
    uint8_t            *frame;
    cbor_item_t        *req;
    proven_response_t   res;

    (void) state;

    req = proven_request_new(42, "status");
    assert_int_equal(proven_frame_encode(req, &frame, &len, NULL, 0),
                     PROVEN_OK);
    cbor_decref(&req);

    fd = client(&shared);
    for (i = 0; i < len; i++) {
        send_all(fd, frame + i, 1);
        if (i % 4 == 0) {
            sleep_ms(1);
        }
    }
    free(frame);

    recv_response(fd, &res);
    assert_int_equal(res.id, 42);
    assert_true(res.ok);
    proven_response_free(&res);

    /* Half a frame, then gone: the server does not care. */
    send_all(fd, "\0\0\0\x40\xa2", 5);
    close(fd);

    /* Requests in flight on a connection that went away. */
    fd = client(&shared);
    send_request(fd, attest_request(1, NULL, 0));
    send_request(fd, attest_request(2, NULL, 0));
    close(fd);

    status_of(&shared, &res);
    proven_response_free(&res);
}


static void
test_sighup_renews_leaf(void **state)
{
    int                 fd, i;
    char               *before, *after;
    proven_response_t   res;
    char                dir[512];

    (void) state;

    snprintf(dir, sizeof(dir), "%s/attestation", shared.data);
    before = read_text(dir, "leaf.pem");

    assert_int_equal(kill(shared.pid, SIGHUP), 0);

    after = NULL;
    for (i = 0; i < 500; i++) {
        sleep_ms(10);
        free(after);
        after = read_text(dir, "leaf.pem");
        if (strcmp(before, after) != 0) {
            break;
        }
    }

    assert_string_not_equal(before, after);
    free(before);
    free(after);

    fd = client(&shared);
    send_request(fd, attest_request(3, (const uint8_t *) "hup", 3));
    recv_response(fd, &res);
    expect_verified_document(&shared, &res, (const uint8_t *) "hup", 3,
                             NULL);
    proven_response_free(&res);
    close(fd);
}


static void
test_restart_keeps_root(void **state)
{
    int                 fd;
    node_t              n;
    char               *root1, *root2, *id1, *id2, dir[512];
    proven_response_t   res;

    (void) state;

    node_init(&n, "restart");
    node_start(&n, NULL);
    snprintf(dir, sizeof(dir), "%s/attestation", n.data);
    root1 = read_text(dir, "dev-root.pem");
    id1 = read_text(n.data, "node-id");
    node_stop(&n);

    node_start(&n, NULL);
    root2 = read_text(dir, "dev-root.pem");
    id2 = read_text(n.data, "node-id");
    assert_string_equal(root1, root2);
    assert_string_equal(id1, id2);

    fd = client(&n);
    send_request(fd, attest_request(1, (const uint8_t *) "again", 5));
    recv_response(fd, &res);
    expect_verified_document(&n, &res, (const uint8_t *) "again", 5, NULL);
    proven_response_free(&res);
    close(fd);

    /* A running server's socket is not taken over by a second one. */
    assert_int_equal(run_expect_exit(&n, NULL), 1);

    node_stop(&n);
    free(root1);
    free(root2);
    free(id1);
    free(id2);
}


static void
sha384_file(const char *path, uint8_t out[48])
{
    size_t    len;
    uint8_t  *buf;

    assert_int_equal(proven_read_file(path, 1 << 30, &buf, &len, NULL, 0),
                     PROVEN_OK);
    assert_int_equal(EVP_Digest(buf, len, out, NULL, EVP_sha384(), NULL), 1);
    free(buf);
}


/* PCR = SHA384(PCR || SHA384(file)) */
static void
extend(uint8_t pcr[48], const char *path)
{
    uint8_t  buf[96];

    memcpy(buf, pcr, 48);
    sha384_file(path, buf + 48);
    assert_int_equal(EVP_Digest(buf, 96, pcr, NULL, EVP_sha384(), NULL), 1);
}


static void
write_text(const char *path, const char *text)
{
    assert_int_equal(proven_write_file(path, text, strlen(text), 0644, NULL,
                                       0), PROVEN_OK);
}


static void
test_measure(void **state)
{
    node_t              n;
    char                file[512], arg2[600], arg5[600];
    const char         *exe;
    uint8_t             pcr2[48], pcr5[48], pcr0[48], first2[48], img[144];
    proven_response_t   res;
    const char         *extra[] = { "--measure", arg2, "--measure", arg5,
                                    NULL };

    (void) state;

    node_init(&n, "measure");
    snprintf(file, sizeof(file), "%s/app.conf", n.dir);
    snprintf(arg2, sizeof(arg2), "2:%s", file);
    snprintf(arg5, sizeof(arg5), "5:%s", file);

    write_text(file, "listen 8080;\n");
    node_start(&n, extra);
    status_of(&n, &res);

    /* PCR2: provend itself first, then the file. */
    exe = getenv("PROVEND_EXE") ? getenv("PROVEND_EXE") : provend_bin;
    memset(pcr2, 0, 48);
    extend(pcr2, exe);
    extend(pcr2, file);
    assert_memory_equal(status_pcr(&res, 2), pcr2, 48);
    memcpy(first2, pcr2, 48);

    memset(pcr5, 0, 48);
    extend(pcr5, file);
    assert_memory_equal(status_pcr(&res, 5), pcr5, 48);

    /* PCR0 over PCR1..3, the image as a whole */
    memset(img, 0, sizeof(img));
    memcpy(img + 48, pcr2, 48);
    assert_int_equal(EVP_Digest(img, sizeof(img), pcr0, NULL, EVP_sha384(),
                                NULL), 1);
    assert_memory_equal(status_pcr(&res, 0), pcr0, 48);
    proven_response_free(&res);
    node_stop(&n);

    /* Another file content: another PCR2, on restart ... */
    write_text(file, "listen 8081;\n");
    node_start(&n, extra);
    status_of(&n, &res);
    memset(pcr2, 0, 48);
    extend(pcr2, exe);
    extend(pcr2, file);
    assert_memory_equal(status_pcr(&res, 2), pcr2, 48);
    assert_memory_not_equal(status_pcr(&res, 2), first2, 48);
    proven_response_free(&res);

    /* ... and on SIGHUP. */
    write_text(file, "listen 8082;\n");
    assert_int_equal(kill(n.pid, SIGHUP), 0);
    sleep_ms(300);
    status_of(&n, &res);
    assert_memory_not_equal(status_pcr(&res, 2), pcr2, 48);
    proven_response_free(&res);

    /* A file gone at reload keeps the old values and the server. */
    assert_int_equal(unlink(file), 0);
    assert_int_equal(kill(n.pid, SIGHUP), 0);
    sleep_ms(300);
    status_of(&n, &res);
    proven_response_free(&res);

    node_stop(&n);
}


/* --pcrs-file: an image's PCR0-2, as proven-host hands them in. */
static void
test_pcrs_file(void **state)
{
    int                 i;
    node_t              n;
    char                file[512];
    uint8_t             image[144];
    proven_response_t   res;
    const char         *extra[] = { "--pcrs-file", file, NULL };

    (void) state;

    node_init(&n, "pcrsfile");
    snprintf(file, sizeof(file), "%s/pcrs", n.dir);
    for (i = 0; i < 144; i++) {
        image[i] = (uint8_t) (i * 7 + 1);
    }
    assert_int_equal(proven_write_file(file, image, sizeof(image), 0644,
                                       NULL, 0), PROVEN_OK);

    node_start(&n, extra);
    status_of(&n, &res);
    for (i = 0; i < 3; i++) {
        assert_memory_equal(status_pcr(&res, i), image + 48 * i, 48);
    }
    proven_response_free(&res);
    node_stop(&n);

    /* anything but exactly 3 x 48 bytes: provend does not start */
    assert_int_equal(proven_write_file(file, image, 143, 0644, NULL, 0),
                     PROVEN_OK);
    assert_int_equal(run_expect_exit(&n, extra), 1);
    assert_int_equal(unlink(file), 0);
    assert_int_equal(run_expect_exit(&n, extra), 1);
}


static void
test_startup_errors(void **state)
{
    node_t       n;
    char         arg[600], sock[600];
    const char  *dir_measure[] = { "--measure", arg, NULL };
    const char  *bad_pcr[] = { "--measure", "0:/etc/hostname", NULL };
    const char  *bad_sock[] = { "--socket", sock, NULL };
    const char  *bad_opt[] = { "--no-such-option", NULL };

    (void) state;

    node_init(&n, "errors");

    snprintf(arg, sizeof(arg), "3:%s", n.dir);
    assert_int_equal(run_expect_exit(&n, dir_measure), 1);

    snprintf(arg, sizeof(arg), "3:%s/missing", n.dir);
    assert_int_equal(run_expect_exit(&n, dir_measure), 1);

    assert_int_equal(run_expect_exit(&n, bad_pcr), 2);
    assert_int_equal(run_expect_exit(&n, bad_opt), 2);

    /* A regular file where the socket should go is not deleted. */
    snprintf(sock, sizeof(sock), "%s/not-a-socket", n.dir);
    write_text(sock, "keep me");
    assert_int_equal(run_expect_exit(&n, bad_sock), 1);
    assert_int_equal(access(sock, F_OK), 0);
}


/* SIGTERM lets requests already read finish, then closes. */
static void
test_sigterm_finishes(void **state)
{
    int                 fd, i;
    node_t              n;
    proven_response_t   res;

    (void) state;

    node_init(&n, "sigterm");
    node_start(&n, NULL);

    fd = client(&n);
    for (i = 0; i < 20; i++) {
        send_request(fd, attest_request((uint64_t) i, NULL, 0));
    }

    recv_response(fd, &res);
    assert_true(res.ok);
    proven_response_free(&res);

    node_stop(&n);

    for (i = 1; i < 20; i++) {
        recv_response(fd, &res);
        assert_true(res.ok);
        proven_response_free(&res);
    }

    expect_eof(fd);
    close(fd);
}


/* ---- setup --------------------------------------------------------------- */


static int
group_setup(void **state)
{
    (void) state;

    snprintf(top_dir, sizeof(top_dir), "/tmp/provend-test-XXXXXX");
    if (mkdtemp(top_dir) == NULL) {
        return -1;
    }

    node_init(&shared, "shared");
    node_start(&shared, NULL);
    return 0;
}


static int
group_teardown(void **state)
{
    size_t  i;

    (void) state;

    if (shared.pid > 0) {
        kill(shared.pid, SIGTERM);
        if (node_wait(shared.pid, 10000) != 0) {
            fprintf(stderr, "provend did not exit cleanly, see %s\n",
                    shared.log);
        }
    }

    /* Whatever a failed test left running. */
    for (i = 0; i < nspawned; i++) {
        if (waitpid(spawned[i], NULL, WNOHANG) == 0) {
            kill(spawned[i], SIGKILL);
            waitpid(spawned[i], NULL, 0);
        }
    }

    if (getenv("PROVEND_TEST_KEEP") == NULL) {
        remove_tree(top_dir);
    } else {
        fprintf(stderr, "kept %s\n", top_dir);
    }

    return 0;
}


int
main(int argc, char **argv)
{
    char        *slash;
    const char  *bin;

    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_attest_verifies),
        cmocka_unit_test(test_attest_fields),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_garbage_frames),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_partial_frames),
        cmocka_unit_test(test_gone_with_answers_queued),
        cmocka_unit_test(test_log_lines_cannot_be_forged),
        cmocka_unit_test(test_sighup_renews_leaf),
        cmocka_unit_test(test_restart_keeps_root),
        cmocka_unit_test(test_measure),
        cmocka_unit_test(test_pcrs_file),
        cmocka_unit_test(test_startup_errors),
        cmocka_unit_test(test_sigterm_finishes),
    };

    (void) argc;

    /* build/tests/test_provend -> build/bin/provend */
    bin = getenv("PROVEND_BIN");
    if (bin != NULL) {
        snprintf(provend_bin, sizeof(provend_bin), "%s", bin);
    } else {
        snprintf(provend_bin, sizeof(provend_bin), "%s", argv[0]);
        slash = strrchr(provend_bin, '/');
        if (slash == NULL) {
            snprintf(provend_bin, sizeof(provend_bin), "../bin/provend");
        } else {
            snprintf(slash + 1, sizeof(provend_bin)
                     - (size_t) (slash + 1 - provend_bin), "../bin/provend");
        }
    }

    if (access(provend_bin, X_OK) != 0) {
        fprintf(stderr, "test_provend: no provend at %s (set PROVEND_BIN)\n",
                provend_bin);
        return 1;
    }

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
