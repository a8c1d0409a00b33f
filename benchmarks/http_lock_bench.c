/*
 * http_lock_bench.c: lock acquire+release cycles per second over HTTP, against
 * a dsyncd cluster or an etcd cluster, with the same client code for both.
 *
 * Usage: http_lock_bench dsync|etcd THREADS SECONDS distinct|contended HOST:PORT[,HOST:PORT...]
 *
 * Each thread is one client with one keep-alive HTTP/1.1 connection, to the
 * endpoints in turn (thread i talks to endpoint i mod n). It takes an
 * exclusive lock and releases it, again and again, on its own key (distinct)
 * or on one key shared by all threads (contended, where waits block on the
 * server). A cycle is the whole acquire+release; its latency is measured from
 * the first byte of the acquire to the answer of the release.
 *
 *   dsync: POST /locks/acquire (X, wait_ms 10000; a 202 "waiting" is re-POSTed
 *          until 200 "granted"), then POST /locks/release.
 *   etcd:  one POST /v3/lease/grant per thread, then per cycle POST /v3/lock/lock
 *          with that lease and POST /v3/lock/unlock with the key it returns
 *          (etcd 3.4's JSON gateway; /v3beta/ is tried when /v3/ answers 404).
 *
 * Durability is equal: dsyncd and etcd both answer a lock or unlock only after
 * it is fsynced on a majority of the cluster, so the figures compare like with
 * like. A 503, a redirect or a dropped connection counts as an error; the
 * client reconnects if needed, backs off 10 ms and retries the cycle.
 *
 * Prints one line:
 *   <system> <mode> clients=N cycles=X cycles/s=Y p50_ms=.. p99_ms=.. errors=E
 * Only cycles that end within SECONDS count. Exits 1 if none completed.
 * Every connect, read and write has a timeout (2 s, 15 s) and every retry
 * loop a bound, so a run ends soon after SECONDS even against a stuck server.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENDPOINTS 16
#define MAX_THREADS 4096
#define IO_TIMEOUT_S 15
#define CONNECT_TIMEOUT_MS 2000
#define BODY_CAP 4096
#define RBUF_CAP 16384
#define BACKOFF_MS 10
#define RELEASE_TRIES 3

typedef struct {
    char host[256];
    char port[16];
    struct sockaddr_storage addr;
    socklen_t addrlen;
} endpoint;

/* One keep-alive connection; reconnects lazily after a close or an error. */
typedef struct {
    const endpoint *ep;
    int fd;
    char rbuf[RBUF_CAP]; /* received, not yet consumed: rbuf[rpos, rlen) */
    size_t rpos, rlen;
} http_conn;

typedef enum { SYS_DSYNC, SYS_ETCD } lock_system;

typedef struct {
    lock_system sys;
    int id;
    bool contended;
    double deadline;     /* monotonic seconds: no cycle starts after it, none ending after counts */
    const char *run_tag; /* keeps this run's keys and clients apart from earlier runs */
    http_conn conn;
    double *lat_ms; /* latency of each counted cycle */
    size_t n, cap;
    long errors;
    bool oom;
    /* etcd only */
    const char *prefix; /* "/v3/" or "/v3beta/" once a lease grant found it */
    char lease[32];     /* decimal lease ID; empty when none */
} worker;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- HTTP/1.1 client ---------------------------------------------------- */

static void conn_close(http_conn *c)
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
        if (poll(&p, 1, CONNECT_TIMEOUT_MS) != 1) goto fail;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) goto fail;
    }
    /* Blocking from here on; the timeouts bound every read and write. */
    int flags = fcntl(fd, F_GETFL);
    int one = 1;
    struct timeval tv = {IO_TIMEOUT_S, 0};
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
        if (close_after) conn_close(c);
        return 0;
    }
}

/* POST a JSON body; 0 with *status and the response body, -1 on a transport
 * failure (the connection is then closed and the next call reconnects). A
 * request on a kept-alive connection that the server had closed is sent once
 * more on a new one; every request here is idempotent (acquire and release
 * by client id, etcd lock by lease, unlock by key), so that is safe. */
static int http_post(http_conn *c, const char *path, const char *body, int *status, char *out,
                     size_t cap)
{
    char req[BODY_CAP + 512];
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
        conn_close(c);
        if (!reused || !stale) return -1; /* only a dropped idle connection is retried */
    }
    return -1;
}

/* ---- tiny JSON and base64 helpers -------------------------------------- */

/* Copies the string value of the first "name": "..." in body, escapes kept
 * as they are (the value only goes back into JSON). */
static bool json_str(const char *body, const char *name, char *out, size_t cap)
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

static void base64(const char *in, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in), o = 0;
    const unsigned char *s = (const unsigned char *)in;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* ---- the two systems ---------------------------------------------------- */

static void record(worker *w, double t0)
{
    double t1 = now_s();
    if (t1 > w->deadline) return; /* ended after the window: not counted */
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 4096;
        double *lat = realloc(w->lat_ms, cap * sizeof *lat);
        if (!lat) {
            w->oom = true;
            return;
        }
        w->lat_ms = lat;
        w->cap = cap;
    }
    w->lat_ms[w->n++] = (t1 - t0) * 1000;
}

static void run_dsync(worker *w)
{
    char key[96], client[96], acquire[384], release[256], resp[BODY_CAP], status_text[32];
    if (w->contended)
        snprintf(key, sizeof key, "%s-hot", w->run_tag);
    else
        snprintf(key, sizeof key, "%s-key-%d", w->run_tag, w->id);
    snprintf(client, sizeof client, "%s-client-%d", w->run_tag, w->id);
    snprintf(acquire, sizeof acquire,
             "{\"key\":\"%s\",\"client_id\":\"%s\",\"mode\":\"X\",\"ttl_ms\":30000,"
             "\"wait_ms\":10000}",
             key, client);
    snprintf(release, sizeof release, "{\"key\":\"%s\",\"client_id\":\"%s\"}", key, client);

    while (now_s() < w->deadline && !w->oom) {
        double t0 = now_s();
        int status = 0;
        bool granted = false, maybe_queued = false;
        /* A 202 leaves us queued; re-POSTing blocks up to wait_ms for the grant. */
        for (;;) {
            if (http_post(&w->conn, "/locks/acquire", acquire, &status, resp, sizeof resp) != 0) {
                maybe_queued = true;
                break;
            }
            if (status == 200 && json_str(resp, "status", status_text, sizeof status_text) &&
                strcmp(status_text, "granted") == 0) {
                granted = true;
                break;
            }
            if (status != 202) break;
            maybe_queued = true;
            if (now_s() >= w->deadline) break;
        }
        if (!granted) {
            bool ran_over = status == 202 && now_s() >= w->deadline;
            /* Withdraw a request that may still wait in the queue. */
            if (maybe_queued)
                http_post(&w->conn, "/locks/release", release, &status, resp, sizeof resp);
            if (ran_over) break; /* the window closed while we waited: no error */
            w->errors++;
            sleep_ms(BACKOFF_MS);
            continue;
        }
        bool released = false;
        for (int i = 0; i < RELEASE_TRIES && !released; i++) {
            int rc = http_post(&w->conn, "/locks/release", release, &status, resp, sizeof resp);
            if (rc == 0 && status == 200) {
                released = true;
            } else {
                w->errors++;
                if (rc == 0 && status == 404) break; /* not held any more: nothing to release */
                sleep_ms(BACKOFF_MS);
            }
        }
        if (released) record(w, t0);
    }
}

static const char *const etcd_prefixes[] = {"/v3/", "/v3beta/"};

/* Grants the thread's lease, finding the gateway's prefix on the first call. */
static bool etcd_grant(worker *w)
{
    char path[64], resp[BODY_CAP];
    for (size_t i = 0; i < sizeof etcd_prefixes / sizeof etcd_prefixes[0]; i++) {
        const char *prefix = w->prefix ? w->prefix : etcd_prefixes[i];
        int status;
        snprintf(path, sizeof path, "%slease/grant", prefix);
        if (http_post(&w->conn, path, "{\"TTL\":30}", &status, resp, sizeof resp) != 0)
            return false;
        if (status == 200 && json_str(resp, "ID", w->lease, sizeof w->lease)) {
            w->prefix = prefix;
            return true;
        }
        if (status != 404 || w->prefix) return false;
    }
    return false;
}

/* Revoking the lease deletes every key under it, a lock granted after we gave up included. */
static void etcd_revoke(worker *w)
{
    char path[64], body[96], resp[BODY_CAP];
    int status;
    if (!w->lease[0]) return;
    snprintf(path, sizeof path, "%slease/revoke", w->prefix);
    snprintf(body, sizeof body, "{\"ID\":\"%s\"}", w->lease);
    http_post(&w->conn, path, body, &status, resp, sizeof resp);
    w->lease[0] = '\0';
}

static void run_etcd(worker *w)
{
    char name[96], name64[160], lock_body[384], unlock_body[512], held[320], resp[BODY_CAP];
    char lock_path[64], unlock_path[64];
    if (w->contended)
        snprintf(name, sizeof name, "%s-hot", w->run_tag);
    else
        snprintf(name, sizeof name, "%s-key-%d", w->run_tag, w->id);
    base64(name, name64);

    while (now_s() < w->deadline && !w->oom) {
        if (!w->lease[0] && !etcd_grant(w)) {
            w->errors++;
            sleep_ms(BACKOFF_MS);
            continue;
        }
        snprintf(lock_path, sizeof lock_path, "%slock/lock", w->prefix);
        snprintf(unlock_path, sizeof unlock_path, "%slock/unlock", w->prefix);
        snprintf(lock_body, sizeof lock_body, "{\"name\":\"%s\",\"lease\":\"%s\"}", name64,
                 w->lease);
        double t0 = now_s();
        int status;
        int rc = http_post(&w->conn, lock_path, lock_body, &status, resp, sizeof resp);
        if (rc != 0 || status != 200 || !json_str(resp, "key", held, sizeof held)) {
            w->errors++;
            /* A lock cut off in flight may still be granted later: drop it with the lease. */
            if (rc != 0)
                etcd_revoke(w);
            else if (strstr(resp, "lease not found"))
                w->lease[0] = '\0';
            sleep_ms(BACKOFF_MS);
            continue;
        }
        snprintf(unlock_body, sizeof unlock_body, "{\"key\":\"%s\"}", held);
        bool released = false;
        for (int i = 0; i < RELEASE_TRIES && !released; i++) {
            rc = http_post(&w->conn, unlock_path, unlock_body, &status, resp, sizeof resp);
            if (rc == 0 && status == 200) {
                released = true;
            } else {
                w->errors++;
                sleep_ms(BACKOFF_MS);
            }
        }
        if (released)
            record(w, t0);
        else
            etcd_revoke(w);
    }
    etcd_revoke(w);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    if (w->sys == SYS_DSYNC)
        run_dsync(w);
    else
        run_etcd(w);
    conn_close(&w->conn);
    return NULL;
}

/* ---- main ---------------------------------------------------------------- */

static int parse_endpoints(char *list, endpoint *eps, int *n)
{
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_ENDPOINTS) {
            fprintf(stderr, "http_lock_bench: more than %d endpoints\n", MAX_ENDPOINTS);
            return -1;
        }
        if (strncmp(tok, "http://", 7) == 0) tok += 7;
        endpoint *e = &eps[*n];
        char *colon = strrchr(tok, ':');
        if (!colon || colon == tok || !colon[1] || (size_t)(colon - tok) >= sizeof e->host ||
            strlen(colon + 1) >= sizeof e->port) {
            fprintf(stderr, "http_lock_bench: bad endpoint '%s' (want HOST:PORT)\n", tok);
            return -1;
        }
        memcpy(e->host, tok, (size_t)(colon - tok));
        e->host[colon - tok] = '\0';
        strcpy(e->port, colon + 1);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
        int rc = getaddrinfo(e->host, e->port, &hints, &ai);
        if (rc != 0) {
            fprintf(stderr, "http_lock_bench: %s:%s: %s\n", e->host, e->port, gai_strerror(rc));
            return -1;
        }
        memcpy(&e->addr, ai->ai_addr, ai->ai_addrlen);
        e->addrlen = ai->ai_addrlen;
        freeaddrinfo(ai);
        (*n)++;
    }
    if (*n == 0) {
        fprintf(stderr, "http_lock_bench: no endpoint given\n");
        return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(void)
{
    fprintf(stderr, "usage: http_lock_bench dsync|etcd THREADS SECONDS distinct|contended "
                    "HOST:PORT[,HOST:PORT...]\n");
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        usage();
        return 2;
    }
    lock_system sys;
    if (strcmp(argv[1], "dsync") == 0)
        sys = SYS_DSYNC;
    else if (strcmp(argv[1], "etcd") == 0)
        sys = SYS_ETCD;
    else {
        usage();
        return 2;
    }
    char *end;
    long threads = strtol(argv[2], &end, 10);
    if (*end || threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "http_lock_bench: THREADS must be 1..%d\n", MAX_THREADS);
        return 2;
    }
    double seconds = strtod(argv[3], &end);
    if (*end || !(seconds > 0 && seconds <= 86400)) {
        fprintf(stderr, "http_lock_bench: SECONDS must be a positive number\n");
        return 2;
    }
    bool contended;
    if (strcmp(argv[4], "contended") == 0)
        contended = true;
    else if (strcmp(argv[4], "distinct") == 0)
        contended = false;
    else {
        usage();
        return 2;
    }
    endpoint eps[MAX_ENDPOINTS];
    int n_eps;
    if (parse_endpoints(argv[5], eps, &n_eps) != 0) return 2;
    signal(SIGPIPE, SIG_IGN);

    char run_tag[48];
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    snprintf(run_tag, sizeof run_tag, "hb%ld-%ld", (long)getpid(), (long)(wall.tv_nsec / 1000));

    worker *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    if (!w || !th) {
        fprintf(stderr, "http_lock_bench: out of memory\n");
        return 1;
    }
    double deadline = now_s() + seconds;
    long started = 0;
    for (long i = 0; i < threads; i++) {
        w[i].sys = sys;
        w[i].id = (int)i;
        w[i].contended = contended;
        w[i].deadline = deadline;
        w[i].run_tag = run_tag;
        w[i].conn.ep = &eps[i % n_eps];
        w[i].conn.fd = -1;
        if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "http_lock_bench: cannot start thread %ld\n", i);
            break;
        }
        started++;
    }
    size_t total = 0;
    long errors = 0;
    bool oom = false;
    for (long i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        total += w[i].n;
        errors += w[i].errors;
        oom |= w[i].oom;
    }
    double *all = malloc((total ? total : 1) * sizeof *all);
    if (!all) {
        fprintf(stderr, "http_lock_bench: out of memory\n");
        return 1;
    }
    size_t k = 0;
    for (long i = 0; i < started; i++) {
        if (w[i].n) memcpy(all + k, w[i].lat_ms, w[i].n * sizeof *all);
        k += w[i].n;
        free(w[i].lat_ms);
    }
    qsort(all, total, sizeof *all, cmp_double);
    double p50 = total ? all[(total - 1) / 2] : 0,
           p99 = total ? all[(size_t)((double)(total - 1) * 0.99)] : 0;
    printf("%s %s clients=%ld cycles=%zu cycles/s=%.1f p50_ms=%.3f p99_ms=%.3f errors=%ld\n",
           argv[1], argv[4], started, total, (double)total / seconds, p50, p99, errors);
    if (oom) fprintf(stderr, "http_lock_bench: out of memory recording latencies\n");
    free(all);
    free(w);
    free(th);
    return total > 0 && started == threads ? 0 : 1;
}
