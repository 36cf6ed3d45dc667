/*
 * `proven tls self-signed --dir DIR [--name NAME]`: a P-256 key and a
 * certificate for it signed by itself, for a node that has no other yet
 * (inside the image, before ACME; local mode makes its own with openssl).
 * The key is made where the command runs and written 0600; a pair that
 * exists and matches is kept, so a restart serves the same key.
 */

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cli.h"
#include "core/util.h"


#define CLI_TLS_DAYS     365
#define CLI_TLS_NAME_MAX 253


void
cli_usage_tls(FILE *out)
{
    fprintf(out,
        "usage: proven tls self-signed --dir DIR [--name NAME]\n"
        "\n"
        "Writes DIR/key.pem (P-256, mode 0600) and DIR/cert.pem (signed by\n"
        "that key, for NAME (default localhost) and 127.0.0.1, a year) unless\n"
        "both exist and match.  TLS-bound attestations (proven_attestation_bind_tls)\n"
        "carry this key: a client checks it there, not in a CA.\n"
        "\n"
        "exit status: 0 done or already there, 1 failed, 2 usage error\n");
}


static int
cli_tls_add_san(X509 *cert, const char *name)
{
    int              ok;
    char             value[CLI_TLS_NAME_MAX + 32];
    X509V3_CTX       ctx;
    X509_EXTENSION  *ext;

    snprintf(value, sizeof(value), "DNS:%s,IP:127.0.0.1", name);
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, value);
    ok = ext != NULL && X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}


/* A new certificate for key, signed by key. */
static X509 *
cli_tls_certificate(EVP_PKEY *key, const char *name)
{
    X509          *cert;
    uint8_t        serial[16];
    BIGNUM        *bn;
    X509_NAME     *subject;
    ASN1_INTEGER  *sn;

    cert = X509_new();
    bn = NULL;
    sn = NULL;
    if (cert == NULL || RAND_bytes(serial, sizeof(serial)) != 1) {
        goto failed;
    }
    serial[0] &= 0x7f;                          /* a positive serial */
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    sn = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    subject = X509_get_subject_name(cert);

    if (sn == NULL
        || X509_set_version(cert, 2) != 1
        || X509_set_serialNumber(cert, sn) != 1
        || X509_gmtime_adj(X509_getm_notBefore(cert), -60) == NULL
        || X509_time_adj_ex(X509_getm_notAfter(cert), CLI_TLS_DAYS, 0, NULL)
           == NULL
        || X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                                      (const unsigned char *) name, -1, -1, 0)
           != 1
        || X509_set_issuer_name(cert, subject) != 1
        || X509_set_pubkey(cert, key) != 1
        || cli_tls_add_san(cert, name) != 0
        || X509_sign(cert, key, EVP_sha256()) <= 0)
    {
        goto failed;
    }

    BN_free(bn);
    ASN1_INTEGER_free(sn);
    return cert;

failed:

    BN_free(bn);
    ASN1_INTEGER_free(sn);
    X509_free(cert);
    return NULL;
}


/* PEM of key or cert into memory (malloc()ed), for proven_write_file. */
static char *
cli_tls_pem(EVP_PKEY *key, X509 *cert, size_t *len)
{
    BIO   *bio;
    char  *data, *copy;
    long   n;

    bio = BIO_new(BIO_s_mem());
    copy = NULL;
    if (bio != NULL
        && (key ? PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL,
                                           NULL)
                : PEM_write_bio_X509(bio, cert)) == 1
        && (n = BIO_get_mem_data(bio, &data)) > 0
        && (copy = malloc((size_t) n)) != NULL)
    {
        memcpy(copy, data, (size_t) n);
        *len = (size_t) n;
    }
    BIO_free(bio);
    return copy;
}


/* A key and a certificate that belong together (a write cut between the
 * two files leaves a pair nginx would refuse at every start). */
static int
cli_tls_pair_ok(const char *key_path, const char *cert_path)
{
    int        ok;
    FILE      *f;
    X509      *cert;
    EVP_PKEY  *key;

    key = NULL;
    cert = NULL;
    if ((f = fopen(key_path, "r")) != NULL) {
        key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    if ((f = fopen(cert_path, "r")) != NULL) {
        cert = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
    }
    ok = key != NULL && cert != NULL && X509_check_private_key(cert, key) == 1;
    EVP_PKEY_free(key);
    X509_free(cert);
    return ok;
}


int
cli_tls(int argc, char **argv)
{
    int          opt, rc;
    char         err[PROVEN_ERR_LEN], key_path[4096], cert_path[4096];
    char        *key_pem, *cert_pem;
    size_t       key_len, cert_len;
    X509        *cert;
    EVP_PKEY    *key;
    const char  *dir, *name;

    static const struct option  options[] = {
        { "dir",  required_argument, NULL, 'd' },
        { "name", required_argument, NULL, 'n' },
        { "help", no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    if (argc < 2 || strcmp(argv[1], "self-signed") != 0) {
        cli_usage_tls(argc == 2 && strcmp(argv[1], "--help") == 0 ? stdout
                                                                    : stderr);
        return argc == 2 && strcmp(argv[1], "--help") == 0 ? CLI_EXIT_OK
                                                           : CLI_EXIT_USAGE;
    }

    dir = NULL;
    name = "localhost";
    optind = 2;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 'd':
            dir = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case 'h':
            cli_usage_tls(stdout);
            return CLI_EXIT_OK;
        default:
            cli_option_error("tls", opt, argv);
            return CLI_EXIT_USAGE;
        }
    }

    if (dir == NULL || optind != argc || name[0] == '\0'
        || strlen(name) > CLI_TLS_NAME_MAX
        || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789.-")
           != strlen(name))
    {
        fprintf(stderr, "proven tls: --dir DIR is needed; --name is a host "
                        "name ([a-z0-9.-], up to %d)\n", CLI_TLS_NAME_MAX);
        return CLI_EXIT_USAGE;
    }

    if ((size_t) snprintf(key_path, sizeof(key_path), "%s/key.pem", dir)
            >= sizeof(key_path)
        || (size_t) snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir)
            >= sizeof(cert_path))
    {
        fprintf(stderr, "proven tls: --dir is too long\n");
        return CLI_EXIT_USAGE;
    }

    if (cli_tls_pair_ok(key_path, cert_path)) {
        printf("%s\n", cert_path);
        return CLI_EXIT_OK;
    }

    if (provend_mkdirs(dir, 0700, err, sizeof(err)) != PROVEN_OK) {
        fprintf(stderr, "proven tls: %s\n", err);
        return CLI_EXIT_FAILED;
    }

    rc = CLI_EXIT_FAILED;
    key_pem = NULL;
    cert_pem = NULL;
    cert = NULL;
    key = EVP_EC_gen("P-256");
    if (key == NULL || (cert = cli_tls_certificate(key, name)) == NULL
        || (key_pem = cli_tls_pem(key, NULL, &key_len)) == NULL
        || (cert_pem = cli_tls_pem(NULL, cert, &cert_len)) == NULL)
    {
        fprintf(stderr, "proven tls: cannot make the key and certificate\n");

    } else if (proven_write_file(key_path, key_pem, key_len, 0600, err,
                                 sizeof(err)) != PROVEN_OK
               || proven_write_file(cert_path, cert_pem, cert_len, 0644, err,
                                    sizeof(err)) != PROVEN_OK)
    {
        fprintf(stderr, "proven tls: %s\n", err);

    } else {
        printf("%s\n", cert_path);
        rc = CLI_EXIT_OK;
    }

    if (key_pem) {
        OPENSSL_cleanse(key_pem, key_len);
    }
    free(key_pem);
    free(cert_pem);
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}
