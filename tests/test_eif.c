/*
 * EIF images (lib/image): what proven_eif_write makes is, byte for byte,
 * the image a separate writer (Python's struct, zlib and hashlib, run
 * once to make the vectors below) makes of the same parts; reading gives
 * back its sections, CRC and PCRs; a tampered section changes the CRC and
 * exactly the PCRs that cover it; cut short or malformed: a clear error.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "proven.h"
#include "image/proven_eif.h"


static const char  kernel[] = "kernel image bytes";
static const char  cmdline[] = "console=ttyS0 quiet";
static const char  meta[] = "{\"BuildTime\":\"0\"}";
static const char  boot_rd[] = "init ramdisk";
static const char  app_rd[] = "app ramdisk";

/* From the independent writer: the image's CRC, length and SHA-256 */
#define VECTOR_CRC     0x47508096u
#define VECTOR_LEN     685
#define VECTOR_SHA256  \
    "594272e140fd13fb1368de2d772182d30395486667705541a650eaf38e5b3b4e"
#define VECTOR_PCR0 "89da5a985d9527186624428c06b5e9e0deb0dd37c018cf95e30133" \
    "1e5abf108ef65daa3ef8d1612785b8ef81fbed9339"
#define VECTOR_PCR1 "7258e0cd8b8f1734ec2feb4c9fd4de9ab6e5ed7f12b92fcbf4f214" \
    "c7606d4cfd5fd73ce4a4cd8fc4a0022dad49d332c8"
#define VECTOR_PCR2 "cafaf972b0b74373ddc26ee6d80ad6a2646af62d87fe667ab3997c" \
    "4a38882c74d5b0e46891479cd6df35a137e35573f8"


static uint8_t *
write_image(size_t *len)
{
    char      err[PROVEN_ERR_LEN];
    uint8_t  *out;
    proven_eif_part_t  parts[] = {
        { PROVEN_EIF_KERNEL, (const uint8_t *) kernel, sizeof(kernel) - 1 },
        { PROVEN_EIF_CMDLINE, (const uint8_t *) cmdline,
          sizeof(cmdline) - 1 },
        { PROVEN_EIF_METADATA, (const uint8_t *) meta, sizeof(meta) - 1 },
        { PROVEN_EIF_RAMDISK, (const uint8_t *) boot_rd, sizeof(boot_rd) - 1 },
        { PROVEN_EIF_RAMDISK, (const uint8_t *) app_rd, sizeof(app_rd) - 1 },
    };

    assert_int_equal(proven_eif_write(parts, 5, 512u << 20, 2, &out, len,
                                      err, sizeof(err)), PROVEN_OK);
    return out;
}


static void
assert_hex(const uint8_t *bytes, size_t len, const char *want)
{
    char  hex[2 * 64 + 1];

    proven_hex_encode(bytes, len, hex);
    assert_string_equal(hex, want);
}


static void
test_write_matches_the_vector(void **state)
{
    size_t    len, len2;
    uint8_t  *img, *again, digest[32];

    (void) state;
    img = write_image(&len);
    assert_int_equal(len, VECTOR_LEN);
    SHA256(img, len, digest);
    assert_hex(digest, sizeof(digest), VECTOR_SHA256);
    assert_int_equal(proven_get_be32(img + 544), VECTOR_CRC);

    /* deterministic */
    again = write_image(&len2);
    assert_int_equal(len2, len);
    assert_memory_equal(again, img, len);
    free(again);
    free(img);
}


static void
test_read_gives_sections_crc_and_pcrs(void **state)
{
    char           err[PROVEN_ERR_LEN];
    size_t         len;
    uint8_t       *img;
    proven_eif_t   eif;

    (void) state;
    img = write_image(&len);
    assert_int_equal(proven_eif_read(img, len, &eif, err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(eif.version, 4);
    assert_int_equal(eif.default_mem, 512u << 20);
    assert_int_equal(eif.default_cpus, 2);
    assert_int_equal(eif.nsections, 5);
    assert_string_equal(proven_eif_type_name(eif.sections[2].type),
                        "metadata");
    assert_int_equal(eif.sections[4].size, sizeof(app_rd) - 1);
    assert_memory_equal(eif.sections[4].data, app_rd, sizeof(app_rd) - 1);
    assert_int_equal(eif.crc_stored, VECTOR_CRC);
    assert_int_equal(eif.crc_computed, VECTOR_CRC);
    assert_hex(eif.pcr0, 48, VECTOR_PCR0);
    assert_hex(eif.pcr1, 48, VECTOR_PCR1);
    assert_hex(eif.pcr2, 48, VECTOR_PCR2);
    free(img);
}


/* One byte of the application's ramdisk: CRC and PCR0, PCR2 change. */
static void
test_tampered_section(void **state)
{
    char           err[PROVEN_ERR_LEN];
    size_t         len;
    uint8_t       *img;
    proven_eif_t   eif;

    (void) state;
    img = write_image(&len);
    img[len - 1] ^= 1;
    assert_int_equal(proven_eif_read(img, len, &eif, err, sizeof(err)),
                     PROVEN_OK);
    assert_int_equal(eif.crc_stored, VECTOR_CRC);
    assert_int_not_equal(eif.crc_computed, VECTOR_CRC);
    assert_hex(eif.pcr1, 48, VECTOR_PCR1);
    {
        char  hex[97];

        proven_hex_encode(eif.pcr0, 48, hex);
        assert_string_not_equal(hex, VECTOR_PCR0);
        proven_hex_encode(eif.pcr2, 48, hex);
        assert_string_not_equal(hex, VECTOR_PCR2);
    }

    /* the metadata is in the CRC, in no PCR */
    img[len - 1] ^= 1;
    img[548 + 12 + sizeof(kernel) - 1 + 12 + sizeof(cmdline) - 1 + 12] ^= 1;
    assert_int_equal(proven_eif_read(img, len, &eif, err, sizeof(err)),
                     PROVEN_OK);
    assert_int_not_equal(eif.crc_computed, VECTOR_CRC);
    assert_hex(eif.pcr0, 48, VECTOR_PCR0);
    free(img);
}


static void
test_malformed(void **state)
{
    char           err[PROVEN_ERR_LEN];
    size_t         len, cut;
    uint8_t       *img;
    proven_eif_t   eif;

    (void) state;
    img = write_image(&len);

    /* cut anywhere: a clear error, never a read past the end */
    for (cut = 0; cut < len; cut++) {
        assert_int_equal(proven_eif_read(img, cut, &eif, err, sizeof(err)),
                         PROVEN_ERR);
        assert_true(strstr(err, "cut short") != NULL
                    || strstr(err, "shorter than an EIF header") != NULL);
    }

    img[0] = 'x';
    assert_int_equal(proven_eif_read(img, len, &eif, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "magic"));
    img[0] = '.';

    proven_put_be32(img + 24, 33);          /* reserved 0, count 33 */
    assert_int_equal(proven_eif_read(img, len, &eif, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "at most 32"));
    proven_put_be32(img + 24, 5);

    /* a section's own size unlike the header's */
    img[548 + 11] ^= 1;
    assert_int_equal(proven_eif_read(img, len, &eif, err, sizeof(err)),
                     PROVEN_ERR);
    assert_non_null(strstr(err, "own size"));
    free(img);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_write_matches_the_vector),
        cmocka_unit_test(test_read_gives_sections_crc_and_pcrs),
        cmocka_unit_test(test_tampered_section),
        cmocka_unit_test(test_malformed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
