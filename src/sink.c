/* sink.c -- the day's file: whole rows appended with O_APPEND by every worker, dated per write. */
#include "sink.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "inflight.h"
#include "voids.h"

struct sink {
    int fd;                    /* -1: opened at the next write */
    int daily;                 /* 0: a caller's descriptor (convert's stdout) */
    int utc;
    int dirty;                 /* written since the last fdatasync */
    int sync_err;              /* -errno of a sync that failed as the file was closed */
    time_t day_start, day_end; /* the day path names: [start, end) */
    const char *dir, *name, *suffix, *header; /* copies, in store */
    size_t header_len;
    atomic_uint *torn;         /* see sink_config */
    int quoted_rows;           /* "*.csv": a row may hold '\n' inside a quoted cell */
    int void_err;              /* the failure was the .void record's, not the file's */
    /* sink_write_hooked: where the last write went (sink_written), and the end of this
     * sink's last write to the open file, a lower bound of where the next one lands. */
    uint64_t last_file, last_start, last_end, last_ino, ino; /* ino: the open file's */
    time_t last_day;
    int locked;                /* sink_write_hooked holds the file's flock */
    int newline;               /* ...and the torn path wrote a '\n' before its bytes */
    /* The torn path's scan of the open file, kept so that the next one reads only the
     * bytes appended since (the file only grows): the quote state at scan_at, and the
     * last row boundary at or before it. Valid while scan_at != 0, for this fd only. */
    uint64_t scan_at, scan_last;
    int scan_quoted;
    unsigned long lost;        /* files found to have lost their last name (sink_lost) */
    int check_each_second;     /* sink_config's check_name_each_second */
    time_t name_checked;       /* ...the second of the last check */
    time_t noted;              /* sink_first_today: the day_start it was last called for, + 1 */
    /* In store, sized to the names (PATH_MAX each was 8 KiB a sink, two per dataset in
     * every worker): the day's path, and a message naming it or a temporary file beside it. */
    char *path, *err;
    size_t path_cap, err_cap;
    char store[];
};

static time_t (*clock_now)(void);

void sink_set_clock(time_t (*now)(void))
{
    clock_now = now;
}

static time_t now(void)
{
    return clock_now ? clock_now() : time(NULL); /* time() is a vDSO read: cheap per write */
}

/* Temporary names must differ between workers (pid) and between calls in one (counter). */
static unsigned temp_counter;

static int fail(struct sink *s, const char *what, const char *path, int e)
{
    snprintf(s->err, s->err_cap, "%s %s: %s", what, path, strerror(e));
    return -e;
}

/* mkdir -p: every missing component, 0755 (before umask). */
static int make_dir(struct sink *s)
{
    char p[PATH_MAX];
    size_t n = strlen(s->dir);
    if (n >= sizeof p)
        return fail(s, "mkdir", s->dir, ENAMETOOLONG);
    memcpy(p, s->dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0755) && errno != EEXIST)
            return fail(s, "mkdir", p, errno);
        p[i] = c;
    }
    struct stat st;
    if (stat(s->dir, &st))
        return fail(s, "stat", s->dir, errno);
    if (!S_ISDIR(st.st_mode))
        return fail(s, "mkdir", s->dir, ENOTDIR);
    return 0;
}

/* Creates DIR/.<base>.<pid>.<n>.tmp with O_EXCL, its name in tmp. A descriptor or -errno. */
static int create_temp(struct sink *s, const char *base, char *tmp, size_t tmplen)
{
    for (int tries = 0; tries < 1000; tries++) {
        int len = snprintf(tmp, tmplen, "%s/.%s.%ld.%u.tmp", s->dir, base, (long)getpid(),
                           temp_counter++);
        if (len < 0 || (size_t)len >= tmplen)
            return -ENAMETOOLONG;
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0 || errno != EEXIST) /* EEXIST: left by a dead worker with our pid */
            return fd >= 0 ? fd : -errno;
    }
    return -EEXIST;
}

/* Writes all of p[0..n): a short write is continued, EINTR retried, and a non-blocking
 * descriptor (an inherited stdout) waited for. 0 or -errno; *done (when not NULL) gets the
 * bytes written, a failure's too. */
static int write_all_done(int fd, const char *p, size_t n, size_t *done)
{
    size_t all = n;
    if (done)
        *done = 0;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                    return -errno;
                continue;
            }
            return -errno;
        }
        if (w == 0)
            return -EIO; /* no progress and no error: do not spin */
        p += w;
        n -= (size_t)w;
        if (done)
            *done = all - n;
    }
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    return write_all_done(fd, p, n, NULL);
}

/* The date holding t as YYYYMMDD, -1 if t has no date. */
static long day_key(const struct sink *s, time_t t)
{
    struct tm tm;
    if (!(s->utc ? gmtime_r(&t, &tm) : localtime_r(&t, &tm)))
        return -1;
    return (tm.tm_year + 1900L) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday;
}

/* The first second in (lo, hi] whose date is at least key, given lo's is not and hi's is. */
static time_t first_dated(const struct sink *s, time_t lo, time_t hi, long key)
{
    while (hi - lo > 1) {
        time_t mid = lo + (hi - lo) / 2;
        if (day_key(s, mid) >= key)
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

/* Names the file of the day holding t and caches that day's bounds, so that a write needs
 * only a comparison until midnight. Runs once a day, so it may afford a few conversions. */
static int set_day(struct sink *s, time_t t)
{
    struct tm tm;
    if (!(s->utc ? gmtime_r(&t, &tm) : localtime_r(&t, &tm)))
        return fail(s, "date", s->dir, EOVERFLOW);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d", &tm);
    int len = snprintf(s->path, s->path_cap, "%s/%s-%s%s", s->dir, s->name, date, s->suffix);
    if (len < 0 || (size_t)len >= s->path_cap)
        return fail(s, "open", s->dir, ENAMETOOLONG);
    long key = (tm.tm_year + 1900L) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday;
    /* Midnights by mktime with tm_isdst = -1, so a 23- or 25-hour day (DST) is right. */
    struct tm start = tm, end = tm;
    start.tm_hour = start.tm_min = start.tm_sec = 0;
    start.tm_isdst = -1;
    end.tm_mday += 1;
    end.tm_hour = end.tm_min = end.tm_sec = 0;
    end.tm_isdst = -1;
    time_t a = s->utc ? timegm(&start) : mktime(&start);
    time_t b = s->utc ? timegm(&end) : mktime(&end);
    /* Where a DST change skips or repeats midnight itself (America/Santiago, Asia/Beirut)
     * mktime's answer for the missing 00:00 may be an hour off: check it, and search for
     * the exact second if it is wrong. */
    if (!(a <= t && day_key(s, a) == key && day_key(s, a - 1) < key))
        a = first_dated(s, t - 50 * 3600, t, key);
    if (!(b > t && day_key(s, b) > key && day_key(s, b - 1) == key))
        b = first_dated(s, t, t + 50 * 3600, key + 1);
    s->day_start = a;
    s->day_end = b;
    return 0;
}

/* Header mode: the file appears with its header already in it, whoever creates it. The
 * header goes into a private temporary file that link() publishes under the final name;
 * link fails with EEXIST if another worker was first, so exactly one header is published
 * and no worker can see (or append to) the file before its header. 0 or -errno. */
static int publish_with_header(struct sink *s)
{
    char tmp[PATH_MAX];
    const char *base = strrchr(s->path, '/') + 1;
    int fd = create_temp(s, base, tmp, sizeof tmp);
    if (fd < 0)
        return fd == -ENAMETOOLONG ? fail(s, "open", s->dir, -fd) : fail(s, "create", tmp, -fd);
    int r = write_all(fd, s->header, s->header_len);
    if (r)
        fail(s, "write", tmp, -r);
    if (close(fd) && !r)
        r = fail(s, "close", tmp, errno);
    if (!r && link(tmp, s->path) && errno != EEXIST)
        r = fail(s, "link", s->path, errno);
    unlink(tmp);
    return r;
}

/* The day's file was just opened: its inode, for the ranges written to it (sink_range). */
static int opened(struct sink *s)
{
    struct stat st;
    s->ino = fstat(s->fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
    return 0;
}

static int open_day(struct sink *s)
{
    int remade = 0;
    for (int tries = 0; tries < 100; tries++) {
        int r = 0;
        if (!s->header) {
            s->fd = open(s->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
            if (s->fd >= 0)
                return opened(s);
            r = fail(s, "open", s->path, errno);
        } else {
            /* Never O_CREAT here: an empty file without its header would be visible. */
            s->fd = open(s->path, O_RDWR | O_APPEND | O_CLOEXEC);
            if (s->fd >= 0)
                return opened(s);
            if (errno != ENOENT)
                return fail(s, "open", s->path, errno);
            r = publish_with_header(s);
            if (!r)
                continue; /* published, by us or another worker: open it */
        }
        /* The directory was removed under us (a cleanup job): make it again, once. */
        if (r != -ENOENT || remade)
            return r;
        remade = 1;
        int m = make_dir(s);
        if (m)
            return m;
    }
    return fail(s, "open", s->path, ELOOP); /* deleted as fast as it was made */
}

static char *copy(char **at, const char *p, size_t n)
{
    char *d = *at;
    if (n)
        memcpy(d, p, n);
    d[n] = '\0';
    *at += n + 1;
    return d;
}

struct sink *sink_open_daily(const struct sink_config *cfg, char *err, size_t errlen)
{
    const char *suffix = cfg->suffix ? cfg->suffix : "";
    size_t ld = strlen(cfg->dir), ln = strlen(cfg->name), ls = strlen(suffix);
    size_t lh = cfg->header ? cfg->header_len : 0;
    /* The path holds a date of up to 32 bytes (set_day), and more than PATH_MAX no call
     * takes; a message names the path or a temporary file beside it (create_temp), which
     * repeats the file's name. */
    size_t path_cap = ld + ln + ls + 40 < PATH_MAX ? ld + ln + ls + 40 : PATH_MAX;
    size_t err_cap = path_cap + ln + ls + 256;
    struct sink *s = malloc(sizeof *s + ld + ln + ls + lh + 4 + path_cap + err_cap);
    if (!s) {
        snprintf(err, errlen, "sink %s: %s", cfg->dir, strerror(ENOMEM));
        return NULL;
    }
    memset(s, 0, sizeof *s);
    char *at = s->store;
    s->dir = copy(&at, cfg->dir, ld);
    s->name = copy(&at, cfg->name, ln);
    s->suffix = copy(&at, suffix, ls);
    s->header = cfg->header ? copy(&at, cfg->header, lh) : NULL;
    s->header_len = lh;
    s->path = at;
    s->path_cap = path_cap;
    s->err = at + path_cap;
    s->err_cap = err_cap;
    s->path[0] = s->err[0] = '\0';
    s->fd = -1;
    s->daily = 1;
    s->utc = cfg->utc;
    s->check_each_second = cfg->check_name_each_second;
    s->torn = cfg->torn;
    /* CSV rows (".csv", the typed datasets' ".quarantine.csv") may hold a quoted '\n';
     * the classic quarantine's NDJSON lines never do. */
    s->quoted_rows = ls >= 4 && !strcmp(s->suffix + ls - 4, ".csv");

    int r = make_dir(s);
    if (!r)
        r = set_day(s, now()); /* also proves the names fit in PATH_MAX */
    if (!r) {
        /* Prove now, not at the first body, that files can be created here. A real file
         * answers for everything that can refuse one (mode bits, a read-only mount, an LSM,
         * no free inodes); access() checks fewer, with the real uid, and passes root. */
        char probe[PATH_MAX];
        int fd = create_temp(s, "probe", probe, sizeof probe);
        if (fd >= 0) {
            close(fd);
            unlink(probe);
        } else {
            r = fail(s, "cannot write in", s->dir, -fd);
        }
    }
    if (r) {
        snprintf(err, errlen, "%s", s->err);
        free(s);
        return NULL;
    }
    return s;
}

/* Closes the day's file; what was written to it unsynced is synced first, so that a
 * request waiting for its sync (--fsync request) is not acknowledged on a closed file. */
static void close_day(struct sink *s, int keep_error)
{
    if (s->fd < 0)
        return;
    if (s->dirty && fdatasync(s->fd) && !s->sync_err) /* keep_error: err tells of the write */
        s->sync_err = keep_error ? -errno : fail(s, "fdatasync", s->path, errno);
    s->dirty = 0;
    close(s->fd);
    s->fd = -1;
    s->scan_at = 0;
}

int sink_sync(struct sink *s)
{
    int r = s->sync_err;
    s->sync_err = 0;
    if (s->fd >= 0 && s->dirty) {
        s->dirty = 0;
        if (fdatasync(s->fd) && !r)
            r = fail(s, "fdatasync", s->path, errno);
    }
    return r;
}

struct sink *sink_open_fd(int fd)
{
    enum { PATH_CAP = 32, ERR_CAP = 256 };
    struct sink *s = malloc(sizeof *s + PATH_CAP + ERR_CAP);
    if (!s)
        return NULL;
    memset(s, 0, sizeof *s + PATH_CAP + ERR_CAP);
    s->fd = fd;
    s->path = s->store;
    s->path_cap = PATH_CAP;
    s->err = s->store + PATH_CAP;
    s->err_cap = ERR_CAP;
    if (fd == 1)
        snprintf(s->path, s->path_cap, "<stdout>");
    else
        snprintf(s->path, s->path_cap, "<fd %d>", fd);
    return s;
}

#define SCAN_BLOCK 65536

/* The last row boundary of a quarantine file (NDJSON: a line never holds a raw '\n'): just
 * past its last '\n', read backwards in blocks; 0 when it has none. 0 or -errno. */
static int last_newline(int fd, uint64_t size, char *blk, uint64_t *last)
{
    uint64_t at = size;
    while (at > 0) {
        size_t n = at < SCAN_BLOCK ? (size_t)at : SCAN_BLOCK;
        ssize_t got = pread(fd, blk, n, (off_t)(at - n));
        if (got < 0 && errno == EINTR)
            continue;
        if (got != (ssize_t)n)
            return got < 0 ? -errno : -EIO;
        const char *nl = memrchr(blk, '\n', n);
        if (nl) {
            *last = at - n + (uint64_t)(nl - blk) + 1;
            return 0;
        }
        at -= n;
    }
    *last = 0;
    return 0;
}

/* The last row boundary of a CSV day file: a '\n' outside quotes. Which '\n' is one can
 * only be told by the quote parity counted from a known boundary, never by scanning back
 * (the torn row may hold a '\n' inside a quoted cell, and a cut may fall just after one):
 * the known boundaries are the file's start (the header is a row), the end of every void
 * range already recorded, and where this sink's previous scan of the file stopped. So the
 * first torn path of a process in a file reads the file from its last void range (or its
 * start) once: at memchr speed, and only when a write was cut short or a worker died. */
static int last_row_boundary(struct sink *s, uint64_t size, const struct void_range *v,
                             size_t nv, char *blk, uint64_t *last)
{
    uint64_t at = 0, boundary = 0;
    int quoted = 0;
    if (s->scan_at && s->scan_at <= size) {
        at = s->scan_at;
        boundary = s->scan_last;
        quoted = s->scan_quoted;
    }
    for (size_t i = 0; i < nv; i++) {
        /* A range ending past the file was recorded by a writer whose '\n' never landed
         * (the disk was full): its end is no boundary yet. */
        if (v[i].end <= size && v[i].end >= at) {
            at = boundary = v[i].end;
            quoted = 0;
        }
    }
    while (at < size) {
        size_t n = size - at < SCAN_BLOCK ? (size_t)(size - at) : SCAN_BLOCK;
        ssize_t got = pread(s->fd, blk, n, (off_t)at);
        if (got < 0 && errno == EINTR)
            continue;
        if (got != (ssize_t)n)
            return got < 0 ? -errno : -EIO;
        for (const char *p = blk, *end = blk + n; p < end;) {
            const char *q = memchr(p, '"', (size_t)(end - p));
            if (!quoted) { /* every '\n' before the next quote is a boundary */
                const char *nl = memrchr(p, '\n', (size_t)((q ? q : end) - p));
                if (nl)
                    boundary = at + (uint64_t)(nl - blk) + 1;
            }
            if (!q)
                break;
            quoted = !quoted;
            p = q + 1;
        }
        at += n;
    }
    s->scan_at = at;
    s->scan_last = boundary;
    s->scan_quoted = quoted;
    *last = boundary;
    return 0;
}

/* Where the file's tail stands: *size, the last row boundary *last, and *end, where a torn
 * range from *last would end (past the '\n' to add, or *size when the file ends in one
 * inside a quoted cell); *recorded when the record holds that range already (a writer
 * whose '\n' was refused after it recorded it: recorded again it would only repeat). A
 * malformed record is an error: it would be wrong for every reader too. 0 or -errno. */
static int tail_of(struct sink *s, uint64_t *size, uint64_t *last, uint64_t *end,
                   int *recorded)
{
    *recorded = 0;
    off_t at = lseek(s->fd, 0, SEEK_END); /* O_APPEND writes ignore the offset: harmless */
    if (at < 0)
        return -errno;
    *size = *last = *end = (uint64_t)at;
    char lastbyte = 0;
    if (at > 0 && pread(s->fd, &lastbyte, 1, at - 1) != 1)
        return -EIO;
    if (at == 0 || (!s->quoted_rows && lastbyte == '\n'))
        return 0;
    struct void_range *v;
    size_t nv;
    char err[PATH_MAX + 128];
    if (voids_load(s->path, &v, &nv, err, sizeof err)) {
        s->void_err = 1;
        snprintf(s->err, s->err_cap, "%s", err);
        return -EINVAL;
    }
    char *blk = malloc(SCAN_BLOCK); /* the torn path only */
    int r = !blk ? -ENOMEM
            : s->quoted_rows ? last_row_boundary(s, *size, v, nv, blk, last)
                             : last_newline(s->fd, *size, blk, last);
    *end = *size + (lastbyte != '\n');
    for (size_t i = 0; i < nv && !r; i++)
        if (v[i].start == *last && v[i].end == *end)
            *recorded = 1;
    free(blk);
    free(v);
    return r;
}

/* Appends p[0..n) while the torn flag is set: the file may end inside a row that a write cut
 * short left. Then the torn range [START, END) goes to the .void record first (START the
 * torn row's first byte, END just past the '\n' added here, or the file's end when the cut
 * fell just after a '\n' inside a quoted cell), and only then the '\n' and the rows, in one
 * writev(2): whoever reads the file and then the record never sees a range ended in the file
 * and missing from the record. Serialised by flock on the file, with the tail looked at
 * under the lock, so that two writers never both isolate it (an empty line would be a row
 * of a one-column dataset). If the record cannot be written neither are the rows. */
static int append_torn(struct sink *s, const char *p, size_t n, size_t *done)
{
    int r = 0;
    *done = 0;
    while (!s->locked && (r = flock(s->fd, LOCK_EX)) && errno == EINTR)
        ;
    if (r)
        return -errno;
    uint64_t size = 0, last = 0, end = 0;
    int recorded = 0;
    size_t before = 0; /* bytes of p written by the writev */
    r = tail_of(s, &size, &last, &end, &recorded);
    if (r == 0 && last != size) {
        int nl = end > size;
        if (!recorded)
            r = voids_append(s->path, last, end, "torn", 1);
        if (r)
            s->void_err = 1;
        if (r == 0 && nl) {
            struct iovec iov[2] = {{.iov_base = "\n", .iov_len = 1},
                                   {.iov_base = (void *)p, .iov_len = n}};
            ssize_t w;
            do
                w = writev(s->fd, iov, 2);
            while (w < 0 && errno == EINTR);
            if (w < 0)
                r = -errno;
            else if (w == 0)
                r = -EIO;
            else {
                s->newline = 1;
                before = (size_t)(w - 1);
                p += w - 1;
                n -= (size_t)(w - 1);
            }
        }
    }
    if (r == 0) {
        r = write_all_done(s->fd, p, n, done);
        *done += before;
    } else {
        *done = before;
    }
    s->dirty = 1; /* even a failed write may have written some */
    if (!s->locked)
        flock(s->fd, LOCK_UN);
    return r;
}

/* Appends p[0..n) to the open descriptor (*checked: the torn flag was set, so the tail was
 * looked at; *done: the bytes of p written, a failure's too). 0 or -errno; the torn flag is
 * the caller's. */
static int append(struct sink *s, const char *p, size_t n, int *checked, size_t *done,
                  int force)
{
    s->void_err = 0;
    *checked = force || (s->torn && atomic_load(s->torn));
    if (*checked)
        return append_torn(s, p, n, done);
    int r = write_all_done(s->fd, p, n, done);
    s->dirty = 1; /* even a failed write may have written some */
    return r;
}

static size_t whole_rows(const struct sink *s, const char *p, size_t n)
{
    return voids_whole_rows(p, n, s->quoted_rows, NULL);
}

/* Whether the open file has lost its last name (unlink, rm -rf): rows written to it are
 * beyond anyone's reach and gone when it is closed. A rename keeps a name: not lost.
 * Asked with statx for the link count alone, not fstat: a stat that asks for the times
 * marks them as seen (multigrain timestamps, Linux 6.13+), so that the next write must
 * store a fine-grained mtime and dirty the inode through the journal, once per batch
 * (ext4: 100,005 ext4_mark_inode_dirty for 100,000 appends with fstat, 169 with this).
 * fstat remains for a kernel or filter without statx. */
static int unlinked(int fd)
{
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_NLINK, &sx) == 0 && (sx.stx_mask & STATX_NLINK))
        return sx.stx_nlink == 0;
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_nlink == 0;
}

int sink_write(struct sink *s, const char *p, size_t n)
{
    return sink_write_hooked(s, p, n, NULL);
}

/* A day's name for the file of the day starting at day (sink_void): its path into out. */
static int path_of_day(const struct sink *s, time_t day, char *out, size_t outlen)
{
    struct tm tm;
    if (!(s->utc ? gmtime_r(&day, &tm) : localtime_r(&day, &tm)))
        return -EOVERFLOW;
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d", &tm);
    int len = snprintf(out, outlen, "%s/%s-%s%s", s->dir, s->name, date, s->suffix);
    return len < 0 || (size_t)len >= outlen ? -ENAMETOOLONG : 0;
}

/* Under the file's lock, a write a dead writer left in progress from start, up to the end
 * it announced or the file's end size, whichever comes first (another server on the same
 * directory may have appended after it: not this server's to void): its whole rows are
 * recorded as void ("killed"); *torn when a row cut short follows them at the file's end
 * (the caller then takes the torn path, which isolates it). 0 or -errno. */
static int void_orphan(struct sink *s, uint64_t start, uint64_t end, uint64_t size, int *torn)
{
    *torn = 0;
    if (end > size)
        end = size;
    if (start >= end)
        return 0; /* it died before its write began */
    size_t len = (size_t)(end - start);
    char *buf = malloc(len); /* after a kill only */
    if (!buf)
        return -ENOMEM;
    ssize_t got = pread(s->fd, buf, len, (off_t)start);
    int r = got == (ssize_t)len ? 0 : got < 0 ? -errno : -EIO;
    size_t whole = r ? 0 : whole_rows(s, buf, len);
    free(buf);
    if (!r && whole)
        r = voids_append(s->path, start, start + whole, "killed", 1);
    if (r)
        s->void_err = 1;
    *torn = !r && whole < len && end == size;
    return r;
}

/* The hooked write's body, the file open: under its flock, a dead writer's write in
 * progress voided first, the range published, the bytes written, then their range handed
 * to the hook, and only then the lock released. 0 or -errno; *done as append's. */
static int append_locked(struct sink *s, const char *p, size_t n, const struct sink_hook *h,
                         int *checked, size_t *done)
{
    int r;
    *checked = 0;
    *done = 0;
    s->newline = 0;
    while ((r = flock(s->fd, LOCK_EX)) && errno == EINTR)
        ;
    if (r)
        return -errno;
    s->locked = 1;
    off_t size = lseek(s->fd, 0, SEEK_END); /* exact: every appender holds the lock */
    uint64_t ostart, oend;
    int torn = 0, dead = size < 0 ? -1 : h->orphan(h->arg, s->last_file, &ostart, &oend);
    r = size < 0 ? -errno : dead >= 0 ? void_orphan(s, ostart, oend, (uint64_t)size, &torn) : 0;
    if (dead >= 0 && r)
        h->unorphan(h->arg, dead, s->last_file, ostart, oend);
    if (!r) {
        h->before(h->arg, s->last_file, (uint64_t)size, (uint64_t)n + 1);
        r = append(s, p, n, checked, done, torn);
        /* Nobody else appends under the lock: p's bytes start at the size read above, past
         * the '\n' the torn path may have put before them. */
        s->last_start = (uint64_t)size + (uint64_t)s->newline;
        s->last_end = s->last_start + (r ? whole_rows(s, p, *done) : *done);
        s->last_ino = s->ino;
    }
    return r;
}

int sink_write_hooked(struct sink *s, const char *p, size_t n, const struct sink_hook *h)
{
    s->last_start = s->last_end = 0;
    if (!n)
        return 0;
    for (int tries = 0;; tries++) {
        time_t t = 0;
        if (s->daily) {
            t = now();
            if (t >= s->day_end || t < s->day_start) { /* midnight passed, or the clock stepped back */
                close_day(s, 0);
                int r = set_day(s, t);
                if (r)
                    return r;
            }
            if (s->fd < 0) {
                int r = open_day(s);
                if (r)
                    return r;
            }
        }
        int checked;
        size_t done = 0;
        int r;
        if (h) {
            s->last_file = inflight_file_id(s->path);
            s->last_day = s->day_start;
            r = append_locked(s, p, n, h, &checked, &done);
        } else {
            r = append(s, p, n, &checked, &done, 0);
        }
        /* Asked after the write, not before, so that an unlink between the check and the
         * write cannot take acknowledged rows with it. The batch then exists only in an
         * inode without a name: write it again to the file at the path. The torn flag is
         * left as it was, since the file whose tail was checked is not the one written. */
        int ask = s->daily && (!s->check_each_second || t != s->name_checked);
        if (ask)
            s->name_checked = t;
        int lost = r == 0 && ask && unlinked(s->fd);
        if (h && s->locked) {
            /* Flagged before the lock goes: the next holder must see that the file may end
             * inside a row (else it would glue its first row onto the cut one). */
            if (r && s->torn)
                atomic_store(s->torn, 1);
            struct sink_range wr;
            sink_written(s, &wr);
            h->after(h->arg, lost ? NULL : &wr);
            s->locked = 0;
            flock(s->fd, LOCK_UN);
        }
        if (lost) {
            s->dirty = 0; /* syncing a file nobody can open saves nothing */
            close_day(s, 0);
            s->lost++;
            s->last_start = s->last_end = 0; /* gone with the file: nothing to void there */
            if (tries < 3)
                continue;
            r = -ENOENT; /* deleted as fast as it was made */
        }
        if (s->torn) {
            if (r)
                atomic_store(s->torn, 1);
            else if (checked)
                atomic_store(s->torn, 0);
        }
        if (r) {
            if (!s->void_err)
                fail(s, "write", s->path, -r);
            else if (r != -EINVAL) /* -EINVAL: voids_load's message is in err already */
                snprintf(s->err, s->err_cap, "write %s%s: %s", s->path, VOIDS_SUFFIX,
                         strerror(-r));
            /* Reopen at the next write: a bad descriptor heals; a full disk costs one open. */
            if (s->daily)
                close_day(s, 1);
        }
        return r;
    }
}

void sink_written(const struct sink *s, struct sink_range *out)
{
    out->file = s->last_file;
    out->day = s->last_day;
    out->ino = s->last_ino;
    out->start = s->last_start;
    out->end = s->last_end;
}

int sink_range_path(const struct sink *s, const struct sink_range *r, char *out, size_t outlen)
{
    if (!s->daily)
        return -EINVAL;
    return path_of_day(s, r->day, out, outlen);
}

unsigned long sink_lost(struct sink *s)
{
    if (s->daily && s->fd >= 0 && unlinked(s->fd)) {
        s->dirty = 0;
        close_day(s, 0); /* the next write makes the file again */
        s->lost++;
    }
    return s->lost;
}

const char *sink_error(const struct sink *s)
{
    return s->err;
}

unsigned long long sink_size(struct sink *s)
{
    struct statx sx;
    /* STATX_SIZE alone: a stat asking for the times would cost the next write a journal
     * entry (unlinked() says why). */
    int r;
    if (s->fd >= 0) {
        time_t t = now();
        if (s->daily && (t >= s->day_end || t < s->day_start))
            return 0;
        r = statx(s->fd, "", AT_EMPTY_PATH, STATX_SIZE, &sx);
    } else {
        r = statx(AT_FDCWD, sink_path(s), 0, STATX_SIZE, &sx);
    }
    return r == 0 && (sx.stx_mask & STATX_SIZE) ? (unsigned long long)sx.stx_size : 0;
}

int sink_first_today(struct sink *s)
{
    sink_path(s); /* the day now, when no file is open */
    if (s->noted == s->day_start + 1)
        return 0;
    s->noted = s->day_start + 1;
    return 1;
}

const char *sink_path(struct sink *s)
{
    if (s->daily && s->fd < 0) {
        time_t t = now();
        if (t >= s->day_end || t < s->day_start)
            set_day(s, t);
    }
    return s->path;
}

void sink_reopen(struct sink *s)
{
    if (s->daily)
        close_day(s, 0);
}

void sink_close(struct sink *s)
{
    if (!s)
        return;
    if (s->daily && s->fd >= 0)
        close(s->fd);
    free(s);
}
