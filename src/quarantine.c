/* quarantine.c -- the quarantine file's columns (see quarantine.h). */
#include "quarantine.h"

/* Tinybird's quarantine names c__error_column and c__error, both arrays; the line is kept
 * whole as a String, which holds any bytes, so nothing refused is lost. */
const struct quarantine_column_def quarantine_columns[QUARANTINE_NCOLUMNS] = {
    [QUARANTINE_INSERTION_DATE] = {"insertion_date", "DateTime('UTC')"},
    [QUARANTINE_ERROR_COLUMN] = {"c__error_column", "Array(String)"},
    [QUARANTINE_ERROR] = {"c__error", "Array(String)"},
    [QUARANTINE_LINE] = {"line", "String"},
};
