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
#include <sys/un.h>

#include <jansson.h>

#include "proven.h"
#include "net/proven_net.h"

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
    CLI_OPT_SOCKET,
    CLI_OPT_APP,
    CLI_OPT_PERSONAL,
    CLI_OPT_NFT,
    CLI_OPT_STORE,
    CLI_OPT_TYPE,
    CLI_OPT_IF_REVISION,
    CLI_OPT_PREFIX,
    CLI_OPT_LIMIT,
    CLI_OPT_PAGE,
    CLI_OPT_DB,
    CLI_OPT_MIGRATE,
    CLI_OPT_QUERY,
    CLI_OPT_EXEC,
    CLI_OPT_HEX,
    CLI_OPT_OWNER_KEY,
    CLI_OPT_OUT,
    CLI_OPT_TO,
    CLI_OPT_AFTER
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
    /*
     * Fetched over https: the key (DER SubjectPublicKeyInfo) of the
     * certificate that connection was served, which the document must
     * bind with the TLS mark; NULL: not checked.
     */
    uint8_t              *tls_spki;
    size_t                tls_spki_len;
} cli_verify_t;

void cli_verify_init(cli_verify_t *v);
void cli_verify_free(cli_verify_t *v);

/* Applies one shared option; on a bad value prints why and fails. */
int cli_verify_option(cli_verify_t *v, int opt, const char *arg);

/* Verifies a document, prints the outcome, returns the exit status. */
int cli_verify_document(cli_verify_t *v, const uint8_t *buf, size_t len);

/* Says what getopt_long did not like (opterr is 0, optstring ":h"). */
void cli_option_error(const char *cmd, int opt, char **argv);

/* ---- provend's socket (cli/client.c) ------------------------------------ */

#define CLI_CLIENT_TIMEOUT_MS  30000
/* a deploy: provend's check (30 s), then its worker to serve (30 s) */
#define CLI_DEPLOY_TIMEOUT_MS  75000
#define CLI_JSON_DEPTH         PROVEN_CBOR_MAX_DEPTH

typedef struct {
    int           timeout_ms;       /* per request, connect included */
    uint64_t      next_id;          /* id of the request last made */
    const char   *cmd;              /* for messages */
    char          path[sizeof(((struct sockaddr_un *) NULL)->sun_path)];
    proven_conn_t  conn;            /* answers, bounded */
} cli_client_t;

/*
 * Picks the socket: socket_path (--socket) or $PROVEN_DATA/provend.sock,
 * PROVEN_DATA defaulting to ./var.  A path that cannot be one is a usage
 * error, said on stderr.
 */
int cli_client_init(cli_client_t *c, const char *cmd,
    const char *socket_path);
int cli_client_connect(cli_client_t *c);
void cli_client_close(cli_client_t *c);

/* A request map {"id": the next id, "op": op}; add arguments to it. */
cbor_item_t *cli_client_request(cli_client_t *c, const char *op);

/*
 * Sends req and reads its response.  PROVEN_ERR (said on stderr) when
 * provend is silent past the deadline or answers nonsense; an error
 * response is PROVEN_OK with res->ok = 0 (cli_client_report says it).
 * Free res with proven_response_free.
 */
int cli_client_call(cli_client_t *c, const cbor_item_t *req,
    proven_response_t *res);
void cli_client_report(const proven_response_t *res);

/*
 * Sends req and prints the result as JSON (flags as for json_dumpf):
 * CLI_EXIT_OK, or CLI_EXIT_FAILED with the reason on stderr.
 */
int cli_client_call_print(cli_client_t *c, const cbor_item_t *req,
    size_t flags);

/* JSON views of CBOR: byte strings as hex, integer map keys in decimal. */
json_t *cli_cbor_to_json(const cbor_item_t *item);
json_t *cli_cbor_hex(const cbor_item_t *item);

/* One JSON value and a newline on stdout. */
int cli_json_print(const json_t *json, size_t flags);


/* ---- scopes and arguments (cli/client.c) --------------------------------- */

/* --app, --personal, --nft as given; checked by provend. */
typedef struct {
    const char  *app;
    const char  *personal;
    const char  *nft;         /* CHAIN:CONTRACT:TOKEN */
} cli_scope_t;

#define CLI_SCOPE_LONGOPTS                                                  \
    { "app",      1, NULL, CLI_OPT_APP },                                   \
    { "personal", 1, NULL, CLI_OPT_PERSONAL },                              \
    { "nft",      1, NULL, CLI_OPT_NFT },                                   \
    { "socket",   1, NULL, CLI_OPT_SOCKET },                                \
    { "help",     0, NULL, 'h' }

/* 1 when opt was a scope option (now recorded), else 0. */
int cli_scope_option(cli_scope_t *s, int opt, const char *arg);

/* Adds "scope" to a request; returns a CLI exit status, said on stderr. */
int cli_scope_add(const cli_scope_t *s, const char *cmd, cbor_item_t *req);

/* Request arguments; PROVEN_ERR (out of memory, said) or PROVEN_OK. */
int cli_add_text(cbor_item_t *map, const char *key, const char *text);
int cli_add_uint(cbor_item_t *map, const char *key, uint64_t value);

/* A decimal number 0..max, or PROVEN_ERR said as "<what> wants ...". */
int cli_parse_uint(const char *cmd, const char *what, const char *s,
    uint64_t max, uint64_t *out);


void cli_usage(FILE *out);
void cli_usage_verify(FILE *out);
void cli_usage_attest(FILE *out);
void cli_usage_status(FILE *out);
void cli_usage_backup(FILE *out);
void cli_usage_kv(FILE *out);
void cli_usage_sql(FILE *out);
void cli_usage_app(FILE *out);

int cli_verify(int argc, char **argv);
int cli_attest(int argc, char **argv);
int cli_status(int argc, char **argv);
int cli_backup(int argc, char **argv);
int cli_kv(int argc, char **argv);
int cli_sql(int argc, char **argv);
int cli_app(int argc, char **argv);
int cli_cluster(int argc, char **argv);
void cli_usage_cluster(FILE *out);
int cli_eth(int argc, char **argv);
void cli_usage_eth(FILE *out);
int cli_image(int argc, char **argv);
void cli_usage_image(FILE *out);

int cli_tls(int argc, char **argv);
int cli_keyd(int argc, char **argv);
void cli_usage_keyd(FILE *out);
void cli_usage_tls(FILE *out);

#endif /* PROVEN_CLI_H */
