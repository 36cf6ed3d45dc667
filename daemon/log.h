/*
 * provend logging: one line per message on stderr, prefixed
 * "provend: <level>: " so that scripts and test suites can match it.
 */

#ifndef PROVEND_LOG_H
#define PROVEND_LOG_H

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

#define provend_debug(...)  provend_log(PROVEND_LOG_DEBUG, __VA_ARGS__)
#define provend_info(...)   provend_log(PROVEND_LOG_INFO, __VA_ARGS__)
#define provend_warn(...)   provend_log(PROVEND_LOG_WARN, __VA_ARGS__)
#define provend_error(...)  provend_log(PROVEND_LOG_ERROR, __VA_ARGS__)

#endif /* PROVEND_LOG_H */
