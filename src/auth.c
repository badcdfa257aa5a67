/* auth.c -- --token-file: the bearer token, its constant-time check, its reload on SIGHUP. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"

/* What auth_load reads: the longest token and the blanks its line may end in (CRLF, a few
 * spaces), which are stripped before the length is judged. */
#define AUTH_LINE_MAX (AUTH_TOKEN_MAX + 64)

int auth_load(struct auth *a, const char *path, char *err, size_t errlen)
{
    char line[AUTH_LINE_MAX];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "--token-file %s: %s", path, strerror(errno));
        return -1;
    }
    ssize_t n;
    do
        n = read(fd, line, sizeof line);
    while (n < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "--token-file %s: %s", path, strerror(e));
        return -1;
    }
    size_t len = 0;
    while (len < (size_t)n && line[len] != '\n')
        len++;
    /* A line that fills the buffer without its newline may go on past it. */
    int whole = len < (size_t)n || (size_t)n < sizeof line;
    while (len && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
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
    /* auth_check skips the blanks after "Bearer ", and a header value cannot carry a
     * control character (llhttp refuses it): such a token would make every request a 401,
     * so it is refused here, where the operator sees it. */
    if (line[0] == ' ' || line[0] == '\t') {
        snprintf(err, errlen, "--token-file %s: the token starts with a space or tab, which "
                 "no Authorization header can carry: remove it", path);
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)line[i] < 0x20 && line[i] != '\t') || line[i] == 0x7f) {
            snprintf(err, errlen, "--token-file %s: the token holds a control character "
                     "(byte %zu), which no Authorization header can carry", path, i + 1);
            return -1;
        }
    memset(a->token, 0, sizeof a->token);
    memcpy(a->token, line, len);
    a->len = len;
    return 0;
}

void auth_reload(struct auth *a, const char *path, const char *log_prefix)
{
    char err[300];
    if (auth_load(a, path, err, sizeof err))
        log_error("%s: SIGHUP: %s; keeping the previous token", log_prefix, err);
}

int auth_check(const struct auth *a, const char *value, size_t n)
{
    if (!a->len || n < 7 || strncasecmp(value, "bearer ", 7) != 0)
        return 0;
    size_t i = 7;
    while (i < n && (value[i] == ' ' || value[i] == '\t'))
        i++;
    size_t len = n - i;
    while (len && (value[i + len - 1] == ' ' || value[i + len - 1] == '\t'))
        len--;
    if (len > AUTH_TOKEN_MAX)
        return 0;
    char given[AUTH_TOKEN_MAX] = {0};
    memcpy(given, value + i, len);
    unsigned diff = (unsigned)(len ^ a->len);
    for (size_t k = 0; k < AUTH_TOKEN_MAX; k++)
        diff |= (unsigned char)(given[k] ^ a->token[k]);
    return diff == 0;
}
