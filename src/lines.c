/* lines.c -- line framing: cuts a body into lines as its pieces arrive. */
#include "lines.h"

#include <string.h>

void lines_init(struct line_framer *f, size_t max_line)
{
    memset(f, 0, sizeof *f);
    f->max_line = max_line;
}

/* One run of bytes up to a '\n' (nl) or to the piece's end: the general step, for a line
 * that is cut off, too long, or completes a kept partial line. 0, or -1 out of memory. */
static int segment(struct line_framer *f, const char *p, size_t len, int nl,
                   const struct line_handler *h)
{
    if (!f->skipping) {
        if (f->partial.len + len > f->max_line) {
            /* Too long: forget what was kept and skip to the next '\n'. */
            f->skipping = 1;
            f->skipped = f->partial.len;
            f->partial.len = 0;
        } else if (!nl) {
            return buf_append(&f->partial, p, len);
        } else if (f->partial.len) {
            if (buf_append(&f->partial, p, len))
                return -1;
            h->line(h->ctx, f->partial.p, f->partial.len);
            f->partial.len = 0;
        } else {
            h->line(h->ctx, p, len);
        }
    }
    if (f->skipping) {
        f->skipped += len;
        if (!nl)
            return 0;
        h->oversize(h->ctx, f->skipped);
        f->skipping = 0;
        f->skipped = 0;
    }
    return 0;
}

int lines_feed(struct line_framer *f, const char *p, size_t n, const struct line_handler *h)
{
    const char *end = p + n;
    while (p < end) {
        /* The common case, with nothing kept from before: whole lines straight from this
         * piece, with fewer checks per line than the general step. */
        if (!f->skipping && !f->partial.len) {
            for (;;) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                if (!nl || (size_t)(nl - p) > f->max_line)
                    break;
                h->line(h->ctx, p, (size_t)(nl - p));
                p = nl + 1;
            }
            if (p >= end)
                return 0;
        }
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (segment(f, p, (size_t)((nl ? nl : end) - p), nl != NULL, h))
            return -1;
        if (!nl)
            return 0;
        p = nl + 1;
    }
    return 0;
}

/* lines_feed_fp's walk: where the current line began in the piece. */
struct scan {
    struct line_framer *f;
    const struct line_handler *h;
    const char *p;
    size_t from;
    int err;
};

static void on_newline(void *ctx, size_t at)
{
    struct scan *s = ctx;
    struct line_framer *f = s->f;
    const char *line = s->p + s->from;
    size_t len = at - s->from;
    s->from = at + 1;
    if (s->err)
        return; /* the body has failed: nothing more to frame, only to hash */
    if (!f->skipping && !f->partial.len && len <= f->max_line)
        s->h->line(s->h->ctx, line, len);
    else if (segment(f, line, len, 1, s->h))
        s->err = -1;
}

int lines_feed_fp(struct line_framer *f, struct fingerprint *fp, const char *p, size_t n,
                  const struct line_handler *h)
{
    struct scan s = {f, h, p, 0, 0};
    fingerprint_feed(fp, p, n, on_newline, &s);
    if (!s.err && s.from < n && segment(f, p + s.from, n - s.from, 0, h))
        s.err = -1;
    return s.err;
}

int lines_end(struct line_framer *f, const struct line_handler *h)
{
    if (f->skipping)
        h->oversize(h->ctx, f->skipped);
    else if (f->partial.len)
        h->line(h->ctx, f->partial.p, f->partial.len);
    lines_reset(f);
    return 0;
}

void lines_reset(struct line_framer *f)
{
    f->partial.len = 0;
    f->skipping = 0;
    f->skipped = 0;
}

void lines_free(struct line_framer *f)
{
    buf_free(&f->partial);
    lines_reset(f);
}
