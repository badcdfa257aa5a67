/* route.c -- the routing table: request target and method to a route, and what it needs. */
#include "route.h"

#include <string.h>

#define PATH(s) (s), sizeof(s) - 1

/* Counts are operational data, so /metrics is guarded like the rows; /healthz stays open
 * for load balancers and probes. */
static const struct route routes[] = {
    {PATH("/"), ROUTE_INGEST, ROUTE_POST, "Allow: POST\r\n", "method not allowed: use POST", 1},
    {PATH("/v0/events"), ROUTE_EVENTS, ROUTE_POST, "Allow: POST\r\n", "method not allowed: use POST", 1},
    {PATH("/healthz"), ROUTE_HEALTH, ROUTE_GET | ROUTE_HEAD, "Allow: GET, HEAD\r\n",
     "method not allowed: use GET", 0},
    {PATH("/metrics"), ROUTE_METRICS, ROUTE_GET | ROUTE_HEAD, "Allow: GET, HEAD\r\n",
     "method not allowed: use GET", 1},
};

const char route_not_found[] = "no such path: POST bodies to /, GET /healthz or /metrics";

const struct route *route_find(const char *path, size_t n)
{
    size_t len = 0;
    while (len < n && path[len] != '?' && path[len] != '#')
        len++;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (routes[i].path_len == len && !memcmp(routes[i].path, path, len))
            return &routes[i];
    return NULL;
}

int route_allows(const struct route *r, unsigned method)
{
    return method != 0 && (r->methods & method) == method;
}
