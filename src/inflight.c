/* inflight.c -- the shared table of day-file ranges written by requests not yet answered. */
#include "inflight.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "voids.h"

/* The file's first bytes, before the tables: what inflight_recover checks before it trusts
 * them. The boot id tells a file left by a server that died whole (its pages are the ones
 * its processes last wrote: exact) from one left before the machine restarted (its pages
 * are whatever writeback last put on disk, which may list a range committed since:
 * voiding it would lose acknowledged rows). */
struct inflight_head {
    char magic[8];
    uint32_t nworkers, cap;
    uint64_t stride;
    char boot[40];
};
#define INFLIGHT_MAGIC "NDINFL2"
#define INFLIGHT_MAX_WORKERS 65536u
#define INFLIGHT_MAX_CAP (1u << 20) /* --inflight-ranges' most */
#define INFLIGHT_HEAD 128 /* the tables start here: a whole number of cache lines */
_Static_assert(sizeof(struct inflight_head) <= INFLIGHT_HEAD, "the head fits");

static void boot_id(char boot[40])
{
    memset(boot, 0, 40);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f) {
        if (!fgets(boot, 40, f))
            boot[0] = '\0';
        fclose(f);
    }
}

static size_t stride_of(unsigned cap)
{
    size_t stride = sizeof(struct inflight_table) + (size_t)cap * sizeof(struct inflight_entry);
    return (stride + 63) & ~(size_t)63; /* each worker's on its own cache lines */
}

/* DIR/.inflight/NAME into buf; 0, or -1 when it does not fit. */
static int file_path(char *buf, size_t len, const char *dir, const char *name)
{
    int n = snprintf(buf, len, "%s/%s%s%s", dir, INFLIGHT_DIR, name ? "/" : "", name ? name : "");
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* A name no other server's file has, even one whose main process has the same pid (two
 * containers on one volume, each pid 1): the pid, then 64 random bits. */
static void unique_name(char *name, size_t len)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        r = ((uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec) ^ (uint64_t)getpid() << 40;
    }
    snprintf(name, len, "%ld-%016llx", (long)getpid(), (unsigned long long)r);
}

/* Copy-on-write filesystems (btrfs) would still allocate a block at a store to a page that
 * posix_fallocate reserved: asked not to, where they can be (ZFS cannot: design.md). */
static void no_cow(int fd)
{
    int flags = 0;
    if (!ioctl(fd, FS_IOC_GETFLAGS, &flags) && !(flags & FS_NOCOW_FL)) {
        flags |= FS_NOCOW_FL;
        ioctl(fd, FS_IOC_SETFLAGS, &flags);
    }
}

/* The tables as the file dir/.inflight/NAME: created under a temporary name, locked, sized
 * (blocks allocated, so that a store to a page never meets a full disk: SIGBUS), headed,
 * then named, so that inflight_recover never takes a live server's file for a dead one's. */
static void *map_file(struct inflight *f, const char *dir, char *err, size_t errlen)
{
    char tmp[PATH_MAX], name[48];
    unique_name(name, sizeof name);
    errno = ENAMETOOLONG;
    if (file_path(f->path, sizeof f->path, dir, NULL) ||
        (mkdir(f->path, 0755) && errno != EEXIST) || file_path(f->path, sizeof f->path, dir, name) ||
        snprintf(tmp, sizeof tmp, "%s.tmp", f->path) >= (int)sizeof tmp) {
        snprintf(err, errlen, "in-flight ranges: %s/%s: %s", dir, INFLIGHT_DIR, strerror(errno));
        return MAP_FAILED;
    }
    /* Under the directory's lock, as a start's recovery is: one between this open and the
     * flock below would find the file unlocked and remove it. */
    char d[PATH_MAX];
    int dfd = file_path(d, sizeof d, dir, NULL) ? -1 : open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    while (dfd >= 0 && flock(dfd, LOCK_EX) && errno == EINTR)
        ;
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600), r = 0;
    void *p = MAP_FAILED;
    if (fd >= 0)
        no_cow(fd);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) ||
        (r = posix_fallocate(fd, 0, (off_t)f->size)) ||
        (p = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
        snprintf(err, errlen, "in-flight ranges: %s: %s", tmp, strerror(r ? r : errno));
        if (fd >= 0) {
            unlink(tmp);
            close(fd);
        }
        if (dfd >= 0)
            close(dfd);
        return MAP_FAILED;
    }
    struct inflight_head *h = p;
    memcpy(h->magic, INFLIGHT_MAGIC, sizeof h->magic);
    h->nworkers = (uint32_t)f->nworkers;
    h->cap = f->cap;
    h->stride = f->stride;
    boot_id(h->boot);
    int renamed = !rename(tmp, f->path), e = errno;
    if (dfd >= 0)
        close(dfd); /* the lock goes with it */
    if (!renamed) {
        snprintf(err, errlen, "in-flight ranges: %s: %s", f->path, strerror(e));
        munmap(p, f->size);
        unlink(tmp);
        close(fd);
        return MAP_FAILED;
    }
    f->fd = fd; /* its lock lives as long as a process of this server holds the descriptor */
    f->owner = getpid();
    return p;
}

struct inflight *inflight_map(int nworkers, unsigned cap, const char *dir, char *err,
                              size_t errlen)
{
    if (nworkers < 1 || cap < 1) {
        snprintf(err, errlen, "in-flight ranges: %d workers of %u entries", nworkers, cap);
        return NULL;
    }
    size_t stride = stride_of(cap);
    struct inflight *f = malloc(sizeof *f);
    if (!f) {
        snprintf(err, errlen, "in-flight ranges: %s", strerror(ENOMEM));
        return NULL;
    }
    *f = (struct inflight){.nworkers = nworkers, .cap = cap, .stride = stride, .fd = -1,
                           .size = INFLIGHT_HEAD + stride * (size_t)nworkers};
    errno = 0;
    char *p = dir ? map_file(f, dir, err, errlen)
                  : mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        if (!dir)
            snprintf(err, errlen, "in-flight ranges: mmap of %zu bytes: %s", f->size,
                     strerror(errno));
        free(f);
        return NULL;
    }
    f->tables = p + INFLIGHT_HEAD;
    for (int w = 0; w < nworkers; w++)
        inflight_table(f, w)->cap = cap;
    return f;
}

/* Whether t holds anything a next start would have to void. */
static int table_in_use(struct inflight_table *t)
{
    if (atomic_load(&t->writing_start1))
        return 1;
    unsigned high = atomic_load(&t->high);
    for (unsigned i = 0; i < high && i < t->cap; i++)
        if (atomic_load(&t->entries[i].start1))
            return 1;
    return 0;
}

void inflight_unmap(struct inflight *f)
{
    if (!f)
        return;
    if (f->fd >= 0) {
        int keep = 0; /* ranges left (a record a full disk refused): the next start voids them */
        for (int w = 0; w < f->nworkers; w++)
            keep |= table_in_use(inflight_table(f, w));
        if (!keep && getpid() == f->owner)
            unlink(f->path);
        close(f->fd);
    }
    munmap(f->tables - INFLIGHT_HEAD, f->size);
    free(f);
}

/* One file of dir/.inflight whose lock was free: its server is dead. */
static int recover_file(int fd, const char *path, const char *boot,
                        int (*fn)(void *arg, struct inflight_table *t), void *arg,
                        char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) || (size_t)st.st_size < INFLIGHT_HEAD) {
        snprintf(err, errlen, "%s: too short for in-flight ranges, removed", path);
        return 1;
    }
    size_t size = (size_t)st.st_size;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "%s: mmap: %s", path, strerror(errno));
        return -1;
    }
    const struct inflight_head *h = (const void *)p;
    int r = 0;
    /* Bounded before they are multiplied: a file of any content must not crash a start. */
    if (memcmp(h->magic, INFLIGHT_MAGIC, sizeof h->magic) != 0 || !h->nworkers ||
        h->nworkers > INFLIGHT_MAX_WORKERS || !h->cap || h->cap > INFLIGHT_MAX_CAP ||
        h->stride != stride_of(h->cap) ||
        size != INFLIGHT_HEAD + (size_t)h->stride * h->nworkers) {
        snprintf(err, errlen, "%s: not a table of in-flight ranges, removed", path);
        r = 1;
    } else if (!boot[0] || strncmp(h->boot, boot, sizeof h->boot) != 0) {
        snprintf(err, errlen, "%s: %s, so not trusted: the ranges in flight at the crash stay "
                 "committed; removed", path, boot[0] ? "left before the machine restarted"
                                                     : "this boot's id cannot be read");
        r = 1;
    } else {
        for (uint32_t w = 0; w < h->nworkers; w++) {
            struct inflight_table *t = (void *)(p + INFLIGHT_HEAD + (size_t)w * h->stride);
            if (t->cap == h->cap && fn(arg, t))
                r = 3; /* a range held by the caller, not voided: the file stays */
        }
    }
    munmap(p, size);
    return r;
}

int inflight_recover(const char *dir, int (*fn)(void *arg, struct inflight_table *t),
                     void *arg, void (*note)(const char *msg),
                     void (*kept)(void *arg, const char *path))
{
    char path[PATH_MAX], msg[PATH_MAX + 200], boot[40];
    if (file_path(path, sizeof path, dir, NULL))
        return -1;
    DIR *d = opendir(path);
    if (!d) /* none yet (its file is made next, or, a full disk, kept in memory) */
        return errno == ENOENT ? 0 : -1;
    /* Two starts on one directory take turns: neither serves before the other has voided
     * what it found (the lock goes with the descriptor, at closedir). */
    while (flock(dirfd(d), LOCK_EX) && errno == EINTR)
        ;
    boot_id(boot);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *end = e->d_name + strspn(e->d_name, "0123456789-abcdef");
        int tmp = !strcmp(end, ".tmp");
        if (end == e->d_name || (*end && !tmp) || file_path(path, sizeof path, dir, e->d_name))
            continue;
        int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        struct stat st;
        if (fd < 0)
            continue;
        /* Locked: a live server's, not ours to touch. No links left: recovered already. */
        if (flock(fd, LOCK_EX | LOCK_NB) || fstat(fd, &st) || !S_ISREG(st.st_mode) ||
            !st.st_nlink) {
            close(fd);
            continue;
        }
        int r = tmp ? 2 : recover_file(fd, path, boot, fn, arg, msg, sizeof msg);
        if (r == 1 && note)
            note(msg);
        if (r == 3) { /* counted, and left for the caller to remove */
            n++;
            if (kept)
                kept(arg, path);
        } else if (r >= 0) { /* removed under its lock */
            unlink(path);
            n += r == 0;
        } else if (note) {
            note(msg);
        }
        close(fd);
    }
    closedir(d);
    return n;
}

struct inflight_table *inflight_table(const struct inflight *f, int worker)
{
    return (struct inflight_table *)(void *)(f->tables + (size_t)worker * f->stride);
}

uint64_t inflight_file_id(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (; *base; base++)
        h = (h ^ (unsigned char)*base) * 0x100000001b3ULL;
    return h ? h : 1;
}

uint64_t inflight_min_start(const struct inflight *f, uint64_t file)
{
    uint64_t min = UINT64_MAX;
    for (int w = 0; f && w < f->nworkers; w++) {
        const struct inflight_table *t = inflight_table(f, w);
        unsigned high = atomic_load_explicit(&t->high, memory_order_acquire);
        for (unsigned i = 0; i < high && i < t->cap; i++) {
            const struct inflight_entry *e = &t->entries[i];
            uint64_t s1 = atomic_load_explicit(&e->start1, memory_order_acquire);
            if (s1 && s1 - 1 < min && atomic_load_explicit(&e->file, memory_order_relaxed) == file)
                min = s1 - 1;
        }
    }
    return min;
}

int inflight_own(struct inflight_owner *o, const struct inflight *all, int self)
{
    struct inflight_table *t = inflight_table(all, self);
    o->all = all;
    o->self = self;
    o->t = t;
    o->deferred = NULL;
    o->free = malloc((size_t)t->cap * sizeof *o->free);
    if (!o->free)
        return -1;
    /* Popped from the top: entry 0 first, so that readers scan few entries */
    for (unsigned i = 0; i < t->cap; i++)
        o->free[i] = t->cap - 1 - i;
    o->nfree = t->cap;
    return 0;
}

int inflight_defer(struct inflight_owner *o, int i, const char *path, uint64_t ino,
                   uint64_t start, uint64_t end)
{
    size_t n = strlen(path) + 1;
    struct inflight_deferred *d = malloc(sizeof *d + n);
    if (!d)
        return -1;
    d->entry = i;
    d->start = start;
    d->end = end;
    d->ino = ino;
    memcpy(d->path, path, n);
    d->next = o->deferred;
    o->deferred = d;
    return 0;
}

size_t inflight_retry(struct inflight_owner *o)
{
    size_t left = 0;
    for (struct inflight_deferred **at = &o->deferred; *at;) {
        struct inflight_deferred *d = *at;
        if (voids_record(d->path, d->ino, d->start, d->end, "failed")) {
            left++;
            at = &d->next;
            continue;
        }
        inflight_clear(o, d->entry);
        *at = d->next;
        free(d);
    }
    return left;
}

void inflight_disown(struct inflight_owner *o)
{
    for (struct inflight_deferred *d = o->deferred, *next; d; d = next) {
        next = d->next; /* its entry stays: the main process voids it when the worker exits */
        free(d);
    }
    o->deferred = NULL;
    free(o->free);
    o->free = NULL;
    o->nfree = 0;
}

int inflight_begin(struct inflight_owner *o, uint64_t file, uint64_t lower)
{
    if (!o->nfree)
        return -1;
    unsigned i = o->free[--o->nfree];
    struct inflight_entry *e = &o->t->entries[i];
    atomic_store_explicit(&e->file, file, memory_order_relaxed);
    atomic_store_explicit(&e->end, 0, memory_order_relaxed);
    atomic_store_explicit(&e->rows, 0, memory_order_relaxed);
    /* seq_cst: in place before the write(2) that follows, whatever a reader reads after it */
    atomic_store(&e->start1, lower + 1);
    if (i >= atomic_load_explicit(&o->t->high, memory_order_relaxed))
        atomic_store(&o->t->high, i + 1);
    return (int)i;
}

void inflight_publish(struct inflight_owner *o, int i, uint64_t file, uint64_t lower)
{
    struct inflight_entry *e = &o->t->entries[i];
    atomic_store(&e->start1, lower + 1); /* first: a lower start is safe for any file */
    atomic_store(&e->end, 0);
    atomic_store(&e->file, file);
}

void inflight_set(struct inflight_owner *o, int i, uint64_t start, uint64_t end, uint64_t rows)
{
    struct inflight_entry *e = &o->t->entries[i];
    atomic_store_explicit(&e->end, end, memory_order_relaxed);
    atomic_store_explicit(&e->rows, rows, memory_order_relaxed);
    atomic_store(&e->start1, start + 1); /* only ever raised: a reader's view stays safe */
}

void inflight_clear(struct inflight_owner *o, int i)
{
    atomic_store(&o->t->entries[i].start1, 0);
    o->free[o->nfree++] = (unsigned)i;
}

void inflight_writing(struct inflight_owner *o, uint64_t file, uint64_t start, uint64_t len)
{
    atomic_store(&o->t->writing_file, file);
    atomic_store(&o->t->writing_end, len > UINT64_MAX - start ? UINT64_MAX : start + len);
    atomic_store(&o->t->writing_start1, start + 1);
}

void inflight_written(struct inflight_owner *o)
{
    atomic_store(&o->t->writing_start1, 0);
}

int inflight_orphan(const struct inflight *all, int self, uint64_t file, uint64_t *start,
                    uint64_t *end)
{
    for (int w = 0; all && w < all->nworkers; w++) {
        struct inflight_table *t = inflight_table(all, w);
        uint64_t s1;
        if (w == self || !(s1 = atomic_load(&t->writing_start1)) ||
            atomic_load(&t->writing_file) != file)
            continue;
        uint64_t e = atomic_load(&t->writing_end); /* stored before start1 */
        /* exchanged: the main process may be at it too (it takes the same lock first) */
        if (!atomic_compare_exchange_strong(&t->writing_start1, &s1, 0))
            continue;
        *start = s1 - 1;
        *end = e;
        return w;
    }
    return -1;
}

int inflight_unorphan(const struct inflight *all, int w, uint64_t file, uint64_t start,
                      uint64_t end)
{
    struct inflight_table *t = inflight_table(all, w);
    uint_fast64_t zero = 0;
    if (atomic_load(&t->writing_start1))
        return -1;
    atomic_store(&t->writing_file, file);
    atomic_store(&t->writing_end, end);
    return atomic_compare_exchange_strong(&t->writing_start1, &zero, start + 1) ? 0 : -1;
}

size_t inflight_reclaim(struct inflight_table *t,
                        int (*fn)(void *arg, uint64_t file, uint64_t start, uint64_t end,
                                  uint64_t rows),
                        void *arg)
{
    unsigned high = atomic_load(&t->high);
    size_t kept = 0;
    for (unsigned i = 0; i < high && i < t->cap; i++) {
        struct inflight_entry *e = &t->entries[i];
        uint64_t s1 = atomic_load(&e->start1);
        uint64_t end = atomic_load(&e->end);
        if (!s1)
            continue;
        if (fn && end && fn(arg, atomic_load(&e->file), s1 - 1, end, atomic_load(&e->rows))) {
            kept++;
            continue;
        }
        atomic_store(&e->start1, 0);
    }
    if (!kept)
        atomic_store(&t->high, 0);
    return kept;
}

int inflight_hold(struct inflight_table *t, uint64_t file, uint64_t start, uint64_t end,
                  uint64_t rows)
{
    for (unsigned i = 0; i < t->cap; i++) {
        struct inflight_entry *e = &t->entries[i];
        if (atomic_load(&e->start1))
            continue;
        atomic_store(&e->file, file);
        atomic_store(&e->end, end);
        atomic_store(&e->rows, rows);
        atomic_store_explicit(&e->start1, start + 1, memory_order_release);
        if (atomic_load(&t->high) <= i)
            atomic_store(&t->high, i + 1);
        return (int)i;
    }
    return -1;
}
