/* worker.c -- one worker process: its event loop, fair accepting, graceful drain. */
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "access_log.h"
#include "auth.h"
#include "catalog.h"
#include "csv.h"
#include "http.h"
#include "idempotency.h"
#include "ingest.h"
#include "log.h"
#include "net.h"
#include "options.h"
#include "sink.h"
#include "slots.h"

/* Connections a wake-up may accept (the balance is checked between them). Under load a
 * loop turn serves every readable connection and may last 100 ms or more, and a wake-up
 * comes once a turn: a batch of 4 left 500 keep-alive clients in the backlog for seconds
 * (doc/design.md, "Fair service"), while 64 empties it in a few turns. */
#define WORKER_ACCEPT_BATCH 64
/* A worker ahead of the least loaded one leaves the socket to the others this long; if
 * connections are still waiting then, the others are busy: it takes a batch regardless. */
#define WORKER_BALANCE_PAUSE_USEC 5000
/* Out of descriptors: accepting again at once would spin; wait for connections to close. */
#define WORKER_EMFILE_PAUSE_USEC 100000
/* ...and while that lasts it fails 10 times a second: one line per this many seconds says
 * so (with how many were not logged); /metrics counts every one. */
#define WORKER_EMFILE_LOG_SEC 10
/* How long the drain lets requests in progress finish before abandoning them. */
#define WORKER_DRAIN_SEC 10
/* Pending rows are written in batches of this much: few write(2)s per body, and bounded
 * memory per connection. */
#define WORKER_FLUSH_BYTES (1 << 20)

struct worker {
    const struct options *o;
    int index;                  /* 0..nslots-1; also the X-Worker header */
    struct worker_slot *slots;  /* every worker's, for balancing */
    int nslots;
    struct worker_slot *slot;   /* slots + index */
    struct event_base *base;
    struct ingest_config ingest;
    struct http_server *http;   /* the connections */
    int listen_fd;              /* -1 once closed */
    int draining;               /* stopping: no more accepting, no more keep-alive */
    char log_prefix[32];        /* "ndingest[pid]" */
    struct access_log access;   /* --access-log; reopened on SIGHUP */
    struct auth auth;           /* --token-file; re-read on SIGHUP */
    struct event *listen_ev, *rearm_ev, *deadline_ev, *sigterm_ev, *sigint_ev, *sighup_ev;
    struct event *fsync_ev;     /* --fsync interval:MS */
    struct sink *rows, *quarantine;
    struct buf header;
    struct catalog *catalog;    /* --datasets: the current set (requests hold their own) */
    const struct deliver_shared *deliver; /* --deliver: the delivery's counters, or NULL */
    const struct auth *tokens;  /* --token-file as the main process holds it, or NULL */
    struct idem_table *idem;    /* Idempotency-Key: the table mapped by the main process */
    const struct inflight *inflight; /* its table of ranges in flight (inflight.h), or NULL */
    struct timespec accept_logged; /* the last accept error's line (0: none yet) */
    unsigned long accept_unlogged; /* accept errors since then, not logged */
};

static void pause_accepting(struct worker *w, long usec)
{
    const struct timeval tv = {0, usec};
    event_del(w->listen_ev);
    evtimer_add(w->rearm_ev, &tv);
}

/* accept(2) failed for want of resources: counted, logged at most every
 * WORKER_EMFILE_LOG_SEC, and accepting pauses so that the loop does not spin. */
static void accept_failed(struct worker *w, int err)
{
    metrics_add(&w->slot->metrics.accept_errors, 1);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (w->accept_logged.tv_sec && now.tv_sec - w->accept_logged.tv_sec < WORKER_EMFILE_LOG_SEC)
        w->accept_unlogged++;
    else {
        if (w->accept_unlogged)
            log_error("%s: accept: %s; pausing accepts for 100 ms (%lu more since the last "
                      "such line)", w->log_prefix, strerror(err), w->accept_unlogged);
        else
            log_error("%s: accept: %s; pausing accepts for 100 ms (logged at most every %d s; "
                      "ndingest_accept_errors_total counts each)", w->log_prefix, strerror(err),
                      WORKER_EMFILE_LOG_SEC);
        w->accept_logged = now;
        w->accept_unlogged = 0;
    }
    pause_accepting(w, WORKER_EMFILE_PAUSE_USEC);
}

/* Whether another running worker holds fewer connections than this one. */
static int others_less_loaded(const struct worker *w)
{
    for (int i = 0; i < w->nslots; i++)
        if (i != w->index && atomic_load_explicit(&w->slots[i].live, memory_order_relaxed) &&
            atomic_load_explicit(&w->slots[i].connections, memory_order_relaxed) <
                http_server_connections(w->http))
            return 1;
    return 0;
}

/* Accepts up to a batch of connections. Every worker polls the same socket, so any of them
 * may find the connection already taken (EAGAIN). balance: step back for a while when a
 * sibling holds fewer connections, so that clients arriving a few at a time are shared. */
static void accept_batch(struct worker *w, int balance)
{
    for (int i = 0; i < WORKER_ACCEPT_BATCH && !w->draining; i++) {
        /* With SO_REUSEPORT the kernel has already chosen this worker: waiting would only
         * delay the connection. */
        if (balance && !w->o->reuseport && others_less_loaded(w)) {
            pause_accepting(w, WORKER_BALANCE_PAUSE_USEC);
            return;
        }
        int cfd = accept4(w->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                accept_failed(w, errno);
            return; /* EAGAIN: a sibling took it; ECONNABORTED: gone already */
        }
        /* Past --max-connections a 503: siblings less loaded were given their chance. */
        if (http_server_accept(w->http, cfd))
            log_error("%s: out of memory for a connection: closed", w->log_prefix);
    }
}

static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    accept_batch(arg, 1);
}

/* The balancing pause is over. Connections still waiting have waited for busy siblings:
 * take a whole batch now, whatever the balance (one per pause drained a deep backlog at one
 * per loop turn). Now, not at the next wake-up: that may be a later burst, which the
 * balance should share. */
static void rearm_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (w->draining)
        return;
    event_add(w->listen_ev, NULL);
    accept_batch(w, 0);
}

static void stop_listening(struct worker *w)
{
    if (w->listen_fd < 0)
        return;
    if (w->listen_ev) /* NULL when the start failed before the loop was set up */
        event_del(w->listen_ev);
    if (w->rearm_ev)
        evtimer_del(w->rearm_ev);
    close(w->listen_fd);
    w->listen_fd = -1;
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    log_error("%s: %u connection(s) still busy %d s after SIGTERM: abandoned", w->log_prefix,
              http_server_connections(w->http), WORKER_DRAIN_SEC);
    http_server_close_all(w->http);
}

/* Stops accepting, closes idle connections, and lets requests in progress finish (their
 * responses say Connection: close) until the deadline. */
static void drain(struct worker *w)
{
    if (w->draining)
        return;
    w->draining = 1;
    stop_listening(w);
    http_server_drain(w->http);
    if (http_server_connections(w->http) == 0) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    const struct timeval tv = {WORKER_DRAIN_SEC, 0};
    evtimer_add(w->deadline_ev, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    drain(arg);
}

/* --fsync: fdatasyncs the dirty sinks. 0, or -errno with a message in err. */
static int sync_sinks(struct worker *w, char *err, size_t errlen)
{
    int r = 0;
    struct sink *sinks[] = {w->rows, w->quarantine, w->http ? http_server_keylog(w->http) : NULL};
    for (size_t i = 0; i < sizeof sinks / sizeof sinks[0]; i++) {
        if (!sinks[i])
            continue;
        int e = sink_sync(sinks[i]);
        if (e && !r) {
            r = e;
            snprintf(err, errlen, "%s", sink_error(sinks[i]));
        }
    }
    char derr[300];
    if (w->catalog && catalog_sync(w->catalog, derr, sizeof derr) && !r) {
        r = -1;
        snprintf(err, errlen, "%s", derr);
    }
    return r;
}

/* --fsync interval:MS */
static void fsync_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    char err[300];
    if (sync_sinks(w, err, sizeof err))
        log_error("%s: %s", w->log_prefix, err);
}

/* What a dataset's catalog_open needs: this worker's options, slot and pipeline limits. */
static int open_datasets(struct worker *w, struct catalog *c, char *err, size_t errlen)
{
    const struct options *o = w->o;
    const struct catalog_files f = {
        .dir = o->out_dir, .utc = o->utc, .header = o->header, .crlf = o->crlf,
        .quarantine = o->quarantine, .fsync = o->fsync != FSYNC_NONE, .slot = w->index,
        .base = &w->ingest,
    };
    return catalog_open(c, &f, err, errlen);
}

/* --datasets on SIGHUP: the directory is loaded again; a bad set is logged and the current
 * one stays. Requests in progress keep the set they started with (they hold it). */
static void reload_datasets(struct worker *w)
{
    char err[600];
    struct catalog *next = catalog_load(w->o->datasets, w->o->max_datasets, w->o->default_dataset,
                                        w->catalog->shared, err, sizeof err);
    if (next && open_datasets(w, next, err, sizeof err)) {
        catalog_release(next);
        next = NULL;
    }
    if (!next) {
        log_error("%s: SIGHUP: %s; keeping the previous datasets", w->log_prefix, err);
        catalog_reopen(w->catalog); /* its files are renamed all the same (logrotate) */
        return;
    }
    catalog_release(w->catalog);
    w->catalog = next;
}

/* SIGHUP (forwarded by the main process): the day's files and the access log are opened
 * anew at their next write, so that a rename by logrotate takes effect; the token file and
 * the datasets' definitions (whose sinks are new, so they too reopen) are read again. */
static void sighup_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    struct worker *w = arg;
    if (w->rows)
        sink_reopen(w->rows);
    if (w->quarantine)
        sink_reopen(w->quarantine);
    access_log_reopen(&w->access);
    if (w->catalog)
        reload_datasets(w);
    if (w->o->token_file)
        auth_reload(&w->auth, w->o->token_file, w->o->datasets != NULL, w->o->max_tokens,
                    w->log_prefix);
    log_info("%s: worker %d reopened its files (SIGHUP)", w->log_prefix, w->index);
}

/* The HTTP side's callbacks. */
static int http_sync(void *arg, char *err, size_t errlen)
{
    return sync_sinks(arg, err, errlen);
}

static void http_drained(void *arg)
{
    struct worker *w = arg;
    event_base_loopexit(w->base, NULL);
}

static int open_sinks(struct worker *w)
{
    const struct options *o = w->o;
    char err[256];
    struct sink_config rows = {.dir = o->out_dir, .name = o->name, .suffix = ".csv", .utc = o->utc,
                               .torn = &w->slots[0].rows_torn};
    if (o->header) {
        if (csv_header(&w->header, &o->columns, o->crlf)) {
            log_error("%s: out of memory for the header row", w->log_prefix);
            return -1;
        }
        rows.header = w->header.p;
        rows.header_len = w->header.len;
    }
    if (!(w->rows = sink_open_daily(&rows, err, sizeof err))) {
        log_error("%s: %s", w->log_prefix, err);
        return -1;
    }
    if (o->quarantine) {
        struct sink_config bad = {.dir = o->out_dir, .name = o->name, .suffix = ".invalid.ndjson",
                                  .utc = o->utc, .torn = &w->slots[0].invalid_torn};
        if (!(w->quarantine = sink_open_daily(&bad, err, sizeof err))) {
            log_error("%s: %s", w->log_prefix, err);
            return -1;
        }
    }
    w->ingest = (struct ingest_config){
        .columns = &o->columns,
        .max_line = o->max_line,
        .crlf = o->crlf,
        .flush_bytes = WORKER_FLUSH_BYTES,
        .rows = w->rows,
        .quarantine = w->quarantine,
        .log_prefix = w->log_prefix,
        .max_inflate = o->max_inflate,
        .max_ratio = o->max_ratio,
        .max_quarantine = o->max_quarantine,
        .max_quarantine_day = o->max_quarantine_day,
    };
    return 0;
}

static int worker_start(struct worker *w)
{
    if (w->idem)
        idem_table_warm(w->idem);
    if (open_sinks(w))
        return -1;
    char err[600];
    if (w->catalog && open_datasets(w, w->catalog, err, sizeof err)) {
        log_error("%s: %s", w->log_prefix, err);
        return -1;
    }
    if (access_log_open(&w->access, w->o->access_log, w->log_prefix, err, sizeof err)) {
        log_error("%s: %s", w->log_prefix, err);
        return -1;
    }
    if (w->tokens) {
        /* The main process's tokens, its copy since the fork: what it loaded at start or at
         * the last SIGHUP. Not read from the file here: a worker started later (a
         * replacement) would otherwise fail on a file that has gone bad since, over and
         * over, while the others keep serving on the tokens they have. */
        w->auth = *w->tokens;
    } else if (w->o->token_file && auth_load(&w->auth, w->o->token_file, w->o->datasets != NULL,
                                             w->o->max_tokens, err, sizeof err)) {
        log_error("%s: %s", w->log_prefix, err);
        return -1;
    }
    if (w->o->reuseport) {
        struct sockaddr_storage ss;
        unsigned sslen;
        if (net_parse_listen(w->o->listen, &ss, &sslen, err, sizeof err) ||
            (w->listen_fd = net_listen_socket(&ss, sslen, 1, 1, err, sizeof err)) < 0) {
            log_error("%s: %s", w->log_prefix, err);
            return -1;
        }
    }
    if (!(w->base = event_base_new()) ||
        !(w->listen_ev = event_new(w->base, w->listen_fd, EV_READ | EV_PERSIST, accept_cb, w)) ||
        !(w->rearm_ev = evtimer_new(w->base, rearm_cb, w)) ||
        !(w->deadline_ev = evtimer_new(w->base, deadline_cb, w)) ||
        !(w->sigterm_ev = evsignal_new(w->base, SIGTERM, signal_cb, w)) ||
        !(w->sigint_ev = evsignal_new(w->base, SIGINT, signal_cb, w)) ||
        !(w->sighup_ev = evsignal_new(w->base, SIGHUP, sighup_cb, w)) ||
        (w->o->fsync == FSYNC_INTERVAL &&
         !(w->fsync_ev = event_new(w->base, -1, EV_PERSIST, fsync_cb, w))) ||
        event_add(w->sigterm_ev, NULL) || event_add(w->sigint_ev, NULL) ||
        event_add(w->sighup_ev, NULL) ||
        event_add(w->listen_ev, NULL)) {
        log_error("%s: cannot set up the event loop", w->log_prefix);
        return -1;
    }
    const struct http_server_config http = {
        .o = w->o, .base = w->base, .slots = w->slots, .nslots = w->nslots, .index = w->index,
        .ingest = &w->ingest, .access = &w->access, .auth = &w->auth, .log_prefix = w->log_prefix,
        .catalog = w->catalog ? &w->catalog : NULL, .default_dataset = w->o->default_dataset,
        .sync = http_sync, .drained = http_drained, .arg = w, .deliver = w->deliver,
        .idem = w->idem, .inflight = w->inflight,
    };
    if (!(w->http = http_server_new(&http))) {
        log_error("%s: out of memory for the HTTP server", w->log_prefix);
        return -1;
    }
    if (w->fsync_ev) {
        const struct timeval tv = {(time_t)(w->o->fsync_ms / 1000), (suseconds_t)(w->o->fsync_ms % 1000) * 1000};
        if (event_add(w->fsync_ev, &tv)) {
            log_error("%s: cannot set up the event loop", w->log_prefix);
            return -1;
        }
    }
    /* The main process blocks its signals before forking; libevent catches them now. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    return 0;
}

static void worker_free(struct worker *w)
{
    http_server_free(w->http);
    stop_listening(w);
    struct event *evs[] = {w->listen_ev, w->rearm_ev, w->deadline_ev, w->sigterm_ev, w->sigint_ev,
                           w->sighup_ev, w->fsync_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    if (w->base)
        event_base_free(w->base);
    if (w->rows)
        sink_close(w->rows);
    if (w->quarantine)
        sink_close(w->quarantine);
    catalog_release(w->catalog); /* after the connections, which released theirs */
    buf_free(&w->header);
    access_log_close(&w->access);
    auth_free(&w->auth);
}

int worker_run(const struct options *o, int index, int listen_fd, struct worker_slot *slots,
               int nslots, struct catalog *datasets, const struct deliver_shared *deliver,
               struct idem_table *idem, const struct auth *tokens,
               const struct inflight *inflight)
{
    struct worker w = {
        .o = o,
        .index = index,
        .slots = slots,
        .nslots = nslots,
        .slot = slots + index,
        .listen_fd = listen_fd,
        .access = {.fd = -1},
        .catalog = datasets,
        .deliver = deliver,
        .idem = idem,
        .tokens = tokens,
        .inflight = inflight,
    };
    snprintf(w.log_prefix, sizeof w.log_prefix, "ndingest[%d]", (int)getpid());
    if (worker_start(&w)) {
        worker_free(&w);
        return 1;
    }
    event_base_dispatch(w.base);
    if (o->fsync != FSYNC_NONE) { /* what the last interval did not cover */
        char err[300];
        if (sync_sinks(&w, err, sizeof err))
            log_error("%s: %s", w.log_prefix, err);
    }
    log_info("%s: worker %d stopped after %llu requests on %llu connections", w.log_prefix, index,
            (unsigned long long)atomic_load(&w.slot->requests),
            (unsigned long long)atomic_load(&w.slot->accepted));
    worker_free(&w);
    return 0;
}
