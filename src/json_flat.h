/* json_flat.h -- the flat-line fast walk: written once in plain C, inlined by each per-ISA
 * path (json_sse2.c, json_avx2.c) after that path's own classification of the line. */
#ifndef NDINGEST_JSON_FLAT_H
#define NDINGEST_JSON_FLAT_H

#include "json_internal.h"

/* Most lines are one flat object with no whitespace, escapes or non-ASCII bytes (the taxi
 * shape). For those, one SIMD pass proves the whole line free of backslashes, control and
 * non-ASCII bytes, and records where the quotes and non-digits are; the walk then only
 * checks the bytes between tokens and jumps over strings and digit runs with tzcnt. It
 * accepts a line only when it is strictly valid; anything it does not follow (whitespace,
 * nesting, exponents, escapes, UTF-8, long lines, ...) goes to the strict walk (json.c),
 * which re-judges it from scratch. So verdicts and cells are those of the strict walk.
 *
 * A classifier, one per ISA, fills quote[0..k) and nondig[0..k) for the k = ceil(n / 32)
 * 32-byte blocks of a line that fast_fits (bit b of word w: p[32 w + b] is '"' / is not a
 * digit) and returns k, or 0 when the line holds a backslash, a byte < 0x20 or a byte
 * >= 0x80. Every classifier gives the same masks, so the paths agree bit for bit.
 *
 * The classifiers' digit test: a digit, less '0' + 0x80 (wrapping), is -128..-119 as a
 * signed byte and nothing else is, so one subtraction and one compare per vector tell the
 * digits, not two compares and an and. A byte < 0x20 or >= 0x80 is "less than" a space,
 * signed: one compare finds both. */

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

/* The walk over a classified line: quote[0..k) and nondig[0..k) as a classifier left them
 * (both arrays FAST_WORDS long). 1 when the line is strictly valid (cells filled), 0 when
 * the strict walk must judge it. Inlined into each path, so it is compiled for its ISA. */
static inline __attribute__((always_inline)) int
fast_walk(const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells,
          uint32_t *quote, uint32_t *nondig, size_t k)
{
    /* Sentinels, in slots k and k + 1 at most: bit n ends every search; quote bit n + 1
     * too, since two quotes are popped before their positions are checked. */
    quote[k] = quote[k + 1] = 0;
    nondig[k] = nondig[k + 1] = ~0u;
    quote[n >> 5] |= 1u << (n & 31);
    quote[(n + 1) >> 5] |= 1u << ((n + 1) & 31);
    nondig[n >> 5] |= 1u << (n & 31);

    clear_cells(cells, lk->count);
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
            if (kl <= JSON_MAX_NAME && (by = lk->bylen[kl])) {
                /* kl >= 1 here: no name is empty, so bylen[0] is 0 */
                uint64_t pre = n - ks >= 8 ? (kl >= 8 ? load64(p + ks)
                                                      : load64(p + ks) << (64 - 8 * kl) >>
                                                            (64 - 8 * kl))
                                           : name_prefix(p + ks, kl);
                int col = lookup_pre(lk, p + ks, kl, pre, by);
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

/* Turns a line into the quote and non-digit masks (the contract above); one per ISA. */
typedef size_t (*flat_classify_fn)(const u8 *p, size_t n, uint32_t *quote, uint32_t *nondig);

/* A flat-line path: the classification, then the walk. Inlined into each path's entry with
 * its classifier, a constant, so that both are compiled (and inlined) for its ISA. */
static inline __attribute__((always_inline)) int
flat_line(const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells,
          flat_classify_fn classify)
{
    if (!fast_fits(p, n))
        return 0;
    /* Bit k: p[k] is '"' (quote) / is not a digit (nondig); sentinels past the end. */
    uint32_t quote[FAST_WORDS] __attribute__((aligned(8)));
    uint32_t nondig[FAST_WORDS] __attribute__((aligned(8)));
    size_t k = classify(p, n, quote, nondig);
    return k && fast_walk(lk, p, n, cells, quote, nondig, k);
}

#endif
