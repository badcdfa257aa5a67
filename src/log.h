/* log.h -- stderr lines: informational ones (silenced by --quiet) and errors, which carry
 * a UTC timestamp. Each line is one write(2), so lines of different workers never mix. */
#ifndef NDINGEST_LOG_H
#define NDINGEST_LOG_H

#include <stddef.h>

/* --quiet: log_info prints nothing from now on (in this process and those forked after). */
void log_set_quiet(int quiet);

/* An informational line, as given (a newline is added). */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An error or warning: "2026-01-31T23:59:59Z " then the line (a newline is added). */
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The current UTC time as "2026-01-31T23:59:59.123Z" (with millis) or without them;
 * returns its length. out needs 32 bytes. */
size_t log_timestamp(char *out, size_t size, int millis);

#endif
