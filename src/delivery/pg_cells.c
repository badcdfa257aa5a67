/* pg_cells.c -- day-file rows (cells for ClickHouse's CSV input) rewritten for PostgreSQL's
 * COPY ... (FORMAT csv): NULL, empty strings, the end marker, arrays, time zones, floats. */
#include "pg_cells.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../schema_pg.h"

static const char OOM[] = "out of memory";
static const char NUL_IN_TEXT[] = "a NUL byte, which PostgreSQL's text cannot hold";

/* Appends p[0..n): most cells pass through as they are, a few bytes each, so inline and
 * without a memcpy call for the short ones. 0, or -1 when out cannot grow. */
static inline int app(struct buf *out, const char *p, size_t n)
{
    if (buf_reserve(out, n))
        return -1;
    char *w = out->p + out->len;
    if (n <= 16)
        put_upto16(w, p, n);
    else
        memcpy(w, p, n);
    out->len += n;
    return 0;
}

static inline const char *append(struct buf *out, const char *p, size_t n)
{
    return app(out, p, n) ? OOM : NULL;
}

/* One CSV field as written: p[0..n) includes its quotes when quoted. */
struct field {
    const char *p;
    size_t n;
    int quoted;
};

/* Reads the field at *pp into f and moves *pp past its separator. 1 when another field of
 * the row follows, 0 at the row's end (a "\n", "\r\n" or the body's end), -1 for text that
 * is not CSV (an unclosed quote, bytes after a closing quote). */
static int next_field(const char **pp, const char *end, struct field *f)
{
    const char *p = *pp;
    f->p = p;
    f->quoted = p < end && *p == '"';
    if (f->quoted) {
        for (p++;;) {
            const char *q = memchr(p, '"', (size_t)(end - p));
            if (!q)
                return -1;
            if (q + 1 < end && q[1] == '"') {
                p = q + 2;
                continue;
            }
            p = q + 1;
            break;
        }
    } else {
        while (p < end && *p != ',' && *p != '\n')
            p++;
    }
    const char *fe = p;
    if (p < end && *p == ',') {
        f->n = (size_t)(fe - f->p);
        *pp = p + 1;
        return 1;
    }
    if (p < end && *p == '\r' && p + 1 < end && p[1] == '\n')
        p++; /* a quoted field's CRLF */
    else if (!f->quoted && p < end && fe > f->p && fe[-1] == '\r')
        fe--; /* an unquoted field's CRLF */
    if (p < end && *p != '\n')
        return -1;
    f->n = (size_t)(fe - f->p);
    *pp = p < end ? p + 1 : p;
    return 0;
}

static int is_end_marker(const struct field *f)
{
    return !f->quoted && f->n == 2 && f->p[0] == '\\' && f->p[1] == '.';
}

/* MARK: - Floats */

static int same_ci(const char *p, size_t n, const char *word)
{
    size_t i = 0;
    for (; i < n && word[i]; i++)
        if ((p[i] | 0x20) != word[i])
            return 0;
    return i == n && !word[i];
}

/* PostgreSQL's own spelling of ClickHouse's nan and inf ("NaN", "Infinity", "-Infinity":
 * what float8in is documented to read, though PostgreSQL 15 also takes "inf"), or NULL for
 * a number. */
static const char *float_word(const char *p, size_t n)
{
    int neg = n && p[0] == '-';
    if (n && (p[0] == '-' || p[0] == '+'))
        p++, n--;
    if (same_ci(p, n, "nan"))
        return "NaN";
    if (same_ci(p, n, "inf") || same_ci(p, n, "infinity"))
        return neg ? "-Infinity" : "Infinity";
    return NULL;
}

/* The longest float text checked for underflow; a longer one is sent as written (and
 * PostgreSQL refuses it if it underflows: the row goes to the quarantine). */
#define PG_FLOAT_TEXT 1024

/* A number that underflows to zero: ndingest accepts it (doc/datasets.md, section 3) and
 * ClickHouse reads 0, but PostgreSQL's float4in/float8in refuse it as out of range. So such
 * a cell is sent as 0 (or -0). Only texts that can underflow are parsed (a negative
 * exponent, or a long run of digits), with strtod in the C locale ndingest runs in. */
static int underflows(const char *p, size_t n, int single)
{
    const char *e = memchr(p, 'e', n);
    if (!e)
        e = memchr(p, 'E', n);
    if ((!(e && e + 1 < p + n && e[1] == '-') && n < 300) || n >= PG_FLOAT_TEXT)
        return 0;
    char text[PG_FLOAT_TEXT];
    memcpy(text, p, n);
    text[n] = '\0';
    errno = 0;
    double v = single ? (double)strtof(text, NULL) : strtod(text, NULL);
    return errno == ERANGE && v == 0;
}

static int put_float(struct buf *out, const char *p, size_t n, int single)
{
    const char *word = float_word(p, n);
    if (word)
        return app(out, word, strlen(word));
    if (underflows(p, n, single))
        return app(out, p[0] == '-' ? "-0" : "0", p[0] == '-' ? 2 : 1);
    return app(out, p, n);
}

/* MARK: - Arrays */

/* An Array cell's ClickHouse literal ("['a','b']", "[[1,2],[3,4]]", "[NULL,1]") as
 * PostgreSQL's array literal ({"a","b"}, {{1,2},{3,4}}, {NULL,1}) inside one quoted CSV
 * field, so every '"' of the literal is written doubled. */
struct array {
    const char *p, *end;
    const struct type *t;
    struct buf *out;
    size_t dims[TYPE_MAX_ARRAY_DEPTH];
    int seen[TYPE_MAX_ARRAY_DEPTH];
    const char *why;
};

static int fail(struct array *a, const char *why)
{
    a->why = why;
    return -1;
}

static int put(struct array *a, const char *s, size_t n)
{
    return app(a->out, s, n) ? fail(a, OOM) : 0;
}

static void blanks(struct array *a)
{
    while (a->p < a->end && (*a->p == ' ' || *a->p == '\t'))
        a->p++;
}

/* A single-quoted element ('a\'b', '2024-01-05 01:02:03') as a double-quoted one: the
 * escapes of ClickHouse's text (\' \\ \n \r \t \0 \b \f \a \v \xHH; another \c is c)
 * decoded, then '"' and '\' backslashed for PostgreSQL's array input and '"' doubled for
 * the CSV field. A DateTime gets "+00": the cells are UTC. */
static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
}

static int quoted_element(struct array *a)
{
    if (put(a, "\"\"", 2))
        return -1;
    for (a->p++;;) {
        if (a->p >= a->end)
            return fail(a, "an unclosed string in an Array cell");
        char c = *a->p++;
        if (c == '\'')
            break;
        if (c == '\\') {
            if (a->p >= a->end)
                return fail(a, "an unclosed string in an Array cell");
            c = *a->p++;
            switch (c) {
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case '0': c = '\0'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'a': c = '\a'; break;
            case 'v': c = '\v'; break;
            case 'x':
                if (a->end - a->p >= 2 && hexval(a->p[0]) >= 0 && hexval(a->p[1]) >= 0) {
                    c = (char)(hexval(a->p[0]) << 4 | hexval(a->p[1]));
                    a->p += 2;
                }
                break;
            default: break;
            }
        }
        if (c == '\0')
            return fail(a, NUL_IN_TEXT);
        if (c == '"' ? put(a, "\\\"\"", 3) : c == '\\' ? put(a, "\\\\", 2) : put(a, &c, 1))
            return -1;
    }
    int tz = a->t->kind == TYPE_DATETIME || a->t->kind == TYPE_DATETIME64;
    return (tz && put(a, "+00", 3)) || put(a, "\"\"", 2);
}

/* A bare element: NULL, a number, true or false. */
static int bare_element(struct array *a)
{
    const char *s = a->p;
    while (a->p < a->end && *a->p != ',' && *a->p != ']' && *a->p != ' ' && *a->p != '\t')
        a->p++;
    size_t n = (size_t)(a->p - s);
    if (!n)
        return fail(a, "an empty element in an Array cell");
    if (n == 4 && memcmp(s, "NULL", 4) == 0)
        return put(a, "NULL", 4);
    if (memchr(s, '"', n) || memchr(s, '{', n) || memchr(s, '}', n) || memchr(s, '\\', n))
        return fail(a, "an element that is not a ClickHouse literal in an Array cell");
    if (a->t->kind == TYPE_FLOAT32 || a->t->kind == TYPE_FLOAT64)
        return put_float(a->out, s, n, a->t->kind == TYPE_FLOAT32) ? fail(a, OOM) : 0;
    return put(a, s, n);
}

/* The list at a->p ('['), at nesting depth (0 outermost). PostgreSQL's arrays are
 * rectangular and have no empty inner arrays (it refuses '{{1},{2,3}}' and '{{},{}}' as
 * malformed): such a row is refused here, naming the reason, without a round trip. */
static int list(struct array *a, unsigned depth)
{
    if (a->p >= a->end || *a->p != '[')
        return fail(a, depth ? "a NULL or non-array inner element in an Array cell"
                             : "an Array cell that is not a ClickHouse array");
    a->p++;
    if (put(a, "{", 1))
        return -1;
    size_t count = 0;
    blanks(a);
    if (a->p < a->end && *a->p == ']') {
        a->p++;
    } else {
        for (;;) {
            blanks(a);
            int rc = depth + 1 < a->t->array_depth ? list(a, depth + 1)
                     : a->p < a->end && *a->p == '\'' ? quoted_element(a)
                                                       : bare_element(a);
            if (rc)
                return -1;
            count++;
            blanks(a);
            if (a->p < a->end && *a->p == ',') {
                a->p++;
                if (put(a, ",", 1))
                    return -1;
                continue;
            }
            if (a->p < a->end && *a->p == ']') {
                a->p++;
                break;
            }
            return fail(a, "an Array cell that is not a ClickHouse array");
        }
    }
    if (depth && !count)
        return fail(a, "an empty inner array, which PostgreSQL's arrays cannot hold");
    if (!a->seen[depth]) {
        a->seen[depth] = 1;
        a->dims[depth] = count;
    } else if (a->dims[depth] != count) {
        return fail(a, "inner arrays of different lengths, which PostgreSQL's arrays cannot hold");
    }
    return put(a, "}", 1);
}

static const char *array_cell(const struct type *t, const struct field *f, struct buf *out,
                              struct buf *scratch)
{
    if (t->array_depth > PG_MAX_ARRAY_DEPTH)
        return "an Array deeper than PostgreSQL's 6 dimensions";
    /* the literal, unquoted from its CSV field (with "" as ") */
    struct buf *lit = scratch;
    lit->len = 0;
    if (f->quoted) {
        for (size_t i = 1; i + 1 < f->n; i++) {
            if (app(lit, f->p + i, 1))
                return OOM;
            if (f->p[i] == '"')
                i++;
        }
    } else if (app(lit, f->p, f->n)) {
        return OOM;
    }
    struct array a = {.p = lit->p, .end = lit->p + lit->len, .t = t, .out = out};
    int rc = put(&a, "\"", 1) || list(&a, 0);
    if (!rc) {
        blanks(&a);
        rc = a.p != a.end ? fail(&a, "bytes after an Array cell's array") : put(&a, "\"", 1);
    }
    return rc ? a.why : NULL;
}

/* MARK: - Cells */



/* An untyped cell (doc/format.md, section 3): text, quoted only when it must be. An empty
 * cell is null or an empty string there, undistinguishable: it is sent as an empty string
 * ("": PostgreSQL reads an unquoted empty field as NULL), so text columns hold what any CSV
 * reader of the day file reads. */
static const char *text_cell(const struct field *f, struct buf *out)
{
    if (memchr(f->p, '\0', f->n))
        return NUL_IN_TEXT;
    if (!f->quoted && f->n == 0)
        return append(out, "\"\"", 2);
    if (is_end_marker(f))
        return append(out, "\"\\.\"", 4);
    return append(out, f->p, f->n);
}

static const char *typed_cell(const struct type *t, const struct field *f, struct buf *out,
                              struct buf *scratch)
{
    if (!f->quoted && f->n == 2 && f->p[0] == '\\' && f->p[1] == 'N')
        return NULL; /* NULL: an unquoted empty field, written as nothing */
    if (!f->quoted && f->n == 0)
        return "an empty cell (a DEFAULT expression's), which PostgreSQL's COPY would read "
               "as NULL, not as the column's default";
    if (t->array_depth)
        return array_cell(t, f, out, scratch);
    switch ((enum type_kind)t->kind) {
    case TYPE_STRING:
        if (memchr(f->p, '\0', f->n))
            return NUL_IN_TEXT;
        if (is_end_marker(f))
            return append(out, "\"\\.\"", 4);
        return append(out, f->p, f->n);
    case TYPE_FLOAT32:
    case TYPE_FLOAT64: {
        const char *p = f->p + f->quoted;
        size_t n = f->n - 2 * (size_t)f->quoted;
        return put_float(out, p, n, t->kind == TYPE_FLOAT32) ? OOM : NULL;
    }
    case TYPE_DATETIME:
    case TYPE_DATETIME64:
        /* UTC times without a zone: "+00" says so, whatever the session's TimeZone */
        if (f->quoted)
            return append(out, f->p, f->n - 1) ? OOM : append(out, "+00\"", 4);
        return append(out, f->p, f->n) ? OOM : append(out, "+00", 3);
    default:
        /* integers, Decimal, Bool (true/false), Date, UUID: PostgreSQL reads them as written */
        return append(out, f->p, f->n);
    }
}

long pg_cells_rows(const struct pg_rows *rows, const char *body, size_t len, size_t want,
                   struct buf *out, struct buf *scratch, struct pg_refusal *ref, size_t *used)
{
    const struct datasource *ds = rows->ds;
    size_t ncolumns = ds ? ds->ncolumns : rows->ncolumns;
    const char *p = body, *end = body + len;
    long row = 0;
    size_t start = out->len;
    *used = 0;
    for (; p < end && out->len - start < want; row++) {
        size_t col = 0;
        int more;
        do {
            struct field f;
            more = next_field(&p, end, &f);
            const char *why = NULL;
            if (more < 0)
                why = "a row that is not CSV";
            else if (col >= ncolumns)
                why = "more cells than the dataset has columns";
            else if (col && append(out, ",", 1))
                why = OOM;
            else
                why = ds ? typed_cell(&ds->columns[col].type, &f, out, scratch)
                         : text_cell(&f, out);
            if (why) {
                ref->row = why == OOM ? -1 : row;
                ref->column = more < 0 || col >= ncolumns ? -1 : (long)col;
                ref->why = why;
                return -1;
            }
            col++;
        } while (more);
        if (col != ncolumns || append(out, "\n", 1)) {
            ref->row = col != ncolumns ? row : -1;
            ref->column = -1;
            ref->why = col != ncolumns ? "fewer cells than the dataset has columns" : OOM;
            return -1;
        }
        *used = (size_t)(p - body);
    }
    return row;
}

long pg_cells_batch(const struct pg_rows *rows, const char *body, size_t len, struct buf *out,
                    struct buf *scratch, struct pg_refusal *ref)
{
    size_t used;
    return pg_cells_rows(rows, body, len, (size_t)-1, out, scratch, ref, &used);
}
