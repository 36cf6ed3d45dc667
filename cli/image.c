/*
 * `proven image pcrs|describe FILE.eif`: an enclave image's measurements,
 * recomputed from its sections (lib/image), and what it holds.  `pcrs`
 * prints them as nitro-cli's build-enclave and describe-eif do.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "image/proven_eif.h"


void
cli_usage_image(FILE *out)
{
    fprintf(out,
        "usage: proven image pcrs FILE.eif\n"
        "       proven image describe FILE.eif\n"
        "\n"
        "pcrs: PCR0 (kernel, cmdline, every ramdisk), PCR1 (kernel, cmdline,\n"
        "the first ramdisk) and PCR2 (the later ramdisks), each SHA-384 over\n"
        "the sections' bytes, extended from zero, as JSON like nitro-cli's.\n"
        "describe: the header, each section and the metadata.  Both check\n"
        "the image's CRC first: a changed file is refused.\n"
        "\n"
        "exit status: 0 done, 1 unreadable or malformed, 2 usage error\n");
}


static void
cli_image_pcr(const char *name, const uint8_t *pcr, int last)
{
    char  hex[2 * PROVEN_EIF_PCR_LEN + 1];

    proven_hex_encode(pcr, PROVEN_EIF_PCR_LEN, hex);
    printf("    \"%s\": \"%s\"%s\n", name, hex, last ? "" : ",");
}


int
cli_image(int argc, char **argv)
{
    int           fd, rc;
    char          err[PROVEN_ERR_LEN];
    size_t        i, j;
    uint8_t      *map;
    struct stat   st;
    proven_eif_t  eif;

    if (argc != 3 || (strcmp(argv[1], "pcrs") != 0
                      && strcmp(argv[1], "describe") != 0))
    {
        cli_usage_image(argc == 2 && strcmp(argv[1], "--help") == 0
                        ? stdout : stderr);
        return argc == 2 && strcmp(argv[1], "--help") == 0
               ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    }

    fd = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "proven image: %s: %s\n", argv[2], strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return CLI_EXIT_FAILED;
    }
    map = st.st_size > 0
          ? mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_PRIVATE, fd, 0)
          : MAP_FAILED;
    close(fd);
    if (st.st_size > 0 && map == MAP_FAILED) {
        fprintf(stderr, "proven image: %s: %s\n", argv[2], strerror(errno));
        return CLI_EXIT_FAILED;
    }

    rc = CLI_EXIT_FAILED;
    if (proven_eif_read(map == MAP_FAILED ? (const uint8_t *) "" : map,
                        map == MAP_FAILED ? 0 : (size_t) st.st_size, &eif,
                        err, sizeof(err)) != PROVEN_OK)
    {
        fprintf(stderr, "proven image: %s: %s\n", argv[2], err);
        goto done;
    }
    if (eif.crc_computed != eif.crc_stored) {
        fprintf(stderr, "proven image: %s: the CRC is %08x, the header says "
                "%08x: the file was changed or damaged\n", argv[2],
                eif.crc_computed, eif.crc_stored);
        goto done;
    }

    if (strcmp(argv[1], "pcrs") == 0) {
        printf("{\n  \"Measurements\": {\n"
               "    \"HashAlgorithm\": \"Sha384 { ... }\",\n");
        cli_image_pcr("PCR0", eif.pcr0, 0);
        cli_image_pcr("PCR1", eif.pcr1, 0);
        cli_image_pcr("PCR2", eif.pcr2, 1);
        printf("  }\n}\n");
        rc = CLI_EXIT_OK;
        goto done;
    }

    printf("version %u, flags %u, default memory %llu bytes, %llu CPUs, "
           "CRC %08x (checks)\n", eif.version, eif.flags,
           (unsigned long long) eif.default_mem,
           (unsigned long long) eif.default_cpus, eif.crc_stored);
    for (i = 0; i < eif.nsections; i++) {
        printf("section %zu: %s, %llu bytes at %llu\n", i,
               proven_eif_type_name(eif.sections[i].type),
               (unsigned long long) eif.sections[i].size,
               (unsigned long long) eif.sections[i].offset);
        if (eif.sections[i].type == PROVEN_EIF_METADATA
            || eif.sections[i].type == PROVEN_EIF_CMDLINE)
        {
            /* shown as text, what is not printable as '.' */
            printf("  ");
            for (j = 0; j < eif.sections[i].size && j < 4096; j++) {
                uint8_t  c = eif.sections[i].data[j];

                putchar(c >= 0x20 && c < 0x7f ? c : '.');
            }
            printf("%s\n", eif.sections[i].size > 4096 ? "..." : "");
        }
    }
    rc = CLI_EXIT_OK;

done:

    if (map != MAP_FAILED) {
        munmap(map, (size_t) st.st_size);
    }
    return rc;
}
