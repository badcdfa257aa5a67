/* quarantine.h -- the quarantine file's format: the columns of DIR/NAME-YYYY-MM-DD.quarantine.csv,
 * shared by the writer and by `ndingest schema --clickhouse`, so the two cannot drift. */
#ifndef NDINGEST_QUARANTINE_H
#define NDINGEST_QUARANTINE_H

/* One row per refused line, its cells in this order (doc/datasets.md, section 5):
 * the time it was refused, the columns refused, the reason for each (same length, same
 * order; a line that is not a JSON object has no column and one reason), and the line. */
enum quarantine_column {
    QUARANTINE_INSERTION_DATE, /* YYYY-MM-DD hh:mm:ss, UTC, unquoted */
    QUARANTINE_ERROR_COLUMN,   /* a ClickHouse array literal of column names, CSV-quoted */
    QUARANTINE_ERROR,          /* a ClickHouse array literal of reasons, CSV-quoted */
    QUARANTINE_LINE,           /* the line's bytes without its line end, CSV-quoted, " doubled */
    QUARANTINE_NCOLUMNS
};

/* A quarantine column: its name and its ClickHouse type. */
struct quarantine_column_def {
    const char *name, *type;
};

/* Indexed by enum quarantine_column; static storage. */
extern const struct quarantine_column_def quarantine_columns[QUARANTINE_NCOLUMNS];

/* The quarantine file's suffix after DIR/NAME-YYYY-MM-DD. */
#define QUARANTINE_SUFFIX ".quarantine.csv"

#endif
