/* test_schema.c -- unit tests of `ndingest schema`'s output: the CREATE TABLE text for
 * ClickHouse 18.16 (types, DEFAULTs, keys, quoting, the quarantine's columns), the types and
 * engines it refuses with FILE:LINE, and the table for people. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "quarantine.h"
#include "schema.h"
#include "testutil.h"

static struct datasource *load(const char *text)
{
    char err[256];
    struct datasource *ds = datasource_parse("d/t.datasource", text, strlen(text), err, sizeof err);
    if (!ds)
        fail_msg("%s", err);
    return ds;
}

/* schema_clickhouse's text for the definition, NUL-terminated; NULL with err on refusal. */
static char *sql(const char *text, char *err, size_t errlen)
{
    struct datasource *ds = load(text);
    struct buf out = {0};
    int rc = schema_clickhouse(ds, "d/t.datasource", &out, err, errlen);
    datasource_free(ds);
    if (rc) {
        buf_free(&out);
        return NULL;
    }
    assert_int_equal(buf_append(&out, "", 1), 0);
    return out.p;
}

static const char quarantine_table[] = "CREATE TABLE `t_quarantine`\n"
                                       "(\n"
                                       "    `insertion_date` DateTime('UTC'),\n"
                                       "    `c__error_column` Array(String),\n"
                                       "    `c__error` Array(String),\n"
                                       "    `line` String\n"
                                       ")\n"
                                       "ENGINE = MergeTree\n"
                                       "ORDER BY insertion_date;\n";

static void test_whole_output(void **state)
{
    (void)state;
    char err[256];
    char *s = sql("SCHEMA >\n"
                  "    `vendorid` UInt8 `json:$.vendorid`,\n"
                  "    `pickup_at` DateTime `json:$.pickup`,\n"
                  "    `zone` LowCardinality(Nullable(String)) `json:$.z` DEFAULT 'unknown',\n"
                  "    `seen` DateTime DEFAULT '2024-02-29 00:00:00',\n"
                  "    `tags` Array(Array(Nullable(Decimal32(2)))) `json:$.tags[:][:]`\n"
                  "ENGINE \"MergeTree\"\n"
                  "ENGINE_PARTITION_KEY \"toYYYYMM(pickup_at)\"\n"
                  "ENGINE_SORTING_KEY \"pickup_at, vendorid\"\n"
                  "ENGINE_SETTINGS \"index_granularity = 8192\"\n",
                  err, sizeof err);
    assert_non_null(s);
    char want[2048];
    snprintf(want, sizeof want, "%s%s",
             "SET allow_experimental_low_cardinality_type = 1;\n"
             "\n"
             "CREATE TABLE `t`\n"
             "(\n"
             "    `vendorid` UInt8,\n"
             "    `pickup_at` DateTime('UTC'),\n"
             "    `zone` LowCardinality(Nullable(String)) DEFAULT 'unknown',\n"
             "    `seen` DateTime('UTC') DEFAULT '2024-02-29 00:00:00',\n"
             "    `tags` Array(Array(Nullable(Decimal(9, 2))))\n"
             ")\n"
             "ENGINE = MergeTree\n"
             "PARTITION BY toYYYYMM(pickup_at)\n"
             "ORDER BY (pickup_at, vendorid)\n"
             "SETTINGS index_granularity = 8192;\n"
             "\n",
             quarantine_table);
    assert_string_equal(s, want);
    free(s);
    /* A DEFAULT expression leaves an empty cell, which 18.16 cannot fill: refused. */
    assert_null(sql("SCHEMA >\n    a UInt8,\n    seen DateTime DEFAULT now()\n", err, sizeof err));
    assert_non_null(strstr(err, "d/t.datasource:3: column `seen` DEFAULT now(): ClickHouse 18.16 "
                                "cannot fill"));
}

/* No LowCardinality, no keys: no SET line and ORDER BY tuple(); names quoted with their
 * backslashes escaped; a long DEFAULT kept whole. */
static void test_plain_and_quoting(void **state)
{
    (void)state;
    char err[256], long_default[1400];
    memset(long_default, 'x', sizeof long_default);
    memcpy(long_default, "DEFAULT '", 9);
    memcpy(long_default + sizeof long_default - 2, "'", 2);
    char text[2048];
    snprintf(text, sizeof text, "SCHEMA >\n    `a\\b c` String `json:$.a` %s\n", long_default);
    char *s = sql(text, err, sizeof err);
    assert_non_null(s);
    assert_null(strstr(s, "SET "));
    char col[1500];
    snprintf(col, sizeof col, "    `a\\\\b c` String %s\n)\nENGINE = MergeTree\nORDER BY tuple();\n",
             long_default);
    assert_non_null(strstr(s, col));
    assert_non_null(strstr(s, quarantine_table));
    free(s);
    /* LowCardinality inside an Array needs the SET line too. */
    s = sql("SCHEMA >\n    a Array(LowCardinality(String))\n", err, sizeof err);
    assert_non_null(s);
    assert_true(strncmp(s, "SET allow_experimental_low_cardinality_type = 1;\n", 49) == 0);
    free(s);
}

/* A literal DEFAULT is printed as the cell it gives, in a form 18.16 takes: the forms as
 * written here are refused by 18.16 (Code 6, 41, 376; CAST to Nullable(UUID) or to a nested
 * Array from []) or read apart from the cell (a float, a long Decimal); test_schema.py
 * loads them on the server. */
static void test_default_literals(void **state)
{
    (void)state;
    char err[256];
    char *s = sql("SCHEMA >\n"
                  "    a DateTime DEFAULT '2024-01-05T01:02:03+02:00',\n"
                  "    b DateTime DEFAULT '2024-01-05',\n"
                  "    c DateTime DEFAULT '2024-01-05T01:02:03.750Z',\n"
                  "    d UUID DEFAULT '0123456789ABCDEF0123456789abcdef',\n"
                  "    e Nullable(UUID) DEFAULT '01234567-89AB-cdef-0123-456789abcdef',\n"
                  "    f Float64 DEFAULT 1.36,\n"
                  "    g Decimal(38, 10) DEFAULT 1.5e2,\n"
                  "    h Int64 DEFAULT -9223372036854775808,\n"
                  "    i Nullable(UInt8) DEFAULT NULL,\n"
                  "    j String DEFAULT 'it''s \\\\ \"q\"\\n\\x01\\x7f\\0\\t\\r\\e\xc3\xa9',\n"
                  "    k Array(Array(Int8)) DEFAULT [],\n"
                  "    l Date DEFAULT '2024-02-29',\n"
                  "    m LowCardinality(Nullable(String)) DEFAULT '',\n"
                  "    n Nullable(Float32) DEFAULT -0\n",
                  err, sizeof err);
    if (!s)
        fail_msg("%s", err);
    static const char *const lines[] = {
        "    `a` DateTime('UTC') DEFAULT '2024-01-04 23:02:03',\n",
        "    `b` DateTime('UTC') DEFAULT '2024-01-05 00:00:00',\n",
        "    `c` DateTime('UTC') DEFAULT '2024-01-05 01:02:03',\n",
        "    `d` UUID DEFAULT toUUID('01234567-89ab-cdef-0123-456789abcdef'),\n",
        "    `e` Nullable(UUID) DEFAULT toUUID('01234567-89ab-cdef-0123-456789abcdef'),\n",
        "    `f` Float64 DEFAULT '1.36',\n",
        "    `g` Decimal(38, 10) DEFAULT '150',\n",
        "    `h` Int64 DEFAULT -9223372036854775808,\n",
        "    `i` Nullable(UInt8) DEFAULT NULL,\n",
        "    `j` String DEFAULT 'it\\'s \\\\ \"q\"\\n\\x01\\x7f\\0\\t\\r\\x1b\xc3\xa9',\n",
        "    `k` Array(Array(Int8)) DEFAULT '[]',\n",
        "    `l` Date DEFAULT '2024-02-29',\n",
        "    `m` LowCardinality(Nullable(String)) DEFAULT '',\n",
        "    `n` Nullable(Float32) DEFAULT '-0'\n",
    };
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
        if (!strstr(s, lines[i]))
            fail_msg("no line %s in\n%s", lines[i], s);
    free(s);
}

/* Each type 18.16 lacks is refused at its column's line; nothing maps it silently. */
static void test_refused_types(void **state)
{
    (void)state;
    static const char *const lacking[] = {"Bool", "Int128", "Int256", "UInt128", "UInt256",
                                          "Date32", "DateTime64(3)", "Decimal(39, 2)",
                                          "Nullable(Bool)", "Array(DateTime64(6, 'UTC'))"};
    for (size_t i = 0; i < sizeof lacking / sizeof *lacking; i++) {
        char text[256], err[256], want[256];
        snprintf(text, sizeof text, "SCHEMA >\n    a Int32,\n\n    b %s\n", lacking[i]);
        print_message("%s\n", lacking[i]);
        assert_null(sql(text, err, sizeof err));
        snprintf(want, sizeof want, "d/t.datasource:4: column `b` %s: ClickHouse 18.16 has no ",
                 lacking[i]);
        assert_true(strncmp(err, want, strlen(want)) == 0);
    }
    char err[256];
    assert_null(sql("SCHEMA >\n    a Bool\n", err, sizeof err));
    assert_non_null(strstr(err, "declare the column UInt8"));
    char *s = sql("SCHEMA >\n    a Decimal(38, 2)\n", err, sizeof err); /* the widest 18.16 has */
    assert_non_null(s);
    free(s);
    assert_null(sql("SCHEMA >\n    a Int8\nENGINE \"ReplacingMergeTree\"\n", err, sizeof err));
    assert_string_equal(err, "d/t.datasource:3: ENGINE ReplacingMergeTree: schema --clickhouse "
                             "writes MergeTree tables only");
}

/* schema_clickhouse_in's text, NUL-terminated; NULL with err on refusal. */
static char *sql_in(const char *text, const char *database, const char *cluster, char *err,
                    size_t errlen)
{
    struct datasource *ds = load(text);
    struct buf out = {0};
    int rc = schema_clickhouse_in(ds, "d/t.datasource", database, cluster, &out, err, errlen);
    datasource_free(ds);
    if (rc) {
        buf_free(&out);
        return NULL;
    }
    assert_int_equal(buf_append(&out, "", 1), 0);
    return out.p;
}

/* --cluster: on every server, a replicated local table per shard with the definition's keys,
 * a Distributed table over it, the same for the quarantine; all in the database given. */
static void test_cluster_output(void **state)
{
    (void)state;
    char err[256];
    static const char text[] = "SCHEMA >\n"
                               "    `id` UInt64 `json:$.id`,\n"
                               "    `zone` LowCardinality(String) `json:$.z` DEFAULT 'x'\n"
                               "ENGINE_PARTITION_KEY \"id % 4\"\n"
                               "ENGINE_SORTING_KEY \"id\"\n";
    char *s = sql_in(text, "events", "ndingest", err, sizeof err);
    assert_non_null(s);
    assert_string_equal(s, "SET allow_experimental_low_cardinality_type = 1;\n"
                           "\n"
                           "CREATE DATABASE IF NOT EXISTS `events`;\n"
                           "\n"
                           "CREATE TABLE `events`.`t_local`\n"
                           "(\n"
                           "    `id` UInt64,\n"
                           "    `zone` LowCardinality(String) DEFAULT 'x'\n"
                           ")\n"
                           "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/"
                           "events.t_local', '{replica}')\n"
                           "PARTITION BY id % 4\n"
                           "ORDER BY (id);\n"
                           "\n"
                           "CREATE TABLE `events`.`t` AS `events`.`t_local`\n"
                           "ENGINE = Distributed(ndingest, events, t_local, rand());\n"
                           "\n"
                           "CREATE TABLE `events`.`t_quarantine_local`\n"
                           "(\n"
                           "    `insertion_date` DateTime('UTC'),\n"
                           "    `c__error_column` Array(String),\n"
                           "    `c__error` Array(String),\n"
                           "    `line` String\n"
                           ")\n"
                           "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/"
                           "events.t_quarantine_local', '{replica}')\n"
                           "ORDER BY insertion_date;\n"
                           "\n"
                           "CREATE TABLE `events`.`t_quarantine` AS `events`.`t_quarantine_local`\n"
                           "ENGINE = Distributed(ndingest, events, t_quarantine_local, rand());\n");
    free(s);
    /* A database alone qualifies the single server's tables and creates the database. */
    s = sql_in("SCHEMA >\n    a Int8\n", "events", NULL, err, sizeof err);
    assert_non_null(s);
    assert_true(strncmp(s, "CREATE DATABASE IF NOT EXISTS `events`;\n\nCREATE TABLE `events`.`t`\n",
                        64) == 0);
    assert_non_null(strstr(s, "\nENGINE = MergeTree\nORDER BY tuple();\n\n"
                              "CREATE TABLE `events`.`t_quarantine`\n"));
    assert_null(strstr(s, "Replicated"));
    free(s);
    /* Neither: the single-server text as before. */
    char *plain = sql("SCHEMA >\n    a Int8\n", err, sizeof err);
    s = sql_in("SCHEMA >\n    a Int8\n", NULL, NULL, err, sizeof err);
    assert_non_null(plain);
    assert_non_null(s);
    assert_string_equal(s, plain);
    assert_true(strncmp(s, "CREATE TABLE `t`\n", 17) == 0);
    free(s);
    free(plain);
    /* A cluster needs the database its paths and Distributed tables name. */
    assert_null(sql_in("SCHEMA >\n    a Int8\n", NULL, "ndingest", err, sizeof err));
    assert_string_equal(err, "a cluster's tables need a database");
    /* The definition's refusals hold on a cluster too. */
    assert_null(sql_in("SCHEMA >\n    a Bool\n", "events", "ndingest", err, sizeof err));
    assert_non_null(strstr(err, "d/t.datasource:2: column `a` Bool: ClickHouse 18.16 has no Bool"));
}

static void test_describe(void **state)
{
    (void)state;
    struct datasource *ds = load("SCHEMA >\n"
                                 "    `id` UInt64 `json:$.event.id`,\n"
                                 "    `a_long_name` LowCardinality(String) DEFAULT 'x',\n"
                                 "    ok Bool\n");
    struct buf out = {0};
    assert_int_equal(schema_describe(ds, &out), 0);
    assert_int_equal(buf_append(&out, "", 1), 0);
    assert_string_equal(out.p, "column       type                    path           default\n"
                               "id           UInt64                  $.event.id\n"
                               "a_long_name  LowCardinality(String)  $.a_long_name  'x'\n"
                               "ok           Bool                    $.ok\n");
    buf_free(&out);
    datasource_free(ds);
}

/* The table the writer will fill has the names and order the documentation gives. */
static void test_quarantine_columns(void **state)
{
    (void)state;
    static const char *const names[QUARANTINE_NCOLUMNS] = {"insertion_date", "c__error_column",
                                                          "c__error", "line"};
    for (int i = 0; i < QUARANTINE_NCOLUMNS; i++)
        assert_string_equal(quarantine_columns[i].name, names[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_output),   cmocka_unit_test(test_plain_and_quoting),
        cmocka_unit_test(test_default_literals),
        cmocka_unit_test(test_refused_types),  cmocka_unit_test(test_describe),
        cmocka_unit_test(test_quarantine_columns), cmocka_unit_test(test_cluster_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
