/*
 * Cron expressions for runOnSchedule, and firing a handler on a worker.
 * See schedule.h.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include <uv.h>

#include "core/log.h"
#include "core/stream.h"
#include "proven.h"
#include "schedule.h"


#define PROVEND_FIRE_TIMEOUT_MS  (310 * 1000)   /* past any handler's own */
#define PROVEND_FIRE_ANSWER_MAX  (64 * 1024)


/* A number of at most 3 digits at *p, moving *p past it; -1 if none. */
static int
provend_cron_number(const char **p)
{
    int  n, digits;

    n = 0;
    for (digits = 0; **p >= '0' && **p <= '9'; (*p)++) {
        if (++digits > 3) {
            return -1;
        }
        n = n * 10 + (**p - '0');
    }
    return digits ? n : -1;
}


/* One field ("*", "a", "a-b", each maybe "/n", in a list) into bits. */
static int
provend_cron_field(const char *field, int lo, int hi, uint64_t *bits,
    int *any)
{
    int          a, b, step, n, single;
    const char  *p;

    *bits = 0;
    *any = strcmp(field, "*") == 0;
    p = field;

    for ( ;; ) {
        single = 0;
        if (*p == '*') {
            p++;
            a = lo;
            b = hi;
        } else {
            a = provend_cron_number(&p);
            b = a;
            single = 1;
            if (*p == '-') {
                p++;
                b = provend_cron_number(&p);
                single = 0;
            }
        }

        step = 1;
        if (*p == '/') {
            p++;
            step = provend_cron_number(&p);
            if (single) {
                b = hi;                 /* "a/n": from a to the end */
            }
        }

        if (a < lo || b > hi || a > b || step < 1 || step > hi) {
            return PROVEN_ERR;
        }
        for (n = a; n <= b; n += step) {
            *bits |= (uint64_t) 1 << n;
        }

        if (*p == '\0') {
            break;
        }
        if (*p++ != ',') {
            return PROVEN_ERR;
        }
    }

    return PROVEN_OK;
}


int
provend_cron_parse(const char *expr, provend_cron_t *cron, char *err,
    size_t errlen)
{
    int            i, any;
    char           copy[128], *field[6], *save, *tok;
    uint64_t       bits;
    static const int  lo[] = { 0, 0, 1, 1, 0 };
    static const int  hi[] = { 59, 23, 31, 12, 6 };

    if (strlen(expr) >= sizeof(copy)) {
        proven_errf(err, errlen, "cron expression too long");
        return PROVEN_ERR;
    }
    snprintf(copy, sizeof(copy), "%s", expr);

    i = 0;
    for (tok = strtok_r(copy, " \t", &save); tok != NULL && i < 6;
         tok = strtok_r(NULL, " \t", &save))
    {
        field[i++] = tok;
    }
    if (i != 5) {
        proven_errf(err, errlen, "\"%s\" is not five cron fields", expr);
        return PROVEN_ERR;
    }

    for (i = 0; i < 5; i++) {
        if (provend_cron_field(field[i], lo[i], hi[i], &bits, &any)
            != PROVEN_OK)
        {
            proven_errf(err, errlen, "cron field \"%s\" is not valid for %d-%d",
                        field[i], lo[i], hi[i]);
            return PROVEN_ERR;
        }
        switch (i) {
        case 0: cron->minutes = bits; break;
        case 1: cron->hours = (uint32_t) bits; break;
        case 2: cron->days = (uint32_t) bits; cron->days_any = any; break;
        case 3: cron->months = (uint16_t) bits; break;
        default: cron->weekdays = (uint8_t) bits; cron->weekdays_any = any;
        }
    }

    return PROVEN_OK;
}


int
provend_cron_due(const provend_cron_t *cron, const struct tm *utc)
{
    int  day, weekday;

    if (!(cron->minutes & ((uint64_t) 1 << utc->tm_min))
        || !(cron->hours & (1u << utc->tm_hour))
        || !(cron->months & (1u << (utc->tm_mon + 1))))
    {
        return 0;
    }

    day = (cron->days & (1u << utc->tm_mday)) != 0;
    weekday = (cron->weekdays & (1u << utc->tm_wday)) != 0;

    if (cron->days_any && cron->weekdays_any) {
        return 1;
    }
    if (cron->days_any) {
        return weekday;
    }
    if (cron->weekdays_any) {
        return day;
    }
    return day || weekday;
}


int
provend_schedules_of(const cbor_item_t *handlers, provend_cron_t **out,
    size_t *n, char *err, size_t errlen)
{
    int              rc;
    char             kind[16], module[PROVEND_SCHEDULE_NAME_MAX + 1];
    char             name[PROVEND_SCHEDULE_NAME_MAX + 1], expr[128];
    size_t           i, count;
    cbor_item_t     *h;
    provend_cron_t  *list, *c;

    *out = NULL;
    *n = 0;
    if (err) {
        err[0] = '\0';
    }

    rc = PROVEN_ERR;
    list = NULL;
    if (handlers == NULL || !cbor_isa_array(handlers)) {
        proven_errf(err, errlen, "the package has no handler list");
        goto done;
    }

    count = 0;
    for (i = 0; i < cbor_array_size(handlers); i++) {
        h = cbor_array_handle(handlers)[i];
        if (!cbor_isa_map(h)
            || proven_cbor_text_into(proven_cbor_map_get(h, "kind"), kind,
                                     sizeof(kind)) != PROVEN_OK
            || strcmp(kind, "schedule") != 0)
        {
            continue;
        }

        if (count == PROVEND_SCHEDULES_MAX) {
            proven_errf(err, errlen,
                        "more than %d schedules", PROVEND_SCHEDULES_MAX);
            goto done;
        }
        if (list == NULL) {
            list = calloc(PROVEND_SCHEDULES_MAX, sizeof(*list));
            if (list == NULL) {
                proven_errf(err, errlen, "out of memory");
                goto done;
            }
        }

        c = &list[count];
        if (proven_cbor_text_into(proven_cbor_map_get(h, "module"), module,
                                  sizeof(module)) != PROVEN_OK
            || proven_cbor_text_into(proven_cbor_map_get(h, "name"), name,
                                     sizeof(name)) != PROVEN_OK
            || proven_cbor_text_into(proven_cbor_map_get(h, "cron"), expr,
                                     sizeof(expr)) != PROVEN_OK
            || (size_t) snprintf(c->handler, sizeof(c->handler), "%s#%s",
                                 module, name) >= sizeof(c->handler)
            || provend_cron_parse(expr, c, err, errlen) != PROVEN_OK)
        {
            if (err && err[0] == '\0') {   /* not a cron message */
                proven_errf(err, errlen,
                            "a schedule handler of the manifest is "
                            "malformed");
            }
            goto done;
        }
        count++;
    }

    *out = list;
    *n = count;
    list = NULL;
    rc = PROVEN_OK;

done:

    free(list);
    return rc;
}


/* ---- calling a worker ---------------------------------------------------- */

/* One call on a stream of its own, closed once it is answered. */
typedef struct {
    provend_stream_t          stream;
    provend_worker_answer_pt  done;
    void                     *data;
} provend_call_t;


/* Both owners below are the stream's data, freed with its handles. */
static void
provend_stream_owner_free(provend_stream_t *s)
{
    free(s->data);
}


static void
provend_call_answered(void *data, const char *failure,
    proven_response_t *res)
{
    provend_call_t  *c;

    c = data;
    c->done(c->data, failure, res);
    provend_stream_close(&c->stream);
}


int
provend_worker_call(void *loop, const char *socket_path, cbor_item_t *request,
    uint64_t timeout_ms, size_t answer_max, provend_worker_answer_pt done,
    void *data)
{
    provend_call_t  *c;

    if (answer_max <= PROVEN_FRAME_HEADER) {
        return PROVEN_ERR;
    }

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return PROVEN_ERR;
    }

    c->done = done;
    c->data = data;
    c->stream.data = c;
    c->stream.on_closed = provend_stream_owner_free;

    if (provend_stream_connect(loop, &c->stream, socket_path,
                               answer_max - PROVEN_FRAME_HEADER)
        != PROVEN_OK)
    {
        free(c);
        return PROVEN_ERR;
    }

    if (provend_stream_call(&c->stream, request, timeout_ms,
                            provend_call_answered, c) != PROVEN_OK)
    {
        /* closed: freed once its handles are */
        c->done = NULL;
        provend_stream_close(&c->stream);
        return PROVEN_ERR;
    }

    return PROVEN_OK;
}


/* ---- a kept line to a worker --------------------------------------------- */

struct provend_chan_s {
    provend_stream_t  stream;
};


provend_chan_t *
provend_chan_open(void *loop, const char *socket_path)
{
    provend_chan_t  *ch;

    ch = calloc(1, sizeof(*ch));
    if (ch == NULL) {
        return NULL;
    }

    ch->stream.data = ch;
    ch->stream.on_closed = provend_stream_owner_free;

    if (provend_stream_connect(loop, &ch->stream, socket_path,
                               PROVEN_FRAME_MAX) != PROVEN_OK)
    {
        free(ch);
        return NULL;
    }

    return ch;
}


int
provend_chan_usable(provend_chan_t *ch)
{
    return provend_stream_usable(&ch->stream);
}


int
provend_chan_call(provend_chan_t *ch, cbor_item_t *request,
    uint64_t timeout_ms, provend_worker_answer_pt done, void *data)
{
    return provend_stream_call(&ch->stream, request, timeout_ms, done, data);
}


/* The owner lets go: calls waiting fail, the line closes and frees. */
void
provend_chan_release(provend_chan_t *ch)
{
    provend_stream_close(&ch->stream);
}


/* ---- firing ------------------------------------------------------------- */

typedef struct {
    char           app[65];
    char           handler[PROVEND_SCHEDULE_NAME_MAX + 1];
} provend_fire_t;


static void
provend_fire_done(void *data, const char *failure, proven_response_t *res)
{
    provend_fire_t  *f;

    f = data;
    if (failure != NULL) {
        provend_warn("apps: schedule %s of %s: %s", f->handler, f->app,
                     failure);
    } else if (!res->ok) {
        provend_warn("apps: schedule %s of %s: %.64s: %.256s", f->handler,
                     f->app, res->code, res->message);
    } else {
        provend_debug("apps: schedule %s of %s ran", f->handler, f->app);
    }
    free(f);
}


void
provend_schedule_fire(void *loop, const char *socket_path, const char *app,
    const char *handler, uint64_t scheduled_at)
{
    int              ok;
    cbor_item_t     *req, *args;
    provend_fire_t  *f;

    f = calloc(1, sizeof(*f));
    if (f == NULL) {
        provend_error("apps: out of memory firing a schedule of %s", app);
        return;
    }
    snprintf(f->app, sizeof(f->app), "%s", app);
    snprintf(f->handler, sizeof(f->handler), "%s", handler);

    req = proven_request_new(1, "app.run");
    args = cbor_new_definite_map(1);
    ok = req != NULL && args != NULL;
    if (ok) {
        /* map_put takes the value's reference, whatever it returns */
        ok = proven_cbor_map_put(args, "scheduledAt",
                                 cbor_build_uint64(scheduled_at * 1000))
             == PROVEN_OK;
        ok = proven_cbor_map_put(req, "handler", cbor_build_string(handler))
             == PROVEN_OK && ok;
        ok = proven_cbor_map_put(req, "trigger", cbor_build_string("schedule"))
             == PROVEN_OK && ok;
        ok = proven_cbor_map_put(req, "args", args) == PROVEN_OK && ok;
        args = NULL;
        ok = ok && provend_worker_call(loop, socket_path, req,
                                       PROVEND_FIRE_TIMEOUT_MS,
                                       PROVEND_FIRE_ANSWER_MAX,
                                       provend_fire_done, f) == PROVEN_OK;
    }
    if (args != NULL) {
        cbor_decref(&args);
    }
    if (req != NULL) {
        cbor_decref(&req);
    }
    if (!ok) {
        provend_error("apps: cannot fire the schedule %s of %s", handler,
                      app);
        free(f);
    }
}
