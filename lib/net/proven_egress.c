/*
 * What the egress proxy on each side checks (proven_net.h): destinations,
 * the allow-list of host:port pairs they must be on, and the DNS messages
 * of DoH (RFC 8484: the wire format of RFC 1035, over HTTPS).
 */

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proven.h"
#include "net/proven_net.h"


/* ---- destinations ------------------------------------------------------ */

/*
 * A name as DNS has it, lowercased, without a final dot: labels of 1 to
 * 63 letters, digits and hyphens, 253 bytes at most.  With wildcard, a
 * leading "*." is kept (an allow-list pattern).
 */
static int
proven_egress_name(const char *in, size_t len, int wildcard, char *out)
{
    size_t  i, label;

    if (len > 0 && in[len - 1] == '.') {
        len--;
    }
    if (len == 0 || len > PROVEN_EGRESS_NAME_MAX) {
        return PROVEN_ERR;
    }
    i = 0;
    if (wildcard && len > 2 && in[0] == '*' && in[1] == '.') {
        out[0] = '*';
        out[1] = '.';
        i = 2;
    }
    label = 0;
    for ( ; i < len; i++) {
        if (in[i] == '.') {
            if (label == 0 || in[i - 1] == '-') {
                return PROVEN_ERR;
            }
            label = 0;
        } else if (isalnum((unsigned char) in[i])
                   || (in[i] == '-' && label > 0))
        {
            if (++label > 63) {
                return PROVEN_ERR;
            }
        } else {
            return PROVEN_ERR;
        }
        out[i] = (char) tolower((unsigned char) in[i]);
    }
    if (label == 0 || in[len - 1] == '-') {
        return PROVEN_ERR;
    }
    out[len] = '\0';
    return PROVEN_OK;
}


int
proven_egress_parse_dest(const char *text, size_t len, int wildcard,
    proven_egress_dest_t *dest)
{
    char           host[PROVEN_EGRESS_NAME_MAX + 2];
    size_t         hlen;
    const char    *colon, *port;
    unsigned long  n;
    uint8_t        ip[16];

    memset(dest, 0, sizeof(*dest));
    if (len == 0 || len > PROVEN_EGRESS_NAME_MAX + 8) {
        return PROVEN_ERR;
    }
    if (text[0] == '[') {
        colon = memchr(text, ']', len);
        if (colon == NULL || colon + 1 >= text + len || colon[1] != ':') {
            return PROVEN_ERR;
        }
        hlen = (size_t) (colon - text - 1);
        if (hlen == 0 || hlen >= sizeof(host)) {
            return PROVEN_ERR;
        }
        memcpy(host, text + 1, hlen);
        host[hlen] = '\0';
        if (inet_pton(AF_INET6, host, ip) != 1) {
            return PROVEN_ERR;
        }
        dest->family = AF_INET6;
        port = colon + 2;
    } else {
        colon = memrchr(text, ':', len);
        if (colon == NULL || colon == text
            || (size_t) (colon - text) >= sizeof(host))
        {
            return PROVEN_ERR;
        }
        hlen = (size_t) (colon - text);
        memcpy(host, text, hlen);
        host[hlen] = '\0';
        if (memchr(host, ':', hlen) != NULL) {
            return PROVEN_ERR;          /* IPv6 goes in brackets */
        }
        if (inet_pton(AF_INET, host, ip) == 1) {
            dest->family = AF_INET;
        } else if (proven_egress_name(host, hlen, wildcard, dest->host)
                   != PROVEN_OK)
        {
            return PROVEN_ERR;
        }
        port = colon + 1;
    }
    if (dest->family != 0) {
        inet_ntop(dest->family, ip, dest->host, sizeof(dest->host));
    }

    /* the port: 1 to 65535, digits only */
    if (port >= text + len || text + len - port > 5) {
        return PROVEN_ERR;
    }
    n = 0;
    for ( ; port < text + len; port++) {
        if (*port < '0' || *port > '9') {
            return PROVEN_ERR;
        }
        n = n * 10 + (unsigned long) (*port - '0');
    }
    if (n == 0 || n > 65535) {
        return PROVEN_ERR;
    }
    dest->port = (uint16_t) n;
    return PROVEN_OK;
}


void
proven_egress_dest_text(const proven_egress_dest_t *d, char *out, size_t size)
{
    snprintf(out, size, d->family == AF_INET6 ? "[%s]:%u" : "%s:%u",
             d->host, (unsigned) d->port);
}


int
proven_egress_global(int family, const uint8_t *a)
{
    static const uint8_t  zero[16];
    static const uint8_t  nat64[12] = { 0x00, 0x64, 0xFF, 0x9B };

    if (family == AF_INET) {
        return !(a[0] == 0 || a[0] == 10 || a[0] == 127
                 || (a[0] == 100 && (a[1] & 0xC0) == 64)   /* 100.64/10 */
                 || (a[0] == 169 && a[1] == 254)
                 || (a[0] == 172 && (a[1] & 0xF0) == 16)
                 || (a[0] == 192 && a[1] == 0 && (a[2] == 0 || a[2] == 2))
                 || (a[0] == 192 && a[1] == 88 && a[2] == 99)
                 || (a[0] == 192 && a[1] == 168)
                 || (a[0] == 198 && (a[1] & 0xFE) == 18)   /* 198.18/15 */
                 || (a[0] == 198 && a[1] == 51 && a[2] == 100)
                 || (a[0] == 203 && a[1] == 0 && a[2] == 113)
                 || a[0] >= 224);                 /* multicast, reserved */
    }
    if (memcmp(a, zero, 12) == 0                  /* ::, ::1, ::a.b.c.d */
        || (memcmp(a, zero, 10) == 0 && a[10] == 0xFF && a[11] == 0xFF)
        || memcmp(a, nat64, 12) == 0)
    {
        return memcmp(a, zero, 12) == 0 && a[12] == 0 && a[13] == 0
               ? 0 : proven_egress_global(AF_INET, a + 12);
    }
    if (a[0] == 0x20 && a[1] == 0x02) {           /* 6to4 */
        return proven_egress_global(AF_INET, a + 2);
    }
    return (a[0] & 0xE0) == 0x20                  /* 2000::/3, less: */
           && !(a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0D
                && a[3] == 0xB8)                  /* documentation */
           && !(a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x00
                && a[3] == 0x00);                 /* Teredo, ORCHIDs... */
}


/* ---- the allow-list ---------------------------------------------------- */

void
proven_allow_init(proven_allow_t *list)
{
    memset(list, 0, sizeof(*list));
}


void
proven_allow_free(proven_allow_t *list)
{
    free(list->entries);
    memset(list, 0, sizeof(*list));
}


int
proven_allow_add(proven_allow_t *list, const char *text, size_t len,
    char *err, size_t errlen)
{
    proven_egress_dest_t  d;

    if (proven_egress_parse_dest(text, len, 1, &d) != PROVEN_OK) {
        proven_errf(err, errlen, "\"%.*s\" is not HOST:PORT (a numeric "
                    "address, [IPv6], a name, or *.NAME)",
                    (int) (len > 80 ? 80 : len), text);
        return PROVEN_ERR;
    }
    return proven_allow_push(list, &d, err, errlen);
}


int
proven_allow_push(proven_allow_t *list, const proven_egress_dest_t *d,
    char *err, size_t errlen)
{
    proven_egress_dest_t  *grown;

    if (list->n == PROVEN_ALLOW_MAX) {
        proven_errf(err, errlen, "more than %d entries", PROVEN_ALLOW_MAX);
        return PROVEN_ERR;
    }
    if (list->n == list->cap) {
        grown = realloc(list->entries,
                        (list->cap ? list->cap * 2 : 8) * sizeof(*d));
        if (grown == NULL) {
            proven_errf(err, errlen, "out of memory");
            return PROVEN_ERR;
        }
        list->entries = grown;
        list->cap = list->cap ? list->cap * 2 : 8;
    }
    list->entries[list->n++] = *d;
    return PROVEN_OK;
}


int
proven_allow_load(proven_allow_t *list, const char *path, char *err,
    size_t errlen)
{
    FILE    *f;
    char     line[512], why[PROVEN_ERR_LEN];
    size_t   len;
    unsigned lineno;
    char    *p;

    f = fopen(path, "r");
    if (f == NULL) {
        proven_errf(err, errlen, "%.200s: %s", path, strerror(errno));
        return PROVEN_ERR;
    }
    lineno = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            proven_errf(err, errlen, "%.200s:%u: line too long", path,
                        lineno);
            fclose(f);
            return PROVEN_ERR;
        }
        if ((p = strchr(line, '#')) != NULL) {
            *p = '\0';
        }
        p = line;
        while (isspace((unsigned char) *p)) {
            p++;
        }
        len = strlen(p);
        while (len > 0 && isspace((unsigned char) p[len - 1])) {
            len--;
        }
        if (len == 0) {
            continue;
        }
        if (proven_allow_add(list, p, len, why, sizeof(why)) != PROVEN_OK) {
            proven_errf(err, errlen, "%.200s:%u: %s", path, lineno, why);
            fclose(f);
            return PROVEN_ERR;
        }
    }
    fclose(f);
    return PROVEN_OK;
}


/* "*.example.com" covers every name below example.com, not itself. */
static int
proven_allow_covers(const proven_egress_dest_t *pattern,
    const proven_egress_dest_t *d)
{
    size_t  plen, dlen;

    if (pattern->port != d->port) {
        return 0;
    }
    if (pattern->host[0] != '*') {
        return pattern->family == d->family
               && strcmp(pattern->host, d->host) == 0;
    }
    if (d->family != 0) {
        return 0;                       /* an address is listed as itself */
    }
    plen = strlen(pattern->host) - 1;   /* ".example.com" */
    dlen = strlen(d->host);
    return dlen > plen
           && memcmp(d->host + dlen - plen, pattern->host + 1, plen) == 0;
}


int
proven_allow_check(const proven_allow_t *list, const proven_egress_dest_t *d)
{
    size_t  i;

    for (i = 0; i < list->n; i++) {
        if (proven_allow_covers(&list->entries[i], d)) {
            return 1;
        }
    }
    return 0;
}


/* ---- DNS messages ------------------------------------------------------ */

int
proven_dns_query(const char *name, int type, uint8_t *out, size_t size,
    size_t *len)
{
    size_t       n, label;
    const char  *p, *dot;

    /* header: id 0 (RFC 8484 asks it, for caches), RD, one question */
    if (size < 12 + strlen(name) + 2 + 4) {
        return PROVEN_ERR;
    }
    memset(out, 0, 12);
    out[2] = 0x01;
    out[5] = 1;
    n = 12;
    for (p = name; *p != '\0'; p = dot + (*dot == '.')) {
        dot = strchr(p, '.');
        if (dot == NULL) {
            dot = p + strlen(p);
        }
        label = (size_t) (dot - p);
        if (label == 0 || label > 63) {
            return PROVEN_ERR;
        }
        out[n++] = (uint8_t) label;
        memcpy(out + n, p, label);
        n += label;
    }
    out[n++] = 0;
    out[n++] = (uint8_t) (type >> 8);
    out[n++] = (uint8_t) type;
    out[n++] = 0;
    out[n++] = 1;                       /* class IN */
    *len = n;
    return PROVEN_OK;
}


/* Past a name at *off (labels, ending in a zero or a pointer). */
static int
proven_dns_skip_name(const uint8_t *m, size_t len, size_t *off)
{
    size_t  o;

    o = *off;
    for ( ;; ) {
        if (o >= len) {
            return PROVEN_ERR;
        }
        if (m[o] == 0) {
            *off = o + 1;
            return PROVEN_OK;
        }
        if ((m[o] & 0xC0) == 0xC0) {
            if (o + 2 > len) {
                return PROVEN_ERR;
            }
            *off = o + 2;
            return PROVEN_OK;
        }
        if (m[o] & 0xC0) {
            return PROVEN_ERR;
        }
        o += 1 + m[o];
    }
}


int
proven_dns_answer(const uint8_t *m, size_t len, int type, char *ip,
    size_t iplen, char *err, size_t errlen)
{
    size_t    off, i, rdlen;
    unsigned  qd, an, rcode, rtype;

    if (len < 12) {
        proven_errf(err, errlen, "the answer is not a DNS message");
        return PROVEN_ERR;
    }
    rcode = m[3] & 0x0F;
    if (!(m[2] & 0x80) || rcode != 0) {
        proven_errf(err, errlen, rcode == 3 ? "no such name"
                                            : "the resolver failed (rcode %u)",
                    rcode);
        return PROVEN_ERR;
    }
    qd = ((unsigned) m[4] << 8) | m[5];
    an = ((unsigned) m[6] << 8) | m[7];
    off = 12;
    for (i = 0; i < qd; i++) {
        if (proven_dns_skip_name(m, len, &off) != PROVEN_OK || off + 4 > len) {
            goto bad;
        }
        off += 4;
    }
    /* the first record of the type asked (after CNAMEs, if any) */
    for (i = 0; i < an; i++) {
        if (proven_dns_skip_name(m, len, &off) != PROVEN_OK
            || off + 10 > len)
        {
            goto bad;
        }
        rtype = ((unsigned) m[off] << 8) | m[off + 1];
        rdlen = ((size_t) m[off + 8] << 8) | m[off + 9];
        off += 10;
        if (off + rdlen > len) {
            goto bad;
        }
        if (rtype == (unsigned) type && m[off - 8] == 0 && m[off - 7] == 1
            && rdlen == (type == PROVEN_DNS_AAAA ? 16u : 4u))
        {
            if (inet_ntop(type == PROVEN_DNS_AAAA ? AF_INET6 : AF_INET,
                          m + off, ip, (socklen_t) iplen) == NULL)
            {
                goto bad;
            }
            return PROVEN_OK;
        }
        off += rdlen;
    }
    proven_errf(err, errlen, "no %s record", type == PROVEN_DNS_AAAA ? "AAAA"
                                                                     : "A");
    return PROVEN_AGAIN;

bad:

    proven_errf(err, errlen, "the DNS answer is malformed");
    return PROVEN_ERR;
}
