/*
 * client.c: dsync_client's life cycle and its one way of sending a call:
 * the address list, the keep-alive connection, failover to the next node
 * on a connection failure or a 503, the pause between rounds, and the
 * mapping of error answers to DSYNC_E* codes. The calls themselves live in
 * client_locks.c, client_queue.c and client_cache.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/client_internal.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 1000
#define DEFAULT_IO_TIMEOUT_MS 10000
#define DEFAULT_RETRY_TIMEOUT_MS 10000
#define DEFAULT_RETRY_AFTER_MAX_MS 2000
/* Pause after a round in which no node could be reached, doubling up to
 * retry_after_max_ms: a restarting node gets time to come back. */
#define FIRST_BACKOFF_MS 50

void cl_set_error(dsync_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
}

int cl_bad_answer(dsync_client *c, const char *what)
{
    cl_set_error(c, "%s: malformed answer: %s", c->names[c->current], what);
    return DSYNC_EPROTO;
}

int cl_bad_argument(dsync_client *c, const char *what)
{
    cl_set_error(c, "invalid argument: %s", what);
    return DSYNC_EINVAL;
}

bool cl_get_string(const json_t *obj, const char *name, const char **out)
{
    json_t *v = json_object_get(obj, name);
    if (!json_is_string(v)) return false;
    *out = json_string_value(v);
    return true;
}

bool cl_get_uint(const json_t *obj, const char *name, uint64_t *out)
{
    json_t *v = json_object_get(obj, name);
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

int dsync_client_open(const char *addresses, const dsync_client_options *opts, dsync_client **out)
{
    *out = NULL;
    if (!addresses) return DSYNC_EINVAL;
    dsync_client *c = calloc(1, sizeof *c);
    if (!c) return DSYNC_ENOMEM;
    if (opts) c->opt = *opts;
    if (!c->opt.connect_timeout_ms) c->opt.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (!c->opt.io_timeout_ms) c->opt.io_timeout_ms = DEFAULT_IO_TIMEOUT_MS;
    if (!c->opt.retry_timeout_ms) c->opt.retry_timeout_ms = DEFAULT_RETRY_TIMEOUT_MS;
    if (!c->opt.retry_after_max_ms) c->opt.retry_after_max_ms = DEFAULT_RETRY_AFTER_MAX_MS;

    for (const char *p = addresses;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char err[256];
        if (c->n_nodes == DSYNC_CLIENT_MAX_NODES ||
            hc_endpoint_parse(p, len, &c->nodes[c->n_nodes], err, sizeof err) != 0) {
            free(c);
            return DSYNC_EINVAL;
        }
        hc_endpoint *ep = &c->nodes[c->n_nodes];
        bool v6 = strchr(ep->host, ':') != NULL;
        char name[sizeof c->names[0]];
        snprintf(name, sizeof name, "%s%s%s:%s", v6 ? "[" : "", ep->host, v6 ? "]" : "", ep->port);
        memcpy(c->names[c->n_nodes], name, sizeof name);
        c->n_nodes++;
        if (!comma) break;
        p = comma + 1;
    }
    hc_conn_init(&c->conn, &c->nodes[0], c->opt.connect_timeout_ms);
    hc_response_init(&c->resp);
    *out = c;
    return 0;
}

void dsync_client_close(dsync_client *c)
{
    if (!c) return;
    hc_conn_close(&c->conn);
    hc_response_free(&c->resp);
    free(c);
}

const char *dsync_client_errmsg(const dsync_client *c)
{
    return c->errmsg;
}

const char *dsync_client_node(const dsync_client *c)
{
    return c->names[c->current];
}

void cl_reply_free(cl_reply *r)
{
    json_decref(r->answer);
    r->answer = NULL;
}

static void next_node(dsync_client *c)
{
    hc_conn_close(&c->conn);
    c->current = (c->current + 1) % c->n_nodes;
    hc_conn_init(&c->conn, &c->nodes[c->current], c->opt.connect_timeout_ms);
}

static void pause_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

bool cl_valid_string(const char *s, size_t max)
{
    return s && *s && strnlen(s, max + 1) <= max;
}

/* The server's error message of a 503 answer, for errmsg. */
static const char *error_message(const json_t *answer)
{
    json_t *e = json_object_get(answer, "error");
    const char *msg;
    return json_is_object(e) && cl_get_string(e, "message", &msg) ? msg : "";
}

int cl_call(dsync_client *c, const char *method, const char *path, json_t *body, uint64_t wait_ms,
            cl_reply *out)
{
    memset(out, 0, sizeof *out);
    c->errmsg[0] = '\0';
    char *text = NULL;
    if (body) {
        text = json_dumps(body, JSON_COMPACT);
        json_decref(body); /* taken: sent as this text */
        if (!text) {
            cl_set_error(c, "out of memory");
            return DSYNC_ENOMEM;
        }
    }
    uint64_t start = ut_now_ms();
    uint64_t give_up = start + c->opt.retry_timeout_ms + wait_ms;
    uint64_t backoff = FIRST_BACKOFF_MS;
    int last_rc = DSYNC_EUNAVAILABLE, attempts = 0;
    char last[600] = "";
    bool maybe_done = false; /* an attempt may have taken effect */

    for (;;) {
        uint64_t pause = 0;
        bool saw_503 = false;
        for (size_t i = 0; i < c->n_nodes; i++) {
            if (attempts > 0 && ut_now_ms() >= give_up) goto give_up;
            char detail[256];
            uint64_t deadline = ut_now_ms() + c->opt.io_timeout_ms + wait_ms;
            int rc = hc_request(&c->conn, method, path, text, text ? strlen(text) : 0, deadline,
                                CL_MAX_ANSWER, &c->resp, detail, sizeof detail);
            attempts++;
            if (rc == 0 && c->resp.status != 503) {
                free(text);
                out->status = c->resp.status;
                out->retried = maybe_done;
                if (c->resp.body.len == 0) return 0;
                json_error_t jerr;
                out->answer =
                    json_loadb(c->resp.body.data, c->resp.body.len, JSON_REJECT_DUPLICATES, &jerr);
                if (!json_is_object(out->answer)) {
                    cl_reply_free(out);
                    char what[300];
                    snprintf(what, sizeof what,
                             "HTTP %d with a body that is not a JSON object (%s)", c->resp.status,
                             jerr.text);
                    return cl_bad_answer(c, what);
                }
                return 0;
            }
            if (rc == 0) {
                /* 503: no leader or no quorum there; the outcome is unknown. */
                json_t *a = c->resp.body.len
                                ? json_loadb(c->resp.body.data, c->resp.body.len, 0, NULL)
                                : NULL;
                snprintf(last, sizeof last, "%s: HTTP 503 unavailable: %s", c->names[c->current],
                         error_message(a));
                json_decref(a);
                uint64_t ra = c->resp.retry_after_s >= 0 ? (uint64_t)c->resp.retry_after_s * 1000
                                                         : FIRST_BACKOFF_MS;
                if (ra > c->opt.retry_after_max_ms) ra = c->opt.retry_after_max_ms;
                if (ra > pause) pause = ra;
                saw_503 = true;
                last_rc = DSYNC_EUNAVAILABLE;
                maybe_done = true;
            } else if (rc == DSYNC_EIO || rc == DSYNC_ETIMEDOUT) {
                snprintf(last, sizeof last, "%s: %s", c->names[c->current], detail);
                last_rc = rc;
                maybe_done |= c->resp.sent;
            } else {
                /* Not the node's availability: a bad answer, a request we
                 * cannot send, memory. Another node would do no better. */
                free(text);
                cl_set_error(c, "%s: %s", c->names[c->current], detail);
                return rc;
            }
            next_node(c);
        }
        /* Every address failed this round. */
        if (!saw_503) {
            pause = backoff;
            backoff =
                backoff * 2 > c->opt.retry_after_max_ms ? c->opt.retry_after_max_ms : backoff * 2;
        }
        uint64_t now = ut_now_ms();
        if (now + pause >= give_up) goto give_up;
        pause_ms(pause);
    }
give_up:
    free(text);
    cl_set_error(c, "gave up after %d attempt(s) in %llu ms over %zu node(s); last: %s", attempts,
                 (unsigned long long)(ut_now_ms() - start), c->n_nodes, last);
    return last_rc;
}

int cl_status_error(dsync_client *c, const cl_reply *r)
{
    json_t *e = json_object_get(r->answer, "error");
    const char *code = NULL, *msg = NULL;
    bool ours =
        json_is_object(e) && cl_get_string(e, "code", &code) && cl_get_string(e, "message", &msg);
    cl_set_error(c, "%s: HTTP %d %s: %s", c->names[c->current], r->status,
                 ours ? code : "(no error body)", ours ? msg : "");
    switch (r->status) {
    case 400:
        return DSYNC_EINVAL;
    case 404:
        /* An unknown path is a 404 too (code not_found, "no such endpoint:
         * /path"): an older server, not a missing thing. */
        if (!ours || strcmp(code, "not_found") != 0 || strncmp(msg, "no such endpoint", 16) == 0)
            return DSYNC_ENOTSUPP;
        return DSYNC_ENOTFOUND;
    case 405:
        return DSYNC_ENOTSUPP;
    case 409:
        return DSYNC_EEXIST;
    case 413:
        return DSYNC_ETOOBIG;
    case 503:
        return DSYNC_EUNAVAILABLE;
    default:
        return r->status >= 500 ? DSYNC_EIO : DSYNC_EPROTO;
    }
}
