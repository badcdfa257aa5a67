/* test_access_log.c -- the --access-log line: its fields, the escaping of a path's bytes,
 * the truncation marker, a line that cannot overflow; and the reopen on SIGHUP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <sys/stat.h>
#include <unistd.h>

#include "access_log.h"

#define TS "2026-01-31T23:59:59.123Z"

static const char *format(const struct access_log_entry *e)
{
    static char line[ACCESS_LOG_LINE_MAX + 1];
    memset(line, 'Z', sizeof line);
    size_t n = access_log_format(line, TS, e);
    assert_true(n > 0 && n <= ACCESS_LOG_LINE_MAX);
    assert_int_equal(line[n - 1], '\n');
    assert_int_equal(line[ACCESS_LOG_LINE_MAX], 'Z'); /* nothing written past the line */
    line[n] = '\0';
    return line;
}

static void test_fields(void **state)
{
    (void)state;
    const struct access_log_entry e = {
        .peer = "127.0.0.1:5555", .method = "POST", .path = "/?x=1", .path_len = 5,
        .status = 200, .body_bytes = 1234, .valid = 10, .invalid = 2, .ns = 12345678,
    };
    assert_string_equal(format(&e), TS " 127.0.0.1:5555 POST /?x=1 200 1234 10 2 12.345\n");
}

static void test_no_response_no_path(void **state)
{
    (void)state;
    const struct access_log_entry e = {.peer = "-", .method = "-", .path = "", .ns = 999};
    assert_string_equal(format(&e), TS " - - - 0 0 0 0 0.000\n");
}

/* One line per request whatever the client sent: no blank, quote or control byte from the
 * path reaches the file, nor a byte that is not ASCII. */
static void test_path_escaped(void **state)
{
    (void)state;
    static const char path[] = "/a b\"c\td\n\x01\x7f\xc3\xa9/";
    const struct access_log_entry e = {.peer = "-", .method = "GET", .path = path,
                                       .path_len = sizeof path - 1, .status = 404};
    assert_string_equal(format(&e), TS " - GET /a?b?c?d????" "?/ 404 0 0 0 0.000\n");
    /* A NUL inside is a byte like the others. */
    const struct access_log_entry z = {.peer = "-", .method = "GET", .path = "/\0x", .path_len = 3,
                                       .status = 404};
    assert_string_equal(format(&z), TS " - GET /?x 404 0 0 0 0.000\n");
}

static void test_truncation_marker(void **state)
{
    (void)state;
    /* The request's path was cut before it reached the log (the 64-byte URL buffer). */
    const struct access_log_entry e = {.peer = "-", .method = "GET", .path = "/abc", .path_len = 4,
                                       .truncated = 1, .status = 404};
    assert_string_equal(format(&e), TS " - GET /abc... 404 0 0 0 0.000\n");
    /* A path longer than a line shows: its first ACCESS_LOG_PATH_MAX bytes, then "...". */
    char path[200], want[400];
    memset(path, 'p', sizeof path);
    path[0] = '/';
    const struct access_log_entry l = {.peer = "-", .method = "GET", .path = path,
                                       .path_len = sizeof path, .status = 404};
    snprintf(want, sizeof want, TS " - GET %.*s... 404 0 0 0 0.000\n", ACCESS_LOG_PATH_MAX, path);
    assert_string_equal(format(&l), want);
}

/* The widest fields still give one line, cut if need be, ending in a newline. */
static void test_widest_line(void **state)
{
    (void)state;
    char peer[64], path[200];
    memset(peer, '9', sizeof peer - 1);
    peer[sizeof peer - 1] = '\0';
    memset(path, 'p', sizeof path);
    const struct access_log_entry e = {
        .peer = peer, .method = "PROPPATCH", .path = path, .path_len = sizeof path,
        .truncated = 1, .status = 503, .body_bytes = UINT64_MAX, .valid = UINT64_MAX,
        .invalid = UINT64_MAX, .ns = UINT64_MAX,
    };
    const char *line = format(&e);
    assert_non_null(strstr(line, "... 503 18446744073709551615 "));
    assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
}

/* SIGHUP after a rename: the same descriptor now appends to a new file at the old path. */
static void test_reopen(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_access_log.XXXXXX", path[64], moved[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/access.log", dir);
    snprintf(moved, sizeof moved, "%s/access.log.1", dir);
    struct access_log l;
    char err[200];
    assert_int_equal(access_log_open(&l, path, "test", err, sizeof err), 0);
    assert_true(access_log_enabled(&l));
    int fd = l.fd;
    const struct access_log_entry e = {.peer = "-", .method = "GET", .path = "/healthz",
                                       .path_len = 8, .status = 200};
    access_log_write(&l, &e);
    assert_int_equal(rename(path, moved), 0);
    access_log_reopen(&l);
    assert_int_equal(l.fd, fd);
    access_log_write(&l, &e);
    access_log_write(&l, &e);
    struct stat a, b;
    assert_int_equal(stat(moved, &a), 0);
    assert_int_equal(stat(path, &b), 0);
    assert_true(a.st_size > 0);
    assert_int_equal(b.st_size, 2 * a.st_size);
    access_log_close(&l);
    assert_false(access_log_enabled(&l));
    unlink(path);
    unlink(moved);
    rmdir(dir);

    assert_int_equal(access_log_open(&l, NULL, "test", err, sizeof err), 0);
    assert_false(access_log_enabled(&l));
    assert_int_equal(access_log_open(&l, "/nonexistent/a.log", "test", err, sizeof err), -1);
    assert_non_null(strstr(err, "--access-log /nonexistent/a.log: "));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_no_response_no_path),
        cmocka_unit_test(test_path_escaped),
        cmocka_unit_test(test_truncation_marker),
        cmocka_unit_test(test_widest_line),
        cmocka_unit_test(test_reopen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
