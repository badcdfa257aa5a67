/* pg_cells.h -- a batch of day-file rows, whose cells are written for ClickHouse's CSV
 * input, rewritten as the rows PostgreSQL's COPY ... (FORMAT csv) reads as the same values
 * (doc/delivery.md, "PostgreSQL"). */
#ifndef NDINGEST_PG_CELLS_H
#define NDINGEST_PG_CELLS_H

#include <stddef.h>

#include "../buf.h"
#include "../datasource.h"

/* What the rows hold: a dataset's columns by its definition, or (ds NULL) the classic
 * untyped dataset's ncolumns text columns (doc/format.md). */
struct pg_rows {
    const struct datasource *ds;
    size_t ncolumns; /* untyped only; a definition gives its own */
};

/* Why a row cannot go to PostgreSQL as the same values. */
struct pg_refusal {
    long row;        /* 0-based, within the batch */
    long column;     /* 0-based; -1 when the row has the wrong number of cells */
    const char *why; /* static */
};

/* Appends to out the rows of body[0..len), whole rows each ending in "\n" (or "\r\n"),
 * converted; each output row ends in "\n", one for one. scratch is a buffer the caller
 * keeps between calls (an Array cell is unquoted into it). Returns the number of rows, or
 * -1 with *ref set: a row whose values PostgreSQL cannot hold (a NUL in a string, a ragged
 * or dimension-losing nested array, an empty cell a DEFAULT expression left, a wrong
 * number of cells) or out of memory (ref->row -1). out->len is then undefined. No
 * allocation beyond out's and scratch's growth. */
long pg_cells_batch(const struct pg_rows *rows, const char *body, size_t len, struct buf *out,
                    struct buf *scratch, struct pg_refusal *ref);

/* pg_cells_batch by pieces, for streaming: converts whole rows of body[0..len) until out
 * has grown by at least want bytes or body ends; *used gets the bytes of body consumed (at
 * a row boundary). Returns the rows converted, or -1 as pg_cells_batch (ref->row counted
 * from body). */
long pg_cells_rows(const struct pg_rows *rows, const char *body, size_t len, size_t want,
                   struct buf *out, struct buf *scratch, struct pg_refusal *ref, size_t *used);

#endif
