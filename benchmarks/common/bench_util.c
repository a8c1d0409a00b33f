/*
 * bench_util.c: timing and latency helpers shared by the benchmark programs;
 * see bench_util.h.
 */
#include "bench_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void lat_record(lat_log *l, double t0, double deadline)
{
    double t1 = now_s();
    if (t1 > deadline) return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        double *ms = realloc(l->ms, cap * sizeof *ms);
        if (!ms) {
            l->oom = true;
            return;
        }
        l->ms = ms;
        l->cap = cap;
    }
    l->ms[l->n++] = (t1 - t0) * 1000;
}

int lat_summarize(lat_log *logs, size_t count, lat_summary *out)
{
    size_t total = 0;
    bool oom = false;
    for (size_t i = 0; i < count; i++) {
        total += logs[i].n;
        oom |= logs[i].oom;
    }
    double *all = malloc((total ? total : 1) * sizeof *all);
    if (!all) return -1;
    size_t k = 0;
    for (size_t i = 0; i < count; i++) {
        if (logs[i].n) memcpy(all + k, logs[i].ms, logs[i].n * sizeof *all);
        k += logs[i].n;
        free(logs[i].ms);
        logs[i] = (lat_log){0};
    }
    qsort(all, total, sizeof *all, cmp_double);
    out->n = total;
    out->p50 = total ? all[(total - 1) / 2] : 0;
    out->p99 = total ? all[(size_t)((double)(total - 1) * 0.99)] : 0;
    out->oom = oom;
    free(all);
    return 0;
}

bool bench_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool bench_parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v > 0 && v <= 86400)) return false;
    *out = v;
    return true;
}

bool bench_parse_run(const char *prog, const char *clients, const char *seconds, long max_clients,
                     long *n_clients, double *n_seconds)
{
    if (!bench_parse_long(clients, 1, max_clients, n_clients)) {
        fprintf(stderr, "%s: CLIENTS must be 1..%ld\n", prog, max_clients);
        return false;
    }
    if (!bench_parse_seconds(seconds, n_seconds)) {
        fprintf(stderr, "%s: SECONDS must be a positive number\n", prog);
        return false;
    }
    return true;
}
