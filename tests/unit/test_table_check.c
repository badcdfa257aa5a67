/* test_table_check.c -- unit tests of the table check: per rule, a table that holds what
 * the definition accepts and one that does not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "delivery/table_check.h"
#include "testutil.h"

/* Checks one column defined as `want` against a table column of type `have`: fits is
 * 1 when no problem may be reported, 0 when exactly one must be. */
static void one(const char *want, const char *have, int fits)
{
    struct table_want w = {"c", {0}};
    const char *why;
    if (type_parse(&w.type, want, strlen(want), &why))
        fail_msg("definition type %s: %s", want, why);
    struct clickhouse_column h = {{0}, {0}, {0}};
    strcpy(h.name, "c");
    snprintf(h.type, sizeof h.type, "%s", have);
    struct table_problem p[2];
    size_t n = table_check(&w, 1, &h, 1, p, 2);
    if (fits && n)
        fail_msg("%s in a %s column: reported (%s), expected to fit", want, have, p[0].message);
    if (!fits && n != 1)
        fail_msg("%s in a %s column: %zu problems, expected 1", want, have, n);
    if (!fits && (strcmp(p[0].column, "c") || !strstr(p[0].message, have)))
        fail_msg("%s in %s: problem [%s: %s] does not name the column and type", want, have,
                 p[0].column, p[0].message);
}

static void test_same_type_fits(void **state)
{
    (void)state;
    static const char *types[] = {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16",
                                  "UInt32", "UInt64", "Float32", "Float64", "Decimal(10, 2)",
                                  "String", "Date", "DateTime", "UUID", "Array(Int32)",
                                  "Nullable(Int32)", "Array(Nullable(String))"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        one(types[i], types[i], 1);
}

static void test_integers(void **state)
{
    (void)state;
    one("Int32", "Int64", 1);   /* wider */
    one("Int64", "Int32", 0);   /* narrower */
    one("UInt16", "UInt32", 1);
    one("UInt16", "UInt8", 0);  /* 1000 would load as 232 */
    one("UInt8", "Int16", 1);   /* a signed type one size up holds every unsigned value */
    one("UInt8", "Int8", 0);    /* 200 does not fit */
    one("UInt32", "Int32", 0);
    one("UInt32", "Int64", 1);
    one("Int8", "UInt8", 0);    /* -1 */
    one("Int8", "UInt64", 0);
    one("Int32", "Float64", 1); /* exact within 53 bits */
    one("Int64", "Float64", 0);
    one("Int16", "Float32", 1);
    one("Int32", "Float32", 0);
    one("Int32", "Decimal(12, 2)", 1); /* 10 integer digits */
    one("Int32", "Decimal(11, 2)", 0);
    one("UInt64", "Decimal(38, 18)", 1);
    one("UInt64", "Decimal(38, 19)", 0);
}

static void test_floats_and_decimals(void **state)
{
    (void)state;
    one("Float32", "Float64", 1);
    one("Float64", "Float32", 0);
    one("Float64", "Decimal(38, 10)", 0);
    one("Decimal(10, 2)", "Decimal(12, 4)", 1);
    one("Decimal(10, 2)", "Decimal(10, 4)", 0); /* integer digits 8 -> 6 */
    one("Decimal(10, 4)", "Decimal(10, 2)", 0); /* scale 4 -> 2 */
    one("Decimal(10, 2)", "Float64", 0);
    one("Decimal(9, 2)", "Decimal64(2)", 1);
}

static void test_wrappers(void **state)
{
    (void)state;
    one("Int32", "Nullable(Int32)", 1);
    one("Nullable(Int32)", "Int32", 0);            /* a null would not load */
    one("Nullable(Int32)", "Nullable(Int64)", 1);
    one("String", "LowCardinality(String)", 1);
    one("LowCardinality(String)", "String", 1);
    one("Int32", "LowCardinality(Int64)", 1);
    one("LowCardinality(Nullable(String))", "LowCardinality(Nullable(String))", 1);
    one("Nullable(String)", "LowCardinality(String)", 0);
    one("Array(Int32)", "Array(Int64)", 1);
    one("Array(Int64)", "Array(Int32)", 0);
    one("Array(Int32)", "Array(Array(Int32))", 0);
    one("Array(Array(Int32))", "Array(Int32)", 0);
    one("Array(Nullable(Int32))", "Array(Int32)", 0);
    one("Array(Int32)", "Array(Nullable(Int32))", 1);
}

static void test_text(void **state)
{
    (void)state;
    /* Every cell is text a String keeps as sent. */
    one("Int32", "String", 1);
    one("Date", "String", 1);
    one("Array(Int32)", "String", 1);
    one("Nullable(Int32)", "String", 0); /* null would load as the text \N */
    one("Nullable(Int32)", "Nullable(String)", 1);
    /* But text in a narrower column wraps or is refused. */
    one("String", "UInt8", 0);
    one("String", "FixedString(4)", 0);
    one("String", "Date", 0);
    /* An Enum for a String: the user validates in the database. */
    one("String", "Enum8('a' = 1, 'b' = 2)", 1);
    one("String", "Enum16('a' = 1)", 1);
    one("LowCardinality(String)", "Enum8('a' = 1)", 1);
    one("Int8", "Enum8('a' = 1)", 0);
    one("UUID", "UUID", 1);
    one("UUID", "FixedString(16)", 0);
}

static void test_dates(void **state)
{
    (void)state;
    one("Date", "Date32", 1);
    one("Date32", "Date", 0);
    one("Date", "DateTime", 0); /* 18.16 refuses a bare date for a DateTime (Code 41) */
    one("DateTime", "Date", 0);
    one("DateTime", "DateTime('UTC')", 1);
    one("DateTime", "DateTime64(3)", 1);
    one("DateTime64(3)", "DateTime64(6)", 1);
    one("DateTime64(6)", "DateTime64(3)", 0);
    one("DateTime64(3)", "DateTime", 0);
    one("DateTime", "DateTime('Europe/Paris')", 0); /* the cells are UTC */
    one("Bool", "Bool", 1);
    one("Bool", "UInt8", 0); /* true/false are Code 27 in a UInt8 */
    one("Int32", "IPv4", 0); /* a type the check does not know is never assumed to fit */
}

static void test_columns_by_name(void **state)
{
    (void)state;
    struct table_want w[3] = {{"a", {0}}, {"b", {0}}, {"c", {0}}};
    w[0].type.kind = TYPE_STRING;
    w[1].type.kind = TYPE_UINT16;
    w[2].type.kind = TYPE_STRING;
    /* Another order and an extra column with a default: fine, the INSERT names them. */
    struct clickhouse_column h[4] = {{"extra", "UInt64", "DEFAULT"},
                                     {"c", "String", ""},
                                     {"b", "UInt32", ""},
                                     {"a", "String", ""}};
    struct table_problem p[4];
    assert_int_equal(table_check(w, 3, h, 4, p, 4), 0);
    /* c missing, b narrower, a MATERIALIZED: three problems, each named. */
    struct clickhouse_column bad[3] = {{"extra", "UInt64", ""},
                                       {"b", "UInt8", ""},
                                       {"a", "String", "MATERIALIZED"}};
    assert_int_equal(table_check(w, 3, bad, 3, p, 4), 3);
    assert_string_equal(p[0].column, "a");
    assert_non_null(strstr(p[0].message, "MATERIALIZED"));
    assert_string_equal(p[1].column, "b");
    assert_non_null(strstr(p[1].message, "UInt8 cannot hold every UInt16"));
    assert_string_equal(p[2].column, "c");
    assert_non_null(strstr(p[2].message, "missing"));
    /* Room for one: the count says there are more. */
    assert_int_equal(table_check(w, 3, bad, 3, p, 1), 3);
    /* Names are case-sensitive in ClickHouse. */
    struct clickhouse_column upper[3] = {{"A", "String", ""}, {"b", "UInt16", ""},
                                         {"c", "String", ""}};
    assert_int_equal(table_check(w, 3, upper, 3, p, 4), 1);
    assert_string_equal(p[0].column, "a");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_type_fits),   cmocka_unit_test(test_integers),
        cmocka_unit_test(test_floats_and_decimals), cmocka_unit_test(test_wrappers),
        cmocka_unit_test(test_text),             cmocka_unit_test(test_dates),
        cmocka_unit_test(test_columns_by_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
