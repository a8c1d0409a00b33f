/*
 * client_internal.h: what the dsync_client_* files share: the client
 * itself, the one call that sends a request with failover (client.c), and
 * strict readers for the JSON answers.
 */
#ifndef DSYNC_CLIENT_INTERNAL_H
#define DSYNC_CLIENT_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "client/http.h"
#include "dsync.h"

/* The largest answer read: 100 messages of DSYNC_MESSAGE_MAX each, escaped. */
#define CL_MAX_ANSWER (256u << 20)

struct dsync_client {
    dsync_client_options opt; /* defaults filled in */
    size_t n_nodes;
    hc_endpoint nodes[DSYNC_CLIENT_MAX_NODES];
    char names[DSYNC_CLIENT_MAX_NODES][sizeof(((hc_endpoint *)0)->host) + 20]; /* "host:port" */
    size_t current; /* index of the node in use */
    hc_conn conn;   /* to nodes[current] */
    hc_response resp;
    char errmsg[768];
};

/* The outcome of one call that reached a node (any status but 503). */
typedef struct {
    int status;
    json_t *answer; /* the parsed JSON object; NULL when the body is empty */
    bool retried;   /* an earlier attempt may have taken effect (broke off, or 503) */
} cl_reply;

/* A string argument that is present, not empty and at most max bytes. */
bool cl_valid_string(const char *s, size_t max);

/*
 * Sends method path with body (a JSON value, or NULL for none; the call
 * takes the reference, as jansson's *_new calls do) to the node
 * in use, moving on to the next address after a connection failure, a
 * timeout or a 503, and pausing between rounds (Retry-After, bounded), for
 * up to opt.retry_timeout_ms + wait_ms. 0 with *out filled (release it with
 * cl_reply_free); otherwise a DSYNC_E* code with errmsg set.
 */
int cl_call(dsync_client *c, const char *method, const char *path, json_t *body, uint64_t wait_ms,
            cl_reply *out);
void cl_reply_free(cl_reply *r);

/* The error code of an answer that is not a success, with errmsg set from
 * its {"error":{"code","message"}}: 400 DSYNC_EINVAL, 404 DSYNC_ENOTFOUND
 * (DSYNC_ENOTSUPP for an unknown path), 405 DSYNC_ENOTSUPP, 409 DSYNC_EEXIST,
 * 413 DSYNC_ETOOBIG, 503 DSYNC_EUNAVAILABLE, other 5xx DSYNC_EIO, anything
 * else DSYNC_EPROTO. */
int cl_status_error(dsync_client *c, const cl_reply *r);

/* Records a malformed answer ("what" says how) and returns DSYNC_EPROTO. */
int cl_bad_answer(dsync_client *c, const char *what);
/* Records a refused argument and returns DSYNC_EINVAL. */
int cl_bad_argument(dsync_client *c, const char *what);
/* Sets errmsg (printf-style). */
void cl_set_error(dsync_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Strict readers: the member exists and has the type, else false. */
bool cl_get_string(const json_t *obj, const char *name, const char **out);
bool cl_get_uint(const json_t *obj, const char *name, uint64_t *out);

#endif
