/*
 * node_queue.c: the queue service inside the node loop.
 *
 * Each topic has one owner, the member the consistent-hash ring
 * (lib/queue/ring) places it on; the owner keeps the topic in its queue
 * state machine (lib/queue) and makes every change durable before it
 * answers: group commit, flushes of its local append-only file
 * (lib/store/aof) on a writer thread, or pipelined Redis flushes
 * (node_queue_redis.c); either way one in flight while the next fills.
 * Any node takes any call: when the topic is another node's, the call
 * travels to the owner (node_queue_forward.c).
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
 *    failure detector last committed through the log (fsm.h), and a dead
 *    owner's topics move to the next live node (node_queue_redis.c).
 *
 * A node outside the configuration (joining, removed) refuses queue calls.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "node_internal.h"

#define NQ_DEFAULT_MAX 1

bool nq_topic_ok(const char *t)
{
    return t && strnlen(t, QS_TOPIC_NAME_MAX + 1) <= QS_TOPIC_NAME_MAX &&
           q_check_topic_name(t) == 0;
}

void nq_free_msgs(dsync_queue_msg *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(m[i].body);
    free(m);
}

void dsync_queue_msgs_free(dsync_queue_msg *msgs, size_t n)
{
    nq_free_msgs(msgs, n);
}

void nq_op_free(nq_op *op)
{
    free(op->body);
    nq_free_msgs(op->msgs, op->n_msgs);
    free(op);
}

/* The owner of topic: the member the ring places it on. A dead-letter
 * topic "<t>.dlq" lives where <t> does, since its messages come from
 * there. 0 when there is none (no ring). */
bool nq_redis_mode(const dsync_node *n)
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

void nq_base_of(const char *topic, char base[QS_TOPIC_NAME_MAX + 1])
{
    size_t len = base_len(topic);
    memcpy(base, topic, len);
    base[len] = '\0';
}

uint64_t nq_owner_of(const dsync_node *n, const char *topic)
{
    if (nq_redis_mode(n)) /* no view committed yet: nobody owns anything */
        return n->ring && n->fsm.view_index ? qr_owner(n->ring, topic, base_len(topic)) : 0;
    if (!n->net || n->n_voters <= 1) return n->cfg.node_id;
    return n->ring ? qr_owner(n->ring, topic, base_len(topic)) : 0;
}

/* The ring over ids. Out of memory leaves no ring at all (nothing is owned
 * here, calls answer 503): neither a partial ring nor the old one would
 * agree with the other nodes' at this view's epoch. */
void nq_build_ring(dsync_node *n, const uint64_t *ids, size_t count)
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
    if (!nq_redis_mode(n)) nq_build_ring(n, n->voters, n->n_voters);
}

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
    qm->adopted = dsync_metric_series0(dsync_metrics_counter(
        m, "queue_units_adopted_total",
        "Topics in Redis claimed by this node because a view placed them here.", NULL));
    qm->adopting = dsync_metric_series0(dsync_metrics_gauge(
        m, "queue_adoption_pending",
        "1 while this node is still claiming the topics in Redis its view placed here.", NULL));
    if (nq_redis_mode(n)) dsync_series_set(qm->adopting, 1); /* none claimed before the first view */
}

void nq_topic_gauges(dsync_node *n, const char *topic)
{
    q_topic_stats st;
    if (q_topic_stats_get(n->queue, topic, &st) != 0) return;
    dsync_series_set(dsync_metric_series1(n->qm.depth, topic), (double)st.depth);
    dsync_series_set(dsync_metric_series1(n->qm.in_flight, topic), (double)st.in_flight);
}

void nq_broke(dsync_node *n, const char *what)
{
    if (!n->queue_broken)
        ut_log(&n->log, DSYNC_LOG_ERROR, "%s failed: queue writes refused until restart", what);
    n->queue_broken = true;
}

/* What a call changed goes to the file as one record, in order. If it
 * cannot, memory and file would part ways: stop taking queue writes. */
static int journal_out(dsync_node *n)
{
    if (n->journal.oom) {
        ut_buf_free(&n->journal); /* the journal's contract after an OOM */
        nq_broke(n, "recording a queue change");
        return DSYNC_ENOMEM;
    }
    if (!n->journal.len) return 0;
    if (nq_redis_mode(n)) { /* failures are per unit, told at the flush */
        nq_journal_to_redis(n);
        n->journal.len = 0;
        return 0;
    }
    int rc = n->aof ? aof_append(n->aof, n->journal.data, n->journal.len) : 0;
    n->journal.len = 0;
    if (rc != 0) nq_broke(n, "appending to the queue file");
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
 * backlog is not rewritten on every turn. The snapshot is taken here; its
 * write and fsync, a second or more for a large queue, run in the
 * background (aof_rewrite_start), as this loop also sends Raft's
 * heartbeats; each turn looks whether it is done and installs it. */
static void maybe_rewrite(dsync_node *n)
{
    if (!n->aof || n->queue_broken) return;
    if (aof_rewriting(n->aof)) {
        int rc = aof_rewrite_poll(n->aof);
        aof_stats st;
        aof_get_stats(n->aof, &st);
        if (st.broken)
            nq_broke(n, "rewriting the queue file");
        else if (rc == 1)
            n->aof_rewritten_size = aof_size(n->aof);
        else if (rc < 0) { /* before the rename: the old file carries on; try again later */
            n->aof_rewritten_size = aof_size(n->aof);
            ut_log(&n->log, DSYNC_LOG_WARN,
                   "queue: rewriting the queue file gave up (%s); tried again at %" PRIu64
                   " bytes",
                   rc == DSYNC_ETOOBIG ? "over 32 MiB appended while the snapshot was written"
                                       : dsync_strerror(rc),
                   2 * n->aof_rewritten_size);
        }
        return;
    }
    uint64_t size = aof_size(n->aof);
    if (size < n->cfg.queue_rewrite_bytes || size < 2 * n->aof_rewritten_size) return;
    if (journal_out(n) != 0) return; /* the snapshot must not hold changes the file lacks */
    ut_buf b;
    ut_buf_init(&b);
    int rc = q_snapshot(n->queue, &b);
    if (rc != 0) {
        ut_buf_free(&b);
        n->aof_rewritten_size = size;
        return;
    }
    rc = aof_rewrite_start(n->aof, b.data, b.len); /* takes b's bytes */
    if (rc != 0) n->aof_rewritten_size = size;
}

/* Gives the caller (here or on a peer) the result, and frees op. */
void nq_finish(dsync_node *n, nq_op *op)
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
        nq_encode_result(&b, op);
        if (!b.oom) nt_send(n->net, op->from, ND_FRAME_QRESP, b.data, b.len);
        ut_buf_free(&b);
    }
    nq_op_free(op);
}

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
    bool wait = op->rc == 0 && count == 0 && op->wait_ms && now < op->deadline_ms;
    /* Copied before the records go out: a unit that cannot take them is
     * dropped from memory, and d's bodies with it. */
    if (op->rc == 0 && !wait) take_deliveries(op, d, count, now);
    /* Its tick may have requeued or dead-lettered: out with those records
     * now, before any snapshot is taken, parked or not. */
    if (journal_out(n) != 0 && op->rc == 0 && count) nq_fail_op(op, DSYNC_EIO);
    if (wait) return false;
    if (op->rc == 0) {
        dsync_series_add(dsync_metric_series1(n->qm.consumed, op->topic), (double)count);
        nq_topic_gauges(n, op->topic);
    }
    return true;
}

/* Durable before answered: the call waits for the fsync, or the Redis
 * flush, that carries its records. */
static void answer_after_sync(dsync_node *n, nq_op *op)
{
    op->next = n->q_durable;
    n->q_durable = op;
    if (journal_out(n) != 0 && op->rc == 0) nq_fail_op(op, DSYNC_EIO);
    /* Filing its records (here, or in try_consume) may have failed its
     * unit in Redis: dropped, with them. */
    if (nq_redis_mode(n) && op->rc == 0 && !nq_unit_claimed(n, op->topic))
        nq_fail_op(op, DSYNC_EUNAVAILABLE);
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

void nq_execute(dsync_node *n, nq_op *op)
{
    uint64_t now = ut_wall_ms();
    if (n->queue_broken) {
        op->rc = DSYNC_EIO;
        nq_finish(n, op);
        return;
    }
    if (nq_redis_mode(n) && (op->rc = nq_claim_unit(n, op->topic)) != 0) {
        nq_finish(n, op);
        return;
    }
    switch (op->kind) {
    case ND_CALL_Q_ENQUEUE:
        op->rc = q_enqueue(n->queue, op->topic, op->body, op->len, now, &op->id);
        if (op->rc == 0) {
            dsync_series_add(dsync_metric_series1(n->qm.enqueued, op->topic), 1);
            nq_topic_gauges(n, op->topic);
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
            nq_topic_gauges(n, op->topic);
        }
        answer_after_sync(n, op);
        return;
    default:
        op->rc = DSYNC_EINVAL;
        nq_finish(n, op);
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
    /* A lease ran out in a tick, with no call on the topic to update them. */
    nq_topic_gauges(n, ev->topic);
    if (ev->kind == Q_EV_REQUEUED) {
        dsync_series_add(dsync_metric_series1(n->qm.requeued, ev->topic), 1);
    } else {
        nq_topic_gauges(n, ev->dlq_topic);
        dsync_series_add(dsync_metric_series1(n->qm.dead_lettered, ev->topic), 1);
        ut_log(&n->log, DSYNC_LOG_WARN, "message %" PRIu64 " of %s dead-lettered to %s", ev->id,
               ev->topic, ev->dlq_topic);
    }
}

/* Answers a call before its op went anywhere. */
static void refuse(nd_call *call, nq_op *op, int rc)
{
    op->call = NULL;
    nq_op_free(op);
    nd_complete(call, rc);
}

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
    if (!nq_topic_ok(topic)) rc = DSYNC_EINVAL;
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
        refuse(call, op, rc);
        return;
    }
    /* A node outside the configuration (joining, removed) has no say in
     * where topics live. */
    uint64_t owner = n->net && !nd_is_member(n, n->cfg.node_id) ? 0 : nq_owner_of(n, op->topic);
    if (owner == 0) {
        refuse(call, op, DSYNC_EUNAVAILABLE);
        return;
    }
    if (owner == n->cfg.node_id) {
        nq_execute(n, op);
        return;
    }
    nq_forward(n, call, op, owner);
}

static int cmp_topic_info(const void *a, const void *b)
{
    return strcmp(((const dsync_topic_info *)a)->name, ((const dsync_topic_info *)b)->name);
}

void nd_queue_state(dsync_node *n, nd_call *call)
{
    dsync_queue_state *st = call->u.queue.state;
    const char *topic = call->u.queue.topic;
    memset(st, 0, sizeof *st);
    if (topic && !nq_topic_ok(topic)) {
        nd_complete(call, DSYNC_EINVAL);
        return;
    }
    st->store = nq_redis_mode(n) ? "redis" : n->aof ? "file" : "memory";
    st->view_epoch = n->fsm.view_epoch;
    if (nq_redis_mode(n)) {
        for (size_t i = 0; i < n->fsm.n_live && i < 64; i++)
            st->owners[st->n_owners++] = n->fsm.live[i];
    } else if (!n->net) {
        st->owners[st->n_owners++] = n->cfg.node_id;
    } else {
        for (size_t i = 0; i < n->n_voters && i < 64; i++)
            st->owners[st->n_owners++] = n->voters[i];
    }
    if (topic) st->topic_owner = n->net && !nd_is_member(n, n->cfg.node_id) ? 0 : nq_owner_of(n, topic);
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

void nq_fail_op(nq_op *op, int rc)
{
    nq_free_msgs(op->msgs, op->n_msgs);
    op->msgs = NULL;
    op->n_msgs = 0;
    op->rc = rc;
}

void nq_answer_all(dsync_node *n, nq_op *list, int rc)
{
    while (list) {
        nq_op *op = list;
        list = op->next;
        op->next = NULL;
        if (rc != 0) nq_fail_op(op, rc);
        nq_finish(n, op);
    }
}

/* ---- the local file: its flushes on a writer thread ---------------------------
 *
 * The write and fdatasync of a turn's records run on n->q_writer, as the
 * Raft log's do (node_log.c): an fdatasync that stalls for a second would
 * otherwise stall this loop, which also answers lock calls and sends Raft's
 * heartbeats. One flush is out at a time; the calls of the turns meanwhile
 * wait in q_durable and their records in the file's buffer, and leave
 * together as soon as it lands (group commit, the batch as large as the
 * disk is slow). A call that wrote no record is answered once nothing is
 * out: what it saw is durable then. */

static int file_flush_job(void *arg)
{
    dsync_node *n = arg;
    uint32_t delay = atomic_load_explicit(&n->q_fsync_delay_ms, memory_order_relaxed);
    if (delay) {
        struct timespec ts = {(time_t)(delay / 1000), (long)(delay % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    return aof_flush_run(&n->q_flush);
}

/* The flush out, once it has ended (block: waits for it): its calls
 * answered, or failed with the store if the disk failed. */
static void file_land(dsync_node *n, bool block)
{
    int rc;
    uint64_t took;
    if (block) nd_writer_wait(&n->q_writer);
    if (!nd_writer_reap(&n->q_writer, &rc, &took)) return;
    rc = aof_flush_end(n->aof, &n->q_flush, rc);
    dsync_series_observe(n->qm.fsync_seconds, (double)took / 1e9);
    if (rc != 0) nq_broke(n, "writing the queue file");
    nq_op *done = n->q_flying;
    n->q_flying = NULL;
    nq_answer_all(n, done, rc);
}

/* With nothing out: the waiting calls' records go to the writer, or the
 * calls are answered now when none are buffered (or there is no file). */
static void file_send(dsync_node *n)
{
    if (n->q_writer.busy || !n->q_durable) return;
    int rc = n->queue_broken ? DSYNC_EIO : 0;
    aof_stats st = {0};
    if (n->aof && rc == 0) aof_get_stats(n->aof, &st);
    if (st.pending) {
        rc = aof_flush_begin(n->aof, &n->q_flush);
        if (rc == 0) {
            n->q_flying = n->q_durable;
            n->q_durable = NULL;
            nd_writer_hand(&n->q_writer);
            return;
        }
        nq_broke(n, "writing the queue file");
    }
    nq_op *done = n->q_durable;
    n->q_durable = NULL;
    nq_answer_all(n, done, rc);
}

void nd_queue_flush(dsync_node *n)
{
    journal_out(n); /* nothing may stay behind a snapshot */
    if (nq_redis_mode(n)) {
        /* At most one flush in flight; this turn's records go with the
         * next, as soon as it has landed. */
        nq_redis_land(n, false);
        nq_redis_send(n); /* one that could not go out: landed next turn */
        return;
    }
    file_land(n, false);
    maybe_rewrite(n); /* every turn: one in the background may be done (not while a flush is out) */
    file_send(n);
}

uint64_t nd_queue_flight_deadline(const dsync_node *n)
{
    if (!nq_redis_mode(n) || !rl_in_flight(n->rl)) return UINT64_MAX;
    /* Read to the end by another call on the connection (the cache's, a
     * claim's): nothing will wake the loop for it, so at once. */
    if (rl_flush_fd(n->rl) < 0) return 0;
    return rl_flush_deadline_ms(n->rl);
}

uint64_t nd_queue_tick(dsync_node *n, uint64_t now_ms)
{
    uint64_t wall = ut_wall_ms();
    /* Caught up after a restart, or the claims of a view go on: then the
     * loop comes back at once, after its peers. */
    bool more = nq_redis_mode(n) && !n->q_adopted && nq_adopt_units(n);
    if (q_next_deadline(n->queue) <= wall && !n->queue_broken) {
        q_tick(n->queue, wall, NULL);
        journal_out(n);
    }
    uint64_t next = more ? now_ms : UINT64_MAX;
    if (n->q_ready_dirty || n->q_parked) {
        n->q_ready_dirty = false;
        uint64_t p = serve_parked(n, wall);
        uint64_t at = p == UINT64_MAX ? UINT64_MAX : now_ms + (p > wall ? p - wall : 0);
        if (at < next) next = at;
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
    ut_map_init(&n->q_adopt_tried);
    strcpy(n->q_adopt_cursor, "0");
    if (nq_redis_mode(n)) {
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
        ut_buf_init(&n->q_flush.data);
        if (rc == 0 && (rc = nd_writer_start(&n->q_writer, n, file_flush_job, n)) != 0) {
            snprintf(err, sizeof err, "cannot start its writer thread");
            aof_close(n->aof);
            n->aof = NULL;
        }
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
        nq_topic_gauges(n, st.name);
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
        nq_finish(n, op);
    }
    nd_queue_flush(n);
    if (nq_redis_mode(n)) {
        nq_redis_drain(n);
    } else { /* the flush out, then the calls that waited for it */
        file_land(n, true);
        file_send(n);
        file_land(n, true);
    }
    nd_writer_stop(&n->q_writer);
    ut_buf_free(&n->q_flush.data);
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
    ut_map_close(&n->q_adopt_tried);
    q_free(n->queue);
    n->queue = NULL;
    qr_free(n->ring);
    n->ring = NULL;
    ut_buf_free(&n->journal);
}

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

int dsync_node_delay_queue_fsync(dsync_node *n, uint32_t delay_ms)
{
    if (!n || !n->cfg.fault_injection || delay_ms > DSYNC_FAULT_DELAY_MAX_MS) return DSYNC_EINVAL;
    atomic_store_explicit(&n->q_fsync_delay_ms, delay_ms, memory_order_relaxed);
    ut_log(&n->log, DSYNC_LOG_WARN, "fault injection: queue file flushes delayed by %" PRIu32 " ms",
           delay_ms);
    return 0;
}
