/* json_sse2.c -- the fast path with the line classified in 16-byte SSE2 vectors (x86-64's
 * baseline, so every x86-64 CPU runs it). */
#include "json_fast.h"

#ifdef JSON_HAVE_X86
#include <immintrin.h>

/* Each 32-byte block as two 16-byte halves (the classifiers' contract in json_fast.h); the
 * tail as the last 32 bytes, shifted. */
static inline __attribute__((always_inline)) size_t
classify_sse2(const u8 *p, size_t n, uint32_t *quote, uint32_t *nondig, unsigned *flags)
{
    const __m128i vq = _mm_set1_epi8('"'), vb = _mm_set1_epi8('\\'), vsp = _mm_set1_epi8(0x20),
                  voff = _mm_set1_epi8((char)('0' + 0x80)), vlim = _mm_set1_epi8(-128 + 10);
#define DIGITS16(v) _mm_cmpgt_epi8(vlim, _mm_sub_epi8((v), voff))
    __m128i odd = _mm_setzero_si128(), bs = odd;
    size_t i = 0, k = 0;
    for (; n - i >= 32; i += 32, k++) {
        __m128i a = _mm_loadu_si128((const __m128i *)(p + i)),
                b = _mm_loadu_si128((const __m128i *)(p + i + 16));
        quote[k] = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(a, vq)) |
                   (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b, vq)) << 16;
        nondig[k] = ~((uint32_t)_mm_movemask_epi8(DIGITS16(a)) |
                      (uint32_t)_mm_movemask_epi8(DIGITS16(b)) << 16);
        odd = _mm_or_si128(odd, _mm_or_si128(_mm_cmpgt_epi8(vsp, a), _mm_cmpgt_epi8(vsp, b)));
        bs = _mm_or_si128(bs, _mm_or_si128(_mm_cmpeq_epi8(a, vb), _mm_cmpeq_epi8(b, vb)));
    }
    if (i < n) { /* the tail: the last 32 bytes, shifted so bit 0 is p[i] */
        unsigned sh = (unsigned)(i + 32 - n);
        __m128i a = _mm_loadu_si128((const __m128i *)(p + n - 32)),
                b = _mm_loadu_si128((const __m128i *)(p + n - 16));
        quote[k] = ((uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(a, vq)) |
                    (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b, vq)) << 16) >>
                   sh;
        nondig[k] = ~(((uint32_t)_mm_movemask_epi8(DIGITS16(a)) |
                       (uint32_t)_mm_movemask_epi8(DIGITS16(b)) << 16) >>
                      sh);
        odd = _mm_or_si128(odd, _mm_or_si128(_mm_cmpgt_epi8(vsp, a), _mm_cmpgt_epi8(vsp, b)));
        bs = _mm_or_si128(bs, _mm_or_si128(_mm_cmpeq_epi8(a, vb), _mm_cmpeq_epi8(b, vb)));
        k++;
    }
#undef DIGITS16
    *flags = (_mm_movemask_epi8(bs) ? FAST_BACKSLASH : 0) | (_mm_movemask_epi8(odd) ? FAST_ODD : 0);
    return k;
}

/* Lines of fewer than 32 bytes: classified from a copy padded with spaces, walked in place. */
static __attribute__((noinline)) size_t classify_sse2_short(const u8 *p, size_t n,
                                                            uint32_t *quote, uint32_t *nondig,
                                                            unsigned *flags)
{
    u8 pad[32];
    memset(pad, ' ', sizeof pad);
    memcpy(pad, p, n);
    return classify_sse2(pad, sizeof pad, quote, nondig, flags);
}

/* A line with a backslash, n >= 32: its escape masks (fast_escape_fn, json_fast.h), in words
 * laid out as classify_sse2's. */
static inline __attribute__((always_inline)) uint32_t sse2_mask32(__m128i a, __m128i b)
{
    return (uint32_t)_mm_movemask_epi8(a) | (uint32_t)_mm_movemask_epi8(b) << 16;
}

static inline __attribute__((always_inline)) __m128i sse2_named(__m128i v)
{
    return _mm_or_si128(
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\\')),
                                  _mm_cmpeq_epi8(v, _mm_set1_epi8('u'))),
                     _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                  _mm_cmpeq_epi8(v, _mm_set1_epi8('/')))),
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('b')),
                                  _mm_cmpeq_epi8(v, _mm_set1_epi8('f'))),
                     _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('n')),
                                  _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('r')),
                                               _mm_cmpeq_epi8(v, _mm_set1_epi8('t'))))));
}

/* Hex digits: '0'-'9', or (with the case bit set) 'a'-'f'; by two subtractions and compares
 * (SSE2 has no byte shuffle for the lookups the other paths use). */
static inline __attribute__((always_inline)) __m128i sse2_hex(__m128i v)
{
    const __m128i off = _mm_set1_epi8((char)0x80);
    __m128i d = _mm_cmplt_epi8(_mm_xor_si128(_mm_sub_epi8(v, _mm_set1_epi8('0')), off),
                               _mm_set1_epi8((char)(0x80 + 10)));
    __m128i a = _mm_cmplt_epi8(
        _mm_xor_si128(_mm_sub_epi8(_mm_or_si128(v, _mm_set1_epi8(0x20)), _mm_set1_epi8('a')), off),
        _mm_set1_epi8((char)(0x80 + 6)));
    return _mm_or_si128(d, a);
}

static size_t escapes_sse2_32(const u8 *p, size_t n, struct fast_escape_masks *m)
{
    const __m128i vb = _mm_set1_epi8('\\'), vu = _mm_set1_epi8('u');
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
        __m128i x = _mm_loadu_si128((const __m128i *)b), y = _mm_loadu_si128((const __m128i *)(b + 16));
        m->bs[k] = sse2_mask32(_mm_cmpeq_epi8(x, vb), _mm_cmpeq_epi8(y, vb)) >> sh;
        m->u[k] = sse2_mask32(_mm_cmpeq_epi8(x, vu), _mm_cmpeq_epi8(y, vu)) >> sh;
        m->named[k] = sse2_mask32(sse2_named(x), sse2_named(y)) >> sh;
        m->hex[k] = sse2_mask32(sse2_hex(x), sse2_hex(y)) >> sh;
        if (sh) {
            k++;
            break;
        }
    }
    return k;
}

static size_t escapes_sse2(const u8 *p, size_t n, struct fast_escape_masks *m)
{
    if (n >= 32)
        return escapes_sse2_32(p, n, m);
    u8 pad[32];
    memset(pad, ' ', sizeof pad);
    memcpy(pad, p, n);
    return escapes_sse2_32(pad, sizeof pad, m);
}

static int json_line_sse2(const struct json_lookup *lk, const u8 *p, size_t n,
                          struct cell *cells)
{
    return fast_line(lk, p, n, cells, classify_sse2, classify_sse2_short, fast_text_ok, escapes_sse2, 0);
}

static int json_line_sse2_paths(const struct json_lookup *lk, const u8 *p, size_t n,
                                struct cell *cells)
{
    return fast_line(lk, p, n, cells, classify_sse2, classify_sse2_short, fast_text_ok, escapes_sse2, 1);
}

/* SSE2 has no byte shuffle (pshufb is SSSE3): the scalar UTF-8 check. */
const struct json_path json_path_sse2 = {"sse2", json_line_sse2, json_line_sse2_paths, NULL,
                                         fast_text_ok};
#endif
