/*
 * The node's own certificate, served as provend keeps it (daemon/tls):
 *
 *     server {
 *         listen 443 ssl;
 *         ssl_certificate     ...;    served until provend has one
 *         ssl_certificate_key ...;
 *         proven_tls_domain node.example.com;
 *         proven_tls_live /run/proven/tls;      provend's --tls-live
 *     }
 *
 * Every handshake of the server gets LIVE/NAME.pem (key, then chain) as
 * provend last wrote it: read again when it changes (looked at once a
 * second at most, per worker), so a renewal needs no reload and drops no
 * connection.  A ClientHello offering ALPN `acme-tls/1` (RFC 8737) gets
 * the challenge certificate LIVE/challenge/NAME.pem instead, only while
 * provend has one pending and only for NAME, and `acme-tls/1` as its
 * protocol; nothing else ever sees it.  nginx 1.22 picks the certificate
 * before ALPN under TLS 1.2, so the ClientHello callback reads the offer.
 *
 * The server must be the default one of its listen (its ClientHello
 * callback is the one OpenSSL calls) or the only one.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>


#define NGX_PROVEN_TLS_ACME      "acme-tls/1"
#define NGX_PROVEN_TLS_PATH_MAX  4096
/* nginx's own offer (ngx_http_ssl_module.c's NGX_HTTP_ALPN_PROTOS) */
#define NGX_PROVEN_TLS_HTTP_ALPN "\x08http/1.1\x08http/1.0\x08http/0.9"


typedef struct {
    ngx_str_t        domain;
    ngx_str_t        live;
    char             pem[NGX_PROVEN_TLS_PATH_MAX];
    char             challenge[NGX_PROVEN_TLS_PATH_MAX];

    SSL_CTX         *ctx;               /* the server's */

    /* this worker's copy of the live pair */
    ngx_uint_t       refused;           /* said once: OpenSSL refused it */
    ngx_uint_t       ctx_live_only;     /* the context offers it alone */
    EVP_PKEY        *key;
    X509            *cert;
    STACK_OF(X509)  *chain;
    struct stat      seen;
    time_t           checked;
} ngx_http_proven_tls_srv_conf_t;


static void *ngx_http_proven_tls_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_proven_tls_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child);


static int  ngx_http_proven_tls_acme_index = -1;


static ngx_command_t  ngx_http_proven_tls_commands[] = {

    { ngx_string("proven_tls_domain"),
      NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_proven_tls_srv_conf_t, domain),
      NULL },

    { ngx_string("proven_tls_live"),
      NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_proven_tls_srv_conf_t, live),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_proven_tls_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */
    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */
    ngx_http_proven_tls_create_srv_conf,   /* create server configuration */
    ngx_http_proven_tls_merge_srv_conf,    /* merge server configuration */
    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_proven_tls_module = {
    NGX_MODULE_V1,
    &ngx_http_proven_tls_module_ctx,       /* module context */
    ngx_http_proven_tls_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* ---- the handshake ------------------------------------------------------- */

/* 1 when the ClientHello's ALPN list offers name. */
static int
ngx_http_proven_tls_offers(const u_char *p, size_t len, const char *name)
{
    size_t  list, n, want;

    want = ngx_strlen(name);
    if (len < 2) {
        return 0;
    }
    list = ((size_t) p[0] << 8) | p[1];
    p += 2;
    len -= 2;
    if (list != len) {
        return 0;
    }
    while (len > 0) {
        n = p[0];
        if (n + 1 > len) {
            return 0;
        }
        if (n == want && ngx_memcmp(p + 1, name, n) == 0) {
            return 1;
        }
        p += n + 1;
        len -= n + 1;
    }
    return 0;
}


/* Marks a ClientHello that offers acme-tls/1: the challenge is its. */
static int
ngx_http_proven_tls_client_hello(ngx_ssl_conn_t *ssl_conn, int *al,
    void *arg)
{
    size_t          len;
    const u_char   *p;

    (void) al;
    (void) arg;

    /* set or cleared at each ClientHello: a second one (after a
     * HelloRetryRequest) says again what it offers */
    SSL_set_ex_data(ssl_conn, ngx_http_proven_tls_acme_index,
                    SSL_client_hello_get0_ext(ssl_conn,
                        TLSEXT_TYPE_application_layer_protocol_negotiation,
                        &p, &len) == 1
                    && ngx_http_proven_tls_offers(p, len, NGX_PROVEN_TLS_ACME)
                    ? (void *) 1 : NULL);
    return SSL_CLIENT_HELLO_SUCCESS;
}


/*
 * ALPN: acme-tls/1 for a challenge, and nothing else for it; nginx's own
 * choice for the rest (h2 where the listen has it, then HTTP/1.x).
 */
static int
ngx_http_proven_tls_alpn(ngx_ssl_conn_t *ssl_conn, const u_char **out,
    u_char *outlen, const u_char *in, unsigned int inlen, void *arg)
{
    unsigned int            srvlen;
    const u_char           *srv;
    ngx_connection_t       *c;
    ngx_http_connection_t  *hc;

    (void) arg;

    if (SSL_get_ex_data(ssl_conn, ngx_http_proven_tls_acme_index) != NULL) {
        srv = (const u_char *) "\x0a" NGX_PROVEN_TLS_ACME;
        srvlen = sizeof("\x0a" NGX_PROVEN_TLS_ACME) - 1;

    } else {
        c = ngx_ssl_get_connection(ssl_conn);
        hc = c->data;
        (void) hc;
#if (NGX_HTTP_V2)
        if (hc->addr_conf->http2) {
            srv = (const u_char *) NGX_HTTP_V2_ALPN_PROTO NGX_PROVEN_TLS_HTTP_ALPN;
            srvlen = sizeof(NGX_HTTP_V2_ALPN_PROTO NGX_PROVEN_TLS_HTTP_ALPN) - 1;
        } else
#endif
        {
            srv = (const u_char *) NGX_PROVEN_TLS_HTTP_ALPN;
            srvlen = sizeof(NGX_PROVEN_TLS_HTTP_ALPN) - 1;
        }
    }

    if (SSL_select_next_proto((u_char **) out, outlen, srv, srvlen, in, inlen)
        != OPENSSL_NPN_NEGOTIATED)
    {
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}


/* No key of ours is encrypted: never a passphrase prompt. */
static int
ngx_http_proven_tls_no_pass(char *buf, int size, int rwflag, void *data)
{
    (void) buf;
    (void) size;
    (void) rwflag;
    (void) data;
    return 0;
}


/* The pair in path (a key, then certificates): PEM read whole. */
static ngx_int_t
ngx_http_proven_tls_read(const char *path, EVP_PKEY **key, X509 **cert,
    STACK_OF(X509) **chain)
{
    BIO   *bio;
    X509  *x;

    *key = NULL;
    *cert = NULL;
    *chain = NULL;
    bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ERR_clear_error();
        return NGX_DECLINED;
    }
    *key = PEM_read_bio_PrivateKey(bio, NULL, ngx_http_proven_tls_no_pass,
                                   NULL);
    *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    *chain = sk_X509_new_null();
    while (*chain != NULL
           && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
    {
        if (sk_X509_push(*chain, x) <= 0) {
            X509_free(x);
            break;
        }
    }
    BIO_free(bio);
    ERR_clear_error();                  /* the end of the file */
    if (*key == NULL || *cert == NULL || *chain == NULL
        || X509_check_private_key(*cert, *key) != 1)
    {
        ERR_clear_error();
        EVP_PKEY_free(*key);
        X509_free(*cert);
        sk_X509_pop_free(*chain, X509_free);
        *key = NULL;
        *cert = NULL;
        *chain = NULL;
        return NGX_ERROR;
    }
    return NGX_OK;
}


/*
 * 1 when cert is the only certificate ctx holds (the fallback was of the
 * same key type, so the live pair took its slot): a connection made from
 * ctx then needs nothing more from the cert callback.
 */
static ngx_uint_t
ngx_http_proven_tls_live_only(SSL_CTX *ctx, X509 *cert)
{
    int         rc;
    ngx_uint_t  n;

    n = 0;
    for (rc = SSL_CTX_set_current_cert(ctx, SSL_CERT_SET_FIRST);
         rc == 1;
         rc = SSL_CTX_set_current_cert(ctx, SSL_CERT_SET_NEXT))
    {
        n += SSL_CTX_get0_certificate(ctx) != NULL;
    }
    /* the live one current again: what a new connection starts with */
    if (SSL_CTX_select_current_cert(ctx, cert) != 1) {
        ERR_clear_error();
        return 0;
    }
    ERR_clear_error();
    return n == 1;
}


/* The live pair, read again when provend has replaced it. */
static void
ngx_http_proven_tls_refresh(ngx_http_proven_tls_srv_conf_t *conf,
    ngx_log_t *log)
{
    EVP_PKEY        *key;
    X509            *cert;
    STACK_OF(X509)  *chain;
    struct stat      st;

    if (conf->checked == ngx_time()) {
        return;
    }
    conf->checked = ngx_time();
    if (stat(conf->pem, &st) != 0
        || (st.st_ino == conf->seen.st_ino && st.st_size == conf->seen.st_size
            && st.st_mtim.tv_sec == conf->seen.st_mtim.tv_sec
            && st.st_mtim.tv_nsec == conf->seen.st_mtim.tv_nsec))
    {
        return;
    }
    switch (ngx_http_proven_tls_read(conf->pem, &key, &cert, &chain)) {
    case NGX_OK:
        break;
    case NGX_DECLINED:
        return;                         /* not opened: again next second */
    default:
        ngx_log_error(NGX_LOG_ERR, log, 0, "proven tls: %s is not a key and "
                      "its certificate: the one before is served", conf->pem);
        conf->seen = st;
        return;
    }
    /* new connections start with it too, resumed ones included (no cert
     * callback runs for those, and attestations bind what they serve) */
    if (SSL_CTX_use_cert_and_key(conf->ctx, cert, key, chain, 1) != 1) {
        ERR_clear_error();
        ngx_log_error(NGX_LOG_ERR, log, 0, "proven tls: OpenSSL refuses %s: "
                      "the one before is served", conf->pem);
        EVP_PKEY_free(key);
        X509_free(cert);
        sk_X509_pop_free(chain, X509_free);
        conf->seen = st;
        return;
    }
    EVP_PKEY_free(conf->key);
    X509_free(conf->cert);
    sk_X509_pop_free(conf->chain, X509_free);
    conf->key = key;
    conf->cert = cert;
    conf->chain = chain;
    conf->seen = st;
    conf->ctx_live_only = ngx_http_proven_tls_live_only(conf->ctx, cert);
    ngx_log_error(NGX_LOG_INFO, log, 0, "proven tls: serving %s",
                  conf->pem);
}


/*
 * The certificate of this handshake: the challenge for acme-tls/1 (if
 * one is pending for the name asked), else the live pair (else nginx's
 * ssl_certificate, until provend has one).
 */
static int
ngx_http_proven_tls_cert(ngx_ssl_conn_t *ssl_conn, void *arg)
{
    int                              ok;
    unsigned int                     alpn_len;
    const char                      *name;
    const u_char                    *alpn;
    EVP_PKEY                        *key;
    X509                            *cert;
    STACK_OF(X509)                  *chain;
    ngx_connection_t                *c;
    ngx_http_proven_tls_srv_conf_t  *conf = arg;

    c = ngx_ssl_get_connection(ssl_conn);

    if (SSL_get_ex_data(ssl_conn, ngx_http_proven_tls_acme_index) != NULL) {
        /* under TLS 1.3 ALPN is decided by now: it must be acme-tls/1 */
        SSL_get0_alpn_selected(ssl_conn, &alpn, &alpn_len);
        name = SSL_get_servername(ssl_conn, TLSEXT_NAMETYPE_host_name);
        if ((SSL_version(ssl_conn) >= TLS1_3_VERSION
             && (alpn_len != sizeof(NGX_PROVEN_TLS_ACME) - 1
                 || ngx_memcmp(alpn, NGX_PROVEN_TLS_ACME, alpn_len) != 0))
            || name == NULL
            || ngx_strlen(name) != conf->domain.len
            || ngx_strncasecmp((u_char *) name, conf->domain.data,
                               conf->domain.len) != 0
            || ngx_http_proven_tls_read(conf->challenge, &key, &cert, &chain)
               != NGX_OK)
        {
            ngx_log_error(NGX_LOG_INFO, c->log, 0, "proven tls: an acme-tls/1 "
                          "ClientHello with no challenge pending for its "
                          "name");
            return 0;
        }
        SSL_certs_clear(ssl_conn);
        ok = SSL_use_cert_and_key(ssl_conn, cert, key, NULL, 1);
        EVP_PKEY_free(key);
        X509_free(cert);
        sk_X509_pop_free(chain, X509_free);
        return ok == 1;
    }

    ngx_http_proven_tls_refresh(conf, c->log);
    if (conf->cert == NULL) {
        return 1;                       /* ssl_certificate meanwhile */
    }
    if (conf->ctx_live_only && SSL_get_certificate(ssl_conn) == conf->cert) {
        return 1;       /* made from the context since it took the pair */
    }
    /* this one alone: no slot of another key type left to be chosen */
    SSL_certs_clear(ssl_conn);
    if (SSL_use_cert_and_key(ssl_conn, conf->cert, conf->key, conf->chain, 1)
        != 1)
    {
        ERR_clear_error();
        if (!conf->refused) {
            conf->refused = 1;
            ngx_log_error(NGX_LOG_ERR, c->log, 0, "proven tls: OpenSSL "
                          "refuses the pair of %s", conf->pem);
        }
        return 0;
    }
    return 1;
}


/* ---- configuration -------------------------------------------------------- */

static void *
ngx_http_proven_tls_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_proven_tls_srv_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_proven_tls_srv_conf_t));
    return conf;
}


static void
ngx_http_proven_tls_cleanup(void *data)
{
    ngx_http_proven_tls_srv_conf_t  *conf = data;

    EVP_PKEY_free(conf->key);
    X509_free(conf->cert);
    sk_X509_pop_free(conf->chain, X509_free);
}


/*
 * proven_tls_domain @FILE: the name on FILE's first line, read as the
 * configuration is (an enclave's agent writes it before nginx starts);
 * NGX_DECLINED when FILE is not there: no certificate is wanted.
 */
static ngx_int_t
ngx_http_proven_tls_domain_file(ngx_conf_t *cf, ngx_str_t *domain)
{
    int        fd;
    u_char    *name;
    ssize_t    n;
    ngx_err_t  err;
    u_char     path[NGX_PROVEN_TLS_PATH_MAX], buf[256];

    if (domain->len >= sizeof(path)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "proven_tls_domain: the "
                           "file's path is too long");
        return NGX_ERROR;
    }
    ngx_memcpy(path, domain->data + 1, domain->len - 1);
    path[domain->len - 1] = '\0';
    fd = open((char *) path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0, "proven_tls_domain: %s is "
                           "not there: ssl_certificate is served", path);
        return NGX_DECLINED;
    }
    err = fd < 0 ? ngx_errno : 0;
    n = fd >= 0 ? read(fd, buf, sizeof(buf)) : -1;
    if (fd >= 0) {
        close(fd);
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'
                     || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
    {
        n--;
    }
    if (n <= 0 || n == (ssize_t) sizeof(buf)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, err, "proven_tls_domain: "
                           "%s does not hold one name of 253 characters at "
                           "most", path);
        return NGX_ERROR;
    }
    name = ngx_pnalloc(cf->pool, (size_t) n);
    if (name == NULL) {
        return NGX_ERROR;
    }
    ngx_memcpy(name, buf, (size_t) n);
    domain->data = name;
    domain->len = (size_t) n;
    return NGX_OK;
}


static char *
ngx_http_proven_tls_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    size_t                           i;
    ngx_pool_cleanup_t              *cln;
    ngx_http_ssl_srv_conf_t         *sscf;
    ngx_http_proven_tls_srv_conf_t  *conf = child;

    (void) parent;

    if (conf->domain.data == NULL && conf->live.data == NULL) {
        return NGX_CONF_OK;
    }
    if (conf->domain.data == NULL || conf->live.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "proven_tls_domain and "
                           "proven_tls_live go together");
        return NGX_CONF_ERROR;
    }
    if (conf->domain.len > 1 && conf->domain.data[0] == '@') {
        switch (ngx_http_proven_tls_domain_file(cf, &conf->domain)) {
        case NGX_OK:
            break;
        case NGX_DECLINED:
            /* no certificate wanted: ssl_certificate alone */
            ngx_str_null(&conf->domain);
            ngx_str_null(&conf->live);
            return NGX_CONF_OK;
        default:
            return NGX_CONF_ERROR;
        }
    }
    for (i = 0; i < conf->domain.len; i++) {
        if (!((conf->domain.data[i] >= 'a' && conf->domain.data[i] <= 'z')
              || (conf->domain.data[i] >= '0' && conf->domain.data[i] <= '9')
              || conf->domain.data[i] == '.' || conf->domain.data[i] == '-'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "proven_tls_domain "
                               "\"%V\" is not a DNS name in lower case",
                               &conf->domain);
            return NGX_CONF_ERROR;
        }
    }
    if (conf->domain.len == 0 || conf->domain.len > 253
        || conf->live.len == 0 || conf->live.len > 2000)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "proven_tls_domain or "
                           "proven_tls_live: too long or empty");
        return NGX_CONF_ERROR;
    }
    ngx_snprintf((u_char *) conf->pem, sizeof(conf->pem) - 1, "%V/%V.pem%Z",
                 &conf->live, &conf->domain);
    ngx_snprintf((u_char *) conf->challenge, sizeof(conf->challenge) - 1,
                 "%V/challenge/%V.pem%Z", &conf->live, &conf->domain);

    sscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_ssl_module);
    if (sscf != NULL && sscf->certificate_values != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "proven_tls_domain: "
                           "ssl_certificate may not hold variables here (it "
                           "is the certificate served until provend has one)");
        return NGX_CONF_ERROR;
    }
    if (sscf == NULL || sscf->ssl.ctx == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "proven_tls_domain needs "
                           "TLS on this server: \"listen ... ssl\" and an "
                           "ssl_certificate, served until provend has one");
        return NGX_CONF_ERROR;
    }
    if (ngx_http_proven_tls_acme_index == -1) {
        ngx_http_proven_tls_acme_index = SSL_get_ex_new_index(0, NULL, NULL,
                                                              NULL, NULL);
        if (ngx_http_proven_tls_acme_index == -1) {
            return NGX_CONF_ERROR;
        }
    }
    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }
    cln->handler = ngx_http_proven_tls_cleanup;
    cln->data = conf;
    conf->ctx = sscf->ssl.ctx;

    SSL_CTX_set_client_hello_cb(sscf->ssl.ctx,
                                ngx_http_proven_tls_client_hello, conf);
    SSL_CTX_set_alpn_select_cb(sscf->ssl.ctx, ngx_http_proven_tls_alpn, conf);
    SSL_CTX_set_cert_cb(sscf->ssl.ctx, ngx_http_proven_tls_cert, conf);
    return NGX_CONF_OK;
}
