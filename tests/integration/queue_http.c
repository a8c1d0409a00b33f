/*
 * queue_http.c: the queue calls over HTTP that the integration tests share,
 * and the workload of many producers and consumers in parallel (harness.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"

long long h_enqueue(const h_node *n, const char *topic, long long value)
{
    int st;
    json_t *j = h_post(n, "/queue/enqueue", &st, "{\"topic\":\"%s\",\"message\":{\"v\":%lld}}",
                       topic, value);
    long long id = st == 200 ? (long long)json_integer_value(json_object_get(j, "id")) : -st;
    json_decref(j);
    return id;
}

long long h_enqueue_retrying(const h_node *n, const char *topic, long long value,
                             int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms, id;
    while ((id = h_enqueue(n, topic, value)) == -503 && h_now_ms() < deadline)
        usleep(20000);
    return id;
}

json_t *h_consume(const h_node *n, const char *topic, int max, int visibility_ms, int wait_ms,
                  int *status)
{
    json_t *a = h_post(n, "/queue/consume", status,
                       "{\"topic\":\"%s\",\"consumer_id\":\"c\",\"max\":%d,\"visibility_ms\":%d,"
                       "\"wait_ms\":%d}",
                       topic, max, visibility_ms, wait_ms);
    if (*status != 200) {
        json_decref(a);
        return NULL;
    }
    return a;
}

int h_ack(const h_node *n, const char *topic, const char *receipt)
{
    int st;
    json_decref(
        h_post(n, "/queue/ack", &st, "{\"topic\":\"%s\",\"receipt\":\"%s\"}", topic, receipt));
    return st;
}

/* ---- producers and consumers in parallel ---------------------------------- */

typedef struct {
    const h_node *n;
    const char *prefix;
    int topics, per_producer, per_topic;
    int id;       /* producers: values are id * 1000000 + i */
    int *acked;   /* consumers: [topic * (per_topic + 1) + message id] */
    int duplicates;
} mix_worker;

static void *produce(void *p)
{
    mix_worker *w = p;
    char topic[64];
    for (int i = 0; i < w->per_producer; i++) {
        snprintf(topic, sizeof topic, "%s%d", w->prefix, i % w->topics);
        assert_true(h_enqueue_retrying(w->n, topic, (long long)w->id * 1000000 + i, 15000) > 0);
    }
    return NULL;
}

static void *consume_all(void *p)
{
    mix_worker *w = p;
    char topic[64];
    long long deadline = h_now_ms() + 30000;
    int idle = 0;
    while (h_now_ms() < deadline && idle < 15) {
        bool got_any = false;
        for (int t = 0; t < w->topics; t++) {
            snprintf(topic, sizeof topic, "%s%d", w->prefix, t);
            int st;
            json_t *a = h_consume(w->n, topic, 10, 30000, 0, &st);
            assert_int_equal(st, 200);
            size_t i;
            json_t *m;
            json_array_foreach(json_object_get(a, "messages"), i, m)
            {
                long long id = json_integer_value(json_object_get(m, "id"));
                assert_true(id >= 1 && id <= w->per_topic);
                int *count = &w->acked[t * (w->per_topic + 1) + id];
                if (*count) w->duplicates++;
                (*count)++;
                const char *receipt = json_string_value(json_object_get(m, "receipt"));
                assert_int_equal(h_ack(w->n, topic, receipt), 200);
                got_any = true;
            }
            json_decref(a);
        }
        idle = got_any ? 0 : idle + 1;
        if (!got_any) usleep(20000);
    }
    return NULL;
}

void h_queue_mix(const char *prefix, int topics, const h_node *const *producers, int n_producers,
                 int per_producer, const h_node *const *consumers, int n_consumers)
{
    assert_int_equal(n_producers * per_producer % topics, 0);
    int per_topic = n_producers * per_producer / topics;
    mix_worker *w = calloc((size_t)(n_producers + n_consumers), sizeof *w);
    pthread_t *th = calloc((size_t)(n_producers + n_consumers), sizeof *th);
    assert_non_null(w);
    assert_non_null(th);
    for (int i = 0; i < n_producers + n_consumers; i++) {
        bool producer = i >= n_consumers;
        w[i] = (mix_worker){.n = producer ? producers[i - n_consumers] : consumers[i],
                            .prefix = prefix,
                            .topics = topics,
                            .per_producer = per_producer,
                            .per_topic = per_topic,
                            .id = i - n_consumers + 1};
        if (!producer) {
            w[i].acked = calloc((size_t)(topics * (per_topic + 1)), sizeof *w[i].acked);
            assert_non_null(w[i].acked);
        }
    }
    /* Consumers first, so messages are taken while others still arrive. */
    for (int i = 0; i < n_producers + n_consumers; i++)
        assert_int_equal(pthread_create(&th[i], NULL, i < n_consumers ? consume_all : produce, &w[i]),
                         0);
    for (int i = 0; i < n_producers + n_consumers; i++)
        pthread_join(th[i], NULL);
    for (int t = 0; t < topics; t++)
        for (int id = 1; id <= per_topic; id++) {
            int total = 0;
            for (int i = 0; i < n_consumers; i++)
                total += w[i].acked[t * (per_topic + 1) + id];
            if (total != 1) fail_msg("%s%d: message %d acked %d times", prefix, t, id, total);
        }
    for (int i = 0; i < n_consumers; i++) {
        assert_int_equal(w[i].duplicates, 0);
        free(w[i].acked);
    }
    free(w);
    free(th);
}
