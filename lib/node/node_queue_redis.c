/*
 * node_queue_redis.c: the queue's Redis store and the handover of topics.
 *
 * A topic and its dead letters form one unit, kept in Redis as a snapshot
 * plus a record log (lib/store/redis_log), placed on the ring over the
 * view. The owner claims a unit with the view's epoch and loads it on
 * first use (or at once after a view change: adopt); every record it
 * writes is fenced by that epoch. When the view moves a unit, the old
 * owner drops it from memory, and the new one claims a higher epoch and
 * loads it from Redis alone: once it has, any write of the old owner is
 * refused, so no message is delivered by two owners at once, and since
 * every answer waits for its records to be in Redis, nothing an old owner
 * acknowledged is missing from what the new one loads. A failed or unknown
 * write drops the unit here too (memory may then differ from Redis),
 * answers 503, and the next call loads it again.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "node_internal.h"

/* Rewrite a unit's log as a snapshot once it holds more records than this
 * plus twice the unit's messages (amortized, like the local file). */
#define NQ_REWRITE_RECORDS 10000
#define NQ_REDIS_RETRY_MS 1000 /* between attempts to connect at all */

/* A unit (topic + its dead letters) loaded here from Redis. */
typedef struct {
    uint64_t epoch;   /* claimed with it: every write is fenced by it */
    uint64_t log_len; /* records in its Redis log, as of the last flush */
} nq_claim;

/* The longest the loop may block on a silent Redis in one wait (redis_log.h,
 * "Connection"): a fifth of the election timeout, so a stalled Redis
 * neither lets followers time out on this node's heartbeats nor makes the
 * turn long enough to quiet the cache (node.c). */
static unsigned redis_wait_ms(const dsync_node *n)
{
    uint64_t ms = nd_election_ms(n) / 5;
    return ms < RL_WAIT_MIN_MS ? RL_WAIT_MIN_MS : ms > RL_COMMAND_TIMEOUT_MS ? RL_COMMAND_TIMEOUT_MS : (unsigned)ms;
}

/* The connection, opened on first need (and again, at most every
 * NQ_REDIS_RETRY_MS, while Redis is not there); NULL meanwhile. */
rl_log *nd_redis(dsync_node *n)
{
    if (!nq_redis_mode(n)) return NULL;
    if (n->rl) return n->rl;
    uint64_t now = ut_now_ms();
    if (now < n->rl_next_open_ms) return NULL;
    char err[256];
    if (rl_open(n->cfg.redis_url, redis_wait_ms(n), &n->rl, err, sizeof err) != 0) {
        n->rl = NULL;
        n->rl_next_open_ms = now + NQ_REDIS_RETRY_MS;
        ut_log(&n->log, DSYNC_LOG_WARN, "queue: Redis at %s: %s", n->cfg.redis_url, err);
        return NULL;
    }
    char policy[128];
    if (rl_info_appendfsync(n->rl, policy, sizeof policy) == 0)
        ut_log(&n->log, DSYNC_LOG_INFO, "queue: store is Redis at %s (%s)", n->cfg.redis_url,
               policy);
    return n->rl;
}

static void dlq_of(const char *base, char out[QS_TOPIC_NAME_MAX + 1])
{
    size_t len = strnlen(base, QS_TOPIC_MAX); /* a base name is at most that */
    memcpy(out, base, len);
    memcpy(out + len, QS_DLQ_SUFFIX, sizeof QS_DLQ_SUFFIX);
}

static void unit_gauges(dsync_node *n, const char *base)
{
    char dlq[QS_TOPIC_NAME_MAX + 1];
    dlq_of(base, dlq);
    nq_topic_gauges(n, base);
    nq_topic_gauges(n, dlq);
}

/* Forgets a unit here: its topics (whose gauges read 0 from now on) and
 * its claim. */
static void drop_unit(dsync_node *n, const char *base)
{
    char dlq[QS_TOPIC_NAME_MAX + 1];
    dlq_of(base, dlq);
    const char *names[] = {base, dlq};
    for (size_t i = 0; i < 2; i++) {
        if (q_drop_topic(n->queue, names[i]) != 0) continue;
        dsync_series_set(dsync_metric_series1(n->qm.depth, names[i]), 0);
        dsync_series_set(dsync_metric_series1(n->qm.in_flight, names[i]), 0);
    }
    free(ut_map_del(&n->q_claims, base));
}

/* Fails the calls in list on base's unit (answered when their turn to be
 * answered comes). */
static void fail_unit_ops(nq_op *list, const char *base)
{
    for (nq_op *op = list; op; op = op->next) {
        char b[QS_TOPIC_NAME_MAX + 1];
        nq_base_of(op->topic, b);
        if (strcmp(b, base) == 0) nq_fail_op(op, DSYNC_EUNAVAILABLE);
    }
}

/* A unit whose writes failed or whose fate is unknown, or that moved
 * away: dropped with its records not yet sent, and every call on it not
 * yet answered fails (503): those in flight, and those whose records built
 * on them. The next call loads it again from Redis, which then holds all
 * or none of each flush. */
static void unit_failed(dsync_node *n, const char *base)
{
    drop_unit(n, base);
    rl_discard(n->rl, base);
    fail_unit_ops(n->q_flying, base);
    fail_unit_ops(n->q_durable, base);
}

bool nq_unit_claimed(const dsync_node *n, const char *topic)
{
    char base[QS_TOPIC_NAME_MAX + 1];
    nq_base_of(topic, base);
    return ut_map_get(&n->q_claims, base) != NULL;
}

static int load_record(void *ctx, rl_kind kind, const void *data, size_t len)
{
    dsync_node *n = ctx;
    return kind == RL_SNAPSHOT ? q_restore_topics(n->queue, data, len)
                               : q_apply_all(n->queue, data, len, NULL);
}

/* Makes sure this node holds topic's unit, claimed under the current view
 * and loaded from Redis. 0, or the call's error: 503 while Redis is out of
 * reach or when a newer view's owner has claimed it (this node is behind). */
int nq_claim_unit(dsync_node *n, const char *topic)
{
    char base[QS_TOPIC_NAME_MAX + 1];
    nq_base_of(topic, base);
    if (ut_map_get(&n->q_claims, base)) return 0;
    rl_log *rl = nd_redis(n);
    if (!rl) return DSYNC_EUNAVAILABLE;
    /* A flush still out may hold records of it (dropped since): their
     * fate first, so what is loaded stays. */
    nq_redis_land(n, true);
    nq_claim *c = calloc(1, sizeof *c);
    if (!c) return DSYNC_ENOMEM;
    c->epoch = n->fsm.view_epoch;
    uint64_t stored = 0;
    int rc = rl_claim(rl, base, c->epoch, &stored);
    if (rc == DSYNC_EEXIST && stored == c->epoch)
        rc = 0; /* our own claim (a restart, or an unknown outcome): one owner per view */
    if (rc != 0) {
        free(c);
        if (rc == DSYNC_EEXIST)
            ut_log(&n->log, DSYNC_LOG_DEBUG,
                   "queue: %s is claimed at epoch %" PRIu64 ", past this node's view's %" PRIu64,
                   base, stored, n->fsm.view_epoch);
        return rc == DSYNC_ENOMEM ? rc : DSYNC_EUNAVAILABLE;
    }
    drop_unit(n, base); /* whatever an older claim here left behind */
    rc = rl_load(rl, base, load_record, n);
    if (rc == 0) rc = ut_map_put(&n->q_claims, base, c);
    if (rc != 0) {
        ut_log(&n->log, DSYNC_LOG_ERROR, "queue: cannot load %s from Redis: %s", base,
               rc == DSYNC_ECORRUPT ? "a stored record does not apply (corrupt)"
                                    : rl_last_error(rl));
        drop_unit(n, base);
        free(c);
        return rc == DSYNC_ECORRUPT ? DSYNC_EIO : rc == DSYNC_ENOMEM ? rc : DSYNC_EUNAVAILABLE;
    }
    unit_gauges(n, base);
    n->q_ready_dirty = true; /* it may hold ready messages for parked consumers */
    return 0;
}

/* Files each record of the journal under its unit's log, fenced by the
 * unit's epoch. A unit that cannot take one (a buffer past its limits, out
 * of memory) fails: dropped, with its records not yet sent. */
void nq_journal_to_redis(dsync_node *n)
{
    const unsigned char *p = (const unsigned char *)n->journal.data;
    size_t left = n->journal.len;
    while (left) {
        char topic[QS_TOPIC_NAME_MAX + 1], base[QS_TOPIC_NAME_MAX + 1];
        size_t len;
        if (q_record_topic(p, left, topic, &len) != 0) {
            nq_broke(n, "filing a queue record"); /* our own bytes: a bug */
            return;
        }
        nq_base_of(topic, base);
        nq_claim *c = ut_map_get(&n->q_claims, base);
        if (!c || rl_append(n->rl, base, c->epoch, p, len) != 0) unit_failed(n, base);
        p += len;
        left -= len;
    }
}

#define NQ_MAX_DUE 16 /* rewrites one flush may start */

typedef struct {
    dsync_node *n;
    char due[NQ_MAX_DUE][QS_TOPIC_NAME_MAX + 1];
    size_t n_due;
} nq_flush_ctx;

static uint64_t unit_messages(const dsync_node *n, const char *base)
{
    char dlq[QS_TOPIC_NAME_MAX + 1];
    dlq_of(base, dlq);
    uint64_t total = 0;
    q_topic_stats st;
    if (q_topic_stats_get(n->queue, base, &st) == 0) total += st.depth + st.in_flight;
    if (q_topic_stats_get(n->queue, dlq, &st) == 0) total += st.depth + st.in_flight;
    return total;
}

static void on_flushed(void *ctx, const rl_flush_result *r)
{
    nq_flush_ctx *fc = ctx;
    dsync_node *n = fc->n;
    if (r->status != 0) {
        ut_log(&n->log, DSYNC_LOG_WARN, "queue: writing %s to Redis: %s", r->topic,
               r->status == DSYNC_EEXIST ? "fenced, a newer owner has it"
                                         : dsync_strerror(r->status));
        unit_failed(n, r->topic);
        return;
    }
    nq_claim *c = ut_map_get(&n->q_claims, r->topic);
    if (!c) return;
    c->log_len = r->log_len;
    if (c->log_len >= NQ_REWRITE_RECORDS + 2 * unit_messages(n, r->topic) &&
        fc->n_due < NQ_MAX_DUE)
        strcpy(fc->due[fc->n_due++], r->topic);
}

/* Replaces a unit's log in Redis by a snapshot of it. An unknown outcome
 * is harmless: the old snapshot plus log and the new snapshot are the
 * same state. Only with none of its records buffered or in flight: the
 * snapshot must cover exactly what the log holds. */
static void rewrite_unit(dsync_node *n, const char *base)
{
    nq_claim *c = ut_map_get(&n->q_claims, base);
    if (!c) return;
    ut_buf b;
    ut_buf_init(&b);
    int rc = q_snapshot_unit(n->queue, base, &b);
    if (rc == 0) rc = rl_rewrite(n->rl, base, c->epoch, b.data, b.len);
    ut_buf_free(&b);
    if (rc == DSYNC_EEXIST)
        unit_failed(n, base);
    else
        c->log_len = 0; /* done, or try again once as many records have come */
}

/* The flush in flight has landed: its fates told (failed units dropped),
 * and its calls answered. The records buffered meanwhile leave first,
 * so Redis works on them while this thread wakes the callers. */
static void land(dsync_node *n, nq_flush_ctx *fc, bool send_next)
{
    rl_flush_finish(n->rl, on_flushed, fc);
    dsync_series_observe(n->qm.fsync_seconds, (double)(ut_now_ns() - n->q_flight_ns) / 1e9);
    nq_op *done = n->q_flying;
    n->q_flying = NULL;
    if (send_next) nq_redis_send(n);
    nq_answer_all(n, done, 0);
}

void nq_redis_send(dsync_node *n)
{
    if (n->rl && rl_in_flight(n->rl)) return;
    if (!n->rl || !rl_pending(n->rl)) {
        /* Nothing to write: what the calls saw is in Redis already (with
         * no connection there is no unit, and nothing was applied). */
        nq_op *done = n->q_durable;
        n->q_durable = NULL;
        for (nq_op *op = n->rl ? NULL : done; op; op = op->next)
            nq_fail_op(op, DSYNC_EUNAVAILABLE);
        nq_answer_all(n, done, 0);
        return;
    }
    n->q_flying = n->q_durable;
    n->q_durable = NULL;
    n->q_flight_ns = ut_now_ns();
    rl_flush_start(n->rl);
}

void nq_redis_land(dsync_node *n, bool block)
{
    if (!n->rl || !rl_in_flight(n->rl) || (!block && !rl_flush_poll(n->rl))) return;
    nq_flush_ctx fc = {.n = n};
    /* Blocking is for a caller that needs the connection to itself. */
    land(n, &fc, !block);
    if (!fc.n_due) return;
    /* Rewrites are rare (every NQ_REWRITE_RECORDS records of a unit): for
     * them, the records buffered meanwhile land first. */
    if (!rl_in_flight(n->rl)) nq_redis_send(n);
    if (rl_in_flight(n->rl)) {
        nq_flush_ctx more = {.n = n}; /* its own rewrites wait for the next time */
        land(n, &more, false);
    }
    for (size_t i = 0; i < fc.n_due; i++)
        rewrite_unit(n, fc.due[i]);
}

void nq_redis_drain(dsync_node *n)
{
    nq_redis_land(n, true);
    nq_redis_send(n);
    nq_redis_land(n, true);
}

int nd_queue_pollfd(const dsync_node *n)
{
    return nq_redis_mode(n) ? rl_flush_fd(n->rl) : -1;
}

typedef struct {
    dsync_node *n;
    uint64_t until_ms; /* no claim begun after this */
    size_t adopted, failed;
    bool oom;
} nq_adopt_ctx;

/* Stop a page of the listing (it is told again next time): out of time
 * this turn, or Redis away (back next tick, not at once). */
#define ADOPT_PAUSED 1
#define ADOPT_LATER 2
/* Attempts at one topic's claim per view: a claim Redis could not answer
 * is tried again later, up to this many times, then left to its first call.
 * One refused while the connection backs off, unsent, is no attempt: the
 * claims wait for Redis, and queue_adoption_pending says so. */
#define ADOPT_TRIES 3

/* Round trips and connect attempts so far: whether a call reached Redis. */
static uint64_t redis_tries(const dsync_node *n)
{
    rl_stats st = {0};
    if (n->rl) rl_get_stats(n->rl, &st);
    return st.round_trips + st.connect_failures;
}

static int adopt_one(void *ctx, const char *topic)
{
    nq_adopt_ctx *a = ctx;
    dsync_node *n = a->n;
    /* A page cut short is told again: what it settled then is not tried
     * again (a claim may have failed slowly), so the listing moves on. */
    uintptr_t tries = (uintptr_t)ut_map_get(&n->q_adopt_tried, topic);
    if (!nq_topic_ok(topic) || ut_map_get(&n->q_claims, topic) || tries >= ADOPT_TRIES ||
        nq_owner_of(n, topic) != n->cfg.node_id)
        return 0;
    /* At least one claim a turn. */
    if (a->adopted + a->failed > 0 && ut_now_ms() >= a->until_ms) return ADOPT_PAUSED;
    uint64_t t0 = redis_tries(n);
    int rc = nq_claim_unit(n, topic);
    if (rc == 0) {
        a->adopted++;
        dsync_series_add(n->qm.adopted, 1);
        return 0;
    }
    /* Refused without asking (the connection backs off): no attempt. */
    if (rc == DSYNC_EUNAVAILABLE && redis_tries(n) == t0) return ADOPT_LATER;
    bool again = rc == DSYNC_EUNAVAILABLE && tries + 1 < ADOPT_TRIES;
    if (ut_map_put(&n->q_adopt_tried, topic, (void *)(again ? tries + 1 : ADOPT_TRIES)) != 0) {
        a->oom = true;
        return DSYNC_ENOMEM;
    }
    if (again) return ADOPT_LATER;
    a->failed++;
    return 0;
}

/* The current view's claims are all made (or tried). */
static void adoption_over(dsync_node *n)
{
    n->q_adopted = true;
    dsync_series_set(n->qm.adopting, 0);
    ut_map_close(&n->q_adopt_tried);
    ut_map_init(&n->q_adopt_tried);
}

/* Claims now, rather than at their first call, the units in Redis this
 * node owns under the current view, so their leases run out on time and
 * their gauges show. Only once the log is applied up to the commit index:
 * a node replaying old views would claim what has moved on since. A view
 * may place thousands of units here, two round trips each: the loop, which
 * also carries Raft, spends at most a tenth of an election timeout a turn
 * on them and goes on next turn from where it stopped. True while claims
 * remain to be made (the loop should come back at once). */
bool nq_adopt_units(dsync_node *n)
{
    if (!n->fsm.view_index || n->applied < raft_commit_index(n->raft)) return false;
    if (!nd_is_member(n, n->cfg.node_id)) { /* removed: owns nothing */
        adoption_over(n);
        return false;
    }
    rl_log *rl = nd_redis(n);
    if (!rl) return false;
    nq_adopt_ctx a = {.n = n, .until_ms = ut_now_ms() + nd_election_ms(n) / 10};
    int rc = 0;
    do
        rc = rl_topics_page(rl, n->q_adopt_cursor, adopt_one, &a);
    while (rc == 0 && strcmp(n->q_adopt_cursor, "0") != 0 && ut_now_ms() < a.until_ms);
    n->q_adopt_count += a.adopted;
    n->q_adopt_failed += a.failed;
    if (rc == ADOPT_LATER) return false; /* Redis away: this page again next tick */
    if (rc != 0 && rc != ADOPT_PAUSED) {
        /* Tried again every tick, from the same page; said once a view. */
        if (!n->q_adopt_warned)
            ut_log(&n->log, DSYNC_LOG_WARN, "queue: listing topics in Redis: %s",
                   a.oom ? "out of memory" : rl_last_error(rl));
        n->q_adopt_warned = true;
        return false;
    }
    if (rc == 0 && strcmp(n->q_adopt_cursor, "0") == 0) {
        adoption_over(n);
        if (n->q_adopt_count || n->q_adopt_failed)
            ut_log(&n->log, DSYNC_LOG_INFO,
                   "queue: view %" PRIu64 ": took over %zu topic(s) from Redis%s",
                   n->fsm.view_index, n->q_adopt_count,
                   n->q_adopt_failed ? " (some could not be loaded yet)" : "");
        return false;
    }
    return true;
}

void nd_queue_view_changed(dsync_node *n)
{
    if (!nq_redis_mode(n) || !n->queue) return;
    n->q_adopted = false;
    strcpy(n->q_adopt_cursor, "0"); /* the new view's claims start over */
    n->q_adopt_count = n->q_adopt_failed = 0;
    n->q_adopt_warned = false;
    ut_map_close(&n->q_adopt_tried);
    ut_map_init(&n->q_adopt_tried);
    dsync_series_set(n->qm.adopting, 1);
    nq_build_ring(n, n->fsm.live, n->fsm.n_live);
    /* Units placed elsewhere now leave, their records not yet sent with
     * them; those in flight land or are fenced off. */
    size_t count = n->q_claims.count, k = 0;
    char(*gone)[QS_TOPIC_NAME_MAX + 1] = calloc(count ? count : 1, sizeof *gone);
    if (!gone) {
        nq_broke(n, "following a view change"); /* cannot tell what to drop */
        return;
    }
    const char *base;
    for (size_t it = 0; ut_map_next(&n->q_claims, &it, &base, NULL);)
        if (nq_owner_of(n, base) != n->cfg.node_id) strcpy(gone[k++], base);
    for (size_t i = 0; i < k; i++) {
        unit_failed(n, gone[i]);
        /* Its long polls end now, empty: asked again, they reach the new owner. */
        for (nq_op **pp = &n->q_parked; *pp;) {
            nq_op *op = *pp;
            char b[QS_TOPIC_NAME_MAX + 1];
            nq_base_of(op->topic, b);
            if (strcmp(b, gone[i]) != 0) {
                pp = &op->next;
                continue;
            }
            *pp = op->next;
            op->next = NULL;
            nq_finish(n, op);
        }
    }
    if (k)
        ut_log(&n->log, DSYNC_LOG_INFO, "queue: view %" PRIu64 " moved %zu topic(s) away",
               n->fsm.view_index, k);
    free(gone);
    nq_adopt_units(n);
}
