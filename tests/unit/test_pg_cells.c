/* test_pg_cells.c -- unit tests of the PostgreSQL cell conversion: every type's cell as
 * ndingest writes it and as COPY ... (FORMAT csv) must read it, hostile strings, refusals;
 * and the PostgreSQL type of every ClickHouse type. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "delivery/pg_cells.h"
#include "schema_pg.h"
#include "testutil.h"

/* A one-column dataset of the given type. */
static struct datasource *one(const char *type)
{
    char def[512], err[512];
    int n = snprintf(def, sizeof def, "SCHEMA >\n    `c` %s `json:$.c`\n", type);
    struct datasource *ds = datasource_parse("t.datasource", def, (size_t)n, err, sizeof err);
    if (!ds)
        fail_msg("%s: %s", type, err);
    return ds;
}

/* Converts body (exact-size copy, so ASan sees overreads) for rows; want is the output, or
 * NULL when refused with a message containing why at (row, column). */
static void conv(const struct pg_rows *rows, const char *body, size_t len, const char *want,
                 size_t wantlen, long row, long column, const char *why)
{
    char *copy = tu_exact(body, len);
    struct buf out = {0}, scratch = {0};
    struct pg_refusal ref = {0};
    long got = pg_cells_batch(rows, copy, len, &out, &scratch, &ref);
    if (want) {
        if (got < 0)
            fail_msg("[%.*s]: refused at %ld/%ld: %s", (int)len, body, ref.row, ref.column,
                     ref.why);
        if (out.len != wantlen || (wantlen && memcmp(out.p, want, wantlen) != 0))
            fail_msg("[%.*s]: wrote [%.*s], expected [%.*s]", (int)len, body, (int)out.len, out.p,
                     (int)wantlen, want);
    } else {
        if (got >= 0)
            fail_msg("[%.*s]: accepted as [%.*s], expected refusal (%s)", (int)len, body,
                     (int)out.len, out.p, why);
        assert_int_equal(ref.row, row);
        assert_int_equal(ref.column, column);
        if (!strstr(ref.why, why))
            fail_msg("[%.*s]: refused with [%s], expected [%s]", (int)len, body, ref.why, why);
    }
    buf_free(&out);
    buf_free(&scratch);
    free(copy);
}

/* The cell (with its row's "\n") of type as ndingest wrote it, and as PostgreSQL must get it. */
static void cell(const char *type, const char *in, const char *want)
{
    struct datasource *ds = one(type);
    struct pg_rows rows = {ds, 0};
    char body[1024], exp[1024];
    int n = snprintf(body, sizeof body, "%s\n", in);
    int m = want ? snprintf(exp, sizeof exp, "%s\n", want) : 0;
    conv(&rows, body, (size_t)n, want ? exp : NULL, (size_t)m, 0, 0, "");
    datasource_free(ds);
}

static void refused(const char *type, const char *in, size_t inlen, const char *why)
{
    struct datasource *ds = one(type);
    struct pg_rows rows = {ds, 0};
    conv(&rows, in, inlen, NULL, 0, 0, 0, why);
    datasource_free(ds);
}

static void test_scalars(void **state)
{
    (void)state;
    cell("Int8", "-128", "-128");
    cell("UInt64", "18446744073709551615", "18446744073709551615");
    cell("Int256", "-57896044618658097711785492504343953926634992332820282019728792003956564819968",
         "-57896044618658097711785492504343953926634992332820282019728792003956564819968");
    cell("Decimal(10, 2)", "-12345678.9", "-12345678.9");
    cell("Bool", "true", "true");
    cell("Bool", "false", "false");
    cell("Date", "1970-01-01", "1970-01-01");
    cell("Date32", "1900-01-01", "1900-01-01");
    cell("UUID", "0123abcd-0000-4000-8000-00000000ffff", "0123abcd-0000-4000-8000-00000000ffff");
    /* DateTime is UTC without a zone: +00 makes timestamptz read it as such */
    cell("DateTime", "2106-02-07 06:28:15", "2106-02-07 06:28:15+00");
    cell("DateTime64(6)", "1900-01-01 00:00:00.000001", "1900-01-01 00:00:00.000001+00");
    cell("LowCardinality(String)", "\"x\"", "\"x\"");
}

static void test_floats(void **state)
{
    (void)state;
    cell("Float64", "1.5e-10", "1.5e-10");
    cell("Float64", "-0", "-0");
    cell("Float64", "1.7976931348623157e308", "1.7976931348623157e308");
    cell("Float64", "4.9e-324", "4.9e-324"); /* the smallest subnormal: PostgreSQL keeps it */
    /* underflow to zero: ClickHouse reads 0, PostgreSQL would refuse it */
    cell("Float64", "1e-400", "0");
    cell("Float64", "-2.5E-999", "-0");
    cell("Float32", "1e-50", "0");
    cell("Float32", "1e-40", "1e-40"); /* a Float32 subnormal, not zero */
    cell("Float32", "3.4028234e38", "3.4028234e38");
    cell("Float64", "nan", "NaN");
    cell("Float64", "inf", "Infinity");
    cell("Float64", "-inf", "-Infinity");
    cell("Float32", "-Infinity", "-Infinity");
    cell("Nullable(Float64)", "\\N", "");
}

static void test_strings(void **state)
{
    (void)state;
    cell("String", "\"\"", "\"\"");                 /* empty: not NULL */
    cell("Nullable(String)", "\\N", "");            /* NULL: an unquoted empty field */
    cell("Nullable(String)", "\"\\N\"", "\"\\N\""); /* the two characters \N */
    cell("String", "\"\\.\"", "\"\\.\"");           /* quoted: data, not the end marker */
    cell("String", "\\.", "\"\\.\"");               /* unquoted: would end the COPY */
    cell("String", "\"a,b\"\"c\\d\r\ne\"", "\"a,b\"\"c\\d\r\ne\"");
    cell("String", "\"\"\"\"", "\"\"\"\"");
    cell("String", "\"{\"\"k\"\":[1, 2]}\"", "\"{\"\"k\"\":[1, 2]}\"");
    refused("String", "\"a\0b\"\n", 6, "NUL");
    refused("Nullable(String)", "\"\0\"\n", 4, "NUL");
}

static void test_arrays(void **state)
{
    (void)state;
    cell("Array(String)", "\"['a','b']\"", "\"{\"\"a\"\",\"\"b\"\"}\"");
    cell("Array(String)", "\"[]\"", "\"{}\"");
    cell("Array(String)", "[]", "\"{}\"");
    cell("Array(Int32)", "\"[1,-2,3]\"", "\"{1,-2,3}\"");
    cell("Array(Nullable(Int32))", "\"[NULL,1]\"", "\"{NULL,1}\"");
    /* the string 'NULL' stays a string: elements are always quoted */
    cell("Array(Nullable(String))", "\"['NULL',NULL]\"", "\"{\"\"NULL\"\",NULL}\"");
    /* quotes, backslashes, braces, commas, blanks, line ends inside elements */
    cell("Array(String)", "\"['a\\'b','c\\\\d','{x}','\"\"q\"\"',' , ','l\\nm\\r\\t']\"",
         "\"{\"\"a'b\"\",\"\"c\\\\d\"\",\"\"{x}\"\",\"\"\\\"\"q\\\"\"\"\",\"\" , \"\",\"\"l\nm\r\t\"\"}\"");
    cell("Array(String)", "\"['\\x41\\z']\"", "\"{\"\"Az\"\"}\"");
    cell("Array(String)", "\"['']\"", "\"{\"\"\"\"}\"");
    cell("Array(Array(Int8))", "\"[[1,2],[3,4]]\"", "\"{{1,2},{3,4}}\"");
    cell("Array(Array(String))", "\"[['a'],['b']]\"", "\"{{\"\"a\"\"},{\"\"b\"\"}}\"");
    cell("Array(Array(Int8))", "\"[]\"", "\"{}\"");
    cell("Array(DateTime)", "\"['2024-02-29 23:00:00']\"", "\"{\"\"2024-02-29 23:00:00+00\"\"}\"");
    cell("Array(Date)", "\"['2024-02-29']\"", "\"{\"\"2024-02-29\"\"}\"");
    cell("Array(UUID)", "\"['0123abcd-0000-4000-8000-00000000ffff']\"",
         "\"{\"\"0123abcd-0000-4000-8000-00000000ffff\"\"}\"");
    cell("Array(Bool)", "\"[true,false]\"", "\"{true,false}\"");
    cell("Array(Float64)", "\"[1e-400,nan,-inf,0.5]\"", "\"{0,NaN,-Infinity,0.5}\"");
    cell("Array(Decimal(5,2))", "\"[1.5,-0.01]\"", "\"{1.5,-0.01}\"");
    refused("Array(String)", "\"['a\\0b']\"\n", 12, "NUL");
    refused("Array(String)", "\"['\\x00']\"\n", 11, "NUL");
    refused("Array(Array(Int8))", "\"[[1,2],[3]]\"\n", 14, "different lengths");
    refused("Array(Array(Int8))", "\"[[],[]]\"\n", 10, "empty inner array");
    refused("Array(Array(Int8))", "\"[[1],NULL]\"\n", 13, "inner");
    refused("Array(String)", "\"['a'\"\n", 7, "not a ClickHouse array");
    refused("Array(Array(Array(Array(Array(Array(Array(Int8)))))))", "\"[]\"\n", 5,
            "6 dimensions");
}

static void test_empty_and_rows(void **state)
{
    (void)state;
    /* an empty cell in a typed row is a DEFAULT expression's: PostgreSQL cannot fill it */
    refused("DateTime", "\n", 1, "DEFAULT");
    refused("Nullable(Int32)", "\n", 1, "DEFAULT");

    char def[] = "SCHEMA >\n `i` Int32 `json:$.i`,\n `s` Nullable(String) `json:$.s`,\n"
                 " `a` Array(Int8) `json:$.a`\n";
    char err[256];
    struct datasource *ds = datasource_parse("t.datasource", def, sizeof def - 1, err, sizeof err);
    assert_non_null(ds);
    struct pg_rows rows = {ds, 0};
    const char in[] = "1,\"x\",\"[1]\"\n2,\\N,\"[]\"\r\n3,\"a\nb\",\"[2,3]\"\n";
    const char want[] = "1,\"x\",\"{1}\"\n2,,\"{}\"\n3,\"a\nb\",\"{2,3}\"\n";
    conv(&rows, in, sizeof in - 1, want, sizeof want - 1, 0, 0, "");
    /* the refused row's index within the batch, 0-based, and its column */
    const char bad[] = "1,\"x\",\"[1]\"\n2,\"y\",\"[1]\"\n3,\"a\0\",\"[]\"\n";
    conv(&rows, bad, sizeof bad - 1, NULL, 0, 2, 1, "NUL");
    const char few[] = "1,\"x\",\"[1]\"\n2,\"y\"\n";
    conv(&rows, few, sizeof few - 1, NULL, 0, 1, -1, "fewer cells");
    const char many[] = "1,\"x\",\"[1]\",4\n";
    conv(&rows, many, sizeof many - 1, NULL, 0, 0, -1, "more cells");
    const char open[] = "1,\"x,\"[1]\n";
    conv(&rows, open, sizeof open - 1, NULL, 0, 0, -1, "not CSV");
    conv(&rows, "", 0, "", 0, 0, 0, "");
    datasource_free(ds);
}

static void test_untyped(void **state)
{
    (void)state;
    struct pg_rows rows = {NULL, 3};
    /* an empty cell (null, missing or "") is an empty string; \. is quoted; the rest as is */
    const char in[] = ",\\.,\"a,\"\"b\"\"\"\nx,\\N,\"l\r\nf\"\r\n";
    const char want[] = "\"\",\"\\.\",\"a,\"\"b\"\"\"\nx,\\N,\"l\r\nf\"\n";
    conv(&rows, in, sizeof in - 1, want, sizeof want - 1, 0, 0, "");
    conv(&rows, "a,b,c\nc,\0,d\n", 12, NULL, 0, 1, 1, "NUL");
    struct pg_rows single = {NULL, 1};
    conv(&single, "\"\"\n\\.\n", 6, "\"\"\n\"\\.\"\n", 8, 0, 0, "");
}

static void type_is(const char *ch, const char *want)
{
    struct type t;
    const char *why;
    if (type_parse(&t, ch, strlen(ch), &why))
        fail_msg("%s: %s", ch, why);
    char dst[64];
    why = pg_type(&t, dst, sizeof dst);
    if (want && (why || strcmp(dst, want) != 0))
        fail_msg("%s: got %s, expected %s", ch, why ? why : dst, want);
    if (!want && !why)
        fail_msg("%s: mapped to %s, expected a refusal", ch, dst);
}

static void test_types(void **state)
{
    (void)state;
    type_is("UInt64", "numeric(20,0)");
    type_is("UInt32", "bigint");
    type_is("UInt16", "integer");
    type_is("UInt8", "smallint");
    type_is("Int8", "smallint");
    type_is("Int16", "smallint");
    type_is("Int32", "integer");
    type_is("Int64", "bigint");
    type_is("Int128", "numeric(39,0)");
    type_is("UInt128", "numeric(39,0)");
    type_is("Int256", "numeric(77,0)");
    type_is("UInt256", "numeric(78,0)");
    type_is("Float32", "real");
    type_is("Float64", "double precision");
    type_is("Decimal(10, 2)", "numeric(10,2)");
    type_is("Decimal32(3)", "numeric(9,3)");
    type_is("String", "text");
    type_is("LowCardinality(Nullable(String))", "text");
    type_is("Bool", "boolean");
    type_is("Date", "date");
    type_is("Date32", "date");
    type_is("DateTime", "timestamptz");
    type_is("DateTime('UTC')", "timestamptz");
    type_is("DateTime64(3)", "timestamptz(3)");
    type_is("DateTime64(6, 'UTC')", "timestamptz(6)");
    type_is("DateTime64(7)", NULL);
    type_is("DateTime64(9)", NULL);
    type_is("UUID", "uuid");
    type_is("Array(Nullable(Int32))", "integer[]");
    type_is("Array(Array(String))", "text[][]");
    type_is("Array(Array(Array(Array(Array(Array(UInt8))))))", "smallint[][][][][][]");
    type_is("Array(Array(Array(Array(Array(Array(Array(UInt8)))))))", NULL);
}

/* The untyped dataset's table (--deliver-create): text columns, names quoted, the cursor
 * table after it. */
static void test_untyped_table(void **state)
{
    (void)state;
    const char *cols[] = {"a", "say \"hi\"", "ts"};
    struct buf out = {0};
    assert_int_equal(schema_postgres_untyped("clas\"sic", cols, 3, &out), 0);
    assert_int_equal(buf_append(&out, "", 1), 0);
    const char *want = "CREATE TABLE \"clas\"\"sic\" (\n"
                       "    \"a\" text NOT NULL,\n"
                       "    \"say \"\"hi\"\"\" text NOT NULL,\n"
                       "    \"ts\" text NOT NULL\n"
                       ");\n\n";
    assert_memory_equal(out.p, want, strlen(want));
    assert_non_null(strstr(out.p + strlen(want), "CREATE TABLE IF NOT EXISTS ndingest_delivery"));
    assert_string_equal(out.p + out.len - 4, ");\n"); /* out.len counts the NUL */
    buf_free(&out);
}

/* Random rows from the bytes that matter to the parsers, against several column types: never
 * a read past the body (each body is an exact-size block, for ASan), and an accepted batch
 * has one output row per input row. */
static void test_random_rows(void **state)
{
    (void)state;
    static const char alphabet[] = "\"',[]\\N\n\r{}a1.-e\0 x";
    static const char *const types[] = {"Array(Array(String))", "Array(Nullable(Float64))",
                                        "String", "Nullable(Float32)", "Array(DateTime)"};
    unsigned seed = 12345;
    for (size_t t = 0; t <= sizeof types / sizeof *types; t++) {
        struct datasource *ds = t < sizeof types / sizeof *types ? one(types[t]) : NULL;
        struct pg_rows rows = {ds, 1};
        for (int i = 0; i < 20000; i++) {
            char body[48];
            size_t n = (seed = seed * 1103515245 + 12345) >> 16 & 31;
            for (size_t k = 0; k < n; k++)
                body[k] = alphabet[((seed = seed * 1103515245 + 12345) >> 16) % (sizeof alphabet - 1)];
            char *copy = tu_exact(body, n);
            struct buf out = {0}, scratch = {0};
            struct pg_refusal ref;
            long got = pg_cells_batch(&rows, copy, n, &out, &scratch, &ref);
            if (got >= 0) {
                long lines = 0;
                for (size_t k = 0; k < out.len; k++)
                    lines += out.p[k] == '\n';
                assert_true(lines >= got); /* quoted line ends inside cells add to them */
                assert_true(out.len == 0 || out.p[out.len - 1] == '\n');
            } else {
                assert_non_null(ref.why);
            }
            buf_free(&out);
            buf_free(&scratch);
            free(copy);
        }
        if (ds)
            datasource_free(ds);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars), cmocka_unit_test(test_floats),
        cmocka_unit_test(test_strings), cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_empty_and_rows), cmocka_unit_test(test_untyped),
        cmocka_unit_test(test_types), cmocka_unit_test(test_random_rows),
        cmocka_unit_test(test_untyped_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
