/* pressure.h -- whether new bodies must wait: the day files' undelivered bytes past
 * --deliver-max-lag, or the output directory's free space under --min-free. Judged at most
 * once a second per worker; a refused body is answered 503 with Retry-After before any of
 * it is read, so nothing is written while the server is under pressure. */
#ifndef NDINGEST_PRESSURE_H
#define NDINGEST_PRESSURE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"

enum pressure_state { PRESSURE_NONE, PRESSURE_LAG, PRESSURE_DISK, PRESSURE_STATES };

/* Indexed by enum pressure_state: "none", "lag", "disk" (the metric's label). */
extern const char *const pressure_names[PRESSURE_STATES];

/* Seconds a refused client is told to wait (Retry-After). */
#define PRESSURE_RETRY_AFTER_TEXT "2"

struct pressure_shared {
    atomic_uint state;                  /* the state the last worker to judge saw */
    atomic_uint_fast64_t transitions;   /* changes of state, counted by whoever saw them */
    atomic_uint_fast64_t refused;       /* bodies refused with 503 */
};

/* One worker's judge. Zero-filled plus the fields below is ready. */
struct pressure {
    const char *dir;                    /* --out-dir: its filesystem's free space */
    uint64_t min_free;                  /* 0: not judged */
    uint64_t max_lag;                   /* 0: not judged */
    const atomic_uint_fast64_t *lag;    /* the delivery's undelivered bytes, or NULL */
    struct pressure_shared *shared;     /* in the memory shared by every worker */
    /* private */
    time_t judged;                      /* CLOCK_MONOTONIC second of the last judgement */
    enum pressure_state state;
    uint64_t free_bytes, lag_bytes;     /* as last judged */
};

/* Whether a body must be refused now: PRESSURE_NONE, or why, with the 503's message in
 * msg[0..len). Judges again (one statvfs, one load) when the last judgement is a second
 * old; a change of state is logged once, by the worker that sees it first, and counted. */
enum pressure_state pressure_judge(struct pressure *p, char *msg, size_t len);

/* Appends ndingest_backpressure{reason} (1 for the state in force) and the counts of
 * transitions and refused bodies to out. 0, or -1 when out cannot grow. */
int pressure_metrics(struct buf *out, const struct pressure_shared *sh);

#endif
