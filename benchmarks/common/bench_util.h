/*
 * bench_util.h: timing and latency helpers shared by the benchmark programs
 * (lock_bench, http_lock_bench, queue_bench): a monotonic clock, a sleep that
 * survives signals, and per-worker latency logs with their percentiles.
 */
#ifndef DSYNC_BENCH_UTIL_H
#define DSYNC_BENCH_UTIL_H

#include <stdbool.h>
#include <stddef.h>

/* Monotonic seconds. */
double now_s(void);

/* Sleeps ms milliseconds, resuming after a signal. */
void sleep_ms(int ms);

/* qsort comparator for doubles, ascending. */
int cmp_double(const void *a, const void *b);

/* The latencies one worker measured, in ms. Zero-initialise; lat_summarize frees them. */
typedef struct {
    double *ms;
    size_t n, cap;
    bool oom; /* set when the log could not grow: later latencies are lost */
} lat_log;

/* Records now_s() - t0, unless now is past deadline (ended after the window: not counted). */
void lat_record(lat_log *l, double t0, double deadline);

/* What the latency logs of a run add up to. */
typedef struct {
    size_t n;        /* latencies counted */
    double p50, p99; /* ms: the values at index floor((n - 1) * q) of them sorted; 0 when n is 0 */
    bool oom;        /* some log could not grow */
} lat_summary;

/* Merges count logs into *out and frees their latencies; -1 when out of
 * memory for the merge. */
int lat_summarize(lat_log *logs, size_t count, lat_summary *out);

/* Command-line numbers: a whole decimal long in [lo, hi], or seconds in
 * (0, 86400]; false for anything else (trailing junk included). */
bool bench_parse_long(const char *s, long lo, long hi, long *out);
bool bench_parse_seconds(const char *s, double *out);
/* The CLIENTS (1..max_clients) and SECONDS of a run's command line; false
 * after telling stderr, in prog's name, which one is wrong. */
bool bench_parse_run(const char *prog, const char *clients, const char *seconds, long max_clients,
                     long *n_clients, double *n_seconds);

#endif
