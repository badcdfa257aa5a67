/* test_voids.c -- the .void record: append and load, sorted, overlaps kept, a cut last line ignored, bad lines refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "voids.h"

static char dir[64], day[PATH_MAX], rec[PATH_MAX];

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/test_voids.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(day, sizeof day, "%s/trips-2026-12-07.csv", dir);
    snprintf(rec, sizeof rec, "%s/trips-2026-12-07.csv.void", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(rec);
    rmdir(dir);
    return 0;
}

static void put(const char *text)
{
    FILE *f = fopen(rec, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_round_trip(void **state)
{
    (void)state;
    assert_int_equal(voids_append(day, 100, 150, "torn", 1), 0);
    assert_int_equal(voids_append(day, 20, 31, "torn", 0), 0);
    assert_int_equal(voids_append(day, 100, 120, "torn", 0), 0); /* same start, shorter */
    assert_int_equal(voids_append(day, 18446744073709551614ULL, 18446744073709551615ULL,
                                  "torn", 0), 0);
    size_t n;
    char *text = tu_slurp(rec, &n);
    const char want[] = "100 150 torn\n20 31 torn\n100 120 torn\n"
                        "18446744073709551614 18446744073709551615 torn\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(text, want, n);
    free(text);
    struct stat st;
    assert_int_equal(stat(rec, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644 & ~umask(022));

    struct void_range *v;
    char err[256] = "";
    assert_int_equal(voids_load(day, &v, &n, err, sizeof err), 0);
    assert_int_equal(n, 4);
    /* sorted by start, then end; overlapping ranges kept as written */
    assert_int_equal(v[0].start, 20);
    assert_int_equal(v[0].end, 31);
    assert_int_equal(v[1].start, 100);
    assert_int_equal(v[1].end, 120);
    assert_int_equal(v[2].start, 100);
    assert_int_equal(v[2].end, 150);
    assert_true(v[3].end == UINT64_MAX);
    assert_string_equal(v[3].reason, "torn");
    free(v);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_int_equal(voids_append(day, 5, 5, "torn", 0), -EINVAL);
    assert_int_equal(voids_append(day, 1, 5, "two words", 0), -EINVAL);
    assert_int_equal(voids_append(day, 1, 5, "", 0), -EINVAL);
    assert_int_equal(voids_append(day, 1, 5, "abcdefghijklmnop", 0), -EINVAL); /* 16 letters */
    assert_int_equal(voids_append(day, 1, 5, "abcdefghijklmno", 0), 0);        /* 15 */
    char missing[PATH_MAX + 32];
    snprintf(missing, sizeof missing, "%s/no/such/dir/x.csv", dir);
    assert_int_equal(voids_append(missing, 1, 5, "torn", 0), -ENOENT);
}

static void test_missing_is_none(void **state)
{
    (void)state;
    struct void_range *v = (void *)1;
    size_t n = 7;
    char err[256] = "";
    assert_int_equal(voids_load(day, &v, &n, err, sizeof err), 0);
    assert_null(v);
    assert_int_equal(n, 0);
    put(""); /* an empty record: no ranges either */
    assert_int_equal(voids_load(day, &v, &n, err, sizeof err), 0);
    assert_null(v);
    assert_int_equal(n, 0);
}

static void test_unterminated_last_line_ignored(void **state)
{
    (void)state;
    put("10 20 torn\n30 4");
    struct void_range *v;
    size_t n;
    char err[256] = "";
    assert_int_equal(voids_load(day, &v, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(v[0].start, 10);
    assert_int_equal(v[0].end, 20);
    free(v);
}

static void refused(const char *text, int line, const char *what)
{
    put(text);
    struct void_range *v = (void *)1;
    size_t n = 7;
    char err[512] = "";
    assert_int_equal(voids_load(day, &v, &n, err, sizeof err), -1);
    assert_null(v);
    assert_int_equal(n, 0);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "%s:%d: ", rec, line);
    if (strncmp(err, want, strlen(want)) || !strstr(err, what))
        fail_msg("%s: got \"%s\", want \"%s...%s\"", text, err, want, what);
}

static void test_malformed_refused(void **state)
{
    (void)state;
    refused("1 2 torn\n20 10 torn\n", 2, "START must be below END");
    refused("1 2 torn\n5 5 torn\n", 2, "START must be below END");
    refused("1 2\n", 1, "START END REASON");
    refused("1 2 torn\n\n", 2, "START END REASON");
    refused("-1 2 torn\n", 1, "START END REASON");
    refused(" 1 2 torn\n", 1, "START END REASON");
    refused("1  2 torn\n", 1, "START END REASON");
    refused("1 x torn\n", 1, "START END REASON");
    refused("1 2 torn now\n", 1, "REASON");
    refused("1 2 torn\n3 4 t0rn\n", 2, "REASON");
    refused("1 18446744073709551616 torn\n", 1, "START END REASON"); /* 2^64 */
    refused("1 2 torn\r\n", 1, "REASON");
    char longline[300];
    memset(longline, '1', sizeof longline - 2);
    longline[sizeof longline - 2] = '\n';
    longline[sizeof longline - 1] = '\0';
    refused(longline, 1, "too long");
}

/* A line cut short by a size limit is taken back: the record stays readable, and the next
 * line, once there is room, is whole. In a child: the limit is process-wide. */
static void test_cut_line_taken_back(void **state)
{
    (void)state;
    assert_int_equal(voids_append(day, 1, 2, "torn", 0), 0); /* 9 bytes */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl;
        if (getrlimit(RLIMIT_FSIZE, &rl))
            _exit(2);
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = 15; /* "100 200 torn\n" would end at 22 */
        if (setrlimit(RLIMIT_FSIZE, &rl))
            _exit(3);
        if (voids_append(day, 100, 200, "torn", 1) != -EFBIG)
            _exit(4);
        rl.rlim_cur = was;
        if (setrlimit(RLIMIT_FSIZE, &rl))
            _exit(5);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        fail_msg("child failed at check %d (status 0x%x)", WEXITSTATUS(st), st);
    size_t n;
    char *text = tu_slurp(rec, &n);
    assert_int_equal(n, 9);
    assert_memory_equal(text, "1 2 torn\n", 9);
    free(text);
    assert_int_equal(voids_append(day, 300, 400, "torn", 0), 0);
    struct void_range *v;
    char err[256] = "";
    assert_int_equal(voids_load(day, &v, &n, err, sizeof err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(v[1].start, 300);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_is_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unterminated_last_line_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_line_taken_back, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
