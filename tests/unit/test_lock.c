/*
 * test_lock.c: the lock table: compatibility, FIFO fairness, upgrades,
 * deadlocks of every length, leases, fencing tokens, snapshots, and a
 * seeded random walk checked after every step by the table's own
 * invariants and by an independent checker built on lk_state().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "lock/lock.h"

#define S DSYNC_LOCK_SHARED
#define X DSYNC_LOCK_EXCLUSIVE

static uint64_t now;

static int setup(void **state)
{
    now = 1000;
    *state = lk_table_new();
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    lk_table_free(*state);
    return 0;
}

static dsync_lock_result acq_full(lk_table *t, const char *c, const char *k, dsync_lock_mode m,
                                  uint64_t ttl, uint64_t wait, int expect_rc)
{
    lk_request q = {k, c, m, ttl, wait, now};
    dsync_lock_result r;
    assert_int_equal(lk_acquire(t, &q, &r), expect_rc);
    return r;
}

static dsync_lock_result acq(lk_table *t, const char *c, const char *k, dsync_lock_mode m)
{
    return acq_full(t, c, k, m, 1000, 0, 0);
}

static uint64_t granted(lk_table *t, const char *c, const char *k, dsync_lock_mode m)
{
    dsync_lock_result r = acq(t, c, k, m);
    assert_int_equal(r.status, DSYNC_LOCK_GRANTED);
    assert_true(r.fencing_token > 0);
    return r.fencing_token;
}

static void waits(lk_table *t, const char *c, const char *k, dsync_lock_mode m, uint32_t pos)
{
    dsync_lock_result r = acq(t, c, k, m);
    assert_int_equal(r.status, DSYNC_LOCK_WAITING);
    assert_int_equal(r.position, pos);
}

static void rel(lk_table *t, const char *c, const char *k, int expect_rc)
{
    assert_int_equal(lk_release(t, k, c, now, NULL), expect_rc);
}

static void check(lk_table *t)
{
    char err[256];
    if (lk_check_invariants(t, err, sizeof err) != 0) fail_msg("invariant: %s", err);
}

static ut_buf snap(lk_table *t)
{
    ut_buf b;
    ut_buf_init(&b);
    assert_int_equal(lk_table_snapshot(t, &b), 0);
    return b;
}

/* ---- compatibility and fairness ------------------------------------------ */

static void test_s_is_shared_and_x_excludes_everyone(void **state)
{
    lk_table *t = *state;
    granted(t, "a", "k", S);
    granted(t, "b", "k", S);
    waits(t, "c", "k", X, 1);
    granted(t, "x", "other", X);
    waits(t, "y", "other", S, 1);
    waits(t, "z", "other", X, 2);
    check(t);
}

static void test_x_waits_behind_earlier_s_holders_and_later_s_waits_behind_x(void **state)
{
    lk_table *t = *state;
    granted(t, "r1", "k", S);
    waits(t, "w", "k", X, 1);
    /* Compatible with the holder, but someone waits: no overtaking. */
    waits(t, "r2", "k", S, 2);
    rel(t, "r1", "k", 0);
    dsync_lock_result r = acq(t, "w", "k", X);
    assert_int_equal(r.status, DSYNC_LOCK_GRANTED);
    waits(t, "r2", "k", S, 1);
    check(t);
}

static void test_s_waiters_behind_a_released_x_are_granted_together(void **state)
{
    lk_table *t = *state;
    uint64_t tx = granted(t, "w", "k", X);
    waits(t, "a", "k", S, 1);
    waits(t, "b", "k", S, 2);
    waits(t, "c", "k", X, 3);
    rel(t, "w", "k", 0);
    assert_true(granted(t, "a", "k", S) > tx);
    granted(t, "b", "k", S);
    waits(t, "c", "k", X, 1);
    check(t);
}

static void test_acquiring_again_renews_and_keeps_the_token(void **state)
{
    lk_table *t = *state;
    uint64_t tok = granted(t, "a", "k", X);
    now += 600;
    dsync_lock_result r = acq_full(t, "a", "k", X, 5000, 0, 0);
    assert_int_equal(r.fencing_token, tok);
    assert_int_equal(r.lease_ms, 5000);
    /* Asking for S while holding X is a renewal too. */
    r = acq(t, "a", "k", S);
    assert_int_equal(r.status, DSYNC_LOCK_GRANTED);
    assert_int_equal(r.fencing_token, tok);
    assert_int_equal(lk_next_token(t), tok + 1);
    /* A waiter asking again keeps its place; another mode is refused. */
    waits(t, "b", "k", S, 1);
    waits(t, "b", "k", S, 1);
    ut_buf before = snap(t);
    acq_full(t, "b", "k", X, 1000, 0, DSYNC_EEXIST);
    ut_buf after = snap(t);
    assert_int_equal(before.len, after.len);
    ut_buf_free(&before);
    ut_buf_free(&after);
    check(t);
}

/* ---- upgrades ------------------------------------------------------------ */

static void test_a_sole_s_holder_upgrades_at_once_with_a_new_token(void **state)
{
    lk_table *t = *state;
    uint64_t ts = granted(t, "a", "k", S);
    uint64_t tx = granted(t, "a", "k", X);
    assert_true(tx > ts);
    waits(t, "b", "k", S, 1);
    check(t);
}

static void test_an_upgrade_waits_at_the_head_until_the_other_readers_leave(void **state)
{
    lk_table *t = *state;
    granted(t, "a", "k", S);
    granted(t, "b", "k", S);
    waits(t, "w", "k", X, 1);
    /* a's upgrade goes ahead of w, which arrived first. */
    waits(t, "a", "k", X, 1);
    dsync_lock_state st;
    assert_int_equal(lk_state(t, now, &st), 0);
    assert_string_equal(st.locks[0].waiters[0].client_id, "a");
    assert_true(st.locks[0].waiters[0].upgrade);
    assert_string_equal(st.locks[0].waiters[1].client_id, "w");
    dsync_lock_state_free(&st);
    rel(t, "b", "k", 0);
    dsync_lock_result r = acq(t, "a", "k", X);
    assert_int_equal(r.status, DSYNC_LOCK_GRANTED);
    waits(t, "w", "k", X, 1);
    check(t);
}

static void test_two_readers_both_upgrading_is_a_deadlock(void **state)
{
    lk_table *t = *state;
    granted(t, "a", "k", S);
    granted(t, "b", "k", S);
    waits(t, "a", "k", X, 1);
    dsync_lock_result r = acq(t, "b", "k", X);
    assert_int_equal(r.status, DSYNC_LOCK_DEADLOCK);
    assert_int_equal(r.cycle_len, 2);
    assert_string_equal(r.cycle[0], "b");
    assert_string_equal(r.cycle[1], "a");
    check(t);
}

static void test_releasing_an_upgrading_reader_drops_both_its_hold_and_its_wait(void **state)
{
    lk_table *t = *state;
    granted(t, "a", "k", S);
    granted(t, "b", "k", S);
    waits(t, "a", "k", X, 1);
    waits(t, "w", "k", X, 2);
    rel(t, "a", "k", 0);
    size_t keys, holders, waiters;
    lk_counts(t, &keys, &holders, &waiters);
    assert_int_equal(holders, 1);
    assert_int_equal(waiters, 1);
    waits(t, "w", "k", X, 1);
    check(t);
}

/* ---- deadlocks ----------------------------------------------------------- */

/* Clients c0..c(n-1) each hold key k_i; c_i then waits for k_(i+1). The
 * last request closes the cycle and must be refused without a trace. */
static void deadlock_of_length(lk_table *t, int n)
{
    char c[8][16], k[8][16];
    for (int i = 0; i < n; i++) {
        snprintf(c[i], sizeof c[i], "c%d", i);
        snprintf(k[i], sizeof k[i], "k%d", i);
        granted(t, c[i], k[i], X);
    }
    for (int i = 0; i < n - 1; i++)
        waits(t, c[i], k[i + 1], X, 1);
    ut_buf before = snap(t);
    uint64_t token = lk_next_token(t);
    dsync_lock_result r = acq(t, c[n - 1], k[0], X);
    assert_int_equal(r.status, DSYNC_LOCK_DEADLOCK);
    assert_int_equal(r.cycle_len, n);
    /* The requester first, then around the cycle in wait order. */
    assert_string_equal(r.cycle[0], c[n - 1]);
    for (int i = 1; i < n; i++)
        assert_string_equal(r.cycle[i], c[i - 1]);
    ut_buf after = snap(t);
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.data, after.data, before.len);
    assert_int_equal(lk_next_token(t), token);
    ut_buf_free(&before);
    ut_buf_free(&after);
    check(t);
}

static void test_deadlocks_of_length_two_to_five_are_refused_and_named(void **state)
{
    for (int n = 2; n <= 5; n++) {
        lk_table *t = lk_table_new();
        deadlock_of_length(t, n);
        lk_table_free(t);
    }
}

static void test_a_chain_of_waits_is_not_a_deadlock(void **state)
{
    lk_table *t = *state;
    granted(t, "a", "k1", X);
    granted(t, "b", "k2", X);
    waits(t, "a", "k2", X, 1);
    granted(t, "c", "k3", X);
    waits(t, "b", "k3", X, 1);
    waits(t, "d", "k1", S, 1); /* d -> a -> b -> c: a chain, no cycle */
    check(t);
}

/* ---- leases and events -------------------------------------------------- */

typedef struct {
    lk_event ev[16];
    char key[16][32], client[16][32];
    int n;
} events;

static void on_event(void *ctx, const lk_event *e)
{
    events *es = ctx;
    if (es->n == 16) return;
    es->ev[es->n] = *e;
    snprintf(es->key[es->n], 32, "%s", e->key);
    snprintf(es->client[es->n], 32, "%s", e->client_id);
    es->n++;
}

static void test_an_expired_holder_lease_grants_the_next_waiter(void **state)
{
    lk_table *t = *state;
    events es = {0};
    lk_table_set_listener(t, on_event, &es);
    acq_full(t, "h", "k", X, 100, 0, 0);
    acq_full(t, "w", "k", X, 1000, 0, 0);
    assert_int_equal(lk_next_deadline(t), now + 100);
    now += 99;
    assert_int_equal(lk_expire(t, now), 0);
    now += 1;
    assert_int_equal(lk_expire(t, now), 1);
    assert_int_equal(es.n, 2);
    assert_int_equal(es.ev[0].kind, LK_EV_EXPIRED);
    assert_string_equal(es.client[0], "h");
    assert_int_equal(es.ev[1].kind, LK_EV_GRANTED);
    assert_string_equal(es.client[1], "w");
    assert_string_equal(es.key[1], "k");
    assert_int_equal(es.ev[1].mode, X);
    assert_int_equal(es.ev[1].lease_deadline, now + 1000);
    dsync_lock_result r = acq(t, "w", "k", X);
    assert_int_equal(r.fencing_token, es.ev[1].fencing_token);
    check(t);
}

static void test_a_waiter_lease_is_the_longer_of_ttl_and_wait(void **state)
{
    lk_table *t = *state;
    events es = {0};
    lk_table_set_listener(t, on_event, &es);
    acq_full(t, "h", "k", X, 10000, 0, 0);
    acq_full(t, "w1", "k", X, 100, 500, 0);
    acq_full(t, "w2", "k", S, 100, 0, 0);
    now += 100;
    assert_int_equal(lk_expire(t, now), 1); /* w2 only */
    assert_int_equal(es.ev[0].kind, LK_EV_WAIT_EXPIRED);
    assert_string_equal(es.client[0], "w2");
    now += 400;
    assert_int_equal(lk_expire(t, now), 1); /* w1 */
    size_t keys, holders, waiters;
    lk_counts(t, &keys, &holders, &waiters);
    assert_int_equal(waiters, 0);
    check(t);
}

static void test_withdrawing_a_waiter_unblocks_those_behind_it(void **state)
{
    lk_table *t = *state;
    granted(t, "r", "k", S);
    waits(t, "w", "k", X, 1);
    waits(t, "r2", "k", S, 2);
    int was_waiting = 0;
    assert_int_equal(lk_release(t, "k", "w", now, &was_waiting), 0);
    assert_int_equal(was_waiting, 1);
    granted(t, "r2", "k", S);
    check(t);
}

static void test_release_errors_change_nothing(void **state)
{
    lk_table *t = *state;
    granted(t, "a", "k", S);
    ut_buf before = snap(t);
    rel(t, "b", "k", DSYNC_ENOTFOUND);
    rel(t, "a", "nokey", DSYNC_ENOTFOUND);
    rel(t, "", "k", DSYNC_EINVAL);
    char long_key[300];
    memset(long_key, 'x', 257);
    long_key[257] = '\0';
    acq_full(t, "a", long_key, S, 1000, 0, DSYNC_EINVAL);
    acq_full(t, "", "k", S, 1000, 0, DSYNC_EINVAL);
    acq_full(t, "a", "k", (dsync_lock_mode)7, 1000, 0, DSYNC_EINVAL);
    acq_full(t, "a", "k", S, 0, 0, DSYNC_EINVAL);
    ut_buf after = snap(t);
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.data, after.data, before.len);
    ut_buf_free(&before);
    ut_buf_free(&after);
}

/* ---- state and snapshots --------------------------------------------------- */

static void test_state_lists_keys_sorted_with_exact_edges(void **state)
{
    lk_table *t = *state;
    granted(t, "a", "zz", S);
    granted(t, "b", "zz", S);
    waits(t, "x", "zz", X, 1);
    waits(t, "s", "zz", S, 2);
    granted(t, "a", "aa", X);
    dsync_lock_state st;
    assert_int_equal(lk_state(t, now, &st), 0);
    assert_int_equal(st.n_locks, 2);
    assert_string_equal(st.locks[0].key, "aa");
    assert_int_equal(st.locks[0].mode, X);
    assert_string_equal(st.locks[1].key, "zz");
    assert_int_equal(st.locks[1].n_holders, 2);
    assert_string_equal(st.locks[1].holders[0].client_id, "a");
    assert_string_equal(st.locks[1].waiters[1].client_id, "s");
    /* x -> a, x -> b (holders); s -> x (earlier incompatible waiter). */
    assert_int_equal(st.n_edges, 3);
    assert_string_equal(st.edges[0].waiter, "x");
    assert_string_equal(st.edges[0].holder, "a");
    assert_string_equal(st.edges[1].holder, "b");
    assert_string_equal(st.edges[2].waiter, "s");
    assert_string_equal(st.edges[2].holder, "x");
    dsync_lock_state_free(&st);
}

static void test_a_snapshot_restores_the_same_table_and_refuses_damage(void **state)
{
    lk_table *t = *state;
    granted(t, "a", "k1", S);
    granted(t, "b", "k1", S);
    waits(t, "a", "k1", X, 1);
    waits(t, "c", "k1", S, 2);
    granted(t, "c", "k2", X);
    ut_buf b = snap(t);
    lk_table *r = lk_table_new();
    assert_int_equal(lk_table_restore(r, b.data, b.len), 0);
    ut_buf b2 = snap(r);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    assert_int_equal(lk_next_token(r), lk_next_token(t));
    /* The restored table behaves the same: b leaves, a's upgrade wins. */
    assert_int_equal(lk_release(r, "k1", "b", now, NULL), 0);
    dsync_lock_result res = acq(r, "a", "k1", X);
    assert_int_equal(res.status, DSYNC_LOCK_GRANTED);
    assert_int_equal(res.fencing_token, lk_next_token(t));
    check(r);

    /* Every single flipped byte, a cut and trailing junk are refused, and
     * the target keeps what it had. */
    ut_buf keep = snap(r);
    for (size_t i = 0; i < b.len; i++) {
        b.data[i] ^= 0x5a;
        assert_int_equal(lk_table_restore(r, b.data, b.len), DSYNC_ECORRUPT);
        b.data[i] ^= 0x5a;
    }
    for (size_t n = 0; n < b.len; n += 7)
        assert_int_equal(lk_table_restore(r, b.data, n), DSYNC_ECORRUPT);
    ut_buf_append(&b, "junk", 4);
    assert_int_equal(lk_table_restore(r, b.data, b.len), DSYNC_ECORRUPT);
    ut_buf now_snap = snap(r);
    assert_int_equal(keep.len, now_snap.len);
    assert_memory_equal(keep.data, now_snap.data, keep.len);
    ut_buf_free(&b);
    ut_buf_free(&b2);
    ut_buf_free(&keep);
    ut_buf_free(&now_snap);
    lk_table_free(r);
}

/* ---- random walk ----------------------------------------------------------- */

/* Checks from lk_state() alone: holders compatible, heads not grantable,
 * no cycle in the reported edges. Returns a message or NULL. */
static const char *independent_check(lk_table *t)
{
    static char msg[128];
    dsync_lock_state st;
    if (lk_state(t, now, &st) != 0) return "lk_state failed";
    const char *bad = NULL;
    for (size_t i = 0; i < st.n_locks && !bad; i++) {
        const dsync_lock_info *l = &st.locks[i];
        bool has_x = false;
        for (size_t h = 0; h < l->n_holders; h++)
            has_x |= l->holders[h].mode == X;
        if (has_x && l->n_holders > 1) bad = "X held together with another holder";
        if (l->n_waiters && !l->waiters[0].upgrade &&
            (l->n_holders == 0 || (!has_x && l->waiters[0].mode == S)))
            bad = "the head waiter could have been granted";
    }
    /* Cycle check on the edge list: repeated relaxation of reachability
     * over at most a few dozen clients. */
    enum { MAXC = 64 };
    const char *names[MAXC];
    size_t nn = 0;
    bool reach[MAXC][MAXC];
    memset(reach, 0, sizeof reach);
    for (size_t e = 0; e < st.n_edges; e++) {
        size_t idx[2];
        const char *ends[2] = {st.edges[e].waiter, st.edges[e].holder};
        for (int k = 0; k < 2; k++) {
            size_t j = 0;
            while (j < nn && strcmp(names[j], ends[k]) != 0)
                j++;
            if (j == nn && nn < MAXC) names[nn++] = ends[k];
            idx[k] = j;
        }
        reach[idx[0]][idx[1]] = true;
    }
    for (size_t k = 0; k < nn; k++)
        for (size_t i = 0; i < nn; i++)
            if (reach[i][k])
                for (size_t j = 0; j < nn; j++)
                    reach[i][j] |= reach[k][j];
    for (size_t i = 0; i < nn && !bad; i++)
        if (reach[i][i]) bad = "cycle in the wait-for edges";
    if (bad) snprintf(msg, sizeof msg, "%s", bad);
    dsync_lock_state_free(&st);
    return bad ? msg : NULL;
}

static int run_seed(uint64_t seed, int steps)
{
    static const char *const keys[] = {"k0", "k1", "k2", "k3", "k4", "k5"};
    static const char *const clients[] = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"};
    lk_table *t = lk_table_new();
    uint64_t rng = seed, last_token = 0;
    now = 1000;
    for (int step = 0; step < steps; step++) {
        uint64_t x = ut_rand_next(&rng);
        const char *k = keys[(x >> 8) % 6], *c = clients[(x >> 16) % 8];
        unsigned op = x % 16;
        if (op < 8) {
            lk_request q = {k,
                            c,
                            (x >> 24) & 1 ? X : S,
                            50 + (x >> 32) % 500,
                            (x >> 40) & 1 ? (x >> 44) % 300 : 0,
                            now};
            ut_buf before = snap(t);
            dsync_lock_result r;
            int rc = lk_acquire(t, &q, &r);
            if (rc == 0 && r.status == DSYNC_LOCK_DEADLOCK) {
                ut_buf after = snap(t);
                if (before.len != after.len || memcmp(before.data, after.data, before.len)) {
                    print_message("seed %llu step %d: a refused deadlock changed the table\n",
                                  (unsigned long long)seed, step);
                    return -1;
                }
                ut_buf_free(&after);
            }
            if (rc == 0 && r.status == DSYNC_LOCK_GRANTED && r.fencing_token > last_token)
                last_token = r.fencing_token;
            ut_buf_free(&before);
        } else if (op < 13) {
            lk_release(t, k, c, now, NULL);
        } else if (op < 15) {
            now += (x >> 32) % 200;
            lk_expire(t, now);
        } else {
            ut_buf b = snap(t);
            lk_table *r = lk_table_new();
            if (lk_table_restore(r, b.data, b.len) != 0) {
                print_message("seed %llu step %d: restore of a good snapshot failed\n",
                              (unsigned long long)seed, step);
                return -1;
            }
            ut_buf_free(&b);
            lk_table_free(t);
            t = r;
        }
        if (lk_next_token(t) <= last_token) {
            print_message("seed %llu step %d: token counter went back\n", (unsigned long long)seed,
                          step);
            return -1;
        }
        char err[256];
        const char *bad = lk_check_invariants(t, err, sizeof err) == 0 ? NULL : err;
        if (!bad) bad = independent_check(t);
        if (bad) {
            print_message("seed %llu step %d: %s (rerun with DSYNC_SEED=%llu)\n",
                          (unsigned long long)seed, step, bad, (unsigned long long)seed);
            lk_table_free(t);
            return -1;
        }
    }
    lk_table_free(t);
    return 0;
}

static void test_random_operations_keep_every_invariant(void **state)
{
    const char *one = getenv("DSYNC_SEED");
    if (one) {
        assert_int_equal(run_seed(strtoull(one, NULL, 10), 3000), 0);
        return;
    }
    const char *n = getenv("DSYNC_SIM_SEEDS");
    int seeds = n ? atoi(n) : 200;
    for (int s = 1; s <= seeds; s++)
        if (run_seed((uint64_t)s, 3000) != 0) fail_msg("seed %d failed", s);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_s_is_shared_and_x_excludes_everyone),
        T(test_x_waits_behind_earlier_s_holders_and_later_s_waits_behind_x),
        T(test_s_waiters_behind_a_released_x_are_granted_together),
        T(test_acquiring_again_renews_and_keeps_the_token),
        T(test_a_sole_s_holder_upgrades_at_once_with_a_new_token),
        T(test_an_upgrade_waits_at_the_head_until_the_other_readers_leave),
        T(test_two_readers_both_upgrading_is_a_deadlock),
        T(test_releasing_an_upgrading_reader_drops_both_its_hold_and_its_wait),
        T(test_deadlocks_of_length_two_to_five_are_refused_and_named),
        T(test_a_chain_of_waits_is_not_a_deadlock),
        T(test_an_expired_holder_lease_grants_the_next_waiter),
        T(test_a_waiter_lease_is_the_longer_of_ttl_and_wait),
        T(test_withdrawing_a_waiter_unblocks_those_behind_it),
        T(test_release_errors_change_nothing),
        T(test_state_lists_keys_sorted_with_exact_edges),
        T(test_a_snapshot_restores_the_same_table_and_refuses_damage),
        T(test_random_operations_keep_every_invariant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
