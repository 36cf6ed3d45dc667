/*
 * `proven cluster status`: provend's view of the cluster (its members and
 * whether each was admitted, or why not) and the NATS server's own: the
 * routes it holds and the JetStream meta group (leader, replicas, lag),
 * read from its monitoring port on loopback.
 */

#include <getopt.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"
#include "fetch/proven_fetch.h"

#define CLI_CLUSTER_TIMEOUT_MS  5000
#define CLI_CLUSTER_BODY_MAX    (1024 * 1024)


void
cli_usage_cluster(FILE *out)
{
    fprintf(out,
        "usage: proven cluster status [--socket PATH]\n"
        "\n"
        "Prints the cluster as this node sees it, as JSON: its members\n"
        "(admitted by their attestation, or why not), the NATS routes it\n"
        "holds and the JetStream meta group's leader, replicas and lag.\n"
        "\n"
        "  --socket PATH     provend's socket (default:\n"
        "                    $PROVEN_DATA/provend.sock)\n"
        "\n"
        "exit status: 0 done, 1 provend unreachable or not clustered, 2 "
        "usage error\n");
}


/* GET http://127.0.0.1:PORT/PATH as JSON, or NULL. */
static json_t *
cli_cluster_monitor(unsigned port, const char *path, size_t flags)
{
    char                 url[128];
    json_t              *json;
    proven_fetch_t       f;
    proven_fetch_opts_t  opts;

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/%s", port, path);

    memset(&opts, 0, sizeof(opts));
    opts.timeout_ms = CLI_CLUSTER_TIMEOUT_MS;
    opts.max = CLI_CLUSTER_BODY_MAX;

    json = NULL;
    if (proven_fetch(url, &opts, &f, NULL, 0) == PROVEN_OK
        && f.status == 200)
    {
        json = json_loads((const char *) f.body, flags, NULL);
    }

    proven_fetch_free(&f);
    return json;
}


int
cli_cluster(int argc, char **argv)
{
    int                 opt, rc;
    size_t              i;
    json_t             *out, *nats, *jsz, *routez, *routes, *r, *meta;
    json_t             *streams, *acct, *sd, *rep, *replicas, *jszs;
    size_t              j, k;
    cbor_item_t        *req;
    const char         *path;
    cli_client_t        client;
    proven_response_t   res;

    static const struct option  longopts[] = {
        { "socket", 1, NULL, CLI_OPT_SOCKET },
        { "help",   0, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    req = NULL;
    path = NULL;
    rc = CLI_EXIT_USAGE;
    memset(&client, 0, sizeof(client));
    client.conn.fd = -1;
    memset(&res, 0, sizeof(res));

    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            cli_usage_cluster(stdout);
            return CLI_EXIT_OK;
        }
        if (opt == '?' || opt == ':') {
            cli_option_error("cluster", opt, argv);
            cli_usage_cluster(stderr);
            return CLI_EXIT_USAGE;
        }
        path = optarg;
    }
    if (optind + 1 != argc || strcmp(argv[optind], "status") != 0) {
        fprintf(stderr, "proven cluster: status is the one command\n");
        cli_usage_cluster(stderr);
        return CLI_EXIT_USAGE;
    }

    if (cli_client_init(&client, "cluster status", path) != PROVEN_OK) {
        goto failed;
    }
    rc = CLI_EXIT_FAILED;
    client.timeout_ms = CLI_CLUSTER_TIMEOUT_MS;
    if (cli_client_connect(&client) != PROVEN_OK
        || (req = cli_client_request(&client, "cluster.status")) == NULL
        || cli_client_call(&client, req, &res) != PROVEN_OK)
    {
        goto failed;
    }
    if (!res.ok) {
        cli_client_report(&res);
        goto failed;
    }

    out = cli_cbor_to_json(res.result);
    nats = json_object_get(out, "nats");
    if (out == NULL || nats == NULL) {
        json_decref(out);
        fprintf(stderr, "proven cluster status: a malformed answer\n");
        goto failed;
    }

    /* the NATS server's own view, from its monitoring port */
    jsz = cli_cluster_monitor((unsigned) json_integer_value(
                                  json_object_get(nats, "monitor")), "jsz",
                              0);
    /* its accounts' limits may be 2^64 - 1, past jansson's integers */
    jszs = cli_cluster_monitor((unsigned) json_integer_value(
                                   json_object_get(nats, "monitor")),
                               "jsz?streams=true", JSON_DECODE_INT_AS_REAL);
    routez = cli_cluster_monitor((unsigned) json_integer_value(
                                     json_object_get(nats, "monitor")),
                                 "routez", 0);
    routes = json_array();
    json_array_foreach(json_object_get(routez, "routes"), i, r) {
        json_array_append_new(routes, json_pack("{s:O?,s:O?,s:O?}",
            "remote_id", json_object_get(r, "remote_id"),
            "rtt", json_object_get(r, "rtt"),
            "uptime", json_object_get(r, "uptime")));
    }
    json_object_set_new(out, "routes", routes);
    meta = json_object_get(jsz, "meta_cluster");
    json_object_set(out, "jetstream", meta != NULL ? meta : json_null());

    /* the streams this server holds: their leader and each replica's lag */
    streams = json_array();
    json_array_foreach(json_object_get(jszs, "account_details"), j, acct) {
        json_array_foreach(json_object_get(acct, "stream_detail"), k, sd) {
            json_t  *cl = json_object_get(sd, "cluster");

            replicas = json_array();
            json_array_foreach(json_object_get(cl, "replicas"), i, rep) {
                json_array_append_new(replicas, json_pack("{s:O?,s:O?,s:I}",
                    "name", json_object_get(rep, "name"),
                    "current", json_object_get(rep, "current"),
                    "lag", (json_int_t) json_number_value(
                               json_object_get(rep, "lag"))));
            }
            json_array_append_new(streams, json_pack("{s:O?,s:O?,s:I,s:o}",
                "name", json_object_get(sd, "name"),
                "leader", json_object_get(cl, "leader"),
                "messages", (json_int_t) json_number_value(json_object_get(
                                json_object_get(sd, "state"), "messages")),
                "replicas", replicas));
        }
    }
    if (meta != NULL) {
        json_object_set_new(json_object_get(out, "jetstream"), "streams",
                            streams);
    } else {
        json_decref(streams);
    }
    json_decref(jsz);
    json_decref(jszs);
    json_decref(routez);

    rc = cli_json_print(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(out);

failed:

    if (res.map != NULL) {
        proven_response_free(&res);
    }
    if (req != NULL) {
        cbor_decref(&req);
    }
    cli_client_close(&client);
    return rc;
}
