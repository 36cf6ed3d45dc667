/*
 * js_kv: the engine's own ceiling for bench/cluster.  N client threads,
 * one request in flight on each, put or get on a JetStream KV bucket
 * through libnats (one connection, as provend keeps one), with the same
 * keys, values and output line as bench/storage_load.c.
 *
 *   js_kv --url nats://127.0.0.1:PORT --op put|get|fill [--clients N]
 *         [--seconds S] [--keys N] [--value-size N] [--replicas R]
 *
 * Prints one line: op, clients, ops, ops_per_s, p50_ms, p99_ms, errors.
 * "fill" puts every key once (so that gets find values).
 */

#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#define JSKV_BUCKET       "bench"
#define JSKV_CLIENTS_MAX  256
#define JSKV_SAMPLES_MAX  (1 << 20)     /* latencies kept per thread */
#define JSKV_VALUE_MAX    (1024 * 1024)

typedef struct {
    kvStore    *kv;
    int         put;
    int64_t     until_ns;
    uint32_t    keys;
    uint32_t    next;             /* this thread's key cursor */
    uint32_t    step;
    const char *value;
    int         value_len;
    uint64_t    ops;
    uint64_t    errors;
    int64_t    *lat;              /* ns, the first JSKV_SAMPLES_MAX */
    size_t      nlat;
    pthread_t   thread;
} jskv_client_t;


static int64_t
jskv_now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


static void *
jskv_run(void *arg)
{
    char            key[32];
    int64_t         t0;
    uint64_t        rev;
    kvEntry        *e;
    natsStatus      s;
    jskv_client_t  *c;

    c = arg;
    while ((t0 = jskv_now_ns()) < c->until_ns) {
        snprintf(key, sizeof(key), "k%08" PRIu32, c->next % c->keys);
        c->next += c->step;
        if (c->put) {
            s = kvStore_Put(&rev, c->kv, key, c->value, c->value_len);
        } else {
            e = NULL;
            s = kvStore_Get(&e, c->kv, key);
            kvEntry_Destroy(e);
        }
        if (s != NATS_OK) {
            c->errors++;
            continue;
        }
        c->ops++;
        if (c->nlat < JSKV_SAMPLES_MAX) {
            c->lat[c->nlat++] = jskv_now_ns() - t0;
        }
    }
    return NULL;
}


static int
jskv_cmp(const void *a, const void *b)
{
    int64_t  x = *(const int64_t *) a, y = *(const int64_t *) b;

    return x < y ? -1 : x > y;
}


int
main(int argc, char **argv)
{
    int              opt, i, clients, replicas, fill;
    char            *value;
    double           seconds, elapsed;
    size_t           total, n;
    int64_t         *all, start;
    uint32_t         keys, k;
    uint64_t         ops, errors, rev;
    kvStore         *kv;
    kvConfig         kc;
    natsConnection  *nc;
    jsCtx           *js;
    natsStatus       s;
    const char      *url, *op;
    size_t           value_size;
    jskv_client_t   *c;

    static const struct option  longopts[] = {
        { "url", 1, NULL, 'u' }, { "op", 1, NULL, 'o' },
        { "clients", 1, NULL, 'c' }, { "seconds", 1, NULL, 's' },
        { "keys", 1, NULL, 'k' }, { "value-size", 1, NULL, 'v' },
        { "replicas", 1, NULL, 'r' }, { NULL, 0, NULL, 0 }
    };

    url = NULL;
    op = NULL;
    clients = 1;
    seconds = 3;
    keys = 10000;
    value_size = 100;
    replicas = 3;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'u': url = optarg; break;
        case 'o': op = optarg; break;
        case 'c': clients = atoi(optarg); break;
        case 's': seconds = atof(optarg); break;
        case 'k': keys = (uint32_t) strtoul(optarg, NULL, 10); break;
        case 'v': value_size = strtoul(optarg, NULL, 10); break;
        case 'r': replicas = atoi(optarg); break;
        default:
            return 2;
        }
    }
    if (url == NULL || op == NULL
        || (strcmp(op, "put") != 0 && strcmp(op, "get") != 0
            && strcmp(op, "fill") != 0)
        || clients < 1 || clients > JSKV_CLIENTS_MAX || keys < 1
        || value_size < 1 || value_size > JSKV_VALUE_MAX || seconds <= 0)
    {
        fprintf(stderr, "usage: js_kv --url URL --op put|get|fill "
                "[--clients 1..%d] [--seconds S] [--keys N] "
                "[--value-size N] [--replicas R]\n", JSKV_CLIENTS_MAX);
        return 2;
    }
    fill = strcmp(op, "fill") == 0;

    value = malloc(value_size);
    c = calloc((size_t) clients, sizeof(*c));
    if (value == NULL || c == NULL) {
        fprintf(stderr, "js_kv: out of memory\n");
        return 1;
    }
    memset(value, 'v', value_size);

    nc = NULL;
    js = NULL;
    kv = NULL;
    s = natsConnection_ConnectTo(&nc, url);
    if (s == NATS_OK) {
        s = natsConnection_JetStream(&js, nc, NULL);
    }
    if (s == NATS_OK) {
        s = js_KeyValue(&kv, js, JSKV_BUCKET);
        if (s == NATS_NOT_FOUND) {
            kvConfig_Init(&kc);
            kc.Bucket = JSKV_BUCKET;
            kc.History = 1;
            kc.Replicas = replicas;
            kc.StorageType = js_FileStorage;
            s = js_CreateKeyValue(&kv, js, &kc);
        }
    }
    if (s != NATS_OK) {
        fprintf(stderr, "js_kv: %s: %s\n", url, natsStatus_GetText(s));
        return 1;
    }

    if (fill) {
        errors = 0;
        for (k = 0; k < keys; k++) {
            char  key[32];

            snprintf(key, sizeof(key), "k%08" PRIu32, k);
            errors += kvStore_Put(&rev, kv, key, value, (int) value_size)
                      != NATS_OK;
        }
        printf("op=fill keys=%" PRIu32 " errors=%" PRIu64 "\n", keys,
               errors);
        return errors == 0 ? 0 : 1;
    }

    start = jskv_now_ns();
    for (i = 0; i < clients; i++) {
        c[i].kv = kv;
        c[i].put = strcmp(op, "put") == 0;
        c[i].until_ns = start + (int64_t) (seconds * 1e9);
        c[i].keys = keys;
        c[i].next = (uint32_t) i * 7919;
        c[i].step = 104729;
        c[i].value = value;
        c[i].value_len = (int) value_size;
        c[i].lat = malloc(JSKV_SAMPLES_MAX * sizeof(int64_t));
        if (c[i].lat == NULL
            || pthread_create(&c[i].thread, NULL, jskv_run, &c[i]) != 0)
        {
            fprintf(stderr, "js_kv: cannot start client %d\n", i);
            return 1;
        }
    }
    ops = errors = 0;
    total = 0;
    for (i = 0; i < clients; i++) {
        pthread_join(c[i].thread, NULL);
        ops += c[i].ops;
        errors += c[i].errors;
        total += c[i].nlat;
    }
    elapsed = (double) (jskv_now_ns() - start) / 1e9;

    all = malloc((total ? total : 1) * sizeof(int64_t));
    if (all == NULL) {
        fprintf(stderr, "js_kv: out of memory\n");
        return 1;
    }
    n = 0;
    for (i = 0; i < clients; i++) {
        memcpy(all + n, c[i].lat, c[i].nlat * sizeof(int64_t));
        n += c[i].nlat;
        free(c[i].lat);
    }
    qsort(all, n, sizeof(int64_t), jskv_cmp);
    printf("op=%s clients=%d ops=%" PRIu64 " ops_per_s=%.1f p50_ms=%.3f "
           "p99_ms=%.3f errors=%" PRIu64 "\n", op, clients, ops,
           (double) ops / elapsed, n ? (double) all[n / 2] / 1e6 : 0.0,
           n ? (double) all[n * 99 / 100] / 1e6 : 0.0, errors);

    free(all);
    free(c);
    free(value);
    kvStore_Destroy(kv);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    nats_Close();
    return 0;
}
