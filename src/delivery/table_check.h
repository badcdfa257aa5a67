/* table_check.h -- does a ClickHouse table hold every row a definition accepts? Its
 * DESCRIBE TABLE columns against the definition's columns, every problem reported. */
#ifndef NDINGEST_TABLE_CHECK_H
#define NDINGEST_TABLE_CHECK_H

#include <stddef.h>

#include "../types.h"
#include "clickhouse.h"

/* A column as delivery sends it: its name and the type its cells were checked against
 * (the classic untyped dataset's cells are text: TYPE_STRING). */
struct table_want {
    const char *name;
    struct type type;
};

struct table_problem {
    char column[256];
    char message[640]; /* "UInt8 cannot hold every UInt16 (...)", "missing", ... */
};

/* Compares the table's columns have[0..nhave) (DESCRIBE TABLE) with want[0..nwant). A
 * problem is: a wanted column the table lacks, or holds as MATERIALIZED or ALIAS (an
 * INSERT cannot name it), or whose type cannot hold every value the definition accepts
 * (18.16 wraps an integer it cannot hold: 1000 into UInt8 loads as 232). Wider is fine
 * (Int64 for Int32, Nullable(T) for T, LowCardinality(T) for T, String for any cell, an
 * Enum for a String: the user validates there). The table may have more columns, in any
 * order: the INSERT names the columns it sends, and the others take their defaults.
 * Fills problems[0..max) and returns how many problems there are (possibly more than
 * max): 0 when the table fits. */
size_t table_check(const struct table_want *want, size_t nwant,
                   const struct clickhouse_column *have, size_t nhave,
                   struct table_problem *problems, size_t max);

#endif
