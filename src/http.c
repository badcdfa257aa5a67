/* http.c -- one client connection: llhttp framing over a bufferevent, routes, responses. */
#include "http.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <llhttp.h>

#include "decode.h"
#include "ingest.h"
#include "worker.h"

/* Responses waiting for a client that pipelines without reading them: past this much, the
 * connection stops reading requests until its output has drained. */
#define HTTP_OUTPUT_HIGH (256 * 1024)
/* One read(2) may take this much; fewer, larger reads cost fewer wake-ups per body. */
#define HTTP_MAX_READ (256 * 1024)
/* After an error response with the body unread, the socket keeps reading (and discarding)
 * this long before closing, so that the client reads the response instead of a reset. */
#define HTTP_LINGER_SEC 2
#define HTTP_PEEK_VECS 16

enum route { ROUTE_NONE, ROUTE_INGEST, ROUTE_HEALTH, ROUTE_UNKNOWN };
enum header_id { HEADER_OTHER, HEADER_CONTENT_ENCODING, HEADER_EXPECT };

/* What one request has said so far. Only the few headers that matter are kept, each in a
 * small fixed buffer: anything longer is not a value we accept anyway. */
struct http_request {
    uint64_t body_bytes;
    uint32_t header_bytes;
    uint16_t url_len;
    uint8_t field_len, value_len;
    uint8_t url_long, field_long, value_long;
    uint8_t header;          /* enum header_id of the value being read */
    uint8_t headers_done;    /* later header callbacks are trailers */
    uint8_t route;           /* enum route */
    uint8_t ingesting;       /* ingest_begin was called and neither end nor abort yet */
    uint8_t responded;       /* the final response is already queued */
    uint8_t expect_continue;
    uint8_t encoding_seen, encoding_bad;
    uint8_t encoding;        /* enum content_encoding */
    uint8_t bad_encoding_len;
    char bad_encoding[32];   /* the refused Content-Encoding, for the 415 message */
    char url[64];
    char field[24];
    char value[64];
};

struct http_conn {
    struct http_conn *prev, *next; /* the worker's list */
    struct worker *w;
    struct bufferevent *bev;
    llhttp_t parser;
    struct http_request req;
    unsigned in_message : 1;  /* between the first byte of a request and its end */
    unsigned closing : 1;     /* no more requests: close once the output is flushed */
    unsigned linger : 1;      /* ...and read the unread rest for a while first */
    unsigned shut : 1;        /* our side is shut down: lingering */
    unsigned eof : 1;         /* the client has closed its side */
    unsigned output_full : 1; /* reading paused until the output drains */
    struct timespec linger_until;
    struct ingest ingest;     /* reused by every request of the connection */
};

static int on_message_begin(llhttp_t *p);
static int on_url(llhttp_t *p, const char *at, size_t n);
static int on_header_field(llhttp_t *p, const char *at, size_t n);
static int on_header_field_complete(llhttp_t *p);
static int on_header_value(llhttp_t *p, const char *at, size_t n);
static int on_header_value_complete(llhttp_t *p);
static int on_headers_complete(llhttp_t *p);
static int on_body(llhttp_t *p, const char *at, size_t n);
static int on_message_complete(llhttp_t *p);

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static const char *status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    default: return "Error";
    }
}

/* Queues one complete response. extra: more header lines, each ending in CRLF. */
static void respond(struct http_conn *c, int status, const char *extra, const char *body,
                    size_t len, int keep_alive)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "X-Worker: %d\r\nConnection: %s\r\n%s\r\n",
                     status, status_text(status), len, c->w->index,
                     keep_alive ? "keep-alive" : "close", extra ? extra : "");
    evbuffer_add(out, head, (size_t)n);
    /* HEAD gets the length of what GET would have sent, and nothing more. */
    if (llhttp_get_method(&c->parser) != HTTP_HEAD)
        evbuffer_add(out, body, len);
    c->req.responded = 1;
    atomic_fetch_add_explicit(&c->w->slot->requests, 1, memory_order_relaxed);
}

/* s[0..n) as the inside of a JSON string; bytes that need more than a backslash become '?'
 * (messages are ASCII; a header value echoed back may not be). */
static size_t json_escape(char *dst, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 2 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)ch;
        } else {
            dst[o++] = ch < 0x20 || ch >= 0x7f ? '?' : (char)ch;
        }
    }
    dst[o] = '\0';
    return o;
}

static void respond_error(struct http_conn *c, int status, const char *extra, const char *msg,
                          int keep_alive)
{
    char text[300], body[400];
    json_escape(text, sizeof text, msg, strlen(msg));
    int n = snprintf(body, sizeof body, "{\"error\": \"%s\"}\n", text);
    respond(c, status, extra, body, (size_t)n, keep_alive);
}

/* No more requests on this connection; linger when the client may still be sending. */
static void stop_reading_requests(struct http_conn *c, int linger)
{
    c->closing = 1;
    c->linger |= linger;
    if (!c->linger)
        bufferevent_disable(c->bev, EV_READ);
}

static void abandon_body(struct http_conn *c)
{
    if (c->req.ingesting) {
        ingest_abort(&c->ingest);
        c->req.ingesting = 0;
    }
}

/* An error response that ends the connection, the request's body unread. */
static void reject(struct http_conn *c, int status, const char *extra, const char *msg)
{
    abandon_body(c);
    respond_error(c, status, extra, msg, 0);
    stop_reading_requests(c, 1);
}

static int has_body(const llhttp_t *p)
{
    return (p->flags & F_CHUNKED) || p->content_length > 0;
}

/* A request refused from its headers. Without a body the connection can carry on (the
 * message completes at once); with one, answering now spares the client sending it. */
static int reject_early(struct http_conn *c, int status, const char *extra, const char *msg)
{
    if (has_body(&c->parser) || !llhttp_should_keep_alive(&c->parser) || c->w->draining) {
        reject(c, status, extra, msg);
        return HPE_PAUSED;
    }
    respond_error(c, status, extra, msg, 1);
    return 0;
}

static int count_header_bytes(struct http_conn *c, size_t n)
{
    c->req.header_bytes += (uint32_t)(n < HTTP_MAX_HEADER_BYTES ? n : HTTP_MAX_HEADER_BYTES);
    if (c->req.header_bytes <= HTTP_MAX_HEADER_BYTES)
        return 0;
    if (!c->closing)
        reject(c, 431, NULL, "request headers are larger than 64 KiB");
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    struct http_conn *c = p->data;
    memset(&c->req, 0, sizeof c->req);
    c->in_message = 1;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct http_request *r = &((struct http_conn *)p->data)->req;
    if (count_header_bytes(p->data, n))
        return -1;
    if (n > sizeof r->url - r->url_len)
        r->url_long = 1;
    else {
        memcpy(r->url + r->url_len, at, n);
        r->url_len += (uint16_t)n;
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct http_request *r = &((struct http_conn *)p->data)->req;
    if (count_header_bytes(p->data, n))
        return -1;
    if (n > sizeof r->field - r->field_len)
        r->field_long = 1;
    else {
        memcpy(r->field + r->field_len, at, n);
        r->field_len += (uint8_t)n;
    }
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct http_request *r = &((struct http_conn *)p->data)->req;
    r->header = HEADER_OTHER;
    if (!r->field_long && !r->headers_done) {
        if (r->field_len == 16 && !strncasecmp(r->field, "content-encoding", 16))
            r->header = HEADER_CONTENT_ENCODING;
        else if (r->field_len == 6 && !strncasecmp(r->field, "expect", 6))
            r->header = HEADER_EXPECT;
    }
    r->field_len = 0;
    r->field_long = 0;
    r->value_len = 0;
    r->value_long = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct http_request *r = &((struct http_conn *)p->data)->req;
    if (count_header_bytes(p->data, n))
        return -1;
    if (r->header == HEADER_OTHER)
        return 0;
    if (n > sizeof r->value - r->value_len)
        r->value_long = 1;
    else {
        memcpy(r->value + r->value_len, at, n);
        r->value_len += (uint8_t)n;
    }
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct http_request *r = &((struct http_conn *)p->data)->req;
    /* The name, ": " and CRLF: a flood of empty headers counts too. */
    if (count_header_bytes(p->data, 4))
        return -1;
    if (r->header == HEADER_CONTENT_ENCODING) {
        enum content_encoding enc;
        /* Two Content-Encoding headers mean stacked codings, which we do not undo. */
        if (r->encoding_seen || r->value_long || decode_parse_encoding(r->value, r->value_len, &enc)) {
            r->encoding_bad = 1;
            r->bad_encoding_len = r->value_len < sizeof r->bad_encoding ? r->value_len
                                                                       : sizeof r->bad_encoding;
            memcpy(r->bad_encoding, r->value, r->bad_encoding_len);
        } else
            r->encoding = (uint8_t)enc;
        r->encoding_seen = 1;
    } else if (r->header == HEADER_EXPECT) {
        r->expect_continue = !r->value_long && r->value_len == 12 &&
                             !strncasecmp(r->value, "100-continue", 12);
    }
    return 0;
}

static enum route route_of(const struct http_request *r)
{
    if (r->url_long)
        return ROUTE_UNKNOWN;
    size_t n = 0;
    while (n < r->url_len && r->url[n] != '?' && r->url[n] != '#')
        n++;
    if (n == 1 && r->url[0] == '/')
        return ROUTE_INGEST;
    if (n == 8 && !memcmp(r->url, "/healthz", 8))
        return ROUTE_HEALTH;
    return ROUTE_UNKNOWN;
}

static int on_headers_complete(llhttp_t *p)
{
    struct http_conn *c = p->data;
    struct http_request *r = &c->req;
    const struct options *o = c->w->o;
    r->headers_done = 1;
    r->route = (uint8_t)route_of(r);
    int method = llhttp_get_method(p);
    if (r->route == ROUTE_UNKNOWN)
        return reject_early(c, 404, NULL, "no such path: POST bodies to /, GET /healthz");
    if (r->route == ROUTE_HEALTH)
        return method == HTTP_GET || method == HTTP_HEAD
                   ? 0
                   : reject_early(c, 405, "Allow: GET, HEAD\r\n", "method not allowed: use GET");
    if (method != HTTP_POST)
        return reject_early(c, 405, "Allow: POST\r\n", "method not allowed: use POST");
    if (r->encoding_bad) {
        char msg[128];
        snprintf(msg, sizeof msg, "unsupported Content-Encoding: %.*s (use gzip, deflate or identity)",
                 (int)r->bad_encoding_len, r->bad_encoding);
        return reject_early(c, 415, NULL, msg);
    }
    if (o->max_body && (p->flags & F_CONTENT_LENGTH) && p->content_length > o->max_body) {
        char msg[128];
        snprintf(msg, sizeof msg, "body of %llu bytes is larger than --max-body %llu",
                 (unsigned long long)p->content_length, (unsigned long long)o->max_body);
        return reject_early(c, 413, NULL, msg);
    }
    if (ingest_begin(&c->ingest, (enum content_encoding)r->encoding) != INGEST_OK) {
        fprintf(stderr, "%s: %s\n", c->w->log_prefix, c->ingest.error);
        return reject_early(c, 500, NULL, c->ingest.error);
    }
    r->ingesting = 1;
    /* The client waits for this before sending the body (curl, for a second or so). */
    if (r->expect_continue && has_body(p) && p->http_major == 1 && p->http_minor >= 1)
        bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

static int ingest_failed(struct http_conn *c, enum ingest_status st)
{
    if (st == INGEST_EDECODE)
        return 400;
    fprintf(stderr, "%s: 500: %s\n", c->w->log_prefix, c->ingest.error);
    return 500;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    struct http_request *r = &c->req;
    r->body_bytes += n;
    if (!r->ingesting)
        return 0; /* a body nobody asked for (GET /healthz with one): skipped */
    uint64_t max = c->w->o->max_body;
    if (max && r->body_bytes > max) {
        char msg[128];
        snprintf(msg, sizeof msg, "body is larger than --max-body %llu", (unsigned long long)max);
        reject(c, 413, NULL, msg);
        return -1;
    }
    enum ingest_status st = ingest_feed(&c->ingest, at, n);
    if (st != INGEST_OK) {
        /* The rest of the body cannot succeed: answer now rather than read it all. */
        reject(c, ingest_failed(c, st), NULL, c->ingest.error);
        return -1;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct http_conn *c = p->data;
    struct http_request *r = &c->req;
    int keep_alive = llhttp_should_keep_alive(p) && !c->w->draining;
    c->in_message = 0;
    if (r->responded) {
        /* refused early, without a body */
    } else if (r->route == ROUTE_HEALTH) {
        static const char ok[] = "{\"status\": \"ok\"}\n";
        respond(c, 200, NULL, ok, sizeof ok - 1, keep_alive);
    } else if (r->route == ROUTE_INGEST) {
        r->ingesting = 0;
        enum ingest_status st = ingest_end(&c->ingest);
        if (st == INGEST_OK) {
            char body[256];
            int n = ingest_stats_json(&c->ingest.stats, body, sizeof body);
            respond(c, 200, NULL, body, (size_t)n, keep_alive);
        } else {
            respond_error(c, ingest_failed(c, st), NULL, c->ingest.error, keep_alive);
        }
    }
    if (keep_alive)
        return 0;
    stop_reading_requests(c, 0);
    return HPE_PAUSED;
}

/* The parser stopped with e, and not because a callback of ours said so. */
static void parse_failed(struct http_conn *c, llhttp_errno_t e)
{
    if (c->closing)
        return;
    if (e == HPE_PAUSED_UPGRADE) { /* CONNECT, or an Upgrade we do not speak: answered */
        stop_reading_requests(c, 0);
        return;
    }
    char msg[200];
    const char *why = llhttp_get_error_reason(&c->parser);
    snprintf(msg, sizeof msg, "malformed request: %s", why ? why : llhttp_errno_name(e));
    reject(c, 400, NULL, msg);
}

static void linger_start(struct http_conn *c)
{
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    c->shut = 1;
    clock_gettime(CLOCK_MONOTONIC, &c->linger_until);
    c->linger_until.tv_sec += HTTP_LINGER_SEC;
    const struct timeval tv = {HTTP_LINGER_SEC, 0};
    bufferevent_set_timeouts(c->bev, &tv, &tv);
    bufferevent_enable(c->bev, EV_READ);
}

static int linger_over(const struct http_conn *c)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > c->linger_until.tv_sec ||
           (now.tv_sec == c->linger_until.tv_sec && now.tv_nsec >= c->linger_until.tv_nsec);
}

/* Everything queued has been written and no more requests are read. */
static void closing_flushed(struct http_conn *c)
{
    if (!c->linger || c->eof)
        http_conn_free(c);
    else if (!c->shut)
        linger_start(c);
}

/* Parses what has arrived, straight from the input buffer: bodies go to ingest_feed in
 * the spans llhttp hands over, and pipelined requests are answered in order because each
 * response is queued when its request completes. Must be the last use of c by its caller. */
static void read_requests(struct http_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->closing && !c->output_full) {
        struct evbuffer_iovec v[HTTP_PEEK_VECS];
        int n = evbuffer_peek(in, -1, NULL, v, HTTP_PEEK_VECS);
        if (n <= 0)
            break;
        if (n > HTTP_PEEK_VECS)
            n = HTTP_PEEK_VECS;
        size_t used = 0;
        llhttp_errno_t e = HPE_OK;
        for (int i = 0; i < n && e == HPE_OK; i++) {
            e = llhttp_execute(&c->parser, v[i].iov_base, v[i].iov_len);
            used += v[i].iov_len;
        }
        evbuffer_drain(in, used);
        if (e != HPE_OK)
            parse_failed(c, e);
        else if (evbuffer_get_length(bufferevent_get_output(c->bev)) > HTTP_OUTPUT_HIGH) {
            c->output_full = 1;
            bufferevent_disable(c->bev, EV_READ);
        }
    }
    if (!c->closing)
        return;
    evbuffer_drain(in, evbuffer_get_length(in));
    if (c->shut && linger_over(c))
        http_conn_free(c);
    else if (!evbuffer_get_length(bufferevent_get_output(c->bev)))
        closing_flushed(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    read_requests(arg);
}

/* Called when the output has drained (the low watermark is 0). */
static void write_cb(struct bufferevent *bev, void *arg)
{
    struct http_conn *c = arg;
    if (c->closing) {
        closing_flushed(c);
    } else if (c->output_full) {
        c->output_full = 0;
        bufferevent_enable(bev, EV_READ);
        read_requests(c);
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct http_conn *c = arg;
    if ((what & BEV_EVENT_EOF) && !(what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))) {
        c->eof = 1;
        /* A client that half-closes after its last request still gets the answers. */
        if (evbuffer_get_length(bufferevent_get_output(bev))) {
            if (c->closing)
                return; /* closing_flushed() frees it */
            if (!c->in_message) {
                stop_reading_requests(c, 0);
                return;
            }
        }
    }
    /* An error, a timeout (idle, or mid-body: the body is abandoned), or the client gone. */
    http_conn_free(c);
}

struct http_conn *http_conn_new(struct worker *w, evutil_socket_t fd)
{
    struct http_conn *c = malloc(sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    memset(c, 0, offsetof(struct http_conn, ingest));
    c->w = w;
    c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        close(fd);
        free(c);
        return NULL;
    }
    /* Responses are written whole; Nagle would only hold the next one back. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    ingest_init(&c->ingest, &w->ingest);
    const struct timeval tv = {(time_t)w->o->timeout, 0};
    bufferevent_set_timeouts(c->bev, &tv, &tv);
    bufferevent_set_max_single_read(c->bev, HTTP_MAX_READ);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    atomic_fetch_add_explicit(&w->slot->connections, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->slot->accepted, 1, memory_order_relaxed);
    return c;
}

void http_conn_drain(struct http_conn *c)
{
    if (c->closing || c->in_message)
        return; /* on its way out, or closes after its response */
    if (evbuffer_get_length(bufferevent_get_output(c->bev)))
        stop_reading_requests(c, 0);
    else
        http_conn_free(c);
}

struct http_conn *http_conn_next(const struct http_conn *c)
{
    return c->next;
}

void http_conn_free(struct http_conn *c)
{
    struct worker *w = c->w;
    abandon_body(c);
    ingest_free(&c->ingest);
    bufferevent_free(c->bev);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    atomic_fetch_sub_explicit(&w->slot->connections, 1, memory_order_relaxed);
    free(c);
    worker_conn_closed(w);
}
