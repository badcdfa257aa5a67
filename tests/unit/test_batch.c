/* test_batch.c -- batch cutting: row boundaries in quoted cells, half-written lines, max, void ranges, determinism. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "delivery/batch.h"
#include "testutil.h"

#define S(lit) lit, sizeof lit - 1

static struct void_range vr(uint64_t start, uint64_t end)
{
    struct void_range r = {.start = start, .end = end, .reason = "torn"};
    return r;
}

/* Cuts from an exact-size copy of data (ASan sees any read past it); returns batch_cut's. */
static int cut(struct batch *b, const char *data, size_t len, uint64_t start, uint64_t max,
               const struct void_range *v, size_t nv)
{
    char *copy = tu_exact(data, len);
    int r = batch_cut(b, copy, len, start, max, v, nv);
    free(copy);
    return r;
}

static void assert_body(const struct batch *b, const char *want, size_t n)
{
    if (b->body.len != n || (n && memcmp(b->body.p, want, n)))
        fail_msg("body \"%.*s\" (%zu), want \"%.*s\" (%zu)", (int)b->body.len, b->body.p,
                 b->body.len, (int)n, want, n);
}

static void test_quoted_cells(void **state)
{
    (void)state;
    struct batch b = {0};
    const char d[] = "a,\"x\ny\"\nb,\"q\"\"\n\"\"r\"\nc,\"\"\n";
    assert_int_equal(cut(&b, S(d), 0, 1000, NULL, 0), 1);
    assert_int_equal(b.rows, 3);
    assert_int_equal(b.start, 0);
    assert_int_equal(b.end, sizeof d - 1);
    assert_body(&b, S(d));
    /* row ends, by hand: after "a,\"x\ny\"\n" (8), after the second row (20), the end */
    assert_int_equal(batch_row_offset(&b, 0), 0);
    assert_int_equal(batch_row_offset(&b, 1), 8);
    assert_int_equal(batch_row_offset(&b, 2), 20);
    assert_int_equal(batch_row_offset(&b, 3), sizeof d - 1);
    assert_int_equal(b.void_bytes, 0);
    assert_int_equal(b.voids, 0);
    batch_free(&b);
}

static void test_half_written_last_line(void **state)
{
    (void)state;
    struct batch b = {0};
    assert_int_equal(cut(&b, S("1,2\n3,4\n5,"), 0, 1000, NULL, 0), 1);
    assert_int_equal(b.rows, 2);
    assert_int_equal(b.end, 8);
    assert_body(&b, S("1,2\n3,4\n"));
    /* the last row is still inside a quoted cell: its '\n' is not a boundary */
    assert_int_equal(cut(&b, S("1,2\n3,\"x\n"), 0, 1000, NULL, 0), 1);
    assert_int_equal(b.rows, 1);
    assert_int_equal(b.end, 4);
    /* nothing whole: 0, end at start, body emptied */
    assert_int_equal(cut(&b, S("3,\"x\ny"), 40, 1000, NULL, 0), 0);
    assert_int_equal(b.rows, 0);
    assert_int_equal(b.end, 40);
    assert_int_equal(b.body.len, 0);
    assert_int_equal(cut(&b, "", 0, 40, 1000, NULL, 0), 0);
    assert_int_equal(b.end, 40);
    batch_free(&b);
}

static void test_max(void **state)
{
    (void)state;
    struct batch b = {0};
    const char d[] = "r01\nr02\nr03\n";
    assert_int_equal(cut(&b, S(d), 100, 8, NULL, 0), 1); /* exactly two rows fit */
    assert_int_equal(b.rows, 2);
    assert_int_equal(b.start, 100);
    assert_int_equal(b.end, 108);
    assert_body(&b, S("r01\nr02\n"));
    assert_int_equal(cut(&b, S(d), 100, 7, NULL, 0), 1);
    assert_int_equal(b.rows, 1);
    assert_int_equal(b.end, 104);
    /* the first row alone is longer than max: that row */
    assert_int_equal(cut(&b, S("a long first row\nx\n"), 0, 3, NULL, 0), 1);
    assert_int_equal(b.rows, 1);
    assert_int_equal(b.end, 17);
    assert_int_equal(cut(&b, S("a long first row\nx\n"), 0, 0, NULL, 0), 1);
    assert_int_equal(b.rows, 1);
    /* huge max: no overflow */
    assert_int_equal(cut(&b, S(d), 100, UINT64_MAX, NULL, 0), 1);
    assert_int_equal(b.rows, 3);
    batch_free(&b);
}

static void test_voids_start_middle_end(void **state)
{
    (void)state;
    struct batch b = {0};
    /* the file from offset 50: a torn row at the start, in the middle, at the end */
    const char d[] = "TORN\nr1\nTO\nr2\nTORN\n";
    struct void_range v[] = {vr(10, 20), vr(50, 55), vr(58, 61), vr(64, 69)};
    assert_int_equal(cut(&b, S(d), 50, 1000, v, 4), 1);
    assert_int_equal(b.rows, 2);
    assert_int_equal(b.end, 69);
    assert_body(&b, S("r1\nr2\n"));
    assert_int_equal(b.void_bytes, 13);
    assert_int_equal(b.voids, 3);
    assert_int_equal(batch_row_offset(&b, 1), 3);
    assert_int_equal(batch_row_offset(&b, 2), 6);
    /* only a void range: 0, end past it */
    assert_int_equal(cut(&b, S("TORN\n"), 50, 1000, v, 4), 0);
    assert_int_equal(b.rows, 0);
    assert_int_equal(b.end, 55);
    assert_int_equal(b.voids, 1);
    /* a void range whose '\n' is not in the data yet: the batch ends before it */
    struct void_range late[] = {vr(53, 70)};
    assert_int_equal(cut(&b, S("r1\nTORN\n"), 50, 1000, late, 1), 1);
    assert_int_equal(b.rows, 1);
    assert_int_equal(b.end, 53);
    assert_int_equal(b.voids, 0);
    /* start inside a range (left by an overlap): skipped to its end */
    struct void_range over[] = {vr(40, 53)};
    assert_int_equal(cut(&b, S("RN\nr1\n"), 50, 1000, over, 1), 1);
    assert_body(&b, S("r1\n"));
    assert_int_equal(b.void_bytes, 3);
    batch_free(&b);
}

static void test_void_past_max(void **state)
{
    (void)state;
    struct batch b = {0};
    char d[200];
    memcpy(d, "r1\n", 3);
    memset(d + 3, 'x', 99);
    d[102] = '\n';
    memcpy(d + 103, "r2\nr3\n", 6);
    struct void_range v[] = {vr(3, 103)};
    /* max 10: r1, then the void range skipped whole past max; r2 would end past max */
    assert_int_equal(cut(&b, d, 109, 0, 10, v, 1), 1);
    assert_int_equal(b.rows, 1);
    assert_int_equal(b.end, 103);
    assert_body(&b, S("r1\n"));
    assert_int_equal(b.void_bytes, 100);
    /* from there: r2 and r3 */
    assert_int_equal(cut(&b, d + 103, 6, 103, 10, v, 1), 1);
    assert_int_equal(b.rows, 2);
    assert_int_equal(b.end, 109);
    /* the void range first: skipped, then the first row is taken whatever max is */
    assert_int_equal(cut(&b, d + 3, 106, 3, 1, v, 1), 1);
    assert_int_equal(b.rows, 1);
    assert_int_equal(b.end, 106);
    assert_body(&b, S("r2\n"));
    batch_free(&b);
}

static void test_adjacent_and_overlapping(void **state)
{
    (void)state;
    struct batch b = {0};
    const char d[] = "r1\nAAAA\nBBB\nr2\n";
    struct void_range adj[] = {vr(3, 8), vr(8, 12)};
    assert_int_equal(cut(&b, S(d), 0, 1000, adj, 2), 1);
    assert_body(&b, S("r1\nr2\n"));
    assert_int_equal(b.void_bytes, 9);
    assert_int_equal(b.voids, 1); /* one stretch */
    /* overlapping and repeated, sorted as voids_load gives them */
    struct void_range ov[] = {vr(3, 8), vr(3, 8), vr(3, 12), vr(5, 7), vr(6, 12)};
    assert_int_equal(cut(&b, S(d), 0, 1000, ov, 5), 1);
    assert_body(&b, S("r1\nr2\n"));
    assert_int_equal(b.void_bytes, 9);
    assert_int_equal(b.voids, 1);
    assert_int_equal(b.end, sizeof d - 1);
    /* two stretches apart */
    struct void_range two[] = {vr(3, 8), vr(12, 15)};
    assert_int_equal(cut(&b, S(d), 0, 1000, two, 2), 1);
    assert_body(&b, S("r1\nBBB\n"));
    assert_int_equal(b.voids, 2);
    assert_int_equal(b.void_bytes, 8);
    batch_free(&b);
}

static void test_odd_quotes_in_torn_range(void **state)
{
    (void)state;
    struct batch b = {0};
    /* a torn row cut inside a quoted cell, isolated with a '\n': parity restarts after it */
    const char d[] = "r1\na,\"tor\nr2\nr3,\"q\"\n";
    struct void_range v[] = {vr(3, 10)};
    assert_int_equal(cut(&b, S(d), 0, 1000, v, 1), 1);
    assert_int_equal(b.rows, 3);
    assert_body(&b, S("r1\nr2\nr3,\"q\"\n"));
    assert_int_equal(batch_row_offset(&b, 2), 6);
    /* cut just after a '\n' inside the quoted cell: the range ends there, no '\n' added */
    const char e[] = "r1\na,\"x\nr2\n";
    struct void_range w[] = {vr(3, 8)};
    assert_int_equal(cut(&b, S(e), 0, 1000, w, 1), 1);
    assert_int_equal(b.rows, 2);
    assert_body(&b, S("r1\nr2\n"));
    /* without the record the torn quote would swallow the rows after it */
    assert_int_equal(cut(&b, S(d), 0, 1000, NULL, 0), 1);
    assert_int_equal(b.rows, 1);
    /* bytes of an unfinished row before a range (against the invariant) are not sent */
    const char f[] = "r1\nab\"c\"TORN\nr2\n";
    struct void_range x[] = {vr(8, 13)};
    assert_int_equal(cut(&b, S(f), 0, 1000, x, 1), 1);
    assert_body(&b, S("r1\nr2\n"));
    assert_int_equal(b.void_bytes, 10);
    batch_free(&b);
}

static void test_deterministic(void **state)
{
    (void)state;
    /* 2000 rows of varied length, some with quoted line feeds, three void ranges */
    size_t cap = 200000, len = 0;
    char *d = malloc(cap);
    assert_non_null(d);
    struct void_range v[3];
    size_t nv = 0;
    for (int i = 0; i < 2000; i++) {
        size_t at = len;
        if (i % 7 == 3)
            len += (size_t)sprintf(d + len, "%d,\"line\nfeed \"\"%d\"\"\",%*s\n", i, i, i % 50, "");
        else
            len += (size_t)sprintf(d + len, "%d,%*s\n", i, i % 90, "x");
        if (i == 10 || i == 900 || i == 1999)
            v[nv++] = vr(at, len);
    }
    struct batch a = {0}, b = {0}, r = {0};
    uint64_t pos = 0;
    size_t total_rows = 0, batches = 0;
    struct buf all = {0};
    while (pos < len) {
        int ra = batch_cut(&a, d + pos, len - pos, pos, 4096, v, nv);
        int rb = cut(&b, d + pos, len - pos, pos, 4096, v, nv);
        assert_int_equal(ra, rb);
        assert_int_equal(a.end, b.end);
        assert_int_equal(a.rows, b.rows);
        assert_body(&b, a.body.p, a.body.len);
        /* resent after a crash: the bytes of [start, end) alone give the same batch */
        assert_int_equal(cut(&r, d + pos, a.end - pos, pos, a.end - pos, v, nv), ra);
        assert_int_equal(r.end, a.end);
        assert_body(&r, a.body.p, a.body.len);
        /* every row offset lands just past a '\n' */
        for (size_t k = 1; k <= a.rows; k++)
            assert_int_equal(a.body.p[batch_row_offset(&a, k) - 1], '\n');
        assert_int_equal(batch_row_offset(&a, a.rows), a.body.len);
        assert_true(a.end > pos);
        assert_true(a.rows == 1 || a.end - pos - a.void_bytes <= 4096 || a.void_bytes);
        assert_int_equal(buf_append(&all, a.body.p, a.body.len), 0);
        total_rows += a.rows;
        batches++;
        pos = a.end;
    }
    assert_int_equal(total_rows, 1997);
    assert_true(batches > 10);
    /* the batches put together are the file less its three void rows */
    size_t expect_len = len - (v[0].end - v[0].start) - (v[1].end - v[1].start) -
                        (v[2].end - v[2].start);
    assert_int_equal(all.len, expect_len);
    struct buf want = {0};
    for (size_t k = 0, at = 0; k <= nv; k++) {
        size_t to = k < nv ? v[k].start : len;
        assert_int_equal(buf_append(&want, d + at, to - at), 0);
        at = k < nv ? v[k].end : len;
    }
    assert_int_equal(want.len, expect_len);
    assert_memory_equal(all.p, want.p, want.len);
    buf_free(&want);
    buf_free(&all);
    batch_free(&a);
    batch_free(&b);
    batch_free(&r);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quoted_cells),
        cmocka_unit_test(test_half_written_last_line),
        cmocka_unit_test(test_max),
        cmocka_unit_test(test_voids_start_middle_end),
        cmocka_unit_test(test_void_past_max),
        cmocka_unit_test(test_adjacent_and_overlapping),
        cmocka_unit_test(test_odd_quotes_in_torn_range),
        cmocka_unit_test(test_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
