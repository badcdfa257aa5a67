/* idempotency.c -- Idempotency-Key: header parsing, fingerprints, the shared key table (striped
 * robust process-shared mutexes over open addressing) and the key log. */
#include "idempotency.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Inlined: what is hashed here is short (a key's scope, a record), and the library's call
 * through its dispatcher cost more than the hashing (issue #18). */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "sink.h"

/* ---- The header ---- */

static int is_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

int idem_parse_key(const char *v, size_t n, char *out, size_t max)
{
    /* llhttp leaves the value's leading spaces out; trailing ones are ours to drop. */
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    while (n && (v[0] == ' ' || v[0] == '\t'))
        v++, n--;
    if (!n)
        return -2;
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        /* The usual key, printable and without escapes, copied whole; any other goes the
         * byte-by-byte way below, which also says what is wrong with it. */
        const unsigned char *u = (const unsigned char *)v + 1;
        size_t len = n - 2, i = 0;
        while (i < len && u[i] >= 0x20 && u[i] <= 0x7e && u[i] != '"' && u[i] != '\\')
            i++;
        if (i == len) {
            if (!len)
                return -2;
            if (len > max)
                return -3;
            memcpy(out, u, len);
            return (int)len;
        }
    }
    size_t o = 0;
    if (v[0] == '"') {
        size_t i = 1;
        for (; i < n && v[i] != '"'; i++) {
            unsigned char ch = (unsigned char)v[i];
            if (ch == '\\') {
                if (++i == n || (v[i] != '"' && v[i] != '\\'))
                    return -1;
                ch = (unsigned char)v[i];
            } else if (ch < 0x20 || ch > 0x7e) {
                return -1;
            }
            if (o == max)
                return -3;
            out[o++] = (char)ch;
        }
        if (i != n - 1) /* no closing quote, or something after it (parameters, a list) */
            return -1;
        return o ? (int)o : -2;
    }
    unsigned char first = (unsigned char)v[0];
    if (!(((first | 0x20) >= 'a' && (first | 0x20) <= 'z') || first == '*'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (!is_tchar(ch) && ch != ':' && ch != '/')
            return -1;
        if (o == max)
            return -3;
        out[o++] = (char)ch;
    }
    return (int)o;
}

/* ---- The fingerprint ---- */

struct idem_id idem_id_of(int token, const char *route, size_t route_len, const char *key,
                          size_t key_len)
{
    /* Lengths first, so that no two (route, key) pairs make the same bytes; a key is at
     * most 4 KiB (--max-idempotency-key) and a route a dataset's name. */
    unsigned char b[12 + 256 + 4096 + 64];
    int32_t tok = token;
    uint32_t rl = (uint32_t)route_len, kl = (uint32_t)key_len;
    if (route_len > 256 || key_len > 4096 + 64)
        abort(); /* bounded by the callers: a longer one is a bug */
    memcpy(b, &tok, 4);
    memcpy(b + 4, &rl, 4);
    memcpy(b + 8, &kl, 4);
    memcpy(b + 12, route, route_len);
    memcpy(b + 12 + route_len, key, key_len);
    XXH128_hash_t h = XXH3_128bits(b, 12 + route_len + key_len);
    return (struct idem_id){h.low64, h.high64};
}

/* ---- The table ---- */

enum { E_FREE, E_INFLIGHT, E_DONE };

/* One key: 64 bytes. time: when claimed (in flight) or answered (done), seconds since the
 * epoch (32 bits: until 2106). prev, next: the stripe's age list (entry index + 1; 0 none);
 * next is the free list's link for a free entry. */
struct idem_entry {
    uint64_t lo, hi;
    uint64_t body_hash;
    uint32_t time, prev, next;
    uint8_t state, resp;
    uint16_t status;
    union {
        struct {
            uint64_t bytes, valid, invalid;
        } s;
        struct {
            int32_t pid;   /* in flight: the owner */
            uint32_t body; /* done, IDEM_RESP_BODY: its index in the table's bodies */
        } f;
    } u;
};
_Static_assert(sizeof(struct idem_entry) == 64, "an entry is one cache line");

/* A stripe: its own lock, entries, index and age list (oldest first: eviction takes the
 * first done entry from its head). The index: uint32 buckets, linear probing, at most half
 * full; a bucket's low ibits hold entry index + 1 (0: empty), its other bits the same bits
 * of the key's hash (a tag), so that a probe reads an entry only when they match (a probe
 * that read each entry it passed was half of loading 1M keys). */
struct idem_stripe {
    _Alignas(64) pthread_mutex_t lock;
    uint32_t cap, nb;     /* entries; buckets (a power of two >= 2 * cap) */
    uint32_t imask;       /* a bucket's entry bits (2^ibits - 1, ibits the bits of cap) */
    uint32_t bump;        /* entries [0, bump) have been used at least once */
    uint32_t free_head;   /* entry index + 1 */
    uint32_t age_head, age_tail;
    uint32_t in_use;
    size_t entries_off, index_off; /* from the table's start */
};

struct idem_body {
    uint8_t len;
    char b[IDEM_BODY_MAX];
};

struct idem_table {
    size_t map_size;
    uint32_t nstripes;
    unsigned window;
    atomic_uint_fast64_t replays, conflicts, mismatches, evictions, expired, full;
    pthread_mutex_t bodies_lock;
    atomic_uint nbodies;
    struct idem_body bodies[IDEM_BODIES];
    struct idem_stripe stripes[];
};

static struct idem_entry *entries(struct idem_table *t, struct idem_stripe *s)
{
    return (struct idem_entry *)((char *)t + s->entries_off);
}

static uint32_t *buckets(struct idem_table *t, struct idem_stripe *s)
{
    return (uint32_t *)((char *)t + s->index_off);
}

static int init_robust(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a))
        return -1;
    int r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) ||
            pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) || pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return r ? -1 : 0;
}

struct idem_table *idem_table_map(size_t max_keys, unsigned window, char *err, size_t errlen)
{
    if (!max_keys || max_keys > ((size_t)1 << 30)) {
        snprintf(err, errlen, "--idempotency-keys must be between 1 and 2^30");
        return NULL;
    }
    /* Small tables are one stripe, so that their eviction order is exact (tests, tiny
     * servers); large ones 64, so that workers seldom wait for each other. */
    uint32_t ns = max_keys < 4096 ? 1 : 64;
    uint32_t cap = (uint32_t)((max_keys + ns - 1) / ns);
    uint32_t nb = 2;
    while (nb < 2 * cap)
        nb <<= 1;
    size_t head = sizeof(struct idem_table) + ns * sizeof(struct idem_stripe);
    head = (head + 63) & ~(size_t)63;
    size_t per = (size_t)cap * sizeof(struct idem_entry) + (size_t)nb * sizeof(uint32_t);
    per = (per + 63) & ~(size_t)63;
    size_t size = head + ns * per;
    /* Entries are taken in order, so their untouched pages cost nothing; the index is
     * faulted in at start (populate). */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "cannot map %zu bytes for %zu idempotency keys: %s", size,
                 max_keys, strerror(errno));
        return NULL;
    }
    struct idem_table *t = p;
    t->map_size = size;
    t->nstripes = ns;
    t->window = window;
    if (init_robust(&t->bodies_lock))
        goto fail;
    for (uint32_t i = 0; i < ns; i++) {
        struct idem_stripe *s = &t->stripes[i];
        if (init_robust(&s->lock))
            goto fail;
        s->cap = cap;
        s->nb = nb;
        s->imask = 1;
        while (s->imask < cap)
            s->imask = s->imask << 1 | 1;
        s->entries_off = head + i * per;
        s->index_off = s->entries_off + (size_t)cap * sizeof(struct idem_entry);
    }
    return t;
fail:
    snprintf(err, errlen, "cannot make the idempotency table's process-shared locks");
    munmap(p, size);
    return NULL;
}

void idem_table_unmap(struct idem_table *t)
{
    if (t)
        munmap(t, t->map_size);
}

void idem_table_warm(const struct idem_table *t)
{
    unsigned char sum = 0;
    for (uint32_t i = 0; i < t->nstripes; i++) {
        const struct idem_stripe *s = &t->stripes[i];
        const volatile unsigned char *ix = (const unsigned char *)t + s->index_off;
        size_t len = (size_t)s->nb * sizeof(uint32_t);
        for (size_t o = 0; o < len; o += 4096)
            sum += ix[o];
        sum += ix[len - 1]; /* the index need not start on a page */
    }
    (void)sum;
}

size_t idem_bytes_per_key(void)
{
    /* The entry and two buckets (the index is at most half full). */
    return sizeof(struct idem_entry) + 2 * sizeof(uint32_t);
}

static struct idem_stripe *stripe_of(struct idem_table *t, const struct idem_id *id)
{
    return &t->stripes[id->hi % t->nstripes];
}

static uint32_t home(const struct idem_stripe *s, uint64_t lo)
{
    return (uint32_t)(lo & (s->nb - 1));
}

/* The tag bits of a key's bucket: high bits of lo, which home() does not use. */
static uint32_t tag(const struct idem_stripe *s, uint64_t lo)
{
    return (uint32_t)(lo >> 32) & ~s->imask;
}

/* The entry a non-empty bucket holds. */
static uint32_t slot(const struct idem_stripe *s, uint32_t v)
{
    return (v & s->imask) - 1;
}

/* The bucket holding id, or -1. */
static int64_t find(struct idem_table *t, struct idem_stripe *s, const struct idem_id *id)
{
    uint32_t *ix = buckets(t, s);
    struct idem_entry *en = entries(t, s);
    uint32_t want = tag(s, id->lo);
    for (uint32_t b = home(s, id->lo);; b = (b + 1) & (s->nb - 1)) {
        uint32_t v = ix[b];
        if (!v)
            return -1;
        if ((v & ~s->imask) == want && en[slot(s, v)].lo == id->lo && en[slot(s, v)].hi == id->hi)
            return b;
    }
}

static void index_insert(struct idem_table *t, struct idem_stripe *s, uint32_t n)
{
    uint32_t *ix = buckets(t, s);
    uint64_t lo = entries(t, s)[n].lo;
    uint32_t b = home(s, lo);
    while (ix[b])
        b = (b + 1) & (s->nb - 1);
    ix[b] = tag(s, lo) | (n + 1);
}

/* Backward-shift deletion: no tombstones, so probes stay short however many keys churn. */
static void index_remove(struct idem_table *t, struct idem_stripe *s, uint32_t i)
{
    uint32_t *ix = buckets(t, s);
    struct idem_entry *en = entries(t, s);
    uint32_t mask = s->nb - 1;
    ix[i] = 0;
    for (uint32_t j = (i + 1) & mask; ix[j]; j = (j + 1) & mask) {
        uint32_t k = home(s, en[slot(s, ix[j])].lo);
        /* ix[j] may move to i unless its home lies cyclically in (i, j]. */
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            ix[i] = ix[j];
            ix[j] = 0;
            i = j;
        }
    }
}

static void age_unlink(struct idem_table *t, struct idem_stripe *s, uint32_t n)
{
    struct idem_entry *en = entries(t, s), *e = &en[n];
    if (e->prev)
        en[e->prev - 1].next = e->next;
    else
        s->age_head = e->next;
    if (e->next)
        en[e->next - 1].prev = e->prev;
    else
        s->age_tail = e->prev;
    e->prev = e->next = 0;
}

static void age_append(struct idem_table *t, struct idem_stripe *s, uint32_t n)
{
    struct idem_entry *en = entries(t, s), *e = &en[n];
    e->next = 0;
    e->prev = s->age_tail;
    if (s->age_tail)
        en[s->age_tail - 1].next = n + 1;
    else
        s->age_head = n + 1;
    s->age_tail = n + 1;
}

static void entry_free(struct idem_table *t, struct idem_stripe *s, uint32_t n, int64_t bucket)
{
    struct idem_entry *e = &entries(t, s)[n];
    if (bucket < 0)
        bucket = find(t, s, &(struct idem_id){e->lo, e->hi});
    if (bucket >= 0)
        index_remove(t, s, (uint32_t)bucket);
    age_unlink(t, s, n);
    e->state = E_FREE;
    e->next = s->free_head;
    s->free_head = n + 1;
    s->in_use--;
}

static int expired(const struct idem_table *t, const struct idem_entry *e, time_t now)
{
    return now >= (time_t)e->time && (uint64_t)(now - (time_t)e->time) >= t->window;
}

/* A free entry, evicting the oldest done one when there is none; -1 when every entry is in
 * flight. */
static int64_t entry_alloc(struct idem_table *t, struct idem_stripe *s, time_t now)
{
    struct idem_entry *en = entries(t, s);
    if (!s->free_head && s->bump == s->cap) {
        uint32_t v = s->age_head;
        while (v && en[v - 1].state != E_DONE)
            v = en[v - 1].next;
        if (!v)
            return -1;
        atomic_fetch_add(expired(t, &en[v - 1], now) ? &t->expired : &t->evictions, 1);
        entry_free(t, s, v - 1, -1);
    }
    uint32_t n;
    if (s->free_head) {
        n = s->free_head - 1;
        s->free_head = en[n].next;
    } else {
        n = s->bump++;
    }
    memset(&en[n], 0, sizeof en[n]);
    s->in_use++;
    return n;
}

static int cmp_time(const void *a, const void *b, void *arg)
{
    const struct idem_entry *en = arg;
    uint32_t x = en[*(const uint32_t *)a].time, y = en[*(const uint32_t *)b].time;
    return (x > y) - (x < y);
}

/* The lock's owner died inside: the index and the lists may be half changed, the entries'
 * states are what counts. Built again from them (in age order by their times). */
static void stripe_rebuild(struct idem_table *t, struct idem_stripe *s)
{
    struct idem_entry *en = entries(t, s);
    memset(buckets(t, s), 0, (size_t)s->nb * sizeof(uint32_t));
    s->free_head = s->age_head = s->age_tail = s->in_use = 0;
    uint32_t *order = malloc((size_t)s->bump * sizeof *order + 1);
    size_t live = 0;
    for (uint32_t n = s->bump; n-- > 0;) {
        if (en[n].state == E_INFLIGHT || en[n].state == E_DONE) {
            if (order)
                order[live++] = n;
            else
                age_append(t, s, n);
            index_insert(t, s, n);
            s->in_use++;
        } else {
            en[n].state = E_FREE;
            en[n].next = s->free_head;
            s->free_head = n + 1;
        }
    }
    if (order) {
        qsort_r(order, live, sizeof *order, cmp_time, en);
        for (size_t k = 0; k < live; k++)
            age_append(t, s, order[k]);
        free(order);
    }
}

static void lock_stripe(struct idem_table *t, struct idem_stripe *s)
{
    if (pthread_mutex_lock(&s->lock) == EOWNERDEAD) {
        stripe_rebuild(t, s);
        pthread_mutex_consistent(&s->lock);
    }
}

static int alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* The body's index in t->bodies (added if new), or -1 when it does not fit. */
static int intern_body(struct idem_table *t, const char *b, size_t len)
{
    if (len > IDEM_BODY_MAX)
        return -1;
    if (pthread_mutex_lock(&t->bodies_lock) == EOWNERDEAD)
        pthread_mutex_consistent(&t->bodies_lock); /* nbodies is raised after the copy */
    unsigned n = atomic_load(&t->nbodies);
    int found = -1;
    for (unsigned i = 0; i < n && found < 0; i++)
        if (t->bodies[i].len == len && !memcmp(t->bodies[i].b, b, len))
            found = (int)i;
    if (found < 0 && n < IDEM_BODIES) {
        memcpy(t->bodies[n].b, b, len);
        t->bodies[n].len = (uint8_t)len;
        atomic_store(&t->nbodies, n + 1);
        found = (int)n;
    }
    pthread_mutex_unlock(&t->bodies_lock);
    return found;
}

static void outcome_of(struct idem_table *t, const struct idem_entry *e, struct idem_outcome *o)
{
    memset(o, 0, sizeof *o);
    o->status = e->status;
    o->resp = e->resp;
    o->body_hash = e->body_hash;
    if (e->resp == IDEM_RESP_BODY) {
        const struct idem_body *b = &t->bodies[e->u.f.body];
        o->body_len = b->len;
        memcpy(o->body, b->b, b->len);
    } else {
        o->bytes = e->u.s.bytes;
        o->valid = e->u.s.valid;
        o->invalid = e->u.s.invalid;
    }
}

/* e becomes done with o, dated when, and the youngest of its stripe. 0, or -1 (o's body
 * does not fit). */
static int set_done(struct idem_table *t, struct idem_stripe *s, uint32_t n,
                    const struct idem_outcome *o, time_t when)
{
    struct idem_entry *e = &entries(t, s)[n];
    int body = 0;
    if (o->resp == IDEM_RESP_BODY && (body = intern_body(t, o->body, o->body_len)) < 0)
        return -1;
    e->state = E_DONE;
    e->status = o->status;
    e->resp = o->resp;
    e->body_hash = o->body_hash;
    e->time = (uint32_t)when;
    if (o->resp == IDEM_RESP_BODY) {
        e->u.f.pid = 0;
        e->u.f.body = (uint32_t)body;
    } else {
        e->u.s.bytes = o->bytes;
        e->u.s.valid = o->valid;
        e->u.s.invalid = o->invalid;
    }
    age_unlink(t, s, n);
    age_append(t, s, n);
    return 0;
}

enum idem_verdict idem_claim(struct idem_table *t, const struct idem_id *id, pid_t pid,
                             time_t now, struct idem_outcome *out)
{
    struct idem_stripe *s = stripe_of(t, id);
    lock_stripe(t, s);
    struct idem_entry *en = entries(t, s);
    int64_t b = find(t, s, id);
    enum idem_verdict v = IDEM_CLAIMED;
    if (b >= 0) {
        uint32_t n = slot(s, buckets(t, s)[b]);
        struct idem_entry *e = &en[n];
        if (e->state == E_DONE && !expired(t, e, now)) {
            outcome_of(t, e, out);
            v = IDEM_DONE;
        } else if (e->state == E_INFLIGHT && (e->u.f.pid == pid || alive(e->u.f.pid))) {
            v = IDEM_BUSY;
        } else if (e->state == E_INFLIGHT) { /* its owner died before the main process saw it */
            e->u.f.pid = pid;
            e->time = (uint32_t)now;
            age_unlink(t, s, n);
            age_append(t, s, n);
        } else {
            atomic_fetch_add(&t->expired, 1);
            entry_free(t, s, n, b);
            b = -1;
        }
    }
    if (b < 0) {
        int64_t n = entry_alloc(t, s, now);
        if (n < 0) {
            atomic_fetch_add(&t->full, 1);
            v = IDEM_FULL;
        } else {
            struct idem_entry *e = &en[n];
            e->lo = id->lo;
            e->hi = id->hi;
            e->state = E_INFLIGHT;
            e->time = (uint32_t)now;
            e->u.f.pid = pid;
            index_insert(t, s, (uint32_t)n);
            age_append(t, s, (uint32_t)n);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return v;
}

/* The entry index of pid's claim of id, or -1. */
static int64_t owned(struct idem_table *t, struct idem_stripe *s, const struct idem_id *id,
                     pid_t pid, int64_t *bucket)
{
    int64_t b = find(t, s, id);
    if (b < 0)
        return -1;
    uint32_t n = slot(s, buckets(t, s)[b]);
    const struct idem_entry *e = &entries(t, s)[n];
    *bucket = b;
    return e->state == E_INFLIGHT && e->u.f.pid == pid ? (int64_t)n : -1;
}

int idem_complete(struct idem_table *t, const struct idem_id *id, pid_t pid,
                  const struct idem_outcome *o, time_t now)
{
    struct idem_stripe *s = stripe_of(t, id);
    lock_stripe(t, s);
    int64_t b = -1, n = owned(t, s, id, pid, &b);
    int r = -1;
    if (n >= 0 && (r = set_done(t, s, (uint32_t)n, o, now)) != 0)
        entry_free(t, s, (uint32_t)n, b);
    pthread_mutex_unlock(&s->lock);
    return r;
}

void idem_release(struct idem_table *t, const struct idem_id *id, pid_t pid)
{
    struct idem_stripe *s = stripe_of(t, id);
    lock_stripe(t, s);
    int64_t b = -1, n = owned(t, s, id, pid, &b);
    if (n >= 0)
        entry_free(t, s, (uint32_t)n, b);
    pthread_mutex_unlock(&s->lock);
}

size_t idem_release_owner(struct idem_table *t, pid_t pid)
{
    size_t count = 0;
    for (uint32_t i = 0; i < t->nstripes; i++) {
        struct idem_stripe *s = &t->stripes[i];
        lock_stripe(t, s);
        struct idem_entry *en = entries(t, s);
        for (uint32_t n = 0; n < s->bump; n++)
            if (en[n].state == E_INFLIGHT && en[n].u.f.pid == pid) {
                entry_free(t, s, n, -1);
                count++;
            }
        pthread_mutex_unlock(&s->lock);
    }
    return count;
}

int idem_load_one(struct idem_table *t, const struct idem_id *id, const struct idem_outcome *o,
                  time_t when, time_t now)
{
    if (now >= when && (uint64_t)(now - when) >= t->window)
        return -1;
    struct idem_stripe *s = stripe_of(t, id);
    lock_stripe(t, s);
    int64_t b = find(t, s, id), n;
    if (b >= 0) {
        n = slot(s, buckets(t, s)[b]);
    } else if ((n = entry_alloc(t, s, now)) >= 0) {
        struct idem_entry *e = &entries(t, s)[n];
        e->lo = id->lo;
        e->hi = id->hi;
        e->state = E_INFLIGHT; /* for an instant: set_done makes it done */
        index_insert(t, s, (uint32_t)n);
        age_append(t, s, (uint32_t)n);
    }
    int r = -1;
    if (n >= 0 && (r = set_done(t, s, (uint32_t)n, o, when)) != 0)
        entry_free(t, s, (uint32_t)n, -1);
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* A cancel record: the key's outcome no longer stands. */
static void forget(struct idem_table *t, const struct idem_id *id)
{
    struct idem_stripe *s = stripe_of(t, id);
    lock_stripe(t, s);
    int64_t b = find(t, s, id);
    if (b >= 0)
        entry_free(t, s, slot(s, buckets(t, s)[b]), b);
    pthread_mutex_unlock(&s->lock);
}

int idem_table_check(struct idem_table *t, size_t *inflight)
{
    *inflight = 0;
    int bad = 0;
    for (uint32_t i = 0; i < t->nstripes && !bad; i++) {
        struct idem_stripe *s = &t->stripes[i];
        lock_stripe(t, s);
        struct idem_entry *en = entries(t, s);
        uint32_t live = 0, listed = 0, indexed = 0;
        for (uint32_t n = 0; n < s->bump; n++) {
            if (en[n].state == E_FREE)
                continue;
            live++;
            *inflight += en[n].state == E_INFLIGHT;
            int64_t b = find(t, s, &(struct idem_id){en[n].lo, en[n].hi});
            bad |= b < 0 || slot(s, buckets(t, s)[b]) != n ||
                    buckets(t, s)[b] != (tag(s, en[n].lo) | (n + 1));
        }
        for (uint32_t b = 0; b < s->nb; b++)
            indexed += buckets(t, s)[b] != 0;
        for (uint32_t v = s->age_head, prev = 0; v && listed <= s->cap; v = en[v - 1].next) {
            bad |= en[v - 1].state == E_FREE || en[v - 1].prev != prev;
            prev = v;
            listed++;
        }
        bad |= live != s->in_use || listed != live || indexed != live;
        pthread_mutex_unlock(&s->lock);
    }
    return bad ? -1 : 0;
}

void idem_test_die_locked(struct idem_table *t, const struct idem_id *id)
{
    struct idem_stripe *s = stripe_of(t, id);
    lock_stripe(t, s);
    memset(buckets(t, s), 0, (size_t)s->nb * sizeof(uint32_t));
    s->age_head = s->age_tail = 0;
    _exit(0);
}

void idem_counts(struct idem_table *t, struct idem_counts *c)
{
    memset(c, 0, sizeof *c);
    for (uint32_t i = 0; i < t->nstripes; i++) {
        /* A gauge read without the lock: a word, possibly a moment old. */
        c->in_use += __atomic_load_n(&t->stripes[i].in_use, __ATOMIC_RELAXED);
        c->capacity += t->stripes[i].cap;
    }
    c->replays = atomic_load(&t->replays);
    c->conflicts = atomic_load(&t->conflicts);
    c->mismatches = atomic_load(&t->mismatches);
    c->evictions = atomic_load(&t->evictions);
    c->expired = atomic_load(&t->expired);
    c->full = atomic_load(&t->full);
}

void idem_count(struct idem_table *t, enum idem_event e)
{
    atomic_fetch_add(e == IDEM_EV_REPLAY ? &t->replays
                     : e == IDEM_EV_CONFLICT ? &t->conflicts
                                             : &t->mismatches,
                     1);
}

int idem_metrics_format(struct idem_table *t, struct buf *out)
{
    struct idem_counts c;
    idem_counts(t, &c);
    const struct {
        const char *name, *type, *help;
        uint64_t v;
    } m[] = {
        {"ndingest_idempotency_keys", "gauge", "Idempotency keys held (in flight or answered).", c.in_use},
        {"ndingest_idempotency_capacity", "gauge", "Idempotency keys the table can hold (--idempotency-keys).", c.capacity},
        {"ndingest_idempotency_replays_total", "counter", "Retries answered with the recorded response.", c.replays},
        {"ndingest_idempotency_conflicts_total", "counter", "Retries refused with 409: the first was still in flight.", c.conflicts},
        {"ndingest_idempotency_mismatches_total", "counter", "Keys reused for another request, refused with 422.", c.mismatches},
        {"ndingest_idempotency_evictions_total", "counter", "Answered keys evicted within the window to make room.", c.evictions},
        {"ndingest_idempotency_expired_total", "counter", "Keys dropped after --idempotency-window.", c.expired},
        {"ndingest_idempotency_full_total", "counter", "Keyed requests refused with 503: every key in flight.", c.full},
    };
    char line[512];
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        int n = snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", m[i].name,
                         m[i].help, m[i].name, m[i].type, m[i].name, (unsigned long long)m[i].v);
        if (buf_append(out, line, (size_t)n))
            return -1;
    }
    return 0;
}

/* ---- The key log ---- */

#define IDEM_MAGIC 0x4b49444eu /* "NDIK" */
#define IDEM_SUM_AT (IDEM_RECORD - 8)

static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint64_t get64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Layout (host byte order): 0 magic u32, 4 kind u8, 5 resp u8, 6 status u16, 8 when u64,
 * 16 id.lo, 24 id.hi, 32 body hash, 40 bytes/valid/invalid u64 (or 40 body length u8, 41
 * the body), 120 XXH3-64 of bytes [0, 120). */
void idem_record_encode(unsigned char rec[IDEM_RECORD], enum idem_record_kind kind,
                        const struct idem_id *id, const struct idem_outcome *o, time_t when)
{
    memset(rec, 0, IDEM_RECORD);
    uint32_t magic = IDEM_MAGIC;
    memcpy(rec, &magic, 4);
    rec[4] = (unsigned char)kind;
    rec[5] = o->resp;
    memcpy(rec + 6, &o->status, 2);
    put64(rec + 8, (uint64_t)when);
    put64(rec + 16, id->lo);
    put64(rec + 24, id->hi);
    put64(rec + 32, o->body_hash);
    if (o->resp == IDEM_RESP_BODY) {
        size_t len = o->body_len <= IDEM_BODY_MAX ? o->body_len : IDEM_BODY_MAX;
        rec[40] = (unsigned char)len;
        memcpy(rec + 41, o->body, len);
    } else {
        put64(rec + 40, o->bytes);
        put64(rec + 48, o->valid);
        put64(rec + 56, o->invalid);
    }
    put64(rec + IDEM_SUM_AT, XXH3_64bits(rec, IDEM_SUM_AT));
}

int idem_record_decode(const unsigned char rec[IDEM_RECORD], enum idem_record_kind *kind,
                       struct idem_id *id, struct idem_outcome *o, time_t *when)
{
    uint32_t magic;
    memcpy(&magic, rec, 4);
    if (magic != IDEM_MAGIC || get64(rec + IDEM_SUM_AT) != XXH3_64bits(rec, IDEM_SUM_AT))
        return -1;
    if ((rec[4] != IDEM_REC_DONE && rec[4] != IDEM_REC_CANCEL) || rec[5] > IDEM_RESP_BODY ||
        (rec[5] == IDEM_RESP_BODY && rec[40] > IDEM_BODY_MAX))
        return -1;
    memset(o, 0, sizeof *o);
    *kind = rec[4];
    o->resp = rec[5];
    memcpy(&o->status, rec + 6, 2);
    *when = (time_t)get64(rec + 8);
    id->lo = get64(rec + 16);
    id->hi = get64(rec + 24);
    o->body_hash = get64(rec + 32);
    if (o->resp == IDEM_RESP_BODY) {
        o->body_len = rec[40];
        memcpy(o->body, rec + 41, o->body_len);
    } else {
        o->bytes = get64(rec + 40);
        o->valid = get64(rec + 48);
        o->invalid = get64(rec + 56);
    }
    return 0;
}

static void load_bytes(struct idem_table *t, const unsigned char *p, size_t size, time_t now,
                       struct idem_load_stats *st)
{
    uint32_t magic = IDEM_MAGIC;
    for (size_t o = 0; o + IDEM_RECORD <= size;) {
        enum idem_record_kind kind;
        struct idem_id id;
        struct idem_outcome out;
        time_t when;
        if (memcmp(p + o, &magic, 4) != 0 || idem_record_decode(p + o, &kind, &id, &out, &when)) {
            /* A torn record: the next whole one starts at a later magic number. */
            const unsigned char *next = memmem(p + o + 1, size - o - 1, &magic, 4);
            st->skipped++;
            if (!next)
                break;
            o = (size_t)(next - p);
            continue;
        }
        st->records++;
        if (kind == IDEM_REC_CANCEL)
            forget(t, &id);
        else if (idem_load_one(t, &id, &out, when, now) == 0)
            st->loaded++;
        else
            st->skipped++;
        o += IDEM_RECORD;
    }
}

/* At start, before loading n records (0 or more): the pages they will touch, and the whole
 * index, faulted in with one call per stripe rather than one fault per page. A fault is dear
 * in a VM: a third of loading 1M keys; and on a fresh table nearly every new key's bucket
 * is on a page not yet touched (the index is 8 MB at the default 1M keys, in 4 KB pages), so
 * the faults were ~3% of a fresh server's keyed requests, classic or tiny. */
static void populate(struct idem_table *t, size_t n)
{
#ifdef MADV_POPULATE_WRITE
    for (uint32_t i = 0; i < t->nstripes; i++) {
        struct idem_stripe *s = &t->stripes[i];
        size_t want = n / t->nstripes + n / t->nstripes / 8 + 64; /* hashing is not exact */
        if (want > s->cap)
            want = s->cap;
        size_t page = 4096, from = s->entries_off & ~(page - 1);
        size_t to = s->index_off + (size_t)s->nb * sizeof(uint32_t);
        if (want < s->cap) { /* the index whole (keys land anywhere), the entries in use */
            madvise((char *)t + from, s->entries_off + want * sizeof(struct idem_entry) - from,
                    MADV_POPULATE_WRITE);
            from = s->index_off & ~(page - 1);
        }
        madvise((char *)t + from, to - from, MADV_POPULATE_WRITE);
    }
#else
    (void)t;
    (void)n;
#endif
}

/* "keys-YYYY-MM-DD.log": 0 and the day's start (UTC) in *day, or -1 for any other name. */
static int day_of(const char *name, time_t *day)
{
    static const char shape[] = "keys-dddd-dd-dd.log";
    if (strlen(name) != sizeof shape - 1)
        return -1;
    int v[3] = {0, 0, 0}, k = 0;
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] != 'd') {
            if (name[i] != shape[i])
                return -1;
            k += shape[i] == '-' && i > 4;
        } else if (name[i] < '0' || name[i] > '9') {
            return -1;
        } else {
            v[k] = v[k] * 10 + (name[i] - '0');
        }
    }
    struct tm tm = {.tm_year = v[0] - 1900, .tm_mon = v[1] - 1, .tm_mday = v[2]};
    *day = timegm(&tm);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int idem_log_load(struct idem_table *t, const char *out_dir, unsigned window, time_t now,
                  struct idem_load_stats *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", out_dir, IDEM_DIR);
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) {
            populate(t, 0);
            return 0;
        }
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (struct dirent *de; (de = readdir(d));) {
        time_t day;
        if (day_of(de->d_name, &day))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **more = realloc(names, cap * sizeof *names);
            if (!more) {
                rc = -1;
                break;
            }
            names = more;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc)
        snprintf(err, errlen, "out of memory listing %s", dir);
    if (n) /* oldest day first: records in age order */
        qsort(names, n, sizeof *names, cmp_names);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        char path[8192];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (!stat(path, &sb))
            total += (size_t)sb.st_size / IDEM_RECORD;
    }
    populate(t, total);
    for (size_t i = 0; i < n && !rc; i++) {
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        time_t day_end = 0;
        day_of(names[i], &day_end);
        day_end += 86400;
        if (day_end <= now && (uint64_t)(now - day_end) >= window) {
            if (unlink(path) == 0)
                st->removed++;
            continue;
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb)) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            rc = -1;
            break;
        }
        st->files++;
        if (sb.st_size > 0) {
            void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
            if (p == MAP_FAILED) {
                snprintf(err, errlen, "%s: mmap: %s", path, strerror(errno));
                rc = -1;
            } else {
                load_bytes(t, p, (size_t)sb.st_size, now, st);
                munmap(p, (size_t)sb.st_size);
            }
        }
        close(fd);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

struct sink *idem_log_open(const char *out_dir, char *err, size_t errlen)
{
    char dir[4096]; /* sink_open_daily copies it */
    snprintf(dir, sizeof dir, "%s/%s", out_dir, IDEM_DIR);
    const struct sink_config cfg = {.dir = dir, .name = "keys", .suffix = ".log", .utc = 1,
                                    .check_name_each_second = 1};
    return sink_open_daily(&cfg, err, errlen);
}
