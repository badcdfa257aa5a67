/* ingest.c -- one request body through the pipeline: decode, frame, validate, encode, write. */
#include "ingest.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "csv.h"
#include "log.h"
#include "voids.h"

static void fail(struct ingest *g, enum ingest_status st, const char *msg)
{
    if (g->status != INGEST_OK)
        return; /* the first failure is the one worth reporting */
    g->status = st;
    snprintf(g->error, sizeof g->error, "%s", msg);
}

/* Writes pending bytes of one kind (k: 0 rows, 1 quarantined lines); b holds whole rows
 * (or whole quarantined lines). */
struct one_write {
    struct ingest *g;
    struct sink *s;
    int entry;
    uint64_t rows;
};

static int orphan_one(void *arg, uint64_t file, uint64_t *start, uint64_t *end)
{
    return ingest_hook_orphan(((struct one_write *)arg)->g->inflight, file, start, end);
}

static void unorphan_one(void *arg, int index, uint64_t file, uint64_t start, uint64_t end)
{
    ingest_hook_unorphan(((struct one_write *)arg)->g->inflight, index, file, start, end);
}

static void before_one(void *arg, uint64_t file, uint64_t start, uint64_t len)
{
    struct one_write *w = arg;
    inflight_writing(w->g->inflight, file, start, len);
    ingest_publish(w->g, w->entry, file, start);
}

static void after_one(void *arg, const struct sink_range *r)
{
    struct one_write *w = arg;
    if (r) {
        ingest_note(w->g, w->s, w->entry, r, w->rows);
        w->entry = -1;
    }
    inflight_written(w->g->inflight);
}

static void flush(struct ingest *g, struct sink *s, struct buf *b, int k)
{
    if (!b->len || g->status != INGEST_OK)
        return;
    int r;
    if (g->inflight) {
        struct one_write w = {g, s, ingest_reserve(g), ingest_pending_rows(g, k)};
        if (w.entry < 0) {
            fail(g, INGEST_EBUSY, "this worker's table of ranges in flight is full "
                                  "(--inflight-ranges): try again later");
            b->len = 0;
            return;
        }
        const struct sink_hook h = {orphan_one, unorphan_one, before_one, after_one, &w};
        r = sink_write_hooked(s, b->p, b->len, &h);
        if (w.entry >= 0) /* nothing written under the lock: the entry is free again */
            ingest_note(g, s, w.entry, &(struct sink_range){0}, 0);
    } else {
        r = sink_write(s, b->p, b->len);
    }
    if (k)
        g->pending_invalid = 0;
    else
        g->flushed_valid = g->stats.valid;
    if (r) {
        fail(g, INGEST_EWRITE, sink_error(s));
    } else {
        g->stats.written += b->len;
        if (!g->wrote[k]) { /* counted after the write: that batch is in a named file */
            g->wrote[k] = 1;
            g->lost[k] = sink_lost(s);
        }
    }
    b->len = 0;
}

/* Whether every batch of the body written to s is still in a file with a name. */
static void check_kept(struct ingest *g, struct sink *s, int k)
{
    if (g->status == INGEST_OK && g->wrote[k] && sink_lost(s) != g->lost[k])
        fail(g, INGEST_EWRITE, "the day's file was deleted while the body was being written: "
                               "its first rows went with it; send the body again");
}

/* Whether n more bytes of quarantine may be kept for this body: at most max_quarantine for
 * the body, and the day's file at most max_quarantine_day, judged by its size when the
 * body's first refused line comes (one statx per body that has one, none per line) plus what
 * the body keeps from then on. Other bodies appending meanwhile are not seen: the file may
 * pass the day's bound by what the bodies in flight keep, each at most max_quarantine, which
 * no lock and no shared counter is worth. Once a row does not fit, none after it is kept
 * (the quarantine holds the body's first refused lines, never a sample with holes). Logs
 * once per body that meets max_quarantine, and once a day per process for the day's file
 * (the metrics count every line). */
static int keeps(struct ingest *g, size_t n)
{
    const struct ingest_config *cfg = g->cfg;
    if (!g->room_known) {
        g->room_known = 1;
        g->room_by_day = g->room_full = 0;
        g->room = cfg->max_quarantine ? cfg->max_quarantine : UINT64_MAX;
        if (cfg->max_quarantine_day) {
            uint64_t day = sink_size(cfg->quarantine);
            uint64_t left = day < cfg->max_quarantine_day ? cfg->max_quarantine_day - day : 0;
            if (left < g->room) {
                g->room = left;
                g->room_by_day = 1;
            }
        }
    }
    if (n <= g->room) {
        g->room -= n;
        return 1;
    }
    if (!g->room_full && cfg->log_prefix &&
        (!g->room_by_day || sink_first_today(cfg->quarantine))) {
        if (g->room_by_day)
            log_error("%s: %s reached --max-quarantine-day %llu bytes: refused lines are "
                      "counted (reason \"full\"), not kept, until the next day's file",
                      cfg->log_prefix, sink_path(cfg->quarantine),
                      (unsigned long long)cfg->max_quarantine_day);
        else
            log_error("%s: a body's refused lines passed --max-quarantine %llu bytes of %s: "
                      "the rest of them are counted (reason \"full\"), not kept",
                      cfg->log_prefix, (unsigned long long)cfg->max_quarantine,
                      sink_path(cfg->quarantine));
    }
    g->room = 0;
    g->room_full = 1;
    return 0;
}

/* Counts a refused line under its class and keeps it in the quarantine, if there is one
 * and it has room (keeps): raw (untyped), or as a quarantine row for the reasons r[0..nr)
 * (typed). A line past the room is counted as QUARANTINE_FULL instead. */
static void refuse(struct ingest *g, enum quarantine_reason why,
                   const struct quarantine_refusal *r, size_t nr, const char *p, size_t n)
{
    const struct ingest_config *cfg = g->cfg;
    g->stats.invalid++;
    if (!cfg->quarantine) {
        g->stats.refused[why]++;
        return;
    }
    size_t start = g->invalid.len;
    if (cfg->schema) {
        if (quarantine_row(&g->invalid, &g->clock, time(NULL), r, nr, p, n)) {
            g->stats.refused[why]++;
            fail(g, INGEST_ENOMEM, "out of memory keeping a refused line");
            return;
        }
    } else {
        if (buf_reserve(&g->invalid, n + 1)) {
            g->stats.refused[why]++;
            fail(g, INGEST_ENOMEM, "out of memory keeping an invalid line");
            return;
        }
        memcpy(g->invalid.p + g->invalid.len, p, n);
        g->invalid.p[g->invalid.len + n] = '\n';
        g->invalid.len += n + 1;
    }
    if (!keeps(g, g->invalid.len - start)) {
        g->invalid.len = start;
        why = QUARANTINE_FULL;
    } else {
        g->pending_invalid++;
    }
    g->stats.refused[why]++;
    if (g->invalid.len >= cfg->flush_bytes)
        flush(g, cfg->quarantine, &g->invalid, 1);
}

/* A typed line's cells, each checked against its column's type into the pending rows; the
 * row is kept only when every column passed, else every refusal goes to the quarantine.
 * Cells are written at a cursor into room made once for the rest of the row (a separator
 * and DS_SHORT_MAX bytes per column): most take datasource_short_cell; the others go
 * through datasource_cell, after which the room is made again. */
static void typed_row(struct ingest *g, const char *p, size_t n)
{
    const struct datasource *ds = g->cfg->schema;
    struct buf *rows = &g->rows;
    size_t start = rows->len, nr = 0;
    enum quarantine_reason first = QUARANTINE_SYNTAX;
    const size_t ncolumns = ds->ncolumns; /* read once: rows' stores may alias them */
    const struct ds_column *const columns = ds->columns;
    if (buf_reserve(rows, ncolumns * (DS_SHORT_MAX + 1) + 2))
        goto nomem;
    char *w = rows->p + rows->len;
    for (size_t i = 0; i < ncolumns; i++) {
        const struct ds_column *c = &columns[i];
        const struct cell *v = &g->cells[i];
        if (i)
            *w++ = ',';
        char *end = datasource_short_cell(c, v, w);
        if (end) {
            w = end;
            continue;
        }
        const char *why = NULL;
        rows->len = (size_t)(w - rows->p);
        enum type_result r = datasource_cell(c, v, rows, &why);
        if (r == TYPE_ERR_NOMEM ||
            buf_reserve(rows, (ncolumns - i) * (DS_SHORT_MAX + 1) + 2))
            goto nomem;
        w = rows->p + rows->len;
        if (r == TYPE_OK)
            continue;
        if (!nr)
            first = quarantine_reason_of(r);
        if (!why) /* every refusal names its reason; this only keeps strlen safe */
            why = "refused";
        g->refusals[nr++] = (struct quarantine_refusal){c->name, why, c->name_len, strlen(why)};
    }
    if (nr) {
        rows->len = start;
        refuse(g, first, g->refusals, nr, p, n);
        return;
    }
    /* A row of one empty cell is written as "", as csv_row does, so it is not a blank line. */
    if (w == rows->p + start) {
        *w++ = '"';
        *w++ = '"';
    }
    if (g->cfg->crlf)
        *w++ = '\r';
    *w++ = '\n';
    rows->len = (size_t)(w - rows->p);
    g->stats.valid++;
    if (rows->len >= g->cfg->flush_bytes)
        flush(g, g->cfg->rows, rows, 0);
    return;
nomem:
    rows->len = start;
    fail(g, INGEST_ENOMEM, "out of memory encoding a row");
}

/* The quarantine's reason for a line that is not a JSON object: "not a JSON object" when it
 * is one valid value of another kind, else "invalid JSON at byte N", where the strict walk
 * stops. */
static void refuse_json(struct ingest *g, const char *p, size_t n)
{
    char reason[64];
    char *w = reason;
    if (json_not_object(p, n))
        w = PUT(w, "not a JSON object");
    else
        w = put_u64(PUT(w, "invalid JSON at byte "), json_error_offset(p, n));
    const struct quarantine_refusal r = {NULL, reason, 0, (size_t)(w - reason)};
    refuse(g, QUARANTINE_JSON, &r, 1, p, n);
}

static void on_line(void *ctx, const char *p, size_t n)
{
    struct ingest *g = ctx;
    const struct ingest_config *cfg = g->cfg;
    switch (json_line(cfg->columns, p, n, g->cells)) {
    case LINE_BLANK:
        return;
    case LINE_VALID:
        if (cfg->schema) {
            typed_row(g, p, n);
            return;
        }
        g->stats.valid++;
        if (csv_row(&g->rows, g->cells, cfg->columns->count, cfg->crlf))
            fail(g, INGEST_ENOMEM, "out of memory encoding a row");
        else if (g->rows.len >= cfg->flush_bytes)
            flush(g, cfg->rows, &g->rows, 0);
        return;
    case LINE_INVALID:
        if (cfg->schema && cfg->quarantine)
            refuse_json(g, p, n);
        else
            refuse(g, QUARANTINE_JSON, NULL, 0, p, n);
        return;
    }
}

static void on_oversize(void *ctx, uint64_t len)
{
    struct ingest *g = ctx;
    g->stats.invalid++;
    g->stats.refused[QUARANTINE_OVERSIZE]++;
    /* Rare by construction (a client bug or an attack), so stdio is fine here. */
    if (g->cfg->log_prefix)
        fprintf(stderr, "%s: line of %llu bytes is over --max-line %zu: counted invalid, not stored\n",
                g->cfg->log_prefix, (unsigned long long)len, g->cfg->max_line);
}

static int on_decoded(void *ctx, const char *p, size_t n)
{
    struct ingest *g = ctx;
    const struct line_handler h = {on_line, on_oversize, g};
    g->stats.decoded += n;
    if (g->fp ? lines_feed_fp(&g->lines, g->fp, p, n, &h) : lines_feed(&g->lines, p, n, &h))
        fail(g, INGEST_ENOMEM, "out of memory holding a partial line");
    return g->status != INGEST_OK;
}

void ingest_init(struct ingest *g, const struct ingest_config *cfg)
{
    memset(g, 0, sizeof *g);
    g->cfg = cfg;
    lines_init(&g->lines, cfg->max_line);
}

enum ingest_status ingest_begin(struct ingest *g, enum content_encoding enc)
{
    memset(&g->stats, 0, sizeof g->stats);
    g->status = INGEST_OK;
    g->error[0] = '\0';
    if (g->nranges) /* left by a body nobody settled: not acknowledged */
        ingest_settle(g, 0);
    g->rows.len = g->invalid.len = 0;
    g->wrote[0] = g->wrote[1] = 0;
    g->room_known = 0;
    g->flushed_valid = g->pending_invalid = 0;
    g->void_rows = g->void_bytes = 0;
    lines_reset(&g->lines);
    g->fp = NULL;
    g->decoder.max_out = g->cfg->max_inflate;
    g->decoder.max_ratio = g->cfg->max_ratio;
    if (decoder_begin(&g->decoder, enc))
        fail(g, INGEST_ENOMEM, "out of memory starting the decoder");
    return g->status;
}

int ingest_fingerprint(struct ingest *g, struct fingerprint *fp)
{
    g->fp = g->decoder.enc == ENCODING_IDENTITY ? fp : NULL;
    return g->fp != NULL;
}

enum ingest_status ingest_feed(struct ingest *g, const char *p, size_t n)
{
    g->stats.bytes += n;
    if (g->status != INGEST_OK) {
        if (g->fp) /* still every byte, whatever becomes of the body */
            fingerprint_feed(g->fp, p, n, NULL, NULL);
        return g->status;
    }
    int rc = decoder_feed(&g->decoder, p, n, on_decoded, g);
    if (rc == DECODE_EDATA)
        fail(g, INGEST_EDECODE, "the compressed body is corrupt");
    else if (rc == DECODE_ENOMEM)
        fail(g, INGEST_ENOMEM, "out of memory decoding the body");
    else if (rc == DECODE_ETOOBIG)
        fail(g, INGEST_ETOOBIG, "the compressed body inflates past --max-inflate or --max-ratio");
    return g->status;
}

enum ingest_status ingest_finish(struct ingest *g)
{
    if (g->status == INGEST_OK && decoder_end(&g->decoder))
        fail(g, INGEST_EDECODE, "the compressed body ends before its stream does");
    if (g->status == INGEST_OK) {
        const struct line_handler h = {on_line, on_oversize, g};
        lines_end(&g->lines, &h);
    }
    if (g->status != INGEST_OK)
        ingest_abort(g);
    return g->status;
}

/* The body's earlier batches are still in named files (check_kept) once its last rows are
 * written, by ingest_end or by the caller of ingest_finish. */
static void check_all_kept(struct ingest *g)
{
    check_kept(g, g->cfg->rows, 0);
    if (g->cfg->quarantine)
        check_kept(g, g->cfg->quarantine, 1);
}

enum ingest_status ingest_written(struct ingest *g, int ok, const char *msg)
{
    if (ok) {
        g->stats.written += g->rows.len + g->invalid.len;
        check_all_kept(g);
    } else {
        fail(g, INGEST_EWRITE, msg);
    }
    g->rows.len = g->invalid.len = 0;
    g->flushed_valid = g->stats.valid;
    g->pending_invalid = 0;
    return g->status;
}

enum ingest_status ingest_end(struct ingest *g)
{
    if (ingest_finish(g) != INGEST_OK)
        return g->status;
    flush(g, g->cfg->rows, &g->rows, 0);
    if (g->cfg->quarantine)
        flush(g, g->cfg->quarantine, &g->invalid, 1);
    check_all_kept(g);
    if (g->status != INGEST_OK)
        ingest_abort(g);
    return g->status;
}

void ingest_abort(struct ingest *g)
{
    g->rows.len = g->invalid.len = 0;
    g->flushed_valid = g->stats.valid;
    g->pending_invalid = 0;
    lines_reset(&g->lines);
    if (g->nranges)
        ingest_settle(g, 0);
}

uint64_t ingest_pending_rows(const struct ingest *g, int k)
{
    return k ? g->pending_invalid : g->stats.valid - g->flushed_valid;
}

int ingest_reserve(struct ingest *g)
{
    return inflight_begin(g->inflight, 0, 0); /* file 0 is no file's: nobody waits for it */
}

void ingest_publish(struct ingest *g, int entry, uint64_t file, uint64_t start)
{
    inflight_publish(g->inflight, entry, file, start);
}

int ingest_hook_orphan(void *owner, uint64_t file, uint64_t *start, uint64_t *end)
{
    struct inflight_owner *o = owner;
    int dead = inflight_orphan(o->all, o->self, file, start, end);
    if (dead >= 0) /* ours now: should this one die too before it is voided, it is found again */
        inflight_writing(o, file, *start, *end > *start ? *end - *start : 0);
    return dead;
}

void ingest_hook_unorphan(void *owner, int index, uint64_t file, uint64_t start, uint64_t end)
{
    const struct inflight_owner *o = owner;
    if (inflight_unorphan(o->all, index, file, start, end))
        log_error("ndingest: the rows a dead worker was writing at byte %llu of a day file "
                  "could not be voided (the .void record refused them) and are not "
                  "voided now", (unsigned long long)start);
}

static void void_range(struct ingest *g, const struct ingest_range *x);

void ingest_note(struct ingest *g, struct sink *s, int entry, const struct sink_range *r,
                 uint64_t rows)
{
    if (r->start >= r->end) {
        inflight_clear(g->inflight, entry);
        return;
    }
    if (g->nranges) {
        /* Right after the body's last range in the same file: one range, one entry (a
         * large body alone on its dataset writes a single range however many batches). */
        struct ingest_range *l = &g->ranges[g->nranges - 1];
        if (l->sink == s && l->r.file == r->file && l->r.ino == r->ino &&
            l->r.day == r->day && l->r.end == r->start) {
            l->r.end = r->end;
            l->rows += rows;
            inflight_set(g->inflight, l->entry, l->r.start, l->r.end, l->rows);
            inflight_clear(g->inflight, entry);
            return;
        }
    }
    inflight_set(g->inflight, entry, r->start, r->end, rows);
    if (g->nranges == g->ranges_cap) {
        /* Per range, not per row: at most the table's size, kept between bodies. */
        size_t cap = g->ranges_cap ? g->ranges_cap * 2 : 8;
        struct ingest_range *n = realloc(g->ranges, cap * sizeof *n);
        if (!n) { /* cannot be kept for later: void now, and the body fails */
            const struct ingest_range one = {s, *r, rows, entry};
            void_range(g, &one);
            fail(g, INGEST_ENOMEM, "out of memory keeping the ranges a body wrote");
            return;
        }
        g->ranges = n;
        g->ranges_cap = cap;
    }
    g->ranges[g->nranges++] = (struct ingest_range){s, *r, rows, entry};
}

/* One of the body's ranges is void: its line goes to the day file's record before its
 * entry leaves the table (a reader that no longer sees the range in flight finds it in the
 * record). A record that cannot be written now (a full disk) keeps the entry, so delivery
 * keeps holding back, until inflight_retry manages it. */
static void void_range(struct ingest *g, const struct ingest_range *x)
{
    char path[PATH_MAX];
    int r = sink_range_path(x->sink, &x->r, path, sizeof path);
    if (!r)
        r = voids_record(path, x->r.ino, x->r.start, x->r.end, "failed");
    g->void_rows += x->rows;
    g->void_bytes += x->r.end - x->r.start;
    if (!r) {
        inflight_clear(g->inflight, x->entry);
        return;
    }
    const char *who = g->cfg->log_prefix ? g->cfg->log_prefix : "ndingest";
    if (r != -ENAMETOOLONG && r != -EINVAL &&
        !inflight_defer(g->inflight, x->entry, path, x->r.ino, x->r.start, x->r.end)) {
        log_error("%s: cannot record the void range %llu-%llu of %s yet (%s): delivery holds "
                  "back until it is", who, (unsigned long long)x->r.start,
                  (unsigned long long)x->r.end, path, strerror(-r));
        return;
    }
    log_error("%s: cannot record the void range %llu-%llu of %s: %s", who,
              (unsigned long long)x->r.start, (unsigned long long)x->r.end, path, strerror(-r));
    inflight_clear(g->inflight, x->entry);
}

void ingest_settle(struct ingest *g, int committed)
{
    for (size_t i = 0; i < g->nranges; i++) {
        if (committed)
            inflight_clear(g->inflight, g->ranges[i].entry);
        else
            void_range(g, &g->ranges[i]);
    }
    g->nranges = 0;
}

void ingest_free(struct ingest *g)
{
    if (g->nranges)
        ingest_settle(g, 0);
    free(g->ranges);
    buf_free(&g->rows);
    buf_free(&g->invalid);
    lines_free(&g->lines);
    decoder_free(&g->decoder);
}

/* s as the inside of a JSON string; a byte that would need a \u escape (a control
 * character, a byte of a non-ASCII file name) becomes '?': the message is for reading. */
static size_t escape_text(char *out, size_t size, const char *s)
{
    size_t o = 0;
    for (; *s && o + 3 <= size; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            out[o++] = '\\';
        out[o++] = ch < 0x20 || ch >= 0x7f ? '?' : (char)ch;
    }
    out[o] = '\0';
    return o;
}


/* Built by hand, not with snprintf: this is every request's response body, and for small
 * bodies snprintf's format walk cost as much as judging the lines (~2,900 instructions of
 * ~17,500 per two-line request, callgrind). */
static int result_json(const struct ingest_stats *s, const char *error, int typed, char *out,
                       size_t size)
{
    /* 510 bytes of message, 4 + QUARANTINE_REASONS numbers of 20 digits and their keys fit */
    char text[512], line[1536];
    char *w = line;
    if (error) {
        size_t n = escape_text(text, sizeof text, error);
        w = PUT(w, "{\"result\": {\"status\": \"error\", \"error\": \"");
        w = PUT(put_bytes(w, text, n), "\"");
    } else {
        w = PUT(w, "{\"result\": {\"status\": \"ok\"");
    }
    w = put_u64(PUT(w, ", \"stats\": {\"bytes\": "), s->bytes);
    w = put_u64(PUT(w, ", \"records\": {\"valid\": "), s->valid);
    w = put_u64(PUT(w, ", \"invalid\": "), s->invalid);
    w = put_u64(PUT(w, ", \"total\": "), s->valid + s->invalid);
    if (typed) {
        w = PUT(w, ", \"refused\": {");
        for (unsigned k = 0; k < QUARANTINE_REASONS; k++) {
            const char *name = quarantine_reason_names[k];
            w = put_bytes(PUT(w, "\""), name, strlen(name));
            w = put_u64(PUT(w, "\": "), s->refused[k]);
            if (k + 1 < QUARANTINE_REASONS)
                w = PUT(w, ", ");
        }
        w = PUT(w, "}");
    }
    w = PUT(w, "}}}}\n");
    size_t len = (size_t)(w - line);
    if (size) { /* snprintf's contract: cut to fit, always terminated, the full length returned */
        size_t n = len < size ? len : size - 1;
        memcpy(out, line, n);
        out[n] = '\0';
    }
    return (int)len;
}

int ingest_result_json(const struct ingest_stats *s, const char *error, char *out, size_t size)
{
    return result_json(s, error, 0, out, size);
}

int ingest_typed_result_json(const struct ingest_stats *s, const char *error, char *out,
                             size_t size)
{
    return result_json(s, error, 1, out, size);
}

int ingest_stats_json(const struct ingest_stats *s, char *out, size_t size)
{
    return ingest_result_json(s, NULL, out, size);
}
