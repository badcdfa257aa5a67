/* json_avx512.c -- the fast path with the line classified in 64-byte AVX-512BW vectors,
 * straight into mask registers. For CPUs with AVX-512 F and BW (and AVX2, BMI, BMI2). */
#include "json_fast.h"

#ifdef JSON_HAVE_X86
#include <immintrin.h>

/* One 64-byte vector per two blocks, compared straight into mask registers (no movemask);
 * the tail by a masked load that reads only the line's bytes, the rest of the vector being
 * spaces, so that short lines need no padded copy (the classifiers' contract in
 * json_fast.h). Returns the words filled: a whole number of vectors. */
__attribute__((target("avx512f,avx512bw"))) static inline __attribute__((always_inline)) size_t
classify_avx512(const u8 *p, size_t n, uint32_t *quote, uint32_t *nondig, unsigned *flags)
{
    const __m512i vq = _mm512_set1_epi8('"'), vb = _mm512_set1_epi8('\\'),
                  vsp = _mm512_set1_epi8(0x20), v0 = _mm512_set1_epi8('0'),
                  v10 = _mm512_set1_epi8(10);
    __mmask64 odd = 0, bs = 0;
    size_t i = 0, w = 0;
    for (; i < n; i += 64, w += 2) {
        __m512i v = n - i >= 64 ? _mm512_loadu_si512((const void *)(p + i))
                                : _mm512_mask_loadu_epi8(vsp, ~0ULL >> (64 - (n - i)), p + i);
        uint64_t q = _mm512_cmpeq_epi8_mask(v, vq);
        uint64_t nd = ~(uint64_t)_mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, v0), v10);
        memcpy(quote + w, &q, 8);
        memcpy(nondig + w, &nd, 8);
        odd |= _mm512_cmplt_epi8_mask(v, vsp);
        bs |= _mm512_cmpeq_epi8_mask(v, vb);
    }
    *flags = (bs ? FAST_BACKSLASH : 0) | (odd ? FAST_ODD : 0);
    return w;
}

__attribute__((target("avx512f,avx512bw,avx2,bmi,bmi2"))) static int json_line_avx512(
    const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells)
{
    return fast_line(lk, p, n, cells, classify_avx512, classify_avx512, 0);
}

__attribute__((target("avx512f,avx512bw,avx2,bmi,bmi2"))) static int json_line_avx512_paths(
    const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells)
{
    return fast_line(lk, p, n, cells, classify_avx512, classify_avx512, 1);
}

static int avx512_usable(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") &&
           __builtin_cpu_supports("bmi2");
}

const struct json_path json_path_avx512 = {"avx512", json_line_avx512, json_line_avx512_paths,
                                           avx512_usable};
#endif
