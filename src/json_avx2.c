/* json_avx2.c -- the flat-line fast path with the line classified in 32-byte AVX2 vectors,
 * one per block; the walk compiled with BMI's tzcnt. For CPUs with AVX2, BMI and BMI2. */
#include "json_flat.h"

#ifdef JSON_HAVE_X86
#include <immintrin.h>

/* One 32-byte vector per block (the masks' contract in json_flat.h). */
__attribute__((target("avx2"))) static size_t classify_avx2(const u8 *p, size_t n,
                                                             uint32_t *quote, uint32_t *nondig)
{
    const __m256i vq = _mm256_set1_epi8('"'), vb = _mm256_set1_epi8('\\'),
                  vsp = _mm256_set1_epi8(0x20), voff = _mm256_set1_epi8((char)('0' + 0x80)),
                  vlim = _mm256_set1_epi8(-128 + 10);
#define DIGITS(v) _mm256_cmpgt_epi8(vlim, _mm256_sub_epi8((v), voff))
    __m256i bad = _mm256_setzero_si256();
    size_t i = 0, k = 0;
    for (; n - i >= 32; i += 32, k++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + i));
        quote[k] = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, vq));
        nondig[k] = ~(uint32_t)_mm256_movemask_epi8(DIGITS(v));
        bad = _mm256_or_si256(bad, _mm256_or_si256(_mm256_cmpeq_epi8(v, vb),
                                                   _mm256_cmpgt_epi8(vsp, v)));
    }
    if (i < n) { /* the tail: the last 32 bytes, shifted so bit 0 is p[i] */
        unsigned sh = (unsigned)(i + 32 - n);
        __m256i v = _mm256_loadu_si256((const __m256i *)(p + n - 32));
        quote[k] = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, vq)) >> sh;
        nondig[k] = ~((uint32_t)_mm256_movemask_epi8(DIGITS(v)) >> sh);
        bad = _mm256_or_si256(bad, _mm256_or_si256(_mm256_cmpeq_epi8(v, vb),
                                                   _mm256_cmpgt_epi8(vsp, v)));
        k++;
    }
#undef DIGITS
    return _mm256_testz_si256(bad, bad) ? k : 0;
}

__attribute__((target("avx2,bmi,bmi2"))) static int json_line_avx2(
    const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells)
{
    return flat_line(lk, p, n, cells, classify_avx2);
}

static int avx2_usable(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") &&
           __builtin_cpu_supports("bmi2");
}

const struct json_path json_path_avx2 = {"avx2", json_line_avx2, avx2_usable};
#endif
