/*
 * handlers_cache.c: GET /cache/get?key=K and POST /cache/put.
 *
 * Keys are 1..255 bytes of UTF-8 without NUL; values are JSON strings,
 * kept as their UTF-8 bytes and handed back as the same string.
 */
#include <stdlib.h>
#include <string.h>

#include <civetweb.h>

#include "handlers.h"

/* 'I': the value was read but this node keeps no copy (the line could not
 * be kept, e.g. invalidated as the answer came). */
static const char *state_name(char s)
{
    return s == 'M' ? "M" : s == 'E' ? "E" : s == 'S' ? "S" : "I";
}

void handle_cache_get(http_req *r)
{
    char key[DSYNC_CACHE_KEY_MAX + 1];
    int got = r->query ? mg_get_var(r->query, strlen(r->query), "key", key, sizeof key) : -1;
    if (got <= 0 || strlen(key) != (size_t)got || !ut_utf8_valid(key, (size_t)got)) {
        http_reply_error(r, 400, "invalid_field",
                         "query \"key\" must be 1 to %d bytes of UTF-8 without NUL",
                         DSYNC_CACHE_KEY_MAX);
        return;
    }
    char *value = NULL, state = 0;
    size_t len = 0;
    int rc = dsync_cache_get(r->server->node, key, &value, &len, &state);
    if (rc == DSYNC_ENOTFOUND) {
        http_reply_error(r, 404, "not_found", "cache: no value for this key");
        return;
    }
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "cache get");
        return;
    }
    /* Only UTF-8 goes in through HTTP; an embedder may store bytes. */
    if (!ut_utf8_valid(value, len)) {
        free(value);
        http_reply_error(r, 500, "internal", "cache get: the stored value is not UTF-8 text");
        return;
    }
    http_obj o;
    http_obj_begin(&o);
    http_obj_str(&o, "key", key);
    http_obj_strn(&o, "value", value, len);
    http_obj_str(&o, "state", state_name(state));
    free(value);
    http_reply_obj(r, 200, &o);
}

void handle_cache_put(http_req *r)
{
    const char *key;
    uint64_t ttl = 0;
    if (!http_field_string(r, "key", true, DSYNC_CACHE_KEY_MAX, &key) ||
        !http_field_uint(r, "ttl_ms", false, 1, 1ULL << 40, &ttl))
        return;
    json_t *v = json_object_get(r->body, "value");
    if (!json_is_string(v)) {
        http_reply_error(r, 400, "invalid_field",
                         v ? "field \"value\" must be a string" : "field \"value\" is required");
        return;
    }
    int rc =
        dsync_cache_put(r->server->node, key, json_string_value(v), json_string_length(v), ttl);
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "cache put");
        return;
    }
    http_obj o;
    http_obj_begin(&o);
    http_obj_str(&o, "status", "stored");
    http_obj_str(&o, "key", key);
    http_obj_str(&o, "state", "M");
    http_reply_obj(r, 200, &o);
}
