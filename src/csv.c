/* csv.c -- CSV encoding of rows and the header: RFC 4180, minimal quoting as Python's
 * csv.writer does it. */
#include "csv.h"

#include <string.h>

#define ONES 0x0101010101010101ULL
#define HIGH 0x8080808080808080ULL

static const unsigned char needs_quote[256] = {[','] = 1, ['"'] = 1, ['\r'] = 1, ['\n'] = 1};

static inline uint64_t has_byte(uint64_t x, unsigned char c)
{
    uint64_t v = x ^ (ONES * c);
    return (v - ONES) & ~v & HIGH;
}

/* Whether s[0..n) holds a byte that forces quoting. */
static inline int must_quote(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
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

/* Writes s[0..n) at w, quoted when needed; w has room for 2n + 2. Returns the new end. */
static char *put_field(char *w, const char *s, size_t n)
{
    if (!must_quote(s, n)) {
        memcpy(w, s, n);
        return w + n;
    }
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

int csv_row(struct buf *out, const struct cell *cells, size_t count, int crlf)
{
    /* One reservation per row: each field at most 2 len + 2 bytes, and an escaped one
     * also needs len bytes of scratch past that for its unescaped text. */
    size_t need = count + 4;
    for (size_t i = 0; i < count; i++)
        need += (size_t)cells[i].len * (cells[i].kind == CELL_STRING_ESCAPED ? 3 : 2) + 2;
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
