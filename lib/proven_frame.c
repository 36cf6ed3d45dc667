/* Length-prefixed CBOR frames between our processes (DESIGN "Wire format"). */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proven.h"


#define PROVEN_FRAME_SMALL  2048    /* serialized on the stack first */


int
proven_frame_length(const uint8_t header[PROVEN_FRAME_HEADER],
    uint32_t *len, char *err, size_t errlen)
{
    uint32_t  n;

    n = (uint32_t) header[0] << 24 | (uint32_t) header[1] << 16
        | (uint32_t) header[2] << 8 | header[3];

    if (n == 0 || n > PROVEN_FRAME_MAX) {
        if (err) {
            snprintf(err, errlen, "bad frame length %u (1..%u)", n,
                     PROVEN_FRAME_MAX);
        }
        return PROVEN_ERR;
    }

    *len = n;
    return PROVEN_OK;
}


void
proven_frame_put_length(uint8_t header[PROVEN_FRAME_HEADER], uint32_t len)
{
    header[0] = (uint8_t) (len >> 24);
    header[1] = (uint8_t) (len >> 16);
    header[2] = (uint8_t) (len >> 8);
    header[3] = (uint8_t) len;
}


int
proven_frame_encode(const cbor_item_t *item, uint8_t **out, size_t *outlen,
    char *err, size_t errlen)
{
    size_t    len, size;
    uint8_t  *body, *frame, small[PROVEN_FRAME_SMALL];

    /* A small frame: one pass into the stack, one exact allocation. */
    len = cbor_serialize((cbor_item_t *) item, small, sizeof(small));
    if (len > 0) {
        frame = malloc(len + PROVEN_FRAME_HEADER);
        if (frame == NULL) {
            if (err) {
                snprintf(err, errlen, "out of memory");
            }
            return PROVEN_ERR;
        }

        proven_frame_put_length(frame, (uint32_t) len);
        memcpy(frame + PROVEN_FRAME_HEADER, small, len);

        *out = frame;
        *outlen = len + PROVEN_FRAME_HEADER;
        return PROVEN_OK;
    }

    /* Larger than the stack buffer: proven_cbor_dump() would try it again. */
    body = NULL;
    size = 0;
    len = cbor_serialize_alloc((cbor_item_t *) item, &body, &size);
    if (len == 0) {
        free(body);
        if (err) {
            snprintf(err, errlen, "cannot serialize frame");
        }
        return PROVEN_ERR;
    }

    if (len > PROVEN_FRAME_MAX) {
        free(body);
        if (err) {
            snprintf(err, errlen, "frame of %zu bytes is too large", len);
        }
        return PROVEN_ERR;
    }

    frame = realloc(body, len + PROVEN_FRAME_HEADER);
    if (frame == NULL) {
        free(body);
        if (err) {
            snprintf(err, errlen, "out of memory");
        }
        return PROVEN_ERR;
    }

    memmove(frame + PROVEN_FRAME_HEADER, frame, len);
    proven_frame_put_length(frame, (uint32_t) len);

    *out = frame;
    *outlen = len + PROVEN_FRAME_HEADER;
    return PROVEN_OK;
}




/* The narrowest encoding, so small ids take one byte on the wire. */
static cbor_item_t *
proven_frame_build_uint(uint64_t v)
{
    if (v <= UINT8_MAX) {
        return cbor_build_uint8((uint8_t) v);
    }

    if (v <= UINT16_MAX) {
        return cbor_build_uint16((uint16_t) v);
    }

    if (v <= UINT32_MAX) {
        return cbor_build_uint32((uint32_t) v);
    }

    return cbor_build_uint64(v);
}


int
proven_request_decode(const uint8_t *body, size_t len,
    proven_request_t *req, char *err, size_t errlen)
{
    char         *op;
    size_t        oplen;
    cbor_item_t  *map, *item;

    memset(req, 0, sizeof(*req));
    op = NULL;

    map = proven_cbor_load(body, len, err, errlen);
    if (map == NULL) {
        return PROVEN_ERR;
    }

    if (!cbor_isa_map(map)) {
        if (err) {
            snprintf(err, errlen, "request is not a map");
        }
        goto failed;
    }

    if (proven_cbor_uint(proven_cbor_map_get(map, "id"), &req->id)
        != PROVEN_OK)
    {
        if (err) {
            snprintf(err, errlen, "request \"id\" is missing or not an "
                     "unsigned integer");
        }
        goto failed;
    }

    req->has_id = 1;

    item = proven_cbor_map_get(map, "op");
    if (item == NULL || !cbor_isa_string(item)) {
        if (err) {
            snprintf(err, errlen, "request \"op\" is missing or not text");
        }
        goto failed;
    }

    if (proven_cbor_text(item, PROVEN_OP_MAX - 1, &op, &oplen) != PROVEN_OK
        || oplen == 0 || memchr(op, '\0', oplen) != NULL)
    {
        if (err) {
            snprintf(err, errlen, "request \"op\" is empty, longer than %d "
                     "bytes or holds a NUL", PROVEN_OP_MAX - 1);
        }
        goto failed;
    }

    memcpy(req->op, op, oplen + 1);
    free(op);

    req->map = map;
    return PROVEN_OK;

failed:

    free(op);
    cbor_decref(&map);
    return PROVEN_ERR;
}


void
proven_request_free(proven_request_t *req)
{
    if (req->map != NULL) {
        cbor_decref(&req->map);
    }
}


/* Copies text into a fixed buffer; longer text is an error or truncated. */
static int
proven_frame_text(const cbor_item_t *item, char *buf, size_t size,
    int truncate)
{
    char    *text;
    size_t   len;

    if (proven_cbor_text(item, truncate ? PROVEN_FRAME_MAX : size - 1,
                         &text, &len) != PROVEN_OK)
    {
        return PROVEN_ERR;
    }

    if (len > size - 1) {
        len = size - 1;
    }

    memcpy(buf, text, len);
    buf[len] = '\0';
    free(text);
    return PROVEN_OK;
}


int
proven_response_decode(const uint8_t *body, size_t len,
    proven_response_t *res, char *err, size_t errlen)
{
    cbor_item_t  *map, *ok, *error;

    memset(res, 0, sizeof(*res));

    map = proven_cbor_load(body, len, err, errlen);
    if (map == NULL) {
        return PROVEN_ERR;
    }

    if (!cbor_isa_map(map)) {
        if (err) {
            snprintf(err, errlen, "response is not a map");
        }
        goto failed;
    }

    if (proven_cbor_uint(proven_cbor_map_get(map, "id"), &res->id)
        != PROVEN_OK)
    {
        if (err) {
            snprintf(err, errlen, "response \"id\" is missing or not an "
                     "unsigned integer");
        }
        goto failed;
    }

    ok = proven_cbor_map_get(map, "ok");
    if (!proven_cbor_is_bool(ok)) {
        if (err) {
            snprintf(err, errlen, "response \"ok\" is missing or not a "
                     "boolean");
        }
        goto failed;
    }

    res->ok = cbor_ctrl_value(ok) == CBOR_CTRL_TRUE;

    if (res->ok) {
        /* An absent result reads as null. */
        res->result = proven_cbor_map_get(map, "result");
        res->map = map;
        return PROVEN_OK;
    }

    error = proven_cbor_map_get(map, "error");
    if (error == NULL || !cbor_isa_map(error)) {
        if (err) {
            snprintf(err, errlen, "error response without an \"error\" map");
        }
        goto failed;
    }

    if (proven_frame_text(proven_cbor_map_get(error, "code"), res->code,
                          sizeof(res->code), 0) != PROVEN_OK)
    {
        if (err) {
            snprintf(err, errlen, "error \"code\" is missing, not text or "
                     "longer than %zu bytes", sizeof(res->code) - 1);
        }
        goto failed;
    }

    if (proven_frame_text(proven_cbor_map_get(error, "message"),
                          res->message, sizeof(res->message), 1)
        != PROVEN_OK)
    {
        if (err) {
            snprintf(err, errlen, "error \"message\" is missing or not "
                     "text");
        }
        goto failed;
    }

    res->map = map;
    return PROVEN_OK;

failed:

    cbor_decref(&map);
    res->result = NULL;
    return PROVEN_ERR;
}


void
proven_response_free(proven_response_t *res)
{
    if (res->map != NULL) {
        cbor_decref(&res->map);
    }

    res->result = NULL;
}


static int
proven_response_encode(uint64_t id, int ok, cbor_item_t *value,
    uint8_t **out, size_t *outlen)
{
    int           rc;
    cbor_item_t  *map;

    rc = PROVEN_ERR;

    map = cbor_new_definite_map(3);
    if (map == NULL) {
        goto failed;
    }

    if (proven_cbor_map_put(map, "id", proven_frame_build_uint(id))
        != PROVEN_OK
        || proven_cbor_map_put(map, "ok", cbor_build_bool(ok)) != PROVEN_OK
        || proven_cbor_map_put(map, ok ? "result" : "error",
                               value ? cbor_incref(value) : cbor_new_null())
           != PROVEN_OK)
    {
        goto failed;
    }

    rc = proven_frame_encode(map, out, outlen, NULL, 0);

failed:

    if (map != NULL) {
        cbor_decref(&map);
    }

    return rc;
}


int
proven_response_encode_ok(uint64_t id, cbor_item_t *result, uint8_t **out,
    size_t *outlen)
{
    return proven_response_encode(id, 1, result, out, outlen);
}


int
proven_response_encode_error(uint64_t id, const char *code,
    const char *message, uint8_t **out, size_t *outlen)
{
    int           rc;
    cbor_item_t  *error;

    rc = PROVEN_ERR;

    error = cbor_new_definite_map(2);
    if (error == NULL) {
        return PROVEN_ERR;
    }

    if (proven_cbor_map_put(error, "code", cbor_build_string(code))
        != PROVEN_OK
        || proven_cbor_map_put(error, "message", cbor_build_string(message))
           != PROVEN_OK)
    {
        goto failed;
    }

    rc = proven_response_encode(id, 0, error, out, outlen);

failed:

    cbor_decref(&error);
    return rc;
}


cbor_item_t *
proven_request_new(uint64_t id, const char *op)
{
    cbor_item_t  *map;

    /* Indefinite, so that callers can add any number of arguments. */
    map = cbor_new_indefinite_map();
    if (map == NULL) {
        return NULL;
    }

    if (proven_cbor_map_put(map, "id", proven_frame_build_uint(id))
        != PROVEN_OK
        || proven_cbor_map_put(map, "op", cbor_build_string(op))
           != PROVEN_OK)
    {
        cbor_decref(&map);
        return NULL;
    }

    return map;
}
