/*
 * test_integ_cluster.c: the lock service on three real dsyncd processes.
 *
 * Every node answers every endpoint; killing the leader with SIGKILL
 * loses no granted lock and a new leader serves within seconds; the old
 * leader restarts and catches up (by snapshot, when the others compacted
 * past it); a leader cut off from the majority by the transport's fault
 * switch refuses writes with 503 while the majority elects and serves,
 * and after healing everyone converges; through kill -9 and partitions,
 * fencing tokens show that no two clients ever held the X lock at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"

static const char *const fast_env[] = {
    "DSYNC_FAULT_INJECTION=1",
    /* Compact often, so a node that was down catches up by snapshot. */
    "DSYNC_SNAPSHOT_ENTRIES=16",
    NULL,
};

static int setup(void **state)
{
    h_cluster *c = malloc(sizeof *c);
    if (h_cluster_start(c, 3, fast_env) != 0) {
        h_cluster_destroy(c);
        free(c);
        return -1;
    }
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    h_cluster *c = *state;
    int rc = h_cluster_destroy(c);
    free(c);
    return rc;
}

/* Acquires X on key for client through node n; returns the fencing token,
 * or -status when it was not granted. */
static long long acquire_x(const h_node *n, const char *key, const char *client, int wait_ms)
{
    int st;
    json_t *j = h_post(n, "/locks/acquire", &st,
                       "{\"key\":\"%s\",\"client_id\":\"%s\",\"mode\":\"X\",\"wait_ms\":%d}", key,
                       client, wait_ms);
    long long token = -(long long)(st ? st : 1);
    if (st == 200) token = (long long)json_integer_value(json_object_get(j, "fencing_token"));
    json_decref(j);
    return token;
}

static int release(const h_node *n, const char *key, const char *client)
{
    int st;
    json_t *j =
        h_post(n, "/locks/release", &st, "{\"key\":\"%s\",\"client_id\":\"%s\"}", key, client);
    json_decref(j);
    return st;
}

/* The fencing token of client's hold on key in node n's /locks/state, 0
 * if it holds none, -1 if the read failed. */
static long long held_token(const h_node *n, const char *key, const char *client)
{
    int st;
    json_t *j = h_json(n, "GET", "/locks/state", NULL, &st);
    if (st != 200 || !j) {
        json_decref(j);
        return -1;
    }
    long long out = 0;
    size_t i, k;
    json_t *lock, *holder;
    json_array_foreach(json_object_get(j, "locks"), i, lock)
    {
        if (strcmp(json_string_value(json_object_get(lock, "key")), key) != 0) continue;
        json_array_foreach(json_object_get(lock, "holders"), k, holder)
        {
            if (strcmp(json_string_value(json_object_get(holder, "client_id")), client) == 0)
                out = (long long)json_integer_value(json_object_get(holder, "fencing_token"));
        }
    }
    json_decref(j);
    return out;
}

static void drop(const h_node *n, const char *ids)
{
    int st;
    char body[64];
    snprintf(body, sizeof body, "{\"drop_peers\":[%s]}", ids);
    json_decref(h_json(n, "POST", "/admin/faults", body, &st));
    assert_int_equal(st, 200);
}

/* Cuts node i off from the other two, both ways. */
static void cut_off(h_cluster *c, int i)
{
    char others[32], self[16];
    snprintf(others, sizeof others, "%d,%d", c->nodes[(i + 1) % 3].node_id,
             c->nodes[(i + 2) % 3].node_id);
    snprintf(self, sizeof self, "%d", c->nodes[i].node_id);
    drop(&c->nodes[i], others);
    drop(&c->nodes[(i + 1) % 3], self);
    drop(&c->nodes[(i + 2) % 3], self);
}

static void test_every_node_serves_writes_and_reads_see_them_at_once(void **state)
{
    h_cluster *c = *state;
    int l = h_cluster_leader(c, 0, 5000);
    assert_true(l >= 0);
    int f1 = (l + 1) % 3, f2 = (l + 2) % 3;

    /* A write through a follower, read at once through the other one:
     * the read is linearizable, so it must see it. */
    long long t1 = acquire_x(&c->nodes[f1], "k-follower", "alice", 0);
    assert_true(t1 > 0);
    assert_int_equal(held_token(&c->nodes[f2], "k-follower", "alice"), t1);
    long long t2 = acquire_x(&c->nodes[l], "k-leader", "bob", 0);
    assert_true(t2 > t1);
    assert_int_equal(held_token(&c->nodes[f1], "k-leader", "bob"), t2);

    /* A conflicting acquire through the other follower waits. */
    int st;
    json_t *j = h_post(&c->nodes[f2], "/locks/acquire", &st,
                       "{\"key\":\"k-follower\",\"client_id\":\"carol\",\"mode\":\"X\"}");
    assert_int_equal(st, 202);
    json_decref(j);
    assert_int_equal(release(&c->nodes[f2], "k-follower", "alice"), 200);
    assert_true(held_token(&c->nodes[l], "k-follower", "carol") > t2);

    /* /health: roles, one leader everyone names, peers reachable. */
    for (int i = 0; i < 3; i++) {
        json_t *h = h_json(&c->nodes[i], "GET", "/health", NULL, &st);
        assert_int_equal(st, 200);
        assert_string_equal(json_string_value(json_object_get(h, "role")),
                            i == l ? "leader" : "follower");
        assert_int_equal(json_integer_value(json_object_get(h, "leader_id")), l + 1);
        assert_true(json_integer_value(json_object_get(h, "commit_index")) >= 4);
        json_t *peers = json_object_get(h, "peers");
        assert_int_equal(json_array_size(peers), 2);
        size_t k;
        json_t *p;
        json_array_foreach(peers, k, p)
        {
            assert_true(json_is_true(json_object_get(p, "reachable")));
        }
        json_decref(h);
    }
    /* Metrics: the follower forwarded, the leader leads. */
    assert_true(h_metric(&c->nodes[f1], "raft_forwarded_total") >= 1);
    assert_int_equal(h_metric(&c->nodes[l], "raft_is_leader"), 1);
    assert_int_equal(h_metric(&c->nodes[f1], "raft_is_leader"), 0);
    assert_true(h_metric(&c->nodes[l], "raft_proposal_seconds_count") >= 1);
    /* Transport counters reach the metrics (counters only ever grow). */
    assert_true(h_metric(&c->nodes[l], "transport_frames_total{direction=\"sent\"}") > 0);
    assert_true(h_metric(&c->nodes[f1], "transport_frames_total{direction=\"received\"}") > 0);
}

static void test_killing_the_leader_loses_no_granted_lock_and_it_catches_up(void **state)
{
    h_cluster *c = *state;
    int l = h_cluster_leader(c, 0, 5000);
    assert_true(l >= 0);
    long long tokens[6];
    char key[32], client[32];
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof key, "held-%d", i);
        snprintf(client, sizeof client, "holder-%d", i);
        tokens[i] = acquire_x(&c->nodes[i % 3], key, client, 0);
        assert_true(tokens[i] > 0);
    }
    h_node_kill9(&c->nodes[l]);
    long long start = h_now_ms();
    int nl = h_cluster_leader(c, 1u << l, 10000);
    assert_true(nl >= 0 && nl != l);
    /* A new leader serves within a few seconds of the crash. */
    long long t = -1;
    while (t < 0 && h_now_ms() - start < 10000)
        t = acquire_x(&c->nodes[nl], "after-crash", "dave", 0);
    assert_true(t > tokens[5]);
    fprintf(stderr, "    new leader serving %lld ms after kill -9\n", h_now_ms() - start);
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof key, "held-%d", i);
        snprintf(client, sizeof client, "holder-%d", i);
        assert_int_equal(held_token(&c->nodes[nl], key, client), tokens[i]);
    }
    /* More than a snapshot's worth of entries while the old leader is
     * down, so the others compact past what it has. */
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "while-down-%d", i);
        assert_true(acquire_x(&c->nodes[nl], key, "erin", 0) > 0);
    }
    assert_int_equal(h_node_start(&c->nodes[l]), 0);
    long long commit = h_health_int(&c->nodes[nl], "commit_index");
    long long deadline = h_now_ms() + 10000;
    while (h_health_int(&c->nodes[l], "applied_index") < commit && h_now_ms() < deadline)
        usleep(20000);
    assert_true(h_health_int(&c->nodes[l], "applied_index") >= commit);
    assert_true(h_metric(&c->nodes[l], "raft_snapshots_installed_total") >= 1);
    /* It serves, and sees everything. */
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof key, "held-%d", i);
        snprintf(client, sizeof client, "holder-%d", i);
        assert_int_equal(held_token(&c->nodes[l], key, client), tokens[i]);
    }
    assert_true(held_token(&c->nodes[l], "while-down-19", "erin") > 0);
}

static void test_a_leader_cut_off_refuses_writes_and_the_majority_serves(void **state)
{
    h_cluster *c = *state;
    int l = h_cluster_leader(c, 0, 5000);
    assert_true(l >= 0);
    assert_true(acquire_x(&c->nodes[l], "before", "frank", 0) > 0);
    cut_off(c, l);

    /* The minority never answers a write with success: 503 + Retry-After. */
    h_resp r;
    h_http(&c->nodes[l], "POST", "/locks/acquire",
           "{\"key\":\"minority\",\"client_id\":\"gina\",\"mode\":\"X\"}", "", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.retry_after, "1");
    h_resp_free(&r);

    /* The majority elects one of its own and serves. */
    int nl = h_cluster_leader(c, 1u << l, 10000);
    assert_true(nl >= 0 && nl != l);
    long long t = -1;
    long long deadline = h_now_ms() + 10000;
    while (t < 0 && h_now_ms() < deadline)
        t = acquire_x(&c->nodes[nl], "majority", "hank", 0);
    assert_true(t > 0);
    /* The cut-off node cannot serve a read either: it may be stale. */
    assert_int_equal(held_token(&c->nodes[l], "majority", "hank"), -1);

    /* Heal: one leader again, and the old one sees the majority's write. */
    for (int i = 0; i < 3; i++)
        drop(&c->nodes[i], "");
    assert_true(h_cluster_leader(c, 0, 10000) >= 0);
    deadline = h_now_ms() + 10000;
    long long seen = -1;
    while (seen != t && h_now_ms() < deadline)
        seen = held_token(&c->nodes[l], "majority", "hank");
    assert_int_equal(seen, t);
    assert_int_equal(held_token(&c->nodes[l], "minority", "gina"), 0);
}

/* ---- exclusivity under faults ------------------------------------------ */

#define CLIENTS 4
#define MAX_HOLDS 4096

/* Times in microseconds: on loopback one holder can follow another
 * within the same millisecond. */
typedef struct {
    long long token, granted_us, released_us;
} hold;

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

typedef struct {
    h_cluster *c;
    int id;
    volatile int *stop;
    hold *holds;
    size_t n_holds;
    unsigned seed;
} client_arg;

static void *client_main(void *p)
{
    client_arg *a = p;
    char name[16];
    snprintf(name, sizeof name, "client-%d", a->id);
    while (!*a->stop && a->n_holds < MAX_HOLDS) {
        /* Any node, any time: the client never looks for the leader. */
        const h_node *n = &a->c->nodes[rand_r(&a->seed) % 3];
        if (n->pid <= 0) continue;
        long long token = acquire_x(n, "fenced", name, 1000);
        if (token <= 0) continue; /* 202, 503, a dead node: ask again */
        hold *h = &a->holds[a->n_holds++];
        h->token = token;
        h->granted_us = now_us();
        h->released_us = 0;
        /* Release until some node confirms; the first attempt is the
         * earliest the lock can have been freed. 404: an earlier attempt
         * whose answer was lost already released it. */
        for (;;) {
            n = &a->c->nodes[rand_r(&a->seed) % 3];
            if (n->pid <= 0) continue;
            if (!h->released_us) h->released_us = now_us();
            int st = release(n, "fenced", name);
            if (st == 200 || st == 404) break;
        }
    }
    return NULL;
}

static int by_grant(const void *x, const void *y)
{
    const hold *a = x, *b = y;
    return a->granted_us < b->granted_us ? -1 : a->granted_us > b->granted_us;
}

static void test_no_two_clients_hold_the_x_lock_at_once_across_crashes_and_partitions(void **state)
{
    h_cluster *c = *state;
    volatile int stop = 0;
    pthread_t th[CLIENTS];
    client_arg args[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        args[i] = (client_arg){c, i, &stop, calloc(MAX_HOLDS, sizeof(hold)), 0, 77u + (unsigned)i};
        pthread_create(&th[i], NULL, client_main, &args[i]);
    }
    /* Faults while they work: kill -9 the leader and bring it back, then
     * cut the new leader off and heal. Each step waits on a condition. */
    int l = h_cluster_leader(c, 0, 5000);
    assert_true(l >= 0);
    h_node_kill9(&c->nodes[l]);
    int nl = h_cluster_leader(c, 1u << l, 10000);
    assert_true(nl >= 0);
    assert_int_equal(h_node_start(&c->nodes[l]), 0);
    nl = h_cluster_leader(c, 0, 10000);
    assert_true(nl >= 0);
    cut_off(c, nl);
    assert_true(h_cluster_leader(c, 1u << nl, 10000) >= 0);
    for (int i = 0; i < 3; i++)
        drop(&c->nodes[i], "");
    assert_true(h_cluster_leader(c, 0, 10000) >= 0);
    /* Some more calm work, then stop. */
    size_t before = 0;
    for (int i = 0; i < CLIENTS; i++)
        before += args[i].n_holds;
    long long deadline = h_now_ms() + 10000;
    for (;;) {
        size_t now = 0;
        for (int i = 0; i < CLIENTS; i++)
            now += args[i].n_holds;
        if (now >= before + 20 || h_now_ms() > deadline) break;
        usleep(20000);
    }
    stop = 1;
    hold *all = calloc(CLIENTS * MAX_HOLDS, sizeof(hold));
    size_t n = 0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        memcpy(all + n, args[i].holds, args[i].n_holds * sizeof(hold));
        n += args[i].n_holds;
        free(args[i].holds);
    }
    fprintf(stderr, "    %zu grants of the X lock across the faults\n", n);
    assert_true(n >= 20);
    qsort(all, n, sizeof *all, by_grant);
    for (size_t i = 1; i < n; i++) {
        /* Each grant came after the previous holder let go, and carries a
         * larger fencing token: a stale holder is always fenced off. */
        assert_true(all[i].granted_us >= all[i - 1].released_us);
        assert_true(all[i].token > all[i - 1].token);
    }
    free(all);
}

static int member_change(const h_node *n, const char *action, int id, int peer_port)
{
    int st;
    json_t *j = h_post(n, "/admin/members", &st,
                       "{\"action\":\"%s\",\"id\":%d,\"peer_addr\":\"127.0.0.1:%d\"}", action, id,
                       peer_port);
    json_decref(j);
    return st;
}

static void test_a_fourth_node_joins_and_a_member_leaves_while_the_cluster_serves(void **state)
{
    h_cluster *c = *state;
    int l = h_cluster_leader(c, 0, 5000);
    assert_true(l >= 0);
    long long before = acquire_x(&c->nodes[l], "before-join", "ivy", 0);
    assert_true(before > 0);
    /* More than a snapshot's worth, so the newcomer starts from one. */
    char key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "filler-%d", i);
        assert_true(acquire_x(&c->nodes[l], key, "ivy", 0) > 0);
    }
    int nw = h_cluster_add_node(c, fast_env);
    assert_int_equal(nw, 3);
    /* Through a follower, which forwards the change to the leader. */
    int f = (l + 1) % 3;
    assert_int_equal(member_change(&c->nodes[f], "add", 4, c->nodes[nw].peer_port), 200);
    assert_int_equal(member_change(&c->nodes[l], "add", 4, c->nodes[nw].peer_port), 409);
    /* The newcomer catches up and serves, reads included. */
    long long commit = h_health_int(&c->nodes[l], "commit_index");
    long long deadline = h_now_ms() + 10000;
    while (h_health_int(&c->nodes[nw], "applied_index") < commit && h_now_ms() < deadline)
        usleep(20000);
    assert_true(h_health_int(&c->nodes[nw], "applied_index") >= commit);
    assert_int_equal(held_token(&c->nodes[nw], "before-join", "ivy"), before);
    assert_true(acquire_x(&c->nodes[nw], "via-newcomer", "jack", 0) > before);
    int st;
    json_t *h = h_json(&c->nodes[l], "GET", "/health", NULL, &st);
    assert_int_equal(json_array_size(json_object_get(h, "peers")), 3);
    json_decref(h);
    long long t;

    /* A node removed through its own API hears the answer too (from the
     * leader: it never sees the entry that removes it), and is welcome
     * back. */
    assert_int_equal(member_change(&c->nodes[nw], "remove", 4, 0), 200);
    assert_int_equal(acquire_x(&c->nodes[nw], "from-outside", "lena", 0), -503);
    assert_int_equal(member_change(&c->nodes[l], "add", 4, c->nodes[nw].peer_port), 200);
    t = -1;
    deadline = h_now_ms() + 10000;
    while (t < 0 && h_now_ms() < deadline)
        t = acquire_x(&c->nodes[nw], "back-again", "lena", 0);
    assert_true(t > 0);

    /* Remove the leader: it steps down once that commits, the other three
     * elect one of themselves, and writes go on without it. */
    assert_int_equal(member_change(&c->nodes[l], "remove", l + 1, 0), 200);
    int nl = h_cluster_leader(c, 1u << l, 10000);
    assert_true(nl >= 0 && nl != l);
    h_node_kill9(&c->nodes[l]);
    t = -1;
    deadline = h_now_ms() + 10000;
    while (t < 0 && h_now_ms() < deadline)
        t = acquire_x(&c->nodes[nw], "after-leave", "kate", 0);
    assert_true(t > 0);
    assert_int_equal(member_change(&c->nodes[nl], "remove", l + 1, 0), 404);
    h = h_json(&c->nodes[nl], "GET", "/health", NULL, &st);
    assert_int_equal(json_array_size(json_object_get(h, "peers")), 2);
    assert_true(json_is_true(json_object_get(h, "member")));
    json_decref(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_node_serves_writes_and_reads_see_them_at_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_killing_the_leader_loses_no_granted_lock_and_it_catches_up, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_leader_cut_off_refuses_writes_and_the_majority_serves, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_no_two_clients_hold_the_x_lock_at_once_across_crashes_and_partitions, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_fourth_node_joins_and_a_member_leaves_while_the_cluster_serves, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
