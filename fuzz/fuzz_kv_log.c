/*
 * libFuzzer target: the KV log as the host stores it.  The input is one
 * or two segment files (split at the first byte's share of it) that the
 * store opens and recovers from: a forged, cut or reordered log must be
 * refused or recovered, never crash or read out of bounds.
 */

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proven.h"
#include "storage/storage_kv.h"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char     fuzz_dir[64];
static uint8_t  fuzz_master[32];


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    snprintf(fuzz_dir, sizeof(fuzz_dir), "/tmp/fuzz-kv-XXXXXX");
    if (mkdtemp(fuzz_dir) == NULL) {
        abort();
    }

    memset(fuzz_master, 0x42, sizeof(fuzz_master));
    return 0;
}


static void
fuzz_write(const char *name, const uint8_t *data, size_t len)
{
    int   fd;
    char  path[128];

    snprintf(path, sizeof(path), "%s/kv/%s", fuzz_dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        abort();
    }
    if (len > 0 && write(fd, data, len) != (ssize_t) len) {
        abort();
    }
    close(fd);
}


/* An empty DIR/kv: what the last run left (segments, set aside) goes. */
static void
fuzz_empty(void)
{
    DIR            *d;
    char            path[128], file[400];
    struct dirent  *e;

    snprintf(path, sizeof(path), "%s/kv", fuzz_dir);
    (void) mkdir(path, 0700);

    d = opendir(path);
    if (d == NULL) {
        abort();
    }

    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
            (void) unlink(file);
        }
    }

    closedir(d);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char           err[PROVEN_ERR_LEN];
    size_t         first;
    provend_kv_t  *kv;

    if (size < 1) {
        return 0;
    }

    fuzz_empty();

    first = (data[0] & 1) ? (size - 1) * data[0] / 256 : size - 1;
    fuzz_write("0000000000000001.log", data + 1, first);
    if (data[0] & 1) {
        fuzz_write("0000000000000002.log", data + 1 + first,
                   size - 1 - first);
    }

    kv = provend_kv_open(fuzz_dir, fuzz_master, 1024, 1024 * 1024, err,
                         sizeof(err));
    if (kv != NULL) {
        provend_kv_close(kv);
    }

    return 0;
}
