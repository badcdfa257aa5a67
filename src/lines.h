/* lines.h -- line framing: cuts a body into lines as its pieces arrive, whatever the
 * piece boundaries, holding at most one partial line of at most max_line bytes. */
#ifndef NDINGEST_LINES_H
#define NDINGEST_LINES_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "fingerprint.h"

/* Called for each complete line, without its '\n'. The span is valid only during the call. */
typedef void (*line_fn)(void *ctx, const char *p, size_t n);
/* Called instead for a line longer than max_line, with its full length: it was skipped
 * to its end without being stored. */
typedef void (*oversize_fn)(void *ctx, uint64_t len);

struct line_handler {
    line_fn line;
    oversize_fn oversize;
    void *ctx;
};

/* Zero-filled plus max_line is a fresh framer. */
struct line_framer {
    size_t max_line;
    struct buf partial; /* the current line's first bytes, when it straddles pieces */
    uint64_t skipped;   /* bytes of an oversize line skipped so far; 0 when not skipping */
    int skipping;
};

void lines_init(struct line_framer *f, size_t max_line);
/* Frames the next piece: lines that end inside it go to h->line straight from p (no copy);
 * the unfinished tail is kept. 0, or -1 when memory is exhausted. */
int lines_feed(struct line_framer *f, const char *p, size_t n, const struct line_handler *h);
/* lines_feed that also hashes the piece into fp, in the same pass over its bytes that finds
 * its newlines (a keyed request's body: doc/design.md, "Idempotency-Key"). The same lines,
 * and the same fingerprint as fingerprint_feed's over the same bytes. */
int lines_feed_fp(struct line_framer *f, struct fingerprint *fp, const char *p, size_t n,
                  const struct line_handler *h);
/* The body has ended: a final line without '\n' counts. The framer is reset. */
int lines_end(struct line_framer *f, const struct line_handler *h);
/* Forgets any partial line (an aborted body); keeps memory for reuse. */
void lines_reset(struct line_framer *f);
void lines_free(struct line_framer *f);

#endif
