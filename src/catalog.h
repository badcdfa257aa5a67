/* catalog.h -- the datasets a server serves (--datasets DIR): their definitions, loaded
 * together and replaced together on SIGHUP, each with this process's sinks and ingest
 * configuration; and the table shared by every process that gives each dataset name its
 * torn flags and its counters. */
#ifndef NDINGEST_CATALOG_H
#define NDINGEST_CATALOG_H

#include <stdatomic.h>
#include <stddef.h>

#include "buf.h"
#include "datasource.h"
#include "ingest.h"
#include "metrics.h"

/* Dataset names the shared table holds since start, per --max-datasets: names come and go
 * with SIGHUP, and an entry is never reused (its counters must not move to another name). */
#define CATALOG_NAMES_PER_DATASET 4

/* One dataset name in the memory shared by every process (mapped before the fork). */
struct catalog_entry {
    atomic_uint state; /* 0 free, 1 being named, 2 named */
    char name[DS_MAX_NAME + 1];
    /* sink_config.torn of the dataset's two day files, whichever process writes them. */
    atomic_uint rows_torn, quarantine_torn;
    /* A hash of the columns the name was first loaded with (0 before): its day's file holds
     * rows of that shape, so a reload giving the name other columns is refused. */
    atomic_uint_least64_t shape;
};

/* The shared table: entries[0..nentries), and each worker slot's counters per entry. */
struct catalog_shared {
    size_t nentries;
    int nslots;
    struct catalog_entry *entries;
    struct metrics_dataset *counters; /* [slot * nentries + entry] */
    size_t size;                      /* of the mapping, this struct at its start */
};

/* Maps the shared table for names_max names and nslots workers (anonymous shared memory,
 * zero-filled). NULL with a message in err. */
struct catalog_shared *catalog_shared_map(size_t names_max, int nslots, char *err, size_t errlen);
void catalog_shared_unmap(struct catalog_shared *sh);
/* A worker died, perhaps inside a write(2): every dataset's files are checked at their
 * next write (sink.h). */
void catalog_shared_torn(struct catalog_shared *sh);

/* One dataset as a process serves it. */
struct catalog_dataset {
    struct datasource *ds; /* owned */
    size_t entry;          /* its index in the shared table */
    /* catalog_open's: this process's sinks (NULL before, and quarantine with
     * --no-quarantine), the header row, the pipeline's configuration (.schema = ds), and
     * this worker's counters. */
    struct sink *rows, *quarantine;
    struct buf header;
    struct ingest_config ingest;
    struct metrics_dataset *m;
};

/* A set of datasets, read-only once loaded but for its reference count. Whoever serves a
 * request from it holds a reference (catalog_hold) until the request is answered, so a
 * reload never frees a definition or a sink in use. Not shared between processes: each
 * holds its own copy (a worker inherits the main process's, then opens its sinks). */
struct catalog {
    unsigned refs;
    size_t count;
    struct catalog_dataset *sets; /* sorted by name */
    struct catalog_shared *shared;
    int fsync;                    /* sync the sinks before closing them */
};

/* Loads every DIR/NAME.datasource (other files are ignored), at most max of them, and
 * names each in the shared table. Returns a catalog holding one reference, or NULL with
 * "FILE:LINE: message" (or "FILE: message", "DIR: message") in err for the first error: a
 * bad definition, more than max, none at all, no dataset called required
 * (--default-dataset, or NULL), a shared table full of names since start, a name whose
 * columns (names, types and paths as written, DEFAULTs, order) are not those it was first
 * loaded with since start (its day's file would mix two row shapes). */
struct catalog *catalog_load(const char *dir, size_t max, const char *required,
                             struct catalog_shared *sh, char *err, size_t errlen);

/* What catalog_open needs from the options: the day files' place and form, and the
 * pipeline's limits (base: every field but columns, schema, rows and quarantine). */
struct catalog_files {
    const char *dir;
    int utc, header, crlf, quarantine, fsync;
    int slot; /* this worker's: its counters */
    const struct ingest_config *base;
};

/* Opens every dataset's sinks for this process (files open lazily, at the first write).
 * 0, or -1 with a message in err (the catalog is then only fit for catalog_release). */
int catalog_open(struct catalog *c, const struct catalog_files *f, char *err, size_t errlen);

/* The dataset called name[0..len), or NULL. */
const struct catalog_dataset *catalog_find(const struct catalog *c, const char *name, size_t len);

struct catalog *catalog_hold(struct catalog *c);
/* Drops a reference; the last one frees the definitions and closes the sinks (after an
 * fdatasync when the catalog was opened with fsync). NULL is a no-op. */
void catalog_release(struct catalog *c);

/* SIGHUP: every sink opens its day file anew at its next write (sink_reopen), so that a
 * rename by logrotate takes effect also when the definitions could not be reloaded. */
void catalog_reopen(struct catalog *c);

/* fdatasync of what every sink has written since the last sync. 0, or nonzero with the
 * first failure's message in err (the others are still synced). */
int catalog_sync(struct catalog *c, char *err, size_t errlen);

/* Fills view[0..max) with every named entry of the shared table (which outlives the view),
 * for metrics_format_datasets; returns how many. */
size_t catalog_metrics_view(const struct catalog_shared *sh, struct metrics_dataset_view *view,
                            size_t max);

#endif
