/* test_cursor.c -- the delivery cursor: round trip, a crash after every step, malformed files, a stale PATH.tmp. */
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

#include "delivery/cursor.h"
#include "testutil.h"

static char dir[64], path[128], tmp[160];

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/test_cursor.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/trips.cursor", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cursor_crash_after(0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cursor_crash_after(0);
    unlink(path);
    unlink(tmp);
    rmdir(dir);
    return 0;
}

static void put(const char *p, const char *text)
{
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void assert_file(const char *p, const char *want)
{
    size_t n;
    char *got = tu_slurp(p, &n);
    if (n != strlen(want) || memcmp(got, want, n))
        fail_msg("%s holds \"%.*s\", want \"%s\"", p, (int)n, got, want);
    free(got);
}

static void assert_same(const struct cursor *a, const struct cursor *b)
{
    assert_string_equal(a->file, b->file);
    assert_true(a->offset == b->offset);
    assert_int_equal(a->in_flight, b->in_flight);
    assert_true(a->batch_start == b->batch_start);
    assert_true(a->batch_end == b->batch_end);
}

static const struct cursor old_c = {.file = "trips-2026-12-07.csv", .offset = 1048576,
                                    .in_flight = 1, .batch_start = 1048576,
                                    .batch_end = 9437184};
static const char old_text[] = "ndingest-cursor 1\nfile trips-2026-12-07.csv\noffset 1048576\n"
                               "batch 1048576 9437184\n";
static const struct cursor new_c = {.file = "trips-2026-12-07.csv", .offset = 9437184};
static const char new_text[] = "ndingest-cursor 1\nfile trips-2026-12-07.csv\noffset 9437184\n";

static void test_round_trip(void **state)
{
    (void)state;
    struct cursor c;
    char err[512] = "";
    /* missing: a fresh cursor */
    memset(&c, 0x55, sizeof c);
    assert_int_equal(cursor_load(path, &c, err, sizeof err), 0);
    struct cursor zero;
    memset(&zero, 0, sizeof zero);
    assert_same(&c, &zero);

    assert_int_equal(cursor_store(path, &old_c, err, sizeof err), 0);
    assert_file(path, old_text); /* the format doc/delivery.md shows */
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(cursor_load(path, &c, err, sizeof err), 0);
    assert_same(&c, &old_c);

    assert_int_equal(cursor_store(path, &new_c, err, sizeof err), 0);
    assert_file(path, new_text);
    assert_int_equal(cursor_load(path, &c, err, sizeof err), 0);
    assert_same(&c, &new_c);

    struct cursor big = {.file = "", .offset = UINT64_MAX - 1, .in_flight = 1,
                         .batch_start = UINT64_MAX - 1, .batch_end = UINT64_MAX};
    assert_int_equal(cursor_store(path, &big, err, sizeof err), 0);
    assert_int_equal(cursor_load(path, &c, err, sizeof err), 0);
    assert_same(&c, &big);

    struct cursor bad = new_c;
    bad.in_flight = 1; /* a batch must start at offset */
    bad.batch_start = 5;
    bad.batch_end = 9;
    assert_int_equal(cursor_store(path, &bad, err, sizeof err), -1);
    strcpy(bad.file, "a/b");
    bad.in_flight = 0;
    assert_int_equal(cursor_store(path, &bad, err, sizeof err), -1);
    assert_int_equal(cursor_load(path, &c, err, sizeof err), 0);
    assert_same(&c, &big); /* untouched */
}

static void test_crash_after_every_step(void **state)
{
    (void)state;
    char err[512] = "";
    for (int step = 1; step <= 4; step++) {
        unlink(tmp);
        cursor_crash_after(0);
        assert_int_equal(cursor_store(path, &old_c, err, sizeof err), 0);
        cursor_crash_after(step);
        assert_int_equal(cursor_store(path, &new_c, err, sizeof err), -1);
        cursor_crash_after(0);
        /* the old cursor before the rename, the new one after, each whole */
        struct cursor c;
        assert_int_equal(cursor_load(path, &c, err, sizeof err), 0);
        if (step < 3) {
            assert_same(&c, &old_c);
            assert_file(path, old_text);
            assert_file(tmp, new_text); /* the stale temporary a crash leaves */
        } else {
            assert_same(&c, &new_c);
            assert_file(path, new_text);
            assert_int_equal(access(tmp, F_OK), -1);
        }
        /* the next store, as after a restart, goes through */
        assert_int_equal(cursor_store(path, &old_c, err, sizeof err), 0);
        assert_file(path, old_text);
        assert_int_equal(cursor_load(path, &c, err, sizeof err), 0);
        assert_same(&c, &old_c);
    }
}

static void test_stale_tmp_ignored_and_overwritten(void **state)
{
    (void)state;
    char err[512] = "";
    assert_int_equal(cursor_store(path, &new_c, err, sizeof err), 0);
    /* longer than what will be written over it: O_TRUNC must cut it */
    put(tmp, "ndingest-cursor 1\nfile zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.csv\noffset 1\n"
             "batch 1 2\ngarbage garbage garbage\n");
    struct cursor c;
    assert_int_equal(cursor_load(path, &c, err, sizeof err), 0);
    assert_same(&c, &new_c);
    assert_int_equal(cursor_store(path, &old_c, err, sizeof err), 0);
    assert_file(path, old_text);
    assert_int_equal(access(tmp, F_OK), -1);
}

static void refused(const char *text, int line, const char *what)
{
    put(path, text);
    struct cursor c;
    char err[512] = "";
    memset(&c, 0x55, sizeof c);
    assert_int_equal(cursor_load(path, &c, err, sizeof err), -1);
    char want[300];
    snprintf(want, sizeof want, "%s:%d: ", path, line);
    if (strncmp(err, want, strlen(want)) || !strstr(err, what))
        fail_msg("\"%s\": got \"%s\", want \"%s...%s\"", text, err, want, what);
    struct cursor zero;
    memset(&zero, 0, sizeof zero);
    assert_same(&c, &zero);
}

static void test_malformed_refused(void **state)
{
    (void)state;
    refused("", 1, "not a cursor");
    refused("ndingest-cursor 2\nfile a.csv\noffset 1\n", 1, "not a cursor");
    refused("hello\n", 1, "not a cursor");
    refused("ndingest-cursor 1\n", 2, "file NAME");
    refused("ndingest-cursor 1\nfile a.csv\n", 3, "offset N");
    refused("ndingest-cursor 1\nfile a.csv\noffset 1", 3, "no line feed");
    refused("ndingest-cursor 1\nfiles a.csv\noffset 1\n", 2, "file NAME");
    refused("ndingest-cursor 1\nfile ../a.csv\noffset 1\n", 2, "base name");
    refused("ndingest-cursor 1\nfile a.csv\noffset -1\n", 3, "offset N");
    refused("ndingest-cursor 1\nfile a.csv\noffset 1x\n", 3, "offset N");
    refused("ndingest-cursor 1\nfile a.csv\noffset  1\n", 3, "offset N");
    refused("ndingest-cursor 1\nfile a.csv\noffset 18446744073709551616\n", 3, "offset N");
    refused("ndingest-cursor 1\nfile a.csv\noffset 5\nbatch 5\n", 4, "batch START END");
    refused("ndingest-cursor 1\nfile a.csv\noffset 5\nbatch 4 9\n", 4, "[offset, END)");
    refused("ndingest-cursor 1\nfile a.csv\noffset 5\nbatch 5 5\n", 4, "[offset, END)");
    refused("ndingest-cursor 1\nfile a.csv\noffset 5\nbatch 5 9\nmore\n", 5, "unexpected");
    refused("ndingest-cursor 1\noffset 5\nfile a.csv\n", 2, "file NAME");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_after_every_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_tmp_ignored_and_overwritten, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
