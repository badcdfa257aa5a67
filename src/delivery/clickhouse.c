/* clickhouse.c -- ClickHouse's HTTP interface as delivery needs it: version, DESCRIBE,
 * INSERT ... FORMAT CSV of a gzip'd batch, through libcurl easy handles kept per replica. */
#include "clickhouse.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <zlib.h>

#include "../buf.h"

/* The most of a response kept: DESCRIBE of a wide table, or an error's text. The rest is
 * read and dropped, so that the connection stays usable. */
#define RESPONSE_MAX (1u << 20)
/* The most a server's Retry-After is believed by default (clickhouse_config). */
#define RETRY_AFTER_MAX_MS (3600u * 1000u)
/* The credentials file's first line, at most. */
#define CREDENTIALS_MAX 4096

struct replica {
    char base[300]; /* "http://HOST:PORT/": what messages name, never the credentials */
    CURL *curl;     /* kept between requests: its connection is kept alive */
};

struct shard {
    struct replica *replicas;
    int n;
};

struct clickhouse {
    struct shard *shards;
    int nshards;
    char database[256];
    char suffix[64];
    char *user, *password; /* NULL without a credentials file */
    unsigned connect_timeout_ms, timeout_ms, retry_after_max_ms;
    int major, minor;      /* from clickhouse_version; 0 until known */
    struct buf params;     /* the request's URL parameters, encoded */
    struct buf url;        /* a replica's base and params, NUL-terminated */
    struct buf sql;        /* a statement before it is encoded */
    struct buf gz;         /* the gzip'd body */
    struct buf resp;       /* the response body (up to RESPONSE_MAX) */
    unsigned retry_after_ms;
    z_stream z;
    int z_ready;
    struct curl_slist *hdr_plain, *hdr_gzip;
    char curl_err[CURL_ERROR_SIZE];
};

static int curl_ready;

static void set_err(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, a, b);
}

/* The password never survives its use in memory we free. */
static void wipe_free(char *p)
{
    if (p) {
        explicit_bzero(p, strlen(p));
        free(p);
    }
}

static int read_credentials(struct clickhouse *ch, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot open the credentials: %s", path, strerror(errno));
        return -1;
    }
    char text[CREDENTIALS_MAX + 1];
    size_t len = 0;
    ssize_t got;
    while (len < CREDENTIALS_MAX && (got = read(fd, text + len, CREDENTIALS_MAX - len)) != 0) {
        if (got < 0) {
            if (errno == EINTR)
                continue;
            set_err(err, errlen, "%s: cannot read the credentials: %s", path, strerror(errno));
            close(fd);
            explicit_bzero(text, sizeof text);
            return -1;
        }
        len += (size_t)got;
    }
    close(fd);
    text[len] = '\0';
    char *eol = strchr(text, '\n');
    if (eol)
        *eol = '\0';
    else if (len == CREDENTIALS_MAX) {
        explicit_bzero(text, sizeof text);
        set_err(err, errlen, "%s:1: the first line is longer than %s bytes", path, "4096");
        return -1;
    }
    size_t n = strlen(text);
    if (n && text[n - 1] == '\r')
        text[--n] = '\0';
    char *colon = strchr(text, ':');
    if (!colon || colon == text) {
        explicit_bzero(text, sizeof text);
        set_err(err, errlen, "%s:1: expected USER:PASSWORD%s", path, "");
        return -1;
    }
    *colon = '\0';
    ch->user = strdup(text);
    ch->password = strdup(colon + 1);
    explicit_bzero(text, sizeof text);
    if (!ch->user || !ch->password) {
        set_err(err, errlen, "%s: %s", path, "out of memory");
        return -1;
    }
    return 0;
}

/* One HOST[:PORT] (or [IPV6]:PORT) into r->base. */
static int parse_replica(struct replica *r, const char *p, size_t n, int https, char *err,
                         size_t errlen)
{
    char host[256];
    const char *port = NULL;
    size_t hn = n;
    if (n && p[0] == '[') {
        const char *close = memchr(p, ']', n);
        if (!close)
            goto bad;
        hn = (size_t)(close - p) + 1;
        if (hn < n) {
            if (p[hn] != ':')
                goto bad;
            port = p + hn + 1;
        }
    } else {
        const char *colon = memchr(p, ':', n);
        if (colon) {
            hn = (size_t)(colon - p);
            port = colon + 1;
        }
    }
    if (hn >= sizeof host)
        goto bad;
    memcpy(host, p, hn);
    host[hn] = '\0';
    if (!hn)
        snprintf(host, sizeof host, "%s", "127.0.0.1");
    for (size_t i = 0; i < hn; i++)
        if (!isalnum((unsigned char)host[i]) && !strchr(".-_[]:", host[i]))
            goto bad;
    long portnum = https ? 8443 : 8123;
    if (port) {
        size_t pn = (size_t)(p + n - port);
        if (pn == 0 || pn > 5)
            goto bad;
        portnum = 0;
        for (size_t i = 0; i < pn; i++) {
            if (!isdigit((unsigned char)port[i]))
                goto bad;
            portnum = portnum * 10 + (port[i] - '0');
        }
        if (portnum < 1 || portnum > 65535)
            goto bad;
    }
    snprintf(r->base, sizeof r->base, "%s://%s:%ld/", https ? "https" : "http", host, portnum);
    return 0;
bad:
    if (err && errlen)
        snprintf(err, errlen, "--deliver: bad host '%.*s' (HOST[:PORT])", (int)(n > 200 ? 200 : n),
                 p);
    return -1;
}

static int parse_url(struct clickhouse *ch, const char *url, char *err, size_t errlen)
{
    int https;
    const char *p;
    if (!strncmp(url, "clickhouse://", 13)) {
        https = 0;
        p = url + 13;
    } else if (!strncmp(url, "clickhouses://", 14)) {
        https = 1;
        p = url + 14;
    } else {
        set_err(err, errlen, "--deliver: '%s%s' is not clickhouse://HOST:PORT/DATABASE", "", "");
        return -1;
    }
    const char *slash = strchr(p, '/');
    const char *hosts_end = slash ? slash : p + strlen(p);
    if (memchr(p, '@', (size_t)(hosts_end - p))) {
        /* Never echo the URL here: it holds what looks like a password. */
        set_err(err, errlen,
                "--deliver: no user or password in the URL%s%s: use --deliver-credentials FILE",
                "", "");
        return -1;
    }
    /* Shards separated by ',', replicas by '|'. */
    ch->nshards = 1;
    for (const char *q = p; q < hosts_end; q++)
        ch->nshards += *q == ',';
    ch->shards = calloc((size_t)ch->nshards, sizeof *ch->shards);
    if (!ch->shards) {
        set_err(err, errlen, "--deliver: %s%s", "out of memory", "");
        return -1;
    }
    const char *s = p;
    for (int i = 0; i < ch->nshards; i++) {
        const char *e = memchr(s, ',', (size_t)(hosts_end - s));
        if (!e)
            e = hosts_end;
        struct shard *sh = &ch->shards[i];
        sh->n = 1;
        for (const char *q = s; q < e; q++)
            sh->n += *q == '|';
        sh->replicas = calloc((size_t)sh->n, sizeof *sh->replicas);
        if (!sh->replicas) {
            set_err(err, errlen, "--deliver: %s%s", "out of memory", "");
            return -1;
        }
        const char *r = s;
        for (int j = 0; j < sh->n; j++) {
            const char *re = memchr(r, '|', (size_t)(e - r));
            if (!re)
                re = e;
            if (parse_replica(&sh->replicas[j], r, (size_t)(re - r), https, err, errlen))
                return -1;
            r = re + 1;
        }
        s = e + 1;
    }
    /* /DATABASE[?table_suffix=S] */
    const char *db = slash ? slash + 1 : "";
    const char *q = strchr(db, '?');
    size_t dn = q ? (size_t)(q - db) : strlen(db);
    if (dn >= sizeof ch->database) {
        set_err(err, errlen, "--deliver: the database name is too long%s%s", "", "");
        return -1;
    }
    memcpy(ch->database, db, dn);
    ch->database[dn] = '\0';
    if (!dn)
        snprintf(ch->database, sizeof ch->database, "%s", "default");
    if (q) {
        const char *arg = q + 1;
        if (strncmp(arg, "table_suffix=", 13) != 0 || strchr(arg, '&') ||
            strlen(arg + 13) >= sizeof ch->suffix) {
            set_err(err, errlen, "--deliver: unknown parameter '%s'%s (table_suffix=S)", arg, "");
            return -1;
        }
        snprintf(ch->suffix, sizeof ch->suffix, "%s", arg + 13);
    }
    return 0;
}

struct clickhouse *clickhouse_open(const struct clickhouse_config *cfg, char *err, size_t errlen)
{
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            set_err(err, errlen, "libcurl: %s%s", "cannot initialise", "");
            return NULL;
        }
        curl_ready = 1;
    }
    struct clickhouse *ch = calloc(1, sizeof *ch);
    if (!ch) {
        set_err(err, errlen, "%s%s", "out of memory", "");
        return NULL;
    }
    ch->connect_timeout_ms = cfg->connect_timeout_ms;
    ch->timeout_ms = cfg->timeout_ms;
    ch->retry_after_max_ms = cfg->retry_after_max_ms ? cfg->retry_after_max_ms : RETRY_AFTER_MAX_MS;
    if (parse_url(ch, cfg->url, err, errlen) ||
        (cfg->credentials_file && read_credentials(ch, cfg->credentials_file, err, errlen))) {
        clickhouse_close(ch);
        return NULL;
    }
    /* "Expect:" off: libcurl would otherwise wait up to a second for 100 Continue before a
     * large body, which ClickHouse does not send. */
    ch->hdr_plain = curl_slist_append(NULL, "Expect:");
    ch->hdr_gzip = curl_slist_append(NULL, "Expect:");
    if (ch->hdr_gzip)
        ch->hdr_gzip = curl_slist_append(ch->hdr_gzip, "Content-Encoding: gzip");
    if (!ch->hdr_plain || !ch->hdr_gzip) {
        set_err(err, errlen, "%s%s", "out of memory", "");
        clickhouse_close(ch);
        return NULL;
    }
    return ch;
}

void clickhouse_close(struct clickhouse *ch)
{
    if (!ch)
        return;
    for (int i = 0; ch->shards && i < ch->nshards; i++) {
        for (int j = 0; ch->shards[i].replicas && j < ch->shards[i].n; j++)
            if (ch->shards[i].replicas[j].curl)
                curl_easy_cleanup(ch->shards[i].replicas[j].curl);
        free(ch->shards[i].replicas);
    }
    free(ch->shards);
    free(ch->user);
    wipe_free(ch->password);
    buf_free(&ch->params);
    buf_free(&ch->url);
    buf_free(&ch->sql);
    buf_free(&ch->gz);
    buf_free(&ch->resp);
    if (ch->z_ready)
        deflateEnd(&ch->z);
    curl_slist_free_all(ch->hdr_plain);
    curl_slist_free_all(ch->hdr_gzip);
    free(ch);
}

int clickhouse_shards(const struct clickhouse *ch)
{
    return ch->nshards;
}

const char *clickhouse_database(const struct clickhouse *ch)
{
    return ch->database;
}

/* ---- classification ---- */

/* The codes are ClickHouse's (src/Common/ErrorCodes.cpp); doc/delivery.md lists which were
 * provoked on 18.16 and how. */
static const int table_codes[] = {
    16, /* NO_SUCH_COLUMN_IN_TABLE: the INSERT names a column the table lacks */
    60, /* UNKNOWN_TABLE */
};
static const int config_codes[] = {
    81,  /* UNKNOWN_DATABASE */
    115, /* UNKNOWN_SETTING: e.g. insert_deduplication_token before 22.2 */
    164, /* READONLY: the user may not write */
    192, /* UNKNOWN_USER */
    193, /* WRONG_PASSWORD */
    194, /* REQUIRED_PASSWORD */
    195, /* IP_ADDRESS_NOT_ALLOWED */
    497, /* ACCESS_DENIED (20.x and later) */
    516, /* AUTHENTICATION_FAILED (20.x and later) */
};
static const int refused_codes[] = {
    6,   /* CANNOT_PARSE_TEXT */
    25,  /* CANNOT_PARSE_ESCAPE_SEQUENCE */
    26,  /* CANNOT_PARSE_QUOTED_STRING: an Array's string element */
    27,  /* CANNOT_PARSE_INPUT_ASSERTION_FAILED: 'abc' for a number, too few cells */
    38,  /* CANNOT_PARSE_DATE */
    41,  /* CANNOT_PARSE_DATETIME */
    53,  /* TYPE_MISMATCH */
    69,  /* ARGUMENT_OUT_OF_BOUND: a Decimal's digits or scale */
    70,  /* CANNOT_CONVERT_TYPE */
    72,  /* CANNOT_PARSE_NUMBER: '-1' for an unsigned column */
    117, /* INCORRECT_DATA: garbage after a cell, too many cells */
    130, /* CANNOT_READ_ARRAY_FROM_TEXT */
    131, /* TOO_LARGE_STRING_SIZE: longer than a FixedString */
    349, /* CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN */
    376, /* CANNOT_PARSE_UUID */
    691, /* UNKNOWN_ELEMENT_OF_ENUM (21.x and later; 49 before) */
};

static int in(const int *codes, size_t n, int code)
{
    for (size_t i = 0; i < n; i++)
        if (codes[i] == code)
            return 1;
    return 0;
}

#define IN(list, code) in((list), sizeof(list) / sizeof((list)[0]), (code))

/* "Code: N" where the body starts (18.16: "Code: 27, e.displayText() = ..."; later
 * versions: "Code: 27. DB::Exception: ..."); 0 when absent. */
static int body_code(const char *body, size_t len)
{
    size_t i = 0;
    while (i < len && isspace((unsigned char)body[i]))
        i++;
    if (len - i < 7 || memcmp(body + i, "Code: ", 6) != 0)
        return 0;
    int code = 0;
    for (i += 6; i < len && isdigit((unsigned char)body[i]) && code < 100000; i++)
        code = code * 10 + (body[i] - '0');
    return code;
}

enum send_result clickhouse_classify(int http_status, const char *body, size_t len, int *code)
{
    int c = http_status ? body_code(body, len) : 0;
    if (code)
        *code = c;
    if (http_status == 0)
        return SEND_RETRY; /* no response: refused, cut, timed out */
    if (http_status >= 200 && http_status < 300 && c == 0)
        return SEND_STORED;
    if (c) {
        if (IN(table_codes, c))
            return SEND_TABLE;
        if (IN(config_codes, c))
            return SEND_CONFIG;
        if (IN(refused_codes, c))
            return SEND_REFUSED;
        /* 49 is LOGICAL_ERROR, a server bug, in every version; 18.16 also throws it for an
         * Enum value it does not list. Only that one is the data's fault: a bug must not
         * send whole batches to the quarantine. */
        if (c == 49 && memmem(body, len, "Unknown element", 15))
            return SEND_REFUSED;
        return SEND_RETRY; /* 241 memory, 242 read-only replica, 252 too many parts, ... */
    }
    if (http_status == 401 || http_status == 403)
        return SEND_CONFIG; /* a proxy in front, or a server that says no code */
    return SEND_RETRY;      /* 5xx, 429, 503 and anything unknown: the same bytes later */
}

/* ---- requests ---- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct clickhouse *ch = arg;
    size_t n = size * nmemb;
    size_t keep = ch->resp.len >= RESPONSE_MAX ? 0 : RESPONSE_MAX - ch->resp.len;
    if (keep > n)
        keep = n;
    if (keep && buf_append(&ch->resp, p, keep))
        return 0; /* out of memory: libcurl fails the request, which is retried */
    return n;
}

/* Retry-After: SECONDS or an HTTP date. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    struct clickhouse *ch = arg;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (n <= sizeof name - 1 || strncasecmp(p, name, sizeof name - 1) != 0)
        return n;
    char value[64];
    size_t i = sizeof name - 1, vn = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t'))
        i++;
    while (i < n && p[i] != '\r' && p[i] != '\n' && vn < sizeof value - 1)
        value[vn++] = p[i++];
    value[vn] = '\0';
    if (!vn)
        return n;
    unsigned long long ms;
    if (isdigit((unsigned char)value[0])) {
        unsigned long long s = 0;
        for (size_t k = 0; k < vn && isdigit((unsigned char)value[k]) && s < 1000000; k++)
            s = s * 10 + (unsigned)(value[k] - '0');
        ms = s * 1000;
    } else {
        time_t when = curl_getdate(value, NULL);
        time_t now = time(NULL);
        if (when < 0)
            return n; /* not a date: as if absent */
        ms = when > now ? (unsigned long long)(when - now) * 1000 : 0;
    }
    ch->retry_after_ms = ms > ch->retry_after_max_ms ? ch->retry_after_max_ms : (unsigned)ms;
    return n;
}

static CURL *replica_handle(struct clickhouse *ch, struct replica *r)
{
    if (r->curl)
        return r->curl;
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM in a process with its own */
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)ch->connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)ch->timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, ch);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, ch);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ch->curl_err);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (ch->user) {
        /* Basic auth in a header (18.16 reads it), never user/password URL parameters:
         * URLs end up in logs (ClickHouse's query_log, a proxy's access log). */
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, ch->user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, ch->password);
    }
    r->curl = c;
    return c;
}

/* Replaces every occurrence of the password in s with "***": the server's message or
 * libcurl's could quote what it was given. */
static void scrub(const struct clickhouse *ch, char *s, size_t cap)
{
    if (!ch->password || !ch->password[0])
        return;
    size_t pn = strlen(ch->password);
    char copy[2048];
    snprintf(copy, sizeof copy, "%s", s);
    size_t w = 0;
    for (const char *r = copy; *r && w < cap - 1;) {
        if (!strncmp(r, ch->password, pn)) {
            for (const char *m = "***"; *m && w < cap - 1; m++)
                s[w++] = *m;
            r += pn;
        } else {
            s[w++] = *r++;
        }
    }
    s[w] = '\0';
}

/* out->message: "BASE: " and the first line of text, control bytes as blanks, scrubbed. */
static void set_message(struct clickhouse *ch, struct send_outcome *out, const char *base,
                        const char *text, size_t n)
{
    char line[2048];
    size_t w = (size_t)snprintf(line, sizeof line, "%s: ", base);
    if (w >= sizeof line)
        w = sizeof line - 1;
    size_t i = 0;
    while (i < n && isspace((unsigned char)text[i]))
        i++;
    for (; i < n && text[i] != '\n' && w < sizeof line - 1; i++)
        line[w++] = (unsigned char)text[i] < 0x20 ? ' ' : text[i];
    while (w && line[w - 1] == ' ')
        w--;
    line[w] = '\0';
    scrub(ch, line, sizeof line);
    size_t n2 = strlen(line);
    if (n2 >= sizeof out->message) {
        /* Cut before a character, not inside one: the message goes into logs and JSON. */
        n2 = sizeof out->message - 1;
        while (n2 && ((unsigned char)line[n2] & 0xC0) == 0x80)
            n2--;
    }
    memcpy(out->message, line, n2);
    out->message[n2] = '\0';
}

/* One request to one replica: the URL is r->base followed by ch->params; body[0..len)
 * POSTed, with Content-Encoding: gzip when gzip. */
static enum send_result perform(struct clickhouse *ch, struct replica *r, const char *body,
                                size_t len, int gzip, struct send_outcome *out)
{
    memset(out, 0, sizeof *out);
    out->refused_row = -1; /* ClickHouse never says which row it refused */
    CURL *c = replica_handle(ch, r);
    ch->url.len = 0;
    if (!c || buf_append(&ch->url, r->base, strlen(r->base)) ||
        buf_append(&ch->url, "?", 1) || buf_append(&ch->url, ch->params.p, ch->params.len) ||
        buf_append(&ch->url, "", 1)) {
        out->result = SEND_RETRY;
        set_message(ch, out, r->base, "out of memory", 13);
        return out->result;
    }
    curl_easy_setopt(c, CURLOPT_URL, ch->url.p);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, gzip ? ch->hdr_gzip : ch->hdr_plain);
    ch->resp.len = 0;
    ch->retry_after_ms = 0;
    ch->curl_err[0] = '\0';
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        out->result = SEND_RETRY;
        char text[CURL_ERROR_SIZE + 128];
        int tn = snprintf(text, sizeof text, "%s%s%s", curl_easy_strerror(rc),
                          ch->curl_err[0] ? ": " : "", ch->curl_err);
        set_message(ch, out, r->base, text, tn < 0 ? 0 : (size_t)tn);
        return out->result;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    out->http_status = (int)status;
    out->result = clickhouse_classify(out->http_status, ch->resp.p ? ch->resp.p : "",
                                      ch->resp.len, &out->code);
    if (out->result == SEND_RETRY)
        out->retry_after_ms = ch->retry_after_ms;
    if (out->result != SEND_STORED) {
        if (ch->resp.len)
            set_message(ch, out, r->base, ch->resp.p, ch->resp.len);
        else {
            char text[32];
            int tn = snprintf(text, sizeof text, "HTTP %d", out->http_status);
            set_message(ch, out, r->base, text, (size_t)tn);
        }
    }
    return out->result;
}

/* ch->params, the query string, is built from these. */
static int param_raw(struct clickhouse *ch, const char *s, size_t n)
{
    return buf_append(&ch->params, s, n);
}

/* Percent-encodes all but RFC 3986's unreserved bytes. */
static int param_encoded(struct clickhouse *ch, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (buf_reserve(&ch->params, n * 3))
        return -1;
    char *w = ch->params.p + ch->params.len;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        if (isalnum(b) || b == '-' || b == '_' || b == '.' || b == '~') {
            *w++ = (char)b;
        } else {
            *w++ = '%';
            *w++ = hex[b >> 4];
            *w++ = hex[b & 15];
        }
    }
    ch->params.len = (size_t)(w - ch->params.p);
    return 0;
}

static int param(struct clickhouse *ch, const char *key, const char *value)
{
    return param_raw(ch, ch->params.len ? "&" : "", ch->params.len ? 1 : 0) ||
           param_raw(ch, key, strlen(key)) || param_raw(ch, "=", 1) ||
           param_encoded(ch, value, strlen(value));
}

/* An identifier in back quotes, with ` and \ escaped: any dataset or column name. */
static int sql_ident(struct buf *b, const char *s, size_t n)
{
    if (buf_append(b, "`", 1))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if ((s[i] == '`' || s[i] == '\\') && buf_append(b, "\\", 1))
            return -1;
        if (buf_append(b, s + i, 1))
            return -1;
    }
    return buf_append(b, "`", 1);
}

/* `db`.`table+suffix` */
static int sql_table(struct clickhouse *ch, const char *table)
{
    char name[512];
    int n = snprintf(name, sizeof name, "%s%s", table, ch->suffix);
    if (n < 0 || (size_t)n >= sizeof name)
        return -1;
    return sql_ident(&ch->sql, ch->database, strlen(ch->database)) ||
           buf_append(&ch->sql, ".", 1) || sql_ident(&ch->sql, name, (size_t)n);
}

static enum send_result fail(struct send_outcome *out, enum send_result r, const char *msg)
{
    memset(out, 0, sizeof *out);
    out->refused_row = -1;
    out->result = r;
    snprintf(out->message, sizeof out->message, "%s", msg);
    return r;
}

/* Sends on each replica of shard in turn until one answers (an answer of any kind: only
 * a replica that cannot be reached is passed over). */
static enum send_result on_shard(struct clickhouse *ch, int shard, const char *body,
                                 size_t len, int gzip, struct send_outcome *out)
{
    if (shard < 0 || shard >= ch->nshards)
        return fail(out, SEND_CONFIG, "no such shard");
    struct shard *sh = &ch->shards[shard];
    enum send_result r = SEND_RETRY;
    for (int i = 0; i < sh->n; i++) {
        r = perform(ch, &sh->replicas[i], body, len, gzip, out);
        if (out->http_status != 0)
            break;
    }
    return r;
}

/* A statement in the body (no data): SELECT, DESCRIBE, CREATE. */
static enum send_result statement(struct clickhouse *ch, int shard, const char *sql, size_t n,
                                  struct send_outcome *out)
{
    ch->params.len = 0;
    /* 18.16 refuses LowCardinality in CREATE TABLE without it; later versions accept it
     * (and ignore it) until it is gone, so only for the version that needs it. */
    if (ch->major == 18 && param(ch, "allow_experimental_low_cardinality_type", "1"))
        return fail(out, SEND_RETRY, "out of memory");
    return on_shard(ch, shard, sql, n, 0, out);
}

enum send_result clickhouse_version(struct clickhouse *ch, int *major, int *minor,
                                    struct send_outcome *out)
{
    static const char sql[] = "SELECT version()";
    enum send_result r = statement(ch, 0, sql, sizeof sql - 1, out);
    if (r != SEND_STORED)
        return r;
    int a = 0, b = 0, i = 0, n = (int)ch->resp.len;
    const char *p = ch->resp.p ? ch->resp.p : "";
    while (i < n && isdigit((unsigned char)p[i]) && a < 100000)
        a = a * 10 + (p[i++] - '0');
    if (i == 0 || i >= n || p[i++] != '.' || i >= n || !isdigit((unsigned char)p[i]))
        return fail(out, SEND_RETRY, "SELECT version(): not a version");
    while (i < n && isdigit((unsigned char)p[i]) && b < 100000)
        b = b * 10 + (p[i++] - '0');
    ch->major = *major = a;
    ch->minor = *minor = b;
    return SEND_STORED;
}

/* Copies a TabSeparated field p[0..n) unescaped (\t \n \\ \' ...) into dst[0..cap). */
static void tsv_field(char *dst, size_t cap, const char *p, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n && w < cap - 1; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            c = p[++i];
            c = c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c == '0' ? '\0' : c;
        }
        dst[w++] = c;
    }
    dst[w] = '\0';
}

enum send_result clickhouse_describe(struct clickhouse *ch, int shard, const char *table,
                                     struct clickhouse_column *cols, size_t max, size_t *n,
                                     struct send_outcome *out)
{
    *n = 0;
    ch->sql.len = 0;
    if (buf_append(&ch->sql, "DESCRIBE TABLE ", 15) || sql_table(ch, table) ||
        buf_append(&ch->sql, " FORMAT TabSeparated", 20))
        return fail(out, SEND_TABLE, "the table's name is too long");
    enum send_result r = statement(ch, shard, ch->sql.p, ch->sql.len, out);
    if (r != SEND_STORED)
        return r;
    /* name \t type \t default_kind \t default_expression [\t comment...] */
    const char *p = ch->resp.p ? ch->resp.p : "", *end = p + ch->resp.len;
    while (p < end && *n < max) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        const char *f[3] = {p, NULL, NULL};
        size_t flen[3] = {0, 0, 0};
        int k = 0;
        for (const char *q = p; q <= eol && k < 3; q++) {
            if (q == eol || *q == '\t') {
                flen[k] = (size_t)(q - f[k]);
                if (++k < 3)
                    f[k] = q + 1;
                if (q == eol)
                    break;
            }
        }
        if (eol > p) {
            if (k < 2)
                return fail(out, SEND_RETRY, "DESCRIBE TABLE: not TabSeparated");
            struct clickhouse_column *c = &cols[(*n)++];
            tsv_field(c->name, sizeof c->name, f[0], flen[0]);
            tsv_field(c->type, sizeof c->type, f[1], flen[1]);
            if (k >= 3)
                tsv_field(c->default_kind, sizeof c->default_kind, f[2], flen[2]);
            else
                c->default_kind[0] = '\0';
        }
        p = eol + 1;
    }
    return SEND_STORED;
}

enum send_result clickhouse_execute(struct clickhouse *ch, int shard, const char *sql,
                                    struct send_outcome *out)
{
    /* The settings a statement needs depend on the version (statement()). */
    int major, minor;
    if (ch->major == 0 && clickhouse_version(ch, &major, &minor, out) != SEND_STORED)
        return out->result;
    return statement(ch, shard, sql, strlen(sql), out);
}

/* body[0..len) into ch->gz as one gzip member: the same bytes always give the same member
 * (zlib writes no time or name unless asked). */
static int gzip_body(struct clickhouse *ch, const char *body, size_t len)
{
    if (len > UINT_MAX / 2)
        return -1;
    if (!ch->z_ready) {
        /* Level 1: on a LAN the time to compress, not the bytes, is what costs; 15 + 16
         * asks zlib for the gzip wrapper that Content-Encoding: gzip names. */
        if (deflateInit2(&ch->z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            return -1;
        ch->z_ready = 1;
    } else if (deflateReset(&ch->z) != Z_OK) {
        return -1;
    }
    uLong bound = deflateBound(&ch->z, (uLong)len);
    ch->gz.len = 0;
    if (buf_reserve(&ch->gz, bound))
        return -1;
    ch->z.next_in = (Bytef *)(uintptr_t)body;
    ch->z.avail_in = (uInt)len;
    ch->z.next_out = (Bytef *)ch->gz.p;
    ch->z.avail_out = (uInt)bound;
    if (deflate(&ch->z, Z_FINISH) != Z_STREAM_END)
        return -1;
    ch->gz.len = bound - ch->z.avail_out;
    return 0;
}

enum send_result clickhouse_insert(struct clickhouse *ch, int shard, const char *table,
                                   const char *const *columns, size_t ncolumns,
                                   const char *body, size_t len, const char *dedup_token,
                                   struct send_outcome *out)
{
    ch->sql.len = 0;
    if (buf_append(&ch->sql, "INSERT INTO ", 12) || sql_table(ch, table))
        return fail(out, SEND_TABLE, "the table's name is too long");
    for (size_t i = 0; i < ncolumns; i++)
        if (buf_append(&ch->sql, i ? ", " : " (", 2) ||
            sql_ident(&ch->sql, columns[i], strlen(columns[i])))
            return fail(out, SEND_RETRY, "out of memory");
    if ((ncolumns && buf_append(&ch->sql, ")", 1)) ||
        buf_append(&ch->sql, " FORMAT CSV", 11) || buf_append(&ch->sql, "", 1))
        return fail(out, SEND_RETRY, "out of memory");
    ch->params.len = 0;
    /* The CSV is read as the day files are written (doc/datasets.md): a cell starting with
     * ' is text, and any cell ClickHouse cannot read refuses the batch rather than
     * being skipped. */
    if (param(ch, "query", ch->sql.p) || param(ch, "insert_deduplicate", "1") ||
        param(ch, "input_format_allow_errors_num", "0") ||
        param(ch, "input_format_allow_errors_ratio", "0") ||
        param(ch, "format_csv_allow_single_quotes", "0") ||
        param(ch, "format_csv_allow_double_quotes", "1") ||
        param(ch, "date_time_input_format", "basic") ||
        (dedup_token && param(ch, "insert_deduplication_token", dedup_token)))
        return fail(out, SEND_RETRY, "out of memory");
    if (gzip_body(ch, body, len))
        return fail(out, SEND_RETRY, "cannot gzip the batch (out of memory)");
    return on_shard(ch, shard, ch->gz.p, ch->gz.len, 1, out);
}
