/*
 * http_client.h: what the HTTP benchmarks (http_lock_bench, queue_bench,
 * cache_bench) need from an HTTP client, on top of the library's own
 * (lib/client/http.h, the one under dsync_client): endpoint lists that
 * complain on stderr, a POST and a GET that copy the answer into the
 * caller's buffer, and a tiny JSON string lookup for the answers (the
 * benchmarks talk to etcd too).
 */
#ifndef DSYNC_BENCH_HTTP_CLIENT_H
#define DSYNC_BENCH_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "client/http.h"

#define HTTP_MAX_ENDPOINTS 16
#define NET_CONNECT_TIMEOUT_MS 2000 /* bound of every connect (also queue_bench's Redis) */
#define NET_IO_TIMEOUT_S 15         /* bound of every request (likewise) */
#define HTTP_BODY_CAP 4096          /* largest request body; a fitting response buffer */

typedef hc_endpoint endpoint;

/* One keep-alive connection with its answer buffer, reused request after
 * request; reconnects lazily after a close or an error. */
typedef struct {
    hc_conn conn;
    hc_response resp;
} http_conn;

/* Parses a comma-separated list of [http://]HOST:PORT into eps (at most
 * HTTP_MAX_ENDPOINTS), resolving each; 0, or -1 after a message on stderr
 * prefixed with prog. */
int parse_endpoints(const char *prog, const char *list, endpoint *eps, int *n);

/* Ready to talk to ep (NULL for a connection never used). */
void http_conn_init(http_conn *c, const endpoint *ep);
/* Closes the connection and frees its buffer; the next request reopens it. */
void http_conn_close(http_conn *c);

/* POST a JSON body; 0 with *status and the response body in out
 * (NUL-terminated, cut at cap - 1), -1 on a transport failure. A request on
 * a kept-alive connection that the server had dropped is sent once more. */
int http_post(http_conn *c, const char *path, const char *body, int *status, char *out, size_t cap);

/* GET path (with its query, already URL-safe); the same answer and errors
 * as http_post. */
int http_get(http_conn *c, const char *path, int *status, char *out, size_t cap);

/* Copies the string value of the first "name": "..." in body, escapes kept
 * as they are (the value only goes back into JSON). */
bool json_str(const char *body, const char *name, char *out, size_t cap);

#endif
