/* cursor.c -- where a dataset's delivery stands, stored with write, fsync, rename, fsync of the directory. */
#include "cursor.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CURSOR_MAGIC "ndingest-cursor 1"

static int crash_after;

void cursor_crash_after(int steps)
{
    crash_after = steps;
}

/* A decimal uint64 that is the whole of s (no sign, no blanks): 0, or -1. */
static int parse_u64(const char *s, char **rest, uint64_t *v)
{
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long x = strtoull(s, rest, 10);
    if (errno)
        return -1;
    *v = x;
    return 0;
}

int cursor_load(const char *path, struct cursor *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char line[NAME_MAX + 64];
    int n = 0;
    const char *why = NULL;
    while (!why && fgets(line, sizeof line, f)) {
        n++;
        size_t len = strlen(line);
        if (!len || line[len - 1] != '\n') {
            why = len == sizeof line - 1 ? "line too long" : "no line feed at the end";
            break;
        }
        line[len - 1] = '\0';
        char *rest;
        if (n == 1) {
            if (strcmp(line, CURSOR_MAGIC) != 0)
                why = "not a cursor (expected \"" CURSOR_MAGIC "\")";
        } else if (n == 2) {
            if (strncmp(line, "file ", 5) != 0)
                why = "expected \"file NAME\"";
            else if (strchr(line + 5, '/') || len - 1 - 5 > NAME_MAX)
                why = "NAME must be a file's base name";
            else
                memcpy(c->file, line + 5, len - 5);
        } else if (n == 3) {
            if (strncmp(line, "offset ", 7) != 0 || parse_u64(line + 7, &rest, &c->offset) || *rest)
                why = "expected \"offset N\"";
        } else if (n == 4) {
            if (strncmp(line, "batch ", 6) != 0 || parse_u64(line + 6, &rest, &c->batch_start) ||
                *rest != ' ' || parse_u64(rest + 1, &rest, &c->batch_end) || *rest)
                why = "expected \"batch START END\"";
            else if (c->batch_start != c->offset || c->batch_end <= c->batch_start)
                why = "a batch in flight must be [offset, END) with END past offset";
            else
                c->in_flight = 1;
        } else {
            why = "unexpected line";
        }
    }
    if (!why && ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(EIO));
        fclose(f);
        memset(c, 0, sizeof *c);
        return -1;
    }
    if (!why && n < 3) { /* cut short: name the first missing line */
        why = n == 0 ? "empty: not a cursor" : n == 1 ? "expected \"file NAME\"" : "expected \"offset N\"";
        n++;
    }
    fclose(f);
    if (why) {
        snprintf(err, errlen, "%s:%d: %s", path, n, why);
        memset(c, 0, sizeof *c);
        return -1;
    }
    return 0;
}

static int failed(char *err, size_t errlen, const char *what, const char *path, int e, int fd)
{
    snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
    if (fd >= 0)
        close(fd);
    return -1;
}

static int crashed(char *err, size_t errlen, int step, int fd)
{
    snprintf(err, errlen, "cursor_crash_after(%d)", step);
    if (fd >= 0)
        close(fd);
    return -1;
}

int cursor_store(const char *path, const struct cursor *c, char *err, size_t errlen)
{
    if (strchr(c->file, '/') || strchr(c->file, '\n') ||
        (c->in_flight && (c->batch_start != c->offset || c->batch_end <= c->batch_start))) {
        snprintf(err, errlen, "%s: not a valid cursor", path);
        return -1;
    }
    char text[NAME_MAX + 128];
    int len = snprintf(text, sizeof text, CURSOR_MAGIC "\nfile %s\noffset %" PRIu64 "\n",
                       c->file, c->offset);
    if (c->in_flight)
        len += snprintf(text + len, sizeof text - (size_t)len, "batch %" PRIu64 " %" PRIu64 "\n",
                        c->batch_start, c->batch_end);
    char tmp[PATH_MAX], dir[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return failed(err, errlen, "open", path, ENAMETOOLONG, -1);
    /* O_TRUNC: a PATH.tmp left by a crash is stale and simply overwritten. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return failed(err, errlen, "open", tmp, errno, -1);
    for (int off = 0; off < len;) {
        ssize_t w = write(fd, text + off, (size_t)(len - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return failed(err, errlen, "write", tmp, w < 0 ? errno : EIO, fd);
        off += (int)w;
    }
    if (crash_after == 1)
        return crashed(err, errlen, 1, fd);
    /* The bytes on disk before the name points at them: a rename may be durable before
     * the data of the file it renames, and would then leave an empty cursor. */
    if (fsync(fd))
        return failed(err, errlen, "fsync", tmp, errno, fd);
    if (crash_after == 2)
        return crashed(err, errlen, 2, fd);
    if (close(fd))
        return failed(err, errlen, "close", tmp, errno, -1);
    if (rename(tmp, path))
        return failed(err, errlen, "rename", path, errno, -1);
    if (crash_after == 3)
        return crashed(err, errlen, 3, -1);
    /* The rename itself is durable only once the directory is. */
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return failed(err, errlen, "open", dir, errno, -1);
    if (fsync(dfd))
        return failed(err, errlen, "fsync", dir, errno, dfd);
    close(dfd);
    if (crash_after == 4)
        return crashed(err, errlen, 4, -1);
    return 0;
}
