/* types.h -- ClickHouse column types: parses a type name, checks a JSON value against it
 * and writes the CSV cell that ClickHouse's CSV input reads back exactly. */
#ifndef NDINGEST_TYPES_H
#define NDINGEST_TYPES_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "json.h"

/* Array(Array(...)) nesting allowed in a column type. */
#define TYPE_MAX_ARRAY_DEPTH 8

/* The ClickHouse the cells are written for. 18.16 reads Date only to 2105-12-31 and
 * DateTime only to 2105-12-31 23:59:59 UTC; past them it loads 0000-00-00 or a wrapped
 * time without an error, so for it such values are refused (TYPE_ERR_RANGE). Current
 * ClickHouse reads Date to 2149-06-06 and DateTime to 2106-02-07 06:28:15. */
enum type_target { TYPE_TARGET_CURRENT, TYPE_TARGET_18_16 };

/* Sets the target of every later check, DEFAULT literals included: once at start, before
 * any definition is loaded and any worker is forked (--clickhouse-compat). The default is
 * TYPE_TARGET_CURRENT. */
void type_set_target(enum type_target target);
enum type_target type_target(void);

/* The scalar at the heart of a type; Array, Nullable and LowCardinality are flags on it. */
enum type_kind {
    TYPE_INT8,
    TYPE_INT16,
    TYPE_INT32,
    TYPE_INT64,
    TYPE_INT128,
    TYPE_INT256,
    TYPE_UINT8,
    TYPE_UINT16,
    TYPE_UINT32,
    TYPE_UINT64,
    TYPE_UINT128,
    TYPE_UINT256,
    TYPE_FLOAT32,
    TYPE_FLOAT64,
    TYPE_DECIMAL, /* precision, scale */
    TYPE_STRING,
    TYPE_BOOL,
    TYPE_DATE,       /* 1970-01-01 .. 2149-06-06 */
    TYPE_DATE32,     /* 1900-01-01 .. 2299-12-31 */
    TYPE_DATETIME,   /* 1970-01-01 00:00:00 .. 2106-02-07 06:28:15 UTC */
    TYPE_DATETIME64, /* precision = digits of the fraction; 1900 .. 2299 */
    TYPE_UUID,
};

/* A parsed type. ClickHouse allows Nullable only around a scalar (never around an Array or
 * a LowCardinality), so one flat description is exact: Array(Array(Nullable(T))) is
 * array_depth 2, nullable 1, kind T. Zero-filled is Int8. */
struct type {
    uint8_t kind;            /* enum type_kind */
    uint8_t array_depth;     /* 0 for a scalar column */
    uint8_t nullable;        /* the scalar is Nullable: null is written as \N (NULL in arrays) */
    uint8_t low_cardinality; /* only a storage hint: values are checked as the inner type */
    uint8_t precision;       /* Decimal: P (1..76); DateTime64: fraction digits (0..9) */
    uint8_t scale;           /* Decimal: S (0..P) */
};

/* Parses a ClickHouse type name from p[0..n): Int8..Int256, UInt8..UInt256, Float32,
 * Float64, Decimal(P, S), Decimal(P), Decimal32/64/128/256(S), String, Bool (Boolean),
 * Date, Date32, DateTime, DateTime('UTC'), DateTime64(p), DateTime64(p, 'UTC'), UUID, and
 * LowCardinality(T), Nullable(T), Array(T) around them; blanks allowed around tokens.
 * 0, or -1 with *why set to a static message (unknown type, a bad argument, a nesting
 * ClickHouse forbids, a time zone other than UTC). */
int type_parse(struct type *t, const char *p, size_t n, const char **why);

/* Why a value was refused: the quarantine's reason code. */
enum type_result {
    TYPE_OK = 0,
    TYPE_ERR_NOMEM,  /* out cannot grow */
    TYPE_ERR_NULL,   /* missing or null for a non-Nullable column (and no DEFAULT) */
    TYPE_ERR_KIND,   /* the wrong JSON kind: a string for a number, an object for a Date... */
    TYPE_ERR_SYNTAX, /* the right kind, but not the type's form: 1.5 for an integer, "x" for a UUID
                      */
    TYPE_ERR_RANGE,  /* outside the type's range */
    TYPE_ERR_SCALE,  /* more decimal places than the Decimal's scale */
    TYPE_ERR_PRECISION, /* more integer digits than the Decimal's precision allows */
    TYPE_ERR_DATE,      /* not a calendar date or time (Feb 30, 24:00, a bad offset) */
};

/* Checks the value v (as json_line gives it) against t and appends its CSV cell to out:
 * the cell only, no separator. Missing and null (CELL_EMPTY) become \N for a Nullable
 * column and TYPE_ERR_NULL otherwise (a DEFAULT is the caller's business, see datasource.h).
 * On TYPE_OK the cell is appended; on any other result out->len is unchanged (the buffer
 * may have grown) and *why points to a short static message for the quarantine ("out of
 * range for UInt8", "not a valid date", "scale exceeds 2"). Allocates nothing beyond out's
 * growth, calls no stdio and no locale-dependent function: numbers, dates and UUIDs are
 * checked as text. The forms accepted and written are listed in doc/datasets.md. */
enum type_result type_cell(const struct type *t, const struct cell *v, struct buf *out,
                           const char **why);

/* type_cell for a column whose path gathers Array elements with [:]: each[0..neach) are
 * the path's steps after its first [:] (NULL, 0 when it has none, which is type_cell). Each
 * element of the array v is followed by the KEY and INDEX steps up to the next [:] with
 * json_follow (a missing key is a null element), and the elements of what that finds by the
 * steps after it, one Array level per [:] (doc/datasets.md, section 2). Same contract as
 * type_cell; an element's refusal is the column's. */
enum type_result type_cell_each(const struct type *t, const struct cell *v,
                                const struct json_step *each, size_t neach, struct buf *out,
                                const char **why);

/* A scalar type's check, by kind (static storage): the value v, never CELL_EMPTY, against
 * t, its cell appended to out (in_array: as an Array element, strings, dates and UUIDs
 * single-quoted). On refusal out->len is unchanged, but for TYPE_ERR_NOMEM. Callers use
 * type_scalar_cell. */
typedef enum type_result (*type_scalar_fn)(const struct type *t, const struct cell *v,
                                           struct buf *out, int in_array, const char **why);
extern const type_scalar_fn type_scalar_cells[TYPE_UUID + 1];

/* type_cell for a type without Array and a value v that is not CELL_EMPTY: every typed
 * row's cell, so inline, without type_cell's other cases. Same contract. */
static inline enum type_result type_scalar_cell(const struct type *t, const struct cell *v,
                                                struct buf *out, const char **why)
{
    size_t start = out->len;
    enum type_result r = type_scalar_cells[t->kind](t, v, out, 0, why);
    if (__builtin_expect(r != TYPE_OK, 0)) {
        if (r == TYPE_ERR_NOMEM)
            *why = "out of memory";
        out->len = start;
    }
    return r;
}

/* The most a short path writes (a DateTime64(9), 29 bytes; a String of up to 30). */
#define TYPE_SHORT_MAX 32

/* A scalar type's short path, by kind (static storage): the forms most values are sent in
 * (a plain number of up to 16 bytes, YYYY-MM-DD[ hh:mm:ss[.f]] of 1971 to 2105, a short
 * string with no quote), written at w, which has room for TYPE_SHORT_MAX bytes. Returns
 * the cell's length (never 0), having written exactly what type_scalar_cell would accept
 * and write; or 0 for any other value, type_scalar_cell's to judge (the bytes at w then
 * mean nothing). v is never CELL_EMPTY. No allocation, no call but to copy. */
typedef size_t (*type_short_fn)(const struct type *t, const struct cell *v, char *w);
extern const type_short_fn type_short_cells[TYPE_UUID + 1];

/* Writers the quarantine shares with the cells, so that its arrays and strings read back
 * as the day files' do. */

/* Appends p[0..n) as a string element of ClickHouse's array text: single-quoted, with
 * \' \\ \n \r \t \0 escaped. 0, or -1 when out cannot grow. */
int type_array_string(struct buf *out, const char *p, size_t n);
/* Closes the CSV field opened with '"' at out->p[start]: doubles the quotes of the text
 * written after it and appends the closing quote. 0, or -1 when out cannot grow. */
int type_csv_quote(struct buf *out, size_t start);

/* "YYYY-MM-DD hh:mm:ss": a DateTime cell's length. */
#define TYPE_DATETIME_LEN 19
/* Writes the Unix time sec (1970..9999) as a DateTime cell, UTC, into dst (not
 * NUL-terminated). */
void type_datetime_text(int64_t sec, char dst[TYPE_DATETIME_LEN]);

/* The type's name in ClickHouse's spelling ("LowCardinality(Nullable(String))") into
 * dst[0..cap), NUL-terminated; returns its length, or the length it would have had when
 * cap is too small (dst then holds a truncated name). */
size_t type_name(const struct type *t, char *dst, size_t cap);

#endif
