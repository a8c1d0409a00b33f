/*
 * test_metrics.c: the metric registry and its Prometheus text rendering.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dsync/errors.h"
#include "dsync/metrics.h"

static char *render(dsync_metrics *m)
{
    char *text;
    size_t len;
    assert_int_equal(dsync_metrics_render(m, &text, &len), 0);
    assert_int_equal(strlen(text), len);
    return text;
}

static void test_a_labelled_counter_renders_exactly(void **state)
{
    dsync_metrics *m = dsync_metrics_new();
    dsync_metric *f = dsync_metrics_counter(m, "locks_acquire_total", "Acquires.", "mode,result");
    assert_non_null(f);
    dsync_series_add(dsync_metric_series2(f, "S", "ok"), 3);
    dsync_series_add(dsync_metric_series2(f, "X", "wait"), 0.5);
    dsync_series_add(dsync_metric_series2(f, "S", "ok"), 1);
    char *text = render(m);
    assert_string_equal(text, "# HELP locks_acquire_total Acquires.\n"
                              "# TYPE locks_acquire_total counter\n"
                              "locks_acquire_total{mode=\"S\",result=\"ok\"} 4\n"
                              "locks_acquire_total{mode=\"X\",result=\"wait\"} 0.5\n");
    free(text);
    dsync_metrics_free(m);
}

static void test_counters_refuse_to_go_down_and_gauges_do_not(void **state)
{
    dsync_metrics *m = dsync_metrics_new();
    dsync_series *c = dsync_metric_series0(dsync_metrics_counter(m, "c_total", "", NULL));
    dsync_series *g = dsync_metric_series0(dsync_metrics_gauge(m, "g", "", NULL));
    dsync_series_add(c, 2);
    dsync_series_add(c, -1);
    dsync_series_set(c, 100); /* set is for gauges only */
    assert_true(dsync_series_value(c) == 2);
    dsync_series_set(g, 10);
    dsync_series_add(g, -12.5);
    assert_true(dsync_series_value(g) == -2.5);
    dsync_series_add(NULL, 1); /* a NULL handle is a no-op */
    char *text = render(m);
    assert_non_null(strstr(text, "\nc_total 2\n"));
    assert_non_null(strstr(text, "\ng -2.5\n"));
    free(text);
    dsync_metrics_free(m);
}

static void test_histogram_buckets_are_cumulative_and_le_is_inclusive(void **state)
{
    dsync_metrics *m = dsync_metrics_new();
    const double bounds[] = {0.1, 1, 10};
    dsync_metric *f = dsync_metrics_histogram(m, "lat_seconds", "Latency.", "path", bounds, 3);
    dsync_series *s = dsync_metric_series1(f, "/x");
    dsync_series_observe(s, 0.1); /* equal to a bound: that bucket */
    dsync_series_observe(s, 0.5);
    dsync_series_observe(s, 1);
    dsync_series_observe(s, 50);
    char *text = render(m);
    assert_string_equal(text, "# HELP lat_seconds Latency.\n"
                              "# TYPE lat_seconds histogram\n"
                              "lat_seconds_bucket{path=\"/x\",le=\"0.1\"} 1\n"
                              "lat_seconds_bucket{path=\"/x\",le=\"1\"} 3\n"
                              "lat_seconds_bucket{path=\"/x\",le=\"10\"} 3\n"
                              "lat_seconds_bucket{path=\"/x\",le=\"+Inf\"} 4\n"
                              "lat_seconds_sum{path=\"/x\"} 51.600000000000001\n"
                              "lat_seconds_count{path=\"/x\"} 4\n");
    free(text);
    dsync_metrics_free(m);
}

static void test_label_values_and_help_are_escaped(void **state)
{
    dsync_metrics *m = dsync_metrics_new();
    dsync_metric *f = dsync_metrics_counter(m, "e_total", "line\\one\ntwo", "v");
    dsync_series_add(dsync_metric_series1(f, "a\"b\\c\nd"), 1);
    char *text = render(m);
    assert_non_null(strstr(text, "# HELP e_total line\\\\one\\ntwo\n"));
    assert_non_null(strstr(text, "e_total{v=\"a\\\"b\\\\c\\nd\"} 1\n"));
    free(text);
    dsync_metrics_free(m);
}

static void test_invalid_names_and_clashes_are_refused(void **state)
{
    dsync_metrics *m = dsync_metrics_new();
    const double ok_bounds[] = {1, 2};
    const double bad_bounds[] = {2, 1};
    assert_null(dsync_metrics_counter(m, "9lives", "", NULL));
    assert_null(dsync_metrics_counter(m, "has-dash", "", NULL));
    assert_null(dsync_metrics_counter(m, "", "", NULL));
    assert_null(dsync_metrics_counter(m, "x", "", "bad-label"));
    assert_null(dsync_metrics_counter(m, "x", "", "__reserved"));
    assert_null(dsync_metrics_counter(m, "x", "", "a,a"));
    assert_null(dsync_metrics_counter(m, "x", "", "a,b,c,d,e"));
    assert_null(dsync_metrics_histogram(m, "h", "", "le", ok_bounds, 2));
    assert_null(dsync_metrics_histogram(m, "h", "", NULL, bad_bounds, 2));
    assert_non_null(dsync_metrics_counter(m, "ns:name_total", "", NULL));

    dsync_metric *a = dsync_metrics_counter(m, "same_total", "first", "k");
    assert_ptr_equal(dsync_metrics_counter(m, "same_total", "second", "k"), a);
    assert_null(dsync_metrics_gauge(m, "same_total", "", "k"));
    assert_null(dsync_metrics_counter(m, "same_total", "", "other"));
    /* Wrong number of label values. */
    assert_null(dsync_metric_series0(a));
    assert_null(dsync_metric_series2(a, "x", "y"));
    assert_ptr_equal(dsync_metric_series1(a, "x"), dsync_metric_series1(a, "x"));

    /* Series are told apart by every value whole, wherever the values
     * split, and at any length the lookup key holds (1,023 bytes: a value
     * of 1,017 with its length "1017", ':' and the separator). */
    dsync_metric *two = dsync_metrics_counter(m, "two_total", "", "a,b");
    dsync_series *ab_c = dsync_metric_series2(two, "ab", "c");
    dsync_series *a_bc = dsync_metric_series2(two, "a", "bc");
    dsync_series *e_abc = dsync_metric_series2(two, "", "abc");
    assert_non_null(ab_c);
    assert_non_null(a_bc);
    assert_non_null(e_abc);
    assert_ptr_not_equal(ab_c, a_bc);
    assert_ptr_not_equal(a_bc, e_abc);
    assert_ptr_equal(dsync_metric_series2(two, "ab", "c"), ab_c);
    char longest[1018], too_long[1019];
    memset(longest, 'v', sizeof longest - 1);
    longest[sizeof longest - 1] = '\0';
    memset(too_long, 'v', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = '\0';
    dsync_series *l = dsync_metric_series1(a, longest);
    assert_non_null(l);
    assert_ptr_equal(dsync_metric_series1(a, longest), l);
    assert_null(dsync_metric_series1(a, too_long));
    dsync_metrics_free(m);
}

static void test_families_render_sorted_by_name(void **state)
{
    dsync_metrics *m = dsync_metrics_new();
    dsync_metric_series0(dsync_metrics_gauge(m, "zeta", "", NULL));
    dsync_metric_series0(dsync_metrics_gauge(m, "alpha", "", NULL));
    dsync_metric_series0(dsync_metrics_gauge(m, "mid", "", NULL));
    char *text = render(m);
    char *a = strstr(text, "# TYPE alpha"), *b = strstr(text, "# TYPE mid"),
         *c = strstr(text, "# TYPE zeta");
    assert_true(a && b && c && a < b && b < c);
    free(text);
    dsync_metrics_free(m);
}

typedef struct {
    dsync_metric *counter;
    dsync_metric *hist;
    dsync_metrics *reg;
    int render;
} thread_arg;

static void *hammer(void *p)
{
    thread_arg *a = p;
    if (a->render) {
        for (int i = 0; i < 200; i++) {
            char *text;
            size_t len;
            if (dsync_metrics_render(a->reg, &text, &len) == 0) free(text);
        }
        return NULL;
    }
    /* Looking the series up each time exercises creation races too. */
    for (int i = 0; i < 100000; i++) {
        dsync_series_add(dsync_metric_series1(a->counter, i % 2 ? "odd" : "even"), 1);
        dsync_series_observe(dsync_metric_series0(a->hist), 0.001);
    }
    return NULL;
}

static void test_concurrent_updates_lose_nothing(void **state)
{
    dsync_metrics *m = dsync_metrics_new();
    thread_arg a = {dsync_metrics_counter(m, "n_total", "", "parity"),
                    dsync_metrics_histogram(m, "h_seconds", "", NULL, dsync_metrics_latency_bounds,
                                            dsync_metrics_latency_n_bounds),
                    m, 0};
    thread_arg r = a;
    r.render = 1;
    pthread_t th[5];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, hammer, &a);
    pthread_create(&th[4], NULL, hammer, &r);
    for (int i = 0; i < 5; i++)
        pthread_join(th[i], NULL);
    assert_true(dsync_series_value(dsync_metric_series1(a.counter, "odd")) == 200000);
    assert_true(dsync_series_value(dsync_metric_series1(a.counter, "even")) == 200000);
    assert_true(dsync_series_value(dsync_metric_series0(a.hist)) == 400000);
    dsync_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_labelled_counter_renders_exactly),
        cmocka_unit_test(test_counters_refuse_to_go_down_and_gauges_do_not),
        cmocka_unit_test(test_histogram_buckets_are_cumulative_and_le_is_inclusive),
        cmocka_unit_test(test_label_values_and_help_are_escaped),
        cmocka_unit_test(test_invalid_names_and_clashes_are_refused),
        cmocka_unit_test(test_families_render_sorted_by_name),
        cmocka_unit_test(test_concurrent_updates_lose_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
