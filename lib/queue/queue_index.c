/*
 * queue_index.c: the structures that keep a queue state's messages in
 * order: the state's deadline heap of leases (what ends next), each
 * topic's in-flight table (a receipt's message by id), and each topic's
 * ready messages (a list of never-delivered ones in id order and a min-heap
 * of requeued ones, merged on the way out). Costs are in queue.h.
 */
#include "queue_internal.h"

/* ---- the deadline heap: every lease of the state ------------------------- */

bool q_lease_before(const q_lease *a, const q_lease *b)
{
    /* A total order, so expiries happen in the same order however the heap
     * was built (calls, records, or a snapshot). */
    if (a->deadline != b->deadline) return a->deadline < b->deadline;
    if (a->msg->id != b->msg->id) return a->msg->id < b->msg->id;
    return strcmp(a->topic->name, b->topic->name) < 0;
}

static void heap_set(q_state *q, size_t i, q_lease l)
{
    q->heap[i] = l;
    l.msg->link.heap_idx = i;
}

static void heap_up(q_state *q, size_t i)
{
    q_lease l = q->heap[i];
    while (i > 0 && q_lease_before(&l, &q->heap[(i - 1) / 2])) {
        heap_set(q, i, q->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(q, i, l);
}

static void heap_down(q_state *q, size_t i)
{
    q_lease l = q->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->heap_n) break;
        if (c + 1 < q->heap_n && q_lease_before(&q->heap[c + 1], &q->heap[c])) c++;
        if (!q_lease_before(&q->heap[c], &l)) break;
        heap_set(q, i, q->heap[c]);
        i = c;
    }
    heap_set(q, i, l);
}

int q_heap_reserve(q_state *q, size_t n)
{
    if (q->heap_n + n <= q->heap_cap) return 0;
    size_t ncap = q->heap_cap ? q->heap_cap : 64;
    while (ncap < q->heap_n + n)
        ncap *= 2;
    q_lease *nh = realloc(q->heap, ncap * sizeof *nh);
    if (!nh) return DSYNC_ENOMEM;
    q->heap = nh;
    q->heap_cap = ncap;
    return 0;
}

void q_heap_push(q_state *q, q_lease lease)
{
    q->heap[q->heap_n++] = lease;
    heap_up(q, q->heap_n - 1);
}

void q_heap_build(q_state *q)
{
    for (size_t i = 0; i < q->heap_n; i++)
        q->heap[i].msg->link.heap_idx = i;
    for (size_t i = q->heap_n / 2; i-- > 0;)
        heap_down(q, i);
}

void q_heap_remove(q_state *q, size_t i)
{
    q->heap_n--;
    if (i != q->heap_n) {
        q_msg *moved = q->heap[q->heap_n].msg;
        heap_set(q, i, q->heap[q->heap_n]);
        heap_up(q, i);
        heap_down(q, moved->link.heap_idx);
    }
    /* Give back the room a burst of deliveries took (best effort). */
    if (q->heap_cap > 1024 && q->heap_n * 4 < q->heap_cap) {
        q_lease *nh = realloc(q->heap, q->heap_cap / 2 * sizeof *nh);
        if (nh) {
            q->heap = nh;
            q->heap_cap /= 2;
        }
    }
}

uint64_t q_next_deadline(const q_state *q)
{
    return q->heap_n ? q->heap[0].deadline : UINT64_MAX;
}

/* ---- in-flight tables ----------------------------------------------------- */

static size_t idmap_slot(const q_idmap *m, uint64_t id)
{
    size_t mask = m->cap - 1;
    for (size_t i = ut_mix64(id) & mask;; i = (i + 1) & mask)
        if (!m->slots[i] || m->slots[i]->id == id) return i;
}

static int idmap_resize(q_idmap *m, size_t ncap)
{
    q_msg **ns = calloc(ncap, sizeof *ns);
    if (!ns) return DSYNC_ENOMEM;
    q_idmap nm = {ns, ncap, 0};
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i]) q_idmap_put(&nm, m->slots[i]);
    free(m->slots);
    *m = nm;
    return 0;
}

int q_idmap_reserve(q_idmap *m, size_t n)
{
    /* Load at most 1/2: probes stay short and a lookup for an unknown id
     * (a bad receipt) ends soon. */
    if ((m->count + n) * 2 <= m->cap) return 0;
    size_t ncap = m->cap ? m->cap : 16;
    while (ncap < (m->count + n) * 2)
        ncap *= 2;
    return idmap_resize(m, ncap);
}

void q_idmap_put(q_idmap *m, q_msg *msg)
{
    size_t i = idmap_slot(m, msg->id);
    if (!m->slots[i]) m->count++;
    m->slots[i] = msg;
}

q_msg *q_in_flight_find(const q_topic *t, uint64_t id)
{
    if (t->in_flight.count == 0) return NULL;
    return t->in_flight.slots[idmap_slot(&t->in_flight, id)];
}

void q_idmap_del(q_idmap *m, uint64_t id)
{
    size_t mask = m->cap - 1, i = idmap_slot(m, id);
    if (!m->slots[i]) return;
    m->slots[i] = NULL;
    m->count--;
    /* Backward shift (Knuth's algorithm R), as in lib/util/map.c. */
    for (size_t j = (i + 1) & mask; m->slots[j]; j = (j + 1) & mask) {
        size_t home = ut_mix64(m->slots[j]->id) & mask;
        bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (stays) continue;
        m->slots[i] = m->slots[j];
        m->slots[j] = NULL;
        i = j;
    }
    if (m->cap > 64 && m->count * 8 < m->cap) idmap_resize(m, m->cap / 4); /* best effort */
}

/* ---- ready messages ------------------------------------------------------- */

int q_retry_reserve(q_topic *t, size_t n)
{
    if (t->retry_n + n <= t->retry_cap) return 0;
    size_t ncap = t->retry_cap ? t->retry_cap : 16;
    while (ncap < t->retry_n + n)
        ncap *= 2;
    q_msg **nr = realloc(t->retry, ncap * sizeof *nr);
    if (!nr) return DSYNC_ENOMEM;
    t->retry = nr;
    t->retry_cap = ncap;
    return 0;
}

void q_retry_push(q_topic *t, q_msg *m)
{
    size_t i = t->retry_n++;
    while (i > 0 && m->id < t->retry[(i - 1) / 2]->id) {
        t->retry[i] = t->retry[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    t->retry[i] = m;
}

static q_msg *retry_pop(q_topic *t)
{
    q_msg *top = t->retry[0], *last = t->retry[--t->retry_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= t->retry_n) break;
        if (c + 1 < t->retry_n && t->retry[c + 1]->id < t->retry[c]->id) c++;
        if (last->id < t->retry[c]->id) break;
        t->retry[i] = t->retry[c];
        i = c;
    }
    if (t->retry_n) t->retry[i] = last;
    return top;
}

/* Gives back the room a burst of requeues took (best effort). Not inside
 * q_ready_pop: q_ready_unpop must find the room it left. */
void q_retry_trim(q_topic *t)
{
    if (t->retry_cap <= 64 || t->retry_n * 4 >= t->retry_cap) return;
    q_msg **nr = realloc(t->retry, t->retry_cap / 2 * sizeof *nr);
    if (nr) {
        t->retry = nr;
        t->retry_cap /= 2;
    }
}

void q_ready_append(q_topic *t, q_msg *m)
{
    m->link.next = NULL;
    if (t->fresh_tail)
        t->fresh_tail->link.next = m;
    else
        t->fresh_head = m;
    t->fresh_tail = m;
    t->n_ready++;
}

q_msg *q_ready_pop(q_topic *t, bool *retried)
{
    q_msg *f = t->fresh_head, *r = t->retry_n ? t->retry[0] : NULL;
    if (!f && !r) return NULL;
    t->n_ready--;
    if (r && (!f || r->id < f->id)) {
        *retried = true;
        return retry_pop(t);
    }
    *retried = false;
    t->fresh_head = f->link.next;
    if (!t->fresh_head) t->fresh_tail = NULL;
    return f;
}

void q_ready_unpop(q_topic *t, q_msg *m, bool retried)
{
    t->n_ready++;
    if (retried) {
        q_retry_push(t, m);
        return;
    }
    m->link.next = t->fresh_head;
    t->fresh_head = m;
    if (!t->fresh_tail) t->fresh_tail = m;
}
