/* test_backoff.c -- unit tests of the backoff: every draw within its bounds, the cap,
 * Retry-After over the draw, reset, and seeds that spread hosts apart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "delivery/backoff.h"
#include "testutil.h"

/* The bound d of the n-th failure in a row (1-based), computed here independently. */
static uint64_t bound(unsigned base, unsigned cap, unsigned n)
{
    uint64_t d = base;
    for (unsigned i = 1; i < n; i++) {
        d *= 2;
        if (d >= cap)
            return cap;
    }
    return d < cap ? d : cap;
}

static void test_bounds_of_every_draw(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        struct backoff b;
        backoff_init(&b, 100, 30000, seed);
        for (unsigned n = 1; n <= 40; n++) {
            unsigned w = backoff_next(&b, 0);
            uint64_t d = bound(100, 30000, n);
            if (w < d / 2 || w > d)
                fail_msg("seed %llu failure %u: %u outside [%llu, %llu]",
                         (unsigned long long)seed, n, w, (unsigned long long)(d / 2),
                         (unsigned long long)d);
        }
    }
}

static void test_cap_holds_after_many_failures(void **state)
{
    (void)state;
    struct backoff b;
    backoff_init(&b, 1000, 60000, 7);
    unsigned max = 0, min = UINT32_MAX;
    for (int i = 0; i < 100000; i++) { /* far past 2^32 times the base */
        unsigned w = backoff_next(&b, 0);
        if (i >= 10) {
            max = w > max ? w : max;
            min = w < min ? w : min;
        }
    }
    assert_true(max <= 60000);
    assert_true(min >= 30000);
    assert_true(max > 55000); /* the draws spread over [cap/2, cap], not one value */
    assert_true(min < 35000);
}

static void test_grows_exponentially(void **state)
{
    (void)state;
    /* The lowest possible wait of failure n+1 (d/2) is the highest of failure n... over
     * averages: each doubling must show. */
    double avg[6] = {0};
    for (uint64_t seed = 1; seed <= 500; seed++) {
        struct backoff b;
        backoff_init(&b, 64, 1u << 30, seed);
        for (int n = 0; n < 6; n++)
            avg[n] += backoff_next(&b, 0) / 500.0;
    }
    for (int n = 0; n < 5; n++)
        if (avg[n + 1] < 1.8 * avg[n] || avg[n + 1] > 2.2 * avg[n])
            fail_msg("average of failure %d: %.1f, of the next %.1f: not a doubling", n + 1,
                     avg[n], avg[n + 1]);
}

static void test_retry_after_wins(void **state)
{
    (void)state;
    struct backoff b;
    backoff_init(&b, 100, 1000, 3);
    assert_int_equal(backoff_next(&b, 5000), 5000); /* more than the draw, and the cap */
    /* Less than the draw: the draw stands. */
    backoff_init(&b, 1000, 8000, 3);
    unsigned w = backoff_next(&b, 10);
    assert_true(w >= 500 && w <= 1000);
    /* A Retry-After counts as a failure: the next draw is the second's. */
    backoff_init(&b, 1000, 1u << 20, 3);
    backoff_next(&b, 1);
    w = backoff_next(&b, 0);
    assert_true(w >= 1000 && w <= 2000);
}

static void test_reset(void **state)
{
    (void)state;
    struct backoff b;
    backoff_init(&b, 100, 100000, 9);
    for (int i = 0; i < 20; i++)
        backoff_next(&b, 0);
    backoff_reset(&b);
    unsigned w = backoff_next(&b, 0);
    assert_true(w >= 50 && w <= 100);
}

static void test_seeds_differ(void **state)
{
    (void)state;
    /* Two hosts (seeds one apart, like two pids) failing together must not retry together. */
    struct backoff a, b;
    backoff_init(&a, 1000, 60000, 1234);
    backoff_init(&b, 1000, 60000, 1235);
    int same = 0;
    for (int i = 0; i < 50; i++)
        same += backoff_next(&a, 0) == backoff_next(&b, 0);
    assert_true(same < 5);
    /* The same seed draws the same waits: a test can replay them. */
    backoff_init(&a, 1000, 60000, 42);
    backoff_init(&b, 1000, 60000, 42);
    for (int i = 0; i < 50; i++)
        assert_int_equal(backoff_next(&a, 0), backoff_next(&b, 0));
    /* Seed 0 is a valid seed (xorshift's state must not be 0). */
    backoff_init(&a, 1000, 60000, 0);
    unsigned first = backoff_next(&a, 0);
    int varied = 0;
    for (int i = 0; i < 20; i++)
        varied += backoff_next(&a, 0) != 60000;
    assert_true(first >= 500 && first <= 1000);
    assert_true(varied > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_of_every_draw), cmocka_unit_test(test_cap_holds_after_many_failures),
        cmocka_unit_test(test_grows_exponentially),  cmocka_unit_test(test_retry_after_wins),
        cmocka_unit_test(test_reset),                cmocka_unit_test(test_seeds_differ),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
