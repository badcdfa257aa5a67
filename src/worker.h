/* worker.h -- one worker process: its event loop, fair accepting from the listening socket,
 * its connections, and a graceful drain on SIGTERM. */
#ifndef NDINGEST_WORKER_H
#define NDINGEST_WORKER_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "access_log.h"
#include "auth.h"
#include "ingest.h"
#include "options.h"
#include "slots.h"

struct http_conn;
struct event_base;

struct event;

struct worker {
    const struct options *o;
    int index;                  /* 0..nslots-1; also the X-Worker header */
    struct worker_slot *slots;  /* every worker's, for balancing */
    int nslots;
    struct worker_slot *slot;   /* slots + index */
    struct event_base *base;
    struct ingest_config ingest;
    int listen_fd;              /* -1 once closed */
    int draining;               /* stopping: no more accepting, no more keep-alive */
    struct http_conn *conns;    /* open connections, for the drain */
    unsigned nconns;
    char log_prefix[32];        /* "ndingest[pid]" */
    struct access_log access;   /* --access-log; reopened on SIGHUP */
    struct auth auth;           /* --token-file; re-read on SIGHUP */
    struct http_conn *commits;  /* --fsync request: responses waiting for this turn's fdatasync */
    struct event *commit_ev;    /* activated when the first joins: syncs, then answers them */
    /* private to worker.c */
    struct event *listen_ev, *rearm_ev, *deadline_ev, *sigterm_ev, *sigint_ev, *sighup_ev;
    struct event *fsync_ev;     /* --fsync interval:MS */
    int force_accept;           /* the balancing pause is over: accept even if unbalanced */
    struct sink *rows, *quarantine;
    struct buf header;
};

/* Runs worker index of nslots on listen_fd (or, when o->reuseport is set, on a socket of
 * its own bound to the same address; listen_fd is then -1) until SIGTERM/SIGINT, then
 * drains. Owns listen_fd. Opens the day's sinks itself, so call it after the fork. Returns
 * the process exit code: 0 after a clean drain, 1 when it cannot start. */
int worker_run(const struct options *o, int index, int listen_fd, struct worker_slot *slots,
               int nslots);

/* --fsync request: fdatasyncs the dirty sinks. 0, or -errno with a message in err. */
int worker_sync(struct worker *w, char *err, size_t errlen);

/* Called by http.c when connection c has closed and unlinked itself. */
void worker_conn_closed(struct worker *w);

#endif
