/* codec.c: little-endian integers and length-prefixed strings, written to
 * buffers and read back with bounds checks. Every on-disk and on-wire
 * format in libdsync is built from these. */
#include <string.h>

#include "util.h"

void ut_put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

uint64_t ut_get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void ut_buf_put_le(ut_buf *b, uint64_t v, int bytes)
{
    unsigned char p[8];
    ut_put_le(p, v, bytes);
    ut_buf_append(b, p, (size_t)bytes);
}

void ut_buf_put_str16(ut_buf *b, const char *s)
{
    size_t n = strlen(s);
    ut_buf_put_le(b, n, 2);
    ut_buf_append(b, s, n);
}

uint64_t ut_read_le(ut_reader *r, int bytes)
{
    if (r->bad || r->left < (size_t)bytes) {
        r->bad = true;
        return 0;
    }
    uint64_t v = ut_get_le(r->p, bytes);
    r->p += bytes;
    r->left -= (size_t)bytes;
    return v;
}

void ut_read_str16(ut_reader *r, char *out, size_t max)
{
    size_t n = (size_t)ut_read_le(r, 2);
    if (r->bad || n == 0 || n > max || n > r->left || memchr(r->p, '\0', n)) {
        r->bad = true;
        out[0] = '\0';
        return;
    }
    memcpy(out, r->p, n);
    out[n] = '\0';
    r->p += n;
    r->left -= n;
}
