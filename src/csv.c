/* csv.c -- CSV encoding of rows and the header: RFC 4180, minimal quoting as Python's
 * csv.writer does it. */
#include "csv.h"

#include <string.h>

#include "simd.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

static const unsigned char needs_quote[256] = {[','] = 1, ['"'] = 1, ['\r'] = 1, ['\n'] = 1};

/* First bytes of raw cells that are a number, true or false (never quoted). */
static const unsigned char plain_raw[256] = {['-'] = 1, ['0' ... '9'] = 1, ['t'] = 1, ['f'] = 1};

/* Whether s[0..n) holds a byte that forces quoting. */
static inline int must_quote(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
#ifdef __SSE2__
    /* SSE2 is part of x86-64: 16 bytes per step, the last step overlapping the one before
     * (cells are mostly short, and this runs on every string cell). */
    if (n >= 16) {
        const __m128i comma = _mm_set1_epi8(','), quote = _mm_set1_epi8('"'),
                      cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
        for (;;) {
            if (n - i < 16)
                i = n - 16;
            __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
            __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, comma), _mm_cmpeq_epi8(v, quote)),
                                     _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));
            if (_mm_movemask_epi8(m))
                return 1;
            if ((i += 16) >= n)
                return 0;
        }
    }
#endif
    for (; n - i >= 8; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        if (has_byte(x, ',') | has_byte(x, '"') | has_byte(x, '\r') | has_byte(x, '\n'))
            return 1;
    }
    for (; i < n; i++)
        if (needs_quote[p[i]])
            return 1;
    return 0;
}

/* Writes s[0..n) at w quoted, its quotes doubled; w has room for 2n + 2. Returns the new
 * end. Out of line: rare in practice, and it keeps the common path below small. */
static __attribute__((noinline)) char *put_quoted(char *w, const char *s, size_t n)
{
    *w++ = '"';
    for (;;) {
        const char *q = memchr(s, '"', n);
        size_t run = q ? (size_t)(q - s) + 1 : n;
        memcpy(w, s, run);
        w += run;
        if (!q)
            break;
        *w++ = '"'; /* the quote just copied, doubled */
        s += run;
        n -= run;
    }
    *w++ = '"';
    return w;
}

/* Writes s[0..n) at w, quoted when needed; w has room for 2n + 2. Returns the new end.
 * Inline, since it runs for every string cell and is mostly a check and a short copy. */
static inline __attribute__((always_inline)) char *put_field(char *w, const char *s, size_t n)
{
    if (LIKELY(!must_quote(s, n)))
        return put_short(w, s, n);
    return put_quoted(w, s, n);
}

int csv_row(struct buf *out, const struct cell *cells, size_t count, int crlf)
{
    /* One reservation per row: each field at most 2 len + 2 bytes, and an escaped one
     * also needs len bytes of scratch past that for its unescaped text (reserved for
     * every cell: cheaper than telling the kinds apart, and only a bound). */
    size_t need = count + 4;
    for (size_t i = 0; i < count; i++)
        need += (size_t)cells[i].len * 3 + 2; /* a branch-free bound for every kind */
    if (buf_reserve(out, need))
        return -1;
    char *w = out->p + out->len;

    if (count == 1 && (cells[0].kind == CELL_EMPTY || cells[0].len == 0)) {
        *w++ = '"'; /* a lone empty field would be an empty line */
        *w++ = '"';
    } else {
        for (size_t i = 0; i < count; i++) {
            const struct cell *c = &cells[i];
            if (i)
                *w++ = ',';
            switch (c->kind) {
            case CELL_EMPTY:
                break;
            case CELL_RAW:
                /* A number, true or false (the cell kinds' contract in json.h): never
                 * quoted. Objects and arrays go through the full check. */
                if (c->len && plain_raw[(unsigned char)c->p[0]])
                    w = put_short(w, c->p, c->len);
                else
                    w = put_field(w, c->p, c->len);
                break;
            case CELL_STRING_ESCAPED: {
                char *tmp = w + 2 * (size_t)c->len + 2;
                size_t ulen = json_unescape(c->p, c->len, tmp);
                w = put_field(w, tmp, ulen);
                break;
            }
            default:
                w = put_field(w, c->p, c->len);
                break;
            }
        }
    }
    if (crlf)
        *w++ = '\r';
    *w++ = '\n';
    out->len = (size_t)(w - out->p);
    return 0;
}

int csv_header(struct buf *out, const struct json_columns *c, int crlf)
{
    size_t need = c->count + 4;
    for (size_t i = 0; i < c->count; i++)
        need += 2 * (size_t)c->lens[i] + 2;
    if (buf_reserve(out, need))
        return -1;
    char *w = out->p + out->len;
    if (c->count == 1 && c->lens[0] == 0) {
        *w++ = '"';
        *w++ = '"';
    }
    for (size_t i = 0; i < c->count; i++) {
        if (i)
            *w++ = ',';
        w = put_field(w, c->names[i], c->lens[i]);
    }
    if (crlf)
        *w++ = '\r';
    *w++ = '\n';
    out->len = (size_t)(w - out->p);
    return 0;
}
