/*
 * lock_bench.c: acquire+release cycles per second through the library.
 *
 * Usage: lock_bench THREADS SECONDS DATA_DIR|- [distinct|contended]
 * Each thread is one client taking an X lock and releasing it, on its own
 * key (distinct) or on one shared key with blocking waits (contended).
 * DATA_DIR "-" runs memory-only; otherwise every write is fsynced to the
 * log before it is answered (group commit shares one fsync per loop turn).
 * Prints one line: cycles/s and latency percentiles of a whole cycle.
 */
#include "common/bench_util.h"

#include <dsync.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    dsync_node *node;
    int id;
    int contended;
    double seconds;
    double *lat; /* per-cycle latency, ms */
    size_t n, cap;
    int errors;
} worker;

static void *run(void *p)
{
    worker *w = p;
    char key[32], client[32];
    snprintf(key, sizeof key, w->contended ? "hot" : "key-%d", w->id);
    snprintf(client, sizeof client, "client-%d", w->id);
    dsync_lock_request req = {key, client, DSYNC_LOCK_EXCLUSIVE, 10000, 10000};
    double end = now_s() + w->seconds;
    while (now_s() < end) {
        double t0 = now_s();
        dsync_lock_result res;
        if (dsync_lock_acquire(w->node, &req, &res) != 0 || res.status != DSYNC_LOCK_GRANTED ||
            dsync_lock_release(w->node, key, client, NULL) != 0) {
            w->errors++;
            continue;
        }
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->lat = realloc(w->lat, w->cap * sizeof *w->lat);
        }
        w->lat[w->n++] = (now_s() - t0) * 1000;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: lock_bench THREADS SECONDS DATA_DIR|- [distinct|contended]\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    double seconds = atof(argv[2]);
    int contended = argc > 4 && strcmp(argv[4], "contended") == 0;
    dsync_config cfg;
    dsync_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", strcmp(argv[3], "-") ? argv[3] : "");
    dsync_node *node;
    int rc = dsync_node_open(&cfg, &node);
    if (rc != 0) {
        fprintf(stderr, "lock_bench: open: %s\n", dsync_strerror(rc));
        return 1;
    }
    worker *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    double start = now_s();
    for (int i = 0; i < threads; i++) {
        w[i] = (worker){node, i, contended, seconds, NULL, 0, 0, 0};
        pthread_create(&th[i], NULL, run, &w[i]);
    }
    size_t total = 0;
    int errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        total += w[i].n;
        errors += w[i].errors;
    }
    double elapsed = now_s() - start;
    double *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < threads; i++) {
        memcpy(all + k, w[i].lat, w[i].n * sizeof *all);
        k += w[i].n;
        free(w[i].lat);
    }
    qsort(all, total, sizeof *all, cmp_double);
    double p50 = total ? all[total / 2] : 0, p99 = total ? all[(size_t)(total * 0.99)] : 0;
    printf("lock cycles: threads=%d keys=%s store=%s  %.0f cycles/s  p50 %.3f ms  p99 %.3f ms"
           "  errors %d\n",
           threads, contended ? "one" : "distinct", cfg.data_dir[0] ? "fsync" : "memory",
           (double)total / elapsed, p50, p99, errors);
    free(all);
    free(w);
    free(th);
    dsync_node_close(node);
    return errors ? 1 : 0;
}
