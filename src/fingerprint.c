/* fingerprint.c -- a body's fingerprint, hashed in the pass that finds its newlines. */
#include "fingerprint.h"

#include <string.h>

/* Inlined: it hashes only short inputs (the accumulators, a tiny body). */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "simd.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FP_HAVE_X86 1
#endif

/* The secret: 24 words, from splitmix64, so that no table of magic bytes is needed; stripe k
 * takes words (k mod 16) to (k mod 16) + 7, the scramble words 16 to 23. The accumulators
 * start from 8 more. XXH3's own constants would do as well: these are ours so that the
 * fingerprint's definition (doc/design.md) needs nothing but this file. */
static uint64_t secret[24], start[8];
#define PRIME32_1 0x9E3779B1u

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* ---- Whole stripes, three ways, one result ---- */

/* Hashes n whole stripes from p into acc (*k: stripes before them), and reports the
 * newlines among their bytes to nl, at base plus their offset from p. */
typedef void (*stripes_fn)(uint64_t acc[8], uint64_t *k, const unsigned char *p, size_t n,
                           size_t base, fingerprint_newline_fn nl, void *ctx);

/* The newlines of p[from, to), to nl at base plus their offset from p. */
static void newlines(const unsigned char *p, size_t from, size_t to, size_t base,
                     fingerprint_newline_fn nl, void *ctx)
{
    for (const unsigned char *q; from < to && (q = memchr(p + from, '\n', to - from));) {
        from = (size_t)(q - p);
        nl(ctx, base + from++);
    }
}

static void stripes_scalar(uint64_t acc[8], uint64_t *k, const unsigned char *p, size_t n,
                           size_t base, fingerprint_newline_fn nl, void *ctx)
{
    for (size_t s = 0; s < n; s++, p += 64, base += 64) {
        const uint64_t *key = secret + (*k & 15);
        for (int i = 0; i < 8; i++) {
            uint64_t d = load64(p + 8 * i), x = d ^ key[i];
            acc[i ^ 1] += d;
            acc[i] += (x & 0xFFFFFFFFu) * (x >> 32);
        }
        if ((++*k & 15) == 0)
            for (int i = 0; i < 8; i++) {
                uint64_t a = acc[i];
                a ^= a >> 47;
                a ^= secret[16 + i];
                acc[i] = a * PRIME32_1;
            }
        if (nl)
            newlines(p, 0, 64, base, nl, ctx);
    }
}

#ifdef FP_HAVE_X86
/* Two 32-byte halves per stripe: the lanes a stripe's bytes feed never cross a half. */
__attribute__((target("avx2"))) static inline __m256i acc_avx2(__m256i a, __m256i v, __m256i key)
{
    __m256i x = _mm256_xor_si256(v, key);
    a = _mm256_add_epi64(a, _mm256_mul_epu32(x, _mm256_srli_epi64(x, 32)));
    return _mm256_add_epi64(a, _mm256_shuffle_epi32(v, 0x4E)); /* the neighbouring lane's word */
}

__attribute__((target("avx2"))) static inline __m256i scramble_avx2(__m256i a, __m256i key)
{
    const __m256i prime = _mm256_set1_epi32((int)PRIME32_1);
    a = _mm256_xor_si256(_mm256_xor_si256(a, _mm256_srli_epi64(a, 47)), key);
    __m256i lo = _mm256_mul_epu32(a, prime), hi = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), prime);
    return _mm256_add_epi64(lo, _mm256_slli_epi64(hi, 32));
}

/* The newlines of a run of stripes, from their masks (bit b of masks[s]: byte b of stripe s
 * is a '\n'), reported after the run's hashing, so that its loop makes no call: a call
 * there kept the accumulators in memory, a store and a load on each stripe's chain. */
static void report(const uint64_t *masks, size_t n, size_t base, fingerprint_newline_fn nl,
                   void *ctx)
{
    for (size_t s = 0; s < n; s++, base += 64)
        for (uint64_t m = masks[s]; m; m &= m - 1)
            nl(ctx, base + (size_t)__builtin_ctzll(m));
}

/* Stripes per run: the masks on the stack, the run's bytes still in L1 for the framer. */
#define RUN 64

__attribute__((target("avx2"))) static void stripes_avx2(uint64_t acc[8], uint64_t *k,
                                                         const unsigned char *p, size_t n,
                                                         size_t base, fingerprint_newline_fn nl,
                                                         void *ctx)
{
    __m256i a0 = _mm256_loadu_si256((const __m256i *)acc),
            a1 = _mm256_loadu_si256((const __m256i *)(acc + 4));
    const __m256i vnl = _mm256_set1_epi8('\n');
    uint64_t masks[RUN], kk = *k;
    while (n) {
        size_t run = n < RUN ? n : RUN;
        for (size_t s = 0; s < run; s++) {
            const unsigned char *q = p + 64 * s;
            __m256i v0 = _mm256_loadu_si256((const __m256i *)q),
                    v1 = _mm256_loadu_si256((const __m256i *)(q + 32));
            const uint64_t *key = secret + (kk & 15);
            a0 = acc_avx2(a0, v0, _mm256_loadu_si256((const __m256i *)key));
            a1 = acc_avx2(a1, v1, _mm256_loadu_si256((const __m256i *)(key + 4)));
            if (UNLIKELY((++kk & 15) == 0)) {
                a0 = scramble_avx2(a0, _mm256_loadu_si256((const __m256i *)(secret + 16)));
                a1 = scramble_avx2(a1, _mm256_loadu_si256((const __m256i *)(secret + 20)));
            }
            masks[s] = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v0, vnl)) |
                       (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v1, vnl)) << 32;
        }
        if (nl) {
            _mm256_storeu_si256((__m256i *)acc, a0); /* the calls may take a while: kept */
            _mm256_storeu_si256((__m256i *)(acc + 4), a1);
            report(masks, run, base, nl, ctx);
        }
        p += 64 * run;
        base += 64 * run;
        n -= run;
    }
    *k = kk;
    _mm256_storeu_si256((__m256i *)acc, a0);
    _mm256_storeu_si256((__m256i *)(acc + 4), a1);
}

__attribute__((target("avx512f,avx512bw"))) static void stripes_avx512(
    uint64_t acc[8], uint64_t *k, const unsigned char *p, size_t n, size_t base,
    fingerprint_newline_fn nl, void *ctx)
{
    __m512i a = _mm512_loadu_si512(acc);
    const __m512i vnl = _mm512_set1_epi8('\n'), prime = _mm512_set1_epi32((int)PRIME32_1),
                  skey = _mm512_loadu_si512(secret + 16);
    uint64_t masks[RUN], kk = *k;
    while (n) {
        size_t run = n < RUN ? n : RUN;
        for (size_t s = 0; s < run; s++) {
            __m512i v = _mm512_loadu_si512(p + 64 * s);
            __m512i x = _mm512_xor_si512(v, _mm512_loadu_si512(secret + (kk & 15)));
            a = _mm512_add_epi64(a, _mm512_mul_epu32(x, _mm512_srli_epi64(x, 32)));
            a = _mm512_add_epi64(a, _mm512_shuffle_epi32(v, (_MM_PERM_ENUM)0x4E));
            if (UNLIKELY((++kk & 15) == 0)) {
                a = _mm512_xor_si512(_mm512_xor_si512(a, _mm512_srli_epi64(a, 47)), skey);
                a = _mm512_add_epi64(_mm512_mul_epu32(a, prime),
                                     _mm512_slli_epi64(_mm512_mul_epu32(_mm512_srli_epi64(a, 32), prime), 32));
            }
            masks[s] = _mm512_cmpeq_epi8_mask(v, vnl);
        }
        if (nl) {
            _mm512_storeu_si512(acc, a);
            report(masks, run, base, nl, ctx);
        }
        p += 64 * run;
        base += 64 * run;
        n -= run;
    }
    *k = kk;
    _mm512_storeu_si512(acc, a);
}
#endif

static const struct {
    const char *name;
    stripes_fn fn;
} paths[] = {
#ifdef FP_HAVE_X86
    {"avx512", stripes_avx512},
    {"avx2", stripes_avx2},
#endif
    {"scalar", stripes_scalar},
};
static int chosen = -1;

static int usable(const char *name)
{
#ifdef FP_HAVE_X86
    __builtin_cpu_init();
    if (!strcmp(name, "avx512"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    if (!strcmp(name, "avx2"))
        return __builtin_cpu_supports("avx2");
#endif
    return !strcmp(name, "scalar");
}

static void setup(void)
{
    if (chosen >= 0)
        return;
    uint64_t x = 0x6E6467696E676573ULL; /* "ndingest" */
    for (int i = 0; i < 24; i++)
        secret[i] = splitmix64(&x);
    for (int i = 0; i < 8; i++)
        start[i] = splitmix64(&x);
    for (chosen = 0; !usable(paths[chosen].name); chosen++)
        ;
}

const char *fingerprint_path(void)
{
    setup();
    return paths[chosen].name;
}

int fingerprint_use(const char *name)
{
    setup();
    for (int i = 0; i < (int)(sizeof paths / sizeof paths[0]); i++)
        if (!strcmp(paths[i].name, name) && usable(name)) {
            chosen = i;
            return 0;
        }
    return -1;
}

/* ---- The stream ---- */

void fingerprint_init(struct fingerprint *f)
{
    setup();
    memcpy(f->acc, start, sizeof f->acc);
    f->total = f->stripes = 0;
    f->carry_len = 0;
}

void fingerprint_feed(struct fingerprint *f, const char *piece, size_t n, fingerprint_newline_fn nl,
                      void *ctx)
{
    const unsigned char *p = (const unsigned char *)piece;
    setup(); /* a branch: fingerprint_init has done it, unless the caller skipped it */
    stripes_fn stripes = paths[chosen].fn;
    size_t i = 0;
    f->total += n;
    if (f->carry_len) { /* first the stripe the last piece began */
        i = 64 - f->carry_len < n ? 64 - f->carry_len : n;
        memcpy(f->carry + f->carry_len, p, i);
        if (nl)
            newlines(p, 0, i, 0, nl, ctx);
        f->carry_len += (unsigned)i;
        if (f->carry_len < 64)
            return;
        stripes(f->acc, &f->stripes, f->carry, 1, 0, NULL, NULL);
        f->carry_len = 0;
    }
    size_t whole = (n - i) / 64;
    if (whole)
        stripes(f->acc, &f->stripes, p + i, whole, i, nl, ctx);
    i += whole * 64;
    if (i < n) {
        memcpy(f->carry, p + i, n - i);
        f->carry_len = (unsigned)(n - i);
        if (nl)
            newlines(p, i, n, 0, nl, ctx);
    }
}

static void put64(unsigned char *b, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(b, &v, 8);
}

uint64_t fingerprint_digest(const struct fingerprint *f)
{
    if (!f->stripes) /* under 64 bytes (most small requests): no accumulator to fold in */
        return XXH3_64bits(f->carry, f->carry_len);
    unsigned char b[64 + 64 + 8];
    for (int i = 0; i < 8; i++)
        put64(b + 8 * i, f->acc[i]);
    memcpy(b + 64, f->carry, f->carry_len);
    put64(b + 64 + f->carry_len, f->total);
    return XXH3_64bits(b, 64 + f->carry_len + 8);
}
