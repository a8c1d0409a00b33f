/*
 * harness.c: start, stop and talk to real dsyncd processes (see harness.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "harness.h"
#include "util/util.h"

#define MAX_TRACKED 32
static pid_t tracked[MAX_TRACKED];
static bool atexit_installed;

static void kill_leftovers(void)
{
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (tracked[i] > 0) {
            kill(tracked[i], SIGKILL);
            waitpid(tracked[i], NULL, 0);
            tracked[i] = 0;
        }
    }
}

/* In a child: a test that dies by a signal (or a failed assert in a
 * thread) takes its servers with it, instead of leaving them running. */
static void die_with_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1); /* it died before prctl */
}

static void track(pid_t pid, bool add)
{
    if (!atexit_installed) {
        atexit(kill_leftovers);
        atexit_installed = true;
    }
    for (int i = 0; i < MAX_TRACKED; i++) {
        if (add && tracked[i] == 0) {
            tracked[i] = pid;
            return;
        }
        if (!add && tracked[i] == pid) {
            tracked[i] = 0;
            return;
        }
    }
}

long long h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

bool h_wait_until(bool (*cond)(void *), void *arg, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    for (;;) {
        if (cond(arg)) return true;
        if (h_now_ms() >= deadline) return false;
        sleep_ms(10);
    }
}

const char *h_dsyncd_path(void)
{
    const char *p = getenv("DSYNCD");
    return p && *p ? p : "bin/dsyncd";
}

/* The lowest port the kernel hands out for outgoing connections: a port
 * below it is never taken by a connect (a peer dial, a Redis client)
 * between our choosing it and a server binding it, which is what made a
 * port from bind(0) (itself in that range) now and then "already in use". */
static int ephemeral_low(void)
{
    int low = 32768, high;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &low, &high) != 2) low = 32768;
        fclose(f);
    }
    return low;
}

int h_free_port(void)
{
    /* A random port in [10000, the ephemeral range) that binds now and was
     * not handed out before in this process; seeded per process, so tests
     * running side by side choose apart. */
    static uint64_t rng;
    static int given[512];
    static size_t n_given;
    if (!rng) rng = ((uint64_t)getpid() << 32) ^ (uint64_t)h_now_ms();
    int low = ephemeral_low();
    if (low <= 11000) low = 65536; /* an odd range: any port may do */
    for (int attempt = 0; attempt < 1000; attempt++) {
        int port = 10000 + (int)(ut_rand_next(&rng) % (uint64_t)(low - 10000));
        if (port > 65535) continue;
        bool seen = false;
        for (size_t i = 0; i < n_given && !seen; i++)
            seen = given[i] == port;
        if (seen) continue;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) return -1;
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
        close(fd);
        if (!ok) continue;
        if (n_given < sizeof given / sizeof given[0]) given[n_given++] = port;
        return port;
    }
    return -1;
}

void h_node_init(h_node *n, int node_id, const char *const *extra)
{
    memset(n, 0, sizeof *n);
    n->node_id = node_id;
    n->http_port = h_free_port();
    n->peer_port = h_free_port();
    strcpy(n->dir, "/tmp/dsync-integ-XXXXXX");
    if (!mkdtemp(n->dir)) {
        perror("mkdtemp");
        abort();
    }
    snprintf(n->log_path, sizeof n->log_path, "%s/dsyncd.log", n->dir);
    for (int i = 0; extra && extra[i] && i < H_MAX_ENV; i++)
        snprintf(n->extra_env[n->n_extra++], sizeof n->extra_env[0], "%s", extra[i]);
}

void h_node_print_log(const h_node *n)
{
    FILE *f = fopen(n->log_path, "r");
    if (!f) return;
    char lines[20][512];
    int count = 0;
    while (fgets(lines[count % 20], sizeof lines[0], f))
        count++;
    fclose(f);
    fprintf(stderr, "--- last lines of %s ---\n", n->log_path);
    for (int i = count > 20 ? count - 20 : 0; i < count; i++)
        fputs(lines[i % 20], stderr);
}

static bool health_ok(void *arg)
{
    h_node *n = arg;
    int st = 0;
    /* A node that died will never answer: stop polling. */
    if (waitpid(n->pid, &st, WNOHANG) == n->pid) {
        track(n->pid, false);
        n->pid = 0;
        return true;
    }
    h_resp r;
    h_http(n, "GET", "/health", NULL, "", &r);
    bool ok = r.status == 200;
    h_resp_free(&r);
    return ok;
}

int h_node_start(h_node *n)
{
    const char *bin = h_dsyncd_path();
    char abs_bin[1024];
    if (bin[0] != '/' && realpath(bin, abs_bin)) bin = abs_bin;
    char env[H_MAX_ENV + 12][600];
    char *envp[H_MAX_ENV + 13];
    int k = 0;
    snprintf(env[k++], sizeof env[0], "DSYNC_NODE_ID=%d", n->node_id);
    snprintf(env[k++], sizeof env[0], "DSYNC_HTTP_ADDR=127.0.0.1:%d", n->http_port);
    snprintf(env[k++], sizeof env[0], "DSYNC_PEER_ADDR=127.0.0.1:%d", n->peer_port);
    snprintf(env[k++], sizeof env[0], "DSYNC_PEERS=%s", n->peers);
    snprintf(env[k++], sizeof env[0], "DSYNC_DATA_DIR=%s/data", n->dir);
    snprintf(env[k++], sizeof env[0], "DSYNC_LOG_LEVEL=info");
    snprintf(env[k++], sizeof env[0], "PATH=/usr/bin:/bin");
    const char *asan = getenv("ASAN_OPTIONS");
    if (asan) snprintf(env[k++], sizeof env[0], "ASAN_OPTIONS=%s", asan);
    const char *ubsan = getenv("UBSAN_OPTIONS");
    if (ubsan) snprintf(env[k++], sizeof env[0], "UBSAN_OPTIONS=%s", ubsan);
    for (int i = 0; i < n->n_extra; i++)
        snprintf(env[k++], sizeof env[0], "%s", n->extra_env[i]);
    for (int i = 0; i < k; i++)
        envp[i] = env[i];
    envp[k] = NULL;

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        die_with_parent(parent);
        int fd = open(n->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (chdir(n->dir) != 0) _exit(126);
        char *argv[] = {(char *)bin, NULL};
        execve(bin, argv, envp);
        _exit(127);
    }
    n->pid = pid;
    track(pid, true);
    /* Generous: the ASan build starts slowly on a loaded machine. */
    if (!h_wait_until(health_ok, n, 15000) || n->pid == 0) {
        fprintf(stderr, "dsyncd (node %d, http %d) did not become healthy\n", n->node_id,
                n->http_port);
        h_node_print_log(n);
        if (n->pid) h_node_kill9(n);
        return -1;
    }
    return 0;
}

static int reap(h_node *n, int sig, int timeout_ms)
{
    if (n->pid <= 0) return 0;
    kill(n->pid, sig);
    long long deadline = h_now_ms() + timeout_ms;
    int st = 0, clean = 0;
    while (waitpid(n->pid, &st, WNOHANG) == 0) {
        if (h_now_ms() >= deadline) {
            fprintf(stderr, "dsyncd (node %d) ignored signal %d for %d ms\n", n->node_id, sig,
                    timeout_ms);
            kill(n->pid, SIGKILL);
            waitpid(n->pid, &st, 0);
            clean = -1;
            break;
        }
        sleep_ms(5);
    }
    /* A clean stop exits 0; anything else (a sanitizer report, a crash)
     * fails the test that stopped it. */
    if (sig != SIGKILL && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) {
        fprintf(stderr, "dsyncd (node %d) did not exit cleanly (status 0x%x)\n", n->node_id, st);
        h_node_print_log(n);
        clean = -1;
    }
    track(n->pid, false);
    n->pid = 0;
    return clean;
}

int h_node_stop(h_node *n)
{
    return reap(n, SIGTERM, 5000);
}

void h_node_kill9(h_node *n)
{
    reap(n, SIGKILL, 5000);
}

int h_node_destroy(h_node *n)
{
    int rc = h_node_stop(n);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", n->dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", n->dir);
    return rc;
}

h_node *h_node_new(const char *const *extra)
{
    h_node *n = malloc(sizeof *n);
    if (!n) return NULL;
    h_node_init(n, 1, extra);
    if (h_node_start(n) != 0) {
        h_node_destroy(n);
        free(n);
        return NULL;
    }
    return n;
}

int h_node_free(h_node *n)
{
    int rc = h_node_destroy(n);
    free(n);
    return rc;
}

json_t *h_post(const h_node *n, const char *path, int *status, const char *fmt, ...)
{
    char body[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    return h_json(n, "POST", path, body, status);
}

/* ---- clusters ---------------------------------------------------------- */

long long h_health_int(const h_node *n, const char *field)
{
    int st;
    json_t *j = h_json(n, "GET", "/health", NULL, &st);
    json_t *v = j ? json_object_get(j, field) : NULL;
    long long out = st == 200 && json_is_integer(v) ? (long long)json_integer_value(v) : -1;
    json_decref(j);
    return out;
}

int h_cluster_leader(h_cluster *c, unsigned skip, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    do {
        long long agreed = 0;
        bool ok = true;
        for (int i = 0; i < c->n && ok; i++) {
            if (skip & (1u << i)) continue;
            long long l = h_health_int(&c->nodes[i], "leader_id");
            if (l <= 0 || (agreed && l != agreed)) ok = false;
            agreed = l;
        }
        if (ok && agreed) {
            for (int i = 0; i < c->n; i++)
                if (!(skip & (1u << i)) && c->nodes[i].node_id == agreed) return i;
        }
        sleep_ms(20);
    } while (h_now_ms() < deadline);
    return -1;
}

int h_cluster_start(h_cluster *c, int n, const char *const *extra)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    char peers[512] = "";
    for (int i = 0; i < n; i++) {
        h_node_init(&c->nodes[i], i + 1, extra);
        size_t len = strlen(peers);
        snprintf(peers + len, sizeof peers - len, "%s%d=127.0.0.1:%d", i ? "," : "", i + 1,
                 c->nodes[i].peer_port);
    }
    for (int i = 0; i < n; i++) {
        snprintf(c->nodes[i].peers, sizeof c->nodes[i].peers, "%s", peers);
        if (h_node_start(&c->nodes[i]) != 0) return -1;
    }
    if (h_cluster_leader(c, 0, 15000) < 0) {
        fprintf(stderr, "the cluster of %d did not agree on a leader\n", n);
        for (int i = 0; i < n; i++)
            h_node_print_log(&c->nodes[i]);
        return -1;
    }
    return 0;
}

int h_cluster_add_node(h_cluster *c, const char *const *extra)
{
    if (c->n == H_MAX_NODES) return -1;
    const char *env[H_MAX_ENV + 1];
    int k = 0;
    env[k++] = "DSYNC_JOIN=1";
    for (int i = 0; extra && extra[i] && k < H_MAX_ENV; i++)
        env[k++] = extra[i];
    env[k] = NULL;
    h_node *n = &c->nodes[c->n];
    h_node_init(n, c->n + 1, env);
    char self[40];
    snprintf(self, sizeof self, ",%d=127.0.0.1:%d", n->node_id, n->peer_port);
    snprintf(n->peers, sizeof n->peers, "%s", c->nodes[0].peers);
    strncat(n->peers, self, sizeof n->peers - strlen(n->peers) - 1);
    c->n++;
    return h_node_start(n) == 0 ? c->n - 1 : -1;
}

int h_cluster_destroy(h_cluster *c)
{
    /* civetweb takes a while to stop: let every node stop at once. */
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].pid > 0) kill(c->nodes[i].pid, SIGTERM);
    int rc = 0;
    for (int i = 0; i < c->n; i++)
        if (h_node_destroy(&c->nodes[i]) != 0) rc = -1;
    return rc;
}

/* ---- HTTP client ------------------------------------------------------- */

static int connect_node(const h_node *n, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)n->http_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void header_value(const char *head, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *end = strstr(v, "\r\n");
            size_t len = end ? (size_t)(end - v) : strlen(v);
            if (len >= cap) len = cap - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return;
        }
    }
}

/* Reads until EOF or timeout and parses one response. */
static int read_response(int fd, h_resp *r)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1024 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        len += (size_t)k;
    }
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.", 7) != 0 || !sep) {
        free(buf);
        return -1;
    }
    *sep = '\0';
    r->status = atoi(buf + 9);
    header_value(buf, "Content-Type", r->content_type, sizeof r->content_type);
    header_value(buf, "Allow", r->allow, sizeof r->allow);
    header_value(buf, "Retry-After", r->retry_after, sizeof r->retry_after);
    header_value(buf, "Connection", r->connection, sizeof r->connection);
    char cl[32];
    header_value(buf, "Content-Length", cl, sizeof cl);
    char *body = sep + 4;
    size_t body_len = len - (size_t)(body - buf);
    if (cl[0] && (size_t)atol(cl) < body_len) body_len = (size_t)atol(cl);
    r->body = malloc(body_len + 1);
    memcpy(r->body, body, body_len);
    r->body[body_len] = '\0';
    r->body_len = body_len;
    free(buf);
    return 0;
}

int h_raw(const h_node *n, const void *data, size_t len, int timeout_ms, h_resp *r)
{
    memset(r, 0, sizeof *r);
    int fd = connect_node(n, timeout_ms);
    if (fd < 0) return -1;
    const char *p = data;
    while (len > 0) {
        ssize_t k = send(fd, p, len, MSG_NOSIGNAL);
        if (k <= 0) break; /* the server may close early (413): read what it said */
        p += k;
        len -= (size_t)k;
    }
    int rc = read_response(fd, r);
    close(fd);
    return rc;
}

int h_raw_dribble(const h_node *n, const void *head, size_t len, const char *drip, int every_ms,
                  int timeout_ms, h_resp *r)
{
    memset(r, 0, sizeof *r);
    int fd = connect_node(n, timeout_ms);
    if (fd < 0) return -1;
    if (send(fd, head, len, MSG_NOSIGNAL) != (ssize_t)len) {
        close(fd);
        return -1;
    }
    /* A byte of drip each every_ms, until the server has something to say
     * (an answer, or the end of the connection) or drip runs out. */
    for (size_t i = 0; drip[i]; i++) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, every_ms) != 0) break;
        if (send(fd, drip + i, 1, MSG_NOSIGNAL) != 1) break;
    }
    int rc = read_response(fd, r);
    close(fd);
    return rc;
}

int h_http(const h_node *n, const char *method, const char *path, const char *body,
           const char *extra_headers, h_resp *r)
{
    size_t blen = body ? strlen(body) : 0;
    size_t cap = blen + 1024 + (extra_headers ? strlen(extra_headers) : 0);
    char *req = malloc(cap);
    int hl = snprintf(req, cap,
                      "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s"
                      "Content-Type: application/json\r\n",
                      method, path, extra_headers ? extra_headers : "");
    if (body) hl += snprintf(req + hl, cap - (size_t)hl, "Content-Length: %zu\r\n", blen);
    hl += snprintf(req + hl, cap - (size_t)hl, "\r\n");
    if (body) memcpy(req + hl, body, blen);
    int rc = h_raw(n, req, (size_t)hl + blen, 10000, r);
    free(req);
    return rc;
}

void h_resp_free(h_resp *r)
{
    free(r->body);
    r->body = NULL;
}

json_t *h_json(const h_node *n, const char *method, const char *path, const char *body, int *status)
{
    h_resp r;
    h_http(n, method, path, body, "", &r);
    if (status) *status = r.status;
    json_t *j = r.body ? json_loads(r.body, 0, NULL) : NULL;
    h_resp_free(&r);
    return j;
}

double h_metric(const h_node *n, const char *series)
{
    h_resp r;
    h_http(n, "GET", "/metrics", NULL, "", &r);
    double v = -1;
    size_t sl = strlen(series);
    for (char *line = r.body; line && *line;) {
        char *end = strchr(line, '\n');
        if (strncmp(line, series, sl) == 0 && line[sl] == ' ') {
            v = atof(line + sl + 1);
            break;
        }
        line = end ? end + 1 : NULL;
    }
    h_resp_free(&r);
    return v;
}

/* ---- redis-server ------------------------------------------------------ */

static bool redis_path(char *out, size_t len)
{
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(out, len, "%.*s/redis-server", (int)n, path);
        if (n > 0 && access(out, X_OK) == 0) return true;
        path += n + (path[n] == ':');
    }
    return false;
}

bool h_redis_available(void)
{
    char p[512];
    return redis_path(p, sizeof p);
}

/* One PING over a fresh connection: true on +PONG (Redis answers it only
 * once its AOF is loaded). */
static bool redis_pong(void *arg)
{
    const h_redis *r = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return false;
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)r->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char buf[16] = {0};
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
              write(fd, "PING\r\n", 6) == 6 && read(fd, buf, sizeof buf - 1) > 0 &&
              strncmp(buf, "+PONG", 5) == 0;
    close(fd);
    return ok;
}

int h_redis_start(h_redis *r)
{
    char bin[512];
    if (!redis_path(bin, sizeof bin)) {
        fprintf(stderr, "redis-server is not installed\n");
        return -1;
    }
    if (!r->dir[0]) {
        strcpy(r->dir, "/tmp/dsync-redis-XXXXXX");
        if (!mkdtemp(r->dir)) return -1;
        r->port = h_free_port();
        snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", r->port);
    }
    char port[16], log[192];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(log, sizeof log, "%s/redis.log", r->dir);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        die_with_parent(parent);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(bin, "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "yes", "--appendfsync", "always", "--dir", r->dir, "--daemonize",
              "no", (char *)NULL);
        _exit(127);
    }
    r->pid = pid;
    track(pid, true);
    if (h_wait_until(redis_pong, r, 5000)) return 0;
    fprintf(stderr, "redis-server on port %d did not answer PING within 5 s (see %s)\n", r->port,
            log);
    h_redis_kill9(r);
    return -1;
}

void h_redis_kill9(h_redis *r)
{
    if (r->pid <= 0) return;
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    track(r->pid, false);
    r->pid = 0;
}

void h_redis_destroy(h_redis *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGTERM);
        long long deadline = h_now_ms() + 5000;
        bool reaped = false;
        while (!(reaped = waitpid(r->pid, NULL, WNOHANG) == r->pid) && h_now_ms() < deadline)
            usleep(10000);
        if (reaped) {
            track(r->pid, false);
            r->pid = 0;
        }
        h_redis_kill9(r); /* if SIGTERM did not end it */
    }
    if (r->dir[0]) {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", r->dir);
    }
}

int h_redis_put_topics(const h_redis *r, const char *prefix, int count)
{
    enum { BATCH = 500 };
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) {
        fprintf(stderr, "h_redis_put_topics: connect: %s\n", c ? c->errstr : "out of memory");
        redisFree(c);
        return -1;
    }
    static char keys[BATCH][160];
    const char *argv[1 + 2 * BATCH];
    size_t argvlen[1 + 2 * BATCH];
    int rc = 0;
    for (int base = 0; rc == 0 && base < count; base += BATCH) {
        int n = count - base < BATCH ? count - base : BATCH;
        argv[0] = "MSET";
        argvlen[0] = 4;
        for (int i = 0; i < n; i++) {
            argvlen[1 + 2 * i] = (size_t)snprintf(keys[i], sizeof keys[i], "dsync:q:{%s-%d}:epoch",
                                                  prefix, base + i);
            argv[1 + 2 * i] = keys[i];
            argv[2 + 2 * i] = "1";
            argvlen[2 + 2 * i] = 1;
        }
        redisReply *reply = redisCommandArgv(c, 1 + 2 * n, argv, argvlen);
        if (!reply || reply->type != REDIS_REPLY_STATUS) {
            fprintf(stderr, "h_redis_put_topics: MSET: %s\n",
                    reply && reply->type == REDIS_REPLY_ERROR ? reply->str : c->errstr);
            rc = -1;
        }
        freeReplyObject(reply);
    }
    redisFree(c);
    return rc;
}
