/* access_log.c -- --access-log: one line per request, appended with one write(2). */
#include "access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

int access_log_open(struct access_log *l, const char *path, const char *log_prefix, char *err,
                    size_t errlen)
{
    *l = (struct access_log){.fd = -1, .path = path, .log_prefix = log_prefix};
    if (!path)
        return 0;
    l->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (l->fd < 0) {
        snprintf(err, errlen, "--access-log %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void access_log_reopen(struct access_log *l)
{
    if (l->fd < 0)
        return;
    int fd = open(l->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_error("%s: SIGHUP: --access-log %s: %s; still writing the old file", l->log_prefix,
                  l->path, strerror(errno));
        return;
    }
    dup3(fd, l->fd, O_CLOEXEC); /* the same number: nothing sees it closed */
    close(fd);
}

void access_log_close(struct access_log *l)
{
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
}

/* s[0..n) as one field: bytes that are not printable ASCII, and '"', become '?'. */
static size_t field(char *dst, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        dst[o++] = ch <= 0x20 || ch >= 0x7f || ch == '"' ? '?' : (char)ch;
    }
    if (!o && cap > 1)
        dst[o++] = '-';
    dst[o] = '\0';
    return o;
}

size_t access_log_format(char *out, const char *ts, const struct access_log_entry *e)
{
    char path[ACCESS_LOG_PATH_MAX + 4];
    size_t len = field(path, ACCESS_LOG_PATH_MAX + 1, e->path, e->path_len);
    if (e->truncated || e->path_len > ACCESS_LOG_PATH_MAX)
        memcpy(path + len, "...", 4);
    int n = snprintf(out, ACCESS_LOG_LINE_MAX, "%s %s %s %s %d %llu %llu %llu %llu.%03llu\n", ts,
                     e->peer, e->method, path, e->status, (unsigned long long)e->body_bytes,
                     (unsigned long long)e->valid, (unsigned long long)e->invalid,
                     (unsigned long long)(e->ns / 1000000), (unsigned long long)(e->ns / 1000 % 1000));
    if (n <= 0)
        return 0;
    if ((size_t)n >= ACCESS_LOG_LINE_MAX) {
        n = ACCESS_LOG_LINE_MAX;
        out[n - 1] = '\n';
    }
    return (size_t)n;
}

void access_log_write(struct access_log *l, const struct access_log_entry *e)
{
    if (l->fd < 0)
        return;
    char ts[40], line[ACCESS_LOG_LINE_MAX];
    log_timestamp(ts, sizeof ts, 1);
    size_t n = access_log_format(line, ts, e);
    if (n && write(l->fd, line, n) < 0 && !l->told++) /* nothing better to do than say so, once */
        log_error("%s: --access-log: %s", l->log_prefix, strerror(errno));
}
