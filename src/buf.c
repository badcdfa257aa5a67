/* buf.c -- a growable byte buffer. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

int buf_grow(struct buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > (size_t)-1 / 2 - b->len)
        return -1;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n))
        return -1;
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
