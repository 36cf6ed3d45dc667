/*
 * Cron expressions for runOnSchedule, and firing a handler on a worker.
 * See schedule.h.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "log.h"
#include "proven.h"
#include "schedule.h"


#define provend_cron_err(...)                                              \
    do { if (err) { snprintf(err, errlen, __VA_ARGS__); } } while (0)

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
        provend_cron_err("cron expression too long");
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
        provend_cron_err("\"%s\" is not five cron fields", expr);
        return PROVEN_ERR;
    }

    for (i = 0; i < 5; i++) {
        if (provend_cron_field(field[i], lo[i], hi[i], &bits, &any)
            != PROVEN_OK)
        {
            provend_cron_err("cron field \"%s\" is not valid for %d-%d",
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


/* A definite text item as a C string into out; PROVEN_ERR if not. */
static int
provend_schedule_text(const cbor_item_t *item, char *out, size_t size)
{
    size_t  len;

    if (item == NULL || !cbor_isa_string(item)
        || !cbor_string_is_definite(item)
        || (len = cbor_string_length(item)) >= size)
    {
        return PROVEN_ERR;
    }
    memcpy(out, cbor_string_handle(item), len);
    out[len] = '\0';
    return PROVEN_OK;
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
        provend_cron_err("the package has no handler list");
        goto done;
    }

    count = 0;
    for (i = 0; i < cbor_array_size(handlers); i++) {
        h = cbor_array_handle(handlers)[i];
        if (!cbor_isa_map(h)
            || provend_schedule_text(proven_cbor_map_get(h, "kind"), kind,
                                     sizeof(kind)) != PROVEN_OK
            || strcmp(kind, "schedule") != 0)
        {
            continue;
        }

        if (count == PROVEND_SCHEDULES_MAX) {
            provend_cron_err("more than %d schedules", PROVEND_SCHEDULES_MAX);
            goto done;
        }
        if (list == NULL) {
            list = calloc(PROVEND_SCHEDULES_MAX, sizeof(*list));
            if (list == NULL) {
                provend_cron_err("out of memory");
                goto done;
            }
        }

        c = &list[count];
        if (provend_schedule_text(proven_cbor_map_get(h, "module"), module,
                                  sizeof(module)) != PROVEN_OK
            || provend_schedule_text(proven_cbor_map_get(h, "name"), name,
                                     sizeof(name)) != PROVEN_OK
            || provend_schedule_text(proven_cbor_map_get(h, "cron"), expr,
                                     sizeof(expr)) != PROVEN_OK
            || (size_t) snprintf(c->handler, sizeof(c->handler), "%s#%s",
                                 module, name) >= sizeof(c->handler)
            || provend_cron_parse(expr, c, err, errlen) != PROVEN_OK)
        {
            if (err && err[0] == '\0') {   /* not a cron message */
                provend_cron_err("a schedule handler of the manifest is "
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


/* ---- firing ------------------------------------------------------------- */

typedef struct {
    uv_pipe_t      pipe;
    uv_connect_t   connect;
    uv_write_t     write;
    uv_timer_t     timer;
    uint8_t       *frame;
    size_t         frame_len;
    uint8_t       *answer;
    size_t         have;
    unsigned       handles;
    char           app[65];
    char           handler[PROVEND_SCHEDULE_NAME_MAX + 1];
} provend_fire_t;


static void
provend_fire_closed(uv_handle_t *handle)
{
    provend_fire_t  *f;

    f = handle->data;
    if (--f->handles > 0) {
        return;
    }
    free(f->frame);
    free(f->answer);
    free(f);
}


static void
provend_fire_end(provend_fire_t *f, const char *outcome)
{
    if (outcome != NULL) {
        provend_warn("apps: schedule %s of %s: %s", f->handler, f->app,
                     outcome);
    }
    if (!uv_is_closing((uv_handle_t *) &f->pipe)) {
        uv_close((uv_handle_t *) &f->pipe, provend_fire_closed);
    }
    if (!uv_is_closing((uv_handle_t *) &f->timer)) {
        uv_close((uv_handle_t *) &f->timer, provend_fire_closed);
    }
}


static void
provend_fire_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    provend_fire_t  *f;

    (void) suggested;
    f = handle->data;
    buf->base = (char *) f->answer + f->have;
    buf->len = PROVEND_FIRE_ANSWER_MAX - f->have;
}


static void
provend_fire_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    char               err[PROVEN_ERR_LEN], msg[512];
    uint32_t           len;
    provend_fire_t    *f;
    proven_response_t  res;

    (void) buf;
    f = stream->data;
    if (nread < 0) {
        provend_fire_end(f, "the worker closed the connection");
        return;
    }
    f->have += (size_t) nread;

    if (f->have < PROVEN_FRAME_HEADER
        || proven_frame_length(f->answer, &len, err, sizeof(err))
           != PROVEN_OK)
    {
        if (f->have == PROVEND_FIRE_ANSWER_MAX) {
            provend_fire_end(f, "the answer is too long");
        }
        return;
    }
    if (len > PROVEND_FIRE_ANSWER_MAX - PROVEN_FRAME_HEADER) {
        provend_fire_end(f, "the answer is too long");
        return;
    }
    if (f->have < PROVEN_FRAME_HEADER + len) {
        return;
    }

    if (proven_response_decode(f->answer + PROVEN_FRAME_HEADER, len, &res,
                               err, sizeof(err)) != PROVEN_OK)
    {
        provend_fire_end(f, "a malformed answer");
        return;
    }
    if (res.ok) {
        provend_debug("apps: schedule %s of %s ran", f->handler, f->app);
        provend_fire_end(f, NULL);
    } else {
        snprintf(msg, sizeof(msg), "%.64s: %.256s", res.code, res.message);
        provend_fire_end(f, msg);
    }
    proven_response_free(&res);
}


static void
provend_fire_written(uv_write_t *req, int status)
{
    provend_fire_t  *f;

    f = req->data;
    if (status != 0) {
        provend_fire_end(f, uv_strerror(status));
        return;
    }
    uv_read_start((uv_stream_t *) &f->pipe, provend_fire_alloc,
                  provend_fire_read);
}


static void
provend_fire_connected(uv_connect_t *req, int status)
{
    uv_buf_t         buf;
    provend_fire_t  *f;

    f = req->data;
    if (status != 0) {
        provend_fire_end(f, uv_strerror(status));
        return;
    }

    buf = uv_buf_init((char *) f->frame, (unsigned) f->frame_len);
    if (uv_write(&f->write, (uv_stream_t *) &f->pipe, &buf, 1,
                 provend_fire_written) != 0)
    {
        provend_fire_end(f, "cannot write");
    }
}


static void
provend_fire_timeout(uv_timer_t *timer)
{
    provend_fire_end(timer->data, "no answer in time");
}


void
provend_schedule_fire(void *loop, const char *socket_path, const char *app,
    const char *handler, uint64_t scheduled_at)
{
    int              ok;
    char             err[PROVEN_ERR_LEN];
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
        ok = proven_cbor_map_put(req, "args", args) == PROVEN_OK && ok;
        args = NULL;
        ok = ok && proven_frame_encode(req, &f->frame, &f->frame_len, err,
                                       sizeof(err)) == PROVEN_OK;
        ok = ok && (f->answer = malloc(PROVEND_FIRE_ANSWER_MAX)) != NULL;
    }
    if (args != NULL) {
        cbor_decref(&args);
    }
    if (req != NULL) {
        cbor_decref(&req);
    }
    if (!ok) {
        provend_error("apps: cannot build the schedule frame for %s", app);
        free(f->frame);
        free(f);
        return;
    }

    uv_pipe_init(loop, &f->pipe, 0);
    uv_timer_init(loop, &f->timer);
    f->pipe.data = f;
    f->timer.data = f;
    f->connect.data = f;
    f->write.data = f;
    f->handles = 2;

    uv_timer_start(&f->timer, provend_fire_timeout, PROVEND_FIRE_TIMEOUT_MS,
                   0);
    uv_unref((uv_handle_t *) &f->timer);
    uv_pipe_connect(&f->connect, &f->pipe, socket_path,
                    provend_fire_connected);
}
