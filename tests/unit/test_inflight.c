/* test_inflight.c -- the shared table of ranges in flight: published in one process, seen by another; min start; a full table; a dead writer's write found; reclaim; the file a server that died whole leaves, recovered at the next start. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inflight.h"
#include "testutil.h"

#define F 0x1111 /* two files' identities */
#define G 0x2222

/* A child process that owns worker w's table: it runs steps, each waiting for the parent's
 * byte on `go` and answering one on `done`, so the parent looks at the table between them. */
struct child {
    pid_t pid;
    int go, done;
};

static void wait_byte(int fd)
{
    char c;
    if (read(fd, &c, 1) != 1)
        _exit(9);
}

static void send_byte(int fd)
{
    if (write(fd, "x", 1) != 1)
        _exit(9);
}

typedef void (*step_fn)(struct inflight_owner *o, int step);

static struct child spawn(struct inflight *f, int w, step_fn fn, int steps)
{
    int go[2], done[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(done), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(go[1]);
        close(done[0]);
        struct inflight_owner o;
        if (inflight_own(&o, f, w))
            _exit(8);
        for (int i = 0; i < steps; i++) {
            wait_byte(go[0]);
            fn(&o, i);
            send_byte(done[1]);
        }
        wait_byte(go[0]); /* until told to go: its entries stay as they are */
        _exit(0);
    }
    close(go[0]);
    close(done[1]);
    return (struct child){pid, go[1], done[0]};
}

static void step(struct child *c)
{
    char b;
    assert_int_equal(write(c->go, "x", 1), 1);
    assert_int_equal(read(c->done, &b, 1), 1);
}

static void finish(struct child *c)
{
    int st;
    assert_int_equal(write(c->go, "x", 1), 1);
    assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(c->go);
    close(c->done);
}

static int entry;

static void publish_steps(struct inflight_owner *o, int i)
{
    switch (i) {
    case 0: /* reserved: no file's yet */
        entry = inflight_begin(o, 0, 0);
        break;
    case 1: /* about to write in F, at or after 100 */
        inflight_publish(o, entry, F, 100);
        break;
    case 2: /* landed at [120, 200) */
        inflight_set(o, entry, 120, 200, 3);
        break;
    case 3:
        inflight_clear(o, entry);
        break;
    }
}

static void test_published_in_one_process_seen_in_another(void **state)
{
    (void)state;
    char err[128];
    struct inflight *f = inflight_map(3, 8, NULL, err, sizeof err);
    assert_non_null(f);
    assert_int_equal(inflight_min_start(f, F), UINT64_MAX);
    struct child c = spawn(f, 1, publish_steps, 4);
    step(&c);
    assert_int_equal(inflight_min_start(f, F), UINT64_MAX); /* file 0 is nobody's */
    step(&c);
    assert_int_equal(inflight_min_start(f, F), 100);
    assert_int_equal(inflight_min_start(f, G), UINT64_MAX);
    step(&c);
    assert_int_equal(inflight_min_start(f, F), 120);
    step(&c);
    assert_int_equal(inflight_min_start(f, F), UINT64_MAX);
    finish(&c);
    inflight_unmap(f);
}

static void two_ranges(struct inflight_owner *o, int i)
{
    if (i == 0) {
        int a = inflight_begin(o, F, 500), b = inflight_begin(o, F, 300);
        inflight_set(o, a, 500, 600, 1);
        inflight_set(o, b, 300, 400, 1);
    }
}

static void one_range(struct inflight_owner *o, int i)
{
    if (i == 0)
        inflight_set(o, inflight_begin(o, F, 350), 350, 360, 1);
}

static void test_min_over_every_worker(void **state)
{
    (void)state;
    char err[128];
    struct inflight *f = inflight_map(2, 4, NULL, err, sizeof err);
    assert_non_null(f);
    struct child a = spawn(f, 0, two_ranges, 1), b = spawn(f, 1, one_range, 1);
    step(&a);
    step(&b);
    assert_int_equal(inflight_min_start(f, F), 300);
    finish(&a);
    finish(&b);
    /* the dead workers' entries stay until the main process reclaims them */
    assert_int_equal(inflight_min_start(f, F), 300);
    inflight_reclaim(inflight_table(f, 0), NULL, NULL);
    assert_int_equal(inflight_min_start(f, F), 350);
    inflight_reclaim(inflight_table(f, 1), NULL, NULL);
    assert_int_equal(inflight_min_start(f, F), UINT64_MAX);
    inflight_unmap(f);
}

static uint64_t reclaimed[8][3];
static int nreclaimed;

static int note(void *arg, uint64_t file, uint64_t start, uint64_t end, uint64_t rows)
{
    (void)arg;
    assert_true(nreclaimed < 8);
    reclaimed[nreclaimed][0] = file;
    reclaimed[nreclaimed][1] = start;
    reclaimed[nreclaimed][2] = end;
    nreclaimed++;
    assert_int_equal(rows, 1);
    return 0;
}

static void dies_writing(struct inflight_owner *o, int i)
{
    if (i == 0) {
        inflight_set(o, inflight_begin(o, G, 10), 10, 20, 1); /* a range known */
        int e = inflight_begin(o, 0, 0);
        inflight_writing(o, F, 700, 50);
        inflight_publish(o, e, F, 700); /* ...and a write in progress */
    }
}

static void test_dead_writer_found_once_and_reclaimed(void **state)
{
    (void)state;
    char err[128];
    struct inflight *f = inflight_map(2, 4, NULL, err, sizeof err);
    assert_non_null(f);
    struct child c = spawn(f, 1, dies_writing, 1);
    step(&c);
    uint64_t start = 0, end = 0;
    assert_int_equal(inflight_orphan(f, 1, F, &start, &end), -1); /* its own: not an orphan */
    assert_int_equal(inflight_orphan(f, 0, G, &start, &end), -1); /* another file's */
    finish(&c); /* "dies" with the write in progress */
    assert_int_equal(atomic_load(&inflight_table(f, 1)->writing_end), 750); /* its bound */
    assert_int_equal(inflight_orphan(f, 0, F, &start, &end), 1);
    assert_int_equal(start, 700);
    assert_int_equal(end, 750); /* what the finder voids up to, at most */
    assert_int_equal(inflight_orphan(f, 0, F, &start, &end), -1); /* claimed: once */
    /* a replacement's write meanwhile leaves its own end in the field */
    atomic_store(&inflight_table(f, 1)->writing_end, 5);
    /* its record could not be written: put back with the end it was found with, not the
     * stale 5 that would void nothing; found again */
    assert_int_equal(inflight_unorphan(f, 1, F, 700, 750), 0);
    assert_int_equal(atomic_load(&inflight_table(f, 1)->writing_end), 750);
    end = 0;
    assert_int_equal(inflight_orphan(f, 0, F, &start, &end), 1);
    assert_int_equal(start, 700);
    assert_int_equal(end, 750);
    nreclaimed = 0;
    inflight_reclaim(inflight_table(f, 1), note, NULL);
    assert_int_equal(nreclaimed, 1); /* the write in progress is the writing field's */
    assert_int_equal(reclaimed[0][0], G);
    assert_int_equal(reclaimed[0][1], 10);
    assert_int_equal(reclaimed[0][2], 20);
    assert_int_equal(inflight_min_start(f, F), UINT64_MAX);
    assert_int_equal(inflight_min_start(f, G), UINT64_MAX);
    inflight_unmap(f);
}

/* A range whose void cannot be recorded yet (fn says so) stays in the table, and so holds
 * delivery back; refused at G, recorded at F. */
static int refuse_g(void *arg, uint64_t file, uint64_t start, uint64_t end, uint64_t rows)
{
    (void)start;
    (void)end;
    (void)rows;
    ++*(int *)arg;
    return file == G ? -1 : 0;
}

static void test_reclaim_keeps_what_was_refused_and_hold_fills_free_entries(void **state)
{
    (void)state;
    char err[128];
    struct inflight *f = inflight_map(2, 3, NULL, err, sizeof err);
    assert_non_null(f);
    struct inflight_table *held = inflight_table(f, 1);
    assert_int_equal(inflight_hold(held, F, 100, 200, 2), 0); /* entry indexes */
    assert_int_equal(inflight_hold(held, G, 50, 60, 1), 1);
    assert_int_equal(inflight_hold(held, F, 300, 400, 1), 2);
    assert_int_equal(inflight_hold(held, F, 500, 600, 1), -1); /* full */
    assert_int_equal(inflight_min_start(f, F), 100);
    assert_int_equal(inflight_min_start(f, G), 50);
    int calls = 0;
    assert_int_equal(inflight_reclaim(held, refuse_g, &calls), 1);
    assert_int_equal(calls, 3);
    assert_int_equal(inflight_min_start(f, F), UINT64_MAX); /* recorded: freed */
    assert_int_equal(inflight_min_start(f, G), 50);         /* refused: still held back */
    assert_int_equal(atomic_load(&held->high), 3);          /* not lowered while one is kept */
    /* a freed entry is taken again, and the high mark stays past the kept one */
    assert_int_equal(inflight_hold(held, F, 700, 800, 1), 0);
    assert_int_equal(inflight_min_start(f, F), 700);
    calls = 0;
    assert_int_equal(inflight_reclaim(held, refuse_g, &calls), 1);
    assert_int_equal(calls, 2);
    assert_int_equal(inflight_reclaim(held, NULL, NULL), 0); /* no judge: all freed */
    assert_int_equal(atomic_load(&held->high), 0);
    assert_int_equal(inflight_min_start(f, G), UINT64_MAX);
    inflight_unmap(f);
}

static void test_full_table(void **state)
{
    (void)state;
    char err[128];
    struct inflight *f = inflight_map(1, 2, NULL, err, sizeof err);
    assert_non_null(f);
    struct inflight_owner o;
    assert_int_equal(inflight_own(&o, f, 0), 0);
    int a = inflight_begin(&o, F, 1), b = inflight_begin(&o, F, 2);
    assert_true(a >= 0 && b >= 0 && a != b);
    assert_int_equal(inflight_begin(&o, F, 3), -1);
    inflight_clear(&o, a);
    int c = inflight_begin(&o, F, 4);
    assert_int_equal(c, a);
    assert_int_equal(inflight_min_start(f, F), 2);
    inflight_disown(&o);
    inflight_unmap(f);
    assert_null(inflight_map(0, 2, NULL, err, sizeof err));
    assert_null(inflight_map(1, 0, NULL, err, sizeof err));
}

static void test_file_id_is_the_name(void **state)
{
    (void)state;
    assert_int_equal(inflight_file_id("/a/b/trips-2026-12-07.csv"),
                     inflight_file_id("trips-2026-12-07.csv"));
    assert_int_not_equal(inflight_file_id("trips-2026-12-07.csv"),
                         inflight_file_id("trips-2026-12-08.csv"));
    assert_int_not_equal(inflight_file_id(""), 0);
}

/* What inflight_recover handed over: each table's writing field and known ranges. */
struct seen {
    int tables;
    uint64_t writing_start, ranges[8][3]; /* file, start, end */
    int nranges;
    int hold;        /* seen_table says its ranges were held, not voided */
    char kept[600];  /* the path kept_file was given */
};

static void kept_file(void *arg, const char *path)
{
    snprintf(((struct seen *)arg)->kept, sizeof ((struct seen *)arg)->kept, "%s", path);
}

static int seen_range(void *arg, uint64_t file, uint64_t start, uint64_t end, uint64_t rows)
{
    struct seen *s = arg;
    (void)rows;
    if (s->nranges < 8) {
        s->ranges[s->nranges][0] = file;
        s->ranges[s->nranges][1] = start;
        s->ranges[s->nranges][2] = end;
    }
    s->nranges++;
    return 0;
}

static int seen_table(void *arg, struct inflight_table *t)
{
    struct seen *s = arg;
    s->tables++;
    uint64_t s1 = atomic_load(&t->writing_start1);
    if (s1)
        s->writing_start = s1 - 1;
    inflight_reclaim(t, seen_range, s);
    return s->hold;
}

/* The path of the one file in dir/.inflight. */
static void one_file(const char *dir, char *path, size_t len)
{
    char d[300];
    snprintf(d, sizeof d, "%s/%s", dir, INFLIGHT_DIR);
    DIR *dd = opendir(d);
    assert_non_null(dd);
    path[0] = '\0';
    for (struct dirent *e; (e = readdir(dd));)
        if (e->d_name[0] != '.')
            snprintf(path, len, "%s/%s", d, e->d_name);
    closedir(dd);
    assert_true(path[0] != '\0');
}

static int files_in(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, INFLIGHT_DIR);
    DIR *d = opendir(path);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* A server (a child process) whose tables are a file under dir: its worker w publishes a
 * range of F and begins a write to G, then it dies without a word (no unmap). Its pid. */
static pid_t dead_server(const char *dir, int nworkers, int w)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char err[256];
        struct inflight *f = inflight_map(nworkers, 4, dir, err, sizeof err);
        struct inflight_owner o;
        if (!f || inflight_own(&o, f, w))
            _exit(1);
        inflight_set(&o, inflight_begin(&o, F, 100), 100, 180, 2);
        inflight_begin(&o, G, 900); /* begun, not yet written: the writing field's */
        inflight_writing(&o, G, 900, 100);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(WEXITSTATUS(status), 0);
    return pid;
}

/* A server (a child here) that maps its tables as a file, publishes a range and a write in
 * progress, and dies without a word: the next start finds them; a live server's file is
 * left alone; a clean stop leaves no file. */
static void test_whole_server_dead_recovered_from_its_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_inflight.XXXXXX", err[256];
    assert_non_null(mkdtemp(dir));
    dead_server(dir, 2, 1);
    assert_int_equal(files_in(dir), 1);

    struct inflight *live = inflight_map(1, 2, dir, err, sizeof err); /* this process's */
    assert_non_null(live);
    assert_int_equal(files_in(dir), 2);
    struct seen s = {0};
    assert_int_equal(inflight_recover(dir, seen_table, &s, NULL, NULL), 1);
    assert_int_equal(s.tables, 2);
    assert_int_equal(s.writing_start, 900);
    assert_int_equal(s.nranges, 1);
    assert_int_equal(s.ranges[0][0], F);
    assert_int_equal(s.ranges[0][1], 100);
    assert_int_equal(s.ranges[0][2], 180);
    assert_int_equal(files_in(dir), 1); /* the dead one's removed, the live one's kept */
    struct seen again = {0};
    assert_int_equal(inflight_recover(dir, seen_table, &again, NULL, NULL), 0);
    assert_int_equal(again.tables, 0);
    inflight_unmap(live);
    assert_int_equal(files_in(dir), 0); /* stopped with nothing in flight */

    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, INFLIGHT_DIR);
    rmdir(path);
    rmdir(dir);
}

/* A dead server's file whose ranges the start could only hold (a full disk) stays, named to
 * the caller, and a second start finds it again. */
static void test_file_kept_while_its_ranges_are_held(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_inflight.XXXXXX", path[600];
    assert_non_null(mkdtemp(dir));
    dead_server(dir, 1, 0);
    one_file(dir, path, sizeof path);
    struct seen s = {.hold = 1};
    assert_int_equal(inflight_recover(dir, seen_table, &s, NULL, kept_file), 1);
    assert_int_equal(s.nranges, 1);
    assert_string_equal(s.kept, path);
    assert_int_equal(files_in(dir), 1);
    struct seen again = {0};
    assert_int_equal(inflight_recover(dir, seen_table, &again, NULL, kept_file), 1);
    assert_int_equal(again.tables, 1);
    assert_string_equal(again.kept, ""); /* voided this time: removed */
    assert_int_equal(files_in(dir), 0);
    snprintf(path, sizeof path, "%s/%s", dir, INFLIGHT_DIR);
    rmdir(path);
    rmdir(dir);
}

static int notes;
static void count_note(const char *msg)
{
    (void)msg;
    notes++;
}

/* dir's one file is refused with a note, nothing of it voided, and removed; dir goes. */
static void refused_and_removed(const char *dir)
{
    char path[600];
    struct seen s = {0};
    notes = 0;
    assert_int_equal(inflight_recover(dir, seen_table, &s, count_note, NULL), 0);
    assert_int_equal(s.tables, 0);
    assert_int_equal(notes, 1);
    assert_int_equal(files_in(dir), 0);
    snprintf(path, sizeof path, "%s/%s", dir, INFLIGHT_DIR);
    rmdir(path);
    rmdir(dir);
}

/* A file from before the machine restarted is not trusted (its pages are what writeback
 * last stored, maybe listing ranges committed since): removed, nothing voided. */
static void test_file_from_before_a_restart_not_trusted(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_inflight.XXXXXX", path[1024];
    assert_non_null(mkdtemp(dir));
    dead_server(dir, 1, 0);
    one_file(dir, path, sizeof path);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    char head[128];
    assert_int_equal(pread(fd, head, sizeof head, 0), (ssize_t)sizeof head);
    head[30] ^= 1; /* a character of the boot id (bytes 24-63): another boot's */
    assert_int_equal(pwrite(fd, head, sizeof head, 0), (ssize_t)sizeof head);
    close(fd);
    refused_and_removed(dir);
}

/* A file whose head is crafted (sizes that overflow when multiplied, as a corrupt or hostile
 * file might hold) is refused and removed, not read past its end: a start must not crash. */
static void test_crafted_head_refused(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_inflight.XXXXXX", path[600];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/%s", dir, INFLIGHT_DIR);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/%s/1-0000000000000001", dir, INFLIGHT_DIR);
    unsigned char head[128 + 4096] = "NDINFL2";
    uint32_t nworkers = 1u << 31, cap = (1u << 28) - 1;
    uint64_t stride = (uint64_t)1 << 33; /* 2^31 * 2^33 wraps to 0: the size would "match" */
    memcpy(head + 8, &nworkers, 4);
    memcpy(head + 12, &cap, 4);
    memcpy(head + 16, &stride, 8);
    FILE *b = fopen("/proc/sys/kernel/random/boot_id", "r"); /* this boot's: trusted */
    assert_non_null(b);
    assert_non_null(fgets((char *)head + 24, 40, b));
    fclose(b);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, head, 128), 128);
    close(fd);
    refused_and_removed(dir);
}

/* Two servers started on one directory have two files, even from one process (the pid and
 * 64 random bits); and two starts take turns at recovery: while one holds the directory's
 * lock (a child here, in the middle of its recovery), another does not read, void or remove
 * anything; once it is released, the other recovers the dead server's file. */
static void test_starts_take_turns_and_files_have_their_own_names(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_inflight.XXXXXX", err[256], path[600];
    assert_non_null(mkdtemp(dir));
    struct inflight *a = inflight_map(1, 2, dir, err, sizeof err);
    struct inflight *b = inflight_map(1, 2, dir, err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);
    assert_string_not_equal(a->path, b->path);
    assert_int_equal(files_in(dir), 2);
    inflight_unmap(a);
    inflight_unmap(b);
    assert_int_equal(files_in(dir), 0);

    dead_server(dir, 1, 0);
    int locked[2], release[2];
    assert_int_equal(pipe(locked), 0);
    assert_int_equal(pipe(release), 0);
    pid_t holder = fork();
    assert_true(holder >= 0);
    if (holder == 0) { /* the first start, holding the directory's lock until told (or until
                          * the test's process is gone: the pipe's only writer then) */
        close(release[1]);
        snprintf(path, sizeof path, "%s/%s", dir, INFLIGHT_DIR);
        DIR *d = opendir(path);
        char ch = 'x';
        if (!d || flock(dirfd(d), LOCK_EX) || write(locked[1], &ch, 1) != 1 ||
            read(release[0], &ch, 1) != 1)
            _exit(1);
        _exit(0);
    }
    char ch;
    assert_int_equal(read(locked[0], &ch, 1), 1);
    pid_t second = fork();
    assert_true(second >= 0);
    if (second == 0) { /* the second start: how many files it recovered */
        struct seen s = {0};
        int n = inflight_recover(dir, seen_table, &s, NULL, NULL);
        _exit(n == 1 && s.tables == 1 && s.writing_start == 900 ? 0 : 2);
    }
    usleep(300 * 1000); /* time enough to go wrong: it must wait however long this is */
    int status;
    assert_int_equal(waitpid(second, &status, WNOHANG), 0); /* still waiting for the lock */
    assert_int_equal(files_in(dir), 1);                     /* the dead server's, untouched */
    assert_int_equal(write(release[1], "x", 1), 1);
    assert_int_equal(waitpid(holder, &status, 0), holder);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(waitpid(second, &status, 0), second);
    assert_int_equal(WEXITSTATUS(status), 0); /* then it recovered the file */
    assert_int_equal(files_in(dir), 0);
    for (int i = 0; i < 2; i++)
        close(locked[i]), close(release[i]);
    snprintf(path, sizeof path, "%s/%s", dir, INFLIGHT_DIR);
    rmdir(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_in_one_process_seen_in_another),
        cmocka_unit_test(test_min_over_every_worker),
        cmocka_unit_test(test_dead_writer_found_once_and_reclaimed),
        cmocka_unit_test(test_reclaim_keeps_what_was_refused_and_hold_fills_free_entries),
        cmocka_unit_test(test_full_table),
        cmocka_unit_test(test_file_id_is_the_name),
        cmocka_unit_test(test_whole_server_dead_recovered_from_its_file),
        cmocka_unit_test(test_file_kept_while_its_ranges_are_held),
        cmocka_unit_test(test_file_from_before_a_restart_not_trusted),
        cmocka_unit_test(test_crafted_head_refused),
        cmocka_unit_test(test_starts_take_turns_and_files_have_their_own_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
