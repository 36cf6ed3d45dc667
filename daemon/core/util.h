/* Small file system helpers for provend. */

#ifndef PROVEND_UTIL_H
#define PROVEND_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PROVEND_NODE_ID_LEN  32     /* hex digits of 16 random bytes */

/* mkdir -p with mode for the directories it creates. */
int provend_mkdirs(const char *path, mode_t mode, char *err, size_t errlen);

/* Writes data to path.tmp with mode, then renames it over path. */
int provend_write_file(const char *path, const void *data, size_t len,
    mode_t mode, char *err, size_t errlen);

/* Reads a regular file of at most max bytes (malloc()ed, NUL added). */
int provend_read_file(const char *path, size_t max, uint8_t **out,
    size_t *outlen, char *err, size_t errlen);

/* DATA/node-id: read it, or create it once with 16 random bytes in hex. */
int provend_node_id(const char *data_dir,
    char node_id[PROVEND_NODE_ID_LEN + 1], char *err, size_t errlen);

/* rm -r path (links removed, not followed); absent is not an error. */
int provend_remove_tree(const char *path, char *err, size_t errlen);

/* Milliseconds since the epoch. */
uint64_t provend_now_ms(void);

#endif /* PROVEND_UTIL_H */
