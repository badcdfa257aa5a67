/* net.h -- socket helpers: the --listen address, the listening socket, a peer's name. */
#ifndef NDINGEST_NET_H
#define NDINGEST_NET_H

#include <stddef.h>
#include <sys/socket.h>

/* Parses "host:port" / "[v6]:port" (":port": every IPv4 address) into ss and *sslen.
 * 0, or -1 with a message in err. */
int net_parse_listen(const char *listen, struct sockaddr_storage *ss, unsigned *sslen,
                     char *err, size_t errlen);

/* A bound, nonblocking, close-on-exec socket (SO_REUSEADDR, and SO_REUSEPORT when
 * reuseport), listening when listen_now (else only bound, to check the address). The
 * descriptor, owned by the caller, or -1 with a message in err. */
int net_listen_socket(const struct sockaddr_storage *ss, unsigned sslen, int reuseport,
                      int listen_now, char *err, size_t errlen);

/* "addr:port" ("[v6]:port") of fd's peer into out, or "-" when it has none (not a
 * socket, already reset). */
void net_peer_name(int fd, char *out, size_t size);

#endif
