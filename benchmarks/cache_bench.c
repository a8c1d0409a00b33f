/*
 * cache_bench.c: cache throughput and latency, for dsync over HTTP, dsync
 * through the library, Redis and memcached; and the memory a node needs per
 * cached entry. benchmarks/cache_bench.sh runs every mode (issue 5).
 *
 * Usage:
 *   cache_bench http      get|put|put-shared|plain CLIENTS SECONDS HOST:PORT[,HOST:PORT...]
 *   cache_bench redis     get|set            CLIENTS SECONDS HOST:PORT
 *   cache_bench memcached get|set            CLIENTS SECONDS HOST:PORT
 *   cache_bench lib       get|put            CLIENTS SECONDS
 *   cache_bench memory    ENTRIES [MAX_SECONDS]
 *
 * lib and memory open one in-process node, memory-only, with the cache's
 * default store (the home's memory: a single node is every key's home), or
 * Redis when DSYNC_REDIS_URL is set.
 *
 * Each client is one thread with its own connection(s) and its own
 * KEYS_PER_CLIENT keys (put-shared: SHARED_KEYS), used in turn; values are
 * VALUE_LEN bytes. Before the measured window every client puts each of its
 * keys once, through the same node (or server) it then measures on, and
 * waits for the others; then all start together. The workloads:
 *   get         (http, lib) GET of the client's own keys, on the node that
 *               put them: it holds them in M, so every GET is a local hit;
 *               (redis, memcached) GET / get of keys SET before.
 *   put         (http, lib) PUT of a new value to the client's own key on
 *               the node holding it in M: no other node has a copy (with
 *               write-through, the default, the home still stores it);
 *   set         (redis, memcached) SET / set of a new value.
 *   put-shared  (http, 3 endpoints or more) client i works on nodes
 *               A = endpoint i, B = i+1, C = i+2 (mod n), on SHARED_KEYS
 *               keys, in rounds that all clients run in lock step. Share
 *               phase (untimed): GET each key on B, then on C; each read
 *               must return the last value put, and makes B and C sharers
 *               (S). Write phase (timed): PUT a new value to each key on
 *               A; a PUT returns once B's and C's copies are invalid, so
 *               every PUT invalidates two sharers. ops/s counts the PUTs
 *               of the write phases per second of the write phases (wall
 *               clock, from the start line to the last client's last PUT:
 *               only PUTs run in it); cycle_ops/s counts them per second
 *               of the whole run, the sharers' GETs included.
 *   plain       (http) GET /cache/get?key=K of the client's keys, nothing put
 *               before, any answer with status 200 counts, its body
 *               unchecked: against http_ceiling it measures bare HTTP.
 * HTTP GETs go to /cache/get?key=K, PUTs to /cache/put with {"key","value"}.
 * Latency is of one timed operation. Only operations ending within SECONDS
 * count (put-shared: every PUT of its write phases, the last of which ends
 * after SECONDS). A failed operation counts as an error, backs off 10 ms
 * and goes on; a read that returns another value than the last one put
 * counts in stale (and as an error). Prints one line:
 *   <system> <workload> clients=N ops=X ops/s=Y p50_ms=.. p99_ms=.. errors=E stale=S [...]
 * (lib adds the node's hits and misses during the window, from its
 * metrics; put-shared adds write_s, the write phases' seconds, and
 * cycle_ops/s). Exits 1 if a client could not set up or no operation
 * completed.
 *
 * memory opens a node with DSYNC_CACHE_MAX_ENTRIES raised above ENTRIES,
 * puts ENTRIES entries (KEY_LEN-byte keys, VALUE_LEN-byte values) from
 * MEMORY_THREADS threads and prints the process's resident size before and
 * after (stopping after MAX_SECONDS, default 120, with what it has), and
 * the bytes per entry beyond its key and value bytes. With the
 * default store that covers the cache line, the home's directory entry and
 * the store's copy (the node is every key's home).
 *
 * The HTTP client is the benchmarks' one (common/http_client.c over the
 * library's lib/client/http.c); Redis through hiredis; memcached through a
 * minimal text-protocol client below (connect and I/O timeouts).
 */
#include "common/bench_util.h"
#include "common/http_client.h"

#include <dsync.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 1024
#define BACKOFF_MS 10
#define KEYS_PER_CLIENT 16
#define SHARED_KEYS 64 /* put-shared: keys per client, PUTs per client per write phase */
#define MAX_KEYS SHARED_KEYS
#define KEY_CAP 96
#define VALUE_LEN 16
#define KEY_LEN 12 /* memory mode's keys */
#define MEMORY_THREADS 32
#define READY_TIMEOUT_S 10 /* in-process node: until its cache answers */

typedef enum { SYS_HTTP, SYS_REDIS, SYS_MEMCACHED, SYS_LIB } bench_system;
typedef enum { WL_GET, WL_PUT, WL_PUT_SHARED, WL_PLAIN } workload;

/* One memcached connection: a socket and what was received, not yet read. */
typedef struct {
    const endpoint *ep;
    int fd;
    char buf[4096];
    size_t pos, len;
} mc_conn;

/* What the main thread and the clients share: the start line and the window. */
typedef struct {
    atomic_int ready; /* clients done with their setup (or failed it) */
    atomic_int go;    /* 1: the window has started, deadline is set (or abort) */
    atomic_int abort; /* a client could not set up: go home at once */
    atomic_int oom;   /* put-shared: a client's latency log could not grow */
    double deadline; /* monotonic seconds: no operation starts after it, none ending after counts */
    /* put-shared's rounds: every client meets the others at the barrier;
     * the thread the barrier elects writes the fields below, which the
     * others read after the next barrier. */
    pthread_barrier_t barrier;
    bool stop;       /* no further round: the deadline has passed (or oom) */
    double phase_t0; /* the current write phase's start line */
    double write_s;  /* the write phases' summed wall-clock time */
} run_state;

typedef struct {
    bench_system sys;
    workload wl;
    int id;
    const char *run_tag; /* keeps this run's keys apart from earlier runs */
    run_state *run;
    http_conn conn[3];         /* http: [0] the node measured on; put-shared: [1] B, [2] C */
    const endpoint *server_ep; /* redis, memcached */
    redisContext *redis;
    mc_conn mc;       /* memcached */
    dsync_node *node; /* lib */
    int n_keys;
    char keys[MAX_KEYS][KEY_CAP];
    char values[MAX_KEYS][VALUE_LEN + 1]; /* the last value put under each key */
    unsigned long seq;
    bool setup_ok;
    lat_log *lat; /* latency of each counted operation */
    long errors, stale;
} worker;

/* A VALUE_LEN-byte value, unique per worker and operation (stale reads show). */
static void next_value(int id, unsigned long *seq, char out[VALUE_LEN + 1])
{
    snprintf(out, VALUE_LEN + 1, "v%03u-%011lu", (unsigned)id % 1000u, (*seq)++ % 100000000000UL);
}

/* ---- HTTP ------------------------------------------------------------------------ */

static bool http_put(http_conn *c, const char *key, const char *value)
{
    char body[256], resp[HTTP_BODY_CAP];
    int status = 0;
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"value\":\"%s\"}", key, value);
    return http_post(c, "/cache/put", body, &status, resp, sizeof resp) == 0 && status == 200;
}

/* GET key; false on a transport error or a status other than 200. *fresh
 * says whether the value read is want. */
static bool http_read(http_conn *c, const char *key, const char *want, bool *fresh)
{
    char path[160], resp[HTTP_BODY_CAP], value[64];
    int status = 0;
    snprintf(path, sizeof path, "/cache/get?key=%s", key);
    if (http_get(c, path, &status, resp, sizeof resp) != 0 || status != 200) return false;
    *fresh = json_str(resp, "value", value, sizeof value) && strcmp(value, want) == 0;
    return true;
}

/* ---- Redis ------------------------------------------------------------------------ */

static bool redis_connect(worker *w)
{
    struct timeval connect_tv = {NET_CONNECT_TIMEOUT_MS / 1000, 0}, io_tv = {NET_IO_TIMEOUT_S, 0};
    w->redis = redisConnectWithTimeout(w->server_ep->host, atoi(w->server_ep->port), connect_tv);
    if (!w->redis || w->redis->err || redisSetTimeout(w->redis, io_tv) != REDIS_OK) {
        if (w->redis) redisFree(w->redis);
        w->redis = NULL;
        return false;
    }
    return true;
}

/* SET key value, or GET key (value NULL) compared with want. */
static bool redis_op(worker *w, const char *key, const char *value, const char *want, bool *fresh)
{
    if (!w->redis && !redis_connect(w)) return false;
    redisReply *r = value ? redisCommand(w->redis, "SET %s %s", key, value)
                          : redisCommand(w->redis, "GET %s", key);
    if (!r) { /* the context is dead after any error (hiredis 0.14) */
        redisFree(w->redis);
        w->redis = NULL;
        return false;
    }
    bool ok = value ? r->type == REDIS_REPLY_STATUS : r->type == REDIS_REPLY_STRING;
    if (ok && !value) *fresh = r->len == strlen(want) && memcmp(r->str, want, r->len) == 0;
    freeReplyObject(r);
    return ok;
}

/* ---- memcached (text protocol) ---------------------------------------------------- */

static void mc_close(mc_conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->pos = c->len = 0;
}

/* Connects within NET_CONNECT_TIMEOUT_MS; then every send and receive is
 * bounded by NET_IO_TIMEOUT_S. */
static bool mc_connect(mc_conn *c)
{
    c->fd = socket(c->ep->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->fd < 0) return false;
    int rc = connect(c->fd, (const struct sockaddr *)&c->ep->addr, c->ep->addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
        struct pollfd p = {c->fd, POLLOUT, 0};
        int err = 0;
        socklen_t elen = sizeof err;
        if (poll(&p, 1, NET_CONNECT_TIMEOUT_MS) == 1 &&
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0)
            rc = 0;
    }
    struct timeval io_tv = {NET_IO_TIMEOUT_S, 0};
    int one = 1;
    if (rc != 0 || fcntl(c->fd, F_SETFL, 0) != 0 ||
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &io_tv, sizeof io_tv) != 0 ||
        setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &io_tv, sizeof io_tv) != 0 ||
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
        mc_close(c);
        return false;
    }
    return true;
}

static bool mc_send(mc_conn *c, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

/* Receives more bytes after the unread ones; false on close, error or timeout. */
static bool mc_fill(mc_conn *c)
{
    if (c->pos > 0) {
        memmove(c->buf, c->buf + c->pos, c->len - c->pos);
        c->len -= c->pos;
        c->pos = 0;
    }
    if (c->len == sizeof c->buf) return false; /* a line longer than we accept */
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        c->len += (size_t)n;
        return true;
    }
}

/* The next line, without its CRLF, NUL-terminated in place (valid until the next read). */
static char *mc_line(mc_conn *c)
{
    for (;;) {
        char *start = c->buf + c->pos;
        char *end = memmem(start, c->len - c->pos, "\r\n", 2);
        if (end) {
            *end = '\0';
            c->pos = (size_t)(end + 2 - c->buf);
            return start;
        }
        if (!mc_fill(c)) return NULL;
    }
}

/* set key value (STORED), or get key (value NULL: one VALUE block, then END)
 * compared with want. */
static bool mc_op(mc_conn *c, const char *key, const char *value, const char *want, bool *fresh)
{
    char req[256];
    int n = value ? snprintf(req, sizeof req, "set %s 0 0 %zu\r\n%s\r\n", key, strlen(value), value)
                  : snprintf(req, sizeof req, "get %s\r\n", key);
    if (n < 0 || (size_t)n >= sizeof req) return false;
    if (c->fd < 0 && !mc_connect(c)) return false;
    bool ok = false;
    if (!mc_send(c, req, (size_t)n)) goto out;
    char *line = mc_line(c);
    if (!line) goto out;
    if (value) {
        ok = strcmp(line, "STORED") == 0;
        goto out;
    }
    unsigned flags;
    size_t len;
    char got_key[KEY_CAP];
    if (sscanf(line, "VALUE %95s %u %zu", got_key, &flags, &len) != 3 || len > sizeof c->buf - 64)
        goto out; /* END: absent, or an error line */
    while (c->len - c->pos < len + 2)
        if (!mc_fill(c)) goto out;
    *fresh = len == strlen(want) && memcmp(c->buf + c->pos, want, len) == 0;
    c->pos += len + 2;
    line = mc_line(c);
    ok = line && strcmp(line, "END") == 0;
out:
    if (!ok) mc_close(c); /* the stream's position is unknown: start over */
    return ok;
}

/* ---- one operation per system --------------------------------------------------------- */

/* Puts a new value under the client's key k and remembers it for the reads. */
static bool put_key(worker *w, int k)
{
    char value[VALUE_LEN + 1];
    bool ok, fresh;
    next_value(w->id, &w->seq, value);
    switch (w->sys) {
    case SYS_HTTP:
        ok = http_put(&w->conn[0], w->keys[k], value);
        break;
    case SYS_REDIS:
        ok = redis_op(w, w->keys[k], value, NULL, &fresh);
        break;
    case SYS_MEMCACHED:
        ok = mc_op(&w->mc, w->keys[k], value, NULL, &fresh);
        break;
    default:
        ok = dsync_cache_put(w->node, w->keys[k], value, VALUE_LEN, 0) == 0;
        break;
    }
    /* A failed PUT's outcome is unknown: the key's next read may see either value. */
    memcpy(w->values[k], ok ? value : "", ok ? VALUE_LEN + 1 : 1);
    return ok;
}

/* The value read must be the last one put (unknown after a failed PUT: accept any). */
static bool get_key(worker *w, int k, http_conn *conn)
{
    bool ok, fresh = false;
    switch (w->sys) {
    case SYS_HTTP:
        ok = http_read(conn, w->keys[k], w->values[k], &fresh);
        break;
    case SYS_REDIS:
        ok = redis_op(w, w->keys[k], NULL, w->values[k], &fresh);
        break;
    case SYS_MEMCACHED:
        ok = mc_op(&w->mc, w->keys[k], NULL, w->values[k], &fresh);
        break;
    default: {
        char *value = NULL;
        size_t len = 0;
        ok = dsync_cache_get(w->node, w->keys[k], &value, &len, NULL) == 0;
        fresh = ok && len == strlen(w->values[k]) && memcmp(value, w->values[k], len) == 0;
        free(value);
        break;
    }
    }
    if (ok && !fresh && w->values[k][0]) {
        w->stale++;
        return false;
    }
    return ok;
}

/* A GET answered 200, whatever its body (the HTTP ceiling's fixed one). */
static bool plain_get(worker *w, int k)
{
    char path[160], resp[HTTP_BODY_CAP];
    int status = 0;
    snprintf(path, sizeof path, "/cache/get?key=%s", w->keys[k]);
    return http_get(&w->conn[0], path, &status, resp, sizeof resp) == 0 && status == 200;
}

/* A failed operation: counted, then a pause before the next. */
static void failed(worker *w)
{
    w->errors++;
    sleep_ms(BACKOFF_MS);
}

/* put-shared: rounds of a share phase and a timed write phase, all clients
 * in lock step, until a write phase ends after the deadline. Every PUT of
 * a write phase counts, also one ending after the deadline. */
static void run_shared_rounds(worker *w)
{
    run_state *run = w->run;
    for (;;) {
        for (int k = 0; k < w->n_keys; k++)
            if (!(get_key(w, k, &w->conn[1]) && get_key(w, k, &w->conn[2]))) failed(w);
        if (pthread_barrier_wait(&run->barrier) == PTHREAD_BARRIER_SERIAL_THREAD)
            run->phase_t0 = now_s();
        for (int k = 0; k < w->n_keys; k++) {
            double t0 = now_s();
            if (put_key(w, k))
                lat_record(w->lat, t0, INFINITY);
            else
                failed(w);
        }
        if (w->lat->oom) atomic_store(&run->oom, 1); /* its PUTs go unrecorded: stop */
        if (pthread_barrier_wait(&run->barrier) == PTHREAD_BARRIER_SERIAL_THREAD) {
            double now = now_s();
            run->write_s += now - run->phase_t0;
            run->stop = now >= run->deadline || atomic_load(&run->oom);
        }
        pthread_barrier_wait(&run->barrier);
        if (run->stop) return;
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    w->n_keys = w->wl == WL_PUT_SHARED ? SHARED_KEYS : KEYS_PER_CLIENT;
    for (int k = 0; k < w->n_keys; k++)
        snprintf(w->keys[k], KEY_CAP, "cb-%s-c%d-k%d", w->run_tag, w->id, k);
    w->setup_ok = true;
    for (int k = 0; k < w->n_keys && w->setup_ok && w->wl != WL_PLAIN; k++)
        w->setup_ok = put_key(w, k);
    atomic_fetch_add(&w->run->ready, 1);
    while (!atomic_load(&w->run->go))
        sleep_ms(1);
    double deadline = w->run->deadline;
    if (atomic_load(&w->run->abort)) {
        /* Nothing measured: a client is missing its keys. */
    } else if (w->wl == WL_PUT_SHARED) {
        run_shared_rounds(w);
    } else {
        for (int k = 0; w->setup_ok && now_s() < deadline && !w->lat->oom;
             k = (k + 1) % w->n_keys) {
            double t0 = now_s();
            bool ok = w->wl == WL_PLAIN ? plain_get(w, k)
                      : w->wl == WL_GET ? get_key(w, k, &w->conn[0])
                                        : put_key(w, k);
            if (ok)
                lat_record(w->lat, t0, deadline);
            else
                failed(w);
        }
    }
    for (int i = 0; i < 3; i++)
        http_conn_close(&w->conn[i]);
    if (w->redis) redisFree(w->redis);
    mc_close(&w->mc);
    return NULL;
}

/* ---- the in-process node ------------------------------------------------------------ */

static int open_node(uint64_t max_entries, dsync_node **node)
{
    dsync_config cfg;
    dsync_config_defaults(&cfg);
    cfg.data_dir[0] = '\0'; /* memory only */
    const char *redis = getenv("DSYNC_REDIS_URL");
    if (redis) snprintf(cfg.redis_url, sizeof cfg.redis_url, "%s", redis);
    if (max_entries) {
        cfg.cache_max_entries = max_entries;
        cfg.cache_max_bytes = 1ULL << 40;
    }
    int rc = dsync_node_open(&cfg, node);
    if (rc != 0) {
        fprintf(stderr, "cache_bench: open: %s\n", dsync_strerror(rc));
        return rc;
    }
    /* The cache answers once the node's first view has committed. */
    for (double end = now_s() + READY_TIMEOUT_S; now_s() < end; sleep_ms(10)) {
        char *value = NULL;
        size_t len;
        rc = dsync_cache_get(*node, "cache-bench-probe", &value, &len, NULL);
        free(value);
        if (rc == 0 || rc == DSYNC_ENOTFOUND) return 0;
    }
    fprintf(stderr, "cache_bench: the node's cache did not answer within %d s: %s\n",
            READY_TIMEOUT_S, dsync_strerror(rc));
    dsync_node_close(*node);
    return rc;
}

/* The value of the series named exactly name (no labels) in the node's
 * metrics; -1 when absent. */
static double node_metric(dsync_node *node, const char *name)
{
    char *text = NULL;
    size_t len = 0;
    double v = -1;
    if (dsync_node_metrics(node, &text, &len) != 0) return -1;
    size_t nlen = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, name, nlen) == 0 && p[nlen] == ' ') {
            v = strtod(p + nlen + 1, NULL);
            break;
        }
    free(text);
    return v;
}

/* ---- argument parsing ----------------------------------------------------------------- */

static void usage(void)
{
    fprintf(
        stderr,
        "usage: cache_bench http      get|put|put-shared|plain CLIENTS SECONDS HOST:PORT[,...]\n"
        "       cache_bench redis     get|set CLIENTS SECONDS HOST:PORT\n"
        "       cache_bench memcached get|set CLIENTS SECONDS HOST:PORT\n"
        "       cache_bench lib       get|put CLIENTS SECONDS\n"
        "       cache_bench memory    ENTRIES [MAX_SECONDS]\n");
}

/* ---- memory --------------------------------------------------------------------------- */

typedef struct {
    dsync_node *node;
    int id;
    long entries;
    double deadline;
    atomic_int *go; /* set once the resident size before is taken */
    atomic_long *done;
    long errors;
} filler;

static void *filler_main(void *arg)
{
    filler *f = arg;
    char key[32], value[VALUE_LEN + 1];
    unsigned long seq = 0;
    while (!atomic_load(f->go))
        sleep_ms(1);
    for (long i = f->id; i < f->entries && now_s() < f->deadline; i += MEMORY_THREADS) {
        snprintf(key, sizeof key, "m%011ld", i); /* KEY_LEN bytes: i < 100000000 */
        next_value(f->id, &seq, value);
        if (dsync_cache_put(f->node, key, value, VALUE_LEN, 0) == 0) {
            atomic_fetch_add(f->done, 1);
        } else if (++f->errors > 1000) {
            break;
        }
    }
    return NULL;
}

/* Resident set size in kB from /proc/self/status; -1 if unreadable. */
static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static int run_memory(int argc, char **argv)
{
    long entries;
    double max_seconds = 120;
    if (argc < 3 || argc > 4 || !bench_parse_long(argv[2], 1, 100000000, &entries) ||
        (argc == 4 && !bench_parse_seconds(argv[3], &max_seconds))) {
        usage();
        return 2;
    }
    dsync_node *node;
    if (open_node((uint64_t)entries + 1024, &node) != 0) return 1;
    filler f[MEMORY_THREADS];
    pthread_t th[MEMORY_THREADS];
    atomic_long done = 0;
    atomic_int go = 0;
    int started = 0;
    for (int i = 0; i < MEMORY_THREADS; i++) {
        f[i] = (filler){node, i, entries, 0, &go, &done, 0};
        if (pthread_create(&th[i], NULL, filler_main, &f[i]) != 0) break;
        started++;
    }
    /* The threads exist (their stacks count in before): only the entries grow it. */
    sleep_ms(100);
    long before = rss_kb();
    double start = now_s();
    for (int i = 0; i < started; i++)
        f[i].deadline = start + max_seconds;
    atomic_store(&go, 1);
    long errors = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        errors += f[i].errors;
    }
    double elapsed = now_s() - start;
    long n = atomic_load(&done), after = rss_kb();
    /* The gauge is set at the end of a loop turn, maybe after the last put returned. */
    double cached = node_metric(node, "cache_entries");
    for (int i = 0; i < 100 && cached != (double)n; i++, sleep_ms(10))
        cached = node_metric(node, "cache_entries");
    double per_entry = n > 0 ? (double)(after - before) * 1024.0 / (double)n : 0;
    printf("memory entries=%ld complete=%s key_bytes=%d value_bytes=%d seconds=%.1f put/s=%.0f "
           "rss_before_mb=%.1f rss_after_mb=%.1f bytes_per_entry=%.0f overhead_per_entry=%.0f "
           "cached=%.0f directory=%.0f errors=%ld\n",
           n, n == entries ? "yes" : "no", KEY_LEN, VALUE_LEN, elapsed, (double)n / elapsed,
           (double)before / 1024, (double)after / 1024, per_entry,
           per_entry - (KEY_LEN + VALUE_LEN), cached, node_metric(node, "cache_directory_entries"),
           errors);
    dsync_node_close(node);
    /* Every entry put must still be cached: an eviction would make the figure a lie. */
    return n > 0 && cached == (double)n ? 0 : 1;
}

/* ---- main ----------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    char run_tag[48];
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    snprintf(run_tag, sizeof run_tag, "%ld-%ld", (long)getpid(), (long)(wall.tv_nsec / 1000));

    if (argc >= 2 && strcmp(argv[1], "memory") == 0) return run_memory(argc, argv);
    bench_system sys;
    const char *label;
    int want_args = 6;
    if (argc >= 2 && strcmp(argv[1], "http") == 0) {
        sys = SYS_HTTP;
        label = "dsync-http";
    } else if (argc >= 2 && strcmp(argv[1], "redis") == 0) {
        sys = SYS_REDIS;
        label = "redis";
    } else if (argc >= 2 && strcmp(argv[1], "memcached") == 0) {
        sys = SYS_MEMCACHED;
        label = "memcached";
    } else if (argc >= 2 && strcmp(argv[1], "lib") == 0) {
        sys = SYS_LIB;
        label = "dsync-lib";
        want_args = 5;
    } else {
        usage();
        return 2;
    }
    if (argc != want_args) {
        usage();
        return 2;
    }
    bool dsync = sys == SYS_HTTP || sys == SYS_LIB;
    workload wl;
    if (strcmp(argv[2], "get") == 0)
        wl = WL_GET;
    else if (strcmp(argv[2], dsync ? "put" : "set") == 0)
        wl = WL_PUT;
    else if (strcmp(argv[2], "put-shared") == 0 && sys == SYS_HTTP)
        wl = WL_PUT_SHARED;
    else if (strcmp(argv[2], "plain") == 0 && sys == SYS_HTTP)
        wl = WL_PLAIN, label = "http";
    else {
        usage();
        return 2;
    }
    long threads;
    double seconds;
    if (!bench_parse_run("cache_bench", argv[3], argv[4], MAX_THREADS, &threads, &seconds))
        return 2;
    endpoint eps[HTTP_MAX_ENDPOINTS];
    int n_eps = 0;
    dsync_node *node = NULL;
    if (sys == SYS_LIB) {
        if (open_node(0, &node) != 0) return 1;
    } else if (parse_endpoints("cache_bench", argv[5], eps, &n_eps) != 0) {
        return 2;
    }
    if (wl == WL_PUT_SHARED && n_eps < 3) {
        fprintf(stderr, "cache_bench: put-shared needs three endpoints (a writer, two readers)\n");
        return 2;
    }

    worker *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    lat_log *lat = calloc((size_t)threads, sizeof *lat);
    if (!w || !th || !lat) {
        fprintf(stderr, "cache_bench: out of memory\n");
        return 1;
    }
    run_state run = {0};
    long started = 0;
    for (long i = 0; i < threads; i++) {
        w[i].sys = sys;
        w[i].wl = wl;
        w[i].id = (int)i;
        w[i].run_tag = run_tag;
        w[i].run = &run;
        w[i].lat = &lat[i];
        for (int c = 0; c < 3; c++)
            http_conn_init(&w[i].conn[c], sys == SYS_HTTP ? &eps[(i + c) % n_eps] : NULL);
        w[i].server_ep = sys == SYS_LIB ? NULL : &eps[0];
        w[i].mc = (mc_conn){.ep = w[i].server_ep, .fd = -1};
        w[i].node = node;
        if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "cache_bench: cannot start thread %ld\n", i);
            break;
        }
        started++;
    }
    /* Every client's keys are in place (each request is bounded): start
     * together; put-shared's rounds need every client at the barrier. */
    while (atomic_load(&run.ready) < started)
        sleep_ms(1);
    for (long i = 0; i < started; i++)
        if (!w[i].setup_ok || (wl == WL_PUT_SHARED && started < threads))
            atomic_store(&run.abort, 1);
    bool barrier = false;
    if (wl == WL_PUT_SHARED && !atomic_load(&run.abort)) {
        barrier = pthread_barrier_init(&run.barrier, NULL, (unsigned)started) == 0;
        if (!barrier) {
            fprintf(stderr, "cache_bench: cannot make the clients' barrier\n");
            atomic_store(&run.abort, 1);
        }
    }
    double hits0 = node ? node_metric(node, "cache_hits_total") : 0;
    double misses0 = node ? node_metric(node, "cache_misses_total") : 0;
    double start = now_s();
    run.deadline = start + seconds;
    atomic_store(&run.go, 1);
    long errors = 0, stale = 0, failed_setup = 0;
    for (long i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        errors += w[i].errors;
        stale += w[i].stale;
        failed_setup += !w[i].setup_ok;
    }
    double elapsed = now_s() - start;
    if (barrier) pthread_barrier_destroy(&run.barrier);
    char extra[160] = "";
    if (node)
        snprintf(extra, sizeof extra, " hits=%.0f misses=%.0f",
                 node_metric(node, "cache_hits_total") - hits0,
                 node_metric(node, "cache_misses_total") - misses0);
    dsync_node_close(node);
    lat_summary sum;
    if (lat_summarize(lat, (size_t)started, &sum) != 0) {
        fprintf(stderr, "cache_bench: out of memory\n");
        return 1;
    }
    /* put-shared's rate is over its write phases; every other over the window. */
    double window_s = seconds;
    if (wl == WL_PUT_SHARED) {
        window_s = run.write_s;
        snprintf(extra, sizeof extra,
                 " write_s=%.3f cycle_ops/s=%.1f timed=put_invalidating_2_sharers", run.write_s,
                 elapsed > 0 ? (double)sum.n / elapsed : 0);
    }
    printf("%s %s clients=%ld ops=%zu ops/s=%.1f p50_ms=%.4f p99_ms=%.4f errors=%ld stale=%ld%s\n",
           label, argv[2], started, sum.n, window_s > 0 ? (double)sum.n / window_s : 0, sum.p50,
           sum.p99, errors, stale, extra);
    if (failed_setup)
        fprintf(stderr, "cache_bench: %ld of %ld clients could not put their keys\n", failed_setup,
                started);
    if (sum.oom) fprintf(stderr, "cache_bench: out of memory recording latencies\n");
    free(lat);
    free(w);
    free(th);
    return sum.n > 0 && started == threads && failed_setup == 0 ? 0 : 1;
}
