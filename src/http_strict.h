/* http_strict.h -- strict HTTP/1.1 request framing, checked ahead of llhttp: every CRLF,
 * the request line's version, header names, the body's length and the chunk framing.
 *
 * llhttp 8.1 (Debian 12) does not look at the byte after the CR that ends the header block
 * nor at the two bytes after chunk data, so `\r\rX` or chunk data followed by `XX` frame a
 * request where a proxy in front may see another (request smuggling). This scanner walks
 * the same bytes first, as a second, stricter framer that only says how far the stream is
 * well framed; llhttp is then given only that far. Bodies are skipped by length, never
 * walked, so the cost per body byte is nil; header bytes are looked at once.
 *
 * What it refuses (status 400 unless said): a bare LF or a CR not followed by LF anywhere a
 * line ends (RFC 9112 §2.2 lets a recipient accept bare LF; a server behind proxies that
 * may frame it otherwise does not); a request line that is not `method SP target SP
 * HTTP/d.d`; an empty header name, whitespace before the colon (§5.1), obs-fold (§5.2),
 * control bytes in a value; a Content-Length that is not one run of digits, or given twice
 * (§6.3); Transfer-Encoding with Content-Length (§6.3) or in an HTTP/1.0 request (§6.1); any
 * transfer coding but a lone `chunked` (501, §6.1); an HTTP/1.1 request without a Host, or
 * any with two (§3.2); a tab in a Connection header (llhttp 8.1 misses a "close" before a
 * tab, and would read on, which §9.6 forbids); a chunk size that is not hex, chunk
 * extensions outside their grammar (§7.1.1), chunk data not followed by CRLF, a malformed
 * trailer field. One CRLF before a request line is ignored (§2.2). */
#ifndef NDINGEST_HTTP_STRICT_H
#define NDINGEST_HTTP_STRICT_H

#include <stddef.h>
#include <stdint.h>

/* Zero-filled (or http_strict_init) is the start of a connection's stream. The caller owns
 * it; it holds no pointer into the bytes it was given. */
struct http_strict {
    uint64_t remaining;   /* body or chunk bytes still to skip; chunk size being read */
    uint64_t length;      /* this message's Content-Length */
    size_t ahead;         /* bytes checked beyond the caller's parse position */
    const char *error;    /* why the framing is broken (static text), or NULL */
    uint16_t status;      /* 400 or 501 once error is set, else 0 */
    uint8_t state;
    uint8_t trailer;      /* header lines being read are a chunked body's trailer */
    uint8_t header;       /* which framing header the current line is (name match state) */
    uint8_t match;        /* bytes of the name or value matched so far */
    uint8_t value;        /* position in the current framing header's value */
    uint8_t flags;        /* what this message's header block has said */
    uint8_t version;      /* 10 * major + minor of the request line */
};

void http_strict_init(struct http_strict *s);

/* p[0..n) are the next bytes the caller is about to parse, starting at its parse position;
 * their first s->ahead were checked by an earlier call (the caller stopped before them)
 * and are not checked again. Returns how many of them are well framed: n, or fewer when
 * the byte at the returned offset breaks the framing (s->status and s->error say how;
 * every later call returns the same place). */
size_t http_strict_check(struct http_strict *s, const char *p, size_t n);

/* The caller has parsed n more bytes (no more than the checks returned). */
void http_strict_consumed(struct http_strict *s, size_t n);

/* The path of a request target, for routing: an absolute-form target (`http://host/p?q`,
 * which RFC 9112 §3.2.2 requires servers to accept) gives its path and query (`/p?q`, or
 * "/" for an empty path); any other target is returned as it is. Points into t. */
const char *http_strict_path(const char *t, size_t n, size_t *len);

#endif
