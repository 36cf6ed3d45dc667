/*
 * proven eth account ADDRESS [SLOT...]: an account of the chain provend
 * reads (--eth-rpc), and storage slots of it, each value proved against
 * provend's checkpoint block (daemon/chains/chains.h), as JSON.
 */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"


#define CLI_ETH_SLOTS_MAX  16


void
cli_usage_eth(FILE *out)
{
    fprintf(out,
        "usage: proven eth account ADDRESS [SLOT...] [--socket PATH]\n"
        "\n"
        "Prints an account of the chain provend reads (--eth-rpc) and up to\n"
        "16 of its storage slots, as JSON, each value proved by provend\n"
        "against its checkpoint block, not taken from the endpoint.\n"
        "ADDRESS: 0x and 40 hex digits; SLOT: a number (decimal, or 0x and\n"
        "hex), 32 bytes at most.\n"
        "\n"
        "  --socket PATH     provend's socket (default:\n"
        "                    $PROVEN_DATA/provend.sock)\n"
        "\n"
        "exit status: 0 done, 1 provend unreachable or the read not proved,\n"
        "2 usage error\n");
}


/* A slot as 0x and 64 hex digits: decimal (64 bits) or 0x hex. */
static int
cli_eth_slot(const char *text, char out[67])
{
    char                 *end;
    size_t                n, i;
    unsigned long long    v;

    if (strncmp(text, "0x", 2) == 0) {
        n = strlen(text + 2);
        if (n == 0 || n > 64
            || strspn(text + 2, "0123456789abcdefABCDEF") != n)
        {
            return PROVEN_ERR;
        }
        memcpy(out, "0x", 2);
        memset(out + 2, '0', 64 - n);
        for (i = 0; i < n; i++) {
            out[2 + 64 - n + i] = (char) (text[2 + i] | 0x20);   /* lower */
        }
        out[66] = '\0';
        return PROVEN_OK;
    }
    if (text[0] < '0' || text[0] > '9') {
        return PROVEN_ERR;
    }
    errno = 0;
    v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0') {
        return PROVEN_ERR;
    }
    snprintf(out, 67, "0x%064llx", v);
    return PROVEN_OK;
}


int
cli_eth(int argc, char **argv)
{
    int                 opt, rc, i;
    char                slot[67];
    const char         *path, *address;
    cbor_item_t        *req, *slots;
    cli_client_t        client;

    static const struct option  longopts[] = {
        { "socket", 1, NULL, CLI_OPT_SOCKET },
        { "help",   0, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    path = NULL;
    memset(&client, 0, sizeof(client));
    client.conn.fd = -1;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            cli_usage_eth(stdout);
            return CLI_EXIT_OK;
        }
        if (opt == '?' || opt == ':') {
            cli_option_error("eth", opt, argv);
            cli_usage_eth(stderr);
            return CLI_EXIT_USAGE;
        }
        path = optarg;
    }
    if (argc - optind < 2 || strcmp(argv[optind], "account") != 0) {
        fprintf(stderr, "proven eth: account ADDRESS [SLOT...]\n");
        cli_usage_eth(stderr);
        return CLI_EXIT_USAGE;
    }
    address = argv[optind + 1];
    if (strncmp(address, "0x", 2) != 0 || strlen(address) != 42
        || strspn(address + 2, "0123456789abcdefABCDEF") != 40)
    {
        fprintf(stderr, "proven eth account: %s is not an address (0x and "
                "40 hex digits)\n", address);
        return CLI_EXIT_USAGE;
    }
    if (argc - optind - 2 > CLI_ETH_SLOTS_MAX) {
        fprintf(stderr, "proven eth account: %d slots at most\n",
                CLI_ETH_SLOTS_MAX);
        return CLI_EXIT_USAGE;
    }

    slots = cbor_new_definite_array((size_t) (argc - optind - 2));
    if (slots == NULL) {
        return CLI_EXIT_FAILED;
    }
    for (i = optind + 2; i < argc; i++) {
        if (cli_eth_slot(argv[i], slot) != PROVEN_OK) {
            fprintf(stderr, "proven eth account: slot %s is not a number "
                    "(decimal, or 0x and 64 hex digits at most)\n", argv[i]);
            cbor_decref(&slots);
            return CLI_EXIT_USAGE;
        }
        req = cbor_build_string(slot);
        if (req == NULL || !cbor_array_push(slots, req)) {
            if (req != NULL) {
                cbor_decref(&req);
            }
            cbor_decref(&slots);
            return CLI_EXIT_FAILED;
        }
        cbor_decref(&req);              /* the array holds it */
    }

    rc = CLI_EXIT_USAGE;
    req = NULL;
    if (cli_client_init(&client, "eth account", path) != PROVEN_OK) {
        goto done;
    }
    rc = CLI_EXIT_FAILED;
    if (cli_client_connect(&client) != PROVEN_OK
        || (req = cli_client_request(&client, "eth.account")) == NULL
        || proven_cbor_map_put(req, "address", cbor_build_string(address))
           != PROVEN_OK)
    {
        goto done;
    }
    if (proven_cbor_map_put(req, "slots", slots) != PROVEN_OK) {
        slots = NULL;
        goto done;
    }
    slots = NULL;
    rc = cli_client_call_print(&client, req, JSON_INDENT(2));

done:

    if (slots != NULL) {
        cbor_decref(&slots);
    }
    if (req != NULL) {
        cbor_decref(&req);
    }
    cli_client_close(&client);
    return rc;
}
