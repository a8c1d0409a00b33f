/*
 * test_integ_queue.c: the queue over HTTP on real dsyncd processes.
 *
 * One node with its local queue file: producers and consumers in
 * parallel on several topics (every message acked exactly once in the
 * end), visibility expiry and redelivery, dead letters, long polling,
 * kill -9 and restart losing nothing acknowledged, and every kind of bad
 * input. Three nodes: topics spread over their owners, any node serves any
 * topic, and a stalling disk under the queue files stalls no lock call.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"

static const char *const node_env[] = {
    "DSYNC_QUEUE_MAX_DELIVERIES=2",
    NULL,
};

static int setup(void **state)
{
    *state = h_node_new(node_env);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    return h_node_free(*state);
}

/* A consume that must answer 200: its messages; *answer is the whole
 * answer, for the caller to decref. */
static json_t *consume(const h_node *n, const char *topic, int max, int visibility_ms, int wait_ms,
                       json_t **answer)
{
    int st;
    *answer = h_consume(n, topic, max, visibility_ms, wait_ms, &st);
    assert_int_equal(st, 200);
    json_t *msgs = json_object_get(*answer, "messages");
    assert_true(json_is_array(msgs));
    return msgs;
}

static void test_fifo_delivery_ack_and_redelivery_after_the_visibility_runs_out(void **state)
{
    h_node *n = *state;
    for (int i = 1; i <= 3; i++)
        assert_int_equal(h_enqueue(n, "orders", i), i);
    json_t *a;
    json_t *msgs = consume(n, "orders", 2, 300, 0, &a);
    assert_int_equal(json_array_size(msgs), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(msgs, 0), "id")), 1);
    assert_int_equal(json_integer_value(
                         json_object_get(json_object_get(json_array_get(msgs, 1), "message"), "v")),
                     2);
    char r1[64];
    snprintf(r1, sizeof r1, "%s",
             json_string_value(json_object_get(json_array_get(msgs, 0), "receipt")));
    json_decref(a);
    assert_int_equal(h_ack(n, "orders", r1), 200);
    assert_int_equal(h_ack(n, "orders", r1), 404); /* once */
    assert_int_equal(h_metric(n, "queue_depth{topic=\"orders\"}"), 1);
    assert_int_equal(h_metric(n, "queue_in_flight{topic=\"orders\"}"), 1);

    /* Message 2 was not acked: once its visibility ran out (the node
     * counts the requeue), it comes back ahead of message 3, with its
     * delivery count raised. */
    long long deadline = h_now_ms() + 5000;
    while (h_metric(n, "queue_requeued_total{topic=\"orders\"}") < 1 && h_now_ms() < deadline)
        usleep(20000);
    /* The gauges follow the requeue itself, with no call on the topic. */
    assert_int_equal(h_metric(n, "queue_depth{topic=\"orders\"}"), 2);
    assert_int_equal(h_metric(n, "queue_in_flight{topic=\"orders\"}"), 0);
    msgs = consume(n, "orders", 1, 30000, 0, &a);
    assert_int_equal(json_array_size(msgs), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(msgs, 0), "id")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(msgs, 0), "deliveries")), 2);
    json_decref(a);
    assert_true(h_metric(n, "queue_requeued_total{topic=\"orders\"}") >= 1);
}

static void test_a_message_delivered_too_often_moves_to_the_dead_letter_topic(void **state)
{
    h_node *n = *state;
    assert_int_equal(h_enqueue(n, "poison", 7), 1);
    json_t *a;
    /* DSYNC_QUEUE_MAX_DELIVERIES=2: two deliveries without an ack. */
    for (int i = 0; i < 2; i++) {
        long long deadline = h_now_ms() + 5000;
        size_t got = 0;
        while (!got && h_now_ms() < deadline) {
            json_t *msgs = consume(n, "poison", 1, 100, 0, &a);
            got = json_array_size(msgs);
            json_decref(a);
            if (!got) usleep(20000);
        }
        assert_int_equal(got, 1);
    }
    long long deadline = h_now_ms() + 5000;
    size_t got = 0;
    while (!got && h_now_ms() < deadline) {
        json_t *msgs = consume(n, "poison.dlq", 1, 30000, 0, &a);
        got = json_array_size(msgs);
        if (got) {
            json_t *m = json_array_get(msgs, 0);
            assert_int_equal(json_integer_value(json_object_get(m, "origin_id")), 1);
            assert_int_equal(
                json_integer_value(json_object_get(json_object_get(m, "message"), "v")), 7);
        }
        json_decref(a);
        if (!got) usleep(20000);
    }
    assert_int_equal(got, 1);
    json_t *msgs = consume(n, "poison", 1, 100, 0, &a);
    assert_int_equal(json_array_size(msgs), 0);
    json_decref(a);
    assert_int_equal(h_metric(n, "queue_dead_lettered_total{topic=\"poison\"}"), 1);
}

static void test_a_long_poll_returns_as_soon_as_a_message_arrives(void **state)
{
    h_node *n = *state;
    json_t *a;
    long long start = h_now_ms();
    json_t *msgs = consume(n, "quiet", 1, 1000, 300, &a);
    assert_int_equal(json_array_size(msgs), 0);
    assert_true(h_now_ms() - start >= 250);
    json_decref(a);
    /* A producer in another process would do the same as this thread. */
    pid_t pid = fork();
    if (pid == 0) {
        usleep(200000);
        h_enqueue(n, "quiet", 99);
        _exit(0);
    }
    start = h_now_ms();
    msgs = consume(n, "quiet", 1, 1000, 5000, &a);
    long long took = h_now_ms() - start;
    assert_int_equal(json_array_size(msgs), 1);
    assert_true(took < 3000);
    json_decref(a);
    waitpid(pid, NULL, 0);
}

static void test_producers_and_consumers_in_parallel_ack_every_message_exactly_once(void **state)
{
    const h_node *n = *state;
    const h_node *producers[] = {n, n}, *consumers[] = {n, n, n};
    h_queue_mix("t", 3, producers, 2, 60, consumers, 3);
}

static void test_bad_input_gets_its_error_and_changes_nothing(void **state)
{
    h_node *n = *state;
    int st;
    json_decref(h_post(n, "/queue/enqueue", &st, "{\"message\":1}"));
    assert_int_equal(st, 400);
    json_decref(h_post(n, "/queue/enqueue", &st, "{\"topic\":\"x\"}"));
    assert_int_equal(st, 400);
    json_decref(h_post(n, "/queue/enqueue", &st, "{\"topic\":\"bad\\u0001name\",\"message\":1}"));
    assert_int_equal(st, 400);
    json_decref(h_post(n, "/queue/enqueue", &st, "{\"topic\":7,\"message\":1}"));
    assert_int_equal(st, 400);
    json_decref(
        h_post(n, "/queue/consume", &st, "{\"topic\":\"x\",\"consumer_id\":\"c\",\"max\":0}"));
    assert_int_equal(st, 400);
    json_decref(h_post(n, "/queue/consume", &st, "{\"topic\":\"x\"}"));
    assert_int_equal(st, 400);
    assert_int_equal(h_ack(n, "x", "0000000000000001c8a1369b275d4f2c"), 404);
    assert_int_equal(h_ack(n, "x", "not-a-receipt"), 404);
    /* A message over the body limit: 413, and the topic stays empty. */
    size_t big = 1100000;
    char *body = malloc(big + 64);
    int k = snprintf(body, 64, "{\"topic\":\"big\",\"message\":\"");
    memset(body + k, 'a', big);
    strcpy(body + k + big, "\"}");
    h_resp r;
    h_http(n, "POST", "/queue/enqueue", body, "", &r);
    assert_int_equal(r.status, 413);
    h_resp_free(&r);
    free(body);
    json_t *a;
    json_t *msgs = consume(n, "big", 1, 1000, 0, &a);
    assert_int_equal(json_array_size(msgs), 0);
    json_decref(a);
}

static void test_a_node_killed_with_sigkill_loses_no_acknowledged_message(void **state)
{
    h_node *n = *state;
    for (int i = 1; i <= 50; i++)
        assert_int_equal(h_enqueue(n, "durable", i), i);
    json_t *a;
    json_t *msgs = consume(n, "durable", 10, 60000, 0, &a);
    assert_int_equal(json_array_size(msgs), 10);
    /* Ack the first five; the other five stay in flight across the crash. */
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(
            h_ack(n, "durable",
                json_string_value(json_object_get(json_array_get(msgs, i), "receipt"))),
            200);
    json_decref(a);
    h_node_kill9(n);
    assert_int_equal(h_node_start(n), 0);
    /* 40 ready (11..50) come out in order; 6..10 are in flight still. */
    msgs = consume(n, "durable", 100, 60000, 0, &a);
    assert_int_equal(json_array_size(msgs), 40);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(msgs, 0), "id")), 11);
    json_decref(a);
    assert_int_equal(h_enqueue(n, "durable", 51), 51);
}

/* The type byte of the queue file's first record (1: a snapshot), or -1. */
static int first_record_type(const h_node *n)
{
    char path[256];
    snprintf(path, sizeof path, "%s/data/queue/aof", n->dir);
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    unsigned char hdr[9];
    int type = fread(hdr, 1, sizeof hdr, fp) == sizeof hdr ? hdr[8] : -1;
    fclose(fp);
    return type;
}

/* The queue file is rewritten as a snapshot in the background, several
 * times over (at the smallest threshold, 64 KiB, doubling), while
 * enqueues, consumes and acks go on; then kill -9: every message
 * acknowledged and not acked comes back, in order, once. */
static void test_queue_file_rewrites_in_the_background_lose_nothing(void **state)
{
    (void)state;
    static const char *const env[] = {"DSYNC_QUEUE_REWRITE_BYTES=65536", NULL};
    h_node *n = h_node_new(env);
    assert_non_null(n);
    char pad[2001];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    int acked = 0;
    for (int i = 1; i <= 600; i++) {
        char json[2300];
        snprintf(json, sizeof json, "{\"topic\":\"rw\",\"message\":{\"i\":%d,\"pad\":\"%s\"}}", i,
                 pad);
        int st;
        json_t *r = h_json(n, "POST", "/queue/enqueue", json, &st);
        assert_int_equal(st, 200);
        assert_int_equal(json_integer_value(json_object_get(r, "id")), i);
        json_decref(r);
        if (i % 3 == 0) { /* the oldest one out and acked */
            json_t *a;
            json_t *msgs = consume(n, "rw", 1, 60000, 0, &a);
            assert_int_equal(json_array_size(msgs), 1);
            json_t *m = json_array_get(msgs, 0);
            assert_int_equal(h_ack(n, "rw", json_string_value(json_object_get(m, "receipt"))), 200);
            json_decref(a);
            acked++;
        }
    }
    assert_int_equal(first_record_type(n), 1); /* rewritten: a snapshot comes first */
    h_node_kill9(n);
    assert_int_equal(h_node_start(n), 0);
    long long want = acked + 1;
    for (int round = 0; round < 10 && want <= 600; round++) {
        json_t *a;
        json_t *msgs = consume(n, "rw", 100, 60000, 0, &a);
        assert_true(json_array_size(msgs) > 0);
        for (size_t k = 0; k < json_array_size(msgs); k++, want++) {
            json_t *m = json_array_get(msgs, k);
            assert_int_equal(json_integer_value(json_object_get(m, "id")), want);
            assert_int_equal(
                json_integer_value(json_object_get(json_object_get(m, "message"), "i")), want);
        }
        json_decref(a);
    }
    assert_int_equal(want, 601);
    json_t *a;
    assert_int_equal(json_array_size(consume(n, "rw", 100, 60000, 0, &a)), 0); /* nothing twice */
    json_decref(a);
    assert_int_equal(h_node_free(n), 0);
}

/* ---- three nodes ---------------------------------------------------------- */

static void test_topics_spread_over_three_nodes_and_any_node_serves_any_topic(void **state)
{
    (void)state;
    h_cluster c;
    static const char *const env[] = {"DSYNC_QUEUE_MAX_DELIVERIES=1", NULL};
    assert_int_equal(h_cluster_start(&c, 3, env), 0);
    char topic[32];
    for (int t = 0; t < 12; t++) {
        snprintf(topic, sizeof topic, "spread-%d", t);
        assert_int_equal(h_enqueue(&c.nodes[t % 3], topic, t), 1);
    }
    /* Each node owns some of the twelve. */
    int owners = 0;
    for (int i = 0; i < 3; i++) {
        double sum = 0;
        for (int t = 0; t < 12; t++) {
            char series[64];
            snprintf(series, sizeof series, "queue_enqueued_total{topic=\"spread-%d\"}", t);
            double v = h_metric(&c.nodes[i], series);
            if (v > 0) sum += v;
        }
        owners += sum > 0;
    }
    assert_true(owners >= 2);
    /* Consume through one node, ack through another. */
    for (int t = 0; t < 12; t++) {
        snprintf(topic, sizeof topic, "spread-%d", t);
        json_t *a;
        json_t *msgs = consume(&c.nodes[(t + 1) % 3], topic, 5, 30000, 0, &a);
        assert_int_equal(json_array_size(msgs), 1);
        json_t *m = json_array_get(msgs, 0);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(m, "message"), "v")),
                         t);
        assert_int_equal(
            h_ack(&c.nodes[(t + 2) % 3], topic, json_string_value(json_object_get(m, "receipt"))),
            200);
        json_decref(a);
    }
    /* Dead letters live with their topic: unacked once (max deliveries 1),
     * each message shows up in "<topic>.dlq" through any node. */
    for (int t = 0; t < 6; t++) {
        snprintf(topic, sizeof topic, "dead-%d", t);
        assert_int_equal(h_enqueue(&c.nodes[t % 3], topic, 100 + t), 1);
        json_t *a;
        json_t *msgs = consume(&c.nodes[(t + 1) % 3], topic, 1, 100, 0, &a);
        assert_int_equal(json_array_size(msgs), 1);
        json_decref(a);
    }
    for (int t = 0; t < 6; t++) {
        char dlq[40];
        snprintf(dlq, sizeof dlq, "dead-%d.dlq", t);
        long long deadline = h_now_ms() + 5000;
        size_t got = 0;
        while (!got && h_now_ms() < deadline) {
            json_t *a;
            json_t *msgs = consume(&c.nodes[(t + 2) % 3], dlq, 1, 30000, 0, &a);
            got = json_array_size(msgs);
            if (got)
                assert_int_equal(json_integer_value(json_object_get(
                                     json_object_get(json_array_get(msgs, 0), "message"), "v")),
                                 100 + t);
            json_decref(a);
            if (!got) usleep(20000);
        }
        assert_int_equal(got, 1);
    }
    assert_int_equal(h_cluster_destroy(&c), 0);
}

/* Without Redis a topic lives on its owner's disk: while the owner is down
 * the topic answers 503, and at once: the transport of the node the call
 * arrived at refuses frames to a peer it lost (no 5 s forwarding timeout). */
static void test_a_dead_owners_topic_answers_503_at_once(void **state)
{
    (void)state;
    h_cluster c;
    assert_int_equal(h_cluster_start(&c, 3, NULL), 0);
    int st;
    json_t *j = h_json(&c.nodes[0], "GET", "/queue/state?topic=orphan", NULL, &st);
    assert_int_equal(st, 200);
    long long owner = json_integer_value(json_object_get(j, "owner"));
    json_decref(j);
    assert_true(owner >= 1 && owner <= 3);
    h_node *client = &c.nodes[(owner) % 3]; /* another node */
    assert_int_equal(h_enqueue(client, "orphan", 1), 1);
    h_node_kill9(&c.nodes[owner - 1]);
    /* The client's transport sees the connection close; from then on every
     * call answers 503 quickly (bounded wait for that moment). */
    long long until = h_now_ms() + 10000, took = -1;
    while (h_now_ms() < until) {
        long long t0 = h_now_ms();
        long long id = h_enqueue(client, "orphan", 2);
        assert_true(id == -503);
        took = h_now_ms() - t0;
        if (took < 1000) break;
    }
    assert_true(took >= 0 && took < 1000);
    assert_int_equal(h_node_start(&c.nodes[owner - 1]), 0);
    until = h_now_ms() + 15000;
    long long id = -503;
    while ((id = h_enqueue(client, "orphan", 3)) == -503 && h_now_ms() < until)
        usleep(50000);
    assert_int_equal(id, 2); /* the refused ones took no id; the first survived */
    assert_int_equal(h_cluster_destroy(&c), 0);
}

/* ---- a stalling disk under the queue file and the lock service --------------- */

#define DISK_STALL_MS 1500 /* three election timeouts at the defaults */
#define STALL_TOPICS 6

typedef struct {
    const h_node *n;
    int index;
    long long id, took_ms;
} stall_enqueue;

static void *stall_enqueue_main(void *p)
{
    stall_enqueue *e = p;
    char topic[32];
    snprintf(topic, sizeof topic, "disk-%d", e->index);
    long long t0 = h_now_ms();
    e->id = h_enqueue(e->n, topic, e->index);
    e->took_ms = h_now_ms() - t0;
    return NULL;
}

static void disk_delay(const h_node *n, int ms)
{
    int st;
    json_t *j = h_post(n, "/admin/faults", &st, "{\"queue_fsync_delay_ms\":%d}", ms);
    assert_int_equal(st, 200);
    assert_int_equal(json_integer_value(json_object_get(j, "queue_fsync_delay_ms")), ms);
    json_decref(j);
}

/* Every flush of every node's queue file stalls for 1.5 s (the fault
 * switch, as a disk that hangs would): the enqueues that wait for it wait,
 * but each node's loop, which also answers lock calls and carries Raft,
 * does not, because the file's write and fdatasync run on a thread of
 * their own. Lock cycles go on answering within an election timeout, and
 * no node misses its leader. Bad fault requests change nothing. */
static void test_a_stalling_queue_disk_costs_the_lock_service_nothing(void **state)
{
    (void)state;
    h_cluster c;
    static const char *const env[] = {"DSYNC_FAULT_INJECTION=1", NULL};
    assert_int_equal(h_cluster_start(&c, 3, env), 0);
    int st;
    json_decref(h_post(&c.nodes[0], "/admin/faults", &st, "{\"queue_fsync_delay_ms\":\"1s\"}"));
    assert_int_equal(st, 400);
    json_decref(h_post(&c.nodes[0], "/admin/faults", &st, "{\"queue_fsync_delay_ms\":60001}"));
    assert_int_equal(st, 400);
    json_decref(h_post(&c.nodes[0], "/admin/faults", &st, "{}"));
    assert_int_equal(st, 400);
    for (int t = 0; t < STALL_TOPICS; t++) { /* not delayed: those were refused */
        char topic[32];
        snprintf(topic, sizeof topic, "disk-%d", t);
        long long t0 = h_now_ms();
        assert_int_equal(h_enqueue(&c.nodes[t % 3], topic, t), 1);
        assert_true(h_now_ms() - t0 < DISK_STALL_MS);
    }
    long long term[3];
    for (int i = 0; i < 3; i++) {
        term[i] = h_health_int(&c.nodes[i], "term");
        assert_true(term[i] > 0);
    }

    for (int i = 0; i < 3; i++)
        disk_delay(&c.nodes[i], DISK_STALL_MS);
    stall_enqueue e[STALL_TOPICS];
    pthread_t th[STALL_TOPICS];
    for (int t = 0; t < STALL_TOPICS; t++) {
        e[t] = (stall_enqueue){.n = &c.nodes[t % 3], .index = t};
        assert_int_equal(pthread_create(&th[t], NULL, stall_enqueue_main, &e[t]), 0);
    }
    /* Lock cycles on every node while the enqueues wait (bounded: until
     * the stall is over, at most 2,000 cycles). */
    long long until = h_now_ms() + DISK_STALL_MS, slowest = 0;
    int cycles = 0;
    for (int i = 0; i < 2000 && h_now_ms() < until; i++) {
        const h_node *n = &c.nodes[i % 3];
        long long t0 = h_now_ms();
        int st2 = 0;
        json_decref(h_post(n, "/locks/acquire", &st, "{\"key\":\"disk-%d\",\"client_id\":\"c\",\"mode\":\"X\"}", i % 3));
        if (st == 200)
            json_decref(h_post(n, "/locks/release", &st2, "{\"key\":\"disk-%d\",\"client_id\":\"c\"}", i % 3));
        assert_int_equal(st, 200);
        assert_int_equal(st2, 200);
        long long took = h_now_ms() - t0;
        if (took > slowest) slowest = took;
        cycles++;
    }
    for (int t = 0; t < STALL_TOPICS; t++)
        pthread_join(th[t], NULL);
    print_message("%d lock cycles during the stall, the slowest %lld ms\n", cycles, slowest);
    assert_true(cycles >= 10);
    assert_true(slowest < 500); /* an election timeout at the defaults */
    for (int t = 0; t < STALL_TOPICS; t++) {
        assert_int_equal(e[t].id, 2); /* durable, after the stall */
        assert_true(e[t].took_ms >= DISK_STALL_MS - 100);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(h_health_int(&c.nodes[i], "term"), term[i]);

    for (int i = 0; i < 3; i++)
        disk_delay(&c.nodes[i], 0);
    long long t0 = h_now_ms();
    assert_int_equal(h_enqueue(&c.nodes[0], "disk-0", 9), 3);
    assert_true(h_now_ms() - t0 < DISK_STALL_MS);
    assert_int_equal(h_cluster_destroy(&c), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_fifo_delivery_ack_and_redelivery_after_the_visibility_runs_out, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_message_delivered_too_often_moves_to_the_dead_letter_topic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_long_poll_returns_as_soon_as_a_message_arrives,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_producers_and_consumers_in_parallel_ack_every_message_exactly_once, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_bad_input_gets_its_error_and_changes_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_node_killed_with_sigkill_loses_no_acknowledged_message, setup, teardown),
        cmocka_unit_test(test_queue_file_rewrites_in_the_background_lose_nothing),
        cmocka_unit_test(test_topics_spread_over_three_nodes_and_any_node_serves_any_topic),
        cmocka_unit_test(test_a_dead_owners_topic_answers_503_at_once),
        cmocka_unit_test(test_a_stalling_queue_disk_costs_the_lock_service_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
