/* pressure.c -- backpressure: refuse new bodies while delivery lags too far behind or the
 * disk is nearly full, and say so once per change. */
#include "pressure.h"

#include <stdio.h>
#include <sys/statvfs.h>

#include "log.h"

const char *const pressure_names[PRESSURE_STATES] = {"none", "lag", "disk"};

static void describe(const struct pressure *p, enum pressure_state s, char *msg, size_t len)
{
    if (s == PRESSURE_DISK)
        snprintf(msg, len, "the output directory has %llu bytes free, under --min-free %llu: "
                 "retry later", (unsigned long long)p->free_bytes,
                 (unsigned long long)p->min_free);
    else if (s == PRESSURE_LAG)
        snprintf(msg, len, "%llu bytes wait for delivery, past --deliver-max-lag %llu: retry "
                 "later", (unsigned long long)p->lag_bytes, (unsigned long long)p->max_lag);
    else if (len)
        msg[0] = '\0';
}

enum pressure_state pressure_judge(struct pressure *p, char *msg, size_t len)
{
    if (!p->min_free && !(p->max_lag && p->lag)) {
        if (len)
            msg[0] = '\0';
        return PRESSURE_NONE;
    }
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
    if (t.tv_sec != p->judged || !p->judged) {
        p->judged = t.tv_sec;
        enum pressure_state s = PRESSURE_NONE;
        struct statvfs vfs;
        if (p->min_free && statvfs(p->dir, &vfs) == 0) {
            p->free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
            if (p->free_bytes < p->min_free)
                s = PRESSURE_DISK;
        }
        if (s == PRESSURE_NONE && p->max_lag && p->lag) {
            p->lag_bytes = atomic_load_explicit(p->lag, memory_order_relaxed);
            if (p->lag_bytes > p->max_lag)
                s = PRESSURE_LAG;
        }
        p->state = s;
        if (p->shared) {
            unsigned was = atomic_exchange(&p->shared->state, (unsigned)s);
            if (was != (unsigned)s) {
                atomic_fetch_add(&p->shared->transitions, 1);
                char m[256];
                describe(p, s, m, sizeof m);
                if (s == PRESSURE_NONE)
                    log_error("ndingest: ingest resumes (was refused: %s)", pressure_names[was < PRESSURE_STATES ? was : 0]);
                else
                    log_error("ndingest: refusing new bodies with 503: %s", m);
            }
        }
    }
    if (p->state != PRESSURE_NONE && p->shared)
        atomic_fetch_add(&p->shared->refused, 1);
    describe(p, p->state, msg, len);
    return p->state;
}

int pressure_metrics(struct buf *out, const struct pressure_shared *sh)
{
    char text[1024];
    unsigned st = atomic_load(&sh->state);
    int n = snprintf(text, sizeof text,
                     "# HELP ndingest_backpressure 1 while new bodies get 503, by reason\n"
                     "# TYPE ndingest_backpressure gauge\n"
                     "ndingest_backpressure{reason=\"lag\"} %d\n"
                     "ndingest_backpressure{reason=\"disk\"} %d\n"
                     "# HELP ndingest_backpressure_transitions_total Changes of backpressure state\n"
                     "# TYPE ndingest_backpressure_transitions_total counter\n"
                     "ndingest_backpressure_transitions_total %llu\n"
                     "# HELP ndingest_backpressure_refused_total Bodies refused with 503 under backpressure\n"
                     "# TYPE ndingest_backpressure_refused_total counter\n"
                     "ndingest_backpressure_refused_total %llu\n",
                     st == PRESSURE_LAG, st == PRESSURE_DISK,
                     (unsigned long long)atomic_load(&sh->transitions),
                     (unsigned long long)atomic_load(&sh->refused));
    return n < 0 || (size_t)n >= sizeof text ? -1 : buf_append(out, text, (size_t)n);
}
