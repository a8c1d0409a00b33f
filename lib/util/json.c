/*
 * json.c: the two JSON bits the hot HTTP answers need without jansson: a
 * UTF-8 check and a string literal writer. Both agree with jansson 2.14
 * byte for byte (tests/unit/test_util.c compares them on random input), so
 * an answer reads the same whichever way it was built.
 */
#include <stdint.h>
#include <string.h>

#include "dsync/errors.h"
#include "util.h"

bool ut_utf8_valid(const char *s, size_t len)
{
    if (len == 0) return true; /* s may be NULL then: no arithmetic on it */
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
            cp = c & 0x07;
        } else {
            return false; /* a continuation byte first, C0/C1, or F5..FF */
        }
        if ((size_t)(end - p) < n) return false;
        for (size_t i = 1; i < n; i++) {
            if ((p[i] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        /* Overlong forms, UTF-16 surrogates, beyond Unicode. */
        if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || (cp >= 0xD800 && cp <= 0xDFFF) ||
            cp > 0x10FFFF)
            return false;
        p += n;
    }
    return true;
}

int ut_buf_json_str(ut_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    static const char named[] = "\"\\\b\f\n\r\t", letter[] = "\"\\bfnrt";
    if (ut_buf_append(b, "\"", 1) != 0) return DSYNC_ENOMEM;
    size_t run = 0; /* bytes kept as they are, not yet appended */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        if (run && ut_buf_append(b, s + i - run, run) != 0) return DSYNC_ENOMEM;
        run = 0;
        const char *at = memchr(named, c, sizeof named - 1);
        char esc[6] = {'\\', at ? letter[at - named] : 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        if (ut_buf_append(b, esc, at ? 2 : 6) != 0) return DSYNC_ENOMEM;
    }
    if (run && ut_buf_append(b, s + len - run, run) != 0) return DSYNC_ENOMEM;
    return ut_buf_append(b, "\"", 1);
}
