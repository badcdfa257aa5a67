/* quarantine.h -- the quarantine file's format: the columns of DIR/NAME-YYYY-MM-DD.quarantine.csv,
 * shared by the writer and by `ndingest schema --clickhouse`, so the two cannot drift; the
 * reasons a line is refused, by class; and the row writer. */
#ifndef NDINGEST_QUARANTINE_H
#define NDINGEST_QUARANTINE_H

#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "types.h"

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

/* Why a line was refused, by class: what the stats and the metrics count. A line refused
 * for several columns counts once, under its first refused column's class. */
enum quarantine_reason {
    QUARANTINE_JSON,      /* not one strictly valid JSON object */
    QUARANTINE_OVERSIZE,  /* longer than --max-line: counted, not stored */
    QUARANTINE_NULL,      /* missing or null for a non-Nullable column without DEFAULT */
    QUARANTINE_KIND,      /* the wrong JSON kind (a string for a number...) */
    QUARANTINE_SYNTAX,    /* the right kind, not the type's form (1.5 for an integer) */
    QUARANTINE_RANGE,     /* outside the type's range */
    QUARANTINE_SCALE,     /* more decimals than a Decimal's scale */
    QUARANTINE_PRECISION, /* more integer digits than a Decimal's precision allows */
    QUARANTINE_DATE,      /* not a calendar date or time */
    /* Refused for any of the reasons above past a quarantine bound (--max-quarantine,
     * --max-quarantine-day): counted, not stored. */
    QUARANTINE_FULL,
    QUARANTINE_REASONS
};

/* Indexed by enum quarantine_reason: "json", "oversize", "null", "kind", "syntax",
 * "range", "scale", "precision", "date", "full" (metric label values, the stats line's keys). */
extern const char *const quarantine_reason_names[QUARANTINE_REASONS];

/* The class of a type_cell refusal (any result but TYPE_OK and TYPE_ERR_NOMEM). */
enum quarantine_reason quarantine_reason_of(enum type_result r);

/* One refused column: its name and why, neither NUL-terminated, both only read during the
 * call. A refusal of the whole line (invalid JSON) has column NULL. */
struct quarantine_refusal {
    const char *column, *reason;
    size_t column_len, reason_len;
};

/* insertion_date's text for one second: formatting it costs more than reading the clock,
 * so it is formatted once per second. Zero-filled is ready (no second formatted yet). */
struct quarantine_clock {
    time_t sec;
    int valid;
    char text[TYPE_DATETIME_LEN];
};

/* Appends one quarantine row to out for the line p[0..n) (without its line end) refused at
 * now, for the reasons r[0..nr) in the definition's order, ending it with LF: the four cells
 * of quarantine_columns. Allocates nothing beyond out's growth, calls no stdio. 0, or -1
 * when out cannot grow (out->len then unchanged). */
int quarantine_row(struct buf *out, struct quarantine_clock *clock, time_t now,
                   const struct quarantine_refusal *r, size_t nr, const char *p, size_t n);

#endif
