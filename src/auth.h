/* auth.h -- --token-file: the bearer tokens, the datasets each may append to, their
 * constant-time check, their reload on SIGHUP. */
#ifndef NDINGEST_AUTH_H
#define NDINGEST_AUTH_H

#include <stddef.h>

/* The longest token accepted. */
#define AUTH_TOKEN_MAX 256
/* Bytes a token file with --datasets may hold per token it may hold (--max-tokens): a line
 * of a longest token and a long list of datasets. */
#define AUTH_FILE_PER_TOKEN 4096

/* One token, zero-padded to AUTH_TOKEN_MAX so that the check can compare every byte
 * whatever its length. */
struct auth_token {
    char token[AUTH_TOKEN_MAX];
    size_t len;
    /* The datasets it may append to: "a,b,c" as written (names checked at load), or NULL:
     * any dataset. Owned by the struct auth. */
    char *names;
};

/* Zero-filled is "no token": auth_enabled() is 0 and nothing is checked. */
struct auth {
    size_t count;
    struct auth_token *tokens; /* [count]; owned (auth_free) */
};

static inline int auth_enabled(const struct auth *a)
{
    return a->count != 0;
}

/* Reads the token file at path into a (which must be zero-filled or loaded; what it held is
 * freed on success). 0, or -1 with a message in err, a unchanged. max_tokens (--max-tokens,
 * at least 1) bounds the scoped format's tokens, and its file at max_tokens ×
 * AUTH_FILE_PER_TOKEN bytes.
 * - scoped 0 (no --datasets: today's format): the first line, trailing blanks (space, tab,
 *   CR) stripped, is the one token, which may append anywhere.
 * - scoped 1 (--datasets): every line is "TOKEN [name,name...]": the token runs to the
 *   first space or tab, the list (dataset names, letters, digits and '_') follows after
 *   blanks; without a list the token may append to any dataset. Blank lines and lines
 *   starting with '#' are skipped. Errors say "--token-file PATH:LINE: ...".
 * Refused: a missing, unreadable or tokenless file, a token longer than AUTH_TOKEN_MAX, or
 * one no request could match (starting with a space or tab or with a UTF-8 byte order mark,
 * or holding a control character other than tab); scoped: more than max_tokens tokens, a larger file, a token given twice,
 * a bad name in a list. */
int auth_load(struct auth *a, const char *path, int scoped, size_t max_tokens, char *err,
              size_t errlen);

/* SIGHUP: auth_load again; on error the previous tokens stay and the error is logged
 * ("PREFIX: SIGHUP: ...; keeping the previous token"). */
void auth_reload(struct auth *a, const char *path, int scoped, size_t max_tokens,
                 const char *log_prefix);

void auth_free(struct auth *a);

/* Which token value[0..n), an Authorization header's value, carries as "Bearer <token>"
 * (the scheme in any case, blanks around the token ignored): its index in a->tokens, or -1.
 * The time taken does not depend on which token matches, nor on how much of any token
 * matches: every byte of every zero-padded token is compared and the differences ORed,
 * without an early exit. -1 when no token is loaded. */
int auth_match(const struct auth *a, const char *value, size_t n);

/* auth_match(...) >= 0. */
int auth_check(const struct auth *a, const char *value, size_t n);

/* Whether token i (from auth_match) may append to the dataset name[0..len). */
int auth_allows(const struct auth *a, int i, const char *name, size_t len);

#endif
