/* options.c -- the command line: one table of options drives parsing, defaults and --help. */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef NDINGEST_VERSION
#define NDINGEST_VERSION "1.0.0"
#endif

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)

static unsigned long default_workers(void);
static int parse_name(struct options *o, const char *arg);
static int parse_fsync(struct options *o, const char *arg);
static int parse_default_dataset(struct options *o, const char *arg);
static int parse_clickhouse_compat(struct options *o, const char *arg);
static int print_help(struct options *o, const char *arg);
static int print_version(struct options *o, const char *arg);

#define FIELD(f) .offset = offsetof(struct options, f), .size = sizeof(((struct options *)0)->f)
/* Member names cannot take parentheses; every other argument is a value. */
#define ROW_FLAG(n, f) .name = (n), .kind = OPTION_FLAG, FIELD(f)
#define ROW_UINT(n, a, f, lo, hi, d) .name = (n), .kind = OPTION_UINT, .arg = (a), FIELD(f), \
    .min = (lo), .max = (hi), .dflt = (d)
#define ROW_SECONDS(n, f, lo, hi, d) .name = (n), .kind = OPTION_SECONDS, .arg = "SEC", FIELD(f), \
    .min = (lo), .max = (hi), .dflt = (d)
#define ROW_SIZE(n, f, lo, hi, d) .name = (n), .kind = OPTION_SIZE, .arg = "SIZE", FIELD(f), \
    .min = (lo), .max = (hi), .dflt = (d)
#define ROW_STRING(n, a, f, d) .name = (n), .kind = OPTION_STRING, .arg = (a), FIELD(f), \
    .dflt_text = (d)
#define ROW_FILE(n, a, f) .name = (n), .kind = OPTION_FILE, .arg = (a), FIELD(f)
#define ROW_CUSTOM(n, a, fn, d) .name = (n), .kind = OPTION_CUSTOM, .arg = (a), .parse = (fn), \
    .dflt_text = (d)
#define ROW_ACTION(n, fn) .name = (n), .kind = OPTION_ACTION, .parse = (fn)

/* Every option, in --help order. Adding one: a row here and its field in struct options. */
static const struct option_row rows[] = {
    {ROW_STRING("listen", "ADDR:PORT", listen, "127.0.0.1:8888"), .note = "IPv6 as [::1]:8888",
     .help = "address to serve on"},
    {ROW_UINT("workers", "N", workers, 0, OPTIONS_MAX_WORKERS, 0), .dflt_fn = default_workers,
     .dflt_text = "CPUs available", .zero = "no fork", .help = "worker processes"},
    {ROW_STRING("out-dir", "DIR", out_dir, "csv"), .deliver = 1,
     .help = "output directory, created if missing"},
    {ROW_CUSTOM("name", "NAME", parse_name, "nyc_taxi"), .deliver = 1,
     .help = "file name prefix (not with --datasets)"},
    {ROW_FLAG("utc", utc), .deliver = 1, .help = "date files by UTC instead of local time"},
    {ROW_STRING("columns", "a,b,c", columns_list, OPTIONS_DEFAULT_COLUMNS), .convert = 1,
     .deliver = 1,
     .help = "top-level keys to write, in order (not with --datasets or --datasource)"},
    {ROW_FLAG("header", header), .convert = 1, .deliver = 1,
     .help = "start each day's file with a header row"},
    {ROW_FLAG("crlf", crlf), .convert = 1, .help = "end rows with CRLF (RFC 4180) instead of LF"},
    {ROW_SIZE("max-line", max_line, 1, 2 * GiB, 1 * MiB), .convert = 1,
     .help = "longer lines are invalid"},
    {ROW_SIZE("max-body", max_body, 0, UINT64_MAX, 0), .zero = "unlimited",
     .help = "larger bodies get 413"},
    {ROW_SECONDS("timeout", timeout, 1, 86400, 60), .help = "idle read timeout per connection"},
    {ROW_SECONDS("header-timeout", header_timeout, 1, 86400, 10),
     .help = "request line and headers must arrive within it"},
    {ROW_SECONDS("body-timeout", body_timeout, 1, 86400, 300),
     .help = "a body must arrive within it after its headers"},
    {ROW_SIZE("max-header", max_header, 256, 1 * GiB, 64 * KiB),
     .help = "larger request line + headers get 431"},
    {ROW_UINT("max-headers", "N", max_headers, 1, 100000, 100),
     .help = "more header fields get 431"},
    {ROW_SIZE("max-path", max_path, 16, 64 * KiB, 1 * KiB),
     .help = "a longer request target path gets 414 (the query is not counted)"},
    {ROW_UINT("max-connections", "N", max_connections, 1, 1000000, 4096),
     .help = "per worker; more get 503 and are closed"},
    {ROW_SIZE("max-inflate", max_inflate, 0, UINT64_MAX, 1 * GiB), .zero = "unlimited",
     .help = "a compressed body inflating past it gets 413"},
    {ROW_UINT("max-ratio", "N", max_ratio, 0, 1000000000, 1000), .zero = "unlimited",
     .help = "a compressed body inflating more than N times gets 413"},
    {ROW_SIZE("max-quarantine", max_quarantine, 0, UINT64_MAX, 256 * MiB), .zero = "unlimited",
     .help = "bytes of refused lines one body may keep in the quarantine; past it they are "
             "counted (reason full), not kept"},
    {ROW_SIZE("max-quarantine-day", max_quarantine_day, 0, UINT64_MAX, 64 * GiB),
     .zero = "unlimited",
     .help = "a day's quarantine file keeps no more refused lines once this large (per "
             "dataset; judged by its size at each body's first refused line)"},
    {ROW_FILE("access-log", "FILE", access_log), .help = "append one line per request to FILE"},
    {ROW_FILE("token-file", "F", token_file),
     .help = "POST / and GET /metrics need Authorization: Bearer <F's first line>"},
    {ROW_UINT("max-tokens", "N", max_tokens, 1, 4096, 64),
     .help = "with --datasets: the most tokens --token-file may hold (and N x 4K bytes)"},
    {ROW_CUSTOM("fsync", "MODE", parse_fsync, "none"),
     .help = "none, request (fdatasync before each 200, group-committed) or interval:MS "
             "(fdatasync dirty files every MS milliseconds)"},
    {ROW_UINT("idempotency-keys", "N", idempotency_keys, 1, 1u << 30, 1u << 20),
     .help = "Idempotency-Key: the most keys remembered at once (the oldest answered ones are "
             "evicted; ~72 bytes of shared memory each, taken as used)"},
    {ROW_SECONDS("idempotency-window", idempotency_window, 1, 30 * 86400, 86400),
     .help = "Idempotency-Key: how long an answered key is replayed (a later retry is new)"},
    {ROW_SIZE("max-idempotency-key", max_idempotency_key, 1, 4 * KiB, 256),
     .help = "a longer Idempotency-Key (once unescaped) gets 400"},
    {ROW_UINT("inflight-ranges", "N", inflight_ranges, 2, 1u << 20, 4096),
     .help = "per worker: the most day-file ranges written by requests not yet answered "
             "(32 bytes of shared memory each); a request that needs more gets 503"},
    {ROW_FLAG("quiet", quiet), .deliver = 1,
     .help = "no informational lines on stderr (errors still)"},
    {ROW_SECONDS("status", status, 0, 3600, 2), .zero = "off",
     .note = "not with --quiet or --workers 0",
     .help = "when stderr is a terminal, a live line of rows/s, MB/s, connections and "
             "requests/s every SEC seconds"},
    {ROW_FLAG("no-quarantine", quarantine), .dflt = 1,
     .help = "do not keep invalid lines in DIR/NAME-YYYY-MM-DD.invalid.ndjson"},
    {ROW_FLAG("reuseport", reuseport),
     .help = "one SO_REUSEPORT socket per worker instead of one shared socket"},
    {ROW_FILE("datasource", "FILE", datasource), .convert = 1, .convert_only = 1,
     .help = "convert: typed rows by the dataset definition FILE (doc/datasets.md) instead of "
             "--columns"},
    {ROW_FILE("quarantine-file", "F", quarantine_file), .convert = 1, .convert_only = 1,
     .help = "convert: write refused lines to F (quarantine rows with --datasource, else "
             "raw), truncating it first"},
    {ROW_STRING("datasets", "DIR", datasets, NULL), .deliver = 1, .schema = 1,
     .help = "serve every DIR/NAME.datasource at POST /v0/events?name=NAME (schema: where "
             "NAME.datasource is)"},
    {ROW_CUSTOM("default-dataset", "NAME", parse_default_dataset, NULL),
     .help = "with --datasets: the dataset POST / appends to (without it POST / gets 404)"},
    {ROW_UINT("max-datasets", "N", max_datasets, 1, 4096, 64), .deliver = 1,
     .help = "with --datasets: the most definitions loaded at once (a larger set is refused)"},
    {ROW_FLAG("clickhouse", clickhouse), .schema = 1, .schema_only = 1,
     .help = "schema: print CREATE TABLE statements for the dataset and its quarantine"},
    {ROW_CUSTOM("clickhouse-compat", "VERSION", parse_clickhouse_compat, "current"), .convert = 1,
     .schema = 1,
     .help = "the ClickHouse the cells are for: current, or 18.16 (Date and DateTime past "
             "2105-12-31 are quarantined as out of range)"},
    {ROW_STRING("database", "DB", database, NULL), .schema = 1, .schema_only = 1,
     .help = "schema --clickhouse: create the tables in database DB (CREATE DATABASE IF NOT "
             "EXISTS first)"},
    {ROW_STRING("cluster", "NAME", cluster, NULL), .schema = 1, .schema_only = 1,
     .help = "schema --clickhouse --database DB: for each server of the cluster NAME, "
             "ReplicatedMergeTree tables NAME_local and Distributed tables over them"},
    {ROW_STRING("deliver", "URL", deliver, NULL), .deliver = 1,
     .help = "deliver the day files' rows to this database (clickhouse://HOST:PORT/DB or "
             "postgresql://USER@HOST:PORT/DB; doc/delivery.md), by a process the main process supervises"},
    {ROW_FILE("deliver-credentials", "FILE", deliver_credentials), .deliver = 1,
     .help = "the destination's USER:PASSWORD, on FILE's first line"},
    {ROW_SIZE("deliver-batch", deliver_batch, 1, 1 * GiB, 8 * MiB), .deliver = 1,
     .help = "a batch is sent when its rows reach SIZE bytes (a longer row goes alone)"},
    {ROW_UINT("deliver-interval", "MS", deliver_interval, 1, 3600000, 1000), .deliver = 1,
     .help = "...or when its oldest row has waited MS milliseconds"},
    {ROW_SECONDS("deliver-grace", deliver_grace, 0, 86400, 10), .deliver = 1,
     .help = "a day's file is finished (its torn tail recorded, the next file begun) this "
             "long after its day ends"},
    {ROW_SECONDS("deliver-timeout", deliver_timeout, 1, 86400, 60), .deliver = 1,
     .help = "one request to the destination must complete within it, else it is retried "
             "(PostgreSQL: the session's statement_timeout, lock_timeout and "
             "idle_in_transaction_session_timeout)"},
    {ROW_SECONDS("deliver-retry-max", deliver_retry_max, 1, 86400, 30), .deliver = 1,
     .help = "the longest wait between two tries of a batch (exponential backoff, jittered)"},
    {ROW_FLAG("deliver-create", deliver_create), .deliver = 1,
     .help = "create a dataset's table in the destination when it is missing"},
    {ROW_SIZE("deliver-max-lag", deliver_max_lag, 0, UINT64_MAX, 16 * GiB), .zero = "never",
     .help = "while more bytes than this wait for delivery, new bodies get 503 with "
             "Retry-After and nothing is written"},
    {ROW_SIZE("min-free", min_free, 0, UINT64_MAX, 100 * MiB), .zero = "never",
     .help = "while the output directory's filesystem has less free space than this, new "
             "bodies get 503 with Retry-After and nothing is written"},
    {ROW_STRING("host-id", "NAME", host_id, NULL), .deliver = 1, .note = "the host name",
     .help = "this host's name in every batch's identity (several hosts into one database)"},
    {ROW_FLAG("postgres", postgres), .schema = 1, .schema_only = 1,
     .help = "schema: print CREATE TABLE statements for the dataset in PostgreSQL and for "
             "delivery's cursor table"},
    {ROW_ACTION("help", print_help), .short_name = 'h', .convert = 1, .schema = 1, .deliver = 1,
     .help = "this help"},
    {ROW_ACTION("version", print_version), .convert = 1, .help = "print the version"},
};

#define NROWS (sizeof rows / sizeof *rows)

const struct option_row *options_table(size_t *count)
{
    *count = NROWS;
    return rows;
}

int parse_size(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'B' || *end == 'b') /* "1MiB", "1MB" read as binary too */
        end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

/* A whole number from min to max, digits only (no sign, no space). 0, or -1. */
static int parse_number(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* "1G", "64K", "256": the shortest exact spelling, as --help and errors show sizes. */
static void format_size(uint64_t v, char *out, size_t len)
{
    static const char units[] = "GMK";
    for (int i = 0; i < 3; i++) {
        unsigned shift = 30 - 10 * (unsigned)i;
        if (v && v % ((uint64_t)1 << shift) == 0) {
            snprintf(out, len, "%llu%c", (unsigned long long)(v >> shift), units[i]);
            return;
        }
    }
    snprintf(out, len, "%llu", (unsigned long long)v);
}

static void *field(struct options *o, const struct option_row *r)
{
    return (char *)o + r->offset;
}

/* Numbers go through memcpy by the field's size: int, unsigned, size_t or uint64_t, the
 * row's max (at most INT_MAX for 4-byte fields, checked by the unit test) fitting each. */
static void store_number(struct options *o, const struct option_row *r, uint64_t v)
{
    if (r->size == sizeof(uint64_t)) {
        memcpy(field(o, r), &v, sizeof v);
    } else {
        unsigned u = (unsigned)v;
        memcpy(field(o, r), &u, sizeof u);
    }
}

static void store_text(struct options *o, const struct option_row *r, const char *s)
{
    memcpy(field(o, r), &s, sizeof s);
}

static unsigned long default_workers(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned long)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned long)n : 1;
}

/* The default as --help shows it into buf, or NULL when the row has none to show. */
static const char *default_text(const struct option_row *r, char *buf, size_t len)
{
    switch (r->kind) {
    case OPTION_UINT:
    case OPTION_SECONDS:
    case OPTION_SIZE:
        if (r->dflt_text)
            return r->dflt_text;
        if (r->dflt == 0 && r->zero)
            return r->zero;
        if (r->kind == OPTION_SIZE)
            format_size(r->dflt, buf, len);
        else
            snprintf(buf, len, "%llu", (unsigned long long)r->dflt);
        return buf;
    case OPTION_STRING:
    case OPTION_FILE:
    case OPTION_CUSTOM:
        return r->dflt_text;
    case OPTION_FLAG:
    case OPTION_ACTION:
        break;
    }
    return NULL;
}

enum { USAGE_INDENT = 23, USAGE_WIDTH = 79 };

/* Writes len bytes of w at *col after a space, or on a new indented line when they would
 * pass the width. */
static void usage_word(FILE *f, int *col, const char *w, int len)
{
    if (*col > USAGE_INDENT && *col + 1 + len > USAGE_WIDTH) {
        fprintf(f, "\n%*s", USAGE_INDENT, "");
        *col = USAGE_INDENT;
    } else {
        fputc(' ', f);
        ++*col;
    }
    fwrite(w, 1, (size_t)len, f);
    *col += len;
}

/* "--name ARG", or "--name" for rows without a value. */
static void spelling(const struct option_row *r, char *out, size_t len)
{
    snprintf(out, len, "--%s%s%s", r->name, r->arg ? " " : "", r->arg ? r->arg : "");
}

/* "  --name ARG", the help wrapped under column 23, then "(default ...)" kept whole. */
static void usage_row(FILE *f, const struct option_row *r)
{
    char name[64], left[72], dflt[32], tail[256];
    spelling(r, name, sizeof name);
    if (r->short_name)
        snprintf(left, sizeof left, "  -%c, %s", r->short_name, name);
    else
        snprintf(left, sizeof left, "  %s", name);
    int col = fprintf(f, "%-*s", USAGE_INDENT - 1, left);
    if (col > USAGE_INDENT - 1) { /* too wide: the help starts on the next line */
        fprintf(f, "\n%*s", USAGE_INDENT - 1, "");
        col = USAGE_INDENT - 1;
    }
    for (const char *w = r->help; *w; w += strspn(w, " ")) {
        int len = (int)strcspn(w, " ");
        usage_word(f, &col, w, len);
        w += len;
    }
    const char *d = default_text(r, dflt, sizeof dflt);
    if (d) {
        int with_zero = r->zero && d != r->zero;
        int len = snprintf(tail, sizeof tail, "(default %s%s%s%s%s)", d,
                           with_zero ? "; 0 = " : "", with_zero ? r->zero : "",
                           r->note ? "; " : "", r->note ? r->note : "");
        usage_word(f, &col, tail, len < (int)sizeof tail ? len : (int)sizeof tail - 1);
    }
    fputc('\n', f);
}

static void usage(FILE *f)
{
    fputs("usage: ndingest [serve] [options]\n       ndingest convert", f);
    for (size_t i = 0; i < NROWS; i++) {
        char name[64];
        spelling(&rows[i], name, sizeof name);
        if (rows[i].convert && rows[i].kind != OPTION_ACTION)
            fprintf(f, " [%s]", name);
    }
    fputs(" [FILE ...]\n"
          "       ndingest schema NAME --datasets DIR "
          "[--clickhouse [--database DB [--cluster NAME]] | --postgres] [--clickhouse-compat VERSION]\n"
          "       ndingest deliver --deliver URL [--datasets DIR | --name NAME] [options]\n"
          "\n"
          "Streams NDJSON bodies POSTed to / into CSV rows in DIR/NAME-YYYY-MM-DD.csv; with\n"
          "--datasets, bodies POSTed to /v0/events?name=NAME into each dataset's typed files.\n"
          "With --deliver (or `deliver` on its own) the files' rows go on into the database.\n"
          "\n", f);
    for (size_t i = 0; i < NROWS; i++)
        usage_row(f, &rows[i]);
    fputs("\nSIZE takes a K, M or G suffix (binary multiples).\n", f);
}

__attribute__((format(printf, 1, 2)))
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ndingest: ", stderr);
    vfprintf(stderr, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): va_start above */
    va_end(ap);
    fputc('\n', stderr);
    usage(stderr);
    return 2;
}

static int print_help(struct options *o, const char *arg)
{
    (void)o, (void)arg;
    usage(stdout);
    return 1;
}

static int print_version(struct options *o, const char *arg)
{
    (void)o, (void)arg;
    puts("ndingest " NDINGEST_VERSION);
    return 1;
}

static int parse_name(struct options *o, const char *arg)
{
    if (!*arg || strchr(arg, '/'))
        return usage_error("--name: '%s' must be a non-empty file name without '/'", arg);
    o->name = arg;
    return 0;
}

static int parse_default_dataset(struct options *o, const char *arg)
{
    if (!*arg || strchr(arg, '/'))
        return usage_error("--default-dataset: '%s' is not a dataset name", arg);
    o->default_dataset = arg;
    return 0;
}

static int parse_clickhouse_compat(struct options *o, const char *arg)
{
    if (!strcmp(arg, "current"))
        o->clickhouse_1816 = 0;
    else if (!strcmp(arg, "18.16"))
        o->clickhouse_1816 = 1;
    else
        return usage_error("--clickhouse-compat: '%s' is not current or 18.16", arg);
    return 0;
}

static int parse_fsync(struct options *o, const char *arg)
{
    uint64_t ms;
    if (!strcmp(arg, "none")) {
        o->fsync = FSYNC_NONE;
    } else if (!strcmp(arg, "request")) {
        o->fsync = FSYNC_REQUEST;
    } else if (!strncmp(arg, "interval:", 9) && !parse_number(arg + 9, 1, 3600000, &ms)) {
        o->fsync = FSYNC_INTERVAL;
        o->fsync_ms = (unsigned)ms;
    } else {
        return usage_error("--fsync: '%s' is not none, request or interval:MS (1 to 3600000)", arg);
    }
    return 0;
}

/* The row's value when its option is absent. */
static void apply_default(struct options *o, const struct option_row *r)
{
    switch (r->kind) {
    case OPTION_FLAG:
        store_number(o, r, r->dflt);
        break;
    case OPTION_UINT:
    case OPTION_SECONDS:
    case OPTION_SIZE:
        store_number(o, r, r->dflt_fn ? r->dflt_fn() : r->dflt);
        break;
    case OPTION_STRING:
    case OPTION_FILE:
        store_text(o, r, r->dflt_text);
        break;
    case OPTION_CUSTOM:
        if (r->dflt_text)
            (void)r->parse(o, r->dflt_text); /* a default that parses: the unit test's job */
        break;
    case OPTION_ACTION:
        break;
    }
}

/* The row's option given with arg (NULL for flags and actions): 0, 1 or 2 as options_parse. */
static int apply(struct options *o, const struct option_row *r, const char *arg)
{
    uint64_t v;
    switch (r->kind) {
    case OPTION_FLAG:
        store_number(o, r, !r->dflt);
        return 0;
    case OPTION_UINT:
    case OPTION_SECONDS:
        if (parse_number(arg, r->min, r->max, &v))
            return usage_error("--%s: '%s' is not a number%s from %llu to %llu", r->name, arg,
                               r->kind == OPTION_SECONDS ? " of seconds" : "",
                               (unsigned long long)r->min, (unsigned long long)r->max);
        store_number(o, r, v);
        return 0;
    case OPTION_SIZE:
        if (parse_size(arg, &v) || v < r->min || v > r->max) {
            if (r->min == 0 && r->max == UINT64_MAX)
                return usage_error("--%s: '%s' is not a size", r->name, arg);
            char lo[32], hi[32];
            format_size(r->min, lo, sizeof lo);
            format_size(r->max, hi, sizeof hi);
            return usage_error("--%s: '%s' is not a size from %s to %s", r->name, arg, lo, hi);
        }
        store_number(o, r, v);
        return 0;
    case OPTION_FILE:
        if (!*arg)
            return usage_error("--%s: empty file name", r->name);
        store_text(o, r, arg);
        return 0;
    case OPTION_STRING:
        store_text(o, r, arg);
        return 0;
    case OPTION_CUSTOM:
    case OPTION_ACTION:
        return r->parse(o, arg);
    }
    return 0;
}

/* Splits o->columns_list into o->column_names (pointing into a private copy). */
static int parse_columns(struct options *o)
{
    free(o->columns_buf);
    char *copy = o->columns_buf = strdup(o->columns_list);
    if (!copy)
        return usage_error("out of memory");
    size_t n = 0;
    for (char *tok; (tok = strsep(&copy, ",")) != NULL;) {
        if (n == JSON_MAX_COLUMNS)
            return usage_error("--columns: more than %d columns", JSON_MAX_COLUMNS);
        o->column_names[n++] = tok;
    }
    json_columns_free(&o->columns);
    char err[256];
    if (json_columns_init(&o->columns, o->column_names, n, err, sizeof err))
        return usage_error("--columns: %s", err);
    return 0;
}

/* `schema NAME --datasets DIR`: one dataset name, as --name checks it, and a directory. */
static int parse_schema(struct options *o)
{
    if (o->nfiles != 1)
        return usage_error("schema: expected one dataset NAME, got %d arguments", o->nfiles);
    o->dataset = o->files[0];
    if (!*o->dataset || strchr(o->dataset, '/'))
        return usage_error("schema: '%s' is not a dataset name", o->dataset);
    if (!o->datasets || !*o->datasets)
        return usage_error("schema: --datasets DIR is required");
    /* Both are written bare into the SQL (Distributed's arguments, the ZooKeeper path), so
     * they are the identifiers a dataset's name is too. */
    const char *names[][2] = {{"database", o->database}, {"cluster", o->cluster}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *v = names[i][1];
        if (!v)
            continue;
        if (!o->clickhouse)
            return usage_error("schema: --%s needs --clickhouse", names[i][0]);
        size_t ok = *v && !(*v >= '0' && *v <= '9') ? strspn(v, "abcdefghijklmnopqrstuvwxyz"
                                                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                             "0123456789_") : 0;
        if (!ok || v[ok])
            return usage_error("schema: --%s '%s': letters, digits and '_', not starting "
                               "with a digit", names[i][0], v);
    }
    if (o->cluster && !o->database)
        return usage_error("schema: --cluster needs --database DB (the Distributed tables and "
                           "the ZooKeeper paths name it)");
    return 0;
}

/* Options a command takes that another one given with them would make meaningless: refused,
 * not ignored (the user meant something by them). */
static const struct {
    enum command command;
    const char *option, *with, *why;
} conflicts[] = {
    {CMD_CONVERT, "columns", "datasource", "the definition's columns are written"},
    {CMD_SERVE, "columns", "datasets", "each dataset's definition names its columns"},
    {CMD_SERVE, "name", "datasets", "each dataset's files are named after the dataset"},
    {CMD_DELIVER, "columns", "datasets", "each dataset's definition names its columns"},
    {CMD_DELIVER, "name", "datasets", "each dataset's files are named after the dataset"},
};

/* The row called name; NROWS for none (conflicts[] names only rows: test_options checks). */
static size_t row_index(const char *name)
{
    size_t i = 0;
    while (i < NROWS && strcmp(rows[i].name, name) != 0)
        i++;
    return i;
}

/* getopt_long reports long options as this plus their row's index; short ones as themselves. */
enum { ROW_VAL = 256 };

int options_parse(struct options *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    o->command = CMD_SERVE;
    for (size_t i = 0; i < NROWS; i++)
        apply_default(o, &rows[i]);

    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        if (!strcmp(argv[1], "serve"))
            o->command = CMD_SERVE;
        else if (!strcmp(argv[1], "convert"))
            o->command = CMD_CONVERT;
        else if (!strcmp(argv[1], "schema"))
            o->command = CMD_SCHEMA;
        else if (!strcmp(argv[1], "deliver"))
            o->command = CMD_DELIVER;
        else
            return usage_error("unknown command '%s'", argv[1]);
        first = 2;
    }

    /* The command's options only: getopt_long then calls the others unknown. */
    struct option longopts[NROWS + 1];
    char shortopts[NROWS + 2] = ":";
    size_t n = 0, ns = 1;
    for (size_t i = 0; i < NROWS; i++) {
        if ((o->command == CMD_CONVERT && !rows[i].convert) ||
            (o->command == CMD_SCHEMA && !rows[i].schema) ||
            (o->command == CMD_DELIVER && !rows[i].deliver) ||
            (o->command == CMD_SERVE &&
             (rows[i].schema_only || rows[i].convert_only || rows[i].deliver_only)))
            continue;
        longopts[n++] = (struct option){rows[i].name, rows[i].arg ? required_argument : no_argument,
                                        NULL, ROW_VAL + (int)i};
        if (rows[i].short_name)
            shortopts[ns++] = rows[i].short_name;
    }
    longopts[n] = (struct option){NULL, 0, NULL, 0};
    shortopts[ns] = '\0';

    /* getopt_long scans argv from optind; hide the command word from it. */
    optind = first;
    opterr = 0;
    int c;
    unsigned char given[NROWS + 1] = {0}; /* by row; the last for no row */
    while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        const struct option_row *r = NULL;
        if (c >= ROW_VAL) {
            r = &rows[c - ROW_VAL];
        } else if (c != ':' && c != '?') {
            for (size_t i = 0; i < NROWS && !r; i++)
                if (rows[i].short_name == c)
                    r = &rows[i];
        }
        if (r) {
            given[r - rows] = 1;
            int rc = apply(o, r, optarg);
            if (rc)
                return rc;
        } else if (c == ':') {
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        } else {
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if ((o->command == CMD_SERVE || o->command == CMD_DELIVER) && optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    o->files = argv + optind;
    o->nfiles = argc - optind;
    if (o->command == CMD_SCHEMA)
        return parse_schema(o);
    for (size_t i = 0; i < sizeof conflicts / sizeof *conflicts; i++)
        if (conflicts[i].command == o->command && given[row_index(conflicts[i].option)] &&
            given[row_index(conflicts[i].with)])
            return usage_error("--%s cannot be given with --%s: %s", conflicts[i].option,
                               conflicts[i].with, conflicts[i].why);
    if (o->command == CMD_SERVE && o->datasets && !*o->datasets)
        return usage_error("--datasets: empty directory name");
    if (o->command == CMD_SERVE && o->default_dataset && !o->datasets)
        return usage_error("--default-dataset needs --datasets DIR");
    if (o->command == CMD_DELIVER && !o->deliver)
        return usage_error("deliver: --deliver URL is required");
    if (o->command == CMD_DELIVER && o->datasets && !*o->datasets)
        return usage_error("--datasets: empty directory name");
    return parse_columns(o);
}

void options_free(struct options *o)
{
    json_columns_free(&o->columns);
    free(o->columns_buf);
    o->columns_buf = NULL;
}
