/*
 * libFuzzer target: an entry of the cluster's replicated log, after its
 * seal is opened (what a writer node put there), as every node decodes
 * it; one that decodes is encoded again and must decode to the same.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proven.h"
#include "cluster/log_int.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t                 id[PROVEND_LOG_ID_LEN], id2[PROVEND_LOG_ID_LEN];
    provend_wbuf_t          w;
    provend_storage_req_t  *req, *again;

    req = provend_log_decode(data, size, id);
    if (req == NULL) {
        return 0;
    }

    memset(&w, 0, sizeof(w));
    provend_log_encode(&w, req, id, req->log_time_ms);

    if (!w.failed) {
        again = provend_log_decode(w.p, w.len, id2);
        if (again == NULL || memcmp(id, id2, sizeof(id)) != 0
            || again->op != req->op || again->key_len != req->key_len
            || again->value_len != req->value_len
            || strcmp(again->name, req->name) != 0)
        {
            abort();
        }
        provend_storage_req_free(again);
    }

    free(w.p);
    provend_storage_req_free(req);
    return 0;
}
