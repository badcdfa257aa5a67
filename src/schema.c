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

/* Where the statements put the tables: a database to qualify their names with (or none, the
 * client's current one), and a cluster to spread them over (or none). */
struct target {
    const char *database, *cluster;
};

/* `DB`.`NAMEsuffix`, or `NAMEsuffix` without a database. */
static int put_qualified(struct buf *out, const struct target *to, const char *name,
                         const char *suffix)
{
    return (to->database && (put_ident(out, to->database, strlen(to->database)) ||
                             put(out, "."))) ||
           put_table_name(out, name, suffix);
}

/* The engine, then the ENGINE clauses from the definition's settings in ClickHouse's order,
 * each on a line of its own and the last without its line end. A sorting key is
 * parenthesised, so `a, b` (Tinybird's spelling of a compound key) is one tuple. On a
 * cluster the table is the shard's local one, replicated: ZooKeeper's record of its blocks
 * is what drops a resent identical INSERT (doc/scaling.md, "Delivery into a ClickHouse
 * cluster"). The path names the database, so one cluster holds a dataset per database. */
static int put_engine(const struct datasource *ds, const struct target *to, const char *table,
                      struct buf *out)
{
    static const struct {
        const char *key, *clause;
    } clauses[] = {
        {"ENGINE_PARTITION_KEY", "\nPARTITION BY %s"}, {"ENGINE_SORTING_KEY", "\nORDER BY (%s)"},
        {"ENGINE_PRIMARY_KEY", "\nPRIMARY KEY (%s)"},  {"ENGINE_TTL", "\nTTL %s"},
        {"ENGINE_SETTINGS", "\nSETTINGS %s"},
    };
    if (to->cluster ? putf(out,
                           "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/%s.%s"
                           SCHEMA_LOCAL_TABLE "', '{replica}')",
                           to->database, table)
                    : put(out, "ENGINE = MergeTree"))
        return -1;
    for (size_t i = 0; ds && i < sizeof clauses / sizeof *clauses; i++) {
        const struct ds_setting *s = setting(ds, clauses[i].key);
        if (s && *s->value ? putf(out, clauses[i].clause, s->value)
                           : i == 1 && put(out, "\nORDER BY tuple()"))
            return -1;
    }
    return 0;
}

/* On a cluster: the table NAME for reading all shards, over their NAME_local. Its own
 * INSERTs (not delivery's, which go to one shard's local table) are spread by rand(). */
static int put_distributed(struct buf *out, const struct target *to, const char *name,
                           const char *suffix)
{
    char local[sizeof SCHEMA_QUARANTINE_TABLE + sizeof SCHEMA_LOCAL_TABLE];
    snprintf(local, sizeof local, "%s" SCHEMA_LOCAL_TABLE, suffix);
    return put(out, "\nCREATE TABLE ") || put_qualified(out, to, name, suffix) ||
           put(out, " AS ") || put_qualified(out, to, name, local) || put(out, "\n") ||
           putf(out, "ENGINE = Distributed(%s, %s, %s%s" SCHEMA_LOCAL_TABLE ", rand());\n",
                to->cluster, to->database, name, suffix);
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

/* p[0..n) as an SQL string literal, with escapes that ClickHouse and the .datasource parser
 * both decode, so that the line stays one line and reads back as the same bytes. */
static int put_sql_string(struct buf *out, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (buf_append(out, "'", 1))
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)p[i];
        char esc[4] = {'\\', (char)b, 0, 0};
        size_t len = 2;
        if (b == '\n' || b == '\t' || b == '\r' || b == 0)
            esc[1] = b == '\n' ? 'n' : b == '\t' ? 't' : b == '\r' ? 'r' : '0';
        else if (b < 0x20 || b == 0x7f)
            esc[1] = 'x', esc[2] = hex[b >> 4], esc[3] = hex[b & 15], len = 4;
        else if (b != '\'' && b != '\\')
            len = 0;
        if (len ? buf_append(out, esc, len) : buf_append(out, p + i, 1))
            return -1;
    }
    return buf_append(out, "'", 1);
}

/* A literal DEFAULT as 18.16 is to read it: the text of the cell ndingest writes for it
 * (DateTime in UTC without a zone or fraction, UUID with dashes, numbers as the type
 * keeps them), not the literal as written, which 18.16 may refuse ('...+02:00', a UUID
 * without dashes) or read otherwise. Integers are printed bare; anything else as a string,
 * which ClickHouse CASTs to the column's type with the text readers its CSV input uses
 * (a float literal would go through the SQL parser's own, which rounds apart), and a UUID
 * through toUUID(), since 18.16 cannot CAST a string to Nullable(UUID). */
static int put_default(struct buf *out, const struct ds_column *c)
{
    const char *p = c->default_cell;
    size_t n = c->default_len;
    if (c->default_is_expr) /* check() refuses these; for completeness */
        return putf(out, " DEFAULT %s", c->default_text);
    if (!c->type.array_depth && n == 2 && memcmp(p, "\\N", 2) == 0)
        return put(out, " DEFAULT NULL");
    if (!c->type.array_depth && c->type.kind <= TYPE_UINT256)
        return putf(out, " DEFAULT %.*s", (int)n, p);
    /* a quoted cell: its text without CSV's quotes and doubled quotes */
    struct buf text = {0};
    int rc = 0;
    if (n >= 2 && p[0] == '"') {
        for (size_t i = 1; i + 1 < n && !rc; i++) {
            rc = buf_append(&text, p + i, 1);
            i += p[i] == '"'; /* "" is one quote */
        }
        p = text.p, n = text.len;
    }
    int uuid = !c->type.array_depth && c->type.kind == TYPE_UUID;
    rc = rc || put(out, uuid ? " DEFAULT toUUID(" : " DEFAULT ") || put_sql_string(out, p, n) ||
         (uuid && put(out, ")"));
    buf_free(&text);
    return rc;
}

/* One column's line in a CREATE TABLE, without the separator after it; c NULL for none. */
static int put_column(struct buf *out, const char *name, size_t len, const char *type,
                      const struct ds_column *c)
{
    return put(out, "    ") || put_ident(out, name, len) || putf(out, " %s", type) ||
           (c && c->has_default && put_default(out, c));
}

static int put_tables(const struct datasource *ds, const struct target *to, struct buf *out)
{
    /* A cluster's statements create NAME_local, which its Distributed NAME reads. */
    const char *local = to->cluster ? SCHEMA_LOCAL_TABLE : "";
    char quarantine[sizeof SCHEMA_QUARANTINE_TABLE + sizeof SCHEMA_LOCAL_TABLE];
    snprintf(quarantine, sizeof quarantine, "%s%s", SCHEMA_QUARANTINE_TABLE, local);
    int low_cardinality = 0;
    for (size_t i = 0; i < ds->ncolumns; i++)
        low_cardinality |= ds->columns[i].type.low_cardinality;
    if (low_cardinality && put(out, "SET allow_experimental_low_cardinality_type = 1;\n\n"))
        return -1;
    if (to->database && (put(out, "CREATE DATABASE IF NOT EXISTS ") ||
                         put_ident(out, to->database, strlen(to->database)) || put(out, ";\n\n")))
        return -1;
    if (put(out, "CREATE TABLE ") || put_qualified(out, to, ds->name, local) || put(out, "\n(\n"))
        return -1;
    for (size_t i = 0; i < ds->ncolumns; i++) {
        const struct ds_column *c = &ds->columns[i];
        char type[SCHEMA_TYPE_NAME];
        clickhouse_type(&c->type, type, sizeof type);
        /* A literal DEFAULT is in the cell already and is repeated for rows inserted by
         * other means. */
        if (put_column(out, c->name, c->name_len, type, c) ||
            put(out, i + 1 < ds->ncolumns ? ",\n" : "\n"))
            return -1;
    }
    if (put(out, ")\n") || put_engine(ds, to, ds->name, out) || put(out, ";\n") ||
        (to->cluster && put_distributed(out, to, ds->name, "")) ||
        put(out, "\nCREATE TABLE ") || put_qualified(out, to, ds->name, quarantine) ||
        put(out, "\n(\n"))
        return -1;
    for (int i = 0; i < QUARANTINE_NCOLUMNS; i++) {
        const struct quarantine_column_def *q = &quarantine_columns[i];
        if (put_column(out, q->name, strlen(q->name), q->type, NULL) ||
            put(out, i + 1 < QUARANTINE_NCOLUMNS ? ",\n" : "\n"))
            return -1;
    }
    char qname[DS_MAX_NAME + sizeof SCHEMA_QUARANTINE_TABLE];
    snprintf(qname, sizeof qname, "%s%s", ds->name, SCHEMA_QUARANTINE_TABLE);
    return put(out, ")\n") || put_engine(NULL, to, qname, out) ||
           putf(out, "\nORDER BY %s;\n", quarantine_columns[QUARANTINE_INSERTION_DATE].name) ||
           (to->cluster && put_distributed(out, to, ds->name, SCHEMA_QUARANTINE_TABLE));
}

int schema_clickhouse_in(const struct datasource *ds, const char *file, const char *database,
                         const char *cluster, struct buf *out, char *err, size_t errlen)
{
    const struct target to = {database, cluster};
    if (cluster && !database) {
        snprintf(err, errlen, "a cluster's tables need a database");
        return -1;
    }
    if (check(ds, file, err, errlen))
        return -1;
    if (put_tables(ds, &to, out)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int schema_clickhouse(const struct datasource *ds, const char *file, struct buf *out, char *err,
                      size_t errlen)
{
    return schema_clickhouse_in(ds, file, NULL, NULL, out, err, errlen);
}

/* MARK: - The command */

/* Without --clickhouse-compat 18.16 the cells take current ClickHouse's ranges, and a Date
 * or DateTime past 2105 loads into 18.16 as 0000-00-00 or a wrapped time, with no error:
 * says so for each column that can receive one (a Nullable or an Array of them too). With
 * the option such values are quarantined, and there is nothing to say. */
static void warn_ranges(const struct datasource *ds, const char *file)
{
    if (type_target() == TYPE_TARGET_18_16)
        return;
    for (size_t i = 0; i < ds->ncolumns; i++) {
        const struct ds_column *c = &ds->columns[i];
        if (c->type.kind != TYPE_DATE && c->type.kind != TYPE_DATETIME)
            continue;
        fprintf(stderr, "ndingest schema: warning: %s:%d: column %s: a %s past %s is accepted "
                "and 18.16 loads it as %s without an error; serve and convert with "
                "--clickhouse-compat 18.16 quarantine it\n", file, c->line, c->name,
                c->type.kind == TYPE_DATE ? "Date" : "DateTime",
                c->type.kind == TYPE_DATE ? "2105-12-31" : "2105-12-31 23:59:59",
                c->type.kind == TYPE_DATE ? "0000-00-00" : "0 or a wrapped time");
    }
}

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
             : o->clickhouse ? schema_clickhouse_in(ds, path, o->database, o->cluster, &out, err,
                                                    sizeof err)
             : o->postgres   ? schema_postgres(ds, path, &out, err, sizeof err)
                             : schema_describe(ds, &out);
    if (!rc && o->clickhouse)
        warn_ranges(ds, path);
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
