/*
 * test_queue.c: the queue state machine with a simulated clock: FIFO
 * order, leases that end and requeue ahead of newer messages, receipts,
 * dead letters, many consumers, bad input, snapshots and record replay
 * (and their corruption), a seeded random history checked against a
 * reference model, and the memory a million waiting messages take.
 */
#include <malloc.h>
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
#include "queue/queue.h"

/* ---- helpers -------------------------------------------------------------- */

static q_state *new_state(uint64_t nonce, uint32_t max_deliveries)
{
    q_config cfg = {nonce, max_deliveries};
    q_state *q = q_new(&cfg);
    assert_non_null(q);
    return q;
}

static uint64_t put(q_state *q, const char *topic, const char *body, uint64_t now)
{
    uint64_t id = 0;
    assert_int_equal(q_enqueue(q, topic, body, strlen(body), now, &id), 0);
    return id;
}

static size_t take(q_state *q, const char *topic, size_t max, uint64_t visibility, uint64_t now,
                   q_delivery *out)
{
    size_t n = 99;
    assert_int_equal(q_consume(q, topic, "worker", max, visibility, now, out, &n), 0);
    return n;
}

static void assert_invariants(const q_state *q)
{
    char err[200];
    if (q_check_invariants(q, err, sizeof err) != 0) fail_msg("invariant: %s", err);
}

static void snapshot_of(const q_state *q, ut_buf *b)
{
    ut_buf_init(b);
    assert_int_equal(q_snapshot(q, b), 0);
}

static bool same_state(const q_state *a, const q_state *b)
{
    ut_buf x, y;
    snapshot_of(a, &x);
    snapshot_of(b, &y);
    bool same = x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
    ut_buf_free(&x);
    ut_buf_free(&y);
    return same;
}

static bool body_is(const q_delivery *d, const char *s)
{
    return d->len == strlen(s) && memcmp(d->body, s, d->len) == 0;
}

/* xorshift64*: the tests' only randomness, seeded. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dULL;
}

typedef struct {
    q_event ev[16];
    char topic[16][QS_TOPIC_NAME_MAX + 1];
    size_t n;
} event_log;

static void on_event(void *ctx, const q_event *ev)
{
    event_log *log = ctx;
    if (log->n == 16) return;
    log->ev[log->n] = *ev;
    strcpy(log->topic[log->n], ev->topic);
    log->n++;
}

/* ---- delivery ------------------------------------------------------------- */

static void test_messages_come_out_in_the_order_they_went_in(void **state)
{
    q_state *q = new_state(1, 0);
    for (int i = 1; i <= 10; i++) {
        char body[24];
        snprintf(body, sizeof body, "{\"n\":%d}", i);
        assert_int_equal(put(q, "jobs", body, 0), (uint64_t)i);
    }
    assert_int_equal(put(q, "other", "x", 0), 1); /* ids count per topic */
    q_delivery d[10];
    assert_int_equal(take(q, "jobs", 3, 1000, 0, d), 3);
    assert_int_equal(take(q, "jobs", 8, 1000, 0, d + 3), 7);
    for (int i = 0; i < 10; i++) {
        char body[24];
        snprintf(body, sizeof body, "{\"n\":%d}", i + 1);
        assert_int_equal(d[i].id, (uint64_t)i + 1);
        assert_true(body_is(&d[i], body));
    }
    q_free(q);
}

static void test_a_batch_is_handed_out_by_id_with_bodies_and_first_delivery_counts(void **state)
{
    q_state *q = new_state(1, 0);
    put(q, "t", "a", 0);
    put(q, "t", "", 0);
    put(q, "t", "ccc", 0);
    q_delivery d[4];
    assert_int_equal(take(q, "t", 4, 500, 100, d), 3);
    assert_true(body_is(&d[0], "a") && body_is(&d[1], "") && body_is(&d[2], "ccc"));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(d[i].id, (uint64_t)i + 1);
        assert_int_equal(d[i].deliveries, 1);
        assert_int_equal(d[i].visibility_deadline, 600);
        assert_int_equal(d[i].origin_id, 0);
        assert_int_equal(d[i].receipt.id, d[i].id);
    }
    assert_int_equal(take(q, "t", 4, 500, 100, d), 0); /* all in flight */
    assert_invariants(q);
    q_free(q);
}

static void test_an_unknown_topic_hands_out_nothing_and_is_not_created(void **state)
{
    q_state *q = new_state(1, 0);
    q_delivery d[1];
    assert_int_equal(take(q, "nobody", 1, 100, 0, d), 0);
    assert_false(q_has_ready(q, "nobody"));
    q_topic_stats st;
    assert_int_equal(q_topic_stats_get(q, "nobody", &st), DSYNC_ENOTFOUND);
    size_t topics = 9;
    q_counts(q, &topics, NULL, NULL);
    assert_int_equal(topics, 0);
    q_free(q);
}

static void test_an_expired_message_is_requeued_ahead_of_newer_ones(void **state)
{
    q_state *q = new_state(1, 0);
    put(q, "t", "1", 0);
    put(q, "t", "2", 0);
    q_delivery d[4];
    assert_int_equal(take(q, "t", 1, 100, 0, d), 1); /* 1 in flight until 100 */
    put(q, "t", "3", 10);
    assert_int_equal(take(q, "t", 1, 1000, 50, d), 1); /* 2, until 1050 */
    assert_int_equal(d[0].id, 2);
    event_log log = {0};
    q_set_listener(q, on_event, &log);
    size_t expired = 9;
    assert_int_equal(q_tick(q, 99, &expired), 0);
    assert_int_equal(expired, 0);
    assert_int_equal(q_tick(q, 100, &expired), 0); /* a lease ends at its deadline */
    assert_int_equal(expired, 1);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.ev[0].kind, Q_EV_REQUEUED);
    assert_string_equal(log.topic[0], "t");
    assert_int_equal(log.ev[0].id, 1);
    assert_int_equal(log.ev[0].deliveries, 1);
    assert_int_equal(take(q, "t", 4, 100, 100, d), 2);
    assert_int_equal(d[0].id, 1); /* ahead of 3, which is newer */
    assert_int_equal(d[0].deliveries, 2);
    assert_int_equal(d[1].id, 3);
    assert_int_equal(d[1].deliveries, 1);
    q_topic_stats st;
    assert_int_equal(q_topic_stats_get(q, "t", &st), 0);
    assert_int_equal(st.requeued, 1);
    assert_int_equal(st.consumed, 4);
    assert_invariants(q);
    q_free(q);
}

static void test_consume_catches_up_with_the_clock_without_a_tick(void **state)
{
    q_state *q = new_state(1, 0);
    put(q, "t", "1", 0);
    put(q, "t", "2", 0);
    q_delivery d[2];
    assert_int_equal(take(q, "t", 1, 10, 0, d), 1);
    assert_int_equal(take(q, "t", 1, 10, 5, d), 1);
    assert_int_equal(d[0].id, 2);
    assert_int_equal(take(q, "t", 2, 10, 10, d), 1); /* 1's lease ended at 10 */
    assert_int_equal(d[0].id, 1);
    assert_int_equal(d[0].deliveries, 2);
    q_free(q);
}

static void test_requeued_messages_keep_id_order_whatever_order_they_expire_in(void **state)
{
    q_state *q = new_state(1, 10);
    for (int i = 0; i < 6; i++)
        put(q, "t", "m", 0);
    q_delivery d[6];
    /* Leases ending in the reverse order of the ids. */
    for (int i = 0; i < 6; i++)
        assert_int_equal(take(q, "t", 1, (uint64_t)(60 - 10 * i), 0, d), 1);
    for (uint64_t now = 10; now <= 60; now += 10)
        assert_int_equal(q_tick(q, now, NULL), 0);
    assert_int_equal(take(q, "t", 6, 100, 60, d), 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(d[i].id, (uint64_t)i + 1);
    assert_invariants(q);
    q_free(q);
}

static void test_next_deadline_is_the_earliest_lease(void **state)
{
    q_state *q = new_state(1, 0);
    assert_true(q_next_deadline(q) == UINT64_MAX);
    for (int i = 0; i < 3; i++)
        put(q, i == 2 ? "u" : "t", "m", 0);
    q_delivery d[2];
    take(q, "t", 1, 300, 0, d);
    assert_int_equal(q_next_deadline(q), 300);
    take(q, "u", 1, 100, 50, d);
    assert_int_equal(q_next_deadline(q), 150);
    q_delivery e[1];
    take(q, "t", 1, 1000, 60, e);
    assert_int_equal(q_ack(q, "u", &d[0].receipt, 60), 0);
    assert_int_equal(q_next_deadline(q), 300);
    assert_int_equal(q_tick(q, 300, NULL), 0);
    assert_int_equal(q_next_deadline(q), 1060);
    q_free(q);
}

/* ---- receipts ------------------------------------------------------------- */

static void test_receipts_are_unique_per_delivery_and_a_stale_one_is_refused(void **state)
{
    q_state *q = new_state(42, 10);
    put(q, "t", "m", 0);
    q_receipt seen[5];
    q_delivery d[1];
    for (int i = 0; i < 5; i++) {
        assert_int_equal(take(q, "t", 1, 10, (uint64_t)i * 10, d), 1);
        assert_int_equal(d[0].deliveries, (uint32_t)i + 1);
        seen[i] = d[0].receipt;
        for (int j = 0; j < i; j++)
            assert_false(seen[j].tag == seen[i].tag);
    }
    /* Delivery 5 is current: every earlier receipt is refused, and the
     * refusals leave the message in flight. */
    for (int j = 0; j < 4; j++)
        assert_int_equal(q_ack(q, "t", &seen[j], 45), DSYNC_ENOTFOUND);
    q_topic_stats st;
    assert_int_equal(q_topic_stats_get(q, "t", &st), 0);
    assert_int_equal(st.in_flight, 1);
    assert_int_equal(q_ack(q, "t", &seen[4], 45), 0);
    assert_int_equal(q_ack(q, "t", &seen[4], 45), DSYNC_ENOTFOUND); /* once */
    assert_int_equal(q_topic_stats_get(q, "t", &st), 0);
    assert_int_equal(st.acked, 1);
    assert_int_equal(st.in_flight + st.depth, 0);
    q_free(q);
}

static void test_a_late_ack_does_not_delete_a_requeued_or_redelivered_message(void **state)
{
    q_state *q = new_state(7, 0);
    put(q, "t", "m", 0);
    q_delivery first[1], second[1];
    take(q, "t", 1, 100, 0, first);
    /* At its deadline the lease has ended, even with no tick run. */
    assert_int_equal(q_ack(q, "t", &first[0].receipt, 100), DSYNC_ENOTFOUND);
    assert_true(q_has_ready(q, "t"));
    take(q, "t", 1, 100, 150, second);
    assert_int_equal(q_ack(q, "t", &first[0].receipt, 160), DSYNC_ENOTFOUND);
    assert_int_equal(q_ack(q, "t", &second[0].receipt, 160), 0);
    q_free(q);
}

static void test_an_ack_of_an_unknown_receipt_changes_nothing(void **state)
{
    q_state *q = new_state(3, 0);
    put(q, "t", "a", 0);
    put(q, "t", "b", 0);
    put(q, "u", "c", 0);
    q_delivery d[2], e[1];
    take(q, "t", 1, 100, 0, d);
    take(q, "u", 1, 100, 0, e);
    q_state *before = new_state(3, 0);
    ut_buf snap;
    snapshot_of(q, &snap);
    assert_int_equal(q_restore(before, snap.data, snap.len), 0);
    ut_buf_free(&snap);
    ut_buf journal;
    ut_buf_init(&journal);
    q_set_journal(q, &journal);
    q_receipt forged = d[0].receipt;
    forged.tag ^= 1;
    q_receipt unknown_id = {999, d[0].receipt.tag};
    assert_int_equal(q_ack(q, "t", &forged, 10), DSYNC_ENOTFOUND);
    assert_int_equal(q_ack(q, "t", &unknown_id, 10), DSYNC_ENOTFOUND);
    assert_int_equal(q_ack(q, "t", &e[0].receipt, 10), DSYNC_ENOTFOUND); /* u's, sent to t */
    assert_int_equal(q_ack(q, "nope", &d[0].receipt, 10), DSYNC_ENOTFOUND);
    assert_int_equal(q_ack(q, "t\n", &d[0].receipt, 10), DSYNC_EINVAL);
    assert_int_equal(journal.len, 0);
    assert_true(same_state(q, before));
    q_set_journal(q, NULL);
    ut_buf_free(&journal);
    q_free(before);
    q_free(q);
}

static void test_receipts_print_as_hex_and_parse_back(void **state)
{
    q_receipt r = {0x0123456789abcdefULL, 0xfedcba9876543210ULL}, back;
    char s[QS_RECEIPT_STRLEN + 1];
    q_receipt_format(&r, s);
    assert_string_equal(s, "0123456789abcdeffedcba9876543210");
    assert_int_equal(q_receipt_parse(s, &back), 0);
    assert_true(back.id == r.id && back.tag == r.tag);
    assert_int_equal(q_receipt_parse("0123456789ABCDEFFEDCBA9876543210", &back), 0);
    assert_true(back.id == r.id && back.tag == r.tag);
    assert_int_equal(q_receipt_parse("0123456789abcdeffedcba987654321", &back), DSYNC_EINVAL);
    assert_int_equal(q_receipt_parse("0123456789abcdeffedcba98765432100", &back), DSYNC_EINVAL);
    assert_int_equal(q_receipt_parse("0123456789abcdeffedcba987654321g", &back), DSYNC_EINVAL);
    assert_int_equal(q_receipt_parse("", &back), DSYNC_EINVAL);
    assert_int_equal(q_receipt_parse(NULL, &back), DSYNC_EINVAL);
}

static void test_receipts_differ_between_states_with_different_nonces(void **state)
{
    q_state *a = new_state(1, 0), *b = new_state(2, 0);
    put(a, "t", "m", 0);
    put(b, "t", "m", 0);
    q_delivery da[1], db[1];
    take(a, "t", 1, 100, 0, da);
    take(b, "t", 1, 100, 0, db);
    assert_true(da[0].receipt.id == db[0].receipt.id);
    assert_false(da[0].receipt.tag == db[0].receipt.tag);
    assert_int_equal(q_ack(b, "t", &da[0].receipt, 1), DSYNC_ENOTFOUND);
    q_free(a);
    q_free(b);
}

/* ---- dead letters --------------------------------------------------------- */

static void test_a_message_is_dead_lettered_instead_of_a_delivery_past_the_limit(void **state)
{
    q_state *q = new_state(5, 3);
    event_log log = {0};
    q_set_listener(q, on_event, &log);
    put(q, "jobs", "first", 0);
    put(q, "jobs", "poison", 0);
    q_delivery d[2];
    uint64_t now = 0;
    take(q, "jobs", 1, 1000000, now, d); /* "first" stays in flight throughout */
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(take(q, "jobs", 2, 10, now, d), 1);
        assert_int_equal(d[0].id, 2);
        assert_int_equal(d[0].deliveries, (uint32_t)i);
        now += 10;
    }
    /* The third lease ends: a fourth delivery would pass the limit of 3. */
    assert_int_equal(q_tick(q, now, NULL), 0);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.ev[2].kind, Q_EV_DEAD_LETTERED);
    assert_int_equal(log.ev[2].id, 2);
    assert_int_equal(log.ev[2].deliveries, 3);
    assert_int_equal(log.ev[2].dlq_id, 1);
    assert_false(q_has_ready(q, "jobs"));
    assert_true(q_has_ready(q, "jobs.dlq"));
    assert_int_equal(take(q, "jobs.dlq", 2, 10, now, d), 1);
    assert_int_equal(d[0].id, 1);
    assert_int_equal(d[0].deliveries, 1);
    assert_int_equal(d[0].origin_id, 2);
    assert_int_equal(d[0].origin_deliveries, 3);
    assert_true(body_is(&d[0], "poison"));
    q_topic_stats st;
    assert_int_equal(q_topic_stats_get(q, "jobs", &st), 0);
    assert_int_equal(st.dead_lettered, 1);
    assert_int_equal(st.depth, 0);
    assert_int_equal(st.in_flight, 1);
    assert_int_equal(q_topic_stats_get(q, "jobs.dlq", &st), 0);
    assert_int_equal(st.enqueued, 1);
    /* A dead-letter topic has none of its own: its messages cycle. */
    for (int i = 2; i <= 6; i++) {
        now += 10;
        assert_int_equal(take(q, "jobs.dlq", 2, 10, now, d), 1);
        assert_int_equal(d[0].deliveries, (uint32_t)i);
        assert_int_equal(d[0].origin_id, 2);
    }
    assert_int_equal(q_topic_stats_get(q, "jobs.dlq.dlq", &st), DSYNC_ENOTFOUND);
    assert_int_equal(q_ack(q, "jobs.dlq", &d[0].receipt, now), 0);
    assert_invariants(q);
    q_free(q);
}

static void test_the_longest_topic_name_still_has_a_dead_letter_topic(void **state)
{
    q_state *q = new_state(5, 1);
    char name[QS_TOPIC_MAX + 1], dlq[QS_TOPIC_NAME_MAX + 1];
    memset(name, 'n', QS_TOPIC_MAX);
    name[QS_TOPIC_MAX] = '\0';
    snprintf(dlq, sizeof dlq, "%s.dlq", name);
    put(q, name, "m", 0);
    q_delivery d[1];
    take(q, name, 1, 10, 0, d);
    assert_int_equal(q_tick(q, 10, NULL), 0);
    assert_int_equal(take(q, dlq, 1, 10, 10, d), 1);
    assert_int_equal(q_ack(q, dlq, &d[0].receipt, 10), 0);
    q_free(q);
}

/* ---- many consumers ------------------------------------------------------- */

static void test_many_consumers_never_hold_the_same_message_at_once(void **state)
{
    enum { N = 2000, CONSUMERS = 16 };
    q_state *q = new_state(9, 1000);
    for (int i = 0; i < N; i++)
        put(q, "t", "m", 0);
    /* holder[id] = consumer holding it until until[id], or -1 */
    int *holder = malloc((N + 1) * sizeof *holder);
    uint64_t *until = calloc(N + 1, sizeof *until);
    int *acked = calloc(N + 1, sizeof *acked);
    q_receipt *receipt = calloc(N + 1, sizeof *receipt);
    assert_true(holder && until && acked && receipt);
    for (int i = 0; i <= N; i++)
        holder[i] = -1;
    uint64_t seed = 77, now = 0;
    int done = 0;
    while (done < N) {
        now += rnd(&seed) % 5;
        int c = (int)(rnd(&seed) % CONSUMERS);
        char who[16];
        snprintf(who, sizeof who, "c%d", c);
        q_delivery d[8];
        size_t n;
        assert_int_equal(
            q_consume(q, "t", who, 1 + rnd(&seed) % 8, 1 + rnd(&seed) % 40, now, d, &n), 0);
        for (size_t i = 0; i < n; i++) {
            uint64_t id = d[i].id;
            assert_true(id >= 1 && id <= N && !acked[id]);
            /* Whoever had it before has lost its lease by now. */
            assert_true(holder[id] == -1 || until[id] <= now);
            holder[id] = c;
            until[id] = d[i].visibility_deadline;
            receipt[id] = d[i].receipt;
            /* Most consumers ack, some are too slow. */
            if (rnd(&seed) % 4 != 0) {
                uint64_t late = now + rnd(&seed) % 60;
                int rc = q_ack(q, "t", &receipt[id], late);
                if (late < until[id]) {
                    assert_int_equal(rc, 0);
                    acked[id] = 1;
                    holder[id] = -1;
                    done++;
                } else {
                    assert_int_equal(rc, DSYNC_ENOTFOUND);
                }
                if (late > now) now = late;
            }
        }
    }
    q_topic_stats st;
    assert_int_equal(q_topic_stats_get(q, "t", &st), 0);
    assert_int_equal(st.acked, N);
    assert_int_equal(st.depth + st.in_flight, 0);
    assert_invariants(q);
    free(holder);
    free(until);
    free(acked);
    free(receipt);
    q_free(q);
}

/* ---- bad input ------------------------------------------------------------ */

static void test_bad_names_bodies_and_arguments_are_refused(void **state)
{
    q_state *q = new_state(1, 0);
    uint64_t id;
    char longest[QS_TOPIC_MAX + 2];
    memset(longest, 'x', sizeof longest);
    longest[QS_TOPIC_MAX] = '\0';
    assert_int_equal(q_enqueue(q, longest, "m", 1, 0, &id), 0);
    longest[QS_TOPIC_MAX] = 'x';
    longest[QS_TOPIC_MAX + 1] = '\0';
    assert_int_equal(q_enqueue(q, longest, "m", 1, 0, &id), DSYNC_EINVAL);
    assert_int_equal(q_enqueue(q, "", "m", 1, 0, &id), DSYNC_EINVAL);
    assert_int_equal(q_enqueue(q, NULL, "m", 1, 0, &id), DSYNC_EINVAL);
    assert_int_equal(q_enqueue(q, "tab\there", "m", 1, 0, &id), DSYNC_EINVAL);
    assert_int_equal(q_enqueue(q, "caf\xc3\xa9", "m", 1, 0, &id), DSYNC_EINVAL);
    assert_int_equal(q_enqueue(q, ".dlq", "m", 1, 0, &id), 0); /* an ordinary name */
    assert_int_equal(q_check_topic_name("with space and {json}"), 0);
    /* "t.dlq" is t's dead letters, never a topic with dead letters of its own. */
    assert_int_equal(q_check_topic_name("t.dlq"), 0);
    assert_int_equal(q_check_topic_name("t.dlq.dlq"), DSYNC_EINVAL);
    assert_int_equal(q_enqueue(q, "t.dlq.dlq", "m", 1, 0, &id), DSYNC_EINVAL);
    assert_int_equal(q_check_topic_name(".dlq.dlq"), 0); /* ".dlq" is an ordinary name */
    /* Over QS_TOPIC_MAX only as a dead-letter topic's name. */
    char dlq[QS_TOPIC_NAME_MAX + 2];
    snprintf(dlq, sizeof dlq, "%.200s.dlq", longest);
    assert_int_equal(q_check_topic_name(dlq), 0);
    snprintf(dlq, sizeof dlq, "%.200s.dlx", longest);
    assert_int_equal(q_check_topic_name(dlq), DSYNC_EINVAL);
    snprintf(dlq, sizeof dlq, "%.201s.dlq", longest); /* a stem of 201 bytes */
    assert_int_equal(q_check_topic_name(dlq), DSYNC_EINVAL);

    static char huge[QS_MAX_BODY + 1];
    assert_int_equal(q_enqueue(q, "t", huge, QS_MAX_BODY + 1, 0, &id), DSYNC_ETOOBIG);
    assert_int_equal(q_enqueue(q, "t", huge, QS_MAX_BODY, 0, &id), 0);
    assert_int_equal(q_enqueue(q, "t", NULL, 0, 0, &id), 0);
    assert_int_equal(q_enqueue(q, "t", NULL, 3, 0, &id), DSYNC_EINVAL);
    assert_int_equal(q_enqueue(q, "t", "m", 1, 0, NULL), DSYNC_EINVAL);

    q_delivery d[2];
    size_t n;
    assert_int_equal(q_consume(q, "t", "w", 0, 10, 0, d, &n), DSYNC_EINVAL);
    assert_int_equal(q_consume(q, "t", "w", 1, 0, 0, d, &n), DSYNC_EINVAL);
    assert_int_equal(q_consume(q, "t", "w", 1, QS_MAX_VISIBILITY_MS + 1, 0, d, &n), DSYNC_EINVAL);
    assert_int_equal(q_consume(q, "t", "", 1, 10, 0, d, &n), DSYNC_EINVAL);
    assert_int_equal(q_consume(q, "t", NULL, 1, 10, 0, d, &n), DSYNC_EINVAL);
    char long_consumer[QS_CONSUMER_MAX + 2];
    memset(long_consumer, 'c', sizeof long_consumer);
    long_consumer[QS_CONSUMER_MAX + 1] = '\0';
    assert_int_equal(q_consume(q, "t", long_consumer, 1, 10, 0, d, &n), DSYNC_EINVAL);
    assert_int_equal(q_consume(q, "", "w", 1, 10, 0, d, &n), DSYNC_EINVAL);
    assert_int_equal(q_ack(q, "t", NULL, 0), DSYNC_EINVAL);
    assert_false(q_has_ready(q, ""));
    /* None of it touched the messages. */
    q_topic_stats st;
    assert_int_equal(q_topic_stats_get(q, "t", &st), 0);
    assert_int_equal(st.depth, 2);
    assert_int_equal(take(q, "t", 2, QS_MAX_VISIBILITY_MS, 0, d), 2);
    assert_int_equal(d[0].len, QS_MAX_BODY);
    assert_int_equal(d[1].len, 0);
    assert_invariants(q);
    q_free(q);
}

/* ---- figures -------------------------------------------------------------- */

static void test_stats_and_topic_iteration_follow_the_messages(void **state)
{
    q_state *q = new_state(1, 0);
    for (int i = 0; i < 5; i++)
        put(q, "a", "m", 0);
    put(q, "b", "m", 0);
    q_delivery d[3];
    take(q, "a", 3, 100, 0, d);
    assert_int_equal(q_ack(q, "a", &d[0].receipt, 1), 0);
    q_tick(q, 100, NULL);
    assert_true(q_has_ready(q, "a") && q_has_ready(q, "b"));
    int seen = 0;
    q_topic_stats st;
    for (size_t it = 0; q_topic_next(q, &it, &st);) {
        seen++;
        if (strcmp(st.name, "a") == 0) {
            assert_int_equal(st.depth, 4);
            assert_int_equal(st.in_flight, 0);
            assert_int_equal(st.enqueued, 5);
            assert_int_equal(st.consumed, 3);
            assert_int_equal(st.acked, 1);
            assert_int_equal(st.requeued, 2);
            assert_int_equal(st.next_id, 6);
        } else {
            assert_string_equal(st.name, "b");
            assert_int_equal(st.depth, 1);
        }
    }
    assert_int_equal(seen, 2);
    size_t topics;
    uint64_t ready, in_flight;
    take(q, "b", 1, 100, 100, d);
    q_counts(q, &topics, &ready, &in_flight);
    assert_int_equal(topics, 2);
    assert_int_equal(ready, 4);
    assert_int_equal(in_flight, 1);
    q_free(q);
}

/* ---- snapshots and records ------------------------------------------------ */

/* A small history touching every kind of change; journals into j. */
static q_state *busy_state(ut_buf *j, uint64_t *now_out)
{
    q_state *q = new_state(11, 2);
    if (j) q_set_journal(q, j);
    uint64_t now = 0;
    q_delivery d[4];
    for (int i = 0; i < 6; i++) {
        char body[16];
        snprintf(body, sizeof body, "[%d]", i);
        put(q, i % 2 ? "odd" : "even", body, now);
    }
    take(q, "even", 2, 50, now, d);
    assert_int_equal(q_ack(q, "even", &d[0].receipt, 10), 0);
    take(q, "odd", 3, 20, 10, d);
    now = 30; /* odd's three requeue; even's second is in flight */
    take(q, "odd", 1, 20, now, d);
    now = 60; /* odd 1 twice delivered: dead letter; even 2 requeued */
    assert_int_equal(q_tick(q, now, NULL), 0);
    take(q, "odd.dlq", 1, 1000, now, d);
    take(q, "odd", 1, 1000, now, d);
    put(q, "even", "late", now);
    *now_out = now;
    return q;
}

static void test_a_snapshot_restores_the_same_state(void **state)
{
    uint64_t now;
    q_state *q = busy_state(NULL, &now);
    assert_invariants(q);
    ut_buf snap;
    snapshot_of(q, &snap);
    q_state *r = new_state(999, 2); /* the config is not in a snapshot */
    put(r, "to-be-replaced", "x", 0);
    assert_int_equal(q_restore(r, snap.data, snap.len), 0);
    assert_invariants(r);
    assert_true(same_state(q, r));
    assert_int_equal(q_topic_stats_get(r, "to-be-replaced", NULL), DSYNC_ENOTFOUND);
    assert_int_equal(q_next_deadline(r), q_next_deadline(q));
    /* And it goes on the same way. */
    q_delivery a[4], b[4];
    size_t na = take(q, "even", 4, 10, now + 5000, a), nb = take(r, "even", 4, 10, now + 5000, b);
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++) {
        assert_int_equal(a[i].id, b[i].id);
        assert_int_equal(a[i].receipt.tag, b[i].receipt.tag); /* the topic's nonce came along */
    }
    assert_true(same_state(q, r));
    ut_buf_free(&snap);
    q_free(q);
    q_free(r);
}

static void test_replaying_the_records_gives_the_same_state(void **state)
{
    ut_buf j;
    ut_buf_init(&j);
    uint64_t now;
    q_state *q = busy_state(&j, &now);
    q_state *r = new_state(12345, 0); /* config plays no part in replay */
    size_t used = 0;
    assert_int_equal(q_apply_all(r, j.data, j.len, &used), 0);
    assert_int_equal(used, j.len);
    assert_invariants(r);
    assert_true(same_state(q, r));

    /* A snapshot part way plus the records after it gives the same, too. */
    size_t mark = j.len;
    ut_buf snap;
    snapshot_of(q, &snap);
    q_delivery d[4];
    take(q, "even", 4, 10, now, d);
    assert_int_equal(q_ack(q, "even", &d[0].receipt, now + 1), 0);
    q_tick(q, now + 100, NULL);
    put(q, "new", "n", now + 100);
    q_state *s = new_state(0, 0);
    assert_int_equal(q_restore(s, snap.data, snap.len), 0);
    assert_int_equal(q_apply_all(s, j.data + mark, j.len - mark, NULL), 0);
    assert_true(same_state(q, s));
    /* Applying a record twice is refused, state unchanged. */
    assert_int_equal(q_apply_all(s, j.data + mark, j.len - mark, &used), DSYNC_ECORRUPT);
    assert_int_equal(used, 0);
    assert_true(same_state(q, s));
    ut_buf_free(&snap);
    ut_buf_free(&j);
    q_free(q);
    q_free(r);
    q_free(s);
}

static void test_records_that_do_not_follow_from_the_state_are_refused(void **state)
{
    ut_buf j;
    ut_buf_init(&j);
    q_state *q = new_state(1, 0);
    q_set_journal(q, &j);
    put(q, "t", "a", 0);
    size_t a = (size_t)ut_get_le((unsigned char *)j.data, 4) + 4; /* after TOPIC */
    size_t b = j.len;                                             /* after ENQUEUE a */
    put(q, "t", "b", 0);
    size_t c = j.len;
    q_delivery d[1];
    take(q, "t", 1, 10, 0, d);
    size_t e = j.len;
    assert_int_equal(q_ack(q, "t", &d[0].receipt, 1), 0);
    /* records: [0,a) TOPIC  [a,b) ENQUEUE 1  [b,c) ENQUEUE 2  [c,e) CONSUME  [e,len) ACK */
    q_state *r = new_state(1, 0);
    size_t used;
    assert_int_equal(q_apply(r, j.data + a, b - a, &used), DSYNC_ECORRUPT); /* no topic */
    assert_int_equal(q_apply(r, j.data, j.len, &used), 0); /* just the first record */
    assert_int_equal(used, a);
    assert_int_equal(q_apply(r, j.data, a, NULL), DSYNC_ECORRUPT);         /* topic twice */
    assert_int_equal(q_apply(r, j.data + b, c - b, NULL), DSYNC_ECORRUPT); /* id 2 first */
    assert_int_equal(q_apply(r, j.data + a, b - a, NULL), 0);
    assert_int_equal(q_apply(r, j.data + a, b - a, NULL), DSYNC_ECORRUPT);     /* id 1 twice */
    assert_int_equal(q_apply(r, j.data + e, j.len - e, NULL), DSYNC_ECORRUPT); /* not in flight */
    assert_int_equal(q_apply(r, j.data + c, e - c, NULL), 0);
    assert_int_equal(q_apply(r, j.data + c, e - c, NULL), DSYNC_ECORRUPT); /* nothing ready */
    assert_int_equal(q_apply_all(r, j.data + b, c - b, NULL), 0);
    assert_int_equal(q_apply_all(r, j.data + e, j.len - e, NULL), 0);
    assert_true(same_state(q, r));
    /* Every proper prefix of a record is refused. */
    for (size_t len = 0; len < e - c; len++)
        assert_int_equal(q_apply(r, j.data + c, len, NULL), DSYNC_ECORRUPT);
    assert_invariants(r);
    ut_buf_free(&j);
    q_free(q);
    q_free(r);
}

static void test_a_consume_record_must_name_the_smallest_ready_ids_in_order(void **state)
{
    ut_buf j;
    ut_buf_init(&j);
    q_state *q = new_state(1, 0);
    q_set_journal(q, &j);
    for (int i = 0; i < 5; i++)
        put(q, "t", "m", 0);
    q_delivery d[3];
    take(q, "t", 2, 10, 0, d);
    assert_int_equal(q_tick(q, 10, NULL), 0); /* 1 and 2 requeued, 3..5 never delivered */
    size_t mark = j.len;
    assert_int_equal(take(q, "t", 3, 10, 10, d), 3); /* CONSUME [1, 2, 3] */
    q_state *r = new_state(1, 0);
    assert_int_equal(q_apply_all(r, j.data, mark, NULL), 0);
    ut_buf before;
    snapshot_of(r, &before);
    /* size, version, kind, u16 + "t", deadline, n: then the ids */
    const size_t ids_at = 4 + 1 + 1 + 2 + 1 + 8 + 4, len = j.len - mark;
    assert_int_equal(len, ids_at + 3 * 8 + 4);
    const uint64_t wrong[][3] = {{1, 2, 4}, {2, 1, 3}, {1, 3, 2}, {3, 4, 5}, {1, 2, 2}};
    unsigned char rec[64];
    for (size_t w = 0; w < sizeof wrong / sizeof wrong[0]; w++) {
        memcpy(rec, j.data + mark, len);
        for (int i = 0; i < 3; i++)
            ut_put_le(rec + ids_at + 8 * i, wrong[w][i], 8);
        ut_put_le(rec + len - 4, ut_crc32c(0, rec, len - 4), 4);
        assert_int_equal(q_apply(r, rec, len, NULL), DSYNC_ECORRUPT);
        ut_buf after;
        snapshot_of(r, &after);
        assert_int_equal(after.len, before.len);
        assert_memory_equal(after.data, before.data, before.len);
        ut_buf_free(&after);
        assert_invariants(r);
    }
    assert_int_equal(q_apply(r, j.data + mark, len, NULL), 0);
    assert_true(same_state(q, r));
    ut_buf_free(&before);
    ut_buf_free(&j);
    q_free(q);
    q_free(r);
}

static void test_a_topic_moves_to_another_state_with_its_receipts(void **state)
{
    uint64_t now;
    q_state *a = busy_state(NULL, &now);
    q_state *b = new_state(77, 0);
    put(b, "kept", "k", 0);
    put(b, "odd", "an older odd, to be replaced", 0);
    q_delivery d[1], old[1];
    take(b, "odd", 1, 10, 0, old); /* a lease that must go with it */
    take(a, "odd", 1, 1000, now, d);
    ut_buf one;
    ut_buf_init(&one);
    assert_int_equal(q_snapshot_topic(a, "odd", &one), 0);
    assert_int_equal(q_snapshot_topic(a, "none", &one), DSYNC_ENOTFOUND);
    assert_int_equal(q_restore_topics(b, one.data, one.len), 0);
    assert_invariants(b);
    ut_buf again;
    ut_buf_init(&again);
    assert_int_equal(q_snapshot_topic(b, "odd", &again), 0);
    assert_int_equal(again.len, one.len);
    assert_memory_equal(again.data, one.data, one.len);
    assert_true(q_has_ready(b, "kept"));
    assert_int_equal(q_ack(b, "odd", &old[0].receipt, now), DSYNC_ENOTFOUND);
    assert_int_equal(q_ack(b, "odd", &d[0].receipt, now), 0); /* a's receipt, at b */
    assert_int_equal(q_next_deadline(b), now + 1000); /* odd's other lease; b's old one left */
    assert_invariants(b);
    ut_buf_free(&one);
    ut_buf_free(&again);
    q_free(a);
    q_free(b);
}

/* A handover: the old owner files each record under its topic, ships the
 * unit (topic + dead letters) as one snapshot and drops both; the new
 * owner rebuilds the same unit from snapshot and records. */
static void test_a_unit_is_filed_by_topic_shipped_and_dropped(void **state)
{
    q_state *a = new_state(5, 1);
    ut_buf j;
    ut_buf_init(&j);
    q_set_journal(a, &j);
    put(a, "t", "one", 0);
    put(a, "t", "two", 0);
    put(a, "other", "x", 0);
    q_delivery d[2];
    assert_int_equal(take(a, "t", 2, 10, 0, d), 2);
    assert_int_equal(take(a, "other", 1, 50, 0, d), 1);
    assert_int_equal(q_tick(a, 10, NULL), 0); /* t's two go to t.dlq (max 1 delivery) */
    assert_true(q_has_ready(a, "t.dlq"));
    /* Every record names its topic; only t's and t.dlq's belong to the unit. */
    size_t unit_records = 0, off = 0;
    while (off < j.len) {
        char name[QS_TOPIC_NAME_MAX + 1];
        size_t len = 0;
        assert_int_equal(q_record_topic(j.data + off, j.len - off, name, &len), 0);
        assert_true(len > 0 && len <= j.len - off);
        unit_records += strcmp(name, "t") == 0 || strcmp(name, "t.dlq") == 0;
        off += len;
    }
    assert_int_equal(off, j.len);
    assert_true(unit_records >= 6); /* 2 topics, 2 enqueues, 1 consume, 2 dead letters */
    char name[QS_TOPIC_NAME_MAX + 1];
    size_t len;
    assert_int_equal(q_record_topic(j.data, 3, name, &len), DSYNC_ECORRUPT);
    unsigned char bad[64];
    memcpy(bad, j.data, sizeof bad);
    bad[4] = 9; /* version */
    assert_int_equal(q_record_topic(bad, sizeof bad, name, &len), DSYNC_ECORRUPT);

    ut_buf unit;
    ut_buf_init(&unit);
    assert_int_equal(q_snapshot_unit(a, "t.dlq", &unit), DSYNC_EINVAL);
    assert_int_equal(q_snapshot_unit(a, "t", &unit), 0);
    q_state *b = new_state(6, 1);
    assert_int_equal(q_restore_topics(b, unit.data, unit.len), 0);
    assert_invariants(b);
    q_topic_stats st;
    assert_int_equal(q_topic_stats_get(b, "t.dlq", &st), 0);
    assert_int_equal(st.depth, 2);
    assert_int_equal(q_topic_stats_get(b, "other", &st), DSYNC_ENOTFOUND);

    /* Dropping takes the topic's leases with it: "other" keeps its own. */
    assert_int_equal(q_drop_topic(a, "t"), 0);
    assert_int_equal(q_drop_topic(a, "t.dlq"), 0);
    assert_int_equal(q_drop_topic(a, "t"), DSYNC_ENOTFOUND);
    assert_invariants(a);
    assert_int_equal(q_topic_stats_get(a, "t", &st), DSYNC_ENOTFOUND);
    assert_int_equal(q_next_deadline(a), 50);
    put(a, "t", "fresh", 20); /* a new topic of the same name starts from 1 */
    assert_int_equal(q_topic_stats_get(a, "t", &st), 0);
    assert_int_equal(st.depth, 1);
    ut_buf empty;
    ut_buf_init(&empty);
    assert_int_equal(q_snapshot_unit(b, "none", &empty), 0); /* an empty unit */
    q_state *c = new_state(7, 1);
    assert_int_equal(q_restore_topics(c, empty.data, empty.len), 0);
    size_t topics;
    q_counts(c, &topics, NULL, NULL);
    assert_int_equal(topics, 0);
    q_set_journal(a, NULL);
    ut_buf_free(&j);
    ut_buf_free(&unit);
    ut_buf_free(&empty);
    q_free(a);
    q_free(b);
    q_free(c);
}

static void test_corrupt_snapshots_are_refused_and_change_nothing(void **state)
{
    uint64_t now;
    q_state *q = busy_state(NULL, &now);
    ut_buf good;
    snapshot_of(q, &good);
    q_state *r = new_state(1, 0);
    put(r, "mine", "m", 0);
    ut_buf before;
    snapshot_of(r, &before);
    unsigned char *bad = malloc(good.len);
    assert_non_null(bad);
    uint64_t seed = 1234;
    int accepted = 0;
    for (int trial = 0; trial < 3000; trial++) {
        memcpy(bad, good.data, good.len);
        int flips = 1 + (int)(rnd(&seed) % 3);
        for (int f = 0; f < flips; f++)
            bad[rnd(&seed) % good.len] ^= (unsigned char)(1 + rnd(&seed) % 255);
        bool fix_crc = trial % 2; /* half get past the checksum, to test the decoder */
        if (fix_crc) ut_put_le(bad + good.len - 4, ut_crc32c(0, bad, good.len - 4), 4);
        if (memcmp(bad, good.data, good.len) == 0) continue;
        int rc = q_restore(r, bad, good.len);
        if (!fix_crc) assert_int_equal(rc, DSYNC_ECORRUPT);
        if (rc == 0) {
            /* It was well formed after all: then it is canonical. */
            ut_buf back;
            snapshot_of(r, &back);
            assert_int_equal(back.len, good.len);
            assert_memory_equal(back.data, bad, good.len);
            ut_buf_free(&back);
            assert_invariants(r);
            accepted++;
            assert_int_equal(q_restore(r, before.data, before.len), 0);
            continue;
        }
        assert_int_equal(rc, DSYNC_ECORRUPT);
        ut_buf now_b;
        snapshot_of(r, &now_b);
        assert_int_equal(now_b.len, before.len);
        assert_memory_equal(now_b.data, before.data, before.len);
        ut_buf_free(&now_b);
    }
    for (size_t len = 0; len < good.len; len += 1 + len / 8)
        assert_int_equal(q_restore(r, good.data, len), DSYNC_ECORRUPT);
    print_message("    %d of 1500 checksum-fixed corruptions were well-formed snapshots\n",
                  accepted);
    assert_int_equal(q_restore(r, good.data, good.len), 0);
    assert_true(same_state(q, r));
    free(bad);
    ut_buf_free(&good);
    ut_buf_free(&before);
    q_free(q);
    q_free(r);
}

static void test_corrupt_records_are_refused_and_change_nothing(void **state)
{
    ut_buf j;
    ut_buf_init(&j);
    uint64_t now;
    q_state *q = busy_state(&j, &now);
    /* Where each record starts. */
    size_t starts[256], n = 0;
    for (size_t at = 0; at < j.len; at += 4 + ut_get_le((unsigned char *)j.data + at, 4))
        starts[n++] = at;
    starts[n] = j.len;
    unsigned char *bad = malloc(j.len);
    assert_non_null(bad);
    uint64_t seed = 99;
    for (int trial = 0; trial < 3000; trial++) {
        memcpy(bad, j.data, j.len);
        size_t k = rnd(&seed) % n, s = starts[k], e = starts[k + 1];
        bool fix_crc = trial % 2;
        /* Flip inside record k (past its size field when fixing the crc). */
        size_t lo = fix_crc ? s + 4 : s, span = e - 4 - lo + (fix_crc ? 0 : 4);
        bad[lo + rnd(&seed) % span] ^= (unsigned char)(1 + rnd(&seed) % 255);
        if (fix_crc) ut_put_le(bad + e - 4, ut_crc32c(0, bad + s, e - 4 - s), 4);
        q_state *r = new_state(1, 0);
        /* The records before k apply; k itself is refused (or, when its
         * crc was fixed, may still be well formed). */
        size_t used;
        int rc = q_apply_all(r, bad, s, &used);
        assert_int_equal(rc, 0);
        ut_buf before;
        snapshot_of(r, &before);
        rc = q_apply(r, bad + s, j.len - s, &used);
        if (!fix_crc) assert_int_equal(rc, DSYNC_ECORRUPT);
        if (rc != 0) {
            assert_int_equal(rc, DSYNC_ECORRUPT);
            ut_buf after;
            snapshot_of(r, &after);
            assert_int_equal(after.len, before.len);
            assert_memory_equal(after.data, before.data, before.len);
            ut_buf_free(&after);
        }
        assert_invariants(r);
        ut_buf_free(&before);
        q_free(r);
    }
    free(bad);
    ut_buf_free(&j);
    q_free(q);
}

/* ---- a random history against a reference model --------------------------- */

/* The model keeps every message of a topic in an array by id and finds
 * everything by scanning: slow and obviously right. */
enum { M_READY, M_FLIGHT, M_GONE };
#define M_BASE 3 /* topics t0..t2; index 3+i is ti.dlq */

typedef struct {
    int where;
    uint64_t deadline;
    uint32_t deliveries;
    q_receipt receipt;
    uint64_t origin_id;
    uint32_t origin_deliveries;
    char body[40];
    size_t len;
} m_msg;

typedef struct {
    char name[24];
    m_msg *msgs; /* msgs[id - 1] */
    size_t n, cap;
} m_topic;

typedef struct {
    m_topic t[2 * M_BASE];
    uint32_t max_deliveries;
    int *acks[M_BASE]; /* by original id: acks of it, here or as a dead letter */
    size_t acks_cap[M_BASE];
    q_receipt *stale;
    int *stale_topic;
    size_t n_stale;
} model;

static m_msg *m_add(m_topic *t)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->msgs = realloc(t->msgs, t->cap * sizeof *t->msgs);
        assert_non_null(t->msgs);
    }
    m_msg *m = &t->msgs[t->n++];
    memset(m, 0, sizeof *m);
    return m;
}

/* Ends the leases that ended by now, in the state's order. */
static size_t m_tick(model *md, uint64_t now)
{
    size_t count = 0;
    for (;;) {
        int bt = -1;
        size_t bi = 0;
        for (int k = 0; k < 2 * M_BASE; k++)
            for (size_t i = 0; i < md->t[k].n; i++) {
                const m_msg *m = &md->t[k].msgs[i];
                if (m->where != M_FLIGHT || m->deadline > now) continue;
                const m_msg *b = bt < 0 ? NULL : &md->t[bt].msgs[bi];
                if (!b || m->deadline < b->deadline ||
                    (m->deadline == b->deadline &&
                     (i < bi || (i == bi && strcmp(md->t[k].name, md->t[bt].name) < 0)))) {
                    bt = k;
                    bi = i;
                }
            }
        if (bt < 0) return count;
        count++;
        m_msg *m = &md->t[bt].msgs[bi];
        if (bt < M_BASE && m->deliveries >= md->max_deliveries) {
            m->where = M_GONE;
            m_msg *dl = m_add(&md->t[bt + M_BASE]);
            dl->where = M_READY;
            dl->origin_id = bi + 1;
            dl->origin_deliveries = m->deliveries;
            memcpy(dl->body, m->body, m->len);
            dl->len = m->len;
        } else {
            m->where = M_READY;
        }
    }
}

static uint64_t m_next_deadline(const model *md)
{
    uint64_t best = UINT64_MAX;
    for (int k = 0; k < 2 * M_BASE; k++)
        for (size_t i = 0; i < md->t[k].n; i++)
            if (md->t[k].msgs[i].where == M_FLIGHT && md->t[k].msgs[i].deadline < best)
                best = md->t[k].msgs[i].deadline;
    return best;
}

static void m_count_ack(model *md, int k, size_t idx)
{
    int base = k < M_BASE ? k : k - M_BASE;
    size_t orig = k < M_BASE ? idx + 1 : md->t[k].msgs[idx].origin_id;
    if (orig >= md->acks_cap[base]) {
        size_t ncap = orig * 2 + 16;
        md->acks[base] = realloc(md->acks[base], ncap * sizeof(int));
        assert_non_null(md->acks[base]);
        memset(md->acks[base] + md->acks_cap[base], 0, (ncap - md->acks_cap[base]) * sizeof(int));
        md->acks_cap[base] = ncap;
    }
    md->acks[base][orig]++;
}

static uint64_t g_seed;
static int g_step;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail_msg("seed %llu step %d: %s (rerun with DSYNC_SEED=%llu)",                         \
                     (unsigned long long)g_seed, g_step, #cond, (unsigned long long)g_seed);       \
    } while (0)

static void m_consume(model *md, q_state *q, int k, size_t max, uint64_t vis, uint64_t now)
{
    q_delivery d[8];
    size_t n;
    CHECK(q_consume(q, md->t[k].name, "c", max, vis, now, d, &n) == 0);
    m_tick(md, now);
    size_t got = 0;
    for (size_t i = 0; i < md->t[k].n && got < max; i++) {
        m_msg *m = &md->t[k].msgs[i];
        if (m->where != M_READY) continue; /* never one in flight: never two holders */
        CHECK(got < n && d[got].id == i + 1);
        m->deliveries++;
        CHECK(d[got].deliveries == m->deliveries);
        CHECK(d[got].len == m->len && memcmp(d[got].body, m->body, m->len) == 0);
        CHECK(d[got].origin_id == m->origin_id);
        CHECK(d[got].origin_deliveries == m->origin_deliveries);
        if (m->deliveries > 1) {
            md->stale = realloc(md->stale, (md->n_stale + 1) * sizeof *md->stale);
            md->stale_topic = realloc(md->stale_topic, (md->n_stale + 1) * sizeof(int));
            assert_true(md->stale && md->stale_topic);
            md->stale[md->n_stale] = m->receipt;
            md->stale_topic[md->n_stale++] = k;
        }
        m->where = M_FLIGHT;
        m->deadline = now + vis;
        m->receipt = d[got].receipt;
        got++;
    }
    CHECK(got == n);
}

/* Acks message idx of topic k with its current receipt at now. */
static void m_ack(model *md, q_state *q, int k, size_t idx, uint64_t now)
{
    q_receipt r = md->t[k].msgs[idx].receipt;
    int rc = q_ack(q, md->t[k].name, &r, now);
    m_tick(md, now);
    m_msg *m = &md->t[k].msgs[idx];
    if (m->where == M_FLIGHT) {
        CHECK(rc == 0);
        m->where = M_GONE;
        m_count_ack(md, k, idx);
    } else {
        CHECK(rc == DSYNC_ENOTFOUND);
    }
}

static void m_compare(const model *md, const q_state *q)
{
    CHECK(q_next_deadline(q) == m_next_deadline(md));
    for (int k = 0; k < 2 * M_BASE; k++) {
        uint64_t ready = 0, flight = 0;
        for (size_t i = 0; i < md->t[k].n; i++) {
            ready += md->t[k].msgs[i].where == M_READY;
            flight += md->t[k].msgs[i].where == M_FLIGHT;
        }
        q_topic_stats st;
        if (md->t[k].n == 0) {
            CHECK(q_topic_stats_get(q, md->t[k].name, &st) == DSYNC_ENOTFOUND);
            continue;
        }
        CHECK(q_topic_stats_get(q, md->t[k].name, &st) == 0);
        CHECK(st.depth == ready && st.in_flight == flight && st.next_id == md->t[k].n + 1);
        CHECK(q_has_ready(q, md->t[k].name) == (ready > 0));
    }
}

static void run_model(uint64_t seed, int steps)
{
    g_seed = seed;
    uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1, now = 0;
    model md;
    memset(&md, 0, sizeof md);
    md.max_deliveries = 1 + (uint32_t)(rnd(&s) % 4);
    for (int k = 0; k < M_BASE; k++) {
        snprintf(md.t[k].name, sizeof md.t[k].name, "t%d", k);
        snprintf(md.t[k + M_BASE].name, sizeof md.t[k].name, "t%d.dlq", k);
    }
    q_state *q = new_state(rnd(&s), md.max_deliveries);
    ut_buf j, snap;
    ut_buf_init(&j);
    ut_buf_init(&snap);
    size_t snap_mark = 0;
    q_set_journal(q, &j);
    for (g_step = 0; g_step < steps; g_step++) {
        int op = (int)(rnd(&s) % 100), k = (int)(rnd(&s) % M_BASE);
        if (op < 30) {
            m_tick(&md, now);
            m_msg *m = m_add(&md.t[k]);
            m->len = (size_t)snprintf(m->body, sizeof m->body, "%d:%zu:%llu", k, md.t[k].n,
                                      (unsigned long long)(rnd(&s) % 100000));
            m->where = M_READY;
            uint64_t id;
            CHECK(q_enqueue(q, md.t[k].name, m->body, m->len, now, &id) == 0);
            CHECK(id == md.t[k].n);
        } else if (op < 55) {
            m_consume(&md, q, k + (rnd(&s) % 4 == 0 ? M_BASE : 0), 1 + rnd(&s) % 8,
                      1 + rnd(&s) % 50, now);
        } else if (op < 75) {
            /* Ack a random message that is in flight now (its lease may end
             * first if the ack comes late). */
            int kk = k + (rnd(&s) % 4 == 0 ? M_BASE : 0);
            size_t n = md.t[kk].n, start = n ? rnd(&s) % n : 0;
            for (size_t i = 0; i < n; i++) {
                size_t idx = (start + i) % n;
                if (md.t[kk].msgs[idx].where != M_FLIGHT) continue;
                now += rnd(&s) % 20;
                m_ack(&md, q, kk, idx, now);
                break;
            }
        } else if (op < 80) {
            /* A stale, forged or misdirected receipt: refused, no change. */
            CHECK(q_tick(q, now, NULL) == 0);
            m_tick(&md, now);
            bool compare = rnd(&s) % 4 == 0; /* whole-state compares are the slow part */
            ut_buf before, after;
            if (compare) snapshot_of(q, &before);
            q_receipt r = {1 + rnd(&s) % 50, rnd(&s)};
            const char *topic = md.t[k].name;
            if (md.n_stale && rnd(&s) % 2) {
                size_t i = rnd(&s) % md.n_stale;
                r = md.stale[i];
                topic = md.t[md.stale_topic[i]].name;
            }
            CHECK(q_ack(q, topic, &r, now) == DSYNC_ENOTFOUND);
            if (compare) {
                snapshot_of(q, &after);
                CHECK(before.len == after.len && memcmp(before.data, after.data, before.len) == 0);
                ut_buf_free(&before);
                ut_buf_free(&after);
            }
        } else if (op < 93) {
            now += rnd(&s) % 25;
        } else {
            size_t expired;
            CHECK(q_tick(q, now, &expired) == 0);
            CHECK(expired == m_tick(&md, now));
        }
        m_compare(&md, q);
        if (g_step == steps / 2) {
            snap.len = 0;
            CHECK(q_snapshot(q, &snap) == 0);
            snap_mark = j.len;
        }
        if (g_step % 500 == 499 || g_step == steps - 1) {
            char err[200];
            if (q_check_invariants(q, err, sizeof err) != 0) CHECK(!err[0]);
            q_state *r = new_state(0, 0);
            CHECK(q_apply_all(r, j.data, j.len, NULL) == 0);
            CHECK(same_state(q, r));
            q_free(r);
            if (snap.len) {
                r = new_state(0, 0);
                CHECK(q_restore(r, snap.data, snap.len) == 0);
                CHECK(q_apply_all(r, j.data + snap_mark, j.len - snap_mark, NULL) == 0);
                CHECK(same_state(q, r));
                q_free(r);
            }
        }
    }
    /* Drain: consumers take everything and ack at once. Every message ever
     * enqueued is then acked exactly once, in its topic or as a dead letter. */
    for (int round = 0; round < 1000; round++) {
        now += 100;
        bool any = false;
        for (int k = 0; k < 2 * M_BASE; k++) {
            m_consume(&md, q, k, 8, 1000, now);
            for (size_t i = 0; i < md.t[k].n; i++)
                if (md.t[k].msgs[i].where == M_FLIGHT && md.t[k].msgs[i].deadline == now + 1000) {
                    m_ack(&md, q, k, i, now);
                    any = true;
                }
            any = any || q_has_ready(q, md.t[k].name);
        }
        if (!any && q_next_deadline(q) == UINT64_MAX) break;
    }
    for (int k = 0; k < M_BASE; k++)
        for (size_t id = 1; id <= md.t[k].n; id++)
            CHECK(id < md.acks_cap[k] && md.acks[k][id] == 1);
    size_t topics;
    uint64_t ready, flight;
    q_counts(q, &topics, &ready, &flight);
    CHECK(ready == 0 && flight == 0);
    for (int k = 0; k < 2 * M_BASE; k++)
        free(md.t[k].msgs);
    for (int k = 0; k < M_BASE; k++)
        free(md.acks[k]);
    free(md.stale);
    free(md.stale_topic);
    ut_buf_free(&j);
    ut_buf_free(&snap);
    q_free(q);
}

static void test_a_random_history_matches_a_reference_model(void **state)
{
    const char *one = getenv("DSYNC_SEED");
    if (one) {
        run_model(strtoull(one, NULL, 10), 3000);
        return;
    }
    const char *n = getenv("DSYNC_SIM_SEEDS");
    int seeds = n ? atoi(n) : 30;
    for (int seed = 1; seed <= seeds; seed++)
        run_model((uint64_t)seed, 3000);
}

/* ---- scale ---------------------------------------------------------------- */

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd; /* big arrays are mmapped blocks */
}

static void test_a_million_waiting_messages_take_little_memory(void **state)
{
    enum { N = 1000000, BATCH = 1000 };
    size_t base = heap_in_use();
    q_state *q = new_state(3, 0);
    uint64_t t0 = ut_now_ns();
    for (uint64_t i = 1; i <= N; i++) {
        char body[17];
        snprintf(body, sizeof body, "{\"n\":%10llu}", (unsigned long long)i); /* 16 bytes */
        assert_int_equal(put(q, "big", body, 0), i);
    }
    uint64_t t1 = ut_now_ns();
    size_t waiting = heap_in_use() - base;
    q_delivery *d = malloc(BATCH * sizeof *d);
    assert_non_null(d);
    for (int b = 0; b < N / BATCH; b++)
        assert_int_equal(take(q, "big", BATCH, 1000, 0, d), BATCH);
    uint64_t t2 = ut_now_ns();
    size_t flying = heap_in_use() - base;
    size_t expired;
    assert_int_equal(q_tick(q, 1000, &expired), 0);
    assert_int_equal(expired, N);
    uint64_t t3 = ut_now_ns();
    uint64_t next = 1;
    for (int b = 0; b < N / BATCH; b++) {
        assert_int_equal(take(q, "big", BATCH, 1000, 1000, d), BATCH);
        for (int i = 0; i < BATCH; i++) {
            assert_int_equal(d[i].id, next++); /* requeued, still in id order */
            assert_int_equal(d[i].deliveries, 2);
            assert_int_equal(q_ack(q, "big", &d[i].receipt, 1000), 0);
        }
    }
    uint64_t t4 = ut_now_ns();
    q_topic_stats st;
    assert_int_equal(q_topic_stats_get(q, "big", &st), 0);
    assert_int_equal(st.depth + st.in_flight, 0);
    assert_int_equal(st.acked, N);
    if (waiting == 0) {
        print_message("    memory not measurable here (malloc replaced, e.g. valgrind)\n");
    } else {
        print_message("    1,000,000 waiting messages, 16-byte bodies: %.1f bytes/message "
                      "(%.1f beyond the body); all in flight: %.1f bytes/message\n",
                      (double)waiting / N, (double)waiting / N - 16, (double)flying / N);
        assert_true(waiting / N <= 64);
        assert_true(flying / N <= 128);
    }
    print_message("    enqueue %.0f ns, consume %.0f ns, expire %.0f ns, consume+ack %.0f ns "
                  "per message\n",
                  (double)(t1 - t0) / N, (double)(t2 - t1) / N, (double)(t3 - t2) / N,
                  (double)(t4 - t3) / N);
    free(d);
    q_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages_come_out_in_the_order_they_went_in),
        cmocka_unit_test(test_a_batch_is_handed_out_by_id_with_bodies_and_first_delivery_counts),
        cmocka_unit_test(test_an_unknown_topic_hands_out_nothing_and_is_not_created),
        cmocka_unit_test(test_an_expired_message_is_requeued_ahead_of_newer_ones),
        cmocka_unit_test(test_consume_catches_up_with_the_clock_without_a_tick),
        cmocka_unit_test(test_requeued_messages_keep_id_order_whatever_order_they_expire_in),
        cmocka_unit_test(test_next_deadline_is_the_earliest_lease),
        cmocka_unit_test(test_receipts_are_unique_per_delivery_and_a_stale_one_is_refused),
        cmocka_unit_test(test_a_late_ack_does_not_delete_a_requeued_or_redelivered_message),
        cmocka_unit_test(test_an_ack_of_an_unknown_receipt_changes_nothing),
        cmocka_unit_test(test_receipts_print_as_hex_and_parse_back),
        cmocka_unit_test(test_receipts_differ_between_states_with_different_nonces),
        cmocka_unit_test(test_a_message_is_dead_lettered_instead_of_a_delivery_past_the_limit),
        cmocka_unit_test(test_the_longest_topic_name_still_has_a_dead_letter_topic),
        cmocka_unit_test(test_many_consumers_never_hold_the_same_message_at_once),
        cmocka_unit_test(test_bad_names_bodies_and_arguments_are_refused),
        cmocka_unit_test(test_stats_and_topic_iteration_follow_the_messages),
        cmocka_unit_test(test_a_snapshot_restores_the_same_state),
        cmocka_unit_test(test_replaying_the_records_gives_the_same_state),
        cmocka_unit_test(test_records_that_do_not_follow_from_the_state_are_refused),
        cmocka_unit_test(test_a_consume_record_must_name_the_smallest_ready_ids_in_order),
        cmocka_unit_test(test_a_topic_moves_to_another_state_with_its_receipts),
        cmocka_unit_test(test_a_unit_is_filed_by_topic_shipped_and_dropped),
        cmocka_unit_test(test_corrupt_snapshots_are_refused_and_change_nothing),
        cmocka_unit_test(test_corrupt_records_are_refused_and_change_nothing),
        cmocka_unit_test(test_a_random_history_matches_a_reference_model),
        cmocka_unit_test(test_a_million_waiting_messages_take_little_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
