/*
 * provend's error codes and the HTTP statuses nginx answers them with: one
 * table for every module, so a code means the same on every route.
 */

#include <string.h>

#include "proven.h"


static const struct {
    const char  *code;
    int          status;
} proven_statuses[] = {
    { "bad_request",        400 },
    { "bad_message",        400 },
    { "unknown_session",    401 },
    { "bad_signature",      401 },
    { "forbidden",          403 },
    { "not_found",          404 },
    { "method_not_allowed", 405 },
    { "replayed",           409 },
    { "rate_limited",       429 },
    { "handler_error",      500 },
    { "busy",               503 },
    { "timeout",            504 },
};


int
proven_status_of(const char *code, int otherwise)
{
    size_t  i;

    for (i = 0; i < sizeof(proven_statuses) / sizeof(proven_statuses[0]);
         i++)
    {
        if (strcmp(code, proven_statuses[i].code) == 0) {
            return proven_statuses[i].status;
        }
    }

    return otherwise;
}
