/*
 * libFuzzer target for the parsers provend runs on untrusted bytes besides
 * the frame decoder: the storage scope of every kv.* / sql.* op, the
 * in-place reader of plain kv.get / kv.set frames, and the NSM device's
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


/* What the fast path takes on trust from a parse that succeeded. */
static void
fuzz_kv_plain(const uint8_t *data, size_t size)
{
    char                canonical[1024];
    size_t              len;
    provend_kv_plain_t  f;

    if (provend_kv_plain_parse(data, size, &f) != PROVEN_OK) {
        return;
    }

    if (f.key < data || f.key_len == 0 || f.key_len > PROVEND_KV_KEY_MAX
        || f.key + f.key_len > data + size
        || (f.set && (f.value < data || f.value + f.value_len > data + size))
        || provend_scope_canonical(&f.scope, "kv-bytes", f.store, canonical,
                                   sizeof(canonical), &len) != PROVEN_OK)
    {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }

    switch (data[0] % 3) {
    case 0:
        fuzz_nsm_response(data + 1, size - 1);
        break;
    case 1:
        fuzz_scope(data + 1, size - 1);
        break;
    default:
        fuzz_kv_plain(data + 1, size - 1);
        break;
    }

    return 0;
}
