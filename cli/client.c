/*
 * The CLI side of provend's socket: one connection, requests answered in
 * order, each under a deadline so a silent provend cannot hang us; and the
 * CBOR -> JSON view every subcommand prints with.
 */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* A kv value is at most 1 MiB and a query batch is bounded by provend. */
#define CLI_RESPONSE_MAX  PROVEN_FRAME_MAX


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


/* The next answer's body, in the reader; errno says why on PROVEN_ERR. */
static int
cli_recv_frame(cli_client_t *c, int64_t deadline, const uint8_t **body,
    size_t *len, char *err, size_t errlen)
{
    int       rc;
    size_t    avail;
    ssize_t   n;
    uint8_t  *space;

    for ( ;; ) {
        rc = proven_frame_reader_next(&c->reader, body, len, err, errlen);
        if (rc != PROVEN_AGAIN) {
            return rc;
        }

        if (cli_wait(c->fd, POLLIN, deadline) != PROVEN_OK) {
            snprintf(err, errlen, "%s", strerror(errno));
            return PROVEN_AGAIN;
        }

        space = proven_frame_reader_space(&c->reader, &avail);
        if (space == NULL || avail == 0) {
            snprintf(err, errlen, "out of memory");
            return PROVEN_ERR;
        }

        n = recv(c->fd, space, avail, 0);
        if (n == 0) {
            snprintf(err, errlen, "%s", strerror(ECONNRESET));
            return PROVEN_AGAIN;
        }

        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }
            snprintf(err, errlen, "%s", strerror(errno));
            return PROVEN_AGAIN;
        }

        proven_frame_reader_fill(&c->reader, (size_t) n);
    }
}


int
cli_client_init(cli_client_t *c, const char *cmd, const char *socket_path)
{
    const char  *data;

    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->cmd = cmd;
    c->timeout_ms = CLI_CLIENT_TIMEOUT_MS;
    proven_frame_reader_init(&c->reader, CLI_RESPONSE_MAX);

    if (socket_path == NULL) {
        data = getenv("PROVEN_DATA");
        if (data == NULL || data[0] == '\0') {
            data = "./var";
        }
        snprintf(c->path, sizeof(c->path), "%s/provend.sock", data);
        socket_path = c->path;

    } else if (strlen(socket_path) < sizeof(c->path)) {
        strcpy(c->path, socket_path);
    }

    if (socket_path[0] == '\0'
        || strlen(socket_path) >= sizeof(((struct sockaddr_un *)
                                          NULL)->sun_path))
    {
        fprintf(stderr, "proven %s: socket path \"%s\" is empty or "
                "too long\n", cmd, socket_path);
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


int
cli_client_connect(cli_client_t *c)
{
    int                 fd, soerr;
    int64_t             deadline;
    socklen_t           optlen;
    struct sockaddr_un  sa;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, c->path, strlen(c->path));  /* checked by init */

    deadline = cli_now_ms() + c->timeout_ms;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        goto failed;
    }

    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0) {
        c->fd = fd;
        return PROVEN_OK;
    }

    if (errno != EINPROGRESS && errno != EAGAIN) {
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

    c->fd = fd;
    return PROVEN_OK;

failed:

    soerr = errno;
    if (fd >= 0) {
        close(fd);
    }
    fprintf(stderr, "proven: provend is not reachable at %s: %s\n", c->path,
            strerror(soerr));
    return PROVEN_ERR;
}


void
cli_client_close(cli_client_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }

    proven_frame_reader_free(&c->reader);
}


cbor_item_t *
cli_client_request(cli_client_t *c, const char *op)
{
    cbor_item_t  *req;

    c->next_id++;

    req = proven_request_new(c->next_id, op);
    if (req == NULL) {
        fprintf(stderr, "proven: out of memory\n");
    }

    return req;
}


int
cli_client_call(cli_client_t *c, const cbor_item_t *req,
    proven_response_t *res)
{
    int             rc;
    char            err[PROVEN_ERR_LEN];
    size_t          framelen, bodylen;
    int64_t         deadline;
    uint8_t        *frame;
    const uint8_t  *body;

    frame = NULL;
    memset(res, 0, sizeof(*res));

    if (proven_frame_encode(req, &frame, &framelen, err, sizeof(err))
        != PROVEN_OK)
    {
        fprintf(stderr, "proven: cannot encode the request: %s\n", err);
        goto failed;
    }

    deadline = cli_now_ms() + c->timeout_ms;

    if (cli_send_all(c->fd, frame, framelen, deadline) != PROVEN_OK) {
        fprintf(stderr, "proven: provend at %s did not answer: %s\n",
                c->path, strerror(errno));
        goto failed;
    }

    rc = cli_recv_frame(c, deadline, &body, &bodylen, err, sizeof(err));

    if (rc == PROVEN_AGAIN) {
        fprintf(stderr, "proven: provend at %s did not answer: %s\n",
                c->path, err);
        goto failed;
    }

    if (rc != PROVEN_OK) {
        fprintf(stderr, "proven: bad frame from provend: %s\n", err);
        goto failed;
    }

    if (proven_response_decode(body, bodylen, res, err, sizeof(err))
        != PROVEN_OK)
    {
        fprintf(stderr, "proven: bad response from provend: %s\n", err);
        goto failed;
    }

    if (res->id != c->next_id) {
        fprintf(stderr, "proven: provend answered request %" PRIu64
                " instead of %" PRIu64 "\n", res->id, c->next_id);
        goto failed;
    }

    free(frame);
    return PROVEN_OK;

failed:

    proven_response_free(res);
    memset(res, 0, sizeof(*res));
    free(frame);
    return PROVEN_ERR;
}


void
cli_client_report(const proven_response_t *res)
{
    fprintf(stderr, "proven: provend: %s: %s\n", res->code, res->message);
}


int
cli_client_call_print(cli_client_t *c, const cbor_item_t *req, size_t flags)
{
    int                 rc;
    json_t             *json;
    proven_response_t   res;

    json = NULL;
    rc = CLI_EXIT_FAILED;
    memset(&res, 0, sizeof(res));

    if (cli_client_call(c, req, &res) != PROVEN_OK) {
        goto failed;
    }

    if (!res.ok) {
        cli_client_report(&res);
        goto failed;
    }

    json = res.result != NULL ? cli_cbor_to_json(res.result) : json_null();
    if (json == NULL || cli_json_print(json, flags) != PROVEN_OK) {
        fprintf(stderr, "proven: cannot print provend's answer\n");
        goto failed;
    }

    rc = CLI_EXIT_OK;

failed:

    json_decref(json);
    proven_response_free(&res);
    return rc;
}


static json_t *cli_cbor_to_json_at(const cbor_item_t *item, int depth);


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

        } else if (proven_cbor_text(pairs[i].key, CLI_RESPONSE_MAX, &text,
                                    &len) != PROVEN_OK
                   || strlen(text) != len)
        {
            free(text);
            goto failed;
        }

        value = cli_cbor_to_json_at(pairs[i].value, depth + 1);
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


json_t *
cli_cbor_hex(const cbor_item_t *item)
{
    char     *hex;
    size_t    len;
    json_t   *j;
    uint8_t  *bytes;

    if (proven_cbor_bytes(item, CLI_RESPONSE_MAX, &bytes, &len)
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
}


static json_t *
cli_cbor_to_json_at(const cbor_item_t *item, int depth)
{
    char      *text;
    size_t     i, len;
    json_t    *j, *value;
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
        return cli_cbor_hex(item);

    case CBOR_TYPE_STRING:
        if (proven_cbor_text(item, CLI_RESPONSE_MAX, &text, &len)
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
            value = cli_cbor_to_json_at(cbor_array_handle(item)[i],
                                        depth + 1);
            if (value == NULL || json_array_append_new(j, value) != 0) {
                json_decref(j);
                return NULL;
            }
        }
        return j;

    case CBOR_TYPE_MAP:
        return cli_cbor_map_to_json(item, depth);

    case CBOR_TYPE_TAG:
        return cli_cbor_to_json_at(cbor_tag_item(item), depth + 1);

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


json_t *
cli_cbor_to_json(const cbor_item_t *item)
{
    return cli_cbor_to_json_at(item, 0);
}


int
cli_json_print(const json_t *json, size_t flags)
{
    if (json_dumpf(json, stdout, flags | JSON_ENCODE_ANY) != 0
        || fputc('\n', stdout) == EOF)
    {
        fprintf(stderr, "proven: cannot write the output\n");
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


int
cli_scope_option(cli_scope_t *s, int opt, const char *arg)
{
    switch (opt) {

    case CLI_OPT_APP:
        s->app = arg;
        return 1;

    case CLI_OPT_PERSONAL:
        s->personal = arg;
        return 1;

    case CLI_OPT_NFT:
        s->nft = arg;
        return 1;
    }

    return 0;
}


/* Adds key -> text to map; PROVEN_ERR when out of memory. */
static int
cli_put_text(cbor_item_t *map, const char *key, const char *text,
    size_t len)
{
    cbor_item_t  *value;

    value = cbor_build_stringn(text, len);
    if (value == NULL) {
        return PROVEN_ERR;
    }

    return proven_cbor_map_put(map, key, value);
}


static cbor_item_t *
cli_scope_nft(const char *cmd, const char *spec)
{
    const char   *first, *last;
    cbor_item_t  *nft;

    /* The contract may hold colons itself: chain and token cannot. */
    first = strchr(spec, ':');
    last = strrchr(spec, ':');

    if (first == NULL || first == last || first == spec
        || last == first + 1 || last[1] == '\0')
    {
        fprintf(stderr, "proven %s: --nft wants CHAIN:CONTRACT:TOKEN, not "
                "\"%s\"\n", cmd, spec);
        return NULL;
    }

    nft = cbor_new_definite_map(3);
    if (nft == NULL
        || cli_put_text(nft, "chain", spec, (size_t) (first - spec))
           != PROVEN_OK
        || cli_put_text(nft, "contract", first + 1,
                        (size_t) (last - first - 1)) != PROVEN_OK
        || cli_put_text(nft, "token", last + 1, strlen(last + 1))
           != PROVEN_OK)
    {
        fprintf(stderr, "proven: out of memory\n");
        if (nft != NULL) {
            cbor_decref(&nft);
        }
        return NULL;
    }

    return nft;
}


int
cli_scope_add(const cli_scope_t *s, const char *cmd, cbor_item_t *req)
{
    int           rc;
    const char   *kind;
    cbor_item_t  *scope, *nft;

    if (s->app == NULL) {
        fprintf(stderr, "proven %s: --app is required\n", cmd);
        return CLI_EXIT_USAGE;
    }

    if (s->personal != NULL && s->nft != NULL) {
        fprintf(stderr, "proven %s: --personal and --nft exclude each "
                "other\n", cmd);
        return CLI_EXIT_USAGE;
    }

    nft = NULL;
    kind = s->personal != NULL ? "personal" : s->nft != NULL ? "nft" : "app";

    if (s->nft != NULL) {
        nft = cli_scope_nft(cmd, s->nft);
        if (nft == NULL) {
            return CLI_EXIT_USAGE;
        }
    }

    /* provend checks the names themselves: one set of rules, there. */
    scope = cbor_new_definite_map(3);
    if (scope == NULL
        || cli_put_text(scope, "app", s->app, strlen(s->app)) != PROVEN_OK
        || cli_put_text(scope, "kind", kind, strlen(kind)) != PROVEN_OK
        || (s->personal != NULL
            && cli_put_text(scope, "identity", s->personal,
                            strlen(s->personal)) != PROVEN_OK))
    {
        goto failed;
    }

    if (nft != NULL) {
        rc = proven_cbor_map_put(scope, "nft", nft);
        nft = NULL;     /* put takes our reference, failing or not */
        if (rc != PROVEN_OK) {
            goto failed;
        }
    }

    if (proven_cbor_map_put(req, "scope", scope) != PROVEN_OK) {
        scope = NULL;   /* put drops the reference it was given */
        goto failed;
    }

    return CLI_EXIT_OK;

failed:

    fprintf(stderr, "proven: out of memory\n");
    if (nft != NULL) {
        cbor_decref(&nft);
    }
    if (scope != NULL) {
        cbor_decref(&scope);
    }
    return CLI_EXIT_FAILED;
}


int
cli_add_text(cbor_item_t *map, const char *key, const char *text)
{
    if (cli_put_text(map, key, text, strlen(text)) != PROVEN_OK) {
        fprintf(stderr, "proven: out of memory\n");
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


int
cli_add_uint(cbor_item_t *map, const char *key, uint64_t value)
{
    cbor_item_t  *item;

    item = cbor_build_uint64(value);
    if (item == NULL || proven_cbor_map_put(map, key, item) != PROVEN_OK) {
        fprintf(stderr, "proven: out of memory\n");
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


int
cli_parse_uint(const char *cmd, const char *what, const char *s,
    uint64_t max, uint64_t *out)
{
    char                *end;
    unsigned long long   v;

    errno = 0;
    v = (*s >= '0' && *s <= '9') ? strtoull(s, &end, 10) : 0;

    if (*s < '0' || *s > '9' || errno != 0 || *end != '\0' || v > max) {
        fprintf(stderr, "proven %s: %s wants a number up to %" PRIu64
                ", not \"%s\"\n", cmd, what, max, s);
        return PROVEN_ERR;
    }

    *out = v;
    return PROVEN_OK;
}
