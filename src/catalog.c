/* catalog.c -- the datasets a server serves: definitions, per-process sinks, shared names. */
#include "catalog.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "csv.h"
#include "quarantine.h"
#include "sink.h"

/* A process killed between claiming an entry and naming it would leave it "being named":
 * the others wait this many yields, then pass over it. */
#define CATALOG_CLAIM_SPINS 100000
/* The longest dataset name whose day files' names fit in NAME_MAX (255) bytes: the
 * quarantine's, NAME-YYYY-MM-DD.quarantine.csv, adds 11 + 15 bytes. */
#define CATALOG_NAME_MAX (255 - 11 - (int)(sizeof QUARANTINE_SUFFIX - 1))

/* MARK: - The shared table */

struct catalog_shared *catalog_shared_map(size_t names_max, int nslots, char *err, size_t errlen)
{
    size_t head = (sizeof(struct catalog_shared) + 63) & ~(size_t)63;
    size_t entries = names_max * sizeof(struct catalog_entry);
    size_t counters = names_max * (size_t)nslots * sizeof(struct metrics_dataset);
    size_t size = head + ((entries + 63) & ~(size_t)63) + counters;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "mmap of %zu bytes for the datasets' shared table: %s", size,
                 strerror(errno));
        return NULL;
    }
    struct catalog_shared *sh = p;
    sh->nentries = names_max;
    sh->nslots = nslots;
    sh->entries = (struct catalog_entry *)((char *)p + head);
    sh->counters = (struct metrics_dataset *)((char *)sh->entries + ((entries + 63) & ~(size_t)63));
    sh->size = size;
    return sh;
}

void catalog_shared_unmap(struct catalog_shared *sh)
{
    if (sh)
        munmap(sh, sh->size);
}

void catalog_shared_torn(struct catalog_shared *sh)
{
    for (size_t i = 0; sh && i < sh->nentries; i++) {
        atomic_store(&sh->entries[i].rows_torn, 1);
        atomic_store(&sh->entries[i].quarantine_torn, 1);
    }
}

#define FNV_BASIS 1469598103934665603ULL

/* FNV-1a of s and its NUL (so that "ab","c" and "a","bc" differ), continuing from h. */
static uint64_t hash_str(uint64_t h, const char *s)
{
    do
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    while (*s++);
    return h;
}

/* Where a name's probe starts. */
static uint64_t name_hash(const char *s)
{
    return hash_str(FNV_BASIS, s);
}

/* The shape of ds's rows, as catalog_entry.shape keeps it: every column's name, type and
 * path as written, and DEFAULT, in order; never 0 (the entry's "none yet"). */
static uint64_t shape_hash(const struct datasource *ds)
{
    uint64_t h = FNV_BASIS;
    for (size_t i = 0; i < ds->ncolumns; i++) {
        const struct ds_column *c = &ds->columns[i];
        h = hash_str(hash_str(hash_str(h, c->name), c->type_text), c->path);
        h = hash_str(h, c->has_default ? "D" : "");
        h = hash_str(h, c->has_default ? c->default_text : "");
    }
    return h ? h : 1;
}

/* The entry named name, claimed now if it has none: several processes may claim at once
 * (the main process and the workers reload on SIGHUP), so an entry is taken by a
 * compare-and-swap and published once its name is written. -1 when the table is full. */
static long claim(struct catalog_shared *sh, const char *name)
{
    size_t n = sh->nentries, start = (size_t)(name_hash(name) % n);
    for (size_t k = 0; k < n; k++) {
        size_t i = (start + k) % n;
        struct catalog_entry *e = &sh->entries[i];
        unsigned st = atomic_load(&e->state);
        if (st == 0) {
            unsigned free_ = 0;
            if (atomic_compare_exchange_strong(&e->state, &free_, 1)) {
                snprintf(e->name, sizeof e->name, "%s", name);
                atomic_store(&e->state, 2);
                return (long)i;
            }
            st = free_;
        }
        for (int spin = 0; st == 1 && spin < CATALOG_CLAIM_SPINS; spin++) {
            sched_yield();
            st = atomic_load(&e->state);
        }
        if (st == 2 && !strcmp(e->name, name))
            return (long)i;
    }
    return -1;
}

size_t catalog_metrics_view(const struct catalog_shared *sh, struct metrics_dataset_view *view,
                            size_t max)
{
    size_t n = 0;
    for (size_t i = 0; sh && i < sh->nentries && n < max; i++)
        if (atomic_load(&sh->entries[i].state) == 2)
            view[n++] = (struct metrics_dataset_view){sh->entries[i].name, sh->counters + i,
                                                      sh->nentries};
    return n;
}

/* MARK: - Loading */

static int by_name(const void *a, const void *b)
{
    const struct catalog_dataset *x = a, *y = b;
    return strcmp(x->ds->name, y->ds->name);
}

/* The columns as the JSON engine reads them (datasource.h compiles them from the paths). */
static const struct json_columns *columns_of(const struct datasource *ds)
{
    return &ds->json;
}

static void catalog_free(struct catalog *c)
{
    for (size_t i = 0; i < c->count; i++) {
        struct catalog_dataset *d = &c->sets[i];
        struct sink *sinks[] = {d->rows, d->quarantine};
        for (size_t k = 0; k < 2; k++) {
            if (!sinks[k])
                continue;
            if (c->fsync)
                sink_sync(sinks[k]); /* a failure was the request's to report; none is left */
            sink_close(sinks[k]);
        }
        buf_free(&d->header);
        datasource_free(d->ds);
    }
    free(c->sets);
    free(c);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

/* A name's day file is NAME-YYYY-MM-DD.csv whatever its columns: other columns would
 * append rows of a second shape to it, loadable into neither table. */
static void columns_changed(const struct datasource *ds, const char *dir, char *err,
                            size_t errlen)
{
    snprintf(err, errlen, "%s/%s.datasource: the columns of dataset %s changed; its day's "
             "file holds rows of the old shape: give the new schema a new dataset name, or "
             "move the day's files and restart", dir, ds->name, ds->name);
}

struct catalog *catalog_load(const char *dir, size_t max, const char *required,
                             struct catalog_shared *sh, char *err, size_t errlen)
{
    struct catalog *c = calloc(1, sizeof *c);
    DIR *d = c ? opendir(dir) : NULL;
    if (!c || !d || !(c->sets = calloc(max, sizeof *c->sets))) {
        snprintf(err, errlen, "--datasets %s: %s", dir, !c || d ? "out of memory" : strerror(errno));
        if (d)
            closedir(d);
        free(c);
        return NULL;
    }
    c->refs = 1;
    c->shared = sh;
    int failed = 0;
    struct dirent *e;
    while (!failed && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ".datasource"))
            continue;
        if (c->count == max) {
            snprintf(err, errlen, "--datasets %s: more than --max-datasets %zu definitions", dir, max);
            failed = 1;
            break;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        /* Its longest file, NAME-YYYY-MM-DD.quarantine.csv, must fit in a file name, or
         * every body with a refused line would be a 500 after its rows were written. */
        size_t name_len = strlen(e->d_name) - strlen(".datasource");
        if (name_len > CATALOG_NAME_MAX) {
            snprintf(err, errlen, "%s: a dataset name of %zu bytes: its day files' names "
                     "would be too long (at most %d bytes)", path, name_len, CATALOG_NAME_MAX);
            failed = 1;
            break;
        }
        struct datasource *ds = datasource_load(path, err, errlen);
        if (!ds) {
            failed = 1;
            break;
        }
        c->sets[c->count++].ds = ds;
    }
    closedir(d);
    if (!failed && !c->count) {
        snprintf(err, errlen, "--datasets %s: no NAME.datasource file", dir);
        failed = 1;
    }
    if (!failed)
        qsort(c->sets, c->count, sizeof *c->sets, by_name);
    if (!failed && required && !catalog_find(c, required, strlen(required))) {
        snprintf(err, errlen, "--default-dataset %s: no %s/%s.datasource", required, dir, required);
        failed = 1;
    }
    for (size_t i = 0; !failed && i < c->count; i++) {
        long at = claim(sh, c->sets[i].ds->name);
        if (at < 0) {
            snprintf(err, errlen, "--datasets %s: %zu dataset names since start, the most "
                     "--max-datasets allows: restart to serve %s", dir, sh->nentries,
                     c->sets[i].ds->name);
            failed = 1;
        }
        c->sets[i].entry = (size_t)at;
    }
    /* Checked for every name before any new one's shape is kept, so that a refused set
     * leaves no shape behind but those of names it shares with the sets before it. */
    for (size_t i = 0; !failed && i < c->count; i++) {
        uint64_t was = atomic_load(&sh->entries[c->sets[i].entry].shape);
        failed = was && was != shape_hash(c->sets[i].ds);
        if (failed)
            columns_changed(c->sets[i].ds, dir, err, errlen);
    }
    for (size_t i = 0; !failed && i < c->count; i++) {
        uint_least64_t was = 0, now = shape_hash(c->sets[i].ds);
        /* Another process may load the same directory at once: the first shape kept wins. */
        if (!atomic_compare_exchange_strong(&sh->entries[c->sets[i].entry].shape, &was, now)
            && was != now) {
            columns_changed(c->sets[i].ds, dir, err, errlen);
            failed = 1;
        }
    }
    if (failed) {
        catalog_free(c);
        return NULL;
    }
    return c;
}

/* MARK: - Serving */

int catalog_open(struct catalog *c, const struct catalog_files *f, char *err, size_t errlen)
{
    c->fsync = f->fsync;
    for (size_t i = 0; i < c->count; i++) {
        struct catalog_dataset *d = &c->sets[i];
        struct catalog_entry *e = &c->shared->entries[d->entry];
        const struct json_columns *cols = columns_of(d->ds);
        struct sink_config rows = {.dir = f->dir, .name = d->ds->name, .suffix = ".csv",
                                   .utc = f->utc, .torn = &e->rows_torn};
        if (f->header) {
            if (csv_header(&d->header, cols, f->crlf)) {
                snprintf(err, errlen, "out of memory for %s's header row", d->ds->name);
                return -1;
            }
            rows.header = d->header.p;
            rows.header_len = d->header.len;
        }
        if (!(d->rows = sink_open_daily(&rows, err, errlen)))
            return -1;
        if (f->quarantine) {
            struct sink_config bad = {.dir = f->dir, .name = d->ds->name,
                                      .suffix = QUARANTINE_SUFFIX, .utc = f->utc,
                                      .torn = &e->quarantine_torn};
            if (!(d->quarantine = sink_open_daily(&bad, err, errlen)))
                return -1;
        }
        d->ingest = *f->base;
        d->ingest.columns = cols;
        d->ingest.schema = d->ds;
        d->ingest.rows = d->rows;
        d->ingest.quarantine = d->quarantine;
        d->m = c->shared->counters + (size_t)f->slot * c->shared->nentries + d->entry;
    }
    return 0;
}

const struct catalog_dataset *catalog_find(const struct catalog *c, const char *name, size_t len)
{
    size_t lo = 0, hi = c->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *m = c->sets[mid].ds->name;
        size_t ml = strlen(m);
        int cmp = memcmp(m, name, ml < len ? ml : len);
        if (!cmp)
            cmp = ml < len ? -1 : ml > len;
        if (!cmp)
            return &c->sets[mid];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

struct catalog *catalog_hold(struct catalog *c)
{
    c->refs++;
    return c;
}

void catalog_release(struct catalog *c)
{
    if (c && !--c->refs)
        catalog_free(c);
}

void catalog_reopen(struct catalog *c)
{
    for (size_t i = 0; i < c->count; i++) {
        if (c->sets[i].rows)
            sink_reopen(c->sets[i].rows);
        if (c->sets[i].quarantine)
            sink_reopen(c->sets[i].quarantine);
    }
}

int catalog_sync(struct catalog *c, char *err, size_t errlen)
{
    int r = 0;
    for (size_t i = 0; i < c->count; i++) {
        struct sink *sinks[] = {c->sets[i].rows, c->sets[i].quarantine};
        for (size_t k = 0; k < 2; k++) {
            int e = sinks[k] ? sink_sync(sinks[k]) : 0;
            if (e && !r) {
                r = e;
                snprintf(err, errlen, "%s", sink_error(sinks[k]));
            }
        }
    }
    return r;
}
