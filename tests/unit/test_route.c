/* test_route.c -- the routing table: which target is which route, which methods each
 * serves, which need the token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "route.h"
#include "testutil.h"

/* The route of s, looked up in an exact-size copy (ASan catches a read past the span). */
static const struct route *find(const char *s, size_t n)
{
    char *p = tu_exact(s, n);
    const struct route *r = route_find(p, n);
    free(p);
    return r;
}

#define FIND(s) find(s, sizeof s - 1)

static void test_paths(void **state)
{
    (void)state;
    assert_int_equal(FIND("/")->id, ROUTE_INGEST);
    assert_int_equal(FIND("/?day=1")->id, ROUTE_INGEST);
    assert_int_equal(FIND("/#frag")->id, ROUTE_INGEST);
    assert_int_equal(FIND("/healthz")->id, ROUTE_HEALTH);
    assert_int_equal(FIND("/healthz?verbose")->id, ROUTE_HEALTH);
    assert_int_equal(FIND("/metrics")->id, ROUTE_METRICS);
    assert_int_equal(FIND("/metrics#x?y")->id, ROUTE_METRICS);
    assert_int_equal(FIND("/v0/events?name=trips&wait=true")->id, ROUTE_EVENTS);
    assert_null(FIND("/v0/events/"));
    assert_null(FIND("/v0/event"));
    static const char *const unknown[] = {
        "", "?", "//", "/healthz/", "/healthzz", "/HEALTHZ", "/metric", "metrics", "/metrics/",
        "*", "http://host/", "/%68ealthz",
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        if (find(unknown[i], strlen(unknown[i])))
            fail_msg("'%s' should be 404", unknown[i]);
    /* The span, not a C string: what follows it does not count, a NUL inside does. */
    assert_int_equal(find("/healthz", 1)->id, ROUTE_INGEST);
    assert_null(find("/\0", 2));
    assert_null(find("/healthz\0", 9));
}

static void test_methods(void **state)
{
    (void)state;
    const struct route *ingest = FIND("/"), *health = FIND("/healthz"), *metrics = FIND("/metrics");
    assert_true(route_allows(ingest, ROUTE_POST));
    assert_false(route_allows(ingest, ROUTE_GET));
    assert_false(route_allows(ingest, ROUTE_HEAD));
    assert_false(route_allows(ingest, 0)); /* PUT, DELETE, ... */
    assert_string_equal(ingest->allow, "Allow: POST\r\n");
    for (const struct route *r = health; r; r = r == health ? metrics : NULL) {
        assert_true(route_allows(r, ROUTE_GET));
        assert_true(route_allows(r, ROUTE_HEAD));
        assert_false(route_allows(r, ROUTE_POST));
        assert_false(route_allows(r, 0));
        assert_false(route_allows(r, ROUTE_GET | ROUTE_POST));
        assert_string_equal(r->allow, "Allow: GET, HEAD\r\n");
    }
}

static void test_token(void **state)
{
    (void)state;
    assert_true(FIND("/")->needs_token);
    assert_true(FIND("/metrics")->needs_token);
    assert_false(FIND("/healthz")->needs_token);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
