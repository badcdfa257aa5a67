/* http.h -- a worker's HTTP side: its client connections, HTTP/1.x framing with llhttp over
 * bufferevents, the routes (route.h: POST / ingests the body as it arrives, POST /v0/events
 * into a named dataset, GET /healthz, GET /metrics), the responses, and the group commit of
 * --fsync request. */
#ifndef NDINGEST_HTTP_H
#define NDINGEST_HTTP_H

#include <stddef.h>

#include <event2/util.h>

struct access_log;
struct auth;
struct bufferevent;
struct catalog;
struct deliver_shared;
struct event_base;
struct idem_table;
struct sink;
struct ingest_config;
struct options;
struct worker_slot;

/* Limits (struct options): a request target whose path (routing looks at nothing else;
 * origin- or absolute-form) is longer than --max-path gets 414, its query being kept up to
 * as many bytes again; request line plus headers (and trailers) past --max-header
 * bytes or --max-headers fields get 431; headers not complete --header-timeout seconds
 * after the connection opened (first request) or the request began (later ones) get 408,
 * as does a body not complete --body-timeout seconds after its headers; a connection idle
 * --timeout seconds is closed; past --max-connections a new one gets 503. */

/* What the worker lends the server. Every pointer is borrowed and must outlive it. */
struct http_server_config {
    const struct options *o;            /* the limits above, --max-body, --fsync */
    struct event_base *base;
    struct worker_slot *slots;          /* every worker's: /metrics sums them */
    int nslots;
    int index;                          /* this worker's slot; also the X-Worker header */
    const struct ingest_config *ingest; /* each connection's pipeline writes through it */
    struct access_log *access;          /* a disabled log (fd -1) logs nothing */
    const struct auth *auth;            /* no token loaded: nothing is guarded */
    /* --datasets: where the worker keeps its current set (it replaces it on SIGHUP; each
     * request holds a reference to the one it started with), or NULL: POST / as ever, and
     * /v0/events is 404. default_dataset: what POST / appends to then (NULL: 404). */
    struct catalog *const *catalog;
    const char *default_dataset;
    const char *log_prefix;             /* "ndingest[pid]" */
    /* --deliver: the delivery process's counters (/metrics), or NULL. */
    const struct deliver_shared *deliver;
    /* --fsync request: fdatasyncs what the worker's sinks have written. 0, or nonzero with
     * a message in err (every request waiting for it then gets a 500 with that message).
     * Called from the event loop, at most once per loop turn. */
    int (*sync)(void *arg, char *err, size_t errlen);
    /* After http_server_drain: called when the last connection has closed (may be NULL). */
    void (*drained)(void *arg);
    void *arg;                          /* for sync and drained */
    /* Idempotency-Key (idempotency.h): the key table every worker shares, or NULL: the
     * header is ignored. The key log goes to o->out_dir/.idempotency. */
    struct idem_table *idem;
    /* Every worker's table of ranges in flight (inflight.h; this one's is index's), or
     * NULL: not tracked (a failed request's rows are then not voided). */
    const struct inflight *inflight;
};

struct http_server;

/* A server with no connections yet. NULL when memory is exhausted. */
struct http_server *http_server_new(const struct http_server_config *cfg);

/* Closes every connection now (bodies being ingested are abandoned: rows not yet written
 * are dropped), then frees s. NULL is a no-op. Call it before freeing the event base. */
void http_server_free(struct http_server *s);

/* Takes over the accepted, nonblocking socket fd: the connection serves requests until
 * the client leaves, a timeout, an error response, or the drain closes it. At
 * --max-connections fd gets a 503 at once and is closed (0 is returned). -1 when memory is
 * exhausted (fd is then closed). */
int http_server_accept(struct http_server *s, evutil_socket_t fd);

/* The same over any bufferevent (a bufferevent_pair in tests and fuzzing): the server owns
 * bev from now, even on failure (-1, bev freed). peer: the access log's name for the
 * client, or NULL for "-". */
int http_server_attach(struct http_server *s, struct bufferevent *bev, const char *peer);

/* The key log this server appends to, NULL until its first record: the worker's --fsync
 * syncs it with its other sinks. */
struct sink *http_server_keylog(struct http_server *s);

/* Connections open now (for balancing the accepting between workers). */
unsigned http_server_connections(const struct http_server *s);

/* The worker is stopping: idle connections close now, one in the middle of a request (or
 * waiting for the group commit) closes after its response, which says Connection: close.
 * drained() is called when the last one has gone (not when none was open). */
void http_server_drain(struct http_server *s);

/* The drain's deadline: closes every connection now, as http_server_free does. */
void http_server_close_all(struct http_server *s);

#endif
