/* buf.h -- a growable byte buffer: pending CSV rows, quarantined lines, partial lines. */
#ifndef NDINGEST_BUF_H
#define NDINGEST_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Zero-filled is an empty buffer. It grows geometrically, so appending per row costs no
 * allocation once the buffer has reached its working size. */
struct buf {
    char *p;
    size_t len, cap;
};

/* Makes room for extra more bytes; 0, or -1 when memory is exhausted (buf unchanged). */
int buf_grow(struct buf *b, size_t extra);

static inline int buf_reserve(struct buf *b, size_t extra)
{
    return b->cap - b->len >= extra ? 0 : buf_grow(b, extra);
}

/* Appends n bytes; 0, or -1 when memory is exhausted. */
int buf_append(struct buf *b, const void *p, size_t n);

/* Releases the memory; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);

/* Writers for text built in room the caller has made (per request: a response's head, the
 * stats line), cheaper than snprintf. Each returns the new end. */
static inline char *put_bytes(char *w, const char *s, size_t n)
{
    memcpy(w, s, n);
    return w + n;
}

/* Copies s[0..n), n <= 16, as two overlapping fixed-size moves, which compile to a load and
 * a store each: cheaper than a memcpy call or a byte loop for the few bytes of a cell. Reads
 * and writes only those n bytes. w and s are apart, or w <= s within one buffer (unescaping in
 * place): every byte is loaded before a store can reach it. */
static inline char *put_upto16(char *w, const char *s, size_t n)
{
    if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(w, &a, 8);
        memcpy(w + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(w, &a, 4);
        memcpy(w + n - 4, &b, 4);
    } else if (n) { /* 1 to 3 bytes: the first, the middle and the last */
        w[0] = s[0];
        w[n >> 1] = s[n >> 1];
        w[n - 1] = s[n - 1];
    }
    return w + n;
}

/* Copies s[0..n) of any length: up to 32 bytes (a timestamp, say) without a call. */
static inline char *put_short(char *w, const char *s, size_t n)
{
    if (n > 32) {
        memcpy(w, s, n);
    } else if (n > 16) { /* two overlapping 16-byte moves */
        char a[16], b[16];
        memcpy(a, s, 16);
        memcpy(b, s + n - 16, 16);
        memcpy(w, a, 16);
        memcpy(w + n - 16, b, 16);
    } else {
        put_upto16(w, s, n);
    }
    return w + n;
}

/* v in decimal. */
static inline char *put_u64(char *w, uint64_t v)
{
    char digits[20];
    size_t n = 0;
    do
        digits[n++] = (char)('0' + v % 10);
    while (v /= 10);
    while (n)
        *w++ = digits[--n];
    return w;
}

/* A string literal, without its terminator. */
#define PUT(w, literal) put_bytes((w), (literal), sizeof(literal) - 1)

#endif
