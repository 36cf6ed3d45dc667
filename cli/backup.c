/*
 * `proven backup FILE`: a sealed backup of the running local node.
 * provend writes it while its storage holds still (the "backup" op) and
 * answers where; this copies it to FILE, new, and removes provend's.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define CLI_BACKUP_TIMEOUT_MS  (10 * 60 * 1000)


void
cli_usage_backup(FILE *out)
{
    fprintf(out,
        "usage: proven backup FILE [--socket PATH]\n"
        "\n"
        "Asks the running provend for a sealed backup of its storage (it\n"
        "needs --keyd: the backup opens only with the key keyd releases to\n"
        "the same code) and writes it to FILE, which must not exist.\n"
        "Writes wait while provend writes the backup, reads go on.\n"
        "Restore with provend --restore FILE (stopped, empty DATA).\n"
        "\n"
        "  --socket PATH     provend's socket (default:\n"
        "                    $PROVEN_DATA/provend.sock)\n"
        "  -h, --help        show this text\n"
        "\n"
        "exit status: 0 done, 1 failed, 2 usage error\n");
}


/* from (provend's, removed) to out, made anew */
static int
cli_backup_copy(const char *from, const char *out)
{
    int       in, fd, rc;
    ssize_t   n;
    uint8_t   buf[64 * 1024];

    in = open(from, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (in < 0) {
        fprintf(stderr, "proven backup: %s: %s\n", from, strerror(errno));
        return PROVEN_ERR;
    }
    (void) unlink(from);        /* ours alone now, whatever happens next */
    fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "proven backup: %s: %s\n", out, strerror(errno));
        close(in);
        return PROVEN_ERR;
    }
    rc = PROVEN_OK;
    while ((n = read(in, buf, sizeof(buf))) != 0) {
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 || proven_write_all(fd, buf, (size_t) n) != PROVEN_OK) {
            rc = PROVEN_ERR;
            break;
        }
    }
    if (rc != PROVEN_OK || fsync(fd) != 0) {
        fprintf(stderr, "proven backup: %s: %s\n", out, strerror(errno));
        rc = PROVEN_ERR;
    }
    close(fd);
    close(in);
    if (rc != PROVEN_OK) {
        (void) unlink(out);
    }
    return rc;
}


int
cli_backup(int argc, char **argv)
{
    int                 opt, rc;
    char                from[4096];
    cbor_item_t        *req;
    json_t             *json;
    const char         *path, *out;
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
    memset(&res, 0, sizeof(res));
    client.conn.fd = -1;

    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            cli_usage_backup(stdout);
            rc = CLI_EXIT_OK;
            goto done;
        }
        if (opt == '?' || opt == ':') {
            cli_option_error("backup", opt, argv);
            cli_usage_backup(stderr);
            goto done;
        }
        path = optarg;                          /* --socket */
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "proven backup: %s\n", optind == argc
                ? "which FILE?" : "one FILE");
        cli_usage_backup(stderr);
        goto done;
    }
    out = argv[optind];
    if (access(out, F_OK) == 0) {
        fprintf(stderr, "proven backup: %s exists\n", out);
        rc = CLI_EXIT_FAILED;
        goto done;
    }

    if (cli_client_init(&client, "backup", path) != PROVEN_OK) {
        goto done;
    }
    rc = CLI_EXIT_FAILED;
    client.timeout_ms = CLI_BACKUP_TIMEOUT_MS;
    if (cli_client_connect(&client) != PROVEN_OK) {
        goto done;
    }
    req = cli_client_request(&client, "backup");
    if (req == NULL || cli_client_call(&client, req, &res) != PROVEN_OK) {
        goto done;
    }
    if (!res.ok) {
        cli_client_report(&res);
        goto done;
    }
    if (proven_cbor_text_into(proven_cbor_map_get(res.result, "path"), from,
                              sizeof(from)) != PROVEN_OK)
    {
        fprintf(stderr, "proven backup: provend did not say where\n");
        goto done;
    }
    if (cli_backup_copy(from, out) != PROVEN_OK) {
        goto done;
    }
    json = cli_cbor_to_json(res.result);
    if (json != NULL) {
        json_object_del(json, "path");
        json_object_set_new(json, "file", json_string(out));
        cli_json_print(json, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(json);
    }
    rc = CLI_EXIT_OK;

done:

    proven_response_free(&res);
    if (req != NULL) {
        cbor_decref(&req);
    }
    cli_client_close(&client);
    return rc;
}
