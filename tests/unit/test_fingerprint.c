/* test_fingerprint.c -- the body's fingerprint: its definition (written out again here, in
 * the plainest form), whatever the pieces and the code path, its newlines, and that every
 * bit counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "fingerprint.h"

static const char *const path_names[] = {"avx512", "avx2", "scalar"};

/* ---- The definition, as doc/design.md gives it ---- */

static uint64_t mix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t reference(const unsigned char *p, size_t n)
{
    uint64_t sec[24], acc[8], x = 0x6E6467696E676573ULL;
    for (int i = 0; i < 24; i++)
        sec[i] = mix(&x);
    for (int i = 0; i < 8; i++)
        acc[i] = mix(&x);
    size_t k = 0;
    for (; 64 * (k + 1) <= n; k++) {
        for (int i = 0; i < 8; i++) {
            uint64_t d = le64(p + 64 * k + 8 * i), y = d ^ sec[k % 16 + (size_t)i];
            acc[i ^ 1] += d;
            acc[i] += (y & 0xFFFFFFFFu) * (y >> 32);
        }
        if ((k + 1) % 16 == 0)
            for (int i = 0; i < 8; i++)
                acc[i] = (acc[i] ^ acc[i] >> 47 ^ sec[16 + i]) * 0x9E3779B1u;
    }
    if (n < 64)
        return XXH3_64bits(p, n);
    unsigned char b[64 + 64 + 8];
    size_t tail = n - 64 * k;
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++)
            b[8 * i + j] = (unsigned char)(acc[i] >> (8 * j));
    memcpy(b + 64, p + 64 * k, tail);
    for (int j = 0; j < 8; j++)
        b[64 + tail + (size_t)j] = (unsigned char)((uint64_t)n >> (8 * j));
    return XXH3_64bits(b, 64 + tail + 8);
}

/* ---- Helpers ---- */

static void fill(unsigned char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        b[i] = (unsigned char)(seed >> 16);
    }
}

/* The body fed in pieces cut at cuts[0..nc) (ascending), each piece a malloc of its own. */
static uint64_t pieces(const unsigned char *b, size_t n, const size_t *cuts, size_t nc)
{
    struct fingerprint f;
    fingerprint_init(&f);
    size_t at = 0;
    for (size_t i = 0; i <= nc; i++) {
        size_t to = i < nc ? cuts[i] : n;
        char *piece = malloc(to - at + 1);
        memcpy(piece, b + at, to - at);
        fingerprint_feed(&f, piece, to - at, NULL, NULL);
        free(piece);
        at = to;
    }
    return fingerprint_digest(&f);
}

static int restore(void **state)
{
    (void)state;
    /* back to what the CPU would choose: the first usable of the list */
    for (size_t i = 0; i < sizeof path_names / sizeof path_names[0]; i++)
        if (!fingerprint_use(path_names[i]))
            break;
    return 0;
}

/* ---- Tests ---- */

static void test_definition_every_path_every_split(void **state)
{
    (void)state;
    static unsigned char b[5000];
    fill(b, sizeof b, 7);
    int tried = 0;
    for (size_t pi = 0; pi < sizeof path_names / sizeof path_names[0]; pi++) {
        if (fingerprint_use(path_names[pi])) {
            print_message("fingerprint path %s: not on this CPU\n", path_names[pi]);
            continue;
        }
        tried++;
        for (size_t n = 0; n <= sizeof b; n += n < 300 ? 1 : 97) {
            uint64_t want = reference(b, n);
            if (pieces(b, n, NULL, 0) != want)
                fail_msg("%s: %zu bytes in one piece", path_names[pi], n);
            for (size_t cut = 0; cut <= n; cut += n < 200 ? 1 : 61)
                if (pieces(b, n, &cut, 1) != want)
                    fail_msg("%s: %zu bytes cut at %zu", path_names[pi], n, cut);
            size_t three[2] = {n / 3, n / 3 + 65 < n ? n / 3 + 65 : n};
            if (pieces(b, n, three, 2) != want)
                fail_msg("%s: %zu bytes in three pieces", path_names[pi], n);
        }
        /* one byte at a time, past two scrambles (16 stripes each) */
        size_t cuts[2100];
        for (size_t i = 0; i < 2100; i++)
            cuts[i] = i + 1;
        assert_true(pieces(b, 2101, cuts, 2100) == reference(b, 2101));
    }
    assert_true(tried >= 1);
    restore(state);
}

struct seen {
    size_t at[4096];
    size_t n, base;
};

static void on_nl(void *ctx, size_t at)
{
    struct seen *s = ctx;
    assert_true(s->n < 4096);
    s->at[s->n++] = s->base + at;
}

static void test_newlines_in_order(void **state)
{
    (void)state;
    static unsigned char b[3000];
    fill(b, sizeof b, 3);
    for (size_t i = 0; i < sizeof b; i++)
        if (b[i] % 9 == 0 || i == 0 || i == 63 || i == 64 || i == 127 || i == sizeof b - 1)
            b[i] = '\n';
    size_t want[4096], nw = 0;
    for (size_t i = 0; i < sizeof b; i++)
        if (b[i] == '\n')
            want[nw++] = i;
    for (size_t pi = 0; pi < sizeof path_names / sizeof path_names[0]; pi++) {
        if (fingerprint_use(path_names[pi]))
            continue;
        for (size_t step = 1; step < 300; step += step < 70 ? 1 : 53) {
            struct seen s = {.n = 0};
            struct fingerprint f;
            fingerprint_init(&f);
            for (size_t at = 0; at < sizeof b; at += step) {
                size_t len = sizeof b - at < step ? sizeof b - at : step;
                s.base = at;
                fingerprint_feed(&f, (const char *)b + at, len, on_nl, &s);
            }
            assert_int_equal(s.n, nw);
            assert_memory_equal(s.at, want, nw * sizeof want[0]);
            assert_true(fingerprint_digest(&f) == reference(b, sizeof b));
        }
    }
    restore(state);
}

/* A body that differs in any one bit, by a byte more or less, or by two stripes swapped,
 * has another fingerprint. */
static void test_every_bit_counts(void **state)
{
    (void)state;
    static unsigned char b[2100];
    fill(b, sizeof b, 11);
    uint64_t base = pieces(b, sizeof b, NULL, 0);
    for (size_t i = 0; i < sizeof b; i++)
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1u << bit);
            if (pieces(b, sizeof b, NULL, 0) == base)
                fail_msg("bit %d of byte %zu", bit, i);
            b[i] ^= (unsigned char)(1u << bit);
        }
    assert_true(pieces(b, sizeof b - 1, NULL, 0) != base);
    static unsigned char c[2101];
    memcpy(c, b, sizeof b);
    c[sizeof b] = 0;
    assert_true(pieces(c, sizeof c, NULL, 0) != base);
    unsigned char t[64];
    memcpy(t, b + 64, 64);
    memmove(b + 64, b + 128, 64);
    memcpy(b + 128, t, 64);
    assert_true(pieces(b, sizeof b, NULL, 0) != base);
    /* an empty body and one zero byte differ too */
    assert_true(pieces(b, 0, NULL, 0) != pieces((const unsigned char *)"\0", 1, NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_definition_every_path_every_split, restore),
        cmocka_unit_test_teardown(test_newlines_in_order, restore),
        cmocka_unit_test(test_every_bit_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
