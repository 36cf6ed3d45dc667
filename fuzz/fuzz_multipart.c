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
    size_t                     i, ctlen, len;
    uint8_t                   *body, *type;
    const uint8_t             *nul;
    proven_multipart_field_t   fields[3];

    nul = memchr(data, '\0', size);
    if (nul == NULL) {
        return 0;
    }

    ctlen = (size_t) (nul - data);
    len = size - ctlen - 1;

    /* each in a buffer of exactly its size: reads past it are caught */
    type = malloc(ctlen ? ctlen : 1);
    body = malloc(len ? len : 1);
    if (type == NULL || body == NULL) {
        free(type);
        free(body);
        return 0;
    }
    memcpy(type, data, ctlen);
    memcpy(body, nul + 1, len);

    fields[0].name = "nonce";
    fields[1].name = "public_key";
    fields[2].name = "";

    if (proven_multipart_fields(type, ctlen, body, len, fields, 3) == NULL)
    {
        for (i = 0; i < 3; i++) {
            if (fields[i].found
                && (fields[i].data < body
                    || fields[i].data + fields[i].len > body + len))
            {
                abort();
            }
        }
    }

    free(type);
    free(body);
    return 0;
}
