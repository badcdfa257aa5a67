/* test_idempotency.c -- Idempotency-Key: the header's grammar, the fingerprint over every
 * split of a body, the shared key table (forked claimers, expiry, eviction order, a table
 * full of keys in flight, a dead owner) and the key log (torn records, a cut at every byte,
 * the window). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xxhash.h>

#include "idempotency.h"

static int parse(const char *v, char *out, size_t max)
{
    return idem_parse_key(v, strlen(v), out, max);
}

static void test_parse_key(void **state)
{
    (void)state;
    char k[64];
    assert_int_equal(parse("\"abc\"", k, sizeof k), 3);
    assert_memory_equal(k, "abc", 3);
    assert_int_equal(parse("  \"a b\"  ", k, sizeof k), 3);
    assert_memory_equal(k, "a b", 3);
    assert_int_equal(parse("\"q\\\"x\\\\y\"", k, sizeof k), 5); /* "q\"x\\y" */
    assert_memory_equal(k, "q\"x\\y", 5);
    assert_int_equal(parse("tok-1:2/3*", k, sizeof k), 10); /* a bare token */
    assert_memory_equal(k, "tok-1:2/3*", 10);
    assert_int_equal(parse("*x", k, sizeof k), 2);
    /* empty */
    assert_int_equal(parse("\"\"", k, sizeof k), -2);
    assert_int_equal(parse("", k, sizeof k), -2);
    assert_int_equal(parse("   ", k, sizeof k), -2);
    /* malformed */
    const char *bad[] = {"\"abc", "abc\"", "\"a\"b", "\"a\\n\"", "\"a\\\"", "\"a\";p=1",
                         "\"a\", \"b\"", "1abc", "a b", "a,b", "\"\x01\"", "\"\xc3\xa9\"",
                         "\"a\" ;x", "?x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse(bad[i], k, sizeof k) != -1)
            fail_msg("accepted %s", bad[i]);
    /* the limit is on the key's bytes, unescaped */
    assert_int_equal(parse("\"abcd\"", k, 4), 4);
    assert_int_equal(parse("\"abcde\"", k, 4), -3);
    assert_int_equal(parse("\"\\\\\\\\\\\\\\\\\"", k, 4), 4); /* four escaped backslashes */
    assert_int_equal(parse("abcde", k, 4), -3);
}

static int id_eq(struct idem_id a, struct idem_id b)
{
    return a.lo == b.lo && a.hi == b.hi;
}

static void test_id_scope(void **state)
{
    (void)state;
    struct idem_id a = idem_id_of(-1, "/", 1, "k", 1);
    assert_true(id_eq(a, idem_id_of(-1, "/", 1, "k", 1)));
    assert_false(id_eq(a, idem_id_of(0, "/", 1, "k", 1)));     /* another token */
    assert_false(id_eq(a, idem_id_of(-1, "ds", 2, "k", 1)));   /* another route */
    assert_false(id_eq(a, idem_id_of(-1, "/", 1, "K", 1)));    /* another key */
    /* the route and the key do not run into each other */
    assert_false(id_eq(idem_id_of(-1, "ab", 2, "c", 1), idem_id_of(-1, "a", 1, "bc", 2)));
}

static struct idem_id key_n(unsigned n)
{
    char k[32];
    int l = snprintf(k, sizeof k, "key-%u", n);
    return idem_id_of(-1, "/", 1, k, (size_t)l);
}

static struct idem_outcome ok_outcome(uint64_t valid)
{
    struct idem_outcome o = {.status = 200, .resp = IDEM_RESP_INGEST, .body_hash = 7 * valid,
                             .bytes = 10 * valid, .valid = valid, .invalid = 1};
    return o;
}

static struct idem_table *table(size_t keys, unsigned window)
{
    char err[200];
    struct idem_table *t = idem_table_map(keys, window, err, sizeof err);
    if (!t)
        fail_msg("%s", err);
    return t;
}

/* 4 processes each try to claim the same 10,000 keys at once: each key is claimed exactly
 * once, by one of them, and the others see it busy (its owner runs) or done. Then each
 * process adds 10,000 keys of its own: all 40,000 are there. */
static void test_forked_claims(void **state)
{
    (void)state;
    enum { PROCS = 4, KEYS = 10000 };
    struct idem_table *t = table(1 << 20, 3600);
    atomic_uint *claims = mmap(NULL, KEYS * sizeof *claims, PROT_READ | PROT_WRITE,
                               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(claims != MAP_FAILED);
    memset(claims, 0, KEYS * sizeof *claims);
    pid_t pids[PROCS];
    int go[2], done[2], stay[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(done), 0);
    assert_int_equal(pipe(stay), 0);
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            struct idem_outcome o;
            int bad = 0;
            char x;
            close(go[1]);
            close(done[0]);
            close(stay[1]);
            if (read(go[0], &x, 1) != 0) /* every process starts when the pipe closes */
                _exit(2);
            for (unsigned k = 0; k < KEYS; k++) {
                /* all in the same order, so that they race for the same key */
                unsigned n = k;
                struct idem_id id = key_n(n);
                enum idem_verdict v = idem_claim(t, &id, getpid(), 1000, &o);
                if (v == IDEM_CLAIMED)
                    atomic_fetch_add(&claims[n], 1);
                else if (v != IDEM_BUSY && v != IDEM_DONE)
                    bad = 1;
                if (v == IDEM_CLAIMED && n % 2) {
                    struct idem_outcome done = ok_outcome(n);
                    bad |= idem_complete(t, &id, getpid(), &done, 1000) != 0;
                }
            }
            for (unsigned k = 0; k < KEYS; k++) {
                struct idem_id id = key_n(100000 + (unsigned)p * KEYS + k);
                bad |= idem_claim(t, &id, getpid(), 1000, &o) != IDEM_CLAIMED;
            }
            /* Alive until every process is done: a dead claimer's keys in flight are free
             * for the taking (its owner died), and a slower one would take them. */
            x = (char)bad;
            if (write(done[1], &x, 1) != 1 || read(stay[0], &x, 1) != 0)
                _exit(2);
            _exit(bad);
        }
    }
    close(go[0]);
    close(go[1]);
    close(done[1]);
    close(stay[0]);
    char x;
    for (int p = 0; p < PROCS; p++)
        assert_int_equal(read(done[0], &x, 1), 1);
    close(done[0]);
    close(stay[1]);
    for (int p = 0; p < PROCS; p++) {
        int st;
        assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    for (unsigned n = 0; n < KEYS; n++)
        if (atomic_load(&claims[n]) != 1)
            fail_msg("key %u claimed %u times", n, atomic_load(&claims[n]));
    struct idem_counts c;
    idem_counts(t, &c);
    assert_int_equal(c.in_use, KEYS + PROCS * KEYS);
    size_t inflight;
    assert_int_equal(idem_table_check(t, &inflight), 0);
    assert_int_equal(inflight, KEYS / 2 + PROCS * KEYS);
    /* the odd ones were completed: a retry reads their outcome */
    struct idem_outcome o;
    struct idem_id id = key_n(4321);
    assert_int_equal(idem_claim(t, &id, getpid(), 1001, &o), IDEM_DONE);
    assert_int_equal(o.valid, 4321);
    assert_int_equal(o.body_hash, 7 * 4321);
    /* the even ones' owners are gone: a retry claims them */
    id = key_n(4320);
    assert_int_equal(idem_claim(t, &id, getpid(), 1001, &o), IDEM_CLAIMED);
    munmap(claims, KEYS * sizeof *claims);
    idem_table_unmap(t);
}

static void test_expiry(void **state)
{
    (void)state;
    struct idem_table *t = table(16, 10);
    struct idem_id a = key_n(1);
    struct idem_outcome o = ok_outcome(3), got;
    assert_int_equal(idem_claim(t, &a, getpid(), 100, &got), IDEM_CLAIMED);
    /* in flight: busy whatever the time (its owner, this process, runs) */
    assert_int_equal(idem_claim(t, &a, getpid(), 500, &got), IDEM_BUSY);
    assert_int_equal(idem_complete(t, &a, getpid(), &o, 100), 0);
    assert_int_equal(idem_claim(t, &a, getpid(), 109, &got), IDEM_DONE);
    assert_int_equal(got.valid, 3);
    assert_int_equal(idem_claim(t, &a, getpid(), 110, &got), IDEM_CLAIMED); /* 10 s: gone */
    struct idem_counts c;
    idem_counts(t, &c);
    assert_int_equal(c.expired, 1);
    assert_int_equal(c.in_use, 1);
    idem_table_unmap(t);
}

/* Full of answered keys: a new one evicts the oldest answered, never one in flight. */
static void test_eviction_order(void **state)
{
    (void)state;
    struct idem_table *t = table(4, 3600);
    struct idem_outcome got;
    for (unsigned k = 1; k <= 4; k++) {
        struct idem_id id = key_n(k);
        struct idem_outcome o = ok_outcome(k);
        assert_int_equal(idem_claim(t, &id, getpid(), 1000 + k, &got), IDEM_CLAIMED);
        assert_int_equal(idem_complete(t, &id, getpid(), &o, 1000 + k), 0);
    }
    struct idem_id k5 = key_n(5);
    assert_int_equal(idem_claim(t, &k5, getpid(), 1010, &got), IDEM_CLAIMED); /* evicts 1 */
    for (unsigned k = 2; k <= 4; k++) {
        struct idem_id id = key_n(k);
        assert_int_equal(idem_claim(t, &id, getpid(), 1010, &got), IDEM_DONE);
    }
    struct idem_counts c;
    idem_counts(t, &c);
    assert_int_equal(c.evictions, 1);
    struct idem_id k1 = key_n(1);
    assert_int_equal(idem_claim(t, &k1, getpid(), 1011, &got), IDEM_CLAIMED); /* new; evicts 2 */
    struct idem_id k2 = key_n(2), k3 = key_n(3);
    assert_int_equal(idem_claim(t, &k3, getpid(), 1011, &got), IDEM_DONE);
    /* 1 and 5 in flight, 3 and 4 done: 2 was evicted, so claiming it evicts 3 */
    assert_int_equal(idem_claim(t, &k2, getpid(), 1012, &got), IDEM_CLAIMED);
    assert_int_equal(idem_claim(t, &k3, getpid(), 1012, &got), IDEM_CLAIMED); /* evicts 4 */
    /* 1, 5, 2, 3 in flight: nothing can go */
    struct idem_id k6 = key_n(6);
    assert_int_equal(idem_claim(t, &k6, getpid(), 1013, &got), IDEM_FULL);
    assert_int_equal(idem_claim(t, &k5, getpid(), 1013, &got), IDEM_BUSY);
    idem_counts(t, &c);
    assert_int_equal(c.evictions, 4);
    assert_int_equal(c.in_use, 4);
    assert_int_equal(c.full, 1);
    size_t inflight;
    assert_int_equal(idem_table_check(t, &inflight), 0);
    assert_int_equal(inflight, 4);
    idem_table_unmap(t);
}

static void test_full_of_keys_in_flight(void **state)
{
    (void)state;
    struct idem_table *t = table(8, 3600);
    struct idem_outcome got;
    for (unsigned k = 0; k < 8; k++) {
        struct idem_id id = key_n(k);
        assert_int_equal(idem_claim(t, &id, getpid(), 1, &got), IDEM_CLAIMED);
    }
    struct idem_id more = key_n(8);
    assert_int_equal(idem_claim(t, &more, getpid(), 1, &got), IDEM_FULL);
    struct idem_id k3 = key_n(3);
    idem_release(t, &k3, getpid());
    assert_int_equal(idem_claim(t, &more, getpid(), 1, &got), IDEM_CLAIMED);
    /* a released key is new again */
    assert_int_equal(idem_claim(t, &k3, getpid(), 1, &got), IDEM_FULL);
    /* only the owner releases or completes */
    struct idem_outcome o = ok_outcome(1);
    assert_int_equal(idem_complete(t, &more, getpid() + 1, &o, 1), -1);
    idem_release(t, &more, getpid() + 1);
    assert_int_equal(idem_claim(t, &more, getpid(), 1, &got), IDEM_BUSY);
    idem_table_unmap(t);
}

/* A worker killed with keys in flight: a sibling that meets one takes it over, and the main
 * process's reap releases the rest. */
static void test_killed_owner(void **state)
{
    (void)state;
    struct idem_table *t = table(64, 3600);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        struct idem_outcome o;
        for (unsigned k = 0; k < 5; k++) {
            struct idem_id id = key_n(k);
            if (idem_claim(t, &id, getpid(), 1, &o) != IDEM_CLAIMED)
                _exit(1);
        }
        if (write(ready[1], "x", 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    char x;
    assert_int_equal(read(ready[0], &x, 1), 1);
    struct idem_outcome got;
    struct idem_id k0 = key_n(0), k1 = key_n(1);
    assert_int_equal(idem_claim(t, &k0, getpid(), 2, &got), IDEM_BUSY); /* its owner runs */
    kill(child, SIGKILL);
    int st;
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_int_equal(idem_claim(t, &k0, getpid(), 3, &got), IDEM_CLAIMED); /* taken over */
    assert_int_equal(idem_release_owner(t, child), 4);                     /* 1..4 */
    assert_int_equal(idem_claim(t, &k1, getpid(), 3, &got), IDEM_CLAIMED);
    struct idem_counts c;
    idem_counts(t, &c);
    assert_int_equal(c.in_use, 2);
    close(ready[0]);
    close(ready[1]);
    idem_table_unmap(t);
}

/* A worker killed while it held a stripe's lock, in the middle of a change: the next locker
 * is not blocked for ever (the mutex is robust) and finds the stripe rebuilt from its
 * entries, the keys answered before still answered. */
static void test_killed_inside_the_lock(void **state)
{
    (void)state;
    struct idem_table *t = table(8, 3600);
    struct idem_outcome got, o = ok_outcome(4);
    struct idem_id a = key_n(1), b = key_n(2);
    assert_int_equal(idem_claim(t, &a, getpid(), 10, &got), IDEM_CLAIMED);
    assert_int_equal(idem_complete(t, &a, getpid(), &o, 10), 0);
    assert_int_equal(idem_claim(t, &b, getpid(), 11, &got), IDEM_CLAIMED);
    assert_int_equal(idem_complete(t, &b, getpid(), &o, 11), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        idem_test_die_locked(t, &a);
    int st;
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_int_equal(idem_claim(t, &a, getpid(), 12, &got), IDEM_DONE);
    assert_int_equal(got.valid, 4);
    assert_int_equal(idem_claim(t, &b, getpid(), 12, &got), IDEM_DONE);
    size_t inflight;
    assert_int_equal(idem_table_check(t, &inflight), 0);
    assert_int_equal(inflight, 0);
    /* the age order was rebuilt from the times: a is still the oldest, evicted first */
    for (unsigned k = 3; k <= 8; k++) {
        struct idem_id id = key_n(k);
        assert_int_equal(idem_claim(t, &id, getpid(), 13, &got), IDEM_CLAIMED);
    }
    struct idem_id k9 = key_n(9);
    assert_int_equal(idem_claim(t, &k9, getpid(), 13, &got), IDEM_CLAIMED);
    assert_int_equal(idem_claim(t, &b, getpid(), 13, &got), IDEM_DONE);
    assert_int_equal(idem_claim(t, &a, getpid(), 13, &got), IDEM_CLAIMED); /* evicted: new */
    idem_table_unmap(t);
}

static void test_bodies_and_bytes(void **state)
{
    (void)state;
    struct idem_table *t = table(16, 3600);
    struct idem_id a = key_n(1), b = key_n(2);
    struct idem_outcome o = {.status = 400, .resp = IDEM_RESP_BODY, .body_hash = 9}, got;
    o.body_len = (uint8_t)snprintf(o.body, sizeof o.body, "{\"error\": \"bad\"}\n");
    assert_int_equal(idem_claim(t, &a, getpid(), 1, &got), IDEM_CLAIMED);
    assert_int_equal(idem_complete(t, &a, getpid(), &o, 1), 0);
    assert_int_equal(idem_claim(t, &a, getpid(), 2, &got), IDEM_DONE);
    assert_int_equal(got.status, 400);
    assert_int_equal(got.body_len, o.body_len);
    assert_memory_equal(got.body, o.body, o.body_len);
    /* a body that does not fit is not recorded: the key is released */
    o.body_len = IDEM_BODY_MAX + 1;
    assert_int_equal(idem_claim(t, &b, getpid(), 1, &got), IDEM_CLAIMED);
    assert_int_equal(idem_complete(t, &b, getpid(), &o, 1), -1);
    assert_int_equal(idem_claim(t, &b, getpid(), 1, &got), IDEM_CLAIMED);
    /* 1M keys must not cost gigabytes: the entry and its share of the index */
    assert_true(idem_bytes_per_key() <= 80);
    idem_table_unmap(t);
}

static char dir[64], logdir[96];

static int log_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_idem.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(logdir, sizeof logdir, "%s/%s", dir, IDEM_DIR);
    return mkdir(logdir, 0755);
}

static int log_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *name, const void *p, size_t n)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s", logdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* 2026-12-07 00:00:00 UTC */
#define DAY 1796601600

static void test_record_round_trip(void **state)
{
    (void)state;
    unsigned char rec[IDEM_RECORD];
    struct idem_id id = key_n(42), back;
    struct idem_outcome o = ok_outcome(5), got;
    o.status = 202;
    o.resp = IDEM_RESP_EVENTS;
    idem_record_encode(rec, IDEM_REC_DONE, &id, &o, DAY + 5);
    enum idem_record_kind kind;
    time_t when;
    assert_int_equal(idem_record_decode(rec, &kind, &back, &got, &when), 0);
    assert_int_equal(kind, IDEM_REC_DONE);
    assert_true(id_eq(id, back));
    assert_int_equal(when, DAY + 5);
    assert_int_equal(got.status, 202);
    assert_int_equal(got.resp, IDEM_RESP_EVENTS);
    assert_int_equal(got.bytes, o.bytes);
    assert_int_equal(got.valid, 5);
    assert_int_equal(got.invalid, 1);
    assert_int_equal(got.body_hash, o.body_hash);
    /* any flipped bit is caught by the checksum */
    for (size_t i = 0; i < IDEM_RECORD * 8; i += 7) {
        rec[i / 8] ^= (unsigned char)(1u << (i % 8));
        if (idem_record_decode(rec, &kind, &back, &got, &when) == 0)
            fail_msg("bit %zu flipped, still decoded", i);
        rec[i / 8] ^= (unsigned char)(1u << (i % 8));
    }
}

/* Three records, the file cut at every byte (a crash mid-write): exactly the whole records
 * before the cut are loaded. And a torn record in the middle (a killed worker, others
 * appending after it) costs only itself. */
static void test_log_cut_at_every_byte(void **state)
{
    (void)state;
    unsigned char recs[3 * IDEM_RECORD];
    for (unsigned k = 0; k < 3; k++) {
        struct idem_id id = key_n(k);
        struct idem_outcome o = ok_outcome(k + 1);
        idem_record_encode(recs + k * IDEM_RECORD, IDEM_REC_DONE, &id, &o, DAY + 10 + k);
    }
    for (size_t cut = 0; cut <= sizeof recs; cut++) {
        write_file("keys-2026-12-07.log", recs, cut);
        struct idem_table *t = table(16, 3600);
        struct idem_load_stats st;
        char err[200];
        assert_int_equal(idem_log_load(t, dir, 3600, DAY + 100, &st, err, sizeof err), 0);
        size_t whole = cut / IDEM_RECORD;
        if (st.loaded != whole)
            fail_msg("cut at %zu: %zu loaded, %zu whole", cut, st.loaded, whole);
        for (unsigned k = 0; k < 3; k++) {
            struct idem_id id = key_n(k);
            struct idem_outcome got;
            enum idem_verdict v = idem_claim(t, &id, getpid(), DAY + 100, &got);
            assert_int_equal(v, k < whole ? IDEM_DONE : IDEM_CLAIMED);
            if (k < whole)
                assert_int_equal(got.valid, k + 1);
        }
        idem_table_unmap(t);
    }
    /* torn in the middle: record 0, half of record 1, record 2 */
    unsigned char torn[2 * IDEM_RECORD + IDEM_RECORD / 2];
    memcpy(torn, recs, IDEM_RECORD);
    memcpy(torn + IDEM_RECORD, recs + IDEM_RECORD, IDEM_RECORD / 2);
    memcpy(torn + IDEM_RECORD + IDEM_RECORD / 2, recs + 2 * IDEM_RECORD, IDEM_RECORD);
    write_file("keys-2026-12-07.log", torn, sizeof torn);
    struct idem_table *t = table(16, 3600);
    struct idem_load_stats st;
    char err[200];
    assert_int_equal(idem_log_load(t, dir, 3600, DAY + 100, &st, err, sizeof err), 0);
    assert_int_equal(st.loaded, 2);
    struct idem_outcome got;
    struct idem_id k0 = key_n(0), k1 = key_n(1), k2 = key_n(2);
    assert_int_equal(idem_claim(t, &k0, getpid(), DAY + 100, &got), IDEM_DONE);
    assert_int_equal(idem_claim(t, &k2, getpid(), DAY + 100, &got), IDEM_DONE);
    assert_int_equal(idem_claim(t, &k1, getpid(), DAY + 100, &got), IDEM_CLAIMED);
    idem_table_unmap(t);
}

/* Records older than the window are not loaded, a cancel record undoes its key, and a day
 * file that ended more than a window ago is deleted. */
static void test_log_window(void **state)
{
    (void)state;
    unsigned char recs[4 * IDEM_RECORD];
    struct idem_id a = key_n(1), b = key_n(2), c = key_n(3);
    struct idem_outcome o = ok_outcome(1);
    idem_record_encode(recs, IDEM_REC_DONE, &a, &o, DAY + 100);          /* old */
    idem_record_encode(recs + IDEM_RECORD, IDEM_REC_DONE, &b, &o, DAY + 5000);
    idem_record_encode(recs + 2 * IDEM_RECORD, IDEM_REC_DONE, &c, &o, DAY + 5000);
    idem_record_encode(recs + 3 * IDEM_RECORD, IDEM_REC_CANCEL, &c, &o, DAY + 5001);
    write_file("keys-2026-12-07.log", recs, sizeof recs);
    write_file("keys-2026-12-05.log", recs, IDEM_RECORD); /* ended 2 days ago */
    write_file("notes.txt", "x", 1);
    struct idem_table *t = table(16, 3600);
    struct idem_load_stats st;
    char err[200];
    assert_int_equal(idem_log_load(t, dir, 3600, DAY + 5100, &st, err, sizeof err), 0);
    assert_int_equal(st.loaded, 2); /* b, c (then cancelled) */
    assert_int_equal(st.removed, 1);
    assert_int_equal(st.files, 1);
    struct idem_outcome got;
    assert_int_equal(idem_claim(t, &b, getpid(), DAY + 5100, &got), IDEM_DONE);
    assert_int_equal(idem_claim(t, &a, getpid(), DAY + 5100, &got), IDEM_CLAIMED);
    assert_int_equal(idem_claim(t, &c, getpid(), DAY + 5100, &got), IDEM_CLAIMED);
    char path[160];
    snprintf(path, sizeof path, "%s/keys-2026-12-05.log", logdir);
    assert_int_equal(access(path, F_OK), -1);
    idem_table_unmap(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_key),
        cmocka_unit_test(test_id_scope),
        cmocka_unit_test(test_forked_claims),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_eviction_order),
        cmocka_unit_test(test_full_of_keys_in_flight),
        cmocka_unit_test(test_killed_owner),
        cmocka_unit_test(test_killed_inside_the_lock),
        cmocka_unit_test(test_bodies_and_bytes),
        cmocka_unit_test(test_record_round_trip),
        cmocka_unit_test_setup_teardown(test_log_cut_at_every_byte, log_setup, log_teardown),
        cmocka_unit_test_setup_teardown(test_log_window, log_setup, log_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
