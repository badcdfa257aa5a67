/* test_csv.c -- unit tests of the CSV encoder: minimal quoting as Python's csv.writer,
 * unescaping on the way, line endings, the header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "csv.h"
#include "json.h"
#include "testutil.h"

static struct cell S(const char *s) { return (struct cell){s, (uint32_t)strlen(s), CELL_STRING}; }
static struct cell E(const char *s)
{
    return (struct cell){s, (uint32_t)strlen(s), CELL_STRING_ESCAPED};
}
static struct cell R(const char *s) { return (struct cell){s, (uint32_t)strlen(s), CELL_RAW}; }
static const struct cell NUL = {NULL, 0, CELL_EMPTY};

/* Encodes one row (twice: crlf, then lf) and compares with want, written with LF. */
static void expect_row_n(const struct cell *cells, size_t count, const char *want, size_t wl)
{
    for (int crlf = 0; crlf < 2; crlf++) {
        struct buf b = {0};
        assert_int_equal(buf_append(&b, "prev", 4), 0); /* rows append */
        assert_int_equal(csv_row(&b, cells, count, crlf), 0);
        size_t el = wl + (size_t)crlf;
        char *exp = malloc(el + 1);
        memcpy(exp, want, wl - 1);
        if (crlf)
            exp[wl - 1] = '\r';
        exp[el - 1] = '\n';
        if (b.len != 4 + el || memcmp(b.p, "prev", 4) != 0 || memcmp(b.p + 4, exp, el) != 0)
            fail_msg("row \"%.*s\", expected \"%.*s\"", (int)(b.len - 4), b.p + 4, (int)el, exp);
        free(exp);
        buf_free(&b);
    }
}
#define expect_row(cells, want) \
    expect_row_n(cells, sizeof cells / sizeof *cells, want, sizeof want - 1)

static void test_plain(void **state)
{
    (void)state;
    struct cell r1[] = {R("2"), S("2017-01-01 00:00:02"), S("N"), R("27.96")};
    expect_row(r1, "2,2017-01-01 00:00:02,N,27.96\n");
    struct cell r2[] = {R("true"), R("false"), NUL, R("-1.5e+3")};
    expect_row(r2, "true,false,,-1.5e+3\n");
    /* Spaces, tabs, other punctuation and UTF-8 need no quotes. */
    struct cell r3[] = {S(" a b "), S("\t"), S("'x';|"), S("caf\xc3\xa9 \xf0\x9f\x98\x80")};
    expect_row(r3, " a b ,\t,'x';|,caf\xc3\xa9 \xf0\x9f\x98\x80\n");
}

static void test_quoting(void **state)
{
    (void)state;
    struct cell r1[] = {S("a,b"), S("say \"hi\""), S("a\rb"), S("a\nb"), S("plain")};
    expect_row(r1, "\"a,b\",\"say \"\"hi\"\"\",\"a\rb\",\"a\nb\",plain\n");
    struct cell r2[] = {S("\""), S(","), S("\"\""), S("x\"")};
    expect_row(r2, "\"\"\"\",\",\",\"\"\"\"\"\",\"x\"\"\"\n");
    /* Raw objects and arrays are quoted like any text. */
    struct cell r3[] = {R("{\"k\":[1,2]}"), R("[1]"), R("{ }")};
    expect_row(r3, "\"{\"\"k\"\":[1,2]}\",[1],{ }\n");
    /* Long cells, the special byte at every position of an 8-byte block. */
    for (size_t pos = 0; pos < 40; pos++) {
        static const char specials[] = ",\"\r\n";
        for (int s = 0; s < 4; s++) {
            char in[41], want[100];
            memset(in, 'x', 40);
            in[40] = 0;
            in[pos] = specials[s];
            struct cell c[] = {S(in), R("1")};
            char *w = want;
            *w++ = '"';
            for (size_t i = 0; i < 40; i++) {
                if (in[i] == '"')
                    *w++ = '"';
                *w++ = in[i];
            }
            w += sprintf(w, "\",1\n");
            expect_row_n(c, 2, want, (size_t)(w - want));
        }
    }
}

static void test_empty(void **state)
{
    (void)state;
    struct cell r1[] = {NUL};
    expect_row(r1, "\"\"\n");
    struct cell r2[] = {S("")};
    expect_row(r2, "\"\"\n");
    struct cell r3[] = {NUL, NUL};
    expect_row(r3, ",\n");
    struct cell r4[] = {S(""), NUL, S("")};
    expect_row(r4, ",,\n");
    struct cell r5[] = {S("x")};
    expect_row(r5, "x\n");
    expect_row_n(NULL, 0, "\n", 1);
}

static void test_escaped(void **state)
{
    (void)state;
    struct cell r1[] = {E("a\\nb"), E("\\\""), E("x\\u002cy"), E("\\t"), E("a\\/b")};
    expect_row(r1, "\"a\nb\",\"\"\"\",\"x,y\",\t,a/b\n");
    struct cell r2[] = {E("\\ud83d\\ude00")};
    expect_row(r2, "\xf0\x9f\x98\x80\n");
    struct cell r3[] = {E("\\r\\n"), E("\\u00e9\\\\")};
    expect_row(r3, "\"\r\n\",\xc3\xa9\\\n");
    /* A raw string with a backslash-free quote cannot exist, but an escaped one can. */
    struct cell r4[] = {E("\\\"\\\"")};
    expect_row(r4, "\"\"\"\"\"\"\n");
}

static void test_unescape_emoji(void **state)
{
    (void)state;
    char out[16];
    size_t n = json_unescape("\\ud83d\\ude00", 12, out);
    assert_int_equal(n, 4);
    assert_memory_equal(out, "\xf0\x9f\x98\x80", 4);
}

/* From a JSON line to a row, the way the converter does it. */
static void test_from_json(void **state)
{
    (void)state;
    static const char *const names[] = {"id", "note", "tags", "ok", "gone"};
    struct json_columns c;
    char err[128];
    assert_int_equal(json_columns_init(&c, names, 5, err, sizeof err), 0);
    const char *line = "{\"ok\":true,\"tags\":[\"a\", \"b\"],\"note\":\"he said \\\"hi\\\",\\n"
                       "bye\",\"id\":7,\"gone\":null}";
    struct cell cells[5];
    assert_int_equal(json_line(&c, line, strlen(line), cells), LINE_VALID);
    expect_row_n(cells, 5, "7,\"he said \"\"hi\"\",\nbye\",\"[\"\"a\"\", \"\"b\"\"]\",true,\n",
                 sizeof "7,\"he said \"\"hi\"\",\nbye\",\"[\"\"a\"\", \"\"b\"\"]\",true,\n" - 1);
    json_columns_free(&c);
}

static void test_large_escaped(void **state)
{
    (void)state;
    /* Many escaped cells whose text all needs quoting: the worst case of the reservation. */
    enum { N = 64, L = 5000 };
    char *src[N];
    struct cell cells[N];
    for (int i = 0; i < N; i++) {
        src[i] = malloc(L + 1);
        for (int j = 0; j < L; j += 2)
            memcpy(src[i] + j, i % 2 ? "\\\"" : "\\n", 2);
        src[i][L] = 0;
        cells[i] = E(src[i]);
    }
    for (int round = 0; round < 3; round++) {
        struct buf b = {0};
        assert_int_equal(csv_row(&b, cells, N, 1), 0);
        size_t want = 0;
        for (int i = 0; i < N; i++)
            want += (i % 2 ? L : L / 2) + 2 + 1; /* "" per \" ; one byte per \n; quotes; , */
        want += 1;                               /* CRLF minus the last comma */
        assert_int_equal(b.len, want);
        assert_memory_equal(b.p + b.len - 2, "\r\n", 2);
        buf_free(&b);
    }
    for (int i = 0; i < N; i++)
        free(src[i]);
}

static void test_header(void **state)
{
    (void)state;
    static const char *const names[] = {"vendorid", "a,b", "say \"x\"", "caf\xc3\xa9",
                                        "back\\slash"};
    struct json_columns c;
    char err[128];
    assert_int_equal(json_columns_init(&c, names, 5, err, sizeof err), 0);
    struct buf b = {0};
    assert_int_equal(csv_header(&b, &c, 1), 0);
    assert_int_equal(csv_header(&b, &c, 0), 0);
    static const char want[] =
        "vendorid,\"a,b\",\"say \"\"x\"\"\",caf\xc3\xa9,back\\slash\r\n"
        "vendorid,\"a,b\",\"say \"\"x\"\"\",caf\xc3\xa9,back\\slash\n";
    assert_int_equal(b.len, sizeof want - 1);
    assert_memory_equal(b.p, want, sizeof want - 1);
    buf_free(&b);
    json_columns_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),         cmocka_unit_test(test_quoting),
        cmocka_unit_test(test_empty),         cmocka_unit_test(test_escaped),
        cmocka_unit_test(test_unescape_emoji), cmocka_unit_test(test_from_json),
        cmocka_unit_test(test_large_escaped), cmocka_unit_test(test_header),
    };
    return cmocka_run_group_tests_name("csv", tests, NULL, NULL);
}
