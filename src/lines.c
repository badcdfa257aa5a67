/* lines.c -- line framing: cuts a body into lines as its pieces arrive. */
#include "lines.h"

#include <string.h>

void lines_init(struct line_framer *f, size_t max_line)
{
    memset(f, 0, sizeof *f);
    f->max_line = max_line;
}

int lines_feed(struct line_framer *f, const char *p, size_t n, const struct line_handler *h)
{
    const char *end = p + n;
    while (p < end) {
        /* The common case, with nothing kept from before: whole lines straight from this
         * piece, with fewer checks per line than the general step below, which takes the
         * first line that is cut off, too long, or completes a kept partial line. */
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
        size_t len = (size_t)((nl ? nl : end) - p);
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
        p = nl + 1;
    }
    return 0;
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
