/* schema_pg.c -- ClickHouse types as PostgreSQL types, and the CREATE TABLE statements a
 * dataset's rows are delivered into in PostgreSQL. */
#include "schema_pg.h"

#include <stdio.h>
#include <string.h>

/* The scalar's name, or NULL with *why. Every mapping holds every value the type accepts,
 * exactly: unsigned types go one size up (PostgreSQL has no unsigned integers), the 64- to
 * 256-bit ones to numeric with room for their largest value's digits. */
static const char *pg_scalar(const struct type *t, char *tmp, size_t cap, const char **why)
{
    switch ((enum type_kind)t->kind) {
    case TYPE_INT8: case TYPE_INT16: case TYPE_UINT8: return "smallint";
    case TYPE_INT32: case TYPE_UINT16: return "integer";
    case TYPE_INT64: case TYPE_UINT32: return "bigint";
    case TYPE_UINT64: return "numeric(20,0)";
    case TYPE_INT128: case TYPE_UINT128: return "numeric(39,0)";
    case TYPE_INT256: return "numeric(77,0)";
    case TYPE_UINT256: return "numeric(78,0)";
    case TYPE_FLOAT32: return "real";
    case TYPE_FLOAT64: return "double precision";
    case TYPE_DECIMAL:
        snprintf(tmp, cap, "numeric(%u,%u)", t->precision, t->scale);
        return tmp;
    case TYPE_STRING: return "text";
    case TYPE_BOOL: return "boolean";
    case TYPE_DATE: case TYPE_DATE32: return "date";
    case TYPE_DATETIME: return "timestamptz";
    case TYPE_DATETIME64:
        /* PostgreSQL keeps microseconds: a seventh digit would be rounded away. */
        if (t->precision > 6) {
            *why = "has no faithful PostgreSQL type: timestamptz keeps microseconds, the "
                   "7th to 9th fraction digits would be rounded";
            return NULL;
        }
        snprintf(tmp, cap, "timestamptz(%u)", t->precision);
        return tmp;
    case TYPE_UUID: return "uuid";
    }
    *why = "has no PostgreSQL type";
    return NULL;
}

const char *pg_type(const struct type *t, char *dst, size_t cap)
{
    const char *why = NULL;
    char tmp[32];
    if (t->array_depth > PG_MAX_ARRAY_DEPTH)
        return "has no faithful PostgreSQL type: PostgreSQL arrays have at most 6 dimensions";
    const char *s = pg_scalar(t, tmp, sizeof tmp, &why);
    if (!s)
        return why;
    size_t o = (size_t)snprintf(dst, cap, "%s", s);
    for (unsigned d = 0; d < t->array_depth && o < cap; d++)
        o += (size_t)snprintf(dst + o, cap - o, "[]");
    return o < cap ? NULL : "type name too long";
}

int pg_put_ident(struct buf *out, const char *name, size_t len)
{
    if (buf_append(out, "\"", 1))
        return -1;
    for (size_t i = 0; i < len; i++)
        if ((name[i] == '"' && buf_append(out, "\"", 1)) || buf_append(out, name + i, 1))
            return -1;
    return buf_append(out, "\"", 1);
}

static int put(struct buf *out, const char *s)
{
    return buf_append(out, s, strlen(s));
}

int schema_postgres(const struct datasource *ds, const char *file, struct buf *out, char *err,
                    size_t errlen)
{
    char type[DS_MAX_COLUMNS][64];
    for (size_t i = 0; i < ds->ncolumns; i++) {
        const struct ds_column *c = &ds->columns[i];
        const char *why = pg_type(&c->type, type[i], sizeof type[i]);
        if (why) {
            snprintf(err, errlen, "%s:%d: column \"%s\" %s %s", file, c->line, c->name,
                     c->type_text, why);
            return -1;
        }
        /* The writer leaves a DEFAULT expression's cell empty for ClickHouse to fill;
         * PostgreSQL 15's COPY reads an empty field as NULL and has no DEFAULT marker. */
        if (c->default_is_expr) {
            snprintf(err, errlen,
                     "%s:%d: column \"%s\" DEFAULT %s: PostgreSQL 15's COPY cannot fill the "
                     "empty cell a DEFAULT expression leaves: use a literal DEFAULT",
                     file, c->line, c->name, c->default_text);
            return -1;
        }
    }
    /* No DEFAULT clause: a DEFAULT literal is in the cell already, and its ClickHouse
     * spelling ('a\'b', [1,2]) is not PostgreSQL's. */
    int rc = put(out, "CREATE TABLE ") || pg_put_ident(out, ds->name, strlen(ds->name)) ||
             put(out, " (\n");
    for (size_t i = 0; !rc && i < ds->ncolumns; i++) {
        const struct ds_column *c = &ds->columns[i];
        rc = put(out, "    ") || pg_put_ident(out, c->name, c->name_len) || put(out, " ") ||
             put(out, type[i]) ||
             put(out, c->type.nullable && !c->type.array_depth ? "" : " NOT NULL") ||
             put(out, i + 1 < ds->ncolumns ? ",\n" : "\n");
    }
    rc = rc || put(out, ");\n\n" PG_CURSOR_DDL ";\n");
    if (rc)
        snprintf(err, errlen, "out of memory");
    return rc ? -1 : 0;
}

int schema_postgres_untyped(const char *name, const char *const *columns, size_t n,
                            struct buf *out)
{
    int rc = put(out, "CREATE TABLE ") || pg_put_ident(out, name, strlen(name)) ||
             put(out, " (\n");
    for (size_t i = 0; !rc && i < n; i++)
        rc = put(out, "    ") || pg_put_ident(out, columns[i], strlen(columns[i])) ||
             put(out, " text NOT NULL") || put(out, i + 1 < n ? ",\n" : "\n");
    return rc || put(out, ");\n\n" PG_CURSOR_DDL ";\n") ? -1 : 0;
}
