/* destination.h -- what delivery learns from a database after a batch: the outcome every
 * destination (ClickHouse, PostgreSQL) reports in the same terms, so that the delivery
 * loop decides alike whatever the database. */
#ifndef NDINGEST_DESTINATION_H
#define NDINGEST_DESTINATION_H

enum send_result {
    SEND_STORED,  /* the batch is stored (or was already: deduplicated) */
    SEND_RETRY,   /* not stored, or not known to be: send the same bytes again later
                   * (connection refused or cut, timeout, 5xx with a transient code,
                   * too many parts, read-only table, memory limit, Retry-After) */
    SEND_REFUSED, /* the database refused the data itself (a cell it cannot parse, an Enum
                   * value it does not list): retrying the same bytes can never succeed;
                   * split the batch to find the refused rows */
    SEND_TABLE,   /* the table is missing or cannot take these rows (no such table or
                   * column, a type mismatch found at insert): the dataset waits until the
                   * table is fixed (looked at again every --deliver-retry-max
                   * seconds and at SIGHUP), the others go on */
    SEND_CONFIG,  /* the destination refuses us (authentication, no such database): every
                   * dataset waits, retried with backoff, and the log says why */
};

struct send_outcome {
    enum send_result result;
    unsigned retry_after_ms; /* SEND_RETRY: the server's Retry-After, 0 if it gave none */
    int code;                /* the database's error code (ClickHouse's Code: N), 0 if none */
    int http_status;         /* 0 when no response was had */
    /* SEND_REFUSED: the refused row's index within the batch, 0 for its first row, when the
     * database says which (PostgreSQL's COPY error context "line N" is row N - 1), so the
     * loop quarantines it without splitting; -1 when unknown (split to find it). Every
     * destination sets it: a zeroed outcome would name row 0. */
    long refused_row;
    char message[512];       /* the database's error, one line, credentials never in it */
};

#endif
