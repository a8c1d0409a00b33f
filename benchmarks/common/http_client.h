/*
 * http_client.h: the small HTTP/1.1 client the HTTP benchmarks share
 * (http_lock_bench, queue_bench): endpoints given as HOST:PORT, one
 * keep-alive connection per worker with connect and I/O timeouts, POST of a
 * JSON body, responses with Content-Length, chunked or read-to-close bodies;
 * and a tiny JSON string lookup for the answers.
 */
#ifndef DSYNC_BENCH_HTTP_CLIENT_H
#define DSYNC_BENCH_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define HTTP_MAX_ENDPOINTS 16
#define NET_CONNECT_TIMEOUT_MS 2000 /* bound of every connect (also queue_bench's Redis) */
#define NET_IO_TIMEOUT_S 15         /* bound of every read and write (likewise) */
#define HTTP_BODY_CAP 4096          /* largest request body; a fitting response buffer */
#define HTTP_RBUF_CAP 16384         /* receive buffer: one header line must fit */

typedef struct {
    char host[256];
    char port[16];
    struct sockaddr_storage addr;
    socklen_t addrlen;
} endpoint;

/* One keep-alive connection; reconnects lazily after a close or an error.
 * Set ep and fd = -1 before the first call. */
typedef struct {
    const endpoint *ep;
    int fd;
    char rbuf[HTTP_RBUF_CAP]; /* received, not yet consumed: rbuf[rpos, rlen) */
    size_t rpos, rlen;
} http_conn;

/* Parses a comma-separated list of [http://]HOST:PORT into eps (at most
 * HTTP_MAX_ENDPOINTS), resolving each; 0, or -1 after a message on stderr
 * prefixed with prog. Cuts list in place. */
int parse_endpoints(const char *prog, char *list, endpoint *eps, int *n);

/* Closes the connection if open; the next request opens a new one. */
void http_conn_close(http_conn *c);

/* POST a JSON body (at most HTTP_BODY_CAP bytes); 0 with *status and the
 * response body in out (NUL-terminated, cut at cap - 1), -1 on a transport
 * failure (the connection is then closed and the next call reconnects). A
 * request on a kept-alive connection that the server had dropped is sent
 * once more on a new one. */
int http_post(http_conn *c, const char *path, const char *body, int *status, char *out, size_t cap);

/* Copies the string value of the first "name": "..." in body, escapes kept
 * as they are (the value only goes back into JSON). */
bool json_str(const char *body, const char *name, char *out, size_t cap);

#endif
