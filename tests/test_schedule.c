/* Cron expressions of runOnSchedule: what they accept and when they fire. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "proven.h"
#include "apps/schedule.h"


/* Whether expr fires at the UTC minute "YYYY-MM-DD HH:MM". */
static int
due(const char *expr, const char *when)
{
    char            err[PROVEN_ERR_LEN];
    struct tm       tm;
    time_t          t;
    provend_cron_t  cron;

    memset(&tm, 0, sizeof(tm));
    assert_non_null(strptime(when, "%Y-%m-%d %H:%M", &tm));
    t = timegm(&tm);
    gmtime_r(&t, &tm);              /* fills in the weekday */

    assert_int_equal(provend_cron_parse(expr, &cron, err, sizeof(err)),
                     PROVEN_OK);
    return provend_cron_due(&cron, &tm);
}


static void
test_fields(void **state)
{
    (void) state;

    assert_true(due("* * * * *", "2026-11-30 20:31"));
    assert_true(due("*/5 * * * *", "2026-11-30 20:35"));
    assert_false(due("*/5 * * * *", "2026-11-30 20:31"));
    assert_true(due("30 20 * * *", "2026-11-30 20:30"));
    assert_false(due("30 20 * * *", "2026-11-30 21:30"));
    assert_true(due("0-10/5 * * * *", "2026-11-30 20:10"));
    assert_false(due("0-10/5 * * * *", "2026-11-30 20:15"));
    assert_true(due("1,2,58 * * * *", "2026-11-30 20:58"));
    assert_true(due("0 0 1 1 *", "2027-01-01 00:00"));
    assert_false(due("0 0 1 2 *", "2027-01-01 00:00"));
    assert_true(due("10/20 * * * *", "2026-11-30 20:50"));
    assert_false(due("10/20 * * * *", "2026-11-30 20:40"));
    assert_true(due("5-5/2 * * * *", "2026-11-30 20:05"));
    assert_false(due("5-5/2 * * * *", "2026-11-30 20:07"));
}


/* As in cron: with day and weekday both restricted, either will do. */
static void
test_day_or_weekday(void **state)
{
    (void) state;

    /* 2026-11-30 is a Monday */
    assert_true(due("0 12 * * 1", "2026-11-30 12:00"));
    assert_false(due("0 12 * * 2", "2026-11-30 12:00"));
    assert_true(due("0 12 15 * 1", "2026-11-30 12:00"));
    assert_true(due("0 12 30 * 2", "2026-11-30 12:00"));
    assert_false(due("0 12 15 * 2", "2026-11-30 12:00"));
    assert_true(due("0 12 30 * *", "2026-11-30 12:00"));
}


static void
test_refused(void **state)
{
    char            err[PROVEN_ERR_LEN];
    size_t          i;
    provend_cron_t  cron;

    static const char  *bad[] = {
        "", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *",
        "* * 0 * *", "* * 32 * *", "* * * 13 *", "* * * * 7",
        "5-1 * * * *", "*/0 * * * *", "a * * * *", "1,,2 * * * *",
        "*/ * * * *", "1- * * * *", "-1 * * * *",
        "99999999999999999999 * * * *", NULL
    };

    (void) state;

    for (i = 0; bad[i] != NULL; i++) {
        assert_int_equal(provend_cron_parse(bad[i], &cron, err,
                                            sizeof(err)), PROVEN_ERR);
    }
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_day_or_weekday),
        cmocka_unit_test(test_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
