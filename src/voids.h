/* voids.h -- the record beside a day file of the byte ranges that hold no acknowledged row,
 * so that every reader of the file (delivery, ndingest-check, other loaders) can skip them. */
#ifndef NDINGEST_VOIDS_H
#define NDINGEST_VOIDS_H

#include <stddef.h>
#include <stdint.h>

/* DIR/NAME-YYYY-MM-DD.csv has its record, when it has one, at DIR/NAME-YYYY-MM-DD.csv.void:
 * text, one range a line, "START END REASON\n" (decimal byte offsets into the day file,
 * the range [START, END); REASON a word: "torn" for a row cut short by a failed or killed
 * writer). Most files never have one: it is created at the first range.
 *
 * The invariants every reader relies on (doc/format.md, "Void ranges"):
 *  - START is the first byte of a row (just past a row boundary: in a CSV file a '\n'
 *    outside quotes, found by quote parity from a known boundary, not by scanning back);
 *  - END is just past a '\n' of the day file (the one the isolating writer added, or, when
 *    the cut fell just after a '\n' inside a quoted cell, that one), or the day file's end
 *    when the range is the unterminated tail of a finished file: the byte at END starts a
 *    row, quote parity restarts there;
 *  - a range's line is in the record before the '\n' that ends the range is in the day
 *    file, so a reader that reads the day file first and the record second never sees a
 *    range ended in the file but missing from the record; conversely a range may end past
 *    the file's end: for a while (the '\n' not yet written), or for good when the '\n' was
 *    refused after the line was recorded (a full disk): the file's bytes from START on are
 *    void, and a live reader waits for END before reading past START;
 *  - ranges may repeat or overlap (two writers recording the same torn tail): a reader
 *    takes their union;
 *  - the record is appended with O_APPEND, one line per voids_append; the appenders of one
 *    record take turns (the sink under flock of the day file; delivery alone on a finished
 *    file), so a line cut short is taken back and lines are whole except, after a crash,
 *    possibly the last, which readers ignore. */
#define VOIDS_SUFFIX ".void"
#define VOIDS_REASON_MAX 15

struct void_range {
    uint64_t start, end;                /* [start, end) of the day file */
    char reason[VOIDS_REASON_MAX + 1];
};

/* Appends "START END REASON\n" to DAY_PATH.void, creating it (0644) if missing, and
 * fdatasyncs it when sync is set. A write cut short is continued; if the rest fails, the
 * part written is truncated away, so the record stays readable. 0, or -errno (-EINVAL when
 * START >= END or reason is not a word of 1 to VOIDS_REASON_MAX ASCII letters). */
int voids_append(const char *day_path, uint64_t start, uint64_t end, const char *reason,
                 int sync);

/* voids_append for a writer that is not the day file's torn path: under the day file's
 * flock (the appenders' turns), and only while DAY_PATH is still the file of inode ino (0:
 * any): when the file is gone or another has its name, the bytes went with the old one and
 * nothing is recorded. Synced. 0, or -errno. */
int voids_record(const char *day_path, uint64_t ino, uint64_t start, uint64_t end,
                 const char *reason);

/* The end of the last whole row in p[0..n), which starts at a row boundary: past the last
 * '\n' outside quotes for CSV rows (quoted_rows: quote parity from p), past the last '\n'
 * for others; *rows (when not NULL) gets the rows before it. A failure path's scan. */
size_t voids_whole_rows(const char *p, size_t n, int quoted_rows, uint64_t *rows);

/* Reads DAY_PATH.void into a malloc'd array sorted by start (then end), *out (NULL when
 * none) and *n; overlapping ranges are kept as written, a reader takes their union. A
 * missing record is no ranges. An unterminated last line is ignored; any other line that
 * is not "START END REASON" with START < END is an error. 0, or -1 with a message in err
 * ("PATH:LINE: ..."). */
int voids_load(const char *day_path, struct void_range **out, size_t *n, char *err,
               size_t errlen);

#endif
