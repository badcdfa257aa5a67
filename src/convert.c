/* convert.c -- the offline command: NDJSON files (or stdin) to CSV on stdout through the
 * same pipeline as the server; the stats JSON on stderr. */
#include "convert.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "csv.h"
#include "ingest.h"

#define CONVERT_READ (1 << 20)
#define CONVERT_WINDOW (16 << 20) /* a multiple of any page size */

/* Feeds one file (or stdin) as one body, so that its last line without '\n' counts. */
static int convert_file(struct ingest *g, const char *path, char *chunk, struct ingest_stats *total)
{
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : 0;
    const char *name = path ? path : "<stdin>";
    if (fd < 0) {
        fprintf(stderr, "ndingest convert: %s: %s\n", name, strerror(errno));
        return -1;
    }
    int rc = 0;
    ingest_begin(g, ENCODING_IDENTITY);
    /* A regular file is mapped rather than read: read(2) would copy every byte once more,
     * which costs about as much as judging it. Windows keep the resident set bounded. */
    struct stat st;
    int mapped = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
    for (off_t at = 0; mapped && at < st.st_size; at += CONVERT_WINDOW) {
        size_t len = st.st_size - at < CONVERT_WINDOW ? (size_t)(st.st_size - at) : CONVERT_WINDOW;
        void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, at);
        if (map == MAP_FAILED) {
            if (at == 0) {
                mapped = 0; /* not mappable after all: read it */
                break;
            }
            fprintf(stderr, "ndingest convert: %s: %s\n", name, strerror(errno));
            ingest_abort(g);
            rc = -1;
            break;
        }
        enum ingest_status status = ingest_feed(g, map, len);
        munmap(map, len);
        if (status != INGEST_OK) {
            fprintf(stderr, "ndingest convert: %s: %s\n", name, g->error);
            ingest_abort(g);
            rc = -1;
            break;
        }
    }
    if (mapped && rc == 0 && ingest_end(g) != INGEST_OK) {
        fprintf(stderr, "ndingest convert: %s: %s\n", name, g->error);
        rc = -1;
    }
    while (!mapped) {
        ssize_t n = read(fd, chunk, CONVERT_READ);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "ndingest convert: %s: %s\n", name, strerror(errno));
            ingest_end(g);
            rc = -1;
            break;
        }
        if (n == 0) {
            if (ingest_end(g) != INGEST_OK) {
                fprintf(stderr, "ndingest convert: %s: %s\n", name, g->error);
                rc = -1;
            }
            break;
        }
        if (ingest_feed(g, chunk, (size_t)n) != INGEST_OK) {
            fprintf(stderr, "ndingest convert: %s: %s\n", name, g->error);
            ingest_abort(g);
            rc = -1;
            break;
        }
    }
    total->bytes += g->stats.bytes;
    total->valid += g->stats.valid;
    total->invalid += g->stats.invalid;
    if (path)
        close(fd);
    return rc;
}

int convert_run(const struct options *o)
{
    struct sink *out = sink_open_fd(1);
    char *chunk = malloc(CONVERT_READ);
    if (!out || !chunk) {
        fputs("ndingest convert: out of memory\n", stderr);
        sink_close(out);
        free(chunk);
        return 2;
    }
    int rc = 0;
    if (o->header) {
        struct buf h = {0};
        if (csv_header(&h, &o->columns, o->crlf) || sink_write(out, h.p, h.len)) {
            fprintf(stderr, "ndingest convert: %s\n", sink_error(out));
            rc = 2;
        }
        buf_free(&h);
    }
    const struct ingest_config cfg = {
        .columns = &o->columns,
        .max_line = o->max_line,
        .crlf = o->crlf,
        .flush_bytes = 1 << 20,
        .rows = out,
        .quarantine = NULL,
        .log_prefix = "ndingest convert",
    };
    struct ingest g;
    ingest_init(&g, &cfg);
    struct ingest_stats total = {0};
    if (rc == 0) {
        if (o->nfiles == 0) {
            if (convert_file(&g, NULL, chunk, &total))
                rc = 2;
        }
        for (int i = 0; i < o->nfiles; i++)
            if (convert_file(&g, strcmp(o->files[i], "-") ? o->files[i] : NULL, chunk, &total))
                rc = 2;
    }
    char line[256];
    ingest_stats_json(&total, line, sizeof line);
    fputs(line, stderr);
    ingest_free(&g);
    sink_close(out);
    free(chunk);
    return rc;
}
