/*
 * libFuzzer target for the parsers provend runs on untrusted bytes besides
 * frames: the storage scope of every kv.* / sql.* op, and the NSM device's
 * response.  The first byte picks the parser.
 */

#include <stdlib.h>

#include "proven.h"
#include "provider.h"
#include "storage.h"


static void
fuzz_scope(const uint8_t *data, size_t size)
{
    char              err[PROVEN_ERR_LEN], canonical[1024];
    size_t            len;
    cbor_item_t      *item;
    provend_scope_t   scope;

    item = proven_cbor_load(data, size, err, sizeof(err));
    if (item == NULL) {
        return;
    }

    if (provend_scope_parse(item, &scope, err, sizeof(err)) == PROVEN_OK) {
        (void) provend_scope_canonical(&scope, "kv-bytes", "default",
                                       canonical, sizeof(canonical), &len);
    }

    cbor_decref(&item);
}


static void
fuzz_nsm_response(const uint8_t *data, size_t size)
{
    char      err[PROVEN_ERR_LEN];
    size_t    len;
    uint8_t  *doc;

    doc = NULL;
    if (provend_nsm_response_decode(data, size, &doc, &len, err, sizeof(err))
        == PROVEN_OK)
    {
        free(doc);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }

    if (data[0] & 1) {
        fuzz_scope(data + 1, size - 1);

    } else {
        fuzz_nsm_response(data + 1, size - 1);
    }

    return 0;
}
