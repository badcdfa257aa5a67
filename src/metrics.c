/* metrics.c -- per-worker counters in shared memory, and their Prometheus exposition. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>

/* The first METRICS_LISTED are always listed; those after, only --datasets sends (202 for
 * wait=false, 403 for a token's scope), only once counted, so that /metrics without
 * --datasets reads as it always has. */
static const int codes[METRICS_CODES - 1] = {200, 400, 401, 404, 405, 408, 413, 414, 415, 431, 500, 501, 503,
                                             202, 403};
#define METRICS_LISTED 13
static const uint64_t bucket_ns[METRICS_BUCKETS] = {
    1000000ULL, 5000000ULL, 10000000ULL, 50000000ULL, 100000000ULL, 500000000ULL,
    1000000000ULL, 5000000000ULL,
};
static const char *const bucket_le[METRICS_BUCKETS] = {"0.001", "0.005", "0.01", "0.05",
                                                        "0.1",   "0.5",   "1",    "5"};

void metrics_response(struct metrics *m, int status, uint64_t duration_ns)
{
    int i = 0;
    while (i < METRICS_CODES - 1 && codes[i] != status)
        i++;
    metrics_add(&m->responses[i], 1);
    int b = 0;
    while (b < METRICS_BUCKETS && duration_ns > bucket_ns[b])
        b++;
    metrics_add(&m->duration[b], 1);
    metrics_add(&m->duration_ns, duration_ns);
}

/* The exposition is built in a growable buffer: it grows with the slot count, and a cut
 * would end the text mid-line. failed: memory ran out once, everything after is skipped. */
struct out {
    struct buf *b;
    int failed;
};

/* Per response to GET /metrics, not per row: a printf is affordable. */
__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
    for (size_t want = 128; !o->failed;) {
        if (buf_reserve(o->b, want)) {
            o->failed = 1;
            return;
        }
        size_t room = o->b->cap - o->b->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->b->p + o->b->len, room, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): va_start above */
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if ((size_t)n < room) {
            o->b->len += (size_t)n;
            return;
        }
        want = (size_t)n + 1;
    }
}

static uint64_t sum(const struct metrics_worker *w, int n, size_t offset)
{
    uint64_t t = 0;
    for (int i = 0; i < n; i++) {
        const atomic_uint_fast64_t *c =
            (const atomic_uint_fast64_t *)((const char *)w[i].m + offset);
        t += atomic_load_explicit(c, memory_order_relaxed);
    }
    return t;
}

#define SUM(field) sum(w, n, offsetof(struct metrics, field))

/* Open connections over w[0..n). */
static uint64_t open_connections(const struct metrics_worker *w, int n)
{
    uint64_t t = 0;
    for (int i = 0; i < n; i++)
        t += w[i].connections;
    return t;
}

void metrics_totals(struct metrics_totals *t, const struct metrics_worker *w, int n)
{
    t->rows = SUM(rows_valid) + SUM(rows_invalid);
    t->body_bytes = SUM(body_bytes);
    t->requests = 0;
    for (int i = 0; i < METRICS_CODES; i++)
        t->requests += sum(w, n, offsetof(struct metrics, responses) +
                                     (size_t)i * sizeof(atomic_uint_fast64_t));
    t->connections = open_connections(w, n);
}

static void counter(struct out *o, const char *name, const char *help, uint64_t v)
{
    put(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
        (unsigned long long)v);
}

int metrics_format(struct buf *out, const struct metrics_worker *w, int n)
{
    struct out o = {out, 0};
    put(&o, "# HELP ndingest_requests_total Responses sent, by HTTP status code.\n"
            "# TYPE ndingest_requests_total counter\n");
    for (int i = 0; i < METRICS_CODES; i++) {
        uint64_t v = sum(w, n, offsetof(struct metrics, responses) + (size_t)i * sizeof(atomic_uint_fast64_t));
        if (i < METRICS_LISTED || (i < METRICS_CODES - 1 && v))
            put(&o, "ndingest_requests_total{code=\"%d\"} %llu\n", codes[i], (unsigned long long)v);
        else if (v)
            put(&o, "ndingest_requests_total{code=\"other\"} %llu\n", (unsigned long long)v);
    }
    put(&o, "# HELP ndingest_rows_total Lines judged, by verdict (valid: written as a CSV row).\n"
            "# TYPE ndingest_rows_total counter\n"
            "ndingest_rows_total{verdict=\"valid\"} %llu\n"
            "ndingest_rows_total{verdict=\"invalid\"} %llu\n",
        (unsigned long long)SUM(rows_valid), (unsigned long long)SUM(rows_invalid));
    counter(&o, "ndingest_body_bytes_total", "Request body bytes as received (before content decoding).",
            SUM(body_bytes));
    counter(&o, "ndingest_decoded_bytes_total", "Request body bytes after content decoding.",
            SUM(decoded_bytes));
    counter(&o, "ndingest_written_bytes_total", "Bytes written to the CSV and quarantine files.",
            SUM(written_bytes));
    counter(&o, "ndingest_quarantine_full_total",
            "Refused lines counted but not kept: past --max-quarantine or --max-quarantine-day.",
            SUM(quarantine_full));
    counter(&o, "ndingest_void_rows_total",
            "Rows written for requests that then failed (or whose worker was killed): void, "
            "listed in the day file's .void record.", SUM(void_rows));
    counter(&o, "ndingest_void_bytes_total",
            "Bytes of the day files voided with those rows.", SUM(void_bytes));
    counter(&o, "ndingest_accept_errors_total",
            "accept(2) failures for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).",
            SUM(accept_errors));
    put(&o, "# HELP ndingest_request_duration_seconds Time from a request's first byte to its response.\n"
            "# TYPE ndingest_request_duration_seconds histogram\n");
    uint64_t cumulative = 0;
    for (int b = 0; b <= METRICS_BUCKETS; b++) {
        cumulative += sum(w, n, offsetof(struct metrics, duration) + (size_t)b * sizeof(atomic_uint_fast64_t));
        put(&o, "ndingest_request_duration_seconds_bucket{le=\"%s\"} %llu\n",
            b < METRICS_BUCKETS ? bucket_le[b] : "+Inf", (unsigned long long)cumulative);
    }
    uint64_t ns = SUM(duration_ns);
    put(&o, "ndingest_request_duration_seconds_sum %llu.%09llu\n"
            "ndingest_request_duration_seconds_count %llu\n",
        (unsigned long long)(ns / 1000000000ULL), (unsigned long long)(ns % 1000000000ULL),
        (unsigned long long)cumulative);
    uint64_t open = open_connections(w, n);
    put(&o, "# HELP ndingest_open_connections Client connections open now, all workers.\n"
            "# TYPE ndingest_open_connections gauge\n"
            "ndingest_open_connections %llu\n",
        (unsigned long long)open);
    counter(&o, "ndingest_worker_restarts_total", "Workers that died and were replaced.",
            SUM(restarts));
    /* The same, per worker: how evenly the load is shared. */
    put(&o, "# HELP ndingest_worker_requests_total Responses sent, by worker slot.\n"
            "# TYPE ndingest_worker_requests_total counter\n");
    for (int i = 0; i < n; i++) {
        uint64_t t = 0;
        for (int k = 0; k < METRICS_CODES; k++)
            t += atomic_load_explicit(&w[i].m->responses[k], memory_order_relaxed);
        put(&o, "ndingest_worker_requests_total{worker=\"%d\"} %llu\n", i, (unsigned long long)t);
    }
    put(&o, "# HELP ndingest_worker_open_connections Client connections open now, by worker slot.\n"
            "# TYPE ndingest_worker_open_connections gauge\n");
    for (int i = 0; i < n; i++)
        put(&o, "ndingest_worker_open_connections{worker=\"%d\"} %u\n", i, w[i].connections);
    return o.failed ? -1 : 0;
}

/* One dataset's counter at offset, summed over its workers. */
static uint64_t dataset_sum(const struct metrics_dataset_view *v, int nworkers, size_t offset)
{
    uint64_t t = 0;
    for (int i = 0; i < nworkers; i++) {
        const atomic_uint_fast64_t *c =
            (const atomic_uint_fast64_t *)((const char *)(v->w + (size_t)i * v->stride) + offset);
        t += atomic_load_explicit(c, memory_order_relaxed);
    }
    return t;
}

#define DSUM(field) dataset_sum(&v[d], nworkers, offsetof(struct metrics_dataset, field))

int metrics_format_datasets(struct buf *out, const struct metrics_dataset_view *v, size_t n,
                            int nworkers)
{
    struct out o = {out, 0};
    if (!n)
        return 0;
    put(&o, "# HELP ndingest_dataset_requests_total Bodies ingested, by dataset.\n"
            "# TYPE ndingest_dataset_requests_total counter\n");
    for (size_t d = 0; d < n; d++)
        put(&o, "ndingest_dataset_requests_total{dataset=\"%s\"} %llu\n", v[d].name,
            (unsigned long long)DSUM(bodies));
    put(&o, "# HELP ndingest_dataset_body_bytes_total Request body bytes as received, by dataset.\n"
            "# TYPE ndingest_dataset_body_bytes_total counter\n");
    for (size_t d = 0; d < n; d++)
        put(&o, "ndingest_dataset_body_bytes_total{dataset=\"%s\"} %llu\n", v[d].name,
            (unsigned long long)DSUM(body_bytes));
    put(&o, "# HELP ndingest_dataset_rows_total Lines judged, by dataset and verdict (valid: "
            "written as a row; invalid: quarantined or, with --no-quarantine, dropped).\n"
            "# TYPE ndingest_dataset_rows_total counter\n");
    for (size_t d = 0; d < n; d++)
        put(&o, "ndingest_dataset_rows_total{dataset=\"%s\",verdict=\"valid\"} %llu\n"
                "ndingest_dataset_rows_total{dataset=\"%s\",verdict=\"invalid\"} %llu\n",
            v[d].name, (unsigned long long)DSUM(rows_valid), v[d].name,
            (unsigned long long)DSUM(rows_invalid));
    put(&o, "# HELP ndingest_dataset_quarantined_total Lines refused, by dataset and reason class.\n"
            "# TYPE ndingest_dataset_quarantined_total counter\n");
    for (size_t d = 0; d < n; d++)
        for (int r = 0; r < QUARANTINE_REASONS; r++)
            put(&o, "ndingest_dataset_quarantined_total{dataset=\"%s\",reason=\"%s\"} %llu\n",
                v[d].name, quarantine_reason_names[r],
                (unsigned long long)dataset_sum(&v[d], nworkers,
                                                offsetof(struct metrics_dataset, refused) +
                                                    (size_t)r * sizeof(atomic_uint_fast64_t)));
    put(&o, "# HELP ndingest_dataset_void_rows_total Rows written for requests that then "
            "failed, void, by dataset.\n# TYPE ndingest_dataset_void_rows_total counter\n");
    for (size_t d = 0; d < n; d++)
        put(&o, "ndingest_dataset_void_rows_total{dataset=\"%s\"} %llu\n", v[d].name,
            (unsigned long long)DSUM(void_rows));
    put(&o, "# HELP ndingest_dataset_void_bytes_total Bytes of those rows, by dataset.\n"
            "# TYPE ndingest_dataset_void_bytes_total counter\n");
    for (size_t d = 0; d < n; d++)
        put(&o, "ndingest_dataset_void_bytes_total{dataset=\"%s\"} %llu\n", v[d].name,
            (unsigned long long)DSUM(void_bytes));
    return o.failed ? -1 : 0;
}
