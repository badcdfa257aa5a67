/* json_avx2.c -- the fast path with the line classified in 32-byte AVX2 vectors, one per
 * block; the walk compiled with BMI's tzcnt. For CPUs with AVX2, BMI and BMI2. */
#include "json_fast.h"
#include "json_utf8.h"

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

/* A line with a backslash, n >= 32: its escape masks (fast_escape_fn, json_fast.h), in words
 * laid out as classify_avx2's; the nameable bytes and hex digits by two nibble lookups. */
__attribute__((target("avx2"))) static inline __attribute__((always_inline)) size_t
escapes_avx2_32(const u8 *p, size_t n, struct fast_escape_masks *m)
{
    const __m256i vb = _mm256_set1_epi8('\\'), vu = _mm256_set1_epi8('u'),
                  nib = _mm256_set1_epi8(0x0F), zero = _mm256_setzero_si256(),
                  named_bits = _mm256_set1_epi8(ESCAPE_NAMED_BITS),
                  hex_bits = _mm256_set1_epi8(ESCAPE_HEX_BITS),
                  t_low = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)escape_low_nibble)),
                  t_high = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)escape_high_nibble));
    size_t i = 0, k = 0;
    for (;; i += 32, k++) {
        unsigned sh = 0;
        const u8 *b = p + i;
        if (n - i < 32) {
            if (i == n)
                break;
            sh = (unsigned)(i + 32 - n); /* the last 32 bytes, shifted so bit 0 is p[i] */
            b = p + n - 32;
        }
        __m256i v = _mm256_loadu_si256((const __m256i *)b);
        __m256i c = _mm256_and_si256(
            _mm256_shuffle_epi8(t_low, _mm256_and_si256(v, nib)),
            _mm256_shuffle_epi8(t_high, _mm256_and_si256(_mm256_srli_epi16(v, 4), nib)));
        m->bs[k] = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, vb)) >> sh;
        m->u[k] = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, vu)) >> sh;
        m->named[k] = ~(uint32_t)_mm256_movemask_epi8(
                          _mm256_cmpeq_epi8(_mm256_and_si256(c, named_bits), zero)) >> sh;
        m->hex[k] = ~(uint32_t)_mm256_movemask_epi8(
                        _mm256_cmpeq_epi8(_mm256_and_si256(c, hex_bits), zero)) >> sh;
        if (sh) {
            k++;
            break;
        }
    }
    return k;
}

__attribute__((target("avx2"))) static size_t escapes_avx2(const u8 *p, size_t n,
                                                           struct fast_escape_masks *m)
{
    if (n >= 32)
        return escapes_avx2_32(p, n, m);
    u8 pad[32];
    memset(pad, ' ', sizeof pad);
    memcpy(pad, p, n);
    return escapes_avx2_32(pad, sizeof pad, m);
}

/* The bytes of cur moved N places later, the places freed filled by the last N bytes of prev
 * (the block before): each byte's N-th predecessor, across the two 16-byte lanes. */
#define PREV_AVX2(cur, prev, N)                                                            \
    _mm256_alignr_epi8((cur), _mm256_permute2x128_si256((prev), (cur), 0x21), 16 - (N))

/* fast_text_ok's verdict on p[0..n), any n: no byte below 0x20, and well-formed UTF-8, by
 * Keiser and Lemire's lookups (json_utf8.h) on 32 bytes at a time; a block of ASCII only
 * checks that the block before finished its last sequence. The last partial block is
 * copied into spaces. */
__attribute__((target("avx2"))) static int text_ok_avx2(const u8 *p, size_t n)
{
    const __m256i t_prev_high = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)utf8_prev_high)),
                  t_prev_low = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)utf8_prev_low)),
                  t_cur_high = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)utf8_cur_high)),
                  nib = _mm256_set1_epi8(0x0F), v20 = _mm256_set1_epi8(0x20),
                  v80 = _mm256_set1_epi8((char)0x80), lead3 = _mm256_set1_epi8((char)(0xE0 - 0x80)),
                  lead4 = _mm256_set1_epi8((char)(0xF0 - 0x80)),
                  open_max = _mm256_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                              -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                              (char)U8_INCOMPLETE_3, (char)U8_INCOMPLETE_2,
                                              (char)U8_INCOMPLETE_1);
    __m256i prev = _mm256_setzero_si256(), err = prev, open = prev;
    u8 pad[32];
    for (size_t i = 0; i < n; i += 32) {
        const u8 *b = p + i;
        if (n - i < 32) {
            memset(pad, ' ', sizeof pad);
            memcpy(pad, b, n - i);
            b = pad;
        }
        __m256i v = _mm256_loadu_si256((const __m256i *)b);
        err = _mm256_or_si256(err, _mm256_subs_epu8(v20, v)); /* a control byte */
        if (LIKELY(!_mm256_movemask_epi8(v))) {
            err = _mm256_or_si256(err, open); /* ASCII cannot finish a sequence */
            open = _mm256_setzero_si256();
        } else {
            __m256i p1 = PREV_AVX2(v, prev, 1);
            __m256i sc = _mm256_and_si256(
                _mm256_and_si256(
                    _mm256_shuffle_epi8(t_prev_high, _mm256_and_si256(_mm256_srli_epi16(p1, 4), nib)),
                    _mm256_shuffle_epi8(t_prev_low, _mm256_and_si256(p1, nib))),
                _mm256_shuffle_epi8(t_cur_high, _mm256_and_si256(_mm256_srli_epi16(v, 4), nib)));
            /* A third or fourth byte of a sequence: there, and only there, TWO_CONTS. */
            __m256i must = _mm256_or_si256(_mm256_subs_epu8(PREV_AVX2(v, prev, 2), lead3),
                                           _mm256_subs_epu8(PREV_AVX2(v, prev, 3), lead4));
            err = _mm256_or_si256(err, _mm256_xor_si256(_mm256_and_si256(must, v80), sc));
            open = _mm256_subs_epu8(v, open_max);
        }
        prev = v;
    }
    err = _mm256_or_si256(err, open);
    return _mm256_testz_si256(err, err);
}
#undef PREV_AVX2

__attribute__((target("avx2,bmi,bmi2"))) static int json_line_avx2(
    const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells)
{
    return fast_line(lk, p, n, cells, classify_avx2, classify_avx2_short, text_ok_avx2, escapes_avx2, 0);
}

__attribute__((target("avx2,bmi,bmi2"))) static int json_line_avx2_paths(
    const struct json_lookup *lk, const u8 *p, size_t n, struct cell *cells)
{
    return fast_line(lk, p, n, cells, classify_avx2, classify_avx2_short, text_ok_avx2, escapes_avx2, 1);
}

static int avx2_usable(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") &&
           __builtin_cpu_supports("bmi2");
}

const struct json_path json_path_avx2 = {"avx2", json_line_avx2, json_line_avx2_paths, avx2_usable,
                                         text_ok_avx2};
#endif
