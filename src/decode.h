/* decode.h -- content decoding: inflates gzip and deflate bodies incrementally with zlib,
 * through a fixed window, so memory does not grow with the body. */
#ifndef NDINGEST_DECODE_H
#define NDINGEST_DECODE_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

enum content_encoding {
    ENCODING_IDENTITY,
    ENCODING_GZIP,    /* RFC 1952; concatenated members are accepted */
    ENCODING_DEFLATE, /* RFC 1950 zlib format; raw RFC 1951 accepted too, as browsers do */
};

/* Parses a Content-Encoding header value (case-insensitive, surrounding blanks ignored;
 * "identity", "gzip", "x-gzip", "deflate"). 0, or -1 for anything else (answer 415). */
int decode_parse_encoding(const char *value, size_t len, enum content_encoding *enc);

/* Receives decoded bytes; a nonzero return stops decoding and is passed back. */
typedef int (*decode_fn)(void *ctx, const char *p, size_t n);

#define DECODE_WINDOW (64 * 1024)

/* Zero-filled is ready for decoder_begin. */
struct decoder {
    enum content_encoding enc;
    int zlive;             /* z is initialised */
    int ended;             /* the compressed stream reached its end */
    int header_seen;       /* deflate: zlib vs raw decided */
    unsigned char lead;    /* deflate: a first byte that came alone, until the second */
    unsigned char lead_len;
    uint64_t max_out;      /* inflated bytes allowed per body, 0 = no limit; kept by begin */
    uint32_t max_ratio;    /* inflated bytes allowed per compressed byte, 0 = no limit; kept by
                            * begin; judged once DECODE_RATIO_FLOOR bytes are out */
    uint64_t in_bytes, out_bytes;
    z_stream z;
    unsigned char *window; /* DECODE_WINDOW bytes, allocated once, kept across requests */
};

#define DECODE_EDATA (-1)  /* corrupt or truncated compressed data */
#define DECODE_ENOMEM (-2)
#define DECODE_ETOOBIG (-3) /* inflated past max_out, or past max_ratio times the input */
/* Small bodies may compress well past any ratio: the ratio is not judged below this. */
#define DECODE_RATIO_FLOOR (1024 * 1024)

/* Starts a body. 0, or DECODE_ENOMEM. */
int decoder_begin(struct decoder *d, enum content_encoding enc);
/* Decodes the next piece of the body and hands the result to out (identity: p itself).
 * 0, DECODE_EDATA, DECODE_ENOMEM, DECODE_ETOOBIG, or out's nonzero return (callers'
 * codes should therefore avoid -1..-3 or be positive). */
int decoder_feed(struct decoder *d, const char *p, size_t n, decode_fn out, void *ctx);
/* The body has ended: DECODE_EDATA when a compressed stream stopped short, else 0
 * (an empty body is accepted as empty whatever its encoding). */
int decoder_end(struct decoder *d);
void decoder_free(struct decoder *d);

#endif
