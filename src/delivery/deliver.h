/* deliver.h -- the delivery process: every dataset's day files, oldest first, into the
 * destination in deterministic batches, each acknowledged row once where the database can
 * deduplicate (doc/delivery.md). */
#ifndef NDINGEST_DELIVER_H
#define NDINGEST_DELIVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "../buf.h"
#include "../datasource.h"
#include "../options.h"

/* How a batch ended, for ndingest_delivery_batches_total{result}. */
enum deliver_result {
    DELIVER_STORED,
    DELIVER_RETRY,
    DELIVER_REFUSED,
    DELIVER_TABLE,
    DELIVER_CONFIG,
    DELIVER_RESULTS
};

/* What exactly once rests on, read from the server at start (doc/delivery.md). */
enum deliver_mode {
    DELIVER_MODE_UNKNOWN,   /* not connected yet */
    DELIVER_MODE_TOKEN,     /* ClickHouse >= 22.2: insert_deduplication_token */
    DELIVER_MODE_CHECKSUM,  /* older: the replicated table's block checksum */
    DELIVER_MODE_TRANSACTION, /* PostgreSQL: the rows and the cursor row in one transaction */
    DELIVER_MODES
};

/* A dataset's delivery as /metrics shows it. Written by the delivery process only (relaxed
 * stores), read by whichever worker answers /metrics and by the backpressure check. */
struct deliver_stats {
    atomic_uint used;                     /* 0 free, 1 named */
    char name[DS_MAX_NAME + 1];
    atomic_uint_fast64_t rows, bytes;     /* delivered */
    atomic_uint_fast64_t quarantined;     /* rows the database refused, sent to the quarantine */
    atomic_uint_fast64_t batches[DELIVER_RESULTS];
    atomic_uint_fast64_t retries;
    atomic_uint_fast64_t void_ranges, void_bytes; /* skipped as void (torn) */
    atomic_uint_fast64_t lag_bytes;       /* written to the day files, not yet delivered */
    atomic_int_fast64_t oldest_ms;        /* wall clock when the oldest undelivered byte was
                                           * first seen, 0 when none waits */
    atomic_int_fast64_t last_success_ms;  /* wall clock of the last stored batch, 0: none */
    atomic_uint waiting;                  /* 1: the table is unfit; nothing is sent */
};

/* The memory shared by the main process, the workers and the delivery process (mapped
 * before the fork), so that any worker's /metrics and backpressure see delivery. */
struct deliver_shared {
    atomic_uint mode;                     /* enum deliver_mode */
    atomic_uint_fast64_t restarts;        /* of the delivery process, by the main process */
    atomic_uint_fast64_t lag_bytes;       /* the sum over datasets */
    size_t max;
    size_t size;                          /* of the mapping */
    struct deliver_stats stats[];
};

/* Maps a zero-filled shared region for max datasets. NULL with a message in err. */
struct deliver_shared *deliver_shared_map(size_t max, char *err, size_t errlen);
void deliver_shared_unmap(struct deliver_shared *sh);

/* Appends the delivery's lines of the Prometheus exposition (ndingest_delivery_*; labels
 * dataset and result) to out. 0, or -1 when memory is exhausted. */
int deliver_metrics_format(struct buf *out, const struct deliver_shared *sh);

/* The age in seconds of the oldest row not yet delivered, over every dataset (the live
 * status line's "lag"). */
double deliver_worst_lag(const struct deliver_shared *sh);

/* Runs delivery until SIGTERM or SIGINT (the batch in flight is finished or abandoned
 * whole; its cursor says so). sh: the shared region, or NULL for `ndingest deliver` on its
 * own (a private one is made). inflight: the workers' ranges written for requests not yet
 * answered (inflight.h), never sent; NULL on its own (it cannot see them). Returns the exit code: 0 after a stop, 2 for a usage error
 * (a bad URL or credentials file, a bad definition), 1 for an unusable out dir. */
struct inflight;
int deliver_run(const struct options *o, struct deliver_shared *sh,
                const struct inflight *inflight);

#endif
