/* json_fast.h -- the fast walk: written once in plain C, inlined by each per-ISA path
 * (json_sse2.c, json_avx2.c, json_avx512.c) after that path's own classification of the
 * line into bit masks. */
#ifndef NDINGEST_JSON_FAST_H
#define NDINGEST_JSON_FAST_H

#include "json_internal.h"


/* One SIMD pass classifies the line into bit masks: where the quotes are and where the
 * non-digits are, and whether it holds any control byte, backslash or non-ASCII byte.
 * The walk then checks only the bytes between tokens and jumps over strings and digit
 * runs with tzcnt, nested containers included. It accepts a line only when it is
 * strictly valid; what it does not follow (control bytes, tabs, nesting deeper than
 * FAST_DEPTH, lines longer than FAST_MAX) goes to json_line_strict, which re-judges the
 * line from scratch. So verdicts and cells are those of the strict walk.
 *
 * Rare features cost only the lines that have them: a line with a backslash is classified
 * once more, into backslash masks from which its escaped bytes are known (fast_escapes):
 * escaped quotes leave the quote mask, the escaped bytes are checked against those an
 * escape may name, and only \u escapes are read one by one (hex digits, surrogate pairs),
 * so no string is scanned twice; a line with a non-ASCII byte is checked as UTF-8 once
 * (every such byte of a valid line is inside a string, and any outside one fails the walk
 * anyway), in vectors where the ISA has a byte shuffle (json_utf8.h). The walk (fast_walk)
 * is written once, in plain C; only the classifications are per ISA (json_sse2.c,
 * json_avx2.c, json_avx512.c), and all produce the same masks. */

/* Lines longer than this take the strict walk: the bit masks live on the stack. */
#define FAST_MAX 16384
/* Mask words: 32 bits each, one per 32-byte block, and two for the sentinels. */
#define FAST_WORDS (FAST_MAX / 32 + 2)
/* Containers nested deeper than this below the top-level object take the strict walk. */
#define FAST_DEPTH 64

/* What a classifier saw besides the masks: a backslash; a byte below 0x20 or above 0x7F. */
#define FAST_BACKSLASH 1u
#define FAST_ODD 2u

/* Bytes that start a number: one table load instead of two compares, on every value. */
static const u8 num_start[256] = {['-'] = 1, ['0' ... '9'] = 1};

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
 * one subtraction and one compare per block, not two compares and an and. A control byte
 * or a non-ASCII one is "less than" a space as a signed byte: one compare finds both, and
 * the rare line with either is told apart later (fast_text_ok). */

/* The classifiers' contract: classify(p, n, quote, nondig, flags), n >= 32 (or any n >= 2
 * for one that reads no byte past p[n-1]), fills quote[0..k) and nondig[0..k) for the 32-bit
 * words of the line's blocks (bit b of word w: p[32 w + b] is '"' / is not a digit; bits
 * past n as for spaces) and returns k; *flags gets FAST_BACKSLASH and FAST_ODD. Every
 * classifier gives the same masks for p[0..n), so the paths agree bit for bit.
 *
 * The digit test: a digit, less '0' + 0x80 (wrapping), is -128..-119 as a signed byte and
 * nothing else is, so one subtraction and one compare per vector tell the digits, not two
 * compares and an and. A control byte or a non-ASCII one is "less than" a space as a
 * signed byte: one compare finds both, and the rare line with either is told apart later
 * (fast_text_ok). */
typedef size_t (*fast_classify_fn)(const u8 *p, size_t n, uint32_t *quote, uint32_t *nondig,
                                   unsigned *flags);

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

/* A line with a backslash is classified again (per ISA, only then) into four more masks,
 * laid out as classify's: bit b of word w says p[32 w + b] is '\\' (bs) / a byte an escape
 * may name, one of "\\/bfnrtu (named) / 'u' (u) / a hex digit (hex); bits past n as for
 * spaces. The escape classifier fills them and returns the words filled. */
struct fast_escape_masks {
    uint32_t bs[FAST_WORDS] __attribute__((aligned(8)));
    uint32_t named[FAST_WORDS] __attribute__((aligned(8)));
    uint32_t u[FAST_WORDS] __attribute__((aligned(8)));
    uint32_t hex[FAST_WORDS] __attribute__((aligned(8)));
};
typedef size_t (*fast_escape_fn)(const u8 *p, size_t n, struct fast_escape_masks *m);

/* The nibble tables of the AVX2 and AVX-512 escape classifiers: a byte's two lookups, and-ed,
 * have bit 0-3 set when it is one of "\\/bfnrtu (by its high nibble: 2, 5, 6, 7) and bit 4 or
 * 5 when it is a hex digit ('0'-'9'; 'A'-'F' and 'a'-'f'). Bytes from 0x80 get 0 by their
 * high nibble. */
static const u8 escape_low_nibble[16] __attribute__((aligned(16))) = {
    0x10, 0x30, 0x3D, 0x30, 0x38, 0x38, 0x34, 0x10, 0x10, 0x10, 0, 0, 0x02, 0, 0x04, 0x01};
static const u8 escape_high_nibble[16] __attribute__((aligned(16))) = {
    0, 0, 0x01, 0x10, 0x20, 0x02, 0x24, 0x08, 0, 0, 0, 0, 0, 0, 0, 0};
#define ESCAPE_NAMED_BITS 0x0F
#define ESCAPE_HEX_BITS 0x30

/* Four bits of the bit array m from bit i on (i's word and the next are filled). */
static inline __attribute__((always_inline)) unsigned bits4_at(const uint32_t *m, size_t i)
{
    size_t w = i >> 6, s = i & 63;
    uint64_t x;
    memcpy(&x, m + 2 * w, 8);
    x >>= s;
    if (s > 60) {
        uint64_t y;
        memcpy(&y, m + 2 * w + 2, 8);
        x |= y << (64 - s);
    }
    return (unsigned)(x & 0xF);
}

/* The bytes escaped by a backslash in the 64-bit mask word bs (backslashes) — the byte after
 * each odd run, and every second backslash of a run — given *carry, the escape that the
 * previous word's last backslash left for this word's bit 0; *carry then gets this word's.
 * simdjson's trick: a run that starts on an even bit, added to itself, carries out past its
 * end into the byte after it exactly when the run is odd. */
static inline __attribute__((always_inline)) uint64_t escaped_bits(uint64_t bs, uint64_t *carry)
{
    const uint64_t even = 0x5555555555555555ULL;
    bs &= ~*carry; /* a backslash escaped by the previous word starts no escape */
    uint64_t follows = bs << 1 | *carry;
    uint64_t odd_starts = bs & ~even & ~follows;
    uint64_t even_runs;
    *carry = __builtin_add_overflow(odd_starts, bs, &even_runs);
    return (even ^ (even_runs << 1)) & follows;
}

/* A line with a backslash, its escapes judged from the masks (words 0..k, bs with the
 * sentinel at n): each escaped quote leaves the quote mask (it is inside a string, not an
 * end); each escaped byte must be one an escape may name; and only each \u gets scalar
 * work, its four hex digits and its surrogate: a high one must be followed right away by
 * a \u low one, a low one must follow a high one. 0 when an escape is invalid (then the
 * strict walk judges the line). A backslash outside any string fails the walk later, so
 * judging the escapes of the whole line is judging those of its strings; and a run of
 * backslashes, read left to right as the strict scanner does, escapes what this reads. */
static inline int fast_escapes(const u8 *p, uint32_t *quote,
                               const struct fast_escape_masks *m, size_t k)
{
    uint64_t carry = 0;
    size_t low_at = 0; /* where a high surrogate's low one must be (0: none is due) */
    for (size_t w = 0; 2 * w < k; w++) {
        uint64_t b, ok, uu, q;
        memcpy(&b, m->bs + 2 * w, 8);
        if (!b && !carry)
            continue;
        uint64_t esc = escaped_bits(b, &carry);
        memcpy(&ok, m->named + 2 * w, 8);
        if (esc & ~ok)
            return 0;
        memcpy(&q, quote + 2 * w, 8);
        q &= ~esc;
        memcpy(quote + 2 * w, &q, 8);
        memcpy(&uu, m->u + 2 * w, 8);
        for (uint64_t x = esc & uu; x; x &= x - 1) {
            size_t e = (w << 6) + (size_t)__builtin_ctzll(x);
            if (bits4_at(m->hex, e + 1) != 0xF)
                return 0;
            /* A surrogate is \uD800 to \uDFFF: D, then 8 to F (hex already). */
            int sur = (p[e + 1] | 0x20) == 'd' && p[e + 2] >= '8';
            if (low_at) {
                if (e != low_at || !sur || (p[e + 2] | 0x20) < 'c')
                    return 0;
                low_at = 0;
            } else if (sur) {
                if ((p[e + 2] | 0x20) >= 'c') /* a low one with no high one */
                    return 0;
                low_at = e + 6;
            }
        }
    }
    return !low_at;
}

/* A line with a byte below 0x20 or above 0x7F: 1 when it holds no control byte (tabs
 * included: they are left to the strict walk) and is well-formed UTF-8 (a sequence cannot
 * span a quote, so that is each string's contents well-formed; non-ASCII outside strings
 * fails the walk anyway). This is the scalar check, and the definition: plain bytes are
 * skipped 8 at a time and each sequence checked by json_utf8_seq. The AVX2 and AVX-512
 * paths check in vectors (json_utf8.h) and must agree with it on every input; any n. */
typedef int (*fast_text_fn)(const u8 *p, size_t n);
static inline int fast_text_ok(const u8 *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t x = load64(p + i);
            /* Borrows can flag bytes above a true hit, never below one. */
            uint64_t m = (((x - ONES * 0x20) & ~x) | x) & HIGH;
            if (!m) {
                i += 8;
                continue;
            }
            i += (size_t)__builtin_ctzll(m) >> 3;
        } else {
            while (i < n && p[i] >= 0x20 && p[i] < 0x80)
                i++;
            if (i == n)
                return 1;
        }
        if (p[i] < 0x20 || !(i = json_utf8_seq(p, i, n)))
            return 0;
    }
    return 1;
}

/* The walk's state over one classified line. */
struct fast_line {
    const u8 *p;
    size_t n;
    const uint32_t *quote, *nondig;
    const uint32_t *bs; /* a line with FAST_BACKSLASH: its backslashes (fast_escape_fn) */
    unsigned flags;
};

/* With columns given by paths, the line also carries their cells (a separate struct, so
 * that the plain walk does not store a field it never reads, once per line). */
struct fast_line_paths {
    struct fast_line l;
    struct cell *cells;
};
#define LINE_CELLS(l) (((const struct fast_line_paths *)(l))->cells)

/* The quote cursor: the walk meets the quotes in order, and checks that what it steps over
 * between two of them holds none, so quotes are popped off the current mask word (the bits
 * met cleared) rather than searched for from the walk's position. qbase is the bit index
 * of qbits' bit 0. */
#define POP_QUOTE(pos)                                                                     \
    do {                                                                                   \
        while (!qbits) {                                                                   \
            qbase += 64;                                                                   \
            memcpy(&qbits, quote + (qbase >> 5), 8);                                       \
        }                                                                                  \
        (pos) = qbase + (size_t)__builtin_ctzll(qbits);                                    \
        qbits &= qbits - 1;                                                                \
    } while (0)

/* p[i] is ' ': the index of the next byte that is not. A space never ends a line the walk
 * is given (its last byte is '}'), so the loop stops inside it. */
static inline __attribute__((always_inline)) size_t skip_spaces(const u8 *p, size_t i)
{
    while (p[i] == ' ')
        i++;
    return i;
}

/* p[vs] is '-' or a digit: the index after the number's integer and fraction parts, or 0;
 * an exponent is left to fast_exponent (rare, so off the flat walk's hot path). p[n-1]
 * being '}' bounds every read; the digits of each part end at the next non-digit. */
static inline __attribute__((always_inline)) size_t fast_number(const u8 *p,
                                                               const uint32_t *nondig,
                                                               size_t vs)
{
    size_t first = vs + (p[vs] == '-'), j = next_set(nondig, vs + 1);
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
    return j;
}

/* p[j] is 'e' or 'E' right after a number's digits: the index after the exponent, or 0. */
static inline size_t fast_exponent(const u8 *p, const uint32_t *nondig, size_t j)
{
    size_t e = j + 1 + (p[j + 1] == '+' || p[j + 1] == '-');
    size_t f = next_set(nondig, e);
    return f == e ? 0 : f; /* no exponent digit */
}

/* Whether any bit of m in [a, b) is set, a < b: strings are short, so usually one word. */
static inline __attribute__((always_inline)) int any_set(const uint32_t *m, size_t a, size_t b)
{
    size_t w = a >> 6, last = (b - 1) >> 6;
    uint64_t x;
    memcpy(&x, m + 2 * w, 8);
    x &= ~0ULL << (a & 63);
    while (w < last) {
        if (x)
            return 1;
        w++;
        memcpy(&x, m + 2 * w, 8);
    }
    return (x & (~0ULL >> (63 - ((b - 1) & 63)))) != 0;
}

/* Whether the string or key whose quotes are at vo and ve holds a backslash (its escapes
 * were judged by fast_escapes already), from the backslash mask. */
static inline __attribute__((always_inline)) int has_backslash(const struct fast_line *l,
                                                               size_t vo, size_t ve)
{
    return UNLIKELY(l->flags & FAST_BACKSLASH) && ve > vo + 1 && any_set(l->bs, vo + 1, ve);
}

/* ---- columns by paths: the trie followed during the walk (json_internal.h) ---------- */

/* Empties every column at or below node nd: a key that repeats starts its subtree afresh
 * (the last one wins all the way down). */
static inline __attribute__((always_inline)) void node_clear(const struct json_node *nd,
                                                            struct cell *cells)
{
    for (unsigned k = 0; k < nd->nsub; k++)
        cells[nd->cols[k]] = (struct cell){NULL, 0, CELL_EMPTY};
}

/* The value at node nd is p[0..len) of the given kind: its own columns get it. */
static inline __attribute__((always_inline)) void node_put(const struct json_node *nd,
                                                          struct cell *cells, const u8 *p,
                                                          size_t len, uint32_t kind)
{
    for (unsigned k = 0; k < nd->nown; k++)
        cells[nd->cols[k]] = (struct cell){(const char *)p, (uint32_t)len, kind};
}

/* A child met in an object: *seen has a bit per child met in it so far, and one met again
 * has its subtree emptied (the first time, its parent's emptying did that). */
static inline __attribute__((always_inline)) const struct json_node *
kid_met(const struct json_kid *kd, uint32_t j, uint64_t *seen, struct cell *cells)
{
    if (UNLIKELY(*seen >> (j & 63) & 1))
        node_clear(kd->node, cells);
    *seen |= 1ULL << (j & 63);
    return kd->node;
}

/* A key holding escapes, on an object on a path: the child it leads to, compared after
 * unescaping, or NULL. Rare, so out of line. */
static __attribute__((noinline)) const struct json_node *
kid_by_escaped_key(const struct json_node *nd, const u8 *k, size_t len, uint64_t *seen,
                   struct cell *cells)
{
    for (uint32_t j = 0; j < nd->nkeys; j++)
        if (len >= nd->keys[j].len &&
            json_key_is_escaped(k, len, nd->keys[j].key, nd->keys[j].len))
            return kid_met(&nd->keys[j], j, seen, cells);
    return NULL;
}

/* The child of nd that the key k[0..len) leads to, or NULL; the key holds no escape and its
 * length passed nd->keylens. */
static inline __attribute__((always_inline)) const struct json_node *
kid_by_key(const struct json_node *nd, const u8 *k, size_t len, uint64_t *seen,
           struct cell *cells)
{
    const struct json_kid *kd = nd->keys;
    for (uint32_t j = 0; j < nd->nkeys; j++)
        if (kd[j].len == len && (len == 0 || key_eq(k, (const u8 *)kd[j].key, len)))
            return kid_met(&kd[j], j, seen, cells);
    return NULL;
}

/* The child of nd that element e of its array leads to, or NULL; e < nd->index_end. An
 * element is met once, so its subtree is as its parent's emptying left it. */
static inline __attribute__((always_inline)) const struct json_node *
kid_by_index(const struct json_node *nd, uint32_t e)
{
    for (uint32_t j = 0; j < nd->nidx; j++)
        if (nd->idx[j].len == e)
            return nd->idx[j].node;
    return NULL;
}

/* What the paths walk keeps for each container it is in: its node and start, and the
 * children met (an object: a bit each) or the elements so far (an array). */
struct on_path {
    const struct json_node *node;
    size_t start;
    uint64_t met;
};

static __attribute__((noinline)) size_t fast_container(const struct fast_line *l, size_t i,
                                                       size_t *qbase_io, uint64_t *qbits_io);

/* container_walk's value parses, the same where a path goes and where none does: the
 * string whose opening quote is p[i] (its quotes at vo and ve, i after it), and the
 * number at p[i] (i after it); each returns 0 from the walk when the value is invalid. */
#define STRING_AT(vo, ve)                                                                  \
    do {                                                                                   \
        POP_QUOTE(vo);                                                                     \
        POP_QUOTE(ve);                                                                     \
        if ((vo) != i || (ve) >= n - 1)                                                    \
            return 0;                                                                      \
        i = (ve) + 1;                                                                      \
    } while (0)
#define NUMBER_AT()                                                                        \
    do {                                                                                   \
        if (!(i = fast_number(p, l->nondig, i)))                                           \
            return 0;                                                                      \
        if ((p[i] | 0x20) == 'e' && !(i = fast_exponent(p, l->nondig, i)))                \
            return 0;                                                                      \
    } while (0)

/* p[i] is '{' or '[' of a value inside the top-level object: walks the container over the
 * masks, checking everything the strict walk checks, and returns the index after its
 * close (< n), or 0. *qbase_io / *qbits_io: the quote cursor, advanced past its strings.
 * Nesting is a bit stack (1 = object), so at most FAST_DEPTH levels.
 *
 * With paths (a constant: the plain instance compiles without any of it), it is the paths
 * walk: the container is the value of trie node pend, and the cells of the columns at and
 * below it (LINE_CELLS(l)) are filled as it goes. It enters only containers on a path, each
 * with its struct on_path (in memory: the walk's registers stay the plain walk's), and
 * hands every other one to the plain walk, so that keys and elements are looked at only
 * where a path goes, and most of them by length or index alone. */
static inline __attribute__((always_inline)) size_t
container_walk(const struct fast_line *l, size_t i, size_t *qbase_io, uint64_t *qbits_io,
               const struct json_node *pend, const int paths)
{
    const u8 *p = l->p;
    const size_t n = l->n;
    const uint32_t *quote = l->quote;
    size_t qbase = *qbase_io;
    uint64_t qbits = *qbits_io;
    uint64_t objects = 0;
    unsigned d = 0;
    u8 c = p[i];
    struct on_path on[FAST_DEPTH + 1]; /* paths: on[d] is depth d's */

open: /* p[i] is c, '{' or '['; i < n - 1 */
    if (d == FAST_DEPTH)
        return 0;
    d++;
    if (paths) {
        on[d] = (struct on_path){pend, i, 0};
        pend = NULL;
    }
    objects = objects << 1 | (c == '{');
    i++;
    if (p[i] == ' ')
        i = skip_spaces(p, i);
    if (c == '{') {
        if (p[i] == '}')
            goto close;
        goto key;
    }
    if (p[i] == ']')
        goto close;
    goto element;

key: /* i < n */
    {
        size_t ko, ke;
        if (p[i] != '"')
            return 0;
        POP_QUOTE(ko);
        POP_QUOTE(ke);
        if (ko != i || ke >= n - 1)
            return 0;
        if (paths) {
            size_t len = ke - ko - 1;
            if (UNLIKELY(has_backslash(l, ko, ke)))
                pend = kid_by_escaped_key(on[d].node, p + ko + 1, len, &on[d].met, LINE_CELLS(l));
            else if ((on[d].node->keylens >> (len & 63)) & 1)
                pend = kid_by_key(on[d].node, p + ko + 1, len, &on[d].met, LINE_CELLS(l));
        }
        i = ke + 1;
        if (p[i] == ' ')
            i = skip_spaces(p, i);
        if (p[i] != ':')
            return 0;
        i++;
        if (p[i] == ' ')
            i = skip_spaces(p, i);
        if (paths && pend)
            goto value_on;
        goto value;
    }

element: /* i < n: an array's element */
    if (paths) {
        if (on[d].met < on[d].node->index_end && (pend = kid_by_index(on[d].node, (uint32_t)on[d].met))) {
            on[d].met++;
            goto value_on;
        }
        on[d].met++;
    }

value: /* i < n */
    c = p[i];
    if (num_start[c]) {
        NUMBER_AT();
    } else if (c == '"') {
        size_t vo, ve;
        STRING_AT(vo, ve);
    } else if (c == '{' || c == '[') {
        if (!paths)
            goto open;
        /* paths: a container no path goes into, walked plainly */
        size_t qb = qbase;
        uint64_t qq = qbits;
        if (!(i = fast_container(l, i, &qb, &qq)))
            return 0;
        qbase = qb;
        qbits = qq;
    } else if (c == 't' || c == 'f' || c == 'n') {
        if (!(i = scan_literal(p, i, n)))
            return 0;
    } else {
        return 0;
    }
    goto after;

value_on: /* paths: p[i] (i < n) starts the value of pend, a node on a path; off the main
           * loop, so that the value parse there keeps pend out of its registers */
    c = p[i];
    if (c == '{' || c == '[') {
        if (pend->nkeys | pend->nidx)
            goto open;
        size_t vs = i, qb = qbase;
        uint64_t qq = qbits;
        if (!(i = fast_container(l, vs, &qb, &qq)))
            return 0;
        qbase = qb;
        qbits = qq;
        node_put(pend, LINE_CELLS(l), p + vs, i - vs, CELL_RAW);
    } else if (num_start[c]) {
        size_t vs = i;
        NUMBER_AT();
        node_put(pend, LINE_CELLS(l), p + vs, i - vs, CELL_RAW);
    } else if (c == '"') {
        size_t vo, ve;
        STRING_AT(vo, ve);
        node_put(pend, LINE_CELLS(l), p + vo + 1, ve - vo - 1,
                 has_backslash(l, vo, ve) ? CELL_STRING_ESCAPED : CELL_STRING);
    } else if (c == 't' || c == 'f' || c == 'n') {
        size_t vs = i;
        if (!(i = scan_literal(p, i, n)))
            return 0;
        if (c != 'n') /* null leaves the cells empty */
            node_put(pend, LINE_CELLS(l), p + vs, i - vs, CELL_RAW);
    } else {
        return 0;
    }
    pend = NULL;

after: /* i < n: a value ended before p[n-1] */
    if (p[i] == ' ')
        i = skip_spaces(p, i);
    if (p[i] == ',') {
        i++;
        if (p[i] == ' ')
            i = skip_spaces(p, i);
        if (objects & 1)
            goto key;
        goto element;
    }
    if (p[i] != (objects & 1 ? '}' : ']'))
        return 0;

close: /* p[i] closes depth d; the top-level object's own '}' is still to come */
    if (paths && on[d].node->nown)
        node_put(on[d].node, LINE_CELLS(l), p + on[d].start, i + 1 - on[d].start, CELL_RAW);
    i++;
    if (i >= n)
        return 0;
    objects >>= 1;
    if (--d)
        goto after;
    *qbase_io = qbase;
    *qbits_io = qbits;
    return i;
}

#undef STRING_AT
#undef NUMBER_AT

/* The plain walk of a nested container, and its twin that follows paths. */
static __attribute__((noinline)) size_t fast_container(const struct fast_line *l, size_t i,
                                                       size_t *qbase_io, uint64_t *qbits_io)
{
    return container_walk(l, i, qbase_io, qbits_io, NULL, 0);
}

static __attribute__((noinline)) size_t
fast_container_paths(const struct fast_line *l, size_t i, size_t *qbase_io, uint64_t *qbits_io,
                     const struct json_node *nd)
{
    return container_walk(l, i, qbase_io, qbits_io, nd, 1);
}

/* Top-level key col, a column's first step, was met: its node, its subtree emptied if it
 * was met before in this line (the cells start empty). */
static inline __attribute__((always_inline)) const struct json_node *
root_met(const struct json_paths *ps, int col, uint64_t *seen, struct cell *cells)
{
    const struct json_node *nd = &ps->nodes[col];
    if (UNLIKELY(seen[col >> 6] >> (col & 63) & 1))
        node_clear(nd, cells);
    seen[col >> 6] |= 1ULL << (col & 63);
    return nd;
}

/* Sentinels, in slots k and k + 1 at most: bit n ends every search; quote bit n + 1 too,
 * since two quotes are popped before their positions are checked. */
static inline __attribute__((always_inline)) void mark_ends(uint32_t *quote, uint32_t *nondig,
                                                           size_t k, size_t n)
{
    quote[k] = quote[k + 1] = 0;
    nondig[k] = nondig[k + 1] = ~0u;
    quote[n >> 5] |= 1u << (n & 31);
    quote[(n + 1) >> 5] |= 1u << ((n + 1) & 31);
    nondig[n >> 5] |= 1u << (n & 31);
}

/* A line with backslashes: its four escape masks (em, ended like the others), and its
 * escapes judged once here, so that the walk only asks the masks whether a string has any. */
static inline __attribute__((always_inline)) int
escapes_ok(const u8 *p, size_t n, uint32_t *quote, fast_escape_fn escapes,
           struct fast_escape_masks *em)
{
    size_t kb = escapes(p, n, em);
    em->bs[kb] = em->bs[kb + 1] = em->named[kb] = em->named[kb + 1] = 0;
    em->u[kb] = em->u[kb + 1] = em->hex[kb] = em->hex[kb + 1] = 0;
    return fast_escapes(p, quote, em, kb + 1);
}

/* A top-level value goes to a key's cell (plain) or its trie node (paths); one store each
 * way, so that the value parses below say what they found, not where it goes. */
static inline __attribute__((always_inline)) void
top_put(struct cell *cl, const struct json_node *nd, struct cell *cells, const u8 *s,
        size_t len, uint32_t kind, const int paths)
{
    if (paths && nd)
        node_put(nd, cells, s, len, kind);
    else if (cl)
        *cl = (struct cell){(const char *)s, (uint32_t)len, kind};
}

/* The top-level key with quotes at ko and ke: its cell (plain) or trie node (paths) into
 * *cl / *nd when it is a column, else they stay NULL. Looked up before its value is parsed:
 * the key's span is then dead during the value's parse (fewer live registers), and a failed
 * line's cells are unspecified anyway. The prefix word is read straight from the line when
 * 8 bytes are there (always, for keys of 5 bytes or more). */
static inline __attribute__((always_inline)) void
top_key(const struct json_lookup *lk, const struct fast_line *l, size_t ko, size_t ke,
        uint64_t *seen, struct cell *cells, struct cell **cl, const struct json_node **nd,
        const unsigned bsl, const int paths)
{
    const u8 *p = l->p;
    const struct json_paths *ps = paths ? lk->paths : NULL;
    size_t ks = ko + 1, kl = ke - ks;
    unsigned by;
    int col = -1;
    if (bsl && has_backslash(l, ko, ke)) {
        col = json_lookup_escaped(lk, p + ks, kl);
    } else if (kl <= JSON_MAX_NAME && (by = lk->bylen[kl])) {
        /* kl >= 1 here: no name is empty, so bylen[0] is 0 */
        uint64_t pre = l->n - ks >= 8 ? (kl >= 8 ? load64(p + ks)
                                                 : load64(p + ks) << (64 - 8 * kl) >> (64 - 8 * kl))
                                      : name_prefix(p + ks, kl);
        col = lookup_pre(lk, p + ks, kl, pre, by);
    }
    if (paths && col >= 0)
        *nd = root_met(ps, col, seen, cells);
    else if (col >= 0)
        *cl = &cells[col];
}

/* The top-level value at p[*vs_io], after its key's ':': parsed, checked as the strict walk
 * checks it, and put in the key's cell cl (plain) or node nd (paths). Returns the index
 * after it, or 0 when it is invalid; *vs_io moves past spaces before the value, and a
 * number's exponent is left to the caller, which meets it there. The quote cursor comes in
 * by address and goes out through copies: inlined, it stays in the walk's registers. */
static inline __attribute__((always_inline)) size_t
top_value(const struct fast_line_paths *lp, size_t *vs_io, size_t *qbase_io, uint64_t *qbits_io,
          struct cell *cl, const struct json_node *nd, struct cell *cells, const unsigned bsl,
          const int paths)
{
    const u8 *p = lp->l.p;
    const size_t n = lp->l.n;
    const uint32_t *quote = lp->l.quote, *nondig = lp->l.nondig;
    size_t qbase = *qbase_io;
    uint64_t qbits = *qbits_io;
    size_t vs = *vs_io, i;
value:;
    u8 ch = p[vs];
    if (LIKELY(num_start[ch])) {
        if (!(i = fast_number(p, nondig, vs)))
            return 0;
        top_put(cl, nd, cells, p + vs, i - vs, CELL_RAW, paths);
    } else if (ch == '"') {
        size_t vo, ve;
        POP_QUOTE(vo);
        POP_QUOTE(ve);
        if (vo != vs || ve >= n - 1)
            return 0;
        i = ve + 1;
        /* The escapes were judged already: only a cell needs to know of them. */
        uint32_t kind = CELL_STRING;
        if (bsl && (cl || (paths && nd)) && has_backslash(&lp->l, vo, ve))
            kind = CELL_STRING_ESCAPED;
        top_put(cl, nd, cells, p + vs + 1, ve - vs - 1, kind, paths);
    } else if (ch == 't' || ch == 'f' || ch == 'n') {
        /* The strict walk's literal check; it cannot end at n, since p[n-1] is '}'. */
        if (!(i = scan_literal(p, vs, n)))
            return 0;
        if (paths && nd && ch != 'n')
            node_put(nd, cells, p + vs, i - vs, CELL_RAW);
        else if (cl) {
            int null = ch == 'n';
            cl->p = null ? NULL : (const char *)p + vs;
            cl->len = null ? 0 : (uint32_t)(i - vs);
            cl->kind = null ? CELL_EMPTY : CELL_RAW;
        }
    } else if (ch == '{' || ch == '[') {
        /* Through copies: the cursor itself stays in registers. */
        size_t qb = qbase;
        uint64_t qq = qbits;
        if (paths && nd && (nd->nkeys | nd->nidx)) { /* its cells filled as it is walked */
            if (!(i = fast_container_paths(&lp->l, vs, &qb, &qq, nd)))
                return 0;
        } else {
            if (!(i = fast_container(&lp->l, vs, &qb, &qq)))
                return 0;
            top_put(cl, nd, cells, p + vs, i - vs, CELL_RAW, paths);
        }
        qbase = qb;
        qbits = qq;
    } else if (ch == ' ') {
        vs = skip_spaces(p, vs);
        goto value;
    } else {
        return 0;
    }
    *vs_io = vs;
    *qbase_io = qbase;
    *qbits_io = qbits;
    return i;
}

/* The walk over a classified line, p[0] == '{' and p[n-1] == '}': quote[0..k) and
 * nondig[0..k) as a classifier left them (both arrays FAST_WORDS long). 1 when the line is
 * strictly valid (cells filled), 0 when the strict walk must judge it. Inlined into each
 * path, so it is compiled for its ISA. */
static inline __attribute__((always_inline)) int
fast_walk(const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells,
          uint32_t *quote, uint32_t *nondig, size_t k, unsigned flags, fast_text_fn text_ok,
          fast_escape_fn escapes, const unsigned bsl, const int paths)
{
    mark_ends(quote, nondig, k, n);
    struct fast_escape_masks em;
    if (bsl && !escapes_ok(p, n, quote, escapes, &em))
        return 0;
    if (UNLIKELY(flags & FAST_ODD) && !text_ok(p, n))
        return 0;
    struct fast_line_paths lp; /* .cells: paths only */
    lp.l = (struct fast_line){p, n, quote, nondig, em.bs, flags};
    if (paths)
        lp.cells = cells;

    /* With paths (a constant), a top-level key's lookup entry is its trie node, and cells
     * are the columns' (node_put), not the keys'. */
    const struct json_paths *ps = paths ? lk->paths : NULL;
    clear_cells(cells, paths ? ps->count : lk->count);
    /* paths: a bit per top-level key met, so that only a repeated one empties its subtree */
    uint64_t seen[JSON_MAX_COLUMNS / 64];
    if (paths)
        memset(seen, 0, sizeof seen);
    size_t qbase = 0;
    uint64_t qbits;
    memcpy(&qbits, quote, 8);
    /* Each key's opening quote is p[i], right after the '{' or a ',' (and spaces), as
     * checked below: the walk steps over nothing that holds a quote but the strings (and
     * containers) whose quotes it pops, so the next quote popped is that one. */
    size_t i = 1;
    if (UNLIKELY(p[1] != '"')) {
        i = skip_spaces(p, 1);
        if (p[i] == '}')
            return i == n - 1;
        if (p[i] != '"')
            return 0;
    }
    for (;;) {
        size_t ko, ke;
        POP_QUOTE(ko);
        POP_QUOTE(ke);
        (void)i; /* ko == i: see above */
        if (ke >= n - 2) /* so p[ke + 1] and the value's first byte are in the line */
            return 0;
        struct cell *cl = NULL; /* the key's cell, when it is a column */
        const struct json_node *nd = NULL; /* with paths: the key's node, when it has one */
        top_key(lk, &lp.l, ko, ke, seen, cells, &cl, &nd, bsl, paths);
        size_t vs = ke + 1;
        if (UNLIKELY(p[vs] != ':')) {
            vs = skip_spaces(p, vs);
            if (p[vs] != ':')
                return 0;
        }
        vs++;
        if (!(i = top_value(&lp, &vs, &qbase, &qbits, cl, nd, cells, bsl, paths)))
            return 0;

        /* i <= n - 1. Next: the closing brace as the last byte, or ',' and the next key's
         * quote, compared as one 16-bit word (i + 1 < n there); the rest the slow way. */
    after:
        if (i == n - 1)
            return p[i] == '}';
        uint16_t sep;
        memcpy(&sep, p + i, 2);
        if (LIKELY(sep == ('"' << 8 | ','))) {
            i++;
            continue;
        }
        if ((p[i] | 0x20) == 'e' && num_start[p[vs]]) { /* a number's exponent */
            if (!(i = fast_exponent(p, nondig, i)) || (p[i] | 0x20) == 'e')
                return 0;
            if (paths && nd)
                node_put(nd, cells, p + vs, i - vs, CELL_RAW);
            else if (cl)
                cl->len = (uint32_t)(i - vs);
            goto after;
        }
        if (p[i] == ' ')
            i = skip_spaces(p, i);
        if (p[i] == ',') {
            i++;
            if (p[i] == ' ')
                i = skip_spaces(p, i);
            if (p[i] != '"')
                return 0;
            continue;
        }
        return p[i] == '}' && i == n - 1;
    }
}
#undef POP_QUOTE


/* A path's whole judgement of a line: the span without the whitespace around it, which must
 * be one object of 2 to FAST_MAX bytes, classified (lines under 32 bytes by classify_short,
 * which must not read past them), then walked. Inlined into each path's entry with its
 * classifiers, constants, so that all of it is compiled for its ISA. */
static inline __attribute__((always_inline)) int
fast_line(const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells,
          fast_classify_fn classify, fast_classify_fn classify_short, fast_text_fn text_ok,
          fast_escape_fn escapes, const int paths)
{
    if (UNLIKELY(n < 2 || p[0] != '{' || p[n - 1] != '}')) {
        size_t a = 0;
        while (a < n && (p[a] == ' ' || p[a] == '\t' || p[a] == '\r' || p[a] == '\n'))
            a++;
        while (n > a && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' || p[n - 1] == '\n'))
            n--;
        if (n - a < 2 || p[a] != '{' || p[n - 1] != '}')
            return 0;
        p += a;
        n -= a;
    }
    if (n > FAST_MAX)
        return 0;
    /* Bit k: p[k] is '"' (quote) / is not a digit (nondig); sentinels past the end. */
    uint32_t quote[FAST_WORDS] __attribute__((aligned(8)));
    uint32_t nondig[FAST_WORDS] __attribute__((aligned(8)));
    unsigned flags;
    size_t k = LIKELY(n >= 32) ? classify(p, n, quote, nondig, &flags)
                               : classify_short(p, n, quote, nondig, &flags);
    /* Two copies of the walk: lines without a backslash check for none in their strings. */
    if (LIKELY(!(flags & FAST_BACKSLASH)))
        return fast_walk(lk, p, n, cells, quote, nondig, k, flags, text_ok, escapes, 0, paths);
    return fast_walk(lk, p, n, cells, quote, nondig, k, flags, text_ok, escapes, FAST_BACKSLASH,
                     paths);
}

#endif
