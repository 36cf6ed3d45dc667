/*
 * EIF files and their PCRs.  See proven_eif.h.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <zlib.h>

#include "proven.h"
#include "proven_eif.h"


static const uint8_t  proven_eif_magic[4] = { '.', 'e', 'i', 'f' };

/* where the header's fields are */
#define PROVEN_EIF_OFF_VERSION   4
#define PROVEN_EIF_OFF_FLAGS     6
#define PROVEN_EIF_OFF_MEM       8
#define PROVEN_EIF_OFF_CPUS      16
#define PROVEN_EIF_OFF_COUNT     26
#define PROVEN_EIF_OFF_OFFSETS   28
#define PROVEN_EIF_OFF_SIZES     (28 + 8 * PROVEN_EIF_SECTIONS_MAX)
#define PROVEN_EIF_OFF_CRC       544


const char *
proven_eif_type_name(uint16_t type)
{
    static const char  *names[] = {
        "invalid", "kernel", "cmdline", "ramdisk", "signature", "metadata"
    };

    return type < sizeof(names) / sizeof(names[0]) && type != 0
           ? names[type] : "unknown";
}


static uint16_t
proven_eif_be16(const uint8_t *p)
{
    return (uint16_t) ((p[0] << 8) | p[1]);
}


static void
proven_eif_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t) (v >> 8);
    p[1] = (uint8_t) v;
}


/* A CRC-32 (ISO-HDLC, zlib's) over more bytes than uInt holds at once. */
static uLong
proven_eif_crc(uLong crc, const uint8_t *p, uint64_t len)
{
    uInt  n;

    while (len > 0) {
        n = len > 0x40000000u ? 0x40000000u : (uInt) len;
        crc = crc32(crc, p, n);
        p += n;
        len -= n;
    }
    return crc;
}


/* PCR = SHA-384(48 zeros ‖ digest), digest finished from md. */
static int
proven_eif_pcr(EVP_MD_CTX *md, uint8_t pcr[PROVEN_EIF_PCR_LEN])
{
    unsigned  n;
    uint8_t   ext[2 * PROVEN_EIF_PCR_LEN];

    memset(ext, 0, PROVEN_EIF_PCR_LEN);
    return EVP_DigestFinal_ex(md, ext + PROVEN_EIF_PCR_LEN, &n) == 1
           && n == PROVEN_EIF_PCR_LEN
           && EVP_Digest(ext, sizeof(ext), pcr, &n, EVP_sha384(), NULL) == 1
           && n == PROVEN_EIF_PCR_LEN
           ? PROVEN_OK : PROVEN_ERR;
}


int
proven_eif_read(const uint8_t *buf, size_t len, proven_eif_t *eif,
    char *err, size_t errlen)
{
    int                    rc, ramdisks;
    size_t                 i;
    uLong                  crc;
    uint64_t               end, off, size;
    EVP_MD_CTX            *image, *boot, *app;
    proven_eif_section_t  *s;

    memset(eif, 0, sizeof(*eif));
    if (len < PROVEN_EIF_HEADER_LEN) {
        proven_errf(err, errlen, "%zu bytes: shorter than an EIF header "
                    "(%d)", len, PROVEN_EIF_HEADER_LEN);
        return PROVEN_ERR;
    }
    if (memcmp(buf, proven_eif_magic, sizeof(proven_eif_magic)) != 0) {
        proven_errf(err, errlen, "not an EIF (no \".eif\" magic)");
        return PROVEN_ERR;
    }
    eif->version = proven_eif_be16(buf + PROVEN_EIF_OFF_VERSION);
    eif->flags = proven_eif_be16(buf + PROVEN_EIF_OFF_FLAGS);
    eif->default_mem = proven_get_be64(buf + PROVEN_EIF_OFF_MEM);
    eif->default_cpus = proven_get_be64(buf + PROVEN_EIF_OFF_CPUS);
    eif->nsections = proven_eif_be16(buf + PROVEN_EIF_OFF_COUNT);
    eif->crc_stored = proven_get_be32(buf + PROVEN_EIF_OFF_CRC);
    if (eif->nsections > PROVEN_EIF_SECTIONS_MAX) {
        proven_errf(err, errlen, "%zu sections: at most %d", eif->nsections,
                    PROVEN_EIF_SECTIONS_MAX);
        return PROVEN_ERR;
    }

    /* each section after the last, inside the file, its header whole */
    end = PROVEN_EIF_HEADER_LEN;
    for (i = 0; i < eif->nsections; i++) {
        s = &eif->sections[i];
        off = proven_get_be64(buf + PROVEN_EIF_OFF_OFFSETS + 8 * i);
        size = proven_get_be64(buf + PROVEN_EIF_OFF_SIZES + 8 * i);
        if (off < end || off > len || len - off < PROVEN_EIF_SECTION_HEAD
            || len - off - PROVEN_EIF_SECTION_HEAD < size)
        {
            proven_errf(err, errlen, "section %zu (at %llu, %llu bytes) is "
                        "not within the file's %zu bytes after the one "
                        "before it: cut short or malformed", i,
                        (unsigned long long) off, (unsigned long long) size,
                        len);
            return PROVEN_ERR;
        }
        s->type = proven_eif_be16(buf + off);
        s->flags = proven_eif_be16(buf + off + 2);
        if (proven_get_be64(buf + off + 4) != size) {
            proven_errf(err, errlen, "section %zu's own size is not the "
                        "header's", i);
            return PROVEN_ERR;
        }
        s->offset = off;
        s->size = size;
        s->data = buf + off + PROVEN_EIF_SECTION_HEAD;
        end = off + PROVEN_EIF_SECTION_HEAD + size;
    }

    crc = proven_eif_crc(crc32(0L, Z_NULL, 0), buf, PROVEN_EIF_OFF_CRC);
    image = EVP_MD_CTX_new();
    boot = EVP_MD_CTX_new();
    app = EVP_MD_CTX_new();
    rc = image != NULL && boot != NULL && app != NULL
         && EVP_DigestInit_ex(image, EVP_sha384(), NULL) == 1
         && EVP_DigestInit_ex(boot, EVP_sha384(), NULL) == 1
         && EVP_DigestInit_ex(app, EVP_sha384(), NULL) == 1
         ? PROVEN_OK : PROVEN_ERR;

    ramdisks = 0;
    for (i = 0; rc == PROVEN_OK && i < eif->nsections; i++) {
        s = &eif->sections[i];
        crc = proven_eif_crc(crc, buf + s->offset,
                             PROVEN_EIF_SECTION_HEAD + s->size);
        switch (s->type) {

        case PROVEN_EIF_KERNEL:
        case PROVEN_EIF_CMDLINE:
            rc = EVP_DigestUpdate(image, s->data, s->size) == 1
                 && EVP_DigestUpdate(boot, s->data, s->size) == 1
                 ? PROVEN_OK : PROVEN_ERR;
            break;

        case PROVEN_EIF_RAMDISK:
            /* the first ramdisk boots (PCR1), the later ones are the app */
            rc = EVP_DigestUpdate(image, s->data, s->size) == 1
                 && EVP_DigestUpdate(ramdisks++ == 0 ? boot : app, s->data,
                                     s->size) == 1
                 ? PROVEN_OK : PROVEN_ERR;
            break;

        default:
            break;              /* signature, metadata: in no PCR 0-2 */
        }
    }
    eif->crc_computed = (uint32_t) crc;

    if (rc == PROVEN_OK) {
        rc = proven_eif_pcr(image, eif->pcr0) == PROVEN_OK
             && proven_eif_pcr(boot, eif->pcr1) == PROVEN_OK
             && proven_eif_pcr(app, eif->pcr2) == PROVEN_OK
             ? PROVEN_OK : PROVEN_ERR;
    }
    EVP_MD_CTX_free(image);
    EVP_MD_CTX_free(boot);
    EVP_MD_CTX_free(app);
    if (rc != PROVEN_OK) {
        proven_errf(err, errlen, "SHA-384 failed (out of memory?)");
    }
    return rc;
}


int
proven_eif_write(const proven_eif_part_t *parts, size_t nparts,
    uint64_t default_mem, uint64_t default_cpus, uint8_t **out,
    size_t *outlen, char *err, size_t errlen)
{
    size_t    i, total;
    uLong     crc;
    uint8_t  *buf, *p;

    if (nparts > PROVEN_EIF_SECTIONS_MAX) {
        proven_errf(err, errlen, "%zu sections: at most %d", nparts,
                    PROVEN_EIF_SECTIONS_MAX);
        return PROVEN_ERR;
    }
    total = PROVEN_EIF_HEADER_LEN;
    for (i = 0; i < nparts; i++) {
        if (parts[i].len > SIZE_MAX - total - PROVEN_EIF_SECTION_HEAD) {
            proven_errf(err, errlen, "the image is too large");
            return PROVEN_ERR;
        }
        total += PROVEN_EIF_SECTION_HEAD + parts[i].len;
    }
    buf = calloc(1, total);
    if (buf == NULL) {
        proven_errf(err, errlen, "out of memory for a %zu-byte image",
                    total);
        return PROVEN_ERR;
    }

    memcpy(buf, proven_eif_magic, sizeof(proven_eif_magic));
    proven_eif_put16(buf + PROVEN_EIF_OFF_VERSION, PROVEN_EIF_VERSION);
    proven_put_be64(buf + PROVEN_EIF_OFF_MEM, default_mem);
    proven_put_be64(buf + PROVEN_EIF_OFF_CPUS, default_cpus);
    proven_eif_put16(buf + PROVEN_EIF_OFF_COUNT, (uint16_t) nparts);

    p = buf + PROVEN_EIF_HEADER_LEN;
    for (i = 0; i < nparts; i++) {
        proven_put_be64(buf + PROVEN_EIF_OFF_OFFSETS + 8 * i,
                        (uint64_t) (p - buf));
        proven_put_be64(buf + PROVEN_EIF_OFF_SIZES + 8 * i, parts[i].len);
        proven_eif_put16(p, parts[i].type);
        proven_put_be64(p + 4, parts[i].len);
        if (parts[i].len > 0) {
            memcpy(p + PROVEN_EIF_SECTION_HEAD, parts[i].data, parts[i].len);
        }
        p += PROVEN_EIF_SECTION_HEAD + parts[i].len;
    }

    /* the header's first 544 bytes, then every section, header and data */
    crc = proven_eif_crc(crc32(0L, Z_NULL, 0), buf, PROVEN_EIF_OFF_CRC);
    crc = proven_eif_crc(crc, buf + PROVEN_EIF_HEADER_LEN,
                         total - PROVEN_EIF_HEADER_LEN);
    proven_put_be32(buf + PROVEN_EIF_OFF_CRC, (uint32_t) crc);

    *out = buf;
    *outlen = total;
    return PROVEN_OK;
}
