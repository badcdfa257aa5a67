/* batch.h -- cuts a day file into deterministic batches of whole rows, skipping void ranges:
 * the same start, bytes and record always give the same batch, byte for byte. */
#ifndef NDINGEST_BATCH_H
#define NDINGEST_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "../buf.h"
#include "../voids.h"

/* A batch: the rows of [start, end) of one day file, less the void ranges inside it. start
 * and end are row boundaries. body holds the rows to send, in file order. */
struct batch {
    uint64_t start, end;
    size_t rows;          /* rows in body */
    uint64_t void_bytes;  /* bytes of [start, end) left out as void */
    size_t voids;         /* void stretches skipped in [start, end): adjacent or
                           * overlapping ranges (their union) count once */
    struct buf body;
};

/* A row boundary is a '\n' outside a quoted cell (CSV quotes: a '"' opens and closes, '""'
 * inside is one quote; parity from a row boundary). Given the bytes of the day file
 * data[0..len) starting at file offset start (a row boundary), and its void ranges v[0..nv)
 * (sorted by start, as voids_load gives them; those before start are ignored), cuts the
 * batch: end is the last row boundary with end - start <= max reached by whole rows,
 * or, when the first row alone is longer than max, the end of that row. A void range is
 * skipped whole (its end is a row boundary: quote parity starts again there), even past
 * max. Returns 1 with *b filled (body replaced), 0 when data holds no whole row after start
 * (nothing to send yet: b->end == start, unless void ranges were skipped: b->end is then
 * past them and b->rows is 0), -1 when memory is exhausted. A void range whose end is past
 * the data (recorded, its '\n' not yet read) is not skipped: the batch ends before it (a
 * finished file's range that ends past the file, its '\n' refused for good, is to be
 * clipped to the file's end by the caller first). To
 * rebuild a batch in flight [s, e) byte for byte, pass exactly data[0..e - s) and max e - s.
 * Should bytes of an unfinished row precede a void range (its start not a row boundary,
 * against the record's invariant), they are left out with it and counted in void_bytes. */
int batch_cut(struct batch *b, const char *data, size_t len, uint64_t start, uint64_t max,
              const struct void_range *v, size_t nv);

/* The offset within b->body just past the row boundary after `rows` rows (0 <= rows <=
 * b->rows): splitting a refused batch into halves by rows. */
size_t batch_row_offset(const struct batch *b, size_t rows);

void batch_free(struct batch *b);

#endif
