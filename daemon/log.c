/* Levelled log lines on stderr. */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"


static const char *provend_log_names[] = { "debug", "info", "warn", "error" };

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


void
provend_log(provend_log_level_t level, const char *fmt, ...)
{
    char     line[1024];
    int      n;
    va_list  ap;

    if (level < provend_log_level || level > PROVEND_LOG_ERROR) {
        return;
    }

    /* Format first, then one write, so lines from threads do not mix. */
    n = snprintf(line, sizeof(line), "provend: %s: ",
                 provend_log_names[level]);

    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);

    fprintf(stderr, "%s\n", line);
}
