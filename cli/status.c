/*
 * `proven status`: one "status" request to provend over its unix socket,
 * the answer printed as JSON (byte strings in hex).
 */

#include <getopt.h>
#include <string.h>

#include "cli.h"

#define CLI_STATUS_TIMEOUT_MS  5000


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


int
cli_status(int argc, char **argv)
{
    int                 opt, rc;
    cbor_item_t        *req;
    const char         *path;
    cli_client_t        client;

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

    if (cli_client_init(&client, "status", path) != PROVEN_OK) {
        goto failed;
    }

    rc = CLI_EXIT_FAILED;
    client.timeout_ms = CLI_STATUS_TIMEOUT_MS;

    if (cli_client_connect(&client) != PROVEN_OK) {
        goto failed;
    }

    req = cli_client_request(&client, "status");
    if (req == NULL) {
        goto failed;
    }

    rc = cli_client_call_print(&client, req,
                               JSON_INDENT(2) | JSON_PRESERVE_ORDER);

failed:

    if (req != NULL) {
        cbor_decref(&req);
    }
    cli_client_close(&client);
    return rc;
}
