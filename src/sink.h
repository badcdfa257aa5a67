/* sink.h -- the day's file: appends whole rows with O_APPEND, shared by every worker, and
 * moves to the next day's file at midnight. */
#ifndef NDINGEST_SINK_H
#define NDINGEST_SINK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct sink_config {
    const char *dir;    /* created if missing */
    const char *name;   /* files are DIR/NAME-YYYY-MM-DD<suffix> */
    const char *suffix; /* ".csv" or ".invalid.ndjson" */
    int utc;            /* date files by UTC instead of local time */
    const char *header; /* written once at the top of each new day's file, or NULL */
    /* Shared by every process writing these files (in memory mapped before the fork), or
     * NULL: set when a write may have stopped inside a row (an error cut it short, or a
     * worker was killed), so the next writer checks the file's tail under flock and, if
     * it ends inside a row, records the torn range in the file's .void record (voids.h)
     * and then starts its rows on a fresh line. Only then: the check would race with
     * writes in progress, which are not complete rows until they return. A ".csv" file's
     * rows are told apart by quote parity (a cell may hold a '\n'), others' by '\n'. */
    atomic_uint *torn;
    size_t header_len;
    /* Asks whether the open file still has a name after a write at most once a second,
     * not after every write: for a file whose earlier contents a deletion takes anyway (the
     * Idempotency-Key log: its records before the deletion are gone with it), where the
     * check was a syscall per loop turn. Writes within the second after a deletion go to
     * the nameless file too; the first after that second finds the deletion and goes to a
     * new file at the path. */
    int check_name_each_second;
};

struct sink;

/* Opens a daily sink (today's file is opened lazily, at the first write). NULL with a
 * message in err when the directory cannot be made or written. */
struct sink *sink_open_daily(const struct sink_config *cfg, char *err, size_t errlen);
/* A sink over an open descriptor (convert's stdout): no days, no header. The descriptor
 * stays the caller's: sink_close does not close it. */
struct sink *sink_open_fd(int fd);

/* Appends p[0..n), which holds whole rows, with as few write(2) calls as the kernel allows;
 * a short write is continued. 0 once every byte was written, else -errno with
 * sink_error() telling what failed. Rows go to the file of the day at the time of the call.
 * A daily sink then fstat()s the file (one call per batch): if it has lost its last name
 * (unlink, rm -rf of the directory) the batch is written again to a new file at the path,
 * directory and header made as for a new day, so 0 means the rows are in a file that had a
 * name after they were written. A renamed file keeps its name and its rows until
 * sink_reopen. */
int sink_write(struct sink *s, const char *p, size_t n);
/* How many of the sink's files have been found without a name, the open one asked now (one
 * fstat). A batch written earlier was in the file then open: a caller that wrote when the
 * count was c and now sees more has rows that may be gone with a deleted file (the batches
 * of a body before its last one). Always 0 for sink_open_fd. */
unsigned long sink_lost(struct sink *s);

/* sink_write for a writer that tracks the ranges its requests write (inflight.h). Each
 * write(2) then happens under the day file's flock, taken by every such writer, so that
 * where it lands is known before it starts and a writer that dies inside it is found by the
 * next holder of the lock. Under the lock, in order: h->orphan(arg, FILE, &START, &END)
 * asks whether a dead writer left a write in progress in this file (FILE: inflight_file_id;
 * its index, or -1): if so its whole rows from START up to END (the bound it announced, or
 * the file's end if that comes first) are recorded as void ("killed") and, when they reach
 * the file's end, a row it cut short is isolated as the torn path does (if the record cannot
 * be written, h->unorphan(arg, INDEX, FILE, START, END) puts it back and nothing is
 * written);
 * h->before(arg, FILE, START, LEN) is told exactly where the bytes will land (LEN of them,
 * one more when the torn path puts a '\n' first); the write; then
 * h->after(arg, R) with where they landed (as sink_written), or R NULL when the file lost
 * its name meanwhile (the batch is then written again: before and after come again). */
struct sink_range;
struct sink_hook {
    int (*orphan)(void *arg, uint64_t file, uint64_t *start, uint64_t *end);
    void (*unorphan)(void *arg, int index, uint64_t file, uint64_t start, uint64_t end);
    void (*before)(void *arg, uint64_t file, uint64_t start, uint64_t len);
    void (*after)(void *arg, const struct sink_range *r);
    void *arg;
};
int sink_write_hooked(struct sink *s, const char *p, size_t n, const struct sink_hook *h);

/* Where the last sink_write_hooked put its bytes: [start, end) of the day file (day: its
 * day, ino: its inode; file: inflight_file_id). On success the whole of p; after a failure
 * the whole rows written before it (start == end: none; a row cut short after them is the
 * torn path's). start == end too when the file lost its name (the rows went with it). */
struct sink_range {
    uint64_t file, start, end, ino;
    time_t day;
};
void sink_written(const struct sink *s, struct sink_range *out);

/* The path of the day file r is in (voids_record takes it with r.ino). 0, or -errno
 * (-EINVAL for sink_open_fd's). */
int sink_range_path(const struct sink *s, const struct sink_range *r, char *out, size_t outlen);
const char *sink_error(const struct sink *s);
/* The size of the day's file now, as every process writing it sees it (the file is their
 * shared state): one statx of the open file, or of the day's path when none is open (0 when
 * it does not exist yet); 0 when the open file is the previous day's (a new day's starts
 * empty) or on error. For sink_open_fd, the descriptor's. Once per body at most, not per
 * row: --max-quarantine-day's judgement (ingest.c). */
unsigned long long sink_size(struct sink *s);
/* Whether this is the first call for the day's file in this process (1), or not (0): a
 * warning about the day's file said once a day per worker, whichever request meets it. */
int sink_first_today(struct sink *s);
/* The path written to last (or that would be written now). */
const char *sink_path(struct sink *s);
/* fdatasync of what was written since the last sync (a no-op when nothing was, or when the
 * file is closed). 0, or -errno with sink_error() telling what failed; a failed sync of
 * a file closed since (midnight, sink_reopen) is reported here too. */
int sink_sync(struct sink *s);
/* Closes the current file so that the next write opens it anew (SIGHUP, log rotation).
 * Rows written but not yet synced are fdatasync'd first. */
void sink_reopen(struct sink *s);
void sink_close(struct sink *s);

/* Tests only: the clock that dates rows (NULL restores time()). Applies to every sink. */
void sink_set_clock(time_t (*now)(void));

#endif
