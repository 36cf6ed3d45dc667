/*
 * The fields of a multipart/form-data body (RFC 7578) that a caller asks
 * for, found in place: what POST /session reads.  Parts of other names
 * are skipped; a field given twice is an error.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* memmem(), in nginx's build too */
#endif

#include <string.h>
#include <strings.h>

#include "proven.h"


/* Where needle (ASCII, any case) starts in [p, end), or NULL. */
static const uint8_t *
proven_multipart_find_case(const uint8_t *p, const uint8_t *end,
    const char *needle)
{
    size_t  n;

    n = strlen(needle);

    for ( /* void */ ; (size_t) (end - p) >= n; p++) {
        if (strncasecmp((const char *) p, needle, n) == 0) {
            return p;
        }
    }

    return NULL;
}


const char *
proven_multipart_fields(const uint8_t *content_type, size_t ctlen,
    const uint8_t *body, size_t len, proven_multipart_field_t *fields,
    size_t nfields)
{
    size_t          blen, nlen, i;
    uint8_t         delim[4 + PROVEN_MULTIPART_BOUNDARY_MAX];
    const uint8_t  *b, *p, *end, *part, *head_end, *next, *name;

    for (i = 0; i < nfields; i++) {
        fields[i].data = NULL;
        fields[i].len = 0;
        fields[i].found = 0;
    }

    end = content_type + ctlen;
    b = proven_multipart_find_case(content_type, end, "boundary=");
    if (b == NULL) {
        return "multipart/form-data needs a boundary";
    }

    b += 9;
    if (b < end && *b == '"') {
        b++;
        for (p = b; p < end && *p != '"'; p++) { /* void */ }

    } else {
        for (p = b; p < end && *p != ';' && *p != ' '; p++) { /* void */ }
    }

    blen = (size_t) (p - b);
    if (blen == 0 || blen > PROVEN_MULTIPART_BOUNDARY_MAX) {
        return "the multipart boundary must be 1..70 characters";
    }

    /* "\r\n--" boundary; the body starts with "--" boundary */
    memcpy(delim, "\r\n--", 4);
    memcpy(delim + 4, b, blen);

    end = body + len;
    if (len < blen + 2 || memcmp(body, delim + 2, blen + 2) != 0) {
        return "the body does not start with the multipart boundary";
    }

    p = body + blen + 2;

    for ( ;; ) {

        if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
            return NULL;                        /* the closing boundary */
        }

        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
            return "a multipart boundary is not followed by CRLF";
        }

        part = p + 2;
        head_end = memmem(part, (size_t) (end - part), "\r\n\r\n", 4);
        if (head_end == NULL) {
            return "a multipart part has no end of headers";
        }

        next = memmem(head_end + 4, (size_t) (end - head_end - 4), delim,
                      blen + 4);
        if (next == NULL) {
            return "a multipart part is not closed by the boundary";
        }

        name = proven_multipart_find_case(part, head_end, "name=\"");
        if (name != NULL) {
            name += 6;
            for (nlen = 0; name + nlen < head_end && name[nlen] != '"';
                 nlen++)
            { /* void */ }

            for (i = 0; i < nfields; i++) {
                if (strlen(fields[i].name) != nlen
                    || memcmp(fields[i].name, name, nlen) != 0)
                {
                    continue;
                }

                if (fields[i].found) {
                    return "a multipart field is given twice";
                }

                fields[i].found = 1;
                fields[i].data = head_end + 4;
                fields[i].len = (size_t) (next - head_end - 4);
            }
        }

        p = next + blen + 4;
    }
}
