/* test_http_strict_llhttp.c -- http_strict and llhttp 8.1 agree on where every request ends:
 * over generated and mutated request streams, each message end llhttp reports (on the bytes
 * http_strict let through) is one of http_strict's, and none of http_strict's is missing
 * while llhttp reads on. A disagreement is a request smuggled past one of the two. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <llhttp.h>

#include "http_strict.h"

#define ITERATIONS 100000
#define MAX_ENDS 64

static uint64_t seed = 88172645463325252ULL;

static unsigned rnd(unsigned n)
{
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return (unsigned)(seed % n);
}

static char wire[16384];
static size_t wire_len;

static void add(const char *s)
{
    size_t n = strlen(s);
    if (wire_len + n <= sizeof wire) {
        memcpy(wire + wire_len, s, n);
        wire_len += n;
    }
}

#define PICK(a) a[rnd(sizeof a / sizeof a[0])]

static const char *const names[] = {
    "Content-Length", "Transfer-Encoding", "Host", "Connection", "Proxy-Connection", "Upgrade",
    "Expect", "X-A", "content-length", "TRANSFER-ENCODING", "Content-Lengt", "Transfer-Encodin",
    "Trailer"};
static const char *const values[] = {
    "5", "0", "chunked", "close", "keep-alive", "upgrade", "x", " 3 ", "3\t", "00003", "chunked ",
    " chunked", "Chunked", "chun ked", "gzip", "gzip, chunked", "1, 1", "-1", "", "close\t",
    "18446744073709551616", "100-continue"};
static const char *const methods[] = {"GET", "POST", "HEAD", "CONNECT", "PUT", "PRI", "FOO", "TRACE"};
static const char *const versions[] = {"HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "RTSP/1.0"};

static void add_chunked_body(void)
{
    for (int i = rnd(4); i > 0; i--) {
        char size[16];
        unsigned n = rnd(6) + 1;
        snprintf(size, sizeof size, rnd(2) ? "%x" : "%X", n);
        add(size);
        if (!rnd(3))
            add(rnd(2) ? ";a=b" : ";a=\"x;\\\"y\"");
        add("\r\n");
        while (n--)
            add(rnd(8) ? "z" : rnd(2) ? "\r" : "\n");
        add("\r\n");
    }
    add(rnd(4) ? "0" : "000");
    add("\r\n");
    for (int i = rnd(3); i > 0; i--) {
        add(PICK(names));
        add(": ");
        add(PICK(values));
        add("\r\n");
    }
    add("\r\n");
}

static void add_request(void)
{
    if (!rnd(10))
        add("\r\n");
    add(PICK(methods));
    add(rnd(5) ? " / " : " http://h/x ");
    add(PICK(versions));
    add("\r\n");
    if (rnd(4))
        add("Host: h\r\n");
    int chunked = 0, length = 0;
    for (int i = rnd(5); i > 0; i--) {
        const char *name = PICK(names), *value = PICK(values);
        if (!rnd(3))
            value = !strcasecmp(name, "transfer-encoding") ? "chunked" : "5";
        add(name);
        add(rnd(10) ? ": " : ":");
        add(value);
        add("\r\n");
        chunked |= !strcasecmp(name, "transfer-encoding") && !strcmp(value, "chunked");
        if (!strcasecmp(name, "content-length"))
            length = atoi(value) > 0 ? 5 : 0;
    }
    add("\r\n");
    if (chunked)
        add_chunked_body();
    else
        for (int i = 0; i < length; i++)
            add(rnd(4) ? "b" : "\n");
}

static void mutate(void)
{
    static const char bytes[] = "\r\n\t :;\"\\0aZ-,\x80\x01G";
    for (int i = rnd(4); i > 0 && wire_len > 1 && wire_len < sizeof wire; i--) {
        size_t at = rnd((unsigned)wire_len);
        char b = bytes[rnd(sizeof bytes - 1)];
        switch (rnd(3)) {
        case 0:
            wire[at] = b;
            break;
        case 1:
            memmove(wire + at + 1, wire + at, wire_len - at);
            wire[at] = b;
            wire_len++;
            break;
        default:
            memmove(wire + at, wire + at + 1, wire_len - at - 1);
            wire_len--;
        }
    }
}

static int pause_at_end(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;
}

static void print_wire(void)
{
    for (size_t i = 0; i < wire_len; i++)
        print_error(wire[i] >= 0x20 && wire[i] < 0x7f ? "%c" : "\\x%02x", (unsigned char)wire[i]);
    print_error("\n");
}

static void test_same_message_ends(void **state)
{
    (void)state;
    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_message_complete = pause_at_end;
    for (int it = 0; it < ITERATIONS; it++) {
        wire_len = 0;
        for (int i = rnd(3) + 1; i > 0; i--)
            add_request();
        if (rnd(2))
            mutate();
        /* http_strict a byte at a time: its ends are the returns to the start state (state 0,
         * as zero-filled is the start of a stream: http_strict.h). */
        struct http_strict s;
        http_strict_init(&s);
        size_t strict_ends[MAX_ENDS], ok = wire_len;
        int nstrict = 0;
        for (size_t i = 0; i < wire_len; i++) {
            uint8_t before = s.state;
            if (!http_strict_check(&s, wire + i, 1)) {
                ok = i;
                break;
            }
            http_strict_consumed(&s, 1);
            if (!s.state && before && nstrict < MAX_ENDS)
                strict_ends[nstrict++] = i + 1;
        }
        /* llhttp on what http_strict let through, until it errors, upgrades or closes. */
        llhttp_t p;
        llhttp_init(&p, HTTP_REQUEST, &settings);
        const char *at = wire;
        size_t left = ok;
        int j = 0, reads_on = 1;
        for (;;) {
            llhttp_errno_t e = llhttp_execute(&p, at, left);
            if (e != HPE_PAUSED) {
                reads_on = e == HPE_OK;
                break;
            }
            if (p.upgrade) { /* CONNECT or Upgrade: http.c stops reading */
                reads_on = 0;
                break;
            }
            size_t end = (size_t)(llhttp_get_error_pos(&p) - wire);
            if (j >= nstrict || strict_ends[j] != end) {
                print_error("llhttp ends a request at %zu, http_strict at %zu in:\n", end,
                            j < nstrict ? strict_ends[j] : (size_t)0);
                print_wire();
                fail();
            }
            j++;
            if (!llhttp_should_keep_alive(&p)) {
                reads_on = 0;
                break;
            }
            llhttp_resume(&p);
            left -= (size_t)(llhttp_get_error_pos(&p) - at);
            at = llhttp_get_error_pos(&p);
        }
        /* llhttp waiting for more where http_strict saw a whole request (PRI waits for the
         * HTTP/2 preface, then fails): only a stream llhttp still reads on counts. */
        if (reads_on && j < nstrict && !memmem(wire, wire_len, "PRI ", 4)) {
            print_error("http_strict ends a request at %zu that llhttp reads past in:\n",
                        strict_ends[j]);
            print_wire();
            fail();
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_message_ends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
