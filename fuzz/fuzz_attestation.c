/*
 * libFuzzer target: the attestation document decoder and verifier, at the
 * document's own time against the AWS root, then the JSON view of whatever
 * decoded.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proven.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                      *json;
    proven_verify_opts_t       opts;
    proven_attestation_doc_t   doc;
    proven_verify_status_t     status;
    char                       err[PROVEN_ERR_LEN];

    memset(&opts, 0, sizeof(opts));
    opts.at = PROVEN_AT_DOC;

    status = proven_attestation_verify(data, size, &opts, &doc, err,
                                       sizeof(err));

    if (status != PROVEN_VERIFY_MALFORMED) {
        json = proven_attestation_to_json(&doc, 0);
        free(json);
    }

    proven_attestation_doc_free(&doc);
    return 0;
}
