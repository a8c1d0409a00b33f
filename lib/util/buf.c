/* buf.c: a growable byte buffer that remembers a failed append. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsync/errors.h"
#include "util.h"

void ut_buf_init(ut_buf *b)
{
    memset(b, 0, sizeof *b);
}

void ut_buf_free(ut_buf *b)
{
    free(b->data);
    ut_buf_init(b);
}

int ut_buf_reserve(ut_buf *b, size_t extra)
{
    if (b->oom) return DSYNC_ENOMEM;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + extra + 1)
        ncap *= 2;
    char *nd = realloc(b->data, ncap);
    if (!nd) {
        b->oom = true;
        return DSYNC_ENOMEM;
    }
    b->data = nd;
    b->cap = ncap;
    return 0;
}

int ut_buf_append(ut_buf *b, const void *data, size_t len)
{
    /* Appending nothing from nowhere (NULL, 0) is fine, but memcpy with a
     * NULL source is undefined even for zero bytes. */
    if (ut_buf_reserve(b, len) != 0) return DSYNC_ENOMEM;
    if (len == 0) return 0;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int ut_buf_puts(ut_buf *b, const char *s)
{
    return ut_buf_append(b, s, strlen(s));
}

size_t ut_u64_dec(char out[20], uint64_t v)
{
    char rev[20];
    size_t n = 0;
    do {
        rev[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = rev[n - 1 - i];
    return n;
}

int ut_buf_put_dec(ut_buf *b, int64_t v)
{
    char d[21];
    size_t n = 0;
    uint64_t mag = (uint64_t)v;
    if (v < 0) {
        d[n++] = '-';
        mag = 0 - mag; /* exact for INT64_MIN too */
    }
    n += ut_u64_dec(d + n, mag);
    return ut_buf_append(b, d, n);
}

int ut_buf_printf(ut_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return DSYNC_EINVAL;
    if ((size_t)n < sizeof small) return ut_buf_append(b, small, (size_t)n);
    if (ut_buf_reserve(b, (size_t)n) != 0) return DSYNC_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

char *ut_buf_detach(ut_buf *b, size_t *len)
{
    if (b->oom) {
        ut_buf_free(b);
        return NULL;
    }
    if (!b->data && ut_buf_reserve(b, 0) != 0) return NULL;
    char *d = b->data;
    if (len) *len = b->len;
    ut_buf_init(b);
    return d;
}
