/*
 * table.c: the lock table's requests, grants and leases.
 *
 * See lock.h for the rules. Grants happen in two places only: at once in
 * lk_acquire when the key is free enough and nobody waits, and in
 * grant_waiters() from the head of a queue whenever someone leaves it.
 */
#include <stdlib.h>
#include <string.h>

#include "lock_internal.h"

/* ---- lists ---------------------------------------------------------------- */

void lk_list_push_back(lk_list *l, lk_req *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

void lk_list_push_front(lk_list *l, lk_req *r)
{
    r->prev = NULL;
    r->next = l->head;
    if (l->head)
        l->head->prev = r;
    else
        l->tail = r;
    l->head = r;
    l->n++;
}

void lk_list_remove(lk_list *l, lk_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

/* ---- lease heap: min on (deadline, seq) ---------------------------------- */

static bool earlier(const lk_req *a, const lk_req *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void heap_swap(lk_table *t, size_t i, size_t j)
{
    lk_req *tmp = t->heap[i];
    t->heap[i] = t->heap[j];
    t->heap[j] = tmp;
    t->heap[i]->heap_idx = i;
    t->heap[j]->heap_idx = j;
}

static void heap_up(lk_table *t, size_t i)
{
    while (i > 0 && earlier(t->heap[i], t->heap[(i - 1) / 2])) {
        heap_swap(t, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(lk_table *t, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->heap_n && earlier(t->heap[l], t->heap[m])) m = l;
        if (r < t->heap_n && earlier(t->heap[r], t->heap[m])) m = r;
        if (m == i) return;
        heap_swap(t, i, m);
        i = m;
    }
}

static void heap_fix(lk_table *t, lk_req *r)
{
    heap_up(t, r->heap_idx);
    heap_down(t, r->heap_idx);
}

static void heap_remove(lk_table *t, lk_req *r)
{
    size_t i = r->heap_idx;
    t->heap_n--;
    if (i != t->heap_n) {
        t->heap[i] = t->heap[t->heap_n];
        t->heap[i]->heap_idx = i;
        heap_fix(t, t->heap[i]);
    }
}

static void set_deadline(lk_table *t, lk_req *r, uint64_t deadline)
{
    r->deadline = deadline;
    heap_fix(t, r);
}

/* ---- locks, clients, requests ------------------------------------------- */

lk_lock *lk_lock_get(lk_table *t, const char *key, bool create)
{
    lk_lock *l = ut_map_get(&t->locks, key);
    if (l || !create) return l;
    l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->key = ut_strdup(key);
    if (!l->key || ut_map_put(&t->locks, key, l) != 0) {
        free(l->key);
        free(l);
        return NULL;
    }
    return l;
}

lk_client *lk_client_get(lk_table *t, const char *id, bool create)
{
    lk_client *c = ut_map_get(&t->clients, id);
    if (c || !create) return c;
    c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->id = ut_strdup(id);
    if (!c->id || ut_map_put(&t->clients, id, c) != 0) {
        free(c->id);
        free(c);
        return NULL;
    }
    return c;
}

static void maybe_free_lock(lk_table *t, lk_lock *l)
{
    if (l->holders.n || l->waiters.n) return;
    ut_map_del(&t->locks, l->key);
    free(l->key);
    free(l);
}

static void maybe_free_client(lk_table *t, lk_client *c)
{
    if (c->n) return;
    ut_map_del(&t->clients, c->id);
    free(c->id);
    free(c);
}

int lk_heap_reserve(lk_table *t, size_t n)
{
    if (t->heap_n + n <= t->heap_cap) return 0;
    size_t ncap = t->heap_cap ? t->heap_cap : 64;
    while (ncap < t->heap_n + n)
        ncap *= 2;
    lk_req **nh = realloc(t->heap, ncap * sizeof *nh);
    if (!nh) return DSYNC_ENOMEM;
    t->heap = nh;
    t->heap_cap = ncap;
    return 0;
}

void lk_req_link_rest(lk_table *t, lk_req *r)
{
    lk_client *c = r->client;
    r->cnext = NULL;
    r->cprev = c->tail;
    if (c->tail)
        c->tail->cnext = r;
    else
        c->head = r;
    c->tail = r;
    c->n++;
    r->heap_idx = t->heap_n;
    t->heap[t->heap_n++] = r;
    heap_up(t, r->heap_idx);
    if (r->waiting)
        t->n_waiters++;
    else
        t->n_holders++;
}

int lk_req_link(lk_table *t, lk_req *r, bool front)
{
    if (lk_heap_reserve(t, 1) != 0) return DSYNC_ENOMEM;
    lk_list *list = r->waiting ? &r->lock->waiters : &r->lock->holders;
    if (front)
        lk_list_push_front(list, r);
    else
        lk_list_push_back(list, r);
    lk_req_link_rest(t, r);
    return 0;
}

void lk_req_unlink(lk_table *t, lk_req *r)
{
    lk_lock *l = r->lock;
    lk_client *c = r->client;
    lk_list_remove(r->waiting ? &l->waiters : &l->holders, r);
    if (r->cprev)
        r->cprev->cnext = r->cnext;
    else
        c->head = r->cnext;
    if (r->cnext)
        r->cnext->cprev = r->cprev;
    else
        c->tail = r->cprev;
    c->n--;
    heap_remove(t, r);
    if (r->waiting)
        t->n_waiters--;
    else
        t->n_holders--;
    free(r);
    maybe_free_lock(t, l);
    maybe_free_client(t, c);
}

/* ---- table ---------------------------------------------------------------- */

lk_table *lk_table_new(void)
{
    lk_table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    ut_map_init(&t->locks);
    ut_map_init(&t->clients);
    t->next_token = 1;
    return t;
}

void lk_table_clear(lk_table *t)
{
    /* Unlinking the heap's last element never moves another one. */
    while (t->heap_n)
        lk_req_unlink(t, t->heap[t->heap_n - 1]);
}

void lk_table_free(lk_table *t)
{
    if (!t) return;
    lk_table_clear(t);
    /* A restore that failed half-way can leave locks and clients with no
     * requests behind; free whatever is left. */
    void *v;
    for (size_t it = 0; ut_map_next(&t->locks, &it, NULL, &v);) {
        free(((lk_lock *)v)->key);
        free(v);
    }
    for (size_t it = 0; ut_map_next(&t->clients, &it, NULL, &v);) {
        free(((lk_client *)v)->id);
        free(v);
    }
    ut_map_close(&t->locks);
    ut_map_close(&t->clients);
    free(t->heap);
    free(t);
}

void lk_table_set_listener(lk_table *t, lk_event_fn fn, void *ctx)
{
    t->listener = fn;
    t->listener_ctx = ctx;
}

static void emit(lk_table *t, lk_event_kind kind, const lk_req *r)
{
    if (!t->listener) return;
    lk_event ev = {kind, r->lock->key, r->client->id, r->mode, r->token, r->deadline};
    t->listener(t->listener_ctx, &ev);
}

/* The client's hold and wait on lock l, if any. */
static void find_reqs(const lk_client *c, const lk_lock *l, lk_req **hold, lk_req **wait)
{
    *hold = *wait = NULL;
    if (!c) return;
    for (lk_req *r = c->head; r; r = r->cnext) {
        if (r->lock != l) continue;
        if (r->waiting)
            *wait = r;
        else
            *hold = r;
    }
}

static bool compatible_with_holders(const lk_lock *l, dsync_lock_mode mode)
{
    for (const lk_req *h = l->holders.head; h; h = h->next)
        if (lk_incompatible(mode, h->mode)) return false;
    return true;
}

static uint32_t queue_position(const lk_req *w)
{
    uint32_t pos = 1;
    for (const lk_req *r = w->lock->waiters.head; r && r != w; r = r->next)
        pos++;
    return pos;
}

static void fill_granted(dsync_lock_result *res, const lk_req *h, uint64_t now)
{
    res->status = DSYNC_LOCK_GRANTED;
    res->fencing_token = h->token;
    res->lease_ms = h->deadline > now ? h->deadline - now : 0;
}

/* Grants from the head of l's queue while the head is compatible: FIFO,
 * so the first waiter that must wait stops everyone behind it. */
static void grant_waiters(lk_table *t, lk_lock *l, uint64_t now)
{
    lk_req *w;
    while ((w = l->waiters.head) != NULL) {
        if (w->upgrade) {
            /* Only the upgrader's own S may remain. */
            if (l->holders.n != 1 || l->holders.head->client != w->client) return;
            lk_req *h = l->holders.head;
            h->mode = DSYNC_LOCK_EXCLUSIVE;
            h->token = t->next_token++;
            h->ttl_ms = w->ttl_ms;
            set_deadline(t, h, now + w->ttl_ms);
            lk_req_unlink(t, w); /* l keeps its holder, so it survives */
            emit(t, LK_EV_GRANTED, h);
            continue;
        }
        if (!compatible_with_holders(l, w->mode)) return;
        lk_list_remove(&l->waiters, w);
        w->waiting = false;
        lk_list_push_back(&l->holders, w);
        t->n_waiters--;
        t->n_holders++;
        w->token = t->next_token++;
        set_deadline(t, w, now + w->ttl_ms);
        emit(t, LK_EV_GRANTED, w);
    }
}

static bool valid_name(const char *s, size_t max)
{
    if (!s) return false;
    size_t n = strnlen(s, max + 1);
    return n > 0 && n <= max;
}

int lk_acquire(lk_table *t, const lk_request *q, dsync_lock_result *res)
{
    memset(res, 0, sizeof *res);
    if (!valid_name(q->key, DSYNC_LOCK_KEY_MAX) || !valid_name(q->client_id, DSYNC_CLIENT_ID_MAX) ||
        (q->mode != DSYNC_LOCK_SHARED && q->mode != DSYNC_LOCK_EXCLUSIVE) || q->ttl_ms == 0)
        return DSYNC_EINVAL;
    uint64_t now = q->now_ms;
    uint64_t wait_lease = q->ttl_ms > q->wait_ms ? q->ttl_ms : q->wait_ms;

    lk_lock *l = lk_lock_get(t, q->key, false);
    lk_client *c = lk_client_get(t, q->client_id, false);
    lk_req *hold = NULL, *wait = NULL;
    if (l) find_reqs(c, l, &hold, &wait);

    /* Asking again for what one holds (or less) renews the lease. */
    if (hold && (hold->mode == q->mode || hold->mode == DSYNC_LOCK_EXCLUSIVE)) {
        hold->ttl_ms = q->ttl_ms;
        set_deadline(t, hold, now + q->ttl_ms);
        fill_granted(res, hold, now);
        return 0;
    }
    if (wait) {
        if (wait->mode != q->mode) return DSYNC_EEXIST;
        wait->ttl_ms = q->ttl_ms;
        set_deadline(t, wait, now + wait_lease);
        res->status = DSYNC_LOCK_WAITING;
        res->position = queue_position(wait);
        return 0;
    }
    /* S -> X for the sole holder converts in place, with a new token. */
    if (hold && l->holders.n == 1) {
        hold->mode = DSYNC_LOCK_EXCLUSIVE;
        hold->token = t->next_token++;
        hold->ttl_ms = q->ttl_ms;
        set_deadline(t, hold, now + q->ttl_ms);
        fill_granted(res, hold, now);
        return 0;
    }

    bool created_lock = l == NULL, created_client = c == NULL;
    if (!l && !(l = lk_lock_get(t, q->key, true))) return DSYNC_ENOMEM;
    if (!c && !(c = lk_client_get(t, q->client_id, true))) {
        if (created_lock) maybe_free_lock(t, l);
        return DSYNC_ENOMEM;
    }
    lk_req *r = calloc(1, sizeof *r);
    if (!r) {
        if (created_lock) maybe_free_lock(t, l);
        if (created_client) maybe_free_client(t, c);
        return DSYNC_ENOMEM;
    }
    r->lock = l;
    r->client = c;
    r->mode = q->mode;
    r->ttl_ms = q->ttl_ms;
    r->seq = t->next_seq++;
    r->upgrade = hold != NULL;
    r->waiting = hold != NULL || l->waiters.n > 0 || !compatible_with_holders(l, q->mode);
    r->deadline = now + (r->waiting ? wait_lease : q->ttl_ms);
    if (!r->waiting) r->token = t->next_token++;

    /* Upgraders go ahead of ordinary waiters, behind earlier upgraders. */
    bool front = false;
    if (r->upgrade && l->waiters.head && !l->waiters.head->upgrade) front = true;
    if (lk_req_link(t, r, front) != 0) {
        if (!r->waiting) t->next_token--;
        t->next_seq--;
        free(r);
        if (created_lock) maybe_free_lock(t, l);
        if (created_client) maybe_free_client(t, c);
        return DSYNC_ENOMEM;
    }
    if (r->upgrade && !front && l->waiters.tail == r && l->waiters.n > 1) {
        /* Behind an earlier upgrader: move r right after the last one. */
        lk_list_remove(&l->waiters, r);
        lk_req *after = l->waiters.head;
        while (after->next && after->next->upgrade)
            after = after->next;
        r->prev = after;
        r->next = after->next;
        if (after->next)
            after->next->prev = r;
        else
            l->waiters.tail = r;
        after->next = r;
        l->waiters.n++;
    }

    if (!r->waiting) {
        fill_granted(res, r, now);
        return 0;
    }
    if (lk_find_cycle(t, c, res)) {
        /* Refuse and leave no trace: nothing else changed yet. */
        t->next_seq--;
        lk_req_unlink(t, r);
        res->status = DSYNC_LOCK_DEADLOCK;
        return 0;
    }
    res->status = DSYNC_LOCK_WAITING;
    res->position = queue_position(r);
    return 0;
}

int lk_release(lk_table *t, const char *key, const char *client_id, uint64_t now_ms,
               int *was_waiting)
{
    if (!valid_name(key, DSYNC_LOCK_KEY_MAX) || !valid_name(client_id, DSYNC_CLIENT_ID_MAX))
        return DSYNC_EINVAL;
    lk_lock *l = lk_lock_get(t, key, false);
    lk_client *c = lk_client_get(t, client_id, false);
    lk_req *hold = NULL, *wait = NULL;
    if (l) find_reqs(c, l, &hold, &wait);
    if (!hold && !wait) return DSYNC_ENOTFOUND;
    if (was_waiting) *was_waiting = hold == NULL;
    /* The lock is freed with its last request: grant only if it lives. */
    if (wait) lk_req_unlink(t, wait);
    if (hold) {
        bool others = l->holders.n > 1 || l->waiters.n > 0;
        lk_req_unlink(t, hold);
        if (!others) return 0; /* l is gone with its last request */
    } else if (!ut_map_get(&t->locks, key)) {
        return 0;
    }
    grant_waiters(t, l, now_ms);
    return 0;
}

size_t lk_expire(lk_table *t, uint64_t now_ms)
{
    size_t dropped = 0;
    while (t->heap_n && t->heap[0]->deadline <= now_ms) {
        lk_req *r = t->heap[0];
        lk_lock *l = r->lock;
        bool survives = l->holders.n + l->waiters.n > 1;
        if (!r->waiting) {
            /* An upgrade wait outlives the S hold it came from: it becomes
             * an ordinary X request at the head of the queue. */
            for (lk_req *w = l->waiters.head; w; w = w->next)
                if (w->upgrade && w->client == r->client) w->upgrade = false;
        }
        emit(t, r->waiting ? LK_EV_WAIT_EXPIRED : LK_EV_EXPIRED, r);
        lk_req_unlink(t, r);
        dropped++;
        if (survives) grant_waiters(t, l, now_ms);
    }
    return dropped;
}

uint32_t lk_position(const lk_table *t, const char *key, const char *client_id)
{
    const lk_lock *l = ut_map_get(&t->locks, key);
    uint32_t pos = 1;
    for (const lk_req *r = l ? l->waiters.head : NULL; r; r = r->next, pos++)
        if (strcmp(r->client->id, client_id) == 0) return pos;
    return 0;
}

uint64_t lk_next_deadline(const lk_table *t)
{
    return t->heap_n ? t->heap[0]->deadline : UINT64_MAX;
}

void lk_counts(const lk_table *t, size_t *n_locks, size_t *n_holders, size_t *n_waiters)
{
    if (n_locks) *n_locks = t->locks.count;
    if (n_holders) *n_holders = t->n_holders;
    if (n_waiters) *n_waiters = t->n_waiters;
}

uint64_t lk_next_token(const lk_table *t)
{
    return t->next_token;
}
