/*
 * http.h: dsyncd's HTTP layer on civetweb.
 *
 * A route table maps path + method to a handler. The layer reads the body
 * under DSYNC_MAX_BODY_BYTES (judged from Content-Length before a byte is
 * read), parses JSON when the route wants it, and renders JSON answers and
 * {"error":{"code","message"}} bodies; it counts every request in
 * http_requests_total and http_request_duration_seconds.
 */
#ifndef DSYNCD_HTTP_H
#define DSYNCD_HTTP_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "dsync.h"
#include "slow_body.h"
#include "util/util.h"

struct mg_connection;

typedef struct srv srv;

/* What a handler sees of a request. */
typedef struct {
    struct mg_connection *conn;
    srv *server;
    const char *method;
    const char *query; /* may be NULL */
    json_t *body;      /* parsed object for routes with want_json, else NULL */
    int status;        /* set by the reply functions, for metrics */
    bool close_after;  /* the answer closes the connection: a body went unread */
} http_req;

typedef void (*http_handler)(http_req *r);

typedef struct {
    const char *path;
    const char *method; /* the one method allowed */
    bool want_json;     /* body must be a JSON object */
    http_handler fn;
} http_route;

#define HTTP_MAX_ROUTES 32
#define HTTP_N_CODES 12 /* the statuses handlers answer with (http.c: codes) */

struct srv {
    dsync_node *node;
    const dsync_config *cfg;
    struct mg_context *ctx;
    dsync_metric *requests;
    dsync_metric *duration;
    /* Series of each route and status, looked up on first use and kept: a
     * lookup formats a key and takes the registry's lock, too much for
     * every request. (Two threads may both look one up: same handle.) */
    _Atomic(dsync_series *) route_requests[HTTP_MAX_ROUTES][HTTP_N_CODES];
    _Atomic(dsync_series *) route_duration[HTTP_MAX_ROUTES];
    sb_watchdog slow; /* the deadline on reading bodies */
};

/* Starts civetweb on cfg->http_addr serving routes (n of them, static).
 * Returns 0, or DSYNC_EIO with a message in err. */
int http_start(srv *s, dsync_node *node, const dsync_config *cfg, const http_route *routes,
               size_t n, char *err, size_t errlen);
void http_stop(srv *s);

/* Replies. Each sends a complete response; call exactly one per request. */
void http_reply_json(http_req *r, int status, json_t *body); /* steals body */
void http_reply_text(http_req *r, int status, const char *content_type, const char *text,
                     size_t len);
void http_reply_error(http_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A flat JSON object answer written straight into one buffer, for the
 * busiest endpoints (jansson's pack and dump cost them several mallocs a
 * request); the bytes are those jansson would write. Names are plain
 * ASCII; string values valid UTF-8. begin, then the fields in order, then
 * http_reply_obj, which sends and frees it (500 if memory ran out). */
typedef struct {
    ut_buf b;
} http_obj;
void http_obj_begin(http_obj *o);
void http_obj_str(http_obj *o, const char *name, const char *value);
void http_obj_strn(http_obj *o, const char *name, const char *value, size_t len);
void http_obj_int(http_obj *o, const char *name, int64_t value);
void http_obj_bool(http_obj *o, const char *name, bool value);
void http_reply_obj(http_req *r, int status, http_obj *o);
/* Maps a libdsync error code to its HTTP status and error code. */
void http_reply_dsync_error(http_req *r, int rc, const char *what);

/* Field access for handlers: each replies 400 invalid_field and returns
 * false when the field is missing (if required) or of the wrong type. */
bool http_field_string(http_req *r, const char *name, bool required, size_t max_len,
                       const char **out);
bool http_field_uint(http_req *r, const char *name, bool required, uint64_t min, uint64_t max,
                     uint64_t *out);

#endif
