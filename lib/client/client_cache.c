/*
 * client_cache.c: dsync_client_cache_get and _put over GET /cache/get?key=K
 * and POST /cache/put {"key","value"} (DESIGN.md). A server without the
 * cache answers 404 "no such endpoint": that is DSYNC_ENOTSUPP, kept apart
 * from the DSYNC_ENOTFOUND of an absent key.
 */
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"

/* Longest key sent, in bytes: the request line must stay reasonable. */
#define CACHE_KEY_MAX 1024

/* Percent-encodes everything but RFC 3986's unreserved characters. */
static void url_encode(const char *s, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            *out++ = (char)ch;
        } else {
            *out++ = '%';
            *out++ = hex[ch >> 4];
            *out++ = hex[ch & 15];
        }
    }
    *out = '\0';
}

int dsync_client_cache_get(dsync_client *c, const char *key, char **value, size_t *len, char *state)
{
    *value = NULL;
    if (len) *len = 0;
    if (state) *state = 0;
    if (!cl_valid_string(key, CACHE_KEY_MAX))
        return cl_bad_argument(c, "key must be 1..1024 bytes");
    char path[sizeof "/cache/get?key=" + 3 * CACHE_KEY_MAX];
    memcpy(path, "/cache/get?key=", sizeof "/cache/get?key=");
    url_encode(key, path + strlen(path));
    cl_reply r;
    int rc = cl_call(c, "GET", path, NULL, 0, &r);
    if (rc != 0) return rc;
    if (r.status != 200) {
        rc = cl_status_error(c, &r);
        cl_reply_free(&r);
        return rc;
    }
    json_t *v = json_object_get(r.answer, "value");
    const char *st;
    if (!json_is_string(v) || !cl_get_string(r.answer, "state", &st) ||
        (strcmp(st, "M") != 0 && strcmp(st, "E") != 0 && strcmp(st, "S") != 0 &&
         strcmp(st, "I") != 0)) {
        rc = cl_bad_answer(c, "200 without a string \"value\" and a \"state\" of M, E, S or I");
    } else {
        size_t n = json_string_length(v);
        *value = malloc(n + 1);
        if (!*value) {
            cl_set_error(c, "out of memory");
            rc = DSYNC_ENOMEM;
        } else {
            memcpy(*value, json_string_value(v), n + 1);
            if (len) *len = n;
            if (state) *state = st[0];
        }
    }
    cl_reply_free(&r);
    return rc;
}

int dsync_client_cache_put(dsync_client *c, const char *key, const char *value, size_t len)
{
    if (!cl_valid_string(key, CACHE_KEY_MAX))
        return cl_bad_argument(c, "key must be 1..1024 bytes");
    if (!value) return cl_bad_argument(c, "value is NULL");
    json_t *v = json_stringn(value, len);
    json_t *body = v ? json_pack("{s:s,s:o}", "key", key, "value", v) : NULL;
    if (!body) return cl_bad_argument(c, "key and value must be UTF-8");
    cl_reply r;
    int rc = cl_call(c, "POST", "/cache/put", body, 0, &r);
    if (rc != 0) return rc;
    if (r.status != 200) {
        rc = cl_status_error(c, &r);
        /* Every 404 of a put means no such endpoint: a put creates keys. */
        if (rc == DSYNC_ENOTFOUND) rc = DSYNC_ENOTSUPP;
    }
    cl_reply_free(&r);
    return rc;
}
