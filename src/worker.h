/* worker.h -- one worker process: its event loop, fair accepting from the listening socket,
 * its connections, and a graceful drain on SIGTERM. */
#ifndef NDINGEST_WORKER_H
#define NDINGEST_WORKER_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "ingest.h"
#include "metrics.h"
#include "options.h"

/* One worker's row in the memory shared by the main process and every worker (mapped
 * before the fork). Each worker writes only its own slot; the others read it to balance
 * accepting. A cache line each, so a worker's counting does not slow its neighbours'
 * reads. metrics: never reset, so totals survive a worker's replacement. */
struct worker_slot {
    _Alignas(64) atomic_uint connections; /* open now */
    atomic_uint live;                     /* a process is running this slot (main sets it) */
    atomic_uint_fast64_t accepted;        /* connections, since the slot's process started */
    atomic_uint_fast64_t requests;        /* responses sent */
    struct metrics metrics;               /* GET /metrics, summed over the slots */
    /* Slot 0 only: the day's files may end inside a row (sink_config.torn). */
    atomic_uint rows_torn, invalid_torn;
};

struct http_conn;
struct event_base;

/* --token-file: the longest token accepted. */
#define WORKER_TOKEN_MAX 256
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
    int access_fd;              /* --access-log, O_APPEND; -1: none */
    char token[WORKER_TOKEN_MAX]; /* --token-file's token, zero-padded; re-read on SIGHUP */
    size_t token_len;             /* 0: no --token-file */
    struct http_conn *commits;  /* --fsync request: responses waiting for this turn's fdatasync */
    struct event *commit_ev;    /* activated when the first joins: syncs, then answers them */
    /* private to worker.c */
    struct event *listen_ev, *rearm_ev, *deadline_ev, *sigterm_ev, *sigint_ev, *sighup_ev;
    struct event *fsync_ev;     /* --fsync interval:MS */
    struct sink *rows, *quarantine;
    struct buf header;
};

/* Runs worker index of nslots on listen_fd (or, when o->reuseport is set, on a socket of
 * its own bound to the same address; listen_fd is then -1) until SIGTERM/SIGINT, then
 * drains. Owns listen_fd. Opens the day's sinks itself, so call it after the fork. Returns
 * the process exit code: 0 after a clean drain, 1 when it cannot start. */
int worker_run(const struct options *o, int index, int listen_fd, struct worker_slot *slots,
               int nslots);

/* Opens --access-log for appending: the descriptor, or -1 with a message in err. */
int worker_open_access_log(const char *path, char *err, size_t errlen);

/* Reads --token-file's first line, trailing whitespace stripped, into out (zero-padded to
 * WORKER_TOKEN_MAX): its length, or 0 with a message in err (missing, empty, too long). */
size_t worker_read_token(const char *path, char *out, char *err, size_t errlen);

/* --fsync request: fdatasyncs the dirty sinks. 0, or -errno with a message in err. */
int worker_sync(struct worker *w, char *err, size_t errlen);

/* Called by http.c when connection c has closed and unlinked itself. */
void worker_conn_closed(struct worker *w);

/* Socket helpers shared with server.c. */
struct sockaddr_storage;
/* Parses "host:port" / "[v6]:port" into ss. 0, or -1 with a message in err. */
int listen_addr_parse(const char *listen, struct sockaddr_storage *ss, unsigned *sslen,
                      char *err, size_t errlen);
/* A bound, nonblocking socket (SO_REUSEADDR, and SO_REUSEPORT when asked), listening
 * when listen_now (else only bound, to check the address). The descriptor, or -1 with a
 * message in err. */
int listen_socket(const struct sockaddr_storage *ss, unsigned sslen, int reuseport,
                  int listen_now, char *err, size_t errlen);

#endif
