/* test_decode.c -- content decoding: the same bytes come out whatever the piece boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "buf.h"
#include "decode.h"

/* One decoder for every test: bodies of every encoding, good and bad, follow each other on
 * it as they do on a connection, so reuse after errors is tested all along. */
static struct decoder dec;

enum fmt { FMT_ZLIB, FMT_GZIP, FMT_RAW };

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* NDJSON-like text: varied enough that it does not compress to nothing, with a long run of
 * one repeated line in the middle so that a few input bytes fill several windows. */
static char *ndjson(size_t want, size_t *len)
{
    static const char *vendors[] = {"CMT", "VTS", "DDS", "yellow", "green"};
    char *p = malloc(want + 512);
    assert_non_null(p);
    size_t n = 0;
    while (n < want) {
        if (n > want / 3 && n < want / 3 + 300000) {
            n += (size_t)sprintf(p + n, "{\"id\":0,\"vendor\":\"same\",\"fare\":1.00}\n");
            continue;
        }
        n += (size_t)sprintf(p + n,
                             "{\"id\":%u,\"vendor\":\"%s\",\"fare\":%u.%02u,\"miles\":%u,"
                             "\"note\":\"%08x%04x\"}\n",
                             rnd() % 1000000, vendors[rnd() % 5], rnd() % 200, rnd() % 100,
                             rnd() % 50, rnd(), rnd() % 0x10000);
    }
    *len = n;
    return p;
}

static unsigned char *squeeze(enum fmt f, const char *in, size_t n, size_t *outlen)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    int wbits = f == FMT_ZLIB ? 15 : f == FMT_GZIP ? 31 : -15;
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&z, (uLong)n) + 64;
    unsigned char *out = malloc(cap);
    assert_non_null(out);
    z.next_in = (unsigned char *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    *outlen = cap - z.avail_out;
    deflateEnd(&z);
    if (f == FMT_ZLIB) { /* compress2 must agree: the zlib format the tests rely on */
        uLongf len = (uLongf)cap;
        unsigned char *again = malloc(cap);
        assert_non_null(again);
        assert_int_equal(compress2(again, &len, (const unsigned char *)in, (uLong)n, 6), Z_OK);
        assert_int_equal(len, *outlen);
        assert_memory_equal(again, out, len);
        free(again);
    }
    return out;
}

static enum content_encoding enc_of(enum fmt f)
{
    return f == FMT_GZIP ? ENCODING_GZIP : ENCODING_DEFLATE;
}

struct sinkbuf {
    struct buf b;
    int calls;
    int stop_after; /* return 42 from this call on (0: never) */
};

static int collect(void *ctx, const char *p, size_t n)
{
    struct sinkbuf *s = ctx;
    assert_true(n > 0);
    assert_true(n <= DECODE_WINDOW || dec.enc == ENCODING_IDENTITY);
    s->calls++;
    if (s->stop_after && s->calls >= s->stop_after)
        return 42;
    assert_int_equal(buf_append(&s->b, p, n), 0);
    return 0;
}

/* Feeds a copy of the piece followed by 0xff bytes: a decoder that looks past the end of
 * a piece sees garbage, not the rest of the body (ASan also sees the overrun). */
static int feed_copy(const unsigned char *p, size_t n, struct sinkbuf *out)
{
    unsigned char *copy = malloc(n + 16);
    assert_non_null(copy);
    memcpy(copy, p, n);
    memset(copy + n, 0xff, 16);
    unsigned char *exact = malloc(n ? n : 1);
    assert_non_null(exact);
    memcpy(exact, p, n);
    /* Alternate: the 0xff tail for the logic, the exact allocation for the sanitizers. */
    static unsigned flip;
    int r = decoder_feed(&dec, (const char *)(flip++ % 2 ? copy : exact), n, collect, out);
    free(exact);
    free(copy);
    return r;
}

/* Decodes body cut at cuts[0..ncuts) (increasing offsets); the first nonzero status of the
 * feeds, else decoder_end's. */
static int decode_cuts(enum content_encoding enc, const unsigned char *body, size_t n,
                       const size_t *cuts, size_t ncuts, struct sinkbuf *out)
{
    memset(out, 0, sizeof *out);
    assert_int_equal(decoder_begin(&dec, enc), 0);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        int r = feed_copy(body + at, to - at, out);
        if (r)
            return r;
        at = to;
    }
    assert_int_equal(dec.in_bytes, n);
    return decoder_end(&dec);
}

static int decode_pieces(enum content_encoding enc, const unsigned char *body, size_t n,
                         size_t piece, struct sinkbuf *out)
{
    memset(out, 0, sizeof *out);
    assert_int_equal(decoder_begin(&dec, enc), 0);
    for (size_t at = 0; at < n; at += piece) {
        size_t k = n - at < piece ? n - at : piece;
        int r = piece <= 64 ? feed_copy(body + at, k, out)
                            : decoder_feed(&dec, (const char *)body + at, k, collect, out);
        if (r)
            return r;
    }
    return decoder_end(&dec);
}

static void expect_output(struct sinkbuf *out, const char *want, size_t n)
{
    assert_int_equal(out->b.len, n);
    assert_memory_equal(out->b.p, want, n);
    assert_int_equal(dec.out_bytes, n);
    buf_free(&out->b);
}

static void test_parse_encoding(void **state)
{
    (void)state;
    static const struct {
        const char *v;
        int rc;
        enum content_encoding enc;
    } cases[] = {
        {"identity", 0, ENCODING_IDENTITY}, {"", 0, ENCODING_IDENTITY},
        {" \t ", 0, ENCODING_IDENTITY},     {"IDENTITY", 0, ENCODING_IDENTITY},
        {"gzip", 0, ENCODING_GZIP},         {" GZip\t", 0, ENCODING_GZIP},
        {"x-gzip", 0, ENCODING_GZIP},       {"X-Gzip ", 0, ENCODING_GZIP},
        {"deflate", 0, ENCODING_DEFLATE},   {"\tDEFLATE", 0, ENCODING_DEFLATE},
        {"br", -1, 0},                      {"gzip, deflate", -1, 0},
        {"gzip,gzip", -1, 0},               {"gzi", -1, 0},
        {"gzipp", -1, 0},                   {"compress", -1, 0},
        {"zstd", -1, 0},                    {"g zip", -1, 0},
        {"identityx", -1, 0},               {"x-gzip2", -1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum content_encoding enc = (enum content_encoding)99;
        int rc = decode_parse_encoding(cases[i].v, strlen(cases[i].v), &enc);
        if (rc != cases[i].rc)
            fail_msg("\"%s\": %d, expected %d", cases[i].v, rc, cases[i].rc);
        if (rc == 0)
            assert_int_equal(enc, cases[i].enc);
    }
    /* The length rules, not a NUL. */
    enum content_encoding enc;
    assert_int_equal(decode_parse_encoding("gzipXYZ", 4, &enc), 0);
    assert_int_equal(enc, ENCODING_GZIP);
    assert_int_equal(decode_parse_encoding("deflate", 3, &enc), -1);
}

static const char *seen_p;
static size_t seen_n;
static int note(void *ctx, const char *p, size_t n)
{
    (void)ctx;
    seen_p = p;
    seen_n = n;
    return 0;
}

static void test_identity_zero_copy(void **state)
{
    (void)state;
    static const char body[] = "{\"a\":1}\n{\"a\":2}\n";
    assert_int_equal(decoder_begin(&dec, ENCODING_IDENTITY), 0);
    assert_int_equal(decoder_feed(&dec, body + 3, 9, note, NULL), 0);
    assert_ptr_equal(seen_p, body + 3); /* the caller's bytes themselves */
    assert_int_equal(seen_n, 9);
    seen_p = NULL;
    assert_int_equal(decoder_feed(&dec, body, 0, note, NULL), 0);
    assert_null(seen_p); /* nothing to hand on */
    assert_int_equal(decoder_end(&dec), 0);
    struct sinkbuf out;
    size_t cut = 5;
    assert_int_equal(decode_cuts(ENCODING_IDENTITY, (const unsigned char *)body, sizeof body - 1,
                                 &cut, 1, &out),
                     0);
    expect_output(&out, body, sizeof body - 1);
}

/* Every split position of a small body, for each format: the deflate header's two bytes
 * split apart (k = 1) included. */
static void test_every_split_small(void **state)
{
    (void)state;
    size_t n;
    char *text = ndjson(300, &n);
    for (enum fmt f = FMT_ZLIB; f <= FMT_RAW; f++) {
        size_t clen;
        unsigned char *c = squeeze(f, text, n, &clen);
        for (size_t k = 0; k <= clen; k++) {
            struct sinkbuf out;
            assert_int_equal(decode_cuts(enc_of(f), c, clen, &k, 1, &out), 0);
            expect_output(&out, text, n);
        }
        struct sinkbuf out;
        assert_int_equal(decode_pieces(enc_of(f), c, clen, 1, &out), 0);
        expect_output(&out, text, n);
        free(c);
    }
    free(text);
}

/* About 1 MB of text, many windows of output: 1-byte pieces and random pieces. */
static void test_large_pieces(void **state)
{
    (void)state;
    size_t n;
    char *text = ndjson(1 << 20, &n);
    assert_true(n > 8 * DECODE_WINDOW);
    for (enum fmt f = FMT_ZLIB; f <= FMT_RAW; f++) {
        size_t clen;
        unsigned char *c = squeeze(f, text, n, &clen);
        struct sinkbuf out;
        assert_int_equal(decode_pieces(enc_of(f), c, clen, clen, &out), 0); /* one piece */
        assert_true(out.calls > 8);
        expect_output(&out, text, n);
        assert_int_equal(decode_pieces(enc_of(f), c, clen, 1, &out), 0);
        expect_output(&out, text, n);
        for (int round = 0; round < 8; round++) {
            size_t cuts[4096], k = 0, at = 0;
            size_t maxp = round % 2 ? 64 : 100000;
            while (k < sizeof cuts / sizeof cuts[0] - 1) {
                at += 1 + rnd() % maxp;
                if (at >= clen)
                    break;
                cuts[k++] = at;
            }
            assert_int_equal(decode_cuts(enc_of(f), c, clen, cuts, k, &out), 0);
            expect_output(&out, text, n);
        }
        free(c);
    }
    free(text);
}

/* Output that fills the window exactly while the input is used up, with more to come from
 * what zlib holds (a match still being copied): found for raw deflate just past 64 KiB of
 * one repeated byte. The decoder must drain it before asking for input. */
static void test_window_full_input_spent(void **state)
{
    (void)state;
    size_t max = 2 * DECODE_WINDOW + 300;
    char *text = malloc(max);
    assert_non_null(text);
    memset(text, 'a', max);
    for (enum fmt f = FMT_ZLIB; f <= FMT_RAW; f++) {
        /* Every length near one and two windows for raw; a few for the other formats. */
        size_t step = f == FMT_RAW ? 1 : 50;
        for (size_t n = DECODE_WINDOW - 2; n <= max; n += step) {
            if (n >= DECODE_WINDOW + 300 && n < 2 * DECODE_WINDOW - 2)
                n = 2 * DECODE_WINDOW - 2;
            size_t clen;
            unsigned char *c = squeeze(f, text, n, &clen);
            struct sinkbuf out;
            assert_int_equal(decode_pieces(enc_of(f), c, clen, clen, &out), 0);
            expect_output(&out, text, n);
            free(c);
        }
    }
    free(text);
}

/* gzip members one after the other are one body: the boundary anywhere in the pieces. */
static void test_gzip_members(void **state)
{
    (void)state;
    size_t na, nb;
    char *a = ndjson(200000, &na);
    char *b = ndjson(500, &nb);
    size_t ca, cb;
    unsigned char *za = squeeze(FMT_GZIP, a, na, &ca);
    unsigned char *zb = squeeze(FMT_GZIP, b, nb, &cb);
    size_t n = ca + cb;
    unsigned char *body = malloc(n);
    char *want = malloc(na + nb);
    assert_non_null(body);
    assert_non_null(want);
    memcpy(body, za, ca);
    memcpy(body + ca, zb, cb);
    memcpy(want, a, na);
    memcpy(want + na, b, nb);
    struct sinkbuf out;
    for (size_t k = ca - 12; k <= ca + 12; k++) { /* the split around the first member's end */
        assert_int_equal(decode_cuts(ENCODING_GZIP, body, n, &k, 1, &out), 0);
        expect_output(&out, want, na + nb);
    }
    assert_int_equal(decode_pieces(ENCODING_GZIP, body, n, 1, &out), 0);
    expect_output(&out, want, na + nb);
    /* Three members, the last empty. */
    size_t ce;
    unsigned char *ze = squeeze(FMT_GZIP, "", 0, &ce);
    unsigned char *body3 = malloc(n + ce);
    assert_non_null(body3);
    memcpy(body3, body, n);
    memcpy(body3 + n, ze, ce);
    assert_int_equal(decode_pieces(ENCODING_GZIP, body3, n + ce, 7, &out), 0);
    expect_output(&out, want, na + nb);
    /* A second member cut short is a truncated body. */
    assert_int_equal(decode_pieces(ENCODING_GZIP, body, n - 3, 4096, &out), DECODE_EDATA);
    buf_free(&out.b);
    free(body3);
    free(ze);
    free(body);
    free(want);
    free(za);
    free(zb);
    free(a);
    free(b);
}

static void test_truncated(void **state)
{
    (void)state;
    size_t n;
    char *text = ndjson(100000, &n);
    for (enum fmt f = FMT_ZLIB; f <= FMT_RAW; f++) {
        size_t clen;
        unsigned char *c = squeeze(f, text, n, &clen);
        const size_t drops[] = {1, 2, 4, 8, 9, clen / 2, clen - 1};
        for (size_t i = 0; i < sizeof drops / sizeof drops[0]; i++) {
            struct sinkbuf out;
            memset(&out, 0, sizeof out);
            assert_int_equal(decoder_begin(&dec, enc_of(f)), 0);
            assert_int_equal(decoder_feed(&dec, (const char *)c, clen - drops[i], collect, &out),
                             0);
            assert_int_equal(decoder_end(&dec), DECODE_EDATA);
            buf_free(&out.b);
        }
        free(c);
    }
    free(text);
}

/* The first nonzero status of feeding body in pieces, then of the end. */
static int status_of(enum content_encoding enc, const unsigned char *body, size_t n, size_t piece)
{
    struct sinkbuf out;
    int r = decode_pieces(enc, body, n, piece, &out);
    buf_free(&out.b);
    return r;
}

static void test_corrupt(void **state)
{
    (void)state;
    size_t n;
    char *text = ndjson(50000, &n);
    for (enum fmt f = FMT_ZLIB; f <= FMT_GZIP; f++) { /* checksummed formats: any flip shows */
        size_t clen;
        unsigned char *c = squeeze(f, text, n, &clen);
        const size_t at[] = {clen / 3, clen / 2, clen - 1, clen - 5};
        for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
            c[at[i]] ^= 0x55;
            assert_int_equal(status_of(enc_of(f), c, clen, 1000), DECODE_EDATA);
            c[at[i]] ^= 0x55;
        }
        assert_int_equal(status_of(enc_of(f), c, clen, 1000), 0);
        free(c);
    }
    /* Not compressed at all. */
    const char *plain = "{\"a\":1}\n";
    assert_int_equal(status_of(ENCODING_GZIP, (const unsigned char *)plain, 8, 8), DECODE_EDATA);
    /* Raw deflate with the reserved block type 3: neither a zlib header nor a valid block. */
    const unsigned char bad_block[] = {0x07, 0x00, 0x00};
    assert_int_equal(status_of(ENCODING_DEFLATE, bad_block, sizeof bad_block, 1), DECODE_EDATA);
    /* A zlib stream that needs a preset dictionary: we have none. */
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(deflateInit(&z, 6), Z_OK);
    assert_int_equal(deflateSetDictionary(&z, (const Bytef *)"vendor", 6), Z_OK);
    unsigned char dict[256];
    z.next_in = (unsigned char *)text;
    z.avail_in = 100;
    z.next_out = dict;
    z.avail_out = sizeof dict;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t dlen = sizeof dict - z.avail_out;
    deflateEnd(&z);
    assert_int_equal(status_of(ENCODING_DEFLATE, dict, dlen, dlen), DECODE_EDATA);
    free(text);
}

static void test_trailing_garbage(void **state)
{
    (void)state;
    size_t n;
    char *text = ndjson(70000, &n);
    for (enum fmt f = FMT_ZLIB; f <= FMT_RAW; f++) {
        size_t clen;
        unsigned char *c = squeeze(f, text, n, &clen);
        unsigned char *g = malloc(clen + 3);
        assert_non_null(g);
        memcpy(g, c, clen);
        memcpy(g + clen, "xyz", 3);
        assert_int_equal(status_of(enc_of(f), g, clen + 3, clen + 3), DECODE_EDATA);
        /* The garbage alone in a later piece. */
        size_t cut = clen;
        struct sinkbuf out;
        assert_int_equal(decode_cuts(enc_of(f), g, clen + 3, &cut, 1, &out), DECODE_EDATA);
        assert_int_equal(out.b.len, n); /* everything before it was delivered */
        buf_free(&out.b);
        /* gzip's zero padding is garbage too: no member starts with 0. */
        g[clen] = 0;
        assert_int_equal(status_of(enc_of(f), g, clen + 1, 1), DECODE_EDATA);
        free(g);
        free(c);
    }
    free(text);
}

static void test_raw_deflate_detected(void **state)
{
    (void)state;
    /* The raw stream of this text starts with a byte that is no zlib CMF; the first two
     * bytes of a zlib stream are (0x78, 0x9c) at level 6. */
    const char *text = "{\"hello\":\"world\"}\n";
    size_t n = strlen(text), rl, zl;
    unsigned char *raw = squeeze(FMT_RAW, text, n, &rl);
    unsigned char *zz = squeeze(FMT_ZLIB, text, n, &zl);
    assert_int_equal(zz[0], 0x78);
    assert_int_equal(zz[1], 0x9c);
    assert_int_not_equal(raw[0] & 0x0f, 8);
    struct sinkbuf out;
    for (size_t piece = 1; piece <= 3; piece++) {
        assert_int_equal(decode_pieces(ENCODING_DEFLATE, raw, rl, piece, &out), 0);
        expect_output(&out, text, n);
        assert_int_equal(decode_pieces(ENCODING_DEFLATE, zz, zl, piece, &out), 0);
        expect_output(&out, text, n);
    }
    /* A deflate body of one byte cannot be complete. */
    assert_int_equal(status_of(ENCODING_DEFLATE, raw, 1, 1), DECODE_EDATA);
    /* A compressed encoding on an empty body is an empty body. */
    assert_int_equal(status_of(ENCODING_GZIP, raw, 0, 1), 0);
    assert_int_equal(status_of(ENCODING_DEFLATE, raw, 0, 1), 0);
    free(raw);
    free(zz);
}

static void test_out_status_passed_back(void **state)
{
    (void)state;
    size_t n;
    char *text = ndjson(300000, &n);
    for (enum fmt f = FMT_ZLIB; f <= FMT_RAW; f++) {
        size_t clen;
        unsigned char *c = squeeze(f, text, n, &clen);
        struct sinkbuf out;
        memset(&out, 0, sizeof out);
        out.stop_after = 3;
        assert_int_equal(decoder_begin(&dec, enc_of(f)), 0);
        assert_int_equal(decoder_feed(&dec, (const char *)c, clen, collect, &out), 42);
        assert_int_equal(out.calls, 3);
        buf_free(&out.b);
        free(c);
    }
    struct sinkbuf out;
    memset(&out, 0, sizeof out);
    out.stop_after = 1;
    assert_int_equal(decoder_begin(&dec, ENCODING_IDENTITY), 0);
    assert_int_equal(decoder_feed(&dec, text, n, collect, &out), 42);
    free(text);
}

static void test_max_out(void **state)
{
    (void)state;
    size_t n;
    char *text = ndjson(400000, &n);
    size_t clen;
    unsigned char *c = squeeze(FMT_GZIP, text, n, &clen);
    dec.max_out = 100000;
    assert_int_equal(status_of(ENCODING_GZIP, c, clen, 4096), DECODE_ETOOBIG);
    assert_true(dec.out_bytes > 100000 && dec.out_bytes <= 100000 + DECODE_WINDOW);
    dec.max_out = n; /* exactly enough */
    assert_int_equal(status_of(ENCODING_GZIP, c, clen, 4096), 0);
    dec.max_out = 0;
    free(c);
    free(text);
}

/* A bomb (zeros, ~1000:1) trips max_ratio soon after DECODE_RATIO_FLOOR, whatever the
 * pieces; ordinary text under the ratio, or under the floor, does not. */
static void test_max_ratio(void **state)
{
    (void)state;
    size_t zn = 32u << 20;
    char *zeros = calloc(1, zn);
    assert_non_null(zeros);
    size_t clen;
    unsigned char *c = squeeze(FMT_GZIP, zeros, zn, &clen);
    assert_true(zn / clen > 500);
    dec.max_ratio = 100;
    assert_int_equal(status_of(ENCODING_GZIP, c, clen, clen), DECODE_ETOOBIG);
    assert_true(dec.out_bytes <= DECODE_RATIO_FLOOR + 2 * DECODE_WINDOW);
    assert_int_equal(status_of(ENCODING_GZIP, c, clen, 1000), DECODE_ETOOBIG);
    assert_true(dec.out_bytes <= DECODE_RATIO_FLOOR + 2 * DECODE_WINDOW);
    dec.max_ratio = (uint32_t)(zn / clen) + 10; /* above the bomb's own ratio */
    assert_int_equal(status_of(ENCODING_GZIP, c, clen, 4096), 0);
    free(c);
    /* under the floor: any ratio passes */
    c = squeeze(FMT_GZIP, zeros, DECODE_RATIO_FLOOR, &clen);
    dec.max_ratio = 2;
    assert_int_equal(status_of(ENCODING_GZIP, c, clen, 4096), 0);
    dec.max_ratio = 0;
    free(c);
    free(zeros);
}

static int teardown(void **state)
{
    (void)state;
    decoder_free(&dec);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_encoding),
        cmocka_unit_test(test_identity_zero_copy),
        cmocka_unit_test(test_every_split_small),
        cmocka_unit_test(test_large_pieces),
        cmocka_unit_test(test_window_full_input_spent),
        cmocka_unit_test(test_gzip_members),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_trailing_garbage),
        cmocka_unit_test(test_raw_deflate_detected),
        cmocka_unit_test(test_out_status_passed_back),
        cmocka_unit_test(test_max_out),
        cmocka_unit_test(test_max_ratio),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
