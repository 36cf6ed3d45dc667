/*
 * libFuzzer target: a multipart/form-data body as POST /session reads
 * it.  The input is a Content-Type value, a NUL, then the body; every
 * field found must lie inside the body.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proven.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                     i, ctlen;
    uint8_t                   *body;
    const uint8_t             *nul;
    proven_multipart_field_t   fields[3];

    nul = memchr(data, '\0', size);
    if (nul == NULL) {
        return 0;
    }

    ctlen = (size_t) (nul - data);

    /* the body in a buffer of its own size: reads past it are caught */
    body = malloc(size - ctlen);
    if (body == NULL) {
        return 0;
    }
    memcpy(body, nul + 1, size - ctlen - 1);

    fields[0].name = "nonce";
    fields[1].name = "public_key";
    fields[2].name = "";

    if (proven_multipart_fields(data, ctlen, body, size - ctlen - 1, fields,
                                3) == NULL)
    {
        for (i = 0; i < 3; i++) {
            if (fields[i].found
                && (fields[i].data < body
                    || fields[i].data + fields[i].len
                       > body + (size - ctlen - 1)))
            {
                abort();
            }
        }
    }

    free(body);
    return 0;
}
