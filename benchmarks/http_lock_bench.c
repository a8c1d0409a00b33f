/*
 * http_lock_bench.c: lock acquire+release cycles per second over HTTP, against
 * a dsyncd cluster or an etcd cluster, with the same client code for both.
 *
 * Usage: http_lock_bench dsync|etcd CLIENTS SECONDS distinct|contended HOST:PORT[,HOST:PORT...]
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
#include "common/bench_util.h"
#include "common/http_client.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 4096
#define BACKOFF_MS 10
#define RELEASE_TRIES 3

typedef enum { SYS_DSYNC, SYS_ETCD } lock_system;

typedef struct {
    lock_system sys;
    int id;
    bool contended;
    double deadline;     /* monotonic seconds: no cycle starts after it, none ending after counts */
    const char *run_tag; /* keeps this run's keys and clients apart from earlier runs */
    http_conn conn;
    lat_log *lat; /* latency of each counted cycle */
    long errors;
    /* etcd only */
    const char *prefix; /* "/v3/" or "/v3beta/" once a lease grant found it */
    char lease[32];     /* decimal lease ID; empty when none */
} worker;

/* ---- base64 ---------------------------------------------------------------- */

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

static void run_dsync(worker *w)
{
    char key[96], client[96], acquire[384], release[256], resp[HTTP_BODY_CAP], status_text[32];
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

    while (now_s() < w->deadline && !w->lat->oom) {
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
        if (released) lat_record(w->lat, t0, w->deadline);
    }
}

static const char *const etcd_prefixes[] = {"/v3/", "/v3beta/"};

/* Grants the thread's lease, finding the gateway's prefix on the first call. */
static bool etcd_grant(worker *w)
{
    char path[64], resp[HTTP_BODY_CAP];
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
    char path[64], body[96], resp[HTTP_BODY_CAP];
    int status;
    if (!w->lease[0]) return;
    snprintf(path, sizeof path, "%slease/revoke", w->prefix);
    snprintf(body, sizeof body, "{\"ID\":\"%s\"}", w->lease);
    http_post(&w->conn, path, body, &status, resp, sizeof resp);
    w->lease[0] = '\0';
}

static void run_etcd(worker *w)
{
    char name[96], name64[160], lock_body[384], unlock_body[512], held[320], resp[HTTP_BODY_CAP];
    char lock_path[64], unlock_path[64];
    if (w->contended)
        snprintf(name, sizeof name, "%s-hot", w->run_tag);
    else
        snprintf(name, sizeof name, "%s-key-%d", w->run_tag, w->id);
    base64(name, name64);

    while (now_s() < w->deadline && !w->lat->oom) {
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
            lat_record(w->lat, t0, w->deadline);
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
    http_conn_close(&w->conn);
    return NULL;
}

/* ---- main ---------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: http_lock_bench dsync|etcd CLIENTS SECONDS distinct|contended "
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
    long threads;
    double seconds;
    if (!bench_parse_run("http_lock_bench", argv[2], argv[3], MAX_THREADS, &threads, &seconds))
        return 2;
    bool contended;
    if (strcmp(argv[4], "contended") == 0)
        contended = true;
    else if (strcmp(argv[4], "distinct") == 0)
        contended = false;
    else {
        usage();
        return 2;
    }
    endpoint eps[HTTP_MAX_ENDPOINTS];
    int n_eps;
    if (parse_endpoints("http_lock_bench", argv[5], eps, &n_eps) != 0) return 2;
    signal(SIGPIPE, SIG_IGN);

    char run_tag[48];
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    snprintf(run_tag, sizeof run_tag, "hb%ld-%ld", (long)getpid(), (long)(wall.tv_nsec / 1000));

    worker *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    lat_log *lat = calloc((size_t)threads, sizeof *lat);
    if (!w || !th || !lat) {
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
        w[i].lat = &lat[i];
        http_conn_init(&w[i].conn, &eps[i % n_eps]);
        if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "http_lock_bench: cannot start thread %ld\n", i);
            break;
        }
        started++;
    }
    long errors = 0;
    for (long i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        errors += w[i].errors;
    }
    lat_summary sum;
    if (lat_summarize(lat, (size_t)started, &sum) != 0) {
        fprintf(stderr, "http_lock_bench: out of memory\n");
        return 1;
    }
    printf("%s %s clients=%ld cycles=%zu cycles/s=%.1f p50_ms=%.3f p99_ms=%.3f errors=%ld\n",
           argv[1], argv[4], started, sum.n, (double)sum.n / seconds, sum.p50, sum.p99, errors);
    if (sum.oom) fprintf(stderr, "http_lock_bench: out of memory recording latencies\n");
    free(lat);
    free(w);
    free(th);
    return sum.n > 0 && started == threads ? 0 : 1;
}
