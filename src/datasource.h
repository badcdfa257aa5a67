/* datasource.h -- a dataset's definition: a Tinybird .datasource file parsed into columns
 * (name, ClickHouse type, JSONPath compiled into steps, DEFAULT) and its other
 * instructions. */
#ifndef NDINGEST_DATASOURCE_H
#define NDINGEST_DATASOURCE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "json.h"
#include "types.h"

/* Limits of one definition; each is checked with a FILE:LINE error. */
#define DS_MAX_COLUMNS  JSON_MAX_COLUMNS /* columns per dataset */
#define DS_MAX_NAME     JSON_MAX_NAME    /* bytes of a column name, a path key, a dataset name */
#define DS_MAX_PATH     1024             /* bytes of a `json:` path as written */
#define DS_MAX_DEPTH    32               /* steps of a path */
#define DS_MAX_SETTINGS 32               /* DESCRIPTION, ENGINE... instructions */
#define DS_MAX_TOKENS   64               /* TOKEN lines */
#define DS_MAX_FILE     (1024 * 1024)    /* bytes of a .datasource file (datasource_load) */
/* An empty_cell up to this long is moved as one fixed-size block (no call to memcpy). */
#define DS_EMPTY_PAD 16

struct ds_column {
    const char *name; /* NUL-terminated */
    uint32_t name_len;
    struct type type;
    const char *type_text; /* as written, blanks trimmed */
    const char *path;      /* as written: "$.pickup.zone.name"; "$.NAME" when none was */
    const struct json_step *steps;
    uint32_t nsteps;
    /* The steps after the path's first [:] (type_cell_each's each), NULL and 0 without [:]:
     * the JSON engine finds the value up to it, each Array element is followed by these. */
    const struct json_step *each;
    uint32_t neach;
    int has_default;
    int default_is_expr;      /* DEFAULT is an expression (now(), ...): its cell is empty */
    const char *default_text; /* as written; NULL without DEFAULT */
    /* What a missing or null value becomes when has_default: the literal's CSV cell, checked
     * against the type at load time, or for an expression an empty cell, which ClickHouse's
     * CSV input (input_format_csv_empty_as_default, on by default) fills with the column's
     * own DEFAULT. */
    const char *default_cell;
    uint32_t default_len;
    /* The cell of a missing or null value, whatever gives it (the DEFAULT, the empty array,
     * \N), as type_cell would write it; NULL when such a value is refused. Owned, with at
     * least DS_EMPTY_PAD bytes readable (zeros past empty_len). */
    const char *empty_cell;
    uint32_t empty_len;
    int line; /* where the column's definition starts */
};

/* An instruction other than SCHEMA and TOKEN, kept as written: DESCRIPTION, ENGINE,
 * ENGINE_SORTING_KEY, ... A block value (KEY >) has its lines trimmed and joined by '\n';
 * an inline value loses the double quotes around it, if any. */
struct ds_setting {
    const char *key, *value;
    int line;
};

/* TOKEN name APPEND|READ: a token allowed to append to (or read) this dataset. */
struct ds_token {
    const char *name, *scope;
    int line;
};

/* A parsed definition, read-only once returned; every string is owned by it. */
struct datasource {
    const char *name; /* the dataset's name: the file's base name without .datasource */
    size_t ncolumns, nsettings, ntokens;
    /* [ncolumns], owned: room for DS_MAX_COLUMNS while parsing, then only what is used
     * (a definition held whole would be 30 KiB in every process, most of them unused). */
    struct ds_column *columns;
    struct ds_setting settings[DS_MAX_SETTINGS];
    struct ds_token tokens[DS_MAX_TOKENS];
    /* The columns compiled for the JSON engine (json_columns_init_paths), in definition
     * order: json_line's cells[i] is columns[i]'s value. Owned. */
    struct json_columns json;
    void *arena; /* private: the blocks holding the strings and steps */
};

/* Parses the text[0..len) of the datafile named file (used in messages and, without its
 * directories and its .datasource suffix, as the dataset's name). Returns the definition
 * (free it with datasource_free), or NULL with "FILE:LINE: message" in err[0..errlen) for
 * the first error: unknown instruction, bad type, path or DEFAULT, duplicate column, a
 * limit exceeded, no SCHEMA. Not for the hot path: it allocates and formats. */
struct datasource *datasource_parse(const char *file, const char *text, size_t len, char *err,
                                    size_t errlen);

/* Reads and parses the file at path (at most DS_MAX_FILE bytes; its name must end in
 * .datasource). NULL with "PATH: message" or "PATH:LINE: message" in err. */
struct datasource *datasource_load(const char *path, char *err, size_t errlen);

void datasource_free(struct datasource *ds);

/* The value of instruction key ("ENGINE", "DESCRIPTION"...), or NULL when absent. */
const char *datasource_setting(const struct datasource *ds, const char *key);

/* Appends column c's CSV cell for the value v (as json_line gives it): a missing or null
 * value takes the DEFAULT when there is one, else type_cell decides (\N when Nullable,
 * TYPE_ERR_NULL otherwise); an Array column's elements follow its path past [:]
 * (type_cell_each). Same contract as type_cell: on refusal out->len is unchanged and *why
 * holds a static message. No allocation beyond out's growth. Inline: it is every typed
 * cell's first step that datasource_short_cell (below) does not take. */
static inline enum type_result datasource_cell(const struct ds_column *c, const struct cell *v,
                                               struct buf *out, const char **why)
{
    if (v->kind != CELL_EMPTY)
        return c->type.array_depth ? type_cell_each(&c->type, v, c->each, c->neach, out, why)
                                   : type_scalar_cell(&c->type, v, out, why);
    if (!c->empty_cell) {
        *why = "null for a non-Nullable column";
        return TYPE_ERR_NULL;
    }
    size_t n = c->empty_len;
    if (buf_reserve(out, n > DS_EMPTY_PAD ? n : DS_EMPTY_PAD)) {
        *why = "out of memory";
        return TYPE_ERR_NOMEM;
    }
    /* the padding lands past out->len, in room out already has */
    if (n <= DS_EMPTY_PAD)
        memcpy(out->p + out->len, c->empty_cell, DS_EMPTY_PAD);
    else
        memcpy(out->p + out->len, c->empty_cell, n);
    out->len += n;
    return TYPE_OK;
}

/* The room datasource_short_cell needs at w. */
#define DS_SHORT_MAX TYPE_SHORT_MAX
_Static_assert(DS_EMPTY_PAD <= DS_SHORT_MAX, "an empty cell's move fits the short room");

/* datasource_cell's short path, for the per-row loop: column c's cell for v (a scalar
 * type's type_short_cells, or an empty cell of up to DS_EMPTY_PAD bytes) written at w,
 * which has room for DS_SHORT_MAX bytes (all of which it may scribble on). Returns the new
 * end, having written exactly what datasource_cell would; or NULL when datasource_cell
 * must decide (the bytes at w then mean nothing). */
static inline char *datasource_short_cell(const struct ds_column *c, const struct cell *v,
                                          char *w)
{
    if (v->kind == CELL_EMPTY) {
        if (!c->empty_cell || c->empty_len > DS_EMPTY_PAD)
            return NULL;
        memcpy(w, c->empty_cell, DS_EMPTY_PAD);
        return w + c->empty_len;
    }
    if (c->type.array_depth)
        return NULL;
    size_t n = type_short_cells[c->type.kind](&c->type, v, w);
    return n ? w + n : NULL;
}

#endif
