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




/* ---- the reader ---------------------------------------------------------- */

void
proven_frame_reader_init(proven_frame_reader_t *r, size_t max_body)
{
    memset(r, 0, sizeof(*r));
    r->max_body = (max_body == 0 || max_body > PROVEN_FRAME_MAX)
                  ? PROVEN_FRAME_MAX : max_body;
}


void
proven_frame_reader_free(proven_frame_reader_t *r)
{
    free(r->buf);
    r->buf = NULL;
    r->cap = 0;
    r->start = 0;
    r->end = 0;
    r->failed = 0;              /* ready for the next stream */
}


/* Makes at least want bytes free after end, or as many as the bound allows. */
static int
proven_frame_reader_reserve(proven_frame_reader_t *r, size_t want)
{
    size_t    cap, bound;
    uint8_t  *buf;

    /* a big frame's buffer is not kept once it has been popped */
    if (r->start == r->end) {
        r->start = 0;
        r->end = 0;

        if (r->cap > 4 * PROVEN_FRAME_READ_CHUNK) {
            free(r->buf);
            r->buf = NULL;
            r->cap = 0;
        }
    }

    if (r->cap - r->end >= want) {
        return PROVEN_OK;
    }

    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;

        if (r->cap - r->end >= want) {
            return PROVEN_OK;
        }
    }

    /* one whole frame of the largest size, and one more read */
    bound = PROVEN_FRAME_HEADER + r->max_body + PROVEN_FRAME_READ_CHUNK;

    cap = r->cap ? r->cap : PROVEN_FRAME_READ_CHUNK;
    while (cap - r->end < want && cap < bound) {
        cap *= 2;
    }

    if (cap > bound) {
        cap = bound;
    }

    if (cap <= r->cap) {
        return PROVEN_OK;               /* at the bound: what is free */
    }

    buf = realloc(r->buf, cap);
    if (buf == NULL) {
        return PROVEN_ERR;
    }

    r->buf = buf;
    r->cap = cap;
    return PROVEN_OK;
}


uint8_t *
proven_frame_reader_space(proven_frame_reader_t *r, size_t *avail)
{
    if (proven_frame_reader_reserve(r, PROVEN_FRAME_READ_CHUNK) != PROVEN_OK)
    {
        *avail = 0;
        return NULL;
    }

    *avail = r->cap - r->end;
    if (*avail > PROVEN_FRAME_READ_CHUNK) {
        *avail = PROVEN_FRAME_READ_CHUNK;
    }

    return r->buf + r->end;
}


void
proven_frame_reader_fill(proven_frame_reader_t *r, size_t n)
{
    /* never more than _space offered */
    r->end += n <= r->cap - r->end ? n : r->cap - r->end;
}


int
proven_frame_reader_feed(proven_frame_reader_t *r, const uint8_t *data,
    size_t len, char *err, size_t errlen)
{
    if (len > PROVEN_FRAME_HEADER + r->max_body + PROVEN_FRAME_READ_CHUNK) {
        proven_errf(err, errlen, "more than a frame of input unread");
        return PROVEN_ERR;
    }

    if (proven_frame_reader_reserve(r, len) != PROVEN_OK) {
        proven_errf(err, errlen, "out of memory");
        return PROVEN_ERR;
    }

    if (r->cap - r->end < len) {
        proven_errf(err, errlen, "more than a frame of input unread");
        return PROVEN_ERR;
    }

    memcpy(r->buf + r->end, data, len);
    r->end += len;
    return PROVEN_OK;
}


int
proven_frame_reader_next(proven_frame_reader_t *r, const uint8_t **body,
    size_t *len, char *err, size_t errlen)
{
    uint32_t  n;

    if (r->failed) {
        proven_errf(err, errlen, "the stream lost its framing");
        return PROVEN_ERR;
    }

    if (r->end - r->start < PROVEN_FRAME_HEADER) {
        return PROVEN_AGAIN;
    }

    if (proven_frame_length(r->buf + r->start, &n, err, errlen) != PROVEN_OK)
    {
        r->failed = 1;
        return PROVEN_ERR;
    }

    if (n > r->max_body) {
        proven_errf(err, errlen, "frame of %u bytes is over the limit of %zu",
                    n, r->max_body);
        r->failed = 1;
        return PROVEN_ERR;
    }

    if (r->end - r->start - PROVEN_FRAME_HEADER < n) {
        return PROVEN_AGAIN;
    }

    *body = r->buf + r->start + PROVEN_FRAME_HEADER;
    *len = n;
    r->start += PROVEN_FRAME_HEADER + n;
    return PROVEN_OK;
}


/* ---- the builder --------------------------------------------------------- */

void
proven_frame_builder_init(proven_frame_builder_t *b, size_t hint,
    size_t max_body)
{
    memset(b, 0, sizeof(*b));
    b->max_body = (max_body == 0 || max_body > PROVEN_FRAME_MAX)
                  ? PROVEN_FRAME_MAX : max_body;

    b->cap = PROVEN_FRAME_HEADER + (hint < 64 ? 64 : hint);
    b->buf = malloc(b->cap);
    if (b->buf == NULL) {
        b->failed = 1;
        b->cap = 0;
        return;
    }

    b->len = PROVEN_FRAME_HEADER;
}


void
proven_frame_builder_free(proven_frame_builder_t *b)
{
    free(b->buf);
    b->buf = NULL;
    b->cap = 0;
    b->len = 0;
}


/* Room for n more bytes; NULL (and failed) past the bound or memory. */
static uint8_t *
proven_frame_builder_room(proven_frame_builder_t *b, size_t n)
{
    size_t    cap;
    uint8_t  *buf;

    if (b->failed) {
        return NULL;
    }

    if (n > b->max_body || b->len - PROVEN_FRAME_HEADER > b->max_body - n) {
        b->failed = 1;
        return NULL;
    }

    if (b->cap - b->len < n) {
        cap = b->cap * 2;
        if (cap < b->len + n) {
            cap = b->len + n;
        }

        buf = realloc(b->buf, cap);
        if (buf == NULL) {
            b->failed = 1;
            return NULL;
        }

        b->buf = buf;
        b->cap = cap;
    }

    return b->buf + b->len;
}


void
proven_frame_put_head(proven_frame_builder_t *b, int major, uint64_t arg)
{
    uint8_t  *p;

    p = proven_frame_builder_room(b, 9);
    if (p != NULL) {
        b->len += (size_t) (proven_cbor_put_head(p, major, arg) - p);
    }
}


void
proven_frame_put_uint(proven_frame_builder_t *b, uint64_t value)
{
    proven_frame_put_head(b, PROVEN_CBOR_UINT, value);
}


void
proven_frame_put_string(proven_frame_builder_t *b, int major, const void *s,
    size_t len)
{
    uint8_t  *p;

    if (len > PROVEN_FRAME_MAX) {
        b->failed = 1;
        return;
    }

    p = proven_frame_builder_room(b, 9 + len);
    if (p != NULL) {
        b->len += (size_t) (proven_cbor_put_string(p, major, s, len) - p);
    }
}


void
proven_frame_put_text(proven_frame_builder_t *b, const char *text)
{
    proven_frame_put_string(b, PROVEN_CBOR_TEXT, text, strlen(text));
}


void
proven_frame_put_raw(proven_frame_builder_t *b, const void *cbor, size_t len)
{
    uint8_t  *p;

    p = proven_frame_builder_room(b, len);
    if (p != NULL && len > 0) {
        memcpy(p, cbor, len);
        b->len += len;
    }
}


void
proven_frame_put_bool(proven_frame_builder_t *b, int value)
{
    proven_frame_put_raw(b, value ? "\xf5" : "\xf4", 1);
}


void
proven_frame_put_null(proven_frame_builder_t *b)
{
    proven_frame_put_raw(b, "\xf6", 1);
}


void
proven_frame_put_ok(proven_frame_builder_t *b, uint64_t id)
{
    proven_frame_put_head(b, PROVEN_CBOR_MAP, 3);
    proven_frame_put_text(b, "id");
    proven_frame_put_uint(b, id);
    proven_frame_put_text(b, "ok");
    proven_frame_put_bool(b, 1);
    proven_frame_put_text(b, "result");
}


int
proven_frame_builder_finish(proven_frame_builder_t *b, uint8_t **frame,
    size_t *len)
{
    if (b->failed || b->len == PROVEN_FRAME_HEADER) {
        proven_frame_builder_free(b);
        return PROVEN_ERR;
    }

    proven_frame_put_length(b->buf, (uint32_t) (b->len - PROVEN_FRAME_HEADER));

    *frame = b->buf;
    *len = b->len;

    b->buf = NULL;
    b->cap = 0;
    b->len = 0;
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
