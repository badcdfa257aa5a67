/* test_catalog.c -- the set of datasets: loading a directory (its errors and limits), the
 * shared table of names (one entry per name, whoever claims it; full is an error), lookup
 * by a name span, reference counting, and the sinks and configuration catalog_open gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "catalog.h"
#include "sink.h"
#include "testutil.h"

static char dir[64], out[80];

static const char events[] = "SCHEMA >\n    `id` Int64 `json:$.id`\n";

static void define(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void undefine(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_catalog.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(out, sizeof out, "%s.out", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, out);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_load_sorts_and_finds(void **state)
{
    (void)state;
    define("zones.datasource", events);
    define("a.datasource", events);
    define("ab.datasource", events);
    define("notes.txt", "not a definition");
    define(".hidden.datasource", "garbage");
    struct catalog_shared *sh = catalog_shared_map(8, 2, NULL, 0);
    assert_non_null(sh);
    char err[300];
    struct catalog *c = catalog_load(dir, 3, "ab", sh, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    assert_int_equal(c->count, 3);
    assert_string_equal(c->sets[0].ds->name, "a");
    assert_string_equal(c->sets[1].ds->name, "ab");
    assert_string_equal(c->sets[2].ds->name, "zones");
    /* A span, not a string: prefixes and extensions of a name are other names. */
    char *span = tu_exact("abz", 3);
    assert_ptr_equal(catalog_find(c, span, 1), &c->sets[0]);
    assert_ptr_equal(catalog_find(c, span, 2), &c->sets[1]);
    assert_null(catalog_find(c, span, 3));
    assert_null(catalog_find(c, span, 0));
    free(span);
    assert_null(catalog_find(c, "zone", 4));
    assert_non_null(catalog_find(c, "zones", 5));
    assert_null(catalog_find(c, "zones\0", 6));
    catalog_release(c);
    catalog_shared_unmap(sh);
}

static void test_load_errors(void **state)
{
    (void)state;
    struct catalog_shared *sh = catalog_shared_map(8, 1, NULL, 0);
    assert_non_null(sh);
    char err[300];
    assert_null(catalog_load(dir, 4, NULL, sh, err, sizeof err));
    assert_non_null(strstr(err, "no NAME.datasource file"));
    assert_null(catalog_load("/nonexistent/defs", 4, NULL, sh, err, sizeof err));
    assert_non_null(strstr(err, "--datasets /nonexistent/defs: "));
    define("good.datasource", events);
    define("bad.datasource", "SCHEMA >\n    `a` Int32,\n    `b` Nope\n");
    assert_null(catalog_load(dir, 4, NULL, sh, err, sizeof err));
    assert_non_null(strstr(err, "bad.datasource:3: "));
    undefine("bad.datasource");
    /* A name whose quarantine file's name would pass NAME_MAX: refused at load. */
    char longest[256], toolong[256];
    snprintf(longest, sizeof longest, "%0229d.datasource", 0);
    snprintf(toolong, sizeof toolong, "a%0229d.datasource", 0);
    longest[0] = 'a';
    define(longest, events);
    define(toolong, events);
    assert_null(catalog_load(dir, 4, NULL, sh, err, sizeof err));
    assert_non_null(strstr(err, "a dataset name of 230 bytes"));
    undefine(toolong);
    struct catalog *lc = catalog_load(dir, 4, NULL, sh, err, sizeof err); /* 229: fits */
    assert_non_null(lc);
    catalog_release(lc);
    undefine(longest);
    assert_null(catalog_load(dir, 4, "other", sh, err, sizeof err));
    assert_non_null(strstr(err, "--default-dataset other: no "));
    define("two.datasource", events);
    assert_null(catalog_load(dir, 1, NULL, sh, err, sizeof err));
    assert_non_null(strstr(err, "more than --max-datasets 1 definitions"));
    struct catalog *c = catalog_load(dir, 2, "two", sh, err, sizeof err); /* at the limit */
    assert_non_null(c);
    catalog_release(c);
    catalog_shared_unmap(sh);
}

/* Names keep their entry across loads; a table full of names since start refuses new ones. */
static void test_shared_names(void **state)
{
    (void)state;
    struct catalog_shared *sh = catalog_shared_map(3, 1, NULL, 0);
    assert_non_null(sh);
    char err[300];
    define("a.datasource", events);
    define("b.datasource", events);
    struct catalog *one = catalog_load(dir, 4, NULL, sh, err, sizeof err);
    assert_non_null(one);
    struct catalog *two = catalog_load(dir, 4, NULL, sh, err, sizeof err);
    assert_non_null(two);
    assert_int_equal(one->sets[0].entry, two->sets[0].entry);
    assert_int_equal(one->sets[1].entry, two->sets[1].entry);
    assert_int_not_equal(one->sets[0].entry, one->sets[1].entry);
    undefine("b.datasource");
    define("c.datasource", events);
    struct catalog *three = catalog_load(dir, 4, NULL, sh, err, sizeof err);
    assert_non_null(three); /* a, b (gone, still named), c: the table is full */
    define("d.datasource", events);
    assert_null(catalog_load(dir, 4, NULL, sh, err, sizeof err));
    assert_non_null(strstr(err, "restart to serve d"));
    struct metrics_dataset_view view[4];
    assert_int_equal(catalog_metrics_view(sh, view, 4), 3);
    catalog_release(one);
    catalog_release(two);
    catalog_release(three);
    catalog_shared_unmap(sh);
}

/* A name keeps the columns it was first loaded with: its day's file is named after it alone,
 * so other columns would mix two row shapes in one file. The whole set is refused. */
static void test_changed_columns_refuse_the_set(void **state)
{
    (void)state;
    struct catalog_shared *sh = catalog_shared_map(16, 1, NULL, 0);
    assert_non_null(sh);
    char err[600];
    const char *n = "SCHEMA >\n    `n` Int64 `json:$.n`\n";
    define("a.datasource", n);
    struct catalog *first = catalog_load(dir, 4, NULL, sh, err, sizeof err);
    assert_non_null(first);
    const char *changed[] = {
        "SCHEMA >\n    `s` String `json:$.s`,\n    `n` Int64 `json:$.n`\n", /* a column added */
        "SCHEMA >\n    `m` Int64 `json:$.n`\n",                             /* renamed */
        "SCHEMA >\n    `n` Int32 `json:$.n`\n",                             /* its type */
        "SCHEMA >\n    `n`  Nullable(Int64) `json:$.n`\n",
        "SCHEMA >\n    `n` Int64 `json:$.m`\n",                             /* its path */
        "SCHEMA >\n    `n` Int64 `json:$['n']`\n",                          /* as written */
        "SCHEMA >\n    `n` Int64 `json:$.n` DEFAULT 0\n",                   /* a DEFAULT */
    };
    for (size_t i = 0; i < sizeof changed / sizeof *changed; i++) {
        define("a.datasource", changed[i]);
        define("b.datasource", events); /* new, unchanged or not: the set goes as a whole */
        if (catalog_load(dir, 4, NULL, sh, err, sizeof err))
            fail_msg("loaded: %s", changed[i]);
        char want[600];
        snprintf(want, sizeof want, "%s/a.datasource: the columns of dataset a changed; its "
                 "day's file holds rows of the old shape: give the new schema a new dataset "
                 "name, or move the day's files and restart", dir);
        assert_string_equal(err, want);
        undefine("b.datasource");
    }
    /* Order counts; a DEFAULT's text counts. */
    define("order.datasource", "SCHEMA >\n    `x` Int64 `json:$.x`,\n    `y` Int64 `json:$.y` DEFAULT 1\n");
    define("a.datasource", "SCHEMA >\n    `n` Int64\n"); /* the path it implies, $.n */
    struct catalog *c = catalog_load(dir, 4, NULL, sh, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    catalog_release(c);
    define("order.datasource", "SCHEMA >\n    `y` Int64 `json:$.y` DEFAULT 1,\n    `x` Int64 `json:$.x`\n");
    assert_null(catalog_load(dir, 4, NULL, sh, err, sizeof err));
    assert_non_null(strstr(err, "the columns of dataset order changed"));
    define("order.datasource", "SCHEMA >\n    `x` Int64 `json:$.x`,\n    `y` Int64 `json:$.y` DEFAULT 2\n");
    assert_null(catalog_load(dir, 4, NULL, sh, err, sizeof err));
    undefine("order.datasource");
    /* b was new only in refused sets: it kept no shape, so it may come with other columns. */
    define("b.datasource", n);
    c = catalog_load(dir, 4, NULL, sh, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    catalog_release(c);
    /* Unchanged, added and removed datasets reload; a removed name that comes back with
     * other columns is still refused (its day's file is still there). */
    undefine("b.datasource");
    define("fresh.datasource", events);
    c = catalog_load(dir, 4, NULL, sh, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    assert_int_equal(c->count, 2);
    catalog_release(c);
    define("b.datasource", events);
    assert_null(catalog_load(dir, 4, NULL, sh, err, sizeof err));
    assert_non_null(strstr(err, "/b.datasource: the columns of dataset b changed"));
    catalog_release(first);
    catalog_shared_unmap(sh);
}

/* catalog_open: each dataset's own sinks and pipeline configuration, its counters in this
 * worker's row; the last reference closes the sinks (ASan would see a leak or a double
 * free otherwise). */
static void test_open_hold_release(void **state)
{
    (void)state;
    define("a.datasource", events);
    define("b.datasource", events);
    struct catalog_shared *sh = catalog_shared_map(8, 3, NULL, 0);
    assert_non_null(sh);
    char err[300];
    struct catalog *c = catalog_load(dir, 4, NULL, sh, err, sizeof err);
    assert_non_null(c);
    const struct ingest_config base = {.max_line = 77, .flush_bytes = 5, .crlf = 1};
    const struct catalog_files f = {.dir = out, .header = 1, .crlf = 1, .quarantine = 1,
                                    .slot = 2, .base = &base};
    if (catalog_open(c, &f, err, sizeof err))
        fail_msg("%s", err);
    for (size_t i = 0; i < 2; i++) {
        const struct catalog_dataset *d = &c->sets[i];
        assert_ptr_equal(d->ingest.schema, d->ds);
        assert_ptr_equal(d->ingest.rows, d->rows);
        assert_ptr_equal(d->ingest.quarantine, d->quarantine);
        assert_int_equal(d->ingest.max_line, 77);
        assert_ptr_equal(d->m, sh->counters + 2 * sh->nentries + d->entry);
        assert_memory_equal(d->header.p, "id\r\n", 4);
        char want[200];
        snprintf(want, sizeof want, "%s/%s-", out, d->ds->name);
        assert_memory_equal(sink_path(d->quarantine), want, strlen(want));
        assert_non_null(strstr(sink_path(d->quarantine), ".quarantine.csv"));
    }
    assert_int_equal(sink_write(c->sets[1].rows, "1\r\n", 3), 0);
    assert_int_equal(catalog_sync(c, err, sizeof err), 0);
    assert_ptr_equal(catalog_hold(c), c);
    catalog_release(c);
    assert_int_equal(c->refs, 1); /* still held */
    catalog_release(c);
    catalog_shared_unmap(sh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_load_sorts_and_finds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_columns_refuse_the_set, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_hold_release, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
