/* worker.c -- one worker process: its event loop, fair accepting, graceful drain. */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "csv.h"
#include "http.h"
#include "log.h"
#include "sink.h"

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
/* How long the drain lets requests in progress finish before abandoning them. */
#define WORKER_DRAIN_SEC 10
/* Pending rows are written in batches of this much: few write(2)s per body, and bounded
 * memory per connection. */
#define WORKER_FLUSH_BYTES (1 << 20)
#define WORKER_BACKLOG 1024

int listen_addr_parse(const char *listen, struct sockaddr_storage *ss, unsigned *sslen,
                      char *err, size_t errlen)
{
    char host[256];
    const char *port;
    if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (!end || end[1] != ':' || (size_t)(end - listen - 1) >= sizeof host)
            goto malformed;
        memcpy(host, listen + 1, (size_t)(end - listen - 1));
        host[end - listen - 1] = '\0';
        port = end + 2;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon || (size_t)(colon - listen) >= sizeof host || memchr(listen, ':', (size_t)(colon - listen)))
            goto malformed;
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
        port = colon + 1;
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 1 || p > 65535)
        goto malformed;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    hints.ai_family = host[0] ? AF_UNSPEC : AF_INET; /* ":8888" means every IPv4 address */
    struct addrinfo *res;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "--listen %s: %s", listen, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = (unsigned)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
malformed:
    snprintf(err, errlen, "--listen '%s': expected ADDR:PORT, or [IPv6]:PORT", listen);
    return -1;
}

int listen_socket(const struct sockaddr_storage *ss, unsigned sslen, int reuseport,
                  int listen_now, char *err, size_t errlen)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) ||
        bind(fd, (const struct sockaddr *)ss, sslen) ||
        (listen_now && listen(fd, WORKER_BACKLOG))) {
        snprintf(err, errlen, "cannot listen: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void pause_accepting(struct worker *w, long usec)
{
    const struct timeval tv = {0, usec};
    event_del(w->listen_ev);
    evtimer_add(w->rearm_ev, &tv);
}

/* Whether another running worker holds fewer connections than this one. */
static int others_less_loaded(const struct worker *w)
{
    for (int i = 0; i < w->nslots; i++)
        if (i != w->index && atomic_load_explicit(&w->slots[i].live, memory_order_relaxed) &&
            atomic_load_explicit(&w->slots[i].connections, memory_order_relaxed) < w->nconns)
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
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_error("%s: accept: %s; pausing accepts for 100 ms", w->log_prefix,
                          strerror(errno));
                pause_accepting(w, WORKER_EMFILE_PAUSE_USEC);
            }
            return; /* EAGAIN: a sibling took it; ECONNABORTED: gone already */
        }
        if (w->nconns >= w->o->max_connections)
            http_refuse(w, cfd); /* 503, closed: siblings less loaded were given their chance */
        else if (!http_conn_new(w, cfd))
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
    event_del(w->listen_ev);
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
              w->nconns, WORKER_DRAIN_SEC);
    while (w->conns)
        http_conn_free(w->conns);
}

/* Stops accepting, closes idle connections, and lets requests in progress finish (their
 * responses say Connection: close) until the deadline. */
static void drain(struct worker *w)
{
    if (w->draining)
        return;
    w->draining = 1;
    stop_listening(w);
    for (struct http_conn *c = w->conns, *next; c; c = next) {
        next = http_conn_next(c);
        http_conn_drain(c);
    }
    if (w->nconns == 0) {
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

int worker_open_access_log(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        snprintf(err, errlen, "--access-log %s: %s", path, strerror(errno));
    return fd;
}

size_t worker_read_token(const char *path, char *out, char *err, size_t errlen)
{
    char line[WORKER_TOKEN_MAX + 2];
    memset(out, 0, WORKER_TOKEN_MAX);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "--token-file %s: %s", path, strerror(errno));
        return 0;
    }
    ssize_t n;
    do
        n = read(fd, line, sizeof line);
    while (n < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "--token-file %s: %s", path, strerror(e));
        return 0;
    }
    size_t len = 0;
    while (len < (size_t)n && line[len] != '\n')
        len++;
    if (len > WORKER_TOKEN_MAX) {
        snprintf(err, errlen, "--token-file %s: the token is longer than %d bytes", path,
                 WORKER_TOKEN_MAX);
        return 0;
    }
    while (len && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
        len--;
    if (!len) {
        snprintf(err, errlen, "--token-file %s: empty (the token is its first line)", path);
        return 0;
    }
    memcpy(out, line, len);
    return len;
}

int worker_sync(struct worker *w, char *err, size_t errlen)
{
    int r = 0;
    struct sink *sinks[] = {w->rows, w->quarantine};
    for (size_t i = 0; i < 2; i++) {
        if (!sinks[i])
            continue;
        int e = sink_sync(sinks[i]);
        if (e && !r) {
            r = e;
            snprintf(err, errlen, "%s", sink_error(sinks[i]));
        }
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
    if (worker_sync(w, err, sizeof err))
        log_error("%s: %s", w->log_prefix, err);
}

/* SIGHUP (forwarded by the main process): the day's files and the access log are opened
 * anew at their next write, so that a rename by logrotate takes effect; the token file is
 * read again. */
static void sighup_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    struct worker *w = arg;
    if (w->rows)
        sink_reopen(w->rows);
    if (w->quarantine)
        sink_reopen(w->quarantine);
    char err[300];
    if (w->access_fd >= 0) {
        int fd = worker_open_access_log(w->o->access_log, err, sizeof err);
        if (fd < 0)
            log_error("%s: SIGHUP: %s; still writing the old file", w->log_prefix, err);
        else {
            dup3(fd, w->access_fd, O_CLOEXEC); /* the same number: nothing sees it closed */
            close(fd);
        }
    }
    if (w->o->token_file) {
        char token[WORKER_TOKEN_MAX];
        size_t len = worker_read_token(w->o->token_file, token, err, sizeof err);
        if (!len)
            log_error("%s: SIGHUP: %s; keeping the previous token", w->log_prefix, err);
        else {
            memcpy(w->token, token, sizeof w->token);
            w->token_len = len;
        }
    }
    log_info("%s: worker %d reopened its files (SIGHUP)", w->log_prefix, w->index);
}

void worker_conn_closed(struct worker *w)
{
    if (w->draining && w->nconns == 0)
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
    };
    return 0;
}

static int worker_start(struct worker *w)
{
    if (open_sinks(w))
        return -1;
    if (w->o->access_log) {
        char err[256];
        if ((w->access_fd = worker_open_access_log(w->o->access_log, err, sizeof err)) < 0) {
            log_error("%s: %s", w->log_prefix, err);
            return -1;
        }
    }
    if (w->o->token_file) {
        char err[300];
        if (!(w->token_len = worker_read_token(w->o->token_file, w->token, err, sizeof err))) {
            log_error("%s: %s", w->log_prefix, err);
            return -1;
        }
    }
    if (w->o->reuseport) {
        char err[256];
        struct sockaddr_storage ss;
        unsigned sslen;
        if (listen_addr_parse(w->o->listen, &ss, &sslen, err, sizeof err) ||
            (w->listen_fd = listen_socket(&ss, sslen, 1, 1, err, sizeof err)) < 0) {
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
        !(w->commit_ev = event_new(w->base, -1, 0, http_commit, w)) ||
        (w->o->fsync == FSYNC_INTERVAL &&
         !(w->fsync_ev = event_new(w->base, -1, EV_PERSIST, fsync_cb, w))) ||
        event_add(w->sigterm_ev, NULL) || event_add(w->sigint_ev, NULL) ||
        event_add(w->sighup_ev, NULL) ||
        event_add(w->listen_ev, NULL)) {
        log_error("%s: cannot set up the event loop", w->log_prefix);
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
    while (w->conns)
        http_conn_free(w->conns);
    stop_listening(w);
    struct event *evs[] = {w->listen_ev, w->rearm_ev, w->deadline_ev, w->sigterm_ev, w->sigint_ev,
                           w->sighup_ev, w->commit_ev, w->fsync_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    if (w->base)
        event_base_free(w->base);
    if (w->rows)
        sink_close(w->rows);
    if (w->quarantine)
        sink_close(w->quarantine);
    buf_free(&w->header);
    if (w->access_fd >= 0)
        close(w->access_fd);
}

int worker_run(const struct options *o, int index, int listen_fd, struct worker_slot *slots,
               int nslots)
{
    struct worker w = {
        .o = o,
        .index = index,
        .slots = slots,
        .nslots = nslots,
        .slot = slots + index,
        .listen_fd = listen_fd,
        .access_fd = -1,
    };
    snprintf(w.log_prefix, sizeof w.log_prefix, "ndingest[%d]", (int)getpid());
    if (worker_start(&w)) {
        worker_free(&w);
        return 1;
    }
    event_base_dispatch(w.base);
    if (o->fsync != FSYNC_NONE) { /* what the last interval did not cover */
        char err[300];
        if (worker_sync(&w, err, sizeof err))
            log_error("%s: %s", w.log_prefix, err);
    }
    log_info("%s: worker %d stopped after %llu requests on %llu connections", w.log_prefix, index,
            (unsigned long long)atomic_load(&w.slot->requests),
            (unsigned long long)atomic_load(&w.slot->accepted));
    worker_free(&w);
    return 0;
}
