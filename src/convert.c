/* convert.c -- the offline command: NDJSON files (or stdin) to CSV on stdout through the
 * same pipeline as the server, untyped or by a dataset's definition; the stats JSON on
 * stderr. */
#include "convert.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "csv.h"
#include "datasource.h"
#include "ingest.h"

#define CONVERT_READ (1 << 20)
#define CONVERT_WINDOW (16 << 20) /* a multiple of any page size */

struct convert {
    struct ingest g;
    char *chunk; /* read(2) buffer for what is not mapped */
    struct ingest_stats total;
    char error[512]; /* the first failure, repeated in the stats line; "" while none */
};

/* Every failure comes through here: a line on stderr now, and exit 2 at the end. */
static void report(struct convert *c, const char *name, const char *what)
{
    fprintf(stderr, "ndingest convert: %s: %s\n", name, what);
    if (!c->error[0])
        snprintf(c->error, sizeof c->error, "%s: %s", name, what);
}

/* The window being fed, for on_sigbus. */
static const char *volatile window;
static volatile size_t window_len;
static sigjmp_buf window_lost;

/* Reading a mapped page that the file no longer has (another process truncated it) raises
 * SIGBUS at the reading instruction. Inside the window that is a truncated input, and the
 * feed is abandoned; anywhere else it is a real fault: the default action, as before. */
static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    const char *a = si->si_addr, *w = window;
    if (w && a >= w && a < w + window_len)
        siglongjmp(window_lost, 1);
    signal(sig, SIG_DFL); /* the access runs again on return and now kills */
}

/* ingest_feed over one mapped window: its status, or -1 if the file shrank under it. Only
 * code reading the window can fault, and it holds no lock and allocates nothing, so jumping
 * out of it is safe; the caller then abandons the body (ingest_abort). */
static int feed_window(struct ingest *g, const char *map, size_t len)
{
    window_len = len;
    window = map;
    if (sigsetjmp(window_lost, 1)) { /* 1: SIGBUS is unblocked again after the jump */
        window = NULL;
        return -1;
    }
    enum ingest_status status = ingest_feed(g, map, len);
    window = NULL;
    return (int)status;
}

/* A regular file is mapped rather than read: read(2) would copy every byte once more,
 * which costs about as much as judging it. Windows keep the resident set bounded.
 * 0; 1 if it cannot be mapped (nothing fed: read it instead); -1 after a reported error. */
static int feed_mapped(struct convert *c, int fd, off_t size, const char *name)
{
    static const char truncated[] = "the file was truncated while being read";
    for (off_t at = 0; at < size; at += CONVERT_WINDOW) {
        size_t len = size - at < CONVERT_WINDOW ? (size_t)(size - at) : CONVERT_WINDOW;
        const char *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, at);
        if (map == MAP_FAILED) {
            if (at == 0)
                return 1;
            report(c, name, strerror(errno));
            return -1;
        }
        int status = feed_window(&c->g, map, len);
        munmap((void *)map, len);
        if (status < 0) {
            report(c, name, truncated);
            return -1;
        }
        if (status != INGEST_OK) {
            report(c, name, c->g.error);
            return -1;
        }
    }
    /* A cut inside the last page read reads as zeros rather than faulting: ask the size. */
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size < size) {
        report(c, name, truncated);
        return -1;
    }
    return 0;
}

static int feed_read(struct convert *c, int fd, const char *name)
{
    for (;;) {
        ssize_t n = read(fd, c->chunk, CONVERT_READ);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            report(c, name, strerror(errno));
            return -1;
        }
        if (n == 0)
            return 0;
        if (ingest_feed(&c->g, c->chunk, (size_t)n) != INGEST_OK) {
            report(c, name, c->g.error);
            return -1;
        }
    }
}

/* Feeds one file (or stdin) as one body, so that its last line without '\n' counts. On an
 * error the rows still pending are dropped: stdout holds whole batches of whole rows. */
static void convert_file(struct convert *c, const char *path)
{
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : 0;
    const char *name = path ? path : "<stdin>";
    if (fd < 0) {
        report(c, name, strerror(errno));
        return;
    }
    struct ingest *g = &c->g;
    ingest_begin(g, ENCODING_IDENTITY);
    struct stat st;
    int rc = 1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        rc = feed_mapped(c, fd, st.st_size, name);
    if (rc == 1)
        rc = feed_read(c, fd, name);
    if (rc == 0 && ingest_end(g) != INGEST_OK)
        report(c, name, g->error); /* ingest_end dropped what was pending */
    else if (rc)
        ingest_abort(g);
    c->total.bytes += g->stats.bytes;
    c->total.valid += g->stats.valid;
    c->total.invalid += g->stats.invalid;
    for (int k = 0; k < QUARANTINE_REASONS; k++)
        c->total.refused[k] += g->stats.refused[k];
    if (path)
        close(fd);
}

/* --quarantine-file: truncated, as a redirection would, so it holds this run's lines. */
static struct sink *open_quarantine(struct convert *c, const char *path, int *fd)
{
    *fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (*fd < 0) {
        report(c, path, strerror(errno));
        return NULL;
    }
    struct sink *s = sink_open_fd(*fd);
    if (!s)
        report(c, path, "out of memory");
    return s;
}

int convert_run(const struct options *o)
{
    struct sink *out = sink_open_fd(1), *quarantine = NULL;
    struct convert c = {.chunk = NULL};
    struct datasource *ds = NULL;
    int qfd = -1;
    c.chunk = malloc(CONVERT_READ);
    if (!out || !c.chunk) {
        fputs("ndingest convert: out of memory\n", stderr);
        sink_close(out);
        free(c.chunk);
        return 2;
    }
    if (o->datasource) {
        char err[512];
        if (!(ds = datasource_load(o->datasource, err, sizeof err))) {
            fprintf(stderr, "ndingest convert: %s\n", err); /* FILE:LINE: message */
            sink_close(out);
            free(c.chunk);
            return 2;
        }
    }
    const struct json_columns *columns = ds ? &ds->json : &o->columns;
    struct sigaction sa = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    if (o->quarantine_file)
        quarantine = open_quarantine(&c, o->quarantine_file, &qfd);
    if (o->header && !c.error[0]) {
        struct buf h = {0};
        if (csv_header(&h, columns, o->crlf) || sink_write(out, h.p, h.len))
            report(&c, "<stdout>", sink_error(out));
        buf_free(&h);
    }
    const struct ingest_config cfg = {
        .columns = columns,
        .schema = ds,
        .max_line = o->max_line,
        .crlf = o->crlf,
        .flush_bytes = 1 << 20,
        .rows = out,
        .quarantine = quarantine,
        .log_prefix = "ndingest convert",
    };
    ingest_init(&c.g, &cfg);
    if (!c.error[0]) {
        if (o->nfiles == 0)
            convert_file(&c, NULL);
        for (int i = 0; i < o->nfiles; i++)
            convert_file(&c, strcmp(o->files[i], "-") ? o->files[i] : NULL);
    }
    char line[2048];
    const char *error = c.error[0] ? c.error : NULL;
    if (ds)
        ingest_typed_result_json(&c.total, error, line, sizeof line);
    else
        ingest_result_json(&c.total, error, line, sizeof line);
    fputs(line, stderr);
    ingest_free(&c.g);
    sink_close(out);
    sink_close(quarantine);
    if (qfd >= 0)
        close(qfd);
    datasource_free(ds);
    free(c.chunk);
    return c.error[0] ? 2 : 0;
}
