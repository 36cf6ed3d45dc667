/*
 * `proven verify`: checks an attestation document from a file or stdin.
 * The option handling and the report are shared with `proven attest`.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/pem.h>

#include "cli.h"


void
cli_usage_verify(FILE *out)
{
    fprintf(out,
        "usage: proven verify [FILE|-] [options]\n"
        "\n"
        "Verifies an AWS Nitro style attestation document (COSE_Sign1,\n"
        "ES384) read from FILE or, without FILE or with -, from stdin.\n"
        "\n"
        "  --root PEM        trust this root certificate instead of the\n"
        "                    built-in AWS Nitro Enclaves root\n"
        "  --nonce HEX       require this nonce\n"
        "  --pcr N=HEX       require PCR N to equal HEX (repeatable)\n"
        "  --at MS|doc|now   check certificate validity at MS milliseconds\n"
        "                    since the epoch, at the document's own\n"
        "                    timestamp, or now (default); doc proves no\n"
        "                    freshness (a leaked leaf key can sign\n"
        "                    back-dated documents): check the nonce\n"
        "  --json            print {\"valid\", \"status\", \"reason\",\n"
        "                    \"document\"} as JSON on stdout\n"
        "  -h, --help        show this text\n"
        "\n"
        "exit status: 0 valid, 1 invalid (reason on stderr), 2 usage error\n");
}


void
cli_verify_init(cli_verify_t *v)
{
    memset(v, 0, sizeof(*v));
    v->opts.at = PROVEN_AT_NOW;
}


void
cli_verify_free(cli_verify_t *v)
{
    X509_free(v->root);
    v->root = NULL;
    v->opts.root = NULL;
    OPENSSL_free(v->tls_spki);
    v->tls_spki = NULL;
}


static int
cli_load_root(cli_verify_t *v, const char *path)
{
    FILE  *f;
    X509  *cert;

    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "proven: cannot read root %s: %s\n", path,
                strerror(errno));
        return PROVEN_ERR;
    }

    cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);

    if (cert == NULL) {
        fprintf(stderr, "proven: %s holds no PEM certificate\n", path);
        return PROVEN_ERR;
    }

    X509_free(v->root);
    v->root = cert;
    v->opts.root = cert;
    return PROVEN_OK;
}


static int
cli_parse_pcr(cli_verify_t *v, const char *spec)
{
    char           *end;
    size_t          i;
    unsigned long   index;
    proven_pcr_t   *pcr;
    const char     *hex;

    errno = 0;
    index = strtoul(spec, &end, 10);
    if (end == spec || *end != '=' || errno != 0 || spec[0] == '-'
        || spec[0] == '+' || index >= PROVEN_ATT_PCRS_MAX)
    {
        fprintf(stderr, "proven: bad --pcr \"%s\": want N=HEX with N "
                "from 0 to %d\n", spec, PROVEN_ATT_PCRS_MAX - 1);
        return PROVEN_ERR;
    }

    for (i = 0; i < v->opts.pcr_count; i++) {
        if (v->opts.pcrs[i].index == index) {
            fprintf(stderr, "proven: --pcr %lu given twice\n", index);
            return PROVEN_ERR;
        }
    }

    /* Distinct indexes below PROVEN_ATT_PCRS_MAX always fit. */
    pcr = &v->opts.pcrs[v->opts.pcr_count];
    hex = end + 1;

    if (*hex == '\0'
        || proven_hex_decode(hex, strlen(hex), pcr->value, sizeof(pcr->value),
                             &pcr->len) != PROVEN_OK)
    {
        fprintf(stderr, "proven: bad --pcr %lu value: want 1 to %d bytes "
                "of hex\n", index, PROVEN_ATT_PCR_MAX);
        return PROVEN_ERR;
    }

    pcr->index = (uint32_t) index;
    v->opts.pcr_count++;
    return PROVEN_OK;
}


static int
cli_parse_at(cli_verify_t *v, const char *arg)
{
    char                *end;
    unsigned long long   ms;

    if (strcmp(arg, "doc") == 0) {
        v->opts.at = PROVEN_AT_DOC;
        return PROVEN_OK;
    }

    if (strcmp(arg, "now") == 0) {
        v->opts.at = PROVEN_AT_NOW;
        return PROVEN_OK;
    }

    errno = 0;
    ms = strtoull(arg, &end, 10);
    if (arg[0] < '0' || arg[0] > '9' || *end != '\0' || errno != 0) {
        fprintf(stderr, "proven: bad --at \"%s\": want milliseconds since "
                "the epoch, doc or now\n", arg);
        return PROVEN_ERR;
    }

    v->opts.at = PROVEN_AT_MS;
    v->opts.at_ms = ms;
    return PROVEN_OK;
}


int
cli_verify_option(cli_verify_t *v, int opt, const char *arg)
{
    size_t  len;

    switch (opt) {

    case CLI_OPT_ROOT:
        return cli_load_root(v, arg);

    case CLI_OPT_NONCE:
        len = strlen(arg);
        if (len == 0
            || proven_hex_decode(arg, len, v->nonce, sizeof(v->nonce),
                                 &v->opts.nonce_len) != PROVEN_OK)
        {
            fprintf(stderr, "proven: bad --nonce: want 1 to %d bytes of "
                    "hex\n", PROVEN_ATT_FIELD_MAX);
            return PROVEN_ERR;
        }
        v->opts.nonce = v->nonce;
        return PROVEN_OK;

    case CLI_OPT_PCR:
        return cli_parse_pcr(v, arg);

    case CLI_OPT_AT:
        return cli_parse_at(v, arg);

    case CLI_OPT_JSON:
        v->json = 1;
        return PROVEN_OK;
    }

    return PROVEN_ERR;
}


/* "nonce_mismatch" -> "nonce mismatch: <err>", unless err already says so. */
static void
cli_reason(proven_verify_status_t status, const char *err, char *out,
    size_t size)
{
    char    phrase[64];
    size_t  i;

    snprintf(phrase, sizeof(phrase), "%s", proven_verify_status_name(status));
    for (i = 0; phrase[i] != '\0'; i++) {
        if (phrase[i] == '_') {
            phrase[i] = ' ';
        }
    }

    if (err[0] == '\0') {
        snprintf(out, size, "%s", phrase);

    } else if (strncmp(err, phrase, strlen(phrase)) == 0) {
        snprintf(out, size, "%s", err);

    } else {
        snprintf(out, size, "%s: %s", phrase, err);
    }
}


static void
cli_print_summary(const cli_verify_t *v, const proven_attestation_doc_t *doc)
{
    char        when[32], pcr0[2 * PROVEN_ATT_PCR_MAX + 1];
    char        nonce[2 * PROVEN_ATT_FIELD_MAX + 1];
    size_t      i;
    time_t      secs;
    struct tm   tm;

    secs = (time_t) (doc->timestamp / 1000);
    if (gmtime_r(&secs, &tm) == NULL
        || strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
    {
        snprintf(when, sizeof(when), "%" PRIu64 " ms", doc->timestamp);
    } else {
        snprintf(when + strlen(when), sizeof(when) - strlen(when),
                 ".%03uZ", (unsigned) (doc->timestamp % 1000));
    }

    snprintf(pcr0, sizeof(pcr0), "absent");
    for (i = 0; i < doc->pcr_count; i++) {
        if (doc->pcrs[i].index == 0) {
            proven_hex_encode(doc->pcrs[i].value, doc->pcrs[i].len, pcr0);
            break;
        }
    }

    printf("valid: module_id %s, timestamp %s, pcr0 %s", doc->module_id,
           when, pcr0);

    if (v->opts.nonce != NULL) {
        proven_hex_encode(v->opts.nonce, v->opts.nonce_len, nonce);
        printf(", nonce %s", nonce);
    }
    if (v->tls_spki != NULL) {
        printf(", bound to the served TLS key");
    }
    if (strncmp(doc->module_id, PROVEN_DEV_MODULE_PREFIX,
                sizeof(PROVEN_DEV_MODULE_PREFIX) - 1) == 0)
    {
        printf("\nDEV: made by a local node's dev provider, not by an "
               "enclave");
    }

    printf("\n");
}


/* jansson refuses invalid UTF-8; a reason we cannot show becomes null. */
static json_t *
cli_json_text(const char *s)
{
    json_t  *j;

    j = json_string(s);
    return j != NULL ? j : json_null();
}


static int
cli_print_json(proven_verify_status_t status, const char *reason,
    const proven_attestation_doc_t *doc)
{
    char          *text;
    json_t        *out, *document;
    json_error_t   jerr;

    document = NULL;

    /* A document that did not decode has nothing worth showing. */
    if (doc != NULL && status != PROVEN_VERIFY_MALFORMED
        && status != PROVEN_VERIFY_INTERNAL)
    {
        text = proven_attestation_to_json(doc, 0);
        if (text == NULL) {
            fprintf(stderr, "proven: cannot render the document as JSON\n");
            return PROVEN_ERR;
        }
        document = json_loads(text, 0, &jerr);
        free(text);
        if (document == NULL) {
            fprintf(stderr, "proven: bad document JSON: %s\n", jerr.text);
            return PROVEN_ERR;
        }
    }

    out = json_pack("{s:b, s:s, s:o, s:b, s:o}",
                    "valid", status == PROVEN_VERIFY_OK,
                    "status", proven_verify_status_name(status),
                    "reason", status == PROVEN_VERIFY_OK
                              ? json_null() : cli_json_text(reason),
                    "dev", document != NULL
                           && strncmp(doc->module_id,
                                      PROVEN_DEV_MODULE_PREFIX,
                                      sizeof(PROVEN_DEV_MODULE_PREFIX) - 1)
                              == 0,
                    "document", document != NULL ? document : json_null());
    if (out == NULL) {
        fprintf(stderr, "proven: out of memory\n");
        return PROVEN_ERR;
    }

    if (json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
        json_decref(out);
        return PROVEN_ERR;
    }

    printf("\n");
    json_decref(out);
    return PROVEN_OK;
}


/* Whether doc binds the served TLS key (proven_attestation_bind_tls). */
static int
cli_tls_bound(const cli_verify_t *v, const proven_attestation_doc_t *doc)
{
    return doc->user_data.present
           && doc->user_data.len == sizeof(PROVEN_TLS_BINDING_MARK) - 1
           && memcmp(doc->user_data.data, PROVEN_TLS_BINDING_MARK,
                     doc->user_data.len) == 0
           && doc->public_key.present
           && doc->public_key.len == v->tls_spki_len
           && memcmp(doc->public_key.data, v->tls_spki, v->tls_spki_len) == 0;
}


int
cli_verify_document(cli_verify_t *v, const uint8_t *buf, size_t len)
{
    int                       rc;
    char                      err[PROVEN_ERR_LEN], reason[CLI_REASON_LEN];
    proven_verify_status_t    status;
    proven_attestation_doc_t  doc;

    err[0] = '\0';
    memset(&doc, 0, sizeof(doc));

    status = proven_attestation_verify(buf, len, &v->opts, &doc, err,
                                       sizeof(err));
    if (status == PROVEN_VERIFY_OK && v->tls_spki != NULL
        && !cli_tls_bound(v, &doc))
    {
        /* a valid document, but TLS did not end in the node that made it */
        status = PROVEN_VERIFY_TLS_UNBOUND;
        snprintf(err, sizeof(err), "the document does not bind the key of "
                 "the TLS certificate this connection was served (user_data "
                 "%s, public_key the served key): TLS ends outside the node",
                 PROVEN_TLS_BINDING_MARK);
    }
    cli_reason(status, err, reason, sizeof(reason));

    rc = status == PROVEN_VERIFY_OK ? CLI_EXIT_OK : CLI_EXIT_FAILED;

    if (v->json) {
        if (cli_print_json(status, reason, &doc) != PROVEN_OK) {
            rc = CLI_EXIT_FAILED;
        }

    } else if (status == PROVEN_VERIFY_OK) {
        cli_print_summary(v, &doc);
    }

    if (status != PROVEN_VERIFY_OK) {
        fprintf(stderr, "proven: invalid: %s\n", reason);
    }

    proven_attestation_doc_free(&doc);
    return rc;
}


/* Reads all of f up to CLI_DOC_MAX bytes; *too_big when there is more. */
static int
cli_read_document(FILE *f, uint8_t *buf, size_t *len, int *too_big)
{
    size_t  n;

    *len = 0;
    *too_big = 0;

    /* One byte of room past the limit tells "exactly full" from "more". */
    while (*len <= CLI_DOC_MAX) {
        n = fread(buf + *len, 1, CLI_DOC_MAX + 1 - *len, f);
        *len += n;
        if (n == 0) {
            break;
        }
    }

    if (ferror(f)) {
        return PROVEN_ERR;
    }

    if (*len > CLI_DOC_MAX) {
        *too_big = 1;
    }

    return PROVEN_OK;
}


int
cli_verify(int argc, char **argv)
{
    int            opt, rc, too_big;
    char           reason[CLI_REASON_LEN];
    FILE          *f;
    size_t         len;
    uint8_t       *buf;
    cli_verify_t   v;
    const char    *path;

    static const struct option  longopts[] = {
        CLI_VERIFY_LONGOPTS,
        { NULL, 0, NULL, 0 }
    };

    f = NULL;
    buf = NULL;
    rc = CLI_EXIT_USAGE;
    cli_verify_init(&v);

    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            cli_usage_verify(stdout);
            rc = CLI_EXIT_OK;
            goto failed;
        }

        if (opt == '?' || opt == ':') {
            cli_option_error("verify", opt, argv);
            cli_usage_verify(stderr);
            goto failed;
        }

        if (cli_verify_option(&v, opt, optarg) != PROVEN_OK) {
            goto failed;
        }
    }

    if (argc - optind > 1) {
        fprintf(stderr, "proven verify: one document at a time\n");
        cli_usage_verify(stderr);
        goto failed;
    }

    path = optind < argc ? argv[optind] : "-";

    if (strcmp(path, "-") == 0) {
        path = "stdin";
        f = stdin;

    } else {
        f = fopen(path, "rb");
        if (f == NULL) {
            fprintf(stderr, "proven: cannot open %s: %s\n", path,
                    strerror(errno));
            goto failed;
        }
    }

    buf = malloc(CLI_DOC_MAX + 1);
    if (buf == NULL) {
        fprintf(stderr, "proven: out of memory\n");
        rc = CLI_EXIT_FAILED;
        goto failed;
    }

    if (cli_read_document(f, buf, &len, &too_big) != PROVEN_OK) {
        fprintf(stderr, "proven: cannot read %s: %s\n", path,
                strerror(errno));
        goto failed;
    }

    if (too_big) {
        snprintf(reason, sizeof(reason), "malformed: %s is larger than %d "
                 "bytes", path, CLI_DOC_MAX);
        if (v.json) {
            (void) cli_print_json(PROVEN_VERIFY_MALFORMED, reason, NULL);
        }
        fprintf(stderr, "proven: invalid: %s\n", reason);
        rc = CLI_EXIT_FAILED;
        goto failed;
    }

    rc = cli_verify_document(&v, buf, len);

failed:

    if (f != NULL && f != stdin) {
        fclose(f);
    }
    free(buf);
    cli_verify_free(&v);
    return rc;
}
