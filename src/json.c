/* json.c -- the JSON engine: the strict walk (the definition of a valid line, in portable
 * C), the column lookup it shares with the fast paths, and the dispatch between them. */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "buf.h"
#include "json_internal.h"
#include "log.h"

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

/* p[i] is '\\' (i < n): validates one escape, a surrogate pair counting as one; returns
 * the index after it, or 0. */
static size_t escape_seq(const u8 *p, size_t i, size_t n)
{
    if (n - i < 2)
        return 0;
    if (p[i + 1] != 'u')
        return esc_ok[p[i + 1]] ? i + 2 : 0;
    long u = json_hex4(p, i + 2, n);
    if (u < 0)
        return 0;
    if (u < 0xD800 || u > 0xDFFF)
        return i + 6;
    if (u >= 0xDC00) /* a low surrogate with no high one before it */
        return 0;
    if (n - i < 12 || p[i + 6] != '\\' || p[i + 7] != 'u')
        return 0;
    long l = json_hex4(p, i + 8, n);
    if (l < 0xDC00 || l > 0xDFFF)
        return 0;
    return i + 12;
}

/* i is just after an opening quote: returns the index just after the closing quote, or 0
 * when the string is invalid or unterminated. *esc is set when a backslash was seen.
 * Plain ASCII is skipped 8 bytes at a time, in portable SWAR: this walk is the definition
 * the per-ISA paths are checked against, so it stays free of intrinsics. */
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

size_t json_utf8_seq(const u8 *p, size_t i, size_t n) { return utf8_seq(p, i, n); }

/* ---- numbers ----------------------------------------------------------------------- */

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

/* Checks column i's name against the others and copies it into c: 0, or -1 with err. */
static int column_name(struct json_columns *c, size_t i, const char *name, char *err,
                       size_t errlen)
{
    size_t len = strlen(name);
    if (len == 0) {
        snprintf(err, errlen, "column %zu: empty name", i + 1);
        return -1;
    }
    if (len > JSON_MAX_NAME) {
        snprintf(err, errlen, "column %zu: name longer than %d bytes", i + 1, JSON_MAX_NAME);
        return -1;
    }
    for (size_t j = 0; j < i; j++) {
        if (c->lens[j] == len && memcmp(c->names[j], name, len) == 0) {
            snprintf(err, errlen, "duplicate column \"%.*s\"", (int)(len > 64 ? 64 : len),
                     name);
            return -1;
        }
    }
    if (!(c->names[i] = malloc(len + 1))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(c->names[i], name, len + 1);
    c->lens[i] = (uint32_t)len;
    c->count = i + 1;
    return 0;
}

/* Appends the key k[0..len) (1 <= len <= JSON_MAX_NAME; k outlives lk) to the lookup as its
 * entry lk->count. */
static void lookup_add(struct json_lookup *lk, const char *k, size_t len)
{
    size_t i = lk->count++;
    lk->lens[i] = (uint32_t)len;
    lk->names[i] = k;
    lk->bylen[len] = lk->bylen[len] ? JSON_BYLEN_MANY : (uint16_t)(i + 1);
    lk->prefix[i] = name_prefix((const u8 *)k, len);
    if (len > 8)
        lk->suffix[i] = load64((const u8 *)k + len - 8);
    unsigned h = name_hash(lk->prefix[i], len);
    lk->next[i] = lk->head[h];
    lk->head[h] = (uint16_t)(i + 1);
}

/* The checks both json_columns_init* share before any column: 0, or -1 with err. */
static int columns_start(struct json_columns *c, size_t count, char *err, size_t errlen)
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
    if (!(c->lookup = calloc(1, sizeof *c->lookup))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int json_columns_init(struct json_columns *c, const char *const *names, size_t count,
                      char *err, size_t errlen)
{
    if (columns_start(c, count, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < count; i++) {
        if (column_name(c, i, names[i], err, errlen) != 0) {
            json_columns_free(c);
            return -1;
        }
        lookup_add(c->lookup, c->names[i], c->lens[i]);
    }
    return 0;
}

static inline int lookup_plain(const struct json_lookup *lk, const u8 *k, size_t len)
{
    unsigned by;
    if (len > JSON_MAX_NAME || !(by = lk->bylen[len]))
        return -1;
    return lookup_pre(lk, k, len, name_prefix(k, len), by);
}

/* Copies column i's steps up to the first EVERY, keys included, into one owned block, and
 * finds or adds its first key in the lookup: 0, or -1 with err. */
static int column_path(struct json_columns *c, size_t i, const struct json_column_spec *sp,
                       char *err, size_t errlen)
{
    struct json_lookup *lk = c->lookup;
    struct json_paths *ps = lk->paths;
    if (sp->nsteps == 0 || !sp->steps || sp->steps[0].kind != JSON_STEP_KEY) {
        snprintf(err, errlen, "column %zu: a path must start with a key", i + 1);
        return -1;
    }
    size_t upto = 0, bytes = 0;
    for (; upto < sp->nsteps && sp->steps[upto].kind != JSON_STEP_EVERY; upto++) {
        const struct json_step *st = &sp->steps[upto];
        if (st->kind != JSON_STEP_KEY && st->kind != JSON_STEP_INDEX) {
            snprintf(err, errlen, "column %zu: step %zu is of no known kind", i + 1, upto + 1);
            return -1;
        }
        if (st->kind == JSON_STEP_KEY) {
            if (st->len > JSON_MAX_NAME || (st->len && !st->key)) {
                snprintf(err, errlen, "column %zu: step %zu: a key longer than %d bytes",
                         i + 1, upto + 1, JSON_MAX_NAME);
                return -1;
            }
            bytes += st->len + 1;
        }
    }
    if (upto > JSON_MAX_DEPTH) { /* deeper than any valid line: it could find nothing */
        snprintf(err, errlen, "column %zu: a path of more than %d steps", i + 1, JSON_MAX_DEPTH);
        return -1;
    }
    /* The walks' lookup assumes no key is empty (json_fast.h): {"": ...} is no column's. */
    if (sp->steps[0].len == 0) {
        snprintf(err, errlen, "column %zu: the path's first key is empty", i + 1);
        return -1;
    }
    struct json_step *st = malloc(upto * sizeof *st + bytes);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char *keys = (char *)(st + upto);
    for (size_t s = 0; s < upto; s++) {
        st[s] = sp->steps[s];
        if (st[s].kind == JSON_STEP_KEY) {
            if (st[s].len)
                memcpy(keys, sp->steps[s].key, st[s].len);
            keys[st[s].len] = 0;
            st[s].key = keys;
            keys += st[s].len + 1;
        }
    }
    ps->steps[i] = st;
    ps->rest[i] = st + 1;
    ps->nrest[i] = (uint32_t)(upto - 1);
    ps->count = i + 1;
    int k = lookup_plain(lk, (const u8 *)st[0].key, st[0].len);
    if (k < 0) {
        k = (int)lk->count;
        lookup_add(lk, st[0].key, st[0].len);
    }
    ps->first[i] = (uint16_t)k;
    return 0;
}

/* Building the trie: each node's children as a linked list of steps, then laid out. */
struct trie_build {
    const struct json_step *step; /* from the parent */
    uint32_t kid, next;           /* first child + 1, next sibling + 1; 0: none */
};

static int same_step(const struct json_step *a, const struct json_step *b)
{
    if (a->kind != b->kind)
        return 0;
    if (a->kind == JSON_STEP_INDEX)
        return a->index == b->index;
    return a->len == b->len && (a->len == 0 || memcmp(a->key, b->key, a->len) == 0);
}

/* Lays node x out (its children as runs in ps->kids from *nkids) and numbers the columns
 * below it in preorder (own columns first, in column order); end[i] is column i's node.
 * Recursion as deep as the longest path, at start-up only. */
static uint16_t trie_layout(struct json_paths *ps, const struct trie_build *tb, uint32_t x,
                            const uint32_t *end, uint16_t k, uint32_t *nkids)
{
    struct json_node *nd = &ps->nodes[x];
    uint16_t own = k;
    nd->cols = ps->order + k;
    for (size_t i = 0; i < ps->count; i++)
        if (end[i] == x)
            ps->order[k++] = (uint16_t)i;
    nd->nown = (uint16_t)(k - own);
    for (uint32_t kind = JSON_STEP_KEY; kind <= JSON_STEP_INDEX; kind++) {
        struct json_kid *from = ps->kids + *nkids;
        for (uint32_t y = tb[x].kid; y; y = tb[y - 1].next) {
            const struct json_step *st = tb[y - 1].step;
            if (st->kind != kind)
                continue;
            struct json_kid *kd = &ps->kids[(*nkids)++];
            kd->node = &ps->nodes[y - 1];
            kd->key = st->key;
            kd->len = kind == JSON_STEP_KEY ? st->len : st->index;
            if (kind == JSON_STEP_KEY)
                nd->keylens |= 1ULL << (st->len & 63);
            else if (st->index >= nd->index_end) /* [2^32 - 1]: no line gets that far */
                nd->index_end = st->index == UINT32_MAX ? UINT32_MAX : st->index + 1;
        }
        uint32_t count = (uint32_t)(ps->kids + *nkids - from);
        if (kind == JSON_STEP_KEY) {
            nd->keys = from;
            nd->nkeys = count;
        } else {
            nd->idx = from;
            nd->nidx = count;
        }
    }
    for (uint32_t y = tb[x].kid; y; y = tb[y - 1].next)
        k = trie_layout(ps, tb, y - 1, end, k, nkids);
    nd->nsub = (uint16_t)(k - own);
    return k;
}

/* Builds the trie over the columns' steps (struct json_node); keys: the lookup's count,
 * whose entries are nodes 0..keys - 1. 0, or -1 when out of memory. */
static int paths_trie(struct json_paths *ps, size_t keys)
{
    size_t cap = keys;
    for (size_t i = 0; i < ps->count; i++)
        cap += ps->nrest[i];
    struct trie_build *tb = cap ? calloc(cap, sizeof *tb) : NULL; /* 0: no columns */
    ps->nodes = tb ? calloc(cap, sizeof *ps->nodes) : NULL;
    ps->kids = ps->nodes ? calloc(cap, sizeof *ps->kids) : NULL;
    if (!ps->kids) {
        free(tb);
        return -1;
    }
    ps->nnodes = (uint32_t)keys;
    uint32_t end[JSON_MAX_COLUMNS] = {0};
    for (size_t i = 0; i < ps->count; i++) {
        uint32_t x = ps->first[i];
        for (uint32_t s = 0; s < ps->nrest[i]; s++) {
            const struct json_step *st = &ps->rest[i][s];
            uint32_t *link = &tb[x].kid;
            while (*link && !same_step(tb[*link - 1].step, st))
                link = &tb[*link - 1].next;
            if (!*link) {
                tb[ps->nnodes].step = st;
                *link = ++ps->nnodes;
            }
            x = *link - 1;
        }
        end[i] = x;
    }
    uint16_t k = 0;
    uint32_t nkids = 0;
    for (uint32_t x = 0; x < keys; x++)
        k = trie_layout(ps, tb, x, end, k, &nkids);
    free(tb);
    return 0;
}

int json_columns_init_paths(struct json_columns *c, const struct json_column_spec *specs,
                            size_t count, char *err, size_t errlen)
{
    if (columns_start(c, count, err, errlen) != 0)
        return -1;
    if (!(c->lookup->paths = calloc(1, sizeof *c->lookup->paths))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < count; i++)
        if (column_name(c, i, specs[i].name, err, errlen) != 0 ||
            column_path(c, i, &specs[i], err, errlen) != 0)
            goto fail;
    if (paths_trie(c->lookup->paths, c->lookup->count) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    struct json_paths *ps = c->lookup->paths;
    int flat = 1;
    for (size_t i = 0; i < count && flat; i++)
        flat = ps->nrest[i] == 0 && ps->first[i] == i;
    if (flat) {
        c->lookup->flat = ps;
        c->lookup->paths = NULL;
    }
    return 0;
fail:
    json_columns_free(c);
    return -1;
}

static void paths_free(struct json_paths *ps)
{
    if (!ps)
        return;
    for (size_t i = 0; i < ps->count; i++)
        free(ps->steps[i]);
    free(ps->nodes);
    free(ps->kids);
    free(ps);
}

void json_columns_free(struct json_columns *c)
{
    for (size_t i = 0; i < c->count; i++)
        free(c->names[i]);
    if (c->lookup) {
        paths_free(c->lookup->paths);
        paths_free(c->lookup->flat);
    }
    free(c->lookup);
    memset(c, 0, sizeof *c);
}


/* A key holding escapes: compared after unescaping. An escape turns at most 6 bytes into
 * 1, so a longer raw key cannot match any name. */
__attribute__((noinline)) int json_lookup_escaped(const struct json_lookup *lk,
                                                    const u8 *k, size_t len)
{
    char tmp[JSON_MAX_NAME * 6];
    if (len > sizeof tmp)
        return -1;
    size_t ulen = json_unescape((const char *)k, len, tmp);
    return ulen ? lookup_plain(lk, (const u8 *)tmp, ulen) : -1;
}

/* ---- the line ---------------------------------------------------------------------- */

/* The strict walk: every line gets its verdict here unless a fast path accepted it (kept
 * out of line so that json_line stays a lean dispatcher). */
static __attribute__((noinline)) enum line_verdict
json_line_strict(const struct json_lookup *lk, const char *line, size_t n, struct cell *cells)
{
    const u8 *p = (const u8 *)line;
    size_t i = skip_ws(p, 0, n);
    if (i == n)
        return LINE_BLANK;
    if (p[i] != '{' || n > UINT32_MAX) /* a cell's length is 32 bits */
        return LINE_INVALID;
    memset(cells, 0, lk->count * sizeof *cells);
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

        int col = kesc ? json_lookup_escaped(lk, p + ks, kl) : lookup_plain(lk, p + ks, kl);
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

/* ---- dispatch ------------------------------------------------------------------------ */

/* The paths, best first: "best" is the first this CPU runs. A new path is one file (its
 * json_path row, compiled for its ISA) and one row here. */
static const struct json_path path_scalar = {"scalar", NULL, NULL, NULL, NULL};
static const struct json_path *const paths[] = {
#ifdef JSON_HAVE_X86
    &json_path_avx512,
    &json_path_avx2,
    &json_path_sse2,
#endif
    &path_scalar,
    NULL,
};

static json_path_fn fast_path; /* NULL: the strict walk alone, until json_engine_init */
static json_path_fn fast_path_paths; /* the same, for columns by paths */
static const char *engine_name = "scalar";

int json_engine_select(const char *name)
{
    int best = name && !strcmp(name, "best");
    if (!name)
        name = "scalar";
    for (const struct json_path *const *row = paths; *row; row++) {
        const struct json_path *e = *row;
        if ((best || !strcmp(name, e->name)) && (!e->usable || e->usable())) {
            fast_path = e->line;
            fast_path_paths = e->paths;
            engine_name = e->name;
            return 0;
        }
    }
    return -1;
}

const char *json_engine_name(void) { return engine_name; }

void json_engine_init(void)
{
    const char *env = getenv("NDINGEST_SIMD");
    if (env && *env && json_engine_select(env) == 0)
        return;
    json_engine_select("best");
    if (env && *env)
        log_error("NDINGEST_SIMD=%s is not available here; using the best path, %s", env,
                  engine_name);
}

/* Columns given by paths: a fast path follows them as it walks; otherwise the strict walk
 * fills the first keys' cells, and each column follows its remaining steps from its first
 * key's value (json_follow: the definition the fast paths are tested against). */
static __attribute__((noinline)) enum line_verdict
json_line_paths(const struct json_lookup *lk, const char *line, size_t n, struct cell *cells)
{
    if (fast_path_paths && fast_path_paths(lk, (const u8 *)line, n, cells))
        return LINE_VALID;
    struct cell top[JSON_MAX_COLUMNS];
    enum line_verdict v = json_line_strict(lk, line, n, top);
    if (v != LINE_VALID)
        return v;
    const struct json_paths *ps = lk->paths;
    for (size_t i = 0; i < ps->count; i++) {
        const struct cell *from = &top[ps->first[i]];
        if (!ps->nrest[i])
            cells[i] = *from;
        else if (from->kind == CELL_RAW) /* only containers have members or elements */
            json_follow(from->p, from->len, ps->rest[i], ps->nrest[i], &cells[i]);
        else
            cells[i] = (struct cell){NULL, 0, CELL_EMPTY};
    }
    return LINE_VALID;
}

enum line_verdict json_line(const struct json_columns *c, const char *line, size_t n,
                            struct cell *cells)
{
    if (UNLIKELY(c->lookup->paths))
        return json_line_paths(c->lookup, line, n, cells);
    if (fast_path && fast_path(c->lookup, (const u8 *)line, n, cells))
        return LINE_VALID;
    return json_line_strict(c->lookup, line, n, cells);
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
 * p[0..len); the output index never passes the input index, so dst may be p. The runs
 * between backslashes go 16 bytes at a time while 16 are left (selected text has an escape
 * every few dozen bytes: a memchr and a memmove call per run cost more than the run); the
 * last bytes by memchr. */
size_t json_unescape(const char *src, size_t len, char *dst)
{
    const u8 *p = (const u8 *)src;
    size_t i = 0, o = 0;
    while (i < len) {
#ifdef __SSE2__
        if (len - i >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
            unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('\\')));
            if (!m) { /* in place, the store overwrites only bytes loaded already */
                _mm_storeu_si128((__m128i *)(dst + o), v);
                i += 16;
                o += 16;
                continue;
            }
            size_t run = (size_t)__builtin_ctz(m);
            put_upto16(dst + o, (const char *)p + i, run); /* safe backwards in place */
            i += run;
            o += run;
        } else
#endif
        {
            const u8 *bs = memchr(p + i, '\\', len - i);
            size_t run = bs ? (size_t)(bs - (p + i)) : len - i;
            if (run) {
                memmove(dst + o, p + i, run);
                i += run;
                o += run;
            }
            if (!bs)
                break;
        }
        /* p[i] is a backslash */
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
            long u = json_hex4(p, i + 2, len);
            if (u < 0) {
                ch = (char)e;
                break;
            }
            size_t adv = 6;
            if (u >= 0xD800 && u <= 0xDBFF && len - i >= 12 && p[i + 6] == '\\' &&
                p[i + 7] == 'u') {
                long l = json_hex4(p, i + 8, len);
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

/* ---- following a path inside a valid value ------------------------------------------ */

/* These read text json_line has already accepted, so they only find the ends of things:
 * no byte is judged again. Every loop is still bounded by n. */

/* i is just after an opening quote: the index just after the closing one; *esc is set when
 * the string holds a backslash. */
static size_t valid_string_end(const u8 *p, size_t i, size_t n, int *esc)
{
    size_t s = i;
    while (i < n) {
        const u8 *q = memchr(p + i, '"', n - i);
        if (!q)
            return n;
        size_t e = (size_t)(q - p), b = e;
        while (b > s && p[b - 1] == '\\')
            b--;
        if (((e - b) & 1) == 0) {
            if (!*esc && memchr(p + s, '\\', e - s))
                *esc = 1;
            return e + 1;
        }
        i = e + 1; /* an escaped quote */
    }
    return n;
}

/* p[i] starts a value: the index just after it. Containers are crossed by counting
 * brackets outside strings, which is enough in valid text. */
static size_t valid_value_end(const u8 *p, size_t i, size_t n)
{
    int esc = 0;
    u8 c = p[i];
    if (c == '"')
        return valid_string_end(p, i + 1, n, &esc);
    if (c != '{' && c != '[') {
        while (i < n && p[i] != ',' && p[i] != '}' && p[i] != ']' && !ws_tab[p[i]])
            i++;
        return i;
    }
    size_t depth = 0;
    while (i < n) {
        c = p[i++];
        if (c == '"')
            i = valid_string_end(p, i, n, &esc);
        else if (c == '{' || c == '[')
            depth++;
        else if ((c == '}' || c == ']') && --depth == 0)
            return i;
    }
    return n;
}

/* Whether the raw key k[0..len), which holds escapes, unescapes to key[0..klen): decoded
 * escape by escape, so keys of any length compare without a buffer. */
int json_key_is_escaped(const u8 *k, size_t len, const char *key, size_t klen)
{
    size_t i = 0, o = 0;
    while (i < len) {
        char one[4];
        size_t w, adv;
        if (k[i] != '\\') {
            one[0] = (char)k[i];
            w = 1;
            adv = 1;
        } else {
            adv = k[i + 1] == 'u' ? 6 : 2;
            if (adv == 6 && len - i >= 12 && k[i + 6] == '\\' && k[i + 7] == 'u') {
                long u = json_hex4(k, i + 2, len);
                if (u >= 0xD800 && u <= 0xDBFF)
                    adv = 12;
            }
            w = json_unescape((const char *)k + i, adv, one);
        }
        if (o + w > klen || memcmp(key + o, one, w) != 0)
            return 0;
        o += w;
        i += adv;
    }
    return o == klen;
}

/* p[i] is '{': the index of the value of its last member named st's key, or 0. */
static size_t follow_key(const u8 *p, size_t i, size_t n, const struct json_step *st)
{
    size_t found = 0;
    i = skip_ws(p, i + 1, n);
    while (i < n && p[i] == '"') {
        int esc = 0;
        size_t ks = i + 1;
        i = valid_string_end(p, ks, n, &esc);
        size_t kl = i - 1 - ks;
        i = skip_ws(p, i, n);
        i = skip_ws(p, i + 1, n); /* past the ':' */
        if (i >= n)
            return 0;
        if (esc ? kl >= st->len && json_key_is_escaped(p + ks, kl, st->key, st->len)
                : kl == st->len && (kl == 0 || memcmp(p + ks, st->key, kl) == 0))
            found = i; /* the last one wins, as at the top level */
        i = skip_ws(p, valid_value_end(p, i, n), n);
        if (i >= n || p[i] != ',')
            break;
        i = skip_ws(p, i + 1, n);
    }
    return found;
}

/* p[i] is '[': the index of element st->index, or 0. */
static size_t follow_index(const u8 *p, size_t i, size_t n, const struct json_step *st)
{
    i = skip_ws(p, i + 1, n);
    if (i >= n || p[i] == ']')
        return 0;
    for (uint32_t k = 0; k < st->index; k++) {
        i = skip_ws(p, valid_value_end(p, i, n), n);
        if (i >= n || p[i] != ',')
            return 0;
        i = skip_ws(p, i + 1, n);
    }
    return i < n ? i : 0;
}

void json_follow(const char *text, size_t n, const struct json_step *steps, size_t nsteps,
                 struct cell *out)
{
    const u8 *p = (const u8 *)text;
    size_t i = skip_ws(p, 0, n);
    *out = (struct cell){NULL, 0, CELL_EMPTY};
    for (size_t s = 0; s < nsteps; s++) {
        if (i >= n)
            return;
        if (steps[s].kind == JSON_STEP_KEY && p[i] == '{')
            i = follow_key(p, i, n, &steps[s]);
        else if (steps[s].kind == JSON_STEP_INDEX && p[i] == '[')
            i = follow_index(p, i, n, &steps[s]);
        else
            return; /* a value of another kind, null, or an EVERY step */
        if (!i)
            return;
    }
    if (i >= n || p[i] == 'n')
        return;
    size_t e = valid_value_end(p, i, n);
    if (p[i] == '"') {
        int esc = 0;
        valid_string_end(p, i + 1, n, &esc);
        *out = (struct cell){text + i + 1, (uint32_t)(e - i - 2),
                             esc ? CELL_STRING_ESCAPED : CELL_STRING};
    } else {
        *out = (struct cell){text + i, (uint32_t)(e - i), CELL_RAW};
    }
}

/* ---- where an invalid line fails ----------------------------------------------------- */

/* i is just after an opening quote: the index of the closing quote, or of the byte where
 * the string stops being valid (n when it is unterminated). */
static size_t string_stop(const u8 *p, size_t i, size_t n)
{
    while (i < n && p[i] != '"') {
        size_t next = p[i] == '\\' ? escape_seq(p, i, n)
                      : p[i] >= 0x80 ? utf8_seq(p, i, n)
                      : p[i] >= 0x20 ? i + 1 : 0;
        if (!next)
            return i;
        i = next;
    }
    return i;
}

/* The strict walk's grammar again, tracking the position, for the quarantine's reasons:
 * where the line stops being JSON (SIZE_MAX: it does not), the line being one object, or
 * with any_value one value of any kind. Only refused lines come here, so it favours
 * plainness over speed. */
static size_t error_offset(const char *line, size_t n, int any_value)
{
    const u8 *p = (const u8 *)line;
    uint64_t obj[JSON_MAX_DEPTH / 64] = {0}; /* one bit per open container: 1 = object */
    unsigned d = 0;
    size_t i = skip_ws(p, 0, n);
    if (i == n)
        return SIZE_MAX; /* blank */
    if (p[i] != '{') {
        if (!any_value)
            return i;
        goto value;
    }
    goto open;

value: /* i < n, a value expected */
    switch (p[i]) {
    case '{':
    case '[':
        if (d == JSON_MAX_DEPTH)
            return i;
    open: /* p[i] opens a container at depth d + 1 */
        obj[d >> 6] = (obj[d >> 6] & ~(1ULL << (d & 63))) | (uint64_t)(p[i] == '{') << (d & 63);
        d++;
        i = skip_ws(p, i + 1, n);
        if (i >= n)
            return n;
        if (p[i] == (obj[(d - 1) >> 6] >> ((d - 1) & 63) & 1 ? '}' : ']'))
            goto close;
        if (obj[(d - 1) >> 6] >> ((d - 1) & 63) & 1)
            goto key;
        goto value;
    case '"':
        i = string_stop(p, i + 1, n);
        if (i >= n || p[i] != '"')
            return i;
        i++;
        break;
    case 't':
    case 'f':
    case 'n': {
        const char *lit = p[i] == 't' ? "true" : p[i] == 'f' ? "false" : "null";
        for (; *lit; lit++, i++)
            if (i >= n || p[i] != (u8)*lit)
                return i < n ? i : n;
        break;
    }
    case '-':
    case '0' ... '9':
        if (p[i] == '-' && (++i >= n || !is_digit(p[i])))
            return i < n ? i : n;
        if (p[i] == '0')
            i++;
        else
            while (i < n && is_digit(p[i]))
                i++;
        if (i < n && p[i] == '.') {
            if (++i >= n || !is_digit(p[i]))
                return i < n ? i : n;
            while (i < n && is_digit(p[i]))
                i++;
        }
        if (i < n && (p[i] | 0x20) == 'e') {
            if (++i < n && (p[i] == '+' || p[i] == '-'))
                i++;
            if (i >= n || !is_digit(p[i]))
                return i < n ? i : n;
            while (i < n && is_digit(p[i]))
                i++;
        }
        break;
    default:
        return i;
    }

after: /* a value ended at i, inside depth d (0: the line's value) */
    i = skip_ws(p, i, n);
    if (!d)
        return i == n ? SIZE_MAX : i;
    if (i >= n)
        return n;
    if (p[i] == ',') {
        i = skip_ws(p, i + 1, n);
        if (i >= n)
            return n;
        if (obj[(d - 1) >> 6] >> ((d - 1) & 63) & 1)
            goto key;
        goto value;
    }
    if (p[i] != (obj[(d - 1) >> 6] >> ((d - 1) & 63) & 1 ? '}' : ']'))
        return i;

close: /* p[i] closes depth d */
    i++;
    d--;
    goto after;

key: /* i < n, a member's key expected */
    if (p[i] != '"')
        return i;
    i = string_stop(p, i + 1, n);
    if (i >= n || p[i] != '"')
        return i;
    i = skip_ws(p, i + 1, n);
    if (i >= n)
        return n;
    if (p[i] != ':')
        return i;
    i = skip_ws(p, i + 1, n);
    if (i >= n)
        return n;
    goto value;
}

size_t json_error_offset(const char *line, size_t n)
{
    return error_offset(line, n, 0);
}

int json_not_object(const char *line, size_t n)
{
    size_t i = skip_ws((const u8 *)line, 0, n);
    return i < n && line[i] != '{' && error_offset(line, n, 1) == SIZE_MAX;
}
