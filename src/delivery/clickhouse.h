/* clickhouse.h -- ClickHouse's HTTP interface as delivery needs it: the server's version,
 * a table's columns, and INSERT ... FORMAT CSV of a gzip'd batch, over keep-alive
 * connections (libcurl), to one or several shards. */
#ifndef NDINGEST_CLICKHOUSE_H
#define NDINGEST_CLICKHOUSE_H

#include <stddef.h>

#include "destination.h"

/* --deliver clickhouse://[HOST[:PORT]][,HOST:PORT...]/DATABASE[?table_suffix=S]
 * (clickhouses:// for HTTPS). Each comma-separated HOST:PORT is one shard; a shard may list
 * replicas separated by '|' (HOST:PORT|HOST:PORT), tried in order. PORT defaults to 8123
 * (8443 for https). table_suffix: the local tables' suffix with a cluster ("_local", as
 * `ndingest schema --cluster` names them). No user or password in the URL: they come from
 * --deliver-credentials, a file whose first line is USER:PASSWORD (the password may hold
 * ':'), never from argv, and they never appear in a log line, an error or a metric. */
struct clickhouse;

struct clickhouse_config {
    const char *url;
    const char *credentials_file; /* NULL: the user "default" without a password */
    unsigned connect_timeout_ms;
    unsigned timeout_ms;          /* a whole request */
    unsigned retry_after_max_ms;  /* the most of a server's Retry-After believed (a wrong
                                   * date must not stall delivery); 0: one hour */
};

/* Parses the URL and reads the credentials; no connection yet. NULL with a message in
 * err for a bad URL or an unreadable credentials file (the message names the file, never
 * its content). */
struct clickhouse *clickhouse_open(const struct clickhouse_config *cfg, char *err,
                                   size_t errlen);
void clickhouse_close(struct clickhouse *ch);

int clickhouse_shards(const struct clickhouse *ch);
const char *clickhouse_database(const struct clickhouse *ch);

/* SELECT version() on the first replica that answers of shard 0: *major, *minor (18, 16).
 * SEND_STORED when known, else the outcome of the failure. */
enum send_result clickhouse_version(struct clickhouse *ch, int *major, int *minor,
                                    struct send_outcome *out);

/* One column of DESCRIBE TABLE. default_kind: "" (a plain column), "DEFAULT",
 * "MATERIALIZED" or "ALIAS" (the last two cannot be named in an INSERT). */
struct clickhouse_column {
    char name[256];
    char type[256];
    char default_kind[16];
};
/* DESCRIBE TABLE db.table(+suffix) on shard: up to max columns into cols, their number in
 * *n. SEND_STORED when read; SEND_TABLE when the table does not exist. */
enum send_result clickhouse_describe(struct clickhouse *ch, int shard, const char *table,
                                     struct clickhouse_column *cols, size_t max, size_t *n,
                                     struct send_outcome *out);

/* Any statement (CREATE TABLE for --deliver-create) on shard. */
enum send_result clickhouse_execute(struct clickhouse *ch, int shard, const char *sql,
                                    struct send_outcome *out);

/* INSERT INTO db.table(+suffix) (columns[0], ...) FORMAT CSV with body[0..len) gzip'd,
 * on shard (each replica in turn until one answers), with insert_deduplicate=1 and, when
 * dedup_token is not NULL (ClickHouse >= 22.2), insert_deduplication_token=dedup_token.
 * The columns are named (the CSV's order, the definition's) so that the table may hold
 * them in another order and have more columns, which take their defaults. The CSV is read
 * as the day files are written: format_csv_allow_single_quotes=0, no errors allowed. The
 * outcome is classified by ClickHouse's error code (Code: N in the body), not the HTTP
 * status. */
enum send_result clickhouse_insert(struct clickhouse *ch, int shard, const char *table,
                                   const char *const *columns, size_t ncolumns,
                                   const char *body, size_t len, const char *dedup_token,
                                   struct send_outcome *out);

/* The classification behind clickhouse_insert, exposed for its tests: an HTTP status
 * (0: no response; curl_error then says why) and a response body. */
enum send_result clickhouse_classify(int http_status, const char *body, size_t len,
                                     int *code);

#endif
