/*
 * test_cache_codec.c: the cache messages' wire form. Every type round
 * trips; every truncation, any trailing byte, and fields a type does not
 * allow are refused; and decode survives a fuzz of mutated and random
 * bytes: it either refuses them or yields a message that encodes back to
 * exactly the same bytes (so it read nothing it did not check).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cache/cache.h"
#include "dsync/errors.h"

/* One valid message of each type. */
static size_t samples(cc_msg *out)
{
    static const char value[] = "the value";
    cc_msg base = {.from = 3, .to = 10, .epoch = 7, .rid = 42, .key = "k1", .key_len = 2};
    size_t n = 0;
    cc_msg m;
    m = base, m.type = CC_MSG_GETS, out[n++] = m;
    m = base, m.type = CC_MSG_GETM, out[n++] = m;
    m = base, m.type = CC_MSG_GETM, m.flags = CC_F_VALUE, m.value = value, m.len = 9, out[n++] = m;
    m = base, m.type = CC_MSG_WT, m.flags = CC_F_VALUE, m.value = value, m.len = 9, out[n++] = m;
    m = base, m.type = CC_MSG_PUTBACK, m.flags = CC_F_VALUE | CC_F_DIRTY, m.value = value,
    m.len = 9, m.version = (cc_version){7, 3}, out[n++] = m;
    m = base, m.type = CC_MSG_GRANT, m.state = CC_E, m.flags = CC_F_VALUE, m.value = value,
    m.len = 9, m.version = (cc_version){6, 1}, out[n++] = m;
    m = base, m.type = CC_MSG_GRANT, m.state = CC_M, m.version = (cc_version){7, 4}, out[n++] = m;
    m = base, m.type = CC_MSG_GRANT, m.state = CC_I, out[n++] = m;
    m = base, m.type = CC_MSG_NACK, out[n++] = m;
    m = base, m.type = CC_MSG_WT_ACK, m.state = CC_M, m.version = (cc_version){7, 5}, out[n++] = m;
    m = base, m.type = CC_MSG_PUTBACK_ACK, out[n++] = m;
    m = base, m.type = CC_MSG_INV, m.hid = 99, m.mode = CC_INV_DOWNGRADE, out[n++] = m;
    m = base, m.type = CC_MSG_INV, m.hid = 99, m.rid = 0, m.mode = CC_INV_INVALIDATE,
    m.reason = CC_REASON_VIEW, out[n++] = m;
    m = base, m.type = CC_MSG_INV_ACK, m.hid = 99, m.state = CC_S,
    m.flags = CC_F_VALUE | CC_F_DIRTY, m.value = value, m.len = 9, m.version = (cc_version){7, 5},
    out[n++] = m;
    m = base, m.type = CC_MSG_INV_ACK, m.hid = 99, m.version = (cc_version){7, 5}, out[n++] = m;
    m = base, m.type = CC_MSG_SAVED, m.version = (cc_version){7, 5}, out[n++] = m;
    return n;
}

static void assert_same(const cc_msg *a, const cc_msg *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->from, b->from);
    assert_int_equal(a->to, b->to);
    assert_int_equal(a->epoch, b->epoch);
    assert_int_equal(a->rid, b->rid);
    assert_int_equal(a->hid, b->hid);
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->mode, b->mode);
    assert_int_equal(a->reason, b->reason);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->version.epoch, b->version.epoch);
    assert_int_equal(a->version.seq, b->version.seq);
    assert_int_equal(a->key_len, b->key_len);
    assert_memory_equal(a->key, b->key, a->key_len);
    assert_int_equal(a->len, b->len);
    if (a->len) assert_memory_equal(a->value, b->value, a->len);
}

static void test_every_message_type_round_trips(void **state)
{
    cc_msg msgs[32];
    size_t n = samples(msgs);
    for (size_t i = 0; i < n; i++) {
        ut_buf b;
        ut_buf_init(&b);
        assert_int_equal(cc_msg_encode(&msgs[i], &b), 0);
        cc_msg out;
        assert_int_equal(cc_msg_decode(b.data, b.len, &out), 0);
        assert_same(&msgs[i], &out);
        /* Every shorter prefix, and one byte more, are refused. */
        for (size_t cut = 0; cut < b.len; cut++)
            assert_int_equal(cc_msg_decode(b.data, cut, &out), DSYNC_ECORRUPT);
        ut_buf_append(&b, "x", 1);
        assert_int_equal(cc_msg_decode(b.data, b.len, &out), DSYNC_ECORRUPT);
        ut_buf_free(&b);
    }
}

static void test_fields_a_type_does_not_allow_are_refused_both_ways(void **state)
{
    cc_msg msgs[32];
    samples(msgs);
    cc_msg bad[16];
    size_t n = 0;
    cc_msg m;
    m = msgs[0], m.flags = CC_F_VALUE, m.value = "v", m.len = 1, bad[n++] = m; /* GETS + value */
    m = msgs[0], m.from = 0, bad[n++] = m;
    m = msgs[0], m.key_len = 0, bad[n++] = m;
    m = msgs[0], m.key = "a\0b", m.key_len = 3, bad[n++] = m;
    m = msgs[0], m.key_len = CC_KEY_MAX + 1, bad[n++] = m;
    m = msgs[0], m.mode = CC_INV_DOWNGRADE, bad[n++] = m; /* mode outside INV */
    m = msgs[3], m.flags = 0, m.len = 0, bad[n++] = m;    /* WT without value */
    m = msgs[4], m.flags = CC_F_VALUE, bad[n++] = m;      /* PUTBACK, not dirty */
    m = msgs[6], m.flags = CC_F_VALUE, m.value = "v", m.len = 1, bad[n++] = m; /* GRANT M + value */
    m = msgs[5], m.flags = 0, m.len = 0, bad[n++] = m; /* GRANT E, no value */
    m = msgs[11], m.mode = 3, bad[n++] = m;
    m = msgs[11], m.reason = CC_REASON_MAX_, bad[n++] = m;
    m = msgs[13], m.state = CC_M, bad[n++] = m;                  /* an ack never keeps M */
    m = msgs[13], m.flags = CC_F_DIRTY, m.len = 0, bad[n++] = m; /* dirty without value */
    m = msgs[0], m.flags = 0x80, bad[n++] = m;
    m = msgs[0], m.type = CC_MSG_MAX_, bad[n++] = m;
    for (size_t i = 0; i < n; i++) {
        ut_buf b;
        ut_buf_init(&b);
        assert_int_equal(cc_msg_encode(&bad[i], &b), DSYNC_EINVAL);
        assert_int_equal(b.len, 0);
        ut_buf_free(&b);
    }
    /* The same on the wire: patch a valid encoding. */
    ut_buf b;
    ut_buf_init(&b);
    assert_int_equal(cc_msg_encode(&msgs[0], &b), 0);
    cc_msg out;
    b.data[0] = 2; /* wire version */
    assert_int_equal(cc_msg_decode(b.data, b.len, &out), DSYNC_ECORRUPT);
    b.data[0] = CC_WIRE_VERSION;
    b.data[2] = CC_M; /* a GETS has no state */
    assert_int_equal(cc_msg_decode(b.data, b.len, &out), DSYNC_ECORRUPT);
    b.data[2] = CC_I;
    assert_int_equal(cc_msg_decode(b.data, b.len, &out), 0);
    assert_int_equal(cc_msg_decode(NULL, 0, &out), DSYNC_ECORRUPT);
    ut_buf_free(&b);
}

/* Decode either refuses or yields exactly what it was given. */
static void decode_checked(const unsigned char *p, size_t len)
{
    cc_msg out;
    if (cc_msg_decode(p, len, &out) != 0) return;
    ut_buf b;
    ut_buf_init(&b);
    assert_int_equal(cc_msg_encode(&out, &b), 0);
    assert_int_equal(b.len, len);
    assert_memory_equal(b.data, p, len);
    ut_buf_free(&b);
}

static void test_mutated_and_random_bytes_never_crash_decode(void **state)
{
    cc_msg msgs[32];
    size_t n = samples(msgs);
    uint64_t x = 12345;
    unsigned char copy[256] = {0}; /* bytes past a message read as zeros, not as junk */
    size_t accepted = 0;
    for (int round = 0; round < 200000; round++) {
        x = ut_mix64(x + (uint64_t)round);
        ut_buf b;
        ut_buf_init(&b);
        assert_int_equal(cc_msg_encode(&msgs[x % n], &b), 0);
        assert_true(b.len <= sizeof copy);
        memcpy(copy, b.data, b.len);
        /* One to three random byte changes, sometimes a random length. */
        for (int k = 0; k < 1 + (int)(x >> 60) % 3; k++) {
            uint64_t y = ut_mix64(x + (uint64_t)k);
            copy[y % b.len] = (unsigned char)(y >> 32);
        }
        size_t len = (x >> 20) % 8 == 0 ? (size_t)((x >> 24) % (b.len + 8)) : b.len;
        if (len > sizeof copy) len = sizeof copy;
        cc_msg out;
        accepted += cc_msg_decode(copy, len, &out) == 0;
        decode_checked(copy, len);
        ut_buf_free(&b);
    }
    /* Some mutations (ids, versions, key bytes) are still valid messages. */
    assert_true(accepted > 0);
    /* Pure noise of every length up to a header and a bit. */
    for (int round = 0; round < 50000; round++) {
        x = ut_mix64(x + 7);
        size_t len = x % 120;
        for (size_t i = 0; i < len; i++)
            copy[i] = (unsigned char)(ut_mix64(x + i) >> 17);
        decode_checked(copy, len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_message_type_round_trips),
        cmocka_unit_test(test_fields_a_type_does_not_allow_are_refused_both_ways),
        cmocka_unit_test(test_mutated_and_random_bytes_never_crash_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
