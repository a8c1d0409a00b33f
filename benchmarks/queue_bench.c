/*
 * queue_bench.c: queue throughput and latency, for dsync over HTTP, dsync
 * through the library, raw Redis, and a bare HTTP server; and the memory a
 * node needs per waiting message. benchmarks/queue_bench.sh runs every mode.
 *
 * Usage:
 *   queue_bench http   enqueue|cycle|post CLIENTS SECONDS HOST:PORT[,HOST:PORT...]
 *   queue_bench redis  enqueue|cycle      CLIENTS SECONDS HOST:PORT
 *   queue_bench lib    enqueue|cycle      CLIENTS SECONDS DATA_DIR|-
 *   queue_bench memory MESSAGES TOPICS MAX_SECONDS DATA_DIR|-
 *
 * lib and memory keep the queue in Redis when DSYNC_REDIS_URL is set.
 *
 * Each client is one thread on its own topic (its own list in Redis) with
 * its own connection: one keep-alive HTTP/1.1 connection to endpoint
 * (client mod n), one hiredis connection, or the in-process node. Bodies
 * are 16 bytes. The workloads:
 *   enqueue  one enqueue (dsync) or LPUSH (Redis) per operation;
 *   cycle    enqueue, consume max 1, ack its receipt (dsync), or the
 *            reliable-queue pattern LPUSH, LMOVE src inflight RIGHT LEFT,
 *            LREM inflight 1 value (Redis): three round trips either way;
 *   post     (http only) a POST of an enqueue-sized JSON body to /queue/enqueue
 *            on any server; against http_ceiling it measures bare HTTP.
 * With QUEUE_BENCH_ROUTE=owner in the environment (http only), each
 * client's topic is one that the node it talks to owns (asked at
 * /queue/state?topic=T before the clock starts), as a client that routes
 * by placement would: no call is forwarded to another node. The line then
 * names the system dsync-http-routed.
 * Latency is of a whole operation. Only operations ending within SECONDS
 * count. A failed operation counts as an error, backs off 10 ms and goes on.
 * Prints one line:
 *   <system> <workload> clients=N ops=X ops/s=Y p50_ms=.. p99_ms=.. errors=E
 * Exits 1 if no operation completed.
 *
 * memory opens one node, enqueues MESSAGES 16-byte messages to TOPICS topics
 * from 32 threads (group commit needs concurrent callers) and prints the
 * process's resident size before and after and the bytes per waiting
 * message; it stops after MAX_SECONDS with what it has, printing progress
 * every 10 s.
 *
 * The HTTP client is the one http_lock_bench uses (common/http_client.c over
 * the library's lib/client/http.c: connect and I/O timeouts, keep-alive, a
 * dropped idle connection retried once).
 */
#include "common/bench_util.h"
#include "common/http_client.h"

#include <dsync.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 1024
#define BACKOFF_MS 10
#define MSG_LEN 16
#define MEMORY_THREADS 32
#define VISIBILITY_MS 30000

typedef enum { SYS_HTTP, SYS_REDIS, SYS_LIB } bench_system;
typedef enum { WL_ENQUEUE, WL_CYCLE, WL_POST } workload;

typedef struct {
    bench_system sys;
    workload wl;
    int id;
    double deadline; /* monotonic seconds: no operation starts after it, none ending after counts */
    const char *run_tag; /* keeps this run's topics apart from earlier runs */
    char topic[96];
    http_conn conn;           /* http */
    const endpoint *redis_ep; /* redis */
    redisContext *redis;
    dsync_node *node; /* lib */
    unsigned long seq;
    lat_log *lat; /* latency of each counted operation */
    long errors;
} worker;

/* A 16-byte body, unique per worker and operation (Redis' LREM needs that). */
static void next_body(int id, unsigned long *seq, char out[MSG_LEN + 1])
{
    snprintf(out, MSG_LEN + 1, "m%03u-%011lu", (unsigned)id % 1000u, (*seq)++ % 100000000000UL);
}

/* ---- one operation per system ----------------------------------------------- */

/* Each returns true when the whole operation succeeded. */

static bool http_operation(worker *w)
{
    char msg[MSG_LEN + 1], body[512], resp[HTTP_BODY_CAP], receipt[128];
    int status = 0;
    next_body(w->id, &w->seq, msg);
    snprintf(body, sizeof body, "{\"topic\":\"%s\",\"message\":\"%s\"}", w->topic, msg);
    if (http_post(&w->conn, "/queue/enqueue", body, &status, resp, sizeof resp) != 0 ||
        status != 200)
        return false;
    if (w->wl != WL_CYCLE) return true;
    snprintf(body, sizeof body,
             "{\"topic\":\"%s\",\"consumer_id\":\"c%d\",\"max\":1,\"visibility_ms\":%d,"
             "\"wait_ms\":0}",
             w->topic, w->id, VISIBILITY_MS);
    if (http_post(&w->conn, "/queue/consume", body, &status, resp, sizeof resp) != 0 ||
        status != 200 || !json_str(resp, "receipt", receipt, sizeof receipt))
        return false;
    snprintf(body, sizeof body, "{\"topic\":\"%s\",\"receipt\":\"%s\"}", w->topic, receipt);
    return http_post(&w->conn, "/queue/ack", body, &status, resp, sizeof resp) == 0 &&
           status == 200;
}

/* One command; false (and the connection dropped if it broke) on an error reply. */
static bool redis_cmd(worker *w, int want_type, char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(w->redis, fmt, ap);
    va_end(ap);
    if (!r) {
        redisFree(w->redis);
        w->redis = NULL;
        return false;
    }
    bool ok = r->type == want_type;
    if (ok && out) {
        if (r->len >= cap) {
            ok = false;
        } else {
            memcpy(out, r->str, r->len);
            out[r->len] = '\0';
        }
    }
    if (ok && want_type == REDIS_REPLY_INTEGER && !out && r->integer < 1) ok = false;
    freeReplyObject(r);
    return ok;
}

static bool redis_connect(worker *w)
{
    struct timeval connect_tv = {NET_CONNECT_TIMEOUT_MS / 1000, 0}, io_tv = {NET_IO_TIMEOUT_S, 0};
    w->redis = redisConnectWithTimeout(w->redis_ep->host, atoi(w->redis_ep->port), connect_tv);
    if (!w->redis || w->redis->err || redisSetTimeout(w->redis, io_tv) != REDIS_OK) {
        if (w->redis) redisFree(w->redis);
        w->redis = NULL;
        return false;
    }
    return true;
}

static bool redis_operation(worker *w)
{
    char msg[MSG_LEN + 1], moved[64];
    if (!w->redis && !redis_connect(w)) return false;
    next_body(w->id, &w->seq, msg);
    if (!redis_cmd(w, REDIS_REPLY_INTEGER, NULL, 0, "LPUSH %s %s", w->topic, msg)) return false;
    if (w->wl != WL_CYCLE) return true;
    return redis_cmd(w, REDIS_REPLY_STRING, moved, sizeof moved, "LMOVE %s %s:inflight RIGHT LEFT",
                     w->topic, w->topic) &&
           redis_cmd(w, REDIS_REPLY_INTEGER, NULL, 0, "LREM %s:inflight 1 %s", w->topic, moved);
}

static bool lib_operation(worker *w)
{
    char msg[MSG_LEN + 1];
    uint64_t id;
    next_body(w->id, &w->seq, msg);
    if (dsync_queue_enqueue(w->node, w->topic, msg, MSG_LEN, &id) != 0) return false;
    if (w->wl != WL_CYCLE) return true;
    char consumer[32];
    snprintf(consumer, sizeof consumer, "c%d", w->id);
    dsync_consume_request req = {w->topic, consumer, 1, VISIBILITY_MS, 0};
    dsync_queue_msg *msgs;
    size_t n;
    if (dsync_queue_consume(w->node, &req, &msgs, &n) != 0) return false;
    bool ok = n == 1 && dsync_queue_ack(w->node, w->topic, msgs[0].receipt) == 0;
    dsync_queue_msgs_free(msgs, n);
    return ok;
}

/* The integer value of the first "name": N in body, or -1. */
static long json_long(const char *body, const char *name)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", name);
    const char *p = strstr(body, pat);
    if (!p) return -1;
    p += strlen(pat);
    while (*p == ' ' || *p == ':') p++;
    char *end;
    long v = strtol(p, &end, 10);
    return end == p ? -1 : v;
}

/* Owner routing (QUEUE_BENCH_ROUTE=owner): names w's topic so that the node
 * it talks to owns it, as a client that routes by /queue/state would. */
static bool route_to_owner(worker *w)
{
    char resp[HTTP_BODY_CAP], path[192];
    int status = 0;
    if (http_get(&w->conn, "/health", &status, resp, sizeof resp) != 0 || status != 200) return false;
    long self = json_long(resp, "node_id");
    for (int k = 0; k < 256 && self > 0; k++) {
        snprintf(w->topic, sizeof w->topic, "qb-%s-t%d-%d", w->run_tag, w->id, k);
        snprintf(path, sizeof path, "/queue/state?topic=%s", w->topic);
        if (http_get(&w->conn, path, &status, resp, sizeof resp) != 0 || status != 200) return false;
        if (json_long(resp, "owner") == self) return true;
    }
    return false;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    while (now_s() < w->deadline && !w->lat->oom) {
        double t0 = now_s();
        bool ok = w->sys == SYS_HTTP    ? http_operation(w)
                  : w->sys == SYS_REDIS ? redis_operation(w)
                                        : lib_operation(w);
        if (ok) {
            lat_record(w->lat, t0, w->deadline);
        } else {
            w->errors++;
            sleep_ms(BACKOFF_MS);
        }
    }
    http_conn_close(&w->conn);
    if (w->redis) redisFree(w->redis);
    return NULL;
}

/* ---- setup --------------------------------------------------------------------- */

static int open_node(const char *data_dir, dsync_node **node)
{
    dsync_config cfg;
    dsync_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", strcmp(data_dir, "-") ? data_dir : "");
    /* DSYNC_REDIS_URL in the environment: the node keeps the queue there. */
    const char *redis = getenv("DSYNC_REDIS_URL");
    if (redis) snprintf(cfg.redis_url, sizeof cfg.redis_url, "%s", redis);
    int rc = dsync_node_open(&cfg, node);
    if (rc != 0) {
        fprintf(stderr, "queue_bench: open: %s\n", dsync_strerror(rc));
        return rc;
    }
    /* With Redis the queue serves once the node's first view has committed. */
    for (int i = 0; cfg.redis_url[0] && i < 500; i++) {
        dsync_queue_state st;
        if (dsync_queue_state_get(*node, NULL, &st) == 0) {
            bool ready = st.view_epoch > 0;
            dsync_queue_state_free(&st);
            if (ready) break;
        }
        usleep(10000);
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: queue_bench http   enqueue|cycle|post CLIENTS SECONDS HOST:PORT[,...]\n"
                    "       queue_bench redis  enqueue|cycle CLIENTS SECONDS HOST:PORT\n"
                    "       queue_bench lib    enqueue|cycle CLIENTS SECONDS DATA_DIR|-\n"
                    "       queue_bench memory MESSAGES TOPICS MAX_SECONDS DATA_DIR|-\n");
}

/* ---- memory -------------------------------------------------------------------- */

typedef struct {
    dsync_node *node;
    int id;
    long topics;
    long target;
    double deadline;
    const char *run_tag;
    atomic_long *done;
    long errors;
} filler;

static void *filler_main(void *arg)
{
    filler *f = arg;
    char topic[96], msg[MSG_LEN + 1];
    snprintf(topic, sizeof topic, "qb-%s-mem%ld", f->run_tag, f->id % f->topics);
    unsigned long seq = 0;
    /* Counting before the call keeps the total at MESSAGES; a failure gives its slot back. */
    while (atomic_fetch_add(f->done, 1) < f->target) {
        if (now_s() >= f->deadline) {
            atomic_fetch_sub(f->done, 1);
            break;
        }
        uint64_t id;
        next_body(f->id, &seq, msg);
        if (dsync_queue_enqueue(f->node, topic, msg, MSG_LEN, &id) != 0) {
            atomic_fetch_sub(f->done, 1);
            if (++f->errors > 1000) break;
            sleep_ms(BACKOFF_MS);
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

static int run_memory(int argc, char **argv, const char *run_tag)
{
    long messages, topics;
    double max_seconds;
    if (argc != 6 || !bench_parse_long(argv[2], 1, 100000000, &messages) ||
        !bench_parse_long(argv[3], 1, 1000, &topics) || !bench_parse_seconds(argv[4], &max_seconds)) {
        usage();
        return 2;
    }
    dsync_node *node;
    if (open_node(argv[5], &node) != 0) return 1;
    filler f[MEMORY_THREADS];
    pthread_t th[MEMORY_THREADS];
    atomic_long done = 0;
    long before = rss_kb();
    double start = now_s(), deadline = start + max_seconds, next_report = start + 10;
    int started = 0;
    for (int i = 0; i < MEMORY_THREADS; i++) {
        f[i] = (filler){node, i, topics, messages, deadline, run_tag, &done, 0};
        if (pthread_create(&th[i], NULL, filler_main, &f[i]) != 0) break;
        started++;
    }
    /* Progress while the threads fill; they stop by themselves at MESSAGES or the deadline. */
    for (;;) {
        long n = atomic_load(&done);
        if (n >= messages || now_s() >= deadline) break;
        if (now_s() >= next_report) {
            printf("memory progress: %ld of %ld enqueued after %.0f s\n", n, messages,
                   now_s() - start);
            fflush(stdout);
            next_report += 10;
        }
        sleep_ms(100);
    }
    long errors = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        errors += f[i].errors;
    }
    double elapsed = now_s() - start;
    long n = atomic_load(&done);
    if (n > messages) n = messages;
    long after = rss_kb();
    double per_msg = n > 0 ? (double)(after - before) * 1024.0 / (double)n : 0;
    printf("memory messages=%ld topics=%ld complete=%s seconds=%.1f enqueue/s=%.0f "
           "rss_before_mb=%.1f rss_after_mb=%.1f bytes_per_msg=%.0f errors=%ld\n",
           n, topics, n == messages ? "yes" : "no", elapsed, (double)n / elapsed,
           (double)before / 1024, (double)after / 1024, per_msg, errors);
    dsync_node_close(node);
    return n > 0 ? 0 : 1;
}

/* ---- main ---------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    char run_tag[48];
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    snprintf(run_tag, sizeof run_tag, "%ld-%ld", (long)getpid(), (long)(wall.tv_nsec / 1000));

    if (argc >= 2 && strcmp(argv[1], "memory") == 0) return run_memory(argc, argv, run_tag);
    if (argc != 6) {
        usage();
        return 2;
    }
    bench_system sys;
    const char *label;
    if (strcmp(argv[1], "http") == 0) {
        sys = SYS_HTTP;
        label = "dsync-http";
    } else if (strcmp(argv[1], "redis") == 0) {
        sys = SYS_REDIS;
        label = "redis";
    } else if (strcmp(argv[1], "lib") == 0) {
        sys = SYS_LIB;
        label = "dsync-lib";
    } else {
        usage();
        return 2;
    }
    workload wl;
    if (strcmp(argv[2], "enqueue") == 0)
        wl = WL_ENQUEUE;
    else if (strcmp(argv[2], "cycle") == 0)
        wl = WL_CYCLE;
    else if (strcmp(argv[2], "post") == 0 && sys == SYS_HTTP)
        wl = WL_POST, label = "http";
    else {
        usage();
        return 2;
    }
    long threads;
    double seconds;
    if (!bench_parse_run("queue_bench", argv[3], argv[4], MAX_THREADS, &threads, &seconds)) return 2;
    endpoint eps[HTTP_MAX_ENDPOINTS];
    int n_eps = 0;
    dsync_node *node = NULL;
    if (sys == SYS_LIB) {
        if (open_node(argv[5], &node) != 0) return 1;
    } else if (parse_endpoints("queue_bench", argv[5], eps, &n_eps) != 0) {
        return 2;
    }

    worker *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    lat_log *lat = calloc((size_t)threads, sizeof *lat);
    if (!w || !th || !lat) {
        fprintf(stderr, "queue_bench: out of memory\n");
        return 1;
    }
    const char *route_env = getenv("QUEUE_BENCH_ROUTE");
    bool route = route_env && strcmp(route_env, "owner") == 0;
    if (route && sys == SYS_HTTP && wl != WL_POST) label = "dsync-http-routed";
    for (long i = 0; i < threads; i++) {
        w[i].sys = sys;
        w[i].wl = wl;
        w[i].id = (int)i;
        w[i].run_tag = run_tag;
        w[i].lat = &lat[i];
        if (sys != SYS_LIB) w[i].redis_ep = &eps[i % n_eps];
        http_conn_init(&w[i].conn, w[i].redis_ep);
        w[i].node = node;
        if (sys == SYS_REDIS)
            snprintf(w[i].topic, sizeof w[i].topic, "qb:%s:%d", run_tag, w[i].id);
        else
            snprintf(w[i].topic, sizeof w[i].topic, "qb-%s-t%d", run_tag, w[i].id);
        if (sys == SYS_HTTP && route && !route_to_owner(&w[i])) {
            fprintf(stderr, "queue_bench: found no topic owned by endpoint %ld\n", i % n_eps);
            return 1;
        }
    }
    double deadline = now_s() + seconds;
    long started = 0;
    for (long i = 0; i < threads; i++) {
        w[i].deadline = deadline;
        if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "queue_bench: cannot start thread %ld\n", i);
            break;
        }
        started++;
    }
    long errors = 0;
    for (long i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        errors += w[i].errors;
    }
    dsync_node_close(node);
    lat_summary sum;
    if (lat_summarize(lat, (size_t)started, &sum) != 0) {
        fprintf(stderr, "queue_bench: out of memory\n");
        return 1;
    }
    printf("%s %s clients=%ld ops=%zu ops/s=%.1f p50_ms=%.3f p99_ms=%.3f errors=%ld\n", label,
           argv[2], started, sum.n, (double)sum.n / seconds, sum.p50, sum.p99, errors);
    if (sum.oom) fprintf(stderr, "queue_bench: out of memory recording latencies\n");
    free(lat);
    free(w);
    free(th);
    return sum.n > 0 && started == threads ? 0 : 1;
}
