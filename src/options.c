/* options.c -- the command line: commands, options, their defaults and sizes. */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef NDINGEST_VERSION
#define NDINGEST_VERSION "1.0.0"
#endif

static const char usage_text[] =
    "usage: ndingest [serve] [options]\n"
    "       ndingest convert [--columns LIST] [--header] [--crlf] [--max-line SIZE] [FILE ...]\n"
    "\n"
    "Streams NDJSON bodies POSTed to / into CSV rows in DIR/NAME-YYYY-MM-DD.csv.\n"
    "\n"
    "  --listen ADDR:PORT   address to serve on (default 127.0.0.1:8888; IPv6 as [::1]:8888)\n"
    "  --workers N          worker processes (default: CPUs available; 0 = no fork)\n"
    "  --out-dir DIR        output directory, created if missing (default csv)\n"
    "  --name NAME          file name prefix (default nyc_taxi)\n"
    "  --utc                date files by UTC instead of local time\n"
    "  --columns a,b,c      top-level keys to write, in order\n"
    "                       (default " OPTIONS_DEFAULT_COLUMNS ")\n"
    "  --header             start each day's file with a header row\n"
    "  --crlf               end rows with CRLF (RFC 4180) instead of LF\n"
    "  --max-line SIZE      longer lines are invalid (default 1M)\n"
    "  --max-body SIZE      larger bodies get 413 (default unlimited)\n"
    "  --timeout SEC        idle read timeout per connection (default 60)\n"
    "  --header-timeout SEC request line and headers must arrive within it (default 10)\n"
    "  --body-timeout SEC   a body must arrive within it after its headers (default 300)\n"
    "  --max-header SIZE    larger request line + headers get 431 (default 64K)\n"
    "  --max-headers N      more header fields get 431 (default 100)\n"
    "  --max-connections N  per worker; more get 503 and are closed (default 4096)\n"
    "  --max-inflate SIZE   a compressed body inflating past it gets 413 (default 1G; 0 = unlimited)\n"
    "  --max-ratio N        a compressed body inflating more than N times gets 413\n"
    "                       (default 1000; 0 = unlimited)\n"
    "  --access-log FILE    append one line per request to FILE\n"
    "  --token-file F       POST / and GET /metrics need Authorization: Bearer <F's first line>\n"
    "  --fsync MODE         none (default), request (fdatasync before each 200, group-committed)\n"
    "                       or interval:MS (fdatasync dirty files every MS milliseconds)\n"
    "  --quiet              no informational lines on stderr (errors still)\n"
    "  --status SEC         when stderr is a terminal, a live line of rows/s, MB/s,\n"
    "                       connections and requests/s every SEC seconds (default 2;\n"
    "                       0 = off; not with --quiet or --workers 0)\n"
    "  --no-quarantine      do not keep invalid lines in DIR/NAME-YYYY-MM-DD.invalid.ndjson\n"
    "  --reuseport          one SO_REUSEPORT socket per worker instead of one shared socket\n"
    "  -h, --help           this help\n"
    "  --version            print the version\n"
    "\n"
    "SIZE takes a K, M or G suffix (binary multiples).\n";

enum {
    OPT_LISTEN = 256, OPT_WORKERS, OPT_OUT_DIR, OPT_NAME, OPT_UTC, OPT_COLUMNS, OPT_HEADER,
    OPT_CRLF, OPT_MAX_LINE, OPT_MAX_BODY, OPT_TIMEOUT, OPT_NO_QUARANTINE, OPT_REUSEPORT,
    OPT_VERSION, OPT_ACCESS_LOG, OPT_QUIET, OPT_MAX_HEADER, OPT_MAX_HEADERS, OPT_HEADER_TIMEOUT,
    OPT_BODY_TIMEOUT, OPT_MAX_CONNECTIONS, OPT_MAX_INFLATE, OPT_MAX_RATIO, OPT_TOKEN_FILE,
    OPT_FSYNC, OPT_STATUS,
};

static const struct option serve_opts[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"out-dir", required_argument, NULL, OPT_OUT_DIR},
    {"name", required_argument, NULL, OPT_NAME},
    {"utc", no_argument, NULL, OPT_UTC},
    {"columns", required_argument, NULL, OPT_COLUMNS},
    {"header", no_argument, NULL, OPT_HEADER},
    {"crlf", no_argument, NULL, OPT_CRLF},
    {"max-line", required_argument, NULL, OPT_MAX_LINE},
    {"max-body", required_argument, NULL, OPT_MAX_BODY},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"no-quarantine", no_argument, NULL, OPT_NO_QUARANTINE},
    {"reuseport", no_argument, NULL, OPT_REUSEPORT},
    {"access-log", required_argument, NULL, OPT_ACCESS_LOG},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"max-header", required_argument, NULL, OPT_MAX_HEADER},
    {"max-headers", required_argument, NULL, OPT_MAX_HEADERS},
    {"header-timeout", required_argument, NULL, OPT_HEADER_TIMEOUT},
    {"body-timeout", required_argument, NULL, OPT_BODY_TIMEOUT},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"max-inflate", required_argument, NULL, OPT_MAX_INFLATE},
    {"max-ratio", required_argument, NULL, OPT_MAX_RATIO},
    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
    {"fsync", required_argument, NULL, OPT_FSYNC},
    {"status", required_argument, NULL, OPT_STATUS},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static const struct option convert_opts[] = {
    {"columns", required_argument, NULL, OPT_COLUMNS},
    {"header", no_argument, NULL, OPT_HEADER},
    {"crlf", no_argument, NULL, OPT_CRLF},
    {"max-line", required_argument, NULL, OPT_MAX_LINE},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

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

/* A whole number from min to max. 0, or -1. */
static int parse_uint(const char *s, unsigned long min, unsigned long max, unsigned *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int default_workers(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int usage_error(const char *fmt, const char *arg)
{
    fputs("ndingest: ", stderr);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    fputs(usage_text, stderr);
    return 2;
}

/* Splits the comma list into o->column_names (pointing into a private copy). */
static int parse_columns(struct options *o, const char *list)
{
    free(o->columns_buf);
    char *copy = o->columns_buf = strdup(list);
    if (!copy)
        return usage_error("out of memory%s", "");
    size_t n = 0;
    for (char *tok; (tok = strsep(&copy, ",")) != NULL;) {
        if (n == JSON_MAX_COLUMNS)
            return usage_error("--columns: more than 256 columns%s", "");
        o->column_names[n++] = tok;
    }
    json_columns_free(&o->columns);
    char err[256];
    if (json_columns_init(&o->columns, o->column_names, n, err, sizeof err))
        return usage_error("--columns: %s", err);
    return 0;
}

int options_parse(struct options *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    o->command = CMD_SERVE;
    o->listen = "127.0.0.1:8888";
    o->workers = default_workers();
    o->out_dir = "csv";
    o->name = "nyc_taxi";
    o->quarantine = 1;
    o->timeout = 60;
    o->max_line = 1 << 20;
    o->max_header = (uint64_t)64 << 10;
    o->max_headers = 100;
    o->header_timeout = 10;
    o->body_timeout = 300;
    o->max_connections = 4096;
    o->max_inflate = (uint64_t)1 << 30;
    o->max_ratio = 1000;
    o->status = 2;
    const char *columns = OPTIONS_DEFAULT_COLUMNS;

    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        if (!strcmp(argv[1], "serve"))
            o->command = CMD_SERVE;
        else if (!strcmp(argv[1], "convert"))
            o->command = CMD_CONVERT;
        else
            return usage_error("unknown command '%s'", argv[1]);
        first = 2;
    }
    const struct option *table = o->command == CMD_SERVE ? serve_opts : convert_opts;

    /* getopt_long scans argv from optind; hide the command word from it. */
    optind = first;
    opterr = 0;
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, ":h", table, NULL)) != -1) {
        switch (c) {
        case 'h':
            fputs(usage_text, stdout);
            return 1;
        case OPT_VERSION:
            puts("ndingest " NDINGEST_VERSION);
            return 1;
        case OPT_LISTEN: o->listen = optarg; break;
        case OPT_WORKERS: {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || n < 0 || n > 1024)
                return usage_error("--workers: '%s' is not a number from 0 to 1024", optarg);
            o->workers = (int)n;
            break;
        }
        case OPT_OUT_DIR: o->out_dir = optarg; break;
        case OPT_NAME:
            if (!*optarg || strchr(optarg, '/'))
                return usage_error("--name: '%s' must be a non-empty file name without '/'", optarg);
            o->name = optarg;
            break;
        case OPT_UTC: o->utc = 1; break;
        case OPT_COLUMNS: columns = optarg; break;
        case OPT_HEADER: o->header = 1; break;
        case OPT_CRLF: o->crlf = 1; break;
        case OPT_MAX_LINE:
            if (parse_size(optarg, &v) || v == 0 || v > ((uint64_t)1 << 31))
                return usage_error("--max-line: '%s' is not a size from 1 to 2G", optarg);
            o->max_line = (size_t)v;
            break;
        case OPT_MAX_BODY:
            if (parse_size(optarg, &v))
                return usage_error("--max-body: '%s' is not a size", optarg);
            o->max_body = v;
            break;
        case OPT_TIMEOUT: {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || n <= 0 || n > 86400)
                return usage_error("--timeout: '%s' is not a number of seconds from 1 to 86400", optarg);
            o->timeout = (unsigned)n;
            break;
        }
        case OPT_NO_QUARANTINE: o->quarantine = 0; break;
        case OPT_REUSEPORT: o->reuseport = 1; break;
        case OPT_ACCESS_LOG:
            if (!*optarg)
                return usage_error("--access-log: empty file name%s", "");
            o->access_log = optarg;
            break;
        case OPT_QUIET: o->quiet = 1; break;
        case OPT_STATUS:
            if (parse_uint(optarg, 0, 3600, &o->status))
                return usage_error("--status: '%s' is not a number of seconds from 0 to 3600", optarg);
            break;
        case OPT_MAX_HEADER:
            if (parse_size(optarg, &v) || v < 256 || v > ((uint64_t)1 << 30))
                return usage_error("--max-header: '%s' is not a size from 256 to 1G", optarg);
            o->max_header = v;
            break;
        case OPT_MAX_HEADERS:
            if (parse_uint(optarg, 1, 100000, &o->max_headers))
                return usage_error("--max-headers: '%s' is not a number from 1 to 100000", optarg);
            break;
        case OPT_HEADER_TIMEOUT:
            if (parse_uint(optarg, 1, 86400, &o->header_timeout))
                return usage_error("--header-timeout: '%s' is not a number of seconds from 1 to 86400", optarg);
            break;
        case OPT_BODY_TIMEOUT:
            if (parse_uint(optarg, 1, 86400, &o->body_timeout))
                return usage_error("--body-timeout: '%s' is not a number of seconds from 1 to 86400", optarg);
            break;
        case OPT_MAX_CONNECTIONS:
            if (parse_uint(optarg, 1, 1000000, &o->max_connections))
                return usage_error("--max-connections: '%s' is not a number from 1 to 1000000", optarg);
            break;
        case OPT_MAX_INFLATE:
            if (parse_size(optarg, &v))
                return usage_error("--max-inflate: '%s' is not a size", optarg);
            o->max_inflate = v;
            break;
        case OPT_MAX_RATIO:
            if (parse_uint(optarg, 0, 1000000000, &o->max_ratio))
                return usage_error("--max-ratio: '%s' is not a number from 0 to 1000000000", optarg);
            break;
        case OPT_TOKEN_FILE:
            if (!*optarg)
                return usage_error("--token-file: empty file name%s", "");
            o->token_file = optarg;
            break;
        case OPT_FSYNC:
            if (!strcmp(optarg, "none"))
                o->fsync = FSYNC_NONE;
            else if (!strcmp(optarg, "request"))
                o->fsync = FSYNC_REQUEST;
            else if (!strncmp(optarg, "interval:", 9) &&
                     !parse_uint(optarg + 9, 1, 3600000, &o->fsync_ms))
                o->fsync = FSYNC_INTERVAL;
            else
                return usage_error("--fsync: '%s' is not none, request or interval:MS (1 to 3600000)", optarg);
            break;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (o->command == CMD_SERVE && optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    o->files = argv + optind;
    o->nfiles = argc - optind;
    return parse_columns(o, columns);
}

void options_free(struct options *o)
{
    json_columns_free(&o->columns);
    free(o->columns_buf);
    o->columns_buf = NULL;
}
