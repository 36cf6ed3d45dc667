/*
 * AWS Nitro Enclaves image files (EIF), read and written as AWS's
 * aws-nitro-enclaves-image-format does, and their measurements.
 *
 * An EIF is big-endian: a 548-byte header (magic ".eif", version, flags,
 * default memory and CPUs, the number of sections, 32 section offsets
 * and 32 sizes, 4 unused bytes, then at byte 544 a CRC-32 (ISO-HDLC) over
 * the header's first 544 bytes and each section's header and data), then
 * the sections: a 12-byte header (type, flags, size of the data) and the
 * data.  A section's offset is where its header starts; its size is the
 * data's.
 *
 * PCRs are SHA-384 registers extended once from zero:
 * PCR = SHA-384(48 zero bytes ‖ SHA-384(stream)), the stream being the
 * section data of: PCR0 the kernel, cmdline and every ramdisk, in file
 * order; PCR1 the kernel, cmdline and the first ramdisk; PCR2 the later
 * ramdisks.  (PCR8, the signing certificate's, is for signed images:
 * this code neither signs nor reads signatures.)
 *
 * Kept out of lib/ proper (like lib/fetch): the nginx modules, which
 * compile the files of lib/ itself, need none of it; zlib gives the CRC.
 */

#ifndef PROVEN_EIF_H
#define PROVEN_EIF_H

#include <stddef.h>
#include <stdint.h>

#define PROVEN_EIF_HEADER_LEN    548
#define PROVEN_EIF_SECTION_HEAD  12
#define PROVEN_EIF_SECTIONS_MAX  32
#define PROVEN_EIF_VERSION       4
#define PROVEN_EIF_PCR_LEN       48

typedef enum {
    PROVEN_EIF_KERNEL = 1,
    PROVEN_EIF_CMDLINE = 2,
    PROVEN_EIF_RAMDISK = 3,
    PROVEN_EIF_SIGNATURE = 4,
    PROVEN_EIF_METADATA = 5
} proven_eif_type_t;

typedef struct {
    uint16_t        type;
    uint16_t        flags;
    uint64_t        offset;         /* of its header, in the file */
    uint64_t        size;           /* of its data */
    const uint8_t  *data;           /* into the caller's buffer (read) */
} proven_eif_section_t;

typedef struct {
    uint16_t               version;
    uint16_t               flags;
    uint64_t               default_mem;
    uint64_t               default_cpus;
    size_t                 nsections;
    proven_eif_section_t   sections[PROVEN_EIF_SECTIONS_MAX];
    uint32_t               crc_stored;
    uint32_t               crc_computed;
    uint8_t                pcr0[PROVEN_EIF_PCR_LEN];
    uint8_t                pcr1[PROVEN_EIF_PCR_LEN];
    uint8_t                pcr2[PROVEN_EIF_PCR_LEN];
} proven_eif_t;

/* "kernel", "cmdline", "ramdisk", "signature", "metadata", "unknown". */
const char *proven_eif_type_name(uint16_t type);

/*
 * Reads an EIF held in buf: its header, its sections (each checked to lie
 * within buf, in order, without overlap) and, from their bytes, the CRC
 * and PCR0-2.  PROVEN_ERR with err filled on anything malformed or cut
 * short.  A CRC that does not match is not an error here: the caller
 * compares crc_stored and crc_computed.
 */
int proven_eif_read(const uint8_t *buf, size_t len, proven_eif_t *eif,
    char *err, size_t errlen);

/* The parts of an image to write: kernel, cmdline, metadata, ramdisks. */
typedef struct {
    uint16_t        type;
    const uint8_t  *data;
    size_t          len;
} proven_eif_part_t;

/*
 * Writes an EIF of those parts, in that order, into *out (malloc()ed):
 * deterministic, the same parts give the same bytes.
 */
int proven_eif_write(const proven_eif_part_t *parts, size_t nparts,
    uint64_t default_mem, uint64_t default_cpus, uint8_t **out,
    size_t *outlen, char *err, size_t errlen);

/*
 * dir's tree as a gzip'd newc cpio archive (proven_cpio.c), the same
 * bytes for the same tree: sorted, 0:0, every mtime the one given, no
 * gzip name or time.  Files, directories and links only.
 */
int proven_cpio_dir(const char *dir, uint64_t mtime, uint8_t **out,
    size_t *outlen, char *err, size_t errlen);

#endif /* PROVEN_EIF_H */
