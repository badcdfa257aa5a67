/* schema.h -- `ndingest schema`: a dataset's columns as a table for people, or the
 * ClickHouse CREATE TABLE statements its day files and its quarantine load into. */
#ifndef NDINGEST_SCHEMA_H
#define NDINGEST_SCHEMA_H

#include <stddef.h>

#include "buf.h"
#include "datasource.h"
#include "options.h"

/* The ClickHouse the SQL is written for: the one the tests load into (doc/datasets.md,
 * section 7). Types it lacks are refused, never mapped to one that reads the CSV differently. */
#define SCHEMA_CLICKHOUSE "ClickHouse 18.16"

/* The table's suffix for the quarantine's CREATE TABLE: NAME_quarantine, as in Tinybird. */
#define SCHEMA_QUARANTINE_TABLE "_quarantine"

/* A cluster's suffix for the table on each shard (NAME_local, NAME_quarantine_local), which
 * the Distributed table NAME reads. */
#define SCHEMA_LOCAL_TABLE "_local"

/* Appends ds's columns to out as aligned text, one line each after a heading: name, type
 * (ClickHouse's spelling), path, DEFAULT as written. 0, or -1 when out cannot grow. */
int schema_describe(const struct datasource *ds, struct buf *out);

/* Appends to out, for ds loaded from file: a SET line when a column is LowCardinality (18.16
 * refuses them in CREATE TABLE without it), then CREATE TABLE `NAME` with the CSV's columns
 * in the CSV's order and CREATE TABLE `NAME_quarantine` with quarantine.h's; each statement
 * ends with ";\n", one blank line between. 0; or -1 with "FILE:LINE: message" in
 * err[0..errlen) for a type or ENGINE that SCHEMA_CLICKHOUSE cannot hold (out's length then
 * undefined), or "out of memory". */
int schema_clickhouse(const struct datasource *ds, const char *file, struct buf *out, char *err,
                      size_t errlen);

/* schema_clickhouse with the tables in database (NULL: unqualified, the client's current
 * database), after CREATE DATABASE IF NOT EXISTS. With a cluster (which needs a database,
 * else -1 with a message), the statements one runs on every server of it: for the dataset
 * and for its quarantine, NAME_local as ReplicatedMergeTree('/clickhouse/tables/{shard}/
 * DB.NAME_local', '{replica}') with the definition's keys, then NAME AS NAME_local with
 * ENGINE = Distributed(cluster, DB, NAME_local, rand()). No ON CLUSTER: 18.16 does not carry
 * the SET line to the other servers, and a server needs no <distributed_ddl> queue. */
int schema_clickhouse_in(const struct datasource *ds, const char *file, const char *database,
                         const char *cluster, struct buf *out, char *err, size_t errlen);

/* The command: loads o->datasets/o->dataset.datasource and prints one of the above on
 * stdout. Returns the exit code: 0, or 2 after a message on stderr (no such dataset, a bad
 * definition as FILE:LINE: message, a type SCHEMA_CLICKHOUSE lacks, an I/O error). */
int schema_run(const struct options *o);

#endif
