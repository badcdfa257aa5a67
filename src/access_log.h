/* access_log.h -- --access-log: one line per request, appended with one write(2). */
#ifndef NDINGEST_ACCESS_LOG_H
#define NDINGEST_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

/* fd -1: no access log (access_log_enabled() is 0, writes do nothing). path and log_prefix
 * are borrowed and must outlive the log. */
struct access_log {
    int fd;                 /* O_APPEND: the lines of every worker land whole */
    const char *path;
    const char *log_prefix; /* for the one error line a failing write produces */
    int told;               /* a failed write was reported already */
};

/* One request, as logged. path is a span (not NUL-terminated); truncated: the request's
 * path was longer than what was kept of it. valid/invalid: rows, 0 without a body. */
struct access_log_entry {
    const char *peer;   /* "addr:port" or "-" */
    const char *method; /* "-" when the request line did not get that far */
    const char *path;
    size_t path_len;
    int truncated;
    int status;         /* 0: no response was sent */
    uint64_t body_bytes, valid, invalid;
    uint64_t ns;        /* from the request's first byte */
};

/* The longest line access_log_format writes, newline included. */
#define ACCESS_LOG_LINE_MAX 320
/* The most of a path a line shows; a longer (or truncated) one ends in "...". */
#define ACCESS_LOG_PATH_MAX 76

static inline int access_log_enabled(const struct access_log *l)
{
    return l->fd >= 0;
}

/* Opens path for appending (created 0644). 0, or -1 with a message in err (l->fd is then
 * -1). path NULL: l is a disabled log and 0 is returned. */
int access_log_open(struct access_log *l, const char *path, const char *log_prefix, char *err,
                    size_t errlen);

/* SIGHUP: opens the path anew into the same descriptor number (dup3), so that a rename by
 * logrotate takes effect and nothing holding the number sees it closed. On error the old
 * file stays and the error is logged. */
void access_log_reopen(struct access_log *l);

void access_log_close(struct access_log *l);

/* The line for e into out (ACCESS_LOG_LINE_MAX bytes), ending in "\n": "TS PEER METHOD PATH
 * STATUS BODY_BYTES VALID INVALID MS.mmm". Bytes of the path that are not printable ASCII,
 * and '"', become '?'; an empty path is "-". A line that would not fit is cut and still
 * ends in "\n". Returns its length. */
size_t access_log_format(char *out, const char *ts, const struct access_log_entry *e);

/* Appends e's line with the current UTC time (one write(2); a failure is logged once per
 * process). Per request, so the snprintf behind it is affordable. */
void access_log_write(struct access_log *l, const struct access_log_entry *e);

#endif
