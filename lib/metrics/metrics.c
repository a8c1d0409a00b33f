/*
 * metrics.c: a metric registry rendered in the Prometheus text format 0.0.4.
 *
 * Families and series are created under the registry's mutex; a series
 * handle, once found, is updated with C11 atomics only (a double kept as
 * its bit pattern and changed with compare-and-swap), so counting on a hot
 * path takes no lock and allocates nothing. Histograms keep per-bucket
 * counts; rendering accumulates them, so _count always equals the +Inf
 * bucket.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsync/errors.h"
#include "dsync/metrics.h"
#include "util/util.h"

typedef enum { M_COUNTER, M_GAUGE, M_HISTOGRAM } mtype;

struct dsync_series {
    dsync_series *next; /* creation order */
    dsync_metric *family;
    char **values;
    _Atomic uint64_t value;    /* counter/gauge: double bits; histogram: sum bits */
    _Atomic uint64_t *buckets; /* histogram: n_bounds + 1 counts, not cumulative */
};

struct dsync_metric {
    dsync_metrics *reg;
    char *name;
    char *help;
    mtype type;
    size_t n_labels;
    char *labels[DSYNC_METRIC_MAX_LABELS];
    double *bounds;
    size_t n_bounds;
    dsync_series *first, *last;
    ut_map index; /* joined label values -> series */
};

struct dsync_metrics {
    pthread_mutex_t mu;
    dsync_metric **families;
    size_t n, cap;
};

const double dsync_metrics_latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                               0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                               1,      2.5,     5,      10};
const size_t dsync_metrics_latency_n_bounds =
    sizeof dsync_metrics_latency_bounds / sizeof dsync_metrics_latency_bounds[0];

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void atomic_add_double(_Atomic uint64_t *cell, double delta)
{
    uint64_t old = atomic_load_explicit(cell, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(cell, &old, d2u(u2d(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

dsync_metrics *dsync_metrics_new(void)
{
    dsync_metrics *m = calloc(1, sizeof *m);
    if (m && pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

static void free_series(dsync_series *s, size_t n_labels)
{
    for (size_t i = 0; i < n_labels; i++)
        free(s->values[i]);
    free(s->values);
    free(s->buckets);
    free(s);
}

static void free_family(dsync_metric *f)
{
    for (dsync_series *s = f->first; s;) {
        dsync_series *next = s->next;
        free_series(s, f->n_labels);
        s = next;
    }
    for (size_t i = 0; i < f->n_labels; i++)
        free(f->labels[i]);
    ut_map_close(&f->index);
    free(f->bounds);
    free(f->name);
    free(f->help);
    free(f);
}

void dsync_metrics_free(dsync_metrics *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n; i++)
        free_family(m->families[i]);
    free(m->families);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static bool valid_name(const char *s, bool colon_ok)
{
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_ok && c == ':');
        if (!alpha && !(p > s && c >= '0' && c <= '9')) return false;
    }
    return true;
}

/* Splits "a,b" into label names; -1 when one is invalid or too many. */
static int split_labels(const char *labels, char out[DSYNC_METRIC_MAX_LABELS][64], size_t *n)
{
    *n = 0;
    if (!labels || !*labels) return 0;
    const char *p = labels;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (*n == DSYNC_METRIC_MAX_LABELS || len == 0 || len >= 64) return -1;
        memcpy(out[*n], p, len);
        out[*n][len] = '\0';
        if (!valid_name(out[*n], false) || strncmp(out[*n], "__", 2) == 0) return -1;
        for (size_t i = 0; i < *n; i++)
            if (strcmp(out[i], out[*n]) == 0) return -1;
        (*n)++;
        if (!comma) return 0;
        p = comma + 1;
    }
}

static dsync_metric *register_family(dsync_metrics *m, const char *name, const char *help,
                                     mtype type, const char *labels, const double *bounds,
                                     size_t n_bounds)
{
    char names[DSYNC_METRIC_MAX_LABELS][64];
    size_t n_labels;
    if (!m || !valid_name(name, true) || split_labels(labels, names, &n_labels) != 0) return NULL;
    if (type == M_HISTOGRAM) {
        for (size_t i = 0; i < n_labels; i++)
            if (strcmp(names[i], "le") == 0) return NULL;
        for (size_t i = 0; i < n_bounds; i++)
            if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) return NULL;
    }

    pthread_mutex_lock(&m->mu);
    dsync_metric *f = NULL;
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->families[i]->name, name) != 0) continue;
        f = m->families[i];
        bool same = f->type == type && f->n_labels == n_labels;
        for (size_t j = 0; same && j < n_labels; j++)
            same = strcmp(f->labels[j], names[j]) == 0;
        if (same && type == M_HISTOGRAM)
            same = f->n_bounds == n_bounds &&
                   memcmp(f->bounds, bounds, n_bounds * sizeof *bounds) == 0;
        pthread_mutex_unlock(&m->mu);
        return same ? f : NULL;
    }
    if (m->n == m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 16;
        dsync_metric **nf = realloc(m->families, ncap * sizeof *nf);
        if (!nf) goto oom;
        m->families = nf;
        m->cap = ncap;
    }
    f = calloc(1, sizeof *f);
    if (!f) goto oom;
    f->reg = m;
    f->type = type;
    f->name = ut_strdup(name);
    f->help = ut_strdup(help ? help : "");
    ut_map_init(&f->index);
    bool ok = f->name && f->help;
    for (size_t i = 0; i < n_labels; i++) {
        f->labels[i] = ut_strdup(names[i]);
        ok = ok && f->labels[i];
        f->n_labels = i + 1;
    }
    if (type == M_HISTOGRAM) {
        f->bounds = malloc((n_bounds ? n_bounds : 1) * sizeof *bounds);
        ok = ok && f->bounds;
        if (f->bounds) memcpy(f->bounds, bounds, n_bounds * sizeof *bounds);
        f->n_bounds = n_bounds;
    }
    if (!ok) {
        free_family(f);
        goto oom;
    }
    m->families[m->n++] = f;
    pthread_mutex_unlock(&m->mu);
    return f;
oom:
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

dsync_metric *dsync_metrics_counter(dsync_metrics *m, const char *name, const char *help,
                                    const char *labels)
{
    return register_family(m, name, help, M_COUNTER, labels, NULL, 0);
}

dsync_metric *dsync_metrics_gauge(dsync_metrics *m, const char *name, const char *help,
                                  const char *labels)
{
    return register_family(m, name, help, M_GAUGE, labels, NULL, 0);
}

dsync_metric *dsync_metrics_histogram(dsync_metrics *m, const char *name, const char *help,
                                      const char *labels, const double *bounds, size_t n_bounds)
{
    return register_family(m, name, help, M_HISTOGRAM, labels, bounds, n_bounds);
}

dsync_series *dsync_metric_series(dsync_metric *f, const char *const *values, size_t n_values)
{
    if (!f || n_values != f->n_labels) return NULL;
    /* The lookup key joins the values with a byte no sane label contains;
     * a value holding it still works, it merely cannot collide wrongly
     * because the length of each value is part of the key. */
    char key[1024];
    size_t off = 0;
    for (size_t i = 0; i < n_values; i++) {
        if (!values[i]) return NULL;
        /* "<length>:<value>\x1f", built by hand: the queue looks a topic's
         * series up on every call, and snprintf was most of that. */
        size_t len = strlen(values[i]);
        char digits[20];
        size_t nd = ut_u64_dec(digits, len);
        if (nd + 1 + len + 1 >= sizeof key - off) return NULL;
        memcpy(key + off, digits, nd);
        off += nd;
        key[off++] = ':';
        memcpy(key + off, values[i], len);
        off += len;
        key[off++] = '\x1f';
    }
    key[off] = '\0';

    dsync_metrics *m = f->reg;
    pthread_mutex_lock(&m->mu);
    dsync_series *s = ut_map_get(&f->index, key);
    if (s) {
        pthread_mutex_unlock(&m->mu);
        return s;
    }
    s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->family = f;
    s->values = calloc(n_values ? n_values : 1, sizeof *s->values);
    bool ok = s->values != NULL;
    for (size_t i = 0; ok && i < n_values; i++)
        ok = (s->values[i] = ut_strdup(values[i])) != NULL;
    if (ok && f->type == M_HISTOGRAM)
        ok = (s->buckets = calloc(f->n_bounds + 1, sizeof *s->buckets)) != NULL;
    if (!ok || ut_map_put(&f->index, key, s) != 0) {
        if (s->values)
            free_series(s, n_values);
        else
            free(s);
        goto oom;
    }
    atomic_init(&s->value, d2u(0.0));
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
    pthread_mutex_unlock(&m->mu);
    return s;
oom:
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

dsync_series *dsync_metric_series0(dsync_metric *f)
{
    return dsync_metric_series(f, NULL, 0);
}

dsync_series *dsync_metric_series1(dsync_metric *f, const char *v1)
{
    return dsync_metric_series(f, &v1, 1);
}

dsync_series *dsync_metric_series2(dsync_metric *f, const char *v1, const char *v2)
{
    const char *v[2] = {v1, v2};
    return dsync_metric_series(f, v, 2);
}

void dsync_series_add(dsync_series *s, double delta)
{
    if (!s || s->family->type == M_HISTOGRAM) return;
    if (s->family->type == M_COUNTER && !(delta >= 0)) return; /* counters only go up */
    atomic_add_double(&s->value, delta);
}

void dsync_series_set(dsync_series *s, double value)
{
    if (!s || s->family->type != M_GAUGE) return;
    atomic_store_explicit(&s->value, d2u(value), memory_order_relaxed);
}

void dsync_series_observe(dsync_series *s, double value)
{
    if (!s || s->family->type != M_HISTOGRAM) return;
    const dsync_metric *f = s->family;
    /* le is inclusive: a value equal to a bound belongs to that bucket. */
    size_t lo = 0, hi = f->n_bounds;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (value <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&s->buckets[lo], 1, memory_order_relaxed);
    atomic_add_double(&s->value, value);
}

double dsync_series_value(const dsync_series *s)
{
    if (!s) return 0;
    if (s->family->type != M_HISTOGRAM)
        return u2d(atomic_load_explicit(&((dsync_series *)s)->value, memory_order_relaxed));
    uint64_t count = 0;
    for (size_t i = 0; i <= s->family->n_bounds; i++)
        count += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
    return (double)count;
}

/* ---- rendering ------------------------------------------------------------ */

static void put_number(ut_buf *b, double v)
{
    if (isnan(v))
        ut_buf_puts(b, "NaN");
    else if (isinf(v))
        ut_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        ut_buf_printf(b, "%.0f", v);
    else
        ut_buf_printf(b, "%.17g", v);
}

static void put_escaped(ut_buf *b, const char *s, bool quote_too)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            ut_buf_puts(b, "\\\\");
        else if (*p == '\n')
            ut_buf_puts(b, "\\n");
        else if (quote_too && *p == '"')
            ut_buf_puts(b, "\\\"");
        else
            ut_buf_append(b, p, 1);
    }
}

/* name{l1="v1",...[,le="x"]} */
static void put_series_name(ut_buf *b, const dsync_metric *f, const dsync_series *s,
                            const char *suffix, const char *le)
{
    ut_buf_puts(b, f->name);
    ut_buf_puts(b, suffix);
    if (f->n_labels == 0 && !le) return;
    ut_buf_puts(b, "{");
    for (size_t i = 0; i < f->n_labels; i++) {
        ut_buf_printf(b, "%s%s=\"", i ? "," : "", f->labels[i]);
        put_escaped(b, s->values[i], true);
        ut_buf_puts(b, "\"");
    }
    if (le) ut_buf_printf(b, "%sle=\"%s\"", f->n_labels ? "," : "", le);
    ut_buf_puts(b, "}");
}

static int cmp_family(const void *a, const void *b)
{
    return strcmp((*(dsync_metric *const *)a)->name, (*(dsync_metric *const *)b)->name);
}

static void render_family(ut_buf *b, const dsync_metric *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    ut_buf_printf(b, "# HELP %s ", f->name);
    put_escaped(b, f->help, false);
    ut_buf_printf(b, "\n# TYPE %s %s\n", f->name, types[f->type]);
    for (const dsync_series *s = f->first; s; s = s->next) {
        if (f->type != M_HISTOGRAM) {
            put_series_name(b, f, s, "", NULL);
            ut_buf_puts(b, " ");
            put_number(b, dsync_series_value(s));
            ut_buf_puts(b, "\n");
            continue;
        }
        uint64_t cumulative = 0;
        for (size_t i = 0; i <= f->n_bounds; i++) {
            cumulative += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
            char le[32];
            if (i == f->n_bounds)
                strcpy(le, "+Inf");
            else
                snprintf(le, sizeof le, "%g", f->bounds[i]);
            put_series_name(b, f, s, "_bucket", le);
            ut_buf_printf(b, " %llu\n", (unsigned long long)cumulative);
        }
        put_series_name(b, f, s, "_sum", NULL);
        ut_buf_puts(b, " ");
        put_number(b, u2d(atomic_load_explicit(&((dsync_series *)s)->value, memory_order_relaxed)));
        ut_buf_puts(b, "\n");
        put_series_name(b, f, s, "_count", NULL);
        ut_buf_printf(b, " %llu\n", (unsigned long long)cumulative);
    }
}

int dsync_metrics_render(dsync_metrics *m, char **text, size_t *len)
{
    ut_buf b;
    ut_buf_init(&b);
    pthread_mutex_lock(&m->mu);
    dsync_metric **sorted = malloc((m->n ? m->n : 1) * sizeof *sorted);
    if (!sorted) {
        pthread_mutex_unlock(&m->mu);
        return DSYNC_ENOMEM;
    }
    memcpy(sorted, m->families, m->n * sizeof *sorted);
    qsort(sorted, m->n, sizeof *sorted, cmp_family);
    for (size_t i = 0; i < m->n; i++)
        render_family(&b, sorted[i]);
    pthread_mutex_unlock(&m->mu);
    free(sorted);
    *text = ut_buf_detach(&b, len);
    return *text ? 0 : DSYNC_ENOMEM;
}
