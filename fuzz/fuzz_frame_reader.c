/*
 * libFuzzer target: the frame reader fed a stream in pieces whose sizes
 * come from the input: every frame popped lies inside the reader's
 * buffer, is within its bound, and the buffer stays bounded.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proven.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                    rc;
    char                   err[PROVEN_ERR_LEN];
    size_t                 max, piece, len, avail;
    uint8_t               *space;
    const uint8_t         *body;
    proven_frame_reader_t  r;

    if (size < 2) {
        return 0;
    }

    max = 1 + (size_t) data[0] * 16;
    piece = 1 + data[1];
    data += 2;
    size -= 2;

    proven_frame_reader_init(&r, max);

    while (size > 0) {
        len = size < piece ? size : piece;

        if (piece & 1) {
            /* copied in, as the CLI's reader does */
            if (proven_frame_reader_feed(&r, data, len, err, sizeof(err))
                != PROVEN_OK)
            {
                break;
            }

        } else {
            /* read into its space, as a libuv reader does */
            space = proven_frame_reader_space(&r, &avail);
            if (space == NULL || avail == 0) {
                break;
            }

            len = len < avail ? len : avail;
            memcpy(space, data, len);
            proven_frame_reader_fill(&r, len);
        }

        data += len;
        size -= len;

        for ( ;; ) {
            rc = proven_frame_reader_next(&r, &body, &len, err,
                                          sizeof(err));
            if (rc != PROVEN_OK) {
                break;
            }

            if (len == 0 || len > max || body < r.buf
                || body + len > r.buf + r.cap)
            {
                abort();
            }
        }

        if (rc == PROVEN_ERR) {
            break;
        }

        if (r.cap > PROVEN_FRAME_HEADER + max + PROVEN_FRAME_READ_CHUNK) {
            abort();
        }
    }

    proven_frame_reader_free(&r);
    return 0;
}
