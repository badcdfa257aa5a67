/* net.c -- socket helpers: the --listen address, the listening socket, a peer's name. */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The kernel caps it at net.core.somaxconn; a burst of connects waits here, not refused. */
#define NET_BACKLOG 1024

int net_parse_listen(const char *listen, struct sockaddr_storage *ss, unsigned *sslen,
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

int net_listen_socket(const struct sockaddr_storage *ss, unsigned sslen, int reuseport,
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
        (listen_now && listen(fd, NET_BACKLOG))) {
        snprintf(err, errlen, "cannot listen: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

void net_peer_name(int fd, char *out, size_t size)
{
    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN];
    snprintf(out, size, "-");
    if (getpeername(fd, (struct sockaddr *)&ss, &len))
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof host))
            snprintf(out, size, "%s:%u", host, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host))
            snprintf(out, size, "[%s]:%u", host, ntohs(a->sin6_port));
    }
}
