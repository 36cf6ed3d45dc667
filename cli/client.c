/*
 * The CLI side of provend's socket: one connection, requests answered in
 * order, each under a deadline so a silent provend cannot hang us; and the
 * CBOR -> JSON view every subcommand prints with.
 */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"

/* A kv value is at most 1 MiB and a query batch is bounded by provend. */
#define CLI_RESPONSE_MAX  PROVEN_FRAME_MAX


int
cli_client_init(cli_client_t *c, const char *cmd, const char *socket_path)
{
    const char  *data;

    memset(c, 0, sizeof(*c));
    c->cmd = cmd;
    c->timeout_ms = CLI_CLIENT_TIMEOUT_MS;
    proven_conn_init(&c->conn, -1, CLI_RESPONSE_MAX);

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
    char           err[PROVEN_ERR_LEN], text[sizeof(c->path) + 8];
    proven_addr_t  addr;

    snprintf(text, sizeof(text), "unix:%s", c->path);   /* checked by init */
    if (proven_addr_parse(text, &addr, err, sizeof(err)) != PROVEN_OK
        || proven_conn_connect(&c->conn, &addr, c->timeout_ms,
                               CLI_RESPONSE_MAX, err, sizeof(err))
           != PROVEN_OK)
    {
        fprintf(stderr, "proven: provend is not reachable: %s\n", err);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


void
cli_client_close(cli_client_t *c)
{
    proven_conn_close(&c->conn);
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
    char            err[PROVEN_ERR_LEN];
    size_t          framelen, bodylen;
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

    proven_conn_deadline(&c->conn, c->timeout_ms);
    if (proven_conn_send(&c->conn, frame, framelen, err, sizeof(err))
        != PROVEN_OK
        || proven_conn_recv(&c->conn, &body, &bodylen, err, sizeof(err))
           != PROVEN_OK)
    {
        fprintf(stderr, "proven: provend at %s did not answer: %s\n",
                c->path, err);
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
