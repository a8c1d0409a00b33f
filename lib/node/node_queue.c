/*
 * node_queue.c: the queue service inside the node loop.
 *
 * Each topic has one owner, the member the consistent-hash ring
 * (lib/queue/ring) places it on; the owner keeps the topic in its queue
 * state machine (lib/queue) and makes every change durable in its local
 * append-only file (lib/store/aof) before it answers: group commit, one
 * fsync per loop turn for every enqueue, consume and ack of that turn. Any
 * node takes any call: when the topic is another node's, the call travels
 * to the owner over the peer transport (ND_FRAME_QREQ) and the answer comes
 * back (ND_FRAME_QRESP).
 *
 * A consume with wait_ms that finds nothing ready is parked on the owner
 * and served by the next enqueue or requeue of its topic, or answered
 * empty at its deadline (long polling). Leases are in wall-clock ms, so
 * they mean the same after a restart.
 *
 * Two stores, chosen by DSYNC_REDIS_URL:
 *
 *  - Local file (no Redis): the ring is over the Raft members and a topic
 *    lives on its owner's disk; while the owner is down its topics answer
 *    503, and a membership change moves a topic's ownership but not its
 *    messages (they wait on the old owner's disk until it owns them again).
 *
 *  - Redis: the ring is over the VIEW, the live members the leader's
 *    failure detector last committed through the log (fsm.h). A topic and
 *    its dead letters form one unit, kept in Redis as a snapshot plus a
 *    record log (lib/store/redis_log). The owner claims a unit with the
 *    view's index as its epoch and loads it on first use; every record it
 *    writes is fenced by that epoch. When the view moves a unit, the old
 *    owner drops it from memory, and the new one claims a higher epoch and
 *    loads it from Redis alone: once it has, any write of the old owner is
 *    refused, so no message is delivered by two owners at once, and since
 *    every answer waits for its records to be in Redis, nothing an old
 *    owner acknowledged is missing from what the new one loads. A failed
 *    or unknown write drops the unit here too (memory may then differ from
 *    Redis), answers 503, and the next call loads it again.
 *
 * A node outside the configuration (joining, removed) refuses queue calls.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "node_internal.h"

#define NQ_DEFAULT_MAX 1
#define NQ_MAX_BATCH 100 /* messages one consume may take */
/* Redis: rewrite a unit's log as a snapshot once it holds more records
 * than this plus twice the unit's messages (amortized, like the file). */
#define NQ_REWRITE_RECORDS 10000
#define NQ_REDIS_RETRY_MS 1000 /* between attempts to connect at all */

/* A unit (topic + its dead letters) loaded here from Redis. */
typedef struct {
    uint64_t epoch;   /* claimed with it: every write is fenced by it */
    uint64_t log_len; /* records in its Redis log, as of the last flush */
} nq_claim;

/* An operation on the topic's owner, from a caller here (call) or from a
 * peer (from, req_id). Owns copies of everything it needs. */
struct nq_op {
    nq_op *next;
    nd_call_kind kind;
    char topic[QS_TOPIC_NAME_MAX + 1];
    char consumer[QS_CONSUMER_MAX + 1];
    void *body;
    size_t len;
    uint32_t max;
    uint64_t visibility_ms, wait_ms, deadline_ms;
    q_receipt receipt;
    /* results */
    int rc;
    uint64_t id;
    dsync_queue_msg *msgs;
    size_t n_msgs;
    uint64_t started_ns;
    /* who waits */
    nd_call *call;
    uint64_t from, req_id;
};

/* ---- helpers ---------------------------------------------------------- */

static bool topic_ok(const char *t)
{
    return t && strnlen(t, QS_TOPIC_NAME_MAX + 1) <= QS_TOPIC_NAME_MAX &&
           q_check_topic_name(t) == 0;
}

static void free_msgs(dsync_queue_msg *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(m[i].body);
    free(m);
}

void dsync_queue_msgs_free(dsync_queue_msg *msgs, size_t n)
{
    free_msgs(msgs, n);
}

static void op_free(nq_op *op)
{
    free(op->body);
    free_msgs(op->msgs, op->n_msgs);
    free(op);
}

/* The owner of topic: the member the ring places it on. A dead-letter
 * topic "<t>.dlq" lives where <t> does, since its messages come from
 * there. 0 when there is none (no ring). */
static bool redis_mode(const dsync_node *n)
{
    return n->cfg.redis_url[0] != '\0';
}

/* The unit a topic belongs to: its name without ".dlq". */
static size_t base_len(const char *topic)
{
    size_t len = strlen(topic), sl = strlen(QS_DLQ_SUFFIX);
    if (len > sl && strcmp(topic + len - sl, QS_DLQ_SUFFIX) == 0) len -= sl;
    return len;
}

static void base_of(const char *topic, char base[QS_TOPIC_NAME_MAX + 1])
{
    size_t len = base_len(topic);
    memcpy(base, topic, len);
    base[len] = '\0';
}

static uint64_t owner_of(const dsync_node *n, const char *topic)
{
    if (redis_mode(n)) /* no view committed yet: nobody owns anything */
        return n->ring && n->fsm.view_index ? qr_owner(n->ring, topic, base_len(topic)) : 0;
    if (!n->net || n->n_voters <= 1) return n->cfg.node_id;
    return n->ring ? qr_owner(n->ring, topic, base_len(topic)) : 0;
}

static bool is_member_here(const dsync_node *n)
{
    for (size_t i = 0; i < n->n_voters; i++)
        if (n->voters[i] == n->cfg.node_id) return true;
    return false;
}

/* The ring over ids. Out of memory leaves no ring at all (nothing is owned
 * here, calls answer 503): neither a partial ring nor the old one would
 * agree with the other nodes' at this view's epoch. */
static void build_ring(dsync_node *n, const uint64_t *ids, size_t count)
{
    qr_free(n->ring);
    n->ring = qr_new(0);
    for (size_t i = 0; n->ring && i < count; i++) {
        if (qr_add(n->ring, ids[i]) != 0) {
            qr_free(n->ring);
            n->ring = NULL;
            ut_log(&n->log, DSYNC_LOG_ERROR, "queue: out of memory building the ring");
            return;
        }
    }
}

void nd_queue_members_changed(dsync_node *n)
{
    if (!redis_mode(n)) build_ring(n, n->voters, n->n_voters);
}

/* ---- metrics ------------------------------------------------------------ */

static void register_metrics(dsync_node *n)
{
    dsync_metrics *m = n->metrics;
    nd_queue_metrics *qm = &n->qm;
    qm->enqueued = dsync_metrics_counter(
        m, "queue_enqueued_total", "Messages enqueued, by topic (counted on its owner).", "topic");
    qm->consumed = dsync_metrics_counter(m, "queue_consumed_total",
                                         "Messages handed out (deliveries), by topic.", "topic");
    qm->acked = dsync_metrics_counter(m, "queue_acked_total",
                                      "Messages deleted by an ack, by topic.", "topic");
    qm->requeued =
        dsync_metrics_counter(m, "queue_requeued_total",
                              "Messages whose visibility ran out, put back, by topic.", "topic");
    qm->dead_lettered = dsync_metrics_counter(m, "queue_dead_lettered_total",
                                              "Messages moved to <topic>.dlq, by topic.", "topic");
    qm->depth = dsync_metrics_gauge(m, "queue_depth", "Ready messages, by topic.", "topic");
    qm->in_flight =
        dsync_metrics_gauge(m, "queue_in_flight", "Messages delivered and not yet acked.", "topic");
    qm->enqueue_seconds = dsync_metric_series0(dsync_metrics_histogram(
        m, "queue_enqueue_seconds", "Time from an enqueue's arrival on the owner to its answer.",
        NULL, dsync_metrics_latency_bounds, dsync_metrics_latency_n_bounds));
    qm->consume_seconds = dsync_metric_series0(dsync_metrics_histogram(
        m, "queue_consume_seconds",
        "Time from a consume's arrival on the owner to its answer (long polls included).", NULL,
        dsync_metrics_latency_bounds, dsync_metrics_latency_n_bounds));
    qm->fsync_seconds = dsync_metric_series0(dsync_metrics_histogram(
        m, "queue_fsync_seconds",
        "Time of one group commit: an fsync of the local queue file, or a round trip to Redis.", NULL,
        dsync_metrics_latency_bounds, dsync_metrics_latency_n_bounds));
}

static void topic_gauges(dsync_node *n, const char *topic)
{
    q_topic_stats st;
    if (q_topic_stats_get(n->queue, topic, &st) != 0) return;
    dsync_series_set(dsync_metric_series1(n->qm.depth, topic), (double)st.depth);
    dsync_series_set(dsync_metric_series1(n->qm.in_flight, topic), (double)st.in_flight);
}

/* ---- persistence ---------------------------------------------------------- */

static void queue_broke(dsync_node *n, const char *what)
{
    if (!n->queue_broken)
        ut_log(&n->log, DSYNC_LOG_ERROR, "%s failed: queue writes refused until restart", what);
    n->queue_broken = true;
}

static void journal_to_redis(dsync_node *n);

/* What a call changed goes to the file as one record, in order. If it
 * cannot, memory and file would part ways: stop taking queue writes. */
static int journal_out(dsync_node *n)
{
    if (n->journal.oom) {
        ut_buf_free(&n->journal); /* the journal's contract after an OOM */
        queue_broke(n, "recording a queue change");
        return DSYNC_ENOMEM;
    }
    if (!n->journal.len) return 0;
    if (redis_mode(n)) { /* failures are per unit, told at the flush */
        journal_to_redis(n);
        n->journal.len = 0;
        return 0;
    }
    int rc = n->aof ? aof_append(n->aof, n->journal.data, n->journal.len) : 0;
    n->journal.len = 0;
    if (rc != 0) queue_broke(n, "appending to the queue file");
    return rc;
}

static int replay(void *ctx, aof_type type, const void *data, size_t len)
{
    dsync_node *n = ctx;
    return type == AOF_SNAPSHOT ? q_restore(n->queue, data, len)
                                : q_apply_all(n->queue, data, len, NULL);
}

/* Rewrites the file as one snapshot once it is past the configured size
 * and twice what the last rewrite left (Redis's growth rule), so a large
 * backlog is not rewritten on every turn. */
static void maybe_rewrite(dsync_node *n)
{
    if (!n->aof || n->queue_broken) return;
    uint64_t size = aof_size(n->aof);
    if (size < n->cfg.queue_rewrite_bytes || size < 2 * n->aof_rewritten_size) return;
    ut_buf b;
    ut_buf_init(&b);
    int rc = q_snapshot(n->queue, &b);
    if (rc == 0) rc = aof_rewrite(n->aof, b.data, b.len);
    ut_buf_free(&b);
    aof_stats st;
    aof_get_stats(n->aof, &st);
    if (st.broken)
        queue_broke(n, "rewriting the queue file");
    else if (rc == 0)
        n->aof_rewritten_size = aof_size(n->aof);
    else /* before the rename: the old file carries on; try again later */
        n->aof_rewritten_size = size;
}

/* ---- Redis: units, claims, fenced writes ------------------------------- */

/* The connection, opened on first need (and again, at most every
 * NQ_REDIS_RETRY_MS, while Redis is not there); NULL meanwhile. */
rl_log *nd_redis(dsync_node *n)
{
    if (!redis_mode(n)) return NULL;
    if (n->rl) return n->rl;
    uint64_t now = ut_now_ms();
    if (now < n->rl_next_open_ms) return NULL;
    char err[256];
    if (rl_open(n->cfg.redis_url, &n->rl, err, sizeof err) != 0) {
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
    topic_gauges(n, base);
    topic_gauges(n, dlq);
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

/* A unit whose writes failed or whose fate is unknown, or that moved
 * away: dropped, and not loaded again before this turn's flush, whose
 * answers for it are 503. */
static void unit_failed(dsync_node *n, const char *base)
{
    drop_unit(n, base);
    if (!ut_map_get(&n->q_failed, base) && ut_map_put(&n->q_failed, base, n) != 0)
        queue_broke(n, "remembering a failed queue write"); /* out of memory */
}

static bool unit_has_failed(const dsync_node *n, const char *topic)
{
    char base[QS_TOPIC_NAME_MAX + 1];
    base_of(topic, base);
    return ut_map_get(&n->q_failed, base) != NULL;
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
static int claim_unit(dsync_node *n, const char *topic)
{
    char base[QS_TOPIC_NAME_MAX + 1];
    base_of(topic, base);
    if (ut_map_get(&n->q_claims, base)) return 0;
    if (ut_map_get(&n->q_failed, base)) return DSYNC_EUNAVAILABLE; /* writes still out */
    rl_log *rl = nd_redis(n);
    if (!rl) return DSYNC_EUNAVAILABLE;
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
 * unit's epoch. A unit that cannot take one fails for this turn. */
static void journal_to_redis(dsync_node *n)
{
    const unsigned char *p = (const unsigned char *)n->journal.data;
    size_t left = n->journal.len;
    while (left) {
        char topic[QS_TOPIC_NAME_MAX + 1], base[QS_TOPIC_NAME_MAX + 1];
        size_t len;
        if (q_record_topic(p, left, topic, &len) != 0) {
            queue_broke(n, "filing a queue record"); /* our own bytes: a bug */
            return;
        }
        base_of(topic, base);
        nq_claim *c = ut_map_get(&n->q_claims, base);
        if (!c || rl_append(n->rl, base, c->epoch, p, len) != 0) unit_failed(n, base);
        p += len;
        left -= len;
    }
}

#define NQ_MAX_DUE 16 /* rewrites one turn may do */

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
 * same state. */
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

/* One round trip for the whole turn; then the answers, each failed if its
 * unit's writes did not all land. */
static int flush_to_redis(dsync_node *n)
{
    if (!n->rl || !rl_pending(n->rl)) return 0;
    nq_flush_ctx fc = {.n = n};
    uint64_t start = ut_now_ns();
    rl_flush(n->rl, on_flushed, &fc);
    dsync_series_observe(n->qm.fsync_seconds, (double)(ut_now_ns() - start) / 1e9);
    for (size_t i = 0; i < fc.n_due; i++)
        rewrite_unit(n, fc.due[i]);
    return 0;
}

/* ---- answering -------------------------------------------------------------- */

static void encode_result(ut_buf *b, const nq_op *op)
{
    ut_buf_put_le(b, op->req_id, 8);
    ut_buf_put_le(b, (uint64_t)(uint32_t)-op->rc, 4);
    ut_buf_put_le(b, op->id, 8);
    ut_buf_put_le(b, op->n_msgs, 4);
    for (size_t i = 0; i < op->n_msgs; i++) {
        const dsync_queue_msg *m = &op->msgs[i];
        ut_buf_put_le(b, m->id, 8);
        ut_buf_put_le(b, m->deliveries, 4);
        ut_buf_append(b, m->receipt, DSYNC_RECEIPT_LEN);
        ut_buf_put_le(b, m->visibility_ms, 8);
        ut_buf_put_le(b, m->origin_id, 8);
        ut_buf_put_le(b, m->origin_deliveries, 4);
        ut_buf_put_le(b, m->len, 4);
        ut_buf_append(b, m->body, m->len);
    }
}

/* Gives the caller (here or on a peer) the result, and frees op. */
static void finish(dsync_node *n, nq_op *op)
{
    dsync_series *lat = op->kind == ND_CALL_Q_CONSUME   ? n->qm.consume_seconds
                        : op->kind == ND_CALL_Q_ENQUEUE ? n->qm.enqueue_seconds
                                                        : NULL;
    if (lat) dsync_series_observe(lat, (double)(ut_now_ns() - op->started_ns) / 1e9);
    if (op->call) {
        nd_call *c = op->call;
        if (op->kind == ND_CALL_Q_ENQUEUE && c->u.queue.id) *c->u.queue.id = op->id;
        if (op->kind == ND_CALL_Q_CONSUME) {
            *c->u.queue.msgs = op->msgs;
            *c->u.queue.n = op->n_msgs;
            op->msgs = NULL;
            op->n_msgs = 0;
        }
        nd_complete(c, op->rc);
    } else if (n->net) {
        ut_buf b;
        ut_buf_init(&b);
        encode_result(&b, op);
        if (!b.oom) nt_send(n->net, op->from, ND_FRAME_QRESP, b.data, b.len);
        ut_buf_free(&b);
    }
    op_free(op);
}

/* ---- executing on the owner --------------------------------------------- */

static void take_deliveries(nq_op *op, const q_delivery *d, size_t count, uint64_t now)
{
    op->msgs = calloc(count ? count : 1, sizeof *op->msgs);
    if (!op->msgs) {
        op->rc = DSYNC_ENOMEM;
        return;
    }
    for (size_t i = 0; i < count; i++) {
        dsync_queue_msg *m = &op->msgs[i];
        m->id = d[i].id;
        m->deliveries = d[i].deliveries;
        q_receipt_format(&d[i].receipt, m->receipt);
        m->visibility_ms = d[i].visibility_deadline > now ? d[i].visibility_deadline - now : 0;
        m->origin_id = d[i].origin_id;
        m->origin_deliveries = d[i].origin_deliveries;
        m->body = malloc(d[i].len + 1);
        if (!m->body) {
            op->n_msgs = i;
            op->rc = DSYNC_ENOMEM;
            return;
        }
        memcpy(m->body, d[i].body, d[i].len);
        m->body[d[i].len] = '\0';
        m->len = d[i].len;
        op->n_msgs = i + 1;
    }
}

/* Tries a consume; true when it is answered (messages, or an error). */
static bool try_consume(dsync_node *n, nq_op *op, uint64_t now)
{
    q_delivery d[NQ_MAX_BATCH];
    size_t count = 0;
    op->rc =
        q_consume(n->queue, op->topic, op->consumer, op->max, op->visibility_ms, now, d, &count);
    /* Its tick may have requeued or dead-lettered: out with those records
     * now, before any snapshot is taken, parked or not. */
    if (journal_out(n) != 0 && op->rc == 0 && count) op->rc = DSYNC_EIO;
    if (op->rc == 0 && count == 0 && op->wait_ms && now < op->deadline_ms) return false;
    if (op->rc == 0) {
        take_deliveries(op, d, count, now);
        dsync_series_add(dsync_metric_series1(n->qm.consumed, op->topic), (double)count);
        topic_gauges(n, op->topic);
    }
    return true;
}

/* Durable before answered: the turn's sync comes first. */
static void answer_after_sync(dsync_node *n, nq_op *op)
{
    if (journal_out(n) != 0 && op->rc == 0) op->rc = DSYNC_EIO;
    op->next = n->q_durable;
    n->q_durable = op;
}

/* Parked consumers wait in arrival order: the oldest long poll first. */
static void park(dsync_node *n, nq_op *op)
{
    nq_op **pp = &n->q_parked;
    while (*pp)
        pp = &(*pp)->next;
    op->next = NULL;
    *pp = op;
}

static void execute(dsync_node *n, nq_op *op)
{
    uint64_t now = ut_wall_ms();
    if (n->queue_broken) {
        op->rc = DSYNC_EIO;
        finish(n, op);
        return;
    }
    if (redis_mode(n) && (op->rc = claim_unit(n, op->topic)) != 0) {
        finish(n, op);
        return;
    }
    switch (op->kind) {
    case ND_CALL_Q_ENQUEUE:
        op->rc = q_enqueue(n->queue, op->topic, op->body, op->len, now, &op->id);
        if (op->rc == 0) {
            dsync_series_add(dsync_metric_series1(n->qm.enqueued, op->topic), 1);
            topic_gauges(n, op->topic);
            n->q_ready_dirty = true;
        }
        answer_after_sync(n, op);
        return;
    case ND_CALL_Q_CONSUME:
        op->deadline_ms = now + op->wait_ms;
        if (!try_consume(n, op, now)) {
            park(n, op);
            return;
        }
        answer_after_sync(n, op);
        return;
    case ND_CALL_Q_ACK:
        op->rc = q_ack(n->queue, op->topic, &op->receipt, now);
        if (op->rc == 0) {
            dsync_series_add(dsync_metric_series1(n->qm.acked, op->topic), 1);
            topic_gauges(n, op->topic);
        }
        answer_after_sync(n, op);
        return;
    default:
        op->rc = DSYNC_EINVAL;
        finish(n, op);
    }
}

/* Serves parked consumers whose topic has something ready, or whose wait
 * is over. */
static uint64_t serve_parked(dsync_node *n, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    for (nq_op **pp = &n->q_parked; *pp;) {
        nq_op *op = *pp;
        bool due = op->deadline_ms <= now || q_has_ready(n->queue, op->topic);
        if (due && try_consume(n, op, now)) {
            *pp = op->next;
            answer_after_sync(n, op);
            continue;
        }
        if (op->deadline_ms < next) next = op->deadline_ms;
        pp = &op->next;
    }
    return next;
}

static void on_queue_event(void *ctx, const q_event *ev)
{
    dsync_node *n = ctx;
    n->q_ready_dirty = true;
    if (ev->kind == Q_EV_REQUEUED) {
        dsync_series_add(dsync_metric_series1(n->qm.requeued, ev->topic), 1);
    } else {
        dsync_series_add(dsync_metric_series1(n->qm.dead_lettered, ev->topic), 1);
        ut_log(&n->log, DSYNC_LOG_WARN, "message %" PRIu64 " of %s dead-lettered to %s", ev->id,
               ev->topic, ev->dlq_topic);
    }
}

/* ---- forwarding ------------------------------------------------------------- */

static void encode_request(ut_buf *b, uint64_t req_id, const nq_op *op)
{
    ut_buf_put_le(b, req_id, 8);
    ut_buf_put_le(b, (uint64_t)op->kind, 1);
    ut_buf_put_str16(b, op->topic);
    switch (op->kind) {
    case ND_CALL_Q_ENQUEUE:
        ut_buf_put_le(b, op->len, 4);
        ut_buf_append(b, op->body, op->len);
        break;
    case ND_CALL_Q_CONSUME:
        ut_buf_put_str16(b, op->consumer);
        ut_buf_put_le(b, op->max, 4);
        ut_buf_put_le(b, op->visibility_ms, 8);
        ut_buf_put_le(b, op->wait_ms, 8);
        break;
    default:
        ut_buf_put_le(b, op->receipt.id, 8);
        ut_buf_put_le(b, op->receipt.tag, 8);
    }
}

/* A request from a peer: checked field by field, never trusted. */
static void on_request(dsync_node *n, uint64_t from, const void *payload, size_t len)
{
    ut_reader r = {payload, len, false};
    nq_op *op = calloc(1, sizeof *op);
    if (!op) return;
    op->from = from;
    op->started_ns = ut_now_ns();
    op->req_id = ut_read_le(&r, 8);
    op->kind = (nd_call_kind)ut_read_le(&r, 1);
    ut_read_str16(&r, op->topic, QS_TOPIC_NAME_MAX);
    bool ok = !r.bad && topic_ok(op->topic);
    if (ok && op->kind == ND_CALL_Q_ENQUEUE) {
        op->len = (size_t)ut_read_le(&r, 4);
        ok = !r.bad && op->len <= QS_MAX_BODY && op->len <= r.left &&
             (op->body = malloc(op->len ? op->len : 1)) != NULL;
        if (ok) {
            memcpy(op->body, r.p, op->len);
            r.p += op->len;
            r.left -= op->len;
        }
    } else if (ok && op->kind == ND_CALL_Q_CONSUME) {
        ut_read_str16(&r, op->consumer, QS_CONSUMER_MAX);
        op->max = (uint32_t)ut_read_le(&r, 4);
        op->visibility_ms = ut_read_le(&r, 8);
        op->wait_ms = ut_read_le(&r, 8);
        ok = !r.bad && op->max >= 1 && op->max <= NQ_MAX_BATCH &&
             op->wait_ms <= n->cfg.queue_max_wait_ms;
    } else if (ok && op->kind == ND_CALL_Q_ACK) {
        op->receipt.id = ut_read_le(&r, 8);
        op->receipt.tag = ut_read_le(&r, 8);
        ok = !r.bad;
    } else {
        ok = false;
    }
    if (!ok || r.left != 0) {
        ut_log(&n->log, DSYNC_LOG_WARN, "peer %" PRIu64 " sent a malformed queue request", from);
        op_free(op);
        return;
    }
    /* Placement may have moved while it travelled: only the owner serves. */
    if (owner_of(n, op->topic) != n->cfg.node_id || (n->net && !is_member_here(n))) {
        op->rc = DSYNC_EUNAVAILABLE;
        finish(n, op);
        return;
    }
    execute(n, op);
}

static void on_response(dsync_node *n, uint64_t from, const void *payload, size_t len)
{
    ut_reader r = {payload, len, false};
    uint64_t req_id = ut_read_le(&r, 8);
    uint64_t code = ut_read_le(&r, 4);
    uint64_t id = ut_read_le(&r, 8);
    uint64_t count = ut_read_le(&r, 4);
    if (r.bad || count > NQ_MAX_BATCH) return;
    nd_call **pp = &n->q_waiting;
    while (*pp && ((*pp)->read_ctx != req_id || (*pp)->read_index != from))
        pp = &(*pp)->next;
    nd_call *c = *pp;
    if (!c) return; /* it gave up already */
    int rc = code == 0 ? 0 : code <= (uint64_t)-DSYNC_ERR_MIN ? -(int)code : DSYNC_EUNAVAILABLE;
    dsync_queue_msg *msgs = NULL;
    if (rc == 0 && c->kind == ND_CALL_Q_CONSUME) {
        msgs = calloc(count ? count : 1, sizeof *msgs);
        size_t got = 0;
        for (; msgs && got < count; got++) {
            dsync_queue_msg *m = &msgs[got];
            m->id = ut_read_le(&r, 8);
            m->deliveries = (uint32_t)ut_read_le(&r, 4);
            if (r.left < DSYNC_RECEIPT_LEN) break;
            memcpy(m->receipt, r.p, DSYNC_RECEIPT_LEN);
            r.p += DSYNC_RECEIPT_LEN;
            r.left -= DSYNC_RECEIPT_LEN;
            m->visibility_ms = ut_read_le(&r, 8);
            m->origin_id = ut_read_le(&r, 8);
            m->origin_deliveries = (uint32_t)ut_read_le(&r, 4);
            m->len = (size_t)ut_read_le(&r, 4);
            if (r.bad || m->len > r.left || !(m->body = malloc(m->len + 1))) break;
            memcpy(m->body, r.p, m->len);
            m->body[m->len] = '\0';
            r.p += m->len;
            r.left -= m->len;
        }
        if (!msgs || got != count || r.left != 0) {
            free_msgs(msgs, msgs ? got : 0);
            return; /* garbage: the caller times out */
        }
    } else if (r.left != 0) {
        return;
    }
    *pp = c->next;
    c->next = NULL;
    if (rc == 0 && c->kind == ND_CALL_Q_ENQUEUE && c->u.queue.id) *c->u.queue.id = id;
    if (rc == 0 && c->kind == ND_CALL_Q_CONSUME) {
        *c->u.queue.msgs = msgs;
        *c->u.queue.n = (size_t)count;
    }
    nd_complete(c, rc);
}

void nd_queue_frame(dsync_node *n, uint64_t from, uint8_t type, const void *payload, size_t len)
{
    if (type == ND_FRAME_QREQ)
        on_request(n, from, payload, len);
    else
        on_response(n, from, payload, len);
}

/* ---- calls from this node --------------------------------------------------- */

void nd_queue_handle(dsync_node *n, nd_call *call)
{
    const dsync_consume_request *cr = call->u.queue.consume;
    nq_op *op = calloc(1, sizeof *op);
    if (!op) {
        nd_complete(call, DSYNC_ENOMEM);
        return;
    }
    op->kind = call->kind;
    op->call = call;
    op->started_ns = call->submitted_ns;
    int rc = 0;
    const char *topic = op->kind == ND_CALL_Q_CONSUME ? cr->topic : call->u.queue.topic;
    if (!topic_ok(topic)) rc = DSYNC_EINVAL;
    if (rc == 0) strcpy(op->topic, topic);
    if (rc == 0 && op->kind == ND_CALL_Q_ENQUEUE) {
        op->len = call->u.queue.len;
        if (op->len > QS_MAX_BODY)
            rc = DSYNC_ETOOBIG;
        else if (!(op->body = malloc(op->len ? op->len : 1)))
            rc = DSYNC_ENOMEM;
        else if (op->len)
            memcpy(op->body, call->u.queue.body, op->len);
    } else if (rc == 0 && op->kind == ND_CALL_Q_CONSUME) {
        op->max = cr->max ? cr->max : NQ_DEFAULT_MAX;
        op->visibility_ms = cr->visibility_ms ? cr->visibility_ms : n->cfg.queue_visibility_ms;
        op->wait_ms = cr->wait_ms;
        if (!cr->consumer_id || !*cr->consumer_id ||
            strnlen(cr->consumer_id, QS_CONSUMER_MAX + 1) > QS_CONSUMER_MAX ||
            op->max > NQ_MAX_BATCH || op->visibility_ms > QS_MAX_VISIBILITY_MS ||
            op->wait_ms > n->cfg.queue_max_wait_ms)
            rc = DSYNC_EINVAL;
        else
            strcpy(op->consumer, cr->consumer_id);
    } else if (rc == 0 && op->kind == ND_CALL_Q_ACK) {
        if (!call->u.queue.receipt || q_receipt_parse(call->u.queue.receipt, &op->receipt) != 0)
            rc = DSYNC_ENOTFOUND; /* not a receipt we could have given */
    }
    if (rc != 0) {
        op->call = NULL;
        op_free(op);
        nd_complete(call, rc);
        return;
    }
    /* A node outside the configuration (joining, removed) has no say in
     * where topics live. */
    uint64_t owner = n->net && !is_member_here(n) ? 0 : owner_of(n, op->topic);
    if (owner == 0) {
        op->call = NULL;
        op_free(op);
        nd_complete(call, DSYNC_EUNAVAILABLE);
        return;
    }
    if (owner == n->cfg.node_id) {
        execute(n, op);
        return;
    }
    /* Someone else's topic: send it there and wait for the answer. An
     * owner the transport has no connection to now answers nothing: 503 at
     * once rather than after the whole timeout. */
    if (!nt_connected(n->net, owner) || nt_dropping(n->net, owner)) {
        op->call = NULL;
        op_free(op);
        nd_complete(call, DSYNC_EUNAVAILABLE);
        return;
    }
    ut_buf b;
    ut_buf_init(&b);
    call->read_ctx = ++n->next_read;
    encode_request(&b, call->read_ctx, op);
    rc = b.oom ? DSYNC_ENOMEM : nt_send(n->net, owner, ND_FRAME_QREQ, b.data, b.len);
    ut_buf_free(&b);
    op->call = NULL;
    uint64_t wait = op->wait_ms;
    op_free(op);
    if (rc != 0) {
        nd_complete(call, rc == DSYNC_ENOMEM ? rc : DSYNC_EUNAVAILABLE);
        return;
    }
    call->deadline_ms = ut_now_ms() + ND_COMMIT_TIMEOUT_MS + wait;
    call->read_index = owner; /* only its answer counts */
    call->next = n->q_waiting;
    n->q_waiting = call;
}

/* ---- state ---------------------------------------------------------------- */

static int cmp_topic_info(const void *a, const void *b)
{
    return strcmp(((const dsync_topic_info *)a)->name, ((const dsync_topic_info *)b)->name);
}

void nd_queue_state(dsync_node *n, nd_call *call)
{
    dsync_queue_state *st = call->u.queue.state;
    const char *topic = call->u.queue.topic;
    memset(st, 0, sizeof *st);
    if (topic && !topic_ok(topic)) {
        nd_complete(call, DSYNC_EINVAL);
        return;
    }
    st->store = redis_mode(n) ? "redis" : n->aof ? "file" : "memory";
    st->view_epoch = n->fsm.view_epoch;
    if (redis_mode(n)) {
        for (size_t i = 0; i < n->fsm.n_live && i < 64; i++)
            st->owners[st->n_owners++] = n->fsm.live[i];
    } else if (!n->net) {
        st->owners[st->n_owners++] = n->cfg.node_id;
    } else {
        for (size_t i = 0; i < n->n_voters && i < 64; i++)
            st->owners[st->n_owners++] = n->voters[i];
    }
    if (topic) st->topic_owner = n->net && !is_member_here(n) ? 0 : owner_of(n, topic);
    size_t count;
    q_counts(n->queue, &count, NULL, NULL);
    st->topics = calloc(count ? count : 1, sizeof *st->topics);
    if (!st->topics) {
        nd_complete(call, DSYNC_ENOMEM);
        return;
    }
    q_topic_stats ts;
    for (size_t it = 0; st->n_topics < count && q_topic_next(n->queue, &it, &ts);) {
        dsync_topic_info *t = &st->topics[st->n_topics++];
        snprintf(t->name, sizeof t->name, "%s", ts.name);
        t->depth = ts.depth;
        t->in_flight = ts.in_flight;
    }
    qsort(st->topics, st->n_topics, sizeof *st->topics, cmp_topic_info);
    nd_complete(call, 0);
}

/* ---- the loop's turn ----------------------------------------------------------- */

void nd_queue_flush(dsync_node *n)
{
    journal_out(n); /* nothing may stay behind a snapshot */
    if (redis_mode(n)) {
        flush_to_redis(n);
    } else if (!n->q_durable) {
        return;
    }
    int rc = n->queue_broken ? DSYNC_EIO : 0;
    if (n->aof && rc == 0 && n->q_durable) {
        uint64_t start = ut_now_ns();
        rc = aof_sync(n->aof);
        dsync_series_observe(n->qm.fsync_seconds, (double)(ut_now_ns() - start) / 1e9);
        if (rc != 0) queue_broke(n, "fsync of the queue file");
    }
    while (n->q_durable) {
        nq_op *op = n->q_durable;
        n->q_durable = op->next;
        int op_rc = rc != 0 ? rc : unit_has_failed(n, op->topic) ? DSYNC_EUNAVAILABLE : 0;
        if (op_rc != 0) {
            free_msgs(op->msgs, op->n_msgs);
            op->msgs = NULL;
            op->n_msgs = 0;
            op->rc = op_rc;
        }
        finish(n, op);
    }
    if (n->q_failed.count) {
        ut_map_close(&n->q_failed);
        ut_map_init(&n->q_failed);
    }
    maybe_rewrite(n);
}

typedef struct {
    dsync_node *n;
    size_t adopted, failed;
} nq_adopt_ctx;

static int adopt_one(void *ctx, const char *topic)
{
    nq_adopt_ctx *a = ctx;
    dsync_node *n = a->n;
    if (!topic_ok(topic) || ut_map_get(&n->q_claims, topic) ||
        owner_of(n, topic) != n->cfg.node_id)
        return 0;
    if (claim_unit(n, topic) == 0)
        a->adopted++;
    else
        a->failed++;
    return 0;
}

/* Claims now, rather than at their first call, the units in Redis this
 * node owns under the current view, so their leases run out on time and
 * their gauges show. Only once the log is applied up to the commit index:
 * a node replaying old views would claim what has moved on since. */
static void adopt_units(dsync_node *n)
{
    if (!n->fsm.view_index || n->applied < raft_commit_index(n->raft) || !is_member_here(n))
        return;
    rl_log *rl = nd_redis(n);
    if (!rl) return;
    nq_adopt_ctx a = {.n = n};
    n->q_adopted = true;
    if (rl_topics(rl, adopt_one, &a) != 0)
        ut_log(&n->log, DSYNC_LOG_WARN, "queue: listing topics in Redis: %s", rl_last_error(rl));
    if (a.adopted || a.failed)
        ut_log(&n->log, DSYNC_LOG_INFO,
               "queue: view %" PRIu64 ": took over %zu topic(s) from Redis%s", n->fsm.view_index,
               a.adopted, a.failed ? " (some could not be loaded yet)" : "");
}

void nd_queue_view_changed(dsync_node *n)
{
    if (!redis_mode(n) || !n->queue) return;
    n->q_adopted = false;
    build_ring(n, n->fsm.live, n->fsm.n_live);
    /* Units placed elsewhere now leave; their writes still buffered go out
     * at this turn's flush, fenced by their epoch. */
    size_t count = n->q_claims.count, k = 0;
    char(*gone)[QS_TOPIC_NAME_MAX + 1] = calloc(count ? count : 1, sizeof *gone);
    if (!gone) {
        queue_broke(n, "following a view change"); /* cannot tell what to drop */
        return;
    }
    const char *base;
    for (size_t it = 0; ut_map_next(&n->q_claims, &it, &base, NULL);)
        if (owner_of(n, base) != n->cfg.node_id) strcpy(gone[k++], base);
    for (size_t i = 0; i < k; i++) {
        unit_failed(n, gone[i]);
        /* Its long polls end now, empty: asked again, they reach the new owner. */
        for (nq_op **pp = &n->q_parked; *pp;) {
            nq_op *op = *pp;
            char b[QS_TOPIC_NAME_MAX + 1];
            base_of(op->topic, b);
            if (strcmp(b, gone[i]) != 0) {
                pp = &op->next;
                continue;
            }
            *pp = op->next;
            op->next = NULL;
            finish(n, op);
        }
    }
    if (k)
        ut_log(&n->log, DSYNC_LOG_INFO, "queue: view %" PRIu64 " moved %zu topic(s) away",
               n->fsm.view_index, k);
    free(gone);
    adopt_units(n);
}

uint64_t nd_queue_tick(dsync_node *n, uint64_t now_ms)
{
    uint64_t wall = ut_wall_ms();
    if (redis_mode(n) && !n->q_adopted) adopt_units(n); /* e.g. caught up after a restart */
    if (q_next_deadline(n->queue) <= wall && !n->queue_broken) {
        q_tick(n->queue, wall, NULL);
        journal_out(n);
    }
    uint64_t next = UINT64_MAX;
    if (n->q_ready_dirty || n->q_parked) {
        n->q_ready_dirty = false;
        uint64_t p = serve_parked(n, wall);
        if (p != UINT64_MAX) next = now_ms + (p > wall ? p - wall : 0);
    }
    uint64_t lease = n->queue_broken ? UINT64_MAX : q_next_deadline(n->queue);
    if (lease != UINT64_MAX) {
        uint64_t at = now_ms + (lease > wall ? lease - wall : 0);
        if (at < next) next = at;
    }
    /* Forwarded calls whose owner never answered. */
    for (nd_call **pp = &n->q_waiting; *pp;) {
        nd_call *c = *pp;
        if (c->deadline_ms <= now_ms) {
            *pp = c->next;
            c->next = NULL;
            nd_complete(c, DSYNC_EUNAVAILABLE);
            continue;
        }
        if (c->deadline_ms < next) next = c->deadline_ms;
        pp = &c->next;
    }
    return next;
}

/* ---- open and close -------------------------------------------------------------- */

int nd_queue_open(dsync_node *n)
{
    register_metrics(n);
    uint64_t nonce = 0;
    if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce) nonce = ut_now_ns() ^ n->cfg.node_id;
    q_config qc = {.nonce = nonce, .max_deliveries = n->cfg.queue_max_deliveries};
    n->queue = q_new(&qc);
    if (!n->queue) return DSYNC_ENOMEM;
    q_set_listener(n->queue, on_queue_event, n);
    ut_buf_init(&n->journal);
    ut_map_init(&n->q_claims);
    ut_map_init(&n->q_failed);
    if (redis_mode(n)) {
        /* Topics come from Redis as they are used; placement, from the view. */
        q_set_journal(n->queue, &n->journal);
        nd_queue_view_changed(n);
        if (!nd_redis(n))
            ut_log(&n->log, DSYNC_LOG_WARN,
                   "queue: Redis is not reachable yet; queue calls answer 503 until it is");
        return 0;
    }
    if (n->cfg.data_dir[0]) {
        char err[512];
        aof_options opt = {.fsync = AOF_FSYNC_ALWAYS, .log = &n->log};
        int rc = aof_open(n->cfg.data_dir, &opt, &n->aof, replay, n, err, sizeof err);
        if (rc != 0) {
            ut_log(&n->log, DSYNC_LOG_ERROR, "cannot open the queue file in %s: %s",
                   n->cfg.data_dir, err);
            q_free(n->queue);
            n->queue = NULL;
            ut_buf_free(&n->journal);
            return rc;
        }
    }
    q_set_journal(n->queue, &n->journal);
    size_t topics;
    uint64_t ready, in_flight;
    q_counts(n->queue, &topics, &ready, &in_flight);
    for (size_t it = 0;;) {
        q_topic_stats st;
        if (!q_topic_next(n->queue, &it, &st)) break;
        topic_gauges(n, st.name);
    }
    if (topics)
        ut_log(&n->log, DSYNC_LOG_INFO,
               "queue: restored %zu topic(s), %" PRIu64 " ready and %" PRIu64 " in flight", topics,
               ready, in_flight);
    return 0;
}

void nd_queue_close(dsync_node *n)
{
    while (n->q_parked) {
        nq_op *op = n->q_parked;
        n->q_parked = op->next;
        op->rc = DSYNC_ECLOSED;
        finish(n, op);
    }
    nd_queue_flush(n);
    while (n->q_waiting) {
        nd_call *c = n->q_waiting;
        n->q_waiting = c->next;
        nd_complete(c, DSYNC_ECLOSED);
    }
    aof_close(n->aof);
    n->aof = NULL;
    rl_close(n->rl);
    n->rl = NULL;
    void *claim;
    for (size_t it = 0; ut_map_next(&n->q_claims, &it, NULL, &claim);)
        free(claim);
    ut_map_close(&n->q_claims);
    ut_map_close(&n->q_failed);
    q_free(n->queue);
    n->queue = NULL;
    qr_free(n->ring);
    n->ring = NULL;
    ut_buf_free(&n->journal);
}

/* ---- public calls ---------------------------------------------------------------- */

int dsync_queue_enqueue(dsync_node *n, const char *topic, const void *body, size_t len,
                        uint64_t *id)
{
    if (!n || !topic || (len && !body)) return DSYNC_EINVAL;
    nd_call call = {.kind = ND_CALL_Q_ENQUEUE,
                    .u.queue = {.topic = topic, .body = body, .len = len, .id = id}};
    return nd_submit(n, &call);
}

int dsync_queue_consume(dsync_node *n, const dsync_consume_request *req, dsync_queue_msg **msgs,
                        size_t *count)
{
    if (!n || !req || !msgs || !count) return DSYNC_EINVAL;
    *msgs = NULL;
    *count = 0;
    nd_call call = {.kind = ND_CALL_Q_CONSUME,
                    .u.queue = {.consume = req, .msgs = msgs, .n = count}};
    return nd_submit(n, &call);
}

int dsync_queue_state_get(dsync_node *n, const char *topic, dsync_queue_state *out)
{
    if (!n || !out) return DSYNC_EINVAL;
    nd_call call = {.kind = ND_CALL_Q_STATE, .u.queue = {.topic = topic, .state = out}};
    return nd_submit(n, &call);
}

void dsync_queue_state_free(dsync_queue_state *state)
{
    if (!state) return;
    free(state->topics);
    state->topics = NULL;
    state->n_topics = 0;
}

int dsync_queue_ack(dsync_node *n, const char *topic, const char *receipt)
{
    if (!n || !topic || !receipt) return DSYNC_EINVAL;
    nd_call call = {.kind = ND_CALL_Q_ACK, .u.queue = {.topic = topic, .receipt = receipt}};
    return nd_submit(n, &call);
}
