/* test_options.c -- the command line: sizes, defaults, usage errors and the option table. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "options.h"

static void test_sizes(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(parse_size("64", &v), 0);
    assert_int_equal(v, 64);
    assert_int_equal(parse_size("512K", &v), 0);
    assert_int_equal(v, 512 * 1024);
    assert_int_equal(parse_size("1m", &v), 0);
    assert_int_equal(v, 1 << 20);
    assert_int_equal(parse_size("2G", &v), 0);
    assert_int_equal(v, 2ULL << 30);
    assert_int_equal(parse_size("3MiB", &v), 0);
    assert_int_equal(v, 3ULL << 20);
    assert_int_equal(parse_size("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
}

static void test_bad_sizes(void **state)
{
    (void)state;
    uint64_t v;
    const char *bad[] = {"", "K", "-1", " 1", "1 ", "1T", "1KK", "1.5M", "abc",
                         "18446744073709551616", "17179869184G"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        print_message("size %s\n", bad[i]);
        assert_int_equal(parse_size(bad[i], &v), -1);
    }
}

/* options_parse with its stderr (usage errors print the usage) kept out of the test log. */
static int parse_argv(struct options *o, int argc, char **argv)
{
    fflush(stderr);
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    dup2(null, 2);
    int rc = options_parse(o, argc, argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(null);
    return rc;
}

static int parse(struct options *o, const char *line)
{
    static char copy[512];
    char *argv[32];
    int argc = 0;
    snprintf(copy, sizeof copy, "%s", line);
    for (char *save = NULL, *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
        argv[argc++] = t;
    argv[argc] = NULL;
    return parse_argv(o, argc, argv);
}

static void test_defaults(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "ndingest"), 0);
    assert_int_equal(o.command, CMD_SERVE);
    assert_string_equal(o.listen, "127.0.0.1:8888");
    assert_string_equal(o.out_dir, "csv");
    assert_string_equal(o.name, "nyc_taxi");
    assert_true(o.workers >= 1);
    assert_int_equal(o.max_line, 1 << 20);
    assert_int_equal(o.max_body, 0);
    assert_int_equal(o.timeout, 60);
    assert_int_equal(o.quarantine, 1);
    assert_null(o.access_log);
    assert_int_equal(o.quiet, 0);
    assert_int_equal(o.max_header, 64 * 1024);
    assert_int_equal(o.max_headers, 100);
    assert_int_equal(o.max_path, 1024);
    assert_int_equal(o.header_timeout, 10);
    assert_int_equal(o.body_timeout, 300);
    assert_int_equal(o.max_connections, 4096);
    assert_int_equal(o.inflight_ranges, 4096);
    assert_true(o.max_inflate == 1ULL << 30);
    assert_int_equal(o.max_ratio, 1000);
    assert_int_equal(o.columns.count, 4);
    assert_string_equal(o.columns.names[0], "vendorid");
    assert_string_equal(o.columns.names[3], "total_amount");
    assert_int_equal(o.status, 2);
    assert_int_equal(o.fsync, FSYNC_NONE);
    assert_true(!o.utc && !o.header && !o.crlf && !o.reuseport);
    assert_null(o.token_file);
    options_free(&o);
}

static void test_serve_options(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "ndingest serve --listen [::1]:9000 --workers 0 --out-dir /tmp/x "
                               "--name t --utc --columns b,a --header --crlf --max-line 2K "
                               "--max-body 1G --timeout 5 --no-quarantine --reuseport"), 0);
    assert_string_equal(o.listen, "[::1]:9000");
    assert_int_equal(o.workers, 0);
    assert_string_equal(o.name, "t");
    assert_true(o.utc && o.header && o.crlf && o.reuseport && !o.quarantine);
    assert_int_equal(o.max_line, 2048);
    assert_true(o.max_body == 1ULL << 30);
    assert_int_equal(o.timeout, 5);
    assert_int_equal(o.columns.count, 2);
    assert_string_equal(o.columns.names[0], "b");
    options_free(&o);
}

static void test_operations_options(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "ndingest --access-log /tmp/a.log --quiet --max-header 1K "
                               "--max-headers 7 --header-timeout 2 --body-timeout 3 "
                               "--max-connections 5 --max-inflate 2M --max-ratio 50 "
                               "--inflight-ranges 2"), 0);
    assert_int_equal(o.inflight_ranges, 2);
    assert_string_equal(o.access_log, "/tmp/a.log");
    assert_int_equal(o.quiet, 1);
    assert_int_equal(o.max_header, 1024);
    assert_int_equal(o.max_headers, 7);
    assert_int_equal(o.header_timeout, 2);
    assert_int_equal(o.body_timeout, 3);
    assert_int_equal(o.max_connections, 5);
    assert_true(o.max_inflate == 2ULL << 20);
    assert_int_equal(o.max_ratio, 50);
    options_free(&o);
    /* 0 lifts the inflation limits */
    assert_int_equal(parse(&o, "ndingest --max-inflate 0 --max-ratio 0"), 0);
    assert_true(o.max_inflate == 0 && o.max_ratio == 0);
    options_free(&o);
}

static void test_status_option(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "ndingest"), 0);
    assert_int_equal(o.status, 2);
    options_free(&o);
    assert_int_equal(parse(&o, "ndingest --status 5"), 0);
    assert_int_equal(o.status, 5);
    options_free(&o);
    assert_int_equal(parse(&o, "ndingest --status 0"), 0); /* off */
    assert_int_equal(o.status, 0);
    options_free(&o);
    const char *bad[] = {"ndingest --status", "ndingest --status -1", "ndingest --status x",
                         "ndingest --status 1.5", "ndingest --status 3601",
                         "ndingest convert --status 1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        print_message("%s\n", bad[i]);
        assert_int_equal(parse(&o, bad[i]), 2);
        options_free(&o);
    }
}

static void test_convert_files(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "ndingest convert --crlf a.ndjson b.ndjson"), 0);
    assert_int_equal(o.command, CMD_CONVERT);
    assert_int_equal(o.nfiles, 2);
    assert_string_equal(o.files[1], "b.ndjson");
    options_free(&o);
}

static void test_schema_command(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "ndingest schema taxi --datasets defs --clickhouse"), 0);
    assert_int_equal(o.command, CMD_SCHEMA);
    assert_string_equal(o.dataset, "taxi");
    assert_string_equal(o.datasets, "defs");
    assert_int_equal(o.clickhouse, 1);
    options_free(&o);
    assert_int_equal(parse(&o, "ndingest schema --datasets defs taxi"), 0); /* any order */
    assert_string_equal(o.dataset, "taxi");
    assert_int_equal(o.clickhouse, 0);
    assert_null(o.database);
    assert_null(o.cluster);
    options_free(&o);
    assert_int_equal(parse(&o, "ndingest schema t --datasets d --clickhouse --cluster ndingest "
                               "--database events_1"), 0);
    assert_string_equal(o.database, "events_1");
    assert_string_equal(o.cluster, "ndingest");
    options_free(&o);
    assert_int_equal(parse(&o, "ndingest schema t --datasets d --clickhouse --database e"), 0);
    assert_string_equal(o.database, "e");
    assert_null(o.cluster);
    options_free(&o);
}

/* serve --datasets: the default dataset and the limit on definitions. */
static void test_serve_datasets(void **state)
{
    (void)state;
    struct options o;
    assert_int_equal(parse(&o, "ndingest --datasets defs"), 0);
    assert_string_equal(o.datasets, "defs");
    assert_null(o.default_dataset);
    assert_int_equal(o.max_datasets, 64);
    options_free(&o);
    assert_int_equal(parse(&o, "ndingest --datasets defs --default-dataset trips --max-datasets 4096"), 0);
    assert_string_equal(o.default_dataset, "trips");
    assert_int_equal(o.max_datasets, 4096);
    options_free(&o);
    /* What the conflicts leave: each option on its own, and --name, --columns without. */
    assert_int_equal(parse(&o, "ndingest --datasets defs --header --crlf"), 0);
    options_free(&o);
    assert_int_equal(parse(&o, "ndingest --name foo --columns a,b"), 0);
    options_free(&o);
    assert_int_equal(parse(&o, "ndingest convert --datasource d.datasource --header"), 0);
    options_free(&o);
    assert_int_equal(parse(&o, "ndingest convert --columns a"), 0);
    options_free(&o);
    assert_int_equal(parse(&o, "ndingest"), 0); /* without: today's single dataset */
    assert_null(o.datasets);
    options_free(&o);
}

static void test_usage_errors(void **state)
{
    (void)state;
    const char *bad[] = {
        "ndingest --bogus", "ndingest frobnicate", "ndingest --workers x", "ndingest --workers -1",
        "ndingest --max-line 0", "ndingest --max-line 1X", "ndingest --max-body lots",
        "ndingest --timeout 0", "ndingest --name a/b", "ndingest --columns a,,b",
        "ndingest --columns a,a", "ndingest serve extra", "ndingest convert --listen x",
        "ndingest --listen",
        "ndingest --max-header 100", "ndingest --max-header 2G", "ndingest --max-header x",
        "ndingest --max-headers 0", "ndingest --max-headers -3",
        "ndingest --max-path 15", "ndingest --max-path 65K", "ndingest --header-timeout 0",
        "ndingest --body-timeout 0", "ndingest --body-timeout 1.5", "ndingest --max-connections 0",
        "ndingest --inflight-ranges 1", "ndingest --inflight-ranges 2000000",
        "ndingest convert --inflight-ranges 8",
        "ndingest --max-inflate big", "ndingest --max-ratio -1", "ndingest --max-ratio x",
        "ndingest --access-log", "ndingest convert --quiet", "ndingest convert --max-ratio 3",
        "ndingest schema", "ndingest schema taxi", "ndingest schema --datasets d",
        "ndingest schema a b --datasets d", "ndingest schema a/b --datasets d",
        "ndingest schema t --datasets d --columns a", "ndingest schema t --datasets",
        "ndingest --clickhouse", "ndingest convert --clickhouse",
        /* a cluster's names are bare identifiers in the SQL; it needs a database */
        "ndingest schema t --datasets d --clickhouse --cluster c",
        "ndingest schema t --datasets d --cluster c --database e",
        "ndingest schema t --datasets d --database e",
        "ndingest schema t --datasets d --clickhouse --database 1e",
        "ndingest schema t --datasets d --clickhouse --database e.f",
        "ndingest schema t --datasets d --clickhouse --database e --cluster c`",
        "ndingest --database e", "ndingest convert --cluster c",
        "ndingest --default-dataset t", "ndingest --datasets d --default-dataset a/b",
        "ndingest --datasets d --max-datasets 0",
        "ndingest --datasets d --max-datasets 4097", "ndingest convert --datasets d",
        /* an option that another makes meaningless, either order */
        "ndingest convert --datasource d.datasource --columns a,b",
        "ndingest convert --columns a --datasource d.datasource",
        "ndingest --datasets d --name foo", "ndingest serve --name foo --datasets d",
        "ndingest --datasets d --columns a",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct options o;
        print_message("%s\n", bad[i]);
        assert_int_equal(parse(&o, bad[i]), 2);
        options_free(&o);
    }
}

/* A number or flag field as the row describes it (int, unsigned, size_t or uint64_t). */
static uint64_t field_value(const struct options *o, const struct option_row *r)
{
    const char *p = (const char *)o + r->offset;
    if (r->size == sizeof(uint64_t)) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    unsigned u;
    memcpy(&u, p, sizeof u);
    return u;
}

/* "ndingest [convert] --NAME VALUE": convert for rows convert takes, so both tables see it. */
static int parse_row(struct options *o, const struct option_row *r, const char *cmd, const char *value)
{
    char line[256];
    snprintf(line, sizeof line, "ndingest%s%s --%s%s%s", cmd ? " " : "", cmd ? cmd : "", r->name,
             value ? " " : "", value ? value : "");
    print_message("%s\n", line);
    return parse(o, line);
}

static void expect_number(const struct option_row *r, const char *cmd, uint64_t v)
{
    struct options o;
    char text[32];
    snprintf(text, sizeof text, "%llu", (unsigned long long)v);
    assert_int_equal(parse_row(&o, r, cmd, text), 0);
    assert_true(field_value(&o, r) == v);
    options_free(&o);
}

static void expect_rejected(const struct option_row *r, const char *cmd, const char *value)
{
    struct options o;
    assert_int_equal(parse_row(&o, r, cmd, value), 2);
    options_free(&o);
}

/* `schema` with its required arguments, so a row's option is all that varies. */
#define SCHEMA_CMD "schema t --datasets d"

/* Every row, so a new option gets these checks for nothing: its bounds hold at both ends
 * and fail one past them, its default lies inside them, its field is wide enough, and
 * `convert` and `schema` take only the rows marked for them, serve none marked schema_only
 * or convert_only. */
static void test_table_rows(void **state)
{
    (void)state;
    size_t n;
    const struct option_row *rows = options_table(&n);
    assert_true(n > 20);
    for (size_t i = 0; i < n; i++) {
        const struct option_row *r = &rows[i];
        print_message("row --%s\n", r->name);
        assert_true(r->name && *r->name && r->help && *r->help && !strchr(r->help, '\n'));
        assert_true((r->arg != NULL) == (r->kind != OPTION_FLAG && r->kind != OPTION_ACTION));
        if (!r->convert && r->kind != OPTION_ACTION)
            expect_rejected(r, "convert", r->arg ? "1" : NULL);
        if (!r->schema)
            expect_rejected(r, SCHEMA_CMD, r->arg ? "1" : NULL);
        if (r->schema_only || r->convert_only)
            expect_rejected(r, NULL, r->arg ? "1" : NULL);
        assert_true(!r->convert_only || r->convert);
        const char *cmd = r->convert ? "convert" : r->schema_only ? SCHEMA_CMD : NULL;
        struct options o;
        switch (r->kind) {
        case OPTION_UINT:
        case OPTION_SECONDS:
        case OPTION_SIZE: {
            assert_true(r->size == 4 || r->size == 8);
            assert_true(r->min <= r->max && r->max <= (r->size == 4 ? INT_MAX : UINT64_MAX));
            assert_true(r->dflt_fn || (r->min <= r->dflt && r->dflt <= r->max));
            expect_number(r, cmd, r->min);
            expect_number(r, cmd, r->max);
            char text[32];
            if (r->max < UINT64_MAX) {
                snprintf(text, sizeof text, "%llu", (unsigned long long)r->max + 1);
                expect_rejected(r, cmd, text);
            }
            if (r->min > 0) {
                snprintf(text, sizeof text, "%llu", (unsigned long long)r->min - 1);
                expect_rejected(r, cmd, text);
            }
            snprintf(text, sizeof text, "+%llu", (unsigned long long)r->min);
            expect_rejected(r, cmd, text);
            expect_rejected(r, cmd, "x");
            assert_int_equal(parse(&o, r->convert ? "ndingest convert" : "ndingest"), 0);
            assert_false(r->schema_only); /* else the line above needs the schema command */
            if (!r->dflt_fn)
                assert_true(field_value(&o, r) == r->dflt);
            options_free(&o);
            break;
        }
        case OPTION_FLAG:
            assert_int_equal(parse_row(&o, r, cmd, NULL), 0);
            assert_true(field_value(&o, r) == !r->dflt);
            options_free(&o);
            break;
        case OPTION_STRING:
        case OPTION_FILE:
        case OPTION_CUSTOM:
            /* A default --help shows must be one the parser takes. */
            if (r->dflt_text) {
                assert_int_equal(parse_row(&o, r, cmd, r->dflt_text), 0);
                options_free(&o);
            }
            break;
        case OPTION_ACTION:
            break;
        }
    }
}

/* --columns takes JSON_MAX_COLUMNS names and refuses one more. */
static void test_max_columns(void **state)
{
    (void)state;
    static char list[8 * JSON_MAX_COLUMNS + 16];
    size_t len = 0;
    for (int i = 0; i < JSON_MAX_COLUMNS; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%sc%d", i ? "," : "", i);
    char *argv[] = {"ndingest", "--columns", list, NULL};
    struct options o;
    assert_int_equal(parse_argv(&o, 3, argv), 0);
    assert_int_equal(o.columns.count, JSON_MAX_COLUMNS);
    options_free(&o);
    snprintf(list + len, sizeof list - len, ",one_more");
    assert_int_equal(parse_argv(&o, 3, argv), 2);
    options_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),         cmocka_unit_test(test_bad_sizes),
        cmocka_unit_test(test_defaults),      cmocka_unit_test(test_serve_options),
        cmocka_unit_test(test_convert_files), cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_schema_command), cmocka_unit_test(test_serve_datasets),
        cmocka_unit_test(test_operations_options),
        cmocka_unit_test(test_status_option),
        cmocka_unit_test(test_table_rows),    cmocka_unit_test(test_max_columns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
