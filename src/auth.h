/* auth.h -- --token-file: the bearer token, its constant-time check, its reload on SIGHUP. */
#ifndef NDINGEST_AUTH_H
#define NDINGEST_AUTH_H

#include <stddef.h>

/* The longest token accepted. */
#define AUTH_TOKEN_MAX 256

/* Zero-filled is "no token": auth_enabled() is 0 and nothing is checked. The token is
 * zero-padded to AUTH_TOKEN_MAX so that the check can compare every byte whatever its
 * length. */
struct auth {
    char token[AUTH_TOKEN_MAX];
    size_t len;
};

static inline int auth_enabled(const struct auth *a)
{
    return a->len != 0;
}

/* Reads path's first line, trailing blanks (space, tab, CR) stripped, as the token. 0, or
 * -1 with a message in err (missing, unreadable, empty, longer than AUTH_TOKEN_MAX, or a
 * token no request could match: one starting with a space or tab, or holding a control
 * character other than tab); a is unchanged on error. */
int auth_load(struct auth *a, const char *path, char *err, size_t errlen);

/* SIGHUP: auth_load again; on error the previous token stays and the error is logged
 * ("PREFIX: SIGHUP: ...; keeping the previous token"). */
void auth_reload(struct auth *a, const char *path, const char *log_prefix);

/* Whether value[0..n), an Authorization header's value, is "Bearer <the token>": the
 * scheme in any case, blanks (space, tab) around the token ignored. The time taken does
 * not depend on how much of the token matches: every byte of the zero-padded buffer is
 * compared and the differences ORed, without an early exit. 0 when no token is loaded. */
int auth_check(const struct auth *a, const char *value, size_t n);

#endif
