/* metrics.h -- the counters behind GET /metrics (Prometheus text format 0.0.4). Each worker
 * keeps its own in memory shared by every process (slots.h embeds them) and is the only
 * writer of them, so it adds with a relaxed load and store (no locked instruction);
 * whichever worker answers /metrics sums every worker's. Counted per request, never per
 * byte. A leaf module: it reads only the view its caller builds (struct metrics_worker). */
#ifndef NDINGEST_METRICS_H
#define NDINGEST_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "quarantine.h"

/* The status codes ndingest sends; anything else is counted as "other". */
#define METRICS_CODES 16
/* Request duration buckets, seconds: .001 .005 .01 .05 .1 .5 1 5 (and +Inf). */
#define METRICS_BUCKETS 8

struct metrics {
    atomic_uint_fast64_t responses[METRICS_CODES];
    atomic_uint_fast64_t rows_valid, rows_invalid;
    atomic_uint_fast64_t body_bytes;    /* ingested bodies as received */
    atomic_uint_fast64_t decoded_bytes; /* ...after content decoding */
    atomic_uint_fast64_t written_bytes; /* rows and quarantined lines written */
    /* refused lines not kept past --max-quarantine or --max-quarantine-day (POST / and
     * every dataset: QUARANTINE_FULL) */
    atomic_uint_fast64_t quarantine_full;
    atomic_uint_fast64_t duration[METRICS_BUCKETS + 1]; /* per bucket, not cumulative; last: +Inf */
    atomic_uint_fast64_t duration_ns;
    /* Rows and bytes of the day files voided: written for a request that then failed (or by
     * a worker killed before its requests were answered: the main process adds those). */
    atomic_uint_fast64_t void_rows, void_bytes;
    atomic_uint_fast64_t restarts;      /* the main process writes this one */
    atomic_uint_fast64_t accept_errors; /* accept(2) out of descriptors or memory */
};

/* Single-writer add. */
static inline void metrics_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* An add to a counter of a worker's that the main process also adds to while the worker
 * runs (void_rows and void_bytes: a dead worker's ranges held, then recorded): a locked add
 * on both sides, rare on either. */
static inline void metrics_add_shared(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* One response sent, duration_ns after its request's first byte. */
void metrics_response(struct metrics *m, int status, uint64_t duration_ns);

/* One worker as the functions below see it, built by the caller (slots_metrics_view) and
 * borrowed for the call. m: its counters, still being added to by their worker (read with
 * relaxed loads); connections: open now, 0 for a worker no process runs. */
struct metrics_worker {
    const struct metrics *m;
    unsigned connections;
};

/* One dataset's counters in one worker (--datasets; catalog.h lays them out in shared
 * memory, one per worker per dataset name, written by that worker only). */
struct metrics_dataset {
    atomic_uint_fast64_t bodies;     /* bodies ingested (ended or abandoned) */
    atomic_uint_fast64_t body_bytes; /* as received */
    atomic_uint_fast64_t rows_valid, rows_invalid;
    atomic_uint_fast64_t refused[QUARANTINE_REASONS]; /* rows_invalid by reason class */
    atomic_uint_fast64_t void_rows, void_bytes; /* voided: written for a failed request */
};

/* One dataset as metrics_format_datasets sees it: its name and its counters in each
 * worker, w[0], w[stride], w[2 * stride]... (borrowed for the call). */
struct metrics_dataset_view {
    const char *name;
    const struct metrics_dataset *w;
    size_t stride;
};

/* Appends the per-dataset lines (label dataset="NAME") of v[0..n) summed over nworkers
 * workers: ndingest_dataset_requests_total, ndingest_dataset_body_bytes_total,
 * ndingest_dataset_rows_total{verdict}, ndingest_dataset_quarantined_total{reason},
 * ndingest_dataset_void_rows_total, ndingest_dataset_void_bytes_total. Names
 * are letters, digits and '_' (datasource.h), so they need no escaping. 0, or -1 when
 * memory is exhausted. */
int metrics_format_datasets(struct buf *out, const struct metrics_dataset_view *v, size_t n,
                            int nworkers);

/* The totals behind the live status line (server.c): summed over workers w[0..n). */
struct metrics_totals {
    uint64_t rows;        /* valid + invalid */
    uint64_t body_bytes;
    uint64_t requests;    /* responses sent, every code */
    uint64_t connections; /* open now */
};
void metrics_totals(struct metrics_totals *t, const struct metrics_worker *w, int n);

/* Appends the exposition of the sum over workers w[0..n), then each worker's own lines
 * (labelled by its index in w), to out (grown as needed: ~2.7 KB plus ~100 bytes per
 * worker). 0, or -1 when memory is exhausted (out then holds a prefix: not to be sent). */
int metrics_format(struct buf *out, const struct metrics_worker *w, int n);

#endif
