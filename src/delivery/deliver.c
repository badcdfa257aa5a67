/* deliver.c -- the delivery loop: each dataset's day files, oldest first, cut into batches
 * behind the writers and sent to the destination (ClickHouse or PostgreSQL); the cursor
 * stored around every send. */
#include "deliver.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../log.h"
#include "../quarantine.h"
#include "../schema.h"
#include "../schema_pg.h"
#include "../sink.h"
#include "../inflight.h"
#include "../voids.h"
#include "backoff.h"
#include "batch.h"
#include "clickhouse.h"
#include "cursor.h"
#include "postgres.h"
#include "table_check.h"

/* How often an idle loop looks at the files again: the floor of the delay between a row's
 * 200 and its batch being cut (the age cut, --deliver-interval, adds to it). */
#define DELIVER_POLL_MS 50
/* Columns of a table as DESCRIBE gives them, at most. */
#define DELIVER_MAX_TABLE_COLUMNS 1024

/* One dataset's delivery. */
struct stream {
    char name[DS_MAX_NAME + 1];
    struct datasource *ds;     /* NULL: the classic untyped dataset (--columns) */
    /* The columns as the CSV holds them, and the types their cells were checked against
     * (the classic dataset's are text): what the INSERT names and the table must hold. */
    const char *columns[DS_MAX_COLUMNS];
    struct table_want want[DS_MAX_COLUMNS];
    size_t ncolumns;
    struct deliver_stats *st;  /* its row in the shared region */
    char cursor_path[PATH_MAX];
    struct cursor cur;
    struct backoff backoff;
    int64_t next_try_ms;       /* after a failure: not before this */
    /* When the cursor's file was seen to reach each size (oldest first): the age of the
     * oldest undelivered byte is that of the first sample past the cursor. Full, the
     * oldest two merge, keeping the older time: the age errs on the high side. */
    struct {
        uint64_t size;
        int64_t ms;
    } seen[32];
    unsigned nseen;
    uint64_t split_end;        /* a refused batch being halved: the next batch ends here */
    int waiting;               /* the table is unfit: nothing is sent until it is fixed */
    int checked;               /* the table was compared with the definition since start or
                                * the last SIGHUP */
    int64_t recheck_ms;        /* waiting: when the table is looked at again */
    int present;               /* still in the definitions (a removed one finishes its files) */
    int synced;                /* PostgreSQL: the cursor was set from the database's row */
    struct sink *quarantine;   /* opened at the first refused row */
};

struct deliver {
    const struct options *o;
    struct deliver_shared *sh;
    const struct inflight *inflight; /* the workers' ranges not yet answered, or NULL */
    /* The destination, chosen by the URL's scheme: one of the two is set. */
    struct clickhouse *ch;
    struct postgres *pg;
    char host[256];            /* --host-id: part of every batch's identity */
    char dest_dir[PATH_MAX];   /* OUT/.delivery/DEST */
    struct stream *streams;
    size_t nstreams, cap;
    struct batch batch;
    struct buf data;           /* the bytes read for a batch */
    struct buf qrow;           /* one quarantine row */
    struct quarantine_clock qclock;
    struct backoff conn_backoff;
    int64_t conn_next_ms;
    enum deliver_mode mode;
};

static volatile sig_atomic_t stop_requested, reload_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void on_hup(int sig)
{
    (void)sig;
    reload_requested = 1;
}

static int64_t wall_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void relaxed_store(atomic_uint_fast64_t *c, uint64_t v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}

static void relaxed_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

struct deliver_shared *deliver_shared_map(size_t max, char *err, size_t errlen)
{
    size_t size = sizeof(struct deliver_shared) + max * sizeof(struct deliver_stats);
    struct deliver_shared *sh = mmap(NULL, size, PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        snprintf(err, errlen, "mmap: %s", strerror(errno));
        return NULL;
    }
    sh->max = max;
    sh->size = size;
    return sh;
}

void deliver_shared_unmap(struct deliver_shared *sh)
{
    if (sh)
        munmap(sh, sh->size);
}

/* The shared row named name, taken if new; NULL when the region is full. Rows are never
 * given back, so a name keeps its counters across reloads. */
static struct deliver_stats *stats_row(struct deliver_shared *sh, const char *name)
{
    for (size_t i = 0; i < sh->max; i++) {
        struct deliver_stats *s = &sh->stats[i];
        if (atomic_load(&s->used) && !strcmp(s->name, name))
            return s;
    }
    for (size_t i = 0; i < sh->max; i++) {
        struct deliver_stats *s = &sh->stats[i];
        if (!atomic_load(&s->used)) {
            snprintf(s->name, sizeof s->name, "%s", name);
            atomic_store_explicit(&s->used, 1, memory_order_release);
            return s;
        }
    }
    return NULL;
}

static const char *const result_names[DELIVER_RESULTS] = {"stored", "retry", "refused",
                                                           "table", "config"};
static const char *const mode_names[DELIVER_MODES] = {"unknown", "token", "checksum",
                                                       "transaction"};

/* Appends printf-formatted text to out. 0, or -1 when out cannot grow. */
__attribute__((format(printf, 2, 3)))
static int appendf(struct buf *out, const char *fmt, ...)
{
    char line[512]; /* one metric line: a dataset name is at most DS_MAX_NAME bytes */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): va_start above (the analyzer misreads it, as in log.c) */
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line)
        return -1;
    return buf_append(out, line, (size_t)n);
}

static uint64_t load(const atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* One counter family over every dataset. */
static int family(struct buf *out, const struct deliver_shared *sh, const char *name,
                  const char *type, const char *help, size_t field)
{
    int rc = appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (size_t i = 0; i < sh->max && !rc; i++) {
        const struct deliver_stats *s = &sh->stats[i];
        if (atomic_load_explicit(&s->used, memory_order_acquire))
            rc = appendf(out, "%s{dataset=\"%s\"} %llu\n", name, s->name,
                         (unsigned long long)load((const atomic_uint_fast64_t *)((const char *)s + field)));
    }
    return rc;
}

double deliver_worst_lag(const struct deliver_shared *sh)
{
    int64_t now = wall_ms(), worst = 0;
    for (size_t i = 0; i < sh->max; i++) {
        const struct deliver_stats *s = &sh->stats[i];
        if (!atomic_load_explicit(&s->used, memory_order_acquire))
            continue;
        int64_t oldest = atomic_load_explicit(&s->oldest_ms, memory_order_relaxed);
        if (oldest && now - oldest > worst)
            worst = now - oldest;
    }
    return (double)worst / 1000;
}

int deliver_metrics_format(struct buf *out, const struct deliver_shared *sh)
{
    unsigned mode = atomic_load(&sh->mode);
    int rc = appendf(out, "# HELP ndingest_delivery_mode How exactly once is had (token: "
                          "insert_deduplication_token; checksum: block checksums; "
                          "transaction: rows and cursor row in one PostgreSQL transaction)\n"
                          "# TYPE ndingest_delivery_mode gauge\n"
                          "ndingest_delivery_mode{mode=\"%s\"} 1\n"
                          "# HELP ndingest_delivery_restarts_total Delivery processes replaced\n"
                          "# TYPE ndingest_delivery_restarts_total counter\n"
                          "ndingest_delivery_restarts_total %llu\n",
                     mode_names[mode < DELIVER_MODES ? mode : 0],
                     (unsigned long long)load(&sh->restarts));
    rc = rc || family(out, sh, "ndingest_delivery_rows_total", "counter", "Rows stored in the database",
                      offsetof(struct deliver_stats, rows));
    rc = rc || family(out, sh, "ndingest_delivery_bytes_total", "counter", "CSV bytes stored in the database",
                      offsetof(struct deliver_stats, bytes));
    rc = rc || family(out, sh, "ndingest_delivery_quarantined_total", "counter",
                      "Rows the database refused, kept in the quarantine",
                      offsetof(struct deliver_stats, quarantined));
    rc = rc || family(out, sh, "ndingest_delivery_retries_total", "counter", "Batches sent again after a failure",
                      offsetof(struct deliver_stats, retries));
    rc = rc || family(out, sh, "ndingest_delivery_void_ranges_total", "counter",
                      "Void (torn) byte ranges skipped", offsetof(struct deliver_stats, void_ranges));
    rc = rc || family(out, sh, "ndingest_delivery_void_bytes_total", "counter",
                      "Bytes of void ranges skipped", offsetof(struct deliver_stats, void_bytes));
    rc = rc || family(out, sh, "ndingest_delivery_lag_bytes", "gauge",
                      "Bytes in the day files not yet delivered", offsetof(struct deliver_stats, lag_bytes));
    rc = rc || appendf(out, "# HELP ndingest_delivery_batches_total Batches sent, by outcome\n"
                            "# TYPE ndingest_delivery_batches_total counter\n");
    int64_t now = wall_ms();
    for (size_t i = 0; i < sh->max && !rc; i++) {
        const struct deliver_stats *s = &sh->stats[i];
        if (!atomic_load_explicit(&s->used, memory_order_acquire))
            continue;
        for (int r = 0; r < DELIVER_RESULTS && !rc; r++)
            rc = appendf(out, "ndingest_delivery_batches_total{dataset=\"%s\",result=\"%s\"} %llu\n",
                         s->name, result_names[r], (unsigned long long)load(&s->batches[r]));
    }
    rc = rc || appendf(out, "# HELP ndingest_delivery_lag_seconds Age of the oldest row not yet delivered\n"
                            "# TYPE ndingest_delivery_lag_seconds gauge\n");
    for (size_t i = 0; i < sh->max && !rc; i++) {
        const struct deliver_stats *s = &sh->stats[i];
        if (!atomic_load_explicit(&s->used, memory_order_acquire))
            continue;
        int64_t oldest = atomic_load_explicit(&s->oldest_ms, memory_order_relaxed);
        rc = appendf(out, "ndingest_delivery_lag_seconds{dataset=\"%s\"} %.3f\n", s->name,
                     oldest && now > oldest ? (double)(now - oldest) / 1000 : 0.0);
    }
    rc = rc || appendf(out, "# HELP ndingest_delivery_last_success_timestamp_seconds When a batch was last stored\n"
                            "# TYPE ndingest_delivery_last_success_timestamp_seconds gauge\n");
    for (size_t i = 0; i < sh->max && !rc; i++) {
        const struct deliver_stats *s = &sh->stats[i];
        if (atomic_load_explicit(&s->used, memory_order_acquire))
            rc = appendf(out, "ndingest_delivery_last_success_timestamp_seconds{dataset=\"%s\"} %.3f\n",
                         s->name, (double)atomic_load_explicit(&s->last_success_ms, memory_order_relaxed) / 1000);
    }
    rc = rc || appendf(out, "# HELP ndingest_delivery_waiting 1 while the dataset waits for its table to be fixed\n"
                            "# TYPE ndingest_delivery_waiting gauge\n");
    for (size_t i = 0; i < sh->max && !rc; i++) {
        const struct deliver_stats *s = &sh->stats[i];
        if (atomic_load_explicit(&s->used, memory_order_acquire))
            rc = appendf(out, "ndingest_delivery_waiting{dataset=\"%s\"} %u\n", s->name,
                         atomic_load(&s->waiting));
    }
    return rc ? -1 : 0;
}

/* MARK: - Files */

/* Whether base is NAME-YYYY-MM-DD.csv for this name: the day files, not the quarantine's
 * nor the record beside them. */
static int is_day_file(const char *base, const char *name)
{
    size_t n = strlen(name), len = strlen(base);
    if (len != n + 15 || strncmp(base, name, n) != 0 || base[n] != '-' ||
        strcmp(base + n + 11, ".csv") != 0)
        return 0;
    const char *d = base + n + 1; /* YYYY-MM-DD */
    for (int i = 0; i < 10; i++)
        if (i == 4 || i == 7 ? d[i] != '-' : (d[i] < '0' || d[i] > '9'))
            return 0;
    return 1;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The first day file of name after `after` ("" for the first of all), in date order, into
 * next (NAME_MAX + 1 bytes). 1 when there is one, 0 when not, -1 when the directory cannot
 * be read. */
static int next_file(const char *dir, const char *name, const char *after, char *next)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_day_file(e->d_name, name) || strcmp(e->d_name, after) <= 0)
            continue;
        if (!found || strcmp(e->d_name, next) < 0) {
            snprintf(next, NAME_MAX + 1, "%s", e->d_name);
            found = 1;
        }
    }
    closedir(d);
    return found;
}

/* Whether no worker writes the day file base any more: its day ended --deliver-grace ago
 * (workers date every write, so nothing goes to yesterday's file after midnight; the grace
 * covers a write that checked the date just before it). */
static int file_finished(const struct options *o, const char *name, const char *base)
{
    const char *d = base + strlen(name) + 1; /* YYYY-MM-DD, digits checked by is_day_file */
    struct tm tm = {0};
    tm.tm_year = (d[0] - '0') * 1000 + (d[1] - '0') * 100 + (d[2] - '0') * 10 + (d[3] - '0') - 1900;
    tm.tm_mon = (d[5] - '0') * 10 + (d[6] - '0') - 1;
    tm.tm_mday = (d[8] - '0') * 10 + (d[9] - '0') + 1; /* the next midnight */
    tm.tm_isdst = -1;
    time_t end = o->utc ? timegm(&tm) : mktime(&tm);
    return time(NULL) >= end + (time_t)o->deliver_grace;
}

static void day_path(const struct deliver *dv, const char *base, char *path)
{
    snprintf(path, PATH_MAX, "%s/%s", dv->o->out_dir, base);
}

/* Reads [start, start + len) of path into dv->data. 0, or -errno. */
static int read_range(struct deliver *dv, const char *path, uint64_t start, size_t len)
{
    dv->data.len = 0;
    if (buf_reserve(&dv->data, len ? len : 1))
        return -ENOMEM;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, dv->data.p + got, len - got, (off_t)(start + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            close(fd);
            return -e;
        }
        got += (size_t)r;
    }
    close(fd);
    dv->data.len = got;
    return 0;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) ? 0 : (uint64_t)st.st_size;
}

/* MARK: - The cursor */

static int store(struct stream *s)
{
    char err[PATH_MAX + 128];
    if (cursor_store(s->cursor_path, &s->cur, err, sizeof err)) {
        log_error("ndingest deliver: %s", err);
        return -1;
    }
    return 0;
}

/* MARK: - Sending */

/* Which shard a batch goes to: a hash of its identity, so that a resent batch meets the
 * block it may have left there (FNV-1a: stable across builds and hosts). */
static int shard_of(const struct deliver *dv, const struct stream *s, uint64_t start)
{
    int n = dv->ch ? clickhouse_shards(dv->ch) : 1;
    if (n <= 1)
        return 0;
    char id[PATH_MAX + 300];
    int len = snprintf(id, sizeof id, "%s:%s:%llu", dv->host, s->cur.file,
                       (unsigned long long)start);
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < len && i < (int)sizeof id; i++)
        h = (h ^ (unsigned char)id[i]) * 1099511628211ull;
    return (int)(h % (uint64_t)n);
}

/* Appends a row the database refused to the dataset's quarantine, the database's error as
 * its reason. 0, or -1 (logged): the row is then not passed over. */
static int quarantine_refused(struct deliver *dv, struct stream *s, const char *row, size_t n,
                              const char *why)
{
    if (!s->quarantine) {
        char err[PATH_MAX + 128];
        struct sink_config cfg = {.dir = dv->o->out_dir, .name = s->name,
                                  .suffix = QUARANTINE_SUFFIX, .utc = dv->o->utc};
        s->quarantine = sink_open_daily(&cfg, err, sizeof err);
        if (!s->quarantine) {
            log_error("ndingest deliver: %s: %s", s->name, err);
            return -1;
        }
    }
    while (n && (row[n - 1] == '\n' || row[n - 1] == '\r'))
        n--;
    char reason[600];
    int rl = snprintf(reason, sizeof reason, "database: %s", why);
    struct quarantine_refusal r = {.reason = reason,
                                   .reason_len = rl < 0 ? 0 : (size_t)rl < sizeof reason ? (size_t)rl : sizeof reason - 1};
    dv->qrow.len = 0;
    if (quarantine_row(&dv->qrow, &dv->qclock, time(NULL), &r, 1, row, n) ||
        sink_write(s->quarantine, dv->qrow.p, dv->qrow.len)) {
        log_error("ndingest deliver: %s: quarantine: %s", s->name,
                  sink_error(s->quarantine));
        return -1;
    }
    return 0;
}

/* The file offset of body offset `at` in the batch: body bytes map to the file with the
 * void ranges inside [start, end) left out. */
static uint64_t file_offset_of(const struct batch *b, size_t at, const struct void_range *v,
                               size_t nv)
{
    uint64_t off = b->start, left = at;
    for (size_t i = 0; i < nv; i++) {
        if (v[i].end <= off || v[i].start >= b->end)
            continue;
        uint64_t vs = v[i].start < off ? off : v[i].start;
        if (vs - off >= left)
            break;
        left -= vs - off;
        off = v[i].end;
    }
    return off + left;
}

/* Reads the in-flight batch [batch_start, batch_end) of the cursor's file and cuts it
 * again: the same bytes as when it was first cut. 1, or 0/-1 on failure (logged). */
static int recut(struct deliver *dv, struct stream *s, struct void_range **v, size_t *nv)
{
    char path[PATH_MAX], err[PATH_MAX + 128];
    day_path(dv, s->cur.file, path);
    uint64_t len = s->cur.batch_end - s->cur.batch_start;
    int r = read_range(dv, path, s->cur.batch_start, (size_t)len);
    if (r) {
        log_error("ndingest deliver: %s: read %s: %s", s->name, path, strerror(-r));
        return -1;
    }
    if (voids_load(path, v, nv, err, sizeof err)) {
        log_error("ndingest deliver: %s", err);
        return -1;
    }
    r = batch_cut(&dv->batch, dv->data.p, dv->data.len, s->cur.batch_start, len, *v, *nv);
    if (r < 0)
        return -1;
    if (dv->batch.end != s->cur.batch_end) { /* the file changed under us: never expected */
        log_error("ndingest deliver: %s: %s: the batch [%llu, %llu) no longer ends at a row "
                  "boundary", s->name, path, (unsigned long long)s->cur.batch_start,
                  (unsigned long long)s->cur.batch_end);
        return -1;
    }
    return 1;
}

static void count_batch(struct stream *s, enum deliver_result r)
{
    relaxed_add(&s->st->batches[r], 1);
}

/* PostgreSQL: moves the database's cursor row past a quarantined row, since that row is
 * the truth at the next start. Should this fail, the row is quarantined again after a
 * restart (the quarantine is at least once); the rows' delivery is not affected, since the
 * next batch starts past the row. */
static void skip_in_database(struct deliver *dv, struct stream *s)
{
    struct send_outcome out;
    if (dv->pg && postgres_skip(dv->pg, dv->host, s->name, s->cur.file,
                                (long long)s->cur.offset, &out) != SEND_STORED)
        log_error("ndingest deliver: %s: moving the cursor row past a quarantined row: %s",
                  s->name, out.message);
}

/* The database named the refused row (PostgreSQL's COPY says which line): no halving.
 * Row k > 0: the batch in flight becomes the rows before it, and the rest [row k, end) is
 * cut next (split_end), where the refused row is row 0. Row 0: quarantined at once, the
 * cursor moved past it, and the rest is cut next. About three round trips a refused row
 * whatever the batch's size, where halving takes two per level. */
static void named_refusal(struct deliver *dv, struct stream *s, const struct batch *b,
                          size_t row, const char *why, const struct void_range *v, size_t nv)
{
    if (row > 0) {
        s->split_end = b->end;
        s->cur.batch_end = file_offset_of(b, batch_row_offset(b, row), v, nv);
        store(s);
        return;
    }
    size_t len = batch_row_offset(b, 1);
    if (quarantine_refused(dv, s, b->body.p, len, why)) {
        s->next_try_ms = wall_ms() + backoff_next(&s->backoff, 0);
        return;
    }
    relaxed_add(&s->st->quarantined, 1);
    s->split_end = b->end;
    s->cur.offset = file_offset_of(b, len, v, nv);
    s->cur.in_flight = 0;
    store(s);
    skip_in_database(dv, s);
}

/* Sends the batch in flight (the cursor holds it, stored) and acts on the outcome. */
static void send_in_flight(struct deliver *dv, struct stream *s)
{
    struct void_range *v = NULL;
    size_t nv = 0;
    if (recut(dv, s, &v, &nv) != 1) {
        free(v);
        s->next_try_ms = wall_ms() + backoff_next(&s->backoff, 0);
        return;
    }
    struct batch *b = &dv->batch;
    char token[PATH_MAX + 400];
    const char *tok = NULL;
    if (dv->mode == DELIVER_MODE_TOKEN) {
        snprintf(token, sizeof token, "%s:%s:%llu:%llu", dv->host, s->cur.file,
                 (unsigned long long)b->start, (unsigned long long)b->end);
        tok = token;
    }
    struct send_outcome out;
    enum send_result r = SEND_STORED; /* only void ranges: nothing to send */
    if (b->rows && dv->pg) {
        struct pg_rows rows = {.ds = s->ds, .ncolumns = s->ncolumns};
        struct postgres_batch pb = {.host = dv->host, .dataset = s->name, .table = s->name,
                                    .rows = &rows, .columns = s->ds ? NULL : s->columns,
                                    .file = s->cur.file, .start = (long long)b->start,
                                    .end = (long long)b->end, .body = b->body.p,
                                    .len = b->body.len};
        r = postgres_insert(dv->pg, &pb, &out);
    } else if (b->rows) {
        r = clickhouse_insert(dv->ch, shard_of(dv, s, b->start), s->name, s->columns,
                              s->ncolumns, b->body.p, b->body.len, tok, &out);
    }
    switch (r) {
    case SEND_STORED:
        count_batch(s, DELIVER_STORED);
        relaxed_add(&s->st->rows, b->rows);
        relaxed_add(&s->st->bytes, b->body.len);
        relaxed_add(&s->st->void_ranges, b->voids);
        relaxed_add(&s->st->void_bytes, b->void_bytes);
        atomic_store_explicit(&s->st->last_success_ms, wall_ms(), memory_order_relaxed);
        s->cur.offset = b->end;
        s->cur.in_flight = 0;
        if (s->split_end && s->split_end <= b->end)
            s->split_end = 0;
        store(s);
        backoff_reset(&s->backoff);
        s->next_try_ms = 0;
        break;
    case SEND_RETRY:
    case SEND_CONFIG: {
        count_batch(s, r == SEND_RETRY ? DELIVER_RETRY : DELIVER_CONFIG);
        relaxed_add(&s->st->retries, 1);
        unsigned wait = backoff_next(&s->backoff, out.retry_after_ms);
        if (r == SEND_CONFIG)
            s->synced = 0; /* PostgreSQL: the cursor row moved under us: read it again */
        if (s->backoff.failures == 1 || r == SEND_CONFIG)
            log_error("ndingest deliver: %s: %s; retrying the same batch in %u ms", s->name,
                      out.message, wait);
        s->next_try_ms = wall_ms() + wait;
        break;
    }
    case SEND_TABLE:
        count_batch(s, DELIVER_TABLE);
        s->synced = 0; /* read the cursor row again when the table is fixed */
        log_error("ndingest deliver: %s: the table cannot take the rows (%s); the dataset waits "
                  "until it can (checked again every %u s, and at SIGHUP)", s->name, out.message,
                  dv->o->deliver_retry_max);
        s->waiting = 1;
        s->recheck_ms = wall_ms() + (int64_t)dv->o->deliver_retry_max * 1000;
        atomic_store(&s->st->waiting, 1);
        break;
    case SEND_REFUSED:
        count_batch(s, DELIVER_REFUSED);
        if (out.refused_row >= 0 && (size_t)out.refused_row < b->rows && b->rows > 1) {
            named_refusal(dv, s, b, (size_t)out.refused_row, out.message, v, nv);
        } else if (b->rows == 1) {
            /* The one row the database refuses: to the quarantine, then past it. */
            if (quarantine_refused(dv, s, b->body.p, b->body.len, out.message) == 0) {
                relaxed_add(&s->st->quarantined, 1);
                s->cur.offset = b->end;
                s->cur.in_flight = 0;
                if (s->split_end && s->split_end <= b->end)
                    s->split_end = 0;
                store(s);
                skip_in_database(dv, s);
            } else {
                s->next_try_ms = wall_ms() + backoff_next(&s->backoff, 0);
            }
        } else {
            /* Halve by rows: the first half is the batch in flight now, the second is
             * cut next (split_end bounds it); each half that is refused is halved again. */
            uint64_t mid = file_offset_of(b, batch_row_offset(b, b->rows / 2), v, nv);
            s->split_end = b->end;
            s->cur.batch_end = mid;
            store(s);
        }
        break;
    }
    free(v);
}

/* When the oldest byte past the cursor was first seen (now when none was). */
static int64_t oldest_ms(const struct stream *s, int64_t now)
{
    for (unsigned i = 0; i < s->nseen; i++)
        if (s->seen[i].size > s->cur.offset)
            return s->seen[i].ms;
    return now;
}

static int check_stream(struct deliver *dv, struct stream *s);

/* MARK: - One step of one dataset */

static int sync_cursor(struct deliver *dv, struct stream *s);

/* Cuts the next batch at the cursor if one is due, stores it as in flight and sends it;
 * moves to the next file when this one is finished. Returns 1 when it did something (the
 * loop then comes back at once), 0 when the dataset is idle. */
static int step(struct deliver *dv, struct stream *s)
{
    const struct options *o = dv->o;
    int64_t now = wall_ms();
    if (now < s->next_try_ms) /* after a failure, the table check waits too */
        return 0;
    if ((!s->checked || (s->waiting && now >= s->recheck_ms)) && check_stream(dv, s)) {
        s->next_try_ms = now + backoff_next(&s->backoff, 0); /* a shard did not answer */
        return 0;
    }
    if (s->waiting || now < s->next_try_ms)
        return 0;
    if (dv->pg && !s->synced) {
        if (sync_cursor(dv, s)) {
            s->next_try_ms = now + backoff_next(&s->backoff, 0);
            return 0;
        }
        s->synced = 1;
    }
    if (s->cur.in_flight) {
        send_in_flight(dv, s);
        return 1;
    }
    if (!s->cur.file[0]) {
        int r = next_file(o->out_dir, s->name, "", s->cur.file);
        if (r <= 0)
            return 0;
        s->cur.offset = 0;
    }
    char path[PATH_MAX], err[PATH_MAX + 128];
    day_path(dv, s->cur.file, path);
    uint64_t size = file_size(path);
    /* Rows a request still in flight wrote may yet become void: nothing at or past the
     * first of them is sent (the size is read first, so that a range whose bytes are in it
     * is seen in flight, or, once settled, in the record read after). */
    uint64_t hold = inflight_min_start(dv->inflight, inflight_file_id(s->cur.file));
    int held = hold < size;
    if (held)
        size = hold;
    int finished = !held && file_finished(o, s->name, s->cur.file);

    /* With --header every day's file starts with the header row: never sent. */
    if (o->header && s->cur.offset == 0 && size > 0) {
        if (read_range(dv, path, 0, (size_t)(size < 65536 ? size : 65536)))
            return 0;
        if (batch_cut(&dv->batch, dv->data.p, dv->data.len, 0, 1, NULL, 0) == 1) {
            s->cur.offset = dv->batch.end;
            store(s);
        } else if (!finished) {
            return 0;
        }
    }

    uint64_t avail = size > s->cur.offset ? size - s->cur.offset : 0;
    uint64_t max = o->deliver_batch;
    if (s->split_end && s->split_end > s->cur.offset)
        max = s->split_end - s->cur.offset;
    /* Due by size, by age (the oldest waiting byte), because the file is finished, or
     * because a refused batch is being halved: judged before reading anything. */
    int due = avail >= max || finished || (s->split_end && s->split_end > s->cur.offset) ||
              now - oldest_ms(s, now) >= (int64_t)o->deliver_interval;
    if (avail && due) {
        /* Read up to a batch; a row longer than that is read whole (up to the file's end). */
        uint64_t want = avail < max ? avail : max;
        for (;;) {
            int r = read_range(dv, path, s->cur.offset, (size_t)want);
            if (r) {
                log_error("ndingest deliver: %s: read %s: %s", s->name, path, strerror(-r));
                s->next_try_ms = now + backoff_next(&s->backoff, 0);
                return 0;
            }
            struct void_range *v = NULL;
            size_t nv = 0;
            if (voids_load(path, &v, &nv, err, sizeof err)) {
                log_error("ndingest deliver: %s", err);
                s->next_try_ms = now + backoff_next(&s->backoff, 0);
                return 0;
            }
            int c = batch_cut(&dv->batch, dv->data.p, dv->data.len, s->cur.offset, max, v, nv);
            free(v);
            if (c < 0)
                return 0;
            if (c == 0 && dv->batch.end == s->cur.offset && want < avail) {
                want = want * 2 < avail ? want * 2 : avail; /* a row longer than the batch */
                continue;
            }
            break;
        }
        struct batch *b = &dv->batch;
        if (b->end > s->cur.offset) {
            s->cur.in_flight = 1;
            s->cur.batch_start = s->cur.offset;
            s->cur.batch_end = b->end;
            if (store(s)) {
                s->cur.in_flight = 0;
                s->next_try_ms = now + backoff_next(&s->backoff, 0);
                return 0;
            }
            send_in_flight(dv, s);
            return 1;
        }
    }
    if (!finished)
        return 0;
    /* A finished file: what is left past the last row boundary is a torn tail nobody will
     * isolate now. Record it (ndingest-check and other loaders then skip it too) and move
     * on once a later file exists. */
    char next[NAME_MAX + 1];
    if (next_file(o->out_dir, s->name, s->cur.file, next) <= 0)
        return 0;
    if (size > s->cur.offset) {
        if (voids_append(path, s->cur.offset, size, "torn", 1)) {
            log_error("ndingest deliver: %s: cannot record the torn tail of %s", s->name, path);
            s->next_try_ms = now + backoff_next(&s->backoff, 0);
            return 0;
        }
        relaxed_add(&s->st->void_ranges, 1);
        relaxed_add(&s->st->void_bytes, size - s->cur.offset);
    }
    snprintf(s->cur.file, sizeof s->cur.file, "%s", next);
    s->cur.offset = 0;
    s->split_end = 0;
    s->nseen = 0;
    store(s);
    skip_in_database(dv, s); /* else a restart would go back to the finished file */
    return 1;
}

/* Notes the cursor file's size now, and publishes the bytes written and not yet delivered
 * (the rest of the cursor's file and every later one) and the oldest one's age. */
static void measure_lag(struct deliver *dv, struct stream *s, int64_t now)
{
    uint64_t lag = 0;
    char path[PATH_MAX], f[NAME_MAX + 1];
    snprintf(f, sizeof f, "%s", s->cur.file);
    if (!f[0] && next_file(dv->o->out_dir, s->name, "", f) <= 0)
        f[0] = '\0';
    int later = 0;
    if (f[0]) {
        day_path(dv, f, path);
        uint64_t size = file_size(path), off = s->cur.file[0] ? s->cur.offset : 0;
        lag += size > off ? size - off : 0;
        unsigned k = 0; /* samples the cursor has passed are dropped */
        while (k < s->nseen && s->seen[k].size <= off)
            k++;
        memmove(s->seen, s->seen + k, (s->nseen - k) * sizeof *s->seen);
        s->nseen -= k;
        if (size > off && (!s->nseen || size > s->seen[s->nseen - 1].size)) {
            if (s->nseen == sizeof s->seen / sizeof *s->seen) {
                s->seen[1].ms = s->seen[0].ms;
                memmove(s->seen, s->seen + 1, (s->nseen - 1) * sizeof *s->seen);
                s->nseen--;
            }
            s->seen[s->nseen].size = size;
            s->seen[s->nseen++].ms = now;
        }
    }
    while (f[0] && next_file(dv->o->out_dir, s->name, f, f) > 0) {
        day_path(dv, f, path);
        lag += file_size(path);
        later = 1;
    }
    relaxed_store(&s->st->lag_bytes, lag);
    int64_t oldest = lag ? oldest_ms(s, now) : 0;
    if (lag && later && !s->nseen && !atomic_load_explicit(&s->st->oldest_ms, memory_order_relaxed))
        oldest = now; /* only later files wait: their age from when first seen */
    else if (lag && later && !s->nseen)
        oldest = atomic_load_explicit(&s->st->oldest_ms, memory_order_relaxed);
    atomic_store_explicit(&s->st->oldest_ms, oldest, memory_order_relaxed);
}

/* MARK: - Datasets */

/* The columns the dataset's CSV holds, in order: its definition's, or --columns as text. */
static void set_columns(const struct deliver *dv, struct stream *s)
{
    if (s->ds) {
        s->ncolumns = s->ds->ncolumns;
        for (size_t i = 0; i < s->ncolumns; i++) {
            s->columns[i] = s->ds->columns[i].name;
            s->want[i] = (struct table_want){s->ds->columns[i].name, s->ds->columns[i].type};
        }
    } else {
        s->ncolumns = dv->o->columns.count;
        for (size_t i = 0; i < s->ncolumns; i++) {
            s->columns[i] = dv->o->columns.names[i];
            s->want[i] = (struct table_want){s->columns[i], {.kind = TYPE_STRING}};
        }
    }
}

static int add_stream(struct deliver *dv, const char *name, struct datasource *ds)
{
    for (size_t i = 0; i < dv->nstreams; i++) {
        struct stream *s = &dv->streams[i];
        if (!strcmp(s->name, name)) {
            datasource_free(s->ds);
            s->ds = ds;
            set_columns(dv, s);
            s->present = 1;
            s->checked = 0; /* SIGHUP: check the table again */
            return 0;
        }
    }
    if (dv->nstreams == dv->cap) {
        size_t cap = dv->cap ? dv->cap * 2 : 8;
        struct stream *n = realloc(dv->streams, cap * sizeof *n);
        if (!n)
            return -1;
        dv->streams = n;
        dv->cap = cap;
    }
    struct stream *s = &dv->streams[dv->nstreams];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ds = ds;
    set_columns(dv, s);
    s->present = 1;
    s->st = stats_row(dv->sh, name);
    if (!s->st) {
        log_error("ndingest deliver: %s: no room for its counters", name);
        return -1;
    }
    int len = snprintf(s->cursor_path, sizeof s->cursor_path, "%s/%.*s.cursor", dv->dest_dir,
                       DS_MAX_NAME, name);
    if (len < 0 || (size_t)len >= sizeof s->cursor_path) {
        log_error("ndingest deliver: %s: the cursor's path is too long", name);
        return -1;
    }
    char err[PATH_MAX + 128];
    if (cursor_load(s->cursor_path, &s->cur, err, sizeof err)) {
        log_error("ndingest deliver: %s", err);
        return -1;
    }
    backoff_init(&s->backoff, 100, dv->o->deliver_retry_max * 1000u,
                 (uint64_t)getpid() * 2654435761u ^ (uint64_t)wall_ms() ^ dv->nstreams);
    dv->nstreams++;
    return 0;
}

/* The datasets to deliver: every DIR/NAME.datasource with --datasets, else the classic
 * one (--name). A dataset no longer defined stays, to finish its files. 0, or -1 after a
 * logged error (a bad definition: the previous set stays). */
static int load_datasets(struct deliver *dv)
{
    const struct options *o = dv->o;
    for (size_t i = 0; i < dv->nstreams; i++)
        dv->streams[i].present = 0;
    if (!o->datasets)
        return add_stream(dv, o->name, NULL);
    DIR *d = opendir(o->datasets);
    if (!d) {
        log_error("ndingest deliver: %s: %s", o->datasets, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    char **names = NULL;
    size_t n = 0, cap = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= 11 || strcmp(e->d_name + len - 11, ".datasource") != 0 || e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                rc = -1;
                break;
            }
            names = nn;
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (names)
        qsort(names, n, sizeof *names, compare_names);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char path[PATH_MAX], err[600];
        snprintf(path, sizeof path, "%s/%s", o->datasets, names[i]);
        struct datasource *ds = datasource_load(path, err, sizeof err);
        if (!ds) {
            log_error("ndingest deliver: %s", err);
            rc = -1;
            break;
        }
        rc = add_stream(dv, ds->name, ds);
        if (rc)
            datasource_free(ds);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* MARK: - The server */

static int connect_server(struct deliver *dv)
{
    int64_t now = wall_ms();
    if (dv->mode != DELIVER_MODE_UNKNOWN || now < dv->conn_next_ms)
        return dv->mode != DELIVER_MODE_UNKNOWN;
    int major = 0, minor = 0;
    struct send_outcome out;
    if (dv->pg ? postgres_connect(dv->pg, &out) != SEND_STORED
               : clickhouse_version(dv->ch, &major, &minor, &out) != SEND_STORED) {
        unsigned wait = backoff_next(&dv->conn_backoff, out.retry_after_ms);
        if (dv->conn_backoff.failures == 1)
            log_error("ndingest deliver: %s: %s; trying again (every %u ms at most)",
                      dv->pg ? "PostgreSQL" : "ClickHouse", out.message,
                      dv->o->deliver_retry_max * 1000u);
        dv->conn_next_ms = now + wait;
        return 0;
    }
    backoff_reset(&dv->conn_backoff);
    if (dv->pg) {
        dv->mode = DELIVER_MODE_TRANSACTION;
        atomic_store(&dv->sh->mode, dv->mode);
        log_info("ndingest deliver: PostgreSQL: exactly once by one transaction (the rows "
                 "and the cursor row in " PG_CURSOR_TABLE "); local cursors in %s", dv->dest_dir);
        return 1;
    }
    dv->mode = major > 22 || (major == 22 && minor >= 2) ? DELIVER_MODE_TOKEN
                                                         : DELIVER_MODE_CHECKSUM;
    atomic_store(&dv->sh->mode, dv->mode);
    log_info("ndingest deliver: ClickHouse %d.%d at %s: exactly once by %s", major, minor,
             clickhouse_database(dv->ch),
             dv->mode == DELIVER_MODE_TOKEN ? "insert_deduplication_token"
                                            : "block checksums (ReplicatedMergeTree tables; "
                                              "a plain MergeTree is at least once)");
    return 1;
}

/* Makes a dataset's missing table (--deliver-create) on one shard: the statements
 * `schema --clickhouse --database DB` prints (the database if missing, the table and its
 * quarantine's), one request each; the SET line is the client's own business (it sends
 * the setting with every statement on 18.16). Not for the classic dataset, which has no
 * types, nor for a cluster's local tables (`schema --cluster` prints those). 0 when made. */
static int create_table(struct deliver *dv, struct stream *s, int shard)
{
    if (!s->ds || clickhouse_shards(dv->ch) > 1)
        return -1;
    struct buf sql = {0};
    char err[600] = "";
    int rc = -1;
    if (schema_clickhouse_in(s->ds, s->name, clickhouse_database(dv->ch), NULL, &sql, err,
                             sizeof err) == 0 && !buf_append(&sql, "", 1)) {
        rc = 0;
        for (char *at = sql.p, *end; rc == 0 && *at; at = end + 2) {
            end = strstr(at, ";\n");
            if (!end)
                break;
            *end = '\0';
            while (*at == '\n')
                at++;
            struct send_outcome out;
            if (strncmp(at, "SET ", 4) != 0 &&
                clickhouse_execute(dv->ch, shard, at, &out) != SEND_STORED) {
                log_error("ndingest deliver: %s: %s failed: %s", s->name, at, out.message);
                rc = -1;
            }
        }
        if (rc == 0)
            log_info("ndingest deliver: %s: created the table %s.%s", s->name,
                     clickhouse_database(dv->ch), s->name);
    } else {
        log_error("ndingest deliver: %s: %s", s->name, err[0] ? err : "out of memory");
    }
    buf_free(&sql);
    return rc;
}

/* PostgreSQL: the database's cursor row is the truth, the local cursor file a hint. At a
 * stream's first step the local cursor is set from the row: the row ahead (a batch
 * committed, the process killed before the file was stored) moves it on and drops the
 * batch in flight; the row behind (the database restored, the row deleted) moves it back,
 * and those rows are sent again, as the database lacks them. Only a batch in flight that
 * starts at the row's place is kept, to be sent again as the same bytes. No row: from the
 * first day file's start. 0 when set, -1 when the row could not be read (tried again). */
static int sync_cursor(struct deliver *dv, struct stream *s)
{
    struct postgres_cursor pc;
    struct send_outcome out;
    if (postgres_cursor(dv->pg, dv->host, s->name, &pc, &out) != SEND_STORED) {
        log_error("ndingest deliver: %s: reading the cursor row: %s", s->name, out.message);
        return -1;
    }
    /* no row is the start of the first file: a local cursor at a file's start agrees */
    int same = (!strcmp(pc.file, s->cur.file) && (uint64_t)pc.offset == s->cur.offset) ||
               (!pc.file[0] && s->cur.offset == 0);
    if (same)
        return 0; /* the batch in flight, if any, starts there: sent again as it is */
    if (s->cur.in_flight && !strcmp(pc.file, s->cur.file) &&
        (uint64_t)pc.offset == s->cur.batch_end) {
        /* The batch in flight was committed and the process ended before it counted it:
         * counted now, so that the rows delivered add up across restarts. */
        struct void_range *v = NULL;
        size_t nv = 0;
        if (recut(dv, s, &v, &nv) == 1) {
            count_batch(s, DELIVER_STORED);
            relaxed_add(&s->st->rows, dv->batch.rows);
            relaxed_add(&s->st->bytes, dv->batch.body.len);
        }
        free(v);
        s->cur.offset = s->cur.batch_end;
        s->cur.in_flight = 0;
        return store(s);
    }
    if (s->cur.file[0] || pc.file[0])
        log_info("ndingest deliver: %s: the database's cursor (%s at %lld) differs from the "
                 "local one (%s at %llu): the database's is used", s->name,
                 pc.file[0] ? pc.file : "none", pc.offset, s->cur.file[0] ? s->cur.file : "none",
                 (unsigned long long)s->cur.offset);
    snprintf(s->cur.file, sizeof s->cur.file, "%s", pc.file);
    s->cur.offset = pc.file[0] ? (uint64_t)pc.offset : 0;
    s->cur.in_flight = 0;
    s->cur.batch_start = s->cur.batch_end = 0;
    s->split_end = 0;
    s->nseen = 0;
    return store(s);
}

/* --deliver-create on PostgreSQL: a missing table made with the statements `ndingest schema
 * NAME --postgres` prints (the cursor table's CREATE TABLE IF NOT EXISTS too), or for the
 * untyped dataset a table of text columns. A table that exists but lacks a column is left
 * alone (the dataset waits, as without the option). 0 when made. */
static int create_table_postgres(struct deliver *dv, struct stream *s)
{
    struct buf sql = {0};
    char err[600] = "", path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.datasource", dv->o->datasets ? dv->o->datasets : ".",
             s->name);
    int rc = s->ds ? schema_postgres(s->ds, path, &sql, err, sizeof err)
                   : schema_postgres_untyped(s->name, s->columns, s->ncolumns, &sql);
    if (rc == 0 && buf_append(&sql, "", 1) == 0) {
        struct send_outcome out;
        enum send_result r = postgres_create_table(dv->pg, s->name, sql.p, &out);
        if (r == SEND_STORED)
            log_info("ndingest deliver: %s: created the table %s (--deliver-create)", s->name,
                     s->name);
        else if (r != SEND_TABLE)
            log_error("ndingest deliver: %s: --deliver-create: %s", s->name, out.message);
        rc = r == SEND_STORED ? 0 : -1;
    } else {
        log_error("ndingest deliver: %s: --deliver-create: %s", s->name,
                  err[0] ? err : "out of memory");
        rc = -1;
    }
    buf_free(&sql);
    return rc;
}

/* PostgreSQL: the table and the columns the batch names must exist (a SELECT of them);
 * types are not compared, since PostgreSQL refuses a value a column cannot hold rather than
 * wrapping it (such rows go to the quarantine). SEND_STORED when it fits. */
static enum send_result check_stream_postgres(struct deliver *dv, struct stream *s, int quiet)
{
    struct pg_rows rows = {.ds = s->ds, .ncolumns = s->ncolumns};
    struct send_outcome out;
    enum send_result r = postgres_check_table(dv->pg, s->name, &rows, s->ds ? NULL : s->columns,
                                              &out);
    if (r == SEND_TABLE && dv->o->deliver_create && create_table_postgres(dv, s) == 0)
        r = postgres_check_table(dv->pg, s->name, &rows, s->ds ? NULL : s->columns, &out);
    if (r == SEND_TABLE && !quiet)
        log_error("ndingest deliver: %s: %s; the dataset waits until the table is fixed "
                  "(ndingest schema %s --postgres prints it)", s->name, out.message, s->name);
    else if (r != SEND_STORED && r != SEND_TABLE)
        log_error("ndingest deliver: %s: checking the table: %s", s->name, out.message);
    return r;
}

/* ClickHouse: every shard's DESCRIBE TABLE against the definition (table_check), the table
 * made first with --deliver-create when it is missing. 1 unfit, 0 fits, -1 a shard did
 * not answer. */
static int check_stream_clickhouse(struct deliver *dv, struct stream *s, int quiet)
{
    struct clickhouse_column *cols = malloc(DELIVER_MAX_TABLE_COLUMNS * sizeof *cols);
    struct table_problem problems[8];
    if (!cols)
        return -1;
    int rc = 0, unfit = 0;
    for (int shard = 0; shard < clickhouse_shards(dv->ch) && !unfit && rc == 0; shard++) {
        size_t n = 0;
        struct send_outcome out;
        enum send_result r = clickhouse_describe(dv->ch, shard, s->name, cols,
                                                 DELIVER_MAX_TABLE_COLUMNS, &n, &out);
        if (r == SEND_TABLE && dv->o->deliver_create && create_table(dv, s, shard) == 0)
            r = clickhouse_describe(dv->ch, shard, s->name, cols, DELIVER_MAX_TABLE_COLUMNS,
                                    &n, &out);
        if (r == SEND_TABLE) {
            if (!quiet)
                log_error("ndingest deliver: %s: no table %s.%s on shard %d: the dataset waits "
                          "(create it, or use --deliver-create)", s->name,
                          clickhouse_database(dv->ch), s->name, shard + 1);
            unfit = 1;
        } else if (r != SEND_STORED) {
            log_error("ndingest deliver: %s: DESCRIBE TABLE on shard %d: %s", s->name,
                      shard + 1, out.message);
            rc = -1;
        } else {
            size_t np = table_check(s->want, s->ncolumns, cols, n, problems,
                                    sizeof problems / sizeof *problems);
            for (size_t k = 0; k < np && k < sizeof problems / sizeof *problems && !quiet; k++)
                log_error("ndingest deliver: %s: table %s.%s on shard %d: column %s: %s; the "
                          "dataset waits until the table is fixed", s->name,
                          clickhouse_database(dv->ch), s->name, shard + 1,
                          problems[k].column, problems[k].message);
            unfit = np > 0;
        }
    }
    free(cols);
    return rc ? rc : unfit;
}

/* Compares the dataset's table with the definition (on every shard): a table missing (and
 * not created), a column missing, or a type that cannot hold every value the definition
 * accepts parks the dataset: its files keep buffering and the others go on. A parked
 * dataset is looked at again every --deliver-retry-max seconds and at SIGHUP, and goes on
 * by itself once its table fits (a table missing for a moment, as while a server starts
 * or stops, parks it only that long). 0 when the tables could be read (s->waiting says the
 * verdict), -1 when a shard did not answer (looked at again later). */
static int check_stream(struct deliver *dv, struct stream *s)
{
    int quiet = s->waiting; /* still unfit: said already */
    int unfit;
    if (dv->pg) {
        enum send_result r = check_stream_postgres(dv, s, quiet);
        if (r != SEND_STORED && r != SEND_TABLE)
            return -1;
        unfit = r == SEND_TABLE;
    } else if ((unfit = check_stream_clickhouse(dv, s, quiet)) < 0) {
        return -1;
    }
    if (s->waiting && !unfit)
        log_info("ndingest deliver: %s: the table fits: delivering", s->name);
    s->waiting = unfit;
    s->checked = 1;
    s->recheck_ms = wall_ms() + (int64_t)dv->o->deliver_retry_max * 1000;
    atomic_store(&s->st->waiting, (unsigned)unfit);
    return 0;
}

/* A name for the PostgreSQL destination's local cursors: the URL's host, port and
 * database, each byte outside [A-Za-z0-9._-] made '_' (the user and the parameters are left
 * out: the same database is the same cursors). */
static void postgres_dir_name(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *at = strchr(p, '@'), *q = strchr(p, '?');
    if (at && (!q || at < q))
        p = at + 1;
    size_t o = 0;
    for (; *p && *p != '?' && o + 1 < cap; p++)
        out[o++] = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' ? *p : '_';
    out[o] = '\0';
}

static int make_dest_dir(struct deliver *dv)
{
    char pg_name[200];
    if (dv->pg)
        postgres_dir_name(dv->o->deliver, pg_name, sizeof pg_name);
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/.delivery", dv->o->out_dir);
    if (mkdir(dv->o->out_dir, 0755) && errno != EEXIST)
        return -1;
    if (mkdir(p, 0755) && errno != EEXIST)
        return -1;
    if (dv->pg)
        snprintf(dv->dest_dir, sizeof dv->dest_dir, "%s/.delivery/postgresql-%s", dv->o->out_dir,
                 pg_name);
    else
        snprintf(dv->dest_dir, sizeof dv->dest_dir, "%s/.delivery/clickhouse-%s", dv->o->out_dir,
                 clickhouse_database(dv->ch));
    if (mkdir(dv->dest_dir, 0755) && errno != EEXIST)
        return -1;
    return 0;
}

/* NDINGEST_TEST_PG_PAUSE_BEFORE_COMMIT="test-only:MS": the PostgreSQL destination sleeps
 * MS between its COPY (and cursor row) and its COMMIT, so that a test's kill -9 lands there
 * (tests/integration/test_delivery_postgres.py). The "test-only:" prefix is required, so that
 * a stray value does nothing, and ndingest says at start that the pause is on. */
#define TEST_PAUSE_ENV "NDINGEST_TEST_PG_PAUSE_BEFORE_COMMIT"

static void test_pause(void *arg, enum postgres_step step, int fd)
{
    (void)fd;
    unsigned ms = *(const unsigned *)arg;
    if (step == POSTGRES_BEFORE_COMMIT) {
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* The destination by the URL's scheme. 0, or -1 with a message in err. */
static int open_destination(struct deliver *dv, char *err, size_t errlen)
{
    const struct options *o = dv->o;
    if (!strncmp(o->deliver, "postgresql://", 13) || !strncmp(o->deliver, "postgres://", 11)) {
        static unsigned pause_ms;
        struct postgres_config pc = {.url = o->deliver, .connect_timeout_ms = 5000,
                                     .statement_timeout_ms = o->deliver_timeout * 1000u};
        const char *t = getenv(TEST_PAUSE_ENV);
        char *end = NULL;
        unsigned long ms = t && !strncmp(t, "test-only:", 10) ? strtoul(t + 10, &end, 10) : 0;
        if (ms > 0 && ms <= 60000 && end && !*end) {
            pause_ms = (unsigned)ms;
            log_info("ndingest deliver: %s is set: pausing %u ms before every COMMIT (for "
                     "tests only)", TEST_PAUSE_ENV, pause_ms);
            pc.hook = test_pause;
            pc.hook_arg = &pause_ms;
        }
        dv->pg = postgres_open(&pc, err, errlen);
        return dv->pg ? 0 : -1;
    }
    struct clickhouse_config cc = {.url = o->deliver, .credentials_file = o->deliver_credentials,
                                   .connect_timeout_ms = 5000,
                                   .timeout_ms = o->deliver_timeout * 1000u,
                                   .retry_after_max_ms = o->deliver_retry_max * 10000u};
    dv->ch = clickhouse_open(&cc, err, errlen);
    return dv->ch ? 0 : -1;
}

static void close_destination(struct deliver *dv)
{
    clickhouse_close(dv->ch);
    postgres_close(dv->pg);
}

/* Measures every dataset's lag and publishes the sum, without sending: while the server is
 * out of reach (from the start too), the lag still grows and backpressure sees it. */
int deliver_run(const struct options *o, struct deliver_shared *shared,
                const struct inflight *inflight)
{
    char err[PATH_MAX + 128];
    struct deliver dv = {.o = o, .sh = shared, .inflight = inflight};
    if (open_destination(&dv, err, sizeof err)) {
        log_error("ndingest deliver: %s", err);
        return 2;
    }
    if (!dv.sh && !(dv.sh = deliver_shared_map(o->max_datasets * 4u + 1, err, sizeof err))) {
        log_error("ndingest deliver: %s", err);
        close_destination(&dv);
        return 1;
    }
    if (o->host_id)
        snprintf(dv.host, sizeof dv.host, "%s", o->host_id);
    else if (gethostname(dv.host, sizeof dv.host))
        snprintf(dv.host, sizeof dv.host, "localhost");
    int rc = 0;
    if (make_dest_dir(&dv)) {
        log_error("ndingest deliver: cannot make %s: %s", dv.dest_dir, strerror(errno));
        rc = 1;
    } else if (load_datasets(&dv)) {
        rc = 2;
    }
    backoff_init(&dv.conn_backoff, 100, o->deliver_retry_max * 1000u,
                 (uint64_t)getpid() ^ (uint64_t)wall_ms());

    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGTERM);
    sigaddset(&unblock, SIGINT);
    sigaddset(&unblock, SIGHUP);
    sigprocmask(SIG_UNBLOCK, &unblock, NULL);

    while (!rc && !stop_requested) {
        if (reload_requested) {
            reload_requested = 0;
            if (load_datasets(&dv) == 0)
                log_info("ndingest deliver: SIGHUP: %zu dataset%s", dv.nstreams,
                         dv.nstreams == 1 ? "" : "s");
        }
        /* The lag is measured whether or not the server answers: it is what backpressure
         * and the operator watch while it does not. */
        int busy = 0, connected = connect_server(&dv);
        uint64_t lag = 0;
        for (size_t i = 0; i < dv.nstreams && !stop_requested; i++) {
            measure_lag(&dv, &dv.streams[i], wall_ms());
            if (connected)
                busy |= step(&dv, &dv.streams[i]);
            lag += atomic_load_explicit(&dv.streams[i].st->lag_bytes, memory_order_relaxed);
        }
        relaxed_store(&dv.sh->lag_bytes, lag);
        if (!busy) {
            struct timespec ts = {0, DELIVER_POLL_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    for (size_t i = 0; i < dv.nstreams; i++) {
        datasource_free(dv.streams[i].ds);
        sink_close(dv.streams[i].quarantine);
    }
    free(dv.streams);
    batch_free(&dv.batch);
    buf_free(&dv.data);
    buf_free(&dv.qrow);
    close_destination(&dv);
    if (!shared)
        deliver_shared_unmap(dv.sh);
    return rc;
}
