/* http.h -- one client connection: HTTP/1.x framing with llhttp over a bufferevent, the
 * routes (POST / ingests the body as it arrives, GET /healthz), and the responses. */
#ifndef NDINGEST_HTTP_H
#define NDINGEST_HTTP_H

#include <event2/util.h>

struct worker;
struct http_conn;

/* Limits (struct options): request line plus headers (and trailers) past --max-header
 * bytes or --max-headers fields get 431; headers not complete --header-timeout seconds
 * after the connection opened (first request) or the request began (later ones) get 408,
 * as does a body not complete --body-timeout seconds after its headers. */

/* Takes over the accepted socket fd (nonblocking): the connection serves requests until
 * the client leaves, a timeout, an error response, or the worker's drain closes it. NULL
 * when memory is exhausted (fd is then closed). The connection links itself into the
 * worker's list and calls worker_conn_closed() when it goes away. */
struct http_conn *http_conn_new(struct worker *w, evutil_socket_t fd);

/* The worker holds --max-connections already: answers 503 on fd at once and closes it. */
void http_refuse(struct worker *w, evutil_socket_t fd);

/* The worker is stopping: an idle connection closes now (and is freed before this
 * returns), one in the middle of a request closes after its response. */
void http_conn_drain(struct http_conn *c);

/* Closes now; a body being ingested is abandoned (rows not yet written are dropped). */
void http_conn_free(struct http_conn *c);

/* The worker's commit event (--fsync request): fdatasyncs the files written this loop
 * turn once, then sends the responses of every request that waited for it (arg: the
 * worker). */
void http_commit(evutil_socket_t fd, short what, void *arg);

/* The connection following c in its worker's list (for walking it while freeing). */
struct http_conn *http_conn_next(const struct http_conn *c);

#endif
