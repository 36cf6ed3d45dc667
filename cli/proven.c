/* `proven`: the operator and developer command; dispatch and usage. */

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"


typedef struct {
    const char  *name;
    int        (*run)(int argc, char **argv);
    void       (*usage)(FILE *out);
} cli_command_t;


static const cli_command_t  cli_commands[] = {
    { "verify", cli_verify, cli_usage_verify },
    { "attest", cli_attest, cli_usage_attest },
    { "status", cli_status, cli_usage_status },
    { "backup", cli_backup, cli_usage_backup },
    { "kv",     cli_kv,     cli_usage_kv },
    { "sql",    cli_sql,    cli_usage_sql },
    { "app",    cli_app,    cli_usage_app },
    { "cluster", cli_cluster, cli_usage_cluster },
    { "eth",    cli_eth,    cli_usage_eth },
    { "image",  cli_image,  cli_usage_image },
    { "tls",    cli_tls,    cli_usage_tls },
    { "keyd",   cli_keyd,   cli_usage_keyd },
    { NULL, NULL, NULL }
};


static const cli_command_t *
cli_command_find(const char *name)
{
    const cli_command_t  *cmd;

    for (cmd = cli_commands; cmd->name != NULL; cmd++) {
        if (strcmp(cmd->name, name) == 0) {
            return cmd;
        }
    }

    return NULL;
}


void
cli_usage(FILE *out)
{
    fprintf(out,
        "usage: proven <command> [options]\n"
        "\n"
        "commands:\n"
        "  verify [FILE|-]   verify an attestation document (default: stdin)\n"
        "  attest URL        fetch a document for a fresh nonce, verify it\n"
        "  status            show the status of the local provend\n"
        "  backup FILE       a sealed backup of the running local node\n"
        "  kv ACTION ...     get, set, delete, list keys of a key-value"
        " store\n"
        "  sql \"SQL\" ...     run SQL on a database of an app, a user or"
        " an NFT\n"
        "  app ACTION ...    pack, deploy, list, audit, roll back"
        " applications\n"
        "  eth account ...   an account of the chain provend reads, proved\n"
        "  image ACTION ...  an enclave image's PCRs, or what it holds\n"
        "  tls self-signed   a TLS key and a self-signed certificate\n"
        "  keyd ACTION ...   the key-release service, its keys and releases\n"
        "  help [COMMAND]    show this text or a command's options\n"
        "\n"
        "exit status: 0 valid or done, 1 invalid or failed, 2 usage error\n");
}


void
cli_option_error(const char *cmd, int opt, char **argv)
{
    /* getopt_long has already moved optind past the culprit. */
    const char  *arg = argv[optind - 1];

    if (opt == ':') {
        fprintf(stderr, "proven %s: option %s needs a value\n", cmd, arg);

    } else if (optopt != 0 && strncmp(arg, "--", 2) != 0) {
        fprintf(stderr, "proven %s: unknown option -%c\n", cmd, optopt);

    } else {
        fprintf(stderr, "proven %s: unknown option %s\n", cmd, arg);
    }
}


int
main(int argc, char **argv)
{
    const cli_command_t  *cmd;

    opterr = 0;

    if (argc < 2) {
        cli_usage(stderr);
        return CLI_EXIT_USAGE;
    }

    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        cli_usage(stdout);
        return CLI_EXIT_OK;
    }

    if (strcmp(argv[1], "help") == 0) {
        if (argc == 2) {
            cli_usage(stdout);
            return CLI_EXIT_OK;
        }

        cmd = cli_command_find(argv[2]);
        if (cmd == NULL || argc > 3) {
            fprintf(stderr, "proven: no help for \"%s\"\n", argv[2]);
            cli_usage(stderr);
            return CLI_EXIT_USAGE;
        }

        cmd->usage(stdout);
        return CLI_EXIT_OK;
    }

    cmd = cli_command_find(argv[1]);
    if (cmd == NULL) {
        fprintf(stderr, "proven: unknown command \"%s\"\n", argv[1]);
        cli_usage(stderr);
        return CLI_EXIT_USAGE;
    }

    /* The subcommand parses its own options with argv[0] = its name. */
    return cmd->run(argc - 1, argv + 1);
}
