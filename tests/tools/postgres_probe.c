/* postgres_probe.c -- a test driver of src/delivery/postgres.c (built by the Makefile, not
 * installed): reads the cursor row, sends one file's rows as one batch, or moves the
 * cursor, and prints the outcome as one JSON object. tests/integration/
 * test_postgres_destination.py drives it against a real server.
 *
 *   postgres_probe URL cursor HOST DATASET
 *   postgres_probe URL skip HOST DATASET FILE OFFSET
 *   postgres_probe URL send HOST DATASET TABLE (--definition F | --columns a,b,c) DATA
 *                  [--file NAME] [--start N] [--end N] [--fault STEP]
 *   postgres_probe URL convert (--definition F | --columns a,b,c) DATA [--start N] [--end N]
 *
 * convert: prints the rows as they would be sent (no connection).
 * send: the bytes [start, end) of the file DATA (default: all of it) are the batch, as
 * file NAME (default: DATA's base name). --fault: at the step, cut-before-commit and
 * cut-after-commit cut the connection (after COMMIT, once the server has had time to
 * commit: the answer is lost, not the commit); kill-before-commit and
 * kill-after-commit kill this process (SIGKILL); pause-before-commit waits 3 s (for the
 * test to terminate the backend or crash the server). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "datasource.h"
#include "delivery/postgres.h"

static const char *const names[] = {"stored", "retry", "refused", "table", "config"};

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

static int print(enum send_result r, const struct send_outcome *out, const char *extra)
{
    printf("{\"result\": \"%s\", \"refused_row\": %ld, \"message\": ", names[r],
           out->refused_row);
    json_string(out->message);
    printf("%s}\n", extra ? extra : "");
    return 0;
}

static const char *fault;

/* Replaces the connection's socket by one whose peer is gone: whatever the server sent and
 * libpq has not read yet is lost, and the next read sees the connection closed. */
static void cut(int fd)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0) {
        close(sv[1]);
        dup2(sv[0], fd);
        close(sv[0]);
    }
}

static void hook(void *arg, enum postgres_step step, int fd)
{
    (void)arg;
    int before = step == POSTGRES_BEFORE_COMMIT;
    if (!fault)
        return;
    if (!strcmp(fault, before ? "kill-before-commit" : "kill-after-commit")) {
        if (!before)
            usleep(300 * 1000);
        fflush(stdout);
        raise(SIGKILL);
    }
    if (before && !strcmp(fault, "pause-before-commit"))
        sleep(3); /* the test terminates the backend, or crashes the server, meanwhile */
    if (!strcmp(fault, before ? "cut-before-commit" : "cut-after-commit")) {
        if (!before)
            usleep(300 * 1000); /* the server commits meanwhile; its answer is then lost */
        cut(fd);
    }
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)len + 1);
    if (p && fread(p, 1, (size_t)len, f) != (size_t)len) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return p;
}

static int usage(void)
{
    fprintf(stderr, "usage: postgres_probe URL cursor HOST DATASET\n"
                    "       postgres_probe URL skip HOST DATASET FILE OFFSET\n"
                    "       postgres_probe URL send HOST DATASET TABLE (--definition F | "
                    "--columns a,b) DATA [--file NAME] [--start N] [--end N] [--fault STEP]\n"
                    "       postgres_probe URL convert (--definition F | --columns a,b) DATA "
                    "[--start N] [--end N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 5)
        return usage();
    char err[512];
    struct postgres_config cfg = {.url = argv[1], .connect_timeout_ms = 5000, .hook = hook};
    struct postgres *pg = postgres_open(&cfg, err, sizeof err);
    if (!pg) {
        printf("{\"result\": \"open\", \"message\": ");
        json_string(err);
        printf("}\n");
        return 1;
    }
    struct send_outcome out;
    const char *cmd = argv[2];
    int rc = 0;
    if (!strcmp(cmd, "cursor")) {
        struct postgres_cursor cur;
        enum send_result r = postgres_cursor(pg, argv[3], argv[4], &cur, &out);
        char extra[600];
        snprintf(extra, sizeof extra, ", \"found\": %d, \"file\": \"%s\", \"offset\": %lld",
                 cur.found, r == SEND_STORED ? cur.file : "", r == SEND_STORED ? cur.offset : 0);
        print(r, &out, extra);
    } else if (!strcmp(cmd, "skip") && argc == 7) {
        print(postgres_skip(pg, argv[3], argv[4], argv[5], atoll(argv[6]), &out), &out, NULL);
    } else if ((!strcmp(cmd, "send") && argc >= 8) || (!strcmp(cmd, "convert") && argc >= 5)) {
        int convert_only = !strcmp(cmd, "convert");
        int first = convert_only ? 3 : 6;
        const char *definition = NULL, *columns = NULL, *data = NULL, *file = NULL;
        long long start = 0, end = -1;
        for (int i = first; i < argc; i++) {
            const char *a = argv[i];
            if (!strcmp(a, "--definition") && i + 1 < argc)
                definition = argv[++i];
            else if (!strcmp(a, "--columns") && i + 1 < argc)
                columns = argv[++i];
            else if (!strcmp(a, "--file") && i + 1 < argc)
                file = argv[++i];
            else if (!strcmp(a, "--start") && i + 1 < argc)
                start = atoll(argv[++i]);
            else if (!strcmp(a, "--end") && i + 1 < argc)
                end = atoll(argv[++i]);
            else if (!strcmp(a, "--fault") && i + 1 < argc)
                fault = argv[++i];
            else if (a[0] != '-' && !data)
                data = a;
            else
                return usage();
        }
        if (!data || !definition == !columns)
            return usage();
        struct datasource *ds = NULL;
        char *names_copy = NULL;
        const char *cols[DS_MAX_COLUMNS];
        struct pg_rows rows = {0};
        if (definition) {
            ds = datasource_load(definition, err, sizeof err);
            if (!ds) {
                fprintf(stderr, "postgres_probe: %s\n", err);
                return 2;
            }
            rows.ds = ds;
        } else {
            names_copy = strdup(columns);
            for (char *s = names_copy, *t; (t = strsep(&s, ",")) != NULL && rows.ncolumns < DS_MAX_COLUMNS;)
                cols[rows.ncolumns++] = t;
        }
        size_t len;
        char *body = slurp(data, &len);
        if (!body) {
            perror(data);
            return 2;
        }
        if (end < 0)
            end = (long long)len;
        const char *base = strrchr(data, '/');
        struct postgres_batch b = {
            .host = argv[3], .dataset = argv[4], .table = argv[5], .rows = &rows,
            .columns = ds ? NULL : cols, .file = file ? file : base ? base + 1 : data,
            .start = start, .end = end, .body = body + start, .len = (size_t)(end - start),
        };
        if (convert_only) {
            /* the rows as PostgreSQL gets them, on stdout (the yardstick's file) */
            struct buf rows_out = {0}, scratch = {0};
            struct pg_refusal ref;
            rc = pg_cells_batch(&rows, b.body, b.len, &rows_out, &scratch, &ref) < 0;
            if (rc)
                fprintf(stderr, "row %ld column %ld: %s\n", ref.row, ref.column, ref.why);
            else
                fwrite(rows_out.p, 1, rows_out.len, stdout);
            buf_free(&rows_out);
            buf_free(&scratch);
        } else {
            print(postgres_insert(pg, &b, &out), &out, NULL);
        }
        free(body);
        free(names_copy);
        datasource_free(ds);
    } else {
        rc = usage();
    }
    postgres_close(pg);
    return rc;
}
