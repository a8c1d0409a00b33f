/*
 * test_ring.c: the consistent-hash ring that places queue topics: fair
 * shares, how few topics a membership change moves and where they go,
 * failover to the next live node and back, placement independent of
 * insertion order and pinned across builds, preference lists, and errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dsync/errors.h"
#include "queue/ring.h"

#define N_TOPICS 100000

static size_t topic_name(char *buf, size_t cap, int i)
{
    int n = snprintf(buf, cap, "topic-%d", i);
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

/* The owner of each of the first n topics, into a fresh array. */
static uint64_t *owners_of(const qr_ring *r, int n)
{
    uint64_t *own = malloc((size_t)n * sizeof *own);
    assert_non_null(own);
    char name[32];
    for (int i = 0; i < n; i++) {
        size_t len = topic_name(name, sizeof name, i);
        own[i] = qr_owner(r, name, len);
    }
    return own;
}

static qr_ring *ring_of(const uint64_t *ids, size_t n)
{
    qr_ring *r = qr_new(0);
    assert_non_null(r);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(qr_add(r, ids[i]), 0);
    return r;
}

/* Asserts every node of ids owns within 10% of a fair share of N_TOPICS;
 * prints the shares when verbose. */
static void assert_fair_shares(const uint64_t *ids, size_t n, bool verbose)
{
    qr_ring *r = ring_of(ids, n);
    uint64_t *own = owners_of(r, N_TOPICS);
    double fair = (double)N_TOPICS / (double)n;
    for (size_t k = 0; k < n; k++) {
        int count = 0;
        for (int i = 0; i < N_TOPICS; i++)
            count += own[i] == ids[k];
        double off = (count - fair) / fair;
        if (verbose)
            printf("    node %llu owns %d of %d topics (%.2f%%, %+.2f%% from fair)\n",
                   (unsigned long long)ids[k], count, N_TOPICS, 100.0 * count / N_TOPICS,
                   100.0 * off);
        assert_true(off > -0.10 && off < 0.10);
    }
    free(own);
    qr_free(r);
}

static void test_each_of_three_nodes_owns_its_fair_share_of_100000_topics(void **state)
{
    const uint64_t ids[] = {1, 2, 3};
    assert_fair_shares(ids, 3, true);
}

static void test_the_fair_share_holds_for_other_node_ids_too(void **state)
{
    const uint64_t triples[][3] = {
        {10, 20, 30},
        {101, 102, 103},
        {7, 1000, 123456789},
        {0x8000000000000000ULL, 0x8000000000000001ULL, UINT64_MAX},
        {0x1234abcd5678ef90ULL, 0x0fedcba987654321ULL, 42},
    };
    for (size_t t = 0; t < sizeof triples / sizeof triples[0]; t++)
        assert_fair_shares(triples[t], 3, false);
}

static void test_adding_a_fourth_node_moves_about_a_quarter_of_topics_all_to_it(void **state)
{
    const uint64_t ids[] = {1, 2, 3};
    qr_ring *r = ring_of(ids, 3);
    uint64_t *before = owners_of(r, N_TOPICS);
    assert_int_equal(qr_add(r, 4), 0);
    uint64_t *after = owners_of(r, N_TOPICS);

    int moved = 0, moved_from[4] = {0};
    for (int i = 0; i < N_TOPICS; i++) {
        if (before[i] == after[i]) continue;
        /* Nothing moves between two old nodes. */
        assert_int_equal(after[i], 4);
        moved++;
        moved_from[before[i]]++;
    }
    printf("    adding node 4 moved %d of %d topics (%.2f%%): %d from 1, %d from 2, %d from 3\n",
           moved, N_TOPICS, 100.0 * moved / N_TOPICS, moved_from[1], moved_from[2], moved_from[3]);
    assert_true(moved > N_TOPICS * 15 / 100 && moved < N_TOPICS * 35 / 100);
    free(before);
    free(after);
    qr_free(r);
}

static void test_removing_a_node_moves_only_its_own_topics(void **state)
{
    const uint64_t ids[] = {1, 2, 3, 4};
    qr_ring *r = ring_of(ids, 4);
    uint64_t *before = owners_of(r, N_TOPICS);
    assert_int_equal(qr_remove(r, 2), 0);
    uint64_t *after = owners_of(r, N_TOPICS);

    int moved = 0;
    for (int i = 0; i < N_TOPICS; i++) {
        if (before[i] == 2) {
            assert_int_not_equal(after[i], 2);
            moved++;
        } else {
            assert_int_equal(after[i], before[i]);
        }
    }
    printf("    removing node 2 moved %d of %d topics (%.2f%%), all of them its own\n", moved,
           N_TOPICS, 100.0 * moved / N_TOPICS);

    /* Adding it back restores the placement exactly. */
    assert_int_equal(qr_add(r, 2), 0);
    uint64_t *again = owners_of(r, N_TOPICS);
    assert_memory_equal(again, before, N_TOPICS * sizeof *before);
    free(before);
    free(after);
    free(again);
    qr_free(r);
}

typedef struct {
    uint64_t dead[4];
    size_t n_dead;
    unsigned calls;
} liveness;

static bool is_live(void *ctx, uint64_t id)
{
    liveness *lv = ctx;
    lv->calls++;
    for (size_t k = 0; k < lv->n_dead; k++)
        if (lv->dead[k] == id) return false;
    return true;
}

static void test_owner_live_skips_dead_nodes_and_returns_to_the_owner_when_it_recovers(void **state)
{
    const uint64_t ids[] = {1, 2, 3, 4};
    qr_ring *r = ring_of(ids, 4);
    uint64_t *own = owners_of(r, N_TOPICS);
    /* Where node 3's topics go once it is gone for good. */
    qr_ring *without3 = ring_of((const uint64_t[]){1, 2, 4}, 3);
    uint64_t *heirs = owners_of(without3, N_TOPICS);

    liveness lv = {.dead = {3}, .n_dead = 1};
    char name[32];
    int failed_over = 0;
    for (int i = 0; i < N_TOPICS; i++) {
        size_t len = topic_name(name, sizeof name, i);
        uint64_t live = qr_owner_live(r, name, len, is_live, &lv);
        /* A live owner keeps its topic; a dead one's goes where removing
         * the node would send it, so failover and removal agree. */
        assert_int_equal(live, own[i] == 3 ? heirs[i] : own[i]);
        failed_over += own[i] == 3;
    }
    assert_true(failed_over > 0);

    lv.n_dead = 0;
    for (int i = 0; i < N_TOPICS; i++) {
        size_t len = topic_name(name, sizeof name, i);
        assert_int_equal(qr_owner_live(r, name, len, is_live, &lv), own[i]);
    }

    /* Two dead nodes: the first live one clockwise, which the preference
     * list names. */
    lv = (liveness){.dead = {1, 4}, .n_dead = 2};
    for (int i = 0; i < 1000; i++) {
        size_t len = topic_name(name, sizeof name, i);
        uint64_t pref[4];
        assert_int_equal(qr_preference_list(r, name, len, pref, 4), 4);
        size_t first_live = 0;
        while (pref[first_live] == 1 || pref[first_live] == 4)
            first_live++;
        assert_int_equal(qr_owner_live(r, name, len, is_live, &lv), pref[first_live]);
    }
    free(own);
    free(heirs);
    qr_free(without3);
    qr_free(r);
}

static void test_owner_live_is_0_when_no_node_is_live_and_asks_once_per_node(void **state)
{
    const uint64_t ids[] = {5, 6, 7};
    qr_ring *r = ring_of(ids, 3);
    liveness lv = {.dead = {5, 6, 7}, .n_dead = 3};
    assert_int_equal(qr_owner_live(r, "orders", 6, is_live, &lv), 0);
    assert_int_equal(lv.calls, 3);
    qr_free(r);
}

static void test_owner_live_with_every_node_live_is_the_owner(void **state)
{
    const uint64_t ids[] = {1, 2, 3};
    qr_ring *r = ring_of(ids, 3);
    liveness lv = {0};
    char name[32];
    for (int i = 0; i < 1000; i++) {
        size_t len = topic_name(name, sizeof name, i);
        uint64_t owner = qr_owner(r, name, len);
        assert_int_equal(qr_owner_live(r, name, len, is_live, &lv), owner);
        assert_int_equal(qr_owner_live(r, name, len, NULL, NULL), owner);
    }
    /* Asked only about the owner. */
    assert_int_equal(lv.calls, 1000);
    qr_free(r);
}

static void test_insertion_order_does_not_change_placement(void **state)
{
    const uint64_t ids[] = {11, 22, 33, 44};
    qr_ring *ref = ring_of(ids, 4);
    uint64_t *want = owners_of(ref, 20000);

    /* Every order of the same four ids. */
    const int perms[24][4] = {
        {0, 1, 2, 3}, {0, 1, 3, 2}, {0, 2, 1, 3}, {0, 2, 3, 1}, {0, 3, 1, 2}, {0, 3, 2, 1},
        {1, 0, 2, 3}, {1, 0, 3, 2}, {1, 2, 0, 3}, {1, 2, 3, 0}, {1, 3, 0, 2}, {1, 3, 2, 0},
        {2, 0, 1, 3}, {2, 0, 3, 1}, {2, 1, 0, 3}, {2, 1, 3, 0}, {2, 3, 0, 1}, {2, 3, 1, 0},
        {3, 0, 1, 2}, {3, 0, 2, 1}, {3, 1, 0, 2}, {3, 1, 2, 0}, {3, 2, 0, 1}, {3, 2, 1, 0},
    };
    for (int p = 0; p < 24; p++) {
        uint64_t order[4];
        for (int k = 0; k < 4; k++)
            order[k] = ids[perms[p][k]];
        qr_ring *r = ring_of(order, 4);
        uint64_t *got = owners_of(r, 20000);
        assert_memory_equal(got, want, 20000 * sizeof *want);
        free(got);
        qr_free(r);
    }

    /* The same membership reached by way of nodes that came and went. */
    qr_ring *r = qr_new(0);
    assert_non_null(r);
    const uint64_t path[] = {99, 44, 7, 11, 33, 22};
    for (size_t k = 0; k < 6; k++)
        assert_int_equal(qr_add(r, path[k]), 0);
    assert_int_equal(qr_remove(r, 99), 0);
    assert_int_equal(qr_remove(r, 7), 0);
    assert_int_equal(qr_count(r), 4);
    uint64_t *got = owners_of(r, 20000);
    assert_memory_equal(got, want, 20000 * sizeof *want);

    char name[32];
    for (int i = 0; i < 1000; i++) {
        size_t len = topic_name(name, sizeof name, i);
        uint64_t a[4], b[4];
        assert_int_equal(qr_preference_list(ref, name, len, a, 4), 4);
        assert_int_equal(qr_preference_list(r, name, len, b, 4), 4);
        assert_memory_equal(a, b, sizeof a);
    }
    free(got);
    qr_free(r);
    free(want);
    qr_free(ref);
}

/* Placement is a contract between the nodes of a cluster, which may run
 * different builds: these values were recorded from this implementation,
 * so any change to the hashing or the point layout shows up here. */
static void test_placement_is_pinned_so_every_build_agrees(void **state)
{
    assert_true(qr_topic_hash("orders", 6) == 0x63445e8cddd6566fULL);
    assert_true(qr_topic_hash("", 0) == 0xfebe10bf2e8809c4ULL);
    const uint64_t ids[] = {1, 2, 3};
    qr_ring *r = ring_of(ids, 3);
    static const struct {
        const char *topic;
        uint64_t owner;
    } pinned[] = {
        {"orders", 2},    {"payments", 3},  {"emails", 1},  {"invoices", 2},
        {"audit-log", 3}, {"shipments", 1}, {"topic-0", 1}, {"", 1},
    };
    for (size_t k = 0; k < sizeof pinned / sizeof pinned[0]; k++)
        assert_int_equal(qr_owner(r, pinned[k].topic, strlen(pinned[k].topic)), pinned[k].owner);
    qr_free(r);
}

static void test_preference_list_holds_distinct_nodes_starting_with_the_owner(void **state)
{
    const uint64_t ids[] = {1, 2, 3, 4, 5};
    qr_ring *r = ring_of(ids, 5);
    char name[32];
    for (int i = 0; i < 2000; i++) {
        size_t len = topic_name(name, sizeof name, i);
        uint64_t all[8], some[2];
        assert_int_equal(qr_preference_list(r, name, len, all, 8), 5);
        assert_int_equal(all[0], qr_owner(r, name, len));
        for (int a = 0; a < 5; a++) {
            assert_true(qr_has(r, all[a]));
            for (int b = a + 1; b < 5; b++)
                assert_int_not_equal(all[a], all[b]);
        }
        /* A shorter list is a prefix of the full one. */
        assert_int_equal(qr_preference_list(r, name, len, some, 2), 2);
        assert_memory_equal(some, all, sizeof some);
        assert_int_equal(qr_preference_list(r, name, len, NULL, 0), 0);

        /* Its second entry is who takes over when the owner is removed. */
        assert_int_equal(qr_remove(r, all[0]), 0);
        if (i % 100 == 0) assert_int_equal(qr_owner(r, name, len), all[1]);
        assert_int_equal(qr_add(r, all[0]), 0);
    }
    qr_free(r);
}

static void test_adding_zero_or_a_duplicate_or_removing_an_unknown_node_fails(void **state)
{
    qr_ring *r = qr_new(0);
    assert_non_null(r);
    assert_int_equal(qr_add(r, 0), DSYNC_EINVAL);
    assert_int_equal(qr_add(r, 1), 0);
    assert_int_equal(qr_add(r, 1), DSYNC_EEXIST);
    assert_int_equal(qr_remove(r, 2), DSYNC_ENOTFOUND);
    assert_int_equal(qr_remove(r, 0), DSYNC_ENOTFOUND);
    assert_int_equal(qr_count(r), 1);
    assert_int_equal(qr_remove(r, 1), 0);
    assert_int_equal(qr_remove(r, 1), DSYNC_ENOTFOUND);
    assert_int_equal(qr_count(r), 0);
    qr_free(r);
    qr_free(NULL);
}

static void test_an_empty_ring_owns_nothing(void **state)
{
    qr_ring *r = qr_new(0);
    assert_non_null(r);
    liveness lv = {0};
    uint64_t out[4] = {0};
    assert_int_equal(qr_count(r), 0);
    assert_int_equal(qr_owner(r, "orders", 6), 0);
    assert_int_equal(qr_owner_live(r, "orders", 6, is_live, &lv), 0);
    assert_int_equal(lv.calls, 0);
    assert_int_equal(qr_preference_list(r, "orders", 6, out, 4), 0);

    /* Emptied again after use, the same. */
    assert_int_equal(qr_add(r, 9), 0);
    assert_int_equal(qr_owner(r, "orders", 6), 9);
    assert_int_equal(qr_remove(r, 9), 0);
    assert_int_equal(qr_owner(r, "orders", 6), 0);
    qr_free(r);
}

static void test_a_single_node_owns_every_topic(void **state)
{
    qr_ring *r = qr_new(0);
    assert_non_null(r);
    assert_int_equal(qr_add(r, 77), 0);
    uint64_t *own = owners_of(r, 10000);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(own[i], 77);
    free(own);
    qr_free(r);
}

static void test_the_vnode_count_is_configurable_and_bounded(void **state)
{
    qr_ring *r = qr_new(0);
    assert_non_null(r);
    assert_int_equal(qr_vnodes(r), QR_DEFAULT_VNODES);
    qr_free(r);
    assert_null(qr_new(QR_MAX_VNODES + 1));

    /* One point each: still a ring, every topic owned by one of the two. */
    r = qr_new(1);
    assert_non_null(r);
    assert_int_equal(qr_vnodes(r), 1);
    assert_int_equal(qr_add(r, 1), 0);
    assert_int_equal(qr_add(r, 2), 0);
    uint64_t *own = owners_of(r, 1000);
    int ones = 0;
    for (int i = 0; i < 1000; i++) {
        assert_true(own[i] == 1 || own[i] == 2);
        ones += own[i] == 1;
    }
    assert_true(ones > 0 && ones < 1000);
    free(own);
    qr_free(r);
}

static void test_topic_names_are_bytes_not_c_strings(void **state)
{
    /* An embedded NUL is part of the name, and the empty name is a name. */
    assert_true(qr_topic_hash("a\0b", 3) != qr_topic_hash("a", 1));
    assert_true(qr_topic_hash("a\0b", 3) != qr_topic_hash("a\0c", 3));
    assert_true(qr_topic_hash(NULL, 0) == qr_topic_hash("", 0));
    const uint64_t ids[] = {1, 2, 3};
    qr_ring *r = ring_of(ids, 3);
    assert_int_not_equal(qr_owner(r, NULL, 0), 0);
    qr_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_of_three_nodes_owns_its_fair_share_of_100000_topics),
        cmocka_unit_test(test_the_fair_share_holds_for_other_node_ids_too),
        cmocka_unit_test(test_adding_a_fourth_node_moves_about_a_quarter_of_topics_all_to_it),
        cmocka_unit_test(test_removing_a_node_moves_only_its_own_topics),
        cmocka_unit_test(
            test_owner_live_skips_dead_nodes_and_returns_to_the_owner_when_it_recovers),
        cmocka_unit_test(test_owner_live_is_0_when_no_node_is_live_and_asks_once_per_node),
        cmocka_unit_test(test_owner_live_with_every_node_live_is_the_owner),
        cmocka_unit_test(test_insertion_order_does_not_change_placement),
        cmocka_unit_test(test_placement_is_pinned_so_every_build_agrees),
        cmocka_unit_test(test_preference_list_holds_distinct_nodes_starting_with_the_owner),
        cmocka_unit_test(test_adding_zero_or_a_duplicate_or_removing_an_unknown_node_fails),
        cmocka_unit_test(test_an_empty_ring_owns_nothing),
        cmocka_unit_test(test_a_single_node_owns_every_topic),
        cmocka_unit_test(test_the_vnode_count_is_configurable_and_bounded),
        cmocka_unit_test(test_topic_names_are_bytes_not_c_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
