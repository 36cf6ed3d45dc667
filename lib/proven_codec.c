/* Hex and base64url, as they appear in query strings and on command lines. */

#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "proven.h"


static int
proven_hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


int
proven_hex_decode(const char *hex, size_t hexlen, uint8_t *out,
    size_t outmax, size_t *outlen)
{
    int     hi, lo;
    size_t  i;

    if (hexlen % 2 != 0 || hexlen / 2 > outmax) {
        return PROVEN_ERR;
    }

    for (i = 0; i < hexlen; i += 2) {
        hi = proven_hex_digit(hex[i]);
        lo = proven_hex_digit(hex[i + 1]);
        if (hi < 0 || lo < 0) {
            return PROVEN_ERR;
        }
        out[i / 2] = (uint8_t) (hi << 4 | lo);
    }

    *outlen = hexlen / 2;
    return PROVEN_OK;
}


void
proven_hex_encode(const uint8_t *in, size_t len, char *out)
{
    static const char  digits[] = "0123456789abcdef";
    size_t             i;

    for (i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }

    out[2 * len] = '\0';
}


int
proven_base64url_decode(const char *in, size_t inlen, uint8_t *out,
    size_t outmax, size_t *outlen)
{
    int            n;
    char           c;
    size_t         i, pad, decoded, stdlen;
    unsigned char *std, *raw;

    std = NULL;
    raw = NULL;

    /* Trailing padding is optional; only a complete last quantum has it. */
    if (inlen % 4 == 0) {
        for (pad = 0; pad < 2 && inlen > 0 && in[inlen - 1] == '='; pad++) {
            inlen--;
        }
    }

    if (inlen % 4 == 1) {
        return PROVEN_ERR;
    }

    decoded = inlen / 4 * 3 + (inlen % 4 == 0 ? 0 : inlen % 4 - 1);
    if (decoded > outmax || inlen > (size_t) INT32_MAX / 2) {
        return PROVEN_ERR;
    }

    if (inlen == 0) {
        *outlen = 0;
        return PROVEN_OK;
    }

    /* OpenSSL decodes the standard alphabet with padding: translate. */
    stdlen = (inlen + 3) / 4 * 4;
    std = malloc(stdlen + 1);
    raw = malloc(stdlen / 4 * 3);
    if (std == NULL || raw == NULL) {
        goto failed;
    }

    for (i = 0; i < inlen; i++) {
        c = in[i];

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9'))
        {
            std[i] = (unsigned char) c;

        } else if (c == '-') {
            std[i] = '+';

        } else if (c == '_') {
            std[i] = '/';

        } else {
            goto failed;
        }
    }

    for (; i < stdlen; i++) {
        std[i] = '=';
    }
    std[stdlen] = '\0';

    n = EVP_DecodeBlock(raw, std, (int) stdlen);
    if (n < 0 || (size_t) n < decoded) {
        goto failed;
    }

    memcpy(out, raw, decoded);
    *outlen = decoded;

    free(std);
    free(raw);
    return PROVEN_OK;

failed:

    free(std);
    free(raw);
    return PROVEN_ERR;
}


void
proven_openssl_error(char *err, size_t errlen, const char *what)
{
    unsigned long  e;
    char           buf[160];

    if (err == NULL) {
        ERR_clear_error();
        return;
    }

    e = ERR_peek_last_error();
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        snprintf(err, errlen, "%s: %s", what, buf);

    } else {
        snprintf(err, errlen, "%s", what);
    }

    ERR_clear_error();
}


int
proven_uuid_v4(uint8_t id[PROVEN_UUID_LEN])
{
    if (RAND_bytes(id, PROVEN_UUID_LEN) != 1) {
        return PROVEN_ERR;
    }

    /* RFC 9562: version 4, variant 10 */
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    return PROVEN_OK;
}


void
proven_uuid_text(const uint8_t id[PROVEN_UUID_LEN],
    char out[PROVEN_UUID_TEXT_LEN])
{
    size_t  i;
    char   *p;

    p = out;
    for (i = 0; i < PROVEN_UUID_LEN; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            *p++ = '-';
        }

        proven_hex_encode(id + i, 1, p);
        p += 2;
    }

    *p = '\0';
}
