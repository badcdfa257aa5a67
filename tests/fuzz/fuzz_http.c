/* fuzz_http.c -- libFuzzer target: bytes through an http_server (llhttp, our callbacks,
 * the routes, ingest) over a bufferevent pair, in process, no socket. Aborts when a row
 * is written for a request that was not answered 200, or when the bytes ingested are not
 * the body's bytes.
 *
 * The input's first byte picks the mode and how the bytes are cut into writes:
 *  - even: raw. The rest is sent as it is, pipelined requests or garbage. Oracle: the rows
 *    in the day's file (counted CSV-aware: a quoted cell may hold a newline) equal the sum
 *    of "valid" over the 200 responses of POST / (their body is the ingest result, which
 *    no other response has). Bodies here are far below the 1 MiB batch, so a row reaches
 *    the file only at ingest_end, that is only for a request answered 200; a row of a
 *    request refused or abandoned is a finding.
 *  - odd: generated. The rest drives a generator of well-formed POST / requests: lines
 *    {"a":SEQ,"b":"x"} numbered across the input, framed by Content-Length or chunked
 *    (chunk sizes, extensions, trailers from the input), optionally gzip, with origin-
 *    form, long-query and absolute-form targets, a GET /healthz between them. Oracle:
 *    every request gets its response in order, each POST a 200 whose "bytes" is the body's
 *    length on the wire (after de-chunking) and whose "valid" is its line count, and the
 *    file holds exactly "SEQ,x\n" for every line, in order. FUZZ_HTTP_DUMP=1 in the
 *    environment writes each generated stream to stderr (to replay a finding by hand).
 * Idempotency-Key: both modes run with a small key table. Raw: a 200 that says
 * "Idempotency-Replayed: true" wrote nothing, so it is left out of the sum. Generated: some
 * POSTs carry one of four keys (unique to the input); a key's first use is processed, a
 * later one with the same body bytes is replayed (the first's numbers, no rows), with other
 * bytes refused with 422 (no rows). After every input the table must be consistent and hold
 * no key in flight (every connection is closed by then). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <zlib.h>

#include "access_log.h"
#include "auth.h"
#include "http.h"
#include "idempotency.h"
#include "ingest.h"
#include "options.h"
#include "sink.h"
#include "slots.h"

static struct options opts;
static struct event_base *base;
static struct worker_slot *slots;
static int rows_fd = -1;
static struct sink *rows;
static struct ingest_config ingest;
static struct access_log access_off = {.fd = -1};
static struct auth no_token;
static struct http_server *server;
static struct idem_table *keys;
static unsigned long long input_no; /* makes each input's keys its own */

static int no_sync(void *arg, char *err, size_t errlen)
{
    (void)arg;
    (void)err;
    (void)errlen;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static char out[] = "/tmp/fuzz_http.XXXXXX"; /* the key log's directory */
    if (!mkdtemp(out))
        abort();
    char *args[] = {"ndingest", "--columns", "a,b", "--quiet", "--max-path", "256",
                    "--out-dir", out, NULL};
    if (options_parse(&opts, 8, args))
        abort();
    char err[200];
    if (!(keys = idem_table_map(256, 3600, err, sizeof err)))
        abort();
    base = event_base_new();
    slots = aligned_alloc(64, sizeof *slots);
    if (!base || !slots)
        abort();
    memset(slots, 0, sizeof *slots);
    rows_fd = memfd_create("rows", 0);
    rows = sink_open_fd(rows_fd);
    if (!rows)
        abort();
    ingest = (struct ingest_config){.columns = &opts.columns, .max_line = opts.max_line,
                                    .flush_bytes = 1 << 20, .rows = rows};
    const struct http_server_config cfg = {
        .o = &opts, .base = base, .slots = slots, .nslots = 1, .index = 0, .ingest = &ingest,
        .access = &access_off, .auth = &no_token, .log_prefix = "fuzz", .sync = no_sync,
        .idem = keys,
    };
    server = http_server_new(&cfg);
    if (!server)
        abort();
    return 0;
}

/* Runs the loop until nothing moves for a few turns (deferred callbacks take a turn each). */
static void settle(struct bufferevent *client, int turns)
{
    struct evbuffer *in = bufferevent_get_input(client);
    size_t last = (size_t)-1;
    for (int idle = 0; idle < turns;) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        size_t now = evbuffer_get_length(in);
        idle = now == last ? idle + 1 : 0;
        last = now;
    }
}

/* Sends data[0..n) in writes of step bytes, letting the server read between them, and
 * returns everything it answered (NUL-terminated, the caller frees it; *len its length).
 * The connection is closed after. */
static char *exchange(const uint8_t *data, size_t n, size_t step, size_t *len)
{
    struct bufferevent *pair[2];
    if (bufferevent_pair_new(base, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS, pair))
        abort();
    if (http_server_attach(server, pair[0], "fuzz"))
        abort();
    struct bufferevent *client = pair[1];
    bufferevent_enable(client, EV_READ | EV_WRITE);
    for (size_t at = 0; at < n; at += step) {
        bufferevent_write(client, data + at, n - at < step ? n - at : step);
        settle(client, 2);
    }
    settle(client, 4);
    struct evbuffer *in = bufferevent_get_input(client);
    *len = evbuffer_get_length(in);
    char *text = malloc(*len + 1);
    if (!text)
        abort();
    evbuffer_remove(in, text, *len);
    text[*len] = '\0';
    bufferevent_free(client);
    /* The client is gone: a pair's other end is not told, so the server closes it as at
     * the drain's deadline, abandoning any body not yet complete. */
    http_server_close_all(server);
    size_t inflight;
    if (idem_table_check(keys, &inflight) || inflight) {
        fprintf(stderr, "key table inconsistent, or %zu keys still in flight\n", inflight);
        abort();
    }
    struct sink *log = http_server_keylog(server);
    if (log && truncate(sink_path(log), 0)) /* the key log would only grow */
        abort();
    return text;
}

/* The rows in the file: newlines outside quoted cells (a doubled quote toggles twice). */
static size_t count_rows(const char *p, size_t n)
{
    size_t count = 0;
    int quoted = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"')
            quoted = !quoted;
        else if (p[i] == '\n' && !quoted)
            count++;
    }
    return count;
}

/* The file's content; empties it for the next input. */
static char *take_rows(size_t *n)
{
    off_t end = lseek(rows_fd, 0, SEEK_END);
    if (end < 0)
        abort();
    char *p = malloc((size_t)end + 1);
    if (!p || pread(rows_fd, p, (size_t)end, 0) != end)
        abort();
    p[end] = '\0';
    *n = (size_t)end;
    if (ftruncate(rows_fd, 0) || lseek(rows_fd, 0, SEEK_SET)) /* the sink writes at the offset */
        abort();
    return p;
}

#define MAX_REQUESTS 4096

/* The ingest results of the 200s, in order: what POST / answered (bytes, valid, and 1 when
 * it was a replay). At most max; returns how many. */
#define OK_RESULT "HTTP/1.1 200 OK\r\n"
#define OK_BODY "\r\n\r\n{\"result\": {\"status\": \"ok\", \"stats\": {\"bytes\": "
#define REPLAYED "\r\nIdempotency-Replayed: true"
static size_t ok_results(const char *text, unsigned long long (*out)[3], size_t max)
{
    size_t k = 0;
    for (const char *p = text; (p = strstr(p, OK_RESULT)) != NULL; p += sizeof OK_RESULT - 1) {
        const char *end = strstr(p, "\r\n\r\n");
        if (!end || strncmp(end, OK_BODY, sizeof OK_BODY - 1))
            continue; /* /healthz, /metrics */
        unsigned long long bytes, valid;
        if (sscanf(end + sizeof OK_BODY - 1, "%llu, \"records\": {\"valid\": %llu", &bytes, &valid) != 2)
            abort();
        if (k < max) {
            out[k][0] = bytes;
            out[k][1] = valid;
            out[k][2] = end - p >= (ptrdiff_t)(sizeof REPLAYED - 1) &&
                        !memcmp(end - (sizeof REPLAYED - 1), REPLAYED, sizeof REPLAYED - 1);
        }
        k++;
    }
    return k;
}

static void raw(const uint8_t *data, size_t n, size_t step)
{
    size_t len, nrows;
    char *text = exchange(data, n, step, &len);
    unsigned long long results[MAX_REQUESTS][3], valid = 0;
    size_t k = ok_results(text, results, MAX_REQUESTS);
    if (k > MAX_REQUESTS)
        abort(); /* more 200s than the target can hold: raise MAX_REQUESTS */
    for (size_t i = 0; i < k; i++)
        valid += results[i][2] ? 0 : results[i][1]; /* a replay wrote nothing */
    char *file = take_rows(&nrows);
    if (count_rows(file, nrows) != valid) {
        fprintf(stderr, "rows written: %zu, valid in 200s: %llu\nresponses:\n%s\n",
                count_rows(file, nrows), valid, text);
        abort();
    }
    free(file);
    free(text);
}

/* The generated mode's input, read a byte at a time (0 once it runs out). */
struct input {
    const uint8_t *p;
    size_t n, at;
};

static unsigned next(struct input *in)
{
    return in->at < in->n ? in->p[in->at++] : 0;
}

struct out {
    char *p;
    size_t len, cap;
};

static void put(struct out *o, const void *s, size_t n)
{
    if (!n)
        return; /* s may be NULL: an empty body */
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2;
        o->p = realloc(o->p, o->cap);
        if (!o->p)
            abort();
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

#define PUT_TEXT(o, lit) put(o, lit, sizeof lit - 1)

static void putf(struct out *o, const char *fmt, unsigned long long a)
{
    char tmp[128];
    int k = snprintf(tmp, sizeof tmp, fmt, a);
    put(o, tmp, (size_t)k);
}

static void gzip_body(struct out *dst, const char *src, size_t n)
{
    z_stream z = {0};
    if (deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    uLong cap = deflateBound(&z, (uLong)n) + 32;
    dst->p = malloc(cap);
    if (!dst->p)
        abort();
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)dst->p;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        abort();
    dst->len = cap - z.avail_out;
    dst->cap = cap;
    deflateEnd(&z);
}

static void generated(const uint8_t *data, size_t n, size_t step)
{
    struct input in = {data, n, 0};
    struct out wire = {0}, want = {0};
    unsigned long long expect[MAX_REQUESTS][3];
    size_t posts = 0, responses = 0, refused = 0;
    unsigned long long seq = 0;
    /* Idempotency-Key: the four keys' first bodies (as sent, before chunking) and answers. */
    struct out first[4] = {{0}};
    unsigned long long first_valid[4] = {0};
    int used[4] = {0};
    input_no++;
    while (in.at < in.n && posts < MAX_REQUESTS) {
        unsigned ctl = next(&in), lines = next(&in) % 8, chunk = next(&in) % 13 + 1;
        int keyed = ctl & 0x20, key = keyed ? (int)(next(&in) % 4) : -1;
        /* a later use of a key: the same bytes (a retry) or, with 0x40, another body */
        int retry = keyed && used[key] && !(ctl & 0x40);
        if (ctl & 0x80) {
            PUT_TEXT(&wire, "GET /healthz HTTP/1.1\r\nHost: fuzz\r\n\r\n");
            responses++;
        }
        struct out body = {0};
        for (unsigned i = 0; !retry && i < lines; i++)
            putf(&body, "{\"a\":%llu,\"b\":\"x\"}\n", seq + i);
        struct out coded = {0};
        int gz = ctl & 0x04;
        if (retry) {
            put(&coded, first[key].p, first[key].len);
            gz = 0; /* the bytes are what counts, not how they are labelled */
        } else if (gz) {
            gzip_body(&coded, body.p ? body.p : "", body.len);
        } else {
            put(&coded, body.p, body.len);
        }
        /* what the server must do with it: process it, replay the first, or refuse it */
        enum { NEW, REPLAY, REFUSE } fate = NEW;
        if (keyed && used[key])
            fate = first[key].len == coded.len &&
                           (!coded.len || !memcmp(first[key].p, coded.p, coded.len))
                       ? REPLAY
                       : REFUSE;
        if (fate == NEW) {
            for (unsigned i = 0; i < lines; i++)
                putf(&want, "%llu,x\n", seq++);
            if (keyed) {
                used[key] = 1;
                put(&first[key], coded.p, coded.len);
                first_valid[key] = lines;
            }
        }
        switch ((ctl >> 3) & 3) {
        case 0: PUT_TEXT(&wire, "POST / HTTP/1.1\r\n"); break;
        case 1: PUT_TEXT(&wire, "POST /?name=");
            for (unsigned i = 0, k = 100 + next(&in) * 8; i < k; i++)
                PUT_TEXT(&wire, "q");
            PUT_TEXT(&wire, " HTTP/1.1\r\n");
            break;
        case 2: PUT_TEXT(&wire, "POST http://example.com:8888/?x=1 HTTP/1.1\r\n"); break;
        default: PUT_TEXT(&wire, "POST HTTP://example.com HTTP/1.1\r\n"); break;
        }
        PUT_TEXT(&wire, "Host: fuzz\r\n");
        if (gz)
            PUT_TEXT(&wire, "Content-Encoding: gzip\r\n");
        if (keyed) {
            putf(&wire, "Idempotency-Key: \"in%llu-", input_no);
            putf(&wire, "k%llu\"\r\n", (unsigned long long)key);
        }
        unsigned framing = ctl & 3;
        if (framing == 0) {
            putf(&wire, "Content-Length: %llu\r\n\r\n", coded.len);
            put(&wire, coded.p, coded.len);
        } else {
            PUT_TEXT(&wire, "Transfer-Encoding: chunked\r\n\r\n");
            for (size_t at = 0; at < coded.len; at += chunk) {
                size_t k = coded.len - at < chunk ? coded.len - at : chunk;
                putf(&wire, "%llx", k);
                if (framing == 2)
                    PUT_TEXT(&wire, ";ext=\"v\"");
                PUT_TEXT(&wire, "\r\n");
                put(&wire, coded.p + at, k);
                PUT_TEXT(&wire, "\r\n");
            }
            PUT_TEXT(&wire, "0\r\n");
            if (framing == 3)
                PUT_TEXT(&wire, "X-Trailer: t\r\n");
            PUT_TEXT(&wire, "\r\n");
        }
        if (fate == REFUSE) {
            refused++;
        } else {
            expect[posts][0] = coded.len;
            expect[posts][1] = fate == REPLAY ? first_valid[key] : lines;
            expect[posts][2] = fate == REPLAY;
            posts++;
        }
        responses++;
        free(coded.p);
        free(body.p);
    }
    for (int i = 0; i < 4; i++)
        free(first[i].p);
    size_t len, nrows;
    if (getenv("FUZZ_HTTP_DUMP"))
        fwrite(wire.p, 1, wire.len, stderr);
    char *text = exchange((const uint8_t *)wire.p, wire.len, step, &len);
    unsigned long long got[MAX_REQUESTS][3];
    size_t k = ok_results(text, got, MAX_REQUESTS);
    size_t all = 0, n422 = 0;
    for (const char *p = text; (p = strstr(p, "HTTP/1.1 ")) != NULL; p++)
        all++;
    for (const char *p = text; (p = strstr(p, "HTTP/1.1 422 ")) != NULL; p++)
        n422++;
    int bad = k != posts || all != responses || n422 != refused;
    for (size_t i = 0; !bad && i < k; i++)
        bad = got[i][0] != expect[i][0] || got[i][1] != expect[i][1] || got[i][2] != expect[i][2];
    char *file = take_rows(&nrows);
    if (bad || nrows != want.len || (nrows && memcmp(file, want.p, nrows))) {
        fprintf(stderr, "requests: %zu (%zu POST), 200s of POST: %zu, responses: %zu\n"
                        "rows: %zu bytes, want %zu\nsent:\n%.*s\nresponses:\n%s\n",
                responses, posts, k, all, nrows, want.len, (int)wire.len, wire.p, text);
        abort();
    }
    free(file);
    free(text);
    free(wire.p);
    free(want.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (!n)
        return 0;
    /* 1 .. 8129 bytes per write: every cut position is reachable through the input's own
     * layout, and small inputs get byte-at-a-time writes cheaply. */
    size_t step = (size_t)(data[0] >> 1) * 64 + 1;
    if (data[0] & 1)
        generated(data + 1, n - 1, step);
    else
        raw(data + 1, n - 1, step);
    return 0;
}
