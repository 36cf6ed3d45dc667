/*
 * libFuzzer target: any bytes read as an enclave image (lib/image): the
 * header, each section within the file and in order, the CRC and PCRs,
 * never a read past the end.  What reads is written again the same way
 * and must read back to the same PCRs.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proven.h"
#include "image/proven_eif.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char               err[PROVEN_ERR_LEN];
    size_t             i, len;
    uint8_t           *out;
    proven_eif_t       eif, again;
    proven_eif_part_t  parts[PROVEN_EIF_SECTIONS_MAX];

    if (proven_eif_read(data, size, &eif, err, sizeof(err)) != PROVEN_OK) {
        return 0;
    }
    for (i = 0; i < eif.nsections; i++) {
        parts[i].type = eif.sections[i].type;
        parts[i].data = eif.sections[i].data;
        parts[i].len = (size_t) eif.sections[i].size;
    }
    if (proven_eif_write(parts, eif.nsections, eif.default_mem,
                         eif.default_cpus, &out, &len, err, sizeof(err))
        != PROVEN_OK)
    {
        return 0;
    }
    if (proven_eif_read(out, len, &again, err, sizeof(err)) != PROVEN_OK
        || again.crc_stored != again.crc_computed
        || memcmp(again.pcr0, eif.pcr0, sizeof(eif.pcr0)) != 0
        || memcmp(again.pcr1, eif.pcr1, sizeof(eif.pcr1)) != 0
        || memcmp(again.pcr2, eif.pcr2, sizeof(eif.pcr2)) != 0)
    {
        abort();
    }
    free(out);
    return 0;
}
