/*
 * test_fsm.c: replicated lock commands: the codec refuses anything
 * malformed, and two machines fed the same entries end in the same state,
 * also when one of them restarts from a snapshot half-way.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "node/fsm.h"

static fsm_cmd acquire_cmd(const char *key, const char *client, dsync_lock_mode mode, uint64_t now)
{
    fsm_cmd c = {.op = FSM_ACQUIRE,
                 .origin = 2,
                 .seq = 7,
                 .now_ms = now,
                 .mode = mode,
                 .ttl_ms = 1000,
                 .wait_ms = 0};
    strcpy(c.key, key);
    strcpy(c.client_id, client);
    return c;
}

static void test_commands_round_trip_through_the_codec(void **state)
{
    fsm_cmd in[3] = {acquire_cmd("k", "c", DSYNC_LOCK_EXCLUSIVE, 123)};
    in[1] = (fsm_cmd){.op = FSM_RELEASE, .origin = 1, .seq = 9, .now_ms = 5};
    strcpy(in[1].key, "key");
    strcpy(in[1].client_id, "client");
    in[2] = (fsm_cmd){.op = FSM_EXPIRE, .origin = 3, .seq = 1, .now_ms = 77};
    for (int i = 0; i < 3; i++) {
        ut_buf b;
        ut_buf_init(&b);
        assert_int_equal(fsm_encode(&in[i], &b), 0);
        fsm_cmd out;
        assert_int_equal(fsm_decode(b.data, b.len, &out), 0);
        assert_int_equal(out.op, in[i].op);
        assert_int_equal(out.origin, in[i].origin);
        assert_int_equal(out.seq, in[i].seq);
        assert_int_equal(out.now_ms, in[i].now_ms);
        assert_string_equal(out.key, in[i].key);
        assert_string_equal(out.client_id, in[i].client_id);
        assert_int_equal(out.mode, in[i].mode);
        assert_int_equal(out.ttl_ms, in[i].ttl_ms);
        ut_buf_free(&b);
    }
}

static void test_every_truncation_and_many_mutations_are_refused_or_valid(void **state)
{
    fsm_cmd c = acquire_cmd("some-key", "some-client", DSYNC_LOCK_SHARED, 42);
    ut_buf b;
    ut_buf_init(&b);
    assert_int_equal(fsm_encode(&c, &b), 0);
    fsm_cmd out;
    for (size_t n = 0; n < b.len; n++)
        assert_int_equal(fsm_decode(b.data, n, &out), DSYNC_ECORRUPT);
    /* Trailing bytes are refused too. */
    ut_buf_append(&b, "x", 1);
    assert_int_equal(fsm_decode(b.data, b.len, &out), DSYNC_ECORRUPT);
    b.len--;
    /* Random mutations: each decodes cleanly or is refused, never crashes,
     * and what decodes has valid fields. */
    uint64_t x = 1;
    char *copy = malloc(b.len);
    for (int i = 0; i < 20000; i++) {
        memcpy(copy, b.data, b.len);
        for (int k = 0; k < 3; k++) {
            x = ut_mix64(x + (uint64_t)i);
            copy[x % b.len] = (char)(x >> 32);
        }
        if (fsm_decode(copy, b.len, &out) == 0) {
            assert_true(out.mode == DSYNC_LOCK_SHARED || out.mode == DSYNC_LOCK_EXCLUSIVE);
            assert_true(strlen(out.key) > 0 && strlen(out.key) <= DSYNC_LOCK_KEY_MAX);
        }
    }
    free(copy);
    ut_buf_free(&b);
}

static void snapshot_bytes(const fsm *f, ut_buf *b)
{
    ut_buf_init(b);
    assert_int_equal(fsm_snapshot(f, b), 0);
}

static void test_replicas_fed_the_same_log_agree_even_after_a_restore(void **state)
{
    fsm a, b;
    assert_int_equal(fsm_init(&a), 0);
    assert_int_equal(fsm_init(&b), 0);
    static const char *const keys[] = {"k1", "k2", "k3"};
    static const char *const clients[] = {"c1", "c2", "c3", "c4"};
    uint64_t x = 99, now = 1000;
    for (int i = 0; i < 3000; i++) {
        x = ut_mix64(x + (uint64_t)i);
        now += x % 50;
        fsm_cmd c;
        switch (x % 5) {
        case 0:
        case 1:
            c = acquire_cmd(keys[(x >> 8) % 3], clients[(x >> 16) % 4],
                            (x >> 24) & 1 ? DSYNC_LOCK_EXCLUSIVE : DSYNC_LOCK_SHARED, now);
            c.ttl_ms = 100 + (x >> 32) % 900;
            break;
        case 2:
        case 3:
            c = (fsm_cmd){.op = FSM_RELEASE, .now_ms = now};
            strcpy(c.key, keys[(x >> 8) % 3]);
            strcpy(c.client_id, clients[(x >> 16) % 4]);
            break;
        default:
            c = (fsm_cmd){.op = FSM_EXPIRE, .now_ms = now};
        }
        /* A clock that steps back (a new leader) never moves the table back. */
        if (i % 97 == 0) c.now_ms = now - 500;
        fsm_result ra, rb;
        fsm_apply(&a, &c, &ra);
        fsm_apply(&b, &c, &rb);
        assert_int_equal(ra.rc, rb.rc);
        assert_int_equal(ra.lock.status, rb.lock.status);
        assert_int_equal(ra.lock.fencing_token, rb.lock.fencing_token);
        if (i == 1500) {
            /* b restarts from a snapshot of itself. */
            ut_buf s;
            snapshot_bytes(&b, &s);
            fsm_close(&b);
            assert_int_equal(fsm_init(&b), 0);
            assert_int_equal(fsm_restore(&b, s.data, s.len), 0);
            ut_buf_free(&s);
        }
    }
    ut_buf sa, sb;
    snapshot_bytes(&a, &sa);
    snapshot_bytes(&b, &sb);
    assert_int_equal(sa.len, sb.len);
    assert_memory_equal(sa.data, sb.data, sa.len);
    /* A damaged snapshot is refused and leaves the machine as it was. */
    sa.data[sa.len / 2] ^= 1;
    assert_int_equal(fsm_restore(&b, sa.data, sa.len), DSYNC_ECORRUPT);
    ut_buf sb2;
    snapshot_bytes(&b, &sb2);
    assert_memory_equal(sb.data, sb2.data, sb.len);
    ut_buf_free(&sa);
    ut_buf_free(&sb);
    ut_buf_free(&sb2);
    fsm_close(&a);
    fsm_close(&b);
}

/* The view: encoded and decoded, refused when unordered or oversized,
 * applied with its index, and carried by snapshots. */
static void test_the_view_travels_in_commands_and_snapshots(void **state)
{
    fsm_cmd c = {.op = FSM_VIEW, .origin = 1, .now_ms = 5, .n_live = 3, .live = {1, 2, 7}};
    ut_buf b;
    ut_buf_init(&b);
    assert_int_equal(fsm_encode(&c, &b), 0);
    fsm_cmd out;
    assert_int_equal(fsm_decode(b.data, b.len, &out), 0);
    assert_int_equal(out.op, FSM_VIEW);
    assert_int_equal(out.n_live, 3);
    assert_int_equal(out.live[2], 7);
    b.data[b.len - 8] = 1; /* 7 -> 1: no longer increasing */
    assert_int_equal(fsm_decode(b.data, b.len, &out), DSYNC_ECORRUPT);
    b.len = 0;
    c.n_live = FSM_VIEW_MAX; /* ids 0 after the third: refused */
    assert_int_equal(fsm_encode(&c, &b), 0);
    assert_int_equal(fsm_decode(b.data, b.len, &out), DSYNC_ECORRUPT);
    ut_buf_free(&b);

    fsm f, g;
    assert_int_equal(fsm_init(&f), 0);
    assert_int_equal(fsm_init(&g), 0);
    c.n_live = 3;
    fsm_apply_view(&f, 42, &c);
    assert_int_equal(f.view_index, 42);
    assert_int_equal(f.view_epoch, 5 * 1024); /* the leader's clock */
    fsm_cmd back = c;
    back.now_ms = 1; /* a new leader whose clock is behind: epochs still grow */
    fsm_apply_view(&f, 43, &back);
    assert_int_equal(f.view_epoch, 5 * 1024 + 1);
    fsm_apply_view(&f, 44, &c);
    assert_int_equal(f.view_epoch, 5 * 1024 + 2);
    uint64_t same[] = {7, 1, 2}, other[] = {1, 2};
    assert_true(fsm_view_equals(&f, same, 3));
    assert_false(fsm_view_equals(&f, other, 2));
    ut_buf s;
    snapshot_bytes(&f, &s);
    assert_int_equal(fsm_restore(&g, s.data, s.len), 0);
    assert_int_equal(g.view_index, 44);
    assert_int_equal(g.view_epoch, 5 * 1024 + 2);
    assert_true(fsm_view_equals(&g, same, 3));
    ut_buf_free(&s);
    fsm_close(&f);
    fsm_close(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands_round_trip_through_the_codec),
        cmocka_unit_test(test_every_truncation_and_many_mutations_are_refused_or_valid),
        cmocka_unit_test(test_replicas_fed_the_same_log_agree_even_after_a_restore),
        cmocka_unit_test(test_the_view_travels_in_commands_and_snapshots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
