/*
 * queue_snap.c: the queue state as one blob (q_snapshot, q_restore), a
 * topic's share of it for a handover (q_snapshot_topic, q_restore_topics),
 * and the invariant check the tests run.
 *
 * The snapshot, all integers little-endian:
 *
 *   u32 magic "QSNP" | u32 version 1 | u32 n_topics | topics | u32 crc
 *   topic (sorted by name, strictly):
 *     u16 n, n bytes name | u64 nonce | u64 next_id | u64 enqueued |
 *     u64 consumed | u64 acked | u64 requeued | u64 dead_lettered |
 *     u64 n_msgs | messages
 *   message (by id, strictly increasing, each < next_id):
 *     u64 id | u32 deliveries | u8 flags (1 in flight, 2 has origin) |
 *     [u64 deadline, if in flight] | [u64 origin id, u32 origin deliveries,
 *     if it has an origin: dead-letter topics only] | u32 len | len bytes
 *   crc: CRC-32C of everything before it.
 *
 * It is deterministic: equal states give equal bytes, which is how the
 * tests compare states. Restoring builds a new state beside the old one and
 * swaps it in only once all of it has been read and checked.
 */
#include <stdio.h>

#include "queue_internal.h"

#define SNAP_MAGIC 0x504e5351u /* "QSNP" */
#define SNAP_VERSION 1u
#define FLAG_IN_FLIGHT 1u
#define FLAG_ORIGIN 2u
/* Smallest encodings, to bound counts before looping on them. */
#define MIN_TOPIC (2 + 1 + 8 * 8)
#define MIN_MSG (8 + 4 + 1 + 4)
/* No history gets near it; a larger next_id would let ids wrap. */
#define MAX_NEXT_ID (1ull << 62)

typedef struct {
    const q_msg *msg;
    uint64_t deadline; /* UINT64_MAX when ready */
} snap_msg;

static int cmp_topic(const void *a, const void *b)
{
    return strcmp((*(q_topic *const *)a)->name, (*(q_topic *const *)b)->name);
}

static int cmp_msg(const void *a, const void *b)
{
    uint64_t x = ((const snap_msg *)a)->msg->id, y = ((const snap_msg *)b)->msg->id;
    return x < y ? -1 : x > y;
}

static int write_topic(const q_state *q, const q_topic *t, ut_buf *b)
{
    size_t n = (size_t)t->n_ready + t->in_flight.count, k = 0;
    snap_msg *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return DSYNC_ENOMEM;
    for (const q_msg *m = t->fresh_head; m; m = m->link.next)
        v[k++] = (snap_msg){m, UINT64_MAX};
    for (size_t i = 0; i < t->retry_n; i++)
        v[k++] = (snap_msg){t->retry[i], UINT64_MAX};
    for (size_t i = 0; i < t->in_flight.cap; i++) {
        const q_msg *m = t->in_flight.slots[i];
        if (m) v[k++] = (snap_msg){m, q->heap[m->link.heap_idx].deadline};
    }
    qsort(v, k, sizeof *v, cmp_msg);
    ut_buf_put_str16(b, t->name);
    const uint64_t fields[] = {t->nonce, t->next_id,  t->enqueued,      t->consumed,
                               t->acked, t->requeued, t->dead_lettered, (uint64_t)k};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        ut_buf_put_le(b, fields[i], 8);
    for (size_t i = 0; i < k && !b->oom; i++) {
        const q_msg *m = v[i].msg;
        bool origin = m->len & Q_MSG_ORIGIN;
        ut_buf_put_le(b, m->id, 8);
        ut_buf_put_le(b, m->deliveries, 4);
        ut_buf_put_le(
            b, (v[i].deadline != UINT64_MAX ? FLAG_IN_FLIGHT : 0) | (origin ? FLAG_ORIGIN : 0), 1);
        if (v[i].deadline != UINT64_MAX) ut_buf_put_le(b, v[i].deadline, 8);
        if (origin) ut_buf_append(b, m->data, 12);
        ut_buf_put_le(b, q_msg_len(m), 4);
        ut_buf_append(b, q_msg_body(m), q_msg_len(m));
    }
    free(v);
    return b->oom ? DSYNC_ENOMEM : 0;
}

static int write_snapshot(const q_state *q, q_topic **topics, size_t n, ut_buf *b)
{
    size_t start = b->len;
    ut_buf_put_le(b, SNAP_MAGIC, 4);
    ut_buf_put_le(b, SNAP_VERSION, 4);
    ut_buf_put_le(b, n, 4);
    for (size_t i = 0; i < n; i++)
        if (write_topic(q, topics[i], b) != 0) return DSYNC_ENOMEM;
    if (b->oom) return DSYNC_ENOMEM;
    ut_buf_put_le(b, ut_crc32c(0, b->data + start, b->len - start), 4);
    return b->oom ? DSYNC_ENOMEM : 0;
}

int q_snapshot(const q_state *q, ut_buf *b)
{
    q_topic **v = malloc((q->topics.count ? q->topics.count : 1) * sizeof *v);
    if (!v) return DSYNC_ENOMEM;
    size_t n = 0;
    void *val;
    for (size_t it = 0; ut_map_next(&q->topics, &it, NULL, &val);)
        v[n++] = val;
    qsort(v, n, sizeof *v, cmp_topic);
    int rc = write_snapshot(q, v, n, b);
    free(v);
    return rc;
}

int q_snapshot_topic(const q_state *q, const char *topic, ut_buf *b)
{
    q_topic *t = q_check_topic_name(topic) == 0 ? q_topic_find(q, topic) : NULL;
    if (!t) return DSYNC_ENOTFOUND;
    return write_snapshot(q, &t, 1, b);
}

int q_snapshot_unit(const q_state *q, const char *topic, ut_buf *b)
{
    char dlq[QS_TOPIC_NAME_MAX + 1];
    if (q_check_topic_name(topic) != 0 || q_name_is_dlq(topic) ||
        snprintf(dlq, sizeof dlq, "%s%s", topic, QS_DLQ_SUFFIX) >= (int)sizeof dlq)
        return DSYNC_EINVAL;
    q_topic *v[2];
    size_t n = 0;
    /* "t" sorts before "t.dlq": the order write_snapshot wants. */
    if ((v[n] = q_topic_find(q, topic)) != NULL) n++;
    if ((v[n] = q_topic_find(q, dlq)) != NULL) n++;
    return write_snapshot(q, v, n, b);
}

int q_drop_topic(q_state *q, const char *topic)
{
    q_topic *t = q_check_topic_name(topic) == 0 ? q_topic_find(q, topic) : NULL;
    if (!t) return DSYNC_ENOTFOUND;
    size_t k = 0;
    for (size_t i = 0; i < q->heap_n; i++)
        if (q->heap[i].topic != t) q->heap[k++] = q->heap[i];
    bool moved = k != q->heap_n;
    q->heap_n = k;
    if (moved) q_heap_build(q);
    ut_map_del(&q->topics, topic);
    q_topic_free(t);
    return 0;
}

/* ---- restore -------------------------------------------------------------- */

/* Reads one message into t; false on anything malformed or out of memory
 * (*oom tells which). */
static bool read_msg(ut_reader *r, q_state *q, q_topic *t, uint64_t *prev_id, bool *oom)
{
    uint64_t id = ut_read_le(r, 8), deliveries = ut_read_le(r, 4), flags = ut_read_le(r, 1);
    bool in_flight = flags & FLAG_IN_FLIGHT, origin = flags & FLAG_ORIGIN;
    uint64_t deadline = in_flight ? ut_read_le(r, 8) : 0;
    uint64_t origin_id = origin ? ut_read_le(r, 8) : 0;
    uint64_t origin_deliveries = origin ? ut_read_le(r, 4) : 0;
    uint64_t len = ut_read_le(r, 4);
    if (r->bad || id <= *prev_id || id >= t->next_id || (flags & ~3u) ||
        (in_flight && (deliveries == 0 || deadline == UINT64_MAX)) ||
        (origin && (!t->is_dlq || origin_id == 0)) || len > QS_MAX_BODY || len > r->left)
        return false;
    *prev_id = id;
    q_msg *m = q_msg_new(id, r->p, (size_t)len, origin_id, (uint32_t)origin_deliveries);
    if (!m) {
        *oom = true;
        return false;
    }
    r->p += len;
    r->left -= (size_t)len;
    m->deliveries = (uint32_t)deliveries;
    if (!in_flight) {
        q_ready_append(t, m);
        return true;
    }
    if (q_heap_reserve(q, 1) != 0 || q_idmap_reserve(&t->in_flight, 1) != 0) {
        free(m);
        *oom = true;
        return false;
    }
    q->heap[q->heap_n++] = (q_lease){deadline, m, t}; /* ordered once at the end */
    q_idmap_put(&t->in_flight, m);
    return true;
}

static bool read_topic(ut_reader *r, q_state *q, char *prev_name, bool *oom)
{
    char name[QS_TOPIC_NAME_MAX + 1];
    ut_read_str16(r, name, QS_TOPIC_NAME_MAX);
    uint64_t f[8];
    for (int i = 0; i < 8; i++)
        f[i] = ut_read_le(r, 8);
    if (r->bad || !q_name_valid(name, strlen(name)) ||
        (prev_name[0] && strcmp(prev_name, name) >= 0) || f[1] == 0 || f[1] > MAX_NEXT_ID ||
        f[7] > r->left / MIN_MSG)
        return false;
    strcpy(prev_name, name);
    q_topic *t = q_topic_alloc(name, f[0]);
    if (!t || q_topic_insert(q, t) != 0) {
        q_topic_free(t);
        *oom = true;
        return false;
    }
    t->next_id = f[1];
    t->enqueued = f[2];
    t->consumed = f[3];
    t->acked = f[4];
    t->requeued = f[5];
    t->dead_lettered = f[6];
    uint64_t prev_id = 0;
    for (uint64_t i = 0; i < f[7]; i++)
        if (!read_msg(r, q, t, &prev_id, oom)) return false;
    return true;
}

/* A new state (q's config) holding the snapshot; NULL with *rc set. */
static q_state *decode(const q_state *q, const void *data, size_t len, int *rc)
{
    const unsigned char *p = data;
    *rc = DSYNC_ECORRUPT;
    if (!p || len < 16 || ut_crc32c(0, p, len - 4) != (uint32_t)ut_get_le(p + len - 4, 4))
        return NULL;
    q_config cfg = {q->nonce, q->max_deliveries};
    q_state *fresh = q_new(&cfg);
    if (!fresh) {
        *rc = DSYNC_ENOMEM;
        return NULL;
    }
    ut_reader r = {p, len - 4, false};
    bool ok = ut_read_le(&r, 4) == SNAP_MAGIC && ut_read_le(&r, 4) == SNAP_VERSION, oom = false;
    uint64_t n = ut_read_le(&r, 4);
    ok = ok && !r.bad && n <= r.left / MIN_TOPIC;
    char prev_name[QS_TOPIC_NAME_MAX + 1] = "";
    for (uint64_t i = 0; ok && i < n; i++)
        ok = read_topic(&r, fresh, prev_name, &oom);
    if (ok) {
        q_heap_build(fresh);
        char err[160];
        ok = r.left == 0 && q_check_invariants(fresh, err, sizeof err) == 0;
    }
    if (!ok) {
        *rc = oom ? DSYNC_ENOMEM : DSYNC_ECORRUPT;
        q_free(fresh);
        return NULL;
    }
    *rc = 0;
    return fresh;
}

int q_restore(q_state *q, const void *data, size_t len)
{
    int rc;
    q_state *fresh = decode(q, data, len, &rc);
    if (!fresh) return rc;
    ut_map topics = q->topics;
    q_lease *heap = q->heap;
    size_t heap_n = q->heap_n, heap_cap = q->heap_cap;
    q->topics = fresh->topics;
    q->heap = fresh->heap;
    q->heap_n = fresh->heap_n;
    q->heap_cap = fresh->heap_cap;
    fresh->topics = topics;
    fresh->heap = heap;
    fresh->heap_n = heap_n;
    fresh->heap_cap = heap_cap;
    q_free(fresh);
    return 0;
}

int q_restore_topics(q_state *q, const void *data, size_t len)
{
    int rc;
    q_state *fresh = decode(q, data, len, &rc);
    if (!fresh) return rc;
    /* Everything that can fail first: heap room, and map entries for the
     * new names (taken back if one fails). */
    bool ok = q_heap_reserve(q, fresh->heap_n) == 0;
    const char *name;
    void *v;
    size_t it = 0, added = 0;
    while (ok && ut_map_next(&fresh->topics, &it, &name, &v)) {
        if (q_topic_find(q, name)) continue;
        ok = q_topic_insert(q, v) == 0;
        added += ok;
    }
    if (!ok) {
        for (size_t j = 0; added && ut_map_next(&fresh->topics, &j, &name, &v);)
            if (q_topic_find(q, name) == v && ut_map_del(&q->topics, name)) added--;
        q_free(fresh);
        return DSYNC_ENOMEM;
    }
    /* Drop the leases of the topics being replaced, take the new ones (each
     * pointed at the topic struct q keeps for that name), reorder. */
    size_t k = 0;
    for (size_t i = 0; i < q->heap_n; i++)
        if (!q_topic_find(fresh, q->heap[i].topic->name)) q->heap[k++] = q->heap[i];
    q->heap_n = k;
    for (size_t i = 0; i < fresh->heap_n; i++) {
        q_lease l = fresh->heap[i];
        l.topic = q_topic_find(q, l.topic->name);
        q->heap[q->heap_n++] = l;
    }
    /* A replaced name keeps q's struct, which takes the new contents; the
     * fresh struct leaves with the old ones. */
    for (it = 0; ut_map_next(&fresh->topics, &it, &name, &v);) {
        q_topic *old = q_topic_find(q, name), *nt = v;
        if (old == nt) continue;
        q_topic tmp = *old;
        *old = *nt;
        *nt = tmp;
        q_topic_free(nt);
    }
    q_heap_build(q);
    ut_map_close(&fresh->topics);
    free(fresh->heap);
    free(fresh);
    return 0;
}

/* ---- invariants ----------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

#define BAD(...)                                                                                   \
    do {                                                                                           \
        if (err && errlen) snprintf(err, errlen, __VA_ARGS__);                                     \
        goto out;                                                                                  \
    } while (0)

static int check_topic(const q_state *q, const q_topic *t, char *err, size_t errlen)
{
    int rc = -1;
    size_t n = (size_t)t->n_ready + t->in_flight.count, k = 0, fresh = 0;
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) BAD("out of memory");
    uint64_t prev = 0;
    for (const q_msg *m = t->fresh_head; m; m = m->link.next) {
        if (k == n || m->id <= prev) BAD("%s: fresh list out of order or too long", t->name);
        if (!m->link.next && m != t->fresh_tail) BAD("%s: fresh tail", t->name);
        prev = m->id;
        ids[k++] = m->id;
        fresh++;
    }
    if (!t->fresh_head && t->fresh_tail) BAD("%s: tail without head", t->name);
    if (fresh + t->retry_n != t->n_ready) BAD("%s: ready count", t->name);
    for (size_t i = 0; i < t->retry_n; i++) {
        if (i > 0 && t->retry[i]->id < t->retry[(i - 1) / 2]->id) BAD("%s: retry heap", t->name);
        ids[k++] = t->retry[i]->id;
    }
    size_t seen = 0;
    for (size_t i = 0; i < t->in_flight.cap; i++) {
        const q_msg *m = t->in_flight.slots[i];
        if (!m) continue;
        size_t h = m->link.heap_idx;
        if (h >= q->heap_n || q->heap[h].msg != m || q->heap[h].topic != t)
            BAD("%s: message %llu lost its lease", t->name, (unsigned long long)m->id);
        if (m->deliveries == 0) BAD("%s: in flight, never delivered", t->name);
        if (++seen > t->in_flight.count) break;
        ids[k++] = m->id;
    }
    if (seen != t->in_flight.count || seen * 2 > t->in_flight.cap)
        BAD("%s: in-flight table count or load", t->name);
    qsort(ids, k, sizeof *ids, cmp_u64);
    for (size_t i = 0; i < k; i++)
        if (ids[i] == 0 || ids[i] >= t->next_id || (i > 0 && ids[i] == ids[i - 1]))
            BAD("%s: id %llu twice or out of range", t->name, (unsigned long long)ids[i]);
    if (t->is_dlq != q_name_is_dlq(t->name)) BAD("%s: dead-letter flag", t->name);
    rc = 0;
out:
    free(ids);
    return rc;
}

/* Whether any ready or in-flight message of t has an origin. */
static bool any_origin(const q_topic *t)
{
    for (const q_msg *m = t->fresh_head; m; m = m->link.next)
        if (m->len & Q_MSG_ORIGIN) return true;
    for (size_t i = 0; i < t->retry_n; i++)
        if (t->retry[i]->len & Q_MSG_ORIGIN) return true;
    for (size_t i = 0; i < t->in_flight.cap; i++)
        if (t->in_flight.slots[i] && (t->in_flight.slots[i]->len & Q_MSG_ORIGIN)) return true;
    return false;
}

int q_check_invariants(const q_state *q, char *err, size_t errlen)
{
    int rc = -1;
    uint64_t in_flight = 0;
    const char *name;
    void *v;
    for (size_t it = 0; ut_map_next(&q->topics, &it, &name, &v);) {
        const q_topic *t = v;
        if (strcmp(name, t->name) != 0) BAD("topic filed under %s is %s", name, t->name);
        if (!q_name_valid(t->name, strlen(t->name))) BAD("bad topic name");
        if (check_topic(q, t, err, errlen) != 0) return -1;
        if (!t->is_dlq && any_origin(t)) BAD("%s: origin outside a dead-letter topic", t->name);
        in_flight += t->in_flight.count;
    }
    if (in_flight != q->heap_n)
        BAD("%zu leases for %llu in flight", q->heap_n, (unsigned long long)in_flight);
    for (size_t i = 0; i < q->heap_n; i++) {
        const q_lease *l = &q->heap[i];
        if (l->msg->link.heap_idx != i) BAD("lease %zu: back-index", i);
        if (i > 0 && q_lease_before(l, &q->heap[(i - 1) / 2])) BAD("lease %zu: heap order", i);
        if (l->deadline == UINT64_MAX) BAD("lease %zu: no deadline", i);
        if (q_topic_find(q, l->topic->name) != l->topic) BAD("lease %zu: unknown topic", i);
        if (q_in_flight_find(l->topic, l->msg->id) != l->msg) BAD("lease %zu: not in flight", i);
    }
    rc = 0;
out:
    return rc;
}
