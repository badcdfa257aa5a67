/* clickhouse_probe.c -- a test driver (built, never installed) that runs one call of the
 * delivery's ClickHouse client against a server and prints its outcome as one JSON line,
 * so that tests/integration/test_delivery_clickhouse_client.py can hold the C client to
 * the real 18.16 before the delivery loop exists.
 *
 *   clickhouse_probe URL CREDENTIALS|- CONNECT_MS TIMEOUT_MS COMMAND [ARGS]
 *     version
 *     describe TABLE
 *     execute SQL
 *     insert TABLE COL,COL,... FILE [TOKEN]   FILE's bytes are the CSV body; sent
 *                                             $PROBE_REPEAT times (default 1) on the same
 *                                             client, one line each
 *     check TABLE FILE.datasource             DESCRIBE, then table_check
 *     check TABLE -COL,COL,...                the same for untyped (text) columns
 *   $PROBE_RETRY_AFTER_MAX_MS sets clickhouse_config's retry_after_max_ms.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "datasource.h"
#include "delivery/clickhouse.h"
#include "delivery/table_check.h"

#define MAX_COLUMNS 512

static const char *result_name(enum send_result r)
{
    static const char *names[] = {"STORED", "RETRY", "REFUSED", "TABLE", "CONFIG"};
    return (unsigned)r < 5 ? names[r] : "?";
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void outcome(const char *command, const struct send_outcome *o, double ms)
{
    printf("{\"command\": ");
    json_string(command);
    printf(", \"result\": \"%s\", \"code\": %d, \"http_status\": %d, \"retry_after_ms\": %u, "
           "\"elapsed_ms\": %.0f, \"message\": ",
           result_name(o->result), o->code, o->http_status, o->retry_after_ms, ms);
    json_string(o->message);
}

/* "a,b,c" into names (in place). */
static size_t split(char *list, char **names, size_t max)
{
    size_t n = 0;
    for (char *tok = strtok(list, ","); tok && n < max; tok = strtok(NULL, ","))
        names[n++] = tok;
    return n;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap);
    size_t got;
    while (p && (got = fread(p + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            p = realloc(p, cap *= 2);
    }
    fclose(f);
    *len = n;
    return p;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: clickhouse_probe URL CREDENTIALS|- CONNECT_MS TIMEOUT_MS "
                        "version|describe|execute|insert|check [ARGS]\n");
        return 2;
    }
    const char *ra = getenv("PROBE_RETRY_AFTER_MAX_MS");
    struct clickhouse_config cfg = {argv[1], strcmp(argv[2], "-") ? argv[2] : NULL,
                                    (unsigned)strtoul(argv[3], NULL, 10),
                                    (unsigned)strtoul(argv[4], NULL, 10),
                                    ra ? (unsigned)strtoul(ra, NULL, 10) : 0};
    const char *cmd = argv[5];
    char err[512];
    struct clickhouse *ch = clickhouse_open(&cfg, err, sizeof err);
    if (!ch) {
        printf("{\"command\": ");
        json_string(cmd);
        printf(", \"open_error\": ");
        json_string(err);
        printf("}\n");
        return 1;
    }
    struct send_outcome o;
    memset(&o, 0, sizeof o);
    double t0 = now_ms();
    int status = 0;
    if (!strcmp(cmd, "version")) {
        int major = 0, minor = 0;
        clickhouse_version(ch, &major, &minor, &o);
        outcome(cmd, &o, now_ms() - t0);
        printf(", \"major\": %d, \"minor\": %d}\n", major, minor);
    } else if (!strcmp(cmd, "describe") && argc == 7) {
        static struct clickhouse_column cols[MAX_COLUMNS];
        size_t n = 0;
        clickhouse_describe(ch, 0, argv[6], cols, MAX_COLUMNS, &n, &o);
        outcome(cmd, &o, now_ms() - t0);
        printf(", \"columns\": [");
        for (size_t i = 0; i < n; i++) {
            printf(i ? ", [" : "[");
            json_string(cols[i].name);
            printf(", ");
            json_string(cols[i].type);
            printf(", ");
            json_string(cols[i].default_kind);
            printf("]");
        }
        printf("]}\n");
    } else if (!strcmp(cmd, "execute") && argc == 7) {
        clickhouse_execute(ch, 0, argv[6], &o);
        outcome(cmd, &o, now_ms() - t0);
        printf("}\n");
    } else if (!strcmp(cmd, "insert") && (argc == 9 || argc == 10)) {
        char *names[MAX_COLUMNS];
        size_t ncols = split(argv[7], names, MAX_COLUMNS);
        size_t len;
        char *body = slurp(argv[8], &len);
        if (!body) {
            fprintf(stderr, "clickhouse_probe: cannot read %s\n", argv[8]);
            clickhouse_close(ch);
            return 2;
        }
        const char *repeat = getenv("PROBE_REPEAT");
        for (long i = 0, n = repeat ? strtol(repeat, NULL, 10) : 1; i < n; i++) {
            t0 = now_ms();
            clickhouse_insert(ch, 0, argv[6], (const char *const *)names, ncols, body, len,
                              argc == 10 ? argv[9] : NULL, &o);
            outcome(cmd, &o, now_ms() - t0);
            printf("}\n");
            fflush(stdout);
        }
        free(body);
    } else if (!strcmp(cmd, "check") && argc == 8) {
        static struct table_want want[MAX_COLUMNS];
        static struct clickhouse_column cols[MAX_COLUMNS];
        static struct table_problem problems[MAX_COLUMNS];
        char *names[MAX_COLUMNS];
        size_t nwant = 0;
        struct datasource *ds = NULL;
        if (argv[7][0] == '-') {
            nwant = split(argv[7] + 1, names, MAX_COLUMNS);
            for (size_t i = 0; i < nwant; i++) {
                want[i].name = names[i];
                memset(&want[i].type, 0, sizeof want[i].type);
                want[i].type.kind = TYPE_STRING;
            }
        } else {
            ds = datasource_load(argv[7], err, sizeof err);
            if (!ds) {
                fprintf(stderr, "clickhouse_probe: %s\n", err);
                clickhouse_close(ch);
                return 2;
            }
            for (size_t i = 0; i < ds->ncolumns && i < MAX_COLUMNS; i++, nwant++) {
                want[i].name = ds->columns[i].name;
                want[i].type = ds->columns[i].type;
            }
        }
        size_t n = 0, np = 0;
        if (clickhouse_describe(ch, 0, argv[6], cols, MAX_COLUMNS, &n, &o) == SEND_STORED)
            np = table_check(want, nwant, cols, n, problems, MAX_COLUMNS);
        outcome(cmd, &o, now_ms() - t0);
        printf(", \"problems\": [");
        for (size_t i = 0; i < np && i < MAX_COLUMNS; i++) {
            printf(i ? ", [" : "[");
            json_string(problems[i].column);
            printf(", ");
            json_string(problems[i].message);
            printf("]");
        }
        printf("]}\n");
        datasource_free(ds);
    } else {
        fprintf(stderr, "clickhouse_probe: unknown command or arguments: %s\n", cmd);
        status = 2;
    }
    clickhouse_close(ch);
    return status;
}
