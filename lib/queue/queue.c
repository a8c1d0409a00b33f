/*
 * queue.c: the queue state machine's calls and the transitions under them.
 *
 * See queue.h for the rules. Each call checks its arguments, catches up
 * with the clock (q_tick), reserves everything its change needs (memory
 * and journal space), and only then changes the state, so a failure never
 * leaves half a change. The transitions (q_step_*) are shared with
 * q_apply, which replays the same changes from records.
 */
#include "queue_internal.h"

/* ---- names and receipts --------------------------------------------------- */

#define SUFFIX_LEN (sizeof QS_DLQ_SUFFIX - 1)
#define NONCE_SEED 0x71756575656e6f6eULL /* "queuenon" */

static bool plain_name_valid(const char *name, size_t len)
{
    if (len < 1 || len > QS_TOPIC_MAX) return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e) return false;
    return true;
}

static bool has_dlq_suffix(const char *name, size_t len)
{
    return len > SUFFIX_LEN && memcmp(name + len - SUFFIX_LEN, QS_DLQ_SUFFIX, SUFFIX_LEN) == 0;
}

bool q_name_is_dlq(const char *name)
{
    return has_dlq_suffix(name, strlen(name));
}

/* A name ending in ".dlq" is always a dead-letter topic, and its topic's
 * name does not end so itself: "t.dlq.dlq" would be both t's dead letters'
 * dead letters and a topic of its own placed elsewhere. */
bool q_name_valid(const char *name, size_t len)
{
    if (!has_dlq_suffix(name, len)) return plain_name_valid(name, len);
    size_t base = len - SUFFIX_LEN;
    return plain_name_valid(name, base) && !has_dlq_suffix(name, base);
}

int q_check_topic_name(const char *name)
{
    if (!name) return DSYNC_EINVAL;
    return q_name_valid(name, strnlen(name, QS_TOPIC_NAME_MAX + 1)) ? 0 : DSYNC_EINVAL;
}

static int check_consumer(const char *id)
{
    if (!id) return DSYNC_EINVAL;
    size_t len = strnlen(id, QS_CONSUMER_MAX + 1);
    return plain_name_valid(id, len) && len <= QS_CONSUMER_MAX ? 0 : DSYNC_EINVAL;
}

void q_dlq_name(const q_topic *t, char *out)
{
    size_t len = strlen(t->name);
    memcpy(out, t->name, len);
    memcpy(out + len, QS_DLQ_SUFFIX, SUFFIX_LEN + 1);
}

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

static void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = ROTL(v[1], 13);
    v[1] ^= v[0];
    v[0] = ROTL(v[0], 32);
    v[2] += v[3];
    v[3] = ROTL(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = ROTL(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = ROTL(v[1], 17);
    v[1] ^= v[2];
    v[2] = ROTL(v[2], 32);
}

/* SipHash-2-4 (Aumasson and Bernstein, 2012) of the 16 bytes m0, m1 (each
 * little-endian) under the key (k0, k1). */
static uint64_t siphash_2x64(uint64_t k0, uint64_t k1, uint64_t m0, uint64_t m1)
{
    uint64_t v[4] = {k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL,
                     k0 ^ 0x6c7967656e657261ULL, k1 ^ 0x7465646279746573ULL};
    const uint64_t m[3] = {m0, m1, 16ULL << 56}; /* the last block holds the length */
    for (int i = 0; i < 3; i++) {
        v[3] ^= m[i];
        sip_round(v);
        sip_round(v);
        v[0] ^= m[i];
    }
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++)
        sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

static uint64_t receipt_tag(const q_topic *t, uint64_t id, uint32_t deliveries)
{
    return siphash_2x64(t->nonce, ut_mix64(t->nonce ^ NONCE_SEED), id, deliveries);
}

void q_receipt_format(const q_receipt *r, char out[QS_RECEIPT_STRLEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[i] = hex[(r->id >> (60 - 4 * i)) & 15];
        out[16 + i] = hex[(r->tag >> (60 - 4 * i)) & 15];
    }
    out[QS_RECEIPT_STRLEN] = '\0';
}

int q_receipt_parse(const char *s, q_receipt *r)
{
    if (!s || !r) return DSYNC_EINVAL;
    uint64_t v[2] = {0, 0};
    for (int i = 0; i < QS_RECEIPT_STRLEN; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return DSYNC_EINVAL; /* also stops at a short string's NUL */
        v[i / 16] = v[i / 16] << 4 | (uint64_t)d;
    }
    if (s[QS_RECEIPT_STRLEN] != '\0') return DSYNC_EINVAL;
    r->id = v[0];
    r->tag = v[1];
    return 0;
}

/* ---- messages ------------------------------------------------------------- */

q_msg *q_msg_new(uint64_t id, const void *body, size_t len, uint64_t origin_id,
                 uint32_t origin_deliveries)
{
    size_t extra = origin_id ? Q_ORIGIN_BYTES : 0;
    q_msg *m = malloc(sizeof *m + extra + len);
    if (!m) return NULL;
    m->id = id;
    m->link.next = NULL;
    m->deliveries = 0;
    m->len = (uint32_t)len | (origin_id ? Q_MSG_ORIGIN : 0);
    if (origin_id) {
        ut_put_le(m->data, origin_id, 8);
        ut_put_le(m->data + 8, origin_deliveries, 4);
        memset(m->data + 12, 0, 4);
    }
    if (len) memcpy(m->data + extra, body, len);
    return m;
}

void q_msg_origin(const q_msg *m, uint64_t *id, uint32_t *deliveries)
{
    bool has = m->len & Q_MSG_ORIGIN;
    *id = has ? ut_get_le(m->data, 8) : 0;
    *deliveries = has ? (uint32_t)ut_get_le(m->data + 8, 4) : 0;
}

/* ---- topics --------------------------------------------------------------- */

q_topic *q_topic_find(const q_state *q, const char *name)
{
    return ut_map_get(&q->topics, name);
}

uint64_t q_topic_nonce(const q_state *q, const char *name)
{
    return ut_mix64(q->nonce ^ ut_hash64(name, strlen(name), NONCE_SEED));
}

q_topic *q_topic_alloc(const char *name, uint64_t nonce)
{
    q_topic *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->name = ut_strdup(name);
    if (!t->name) {
        free(t);
        return NULL;
    }
    t->is_dlq = has_dlq_suffix(name, strlen(name));
    t->nonce = nonce;
    t->next_id = 1;
    return t;
}

void q_topic_free(q_topic *t)
{
    if (!t) return;
    for (q_msg *m = t->fresh_head, *next; m; m = next) {
        next = m->link.next;
        free(m);
    }
    for (size_t i = 0; i < t->retry_n; i++)
        free(t->retry[i]);
    for (size_t i = 0; i < t->in_flight.cap; i++)
        free(t->in_flight.slots[i]);
    free(t->retry);
    free(t->in_flight.slots);
    free(t->name);
    free(t);
}

int q_topic_insert(q_state *q, q_topic *t)
{
    return ut_map_put(&q->topics, t->name, t);
}

/* ---- transitions ---------------------------------------------------------- */

void q_step_enqueue(q_topic *t, q_msg *m)
{
    m->id = t->next_id++;
    q_ready_append(t, m);
    t->enqueued++;
}

int q_reserve_deliveries(q_state *q, q_topic *t, size_t n)
{
    if (q_heap_reserve(q, n) != 0) return DSYNC_ENOMEM;
    return q_idmap_reserve(&t->in_flight, n);
}

void q_step_deliver(q_state *q, q_topic *t, q_msg *m, uint64_t deadline)
{
    if (m->deliveries < UINT32_MAX) m->deliveries++;
    q_heap_push(q, (q_lease){deadline, m, t});
    q_idmap_put(&t->in_flight, m);
    t->consumed++;
    q_retry_trim(t);
}

/* Takes in-flight m out of the heap and t's table. */
static void end_lease(q_state *q, q_topic *t, q_msg *m)
{
    q_heap_remove(q, m->link.heap_idx);
    q_idmap_del(&t->in_flight, m->id);
}

void q_step_ack(q_state *q, q_topic *t, q_msg *m)
{
    end_lease(q, t, m);
    free(m);
    t->acked++;
}

int q_step_requeue(q_state *q, q_topic *t, q_msg *m)
{
    if (q_retry_reserve(t, 1) != 0) return DSYNC_ENOMEM;
    end_lease(q, t, m);
    q_retry_push(t, m);
    t->n_ready++;
    t->requeued++;
    return 0;
}

int q_step_dead_letter(q_state *q, q_topic *t, q_msg *m, q_topic *dlq, q_msg **moved)
{
    q_msg *n = q_msg_new(0, q_msg_body(m), q_msg_len(m), m->id, m->deliveries);
    if (!n) return DSYNC_ENOMEM;
    end_lease(q, t, m);
    free(m);
    t->dead_lettered++;
    q_step_enqueue(dlq, n);
    if (moved) *moved = n;
    return 0;
}

/* ---- life cycle ----------------------------------------------------------- */

q_state *q_new(const q_config *cfg)
{
    q_state *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    ut_map_init(&q->topics);
    q->nonce = cfg ? cfg->nonce : 0;
    q->max_deliveries =
        cfg && cfg->max_deliveries ? cfg->max_deliveries : QS_DEFAULT_MAX_DELIVERIES;
    return q;
}

void q_free(q_state *q)
{
    if (!q) return;
    void *v;
    for (size_t it = 0; ut_map_next(&q->topics, &it, NULL, &v);)
        q_topic_free(v);
    ut_map_close(&q->topics);
    free(q->heap);
    free(q);
}

void q_set_listener(q_state *q, q_event_fn fn, void *ctx)
{
    q->listener = fn;
    q->listener_ctx = ctx;
}

void q_set_journal(q_state *q, ut_buf *journal)
{
    q->journal = journal;
}

/* ---- expiry --------------------------------------------------------------- */

static int expire_requeue(q_state *q, q_topic *t, q_msg *m)
{
    if (qj_reserve(q, qj_id_size(t->name)) != 0) return DSYNC_ENOMEM;
    int rc = q_step_requeue(q, t, m);
    if (rc != 0) return rc;
    qj_requeue(q, t, m->id);
    if (q->listener) {
        q_event ev = {Q_EV_REQUEUED, t->name, m->id, m->deliveries, NULL, 0};
        q->listener(q->listener_ctx, &ev);
    }
    return 0;
}

static int expire_dead_letter(q_state *q, q_topic *t, q_msg *m)
{
    char name[QS_TOPIC_NAME_MAX + 1];
    q_dlq_name(t, name);
    q_topic *dlq = q_topic_find(q, name);
    bool created = !dlq;
    if (created && !(dlq = q_topic_alloc(name, q_topic_nonce(q, name)))) return DSYNC_ENOMEM;
    size_t need = qj_dead_letter_size(t->name) + (created ? qj_topic_size(dlq) : 0);
    if (qj_reserve(q, need) != 0 || (created && q_topic_insert(q, dlq) != 0)) {
        if (created) q_topic_free(dlq);
        return DSYNC_ENOMEM;
    }
    if (created) qj_topic(q, dlq);
    uint64_t id = m->id;
    uint32_t deliveries = m->deliveries;
    q_msg *moved;
    /* On failure here the new topic stays, journaled: a consistent state. */
    int rc = q_step_dead_letter(q, t, m, dlq, &moved);
    if (rc != 0) return rc;
    qj_dead_letter(q, t, id, moved->id);
    if (q->listener) {
        q_event ev = {Q_EV_DEAD_LETTERED, t->name, id, deliveries, dlq->name, moved->id};
        q->listener(q->listener_ctx, &ev);
    }
    return 0;
}

int q_tick(q_state *q, uint64_t now_ms, size_t *expired)
{
    size_t n = 0;
    int rc = 0;
    while (q->heap_n && q->heap[0].deadline <= now_ms) {
        q_lease l = q->heap[0];
        if (!l.topic->is_dlq && l.msg->deliveries >= q->max_deliveries)
            rc = expire_dead_letter(q, l.topic, l.msg);
        else
            rc = expire_requeue(q, l.topic, l.msg);
        if (rc != 0) break;
        n++;
    }
    if (expired) *expired = n;
    return rc;
}

/* ---- enqueue, consume, ack ------------------------------------------------ */

int q_enqueue(q_state *q, const char *topic, const void *body, size_t len, uint64_t now_ms,
              uint64_t *id)
{
    if (!q || !id || q_check_topic_name(topic) != 0 || (!body && len)) return DSYNC_EINVAL;
    if (len > QS_MAX_BODY) return DSYNC_ETOOBIG;
    int rc = q_tick(q, now_ms, NULL);
    if (rc != 0) return rc;
    q_topic *t = q_topic_find(q, topic);
    bool created = !t;
    q_msg *m = q_msg_new(0, body, len, 0, 0);
    if (!m) return DSYNC_ENOMEM;
    if (created && !(t = q_topic_alloc(topic, q_topic_nonce(q, topic)))) {
        free(m);
        return DSYNC_ENOMEM;
    }
    size_t need = qj_enqueue_size(topic, len) + (created ? qj_topic_size(t) : 0);
    if (qj_reserve(q, need) != 0 || (created && q_topic_insert(q, t) != 0)) {
        free(m);
        if (created) q_topic_free(t);
        return DSYNC_ENOMEM;
    }
    if (created) qj_topic(q, t);
    q_step_enqueue(t, m);
    qj_enqueue(q, t, m);
    *id = m->id;
    return 0;
}

int q_consume(q_state *q, const char *topic, const char *consumer_id, size_t max,
              uint64_t visibility_ms, uint64_t now_ms, q_delivery *out, size_t *n)
{
    if (n) *n = 0;
    if (!q || !out || !n || max == 0 || q_check_topic_name(topic) != 0 ||
        check_consumer(consumer_id) != 0 || visibility_ms == 0 ||
        visibility_ms > QS_MAX_VISIBILITY_MS)
        return DSYNC_EINVAL;
    int rc = q_tick(q, now_ms, NULL);
    if (rc != 0) return rc;
    q_topic *t = q_topic_find(q, topic);
    if (!t || t->n_ready == 0) return 0;
    size_t k = t->n_ready < max ? (size_t)t->n_ready : max;
    if (q_reserve_deliveries(q, t, k) != 0 || qj_reserve(q, qj_consume_size(t->name, k)) != 0)
        return DSYNC_ENOMEM;
    /* UINT64_MAX means "no deadline" to q_next_deadline. */
    uint64_t deadline =
        now_ms < UINT64_MAX - 1 - visibility_ms ? now_ms + visibility_ms : UINT64_MAX - 1;
    for (size_t i = 0; i < k; i++) {
        bool retried;
        q_msg *m = q_ready_pop(t, &retried);
        q_step_deliver(q, t, m, deadline);
        q_delivery *d = &out[i];
        d->id = m->id;
        d->deliveries = m->deliveries;
        d->receipt.id = m->id;
        d->receipt.tag = receipt_tag(t, m->id, m->deliveries);
        d->visibility_deadline = deadline;
        d->body = q_msg_body(m);
        d->len = q_msg_len(m);
        q_msg_origin(m, &d->origin_id, &d->origin_deliveries);
    }
    qj_consume(q, t, deadline, out, k);
    *n = k;
    return 0;
}

int q_ack(q_state *q, const char *topic, const q_receipt *receipt, uint64_t now_ms)
{
    if (!q || !receipt || q_check_topic_name(topic) != 0) return DSYNC_EINVAL;
    /* After the tick every lease left has deadline > now_ms: a receipt whose
     * lease ended finds its message ready again (or dead-lettered). */
    int rc = q_tick(q, now_ms, NULL);
    if (rc != 0) return rc;
    q_topic *t = q_topic_find(q, topic);
    q_msg *m = t ? q_in_flight_find(t, receipt->id) : NULL;
    if (!m || receipt_tag(t, m->id, m->deliveries) != receipt->tag) return DSYNC_ENOTFOUND;
    if (qj_reserve(q, qj_id_size(t->name)) != 0) return DSYNC_ENOMEM;
    uint64_t id = m->id;
    q_step_ack(q, t, m);
    qj_ack(q, t, id);
    return 0;
}

/* ---- figures -------------------------------------------------------------- */

bool q_has_ready(const q_state *q, const char *topic)
{
    if (q_check_topic_name(topic) != 0) return false;
    const q_topic *t = q_topic_find(q, topic);
    return t && t->n_ready > 0;
}

static void fill_stats(const q_topic *t, q_topic_stats *st)
{
    st->name = t->name;
    st->depth = t->n_ready;
    st->in_flight = t->in_flight.count;
    st->next_id = t->next_id;
    st->enqueued = t->enqueued;
    st->consumed = t->consumed;
    st->acked = t->acked;
    st->requeued = t->requeued;
    st->dead_lettered = t->dead_lettered;
}

int q_topic_stats_get(const q_state *q, const char *topic, q_topic_stats *st)
{
    if (q_check_topic_name(topic) != 0) return DSYNC_ENOTFOUND;
    const q_topic *t = q_topic_find(q, topic);
    if (!t) return DSYNC_ENOTFOUND;
    fill_stats(t, st);
    return 0;
}

bool q_topic_next(const q_state *q, size_t *iter, q_topic_stats *st)
{
    void *v;
    if (!ut_map_next(&q->topics, iter, NULL, &v)) return false;
    fill_stats(v, st);
    return true;
}

void q_counts(const q_state *q, size_t *topics, uint64_t *ready, uint64_t *in_flight)
{
    uint64_t r = 0;
    void *v;
    for (size_t it = 0; ut_map_next(&q->topics, &it, NULL, &v);)
        r += ((const q_topic *)v)->n_ready;
    if (topics) *topics = q->topics.count;
    if (ready) *ready = r;
    if (in_flight) *in_flight = q->heap_n;
}
