/* test_postgres.c -- unit tests of the PostgreSQL destination's parts that need no server:
 * the SQLSTATE classification, the refused row from COPY's error context, and the URL
 * checks (a password in the URL is refused and never repeated). The rest runs against a real
 * server in tests/integration/test_postgres_destination.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "delivery/postgres.h"
#include "testutil.h"

static void test_classify(void **state)
{
    (void)state;
    static const struct {
        const char *sqlstate;
        enum send_result want;
    } cases[] = {
        {"22P02", SEND_REFUSED}, /* invalid text representation */
        {"22003", SEND_REFUSED}, /* numeric value out of range */
        {"22021", SEND_REFUSED}, /* character not in repertoire (bad UTF-8) */
        {"23502", SEND_REFUSED}, /* not null violation */
        {"23505", SEND_REFUSED}, /* unique violation */
        {"23514", SEND_REFUSED}, /* check violation */
        {"42P01", SEND_TABLE},   {"42703", SEND_TABLE}, {"42804", SEND_TABLE},
        {"42501", SEND_TABLE},
        {"28P01", SEND_CONFIG},  {"28000", SEND_CONFIG}, {"3D000", SEND_CONFIG},
        {"57P01", SEND_RETRY},   {"57P03", SEND_RETRY},  {"40001", SEND_RETRY},
        {"40P01", SEND_RETRY},   {"53100", SEND_RETRY},  {"53300", SEND_RETRY},
        {"08006", SEND_RETRY},   {"XX000", SEND_RETRY},  {"", SEND_RETRY},
        {NULL, SEND_RETRY},      {"2200", SEND_RETRY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (postgres_classify(cases[i].sqlstate) != cases[i].want)
            fail_msg("%s: %d, expected %d", cases[i].sqlstate ? cases[i].sqlstate : "(null)",
                     postgres_classify(cases[i].sqlstate), cases[i].want);
}

static void test_copy_line(void **state)
{
    (void)state;
    assert_int_equal(postgres_copy_line("COPY trips, line 3, column total: \"x\"", "trips"), 3);
    assert_int_equal(postgres_copy_line("COPY trips, line 12: \"1,2\"", "trips"), 12);
    /* another table's COPY, a table whose name is a prefix, or no line: unknown */
    assert_int_equal(postgres_copy_line("COPY trips2, line 3", "trips"), -1);
    assert_int_equal(postgres_copy_line("COPY trips", "trips"), -1);
    assert_int_equal(postgres_copy_line(NULL, "trips"), -1);
    /* a value quoting ", line 9" inside the context does not fool it */
    assert_int_equal(postgres_copy_line("COPY t, line 2, column s: \"COPY t, line 9\"", "t"), 2);
    /* a trigger's context first, the COPY's on a later line */
    assert_int_equal(postgres_copy_line("PL/pgSQL function f() line 3 at RAISE\nCOPY t, line 7",
                                        "t"),
                     7);
}

static void test_url(void **state)
{
    (void)state;
    char err[256];
    static const char *const refused[] = {
        "postgresql://ingest:hunter2@127.0.0.1/events",
        "postgresql://ingest@127.0.0.1/events?password=hunter2",
        "clickhouse://127.0.0.1/events",
        "postgresql://[::1/events%zz",
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        struct postgres_config cfg = {.url = refused[i]};
        struct postgres *pg = postgres_open(&cfg, err, sizeof err);
        if (pg)
            fail_msg("%s: accepted", refused[i]);
        if (strstr(err, "hunter2") || strstr(err, "%zz"))
            fail_msg("%s: the message repeats the URL: %s", refused[i], err);
    }
    struct postgres_config ok = {.url = "postgresql://ingest@127.0.0.1:5432/events?sslmode=require"};
    struct postgres *pg = postgres_open(&ok, err, sizeof err);
    assert_non_null(pg);
    postgres_close(pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_copy_line),
        cmocka_unit_test(test_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
