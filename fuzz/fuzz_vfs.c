/*
 * libFuzzer target: a database file as the host stores it, opened by
 * SQLite through the encrypting VFS and read: every block that does not
 * authenticate is an I/O error, never a crash or a read out of bounds.
 */

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "proven.h"
#include "storage/vfs.h"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char  fuzz_path[160];


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char     dir[64], err[PROVEN_ERR_LEN];
    uint8_t  master[PROVEND_KEY_LEN];

    (void) argc;
    (void) argv;

    snprintf(dir, sizeof(dir), "/tmp/fuzz-vfs-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        abort();
    }
    /* the seed's own name: a file's key is bound to its basename */
    snprintf(fuzz_path, sizeof(fuzz_path), "%s/%s", dir,
             "d3c4d282d5c1ae48f9e1ff64aedb481347373ffee644bb32b73b66874d5aa8"
             "8a.db");

    memset(master, 0x42, sizeof(master));
    if (provend_vfs_register(master, err, sizeof(err)) != PROVEN_OK) {
        abort();
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int       fd;
    sqlite3  *db;

    fd = open(fuzz_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        abort();
    }
    if (size > 0 && write(fd, data, size) != (ssize_t) size) {
        abort();
    }
    close(fd);

    db = NULL;
    if (sqlite3_open_v2(fuzz_path, &db, SQLITE_OPEN_READONLY,
                        PROVEND_VFS_NAME) == SQLITE_OK)
    {
        (void) sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", NULL,
                            NULL, NULL);
    }
    sqlite3_close(db);
    return 0;
}
