/* idempotency.h -- Idempotency-Key: the header's value, the request's fingerprint, the key
 * table every worker shares, and the key log that makes it survive a restart. */
#ifndef NDINGEST_IDEMPOTENCY_H
#define NDINGEST_IDEMPOTENCY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "buf.h"

struct sink;

/* ---- The header ---- */

/* Idempotency-Key's value v[0..n) as an RFC 8941 sf-string ("...", with \" and \\) or a bare
 * sf-token (ALPHA or '*', then tchar, ':' and '/'), unescaped into out[0..max): its length.
 * -1: malformed (parameters, a list, a bad escape, a byte outside the grammar); -2: empty;
 * -3: longer than max bytes once unescaped. */
int idem_parse_key(const char *v, size_t n, char *out, size_t max);

/* ---- The fingerprint ---- */

/* What names a key: a 128-bit hash of its scope (the token's index, -1 without auth; the
 * route: the dataset's name, or "/") and its bytes. Only the hash is kept: two different
 * keys share one with probability 2^-128 per pair, far below a disk's undetected errors. */
struct idem_id {
    uint64_t lo, hi;
};
struct idem_id idem_id_of(int token, const char *route, size_t route_len, const char *key,
                          size_t key_len);

/* The body's own hash, the fingerprint's third part, is fingerprint.h's: taken as it
 * streams, by the line framer for an identity-encoded body. */

/* ---- The outcome a retry replays ---- */

enum idem_resp {
    IDEM_RESP_INGEST, /* POST /'s stats body: bytes, valid, invalid */
    IDEM_RESP_EVENTS, /* /v0/events' counts: valid, invalid */
    IDEM_RESP_BODY,   /* the body itself (a 4xx's message), up to IDEM_BODY_MAX bytes */
};
#define IDEM_BODY_MAX 79
/* Distinct IDEM_RESP_BODY bodies the table keeps (they are a few fixed messages). */
#define IDEM_BODIES 64

struct idem_outcome {
    uint16_t status;
    uint8_t resp;      /* enum idem_resp */
    uint8_t body_len;  /* IDEM_RESP_BODY */
    uint64_t body_hash; /* the request's fingerprint beyond its scope */
    uint64_t bytes, valid, invalid;
    char body[IDEM_BODY_MAX + 1];
};

/* ---- The table ---- */

struct idem_table;

/* Maps a table of max_keys keys (rounded up to a whole number of stripes) that expire
 * window seconds after their outcome, in memory shared with the processes forked after.
 * NULL with a message in err. */
struct idem_table *idem_table_map(size_t max_keys, unsigned window, char *err, size_t errlen);
void idem_table_unmap(struct idem_table *t);
/* In a worker, before it serves: a read of each page of the index, so that its first
 * requests do not pay for this process's first touch of them, which in a VM is dear
 * (doc/performance.md: ~13 us a page here; the index is 2,048 pages at 1M keys). */
void idem_table_warm(const struct idem_table *t);

enum idem_verdict {
    IDEM_CLAIMED, /* new (or expired, or its owner died): the caller owns it now */
    IDEM_DONE,    /* answered before: *out holds the outcome */
    IDEM_BUSY,    /* in flight in a live process: 409 */
    IDEM_FULL,    /* every entry of its stripe is in flight: 503 */
};
/* Looks id up at now (seconds since the epoch) and claims it for pid when it is free. */
enum idem_verdict idem_claim(struct idem_table *t, const struct idem_id *id, pid_t pid,
                             time_t now, struct idem_outcome *out);
/* pid's claim of id becomes o, dated now. 0, or -1 when id is no longer pid's (a sibling
 * took it over after judging pid dead: cannot happen while pid runs) or o's body does not
 * fit (the key is then released). */
int idem_complete(struct idem_table *t, const struct idem_id *id, pid_t pid,
                  const struct idem_outcome *o, time_t now);
/* pid's claim of id is given up (the request failed or the client left): a retry is new. */
void idem_release(struct idem_table *t, const struct idem_id *id, pid_t pid);
/* Every claim of pid is given up (the main process reaped it). How many. */
size_t idem_release_owner(struct idem_table *t, pid_t pid);
/* An outcome dated when, from the key log (before the fork). 0, or -1: not kept (expired at
 * now, its body does not fit, or the table is full of newer keys). */
int idem_load_one(struct idem_table *t, const struct idem_id *id, const struct idem_outcome *o,
                  time_t when, time_t now);

/* Checks every stripe's invariants (the index finds each live entry, the age list holds
 * exactly the live entries, the counts add up): 0, or -1 when broken (tests, fuzzing).
 * *inflight: the keys in flight now. */
int idem_table_check(struct idem_table *t, size_t *inflight);

/* Tests only: locks id's stripe, wipes its index (a change cut short) and exits the
 * process with the lock held, as a worker killed inside the table would. */
void idem_test_die_locked(struct idem_table *t, const struct idem_id *id);

/* Counters, summed over every process. */
struct idem_counts {
    uint64_t in_use, capacity, replays, conflicts, mismatches, evictions, expired, full;
};
void idem_counts(struct idem_table *t, struct idem_counts *c);
enum idem_event { IDEM_EV_REPLAY, IDEM_EV_CONFLICT, IDEM_EV_MISMATCH };
void idem_count(struct idem_table *t, enum idem_event e);
/* The ndingest_idempotency_* lines of GET /metrics. 0, or -1 when memory is exhausted. */
int idem_metrics_format(struct idem_table *t, struct buf *out);
/* Bytes of shared memory per key (the entry and its share of the index). */
size_t idem_bytes_per_key(void);

/* ---- The key log ---- */

/* DIR/.idempotency/keys-YYYY-MM-DD.log (UTC days): fixed records of IDEM_RECORD bytes,
 * appended with O_APPEND by every worker. Each starts with a magic number and ends with a
 * checksum of the rest, so a record torn by a crash is skipped and the reader finds the next
 * one by its magic (records of other workers follow a torn one). */
#define IDEM_RECORD 128
#define IDEM_DIR ".idempotency"
enum idem_record_kind { IDEM_REC_DONE = 1, IDEM_REC_CANCEL = 2 };
void idem_record_encode(unsigned char rec[IDEM_RECORD], enum idem_record_kind kind,
                        const struct idem_id *id, const struct idem_outcome *o, time_t when);
/* 0 and the fields, or -1 when rec is not a whole, intact record. */
int idem_record_decode(const unsigned char rec[IDEM_RECORD], enum idem_record_kind *kind,
                       struct idem_id *id, struct idem_outcome *o, time_t *when);

struct idem_load_stats {
    size_t files, records, loaded, skipped; /* skipped: expired, cancelled, or torn bytes */
    size_t removed; /* day files wholly older than the window, deleted */
};
/* Loads DIR/.idempotency's records still within the window at now into t (the main process,
 * before the fork), and deletes the day files that ended more than a window ago. A missing
 * directory is no keys. 0, or -1 with a message in err. */
int idem_log_load(struct idem_table *t, const char *out_dir, unsigned window, time_t now,
                  struct idem_load_stats *st, char *err, size_t errlen);
/* The sink a worker appends its records to (sink.h: daily, O_APPEND, reopened when deleted).
 * NULL with a message in err. */
struct sink *idem_log_open(const char *out_dir, char *err, size_t errlen);

#endif
