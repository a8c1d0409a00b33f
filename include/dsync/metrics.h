/*
 * metrics.h: counters, gauges and histograms with labels, rendered in the
 * Prometheus text exposition format 0.0.4.
 *
 * A registry holds metric families; a family holds one series per distinct
 * tuple of label values. Look a series up once (dsync_metric_series) and
 * keep the handle: updating through it takes no lock and no allocation.
 * Every call is safe from any thread. Handles live as long as the registry.
 */
#ifndef DSYNC_METRICS_H
#define DSYNC_METRICS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsync_metrics dsync_metrics; /* a registry */
typedef struct dsync_metric dsync_metric;   /* a family: name, help, type, label names */
typedef struct dsync_series dsync_series;   /* one labelled series of a family */

#define DSYNC_METRIC_MAX_LABELS 4

dsync_metrics *dsync_metrics_new(void);
void dsync_metrics_free(dsync_metrics *m);

/*
 * Registers a family, or returns the one registered under name when its
 * type and labels match. labels is a comma-separated list of label names
 * ("mode,result"), or NULL/"" for none. Returns NULL on an invalid name,
 * a clash with an existing family, or out of memory.
 */
dsync_metric *dsync_metrics_counter(dsync_metrics *m, const char *name, const char *help,
                                    const char *labels);
dsync_metric *dsync_metrics_gauge(dsync_metrics *m, const char *name, const char *help,
                                  const char *labels);
/* bounds: the upper bounds of the buckets, strictly increasing; +Inf is added. */
dsync_metric *dsync_metrics_histogram(dsync_metrics *m, const char *name, const char *help,
                                      const char *labels, const double *bounds, size_t n_bounds);

/* Default latency buckets in seconds, 100 us .. 10 s. */
extern const double dsync_metrics_latency_bounds[];
extern const size_t dsync_metrics_latency_n_bounds;

/*
 * The series for these label values (one per label name, in order), made on
 * first use. NULL on out of memory or a wrong count of values.
 */
dsync_series *dsync_metric_series(dsync_metric *f, const char *const *values, size_t n_values);
/* Shorthands for families with 0, 1 or 2 labels. */
dsync_series *dsync_metric_series0(dsync_metric *f);
dsync_series *dsync_metric_series1(dsync_metric *f, const char *v1);
dsync_series *dsync_metric_series2(dsync_metric *f, const char *v1, const char *v2);

/* Counter: add delta (>= 0). Gauge: add delta (any sign). NULL is ignored. */
void dsync_series_add(dsync_series *s, double delta);
/* Gauge: set. */
void dsync_series_set(dsync_series *s, double value);
/* Histogram: record one observation. */
void dsync_series_observe(dsync_series *s, double value);
/* Current value of a counter or gauge; the count of a histogram. */
double dsync_series_value(const dsync_series *s);

/* Renders every family, sorted by name, series in creation order. *text is
 * malloc'ed, NUL-terminated, freed by the caller. */
int dsync_metrics_render(dsync_metrics *m, char **text, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
