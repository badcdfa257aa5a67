/* test_auth.c -- --token-file: what is read as the token, what Authorization value passes,
 * and that a failed reload keeps the previous token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <unistd.h>

#include "auth.h"

static char path[64];

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/test_auth.XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

static void put_file(const char *text, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

#define PUT(s) put_file(s, sizeof s - 1)
#define CHECK(a, s) auth_check(a, s, sizeof s - 1)
#define CHECK_ARGS(s) s, sizeof s - 1

static void test_first_line_trailing_blanks_stripped(void **state)
{
    (void)state;
    PUT("s3cret \t\r\nsecond line\n");
    struct auth a = {0};
    char err[200];
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), 0);
    assert_int_equal(a.tokens[0].len, 6);
    assert_memory_equal(a.tokens[0].token, "s3cret", 6);
    for (size_t i = 6; i < AUTH_TOKEN_MAX; i++)
        assert_int_equal(a.tokens[0].token[i], 0);
    assert_true(auth_enabled(&a));
    auth_free(&a);
}

static void test_load_errors(void **state)
{
    (void)state;
    struct auth a = {0};
    char err[300];
    PUT("\n");
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), -1);
    assert_non_null(strstr(err, "empty"));
    PUT(" \t\r\nlater lines do not count\n");
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), -1);
    char big[AUTH_TOKEN_MAX + 2];
    memset(big, 'x', sizeof big);
    put_file(big, AUTH_TOKEN_MAX + 1);
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), -1);
    assert_non_null(strstr(err, "longer than 256 bytes"));
    assert_false(auth_enabled(&a));
    /* Exactly the longest, with its newline. */
    big[AUTH_TOKEN_MAX] = '\n';
    put_file(big, AUTH_TOKEN_MAX + 1);
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), 0);
    assert_int_equal(a.tokens[0].len, AUTH_TOKEN_MAX);
    assert_int_equal(auth_load(&a, "/nonexistent/token", 0, 64, err, sizeof err), -1);
    assert_non_null(strstr(err, "--token-file /nonexistent/token: "));
    auth_free(&a);
}

/* The longest token still loads when its line ends in CRLF or blanks: they are stripped
 * before the length is judged. A line too long to read whole is refused, not cut. */
static void test_longest_token_with_trailing_blanks(void **state)
{
    (void)state;
    char err[300], text[AUTH_TOKEN_MAX + 128];
    memset(text, 'x', sizeof text);
    static const char *const ends[] = {"\r\n", " \t\r\n", "\r", "  "};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        struct auth a = {0};
        size_t n = strlen(ends[i]);
        memcpy(text + AUTH_TOKEN_MAX, ends[i], n);
        put_file(text, AUTH_TOKEN_MAX + n);
        print_message("the longest token, then ending %zu\n", i);
        assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), 0);
        assert_int_equal(a.tokens[0].len, AUTH_TOKEN_MAX);
        auth_free(&a);
    }
    struct auth a = {0};
    memcpy(text + AUTH_TOKEN_MAX + 1, "\r\n", 2); /* one byte more */
    memset(text + AUTH_TOKEN_MAX, 'x', 1);
    put_file(text, AUTH_TOKEN_MAX + 3);
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), -1);
    assert_non_null(strstr(err, "longer than 256 bytes"));
    /* Blanks past the read, then more of the line: not a token of AUTH_TOKEN_MAX bytes. */
    memset(text + AUTH_TOKEN_MAX, ' ', 100);
    memcpy(text + AUTH_TOKEN_MAX + 100, "yy\n", 3);
    put_file(text, AUTH_TOKEN_MAX + 103);
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), -1);
    assert_false(auth_enabled(&a));
}

/* Issue #9: the server strips blanks after "Bearer ", and a header value cannot carry a
 * control character, so such a token could never match: every request would get 401. */
static void test_load_refuses_a_token_that_cannot_match(void **state)
{
    (void)state;
    struct auth a = {0};
    char err[300];
    PUT(" tok\n");
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), -1);
    assert_non_null(strstr(err, "starts with a space or tab"));
    PUT("\ttok\n");
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), -1);
    assert_non_null(strstr(err, "starts with a space or tab"));
    PUT("to\x01k\n");
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), -1);
    assert_non_null(strstr(err, "control character"));
    put_file("to\0k\n", 5);
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), -1);
    assert_false(auth_enabled(&a));
    /* Inside the token, a space or tab is a byte like another (it can be sent). */
    PUT("to k\tx\n");
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), 0);
    assert_int_equal(CHECK(&a, "Bearer to k\tx"), 1);
    auth_free(&a);
}

static void test_check(void **state)
{
    (void)state;
    PUT("tok-123\n");
    struct auth a = {0};
    char err[200];
    assert_int_equal(CHECK(&a, "Bearer tok-123"), 0); /* nothing loaded: nothing passes */
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), 0);
    assert_int_equal(CHECK(&a, "Bearer tok-123"), 1);
    assert_int_equal(CHECK(&a, "bEARER tok-123"), 1);
    assert_int_equal(CHECK(&a, "Bearer \t tok-123 \t"), 1);
    assert_int_equal(CHECK(&a, "Bearer tok-12"), 0);
    assert_int_equal(CHECK(&a, "Bearer tok-1234"), 0);
    assert_int_equal(CHECK(&a, "Bearer tok-124"), 0);
    assert_int_equal(CHECK(&a, "Bearer TOK-123"), 0);
    assert_int_equal(CHECK(&a, "Basic tok-123"), 0);
    assert_int_equal(CHECK(&a, "Bearertok-123"), 0);
    assert_int_equal(CHECK(&a, "tok-123"), 0);
    assert_int_equal(CHECK(&a, "Bearer "), 0);
    assert_int_equal(CHECK(&a, ""), 0);
    /* A NUL inside the value is a byte like any other, not an end. */
    assert_int_equal(CHECK(&a, "Bearer tok-123\0"), 0);
    char longer[AUTH_TOKEN_MAX + 16];
    memcpy(longer, "Bearer ", 7);
    memset(longer + 7, 'x', sizeof longer - 7);
    assert_int_equal(auth_check(&a, longer, sizeof longer), 0);
    auth_free(&a);
}

static void test_reload_keeps_the_old_token_on_error(void **state)
{
    (void)state;
    PUT("first\n");
    struct auth a = {0};
    char err[200];
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), 0);
    PUT("\n");
    auth_reload(&a, path, 0, 64, "test");
    assert_int_equal(CHECK(&a, "Bearer first"), 1);
    PUT(" second\n");
    auth_reload(&a, path, 0, 64, "test");
    assert_int_equal(CHECK(&a, "Bearer first"), 1);
    unlink(path);
    auth_reload(&a, path, 0, 64, "test");
    assert_int_equal(CHECK(&a, "Bearer first"), 1);
    PUT("second\n");
    auth_reload(&a, path, 0, 64, "test");
    assert_int_equal(CHECK(&a, "Bearer first"), 0);
    assert_int_equal(CHECK(&a, "Bearer second"), 1);
    auth_free(&a);
}

/* --datasets: every line a token and the datasets it may append to. */
static void test_scoped_lines(void **state)
{
    (void)state;
    PUT("# ops\n\nall-tok\r\ntrips-tok trips\n  \nboth-tok trips,zones \t\n");
    struct auth a = {0};
    char err[300];
    assert_int_equal(auth_load(&a, path, 1, 64, err, sizeof err), 0);
    assert_int_equal(a.count, 3);
    int all = auth_match(&a, CHECK_ARGS("Bearer all-tok"));
    int trips = auth_match(&a, CHECK_ARGS("Bearer trips-tok"));
    int both = auth_match(&a, CHECK_ARGS("bearer  both-tok "));
    assert_int_equal(all, 0);
    assert_int_equal(trips, 1);
    assert_int_equal(both, 2);
    assert_int_equal(auth_match(&a, CHECK_ARGS("Bearer trips-tok trips")), -1);
    assert_int_equal(auth_match(&a, CHECK_ARGS("Bearer trips")), -1);
    assert_int_equal(auth_match(&a, CHECK_ARGS("Bearer both-to")), -1);
    assert_true(auth_allows(&a, all, "anything", 8));
    assert_true(auth_allows(&a, trips, "trips", 5));
    assert_false(auth_allows(&a, trips, "zones", 5));
    assert_false(auth_allows(&a, trips, "trip", 4));
    assert_false(auth_allows(&a, trips, "tripsx", 6));
    assert_true(auth_allows(&a, both, "zones", 5));
    assert_true(auth_allows(&a, both, "trips", 5));
    assert_false(auth_allows(&a, both, "trips,zones", 11));
    assert_false(auth_allows(&a, -1, "trips", 5));
    assert_false(auth_allows(&a, 3, "trips", 5));
    /* Without --datasets the same file is today's: its first line is the one token. */
    PUT("first tok with spaces\nsecond trips\n");
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), 0);
    assert_int_equal(a.count, 1);
    assert_int_equal(CHECK(&a, "Bearer first tok with spaces"), 1);
    assert_int_equal(CHECK(&a, "Bearer second"), 0);
    assert_true(auth_allows(&a, 0, "x", 1));
    auth_free(&a);
    assert_false(auth_enabled(&a));
}

/* --max-tokens N: N tokens load, N + 1 do not; every token is checked, whichever matches:
 * the last of N as the first. The default's edge, 1 and a larger N. */
static void test_scoped_limits_and_errors(void **state)
{
    (void)state;
    struct auth a = {0};
    char err[4400];
    static const size_t maxes[] = {64, 1, 3, 1000};
    for (size_t m = 0; m < sizeof maxes / sizeof *maxes; m++) {
        size_t max = maxes[m];
        char text[1001 * 24];
        size_t n = 0;
        for (size_t i = 0; i < max; i++)
            n += (size_t)snprintf(text + n, sizeof text - n, "tok%zu d%zu\n", i, i);
        put_file(text, n);
        assert_int_equal(auth_load(&a, path, 1, max, err, sizeof err), 0);
        assert_int_equal(a.count, max);
        char last[32];
        int ln = snprintf(last, sizeof last, "Bearer tok%zu", max - 1);
        assert_int_equal(auth_match(&a, last, (size_t)ln), (int)max - 1);
        n += (size_t)snprintf(text + n, sizeof text - n, "# a comment\n\none-more\n");
        put_file(text, n);
        assert_int_equal(auth_load(&a, path, 1, max, err, sizeof err), -1);
        char want[64];
        snprintf(want, sizeof want, ":%zu: more than %zu tokens (--max-tokens)", max + 3, max);
        if (!strstr(err, want))
            fail_msg("%s: not %s", err, want);
        assert_int_equal(a.count, max); /* unchanged */
        assert_int_equal(auth_load(&a, path, 1, max + 1, err, sizeof err), 0);
        assert_int_equal(a.count, max + 1);
        auth_free(&a);
    }
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"a x\na y\n", ":2: the same token again"},
        {"a x,\n", ":1: after the token, a list"},
        {"a x, y\n", ":1: after the token, a list"},
        {"a x;y\n", ":1: after the token, a list"},
        {"a\n tok\n", ":2: the token starts with a space or tab"},
        {"a\nto\x01k\n", ":2: the token holds a control character"},
        {"# only a comment\n\n", "no token"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        print_message("bad file %zu\n", i);
        put_file(bad[i].text, strlen(bad[i].text));
        assert_int_equal(auth_load(&a, path, 1, 64, err, sizeof err), -1);
        assert_non_null(strstr(err, bad[i].msg));
    }
    /* The file's size follows --max-tokens: N x AUTH_FILE_PER_TOKEN bytes load, one more not. */
    for (size_t max = 1; max <= 64; max *= 8) {
        size_t most = max * AUTH_FILE_PER_TOKEN;
        char *big = malloc(most + 1);
        assert_non_null(big);
        memset(big, '\n', most + 1);
        memcpy(big, "tok\n", 4);
        put_file(big, most); /* exactly the most: loads */
        assert_int_equal(auth_load(&a, path, 1, max, err, sizeof err), 0);
        assert_int_equal(a.count, 1);
        put_file(big, most + 1);
        assert_int_equal(auth_load(&a, path, 1, max, err, sizeof err), -1);
        char want[80];
        snprintf(want, sizeof want, "larger than %zu bytes (--max-tokens %zu x 4096)", most, max);
        assert_non_null(strstr(err, want));
        free(big);
    }
    auth_free(&a);
}

/* A reload to a bad scoped file keeps every previous token and its datasets. */
static void test_scoped_reload_keeps_the_old_set(void **state)
{
    (void)state;
    PUT("t1 a\nt2\n");
    struct auth a = {0};
    char err[300];
    assert_int_equal(auth_load(&a, path, 1, 64, err, sizeof err), 0);
    PUT("t3 b\nt3 c\n");
    auth_reload(&a, path, 1, 64, "test");
    assert_int_equal(auth_match(&a, CHECK_ARGS("Bearer t1")), 0);
    assert_true(auth_allows(&a, 0, "a", 1));
    assert_int_equal(auth_match(&a, CHECK_ARGS("Bearer t3")), -1);
    PUT("t3 b\n");
    auth_reload(&a, path, 1, 64, "test");
    assert_int_equal(auth_match(&a, CHECK_ARGS("Bearer t1")), -1);
    assert_int_equal(auth_match(&a, CHECK_ARGS("Bearer t3")), 0);
    assert_false(auth_allows(&a, 0, "a", 1));
    auth_free(&a);
}

#define BOM "\xEF\xBB\xBF"

/* Issue #15: a file saved by a Windows editor starts with a UTF-8 byte order mark. A client
 * sends the token without it, so the first token would get 401 forever: the load is refused,
 * saying so, in both formats (on the first line, a comment's or a token's, and on any later
 * line), and a reload to such a file keeps the previous tokens. */
static void test_bom_refused(void **state)
{
    (void)state;
    struct auth a = {0};
    char err[300];
    static const struct {
        const char *text;
        int scoped;
        const char *where;
    } bad[] = {
        {BOM "s3cret\n", 0, ": the token starts with a UTF-8 byte order mark"},
        {BOM "s3cret", 0, ": the token starts with a UTF-8 byte order mark"},
        {BOM "tok1 trips\ntok2\n", 1, ":1: the token starts with a UTF-8 byte order mark"},
        {BOM "# tokens\ntok1\n", 1, ":1: the token starts with a UTF-8 byte order mark"},
        {"tok1\n" BOM "tok2 a,b\n", 1, ":2: the token starts with a UTF-8 byte order mark"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        print_message("file %zu\n", i);
        put_file(bad[i].text, strlen(bad[i].text));
        assert_int_equal(auth_load(&a, path, bad[i].scoped, 64, err, sizeof err), -1);
        if (!strstr(err, bad[i].where) || !strstr(err, "save the file without it"))
            fail_msg("%s", err);
        assert_false(auth_enabled(&a));
    }
    /* The same bytes inside a token are bytes like others (a header may carry them). */
    PUT("s3" BOM "cret\n");
    assert_int_equal(auth_load(&a, path, 0, 64, err, sizeof err), 0);
    assert_int_equal(CHECK(&a, "Bearer s3" BOM "cret"), 1);
    /* SIGHUP to a file with a BOM keeps the previous token, in both formats. */
    PUT(BOM "other\n");
    auth_reload(&a, path, 0, 64, "test");
    assert_int_equal(CHECK(&a, "Bearer s3" BOM "cret"), 1);
    assert_int_equal(CHECK(&a, "Bearer other"), 0);
    PUT("t1 a\n");
    assert_int_equal(auth_load(&a, path, 1, 64, err, sizeof err), 0);
    PUT(BOM "t2 a\n");
    auth_reload(&a, path, 1, 64, "test");
    assert_int_equal(auth_match(&a, CHECK_ARGS("Bearer t1")), 0);
    assert_int_equal(auth_match(&a, CHECK_ARGS("Bearer t2")), -1);
    auth_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_line_trailing_blanks_stripped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_longest_token_with_trailing_blanks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refuses_a_token_that_cannot_match, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_keeps_the_old_token_on_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scoped_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scoped_limits_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scoped_reload_keeps_the_old_set, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bom_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
