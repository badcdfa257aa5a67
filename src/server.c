/* server.c -- the main process: binds once, forks the workers, replaces the ones that die,
 * and stops them all gracefully on SIGTERM/SIGINT. */
#include "server.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "access_log.h"
#include "auth.h"
#include "catalog.h"
#include "delivery/deliver.h"
#include "idempotency.h"
#include "inflight.h"
#include "log.h"
#include "metrics.h"
#include "net.h"
#include "options.h"
#include "sink.h"
#include "slots.h"
#include "voids.h"
#include "worker.h"

/* A worker that dies sooner than this after starting is restarted only after this long, so
 * a worker that cannot start (a full disk, a bad directory) does not make the main
 * process spin. */
#define SERVER_RESTART_DELAY_SEC 1
/* Workers drain for up to 10 s; past this the main process stops waiting and kills them. */
#define SERVER_STOP_GRACE_SEC 15

/* --token-file: loaded by the main process at start and at each SIGHUP (the previous kept
 * when the file has gone bad), so that a worker forked later starts with the tokens in
 * force, whatever the file holds by then. File-scope: reachable until exit. */
static struct auth main_tokens;

/* A range held (hold): its day file's identity, its bytes and rows, the file's inode. */
struct held_range {
    uint64_t file, start, end, rows, ino;
};

/* Ranges held, in the main process's private memory. */
struct held_list {
    struct held_range *v;
    size_t n;
};

/* Appends h: 0, or -1 out of memory. */
static int held_push(struct held_list *l, struct held_range h)
{
    struct held_range *v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v)
        return -1;
    v[l->n++] = h;
    l->v = v;
    return 0;
}

struct server {
    const struct options *o;
    int listen_fd;                /* -1 with --reuseport: each worker binds its own */
    pid_t main_pid;
    struct worker_slot *slots;
    int nslots;
    struct catalog *catalog;      /* --datasets: what a worker forked now starts with */
    struct idem_table *idem;      /* Idempotency-Key: shared by every worker */
    struct inflight *inflight;    /* each worker's ranges written and not yet answered */
    pid_t *pids;                  /* 0: not running */
    struct timespec *started;     /* when each worker was forked */
    struct timespec *restart_at;  /* when a dead worker is due again; tv_sec 0: not due */
    /* The held ranges as held (hold), for their files' inodes: one is voided only in the
     * file it was written to, since a full disk's day file may be deleted meanwhile, and a
     * new one given its name. */
    struct held_list held_inos;
    struct timespec held_retry_at; /* when the held ranges are next tried (retry_held) */
    struct timespec held_told_at;  /* when their count was last logged */
    int stopping;
    /* --deliver: the delivery process, supervised as a worker is */
    struct deliver_shared *deliver;
    pid_t deliver_pid;            /* 0: not running */
    struct timespec deliver_started, deliver_restart_at; /* restart_at.tv_sec 0: not due */
    /* --status: a live line on a terminal stderr, from the shared counters' deltas */
    unsigned status_sec;          /* 0: off */
    struct timespec status_at;    /* when the next line is due */
    struct timespec status_prev_t;
    struct metrics_totals status_prev;
    int status_shown;             /* a line is on the terminal, without a newline */
};

static struct timespec now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

static double seconds_between(struct timespec a, struct timespec b)
{
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
}

/* n with thousands separators: "12,345". */
static void group_digits(char *out, size_t size, uint64_t n)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)n);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < size; i++) {
        if (i && (len - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

static void status_write(const char *p, size_t len)
{
    while (len) {
        ssize_t n = write(2, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

/* Ends the status line so that the next line of the log starts on a line of its own. */
static void status_clear(struct server *s)
{
    if (!s->status_shown)
        return;
    status_write("\r\033[K", 4);
    s->status_shown = 0;
}

/* The status line's totals over every slot, now. */
static void status_totals(const struct server *s, struct metrics_totals *t)
{
    struct metrics_worker view[SLOTS_MAX];
    slots_metrics_view(view, s->slots, s->nslots);
    metrics_totals(t, view, s->nslots);
}

/* Writes the status line when it is due; returns the seconds until the next one (or -1
 * when off). */
static double status_due(struct server *s)
{
    if (!s->status_sec)
        return -1;
    struct timespec t = now();
    double wait = seconds_between(t, s->status_at);
    if (wait > 0)
        return wait;
    struct metrics_totals cur;
    status_totals(s, &cur);
    double dt = seconds_between(s->status_prev_t, t);
    if (dt <= 0)
        dt = 1e-9;
    double rows = (double)(cur.rows - s->status_prev.rows) / dt;
    double mb = (double)(cur.body_bytes - s->status_prev.body_bytes) / dt / 1e6;
    double req = (double)(cur.requests - s->status_prev.requests) / dt;
    char rows_s[40], req_s[40], lag[48] = "", line[240];
    group_digits(rows_s, sizeof rows_s, (uint64_t)(rows + 0.5));
    group_digits(req_s, sizeof req_s, (uint64_t)(req + 0.5));
    if (s->deliver) /* the worst dataset's: what an operator watches */
        snprintf(lag, sizeof lag, "  lag %.1f s", deliver_worst_lag(s->deliver));
    int n = snprintf(line, sizeof line,
                     "\rndingest: %s rows/s  %.1f MB/s  %llu conn%s  %s req/s%s\033[K", rows_s, mb,
                     (unsigned long long)cur.connections, cur.connections == 1 ? "" : "s", req_s,
                     lag);
    if (n > 0)
        status_write(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    s->status_shown = 1;
    s->status_prev = cur;
    s->status_prev_t = t;
    s->status_at.tv_sec += s->status_sec;
    if (seconds_between(t, s->status_at) <= 0) { /* fell behind (a stopped process): skip */
        s->status_at = t;
        s->status_at.tv_sec += s->status_sec;
    }
    return seconds_between(t, s->status_at);
}

static void spawn(struct server *s, int i)
{
    struct worker_slot *slot = &s->slots[i];
    atomic_store(&slot->connections, 0);
    atomic_store(&slot->accepted, 0);
    atomic_store(&slot->requests, 0);
    atomic_store(&slot->live, 1);
    pid_t pid = fork();
    if (pid < 0) {
        status_clear(s);
        log_error("ndingest: fork: %s; retrying in %d s", strerror(errno),
                SERVER_RESTART_DELAY_SEC);
        atomic_store(&slot->live, 0);
        s->restart_at[i] = now();
        s->restart_at[i].tv_sec += SERVER_RESTART_DELAY_SEC;
        return;
    }
    if (pid == 0) {
        /* The worker drains and exits when the main process dies; if it died before this
         * line, the signal is sent by hand (it stays blocked until the worker listens). */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != s->main_pid)
            raise(SIGTERM);
        _exit(worker_run(s->o, i, s->listen_fd, s->slots, s->nslots, s->catalog, s->deliver,
                         s->idem, s->o->token_file ? &main_tokens : NULL, s->inflight));
    }
    s->pids[i] = pid;
    s->started[i] = now();
    s->restart_at[i].tv_sec = 0;
}

/* Forks the delivery process (--deliver). It reads the day files behind the workers and
 * never blocks one: they share nothing with it but the files and the counters. */
static void spawn_delivery(struct server *s)
{
    pid_t pid = fork();
    if (pid < 0) {
        status_clear(s);
        log_error("ndingest: fork (delivery): %s; retrying in %d s", strerror(errno),
                  SERVER_RESTART_DELAY_SEC);
        s->deliver_restart_at = now();
        s->deliver_restart_at.tv_sec += SERVER_RESTART_DELAY_SEC;
        return;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != s->main_pid)
            raise(SIGTERM);
        if (s->listen_fd >= 0)
            close(s->listen_fd);
        prctl(PR_SET_NAME, "ndingest-deliv"); /* ps and the tests tell it from the workers */
        _exit(deliver_run(s->o, s->deliver, s->inflight));
    }
    s->deliver_pid = pid;
    s->deliver_started = now();
    s->deliver_restart_at.tv_sec = 0;
}

static void log_exit(int i, pid_t pid, int status)
{
    if (WIFSIGNALED(status))
        log_error("ndingest: worker %d (pid %d) was killed by signal %d (%s)", i, (int)pid,
                WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        log_error("ndingest: worker %d (pid %d) exited with status %d", i, (int)pid,
                WEXITSTATUS(status));
}

/* A dead worker's range of a day file, left in its table: its requests will never be
 * answered, so the range is void. The table names the file by inflight_file_id: the out
 * directory's names are hashed to find it (once per range of a dead worker). The counters
 * are the dead worker's slot's (its process is dead: ours to add to), or, for a server that
 * died whole, worker 0's of this one. */
struct reclaim {
    const char *out_dir;
    struct metrics *m;
    int worker;                  /* -1: the main process's held ranges, tried again */
    struct inflight_table *held; /* where a range whose record was refused goes: hold */
    struct held_list *inos;      /* ...and the inode of its file */
    int hold_later;              /* at a start, before that table exists: later, kept */
    struct held_list later;
    char **kept;                 /* the dead servers' files that still list them */
    size_t nkept;
    int refused;                 /* a retry's record was refused: the rest wait too */
};

/* The day file whose name has that identity, into path ("" when none). */
static void find_day_file(const char *dir, uint64_t file, char *path, size_t len)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    path[0] = '\0';
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.' && inflight_file_id(e->d_name) == file) {
            if (snprintf(path, len, "%s/%s", dir, e->d_name) >= (int)len)
                path[0] = '\0';
            break;
        }
    if (d)
        closedir(d);
}

static int hold(struct reclaim *rc, struct held_range h, const char *what, int err);

/* The write the dead worker had in progress (its writing field), unless the next writer of
 * that file found it first (inflight_orphan): under the file's lock, so no writer of this
 * server has appended since it began, its whole rows from its start are void ("killed"), up
 * to the end it announced (another server on the directory may have appended after it);
 * a row it cut short is the torn path's (the torn flags are set). */
static int void_dead_write(struct reclaim *rc, struct inflight_table *t)
{
    uint_fast64_t s1 = atomic_load(&t->writing_start1);
    if (!s1)
        return 0;
    char path[PATH_MAX];
    find_day_file(rc->out_dir, atomic_load(&t->writing_file), path, sizeof path);
    int fd = path[0] ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) {
        atomic_store(&t->writing_start1, 0); /* the file is gone, and its rows with it */
        return 0;
    }
    while (flock(fd, LOCK_EX) && errno == EINTR)
        ;
    uint64_t start = s1 - 1, rows = 0, end = atomic_load(&t->writing_end);
    uint64_t file = atomic_load(&t->writing_file);
    struct stat st;
    int r = 0;
    size_t whole = 0;
    if (atomic_compare_exchange_strong(&t->writing_start1, &s1, 0) && !fstat(fd, &st) &&
        (uint64_t)st.st_size > start && end > start) {
        if (end > (uint64_t)st.st_size)
            end = (uint64_t)st.st_size;
        size_t len = (size_t)(end - start);
        char *buf = malloc(len);
        r = !buf ? -ENOMEM : pread(fd, buf, len, (off_t)start) == (ssize_t)len ? 0 : -EIO;
        size_t pl = strlen(path);
        if (!r)
            whole = voids_whole_rows(buf, len, pl >= 4 && !strcmp(path + pl - 4, ".csv"), &rows);
        free(buf);
        if (!r && whole)
            r = voids_append(path, start, start + whole, "killed", 1);
    }
    flock(fd, LOCK_UN);
    close(fd);
    if (r && whole) {
        char what[PATH_MAX + 100];
        snprintf(what, sizeof what, "the rows of a write to %s at byte %llu cut by its "
                 "writer's death", path, (unsigned long long)start);
        if (hold(rc, (struct held_range){file, start, start + whole, rows, (uint64_t)st.st_ino},
                 what, r) && rc->hold_later) {
            atomic_store(&t->writing_start1, s1); /* still listed in the dead server's file */
            return 1;
        }
        return 0;
    }
    if (r) {
        log_error("ndingest: worker %d died writing %s at byte %llu, and its rows could not be "
                  "voided: %s", rc->worker, path, (unsigned long long)start, strerror(-r));
        return 0;
    }
    metrics_add_shared(&rc->m->void_rows, rows);
    metrics_add_shared(&rc->m->void_bytes, whole);
    return 0;
}

/* A dead worker's range whose void record could not be written (a full disk, most likely)
 * would otherwise stay committed: it is held in the main process's table instead, so that
 * delivery holds back before it and a next start finds it should the whole server die, and
 * is tried again every second (retry_held). At a start, before that table exists, it is
 * kept in rc->later (and stays listed in the dead server's file) until it can be held. Not
 * with --workers 0: no main process is left to try again, and delivery would hold back for
 * good; that one is only logged. 1 when held. */
static int held_in(struct reclaim *rc, struct held_range h)
{
    if (rc->held && rc->inos && inflight_hold(rc->held, h.file, h.start, h.end, h.rows) >= 0) {
        held_push(rc->inos, h); /* out of memory: voided in whatever file has the name */
        return 1;
    }
    /* At a start: once per range, after a crash with a full disk, so rare. */
    return rc->hold_later && !held_push(&rc->later, h);
}

static int hold(struct reclaim *rc, struct held_range h, const char *what, int err)
{
    int held = held_in(rc, h);
    log_error("ndingest: %s could not be voided: %s; %s", what, strerror(-err),
              held ? "held (delivery holds back before them), and tried again every second"
                   : rc->held || rc->hold_later ? "there is no room to hold them, so they stay committed"
                                                : "with --workers 0 nothing can try again, so they stay committed");
    return held;
}

/* Appends [start, end) of the day file named by file to its .void record ("killed"), under
 * the file's lock (appenders of a record take turns there: voids.h), while that file is
 * still the inode ino (0: any; *seen gets the one found). 0, -ENOENT when the file is gone
 * (its rows with it), or -errno; path gets the file's path. */
static int void_range(const char *out_dir, uint64_t file, uint64_t start, uint64_t end,
                      uint64_t ino, uint64_t *seen, char *path, size_t len)
{
    find_day_file(out_dir, file, path, len);
    int fd = path[0] ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0)
        return -ENOENT;
    while (flock(fd, LOCK_EX) && errno == EINTR)
        ;
    struct stat st;
    int r = fstat(fd, &st) ? -errno : 0;
    *seen = r ? 0 : (uint64_t)st.st_ino;
    if (!r && ino && *seen != ino)
        r = -ENOENT; /* another file has the name now */
    if (!r)
        r = voids_append(path, start, end, "killed", 1);
    flock(fd, LOCK_UN);
    close(fd);
    return r;
}

/* The held range's inode, forgotten once it is voided or gone (0 when it was not kept). */
static uint64_t held_ino(struct held_list *h, uint64_t file, uint64_t start, int forget)
{
    for (size_t i = 0; h && i < h->n; i++)
        if (h->v[i].file == file && h->v[i].start == start) {
            uint64_t ino = h->v[i].ino;
            if (forget)
                h->v[i] = h->v[--h->n];
            return ino;
        }
    return 0;
}

static int void_dead_range(void *arg, uint64_t file, uint64_t start, uint64_t end, uint64_t rows)
{
    struct reclaim *rc = arg;
    int retry = rc->worker < 0;
    if (retry && rc->refused)
        return -1; /* the disk refused one of them this round: the others wait for the next */
    char path[PATH_MAX];
    uint64_t ino = retry ? held_ino(rc->inos, file, start, 0) : 0, seen = 0;
    int r = void_range(rc->out_dir, file, start, end, ino, &seen, path, sizeof path);
    if (r == -ENOENT) {
        log_error("ndingest: bytes %llu-%llu of a day file that is gone were not voided",
                  (unsigned long long)start, (unsigned long long)end);
        held_ino(rc->inos, file, start, retry);
        return 0;
    }
    if (r && retry) {
        rc->refused = 1;
        return -1; /* still refused: kept, quietly (logged when held, and each minute) */
    }
    if (r) {
        char what[PATH_MAX + 100];
        snprintf(what, sizeof what, "bytes %llu-%llu of %s, written for requests left "
                 "unanswered by a dead worker,", (unsigned long long)start,
                 (unsigned long long)end, path);
        return hold(rc, (struct held_range){file, start, end, rows, seen}, what, r) &&
               rc->hold_later ? -1 : 0; /* at a start: still listed in the dead server's file */
    }
    if (retry) {
        held_ino(rc->inos, file, start, 1);
        log_info("ndingest: bytes %llu-%llu of %s, held since their void record was refused, "
                 "are void now", (unsigned long long)start, (unsigned long long)end, path);
    }
    metrics_add_shared(&rc->m->void_rows, rows);
    metrics_add_shared(&rc->m->void_bytes, end - start);
    return 0;
}

/* What a dead worker's table holds is void (or held: hold); the table is left empty, but at
 * a start for what is held (then 1: the dead server's file must stay). */
static int reclaim_table(void *arg, struct inflight_table *t)
{
    int kept = void_dead_write(arg, t);
    return inflight_reclaim(t, void_dead_range, arg) || kept;
}

static void keep_file(void *arg, const char *path)
{
    struct reclaim *rc = arg;
    char **v = realloc(rc->kept, (rc->nkept + 1) * sizeof *v);
    if (v && (v[rc->nkept] = strdup(path)))
        rc->nkept++;
    if (v)
        rc->kept = v;
}

static void note_recovery(const char *msg)
{
    log_error("ndingest: %s", msg);
}

/* Before any worker starts: the ranges that a server which died whole (every process at
 * once) had in flight are void, as a dead worker's are at its reap. 0, or -1 after logging. */
static int recover_in_flight(const struct options *o, struct worker_slot *slots,
                             struct catalog *datasets, struct reclaim *rc)
{
    *rc = (struct reclaim){.out_dir = o->out_dir, .m = &slots[0].metrics,
                           .hold_later = o->workers > 0};
    int n = inflight_recover(o->out_dir, reclaim_table, rc, note_recovery, keep_file);
    if (n < 0) {
        log_error("ndingest: %s/%s: %s", o->out_dir, INFLIGHT_DIR, strerror(errno));
        return -1;
    }
    if (n)
        log_info("ndingest: voided what %d server%s that died whole had in flight (%llu rows)",
                 n, n == 1 ? "" : "s", (unsigned long long)atomic_load(&slots[0].metrics.void_rows));
    if (n) { /* it may have died inside a write(2), or after a worker's death left a row cut */
        atomic_store(&slots[0].rows_torn, 1);
        atomic_store(&slots[0].invalid_torn, 1);
        if (datasets)
            catalog_shared_torn(datasets->shared);
    }
    return 0;
}

/* Collects dead workers; returns how many of them did not exit 0. */
static int reap(struct server *s)
{
    int failed = 0, status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (s->deliver_pid && pid == s->deliver_pid) {
            s->deliver_pid = 0;
            int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
            failed += !clean && !s->stopping;
            if (s->stopping)
                continue;
            status_clear(s);
            if (WIFSIGNALED(status))
                log_error("ndingest: the delivery process (pid %d) was killed by signal %d "
                          "(%s); restarting it", (int)pid, WTERMSIG(status),
                          strsignal(WTERMSIG(status)));
            else
                log_error("ndingest: the delivery process (pid %d) exited with status %d; "
                          "restarting it", (int)pid, WEXITSTATUS(status));
            metrics_add(&s->deliver->restarts, 1);
            struct timespec t = now();
            s->deliver_restart_at = t;
            if (seconds_between(s->deliver_started, t) < SERVER_RESTART_DELAY_SEC)
                s->deliver_restart_at.tv_sec += SERVER_RESTART_DELAY_SEC;
            continue;
        }
        int i = 0;
        while (i < s->nslots && s->pids[i] != pid)
            i++;
        if (i == s->nslots)
            continue;
        s->pids[i] = 0;
        /* Its requests in flight will never be answered: a retry of their keys is new. */
        idem_release_owner(s->idem, pid);
        atomic_store(&s->slots[i].live, 0);
        atomic_store(&s->slots[i].connections, 0);
        int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (WIFSIGNALED(status)) { /* it may have died inside a write(2) */
            atomic_store(&s->slots[0].rows_torn, 1);
            atomic_store(&s->slots[0].invalid_torn, 1);
            if (s->catalog)
                catalog_shared_torn(s->catalog->shared);
        }
        /* What its unanswered requests wrote is void; the table is empty for its
         * replacement. */
        struct reclaim rc = {.out_dir = s->o->out_dir, .m = &s->slots[i].metrics, .worker = i,
                             .held = inflight_table(s->inflight, s->nslots),
                             .inos = &s->held_inos};
        reclaim_table(&rc, inflight_table(s->inflight, i));
        failed += !clean;
        status_clear(s);
        if (s->stopping) {
            if (!clean)
                log_exit(i, pid, status);
            continue;
        }
        log_exit(i, pid, status);
        metrics_add(&s->slots[i].metrics.restarts, 1);
        struct timespec t = now();
        s->restart_at[i] = t;
        if (seconds_between(s->started[i], t) < SERVER_RESTART_DELAY_SEC)
            s->restart_at[i].tv_sec += SERVER_RESTART_DELAY_SEC;
        log_error("ndingest: restarting worker %d", i);
    }
    return failed;
}

/* The held ranges (hold), tried again once a second while any is left (a round stops at
 * the first refusal), their count logged once a minute; the seconds until the next try, or
 * -1 when none is left. */
static double retry_held(struct server *s)
{
    struct inflight_table *held = inflight_table(s->inflight, s->nslots);
    if (!atomic_load(&held->high))
        return -1;
    struct timespec t = now();
    double wait = seconds_between(t, s->held_retry_at);
    if (wait > 0)
        return wait;
    struct reclaim rc = {.out_dir = s->o->out_dir, .m = &s->slots[0].metrics, .worker = -1,
                         .inos = &s->held_inos};
    size_t left = inflight_reclaim(held, void_dead_range, &rc);
    if (!left)
        return -1;
    if (seconds_between(s->held_told_at, t) >= 60) {
        if (s->held_told_at.tv_sec)
            log_error("ndingest: %zu range%s of the day files still held: their void record is "
                      "refused (a full disk?), and delivery holds back before them", left,
                      left == 1 ? "" : "s");
        s->held_told_at = t;
    }
    s->held_retry_at = t;
    s->held_retry_at.tv_sec += 1;
    return 1;
}

/* Forks the workers that are due, then tries the held ranges again; returns the seconds
 * until the next of either is due (or -1). */
static double restart_due(struct server *s)
{
    double next = -1;
    struct timespec t = now();
    if (s->deliver && !s->deliver_pid && s->deliver_restart_at.tv_sec) {
        double wait = seconds_between(t, s->deliver_restart_at);
        if (wait <= 0)
            spawn_delivery(s);
        else if (next < 0 || wait < next)
            next = wait;
    }
    for (int i = 0; i < s->nslots; i++) {
        if (s->pids[i] || !s->restart_at[i].tv_sec)
            continue;
        double wait = seconds_between(t, s->restart_at[i]);
        if (wait <= 0)
            spawn(s, i);
        else if (next < 0 || wait < next)
            next = wait;
    }
    double held = retry_held(s);
    if (held >= 0 && (next < 0 || held < next))
        next = held;
    return next;
}

static int running(const struct server *s)
{
    int n = s->deliver_pid != 0;
    for (int i = 0; i < s->nslots; i++)
        n += s->pids[i] != 0;
    return n;
}

/* Forwards the stop to every worker and waits for them; 0 when they all exited 0. */
static int stop(struct server *s, const sigset_t *set, int sig)
{
    s->stopping = 1;
    status_clear(s);
    if (s->listen_fd >= 0)
        close(s->listen_fd); /* connections still queued are refused rather than left hanging */
    s->listen_fd = -1;
    for (int i = 0; i < s->nslots; i++)
        if (s->pids[i])
            kill(s->pids[i], sig);
    if (s->deliver_pid)
        kill(s->deliver_pid, sig);
    int failed = 0;
    struct timespec deadline = now();
    deadline.tv_sec += SERVER_STOP_GRACE_SEC;
    while (running(s)) {
        double left = seconds_between(now(), deadline);
        if (left <= 0) {
            log_error("ndingest: workers still running %d s after the stop: killing them",
                    SERVER_STOP_GRACE_SEC);
            for (int i = 0; i < s->nslots; i++)
                if (s->pids[i])
                    kill(s->pids[i], SIGKILL);
            if (s->deliver_pid)
                kill(s->deliver_pid, SIGKILL);
            deadline.tv_sec += 5;
            continue;
        }
        struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
        sigtimedwait(set, NULL, &ts); /* SIGCHLD, a repeated stop signal, or the time */
        failed += reap(s);
    }
    s->held_retry_at.tv_sec = 0; /* a last try: what is still held stays in the file */
    retry_held(s);
    return failed ? 1 : 0;
}

/* --datasets on SIGHUP, before the workers get it: the set a worker forked later starts
 * with. The workers load the directory themselves (they open its sinks); each logs a bad
 * set and keeps its own. */
static void reload_datasets(struct server *s)
{
    if (!s->catalog)
        return;
    char err[600];
    const struct options *o = s->o;
    struct catalog *next = catalog_load(o->datasets, o->max_datasets, o->default_dataset,
                                        s->catalog->shared, err, sizeof err);
    if (!next) {
        status_clear(s);
        log_error("ndingest: SIGHUP: %s; keeping the previous datasets", err);
        return;
    }
    catalog_release(s->catalog);
    s->catalog = next;
}

static int supervise(struct server *s)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    /* Blocked before forking, so that none is lost between forks; the workers unblock them
     * once libevent handles them. */
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (int i = 0; i < s->nslots; i++)
        spawn(s, i);
    if (s->deliver)
        spawn_delivery(s);
    if (s->status_sec) {
        s->status_prev_t = now();
        status_totals(s, &s->status_prev);
        s->status_at = s->status_prev_t;
        s->status_at.tv_sec += s->status_sec;
    }
    for (;;) {
        double next = restart_due(s);
        double status_next = status_due(s);
        if (status_next >= 0 && (next < 0 || status_next < next))
            next = status_next;
        int sig;
        if (next < 0) {
            sig = sigwaitinfo(&set, NULL);
        } else {
            struct timespec ts = {(time_t)next, (long)((next - (double)(time_t)next) * 1e9)};
            sig = sigtimedwait(&set, NULL, &ts);
        }
        if (sig == SIGCHLD)
            reap(s);
        else if (sig == SIGTERM || sig == SIGINT)
            return stop(s, &set, sig);
        else if (sig == SIGHUP) { /* reopen the files, re-read the token: the workers' job */
            reload_datasets(s);
            if (s->o->token_file) { /* for workers forked later; each worker says what failed */
                char err[4400];
                auth_load(&main_tokens, s->o->token_file, s->o->datasets != NULL,
                          s->o->max_tokens, err, sizeof err);
            }
            for (int i = 0; i < s->nslots; i++)
                if (s->pids[i])
                    kill(s->pids[i], SIGHUP);
            if (s->deliver_pid)
                kill(s->deliver_pid, SIGHUP);
        }
    }
}

/* Fails at start-up, before any fork, when the output directory cannot be used. */
static int check_out_dir(const struct options *o)
{
    char err[256];
    struct sink_config cfg = {.dir = o->out_dir, .name = o->name, .suffix = ".csv", .utc = o->utc};
    struct sink *sk = sink_open_daily(&cfg, err, sizeof err);
    if (!sk) {
        log_error("ndingest: %s", err);
        return -1;
    }
    sink_close(sk);
    return 0;
}

/* Maps the Idempotency-Key table and loads the key log into it. NULL after logging why. */
static struct idem_table *idem_start(const struct options *o)
{
    char err[600];
    struct idem_table *t = idem_table_map(o->idempotency_keys, o->idempotency_window, err,
                                          sizeof err);
    if (!t) {
        log_error("ndingest: %s", err);
        return NULL;
    }
    struct timespec t0 = now(), c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    struct idem_load_stats st;
    if (idem_log_load(t, o->out_dir, o->idempotency_window, time(NULL), &st, err, sizeof err)) {
        log_error("ndingest: %s", err);
        idem_table_unmap(t);
        return NULL;
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    if (st.records || st.removed)
        log_info("ndingest: %zu idempotency keys loaded from %zu records of %s/%s in %.0f ms "
                 "(%.0f ms of CPU; %zu skipped, %zu old day files removed)", st.loaded,
                 st.records, o->out_dir, IDEM_DIR, seconds_between(t0, now()) * 1e3,
                 seconds_between(c0, c1) * 1e3, st.skipped, st.removed);
    return t;
}

/* The main process's datasets and the table of names it shares with the workers. */
static void release_datasets(struct catalog *datasets)
{
    if (!datasets)
        return;
    struct catalog_shared *sh = datasets->shared;
    catalog_release(datasets);
    catalog_shared_unmap(sh);
}

int server_run(const struct options *o)
{
    /* A vanished client is an error return, and a file-size limit a failed write (500),
     * not the death of the process. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
    log_set_quiet(o->quiet);

    char err[256];
    struct sockaddr_storage ss;
    unsigned sslen;
    if (net_parse_listen(o->listen, &ss, &sslen, err, sizeof err)) {
        log_error("ndingest: %s", err);
        return 1;
    }
    /* With --reuseport the socket is only bound, to report a bad address now; listening
     * on it would queue connections that no worker accepts. */
    int fd = net_listen_socket(&ss, sslen, o->reuseport, !o->reuseport, err, sizeof err);
    if (fd < 0) {
        log_error("ndingest: %s: %s", o->listen, err);
        return 1;
    }
    if (o->reuseport) {
        close(fd);
        fd = -1;
    }
    if (o->access_log) { /* each worker opens it; a bad path is reported now, once */
        struct access_log log;
        if (access_log_open(&log, o->access_log, "ndingest", err, sizeof err)) {
            log_error("ndingest: %s", err);
            if (fd >= 0)
                close(fd);
            return 1;
        }
        access_log_close(&log);
    }
    if (o->token_file) {
        int bad = auth_load(&main_tokens, o->token_file, o->datasets != NULL, o->max_tokens, err,
                            sizeof err);
        if (bad) {
            log_error("ndingest: %s", err);
            if (fd >= 0)
                close(fd);
            return 1;
        }
    }
    if (check_out_dir(o)) {
        if (fd >= 0)
            close(fd);
        return 1;
    }

    int nslots = o->workers > 0 ? o->workers : 1;
    if (o->deliver && o->workers == 0) {
        log_error("ndingest: --deliver needs worker processes (the delivery process is supervised "
                  "beside them): with --workers 0 run `ndingest deliver` on its own");
        if (fd >= 0)
            close(fd);
        return 2;
    }
    struct deliver_shared *dsh = NULL;
    if (o->deliver && !(dsh = deliver_shared_map((size_t)o->max_datasets * CATALOG_NAMES_PER_DATASET + 1,
                                                 err, sizeof err))) {
        log_error("ndingest: %s", err);
        if (fd >= 0)
            close(fd);
        return 1;
    }
    struct catalog *datasets = NULL;
    if (o->datasets) { /* a bad definition is a usage error: exit 2 with FILE:LINE */
        char derr[600];
        struct catalog_shared *sh = catalog_shared_map(
            (size_t)o->max_datasets * CATALOG_NAMES_PER_DATASET, nslots, derr, sizeof derr);
        if (!sh || !(datasets = catalog_load(o->datasets, o->max_datasets, o->default_dataset,
                                             sh, derr, sizeof derr))) {
            log_error("ndingest: %s", derr);
            catalog_shared_unmap(sh);
            if (fd >= 0)
                close(fd);
            return sh ? 2 : 1;
        }
    }
    /* The keys still within their window, loaded before any worker accepts a connection. */
    struct idem_table *idem = idem_start(o);
    if (!idem) {
        release_datasets(datasets);
        if (fd >= 0)
            close(fd);
        return 1;
    }
    size_t size = sizeof(struct worker_slot) * (size_t)nslots;
    struct worker_slot *slots = mmap(NULL, size, PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    /* Recovered before this server's own file is made: a pid reused (a container's main
     * process often has the same one each time) names the dead server's file too. */
    struct reclaim found = {0};
    int recovered = slots == MAP_FAILED ? -1 : recover_in_flight(o, slots, datasets, &found);
    /* A table per worker, and one more: the main process's held ranges (hold). */
    struct inflight *inflight = recovered ? NULL
                                : inflight_map(nslots + 1, o->inflight_ranges, o->out_dir, err,
                                               sizeof err);
    if (!recovered && !inflight) { /* a full disk, say: serve, without that one guarantee */
        log_error("ndingest: %s; the ranges in flight are kept in memory only, so if the whole "
                  "server dies the rows of its unanswered requests stay committed", err);
        inflight = inflight_map(nslots + 1, o->inflight_ranges, NULL, err, sizeof err);
    }
    /* What the start could only hold, held now; the dead servers' files that still list it
     * go once it is in this server's file, whose table a crash keeps. */
    struct held_list inos = {0};
    int all_held = inflight && inflight->fd >= 0;
    for (size_t i = 0; inflight && i < found.later.n; i++) {
        const struct held_range *h = &found.later.v[i];
        struct reclaim to = {.held = inflight_table(inflight, nslots), .inos = &inos};
        if (!held_in(&to, *h)) {
            all_held = 0;
            log_error("ndingest: bytes %llu-%llu of a day file could not be voided, and there "
                      "is no room to hold them, so they stay committed",
                      (unsigned long long)h->start, (unsigned long long)h->end);
        }
    }
    for (size_t i = 0; i < found.nkept; i++) {
        if (all_held)
            unlink(found.kept[i]);
        else
            log_error("ndingest: %s is kept: it lists ranges this start could not void", found.kept[i]);
        free(found.kept[i]);
    }
    free(found.kept);
    free(found.later.v);
    if (!inflight) {
        if (slots == MAP_FAILED || !recovered)
            log_error("ndingest: %s", slots == MAP_FAILED ? strerror(errno) : err);
        if (slots != MAP_FAILED)
            munmap(slots, size);
        release_datasets(datasets);
        if (fd >= 0)
            close(fd);
        return 1;
    }
    if (datasets)
        log_info("ndingest: serving %zu dataset%s from %s at POST /v0/events?name=NAME, writing "
                 "%s/NAME-YYYY-MM-DD.csv", datasets->count, datasets->count == 1 ? "" : "s",
                 o->datasets, o->out_dir);

    /* With --datasets the line above says where rows go: --name's file is never written. */
    char files[PATH_MAX + 64] = "";
    if (!datasets)
        snprintf(files, sizeof files, ", writing %s/%s-YYYY-MM-DD.csv", o->out_dir, o->name);
    if (o->workers == 0)
        log_info("ndingest: listening on %s, serving in the main process (--workers 0)%s",
                 o->listen, files);
    else
        log_info("ndingest: listening on %s, %d worker%s%s%s", o->listen, o->workers,
                 o->workers == 1 ? "" : "s", o->reuseport ? " (SO_REUSEPORT)" : "", files);

    int rc;
    if (o->workers == 0) {
        atomic_store(&slots[0].live, 1);
        auth_free(&main_tokens); /* the one worker reads the file itself */
        rc = worker_run(o, 0, fd, slots, 1, datasets, NULL, idem, NULL, /* it takes the reference */
                        inflight);
        datasets = NULL;
    } else {
        struct server s = {
            .o = o,
            .listen_fd = fd,
            .main_pid = getpid(),
            .slots = slots,
            .nslots = nslots,
            .catalog = datasets,
            .deliver = dsh,
            .idem = idem,
            .inflight = inflight,
            .pids = calloc((size_t)nslots, sizeof(pid_t)),
            .started = calloc((size_t)nslots, sizeof(struct timespec)),
            .restart_at = calloc((size_t)nslots, sizeof(struct timespec)),
            .held_inos = inos,
            /* only for a person watching: not in a log file, not with --quiet */
            .status_sec = !o->quiet && isatty(STDERR_FILENO) ? o->status : 0,
        };
        if (!s.pids || !s.started || !s.restart_at) {
            log_error("ndingest: out of memory");
            rc = 1;
        } else {
            rc = supervise(&s);
        }
        if (s.listen_fd >= 0)
            close(s.listen_fd);
        free(s.pids);
        free(s.started);
        free(s.restart_at);
        inos = s.held_inos;
        datasets = s.catalog; /* replaced on SIGHUP */
    }
    free(inos.v);
    munmap(slots, size);
    inflight_unmap(inflight);
    deliver_shared_unmap(dsh);
    idem_table_unmap(idem);
    release_datasets(datasets);
    return rc;
}
