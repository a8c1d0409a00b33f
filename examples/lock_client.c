/*
 * lock_client.c: critical sections under a distributed X lock, with a
 * lease and a fencing token, through a running dsyncd cluster.
 *
 * Build: make (gives bin/lock_client), or
 *        cc lock_client.c $(pkg-config --cflags --libs dsync) -o lock_client
 * Run:   make run                  (a three-node cluster on 8081-8083), then
 *        bin/lock_client           (or -a HOST:PORT,... -w WORKERS -n ROUNDS)
 *
 * WORKERS threads, each with its own client (a dsync_client is one
 * connection, not shared between threads), take turns in a critical
 * section: acquire X on one key with a lease, read-modify-write a counter
 * in a pretend storage service, release. The storage is what the fencing
 * token is for: it remembers the largest token it has seen and refuses a
 * write that carries a smaller one. The second part shows why: a client
 * whose lease ran out while it was paused (a GC pause, a swapped-out
 * process) still believes it holds the lock; its late write is refused.
 *
 * Prints a summary a test can check, ending with "result: ok" (exit 0) or
 * "result: FAILED" (exit 1).
 */
#define _POSIX_C_SOURCE 200809L
#include <dsync.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ADDRS "127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083"
#define MAX_WORKERS 64

/* ---- the pretend storage: a service that only trusts fencing tokens ---- */

typedef struct {
    pthread_mutex_t mu;
    uint64_t highest_token; /* largest token of an accepted write */
    long counter;
    long accepted, rejected;
    bool tokens_increasing; /* every accepted write carried a larger token than the last */
} storage;

static void storage_init(storage *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->tokens_increasing = true;
}

static long storage_read(storage *s)
{
    pthread_mutex_lock(&s->mu);
    long v = s->counter;
    pthread_mutex_unlock(&s->mu);
    return v;
}

/* Accepts the write only if token is not older than one already seen. */
static bool storage_write(storage *s, uint64_t token, long value)
{
    pthread_mutex_lock(&s->mu);
    bool ok = token >= s->highest_token;
    if (ok) {
        if (token == s->highest_token && s->accepted > 0) s->tokens_increasing = false;
        s->highest_token = token;
        s->counter = value;
        s->accepted++;
    } else {
        s->rejected++;
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

/* ---- workers ------------------------------------------------------------ */

static const char *g_addrs = DEFAULT_ADDRS;
static char g_key[96];
static int g_rounds = 20;
static uint64_t g_ttl_ms = 5000;
static storage g_store;
static int g_inside;   /* threads inside the critical section now */
static int g_overlaps; /* times a thread found another one inside */
static pthread_mutex_t g_inside_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct {
    int index;
    int done;   /* critical sections completed */
    int errors; /* calls that failed */
    char last_error[256];
} worker;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void note_error(worker *w, dsync_client *c, const char *what, int rc)
{
    w->errors++;
    snprintf(w->last_error, sizeof w->last_error, "%s: %s (%s)", what, dsync_strerror(rc),
             dsync_client_errmsg(c));
}

/* Acquires X on key, waiting as long as it takes (in steps of 2 s). */
static int acquire_x(dsync_client *c, const char *key, const char *client_id, uint64_t ttl_ms,
                     dsync_lock_result *res)
{
    dsync_lock_request req = {.key = key,
                              .client_id = client_id,
                              .mode = DSYNC_LOCK_EXCLUSIVE,
                              .ttl_ms = ttl_ms,
                              .wait_ms = 2000};
    for (;;) {
        int rc = dsync_client_lock_acquire(c, &req, res);
        if (rc != 0 || res->status != DSYNC_LOCK_WAITING) return rc;
    }
}

/* The address list rotated by k places, so that the workers start on
 * different nodes (any node serves any call). */
static void rotate_list(const char *list, int k, char *out, size_t cap)
{
    const char *start[DSYNC_CLIENT_MAX_NODES];
    int n = 0;
    for (const char *p = list; p && n < DSYNC_CLIENT_MAX_NODES; p = strchr(p, ',')) {
        if (*p == ',') p++;
        start[n++] = p;
    }
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *item = start[(i + k) % n], *end = strchr(item, ',');
        size_t len = strlen(out), item_len = end ? (size_t)(end - item) : strlen(item);
        snprintf(out + len, cap - len, "%s%.*s", i ? "," : "", (int)item_len, item);
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    dsync_client *c;
    char addrs[1024];
    rotate_list(g_addrs, w->index, addrs, sizeof addrs);
    int rc = dsync_client_open(addrs, NULL, &c);
    if (rc != 0) {
        snprintf(w->last_error, sizeof w->last_error, "open: %s", dsync_strerror(rc));
        w->errors++;
        return NULL;
    }
    char client_id[64];
    snprintf(client_id, sizeof client_id, "lock-client-%ld-%d", (long)getpid(), w->index);
    unsigned seed = (unsigned)getpid() + (unsigned)w->index;
    for (int round = 0; round < g_rounds; round++) {
        dsync_lock_result res;
        if ((rc = acquire_x(c, g_key, client_id, g_ttl_ms, &res)) != 0) {
            note_error(w, c, "acquire", rc);
            continue;
        }
        if (res.status != DSYNC_LOCK_GRANTED) { /* a deadlock cannot happen with one key */
            w->errors++;
            continue;
        }
        /* The critical section: nobody else may be in here. */
        pthread_mutex_lock(&g_inside_mu);
        if (g_inside++ > 0) g_overlaps++;
        pthread_mutex_unlock(&g_inside_mu);

        long v = storage_read(&g_store);
        sleep_ms(1 + rand_r(&seed) % 3); /* work that takes a while */
        if (!storage_write(&g_store, res.fencing_token, v + 1)) w->errors++;

        pthread_mutex_lock(&g_inside_mu);
        g_inside--;
        pthread_mutex_unlock(&g_inside_mu);

        if ((rc = dsync_client_lock_release(c, g_key, client_id, NULL)) != 0)
            note_error(w, c, "release", rc);
        else
            w->done++;
    }
    dsync_client_close(c);
    return NULL;
}

/* ---- a paused holder whose lease ran out ------------------------------- */

/* Returns true when the late write of the paused client was refused. */
static bool stale_holder_is_fenced(const char *key, bool *ok)
{
    storage s;
    storage_init(&s);
    dsync_client *slow, *fast;
    char slow_id[64], fast_id[64];
    snprintf(slow_id, sizeof slow_id, "slow-%ld", (long)getpid());
    snprintf(fast_id, sizeof fast_id, "fast-%ld", (long)getpid());
    *ok = false;
    if (dsync_client_open(g_addrs, NULL, &slow) != 0) return false;
    if (dsync_client_open(g_addrs, NULL, &fast) != 0) {
        dsync_client_close(slow);
        return false;
    }
    bool refused = false;
    dsync_lock_result a, b;
    /* slow takes the lock with a 300 ms lease ... */
    if (acquire_x(slow, key, slow_id, 300, &a) != 0 || a.status != DSYNC_LOCK_GRANTED) goto out;
    printf("slow holder: granted, fencing token %" PRIu64 ", lease 300 ms; now it pauses\n",
           a.fencing_token);
    /* ... and stalls; fast waits for the lock, which frees when the lease ends. */
    if (acquire_x(fast, key, fast_id, 5000, &b) != 0 || b.status != DSYNC_LOCK_GRANTED) goto out;
    printf("fast holder: granted after the lease ended, fencing token %" PRIu64 "\n",
           b.fencing_token);
    bool fast_ok = storage_write(&s, b.fencing_token, 1);
    /* slow wakes up, believes it still holds the lock, and writes. */
    refused = !storage_write(&s, a.fencing_token, 2);
    printf("slow holder wakes and writes with token %" PRIu64 ": %s\n", a.fencing_token,
           refused ? "rejected by the storage" : "ACCEPTED (stale write!)");
    int rc = dsync_client_lock_release(slow, key, slow_id, NULL);
    printf("slow holder's release: %s\n",
           rc == DSYNC_ENOTFOUND ? "not held any more (its lease ended)" : dsync_strerror(rc));
    dsync_client_lock_release(fast, key, fast_id, NULL);
    *ok = fast_ok && b.fencing_token > a.fencing_token;
out:
    dsync_client_close(slow);
    dsync_client_close(fast);
    pthread_mutex_destroy(&s.mu);
    return refused;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: lock_client [-a HOST:PORT,...] [-w WORKERS] [-n ROUNDS] [-t TTL_MS]\n"
               "  -a  dsyncd nodes (default " DEFAULT_ADDRS ")\n"
               "  -w  worker threads (default 4), -n critical sections each (default 20)\n"
               "  -t  lease of each grant in ms (default 5000)\n");
}

int main(int argc, char **argv)
{
    int workers = 4;
    for (int i = 1; i < argc; i++) {
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "-a") == 0 && next) {
            g_addrs = argv[++i];
        } else if (strcmp(argv[i], "-w") == 0 && next) {
            workers = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-n") == 0 && next) {
            g_rounds = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-t") == 0 && next) {
            g_ttl_ms = strtoull(argv[++i], NULL, 10);
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (workers < 1 || workers > MAX_WORKERS || g_rounds < 1 || g_ttl_ms < 100) {
        usage(stderr);
        return 2;
    }
    /* Keys of earlier runs may still have leases running: a key of our own. */
    snprintf(g_key, sizeof g_key, "lock-client-demo-%ld", (long)getpid());
    storage_init(&g_store);
    printf("lock_client: %d workers x %d critical sections on \"%s\" via %s\n", workers, g_rounds,
           g_key, g_addrs);

    pthread_t th[MAX_WORKERS];
    worker w[MAX_WORKERS];
    int started = 0;
    for (int i = 0; i < workers; i++) {
        w[i] = (worker){.index = i};
        if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0) break;
        started++;
    }
    int done = 0, errors = workers - started;
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        done += w[i].done;
        errors += w[i].errors;
        if (w[i].last_error[0]) fprintf(stderr, "worker %d: %s\n", i, w[i].last_error);
    }
    long expected = (long)workers * g_rounds;
    printf("critical sections: %d of %ld, counter: %ld (expected %ld)\n", done, expected,
           g_store.counter, expected);
    printf("overlapping critical sections: %d\n", g_overlaps);
    printf("writes refused by the storage: %ld\n", g_store.rejected);
    printf("errors: %d\n", errors);
    printf("tokens strictly increasing: %s\n", g_store.tokens_increasing ? "yes" : "no");

    char stale_key[120];
    snprintf(stale_key, sizeof stale_key, "%s-lease", g_key);
    bool stale_ok = false;
    bool fenced = stale_holder_is_fenced(stale_key, &stale_ok);
    printf("stale write after the lease ended rejected: %s\n", fenced && stale_ok ? "yes" : "no");

    bool ok = done == expected && g_store.counter == expected && g_overlaps == 0 &&
              g_store.rejected == 0 && errors == 0 && g_store.tokens_increasing && fenced &&
              stale_ok;
    printf("result: %s\n", ok ? "ok" : "FAILED");
    pthread_mutex_destroy(&g_store.mu);
    return ok ? 0 : 1;
}
