/* test_metrics.c -- the /metrics exposition: every slot's lines, whole, at 1,024 workers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <ctype.h>

#include "slots.h"

#define NSLOTS SLOTS_MAX

static struct worker_slot *slots_new(int n)
{
    struct worker_slot *s = aligned_alloc(64, sizeof *s * (size_t)n);
    assert_non_null(s);
    memset(s, 0, sizeof *s * (size_t)n);
    return s;
}

/* metrics_format over slots[0..n), through the view http.c builds. */
static int format_slots(struct buf *out, const struct worker_slot *slots, int n)
{
    struct metrics_worker view[SLOTS_MAX];
    slots_metrics_view(view, slots, n);
    return metrics_format(out, view, n);
}

/* Whether a metric name is [a-zA-Z_:][a-zA-Z0-9_:]* over p[0..n). */
static int is_name(const char *p, size_t n)
{
    if (!n || isdigit((unsigned char)p[0]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)p[i]) && p[i] != '_' && p[i] != ':')
            return 0;
    return 1;
}

/* One line of the Prometheus text format 0.0.4 as ndingest writes it: a HELP or TYPE
 * comment, or NAME[{label="value",...}] VALUE. Fails the test with the line otherwise. */
static void check_line(const char *p, size_t n)
{
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)n, p);
    if (!strncmp(line, "# HELP ", 7) || !strncmp(line, "# TYPE ", 7)) {
        const char *name = line + 7, *sp = strchr(name, ' ');
        if (!sp || !is_name(name, (size_t)(sp - name)) || !sp[1])
            fail_msg("bad comment line: %s", line);
        if (line[2] == 'T' && strcmp(sp + 1, "counter") && strcmp(sp + 1, "gauge") &&
            strcmp(sp + 1, "histogram"))
            fail_msg("bad type: %s", line);
        return;
    }
    size_t k = 0;
    while (k < n && line[k] != '{' && line[k] != ' ')
        k++;
    if (!is_name(line, k))
        fail_msg("bad metric name: %s", line);
    if (line[k] == '{') {
        for (k++;;) {
            size_t s = k;
            while (line[k] && line[k] != '=')
                k++;
            if (!is_name(line + s, k - s) || line[k + 1] != '"')
                fail_msg("bad label: %s", line);
            k += 2;
            while (line[k] && line[k] != '"')
                k++;
            if (line[k] != '"')
                fail_msg("unterminated label value: %s", line);
            k++;
            if (line[k] == '}')
                break;
            if (line[k] != ',')
                fail_msg("bad label list: %s", line);
            k++;
        }
        k++;
    }
    if (line[k] != ' ')
        fail_msg("no value: %s", line);
    char *end;
    strtod(line + k + 1, &end);
    if (end == line + k + 1 || *end)
        fail_msg("bad value: %s", line);
}

static void test_1024_workers_nothing_cut(void **state)
{
    (void)state;
    struct worker_slot *s = slots_new(NSLOTS);
    for (int i = 0; i < NSLOTS; i++) {
        atomic_store(&s[i].live, i % 3 != 0);
        atomic_store(&s[i].connections, (unsigned)(i % 7));
        metrics_add(&s[i].metrics.rows_valid, 10);
        metrics_add(&s[i].metrics.quarantine_full, (uint64_t)(i % 2));
        metrics_add(&s[i].metrics.void_rows, 3);
        metrics_add(&s[i].metrics.void_bytes, (uint64_t)(i % 2) * 7);
        for (int k = 0; k <= i % 5; k++)
            metrics_response(&s[i].metrics, 200, 2000000);
    }
    struct buf out = {0};
    assert_int_equal(format_slots(&out, s, NSLOTS), 0);
    assert_true(out.len > 10 * 8192); /* far past the old fixed 8 KiB buffer */
    assert_int_equal(out.p[out.len - 1], '\n');
    assert_null(memchr(out.p, '\0', out.len));

    /* Every line well-formed, and every worker's two lines present with its values. */
    char *text = malloc(out.len + 1);
    assert_non_null(text);
    memcpy(text, out.p, out.len);
    text[out.len] = '\0';
    size_t lines = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        check_line(p, (size_t)(nl - p));
        lines++;
        p = nl + 1;
    }
    assert_true(lines > 2 * NSLOTS);
    uint64_t total = 0;
    for (int i = 0; i < NSLOTS; i++) {
        char want[96];
        snprintf(want, sizeof want, "\nndingest_worker_requests_total{worker=\"%d\"} %d\n", i, i % 5 + 1);
        if (!strstr(text, want))
            fail_msg("missing: %s", want + 1);
        snprintf(want, sizeof want, "\nndingest_worker_open_connections{worker=\"%d\"} %d\n", i,
                 i % 3 ? i % 7 : 0);
        if (!strstr(text, want))
            fail_msg("missing: %s", want + 1);
        total += (uint64_t)(i % 5 + 1);
    }
    char want[96];
    snprintf(want, sizeof want, "\nndingest_requests_total{code=\"200\"} %llu\n", (unsigned long long)total);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "\nndingest_rows_total{verdict=\"valid\"} %d\n", 10 * NSLOTS);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "# TYPE ndingest_quarantine_full_total counter\n"
             "ndingest_quarantine_full_total %d\n", NSLOTS / 2);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "\nndingest_void_rows_total %d\n", 3 * NSLOTS);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "\nndingest_void_bytes_total %d\n", 7 * (NSLOTS / 2));
    assert_non_null(strstr(text, want));
    /* The last family's last line closes the text. */
    snprintf(want, sizeof want, "ndingest_worker_open_connections{worker=\"%d\"} %d\n", NSLOTS - 1,
             (NSLOTS - 1) % 3 ? (NSLOTS - 1) % 7 : 0);
    assert_int_equal(strcmp(text + out.len - strlen(want), want), 0);
    free(text);
    buf_free(&out);
    free(s);
}

/* Appending keeps what the buffer held: the caller may put a prefix first. */
static void test_appends(void **state)
{
    (void)state;
    struct worker_slot *s = slots_new(1);
    struct buf out = {0};
    assert_int_equal(buf_append(&out, "x", 1), 0);
    assert_int_equal(format_slots(&out, s, 1), 0);
    assert_int_equal(out.p[0], 'x');
    assert_int_equal(strncmp(out.p + 1, "# HELP ndingest_requests_total ", 31), 0);
    buf_free(&out);
    free(s);
}

/* A buffer that cannot grow (no address space left past its length): -1, and the buffer
 * as it was, so that http.c answers 500 rather than send a cut exposition. */
static void test_no_memory(void **state)
{
    (void)state;
    struct worker_slot *s = slots_new(2);
    char held[1] = {'x'};
    struct buf out = {.p = held, .len = SIZE_MAX / 2, .cap = SIZE_MAX / 2};
    assert_int_equal(format_slots(&out, s, 2), -1);
    assert_ptr_equal(out.p, held);
    assert_true(out.len == SIZE_MAX / 2 && out.cap == SIZE_MAX / 2);
    assert_int_equal(held[0], 'x');
    free(s);
}

static void test_totals_live_connections_only(void **state)
{
    (void)state;
    struct worker_slot *s = slots_new(3);
    atomic_store(&s[0].live, 1);
    atomic_store(&s[0].connections, 4);
    atomic_store(&s[1].connections, 9); /* a dead slot's stale count */
    atomic_store(&s[2].live, 1);
    atomic_store(&s[2].connections, 1);
    metrics_add(&s[1].metrics.rows_invalid, 2);
    metrics_add(&s[2].metrics.rows_valid, 3);
    metrics_response(&s[1].metrics, 404, 0);
    metrics_response(&s[2].metrics, 299, 0); /* counted as "other" */
    struct metrics_worker view[3];
    slots_metrics_view(view, s, 3);
    assert_int_equal(view[1].connections, 0);
    assert_ptr_equal(view[1].m, &s[1].metrics);
    struct metrics_totals t;
    metrics_totals(&t, view, 3);
    assert_int_equal(t.connections, 5);
    assert_int_equal(t.rows, 5);
    assert_int_equal(t.requests, 2);
    free(s);
}

/* Per-dataset lines: each dataset's counters summed over its workers (a row of the shared
 * table per worker, stride apart), labelled by name; 202 and 403 listed once counted. */
static void test_datasets(void **state)
{
    (void)state;
    enum { WORKERS = 3, NAMES = 2 };
    static struct metrics_dataset m[WORKERS * NAMES];
    memset(m, 0, sizeof m);
    int date = 0; /* the class by its label, whatever its place in the enum */
    while (date < QUARANTINE_REASONS && strcmp(quarantine_reason_names[date], "date"))
        date++;
    assert_int_not_equal(date, QUARANTINE_REASONS);
    for (int w = 0; w < WORKERS; w++) {
        metrics_add(&m[w * NAMES + 1].rows_valid, 10u + (unsigned)w); /* b: 10 + 11 + 12 */
        metrics_add(&m[w * NAMES + 1].refused[date], 1);
        metrics_add(&m[w * NAMES].bodies, 2);
        metrics_add(&m[w * NAMES + 1].void_rows, 5);
        metrics_add(&m[w * NAMES + 1].void_bytes, 100u * (unsigned)(w + 1)); /* 100+200+300 */
    }
    const struct metrics_dataset_view v[NAMES] = {{"a", m, NAMES}, {"b", m + 1, NAMES}};
    struct buf out = {0};
    assert_int_equal(metrics_format_datasets(&out, v, NAMES, WORKERS), 0);
    assert_int_equal(buf_append(&out, "", 1), 0);
    static const char *const want[] = {
        "\nndingest_dataset_requests_total{dataset=\"a\"} 6\n",
        "\nndingest_dataset_requests_total{dataset=\"b\"} 0\n",
        "\nndingest_dataset_rows_total{dataset=\"b\",verdict=\"valid\"} 33\n",
        "\nndingest_dataset_rows_total{dataset=\"a\",verdict=\"invalid\"} 0\n",
        "\nndingest_dataset_quarantined_total{dataset=\"b\",reason=\"date\"} 3\n",
        "\nndingest_dataset_quarantined_total{dataset=\"a\",reason=\"json\"} 0\n",
        "\nndingest_dataset_void_rows_total{dataset=\"b\"} 15\n",
        "\nndingest_dataset_void_bytes_total{dataset=\"b\"} 600\n",
        "\nndingest_dataset_void_rows_total{dataset=\"a\"} 0\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(out.p, want[i]))
            fail_msg("missing %s in:\n%s", want[i], out.p);
    out.len = 0;
    assert_int_equal(metrics_format_datasets(&out, v, 0, WORKERS), 0);
    assert_int_equal(out.len, 0); /* no datasets: not a line */
    buf_free(&out);

    struct worker_slot *slots = slots_new(2);
    assert_int_equal(format_slots(&out, slots, 2), 0);
    assert_int_equal(buf_append(&out, "", 1), 0);
    assert_null(strstr(out.p, "code=\"202\""));
    assert_null(strstr(out.p, "code=\"403\""));
    metrics_response(&slots[1].metrics, 403, 0);
    out.len = 0;
    assert_int_equal(format_slots(&out, slots, 2), 0);
    assert_int_equal(buf_append(&out, "", 1), 0);
    assert_non_null(strstr(out.p, "\nndingest_requests_total{code=\"403\"} 1\n"));
    assert_null(strstr(out.p, "code=\"202\""));
    buf_free(&out);
    free(slots);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_1024_workers_nothing_cut),
        cmocka_unit_test(test_appends),
        cmocka_unit_test(test_no_memory),
        cmocka_unit_test(test_totals_live_connections_only),
        cmocka_unit_test(test_datasets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
