/* log.c -- stderr lines: informational ones (silenced by --quiet) and timestamped errors. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static int quiet;

void log_set_quiet(int q)
{
    quiet = q;
}

size_t log_timestamp(char *out, size_t size, int millis)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = millis ? snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                              ts.tv_nsec / 1000000)
                   : snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                              tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

static void emit(const char *prefix, size_t plen, const char *fmt, va_list ap)
{
    char line[1024];
    size_t n = plen;
    for (size_t i = 0; i < plen; i++)
        line[i] = prefix[i];
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): the callers' va_start */
    if (m < 0)
        return;
    n += (size_t)m < sizeof line - n - 1 ? (size_t)m : sizeof line - n - 2;
    line[n++] = '\n';
    /* One write: a line from one worker never splits another's. Nothing to do on failure. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void log_info(const char *fmt, ...)
{
    if (quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    emit("", 0, fmt, ap);
    va_end(ap);
}

void log_error(const char *fmt, ...)
{
    char ts[40];
    size_t n = log_timestamp(ts, sizeof ts - 1, 0);
    ts[n++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    emit(ts, n, fmt, ap);
    va_end(ap);
}
