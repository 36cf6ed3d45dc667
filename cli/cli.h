/*
 * The `proven` command: one file per subcommand, this header between them.
 * Subcommands return the process exit status: 0 done (document valid),
 * 1 invalid or failed, 2 usage error.
 */

#ifndef PROVEN_CLI_H
#define PROVEN_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "proven.h"

#define CLI_EXIT_OK       0
#define CLI_EXIT_FAILED   1
#define CLI_EXIT_USAGE    2

/* Nitro documents are about 5 KiB; anything much larger is not one. */
#define CLI_DOC_MAX       (64 * 1024)

/* A verification failure as shown: the status in words, then the detail. */
#define CLI_REASON_LEN    (PROVEN_ERR_LEN + 128)

/* getopt_long values of the long options; the short ones are 'h'. */
enum {
    CLI_OPT_ROOT = 256,
    CLI_OPT_NONCE,
    CLI_OPT_PCR,
    CLI_OPT_AT,
    CLI_OPT_JSON,
    CLI_OPT_INSECURE,
    CLI_OPT_SOCKET
};

/* The long options verify and attest share, for their option tables. */
#define CLI_VERIFY_LONGOPTS                                                 \
    { "root",  1, NULL, CLI_OPT_ROOT },                                     \
    { "nonce", 1, NULL, CLI_OPT_NONCE },                                    \
    { "pcr",   1, NULL, CLI_OPT_PCR },                                      \
    { "at",    1, NULL, CLI_OPT_AT },                                       \
    { "json",  0, NULL, CLI_OPT_JSON },                                     \
    { "help",  0, NULL, 'h' }

typedef struct {
    proven_verify_opts_t  opts;       /* opts.nonce points into nonce */
    X509                 *root;       /* --root, owned */
    uint8_t               nonce[PROVEN_ATT_FIELD_MAX];
    int                   json;
} cli_verify_t;

void cli_verify_init(cli_verify_t *v);
void cli_verify_free(cli_verify_t *v);

/* Applies one shared option; on a bad value prints why and fails. */
int cli_verify_option(cli_verify_t *v, int opt, const char *arg);

/* Verifies a document, prints the outcome, returns the exit status. */
int cli_verify_document(cli_verify_t *v, const uint8_t *buf, size_t len);

/* Says what getopt_long did not like (opterr is 0, optstring ":h"). */
void cli_option_error(const char *cmd, int opt, char **argv);

void cli_usage(FILE *out);
void cli_usage_verify(FILE *out);
void cli_usage_attest(FILE *out);
void cli_usage_status(FILE *out);

int cli_verify(int argc, char **argv);
int cli_attest(int argc, char **argv);
int cli_status(int argc, char **argv);

#endif /* PROVEN_CLI_H */
