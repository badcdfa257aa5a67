/* worker.h -- one worker process: its event loop, fair accepting from the listening socket,
 * its sinks, SIGHUP, and a graceful drain on SIGTERM. Its connections are http.c's. */
#ifndef NDINGEST_WORKER_H
#define NDINGEST_WORKER_H

struct catalog;
struct deliver_shared;
struct idem_table;
struct inflight;
struct auth;
struct options;
struct worker_slot;

/* Runs worker index of nslots on listen_fd (or, when o->reuseport is set, on a socket of
 * its own bound to the same address; listen_fd is then -1) until SIGTERM/SIGINT, then
 * drains. Owns listen_fd. Opens the day's sinks itself, so call it after the fork.
 * datasets (--datasets, else NULL): the set loaded by the main process; the worker takes
 * over the reference (its copy after the fork), opens its sinks, and on SIGHUP loads the
 * directory again. deliver (--deliver, else NULL): the delivery process's counters, for
 * /metrics and backpressure. idem: the Idempotency-Key table (idempotency.h) mapped before
 * the fork. tokens: --token-file as the main process holds it (the worker takes over its
 * copy after the fork), or NULL to read the file itself (--workers 0). inflight: every
 * worker's table of day-file ranges written by requests not yet answered (inflight.h),
 * mapped before the fork (its own cleared by the main process), or NULL.
 * Returns the process exit code: 0 after a clean drain, 1 when it cannot start. */
int worker_run(const struct options *o, int index, int listen_fd, struct worker_slot *slots,
               int nslots, struct catalog *datasets, const struct deliver_shared *deliver,
               struct idem_table *idem, const struct auth *tokens,
               const struct inflight *inflight);

#endif
