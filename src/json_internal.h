/* json_internal.h -- private to the JSON engine's files (json.c and the per-ISA paths): the
 * key lookup tables, the helpers the strict walk and the fast paths share, and the rows of
 * the dispatch table. Nothing outside the engine includes it. */
#ifndef NDINGEST_JSON_INTERNAL_H
#define NDINGEST_JSON_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "json.h"
#include "simd.h"

typedef unsigned char u8;

/* ---- key lookup ---------------------------------------------------------------------- */

#define JSON_HASH_BITS 9
#define JSON_BYLEN_MANY 0xFFFF

/* The columns as the walks see them: built by json_columns_init*, owned by the struct
 * json_columns, read-only afterwards. It repeats the count, the names' lengths and pointers,
 * so that a walk reads this struct alone: one base register for all of it. */
struct json_lookup {
    size_t count;
    /* NULL for json_columns_init, whose key i is column i; for json_columns_init_paths, the
     * keys below are the columns' distinct first keys, and this maps columns to them. (Next
     * to count: json_line reads it for every line.) */
    struct json_paths *paths; /* owned */
    /* By a key's length: 0 when no name is that long (most keys are rejected without being
     * read), the column index + 1 when one name is, or JSON_BYLEN_MANY (then the hash
     * chains of column index + 1 decide). */
    uint16_t bylen[JSON_MAX_NAME + 1];
    uint16_t head[1 << JSON_HASH_BITS];
    uint16_t next[JSON_MAX_COLUMNS];
    uint64_t prefix[JSON_MAX_COLUMNS]; /* each name's first 8 bytes, zero-padded */
    uint64_t suffix[JSON_MAX_COLUMNS]; /* each name's last 8 bytes, when it is longer than 8 */
    uint32_t lens[JSON_MAX_COLUMNS];   /* as the struct json_columns' */
    const char *names[JSON_MAX_COLUMNS];
    /* Columns by paths that are each one top-level key, distinct, in column order (key i is
     * column i): the plain walk serves them exactly as json_columns_init's, without the
     * paths walk's cost, so paths is NULL and this only owns the keys. */
    struct json_paths *flat; /* owned */
};

/* One node of the path trie: a place reached by a sequence of steps from a top-level key.
 * Nodes 0..lookup count - 1 are the top-level keys' own (node j for lookup key j); a node's
 * children are the places one step further that some column's path goes to. Its columns
 * are cols[0..nown), whose path ends there, then the columns below it, to cols[nsub - 1]
 * (a run of the columns numbered in the trie's preorder), so that "the last key wins" can
 * empty a whole subtree when a key repeats.
 *
 * For the fast paths, a node's children are two runs of struct json_kid: most keys of an
 * object on a path are rejected by their length alone (keylens), most elements of an array
 * by their index (index_end). Everything a walk reads is reached from the node. */
struct json_node {
    uint64_t keylens;             /* bit len % 64 set for each key child's length */
    const struct json_kid *keys;  /* the key children, nkeys of them */
    const struct json_kid *idx;   /* the index children, nidx of them */
    const uint16_t *cols;
    uint32_t nkeys, nidx;
    uint32_t index_end; /* 1 + the largest index child's index, or 0 */
    uint16_t nown, nsub;
};

/* A child: the step to it (a key, or an index) and its node. */
struct json_kid {
    const struct json_node *node;
    const char *key;
    uint32_t len; /* a key's length, or the index */
};

/* Columns given by paths: column i reads the value of key first[i] (the top-level member),
 * then follows rest[i][0..nrest[i]) from there: its steps after the first, up to the first
 * EVERY. The strict walk does exactly that (json_follow); the fast paths follow the trie
 * while they validate. */
struct json_paths {
    size_t count; /* columns */
    uint16_t first[JSON_MAX_COLUMNS];
    uint32_t nrest[JSON_MAX_COLUMNS];
    const struct json_step *rest[JSON_MAX_COLUMNS];
    struct json_step *steps[JSON_MAX_COLUMNS]; /* owned: each column's steps and their keys */
    uint16_t order[JSON_MAX_COLUMNS];          /* columns in trie preorder */
    struct json_node *nodes;                   /* owned */
    struct json_kid *kids;                     /* owned */
    uint32_t nnodes;
};

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
static inline __attribute__((always_inline)) int name_is(const struct json_lookup *lk,
                                                         unsigned j, const u8 *k, size_t len,
                                                         uint64_t pre)
{
    return lk->lens[j] == len && lk->prefix[j] == pre &&
           (len <= 8 || (load64(k + len - 8) == lk->suffix[j] &&
                         (len <= 16 || key_eq((const u8 *)lk->names[j] + 8, k + 8, len - 16))));
}

/* Column index of the key k[0..len), or -1; by = lk->bylen[len], not 0. Usually one name
 * has the key's length, and one word comparison rejects the key or starts accepting it. */
static inline __attribute__((always_inline)) int lookup_pre(const struct json_lookup *lk,
                                                            const u8 *k, size_t len,
                                                            uint64_t pre, unsigned by)
{
    if (LIKELY(by != JSON_BYLEN_MANY))
        return name_is(lk, by - 1, k, len, pre) ? (int)by - 1 : -1;
    for (unsigned j = lk->head[name_hash(pre, len)]; j; j = lk->next[j - 1])
        if (name_is(lk, j - 1, k, len, pre))
            return (int)j - 1;
    return -1;
}

/* ---- literals -------------------------------------------------------------------------- */

static inline int match4(const u8 *p, const char *lit)
{
    uint32_t a, b;
    memcpy(&a, p, 4);
    memcpy(&b, lit, 4);
    return a == b;
}

/* true / false / null at p[i], whose first byte is 't', 'f' or 'n': returns the index after
 * it, or 0. */
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

/* ---- escapes ---------------------------------------------------------------------------- */

/* Hex digit value + 1; 0 means not a hex digit. */
static const u8 json_hex_tab[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,
    ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14,
    ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15,
    ['F'] = 16,
};

/* Four hex digits at p[i..i+4) as a code unit, or -1 (the strict walk's and the fast
 * paths' \u check). */
static inline long json_hex4(const u8 *p, size_t i, size_t n)
{
    if (n - i < 4)
        return -1;
    unsigned a = json_hex_tab[p[i]], b = json_hex_tab[p[i + 1]], c = json_hex_tab[p[i + 2]],
             d = json_hex_tab[p[i + 3]];
    if (!a || !b || !c || !d)
        return -1;
    return (long)((a - 1) << 12 | (b - 1) << 8 | (c - 1) << 4 | (d - 1));
}

/* ---- the strict walk's pieces the fast paths use on rare lines (json.c) ---------------- */

/* p[i] >= 0x80 starts a UTF-8 sequence: the index after it, or 0 when it is not well-formed. */
size_t json_utf8_seq(const u8 *p, size_t i, size_t n);
/* The column index of a key holding escapes (compared after unescaping), or -1. */
int json_lookup_escaped(const struct json_lookup *lk, const u8 *k, size_t len);
/* Whether the raw key k[0..len), holding escapes, unescapes to key[0..klen). */
int json_key_is_escaped(const u8 *k, size_t len, const char *key, size_t klen);

/* ---- dispatch ---------------------------------------------------------------------------- */

/* A fast path: 1 when it has proved the line p[0..n) strictly valid and filled cells as
 * json_line's contract says, 0 when it does not follow the line (cells then unspecified) and
 * the strict walk must judge it. It may accept a subset of the valid lines, never more, and
 * reads only p[0..n). */
typedef int (*json_path_fn)(const struct json_lookup *lk, const u8 *p, size_t n,
                            struct cell *cells);

/* One row of the dispatch table (json.c): a path, defined in its own file compiled for its
 * ISA. */
struct json_path {
    const char *name;    /* as NDINGEST_SIMD and json_engine_select spell it */
    json_path_fn line;   /* NULL: the strict walk alone */
    json_path_fn paths;  /* the same for columns by paths (lk->paths): the trie followed */
    int (*usable)(void); /* whether this CPU runs it; NULL: always */
    /* Its check of a line holding a byte below 0x20 or above 0x7F (fast_text_ok's
     * contract, json_fast.h); here so that the tests hold each one to it. NULL: none. */
    int (*text_ok)(const u8 *p, size_t n);
};

#if defined(__x86_64__) && defined(__GNUC__)
#define JSON_HAVE_X86 1
extern const struct json_path json_path_sse2;   /* json_sse2.c */
extern const struct json_path json_path_avx2;   /* json_avx2.c */
extern const struct json_path json_path_avx512; /* json_avx512.c */
#endif

#endif
