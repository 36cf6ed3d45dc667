/*
 * provend logging: one line per message on stderr, shaped as nginx's
 * error log so that one reader (and one grep) serves both:
 *
 *   2026/12/06 19:40:00 [info] 4242#4243: *17 request 3: kv.get
 *
 * the local time, the level, the process and thread, then "*N " when the
 * line is about connection N (numbered once in the process, never
 * reused), then the message.
 */

#ifndef PROVEND_LOG_H
#define PROVEND_LOG_H

#include <stdint.h>

typedef enum {
    PROVEND_LOG_DEBUG = 0,
    PROVEND_LOG_INFO,
    PROVEND_LOG_WARN,
    PROVEND_LOG_ERROR
} provend_log_level_t;

/* Messages below this level are dropped; PROVEND_LOG_INFO by default. */
void provend_log_set_level(provend_log_level_t level);

/* "debug", "info", "warn" or "error"; -1 when name is none of them. */
int provend_log_level_parse(const char *name);

void provend_log(provend_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A line about connection id (0: none). */
void provend_log_id(provend_log_level_t level, uint64_t id,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A new connection's number: unique in the process (any thread). */
uint64_t provend_log_next_id(void);

#define provend_debug(...)  provend_log(PROVEND_LOG_DEBUG, __VA_ARGS__)
#define provend_info(...)   provend_log(PROVEND_LOG_INFO, __VA_ARGS__)
#define provend_warn(...)   provend_log(PROVEND_LOG_WARN, __VA_ARGS__)
#define provend_error(...)  provend_log(PROVEND_LOG_ERROR, __VA_ARGS__)

#define provend_debug_id(id, ...)  provend_log_id(PROVEND_LOG_DEBUG, id,     \
                                                  __VA_ARGS__)
#define provend_info_id(id, ...)   provend_log_id(PROVEND_LOG_INFO, id,      \
                                                  __VA_ARGS__)

#endif /* PROVEND_LOG_H */
