/*
 * test_integ_queue_redis.c: the queue on Redis, with real dsyncd processes
 * and a real redis-server (appendonly yes) on loopback.
 *
 * Three nodes: producers and consumers on every node, every message acked
 * exactly once; kill -9 of a topic's owner moves its topics to the next
 * live node with nothing acknowledged lost, and they come back when it
 * returns; an owner cut off from the cluster is fenced and delivers
 * nothing once another node has taken its topic over; Redis stopped
 * (SIGSTOP) under queue and cache calls costs the lock service no leader
 * change and no refused lock; 30,000 topics in Redis are claimed as views
 * place them without an election. One node: a lost
 * Redis gives 503 and the node reconnects by itself; kill -9 of the node
 * loses nothing. Skipped when redis-server is not installed.
 */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>

#include "dsync.h"
#include "harness.h"

typedef struct {
    h_redis redis;
    h_cluster cluster;
    h_node *node; /* single-node tests */
    char url_env[96];
} fixture;

static int setup(void **state)
{
    if (!h_redis_available()) {
        fprintf(stderr, "redis-server is not installed: skipped\n");
        skip();
    }
    fixture *f = calloc(1, sizeof *f);
    if (!f || h_redis_start(&f->redis) != 0) {
        free(f);
        return -1;
    }
    snprintf(f->url_env, sizeof f->url_env, "DSYNC_REDIS_URL=%s", f->redis.url);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    int rc = 0;
    if (f->cluster.n) rc |= h_cluster_destroy(&f->cluster);
    if (f->node) rc |= h_node_free(f->node);
    h_redis_destroy(&f->redis);
    free(f);
    return rc;
}

/* Whether every node places topics on a view of all three. */
static bool view_of_three(void *arg)
{
    h_cluster *c = arg;
    for (int i = 0; i < c->n; i++) {
        int st;
        json_t *j = h_json(&c->nodes[i], "GET", "/queue/state", NULL, &st);
        bool ok = st == 200 && json_array_size(json_object_get(j, "owners")) == 3;
        json_decref(j);
        if (!ok) return false;
    }
    return true;
}

static int start_cluster(fixture *f, const char *extra)
{
    const char *env[] = {f->url_env, "DSYNC_FAULT_INJECTION=1", extra, NULL};
    if (h_cluster_start(&f->cluster, 3, env) != 0) return -1;
    /* The queue serves once the leader's first view has committed. */
    return h_wait_until(view_of_three, &f->cluster, 10000) ? 0 : -1;
}

/* ---- calls ------------------------------------------------------------------ */

/* The id, or minus the HTTP status. */
/* The node id that node n places topic on (0: none), or -1. */
static long long owner_seen_by(const h_node *n, const char *topic)
{
    char path[128];
    snprintf(path, sizeof path, "/queue/state?topic=%s", topic);
    int st;
    json_t *j = h_json(n, "GET", path, NULL, &st);
    long long owner = -1;
    if (st == 200) {
        json_t *o = json_object_get(j, "owner");
        owner = json_is_integer(o) ? (long long)json_integer_value(o) : 0;
    }
    json_decref(j);
    return owner;
}

/* Whether node n holds topic (it is in its /queue/state topics). */
static bool holds(const h_node *n, const char *topic)
{
    int st;
    json_t *j = h_json(n, "GET", "/queue/state", NULL, &st);
    bool found = false;
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(j, "topics"), i, t)
    {
        found |= strcmp(json_string_value(json_object_get(t, "topic")), topic) == 0;
    }
    json_decref(j);
    return found;
}

typedef struct {
    const h_node *n;
    const char *topic;
    long long want; /* owner id wanted; with `not`, any other live one */
    bool not;
} owner_wait;

static bool owner_is(void *arg)
{
    owner_wait *w = arg;
    long long o = owner_seen_by(w->n, w->topic);
    return w->not ? o > 0 && o != w->want : o == w->want;
}

static int index_of(const h_cluster *c, long long id)
{
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].node_id == id) return i;
    return -1;
}

/* ---- many producers and consumers on three nodes -------------------------- */

#define TOPICS 6

static void test_producers_and_consumers_on_three_nodes_ack_every_message_once(void **state)
{
    fixture *f = *state;
    assert_int_equal(start_cluster(f, NULL), 0);
    const h_node *const *nodes = (const h_node *const[]){
        &f->cluster.nodes[0], &f->cluster.nodes[1], &f->cluster.nodes[2]};
    /* Producers on nodes 2 and 3, consumers on all three. */
    h_queue_mix("p", TOPICS, nodes + 1, 2, 120, nodes, 3);
    /* The topics were spread: more than one node holds some. */
    int holders = 0;
    for (int i = 0; i < 3; i++) {
        int held = 0;
        char topic[32];
        for (int t = 0; t < TOPICS; t++) {
            snprintf(topic, sizeof topic, "p%d", t);
            held += holds(&f->cluster.nodes[i], topic);
        }
        holders += held > 0;
    }
    assert_true(holders >= 2);
}

/* ---- the owner dies -------------------------------------------------------- */

#define KT 6       /* topics */
#define KBEFORE 20 /* messages per topic before the kill */
#define KAFTER 10  /* ... and after */

static void test_killing_a_topics_owner_moves_it_and_loses_no_acknowledged_message(void **state)
{
    fixture *f = *state;
    assert_int_equal(start_cluster(f, NULL), 0);
    h_cluster *c = &f->cluster;
    long long victim_id = owner_seen_by(&c->nodes[0], "k0");
    assert_true(victim_id > 0);
    int victim = index_of(c, victim_id);
    const h_node *client = &c->nodes[(victim + 1) % 3];
    char topic[32];
    /* acked_id[t][id]: enqueue acknowledged; delivered[t][id]: deliveries seen. */
    int enq[KT][KBEFORE + KAFTER + 1], delivered[KT][KBEFORE + KAFTER + 1];
    memset(enq, 0, sizeof enq);
    memset(delivered, 0, sizeof delivered);
    for (int t = 0; t < KT; t++) {
        snprintf(topic, sizeof topic, "k%d", t);
        for (int i = 0; i < KBEFORE; i++) {
            long long id = h_enqueue(client, topic, i);
            assert_true(id >= 1 && id <= KBEFORE);
            enq[t][id] = 1;
        }
        /* Five in flight and never acked: they come back after the move. */
        int st;
        json_t *a = h_consume(client, topic, 5, 1500, 0, &st);
        assert_non_null(a);
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(a, "messages"), i, m)
            delivered[t][json_integer_value(json_object_get(m, "id"))]++;
        json_decref(a);
    }
    h_node_kill9(&c->nodes[victim]);
    owner_wait moved = {client, "k0", victim_id, true};
    assert_true(h_wait_until(owner_is, &moved, 15000));
    for (int t = 0; t < KT; t++) {
        snprintf(topic, sizeof topic, "k%d", t);
        for (int i = 0; i < KAFTER; i++) {
            long long id = h_enqueue_retrying(client, topic, 100 + i, 15000);
            assert_true(id > KBEFORE && id <= KBEFORE + KAFTER);
            enq[t][id] = 1;
        }
    }
    /* Drain through the survivor: every acknowledged id comes out. */
    long long deadline = h_now_ms() + 20000;
    int missing = 1;
    while (missing && h_now_ms() < deadline) {
        for (int t = 0; t < KT; t++) {
            snprintf(topic, sizeof topic, "k%d", t);
            int st;
            json_t *a = h_consume(client, topic, 50, 30000, 0, &st);
            if (!a) continue; /* 503 while a topic moves */
            size_t i;
            json_t *m;
            json_array_foreach(json_object_get(a, "messages"), i, m)
            {
                long long id = json_integer_value(json_object_get(m, "id"));
                assert_true(id >= 1 && id <= KBEFORE + KAFTER);
                assert_true(enq[t][id]);
                delivered[t][id]++;
                assert_int_equal(
                    h_ack(client, topic, json_string_value(json_object_get(m, "receipt"))), 200);
                enq[t][id] = 2; /* acked */
            }
            json_decref(a);
        }
        missing = 0;
        for (int t = 0; t < KT; t++)
            for (int id = 1; id <= KBEFORE + KAFTER; id++)
                missing += enq[t][id] != 2;
        if (missing) usleep(50000);
    }
    assert_int_equal(missing, 0);
    /* Twice only for the five taken before the kill; never more. */
    for (int t = 0; t < KT; t++)
        for (int id = 1; id <= KBEFORE + KAFTER; id++)
            assert_true(delivered[t][id] == 1 || (id <= 5 && delivered[t][id] == 2));

    /* The owner comes back, catches up, and gets its topics again. */
    assert_int_equal(h_node_start(&c->nodes[victim]), 0);
    owner_wait back = {client, "k0", victim_id, false};
    assert_true(h_wait_until(owner_is, &back, 15000));
    long long id = h_enqueue_retrying(client, "k0", 999, 15000);
    assert_int_equal(id, KBEFORE + KAFTER + 1);
    int st = 0;
    json_t *a = NULL;
    long long until = h_now_ms() + 10000;
    while (h_now_ms() < until && !(a = h_consume(&c->nodes[victim], "k0", 10, 30000, 0, &st)))
        usleep(20000);
    assert_non_null(a);
    json_t *msgs = json_object_get(a, "messages");
    assert_int_equal(json_array_size(msgs), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(msgs, 0), "id")), id);
    json_decref(a);
}

/* ---- an old owner is fenced ------------------------------------------------- */

static void test_an_owner_cut_off_from_the_cluster_delivers_nothing_after_the_handover(
    void **state)
{
    fixture *f = *state;
    assert_int_equal(start_cluster(f, NULL), 0);
    h_cluster *c = &f->cluster;
    long long old_id = owner_seen_by(&c->nodes[0], "fenced");
    assert_true(old_id > 0);
    int old = index_of(c, old_id);
    h_node *o = &c->nodes[old], *other = &c->nodes[(old + 1) % 3];
    for (int i = 1; i <= 5; i++)
        assert_int_equal(h_enqueue(other, "fenced", i), i);
    /* Cut the owner off: it drops all traffic with the others, and they with it. */
    int st;
    char body[64];
    for (int i = 0; i < 3; i++) {
        if (i == old)
            snprintf(body, sizeof body, "{\"drop_peers\":[%d,%d]}", c->nodes[(i + 1) % 3].node_id,
                     c->nodes[(i + 2) % 3].node_id);
        else
            snprintf(body, sizeof body, "{\"drop_peers\":[%lld]}", old_id);
        json_decref(h_json(&c->nodes[i], "POST", "/admin/faults", body, &st));
        assert_int_equal(st, 200);
    }
    owner_wait moved = {other, "fenced", old_id, true};
    assert_true(h_wait_until(owner_is, &moved, 15000));
    long long new_id = owner_seen_by(other, "fenced");
    h_node *nw = &c->nodes[index_of(c, new_id)];
    long long until = h_now_ms() + 10000;
    while (!holds(nw, "fenced") && h_now_ms() < until)
        usleep(20000);
    assert_true(holds(nw, "fenced"));
    /* The old owner still believes it owns the topic; Redis refuses its
     * writes, so it hands out nothing and takes nothing. */
    json_t *a = h_consume(o, "fenced", 10, 30000, 0, &st);
    assert_null(a);
    assert_int_equal(st, 503);
    assert_int_equal(h_enqueue(o, "fenced", 6), -503);
    /* The new owner has all five, each delivered once. */
    a = h_consume(nw, "fenced", 10, 30000, 0, &st);
    assert_non_null(a);
    json_t *msgs = json_object_get(a, "messages");
    assert_int_equal(json_array_size(msgs), 5);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(
            json_integer_value(json_object_get(json_array_get(msgs, i), "deliveries")), 1);
    json_decref(a);
    /* Heal: the cluster converges and the old owner serves the topic again. */
    for (int i = 0; i < 3; i++) {
        json_decref(h_json(&c->nodes[i], "POST", "/admin/faults", "{\"drop_peers\":[]}", &st));
        assert_int_equal(st, 200);
    }
    owner_wait back = {other, "fenced", old_id, false};
    assert_true(h_wait_until(owner_is, &back, 15000));
    long long id = -503;
    until = h_now_ms() + 10000;
    while ((id = h_enqueue(o, "fenced", 7)) < 0 && h_now_ms() < until)
        usleep(20000);
    assert_int_equal(id, 6); /* the refused enqueue left no trace */
}

/* ---- one node ------------------------------------------------------------------ */

static bool has_view(void *arg)
{
    int st;
    json_t *j = h_json(arg, "GET", "/queue/state", NULL, &st);
    bool ok = st == 200 && json_integer_value(json_object_get(j, "view_epoch")) > 0;
    json_decref(j);
    return ok;
}

static int start_single(fixture *f)
{
    const char *env[] = {f->url_env, NULL};
    f->node = h_node_new(env);
    return f->node && h_wait_until(has_view, f->node, 10000) ? 0 : -1;
}

static void test_a_lost_redis_gives_503_and_the_node_reconnects_by_itself(void **state)
{
    fixture *f = *state;
    assert_int_equal(start_single(f), 0);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(h_enqueue(f->node, "r", i), i);
    h_redis_kill9(&f->redis);
    h_resp r;
    assert_int_equal(h_http(f->node, "POST", "/queue/enqueue", "{\"topic\":\"r\",\"message\":4}",
                            "", &r),
                     0);
    assert_int_equal(r.status, 503);
    assert_true(r.retry_after[0] != '\0');
    h_resp_free(&r);
    int st;
    assert_null(h_consume(f->node, "r", 10, 30000, 0, &st));
    assert_int_equal(st, 503);
    /* Redis comes back with its AOF; the node reconnects on its own. */
    assert_int_equal(h_redis_start(&f->redis), 0);
    long long id = -503, until = h_now_ms() + 10000;
    while ((id = h_enqueue(f->node, "r", 5)) == -503 && h_now_ms() < until)
        usleep(50000);
    assert_int_equal(id, 4); /* the refused one took no id */
    json_t *a = h_consume(f->node, "r", 10, 30000, 0, &st);
    assert_non_null(a);
    json_t *msgs = json_object_get(a, "messages");
    assert_int_equal(json_array_size(msgs), 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(msgs, i), "id")),
                         (long long)i + 1);
    json_decref(a);
}

typedef struct {
    const h_node *n;
    const char *topic;
    long long value, id;
} enqueue_arg;

static void *enqueue_thread(void *p)
{
    enqueue_arg *a = p;
    a->id = h_enqueue(a->n, a->topic, a->value);
    return NULL;
}

typedef struct {
    const h_node *n;
    const char *topic;
    long long depth;
} depth_wait;

/* Whether the node holds the topic with that many messages ready. */
static bool depth_is(void *arg)
{
    depth_wait *w = arg;
    int st;
    json_t *j = h_json(w->n, "GET", "/queue/state", NULL, &st);
    bool ok = false;
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(j, "topics"), i, t)
    {
        if (strcmp(json_string_value(json_object_get(t, "topic")), w->topic) == 0)
            ok = json_integer_value(json_object_get(t, "depth")) == w->depth;
    }
    json_decref(j);
    return ok;
}

/* The node keeps serving while a write to Redis is out. Redis stops
 * answering (SIGSTOP): the enqueue whose write is out, and the one taken
 * meanwhile on top of it, both answer 503 once the write is given up; the
 * second never reaches Redis, so only the first may show up later. */
static void test_calls_behind_a_write_redis_never_answers_fail_and_leave_no_trace(void **state)
{
    fixture *f = *state;
    assert_int_equal(start_single(f), 0);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(h_enqueue(f->node, "p", i), i);
    assert_int_equal(kill(f->redis.pid, SIGSTOP), 0);

    enqueue_arg a = {f->node, "p", 4, 0}, b = {f->node, "p", 5, 0};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, enqueue_thread, &a), 0);
    depth_wait d4 = {f->node, "p", 4};
    assert_true(h_wait_until(depth_is, &d4, 5000)); /* applied, its write out */
    assert_int_equal(pthread_create(&tb, NULL, enqueue_thread, &b), 0);
    depth_wait d5 = {f->node, "p", 5};
    assert_true(h_wait_until(depth_is, &d5, 5000)); /* applied behind it */
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.id, -503);
    assert_int_equal(b.id, -503);

    assert_int_equal(kill(f->redis.pid, SIGCONT), 0);
    long long id = h_enqueue_retrying(f->node, "p", 6, 10000);
    assert_true(id == 4 || id == 5); /* 5 if the stopped write ran after all */
    int st;
    json_t *c = h_consume(f->node, "p", 10, 30000, 0, &st);
    assert_non_null(c);
    json_t *msgs = json_object_get(c, "messages");
    size_t n = json_array_size(msgs);
    assert_int_equal(n, (size_t)id);
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        long long body =
            json_integer_value(json_object_get(json_object_get(m, "message"), "v"));
        assert_int_equal(json_integer_value(json_object_get(m, "id")), (long long)i + 1);
        assert_int_equal(body, i + 1 < n ? (long long)i + 1 : 6);
        assert_int_not_equal(body, 5);
    }
    json_decref(c);
}

/* ---- a stalled Redis and the lock service ------------------------------- */

#define STALL_MS 3000

typedef struct {
    const h_node *n;
    int index;
    long long deadline_ms;
    int lock_cycles, lock_failures; /* acquire + release, both 200 */
    int store_calls;                /* queue and cache calls tried meanwhile */
} stall_load;

/* Lock cycles, which do not need Redis, on one node until the deadline
 * (at most 5,000). */
static void *stall_locks_main(void *p)
{
    stall_load *l = p;
    char key[32], client[32];
    snprintf(key, sizeof key, "stall-%d", l->index);
    snprintf(client, sizeof client, "c%d", l->index);
    for (int i = 0; i < 5000 && h_now_ms() < l->deadline_ms; i++) {
        int st, st2 = 0;
        json_t *j = h_post(l->n, "/locks/acquire", &st,
                           "{\"key\":\"%s\",\"client_id\":\"%s\",\"mode\":\"X\"}", key, client);
        json_decref(j);
        if (st == 200) {
            j = h_post(l->n, "/locks/release", &st2, "{\"key\":\"%s\",\"client_id\":\"%s\"}",
                       key, client);
            json_decref(j);
        }
        if (st == 200 && st2 == 200)
            l->lock_cycles++;
        else
            l->lock_failures++;
    }
    return NULL;
}

/* Queue and cache calls that need Redis, on one node until the deadline
 * (at most 500; each answers 503 or times out, whatever). */
static void *stall_store_main(void *p)
{
    stall_load *l = p;
    char body[128];
    for (int i = 0; i < 500 && h_now_ms() < l->deadline_ms; i++) {
        h_resp r;
        if (i % 2 == 0)
            snprintf(body, sizeof body, "{\"topic\":\"stall-%d\",\"message\":%d}", i % TOPICS, i);
        else
            snprintf(body, sizeof body, "{\"key\":\"stall-%d-%d\",\"value\":\"v\"}", l->index, i);
        if (h_http(l->n, "POST", i % 2 == 0 ? "/queue/enqueue" : "/cache/put", body, "", &r) == 0)
            h_resp_free(&r);
        l->store_calls++;
    }
    return NULL;
}

/* Redis stops answering (SIGSTOP) for 3 s while every node takes queue
 * and cache calls that need it: each node's loop, which also carries Raft,
 * waits on Redis at most a fifth of an election timeout at a time, so no
 * follower misses the leader, no leader loses its term, and the lock
 * service, which does not use Redis, keeps granting. Then Redis goes on
 * and the queue serves again by itself. */
static void test_a_stalled_redis_costs_the_lock_service_nothing(void **state)
{
    fixture *f = *state;
    assert_int_equal(start_cluster(f, NULL), 0);
    h_cluster *c = &f->cluster;
    /* Every node owns some of the topics: claimed and loaded first. */
    for (int t = 0; t < TOPICS; t++) {
        char topic[32];
        snprintf(topic, sizeof topic, "stall-%d", t);
        assert_true(h_enqueue_retrying(&c->nodes[0], topic, 1, 10000) > 0);
    }
    long long term[3];
    double changes[3];
    for (int i = 0; i < 3; i++) {
        term[i] = h_health_int(&c->nodes[i], "term");
        changes[i] = h_metric(&c->nodes[i], "raft_leader_changes_total");
        assert_true(term[i] > 0);
        assert_true(changes[i] >= 1);
    }

    assert_int_equal(kill(f->redis.pid, SIGSTOP), 0);
    stall_load load[3];
    pthread_t locks[3], store[3];
    long long deadline = h_now_ms() + STALL_MS;
    for (int i = 0; i < 3; i++) {
        load[i] = (stall_load){.n = &c->nodes[i], .index = i, .deadline_ms = deadline};
        assert_int_equal(pthread_create(&store[i], NULL, stall_store_main, &load[i]), 0);
        assert_int_equal(pthread_create(&locks[i], NULL, stall_locks_main, &load[i]), 0);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(locks[i], NULL);
    assert_int_equal(kill(f->redis.pid, SIGCONT), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(store[i], NULL);

    for (int i = 0; i < 3; i++) {
        print_message("node %d: %d lock cycles, %d failed; %d queue and cache calls\n",
                      c->nodes[i].node_id, load[i].lock_cycles, load[i].lock_failures,
                      load[i].store_calls);
        assert_true(load[i].store_calls > 0);
        assert_true(load[i].lock_cycles > 0);
        assert_int_equal(load[i].lock_failures, 0);
        assert_int_equal(h_health_int(&c->nodes[i], "term"), term[i]);
        assert_true(h_metric(&c->nodes[i], "raft_leader_changes_total") == changes[i]);
    }
    for (int t = 0; t < TOPICS; t++) {
        char topic[32];
        snprintf(topic, sizeof topic, "stall-%d", t);
        assert_true(h_enqueue_retrying(&c->nodes[t % 3], topic, 2, 10000) > 0);
    }
}

/* ---- many topics: a view's claims in slices ------------------------------ */

#define MANY_TOPICS 30000

typedef struct {
    h_cluster *c;
    int dead; /* index of a killed node, or -1 */
    size_t owners;
} adoption_wait;

/* Whether every live node places topics on `owners` nodes and has claimed
 * the topics in Redis its view placed on it. */
static bool adoption_done(void *arg)
{
    adoption_wait *w = arg;
    for (int i = 0; i < w->c->n; i++) {
        if (i == w->dead) continue;
        int st;
        json_t *j = h_json(&w->c->nodes[i], "GET", "/queue/state", NULL, &st);
        bool ok = st == 200 && json_array_size(json_object_get(j, "owners")) == w->owners;
        json_decref(j);
        if (!ok || h_metric(&w->c->nodes[i], "queue_adoption_pending") != 0) return false;
    }
    return true;
}

static double adopted_sum(h_cluster *c, int dead)
{
    double sum = 0;
    for (int i = 0; i < c->n; i++)
        if (i != dead) sum += h_metric(&c->nodes[i], "queue_units_adopted_total");
    return sum;
}

/* 30,000 topics wait in Redis. A view places about 10,000 on each node,
 * two round trips to claim each: a loop that made them all in one turn
 * would not send Raft's heartbeats for a second or more, and the cluster
 * would lose its leader, even its view, over and over. Claimed a slice a
 * turn, at the start and again when a killed follower's topics move to
 * the two others, they cost no election. */
static void test_a_view_of_many_topics_is_claimed_without_an_election(void **state)
{
    fixture *f = *state;
    assert_int_equal(h_redis_put_topics(&f->redis, "many", MANY_TOPICS), 0);
    assert_int_equal(start_cluster(f, NULL), 0);
    h_cluster *c = &f->cluster;
    /* The first view is in: the nodes claim their 10,000 topics each now. */
    long long term[3];
    for (int i = 0; i < 3; i++)
        term[i] = h_health_int(&c->nodes[i], "term");
    adoption_wait all = {c, -1, 3};
    assert_true(h_wait_until(adoption_done, &all, 60000));
    assert_true(adopted_sum(c, -1) >= MANY_TOPICS);
    double changes[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(h_health_int(&c->nodes[i], "term"), term[i]);
        changes[i] = h_metric(&c->nodes[i], "raft_leader_changes_total");
        assert_true(changes[i] >= 1);
    }

    int leader = h_cluster_leader(c, 0, 5000);
    assert_true(leader >= 0);
    int victim = (leader + 1) % 3;
    double before = adopted_sum(c, victim);
    h_node_kill9(&c->nodes[victim]);
    adoption_wait two = {c, victim, 2};
    assert_true(h_wait_until(adoption_done, &two, 60000));
    print_message("the survivors took over %.0f topics\n", adopted_sum(c, victim) - before);
    assert_true(adopted_sum(c, victim) - before >= MANY_TOPICS / 10);
    for (int i = 0; i < 3; i++) {
        if (i == victim) continue;
        assert_int_equal(h_health_int(&c->nodes[i], "term"), term[i]);
        assert_true(h_metric(&c->nodes[i], "raft_leader_changes_total") == changes[i]);
    }
}

static bool adoption_pending_somewhere(void *arg)
{
    adoption_wait *w = arg;
    for (int i = 0; i < w->c->n; i++)
        if (i != w->dead && h_metric(&w->c->nodes[i], "queue_adoption_pending") == 1) return true;
    return false;
}

/* Redis dies (kill -9) in the middle of the claims a view brings, and
 * comes back from its AOF a little later: the claims wait for it (calls
 * refused while the connection backs off are no attempt),
 * queue_adoption_pending says so, and then they are made, rather than
 * given up for the whole view. (A stall, SIGSTOP, is covered by the
 * per-turn budget: the first wait that runs out ends the turn.) */
static void test_claims_wait_for_a_redis_that_died_then_go_on(void **state)
{
    fixture *f = *state;
    assert_int_equal(h_redis_put_topics(&f->redis, "wait", MANY_TOPICS), 0);
    assert_int_equal(start_cluster(f, NULL), 0);
    h_cluster *c = &f->cluster;
    adoption_wait all = {c, -1, 3};
    assert_true(h_wait_until(adoption_done, &all, 60000));
    int leader = h_cluster_leader(c, 0, 5000);
    assert_true(leader >= 0);
    int victim = (leader + 1) % 3;
    double share = h_metric(&c->nodes[victim], "queue_units_adopted_total");
    assert_true(share >= MANY_TOPICS / 10);
    double before = adopted_sum(c, victim);

    h_node_kill9(&c->nodes[victim]);
    adoption_wait two = {c, victim, 2};
    /* The view of two comes through Raft; its claims begin (about 2 s of
     * them), and Redis dies in their midst. */
    assert_true(h_wait_until(adoption_pending_somewhere, &two, 15000));
    h_redis_kill9(&f->redis);
    long long killed_at = h_now_ms();
    while (h_now_ms() < killed_at + 2000) {
        assert_true(adoption_pending_somewhere(&two)); /* not given up */
        usleep(100 * 1000);
    }
    assert_int_equal(h_redis_start(&f->redis), 0);
    assert_true(h_wait_until(adoption_done, &two, 60000));
    double took = adopted_sum(c, victim) - before;
    print_message("the survivors took over %.0f of the %.0f topics after Redis came back\n", took,
                  share);
    assert_true(took >= share - 20);
}

/* ---- an embedded node (the library, no HTTP) ---------------------------- */

#define EMB_THREADS 8
#define EMB_HOT_THREADS 4   /* on one topic; the others on one each */
#define EMB_HOT_CYCLES 1200 /* each: 3 records, so the hot unit passes 10,000 */
#define EMB_OWN_CYCLES 200

typedef struct {
    dsync_node *node;
    char topic[32];
    int cycles;
    uint64_t *enqueued, *acked; /* ids, cycles + 1 and cycles of them */
    int n_enqueued, n_acked, failures;
} emb_worker;

static void *emb_run(void *p)
{
    emb_worker *w = p;
    char consumer[32];
    snprintf(consumer, sizeof consumer, "c-%p", p);
    for (int i = 0; i < w->cycles; i++) {
        dsync_queue_msg *m = NULL;
        size_t n = 0;
        dsync_consume_request req = {w->topic, consumer, 1, 60000, 0};
        /* On a shared topic the message taken may be another thread's. */
        if (dsync_queue_enqueue(w->node, w->topic, "{}", 2, &w->enqueued[w->n_enqueued]) != 0 ||
            (w->n_enqueued++, dsync_queue_consume(w->node, &req, &m, &n)) != 0 || n != 1 ||
            dsync_queue_ack(w->node, w->topic, m[0].receipt) != 0)
            w->failures++;
        else
            w->acked[w->n_acked++] = m[0].id;
        dsync_queue_msgs_free(m, n);
    }
    if (dsync_queue_enqueue(w->node, w->topic, "{}", 2, &w->enqueued[w->n_enqueued]) == 0)
        w->n_enqueued++;
    else
        w->failures++;
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Every id the workers w[from..to) enqueued on their topic and never
 * acked, in order, into out; how many. */
static size_t emb_unacked(const emb_worker *w, int from, int to, uint64_t *out)
{
    size_t n_enq = 0, n_ack = 0;
    for (int i = from; i < to; i++) {
        n_enq += (size_t)w[i].n_enqueued;
        n_ack += (size_t)w[i].n_acked;
    }
    uint64_t *enq = calloc(n_enq + 1, sizeof *enq), *ack = calloc(n_ack + 1, sizeof *ack);
    assert_true(enq && ack);
    size_t e = 0, a = 0;
    for (int i = from; i < to; i++) {
        memcpy(enq + e, w[i].enqueued, (size_t)w[i].n_enqueued * sizeof *enq);
        e += (size_t)w[i].n_enqueued;
        memcpy(ack + a, w[i].acked, (size_t)w[i].n_acked * sizeof *ack);
        a += (size_t)w[i].n_acked;
    }
    qsort(enq, e, sizeof *enq, cmp_u64);
    qsort(ack, a, sizeof *ack, cmp_u64);
    size_t n = 0, j = 0;
    for (size_t i = 0; i < e; i++) {
        while (j < a && ack[j] < enq[i])
            j++;
        if (j < a && ack[j] == enq[i]) continue;
        out[n++] = enq[i];
    }
    for (size_t i = 1; i < a; i++)
        assert_true(ack[i] != ack[i - 1]); /* no message acked twice */
    free(enq);
    free(ack);
    return n;
}

/* Consumes everything ready on topic and checks it is exactly want[0..n). */
static void emb_expect(dsync_node *node, const char *topic, const uint64_t *want, size_t n)
{
    dsync_consume_request req = {topic, "after", 100, 60000, 0};
    dsync_queue_msg *m = NULL;
    size_t got = 0;
    assert_int_equal(dsync_queue_consume(node, &req, &m, &got), 0);
    assert_int_equal(got, n);
    for (size_t k = 0; k < got; k++) {
        assert_int_equal(m[k].id, want[k]); /* oldest first */
        assert_int_equal(m[k].deliveries, 1);
    }
    dsync_queue_msgs_free(m, got);
}

static dsync_node *emb_open(fixture *f, const char *dir)
{
    dsync_config cfg;
    dsync_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    snprintf(cfg.redis_url, sizeof cfg.redis_url, "%s", f->redis.url);
    dsync_node *n = NULL;
    assert_int_equal(dsync_node_open(&cfg, &n), 0);
    /* The queue serves once the node's first view has committed. */
    uint64_t until = (uint64_t)h_now_ms() + 10000;
    for (;;) {
        dsync_queue_state st;
        assert_int_equal(dsync_queue_state_get(n, NULL, &st), 0);
        bool ready = st.view_epoch > 0;
        dsync_queue_state_free(&st);
        if (ready) break;
        assert_true((uint64_t)h_now_ms() < until);
        usleep(10000);
    }
    return n;
}

/* Many threads on one node keep the Redis flushes full (one in flight,
 * the next one filling); the hot topic's log passes the rewrite threshold
 * meanwhile. A node opened afterwards on the same Redis finds exactly the
 * messages left unacked. */
static void test_an_embedded_node_under_load_rewrites_and_a_new_one_finds_every_message(
    void **state)
{
    fixture *f = *state;
    char dir[] = "/tmp/dsync-emb-XXXXXX";
    assert_non_null(mkdtemp(dir));
    dsync_node *node = emb_open(f, dir);
    emb_worker w[EMB_THREADS];
    pthread_t th[EMB_THREADS];
    for (int i = 0; i < EMB_THREADS; i++) {
        w[i] = (emb_worker){.node = node};
        bool hot = i < EMB_HOT_THREADS;
        snprintf(w[i].topic, sizeof w[i].topic, hot ? "hot" : "own%d", i);
        w[i].cycles = hot ? EMB_HOT_CYCLES : EMB_OWN_CYCLES;
        w[i].enqueued = calloc((size_t)w[i].cycles + 1, sizeof *w[i].enqueued);
        w[i].acked = calloc((size_t)w[i].cycles, sizeof *w[i].acked);
        assert_true(w[i].enqueued && w[i].acked);
        assert_int_equal(pthread_create(&th[i], NULL, emb_run, &w[i]), 0);
    }
    for (int i = 0; i < EMB_THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < EMB_THREADS; i++)
        assert_int_equal(w[i].failures, 0);
    dsync_node_close(node);

    /* The hot unit's log was rewritten as a snapshot on the way. */
    redisContext *c = redisConnect("127.0.0.1", f->redis.port);
    assert_true(c && !c->err);
    redisReply *r = redisCommand(c, "EXISTS dsync:q:{hot}:snap");
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    r = redisCommand(c, "LLEN dsync:q:{hot}:log");
    assert_true(r->integer < 3 * EMB_HOT_THREADS * EMB_HOT_CYCLES);
    freeReplyObject(r);
    redisFree(c);

    /* A new node finds exactly what was enqueued and never acked. */
    node = emb_open(f, dir);
    uint64_t left[EMB_HOT_THREADS + 1];
    size_t n = emb_unacked(w, 0, EMB_HOT_THREADS, left);
    assert_int_equal(n, EMB_HOT_THREADS); /* each thread left one */
    emb_expect(node, "hot", left, n);
    for (int i = EMB_HOT_THREADS; i < EMB_THREADS; i++) {
        n = emb_unacked(w, i, i + 1, left);
        assert_int_equal(n, 1);
        emb_expect(node, w[i].topic, left, n);
    }
    for (int i = 0; i < EMB_THREADS; i++) {
        free(w[i].enqueued);
        free(w[i].acked);
    }
    dsync_node_close(node);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_a_node_killed_and_restarted_loses_nothing_kept_in_redis(void **state)
{
    fixture *f = *state;
    assert_int_equal(start_single(f), 0);
    for (int i = 1; i <= 30; i++)
        assert_int_equal(h_enqueue(f->node, "d", i), i);
    int st;
    json_t *a = h_consume(f->node, "d", 10, 60000, 0, &st);
    assert_non_null(a);
    json_t *msgs = json_object_get(a, "messages");
    assert_int_equal(json_array_size(msgs), 10);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(
            h_ack(f->node, "d", json_string_value(json_object_get(json_array_get(msgs, i), "receipt"))),
            200);
    json_decref(a);
    h_node_kill9(f->node);
    assert_int_equal(h_node_start(f->node), 0);
    assert_true(h_wait_until(has_view, f->node, 10000));
    /* 11..30 ready in order; 6..10 still in flight with their 60 s lease. */
    a = h_consume(f->node, "d", 100, 60000, 0, &st);
    assert_non_null(a);
    msgs = json_object_get(a, "messages");
    assert_int_equal(json_array_size(msgs), 20);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(msgs, 0), "id")), 11);
    json_decref(a);
    assert_int_equal(h_enqueue(f->node, "d", 31), 31);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_view_of_many_topics_is_claimed_without_an_election,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims_wait_for_a_redis_that_died_then_go_on, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_stalled_redis_costs_the_lock_service_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_producers_and_consumers_on_three_nodes_ack_every_message_once, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_killing_a_topics_owner_moves_it_and_loses_no_acknowledged_message, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_an_owner_cut_off_from_the_cluster_delivers_nothing_after_the_handover, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_lost_redis_gives_503_and_the_node_reconnects_by_itself, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_calls_behind_a_write_redis_never_answers_fail_and_leave_no_trace, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_node_killed_and_restarted_loses_nothing_kept_in_redis, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_embedded_node_under_load_rewrites_and_a_new_one_finds_every_message, setup,
            teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
