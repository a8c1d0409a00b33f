/*
 * node_queue_forward.c: queue calls travelling to a topic's owner.
 *
 * A node that takes a call for another node's topic sends it to the owner
 * over the peer transport (ND_FRAME_QREQ) and waits for the answer
 * (ND_FRAME_QRESP), matched by request id and sender. Both directions are
 * checked field by field on arrival: a peer is never trusted.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "node_internal.h"

void nq_encode_result(ut_buf *b, const nq_op *op)
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
    bool ok = !r.bad && nq_topic_ok(op->topic);
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
        nq_op_free(op);
        return;
    }
    /* Placement may have moved while it travelled: only the owner serves. */
    if (nq_owner_of(n, op->topic) != n->cfg.node_id || (n->net && !nd_is_member(n, n->cfg.node_id))) {
        op->rc = DSYNC_EUNAVAILABLE;
        nq_finish(n, op);
        return;
    }
    nq_execute(n, op);
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
            nq_free_msgs(msgs, msgs ? got : 0);
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

void nq_forward(dsync_node *n, nd_call *call, nq_op *op, uint64_t owner)
{
    /* The transport refuses a frame to a peer it is not connected to:
     * then 503 at once, not after the timeout. */
    ut_buf b;
    ut_buf_init(&b);
    call->read_ctx = ++n->next_read;
    encode_request(&b, call->read_ctx, op);
    int rc = b.oom ? DSYNC_ENOMEM : nt_send(n->net, owner, ND_FRAME_QREQ, b.data, b.len);
    ut_buf_free(&b);
    op->call = NULL;
    uint64_t wait = op->wait_ms;
    nq_op_free(op);
    if (rc != 0) {
        nd_complete(call, rc == DSYNC_ENOMEM ? rc : DSYNC_EUNAVAILABLE);
        return;
    }
    call->deadline_ms = ut_now_ms() + ND_COMMIT_TIMEOUT_MS + wait;
    call->read_index = owner; /* only its answer counts */
    call->next = n->q_waiting;
    n->q_waiting = call;
}
