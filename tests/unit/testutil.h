/* testutil.h -- small helpers shared by the unit tests (cmocka must be included first). */
#ifndef NDINGEST_TESTUTIL_H
#define NDINGEST_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A copy of p[0..n) in a heap block of exactly n bytes, so that ASan catches any read past
 * the end (malloc(0) may return NULL; one byte is allocated then and n stays 0). */
static inline char *tu_exact(const void *p, size_t n)
{
    char *q = malloc(n ? n : 1);
    assert_non_null(q);
    if (n)
        memcpy(q, p, n);
    return q;
}

/* The whole file, in an exact-size block; *n gets its length. Fails the test if unreadable. */
static inline char *tu_slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    size_t cap = 4096, len = 0;
    char *p = malloc(cap);
    assert_non_null(p);
    size_t got;
    while ((got = fread(p + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            cap *= 2;
            p = realloc(p, cap);
            assert_non_null(p);
        }
    }
    fclose(f);
    char *q = tu_exact(p, len);
    free(p);
    *n = len;
    return q;
}

#endif
