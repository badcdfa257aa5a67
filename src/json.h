/* json.h -- the JSON engine: validates one NDJSON line strictly (RFC 8259) and finds the
 * values of the selected columns (top-level keys, or paths into the line). */
#ifndef NDINGEST_JSON_H
#define NDINGEST_JSON_H

#include <stddef.h>
#include <stdint.h>

/* Nesting deeper than this makes a line invalid (the line contract in doc/format.md). */
#define JSON_MAX_DEPTH 1024
#define JSON_MAX_COLUMNS 256
/* Column names are matched against keys after unescaping; no name may be longer. */
#define JSON_MAX_NAME 256

/* One step of a column's path into a line's object: $.a['b.c'][2][:] is KEY a, KEY b.c,
 * INDEX 2, EVERY (doc/datasets.md, section 2). */
enum json_step_kind {
    JSON_STEP_KEY,   /* the member named key[0..len) of an object */
    JSON_STEP_INDEX, /* element index of an array (0-based) */
    JSON_STEP_EVERY, /* every element of an array, [:] (only in Array columns) */
};

struct json_step {
    uint32_t kind; /* enum json_step_kind */
    uint32_t len;  /* KEY: the key's length */
    uint32_t index;
    const char *key; /* KEY: unescaped, NUL-terminated (it may hold NULs of its own) */
};

enum cell_kind {
    CELL_EMPTY = 0,      /* the key is missing, or its value is null */
    CELL_RAW,            /* number, true, false, object or array: the bytes exactly as sent */
    CELL_STRING,         /* a string's bytes between its quotes, holding no backslash */
    CELL_STRING_ESCAPED, /* a string's bytes between its quotes, holding (valid) escapes */
};

/* A column's value in one line: a span of that line, never a copy. */
struct cell {
    const char *p;
    uint32_t len;
    uint32_t kind; /* enum cell_kind */
};

/* The columns as the walks read them: private to the engine (json_internal.h). */
struct json_lookup;

/* The selected columns, compiled once at start-up and shared read-only by every line.
 * count, names and lens are for readers (the CSV header, the row's width); the rest is the
 * engine's. Zero-filled is "no columns" (json_columns_free may be called on it). */
struct json_columns {
    size_t count;
    char *names[JSON_MAX_COLUMNS]; /* NUL-terminated copies, owned */
    uint32_t lens[JSON_MAX_COLUMNS];
    struct json_lookup *lookup; /* owned */
};

/* Compiles the column list (copying the names). 0, or -1 with a message in err (no
 * columns, an empty, duplicate or too long a name, too many columns, out of memory); on
 * -1, c is left zero-filled. */
int json_columns_init(struct json_columns *c, const char *const *names, size_t count,
                      char *err, size_t errlen);
void json_columns_free(struct json_columns *c);
/* A column selected by a path rather than a top-level name: name is the CSV header's;
 * steps[0..nsteps) as datasource.c compiles them (nsteps >= 1, steps[0] a KEY). The engine
 * follows the KEY and INDEX steps up to the first EVERY: the column's cell is the value
 * there (for $.items[:].id, the array $.items), and what follows is the caller's
 * (json_follow, per element). */
struct json_column_spec {
    const char *name;
    const struct json_step *steps;
    uint32_t nsteps;
};

/* json_columns_init for columns given by paths; names need not be keys. The steps are
 * copied. Errors as json_columns_init's, and a path whose steps are not as above: no step,
 * a first step that is not a KEY or is empty, a key longer than JSON_MAX_NAME, more than
 * JSON_MAX_DEPTH steps before the first EVERY, a step of no known kind. In json_line's
 * cells, a path that finds nothing (as json_follow says) is CELL_EMPTY; keys repeated in an
 * object: the last one is followed, at every depth. */
int json_columns_init_paths(struct json_columns *c, const struct json_column_spec *specs,
                            size_t count, char *err, size_t errlen);


enum line_verdict {
    LINE_BLANK,   /* empty, or only whitespace (space, tab, CR, LF): skipped, not counted */
    LINE_VALID,   /* exactly one JSON object, strictly valid */
    LINE_INVALID, /* anything else */
};

/* Judges the line p[0..n) (its '\n' already cut off; '\r' is whitespace). On LINE_VALID,
 * cells[i] holds the value of column i (cells has c->count entries); when a key repeats,
 * the last one wins. On other verdicts the cells are unspecified. Reads only p[0..n),
 * allocates nothing, and gives the same answer whatever the dispatch path. A non-blank
 * line of 4 GiB or more is LINE_INVALID, since a cell's length is 32 bits. */
enum line_verdict json_line(const struct json_columns *c, const char *p, size_t n,
                            struct cell *cells);

/* Chooses the dispatch path, once at start-up, before the first json_line (and before
 * forking, so that workers inherit it): the best the CPU supports (avx512 > avx2 > sse2 >
 * scalar), unless the environment variable NDINGEST_SIMD=scalar|sse2|avx2|avx512 forces
 * one; a name this
 * build or CPU lacks is reported with log_error and the best path is used. Until it is
 * called, json_line takes the scalar path (same answers, slower). Not thread-safe. */
void json_engine_init(void);
/* The dispatch path json_line uses: "avx512", "avx2" or "sse2" (the SIMD fast path: the
 * same walk with the line classified in 64-, 32- or 16-byte vectors, falling back to the
 * strict walk on what it does not follow; x86-64 only) or "scalar" (the strict walk only). */
const char *json_engine_name(void);
/* Forces a path by name ("scalar", "sse2", "avx2", "avx512", or "best"): 0, or -1 when this build or
 * CPU lacks it (nothing changes). Not thread-safe: for start-up and tests. */
int json_engine_select(const char *name);

/* Follows steps[0..nsteps) (KEY and INDEX only) from the value p[0..n), which json_line
 * accepted as part of a valid line (a cell's span, a string's with its quotes), and puts
 * the value found there in *out as json_line would (CELL_EMPTY when a step finds nothing:
 * a missing key, an index past the end, a value of another kind, null). nsteps 0 gives the
 * value itself. Allocates nothing. */
void json_follow(const char *p, size_t n, const struct json_step *steps, size_t nsteps,
                 struct cell *out);

/* Where the line p[0..n), which json_line judged LINE_INVALID, stops being JSON: the offset
 * of the first byte no valid line could have there (a bad escape or UTF-8 sequence is
 * reported at its first byte), or n when the line ends before its object does. SIZE_MAX
 * for a line json_line accepts or finds blank. For the quarantine's reason: it walks the
 * line again, slowly. Allocates nothing. */
size_t json_error_offset(const char *p, size_t n);

/* 1 when the line p[0..n), which json_line judged LINE_INVALID, is one valid JSON value that
 * is not an object (`[1]`, `null`, `5`, `"s"`, blanks around it allowed): refused for what it
 * is, not for its syntax. 0 otherwise. Slow like json_error_offset; allocates nothing. */
int json_not_object(const char *p, size_t n);

/* Writes the unescaped UTF-8 text of a string span that json_line accepted into dst, which
 * needs room for len bytes (unescaping never lengthens; dst may be p itself); returns the
 * length written. A surrogate pair becomes one 4-byte sequence. */
size_t json_unescape(const char *p, size_t len, char *dst);

#endif
