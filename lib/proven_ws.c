/*
 * WebSocket frames (RFC 6455) as the rpc module reads and writes them,
 * without I/O: a client frame's head checked against the message under
 * way, and a server frame's head.
 */

#include <string.h>

#include "proven.h"


int
proven_ws_parse_head(const uint8_t *p, size_t have,
    const proven_ws_message_t *msg, proven_ws_frame_t *f)
{
    size_t    i;
    uint64_t  len;

    memset(f, 0, sizeof(*f));

    if (have < 2) {
        return PROVEN_AGAIN;
    }

    f->fin = (p[0] & 0x80) != 0;
    f->opcode = p[0] & 0x0f;

    f->close_code = PROVEN_WS_PROTOCOL_ERROR;

    if (p[0] & 0x70) {
        f->reason = "reserved bits are set";
        return PROVEN_ERR;
    }

    if (!(p[1] & 0x80)) {
        f->reason = "client frames must be masked";
        return PROVEN_ERR;
    }

    len = p[1] & 0x7f;
    f->head = 2;

    if (len == 126) {
        if (have < 4) {
            return PROVEN_AGAIN;
        }

        len = (uint64_t) p[2] << 8 | p[3];
        f->head = 4;

    } else if (len == 127) {
        if (have < 10) {
            return PROVEN_AGAIN;
        }

        len = 0;
        for (i = 2; i < 10; i++) {
            len = len << 8 | p[i];
        }

        f->head = 10;
    }

    f->mask_at = f->head;
    f->head += 4;
    f->len = len;

    switch (f->opcode) {

    case PROVEN_WS_CLOSE:
    case PROVEN_WS_PING:
    case PROVEN_WS_PONG:
        if (!f->fin || len > PROVEN_WS_CONTROL_MAX) {
            f->reason = "a control frame must be whole and at most 125 "
                        "bytes";
            return PROVEN_ERR;
        }

        if (f->opcode == PROVEN_WS_CLOSE && len == 1) {
            f->reason = "a close frame of 1 byte";
            return PROVEN_ERR;
        }

        break;

    case PROVEN_WS_TEXT:
        f->close_code = PROVEN_WS_UNSUPPORTED;
        f->reason = "messages are binary frames of CBOR";
        return PROVEN_ERR;

    case PROVEN_WS_BINARY:
        if (msg->open) {
            f->reason = "a new message began inside a fragmented one";
            return PROVEN_ERR;
        }

        break;

    case PROVEN_WS_CONT:
        if (!msg->open) {
            f->reason = "a continuation frame without a message";
            return PROVEN_ERR;
        }

        break;

    default:
        f->reason = "an unknown opcode";
        return PROVEN_ERR;
    }

    if (f->opcode < PROVEN_WS_CLOSE
        && (msg->len > msg->max || len > msg->max - msg->len))
    {
        f->close_code = PROVEN_WS_TOO_BIG;
        f->reason = "the message is larger than proven_rpc_max_message";
        return PROVEN_ERR;
    }

    f->close_code = 0;

    if (have < f->head) {
        return PROVEN_AGAIN;
    }

    return PROVEN_OK;
}


void
proven_ws_unmask(uint8_t *payload, size_t len, const uint8_t mask[4])
{
    size_t  i;

    for (i = 0; i < len; i++) {
        payload[i] ^= mask[i & 3];
    }
}


size_t
proven_ws_put_head(uint8_t *p, unsigned opcode, uint64_t len)
{
    p[0] = (uint8_t) (0x80 | (opcode & 0x0f));

    if (len < 126) {
        p[1] = (uint8_t) len;
        return 2;
    }

    if (len < 65536) {
        p[1] = 126;
        p[2] = (uint8_t) (len >> 8);
        p[3] = (uint8_t) len;
        return 4;
    }

    p[1] = 127;
    proven_put_be64(p + 2, len);
    return 10;
}
