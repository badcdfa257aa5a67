/* fuzz_ingest.c -- libFuzzer target: the line framer and the JSON engine on arbitrary bytes,
 * cut at fuzzer-chosen positions, must not crash, and must give the same verdicts and rows
 * whatever the cuts (the every-split-position property, explored by the fuzzer); and every
 * line must get the same verdict and cells from each dispatch path (scalar, sse2, avx2), so
 * that a fast path accepting what the strict walk rejects is a finding; the same for columns
 * given by nested paths, which the fast paths follow as they walk and the strict walk with
 * json_follow. The same body through a typed dataset (every type, by nested paths) must give
 * the same rows, quarantine and counts whatever the cuts, with ASan watching the type
 * checks. The input is the body as it is; its last byte also picks the size of the cuts
 * (1..97). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "datasource.h"
#include "fingerprint.h"
#include "ingest.h"

static struct json_columns columns, nested;

#define K(s) {JSON_STEP_KEY, sizeof(s) - 1, 0, s}
#define I(n) {JSON_STEP_INDEX, 0, n, NULL}
/* Short keys the fuzzer finds easily, at several depths, by key and by index, a path and
 * its prefix, and a key that needs escapes in a line to be matched by them. */
static const struct json_step p_a[] = {K("a")}, p_ab[] = {K("a"), K("b")},
                              p_aba[] = {K("a"), K("b"), K("a")}, p_a0[] = {K("a"), I(0)},
                              p_a1b[] = {K("a"), I(1), K("b")}, p_b00[] = {K("b"), I(0), I(0)},
                              p_bq[] = {K("b"), K("b\"q"), K("\xc3\xa9")},
                              p_pz[] = {K("pickup"), K("zone"), K("id")};
static const struct json_column_spec nested_specs[] = {
    {"a", p_a, 1},     {"ab", p_ab, 2},   {"aba", p_aba, 3}, {"a0", p_a0, 2},
    {"a1b", p_a1b, 3}, {"b00", p_b00, 3}, {"bq", p_bq, 3},   {"pz", p_pz, 3},
};
static int rows_fd[2] = {-1, -1};
static struct sink *rows_sink[2];

/* Short keys again; Nullable or with a DEFAULT where it can be, so that many lines pass and
 * reach the row, not only the quarantine. */
static const char typed_text[] =
    "SCHEMA >\n"
    "    `i` Nullable(Int8) `json:$.a`,\n"
    "    `u` Nullable(UInt64) `json:$.b`,\n"
    "    `f` Nullable(Float32) `json:$.c`,\n"
    "    `d` Decimal(9, 2) `json:$.d` DEFAULT 0,\n"
    "    `s` Nullable(String) `json:$.a.b`,\n"
    "    `t` Nullable(DateTime64(3)) `json:$.t`,\n"
    "    `dt` Nullable(Date) `json:$.e[0]`,\n"
    "    `w` Nullable(DateTime) `json:$.w`,\n"
    "    `g` Nullable(UUID) `json:$.g`,\n"
    "    `l` LowCardinality(Nullable(String)) `json:$.l`,\n"
    "    `o` Bool `json:$.o` DEFAULT false,\n"
    "    `r` Array(Nullable(Int16)) `json:$.r[:].a`,\n"
    "    `m` Array(Array(String)) `json:$.m`,\n"
    "    `x` Decimal(38, 10) `json:$.x` DEFAULT 1.5\n";
static struct datasource *typed;
static int typed_fd[4] = {-1, -1, -1, -1}; /* rows, quarantine; whole, then cut */
static struct sink *typed_sink[4];

static void setup(void)
{
    /* "ab" shares its length with "\xc3\xa9": both key lookups are exercised. */
    const char *names[] = {"vendorid", "a", "b\"q", "\xc3\xa9", "ab", "trip_distance"};
    char err[128];
    if (json_columns_init(&columns, names, 6, err, sizeof err) ||
        json_columns_init_paths(&nested, nested_specs, 8, err, sizeof err))
        abort();
    if (!(typed = datasource_parse("fuzz.datasource", typed_text, sizeof typed_text - 1, err,
                                   sizeof err)))
        abort();
    for (int i = 0; i < 4; i++) {
        typed_fd[i] = memfd_create("typed", 0);
        typed_sink[i] = sink_open_fd(typed_fd[i]);
    }
    json_engine_init(); /* as ndingest's main does; paths_agree then tries every path */
    for (int i = 0; i < 2; i++) {
        rows_fd[i] = memfd_create("rows", 0);
        rows_sink[i] = sink_open_fd(rows_fd[i]);
    }
}

/* The body through a pipeline of cfg, fed in pieces of step bytes; its stats in *st. */
static void ingest_body(const struct ingest_config *cfg, const uint8_t *data, size_t n,
                        size_t step, struct ingest_stats *st)
{
    struct ingest g;
    ingest_init(&g, cfg);
    ingest_begin(&g, ENCODING_IDENTITY);
    /* A body cut in pieces is also hashed as it is framed (lines_feed_fp): the rows must be
     * those of the whole body framed without, and the fingerprint that of its bytes. */
    struct fingerprint fp;
    fingerprint_init(&fp);
    if (step < n && !ingest_fingerprint(&g, &fp))
        abort();
    for (size_t at = 0; at < n; at += step) {
        size_t len = n - at < step ? n - at : step;
        /* An exact-size copy, so ASan sees any read past the piece. */
        uint8_t *piece = malloc(len);
        memcpy(piece, data + at, len);
        ingest_feed(&g, (const char *)piece, len);
        free(piece);
    }
    if (ingest_end(&g) != INGEST_OK)
        abort();
    if (step < n) {
        struct fingerprint one;
        fingerprint_init(&one);
        fingerprint_feed(&one, (const char *)data, n, NULL, NULL);
        if (fingerprint_digest(&fp) != fingerprint_digest(&one))
            abort();
    }
    *st = g.stats;
    ingest_free(&g);
}

static size_t run(int which, const uint8_t *data, size_t n, size_t step, struct ingest_stats *st)
{
    if (ftruncate(rows_fd[which], 0))
        abort();
    lseek(rows_fd[which], 0, SEEK_SET);
    const struct ingest_config cfg = {
        .columns = &columns, .max_line = 512, .crlf = 0, .flush_bytes = 256,
        .rows = rows_sink[which], .quarantine = NULL, .log_prefix = NULL,
    };
    ingest_body(&cfg, data, n, step, st);
    return (size_t)lseek(rows_fd[which], 0, SEEK_END);
}

/* The body through the typed dataset, cut in pieces of step bytes: 0, the bytes of rows and
 * of quarantine rows in *rows and *bad, the counts in *st. */
static void run_typed(int which, const uint8_t *data, size_t n, size_t step,
                      struct ingest_stats *st, size_t *rows, size_t *bad)
{
    for (int k = 0; k < 2; k++) {
        if (ftruncate(typed_fd[2 * which + k], 0))
            abort();
        lseek(typed_fd[2 * which + k], 0, SEEK_SET);
    }
    const struct ingest_config cfg = {
        .columns = &typed->json, .schema = typed, .max_line = 512, .flush_bytes = 256,
        .rows = typed_sink[2 * which], .quarantine = typed_sink[2 * which + 1],
    };
    ingest_body(&cfg, data, n, step, st);
    *rows = (size_t)lseek(typed_fd[2 * which], 0, SEEK_END);
    *bad = (size_t)lseek(typed_fd[2 * which + 1], 0, SEEK_END);
}

/* One line under every path available, with columns c (at most 8): same verdict, and on a
 * valid line the same cells (kind, length, position). */
static void line_agrees(const struct json_columns *c, const char *line, size_t len)
{
    static const char *const paths[] = {"scalar", "sse2", "avx2", "avx512"};
    struct cell want[8], got[8];
    enum line_verdict v0 = LINE_BLANK;
    int have = 0;
    for (size_t e = 0; e < sizeof paths / sizeof *paths; e++) {
        if (json_engine_select(paths[e]) != 0)
            continue;
        enum line_verdict v = json_line(c, line, len, got);
        if (!have) {
            v0 = v;
            memcpy(want, got, sizeof got);
            have = 1;
            continue;
        }
        if (v != v0)
            abort();
        for (size_t i = 0; v == LINE_VALID && i < c->count; i++)
            if (got[i].kind != want[i].kind || got[i].len != want[i].len ||
                (got[i].kind != CELL_EMPTY && got[i].p != want[i].p))
                abort();
    }
}

/* Every line of the input, with top-level columns and with nested paths. */
static void paths_agree(const uint8_t *data, size_t n)
{
    for (size_t at = 0; at < n;) {
        const uint8_t *nl = memchr(data + at, '\n', n - at);
        size_t len = (size_t)((nl ? nl - data : (ptrdiff_t)n) - (ptrdiff_t)at);
        char *line = malloc(len ? len : 1); /* exact size: ASan sees any read past it */
        memcpy(line, data + at, len);
        line_agrees(&columns, line, len);
        line_agrees(&nested, line, len);
        free(line);
        at += len + 1;
    }
    json_engine_select("best");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (!rows_sink[0])
        setup();
    if (n < 1)
        return 0;
    /* The whole input is the body, so that the seed corpus (tests/json: one line per file)
     * is fed as it is; the cut size comes from the last byte, which stays in the body. */
    size_t step = 1 + data[n - 1] % 97;
    paths_agree(data, n);
    struct ingest_stats whole, cut;
    size_t a = run(0, data, n, n, &whole);
    size_t b = run(1, data, n, step, &cut);
    if (whole.valid != cut.valid || whole.invalid != cut.invalid || a != b)
        abort();
    static char pa[1 << 20], pb[1 << 20];
    if (a <= sizeof pa &&
        (pread(rows_fd[0], pa, a, 0) != (ssize_t)a || pread(rows_fd[1], pb, b, 0) != (ssize_t)b ||
         memcmp(pa, pb, a)))
        abort();
    /* Typed: the rows byte for byte; the quarantine by size (each row starts with the second
     * it was written in, which may tick between the two runs; its width does not). */
    size_t ta, tb, qa, qb;
    run_typed(0, data, n, n, &whole, &ta, &qa);
    run_typed(1, data, n, step, &cut, &tb, &qb);
    if (whole.valid != cut.valid || whole.invalid != cut.invalid || ta != tb || qa != qb ||
        (whole.invalid - whole.refused[QUARANTINE_OVERSIZE] == 0) != (qa == 0))
        abort();
    if (ta <= sizeof pa &&
        (pread(typed_fd[0], pa, ta, 0) != (ssize_t)ta || pread(typed_fd[2], pb, tb, 0) != (ssize_t)tb ||
         memcmp(pa, pb, ta)))
        abort();
    return 0;
}
