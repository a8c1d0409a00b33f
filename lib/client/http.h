/*
 * http.h: the small HTTP/1.1 client under dsync_client (and the HTTP
 * benchmarks): endpoints given as HOST:PORT, one keep-alive connection with
 * a connect timeout, requests bounded by a deadline, answers with
 * Content-Length, chunked or read-to-close bodies. Nothing here knows JSON.
 */
#ifndef DSYNC_CLIENT_HTTP_H
#define DSYNC_CLIENT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "util/util.h"

#define HC_RBUF_CAP 16384 /* receive buffer: the status line and each header line must fit */

/* One server: its name as given and its resolved address. */
typedef struct {
    char host[256];
    char port[16];
    struct sockaddr_storage addr;
    socklen_t addrlen;
} hc_endpoint;

/* Parses "[http://]HOST:PORT" (len bytes of text; "[v6addr]:PORT" too) and
 * resolves it. 0, or DSYNC_EINVAL with a message in err. */
int hc_endpoint_parse(const char *text, size_t len, hc_endpoint *ep, char *err, size_t errlen);

/* One keep-alive connection to ep; opened by the first request, reopened
 * after a close or an error. Initialise with hc_conn_init. */
typedef struct {
    const hc_endpoint *ep;
    int fd;
    uint32_t connect_timeout_ms;
    char rbuf[HC_RBUF_CAP]; /* received, not yet consumed: rbuf[rpos, rlen) */
    size_t rpos, rlen;
    bool awaiting; /* a request went out and no byte of its answer came yet */
} hc_conn;

void hc_conn_init(hc_conn *c, const hc_endpoint *ep, uint32_t connect_timeout_ms);
/* Closes the connection if open; the next request opens a new one. */
void hc_conn_close(hc_conn *c);

/* One answer. body is NUL-terminated; its buffer is kept from one request
 * to the next (initialise with hc_response_init, free with hc_response_free). */
typedef struct {
    int status;
    int64_t retry_after_s; /* Retry-After in seconds; -1 when absent or not a number */
    ut_buf body;
    bool sent; /* the request (or part of it) reached the socket: its outcome may be unknown */
} hc_response;

void hc_response_init(hc_response *r);
void hc_response_free(hc_response *r);

/*
 * Sends one request (body of len bytes with Content-Type: application/json
 * when body is not NULL) and reads its answer, all before deadline_ms
 * (ut_now_ms() time). Answers over max_body bytes are refused. A request on
 * a kept-alive connection that the server had closed (closed or reset
 * before a byte of the answer) is sent once more on a new connection.
 * Returns 0 with r filled, or: DSYNC_EIO (cannot connect, connection
 * broken), DSYNC_ETIMEDOUT (deadline passed), DSYNC_EPROTO (not an HTTP/1.x
 * answer), DSYNC_ETOOBIG (answer over max_body), DSYNC_ENOMEM. After an
 * error the connection is closed and detail (detail_cap bytes, may be 0)
 * says what failed, e.g. "connect: Connection refused".
 */
int hc_request(hc_conn *c, const char *method, const char *path, const char *body, size_t len,
               uint64_t deadline_ms, size_t max_body, hc_response *r, char *detail,
               size_t detail_cap);

#endif
