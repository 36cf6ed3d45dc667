/*
 * libFuzzer target: a client's WebSocket bytes as the rpc module reads
 * them: frame heads checked against the message under way, payloads
 * unmasked and assembled, bounded, until a frame refuses or more bytes
 * are needed.  The first byte sets the message bound.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proven.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                  rc;
    size_t               used;
    uint8_t             *in, head[PROVEN_WS_HEAD_MAX + 4];
    proven_ws_frame_t    f;
    proven_ws_message_t  msg;

    if (size < 1) {
        return 0;
    }

    msg.open = 0;
    msg.len = 0;
    msg.max = (size_t) data[0] * 64;

    /* a copy: unmasking writes in place */
    in = malloc(size);
    if (in == NULL) {
        return 0;
    }
    memcpy(in, data + 1, size - 1);
    size--;

    used = 0;
    for ( ;; ) {
        rc = proven_ws_parse_head(in + used, size - used, &msg, &f);
        if (rc == PROVEN_AGAIN) {
            break;
        }

        if (rc != PROVEN_OK) {
            if (f.reason == NULL || f.close_code < 1000) {
                abort();
            }
            break;
        }

        if (f.head > PROVEN_WS_HEAD_MAX || f.head > size - used) {
            abort();
        }

        if (f.opcode < PROVEN_WS_CLOSE && msg.len + f.len > msg.max) {
            abort();                    /* the bound must hold */
        }

        if (f.len > size - used - f.head) {
            break;                      /* the frame is not whole yet */
        }

        proven_ws_unmask(in + used + f.head, (size_t) f.len,
                         in + used + f.mask_at);

        if (f.opcode < PROVEN_WS_CLOSE) {
            msg.len += (size_t) f.len;
            msg.open = !f.fin;
            if (f.fin) {
                msg.len = 0;
            }
        }

        /* an answer's head, masked as a client's, reads back the same */
        if (f.opcode < PROVEN_WS_CLOSE || f.len <= PROVEN_WS_CONTROL_MAX) {
            proven_ws_frame_t    back;
            proven_ws_message_t  any = { f.opcode == PROVEN_WS_CONT, 0,
                                         SIZE_MAX };
            size_t               n;

            n = proven_ws_put_head(head, f.opcode, f.len);
            head[1] |= 0x80;
            memset(head + n, 0, 4);
            if (proven_ws_parse_head(head, n + 4, &any, &back) != PROVEN_OK
                || back.len != f.len || back.opcode != f.opcode
                || back.head != n + 4)
            {
                abort();
            }
        }

        used += f.head + (size_t) f.len;
    }

    free(in);
    return 0;
}
