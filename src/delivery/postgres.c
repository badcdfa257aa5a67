/* postgres.c -- delivery into PostgreSQL over libpq: a batch's rows COPY'd and the cursor
 * row moved in one transaction, errors classified by SQLSTATE, an unknown COMMIT outcome
 * resolved by reading the cursor row back. */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "../schema_pg.h"

/* COPY data is converted and given to libpq in pieces of about this size: libpq copies
 * what it is given into its own output buffer, which then stays small, and the server
 * parses one piece while the next is converted. */
#define PG_COPY_CHUNK (256 * 1024)

struct postgres {
    char *url;
    unsigned connect_timeout_ms;
    unsigned statement_timeout_ms;
    void (*hook)(void *arg, enum postgres_step step, int fd);
    void *hook_arg;
    PGconn *conn;     /* NULL when not connected */
    struct buf rows;  /* the batch converted, reused */
    struct buf cells; /* pg_cells' scratch, reused */
    struct buf sql;   /* the COPY statement, reused */
};

/* MARK: - Outcomes */

enum send_result postgres_classify(const char *s)
{
    if (!s || strlen(s) != 5)
        return SEND_RETRY; /* no SQLSTATE: the connection, not the statement */
    if (!strncmp(s, "22", 2) || !strncmp(s, "23", 2))
        return SEND_REFUSED;
    if (!strcmp(s, "42P01") || !strcmp(s, "42703") || !strcmp(s, "42804") || !strcmp(s, "42501"))
        return SEND_TABLE;
    if (!strncmp(s, "28", 2) || !strcmp(s, "3D000"))
        return SEND_CONFIG;
    /* 08 connection, 57P01-03 shutdown, 40001/40P01, 53 resources, and whatever else:
     * waiting costs a delay, giving up would stall the dataset for good */
    return SEND_RETRY;
}

long postgres_copy_line(const char *context, const char *table)
{
    if (!context)
        return -1;
    size_t tl = strlen(table);
    for (const char *p = context; (p = strstr(p, "COPY ")) != NULL; p += 5) {
        if ((p != context && p[-1] != '\n') || strncmp(p + 5, table, tl) != 0 ||
            strncmp(p + 5 + tl, ", line ", 7) != 0)
            continue;
        const char *d = p + 5 + tl + 7;
        long n = 0;
        if (*d < '0' || *d > '9')
            continue;
        for (; *d >= '0' && *d <= '9' && n < 1000000000L; d++)
            n = n * 10 + (*d - '0');
        return n;
    }
    return -1;
}

/* The text as one line into out->message: line ends become blanks, runs of blanks one. */
static void set_message(struct send_outcome *out, const char *prefix, const char *text)
{
    size_t o = 0, cap = sizeof out->message;
    for (int k = 0; k < 2; k++) {
        const char *s = k ? text : prefix;
        for (; s && *s && o + 1 < cap; s++) {
            char c = *s == '\n' || *s == '\r' || *s == '\t' ? ' ' : *s;
            if (c == ' ' && (o == 0 || out->message[o - 1] == ' '))
                continue;
            out->message[o++] = c;
        }
    }
    while (o && out->message[o - 1] == ' ')
        o--;
    out->message[o] = '\0';
}

static enum send_result outcome(struct send_outcome *out, enum send_result r, const char *prefix,
                                const char *text)
{
    out->result = r;
    set_message(out, prefix, text);
    return r;
}

static void drop(struct postgres *pg)
{
    if (pg->conn)
        PQfinish(pg->conn);
    pg->conn = NULL;
}

/* A failed statement's outcome: its SQLSTATE's class, its message and context; a
 * connection that is gone is dropped, to be made again by the next call. */
static enum send_result failed(struct postgres *pg, PGresult *res, const char *what,
                               struct send_outcome *out)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *ctx = res ? PQresultErrorField(res, PG_DIAG_CONTEXT) : NULL;
    char text[sizeof out->message];
    snprintf(text, sizeof text, "%s%s%s%s: %s%s%s%s", what, state ? " [" : "", state ? state : "",
             state ? "]" : "", msg ? msg : PQerrorMessage(pg->conn), ctx ? " (" : "",
             ctx ? ctx : "", ctx ? ")" : "");
    enum send_result r = postgres_classify(state);
    outcome(out, r, "postgresql: ", text);
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        drop(pg);
    } else if (PQtransactionStatus(pg->conn) != PQTRANS_IDLE) {
        PGresult *rb = PQexec(pg->conn, "ROLLBACK");
        PQclear(rb);
        if (PQstatus(pg->conn) != CONNECTION_OK)
            drop(pg);
    }
    return r;
}

/* MARK: - The connection */

/* The password keyword of a parsed connection URI, if set. */
static int has_password(PQconninfoOption *opts)
{
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (!strcmp(o->keyword, "password") && o->val && *o->val)
            return 1;
    return 0;
}

struct postgres *postgres_open(const struct postgres_config *cfg, char *err, size_t errlen)
{
    const char *u = cfg->url;
    if (!u || (strncmp(u, "postgresql://", 13) != 0 && strncmp(u, "postgres://", 11) != 0)) {
        snprintf(err, errlen, "--deliver: a PostgreSQL URL starts with postgresql://");
        return NULL;
    }
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(u, &perr);
    if (!opts) {
        /* libpq's message may quote the URL, password and all: not repeated */
        PQfreemem(perr);
        snprintf(err, errlen, "--deliver: not a PostgreSQL connection URI libpq can read");
        return NULL;
    }
    int pw = has_password(opts);
    PQconninfoFree(opts);
    if (pw) {
        snprintf(err, errlen, "--deliver: the URL holds a password, which the command line "
                              "shows to every user: put it in ~/.pgpass or PGPASSFILE");
        return NULL;
    }
    struct postgres *pg = calloc(1, sizeof *pg);
    if (pg)
        pg->url = strdup(u);
    if (!pg || !pg->url) {
        free(pg);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pg->connect_timeout_ms = cfg->connect_timeout_ms;
    pg->statement_timeout_ms = cfg->statement_timeout_ms;
    pg->hook = cfg->hook;
    pg->hook_arg = cfg->hook_arg;
    return pg;
}

void postgres_close(struct postgres *pg)
{
    if (!pg)
        return;
    drop(pg);
    buf_free(&pg->rows);
    buf_free(&pg->cells);
    buf_free(&pg->sql);
    free(pg->url);
    free(pg);
}

/* What a failed connection attempt means. libpq gives no SQLSTATE for it, only the text:
 * the server's FATAL message or the client's own. */
static enum send_result connect_failure(const char *msg)
{
    static const char *const config[] = {
        "password authentication failed", "no password supplied", "authentication failed",
        "no pg_hba.conf entry", "does not exist", /* a role or a database */
        "SSL was required", "server does not support SSL", "certificate", "permission denied",
    };
    for (size_t i = 0; i < sizeof config / sizeof *config; i++)
        if (strstr(msg, config[i]))
            return SEND_CONFIG;
    return SEND_RETRY;
}

/* The server's NOTICEs (a CREATE ... IF NOT EXISTS that skipped) are not ours to show:
 * libpq's default prints them to stderr, where they would pass for the log's lines. */
static void no_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

enum send_result postgres_connect(struct postgres *pg, struct send_outcome *out)
{
    if (pg->conn && PQstatus(pg->conn) == CONNECTION_OK)
        return out->result = SEND_STORED;
    drop(pg);
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%u", (pg->connect_timeout_ms + 999) / 1000);
    /* The URL last: expanded, its parameters win over these defaults. Keepalives find a
     * peer that vanished without a word (a power cut) within about 30 s. */
    const char *keys[] = {"application_name", "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "connect_timeout",
                          "dbname", NULL};
    const char *vals[] = {"ndingest", "1", "10", "5", "3",
                          pg->connect_timeout_ms ? timeout : "0", pg->url, NULL};
    pg->conn = PQconnectdbParams(keys, vals, 1);
    if (!pg->conn)
        return outcome(out, SEND_RETRY, "postgresql: ", "out of memory");
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        const char *msg = PQerrorMessage(pg->conn);
        enum send_result r = connect_failure(msg);
        outcome(out, r, "postgresql: connect: ", msg);
        drop(pg);
        return r;
    }
    PQsetNoticeProcessor(pg->conn, no_notices, NULL);
    /* A lock held by another session (a LOCK TABLE, a long ALTER, a second deliverer that
     * hangs with the cursor row locked) must not hold delivery forever: the statement is
     * cancelled after --deliver-timeout and the batch retried with backoff. Set for the
     * session, after the URL's options, so that it holds whatever the role's defaults. */
    if (pg->statement_timeout_ms) {
        char sql[200];
        unsigned t = pg->statement_timeout_ms;
        snprintf(sql, sizeof sql,
                 "SET statement_timeout = %u; SET lock_timeout = %u; "
                 "SET idle_in_transaction_session_timeout = %u",
                 t, t, t);
        PGresult *set = PQexec(pg->conn, sql);
        if (PQresultStatus(set) != PGRES_COMMAND_OK) {
            enum send_result r = failed(pg, set, "setting the timeouts", out);
            PQclear(set);
            return r;
        }
        PQclear(set);
    }
    /* The cursor table, created when missing: a user without CREATE can create it once
     * (schema --postgres prints it) and deliver without that privilege. */
    PGresult *res = PQexec(pg->conn, "SELECT to_regclass('" PG_CURSOR_TABLE "') IS NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        enum send_result r = failed(pg, res, "reading the cursor table", out);
        PQclear(res);
        return r;
    }
    int missing = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (missing) {
        res = PQexec(pg->conn, PG_CURSOR_DDL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            enum send_result r = failed(pg, res, "creating " PG_CURSOR_TABLE, out);
            PQclear(res);
            return r;
        }
        PQclear(res);
    }
    out->message[0] = '\0';
    return out->result = SEND_STORED;
}

/* MARK: - The cursor row */

static void reset(struct send_outcome *out)
{
    memset(out, 0, sizeof *out);
    out->refused_row = -1;
}

/* SELECT's single row of (file, offset) into cur. */
static enum send_result read_cursor(struct postgres *pg, const char *sql, const char *host,
                                    const char *dataset, struct postgres_cursor *cur,
                                    struct send_outcome *out)
{
    const char *params[] = {host, dataset};
    PGresult *res = PQexecParams(pg->conn, sql, 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        enum send_result r = failed(pg, res, "reading the cursor", out);
        PQclear(res);
        return r;
    }
    cur->found = PQntuples(res) == 1;
    cur->file[0] = '\0';
    cur->offset = 0;
    if (cur->found) {
        snprintf(cur->file, sizeof cur->file, "%s", PQgetvalue(res, 0, 0));
        cur->offset = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    }
    PQclear(res);
    return out->result = SEND_STORED;
}

enum send_result postgres_cursor(struct postgres *pg, const char *host, const char *dataset,
                                 struct postgres_cursor *cur, struct send_outcome *out)
{
    reset(out);
    memset(cur, 0, sizeof *cur);
    if (postgres_connect(pg, out) != SEND_STORED)
        return out->result;
    return read_cursor(pg,
                       "SELECT file, \"offset\" FROM " PG_CURSOR_TABLE
                       " WHERE host = $1 AND dataset = $2",
                       host, dataset, cur, out);
}

/* Runs a statement expected to succeed with status want; SEND_STORED or the failure. */
static enum send_result run(struct postgres *pg, const char *sql, int n, const char *const *params,
                            ExecStatusType want, const char *what, struct send_outcome *out)
{
    PGresult *res = n ? PQexecParams(pg->conn, sql, n, NULL, params, NULL, NULL, 0)
                      : PQexec(pg->conn, sql);
    if (PQresultStatus(res) != want) {
        enum send_result r = failed(pg, res, what, out);
        PQclear(res);
        return r;
    }
    PQclear(res);
    return SEND_STORED;
}

static const char SET_CURSOR[] =
    "INSERT INTO " PG_CURSOR_TABLE " (host, dataset, file, \"offset\", updated_at) "
    "VALUES ($1, $2, $3, $4, now()) ON CONFLICT (host, dataset) DO UPDATE SET "
    "file = EXCLUDED.file, \"offset\" = EXCLUDED.\"offset\", updated_at = now()";

enum send_result postgres_skip(struct postgres *pg, const char *host, const char *dataset,
                               const char *file, long long offset, struct send_outcome *out)
{
    reset(out);
    if (postgres_connect(pg, out) != SEND_STORED)
        return out->result;
    char off[24];
    snprintf(off, sizeof off, "%lld", offset);
    const char *params[] = {host, dataset, file, off};
    /* forward only: a later file, or the same file further on (names compare bytewise, as
     * the day files' dates do) */
    static const char sql[] =
        "INSERT INTO " PG_CURSOR_TABLE " (host, dataset, file, \"offset\", updated_at) "
        "VALUES ($1, $2, $3, $4, now()) ON CONFLICT (host, dataset) DO UPDATE SET "
        "file = EXCLUDED.file, \"offset\" = EXCLUDED.\"offset\", updated_at = now() WHERE "
        PG_CURSOR_TABLE ".file COLLATE \"C\" < EXCLUDED.file COLLATE \"C\" OR (" PG_CURSOR_TABLE
        ".file = EXCLUDED.file AND " PG_CURSOR_TABLE ".\"offset\" < EXCLUDED.\"offset\")";
    if (run(pg, sql, 4, params, PGRES_COMMAND_OK, "moving the cursor", out) != SEND_STORED)
        return out->result;
    return out->result = SEND_STORED;
}

/* MARK: - A batch */

/* COPY "table" ("c1", "c2", ...) FROM STDIN (FORMAT csv) into pg->sql, NUL-terminated. */
static int copy_statement(struct postgres *pg, const struct postgres_batch *b)
{
    struct buf *s = &pg->sql;
    const struct datasource *ds = b->rows->ds;
    size_t n = ds ? ds->ncolumns : b->rows->ncolumns;
    s->len = 0;
    int rc = buf_append(s, "COPY ", 5) || pg_put_ident(s, b->table, strlen(b->table)) ||
             buf_append(s, " (", 2);
    for (size_t i = 0; !rc && i < n; i++) {
        const char *name = ds ? ds->columns[i].name : b->columns[i];
        rc = (i && buf_append(s, ", ", 2)) || pg_put_ident(s, name, strlen(name));
    }
    return rc || buf_append(s, ") FROM STDIN (FORMAT csv)", 25) || buf_append(s, "", 1) ? -1 : 0;
}

enum send_result postgres_check_table(struct postgres *pg, const char *table,
                                      const struct pg_rows *rows, const char *const *columns,
                                      struct send_outcome *out)
{
    reset(out);
    struct buf *s = &pg->sql;
    const struct datasource *ds = rows->ds;
    size_t n = ds ? ds->ncolumns : rows->ncolumns;
    s->len = 0;
    int rc = buf_append(s, "SELECT ", 7);
    for (size_t i = 0; !rc && i < n; i++) {
        const char *name = ds ? ds->columns[i].name : columns[i];
        rc = (i && buf_append(s, ", ", 2)) || pg_put_ident(s, name, strlen(name));
    }
    rc = rc || buf_append(s, " FROM ", 6) || pg_put_ident(s, table, strlen(table)) ||
         buf_append(s, " LIMIT 0", 9);
    if (rc)
        return outcome(out, SEND_RETRY, "postgresql: ", "out of memory");
    if (postgres_connect(pg, out) != SEND_STORED)
        return out->result;
    reset(out);
    return run(pg, pg->sql.p, 0, NULL, PGRES_TUPLES_OK, "checking the table", out);
}

enum send_result postgres_create_table(struct postgres *pg, const char *table, const char *ddl,
                                       struct send_outcome *out)
{
    reset(out);
    struct buf *s = &pg->sql;
    s->len = 0;
    if (pg_put_ident(s, table, strlen(table)) || buf_append(s, "", 1))
        return outcome(out, SEND_RETRY, "postgresql: ", "out of memory");
    if (postgres_connect(pg, out) != SEND_STORED)
        return out->result;
    reset(out);
    const char *params[] = {s->p};
    PGresult *res = PQexecParams(pg->conn, "SELECT to_regclass($1) IS NULL", 1, NULL, params,
                                 NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        enum send_result r = failed(pg, res, "looking for the table", out);
        PQclear(res);
        return r;
    }
    int missing = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (!missing)
        return outcome(out, SEND_TABLE, "postgresql: ", "the table exists: not created");
    return run(pg, ddl, 0, NULL, PGRES_COMMAND_OK, "CREATE TABLE", out);
}

/* The outcome of a row pg_cells refused (ref->row counted from the batch's first row), or
 * of its running out of memory. */
static enum send_result refusal(const struct postgres_batch *b, const struct pg_refusal *ref,
                                struct send_outcome *out)
{
    if (ref->row < 0)
        return outcome(out, SEND_RETRY, "postgresql: ", ref->why);
    out->refused_row = ref->row;
    char text[sizeof out->message];
    const char *col = ref->column < 0 ? NULL
                      : b->rows->ds   ? b->rows->ds->columns[ref->column].name
                                      : b->columns[ref->column];
    snprintf(text, sizeof text, "row %ld%s%s%s: %s", ref->row + 1, col ? ", column \"" : "",
             col ? col : "", col ? "\"" : "", ref->why);
    return outcome(out, SEND_REFUSED, "postgresql: ", text);
}

/* The rows through COPY, converted a piece at a time while the server parses the pieces
 * before (no second copy of the whole batch); SEND_STORED when PostgreSQL took them all. A
 * row the converter refuses ends the COPY with an error, which rolls the transaction back. */
static enum send_result copy_rows(struct postgres *pg, const struct postgres_batch *b,
                                  struct send_outcome *out)
{
    PGresult *res = PQexec(pg->conn, pg->sql.p);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        enum send_result r = failed(pg, res, "COPY", out);
        PQclear(res);
        return r;
    }
    PQclear(res);
    int ok = 1;
    long row = 0;
    struct pg_refusal ref = {.row = 0};
    int refused = 0;
    for (size_t pos = 0; ok && pos < b->len;) {
        size_t used;
        pg->rows.len = 0;
        long n = pg_cells_rows(b->rows, b->body + pos, b->len - pos, PG_COPY_CHUNK, &pg->rows,
                               &pg->cells, &ref, &used);
        if (n < 0) {
            refused = 1;
            if (ref.row >= 0)
                ref.row += row;
            break;
        }
        ok = PQputCopyData(pg->conn, pg->rows.p, (int)pg->rows.len) == 1;
        pos += used;
        row += n;
    }
    if (ok)
        ok = PQputCopyEnd(pg->conn, refused ? "ndingest: a row PostgreSQL cannot hold" : NULL) == 1;
    /* the COPY's own result (the error, if any, with its line), then the end of results */
    res = PQgetResult(pg->conn);
    enum send_result r = SEND_STORED;
    if (refused && ok) {
        PQclear(res);
        while ((res = PQgetResult(pg->conn)) != NULL)
            PQclear(res);
        PQclear(PQexec(pg->conn, "ROLLBACK"));
        if (PQstatus(pg->conn) != CONNECTION_OK)
            drop(pg);
        return refusal(b, &ref, out);
    }
    if (!ok || PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *ctx = res ? PQresultErrorField(res, PG_DIAG_CONTEXT) : NULL;
        long line = postgres_copy_line(ctx, b->table);
        r = failed(pg, res, "COPY", out);
        if (r == SEND_REFUSED && line > 0)
            out->refused_row = line - 1;
    }
    PQclear(res);
    while (pg->conn && (res = PQgetResult(pg->conn)) != NULL)
        PQclear(res);
    return r;
}

/* After a COMMIT whose answer was lost: the batch is in if the cursor row says (file, end),
 * which only this batch's transaction can have written. */
static enum send_result resolve(struct postgres *pg, const struct postgres_batch *b,
                                struct send_outcome *out)
{
    struct send_outcome again;
    struct postgres_cursor cur;
    drop(pg);
    char lost[sizeof out->message];
    snprintf(lost, sizeof lost, "%s", out->message);
    if (postgres_cursor(pg, b->host, b->dataset, &cur, &again) != SEND_STORED)
        return outcome(out, SEND_RETRY, lost, "; the COMMIT's outcome is unknown and the cursor "
                                              "could not be read back: retried");
    if (!strcmp(cur.file, b->file) && cur.offset == b->end) {
        reset(out);
        return out->result = SEND_STORED;
    }
    return outcome(out, SEND_RETRY, lost, "; read back: the COMMIT did not happen");
}

enum send_result postgres_insert(struct postgres *pg, const struct postgres_batch *b,
                                 struct send_outcome *out)
{
    reset(out);
    if (copy_statement(pg, b))
        return outcome(out, SEND_RETRY, "postgresql: ", "out of memory");
    if (postgres_connect(pg, out) != SEND_STORED)
        return out->result;
    reset(out);

    char end[24];
    snprintf(end, sizeof end, "%lld", b->end);
    const char *key[] = {b->host, b->dataset};
    const char *set[] = {b->host, b->dataset, b->file, end};
    if (run(pg, "BEGIN", 0, NULL, PGRES_COMMAND_OK, "BEGIN", out) != SEND_STORED)
        return out->result;
    /* The cursor row, created if missing and locked: a second deliverer of the same (host,
     * dataset) waits here, then sees this batch's cursor and skips it. */
    PGresult *res = PQexecParams(
        pg->conn,
        "INSERT INTO " PG_CURSOR_TABLE " (host, dataset, file, \"offset\", updated_at) "
        "VALUES ($1, $2, '', 0, now()) ON CONFLICT (host, dataset) DO UPDATE SET "
        "host = EXCLUDED.host RETURNING file, \"offset\"",
        2, NULL, key, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        enum send_result r = failed(pg, res, "locking the cursor", out);
        PQclear(res);
        return r;
    }
    const char *file = PQgetvalue(res, 0, 0);
    long long offset = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    int cmp = strcmp(file, b->file);
    int in = cmp > 0 || (cmp == 0 && offset >= b->end);
    int overlap = cmp == 0 && offset > b->start && offset < b->end;
    char at[300];
    snprintf(at, sizeof at, "%s at %lld", *file ? file : "(none)", offset);
    PQclear(res);
    if (in || overlap) {
        PQclear(PQexec(pg->conn, "ROLLBACK"));
        if (in)
            return out->result = SEND_STORED; /* a resent batch: in already */
        char text[sizeof out->message];
        snprintf(text, sizeof text,
                 "the batch [%lld, %lld) of %s overlaps the database's cursor (%s): delivery "
                 "must start from the database's cursor",
                 b->start, b->end, b->file, at);
        return outcome(out, SEND_CONFIG, "postgresql: ", text);
    }
    if (copy_rows(pg, b, out) != SEND_STORED)
        return out->result;
    if (run(pg, SET_CURSOR, 4, set, PGRES_COMMAND_OK, "moving the cursor", out) != SEND_STORED)
        return out->result;

    if (pg->hook)
        pg->hook(pg->hook_arg, POSTGRES_BEFORE_COMMIT, PQsocket(pg->conn));
    int sent = PQsendQuery(pg->conn, "COMMIT");
    if (sent && pg->hook)
        pg->hook(pg->hook_arg, POSTGRES_COMMIT_SENT, PQsocket(pg->conn));
    res = sent ? PQgetResult(pg->conn) : NULL;
    int committed = PQresultStatus(res) == PGRES_COMMAND_OK &&
                    !strcmp(PQcmdStatus(res), "COMMIT");
    if (committed) {
        PQclear(res);
        while ((res = PQgetResult(pg->conn)) != NULL)
            PQclear(res);
        return out->result = SEND_STORED;
    }
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (res && state && PQstatus(pg->conn) == CONNECTION_OK) {
        /* the server answered: not committed (a serialization failure at commit...) */
        enum send_result r = failed(pg, res, "COMMIT", out);
        PQclear(res);
        while (pg->conn && (res = PQgetResult(pg->conn)) != NULL)
            PQclear(res);
        return r;
    }
    /* no answer: the connection went during or after COMMIT */
    set_message(out, "postgresql: COMMIT: ", PQerrorMessage(pg->conn));
    PQclear(res);
    return resolve(pg, b, out);
}
