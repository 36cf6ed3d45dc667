/*
 * CBOR helpers over libcbor.  proven_cbor_load walks the item headers with
 * libcbor's streaming decoder first, so that depth, element counts and
 * trailing bytes are checked before the builder allocates anything.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proven.h"


#define PROVEN_CBOR_INDEFINITE  UINT64_MAX
#define PROVEN_CBOR_DUMP_SMALL  2048    /* serialized on the stack first */

typedef struct {
    uint64_t     remaining[PROVEN_CBOR_MAX_DEPTH];  /* items left per level */
    size_t       depth;
    size_t       left;          /* input bytes after the current header */
    int          done;          /* the root item is complete */
    const char  *error;
} proven_cbor_scan_t;


static void
proven_cbor_scan_item(proven_cbor_scan_t *scan)
{
    /* A finished item completes every enclosing definite container whose
     * count it exhausts. */
    while (scan->depth > 0) {
        uint64_t  *top = &scan->remaining[scan->depth - 1];

        if (*top == PROVEN_CBOR_INDEFINITE) {
            return;
        }

        if (--*top > 0) {
            return;
        }

        scan->depth--;
    }

    scan->done = 1;
}


static void
proven_cbor_scan_push(proven_cbor_scan_t *scan, uint64_t items)
{
    if (scan->depth == PROVEN_CBOR_MAX_DEPTH) {
        scan->error = "nested too deep";
        return;
    }

    scan->remaining[scan->depth++] = items;
}


static void
proven_cbor_scan_definite(proven_cbor_scan_t *scan, uint64_t items)
{
    /* Every element takes at least one byte: a count the input cannot hold
     * is refused here, before libcbor allocates room for it. */
    if (items > scan->left) {
        scan->error = "container larger than the input";
        return;
    }

    if (items == 0) {
        proven_cbor_scan_item(scan);
        return;
    }

    proven_cbor_scan_push(scan, items);
}


static void
proven_cbor_scan_u8(void *ctx, uint8_t v)
{
    (void) v;
    proven_cbor_scan_item(ctx);
}


static void
proven_cbor_scan_u16(void *ctx, uint16_t v)
{
    (void) v;
    proven_cbor_scan_item(ctx);
}


static void
proven_cbor_scan_u32(void *ctx, uint32_t v)
{
    (void) v;
    proven_cbor_scan_item(ctx);
}


static void
proven_cbor_scan_u64(void *ctx, uint64_t v)
{
    (void) v;
    proven_cbor_scan_item(ctx);
}


static void
proven_cbor_scan_string(void *ctx, cbor_data data, size_t len)
{
    (void) data;
    (void) len;
    proven_cbor_scan_item(ctx);
}


static void
proven_cbor_scan_simple(void *ctx)
{
    proven_cbor_scan_item(ctx);
}


static void
proven_cbor_scan_float(void *ctx, float v)
{
    (void) v;
    proven_cbor_scan_item(ctx);
}


static void
proven_cbor_scan_double(void *ctx, double v)
{
    (void) v;
    proven_cbor_scan_item(ctx);
}


static void
proven_cbor_scan_bool(void *ctx, bool v)
{
    (void) v;
    proven_cbor_scan_item(ctx);
}


static void
proven_cbor_scan_indefinite(void *ctx)
{
    proven_cbor_scan_push(ctx, PROVEN_CBOR_INDEFINITE);
}


static void
proven_cbor_scan_array(void *ctx, size_t size)
{
    proven_cbor_scan_definite(ctx, size);
}


static void
proven_cbor_scan_map(void *ctx, size_t size)
{
    proven_cbor_scan_t  *scan = ctx;

    if (size > UINT64_MAX / 2) {
        scan->error = "container larger than the input";
        return;
    }

    proven_cbor_scan_definite(scan, (uint64_t) size * 2);
}


static void
proven_cbor_scan_tag(void *ctx, uint64_t tag)
{
    (void) tag;

    /* A tag wraps exactly one item and counts as a level. */
    proven_cbor_scan_push(ctx, 1);
}


static void
proven_cbor_scan_break(void *ctx)
{
    proven_cbor_scan_t  *scan = ctx;

    if (scan->depth == 0
        || scan->remaining[scan->depth - 1] != PROVEN_CBOR_INDEFINITE)
    {
        scan->error = "unexpected break";
        return;
    }

    scan->depth--;
    proven_cbor_scan_item(scan);
}


static const struct cbor_callbacks  proven_cbor_scan_callbacks = {
    .uint8 = proven_cbor_scan_u8,
    .uint16 = proven_cbor_scan_u16,
    .uint32 = proven_cbor_scan_u32,
    .uint64 = proven_cbor_scan_u64,
    .negint8 = proven_cbor_scan_u8,
    .negint16 = proven_cbor_scan_u16,
    .negint32 = proven_cbor_scan_u32,
    .negint64 = proven_cbor_scan_u64,
    .byte_string_start = proven_cbor_scan_indefinite,
    .byte_string = proven_cbor_scan_string,
    .string = proven_cbor_scan_string,
    .string_start = proven_cbor_scan_indefinite,
    .indef_array_start = proven_cbor_scan_indefinite,
    .array_start = proven_cbor_scan_array,
    .indef_map_start = proven_cbor_scan_indefinite,
    .map_start = proven_cbor_scan_map,
    .tag = proven_cbor_scan_tag,
    .float2 = proven_cbor_scan_float,
    .float4 = proven_cbor_scan_float,
    .float8 = proven_cbor_scan_double,
    .undefined = proven_cbor_scan_simple,
    .null = proven_cbor_scan_simple,
    .boolean = proven_cbor_scan_bool,
    .indef_break = proven_cbor_scan_break,
};


cbor_item_t *
proven_cbor_load(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    return proven_cbor_load_first(buf, len, NULL, err, errlen);
}


cbor_item_t *
proven_cbor_load_first(const uint8_t *buf, size_t len, size_t *used,
    char *err, size_t errlen)
{
    size_t                      offset;
    cbor_item_t                *item;
    proven_cbor_scan_t          scan;
    struct cbor_load_result     loaded;
    struct cbor_decoder_result  res;

    if (buf == NULL || len == 0) {
        if (err) {
            snprintf(err, errlen, "empty CBOR");
        }
        return NULL;
    }

    memset(&scan, 0, sizeof(scan));
    offset = 0;

    while (!scan.done) {
        if (offset == len) {
            goto truncated;
        }

        /* The callback learns how much input follows the header only
         * after decoding; "left" counts the header too, a harmless
         * overestimate of one to nine bytes. */
        scan.left = len - offset;

        res = cbor_stream_decode(buf + offset, len - offset,
                                 &proven_cbor_scan_callbacks, &scan);

        if (res.status == CBOR_DECODER_NEDATA) {
            goto truncated;
        }

        if (res.status != CBOR_DECODER_FINISHED || res.read == 0) {
            if (err) {
                snprintf(err, errlen, "malformed CBOR at byte %zu", offset);
            }
            return NULL;
        }

        if (scan.error != NULL) {
            if (err) {
                snprintf(err, errlen, "bad CBOR at byte %zu: %s", offset,
                         scan.error);
            }
            return NULL;
        }

        offset += res.read;
    }

    if (offset != len && used == NULL) {
        if (err) {
            snprintf(err, errlen, "%zu trailing bytes after CBOR item",
                     len - offset);
        }
        return NULL;
    }

    item = cbor_load(buf, offset, &loaded);

    if (item == NULL || loaded.read != offset) {
        if (item != NULL) {
            cbor_decref(&item);
        }

        if (err) {
            snprintf(err, errlen, "%s CBOR at byte %zu",
                     loaded.error.code == CBOR_ERR_MEMERROR
                     ? "out of memory decoding" : "malformed",
                     loaded.error.position);
        }
        return NULL;
    }

    if (used != NULL) {
        *used = offset;
    }
    return item;

truncated:

    if (err) {
        snprintf(err, errlen, "truncated CBOR (%zu bytes)", len);
    }
    return NULL;
}


int
proven_cbor_dump(const cbor_item_t *item, uint8_t **out, size_t *outlen)
{
    size_t          len, size;
    unsigned char  *buf, small[PROVEN_CBOR_DUMP_SMALL];

    /*
     * Most items are small: one pass into the stack and one exact
     * allocation.  libcbor's own growth starts at 32 bytes and serializes
     * the whole item again at every doubling.  libcbor 0.8 takes a
     * non-const item although it only reads it.
     */
    len = cbor_serialize((cbor_item_t *) item, small, sizeof(small));
    if (len > 0) {
        buf = malloc(len);
        if (buf == NULL) {
            return PROVEN_ERR;
        }
        memcpy(buf, small, len);
        *out = buf;
        *outlen = len;
        return PROVEN_OK;
    }

    buf = NULL;
    size = 0;

    len = cbor_serialize_alloc((cbor_item_t *) item, &buf, &size);
    if (len == 0) {
        free(buf);
        return PROVEN_ERR;
    }

    *out = buf;
    *outlen = len;
    return PROVEN_OK;
}


static int
proven_cbor_text_equals(const cbor_item_t *item, const char *key,
    size_t keylen)
{
    size_t        i, n, off, clen;
    cbor_item_t **chunks;

    if (!cbor_isa_string(item)) {
        return 0;
    }

    if (cbor_string_is_definite(item)) {
        /* an empty string may have no buffer at all */
        return cbor_string_length(item) == keylen
               && (keylen == 0
                   || memcmp(cbor_string_handle(item), key, keylen) == 0);
    }

    chunks = cbor_string_chunks_handle(item);
    n = cbor_string_chunk_count(item);
    off = 0;

    for (i = 0; i < n; i++) {
        clen = cbor_string_length(chunks[i]);
        if (clen > keylen - off
            || (clen > 0
                && memcmp(cbor_string_handle(chunks[i]), key + off, clen)
                   != 0))
        {
            return 0;
        }
        off += clen;
    }

    return off == keylen;
}


cbor_item_t *
proven_cbor_map_get(const cbor_item_t *map, const char *key)
{
    size_t             i, n, keylen;
    struct cbor_pair  *pairs;

    if (map == NULL || !cbor_isa_map(map)) {
        return NULL;
    }

    keylen = strlen(key);
    pairs = cbor_map_handle(map);
    n = cbor_map_size(map);

    for (i = 0; i < n; i++) {
        if (proven_cbor_text_equals(pairs[i].key, key, keylen)) {
            return pairs[i].value;
        }
    }

    return NULL;
}


cbor_item_t *
proven_cbor_map_get_int(const cbor_item_t *map, int64_t key)
{
    size_t             i, n;
    uint64_t           v;
    struct cbor_pair  *pairs;

    if (map == NULL || !cbor_isa_map(map)) {
        return NULL;
    }

    pairs = cbor_map_handle(map);
    n = cbor_map_size(map);

    for (i = 0; i < n; i++) {
        if (cbor_isa_uint(pairs[i].key)) {
            if (key >= 0 && cbor_get_int(pairs[i].key) == (uint64_t) key) {
                return pairs[i].value;
            }

        } else if (cbor_isa_negint(pairs[i].key) && key < 0) {
            /* negint n encodes -1 - n */
            v = cbor_get_int(pairs[i].key);
            if (v == (uint64_t) (-(key + 1))) {
                return pairs[i].value;
            }
        }
    }

    return NULL;
}


/*
 * Byte and text strings share one layout in libcbor; is_text picks the
 * accessors.  The total is bounded by max before anything is allocated.
 */
static int
proven_cbor_string_copy(const cbor_item_t *item, int is_text, size_t max,
    uint8_t **out, size_t *len)
{
    size_t          i, n, total, clen;
    uint8_t        *buf;
    cbor_item_t   **chunks;

    *out = NULL;
    *len = 0;

    if (item == NULL
        || (is_text ? !cbor_isa_string(item) : !cbor_isa_bytestring(item)))
    {
        return PROVEN_ERR;
    }

    if (is_text ? cbor_string_is_definite(item)
                : cbor_bytestring_is_definite(item))
    {
        chunks = NULL;
        n = 0;
        total = is_text ? cbor_string_length(item)
                        : cbor_bytestring_length(item);

    } else {
        chunks = is_text ? cbor_string_chunks_handle(item)
                         : cbor_bytestring_chunks_handle(item);
        n = is_text ? cbor_string_chunk_count(item)
                    : cbor_bytestring_chunk_count(item);
        total = 0;

        for (i = 0; i < n; i++) {
            clen = is_text ? cbor_string_length(chunks[i])
                           : cbor_bytestring_length(chunks[i]);
            if (clen > max - total) {
                return PROVEN_ERR;
            }
            total += clen;
        }
    }

    if (total > max) {
        return PROVEN_ERR;
    }

    /* One more byte: a NUL for text, a non-NULL buffer when empty. */
    buf = malloc(total + 1);
    if (buf == NULL) {
        return PROVEN_ERR;
    }

    if (chunks == NULL) {
        if (total > 0) {
            memcpy(buf, is_text ? cbor_string_handle(item)
                                : cbor_bytestring_handle(item), total);
        }

    } else {
        total = 0;
        for (i = 0; i < n; i++) {
            clen = is_text ? cbor_string_length(chunks[i])
                           : cbor_bytestring_length(chunks[i]);
            if (clen > 0) {
                memcpy(buf + total, is_text ? cbor_string_handle(chunks[i])
                       : cbor_bytestring_handle(chunks[i]), clen);
            }
            total += clen;
        }
    }

    buf[total] = '\0';
    *out = buf;
    *len = total;
    return PROVEN_OK;
}


int
proven_cbor_bytes(const cbor_item_t *item, size_t max, uint8_t **out,
    size_t *len)
{
    return proven_cbor_string_copy(item, 0, max, out, len);
}


int
proven_cbor_text(const cbor_item_t *item, size_t max, char **out,
    size_t *len)
{
    return proven_cbor_string_copy(item, 1, max, (uint8_t **) out, len);
}


int
proven_cbor_fixed(const cbor_item_t *map, const char *key, uint8_t *out,
    size_t len)
{
    cbor_item_t  *v;

    v = map != NULL && cbor_isa_map(map) ? proven_cbor_map_get(map, key)
                                         : NULL;
    if (v == NULL || !cbor_isa_bytestring(v)
        || !cbor_bytestring_is_definite(v) || cbor_bytestring_length(v) != len)
    {
        return PROVEN_ERR;
    }
    memcpy(out, cbor_bytestring_handle(v), len);
    return PROVEN_OK;
}


int
proven_cbor_uint(const cbor_item_t *item, uint64_t *value)
{
    if (item == NULL || !cbor_isa_uint(item)) {
        return PROVEN_ERR;
    }

    *value = cbor_get_int(item);
    return PROVEN_OK;
}


int
proven_cbor_map_put(cbor_item_t *map, const char *key, cbor_item_t *value)
{
    int           rc;
    cbor_item_t  *k;

    rc = PROVEN_ERR;
    k = NULL;

    if (map == NULL || value == NULL || !cbor_isa_map(map)) {
        goto failed;
    }

    k = cbor_build_string(key);
    if (k == NULL) {
        goto failed;
    }

    if (!cbor_map_add(map, (struct cbor_pair) { .key = k, .value = value })) {
        goto failed;
    }

    rc = PROVEN_OK;

failed:

    /* cbor_map_add took its own references; ours go in every case. */
    if (k != NULL) {
        cbor_decref(&k);
    }

    if (value != NULL) {
        cbor_decref(&value);
    }

    return rc;
}


int
proven_cbor_is_null(const cbor_item_t *item)
{
    return item != NULL && cbor_isa_float_ctrl(item)
           && cbor_float_ctrl_is_ctrl(item)
           && cbor_ctrl_value(item) == CBOR_CTRL_NULL;
}


int
proven_cbor_is_bool(const cbor_item_t *item)
{
    return item != NULL && cbor_isa_float_ctrl(item)
           && cbor_float_ctrl_is_ctrl(item)
           && (cbor_ctrl_value(item) == CBOR_CTRL_TRUE
               || cbor_ctrl_value(item) == CBOR_CTRL_FALSE);
}


int
proven_cbor_text_into(const cbor_item_t *item, char *out, size_t size)
{
    size_t  len;

    if (item == NULL || !cbor_isa_string(item)
        || !cbor_string_is_definite(item))
    {
        return PROVEN_ERR;
    }

    len = cbor_string_length(item);
    if (len >= size || memchr(cbor_string_handle(item), '\0', len) != NULL) {
        return PROVEN_ERR;
    }

    memcpy(out, cbor_string_handle(item), len);
    out[len] = '\0';
    return PROVEN_OK;
}
