/*
 * CBOR read in place and written by hand, for the few paths where building
 * libcbor trees costs more than the work itself (provend's kv.get).  The
 * reader accepts a strict subset; whatever it refuses, the caller hands to
 * the general decoder, which gives the errors.
 */

#include <string.h>

#include "proven.h"


int
proven_cbor_span_head(proven_cbor_span_t *r, int *major, uint64_t *arg)
{
    int       ai, n, i;
    uint64_t  v;

    if (r->p >= r->end) {
        return PROVEN_ERR;
    }

    *major = r->p[0] >> 5;
    ai = r->p[0] & 0x1f;
    r->p++;

    if (ai < 24) {
        *arg = (uint64_t) ai;
        return *major == PROVEN_CBOR_SIMPLE && ai < 20 ? PROVEN_ERR
                                                       : PROVEN_OK;
    }

    if (ai > 27 || *major == PROVEN_CBOR_SIMPLE) {
        return PROVEN_ERR;      /* indefinite, reserved, floats */
    }

    n = 1 << (ai - 24);
    if (r->end - r->p < n) {
        return PROVEN_ERR;
    }

    v = 0;
    for (i = 0; i < n; i++) {
        v = v << 8 | r->p[i];
    }
    r->p += n;

    *arg = v;
    return PROVEN_OK;
}


int
proven_cbor_span_string(proven_cbor_span_t *r, int major, const uint8_t **s,
    size_t *len)
{
    int       m;
    uint64_t  n;

    if (proven_cbor_span_head(r, &m, &n) != PROVEN_OK || m != major
        || n > (uint64_t) (r->end - r->p))
    {
        return PROVEN_ERR;
    }

    *s = r->p;
    *len = (size_t) n;
    r->p += n;
    return PROVEN_OK;
}


int
proven_cbor_span_map(proven_cbor_span_t *r, uint64_t *pairs)
{
    int  major;

    if (r->p < r->end && *r->p == 0xbf) {
        r->p++;
        *pairs = PROVEN_CBOR_INDEFINITE;
        return PROVEN_OK;
    }

    if (proven_cbor_span_head(r, &major, pairs) != PROVEN_OK
        || major != PROVEN_CBOR_MAP || *pairs == PROVEN_CBOR_INDEFINITE)
    {
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


int
proven_cbor_span_break(proven_cbor_span_t *r)
{
    if (r->p < r->end && *r->p == 0xff) {
        r->p++;
        return 1;
    }

    return 0;
}


int
proven_cbor_span_skip(proven_cbor_span_t *r, int depth)
{
    int       major;
    uint64_t  n, i;

    if (depth <= 0 || proven_cbor_span_head(r, &major, &n) != PROVEN_OK) {
        return PROVEN_ERR;
    }

    switch (major) {

    case PROVEN_CBOR_BYTES:
    case PROVEN_CBOR_TEXT:
        if (n > (uint64_t) (r->end - r->p)) {
            return PROVEN_ERR;
        }
        r->p += n;
        return PROVEN_OK;

    case PROVEN_CBOR_MAP:
        if (n > (uint64_t) (r->end - r->p)) {
            return PROVEN_ERR;
        }
        n *= 2;
        /* fall through */

    case PROVEN_CBOR_ARRAY:
        /* every item takes a byte at least: n is bounded by the buffer */
        if (n > (uint64_t) (r->end - r->p)) {
            return PROVEN_ERR;
        }
        for (i = 0; i < n; i++) {
            if (proven_cbor_span_skip(r, depth - 1) != PROVEN_OK) {
                return PROVEN_ERR;
            }
        }
        return PROVEN_OK;

    case PROVEN_CBOR_TAG:
        return proven_cbor_span_skip(r, depth - 1);

    default:
        return PROVEN_OK;
    }
}


uint8_t *
proven_cbor_put_head(uint8_t *p, int major, uint64_t arg)
{
    int  n, i;

    if (arg < 24) {
        *p++ = (uint8_t) (major << 5 | (int) arg);
        return p;
    }

    n = arg <= 0xff ? 1 : arg <= 0xffff ? 2 : arg <= 0xffffffff ? 4 : 8;
    *p++ = (uint8_t) (major << 5 | (n == 1 ? 24 : n == 2 ? 25
                                                 : n == 4 ? 26 : 27));
    for (i = n - 1; i >= 0; i--) {
        *p++ = (uint8_t) (arg >> (8 * i));
    }

    return p;
}


uint8_t *
proven_cbor_put_string(uint8_t *p, int major, const void *s, size_t len)
{
    p = proven_cbor_put_head(p, major, len);
    if (len) {
        memcpy(p, s, len);
    }
    return p + len;
}
