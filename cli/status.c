/*
 * `proven status`: one "status" request to provend over its unix socket,
 * the answer printed as JSON (byte strings in hex).
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"

#define CLI_STATUS_TIMEOUT_MS  5000
#define CLI_STATUS_MAX         (1024 * 1024)
#define CLI_STATUS_ID          1
#define CLI_JSON_DEPTH         PROVEN_CBOR_MAX_DEPTH


void
cli_usage_status(FILE *out)
{
    fprintf(out,
        "usage: proven status [--socket PATH]\n"
        "\n"
        "Asks provend for its status and prints the answer as JSON.\n"
        "\n"
        "  --socket PATH     provend's socket (default:\n"
        "                    $PROVEN_DATA/provend.sock, PROVEN_DATA\n"
        "                    defaulting to ./var)\n"
        "  -h, --help        show this text\n"
        "\n"
        "exit status: 0 done, 1 provend unreachable or failed, 2 usage "
        "error\n");
}


static int64_t
cli_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* Waits for events on fd until the deadline; PROVEN_ERR on timeout. */
static int
cli_wait(int fd, short events, int64_t deadline)
{
    int            n;
    int64_t        left;
    struct pollfd  pfd;

    for ( ;; ) {
        left = deadline - cli_now_ms();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return PROVEN_ERR;
        }

        pfd.fd = fd;
        pfd.events = events;
        pfd.revents = 0;

        n = poll(&pfd, 1, (int) left);
        if (n > 0) {
            return PROVEN_OK;
        }

        if (n < 0 && errno != EINTR) {
            return PROVEN_ERR;
        }
    }
}


static int
cli_send_all(int fd, const uint8_t *buf, size_t len, int64_t deadline)
{
    ssize_t  n;

    while (len > 0) {
        if (cli_wait(fd, POLLOUT, deadline) != PROVEN_OK) {
            return PROVEN_ERR;
        }

        n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }
            return PROVEN_ERR;
        }

        buf += n;
        len -= (size_t) n;
    }

    return PROVEN_OK;
}


static int
cli_recv_all(int fd, uint8_t *buf, size_t len, int64_t deadline)
{
    ssize_t  n;

    while (len > 0) {
        if (cli_wait(fd, POLLIN, deadline) != PROVEN_OK) {
            return PROVEN_ERR;
        }

        n = recv(fd, buf, len, 0);
        if (n == 0) {
            errno = ECONNRESET;
            return PROVEN_ERR;
        }

        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }
            return PROVEN_ERR;
        }

        buf += n;
        len -= (size_t) n;
    }

    return PROVEN_OK;
}


static int
cli_connect(const char *path, int64_t deadline)
{
    int                 fd, soerr;
    socklen_t           optlen;
    struct sockaddr_un  sa;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path));   /* length checked by caller */

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }

    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0) {
        return fd;
    }

    if (errno != EINPROGRESS) {
        goto failed;
    }

    if (cli_wait(fd, POLLOUT, deadline) != PROVEN_OK) {
        goto failed;
    }

    optlen = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &optlen) != 0) {
        goto failed;
    }

    if (soerr != 0) {
        errno = soerr;
        goto failed;
    }

    return fd;

failed:

    soerr = errno;
    close(fd);
    errno = soerr;
    return -1;
}


static json_t *cli_cbor_to_json(const cbor_item_t *item, int depth);


static json_t *
cli_cbor_map_to_json(const cbor_item_t *item, int depth)
{
    char                 name[32];
    char                *text;
    size_t               i, n, len;
    json_t              *obj, *value;
    uint64_t             u;
    struct cbor_pair    *pairs;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    pairs = cbor_map_handle(item);
    n = cbor_map_size(item);

    for (i = 0; i < n; i++) {
        text = NULL;

        /* JSON keys are text; integer keys read as their decimal form. */
        if (proven_cbor_uint(pairs[i].key, &u) == PROVEN_OK) {
            snprintf(name, sizeof(name), "%" PRIu64, u);

        } else if (proven_cbor_text(pairs[i].key, CLI_STATUS_MAX, &text,
                                    &len) != PROVEN_OK
                   || strlen(text) != len)
        {
            free(text);
            goto failed;
        }

        value = cli_cbor_to_json(pairs[i].value, depth + 1);
        if (value == NULL
            || json_object_set_new(obj, text != NULL ? text : name, value)
               != 0)
        {
            free(text);
            goto failed;
        }

        free(text);
    }

    return obj;

failed:

    json_decref(obj);
    return NULL;
}


static json_t *
cli_cbor_to_json(const cbor_item_t *item, int depth)
{
    char      *hex, *text;
    size_t     i, len;
    json_t    *j, *value;
    uint8_t   *bytes;
    uint64_t   u;

    if (depth > CLI_JSON_DEPTH) {
        return NULL;
    }

    switch (cbor_typeof(item)) {

    case CBOR_TYPE_UINT:
        u = cbor_get_int(item);
        return u <= INT64_MAX ? json_integer((json_int_t) u)
                              : json_real((double) u);

    case CBOR_TYPE_NEGINT:
        u = cbor_get_int(item);
        return u <= INT64_MAX ? json_integer(-1 - (json_int_t) u)
                             : json_real(-1.0 - (double) u);

    case CBOR_TYPE_BYTESTRING:
        if (proven_cbor_bytes(item, CLI_STATUS_MAX, &bytes, &len)
            != PROVEN_OK)
        {
            return NULL;
        }
        hex = malloc(2 * len + 1);
        if (hex == NULL) {
            free(bytes);
            return NULL;
        }
        proven_hex_encode(bytes, len, hex);
        j = json_stringn(hex, 2 * len);
        free(hex);
        free(bytes);
        return j;

    case CBOR_TYPE_STRING:
        if (proven_cbor_text(item, CLI_STATUS_MAX, &text, &len)
            != PROVEN_OK)
        {
            return NULL;
        }
        j = json_stringn(text, len);
        free(text);
        return j;

    case CBOR_TYPE_ARRAY:
        j = json_array();
        if (j == NULL) {
            return NULL;
        }
        for (i = 0; i < cbor_array_size(item); i++) {
            value = cli_cbor_to_json(cbor_array_handle(item)[i], depth + 1);
            if (value == NULL || json_array_append_new(j, value) != 0) {
                json_decref(j);
                return NULL;
            }
        }
        return j;

    case CBOR_TYPE_MAP:
        return cli_cbor_map_to_json(item, depth);

    case CBOR_TYPE_TAG:
        return cli_cbor_to_json(cbor_tag_item(item), depth + 1);

    case CBOR_TYPE_FLOAT_CTRL:
        if (proven_cbor_is_bool(item)) {
            return json_boolean(cbor_get_bool(item));
        }
        if (cbor_float_ctrl_is_ctrl(item)) {
            return json_null();     /* null, undefined, simple values */
        }
        return json_real(cbor_float_get_float(item));
    }

    return NULL;
}


int
cli_status(int argc, char **argv)
{
    int                 opt, rc, fd;
    char                err[PROVEN_ERR_LEN], pathbuf[PATH_MAX];
    size_t              framelen;
    json_t             *json;
    int64_t             deadline;
    uint8_t            *frame, *body, header[PROVEN_FRAME_HEADER];
    uint32_t            bodylen;
    cbor_item_t        *req;
    const char         *path, *data;
    proven_response_t   res;

    static const struct option  longopts[] = {
        { "socket", 1, NULL, CLI_OPT_SOCKET },
        { "help",   0, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    fd = -1;
    req = NULL;
    json = NULL;
    frame = NULL;
    body = NULL;
    path = NULL;
    rc = CLI_EXIT_USAGE;
    memset(&res, 0, sizeof(res));

    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            cli_usage_status(stdout);
            rc = CLI_EXIT_OK;
            goto failed;
        }

        if (opt == '?' || opt == ':') {
            cli_option_error("status", opt, argv);
            cli_usage_status(stderr);
            goto failed;
        }

        path = optarg;                          /* --socket */
    }

    if (optind != argc) {
        fprintf(stderr, "proven status: unexpected argument \"%s\"\n",
                argv[optind]);
        cli_usage_status(stderr);
        goto failed;
    }

    if (path == NULL) {
        data = getenv("PROVEN_DATA");
        if (data == NULL || data[0] == '\0') {
            data = "./var";
        }
        snprintf(pathbuf, sizeof(pathbuf), "%s/provend.sock", data);
        path = pathbuf;
    }

    if (path[0] == '\0' || strlen(path) >= sizeof(((struct sockaddr_un *)
                                                    NULL)->sun_path))
    {
        fprintf(stderr, "proven status: socket path \"%s\" is empty or "
                "too long\n", path);
        goto failed;
    }

    rc = CLI_EXIT_FAILED;
    deadline = cli_now_ms() + CLI_STATUS_TIMEOUT_MS;

    fd = cli_connect(path, deadline);
    if (fd < 0) {
        fprintf(stderr, "proven: provend is not reachable at %s: %s\n", path,
                strerror(errno));
        goto failed;
    }

    req = proven_request_new(CLI_STATUS_ID, "status");
    if (req == NULL
        || proven_frame_encode(req, &frame, &framelen, err, sizeof(err))
           != PROVEN_OK)
    {
        fprintf(stderr, "proven: cannot encode the request\n");
        goto failed;
    }

    if (cli_send_all(fd, frame, framelen, deadline) != PROVEN_OK
        || cli_recv_all(fd, header, sizeof(header), deadline) != PROVEN_OK)
    {
        fprintf(stderr, "proven: provend at %s did not answer: %s\n", path,
                strerror(errno));
        goto failed;
    }

    if (proven_frame_length(header, &bodylen, err, sizeof(err)) != PROVEN_OK
        || bodylen > CLI_STATUS_MAX)
    {
        fprintf(stderr, "proven: bad frame from provend: %s\n",
                bodylen > CLI_STATUS_MAX ? "too large" : err);
        goto failed;
    }

    body = malloc(bodylen);
    if (body == NULL) {
        fprintf(stderr, "proven: out of memory\n");
        goto failed;
    }

    if (cli_recv_all(fd, body, bodylen, deadline) != PROVEN_OK) {
        fprintf(stderr, "proven: provend at %s did not answer: %s\n", path,
                strerror(errno));
        goto failed;
    }

    if (proven_response_decode(body, bodylen, &res, err, sizeof(err))
        != PROVEN_OK)
    {
        fprintf(stderr, "proven: bad response from provend: %s\n", err);
        goto failed;
    }

    if (res.id != CLI_STATUS_ID) {
        fprintf(stderr, "proven: provend answered request %" PRIu64
                " instead of %d\n", res.id, CLI_STATUS_ID);
        goto failed;
    }

    if (!res.ok) {
        fprintf(stderr, "proven: provend: %s: %s\n", res.code, res.message);
        goto failed;
    }

    json = res.result != NULL ? cli_cbor_to_json(res.result, 0)
                              : json_null();
    if (json == NULL) {
        fprintf(stderr, "proven: provend's status does not convert to "
                "JSON\n");
        goto failed;
    }

    if (json_dumpf(json, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER
                                 | JSON_ENCODE_ANY) != 0)
    {
        goto failed;
    }
    printf("\n");

    rc = CLI_EXIT_OK;

failed:

    json_decref(json);
    proven_response_free(&res);
    if (req != NULL) {
        cbor_decref(&req);
    }
    free(frame);
    free(body);
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}
