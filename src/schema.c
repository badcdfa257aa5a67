/* schema.c -- `ndingest schema`: a dataset's columns for people, or the CREATE TABLE
 * statements for ClickHouse 18.16 that its day files and its quarantine load into. */
#include "schema.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "quarantine.h"
#include "schema_pg.h"

/* Room for any type's name: TYPE_MAX_ARRAY_DEPTH wrappers and the longest scalar. */
#define SCHEMA_TYPE_NAME 256

static int put(struct buf *out, const char *s)
{
    return buf_append(out, s, strlen(s));
}

/* Formats straight into out: DEFAULTs and keys are as long as their definition makes them. */
__attribute__((format(printf, 2, 3)))
static int putf(struct buf *out, const char *fmt, ...)
{
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    int rc = n < 0 || buf_reserve(out, (size_t)n + 1) ? -1 : 0;
    if (!rc) {
        vsnprintf(out->p + out->len, (size_t)n + 1, fmt, again);
        out->len += (size_t)n;
    }
    va_end(again);
    va_end(ap);
    return rc;
}

/* MARK: - For people */

static int pad(struct buf *out, size_t n)
{
    for (; n; n--)
        if (buf_append(out, " ", 1))
            return -1;
    return 0;
}

int schema_describe(const struct datasource *ds, struct buf *out)
{
    enum { NCELLS = 4 };
    static const char *const heading[NCELLS] = {"column", "type", "path", "default"};
    char type[DS_MAX_COLUMNS][SCHEMA_TYPE_NAME];
    size_t width[NCELLS];
    for (int k = 0; k < NCELLS; k++)
        width[k] = strlen(heading[k]);
    for (size_t i = 0; i < ds->ncolumns; i++) {
        const struct ds_column *c = &ds->columns[i];
        size_t len[NCELLS] = {c->name_len, type_name(&c->type, type[i], sizeof type[i]),
                              strlen(c->path), c->default_text ? strlen(c->default_text) : 0};
        for (int k = 0; k < NCELLS; k++)
            if (len[k] > width[k])
                width[k] = len[k];
    }
    for (size_t i = 0; i <= ds->ncolumns; i++) {
        const struct ds_column *c = i ? &ds->columns[i - 1] : NULL;
        const char *cell[NCELLS] = {heading[0], heading[1], heading[2], heading[3]};
        size_t len[NCELLS];
        if (c) {
            cell[0] = c->name, cell[1] = type[i - 1], cell[2] = c->path;
            cell[3] = c->default_text ? c->default_text : "";
        }
        for (int k = 0; k < NCELLS; k++)
            len[k] = k == 0 && c ? c->name_len : strlen(cell[k]);
        int last = len[3] ? 3 : 2; /* no blanks at the end of a line */
        for (int k = 0; k <= last; k++) {
            if (buf_append(out, cell[k], len[k]) ||
                (k < last && pad(out, width[k] - len[k] + 2)))
                return -1;
        }
        if (buf_append(out, "\n", 1))
            return -1;
    }
    return 0;
}

/* MARK: - For ClickHouse 18.16 */

/* Why 18.16 cannot hold the scalar kind in a table the CSV loads into, or NULL. Bool is
 * refused rather than mapped to UInt8: the CSV says true/false, which 18.16's UInt8
 * refuses (doc/datasets.md, section 7). */
static const char *missing_in_clickhouse(const struct type *t)
{
    switch (t->kind) {
    case TYPE_INT128: case TYPE_INT256: case TYPE_UINT128: case TYPE_UINT256:
        return "has no 128- or 256-bit integers";
    case TYPE_DECIMAL:
        return t->precision > 38 ? "has no Decimal wider than 38 digits" : NULL;
    case TYPE_BOOL:
        return "has no Bool, and its UInt8 does not read the CSV's true/false: declare the "
               "column UInt8 and send 0 or 1";
    case TYPE_DATE32:
        return "has no Date32";
    case TYPE_DATETIME64:
        return "has no DateTime64";
    default:
        return NULL;
    }
}

/* The type as 18.16 is to declare it: as written, but DateTime in UTC, since the cells are
 * UTC times without a zone and the server's own zone may be another. */
static void clickhouse_type(const struct type *t, char *dst, size_t cap)
{
    struct type scalar = {.kind = t->kind, .precision = t->precision, .scale = t->scale};
    char inner[64];
    if (t->kind == TYPE_DATETIME)
        snprintf(inner, sizeof inner, "DateTime('UTC')");
    else
        type_name(&scalar, inner, sizeof inner);
    size_t o = 0;
    for (unsigned d = 0; d < t->array_depth && o < cap; d++)
        o += (size_t)snprintf(dst + o, cap - o, "Array(");
    if (o < cap)
        o += (size_t)snprintf(dst + o, cap - o, "%s%s%s%s%s", t->low_cardinality ? "LowCardinality(" : "",
                              t->nullable ? "Nullable(" : "", inner, t->nullable ? ")" : "",
                              t->low_cardinality ? ")" : "");
    for (unsigned d = 0; d < t->array_depth && o < cap; d++)
        o += (size_t)snprintf(dst + o, cap - o, ")");
}

/* `name` with ClickHouse's backslash escapes for the bytes that need them in backquotes. */
static int put_ident(struct buf *out, const char *name, size_t len)
{
    if (buf_append(out, "`", 1))
        return -1;
    for (size_t i = 0; i < len; i++) {
        if ((name[i] == '\\' || name[i] == '`') && buf_append(out, "\\", 1))
            return -1;
        if (buf_append(out, name + i, 1))
            return -1;
    }
    return buf_append(out, "`", 1);
}

static int put_table_name(struct buf *out, const char *name, const char *suffix)
{
    char full[DS_MAX_NAME + sizeof SCHEMA_QUARANTINE_TABLE];
    int n = snprintf(full, sizeof full, "%s%s", name, suffix);
    return n < 0 || (size_t)n >= sizeof full ? -1 : put_ident(out, full, (size_t)n);
}

static const struct ds_setting *setting(const struct datasource *ds, const char *key)
{
    for (size_t i = 0; i < ds->nsettings; i++)
        if (strcmp(ds->settings[i].key, key) == 0)
            return &ds->settings[i];
    return NULL;
}

/* The ENGINE clauses from the definition's settings, in ClickHouse's order, each on a line
 * of its own and the last without its line end. A sorting key is parenthesised, so `a, b`
 * (Tinybird's spelling of a compound key) is one tuple. */
static int put_engine(const struct datasource *ds, struct buf *out)
{
    static const struct {
        const char *key, *clause;
    } clauses[] = {
        {"ENGINE_PARTITION_KEY", "\nPARTITION BY %s"}, {"ENGINE_SORTING_KEY", "\nORDER BY (%s)"},
        {"ENGINE_PRIMARY_KEY", "\nPRIMARY KEY (%s)"},  {"ENGINE_TTL", "\nTTL %s"},
        {"ENGINE_SETTINGS", "\nSETTINGS %s"},
    };
    if (put(out, "ENGINE = MergeTree"))
        return -1;
    for (size_t i = 0; i < sizeof clauses / sizeof *clauses; i++) {
        const struct ds_setting *s = setting(ds, clauses[i].key);
        if (s && *s->value ? putf(out, clauses[i].clause, s->value)
                           : i == 1 && put(out, "\nORDER BY tuple()"))
            return -1;
    }
    return 0;
}

__attribute__((format(printf, 5, 6)))
static int fail(char *err, size_t errlen, const char *file, int line, const char *fmt, ...)
{
    int n = snprintf(err, errlen, "%s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < errlen)
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    return -1;
}

/* What 18.16 cannot create, refused before anything is written. */
static int check(const struct datasource *ds, const char *file, char *err, size_t errlen)
{
    for (size_t i = 0; i < ds->ncolumns; i++) {
        const struct ds_column *c = &ds->columns[i];
        const char *why = missing_in_clickhouse(&c->type);
        if (why)
            return fail(err, errlen, file, c->line, "column `%s` %s: " SCHEMA_CLICKHOUSE " %s",
                        c->name, c->type_text, why);
        /* The writer leaves a DEFAULT expression's cell empty for the server to fill, which
         * needs input_format_csv_empty_as_default: 18.16 has no such setting and refuses the
         * empty DateTime (or reads 0 for a number), failing or corrupting the load. */
        if (c->default_is_expr)
            return fail(err, errlen, file, c->line,
                        "column `%s` DEFAULT %s: " SCHEMA_CLICKHOUSE " cannot fill the empty cell "
                        "a DEFAULT expression leaves (it has no input_format_csv_empty_as_default): "
                        "use a literal DEFAULT",
                        c->name, c->default_text);
    }
    const struct ds_setting *engine = setting(ds, "ENGINE");
    if (engine && strcmp(engine->value, "MergeTree") != 0)
        return fail(err, errlen, file, engine->line,
                    "ENGINE %s: schema --clickhouse writes MergeTree tables only", engine->value);
    return 0;
}

/* One column's line in a CREATE TABLE, without the separator after it. */
static int put_column(struct buf *out, const char *name, size_t len, const char *type,
                      const char *dflt)
{
    return put(out, "    ") || put_ident(out, name, len) || putf(out, " %s", type) ||
           (dflt && putf(out, " DEFAULT %s", dflt));
}

static int put_tables(const struct datasource *ds, struct buf *out)
{
    int low_cardinality = 0;
    for (size_t i = 0; i < ds->ncolumns; i++)
        low_cardinality |= ds->columns[i].type.low_cardinality;
    if (low_cardinality && put(out, "SET allow_experimental_low_cardinality_type = 1;\n\n"))
        return -1;
    if (put(out, "CREATE TABLE ") || put_table_name(out, ds->name, "") || put(out, "\n(\n"))
        return -1;
    for (size_t i = 0; i < ds->ncolumns; i++) {
        const struct ds_column *c = &ds->columns[i];
        char type[SCHEMA_TYPE_NAME];
        clickhouse_type(&c->type, type, sizeof type);
        /* A DEFAULT expression's cell is empty and ClickHouse fills it from here; a literal
         * is in the cell already and is repeated for rows inserted by other means. */
        if (put_column(out, c->name, c->name_len, type, c->default_text) ||
            put(out, i + 1 < ds->ncolumns ? ",\n" : "\n"))
            return -1;
    }
    if (put(out, ")\n") || put_engine(ds, out) || put(out, ";\n\nCREATE TABLE ") ||
        put_table_name(out, ds->name, SCHEMA_QUARANTINE_TABLE) || put(out, "\n(\n"))
        return -1;
    for (int i = 0; i < QUARANTINE_NCOLUMNS; i++) {
        const struct quarantine_column_def *q = &quarantine_columns[i];
        if (put_column(out, q->name, strlen(q->name), q->type, NULL) ||
            put(out, i + 1 < QUARANTINE_NCOLUMNS ? ",\n" : "\n"))
            return -1;
    }
    return putf(out, ")\nENGINE = MergeTree\nORDER BY %s;\n",
                quarantine_columns[QUARANTINE_INSERTION_DATE].name);
}

int schema_clickhouse(const struct datasource *ds, const char *file, struct buf *out, char *err,
                      size_t errlen)
{
    if (check(ds, file, err, errlen))
        return -1;
    if (put_tables(ds, out)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* MARK: - The command */

int schema_run(const struct options *o)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s.datasource", o->datasets, o->dataset);
    if (n < 0 || (size_t)n >= sizeof path) {
        fprintf(stderr, "ndingest schema: %s/%s.datasource: path too long\n", o->datasets,
                o->dataset);
        return 2;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "ndingest schema: no dataset '%s' in %s (%s: %s)\n", o->dataset,
                o->datasets, path, strerror(errno));
        return 2;
    }
    char err[1024];
    struct datasource *ds = datasource_load(path, err, sizeof err);
    if (!ds) {
        fprintf(stderr, "ndingest schema: %s\n", err);
        return 2;
    }
    struct buf out = {0};
    int rc = o->clickhouse && o->postgres
                 ? (snprintf(err, sizeof err, "--clickhouse and --postgres: choose one"), -1)
             : o->clickhouse ? schema_clickhouse(ds, path, &out, err, sizeof err)
             : o->postgres   ? schema_postgres(ds, path, &out, err, sizeof err)
                             : schema_describe(ds, &out);
    if (rc) {
        fprintf(stderr, "ndingest schema: %s\n",
                o->clickhouse || o->postgres ? err : "out of memory");
    } else if (fwrite(out.p, 1, out.len, stdout) != out.len || fflush(stdout) != 0) {
        fprintf(stderr, "ndingest schema: stdout: %s\n", strerror(errno));
        rc = -1;
    }
    buf_free(&out);
    datasource_free(ds);
    return rc ? 2 : 0;
}
