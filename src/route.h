/* route.h -- the routing table: request target and method to a route, and what it needs. */
#ifndef NDINGEST_ROUTE_H
#define NDINGEST_ROUTE_H

#include <stddef.h>

/* What http.c does with a request once its route is known (its handler). */
enum route_id {
    ROUTE_INGEST,  /* POST /: today's contract */
    ROUTE_EVENTS,  /* POST /v0/events?name=NAME: Tinybird's Events API (only with --datasets) */
    ROUTE_HEALTH,
    ROUTE_METRICS,
};

/* The methods a route may serve, as bits (http.c maps llhttp's methods onto them; any other
 * method is 0 and gets 405 everywhere). HEAD is answered as GET without the body. */
enum route_method { ROUTE_GET = 1 << 0, ROUTE_HEAD = 1 << 1, ROUTE_POST = 1 << 2 };

/* One row of the table. Adding a route is one row here, plus a handler in http.c when it
 * does something new. */
struct route {
    const char *path;    /* matched exactly, before any '?' or '#' */
    size_t path_len;
    enum route_id id;
    unsigned methods;    /* enum route_method bits */
    const char *allow;   /* the 405's header line: "Allow: GET, HEAD\r\n" */
    const char *refusal; /* the 405's message */
    int needs_token;     /* with --token-file: 401 without "Authorization: Bearer <token>" */
};

/* The 404's message: what there is instead. */
extern const char route_not_found[];

/* The route of the request target path[0..n) (query and fragment ignored), or NULL (404).
 * path need not be NUL-terminated; a NUL byte in it is a byte like another. */
const struct route *route_find(const char *path, size_t n);

/* Whether r serves method (one enum route_method bit, or 0 for any other); 0 means 405. */
int route_allows(const struct route *r, unsigned method);

#endif
