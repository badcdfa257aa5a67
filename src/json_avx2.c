/* json_avx2.c -- the fast path with the line classified in 32-byte AVX2 vectors, one per
 * block; the walk compiled with BMI's tzcnt. For CPUs with AVX2, BMI and BMI2. */
#include "json_fast.h"

#ifdef JSON_HAVE_X86
#include <immintrin.h>

/* One 32-byte vector per block (the classifiers' contract in json_fast.h). */
__attribute__((target("avx2"))) static inline __attribute__((always_inline)) size_t
classify_avx2(const u8 *p, size_t n, uint32_t *quote, uint32_t *nondig, unsigned *flags)
{
    const __m256i vq = _mm256_set1_epi8('"'), vb = _mm256_set1_epi8('\\'),
                  vsp = _mm256_set1_epi8(0x20), voff = _mm256_set1_epi8((char)('0' + 0x80)),
                  vlim = _mm256_set1_epi8(-128 + 10);
#define DIGITS(v) _mm256_cmpgt_epi8(vlim, _mm256_sub_epi8((v), voff))
    __m256i odd = _mm256_setzero_si256(), bs = odd;
    size_t i = 0, k = 0;
    for (; n - i >= 32; i += 32, k++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + i));
        quote[k] = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, vq));
        nondig[k] = ~(uint32_t)_mm256_movemask_epi8(DIGITS(v));
        odd = _mm256_or_si256(odd, _mm256_cmpgt_epi8(vsp, v));
        bs = _mm256_or_si256(bs, _mm256_cmpeq_epi8(v, vb));
    }
    if (i < n) { /* the tail: the last 32 bytes, shifted so bit 0 is p[i] */
        unsigned sh = (unsigned)(i + 32 - n);
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + n - 32));
        quote[k] = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, vq)) >> sh;
        nondig[k] = ~((uint32_t)_mm256_movemask_epi8(DIGITS(v)) >> sh);
        odd = _mm256_or_si256(odd, _mm256_cmpgt_epi8(vsp, v));
        bs = _mm256_or_si256(bs, _mm256_cmpeq_epi8(v, vb));
        k++;
    }
#undef DIGITS
    *flags = (_mm256_testz_si256(bs, bs) ? 0 : FAST_BACKSLASH) |
             (_mm256_testz_si256(odd, odd) ? 0 : FAST_ODD);
    return k;
}

/* Lines of fewer than 32 bytes: classified from a copy padded with spaces, walked in place. */
__attribute__((target("avx2"))) static __attribute__((noinline)) size_t
classify_avx2_short(const u8 *p, size_t n, uint32_t *quote, uint32_t *nondig, unsigned *flags)
{
    u8 pad[32];
    memset(pad, ' ', sizeof pad);
    memcpy(pad, p, n);
    return classify_avx2(pad, sizeof pad, quote, nondig, flags);
}

__attribute__((target("avx2,bmi,bmi2"))) static int json_line_avx2(
    const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells)
{
    return fast_line(lk, p, n, cells, classify_avx2, classify_avx2_short, 0);
}

__attribute__((target("avx2,bmi,bmi2"))) static int json_line_avx2_paths(
    const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells)
{
    return fast_line(lk, p, n, cells, classify_avx2, classify_avx2_short, 1);
}

static int avx2_usable(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") &&
           __builtin_cpu_supports("bmi2");
}

const struct json_path json_path_avx2 = {"avx2", json_line_avx2, json_line_avx2_paths, avx2_usable};
#endif
