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
 *  - END is just past a '\n' of the day file, or the day file's end when the range is the
 *    unterminated tail of a finished file: the byte at END starts a row;
 *  - a range's line is in the record before the '\n' that ends the range is in the day
 *    file, so a reader that reads the day file first and the record second never sees a
 *    range ended in the file but missing from the record;
 *  - ranges may repeat or overlap (two writers recording the same torn tail): a reader
 *    takes their union;
 *  - the record is appended with O_APPEND, one write(2) per line, so its lines are whole
 *    except, after a crash or a full disk, possibly the last, which readers ignore. */
#define VOIDS_SUFFIX ".void"
#define VOIDS_REASON_MAX 15

struct void_range {
    uint64_t start, end;                /* [start, end) of the day file */
    char reason[VOIDS_REASON_MAX + 1];
};

/* Appends "START END REASON\n" to DAY_PATH.void, creating it (0644) if missing, in one
 * write(2), and fdatasyncs it when sync is set. 0, or -errno. reason: a word of at most
 * VOIDS_REASON_MAX letters. */
int voids_append(const char *day_path, uint64_t start, uint64_t end, const char *reason,
                 int sync);

/* Reads DAY_PATH.void into a malloc'd array sorted by start (then end), *out (NULL when
 * none) and *n; overlapping ranges are kept as written, a reader takes their union. A
 * missing record is no ranges. An unterminated last line is ignored; any other line that
 * is not "START END REASON" with START < END is an error. 0, or -1 with a message in err
 * ("PATH:LINE: ..."). */
int voids_load(const char *day_path, struct void_range **out, size_t *n, char *err,
               size_t errlen);

#endif
