/*
 * http_client.c: the small HTTP/1.1 client and JSON lookup the HTTP
 * benchmarks share; see http_client.h. Every connect, read and write has a
 * timeout, so a request ends even against a stuck server.
 */
#include "http_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <unistd.h>

int parse_endpoints(const char *prog, char *list, endpoint *eps, int *n)
{
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (*n == HTTP_MAX_ENDPOINTS) {
            fprintf(stderr, "%s: more than %d endpoints\n", prog, HTTP_MAX_ENDPOINTS);
            return -1;
        }
        if (strncmp(tok, "http://", 7) == 0) tok += 7;
        endpoint *e = &eps[*n];
        char *colon = strrchr(tok, ':');
        if (!colon || colon == tok || !colon[1] || (size_t)(colon - tok) >= sizeof e->host ||
            strlen(colon + 1) >= sizeof e->port) {
            fprintf(stderr, "%s: bad endpoint '%s' (want HOST:PORT)\n", prog, tok);
            return -1;
        }
        memcpy(e->host, tok, (size_t)(colon - tok));
        e->host[colon - tok] = '\0';
        strcpy(e->port, colon + 1);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
        int rc = getaddrinfo(e->host, e->port, &hints, &ai);
        if (rc != 0) {
            fprintf(stderr, "%s: %s:%s: %s\n", prog, e->host, e->port, gai_strerror(rc));
            return -1;
        }
        memcpy(&e->addr, ai->ai_addr, ai->ai_addrlen);
        e->addrlen = ai->ai_addrlen;
        freeaddrinfo(ai);
        (*n)++;
    }
    if (*n == 0) {
        fprintf(stderr, "%s: no endpoint given\n", prog);
        return -1;
    }
    return 0;
}

void http_conn_close(http_conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->rpos = c->rlen = 0;
}

static int conn_open(http_conn *c)
{
    int fd = socket(c->ep->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    if (connect(fd, (const struct sockaddr *)&c->ep->addr, c->ep->addrlen) != 0) {
        if (errno != EINPROGRESS) goto fail;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, NET_CONNECT_TIMEOUT_MS) != 1) goto fail;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) goto fail;
    }
    /* Blocking from here on; the timeouts bound every read and write. */
    int flags = fcntl(fd, F_GETFL);
    int one = 1;
    struct timeval tv = {NET_IO_TIMEOUT_S, 0};
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0)
        goto fail;
    c->fd = fd;
    c->rpos = c->rlen = 0;
    return 0;
fail:
    close(fd);
    return -1;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Receives more bytes into rbuf: >0 on data, 0 at end of stream, -1 on error. */
static ssize_t conn_fill(http_conn *c)
{
    if (c->rpos == c->rlen) {
        c->rpos = c->rlen = 0;
    } else if (c->rpos > 0 && c->rlen == sizeof c->rbuf) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    if (c->rlen == sizeof c->rbuf) return -1; /* one header line or header block too large */
    for (;;) {
        ssize_t k = recv(c->fd, c->rbuf + c->rlen, sizeof c->rbuf - c->rlen, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k > 0) c->rlen += (size_t)k;
        return k;
    }
}

/* Consumes up to and including the next CRLF; returns a pointer to the line,
 * NUL-terminated in place, valid until the next read. NULL on error or EOF. */
static char *read_line(http_conn *c)
{
    for (;;) {
        char *start = c->rbuf + c->rpos;
        char *crlf = memmem(start, c->rlen - c->rpos, "\r\n", 2);
        if (crlf) {
            *crlf = '\0';
            c->rpos = (size_t)(crlf + 2 - c->rbuf);
            return start;
        }
        if (conn_fill(c) <= 0) return NULL;
    }
}

/* Consumes exactly n body bytes, keeping what fits of them in out. */
static int take(http_conn *c, size_t n, char *out, size_t cap, size_t *outlen)
{
    while (n > 0) {
        if (c->rpos == c->rlen && conn_fill(c) <= 0) return -1;
        size_t avail = c->rlen - c->rpos, m = avail < n ? avail : n;
        size_t keep = cap - 1 - *outlen < m ? cap - 1 - *outlen : m;
        memcpy(out + *outlen, c->rbuf + c->rpos, keep);
        *outlen += keep;
        c->rpos += m;
        n -= m;
    }
    return 0;
}

/*
 * Reads one response: status, then the body (Content-Length, chunked, or up
 * to the end of the stream) into out, NUL-terminated and cut at cap - 1.
 * *stale is set when the peer closed before sending a byte: a keep-alive
 * connection the server had already dropped, safe to retry on a new one.
 */
static int read_response(http_conn *c, int *status, char *out, size_t cap, bool *stale)
{
    *stale = false;
    if (c->rpos == c->rlen) {
        ssize_t k = conn_fill(c);
        if (k <= 0) {
            *stale = k == 0 || errno == ECONNRESET || errno == EPIPE;
            return -1;
        }
    }
    for (;;) {
        char *line = read_line(c);
        int major, minor;
        if (!line || sscanf(line, "HTTP/%d.%d %d", &major, &minor, status) != 3) return -1;
        bool close_after = major == 1 && minor == 0, chunked = false, has_length = false;
        size_t length = 0;
        while ((line = read_line(c)) && *line) {
            char *colon = strchr(line, ':');
            if (!colon) continue;
            *colon = '\0';
            const char *value = colon + 1;
            while (*value == ' ' || *value == '\t')
                value++;
            if (strcasecmp(line, "Content-Length") == 0) {
                char *end;
                errno = 0;
                unsigned long long v = strtoull(value, &end, 10);
                if (errno || end == value) return -1;
                length = (size_t)v;
                has_length = true;
            } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
                chunked = strcasestr(value, "chunked") != NULL;
            } else if (strcasecmp(line, "Connection") == 0) {
                if (strcasestr(value, "close")) close_after = true;
                if (strcasestr(value, "keep-alive")) close_after = false;
            }
        }
        if (!line) return -1;
        if (*status >= 100 && *status < 200) continue; /* interim answer: the real one follows */

        size_t outlen = 0;
        out[0] = '\0';
        if (chunked) {
            for (;;) {
                char *size_line = read_line(c), *end;
                if (!size_line) return -1;
                unsigned long size = strtoul(size_line, &end, 16);
                if (end == size_line) return -1;
                if (size == 0) break;
                if (take(c, size, out, cap, &outlen) != 0 || !(line = read_line(c)) || *line)
                    return -1;
            }
            while ((line = read_line(c)) && *line) { /* trailers */
            }
            if (!line) return -1;
        } else if (has_length) {
            if (take(c, length, out, cap, &outlen) != 0) return -1;
        } else if (*status != 204 && *status != 304) {
            /* No length: the body runs to the end of the stream. */
            for (;;) {
                if (c->rpos == c->rlen) {
                    ssize_t k = conn_fill(c);
                    if (k < 0) return -1;
                    if (k == 0) break;
                }
                if (take(c, c->rlen - c->rpos, out, cap, &outlen) != 0) return -1;
            }
            close_after = true;
        }
        out[outlen] = '\0';
        if (close_after) http_conn_close(c);
        return 0;
    }
}

/* See http_client.h. The one retry covers a kept-alive connection the server
 * dropped before the request (closed or reset before a byte of the answer):
 * the requests of http_lock_bench are idempotent (acquire and release by
 * client id, etcd lock by lease, unlock by key), and a server that never saw
 * an enqueue of queue_bench did not store it. */
int http_post(http_conn *c, const char *path, const char *body, int *status, char *out, size_t cap)
{
    char req[HTTP_BODY_CAP + 512];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     path, c->ep->host, c->ep->port, strlen(body), body);
    if (n < 0 || (size_t)n >= sizeof req) return -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = c->fd >= 0, stale = false;
        if (!reused && conn_open(c) != 0) return -1;
        if (send_all(c->fd, req, (size_t)n) == 0) {
            if (read_response(c, status, out, cap, &stale) == 0) return 0;
        } else {
            stale = true;
        }
        http_conn_close(c);
        if (!reused || !stale) return -1; /* only a dropped idle connection is retried */
    }
    return -1;
}

/* ---- tiny JSON helper ---------------------------------------------------- */

bool json_str(const char *body, const char *name, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", name);
    for (const char *p = strstr(body, pat); p; p = strstr(p + 1, pat)) {
        const char *q = p + strlen(pat);
        while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')
            q++;
        if (*q++ != ':') continue;
        while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')
            q++;
        if (*q++ != '"') continue;
        size_t n = 0;
        while (*q && *q != '"') {
            if (*q == '\\' && q[1]) {
                if (n + 1 >= cap) return false;
                out[n++] = *q++;
            }
            if (n + 1 >= cap) return false;
            out[n++] = *q++;
        }
        if (*q != '"') return false;
        out[n] = '\0';
        return true;
    }
    return false;
}
