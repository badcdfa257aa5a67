/* options.h -- the command line: commands, options, their defaults and sizes. */
#ifndef NDINGEST_OPTIONS_H
#define NDINGEST_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "json.h"

enum command { CMD_SERVE, CMD_CONVERT, CMD_SCHEMA, CMD_DELIVER };
/* --fsync: none (the kernel writes back when it likes), request (a 200 only after
 * fdatasync of the files the request wrote, group-committed per loop turn), interval (a
 * timer fdatasyncs dirty files every fsync_ms; acks not delayed). */
enum fsync_mode { FSYNC_NONE, FSYNC_REQUEST, FSYNC_INTERVAL };

/* Filled by options_parse from the table in options.c: an option is one row there plus its
 * field here. Strings point into argv or static storage, except columns_buf. */
struct options {
    enum command command;
    /* serve */
    const char *listen;   /* "127.0.0.1:8888", "[::1]:8888" */
    int workers;          /* 0: serve inside the main process */
    const char *out_dir;
    const char *name;
    int utc, header, crlf, quarantine;
    int reuseport;        /* one SO_REUSEPORT socket per worker instead of one shared socket */
    uint64_t max_body;    /* 0: unlimited */
    unsigned timeout;     /* idle read timeout, seconds */
    const char *access_log; /* one line per request appended here, or NULL */
    int quiet;            /* no informational lines on stderr (errors still) */
    unsigned status;      /* seconds between live status lines on a terminal stderr, 0: off */
    uint64_t max_header;  /* request line + headers, bytes: 431 past it */
    size_t max_path;      /* the request target's path, bytes: 414 past it; bounds its query too */
    unsigned max_headers; /* header (and trailer) fields: 431 past it */
    unsigned header_timeout; /* seconds for a request line + headers to arrive: 408 */
    unsigned body_timeout;   /* seconds for a body to arrive after its headers: 408 */
    unsigned max_connections; /* per worker; past it a connection gets 503 and is closed */
    uint64_t max_inflate; /* inflated bytes per compressed body, 0: unlimited */
    unsigned max_ratio;   /* inflated/compressed bytes, 0: unlimited */
    uint64_t max_quarantine;     /* quarantine bytes one body may keep, 0: unlimited */
    uint64_t max_quarantine_day; /* bytes a day's quarantine file may reach, 0: unlimited */
    const char *token_file; /* POST / and /metrics need "Authorization: Bearer <its first line>" */
    enum fsync_mode fsync; /* when written rows are fdatasync'd */
    unsigned fsync_ms;     /* FSYNC_INTERVAL: the period, milliseconds */
    /* Idempotency-Key (idempotency.h): the shared table's size, how long an answered key
     * is replayed (seconds), and the longest key accepted (bytes, unescaped). */
    unsigned idempotency_keys;
    unsigned idempotency_window;
    size_t max_idempotency_key;
    /* The ranges of the day files written by requests not yet answered (inflight.h): the
     * entries of each worker's shared table. */
    unsigned inflight_ranges;
    /* both */
    size_t max_line;
    const char *columns_list; /* --columns as given; split into column_names and columns */
    struct json_columns columns;
    const char *column_names[JSON_MAX_COLUMNS];
    char *columns_buf; /* the --columns list, split in place */
    /* convert */
    char **files;
    int nfiles;
    const char *datasource;      /* a NAME.datasource: typed rows instead of --columns */
    const char *quarantine_file; /* refused lines go here (truncated first), or NULL */
    /* schema */
    const char *dataset;  /* NAME: the command's one argument */
    const char *datasets; /* DIR holding NAME.datasource; serve: every one served */
    const char *default_dataset; /* serve --datasets: the dataset POST / appends to, or NULL */
    unsigned max_datasets; /* serve --datasets: definitions loaded at once */
    unsigned max_tokens;   /* --token-file with --datasets: its tokens (auth_load) */
    int clickhouse;       /* CREATE TABLE statements instead of a table for people */
    /* all three: --clickhouse-compat 18.16, the narrower Date and DateTime ranges of
     * ClickHouse 18.16 (types.h, type_set_target) */
    int clickhouse_1816;
    const char *database; /* --clickhouse: the tables' database (qualified names), or NULL */
    const char *cluster;  /* --clickhouse: replicated local tables + Distributed on it, or NULL */
    /* delivery (serve --deliver, and `ndingest deliver`: doc/delivery.md) */
    const char *deliver;             /* the destination's URL, or NULL: no delivery */
    const char *deliver_credentials; /* USER:PASSWORD on its first line, or NULL */
    uint64_t deliver_batch;          /* bytes of a batch at most (a longer row goes whole) */
    unsigned deliver_interval;       /* ms the oldest waiting row may wait for its batch */
    unsigned deliver_grace;          /* seconds after its day before a file is finished */
    unsigned deliver_timeout;        /* seconds for one request to the destination */
    unsigned deliver_retry_max;      /* seconds: the longest wait between two tries */
    int deliver_create;              /* CREATE TABLE for a dataset whose table is missing */
    int postgres;         /* schema: CREATE TABLE for PostgreSQL (schema_pg.h) */
    const char *host_id;             /* this host in every batch's identity; NULL: hostname */
    uint64_t deliver_max_lag;        /* undelivered bytes past which bodies get 503; 0: never */
    uint64_t min_free;               /* free bytes under which bodies get 503; 0: never */
};

#define OPTIONS_DEFAULT_COLUMNS "vendorid,tpep_pickup_datetime,trip_distance,total_amount"
/* --workers' bound: also the number of slots in the memory shared by the workers, which a
 * caller may view whole on its stack (slots.h). */
#define OPTIONS_MAX_WORKERS 1024

/* How a row's value is read. Numbers and sizes are checked against [min, max]; flags and
 * numbers live in int, unsigned, size_t or uint64_t fields (the row records the size). */
enum option_kind {
    OPTION_FLAG,    /* no value: sets the field to !dflt */
    OPTION_UINT,    /* a whole number */
    OPTION_SECONDS, /* a whole number of seconds (only the wording differs from UINT) */
    OPTION_SIZE,    /* parse_size's syntax */
    OPTION_STRING,  /* any text, kept as a pointer into argv */
    OPTION_FILE,    /* a non-empty file name */
    OPTION_CUSTOM,  /* row->parse reads it (a mode, a validated name) */
    OPTION_ACTION,  /* no value: row->parse prints something and parsing stops (exit 0) */
};

/* One option: parsing, its default and its --help line all come from here. */
struct option_row {
    const char *name;      /* without the leading "--" */
    char short_name;       /* "-h", or 0 */
    enum option_kind kind;
    int convert;           /* also accepted by `ndingest convert` */
    int schema;            /* also accepted by `ndingest schema` */
    int schema_only;       /* accepted by `ndingest schema` only, not by serve */
    int convert_only;      /* accepted by `ndingest convert` only, not by serve */
    int deliver;           /* also accepted by `ndingest deliver` */
    int deliver_only;      /* accepted by `ndingest deliver` only, not by serve */
    const char *arg;       /* the value's name in --help ("N", "SIZE"), NULL without a value */
    size_t offset, size;   /* the field in struct options (not for CUSTOM and ACTION) */
    uint64_t min, max;     /* UINT, SECONDS, SIZE: the accepted range */
    uint64_t dflt;         /* FLAG, UINT, SECONDS, SIZE: the value when the option is absent */
    unsigned long (*dflt_fn)(void); /* numbers: a default computed at start instead of dflt */
    /* The default as --help shows it, NULL for none. STRING, FILE, CUSTOM: also the value
     * (CUSTOM rows pass it to parse). Numbers: only for a computed default. */
    const char *dflt_text;
    const char *zero;      /* numbers: what 0 means ("unlimited", "off"), or NULL */
    const char *note;      /* more about the default, shown after it in --help */
    /* CUSTOM, ACTION: 0 to go on, or options_parse's 1 or 2 (the error already printed). */
    int (*parse)(struct options *o, const char *arg);
    const char *help;      /* one sentence, no default (--help adds it), no newlines */
};

/* The rows in --help order; their number in *count. Static storage. */
const struct option_row *options_table(size_t *count);

/* Fills o from argv. 0 to go on; 1 when --help/--version was printed (exit 0); 2 after a
 * one-line error plus usage on stderr (exit 2). options_free after any of them. */
int options_parse(struct options *o, int argc, char **argv);
void options_free(struct options *o);

/* "64", "512K", "1M", "2G" (binary multiples). 0, or -1 when malformed or overflowing. */
int parse_size(const char *s, uint64_t *out);

#endif
