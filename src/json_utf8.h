/* json_utf8.h -- the fast paths' UTF-8 check of a whole line in vectors (Keiser and Lemire,
 * "Validating UTF-8 in less than one instruction per byte", 2021: simdjson's and simdutf's
 * "lookup" algorithm): the three tables, shared by the AVX2 and AVX-512 checks in
 * json_avx2.c and json_avx512.c. The scalar check (fast_text_ok, json_utf8_seq) is the
 * definition; these give its verdict on every input.
 *
 * Every two-byte window (previous byte, current byte) is classified by three 16-entry
 * lookups, on the previous byte's high and low nibbles and the current byte's high nibble.
 * Each table entry is a set of the error classes that byte can take part in; the three sets
 * are and-ed, so a bit survives only when all three bytes agree on an error. What two bytes
 * cannot see (a third or fourth byte that must be a continuation, or one that must not) is
 * the check "the byte two (three) back is a 3 (4) byte lead", which must coincide exactly
 * with the TWO_CONTS bit: a continuation after a continuation is right only there. A
 * sequence still open at the end of the input is an error too (UTF8_INCOMPLETE). */
#ifndef NDINGEST_JSON_UTF8_H
#define NDINGEST_JSON_UTF8_H

#include <stdint.h>

/* The error classes: a bit each, but U8_LEAD4_1000 holds two that the previous byte's low
 * nibble tells apart (11110000 is overlong before 1000____, 11110101 and up too large). */
#define U8_TOO_SHORT (1u << 0)      /* a lead, then not a continuation (11______ 0_______/11______) */
#define U8_TOO_LONG (1u << 1)       /* ASCII, then a continuation (0_______ 10______) */
#define U8_OVERLONG_3 (1u << 2)     /* 11100000 100_____ */
#define U8_TOO_LARGE (1u << 3)      /* 11110100 1001____, 101_____; 11110101+ 10______ */
#define U8_SURROGATE (1u << 4)      /* 11101101 101_____ */
#define U8_OVERLONG_2 (1u << 5)     /* 1100000_ 10______ */
#define U8_LEAD4_1000 (1u << 6)     /* 11110000 1000____; 11110101+ 1000____ */
#define U8_TWO_CONTS (1u << 7)      /* a continuation after a continuation (right only as a
                                     * sequence's third or fourth byte) */
#define U8_CARRY (U8_TOO_SHORT | U8_TOO_LONG | U8_TWO_CONTS)

/* By the previous byte's high nibble. */
static const uint8_t utf8_prev_high[16] __attribute__((aligned(16))) = {
    U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG,
    U8_TOO_LONG, /* 0_______: ASCII */
    U8_TWO_CONTS, U8_TWO_CONTS, U8_TWO_CONTS, U8_TWO_CONTS, /* 10______: continuation */
    U8_TOO_SHORT | U8_OVERLONG_2,                           /* 1100____ */
    U8_TOO_SHORT,                                           /* 1101____ */
    U8_TOO_SHORT | U8_OVERLONG_3 | U8_SURROGATE,            /* 1110____ */
    U8_TOO_SHORT | U8_TOO_LARGE | U8_LEAD4_1000, /* 1111____ */
};

/* By the previous byte's low nibble. */
static const uint8_t utf8_prev_low[16] __attribute__((aligned(16))) = {
    U8_CARRY | U8_OVERLONG_3 | U8_OVERLONG_2 | U8_LEAD4_1000, /* ____0000 */
    U8_CARRY | U8_OVERLONG_2,                                 /* ____0001 */
    U8_CARRY,
    U8_CARRY,
    U8_CARRY | U8_TOO_LARGE,                     /* ____0100 */
    U8_CARRY | U8_TOO_LARGE | U8_LEAD4_1000, /* ____0101 and up */
    U8_CARRY | U8_TOO_LARGE | U8_LEAD4_1000,
    U8_CARRY | U8_TOO_LARGE | U8_LEAD4_1000,
    U8_CARRY | U8_TOO_LARGE | U8_LEAD4_1000,
    U8_CARRY | U8_TOO_LARGE | U8_LEAD4_1000,
    U8_CARRY | U8_TOO_LARGE | U8_LEAD4_1000,
    U8_CARRY | U8_TOO_LARGE | U8_LEAD4_1000,
    U8_CARRY | U8_TOO_LARGE | U8_LEAD4_1000,
    U8_CARRY | U8_TOO_LARGE | U8_LEAD4_1000 | U8_SURROGATE, /* ____1101 */
    U8_CARRY | U8_TOO_LARGE | U8_LEAD4_1000,
    U8_CARRY | U8_TOO_LARGE | U8_LEAD4_1000,
};

/* By the current byte's high nibble. */
static const uint8_t utf8_cur_high[16] __attribute__((aligned(16))) = {
    U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT,
    U8_TOO_SHORT, U8_TOO_SHORT, /* 0_______ */
    U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS | U8_OVERLONG_3 | U8_LEAD4_1000, /* 1000____ */
    U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS | U8_OVERLONG_3 | U8_TOO_LARGE, /* 1001____ */
    U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS | U8_SURROGATE | U8_TOO_LARGE,  /* 101_____ */
    U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS | U8_SURROGATE | U8_TOO_LARGE,
    U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, /* 11______ */
};

/* A byte above these, in a block's last three places, opens a sequence that the
 * block does not finish (a 4-byte lead in the last three, a 3-byte lead in the last two, a
 * 2-byte lead last): the next block must, and the input's end must not come first. The
 * subtrahends of a saturating subtraction, so 0xFF elsewhere. */
#define U8_INCOMPLETE_3 (0xF0 - 1)
#define U8_INCOMPLETE_2 (0xE0 - 1)
#define U8_INCOMPLETE_1 (0xC0 - 1)

#endif
