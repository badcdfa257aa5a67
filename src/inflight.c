/* inflight.c -- the shared table of day-file ranges written by requests not yet answered. */
#include "inflight.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "voids.h"

struct inflight *inflight_map(int nworkers, unsigned cap, char *err, size_t errlen)
{
    if (nworkers < 1 || cap < 1) {
        snprintf(err, errlen, "in-flight ranges: %d workers of %u entries", nworkers, cap);
        return NULL;
    }
    size_t stride = sizeof(struct inflight_table) + (size_t)cap * sizeof(struct inflight_entry);
    stride = (stride + 63) & ~(size_t)63; /* each worker's on its own cache lines */
    size_t size = stride * (size_t)nworkers;
    struct inflight *f = malloc(sizeof *f);
    void *p = f ? mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
                : MAP_FAILED;
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "in-flight ranges: mmap of %zu bytes: %s", size,
                 strerror(f ? errno : ENOMEM));
        free(f);
        return NULL;
    }
    *f = (struct inflight){.nworkers = nworkers, .cap = cap, .size = size, .stride = stride,
                           .tables = p};
    for (int w = 0; w < nworkers; w++)
        inflight_table(f, w)->cap = cap;
    return f;
}

void inflight_unmap(struct inflight *f)
{
    if (!f)
        return;
    munmap(f->tables, f->size);
    free(f);
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

void inflight_writing(struct inflight_owner *o, uint64_t file, uint64_t start)
{
    atomic_store(&o->t->writing_file, file);
    atomic_store(&o->t->writing_start1, start + 1);
}

void inflight_written(struct inflight_owner *o)
{
    atomic_store(&o->t->writing_start1, 0);
}

int inflight_orphan(const struct inflight *all, int self, uint64_t file, uint64_t *start)
{
    for (int w = 0; all && w < all->nworkers; w++) {
        struct inflight_table *t = inflight_table(all, w);
        uint64_t s1;
        if (w == self || !(s1 = atomic_load(&t->writing_start1)) ||
            atomic_load(&t->writing_file) != file)
            continue;
        /* exchanged: the main process may be at it too (it takes the same lock first) */
        if (!atomic_compare_exchange_strong(&t->writing_start1, &s1, 0))
            continue;
        *start = s1 - 1;
        return w;
    }
    return -1;
}

int inflight_unorphan(const struct inflight *all, int w, uint64_t file, uint64_t start)
{
    struct inflight_table *t = inflight_table(all, w);
    uint_fast64_t zero = 0;
    if (atomic_load(&t->writing_start1))
        return -1;
    atomic_store(&t->writing_file, file);
    return atomic_compare_exchange_strong(&t->writing_start1, &zero, start + 1) ? 0 : -1;
}

void inflight_reclaim(struct inflight_table *t,
                      void (*fn)(void *arg, uint64_t file, uint64_t start, uint64_t end,
                                 uint64_t rows),
                      void *arg)
{
    unsigned high = atomic_load(&t->high);
    for (unsigned i = 0; i < high && i < t->cap; i++) {
        struct inflight_entry *e = &t->entries[i];
        uint64_t s1 = atomic_load(&e->start1);
        uint64_t end = atomic_load(&e->end);
        if (!s1)
            continue;
        if (fn && end)
            fn(arg, atomic_load(&e->file), s1 - 1, end, atomic_load(&e->rows));
        atomic_store(&e->start1, 0);
    }
    atomic_store(&t->high, 0);
}
