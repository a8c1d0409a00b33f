/*
 * test_redis_log.c: the Redis record log against a real redis-server that
 * each test starts on a free loopback port (appendonly, appendfsync
 * always, its own temporary directory; the integration harness's h_redis)
 * and stops by its pid: order and
 * snapshots across reconnects, one round trip per flush, fencing, rewrite,
 * Redis killed and restarted, bad URLs, binary data, topic listing.
 * Skipped when redis-server is not installed.
 */
#include <poll.h>
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

#include <poll.h>
#include <signal.h>

#include <hiredis/hiredis.h>

#include "../integration/harness.h"
#include "dsync/errors.h"
#include "store/redis_log.h"
#include "util/util.h"

/* ---- the redis-server under test --------------------------------------- */

/* The integration harness's redis-server (tests/integration/harness.c):
 * a free port, its own directory, stopped by pid. */
typedef struct {
    bool available; /* redis-server is installed */
    h_redis redis;
} fixture;

static void start_redis(fixture *f)
{
    assert_int_equal(h_redis_start(&f->redis), 0);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    *state = f;
    f->available = h_redis_available();
    if (f->available) start_redis(f);
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    h_redis_destroy(&f->redis);
    free(f);
    return 0;
}

#define REQUIRE_REDIS(f)                                                                           \
    do {                                                                                           \
        if (!(f)->available) {                                                                     \
            print_message("redis-server is not installed (apt-get install redis-server): "         \
                          "skipped\n");                                                            \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* A command on a connection of its own, in database db. */
static redisReply *admin(fixture *f, int db, const char *fmt, ...)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", f->redis.port, tv);
    if (!c || c->err) fail_msg("admin connect: %s", c ? c->errstr : "oom");
    if (db) {
        redisReply *s = redisCommand(c, "SELECT %d", db);
        assert_non_null(s);
        freeReplyObject(s);
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    redisFree(c);
    return r;
}

static long long admin_int(fixture *f, int db, const char *fmt, const char *arg)
{
    redisReply *r = admin(f, db, fmt, arg);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* calls=N of INFO commandstats for cmd (lower case), 0 when never called. */
static long long command_calls(fixture *f, const char *cmd)
{
    redisReply *r = admin(f, 0, "INFO commandstats");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    char needle[64];
    snprintf(needle, sizeof needle, "\ncmdstat_%s:calls=", cmd);
    const char *p = strstr(r->str, needle);
    long long v = p ? strtoll(p + strlen(needle), NULL, 10) : 0;
    freeReplyObject(r);
    return v;
}

static rl_log *open_ok(const char *url)
{
    rl_log *rl = NULL;
    char err[256] = "";
    int rc = rl_open(url, 0, &rl, err, sizeof err);
    if (rc != 0) fail_msg("rl_open(%s): %s (%s)", url, dsync_strerror(rc), err);
    return rl;
}

/* ---- collecting what comes back ---------------------------------------- */

typedef struct {
    rl_kind kind;
    char *data;
    size_t len;
} item;

typedef struct {
    item *items;
    size_t n, cap;
} loaded;

static int collect(void *ctx, rl_kind kind, const void *data, size_t len)
{
    loaded *l = ctx;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->items = realloc(l->items, l->cap * sizeof *l->items);
        assert_non_null(l->items);
    }
    item *it = &l->items[l->n++];
    it->kind = kind;
    it->len = len;
    it->data = malloc(len + 1);
    assert_non_null(it->data);
    if (len) memcpy(it->data, data, len);
    it->data[len] = '\0';
    return 0;
}

static void loaded_free(loaded *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].data);
    free(l->items);
    memset(l, 0, sizeof *l);
}

static void load_ok(rl_log *rl, const char *topic, loaded *l)
{
    loaded_free(l);
    int rc = rl_load(rl, topic, collect, l);
    if (rc != 0) fail_msg("rl_load(%s): %s (%s)", topic, dsync_strerror(rc), rl_last_error(rl));
}

static void assert_item(const loaded *l, size_t i, rl_kind kind, const char *text)
{
    assert_true(i < l->n);
    assert_int_equal(l->items[i].kind, kind);
    assert_int_equal(l->items[i].len, strlen(text));
    assert_memory_equal(l->items[i].data, text, strlen(text));
}

typedef struct {
    char topic[RL_TOPIC_MAX + 1];
    uint64_t epoch;
    size_t records;
    int status;
    uint64_t log_len;
} flushed_topic;

typedef struct {
    flushed_topic t[16];
    size_t n;
} flushed;

static void on_flush(void *ctx, const rl_flush_result *r)
{
    flushed *fl = ctx;
    assert_true(fl->n < 16);
    flushed_topic *t = &fl->t[fl->n++];
    snprintf(t->topic, sizeof t->topic, "%s", r->topic);
    t->epoch = r->epoch;
    t->records = r->records;
    t->status = r->status;
    t->log_len = r->log_len;
}

static void append_text(rl_log *rl, const char *topic, uint64_t epoch, const char *text)
{
    assert_int_equal(rl_append(rl, topic, epoch, text, strlen(text)), 0);
}

/* ---- tests ------------------------------------------------------------- */

static void test_records_come_back_in_order_after_the_snapshot_across_a_reconnect(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    char url[80];
    snprintf(url, sizeof url, "%s/3", f->redis.url);
    rl_log *rl = open_ok(url);
    assert_int_equal(rl_claim(rl, "orders", 1, NULL), 0);
    append_text(rl, "orders", 1, "r1");
    assert_int_equal(rl_flush(rl, NULL, NULL), 0);
    assert_int_equal(rl_rewrite(rl, "orders", 1, "S1", 2), 0);
    append_text(rl, "orders", 1, "r2");
    append_text(rl, "orders", 1, "r3");
    append_text(rl, "orders", 1, "r4");
    flushed fl = {0};
    assert_int_equal(rl_flush(rl, on_flush, &fl), 0);
    assert_int_equal(fl.n, 1);
    assert_int_equal(fl.t[0].log_len, 3);

    /* The keys are in database 3, hash-tagged by topic. */
    assert_int_equal(admin_int(f, 3, "LLEN %s", "dsync:q:{orders}:log"), 3);
    assert_int_equal(admin_int(f, 0, "EXISTS %s", "dsync:q:{orders}:log"), 0);

    /* The server drops every client: the read notices and reconnects. */
    redisReply *r = admin(f, 0, "CLIENT KILL TYPE normal");
    freeReplyObject(r);
    loaded l = {0};
    load_ok(rl, "orders", &l);
    assert_int_equal(l.n, 4);
    assert_item(&l, 0, RL_SNAPSHOT, "S1");
    assert_item(&l, 1, RL_RECORD, "r2");
    assert_item(&l, 2, RL_RECORD, "r3");
    assert_item(&l, 3, RL_RECORD, "r4");
    rl_stats st;
    rl_get_stats(rl, &st);
    assert_int_equal(st.connects, 2);
    rl_close(rl);

    /* A new handle (a restarted node) sees the same. */
    rl = open_ok(url);
    load_ok(rl, "orders", &l);
    assert_int_equal(l.n, 4);
    assert_item(&l, 0, RL_SNAPSHOT, "S1");
    assert_item(&l, 3, RL_RECORD, "r4");
    /* A topic with nothing stored loads as nothing. */
    load_ok(rl, "nothing-here", &l);
    assert_int_equal(l.n, 0);
    loaded_free(&l);
    rl_close(rl);
}

static void test_a_flush_on_a_dropped_connection_is_unknown_and_the_next_reconnects(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    assert_int_equal(rl_claim(rl, "t", 1, NULL), 0);
    redisReply *r = admin(f, 0, "CLIENT KILL TYPE normal");
    freeReplyObject(r);

    /* Sent on a connection the server had closed: the outcome is unknown
     * to the handle, which does not send it again by itself. */
    append_text(rl, "t", 1, "lost?");
    flushed fl = {0};
    assert_int_equal(rl_flush(rl, on_flush, &fl), DSYNC_EUNAVAILABLE);
    assert_int_equal(fl.n, 1);
    assert_int_equal(fl.t[0].status, DSYNC_EUNAVAILABLE);
    assert_int_equal(rl_pending(rl), 0);
    assert_true(rl_last_error(rl)[0] != '\0');

    /* The caller decides to send it again: the next call reconnects. */
    append_text(rl, "t", 1, "again");
    assert_int_equal(rl_flush(rl, NULL, NULL), 0);
    loaded l = {0};
    load_ok(rl, "t", &l);
    assert_int_equal(l.n, 1);
    assert_item(&l, 0, RL_RECORD, "again");
    loaded_free(&l);
    rl_close(rl);
}

/* Waits, at most max_ms, until the flush in flight has every reply (or
 * has been given up); whether it did. */
static bool wait_landed(rl_log *rl, int max_ms)
{
    uint64_t until = ut_now_ms() + (uint64_t)max_ms;
    for (;;) {
        if (rl_flush_poll(rl)) return true;
        uint64_t now = ut_now_ms();
        if (now >= until) return false;
        int fd = rl_flush_fd(rl);
        if (fd < 0) continue; /* nothing to wait on: the next poll decides */
        struct pollfd p = {.fd = fd, .events = POLLIN};
        (void)poll(&p, 1, (int)(until - now));
    }
}

static void test_a_flush_in_flight_lands_while_the_next_one_is_buffered(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    assert_int_equal(rl_claim(rl, "a", 1, NULL), 0);
    assert_int_equal(rl_claim(rl, "b", 1, NULL), 0);
    assert_int_equal(rl_flush_start(rl), 0); /* nothing buffered: no flight */
    assert_false(rl_in_flight(rl));
    assert_int_equal(rl_flush_fd(rl), -1);

    append_text(rl, "a", 1, "a1");
    append_text(rl, "b", 1, "b1");
    assert_int_equal(rl_flush_start(rl), 0);
    assert_true(rl_in_flight(rl));
    assert_true(rl_flush_fd(rl) >= 0);
    assert_int_equal(rl_flush_start(rl), DSYNC_EINVAL); /* one at a time */
    assert_int_equal(rl_pending(rl), 0);

    /* Appends meanwhile are buffered for the next flush. */
    append_text(rl, "a", 1, "a2");
    assert_int_equal(rl_pending(rl), 1);
    assert_int_equal(rl_buffered(rl, "a"), 1);
    assert_int_equal(rl_buffered(rl, "b"), 0);
    /* Its records are still out: no rewrite of a yet. */
    assert_int_equal(rl_rewrite(rl, "b", 1, "S", 1), DSYNC_EINVAL);

    assert_true(wait_landed(rl, 5000));
    flushed fl = {0};
    assert_int_equal(rl_flush_finish(rl, on_flush, &fl), 0);
    assert_false(rl_in_flight(rl));
    assert_int_equal(fl.n, 2);
    assert_string_equal(fl.t[0].topic, "a");
    assert_int_equal(fl.t[0].status, 0);
    assert_int_equal(fl.t[0].log_len, 1);
    assert_string_equal(fl.t[1].topic, "b");
    assert_int_equal(fl.t[1].records, 1);
    assert_int_equal(rl_rewrite(rl, "b", 1, "S", 1), 0);

    /* The buffered record goes with the next flush, after the first. */
    assert_int_equal(rl_pending(rl), 1);
    memset(&fl, 0, sizeof fl);
    assert_int_equal(rl_flush(rl, on_flush, &fl), 0);
    assert_int_equal(fl.n, 1);
    assert_int_equal(fl.t[0].log_len, 2);
    loaded l = {0};
    load_ok(rl, "a", &l);
    assert_int_equal(l.n, 2);
    assert_item(&l, 0, RL_RECORD, "a1");
    assert_item(&l, 1, RL_RECORD, "a2");
    loaded_free(&l);
    rl_close(rl);
}

static void test_a_read_during_a_flight_sees_it_and_its_fates_stay_for_finish(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    assert_int_equal(rl_claim(rl, "c", 1, NULL), 0);
    assert_int_equal(rl_claim(rl, "gone", 1, NULL), 0);
    freeReplyObject(admin(f, 0, "SET %s 9", "dsync:q:{gone}:epoch")); /* another owner */
    append_text(rl, "c", 1, "c1");
    append_text(rl, "gone", 1, "g1");
    assert_int_equal(rl_flush_start(rl), 0);

    /* A load on the same connection reads the flight's replies first. */
    loaded l = {0};
    load_ok(rl, "c", &l);
    assert_int_equal(l.n, 1);
    assert_item(&l, 0, RL_RECORD, "c1");
    loaded_free(&l);
    assert_true(rl_flush_poll(rl)); /* every reply is in already */
    assert_int_equal(rl_flush_fd(rl), -1);

    flushed fl = {0};
    assert_int_equal(rl_flush_finish(rl, on_flush, &fl), DSYNC_EEXIST);
    assert_int_equal(fl.n, 2);
    assert_int_equal(fl.t[0].status, 0);
    assert_int_equal(fl.t[1].status, DSYNC_EEXIST); /* fenced by the newer epoch */
    assert_int_equal(rl_flush_finish(rl, on_flush, &fl), 0); /* nothing in flight */
    assert_int_equal(fl.n, 2);
    rl_close(rl);
}

static void test_discard_drops_buffered_records_and_never_those_in_flight(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    assert_int_equal(rl_claim(rl, "d", 1, NULL), 0);
    append_text(rl, "d", 1, "sent");
    assert_int_equal(rl_flush_start(rl), 0);
    append_text(rl, "d", 1, "dropped1");
    append_text(rl, "d", 1, "dropped2");
    append_text(rl, "other", 1, "kept");
    /* A topic with records buffered under one epoch takes no other... */
    assert_int_equal(rl_append(rl, "d", 2, "x", 1), DSYNC_EINVAL);
    rl_discard(rl, "d");
    rl_discard(rl, "never-appended"); /* a no-op */
    assert_int_equal(rl_buffered(rl, "d"), 0);
    assert_int_equal(rl_pending(rl), 1);
    /* ...until they are discarded (a unit dropped, then claimed again). */
    assert_int_equal(rl_claim(rl, "d", 2, NULL), 0);
    append_text(rl, "d", 2, "new");

    flushed fl = {0};
    assert_int_equal(rl_flush_finish(rl, on_flush, &fl), 0);
    assert_int_equal(fl.n, 1);
    assert_int_equal(fl.t[0].status, 0); /* landed before the claim at 2 */
    memset(&fl, 0, sizeof fl);
    assert_int_equal(rl_flush(rl, on_flush, &fl), DSYNC_EEXIST);
    assert_int_equal(fl.n, 2);
    loaded l = {0};
    load_ok(rl, "d", &l);
    assert_int_equal(l.n, 2);
    assert_item(&l, 0, RL_RECORD, "sent");
    assert_item(&l, 1, RL_RECORD, "new");
    loaded_free(&l);
    rl_close(rl);
}

static void test_a_flight_redis_never_answers_is_given_up_at_its_deadline(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    assert_int_equal(rl_claim(rl, "s", 1, NULL), 0);
    assert_int_equal(kill(f->redis.pid, SIGSTOP), 0);
    append_text(rl, "s", 1, "stuck");
    uint64_t sent = ut_now_ms();
    assert_int_equal(rl_flush_start(rl), 0);
    assert_true(rl_flush_deadline_ms(rl) >= sent + RL_COMMAND_TIMEOUT_MS);
    assert_false(rl_flush_poll(rl));
    assert_true(wait_landed(rl, 3 * RL_COMMAND_TIMEOUT_MS));
    assert_true(ut_now_ms() >= sent + RL_COMMAND_TIMEOUT_MS);
    flushed fl = {0};
    assert_int_equal(rl_flush_finish(rl, on_flush, &fl), DSYNC_EUNAVAILABLE);
    assert_int_equal(fl.t[0].status, DSYNC_EUNAVAILABLE); /* sent: unknown, not failed */
    assert_non_null(strstr(rl_last_error(rl), "no reply in time"));
    assert_int_equal(rl_flush_deadline_ms(rl), UINT64_MAX);

    /* Taken as a stalled server: the connection backs off, calls fail at
     * once meanwhile. Redis goes on; the handle reconnects after the
     * backoff. The stuck script may or may not have run: the caller
     * decides what its record meant. */
    rl_stats st0, st1;
    rl_get_stats(rl, &st0);
    assert_int_equal(rl_claim(rl, "s", 1, NULL), DSYNC_EUNAVAILABLE);
    rl_get_stats(rl, &st1);
    assert_int_equal(st1.round_trips, st0.round_trips);
    assert_int_equal(kill(f->redis.pid, SIGCONT), 0);
    int rc = DSYNC_EUNAVAILABLE;
    for (uint64_t until = ut_now_ms() + 5000; rc != 0 && ut_now_ms() < until;) {
        append_text(rl, "s", 1, "after"); /* a failed flush drops what it held */
        rc = rl_flush(rl, NULL, NULL);
        if (rc != 0) usleep(10 * 1000);
    }
    assert_int_equal(rc, 0);
    loaded l = {0};
    load_ok(rl, "s", &l);
    assert_true(l.n >= 1);
    assert_item(&l, l.n - 1, RL_RECORD, "after");
    loaded_free(&l);
    rl_close(rl);
}

static rl_log *open_waiting(const char *url, unsigned wait_ms)
{
    rl_log *rl = NULL;
    char err[256] = "";
    int rc = rl_open(url, wait_ms, &rl, err, sizeof err);
    if (rc != 0) fail_msg("rl_open(%s): %s (%s)", url, dsync_strerror(rc), err);
    return rl;
}

/* A node's loop also sends Raft's heartbeats: a stalled Redis must cost it
 * one wait limit, not one per call, nor the 1 s default. */
static void test_a_stalled_redis_costs_one_wait_limit_then_calls_fail_at_once(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_waiting(f->redis.url, 100);
    assert_int_equal(rl_claim(rl, "w", 1, NULL), 0);
    assert_int_equal(kill(f->redis.pid, SIGSTOP), 0);

    uint64_t t0 = ut_now_ms();
    assert_int_equal(rl_claim(rl, "w", 2, NULL), DSYNC_EUNAVAILABLE);
    uint64_t took = ut_now_ms() - t0;
    assert_true(took >= 90); /* a socket timeout may end up to a tick early */
    assert_true(took < RL_COMMAND_TIMEOUT_MS);
    assert_non_null(strstr(rl_last_error(rl), "no answer within 100 ms"));

    /* Taken as a stalled server: the next calls, inside the backoff, fail
     * without touching the network. */
    rl_stats before, after;
    rl_get_stats(rl, &before);
    uint64_t t1 = ut_now_ms();
    assert_int_equal(rl_claim(rl, "w", 3, NULL), DSYNC_EUNAVAILABLE);
    loaded l = {0};
    assert_int_equal(rl_load(rl, "w", collect, &l), DSYNC_EUNAVAILABLE);
    append_text(rl, "w", 1, "x");
    assert_int_equal(rl_flush_start(rl), 0);
    assert_true(rl_flush_poll(rl)); /* never sent: its fate is known at once */
    assert_int_equal(rl_flush_finish(rl, NULL, NULL), DSYNC_EUNAVAILABLE);
    rl_get_stats(rl, &after);
    assert_int_equal(after.round_trips, before.round_trips);
    assert_int_equal(after.connect_failures, before.connect_failures);
    assert_true(ut_now_ms() - t1 < 100);

    /* Redis goes on: a call after the backoff connects and works. */
    assert_int_equal(kill(f->redis.pid, SIGCONT), 0);
    int rc = DSYNC_EUNAVAILABLE;
    for (uint64_t until = ut_now_ms() + 5000; rc != 0 && ut_now_ms() < until;) {
        rc = rl_claim(rl, "w", 4, NULL);
        if (rc != 0) usleep(10 * 1000);
    }
    assert_int_equal(rc, 0);
    loaded_free(&l);
    rl_close(rl);
}

/* Sends a script that keeps Redis busy for ms on a connection of its own,
 * without waiting for its answer (read by busy_end). */
static redisContext *busy_begin(fixture *f, int ms)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", f->redis.port, tv);
    if (!c || c->err) fail_msg("busy connect: %s", c ? c->errstr : "oom");
    char ms_text[16];
    snprintf(ms_text, sizeof ms_text, "%d", ms);
    assert_int_equal(redisAppendCommand(c, "EVAL %s 0 %s",
                                        "local t = redis.call('TIME') "
                                        "local start = t[1] * 1000000 + t[2] "
                                        "repeat t = redis.call('TIME') "
                                        "until t[1] * 1000000 + t[2] - start >= ARGV[1] * 1000 "
                                        "return 1",
                                        ms_text),
                     REDIS_OK);
    int done = 0;
    while (!done)
        assert_int_equal(redisBufferWrite(c, &done), REDIS_OK);
    return c;
}

static void busy_end(redisContext *c)
{
    void *r = NULL;
    assert_int_equal(redisGetReply(c, &r), REDIS_OK);
    freeReplyObject(r);
    redisFree(c);
}

/* Waits (at most 5 s) until the script busy_begin sent is running: Redis
 * answers nobody else meanwhile, so a PING that gets no answer within
 * 20 ms says it is. */
static void wait_redis_busy(fixture *f)
{
    struct timeval tv = {0, 20 * 1000};
    for (uint64_t until = ut_now_ms() + 5000; ut_now_ms() < until;) {
        redisContext *c = redisConnectWithTimeout("127.0.0.1", f->redis.port, tv);
        if (!c || c->err) fail_msg("ping connect: %s", c ? c->errstr : "oom");
        assert_int_equal(redisSetTimeout(c, tv), REDIS_OK);
        redisReply *r = redisCommand(c, "PING");
        bool busy = r == NULL;
        freeReplyObject(r);
        redisFree(c);
        if (busy) return;
    }
    fail_msg("the busy script did not start within 5 s");
}

/* Loads and rewrites may make Redis work longer than the wait limit before
 * it answers (a big topic): they wait RL_COMMAND_TIMEOUT_MS; a claim, a
 * small command, does not. */
static void test_loads_and_rewrites_outwait_the_wait_limit_small_calls_do_not(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_waiting(f->redis.url, 100);
    assert_int_equal(rl_claim(rl, "b", 1, NULL), 0);
    append_text(rl, "b", 1, "one");
    assert_int_equal(rl_flush(rl, NULL, NULL), 0);

    redisContext *busy = busy_begin(f, 300);
    wait_redis_busy(f);
    loaded l = {0};
    assert_int_equal(rl_load(rl, "b", collect, &l), 0);
    assert_int_equal(l.n, 1);
    assert_item(&l, 0, RL_RECORD, "one");
    loaded_free(&l);
    busy_end(busy);

    busy = busy_begin(f, 300);
    wait_redis_busy(f);
    assert_int_equal(rl_rewrite(rl, "b", 1, "snap", 4), 0);
    busy_end(busy);

    busy = busy_begin(f, 300);
    wait_redis_busy(f);
    assert_int_equal(rl_claim(rl, "b", 2, NULL), DSYNC_EUNAVAILABLE);
    assert_non_null(strstr(rl_last_error(rl), "no answer within 100 ms"));
    busy_end(busy);
    rl_close(rl);
}

static void test_one_flush_writes_many_topics_in_one_round_trip(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    char topic[5][24];
    for (int t = 0; t < 5; t++) {
        snprintf(topic[t], sizeof topic[t], "topic-%d", t);
        assert_int_equal(rl_claim(rl, topic[t], 7, NULL), 0);
    }
    redisReply *r = admin(f, 0, "CONFIG RESETSTAT");
    freeReplyObject(r);
    /* Interleaved: each topic keeps its own order. */
    for (int i = 0; i < 40; i++) {
        for (int t = 0; t < 5; t++) {
            char rec[128];
            snprintf(rec, sizeof rec, "%s#%d", topic[t], i);
            append_text(rl, topic[t], 7, rec);
        }
    }
    assert_int_equal(rl_pending(rl), 200);
    rl_stats before, after;
    rl_get_stats(rl, &before);
    flushed fl = {0};
    assert_int_equal(rl_flush(rl, on_flush, &fl), 0);
    rl_get_stats(rl, &after);
    assert_int_equal(after.round_trips - before.round_trips, 1);
    assert_int_equal(command_calls(f, "evalsha"), 5);
    assert_int_equal(command_calls(f, "eval"), 0);
    assert_int_equal(fl.n, 5);
    for (int t = 0; t < 5; t++) {
        assert_string_equal(fl.t[t].topic, topic[t]);
        assert_int_equal(fl.t[t].status, 0);
        assert_int_equal(fl.t[t].records, 40);
        assert_int_equal(fl.t[t].log_len, 40);
        assert_int_equal(fl.t[t].epoch, 7);
    }
    loaded l = {0};
    for (int t = 0; t < 5; t++) {
        load_ok(rl, topic[t], &l);
        assert_int_equal(l.n, 40);
        for (int i = 0; i < 40; i++) {
            char rec[128];
            snprintf(rec, sizeof rec, "%s#%d", topic[t], i);
            assert_item(&l, (size_t)i, RL_RECORD, rec);
        }
    }
    loaded_free(&l);
    /* An empty flush costs nothing. */
    assert_int_equal(rl_flush(rl, on_flush, &fl), 0);
    rl_get_stats(rl, &before);
    assert_int_equal(before.round_trips, after.round_trips + 5);
    rl_close(rl);
}

static void test_ten_thousand_appends_go_in_one_flush_and_load_back_in_order(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    assert_int_equal(rl_claim(rl, "big", 1, NULL), 0);
    /* More than Lua's unpack() takes at once: the script pushes in chunks. */
    char rec[100];
    for (int i = 0; i < 10000; i++) {
        memset(rec, 'x', sizeof rec);
        snprintf(rec, sizeof rec, "%06d", i);
        assert_int_equal(rl_append(rl, "big", 1, rec, sizeof rec), 0);
    }
    rl_stats before, after;
    rl_get_stats(rl, &before);
    flushed fl = {0};
    assert_int_equal(rl_flush(rl, on_flush, &fl), 0);
    rl_get_stats(rl, &after);
    assert_int_equal(after.round_trips - before.round_trips, 1);
    assert_int_equal(fl.t[0].log_len, 10000);
    loaded l = {0};
    load_ok(rl, "big", &l);
    assert_int_equal(l.n, 10000);
    for (int i = 0; i < 10000; i++) {
        char want[16];
        snprintf(want, sizeof want, "%06d", i);
        assert_int_equal(l.items[i].len, 100);
        assert_string_equal(l.items[i].data, want); /* the NUL snprintf left */
    }
    loaded_free(&l);
    rl_close(rl);
}

static void test_a_node_that_lost_a_topic_can_never_write_to_it_again(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *a = open_ok(f->redis.url), *b = open_ok(f->redis.url);
    assert_int_equal(rl_claim(a, "jobs", 1, NULL), 0);
    assert_int_equal(rl_claim(a, "other", 1, NULL), 0);
    append_text(a, "jobs", 1, "a1");
    assert_int_equal(rl_flush(a, NULL, NULL), 0);

    /* Node b takes the topic over with a newer epoch. */
    uint64_t stored = 0;
    assert_int_equal(rl_claim(b, "jobs", 2, &stored), 0);
    assert_int_equal(stored, 1);
    assert_int_equal(rl_claim(a, "jobs", 1, &stored), DSYNC_EEXIST);
    assert_int_equal(stored, 2);

    /* a still thinks it owns it: its batch for jobs is refused whole, its
     * batch for the topic it does own goes through. */
    append_text(a, "jobs", 1, "a2");
    append_text(a, "other", 1, "o1");
    append_text(a, "jobs", 1, "a3");
    flushed fl = {0};
    assert_int_equal(rl_flush(a, on_flush, &fl), DSYNC_EEXIST);
    assert_int_equal(fl.n, 2);
    assert_string_equal(fl.t[0].topic, "jobs");
    assert_int_equal(fl.t[0].status, DSYNC_EEXIST);
    assert_int_equal(fl.t[0].records, 2);
    assert_string_equal(fl.t[1].topic, "other");
    assert_int_equal(fl.t[1].status, 0);
    assert_int_equal(admin_int(f, 0, "LLEN %s", "dsync:q:{jobs}:log"), 1);
    assert_int_equal(rl_rewrite(a, "jobs", 1, "a-snap", 6), DSYNC_EEXIST);
    assert_int_equal(admin_int(f, 0, "EXISTS %s", "dsync:q:{jobs}:snap"), 0);

    loaded l = {0};
    load_ok(b, "jobs", &l);
    assert_int_equal(l.n, 1);
    assert_item(&l, 0, RL_RECORD, "a1");
    append_text(b, "jobs", 2, "b1");
    assert_int_equal(rl_flush(b, NULL, NULL), 0);
    load_ok(b, "jobs", &l);
    assert_int_equal(l.n, 2);
    assert_item(&l, 1, RL_RECORD, "b1");
    /* Writing to a topic nobody claimed is fenced too. */
    append_text(b, "unclaimed", 9, "x");
    assert_int_equal(rl_flush(b, NULL, NULL), DSYNC_EEXIST);
    assert_int_equal(admin_int(f, 0, "EXISTS %s", "dsync:q:{unclaimed}:log"), 0);
    loaded_free(&l);
    rl_close(a);
    rl_close(b);
}

static void test_claims_with_an_older_or_equal_epoch_are_refused(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    uint64_t stored = 99;
    assert_int_equal(rl_claim(rl, "c", 5, &stored), 0);
    assert_int_equal(stored, 0);
    assert_int_equal(rl_claim(rl, "c", 5, &stored), DSYNC_EEXIST);
    assert_int_equal(stored, 5);
    assert_int_equal(rl_claim(rl, "c", 4, NULL), DSYNC_EEXIST);
    /* Compared as numbers, not as text: 10 > 9. */
    assert_int_equal(rl_claim(rl, "d", 9, NULL), 0);
    assert_int_equal(rl_claim(rl, "d", 10, NULL), 0);
    assert_int_equal(rl_claim(rl, "d", 9, NULL), DSYNC_EEXIST);
    /* Exact past 2^53, where Lua's doubles would call these equal. */
    assert_int_equal(rl_claim(rl, "e", UINT64_MAX - 1, NULL), 0);
    assert_int_equal(rl_claim(rl, "e", UINT64_MAX, &stored), 0);
    assert_int_equal(stored, UINT64_MAX - 1);
    assert_int_equal(rl_claim(rl, "e", UINT64_MAX - 1, &stored), DSYNC_EEXIST);
    assert_int_equal(stored, UINT64_MAX);

    char long_topic[RL_TOPIC_MAX + 2];
    memset(long_topic, 't', sizeof long_topic - 1);
    long_topic[sizeof long_topic - 1] = '\0';
    assert_int_equal(rl_claim(rl, "c", 0, NULL), DSYNC_EINVAL);
    assert_int_equal(rl_claim(rl, "", 1, NULL), DSYNC_EINVAL);
    assert_int_equal(rl_claim(rl, "}x", 1, NULL), DSYNC_EINVAL);
    assert_int_equal(rl_claim(rl, NULL, 1, NULL), DSYNC_EINVAL);
    assert_int_equal(rl_claim(rl, long_topic, 1, NULL), DSYNC_EINVAL);
    long_topic[RL_TOPIC_MAX] = '\0';
    assert_int_equal(rl_claim(rl, long_topic, 1, NULL), 0);
    rl_close(rl);
}

static void test_append_checks_its_arguments_and_limits(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    char byte = 'x';
    assert_int_equal(rl_append(rl, "t", 0, "x", 1), DSYNC_EINVAL);
    assert_int_equal(rl_append(rl, "}t", 1, "x", 1), DSYNC_EINVAL);
    assert_int_equal(rl_append(rl, "t", 1, NULL, 1), DSYNC_EINVAL);
    assert_int_equal(rl_append(rl, "t", 1, &byte, (size_t)RL_RECORD_MAX + 1), DSYNC_ETOOBIG);
    assert_int_equal(rl_append(rl, "t", 1, NULL, 0), 0); /* an empty record is a record */
    /* One epoch per topic per batch. */
    assert_int_equal(rl_append(rl, "t", 2, "x", 1), DSYNC_EINVAL);
    assert_int_equal(rl_pending(rl), 1);
    assert_int_equal(rl_rewrite(rl, "t", 1, "s", 1), DSYNC_EINVAL); /* flush first */
    assert_int_equal(rl_flush(NULL, NULL, NULL), DSYNC_EINVAL);
    assert_int_equal(rl_load(rl, "t", NULL, NULL), DSYNC_EINVAL);
    assert_int_equal(rl_flush(rl, NULL, NULL), DSYNC_EEXIST); /* never claimed */
    assert_int_equal(rl_pending(rl), 0);
    rl_close(rl);
}

static int stop_after_snapshot(void *ctx, rl_kind kind, const void *data, size_t len)
{
    int *calls = ctx;
    (*calls)++;
    return kind == RL_SNAPSHOT ? 42 : 0;
}

static void test_rewrite_replaces_the_log_with_the_snapshot(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    assert_int_equal(rl_claim(rl, "q", 3, NULL), 0);
    append_text(rl, "q", 3, "r1");
    append_text(rl, "q", 3, "r2");
    append_text(rl, "q", 3, "r3");
    assert_int_equal(rl_flush(rl, NULL, NULL), 0);
    assert_int_equal(rl_rewrite(rl, "q", 3, "SNAP-1", 6), 0);
    assert_int_equal(admin_int(f, 0, "EXISTS %s", "dsync:q:{q}:log"), 0);
    loaded l = {0};
    load_ok(rl, "q", &l);
    assert_int_equal(l.n, 1);
    assert_item(&l, 0, RL_SNAPSHOT, "SNAP-1");

    append_text(rl, "q", 3, "r4");
    flushed fl = {0};
    assert_int_equal(rl_flush(rl, on_flush, &fl), 0);
    assert_int_equal(fl.t[0].log_len, 1);
    load_ok(rl, "q", &l);
    assert_int_equal(l.n, 2);
    assert_item(&l, 0, RL_SNAPSHOT, "SNAP-1");
    assert_item(&l, 1, RL_RECORD, "r4");

    assert_int_equal(rl_rewrite(rl, "q", 3, "SNAP-2", 6), 0);
    load_ok(rl, "q", &l);
    assert_int_equal(l.n, 1);
    assert_item(&l, 0, RL_SNAPSHOT, "SNAP-2");

    /* A callback's nonzero answer stops the load and is its result. */
    int calls = 0;
    append_text(rl, "q", 3, "r5");
    assert_int_equal(rl_flush(rl, NULL, NULL), 0);
    assert_int_equal(rl_load(rl, "q", stop_after_snapshot, &calls), 42);
    assert_int_equal(calls, 1);
    loaded_free(&l);
    rl_close(rl);
}

static int count_topic(void *ctx, const char *topic)
{
    (*(int *)ctx)++;
    return 0;
}

static void test_calls_fail_with_unavailable_when_redis_is_killed(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    assert_int_equal(rl_claim(rl, "k", 1, NULL), 0);
    append_text(rl, "k", 1, "before");
    assert_int_equal(rl_flush(rl, NULL, NULL), 0);
    h_redis_kill9(&f->redis);

    /* Several MiB make hiredis write more than once into the dead socket:
     * the second write raises SIGPIPE, which must not kill this process. */
    size_t big_len = 4u << 20;
    char *big = calloc(1, big_len);
    assert_non_null(big);
    assert_int_equal(rl_append(rl, "k", 1, big, big_len), 0);
    append_text(rl, "k", 1, "after");
    flushed fl = {0};
    assert_int_equal(rl_flush(rl, on_flush, &fl), DSYNC_EUNAVAILABLE);
    assert_int_equal(fl.t[0].status, DSYNC_EUNAVAILABLE);
    free(big);

    loaded l = {0};
    char info[64];
    assert_int_equal(rl_load(rl, "k", collect, &l), DSYNC_EUNAVAILABLE);
    assert_int_equal(l.n, 0);
    assert_int_equal(rl_claim(rl, "k", 2, NULL), DSYNC_EUNAVAILABLE);
    assert_int_equal(rl_rewrite(rl, "k", 1, "s", 1), DSYNC_EUNAVAILABLE);
    int n = 0;
    assert_int_equal(rl_topics(rl, count_topic, &n), DSYNC_EUNAVAILABLE);
    assert_int_equal(rl_topics(rl, NULL, NULL), DSYNC_EINVAL);
    assert_int_equal(rl_info_appendfsync(rl, info, sizeof info), DSYNC_EUNAVAILABLE);
    append_text(rl, "k", 1, "x");
    assert_int_equal(rl_flush(rl, NULL, NULL), DSYNC_EUNAVAILABLE);
    assert_non_null(strstr(rl_last_error(rl), "127.0.0.1"));
    rl_stats st;
    rl_get_stats(rl, &st);
    assert_true(st.connect_failures >= 1);
    rl_close(rl);

    /* Opening with Redis down says so. */
    rl_log *none = NULL;
    char err[256] = "";
    assert_int_equal(rl_open(f->redis.url, 0, &none, err, sizeof err), DSYNC_EUNAVAILABLE);
    assert_null(none);
    assert_true(err[0] != '\0');
}

static void test_the_handle_reconnects_and_finds_its_data_after_redis_restarts(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    assert_int_equal(rl_claim(rl, "durable", 4, NULL), 0);
    append_text(rl, "durable", 4, "r0");
    assert_int_equal(rl_flush(rl, NULL, NULL), 0);
    assert_int_equal(rl_rewrite(rl, "durable", 4, "snap", 4), 0);
    for (int i = 1; i <= 100; i++) {
        char rec[16];
        snprintf(rec, sizeof rec, "r%d", i);
        append_text(rl, "durable", 4, rec);
    }
    assert_int_equal(rl_flush(rl, NULL, NULL), 0);

    /* kill -9: only the AOF (appendonly, no RDB saves) brings it back. */
    h_redis_kill9(&f->redis);
    int n = 0;
    assert_int_equal(rl_topics(rl, count_topic, &n), DSYNC_EUNAVAILABLE);
    start_redis(f);

    /* Calls fail fast during the backoff, then the handle is back. */
    loaded l = {0};
    int rc = DSYNC_EUNAVAILABLE;
    for (int i = 0; i < 100 && rc == DSYNC_EUNAVAILABLE; i++) {
        loaded_free(&l);
        rc = rl_load(rl, "durable", collect, &l);
        if (rc == DSYNC_EUNAVAILABLE) usleep(50000);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(l.n, 101);
    assert_item(&l, 0, RL_SNAPSHOT, "snap");
    assert_item(&l, 1, RL_RECORD, "r1");
    assert_item(&l, 100, RL_RECORD, "r100");

    /* The epoch survived and the scripts are loaded again. */
    append_text(rl, "durable", 4, "r101");
    assert_int_equal(rl_flush(rl, NULL, NULL), 0);
    assert_int_equal(rl_claim(rl, "durable", 4, NULL), DSYNC_EEXIST);
    assert_int_equal(rl_topics(rl, count_topic, &n), 0);
    assert_int_equal(n, 1);
    rl_stats st;
    rl_get_stats(rl, &st);
    assert_true(st.connects >= 2);
    loaded_free(&l);
    rl_close(rl);
}

static void test_a_bad_url_is_a_configuration_error(void **state)
{
    fixture *f = *state;
    static const char *const bad[] = {
        "",
        "http://127.0.0.1:6379",
        "redis://",
        "redis://:6379",
        "redis://host:0",
        "redis://host:65536",
        "redis://host:12x",
        "redis://host:",
        "redis://host:1/abc",
        "redis://host:1/1234567890",
        "redis://host:1/0?timeout=1",
        "redis://user:secret@host:1",
        "redis://[::1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rl_log *rl = (rl_log *)&rl; /* must come back NULL */
        char err[128] = "";
        int rc = rl_open(bad[i], 0, &rl, err, sizeof err);
        if (rc != DSYNC_ECONFIG) fail_msg("%s: got %d, want ECONFIG", bad[i], rc);
        assert_null(rl);
        assert_true(err[0] != '\0');
    }
    rl_log *rl = NULL;
    assert_int_equal(rl_open(NULL, 0, &rl, NULL, 0), DSYNC_ECONFIG);

    /* Nothing listens there: unreachable, not misconfigured. */
    char url[128], err[256] = "";
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", h_free_port());
    assert_int_equal(rl_open(url, 0, &rl, err, sizeof err), DSYNC_EUNAVAILABLE);
    assert_non_null(strstr(err, "127.0.0.1"));

    REQUIRE_REDIS(f);
    /* A database the server does not have. */
    snprintf(url, sizeof url, "%s/99", f->redis.url);
    assert_int_equal(rl_open(url, 0, &rl, err, sizeof err), DSYNC_ECONFIG);
    assert_null(rl);
    snprintf(url, sizeof url, "redis://[127.0.0.1]:%d/", f->redis.port);
    rl = open_ok(url);
    rl_close(rl);
}

static void test_binary_records_with_nuls_round_trip(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    /* Braces, glob characters, spaces: all just bytes of the name. */
    const char *topic = "we{ird} *top?c[x]\\";
    assert_int_equal(rl_claim(rl, topic, 1, NULL), 0);

    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    size_t big_len = 1u << 20;
    unsigned char *big = malloc(big_len);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (unsigned char)(ut_mix64(i) & 0xff);
    static const char nuls[] = {0, 0, 0};
    static const char mid[] = {'a', 0, 'b'};
    static const char snap[] = {'S', 0, 0, '\n', '\r', 'E'};

    assert_int_equal(rl_append(rl, topic, 1, nuls, sizeof nuls), 0);
    assert_int_equal(rl_flush(rl, NULL, NULL), 0);
    assert_int_equal(rl_rewrite(rl, topic, 1, snap, sizeof snap), 0);
    assert_int_equal(rl_append(rl, topic, 1, mid, sizeof mid), 0);
    assert_int_equal(rl_append(rl, topic, 1, "", 0), 0);
    assert_int_equal(rl_append(rl, topic, 1, all, sizeof all), 0);
    assert_int_equal(rl_append(rl, topic, 1, big, big_len), 0);
    assert_int_equal(rl_flush(rl, NULL, NULL), 0);

    loaded l = {0};
    load_ok(rl, topic, &l);
    assert_int_equal(l.n, 5);
    assert_int_equal(l.items[0].kind, RL_SNAPSHOT);
    assert_int_equal(l.items[0].len, sizeof snap);
    assert_memory_equal(l.items[0].data, snap, sizeof snap);
    assert_int_equal(l.items[1].len, sizeof mid);
    assert_memory_equal(l.items[1].data, mid, sizeof mid);
    assert_int_equal(l.items[2].len, 0);
    assert_int_equal(l.items[3].len, sizeof all);
    assert_memory_equal(l.items[3].data, all, sizeof all);
    assert_int_equal(l.items[4].len, big_len);
    assert_memory_equal(l.items[4].data, big, big_len);
    loaded_free(&l);
    free(big);
    rl_close(rl);
}

typedef struct {
    ut_map names;
    int calls;
    int stop_at;
} listing;

static int list_topic(void *ctx, const char *topic)
{
    listing *ls = ctx;
    ls->calls++;
    assert_null(ut_map_get(&ls->names, topic)); /* each topic once */
    assert_int_equal(ut_map_put(&ls->names, topic, ls), 0);
    return ls->calls == ls->stop_at ? 7 : 0;
}

typedef struct {
    ut_map names;
    int budget, left; /* new topics a page may take before it stops */
} paging;

static int page_topic(void *ctx, const char *topic)
{
    paging *pg = ctx;
    if (ut_map_get(&pg->names, topic)) return 0; /* told before: a page told again */
    if (pg->left == 0) return 7;
    pg->left--;
    assert_int_equal(ut_map_put(&pg->names, topic, pg), 0);
    return 0;
}

static void test_topics_lists_every_claimed_topic_once(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    assert_int_equal(rl_claim(rl, "alpha", 1, NULL), 0);
    assert_int_equal(rl_claim(rl, "we{ird}:epoch", 1, NULL), 0);
    /* Enough topics for SCAN to take several rounds, set straight in. */
    assert_int_equal(h_redis_put_topics(&f->redis, "bulk", 3000), 0);
    /* Not topics: other keys, a log without an epoch. */
    redisReply *r = admin(f, 0, "SET %s %s", "unrelated", "1");
    freeReplyObject(r);
    r = admin(f, 0, "RPUSH %s %s", "dsync:q:{orphan}:log", "x");
    freeReplyObject(r);

    listing ls = {.stop_at = -1};
    ut_map_init(&ls.names);
    assert_int_equal(rl_topics(rl, list_topic, &ls), 0);
    assert_int_equal(ls.calls, 3002);
    assert_non_null(ut_map_get(&ls.names, "alpha"));
    assert_non_null(ut_map_get(&ls.names, "we{ird}:epoch"));
    assert_non_null(ut_map_get(&ls.names, "bulk-2999"));
    assert_null(ut_map_get(&ls.names, "orphan"));
    ut_map_close(&ls.names);

    /* A callback's nonzero answer stops the listing. */
    ls = (listing){.stop_at = 10};
    ut_map_init(&ls.names);
    assert_int_equal(rl_topics(rl, list_topic, &ls), 7);
    assert_int_equal(ls.calls, 10);
    ut_map_close(&ls.names);

    /* By pages, stopping every 250 new topics (as a node out of time
     * does): a stopped page leaves the cursor and is told again; in the
     * end every topic has been told. */
    paging pg = {.budget = 250};
    ut_map_init(&pg.names);
    char cursor[RL_CURSOR_MAX] = "0";
    int pages = 0, stops = 0, rc;
    do {
        char before[RL_CURSOR_MAX];
        strcpy(before, cursor);
        pg.left = pg.budget;
        rc = rl_topics_page(rl, cursor, page_topic, &pg);
        if (rc == 7) {
            stops++;
            assert_string_equal(cursor, before);
        } else {
            assert_int_equal(rc, 0);
        }
        assert_true(++pages < 1000);
    } while (rc != 0 || strcmp(cursor, "0") != 0);
    assert_true(stops > 0);
    assert_int_equal(pg.names.count, 3002);
    assert_non_null(ut_map_get(&pg.names, "we{ird}:epoch"));
    ut_map_close(&pg.names);
    char bad[RL_CURSOR_MAX];
    memset(bad, '1', sizeof bad); /* no terminator */
    assert_int_equal(rl_topics_page(rl, bad, page_topic, &pg), DSYNC_EINVAL);
    rl_close(rl);
}

static void test_info_reports_the_aof_policy(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    char info[64];
    assert_int_equal(rl_info_appendfsync(rl, info, sizeof info), 0);
    assert_string_equal(info, "appendonly=yes appendfsync=always");
    redisReply *r = admin(f, 0, "CONFIG SET appendfsync everysec");
    freeReplyObject(r);
    assert_int_equal(rl_info_appendfsync(rl, info, sizeof info), 0);
    assert_string_equal(info, "appendonly=yes appendfsync=everysec");
    rl_close(rl);
}

static void test_every_script_falls_back_to_eval_when_redis_lost_it(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    redisReply *r = admin(f, 0, "SCRIPT FLUSH");
    freeReplyObject(r);
    assert_int_equal(rl_claim(rl, "s1", 1, NULL), 0);
    assert_int_equal(rl_claim(rl, "s2", 1, NULL), 0);

    r = admin(f, 0, "SCRIPT FLUSH");
    freeReplyObject(r);
    r = admin(f, 0, "CONFIG RESETSTAT");
    freeReplyObject(r);
    append_text(rl, "s1", 1, "a");
    append_text(rl, "s2", 1, "b");
    rl_stats before, after;
    rl_get_stats(rl, &before);
    assert_int_equal(rl_flush(rl, NULL, NULL), 0);
    rl_get_stats(rl, &after);
    assert_int_equal(after.round_trips - before.round_trips, 2);
    assert_int_equal(command_calls(f, "eval"), 2);

    r = admin(f, 0, "SCRIPT FLUSH");
    freeReplyObject(r);
    loaded l = {0};
    load_ok(rl, "s1", &l);
    assert_int_equal(l.n, 1);
    assert_item(&l, 0, RL_RECORD, "a");
    r = admin(f, 0, "SCRIPT FLUSH");
    freeReplyObject(r);
    assert_int_equal(rl_rewrite(rl, "s2", 1, "snap", 4), 0);
    load_ok(rl, "s2", &l);
    assert_int_equal(l.n, 1);
    assert_item(&l, 0, RL_SNAPSHOT, "snap");
    loaded_free(&l);
    rl_close(rl);
}

/* ---- the cache's values ------------------------------------------------- */

static void load_value(rl_log *rl, const char *key, bool *found, ut_buf *v, uint64_t *e,
                       uint64_t *sq)
{
    v->len = 0;
    assert_int_equal(rl_cache_load(rl, key, found, v, e, sq), 0);
}

/* One op through rl_cache_run: a load (store false) or a store, fenced by
 * fence (0: none); returns the op with its results. */
static rl_cache_op cache_op(rl_log *rl, bool store, const char *key, const char *value,
                            uint64_t epoch, uint64_t seq, uint64_t fence, ut_buf *out)
{
    out->len = 0;
    rl_cache_op op = {.store = store, .key = key, .value = value,
                      .len = value ? strlen(value) : 0, .epoch = epoch, .seq = seq,
                      .fence = fence, .out = out};
    assert_int_equal(rl_cache_run(rl, &op, 1), 0);
    assert_int_equal(op.rc, 0);
    return op;
}

/* The epoch fence (lib/cache/cache.h): once a view has loaded a key, a
 * write asked under an older view changes nothing and says so; the fence
 * only rises; keys without a value get none; and it works through the
 * EVAL fallback when Redis lost the scripts. */
static void test_cache_writes_of_an_ended_view_are_fenced_off_by_a_newer_load(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    ut_buf v;
    ut_buf_init(&v);
    rl_cache_op op = cache_op(rl, true, "k", "a", 3, 1, 3, &v);
    assert_true(op.stored);
    assert_false(op.fenced);
    op = cache_op(rl, false, "k", NULL, 0, 0, 4, &v); /* view 4 loads it */
    assert_true(op.found);
    assert_memory_equal(v.data, "a", 1);
    op = cache_op(rl, true, "k", "late", 3, 5, 3, &v); /* view 3's write, landing late */
    assert_false(op.stored);
    assert_true(op.fenced);
    op = cache_op(rl, false, "k", NULL, 0, 0, 2, &v); /* a lower fence changes nothing */
    assert_memory_equal(v.data, "a", 1);
    op = cache_op(rl, true, "k", "late", 3, 5, 3, &v);
    assert_true(op.fenced);
    /* View 4 storing a dirty value of an older version is no late write. */
    op = cache_op(rl, true, "k", "dirty", 3, 5, 4, &v);
    assert_true(op.stored);
    assert_false(op.fenced);
    op = cache_op(rl, false, "k", NULL, 0, 0, 0, &v);
    assert_int_equal(v.len, 5);
    assert_memory_equal(v.data, "dirty", 5);
    assert_int_equal(op.out_epoch, 3);
    assert_int_equal(op.out_seq, 5);
    /* A key without a value: the load leaves nothing behind, no fence. */
    op = cache_op(rl, false, "absent", NULL, 0, 0, 9, &v);
    assert_false(op.found);
    redisReply *r = admin(f, 0, "EXISTS dsync:c:absent");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    op = cache_op(rl, true, "absent", "x", 1, 1, 1, &v);
    assert_true(op.stored);
    /* Both scripts again after Redis lost them. */
    r = admin(f, 0, "SCRIPT FLUSH");
    freeReplyObject(r);
    op = cache_op(rl, false, "absent", NULL, 0, 0, 7, &v);
    assert_true(op.found);
    r = admin(f, 0, "SCRIPT FLUSH");
    freeReplyObject(r);
    op = cache_op(rl, true, "absent", "y", 1, 2, 6, &v);
    assert_true(op.fenced);
    op = cache_op(rl, true, "absent", "y", 1, 2, 7, &v);
    assert_true(op.stored);
    ut_buf_free(&v);
    rl_close(rl);
}

static void test_cache_values_keep_only_the_highest_version(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    ut_buf v;
    ut_buf_init(&v);
    bool found = true, stored = false;
    uint64_t e = 9, sq = 9;
    load_value(rl, "k", &found, &v, &e, &sq);
    assert_false(found);
    assert_int_equal(e, 0);
    assert_int_equal(rl_cache_store(rl, "k", "one\0bin", 7, 3, 1, &stored), 0);
    assert_true(stored);
    load_value(rl, "k", &found, &v, &e, &sq);
    assert_true(found);
    assert_int_equal(v.len, 7);
    assert_memory_equal(v.data, "one\0bin", 7);
    assert_int_equal(e, 3);
    assert_int_equal(sq, 1);
    /* Older or equal versions change nothing: a late write-back loses. */
    assert_int_equal(rl_cache_store(rl, "k", "old", 3, 3, 1, &stored), 0);
    assert_false(stored);
    assert_int_equal(rl_cache_store(rl, "k", "old", 3, 2, 99, &stored), 0);
    assert_false(stored);
    assert_int_equal(rl_cache_store(rl, "k", "new", 3, 3, 2, &stored), 0);
    assert_true(stored);
    /* Versions compare exactly past 2^53 (Lua's doubles would not). */
    uint64_t big = (1ULL << 60) + 1;
    assert_int_equal(rl_cache_store(rl, "k", "big", 3, big, 0, &stored), 0);
    assert_true(stored);
    assert_int_equal(rl_cache_store(rl, "k", "big-1", 5, big - 1, 7, &stored), 0);
    assert_false(stored);
    load_value(rl, "k", &found, &v, &e, &sq);
    assert_int_equal(e, big);
    assert_memory_equal(v.data, "big", 3);
    assert_int_equal(rl_cache_store(rl, "e", "", 0, 1, 1, &stored), 0); /* empty value */
    load_value(rl, "e", &found, &v, &e, &sq);
    assert_true(found);
    assert_int_equal(v.len, 0);
    assert_int_equal(rl_cache_load(rl, "", &found, &v, &e, &sq), DSYNC_EINVAL);
    /* A key holding something else is an error, not a value. */
    redisReply *r = admin(f, 0, "SET dsync:c:wrong x");
    freeReplyObject(r);
    assert_int_equal(rl_cache_load(rl, "wrong", &found, &v, &e, &sq), DSYNC_EIO);
    h_redis_kill9(&f->redis);
    assert_int_equal(rl_cache_store(rl, "k", "x", 1, big, 1, NULL), DSYNC_EUNAVAILABLE);
    assert_int_equal(rl_cache_load(rl, "k", &found, &v, &e, &sq), DSYNC_EUNAVAILABLE);
    ut_buf_free(&v);
    rl_close(rl);
}

/* Many loads and stores in one round trip, each with its own answer; a
 * store whose script Redis lost goes again on its own. */
static void test_cache_requests_share_one_round_trip(void **state)
{
    fixture *f = *state;
    REQUIRE_REDIS(f);
    rl_log *rl = open_ok(f->redis.url);
    assert_int_equal(rl_cache_store(rl, "held", "new", 3, 5, 5, NULL), 0);
    redisReply *r = admin(f, 0, "SET dsync:c:wrong x");
    freeReplyObject(r);
    ut_buf v[6];
    for (int i = 0; i < 6; i++)
        ut_buf_init(&v[i]);
    rl_cache_op ops[6] = {
        {.store = true, .key = "a", .value = "va", .len = 2, .epoch = 1, .seq = 1},
        {.key = "held", .out = &v[1]},
        {.store = true, .key = "held", .value = "old", .len = 3, .epoch = 5, .seq = 4},
        {.key = "none", .out = &v[3]},
        {.key = "", .out = &v[4]}, /* bad: not sent */
        {.key = "wrong", .out = &v[5]},
    };
    rl_stats before, after;
    rl_get_stats(rl, &before);
    assert_int_equal(rl_cache_run(rl, ops, 6), DSYNC_EINVAL);
    rl_get_stats(rl, &after);
    assert_int_equal(after.round_trips - before.round_trips, 1);
    assert_int_equal(ops[0].rc, 0);
    assert_true(ops[0].stored);
    assert_int_equal(ops[1].rc, 0);
    assert_true(ops[1].found);
    assert_int_equal(v[1].len, 3);
    assert_memory_equal(v[1].data, "new", 3);
    assert_int_equal(ops[1].out_epoch, 5);
    assert_int_equal(ops[1].out_seq, 5);
    assert_int_equal(ops[2].rc, 0);
    assert_false(ops[2].stored); /* older than what Redis holds */
    assert_int_equal(ops[3].rc, 0);
    assert_false(ops[3].found);
    assert_int_equal(ops[4].rc, DSYNC_EINVAL);
    assert_int_equal(ops[5].rc, DSYNC_EIO);
    assert_non_null(strstr(ops[5].error, "WRONGTYPE")); /* its own reason */
    assert_null(strstr(ops[4].error, "WRONGTYPE"));

    /* A server that closed the idle connection (a timeout): the batch goes
     * once more on a fresh one, no request lost to it. */
    r = admin(f, 0, "CLIENT KILL TYPE normal SKIPME yes");
    freeReplyObject(r);
    rl_cache_op again = {.key = "held", .out = &v[1]};
    v[1].len = 0;
    assert_int_equal(rl_cache_run(rl, &again, 1), 0);
    assert_true(again.found);
    assert_memory_equal(v[1].data, "new", 3);
    bool found;
    uint64_t e, sq;
    load_value(rl, "a", &found, &v[0], &e, &sq);
    assert_true(found);
    assert_memory_equal(v[0].data, "va", 2);

    /* Redis lost its scripts: the stores of a batch still land. */
    r = admin(f, 0, "SCRIPT FLUSH");
    freeReplyObject(r);
    rl_cache_op two[2] = {
        {.store = true, .key = "b", .value = "vb", .len = 2, .epoch = 1, .seq = 1},
        {.store = true, .key = "c", .value = "vc", .len = 2, .epoch = 1, .seq = 1},
    };
    assert_int_equal(rl_cache_run(rl, two, 2), 0);
    assert_true(two[0].stored && two[1].stored);
    load_value(rl, "c", &found, &v[0], &e, &sq);
    assert_true(found);
    assert_memory_equal(v[0].data, "vc", 2);

    /* Redis gone: every request says so. */
    h_redis_kill9(&f->redis);
    assert_int_equal(rl_cache_run(rl, two, 2), DSYNC_EUNAVAILABLE);
    assert_int_equal(two[0].rc, DSYNC_EUNAVAILABLE);
    assert_int_equal(two[1].rc, DSYNC_EUNAVAILABLE);
    for (int i = 0; i < 6; i++)
        ut_buf_free(&v[i]);
    rl_close(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cache_requests_share_one_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_records_come_back_in_order_after_the_snapshot_across_a_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_flush_on_a_dropped_connection_is_unknown_and_the_next_reconnects, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_a_flush_in_flight_lands_while_the_next_one_is_buffered,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_read_during_a_flight_sees_it_and_its_fates_stay_for_finish, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_discard_drops_buffered_records_and_never_those_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_flight_redis_never_answers_is_given_up_at_its_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_stalled_redis_costs_one_wait_limit_then_calls_fail_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_loads_and_rewrites_outwait_the_wait_limit_small_calls_do_not, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_flush_writes_many_topics_in_one_round_trip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_ten_thousand_appends_go_in_one_flush_and_load_back_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_node_that_lost_a_topic_can_never_write_to_it_again,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims_with_an_older_or_equal_epoch_are_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_append_checks_its_arguments_and_limits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rewrite_replaces_the_log_with_the_snapshot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_calls_fail_with_unavailable_when_redis_is_killed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_the_handle_reconnects_and_finds_its_data_after_redis_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_bad_url_is_a_configuration_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_records_with_nuls_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_topics_lists_every_claimed_topic_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_info_reports_the_aof_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_cache_writes_of_an_ended_view_are_fenced_off_by_a_newer_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_values_keep_only_the_highest_version, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_every_script_falls_back_to_eval_when_redis_lost_it,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
