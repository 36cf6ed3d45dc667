/*
 * runOnSchedule: UTC cron expressions of five fields (minute hour day
 * month weekday; "*", "a", "a-b", "*\/n", "a-b/n" and lists of those) and
 * firing a handler by name on an app's worker ("app.run" over its socket).
 * As in cron, when both day and weekday are restricted, either matching is
 * enough.
 */

#ifndef PROVEND_SCHEDULE_H
#define PROVEND_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cbor.h>

#include "proven.h"

#define PROVEND_SCHEDULE_NAME_MAX  255
#define PROVEND_SCHEDULES_MAX      64

typedef struct {
    char      handler[PROVEND_SCHEDULE_NAME_MAX + 1];   /* module#export */
    uint64_t  minutes;          /* bit n: minute n */
    uint32_t  hours;
    uint32_t  days;             /* bit n: day n, 1..31 */
    uint16_t  months;           /* bit n: month n, 1..12 */
    uint8_t   weekdays;         /* bit n: day n, 0 (Sunday)..6 */
    unsigned  days_any:1;       /* day field was "*" */
    unsigned  weekdays_any:1;
} provend_cron_t;

int provend_cron_parse(const char *expr, provend_cron_t *cron, char *err,
    size_t errlen);

/* Whether cron fires in the minute of utc. */
int provend_cron_due(const provend_cron_t *cron, const struct tm *utc);

/*
 * The schedule handlers among a manifest's handlers (a CBOR array): a
 * malloc()ed array, *n of them, NULL when none; PROVEN_ERR with err for
 * a bad one.
 */
int provend_schedules_of(const cbor_item_t *handlers, provend_cron_t **out,
    size_t *n, char *err, size_t errlen);

/*
 * One call to the worker listening on socket_path: one connection, one
 * frame (request, a map with "op"; it may be released on return), one
 * answer of at most answer_max bytes.  done(data, failure, res) runs once,
 * later, on the loop: failure says why there is no answer, or it is NULL
 * and res (freed after done returns) is the answer.  PROVEN_ERR (done
 * never runs): out of memory or request not encodable.
 */
typedef void (*provend_worker_answer_pt)(void *data, const char *failure,
    proven_response_t *res);

int provend_worker_call(void *loop, const char *socket_path,
    cbor_item_t *request, uint64_t timeout_ms, size_t answer_max,
    provend_worker_answer_pt done, void *data);

/*
 * A kept line to a worker: calls share one connection, each answered by
 * its id.  provend_chan_call sets the request's "id" (request: without
 * one; it may be released on return); done runs once, later: an answer,
 * or a failure ("no answer in time" past timeout_ms, the line broken).
 * A broken line (provend_chan_usable 0) takes no more calls: make a new
 * one.  Release frees it once its handles close; calls waiting are failed.
 */
typedef struct provend_chan_s  provend_chan_t;

provend_chan_t *provend_chan_open(void *loop, const char *socket_path);
int provend_chan_usable(provend_chan_t *ch);
int provend_chan_call(provend_chan_t *ch, cbor_item_t *request,
    uint64_t timeout_ms, provend_worker_answer_pt done, void *data);
void provend_chan_release(provend_chan_t *ch);

/*
 * Asks the worker listening on socket_path to run handler (one
 * connection, one "app.run" frame); the outcome is logged.  loop is a
 * uv_loop_t *.
 */
void provend_schedule_fire(void *loop, const char *socket_path,
    const char *app, const char *handler, uint64_t scheduled_at);

#endif /* PROVEND_SCHEDULE_H */
