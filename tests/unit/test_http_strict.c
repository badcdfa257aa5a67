/* test_http_strict.c -- strict request framing: where a stream stops being well framed and
 * with which status, the same whatever the piece boundaries and however far the caller
 * parsed between checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http_strict.h"

#define CL_HEAD "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
#define TE_HEAD "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"

struct framing_case {
    const char *wire;
    size_t tail; /* the refused byte and those after it; 0: all well framed */
    int status;
};

static const struct framing_case cases[] = {
    {CL_HEAD "\r\nabcde" CL_HEAD "\r\nfghij", 0, 0},
    {"\r\n" CL_HEAD "\r\nabcde", 0, 0},
    {"GET /healthz HTTP/1.0\r\n\r\nGET http://h/x?y HTTP/1.1\r\nhOsT: h\r\nA:\r\nB: \t v v \t\r\n\r\n", 0, 0},
    {TE_HEAD "5\r\nabcde\r\nA;x;y=z;q=\"a \\\" b\"\r\n0123456789\r\n0\r\nT: 1\r\n\r\n", 0, 0},
    {TE_HEAD "0\r\n\r\n" TE_HEAD "1\r\n\n\r\n0\r\n\r\n", 0, 0},
    {CL_HEAD "\rXabcde", 6, 400},
    {CL_HEAD "\nabcde", 6, 400},
    {TE_HEAD "5\r\nabcdeXX0\r\n\r\n", 7, 400},
    {TE_HEAD "5\r\nabcde\rX0\r\n\r\n", 6, 400},
    {TE_HEAD "5\r\nabcde\n\r0\r\n\r\n", 7, 400},
    {TE_HEAD "5\nabcde\r\n0\r\n\r\n", 13, 400},
    {TE_HEAD "5 \r\nabcde\r\n0\r\n\r\n", 15, 400},
    {TE_HEAD "5;\r\nabcde\r\n0\r\n\r\n", 14, 400},
    {TE_HEAD "g\r\n", 3, 400},
    {TE_HEAD "0\r\nT: 1\r\n\rX", 1, 400},
    {TE_HEAD "0\r\nT: 1\n\r\n", 3, 400},
    {TE_HEAD "1000000000000000\r\n", 3, 400}, /* 2^60 */
    {"POST / HTTP/1.1\r\n: v\r\n\r\n", 7, 400},
    {"POST / HTTP/1.1\r\nA : v\r\n\r\n", 8, 400},
    {"POST / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n", 11, 400},
    {"POST / HTTP/1.1\r\nA: \x01\r\n\r\n", 5, 400},
    {"POST /\r\n\r\n", 4, 400},
    {"POST / HTTP/1.1\n\r\n", 3, 400},
    {"POST / HTTP/1\r\n\r\n", 4, 400},
    {"POST  / HTTP/1.1\r\n\r\n", 15, 400},
    {"\r\n\r\nPOST / HTTP/1.1\r\n\r\n", 21, 400},
    {"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde", 6, 400},
    {"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nabcde", 6, 400},
    {"POST / HTTP/1.1\r\ncontent-length: 1 2\r\n\r\n", 1, 400},
    {"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 1, 400},
    {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 1, 400},
    {"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 1, 400},
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 1, 400},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 17, 501},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 13, 501},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: chunk\r\n\r\n", 4, 501},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: chun ked\r\n\r\n", 7, 501}, /* llhttp: not chunked */
    {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 34, 501},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 11, 501},
    {"GET / HTTP/1.1\r\nHostname: h\r\n\r\n", 1, 400},
    {"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n", 1, 400},
    {"GET / HTTP/1.0\r\nHost: h\r\nHost: i\r\n\r\n", 1, 400},
    {"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\t\r\n\r\n", 5, 400},
    {"GET / HTTP/1.1\r\nHost: h\r\nConnect: \t\r\nConnection: close \r\nContent-Lengthy: \t\r\n\r\n", 0, 0},
    /* Framing headers in a trailer say nothing about the framing. */
    {TE_HEAD "0\r\nContent-Length: 7\r\nTransfer-Encoding: gzip\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 0, 0},
};

/* Feeds the wire in pieces of `piece` bytes; the caller parses only `parse` bytes of each
 * check's result before the next (0: all of it). Returns how far it was found well framed. */
static size_t run(const char *wire, size_t n, size_t piece, size_t parse, struct http_strict *s)
{
    http_strict_init(s);
    size_t pos = 0;
    while (pos < n) {
        size_t len = n - pos < piece ? n - pos : piece;
        size_t ok = http_strict_check(s, wire + pos, len);
        if (ok < len) {
            pos += ok;
            break;
        }
        size_t took = parse && parse < ok ? parse : ok;
        http_strict_consumed(s, took);
        pos += took;
    }
    return pos;
}

static void test_cases_whole_and_in_pieces(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const struct framing_case *c = &cases[k];
        size_t n = strlen(c->wire);
        size_t want = n - c->tail;
        static const size_t pieces[] = {1, 2, 3, 7, 64, 100000};
        static const size_t parses[] = {0, 1, 5};
        for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
            for (size_t j = 0; j < sizeof parses / sizeof parses[0]; j++) {
                struct http_strict s;
                size_t got = run(c->wire, n, pieces[i], parses[j], &s);
                if (got != want || s.status != c->status)
                    fail_msg("case %zu (piece %zu, parse %zu): well framed to %zu, status %u (%s); "
                             "expected %zu, %d", k, pieces[i], parses[j], got, s.status,
                             s.error ? s.error : "-", want, c->status);
                assert_int_equal(s.error != NULL, c->status != 0);
            }
        }
    }
}

/* The caller stops short of a refused byte (a pipelined request paused the parser): the
 * same place is reported when it comes back, and only then. */
static void test_refusal_is_kept_until_reached(void **state)
{
    (void)state;
    static const char wire[] = CL_HEAD "\r\nabcde" TE_HEAD "1\r\nxYY";
    size_t n = sizeof wire - 1, bad = n - 2;
    struct http_strict s;
    http_strict_init(&s);
    assert_int_equal(http_strict_check(&s, wire, n), bad);
    http_strict_consumed(&s, 10);
    assert_int_equal(http_strict_check(&s, wire + 10, 5), 5);
    assert_int_equal(http_strict_check(&s, wire + 10, n - 10), bad - 10);
    assert_int_equal(s.status, 400);
}

static void test_path_of_targets(void **state)
{
    (void)state;
    static const struct {
        const char *target, *path;
    } t[] = {
        {"/", "/"}, {"/x?y", "/x?y"}, {"http://h/", "/"}, {"HTTP://h:80/m?q", "/m?q"},
        {"https://h", "/"}, {"http://h?q", "/"}, {"*", "*"}, {"h:443", "h:443"}, {"://x/", "://x/"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        size_t len;
        const char *p = http_strict_path(t[i].target, strlen(t[i].target), &len);
        assert_int_equal(len, strlen(t[i].path));
        assert_memory_equal(p, t[i].path, len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases_whole_and_in_pieces),
        cmocka_unit_test(test_refusal_is_kept_until_reached),
        cmocka_unit_test(test_path_of_targets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
