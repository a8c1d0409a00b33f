/*
 * http.c: civetweb setup, routing, bounded body reading and replies.
 *
 * Hardening for civetweb 1.15 (see DESIGN.md, known hazards): no
 * document_root, no form handling, a deadline on the headers (civetweb's
 * request_timeout_ms) and the same again on the body (slow_body.c), no
 * chunked bodies, and the body size judged from Content-Length before
 * reading: a request that declares too much, or declares its length
 * twice, is refused with the connection closed, so no worker ever blocks
 * on a body we will not read.
 */
#include <civetweb.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http.h"
#include "util/util.h"

static const http_route *g_routes;
static size_t g_n_routes;

/* ---- replies ------------------------------------------------------------ */

/* Whether the connection stays open after this answer, as civetweb will
 * decide it: HTTP/1.1 unless the client said close, HTTP/1.0 only when it
 * asked for keep-alive. */
static bool keeps_alive(struct mg_connection *conn)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *c = mg_get_header(conn, "Connection");
    if (c) return strcasestr(c, "keep-alive") != NULL;
    return ri->http_version && strcmp(ri->http_version, "1.1") == 0;
}

/* The whole answer in one write: civetweb's header calls send each line
 * as its own TCP segment (8 per answer), which cost more CPU than the
 * request itself. */
static void send_response(http_req *r, int status, const char *content_type, const char *body,
                          size_t len, const char *extra_name, const char *extra_value,
                          bool close_conn)
{
    r->status = status;
    close_conn = close_conn || r->close_after;
    if (close_conn) mg_disable_keep_alive(r->conn);
    bool alive = !close_conn && keeps_alive(r->conn);
    /* The Date header changes once a second: each worker formats it then. */
    static _Thread_local char date[64];
    static _Thread_local time_t date_of;
    time_t now = time(NULL);
    if (now != date_of || !date[0]) {
        struct tm tm;
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&now, &tm));
        date_of = now;
    }
    ut_buf b;
    ut_buf_init(&b);
    /* Appended piece by piece: printf's machinery cost more than the rest
     * of the answer. */
    ut_buf_reserve(&b, 192 + len);
    ut_buf_puts(&b, "HTTP/1.1 ");
    ut_buf_put_dec(&b, status);
    ut_buf_puts(&b, " ");
    ut_buf_puts(&b, mg_get_response_code_text(r->conn, status));
    ut_buf_puts(&b, "\r\nContent-Type: ");
    ut_buf_puts(&b, content_type);
    ut_buf_puts(&b, "\r\nContent-Length: ");
    ut_buf_put_dec(&b, (int64_t)len);
    ut_buf_puts(&b, "\r\nCache-Control: no-store\r\nDate: ");
    ut_buf_puts(&b, date);
    ut_buf_puts(&b, alive ? "\r\nConnection: keep-alive\r\n" : "\r\nConnection: close\r\n");
    if (extra_name) {
        ut_buf_puts(&b, extra_name);
        ut_buf_puts(&b, ": ");
        ut_buf_puts(&b, extra_value);
        ut_buf_puts(&b, "\r\n");
    }
    ut_buf_append(&b, "\r\n", 2);
    /* An answer to HEAD has the headers of the GET answer and no body. */
    const char *method = mg_get_request_info(r->conn)->request_method;
    if (!method || strcmp(method, "HEAD") != 0) ut_buf_append(&b, body, len);
    if (b.oom) {
        mg_disable_keep_alive(r->conn);
        mg_write(r->conn,
                 "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                 "Connection: close\r\n\r\n",
                 76);
    } else {
        mg_write(r->conn, b.data, b.len);
    }
    ut_buf_free(&b);
}

void http_reply_text(http_req *r, int status, const char *content_type, const char *text,
                     size_t len)
{
    send_response(r, status, content_type, text, len, NULL, NULL, false);
}

/* The answer when memory ran out building another: fixed, no allocation
 * for its body. */
static void reply_oom(http_req *r, bool close_conn)
{
    static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
    send_response(r, 500, "application/json", oom, sizeof oom - 1, NULL, NULL, close_conn);
}

void http_reply_json(http_req *r, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        reply_oom(r, false);
        return;
    }
    send_response(r, status, "application/json", text, strlen(text), NULL, NULL, false);
    free(text);
}

void http_obj_begin(http_obj *o)
{
    ut_buf_init(&o->b);
    ut_buf_append(&o->b, "{", 1);
}

/* The separator and "name": (names are plain ASCII, never escaped). */
static void obj_name(http_obj *o, const char *name)
{
    if (o->b.len > 1) ut_buf_append(&o->b, ",", 1);
    ut_buf_append(&o->b, "\"", 1);
    ut_buf_puts(&o->b, name);
    ut_buf_append(&o->b, "\":", 2);
}

void http_obj_str(http_obj *o, const char *name, const char *value)
{
    http_obj_strn(o, name, value, strlen(value));
}

void http_obj_strn(http_obj *o, const char *name, const char *value, size_t len)
{
    obj_name(o, name);
    ut_buf_json_str(&o->b, value, len);
}

void http_obj_int(http_obj *o, const char *name, int64_t value)
{
    obj_name(o, name);
    ut_buf_put_dec(&o->b, value);
}

void http_obj_bool(http_obj *o, const char *name, bool value)
{
    obj_name(o, name);
    ut_buf_puts(&o->b, value ? "true" : "false");
}

void http_reply_obj(http_req *r, int status, http_obj *o)
{
    ut_buf_append(&o->b, "}", 1);
    if (o->b.oom) {
        reply_oom(r, false);
    } else {
        send_response(r, status, "application/json", o->b.data, o->b.len, NULL, NULL, false);
    }
    ut_buf_free(&o->b);
}

static void reply_error_ex(http_req *r, int status, const char *code, const char *extra_name,
                           const char *extra_value, bool close_conn, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    json_t *body = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        reply_oom(r, true);
        return;
    }
    send_response(r, status, "application/json", text, strlen(text), extra_name, extra_value,
                  close_conn);
    free(text);
}

void http_reply_error(http_req *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_ex(r, status, code, NULL, NULL, false, fmt, ap);
    va_end(ap);
}

static void reply_error_closing(http_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_error_closing(http_req *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_ex(r, status, code, NULL, NULL, true, fmt, ap);
    va_end(ap);
}

static void reply_error_header(http_req *r, int status, const char *code, const char *hname,
                               const char *hvalue, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void reply_error_header(http_req *r, int status, const char *code, const char *hname,
                               const char *hvalue, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_ex(r, status, code, hname, hvalue, false, fmt, ap);
    va_end(ap);
}

void http_reply_dsync_error(http_req *r, int rc, const char *what)
{
    switch (rc) {
    case DSYNC_EINVAL:
        http_reply_error(r, 400, "invalid_field", "%s: invalid argument", what);
        return;
    case DSYNC_ENOTFOUND:
        http_reply_error(r, 404, "not_found", "%s: not found", what);
        return;
    case DSYNC_EEXIST:
        http_reply_error(r, 409, "conflict", "%s: conflicts with an existing request", what);
        return;
    case DSYNC_ETOOBIG:
        http_reply_error(r, 413, "payload_too_large", "%s: too large", what);
        return;
    case DSYNC_EUNAVAILABLE:
    case DSYNC_ENOTLEADER:
    case DSYNC_ETIMEDOUT:
    case DSYNC_ECLOSED:
        reply_error_header(r, 503, "unavailable", "Retry-After", "1", "%s: %s", what,
                           dsync_strerror(rc));
        return;
    default:
        http_reply_error(r, 500, "internal", "%s: %s", what, dsync_strerror(rc));
        return;
    }
}

/* ---- field access ------------------------------------------------------- */

bool http_field_string(http_req *r, const char *name, bool required, size_t max_len,
                       const char **out)
{
    json_t *v = json_object_get(r->body, name);
    *out = NULL;
    if (!v) {
        if (required) http_reply_error(r, 400, "invalid_field", "field \"%s\" is required", name);
        return !required;
    }
    if (!json_is_string(v)) {
        http_reply_error(r, 400, "invalid_field", "field \"%s\" must be a string", name);
        return false;
    }
    size_t len = json_string_length(v);
    if (len == 0 || len > max_len) {
        http_reply_error(r, 400, "invalid_field", "field \"%s\" must be 1 to %zu bytes", name,
                         max_len);
        return false;
    }
    if (strlen(json_string_value(v)) != len) {
        http_reply_error(r, 400, "invalid_field", "field \"%s\" must not contain NUL", name);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

bool http_field_uint(http_req *r, const char *name, bool required, uint64_t min, uint64_t max,
                     uint64_t *out)
{
    json_t *v = json_object_get(r->body, name);
    if (!v) {
        if (required) http_reply_error(r, 400, "invalid_field", "field \"%s\" is required", name);
        return !required;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min ||
        (uint64_t)json_integer_value(v) > max) {
        http_reply_error(r, 400, "invalid_field",
                         "field \"%s\" must be an integer from %llu to %llu", name,
                         (unsigned long long)min, (unsigned long long)max);
        return false;
    }
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* ---- body --------------------------------------------------------------- */

/* Reads the body into a malloc'ed buffer. Replies and returns NULL when the
 * request is refused. *len excludes the NUL added at the end. */
static char *read_body(http_req *r, size_t *len)
{
    const struct mg_request_info *ri = mg_get_request_info(r->conn);
    uint64_t max = r->server->cfg->max_body_bytes;
    int n_length = 0;
    bool chunked = false;
    for (int i = 0; i < ri->num_headers; i++) {
        if (strcasecmp(ri->http_headers[i].name, "Content-Length") == 0)
            n_length++;
        else if (strcasecmp(ri->http_headers[i].name, "Transfer-Encoding") == 0)
            chunked = true;
    }
    /* Two lengths, or a length and chunking, are how requests get smuggled
     * past proxies (RFC 9112 §6.3): refuse and drop the connection. */
    if (n_length > 1 || (n_length == 1 && chunked)) {
        reply_error_closing(r, 400, "invalid_request",
                            "conflicting Content-Length / Transfer-Encoding headers");
        return NULL;
    }
    /* A chunked body could not be held to its deadline: civetweb's chunked
     * reader reads on through an interrupted read until it has what it was
     * asked for, and reading it a byte at a time costs a second of CPU a
     * megabyte. RFC 9110 lets a server require the length (411). */
    if (chunked) {
        reply_error_closing(r, 411, "length_required",
                            "a request body needs a Content-Length (chunked bodies are not "
                            "accepted)");
        return NULL;
    }
    if (ri->content_length > 0 && (uint64_t)ri->content_length > max) {
        reply_error_closing(r, 413, "payload_too_large",
                            "request body of %lld bytes is over the limit of %llu",
                            ri->content_length, (unsigned long long)max);
        return NULL;
    }
    /* With chunking refused, the body is what Content-Length says, and
     * none without one (civetweb reads nothing then, RFC 9112 §6.3). */
    size_t want = ri->content_length > 0 ? (size_t)ri->content_length : 0;
    char *buf = malloc(want + 1);
    if (!buf) {
        reply_error_closing(r, 500, "internal", "out of memory");
        return NULL;
    }
    /* The body gets the request timeout again from here: civetweb's own
     * bounds only the headers and each pause, so read_body keeps a
     * deadline, and slow_body.c's watchdog wakes an mg_read past it. */
    uint64_t timeout = r->server->cfg->http_request_timeout_ms;
    uint64_t deadline = ut_now_ms() + timeout;
    sb_slot *watch = want ? sb_begin(&r->server->slow, deadline) : NULL;
    size_t got = 0;
    bool late = false;
    while (got < want) {
        /* Interrupted by the watchdog, mg_read returns what it has. */
        int n = mg_read(r->conn, buf + got, want - got);
        if (n > 0) got += (size_t)n;
        if (got < want && ut_now_ms() >= deadline) {
            late = true;
            break;
        }
        if (n <= 0) break;
    }
    sb_end(watch);
    if (late) {
        free(buf);
        reply_error_closing(r, 408, "request_timeout", "request body not received within %llu ms",
                            (unsigned long long)timeout);
        return NULL;
    }
    if (got < want) {
        free(buf);
        reply_error_closing(r, 400, "invalid_request", "request body ended early");
        return NULL;
    }
    buf[got] = '\0';
    *len = got;
    return buf;
}

static bool parse_json_body(http_req *r)
{
    size_t len;
    char *text = read_body(r, &len);
    if (!text) return false;
    json_error_t jerr;
    /* Reject duplicate keys: {"mode":"S","mode":"X"} has no one meaning. */
    r->body = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!r->body) {
        /* jansson names its own flag for a \u0000; say what it means. */
        const char *why = strstr(jerr.text, "JSON_ALLOW_NUL")
                              ? "a string must not contain NUL (\\u0000)"
                              : jerr.text;
        http_reply_error(r, 400, "invalid_json", "malformed JSON at line %d column %d: %s",
                         jerr.line, jerr.column, why);
        return false;
    }
    if (!json_is_object(r->body)) {
        http_reply_error(r, 400, "invalid_json", "the request body must be a JSON object");
        return false;
    }
    return true;
}

/* ---- dispatch ----------------------------------------------------------- */

static const char *method_label(const char *m)
{
    static const char *const known[] = {"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(m, known[i]) == 0) return known[i];
    return "other";
}

static int allow_all(struct mg_connection *conn, void *cbdata)
{
    (void)conn;
    (void)cbdata;
    return 1;
}

static const int codes[HTTP_N_CODES] = {200, 202, 400, 404, 405, 408, 409, 411, 413, 500, 503, 504};
static const char *const codes_text[HTTP_N_CODES] = {"200", "202", "400", "404", "405", "408",
                                                     "409", "411", "413", "500", "503", "504"};

static int code_index(int status)
{
    for (int i = 0; i < HTTP_N_CODES; i++)
        if (codes[i] == status) return i;
    return -1;
}

static int dispatch(struct mg_connection *conn, void *cbdata)
{
    srv *s = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    uint64_t start = ut_now_ns();
    http_req r = {
        .conn = conn, .server = s, .method = ri->request_method, .query = ri->query_string};
    const char *path = ri->local_uri ? ri->local_uri : "";

    const http_route *match = NULL;
    bool path_known = false;
    char allow[64] = "";
    for (size_t i = 0; i < g_n_routes; i++) {
        if (strcmp(g_routes[i].path, path) != 0) continue;
        path_known = true;
        if (strcmp(g_routes[i].method, ri->request_method) == 0) {
            match = &g_routes[i];
            break;
        }
        if (allow[0]) strncat(allow, ", ", sizeof allow - strlen(allow) - 1);
        strncat(allow, g_routes[i].method, sizeof allow - strlen(allow) - 1);
    }

    const char *path_label = path_known ? path : "other";
    /* A body no handler reads would be read and thrown away by civetweb
     * after the answer, to keep the connection: with no deadline and no
     * limit. Close the connection instead. */
    if ((ri->content_length > 0 || mg_get_header(conn, "Transfer-Encoding")) &&
        !(match && match->want_json))
        r.close_after = true;
    if (!match) {
        if (path_known)
            reply_error_header(&r, 405, "method_not_allowed", "Allow", allow,
                               "%s is not allowed on %s (allowed: %s)", ri->request_method, path,
                               allow);
        else
            http_reply_error(&r, 404, "not_found", "no such endpoint: %s", path);
    } else if (!match->want_json || parse_json_body(&r)) {
        match->fn(&r);
    }
    json_decref(r.body);

    double seconds = (double)(ut_now_ns() - start) / 1e9;
    int ci = code_index(r.status);
    if (match && ci >= 0) {
        size_t i = (size_t)(match - g_routes);
        dsync_series *req = atomic_load_explicit(&s->route_requests[i][ci], memory_order_acquire);
        if (!req) {
            const char *labels[3] = {match->method, match->path, codes_text[ci]};
            req = dsync_metric_series(s->requests, labels, 3);
            atomic_store_explicit(&s->route_requests[i][ci], req, memory_order_release);
        }
        dsync_series *dur = atomic_load_explicit(&s->route_duration[i], memory_order_acquire);
        if (!dur) {
            dur = dsync_metric_series1(s->duration, match->path);
            atomic_store_explicit(&s->route_duration[i], dur, memory_order_release);
        }
        dsync_series_add(req, 1);
        dsync_series_observe(dur, seconds);
    } else {
        char code[8];
        snprintf(code, sizeof code, "%d", r.status);
        const char *labels[3] = {method_label(ri->request_method), path_label, code};
        dsync_series_add(dsync_metric_series(s->requests, labels, 3), 1);
        dsync_series_observe(dsync_metric_series1(s->duration, path_label), seconds);
    }
    /* Non-zero: the request is handled; civetweb does nothing more. */
    return r.status ? r.status : 1;
}

static int log_message(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    fprintf(stderr, "dsyncd: civetweb: %s\n", message);
    return 1;
}

int http_start(srv *s, dsync_node *node, const dsync_config *cfg, const http_route *routes,
               size_t n, char *err, size_t errlen)
{
    g_routes = routes;
    g_n_routes = n;
    s->node = node;
    s->cfg = cfg;
    dsync_metrics *m = dsync_node_metrics_registry(node);
    s->requests =
        dsync_metrics_counter(m, "http_requests_total",
                              "HTTP requests by method, path and status code.", "method,path,code");
    s->duration = dsync_metrics_histogram(
        m, "http_request_duration_seconds", "HTTP request latency by path.", "path",
        dsync_metrics_latency_bounds, dsync_metrics_latency_n_bounds);
    if (!s->requests || !s->duration || n > HTTP_MAX_ROUTES) {
        snprintf(err, errlen, "cannot register HTTP metrics");
        return DSYNC_ENOMEM;
    }
    for (size_t i = 0; i < HTTP_MAX_ROUTES; i++) {
        atomic_init(&s->route_duration[i], NULL);
        for (int c = 0; c < HTTP_N_CODES; c++)
            atomic_init(&s->route_requests[i][c], NULL);
    }

    char threads[16], timeout[24];
    snprintf(threads, sizeof threads, "%u", cfg->http_threads);
    snprintf(timeout, sizeof timeout, "%llu", (unsigned long long)cfg->http_request_timeout_ms);
    /* No document_root: dsyncd serves no files (CVE-2025-55763). */
    const char *options[] = {
        "listening_ports",
        cfg->http_addr,
        "num_threads",
        threads,
        "request_timeout_ms",
        timeout,
        "enable_keep_alive",
        "yes",
        "keep_alive_timeout_ms",
        "30000",
        "tcp_nodelay",
        "1",
        NULL,
    };
    if (sb_start(&s->slow, cfg->http_request_timeout_ms) != 0) {
        snprintf(err, errlen, "cannot start the HTTP body watchdog");
        return DSYNC_ENOMEM;
    }
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = log_message;
    mg_init_library(0);
    unsigned ecode = 0;
    char etext[256] = "";
    struct mg_error_data ed = {.code = &ecode, .text = etext, .text_buffer_size = sizeof etext};
    struct mg_init_data init = {.callbacks = &cb, .user_data = s, .configuration_options = options};
    s->ctx = mg_start2(&init, &ed);
    if (!s->ctx) {
        snprintf(err, errlen, "cannot serve HTTP on %s: %s", cfg->http_addr,
                 etext[0] ? etext : "unknown error");
        mg_exit_library();
        sb_stop(&s->slow);
        return DSYNC_EIO;
    }
    /* Without an auth handler civetweb looks for a password file on every
     * request: stat("/.htpasswd") at the file system's root, since there
     * is no document root. dsyncd does no HTTP authentication (it listens
     * where the operator puts it); this handler says so, and spares the
     * syscall and the surprise of a stray file enabling auth. */
    mg_set_auth_handler(s->ctx, "/", allow_all, NULL);
    mg_set_request_handler(s->ctx, "/", dispatch, s);
    return 0;
}

void http_stop(srv *s)
{
    if (s->ctx) {
        mg_stop(s->ctx);
        s->ctx = NULL;
        mg_exit_library();
    }
    sb_stop(&s->slow); /* the workers are gone */
}
