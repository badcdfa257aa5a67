/* fingerprint.h -- a body's fingerprint: a 64-bit hash of its bytes, taken in the same pass
 * over them that finds its newlines, so that a keyed request pays for no second read. */
#ifndef NDINGEST_FINGERPRINT_H
#define NDINGEST_FINGERPRINT_H

#include <stddef.h>
#include <stdint.h>

/* The bytes go in 64-byte stripes counted from the body's first byte, whatever the pieces
 * they arrive in: each stripe into eight 64-bit accumulators as XXH3 does (the stripe
 * xored with a secret that moves 8 bytes a stripe, multiplied 32 by 32 bits, the stripe
 * itself added to the neighbouring lane), the accumulators scrambled after every 16th
 * stripe; at the end XXH3-64 of the accumulators, the last partial stripe and the length
 * (of the bytes alone for a body under 64 bytes).
 * doc/design.md ("The key and the fingerprint") has the definition; the key log's
 * records hold it. */
struct fingerprint {
    uint64_t acc[8];
    unsigned char carry[64]; /* the partial stripe */
    uint64_t total;          /* bytes so far */
    uint64_t stripes;        /* whole stripes so far */
    unsigned carry_len;
};

/* Called for each '\n' of a piece, at its offset in the piece, in order. */
typedef void (*fingerprint_newline_fn)(void *ctx, size_t at);

void fingerprint_init(struct fingerprint *f);
/* Hashes the next piece of the body, and reports its newlines to nl (when not NULL). */
void fingerprint_feed(struct fingerprint *f, const char *p, size_t n, fingerprint_newline_fn nl,
                      void *ctx);
uint64_t fingerprint_digest(const struct fingerprint *f);

/* The code path that hashes whole stripes: "avx512", "avx2" or "scalar", chosen by the CPU at
 * the first fingerprint_init; all give the same fingerprints. fingerprint_use forces one
 * (tests, benchmarks): 0, or -1 when this CPU lacks it. */
const char *fingerprint_path(void);
int fingerprint_use(const char *name);

#endif
