/* table_check.c -- does a ClickHouse table hold every row a definition accepts? Compares
 * the types of DESCRIBE TABLE with the definition's, value range against value range. */
#include "table_check.h"

#include <stdio.h>
#include <string.h>

/* The table's type, as far as the check needs it: Array depth, Nullable, and a scalar that
 * is one of ndingest's types, an Enum or a FixedString. LowCardinality changes no value. */
enum { HAVE_TYPE, HAVE_ENUM, HAVE_FIXED, HAVE_UNKNOWN };
struct have_type {
    int what;
    int depth, nullable;
    struct type scalar; /* HAVE_TYPE */
};

static void trim(const char **p, size_t *n)
{
    while (*n && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*n)--;
    }
    while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

/* WORD(inner) at p[0..n): 1 with p, n narrowed to inner. */
static int unwrap(const char **p, size_t *n, const char *word)
{
    size_t wn = strlen(word);
    if (*n < wn + 2 || memcmp(*p, word, wn) != 0 || (*p)[wn] != '(' || (*p)[*n - 1] != ')')
        return 0;
    *p += wn + 1;
    *n -= wn + 2;
    trim(p, n);
    return 1;
}

static void parse_have(struct have_type *h, const char *p, size_t n)
{
    memset(h, 0, sizeof *h);
    trim(&p, &n);
    for (;;) {
        if (unwrap(&p, &n, "LowCardinality"))
            continue;
        if (unwrap(&p, &n, "Nullable")) {
            h->nullable = 1;
            continue;
        }
        if (unwrap(&p, &n, "Array")) {
            h->depth++;
            h->nullable = 0; /* Nullable(Array) does not exist; the inner one counts */
            continue;
        }
        break;
    }
    if ((n > 6 && !memcmp(p, "Enum8(", 6)) || (n > 7 && !memcmp(p, "Enum16(", 7)) ||
        (n > 5 && !memcmp(p, "Enum(", 5)))
        h->what = HAVE_ENUM;
    else if (n > 12 && !memcmp(p, "FixedString(", 12))
        h->what = HAVE_FIXED;
    else {
        const char *why;
        h->what = type_parse(&h->scalar, p, n, &why) == 0 ? HAVE_TYPE : HAVE_UNKNOWN;
    }
}

static int is_int(int k)
{
    return k >= TYPE_INT8 && k <= TYPE_UINT256;
}
static int is_signed(int k)
{
    return k >= TYPE_INT8 && k <= TYPE_INT256;
}
static int int_bits(int k)
{
    static const int bits[] = {8, 16, 32, 64, 128, 256};
    return bits[is_signed(k) ? k - TYPE_INT8 : k - TYPE_UINT8];
}
/* The decimal digits of the integer type's largest magnitude. */
static int int_digits(int k)
{
    static const int sdigits[] = {3, 5, 10, 19, 39, 77}, udigits[] = {3, 5, 10, 20, 39, 78};
    return is_signed(k) ? sdigits[k - TYPE_INT8] : udigits[k - TYPE_UINT8];
}

/* Does the table's scalar h hold every value of the definition's scalar w? */
static int scalar_holds(const struct type *w, const struct type *h)
{
    int wk = w->kind, hk = h->kind;
    if (hk == TYPE_STRING)
        return 1; /* every cell is text, and a String keeps it as sent */
    if (is_int(wk)) {
        if (is_int(hk)) {
            if (is_signed(wk))
                return is_signed(hk) && int_bits(hk) >= int_bits(wk);
            return is_signed(hk) ? int_bits(hk) > int_bits(wk) : int_bits(hk) >= int_bits(wk);
        }
        /* A float holds an integer exactly while it fits its mantissa. */
        int value_bits = int_bits(wk) - is_signed(wk);
        if (hk == TYPE_FLOAT32)
            return value_bits <= 24;
        if (hk == TYPE_FLOAT64)
            return value_bits <= 53;
        if (hk == TYPE_DECIMAL)
            return h->precision - h->scale >= int_digits(wk);
        return 0;
    }
    switch (wk) {
    case TYPE_FLOAT32:
        return hk == TYPE_FLOAT32 || hk == TYPE_FLOAT64;
    case TYPE_FLOAT64:
        return hk == TYPE_FLOAT64;
    case TYPE_DECIMAL:
        return hk == TYPE_DECIMAL && h->scale >= w->scale &&
               h->precision - h->scale >= w->precision - w->scale;
    case TYPE_DATE:
        /* Not DateTime: 18.16 refuses a bare date for a DateTime (Code 41). */
        return hk == TYPE_DATE || hk == TYPE_DATE32;
    case TYPE_DATETIME:
        return hk == TYPE_DATETIME || hk == TYPE_DATETIME64;
    case TYPE_DATETIME64:
        return hk == TYPE_DATETIME64 && h->precision >= w->precision;
    default: /* Date32, Bool, UUID, String: only themselves */
        return hk == wk;
    }
}

static size_t add(struct table_problem *problems, size_t max, size_t n, const char *column,
                  const char *fmt, const char *a, const char *b)
{
    if (n < max) {
        snprintf(problems[n].column, sizeof problems[n].column, "%s", column);
        snprintf(problems[n].message, sizeof problems[n].message, fmt, a, b);
    }
    return n + 1;
}

size_t table_check(const struct table_want *want, size_t nwant,
                   const struct clickhouse_column *have, size_t nhave,
                   struct table_problem *problems, size_t max)
{
    size_t found = 0;
    for (size_t i = 0; i < nwant; i++) {
        const struct table_want *w = &want[i];
        const struct clickhouse_column *c = NULL;
        for (size_t j = 0; j < nhave && !c; j++)
            if (!strcmp(have[j].name, w->name))
                c = &have[j];
        char wname[256];
        type_name(&w->type, wname, sizeof wname);
        if (!c) {
            found = add(problems, max, found, w->name, "missing from the table (%s%s)", wname,
                        "");
            continue;
        }
        if (!strcmp(c->default_kind, "MATERIALIZED") || !strcmp(c->default_kind, "ALIAS")) {
            found = add(problems, max, found, w->name, "is %s in the table: an INSERT cannot "
                        "name it%s", c->default_kind, "");
            continue;
        }
        struct have_type h;
        parse_have(&h, c->type, strlen(c->type));
        const struct type *ws = &w->type;
        /* A FixedString refuses a longer value; a type unknown here is never assumed to
         * fit: both stay 0. */
        int ok = 0;
        if (h.what == HAVE_TYPE && h.depth == 0 && h.scalar.kind == TYPE_STRING)
            /* Any cell, an Array's too, is text a String keeps as sent; only a null needs
             * Nullable(String), or it would load as the text \N. */
            ok = !(ws->array_depth == 0 && ws->nullable && !h.nullable);
        else if (h.depth == ws->array_depth && (!ws->nullable || h.nullable)) {
            if (h.what == HAVE_ENUM)
                ok = ws->kind == TYPE_STRING; /* the user's choice: refused rows quarantined */
            else if (h.what == HAVE_TYPE)
                ok = scalar_holds(ws, &h.scalar);
        }
        if (!ok)
            found = add(problems, max, found, w->name, "%s cannot hold every %s", c->type,
                        wname);
    }
    return found;
}
