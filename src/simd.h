/* simd.h -- helpers shared by the byte-parallel hot loops (the JSON engine, the CSV encoder):
 * branch hints and SWAR, eight bytes at a time in a uint64_t. Header only, no state. */
#ifndef NDINGEST_SIMD_H
#define NDINGEST_SIMD_H

#include <stdint.h>
#include <string.h>

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* SWAR constants: 0x01 and 0x80 in every byte of a word. */
#define ONES 0x0101010101010101ULL
#define HIGH 0x8080808080808080ULL

/* Eight bytes from p (any alignment), p[0] in the lowest byte whatever the byte order, so
 * that the lowest flagged bit of a SWAR test is the first byte. */
static inline uint64_t load64(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    return x;
}

/* High bit set in each byte of x that equals c. Borrows can flag bytes above a true hit,
 * never below one, so only the lowest flag is exact; none set means no such byte. */
static inline uint64_t has_byte(uint64_t x, unsigned char c)
{
    uint64_t v = x ^ (ONES * c);
    return (v - ONES) & ~v & HIGH;
}

#endif
