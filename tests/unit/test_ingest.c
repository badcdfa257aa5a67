/* test_ingest.c -- the whole pipeline on one body: the output and the counts do not depend
 * on where the network cut the body, compressed or not, nor on the batch size; untyped, and
 * typed by a dataset with its quarantine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "ingest.h"

struct result {
    char *rows, *invalid;
    size_t rows_len, invalid_len;
    struct ingest_stats stats;
    enum ingest_status status;
};

static char *drain(int fd, size_t *len)
{
    off_t n = lseek(fd, 0, SEEK_END);
    char *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(pread(fd, p, (size_t)n, 0), n);
    p[n] = '\0';
    *len = (size_t)n;
    return p;
}

static void result_free(struct result *r)
{
    free(r->rows);
    free(r->invalid);
}

/* The quarantine bounds run_with gives the pipeline, and the bytes it puts in the quarantine
 * file before the body (the day's file as other bodies left it): zero but in the bound
 * tests. */
static struct {
    uint64_t body, day;
    size_t before;
} bounds;

/* Runs body through a fresh pipeline over cols (typed by ds when not NULL), cut at cuts[],
 * each piece in an exact-size buffer. */
static struct result run_with(const struct json_columns *cols, const struct datasource *ds,
                              const char *body, size_t n, const size_t *cuts, size_t ncuts,
                              enum content_encoding enc, size_t flush_bytes, size_t max_line)
{
    int rows_fd = memfd_create("rows", 0), bad_fd = memfd_create("invalid", 0);
    assert_true(rows_fd >= 0 && bad_fd >= 0);
    struct sink *rows = sink_open_fd(rows_fd), *bad = sink_open_fd(bad_fd);
    const struct ingest_config cfg = {
        .columns = cols, .schema = ds, .max_line = max_line, .crlf = 0,
        .flush_bytes = flush_bytes, .rows = rows, .quarantine = bad, .log_prefix = NULL,
        .max_quarantine = bounds.body, .max_quarantine_day = bounds.day,
    };
    for (size_t i = 0; i < bounds.before; i++)
        assert_int_equal(write(bad_fd, "x", 1), 1);
    struct ingest g;
    ingest_init(&g, &cfg);
    struct result r = {0};
    assert_int_equal(ingest_begin(&g, enc), INGEST_OK);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        char *piece = malloc(to - at + 1);
        memcpy(piece, body + at, to - at);
        ingest_feed(&g, piece, to - at);
        free(piece);
        at = to;
    }
    r.status = ingest_end(&g);
    r.stats = g.stats;
    ingest_free(&g);
    r.rows = drain(rows_fd, &r.rows_len);
    r.invalid = drain(bad_fd, &r.invalid_len);
    assert_true(r.invalid_len >= bounds.before);
    assert_true(bounds.before == 0 || r.invalid[bounds.before - 1] == 'x');
    memmove(r.invalid, r.invalid + bounds.before, r.invalid_len - bounds.before + 1);
    r.invalid_len -= bounds.before;
    sink_close(rows);
    sink_close(bad);
    close(rows_fd);
    close(bad_fd);
    return r;
}

/* run_with for untyped columns named in a comma-separated list. */
static struct result run(const char *columns_csv, const char *body, size_t n, const size_t *cuts,
                         size_t ncuts, enum content_encoding enc, size_t flush_bytes,
                         size_t max_line)
{
    char list[256];
    const char *names[16];
    size_t count = 0;
    snprintf(list, sizeof list, "%s", columns_csv);
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
        names[count++] = t;
    struct json_columns cols;
    char err[128];
    assert_int_equal(json_columns_init(&cols, names, count, err, sizeof err), 0);
    struct result r = run_with(&cols, NULL, body, n, cuts, ncuts, enc, flush_bytes, max_line);
    json_columns_free(&cols);
    return r;
}

static void assert_same(const struct result *a, const struct result *b)
{
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->stats.bytes, b->stats.bytes);
    assert_int_equal(a->stats.valid, b->stats.valid);
    assert_int_equal(a->stats.invalid, b->stats.invalid);
    assert_memory_equal(a->stats.refused, b->stats.refused, sizeof a->stats.refused);
    assert_int_equal(a->rows_len, b->rows_len);
    assert_memory_equal(a->rows, b->rows, a->rows_len);
    assert_int_equal(a->invalid_len, b->invalid_len);
    assert_memory_equal(a->invalid, b->invalid, a->invalid_len);
}

/* Every class of line the contract names, and a final line without '\n'. */
static const char body[] =
    "{\"a\":1,\"b\":\"x,y\",\"c\":null}\n"
    "\n"
    "   \r\n"
    "{\"b\":\"say \\\"hi\\\"\",\"a\":-0.5e3}\r\n"
    "not json\n"
    "{\"a\":[1, {\"z\":2}],\"b\":\"\\u00e9\\n\",\"c\":true,\"a\":\"last\"}\n"
    "{\"a\":1,}\n"
    "{\"c\":\"this line is longer than the max_line of the test, so it is skipped entirely\"}\n"
    "{\"a\":\"caf\xc3\xa9\"}\n"
    "{\"a\":\"\xc3\"}\n"
    "{\"a\":2}";

static const char expected_rows[] =
    "1,\"x,y\",\n"
    "-0.5e3,\"say \"\"hi\"\"\",\n"
    "last,\"\xc3\xa9\n\",true\n"
    "caf\xc3\xa9,,\n"
    "2,,\n";

static const char expected_invalid[] =
    "not json\n"
    "{\"a\":1,}\n"
    "{\"a\":\"\xc3\"}\n";

#define MAX_LINE 80

static void test_contract_on_one_body(void **state)
{
    (void)state;
    struct result r = run("a,b,c", body, sizeof body - 1, NULL, 0, ENCODING_IDENTITY, 1 << 20, MAX_LINE);
    assert_int_equal(r.status, INGEST_OK);
    assert_string_equal(r.rows, expected_rows);
    assert_string_equal(r.invalid, expected_invalid);
    assert_int_equal(r.stats.bytes, sizeof body - 1);
    assert_int_equal(r.stats.valid, 5);
    assert_int_equal(r.stats.invalid, 4); /* three malformed, one over max_line */
    result_free(&r);
}

static void test_every_split_position(void **state)
{
    (void)state;
    size_t n = sizeof body - 1;
    struct result whole = run("a,b,c", body, n, NULL, 0, ENCODING_IDENTITY, 1 << 20, MAX_LINE);
    for (size_t k = 0; k <= n; k++) {
        struct result r = run("a,b,c", body, n, &k, 1, ENCODING_IDENTITY, 1 << 20, MAX_LINE);
        assert_same(&whole, &r);
        result_free(&r);
    }
    /* Every pair of cuts on a prefix long enough to hold each kind of line. */
    for (size_t k = 0; k < 200; k += 3)
        for (size_t j = k; j < n; j += 7) {
            size_t cuts[2] = {k, j};
            struct result r = run("a,b,c", body, n, cuts, 2, ENCODING_IDENTITY, 1 << 20, MAX_LINE);
            assert_same(&whole, &r);
            result_free(&r);
        }
    result_free(&whole);
}

/* Small batches write rows many times during the body; the file must read the same. */
static void test_batch_size_does_not_matter(void **state)
{
    (void)state;
    size_t n = sizeof body - 1;
    struct result whole = run("a,b,c", body, n, NULL, 0, ENCODING_IDENTITY, 1 << 20, MAX_LINE);
    for (size_t flush = 1; flush < 64; flush += 7) {
        struct result r = run("a,b,c", body, n, NULL, 0, ENCODING_IDENTITY, flush, MAX_LINE);
        assert_same(&whole, &r);
        result_free(&r);
    }
    result_free(&whole);
}

static size_t gzip(const char *in, size_t n, char *out, size_t cap, int window_bits)
{
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t len = z.total_out;
    deflateEnd(&z);
    return len;
}

static void test_gzip_every_split_position(void **state)
{
    (void)state;
    size_t n = sizeof body - 1;
    struct result plain = run("a,b,c", body, n, NULL, 0, ENCODING_IDENTITY, 1 << 20, MAX_LINE);
    char z[4096];
    const int bits[] = {15 + 16, 15};
    const enum content_encoding encs[] = {ENCODING_GZIP, ENCODING_DEFLATE};
    for (int e = 0; e < 2; e++) {
        size_t zn = gzip(body, n, z, sizeof z, bits[e]);
        for (size_t k = 0; k <= zn; k++) {
            struct result r = run("a,b,c", z, zn, &k, 1, encs[e], 1 << 20, MAX_LINE);
            assert_int_equal(r.status, INGEST_OK);
            assert_int_equal(r.stats.bytes, zn);
            /* bytes counts what was received; everything else matches the plain body */
            r.stats.bytes = plain.stats.bytes;
            assert_same(&plain, &r);
            result_free(&r);
        }
    }
    result_free(&plain);
}

static void test_corrupt_gzip_writes_nothing(void **state)
{
    (void)state;
    size_t n = sizeof body - 1;
    char z[4096];
    size_t zn = gzip(body, n, z, sizeof z, 15 + 16);
    struct result r = run("a,b,c", z, zn - 5, NULL, 0, ENCODING_GZIP, 1 << 20, MAX_LINE);
    assert_int_equal(r.status, INGEST_EDECODE);
    assert_int_equal(r.rows_len, 0);
    result_free(&r);
    z[zn / 2] ^= 0x55;
    r = run("a,b,c", z, zn, NULL, 0, ENCODING_GZIP, 1 << 20, MAX_LINE);
    assert_int_equal(r.status, INGEST_EDECODE);
    assert_int_equal(r.rows_len, 0);
    result_free(&r);
}

/* A large random body of valid and invalid lines, in random pieces. */
static void test_random_pieces(void **state)
{
    (void)state;
    size_t cap = 1 << 20, n = 0;
    char *big = malloc(cap);
    unsigned seed = 7;
    for (int i = 0; n + 200 < cap; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned v = seed >> 16;
        if (v % 13 == 0)
            n += (size_t)snprintf(big + n, cap - n, "{\"a\":%d,\"b\":broken}\n", i);
        else if (v % 17 == 0)
            n += (size_t)snprintf(big + n, cap - n, "\r\n");
        else
            n += (size_t)snprintf(big + n, cap - n, "{\"a\":%d,\"b\":\"v%u,\\\"q\\\"\",\"c\":[%u]}\n", i, v,
                                  v % 1000);
    }
    struct result whole = run("a,b,c", big, n, NULL, 0, ENCODING_IDENTITY, 4096, MAX_LINE);
    assert_true(whole.stats.valid > 1000 && whole.stats.invalid > 100);
    for (int round = 0; round < 30; round++) {
        size_t cuts[512], nc = 0, at = 0;
        while (nc < 512) {
            seed = seed * 1103515245u + 12345u;
            at += 1 + (seed >> 8) % 8192;
            if (at >= n)
                break;
            cuts[nc++] = at;
        }
        struct result r = run("a,b,c", big, n, cuts, nc, ENCODING_IDENTITY, 4096, MAX_LINE);
        assert_same(&whole, &r);
        result_free(&r);
    }
    result_free(&whole);
    free(big);
}

/* ingest_finish judges the last line but writes nothing: the rows and quarantined lines are
 * left for the caller (the server writes many requests' with one write), and ingest_written
 * then counts them, or turns a failed write into INGEST_EWRITE. */
static void test_finish_leaves_rows_pending(void **state)
{
    (void)state;
    const char *names[] = {"a", "b", "c"};
    struct json_columns cols;
    char err[128];
    assert_int_equal(json_columns_init(&cols, names, 3, err, sizeof err), 0);
    int rows_fd = memfd_create("rows", 0), bad_fd = memfd_create("invalid", 0);
    assert_true(rows_fd >= 0 && bad_fd >= 0);
    struct sink *rows = sink_open_fd(rows_fd), *bad = sink_open_fd(bad_fd);
    const struct ingest_config cfg = {
        .columns = &cols, .max_line = MAX_LINE, .flush_bytes = 1 << 20, .rows = rows, .quarantine = bad,
    };
    struct ingest g;
    ingest_init(&g, &cfg);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(ingest_begin(&g, ENCODING_IDENTITY), INGEST_OK);
        assert_int_equal(ingest_feed(&g, body, sizeof body - 1), INGEST_OK);
        assert_int_equal(ingest_finish(&g), INGEST_OK);
        assert_int_equal(lseek(rows_fd, 0, SEEK_END), 0); /* nothing written yet */
        assert_int_equal(lseek(bad_fd, 0, SEEK_END), 0);
        assert_int_equal(g.rows.len, sizeof expected_rows - 1);
        assert_memory_equal(g.rows.p, expected_rows, g.rows.len);
        assert_int_equal(g.invalid.len, sizeof expected_invalid - 1);
        assert_memory_equal(g.invalid.p, expected_invalid, g.invalid.len);
        assert_int_equal(g.stats.written, 0);
        if (round == 0) {
            assert_int_equal(ingest_written(&g, 1, NULL), INGEST_OK);
            assert_int_equal(g.stats.written, sizeof expected_rows - 1 + sizeof expected_invalid - 1);
        } else {
            assert_int_equal(ingest_written(&g, 0, "disk on fire"), INGEST_EWRITE);
            assert_string_equal(g.error, "disk on fire");
            assert_int_equal(g.stats.written, 0);
        }
        assert_int_equal(g.rows.len, 0);
        assert_int_equal(g.invalid.len, 0);
    }
    ingest_free(&g);
    sink_close(rows);
    sink_close(bad);
    close(rows_fd);
    close(bad_fd);
    json_columns_free(&cols);
}

static void test_stats_json(void **state)
{
    (void)state;
    const struct ingest_stats s = {.bytes = 584480, .valid = 1599, .invalid = 1};
    char out[256];
    int n = ingest_stats_json(&s, out, sizeof out);
    assert_string_equal(out, "{\"result\": {\"status\": \"ok\", \"stats\": {\"bytes\": 584480, \"records\": "
                             "{\"valid\": 1599, \"invalid\": 1, \"total\": 1600}}}}\n");
    assert_int_equal(n, strlen(out));
}

/* Zeros, 20-digit counts, and a buffer too small: snprintf's contract (cut to fit and
 * terminated, the full length returned; nothing written for size 0). */
static void test_stats_json_edges(void **state)
{
    (void)state;
    const struct ingest_stats zero = {0};
    char out[256], want[256];
    int n = ingest_stats_json(&zero, out, sizeof out);
    assert_string_equal(out, "{\"result\": {\"status\": \"ok\", \"stats\": {\"bytes\": 0, \"records\": "
                             "{\"valid\": 0, \"invalid\": 0, \"total\": 0}}}}\n");
    assert_int_equal(n, strlen(out));

    const struct ingest_stats big = {.bytes = UINT64_MAX, .valid = 10000000000000000000ULL, .invalid = 9};
    n = ingest_stats_json(&big, out, sizeof out);
    snprintf(want, sizeof want, "{\"result\": {\"status\": \"ok\", \"stats\": {\"bytes\": %llu, \"records\": "
             "{\"valid\": %llu, \"invalid\": 9, \"total\": %llu}}}}\n", (unsigned long long)UINT64_MAX,
             10000000000000000000ULL, 10000000000000000009ULL);
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));

    char small[12];
    memset(small, 'x', sizeof small);
    n = ingest_stats_json(&big, small, 10);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(small, want, 9);
    assert_int_equal(small[9], '\0');
    assert_int_equal(small[10], 'x');
    n = ingest_stats_json(&big, small, 0);
    assert_int_equal(n, strlen(want));
    assert_int_equal(small[0], want[0]);
}

/* convert's line after a failure: says so, with the message made safe for JSON. */
static void test_result_json_error(void **state)
{
    (void)state;
    const struct ingest_stats s = {.bytes = 10, .valid = 2, .invalid = 1};
    char out[1024];
    int n = ingest_result_json(&s, "a \"b\"\\c:\n\x01\xc3\xa9", out, sizeof out);
    assert_string_equal(out, "{\"result\": {\"status\": \"error\", \"error\": \"a \\\"b\\\"\\\\c:????\", "
                             "\"stats\": {\"bytes\": 10, \"records\": "
                             "{\"valid\": 2, \"invalid\": 1, \"total\": 3}}}}\n");
    assert_int_equal(n, strlen(out));

    char long_msg[2000];
    memset(long_msg, '"', sizeof long_msg - 1);
    long_msg[sizeof long_msg - 1] = '\0';
    n = ingest_result_json(&s, long_msg, out, sizeof out);
    assert_int_equal(n, strlen(out));
    const char *msg = strstr(out, "\"error\": \"") + 10;
    const char *end = strstr(msg, "\", \"stats\"");
    assert_non_null(end);
    assert_true(end - msg <= 510 && (end - msg) % 2 == 0); /* cut between escapes, not inside */

    n = ingest_result_json(&s, NULL, out, sizeof out);
    char ok[256];
    assert_int_equal(n, ingest_stats_json(&s, ok, sizeof ok));
    assert_string_equal(out, ok);
}


/* MARK: - Typed datasets */

static const char typed_definition[] =
    "SCHEMA >\n"
    "    `id` UInt8 `json:$.id`,\n"
    "    `at` DateTime `json:$.at`,\n"
    "    `total` Decimal(10, 2) `json:$.total`,\n"
    "    `zone` LowCardinality(String) `json:$.pickup.zone.name` DEFAULT 'unknown',\n"
    "    `ids` Array(Int32) `json:$.items[:].id`,\n"
    "    `note` Nullable(String) `json:$.note`\n";

/* Every outcome a typed line can have: a row, a DEFAULT and a \N, a blank line, invalid
 * JSON (a cut line, invalid UTF-8), several columns refused at once (their reasons in the
 * definition's order), an element of [:] refused, a line over max_line, no final '\n'. */
static const char typed_body[] =
    "{\"id\":1,\"at\":\"2024-02-29T23:00:00+01:00\",\"total\":12.50,"
    "\"pickup\":{\"zone\":{\"name\":\"JFK\"}},\"items\":[{\"id\":1},{\"id\":-2}],\"note\":\"a,\\\"b\\\"\"}\n"
    "\n"
    "{\"id\":2,\"at\":\"2024-03-01 00:00:00\",\"total\":0,\"items\":[]}\n"
    "{\"id\":3,\n"
    "{\"id\":256,\"at\":\"2023-02-29 00:00:00\",\"total\":1.234,\"items\":[{\"id\":1},{\"id\":\"x\"}]}\n"
    "{\"note\":\"\xff\"}\n"
    "{\"id\":4,\"at\":1709251199,\"total\":-1e-2,\"items\":[{}],\"note\":\"this line is longer than max_line, so it is only counted, never stored anywhere\"}\n"
    "{\"at\":\"2024-01-01\",\"total\":1,\"items\":[{\"id\":2147483647}],\"note\":null,\"pickup\":{\"zone\":{\"name\":\"\\u00e9\"}}}";

static const char typed_rows[] =
    "1,2024-02-29 22:00:00,12.5,\"JFK\",\"[1,-2]\",\"a,\"\"b\"\"\"\n"
    "2,2024-03-01 00:00:00,0,\"unknown\",\"[]\",\\N\n";

/* The insertion dates are replaced by D (normalise_dates). */
static const char typed_quarantine[] =
    "D,\"[]\",\"['invalid JSON at byte 8']\",\"{\"\"id\"\":3,\"\n"
    "D,\"['id','at','total','ids']\",\"['out of range for UInt8','not a valid date or time',"
    "'scale exceeds 2','expected an integer']\",\"{\"\"id\"\":256,\"\"at\"\":\"\"2023-02-29 00:00:00\"\","
    "\"\"total\"\":1.234,\"\"items\"\":[{\"\"id\"\":1},{\"\"id\"\":\"\"x\"\"}]}\"\n"
    "D,\"[]\",\"['invalid JSON at byte 9']\",\"{\"\"note\"\":\"\"\xff\"\"}\"\n"
    "D,\"['id']\",\"['null for a non-Nullable column']\","
    "\"{\"\"at\"\":\"\"2024-01-01\"\",\"\"total\"\":1,\"\"items\"\":[{\"\"id\"\":2147483647}],"
    "\"\"note\"\":null,\"\"pickup\"\":{\"\"zone\"\":{\"\"name\"\":\"\"\\u00e9\"\"}}}\"\n";

#define TYPED_MAX_LINE 136

static struct datasource *typed_dataset(void)
{
    char err[256];
    struct datasource *ds = datasource_parse("trips.datasource", typed_definition,
                                             sizeof typed_definition - 1, err, sizeof err);
    if (!ds)
        fail_msg("%s", err);
    return ds;
}

/* Every quarantine row starts with its insertion date, YYYY-MM-DD hh:mm:ss: each is checked
 * to be within the run and replaced by "D", so that runs compare by their bytes. */
static void normalise_dates(struct result *r, time_t from, time_t to)
{
    char lo[TYPE_DATETIME_LEN + 1] = {0}, hi[TYPE_DATETIME_LEN + 1] = {0};
    type_datetime_text(from, lo);
    type_datetime_text(to, hi);
    size_t w = 0;
    for (size_t i = 0; i < r->invalid_len;) {
        assert_true(r->invalid_len - i > TYPE_DATETIME_LEN);
        char date[TYPE_DATETIME_LEN + 1] = {0};
        memcpy(date, r->invalid + i, TYPE_DATETIME_LEN);
        assert_true(strcmp(date, lo) >= 0 && strcmp(date, hi) <= 0);
        r->invalid[w++] = 'D';
        i += TYPE_DATETIME_LEN;
        const char *nl = memchr(r->invalid + i, '\n', r->invalid_len - i);
        assert_non_null(nl);
        size_t len = (size_t)(nl + 1 - (r->invalid + i));
        memmove(r->invalid + w, r->invalid + i, len);
        w += len;
        i += len;
    }
    r->invalid_len = w;
    r->invalid[w] = '\0';
}

static struct result run_typed(const struct datasource *ds, const char *p, size_t n,
                               const size_t *cuts, size_t ncuts, size_t flush_bytes)
{
    time_t from = time(NULL);
    struct result r = run_with(&ds->json, ds, p, n, cuts, ncuts, ENCODING_IDENTITY, flush_bytes,
                               TYPED_MAX_LINE);
    normalise_dates(&r, from, time(NULL));
    return r;
}

static void test_typed_contract(void **state)
{
    (void)state;
    struct datasource *ds = typed_dataset();
    struct result r = run_typed(ds, typed_body, sizeof typed_body - 1, NULL, 0, 1 << 20);
    assert_int_equal(r.status, INGEST_OK);
    assert_string_equal(r.rows, typed_rows);
    assert_string_equal(r.invalid, typed_quarantine);
    assert_int_equal(r.stats.valid, 2);
    assert_int_equal(r.stats.invalid, 5);
    assert_int_equal(r.stats.refused[QUARANTINE_JSON], 2);
    assert_int_equal(r.stats.refused[QUARANTINE_RANGE], 1); /* the first refused column's */
    assert_int_equal(r.stats.refused[QUARANTINE_NULL], 1);
    assert_int_equal(r.stats.refused[QUARANTINE_OVERSIZE], 1);
    result_free(&r);
    datasource_free(ds);
}

/* The typed rows and the quarantine do not depend on where the body was cut, nor on how
 * often pending rows are written. */
static void test_typed_every_split_position(void **state)
{
    (void)state;
    struct datasource *ds = typed_dataset();
    size_t n = sizeof typed_body - 1;
    struct result whole = run_typed(ds, typed_body, n, NULL, 0, 1 << 20);
    for (size_t k = 0; k <= n; k++) {
        struct result r = run_typed(ds, typed_body, n, &k, 1, 1 << 20);
        assert_same(&whole, &r);
        result_free(&r);
    }
    for (size_t k = 0; k < n; k += 5)
        for (size_t j = k; j < n; j += 11) {
            size_t cuts[2] = {k, j};
            struct result r = run_typed(ds, typed_body, n, cuts, 2, 64);
            assert_same(&whole, &r);
            result_free(&r);
        }
    result_free(&whole);
    datasource_free(ds);
}

/* Appends the text t to the string at dst (of room cap), as many times as asked. */
static void append(char *dst, size_t cap, const char *t)
{
    size_t n = strlen(dst);
    assert_true(n + strlen(t) < cap);
    memcpy(dst + n, t, strlen(t) + 1);
}

/* typed_row writes short cells at a cursor into room made for the rest of the row, and
 * makes it again after each cell datasource_cell writes: cells far past that room (a long
 * string with quotes to double, a long array), a refusal among short cells, an empty
 * DEFAULT cell last, and a flush after every row must all read as datasource_cell writes
 * them. */
static void test_typed_row_room(void **state)
{
    (void)state;
    static const char definition[] = "SCHEMA >\n"
                                     "    `n` UInt8 `json:$.n`,\n"
                                     "    `s` String `json:$.s`,\n"
                                     "    `at` DateTime `json:$.at`,\n"
                                     "    `z` LowCardinality(String) `json:$.z` DEFAULT 'unknown',\n"
                                     "    `xs` Array(String) `json:$.xs[:]`,\n"
                                     "    `d` Decimal(10, 2) `json:$.d`,\n"
                                     "    `e` DateTime `json:$.e` DEFAULT now()\n";
    char err[256];
    struct datasource *ds = datasource_parse("room.datasource", definition, sizeof definition - 1,
                                             err, sizeof err);
    if (!ds)
        fail_msg("%s", err);
    static char body[16384], rows[16384];
    body[0] = rows[0] = 0;
    append(body, sizeof body, "{\"n\":0,\"s\":\"short\",\"at\":\"2024-02-29 23:59:59\",\"xs\":[],"
                              "\"d\":1.50}\n{\"n\":1,\"s\":\"");
    append(rows, sizeof rows, "0,\"short\",2024-02-29 23:59:59,\"unknown\",\"[]\",1.5,\n1,\"");
    for (int i = 0; i < 50; i++) { /* 400 bytes, a quote in each 8 */
        append(body, sizeof body, "abcdef\\\"g");
        append(rows, sizeof rows, "abcdef\"\"g");
    }
    append(body, sizeof body, "\",\"at\":\"2024-02-29T00:00:00\",\"z\":\"q\\\"z\",\"xs\":[\"");
    append(rows, sizeof rows, "\",2024-02-29 00:00:00,\"q\"\"z\",\"['");
    for (int i = 0; i < 50; i++) { /* 400 bytes, a ' in each 8, escaped in the array */
        append(body, sizeof body, "abcdef'g");
        append(rows, sizeof rows, "abcdef\\'g");
    }
    append(body, sizeof body, "\"],\"d\":-0.00}\n"
                              "{\"n\":300,\"s\":1,\"at\":\"2024-02-30 00:00:00\",\"d\":0.001}\n"
                              "{\"n\":7,\"s\":true,\"at\":\"2024-01-01 00:00:00\",\"d\":7}\n");
    append(rows, sizeof rows, "']\",0,\n7,\"true\",2024-01-01 00:00:00,\"unknown\",\"[]\",7,\n");
    /* A string that leaves the pending rows' first block (4096 bytes) all but full when
     * the rows are flushed after each row: the row's other cells need the room made again. */
    append(body, sizeof body, "{\"n\":8,\"at\":\"2024-01-01 00:00:00\",\"d\":8,\"s\":\"");
    append(rows, sizeof rows, "8,\"");
    char fill[4083];
    memset(fill, 'a', sizeof fill - 1);
    fill[sizeof fill - 1] = 0;
    append(body, sizeof body, fill);
    append(rows, sizeof rows, fill);
    append(body, sizeof body, "\"}\n");
    append(rows, sizeof rows, "\",2024-01-01 00:00:00,\"unknown\",\"[]\",8,\n");
    for (size_t flush_bytes = 1; flush_bytes <= 1 << 20; flush_bytes <<= 20) {
        struct result r = run_with(&ds->json, ds, body, strlen(body), NULL, 0, ENCODING_IDENTITY,
                                   flush_bytes, sizeof body);
        assert_int_equal(r.status, INGEST_OK);
        assert_int_equal(r.stats.valid, 4);
        assert_int_equal(r.stats.invalid, 1);
        assert_string_equal(r.rows, rows);
        assert_non_null(strstr(r.invalid, "'out of range for UInt8','not a valid date or time',"
                                          "'scale exceeds 2'"));
        result_free(&r);
    }
    datasource_free(ds);
}

/* Without a quarantine sink the refused lines are counted by class all the same. */
static void test_typed_without_quarantine(void **state)
{
    (void)state;
    struct datasource *ds = typed_dataset();
    int rows_fd = memfd_create("rows", 0);
    struct sink *rows = sink_open_fd(rows_fd);
    const struct ingest_config cfg = {
        .columns = &ds->json, .schema = ds, .max_line = TYPED_MAX_LINE, .flush_bytes = 1 << 20,
        .rows = rows,
    };
    struct ingest g;
    ingest_init(&g, &cfg);
    assert_int_equal(ingest_begin(&g, ENCODING_IDENTITY), INGEST_OK);
    assert_int_equal(ingest_feed(&g, typed_body, sizeof typed_body - 1), INGEST_OK);
    assert_int_equal(ingest_end(&g), INGEST_OK);
    assert_int_equal(g.stats.valid, 2);
    assert_int_equal(g.stats.invalid, 5);
    assert_int_equal(g.stats.refused[QUARANTINE_JSON], 2);
    size_t len;
    char *out = drain(rows_fd, &len);
    assert_string_equal(out, typed_rows);
    free(out);
    ingest_free(&g);
    sink_close(rows);
    close(rows_fd);
    datasource_free(ds);
}

/* MARK: - Quarantine bounds */

/* The sum of the classes is invalid, whatever was kept. */
static uint64_t refused_sum(const struct ingest_stats *s)
{
    uint64_t t = 0;
    for (int k = 0; k < QUARANTINE_REASONS; k++)
        t += s->refused[k];
    return t;
}

/* The first k lines of text (each ending in '\n'), or all of it when it has fewer. */
static size_t first_lines(const char *text, size_t k)
{
    size_t at = 0;
    for (; k && text[at]; k--)
        at = (size_t)(strchr(text + at, '\n') - text) + 1;
    return at;
}

/* Issue #15: --max-quarantine bounds what one body keeps, --max-quarantine-day what the day's
 * file holds (its size when the body's first refused line comes, plus the body's own). The
 * rows that fit are kept whole and in order, those after are counted as "full", the rows
 * (valid lines) are all written, and the counts are the same as without bounds. Typed rows
 * carry a date of 19 bytes that normalise_dates turns into "D": a row of the file is 18
 * bytes longer than the expected text's. Every flush size (1: a write per row) gives the
 * same. */
static void test_quarantine_bounds_typed(void **state)
{
    (void)state;
    struct datasource *ds = typed_dataset();
    const size_t date = TYPE_DATETIME_LEN - 1;
    size_t row[5]; /* bytes of the file's first k rows */
    for (size_t k = 0; k <= 4; k++)
        row[k] = first_lines(typed_quarantine, k) + k * date;
    static const size_t flushes[] = {1, 100, 1 << 20};
    static const struct {
        uint64_t body, day;
        size_t before;
        size_t kept; /* rows */
    } cases[] = {
        {0, 0, 0, 4},
        {1, 0, 0, 0},
        {0, 1, 0, 0},
        {0, 0, 5000, 4},
        {0, 100, 100, 0},  /* the day's file is full before the body */
        {0, 100, 5000, 0}, /* ...and past it */
    };
    for (size_t f = 0; f < sizeof flushes / sizeof *flushes; f++) {
        for (size_t c = 0; c < sizeof cases / sizeof *cases + 8; c++) {
            if (c < sizeof cases / sizeof *cases) {
                bounds.body = cases[c].body;
                bounds.day = cases[c].day;
                bounds.before = cases[c].before;
            } else { /* exactly k rows fit, and one byte less: k - 1 */
                size_t k = (c - sizeof cases / sizeof *cases) / 2 + 1, less = c % 2;
                int by_day = k % 2;
                bounds.before = by_day ? 777 : 0;
                bounds.body = by_day ? 0 : row[k] - less;
                bounds.day = by_day ? 777 + row[k] - less : 0;
            }
            size_t kept = c < sizeof cases / sizeof *cases ? cases[c].kept
                          : (c - sizeof cases / sizeof *cases) / 2 + 1 - c % 2;
            print_message("flush %zu case %zu: body %llu day %llu before %zu: %zu kept\n",
                          flushes[f], c, (unsigned long long)bounds.body,
                          (unsigned long long)bounds.day, bounds.before, kept);
            struct result r = run_typed(ds, typed_body, sizeof typed_body - 1, NULL, 0, flushes[f]);
            assert_int_equal(r.status, INGEST_OK);
            assert_string_equal(r.rows, typed_rows);
            size_t want = first_lines(typed_quarantine, kept);
            assert_int_equal(r.invalid_len, want);
            assert_memory_equal(r.invalid, typed_quarantine, want);
            assert_int_equal(r.stats.valid, 2);
            assert_int_equal(r.stats.invalid, 5);
            assert_int_equal(r.stats.refused[QUARANTINE_FULL], 4 - kept);
            assert_int_equal(r.stats.refused[QUARANTINE_OVERSIZE], 1); /* never stored anyway */
            assert_int_equal(refused_sum(&r.stats), 5);
            result_free(&r);
        }
    }
    memset(&bounds, 0, sizeof bounds);
    datasource_free(ds);
}

/* The classic untyped body's invalid lines (POST /'s .invalid.ndjson) under the same bounds:
 * a line of n bytes takes n + 1. */
static void test_quarantine_bounds_untyped(void **state)
{
    (void)state;
    size_t line[4];
    for (size_t k = 0; k <= 3; k++)
        line[k] = first_lines(expected_invalid, k);
    for (size_t k = 1; k <= 3; k++) {
        for (int less = 0; less <= 1; less++) {
            for (int by_day = 0; by_day <= 1; by_day++) {
                bounds.before = by_day ? 10 : 0;
                bounds.body = by_day ? 1000 : line[k] - (size_t)less;
                bounds.day = by_day ? 10 + line[k] - (size_t)less : 0;
                struct result r = run("a,b,c", body, sizeof body - 1, NULL, 0, ENCODING_IDENTITY,
                                      (size_t)1 + (size_t)less * 1000, MAX_LINE);
                assert_int_equal(r.status, INGEST_OK);
                assert_string_equal(r.rows, expected_rows);
                size_t kept = k - (size_t)less;
                assert_int_equal(r.invalid_len, line[kept]);
                assert_memory_equal(r.invalid, expected_invalid, line[kept]);
                assert_int_equal(r.stats.valid, 5);
                assert_int_equal(r.stats.invalid, 4);
                assert_int_equal(r.stats.refused[QUARANTINE_FULL], 3 - kept);
                assert_int_equal(refused_sum(&r.stats), 4);
                result_free(&r);
            }
        }
    }
    memset(&bounds, 0, sizeof bounds);
}

/* The room is judged again for each body of a reused pipeline: a full body leaves the next
 * its own --max-quarantine, and the day's file as it has grown since. */
static void test_quarantine_room_per_body(void **state)
{
    (void)state;
    int rows_fd = memfd_create("rows", 0), bad_fd = memfd_create("invalid", 0);
    struct sink *rows = sink_open_fd(rows_fd), *bad = sink_open_fd(bad_fd);
    const char *names[] = {"a"};
    struct json_columns cols;
    char err[128];
    assert_int_equal(json_columns_init(&cols, names, 1, err, sizeof err), 0);
    const struct ingest_config cfg = {
        .columns = &cols, .max_line = 100, .flush_bytes = 1 << 20, .rows = rows,
        .quarantine = bad, .max_quarantine = 6, .max_quarantine_day = 15,
    };
    struct ingest g;
    ingest_init(&g, &cfg);
    static const char two[] = "x1\nx2\nx3\n{\"a\":1}\n"; /* 3 bytes a line: two fit a body */
    static const uint64_t full[] = {1, 1, 2, 3};       /* the day's 15 bytes: 6, 6, 3, 0 */
    for (int b = 0; b < 4; b++) {
        assert_int_equal(ingest_begin(&g, ENCODING_IDENTITY), INGEST_OK);
        assert_int_equal(ingest_feed(&g, two, sizeof two - 1), INGEST_OK);
        assert_int_equal(ingest_end(&g), INGEST_OK);
        assert_int_equal(g.stats.valid, 1);
        assert_int_equal(g.stats.refused[QUARANTINE_FULL], full[b]);
        assert_int_equal(g.stats.refused[QUARANTINE_JSON], 3 - full[b]);
    }
    size_t len;
    char *kept = drain(bad_fd, &len);
    assert_string_equal(kept, "x1\nx2\nx1\nx2\nx1\n");
    free(kept);
    ingest_free(&g);
    json_columns_free(&cols);
    sink_close(rows);
    sink_close(bad);
    close(rows_fd);
    close(bad_fd);
}

static void test_typed_stats_json(void **state)
{
    (void)state;
    struct ingest_stats s = {.bytes = 9, .valid = 1, .invalid = 3};
    s.refused[QUARANTINE_JSON] = 1;
    s.refused[QUARANTINE_DATE] = 2;
    char out[1024];
    int n = ingest_typed_result_json(&s, NULL, out, sizeof out);
    assert_string_equal(out, "{\"result\": {\"status\": \"ok\", \"stats\": {\"bytes\": 9, \"records\": "
                             "{\"valid\": 1, \"invalid\": 3, \"total\": 4, \"refused\": {\"json\": 1, "
                             "\"oversize\": 0, \"null\": 0, \"kind\": 0, \"syntax\": 0, \"range\": 0, "
                             "\"scale\": 0, \"precision\": 0, \"date\": 2, \"full\": 0}}}}}\n");
    assert_int_equal(n, strlen(out));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contract_on_one_body),
        cmocka_unit_test(test_every_split_position),
        cmocka_unit_test(test_batch_size_does_not_matter),
        cmocka_unit_test(test_gzip_every_split_position),
        cmocka_unit_test(test_corrupt_gzip_writes_nothing),
        cmocka_unit_test(test_random_pieces),
        cmocka_unit_test(test_finish_leaves_rows_pending),
        cmocka_unit_test(test_stats_json),
        cmocka_unit_test(test_stats_json_edges),
        cmocka_unit_test(test_result_json_error),
        cmocka_unit_test(test_typed_contract),
        cmocka_unit_test(test_typed_every_split_position),
        cmocka_unit_test(test_typed_row_room),
        cmocka_unit_test(test_typed_without_quarantine),
        cmocka_unit_test(test_quarantine_bounds_typed),
        cmocka_unit_test(test_quarantine_bounds_untyped),
        cmocka_unit_test(test_quarantine_room_per_body),
        cmocka_unit_test(test_typed_stats_json),
    };
    json_engine_init(); /* the path ndingest's main would choose */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
