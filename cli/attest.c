/*
 * `proven attest URL`: asks a node for a document bound to a nonce of our
 * own choosing and verifies it, so a replayed document cannot pass.
 */

#include <ctype.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "cli.h"
#include "fetch/proven_fetch.h"

#define CLI_URL_MAX          4096
#define CLI_FRESH_NONCE      32
#define CLI_HTTP_TIMEOUT_MS  10000L
#define CLI_BODY_SHOWN       512





void
cli_usage_attest(FILE *out)
{
    fprintf(out,
        "usage: proven attest URL [options]\n"
        "\n"
        "Fetches URL?nonce=HEX (a node's /attestation endpoint) and verifies\n"
        "the document it returns, nonce included.  Over https the document\n"
        "must also bind the key of the TLS certificate that connection was\n"
        "served (proven_attestation_bind_tls): TLS ends inside the node.\n"
        "\n"
        "  --nonce HEX       use this nonce (default: 32 random bytes)\n"
        "  --insecure        do not check the HTTPS certificate (e.g. a\n"
        "                    node's dev certificate; the attestation is\n"
        "                    still verified)\n"
        "  --root PEM, --pcr N=HEX, --at MS|doc|now, --json\n"
        "                    as for `proven verify`\n"
        "  -h, --help        show this text\n"
        "\n"
        "exit status: 0 valid, 1 invalid or fetch failed, 2 usage error\n");
}


/* Shows what a failing server said, without letting it drive the tty. */
static void
cli_show_body(const proven_fetch_t *body)
{
    size_t  i, n;

    n = body->len < CLI_BODY_SHOWN ? body->len : CLI_BODY_SHOWN;
    if (n == 0) {
        return;
    }

    for (i = 0; i < n; i++) {
        fputc(isprint(body->body[i]) || body->body[i] == '\n'
              ? body->body[i] : '.', stderr);
    }

    fprintf(stderr, "%s\n", n < body->len ? "..." : "");
}


static int
cli_fetch(const char *url, int insecure, proven_fetch_t *body)
{
    char                 err[PROVEN_ERR_LEN];
    proven_fetch_opts_t  opts;

    memset(&opts, 0, sizeof(opts));
    opts.timeout_ms = CLI_HTTP_TIMEOUT_MS;
    opts.max = CLI_DOC_MAX;
    opts.insecure = insecure;
    opts.want_cert = strncasecmp(url, "https://", 8) == 0;
    opts.accept = "application/cbor";

    if (proven_fetch(url, &opts, body, err, sizeof(err)) != PROVEN_OK) {
        fprintf(stderr, "proven: %s: %s\n", url, err);
        return PROVEN_ERR;
    }

    if (body->status != 200) {
        fprintf(stderr, "proven: %s: HTTP status %ld\n", url, body->status);
        cli_show_body(body);
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


/* url + "?nonce=" or "&nonce=" + hex, checked before anything is sent. */
static char *
cli_attest_url(const char *base, const uint8_t *nonce, size_t nonce_len)
{
    char    *url, *hex;
    size_t   len, size;

    if (strncasecmp(base, "http://", 7) != 0
        && strncasecmp(base, "https://", 8) != 0)
    {
        fprintf(stderr, "proven attest: URL must start with http:// or "
                "https://\n");
        return NULL;
    }

    len = strlen(base);
    if (len > CLI_URL_MAX || strchr(base, '#') != NULL) {
        fprintf(stderr, "proven attest: URL is too long or has a "
                "#fragment\n");
        return NULL;
    }

    size = len + sizeof("&nonce=") + 2 * nonce_len;
    url = malloc(size);
    hex = malloc(2 * nonce_len + 1);
    if (url == NULL || hex == NULL) {
        fprintf(stderr, "proven: out of memory\n");
        free(url);
        free(hex);
        return NULL;
    }

    proven_hex_encode(nonce, nonce_len, hex);
    snprintf(url, size, "%s%cnonce=%s", base,
             strchr(base, '?') != NULL ? '&' : '?', hex);

    free(hex);
    return url;
}


/* The served certificate's key, DER SubjectPublicKeyInfo, into v. */
static int
cli_served_key(const proven_fetch_t *body, cli_verify_t *v)
{
    int       len;
    BIO      *bio;
    X509     *cert;
    uint8_t  *der;

    cert = NULL;
    bio = body->cert_pem != NULL
          ? BIO_new_mem_buf(body->cert_pem, -1) : NULL;
    if (bio != NULL) {
        cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
    }
    der = NULL;
    len = cert != NULL ? i2d_PUBKEY(X509_get0_pubkey(cert), &der) : -1;
    X509_free(cert);
    if (len <= 0) {
        fprintf(stderr, "proven attest: the server's TLS certificate could "
                "not be read: its binding cannot be checked\n");
        return PROVEN_ERR;
    }
    v->tls_spki = der;
    v->tls_spki_len = (size_t) len;
    return PROVEN_OK;
}


int
cli_attest(int argc, char **argv)
{
    int            opt, rc, insecure, curl_ready;
    char          *url;
    proven_fetch_t body;
    cli_verify_t   v;

    static const struct option  longopts[] = {
        CLI_VERIFY_LONGOPTS,
        { "insecure", 0, NULL, CLI_OPT_INSECURE },
        { NULL, 0, NULL, 0 }
    };

    url = NULL;
    insecure = 0;
    curl_ready = 0;
    rc = CLI_EXIT_USAGE;
    memset(&body, 0, sizeof(body));
    cli_verify_init(&v);

    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            cli_usage_attest(stdout);
            rc = CLI_EXIT_OK;
            goto failed;
        }

        if (opt == '?' || opt == ':') {
            cli_option_error("attest", opt, argv);
            cli_usage_attest(stderr);
            goto failed;
        }

        if (opt == CLI_OPT_INSECURE) {
            insecure = 1;
            continue;
        }

        if (cli_verify_option(&v, opt, optarg) != PROVEN_OK) {
            goto failed;
        }
    }

    if (argc - optind != 1) {
        fprintf(stderr, "proven attest: want exactly one URL\n");
        cli_usage_attest(stderr);
        goto failed;
    }

    if (v.opts.nonce == NULL) {
        if (RAND_bytes(v.nonce, CLI_FRESH_NONCE) != 1) {
            fprintf(stderr, "proven: no random bytes for a nonce\n");
            rc = CLI_EXIT_FAILED;
            goto failed;
        }
        v.opts.nonce = v.nonce;
        v.opts.nonce_len = CLI_FRESH_NONCE;
    }

    url = cli_attest_url(argv[optind], v.opts.nonce, v.opts.nonce_len);
    if (url == NULL) {
        goto failed;
    }

    rc = CLI_EXIT_FAILED;

    memset(&body, 0, sizeof(body));

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "proven: cannot start libcurl\n");
        goto failed;
    }
    curl_ready = 1;

    if (cli_fetch(url, insecure, &body) != PROVEN_OK) {
        goto failed;
    }

    /* over https: the document must bind the key this TLS was served */
    if (strncasecmp(url, "https://", 8) == 0
        && cli_served_key(&body, &v) != PROVEN_OK)
    {
        goto failed;
    }

    rc = cli_verify_document(&v, body.body, body.len);

failed:

    if (curl_ready) {
        curl_global_cleanup();
    }
    proven_fetch_free(&body);
    free(url);
    cli_verify_free(&v);
    return rc;
}
