/* test_quarantine.c -- the quarantine row's bytes, its reasons by class, and where an
 * invalid line stops being JSON (json_error_offset) against the strict walk's verdicts, and
 * valid JSON that is not an object told apart from it (json_not_object). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>

#include "json.h"
#include "quarantine.h"
#include "testutil.h"

#define CORPUS_DIR "tests/json"

/* 2024-02-29 23:59:59 UTC: a leap day, the last second of it. */
#define LEAP_SECOND_LAST 1709251199

static void test_row_bytes(void **state)
{
    (void)state;
    struct buf b = {0};
    struct quarantine_clock clock = {0};
    const struct quarantine_refusal r[] = {
        {"it's", "out of range for UInt8", 4, 22},
        {"a\\b", "scale exceeds 2", 3, 15},
    };
    /* quotes, a comma, invalid UTF-8, a NUL and a CR: all kept as they are */
    static const char line[] = "{\"x\":\"a,b\",\"y\":\"\xff\xfe\",\"z\":\"\0\r\"}";
    assert_int_equal(quarantine_row(&b, &clock, LEAP_SECOND_LAST, r, 2, line, sizeof line - 1), 0);
    static const char want[] = "2024-02-29 23:59:59,"
                               "\"['it\\'s','a\\\\b']\","
                               "\"['out of range for UInt8','scale exceeds 2']\","
                               "\"{\"\"x\"\":\"\"a,b\"\",\"\"y\"\":\"\"\xff\xfe\"\",\"\"z\"\":\"\"\0\r\"\"}\"\n";
    assert_int_equal(b.len, sizeof want - 1);
    assert_memory_equal(b.p, want, sizeof want - 1);
    buf_free(&b);
}

/* A line that is not JSON has no column: an empty array and one reason. */
static void test_row_without_column(void **state)
{
    (void)state;
    struct buf b = {0};
    struct quarantine_clock clock = {0};
    const struct quarantine_refusal r = {NULL, "invalid JSON at byte 0", 0, 22};
    assert_int_equal(quarantine_row(&b, &clock, 0, &r, 1, "x", 1), 0);
    static const char want[] = "1970-01-01 00:00:00,\"[]\",\"['invalid JSON at byte 0']\",\"x\"\n";
    assert_int_equal(b.len, sizeof want - 1);
    assert_memory_equal(b.p, want, sizeof want - 1);
    buf_free(&b);
}

/* The second is formatted once and reused, but a new second is a new date. */
static void test_clock_follows_the_second(void **state)
{
    (void)state;
    struct buf b = {0};
    struct quarantine_clock clock = {0};
    const struct quarantine_refusal r = {"c", "why", 1, 3};
    const time_t at[] = {LEAP_SECOND_LAST, LEAP_SECOND_LAST, LEAP_SECOND_LAST + 1, 951782400};
    const char *want[] = {"2024-02-29 23:59:59", "2024-02-29 23:59:59", "2024-03-01 00:00:00",
                          "2000-02-29 00:00:00"};
    for (size_t i = 0; i < 4; i++) {
        b.len = 0;
        assert_int_equal(quarantine_row(&b, &clock, at[i], &r, 1, "{}", 2), 0);
        assert_memory_equal(b.p, want[i], TYPE_DATETIME_LEN);
    }
    buf_free(&b);
}

static void test_reason_classes(void **state)
{
    (void)state;
    for (int k = 0; k < QUARANTINE_REASONS; k++) {
        assert_non_null(quarantine_reason_names[k]);
        for (int j = 0; j < k; j++)
            assert_string_not_equal(quarantine_reason_names[k], quarantine_reason_names[j]);
    }
    const struct {
        enum type_result r;
        const char *name;
    } map[] = {
        {TYPE_ERR_NULL, "null"},   {TYPE_ERR_KIND, "kind"},   {TYPE_ERR_SYNTAX, "syntax"},
        {TYPE_ERR_RANGE, "range"}, {TYPE_ERR_SCALE, "scale"}, {TYPE_ERR_PRECISION, "precision"},
        {TYPE_ERR_DATE, "date"},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        assert_string_equal(quarantine_reason_names[quarantine_reason_of(map[i].r)], map[i].name);
}

/* ---- json_error_offset ----------------------------------------------------------------- */

static const struct {
    const char *line;
    size_t offset;
} offsets[] = {
    {"x", 0},
    {"  [1]", 2},
    {"{", 1},
    {"{\"a\":1,}", 7},
    {"{\"a\" 1}", 5},
    {"{\"a\":tru}", 8},
    {"{\"a\":nul", 8},
    {"{\"a\":-}", 6},
    {"{\"a\":01}", 6},
    {"{\"a\":1.}", 7},
    {"{\"a\":1e+}", 8},
    {"{\"a\":\"\\x\"}", 6},
    {"{\"a\":\"\\ud800\"}", 6},      /* a lone high surrogate: the escape's first byte */
    {"{\"a\":\"ok\xc3\"}", 8},       /* a cut UTF-8 sequence */
    {"{\"a\":\"\xed\xa0\x80\"}", 6}, /* an encoded surrogate */
    {"{\"a\":\"\t\"}", 6},           /* a raw control byte */
    {"{\"a\":[1,2}", 9},
    {"{\"a\":{\"b\":1]}", 11},
    {"{\"a\":1} x", 8},
    {"{\"a\":1}{}", 7},
    {"{\"a\":\"open", 10},
    {"{\"k\\u00e9\":1,2}", 13},
};

static void test_error_offsets(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof offsets / sizeof *offsets; i++) {
        size_t n = strlen(offsets[i].line);
        char *p = tu_exact(offsets[i].line, n);
        size_t got = json_error_offset(p, n);
        if (got != offsets[i].offset)
            fail_msg("%s: offset %zu, expected %zu", offsets[i].line, got, offsets[i].offset);
        free(p);
    }
}

/* A valid JSON value of another kind than an object is told apart from invalid JSON; both
 * are refused by json_line, and the object's own errors stay errors. */
static void test_not_object(void **state)
{
    (void)state;
    static const char *const values[] = {"[1]", "null", "5", "\"s\"", " true ", "-0.5e3",
                                         "[]", "[{\"a\":[1,{}]}]\t", "\"\\u00e9\xc3\xa9\""};
    static const char *const others[] = {"", "  ", "{\"a\":1}", "{", "{\"a\":1,}", "[1",
                                         "[1]x", "5 5", "nul", "01", "\"\xff\"", "[1,]",
                                         "x", "{}[]", "[}"};
    struct json_columns cols = {0};
    const char *names[] = {"a"};
    char err[64];
    assert_int_equal(json_columns_init(&cols, names, 1, err, sizeof err), 0);
    struct cell c[1];
    for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
        size_t n = strlen(values[i]);
        char *p = tu_exact(values[i], n);
        assert_int_equal(json_line(&cols, p, n, c), LINE_INVALID);
        if (!json_not_object(p, n))
            fail_msg("%s: not told apart from invalid JSON", values[i]);
        free(p);
    }
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        size_t n = strlen(others[i]);
        char *p = tu_exact(others[i], n);
        if (json_not_object(p, n))
            fail_msg("%s: taken for a JSON value", others[i]);
        free(p);
    }
    /* Nested as deep as an object may be, and one deeper. */
    char deep[2 * JSON_MAX_DEPTH + 2];
    for (size_t k = 0; k <= 1; k++) {
        size_t d = JSON_MAX_DEPTH + k;
        memset(deep, '[', d);
        memset(deep + d, ']', d);
        char *p = tu_exact(deep, 2 * d);
        assert_int_equal(json_not_object(p, 2 * d), !k);
        free(p);
    }
    json_columns_free(&cols);
}

/* Nesting past JSON_MAX_DEPTH is refused at the bracket that goes one too deep. */
static void test_error_offset_depth(void **state)
{
    (void)state;
    size_t n = 5 + 2 * JSON_MAX_DEPTH + 1;
    char *p = malloc(n);
    assert_non_null(p);
    memcpy(p, "{\"a\":", 5);
    for (size_t d = 0; d < JSON_MAX_DEPTH; d++)
        p[5 + d] = '[';
    for (size_t d = 0; d < JSON_MAX_DEPTH; d++)
        p[5 + JSON_MAX_DEPTH + d] = ']';
    p[n - 1] = '}';
    struct json_columns cols = {0};
    const char *names[] = {"a"};
    char err[64];
    assert_int_equal(json_columns_init(&cols, names, 1, err, sizeof err), 0);
    struct cell c[1];
    assert_int_equal(json_line(&cols, p, n, c), LINE_INVALID);
    assert_int_equal(json_error_offset(p, n), 5 + JSON_MAX_DEPTH - 1);
    json_columns_free(&cols);
    free(p);
}

/* On every line of the conformance corpus and on each of its one-byte mutations:
 * json_error_offset says "no error" exactly when json_line does not refuse the line; where it
 * finds one at k, the line cut at k has no earlier error (it ends early at k, or is whole),
 * and the byte at k is refused even with what follows it cut off. */
static void check_line(const struct json_columns *cols, const char *name, const char *line,
                       size_t n)
{
    struct cell c[1];
    char *p = tu_exact(line, n);
    enum line_verdict v = json_line(cols, p, n, c);
    size_t k = json_error_offset(p, n);
    if ((v == LINE_INVALID) != (k != SIZE_MAX))
        fail_msg("%s: verdict %d, offset %zu", name, (int)v, k);
    if (k != SIZE_MAX) {
        if (k > n)
            fail_msg("%s: offset %zu past the end %zu", name, k, n);
        size_t before = json_error_offset(p, k);
        if (before != k && before != SIZE_MAX)
            fail_msg("%s: error at %zu, but its %zu-byte prefix fails at %zu", name, k, k, before);
        if (k < n && json_error_offset(p, k + 1) != k)
            fail_msg("%s: error at %zu, but not in the line cut after it", name, k);
    }
    free(p);
}

static void test_error_offset_agrees_with_json_line(void **state)
{
    (void)state;
    struct json_columns cols = {0};
    const char *names[] = {"a"};
    char err[64];
    assert_int_equal(json_columns_init(&cols, names, 1, err, sizeof err), 0);
    DIR *d = opendir(CORPUS_DIR);
    if (!d)
        fail_msg("no %s/: run the tests from the repo root", CORPUS_DIR);
    static const char swaps[] = "{}[]\",:0-e.\\ tx\xc3\x80";
    size_t files = 0, invalid = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, e->d_name);
        size_t n;
        char *p = tu_slurp(path, &n);
        files++;
        invalid += e->d_name[0] == 'n';
        check_line(&cols, e->d_name, p, n);
        for (size_t i = 0; i < n && n < 4096; i++) {
            char keep = p[i];
            for (const char *s = swaps; *s; s++) {
                p[i] = *s;
                check_line(&cols, e->d_name, p, n);
            }
            p[i] = keep;
        }
        free(p);
    }
    closedir(d);
    json_columns_free(&cols);
    assert_true(files > 100 && invalid > 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_bytes),
        cmocka_unit_test(test_row_without_column),
        cmocka_unit_test(test_clock_follows_the_second),
        cmocka_unit_test(test_reason_classes),
        cmocka_unit_test(test_error_offsets),
        cmocka_unit_test(test_not_object),
        cmocka_unit_test(test_error_offset_depth),
        cmocka_unit_test(test_error_offset_agrees_with_json_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
