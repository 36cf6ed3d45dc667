/*
 * `proven sql`: migrations, then one statement with bound parameters, on
 * a scope's database over provend's socket.  Queries print one JSON object
 * per row, following provend's cursors; other statements print
 * {"changes", "last_insert_rowid"}.
 */

#include <ctype.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

#define CLI_SQL_MIGRATIONS_MAX  1024
#define CLI_SQL_FILE_MAX        (1024 * 1024)
#define CLI_SQL_PARAMS_MAX      999         /* SQLite's classic bound */
#define CLI_SQL_PAGE            500         /* provend's default */
#define CLI_SQL_PAGE_MAX        5000        /* and largest */
#define CLI_SQL_JSON            (JSON_COMPACT | JSON_PRESERVE_ORDER)

typedef enum {
    CLI_SQL_AUTO = 0,
    CLI_SQL_QUERY,
    CLI_SQL_EXECUTE
} cli_sql_mode_t;

typedef struct {
    cli_scope_t      scope;
    const char      *socket;
    const char      *db;
    cli_sql_mode_t   mode;
    int              has_limit;
    uint64_t         limit;
    int              has_after;
    uint64_t         after;         /* queries: a write's "log_seq" */
    uint64_t         page;          /* rows per sql.query request */
    size_t           nmigrations;
    const char      *migrations[CLI_SQL_MIGRATIONS_MAX];
} cli_sql_opts_t;


void
cli_usage_sql(FILE *out)
{
    fprintf(out,
        "usage: proven sql --app APP [--personal ID | --nft C:A:T]"
        " [options]\n"
        "                  [--migrate FILE]... [\"SQL\" [PARAM...]]\n"
        "\n"
        "Runs SQL on a database of provend.  Migrations (each file one\n"
        "migration, applied in the order given, each only once) run first\n"
        "and print {\"applied\", \"version\"}.  A query (SELECT, WITH,\n"
        "VALUES, EXPLAIN, PRAGMA, or any statement with --query) prints one\n"
        "JSON object per row, bytes in hex; other statements print\n"
        "{\"changes\", \"last_insert_rowid\"}.\n"
        "\n"
        "PARAM binds to the next ?: JSON (a number, \"text\", null, true,\n"
        "false), x'HEX' for bytes, anything else as text.  Put -- before\n"
        "the SQL when a PARAM starts with - (a negative number).\n"
        "\n"
        "  --app, --personal, --nft   the scope, as for `proven kv`\n"
        "  --db NAME         the database (default: default)\n"
        "  --migrate FILE    a migration; repeat for more\n"
        "  --query           the statement returns rows\n"
        "  --exec            the statement returns no rows\n"
        "  --limit N         print at most N rows\n"
        "  --page N          ask for N rows at a time (1..5000, default"
        " 500)\n"
        "  --after N         a query in a cluster: once this node has\n"
        "                    applied the write that answered \"log_seq\":\n"
        "                    N (on any node)\n"
        "  --socket PATH     provend's socket (default:\n"
        "                    $PROVEN_DATA/provend.sock, PROVEN_DATA\n"
        "                    defaulting to ./var)\n"
        "  -h, --help        show this text\n"
        "\n"
        "exit status: 0 done, 1 failed (provend's error on stderr), 2 usage"
        " error\n");
}


/* Statements that answer with rows, by their first word. */
static int
cli_sql_is_query(const char *sql)
{
    size_t                    n;
    const char               *p, *const *w;
    static const char *const  words[] = {
        "select", "with", "values", "explain", "pragma", NULL
    };

    p = sql;

    for ( ;; ) {
        while (isspace((unsigned char) *p)) {
            p++;
        }

        if (p[0] == '-' && p[1] == '-') {
            p += strcspn(p, "\n");
            continue;
        }

        if (p[0] == '/' && p[1] == '*') {
            p = strstr(p + 2, "*/");
            if (p == NULL) {
                return 0;
            }
            p += 2;
            continue;
        }

        break;
    }

    for (n = 0; isalpha((unsigned char) p[n]); n++) {
        /* the first word */
    }

    for (w = words; *w != NULL; w++) {
        if (strlen(*w) == n && strncasecmp(p, *w, n) == 0) {
            return 1;
        }
    }

    return 0;
}


/* One PARAM from the command line as a CBOR value (see the usage). */
static cbor_item_t *
cli_sql_param(const char *arg)
{
    size_t         len, n;
    double         d;
    json_t        *j;
    uint8_t       *buf;
    json_int_t     i;
    cbor_item_t   *item;
    json_error_t   jerr;

    len = strlen(arg);

    if (len >= 3 && (arg[0] == 'x' || arg[0] == 'X') && arg[1] == '\''
        && arg[len - 1] == '\'')
    {
        buf = malloc(len / 2 + 1);
        if (buf == NULL) {
            return NULL;
        }
        if (proven_hex_decode(arg + 2, len - 3, buf, len / 2 + 1, &n)
            != PROVEN_OK)
        {
            free(buf);
            fprintf(stderr, "proven sql: parameter %s is not hex\n", arg);
            return NULL;
        }
        item = cbor_build_bytestring(buf, n);
        free(buf);
        return item;
    }

    j = json_loads(arg, JSON_DECODE_ANY, &jerr);

    switch (j != NULL ? json_typeof(j) : JSON_OBJECT) {

    case JSON_INTEGER:
        i = json_integer_value(j);
        item = i >= 0 ? cbor_build_uint64((uint64_t) i)
                      : cbor_build_negint64((uint64_t) (-(i + 1)));
        break;

    case JSON_REAL:
        d = json_real_value(j);
        item = cbor_build_float8(d);
        break;

    case JSON_STRING:
        item = cbor_build_stringn(json_string_value(j), json_string_length(j));
        break;

    case JSON_NULL:
        item = cbor_new_null();
        break;

    case JSON_TRUE:
    case JSON_FALSE:
        /* SQLite has no booleans: they are the integers 1 and 0. */
        item = cbor_build_uint8(json_is_true(j) ? 1 : 0);
        break;

    default:
        item = cbor_build_stringn(arg, len);
        break;
    }

    json_decref(j);
    return item;
}


static int
cli_sql_add_params(cbor_item_t *req, char **params, int nparams)
{
    int           i;
    cbor_item_t  *array, *item;

    array = cbor_new_definite_array((size_t) nparams);
    if (array == NULL) {
        goto failed;
    }

    for (i = 0; i < nparams; i++) {
        item = cli_sql_param(params[i]);
        if (item == NULL) {
            goto failed;
        }

        if (!cbor_array_push(array, item)) {
            cbor_decref(&item);
            goto failed;
        }
        cbor_decref(&item);     /* the array holds it */
    }

    return proven_cbor_map_put(req, "params", array);

failed:

    if (array != NULL) {
        cbor_decref(&array);
    }
    return PROVEN_ERR;
}


/* A request for op carrying every argument in args (shared, not copied). */
static cbor_item_t *
cli_sql_request(cli_client_t *client, const char *op,
    const cbor_item_t *args)
{
    size_t        i;
    cbor_item_t  *req;

    req = cli_client_request(client, op);
    if (req == NULL) {
        return NULL;
    }

    for (i = 0; i < cbor_map_size(args); i++) {
        if (!cbor_map_add(req, cbor_map_handle(args)[i])) {
            fprintf(stderr, "proven: out of memory\n");
            cbor_decref(&req);
            return NULL;
        }
    }

    return req;
}


/* Reads a migration file whole, bounded, as one NUL terminated text. */
static char *
cli_sql_read_file(const char *path)
{
    char    *buf;
    FILE    *f;
    size_t   len;

    buf = NULL;

    f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "proven sql: cannot open %s: %m\n", path);
        return NULL;
    }

    buf = malloc(CLI_SQL_FILE_MAX + 1);
    if (buf == NULL) {
        fprintf(stderr, "proven: out of memory\n");
        goto failed;
    }

    len = fread(buf, 1, CLI_SQL_FILE_MAX + 1, f);

    if (ferror(f)) {
        fprintf(stderr, "proven sql: cannot read %s\n", path);
        goto failed;
    }

    if (len > CLI_SQL_FILE_MAX) {
        fprintf(stderr, "proven sql: %s is larger than %d bytes\n", path,
                CLI_SQL_FILE_MAX);
        goto failed;
    }

    if (memchr(buf, '\0', len) != NULL) {
        fprintf(stderr, "proven sql: %s is not text\n", path);
        goto failed;
    }

    buf[len] = '\0';
    fclose(f);
    return buf;

failed:

    free(buf);
    fclose(f);
    return NULL;
}


static int
cli_sql_migrate(cli_client_t *client, const cli_sql_opts_t *o,
    const cbor_item_t *args)
{
    int                 rc;
    char               *text;
    size_t              i;
    cbor_item_t        *array, *item, *req;

    rc = CLI_EXIT_FAILED;

    req = cli_sql_request(client, "sql.migrate", args);
    if (req == NULL) {
        return CLI_EXIT_FAILED;
    }

    array = cbor_new_definite_array(o->nmigrations);
    if (array == NULL) {
        fprintf(stderr, "proven: out of memory\n");
        goto failed;
    }

    for (i = 0; i < o->nmigrations; i++) {
        text = cli_sql_read_file(o->migrations[i]);
        if (text == NULL) {
            goto failed;
        }

        item = cbor_build_string(text);
        free(text);

        if (item == NULL || !cbor_array_push(array, item)) {
            fprintf(stderr, "proven: out of memory\n");
            if (item != NULL) {
                cbor_decref(&item);
            }
            goto failed;
        }
        cbor_decref(&item);
    }

    rc = proven_cbor_map_put(req, "migrations", array);
    array = NULL;
    if (rc != PROVEN_OK) {
        rc = CLI_EXIT_FAILED;
        fprintf(stderr, "proven: out of memory\n");
        goto failed;
    }
    rc = cli_client_call_print(client, req, CLI_SQL_JSON);

failed:

    if (array != NULL) {
        cbor_decref(&array);
    }
    cbor_decref(&req);
    return rc;
}


/* Prints the rows of one sql.query answer; *n = how many it held. */
static int
cli_sql_print_rows(const cbor_item_t *result, uint64_t max, size_t *n)
{
    size_t        i, k, ncols;
    json_t       *obj, *value;
    cbor_item_t  *columns, *rows, *row, *col;
    const char   *name;
    json_t       *names;

    names = NULL;
    obj = NULL;
    *n = 0;

    columns = proven_cbor_map_get(result, "columns");
    rows = proven_cbor_map_get(result, "rows");

    if (columns == NULL || rows == NULL || !cbor_isa_array(columns)
        || !cbor_isa_array(rows))
    {
        goto malformed;
    }

    names = cli_cbor_to_json(columns);
    if (names == NULL) {
        goto malformed;
    }

    ncols = json_array_size(names);
    for (k = 0; k < ncols; k++) {
        if (!json_is_string(json_array_get(names, k))) {
            goto malformed;
        }
    }

    *n = cbor_array_size(rows);

    for (i = 0; i < *n && i < max; i++) {
        row = cbor_array_handle(rows)[i];

        if (!cbor_isa_array(row) || cbor_array_size(row) != ncols) {
            goto malformed;
        }

        obj = json_object();
        if (obj == NULL) {
            goto nomem;
        }

        for (k = 0; k < ncols; k++) {
            col = cbor_array_handle(row)[k];
            name = json_string_value(json_array_get(names, k));

            value = cli_cbor_to_json(col);
            if (value == NULL || json_object_set_new(obj, name, value) != 0) {
                goto nomem;
            }
        }

        if (cli_json_print(obj, CLI_SQL_JSON) != PROVEN_OK) {
            goto failed;
        }

        json_decref(obj);
        obj = NULL;
    }

    json_decref(names);
    return PROVEN_OK;

malformed:

    fprintf(stderr, "proven: provend's sql.query answer is malformed\n");
    goto failed;

nomem:

    fprintf(stderr, "proven: out of memory\n");

failed:

    json_decref(obj);
    json_decref(names);
    return PROVEN_ERR;
}


/* Runs a query, asking again with each cursor until the rows run out. */
static int
cli_sql_query(cli_client_t *client, const cbor_item_t *args,
    const cli_sql_opts_t *o)
{
    int                 rc;
    char               *cursor;
    size_t              n, len;
    uint64_t            printed, batch;
    cbor_item_t        *next, *req;
    proven_response_t   res;

    rc = CLI_EXIT_FAILED;
    req = NULL;
    cursor = NULL;
    printed = 0;
    memset(&res, 0, sizeof(res));

    for ( ;; ) {
        batch = o->has_limit && o->limit - printed < o->page
                ? o->limit - printed : o->page;

        if (batch == 0) {
            break;
        }

        req = cli_sql_request(client, "sql.query", args);
        if (req == NULL
            || cli_add_uint(req, "limit", batch) != PROVEN_OK
            || (o->has_after
                && cli_add_uint(req, "after", o->after) != PROVEN_OK)
            || (cursor != NULL
                && cli_add_text(req, "cursor", cursor) != PROVEN_OK))
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

        if (cli_sql_print_rows(res.result, batch, &n) != PROVEN_OK) {
            goto failed;
        }
        printed += n < batch ? n : batch;

        free(cursor);
        cursor = NULL;

        next = proven_cbor_map_get(res.result, "cursor");
        if (next == NULL || proven_cbor_is_null(next)) {
            break;
        }

        if (!cbor_isa_string(next)
            || proven_cbor_text(next, PROVEN_FRAME_MAX, &cursor, &len)
               != PROVEN_OK)
        {
            fprintf(stderr, "proven: provend's cursor is malformed\n");
            goto failed;
        }

        /* A cursor without rows would have us asking forever. */
        if (n == 0) {
            fprintf(stderr, "proven: provend gave a cursor with no rows\n");
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


int
cli_sql(int argc, char **argv)
{
    int                 opt, rc;
    cbor_item_t        *req, *args;
    const char         *sql;
    cli_client_t        client;
    cli_sql_opts_t     *o;

    static const struct option  longopts[] = {
        CLI_SCOPE_LONGOPTS,
        { "db",      1, NULL, CLI_OPT_DB },
        { "migrate", 1, NULL, CLI_OPT_MIGRATE },
        { "query",   0, NULL, CLI_OPT_QUERY },
        { "exec",    0, NULL, CLI_OPT_EXEC },
        { "limit",   1, NULL, CLI_OPT_LIMIT },
        { "page",    1, NULL, CLI_OPT_PAGE },
        { "after",   1, NULL, CLI_OPT_AFTER },
        { NULL, 0, NULL, 0 }
    };

    req = NULL;
    args = NULL;
    rc = CLI_EXIT_USAGE;
    memset(&client, 0, sizeof(client));
    client.conn.fd = -1;

    o = calloc(1, sizeof(*o));
    if (o == NULL) {
        fprintf(stderr, "proven: out of memory\n");
        return CLI_EXIT_FAILED;
    }
    o->page = CLI_SQL_PAGE;

    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            cli_usage_sql(stdout);
            rc = CLI_EXIT_OK;
            goto failed;
        }

        if (opt == '?' || opt == ':') {
            cli_option_error("sql", opt, argv);
            cli_usage_sql(stderr);
            goto failed;
        }

        switch (opt) {

        case CLI_OPT_SOCKET:
            o->socket = optarg;
            break;

        case CLI_OPT_DB:
            o->db = optarg;
            break;

        case CLI_OPT_MIGRATE:
            if (o->nmigrations == CLI_SQL_MIGRATIONS_MAX) {
                fprintf(stderr, "proven sql: more than %d migrations\n",
                        CLI_SQL_MIGRATIONS_MAX);
                goto failed;
            }
            o->migrations[o->nmigrations++] = optarg;
            break;

        case CLI_OPT_QUERY:
            o->mode = CLI_SQL_QUERY;
            break;

        case CLI_OPT_EXEC:
            o->mode = CLI_SQL_EXECUTE;
            break;

        case CLI_OPT_PAGE:
            if (cli_parse_uint("sql", "--page", optarg, CLI_SQL_PAGE_MAX,
                               &o->page) != PROVEN_OK || o->page == 0)
            {
                fprintf(stderr, "proven sql: --page is 1..%d\n",
                        CLI_SQL_PAGE_MAX);
                goto failed;
            }
            break;

        case CLI_OPT_LIMIT:
            o->has_limit = 1;
            if (cli_parse_uint("sql", "--limit", optarg, UINT64_MAX,
                               &o->limit) != PROVEN_OK)
            {
                goto failed;
            }
            break;

        case CLI_OPT_AFTER:
            o->has_after = 1;
            if (cli_parse_uint("sql", "--after", optarg, UINT64_MAX,
                               &o->after) != PROVEN_OK)
            {
                goto failed;
            }
            break;

        default:
            cli_scope_option(&o->scope, opt, optarg);
        }
    }

    if (optind == argc && o->nmigrations == 0) {
        fprintf(stderr, "proven sql: no SQL and no --migrate\n");
        cli_usage_sql(stderr);
        goto failed;
    }

    if (argc - optind - 1 > CLI_SQL_PARAMS_MAX) {
        fprintf(stderr, "proven sql: more than %d parameters\n",
                CLI_SQL_PARAMS_MAX);
        goto failed;
    }

    if (cli_client_init(&client, "sql", o->socket) != PROVEN_OK) {
        goto failed;
    }

    sql = optind < argc ? argv[optind] : NULL;
    if (o->mode == CLI_SQL_AUTO && sql != NULL) {
        o->mode = cli_sql_is_query(sql) ? CLI_SQL_QUERY : CLI_SQL_EXECUTE;
    }
    if (o->has_after && o->mode != CLI_SQL_QUERY) {
        fprintf(stderr, "proven sql: --after is for queries\n");
        rc = CLI_EXIT_USAGE;
        goto failed;
    }

    /* Every request shares these; mistakes in them are usage errors. */
    args = cbor_new_indefinite_map();
    if (args == NULL) {
        fprintf(stderr, "proven: out of memory\n");
        rc = CLI_EXIT_FAILED;
        goto failed;
    }

    rc = cli_scope_add(&o->scope, "sql", args);
    if (rc != CLI_EXIT_OK) {
        goto failed;
    }

    rc = CLI_EXIT_FAILED;
    if ((o->db != NULL && cli_add_text(args, "db", o->db) != PROVEN_OK)
        || (sql != NULL && cli_add_text(args, "sql", sql) != PROVEN_OK))
    {
        goto failed;
    }

    if (argc - optind > 1
        && cli_sql_add_params(args, argv + optind + 1, argc - optind - 1)
           != PROVEN_OK)
    {
        fprintf(stderr, "proven sql: cannot use the parameters\n");
        rc = CLI_EXIT_USAGE;
        goto failed;
    }

    if (cli_client_connect(&client) != PROVEN_OK) {
        goto failed;
    }

    if (o->nmigrations > 0) {
        rc = cli_sql_migrate(&client, o, args);
        if (rc != CLI_EXIT_OK || sql == NULL) {
            goto failed;
        }
        rc = CLI_EXIT_FAILED;
    }

    if (o->mode == CLI_SQL_QUERY) {
        rc = cli_sql_query(&client, args, o);
        goto failed;
    }

    req = cli_sql_request(&client, "sql.execute", args);
    if (req == NULL) {
        goto failed;
    }

    rc = cli_client_call_print(&client, req, CLI_SQL_JSON);

failed:

    if (req != NULL) {
        cbor_decref(&req);
    }
    if (args != NULL) {
        cbor_decref(&args);
    }
    cli_client_close(&client);
    free(o);
    return rc;
}
