/*
 * test_node.c: the node runtime: calls from many threads reach the loop,
 * blocking acquires wake on grants and on their deadline, leases end by
 * themselves, and close fails what is still waiting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <cmocka.h>

#include "dsync.h"
#include "util/util.h"

/* The defaults, memory only: tests share no directory. */
static dsync_config memory_config(void)
{
    dsync_config cfg;
    dsync_config_defaults(&cfg);
    cfg.data_dir[0] = '\0';
    return cfg;
}

static int open_node(void **state)
{
    dsync_config cfg = memory_config();
    dsync_node *n;
    assert_int_equal(dsync_node_open(&cfg, &n), 0);
    *state = n;
    return 0;
}

static int close_node(void **state)
{
    dsync_node_close(*state);
    return 0;
}

static dsync_lock_result acquire(dsync_node *n, const char *client, const char *key,
                                 dsync_lock_mode mode, uint64_t ttl, uint64_t wait)
{
    dsync_lock_request req = {key, client, mode, ttl, wait};
    dsync_lock_result res;
    assert_int_equal(dsync_lock_acquire(n, &req, &res), 0);
    return res;
}

static void test_acquire_and_release_round_trip_through_the_loop(void **state)
{
    dsync_node *n = *state;
    dsync_lock_result r = acquire(n, "c1", "k", DSYNC_LOCK_EXCLUSIVE, 0, 0);
    assert_int_equal(r.status, DSYNC_LOCK_GRANTED);
    assert_true(r.fencing_token > 0);
    /* Default lease applies when ttl_ms is 0. */
    assert_in_range(r.lease_ms, 1, 30000);
    int was_waiting = -1;
    assert_int_equal(dsync_lock_release(n, "k", "c1", &was_waiting), 0);
    assert_int_equal(was_waiting, 0);
    assert_int_equal(dsync_lock_release(n, "k", "c1", NULL), DSYNC_ENOTFOUND);
}

static void test_bad_arguments_are_refused_without_change(void **state)
{
    dsync_node *n = *state;
    dsync_lock_request bad[] = {
        {"", "c", DSYNC_LOCK_SHARED, 0, 0},
        {"k", "", DSYNC_LOCK_SHARED, 0, 0},
        {"k", "c", (dsync_lock_mode)7, 0, 0},
        {"k", "c", DSYNC_LOCK_SHARED, 86400001ULL * 1000, 0}, /* over the max ttl */
        {"k", "c", DSYNC_LOCK_SHARED, 0, 3600001ULL * 1000},  /* over the max wait */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dsync_lock_result res;
        assert_int_equal(dsync_lock_acquire(n, &bad[i], &res), DSYNC_EINVAL);
    }
    dsync_lock_state st;
    assert_int_equal(dsync_lock_state_get(n, &st), 0);
    assert_int_equal(st.n_locks, 0);
    dsync_lock_state_free(&st);
    /* Fault switches exist only on a node opened for fault injection. */
    uint64_t peer = 2;
    assert_int_equal(dsync_node_drop_peers(n, &peer, 1), DSYNC_EINVAL);
    assert_int_equal(dsync_node_delay_queue_fsync(n, 10), DSYNC_EINVAL);
}

/* With fault injection on, the queue disk delay takes 0 to the bound. */
static void test_the_queue_disk_delay_is_bounded(void **state)
{
    (void)state;
    dsync_config cfg = memory_config();
    cfg.fault_injection = 1;
    dsync_node *n;
    assert_int_equal(dsync_node_open(&cfg, &n), 0);
    assert_int_equal(dsync_node_delay_queue_fsync(n, DSYNC_FAULT_DELAY_MAX_MS + 1), DSYNC_EINVAL);
    assert_int_equal(dsync_node_delay_queue_fsync(n, DSYNC_FAULT_DELAY_MAX_MS), 0);
    assert_int_equal(dsync_node_delay_queue_fsync(n, 0), 0);
    dsync_node_close(n);
}

typedef struct {
    dsync_node *node;
    dsync_lock_result res;
    int rc;
} waiter_arg;

static void *blocking_acquire(void *p)
{
    waiter_arg *a = p;
    dsync_lock_request req = {"k", "w", DSYNC_LOCK_EXCLUSIVE, 0, 10000};
    a->rc = dsync_lock_acquire(a->node, &req, &a->res);
    return NULL;
}

/* Polls the lock state until the waiter shows up, bounded. */
static void wait_for_waiters(dsync_node *n, size_t count)
{
    uint64_t deadline = ut_now_ms() + 5000;
    for (;;) {
        dsync_lock_state st;
        assert_int_equal(dsync_lock_state_get(n, &st), 0);
        size_t w = st.n_locks ? st.locks[0].n_waiters : 0;
        dsync_lock_state_free(&st);
        if (w == count) return;
        assert_true(ut_now_ms() < deadline);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

static void test_blocking_acquire_wakes_on_the_release(void **state)
{
    dsync_node *n = *state;
    dsync_lock_result first = acquire(n, "h", "k", DSYNC_LOCK_EXCLUSIVE, 0, 0);
    waiter_arg a = {.node = n};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, blocking_acquire, &a), 0);
    wait_for_waiters(n, 1);
    assert_int_equal(dsync_lock_release(n, "k", "h", NULL), 0);
    pthread_join(t, NULL);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.res.status, DSYNC_LOCK_GRANTED);
    assert_true(a.res.fencing_token > first.fencing_token);
}

static void test_blocking_acquire_answers_waiting_at_its_deadline(void **state)
{
    dsync_node *n = *state;
    acquire(n, "h", "k", DSYNC_LOCK_EXCLUSIVE, 0, 0);
    uint64_t start = ut_now_ms();
    dsync_lock_result r = acquire(n, "w", "k", DSYNC_LOCK_EXCLUSIVE, 0, 150);
    uint64_t took = ut_now_ms() - start;
    assert_int_equal(r.status, DSYNC_LOCK_WAITING);
    assert_int_equal(r.position, 1);
    assert_true(took >= 150);
}

static void test_an_unrenewed_lease_ends_and_grants_the_waiter(void **state)
{
    dsync_node *n = *state;
    dsync_lock_result h = acquire(n, "h", "k", DSYNC_LOCK_EXCLUSIVE, 100, 0);
    assert_int_equal(h.status, DSYNC_LOCK_GRANTED);
    /* Blocks until the holder's lease runs out, with nobody releasing. */
    dsync_lock_result w = acquire(n, "w", "k", DSYNC_LOCK_EXCLUSIVE, 0, 10000);
    assert_int_equal(w.status, DSYNC_LOCK_GRANTED);
    assert_true(w.fencing_token > h.fencing_token);
    assert_int_equal(dsync_lock_release(n, "k", "h", NULL), DSYNC_ENOTFOUND);
}

static void test_close_fails_a_call_that_is_still_waiting(void **state)
{
    dsync_config cfg = memory_config();
    dsync_node *n;
    assert_int_equal(dsync_node_open(&cfg, &n), 0);
    acquire(n, "h", "k", DSYNC_LOCK_EXCLUSIVE, 0, 0);
    waiter_arg a = {.node = n};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, blocking_acquire, &a), 0);
    wait_for_waiters(n, 1);
    dsync_node_close(n);
    pthread_join(t, NULL);
    assert_int_equal(a.rc, DSYNC_ECLOSED);
}

typedef struct {
    dsync_node *node;
    int id;
    int *inside;
    uint64_t *last_token;
    pthread_mutex_t *mu;
    int violations;
} worker_arg;

/* Each worker takes the X lock with a blocking acquire, checks nobody else
 * is inside, and releases; tokens must rise in grant order. */
static void *worker(void *p)
{
    worker_arg *a = p;
    char client[16];
    snprintf(client, sizeof client, "w%d", a->id);
    for (int i = 0; i < 200; i++) {
        dsync_lock_request req = {"hot", client, DSYNC_LOCK_EXCLUSIVE, 0, 10000};
        dsync_lock_result res;
        if (dsync_lock_acquire(a->node, &req, &res) != 0 || res.status != DSYNC_LOCK_GRANTED) {
            a->violations++;
            continue;
        }
        pthread_mutex_lock(a->mu);
        if (*a->inside != 0 || res.fencing_token <= *a->last_token) a->violations++;
        *a->inside = 1;
        *a->last_token = res.fencing_token;
        pthread_mutex_unlock(a->mu);
        pthread_mutex_lock(a->mu);
        *a->inside = 0;
        pthread_mutex_unlock(a->mu);
        if (dsync_lock_release(a->node, "hot", client, NULL) != 0) a->violations++;
    }
    return NULL;
}

static void test_many_threads_take_turns_on_one_exclusive_lock(void **state)
{
    dsync_node *n = *state;
    enum { T = 8 };
    pthread_t th[T];
    worker_arg args[T];
    int inside = 0;
    uint64_t last = 0;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    for (int i = 0; i < T; i++) {
        args[i] = (worker_arg){n, i, &inside, &last, &mu, 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].violations, 0);
    }
    assert_true(last >= T * 200);
}

static void test_metrics_count_outcomes(void **state)
{
    dsync_node *n = *state;
    acquire(n, "a", "k1", DSYNC_LOCK_SHARED, 0, 0);
    acquire(n, "b", "k1", DSYNC_LOCK_EXCLUSIVE, 0, 0);
    char *text;
    size_t len;
    assert_int_equal(dsync_node_metrics(n, &text, &len), 0);
    assert_non_null(strstr(text, "locks_acquire_total{mode=\"S\",result=\"ok\"} 1\n"));
    assert_non_null(strstr(text, "locks_acquire_total{mode=\"X\",result=\"wait\"} 1\n"));
    assert_non_null(strstr(text, "locks_held 1\n"));
    assert_non_null(strstr(text, "locks_waiting 1\n"));
    free(text);
}

/* ---- durability ---------------------------------------------------------- */

static dsync_node *open_in(const char *dir, uint64_t snapshot_entries)
{
    dsync_config cfg;
    dsync_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    cfg.snapshot_entries = snapshot_entries;
    dsync_node *n;
    assert_int_equal(dsync_node_open(&cfg, &n), 0);
    return n;
}

static void rm_rf(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_locks_and_tokens_survive_a_restart(void **state)
{
    char dir[] = "/tmp/dsync-node-XXXXXX";
    assert_non_null(mkdtemp(dir));
    dsync_node *n = open_in(dir, 10000);
    dsync_lock_result h = acquire(n, "holder", "k", DSYNC_LOCK_EXCLUSIVE, 60000, 0);
    dsync_lock_result w = acquire(n, "waiter", "k", DSYNC_LOCK_SHARED, 60000, 0);
    assert_int_equal(w.status, DSYNC_LOCK_WAITING);
    acquire(n, "r", "other", DSYNC_LOCK_SHARED, 60000, 0);
    dsync_node_close(n);

    n = open_in(dir, 10000);
    dsync_lock_state st;
    assert_int_equal(dsync_lock_state_get(n, &st), 0);
    assert_int_equal(st.n_locks, 2);
    assert_string_equal(st.locks[0].key, "k");
    assert_string_equal(st.locks[0].holders[0].client_id, "holder");
    assert_int_equal(st.locks[0].holders[0].fencing_token, h.fencing_token);
    assert_string_equal(st.locks[0].waiters[0].client_id, "waiter");
    dsync_lock_state_free(&st);
    /* Tokens keep rising across the restart. */
    assert_int_equal(dsync_lock_release(n, "k", "holder", NULL), 0);
    dsync_lock_result g = acquire(n, "waiter", "k", DSYNC_LOCK_SHARED, 60000, 0);
    assert_int_equal(g.status, DSYNC_LOCK_GRANTED);
    assert_true(g.fencing_token > h.fencing_token + 1);
    dsync_node_close(n);
    rm_rf(dir);
}

static uint64_t flushes_by(dsync_node *n, const char *thread)
{
    char *text, needle[64];
    size_t len;
    assert_int_equal(dsync_node_metrics(n, &text, &len), 0);
    snprintf(needle, sizeof needle, "log_flushes_total{thread=\"%s\"} ", thread);
    const char *p = strstr(text, needle);
    assert_non_null(p);
    uint64_t v = strtoull(p + strlen(needle), NULL, 10);
    free(text);
    return v;
}

#define BUSY_THREADS 8
#define BUSY_OPS 200

typedef struct {
    dsync_node *n;
    int id;
    uint64_t tokens[BUSY_OPS];
    int failures; /* checked by the main thread: cmocka asserts only there */
} busy_worker;

static void *busy_run(void *p)
{
    busy_worker *w = p;
    for (int i = 0; i < BUSY_OPS; i++) {
        char key[32];
        snprintf(key, sizeof key, "busy-%d-%d", w->id, i);
        dsync_lock_request req = {key, "busy", DSYNC_LOCK_EXCLUSIVE, 600000, 0};
        dsync_lock_result r;
        if (dsync_lock_acquire(w->n, &req, &r) != 0 || r.status != DSYNC_LOCK_GRANTED)
            w->failures++;
        else
            w->tokens[i] = r.fencing_token;
    }
    return NULL;
}

/* A lone node commits its first view at its first tick: wait for it, so
 * that from then on the log holds only this test's grants. */
static void wait_for_view(dsync_node *n)
{
    uint64_t until = ut_now_ms() + 10000;
    for (;;) {
        dsync_queue_state st;
        assert_int_equal(dsync_queue_state_get(n, NULL, &st), 0);
        bool ready = st.view_epoch > 0;
        dsync_queue_state_free(&st);
        if (ready) return;
        assert_true(ut_now_ms() < until);
        struct timespec pause = {0, 5000000};
        nanosleep(&pause, NULL);
    }
}

/* A disk idle for a while (one caller now and then) is written by the
 * loop itself; many callers at once mostly go through the writer thread
 * (not asserted: under valgrind even they can leave the disk idle). What
 * either made durable and acknowledged is there after a restart. */
static void test_the_log_is_written_by_the_loop_when_idle_and_all_of_it_survives(void **state)
{
    (void)state;
    char dir[] = "/tmp/dsync-node-XXXXXX";
    assert_non_null(mkdtemp(dir));
    dsync_node *n = open_in(dir, 100000);
    wait_for_view(n);
    enum { QUIET_OPS = 20 };
    uint64_t quiet_tokens[QUIET_OPS];
    uint64_t loop_before = flushes_by(n, "loop");
    for (int i = 0; i < QUIET_OPS; i++) {
        /* The workload: a caller that pauses 2 ms, far past the 0.1 ms
         * after which the disk counts as idle. */
        struct timespec pause = {0, 2000000};
        nanosleep(&pause, NULL);
        char key[32];
        snprintf(key, sizeof key, "quiet-%d", i);
        dsync_lock_result r = acquire(n, "quiet", key, DSYNC_LOCK_EXCLUSIVE, 600000, 0);
        assert_int_equal(r.status, DSYNC_LOCK_GRANTED);
        quiet_tokens[i] = r.fencing_token;
    }
    assert_true(flushes_by(n, "loop") >= loop_before + QUIET_OPS);

    busy_worker w[BUSY_THREADS];
    pthread_t th[BUSY_THREADS];
    for (int i = 0; i < BUSY_THREADS; i++) {
        w[i] = (busy_worker){.n = n, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, busy_run, &w[i]), 0);
    }
    for (int i = 0; i < BUSY_THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < BUSY_THREADS; i++)
        assert_int_equal(w[i].failures, 0);
    dsync_node_close(n);

    /* Every grant either thread made durable is there, token and all. */
    n = open_in(dir, 100000);
    dsync_lock_state st;
    assert_int_equal(dsync_lock_state_get(n, &st), 0);
    assert_int_equal(st.n_locks, QUIET_OPS + BUSY_THREADS * BUSY_OPS);
    size_t found = 0;
    for (size_t i = 0; i < st.n_locks; i++) {
        int a, b;
        uint64_t want = 0;
        if (sscanf(st.locks[i].key, "quiet-%d", &a) == 1)
            want = quiet_tokens[a];
        else if (sscanf(st.locks[i].key, "busy-%d-%d", &a, &b) == 2)
            want = w[a].tokens[b];
        assert_int_equal(st.locks[i].holders[0].fencing_token, want);
        found++;
    }
    assert_int_equal(found, QUIET_OPS + BUSY_THREADS * BUSY_OPS);
    dsync_lock_state_free(&st);
    dsync_node_close(n);
    rm_rf(dir);
}

static void test_snapshots_compact_the_log_and_restore_the_table(void **state)
{
    char dir[] = "/tmp/dsync-node-XXXXXX";
    assert_non_null(mkdtemp(dir));
    dsync_node *n = open_in(dir, 16);
    uint64_t last = 0, k6 = 0;
    char key[16];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "k%d", i % 7);
        dsync_lock_result r = acquire(n, "c", key, DSYNC_LOCK_EXCLUSIVE, 60000, 0);
        last = r.fencing_token > last ? r.fencing_token : last;
        if (i == 6) k6 = r.fencing_token;
        if (i % 7 != 6) assert_int_equal(dsync_lock_release(n, key, "c", NULL), 0);
    }
    char *text;
    size_t len;
    assert_int_equal(dsync_node_metrics(n, &text, &len), 0);
    assert_null(strstr(text, "log_snapshots_total 0\n"));
    free(text);
    dsync_node_close(n);

    n = open_in(dir, 16);
    dsync_lock_state st;
    assert_int_equal(dsync_lock_state_get(n, &st), 0);
    assert_int_equal(st.n_locks, 1);
    assert_string_equal(st.locks[0].key, "k6");
    assert_int_equal(st.locks[0].holders[0].fencing_token, k6);
    dsync_lock_state_free(&st);
    dsync_lock_result r = acquire(n, "d", "fresh", DSYNC_LOCK_EXCLUSIVE, 60000, 0);
    assert_true(r.fencing_token > last);
    dsync_node_close(n);
    rm_rf(dir);
}

static void test_a_log_corrupt_in_the_middle_refuses_to_open(void **state)
{
    char dir[] = "/tmp/dsync-node-XXXXXX";
    assert_non_null(mkdtemp(dir));
    dsync_node *n = open_in(dir, 10000);
    for (int i = 0; i < 5; i++)
        acquire(n, "c", "k", DSYNC_LOCK_EXCLUSIVE, 60000, 0);
    dsync_node_close(n);
    char path[128];
    snprintf(path, sizeof path, "%s/raft/log", dir);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 40, SEEK_SET);
    fputc('#', f);
    fclose(f);
    dsync_config cfg;
    dsync_config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    assert_int_equal(dsync_node_open(&cfg, &n), DSYNC_ECORRUPT);
    rm_rf(dir);
}

/* A lone node commits its first view inside dsync_node_open: the cache
 * serves from the first call, with MESI states and a bounded LRU. */
static void test_the_cache_serves_from_the_first_call_on_a_lone_node(void **state)
{
    dsync_node *n = *state;
    char *v = NULL, st = 0;
    size_t len = 0;
    assert_int_equal(dsync_cache_get(n, "nothing", &v, &len, &st), DSYNC_ENOTFOUND);
    assert_int_equal(dsync_cache_put(n, "k", "value", 5, 0), 0);
    assert_int_equal(dsync_cache_get(n, "k", &v, &len, &st), 0);
    assert_int_equal(len, 5);
    assert_string_equal(v, "value");
    assert_int_equal(st, 'M');
    free(v);
    assert_int_equal(dsync_cache_put(n, "k", "", 0, 0), 0); /* empty values are values */
    assert_int_equal(dsync_cache_get(n, "k", &v, &len, NULL), 0);
    assert_int_equal(len, 0);
    free(v);
    char key[300];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    assert_int_equal(dsync_cache_put(n, key, "v", 1, 0), DSYNC_EINVAL);
    assert_int_equal(dsync_cache_put(n, "", "v", 1, 0), DSYNC_EINVAL);
    assert_int_equal(dsync_cache_get(n, NULL, &v, &len, NULL), DSYNC_EINVAL);
    char *metrics;
    size_t mlen;
    assert_int_equal(dsync_node_metrics(n, &metrics, &mlen), 0);
    assert_non_null(strstr(metrics, "cache_hits_total 2"));
    assert_non_null(strstr(metrics, "cache_misses_total 1"));
    free(metrics);
}

/* GET key, which must read want; returns the node's state for it. */
static char get_value(dsync_node *n, const char *key, const char *want)
{
    char *v = NULL, st = 0;
    size_t len = 0;
    assert_int_equal(dsync_cache_get(n, key, &v, &len, &st), 0);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(v, want, len);
    free(v);
    return st;
}

/* A GET that hits is answered on the caller's thread, from the loop's
 * copies: it must still count as a use in the LRU, or a key only ever
 * read would be the first evicted. Two entries at most: of a (read since)
 * and b (not), a PUT of c evicts b, whatever the order of the PUTs. The
 * states tell which went: a line this node wrote is M; one evicted and read
 * again comes back from the home's memory as E. (The metrics are not used:
 * the loop updates them after it answers.) */
static void test_hits_on_the_callers_thread_keep_a_line_in_the_lru(void **state)
{
    (void)state;
    dsync_config cfg = memory_config();
    cfg.cache_max_entries = 2;
    dsync_node *n;
    assert_int_equal(dsync_node_open(&cfg, &n), 0);
    for (int round = 0; round < 20; round++) {
        char a[16], b[16], c[16];
        snprintf(a, sizeof a, "a%d", round);
        snprintf(b, sizeof b, "b%d", round);
        snprintf(c, sizeof c, "c%d", round);
        /* b is written last, so without the touch a is the oldest. */
        assert_int_equal(dsync_cache_put(n, a, "1", 1, 0), 0);
        assert_int_equal(dsync_cache_put(n, b, "2", 1, 0), 0);
        assert_int_equal(get_value(n, a, "1"), 'M');
        assert_int_equal(get_value(n, a, "1"), 'M'); /* a second hit before the loop looks */
        assert_int_equal(dsync_cache_put(n, c, "3", 1, 0), 0);
        assert_int_equal(get_value(n, a, "1"), 'M'); /* a stayed */
        assert_int_equal(get_value(n, b, "2"), 'E'); /* b went, and came back from the home */
    }
    dsync_node_close(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_acquire_and_release_round_trip_through_the_loop,
                                        open_node, close_node),
        cmocka_unit_test_setup_teardown(test_bad_arguments_are_refused_without_change, open_node,
                                        close_node),
        cmocka_unit_test(test_the_queue_disk_delay_is_bounded),
        cmocka_unit_test_setup_teardown(test_blocking_acquire_wakes_on_the_release, open_node,
                                        close_node),
        cmocka_unit_test_setup_teardown(test_blocking_acquire_answers_waiting_at_its_deadline,
                                        open_node, close_node),
        cmocka_unit_test_setup_teardown(test_an_unrenewed_lease_ends_and_grants_the_waiter,
                                        open_node, close_node),
        cmocka_unit_test(test_close_fails_a_call_that_is_still_waiting),
        cmocka_unit_test_setup_teardown(test_many_threads_take_turns_on_one_exclusive_lock,
                                        open_node, close_node),
        cmocka_unit_test_setup_teardown(test_metrics_count_outcomes, open_node, close_node),
        cmocka_unit_test_setup_teardown(test_the_cache_serves_from_the_first_call_on_a_lone_node,
                                        open_node, close_node),
        cmocka_unit_test(test_hits_on_the_callers_thread_keep_a_line_in_the_lru),
        cmocka_unit_test(test_locks_and_tokens_survive_a_restart),
        cmocka_unit_test(test_the_log_is_written_by_the_loop_when_idle_and_all_of_it_survives),
        cmocka_unit_test(test_snapshots_compact_the_log_and_restore_the_table),
        cmocka_unit_test(test_a_log_corrupt_in_the_middle_refuses_to_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
