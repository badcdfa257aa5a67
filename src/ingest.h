/* ingest.h -- one request body through the pipeline: content decoding, line framing, JSON
 * validation and column extraction, CSV encoding, and the day's file. */
#ifndef NDINGEST_INGEST_H
#define NDINGEST_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "datasource.h"
#include "inflight.h"
#include "decode.h"
#include "json.h"
#include "lines.h"
#include "quarantine.h"
#include "sink.h"

struct ingest_config {
    const struct json_columns *columns;
    /* A typed dataset (columns is then &schema->json), or NULL for untyped rows: top-level
     * values copied as text, invalid lines raw into the quarantine (POST /, plain convert).
     * With a schema each cell goes through datasource_cell, and a line that is not JSON or
     * breaks a column's type goes to the quarantine as one quarantine.h row. Read-only,
     * the caller's, alive while a body is being ingested. */
    const struct datasource *schema;
    size_t max_line;
    int crlf;
    size_t flush_bytes;      /* pending rows are written once they pass this (whole rows) */
    struct sink *rows;       /* CSV rows */
    struct sink *quarantine; /* refused lines (raw, or quarantine rows with a schema); NULL to drop them */
    const char *log_prefix;  /* oversize lines are logged as "PREFIX: line of N bytes..."; NULL: not logged */
    uint64_t max_inflate;    /* compressed bodies: inflated bytes allowed, 0 = no limit */
    unsigned max_ratio;      /* compressed bodies: inflated/compressed bytes allowed, 0 = no limit */
    /* Bytes of quarantine (rows, or raw invalid lines) one body may keep, and bytes the
     * quarantine's day file may reach, judged by its size (sink_size) at the body's first
     * refused line plus what the body keeps after it; 0 = no limit. Past either, refused
     * lines are counted as QUARANTINE_FULL and not kept (doc/datasets.md, section 5). */
    uint64_t max_quarantine, max_quarantine_day;
};

struct ingest_stats {
    uint64_t bytes;   /* body bytes as received (before content decoding) */
    uint64_t decoded; /* bytes after content decoding */
    uint64_t valid, invalid; /* rows written; lines refused (kept in the quarantine or not) */
    uint64_t refused[QUARANTINE_REASONS]; /* invalid by class: they sum to it */
    uint64_t written; /* bytes written to the rows and quarantine sinks */
};

enum ingest_status {
    INGEST_OK = 0,
    INGEST_EDECODE, /* corrupt compressed body: 400 */
    INGEST_EWRITE,  /* the day's file refused rows: 500 */
    INGEST_ENOMEM,  /* 500 */
    INGEST_ETOOBIG, /* the body inflates past max_inflate or max_ratio: 413 */
    INGEST_EBUSY,   /* the worker's table of ranges in flight is full: 503 */
};

/* A range of a day file that the body wrote and that is not committed yet (inflight.h):
 * its sink, where it is, its rows, and its entry in the worker's shared table. */
struct ingest_range {
    struct sink *sink;
    struct sink_range r;
    uint64_t rows;
    int entry;
};

struct ingest {
    const struct ingest_config *cfg;
    struct decoder decoder;
    struct line_framer lines;
    struct buf rows, invalid; /* encoded but not yet written */
    unsigned long lost[2];    /* rows, invalid: sink_lost after the body's first batch */
    uint8_t wrote[2];         /* ...which was written */
    struct ingest_stats stats;
    enum ingest_status status;
    char error[256];
    struct cell cells[JSON_MAX_COLUMNS];
    struct quarantine_refusal refusals[JSON_MAX_COLUMNS]; /* a typed line's, being collected */
    struct quarantine_clock clock;
    /* The body's quarantine room (max_quarantine, max_quarantine_day): what it may still
     * keep, found at its first refused line (room_known); by_day: the day's bound is the
     * nearer; full: a line did not fit (nothing more is kept, and it was logged). */
    uint64_t room;
    uint8_t room_known, room_by_day, room_full;
    /* The ranges the body has written and that no answer has committed yet (inflight.h),
     * when the caller tracks them (inflight set): committed by ingest_settle(g, 1) once the
     * request is acknowledged, void otherwise (ingest_abort, ingest_settle(g, 0)). */
    struct inflight_owner *inflight;
    struct ingest_range *ranges;
    size_t nranges, ranges_cap;
    uint64_t flushed_valid;   /* stats.valid when the rows were last written */
    uint64_t pending_invalid; /* quarantined lines in g->invalid */
    uint64_t void_rows, void_bytes; /* voided by this body (ingest_settle, ingest_abort) */
    struct fingerprint *fp; /* the body's bytes hashed as they are framed (ingest_fingerprint) */
};

/* Prepares a reusable pipeline (one per connection); memory is kept between bodies. */
void ingest_init(struct ingest *g, const struct ingest_config *cfg);
/* Starts a body; stats reset. */
enum ingest_status ingest_begin(struct ingest *g, enum content_encoding enc);
/* After ingest_begin: hashes the body's bytes into fp in the pass that frames its lines, for
 * an identity-encoded body only (its bytes as received are then the ones framed): 1 when it
 * will, 0 when the caller must hash them itself. */
int ingest_fingerprint(struct ingest *g, struct fingerprint *fp);
/* The next piece of the body, as received. Rows may be written here in whole-row batches. */
enum ingest_status ingest_feed(struct ingest *g, const char *p, size_t n);
/* The body is complete: the last line, then every pending row is written. On INGEST_OK
 * every row of the body is in the file (write(2) returned), and that file still has a name:
 * a day's file deleted after an earlier batch of the body was written to it is
 * INGEST_EWRITE (the body must be sent again; the batches written since are then doubled). */
enum ingest_status ingest_end(struct ingest *g);
/* ingest_end less its last writes: the last line is judged and encoded, and what is still
 * pending (under flush_bytes of rows, and of quarantined lines) is left in g->rows and
 * g->invalid, whole rows and whole lines, for the caller to write together with other
 * requests' (a server writes the rows of every request finished in one loop turn with one
 * write(2)), then to report with ingest_written. On failure nothing is left pending. */
enum ingest_status ingest_finish(struct ingest *g);
/* After ingest_finish: the caller wrote what was pending (ok) or could not (the status is
 * then INGEST_EWRITE, with msg as the error). Counted in the stats; the buffers emptied.
 * Also INGEST_EWRITE when the body's earlier batches went into a file deleted since, as
 * ingest_end checks (their rows may be gone: the request must not be acknowledged). */
enum ingest_status ingest_written(struct ingest *g, int ok, const char *msg);
/* The body was abandoned: rows not yet written are dropped, and the ranges it wrote (when
 * tracked) are void. */
void ingest_abort(struct ingest *g);

/* ---- Ranges in flight (inflight.h), for a caller that sets g->inflight ---- */

/* An entry of the worker's table for a write about to start (published by
 * ingest_publish from a sink_hook's before), or -1 when the table is full. */
int ingest_reserve(struct ingest *g);
void ingest_publish(struct ingest *g, int entry, uint64_t file, uint64_t start);
/* The parts of a sink_hook every writer of a tracked body shares: the dead writer's write
 * found under the lock (orphan, unorphan), the write in progress announced (before, with
 * each entry published by the caller) and over (ingest_written_range after its ranges are
 * noted). arg: the struct inflight_owner. */
int ingest_hook_orphan(void *owner, uint64_t file, uint64_t *start, uint64_t *end);
void ingest_hook_unorphan(void *owner, int index, uint64_t file, uint64_t start, uint64_t end);
/* The body's write through sink s with the reserved entry landed at r (sink_written), rows
 * rows: kept as one of the body's ranges (merged into its last one when adjacent, the entry
 * then freed), or the entry freed when r is empty. */
void ingest_note(struct ingest *g, struct sink *s, int entry, const struct sink_range *r,
                 uint64_t rows);
/* The request's answer is decided: committed (a 2xx is being queued: its ranges leave the
 * table) or not (each range goes to its day file's .void record with reason "failed"
 * first, counted in void_rows and void_bytes). */
void ingest_settle(struct ingest *g, int committed);
/* Rows pending in g->rows (0) or g->invalid (1), for a caller writing them itself. */
uint64_t ingest_pending_rows(const struct ingest *g, int k);
void ingest_free(struct ingest *g);

/* The stats as the response body (also convert's stderr line), ending in "\n":
 * {"result": {"status": "ok", "stats": {"bytes": N, "records": {"valid": V, "invalid": I, "total": T}}}}
 * Returns its length (snprintf's contract). */
int ingest_stats_json(const struct ingest_stats *s, char *out, size_t size);
/* The same for a run that failed (convert's exit 2) when error is not NULL:
 * {"result": {"status": "error", "error": "MSG", "stats": {...}}} with MSG JSON-escaped (bytes
 * outside printable ASCII as '?') and cut at 510 bytes; error NULL gives ingest_stats_json's. */
int ingest_result_json(const struct ingest_stats *s, const char *error, char *out, size_t size);
/* ingest_result_json with the refused lines by class inside "records", after "total":
 * "refused": {"json": N, "oversize": N, "null": N, ...} (every class of quarantine.h, in its
 * order): the stats line of a typed convert. */
int ingest_typed_result_json(const struct ingest_stats *s, const char *error, char *out,
                             size_t size);

#endif
