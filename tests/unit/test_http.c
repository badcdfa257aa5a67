/* test_http.c -- requests through an http_server in-process, over a bufferevent pair: no
 * socket, no worker. The rows must land in the day's file, the answers in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <ftw.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "access_log.h"
#include "auth.h"
#include "catalog.h"
#include "http.h"
#include "ingest.h"
#include "options.h"
#include "sink.h"
#include "slots.h"
#include "testutil.h"

struct fixture {
    char dir[64];
    struct options o;
    struct event_base *base;
    struct worker_slot *slots;
    struct sink *rows;
    struct ingest_config ingest;
    struct access_log access;
    struct auth auth;
    struct http_server *http;
    struct catalog *catalog; /* --datasets (serve_datasets), or NULL */
    int syncs;      /* calls of the sync callback */
    int sync_fails; /* it answers an error */
};

static int sync_cb(void *arg, char *err, size_t errlen)
{
    struct fixture *f = arg;
    f->syncs++;
    if (f->sync_fails) {
        snprintf(err, errlen, "disk on fire");
        return -5;
    }
    return sink_sync(f->rows);
}

/* The fixture's server, with drained as its drain's end (or NULL). */
static void serve(struct fixture *f, void (*drained)(void *))
{
    const struct http_server_config cfg = {
        .o = &f->o, .base = f->base, .slots = f->slots, .nslots = 1, .index = 0,
        .ingest = &f->ingest, .access = &f->access, .auth = &f->auth, .log_prefix = "test",
        .catalog = f->catalog ? &f->catalog : NULL,
        .sync = sync_cb, .drained = drained, .arg = f,
    };
    f->http = http_server_new(&cfg);
    assert_non_null(f->http);
}

/* A server over a fresh temp dir; extra: more options ("--fsync request"), or NULL. */
static struct fixture *start(const char *extra)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test_http.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char *argv[8] = {"ndingest", "--out-dir", f->dir, "--columns", "a,b", "--quiet"};
    int argc = 6;
    char copy[64] = "";
    if (extra) {
        snprintf(copy, sizeof copy, "%s", extra);
        argv[argc++] = strtok(copy, " ");
        argv[argc++] = strtok(NULL, " ");
    }
    assert_int_equal(options_parse(&f->o, argc, argv), 0);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->slots = aligned_alloc(64, sizeof *f->slots);
    assert_non_null(f->slots);
    memset(f->slots, 0, sizeof *f->slots);
    char err[256];
    const struct sink_config rows = {.dir = f->dir, .name = "t", .suffix = ".csv", .utc = 1};
    f->rows = sink_open_daily(&rows, err, sizeof err);
    assert_non_null(f->rows);
    f->ingest = (struct ingest_config){.columns = &f->o.columns, .max_line = f->o.max_line,
                                       .flush_bytes = 1 << 20, .rows = f->rows};
    f->access.fd = -1;
    serve(f, NULL);
    return f;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void stop(struct fixture *f)
{
    http_server_free(f->http);
    sink_close(f->rows);
    event_base_free(f->base);
    free(f->slots);
    options_free(&f->o);
    nftw(f->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
}

/* A client end attached to the server. */
static struct bufferevent *connect_client(struct fixture *f)
{
    struct bufferevent *pair[2];
    assert_int_equal(bufferevent_pair_new(f->base, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS,
                                          pair), 0);
    assert_int_equal(http_server_attach(f->http, pair[0], "pair"), 0);
    bufferevent_enable(pair[1], EV_READ | EV_WRITE);
    return pair[1];
}

/* Runs the loop until the client has n whole responses (Content-Length bodies) or 10 s
 * have passed; returns what arrived, NUL-terminated (the caller frees it). */
static char *responses(struct fixture *f, struct bufferevent *client, int n)
{
    struct evbuffer *in = bufferevent_get_input(client);
    time_t give_up = time(NULL) + 10;
    for (;;) {
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        size_t len = evbuffer_get_length(in);
        char *text = malloc(len + 1);
        assert_non_null(text);
        evbuffer_copyout(in, text, len);
        text[len] = '\0';
        int whole = 0;
        for (const char *p = text; (p = strstr(p, "HTTP/1.1 ")) != NULL;) {
            const char *cl = strstr(p, "Content-Length: "), *end = strstr(p, "\r\n\r\n");
            if (!cl || !end || end + 4 + atoi(cl + 16) > text + len)
                break;
            whole++;
            p = end + 4 + atoi(cl + 16);
        }
        if (whole >= n || time(NULL) > give_up) {
            evbuffer_drain(in, len);
            return text;
        }
        free(text);
        usleep(1000);
    }
}

#define SEND(client, s) assert_int_equal(bufferevent_write(client, s, sizeof s - 1), 0)

static const char body[] = "{\"a\":1,\"b\":\"x\"}\n{\"a\":2}\nnot json\n";

/* The day's file holds exactly want. */
static void expect_rows(struct fixture *f, const char *want)
{
    size_t len, n = strlen(want);
    char *rows = tu_slurp(sink_path(f->rows), &len);
    assert_int_equal(len, n);
    assert_memory_equal(rows, want, n);
    free(rows);
}

static void test_post_rows_land(void **state)
{
    (void)state;
    struct fixture *f = start(NULL);
    struct bufferevent *client = connect_client(f);
    char req[256];
    int n = snprintf(req, sizeof req, "POST /?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof body - 1, body);
    assert_int_equal(bufferevent_write(client, req, (size_t)n), 0);
    char *got = responses(f, client, 1);
    if (strncmp(got, "HTTP/1.1 200 OK\r\n", 17))
        fail_msg("got: %s", got);
    assert_non_null(strstr(got, "\"records\": {\"valid\": 2, \"invalid\": 1, \"total\": 3}"));
    assert_non_null(strstr(got, "X-Worker: 0\r\n"));
    assert_non_null(strstr(got, "Connection: keep-alive\r\n"));
    free(got);
    expect_rows(f, "1,x\n2,\n");
    assert_int_equal(atomic_load(&f->slots[0].metrics.rows_valid), 2);
    assert_int_equal(http_server_connections(f->http), 1);
    bufferevent_free(client);
    stop(f);
}

/* Pipelined requests are answered in order, each by its route. */
static void test_pipelined_routes(void **state)
{
    (void)state;
    struct fixture *f = start(NULL);
    struct bufferevent *client = connect_client(f);
    SEND(client, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
                 "DELETE /metrics HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    char *got = responses(f, client, 4);
    const char *a = strstr(got, "HTTP/1.1 200 OK"), *b = strstr(got, "HTTP/1.1 404 Not Found"),
               *c = strstr(got, "HTTP/1.1 405 Method Not Allowed"),
               *d = strstr(got, "ndingest_requests_total{code=\"405\"} 1\n");
    if (!a || !b || !c || !d || !(a < b && b < c && c < d))
        fail_msg("got: %s", got);
    assert_non_null(strstr(got, "{\"status\": \"ok\"}\n"));
    assert_non_null(strstr(got, "Allow: GET, HEAD\r\n"));
    assert_non_null(strstr(got, "Content-Type: text/plain; version=0.0.4\r\n"));
    free(got);
    bufferevent_free(client);
    stop(f);
}

/* With a token, a POST without it writes nothing and gets 401 (the connection closes: its
 * body is not read); /healthz stays open. */
static void test_token_guards_rows(void **state)
{
    (void)state;
    struct fixture *f = start(NULL);
    static struct auth_token sesame = {.token = "sesame", .len = 6};
    f->auth.tokens = &sesame;
    f->auth.count = 1;
    struct bufferevent *client = connect_client(f);
    SEND(client, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n");
    char *got = responses(f, client, 1);
    if (strncmp(got, "HTTP/1.1 401 Unauthorized\r\n", 27) || !strstr(got, "WWW-Authenticate: Bearer\r\n") ||
        !strstr(got, "Connection: close\r\n"))
        fail_msg("got: %s", got);
    free(got);
    bufferevent_free(client);
    client = connect_client(f);
    SEND(client, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                 "POST / HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer sesame\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n");
    got = responses(f, client, 2);
    const char *health = strstr(got, "{\"status\": \"ok\"}"), *ok = strstr(got, "\"valid\": 1");
    if (!health || !ok || health > ok)
        fail_msg("got: %s", got);
    free(got);
    expect_rows(f, "1,\n");
    bufferevent_free(client);
    stop(f);
}

/* --fsync request: the answer waits for the server's sync callback; its failure is a 500
 * with its message, and the rows stay written (not acknowledged). */
static void test_group_commit_uses_the_callback(void **state)
{
    (void)state;
    struct fixture *f = start("--fsync request");
    struct bufferevent *a = connect_client(f), *b = connect_client(f);
    SEND(a, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n");
    SEND(b, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n{\"a\":2}\n");
    char *got_a = responses(f, a, 1), *got_b = responses(f, b, 1);
    assert_int_equal(strncmp(got_a, "HTTP/1.1 200 OK\r\n", 17), 0);
    assert_int_equal(strncmp(got_b, "HTTP/1.1 200 OK\r\n", 17), 0);
    assert_true(f->syncs >= 1 && f->syncs <= 2);
    free(got_a);
    free(got_b);
    f->sync_fails = 1;
    SEND(a, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n{\"a\":3}\n");
    got_a = responses(f, a, 1);
    if (strncmp(got_a, "HTTP/1.1 500 Internal Server Error\r\n", 36) || !strstr(got_a, "disk on fire"))
        fail_msg("got: %s", got_a);
    free(got_a);
    bufferevent_free(a);
    bufferevent_free(b);
    stop(f);
}

/* The drain closes an idle connection at once and calls drained() when the last goes. */
static int drained_calls;
static void drained_cb(void *arg)
{
    (void)arg;
    drained_calls++;
}

static void test_drain(void **state)
{
    (void)state;
    struct fixture *f = start(NULL);
    http_server_free(f->http);
    serve(f, drained_cb);
    struct bufferevent *idle = connect_client(f), *busy = connect_client(f);
    SEND(busy, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n{\"a\":");
    free(responses(f, busy, 0));
    assert_int_equal(http_server_connections(f->http), 2);
    drained_calls = 0;
    http_server_drain(f->http);
    assert_int_equal(http_server_connections(f->http), 1);
    assert_int_equal(drained_calls, 0);
    SEND(busy, "1}\n");
    char *got = responses(f, busy, 1);
    if (strncmp(got, "HTTP/1.1 200 OK\r\n", 17) || !strstr(got, "Connection: close\r\n"))
        fail_msg("got: %s", got);
    free(got);
    for (time_t until = time(NULL) + 10; http_server_connections(f->http) && time(NULL) < until;)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(http_server_connections(f->http), 0);
    assert_int_equal(drained_calls, 1);
    bufferevent_free(idle);
    bufferevent_free(busy);
    stop(f);
}

/* Issue #9: a query of any length still routes on the path (the target used to be cut at
 * 64 bytes and answered 404), and so does an absolute-form target (RFC 9112 3.2.2). */
static void test_long_query_and_absolute_form_route(void **state)
{
    (void)state;
    struct fixture *f = start(NULL);
    struct bufferevent *client = connect_client(f);
    char req[8192];
    char query[4001];
    memset(query, 'q', sizeof query - 1);
    query[sizeof query - 1] = '\0';
    int n = snprintf(req, sizeof req,
                     "POST /?name=%s HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n"
                     "POST http://example.com:8888/?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n"
                     "{\"a\":2}\n"
                     "GET HTTP://example.com/healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                     "POST http://example.com HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n{\"a\":3}\n"
                     "GET http://example.com/nope?/healthz HTTP/1.1\r\nHost: t\r\n\r\n",
                     query);
    assert_int_equal(bufferevent_write(client, req, (size_t)n), 0);
    char *got = responses(f, client, 5);
    const char *a = strstr(got, "\"valid\": 1"), *h = strstr(got, "{\"status\": \"ok\"}"),
               *nf = strstr(got, "HTTP/1.1 404 Not Found");
    if (!a || !h || !nf || strstr(got, "HTTP/1.1 4") != nf)
        fail_msg("got: %s", got);
    free(got);
    expect_rows(f, "1,\n2,\n3,\n");
    bufferevent_free(client);
    stop(f);
}

/* A path longer than --max-path gets 414 (and nothing is written); one at the limit routes. */
/* MARK: - --datasets */

static const char dataset_text[] = "SCHEMA >\n    `id` Int64 `json:$.id`\n";

/* Writes DIR/defs/NAME.datasource for each name ("a,b"); removes it for "-a". */
static void define(struct fixture *f, const char *names)
{
    char defs[128], path[192], copy[64];
    snprintf(defs, sizeof defs, "%s/defs", f->dir);
    (void)mkdir(defs, 0755);
    snprintf(copy, sizeof copy, "%s", names);
    for (char *save = NULL, *n = strtok_r(copy, ",", &save); n; n = strtok_r(NULL, ",", &save)) {
        snprintf(path, sizeof path, "%s/%s.datasource", defs, n[0] == '-' ? n + 1 : n);
        if (n[0] == '-') {
            assert_int_equal(unlink(path), 0);
            continue;
        }
        FILE *file = fopen(path, "wb");
        assert_non_null(file);
        fputs(dataset_text, file);
        assert_int_equal(fclose(file), 0);
    }
}

/* The set DIR/defs holds now, opened as a worker would (files in DIR). */
static struct catalog *load_datasets(struct fixture *f, struct catalog_shared *sh)
{
    char defs[128], err[300];
    snprintf(defs, sizeof defs, "%s/defs", f->dir);
    struct catalog *c = catalog_load(defs, 8, NULL, sh, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    const struct catalog_files files = {.dir = f->dir, .utc = 1, .quarantine = 1, .base = &f->ingest};
    if (catalog_open(c, &files, err, sizeof err))
        fail_msg("%s", err);
    return c;
}

/* The fixture's server again, now with --datasets. */
static struct catalog_shared *serve_datasets(struct fixture *f)
{
    struct catalog_shared *sh = catalog_shared_map(32, 1, NULL, 0);
    assert_non_null(sh);
    f->catalog = load_datasets(f, sh);
    http_server_free(f->http);
    serve(f, NULL);
    return sh;
}

static void stop_datasets(struct fixture *f, struct catalog_shared *sh)
{
    http_server_free(f->http);
    f->http = NULL;
    catalog_release(f->catalog);
    catalog_shared_unmap(sh);
    stop(f);
}

/* Dataset name's day file (suffix ".csv" or ".quarantine.csv") holds exactly want. */
static void expect_dataset(struct fixture *f, const char *name, const char *suffix, const char *want)
{
    char path[256], day[16];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(day, sizeof day, "%Y-%m-%d", &tm);
    snprintf(path, sizeof path, "%s/%s-%s%s", f->dir, name, day, suffix);
    size_t len;
    char *got = tu_slurp(path, &len);
    if (len != strlen(want) || memcmp(got, want, len))
        fail_msg("%s holds '%.*s', not '%s'", path, (int)len, got, want);
    free(got);
}

/* Requests finishing in one loop turn for several datasets: each dataset's rows in its own
 * file (one write per file), each answer Tinybird's. */
static void test_events_to_several_datasets(void **state)
{
    (void)state;
    struct fixture *f = start(NULL);
    define(f, "a,b");
    struct catalog_shared *sh = serve_datasets(f);
    struct bufferevent *c1 = connect_client(f), *c2 = connect_client(f), *c3 = connect_client(f);
    SEND(c1, "POST /v0/events?name=a HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{\"id\": 1}\n");
    SEND(c2, "POST /v0/events?wait=true&name=b HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{\"id\": 2}\n");
    SEND(c3, "POST /v0/events?name=a HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{\"id\": 1}\n");
    char *got[3] = {responses(f, c1, 1), responses(f, c2, 1), responses(f, c3, 1)};
    static const char ok[] = "{\"successful_rows\": 1, \"quarantined_rows\": 0}\n";
    for (int i = 0; i < 3; i++) {
        int want = i == 1 ? 200 : 202;
        char head[32];
        snprintf(head, sizeof head, "HTTP/1.1 %d ", want);
        if (strncmp(got[i], head, strlen(head)) || !strstr(got[i], ok))
            fail_msg("response %d: %s", i, got[i]);
        free(got[i]);
    }
    expect_dataset(f, "a", ".csv", "1\n1\n");
    expect_dataset(f, "b", ".csv", "2\n");
    const struct catalog_dataset *a = catalog_find(f->catalog, "a", 1);
    assert_int_equal(atomic_load(&a->m->rows_valid), 2);
    assert_int_equal(atomic_load(&a->m->bodies), 2);
    bufferevent_free(c1);
    bufferevent_free(c2);
    bufferevent_free(c3);
    stop_datasets(f, sh);
}

/* A reload between a request's headers and its body's end: the request finishes on the set
 * it started with (its dataset is gone from the new one), the next one gets 404. Under
 * ASan, a definition or a sink freed too early is a use after free here. */
static void test_reload_mid_body(void **state)
{
    (void)state;
    struct fixture *f = start(NULL);
    define(f, "a,b");
    struct catalog_shared *sh = serve_datasets(f);
    struct bufferevent *client = connect_client(f);
    SEND(client, "POST /v0/events?name=a HTTP/1.1\r\nHost: t\r\nContent-Length: 26\r\n\r\n{\"id\": 7}\n{\"id\"");
    for (int i = 0; i < 20; i++)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    define(f, "-a");
    struct catalog *next = load_datasets(f, sh);
    catalog_release(f->catalog);
    f->catalog = next;
    assert_null(catalog_find(f->catalog, "a", 1));
    SEND(client, ": 8}\n{oops\n");
    char *got = responses(f, client, 1);
    if (strncmp(got, "HTTP/1.1 202 ", 13) ||
        !strstr(got, "{\"successful_rows\": 2, \"quarantined_rows\": 1}\n"))
        fail_msg("got: %s", got);
    free(got);
    expect_dataset(f, "a", ".csv", "7\n8\n");
    SEND(client, "POST /v0/events?name=a HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{\"id\": 9}\n");
    got = responses(f, client, 1);
    if (strncmp(got, "HTTP/1.1 404 ", 13) || !strstr(got, "no dataset a"))
        fail_msg("got: %s", got);
    free(got);
    expect_dataset(f, "a", ".csv", "7\n8\n");
    bufferevent_free(client);
    stop_datasets(f, sh);
}

static void test_long_path_414(void **state)
{
    (void)state;
    struct fixture *f = start("--max-path 64");
    struct bufferevent *client = connect_client(f);
    char req[512];
    /* "/" and 63 more: at the limit, an unknown path (404, the connection stays). */
    int n = snprintf(req, sizeof req, "GET /%063d HTTP/1.1\r\nHost: t\r\n\r\n", 0);
    assert_int_equal(bufferevent_write(client, req, (size_t)n), 0);
    char *got = responses(f, client, 1);
    if (strncmp(got, "HTTP/1.1 404 Not Found\r\n", 24))
        fail_msg("got: %s", got);
    free(got);
    n = snprintf(req, sizeof req, "POST /%064d?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n",
                 0);
    assert_int_equal(bufferevent_write(client, req, (size_t)n), 0);
    got = responses(f, client, 1);
    if (strncmp(got, "HTTP/1.1 414 URI Too Long\r\n", 27) || !strstr(got, "--max-path 64"))
        fail_msg("got: %s", got);
    free(got);
    assert_int_equal(access(sink_path(f->rows), F_OK), -1); /* no row, so no day's file */
    bufferevent_free(client);
    client = connect_client(f);
    SEND(client, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    got = responses(f, client, 1);
    if (!strstr(got, "ndingest_requests_total{code=\"414\"} 1\n"))
        fail_msg("got: %s", got);
    free(got);
    bufferevent_free(client);
    stop(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_rows_land),
        cmocka_unit_test(test_pipelined_routes),
        cmocka_unit_test(test_token_guards_rows),
        cmocka_unit_test(test_group_commit_uses_the_callback),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_long_query_and_absolute_form_route),
        cmocka_unit_test(test_long_path_414),
        cmocka_unit_test(test_events_to_several_datasets),
        cmocka_unit_test(test_reload_mid_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
