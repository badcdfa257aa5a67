/* http_strict.c -- strict HTTP/1.1 request framing ahead of llhttp (contract in http_strict.h). */
#include "http_strict.h"

#include <string.h>

enum state {
    S_START,        /* before a request line: its first byte, or one ignored CRLF */
    S_START_LF,
    S_METHOD_FIRST, /* after that CRLF: no second one */
    S_METHOD,
    S_TARGET_FIRST,
    S_TARGET,
    S_VERSION,      /* "HTTP/d.d", s->match bytes in */
    S_LINE_LF,      /* a line's CR is read: LF must follow */
    S_FIELD_FIRST,  /* a header (or trailer) line's first byte, or the block's CR */
    S_NAME,
    S_VALUE,
    S_BLOCK_LF,     /* the header block's last CR is read */
    S_BODY,         /* Content-Length bytes to skip */
    S_SIZE_FIRST,
    S_SIZE,
    S_EXT_NAME_FIRST,
    S_EXT_NAME,
    S_EXT_AFTER_NAME,
    S_EXT_VALUE_FIRST,
    S_EXT_VALUE,
    S_EXT_QUOTED,
    S_EXT_ESCAPE,
    S_EXT_AFTER_VALUE,
    S_SIZE_LF,
    S_DATA,
    S_DATA_CR,
    S_DATA_LF,
    S_FAILED,
};

/* Which framing header a field line is, while its name is read and then for its value. */
enum header { H_NONE, H_MAYBE_CL, H_MAYBE_TE, H_MAYBE_HOST, H_MAYBE_CONN, H_CL, H_TE, H_CONN };

/* What a header block said, in s->flags. */
#define F_LENGTH 0x01   /* a Content-Length */
#define F_CODING 0x02   /* a Transfer-Encoding */
#define F_CHUNKED 0x04  /* ...that is exactly "chunked" */
#define F_LENGTH_BAD 0x08
#define F_HOST 0x10     /* a Host */
#define F_HOST_TWICE 0x20

/* tchar (RFC 9110 §5.6.2): the bytes of methods, field names and chunk extensions. A table:
 * a name's bytes are checked one by one, and a switch per byte was a third of a short
 * header's check. */
static const unsigned char tchars[256] = {
    ['0' ... '9'] = 1, ['a' ... 'z'] = 1, ['A' ... 'Z'] = 1, ['!'] = 1, ['#'] = 1, ['$'] = 1,
    ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1,
    ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
};

static int is_tchar(unsigned char ch)
{
    return tchars[ch];
}

static int is_hex(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f');
}

static unsigned hex_value(unsigned char ch)
{
    return ch <= '9' ? (unsigned)(ch - '0') : (unsigned)((ch | 0x20) - 'a' + 10);
}

/* Field-value bytes (RFC 9110 §5.5): VCHAR, obs-text, SP and HTAB. */
static int is_value_byte(unsigned char ch)
{
    return ch == ' ' || ch == '\t' || (ch > 0x20 && ch != 0x7f);
}

static void fail(struct http_strict *s, int status, const char *why)
{
    s->state = S_FAILED;
    s->status = (uint16_t)status;
    s->error = why;
}

static const char content_length[] = "content-length";
static const char transfer_encoding[] = "transfer-encoding";
static const char chunked[] = "chunked";
static const char host[] = "host";
static const char connection[] = "connection";

/* One byte of a field name, matched against the names that frame the body, and Host. */
static void name_byte(struct http_strict *s, unsigned char ch)
{
    if (s->trailer || s->header == H_NONE)
        return;
    const char *name = s->header == H_MAYBE_CL   ? content_length
                       : s->header == H_MAYBE_TE ? transfer_encoding
                       : s->header == H_MAYBE_CONN ? connection
                                                 : host;
    size_t len = strlen(name);
    if (s->match < len && (ch | 0x20) == (unsigned char)name[s->match])
        s->match++;
    else if (s->header == H_MAYBE_CL && s->match == 3 && (ch | 0x20) == 'n') /* "con..." */
        s->header = H_MAYBE_CONN, s->match++;
    else
        s->header = H_NONE;
}

/* The name has ended at its colon: which header the value belongs to. */
static void name_end(struct http_strict *s)
{
    if (s->header == H_MAYBE_CL && s->match == sizeof content_length - 1) {
        s->header = H_CL;
        if (s->flags & F_LENGTH)
            s->flags |= F_LENGTH_BAD; /* even the same value twice: RFC 9112 §6.3 lets us refuse */
        s->flags |= F_LENGTH;
        s->length = 0;
    } else if (s->header == H_MAYBE_TE && s->match == sizeof transfer_encoding - 1) {
        s->header = H_TE;
        if (s->flags & F_CODING) /* codings stacked over two lines */
            fail(s, 501, "unsupported Transfer-Encoding: only a lone chunked is implemented");
        s->flags |= F_CODING;
    } else if (s->header == H_MAYBE_CONN && s->match == sizeof connection - 1) {
        s->header = H_CONN;
    } else if (s->header == H_MAYBE_HOST && s->match == sizeof host - 1) {
        s->flags |= s->flags & F_HOST ? F_HOST_TWICE : F_HOST;
        s->header = H_NONE;
    } else {
        s->header = H_NONE;
    }
    s->match = 0;
    s->value = 0;
}

/* Value positions of a framing header: leading blanks, the value, trailing blanks. */
enum { V_LEAD, V_IN, V_TRAIL };

/* One byte of a Content-Length or Transfer-Encoding value (not a CR). */
static void value_byte(struct http_strict *s, unsigned char ch)
{
    if (s->header == H_CONN) {
        /* llhttp 8.1 misses "close" followed by a tab, and would then read on: a request
         * after it would be processed, which RFC 9112 §9.6 forbids. */
        if (ch == '\t')
            fail(s, 400, "a tab in the Connection header");
        return;
    }
    if (ch == ' ' || ch == '\t') {
        if (s->value == V_IN)
            s->value = V_TRAIL;
        return;
    }
    if (s->value == V_TRAIL) { /* a blank inside: "1 2", or "chun ked" (not chunked) */
        if (s->header == H_CL)
            s->flags |= F_LENGTH_BAD;
        else
            fail(s, 501, "unsupported Transfer-Encoding: only a lone chunked is implemented");
        return;
    }
    s->value = V_IN;
    if (s->header == H_CL) {
        /* Past 2^60 no body is real; refusing here also keeps the sum from overflowing. */
        if (ch < '0' || ch > '9' || s->length > ((uint64_t)1 << 60))
            s->flags |= F_LENGTH_BAD;
        else
            s->length = s->length * 10 + (uint64_t)(ch - '0');
        s->match = 1;
    } else if (s->value == V_IN && s->match < sizeof chunked - 1 &&
               (ch | 0x20) == (unsigned char)chunked[s->match]) {
        s->match++;
    } else {
        /* Refused at once, before llhttp sees the byte and calls it malformed (400). */
        fail(s, 501, "unsupported Transfer-Encoding: only a lone chunked is implemented");
    }
}

static void value_end(struct http_strict *s)
{
    if (s->header == H_CONN)
        ;
    else if (s->header == H_CL && !s->match)
        s->flags |= F_LENGTH_BAD; /* empty */
    else if (s->header == H_TE && s->match == sizeof chunked - 1)
        s->flags |= F_CHUNKED;
    else if (s->header == H_TE) /* "chunk", or empty */
        fail(s, 501, "unsupported Transfer-Encoding: only a lone chunked is implemented");
    s->header = H_NONE;
    s->match = 0;
}

/* The header block has ended: how the body is framed. */
static void block_end(struct http_strict *s)
{
    uint8_t f = s->flags;
    s->flags = 0;
    if (s->trailer) {
        s->trailer = 0;
        s->state = S_START;
    } else if ((f & F_CODING) && (f & F_LENGTH)) {
        fail(s, 400, "both Transfer-Encoding and Content-Length");
    } else if ((f & F_CODING) && s->version < 11) {
        fail(s, 400, "Transfer-Encoding in an HTTP/1.0 request");
    } else if ((f & F_HOST_TWICE) || (!(f & F_HOST) && s->version >= 11)) {
        /* RFC 9112 §3.2: the Host is how a request names its target; one, always. */
        fail(s, 400, f & F_HOST ? "more than one Host header" : "HTTP/1.1 request without a Host header");
    } else if (f & F_LENGTH_BAD) {
        fail(s, 400, "invalid or repeated Content-Length");
    } else if (f & F_CHUNKED) {
        s->state = S_SIZE_FIRST;
        s->remaining = 0;
    } else if ((f & F_LENGTH) && s->length) {
        s->state = S_BODY;
        s->remaining = s->length;
    } else {
        s->state = S_START;
    }
}

/* A line's CR: LF must follow; then the next field line (or the block's end). */
static void line_lf(struct http_strict *s, unsigned char ch)
{
    if (ch == '\n')
        s->state = S_FIELD_FIRST;
    else
        fail(s, 400, "CR not followed by LF");
}

/* The chunk size line's end. */
static void size_line_end(struct http_strict *s, unsigned char ch)
{
    if (ch == '\r')
        s->state = S_SIZE_LF;
    else
        fail(s, 400, ch == '\n' ? "bare LF after a chunk size" : "invalid chunk extension");
}

/* One byte of the stream in any state but the bodies'. */
static void step(struct http_strict *s, unsigned char ch)
{
    switch ((enum state)s->state) {
    case S_START:
        if (ch == '\r') {
            s->state = S_START_LF;
        } else if (is_tchar(ch)) {
            s->state = S_METHOD;
        } else {
            fail(s, 400, "invalid request line");
        }
        break;
    case S_START_LF:
        if (ch == '\n')
            s->state = S_METHOD_FIRST;
        else
            fail(s, 400, "CR not followed by LF");
        break;
    case S_METHOD_FIRST:
        if (is_tchar(ch))
            s->state = S_METHOD;
        else
            fail(s, 400, "invalid request line");
        break;
    case S_METHOD:
        if (ch == ' ')
            s->state = S_TARGET_FIRST;
        else if (!is_tchar(ch))
            fail(s, 400, "invalid method");
        break;
    case S_TARGET_FIRST:
    case S_TARGET:
        if (ch > 0x20 && ch < 0x7f) {
            s->state = S_TARGET;
        } else if (ch == ' ' && s->state == S_TARGET) {
            s->state = S_VERSION;
            s->match = 0;
        } else {
            fail(s, 400, ch == '\r' || ch == '\n' ? "request line without an HTTP version"
                                                  : "invalid request target");
        }
        break;
    case S_VERSION: {
        static const char v[] = "HTTP/d.d\r";
        unsigned char want = (unsigned char)v[s->match];
        int ok = want == 'd' ? ch >= '0' && ch <= '9' : ch == want;
        if (!ok) {
            fail(s, 400, ch == '\n' ? "bare LF after the request line" : "invalid HTTP version");
            break;
        }
        if (s->match == 5)
            s->version = (uint8_t)(10 * (ch - '0'));
        else if (s->match == 7)
            s->version = (uint8_t)(s->version + (ch - '0'));
        if (++s->match == sizeof v - 1) {
            s->state = S_LINE_LF;
            s->trailer = 0;
            s->flags = 0;
        }
        break;
    }
    case S_LINE_LF:
        line_lf(s, ch);
        break;
    case S_FIELD_FIRST:
        if (ch == '\r') {
            s->state = S_BLOCK_LF;
        } else if (is_tchar(ch)) {
            s->state = S_NAME;
            s->header = (ch | 0x20) == 'c'   ? H_MAYBE_CL
                        : (ch | 0x20) == 't' ? H_MAYBE_TE
                        : (ch | 0x20) == 'h' ? H_MAYBE_HOST
                                             : H_NONE;
            s->match = 0;
            name_byte(s, ch);
        } else if (ch == ':') {
            fail(s, 400, "empty header field name");
        } else if (ch == ' ' || ch == '\t') {
            fail(s, 400, "obsolete line folding (a field line starting with whitespace)");
        } else {
            fail(s, 400, ch == '\n' ? "bare LF in the header block" : "invalid header field name");
        }
        break;
    case S_NAME:
        if (ch == ':') {
            s->state = S_VALUE;
            if (s->trailer)
                s->header = H_NONE;
            else
                name_end(s);
        } else if (is_tchar(ch)) {
            name_byte(s, ch);
        } else {
            fail(s, 400, ch == ' ' || ch == '\t' ? "whitespace before a header field's colon"
                                                 : "invalid header field name");
        }
        break;
    case S_VALUE:
        if (ch == '\r') {
            s->state = S_LINE_LF;
            value_end(s);
        } else if (is_value_byte(ch)) {
            if (s->header != H_NONE)
                value_byte(s, ch);
        } else {
            fail(s, 400, ch == '\n' ? "bare LF in the header block" : "control byte in a header value");
        }
        break;
    case S_BLOCK_LF:
        if (ch == '\n')
            block_end(s);
        else
            fail(s, 400, "header block not ended by CRLF");
        break;
    case S_SIZE_FIRST:
    case S_SIZE:
        if (is_hex(ch)) {
            /* Below 2^60 (15 hex digits past leading zeros): no real chunk is larger. */
            if (s->remaining >> 56) {
                fail(s, 400, "chunk size too large");
                break;
            }
            s->remaining = s->remaining << 4 | hex_value(ch);
            s->state = S_SIZE;
        } else if (s->state == S_SIZE && ch == ';') {
            s->state = S_EXT_NAME_FIRST;
        } else if (s->state == S_SIZE) {
            size_line_end(s, ch);
        } else {
            fail(s, 400, "invalid chunk size");
        }
        break;
    case S_EXT_NAME_FIRST: /* RFC 9112 §7.1.1: BWS ";" BWS name [BWS "=" BWS value] */
        if (is_tchar(ch))
            s->state = S_EXT_NAME;
        else if (ch != ' ' && ch != '\t')
            fail(s, 400, "invalid chunk extension");
        break;
    case S_EXT_NAME:
    case S_EXT_AFTER_NAME:
        if (ch == '=')
            s->state = S_EXT_VALUE_FIRST;
        else if (ch == ';')
            s->state = S_EXT_NAME_FIRST;
        else if (ch == ' ' || ch == '\t')
            s->state = S_EXT_AFTER_NAME;
        else if (s->state == S_EXT_NAME && is_tchar(ch))
            break;
        else
            size_line_end(s, ch);
        break;
    case S_EXT_VALUE_FIRST:
        if (ch == '"')
            s->state = S_EXT_QUOTED;
        else if (is_tchar(ch))
            s->state = S_EXT_VALUE;
        else if (ch != ' ' && ch != '\t')
            fail(s, 400, "invalid chunk extension");
        break;
    case S_EXT_VALUE:
    case S_EXT_AFTER_VALUE:
        if (ch == ';')
            s->state = S_EXT_NAME_FIRST;
        else if (ch == ' ' || ch == '\t')
            s->state = S_EXT_AFTER_VALUE;
        else if (s->state == S_EXT_VALUE && is_tchar(ch))
            break;
        else
            size_line_end(s, ch);
        break;
    case S_EXT_QUOTED: /* qdtext and quoted-pair, RFC 9110 §5.6.4 */
        if (ch == '"')
            s->state = S_EXT_AFTER_VALUE;
        else if (ch == '\\')
            s->state = S_EXT_ESCAPE;
        else if (!is_value_byte(ch))
            fail(s, 400, "invalid chunk extension");
        break;
    case S_EXT_ESCAPE:
        if (is_value_byte(ch))
            s->state = S_EXT_QUOTED;
        else
            fail(s, 400, "invalid chunk extension");
        break;
    case S_SIZE_LF:
        if (ch != '\n') {
            fail(s, 400, "CR not followed by LF after a chunk size");
        } else if (s->remaining) {
            s->state = S_DATA;
        } else {
            s->state = S_FIELD_FIRST; /* the last chunk: trailer fields, then CRLF */
            s->trailer = 1;
        }
        break;
    case S_DATA_CR:
        if (ch == '\r')
            s->state = S_DATA_LF;
        else
            fail(s, 400, "chunk data not followed by CRLF");
        break;
    case S_DATA_LF:
        if (ch == '\n')
            s->state = S_SIZE_FIRST;
        else
            fail(s, 400, "chunk data not followed by CRLF");
        break;
    case S_BODY:
    case S_DATA:
    case S_FAILED:
        break; /* not reached: see scan */
    }
}

/* The end of the run of field-value bytes, or tchars (name), from p + i. */
static size_t run_end(const char *p, size_t i, size_t n, int name)
{
    if (name)
        while (i < n && is_tchar((unsigned char)p[i]))
            i++;
    else
        while (i < n && is_value_byte((unsigned char)p[i]))
            i++;
    return i;
}

/* Checks p[0..n): how many bytes are well framed. */
static size_t scan(struct http_strict *s, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* A header's name or value that no matcher follows (most of a head's bytes): what
         * step would do byte by byte is only to check each one's class. */
        if (s->header == H_NONE && (s->state == S_VALUE || s->state == S_NAME)) {
            i = run_end(p, i, n, s->state == S_NAME);
            if (i == n)
                break;
        }
        if (s->state == S_BODY || s->state == S_DATA) {
            uint64_t left = n - i;
            uint64_t take = s->remaining < left ? s->remaining : left;
            i += (size_t)take;
            s->remaining -= take;
            if (!s->remaining)
                s->state = s->state == S_BODY ? S_START : S_DATA_CR;
            continue;
        }
        step(s, (unsigned char)p[i]);
        if (s->state == S_FAILED)
            return i;
        i++;
    }
    return n;
}

void http_strict_init(struct http_strict *s)
{
    memset(s, 0, sizeof *s);
}

size_t http_strict_check(struct http_strict *s, const char *p, size_t n)
{
    if (s->ahead >= n)
        return n;
    size_t done = s->ahead;
    if (s->state != S_FAILED)
        s->ahead = done + scan(s, p + done, n - done);
    return s->ahead;
}

void http_strict_consumed(struct http_strict *s, size_t n)
{
    s->ahead = n < s->ahead ? s->ahead - n : 0;
}

const char *http_strict_path(const char *t, size_t n, size_t *len)
{
    *len = n;
    if (!n || t[0] == '/')
        return t; /* origin-form, the usual case */
    size_t i = 0;
    while (i < n && ((t[i] | 0x20) >= 'a' && (t[i] | 0x20) <= 'z'))
        i++;
    if (i == 0 || n - i < 3 || memcmp(t + i, "://", 3) != 0)
        return t; /* authority-form, asterisk-form or not a target at all: never routed */
    i += 3;
    while (i < n && t[i] != '/' && t[i] != '?' && t[i] != '#')
        i++;
    if (i == n || t[i] != '/') {
        *len = 1;
        return "/";
    }
    *len = n - i;
    return t + i;
}
