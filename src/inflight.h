/* inflight.h -- the byte ranges of the day files that requests still in flight have written
 * (or are writing), in memory shared by every process, so that delivery never ships a row
 * that may yet become void and the main process can void a killed worker's ranges. */
#ifndef NDINGEST_INFLIGHT_H
#define NDINGEST_INFLIGHT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One range. Written only by the worker that owns the table (and, once that worker is dead,
 * by the main process, which also owns the last table: inflight_hold); read by anyone. Published entry by entry: file, end and rows are
 * stored first, start1 last with release; freed by storing start1 0. A reader loads start1
 * with acquire, then the rest: a start it sees was published for that range, so a reader
 * never takes a half-written entry for a range (a reader racing a reuse may pair an old
 * start with a new file: it then holds back more than needed, never less). */
struct inflight_entry {
    atomic_uint_fast64_t start1; /* START + 1 of the day file; 0: the entry is free */
    atomic_uint_fast64_t end;    /* END, just past whole rows; 0: the write is in progress
                                  * and START is only a lower bound of where it lands */
    atomic_uint_fast64_t file;   /* inflight_file_id of the day file */
    atomic_uint_fast64_t rows;   /* rows in [START, END) */
};

/* One worker's table: cap entries; high: one past the highest entry it ever used (readers
 * scan entries[0..high) only). writing: the write(2) the worker has in progress, set under
 * the day file's flock before the write and cleared under it once its range is in the
 * entries: whoever holds that file's lock and finds another worker's set knows that worker
 * died inside the write (inflight_orphan). */
struct inflight_table {
    atomic_uint high;
    unsigned cap;
    atomic_uint_fast64_t writing_file, writing_start1; /* start1 0: no write in progress */
    atomic_uint_fast64_t writing_end; /* past its last byte, or before: it may be cut short */
    struct inflight_entry entries[];
};

/* Every worker's table, mapped before the fork. */
struct inflight {
    int nworkers;
    unsigned cap;
    size_t size, stride; /* of the mapping; bytes from one table to the next */
    char *tables;
    int fd;      /* the file's, locked (flock) for as long as a process of the server lives; -1 */
    pid_t owner; /* the process that made the file: the one that removes it */
    char path[4096];
};

/* Under the out directory: one file of tables per server, named by its main process's pid. */
#define INFLIGHT_DIR ".inflight"

/* Maps zero-filled tables of cap entries for nworkers workers, shared with the processes
 * forked after. With dir (the out directory) they are the file dir/.inflight/PID, so that
 * when the whole server dies (every process at once), the next start can still void what
 * its requests in flight had written (inflight_recover); without, anonymous memory. NULL
 * with a message in err. */
struct inflight *inflight_map(int nworkers, unsigned cap, const char *dir, char *err,
                              size_t errlen);
/* Unmaps; in the process that mapped a file, also removes it unless a range is left in it
 * (one whose void record a full disk refused: the next start records it). */
void inflight_unmap(struct inflight *f);

/* At start, before this server writes: every file of dir/.inflight whose server is dead (its
 * lock is free) has fn called with each of its tables, then is removed; unless fn returned
 * nonzero for one of them (a range it could not void, held instead): then kept(arg, path),
 * and the file stays, for the caller to remove once what it holds is safe from a crash
 * (held in its own file's table), or for the next start. A file left from before the
 * machine restarted is removed untouched: its pages are what writeback last put on disk,
 * which may list ranges committed since (note says so). How many files were recovered, or
 * -1 when the directory cannot be read. */
int inflight_recover(const char *dir, int (*fn)(void *arg, struct inflight_table *t),
                     void *arg, void (*note)(const char *msg),
                     void (*kept)(void *arg, const char *path));
struct inflight_table *inflight_table(const struct inflight *f, int worker);

/* The identity of a day file, from its name (the path's last component): a 64-bit hash,
 * never 0. Two names that share one only make delivery hold back longer. */
uint64_t inflight_file_id(const char *path);

/* The smallest START of the ranges in flight in file, over every worker: delivery ships no
 * byte at or past it. UINT64_MAX when none. */
uint64_t inflight_min_start(const struct inflight *f, uint64_t file);

/* ---- The owner's side: one worker's table, with its free entries kept privately ---- */

/* A void range whose record could not be written yet (a full disk): its entry stays in
 * the table, so that delivery keeps holding back, until inflight_retry records it. */
struct inflight_deferred {
    struct inflight_deferred *next;
    int entry;
    uint64_t start, end, ino;
    char path[]; /* the day file's */
};

struct inflight_owner {
    const struct inflight *all; /* every worker's tables: inflight_orphan */
    int self;
    struct inflight_table *t;
    unsigned *free; /* the free entries' indexes, a stack */
    unsigned nfree;
    struct inflight_deferred *deferred;
};

/* Starts owning worker self's table of all (every entry free: the main process clears a
 * dead worker's table before its replacement starts). 0, or -1 when memory is exhausted. */
int inflight_own(struct inflight_owner *o, const struct inflight *all, int self);
void inflight_disown(struct inflight_owner *o);

/* A write about to start in file at or after lower: an entry in the "writing" state (end 0).
 * Its index, or -1 when the table is full. */
int inflight_begin(struct inflight_owner *o, uint64_t file, uint64_t lower);
/* The entry (reserved by inflight_begin) now stands for a write to file at or after lower:
 * stored before the write(2), so that a reader that sees its bytes sees the entry. */
void inflight_publish(struct inflight_owner *o, int i, uint64_t file, uint64_t lower);
/* The entry's range as written: [start, end) with rows rows (start >= its lower bound). */
void inflight_set(struct inflight_owner *o, int i, uint64_t start, uint64_t end, uint64_t rows);
/* The range committed or voided: the entry is free. */
void inflight_clear(struct inflight_owner *o, int i);

/* Under file's flock: a write(2) of at most len bytes is about to start at exactly start;
 * then, once its range is in the entries (or it went to a file that lost its name), it is
 * over. Its end bounds what is voided should its writer die inside it: another server on
 * the same directory may have appended after it by then. */
void inflight_writing(struct inflight_owner *o, uint64_t file, uint64_t start, uint64_t len);
void inflight_written(struct inflight_owner *o);
/* Under file's flock: the worker that died inside a write to file (its writing is set: a
 * live one clears it before it unlocks), or -1; [*start, *end) is where that write began
 * and the bound it announced (UINT64_MAX: unknown), and the field is cleared
 * (inflight_unorphan puts both back when its range could not be voided, unless the dead
 * worker's replacement is writing already: then it is lost, and logged). */
int inflight_orphan(const struct inflight *all, int self, uint64_t file, uint64_t *start,
                    uint64_t *end);
int inflight_unorphan(const struct inflight *all, int w, uint64_t file, uint64_t start,
                      uint64_t end);

/* The range of entry i is void but its line could not be added to path's .void record:
 * kept, with the entry, for inflight_retry. 0, or -1 when memory is exhausted (the caller
 * then frees the entry: delivery may send the rows). */
int inflight_defer(struct inflight_owner *o, int i, const char *path, uint64_t ino,
                   uint64_t start, uint64_t end);
/* Records the deferred ranges (reason "failed"), freeing each entry once its line is in;
 * how many are still waiting. Cheap when none is. */
size_t inflight_retry(struct inflight_owner *o);

/* ---- The main process, for a dead worker ---- */

/* Calls fn for every entry in use in t whose range is known (entries of a write that was
 * in progress are the writing field's: inflight_orphan) and frees each but those for which
 * fn returned nonzero (entries of a write in progress too); returns how many are kept. */
size_t inflight_reclaim(struct inflight_table *t,
                        int (*fn)(void *arg, uint64_t file, uint64_t start, uint64_t end,
                                  uint64_t rows),
                        void *arg);
/* The main process's own table (a server maps one table more than it has workers, the last
 * one): a dead worker's range whose void record could not be written (a full disk) is moved
 * here, so that delivery keeps holding back before it, and a next start finds it should the
 * whole server die, until inflight_reclaim on this table records it. It is published
 * before the dead worker's entry is freed, and readers scan the tables in order, so a
 * reader that misses the old entry sees the new one. The entry's index, or -1 when the
 * table is full. */
int inflight_hold(struct inflight_table *t, uint64_t file, uint64_t start, uint64_t end,
                  uint64_t rows);

#endif
