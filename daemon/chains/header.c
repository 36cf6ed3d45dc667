/*
 * Block headers hashed here from their fields, and chains of them linked
 * to a checkpoint: see eth.h.  The fields come as JSON from an endpoint
 * the host may answer for; each is checked for its form and size before
 * it goes into the RLP whose keccak is the block's hash.
 */

#include <stdio.h>
#include <string.h>

#include "proven.h"
#include "eth.h"


#define HEADER_MAX       1536           /* RLP bytes: about 600 today */
#define EXTRA_MAX        256            /* extraData (consensus: 32) */

typedef enum {
    FIELD_HASH,                         /* 32 bytes */
    FIELD_ADDRESS,                      /* 20 */
    FIELD_BLOOM,                        /* 256 */
    FIELD_NONCE,                        /* 8 */
    FIELD_QUANTITY,                     /* a number, 32 bytes at most */
    FIELD_BYTES                         /* EXTRA_MAX at most */
} field_kind_t;

typedef struct {
    const char    *name;
    field_kind_t   kind;
    int            optional;            /* a later fork's */
} field_t;

/* In the order the RLP list has them (Yellow Paper 4.3, EIPs 1559, 4895,
 * 4844, 4788, 7685). */
static const field_t  header_fields[] = {
    { "parentHash", FIELD_HASH, 0 },
    { "sha3Uncles", FIELD_HASH, 0 },
    { "miner", FIELD_ADDRESS, 0 },
    { "stateRoot", FIELD_HASH, 0 },
    { "transactionsRoot", FIELD_HASH, 0 },
    { "receiptsRoot", FIELD_HASH, 0 },
    { "logsBloom", FIELD_BLOOM, 0 },
    { "difficulty", FIELD_QUANTITY, 0 },
    { "number", FIELD_QUANTITY, 0 },
    { "gasLimit", FIELD_QUANTITY, 0 },
    { "gasUsed", FIELD_QUANTITY, 0 },
    { "timestamp", FIELD_QUANTITY, 0 },
    { "extraData", FIELD_BYTES, 0 },
    { "mixHash", FIELD_HASH, 0 },
    { "nonce", FIELD_NONCE, 0 },
    { "baseFeePerGas", FIELD_QUANTITY, 1 },
    { "withdrawalsRoot", FIELD_HASH, 1 },
    { "blobGasUsed", FIELD_QUANTITY, 1 },
    { "excessBlobGas", FIELD_QUANTITY, 1 },
    { "parentBeaconBlockRoot", FIELD_HASH, 1 },
    { "requestsHash", FIELD_HASH, 1 },
};


/* "0x" and hex digits into out: bytes, or -1.  An odd count (a
 * quantity's, "0x1") reads as if a 0 came first. */
static long
field_bytes(const char *text, uint8_t *out, size_t size)
{
    char    even[2 * EXTRA_MAX + 2];
    size_t  n, digits;

    if (strncmp(text, "0x", 2) != 0) {
        return -1;
    }
    text += 2;
    digits = strlen(text);
    if (digits + 1 >= sizeof(even)) {
        return -1;
    }
    even[0] = '0';
    memcpy(even + 1, text, digits);
    if (proven_hex_decode(digits % 2 == 1 ? even : even + 1,
                          digits + digits % 2, out, size, &n) != PROVEN_OK)
    {
        return -1;
    }
    return (long) n;
}


/* An RLP string of len bytes appended at out + *off (room checked). */
static int
rlp_put(uint8_t *out, size_t size, size_t *off, const uint8_t *data,
    size_t len)
{
    size_t  head;

    head = len == 1 && data[0] < 0x80 ? 0 : len < 56 ? 1 : 2 + (len > 255);
    if (len > 0xffff || size - *off < head + len) {
        return PROVEN_ERR;
    }
    if (head == 1) {
        out[(*off)++] = (uint8_t) (0x80 + len);
    } else if (head > 1) {
        out[(*off)++] = (uint8_t) (0xb7 + head - 1);
        if (head == 3) {
            out[(*off)++] = (uint8_t) (len >> 8);
        }
        out[(*off)++] = (uint8_t) len;
    }
    memcpy(out + *off, data, len);
    *off += len;
    return PROVEN_OK;
}


static uint64_t
field_u64(const uint8_t *p, size_t len)
{
    size_t    i;
    uint64_t  v;

    v = 0;
    for (i = 0; i < len; i++) {
        v = v << 8 | p[i];
    }
    return v;
}


int
provend_eth_header(const json_t *block, provend_eth_header_t *header,
    char *err, size_t errlen)
{
    int             missing;
    long            len;
    size_t          i, off, lead, want, body;
    json_t         *v;
    uint8_t         field[EXTRA_MAX], list[HEADER_MAX + 4];
    const uint8_t  *p;

    memset(header, 0, sizeof(*header));
    off = 0;
    missing = 0;
    for (i = 0; i < sizeof(header_fields) / sizeof(header_fields[0]); i++) {
        v = json_object_get(block, header_fields[i].name);
        if (v == NULL || json_is_null(v)) {
            if (!header_fields[i].optional) {
                proven_errf(err, errlen, "a header without %s",
                            header_fields[i].name);
                return PROVEN_ERR;
            }
            missing = 1;
            continue;
        }
        if (missing) {
            proven_errf(err, errlen, "a header with %s but not the fields "
                        "of the forks before it", header_fields[i].name);
            return PROVEN_ERR;
        }
        len = json_is_string(v) ? field_bytes(json_string_value(v), field,
                                              sizeof(field)) : -1;
        want = header_fields[i].kind == FIELD_HASH ? 32
               : header_fields[i].kind == FIELD_ADDRESS ? 20
               : header_fields[i].kind == FIELD_BLOOM ? 256
               : header_fields[i].kind == FIELD_NONCE ? 8 : 0;
        p = field;
        if (len >= 0 && header_fields[i].kind == FIELD_QUANTITY) {
            /* a number: big-endian, no leading zero (zero: no bytes) */
            for (lead = 0; lead < (size_t) len && field[lead] == 0; lead++) {
                /* skipped */
            }
            p = field + lead;
            len -= (long) lead;
            if (len > 32) {
                len = -1;
            }
        } else if (len >= 0 && want != 0 && (size_t) len != want) {
            len = -1;
        }
        if (len < 0
            || rlp_put(list + 4, HEADER_MAX, &off, p, (size_t) len)
               != PROVEN_OK)
        {
            proven_errf(err, errlen, "a header's %s is not %s",
                        header_fields[i].name,
                        header_fields[i].kind == FIELD_QUANTITY
                        ? "a number of 32 bytes at most"
                        : header_fields[i].kind == FIELD_BYTES
                        ? "hex of 256 bytes at most" : "of its size");
            return PROVEN_ERR;
        }
        if (strcmp(header_fields[i].name, "parentHash") == 0) {
            memcpy(header->parent, p, 32);
        } else if (strcmp(header_fields[i].name, "stateRoot") == 0) {
            memcpy(header->state_root, p, 32);
        } else if (strcmp(header_fields[i].name, "receiptsRoot") == 0) {
            memcpy(header->receipts_root, p, 32);
        } else if (strcmp(header_fields[i].name, "logsBloom") == 0) {
            memcpy(header->bloom, p, 256);
        } else if (strcmp(header_fields[i].name, "number") == 0
                   || strcmp(header_fields[i].name, "timestamp") == 0)
        {
            if (len > 8) {
                proven_errf(err, errlen, "a header's %s over 64 bits",
                            header_fields[i].name);
                return PROVEN_ERR;
            }
            *(header_fields[i].name[0] == 'n' ? &header->number
                                              : &header->timestamp)
                = field_u64(p, (size_t) len);
        }
    }

    /* the list's own head, just before its items */
    body = off;
    if (body < 56) {
        list[3] = (uint8_t) (0xc0 + body);
        p = list + 3;
    } else if (body < 256) {
        list[2] = 0xf8;
        list[3] = (uint8_t) body;
        p = list + 2;
    } else {
        list[1] = 0xf9;
        list[2] = (uint8_t) (body >> 8);
        list[3] = (uint8_t) body;
        p = list + 1;
    }
    provend_keccak256(p, (size_t) (list + 4 + body - p), header->hash);
    return PROVEN_OK;
}


int
provend_eth_chain(const provend_eth_header_t *headers, size_t n,
    const uint8_t checkpoint[32], char *err, size_t errlen)
{
    size_t  i;

    if (n == 0) {
        proven_errf(err, errlen, "no headers");
        return PROVEN_ERR;
    }
    /* the trust is the checkpoint's, and goes back through parent hashes */
    if (memcmp(headers[n - 1].hash, checkpoint, 32) != 0) {
        proven_errf(err, errlen, "the last header (block %llu) is not the "
                    "checkpoint",
                    (unsigned long long) headers[n - 1].number);
        return PROVEN_ERR;
    }
    for (i = n - 1; i > 0; i--) {
        if (headers[i].number == 0
            || headers[i - 1].number != headers[i].number - 1
            || memcmp(headers[i - 1].hash, headers[i].parent, 32) != 0)
        {
            proven_errf(err, errlen, "block %llu is not the parent of "
                        "block %llu",
                        (unsigned long long) headers[i - 1].number,
                        (unsigned long long) headers[i].number);
            return PROVEN_ERR;
        }
    }
    return PROVEN_OK;
}
