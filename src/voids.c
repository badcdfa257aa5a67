/* voids.c -- the .void record beside a day file: appended by the writer that isolates a torn tail, read by every reader. */
#include "voids.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int record_path(char *out, size_t outlen, const char *day_path)
{
    int n = snprintf(out, outlen, "%s%s", day_path, VOIDS_SUFFIX);
    return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

static int is_word(const char *w)
{
    size_t n = 0;
    for (; w[n]; n++)
        if (!((w[n] >= 'a' && w[n] <= 'z') || (w[n] >= 'A' && w[n] <= 'Z')))
            return 0;
    return n > 0 && n <= VOIDS_REASON_MAX;
}

int voids_append(const char *day_path, uint64_t start, uint64_t end, const char *reason,
                 int sync)
{
    char path[PATH_MAX];
    if (record_path(path, sizeof path, day_path))
        return -ENAMETOOLONG;
    if (start >= end || !is_word(reason))
        return -EINVAL;
    char line[64];
    int n = snprintf(line, sizeof line, "%llu %llu %s\n", (unsigned long long)start,
                     (unsigned long long)end, reason);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    /* Appenders of one record take turns (voids.h), so a write cut short (a full disk, a
     * size limit) can be continued, and if the rest fails too, the part written is taken
     * back: the next line must not glue onto it into one malformed line that would make
     * the record unreadable for everyone. */
    int r = 0;
    off_t begin = -1;
    for (int done = 0; done < n;) {
        ssize_t w = write(fd, line + done, (size_t)(n - done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            r = w < 0 ? -errno : -EIO;
            break;
        }
        if (!done)
            begin = lseek(fd, 0, SEEK_CUR) - w; /* O_APPEND: just past the bytes written */
        done += (int)w;
    }
    if (r && begin >= 0)
        (void)!ftruncate(fd, begin);
    if (!r && sync && fdatasync(fd))
        r = -errno;
    if (close(fd) && !r)
        r = -errno;
    return r;
}

int voids_record(const char *day_path, uint64_t ino, uint64_t start, uint64_t end,
                 const char *reason)
{
    int fd = open(day_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno; /* deleted: the rows went with it */
    struct stat st;
    if (ino && (fstat(fd, &st) || (uint64_t)st.st_ino != ino)) {
        close(fd); /* another file by that name now: the rows went with the old one */
        return 0;
    }
    int r;
    while ((r = flock(fd, LOCK_EX)) && errno == EINTR)
        ;
    r = r ? -errno : voids_append(day_path, start, end, reason, 1);
    flock(fd, LOCK_UN);
    close(fd);
    return r;
}

size_t voids_whole_rows(const char *p, size_t n, int quoted_rows, uint64_t *rows)
{
    size_t last = 0;
    uint64_t k = 0;
    int quoted = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"' && quoted_rows)
            quoted = !quoted;
        else if (p[i] == '\n' && !quoted) {
            last = i + 1;
            k++;
        }
    }
    if (rows)
        *rows = k;
    return last;
}

static int by_start(const void *a, const void *b)
{
    const struct void_range *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Parses a decimal uint64 at *p (no sign, no leading blanks); 0 or -1. */
static int parse_u64(const char **p, uint64_t *v)
{
    const char *s = *p;
    if (*s < '0' || *s > '9')
        return -1;
    uint64_t x = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (x > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return -1;
        x = x * 10 + (uint64_t)(*s - '0');
    }
    *p = s;
    *v = x;
    return 0;
}

/* Parses one line (no '\n') into *r; NULL, or what is wrong with it. */
static const char *parse_line(const char *s, struct void_range *r)
{
    if (parse_u64(&s, &r->start) || *s++ != ' ')
        return "expected \"START END REASON\"";
    if (parse_u64(&s, &r->end) || *s++ != ' ')
        return "expected \"START END REASON\"";
    if (!is_word(s))
        return "REASON must be a word of 1 to 15 letters";
    if (r->start >= r->end)
        return "START must be below END";
    memcpy(r->reason, s, strlen(s) + 1);
    return NULL;
}

int voids_load(const char *day_path, struct void_range **out, size_t *n, char *err,
               size_t errlen)
{
    *out = NULL;
    *n = 0;
    char path[PATH_MAX];
    if (record_path(path, sizeof path, day_path)) {
        snprintf(err, errlen, "%s%s: %s", day_path, VOIDS_SUFFIX, strerror(ENAMETOOLONG));
        return -1;
    }
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct void_range *v = NULL;
    size_t nv = 0, cap = 0;
    char line[128];
    long lineno = 0;
    int r = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == 0 || line[len - 1] != '\n') {
            if (len == sizeof line - 1) { /* longer than any valid line */
                snprintf(err, errlen, "%s:%ld: line too long", path, lineno);
                r = -1;
                break;
            }
            break; /* the unterminated last line: a write cut short, ignored */
        }
        line[len - 1] = '\0';
        struct void_range one;
        const char *why = parse_line(line, &one);
        if (why) {
            snprintf(err, errlen, "%s:%ld: %s", path, lineno, why);
            r = -1;
            break;
        }
        if (nv == cap) {
            size_t c = cap ? cap * 2 : 8;
            struct void_range *g = realloc(v, c * sizeof *v);
            if (!g) {
                snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
                r = -1;
                break;
            }
            v = g;
            cap = c;
        }
        v[nv++] = one;
    }
    if (!r && ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno ? errno : EIO));
        r = -1;
    }
    fclose(f);
    if (r) {
        free(v);
        return -1;
    }
    if (nv > 1)
        qsort(v, nv, sizeof *v, by_start);
    *out = v;
    *n = nv;
    return 0;
}
