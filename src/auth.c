/* auth.c -- --token-file: the bearer tokens, their datasets, the constant-time check, reload. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"

/* What the unscoped format reads: the longest token and the blanks its line may end in
 * (CRLF, a few spaces), which are stripped before the length is judged. */
#define AUTH_LINE_MAX (AUTH_TOKEN_MAX + 64)

/* Reads up to max bytes of path into buf (max + 1 bytes of room: one more tells that the
 * file is longer). The count, or -1 with a message in err. */
static ssize_t read_file(const char *path, char *buf, size_t max, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "--token-file %s: %s", path, strerror(errno));
        return -1;
    }
    size_t got = 0;
    while (got <= max) {
        ssize_t n = read(fd, buf + got, max + 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            snprintf(err, errlen, "--token-file %s: %s", path, strerror(e));
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return (ssize_t)got;
}

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}

/* Whether p[0..len) can be a token; where: "PATH" or "PATH:LINE" for the message. */
static int token_ok(const char *p, size_t len, const char *where, char *err, size_t errlen)
{
    if (len > AUTH_TOKEN_MAX) {
        snprintf(err, errlen, "--token-file %s: the token is longer than %d bytes", where,
                 AUTH_TOKEN_MAX);
        return 0;
    }
    /* auth_match skips the blanks after "Bearer ", and a header value cannot carry a
     * control character (llhttp refuses it): such a token would make every request a 401,
     * so it is refused here, where the operator sees it. */
    if (p[0] == ' ' || p[0] == '\t') {
        snprintf(err, errlen, "--token-file %s: the token starts with a space or tab, which "
                 "no Authorization header can carry: remove it", where);
        return 0;
    }
    /* A Windows editor saves UTF-8 with these three bytes first. Clients send the token
     * without them, so the token would get 401 forever; stripping them instead would fail
     * a client that reads the same file as bytes and sends them: refused, so that both
     * sides use the token as the operator sees it once the file is saved without. */
    if (len >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) {
        snprintf(err, errlen, "--token-file %s: the token starts with a UTF-8 byte order mark "
                 "(EF BB BF, as a Windows editor saves), which clients do not send: save the "
                 "file without it", where);
        return 0;
    }
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f) {
            snprintf(err, errlen, "--token-file %s: the token holds a control character "
                     "(byte %zu), which no Authorization header can carry", where, i + 1);
            return 0;
        }
    return 1;
}

static void token_set(struct auth_token *t, const char *p, size_t len)
{
    memset(t->token, 0, sizeof t->token);
    memcpy(t->token, p, len);
    t->len = len;
    t->names = NULL;
}

/* Today's format: the first line is the one token. */
static int load_first_line(struct auth *into, const char *path, char *err, size_t errlen)
{
    char line[AUTH_LINE_MAX + 1];
    ssize_t n = read_file(path, line, AUTH_LINE_MAX - 1, err, errlen);
    if (n < 0)
        return -1;
    size_t len = 0;
    while (len < (size_t)n && line[len] != '\n')
        len++;
    /* A line that fills the buffer without its newline may go on past it. */
    int whole = len < (size_t)n || (size_t)n < AUTH_LINE_MAX;
    while (len && is_blank(line[len - 1]))
        len--;
    if (!whole || len > AUTH_TOKEN_MAX) {
        snprintf(err, errlen, "--token-file %s: the token is longer than %d bytes", path,
                 AUTH_TOKEN_MAX);
        return -1;
    }
    if (!len) {
        snprintf(err, errlen, "--token-file %s: empty (the token is its first line)", path);
        return -1;
    }
    if (!token_ok(line, len, path, err, errlen))
        return -1;
    if (!(into->tokens = calloc(1, sizeof *into->tokens))) {
        snprintf(err, errlen, "--token-file %s: out of memory", path);
        return -1;
    }
    token_set(&into->tokens[0], line, len);
    into->count = 1;
    return 0;
}

/* A dataset list "a,b,c": names of letters, digits and '_', none empty. */
static int names_ok(const char *p, size_t len)
{
    size_t run = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || p[i] == ',') {
            if (!run)
                return 0;
            run = 0;
        } else if ((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
                   (p[i] >= '0' && p[i] <= '9') || p[i] == '_') {
            run++;
        } else {
            return 0;
        }
    }
    return 1;
}

/* One "TOKEN [names]" line (trailing blanks stripped, not empty) into into's next token, of
 * the max that into->tokens has room for. */
static int load_line(struct auth *into, size_t max, const char *p, size_t len, const char *where,
                     char *err, size_t errlen)
{
    size_t tl = 0;
    while (tl < len && p[tl] != ' ' && p[tl] != '\t')
        tl++;
    if (!token_ok(p, tl ? tl : len, where, err, errlen))
        return -1;
    if (into->count == max) {
        snprintf(err, errlen, "--token-file %s: more than %zu tokens (--max-tokens)", where, max);
        return -1;
    }
    for (size_t k = 0; k < into->count; k++)
        if (into->tokens[k].len == tl && !memcmp(into->tokens[k].token, p, tl)) {
            snprintf(err, errlen, "--token-file %s: the same token again (give it one line "
                     "with every dataset it may append to)", where);
            return -1;
        }
    size_t at = tl;
    while (at < len && (p[at] == ' ' || p[at] == '\t'))
        at++;
    struct auth_token *t = &into->tokens[into->count];
    token_set(t, p, tl);
    if (at < len) {
        if (!names_ok(p + at, len - at)) {
            snprintf(err, errlen, "--token-file %s: after the token, a list of dataset names "
                     "separated by commas (letters, digits and '_'), without blanks", where);
            return -1;
        }
        if (!(t->names = strndup(p + at, len - at))) {
            snprintf(err, errlen, "--token-file %s: out of memory", where);
            return -1;
        }
    }
    into->count++;
    return 0;
}

/* The --datasets format: every line a token and its datasets. */
static int load_lines(struct auth *into, const char *path, size_t max_tokens, char *err,
                      size_t errlen)
{
    /* Both only as large as the option allows; malloc maps large blocks lazily, so a small
     * file touches little of them. */
    size_t most = max_tokens * AUTH_FILE_PER_TOKEN;
    char *text = malloc(most + 1);
    into->tokens = calloc(max_tokens, sizeof *into->tokens);
    if (!text || !into->tokens) {
        snprintf(err, errlen, "--token-file %s: out of memory", path);
        free(text);
        return -1;
    }
    ssize_t n = read_file(path, text, most, err, errlen);
    int rc = n < 0 ? -1 : 0;
    if (n > 0 && (size_t)n > most) {
        snprintf(err, errlen, "--token-file %s: larger than %zu bytes (--max-tokens %zu x %d)",
                 path, most, max_tokens, AUTH_FILE_PER_TOKEN);
        rc = -1;
    }
    size_t lineno = 0;
    for (size_t at = 0; !rc && at < (size_t)n;) {
        const char *p = text + at;
        const char *nl = memchr(p, '\n', (size_t)n - at);
        size_t len = nl ? (size_t)(nl - p) : (size_t)n - at;
        at += len + 1;
        lineno++;
        while (len && is_blank(p[len - 1]))
            len--;
        if (!len || p[0] == '#')
            continue;
        char where[4200];
        snprintf(where, sizeof where, "%s:%zu", path, lineno);
        rc = load_line(into, max_tokens, p, len, where, err, errlen);
    }
    if (!rc && !into->count) {
        snprintf(err, errlen, "--token-file %s: no token (each line is TOKEN [name,name...])",
                 path);
        rc = -1;
    }
    free(text);
    return rc;
}

void auth_free(struct auth *a)
{
    for (size_t k = 0; k < a->count; k++)
        free(a->tokens[k].names);
    free(a->tokens);
    memset(a, 0, sizeof *a);
}

int auth_load(struct auth *a, const char *path, int scoped, size_t max_tokens, char *err,
              size_t errlen)
{
    struct auth *next = calloc(1, sizeof *next);
    if (!next) {
        snprintf(err, errlen, "--token-file %s: out of memory", path);
        return -1;
    }
    int rc = scoped ? load_lines(next, path, max_tokens, err, errlen)
                    : load_first_line(next, path, err, errlen);
    if (!rc) {
        auth_free(a);
        *a = *next;
    } else {
        auth_free(next);
    }
    free(next);
    return rc;
}

void auth_reload(struct auth *a, const char *path, int scoped, size_t max_tokens,
                 const char *log_prefix)
{
    char err[4400];
    if (auth_load(a, path, scoped, max_tokens, err, sizeof err))
        log_error("%s: SIGHUP: %s; keeping the previous token", log_prefix, err);
}

int auth_match(const struct auth *a, const char *value, size_t n)
{
    if (!a->count || n < 7 || strncasecmp(value, "bearer ", 7) != 0)
        return -1;
    size_t i = 7;
    while (i < n && (value[i] == ' ' || value[i] == '\t'))
        i++;
    size_t len = n - i;
    while (len && (value[i + len - 1] == ' ' || value[i + len - 1] == '\t'))
        len--;
    if (len > AUTH_TOKEN_MAX)
        return -1;
    char given[AUTH_TOKEN_MAX] = {0};
    memcpy(given, value + i, len);
    /* Tokens are unique (auth_load), so at most one matches: its index + 1 is ORed in. */
    uint32_t found = 0;
    for (size_t k = 0; k < a->count; k++) {
        const struct auth_token *t = &a->tokens[k];
        uint32_t diff = (uint32_t)(len ^ t->len); /* both at most AUTH_TOKEN_MAX */
        for (size_t b = 0; b < AUTH_TOKEN_MAX; b++)
            diff |= (unsigned char)(given[b] ^ t->token[b]);
        uint32_t equal = ((diff - 1u) >> 31) & 1u; /* 1 only when diff is 0: no branch */
        found |= (uint32_t)(k + 1) & (0u - equal);
    }
    return (int)found - 1;
}

int auth_check(const struct auth *a, const char *value, size_t n)
{
    return auth_match(a, value, n) >= 0;
}

int auth_allows(const struct auth *a, int i, const char *name, size_t len)
{
    if (i < 0 || (size_t)i >= a->count)
        return 0;
    const char *p = a->tokens[i].names;
    if (!p)
        return 1;
    for (;;) {
        size_t run = strcspn(p, ",");
        if (run == len && !memcmp(p, name, len))
            return 1;
        if (!p[run])
            return 0;
        p += run + 1;
    }
}
