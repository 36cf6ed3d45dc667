/* CBOR helpers and encodings: bounds a hostile peer could hit. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proven.h"


static cbor_item_t *
load(const uint8_t *buf, size_t len, char *err)
{
    return proven_cbor_load(buf, len, err, PROVEN_ERR_LEN);
}


static void
test_depth_bound(void **state)
{
    uint8_t       buf[64];
    size_t        i;
    cbor_item_t  *item;
    char          err[PROVEN_ERR_LEN];

    (void) state;

    /* PROVEN_CBOR_MAX_DEPTH arrays of one element around a 0 */
    for (i = 0; i < PROVEN_CBOR_MAX_DEPTH; i++) {
        buf[i] = 0x81;
    }
    buf[i] = 0x00;

    item = load(buf, PROVEN_CBOR_MAX_DEPTH + 1, err);
    assert_non_null(item);
    cbor_decref(&item);

    /* one more level is refused */
    for (i = 0; i <= PROVEN_CBOR_MAX_DEPTH; i++) {
        buf[i] = 0x81;
    }
    buf[i] = 0x00;

    assert_null(load(buf, PROVEN_CBOR_MAX_DEPTH + 2, err));
    assert_non_null(strstr(err, "deep"));

    /* indefinite arrays and maps, and tags, count as levels too */
    for (i = 0; i <= PROVEN_CBOR_MAX_DEPTH; i++) {
        buf[i] = (i % 3 == 0) ? 0x9f : (i % 3 == 1) ? 0xc1 : 0x81;
    }
    buf[i] = 0x00;
    assert_null(load(buf, PROVEN_CBOR_MAX_DEPTH + 2, err));
    assert_non_null(strstr(err, "deep"));

    /* a very deep input fails fast and without recursion */
    {
        uint8_t  deep[100000];

        memset(deep, 0x9f, sizeof(deep));
        assert_null(load(deep, sizeof(deep), err));
    }
}


static void
test_trailing_and_truncated(void **state)
{
    cbor_item_t     *item;
    char             err[PROVEN_ERR_LEN];
    static const uint8_t  two[] = { 0x01, 0x02 };
    static const uint8_t  short_array[] = { 0x82, 0x01 };
    static const uint8_t  short_bytes[] = { 0x45, 0x01, 0x02 };
    static const uint8_t  lone_break[] = { 0xff };
    static const uint8_t  bad_break[] = { 0x82, 0x01, 0xff };
    static const uint8_t  open_indef[] = { 0x9f, 0x01, 0x02 };
    static const uint8_t  huge_array[] = {
        0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
    };
    static const uint8_t  huge_map[] = {
        0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
    };
    static const uint8_t  huge_bytes[] = {
        0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00
    };
    static const uint8_t  reserved[] = { 0x1c };
    static const uint8_t  indef_int_chunk[] = { 0x5f, 0x01, 0xff };

    (void) state;

    assert_null(load(two, sizeof(two), err));
    assert_non_null(strstr(err, "trailing"));

    assert_null(load(short_array, sizeof(short_array), err));
    assert_non_null(strstr(err, "truncated"));
    assert_null(load(short_bytes, sizeof(short_bytes), err));
    assert_null(load(lone_break, sizeof(lone_break), err));
    assert_null(load(bad_break, sizeof(bad_break), err));
    assert_null(load(open_indef, sizeof(open_indef), err));
    assert_null(load(huge_array, sizeof(huge_array), err));
    assert_null(load(huge_map, sizeof(huge_map), err));
    assert_null(load(huge_bytes, sizeof(huge_bytes), err));
    assert_null(load(reserved, sizeof(reserved), err));
    assert_null(load(indef_int_chunk, sizeof(indef_int_chunk), err));
    assert_null(load(two, 0, err));
    assert_null(proven_cbor_load(NULL, 0, NULL, 0));

    item = load(two, 1, err);
    assert_non_null(item);
    cbor_decref(&item);
}


static void
test_indefinite_strings(void **state)
{
    char         *text;
    size_t        len;
    uint8_t      *bytes;
    cbor_item_t  *item;
    char          err[PROVEN_ERR_LEN];
    /* (_ h'6162', h'', h'63') */
    static const uint8_t  chunked[] = {
        0x5f, 0x42, 'a', 'b', 0x40, 0x41, 'c', 0xff
    };
    /* (_ "he", "llo") */
    static const uint8_t  chunked_text[] = {
        0x7f, 0x62, 'h', 'e', 0x63, 'l', 'l', 'o', 0xff
    };
    static const uint8_t  empty[] = { 0x40 };
    static const uint8_t  empty_indef[] = { 0x5f, 0xff };

    (void) state;

    item = load(chunked, sizeof(chunked), err);
    assert_non_null(item);
    assert_int_equal(proven_cbor_bytes(item, 3, &bytes, &len), PROVEN_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(bytes, "abc", 3);
    free(bytes);
    assert_int_equal(proven_cbor_bytes(item, 2, &bytes, &len), PROVEN_ERR);
    assert_int_equal(proven_cbor_text(item, 10, &text, &len), PROVEN_ERR);
    cbor_decref(&item);

    item = load(chunked_text, sizeof(chunked_text), err);
    assert_non_null(item);
    assert_int_equal(proven_cbor_text(item, 5, &text, &len), PROVEN_OK);
    assert_int_equal(len, 5);
    assert_string_equal(text, "hello");
    free(text);
    assert_int_equal(proven_cbor_text(item, 4, &text, &len), PROVEN_ERR);
    cbor_decref(&item);

    item = load(empty, sizeof(empty), err);
    assert_non_null(item);
    assert_int_equal(proven_cbor_bytes(item, 0, &bytes, &len), PROVEN_OK);
    assert_non_null(bytes);
    assert_int_equal(len, 0);
    free(bytes);
    cbor_decref(&item);

    item = load(empty_indef, sizeof(empty_indef), err);
    assert_non_null(item);
    assert_int_equal(proven_cbor_bytes(item, 0, &bytes, &len), PROVEN_OK);
    assert_non_null(bytes);
    assert_int_equal(len, 0);
    free(bytes);
    cbor_decref(&item);
}


static void
test_map_helpers(void **state)
{
    size_t        len;
    uint8_t      *out;
    uint64_t      v;
    cbor_item_t  *item, *map, *again;
    char          err[PROVEN_ERR_LEN];
    /* {_ (_ "i", "d"): 2^40, 1: -35, -35: 7, "u16": 300} */
    static const uint8_t  buf[] = {
        0xbf,
        0x7f, 0x61, 'i', 0x61, 'd', 0xff,
        0x1b, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x38, 0x22,
        0x38, 0x22, 0x07,
        0x63, 'u', '1', '6', 0x19, 0x01, 0x2c,
        0xff
    };

    (void) state;

    item = load(buf, sizeof(buf), err);
    assert_non_null(item);

    assert_int_equal(proven_cbor_uint(proven_cbor_map_get(item, "id"), &v),
                     PROVEN_OK);
    assert_true(v == (uint64_t) 1 << 40);
    assert_int_equal(proven_cbor_uint(proven_cbor_map_get(item, "u16"), &v),
                     PROVEN_OK);
    assert_int_equal(v, 300);
    assert_null(proven_cbor_map_get(item, "i"));
    assert_null(proven_cbor_map_get(item, "idx"));

    assert_true(cbor_isa_negint(proven_cbor_map_get_int(item, 1)));
    assert_int_equal(proven_cbor_uint(proven_cbor_map_get_int(item, -35),
                                      &v), PROVEN_OK);
    assert_int_equal(v, 7);
    assert_null(proven_cbor_map_get_int(item, 35));
    assert_null(proven_cbor_map_get_int(item, -1));
    assert_int_equal(proven_cbor_uint(proven_cbor_map_get_int(item, 1), &v),
                     PROVEN_ERR);
    assert_null(proven_cbor_map_get(proven_cbor_map_get_int(item, 1), "x"));

    /* map_put and dump round trip */
    map = cbor_new_indefinite_map();
    assert_int_equal(proven_cbor_map_put(map, "k", cbor_build_uint8(9)),
                     PROVEN_OK);
    assert_int_equal(proven_cbor_map_put(map, "k2", NULL), PROVEN_ERR);
    assert_int_equal(proven_cbor_dump(map, &out, &len), PROVEN_OK);
    again = load(out, len, err);
    assert_non_null(again);
    assert_int_equal(proven_cbor_uint(proven_cbor_map_get(again, "k"), &v),
                     PROVEN_OK);
    assert_int_equal(v, 9);
    free(out);
    cbor_decref(&again);
    cbor_decref(&map);

    cbor_decref(&item);
}


static void
test_hex(void **state)
{
    size_t   len;
    uint8_t  out[8];
    char     hex[17];

    (void) state;

    assert_int_equal(proven_hex_decode("00fFa9", 6, out, sizeof(out), &len),
                     PROVEN_OK);
    assert_int_equal(len, 3);
    assert_int_equal(out[1], 0xff);
    proven_hex_encode(out, len, hex);
    assert_string_equal(hex, "00ffa9");

    assert_int_equal(proven_hex_decode("abc", 3, out, sizeof(out), &len),
                     PROVEN_ERR);
    assert_int_equal(proven_hex_decode("zz", 2, out, sizeof(out), &len),
                     PROVEN_ERR);
    assert_int_equal(proven_hex_decode("000102030405060708", 18, out,
                                       sizeof(out), &len), PROVEN_ERR);
    assert_int_equal(proven_hex_decode("", 0, out, sizeof(out), &len),
                     PROVEN_OK);
    assert_int_equal(len, 0);
}


static void
test_base64url(void **state)
{
    size_t   len;
    uint8_t  out[16];

    (void) state;

    /* 0xfb 0xff 0xbf: "-_-_" in base64url, "+/+/" in base64 */
    assert_int_equal(proven_base64url_decode("-_-_", 4, out, sizeof(out),
                                             &len), PROVEN_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(out, "\xfb\xff\xbf", 3);

    assert_int_equal(proven_base64url_decode("aGk", 3, out, sizeof(out),
                                             &len), PROVEN_OK);
    assert_int_equal(len, 2);
    assert_memory_equal(out, "hi", 2);

    assert_int_equal(proven_base64url_decode("aGk=", 4, out, sizeof(out),
                                             &len), PROVEN_OK);
    assert_int_equal(len, 2);

    assert_int_equal(proven_base64url_decode("aA", 2, out, sizeof(out),
                                             &len), PROVEN_OK);
    assert_int_equal(len, 1);
    assert_int_equal(out[0], 'h');

    assert_int_equal(proven_base64url_decode("", 0, out, sizeof(out), &len),
                     PROVEN_OK);
    assert_int_equal(len, 0);

    assert_int_equal(proven_base64url_decode("+/+/", 4, out, sizeof(out),
                                             &len), PROVEN_ERR);
    assert_int_equal(proven_base64url_decode("a", 1, out, sizeof(out),
                                             &len), PROVEN_ERR);
    assert_int_equal(proven_base64url_decode("aG k", 4, out, sizeof(out),
                                             &len), PROVEN_ERR);
    assert_int_equal(proven_base64url_decode("aGVsbG8", 7, out, 4, &len),
                     PROVEN_ERR);
}


/* Heads written shortest and read back, by us and by libcbor. */
static void
test_span_heads(void **state)
{
    int                 major;
    char                err[PROVEN_ERR_LEN];
    size_t              i, len;
    uint8_t             buf[16], *end;
    uint64_t            v, got;
    cbor_item_t        *item;
    proven_cbor_span_t  r;

    static const uint64_t  values[] = {
        0, 23, 24, 255, 256, 65535, 65536, 0xffffffffULL, 0x100000000ULL,
        UINT64_MAX
    };
    static const size_t    sizes[] = { 1, 1, 2, 2, 3, 3, 5, 5, 9, 9 };

    (void) state;

    for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        v = values[i];
        end = proven_cbor_put_head(buf, PROVEN_CBOR_UINT, v);
        assert_int_equal((size_t) (end - buf), sizes[i]);

        r.p = buf;
        r.end = end;
        assert_int_equal(proven_cbor_span_head(&r, &major, &got), PROVEN_OK);
        assert_int_equal(major, PROVEN_CBOR_UINT);
        assert_true(got == v);
        assert_ptr_equal(r.p, end);

        item = load(buf, (size_t) (end - buf), err);
        assert_non_null(item);
        assert_int_equal(proven_cbor_uint(item, &got), PROVEN_OK);
        assert_true(got == v);
        cbor_decref(&item);

        /* one byte short: refused, never read past the end */
        r.p = buf;
        r.end = end - 1;
        if (sizes[i] > 1) {
            assert_int_equal(proven_cbor_span_head(&r, &major, &got),
                             PROVEN_ERR);
        }
    }

    /* a string and its bytes in place */
    end = proven_cbor_put_string(buf, PROVEN_CBOR_TEXT, "key", 3);
    r.p = buf;
    r.end = end;
    {
        const uint8_t  *s;

        assert_int_equal(proven_cbor_span_string(&r, PROVEN_CBOR_TEXT, &s,
                                                 &len), PROVEN_OK);
        assert_int_equal(len, 3);
        assert_memory_equal(s, "key", 3);

        /* the wrong kind, or a length past the end */
        r.p = buf;
        assert_int_equal(proven_cbor_span_string(&r, PROVEN_CBOR_BYTES, &s,
                                                 &len), PROVEN_ERR);
        r.p = buf;
        r.end = end - 1;
        assert_int_equal(proven_cbor_span_string(&r, PROVEN_CBOR_TEXT, &s,
                                                 &len), PROVEN_ERR);
    }
}


/* What the reader refuses, so that the general decoder takes it. */
static void
test_span_refusals(void **state)
{
    int                 major;
    size_t              i;
    uint64_t            v;
    proven_cbor_span_t  r;

    static const struct {
        uint8_t  bytes[8];
        size_t   len;
    } refused[] = {
        { { 0x5f, 0x41, 0x61, 0xff }, 4 },      /* indefinite bytes */
        { { 0x7f, 0x61, 0x61, 0xff }, 4 },      /* indefinite text */
        { { 0x9f, 0xff }, 2 },                  /* indefinite array */
        { { 0x1c }, 1 },                        /* reserved */
        { { 0xf9, 0x3c, 0x00 }, 3 },            /* a half float */
        { { 0xf0 }, 1 },                        /* simple value 16 */
        { { 0x1b, 0x01 }, 2 },                  /* cut uint64 */
        { { 0x78, 0x05, 0x61 }, 3 },            /* text longer than left */
        { { 0x9a, 0xff, 0xff, 0xff, 0xff }, 5 },/* 4G items in 5 bytes */
        { { 0 }, 0 },                           /* nothing */
    };

    (void) state;

    for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        r.p = refused[i].bytes;
        r.end = refused[i].bytes + refused[i].len;
        assert_int_equal(proven_cbor_span_skip(&r, 8), PROVEN_ERR);
        assert_true(r.p <= r.end);
    }

    /* nesting deeper than allowed */
    {
        uint8_t  deep[32];

        memset(deep, 0x81, sizeof(deep));       /* [[[[...]]]] */
        deep[sizeof(deep) - 1] = 0x00;
        r.p = deep;
        r.end = deep + sizeof(deep);
        assert_int_equal(proven_cbor_span_skip(&r, 16), PROVEN_ERR);
        r.p = deep;
        assert_int_equal(proven_cbor_span_skip(&r, 64), PROVEN_OK);
        assert_ptr_equal(r.p, r.end);
    }

    /* an indefinite map is taken by span_map, up to its break */
    {
        static const uint8_t  m[] = { 0xbf, 0x61, 'a', 0x01, 0xff };

        r.p = m;
        r.end = m + sizeof(m);
        assert_int_equal(proven_cbor_span_map(&r, &v), PROVEN_OK);
        assert_true(v == PROVEN_CBOR_INDEFINITE);
        assert_false(proven_cbor_span_break(&r));
        assert_int_equal(proven_cbor_span_skip(&r, 1), PROVEN_OK);
        assert_int_equal(proven_cbor_span_head(&r, &major, &v), PROVEN_OK);
        assert_int_equal(major, PROVEN_CBOR_UINT);
        assert_true(proven_cbor_span_break(&r));
        assert_ptr_equal(r.p, r.end);
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_depth_bound),
        cmocka_unit_test(test_trailing_and_truncated),
        cmocka_unit_test(test_indefinite_strings),
        cmocka_unit_test(test_map_helpers),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_base64url),
        cmocka_unit_test(test_span_heads),
        cmocka_unit_test(test_span_refusals),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
