/* decode.c -- content decoding: gzip and deflate inflated by zlib through one window. */
#include "decode.h"

#include <stdlib.h>
#include <string.h>

#define WBITS_ZLIB 15
#define WBITS_RAW (-15)
#define WBITS_GZIP (15 + 16)

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int token_is(const char *p, size_t n, const char *word)
{
    size_t i = 0;
    for (; i < n && word[i]; i++)
        if (lower((unsigned char)p[i]) != word[i])
            return 0;
    return i == n && !word[i];
}

int decode_parse_encoding(const char *value, size_t len, enum content_encoding *enc)
{
    /* Blanks are optional whitespace (RFC 9110 OWS): spaces and tabs. */
    while (len && (value[0] == ' ' || value[0] == '\t'))
        value++, len--;
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len == 0 || token_is(value, len, "identity"))
        *enc = ENCODING_IDENTITY;
    else if (token_is(value, len, "gzip") || token_is(value, len, "x-gzip"))
        *enc = ENCODING_GZIP;
    else if (token_is(value, len, "deflate"))
        *enc = ENCODING_DEFLATE;
    else
        return -1; /* "br", stacked codings ("gzip, deflate"), anything unknown */
    return 0;
}

int decoder_begin(struct decoder *d, enum content_encoding enc)
{
    d->enc = enc;
    d->ended = 0;
    d->header_seen = 0;
    d->lead_len = 0;
    d->in_bytes = d->out_bytes = 0;
    if (enc == ENCODING_IDENTITY)
        return 0;
    if (!d->window) {
        d->window = malloc(DECODE_WINDOW);
        if (!d->window)
            return DECODE_ENOMEM;
    }
    /* deflate starts as zlib; the first two bytes may switch it to raw. Every mode uses a
     * 32 KiB window, so inflateReset2 keeps zlib's own window: no allocation after the
     * first body. */
    int wbits = enc == ENCODING_GZIP ? WBITS_GZIP : WBITS_ZLIB;
    if (!d->zlive) {
        memset(&d->z, 0, sizeof d->z);
        if (inflateInit2(&d->z, wbits) != Z_OK)
            return DECODE_ENOMEM;
        d->zlive = 1;
    } else if (inflateReset2(&d->z, wbits) != Z_OK) {
        return DECODE_ENOMEM;
    }
    return 0;
}

/* RFC 1950: compression method 8, a window of at most 32 KiB, and a check that makes the
 * first two bytes a multiple of 31. Anything else is taken for raw deflate, as browsers do. */
static int zlib_header(unsigned char cmf, unsigned char flg)
{
    return (cmf & 0x0f) == 8 && (cmf >> 4) <= 7 && ((unsigned)cmf * 256 + flg) % 31 == 0;
}

/* Inflates n bytes at p, handing every window's worth to out. */
static int inflate_piece(struct decoder *d, const unsigned char *p, size_t n, decode_fn out,
                         void *ctx)
{
    z_stream *z = &d->z;
    int full = 0; /* the last call filled the window: zlib may hold more output */
    while (n || full) {
        if (d->ended) {
            if (!n)
                break;
            /* More bytes after the end: another gzip member, or garbage after deflate. */
            if (d->enc != ENCODING_GZIP || inflateReset(z) != Z_OK)
                return DECODE_EDATA;
            d->ended = 0;
        }
        /* avail_in is a uInt: feed at most 1 GiB at a time. */
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        z->next_in = (unsigned char *)p;
        z->avail_in = chunk;
        z->next_out = d->window;
        z->avail_out = DECODE_WINDOW;
        int ret = inflate(z, Z_NO_FLUSH);
        size_t used = chunk - z->avail_in;
        size_t made = DECODE_WINDOW - z->avail_out;
        p += used;
        n -= used;
        full = z->avail_out == 0;
        if (made) {
            d->out_bytes += made;
            if (d->max_out && d->out_bytes > d->max_out)
                return DECODE_ETOOBIG;
            /* Judged against the input consumed so far (the rest of this piece is not):
             * a bomb is stopped within a window or so past the floor. */
            if (d->max_ratio && d->out_bytes > DECODE_RATIO_FLOOR &&
                d->out_bytes / d->max_ratio > d->in_bytes - n)
                return DECODE_ETOOBIG;
            int r = out(ctx, (const char *)d->window, made);
            if (r)
                return r;
        }
        switch (ret) {
        case Z_OK:
            break;
        case Z_STREAM_END:
            d->ended = 1;
            full = 0;
            break;
        case Z_BUF_ERROR: /* no progress possible: zlib wants more input */
            if (!used && !made)
                return 0;
            break;
        case Z_MEM_ERROR:
            return DECODE_ENOMEM;
        default: /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
            return DECODE_EDATA;
        }
    }
    return 0;
}

int decoder_feed(struct decoder *d, const char *p, size_t n, decode_fn out, void *ctx)
{
    d->in_bytes += n;
    if (d->enc == ENCODING_IDENTITY) {
        d->out_bytes += n;
        return n ? out(ctx, p, n) : 0;
    }
    const unsigned char *u = (const unsigned char *)p;
    if (d->enc == ENCODING_DEFLATE && !d->header_seen) {
        if (!n)
            return 0;
        if (!d->lead_len && n == 1) { /* cannot tell zlib from raw by one byte: hold it */
            d->lead = u[0];
            d->lead_len = 1;
            return 0;
        }
        unsigned char b0 = d->lead_len ? d->lead : u[0];
        unsigned char b1 = d->lead_len ? u[0] : u[1];
        if (!zlib_header(b0, b1) && inflateReset2(&d->z, WBITS_RAW) != Z_OK)
            return DECODE_ENOMEM;
        d->header_seen = 1;
        if (d->lead_len) {
            d->lead_len = 0;
            int r = inflate_piece(d, &d->lead, 1, out, ctx);
            if (r)
                return r;
        }
    }
    return inflate_piece(d, u, n, out, ctx);
}

int decoder_end(struct decoder *d)
{
    if (d->enc == ENCODING_IDENTITY || d->in_bytes == 0)
        return 0;
    return d->ended ? 0 : DECODE_EDATA;
}

void decoder_free(struct decoder *d)
{
    if (d->zlive)
        inflateEnd(&d->z);
    free(d->window);
    memset(d, 0, sizeof *d);
}
