/* server.h -- the main process: binds the listening socket once, forks the workers,
 * replaces a worker that dies, and stops them gracefully on SIGTERM/SIGINT. */
#ifndef NDINGEST_SERVER_H
#define NDINGEST_SERVER_H

#include "options.h"

/* Serves until SIGTERM/SIGINT; returns the process exit code (0 after a clean stop,
 * 1 when it cannot start). */
int server_run(const struct options *o);

#endif
