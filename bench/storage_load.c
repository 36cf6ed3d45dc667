/*
 * storage_load: a closed-loop load generator for bench/storage.  N
 * connections over a unix socket, one request in flight on each, all
 * driven by epoll from one thread; the same loop speaks provend's frames
 * (kv.set / kv.get) or RESP to redis (SET / GET), so that only the server
 * differs between the two measurements.
 *
 *   storage_load --proto proven|redis --socket PATH --op set|get|fill
 *                [--clients N] [--seconds S] [--keys N] [--value-size N]
 *
 * Prints one line: op, clients, ops, ops_per_s, p50_ms, p99_ms, errors.
 * "fill" sets every key once (untimed use: so that gets find values).
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "proven.h"

#define LOAD_CLIENTS_MAX   1024
#define LOAD_KEYS_MAX      10000000
#define LOAD_VALUE_MAX     (1024 * 1024)
#define LOAD_RECV_MAX      (2 * LOAD_VALUE_MAX)
#define LOAD_KEY_LEN       32
#define LOAD_APP           "bench"
#define LOAD_STORE         "bench"

typedef enum { LOAD_PROVEN = 0, LOAD_REDIS } load_proto_t;
typedef enum { LOAD_SET = 0, LOAD_GET, LOAD_FILL } load_op_t;

typedef struct {
    int        fd;
    int        busy;              /* a request is in flight */
    int        want_out;          /* polled for writing too */
    uint64_t   id;                /* of the request in flight (proven) */
    int64_t    started_ns;
    uint8_t   *out;               /* the request, being sent */
    size_t     out_len;
    size_t     out_sent;
    uint8_t   *in;                /* the response, being read */
    size_t     in_len;
    size_t     in_cap;
} load_conn_t;

typedef struct {
    load_proto_t   proto;
    load_op_t      op;
    const char    *socket;
    int            clients;
    double         seconds;
    uint32_t       keys;
    size_t         value_size;
    uint8_t       *value;
    uint64_t       next_id;
    uint32_t       next_key;      /* fill: the next key to set */
    uint64_t       rng;
    uint64_t       ops;
    uint64_t       errors;
    uint32_t      *lat_us;        /* per completed op */
    size_t         lat_len;
    size_t         lat_cap;
} load_t;


static int64_t
load_now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


/* xorshift64*: a fast, good enough choice of keys, the same for both. */
static uint32_t
load_random_key(load_t *l)
{
    l->rng ^= l->rng >> 12;
    l->rng ^= l->rng << 25;
    l->rng ^= l->rng >> 27;
    return (uint32_t) ((l->rng * 2685821657736338717ULL) >> 32) % l->keys;
}


static int
load_connect(const char *path)
{
    int                 fd;
    struct sockaddr_un  sa;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "storage_load: socket path too long\n");
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path));

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("storage_load: socket");
        return -1;
    }

    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        fprintf(stderr, "storage_load: connect %s: %s\n", path,
                strerror(errno));
        close(fd);
        return -1;
    }

    return fd;
}


/*
 * A kv.set or kv.get frame, written by hand as the RESP requests are: the
 * client's own cost per request stays as small for both servers, so that
 * the one of the two that is measured is the server.
 */
static int
load_proven_request(load_t *l, load_conn_t *c, int set, const char *key)
{
    proven_frame_builder_t  b;

    c->id = ++l->next_id;

    free(c->out);
    c->out = NULL;

    proven_frame_builder_init(&b, 160 + LOAD_KEY_LEN
                                  + (set ? l->value_size + 9 : 0), 0);
    proven_frame_put_head(&b, PROVEN_CBOR_MAP, set ? 7 : 6);
    proven_frame_put_text(&b, "id");
    proven_frame_put_uint(&b, c->id);
    proven_frame_put_text(&b, "op");
    proven_frame_put_text(&b, set ? "kv.set" : "kv.get");
    proven_frame_put_text(&b, "scope");
    proven_frame_put_head(&b, PROVEN_CBOR_MAP, 2);
    proven_frame_put_text(&b, "app");
    proven_frame_put_text(&b, LOAD_APP);
    proven_frame_put_text(&b, "kind");
    proven_frame_put_text(&b, "app");
    proven_frame_put_text(&b, "store");
    proven_frame_put_text(&b, LOAD_STORE);
    proven_frame_put_text(&b, "type");
    proven_frame_put_text(&b, "bytes");
    proven_frame_put_text(&b, "key");
    proven_frame_put_text(&b, key);

    if (set) {
        proven_frame_put_text(&b, "value");
        proven_frame_put_string(&b, PROVEN_CBOR_BYTES, l->value,
                                l->value_size);
    }

    return proven_frame_builder_finish(&b, &c->out, &c->out_len);
}


/*
 * A response read in place: a map whose "id" is ours and whose "ok" is
 * true, every item well formed.  1 ok, 0 a failure answer, -1 malformed.
 */
static int
load_proven_ok(const load_conn_t *c, const uint8_t *body, size_t len)
{
    int                 major, ok, have_id;
    size_t              klen;
    uint64_t            n, i, v;
    const uint8_t      *k;
    proven_cbor_span_t  r;

    r.p = body;
    r.end = body + len;
    ok = 0;
    have_id = 0;

    if (proven_cbor_span_map(&r, &n) != PROVEN_OK
        || n == PROVEN_CBOR_INDEFINITE)
    {
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (proven_cbor_span_string(&r, PROVEN_CBOR_TEXT, &k, &klen)
            != PROVEN_OK)
        {
            return -1;
        }

        if (klen == 2 && memcmp(k, "id", 2) == 0) {
            if (proven_cbor_span_head(&r, &major, &v) != PROVEN_OK
                || major != PROVEN_CBOR_UINT || v != c->id)
            {
                return -1;
            }
            have_id = 1;

        } else if (klen == 2 && memcmp(k, "ok", 2) == 0) {
            if (proven_cbor_span_head(&r, &major, &v) != PROVEN_OK
                || major != PROVEN_CBOR_SIMPLE || (v != 20 && v != 21))
            {
                return -1;
            }
            ok = v == 21;

        } else if (proven_cbor_span_skip(&r, 8) != PROVEN_OK) {
            return -1;
        }
    }

    return r.p == r.end && have_id ? ok : -1;
}


static int
load_redis_request(load_t *l, load_conn_t *c, int set, const char *key)
{
    int     n;
    size_t  klen, len;
    char    head[128];

    klen = strlen(key);

    if (set) {
        n = snprintf(head, sizeof(head),
                     "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%zu\r\n", klen, key,
                     l->value_size);
    } else {
        n = snprintf(head, sizeof(head), "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n",
                     klen, key);
    }

    len = (size_t) n + (set ? l->value_size + 2 : 0);

    free(c->out);
    c->out = malloc(len);
    if (c->out == NULL) {
        return PROVEN_ERR;
    }

    memcpy(c->out, head, (size_t) n);
    if (set) {
        memcpy(c->out + n, l->value, l->value_size);
        memcpy(c->out + n + l->value_size, "\r\n", 2);
    }

    c->out_len = len;
    return PROVEN_OK;
}


/* Sends what the socket takes now; 1 when all of it went. */
static int
load_flush(load_conn_t *c)
{
    ssize_t  n;

    while (c->out_sent < c->out_len) {
        n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                return 0;
            }
            return -1;
        }
        c->out_sent += (size_t) n;
    }

    return 1;
}


/* Starts the next request on c; 0 when a fill has no key left. */
static int
load_start(load_t *l, load_conn_t *c)
{
    int       set, rc;
    char      key[LOAD_KEY_LEN];
    uint32_t  k;

    if (l->op == LOAD_FILL) {
        if (l->next_key >= l->keys) {
            return 0;
        }
        k = l->next_key++;
    } else {
        k = load_random_key(l);
    }

    snprintf(key, sizeof(key), "key:%08" PRIu32, k);
    set = l->op != LOAD_GET;

    rc = l->proto == LOAD_PROVEN ? load_proven_request(l, c, set, key)
                                 : load_redis_request(l, c, set, key);
    if (rc != PROVEN_OK) {
        fprintf(stderr, "storage_load: cannot build a request\n");
        return -1;
    }

    c->out_sent = 0;
    c->in_len = 0;
    c->busy = 1;
    c->started_ns = load_now_ns();

    return load_flush(c) < 0 ? -1 : 1;
}


/*
 * Whether c->in holds a whole response: 1 yes (*ok says whether it was a
 * success), 0 not yet, -1 malformed.
 */
static int
load_response(load_t *l, load_conn_t *c, int *ok)
{
    int                rc;
    char               err[PROVEN_ERR_LEN], *end;
    long               n;
    size_t             line;
    uint8_t           *crlf;
    uint32_t           len;
    proven_response_t  res;

    if (l->proto == LOAD_PROVEN) {
        if (c->in_len < PROVEN_FRAME_HEADER) {
            return 0;
        }
        if (proven_frame_length(c->in, &len, err, sizeof(err)) != PROVEN_OK) {
            return -1;
        }
        if (c->in_len < PROVEN_FRAME_HEADER + (size_t) len) {
            return 0;
        }
        if (c->in_len > PROVEN_FRAME_HEADER + (size_t) len) {
            return -1;
        }

        rc = load_proven_ok(c, c->in + PROVEN_FRAME_HEADER, len);
        if (rc < 0) {
            return -1;
        }
        *ok = rc;

        /* The first failure says why, through the general decoder. */
        if (!rc && l->errors == 0
            && proven_response_decode(c->in + PROVEN_FRAME_HEADER, len, &res,
                                      err, sizeof(err)) == PROVEN_OK)
        {
            fprintf(stderr, "storage_load: provend: %s: %s\n", res.code,
                    res.message);
            proven_response_free(&res);
        }
        return 1;
    }

    crlf = memmem(c->in, c->in_len, "\r\n", 2);
    if (crlf == NULL) {
        return c->in_len > 256 ? -1 : 0;
    }
    line = (size_t) (crlf - c->in) + 2;

    switch (c->in[0]) {

    case '+':
        *ok = 1;
        return c->in_len == line ? 1 : -1;

    case '-':
        if (l->errors == 0) {
            fprintf(stderr, "storage_load: redis: %.*s\n", (int) line - 2,
                    (const char *) c->in);
        }
        *ok = 0;
        return c->in_len == line ? 1 : -1;

    case '$':
        errno = 0;
        n = strtol((const char *) c->in + 1, &end, 10);
        if (errno != 0 || end != (char *) crlf || n < -1
            || n > LOAD_VALUE_MAX)
        {
            return -1;
        }
        if (n == -1) {
            *ok = 0;        /* a get of a key never set */
            return c->in_len == line ? 1 : -1;
        }
        if (c->in_len < line + (size_t) n + 2) {
            return 0;
        }
        *ok = 1;
        return c->in_len == line + (size_t) n + 2 ? 1 : -1;
    }

    return -1;
}


static int
load_read(load_t *l, load_conn_t *c, int64_t deadline_ns)
{
    int       ok, rc;
    ssize_t   n;
    size_t    cap;
    int64_t   now, us;
    uint8_t  *p;
    uint32_t *lat;

    if (c->in_cap - c->in_len < 4096) {
        cap = c->in_cap == 0 ? 65536 : c->in_cap * 2;
        if (cap > LOAD_RECV_MAX) {
            fprintf(stderr, "storage_load: response too large\n");
            return -1;
        }
        p = realloc(c->in, cap);
        if (p == NULL) {
            return -1;
        }
        c->in = p;
        c->in_cap = cap;
    }

    n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
    if (n == 0) {
        fprintf(stderr, "storage_load: the server closed a connection\n");
        return -1;
    }
    if (n < 0) {
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    }
    c->in_len += (size_t) n;

    rc = load_response(l, c, &ok);
    if (rc <= 0) {
        if (rc < 0) {
            fprintf(stderr, "storage_load: malformed response\n");
        }
        return rc;
    }

    now = load_now_ns();
    c->busy = 0;

    if (!ok) {
        l->errors++;

    } else {
        l->ops++;
        if (l->lat_len == l->lat_cap) {
            cap = l->lat_cap == 0 ? 65536 : l->lat_cap * 2;
            lat = realloc(l->lat_us, cap * sizeof(*lat));
            if (lat == NULL) {
                return -1;
            }
            l->lat_us = lat;
            l->lat_cap = cap;
        }
        us = (now - c->started_ns) / 1000;
        l->lat_us[l->lat_len++] = us > UINT32_MAX ? UINT32_MAX
                                                  : (uint32_t) us;
    }

    if (l->op != LOAD_FILL && now >= deadline_ns) {
        return 0;
    }

    return load_start(l, c) < 0 ? -1 : 0;
}


static int
load_cmp_u32(const void *a, const void *b)
{
    uint32_t  x = *(const uint32_t *) a, y = *(const uint32_t *) b;

    return x < y ? -1 : x > y;
}


static double
load_percentile_ms(const load_t *l, double p)
{
    size_t  i;

    if (l->lat_len == 0) {
        return 0;
    }

    i = (size_t) (p * (double) (l->lat_len - 1) + 0.5);
    return l->lat_us[i] / 1000.0;
}


/* Polls c for writing as long as part of its request is unsent. */
static int
load_watch(int epfd, load_conn_t *c, int i)
{
    int                 want;
    struct epoll_event  ev;

    want = c->out_sent < c->out_len;
    if (want == c->want_out) {
        return 0;
    }

    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0);
    ev.data.u32 = (uint32_t) i;
    c->want_out = want;
    return epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}


/*
 * epoll rather than poll(): the client's own cost per request must stay
 * well below a server's, or the run measures the client (poll() walks
 * every connection's wait queue on every call).
 */
static int
load_run(load_t *l)
{
    int                  i, n, k, rc, epfd, active;
    int64_t              start, deadline, elapsed;
    load_conn_t         *conns, *c;
    struct epoll_event   ev, *events;

    rc = 1;
    epfd = -1;
    conns = calloc((size_t) l->clients, sizeof(*conns));
    events = calloc((size_t) l->clients, sizeof(*events));
    if (conns == NULL || events == NULL) {
        fprintf(stderr, "storage_load: out of memory\n");
        goto failed;
    }

    for (i = 0; i < l->clients; i++) {
        conns[i].fd = -1;
    }

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        perror("storage_load: epoll_create1");
        goto failed;
    }

    for (i = 0; i < l->clients; i++) {
        conns[i].fd = load_connect(l->socket);
        if (conns[i].fd < 0) {
            goto failed;
        }

        memset(&ev, 0, sizeof(ev));
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t) i;
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, conns[i].fd, &ev) != 0) {
            perror("storage_load: epoll_ctl");
            goto failed;
        }
    }

    start = load_now_ns();
    deadline = start + (int64_t) (l->seconds * 1e9);

    for (i = 0; i < l->clients; i++) {
        if (load_start(l, &conns[i]) < 0
            || load_watch(epfd, &conns[i], i) != 0)
        {
            goto failed;
        }
    }

    for ( ;; ) {
        active = 0;
        for (i = 0; i < l->clients; i++) {
            active += conns[i].busy;
        }

        if (active == 0) {
            break;
        }

        /* In-flight requests get a grace second past the deadline. */
        if (l->op != LOAD_FILL && load_now_ns() > deadline + 1000000000) {
            break;
        }

        n = epoll_wait(epfd, events, l->clients, 100);
        if (n < 0 && errno != EINTR) {
            perror("storage_load: epoll_wait");
            goto failed;
        }

        for (k = 0; k < n; k++) {
            i = (int) events[k].data.u32;
            c = &conns[i];

            if (!c->busy) {
                continue;
            }

            if (c->out_sent < c->out_len) {
                if (load_flush(c) < 0) {
                    fprintf(stderr, "storage_load: send failed\n");
                    goto failed;
                }
            } else if (load_read(l, c, deadline) < 0) {
                goto failed;
            }

            if (load_watch(epfd, c, i) != 0) {
                perror("storage_load: epoll_ctl");
                goto failed;
            }
        }
    }

    elapsed = load_now_ns() - start;
    if (l->op != LOAD_FILL) {
        elapsed = deadline - start;
    }

    qsort(l->lat_us, l->lat_len, sizeof(*l->lat_us), load_cmp_u32);

    printf("op=%s clients=%d ops=%" PRIu64 " ops_per_s=%.1f p50_ms=%.3f "
           "p99_ms=%.3f errors=%" PRIu64 "\n",
           l->op == LOAD_SET ? "set" : l->op == LOAD_GET ? "get" : "fill",
           l->clients, l->ops, (double) l->ops / ((double) elapsed / 1e9),
           load_percentile_ms(l, 0.50), load_percentile_ms(l, 0.99),
           l->errors);

    rc = l->errors == 0 && l->ops > 0 ? 0 : 1;

failed:

    for (i = 0; conns != NULL && i < l->clients; i++) {
        if (conns[i].fd >= 0) {
            close(conns[i].fd);
        }
        free(conns[i].out);
        free(conns[i].in);
    }
    free(conns);
    free(events);
    if (epfd >= 0) {
        close(epfd);
    }
    return rc;
}


static void
load_usage(void)
{
    fprintf(stderr,
        "usage: storage_load --proto proven|redis --socket PATH"
        " --op set|get|fill\n"
        "                    [--clients N] [--seconds S] [--keys N]"
        " [--value-size N]\n");
}


int
main(int argc, char **argv)
{
    int       opt, rc;
    char     *end;
    load_t    l;

    static const struct option  longopts[] = {
        { "proto",      1, NULL, 'p' },
        { "socket",     1, NULL, 's' },
        { "op",         1, NULL, 'o' },
        { "clients",    1, NULL, 'c' },
        { "seconds",    1, NULL, 't' },
        { "keys",       1, NULL, 'k' },
        { "value-size", 1, NULL, 'v' },
        { NULL, 0, NULL, 0 }
    };

    memset(&l, 0, sizeof(l));
    l.clients = 1;
    l.seconds = 10;
    l.keys = 10000;
    l.value_size = 100;
    l.op = -1;
    l.rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t) getpid();

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        errno = 0;
        end = NULL;

        switch (opt) {
        case 'p':
            l.proto = strcmp(optarg, "redis") == 0 ? LOAD_REDIS
                      : strcmp(optarg, "proven") == 0 ? LOAD_PROVEN : -1;
            break;
        case 's':
            l.socket = optarg;
            break;
        case 'o':
            l.op = strcmp(optarg, "set") == 0 ? LOAD_SET
                   : strcmp(optarg, "get") == 0 ? LOAD_GET
                   : strcmp(optarg, "fill") == 0 ? LOAD_FILL : -1;
            break;
        case 'c':
            l.clients = (int) strtol(optarg, &end, 10);
            break;
        case 't':
            l.seconds = strtod(optarg, &end);
            break;
        case 'k':
            l.keys = (uint32_t) strtoul(optarg, &end, 10);
            break;
        case 'v':
            l.value_size = strtoul(optarg, &end, 10);
            break;
        default:
            load_usage();
            return 2;
        }

        if (errno != 0 || (end != NULL && *end != '\0')) {
            load_usage();
            return 2;
        }
    }

    if (optind != argc || l.socket == NULL || (int) l.op < 0
        || (int) l.proto < 0 || l.clients < 1
        || l.clients > LOAD_CLIENTS_MAX || !(l.seconds > 0)
        || l.keys < 1 || l.keys > LOAD_KEYS_MAX
        || l.value_size > LOAD_VALUE_MAX)
    {
        load_usage();
        return 2;
    }

    l.value = malloc(l.value_size + 1);
    if (l.value == NULL) {
        fprintf(stderr, "storage_load: out of memory\n");
        return 1;
    }
    memset(l.value, 'v', l.value_size);

    rc = load_run(&l);

    free(l.value);
    free(l.lat_us);
    return rc;
}
