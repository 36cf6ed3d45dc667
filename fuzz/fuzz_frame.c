/*
 * libFuzzer target: a frame header, then its body as a request and as a
 * response, then the response encoded back; and the in-place reader
 * skipping the body, which must agree with libcbor on where it ends.
 */

#include <stdint.h>
#include <stdlib.h>

#include "proven.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t             outlen;
    uint8_t           *out;
    uint32_t           len;
    proven_request_t   req;
    proven_response_t  res;
    char               err[PROVEN_ERR_LEN];

    if (size < PROVEN_FRAME_HEADER) {
        return 0;
    }

    if (proven_frame_length(data, &len, err, sizeof(err)) != PROVEN_OK) {
        return 0;
    }

    /* The body is whatever follows, as a short read would leave it. */
    data += PROVEN_FRAME_HEADER;
    size -= PROVEN_FRAME_HEADER;
    if (size > len) {
        size = len;
    }

    {
        proven_cbor_span_t  r;

        r.p = data;
        r.end = data + size;
        if (proven_cbor_span_skip(&r, PROVEN_CBOR_MAX_DEPTH) == PROVEN_OK
            && (r.p < data || r.p > data + size))
        {
            abort();
        }
    }

    if (proven_request_decode(data, size, &req, err, sizeof(err))
        == PROVEN_OK)
    {
        proven_request_free(&req);
    }

    if (proven_response_decode(data, size, &res, err, sizeof(err))
        == PROVEN_OK)
    {
        if (res.ok
            && proven_response_encode_ok(res.id, res.result, &out, &outlen)
               == PROVEN_OK)
        {
            free(out);
        }

        proven_response_free(&res);
    }

    return 0;
}
