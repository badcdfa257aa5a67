/* test_json.c -- unit tests of the JSON engine: the tests/json/ conformance corpus, cells,
 * unescaping, limits, exact-size buffers (for ASan) and a differential mutation test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <unistd.h>

#include "json.h"
#include "json_internal.h" /* the dispatch rows, to check that a fast path accepts lines */
#include "testutil.h"

#define CORPUS_DIR "tests/json"

/* ---- a deliberately naive reference validator (recursive, code points decoded) ------ */

struct ref {
    const unsigned char *p;
    size_t n, i;
    int depth;
};

static int ref_value(struct ref *r);

static void ref_ws(struct ref *r)
{
    while (r->i < r->n && (r->p[r->i] == ' ' || r->p[r->i] == '\t' || r->p[r->i] == '\r' ||
                           r->p[r->i] == '\n'))
        r->i++;
}

static int ref_eat(struct ref *r, int c)
{
    if (r->i < r->n && r->p[r->i] == c) {
        r->i++;
        return 1;
    }
    return 0;
}

static long ref_hex4(struct ref *r)
{
    long v = 0;
    for (int k = 0; k < 4; k++) {
        if (r->i >= r->n)
            return -1;
        int c = r->p[r->i++];
        if (c >= '0' && c <= '9')
            v = v * 16 + c - '0';
        else if (c >= 'a' && c <= 'f')
            v = v * 16 + c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v = v * 16 + c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

static int ref_string(struct ref *r)
{
    if (!ref_eat(r, '"'))
        return 0;
    for (;;) {
        if (r->i >= r->n)
            return 0;
        unsigned c = r->p[r->i];
        if (c == '"') {
            r->i++;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            r->i++;
            if (r->i >= r->n)
                return 0;
            c = r->p[r->i++];
            if (c == 'u') {
                long u = ref_hex4(r);
                if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF))
                    return 0;
                if (u >= 0xD800 && u <= 0xDBFF) {
                    if (!ref_eat(r, '\\') || !ref_eat(r, 'u'))
                        return 0;
                    long l = ref_hex4(r);
                    if (l < 0xDC00 || l > 0xDFFF)
                        return 0;
                }
            } else if (!strchr("\"\\/bfnrt", (int)c) || c == 0) {
                return 0;
            }
            continue;
        }
        if (c < 0x80) {
            r->i++;
            continue;
        }
        size_t len;
        unsigned long cp, min;
        if ((c & 0xE0) == 0xC0)
            len = 2, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0)
            len = 3, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0)
            len = 4, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        if (r->n - r->i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            unsigned cc = r->p[r->i + k];
            if ((cc & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (cc & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        r->i += len;
    }
}

static int ref_digits(struct ref *r)
{
    size_t s = r->i;
    while (r->i < r->n && r->p[r->i] >= '0' && r->p[r->i] <= '9')
        r->i++;
    return r->i > s;
}

static int ref_number(struct ref *r)
{
    ref_eat(r, '-');
    if (!ref_eat(r, '0') && !(r->i < r->n && r->p[r->i] >= '1' && r->p[r->i] <= '9' &&
                              ref_digits(r)))
        return 0;
    if (ref_eat(r, '.') && !ref_digits(r))
        return 0;
    if (ref_eat(r, 'e') || ref_eat(r, 'E')) {
        if (!ref_eat(r, '+'))
            ref_eat(r, '-');
        if (!ref_digits(r))
            return 0;
    }
    return 1;
}

static int ref_word(struct ref *r, const char *w)
{
    size_t l = strlen(w);
    if (r->n - r->i < l || memcmp(r->p + r->i, w, l) != 0)
        return 0;
    r->i += l;
    return 1;
}

static int ref_container(struct ref *r, int obj)
{
    if (++r->depth > JSON_MAX_DEPTH)
        return 0;
    r->i++;
    ref_ws(r);
    if (ref_eat(r, obj ? '}' : ']')) {
        r->depth--;
        return 1;
    }
    for (;;) {
        if (obj) {
            if (!ref_string(r))
                return 0;
            ref_ws(r);
            if (!ref_eat(r, ':'))
                return 0;
            ref_ws(r);
        }
        if (!ref_value(r))
            return 0;
        ref_ws(r);
        if (ref_eat(r, ','))
            ref_ws(r);
        else if (ref_eat(r, obj ? '}' : ']'))
            break;
        else
            return 0;
    }
    r->depth--;
    return 1;
}

static int ref_value(struct ref *r)
{
    if (r->i >= r->n)
        return 0;
    switch (r->p[r->i]) {
    case '{':
        return ref_container(r, 1);
    case '[':
        return ref_container(r, 0);
    case '"':
        return ref_string(r);
    case 't':
        return ref_word(r, "true");
    case 'f':
        return ref_word(r, "false");
    case 'n':
        return ref_word(r, "null");
    default:
        return ref_number(r);
    }
}

static enum line_verdict ref_line(const char *p, size_t n)
{
    struct ref r = {(const unsigned char *)p, n, 0, 0};
    ref_ws(&r);
    if (r.i == n)
        return LINE_BLANK;
    if (p[r.i] != '{' || !ref_value(&r))
        return LINE_INVALID;
    ref_ws(&r);
    return r.i == n ? LINE_VALID : LINE_INVALID;
}

/* ---- helpers ------------------------------------------------------------------------ */

static const char *verdict_name(enum line_verdict v)
{
    return v == LINE_BLANK ? "BLANK" : v == LINE_VALID ? "VALID" : "INVALID";
}

static struct json_columns cols1; /* one column "a": the corpus cases all use it */

/* Judges p[0..n) from an exact-size copy. */
static enum line_verdict judge(const struct json_columns *c, const void *p, size_t n,
                               struct cell *cells)
{
    char *q = tu_exact(p, n);
    enum line_verdict v = json_line(c, q, n, cells);
    free(q);
    return v;
}

static void init_cols(struct json_columns *c, const char *const *names, size_t count)
{
    char err[256];
    if (json_columns_init(c, names, count, err, sizeof err) != 0)
        fail_msg("json_columns_init: %s", err);
}

/* The cell's text: kind, and bytes (a string's raw span between its quotes). */
static void expect_cell(const struct cell *c, enum cell_kind kind, const char *text)
{
    if (c->kind != (uint32_t)kind)
        fail_msg("cell kind %u, expected %d (text \"%.*s\")", c->kind, kind, (int)c->len,
                 c->p ? c->p : "");
    if (kind == CELL_EMPTY) {
        assert_int_equal(c->len, 0);
        return;
    }
    size_t tl = strlen(text);
    if (c->len != tl || memcmp(c->p, text, tl) != 0)
        fail_msg("cell \"%.*s\", expected \"%s\"", (int)c->len, c->p, text);
}

/* ---- the corpus: one cmocka test per file ------------------------------------------- */

static void test_corpus_case(void **state)
{
    const char *name = *state;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, name);
    size_t n;
    char *p = tu_slurp(path, &n);
    enum line_verdict want = name[0] == 'y'   ? LINE_VALID
                             : name[0] == 'n' ? LINE_INVALID
                             : name[0] == 'b' ? LINE_BLANK
                                              : (enum line_verdict)-1;
    if ((int)want < 0)
        fail_msg("%s: a corpus file must start with y_, n_ or b_", name);
    struct cell cells[1];
    enum line_verdict got = json_line(&cols1, p, n, cells);
    if (got != want)
        fail_msg("%s: got %s, expected %s", name, verdict_name(got), verdict_name(want));
    if (ref_line(p, n) != want) /* keeps the reference honest */
        fail_msg("%s: the reference validator disagrees", name);

    /* Every prefix, each in an exact-size block: must not read past its end, and a prefix
     * of a valid line that stops before its closing brace cannot be valid. */
    size_t last_close = n;
    while (last_close > 0 && p[last_close - 1] != '}')
        last_close--;
    for (size_t k = 0; k < n; k++) {
        enum line_verdict v = judge(&cols1, p, k, cells);
        if (want == LINE_VALID && k < last_close && v == LINE_VALID)
            fail_msg("%s: prefix of %zu bytes judged VALID", name, k);
        if (v != ref_line(p, k))
            fail_msg("%s: prefix of %zu bytes: engine %s, reference %s", name, k,
                     verdict_name(v), verdict_name(ref_line(p, k)));
    }
    free(p);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **corpus_names(size_t *count)
{
    DIR *d = opendir(CORPUS_DIR);
    if (!d) {
        *count = 0;
        return NULL;
    }
    size_t cap = 64, k = 0;
    char **v = malloc(cap * sizeof *v);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json") != 0)
            continue;
        if (k == cap)
            v = realloc(v, (cap *= 2) * sizeof *v);
        v[k++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(v, k, sizeof *v, by_name);
    *count = k;
    return v;
}

static void test_corpus_size(void **state)
{
    (void)state;
    size_t k, kinds[3] = {0};
    char **v = corpus_names(&k);
    for (size_t i = 0; i < k; i++) {
        kinds[0] += v[i][0] == 'y';
        kinds[1] += v[i][0] == 'n';
        kinds[2] += v[i][0] == 'b';
        free(v[i]);
    }
    free(v);
    if (k < 100 || !kinds[0] || !kinds[1] || !kinds[2])
        fail_msg("corpus %s/ too small (%zu files: run the tests from the repo root)",
                 CORPUS_DIR, k);
}

/* ---- cells -------------------------------------------------------------------------- */

static const char taxi[] =
    "{\"vendorid\":2,\"tpep_pickup_datetime\":\"2017-01-01 00:00:02\","
    "\"tpep_dropoff_datetime\":\"2017-01-01 00:39:22\",\"passenger_count\":4,"
    "\"trip_distance\":7.75,\"ratecodeid\":1,\"store_and_fwd_flag\":\"N\","
    "\"pulocationid\":186,\"dolocationid\":36,\"payment_type\":1,\"fare_amount\":22,"
    "\"extra\":0.5,\"mta_tax\":0.5,\"tip_amount\":4.66,\"tolls_amount\":0,"
    "\"improvement_surcharge\":0.3,\"total_amount\":27.96}";

static void test_cells_taxi(void **state)
{
    (void)state;
    static const char *const names[] = {"total_amount", "vendorid", "tpep_pickup_datetime",
                                         "store_and_fwd_flag", "no_such", "tolls_amount",
                                         "pulocationid", "dolocationid"};
    struct json_columns c;
    init_cols(&c, names, 8);
    struct cell cells[8];
    assert_int_equal(judge(&c, taxi, strlen(taxi), cells), LINE_VALID);
    char *q = tu_exact(taxi, strlen(taxi)); /* the spans point into q */
    assert_int_equal(json_line(&c, q, strlen(taxi), cells), LINE_VALID);
    expect_cell(&cells[0], CELL_RAW, "27.96");
    expect_cell(&cells[1], CELL_RAW, "2");
    expect_cell(&cells[2], CELL_STRING, "2017-01-01 00:00:02");
    expect_cell(&cells[3], CELL_STRING, "N");
    expect_cell(&cells[4], CELL_EMPTY, NULL);
    expect_cell(&cells[5], CELL_RAW, "0");
    expect_cell(&cells[6], CELL_RAW, "186");
    expect_cell(&cells[7], CELL_RAW, "36");
    assert_true(cells[6].p >= q && cells[6].p < q + strlen(taxi));
    free(q);
    json_columns_free(&c);
}

/* Parses a NUL-free line held in a static string (spans point into it). */
static enum line_verdict line(const struct json_columns *c, const char *s, struct cell *cells)
{
    return json_line(c, s, strlen(s), cells);
}

static void test_cells_kinds(void **state)
{
    (void)state;
    static const char *const names[] = {"s", "e", "n", "t", "f", "z", "o", "a", "x"};
    struct json_columns c;
    init_cols(&c, names, 9);
    struct cell k[9];
    const char *s = " { \"s\" : \"plain\" , \"e\":\"a\\nb\\u0041\", \"n\":-1.5e+3,\"t\":true,"
                    "\"f\":false,\"z\":null,\"o\":{ \"k\" : [1, 2 ] },\"a\":[ \"x\" , {} ] }\r";
    assert_int_equal(line(&c, s, k), LINE_VALID);
    expect_cell(&k[0], CELL_STRING, "plain");
    expect_cell(&k[1], CELL_STRING_ESCAPED, "a\\nb\\u0041");
    expect_cell(&k[2], CELL_RAW, "-1.5e+3");
    expect_cell(&k[3], CELL_RAW, "true");
    expect_cell(&k[4], CELL_RAW, "false");
    expect_cell(&k[5], CELL_EMPTY, NULL);
    expect_cell(&k[6], CELL_RAW, "{ \"k\" : [1, 2 ] }");
    expect_cell(&k[7], CELL_RAW, "[ \"x\" , {} ]");
    expect_cell(&k[8], CELL_EMPTY, NULL);

    /* An empty string is a string, not an empty cell. */
    assert_int_equal(line(&c, "{\"s\":\"\"}", k), LINE_VALID);
    expect_cell(&k[0], CELL_STRING, "");
    assert_non_null(k[0].p);
    /* Cells are reset on every line. */
    assert_int_equal(line(&c, "{}", k), LINE_VALID);
    for (int i = 0; i < 9; i++)
        expect_cell(&k[i], CELL_EMPTY, NULL);
    json_columns_free(&c);
}

static void test_cells_duplicates(void **state)
{
    (void)state;
    static const char *const names[] = {"a", "b"};
    struct json_columns c;
    init_cols(&c, names, 2);
    struct cell k[2];
    assert_int_equal(line(&c, "{\"a\":1,\"b\":2,\"a\":\"three\"}", k), LINE_VALID);
    expect_cell(&k[0], CELL_STRING, "three");
    expect_cell(&k[1], CELL_RAW, "2");
    assert_int_equal(line(&c, "{\"a\":1,\"a\":null}", k), LINE_VALID);
    expect_cell(&k[0], CELL_EMPTY, NULL);
    assert_int_equal(line(&c, "{\"a\":null,\"a\":[]}", k), LINE_VALID);
    expect_cell(&k[0], CELL_RAW, "[]");
    /* The last one wins even when it is spelled with escapes. */
    assert_int_equal(line(&c, "{\"a\":1,\"\\u0061\":2}", k), LINE_VALID);
    expect_cell(&k[0], CELL_RAW, "2");
    assert_int_equal(line(&c, "{\"\\u0061\":1,\"a\":2}", k), LINE_VALID);
    expect_cell(&k[0], CELL_RAW, "2");
    json_columns_free(&c);
}

static void test_cells_key_matching(void **state)
{
    (void)state;
    static const char *const names[] = {"vendorid", "a/b", "caf\xc3\xa9", "\xf0\x9f\x98\x80",
                                        "", "q\"k"};
    struct json_columns c;
    char err[128];
    /* An empty name is refused, so test without it. */
    assert_int_equal(json_columns_init(&c, names, 6, err, sizeof err), -1);
    static const char *const ok[] = {"vendorid", "a/b", "caf\xc3\xa9", "\xf0\x9f\x98\x80",
                                     "q\"k"};
    init_cols(&c, ok, 5);
    struct cell k[5];
    assert_int_equal(line(&c, "{\"vendor\\u0069d\":7,\"a\\/b\":8,\"caf\\u00e9\":9,"
                              "\"\\ud83d\\ude00\":10,\"q\\\"k\":11}",
                          k),
                     LINE_VALID);
    expect_cell(&k[0], CELL_RAW, "7");
    expect_cell(&k[1], CELL_RAW, "8");
    expect_cell(&k[2], CELL_RAW, "9");
    expect_cell(&k[3], CELL_RAW, "10");
    expect_cell(&k[4], CELL_RAW, "11");
    assert_int_equal(line(&c, "{\"caf\xc3\xa9\":1,\"\xf0\x9f\x98\x80\":2}", k), LINE_VALID);
    expect_cell(&k[2], CELL_RAW, "1");
    expect_cell(&k[3], CELL_RAW, "2");

    /* Only top-level keys count; near misses do not match. */
    assert_int_equal(line(&c, "{\"x\":{\"vendorid\":1},\"y\":[{\"vendorid\":2}],"
                              "\"vendorid \":3,\"Vendorid\":4,\"vendori\":5,\"vendoridd\":6,"
                              "\"vendori\\u0064x\":7,\"\":8}",
                          k),
                     LINE_VALID);
    for (int i = 0; i < 5; i++)
        expect_cell(&k[i], CELL_EMPTY, NULL);
    json_columns_free(&c);

    /* A name of the maximum length, matched plainly and through escapes. */
    char big[JSON_MAX_NAME + 1];
    memset(big, 'k', JSON_MAX_NAME);
    big[JSON_MAX_NAME] = 0;
    const char *bn[] = {big};
    init_cols(&c, bn, 1);
    struct cell one;
    char buf[JSON_MAX_NAME * 6 + 64];
    snprintf(buf, sizeof buf, "{\"%s\":1}", big);
    assert_int_equal(line(&c, buf, &one), LINE_VALID);
    expect_cell(&one, CELL_RAW, "1");
    char *w = buf + sprintf(buf, "{\"");
    for (int i = 0; i < JSON_MAX_NAME; i++)
        w += sprintf(w, "\\u006b"); /* 6 raw bytes per name byte: the longest that can match */
    sprintf(w, "\":2}");
    assert_int_equal(line(&c, buf, &one), LINE_VALID);
    expect_cell(&one, CELL_RAW, "2");
    snprintf(buf, sizeof buf, "{\"%sk\":1}", big);
    assert_int_equal(line(&c, buf, &one), LINE_VALID);
    expect_cell(&one, CELL_EMPTY, NULL);
    json_columns_free(&c);
}

static void test_columns_init(void **state)
{
    (void)state;
    struct json_columns c;
    char err[128];
    static const char *const dup[] = {"a", "b", "a"};
    err[0] = 0;
    assert_int_equal(json_columns_init(&c, dup, 3, err, sizeof err), -1);
    assert_non_null(strstr(err, "duplicate"));
    static const char *const empty[] = {"a", ""};
    assert_int_equal(json_columns_init(&c, empty, 2, err, sizeof err), -1);
    assert_int_equal(json_columns_init(&c, empty, 0, err, sizeof err), -1);
    char big[JSON_MAX_NAME + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    const char *toolong[] = {big};
    assert_int_equal(json_columns_init(&c, toolong, 1, err, sizeof err), -1);
    static char many_buf[JSON_MAX_COLUMNS + 1][16];
    const char *many[JSON_MAX_COLUMNS + 1];
    for (int i = 0; i <= JSON_MAX_COLUMNS; i++) {
        snprintf(many_buf[i], sizeof many_buf[i], "c%d", i);
        many[i] = many_buf[i];
    }
    assert_int_equal(json_columns_init(&c, many, JSON_MAX_COLUMNS + 1, err, sizeof err), -1);
    init_cols(&c, many, JSON_MAX_COLUMNS);
    assert_int_equal(c.count, JSON_MAX_COLUMNS);
    /* Every column of a full set is found (hash chains). */
    char buf[40];
    struct cell cells[JSON_MAX_COLUMNS];
    for (int i = 0; i < JSON_MAX_COLUMNS; i += 7) {
        snprintf(buf, sizeof buf, "{\"c%d\":%d}", i, i);
        assert_int_equal(line(&c, buf, cells), LINE_VALID);
        char num[16];
        snprintf(num, sizeof num, "%d", i);
        expect_cell(&cells[i], CELL_RAW, num);
        assert_int_equal(cells[(i + 1) % JSON_MAX_COLUMNS].kind, CELL_EMPTY);
    }
    json_columns_free(&c);
    assert_int_equal(c.count, 0);
}

/* Keys as long as a column's name but not it, names sharing a length (then the hash chains
 * decide), names past 16 bytes (compared in the middle too), in lines long enough for the
 * SIMD paths and short ones for the strict walk, under every path; and a set of more than
 * eight columns, whose cells are cleared another way. */
static void test_lookup_by_length(void **state)
{
    (void)state;
    static const char *const names[] = {"total_amount", "vendorid",   "trip_distance",
                                        "c1",           "c2",         "c3",
                                        "store_and_fwd_flag", "a_name_longer_than_16"};
    struct json_columns c;
    init_cols(&c, names, 8);
    static const char *const lines[] = {
        "{\"tolls_amount\":1,\"pulocationid\":2,\"total_amount\":3.5,\"vendorix\":4}",
        "{\"c4\":1,\"c2\":2,\"c0\":3,\"c3\":\"x\",\"padding_padding\":0,\"c1\":true}",
        "{\"store_and_fwd_flaX\":\"N\",\"store_and_fwd_flag\":\"Y\",\"a_name_longer_than_1X\":1}",
        "{\"a_name_longer_than_16\":-0.5,\"a_Name_longer_than_16\":2,\"vendorid\":null}",
        "{\"tolls_amount\":1}",
        "{\"c2\":7}",
    };
    /* Expected cells, as column index = value text ("" for a missing column). */
    static const char *const want[][8] = {
        {"3.5", "", "", "", "", "", "", ""},
        {"", "", "", "true", "2", "x", "", ""},
        {"", "", "", "", "", "", "Y", ""},
        {"", "", "", "", "", "", "", "-0.5"},
        {"", "", "", "", "", "", "", ""},
        {"", "", "", "", "7", "", "", ""},
    };
    static const char *const paths[] = {"scalar", "sse2", "avx2", "avx512"};
    const char *keep = json_engine_name(); /* the path main runs this group under */
    struct cell cells[8];
    for (size_t e = 0; e < sizeof paths / sizeof *paths; e++) {
        if (json_engine_select(paths[e]) != 0) {
            print_message("path %s: not available here, skipped\n", paths[e]);
            continue;
        }
        for (size_t l = 0; l < sizeof lines / sizeof *lines; l++) {
            memset(cells, 0xA5, sizeof cells);
            if (line(&c, lines[l], cells) != LINE_VALID)
                fail_msg("path %s: line %zu not valid", paths[e], l);
            for (size_t i = 0; i < 8; i++) {
                if (!*want[l][i])
                    expect_cell(&cells[i], CELL_EMPTY, "");
                else
                    expect_cell(&cells[i], strcmp(want[l][i], "x") && strcmp(want[l][i], "Y")
                                               ? CELL_RAW : CELL_STRING, want[l][i]);
            }
        }
    }
    json_columns_free(&c);

    static const char *const wide[] = {"k01", "k02", "k03", "k04", "k05",
                                       "k06", "k07", "k08", "k09", "k10"};
    init_cols(&c, wide, 10);
    struct cell w[10];
    for (size_t e = 0; e < sizeof paths / sizeof *paths; e++) {
        if (json_engine_select(paths[e]) != 0)
            continue;
        memset(w, 0xA5, sizeof w);
        assert_int_equal(line(&c, "{\"k10\":10,\"k03\":3,\"k11\":11,\"padding\":\"padding\"}", w),
                         LINE_VALID);
        for (size_t i = 0; i < 10; i++)
            expect_cell(&w[i], i == 9 || i == 2 ? CELL_RAW : CELL_EMPTY,
                        i == 9 ? "10" : i == 2 ? "3" : "");
    }
    json_engine_select(keep);
    json_columns_free(&c);
}

/* ---- limits ------------------------------------------------------------------------- */

/* A line whose deepest value sits at depth d (the top-level object is depth 1). */
static char *nested(size_t d, int style, size_t *n)
{
    char *p = malloc(8 * d + 16), *w = p;
    w += sprintf(w, "{\"a\":");
    for (size_t i = 2; i <= d; i++) {
        int obj = style == 1 || (style == 2 && i % 2);
        w += sprintf(w, obj ? (i == d ? "{" : "{\"k\":") : "[");
    }
    for (size_t i = d; i >= 2; i--) {
        int obj = style == 1 || (style == 2 && i % 2);
        *w++ = obj ? '}' : ']';
    }
    *w++ = '}';
    *n = (size_t)(w - p);
    return p;
}

static void test_depth(void **state)
{
    (void)state;
    struct cell k;
    for (int style = 0; style < 3; style++) {
        size_t n;
        char *p = nested(JSON_MAX_DEPTH, style, &n);
        assert_int_equal(judge(&cols1, p, n, &k), LINE_VALID);
        assert_int_equal(ref_line(p, n), LINE_VALID);
        assert_int_equal(k.kind, CELL_RAW); /* the whole nested value */
        assert_int_equal(k.len, n - 6);
        free(p);
        p = nested(JSON_MAX_DEPTH + 1, style, &n);
        assert_int_equal(judge(&cols1, p, n, &k), LINE_INVALID);
        assert_int_equal(ref_line(p, n), LINE_INVALID);
        free(p);
        p = nested(JSON_MAX_DEPTH, style, &n);
        assert_int_equal(judge(&cols1, p, n - 1, &k), LINE_INVALID); /* unclosed */
        free(p);
    }
    /* Hostile depth: refused, with constant stack. */
    size_t n = 1000000;
    char *p = malloc(n);
    memset(p, '[', n);
    memcpy(p, "{\"a\":", 5);
    assert_int_equal(json_line(&cols1, p, n, &k), LINE_INVALID);
    free(p);
}

static void test_long_values(void **state)
{
    (void)state;
    const size_t L = 100000;
    char *p = malloc(L + 16);
    struct cell k;
    /* a 100 KB string */
    memcpy(p, "{\"a\":\"", 6);
    for (size_t i = 0; i < L; i++)
        p[6 + i] = (char)('a' + i % 26);
    memcpy(p + 6 + L, "\"}", 2);
    char *q = tu_exact(p, L + 8);
    assert_int_equal(json_line(&cols1, q, L + 8, &k), LINE_VALID);
    assert_int_equal(k.kind, CELL_STRING);
    assert_int_equal(k.len, L);
    assert_ptr_equal(k.p, q + 6);
    q[6 + L - 1] = 0x01; /* a control char at the very end of the run */
    assert_int_equal(json_line(&cols1, q, L + 8, &k), LINE_INVALID);
    q[6 + L - 1] = (char)0xC3; /* a truncated sequence just before the quote */
    assert_int_equal(json_line(&cols1, q, L + 8, &k), LINE_INVALID);
    free(q);
    /* a 100 KB number, integer and fraction */
    memcpy(p, "{\"a\":", 5);
    memset(p + 5, '7', L);
    p[5 + L] = '}';
    assert_int_equal(judge(&cols1, p, L + 6, &k), LINE_VALID);
    p[5 + L / 2] = '.';
    assert_int_equal(judge(&cols1, p, L + 6, &k), LINE_VALID);
    p[5 + L - 1] = 'e';
    assert_int_equal(judge(&cols1, p, L + 6, &k), LINE_INVALID);
    /* a 100 KB key */
    p[0] = '{';
    p[1] = '"';
    memset(p + 2, 'k', L);
    memcpy(p + 2 + L, "\":1}", 4);
    assert_int_equal(judge(&cols1, p, L + 6, &k), LINE_VALID);
    assert_int_equal(k.kind, CELL_EMPTY);
    /* a 100 KB string of escapes and multi-byte UTF-8 */
    static const char unit[] = "\\u00e9\xe6\x97\xa5\\n\xf0\x9f\x98\x80\\ud83d\\ude00x"; /* 26 */
    size_t ul = sizeof unit - 1, reps = L / ul;
    char *s = malloc(reps * ul + 16), *w = s;
    w += sprintf(w, "{\"a\":\"");
    for (size_t i = 0; i < reps; i++, w += ul)
        memcpy(w, unit, ul);
    w += sprintf(w, "\"}");
    assert_int_equal(judge(&cols1, s, (size_t)(w - s), &k), LINE_VALID);
    assert_int_equal(ref_line(s, (size_t)(w - s)), LINE_VALID);
    free(s);
    free(p);
}

static void test_blank(void **state)
{
    (void)state;
    struct cell k;
    assert_int_equal(json_line(&cols1, "", 0, &k), LINE_BLANK);
    assert_int_equal(json_line(&cols1, NULL, 0, &k), LINE_BLANK);
    assert_int_equal(judge(&cols1, " \t\r", 3, &k), LINE_BLANK);
    assert_int_equal(judge(&cols1, " \t\r\0", 4, &k), LINE_INVALID);
    /* n bounds the line, not a NUL */
    assert_int_equal(json_line(&cols1, "{\"a\":1}garbage", 7, &k), LINE_VALID);
    expect_cell(&k, CELL_RAW, "1");
    assert_int_equal(json_line(&cols1, "{\"a\":12", 6, &k), LINE_INVALID);
}

/* ---- unescaping --------------------------------------------------------------------- */

static void expect_unescape(const char *in, const char *out, size_t outlen)
{
    size_t n = strlen(in);
    char *src = tu_exact(in, n), *dst = malloc(n ? n : 1);
    size_t got = json_unescape(src, n, dst);
    if (got != outlen || memcmp(dst, out, outlen) != 0)
        fail_msg("json_unescape(\"%s\"): %zu bytes, expected %zu", in, got, outlen);
    got = json_unescape(src, n, src); /* in place */
    assert_int_equal(got, outlen);
    assert_memory_equal(src, out, outlen);
    free(src);
    free(dst);
}

static void test_unescape(void **state)
{
    (void)state;
    expect_unescape("", "", 0);
    expect_unescape("plain", "plain", 5);
    expect_unescape("\\\"\\\\\\/\\b\\f\\n\\r\\t", "\"\\/\b\f\n\r\t", 8);
    expect_unescape("a\\u0041b", "aAb", 3);
    expect_unescape("\\u0000", "\0", 1);
    expect_unescape("\\u007f\\u0080", "\x7f\xc2\x80", 3);
    expect_unescape("\\u07FF\\u0800", "\xdf\xbf\xe0\xa0\x80", 5);
    expect_unescape("\\u00e9\\u00E9", "\xc3\xa9\xc3\xa9", 4);
    expect_unescape("\\uffff", "\xef\xbf\xbf", 3);
    expect_unescape("\\ud83d\\ude00", "\xf0\x9f\x98\x80", 4);
    expect_unescape("\\uD800\\uDC00", "\xf0\x90\x80\x80", 4);
    expect_unescape("\\uDBFF\\uDFFF", "\xf4\x8f\xbf\xbf", 4);
    expect_unescape("x\xc3\xa9\\n\xf0\x9f\x98\x80y", "x\xc3\xa9\n\xf0\x9f\x98\x80y", 9);
    /* Malformed spans (never produced by json_line) stay in bounds. */
    expect_unescape("ab\\", "ab\\", 3);
    expect_unescape("\\u12", "u12", 3);
}

/* Plain runs of every length up to 40 before, between and after two escapes, so that each
 * escape falls at every offset of the 16-byte blocks json_unescape copies whole and the
 * tail meets the scalar end; out of place and in place (expect_unescape), where a block
 * stored too early or too long overwrites bytes not read yet. The expected text is built
 * from the pieces, not by the code under test. */
static void test_unescape_long_runs(void **state)
{
    (void)state;
    static const struct {
        const char *esc, *out;
    } e[] = {{"\\n", "\n"},           {"\\\"", "\""},         {"\\/", "/"},
             {"\\u00e9", "\xc3\xa9"}, {"\\\\", "\\"},
             {"\\ud83d\\ude00", "\xf0\x9f\x98\x80"}};
    const size_t ne = sizeof e / sizeof e[0];
    char in[160], out[160];
    for (size_t a = 0; a <= 40; a++)
        for (size_t b = 0; b <= 40; b++)
            for (size_t k = 0; k < ne; k++) {
                size_t ni = 0, no = 0;
                for (size_t j = 0; j < a; j++)
                    in[ni++] = out[no++] = (char)('a' + j % 26);
                for (const char *c = e[k].esc; *c; c++)
                    in[ni++] = *c;
                for (const char *c = e[k].out; *c; c++)
                    out[no++] = *c;
                for (size_t j = 0; j < b; j++)
                    in[ni++] = out[no++] = j % 5 == 4 ? (char)0xc3 : (char)('A' + j % 26);
                for (const char *c = e[(k + 1) % ne].esc; *c; c++)
                    in[ni++] = *c;
                for (const char *c = e[(k + 1) % ne].out; *c; c++)
                    out[no++] = *c;
                for (size_t j = 0; j < (a + b) % 19; j++)
                    in[ni++] = out[no++] = (char)('0' + j % 10);
                in[ni] = '\0';
                expect_unescape(in, out, no);
            }
}

/* ---- differential mutation test against the reference ------------------------------- */

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void test_mutations(void **state)
{
    (void)state;
    static const char *const seeds[] = {
        taxi,
        "{\"a\":[1,-2.5e+3,{\"b\":\"x\\u00e9\\ud83d\\ude00\"},true,false,null],\"c\":{}}",
        "{ \"k\" : \"\xe6\x97\xa5\xf0\x9f\x98\x80\xc3\xa9\" , \"n\" : [ [ ] , { } ] }",
        "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\",\"z\":0,\"m\":-0.0e-0}",
    };
    static const unsigned char bytes[] = {'"',  '\\', '{',  '}',  '[',  ']',  ',',  ':',
                                          ' ',  '0',  '1',  '-',  '.',  'e',  'u',  'd',
                                          '8',  'n',  't',  0x00, 0x1f, 0x7f, 0x80, 0xbf,
                                          0xc2, 0xe0, 0xed, 0xf0, 0xf4, 0xff, '\r', 'a'};
    char buf[1024];
    struct cell k;
    size_t seen[3] = {0};
    size_t iters = getenv("NDINGEST_FUZZ_ITERS") ? strtoul(getenv("NDINGEST_FUZZ_ITERS"), 0, 10)
                                                 : 200000;
    for (size_t it = 0; it < iters; it++) {
        const char *s = seeds[next_rand() % (sizeof seeds / sizeof *seeds)];
        size_t n = strlen(s);
        memcpy(buf, s, n);
        int muts = 1 + (int)(next_rand() % 3);
        for (int m = 0; m < muts; m++) {
            size_t pos = n ? next_rand() % n : 0;
            unsigned char b = bytes[next_rand() % sizeof bytes];
            switch (next_rand() % 4) {
            case 0: /* replace */
                if (n)
                    buf[pos] = (char)b;
                break;
            case 1: /* insert */
                if (n < sizeof buf - 1) {
                    memmove(buf + pos + 1, buf + pos, n - pos);
                    buf[pos] = (char)b;
                    n++;
                }
                break;
            case 2: /* delete */
                if (n) {
                    memmove(buf + pos, buf + pos + 1, n - pos - 1);
                    n--;
                }
                break;
            default: /* truncate */
                n = pos;
                break;
            }
        }
        enum line_verdict got = judge(&cols1, buf, n, &k), want = ref_line(buf, n);
        seen[got]++;
        if (got != want)
            fail_msg("mutant %zu (%zu bytes \"%.*s\"): engine %s, reference %s", it, n,
                     (int)n, buf, verdict_name(got), verdict_name(want));
    }
    print_message("mutants: %zu valid, %zu invalid, %zu blank\n", seen[LINE_VALID],
                  seen[LINE_INVALID], seen[LINE_BLANK]);
    if (iters >= 1000 && seen[LINE_VALID] < iters / 50)
        fail_msg("too few valid mutants to be a meaningful differential test");
}

/* ---- dispatch paths ------------------------------------------------------------------ */

/* Judges p[0..n) (an exact-size copy) under every path: the verdicts must agree, and on a
 * valid line every cell too (kind, length and position in the line). */
static void expect_paths_agree(const struct json_columns *c, const char *p, size_t n)
{
    static const char *const paths[] = {"scalar", "sse2", "avx2", "avx512"};
    char *q = tu_exact(p, n);
    struct cell want[16], got[16];
    assert_true(c->count <= 16);
    const char *keep = json_engine_name();
    enum line_verdict v0 = (enum line_verdict)-1;
    for (size_t e = 0; e < sizeof paths / sizeof *paths; e++) {
        if (json_engine_select(paths[e]) != 0)
            continue;
        memset(got, 0xA5, sizeof got);
        enum line_verdict v = json_line(c, q, n, got);
        if ((int)v0 < 0) {
            v0 = v;
            memcpy(want, got, sizeof got);
            continue;
        }
        if (v != v0)
            fail_msg("path %s: %s, scalar %s on \"%.*s\"", paths[e], verdict_name(v),
                     verdict_name(v0), (int)n, p);
        for (size_t i = 0; v == LINE_VALID && i < c->count; i++)
            if (got[i].kind != want[i].kind || got[i].len != want[i].len ||
                (got[i].kind != CELL_EMPTY && got[i].p != want[i].p))
                fail_msg("path %s: cell %zu differs on \"%.*s\"", paths[e], i, (int)n, p);
    }
    json_engine_select(keep);
    free(q);
}

/* seed with one to three bytes replaced, inserted or deleted, into buf (room for
 * strlen(seed) + 3): returns its length. */
static size_t mutant(char *buf, const char *seed)
{
    static const unsigned char bytes[] = {'"', '\\', '{', '}', '[', ',', ':', ' ', '0', '1',
                                          '-', '.', 'e', 'n', 't', 0x00, 0x1f, 0x80, 'a'};
    size_t n = strlen(seed);
    memcpy(buf, seed, n);
    int muts = 1 + (int)(next_rand() % 3);
    for (int m = 0; m < muts; m++) {
        size_t pos = n ? next_rand() % n : 0;
        unsigned char b = bytes[next_rand() % sizeof bytes];
        switch (next_rand() % 3) {
        case 0:
            if (n)
                buf[pos] = (char)b;
            break;
        case 1:
            memmove(buf + pos + 1, buf + pos, n - pos);
            buf[pos] = (char)b;
            n++;
            break;
        default:
            if (n) {
                memmove(buf + pos, buf + pos + 1, n - pos - 1);
                n--;
            }
            break;
        }
    }
    return n;
}

static void test_paths_agree(void **state)
{
    (void)state;
    static const char *const names[] = {"vendorid", "tpep_pickup_datetime", "trip_distance",
                                         "total_amount", "a", "bc", "s", "x"};
    struct json_columns c;
    init_cols(&c, names, 8);
    static const char *const cases[] = {
        "{\"a\":1,\"bc\":2,\"s\":\"x\",\"x\":123456789012}",   /* exactly 40 bytes */
        "{\"aaaaaaaaaaaaaaaaaaaaaaaa\":1,\"a\":\"\"}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":-0,\"a\":\"x\"}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":0.5,\"bc\":-12.25}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":1e5,\"bc\":-12.25}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":1.5E+5,\"bc\":2}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":01,\"bc\":-12.25}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":1.,\"bc\":-12.25}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":-,\"bc\":-12.25}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":-a,\"bc\":-12.25}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":true,\"bc\":false,\"s\":null}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":true,\"bc\":false,\"s\":nul}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":true,\"bc\":fals,\"s\":null}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaa\":tru,\"bc\":false,\"s\":null}",
        "{\"a\":1,\"a\":\"two\",\"a\":null,\"bc\":\"x,y\",\"s\":\"q\"}",
        "{\"a\":1,\"a\":\"two\",\"a\":null,\"bc\":\"x,y\",\"s\":\"q\"} ",
        " {\"a\":1,\"a\":\"two\",\"a\":null,\"bc\":\"x,y\",\"s\":\"q\"}",
        "{\"a\" :1,\"a\":\"two\",\"a\":null,\"bc\":\"x,y\",\"s\":\"q\"}",
        "{\"a\":1 ,\"a\":\"two\",\"a\":null,\"bc\":\"x,y\",\"s\":\"q\"}",
        "{\"a\":1,\"a\":\"t\\\"o\",\"a\":null,\"bc\":\"x,y\",\"s\":\"q\"}",
        "{\"a\":1,\"a\":\"t\xc3\xa9o\",\"a\":null,\"bc\":\"x,y\",\"s\":\"q\"}",
        "{\"a\":1,\"a\":\"t\xc3o\",\"a\":null,\"bc\":\"x,y\",\"s\":\"q\"}",
        "{\"a\":1,\"a\":\"t\to\",\"a\":null,\"bc\":\"x,y\",\"s\":\"q\"}",
        "{\"a\":1,\"a\":[1,2],\"x\":{\"b\":2},\"bc\":\"x,y\",\"s\":\"q\"}",
        "{\"a\":1,\"bb\":2,\"ccccccccccccccccccccccccc\":3,,\"s\":\"q\"}",
        "{\"a\":1,\"bb\":2,\"ccccccccccccccccccccccccc\":3,\"s\":\"q\",}",
        "{\"a\":1,\"bb\":2,\"ccccccccccccccccccccccccc\":3,\"s\":\"q\"}}",
        "{\"a\":1,\"bb\":2,\"ccccccccccccccccccccccccc\":3,\"s\":\"q\"\"}",
        "{\"a\":1,\"bb\":2,\"ccccccccccccccccccccccccc\":3,\"s\":\"q}",
        "{\"a\":1,\"bb\":2,\"ccccccccccccccccccccccccc\":3,\"s\":q\"}",
        "{\"a\":1,\"bb\":2,\"ccccccccccccccccccccccccc\":3,\"\":\"q\"}",
        "{\"a\":1,\"bb\":2,\"ccccccccccccccccccccccccc\":3,\"s\"}",
        "{\"a\":1,\"bb\":2,\"ccccccccccccccccccccccccc\":3,\"s\":}",
        "{\"a\":1,\"bb\":2,\"ccccccccccccccccccccccccc\":3:\"s\":1}",
        "{\"a\":1,\"bb\":2,\"ccccccccccccccccccccccccc\":3,\"s\":1}\r",
        "{\"vendorid\":2,\"vendorix\":3,\"vendori\":4,\"vendoridd\":5,\"total_amount\":1}",
        "{\"total_amounT\":2,\"tpep_pickup_datetimE\":3,\"trip_distancE\":4}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_paths_agree(&c, cases[i], strlen(cases[i]));
    /* Lines with no quote or one quote, of every length across two 64-byte words: the
     * fast path runs out of quotes there and must stop at the end of the line. */
    char shape[200];
    for (size_t n = 2; n < sizeof shape; n++) {
        for (int q = 0; q < 4; q++) {
            memset(shape, '1', n);
            shape[0] = '{';
            shape[n - 1] = '}';
            if (q == 1 && n > 2)
                shape[1] = '"';
            if (q == 2 && n > 4)
                memcpy(shape + 1, "\"a\":", 4);
            if (q == 3 && n > 6)
                memcpy(shape + 1, "\"a\":\"", 5);
            expect_paths_agree(&c, shape, n);
        }
    }
    /* The taxi line cut and padded at every length around the 32-byte blocks. */
    for (size_t n = 0; n <= strlen(taxi); n++)
        expect_paths_agree(&c, taxi, n);
    /* Taxi mutants, as in test_mutations, compared path against path with 8 columns. */
    char buf[1024];
    for (size_t it = 0; it < 100000; it++) {
        size_t n = mutant(buf, taxi);
        expect_paths_agree(&c, buf, n);
    }
    json_columns_free(&c);
}

/* ---- columns given by paths ----------------------------------------------------------- */

#define K(s) {JSON_STEP_KEY, sizeof(s) - 1, 0, s}
#define I(n) {JSON_STEP_INDEX, 0, n, NULL}
#define EVERY {JSON_STEP_EVERY, 0, 0, NULL}
#define SPEC(name, steps) {name, steps, sizeof steps / sizeof *steps}

static void init_specs(struct json_columns *c, const struct json_column_spec *specs,
                       size_t count)
{
    char err[256];
    if (json_columns_init_paths(c, specs, count, err, sizeof err) != 0)
        fail_msg("json_columns_init_paths: %s", err);
}

/* Paths into objects and arrays, keys that need quoting in the path or unescaping in the
 * line, a path and its prefix side by side, one path twice, an Array column's [:]. */
static const struct json_step p_ab[] = {K("a"), K("b")}, p_a[] = {K("a")},
                              p_x0[] = {K("x"), I(0)}, p_x2y[] = {K("x"), I(2), K("y")},
                              p_dots[] = {K("key with.dots")},
                              p_quote[] = {K("e"), K("k\"q"), I(0)},
                              p_items[] = {K("items"), EVERY, K("id")},
                              p_deep[] = {K("a"), K("b"), K("c")}, p_s[] = {K("a"), K("s")},
                              p_nul[] = {K("a"), K("n\0l")};
static const struct json_column_spec nested_cols[] = {
    SPEC("ab", p_ab),       SPEC("a", p_a),           SPEC("x0", p_x0),
    SPEC("x2y", p_x2y),     SPEC("dots", p_dots),     SPEC("quote", p_quote),
    SPEC("ab_again", p_ab), SPEC("items", p_items),   SPEC("deep", p_deep),
    SPEC("s", p_s),         SPEC("nul", p_nul),
};
#define NESTED (sizeof nested_cols / sizeof *nested_cols)

static void test_paths_cells(void **state)
{
    (void)state;
    struct json_columns c;
    init_specs(&c, nested_cols, NESTED);
    assert_int_equal(c.count, NESTED);
    assert_string_equal(c.names[3], "x2y");
    struct cell k[NESTED];
    assert_int_equal(line(&c,
                          "{\"a\":{\"b\":{\"c\":1},\"s\":\"t\\ty\",\"n\\u0000l\":2},"
                          "\"x\":[10,\"s]\\\"[\",{\"y\":\"yy\"}],\"key with.dots\":\"d\","
                          "\"e\":{\"\\u006b\\\"q\":[true]},\"items\":[{\"id\":1},{\"id\":2}]}",
                          k),
                     LINE_VALID);
    expect_cell(&k[0], CELL_RAW, "{\"c\":1}");
    expect_cell(&k[1], CELL_RAW,
                "{\"b\":{\"c\":1},\"s\":\"t\\ty\",\"n\\u0000l\":2}");
    expect_cell(&k[2], CELL_RAW, "10");
    expect_cell(&k[3], CELL_STRING, "yy");
    expect_cell(&k[4], CELL_STRING, "d");
    expect_cell(&k[5], CELL_RAW, "true");
    expect_cell(&k[6], CELL_RAW, "{\"c\":1}");
    expect_cell(&k[7], CELL_RAW, "[{\"id\":1},{\"id\":2}]");
    expect_cell(&k[8], CELL_RAW, "1");
    expect_cell(&k[9], CELL_STRING_ESCAPED, "t\\ty");
    expect_cell(&k[10], CELL_RAW, "2");
    /* The same with blanks everywhere, and the top-level keys escaped. */
    assert_int_equal(line(&c,
                          " { \"\\u0061\" : { \"b\" : { \"c\" : 1 } , \"s\" : \"v\" } ,"
                          " \"x\" : [ 10 , [ 1 , [ ] ] , { \"z\" : 0 , \"y\" : 3.5e1 } ] } ",
                          k),
                     LINE_VALID);
    expect_cell(&k[0], CELL_RAW, "{ \"c\" : 1 }");
    expect_cell(&k[2], CELL_RAW, "10");
    expect_cell(&k[3], CELL_RAW, "3.5e1");
    expect_cell(&k[8], CELL_RAW, "1");
    expect_cell(&k[9], CELL_STRING, "v");
    expect_cell(&k[4], CELL_EMPTY, NULL);
    json_columns_free(&c);
}

/* A step that finds nothing gives an empty cell: a missing key, an index past the end, a
 * value of the wrong kind, null on the way or at the end. The line is still valid. */
static void test_paths_missing(void **state)
{
    (void)state;
    struct json_columns c;
    init_specs(&c, nested_cols, NESTED);
    struct cell k[NESTED];
    /* Each line, and the columns that do find something there (a bit per column). */
    static const struct {
        const char *text;
        unsigned found;
    } lines[] = {
        {"{}", 0},
        {"{\"a\":null,\"x\":null}", 0},
        {"{\"a\":{},\"x\":[]}", 1u << 1},
        {"{\"a\":[],\"x\":{}}", 1u << 1},
        {"{\"a\":{\"b\":null,\"s\":null},\"x\":[null,1,null]}", 1u << 1},
        {"{\"a\":[{\"b\":{\"c\":1}}],\"x\":[null,1,[{\"y\":1}]]}", 1u << 1},
        {"{\"a\":{\"b\":{\"C\":1,\"c \":2,\"\":3}},\"x\":[null,1,{\"Y\":1,\"yy\":2}]}",
         1u << 0 | 1u << 1 | 1u << 6},
        {"{\"a\":{\"b\":\"{\\\"c\\\":1}\"},\"x\":\"[1]\"}", 1u << 0 | 1u << 1 | 1u << 6},
        {"{\"a\":{\"b\":1},\"a\":{},\"x\":[null],\"x\":[]}", 1u << 1}, /* the last one wins */
        {"{\"a\":\"b\",\"x\":7,\"b\":{\"c\":1},\"y\":1}", 1u << 1},
    };
    for (size_t l = 0; l < sizeof lines / sizeof *lines; l++) {
        if (line(&c, lines[l].text, k) != LINE_VALID)
            fail_msg("line %zu not valid", l);
        for (size_t i = 0; i < NESTED; i++)
            if ((k[i].kind != CELL_EMPTY) != ((lines[l].found >> i) & 1))
                fail_msg("line %zu, column %s: \"%.*s\", kind %u", l, c.names[i],
                         (int)k[i].len, k[i].p ? k[i].p : "", k[i].kind);
    }
    /* Repeated keys inside: the last one wins there too, escaped or not. */
    assert_int_equal(line(&c, "{\"a\":{\"b\":{\"c\":1},\"b\":{\"c\":2}}}", k), LINE_VALID);
    expect_cell(&k[8], CELL_RAW, "2");
    assert_int_equal(line(&c, "{\"a\":{\"b\":{\"c\":1,\"\\u0063\":[3]}}}", k), LINE_VALID);
    expect_cell(&k[8], CELL_RAW, "[3]");
    assert_int_equal(line(&c, "{\"a\":{\"b\":{\"c\":1,\"c\":null}}}", k), LINE_VALID);
    expect_cell(&k[8], CELL_EMPTY, NULL);
    /* An invalid line is still invalid, whatever its paths would find. */
    assert_int_equal(line(&c, "{\"a\":{\"b\":{\"c\":1}},}", k), LINE_INVALID);
    assert_int_equal(line(&c, "{\"a\":{\"b\":{\"c\":01}}}", k), LINE_INVALID);
    assert_int_equal(line(&c, "   ", k), LINE_BLANK);
    json_columns_free(&c);
}

static void test_paths_init(void **state)
{
    (void)state;
    struct json_columns c;
    char err[128];
    static const struct json_step p_b[] = {K("b")}, p_i[] = {I(0)}, p_e[] = {K(""), K("b")};
    static const struct json_column_spec dup[] = {SPEC("a", p_a), SPEC("a", p_b)};
    assert_int_equal(json_columns_init_paths(&c, dup, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, "duplicate"));
    assert_int_equal(c.count, 0);
    static const struct json_column_spec index_first[] = {SPEC("a", p_i)};
    assert_int_equal(json_columns_init_paths(&c, index_first, 1, err, sizeof err), -1);
    static const struct json_column_spec empty_first[] = {SPEC("a", p_e)};
    assert_int_equal(json_columns_init_paths(&c, empty_first, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "empty"));
    const struct json_column_spec none[] = {{"a", NULL, 0}};
    assert_int_equal(json_columns_init_paths(&c, none, 1, err, sizeof err), -1);
    assert_int_equal(json_columns_init_paths(&c, dup, 0, err, sizeof err), -1);
    static const struct json_step odd[] = {K("a"), {7, 0, 0, NULL}};
    const struct json_column_spec bad_kind[] = {{"a", odd, 2}};
    assert_int_equal(json_columns_init_paths(&c, bad_kind, 1, err, sizeof err), -1);
    char big[JSON_MAX_NAME + 2];
    memset(big, 'k', sizeof big);
    const struct json_step longkey[] = {K("a"), {JSON_STEP_KEY, JSON_MAX_NAME + 1, 0, big}};
    const struct json_column_spec too_long[] = {{"a", longkey, 2}};
    assert_int_equal(json_columns_init_paths(&c, too_long, 1, err, sizeof err), -1);

    /* Keys of the maximum length at both levels; an empty key below the top; the steps
     * are copied, so the caller's may go. */
    struct json_step *steps = calloc(3, sizeof *steps);
    char *kbuf = calloc(1, JSON_MAX_NAME);
    assert_non_null(steps);
    assert_non_null(kbuf);
    memset(kbuf, 'k', JSON_MAX_NAME);
    steps[0] = (struct json_step){JSON_STEP_KEY, JSON_MAX_NAME, 0, kbuf};
    steps[1] = (struct json_step){JSON_STEP_KEY, JSON_MAX_NAME, 0, kbuf};
    steps[2] = (struct json_step){JSON_STEP_KEY, 0, 0, ""};
    const struct json_column_spec maxed[] = {{"m", steps, 3}};
    init_specs(&c, maxed, 1);
    free(steps);
    memset(kbuf, 'z', JSON_MAX_NAME);
    free(kbuf);
    char buf[2 * JSON_MAX_NAME + 64];
    char keys[JSON_MAX_NAME + 1];
    memset(keys, 'k', JSON_MAX_NAME);
    keys[JSON_MAX_NAME] = 0;
    snprintf(buf, sizeof buf, "{\"%s\":{\"%s\":{\"\":\"e\"}}}", keys, keys);
    struct cell one;
    assert_int_equal(line(&c, buf, &one), LINE_VALID);
    expect_cell(&one, CELL_STRING, "e");
    json_columns_free(&c);

    /* Columns of a full set, all below one key, and the names API's limits unchanged. */
    static char names[JSON_MAX_COLUMNS][16];
    static struct json_step st[JSON_MAX_COLUMNS][2];
    struct json_column_spec *many = calloc(JSON_MAX_COLUMNS + 1, sizeof *many);
    assert_non_null(many);
    for (int i = 0; i < JSON_MAX_COLUMNS; i++) {
        snprintf(names[i], sizeof names[i], "c%d", i);
        st[i][0] = (struct json_step){JSON_STEP_KEY, 1, 0, "o"};
        st[i][1] = (struct json_step){JSON_STEP_KEY, (uint32_t)strlen(names[i]), 0, names[i]};
        many[i] = (struct json_column_spec){names[i], st[i], 2};
    }
    many[JSON_MAX_COLUMNS] = many[0];
    assert_int_equal(json_columns_init_paths(&c, many, JSON_MAX_COLUMNS + 1, err, sizeof err),
                     -1);
    init_specs(&c, many, JSON_MAX_COLUMNS);
    struct cell *cells = calloc(JSON_MAX_COLUMNS, sizeof *cells);
    assert_non_null(cells);
    assert_int_equal(line(&c, "{\"o\":{\"c0\":0,\"c200\":200,\"c255\":\"z\"}}", cells),
                     LINE_VALID);
    expect_cell(&cells[0], CELL_RAW, "0");
    expect_cell(&cells[200], CELL_RAW, "200");
    expect_cell(&cells[255], CELL_STRING, "z");
    expect_cell(&cells[1], CELL_EMPTY, NULL);
    free(cells);
    free(many);
    json_columns_free(&c);
}

/* json_follow on its own: from a string with its quotes, through blanks, strings holding
 * brackets and escaped quotes, and a key longer than any column name, escaped. */
static void test_follow(void **state)
{
    (void)state;
    struct cell out;
    json_follow("\"a\\nb\"", 6, NULL, 0, &out);
    expect_cell(&out, CELL_STRING_ESCAPED, "a\\nb");
    json_follow("null", 4, NULL, 0, &out);
    expect_cell(&out, CELL_EMPTY, NULL);
    json_follow("-1.5e3", 6, NULL, 0, &out);
    expect_cell(&out, CELL_RAW, "-1.5e3");
    static const struct json_step two[] = {I(2)}, nine[] = {I(9)}, key_a[] = {K("a")};
    static const char arr[] = "[ \"a]\\\"[\\\\\" , { \"k\" : [ 1 , \"]\" ] } , false ]";
    json_follow(arr, strlen(arr), two, 1, &out);
    expect_cell(&out, CELL_RAW, "false");
    json_follow(arr, strlen(arr), nine, 1, &out);
    expect_cell(&out, CELL_EMPTY, NULL);
    json_follow(arr, strlen(arr), key_a, 1, &out);
    expect_cell(&out, CELL_EMPTY, NULL);
    json_follow("\"{\\\"a\\\":1}\"", 11, key_a, 1, &out);
    expect_cell(&out, CELL_EMPTY, NULL);
    static const struct json_step big_index[] = {{JSON_STEP_INDEX, 0, UINT32_MAX, NULL}};
    json_follow("[1,2]", 5, big_index, 1, &out);
    expect_cell(&out, CELL_EMPTY, NULL);

    enum { LONG = 3 * JSON_MAX_NAME };
    char *key = malloc(LONG), *text = malloc(LONG * 6 + 16);
    assert_non_null(key);
    assert_non_null(text);
    memset(key, 'q', LONG);
    char *w = text + sprintf(text, "{\"");
    for (int i = 0; i < LONG; i++)
        w += sprintf(w, i % 2 ? "q" : "\\u0071");
    w += sprintf(w, "\":[7]}");
    const struct json_step long_key[] = {{JSON_STEP_KEY, LONG, 0, key}, I(0)};
    json_follow(text, (size_t)(w - text), long_key, 2, &out);
    expect_cell(&out, CELL_RAW, "7");
    key[LONG - 1] = 'r';
    json_follow(text, (size_t)(w - text), long_key, 2, &out);
    expect_cell(&out, CELL_EMPTY, NULL);
    free(key);
    free(text);
}

/* Columns by paths under every dispatch path: the same cells, on nested lines and their
 * mutants (which cut strings, containers and keys at every place). */
static void test_paths_paths_agree(void **state)
{
    (void)state;
    struct json_columns c;
    init_specs(&c, nested_cols, NESTED);
    static const char *const seeds[] = {
        "{\"a\":{\"b\":{\"c\":1},\"s\":\"t\\ty\"},\"x\":[10,\"s]\",{\"y\":\"yy\"}],"
        "\"key with.dots\":\"d\",\"e\":{\"k\\\"q\":[true]},\"items\":[{\"id\":1}]}",
        "{\"a\":{\"b\":{\"c\":[1,{\"c\":2}]},\"b\":{\"c\":-0.5}},\"x\":[[],{},{\"y\":null}]}",
        "{\"id\":123456,\"a\":{\"s\":\"caf\xc3\xa9\",\"b\":{\"c\":\"\"}},\"x\":[1,2,3]}",
    };
    for (size_t s = 0; s < sizeof seeds / sizeof *seeds; s++)
        for (size_t n = 0; n <= strlen(seeds[s]); n++)
            expect_paths_agree(&c, seeds[s], n);
    char buf[256];
    for (size_t it = 0; it < 30000; it++) {
        size_t n = mutant(buf, seeds[it % (sizeof seeds / sizeof *seeds)]);
        expect_paths_agree(&c, buf, n);
    }
    json_columns_free(&c);
}

/* Columns by paths that are each one distinct top-level key (the typed trips definition's
 * kind) are walked as names: the same verdicts and cells as json_columns_init's on every
 * path, over the seeds, their prefixes and mutants; a key given twice, or a path one step
 * longer, keeps the paths walk and still agrees. */
static void test_paths_flat_as_names(void **state)
{
    (void)state;
    static const char *const names[] = {"a", "x", "key with.dots", "items"};
    static const struct json_step f_x[] = {K("x")}, f_dots[] = {K("key with.dots")},
                                  f_items[] = {K("items"), EVERY, K("id")};
    static const struct json_column_spec flat[] = {SPEC("A", p_a), SPEC("X", f_x),
                                                   SPEC("D", f_dots), SPEC("I", f_items)};
    static const struct json_column_spec twice[] = {SPEC("A", p_a), SPEC("X", f_x),
                                                    SPEC("D", f_dots), SPEC("I", f_items),
                                                    SPEC("A2", p_a)};
    static const char *const seeds[] = {
        "{\"a\":{\"b\":1},\"x\":[10,\"s]\"],\"key with.dots\":\"d\",\"items\":[{\"id\":1}]}",
        "{\"a\":1,\"a\":null,\"\\u0078\":\"esc\",\"items\":[],\"x\":2,\"x\":{}}",
        " { \"items\" : [ 1 ] , \"a\" : \"caf\xc3\xa9\" } ",
    };
    struct json_columns byname, bypath, bytwice;
    init_cols(&byname, names, 4);
    init_specs(&bypath, flat, 4);
    init_specs(&bytwice, twice, 5);
    char buf[256];
    for (size_t it = 0; it < 20000; it++) {
        const char *seed = seeds[it % 3];
        size_t n = it < 600 ? (it / 3) % (strlen(seed) + 1) : mutant(buf, seed);
        const char *q = it < 600 ? seed : buf;
        struct cell want[5], got[5], got2[5];
        enum line_verdict v = json_line(&byname, q, n, want);
        assert_int_equal(json_line(&bypath, q, n, got), v);
        assert_int_equal(json_line(&bytwice, q, n, got2), v);
        for (size_t i = 0; v == LINE_VALID && i < 4; i++) {
            if (got[i].kind != want[i].kind || got[i].len != want[i].len ||
                got2[i].kind != want[i].kind || got2[i].len != want[i].len ||
                (want[i].kind != CELL_EMPTY && (got[i].p != want[i].p || got2[i].p != want[i].p)))
                fail_msg("cell %zu differs on \"%.*s\"", i, (int)n, q);
        }
        if (v == LINE_VALID && (got2[4].kind != want[0].kind || got2[4].len != want[0].len))
            fail_msg("the key given twice differs on \"%.*s\"", (int)n, q);
        expect_paths_agree(&bypath, q, n);
    }
    json_columns_free(&byname);
    json_columns_free(&bypath);
    json_columns_free(&bytwice);
}

/* ---- random nested lines ------------------------------------------------------------ */

/* Appends a random valid JSON value to *w: containers up to depth levels, keys drawn from
 * few names (so paths hit, and keys repeat), escapes, non-ASCII, blanks (spaces only, or
 * tabs when tabs is set: the fast paths leave those lines to the strict walk). */
static void gen_value(char **w, int depth, int tabs)
{
    static const char *const scalars[] = {"0", "-1.5", "12e3", "7", "true", "false", "null",
                                          "\"x\"", "\"a\\\"b\"", "\"caf\xc3\xa9\"", "\"\"",
                                          "\"]}\"", "\"\\u00e9\\\\\""};
    static const char *const keys[] = {"a", "b", "c", "ab", "\\u0061", "\\u0062", "b\\\"",
                                       "\xc3\xa9"};
    unsigned r = (unsigned)(next_rand() % 10);
    if (depth == 0 || r < 4) {
        *w += sprintf(*w, "%s", scalars[next_rand() % (sizeof scalars / sizeof *scalars)]);
        return;
    }
    int obj = r < 7, count = (int)(next_rand() % 4);
    *(*w)++ = obj ? '{' : '[';
    for (int i = 0; i < count; i++) {
        if (i)
            *(*w)++ = ',';
        if (next_rand() % 4 == 0)
            *(*w)++ = tabs && next_rand() % 2 ? '\t' : ' ';
        if (obj)
            *w += sprintf(*w, "\"%s\":", keys[next_rand() % (sizeof keys / sizeof *keys)]);
        if (next_rand() % 6 == 0)
            *(*w)++ = ' ';
        gen_value(w, depth - 1, tabs);
        if (next_rand() % 6 == 0)
            *(*w)++ = ' ';
    }
    *(*w)++ = obj ? '}' : ']';
}

/* A random line: an object of up to six members with top-level keys that the paths use. */
static size_t gen_line(char *buf, int tabs)
{
    static const char *const top[] = {"a", "b", "c", "x", "\\u0061", "id"};
    char *w = buf;
    *w++ = '{';
    int count = (int)(next_rand() % 7);
    for (int i = 0; i < count; i++) {
        if (i)
            *w++ = ',';
        w += sprintf(w, "\"%s\":", top[next_rand() % (sizeof top / sizeof *top)]);
        gen_value(&w, 4, tabs);
    }
    *w++ = '}';
    *w = 0;
    return (size_t)(w - buf);
}

static const struct json_step g_a[] = {K("a")}, g_ab[] = {K("a"), K("b")},
                              g_abc[] = {K("a"), K("b"), K("c")}, g_a0[] = {K("a"), I(0)},
                              g_a1[] = {K("a"), I(1)}, g_a1a[] = {K("a"), I(1), K("a")},
                              g_b01[] = {K("b"), I(0), I(1)}, g_aa[] = {K("a"), K("a")},
                              g_ab2[] = {K("a"), K("b"), I(2)}, g_x[] = {K("x")},
                              g_cab[] = {K("c"), K("ab")},
                              g_bq[] = {K("b"), K("b\""), K("\xc3\xa9")},
                              g_b0e[] = {K("b"), I(0), EVERY, K("a")},
                              g_ae[] = {K("a"), K("\xc3\xa9"), I(0)};
static const struct json_column_spec random_cols[] = {
    SPEC("a", g_a),     SPEC("ab", g_ab),   SPEC("abc", g_abc), SPEC("a0", g_a0),
    SPEC("a1", g_a1),   SPEC("a1a", g_a1a), SPEC("b01", g_b01), SPEC("aa", g_aa),
    SPEC("ab2", g_ab2), SPEC("x", g_x),     SPEC("cab", g_cab), SPEC("bq", g_bq),
    SPEC("b0e", g_b0e), SPEC("ae", g_ae),   SPEC("ab_twice", g_ab),
};

/* Random nested lines and their mutants: every dispatch path gives the strict walk's
 * verdict and cells (the strict walk follows paths with json_follow, the fast paths while
 * they validate). */
static void test_paths_random(void **state)
{
    (void)state;
    struct json_columns c;
    init_specs(&c, random_cols, sizeof random_cols / sizeof *random_cols);
    char buf[8192], mut[8200];
    for (size_t it = 0; it < 20000; it++) {
        size_t n = gen_line(buf, it % 8 == 0);
        assert_true(n < 4096);
        expect_paths_agree(&c, buf, n);
        if (it % 2) {
            n = mutant(mut, buf);
            expect_paths_agree(&c, mut, n);
        }
    }
    json_columns_free(&c);
}

/* The paths ride on the fast paths: each x86 path accepts the random lines (no tabs, so
 * none is left to the strict walk) with paths as it does without, and gives the strict
 * walk's cells. */
static void test_paths_fast(void **state)
{
    (void)state;
#ifdef JSON_HAVE_X86
    static const struct json_path *const rows[] = {&json_path_sse2, &json_path_avx2,
                                                   &json_path_avx512};
    struct json_columns c, flat;
    init_specs(&c, random_cols, sizeof random_cols / sizeof *random_cols);
    static const char *const top[] = {"a", "b", "c", "x"};
    init_cols(&flat, top, 4);
    char buf[8192];
    struct cell want[16], got[16];
    const char *keep = json_engine_name();
    for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
        if (rows[r]->usable && !rows[r]->usable()) {
            print_message("path %s: not available here, skipped\n", rows[r]->name);
            continue;
        }
        for (size_t it = 0; it < 5000; it++) {
            size_t n = gen_line(buf, 0);
            char *q = tu_exact(buf, n);
            if (!rows[r]->line(flat.lookup, (const u8 *)q, n, got))
                fail_msg("path %s declines \"%s\" without paths", rows[r]->name, buf);
            if (!rows[r]->paths(c.lookup, (const u8 *)q, n, got))
                fail_msg("path %s declines \"%s\" with paths", rows[r]->name, buf);
            json_engine_select("scalar");
            assert_int_equal(json_line(&c, q, n, want), LINE_VALID);
            json_engine_select(keep);
            for (size_t i = 0; i < c.count; i++)
                if (got[i].kind != want[i].kind || got[i].len != want[i].len ||
                    (got[i].kind != CELL_EMPTY && got[i].p != want[i].p))
                    fail_msg("path %s: column %s differs on \"%s\"", rows[r]->name,
                             c.names[i], buf);
            free(q);
        }
    }
    json_columns_free(&flat);
    json_columns_free(&c);
#else
    print_message("no fast paths in this build: skipped\n");
#endif
}

/* ---- the paths' UTF-8 checks ------------------------------------------------------- */

/* The reference for every path's text check, written apart from the engine's: decode each
 * sequence to its code point, then refuse overlongs, surrogates and code points past
 * U+10FFFF (Unicode 15, section 3.9); 1 when p[0..n) holds no byte below 0x20 and is
 * well-formed UTF-8. */
static int ref_text_ok(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned b = p[i], len, cp;
        if (b < 0x20)
            return 0;
        if (b < 0x80) {
            i++;
            continue;
        }
        if (b >= 0xC0 && b < 0xE0)
            len = 2, cp = b & 0x1F;
        else if (b >= 0xE0 && b < 0xF0)
            len = 3, cp = b & 0x0F;
        else if (b >= 0xF0 && b < 0xF8)
            len = 4, cp = b & 0x07;
        else
            return 0; /* a continuation without a lead, or no lead at all */
        if (n - i < len)
            return 0;
        for (unsigned k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        static const unsigned least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < least[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return 0;
        i += len;
    }
    return 1;
}

/* Every class of malformed UTF-8, with well-formed neighbours of each. */
static const struct {
    const char *bytes;
    int ok;
} utf8_cases[] = {
    {"\xC2\x80", 1},         {"\xDF\xBF", 1},         {"\xE0\xA0\x80", 1},
    {"\xED\x9F\xBF", 1},     {"\xEE\x80\x80", 1},     {"\xEF\xBF\xBF", 1},
    {"\xF0\x90\x80\x80", 1}, {"\xF4\x8F\xBF\xBF", 1}, {"\xF0\x9F\x98\x80", 1},
    {"\xE6\x97\xA5\xC3\xA9", 1},
    /* overlong */
    {"\xC0\x80", 0}, {"\xC1\xBF", 0}, {"\xE0\x80\x80", 0}, {"\xE0\x9F\xBF", 0},
    {"\xF0\x80\x80\x80", 0}, {"\xF0\x8F\xBF\xBF", 0},
    /* surrogates */
    {"\xED\xA0\x80", 0}, {"\xED\xBF\xBF", 0}, {"\xED\xB0\x80", 0},
    /* past U+10FFFF, and bytes that are never in UTF-8 */
    {"\xF4\x90\x80\x80", 0}, {"\xF4\xBF\xBF\xBF", 0}, {"\xF5\x80\x80\x80", 0},
    {"\xF7\xBF\xBF\xBF", 0}, {"\xF8\x88\x80\x80\x80", 0}, {"\xFC\x84\x80\x80\x80\x80", 0},
    {"\xFE", 0}, {"\xFF", 0},
    /* truncated: a lead, then ASCII, another lead or the end */
    {"\xC3", 0}, {"\xE3\x81", 0}, {"\xF0\x9F\x98", 0}, {"\xE3", 0}, {"\xF0\x9F", 0},
    {"\xC3z", 0}, {"\xE3\x81z", 0}, {"\xF0\x9F\x98z", 0}, {"\xE3\xE3\x81\x82", 0},
    {"\xF0\xC3\xA9", 0},
    /* a continuation without a lead, or one too many */
    {"\x80", 0}, {"\xBF", 0}, {"\xC3\xA9\x80", 0}, {"\xE6\x97\xA5\xA5", 0},
    {"\xF0\x9F\x98\x80\x80", 0},
    /* control bytes */
    {"\x01", 0}, {"\x1F", 0}, {"\t", 0}, {"\xC3\xA9\n", 0},
};

/* buf[0..o) as filler: ASCII, or mixed (ASCII, 2- and 3-byte characters, so that the
 * blocks around the case are not all ASCII), then the case, then tail bytes of filler. */
static size_t utf8_case_buf(unsigned char *buf, size_t o, int mixed, const char *bytes,
                            size_t tail)
{
    static const char *const chars[] = {"a", "\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x9A\x95"};
    size_t n = 0;
    for (unsigned k = 0; n < o; k++) {
        const char *c = mixed ? chars[k % 4] : "a";
        size_t l = strlen(c);
        if (o - n < l)
            c = "a", l = 1;
        memcpy(buf + n, c, l);
        n += l;
    }
    size_t bl = strlen(bytes);
    memcpy(buf + n, bytes, bl);
    n += bl;
    for (size_t k = 0; k < tail; k++) {
        if (mixed && k % 5 == 4) {
            buf[n++] = 0xC3;
            buf[n++] = 0xA9;
        } else {
            buf[n++] = 'b';
        }
    }
    return n;
}

/* Each path's text check gives the reference's verdict on every case at every offset
 * around the 32- and 64-byte blocks' edges (the case at a block's end, astride it, at the
 * next one's start), with the input ending right after it or later; and a line holding the
 * case in a string gets the same verdict and cells under every path. */
static void test_utf8_blocks(void **state)
{
    (void)state;
    unsigned char buf[512];
    struct json_columns c;
    static const char *const names[] = {"s", "n"};
    init_cols(&c, names, 2);
    size_t checked = 0;
    for (size_t k = 0; k < sizeof utf8_cases / sizeof *utf8_cases; k++) {
        for (size_t o = 0; o < 200; o++) {
            for (int mixed = 0; mixed < 2; mixed++) {
                static const size_t tails[] = {0, 1, 2, 3, 31, 64};
                for (size_t t = 0; t < sizeof tails / sizeof *tails; t++) {
                    size_t n = utf8_case_buf(buf, o, mixed, utf8_cases[k].bytes, tails[t]);
                    int want = ref_text_ok(buf, n);
                    if (want != utf8_cases[k].ok)
                        fail_msg("reference: case %zu says %d", k, want);
                    unsigned char *q = (unsigned char *)tu_exact(buf, n);
#ifdef JSON_HAVE_X86
                    static const struct json_path *const rows[] = {
                        &json_path_sse2, &json_path_avx2, &json_path_avx512};
                    for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
                        if (rows[r]->usable && !rows[r]->usable())
                            continue;
                        if (rows[r]->text_ok(q, n) != want)
                            fail_msg("path %s: case %zu at offset %zu (%s filler, tail %zu): "
                                     "%d, reference %d",
                                     rows[r]->name, k, o, mixed ? "mixed" : "ASCII", tails[t],
                                     !want, want);
                        checked++;
                    }
#endif
                    free(q);
                    /* The line: {"s":"CASE","n":1}, the case at o + 6. */
                    if (t % 3 == 0) {
                        char line[600];
                        memcpy(line, "{\"s\":\"", 6);
                        memcpy(line + 6, buf, n);
                        memcpy(line + 6 + n, "\",\"n\":1}", 8);
                        expect_paths_agree(&c, line, n + 14);
                        struct cell cells[2];
                        enum line_verdict v = judge(&c, line, n + 14, cells);
                        if (v != (want ? LINE_VALID : LINE_INVALID))
                            fail_msg("case %zu at offset %zu: the line is %s", k, o,
                                     verdict_name(v));
                    }
                }
            }
        }
    }
    print_message("UTF-8 cases: %zu checks of the paths' text checks\n", checked);
    json_columns_free(&c);
}

/* Random bytes, most of them in sequences' ranges: every path's check gives the
 * reference's verdict. */
static void test_utf8_random(void **state)
{
    (void)state;
    static const unsigned char bytes[] = {'a', ' ', 0x1F, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0,
                                          0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE,
                                          0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF};
    unsigned char buf[300];
    size_t seen[2] = {0};
    for (size_t it = 0; it < 300000; it++) {
        size_t n = next_rand() % 160;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = next_rand();
            /* mostly ASCII or well-formed, so that errors are rare and anywhere */
            if (r % 16 && i + 3 < n) {
                static const char *const good[] = {"\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x9A\x95",
                                                   "abcd", "\xED\x9F\xBF", "\xF4\x8F\xBF\xBF"};
                const char *g = good[(r >> 8) % 6];
                size_t l = strlen(g);
                memcpy(buf + i, g, l);
                i += l - 1;
            } else {
                buf[i] = bytes[(r >> 8) % sizeof bytes];
            }
        }
        int want = ref_text_ok(buf, n);
        seen[want]++;
        unsigned char *q = (unsigned char *)tu_exact(buf, n);
#ifdef JSON_HAVE_X86
        static const struct json_path *const rows[] = {&json_path_sse2, &json_path_avx2,
                                                       &json_path_avx512};
        for (size_t r = 0; r < sizeof rows / sizeof *rows; r++)
            if ((!rows[r]->usable || rows[r]->usable()) && rows[r]->text_ok(q, n) != want)
                fail_msg("path %s: %d, reference %d on %zu random bytes (iteration %zu)",
                         rows[r]->name, !want, want, n, it);
#endif
        free(q);
    }
    print_message("random bytes: %zu well-formed, %zu not\n", seen[1], seen[0]);
    if (seen[0] < 1000 || seen[1] < 1000)
        fail_msg("too few of one verdict to be a meaningful test");
}

/* Escapes, valid and not, as a string's contents (C-escaped here: "\\n" is JSON's \n). */
static const struct {
    const char *text;
    int ok;
} escape_cases[] = {
    {"\\\"", 1}, {"\\\\", 1}, {"\\/", 1}, {"\\b\\f\\n\\r\\t", 1}, {"\\u00e9", 1},
    {"\\u00E9x", 1}, {"\\uD83D\\uDE95", 1}, {"\\ud83d\\ude95\\ud83d\\ude95", 1},
    {"\\\\\\\"", 1}, {"\\\\\\\\", 1}, {"\\\\\\\\\\\\\\\\\\\"", 1}, {"\\u0022\\u005c", 1},
    {"\\uFFFF\\uDBFF\\uDFFF", 1}, {"x\\\\u0041", 1},
    /* not a one-letter escape, or not hex */
    {"\\x", 0}, {"\\U0041", 0}, {"\\u12G4", 0}, {"\\u12", 0}, {"\\ ", 0}, {"\\'", 0},
    {"\\0", 0}, {"\\\\\\x", 0}, {"\\u00\\n", 0},
    /* surrogates: a high one alone or before something else, a low one alone */
    {"\\uD83D", 0}, {"\\uD83Dx", 0}, {"\\uD83D\\n", 0}, {"\\uD83D\\u0041", 0},
    {"\\uDE95", 0}, {"\\uDE95\\uD83D", 0}, {"\\uD83D\\uD83D\\uDE95", 0},
    {"\\uD83D\\\\uDE95", 0}, {"\\uDBFF\\uE000", 0}, {"\\uD83Dx\\uDE95", 0},
    {"\\uD83D\\n\\uDE95", 0}, {"\\uD83D\\\\\\uDE95", 0},
    /* an odd run before the closing quote: the quote is escaped, the string runs on */
    {"\\", 0}, {"\\\\\\", 0},
};

/* Each escape case at every offset around the blocks' and mask words' edges, in a
 * selected string and in a key: every path gives the strict walk's verdict and cells, the
 * verdict is the case's, and each fast path accepts the valid lines itself (judging the
 * escapes from its masks) rather than leaving them to the strict walk. */
static void test_escape_blocks(void **state)
{
    (void)state;
    struct json_columns c;
    static const char *const names[] = {"s", "n"};
    init_cols(&c, names, 2);
    char line[600];
    struct cell want[2], got[2];
    const char *keep = json_engine_name();
    for (size_t k = 0; k < sizeof escape_cases / sizeof *escape_cases; k++) {
        size_t cl = strlen(escape_cases[k].text);
        for (size_t o = 0; o < 140; o++) {
            for (int in_key = 0; in_key < 2; in_key++) {
                size_t n = 0;
                n += (size_t)sprintf(line + n, in_key ? "{\"" : "{\"s\":\"");
                memset(line + n, 'a', o);
                n += o;
                memcpy(line + n, escape_cases[k].text, cl);
                n += cl;
                n += (size_t)sprintf(line + n, in_key ? "\":1,\"s\":\"x\\\\\",\"n\":2}"
                                                      : "\",\"n\":1}");
                expect_paths_agree(&c, line, n);
                json_engine_select("scalar");
                enum line_verdict v = judge(&c, line, n, want);
                json_engine_select(keep);
                if (v != (escape_cases[k].ok ? LINE_VALID : LINE_INVALID))
                    fail_msg("escape case %zu at offset %zu (%s): %s", k, o,
                             in_key ? "key" : "value", verdict_name(v));
#ifdef JSON_HAVE_X86
                static const struct json_path *const rows[] = {&json_path_sse2, &json_path_avx2,
                                                               &json_path_avx512};
                for (size_t r = 0; v == LINE_VALID && r < sizeof rows / sizeof *rows; r++) {
                    if (rows[r]->usable && !rows[r]->usable())
                        continue;
                    char *q = tu_exact(line, n);
                    json_engine_select("scalar");
                    json_line(&c, q, n, want);
                    json_engine_select(keep);
                    if (!rows[r]->line(c.lookup, (const u8 *)q, n, got))
                        fail_msg("path %s declines escape case %zu at offset %zu (%s)",
                                 rows[r]->name, k, o, in_key ? "key" : "value");
                    for (size_t i = 0; i < 2; i++)
                        if (got[i].kind != want[i].kind || got[i].len != want[i].len ||
                            (got[i].kind != CELL_EMPTY && got[i].p != want[i].p))
                            fail_msg("path %s: cell %zu differs on escape case %zu at %zu",
                                     rows[r]->name, i, k, o);
                    free(q);
                }
#endif
            }
        }
    }
    json_columns_free(&c);
}

/* json_engine_init with NDINGEST_SIMD set to p (NULL: unset); returns what it wrote on
 * stderr, captured in a temporary file. */
static char *engine_init_with(const char *p)
{
    if (p)
        setenv("NDINGEST_SIMD", p, 1);
    else
        unsetenv("NDINGEST_SIMD");
    FILE *f = tmpfile();
    assert_non_null(f);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(f), 2) >= 0);
    json_engine_init();
    dup2(saved, 2);
    close(saved);
    char *out = calloc(1, 512);
    assert_non_null(out);
    rewind(f);
    size_t got = fread(out, 1, 511, f);
    out[got] = '\0';
    fclose(f);
    return out;
}

/* The start-up choice: NDINGEST_SIMD forces an available path, silently; unset, empty or
 * naming a path this build or CPU lacks, the best path is used, and a name that is not
 * available is reported. */
static void test_engine_init(void **state)
{
    (void)state;
    const char *keep = json_engine_name();
    const char *saved_env = getenv("NDINGEST_SIMD");
    char *env_copy = saved_env ? strdup(saved_env) : NULL;
    assert_int_equal(json_engine_select("best"), 0);
    const char *best = json_engine_name();

    static const char *const paths[] = {"scalar", "sse2", "avx2", "avx512"};
    for (size_t e = 0; e < sizeof paths / sizeof *paths; e++) {
        if (json_engine_select(paths[e]) != 0)
            continue;
        json_engine_select(e ? "scalar" : "best"); /* so that init has to change it */
        char *err = engine_init_with(paths[e]);
        assert_string_equal(json_engine_name(), paths[e]);
        assert_string_equal(err, "");
        free(err);
    }
    static const char *const defaults[] = {NULL, ""};
    for (size_t d = 0; d < 2; d++) {
        json_engine_select("scalar");
        char *err = engine_init_with(defaults[d]);
        assert_string_equal(json_engine_name(), best);
        assert_string_equal(err, "");
        free(err);
    }
    json_engine_select("scalar");
    char *err = engine_init_with("neon");
    assert_string_equal(json_engine_name(), best);
    if (!strstr(err, "NDINGEST_SIMD=neon is not available here"))
        fail_msg("no warning on stderr, got \"%s\"", err);
    free(err);

    if (env_copy)
        setenv("NDINGEST_SIMD", env_copy, 1);
    else
        unsetenv("NDINGEST_SIMD");
    free(env_copy);
    json_engine_select(keep);
}

int main(void)
{
    static const char *const a[] = {"a"};
    init_cols(&cols1, a, 1);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus_size),   cmocka_unit_test(test_cells_taxi),
        cmocka_unit_test(test_cells_kinds),   cmocka_unit_test(test_cells_duplicates),
        cmocka_unit_test(test_cells_key_matching), cmocka_unit_test(test_columns_init),
        cmocka_unit_test(test_lookup_by_length),
        cmocka_unit_test(test_depth),         cmocka_unit_test(test_long_values),
        cmocka_unit_test(test_blank),         cmocka_unit_test(test_unescape),
        cmocka_unit_test(test_unescape_long_runs),
        cmocka_unit_test(test_mutations),     cmocka_unit_test(test_paths_agree),
        cmocka_unit_test(test_engine_init),
        cmocka_unit_test(test_paths_cells),   cmocka_unit_test(test_paths_missing),
        cmocka_unit_test(test_paths_init),    cmocka_unit_test(test_follow),
        cmocka_unit_test(test_paths_paths_agree), cmocka_unit_test(test_paths_flat_as_names), cmocka_unit_test(test_paths_random),
        cmocka_unit_test(test_paths_fast),    cmocka_unit_test(test_utf8_blocks),
        cmocka_unit_test(test_utf8_random),   cmocka_unit_test(test_escape_blocks),
    };
    int failed = 0;
    size_t k;
    char **names = corpus_names(&k);
    struct CMUnitTest *corpus = calloc(k ? k : 1, sizeof *corpus);
    for (size_t i = 0; i < k; i++) {
        corpus[i].name = names[i];
        corpus[i].test_func = test_corpus_case;
        corpus[i].initial_state = names[i];
    }
    /* Everything, under every dispatch path this build and CPU have. */
    static const char *const paths[] = {"scalar", "sse2", "avx2", "avx512"};
    for (size_t e = 0; e < sizeof paths / sizeof *paths; e++) {
        if (json_engine_select(paths[e]) != 0) {
            print_message("path %s: not available here, skipped\n", paths[e]);
            continue;
        }
        print_message("path %s\n", json_engine_name());
        failed += cmocka_run_group_tests_name("json", tests, NULL, NULL);
        if (k)
            failed += _cmocka_run_group_tests("json_corpus", corpus, k, NULL, NULL);
    }
    json_engine_select("best");
    for (size_t i = 0; i < k; i++)
        free(names[i]);
    free(names);
    free(corpus);
    json_columns_free(&cols1);
    return failed ? 1 : 0;
}
