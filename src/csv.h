/* csv.h -- CSV encoding: one row of cells, RFC 4180 with minimal quoting as Python's csv
 * module writes it. */
#ifndef NDINGEST_CSV_H
#define NDINGEST_CSV_H

#include "buf.h"
#include "json.h"

/* Appends one row for cells[0..count) to out, ending it with "\r\n" when crlf, else "\n".
 * A cell is quoted when its text holds a comma, a quote, CR or LF (inner quotes doubled);
 * a row of one empty cell is written as "" so that it is not an empty line (as Python
 * does). Strings are unescaped on the way; raw cells are written as sent (true stays
 * true, not Python's True); empty cells as nothing. 0, or -1 when out cannot grow. */
int csv_row(struct buf *out, const struct cell *cells, size_t count, int crlf);

/* Appends the header row: the column names, quoted by the same rule. */
int csv_header(struct buf *out, const struct json_columns *c, int crlf);

#endif
