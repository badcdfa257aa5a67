/* backoff.h -- when to try again after a failure: exponential, jittered, capped, and never
 * sooner than the server's Retry-After. */
#ifndef NDINGEST_BACKOFF_H
#define NDINGEST_BACKOFF_H

#include <stdint.h>

struct backoff {
    unsigned base_ms, cap_ms; /* the first wait's bound, and the most any wait can be */
    unsigned failures;        /* in a row, since the last success */
    uint64_t rng;             /* xorshift state: seeded per process so hosts spread out */
};

void backoff_init(struct backoff *b, unsigned base_ms, unsigned cap_ms, uint64_t seed);
/* One more failure: the milliseconds to wait, drawn from [d/2, d] where d = min(cap,
 * base * 2^(failures-1)) ("equal jitter"), then raised to retry_after_ms when the server
 * asked for more (0: it did not ask). cap_ms bounds the draw, not the server's
 * Retry-After: the caller bounds what it accepts from a server (clickhouse.c: one hour). */
unsigned backoff_next(struct backoff *b, unsigned retry_after_ms);
void backoff_reset(struct backoff *b);

#endif
