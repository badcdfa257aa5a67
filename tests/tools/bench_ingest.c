/* bench_ingest.c -- the ingest pipeline in memory (built, never installed): the engine's
 * yardstick counterpart to simdjson's parse_many (../shared/bench/yardsticks.sh engine).
 *
 *   bench_ingest [--columns a,b,c] [--body BYTES] [--reps N] FILE
 *
 * FILE is read into memory once, then cut at line ends into bodies of about BYTES (default
 * 1 MiB, what parse_many batches by; 0: the whole file as one body). Each rep runs every
 * body through ingest_begin / ingest_feed / ingest_finish: lines framed, judged, their
 * columns taken and encoded as CSV into the pipeline's row buffer, which ingest_written
 * then empties without writing it anywhere (no file I/O; the buffer's memory is reused).
 * Prints each rep's MB/s, then "bench_ingest: X MB/s" over all reps (bytes x reps / time,
 * as the simdjson yardstick counts) with the rows, refused lines and CSV bytes of a rep.
 * NDINGEST_SIMD chooses the engine's path as for ndingest. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ingest.h"
#include "options.h"

#define MAX_BODIES (1 << 20)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static char *read_all(const char *path, size_t *n)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "bench_ingest: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    char *p = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (p && got < (size_t)st.st_size) {
        ssize_t r = read(fd, p + got, (size_t)st.st_size - got);
        if (r <= 0) {
            fprintf(stderr, "bench_ingest: %s: short read\n", path);
            exit(2);
        }
        got += (size_t)r;
    }
    close(fd);
    if (!p) {
        fprintf(stderr, "bench_ingest: out of memory\n");
        exit(2);
    }
    *n = got;
    return p;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_ingest [--columns a,b,c] [--body BYTES] [--reps N] FILE\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *cols = OPTIONS_DEFAULT_COLUMNS, *path = NULL;
    size_t body = 1 << 20;
    int reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--columns") && i + 1 < argc)
            cols = argv[++i];
        else if (!strcmp(argv[i], "--body") && i + 1 < argc)
            body = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = (int)strtol(argv[++i], NULL, 10);
        else if (argv[i][0] == '-' || path)
            usage();
        else
            path = argv[i];
    }
    if (!path || reps < 1)
        usage();
    json_engine_init();

    /* The column names, split as --columns is. */
    char *names_buf = strdup(cols);
    const char *names[JSON_MAX_COLUMNS];
    size_t count = 0;
    for (char *s = strtok(names_buf, ","); s && count < JSON_MAX_COLUMNS; s = strtok(NULL, ","))
        names[count++] = s;
    struct json_columns columns;
    char err[256];
    if (json_columns_init(&columns, names, count, err, sizeof err)) {
        fprintf(stderr, "bench_ingest: --columns: %s\n", err);
        free(names_buf);
        return 2;
    }

    size_t n;
    char *data = read_all(path, &n);
    /* Bodies end after a newline (or at the file's end). */
    static size_t ends[MAX_BODIES];
    size_t nb = 0, at = 0;
    while (at < n && nb < MAX_BODIES - 1) {
        size_t e = body && n - at > body ? at + body : n;
        const char *nl = e < n ? memchr(data + e, '\n', n - e) : NULL;
        e = nl ? (size_t)(nl - data) + 1 : n;
        ends[nb++] = e;
        at = e;
    }
    if (at < n)
        ends[nb - 1] = n;

    int devnull = open("/dev/null", O_WRONLY);
    struct sink *rows = sink_open_fd(devnull); /* never written: flush_bytes is never reached */
    const struct ingest_config cfg = {
        .columns = &columns,
        .max_line = 1 << 20,
        .flush_bytes = (size_t)-1,
        .rows = rows,
    };
    static struct ingest g;
    ingest_init(&g, &cfg);
    uint64_t valid = 0, invalid = 0, csv = 0;
    double total = 0;
    int rc = 0;
    for (int r = 0; r < reps && !rc; r++) {
        valid = invalid = csv = 0;
        double t0 = now();
        size_t start = 0;
        for (size_t b = 0; b < nb; b++) {
            ingest_begin(&g, ENCODING_IDENTITY);
            ingest_feed(&g, data + start, ends[b] - start);
            if (ingest_finish(&g) != INGEST_OK) {
                fprintf(stderr, "bench_ingest: %s\n", g.error);
                rc = 2;
                break;
            }
            csv += g.rows.len;
            ingest_written(&g, 1, NULL);
            valid += g.stats.valid;
            invalid += g.stats.invalid;
            start = ends[b];
        }
        double dt = now() - t0;
        total += dt;
        printf("rep %d: %.0f MB/s\n", r + 1, (double)n / dt / 1e6);
    }
    if (!rc)
        printf("bench_ingest: %.0f MB/s (%s engine, %zu bodies of ~%zu bytes, %d reps; a rep: "
               "%llu rows, %llu refused, %llu CSV bytes)\n",
               (double)n * reps / total / 1e6, json_engine_name(), nb, body ? body : n, reps,
               (unsigned long long)valid, (unsigned long long)invalid, (unsigned long long)csv);
    ingest_free(&g);
    sink_close(rows);
    json_columns_free(&columns);
    free(names_buf);
    free(data);
    return rc;
}
