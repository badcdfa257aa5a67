/* postgres.h -- PostgreSQL as delivery needs it (libpq): the cursor row the database keeps
 * per (host, dataset), and a batch COPY'd with that row moved in the same transaction, so
 * that the rows and the cursor commit together (doc/delivery.md, "PostgreSQL"). */
#ifndef NDINGEST_POSTGRES_H
#define NDINGEST_POSTGRES_H

#include <stddef.h>

#include "destination.h"
#include "pg_cells.h"

/* --deliver postgresql://[USER@]HOST[:PORT]/DATABASE[?sslmode=...&...] (or postgres://),
 * passed to libpq as a connection URI: every parameter libpq knows may be given there, and
 * libpq's usual sources fill the rest (PGPASSFILE or ~/.pgpass for the password, PGSSLMODE,
 * PGSSLROOTCERT, ...). A password in the URL is refused: the URL is on the command line, in
 * argv for everyone to read. No message ever holds a password. */
struct postgres;

/* The steps a fault-injecting test may act at (tests/tools/postgres_probe.c); NULL in
 * ndingest itself. fd is the connection's socket. */
enum postgres_step {
    POSTGRES_BEFORE_COMMIT, /* the batch and the cursor row are written, COMMIT not sent */
    POSTGRES_COMMIT_SENT,   /* COMMIT sent, its answer not read */
};

struct postgres_config {
    const char *url;
    unsigned connect_timeout_ms; /* 0: libpq's (none); a URL's connect_timeout wins */
    /* --deliver-timeout: the session's statement_timeout, lock_timeout and
     * idle_in_transaction_session_timeout, so that a COPY or the cursor row's lock waiting on
     * another session's lock fails (57014, 55P03: retried with backoff) rather than
     * stalling delivery; 0: the server's settings */
    unsigned statement_timeout_ms;
    void (*hook)(void *arg, enum postgres_step step, int fd);
    void *hook_arg;
};

/* Checks the URL (a postgresql:// URI libpq parses, without a password); no connection
 * yet. NULL with a message in err for a bad URL, one holding a password, or no memory. */
struct postgres *postgres_open(const struct postgres_config *cfg, char *err, size_t errlen);
void postgres_close(struct postgres *pg);

/* Connects when not connected and creates the cursor table (PG_CURSOR_TABLE, schema_pg.h)
 * when it is missing. SEND_STORED when ready, else the failure's outcome: SEND_CONFIG for
 * authentication, no such database or role, TLS refused; SEND_RETRY for the rest. The
 * other calls connect by themselves; this one is for the start, to log and to wait. */
enum send_result postgres_connect(struct postgres *pg, struct send_outcome *out);

/* Where the database holds a dataset's day files to: the file (its name, without
 * directories) and the offset past the last row stored. With PostgreSQL this is the truth,
 * read at start; the local cursor file is only a hint. */
struct postgres_cursor {
    int found;     /* 0: no row yet (file "" and offset 0) */
    char file[256];
    long long offset;
};
enum send_result postgres_cursor(struct postgres *pg, const char *host, const char *dataset,
                                 struct postgres_cursor *cur, struct send_outcome *out);

/* One batch: the whole rows [start, end) of the day file `file`. */
struct postgres_batch {
    const char *host, *dataset; /* the cursor row's key */
    const char *table;          /* the table the rows go to (the search_path finds it) */
    const struct pg_rows *rows; /* the definition, or the untyped dataset's column count */
    const char *const *columns; /* untyped: the rows->ncolumns column names; NULL with a
                                 * definition, whose column names are used */
    const char *file;
    long long start, end;
    const char *body; /* the bytes [start, end) */
    size_t len;
};

/* In one transaction: locks the cursor row (creating it at "", 0 if missing); when it says
 * the batch is in already (the same file at end or later, or a later file), returns
 * SEND_STORED without writing; else COPY table (columns) FROM STDIN (FORMAT csv) of the
 * rows converted (pg_cells), the cursor row set to (file, end), COMMIT. SEND_STORED only
 * when COMMIT succeeded. When the connection is lost during or after COMMIT (the outcome
 * unknown), reconnects and reads the cursor row: (file, end) is SEND_STORED, anything else
 * SEND_RETRY; a retry is safe either way, since the cursor row is checked first. SEND_REFUSED
 * with out->refused_row when a row cannot be converted or PostgreSQL refuses one (class 22
 * data exception, 23 integrity constraint); SEND_TABLE for 42P01 undefined table, 42703
 * undefined column, 42804 datatype mismatch, 42501 privilege; SEND_CONFIG for 28xxx
 * authentication, 3D000 no database, and a batch that starts before the cursor row's
 * offset and ends after it (the loop must start from postgres_cursor); SEND_RETRY for lost
 * connections, 57P0x shutdowns, 40001/40P01, 53xxx and the rest. */
enum send_result postgres_insert(struct postgres *pg, const struct postgres_batch *b,
                                 struct send_outcome *out);

/* Whether the table takes the batch's columns: SELECT "c1", ... FROM table LIMIT 0.
 * SEND_STORED when it does; SEND_TABLE when the table or a column is missing (42P01,
 * 42703) or not readable (42501); the connection's outcomes as the other calls. Types are
 * not compared: PostgreSQL refuses a value its column cannot hold (no silent wrap), so a
 * narrower column shows as refused rows, quarantined with PostgreSQL's message. */
enum send_result postgres_check_table(struct postgres *pg, const char *table,
                                      const struct pg_rows *rows, const char *const *columns,
                                      struct send_outcome *out);

/* --deliver-create: when the table (looked up by to_regclass in the search_path) is
 * missing, runs ddl (one or more statements, ;-separated, in one implicit transaction, as
 * `ndingest schema NAME --postgres` prints them). SEND_STORED when it made the table;
 * SEND_TABLE when the table exists already (a column missing is not fixed by CREATE: the
 * dataset waits); a failed statement's outcome (its SQLSTATE's class, its message) else. */
enum send_result postgres_create_table(struct postgres *pg, const char *table, const char *ddl,
                                       struct send_outcome *out);

/* Moves the cursor row forward to (file, offset), never back, with no rows: past a row
 * the loop quarantined, or to the next file, so that the database's cursor stays the
 * truth. */
enum send_result postgres_skip(struct postgres *pg, const char *host, const char *dataset,
                               const char *file, long long offset, struct send_outcome *out);

/* The classification behind the calls above, exposed for tests: a SQLSTATE (5 characters;
 * NULL or "" when the error came with none, as a lost connection does). */
enum send_result postgres_classify(const char *sqlstate);

/* COPY's error context ("COPY t, line 3, column c: ...") for table: the line, 1 for the
 * first row; -1 when the context names no line of table's COPY. */
long postgres_copy_line(const char *context, const char *table);

#endif
