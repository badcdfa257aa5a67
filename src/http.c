/* http.c -- a worker's connections: llhttp framing over bufferevents, routes, responses, group commit. */
#include "http.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <llhttp.h>

#include "access_log.h"
#include "auth.h"
#include "catalog.h"
#include "decode.h"
#include "delivery/deliver.h"
#include "http_strict.h"
#include "idempotency.h"
#include "inflight.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "net.h"
#include "pressure.h"
#include "options.h"
#include "route.h"
#include "slots.h"

/* Responses waiting for a client that pipelines without reading them: past this much, the
 * connection stops reading requests until its output has drained. */
#define HTTP_OUTPUT_HIGH ((size_t)256 << 10)
/* One read(2) may take this much; fewer, larger reads cost fewer wake-ups per body. */
#define HTTP_MAX_READ ((size_t)256 << 10)
/* libevent 2.1's evbuffer_read takes at most 4096 bytes per call, whatever the bufferevent's
 * max_single_read (2.2 makes it settable: evbuffer_set_max_read), after an ioctl(FIONREAD):
 * a 586 KB body costs ~143 wake-ups, each an epoll_wait, an ioctl and a readv. When its read
 * filled a page, more is likely waiting, so read_cb tops the input up directly. */
#define HTTP_EVBUFFER_READ 4096
/* After an error response with the body unread, the socket keeps reading (and discarding)
 * this long before closing, so that the client reads the response instead of a reset. */
#define HTTP_LINGER_SEC 2
#define HTTP_PEEK_VECS 16
/* The sinks one commit remembers having written (write_pending). */
#define HTTP_COMMIT_SINKS 16

/* What the connection's timer is waiting for. */
enum deadline { DEADLINE_NONE, DEADLINE_HEADERS, DEADLINE_BODY };
enum header_id { HEADER_OTHER, HEADER_CONTENT_ENCODING, HEADER_EXPECT, HEADER_AUTHORIZATION,
                 HEADER_IDEMPOTENCY_KEY };
/* What an Idempotency-Key makes of a request (idempotency.h): none; the first with its key
 * (processed, its outcome recorded); a retry of an answered one (its body read and hashed,
 * then replayed, or 422); a retry while the first is in flight (its body read, then 409). */
enum idem_mode { IDEM_MODE_NONE, IDEM_MODE_OWNER, IDEM_MODE_REPLAY, IDEM_MODE_CONFLICT };
/* Where the request target's bytes are, as they stream in (on_url may come in pieces).
 * Origin-form "/path?query#fragment" starts in TARGET_PATH; absolute-form
 * "http://authority/path?query" (RFC 9112 3.2.2) goes through SCHEME and AUTHORITY first;
 * anything else ("*", "x") is kept whole as the path, which then matches no route. */
enum target_part { TARGET_START, TARGET_SCHEME, TARGET_AUTHORITY, TARGET_PATH, TARGET_QUERY,
                   TARGET_FRAGMENT };
/* "Bearer " and a token of up to AUTH_TOKEN_MAX bytes, with room for extra spaces. */
#define HTTP_AUTH_MAX (AUTH_TOKEN_MAX + 32)
/* Idempotency-Key's raw value: a key of --max-idempotency-key bytes, each escaped, quoted,
 * with some spaces around. */
#define idem_raw_cap(o) (2 * (o)->max_idempotency_key + 8)

/* What one request has said so far. Only the few headers that matter are kept, each in a
 * small fixed buffer: anything longer is not a value we accept anyway. */
struct http_request {
    const struct route *route; /* NULL until the headers are complete, or 404 */
    uint64_t body_bytes;
    uint64_t header_bytes;
    uint32_t header_count;   /* fields, trailers included */
    uint16_t url_len;
    uint8_t field_len, value_len;
    uint8_t url_long, field_long, value_long;
    uint8_t header;          /* enum header_id of the value being read */
    uint8_t headers_done;    /* later header callbacks are trailers */
    uint8_t ingesting;       /* ingest_begin was called and neither end nor abort yet */
    uint8_t responded;       /* the final response is already queued */
    uint8_t expect_continue;
    uint8_t method_known;    /* the request line got as far as the URL */
    uint8_t ingest_begun;    /* c->ingest.stats are this request's */
    uint8_t accounted;       /* ...and were added to the metrics */
    uint8_t encoding_seen, encoding_bad;
    uint8_t encoding;        /* enum content_encoding */
    uint8_t bad_encoding_len;
    char bad_encoding[32];   /* the refused Content-Encoding, for the 415 message */
    char url[64];            /* the target as received, cut at 64 bytes: for the access log */
    uint8_t target_part;     /* enum target_part */
    uint8_t path_long;       /* the path is longer than --max-path: 414 */
    uint8_t query_long;      /* the query is too: a route that reads it must answer 414 */
    size_t path_len, query_len; /* in the connection's path and query buffers */
    char field[24];
    char value[64];
    uint16_t auth_len;       /* --token-file: the Authorization value */
    uint8_t auth_long, auth_count;
    char auth[HTTP_AUTH_MAX];
    /* --datasets: the dataset the body appends to (in the connection's held catalog), and
     * for /v0/events its answer: Tinybird's counts, 200 with wait=true, else 202. */
    const struct catalog_dataset *dataset;
    uint8_t events, wait;
    /* Idempotency-Key: its fields, the raw value's length (in the connection's idem_raw)
     * or that it was longer, the mode, whether the body was read whole (its hash is the
     * fingerprint) and whether the outcome's record went into this turn's key log write. */
    uint8_t idem_count, idem_long, idem_mode, idem_body_done, idem_written;
    uint16_t idem_raw_len;
    struct idem_id idem_id;
};

struct http_conn {
    struct http_conn *prev, *next; /* the server's list */
    struct http_server *s;
    struct bufferevent *bev;
    llhttp_t parser;
    struct http_strict strict; /* checks the framing ahead of the parser */
    struct http_request req;
    unsigned in_message : 1;  /* between the first byte of a request and its end */
    unsigned closing : 1;     /* no more requests: close once the output is flushed */
    unsigned linger : 1;      /* ...and read the unread rest for a while first */
    unsigned shut : 1;        /* our side is shut down: lingering */
    unsigned eof : 1;         /* the client has closed its side */
    unsigned output_full : 1; /* reading paused until the output drains */
    unsigned deadline : 2;    /* enum deadline */
    unsigned sync_wait : 1;   /* on the server's commit list, parsing paused */
    unsigned sync_keep_alive : 1; /* ...and what its response will say */
    unsigned commit_failed : 1; /* its sink refused this turn's write: commit_error says why */
    unsigned commit_busy : 1; /* ...because the table of ranges in flight was full: 503 */
    int ingest_entry;         /* its entry for the group write in progress (inflight.h) */
    struct http_conn *commit_next;
    char commit_error[300];
    struct timespec linger_until;
    struct timespec started;  /* the request's first byte */
    struct event *deadline_ev; /* --header-timeout, --body-timeout */
    char peer[64];            /* "addr:port" for the access log, or "-" */
    /* The request's path and its query (after '?', before '#'), --max-path bytes each:
     * routing looks at the path alone, so a long query cannot turn a route into a 404;
     * the query is kept, bounded, for routes that take parameters (issue #11). */
    char *path, *query;
    /* --datasets: the set the request in progress started with, held until its answer, so
     * that a SIGHUP reload in between frees neither its definition nor its sinks. */
    struct catalog *held;
    /* Idempotency-Key: the raw value (allocated with path), the body's hash (at the first
     * keyed request), and the outcome: the one recorded (a replay) or being recorded. */
    char *idem_raw;
    struct fingerprint idem_fp; /* the body's, as it streams */
    struct idem_outcome idem_out;
    struct ingest ingest;     /* reused by every request of the connection */
};

/* One worker's HTTP side: what it was lent (http.h), its connections, and the group
 * commit of --fsync request, which lives wholly here: a completed ingest joins the commit
 * list, and the commit event syncs once per loop turn and answers everyone on it. */
struct http_server {
    const struct options *o;
    struct event_base *base;
    struct worker_slot *slots, *slot; /* slot: slots + index, this worker's */
    int nslots, index;
    const struct ingest_config *ingest;
    struct access_log *access;
    const struct auth *auth;
    struct catalog *const *catalog; /* --datasets, or NULL */
    const struct deliver_shared *deliver; /* --deliver, or NULL */
    struct pressure pressure;       /* --min-free, --deliver-max-lag */
    const char *default_dataset;
    const char *log_prefix;
    int (*sync)(void *arg, char *err, size_t errlen);
    void (*drained)(void *arg);
    void *arg;
    struct http_conn *conns;   /* open connections, for the drain */
    unsigned nconns;
    int draining;              /* no more keep-alive; drained() once the last one closes */
    struct http_conn *commits; /* finished requests waiting for this turn's write (and sync) */
    struct event *commit_ev;   /* activated when the first joins */
    struct buf batch;          /* their pending rows gathered, when several have some */
    /* Idempotency-Key: the table every worker shares (NULL: the header is ignored), this
     * process (the owner of its claims), the key log (opened at the first record) and the
     * records of a turn gathered for it. */
    struct idem_table *idem;
    pid_t pid;
    struct sink *keylog;
    struct buf idem_batch;
    /* The ranges this worker's requests wrote and nobody has answered yet (inflight.h). */
    struct inflight_owner inflight;
    int tracking;
    struct event *retry_ev;    /* each second: void ranges whose record a full disk refused */
};

static void http_conn_free(struct http_conn *c);
static int on_message_begin(llhttp_t *p);
static int on_url(llhttp_t *p, const char *at, size_t n);
static int on_header_field(llhttp_t *p, const char *at, size_t n);
static int on_header_field_complete(llhttp_t *p);
static int on_header_value(llhttp_t *p, const char *at, size_t n);
static int on_header_value_complete(llhttp_t *p);
static int on_headers_complete(llhttp_t *p);
static int on_body(llhttp_t *p, const char *at, size_t n);
static int on_message_complete(llhttp_t *p);
static void closing_flushed(struct http_conn *c);

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
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

static uint64_t elapsed_ns(const struct timespec *since)
{
    if (!since->tv_sec && !since->tv_nsec)
        return 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns = (int64_t)(now.tv_sec - since->tv_sec) * 1000000000 + (now.tv_nsec - since->tv_nsec);
    return ns > 0 ? (uint64_t)ns : 0;
}

/* The request's access-log line (status 0: it got no response). */
static void log_request(struct http_conn *c, int status, uint64_t ns)
{
    const struct http_request *r = &c->req;
    const struct access_log_entry e = {
        .peer = c->peer,
        .method = r->method_known ? llhttp_method_name(llhttp_get_method(&c->parser)) : "-",
        .path = r->url,
        .path_len = r->url_len,
        .truncated = r->url_long,
        .status = status,
        .body_bytes = r->body_bytes,
        .valid = r->ingest_begun ? c->ingest.stats.valid : 0,
        .invalid = r->ingest_begun ? c->ingest.stats.invalid : 0,
        .ns = ns,
    };
    access_log_write(c->s->access, &e);
}

/* The body's counters, once per ingested body (ended or abandoned). */
/* The rows the request's body voided (ingest_settle): counted once. */
static void account_void(struct http_conn *c)
{
    struct ingest *g = &c->ingest;
    if (!g->void_rows && !g->void_bytes)
        return;
    metrics_add_shared(&c->s->slot->metrics.void_rows, g->void_rows);
    metrics_add_shared(&c->s->slot->metrics.void_bytes, g->void_bytes);
    if (c->req.dataset) {
        metrics_add(&c->req.dataset->m->void_rows, g->void_rows);
        metrics_add(&c->req.dataset->m->void_bytes, g->void_bytes);
    }
    g->void_rows = g->void_bytes = 0;
}

static void account_body(struct http_conn *c)
{
    struct http_request *r = &c->req;
    account_void(c);
    if (!r->ingest_begun || r->accounted)
        return;
    r->accounted = 1;
    struct metrics *m = &c->s->slot->metrics;
    const struct ingest_stats *st = &c->ingest.stats;
    metrics_add(&m->rows_valid, st->valid);
    metrics_add(&m->rows_invalid, st->invalid);
    metrics_add(&m->body_bytes, st->bytes);
    metrics_add(&m->decoded_bytes, st->decoded);
    metrics_add(&m->written_bytes, st->written);
    metrics_add(&m->quarantine_full, st->refused[QUARANTINE_FULL]);
    struct metrics_dataset *dm = r->dataset ? r->dataset->m : NULL;
    if (dm) {
        metrics_add(&dm->bodies, 1);
        metrics_add(&dm->body_bytes, st->bytes);
        metrics_add(&dm->rows_valid, st->valid);
        metrics_add(&dm->rows_invalid, st->invalid);
        for (int k = 0; k < QUARANTINE_REASONS; k++)
            metrics_add(&dm->refused[k], st->refused[k]);
    }
}

/* The request is answered: its dataset (and its catalog) may go. Its body was accounted
 * before (account_body reads the dataset's counters). */
static void release_dataset(struct http_conn *c)
{
    c->req.dataset = NULL;
    if (c->held) {
        c->ingest.cfg = c->s->ingest; /* not left pointing into a set that may be freed */
        catalog_release(c->held);
        c->held = NULL;
    }
}

/* Queues one complete response. extra: more header lines, each ending in CRLF. */
static void idem_settle(struct http_conn *c, int status, const char *body, size_t len);
static void idem_abandon(struct http_conn *c);

static void respond_as(struct http_conn *c, int status, const char *ctype, const char *extra,
                       const char *body, size_t len, int keep_alive)
{
    if (c->req.idem_mode == IDEM_MODE_OWNER) /* every answer passes here: its outcome too */
        idem_settle(c, status, body, len);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    /* Built by hand, not with snprintf: for a small request this was a sixth of its
     * instructions. The head and a small body go out as one piece. */
    const char *text = status_text(status);
    size_t elen = extra ? strlen(extra) : 0, clen = strlen(ctype);
    if (elen > 256 || clen > 64)
        abort(); /* our own constants: a longer one is a bug here */
    char msg[1024];
    char *w = PUT(msg, "HTTP/1.1 ");
    w = put_u64(w, (uint64_t)status);
    *w++ = ' ';
    w = put_bytes(w, text, strlen(text));
    w = PUT(w, "\r\nContent-Type: ");
    w = put_bytes(w, ctype, clen);
    w = PUT(w, "\r\nContent-Length: ");
    w = put_u64(w, len);
    w = PUT(w, "\r\nX-Worker: ");
    w = put_u64(w, (uint64_t)c->s->index);
    w = keep_alive ? PUT(w, "\r\nConnection: keep-alive\r\n") : PUT(w, "\r\nConnection: close\r\n");
    w = put_bytes(w, extra ? extra : "", elen);
    w = PUT(w, "\r\n");
    /* HEAD gets the length of what GET would have sent, and nothing more. */
    int with_body = llhttp_get_method(&c->parser) != HTTP_HEAD;
    if (with_body && len <= sizeof msg - (size_t)(w - msg)) {
        w = put_bytes(w, body, len);
        with_body = 0;
    }
    evbuffer_add(out, msg, (size_t)(w - msg));
    if (with_body)
        evbuffer_add(out, body, len);
    c->req.responded = 1;
    atomic_fetch_add_explicit(&c->s->slot->requests, 1, memory_order_relaxed);
    uint64_t ns = elapsed_ns(&c->started);
    metrics_response(&c->s->slot->metrics, status, ns);
    if (access_log_enabled(c->s->access))
        log_request(c, status, ns);
    release_dataset(c);
}

static void respond(struct http_conn *c, int status, const char *extra, const char *body,
                    size_t len, int keep_alive)
{
    respond_as(c, status, "application/json", extra, body, len, keep_alive);
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

/* The body of an ingested request's 2xx (into body[0..size), size >= 256): today's stats
 * for POST /, Tinybird's counts for /v0/events; a replay rebuilds it from the same numbers. */
static size_t ingested_body(const struct ingest_stats *st, int events, char *body, size_t size)
{
    if (!events)
        return (size_t)ingest_stats_json(st, body, size);
    char *w = put_u64(PUT(body, "{\"successful_rows\": "), st->valid);
    w = PUT(put_u64(PUT(w, ", \"quarantined_rows\": "), st->invalid), "}\n");
    return (size_t)(w - body);
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
        account_body(c);
    }
}

static void set_deadline(struct http_conn *c, enum deadline d)
{
    if (d == DEADLINE_NONE) {
        if (c->deadline != DEADLINE_NONE)
            evtimer_del(c->deadline_ev);
    } else {
        const struct options *o = c->s->o;
        const struct timeval tv = {(time_t)(d == DEADLINE_HEADERS ? o->header_timeout : o->body_timeout), 0};
        evtimer_add(c->deadline_ev, &tv);
    }
    c->deadline = d;
}

/* An error response that ends the connection, the request's body unread. */
static void reject(struct http_conn *c, int status, const char *extra, const char *msg)
{
    abandon_body(c);
    set_deadline(c, DEADLINE_NONE);
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
    if (has_body(&c->parser) || !llhttp_should_keep_alive(&c->parser) || c->s->draining) {
        reject(c, status, extra, msg);
        return HPE_PAUSED;
    }
    respond_error(c, status, extra, msg, 1);
    return 0;
}

static int count_header_bytes(struct http_conn *c, size_t n)
{
    uint64_t max = c->s->o->max_header;
    c->req.header_bytes += n;
    if (c->req.header_bytes <= max)
        return 0;
    if (!c->closing) {
        char msg[128];
        snprintf(msg, sizeof msg, "request headers are larger than --max-header %llu bytes",
                 (unsigned long long)max);
        reject(c, 431, NULL, msg);
    }
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    struct http_conn *c = p->data;
    release_dataset(c); /* a request refused without an answer had none to release */
    idem_abandon(c);    /* ...nor an outcome to record */
    memset(&c->req, 0, sizeof c->req);
    c->in_message = 1;
    clock_gettime(CLOCK_MONOTONIC, &c->started);
    /* The first request's headers are timed from the connection's start. */
    if (c->deadline != DEADLINE_HEADERS)
        set_deadline(c, DEADLINE_HEADERS);
    return 0;
}

static void path_put(struct http_conn *c, char ch)
{
    struct http_request *r = &c->req;
    if (r->path_len < c->s->o->max_path)
        c->path[r->path_len++] = ch;
    else
        r->path_long = 1;
}

/* Whether the path so far is "http:/" or "https:/", and ch the '/' that makes it a scheme
 * and "//": what follows is the authority, then the path. */
static int ends_scheme(const struct http_request *r, const char *path, char ch)
{
    return ch == '/' && !r->path_long &&
           ((r->path_len == 6 && !strncasecmp(path, "http:/", 6)) ||
            (r->path_len == 7 && !strncasecmp(path, "https:/", 7)));
}

/* A byte of the path, or the '?' or '#' that ends it. */
static void path_byte(struct http_conn *c, char ch)
{
    if (ch == '?')
        c->req.target_part = TARGET_QUERY;
    else if (ch == '#')
        c->req.target_part = TARGET_FRAGMENT;
    else
        path_put(c, ch);
}

/* Splits the target's next n bytes into the path and the query (enum target_part). */
static void target_feed(struct http_conn *c, const char *at, size_t n)
{
    struct http_request *r = &c->req;
    for (size_t i = 0; i < n; i++) {
        char ch = at[i];
        switch (r->target_part) {
        case TARGET_START:
            r->target_part = ch == '/' ? TARGET_PATH : TARGET_SCHEME;
            path_put(c, ch);
            break;
        case TARGET_SCHEME:
            if (ends_scheme(r, c->path, ch)) {
                r->path_len = 0;
                r->target_part = TARGET_AUTHORITY;
            } else
                path_byte(c, ch);
            break;
        case TARGET_AUTHORITY: /* the Host header's business, not routing's */
            if (ch == '/' || ch == '?' || ch == '#') {
                path_put(c, '/');
                r->target_part = ch == '/' ? TARGET_PATH : ch == '?' ? TARGET_QUERY : TARGET_FRAGMENT;
            }
            break;
        case TARGET_PATH:
            path_byte(c, ch);
            break;
        case TARGET_QUERY:
            if (ch == '#')
                r->target_part = TARGET_FRAGMENT;
            else if (r->query_len < c->s->o->max_path)
                c->query[r->query_len++] = ch;
            else
                r->query_long = 1;
            break;
        default: /* TARGET_FRAGMENT: never sent by a conforming client; ignored */
            break;
        }
    }
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct http_request *r = &((struct http_conn *)p->data)->req;
    if (count_header_bytes(p->data, n))
        return -1;
    r->method_known = 1;
    if (n > sizeof r->url - r->url_len)
        r->url_long = 1;
    else {
        memcpy(r->url + r->url_len, at, n);
        r->url_len += (uint16_t)n;
    }
    target_feed(p->data, at, n);
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
        else if (r->field_len == 13 && !strncasecmp(r->field, "authorization", 13) &&
                 auth_enabled(((struct http_conn *)p->data)->s->auth)) {
            r->header = HEADER_AUTHORIZATION;
            r->auth_count++;
        } else if (r->field_len == 15 && !strncasecmp(r->field, "idempotency-key", 15) &&
                   ((struct http_conn *)p->data)->s->idem) {
            r->header = HEADER_IDEMPOTENCY_KEY;
            r->idem_count++;
        }
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
    if (r->header == HEADER_IDEMPOTENCY_KEY) {
        struct http_conn *c = p->data;
        if (n > idem_raw_cap(c->s->o) - r->idem_raw_len)
            r->idem_long = 1;
        else {
            memcpy(c->idem_raw + r->idem_raw_len, at, n);
            r->idem_raw_len += (uint16_t)n;
        }
        return 0;
    }
    if (r->header == HEADER_AUTHORIZATION) {
        if (n > sizeof r->auth - r->auth_len)
            r->auth_long = 1;
        else {
            memcpy(r->auth + r->auth_len, at, n);
            r->auth_len += (uint16_t)n;
        }
        return 0;
    }
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
    struct http_conn *c = p->data;
    if (++r->header_count > c->s->o->max_headers) {
        if (!c->closing) {
            char msg[128];
            snprintf(msg, sizeof msg, "more than --max-headers %u header fields", c->s->o->max_headers);
            reject(c, 431, NULL, msg);
        }
        return -1;
    }
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

/* llhttp's method as the routing table's bit; 0 for the methods no route serves. */
static unsigned route_method_of(int method)
{
    switch (method) {
    case HTTP_GET: return ROUTE_GET;
    case HTTP_HEAD: return ROUTE_HEAD;
    case HTTP_POST: return ROUTE_POST;
    default: return 0;
    }
}

/* --datasets: every dataset name's counters after the server's. 0, or -1 when memory is
 * exhausted. */
static int datasets_metrics(const struct http_server *s, struct buf *out)
{
    if (!s->catalog)
        return 0;
    const struct catalog_shared *sh = (*s->catalog)->shared;
    struct metrics_dataset_view *view = malloc(sh->nentries * sizeof *view);
    if (!view)
        return -1;
    size_t n = catalog_metrics_view(sh, view, sh->nentries);
    int rc = metrics_format_datasets(out, view, n, sh->nslots);
    free(view);
    return rc;
}

/* Which token the request carries as "Authorization: Bearer <token>", once: its index
 * (auth.h), or -1. */
static int token_of(const struct http_conn *c)
{
    const struct http_request *r = &c->req;
    return r->auth_count == 1 && !r->auth_long ? auth_match(c->s->auth, r->auth, r->auth_len) : -1;
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
        return (ch | 0x20) - 'a' + 10;
    return -1;
}

/* The first value of the query parameter key in q[0..n), percent-decoded ('+' as a space)
 * into out[0..cap): its length; -1 when absent, -2 when malformed or longer than cap. */
static int query_param(const char *q, size_t n, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (size_t at = 0; at < n;) {
        const char *amp = memchr(q + at, '&', n - at);
        size_t end = amp ? (size_t)(amp - q) : n;
        if (end - at > kl && q[at + kl] == '=' && !memcmp(q + at, key, kl)) {
            size_t o = 0;
            for (size_t i = at + kl + 1; i < end; i++) {
                int ch = (unsigned char)q[i];
                if (ch == '%') {
                    int hi = i + 2 < end ? hex_digit(q[i + 1]) : -1;
                    int lo = hi >= 0 ? hex_digit(q[i + 2]) : -1;
                    if (lo < 0)
                        return -2;
                    ch = hi * 16 + lo;
                    i += 2;
                } else if (ch == '+') {
                    ch = ' ';
                }
                if (o == cap)
                    return -2;
                out[o++] = (char)ch;
            }
            return (int)o;
        }
        if (end - at == kl && !memcmp(q + at, key, kl))
            return 0; /* "?name": present, empty */
        at = end + 1;
    }
    return -1;
}

/* --datasets: the dataset the body appends to (/v0/events?name=NAME, or POST / and
 * --default-dataset), held with its catalog until the answer. 0, or the refusal's status
 * with its message in msg. A token's scope is judged before the name is looked up, so a
 * scoped token learns nothing of the datasets it does not cover. */
static int choose_dataset(struct http_conn *c, int token, char *msg, size_t len)
{
    struct http_request *r = &c->req;
    char name[DS_MAX_NAME];
    int nl;
    if (r->route->id == ROUTE_EVENTS) {
        r->events = 1;
        if (r->query_long) {
            snprintf(msg, len, "the request target's query is longer than --max-path %zu bytes",
                     c->s->o->max_path);
            return 414;
        }
        char wait[8];
        int wl = query_param(c->query, r->query_len, "wait", wait, sizeof wait);
        r->wait = wl == 4 && !memcmp(wait, "true", 4);
        if (!r->wait && wl != -1 && !(wl == 5 && !memcmp(wait, "false", 5))) {
            snprintf(msg, len, "the wait parameter is true or false");
            return 400;
        }
        nl = query_param(c->query, r->query_len, "name", name, sizeof name);
        if (nl == -2) {
            snprintf(msg, len, "the name parameter is malformed or longer than %d bytes", DS_MAX_NAME);
            return 400;
        }
        if (nl <= 0) {
            snprintf(msg, len, "missing the name parameter: POST /v0/events?name=NAME");
            return 400;
        }
        /* No dataset name holds one, and the messages below would show the name cut at a
         * NUL ("no dataset a" for a%00x) or broken across lines: refused as malformed. */
        for (int i = 0; i < nl; i++)
            if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) {
                snprintf(msg, len, "the name parameter holds a control byte (byte %d)", i + 1);
                return 400;
            }
    } else if (!c->s->default_dataset) {
        snprintf(msg, len, "no default dataset: POST to /v0/events?name=NAME (or start the "
                 "server with --default-dataset NAME)");
        return 404;
    } else {
        nl = snprintf(name, sizeof name, "%s", c->s->default_dataset);
    }
    if (auth_enabled(c->s->auth) && !auth_allows(c->s->auth, token, name, (size_t)nl)) {
        snprintf(msg, len, "this token may not append to the dataset %.*s", nl, name);
        return 403;
    }
    struct catalog *cat = *c->s->catalog;
    const struct catalog_dataset *d = catalog_find(cat, name, (size_t)nl);
    if (!d) {
        snprintf(msg, len, "no dataset %.*s (none is defined by that name)", nl, name);
        return 404;
    }
    c->held = catalog_hold(cat);
    r->dataset = d;
    c->ingest.cfg = &d->ingest; /* every dataset has the same max_line: the framer is unchanged */
    return 0;
}

/* ---- Idempotency-Key (idempotency.h): the few places a request meets the key table ---- */

/* The key log, opened at the first record. NULL with the reason in err. */
static struct sink *idem_keylog(struct http_server *s, char *err, size_t errlen)
{
    if (!s->keylog)
        s->keylog = idem_log_open(s->o->out_dir, err, errlen);
    return s->keylog;
}

/* One record (a 4xx's outcome, or a cancel) written at once, not in a group: rare. 0, or -1
 * with the message logged. */
static int idem_write_one(struct http_server *s, enum idem_record_kind kind,
                          const struct idem_id *id, const struct idem_outcome *o)
{
    char err[300];
    unsigned char rec[IDEM_RECORD];
    idem_record_encode(rec, kind, id, o, time(NULL));
    struct sink *k = idem_keylog(s, err, sizeof err);
    if (k && !sink_write(k, (const char *)rec, sizeof rec) &&
        (s->o->fsync != FSYNC_REQUEST || !sink_sync(k)))
        return 0;
    log_error("%s: the key log: %s", s->log_prefix, k ? sink_error(k) : err);
    return -1;
}

/* The request's key, judged once its headers (and so its scope) are known: 0 to go on
 * (r->idem_mode says how), or 1 when it was refused, *rc then being the callback's return. */
static int idem_headers(struct http_conn *c, int token, int *rc)
{
    struct http_request *r = &c->req;
    struct http_server *s = c->s;
    if (!r->idem_count)
        return 0;
    char key[4096], msg[160];
    int kl = r->idem_count > 1 ? -4
             : r->idem_long    ? -3
                               : idem_parse_key(c->idem_raw, r->idem_raw_len, key,
                                                s->o->max_idempotency_key);
    if (kl < 0) {
        if (kl == -4)
            snprintf(msg, sizeof msg, "more than one Idempotency-Key field");
        else if (kl == -3)
            snprintf(msg, sizeof msg, "the Idempotency-Key is longer than --max-idempotency-key "
                     "%zu bytes", s->o->max_idempotency_key);
        else if (kl == -2)
            snprintf(msg, sizeof msg, "the Idempotency-Key is empty");
        else
            snprintf(msg, sizeof msg, "malformed Idempotency-Key: a structured-field string "
                     "(\"...\", RFC 8941) or a token");
        *rc = reject_early(c, 400, NULL, msg);
        return 1;
    }
    /* The route: the path and the dataset (POST / and /v0/events answer differently). */
    char route[DS_MAX_NAME + 16]; /* put together without stdio: once per keyed request */
    const char *path = r->events ? "/v0/events?name=" : "/";
    const char *ds = r->dataset ? r->dataset->ds->name : "";
    size_t pl = strlen(path), dl = strnlen(ds, sizeof route - pl - 1);
    memcpy(route, path, pl);
    memcpy(route + pl, ds, dl + 1); /* its '\0' too, or the byte cut there: not hashed */
    route[pl + dl] = '\0';
    r->idem_id = idem_id_of(token, route, pl + dl, key, (size_t)kl);
    fingerprint_init(&c->idem_fp);
    switch (idem_claim(s->idem, &r->idem_id, s->pid, time(NULL), &c->idem_out)) {
    case IDEM_CLAIMED: r->idem_mode = IDEM_MODE_OWNER; break;
    case IDEM_DONE: r->idem_mode = IDEM_MODE_REPLAY; break;
    case IDEM_BUSY: r->idem_mode = IDEM_MODE_CONFLICT; break;
    case IDEM_FULL:
        *rc = reject_early(c, 503, "Retry-After: 1\r\n",
                           "every Idempotency-Key the server can hold is in flight: try again later");
        return 1;
    }
    return 0;
}

/* A retry's answer, its body read whole: the recorded response, or 409, or 422. */
static void idem_answer(struct http_conn *c, int keep_alive)
{
    struct http_request *r = &c->req;
    struct idem_table *t = c->s->idem;
    const struct idem_outcome *o = &c->idem_out;
    int mode = r->idem_mode;
    r->idem_mode = IDEM_MODE_NONE;
    if (mode == IDEM_MODE_CONFLICT) {
        idem_count(t, IDEM_EV_CONFLICT);
        respond_error(c, 409, NULL, "a request with this Idempotency-Key is still in flight: "
                      "retry once it is answered", keep_alive);
    } else if (fingerprint_digest(&c->idem_fp) != o->body_hash) {
        idem_count(t, IDEM_EV_MISMATCH);
        respond_error(c, 422, NULL, "this Idempotency-Key was used for a different request "
                      "(another body)", keep_alive);
    } else {
        idem_count(t, IDEM_EV_REPLAY);
        char body[256];
        size_t n = o->body_len;
        if (o->resp == IDEM_RESP_BODY) {
            memcpy(body, o->body, n);
        } else {
            const struct ingest_stats st = {.bytes = o->bytes, .valid = o->valid,
                                            .invalid = o->invalid};
            n = ingested_body(&st, o->resp == IDEM_RESP_EVENTS, body, sizeof body);
        }
        respond(c, o->status, "Idempotency-Replayed: true\r\n", body, n, keep_alive);
    }
}

/* The first request with its key is being answered: a 2xx (its record written in this
 * turn's commit) or a 4xx judged on the whole body is recorded; anything else (a 5xx, a
 * refusal before the body's end, a timeout) gives the key up, so that a retry is new. */
static void idem_settle(struct http_conn *c, int status, const char *body, size_t len)
{
    struct http_request *r = &c->req;
    struct http_server *s = c->s;
    r->idem_mode = IDEM_MODE_NONE;
    time_t now = time(NULL);
    if (status >= 200 && status < 300 && r->idem_written) {
        idem_complete(s->idem, &r->idem_id, s->pid, &c->idem_out, now);
        return;
    }
    if (status >= 400 && status < 500 && status != 408 && r->idem_body_done &&
        len <= IDEM_BODY_MAX) {
        struct idem_outcome *o = &c->idem_out;
        memset(o, 0, sizeof *o);
        o->status = (uint16_t)status;
        o->resp = IDEM_RESP_BODY;
        o->body_hash = fingerprint_digest(&c->idem_fp);
        o->body_len = (uint8_t)len;
        memcpy(o->body, body, len);
        if (!idem_write_one(s, IDEM_REC_DONE, &r->idem_id, o) &&
            !idem_complete(s->idem, &r->idem_id, s->pid, o, now))
            return;
    }
    idem_release(s->idem, &r->idem_id, s->pid);
    /* Its 2xx record went out this turn but the answer is not a 2xx: the record is void. */
    if (r->idem_written && idem_write_one(s, IDEM_REC_CANCEL, &r->idem_id, &c->idem_out))
        log_error("%s: a key's 2xx record stands for a request answered %d", s->log_prefix,
                  status);
}

/* A request that ends without an answer (the client left, the drain's end) gives its key up. */
static void idem_abandon(struct http_conn *c)
{
    if (c->req.idem_mode == IDEM_MODE_OWNER)
        idem_settle(c, 0, NULL, 0);
}

static int on_headers_complete(llhttp_t *p)
{
    struct http_conn *c = p->data;
    struct http_request *r = &c->req;
    const struct options *o = c->s->o;
    r->headers_done = 1;
    if (r->target_part == TARGET_AUTHORITY) /* "http://host": the path is "/" */
        path_put(c, '/');
    r->route = r->path_long ? NULL : route_find(c->path, r->path_len);
    if (r->route && r->route->id == ROUTE_EVENTS && !c->s->catalog)
        r->route = NULL; /* without --datasets, as before the route existed */
    /* From here the body (if any) has --body-timeout to arrive; the message's end stops it. */
    set_deadline(c, has_body(p) ? DEADLINE_BODY : DEADLINE_NONE);
    if (r->path_long) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request target's path is longer than --max-path %zu bytes",
                 o->max_path);
        return reject_early(c, 414, NULL, msg);
    }
    if (!r->route)
        return reject_early(c, 404, NULL, route_not_found);
    int token = -1;
    if (r->route->needs_token && auth_enabled(c->s->auth) && (token = token_of(c)) < 0)
        return reject_early(c, 401, "WWW-Authenticate: Bearer\r\n",
                            r->auth_count ? "invalid bearer token"
                                          : "missing Authorization: Bearer token");
    if (!route_allows(r->route, route_method_of(llhttp_get_method(p))))
        return reject_early(c, 405, r->route->allow, r->route->refusal);
    if (r->route->id != ROUTE_INGEST && r->route->id != ROUTE_EVENTS)
        return 0;
    if (c->s->catalog) {
        char msg[DS_MAX_NAME + 128];
        int status = choose_dataset(c, token, msg, sizeof msg);
        if (status)
            return reject_early(c, status, NULL, msg);
    } else {
        c->ingest.cfg = c->s->ingest;
    }
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
    char why[256];
    if (pressure_judge(&c->s->pressure, why, sizeof why) != PRESSURE_NONE)
        return reject_early(c, 503, "Retry-After: " PRESSURE_RETRY_AFTER_TEXT "\r\n", why);
    int answered;
    if (idem_headers(c, token, &answered))
        return answered;
    if (r->idem_mode == IDEM_MODE_REPLAY || r->idem_mode == IDEM_MODE_CONFLICT) {
        /* Its body is read (and hashed) but not ingested; the answer comes at its end. */
        if (r->expect_continue && has_body(p) && p->http_major == 1 && p->http_minor >= 1)
            bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        return 0;
    }
    r->ingest_begun = 1;
    if (ingest_begin(&c->ingest, (enum content_encoding)r->encoding) != INGEST_OK) {
        log_error("%s: %s", c->s->log_prefix, c->ingest.error);
        return reject_early(c, 500, NULL, c->ingest.error);
    }
    r->ingesting = 1;
    /* An owner's body is hashed in the pass that finds its lines, when it can be: the second
     * read of every byte was most of a key's cost (doc/performance.md, issue #18). */
    if (r->idem_mode == IDEM_MODE_OWNER)
        ingest_fingerprint(&c->ingest, &c->idem_fp); /* c->ingest.fp set when it will */
    /* The client waits for this before sending the body (curl, for a second or so). */
    if (r->expect_continue && has_body(p) && p->http_major == 1 && p->http_minor >= 1)
        bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

static int ingest_failed(struct http_conn *c, enum ingest_status st)
{
    if (st == INGEST_EDECODE)
        return 400;
    if (st == INGEST_ETOOBIG)
        return 413;
    if (st == INGEST_EBUSY)
        return 503;
    log_error("%s: 500: %s", c->s->log_prefix, c->ingest.error);
    return 500;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    struct http_request *r = &c->req;
    r->body_bytes += n;
    int hash = r->idem_mode == IDEM_MODE_OWNER || r->idem_mode == IDEM_MODE_REPLAY;
    uint64_t max = c->s->o->max_body;
    if (!r->ingesting && !(r->idem_mode && max && r->body_bytes > max)) {
        if (hash)
            fingerprint_feed(&c->idem_fp, at, n, NULL, NULL);
        return 0; /* a body nobody asked for (GET /healthz with one), or a retry's: skipped */
    }
    if (max && r->body_bytes > max) { /* a retry's too: --max-body bounds what is read */
        char msg[128];
        snprintf(msg, sizeof msg, "body is larger than --max-body %llu", (unsigned long long)max);
        reject(c, 413, NULL, msg);
        return -1;
    }
    enum ingest_status st = ingest_feed(&c->ingest, at, n);
    /* Hashed after the parse, which leaves the bytes in L2: before it, just copied in by
     * read(2), they came from further away (a compressed body's bytes as received). */
    if (hash && !c->ingest.fp)
        fingerprint_feed(&c->idem_fp, at, n, NULL, NULL);
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
    int keep_alive = llhttp_should_keep_alive(p) && !c->s->draining;
    c->in_message = 0;
    set_deadline(c, DEADLINE_NONE);
    if (r->responded) {
        /* refused early, without a body */
    } else if (r->idem_mode == IDEM_MODE_REPLAY || r->idem_mode == IDEM_MODE_CONFLICT) {
        idem_answer(c, keep_alive);
    } else if (r->route->id == ROUTE_HEALTH) {
        static const char ok[] = "{\"status\": \"ok\"}\n";
        respond(c, 200, NULL, ok, sizeof ok - 1, keep_alive);
    } else if (r->route->id == ROUTE_METRICS) {
        /* Sized by the slot count (~100 bytes each), so built per request, never cut. */
        struct metrics_worker view[SLOTS_MAX];
        slots_metrics_view(view, c->s->slots, c->s->nslots);
        struct buf text = {0};
        if (metrics_format(&text, view, c->s->nslots) || datasets_metrics(c->s, &text) ||
            pressure_metrics(&text, &c->s->slots[0].pressure) ||
            (c->s->deliver && deliver_metrics_format(&text, c->s->deliver)) ||
            (c->s->idem && idem_metrics_format(c->s->idem, &text)))
            respond_error(c, 500, NULL, "out of memory for the metrics", keep_alive);
        else
            respond_as(c, 200, "text/plain; version=0.0.4", NULL, text.p, text.len, keep_alive);
        buf_free(&text);
    } else if (r->route->id == ROUTE_INGEST || r->route->id == ROUTE_EVENTS) {
        r->ingesting = 0;
        r->idem_body_done = 1;
        enum ingest_status st = ingest_finish(&c->ingest);
        if (st == INGEST_OK) {
            /* Its last rows are written, and it is answered, by commit_cb at the end of
             * this loop turn, with those of every other request finished in it; the next
             * pipelined request waits until then, so responses stay in order. */
            c->sync_wait = 1;
            c->sync_keep_alive = (unsigned)keep_alive;
            c->commit_next = c->s->commits;
            if (!c->s->commits)
                event_active(c->s->commit_ev, EV_TIMEOUT, 0);
            c->s->commits = c;
            return HPE_PAUSED;
        }
        account_body(c);
        respond_error(c, ingest_failed(c, st), NULL, c->ingest.error, keep_alive);
    }
    if (keep_alive) {
        /* A client that pipelines without reading: stop at this request, not at the end of
         * the read (up to 256 KiB of small requests, each with its response). */
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) > HTTP_OUTPUT_HIGH) {
            c->output_full = 1;
            return HPE_PAUSED;
        }
        return 0;
    }
    stop_reading_requests(c, 0);
    return HPE_PAUSED;
}

/* http_strict refused the next byte after llhttp took all before it. */
static void framing_refused(struct http_conn *c)
{
    char msg[200];
    snprintf(msg, sizeof msg, "malformed request: %s", c->strict.error);
    reject(c, c->strict.status, NULL, msg);
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

/* --header-timeout or --body-timeout has passed. */
static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_conn *c = arg;
    enum deadline d = c->deadline;
    c->deadline = DEADLINE_NONE;
    if (c->closing)
        return; /* answered already; the linger or the output's drain closes it */
    if (d == DEADLINE_HEADERS && !c->in_message) {
        http_conn_free(c); /* connected, and not one byte of a request since: nothing to answer */
        return;
    }
    char msg[128];
    if (d == DEADLINE_HEADERS)
        snprintf(msg, sizeof msg, "request headers not received within --header-timeout %u s",
                 c->s->o->header_timeout);
    else
        snprintf(msg, sizeof msg, "request body not received within --body-timeout %u s",
                 c->s->o->body_timeout);
    reject(c, 408, NULL, msg);
    if (!evbuffer_get_length(bufferevent_get_output(c->bev)))
        closing_flushed(c);
}

static void linger_start(struct http_conn *c)
{
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (fd >= 0) /* not a socket (http_server_attach): its end is not ours to shut */
        shutdown(fd, SHUT_WR);
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
    while (!c->closing && !c->output_full && !c->sync_wait) {
        struct evbuffer_iovec v[HTTP_PEEK_VECS];
        int n = evbuffer_peek(in, -1, NULL, v, HTTP_PEEK_VECS);
        if (n <= 0)
            break;
        if (n > HTTP_PEEK_VECS)
            n = HTTP_PEEK_VECS;
        size_t used = 0;
        llhttp_errno_t e = HPE_OK;
        int refused = 0;
        for (int i = 0; i < n && e == HPE_OK && !refused; i++) {
            /* llhttp gets only what http_strict found well framed. */
            size_t ok = http_strict_check(&c->strict, v[i].iov_base, v[i].iov_len);
            size_t took = ok;
            e = llhttp_execute(&c->parser, v[i].iov_base, ok);
            if (e == HPE_PAUSED && (c->sync_wait || c->output_full)) /* keep what follows */
                took = (size_t)(llhttp_get_error_pos(&c->parser) - (const char *)v[i].iov_base);
            http_strict_consumed(&c->strict, took);
            used += took;
            refused = e == HPE_OK && ok < v[i].iov_len;
        }
        evbuffer_drain(in, used);
        if (c->sync_wait || c->output_full) {
            /* A request waiting for the commit is answered later in this loop turn, so
             * reading stays on (off and on again would cost two epoll_ctl per request); a
             * client not reading its answers is another matter. */
            if (c->output_full)
                bufferevent_disable(c->bev, EV_READ);
        } else if (refused)
            framing_refused(c);
        else if (e != HPE_OK)
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

/* Reads up to HTTP_MAX_READ more bytes straight into the input buffer (no copy, no ioctl):
 * 0, or -1 when the bytes read could not be kept (the connection must go). End of file and
 * errors are left for the bufferevent to find on its next read: the socket stays readable,
 * so its event callback runs as usual (a reset met here is then seen as end of file, which
 * event_cb treats the same way unless a response is pending, whose write then fails). */
static int read_more(struct http_conn *c)
{
#if LIBEVENT_VERSION_NUMBER >= 0x02020000
    (void)c; /* evbuffer_set_max_read, at accept, does it */
    return 0;
#else
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (c->closing || c->output_full || c->sync_wait || bufferevent_getfd(c->bev) < 0 ||
        evbuffer_get_length(in) < HTTP_EVBUFFER_READ)
        return 0;
    /* The bufferevent keeps its input's end frozen but while it reads; so do we. */
    struct evbuffer_iovec v[2];
    evbuffer_unfreeze(in, 0);
    int n = evbuffer_reserve_space(in, (ev_ssize_t)HTTP_MAX_READ, v, 2);
    if (n > 0) {
        ssize_t got = readv(bufferevent_getfd(c->bev), (const struct iovec *)v, n);
        size_t left = got > 0 ? (size_t)got : 0;
        for (int i = 0; i < n; i++) {
            size_t take = v[i].iov_len < left ? v[i].iov_len : left;
            v[i].iov_len = take;
            left -= take;
        }
        if (evbuffer_commit_space(in, v, n)) {
            evbuffer_freeze(in, 0);
            log_error("%s: could not keep %zd bytes read: connection closed",
                      c->s->log_prefix, got);
            return -1;
        }
    }
    evbuffer_freeze(in, 0);
    return 0;
#endif
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    if (read_more(arg)) {
        http_conn_free(arg);
        return;
    }
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
        llhttp_resume(&c->parser); /* when it paused at a request's end (a no-op otherwise) */
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

/* At --max-connections: 503 on fd at once, and closed. */
static void refuse(struct http_server *s, evutil_socket_t fd)
{
    static const char body[] = "{\"error\": \"too many connections: try again later\"}\n";
    char msg[512], peer[64] = "-";
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nX-Worker: %d\r\nConnection: close\r\n"
                     "Retry-After: 1\r\n\r\n%s",
                     sizeof body - 1, s->index, body);
    /* Whatever of a request has already arrived is read first, so that closing does not
     * reset the connection under the response. */
    char sink[4096];
    for (int i = 0; i < 16 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
        ;
    ssize_t sent = send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)sent;
    shutdown(fd, SHUT_WR);
    if (access_log_enabled(s->access))
        net_peer_name(fd, peer, sizeof peer);
    close(fd);
    metrics_response(&s->slot->metrics, 503, 0);
    const struct access_log_entry e = {.peer = peer, .method = "-", .path = "", .status = 503};
    access_log_write(s->access, &e);
}

int http_server_attach(struct http_server *s, struct bufferevent *bev, const char *peer)
{
    struct http_conn *c = malloc(sizeof *c);
    if (c) {
        memset(c, 0, offsetof(struct http_conn, ingest));
        c->deadline_ev = evtimer_new(s->base, deadline_cb, c);
        c->path = malloc(2 * s->o->max_path + (s->idem ? idem_raw_cap(s->o) : 0));
        if (c->path) {
            c->query = c->path + s->o->max_path;
            c->idem_raw = c->query + s->o->max_path;
        }
    }
    if (!c || !c->deadline_ev || !c->path) {
        bufferevent_free(bev);
        if (c) {
            if (c->deadline_ev)
                event_free(c->deadline_ev);
            free(c->path);
        }
        free(c);
        return -1;
    }
    c->s = s;
    c->bev = bev;
    snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "-");
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    ingest_init(&c->ingest, s->ingest);
    c->ingest.inflight = s->tracking ? &s->inflight : NULL;
    c->ingest_entry = -1;
    const struct timeval tv = {(time_t)s->o->timeout, 0};
    bufferevent_set_timeouts(c->bev, &tv, &tv);
    bufferevent_set_max_single_read(c->bev, HTTP_MAX_READ);
#if LIBEVENT_VERSION_NUMBER >= 0x02020000
    evbuffer_set_max_read(bufferevent_get_input(c->bev), HTTP_MAX_READ);
#endif
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    set_deadline(c, DEADLINE_HEADERS); /* the first request's headers: from now */
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    atomic_fetch_add_explicit(&s->slot->connections, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->slot->accepted, 1, memory_order_relaxed);
    return 0;
}

int http_server_accept(struct http_server *s, evutil_socket_t fd)
{
    if (s->nconns >= s->o->max_connections) {
        refuse(s, fd);
        return 0;
    }
    struct bufferevent *bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        close(fd);
        return -1;
    }
    char peer[64] = "-";
    if (access_log_enabled(s->access))
        net_peer_name(fd, peer, sizeof peer);
    /* Responses are written whole; Nagle would only hold the next one back. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return http_server_attach(s, bev, peer);
}

/* Idle: closes now; in the middle of a request: closes after its response. */
static void conn_drain(struct http_conn *c)
{
    if (c->closing || c->in_message || c->sync_wait)
        return; /* on its way out, or closes after its response */
    if (evbuffer_get_length(bufferevent_get_output(c->bev)))
        stop_reading_requests(c, 0);
    else
        http_conn_free(c);
}

static void http_conn_free(struct http_conn *c)
{
    struct http_server *s = c->s;
    abandon_body(c);
    idem_abandon(c);
    if (c->sync_wait) { /* off the commit list */
        struct http_conn **at = &s->commits;
        while (*at && *at != c)
            at = &(*at)->commit_next;
        if (*at)
            *at = c->commit_next;
        c->sync_wait = 0;
    }
    /* A request that got no answer (client gone, idle timeout, the drain's end) is logged too. */
    if (c->in_message && !c->req.responded && access_log_enabled(s->access))
        log_request(c, 0, elapsed_ns(&c->started));
    /* Unanswered (gone while waiting for the commit): what it wrote is void, recorded
     * while its dataset's sinks are still held. */
    ingest_settle(&c->ingest, 0);
    account_void(c);
    release_dataset(c);
    ingest_free(&c->ingest);
    event_free(c->deadline_ev);
    free(c->path);
    bufferevent_free(c->bev);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    atomic_fetch_sub_explicit(&s->slot->connections, 1, memory_order_relaxed);
    free(c);
    if (s->draining && !s->nconns && s->drained)
        s->drained(s->arg);
}

/* The sink a finished request's pending bytes of one kind go to: its dataset's, or the
 * server's. */
static struct sink *pending_sink(const struct http_conn *c, int invalid)
{
    return invalid ? c->ingest.cfg->quarantine : c->ingest.cfg->rows;
}

static const struct buf *pending(const struct http_conn *c, int invalid)
{
    return invalid ? &c->ingest.invalid : &c->ingest.rows;
}

/* The requests of one group write, for the sink's hook: each one's entry in the worker's
 * table of ranges in flight is published before the write(2). */
struct group_write {
    struct http_server *s;
    struct http_conn *first;
    struct sink *sink;
    int invalid;
};

static int in_group(const struct http_conn *c, const struct sink *sink, int invalid)
{
    return pending(c, invalid)->len && !c->commit_failed && pending_sink(c, invalid) == sink;
}

static void note_group(struct http_conn *first, struct sink *sink, int invalid,
                       const struct sink_range *wr);

static int orphan_group(void *arg, uint64_t file, uint64_t *start, uint64_t *end)
{
    return ingest_hook_orphan(&((struct group_write *)arg)->s->inflight, file, start, end);
}

static void unorphan_group(void *arg, int index, uint64_t file, uint64_t start, uint64_t end)
{
    ingest_hook_unorphan(&((struct group_write *)arg)->s->inflight, index, file, start, end);
}

static void before_group(void *arg, uint64_t file, uint64_t start, uint64_t len)
{
    const struct group_write *gw = arg;
    inflight_writing(&gw->s->inflight, file, start, len);
    for (struct http_conn *c = gw->first; c; c = c->commit_next)
        if (in_group(c, gw->sink, gw->invalid))
            ingest_publish(&c->ingest, c->ingest_entry, file, start);
}

static void after_group(void *arg, const struct sink_range *r)
{
    const struct group_write *gw = arg;
    if (r)
        note_group(gw->first, gw->sink, gw->invalid, r);
    inflight_written(&gw->s->inflight);
}

/* Row ends ('\n' outside quotes) in p[0..n), which starts at a row boundary: the rows of
 * a request's part of a group write cut short (a failure path). */
static uint64_t count_rows(const char *p, size_t n)
{
    uint64_t rows = 0;
    int quoted = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"')
            quoted = !quoted;
        else if (p[i] == '\n' && !quoted)
            rows++;
    }
    return rows;
}

/* Each request's part of the group write that landed at wr: its range, in the order the
 * requests' bytes were gathered (a write cut short keeps the whole rows it wrote). */
static void note_group(struct http_conn *first, struct sink *sink, int invalid,
                       const struct sink_range *wr)
{
    uint64_t at = wr->start;
    for (struct http_conn *c = first; c; c = c->commit_next) {
        if (!in_group(c, sink, invalid) || c->ingest_entry < 0)
            continue;
        const struct buf *b = pending(c, invalid);
        struct sink_range r = *wr;
        r.start = at < wr->end ? at : wr->end;
        r.end = at + b->len < wr->end ? at + b->len : wr->end;
        uint64_t rows = r.end - r.start == b->len ? ingest_pending_rows(&c->ingest, invalid)
                                                  : count_rows(b->p, (size_t)(r.end - r.start));
        ingest_note(&c->ingest, sink, c->ingest_entry, &r, rows);
        c->ingest_entry = -1;
        at += b->len;
    }
}

/* Writes what the requests on list from first on left pending of one kind (rows, or
 * quarantined lines) for first's sink, with one write(2): straight from the buffer when
 * one request has any, else gathered into the server's batch buffer. 0, or -1 with the
 * sink's message in err. With ranges tracked, each request first gets an entry in the
 * worker's table; one that cannot is failed (503) and left out. */
static int write_group(struct http_server *s, struct http_conn *first, int invalid, char *err,
                       size_t errlen)
{
    struct sink *sink = pending_sink(first, invalid);
    const struct buf *one = NULL;
    size_t total = 0, count = 0;
    for (struct http_conn *c = first; c; c = c->commit_next) {
        if (!in_group(c, sink, invalid))
            continue;
        if (s->tracking && (c->ingest_entry = ingest_reserve(&c->ingest)) < 0) {
            c->commit_failed = 1;
            c->commit_busy = 1;
            snprintf(c->commit_error, sizeof c->commit_error,
                     "this worker's table of ranges in flight is full (--inflight-ranges %u): "
                     "try again later", s->o->inflight_ranges);
            continue;
        }
        one = pending(c, invalid);
        total += one->len;
        count++;
    }
    if (!count || !sink)
        return 0;
    const char *p = one->p;
    if (count > 1) {
        s->batch.len = 0;
        if (buf_reserve(&s->batch, total)) {
            snprintf(err, errlen, "out of memory gathering %zu bytes of rows", total);
            for (struct http_conn *c = first; c && s->tracking; c = c->commit_next)
                if (in_group(c, sink, invalid)) {
                    ingest_note(&c->ingest, sink, c->ingest_entry, &(struct sink_range){0}, 0);
                    c->ingest_entry = -1;
                }
            return -1;
        }
        for (struct http_conn *c = first; c; c = c->commit_next) {
            const struct buf *b = pending(c, invalid);
            if (in_group(c, sink, invalid)) {
                memcpy(s->batch.p + s->batch.len, b->p, b->len);
                s->batch.len += b->len;
            }
        }
        p = s->batch.p;
    }
    int r;
    if (s->tracking) {
        struct group_write gw = {s, first, sink, invalid};
        const struct sink_hook h = {orphan_group, unorphan_group, before_group, after_group, &gw};
        r = sink_write_hooked(sink, p, total, &h);
        for (struct http_conn *c = first; c; c = c->commit_next)
            if (in_group(c, sink, invalid) && c->ingest_entry >= 0) { /* nothing written */
                ingest_note(&c->ingest, sink, c->ingest_entry, &(struct sink_range){0}, 0);
                c->ingest_entry = -1;
            }
    } else {
        r = sink_write(sink, p, total);
    }
    if (r) {
        snprintf(err, errlen, "%s", sink_error(sink));
        return -1;
    }
    return 0;
}

/* Whether a request on list before c (not failed) has pending bytes of this kind for c's
 * sink: its group was written with that one's. */
static int sink_seen(const struct http_conn *list, const struct http_conn *c, int invalid)
{
    for (const struct http_conn *e = list; e != c; e = e->commit_next)
        if (in_group(e, pending_sink(c, invalid), invalid))
            return 1;
    return 0;
}

/* Writes the pending bytes of one kind of every request on list, one write(2) per sink
 * (requests of one turn may append to several datasets). A request whose sink refused
 * them is marked failed, with the sink's message in err, and nothing more of it is written.
 * The sinks written are remembered, up to HTTP_COMMIT_SINKS (a turn's requests go to a
 * few datasets), so that a long list costs one pass per sink; past that, a scan. */
static void write_pending(struct http_server *s, struct http_conn *list, int invalid, char *err,
                          size_t errlen)
{
    const struct sink *done[HTTP_COMMIT_SINKS];
    size_t ndone = 0;
    for (struct http_conn *c = list; c; c = c->commit_next) {
        if (c->commit_failed || !pending(c, invalid)->len)
            continue;
        const struct sink *sink = pending_sink(c, invalid);
        size_t k = 0;
        while (k < ndone && done[k] != sink)
            k++;
        if (k < ndone || (ndone == HTTP_COMMIT_SINKS && sink_seen(list, c, invalid)))
            continue;
        if (ndone < HTTP_COMMIT_SINKS)
            done[ndone++] = sink;
        if (write_group(s, c, invalid, err, errlen)) {
            log_error("%s: 500: %s", s->log_prefix, err);
            struct sink *sink = pending_sink(c, invalid);
            for (struct http_conn *e = c; e; e = e->commit_next)
                if (pending(e, invalid)->len && pending_sink(e, invalid) == sink) {
                    e->commit_failed = 1;
                    snprintf(e->commit_error, sizeof e->commit_error, "%s", err);
                }
        }
    }
}

/* --fsync request: fdatasync of what the requests on list wrote. The server's sinks through
 * the worker's callback; the datasets' (perhaps of a set replaced since) here, each a no-op
 * once synced. 0, or nonzero with the message in err. */
static int sync_written(struct http_server *s, struct http_conn *list, char *err, size_t errlen)
{
    int r = s->sync(s->arg, err, errlen);
    for (struct http_conn *c = list; c && !r; c = c->commit_next) {
        if (!c->req.dataset)
            continue;
        for (int k = 0; k < 2 && !r; k++) {
            struct sink *sink = pending_sink(c, k);
            if (sink && (r = sink_sync(sink)) != 0)
                snprintf(err, errlen, "%s", sink_error(sink));
        }
    }
    return r;
}

/* The answer to an ingested body: today's for POST /, Tinybird's for /v0/events. Both built
 * by hand, not with snprintf: it is every request's body (see ingest.c's result_json). */
static void respond_ingested(struct http_conn *c, int keep_alive)
{
    char body[256]; /* the longest Tinybird body, two 20-digit numbers, takes 83 bytes */
    size_t n = ingested_body(&c->ingest.stats, c->req.events, body, sizeof body);
    respond(c, !c->req.events || c->req.wait ? 200 : 202, NULL, body, n, keep_alive);
}

/* The records of this turn's keyed requests whose rows were written, in one write(2) to
 * the key log after the rows' and before the sync (--fsync request) that covers both: a
 * key's record is in the file before its 2xx. A request whose record could not be written
 * fails (500) like one whose rows could not. */
static void idem_write_records(struct http_server *s, struct http_conn *list)
{
    size_t n = 0;
    for (struct http_conn *c = list; c; c = c->commit_next)
        n += c->req.idem_mode == IDEM_MODE_OWNER && !c->commit_failed;
    if (!n)
        return;
    char err[300] = "";
    struct sink *k = idem_keylog(s, err, sizeof err);
    s->idem_batch.len = 0;
    if (k && buf_reserve(&s->idem_batch, n * IDEM_RECORD))
        snprintf(err, sizeof err, "out of memory for the key log's records");
    else if (k) {
        time_t now = time(NULL);
        for (struct http_conn *c = list; c; c = c->commit_next) {
            if (c->req.idem_mode != IDEM_MODE_OWNER || c->commit_failed)
                continue;
            struct idem_outcome *o = &c->idem_out;
            const struct ingest_stats *st = &c->ingest.stats;
            memset(o, 0, sizeof *o);
            o->status = !c->req.events || c->req.wait ? 200 : 202;
            o->resp = c->req.events ? IDEM_RESP_EVENTS : IDEM_RESP_INGEST;
            o->body_hash = fingerprint_digest(&c->idem_fp);
            o->bytes = st->bytes;
            o->valid = st->valid;
            o->invalid = st->invalid;
            idem_record_encode((unsigned char *)s->idem_batch.p + s->idem_batch.len,
                               IDEM_REC_DONE, &c->req.idem_id, o, now);
            s->idem_batch.len += IDEM_RECORD;
        }
        if (!sink_write(k, s->idem_batch.p, s->idem_batch.len)) {
            for (struct http_conn *c = list; c; c = c->commit_next)
                c->req.idem_written = c->req.idem_mode == IDEM_MODE_OWNER && !c->commit_failed;
            return;
        }
        snprintf(err, sizeof err, "the key log: %s", sink_error(k));
    }
    log_error("%s: 500: %s", s->log_prefix, err);
    for (struct http_conn *c = list; c; c = c->commit_next)
        if (c->req.idem_mode == IDEM_MODE_OWNER && !c->commit_failed) {
            c->commit_failed = 1;
            snprintf(c->commit_error, sizeof c->commit_error, "%s", err);
        }
}

/* The commit event, once per loop turn in which a request finished ingesting: the last rows
 * of every such request go to the day's file in one write(2) per file (and their quarantined
 * lines in one more), --fsync request fdatasyncs once, and then each gets its answer: a 200
 * only now that its rows are in the file. One write for many small requests saves the
 * syscalls that dominate them (doc/performance.md). */
static void commit_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_server *s = arg;
    struct http_conn *list = s->commits;
    s->commits = NULL;
    char err[300];
    write_pending(s, list, 0, err, sizeof err);
    write_pending(s, list, 1, err, sizeof err);
    idem_write_records(s, list); /* after the rows, before the sync that covers both */
    int r = 0;
    if (s->o->fsync == FSYNC_REQUEST && (r = sync_written(s, list, err, sizeof err)) != 0)
        log_error("%s: 500: %s", s->log_prefix, err);
    while (list) {
        struct http_conn *c = list;
        list = c->commit_next;
        c->commit_next = NULL;
        c->sync_wait = 0;
        int keep_alive = c->sync_keep_alive && !s->draining;
        /* Not OK also when its earlier batches went into a file deleted since (ingest.h). */
        enum ingest_status st = c->commit_failed ? ingest_written(&c->ingest, 0, c->commit_error)
                                                 : ingest_written(&c->ingest, !r, err);
        int busy = c->commit_busy;
        c->commit_failed = c->commit_busy = 0;
        /* The commit point: its rows are in the file (and synced, and its key recorded);
         * its 2xx is queued next. Otherwise its ranges are void before it is answered. */
        ingest_settle(&c->ingest, st == INGEST_OK);
        account_body(c);
        account_void(c);
        if (st == INGEST_OK)
            respond_ingested(c, keep_alive);
        else if (busy)
            respond_error(c, 503, "Retry-After: 1\r\n", c->ingest.error, keep_alive);
        else
            respond_error(c, 500, NULL, c->ingest.error, keep_alive);
        if (!keep_alive) {
            stop_reading_requests(c, 0);
            continue; /* write_cb closes it once the response is out */
        }
        llhttp_resume(&c->parser);
        read_requests(c); /* pipelined requests already read */
    }
}

/* Void ranges not recorded yet (a full disk) are tried again each second; their entries
 * hold delivery back until then. */
static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_server *s = arg;
    if (s->inflight.deferred)
        inflight_retry(&s->inflight);
}

struct http_server *http_server_new(const struct http_server_config *cfg)
{
    struct http_server *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->o = cfg->o;
    s->base = cfg->base;
    s->slots = cfg->slots;
    s->nslots = cfg->nslots;
    s->index = cfg->index;
    s->slot = cfg->slots + cfg->index;
    s->ingest = cfg->ingest;
    s->access = cfg->access;
    s->auth = cfg->auth;
    s->catalog = cfg->catalog;
    s->deliver = cfg->deliver;
    s->pressure = (struct pressure){.dir = cfg->o->out_dir, .min_free = cfg->o->min_free,
                                    .max_lag = cfg->o->deliver_max_lag,
                                    .lag = cfg->deliver ? &cfg->deliver->lag_bytes : NULL,
                                    .shared = &cfg->slots[0].pressure};
    s->default_dataset = cfg->default_dataset;
    s->log_prefix = cfg->log_prefix;
    s->sync = cfg->sync;
    s->drained = cfg->drained;
    s->arg = cfg->arg;
    s->idem = cfg->idem;
    s->pid = getpid();
    if (cfg->inflight) {
        const struct timeval second = {1, 0};
        if (inflight_own(&s->inflight, cfg->inflight, cfg->index) ||
            !(s->retry_ev = event_new(s->base, -1, EV_PERSIST, retry_cb, s)) ||
            event_add(s->retry_ev, &second)) {
            if (s->retry_ev)
                event_free(s->retry_ev);
            inflight_disown(&s->inflight);
            event_free(s->commit_ev);
            free(s);
            return NULL;
        }
        s->tracking = 1;
    }
    if (!(s->commit_ev = event_new(s->base, -1, 0, commit_cb, s))) {
        free(s);
        return NULL;
    }
    return s;
}

struct sink *http_server_keylog(struct http_server *s)
{
    return s->keylog;
}

unsigned http_server_connections(const struct http_server *s)
{
    return s->nconns;
}

void http_server_drain(struct http_server *s)
{
    s->draining = 1;
    for (struct http_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        conn_drain(c);
    }
}

void http_server_close_all(struct http_server *s)
{
    for (struct http_conn *c = s->conns, *next; c; c = next) {
        next = c->next; /* freeing c unlinks only c */
        http_conn_free(c);
    }
}

void http_server_free(struct http_server *s)
{
    if (!s)
        return;
    s->drained = NULL; /* going away, not draining */
    http_server_close_all(s);
    event_free(s->commit_ev);
    buf_free(&s->batch);
    buf_free(&s->idem_batch);
    if (s->keylog)
        sink_close(s->keylog);
    if (s->retry_ev)
        event_free(s->retry_ev);
    inflight_disown(&s->inflight);
    free(s);
}
