/*
 * queue_log.c: the queue's records. Every state change appends one to the
 * journal the caller set (q_set_journal); a store keeps them (the local
 * append-only file as they are, Redis as the commands they name) and
 * q_apply replays them on start or on a node taking a topic over.
 *
 * A record, all integers little-endian:
 *
 *   u32 size      bytes after this field, the checksum included
 *   u8  version   1
 *   u8  kind
 *   u16 n, n bytes  topic name
 *   ...           the kind's fields:
 *     1 TOPIC        u64 nonce                  a topic is created
 *     2 ENQUEUE      u64 id, u32 len, len bytes a message is added
 *     3 CONSUME      u64 deadline, u32 n, n x u64 id
 *                                               the n smallest ready ids, in
 *                                               order, go in flight until
 *                                               deadline, one more delivery each
 *     4 ACK          u64 id                     an in-flight message is deleted
 *     5 REQUEUE      u64 id                     a lease ended; ready again
 *     6 DEAD_LETTER  u64 id, u64 dlq_id         a lease ended; the message moves
 *                                               to "<topic>.dlq" as dlq_id
 *   u32 crc       CRC-32C of everything before it, from size on
 *
 * Overhead per record: 12 bytes plus the topic name. Records say what
 * happened, not what was asked: a consume that found nothing writes none,
 * and the requeues a tick makes are records of their own, so replay needs
 * neither the clock nor the config. q_apply accepts a record only if it
 * follows from the state it is applied to (ids, order, counts), so a
 * replay either gives back the state that wrote the records or stops.
 */
#include "queue_internal.h"

#define REC_VERSION 1u

enum {
    REC_TOPIC = 1,
    REC_ENQUEUE = 2,
    REC_CONSUME = 3,
    REC_ACK = 4,
    REC_REQUEUE = 5,
    REC_DEAD_LETTER = 6,
};

/* size, version, kind, name length and crc */
#define REC_FIXED (4 + 1 + 1 + 2 + 4)

/* ---- writing -------------------------------------------------------------- */

int qj_reserve(q_state *q, size_t n)
{
    return q->journal ? ut_buf_reserve(q->journal, n) : 0;
}

static size_t rec_size(const char *topic, size_t fields)
{
    return REC_FIXED + strlen(topic) + fields;
}

/* Starts a record of total bytes; returns where it starts. The space was
 * reserved, so no append below fails. */
static size_t rec_begin(ut_buf *b, size_t total, int kind, const char *topic)
{
    size_t start = b->len;
    ut_buf_put_le(b, total - 4, 4);
    ut_buf_put_le(b, REC_VERSION, 1);
    ut_buf_put_le(b, (uint64_t)kind, 1);
    ut_buf_put_str16(b, topic);
    return start;
}

static void rec_end(ut_buf *b, size_t start)
{
    ut_buf_put_le(b, ut_crc32c(0, b->data + start, b->len - start), 4);
}

size_t qj_topic_size(const q_topic *t)
{
    return rec_size(t->name, 8);
}

void qj_topic(q_state *q, const q_topic *t)
{
    if (!q->journal) return;
    size_t start = rec_begin(q->journal, qj_topic_size(t), REC_TOPIC, t->name);
    ut_buf_put_le(q->journal, t->nonce, 8);
    rec_end(q->journal, start);
}

size_t qj_enqueue_size(const char *topic, size_t len)
{
    return rec_size(topic, 8 + 4 + len);
}

void qj_enqueue(q_state *q, const q_topic *t, const q_msg *m)
{
    if (!q->journal) return;
    size_t len = q_msg_len(m);
    size_t start = rec_begin(q->journal, qj_enqueue_size(t->name, len), REC_ENQUEUE, t->name);
    ut_buf_put_le(q->journal, m->id, 8);
    ut_buf_put_le(q->journal, len, 4);
    ut_buf_append(q->journal, q_msg_body(m), len);
    rec_end(q->journal, start);
}

size_t qj_consume_size(const char *topic, size_t n)
{
    return rec_size(topic, 8 + 4 + 8 * n);
}

void qj_consume(q_state *q, const q_topic *t, uint64_t deadline, const q_delivery *out, size_t n)
{
    if (!q->journal) return;
    size_t start = rec_begin(q->journal, qj_consume_size(t->name, n), REC_CONSUME, t->name);
    ut_buf_put_le(q->journal, deadline, 8);
    ut_buf_put_le(q->journal, n, 4);
    for (size_t i = 0; i < n; i++)
        ut_buf_put_le(q->journal, out[i].id, 8);
    rec_end(q->journal, start);
}

size_t qj_id_size(const char *topic)
{
    return rec_size(topic, 8);
}

static void rec_id(q_state *q, const q_topic *t, int kind, uint64_t id)
{
    if (!q->journal) return;
    size_t start = rec_begin(q->journal, qj_id_size(t->name), kind, t->name);
    ut_buf_put_le(q->journal, id, 8);
    rec_end(q->journal, start);
}

void qj_ack(q_state *q, const q_topic *t, uint64_t id)
{
    rec_id(q, t, REC_ACK, id);
}

void qj_requeue(q_state *q, const q_topic *t, uint64_t id)
{
    rec_id(q, t, REC_REQUEUE, id);
}

size_t qj_dead_letter_size(const char *topic)
{
    return rec_size(topic, 16);
}

void qj_dead_letter(q_state *q, const q_topic *t, uint64_t id, uint64_t dlq_id)
{
    if (!q->journal) return;
    size_t start = rec_begin(q->journal, qj_dead_letter_size(t->name), REC_DEAD_LETTER, t->name);
    ut_buf_put_le(q->journal, id, 8);
    ut_buf_put_le(q->journal, dlq_id, 8);
    rec_end(q->journal, start);
}

/* ---- applying ------------------------------------------------------------- */

static int apply_topic(q_state *q, const char *name, ut_reader *r)
{
    uint64_t nonce = ut_read_le(r, 8);
    if (r->bad || r->left || q_topic_find(q, name)) return DSYNC_ECORRUPT;
    q_topic *t = q_topic_alloc(name, nonce);
    if (!t || q_topic_insert(q, t) != 0) {
        q_topic_free(t);
        return DSYNC_ENOMEM;
    }
    return 0;
}

static int apply_enqueue(q_topic *t, ut_reader *r)
{
    uint64_t id = ut_read_le(r, 8), len = ut_read_le(r, 4);
    if (r->bad || len > QS_MAX_BODY || r->left != len || id != t->next_id) return DSYNC_ECORRUPT;
    q_msg *m = q_msg_new(id, r->p, (size_t)len, 0, 0);
    if (!m) return DSYNC_ENOMEM;
    q_step_enqueue(t, m);
    return 0;
}

static int apply_consume(q_state *q, q_topic *t, ut_reader *r)
{
    uint64_t deadline = ut_read_le(r, 8), n = ut_read_le(r, 4);
    if (r->bad || n == 0 || n > t->n_ready || r->left != 8 * n || deadline == UINT64_MAX)
        return DSYNC_ECORRUPT;
    if (q_reserve_deliveries(q, t, (size_t)n) != 0) return DSYNC_ENOMEM;
    /* Take the n smallest ready ids and check them against the record; a
     * mismatch puts them all back. */
    q_msg *small[64], **popped = n <= 64 ? small : malloc((size_t)n * sizeof *popped);
    bool rsmall[64], *retried = n <= 64 ? rsmall : malloc((size_t)n);
    if (!popped || !retried) {
        if (popped != small) free(popped);
        if (retried != rsmall) free(retried);
        return DSYNC_ENOMEM;
    }
    size_t k = 0;
    bool ok = true;
    while (k < n && ok) {
        popped[k] = q_ready_pop(t, &retried[k]);
        ok = popped[k]->id == ut_read_le(r, 8);
        k++;
    }
    if (ok)
        for (size_t i = 0; i < k; i++)
            q_step_deliver(q, t, popped[i], deadline);
    else
        while (k-- > 0)
            q_ready_unpop(t, popped[k], retried[k]);
    if (popped != small) free(popped);
    if (retried != rsmall) free(retried);
    return ok ? 0 : DSYNC_ECORRUPT;
}

static int apply_end_lease(q_state *q, q_topic *t, int kind, ut_reader *r)
{
    uint64_t id = ut_read_le(r, 8), dlq_id = kind == REC_DEAD_LETTER ? ut_read_le(r, 8) : 0;
    q_msg *m = r->bad || r->left ? NULL : q_in_flight_find(t, id);
    if (!m) return DSYNC_ECORRUPT;
    if (kind == REC_ACK) {
        q_step_ack(q, t, m);
        return 0;
    }
    if (kind == REC_REQUEUE) return q_step_requeue(q, t, m);
    char name[QS_TOPIC_NAME_MAX + 1];
    if (t->is_dlq) return DSYNC_ECORRUPT;
    q_dlq_name(t, name);
    q_topic *dlq = q_topic_find(q, name);
    if (!dlq || dlq_id != dlq->next_id) return DSYNC_ECORRUPT;
    return q_step_dead_letter(q, t, m, dlq, NULL);
}

int q_record_topic(const void *data, size_t len, char *name, size_t *rec_len)
{
    const unsigned char *p = data;
    if (!p || len < 4) return DSYNC_ECORRUPT;
    uint64_t size = ut_get_le(p, 4);
    if (size < REC_FIXED - 4 || size > len - 4) return DSYNC_ECORRUPT;
    ut_reader r = {p + 4, (size_t)size - 4, false};
    unsigned version = (unsigned)ut_read_le(&r, 1);
    (void)ut_read_le(&r, 1);
    ut_read_str16(&r, name, QS_TOPIC_NAME_MAX);
    if (r.bad || version != REC_VERSION || !q_name_valid(name, strlen(name)))
        return DSYNC_ECORRUPT;
    *rec_len = 4 + (size_t)size;
    return 0;
}

int q_apply(q_state *q, const void *data, size_t len, size_t *used)
{
    const unsigned char *p = data;
    if (used) *used = 0;
    if (!q || !p || len < 4) return DSYNC_ECORRUPT;
    uint64_t size = ut_get_le(p, 4);
    if (size < REC_FIXED - 4 || size > len - 4) return DSYNC_ECORRUPT;
    size_t total = 4 + (size_t)size;
    if (ut_crc32c(0, p, total - 4) != (uint32_t)ut_get_le(p + total - 4, 4)) return DSYNC_ECORRUPT;
    ut_reader r = {p + 4, total - 8, false};
    unsigned version = (unsigned)ut_read_le(&r, 1), kind = (unsigned)ut_read_le(&r, 1);
    char name[QS_TOPIC_NAME_MAX + 1];
    ut_read_str16(&r, name, QS_TOPIC_NAME_MAX);
    if (r.bad || version != REC_VERSION || !q_name_valid(name, strlen(name))) return DSYNC_ECORRUPT;
    int rc;
    q_topic *t = q_topic_find(q, name);
    if (kind == REC_TOPIC)
        rc = apply_topic(q, name, &r);
    else if (!t)
        rc = DSYNC_ECORRUPT;
    else if (kind == REC_ENQUEUE)
        rc = apply_enqueue(t, &r);
    else if (kind == REC_CONSUME)
        rc = apply_consume(q, t, &r);
    else if (kind == REC_ACK || kind == REC_REQUEUE || kind == REC_DEAD_LETTER)
        rc = apply_end_lease(q, t, (int)kind, &r);
    else
        rc = DSYNC_ECORRUPT;
    if (rc == 0 && used) *used = total;
    return rc;
}

int q_apply_all(q_state *q, const void *data, size_t len, size_t *used)
{
    const unsigned char *p = data;
    size_t done = 0;
    int rc = 0;
    while (done < len) {
        size_t n;
        rc = q_apply(q, p + done, len - done, &n);
        if (rc != 0) break;
        done += n;
    }
    if (used) *used = done;
    return rc;
}
