/* One bounded HTTP(S) GET through libcurl (see proven_fetch.h). */

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "proven.h"
#include "proven_fetch.h"


typedef struct {
    proven_fetch_t  *f;
    size_t           max;
} proven_fetch_sink_t;


/* Non-zero ends the transfer: the caller's cancel flag is set. */
static int
proven_fetch_on_progress(void *data, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
    (void) dltotal;
    (void) dlnow;
    (void) ultotal;
    (void) ulnow;
    return __atomic_load_n((const int *) data, __ATOMIC_RELAXED) != 0;
}


static size_t
proven_fetch_on_body(char *ptr, size_t size, size_t nmemb, void *data)
{
    size_t                n;
    uint8_t              *grown;
    proven_fetch_sink_t  *sink;

    sink = data;
    n = size * nmemb;

    /* short: libcurl ends the transfer */
    if (n > sink->max - sink->f->len) {
        sink->f->too_large = 1;
        return 0;
    }

    grown = realloc(sink->f->body, sink->f->len + n + 1);
    if (grown == NULL) {
        return 0;
    }

    sink->f->body = grown;
    memcpy(grown + sink->f->len, ptr, n);
    sink->f->len += n;
    grown[sink->f->len] = '\0';
    return n;
}


/* The peer's (first) certificate, as libcurl's certificate info has it. */
static char *
proven_fetch_cert(CURL *curl)
{
    struct curl_slist     *s;
    struct curl_certinfo  *info;

    info = NULL;
    if (curl_easy_getinfo(curl, CURLINFO_CERTINFO, &info) != CURLE_OK
        || info == NULL || info->num_of_certs < 1)
    {
        return NULL;
    }

    for (s = info->certinfo[0]; s != NULL; s = s->next) {
        if (strncmp(s->data, "Cert:", 5) == 0) {
            return strdup(s->data + 5);
        }
    }

    return NULL;
}


int
proven_fetch(const char *url, const proven_fetch_opts_t *opts,
    proven_fetch_t *f, char *err, size_t errlen)
{
    int                   rc;
    char                  accept[256], cerr[CURL_ERROR_SIZE];
    CURL                 *curl;
    CURLcode              res;
    struct curl_slist    *headers, *s;
    proven_fetch_sink_t   sink;

    memset(f, 0, sizeof(*f));
    rc = PROVEN_ERR;
    headers = NULL;
    cerr[0] = '\0';

    sink.f = f;
    sink.max = opts->max;

    curl = curl_easy_init();
    if (curl == NULL) {
        proven_errf(err, errlen, "cannot start libcurl");
        return PROVEN_ERR;
    }

    if (opts->accept != NULL) {
        snprintf(accept, sizeof(accept), "Accept: %s", opts->accept);
        headers = curl_slist_append(NULL, accept);
        if (headers == NULL) {
            proven_errf(err, errlen, "out of memory");
            goto done;
        }
    }
    if (opts->post != NULL && opts->content_type != NULL) {
        snprintf(accept, sizeof(accept), "Content-Type: %s",
                 opts->content_type);
        s = curl_slist_append(headers, accept);
        if (s == NULL) {
            proven_errf(err, errlen, "out of memory");
            goto done;
        }
        headers = s;
    }

    if (curl_easy_setopt(curl, CURLOPT_URL, url) != CURLE_OK
        /* the host answers for anyone: nothing but HTTP(S), no redirect */
        || curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https")
           != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, opts->timeout_ms)
           != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_USERAGENT, "proven") != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION,
                            proven_fetch_on_body) != CURLE_OK
        || curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink) != CURLE_OK
        || (headers != NULL
            && curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers)
               != CURLE_OK)
        || (opts->proxy != NULL
            && (curl_easy_setopt(curl, CURLOPT_PROXY, opts->proxy)
                != CURLE_OK
                /* every URL through it, whatever NO_PROXY says */
                || curl_easy_setopt(curl, CURLOPT_NOPROXY, "") != CURLE_OK))
        || (opts->post != NULL
            && (curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE,
                                 (long) opts->post_len) != CURLE_OK
                || curl_easy_setopt(curl, CURLOPT_POSTFIELDS, opts->post)
                   != CURLE_OK))
        || (opts->cancel != NULL
            && (curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION,
                                 proven_fetch_on_progress) != CURLE_OK
                || curl_easy_setopt(curl, CURLOPT_XFERINFODATA,
                                    (void *) opts->cancel) != CURLE_OK
                || curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L)
                   != CURLE_OK))
        || (opts->want_cert
            && curl_easy_setopt(curl, CURLOPT_CERTINFO, 1L) != CURLE_OK)
        || (opts->insecure
            && (curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L)
                != CURLE_OK
                || curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L)
                   != CURLE_OK)))
    {
        proven_errf(err, errlen, "libcurl refused an option");
        goto done;
    }

    res = curl_easy_perform(curl);

    if (f->too_large) {
        proven_errf(err, errlen, "the answer is larger than %zu bytes",
                    opts->max);
        goto done;
    }

    if (res != CURLE_OK) {
        proven_errf(err, errlen, "%s",
                    cerr[0] != '\0' ? cerr : curl_easy_strerror(res));
        goto done;
    }

    (void) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &f->status);

    if (opts->want_cert) {
        f->cert_pem = proven_fetch_cert(curl);
    }

    if (f->body == NULL) {
        f->body = calloc(1, 1);                 /* an empty answer */
        if (f->body == NULL) {
            proven_errf(err, errlen, "out of memory");
            goto done;
        }
    }

    rc = PROVEN_OK;

done:

    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return rc;
}


void
proven_fetch_free(proven_fetch_t *f)
{
    free(f->body);
    free(f->cert_pem);
    f->body = NULL;
    f->cert_pem = NULL;
    f->len = 0;
}
