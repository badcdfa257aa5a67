/* cursor.h -- where the delivery of one dataset to one destination stands, kept in a file
 * beside the day files: crash-safe (write, fsync, rename, fsync of the directory) and
 * readable with cat. */
#ifndef NDINGEST_CURSOR_H
#define NDINGEST_CURSOR_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

/* The file, as written by cursor_store (one field a line, in this order; "batch" only
 * while a batch is in flight):
 *   ndingest-cursor 1
 *   file trips-2026-12-07.csv
 *   offset 1048576
 *   batch 1048576 9437184
 * offset: every byte of file before it is delivered, quarantined or void. A batch in
 * flight [start, end) (start == offset) may or may not be stored by the destination: after
 * a crash it is sent again, byte for byte the same, before anything else. */
struct cursor {
    char file[NAME_MAX + 1]; /* the day file's base name; "" before the first */
    uint64_t offset;
    int in_flight;
    uint64_t batch_start, batch_end;
};

/* Reads the cursor at path into *c. A missing file is a fresh cursor (all zero) and 0; a
 * file that is not a cursor, -1 with "PATH:LINE: ..." in err. */
int cursor_load(const char *path, struct cursor *c, char *err, size_t errlen);

/* Replaces the cursor at path with *c: PATH.tmp written and fsync'd, renamed over path, the
 * directory fsync'd. A crash at any point leaves the old cursor or the new one, whole.
 * 0, or -1 with a message in err. */
int cursor_store(const char *path, const struct cursor *c, char *err, size_t errlen);

/* Tests only: cursor_store stops (returns -1 as if the process died there) after step
 * `steps` of: 1 the temporary file written, 2 fsync'd, 3 renamed, 4 the directory
 * fsync'd. 0 (the default) never stops. */
void cursor_crash_after(int steps);

#endif
