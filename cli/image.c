/*
 * `proven image pcrs|describe FILE.eif`: an enclave image's measurements,
 * recomputed from its sections (lib/image), and what it holds.  `pcrs`
 * prints them as nitro-cli's build-enclave and describe-eif do.
 */

#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "core/util.h"
#include "image/proven_eif.h"


void
cli_usage_image(FILE *out)
{
    fprintf(out,
        "usage: proven image pcrs FILE.eif\n"
        "       proven image describe FILE.eif\n"
        "       proven image build --kernel FILE --cmdline TEXT --ramdisk DIR\n"
        "                          [--ramdisk DIR]... --out FILE.eif\n"
        "                          [--memory MB] [--cpus N] [--build-info TEXT]\n"
        "\n"
        "build: an EIF of the kernel, the cmdline, a metadata section and one\n"
        "ramdisk per DIR (a gzip'd cpio of its tree: sorted, 0:0, every mtime\n"
        "$SOURCE_DATE_EPOCH or 0), the same bytes from the same inputs; then\n"
        "its PCRs as pcrs prints them.  --build-info (up to 4096 bytes) goes\n"
        "into the metadata, which no PCR covers.\n"
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


static void
cli_image_print_pcrs(const proven_eif_t *eif)
{
    printf("{\n  \"Measurements\": {\n"
           "    \"HashAlgorithm\": \"Sha384 { ... }\",\n");
    cli_image_pcr("PCR0", eif->pcr0, 0);
    cli_image_pcr("PCR1", eif->pcr1, 0);
    cli_image_pcr("PCR2", eif->pcr2, 1);
    printf("  }\n}\n");
}


#define CLI_IMAGE_RAMDISKS  8
#define CLI_IMAGE_KERNEL_MAX  (256u * 1024 * 1024)
#define CLI_IMAGE_BUILD_INFO_MAX  4096

/* proven image build ... */
static int
cli_image_build(int argc, char **argv)
{
    int                 i, rc;
    char                err[PROVEN_ERR_LEN];
    size_t              nrd, nparts, kernel_len, len;
    uint8_t            *kernel, *out, *rd[CLI_IMAGE_RAMDISKS];
    size_t              rd_len[CLI_IMAGE_RAMDISKS];
    uint64_t            mtime, memory, cpus;
    const char         *kernel_path, *cmdline, *out_path, *epoch;
    const char         *dirs[CLI_IMAGE_RAMDISKS];
    proven_eif_t        eif;
    proven_eif_part_t   parts[3 + CLI_IMAGE_RAMDISKS];
    char               *meta;
    json_t             *meta_json;
    const char         *build_info;

    kernel_path = cmdline = out_path = build_info = NULL;
    nrd = 0;
    memory = 512;
    cpus = 2;
    for (i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--kernel") == 0) {
            kernel_path = argv[i + 1];
        } else if (strcmp(argv[i], "--cmdline") == 0) {
            cmdline = argv[i + 1];
        } else if (strcmp(argv[i], "--out") == 0) {
            out_path = argv[i + 1];
        } else if (strcmp(argv[i], "--build-info") == 0
                   && strlen(argv[i + 1]) <= CLI_IMAGE_BUILD_INFO_MAX)
        {
            build_info = argv[i + 1];
        } else if (strcmp(argv[i], "--ramdisk") == 0
                   && nrd < CLI_IMAGE_RAMDISKS)
        {
            dirs[nrd++] = argv[i + 1];
        } else if (strcmp(argv[i], "--memory") == 0) {
            if (cli_parse_uint("image", "--memory", argv[i + 1], 1u << 20,
                               &memory) != PROVEN_OK)
            {
                return CLI_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--cpus") == 0) {
            if (cli_parse_uint("image", "--cpus", argv[i + 1], 1024, &cpus)
                != PROVEN_OK)
            {
                return CLI_EXIT_USAGE;
            }
        } else {
            break;
        }
    }
    if (i != argc || kernel_path == NULL || cmdline == NULL
        || out_path == NULL || nrd == 0)
    {
        cli_usage_image(stderr);
        return CLI_EXIT_USAGE;
    }
    epoch = getenv("SOURCE_DATE_EPOCH");
    mtime = 0;
    if (epoch != NULL && cli_parse_uint("image", "SOURCE_DATE_EPOCH", epoch,
                                        0xffffffffu, &mtime) != PROVEN_OK)
    {
        return CLI_EXIT_USAGE;
    }

    rc = CLI_EXIT_FAILED;
    out = NULL;
    kernel = NULL;
    memset(rd, 0, sizeof(rd));

    /* the metadata section (not measured): what built the image, so a
     * third party rebuilding it knows which toolchain to use */
    meta_json = json_pack("{s:s, s:s}", "ImageName", "proven",
                          "BuildTool", "proven image build");
    if (meta_json != NULL && build_info != NULL) {
        json_object_set_new(meta_json, "BuildInfo",
                            json_string(build_info));
    }
    meta = meta_json ? json_dumps(meta_json, JSON_COMPACT
                                             | JSON_PRESERVE_ORDER) : NULL;
    json_decref(meta_json);
    if (meta == NULL) {
        fprintf(stderr, "proven image: --build-info is not UTF-8 text, or "
                        "out of memory\n");
        goto done;
    }

    if (proven_read_file(kernel_path, CLI_IMAGE_KERNEL_MAX, &kernel,
                         &kernel_len, err, sizeof(err)) != PROVEN_OK)
    {
        fprintf(stderr, "proven image: %s\n", err);
        goto done;
    }
    nparts = 0;
    parts[nparts++] = (proven_eif_part_t) { PROVEN_EIF_KERNEL, kernel,
                                            kernel_len };
    parts[nparts++] = (proven_eif_part_t) { PROVEN_EIF_CMDLINE,
                                            (const uint8_t *) cmdline,
                                            strlen(cmdline) };
    parts[nparts++] = (proven_eif_part_t) { PROVEN_EIF_METADATA,
                                            (const uint8_t *) meta,
                                            strlen(meta) };
    for (i = 0; (size_t) i < nrd; i++) {
        if (proven_cpio_dir(dirs[i], mtime, &rd[i], &rd_len[i], err,
                            sizeof(err)) != PROVEN_OK)
        {
            fprintf(stderr, "proven image: %s\n", err);
            goto done;
        }
        parts[nparts++] = (proven_eif_part_t) { PROVEN_EIF_RAMDISK, rd[i],
                                                rd_len[i] };
    }
    if (proven_eif_write(parts, nparts, memory << 20, cpus, &out, &len, err,
                         sizeof(err)) != PROVEN_OK
        || proven_eif_read(out, len, &eif, err, sizeof(err)) != PROVEN_OK)
    {
        fprintf(stderr, "proven image: %s\n", err);
        goto done;
    }
    if (proven_write_file(out_path, out, len, 0644, err, sizeof(err))
        != PROVEN_OK)
    {
        fprintf(stderr, "proven image: %s\n", err);
        goto done;
    }
    cli_image_print_pcrs(&eif);
    rc = CLI_EXIT_OK;

done:

    free(kernel);
    free(meta);
    for (i = 0; i < CLI_IMAGE_RAMDISKS; i++) {
        free(rd[i]);
    }
    free(out);
    return rc;
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

    if (argc >= 2 && strcmp(argv[1], "build") == 0) {
        return cli_image_build(argc, argv);
    }
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
        cli_image_print_pcrs(&eif);
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
