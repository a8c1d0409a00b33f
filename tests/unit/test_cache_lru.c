/*
 * test_cache_lru.c: the cache's per-node replacement: the LRU list itself
 * (order, pins, bounds), and a one-node cluster through the public core
 * API: capacity in entries and in bytes, eviction of an M line with its
 * write-back (to the home's memory, and to an external store through
 * store requests), write-through reaching the store before the PUT
 * completes, TTL expiry as a miss, and the counters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cache/cache_internal.h"

/* ---- the list ---------------------------------------------------------- */

static cc_line *line(const char *key, size_t len)
{
    cc_line *l = calloc(1, sizeof *l);
    l->key = (char *)key;
    l->key_len = strlen(key);
    l->len = len;
    return l;
}

static void test_lru_evicts_the_least_recently_used_first(void **state)
{
    cc_lru lru = {.max_entries = 2};
    cc_line *a = line("a", 1), *b = line("b", 1), *c = line("c", 1);
    cc_lru_add(&lru, a);
    cc_lru_add(&lru, b);
    assert_null(cc_lru_victim(&lru));
    cc_lru_touch(&lru, a); /* b is now the oldest */
    cc_lru_add(&lru, c);
    assert_ptr_equal(cc_lru_victim(&lru), b);
    cc_lru_remove(&lru, b);
    assert_null(cc_lru_victim(&lru));
    assert_int_equal(lru.entries, 2);
    assert_ptr_equal(lru.head, c);
    assert_ptr_equal(lru.tail, a);
    cc_lru_remove(&lru, a);
    cc_lru_remove(&lru, c);
    assert_int_equal(lru.entries, 0);
    assert_int_equal(lru.bytes, 0);
    assert_null(lru.head);
    assert_null(lru.tail);
    free(a);
    free(b);
    free(c);
}

static void test_lru_counts_bytes_and_pinned_lines_are_never_victims(void **state)
{
    cc_lru lru = {.max_bytes = 10};
    cc_line *a = line("a", 4), *b = line("b", 4); /* 5 bytes each with the key */
    cc_lru_add(&lru, a);
    cc_lru_add(&lru, b);
    assert_int_equal(lru.bytes, 10);
    assert_null(cc_lru_victim(&lru));
    size_t old = cc_line_bytes(b);
    b->len = 9;
    cc_lru_resize(&lru, b, old);
    assert_int_equal(lru.bytes, 15);
    assert_ptr_equal(cc_lru_victim(&lru), a);
    /* A pinned line (request in flight) still counts but is no victim. */
    cc_lru_pin(&lru, a);
    assert_ptr_equal(cc_lru_victim(&lru), b);
    cc_lru_pin(&lru, b);
    assert_null(cc_lru_victim(&lru));
    assert_int_equal(lru.bytes, 15);
    cc_lru_unpin(&lru, a);
    assert_ptr_equal(lru.head, a);
    assert_ptr_equal(cc_lru_victim(&lru), a);
    cc_lru_remove(&lru, a);
    cc_lru_remove(&lru, b); /* pinned: unlinked already */
    assert_int_equal(lru.bytes, 0);
    assert_int_equal(lru.entries, 0);
    free(a);
    free(b);
}

/* ---- one node, through the core's API ---------------------------------- */

/* A one-node cluster; an external store is a tiny in-memory table here
 * whose requests the test answers by hand. */
typedef struct {
    cc_node *n;
    uint64_t now;
    cc_completion done[16];
    char done_value[16][64];
    size_t n_done;
    cc_store_req store[16];
    char store_key[16][32];
    char store_value[16][64];
    size_t n_store;
} one;

static void collect(one *o)
{
    while (cc_has_ready(o->n)) {
        cc_ready rd;
        cc_ready_get(o->n, &rd);
        assert_int_equal(rd.n_msgs, 0); /* alone: everything goes to itself */
        for (size_t k = 0; k < rd.n_done; k++) {
            assert_true(o->n_done < 16 && rd.done[k].len < 64);
            o->done[o->n_done] = rd.done[k];
            memcpy(o->done_value[o->n_done], rd.done[k].value ? rd.done[k].value : "",
                   rd.done[k].len);
            o->done[o->n_done].value = o->done_value[o->n_done];
            o->n_done++;
        }
        for (size_t k = 0; k < rd.n_store; k++) {
            assert_true(o->n_store < 16 && rd.store[k].len < 64);
            o->store[o->n_store] = rd.store[k];
            strcpy(o->store_key[o->n_store], rd.store[k].key);
            memcpy(o->store_value[o->n_store], rd.store[k].value ? rd.store[k].value : "",
                   rd.store[k].len);
            o->store[o->n_store].key = o->store_key[o->n_store];
            o->store[o->n_store].value = o->store_value[o->n_store];
            o->n_store++;
        }
        cc_advance(o->n, &rd);
    }
}

static void start(one *o, cc_config cfg)
{
    memset(o, 0, sizeof *o);
    cfg.self = 1;
    cfg.ring_vnodes = 8;
    o->n = cc_node_new(&cfg);
    assert_non_null(o->n);
    uint64_t me = 1;
    assert_int_equal(cc_set_view(o->n, 1, &me, 1), 0);
}

static void put(one *o, const char *key, const char *value, uint64_t ttl)
{
    cc_result res;
    o->n_done = 0;
    assert_int_equal(cc_put(o->n, key, value, strlen(value), ttl, o->now, &res), 0);
    collect(o);
    assert_int_equal(o->n_done, 1);
    assert_int_equal(o->done[0].id, res.id);
    assert_int_equal(o->done[0].status, 0);
}

/* GET that must end with `want` (NULL: absent); returns whether it hit. */
static bool get(one *o, const char *key, const char *want)
{
    cc_result res;
    o->n_done = 0;
    assert_int_equal(cc_get(o->n, key, o->now, &res), 0);
    if (res.done) {
        assert_non_null(want);
        assert_int_equal(res.len, strlen(want));
        assert_memory_equal(res.value, want, res.len);
        return true;
    }
    collect(o);
    assert_int_equal(o->n_done, 1);
    if (!want) {
        assert_int_equal(o->done[0].status, DSYNC_ENOTFOUND);
    } else {
        assert_int_equal(o->done[0].status, 0);
        assert_int_equal(o->done[0].len, strlen(want));
        assert_memory_equal(o->done[0].value, want, strlen(want));
    }
    return false;
}

static void test_capacity_in_entries_evicts_the_oldest_m_line_with_its_write_back(void **state)
{
    one o;
    start(&o, (cc_config){.max_entries = 2});
    put(&o, "a", "1", 0);
    put(&o, "b", "2", 0);
    assert_true(get(&o, "a", "1")); /* a is now the most recent */
    put(&o, "c", "3", 0);           /* b goes */
    cc_stats st;
    cc_get_stats(o.n, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.writebacks, 1);
    assert_int_equal(st.invalidations[CC_REASON_EVICTION], 1);
    assert_int_equal(cc_peek(o.n, "b", NULL, NULL), CC_I);
    assert_int_equal(cc_peek(o.n, "a", NULL, NULL), CC_M);
    /* b's value was written back to the home's memory: a miss finds it,
     * alone, so exclusive. */
    assert_false(get(&o, "b", "2"));
    assert_int_equal(cc_peek(o.n, "b", NULL, NULL), CC_E);
    cc_get_stats(o.n, &st);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.transitions[CC_I][CC_M], 3);
    assert_int_equal(st.transitions[CC_M][CC_I], 2); /* b, then a or c for b's return */
    assert_int_equal(st.transitions[CC_I][CC_E], 1);
    assert_false(get(&o, "nothing", NULL));
    cc_node_free(o.n);
}

/* cc_touch: a hit the embedder served from its own copy moves the line to
 * the recent end like a hit through cc_get, and changes nothing else. */
static void test_a_touch_from_outside_the_core_counts_as_a_use(void **state)
{
    (void)state;
    one o;
    start(&o, (cc_config){.max_entries = 2});
    put(&o, "a", "1", 0);
    put(&o, "b", "2", 0);
    cc_touch(o.n, "a");
    cc_touch(o.n, "absent"); /* no line: nothing happens */
    cc_touch(o.n, NULL);
    cc_stats st;
    cc_get_stats(o.n, &st);
    assert_int_equal(st.hits, 0);
    assert_int_equal(st.entries, 2);
    put(&o, "c", "3", 0); /* b goes, not a */
    assert_int_equal(cc_peek(o.n, "a", NULL, NULL), CC_M);
    assert_int_equal(cc_peek(o.n, "b", NULL, NULL), CC_I);
    cc_touch(o.n, "b"); /* gone: no effect on the order */
    cc_touch(o.n, "a");
    put(&o, "d", "4", 0); /* c goes */
    assert_int_equal(cc_peek(o.n, "a", NULL, NULL), CC_M);
    assert_int_equal(cc_peek(o.n, "c", NULL, NULL), CC_I);
    cc_get_stats(o.n, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.evictions, 2);
    cc_node_free(o.n);
}

static void test_capacity_in_bytes_counts_keys_and_values(void **state)
{
    one o;
    start(&o, (cc_config){.max_bytes = 12});
    put(&o, "k1", "aaaa", 0); /* 6 bytes */
    put(&o, "k2", "bbbb", 0); /* 12 */
    cc_stats st;
    cc_get_stats(o.n, &st);
    assert_int_equal(st.bytes, 12);
    assert_int_equal(st.evictions, 0);
    put(&o, "k1", "aaaaa", 0); /* 13: k2, the older, goes */
    cc_get_stats(o.n, &st);
    assert_int_equal(st.bytes, 7);
    assert_int_equal(st.entries, 1);
    assert_int_equal(cc_peek(o.n, "k2", NULL, NULL), CC_I);
    /* A value that alone is over the bound is written back, not kept. */
    put(&o, "big", "0123456789abcdef", 0);
    assert_int_equal(cc_peek(o.n, "big", NULL, NULL), CC_I);
    assert_false(get(&o, "big", "0123456789abcdef"));
    assert_false(get(&o, "k2", "bbbb"));
    cc_node_free(o.n);
}

static void test_an_expired_line_is_a_miss_and_the_value_is_fetched_again(void **state)
{
    one o;
    start(&o, (cc_config){.default_ttl_ms = 100});
    o.now = 1000;
    put(&o, "t", "v1", 10);
    o.now = 1009;
    assert_true(get(&o, "t", "v1"));
    o.now = 1010; /* expired: written back (dirty), then missed */
    assert_false(get(&o, "t", "v1"));
    cc_stats st;
    cc_get_stats(o.n, &st);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.writebacks, 1);
    assert_int_equal(st.misses, 1);
    /* A copy fetched by a miss lives default_ttl_ms. */
    assert_int_equal(cc_peek(o.n, "t", NULL, NULL), CC_E);
    o.now = 1109;
    assert_true(get(&o, "t", "v1"));
    o.now = 1110;
    assert_false(get(&o, "t", "v1"));
    cc_node_free(o.n);
}

static void test_evicting_m_writes_back_to_an_external_store_before_it_lets_go(void **state)
{
    one o;
    start(&o, (cc_config){.external_store = true});
    put(&o, "k", "dirty", 0); /* write-back: nothing for the store yet */
    assert_int_equal(o.n_store, 0);
    assert_int_equal(cc_evict(o.n, "k", o.now), 0);
    collect(&o);
    assert_int_equal(o.n_store, 1);
    assert_int_equal(o.store[0].kind, CC_STORE_WRITE);
    assert_string_equal(o.store[0].key, "k");
    assert_int_equal(o.store[0].len, 5);
    assert_memory_equal(o.store[0].value, "dirty", 5);
    assert_int_equal(o.store[0].version.epoch, 1);
    /* Until the store has it, a GET waits behind the write-back. */
    cc_result res;
    assert_int_equal(cc_get(o.n, "k", o.now, &res), 0);
    assert_false(res.done);
    o.n_done = 0;
    collect(&o);
    assert_int_equal(o.n_done, 0);
    cc_store_done(o.n, o.store[0].id, "k", 0, false, NULL, 0, (cc_version){0, 0}, o.now);
    collect(&o);
    /* Then the GET misses and loads from the store. */
    assert_int_equal(o.n_store, 2);
    assert_int_equal(o.store[1].kind, CC_STORE_LOAD);
    cc_store_done(o.n, o.store[1].id, "k", 0, true, "dirty", 5, o.store[0].version, o.now);
    collect(&o);
    assert_int_equal(o.n_done, 1);
    assert_int_equal(o.done[0].id, res.id);
    assert_int_equal(o.done[0].state, CC_E);
    assert_memory_equal(o.done[0].value, "dirty", 5);
    cc_node_free(o.n);
}

/* Every store request names the epoch it was asked under (the store's
 * fence, cache.h): a write of view 1, and after a view change a load of
 * view 2; a write refused by the fence (DSYNC_EUNAVAILABLE) is asked again
 * under the node's epoch of then. */
static void test_store_requests_carry_the_epoch_they_are_asked_under(void **state)
{
    (void)state;
    one o;
    start(&o, (cc_config){.external_store = true, .policy = CC_WRITE_THROUGH,
                          .store_retry_ms = 10});
    cc_result res;
    assert_int_equal(cc_put(o.n, "k", "v", 1, 0, o.now, &res), 0);
    collect(&o);
    assert_int_equal(o.n_store, 1);
    assert_int_equal(o.store[0].kind, CC_STORE_WRITE);
    assert_int_equal(o.store[0].epoch, 1);
    cc_store_done(o.n, o.store[0].id, "k", DSYNC_EUNAVAILABLE, false, NULL, 0,
                  (cc_version){0, 0}, o.now);
    cc_tick(o.n, o.now + 10);
    collect(&o);
    assert_int_equal(o.n_store, 2);
    assert_int_equal(o.store[1].epoch, 1);
    cc_store_done(o.n, o.store[1].id, "k", 0, false, NULL, 0, (cc_version){0, 0}, o.now);
    collect(&o);
    assert_int_equal(o.n_done, 1);
    assert_int_equal(o.done[0].status, 0);

    uint64_t me = 1;
    assert_int_equal(cc_set_view(o.n, 2, &me, 1), 0);
    assert_int_equal(cc_evict(o.n, "k", o.now), 0);
    collect(&o);
    o.n_done = 0;
    assert_int_equal(cc_get(o.n, "k", o.now, &res), 0);
    assert_false(res.done);
    collect(&o);
    assert_int_equal(o.n_store, 3);
    assert_int_equal(o.store[2].kind, CC_STORE_LOAD);
    assert_int_equal(o.store[2].epoch, 2);
    cc_store_done(o.n, o.store[2].id, "k", 0, true, "v", 1, (cc_version){1, 1}, o.now);
    collect(&o);
    assert_int_equal(o.n_done, 1);
    assert_int_equal(o.done[0].status, 0);
    cc_node_free(o.n);
}

static void test_write_through_completes_only_once_the_store_has_the_value(void **state)
{
    one o;
    start(&o,
          (cc_config){.external_store = true, .policy = CC_WRITE_THROUGH, .store_retry_ms = 50});
    cc_result res;
    assert_int_equal(cc_put(o.n, "k", "v", 1, 0, o.now, &res), 0);
    collect(&o);
    assert_int_equal(o.n_done, 0);
    assert_int_equal(o.n_store, 1);
    /* A failed write is issued again after store_retry_ms. */
    cc_store_done(o.n, o.store[0].id, "k", DSYNC_EUNAVAILABLE, false, NULL, 0, (cc_version){0, 0},
                  o.now);
    cc_tick(o.n, o.now + 49);
    collect(&o);
    assert_int_equal(o.n_store, 1);
    cc_tick(o.n, o.now + 50);
    collect(&o);
    assert_int_equal(o.n_store, 2);
    assert_int_equal(o.n_done, 0);
    cc_store_done(o.n, o.store[1].id, "k", 0, false, NULL, 0, (cc_version){0, 0}, o.now);
    collect(&o);
    assert_int_equal(o.n_done, 1);
    assert_int_equal(o.done[0].status, 0);
    assert_int_equal(cc_peek(o.n, "k", NULL, NULL), CC_M);
    /* Clean: evicting it writes nothing. */
    assert_int_equal(cc_evict(o.n, "k", o.now), 0);
    collect(&o);
    assert_int_equal(o.n_store, 2);
    cc_node_free(o.n);
}

static void test_an_operation_times_out_but_its_answer_still_fills_the_line(void **state)
{
    one o;
    start(&o, (cc_config){.external_store = true, .op_timeout_ms = 100});
    o.now = 1000;
    cc_result res;
    assert_int_equal(cc_get(o.n, "k", o.now, &res), 0);
    assert_false(res.done);
    collect(&o);
    assert_int_equal(o.n_store, 1); /* the load nobody answers in time */
    cc_tick(o.n, 1099);
    collect(&o);
    assert_int_equal(o.n_done, 0);
    cc_tick(o.n, 1100);
    collect(&o);
    assert_int_equal(o.n_done, 1);
    assert_int_equal(o.done[0].id, res.id);
    assert_int_equal(o.done[0].status, DSYNC_ETIMEDOUT);
    /* The protocol went on: the late answer fills the line, once. */
    o.n_done = 0;
    cc_store_done(o.n, o.store[0].id, "k", 0, true, "late", 4, (cc_version){1, 1}, 1200);
    collect(&o);
    assert_int_equal(o.n_done, 0);
    o.now = 1200;
    assert_true(get(&o, "k", "late"));
    cc_node_free(o.n);
}

static void test_bad_arguments_and_no_view_are_refused(void **state)
{
    cc_config cfg = {.self = 1};
    cc_node *n = cc_node_new(&cfg);
    cc_result res;
    assert_int_equal(cc_get(n, "k", 0, &res), DSYNC_EUNAVAILABLE);
    uint64_t m[] = {1, 1};
    assert_int_equal(cc_set_view(n, 1, m, 2), DSYNC_EINVAL);
    assert_int_equal(cc_set_view(n, 2, m, 1), 0);
    assert_int_equal(cc_set_view(n, 2, m, 1), DSYNC_EINVAL); /* epochs only grow */
    assert_int_equal(cc_get(n, "", 0, &res), DSYNC_EINVAL);
    char longkey[CC_KEY_MAX + 2];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    assert_int_equal(cc_get(n, longkey, 0, &res), DSYNC_EINVAL);
    assert_int_equal(cc_put(n, "k", "v", (size_t)CC_VALUE_MAX + 1, 0, 0, &res), DSYNC_ETOOBIG);
    assert_int_equal(cc_evict(n, "k", 0), DSYNC_ENOTFOUND);
    /* A node outside the view serves nothing. */
    uint64_t other = 2;
    assert_int_equal(cc_set_view(n, 3, &other, 1), 0);
    assert_int_equal(cc_get(n, "k", 0, &res), DSYNC_EUNAVAILABLE);
    cc_node_free(n);
    cfg.self = 0;
    assert_null(cc_node_new(&cfg));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru_evicts_the_least_recently_used_first),
        cmocka_unit_test(test_lru_counts_bytes_and_pinned_lines_are_never_victims),
        cmocka_unit_test(test_capacity_in_entries_evicts_the_oldest_m_line_with_its_write_back),
        cmocka_unit_test(test_a_touch_from_outside_the_core_counts_as_a_use),
        cmocka_unit_test(test_store_requests_carry_the_epoch_they_are_asked_under),
        cmocka_unit_test(test_capacity_in_bytes_counts_keys_and_values),
        cmocka_unit_test(test_an_expired_line_is_a_miss_and_the_value_is_fetched_again),
        cmocka_unit_test(test_evicting_m_writes_back_to_an_external_store_before_it_lets_go),
        cmocka_unit_test(test_write_through_completes_only_once_the_store_has_the_value),
        cmocka_unit_test(test_an_operation_times_out_but_its_answer_still_fills_the_line),
        cmocka_unit_test(test_bad_arguments_and_no_view_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
