/*
 * http.c: the HTTP/1.1 client under dsync_client; see http.h.
 *
 * The socket stays non-blocking and every wait goes through poll() with
 * what is left of the request's deadline, so one request ends in time even
 * against a server that accepts and then says nothing. Answers are parsed
 * strictly: a malformed status line, header, length or chunk is an error,
 * never a guess.
 */
#include "client/http.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "dsync/errors.h"

#define PATH_MAX_BYTES 8192

static void set_detail(char *detail, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_detail(char *detail, size_t cap, const char *fmt, ...)
{
    if (!detail || cap == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, cap, fmt, ap);
    va_end(ap);
}

static void errno_detail(char *detail, size_t cap, const char *what, int err)
{
    char buf[128];
    set_detail(detail, cap, "%s: %s", what, strerror_r(err, buf, sizeof buf));
}

int hc_endpoint_parse(const char *text, size_t len, hc_endpoint *ep, char *err, size_t errlen)
{
    memset(ep, 0, sizeof *ep);
    while (len > 0 && (*text == ' ' || *text == '\t')) {
        text++;
        len--;
    }
    while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t'))
        len--;
    if (len >= 7 && strncmp(text, "http://", 7) == 0) {
        text += 7;
        len -= 7;
    }
    if (len > 0 && text[len - 1] == '/') len--;
    const char *colon = NULL;
    for (size_t i = len; i-- > 0;)
        if (text[i] == ':') {
            colon = text + i;
            break;
        }
    const char *host = text, *port = colon ? colon + 1 : NULL;
    size_t host_len = colon ? (size_t)(colon - text) : 0, port_len = colon ? len - host_len - 1 : 0;
    if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
        host++;
        host_len -= 2;
    }
    bool port_ok = port_len > 0 && port_len < sizeof ep->port;
    for (size_t i = 0; port_ok && i < port_len; i++)
        port_ok = port[i] >= '0' && port[i] <= '9';
    if (!colon || host_len == 0 || host_len >= sizeof ep->host || !port_ok ||
        memchr(host, ',', host_len)) {
        set_detail(err, errlen, "bad address '%.*s' (want HOST:PORT)", (int)len, text);
        return DSYNC_EINVAL;
    }
    memcpy(ep->host, host, host_len);
    memcpy(ep->port, port, port_len);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(ep->host, ep->port, &hints, &ai);
    if (rc != 0 || !ai || ai->ai_addrlen > sizeof ep->addr) {
        set_detail(err, errlen, "%s:%s: %s", ep->host, ep->port,
                   rc ? gai_strerror(rc) : "no address");
        if (ai) freeaddrinfo(ai);
        return DSYNC_EINVAL;
    }
    memcpy(&ep->addr, ai->ai_addr, ai->ai_addrlen);
    ep->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

void hc_conn_init(hc_conn *c, const hc_endpoint *ep, uint32_t connect_timeout_ms)
{
    c->ep = ep;
    c->fd = -1;
    c->connect_timeout_ms = connect_timeout_ms;
    c->rpos = c->rlen = 0;
    c->awaiting = false;
}

void hc_conn_close(hc_conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->rpos = c->rlen = 0;
    c->awaiting = false;
}

void hc_response_init(hc_response *r)
{
    memset(r, 0, sizeof *r);
    ut_buf_init(&r->body);
    r->retry_after_s = -1;
}

void hc_response_free(hc_response *r)
{
    ut_buf_free(&r->body);
}

/* Waits until fd is ready for events or the deadline passes: 0, or
 * DSYNC_ETIMEDOUT / DSYNC_EIO. */
static int wait_fd(int fd, short events, uint64_t deadline_ms)
{
    for (;;) {
        uint64_t now = ut_now_ms();
        if (now >= deadline_ms) return DSYNC_ETIMEDOUT;
        uint64_t left = deadline_ms - now;
        struct pollfd p = {.fd = fd, .events = events};
        int k = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (k > 0) return 0;
        if (k < 0 && errno != EINTR) return DSYNC_EIO;
    }
}

static int conn_open(hc_conn *c, uint64_t deadline_ms, char *detail, size_t dcap)
{
    int fd = socket(c->ep->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        errno_detail(detail, dcap, "socket", errno);
        return DSYNC_EIO;
    }
    uint64_t connect_deadline = ut_now_ms() + c->connect_timeout_ms;
    if (connect_deadline > deadline_ms) connect_deadline = deadline_ms;
    if (connect(fd, (const struct sockaddr *)&c->ep->addr, c->ep->addrlen) != 0) {
        if (errno != EINPROGRESS) {
            errno_detail(detail, dcap, "connect", errno);
            close(fd);
            return DSYNC_EIO;
        }
        int rc = wait_fd(fd, POLLOUT, connect_deadline);
        int err = 0;
        socklen_t len = sizeof err;
        if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (rc != 0 || err != 0) {
            if (rc == DSYNC_ETIMEDOUT)
                set_detail(detail, dcap, "connect: no answer within %llu ms",
                           (unsigned long long)c->connect_timeout_ms);
            else
                errno_detail(detail, dcap, "connect", err ? err : errno);
            close(fd);
            /* A connect that timed out is a dead node, as good as refused. */
            return DSYNC_EIO;
        }
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->rpos = c->rlen = 0;
    c->awaiting = false;
    return 0;
}

/* Sends head and then body (n2 bytes, may be 0) in one system call when
 * the socket takes them all, as it does for any request of ordinary size. */
static int send_all(hc_conn *c, const char *head, size_t n1, const char *body, size_t n2,
                    uint64_t deadline_ms)
{
    struct iovec iov[2] = {{(void *)head, n1}, {(void *)body, n2}};
    struct iovec *v = iov;
    int nv = n2 ? 2 : 1;
    while (nv > 0) {
        struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)nv};
        ssize_t k = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (k >= 0) {
            size_t done = (size_t)k;
            while (nv > 0 && done >= v->iov_len) {
                done -= v->iov_len;
                v++;
                nv--;
            }
            if (nv > 0) {
                v->iov_base = (char *)v->iov_base + done;
                v->iov_len -= done;
            }
            continue;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(c->fd, POLLOUT, deadline_ms);
            if (rc != 0) return rc;
            continue;
        }
        return DSYNC_EIO;
    }
    c->awaiting = true;
    return 0;
}

/* Receives more bytes into rbuf: >0 on data, 0 at the end of the stream, or
 * a negative DSYNC_E* code (DSYNC_EPROTO when a line does not fit). */
static ssize_t conn_fill(hc_conn *c, uint64_t deadline_ms)
{
    if (c->rpos == c->rlen) {
        c->rpos = c->rlen = 0;
    } else if (c->rpos > 0 && c->rlen == sizeof c->rbuf) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    if (c->rlen == sizeof c->rbuf) return DSYNC_EPROTO;
    /* Just after a request the answer is not there yet: wait first, which
     * spares a recv that would only say EAGAIN. */
    if (c->awaiting) {
        int rc = wait_fd(c->fd, POLLIN, deadline_ms);
        if (rc != 0) return rc;
        c->awaiting = false;
    }
    for (;;) {
        ssize_t k = recv(c->fd, c->rbuf + c->rlen, sizeof c->rbuf - c->rlen, 0);
        if (k > 0) {
            c->rlen += (size_t)k;
            return k;
        }
        if (k == 0) return 0;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(c->fd, POLLIN, deadline_ms);
            if (rc != 0) return rc;
            continue;
        }
        return DSYNC_EIO;
    }
}

/* The next line without its CRLF, NUL-terminated in place and valid until
 * the next read; NULL with *rc set on an error or the end of the stream. */
static char *read_line(hc_conn *c, uint64_t deadline_ms, int *rc)
{
    for (;;) {
        char *start = c->rbuf + c->rpos;
        char *crlf = memmem(start, c->rlen - c->rpos, "\r\n", 2);
        if (crlf) {
            *crlf = '\0';
            c->rpos = (size_t)(crlf + 2 - c->rbuf);
            return start;
        }
        ssize_t k = conn_fill(c, deadline_ms);
        if (k <= 0) {
            *rc = k == 0 ? DSYNC_EIO : (int)k;
            return NULL;
        }
    }
}

/* Consumes exactly n body bytes into the answer's body. */
static int take(hc_conn *c, size_t n, hc_response *r, size_t max_body, uint64_t deadline_ms)
{
    if (n > max_body || r->body.len > max_body - n) return DSYNC_ETOOBIG;
    if (ut_buf_reserve(&r->body, n + 1) != 0) return DSYNC_ENOMEM;
    while (n > 0) {
        if (c->rpos == c->rlen) {
            ssize_t k = conn_fill(c, deadline_ms);
            if (k <= 0) return k == 0 ? DSYNC_EIO : (int)k;
        }
        size_t avail = c->rlen - c->rpos, m = avail < n ? avail : n;
        ut_buf_append(&r->body, c->rbuf + c->rpos, m);
        c->rpos += m;
        n -= m;
    }
    return 0;
}

/* A decimal number of at most 18 digits and nothing else (RFC 9110 §8.6). */
static bool parse_decimal(const char *s, uint64_t *out)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0 || n > 18) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

/* A chunk-size line: hex digits, optionally followed by ";extensions". */
static bool parse_chunk_size(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    for (; s[i] && s[i] != ';' && s[i] != ' ' && s[i] != '\t'; i++) {
        int d;
        if (s[i] >= '0' && s[i] <= '9')
            d = s[i] - '0';
        else if (s[i] >= 'a' && s[i] <= 'f')
            d = s[i] - 'a' + 10;
        else if (s[i] >= 'A' && s[i] <= 'F')
            d = s[i] - 'A' + 10;
        else
            return false;
        if (i >= 15) return false;
        v = v * 16 + (uint64_t)d;
    }
    if (i == 0) return false;
    *out = v;
    return true;
}

/*
 * Reads one answer. *stale is set when the stream ended or was reset before
 * the first byte: on a reused connection, the server had closed it.
 */
static int read_response(hc_conn *c, const char *method, hc_response *r, size_t max_body,
                         uint64_t deadline_ms, bool *stale, char *detail, size_t dcap)
{
    *stale = false;
    if (c->rpos == c->rlen) {
        ssize_t k = conn_fill(c, deadline_ms);
        if (k == 0 || (k == DSYNC_EIO && (errno == ECONNRESET || errno == EPIPE))) {
            *stale = true;
            set_detail(detail, dcap, "connection closed before an answer");
            return DSYNC_EIO;
        }
        if (k < 0) {
            if (k == DSYNC_ETIMEDOUT)
                set_detail(detail, dcap, "no answer in time");
            else
                errno_detail(detail, dcap, "recv", errno);
            return (int)k;
        }
    }
    int rc = 0;
    for (;;) {
        char *line = read_line(c, deadline_ms, &rc);
        int major, minor, status, used = 0;
        if (!line) goto fail;
        if (sscanf(line, "HTTP/%1d.%1d %3d%n", &major, &minor, &status, &used) != 3 || major != 1 ||
            status < 100 || status > 999 || (line[used] && line[used] != ' ')) {
            set_detail(detail, dcap, "not an HTTP/1.x status line");
            return DSYNC_EPROTO;
        }
        bool close_after = minor == 0, chunked = false, has_length = false;
        uint64_t length = 0;
        r->status = status;
        r->retry_after_s = -1;
        while ((line = read_line(c, deadline_ms, &rc)) && *line) {
            char *colon = strchr(line, ':');
            if (!colon || colon == line) {
                set_detail(detail, dcap, "malformed header line");
                return DSYNC_EPROTO;
            }
            *colon = '\0';
            const char *value = colon + 1;
            while (*value == ' ' || *value == '\t')
                value++;
            if (strcasecmp(line, "Content-Length") == 0) {
                uint64_t v;
                if (!parse_decimal(value, &v) || (has_length && v != length)) {
                    set_detail(detail, dcap, "bad Content-Length");
                    return DSYNC_EPROTO;
                }
                length = v;
                has_length = true;
            } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
                if (strcasestr(value, "chunked")) chunked = true;
            } else if (strcasecmp(line, "Connection") == 0) {
                if (strcasestr(value, "close")) close_after = true;
                if (strcasestr(value, "keep-alive")) close_after = false;
            } else if (strcasecmp(line, "Retry-After") == 0) {
                uint64_t v;
                if (parse_decimal(value, &v)) r->retry_after_s = (int64_t)v;
            }
        }
        if (!line) goto fail;
        if (status < 200) continue; /* an interim answer: the real one follows */

        r->body.len = 0;
        if (strcmp(method, "HEAD") == 0 || status == 204 || status == 304) {
            /* no body */
        } else if (chunked) {
            for (;;) {
                uint64_t size;
                if (!(line = read_line(c, deadline_ms, &rc))) goto fail;
                if (!parse_chunk_size(line, &size)) {
                    set_detail(detail, dcap, "bad chunk size");
                    return DSYNC_EPROTO;
                }
                if (size == 0) break;
                if ((rc = take(c, (size_t)size, r, max_body, deadline_ms)) != 0) goto fail;
                if (!(line = read_line(c, deadline_ms, &rc))) goto fail;
                if (*line) {
                    set_detail(detail, dcap, "chunk longer than its size");
                    return DSYNC_EPROTO;
                }
            }
            while ((line = read_line(c, deadline_ms, &rc)) && *line) { /* trailers */
            }
            if (!line) goto fail;
        } else if (has_length) {
            if ((rc = take(c, (size_t)length, r, max_body, deadline_ms)) != 0) goto fail;
        } else {
            /* No length: the body runs to the end of the stream. */
            for (;;) {
                if (c->rpos == c->rlen) {
                    ssize_t k = conn_fill(c, deadline_ms);
                    if (k == 0) break;
                    if (k < 0) {
                        rc = (int)k;
                        goto fail;
                    }
                }
                if ((rc = take(c, c->rlen - c->rpos, r, max_body, deadline_ms)) != 0) goto fail;
            }
            close_after = true;
        }
        if (ut_buf_reserve(&r->body, 1) != 0) return DSYNC_ENOMEM;
        r->body.data[r->body.len] = '\0';
        if (close_after) hc_conn_close(c);
        return 0;
    }
fail:
    switch (rc) {
    case DSYNC_ETIMEDOUT:
        set_detail(detail, dcap, "the answer did not arrive in time");
        break;
    case DSYNC_ETOOBIG:
        set_detail(detail, dcap, "answer over %zu bytes", max_body);
        break;
    case DSYNC_EPROTO:
        set_detail(detail, dcap, "header line over %d bytes", HC_RBUF_CAP);
        break;
    case DSYNC_ENOMEM:
        set_detail(detail, dcap, "out of memory");
        break;
    default:
        set_detail(detail, dcap, "connection broke in the middle of the answer");
        rc = DSYNC_EIO;
        break;
    }
    return rc;
}

int hc_request(hc_conn *c, const char *method, const char *path, const char *body, size_t len,
               uint64_t deadline_ms, size_t max_body, hc_response *r, char *detail,
               size_t detail_cap)
{
    set_detail(detail, detail_cap, "%s", "");
    r->sent = false;
    r->status = 0;
    r->retry_after_s = -1;
    if (strlen(path) > PATH_MAX_BYTES || path[0] != '/' || strpbrk(path, " \r\n")) {
        set_detail(detail, detail_cap, "bad request path");
        return DSYNC_EINVAL;
    }
    char head[PATH_MAX_BYTES + 512];
    int n;
    if (body)
        n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                     "Accept: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, c->ep->host, c->ep->port, len);
    else
        n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: application/json\r\n\r\n", method,
                     path, c->ep->host, c->ep->port);
    if (n < 0 || (size_t)n >= sizeof head) {
        set_detail(detail, detail_cap, "request line too long");
        return DSYNC_EINVAL;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = c->fd >= 0, stale = false;
        int rc;
        if (!reused && (rc = conn_open(c, deadline_ms, detail, detail_cap)) != 0) return rc;
        r->sent = true;
        rc = send_all(c, head, (size_t)n, body, body ? len : 0, deadline_ms);
        if (rc == 0) {
            rc = read_response(c, method, r, max_body, deadline_ms, &stale, detail, detail_cap);
            if (rc == 0) return 0;
        } else {
            stale = rc == DSYNC_EIO;
            if (rc == DSYNC_ETIMEDOUT)
                set_detail(detail, detail_cap, "send: no progress in time");
            else
                errno_detail(detail, detail_cap, "send", errno);
        }
        hc_conn_close(c);
        /* Only a kept-alive connection that the server had dropped is
         * retried: the server never read that request. */
        if (!reused || !stale) return rc;
    }
    return DSYNC_EIO;
}
