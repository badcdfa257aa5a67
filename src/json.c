/* json.c -- the JSON engine: strict one-pass validation of an NDJSON line and extraction of
 * the selected top-level columns (scalar path). */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

typedef unsigned char u8;

/* ---- character classes ------------------------------------------------------------- */

static const u8 ws_tab[256] = {[' '] = 1, ['\t'] = 1, ['\r'] = 1, ['\n'] = 1};

/* Bytes that stop the plain-character run inside a string. */
static const u8 str_stop[256] = {
    [0x00 ... 0x1F] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xFF] = 1,
};

/* The one-letter escapes (besides \u). */
static const u8 esc_ok[256] = {
    ['"'] = 1, ['\\'] = 1, ['/'] = 1, ['b'] = 1, ['f'] = 1, ['n'] = 1, ['r'] = 1, ['t'] = 1,
};

/* Hex digit value + 1; 0 means not a hex digit. */
static const u8 hex_tab[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,
    ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14,
    ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15,
    ['F'] = 16,
};

static inline int is_digit(u8 c) { return (unsigned)(c - '0') < 10; }

static inline size_t skip_ws(const u8 *p, size_t i, size_t n)
{
    while (i < n && ws_tab[p[i]])
        i++;
    return i;
}

/* ---- strings ----------------------------------------------------------------------- */

/* High bit set in each byte that is '"', '\\', < 0x20 or >= 0x80. Borrows can flag bytes
 * above a true hit, never below one, so the lowest flag is always exact. */
static inline uint64_t str_special8(uint64_t x)
{
    uint64_t q = x ^ (ONES * '"'), b = x ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((x - ONES * 0x20) & ~x) | x) & HIGH;
}

/* p[i] >= 0x80 starts a UTF-8 sequence: returns the index after it, or 0 when it is not
 * well-formed (Unicode Table 3-7: no overlongs, surrogates, > U+10FFFF or truncation). */
static size_t utf8_seq(const u8 *p, size_t i, size_t n)
{
    u8 c = p[i];
    if (c < 0xC2) /* stray continuation, or overlong C0/C1 */
        return 0;
    if (c < 0xE0) {
        if (n - i < 2 || (p[i + 1] & 0xC0) != 0x80)
            return 0;
        return i + 2;
    }
    if (c < 0xF0) {
        if (n - i < 3)
            return 0;
        u8 lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        if (p[i + 1] < lo || p[i + 1] > hi || (p[i + 2] & 0xC0) != 0x80)
            return 0;
        return i + 3;
    }
    if (c < 0xF5) {
        if (n - i < 4)
            return 0;
        u8 lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        if (p[i + 1] < lo || p[i + 1] > hi || (p[i + 2] & 0xC0) != 0x80 ||
            (p[i + 3] & 0xC0) != 0x80)
            return 0;
        return i + 4;
    }
    return 0;
}

/* Four hex digits at p[i..i+4) as a code unit, or -1. */
static inline long hex4(const u8 *p, size_t i, size_t n)
{
    if (n - i < 4)
        return -1;
    unsigned a = hex_tab[p[i]], b = hex_tab[p[i + 1]], c = hex_tab[p[i + 2]],
             d = hex_tab[p[i + 3]];
    if (!a || !b || !c || !d)
        return -1;
    return (long)((a - 1) << 12 | (b - 1) << 8 | (c - 1) << 4 | (d - 1));
}

/* p[i] is '\\' (i < n): validates one escape, a surrogate pair counting as one; returns
 * the index after it, or 0. */
static size_t escape_seq(const u8 *p, size_t i, size_t n)
{
    if (n - i < 2)
        return 0;
    if (p[i + 1] != 'u')
        return esc_ok[p[i + 1]] ? i + 2 : 0;
    long u = hex4(p, i + 2, n);
    if (u < 0)
        return 0;
    if (u < 0xD800 || u > 0xDFFF)
        return i + 6;
    if (u >= 0xDC00) /* a low surrogate with no high one before it */
        return 0;
    if (n - i < 12 || p[i + 6] != '\\' || p[i + 7] != 'u')
        return 0;
    long l = hex4(p, i + 8, n);
    if (l < 0xDC00 || l > 0xDFFF)
        return 0;
    return i + 12;
}

/* i is just after an opening quote: returns the index just after the closing quote, or 0
 * when the string is invalid or unterminated. *esc is set when a backslash was seen.
 * Plain ASCII is skipped 8 bytes at a time; the SIMD stage will replace this loop. */
static inline size_t scan_string(const u8 *p, size_t i, size_t n, int *esc)
{
    for (;;) {
        if (LIKELY(n - i >= 8)) {
            uint64_t m = str_special8(load64(p + i));
            if (!m) {
                i += 8;
                continue;
            }
            i += (size_t)__builtin_ctzll(m) >> 3;
        } else {
            while (i < n && !str_stop[p[i]])
                i++;
            if (i >= n)
                return 0;
        }
        u8 c = p[i];
        if (LIKELY(c == '"'))
            return i + 1;
        if (c == '\\') {
            *esc = 1;
            i = escape_seq(p, i, n);
        } else if (c >= 0x80) {
            i = utf8_seq(p, i, n);
        } else {
            return 0; /* control character */
        }
        if (UNLIKELY(!i))
            return 0;
    }
}

/* ---- numbers and literals ---------------------------------------------------------- */

/* p[i] is '-' or a digit: returns the index after the number, or 0. The byte after is
 * judged by the caller (a digit after a leading 0 fails there). */
static inline size_t scan_number(const u8 *p, size_t i, size_t n)
{
    if (p[i] == '-' && ++i >= n)
        return 0;
    if (p[i] == '0') {
        i++;
    } else if (is_digit(p[i])) {
        i++;
        while (i < n && is_digit(p[i]))
            i++;
    } else {
        return 0;
    }
    if (i < n && p[i] == '.') {
        if (++i >= n || !is_digit(p[i]))
            return 0;
        while (++i < n && is_digit(p[i]))
            ;
    }
    if (i < n && (p[i] | 0x20) == 'e') {
        if (++i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        if (i >= n || !is_digit(p[i]))
            return 0;
        while (++i < n && is_digit(p[i]))
            ;
    }
    return i;
}

static inline int match4(const u8 *p, const char *lit)
{
    uint32_t a, b;
    memcpy(&a, p, 4);
    memcpy(&b, lit, 4);
    return a == b;
}

/* true / false / null at p[i]: returns the index after it, or 0. */
static inline size_t scan_literal(const u8 *p, size_t i, size_t n)
{
    if (n - i < 4)
        return 0;
    switch (p[i]) {
    case 't':
        return match4(p + i, "true") ? i + 4 : 0;
    case 'n':
        return match4(p + i, "null") ? i + 4 : 0;
    default: /* 'f' */
        return n - i >= 5 && match4(p + i + 1, "alse") ? i + 5 : 0;
    }
}

/* ---- nested containers ------------------------------------------------------------- */

/* p[i] is '{' or '[' of a value at depth 2 (inside the top-level object): returns the
 * index after its matching close, or 0. Iterative, with one bit per depth (1 = object),
 * so hostile nesting costs 128 bytes of stack, not a frame per level. */
static size_t skip_container(const u8 *p, size_t i, size_t n)
{
    uint64_t stack[JSON_MAX_DEPTH / 64] = {0}; /* only nested values get here: cheap */
    unsigned d = 1; /* the top-level object */
    int esc;
    u8 c = p[i];
    uint64_t bit;

open: /* p[i] is c, '{' or '[' */
    if (d == JSON_MAX_DEPTH)
        return 0;
    d++;
    bit = 1ULL << ((d - 1) & 63);
    i = skip_ws(p, i + 1, n);
    if (i >= n)
        return 0;
    if (c == '{') {
        stack[(d - 1) >> 6] |= bit;
        if (p[i] == '}')
            goto close;
        goto key;
    }
    stack[(d - 1) >> 6] &= ~bit;
    if (p[i] == ']')
        goto close;
    goto value;

key: /* i < n */
    if (p[i] != '"' || !(i = scan_string(p, i + 1, n, &esc)))
        return 0;
    i = skip_ws(p, i, n);
    if (i >= n || p[i] != ':')
        return 0;
    i = skip_ws(p, i + 1, n);
    if (i >= n)
        return 0;

value: /* i < n */
    c = p[i];
    switch (c) {
    case '{':
    case '[':
        goto open;
    case '"':
        i = scan_string(p, i + 1, n, &esc);
        break;
    case '-':
    case '0' ... '9':
        i = scan_number(p, i, n);
        break;
    case 't':
    case 'f':
    case 'n':
        i = scan_literal(p, i, n);
        break;
    default:
        return 0;
    }
    if (!i)
        return 0;

after:
    i = skip_ws(p, i, n);
    if (i >= n)
        return 0;
    {
        int obj = (stack[(d - 1) >> 6] >> ((d - 1) & 63)) & 1;
        if (p[i] == ',') {
            i = skip_ws(p, i + 1, n);
            if (i >= n)
                return 0;
            if (obj)
                goto key;
            goto value;
        }
        if (p[i] != (obj ? '}' : ']'))
            return 0;
    }

close: /* p[i] closes depth d */
    i++;
    if (--d == 1)
        return i;
    goto after;
}

/* ---- columns ----------------------------------------------------------------------- */

/* A name's first min(len, 8) bytes, zero-padded: with the length it tells most names apart,
 * so a lookup hashes it and compares one word before anything else. */
static inline uint64_t name_prefix(const u8 *k, size_t len)
{
    uint64_t x = 0;
    if (len >= 8)
        return load64(k);
    for (size_t i = 0; i < len; i++)
        x |= (uint64_t)k[i] << (8 * i);
    return x;
}

static inline unsigned name_hash(uint64_t prefix, size_t len)
{
    return (unsigned)(((prefix ^ len) * 0x9E3779B97F4A7C15ULL) >> (64 - JSON_HASH_BITS));
}

int json_columns_init(struct json_columns *c, const char *const *names, size_t count,
                      char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (count == 0) {
        snprintf(err, errlen, "no columns");
        return -1;
    }
    if (count > JSON_MAX_COLUMNS) {
        snprintf(err, errlen, "too many columns (%zu; at most %d)", count, JSON_MAX_COLUMNS);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        size_t len = strlen(names[i]);
        if (len == 0) {
            snprintf(err, errlen, "column %zu: empty name", i + 1);
            goto fail;
        }
        if (len > JSON_MAX_NAME) {
            snprintf(err, errlen, "column %zu: name longer than %d bytes", i + 1,
                     JSON_MAX_NAME);
            goto fail;
        }
        for (size_t j = 0; j < i; j++) {
            if (c->lens[j] == len && memcmp(c->names[j], names[i], len) == 0) {
                snprintf(err, errlen, "duplicate column \"%.*s\"",
                         (int)(len > 64 ? 64 : len), names[i]);
                goto fail;
            }
        }
        if (!(c->names[i] = malloc(len + 1))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        memcpy(c->names[i], names[i], len + 1);
        c->lens[i] = (uint32_t)len;
        c->count = i + 1;
        c->bylen[len] = c->bylen[len] ? JSON_BYLEN_MANY : (uint16_t)(i + 1);
        c->prefix[i] = name_prefix((const u8 *)names[i], len);
        if (len > 8)
            c->suffix[i] = load64((const u8 *)names[i] + len - 8);
        unsigned h = name_hash(c->prefix[i], len);
        c->next[i] = c->head[h];
        c->head[h] = (uint16_t)(i + 1);
    }
    return 0;
fail:
    json_columns_free(c);
    return -1;
}

void json_columns_free(struct json_columns *c)
{
    for (size_t i = 0; i < c->count; i++)
        free(c->names[i]);
    memset(c, 0, sizeof *c);
}

/* Whether a[0..len) == b[0..len), len >= 1: names are short, so overlapping word loads beat
 * a memcmp call. Reads only inside both spans. */
static inline __attribute__((always_inline)) int key_eq(const u8 *a, const u8 *b, size_t len)
{
    if (len >= 8) {
        size_t i = 0;
        for (; len - i > 8; i += 8)
            if (load64(a + i) != load64(b + i))
                return 0;
        return load64(a + len - 8) == load64(b + len - 8);
    }
    if (len >= 4) {
        uint32_t x, y, z, w;
        memcpy(&x, a, 4);
        memcpy(&y, b, 4);
        memcpy(&z, a + len - 4, 4);
        memcpy(&w, b + len - 4, 4);
        return x == y && z == w;
    }
    for (size_t i = 0; i < len; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/* Whether the key k[0..len) (raw, no escapes), whose prefix word is pre, is column j's
 * name. Names of up to 16 bytes are told apart by their first and last words alone (which
 * overlap for 9 to 15), so the common names need no byte comparison. */
static inline __attribute__((always_inline)) int name_is(const struct json_columns *c,
                                                         unsigned j, const u8 *k, size_t len,
                                                         uint64_t pre)
{
    return c->lens[j] == len && c->prefix[j] == pre &&
           (len <= 8 || (load64(k + len - 8) == c->suffix[j] &&
                         (len <= 16 || key_eq((const u8 *)c->names[j] + 8, k + 8, len - 16))));
}

/* Column index of the key k[0..len), or -1; by = c->bylen[len], not 0. Usually one name has
 * the key's length, and one word comparison rejects the key or starts accepting it. */
static inline __attribute__((always_inline)) int lookup_pre(const struct json_columns *c,
                                                            const u8 *k, size_t len,
                                                            uint64_t pre, unsigned by)
{
    if (LIKELY(by != JSON_BYLEN_MANY))
        return name_is(c, by - 1, k, len, pre) ? (int)by - 1 : -1;
    for (unsigned j = c->head[name_hash(pre, len)]; j; j = c->next[j - 1])
        if (name_is(c, j - 1, k, len, pre))
            return (int)j - 1;
    return -1;
}

static inline int lookup_plain(const struct json_columns *c, const u8 *k, size_t len)
{
    unsigned by;
    if (len > JSON_MAX_NAME || !(by = c->bylen[len]))
        return -1;
    return lookup_pre(c, k, len, name_prefix(k, len), by);
}

/* A key holding escapes: compared after unescaping. An escape turns at most 6 bytes into
 * 1, so a longer raw key cannot match any name. */
static __attribute__((noinline)) int lookup_escaped(const struct json_columns *c,
                                                    const u8 *k, size_t len)
{
    char tmp[JSON_MAX_NAME * 6];
    if (len > sizeof tmp)
        return -1;
    size_t ulen = json_unescape((const char *)k, len, tmp);
    return ulen ? lookup_plain(c, (const u8 *)tmp, ulen) : -1;
}

/* Empties every cell: a few 16-byte stores for the usual handful of columns, rather than a
 * memset call per line. */
static inline __attribute__((always_inline)) void clear_cells(struct cell *cells, size_t count)
{
    if (count > 8) {
        memset(cells, 0, count * sizeof *cells);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        cells[i].p = NULL;
        cells[i].len = 0;
        cells[i].kind = CELL_EMPTY;
    }
}

/* ---- the line ---------------------------------------------------------------------- */

/* The strict walk: every line gets its verdict here unless the fast path accepted it (kept
 * out of line so that json_line stays a lean dispatcher). */
static __attribute__((noinline)) enum line_verdict
json_line_strict(const struct json_columns *c, const char *line, size_t n, struct cell *cells)
{
    const u8 *p = (const u8 *)line;
    size_t i = skip_ws(p, 0, n);
    if (i == n)
        return LINE_BLANK;
    if (p[i] != '{' || n > UINT32_MAX) /* a cell's length is 32 bits */
        return LINE_INVALID;
    memset(cells, 0, c->count * sizeof *cells);
    i = skip_ws(p, i + 1, n);
    if (i >= n)
        return LINE_INVALID;
    if (p[i] == '}') {
        i++;
        goto tail;
    }
    for (;;) {
        if (p[i] != '"')
            return LINE_INVALID;
        size_t ks = i + 1;
        int kesc = 0, vesc = 0;
        if (!(i = scan_string(p, ks, n, &kesc)))
            return LINE_INVALID;
        size_t kl = i - 1 - ks;
        if (UNLIKELY(i >= n || p[i] != ':')) {
            i = skip_ws(p, i, n);
            if (i >= n || p[i] != ':')
                return LINE_INVALID;
        }
        i = skip_ws(p, i + 1, n);
        if (i >= n)
            return LINE_INVALID;

        size_t vs = i;
        uint32_t kind = CELL_RAW;
        switch (p[i]) {
        case '"':
            i = scan_string(p, i + 1, n, &vesc);
            kind = vesc ? CELL_STRING_ESCAPED : CELL_STRING;
            break;
        case '-':
        case '0' ... '9':
            i = scan_number(p, i, n);
            break;
        case 't':
        case 'f':
            i = scan_literal(p, i, n);
            break;
        case 'n':
            i = scan_literal(p, i, n);
            kind = CELL_EMPTY;
            break;
        case '{':
        case '[':
            i = skip_container(p, i, n);
            break;
        default:
            return LINE_INVALID;
        }
        if (!i)
            return LINE_INVALID;

        int col = kesc ? lookup_escaped(c, p + ks, kl) : lookup_plain(c, p + ks, kl);
        if (col >= 0) {
            struct cell *cl = &cells[col];
            if (kind == CELL_EMPTY) {
                cl->p = NULL;
                cl->len = 0;
            } else if (kind == CELL_RAW) {
                cl->p = (const char *)p + vs;
                cl->len = (uint32_t)(i - vs);
            } else { /* between the quotes */
                cl->p = (const char *)p + vs + 1;
                cl->len = (uint32_t)(i - vs - 2);
            }
            cl->kind = kind;
        }

        if (UNLIKELY(i >= n || (p[i] != ',' && p[i] != '}'))) {
            i = skip_ws(p, i, n);
            if (i >= n)
                return LINE_INVALID;
        }
        if (p[i] == ',') {
            i = skip_ws(p, i + 1, n);
            if (i >= n)
                return LINE_INVALID;
            continue;
        }
        if (p[i] != '}')
            return LINE_INVALID;
        i++;
        break;
    }
tail:
    i = skip_ws(p, i, n);
    return i == n ? LINE_VALID : LINE_INVALID;
}

/* ---- the flat-line fast path (SSE2, AVX2) ------------------------------------------- */

/* Most lines are one flat object with no whitespace, escapes or non-ASCII bytes (the taxi
 * shape). For those, one SIMD pass proves the whole line free of backslashes, control and
 * non-ASCII bytes, and records where the quotes and non-digits are; the walk then only
 * checks the bytes between tokens and jumps over strings and digit runs with tzcnt. It
 * accepts a line only when it is strictly valid; anything it does not follow (whitespace,
 * nesting, exponents, escapes, UTF-8, long lines, ...) goes to json_line_strict, which
 * re-judges it from scratch. So verdicts and cells are those of the strict walk.
 *
 * The walk (fast_walk) is written once, in plain C; only the classification of the line
 * into the quote and non-digit bit masks is per ISA (classify_sse2, classify_avx2). Both
 * classifiers produce the same masks, so the paths agree bit for bit. */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_FAST_SIMD 1

/* Lines longer than this take the strict walk: the bit masks live on the stack. */
#define FAST_MAX 4096
/* Mask words: 32 bits each, one per 32-byte block, and two for the sentinels. */
#define FAST_WORDS (FAST_MAX / 32 + 2)

/* Bytes that start a number: one table load instead of two compares, on every value. */
static const u8 num_start[256] = {['-'] = 1, ['0' ... '9'] = 1};

/* Whether the line may take the fast path at all. >= 32: the last 32-byte block is loaded
 * as p[n-32..n), never past the end. The first and last bytes being the braces also bound
 * every read of the walk to p[0..n). */
static inline int fast_fits(const u8 *p, size_t n)
{
    return n >= 32 && n <= FAST_MAX && p[0] == '{' && p[n - 1] == '}';
}

/* The first set bit at or after i in the bit array m (32-bit halves, little-endian); the
 * caller has planted a set bit at or after i, so the loop ends. */
static inline __attribute__((always_inline)) size_t next_set(const uint32_t *m, size_t i)
{
    size_t w = i >> 6;
    uint64_t x;
    memcpy(&x, m + 2 * w, 8);
    x >>= i & 63;
    if (LIKELY(x)) /* usually in the same word */
        return i + (size_t)__builtin_ctzll(x);
    do {
        w++;
        memcpy(&x, m + 2 * w, 8);
    } while (!x);
    return (w << 6) + (size_t)__builtin_ctzll(x);
}

/* A digit, less '0' + 0x80 (wrapping), is -128..-119 as a signed byte and nothing else is:
 * one subtraction and one compare per block, not two compares and an and. A backslash, or
 * a byte < 0x20 or >= 0x80 (both "less than" a space, signed), makes the line "bad". */

/* SSE2 (baseline on x86-64): each 32-byte block as two 16-byte halves. Fills quote[0..k)
 * and nondig[0..k) for the k = ceil(n / 32) blocks; returns k, or 0 when the line is bad. */
static size_t classify_sse2(const u8 *p, size_t n, uint32_t *quote, uint32_t *nondig)
{
    const __m128i vq = _mm_set1_epi8('"'), vb = _mm_set1_epi8('\\'), vsp = _mm_set1_epi8(0x20),
                  voff = _mm_set1_epi8((char)('0' + 0x80)), vlim = _mm_set1_epi8(-128 + 10);
#define DIGITS16(v) _mm_cmpgt_epi8(vlim, _mm_sub_epi8((v), voff))
#define BAD16(v) _mm_or_si128(_mm_cmpeq_epi8((v), vb), _mm_cmpgt_epi8(vsp, (v)))
    __m128i bad = _mm_setzero_si128();
    size_t i = 0, k = 0;
    for (; n - i >= 32; i += 32, k++) {
        __m128i a = _mm_loadu_si128((const __m128i *)(p + i)),
                b = _mm_loadu_si128((const __m128i *)(p + i + 16));
        quote[k] = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(a, vq)) |
                   (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b, vq)) << 16;
        nondig[k] = ~((uint32_t)_mm_movemask_epi8(DIGITS16(a)) |
                      (uint32_t)_mm_movemask_epi8(DIGITS16(b)) << 16);
        bad = _mm_or_si128(bad, _mm_or_si128(BAD16(a), BAD16(b)));
    }
    if (i < n) { /* the tail: the last 32 bytes, shifted so bit 0 is p[i] */
        unsigned sh = (unsigned)(i + 32 - n);
        __m128i a = _mm_loadu_si128((const __m128i *)(p + n - 32)),
                b = _mm_loadu_si128((const __m128i *)(p + n - 16));
        quote[k] = ((uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(a, vq)) |
                    (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b, vq)) << 16) >>
                   sh;
        nondig[k] = ~(((uint32_t)_mm_movemask_epi8(DIGITS16(a)) |
                       (uint32_t)_mm_movemask_epi8(DIGITS16(b)) << 16) >>
                      sh);
        bad = _mm_or_si128(bad, _mm_or_si128(BAD16(a), BAD16(b)));
        k++;
    }
#undef DIGITS16
#undef BAD16
    return _mm_movemask_epi8(bad) ? 0 : k;
}

/* AVX2: the same masks, one 32-byte vector per block. */
__attribute__((target("avx2"))) static size_t classify_avx2(const u8 *p, size_t n,
                                                             uint32_t *quote, uint32_t *nondig)
{
    const __m256i vq = _mm256_set1_epi8('"'), vb = _mm256_set1_epi8('\\'),
                  vsp = _mm256_set1_epi8(0x20), voff = _mm256_set1_epi8((char)('0' + 0x80)),
                  vlim = _mm256_set1_epi8(-128 + 10);
#define DIGITS(v) _mm256_cmpgt_epi8(vlim, _mm256_sub_epi8((v), voff))
    __m256i bad = _mm256_setzero_si256();
    size_t i = 0, k = 0;
    for (; n - i >= 32; i += 32, k++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + i));
        quote[k] = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, vq));
        nondig[k] = ~(uint32_t)_mm256_movemask_epi8(DIGITS(v));
        bad = _mm256_or_si256(bad, _mm256_or_si256(_mm256_cmpeq_epi8(v, vb),
                                                   _mm256_cmpgt_epi8(vsp, v)));
    }
    if (i < n) { /* the tail: the last 32 bytes, shifted so bit 0 is p[i] */
        unsigned sh = (unsigned)(i + 32 - n);
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + n - 32));
        quote[k] = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, vq)) >> sh;
        nondig[k] = ~((uint32_t)_mm256_movemask_epi8(DIGITS(v)) >> sh);
        bad = _mm256_or_si256(bad, _mm256_or_si256(_mm256_cmpeq_epi8(v, vb),
                                                   _mm256_cmpgt_epi8(vsp, v)));
        k++;
    }
#undef DIGITS
    return _mm256_testz_si256(bad, bad) ? k : 0;
}

/* The walk over a classified line: quote[0..k) and nondig[0..k) as a classifier left them
 * (both arrays FAST_WORDS long). 1 when the line is strictly valid (cells filled), 0 when
 * the strict walk must judge it. Inlined into each path, so it is compiled for its ISA. */
static inline __attribute__((always_inline)) int
fast_walk(const struct json_columns *c, const u8 *p, size_t n, struct cell *cells,
          uint32_t *quote, uint32_t *nondig, size_t k)
{
    /* Sentinels, in slots k and k + 1 at most: bit n ends every search; quote bit n + 1
     * too, since two quotes are popped before their positions are checked. */
    quote[k] = quote[k + 1] = 0;
    nondig[k] = nondig[k + 1] = ~0u;
    quote[n >> 5] |= 1u << (n & 31);
    quote[(n + 1) >> 5] |= 1u << ((n + 1) & 31);
    nondig[n >> 5] |= 1u << (n & 31);

    clear_cells(cells, c->count);
    /* Held in a register: the stores to cells might alias c as far as the compiler knows. */
    /* The walk meets the quotes in order, and checks that what it steps over between two
     * of them holds none, so quotes are popped off a cursor (the current mask word, with
     * the bits met cleared) rather than searched for from the walk's position. Keys are
     * then found one cycle after another, not after the previous value has been parsed:
     * the position checks only feed branches, which are predicted. */
    size_t qbase = 0; /* bit index of qbits' bit 0 (kept, not shifted out of a word index,
                       * to save an instruction per quote) */
    uint64_t qbits;
    memcpy(&qbits, quote, 8);
#define POP_QUOTE(pos)                                                                     \
    do {                                                                                   \
        while (!qbits) {                                                                   \
            qbase += 64;                                                                   \
            memcpy(&qbits, quote + (qbase >> 5), 8);                                       \
        }                                                                                  \
        (pos) = qbase + (size_t)__builtin_ctzll(qbits);                                    \
        qbits &= qbits - 1;                                                                \
    } while (0)
    /* Each key's opening quote must come right after the '{' or a ','. For the first key
     * that is p[1]; for the others, the check of ',' and '"' after each value below does
     * it: nothing the walk steps over holds a quote (digits, literals, the ':', and the
     * string values' own two quotes, which are popped), so the next quote popped is that
     * one, at the separator's position + 1. */
    if (p[1] != '"')
        return 0;
    for (;;) {
        size_t ko, ke, i;
        POP_QUOTE(ko);
        POP_QUOTE(ke);
        if (ke >= n - 2 || p[ke + 1] != ':') /* so vs <= n - 1 */
            return 0;
        /* The key is looked up before its value is parsed: the key's span is then dead
         * during the value's parse (fewer live registers), and a failed line's cells are
         * unspecified anyway. The prefix word is read straight from the line when 8 bytes
         * are there (always, for keys of 5 bytes or more). */
        struct cell *cl = NULL; /* the key's cell, when it is a column */
        {
            size_t ks = ko + 1, kl = ke - ks;
            unsigned by;
            if (kl <= JSON_MAX_NAME && (by = c->bylen[kl])) {
                /* kl >= 1 here: no name is empty, so bylen[0] is 0 */
                uint64_t pre = n - ks >= 8 ? (kl >= 8 ? load64(p + ks)
                                                      : load64(p + ks) << (64 - 8 * kl) >>
                                                            (64 - 8 * kl))
                                           : name_prefix(p + ks, kl);
                int col = lookup_pre(c, p + ks, kl, pre, by);
                if (col >= 0)
                    cl = &cells[col];
            }
        }
        size_t vs = ke + 2;
        u8 ch = p[vs];
        if (LIKELY(num_start[ch])) {
            /* p[n-1] is '}', so every byte read here is before it or it. The digits end
             * where the first non-digit after vs is, whatever p[vs] is ('-' or a digit). */
            size_t first = vs + (ch == '-'), j = next_set(nondig, vs + 1);
            if (UNLIKELY(j == first)) /* "-" and no digit */
                return 0;
            if (UNLIKELY(p[first] == '0' && j != first + 1)) /* a leading zero */
                return 0;
            if (p[j] == '.') {
                size_t f = next_set(nondig, j + 1);
                if (UNLIKELY(f == j + 1)) /* "." and no digit */
                    return 0;
                j = f;
            }
            i = j; /* an exponent fails the check below */
            if (cl) {
                cl->p = (const char *)p + vs;
                cl->len = (uint32_t)(i - vs);
                cl->kind = CELL_RAW;
            }
        } else if (ch == '"') {
            size_t vo, ve;
            POP_QUOTE(vo);
            POP_QUOTE(ve);
            if (vo != vs || ve >= n)
                return 0;
            i = ve + 1; /* the string holds only printable ASCII, no backslash */
            if (cl) {
                cl->p = (const char *)p + vs + 1;
                cl->len = (uint32_t)(ve - vs - 1);
                cl->kind = CELL_STRING;
            }
        } else if (ch == 't' || ch == 'f' || ch == 'n') {
            /* The strict walk's literal check; it cannot end at n, since p[n-1] is '}'. */
            if (!(i = scan_literal(p, vs, n)))
                return 0;
            if (cl) {
                int null = ch == 'n';
                cl->p = null ? NULL : (const char *)p + vs;
                cl->len = null ? 0 : (uint32_t)(i - vs);
                cl->kind = null ? CELL_EMPTY : CELL_RAW;
            }
        } else {
            return 0;
        }

        /* i <= n - 1. Next: the closing brace as the last byte, or ',' and the next key's
         * quote, compared as one 16-bit word (i + 1 < n there). */
        if (i == n - 1)
            return p[i] == '}';
        uint16_t sep;
        memcpy(&sep, p + i, 2);
        if (sep != ('"' << 8 | ','))
            return 0;
    }
#undef POP_QUOTE
}

static int json_line_sse2(const struct json_columns *c, const u8 *p, size_t n,
                          struct cell *cells)
{
    if (!fast_fits(p, n))
        return 0;
    /* Bit k: p[k] is '"' (quote) / is not a digit (nondig); sentinels past the end. */
    uint32_t quote[FAST_WORDS] __attribute__((aligned(8)));
    uint32_t nondig[FAST_WORDS] __attribute__((aligned(8)));
    size_t k = classify_sse2(p, n, quote, nondig);
    return k && fast_walk(c, p, n, cells, quote, nondig, k);
}

__attribute__((target("avx2,bmi,bmi2"))) static int json_line_avx2(
    const struct json_columns *c, const u8 *p, size_t n, struct cell *cells)
{
    if (!fast_fits(p, n))
        return 0;
    uint32_t quote[FAST_WORDS] __attribute__((aligned(8)));
    uint32_t nondig[FAST_WORDS] __attribute__((aligned(8)));
    size_t k = classify_avx2(p, n, quote, nondig);
    return k && fast_walk(c, p, n, cells, quote, nondig, k);
}
#endif

/* ---- dispatch ------------------------------------------------------------------------ */

typedef int (*fast_fn)(const struct json_columns *, const u8 *, size_t, struct cell *);

static fast_fn fast_path;
static const char *engine_name = "scalar";

int json_engine_select(const char *name)
{
    if (!name || !strcmp(name, "scalar")) {
        fast_path = NULL;
        engine_name = "scalar";
        return 0;
    }
#ifdef HAVE_FAST_SIMD
    if (!strcmp(name, "avx2") || !strcmp(name, "best")) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") &&
            __builtin_cpu_supports("bmi2")) {
            fast_path = json_line_avx2;
            engine_name = "avx2";
            return 0;
        }
    }
    /* SSE2 is baseline on x86-64: always there. */
    if (!strcmp(name, "sse2") || !strcmp(name, "best")) {
        fast_path = json_line_sse2;
        engine_name = "sse2";
        return 0;
    }
#endif
    if (!strcmp(name, "best"))
        return json_engine_select("scalar");
    return -1;
}

const char *json_engine_name(void) { return engine_name; }

/* Chosen once, before main: the best path the CPU has, unless NDINGEST_SIMD names one. */
__attribute__((constructor)) static void json_engine_init(void)
{
    const char *env = getenv("NDINGEST_SIMD");
    if (env && *env && json_engine_select(env) == 0)
        return;
    if (env && *env)
        fprintf(stderr, "ndingest: NDINGEST_SIMD=%s is not available here; using the best path\n",
                env);
    json_engine_select("best");
}

enum line_verdict json_line(const struct json_columns *c, const char *line, size_t n,
                            struct cell *cells)
{
    if (fast_path && fast_path(c, (const u8 *)line, n, cells))
        return LINE_VALID;
    return json_line_strict(c, line, n, cells);
}

/* ---- unescaping -------------------------------------------------------------------- */

static size_t put_utf8(char *d, uint32_t u)
{
    if (u < 0x80) {
        d[0] = (char)u;
        return 1;
    }
    if (u < 0x800) {
        d[0] = (char)(0xC0 | u >> 6);
        d[1] = (char)(0x80 | (u & 0x3F));
        return 2;
    }
    if (u < 0x10000) {
        d[0] = (char)(0xE0 | u >> 12);
        d[1] = (char)(0x80 | (u >> 6 & 0x3F));
        d[2] = (char)(0x80 | (u & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | u >> 18);
    d[1] = (char)(0x80 | (u >> 12 & 0x3F));
    d[2] = (char)(0x80 | (u >> 6 & 0x3F));
    d[3] = (char)(0x80 | (u & 0x3F));
    return 4;
}

/* Defensive on malformed input (copies what it cannot decode) but never reads outside
 * p[0..len); the output index never passes the input index, so dst may be p. */
size_t json_unescape(const char *src, size_t len, char *dst)
{
    const u8 *p = (const u8 *)src;
    size_t i = 0, o = 0;
    while (i < len) {
        const u8 *bs = memchr(p + i, '\\', len - i);
        size_t run = bs ? (size_t)(bs - (p + i)) : len - i;
        if (run) {
            memmove(dst + o, p + i, run);
            i += run;
            o += run;
        }
        if (!bs)
            break;
        if (len - i < 2) {
            dst[o++] = (char)p[i++];
            break;
        }
        u8 e = p[i + 1];
        char ch;
        switch (e) {
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            long u = hex4(p, i + 2, len);
            if (u < 0) {
                ch = (char)e;
                break;
            }
            size_t adv = 6;
            if (u >= 0xD800 && u <= 0xDBFF && len - i >= 12 && p[i + 6] == '\\' &&
                p[i + 7] == 'u') {
                long l = hex4(p, i + 8, len);
                if (l >= 0xDC00 && l <= 0xDFFF) {
                    u = 0x10000 + ((u - 0xD800) << 10) + (l - 0xDC00);
                    adv = 12;
                }
            }
            o += put_utf8(dst + o, (uint32_t)u);
            i += adv;
            continue;
        }
        default: ch = (char)e; break; /* \" \\ \/ */
        }
        dst[o++] = ch;
        i += 2;
    }
    return o;
}
