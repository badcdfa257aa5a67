/* quarantine.c -- the quarantine file: its columns, the reasons by class, the row writer
 * (see quarantine.h). */
#include "quarantine.h"

/* Tinybird's quarantine names c__error_column and c__error, both arrays; the line is kept
 * whole as a String, which holds any bytes, so nothing refused is lost. */
const struct quarantine_column_def quarantine_columns[QUARANTINE_NCOLUMNS] = {
    [QUARANTINE_INSERTION_DATE] = {"insertion_date", "DateTime('UTC')"},
    [QUARANTINE_ERROR_COLUMN] = {"c__error_column", "Array(String)"},
    [QUARANTINE_ERROR] = {"c__error", "Array(String)"},
    [QUARANTINE_LINE] = {"line", "String"},
};

const char *const quarantine_reason_names[QUARANTINE_REASONS] = {
    [QUARANTINE_JSON] = "json",         [QUARANTINE_OVERSIZE] = "oversize",
    [QUARANTINE_NULL] = "null",         [QUARANTINE_KIND] = "kind",
    [QUARANTINE_SYNTAX] = "syntax",     [QUARANTINE_RANGE] = "range",
    [QUARANTINE_SCALE] = "scale",       [QUARANTINE_PRECISION] = "precision",
    [QUARANTINE_DATE] = "date",         [QUARANTINE_FULL] = "full",
};

enum quarantine_reason quarantine_reason_of(enum type_result r)
{
    switch (r) {
    case TYPE_ERR_NULL:
        return QUARANTINE_NULL;
    case TYPE_ERR_KIND:
        return QUARANTINE_KIND;
    case TYPE_ERR_RANGE:
        return QUARANTINE_RANGE;
    case TYPE_ERR_SCALE:
        return QUARANTINE_SCALE;
    case TYPE_ERR_PRECISION:
        return QUARANTINE_PRECISION;
    case TYPE_ERR_DATE:
        return QUARANTINE_DATE;
    case TYPE_OK:
    case TYPE_ERR_NOMEM:
    case TYPE_ERR_SYNTAX:
        break;
    }
    return QUARANTINE_SYNTAX;
}

/* The array literal of the names (names = 1) or of the reasons, as one CSV field. */
static int put_array(struct buf *out, const struct quarantine_refusal *r, size_t nr, int names)
{
    size_t start = out->len;
    int first = 1;
    if (buf_append(out, "\"[", 2))
        return -1;
    for (size_t i = 0; i < nr; i++) {
        if (names && !r[i].column)
            continue;
        if ((!first && buf_append(out, ",", 1)) ||
            (names ? type_array_string(out, r[i].column, r[i].column_len)
                   : type_array_string(out, r[i].reason, r[i].reason_len)))
            return -1;
        first = 0;
    }
    if (buf_append(out, "]", 1))
        return -1;
    return type_csv_quote(out, start);
}

int quarantine_row(struct buf *out, struct quarantine_clock *clock, time_t now,
                   const struct quarantine_refusal *r, size_t nr, const char *p, size_t n)
{
    if (!clock->valid || clock->sec != now) {
        type_datetime_text((int64_t)now, clock->text);
        clock->sec = now;
        clock->valid = 1;
    }
    size_t start = out->len;
    if (buf_append(out, clock->text, TYPE_DATETIME_LEN) || buf_append(out, ",", 1) ||
        put_array(out, r, nr, 1) || buf_append(out, ",", 1) || put_array(out, r, nr, 0) ||
        buf_append(out, ",\"", 2))
        goto nomem;
    size_t line = out->len - 1;
    if (buf_append(out, p, n) || type_csv_quote(out, line) || buf_append(out, "\n", 1))
        goto nomem;
    return 0;
nomem:
    out->len = start;
    return -1;
}
