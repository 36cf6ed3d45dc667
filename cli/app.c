/*
 * `proven app`: pack, deploy, list, audit, rollback, owner, logs.
 *
 * Packing runs proven-runtime (Node.js): the manifest is what the code
 * declares, so the code must run to tell.  Every change is signed here
 * with the owner's Ed25519 key over the application's audit log head
 * (lib/proven.h), and provend records it only if it follows that head.
 * `audit` replays the log with the same rule provend applies.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/sha.h>

#include "cli.h"

#ifndef PROVEN_RUNTIME_DIR
#define PROVEN_RUNTIME_DIR  "runtime"
#endif

#define CLI_APP_JSON        (JSON_COMPACT | JSON_PRESERVE_ORDER)
#define CLI_PACKAGE_MAX     (4 * 1024 * 1024 + 64 * 1024)

extern char  **environ;

typedef struct {
    const char  *app;
    const char  *socket;
    const char  *owner_key;
    const char  *out;
    const char  *to;
} cli_app_opts_t;


void
cli_usage_app(FILE *out)
{
    fprintf(out,
        "usage: proven app pack PATH [--out FILE]\n"
        "       proven app deploy PATH --app NAME [--owner-key FILE]\n"
        "       proven app list\n"
        "       proven app audit NAME\n"
        "       proven app rollback NAME [--to PACKAGE_ID] [--owner-key FILE]\n"
        "       proven app owner add|remove NAME PUBLIC_KEY_HEX"
        " [--owner-key FILE]\n"
        "       proven app logs NAME\n"
        "\n"
        "  pack      print the package id of the modules at PATH (a .js\n"
        "            file or a folder); --out writes the package\n"
        "  deploy    pack PATH and make it the app's code; the first\n"
        "            deploy creates the app, its signer its first owner\n"
        "  audit     fetch the app's audit log, check every hash, link and\n"
        "            signature, print each entry and the state it leads to\n"
        "  rollback  go back to the package before the current one, or\n"
        "            to --to PACKAGE_ID (one deployed before)\n"
        "  logs      the app's recent console output\n"
        "\n"
        "  --owner-key FILE  Ed25519 private key (PEM) that signs changes;\n"
        "                    default $PROVEN_DATA/keys/owner.pem, created\n"
        "                    on first use\n"
        "  --socket PATH     provend's socket (default"
        " $PROVEN_DATA/provend.sock)\n"
        "  PROVEN_RUNTIME    proven-runtime's folder (default: the build's)\n"
        "  PROVEN_NODE       the Node.js to run it with (default: node)\n");
}


/* ---- proven-runtime ------------------------------------------------------ */

static const char *
cli_app_runtime(void)
{
    const char  *dir = getenv("PROVEN_RUNTIME");

    return dir != NULL && dir[0] != '\0' ? dir : PROVEN_RUNTIME_DIR;
}


/* Runs proven-runtime pack PATH --out out; the exit status. */
static int
cli_app_run_pack(const char *path, const char *out, int quiet)
{
    int          status;
    char        *bin, *argv[10];
    pid_t        pid;
    const char  *node;
    posix_spawn_file_actions_t  actions;

    node = getenv("PROVEN_NODE");
    if (node == NULL || node[0] == '\0') {
        node = "node";
    }
    if (asprintf(&bin, "%s/bin/proven-runtime.mjs", cli_app_runtime())
        == -1)
    {
        return CLI_EXIT_FAILED;
    }

    argv[0] = (char *) node;
    argv[1] = "--experimental-vm-modules";
    argv[2] = "--no-warnings";
    argv[3] = bin;
    argv[4] = "pack";
    argv[5] = (char *) path;
    argv[6] = out != NULL ? "--out" : NULL;
    argv[7] = (char *) out;
    argv[8] = NULL;

    posix_spawn_file_actions_init(&actions);
    if (quiet) {
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY,
                                         0);
    }

    if (posix_spawnp(&pid, node, &actions, NULL, argv, environ) != 0) {
        fprintf(stderr, "proven app: cannot run %s: %s\n", node,
                strerror(errno));
        posix_spawn_file_actions_destroy(&actions);
        free(bin);
        return CLI_EXIT_FAILED;
    }
    posix_spawn_file_actions_destroy(&actions);
    free(bin);

    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return CLI_EXIT_FAILED;
        }
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0
           ? CLI_EXIT_OK : CLI_EXIT_FAILED;
}


/* Packs path into a malloc()ed buffer. */
static int
cli_app_pack_bytes(const char *path, uint8_t **out, size_t *len)
{
    int          fd, rc;
    char         tmp[] = "/tmp/proven-package-XXXXXX";
    ssize_t      n;
    struct stat  sb;

    *out = NULL;
    fd = mkstemp(tmp);
    if (fd < 0) {
        fprintf(stderr, "proven app: cannot make a temporary file: %s\n",
                strerror(errno));
        return CLI_EXIT_FAILED;
    }

    rc = cli_app_run_pack(path, tmp, 1);
    if (rc == CLI_EXIT_OK) {
        rc = CLI_EXIT_FAILED;
        if (fstat(fd, &sb) == 0 && sb.st_size > 0
            && sb.st_size <= CLI_PACKAGE_MAX
            && (*out = malloc((size_t) sb.st_size)) != NULL)
        {
            n = pread(fd, *out, (size_t) sb.st_size, 0);
            if (n == sb.st_size) {
                *len = (size_t) n;
                rc = CLI_EXIT_OK;
            } else {
                free(*out);
                *out = NULL;
            }
        }
        if (rc != CLI_EXIT_OK) {
            fprintf(stderr, "proven app: cannot read the package\n");
        }
    }

    close(fd);
    unlink(tmp);
    return rc;
}


/* ---- owner keys ---------------------------------------------------------- */

/* --owner-key, or the default one, created on first use. */
static EVP_PKEY *
cli_app_owner_key(const char *path)
{
    int          fd;
    char         def[4096], dir[4096];
    FILE        *f;
    EVP_PKEY    *key;
    const char  *data;

    if (path == NULL) {
        data = getenv("PROVEN_DATA");
        if (data == NULL || data[0] == '\0') {
            data = "./var";
        }
        if ((size_t) snprintf(dir, sizeof(dir), "%s/keys", data)
            >= sizeof(dir) - 16)
        {
            fprintf(stderr, "proven app: PROVEN_DATA is too long\n");
            return NULL;
        }
        snprintf(def, sizeof(def), "%.4000s/owner.pem", dir);
        path = def;

        if (access(path, F_OK) != 0) {
            key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
            (void) mkdir(data, 0700);
            (void) mkdir(dir, 0700);
            fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            f = fd >= 0 ? fdopen(fd, "w") : NULL;
            if (key == NULL || f == NULL
                || PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                   != 1)
            {
                fprintf(stderr, "proven app: cannot create %s: %s\n", path,
                        strerror(errno));
                if (f != NULL) {
                    fclose(f);
                } else if (fd >= 0) {
                    close(fd);
                }
                EVP_PKEY_free(key);
                return NULL;
            }
            fclose(f);
            fprintf(stderr, "proven app: created the owner key %s (keep it: "
                    "only an owner's key can change the app)\n", path);
            return key;
        }
    }
    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "proven app: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);

    if (key == NULL || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
        fprintf(stderr, "proven app: %s is not an Ed25519 private key in "
                "PEM\n", path);
        EVP_PKEY_free(key);
        return NULL;
    }
    return key;
}


/* ---- talking to provend -------------------------------------------------- */

/* One call; PROVEN_OK with res->ok set, else said on stderr. */
static int
cli_app_call(cli_client_t *c, cbor_item_t *req, proven_response_t *res)
{
    int  rc;

    memset(res, 0, sizeof(*res));
    rc = cli_client_call(c, req, res);
    cbor_decref(&req);
    if (rc != PROVEN_OK) {
        return PROVEN_ERR;
    }
    if (!res->ok) {
        cli_client_report(res);
        proven_response_free(res);
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


static int
cli_app_add_bytes(cbor_item_t *map, const char *key, const uint8_t *p,
    size_t len)
{
    cbor_item_t  *v;

    v = cbor_build_bytestring(p, len);
    if (v == NULL || proven_cbor_map_put(map, key, v) != PROVEN_OK) {
        fprintf(stderr, "proven app: out of memory\n");
        return PROVEN_ERR;
    }
    return PROVEN_OK;
}


/* The log's head for e (app set): e->prev. */
static int
cli_app_head(cli_client_t *c, proven_audit_entry_t *e)
{
    int                 rc;
    cbor_item_t        *req;
    proven_response_t   res;

    req = cli_client_request(c, "app.head");
    if (req == NULL || cli_add_text(req, "app", e->app) != PROVEN_OK) {
        return PROVEN_ERR;
    }
    if (cli_app_call(c, req, &res) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    rc = proven_cbor_fixed(res.result, "head", e->prev,
                           PROVEN_AUDIT_HASH_LEN);
    if (rc != PROVEN_OK) {
        fprintf(stderr, "proven app: provend's app.head has no head\n");
    }
    proven_response_free(&res);
    return rc;
}


/*
 * Signs e on the current head with the owner key (key_path, or the
 * default one) and sends it as op, with package for a deploy.
 */
static int
cli_app_change(cli_client_t *c, const char *op, proven_audit_entry_t *e,
    const char *key_path, const uint8_t *package, size_t package_len)
{
    int                 rc;
    char                err[PROVEN_ERR_LEN];
    EVP_PKEY           *key;
    cbor_item_t        *req;
    json_t             *json;
    proven_response_t   res;

    err[0] = '\0';
    key = cli_app_owner_key(key_path);
    if (key == NULL) {
        return CLI_EXIT_FAILED;
    }
    rc = cli_app_head(c, e) == PROVEN_OK
         ? proven_audit_sign(e, key, err, sizeof(err)) : PROVEN_ERR;
    if (rc != PROVEN_OK && err[0] != '\0') {
        fprintf(stderr, "proven app: %s\n", err);
    }
    EVP_PKEY_free(key);
    if (rc != PROVEN_OK) {
        return CLI_EXIT_FAILED;
    }

    req = cli_client_request(c, op);
    if (req == NULL || cli_add_text(req, "app", e->app) != PROVEN_OK
        || cli_app_add_bytes(req, "signer", e->signer, PROVEN_AUDIT_KEY_LEN)
           != PROVEN_OK
        || cli_app_add_bytes(req, "signature", e->signature,
                             PROVEN_AUDIT_SIG_LEN) != PROVEN_OK
        || (package != NULL
            && cli_app_add_bytes(req, "package", package, package_len)
               != PROVEN_OK)
        || (package == NULL
            && (cli_add_text(req, "action",
                             proven_audit_action_name(e->action))
                != PROVEN_OK
                || (e->action == PROVEN_AUDIT_ROLLBACK
                    && cli_app_add_bytes(req, "package", e->package,
                                         PROVEN_AUDIT_HASH_LEN) != PROVEN_OK)
                || (e->action != PROVEN_AUDIT_ROLLBACK
                    && cli_app_add_bytes(req, "owner", e->owner,
                                         PROVEN_AUDIT_KEY_LEN)
                       != PROVEN_OK))))
    {
        if (req != NULL) {
            cbor_decref(&req);
        }
        return CLI_EXIT_FAILED;
    }

    if (cli_app_call(c, req, &res) != PROVEN_OK) {
        return CLI_EXIT_FAILED;
    }

    json = cli_cbor_to_json(res.result);
    if (json != NULL) {
        json_object_set_new(json, "app", json_string(e->app));
        json_object_set_new(json, "action", json_string(
                            proven_audit_action_name(e->action)));
    }
    proven_response_free(&res);
    if (json == NULL || cli_json_print(json, CLI_APP_JSON) != PROVEN_OK) {
        json_decref(json);
        return CLI_EXIT_FAILED;
    }
    json_decref(json);
    return CLI_EXIT_OK;
}


/* ---- audit -------------------------------------------------------------- */

static json_t *
cli_app_hex(const uint8_t *p, size_t len)
{
    char  hex[2 * 64 + 1];

    proven_hex_encode(p, len, hex);
    return json_string(hex);
}


/*
 * Fetches the log and replays it: *st is the state it leads to.  print:
 * one JSON line per entry.  history (may be NULL): the package current
 * after each entry, for rollback to find the one before.
 */
static int
cli_app_replay(cli_client_t *c, const char *app, proven_app_state_t *st,
    int print, uint8_t (**history)[PROVEN_AUDIT_HASH_LEN], size_t *nhistory)
{
    int                    rc;
    char                   err[PROVEN_ERR_LEN];
    size_t                 i, n, len;
    uint8_t                hash[PROVEN_AUDIT_HASH_LEN];
    uint8_t              (*h)[PROVEN_AUDIT_HASH_LEN];
    json_t                *line;
    cbor_item_t           *req, *entries, *item;
    proven_response_t      res;
    proven_audit_entry_t   e;

    memset(st, 0, sizeof(*st));
    req = cli_client_request(c, "app.audit");
    if (req == NULL || cli_add_text(req, "app", app) != PROVEN_OK) {
        return CLI_EXIT_FAILED;
    }
    if (cli_app_call(c, req, &res) != PROVEN_OK) {
        return CLI_EXIT_FAILED;
    }

    rc = CLI_EXIT_FAILED;
    entries = proven_cbor_map_get(res.result, "entries");
    n = entries != NULL && cbor_isa_array(entries)
        ? cbor_array_size(entries) : 0;
    if (n == 0) {
        fprintf(stderr, "proven app: provend sent no audit entries\n");
        goto done;
    }

    for (i = 0; i < n; i++) {
        item = cbor_array_handle(entries)[i];
        if (!cbor_isa_bytestring(item) || !cbor_bytestring_is_definite(item))
        {
            fprintf(stderr, "proven app: audit entry %zu is not bytes\n",
                    i + 1);
            goto done;
        }
        len = cbor_bytestring_length(item);
        proven_audit_hash(cbor_bytestring_handle(item), len, hash);

        if (proven_audit_decode(cbor_bytestring_handle(item), len, &e, err,
                                sizeof(err)) != PROVEN_OK
            || (strcmp(e.app, app) != 0
                && snprintf(err, sizeof(err), "it is for another "
                            "application") > 0)
            || proven_audit_apply(st, &e, hash, err, sizeof(err))
               != PROVEN_OK)
        {
            fprintf(stderr, "proven app: the audit log of %s is broken at "
                    "entry %zu: %s\n", app, i + 1, err);
            goto done;
        }

        if (history != NULL) {
            h = realloc(*history, (*nhistory + 1) * sizeof(*h));
            if (h == NULL) {
                goto done;
            }
            *history = h;
            memcpy(h[(*nhistory)++], st->current, PROVEN_AUDIT_HASH_LEN);
        }

        if (print) {
            line = json_object();
            json_object_set_new(line, "seq", json_integer((json_int_t) e.seq));
            json_object_set_new(line, "time",
                                json_integer((json_int_t) e.time));
            json_object_set_new(line, "action", json_string(
                                proven_audit_action_name(e.action)));
            if (e.action == PROVEN_AUDIT_DEPLOY
                || e.action == PROVEN_AUDIT_ROLLBACK)
            {
                json_object_set_new(line, "package",
                                    cli_app_hex(e.package, 32));
            } else {
                json_object_set_new(line, "owner", cli_app_hex(e.owner, 32));
            }
            json_object_set_new(line, "signer", cli_app_hex(e.signer, 32));
            if (e.has_session) {
                /* made over that session, the signer's Identify proof */
                json_object_set_new(line, "session",
                                    cli_app_hex(e.session, 16));
                json_object_set_new(line, "origin", json_string(e.origin));
            }
            json_object_set_new(line, "hash", cli_app_hex(hash, 32));
            cli_json_print(line, CLI_APP_JSON);
            json_decref(line);
        }
    }

    rc = CLI_EXIT_OK;

done:

    proven_response_free(&res);
    return rc;
}


static int
cli_app_audit(cli_client_t *c, const char *app)
{
    int                 rc;
    size_t              i;
    json_t             *line, *owners;
    proven_app_state_t  st;

    rc = cli_app_replay(c, app, &st, 1, NULL, NULL);
    if (rc == CLI_EXIT_OK) {
        line = json_object();
        owners = json_array();
        for (i = 0; i < st.nowners; i++) {
            json_array_append_new(owners, cli_app_hex(st.owners[i], 32));
        }
        json_object_set_new(line, "app", json_string(app));
        json_object_set_new(line, "entries",
                            json_integer((json_int_t) st.seq));
        json_object_set_new(line, "head", cli_app_hex(st.head, 32));
        json_object_set_new(line, "current", cli_app_hex(st.current, 32));
        json_object_set_new(line, "owners", owners);
        json_object_set_new(line, "verified", json_true());
        cli_json_print(line, CLI_APP_JSON);
        json_decref(line);
    }
    proven_app_state_free(&st);
    return rc;
}


/* ---- the subcommands ----------------------------------------------------- */

static int
cli_app_deploy(cli_client_t *c, const cli_app_opts_t *o, const char *path)
{
    int                   rc;
    size_t                len;
    uint8_t              *package;
    proven_audit_entry_t  e;

    if (cli_app_pack_bytes(path, &package, &len) != CLI_EXIT_OK) {
        return CLI_EXIT_FAILED;
    }

    memset(&e, 0, sizeof(e));
    snprintf(e.app, sizeof(e.app), "%s", o->app);
    e.action = PROVEN_AUDIT_DEPLOY;
    SHA256(package, len, e.package);

    rc = cli_app_change(c, "app.deploy", &e, o->owner_key, package, len);
    free(package);
    return rc;
}


static int
cli_app_rollback(cli_client_t *c, const cli_app_opts_t *o, const char *app)
{
    int                    rc;
    size_t                 n, i, len;
    uint8_t              (*history)[PROVEN_AUDIT_HASH_LEN];
    proven_app_state_t     st;
    proven_audit_entry_t   e;

    memset(&e, 0, sizeof(e));
    snprintf(e.app, sizeof(e.app), "%s", app);
    e.action = PROVEN_AUDIT_ROLLBACK;

    if (o->to != NULL) {
        if (proven_hex_decode(o->to, strlen(o->to), e.package,
                              sizeof(e.package), &len) != PROVEN_OK
            || len != PROVEN_AUDIT_HASH_LEN)
        {
            fprintf(stderr, "proven app rollback: --to wants a package id "
                    "(64 hex digits)\n");
            return CLI_EXIT_USAGE;
        }

    } else {
        history = NULL;
        n = 0;
        rc = cli_app_replay(c, app, &st, 0, &history, &n);
        if (rc != CLI_EXIT_OK) {
            proven_app_state_free(&st);
            free(history);
            return rc;
        }
        for (i = n; i-- > 0; ) {
            if (memcmp(history[i], st.current, PROVEN_AUDIT_HASH_LEN) != 0) {
                memcpy(e.package, history[i], PROVEN_AUDIT_HASH_LEN);
                break;
            }
        }
        proven_app_state_free(&st);
        free(history);
        if (i == (size_t) -1) {
            fprintf(stderr, "proven app rollback: %s has no earlier "
                    "package\n", app);
            return CLI_EXIT_FAILED;
        }
    }

    return cli_app_change(c, "app.update", &e, o->owner_key, NULL, 0);
}


static int
cli_app_owner(cli_client_t *c, const cli_app_opts_t *o, const char *what,
    const char *app, const char *hex)
{
    size_t                len;
    proven_audit_entry_t  e;

    memset(&e, 0, sizeof(e));
    snprintf(e.app, sizeof(e.app), "%s", app);
    if (strcmp(what, "add") == 0) {
        e.action = PROVEN_AUDIT_ADD_OWNER;
    } else if (strcmp(what, "remove") == 0) {
        e.action = PROVEN_AUDIT_REMOVE_OWNER;
    } else {
        fprintf(stderr, "proven app owner: add or remove?\n");
        return CLI_EXIT_USAGE;
    }

    if (proven_hex_decode(hex, strlen(hex), e.owner, sizeof(e.owner), &len)
        != PROVEN_OK || len != PROVEN_AUDIT_KEY_LEN)
    {
        fprintf(stderr, "proven app owner: the key is an Ed25519 public key "
                "in hex (64 digits)\n");
        return CLI_EXIT_USAGE;
    }

    return cli_app_change(c, "app.update", &e, o->owner_key, NULL, 0);
}


static int
cli_app_list(cli_client_t *c)
{
    size_t              i, n;
    json_t             *json;
    cbor_item_t        *req, *list;
    proven_response_t   res;

    req = cli_client_request(c, "app.list");
    if (req == NULL || cli_app_call(c, req, &res) != PROVEN_OK) {
        return CLI_EXIT_FAILED;
    }

    list = proven_cbor_map_get(res.result, "apps");
    n = list != NULL && cbor_isa_array(list) ? cbor_array_size(list) : 0;
    for (i = 0; i < n; i++) {
        json = cli_cbor_to_json(cbor_array_handle(list)[i]);
        if (json != NULL) {
            cli_json_print(json, CLI_APP_JSON);
            json_decref(json);
        }
    }
    proven_response_free(&res);
    return CLI_EXIT_OK;
}


/* A console line [time_ms, level, text] and where it came from. */
typedef struct {
    uint64_t      time;
    size_t        order;
    cbor_item_t  *line;
} cli_log_line_t;


static int
cli_log_line_cmp(const void *a, const void *b)
{
    const cli_log_line_t  *x = a, *y = b;

    if (x->time != y->time) {
        return x->time < y->time ? -1 : 1;
    }
    return x->order < y->order ? -1 : (x->order > y->order);
}


/*
 * Each of the app's workers answers app.logs on its own socket with the
 * lines it kept; they are printed merged, oldest first.
 */
static int
cli_app_logs(cli_client_t *c, const char *app)
{
    int                 rc;
    char                socket[256];
    size_t              i, j, k, n, nsockets, len, total, cap;
    uint64_t            t;
    json_t             *json;
    cbor_item_t        *req, *list, *item, *s, *name, *lines, *sockets;
    cli_client_t        worker;
    cli_log_line_t     *merged, *grown;
    int                 got[16];
    proven_response_t   res, logs[16];

    req = cli_client_request(c, "app.list");
    if (req == NULL || cli_app_call(c, req, &res) != PROVEN_OK) {
        return CLI_EXIT_FAILED;
    }

    sockets = NULL;
    list = proven_cbor_map_get(res.result, "apps");
    n = list != NULL && cbor_isa_array(list) ? cbor_array_size(list) : 0;
    for (i = 0; i < n; i++) {
        item = cbor_array_handle(list)[i];
        name = proven_cbor_map_get(item, "app");
        if (name != NULL && cbor_isa_string(name)
            && cbor_string_length(name) == strlen(app)
            && memcmp(cbor_string_handle(name), app, strlen(app)) == 0)
        {
            sockets = proven_cbor_map_get(item, "sockets");
        }
    }
    nsockets = sockets != NULL && cbor_isa_array(sockets)
               ? cbor_array_size(sockets) : 0;
    if (nsockets > 16) {
        nsockets = 16;
    }
    if (nsockets == 0) {
        proven_response_free(&res);
        fprintf(stderr, "proven app logs: %s is not deployed or has no "
                "worker running (lines live in the workers)\n", app);
        return CLI_EXIT_FAILED;
    }

    rc = CLI_EXIT_OK;
    merged = NULL;
    total = 0;
    cap = 0;
    for (i = 0; i < nsockets; i++) {
        got[i] = 0;
    }
    for (i = 0; i < nsockets; i++) {
        s = cbor_array_handle(sockets)[i];
        if (!cbor_isa_string(s)
            || (len = cbor_string_length(s)) >= sizeof(socket))
        {
            continue;
        }
        memcpy(socket, cbor_string_handle(s), len);
        socket[len] = '\0';

        if (cli_client_init(&worker, "app logs", socket) != PROVEN_OK
            || cli_client_connect(&worker) != PROVEN_OK)
        {
            rc = CLI_EXIT_FAILED;       /* a worker that just stopped */
            continue;
        }
        req = cli_client_request(&worker, "app.logs");
        if (req == NULL || cli_app_call(&worker, req, &logs[i]) != PROVEN_OK)
        {
            rc = CLI_EXIT_FAILED;
            cli_client_close(&worker);
            continue;
        }
        got[i] = 1;
        cli_client_close(&worker);

        lines = proven_cbor_map_get(logs[i].result, "lines");
        k = lines != NULL && cbor_isa_array(lines)
            ? cbor_array_size(lines) : 0;
        for (j = 0; j < k; j++) {
            item = cbor_array_handle(lines)[j];
            t = 0;
            if (cbor_isa_array(item) && cbor_array_size(item) > 0) {
                (void) proven_cbor_uint(cbor_array_handle(item)[0], &t);
            }
            if (total == cap) {
                cap = cap ? cap * 2 : 256;
                grown = realloc(merged, cap * sizeof(*merged));
                if (grown == NULL) {
                    fprintf(stderr, "proven app logs: out of memory\n");
                    rc = CLI_EXIT_FAILED;
                    goto done;
                }
                merged = grown;
            }
            merged[total].time = t;
            merged[total].order = total;
            merged[total].line = item;
            total++;
        }
    }

    if (total > 0) {
        qsort(merged, total, sizeof(*merged), cli_log_line_cmp);
    }
    for (i = 0; i < total; i++) {
        json = cli_cbor_to_json(merged[i].line);
        if (json != NULL) {
            cli_json_print(json, CLI_APP_JSON);
            json_decref(json);
        }
    }

done:

    free(merged);
    for (i = 0; i < nsockets; i++) {
        if (got[i]) {
            proven_response_free(&logs[i]);
        }
    }
    proven_response_free(&res);
    return rc;
}


int
cli_app(int argc, char **argv)
{
    int              opt, rc, nargs;
    char           **args;
    const char      *action;
    cli_client_t     client;
    cli_app_opts_t   o;

    static const struct option  longopts[] = {
        { "app",       1, NULL, CLI_OPT_APP },
        { "socket",    1, NULL, CLI_OPT_SOCKET },
        { "owner-key", 1, NULL, CLI_OPT_OWNER_KEY },
        { "out",       1, NULL, CLI_OPT_OUT },
        { "to",        1, NULL, CLI_OPT_TO },
        { "help",      0, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    memset(&o, 0, sizeof(o));
    memset(&client, 0, sizeof(client));
    client.conn.fd = -1;

    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            cli_usage_app(stdout);
            return CLI_EXIT_OK;
        case CLI_OPT_APP:
            o.app = optarg;
            break;
        case CLI_OPT_SOCKET:
            o.socket = optarg;
            break;
        case CLI_OPT_OWNER_KEY:
            o.owner_key = optarg;
            break;
        case CLI_OPT_OUT:
            o.out = optarg;
            break;
        case CLI_OPT_TO:
            o.to = optarg;
            break;
        default:
            cli_option_error("app", opt, argv);
            cli_usage_app(stderr);
            return CLI_EXIT_USAGE;
        }
    }

    if (optind == argc) {
        fprintf(stderr, "proven app: pack, deploy, list, audit, rollback, "
                "owner or logs?\n");
        cli_usage_app(stderr);
        return CLI_EXIT_USAGE;
    }

    action = argv[optind];
    args = argv + optind + 1;
    nargs = argc - optind - 1;

#define CLI_APP_ARGS(n, what)                                               \
    if (nargs != (n)) {                                                     \
        fprintf(stderr, "proven app %s: %s\n", action, what);               \
        cli_usage_app(stderr);                                              \
        return CLI_EXIT_USAGE;                                              \
    }

    if (strcmp(action, "pack") == 0) {
        CLI_APP_ARGS(1, "wants one PATH");
        return cli_app_run_pack(args[0], o.out, 0);
    }

    if (strcmp(action, "deploy") == 0) {
        CLI_APP_ARGS(1, "wants one PATH");
        if (o.app == NULL) {
            fprintf(stderr, "proven app deploy: --app NAME is required\n");
            return CLI_EXIT_USAGE;
        }
    } else if (strcmp(action, "list") == 0) {
        CLI_APP_ARGS(0, "takes no arguments");
    } else if (strcmp(action, "audit") == 0
               || strcmp(action, "rollback") == 0
               || strcmp(action, "logs") == 0)
    {
        CLI_APP_ARGS(1, "wants the application's NAME");
    } else if (strcmp(action, "owner") == 0) {
        CLI_APP_ARGS(3, "wants add|remove NAME PUBLIC_KEY_HEX");
    } else {
        fprintf(stderr, "proven app: unknown action \"%s\"\n", action);
        cli_usage_app(stderr);
        return CLI_EXIT_USAGE;
    }

    if (cli_client_init(&client, "app", o.socket) != PROVEN_OK) {
        return CLI_EXIT_USAGE;
    }
    if (strcmp(action, "deploy") == 0 || strcmp(action, "rollback") == 0) {
        client.timeout_ms = CLI_DEPLOY_TIMEOUT_MS;
    }

    if (cli_client_connect(&client) != PROVEN_OK) {
        return CLI_EXIT_FAILED;
    }

    if (strcmp(action, "deploy") == 0) {
        rc = cli_app_deploy(&client, &o, args[0]);
    } else if (strcmp(action, "list") == 0) {
        rc = cli_app_list(&client);
    } else if (strcmp(action, "audit") == 0) {
        rc = cli_app_audit(&client, args[0]);
    } else if (strcmp(action, "rollback") == 0) {
        rc = cli_app_rollback(&client, &o, args[0]);
    } else if (strcmp(action, "logs") == 0) {
        rc = cli_app_logs(&client, args[0]);
    } else {
        rc = cli_app_owner(&client, &o, args[0], args[1], args[2]);
    }

    cli_client_close(&client);
    return rc;
}
