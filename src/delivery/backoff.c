/* backoff.c -- when to try again after a failure: exponential, jittered, capped, and never
 * sooner than the server's Retry-After. */
#include "backoff.h"

void backoff_init(struct backoff *b, unsigned base_ms, unsigned cap_ms, uint64_t seed)
{
    b->base_ms = base_ms ? base_ms : 1;
    b->cap_ms = cap_ms < b->base_ms ? b->base_ms : cap_ms;
    b->failures = 0;
    /* xorshift's state must not be 0 (it would stay 0); splitmix the seed so that seeds
     * differing in one bit (two pids) start far apart. */
    uint64_t z = seed + 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    b->rng = z ? z : 0x2545f4914f6cdd1du;
}

static uint64_t next_random(struct backoff *b)
{
    uint64_t x = b->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    b->rng = x;
    return x * 0x2545f4914f6cdd1du;
}

unsigned backoff_next(struct backoff *b, unsigned retry_after_ms)
{
    if (b->failures < 64)
        b->failures++;
    /* d = min(cap, base * 2^(failures-1)), doubling in 64 bits so that it cannot wrap. */
    uint64_t d = b->base_ms;
    for (unsigned i = 1; i < b->failures && d < b->cap_ms; i++)
        d *= 2;
    if (d > b->cap_ms)
        d = b->cap_ms;
    /* Equal jitter: half the wait is certain (so waits still grow), half is random (so
     * hosts that failed together do not retry together). */
    uint64_t half = d / 2;
    uint64_t wait = half + next_random(b) % (d - half + 1);
    /* The server knows best when it will be ready: never sooner than it asked. */
    if (retry_after_ms > wait)
        wait = retry_after_ms;
    return (unsigned)wait;
}

void backoff_reset(struct backoff *b)
{
    b->failures = 0;
}
