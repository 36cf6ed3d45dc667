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
#include <openssl/rand.h>

#include "cli.h"

#define CLI_URL_MAX          4096
#define CLI_FRESH_NONCE      32
#define CLI_HTTP_TIMEOUT_MS  10000L
#define CLI_BODY_SHOWN       512


typedef struct {
    uint8_t  *data;
    size_t    len;
    int       too_big;
} cli_body_t;


void
cli_usage_attest(FILE *out)
{
    fprintf(out,
        "usage: proven attest URL [options]\n"
        "\n"
        "Fetches URL?nonce=HEX (a node's /attestation endpoint) and verifies\n"
        "the document it returns, nonce included.\n"
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


static size_t
cli_body_write(char *ptr, size_t size, size_t nmemb, void *ctx)
{
    size_t       n;
    cli_body_t  *body = ctx;

    n = size * nmemb;

    /* Returning short makes libcurl abort the transfer. */
    if (n > CLI_DOC_MAX - body->len) {
        body->too_big = 1;
        return 0;
    }

    memcpy(body->data + body->len, ptr, n);
    body->len += n;
    return n;
}


/* Shows what a failing server said, without letting it drive the tty. */
static void
cli_show_body(const cli_body_t *body)
{
    size_t  i, n;

    n = body->len < CLI_BODY_SHOWN ? body->len : CLI_BODY_SHOWN;
    if (n == 0) {
        return;
    }

    for (i = 0; i < n; i++) {
        fputc(isprint(body->data[i]) || body->data[i] == '\n'
              ? body->data[i] : '.', stderr);
    }

    fprintf(stderr, "%s\n", n < body->len ? "..." : "");
}


static int
cli_fetch(const char *url, int insecure, cli_body_t *body)
{
    int                 rc;
    long                code;
    CURL               *curl;
    CURLcode            res;
    struct curl_slist  *headers;
    char                cerr[CURL_ERROR_SIZE];

    rc = PROVEN_ERR;
    cerr[0] = '\0';
    headers = NULL;

    curl = curl_easy_init();
    if (curl == NULL) {
        fprintf(stderr, "proven: cannot start libcurl\n");
        return PROVEN_ERR;
    }

    headers = curl_slist_append(NULL, "Accept: application/cbor");
    if (headers == NULL) {
        fprintf(stderr, "proven: out of memory\n");
        goto failed;
    }

    if (curl_easy_setopt(curl, CURLOPT_URL, url) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https")
           != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, CLI_HTTP_TIMEOUT_MS)
           != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_USERAGENT, "proven") != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, cli_body_write)
           != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_WRITEDATA, body) != CURLE_OK)
    {
        fprintf(stderr, "proven: libcurl refused an option\n");
        goto failed;
    }

    if (insecure
        && (curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L) != CURLE_OK
            || curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L)
               != CURLE_OK))
    {
        fprintf(stderr, "proven: libcurl refused --insecure\n");
        goto failed;
    }

    res = curl_easy_perform(curl);

    if (body->too_big) {
        fprintf(stderr, "proven: %s: response larger than %d bytes\n", url,
                CLI_DOC_MAX);
        goto failed;
    }

    if (res != CURLE_OK) {
        fprintf(stderr, "proven: %s: %s\n", url,
                cerr[0] != '\0' ? cerr : curl_easy_strerror(res));
        goto failed;
    }

    code = 0;
    if (curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK
        || code != 200)
    {
        fprintf(stderr, "proven: %s: HTTP status %ld\n", url, code);
        cli_show_body(body);
        goto failed;
    }

    rc = PROVEN_OK;

failed:

    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return rc;
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


int
cli_attest(int argc, char **argv)
{
    int            opt, rc, insecure, curl_ready;
    char          *url;
    cli_body_t     body;
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

    body.data = malloc(CLI_DOC_MAX);
    if (body.data == NULL) {
        fprintf(stderr, "proven: out of memory\n");
        goto failed;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "proven: cannot start libcurl\n");
        goto failed;
    }
    curl_ready = 1;

    if (cli_fetch(url, insecure, &body) != PROVEN_OK) {
        goto failed;
    }

    rc = cli_verify_document(&v, body.data, body.len);

failed:

    if (curl_ready) {
        curl_global_cleanup();
    }
    free(body.data);
    free(url);
    cli_verify_free(&v);
    return rc;
}
