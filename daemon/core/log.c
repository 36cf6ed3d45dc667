/* Levelled log lines on stderr. */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"


static const char *provend_log_names[] = { "debug", "info", "warn", "error" };

static uint64_t  provend_log_ids;

/* Written once at startup, before any worker thread exists. */
static provend_log_level_t provend_log_level = PROVEND_LOG_INFO;


void
provend_log_set_level(provend_log_level_t level)
{
    provend_log_level = level;
}


int
provend_log_level_parse(const char *name)
{
    size_t  i;

    for (i = 0; i < sizeof(provend_log_names) / sizeof(char *); i++) {
        if (strcmp(name, provend_log_names[i]) == 0) {
            return (int) i;
        }
    }

    return -1;
}


uint64_t
provend_log_next_id(void)
{
    return __atomic_add_fetch(&provend_log_ids, 1, __ATOMIC_RELAXED);
}


static void
provend_log_line(provend_log_level_t level, uint64_t id, const char *fmt,
    va_list ap)
{
    int        n;
    char       line[1536], msg[1024], *p;
    time_t     now;
    struct tm  tm;

    if (level < provend_log_level || level > PROVEND_LOG_ERROR) {
        return;
    }

    now = time(NULL);
    localtime_r(&now, &tm);

    n = (int) strftime(line, sizeof(line), "%Y/%m/%d %H:%M:%S ", &tm);
    n += snprintf(line + n, sizeof(line) - n, "[%s] %d#%d: ",
                  provend_log_names[level], (int) getpid(), (int) gettid());

    if (id != 0) {
        n += snprintf(line + n, sizeof(line) - n, "*%llu ",
                      (unsigned long long) id);
    }

    vsnprintf(msg, sizeof(msg), fmt, ap);

    /*
     * What callers quote (an op name, an app's message) cannot start a
     * line of its own: control bytes (and the backslash) are written as
     * \xNN.
     */
    for (p = msg; *p != '\0' && (size_t) n < sizeof(line) - 5; p++) {
        if ((unsigned char) *p < 0x20 || *p == 0x7f || *p == '\\') {
            n += snprintf(line + n, sizeof(line) - n, "\\x%02x",
                          (unsigned char) *p);
        } else {
            line[n++] = *p;
        }
    }

    line[n] = '\0';

    /* formatted first, then one write: lines from threads do not mix */
    fprintf(stderr, "%s\n", line);
}


void
provend_log(provend_log_level_t level, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    provend_log_line(level, 0, fmt, ap);
    va_end(ap);
}


void
provend_log_id(provend_log_level_t level, uint64_t id, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    provend_log_line(level, id, fmt, ap);
    va_end(ap);
}
