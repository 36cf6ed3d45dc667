/*
 * `proven kv set|get|del|keys|sign`: one key-value store of a scope, over
 * provend's socket.  Results are printed as JSON lines, except that `get`
 * prints the bare value (text as is, bytes in hex) so shells can use it.
 */

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CLI_KV_KEYS_BATCH  1000     /* provend's largest kv.keys limit */
#define CLI_KV_JSON        (JSON_COMPACT | JSON_PRESERVE_ORDER)

typedef enum {
    CLI_KV_SET = 0,
    CLI_KV_GET,
    CLI_KV_DEL,
    CLI_KV_KEYS,
    CLI_KV_SIGN
} cli_kv_action_t;

typedef struct {
    const char       *name;
    const char       *op;
    cli_kv_action_t   action;
    int               min_args;     /* after the action */
    int               max_args;
} cli_kv_command_t;

typedef struct {
    cli_scope_t       scope;
    const char       *socket;
    const char       *store;
    const char       *type;         /* "string", "bytes" or "key" */
    const char       *prefix;
    int               hex;          /* keys, prefix and messages in hex */
    int               json;
    int               has_if_revision;
    uint64_t          if_revision;
    int               has_after;
    uint64_t          after;        /* reads: a write's "log_seq" */
    int               has_limit;
    uint64_t          limit;
    uint64_t          page;         /* keys per kv.keys request */
} cli_kv_opts_t;


static const cli_kv_command_t  cli_kv_commands[] = {
    { "set",    "kv.set",    CLI_KV_SET,  1, 2 },
    { "get",    "kv.get",    CLI_KV_GET,  1, 1 },
    { "del",    "kv.delete", CLI_KV_DEL,  1, 1 },
    { "delete", "kv.delete", CLI_KV_DEL,  1, 1 },
    { "keys",   "kv.keys",   CLI_KV_KEYS, 0, 0 },
    { "sign",   "kv.sign",   CLI_KV_SIGN, 2, 2 },
    { NULL, NULL, 0, 0, 0 }
};


void
cli_usage_kv(FILE *out)
{
    fprintf(out,
        "usage: proven kv set  SCOPE [options] KEY VALUE\n"
        "       proven kv get  SCOPE [options] KEY\n"
        "       proven kv del  SCOPE [options] KEY\n"
        "       proven kv keys SCOPE [options]\n"
        "       proven kv set  SCOPE --type key [options] KEY [SEED]\n"
        "       proven kv sign SCOPE [options] KEY MESSAGE\n"
        "SCOPE: --app APP [--personal ID | --nft CHAIN:CONTRACT:TOKEN]\n"
        "\n"
        "Reads and writes a key-value store of provend.  `get` prints the\n"
        "value alone (string stores as text, bytes stores in hex, key\n"
        "stores the Ed25519 public key in hex); `set`, `del` print JSON;\n"
        "`keys` prints one key per line; `sign` prints the signature in\n"
        "hex (key stores only; the private key never leaves provend).\n"
        "\n"
        "  --app APP         the application (a-z 0-9 _ -)\n"
        "  --personal ID     a user's own scope within the application\n"
        "  --nft C:A:T       an NFT's scope: chain, contract, token id\n"
        "  --store NAME      the store (default: default)\n"
        "  --type TYPE       string (default), bytes (values in hex) or "
        "key\n"
        "  --if-revision N   set/del only if the key is at revision N\n"
        "                    (0: set only if the key does not exist)\n"
        "  --prefix P        keys: only keys starting with P\n"
        "  --limit N         keys: print at most N keys\n"
        "  --page N          keys: ask for N keys at a time (1..1000,\n"
        "                    default 1000)\n"
        "  --hex             KEY, --prefix, MESSAGE and printed keys in hex\n"
        "                    (else MESSAGE is signed as the bytes given)\n"
        "  --json            get: print {\"value\", \"revision\"}\n"
        "  --after N         get, keys, sign in a cluster: once this node\n"
        "                    has applied the write that answered\n"
        "                    \"log_seq\": N (on any node)\n"
        "  --socket PATH     provend's socket (default:\n"
        "                    $PROVEN_DATA/provend.sock, PROVEN_DATA\n"
        "                    defaulting to ./var)\n"
        "  -h, --help        show this text\n"
        "\n"
        "exit status: 0 done, 1 failed or not found (provend's error on\n"
        "stderr), 2 usage error\n");
}


/* Decodes hex from the command line into a new CBOR byte string. */
static cbor_item_t *
cli_kv_hex_item(const char *what, const char *hex)
{
    size_t        len, n;
    uint8_t      *buf;
    cbor_item_t  *item;

    len = strlen(hex);

    buf = malloc(len / 2 + 1);
    if (buf == NULL) {
        fprintf(stderr, "proven: out of memory\n");
        return NULL;
    }

    if (proven_hex_decode(hex, len, buf, len / 2 + 1, &n) != PROVEN_OK) {
        fprintf(stderr, "proven kv: %s \"%s\" is not hex\n", what, hex);
        free(buf);
        return NULL;
    }

    item = cbor_build_bytestring(buf, n);
    free(buf);

    if (item == NULL) {
        fprintf(stderr, "proven: out of memory\n");
    }

    return item;
}


/*
 * The command line's KEY or prefix: text, or bytes with --hex.  A message
 * to sign is always bytes: its text as is, or decoded with --hex.
 */
static int
cli_kv_add_arg(cbor_item_t *req, const char *name, const char *arg,
    int hex)
{
    cbor_item_t  *item;

    if (!hex && strcmp(name, "message") != 0) {
        return cli_add_text(req, name, arg);
    }

    item = hex ? cli_kv_hex_item(name, arg)
               : cbor_build_bytestring((const uint8_t *) arg, strlen(arg));
    if (item == NULL && !hex) {
        fprintf(stderr, "proven: out of memory\n");
    }
    if (item == NULL) {
        return PROVEN_ERR;
    }

    return proven_cbor_map_put(req, name, item);
}


static int
cli_kv_add_value(cbor_item_t *req, const cli_kv_opts_t *o, const char *arg)
{
    cbor_item_t  *item;

    if (strcmp(o->type, "string") == 0) {
        return cli_add_text(req, "value", arg);
    }

    /* bytes values and key seeds have no text form: hex, as printed. */
    item = cli_kv_hex_item(strcmp(o->type, "key") == 0 ? "seed" : "value",
                           arg);
    if (item == NULL) {
        return PROVEN_ERR;
    }

    return proven_cbor_map_put(req, "value", item);
}


/* Prints a key of kv.keys: text as is, bytes in hex unless plain ASCII. */
static int
cli_kv_print_key(const cbor_item_t *key, int hex)
{
    int       rc;
    char     *text, *out;
    size_t    len, i;
    uint8_t  *bytes;
    json_t   *j;

    if (cbor_isa_string(key)) {
        if (proven_cbor_text(key, PROVEN_FRAME_MAX, &text, &len)
            != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        rc = fwrite(text, 1, len, stdout) == len && putchar('\n') != EOF
             ? PROVEN_OK : PROVEN_ERR;
        free(text);
        return rc;
    }

    if (proven_cbor_bytes(key, PROVEN_FRAME_MAX, &bytes, &len)
        != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    for (i = 0; !hex && i < len; i++) {
        if (bytes[i] < 0x21 || bytes[i] > 0x7e) {
            hex = 1;
        }
    }

    rc = PROVEN_ERR;

    if (!hex) {
        rc = fwrite(bytes, 1, len, stdout) == len && putchar('\n') != EOF
             ? PROVEN_OK : PROVEN_ERR;

    } else {
        j = cli_cbor_hex(key);
        out = j != NULL ? (char *) json_string_value(j) : NULL;
        if (out != NULL && puts(out) != EOF) {
            rc = PROVEN_OK;
        }
        json_decref(j);
    }

    free(bytes);
    return rc;
}


/* Follows kv.keys cursors until the keys or --limit run out. */
static int
cli_kv_keys(cli_client_t *client, const cli_kv_opts_t *o)
{
    int                 rc;
    char               *cursor;
    size_t              i, n, len;
    uint64_t            printed, batch;
    cbor_item_t        *req, *keys, *next;
    proven_response_t   res;

    rc = CLI_EXIT_FAILED;
    req = NULL;
    cursor = NULL;
    printed = 0;
    memset(&res, 0, sizeof(res));

    for ( ;; ) {
        batch = o->page;
        if (o->has_limit) {
            if (printed >= o->limit) {
                break;
            }
            if (o->limit - printed < batch) {
                batch = o->limit - printed;
            }
        }

        req = cli_client_request(client, "kv.keys");
        if (req == NULL) {
            goto failed;
        }

        rc = cli_scope_add(&o->scope, "kv", req);
        if (rc != CLI_EXIT_OK) {
            goto failed;
        }
        rc = CLI_EXIT_FAILED;

        if ((o->store != NULL && cli_add_text(req, "store", o->store)
                                 != PROVEN_OK)
            || cli_add_text(req, "type", o->type) != PROVEN_OK
            || cli_add_uint(req, "limit", batch) != PROVEN_OK
            || (o->has_after
                && cli_add_uint(req, "after", o->after) != PROVEN_OK)
            || (o->prefix != NULL
                && cli_kv_add_arg(req, "prefix", o->prefix, o->hex)
                   != PROVEN_OK)
            || (cursor != NULL && cli_add_text(req, "cursor", cursor)
                                  != PROVEN_OK))
        {
            goto failed;
        }

        if (cli_client_call(client, req, &res) != PROVEN_OK) {
            goto failed;
        }

        if (!res.ok) {
            cli_client_report(&res);
            goto failed;
        }

        keys = proven_cbor_map_get(res.result, "keys");
        next = proven_cbor_map_get(res.result, "cursor");

        if (keys == NULL || !cbor_isa_array(keys)
            || (next != NULL && !proven_cbor_is_null(next)
                && !cbor_isa_string(next)))
        {
            fprintf(stderr, "proven: provend's kv.keys answer is "
                    "malformed\n");
            goto failed;
        }

        n = cbor_array_size(keys);
        if (n > batch) {
            n = batch;
        }

        for (i = 0; i < n; i++) {
            if (cli_kv_print_key(cbor_array_handle(keys)[i], o->hex)
                != PROVEN_OK)
            {
                fprintf(stderr, "proven: cannot print a key\n");
                goto failed;
            }
        }
        printed += n;

        free(cursor);
        cursor = NULL;

        if (next == NULL || proven_cbor_is_null(next)) {
            break;
        }

        if (proven_cbor_text(next, PROVEN_FRAME_MAX, &cursor, &len)
            != PROVEN_OK)
        {
            fprintf(stderr, "proven: out of memory\n");
            goto failed;
        }

        /* A cursor without keys would have us asking forever. */
        if (n == 0) {
            fprintf(stderr, "proven: provend gave a cursor with no keys\n");
            goto failed;
        }

        proven_response_free(&res);
        memset(&res, 0, sizeof(res));
        cbor_decref(&req);
    }

    rc = CLI_EXIT_OK;

failed:

    free(cursor);
    proven_response_free(&res);
    if (req != NULL) {
        cbor_decref(&req);
    }
    return rc;
}


/* Prints the answer to get, set, del or sign. */
static int
cli_kv_print(const cli_kv_command_t *cmd, const cli_kv_opts_t *o,
    const cbor_item_t *result)
{
    int            rc;
    char          *text;
    size_t         len;
    json_t        *json;
    const char    *name;
    cbor_item_t   *value;

    json = NULL;
    rc = CLI_EXIT_FAILED;

    if (cmd->action == CLI_KV_GET || cmd->action == CLI_KV_SIGN) {
        name = cmd->action == CLI_KV_SIGN ? "signature"
               : strcmp(o->type, "key") == 0 ? "public_key" : "value";

        value = proven_cbor_map_get(result, name);

        if (value == NULL || proven_cbor_is_null(value)) {
            fprintf(stderr, "proven kv: not found\n");
            return CLI_EXIT_FAILED;
        }

        if (!o->json && cbor_isa_string(value)) {
            if (proven_cbor_text(value, PROVEN_FRAME_MAX, &text, &len)
                != PROVEN_OK)
            {
                fprintf(stderr, "proven: out of memory\n");
                return CLI_EXIT_FAILED;
            }
            rc = fwrite(text, 1, len, stdout) == len && putchar('\n') != EOF
                 ? CLI_EXIT_OK : CLI_EXIT_FAILED;
            free(text);
            return rc;
        }

        if (!o->json) {
            json = cli_cbor_to_json(value);
        }
    }

    if (json == NULL) {
        json = cli_cbor_to_json(result);
    }

    if (json == NULL) {
        fprintf(stderr, "proven: provend's answer does not convert to "
                "JSON\n");
        return CLI_EXIT_FAILED;
    }

    /* A bare hex string prints without quotes, like a text value. */
    if (json_is_string(json)) {
        rc = puts(json_string_value(json)) != EOF ? CLI_EXIT_OK
                                                  : CLI_EXIT_FAILED;

    } else if (cli_json_print(json, CLI_KV_JSON) == PROVEN_OK) {
        rc = CLI_EXIT_OK;
    }

    json_decref(json);
    return rc;
}


static int
cli_kv_option(cli_kv_opts_t *o, int opt, const char *arg)
{
    switch (opt) {

    case CLI_OPT_SOCKET:
        o->socket = arg;
        break;

    case CLI_OPT_STORE:
        o->store = arg;
        break;

    case CLI_OPT_TYPE:
        if (strcmp(arg, "string") != 0 && strcmp(arg, "bytes") != 0
            && strcmp(arg, "key") != 0)
        {
            fprintf(stderr, "proven kv: --type is string, bytes or key, "
                    "not \"%s\"\n", arg);
            return PROVEN_ERR;
        }
        o->type = arg;
        break;

    case CLI_OPT_IF_REVISION:
        o->has_if_revision = 1;
        return cli_parse_uint("kv", "--if-revision", arg, UINT64_MAX,
                              &o->if_revision);

    case CLI_OPT_AFTER:
        o->has_after = 1;
        return cli_parse_uint("kv", "--after", arg, UINT64_MAX, &o->after);

    case CLI_OPT_LIMIT:
        o->has_limit = 1;
        return cli_parse_uint("kv", "--limit", arg, UINT64_MAX, &o->limit);

    case CLI_OPT_PAGE:
        if (cli_parse_uint("kv", "--page", arg, CLI_KV_KEYS_BATCH, &o->page)
            != PROVEN_OK || o->page == 0)
        {
            fprintf(stderr, "proven kv: --page is 1..%d\n",
                    CLI_KV_KEYS_BATCH);
            return PROVEN_ERR;
        }
        break;

    case CLI_OPT_PREFIX:
        o->prefix = arg;
        break;

    case CLI_OPT_HEX:
        o->hex = 1;
        break;

    case CLI_OPT_JSON:
        o->json = 1;
        break;

    default:
        if (!cli_scope_option(&o->scope, opt, arg)) {
            return PROVEN_ERR;
        }
    }

    return PROVEN_OK;
}


int
cli_kv(int argc, char **argv)
{
    int                      opt, rc, nargs;
    char                   **args;
    cbor_item_t             *req;
    cli_client_t             client;
    cli_kv_opts_t            o;
    proven_response_t        res;
    const cli_kv_command_t  *cmd;

    static const struct option  longopts[] = {
        CLI_SCOPE_LONGOPTS,
        { "store",       1, NULL, CLI_OPT_STORE },
        { "type",        1, NULL, CLI_OPT_TYPE },
        { "if-revision", 1, NULL, CLI_OPT_IF_REVISION },
        { "after",       1, NULL, CLI_OPT_AFTER },
        { "prefix",      1, NULL, CLI_OPT_PREFIX },
        { "limit",       1, NULL, CLI_OPT_LIMIT },
        { "page",        1, NULL, CLI_OPT_PAGE },
        { "hex",         0, NULL, CLI_OPT_HEX },
        { "json",        0, NULL, CLI_OPT_JSON },
        { NULL, 0, NULL, 0 }
    };

    req = NULL;
    rc = CLI_EXIT_USAGE;
    memset(&client, 0, sizeof(client));
    client.conn.fd = -1;
    memset(&o, 0, sizeof(o));
    memset(&res, 0, sizeof(res));
    o.type = "string";
    o.page = CLI_KV_KEYS_BATCH;

    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            cli_usage_kv(stdout);
            rc = CLI_EXIT_OK;
            goto failed;
        }

        if (opt == '?' || opt == ':') {
            cli_option_error("kv", opt, argv);
            cli_usage_kv(stderr);
            goto failed;
        }

        if (cli_kv_option(&o, opt, optarg) != PROVEN_OK) {
            goto failed;
        }
    }

    if (optind == argc) {
        fprintf(stderr, "proven kv: set, get, del, keys or sign?\n");
        cli_usage_kv(stderr);
        goto failed;
    }

    for (cmd = cli_kv_commands; cmd->name != NULL; cmd++) {
        if (strcmp(cmd->name, argv[optind]) == 0) {
            break;
        }
    }

    if (cmd->name == NULL) {
        fprintf(stderr, "proven kv: unknown action \"%s\"\n", argv[optind]);
        cli_usage_kv(stderr);
        goto failed;
    }

    args = argv + optind + 1;
    nargs = argc - optind - 1;

    /* A key store makes its own key when set is given no seed. */
    if (nargs > cmd->max_args
        || nargs < cmd->min_args
        || (cmd->action == CLI_KV_SET && nargs == 1
            && strcmp(o.type, "key") != 0))
    {
        fprintf(stderr, "proven kv %s: wrong number of arguments\n",
                cmd->name);
        cli_usage_kv(stderr);
        goto failed;
    }

    if (o.has_after
        && (cmd->action == CLI_KV_SET || cmd->action == CLI_KV_DEL))
    {
        fprintf(stderr, "proven kv %s: --after is for get, keys and sign\n",
                cmd->name);
        goto failed;
    }

    if (cli_client_init(&client, "kv", o.socket) != PROVEN_OK) {
        goto failed;
    }

    if (cmd->action == CLI_KV_KEYS) {
        /* Scope mistakes are usage errors: see them before connecting. */
        req = cli_client_request(&client, "kv.keys");
        rc = req != NULL ? cli_scope_add(&o.scope, "kv", req)
                         : CLI_EXIT_FAILED;
        if (rc != CLI_EXIT_OK) {
            goto failed;
        }
        cbor_decref(&req);

        rc = CLI_EXIT_FAILED;
        if (cli_client_connect(&client) != PROVEN_OK) {
            goto failed;
        }

        rc = cli_kv_keys(&client, &o);
        goto failed;
    }

    req = cli_client_request(&client, cmd->op);
    if (req == NULL) {
        rc = CLI_EXIT_FAILED;
        goto failed;
    }

    rc = cli_scope_add(&o.scope, "kv", req);
    if (rc != CLI_EXIT_OK) {
        goto failed;
    }

    rc = CLI_EXIT_USAGE;

    if ((o.store != NULL && cli_add_text(req, "store", o.store) != PROVEN_OK)
        || (cmd->action != CLI_KV_SIGN
            && cli_add_text(req, "type", o.type) != PROVEN_OK)
        || cli_kv_add_arg(req, "key", args[0], o.hex) != PROVEN_OK
        || (cmd->action == CLI_KV_SET && nargs == 2
            && cli_kv_add_value(req, &o, args[1]) != PROVEN_OK)
        || (cmd->action == CLI_KV_SIGN
            && cli_kv_add_arg(req, "message", args[1], o.hex) != PROVEN_OK)
        || (o.has_if_revision
            && (cmd->action == CLI_KV_SET || cmd->action == CLI_KV_DEL)
            && cli_add_uint(req, "if_revision", o.if_revision)
               != PROVEN_OK)
        || (o.has_after
            && cli_add_uint(req, "after", o.after) != PROVEN_OK))
    {
        goto failed;
    }

    rc = CLI_EXIT_FAILED;

    if (cli_client_connect(&client) != PROVEN_OK
        || cli_client_call(&client, req, &res) != PROVEN_OK)
    {
        goto failed;
    }

    if (!res.ok) {
        cli_client_report(&res);
        goto failed;
    }

    rc = cli_kv_print(cmd, &o, res.result);

failed:

    proven_response_free(&res);
    if (req != NULL) {
        cbor_decref(&req);
    }
    cli_client_close(&client);
    return rc;
}
