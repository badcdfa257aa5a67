/* test_lines.c -- line framing: lines come out the same whatever the piece boundaries, and
 * the same from lines_feed_fp, whose fingerprint is fingerprint_feed's over the whole body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fingerprint.h"
#include "lines.h"

/* Set by the second run of every test: frame() then uses lines_feed_fp. */
static int fused;

/* What the framer reported, as text: "L<len>:<bytes>|" per line, "O<len>|" per oversize. */
struct record {
    char out[1 << 16];
    size_t len;
};

static void rec_line(void *ctx, const char *p, size_t n)
{
    struct record *r = ctx;
    r->len += (size_t)snprintf(r->out + r->len, sizeof r->out - r->len, "L%zu:", n);
    assert_true(r->len + n + 1 < sizeof r->out);
    memcpy(r->out + r->len, p, n);
    r->len += n;
    r->out[r->len++] = '|';
    r->out[r->len] = '\0';
}

static void rec_oversize(void *ctx, uint64_t len)
{
    struct record *r = ctx;
    r->len += (size_t)snprintf(r->out + r->len, sizeof r->out - r->len, "O%llu|",
                               (unsigned long long)len);
}

static void frame(const char *body, size_t n, const size_t *cuts, size_t ncuts, size_t max_line,
                  struct record *r)
{
    struct line_framer f;
    lines_init(&f, max_line);
    const struct line_handler h = {rec_line, rec_oversize, r};
    memset(r, 0, sizeof *r);
    struct fingerprint fp;
    fingerprint_init(&fp);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        /* Each piece in its own exact-size allocation so ASan catches reads past it. */
        char *piece = malloc(to - at + 1);
        memcpy(piece, body + at, to - at);
        if (fused)
            assert_int_equal(lines_feed_fp(&f, &fp, piece, to - at, &h), 0);
        else
            assert_int_equal(lines_feed(&f, piece, to - at, &h), 0);
        free(piece);
        at = to;
    }
    assert_int_equal(lines_end(&f, &h), 0);
    lines_free(&f);
    if (fused) {
        struct fingerprint one;
        fingerprint_init(&one);
        fingerprint_feed(&one, body, n, NULL, NULL);
        assert_true(fingerprint_digest(&fp) == fingerprint_digest(&one));
    }
}

static int plain(void **state)
{
    (void)state;
    fused = 0;
    return 0;
}

static int with_fingerprint(void **state)
{
    (void)state;
    fused = 1;
    return 0;
}

static void test_basic_lines(void **state)
{
    (void)state;
    struct record r;
    const char body[] = "ab\n\ncd\r\nlast";
    frame(body, sizeof body - 1, NULL, 0, 100, &r);
    assert_string_equal(r.out, "L2:ab|L0:|L3:cd\r|L4:last|");
}

static void test_final_newline_adds_no_line(void **state)
{
    (void)state;
    struct record r;
    frame("a\nb\n", 4, NULL, 0, 100, &r);
    assert_string_equal(r.out, "L1:a|L1:b|");
    frame("", 0, NULL, 0, 100, &r);
    assert_string_equal(r.out, "");
}

static void test_oversize_skipped_with_length(void **state)
{
    (void)state;
    struct record r;
    /* max_line 4: "12345" is over, "1234" is not; the oversize line's full length is reported. */
    const char body[] = "1234\n12345\nok\n123456789";
    frame(body, sizeof body - 1, NULL, 0, 4, &r);
    assert_string_equal(r.out, "L4:1234|O5|L2:ok|O9|");
}

/* The key property: every split position gives the same lines. */
static void test_every_split_position(void **state)
{
    (void)state;
    const char body[] = "{\"a\":1}\n\n  \r\nxx\n0123456789abcdef\nshort\nend-without-newline";
    size_t n = sizeof body - 1;
    for (size_t max_line = 3; max_line <= 20; max_line += 17) {
        struct record whole, split;
        frame(body, n, NULL, 0, max_line, &whole);
        for (size_t k = 0; k <= n; k++) {
            frame(body, n, &k, 1, max_line, &split);
            assert_string_equal(split.out, whole.out);
            for (size_t j = k; j <= n; j++) {
                size_t cuts[2] = {k, j};
                frame(body, n, cuts, 2, max_line, &split);
                assert_string_equal(split.out, whole.out);
            }
        }
    }
}

static void test_random_pieces(void **state)
{
    (void)state;
    char body[8192];
    unsigned seed = 12345;
    for (size_t i = 0; i < sizeof body; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned v = (seed >> 16) % 40;
        body[i] = v == 0 ? '\n' : (char)('a' + v % 26);
    }
    struct record whole, split;
    frame(body, sizeof body, NULL, 0, 100, &whole);
    for (int round = 0; round < 200; round++) {
        size_t cuts[64], nc = 0, at = 0;
        while (nc < 64) {
            seed = seed * 1103515245u + 12345u;
            at += 1 + (seed >> 16) % 300;
            if (at >= sizeof body)
                break;
            cuts[nc++] = at;
        }
        frame(body, sizeof body, cuts, nc, 100, &split);
        assert_int_equal(split.len, whole.len);
        assert_memory_equal(split.out, whole.out, whole.len);
    }
}

static void test_one_byte_pieces(void **state)
{
    (void)state;
    const char body[] = "alpha\nbeta\r\n\ngamma-is-too-long\nz";
    size_t n = sizeof body - 1;
    size_t cuts[64];
    for (size_t i = 0; i + 1 < n; i++)
        cuts[i] = i + 1;
    struct record whole, split;
    frame(body, n, NULL, 0, 8, &whole);
    frame(body, n, cuts, n - 1, 8, &split);
    assert_string_equal(split.out, whole.out);
    assert_string_equal(whole.out, "L5:alpha|L5:beta\r|L0:|O17|L1:z|");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define BOTH(t) cmocka_unit_test_setup(t, plain), cmocka_unit_test_setup(t, with_fingerprint)
        BOTH(test_basic_lines),
        BOTH(test_final_newline_adds_no_line),
        BOTH(test_oversize_skipped_with_length),
        BOTH(test_every_split_position),
        BOTH(test_random_pieces),
        BOTH(test_one_byte_pieces),
#undef BOTH
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
