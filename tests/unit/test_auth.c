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

static void test_first_line_trailing_blanks_stripped(void **state)
{
    (void)state;
    PUT("s3cret \t\r\nsecond line\n");
    struct auth a = {0};
    char err[200];
    assert_int_equal(auth_load(&a, path, err, sizeof err), 0);
    assert_int_equal(a.len, 6);
    assert_memory_equal(a.token, "s3cret", 6);
    for (size_t i = 6; i < AUTH_TOKEN_MAX; i++)
        assert_int_equal(a.token[i], 0);
    assert_true(auth_enabled(&a));
}

static void test_load_errors(void **state)
{
    (void)state;
    struct auth a = {0};
    char err[300];
    PUT("\n");
    assert_int_equal(auth_load(&a, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "empty"));
    PUT(" \t\r\nlater lines do not count\n");
    assert_int_equal(auth_load(&a, path, err, sizeof err), -1);
    char big[AUTH_TOKEN_MAX + 2];
    memset(big, 'x', sizeof big);
    put_file(big, AUTH_TOKEN_MAX + 1);
    assert_int_equal(auth_load(&a, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "longer than 256 bytes"));
    assert_false(auth_enabled(&a));
    /* Exactly the longest, with its newline. */
    big[AUTH_TOKEN_MAX] = '\n';
    put_file(big, AUTH_TOKEN_MAX + 1);
    assert_int_equal(auth_load(&a, path, err, sizeof err), 0);
    assert_int_equal(a.len, AUTH_TOKEN_MAX);
    assert_int_equal(auth_load(&a, "/nonexistent/token", err, sizeof err), -1);
    assert_non_null(strstr(err, "--token-file /nonexistent/token: "));
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
        assert_int_equal(auth_load(&a, path, err, sizeof err), 0);
        assert_int_equal(a.len, AUTH_TOKEN_MAX);
    }
    struct auth a = {0};
    memcpy(text + AUTH_TOKEN_MAX + 1, "\r\n", 2); /* one byte more */
    memset(text + AUTH_TOKEN_MAX, 'x', 1);
    put_file(text, AUTH_TOKEN_MAX + 3);
    assert_int_equal(auth_load(&a, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "longer than 256 bytes"));
    /* Blanks past the read, then more of the line: not a token of AUTH_TOKEN_MAX bytes. */
    memset(text + AUTH_TOKEN_MAX, ' ', 100);
    memcpy(text + AUTH_TOKEN_MAX + 100, "yy\n", 3);
    put_file(text, AUTH_TOKEN_MAX + 103);
    assert_int_equal(auth_load(&a, path, err, sizeof err), -1);
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
    assert_int_equal(auth_load(&a, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "starts with a space or tab"));
    PUT("\ttok\n");
    assert_int_equal(auth_load(&a, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "starts with a space or tab"));
    PUT("to\x01k\n");
    assert_int_equal(auth_load(&a, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "control character"));
    put_file("to\0k\n", 5);
    assert_int_equal(auth_load(&a, path, err, sizeof err), -1);
    assert_false(auth_enabled(&a));
    /* Inside the token, a space or tab is a byte like another (it can be sent). */
    PUT("to k\tx\n");
    assert_int_equal(auth_load(&a, path, err, sizeof err), 0);
    assert_int_equal(CHECK(&a, "Bearer to k\tx"), 1);
}

static void test_check(void **state)
{
    (void)state;
    PUT("tok-123\n");
    struct auth a = {0};
    char err[200];
    assert_int_equal(CHECK(&a, "Bearer tok-123"), 0); /* nothing loaded: nothing passes */
    assert_int_equal(auth_load(&a, path, err, sizeof err), 0);
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
}

static void test_reload_keeps_the_old_token_on_error(void **state)
{
    (void)state;
    PUT("first\n");
    struct auth a = {0};
    char err[200];
    assert_int_equal(auth_load(&a, path, err, sizeof err), 0);
    PUT("\n");
    auth_reload(&a, path, "test");
    assert_int_equal(CHECK(&a, "Bearer first"), 1);
    PUT(" second\n");
    auth_reload(&a, path, "test");
    assert_int_equal(CHECK(&a, "Bearer first"), 1);
    unlink(path);
    auth_reload(&a, path, "test");
    assert_int_equal(CHECK(&a, "Bearer first"), 1);
    PUT("second\n");
    auth_reload(&a, path, "test");
    assert_int_equal(CHECK(&a, "Bearer first"), 0);
    assert_int_equal(CHECK(&a, "Bearer second"), 1);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
