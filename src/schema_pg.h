/* schema_pg.h -- the PostgreSQL side of a dataset: each ClickHouse type's PostgreSQL type,
 * the CREATE TABLE statements `ndingest schema NAME --postgres` prints, and the cursor
 * table delivery keeps in the database (doc/delivery.md, "PostgreSQL"). */
#ifndef NDINGEST_SCHEMA_PG_H
#define NDINGEST_SCHEMA_PG_H

#include <stddef.h>

#include "buf.h"
#include "datasource.h"
#include "types.h"

/* The table where delivery keeps, per (host, dataset), how far the database holds the day
 * files: updated in the transaction of each batch, so that the rows and the cursor commit
 * together. */
#define PG_CURSOR_TABLE "ndingest_delivery"
#define PG_CURSOR_DDL                                                                       \
    "CREATE TABLE IF NOT EXISTS " PG_CURSOR_TABLE " (\n"                                     \
    "    host text NOT NULL,\n"                                                              \
    "    dataset text NOT NULL,\n"                                                           \
    "    file text NOT NULL,\n"                                                              \
    "    \"offset\" bigint NOT NULL,\n"                                                      \
    "    updated_at timestamptz NOT NULL DEFAULT now(),\n"                                   \
    "    PRIMARY KEY (host, dataset)\n"                                                      \
    ")"

/* PostgreSQL's most array dimensions (MAXDIM). */
#define PG_MAX_ARRAY_DEPTH 6

/* Writes t's PostgreSQL type ("numeric(20,0)[]") into dst[0..cap), NUL-terminated, and
 * returns NULL; or returns why PostgreSQL cannot hold every value of t exactly (a static
 * message) and leaves dst undefined. Nullable is not part of the name: the column is NOT
 * NULL or not. */
const char *pg_type(const struct type *t, char *dst, size_t cap);

/* Appends CREATE TABLE "NAME" (the CSV's columns in its order, mapped by pg_type, NOT NULL
 * unless Nullable) and the cursor table's CREATE TABLE IF NOT EXISTS to out, each ending in
 * ";\n". 0; or -1 with "FILE:LINE: message" in err for a type pg_type refuses or a DEFAULT
 * expression (whose empty cell PostgreSQL 15's COPY cannot fill), or "out of memory". */
int schema_postgres(const struct datasource *ds, const char *file, struct buf *out, char *err,
                    size_t errlen);

/* The untyped dataset's table (POST / with --columns): CREATE TABLE "NAME" of n text
 * columns, NOT NULL (delivery sends an empty cell as "", never NULL), and the cursor table,
 * each ending in ";\n", appended to out. 0 or -1 (out of memory). */
int schema_postgres_untyped(const char *name, const char *const *columns, size_t n,
                            struct buf *out);

/* Appends the identifier name[0..len) double-quoted, '"' doubled. 0 or -1 (out of memory). */
int pg_put_ident(struct buf *out, const char *name, size_t len);

#endif
