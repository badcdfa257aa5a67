/* slots.h -- the per-worker rows of the memory shared by the main process and every worker. */
#ifndef NDINGEST_SLOTS_H
#define NDINGEST_SLOTS_H

#include <stdatomic.h>

#include "metrics.h"
#include "options.h"
#include "pressure.h"

/* One worker's row, mapped before the fork (server.c owns the mapping). Each worker writes
 * only its own slot; the others read it to balance accepting, and whoever answers
 * GET /metrics sums them all. A cache line each, so a worker's counting does not slow its
 * neighbours' reads. metrics: never reset, so totals survive a worker's replacement. */
struct worker_slot {
    _Alignas(64) atomic_uint connections; /* open now */
    atomic_uint live;                     /* a process is running this slot (main sets it) */
    atomic_uint_fast64_t accepted;        /* connections, since the slot's process started */
    atomic_uint_fast64_t requests;        /* responses sent */
    struct metrics metrics;               /* GET /metrics, summed over the slots */
    /* Slot 0 only: the day's files may end inside a row (sink_config.torn). */
    atomic_uint rows_torn, invalid_torn;
    /* Slot 0 only: backpressure as the workers last judged it (pressure.h). */
    struct pressure_shared pressure;
};

/* The most slots there are: the bound on --workers, so that a caller can hold a view of
 * every slot on its stack. */
#define SLOTS_MAX OPTIONS_MAX_WORKERS

/* Fills view[0..n) from slots[0..n) (n at most SLOTS_MAX) for metrics_format and
 * metrics_totals; view borrows the slots' counters. A slot no process runs has no open
 * connections: its count is what its dead process left. */
static inline void slots_metrics_view(struct metrics_worker *view, const struct worker_slot *slots,
                                      int n)
{
    for (int i = 0; i < n; i++) {
        view[i].m = &slots[i].metrics;
        view[i].connections = atomic_load_explicit(&slots[i].live, memory_order_relaxed)
                                  ? atomic_load_explicit(&slots[i].connections, memory_order_relaxed)
                                  : 0u;
    }
}

#endif
