/* json_avx512.c -- the fast path with the line classified in 64-byte AVX-512BW vectors,
 * straight into mask registers. For CPUs with AVX-512 F and BW (and AVX2, BMI, BMI2). */
#include "json_fast.h"
#include "json_utf8.h"

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

/* A line with a backslash: its escape masks (fast_escape_fn, json_fast.h), two words per
 * 64-byte vector, the nameable bytes and hex digits by two nibble lookups; the tail by a
 * masked load. */
__attribute__((target("avx512f,avx512bw"))) static size_t
escapes_avx512(const u8 *p, size_t n, struct fast_escape_masks *m)
{
    const __m512i vsp = _mm512_set1_epi8(' '), vb = _mm512_set1_epi8('\\'),
                  vu = _mm512_set1_epi8('u'), nib = _mm512_set1_epi8(0x0F),
                  named_bits = _mm512_set1_epi8(ESCAPE_NAMED_BITS),
                  hex_bits = _mm512_set1_epi8(ESCAPE_HEX_BITS),
                  t_low = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)escape_low_nibble)),
                  t_high = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)escape_high_nibble));
    size_t w = 0;
    for (size_t i = 0; i < n; i += 64, w += 2) {
        __m512i v = n - i >= 64 ? _mm512_loadu_si512((const void *)(p + i))
                                : _mm512_mask_loadu_epi8(vsp, ~0ULL >> (64 - (n - i)), p + i);
        __m512i c = _mm512_and_si512(
            _mm512_shuffle_epi8(t_low, _mm512_and_si512(v, nib)),
            _mm512_shuffle_epi8(t_high, _mm512_and_si512(_mm512_srli_epi16(v, 4), nib)));
        uint64_t b = _mm512_cmpeq_epi8_mask(v, vb), uu = _mm512_cmpeq_epi8_mask(v, vu),
                 nm = _mm512_test_epi8_mask(c, named_bits), hx = _mm512_test_epi8_mask(c, hex_bits);
        memcpy(m->bs + w, &b, 8);
        memcpy(m->u + w, &uu, 8);
        memcpy(m->named + w, &nm, 8);
        memcpy(m->hex + w, &hx, 8);
    }
    return w;
}

/* The bytes of cur moved N places later, the places freed filled by the last N bytes of prev:
 * the lanes moved up one 16-byte lane (prev's last lane first), then each lane joined to
 * its successor's bytes. */
#define PREV_AVX512(cur, up, N) _mm512_alignr_epi8((cur), (up), 16 - (N))

/* text_ok_avx2's check on 64 bytes at a time; the last partial block by a masked load that
 * fills the rest with spaces (the check's contract in json_fast.h). */
__attribute__((target("avx512f,avx512bw"))) static int text_ok_avx512(const u8 *p, size_t n)
{
    const __m512i t_prev_high = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)utf8_prev_high)),
                  t_prev_low = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)utf8_prev_low)),
                  t_cur_high = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)utf8_cur_high)),
                  nib = _mm512_set1_epi8(0x0F), vsp = _mm512_set1_epi8(' '),
                  v80 = _mm512_set1_epi8((char)0x80), lead3 = _mm512_set1_epi8((char)(0xE0 - 0x80)),
                  lead4 = _mm512_set1_epi8((char)(0xF0 - 0x80)),
                  open_max = _mm512_set_epi64((long long)(0xBFDFEFFFFFFFFFFFULL), -1, -1, -1, -1, -1, -1, -1);
    __m512i prev = _mm512_setzero_si512(), err = prev, open = prev;
    __mmask64 ctl = 0;
    for (size_t i = 0; i < n; i += 64) {
        __m512i v = n - i >= 64 ? _mm512_loadu_si512((const void *)(p + i))
                                : _mm512_mask_loadu_epi8(vsp, ~0ULL >> (64 - (n - i)), p + i);
        ctl |= _mm512_cmplt_epu8_mask(v, _mm512_set1_epi8(0x20));
        if (LIKELY(!_mm512_movepi8_mask(v))) {
            err = _mm512_or_si512(err, open);
            open = _mm512_setzero_si512();
        } else {
            __m512i up = _mm512_alignr_epi64(v, prev, 6);
            __m512i p1 = PREV_AVX512(v, up, 1);
            __m512i sc = _mm512_and_si512(
                _mm512_and_si512(
                    _mm512_shuffle_epi8(t_prev_high, _mm512_and_si512(_mm512_srli_epi16(p1, 4), nib)),
                    _mm512_shuffle_epi8(t_prev_low, _mm512_and_si512(p1, nib))),
                _mm512_shuffle_epi8(t_cur_high, _mm512_and_si512(_mm512_srli_epi16(v, 4), nib)));
            __m512i must = _mm512_or_si512(_mm512_subs_epu8(PREV_AVX512(v, up, 2), lead3),
                                           _mm512_subs_epu8(PREV_AVX512(v, up, 3), lead4));
            err = _mm512_or_si512(err, _mm512_xor_si512(_mm512_and_si512(must, v80), sc));
            open = _mm512_subs_epu8(v, open_max);
        }
        prev = v;
    }
    err = _mm512_or_si512(err, open);
    return !ctl && !_mm512_test_epi8_mask(err, err);
}
#undef PREV_AVX512

__attribute__((target("avx512f,avx512bw,avx2,bmi,bmi2"))) static int json_line_avx512(
    const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells)
{
    return fast_line(lk, p, n, cells, classify_avx512, classify_avx512, text_ok_avx512, escapes_avx512, 0);
}

__attribute__((target("avx512f,avx512bw,avx2,bmi,bmi2"))) static int json_line_avx512_paths(
    const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells)
{
    return fast_line(lk, p, n, cells, classify_avx512, classify_avx512, text_ok_avx512, escapes_avx512, 1);
}

static int avx512_usable(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") &&
           __builtin_cpu_supports("bmi2");
}

const struct json_path json_path_avx512 = {"avx512", json_line_avx512, json_line_avx512_paths,
                                           avx512_usable, text_ok_avx512};
#endif
