/* convert.h -- the offline command: NDJSON files (or stdin) to CSV on stdout through the
 * same pipeline as the server; the stats JSON on stderr. */
#ifndef NDINGEST_CONVERT_H
#define NDINGEST_CONVERT_H

#include "options.h"

/* Returns the exit code: 0, or 2 on I/O errors. */
int convert_run(const struct options *o);

#endif
