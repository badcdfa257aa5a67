/* types.c -- ClickHouse column types: type names, JSON values checked as text, CSV cells
 * ClickHouse's CSV input reads back exactly. */
#include "types.h"

#include <string.h>

#include "simd.h"

/* MARK: - The scalar types */

struct scalar {
    const char *name;
    const char *max;   /* integers: the largest value, in decimal */
    const char *min;   /* signed integers: the magnitude of the smallest; NULL if unsigned */
    const char *range; /* the out-of-range message */
    /* Floats: the largest finite value's digits, and the shortest text that reads back as
     * it (in 18.16 too), written for the values between it and max, which round to it. */
    const char *top, *top_text;
};

static const struct scalar scalars[] = {
    [TYPE_INT8] = {"Int8", "127", "128", "out of range for Int8"},
    [TYPE_INT16] = {"Int16", "32767", "32768", "out of range for Int16"},
    [TYPE_INT32] = {"Int32", "2147483647", "2147483648", "out of range for Int32"},
    [TYPE_INT64] = {"Int64", "9223372036854775807", "9223372036854775808",
                    "out of range for Int64"},
    [TYPE_INT128] = {"Int128", "170141183460469231731687303715884105727",
                     "170141183460469231731687303715884105728", "out of range for Int128"},
    [TYPE_INT256] = {"Int256",
                     "578960446186580977117854925043439539266349923328202820197287920039565648"
                     "19967",
                     "578960446186580977117854925043439539266349923328202820197287920039565648"
                     "19968",
                     "out of range for Int256"},
    [TYPE_UINT8] = {"UInt8", "255", NULL, "out of range for UInt8"},
    [TYPE_UINT16] = {"UInt16", "65535", NULL, "out of range for UInt16"},
    [TYPE_UINT32] = {"UInt32", "4294967295", NULL, "out of range for UInt32"},
    [TYPE_UINT64] = {"UInt64", "18446744073709551615", NULL, "out of range for UInt64"},
    [TYPE_UINT128] = {"UInt128", "340282366920938463463374607431768211455", NULL,
                      "out of range for UInt128"},
    [TYPE_UINT256] = {"UInt256",
                      "115792089237316195423570985008687907853269984665640564039457584007913"
                      "129639935",
                      NULL, "out of range for UInt256"},
    /* Floats: max is the halfway point above the largest finite value, from which a
     * correctly rounding reader gives infinity. */
    [TYPE_FLOAT32] = {"Float32", "340282356779733661637539395458142568448", NULL,
                      "out of range for Float32", "340282346638528859811704183484516925440",
                      "3.4028235e38"},
    [TYPE_FLOAT64] = {"Float64",
                      "17976931348623158079372897140530341507993413271003782693617377898044"
                      "49682927647509466490179775872070963302864166928879109465555478519404"
                      "02630657488671505820681908902000708383676273854845817711531764475730"
                      "27006985557136695962284291481986083493647529271907416844436551070434"
                      "2711559699508093042880177904174497792",
                      NULL, "out of range for Float64",
                      "17976931348623157081452742373170435679807056752584499659891747680315"
                      "72607800285387605895586327668781715404589535143824642343213268894641"
                      "82768467546703537516986049910576551282076245490090389328944075868508"
                      "45513394230458323690322294816580855933212334827479782620414472316873"
                      "8177180919299881250404026184124858368",
                      "1.7976931348623157e308"},
    [TYPE_DECIMAL] = {"Decimal", NULL, NULL, "too many digits for the Decimal's precision"},
    [TYPE_STRING] = {"String", NULL, NULL, NULL},
    [TYPE_BOOL] = {"Bool", NULL, NULL, NULL},
    [TYPE_DATE] = {"Date", NULL, NULL, "out of range for Date (1970-01-01 to 2149-06-06)"},
    [TYPE_DATE32] = {"Date32", NULL, NULL, "out of range for Date32 (1900 to 2299)"},
    [TYPE_DATETIME] = {"DateTime", NULL, NULL,
                       "out of range for DateTime (1970-01-01 to 2106-02-07 06:28:15)"},
    [TYPE_DATETIME64] = {"DateTime64", NULL, NULL, "out of range for DateTime64 (1900 to 2299)"},
    [TYPE_UUID] = {"UUID", NULL, NULL, NULL},
};

#define SC(n) "scale exceeds " #n
static const char *const scale_msg[77] = {
    SC(0),  SC(1),  SC(2),  SC(3),  SC(4),  SC(5),  SC(6),  SC(7),  SC(8),  SC(9),  SC(10),
    SC(11), SC(12), SC(13), SC(14), SC(15), SC(16), SC(17), SC(18), SC(19), SC(20), SC(21),
    SC(22), SC(23), SC(24), SC(25), SC(26), SC(27), SC(28), SC(29), SC(30), SC(31), SC(32),
    SC(33), SC(34), SC(35), SC(36), SC(37), SC(38), SC(39), SC(40), SC(41), SC(42), SC(43),
    SC(44), SC(45), SC(46), SC(47), SC(48), SC(49), SC(50), SC(51), SC(52), SC(53), SC(54),
    SC(55), SC(56), SC(57), SC(58), SC(59), SC(60), SC(61), SC(62), SC(63), SC(64), SC(65),
    SC(66), SC(67), SC(68), SC(69), SC(70), SC(71), SC(72), SC(73), SC(74), SC(75), SC(76),
};
#undef SC

/* MARK: - Type names */

struct tparse {
    const char *p;
    size_t n, i;
    const char *why;
};

static void tp_blank(struct tparse *s)
{
    while (s->i < s->n &&
           (s->p[s->i] == ' ' || s->p[s->i] == '\t' || s->p[s->i] == '\n' || s->p[s->i] == '\r'))
        s->i++;
}

static int tp_char(struct tparse *s, char c)
{
    tp_blank(s);
    if (s->i < s->n && s->p[s->i] == c) {
        s->i++;
        return 1;
    }
    return 0;
}

static int word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static int tp_word(struct tparse *s, const char *w)
{
    tp_blank(s);
    size_t l = strlen(w);
    if (s->n - s->i >= l && memcmp(s->p + s->i, w, l) == 0 &&
        (s->i + l == s->n || !word_char(s->p[s->i + l]))) {
        s->i += l;
        return 1;
    }
    return 0;
}

/* A small decimal argument, 0..max. */
static int tp_uint(struct tparse *s, unsigned max, unsigned *v)
{
    tp_blank(s);
    size_t start = s->i;
    unsigned x = 0;
    while (s->i < s->n && s->p[s->i] >= '0' && s->p[s->i] <= '9') {
        x = x * 10 + (unsigned)(s->p[s->i++] - '0');
        if (x > max)
            return -1;
    }
    if (s->i == start)
        return -1;
    *v = x;
    return 0;
}

/* An optional time zone argument: only UTC, since cells are written in UTC and a zone's
 * rules would need a time zone database. */
static int tp_zone(struct tparse *s)
{
    tp_blank(s);
    static const char *const utc[] = {"'UTC'", "'Etc/UTC'"};
    for (size_t k = 0; k < 2; k++) {
        size_t l = strlen(utc[k]);
        if (s->n - s->i >= l && memcmp(s->p + s->i, utc[k], l) == 0) {
            s->i += l;
            return 0;
        }
    }
    s->why = "only the UTC time zone is supported";
    return -1;
}

static int tp_fail(struct tparse *s, const char *why)
{
    if (!s->why)
        s->why = why;
    return -1;
}

/* The scalar named at s: its kind and arguments. */
static int tp_scalar(struct tparse *s, struct type *t)
{
    unsigned a = 0, b = 0;
    for (unsigned k = 0; k <= TYPE_UUID; k++) {
        if (k == TYPE_DECIMAL || k == TYPE_DATETIME || k == TYPE_DATETIME64)
            continue;
        if (tp_word(s, scalars[k].name)) {
            t->kind = (uint8_t)k;
            return 0;
        }
    }
    if (tp_word(s, "Boolean")) {
        t->kind = TYPE_BOOL;
        return 0;
    }
    if (tp_word(s, "DateTime")) {
        t->kind = TYPE_DATETIME;
        if (tp_char(s, '(') && (tp_zone(s) || !tp_char(s, ')')))
            return tp_fail(s, "DateTime takes only a time zone: DateTime('UTC')");
        return 0;
    }
    if (tp_word(s, "DateTime64")) {
        t->kind = TYPE_DATETIME64;
        if (!tp_char(s, '(') || tp_uint(s, 9, &a))
            return tp_fail(s, "DateTime64 needs a precision of 0 to 9: DateTime64(3)");
        if (tp_char(s, ',') && tp_zone(s))
            return -1;
        if (!tp_char(s, ')'))
            return tp_fail(s, "DateTime64 takes a precision and a time zone");
        t->precision = (uint8_t)a;
        return 0;
    }
    static const struct {
        const char *name;
        unsigned precision;
    } fixed[] = {{"Decimal32", 9}, {"Decimal64", 18}, {"Decimal128", 38}, {"Decimal256", 76}};
    for (size_t k = 0; k < sizeof fixed / sizeof *fixed; k++) {
        if (tp_word(s, fixed[k].name)) {
            if (!tp_char(s, '(') || tp_uint(s, fixed[k].precision, &b) || !tp_char(s, ')'))
                return tp_fail(s, "a Decimal's scale must be between 0 and its precision");
            t->kind = TYPE_DECIMAL;
            t->precision = (uint8_t)fixed[k].precision;
            t->scale = (uint8_t)b;
            return 0;
        }
    }
    if (tp_word(s, "Decimal")) {
        if (!tp_char(s, '(') || tp_uint(s, 76, &a) || a == 0)
            return tp_fail(s, "Decimal needs a precision of 1 to 76: Decimal(P, S)");
        if (tp_char(s, ',') && (tp_uint(s, a, &b)))
            return tp_fail(s, "a Decimal's scale must be between 0 and its precision");
        if (!tp_char(s, ')'))
            return tp_fail(s, "Decimal takes a precision and a scale: Decimal(P, S)");
        t->kind = TYPE_DECIMAL;
        t->precision = (uint8_t)a;
        t->scale = (uint8_t)b;
        return 0;
    }
    return tp_fail(s, "unknown or unsupported type");
}

enum { IN_NULLABLE = 1, IN_LOWCARD = 2 };

static int tp_type(struct tparse *s, struct type *t, int in)
{
    if (tp_word(s, "Array")) {
        if (in & IN_NULLABLE)
            return tp_fail(s, "Nullable cannot hold an Array");
        if (in & IN_LOWCARD)
            return tp_fail(s, "LowCardinality cannot hold an Array");
        if (++t->array_depth > TYPE_MAX_ARRAY_DEPTH)
            return tp_fail(s, "Arrays nested too deeply");
        if (!tp_char(s, '(') || tp_type(s, t, in) || !tp_char(s, ')'))
            return tp_fail(s, "Array takes one type: Array(T)");
        return 0;
    }
    if (tp_word(s, "Nullable")) {
        if (in & IN_NULLABLE)
            return tp_fail(s, "Nullable cannot hold a Nullable");
        t->nullable = 1;
        if (!tp_char(s, '(') || tp_type(s, t, in | IN_NULLABLE) || !tp_char(s, ')'))
            return tp_fail(s, "Nullable takes one type: Nullable(T)");
        return 0;
    }
    if (tp_word(s, "LowCardinality")) {
        if (in & IN_NULLABLE)
            return tp_fail(s, "Nullable cannot hold a LowCardinality: write "
                              "LowCardinality(Nullable(T))");
        if (in & IN_LOWCARD)
            return tp_fail(s, "LowCardinality cannot hold a LowCardinality");
        t->low_cardinality = 1;
        if (!tp_char(s, '(') || tp_type(s, t, in | IN_LOWCARD) || !tp_char(s, ')'))
            return tp_fail(s, "LowCardinality takes one type: LowCardinality(T)");
        return 0;
    }
    return tp_scalar(s, t);
}

int type_parse(struct type *t, const char *p, size_t n, const char **why)
{
    struct tparse s = {p, n, 0, NULL};
    memset(t, 0, sizeof *t);
    if (tp_type(&s, t, 0) == 0) {
        tp_blank(&s);
        if (s.i == s.n)
            return 0;
        s.why = "unexpected text after the type";
    }
    *why = s.why ? s.why : "not a type";
    return -1;
}

/* Appends s to dst[*o..cap) as far as it fits, counting the full length in *o. */
static void put_name(char *dst, size_t cap, size_t *o, const char *s)
{
    for (; *s; s++, (*o)++)
        if (*o + 1 < cap)
            dst[*o] = *s;
}

static void put_uint(char *dst, size_t cap, size_t *o, unsigned v)
{
    char tmp[4] = {0};
    int k = 3;
    do {
        tmp[--k] = (char)('0' + v % 10);
        v /= 10;
    } while (v && k > 0);
    put_name(dst, cap, o, tmp + k);
}

size_t type_name(const struct type *t, char *dst, size_t cap)
{
    size_t o = 0;
    for (unsigned d = 0; d < t->array_depth; d++)
        put_name(dst, cap, &o, "Array(");
    if (t->low_cardinality)
        put_name(dst, cap, &o, "LowCardinality(");
    if (t->nullable)
        put_name(dst, cap, &o, "Nullable(");
    put_name(dst, cap, &o, scalars[t->kind].name);
    if (t->kind == TYPE_DECIMAL) {
        put_name(dst, cap, &o, "(");
        put_uint(dst, cap, &o, t->precision);
        put_name(dst, cap, &o, ", ");
        put_uint(dst, cap, &o, t->scale);
        put_name(dst, cap, &o, ")");
    } else if (t->kind == TYPE_DATETIME64) {
        put_name(dst, cap, &o, "(");
        put_uint(dst, cap, &o, t->precision);
        put_name(dst, cap, &o, ")");
    }
    if (t->nullable)
        put_name(dst, cap, &o, ")");
    if (t->low_cardinality)
        put_name(dst, cap, &o, ")");
    for (unsigned d = 0; d < t->array_depth; d++)
        put_name(dst, cap, &o, ")");
    if (cap)
        dst[o < cap ? o : cap - 1] = 0;
    return o;
}

/* MARK: - Numbers as text */

/* A JSON number, split: [-] int [. frac] [e exp]. The exponent saturates at +-EXP_CAP, far
 * beyond any type's range and any number's count of digits (a line is at most 2 GiB), so
 * that huge exponents cannot overflow the arithmetic, and an exponent less its digits
 * (0.000...1e400) is still exact wherever it matters. */
#define EXP_CAP 1000000000000000L
struct number {
    int neg, has_frac, has_exp;
    const char *ip, *fp;
    size_t il, fl;
    long exp;
};

static int digit(char c) { return c >= '0' && c <= '9'; }

/* Splits p[0..n) by RFC 8259's number grammar; 0, or -1 when it is not a number. */
static inline __attribute__((always_inline)) int scan_number(const char *p, size_t n,
                                                             struct number *x)
{
    size_t i = 0;
    *x = (struct number){0};
    if (i < n && p[i] == '-') {
        x->neg = 1;
        i++;
    }
    x->ip = p + i;
    if (i < n && p[i] == '0') {
        i++;
    } else if (i < n && digit(p[i])) {
        while (i < n && digit(p[i]))
            i++;
    } else {
        return -1;
    }
    x->il = (size_t)(p + i - x->ip);
    if (i < n && p[i] == '.') {
        x->has_frac = 1;
        x->fp = p + ++i;
        while (i < n && digit(p[i]))
            i++;
        x->fl = (size_t)(p + i - x->fp);
        if (!x->fl)
            return -1;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        int eneg = 0;
        x->has_exp = 1;
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            eneg = p[i++] == '-';
        if (i == n || !digit(p[i]))
            return -1;
        long e = 0;
        while (i < n && digit(p[i])) {
            if (e < EXP_CAP)
                e = e * 10 + (p[i] - '0');
            i++;
        }
        if (e > EXP_CAP)
            e = EXP_CAP;
        x->exp = eneg ? -e : e;
    }
    return i == n ? 0 : -1;
}

/* scan_number for the form most numbers are sent in, -?(0|[1-9][0-9]*)(.[0-9]+)? with no
 * exponent, in one pass that sets only neg, ip, il, fp and fl: 1, or 0 for any other text
 * (scan_number then judges it). As strict as scan_number, so a short path taking what it
 * accepts needs nothing of the JSON engine (a DEFAULT literal comes this way too). */
static inline __attribute__((always_inline)) int scan_plain(const char *p, size_t n,
                                                             struct number *x)
{
    size_t i = n && p[0] == '-', s = i;
    while (i < n && digit(p[i]))
        i++;
    size_t il = i - s, fl = 0;
    const char *fp = p + n; /* never read when fl is 0 */
    if (!il || (il > 1 && p[s] == '0'))
        return 0;
    if (i < n) {
        if (p[i] != '.')
            return 0;
        size_t f = ++i;
        while (i < n && digit(p[i]))
            i++;
        if (i != n || i == f)
            return 0;
        fp = p + f;
        fl = n - f;
    }
    x->neg = (int)s;
    x->ip = p + s;
    x->il = il;
    x->fp = fp;
    x->fl = fl;
    return 1;
}

/* The k-th digit of the number's digits (int then frac), '0' outside them. */
static char num_digit(const struct number *x, long k)
{
    if (k < 0)
        return '0';
    if ((size_t)k < x->il)
        return x->ip[k];
    if ((size_t)k - x->il < x->fl)
        return x->fp[k - (long)x->il];
    return '0';
}

/* First and last nonzero digit positions; -1 when the number is zero. Scans from each end,
 * the integer and the fraction as the two runs they are. */
static long num_bounds(const struct number *x, long *last)
{
    long il = (long)x->il, first = -1;
    for (long k = 0; first < 0 && k < il; k++)
        if (x->ip[k] != '0')
            first = k;
    for (size_t k = 0; first < 0 && k < x->fl; k++)
        if (x->fp[k] != '0')
            first = il + (long)k;
    *last = -1;
    if (first < 0)
        return -1;
    for (size_t k = x->fl; *last < 0 && k > 0; k--)
        if (x->fp[k - 1] != '0')
            *last = il + (long)k - 1;
    for (long k = il; *last < 0 && k > 0; k--)
        if (x->ip[k - 1] != '0')
            *last = k - 1;
    return first;
}

/* Copies the digits from..to (positions as num_digit's, inclusive, inside the number) to
 * w: at most one run of the integer and one of the fraction. Returns the new end. */
static char *copy_digits(char *w, const struct number *x, long from, long to)
{
    long il = (long)x->il;
    if (from < il) {
        long end = to < il ? to + 1 : il;
        memcpy(w, x->ip + from, (size_t)(end - from));
        w += end - from;
        from = end;
    }
    if (from <= to) {
        memcpy(w, x->fp + (from - il), (size_t)(to - from + 1));
        w += to - from + 1;
    }
    return w;
}

/* MARK: - Cells */

/* Cells are appended piece by piece; type_cell takes a refused one back by its start. */

static inline int put(struct buf *out, const char *p, size_t n)
{
    if (buf_reserve(out, n))
        return -1;
    out->len = (size_t)(put_bytes(out->p + out->len, p, n) - out->p);
    return 0;
}

static inline int put_c(struct buf *out, char c)
{
    if (buf_reserve(out, 1))
        return -1;
    out->p[out->len++] = c;
    return 0;
}

/* Moves the text right from the back, never over bytes still to be read. */
int type_csv_quote(struct buf *out, size_t start)
{
    size_t quotes = 0;
    for (size_t i = start + 1; i < out->len; i++)
        quotes += out->p[i] == '"';
    if (buf_reserve(out, quotes + 1))
        return -1;
    char *s = out->p + start + 1;
    size_t r = out->len - start - 1, w = r + quotes;
    while (w > r) {
        char c = s[--r];
        s[--w] = c;
        if (c == '"')
            s[--w] = '"';
    }
    out->len += quotes;
    out->p[out->len++] = '"';
    return 0;
}

int type_array_string(struct buf *out, const char *p, size_t n)
{
    if (buf_reserve(out, 2 * n + 2))
        return -1;
    char *w = out->p + out->len;
    *w++ = '\'';
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        switch (c) {
        case '\'':
            *w++ = '\\';
            *w++ = '\'';
            break;
        case '\\':
            *w++ = '\\';
            *w++ = '\\';
            break;
        case '\n':
            *w++ = '\\';
            *w++ = 'n';
            break;
        case '\r':
            *w++ = '\\';
            *w++ = 'r';
            break;
        case '\t':
            *w++ = '\\';
            *w++ = 't';
            break;
        case '\0':
            *w++ = '\\';
            *w++ = '0';
            break;
        default:
            *w++ = c;
            break;
        }
    }
    *w++ = '\'';
    out->len = (size_t)(w - out->p);
    return 0;
}

/* The general path a scalar cell falls back to when its short path does not take the value:
 * out of line, and with its signature kept (GCC's IPA would otherwise split the arguments,
 * and a callee of more than six cannot be a tail call), so that the cell around the short
 * path needs no frame of its own. */
#if defined(__GNUC__) && !defined(__clang__)
#define GENERAL_PATH __attribute__((noinline, noipa))
#else
#define GENERAL_PATH __attribute__((noinline))
#endif

/* MARK: - Dates and times */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static int leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static unsigned month_days(int y, unsigned m)
{
    static const unsigned char dim[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : dim[m];
}

/* Two digits at p, or -1. */
static int two(const char *p)
{
    return digit(p[0]) && digit(p[1]) ? (p[0] - '0') * 10 + (p[1] - '0') : -1;
}

/* An instant in UTC: seconds since the epoch and nanoseconds. */
struct instant {
    int64_t sec;
    uint32_t nsec;
    /* A string already in the written form up to its fraction (YYYY-MM-DD, or YYYY-MM-DD,
     * T or space, hh:mm:ss, then no offset, Z or a zero one): the cell is copied from it,
     * not formatted from sec (most date-times are sent that way); else NULL. */
    const char *canon;
    const char *frac; /* the fraction's digits in canon, frac_len of them */
    size_t frac_len;
    /* Known to lie inside every type's range (years 1971 to 2105), and sec not computed:
     * with canon set, nothing else needs it. */
    int mid;
};

#define D1900 (-25567LL) /* days_from_civil(1900, 1, 1) */
#define D2300 (120530LL) /* days_from_civil(2300, 1, 1) */
#define D2149 (65535LL)  /* days_from_civil(2149, 6, 6): Date is 16 bits of days */
#define D2106 (49673LL)  /* days_from_civil(2106, 1, 1): where ClickHouse 18.16's dates end */

/* type_set_target's: read only by the general date path (the short paths take years to
 * 2105, inside every target's range). */
static enum type_target target = TYPE_TARGET_CURRENT;

void type_set_target(enum type_target t) { target = t; }
enum type_target type_target(void) { return target; }

/* Whether the eight bytes x hold digits where mask has 0xFF bytes (the others are made
 * '0'): every byte checked at once, 0x30..0x39 being high nibble 3 with no carry from +6. */
static inline int digits_at(uint64_t x, uint64_t mask)
{
    x = (x & mask) | (0x3030303030303030ULL & ~mask);
    return ((x & 0xF0F0F0F0F0F0F0F0ULL) |
            (((x + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4)) == 0x3333333333333333ULL;
}

/* Two digits at p known to be digits. */
static inline int two_known(const char *p) { return (p[0] - '0') * 10 + (p[1] - '0'); }

/* parse_when for the form most date-times come in, YYYY-MM-DD hh:mm:ss (or T), checked
 * eight bytes at a time: 1 when p[0..n) is that form (its verdict then in *r), 0 when the
 * general parser must read it. */
static int parse_canonical(const char *p, size_t n, struct instant *at, enum type_result *r)
{
    const unsigned char *u = (const unsigned char *)p;
    if (n != 19 || p[4] != '-' || p[7] != '-' || (p[10] != ' ' && p[10] != 'T') ||
        p[13] != ':' || p[16] != ':' || !digits_at(load64(u), 0x00FFFF00FFFFFFFFULL) ||
        !digits_at(load64(u + 8), 0xFFFF00FFFF00FFFFULL) || !digit(p[17]) || !digit(p[18]))
        return 0;
    int y = two_known(p) * 100 + two_known(p + 2), mo = two_known(p + 5), dd = two_known(p + 8),
        hh = two_known(p + 11), mi = two_known(p + 14), ss = two_known(p + 17);
    if (mo < 1 || mo > 12 || dd < 1 || (unsigned)dd > month_days(y, (unsigned)mo) || hh > 23 ||
        mi > 59 || ss > 59) {
        *r = TYPE_ERR_DATE;
        return 1;
    }
    at->mid = y > 1970 && y < 2106;
    if (!at->mid)
        at->sec = days_from_civil(y, (unsigned)mo, (unsigned)dd) * 86400 + hh * 3600 + mi * 60 + ss;
    at->nsec = 0;
    at->canon = p;
    at->frac = NULL;
    at->frac_len = 0;
    *r = TYPE_OK;
    return 1;
}

/* Eight bytes a..h as load64 reads them: a in the lowest byte. */
#define BYTES8(a, b, c, d, e, f, g, h)                                                       \
    ((uint64_t)(a) | (uint64_t)(b) << 8 | (uint64_t)(c) << 16 | (uint64_t)(d) << 24 |       \
     (uint64_t)(e) << 32 | (uint64_t)(f) << 40 | (uint64_t)(g) << 48 | (uint64_t)(h) << 56)

/* Whether every byte of x lies within the bounds of the same byte of lo and hi (ASCII,
 * lo <= hi): 0x80 set above each byte keeps x - lo from borrowing across bytes, and a byte
 * of x with its high bit set fails on ~x whatever its neighbours' borrows do. */
static inline int bytes_within(uint64_t x, uint64_t lo, uint64_t hi)
{
    return (((x | HIGH) - lo) & ((hi | HIGH) - x) & ~x & HIGH) == HIGH;
}

/* The short paths' dates: whether p[0..10) is YYYY-MM-DD, a real day of a year from 1971 to
 * 2105, which lies inside every date type's range, so that the text is the cell as it is.
 * The digits, the dashes and the tens of the month and the day are checked as two words
 * (bytes 0-7 and 2-9), the year as four bytes in order. */
static inline int canonical_date(const char *p)
{
    static const unsigned char dim[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const unsigned char *u = (const unsigned char *)p;
    uint64_t a = load64(u);
    if (!bytes_within(a, BYTES8('1', '0', '0', '0', '-', '0', '0', '-'),
                      BYTES8('2', '9', '9', '9', '-', '1', '9', '-')) ||
        !bytes_within(load64(u + 2), BYTES8('0', '0', '-', '0', '0', '-', '0', '0'),
                      BYTES8('9', '9', '-', '1', '9', '-', '3', '9')))
        return 0;
    /* p[0] in the high byte: digit strings of one length compare as their numbers do */
    uint32_t year = __builtin_bswap32((uint32_t)a);
    unsigned mo = (unsigned)two_known(p + 5), dd = (unsigned)two_known(p + 8);
    if (year < 0x31393731u /* "1971" */ || year > 0x32313035u /* "2105" */ || mo - 1 > 11 ||
        dd - 1 >= dim[mo])
        return 0;
    return mo != 2 || dd != 29 || leap(two_known(p) * 100 + two_known(p + 2));
}

/* canonical_date, then T or a space and hh:mm:ss at p[10..19), a real time of day (the tens of
 * minutes and seconds bounded in the word, the hour as a number). */
static inline int canonical_datetime(const char *p)
{
    return canonical_date(p) && (p[10] == ' ' || p[10] == 'T') &&
           bytes_within(load64((const unsigned char *)p + 11),
                        BYTES8('0', '0', ':', '0', '0', ':', '0', '0'),
                        BYTES8('2', '9', ':', '5', '9', ':', '5', '9')) &&
           two_known(p + 11) < 24;
}

/* Parses YYYY-MM-DD, and unless date_only, an optional time: (T or space) hh:mm[:ss[.f]]
 * then Z, +hh, +hhmm or +hh:mm (or -). 0, or a type_result. */
static enum type_result parse_when(const char *p, size_t n, int date_only, struct instant *at)
{
    enum type_result r;
    if (!date_only && parse_canonical(p, n, at, &r))
        return r;
    if (n < 10 || !digit(p[0]) || !digit(p[1]) || p[4] != '-' || p[7] != '-')
        return TYPE_ERR_SYNTAX;
    int yh = two(p), yl = two(p + 2), mo = two(p + 5), dd = two(p + 8);
    if (yh < 0 || yl < 0 || mo < 0 || dd < 0)
        return TYPE_ERR_SYNTAX;
    int y = yh * 100 + yl;
    if (mo < 1 || mo > 12 || dd < 1 || (unsigned)dd > month_days(y, (unsigned)mo))
        return TYPE_ERR_DATE;
    int64_t sec = days_from_civil(y, (unsigned)mo, (unsigned)dd) * 86400;
    uint32_t nsec = 0;
    size_t i = 10;
    at->canon = date_only ? p : NULL;
    at->frac = NULL;
    at->frac_len = 0;
    at->mid = 0;
    if (i < n) {
        if (date_only || (p[i] != 'T' && p[i] != ' ') || n - i < 6 || p[i + 3] != ':')
            return TYPE_ERR_SYNTAX;
        int hh = two(p + i + 1), mi = two(p + i + 4), ss = 0;
        if (hh < 0 || mi < 0)
            return TYPE_ERR_SYNTAX;
        i += 6;
        if (i < n && p[i] == ':') {
            if (n - i < 3 || (ss = two(p + i + 1)) < 0)
                return TYPE_ERR_SYNTAX;
            i += 3;
            at->canon = p;
            if (i < n && p[i] == '.') {
                size_t f = ++i;
                uint32_t scale = 100000000;
                while (i < n && digit(p[i])) {
                    nsec += (uint32_t)(p[i] - '0') * scale; /* past 9 digits: truncated */
                    scale /= 10;
                    i++;
                }
                if (i == f)
                    return TYPE_ERR_SYNTAX;
                at->frac = p + f;
                at->frac_len = i - f;
            }
        }
        if (hh > 23 || mi > 59 || ss > 59)
            return TYPE_ERR_DATE;
        sec += hh * 3600 + mi * 60 + ss;
        if (i < n) {
            if (p[i] == 'Z' && i + 1 == n) {
                i++;
            } else if (p[i] == '+' || p[i] == '-') {
                int sign = p[i] == '-' ? -1 : 1, oh, om = 0;
                size_t rest = n - i - 1;
                const char *o = p + i + 1;
                if ((rest != 2 && rest != 4 && rest != 5) || (oh = two(o)) < 0)
                    return TYPE_ERR_SYNTAX;
                if (rest == 4 && (om = two(o + 2)) < 0)
                    return TYPE_ERR_SYNTAX;
                if (rest == 5 && (o[2] != ':' || (om = two(o + 3)) < 0))
                    return TYPE_ERR_SYNTAX;
                if (oh > 23 || om > 59)
                    return TYPE_ERR_DATE;
                if (oh || om)
                    at->canon = NULL;
                sec -= sign * (oh * 3600 + om * 60); /* local = UTC + offset */
                i = n;
            }
        }
        if (i != n)
            return TYPE_ERR_SYNTAX;
    }
    at->sec = sec;
    at->nsec = nsec;
    return TYPE_OK;
}

/* Unix seconds as a JSON number: [-]int[.frac], no exponent. */
static enum type_result parse_unix(const struct number *x, struct instant *at)
{
    if (x->has_exp)
        return TYPE_ERR_SYNTAX;
    if (x->il > 12)
        return TYPE_ERR_RANGE;
    int64_t s = 0;
    for (size_t k = 0; k < x->il; k++)
        s = s * 10 + (x->ip[k] - '0');
    uint32_t ns = 0, scale = 100000000;
    for (size_t k = 0; k < x->fl && k < 9; k++, scale /= 10)
        ns += (uint32_t)(x->fp[k] - '0') * scale;
    if (x->neg) {
        s = -s;
        if (ns) {
            s -= 1;
            ns = 1000000000u - ns;
        }
    }
    at->sec = s;
    at->nsec = ns;
    at->canon = NULL;
    at->mid = 0;
    return TYPE_OK;
}

static char *put2(char *w, unsigned v)
{
    *w++ = (char)('0' + v / 10);
    *w++ = (char)('0' + v % 10);
    return w;
}

/* Writes the instant as ClickHouse's basic text form in UTC at w (at most 29 bytes):
 * YYYY-MM-DD, or YYYY-MM-DD hh:mm:ss, plus digits decimals (truncated, as ClickHouse does).
 * Returns the new end. */
static char *when_text(char *w, const struct instant *at, int date_only, unsigned digits)
{
    int64_t days = at->sec >= 0 ? at->sec / 86400 : -((-at->sec + 86399) / 86400);
    int64_t rem = at->sec - days * 86400;
    int y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    w = put2(w, (unsigned)y / 100);
    w = put2(w, (unsigned)y % 100);
    *w++ = '-';
    w = put2(w, m);
    *w++ = '-';
    w = put2(w, d);
    if (!date_only) {
        *w++ = ' ';
        w = put2(w, (unsigned)(rem / 3600));
        *w++ = ':';
        w = put2(w, (unsigned)(rem / 60 % 60));
        *w++ = ':';
        w = put2(w, (unsigned)(rem % 60));
        if (digits) {
            *w++ = '.';
            uint32_t scale = 100000000;
            for (unsigned k = 0; k < digits; k++, scale /= 10)
                *w++ = (char)('0' + at->nsec / scale % 10);
        }
    }
    return w;
}

/* when_text as a cell, single-quoted inside arrays. */
static int put_when(struct buf *out, const struct instant *at, int date_only, unsigned digits,
                    int quote)
{
    if (buf_reserve(out, 32))
        return -1;
    char *w = out->p + out->len;
    if (quote)
        *w++ = '\'';
    if (at->canon) {
        w = put_bytes(w, at->canon, 10);
        if (!date_only) {
            *w++ = ' ';
            w = put_bytes(w, at->canon + 11, 8);
            if (digits) {
                size_t f = at->frac_len < digits ? at->frac_len : digits;
                *w++ = '.';
                if (f) /* frac is NULL without a fraction */
                    w = put_bytes(w, at->frac, f);
                for (; f < digits; f++)
                    *w++ = '0';
            }
        }
    } else {
        w = when_text(w, at, date_only, digits);
    }
    if (quote)
        *w++ = '\'';
    out->len = (size_t)(w - out->p);
    return 0;
}

void type_datetime_text(int64_t sec, char dst[TYPE_DATETIME_LEN])
{
    const struct instant at = {.sec = sec};
    when_text(dst, &at, 0, 0);
}

/* MARK: - Checking one value */

static const char *const kind_msg[] = {
    [TYPE_INT8... TYPE_UINT256] = "expected an integer",
    [TYPE_FLOAT32... TYPE_DECIMAL] = "expected a number",
    [TYPE_STRING] = "expected a string",
    [TYPE_BOOL] = "expected true or false",
    [TYPE_DATE... TYPE_DATE32] = "expected a date string",
    [TYPE_DATETIME... TYPE_DATETIME64] = "expected a date-time string or Unix seconds",
    [TYPE_UUID] = "expected a UUID string",
};

/* Compares the digit string a[0..la) with b (no leading zeros on either). */
static int cmp_digits(const char *a, size_t la, const char *b)
{
    size_t lb = strlen(b);
    if (la != lb)
        return la < lb ? -1 : 1;
    return memcmp(a, b, la);
}

static enum type_result check_integer(unsigned kind, const struct number *x, struct buf *out,
                                      const char **why)
{
    if (x->has_frac || x->has_exp) {
        *why = "not an integer";
        return TYPE_ERR_SYNTAX;
    }
    const struct scalar *sc = &scalars[kind];
    int zero = x->il == 1 && x->ip[0] == '0';
    /* Every integer type holds two digits either way (but unsigned ones no sign): only
     * longer numbers are compared with the bounds. */
    if (x->neg && !zero &&
        (!sc->min || (x->il > 2 && cmp_digits(x->ip, x->il, sc->min) > 0))) {
        *why = sc->range;
        return TYPE_ERR_RANGE;
    }
    if (!x->neg && x->il > 2 && cmp_digits(x->ip, x->il, sc->max) > 0) {
        *why = sc->range;
        return TYPE_ERR_RANGE;
    }
    if ((x->neg && !zero && put_c(out, '-')) || put(out, x->ip, x->il))
        return TYPE_ERR_NOMEM;
    return TYPE_OK;
}

/* Compares the significant digits first..last of x with the digit string th, as two
 * numbers of the same decimal exponent: <0, 0 or >0. */
static int cmp_significant(const struct number *x, long first, long last, const char *th)
{
    int c = 0;
    for (long k = first; !c && (*th || k <= last); k++) {
        c = (k <= last ? num_digit(x, k) : '0') - (*th ? *th : '0');
        if (*th)
            th++;
    }
    return c;
}

/* A float with an exponent, or with as many integer digits as the largest value: checked
 * against the range, and written in the one form 18.16's reader (not correctly rounding,
 * doc/datasets.md section 7) takes right whatever was sent: [-]d[.ddd][e[-]E], the
 * significant digits as sent, E the first digit's exponent, without leading zeros or '+'.
 * That reader takes four characters of an exponent (1e00001 is 1), scales the mantissa by
 * the exponent as written (0.1e309 is inf, 0e400 is 0 times inf, nan) and drops a fraction
 * whose leading zeros pass 10^-323 (0.000...1e400 is nan): with E the first digit's, none of
 * it happens in range. A zero is 0 or -0 whatever its exponent. The values between the
 * largest finite one and the halfway point above it round to that value, which its own
 * text gives (the reader, going through a double, makes inf of 3.4028235677973366e38). */
static enum type_result float_normalised(unsigned kind, const struct number *x, struct buf *out,
                                        const char **why)
{
    long emax = kind == TYPE_FLOAT32 ? 38 : 308;
    const struct scalar *sc = &scalars[kind];
    long last, first = num_bounds(x, &last);
    if (first < 0)
        return put(out, x->neg ? "-0" : "0", 1 + (size_t)x->neg) ? TYPE_ERR_NOMEM : TYPE_OK;
    long e = (long)x->il - 1 - first + x->exp; /* the decimal exponent of the first digit */
    const char *top = NULL;
    if (e > emax || (e == emax && cmp_significant(x, first, last, sc->max) >= 0)) {
        *why = sc->range;
        return TYPE_ERR_RANGE;
    }
    if (e == emax && cmp_significant(x, first, last, sc->top) > 0)
        top = sc->top_text;
    if (buf_reserve(out, (size_t)(last - first) + 32))
        return TYPE_ERR_NOMEM;
    char *w = out->p + out->len;
    if (x->neg)
        *w++ = '-';
    if (top) {
        w = put_bytes(w, top, strlen(top));
    } else {
        *w++ = num_digit(x, first);
        if (last > first) {
            *w++ = '.';
            w = copy_digits(w, x, first + 1, last);
        }
        if (e) {
            char tmp[24];
            int t = 0;
            unsigned long m = e < 0 ? (unsigned long)-e : (unsigned long)e;
            do
                tmp[t++] = (char)('0' + m % 10);
            while (m /= 10);
            *w++ = 'e';
            if (e < 0)
                *w++ = '-';
            while (t)
                *w++ = tmp[--t];
        }
    }
    out->len = (size_t)(w - out->p);
    return TYPE_OK;
}

static enum type_result check_float(unsigned kind, const struct number *x, const char *p, size_t n,
                                    struct buf *out, const char **why)
{
    /* Without an exponent, fewer integer digits than the largest value has are in range,
     * and 18.16 reads them as sent. */
    if (!x->has_exp && (long)x->il <= (kind == TYPE_FLOAT32 ? 38 : 308))
        return put(out, p, n) ? TYPE_ERR_NOMEM : TYPE_OK;
    return float_normalised(kind, x, out, why);
}

/* A number without an exponent as a Decimal cell: il integer digits (0 when the integer
 * part is 0) and fl fraction digits, less the fraction's trailing zeros. */
static inline void plain_decimal_digits(const struct number *x, size_t *il, size_t *fl)
{
    size_t f = x->fl;
    while (f && x->fp[f - 1] == '0')
        f--;
    *il = x->il == 1 && x->ip[0] == '0' ? 0 : x->il;
    *fl = f;
}

/* Writes those digits at w, which has room for il + fl + 3 bytes; returns the new end. */
static inline char *plain_decimal_text(char *w, const struct number *x, size_t il, size_t fl)
{
    if (x->neg && (il || fl))
        *w++ = '-';
    if (il)
        w = put_short(w, x->ip, il);
    else
        *w++ = '0';
    if (fl) {
        *w++ = '.';
        w = put_short(w, x->fp, fl);
    }
    return w;
}

/* check_decimal for a number without an exponent (as money is sent): its digits are
 * written as they are, less the fraction's trailing zeros. */
static enum type_result check_plain_decimal(const struct type *t, const struct number *x,
                                            struct buf *out, const char **why)
{
    size_t il, fl;
    plain_decimal_digits(x, &il, &fl);
    if (il > (size_t)(t->precision - t->scale)) {
        *why = scalars[TYPE_DECIMAL].range;
        return TYPE_ERR_PRECISION;
    }
    if (fl > t->scale) {
        *why = scale_msg[t->scale];
        return TYPE_ERR_SCALE;
    }
    if (buf_reserve(out, il + fl + 3))
        return TYPE_ERR_NOMEM;
    out->len = (size_t)(plain_decimal_text(out->p + out->len, x, il, fl) - out->p);
    return TYPE_OK;
}

static enum type_result check_decimal(const struct type *t, const struct number *x, struct buf *out,
                                      const char **why)
{
    if (!x->has_exp)
        return check_plain_decimal(t, x, out, why);
    long last, first = num_bounds(x, &last);
    if (first < 0)
        return put_c(out, '0') ? TYPE_ERR_NOMEM : TYPE_OK;
    long point = (long)x->il + x->exp; /* digits before the decimal point */
    long int_digits = point > first ? point - first : 0;
    long frac_digits = last + 1 > point ? last + 1 - point : 0;
    if (int_digits > (long)t->precision - t->scale) {
        *why = scalars[TYPE_DECIMAL].range;
        return TYPE_ERR_PRECISION;
    }
    if (frac_digits > t->scale) {
        *why = scale_msg[t->scale];
        return TYPE_ERR_SCALE;
    }
    if (buf_reserve(out, 160))
        return TYPE_ERR_NOMEM;
    char *w = out->p + out->len;
    if (x->neg)
        *w++ = '-';
    if (!int_digits)
        *w++ = '0';
    for (long k = first; k < point; k++)
        *w++ = num_digit(x, k);
    if (frac_digits) {
        *w++ = '.';
        for (long k = point; k <= last; k++)
            *w++ = num_digit(x, k);
    }
    out->len = (size_t)(w - out->p);
    return TYPE_OK;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static enum type_result check_uuid(const char *p, size_t n, struct buf *out, int quote)
{
    static const char hexdig[] = "0123456789abcdef";
    char hex[32];
    size_t h = 0;
    if (n == 36) {
        for (size_t i = 0; i < 36; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23) {
                if (p[i] != '-')
                    return TYPE_ERR_SYNTAX;
            } else if (hexval(p[i]) < 0) {
                return TYPE_ERR_SYNTAX;
            } else {
                hex[h++] = hexdig[hexval(p[i])];
            }
        }
    } else if (n == 32) {
        for (size_t i = 0; i < 32; i++) {
            if (hexval(p[i]) < 0)
                return TYPE_ERR_SYNTAX;
            hex[h++] = hexdig[hexval(p[i])];
        }
    } else {
        return TYPE_ERR_SYNTAX;
    }
    if (buf_reserve(out, 38))
        return TYPE_ERR_NOMEM;
    char *w = out->p + out->len;
    if (quote)
        *w++ = '\'';
    for (size_t i = 0; i < 32; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20)
            *w++ = '-';
        *w++ = hex[i];
    }
    if (quote)
        *w++ = '\'';
    out->len = (size_t)(w - out->p);
    return TYPE_OK;
}

/* Dates, times and UUIDs are short: an escaped one is unescaped into a small stack copy. */
#define SHORT_TEXT 64

/* A parsed instant's cell, or the message for parse_when's or parse_unix's verdict r. */
static enum type_result put_instant(const struct type *t, enum type_result r,
                                    const struct instant *at, struct buf *out, int in_array,
                                    const char **why)
{
    unsigned k = t->kind;
    int date_only = k == TYPE_DATE || k == TYPE_DATE32;
    if (r == TYPE_ERR_SYNTAX) {
        *why = date_only ? "not a date (YYYY-MM-DD)"
                         : "not a date and time (YYYY-MM-DD hh:mm:ss, ISO 8601)";
        return r;
    }
    if (r == TYPE_ERR_DATE) {
        *why = "not a valid date or time";
        return r;
    }
    if (r != TYPE_OK) {
        *why = scalars[k].range;
        return r;
    }
    int64_t lo, hi; /* seconds, inclusive */
    const char *range = scalars[k].range;
    switch (k) {
    case TYPE_DATE:
        lo = 0, hi = D2149 * 86400;
        if (target == TYPE_TARGET_18_16)
            hi = (D2106 - 1) * 86400, range = "out of range for Date (1970-01-01 to 2105-12-31)";
        break;
    case TYPE_DATETIME:
        lo = 0, hi = 4294967295LL;
        if (target == TYPE_TARGET_18_16)
            hi = D2106 * 86400 - 1,
            range = "out of range for DateTime (1970-01-01 to 2105-12-31 23:59:59)";
        break;
    default:
        lo = D1900 * 86400, hi = D2300 * 86400 - 1;
        break;
    }
    if (!at->mid && (at->sec < lo || at->sec > hi)) {
        *why = range;
        return TYPE_ERR_RANGE;
    }
    if (put_when(out, at, date_only, k == TYPE_DATETIME64 ? t->precision : 0, in_array))
        return TYPE_ERR_NOMEM;
    return TYPE_OK;
}

/* check_when for Unix seconds and for escaped strings, out of the common path's frame. */
static __attribute__((noinline)) enum type_result
check_when_rare(const struct type *t, const struct cell *v, struct buf *out, int in_array,
                const char **why)
{
    unsigned k = t->kind;
    int date_only = k == TYPE_DATE || k == TYPE_DATE32;
    struct instant at;
    enum type_result r;
    char tmp[SHORT_TEXT]; /* an escaped string's text: at.canon may point into it */
    if (v->kind == CELL_RAW) {
        struct number x;
        if (date_only || scan_number(v->p, v->len, &x)) {
            *why = kind_msg[k];
            return TYPE_ERR_KIND;
        }
        r = parse_unix(&x, &at);
    } else {
        if (v->len > SHORT_TEXT)
            return *why = "not a valid date or time", TYPE_ERR_SYNTAX;
        size_t n = json_unescape(v->p, v->len, tmp);
        r = parse_when(tmp, n, date_only, &at);
    }
    return put_instant(t, r, &at, out, in_array, why);
}

static GENERAL_PATH enum type_result
check_when(const struct type *t, const struct cell *v, struct buf *out, int in_array,
           const char **why)
{
    if (v->kind != CELL_STRING)
        return check_when_rare(t, v, out, in_array, why);
    struct instant at;
    int date_only = t->kind == TYPE_DATE || t->kind == TYPE_DATE32;
    enum type_result r = parse_when(v->p, v->len, date_only, &at);
    return put_instant(t, r, &at, out, in_array, why);
}

/* MARK: - Short paths */

/* type_short_cells: the forms most values are sent in, checked in one pass and written
 * straight to the caller's room; anything else, a refusal included, is the general path's
 * (type_scalar_cells), so verdicts and messages have one source. test_types holds both
 * sides of every boundary a short path draws. */

/* Per integer kind, the digits any value may have and be in range: one fewer than the
 * largest value's (the smallest's magnitude has as many); [1] with a minus sign, 0 where
 * the type has no negative values (and -0, written 0, is the general path's). */
static const unsigned char short_integer_digits[TYPE_UINT256 + 1][2] = {
    [TYPE_INT8] = {2, 2},    [TYPE_INT16] = {4, 4},    [TYPE_INT32] = {9, 9},
    [TYPE_INT64] = {18, 18}, [TYPE_INT128] = {38, 38}, [TYPE_INT256] = {76, 76},
    [TYPE_UINT8] = {2, 0},   [TYPE_UINT16] = {4, 0},   [TYPE_UINT32] = {9, 0},
    [TYPE_UINT64] = {19, 0}, [TYPE_UINT128] = {38, 0}, [TYPE_UINT256] = {77, 0},
};

static size_t short_integer(const struct type *t, const struct cell *v, char *w)
{
    struct number x;
    size_t n = v->len;
    if (v->kind != CELL_RAW || n > 16 || !scan_plain(v->p, n, &x) || x.fl ||
        x.il > short_integer_digits[t->kind][x.neg] || (x.neg && x.ip[0] == '0'))
        return 0;
    put_upto16(w, v->p, n);
    return n;
}

/* Without an exponent, 16 digits are far inside either type's range: written as sent. */
static size_t short_float(const struct type *t, const struct cell *v, char *w)
{
    (void)t;
    struct number x;
    size_t n = v->len;
    if (v->kind != CELL_RAW || n > 16 || !scan_plain(v->p, n, &x))
        return 0;
    put_upto16(w, v->p, n);
    return n;
}

static size_t short_decimal(const struct type *t, const struct cell *v, char *w)
{
    struct number x;
    size_t il, fl;
    if (v->kind != CELL_RAW || v->len > 16 || !scan_plain(v->p, v->len, &x))
        return 0;
    plain_decimal_digits(&x, &il, &fl);
    if (il > (size_t)(t->precision - t->scale) || fl > t->scale)
        return 0;
    if (x.neg && !il && !fl) { /* -0, -0.00: plain_decimal_text's 0 */
        *w = '0';
        return 1;
    }
    /* else its text is the number's less the fraction's trailing zeros, and the point when
     * none is left: one copy of a prefix */
    size_t n = fl ? (size_t)(x.fp - v->p) + fl : (size_t)(x.ip - v->p) + x.il;
    put_upto16(w, v->p, n);
    return n;
}

/* A string (or a number, kept as its text) with no quote to double: quoted as it is. */
static size_t short_string(const struct type *t, const struct cell *v, char *w)
{
    (void)t;
    const char *p = v->p;
    size_t n = v->len;
    if ((v->kind != CELL_STRING && v->kind != CELL_RAW) || n > TYPE_SHORT_MAX - 2)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '"')
            return 0;
    w[0] = '"';
    put_short(w + 1, p, n);
    w[n + 1] = '"';
    return n + 2;
}

/* Date and Date32: a canonical_date is its own cell. */
static size_t short_date(const struct type *t, const struct cell *v, char *w)
{
    (void)t;
    if (v->kind != CELL_STRING || v->len != 10 || !canonical_date(v->p))
        return 0;
    put_bytes(w, v->p, 10);
    return 10;
}

/* DateTime and DateTime64: a canonical_datetime with no fraction or .digits after it,
 * written with a space for a T and the fraction cut or padded to the type's digits
 * (DateTime's 0), as put_when writes it. */
static size_t short_datetime(const struct type *t, const struct cell *v, char *w)
{
    const char *p = v->p;
    size_t n = v->len, f = 0; /* the fraction's digits */
    if (v->kind != CELL_STRING || n < TYPE_DATETIME_LEN ||
        (n > TYPE_DATETIME_LEN && (n == TYPE_DATETIME_LEN + 1 || p[TYPE_DATETIME_LEN] != '.')) ||
        !canonical_datetime(p))
        return 0;
    for (size_t i = TYPE_DATETIME_LEN + 1; i < n; i++, f++)
        if (!digit(p[i]))
            return 0;
    unsigned digits = t->kind == TYPE_DATETIME64 ? t->precision : 0;
    char *start = w;
    w = put_bytes(w, p, TYPE_DATETIME_LEN); /* a constant size: inlined */
    w[10 - TYPE_DATETIME_LEN] = ' ';        /* for a T */
    if (digits) {
        *w++ = '.';
        if (f > digits)
            f = digits;
        w = put_upto16(w, p + TYPE_DATETIME_LEN + 1, f);
        for (; f < digits; f++)
            *w++ = '0';
    }
    return (size_t)(w - start);
}

static size_t short_none(const struct type *t, const struct cell *v, char *w)
{
    (void)t, (void)v, (void)w;
    return 0;
}

const type_short_fn type_short_cells[TYPE_UUID + 1] = {
    [TYPE_INT8... TYPE_UINT256] = short_integer,
    [TYPE_FLOAT32... TYPE_FLOAT64] = short_float,
    [TYPE_DECIMAL] = short_decimal,
    [TYPE_STRING] = short_string,
    [TYPE_BOOL] = short_none,
    [TYPE_DATE... TYPE_DATE32] = short_date,
    [TYPE_DATETIME... TYPE_DATETIME64] = short_datetime,
    [TYPE_UUID] = short_none,
};

/* The short path f into out, for the scalar cells below: 1 when it wrote the cell. */
static inline __attribute__((always_inline)) int
short_cell(type_short_fn f, const struct type *t, const struct cell *v, struct buf *out)
{
    size_t n;
    if (buf_reserve(out, TYPE_SHORT_MAX) || !(n = f(t, v, out->p + out->len)))
        return 0;
    out->len += n;
    return 1;
}

/* MARK: - One scalar value */

/* The scalar families' checks (type_scalar_cells): one function per family, found by kind in
 * a table, so that a cell costs one indirect call rather than a chain of tests in one large
 * frame. */

static enum type_result cell_string(const struct type *t, const struct cell *v, struct buf *out,
                                    int in_array, const char **why)
{
    (void)why;
    /* Numbers, booleans, objects and arrays are kept as their JSON text, as ClickHouse's
     * JSON input does for String columns. */
    size_t n = v->len;
    if (!in_array && n <= TYPE_SHORT_MAX - 2 && short_cell(short_string, t, v, out))
        return TYPE_OK;
    if (in_array) {
        if (v->kind != CELL_STRING_ESCAPED)
            return type_array_string(out, v->p, n) ? TYPE_ERR_NOMEM : TYPE_OK;
        /* unescape into scratch past the room the escaped form needs */
        if (buf_reserve(out, 3 * n + 2))
            return TYPE_ERR_NOMEM;
        /* the escaped text (at most 2 ul + 2 bytes) ends before tmp begins */
        char *tmp = out->p + out->len + 2 * n + 2;
        size_t ul = json_unescape(v->p, n, tmp);
        return type_array_string(out, tmp, ul) ? TYPE_ERR_NOMEM : TYPE_OK;
    }
    /* Always quoted: ClickHouse trims blanks around unquoted fields and reads an unquoted
     * \N as NULL, so quoting is what makes the text come back exactly. */
    size_t start = out->len;
    if (buf_reserve(out, n + 2))
        return TYPE_ERR_NOMEM;
    out->p[out->len++] = '"';
    if (v->kind == CELL_STRING_ESCAPED)
        out->len += json_unescape(v->p, n, out->p + out->len);
    else if (n)
        memcpy(out->p + out->len, v->p, n), out->len += n;
    return type_csv_quote(out, start) ? TYPE_ERR_NOMEM : TYPE_OK;
}

static enum type_result cell_uuid(const struct type *t, const struct cell *v, struct buf *out,
                                  int in_array, const char **why)
{
    char tmp[SHORT_TEXT];
    const char *p = v->p;
    size_t n = v->len;
    if (v->kind == CELL_RAW) {
        *why = kind_msg[t->kind];
        return TYPE_ERR_KIND;
    }
    if (v->kind == CELL_STRING_ESCAPED) {
        if (n > SHORT_TEXT)
            n = 0;
        else
            n = json_unescape(p, n, tmp), p = tmp;
    }
    enum type_result r = check_uuid(p, n, out, in_array);
    if (r == TYPE_ERR_SYNTAX)
        *why = "not a UUID (8-4-4-4-12 hex digits)";
    return r;
}

/* Numbers and Bool take only JSON numbers and literals: a quoted "3" is a string, and
 * Tinybird quarantines it too. */
static enum type_result cell_bool(const struct type *t, const struct cell *v, struct buf *out,
                                  int in_array, const char **why)
{
    (void)in_array;
    const char *s = NULL;
    if (v->kind == CELL_RAW) {
        if ((v->len == 4 && memcmp(v->p, "true", 4) == 0) || (v->len == 1 && v->p[0] == '1'))
            s = "true";
        else if ((v->len == 5 && memcmp(v->p, "false", 5) == 0) || (v->len == 1 && v->p[0] == '0'))
            s = "false";
    }
    if (!s) {
        *why = kind_msg[t->kind];
        return TYPE_ERR_KIND;
    }
    return put(out, s, strlen(s)) ? TYPE_ERR_NOMEM : TYPE_OK;
}

/* The number in v, split; 0, or -1 (with *why set) when v is not a JSON number. */
static inline __attribute__((always_inline)) int number_cell(const struct type *t,
                                                              const struct cell *v,
                                                              struct number *x, const char **why)
{
    if (v->kind != CELL_RAW || scan_number(v->p, v->len, x)) {
        *why = kind_msg[t->kind];
        return -1;
    }
    return 0;
}

static GENERAL_PATH enum type_result
integer_cell(const struct type *t, const struct cell *v, struct buf *out, const char **why)
{
    struct number x;
    if (number_cell(t, v, &x, why))
        return TYPE_ERR_KIND;
    return check_integer(t->kind, &x, out, why);
}

static enum type_result cell_integer(const struct type *t, const struct cell *v, struct buf *out,
                                     int in_array, const char **why)
{
    (void)in_array;
    return short_cell(short_integer, t, v, out) ? TYPE_OK : integer_cell(t, v, out, why);
}

static GENERAL_PATH enum type_result
decimal_cell(const struct type *t, const struct cell *v, struct buf *out, const char **why)
{
    struct number x;
    if (number_cell(t, v, &x, why))
        return TYPE_ERR_KIND;
    return check_decimal(t, &x, out, why);
}

static enum type_result cell_decimal(const struct type *t, const struct cell *v, struct buf *out,
                                     int in_array, const char **why)
{
    (void)in_array;
    return short_cell(short_decimal, t, v, out) ? TYPE_OK : decimal_cell(t, v, out, why);
}

static GENERAL_PATH enum type_result
float_cell(const struct type *t, const struct cell *v, struct buf *out, const char **why)
{
    struct number x;
    if (number_cell(t, v, &x, why))
        return TYPE_ERR_KIND;
    return check_float(t->kind, &x, v->p, v->len, out, why);
}

static enum type_result cell_float(const struct type *t, const struct cell *v, struct buf *out,
                                   int in_array, const char **why)
{
    (void)in_array;
    return short_cell(short_float, t, v, out) ? TYPE_OK : float_cell(t, v, out, why);
}

/* Dates in arrays are single-quoted: the general path writes those. */
static enum type_result cell_date(const struct type *t, const struct cell *v, struct buf *out,
                                  int in_array, const char **why)
{
    if (!in_array && short_cell(short_date, t, v, out))
        return TYPE_OK;
    return check_when(t, v, out, in_array, why);
}

static enum type_result cell_datetime(const struct type *t, const struct cell *v,
                                      struct buf *out, int in_array, const char **why)
{
    if (!in_array && short_cell(short_datetime, t, v, out))
        return TYPE_OK;
    return check_when(t, v, out, in_array, why);
}

const type_scalar_fn type_scalar_cells[TYPE_UUID + 1] = {
    [TYPE_INT8... TYPE_UINT256] = cell_integer,
    [TYPE_FLOAT32... TYPE_FLOAT64] = cell_float,
    [TYPE_DECIMAL] = cell_decimal,
    [TYPE_STRING] = cell_string,
    [TYPE_BOOL] = cell_bool,
    [TYPE_DATE... TYPE_DATE32] = cell_date,
    [TYPE_DATETIME... TYPE_DATETIME64] = cell_datetime,
    [TYPE_UUID] = cell_uuid,
};

static enum type_result check_scalar(const struct type *t, const struct cell *v, struct buf *out,
                                     int in_array, const char **why)
{
    return type_scalar_cells[t->kind](t, v, out, in_array, why);
}

/* MARK: - Arrays */

static int blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The end of the JSON value at p[i..n) (valid JSON, as json_line guarantees; bounds are
 * checked all the same), or n + 1 when it is cut short. Strings set *kind. */
static size_t value_end(const char *p, size_t i, size_t n, uint32_t *kind)
{
    *kind = CELL_RAW;
    if (p[i] == '"') {
        *kind = CELL_STRING;
        for (i++; i < n; i++) {
            if (p[i] == '\\') {
                *kind = CELL_STRING_ESCAPED;
                i++;
            } else if (p[i] == '"') {
                return i + 1;
            }
        }
        return n + 1;
    }
    if (p[i] == '[' || p[i] == '{') {
        size_t depth = 0;
        for (; i < n; i++) {
            char c = p[i];
            if (c == '"') {
                uint32_t k;
                i = value_end(p, i, n, &k) - 1;
            } else if (c == '[' || c == '{') {
                depth++;
            } else if ((c == ']' || c == '}') && --depth == 0) {
                return i + 1;
            }
        }
        return n + 1;
    }
    while (i < n && p[i] != ',' && p[i] != ']' && p[i] != '}' && !blank(p[i]))
        i++;
    return i;
}

/* The path steps an Array level's elements are followed by: each[0..neach) are what comes
 * after the [:] that gathered the level. */
struct each {
    const struct json_step *steps;
    size_t n;
};

static enum type_result check_value(const struct type *t, unsigned depth, const struct cell *v,
                                    struct each each, struct buf *out, int in_array,
                                    const char **why);

/* An array's text p[0..n) at nesting depth: its elements through check_value, each first
 * followed by the steps up to the next [:] (one Array level per [:]), the rest of the steps
 * going with it to the next level. */
static enum type_result check_array(const struct type *t, unsigned depth, const char *p, size_t n,
                                    struct each each, struct buf *out, const char **why)
{
    size_t seg = 0;
    while (seg < each.n && each.steps[seg].kind != JSON_STEP_EVERY)
        seg++;
    struct each next = {NULL, 0};
    if (seg < each.n)
        next = (struct each){each.steps + seg + 1, each.n - seg - 1};
    size_t i = 0;
    while (i < n && blank(p[i]))
        i++;
    if (i == n || p[i] != '[') {
        *why = "expected an array";
        return TYPE_ERR_KIND;
    }
    if (put_c(out, '['))
        return TYPE_ERR_NOMEM;
    i++;
    for (int first = 1;; first = 0) {
        while (i < n && blank(p[i]))
            i++;
        if (i < n && p[i] == ']' && first)
            break;
        if (i >= n) {
            *why = "not a valid array";
            return TYPE_ERR_SYNTAX;
        }
        struct cell e;
        size_t end = value_end(p, i, n, &e.kind);
        if (end > n) {
            *why = "not a valid array";
            return TYPE_ERR_SYNTAX;
        }
        if (seg) {
            json_follow(p + i, end - i, each.steps, seg, &e);
        } else if (e.kind == CELL_RAW && end - i == 4 && memcmp(p + i, "null", 4) == 0) {
            e.p = NULL, e.len = 0, e.kind = CELL_EMPTY;
        } else if (e.kind == CELL_RAW) {
            e.p = p + i, e.len = (uint32_t)(end - i);
        } else { /* a string: the bytes between its quotes */
            e.p = p + i + 1, e.len = (uint32_t)(end - i - 2);
        }
        if (!first && put_c(out, ','))
            return TYPE_ERR_NOMEM;
        enum type_result r = check_value(t, depth + 1, &e, next, out, 1, why);
        if (r != TYPE_OK)
            return r;
        i = end;
        while (i < n && blank(p[i]))
            i++;
        if (i < n && p[i] == ',') {
            i++;
            continue;
        }
        if (i < n && p[i] == ']')
            break;
        *why = "not a valid array";
        return TYPE_ERR_SYNTAX;
    }
    return put_c(out, ']') ? TYPE_ERR_NOMEM : TYPE_OK;
}

/* The value v at array nesting depth (0 = the column itself). */
static enum type_result check_value(const struct type *t, unsigned depth, const struct cell *v,
                                    struct each each, struct buf *out, int in_array,
                                    const char **why)
{
    if (depth < t->array_depth) {
        if (v->kind == CELL_EMPTY) { /* arrays are never Nullable in ClickHouse */
            *why = "null where an array is expected";
            return TYPE_ERR_NULL;
        }
        if (v->kind != CELL_RAW) {
            *why = "expected an array";
            return TYPE_ERR_KIND;
        }
        return check_array(t, depth, v->p, v->len, each, out, why);
    }
    if (v->kind == CELL_EMPTY) {
        if (!t->nullable) {
            *why = "null for a non-Nullable column";
            return TYPE_ERR_NULL;
        }
        return (in_array ? put(out, "NULL", 4) : put(out, "\\N", 2)) ? TYPE_ERR_NOMEM : TYPE_OK;
    }
    return check_scalar(t, v, out, in_array, why);
}

enum type_result type_cell_each(const struct type *t, const struct cell *v,
                                const struct json_step *each, size_t neach, struct buf *out,
                                const char **why)
{
    const struct each steps = {each, neach};
    size_t start = out->len;
    enum type_result r;
    if (!t->array_depth && v->kind != CELL_EMPTY)
        return type_scalar_cell(t, v, out, why);
    /* A missing or null array is the empty one: ClickHouse's default for an Array, which
     * can never be Nullable (so a producer has no other way to leave it out). */
    if (t->array_depth && v->kind == CELL_EMPTY)
        return put(out, "\"[]\"", 4) ? (*why = "out of memory", TYPE_ERR_NOMEM) : TYPE_OK;
    if (t->array_depth && v->kind != CELL_EMPTY) {
        /* The array's text, CSV-quoted as one cell: it holds commas, and quotes in its
         * strings are doubled. */
        if (put_c(out, '"'))
            return TYPE_ERR_NOMEM;
        r = check_value(t, 0, v, steps, out, 0, why);
        if (r == TYPE_OK && type_csv_quote(out, start))
            r = TYPE_ERR_NOMEM;
    } else {
        r = check_value(t, 0, v, steps, out, 0, why);
    }
    if (r == TYPE_ERR_NOMEM)
        *why = "out of memory";
    if (r != TYPE_OK)
        out->len = start;
    return r;
}

enum type_result type_cell(const struct type *t, const struct cell *v, struct buf *out,
                           const char **why)
{
    return type_cell_each(t, v, NULL, 0, out, why);
}
