/* batch.c -- cuts a day file into deterministic batches of whole rows, skipping void ranges. */
#include "batch.h"

#include <string.h>

/* The next row boundary in p[0..n) given the quote state *quoted at p: 1 with *at just past
 * its '\n' (and *quoted 0), or 0 when p holds none (*quoted is then the state at p + n).
 * memchr does the scanning: a row holds few quotes, so this is two passes over its bytes. */
static int next_boundary(const char *p, size_t n, int *quoted, size_t *at)
{
    size_t i = 0;
    const char *nl = NULL; /* the next '\n' at or after i, while known */
    while (i < n) {
        if (*quoted) {
            const char *q = memchr(p + i, '"', n - i);
            if (!q)
                return 0;
            i = (size_t)(q - p) + 1; /* closes the cell, or the first of a '""' pair */
            *quoted = 0;
            continue;
        }
        if (!nl || nl < p + i)
            nl = memchr(p + i, '\n', n - i);
        size_t lim = nl ? (size_t)(nl - p) : n;
        const char *q = memchr(p + i, '"', lim - i);
        if (q) {
            i = (size_t)(q - p) + 1;
            *quoted = 1;
            continue;
        }
        if (!nl)
            return 0;
        *at = lim + 1;
        return 1;
    }
    return 0;
}

int batch_cut(struct batch *b, const char *data, size_t len, uint64_t start, uint64_t max,
              const struct void_range *v, size_t nv)
{
    const uint64_t dend = start + len;
    const uint64_t limit = max > UINT64_MAX - start ? UINT64_MAX : start + max;
    b->start = b->end = start;
    b->rows = 0;
    b->void_bytes = 0;
    b->voids = 0;
    b->body.len = 0;
    uint64_t pos = start;
    size_t vi = 0;
    int full = 0;
    while (!full) {
        /* Void ranges reached at pos are skipped whole (their union: they may overlap),
         * once their end is within data; the byte at their end starts a row. */
        int pending = 0, skipped = 0;
        while (vi < nv && v[vi].start <= pos) {
            if (v[vi].end > pos) {
                if (v[vi].end > dend) { /* recorded, its '\n' not read yet: wait for it */
                    pending = 1;
                    break;
                }
                b->void_bytes += v[vi].end - pos;
                skipped = 1;
                pos = b->end = v[vi].end;
            }
            vi++;
        }
        b->voids += (size_t)skipped; /* a stretch of adjacent or overlapping ranges is one */
        if (pending || pos >= dend)
            break;
        /* A segment: the rows from pos to the next void range or the end of data. */
        uint64_t seg_end = vi < nv && v[vi].start < dend ? v[vi].start : dend;
        const char *p = data + (pos - start);
        size_t n = (size_t)(seg_end - pos), took = 0, at;
        int quoted = 0;
        while (took < n && next_boundary(p + took, n - took, &quoted, &at)) {
            if (b->rows > 0 && pos + took + at > limit) {
                full = 1;
                break;
            }
            took += at;
            b->rows++;
        }
        if (took && buf_append(&b->body, p, took))
            return -1;
        b->end = pos + took;
        if (full || seg_end == dend)
            break;
        /* A void range begins here. Its start is a row boundary by the record's invariant;
         * if bytes of an unfinished row precede it anyway, they cannot be a row: they are
         * left out with the range rather than sent. */
        if (took < n) {
            b->void_bytes += n - took;
            b->end = seg_end;
        }
        pos = seg_end;
    }
    return b->rows > 0 ? 1 : 0;
}

size_t batch_row_offset(const struct batch *b, size_t rows)
{
    size_t off = 0, at;
    int quoted = 0;
    for (size_t r = 0; r < rows && r < b->rows; r++) {
        if (!next_boundary(b->body.p + off, b->body.len - off, &quoted, &at))
            return b->body.len;
        off += at;
    }
    return off;
}

void batch_free(struct batch *b)
{
    buf_free(&b->body);
    b->rows = 0;
}
