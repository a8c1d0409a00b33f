/*
 * state.c: the lock table seen from outside: a sorted snapshot for readers
 * (lk_state), the binary snapshot Raft stores (lk_table_snapshot/restore),
 * and the invariant check the tests run after every step.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lock_internal.h"

const char *dsync_lock_mode_name(dsync_lock_mode mode)
{
    return mode == DSYNC_LOCK_EXCLUSIVE ? "X" : mode == DSYNC_LOCK_SHARED ? "S" : "?";
}

dsync_lock_mode dsync_lock_mode_parse(const char *name)
{
    if (name && strcmp(name, "S") == 0) return DSYNC_LOCK_SHARED;
    if (name && strcmp(name, "X") == 0) return DSYNC_LOCK_EXCLUSIVE;
    return (dsync_lock_mode)0;
}

static int cmp_lock(const void *a, const void *b)
{
    return strcmp((*(lk_lock *const *)a)->key, (*(lk_lock *const *)b)->key);
}

/* Every lock, sorted by key; NULL only on out of memory. */
static lk_lock **sorted_locks(const lk_table *t)
{
    lk_lock **v = malloc((t->locks.count ? t->locks.count : 1) * sizeof *v);
    if (!v) return NULL;
    size_t n = 0;
    void *val;
    for (size_t it = 0; ut_map_next(&t->locks, &it, NULL, &val);)
        v[n++] = val;
    qsort(v, n, sizeof *v, cmp_lock);
    return v;
}

/* ---- lk_state ------------------------------------------------------------ */

typedef struct {
    dsync_lock_state *out;
    size_t cap;
    bool oom;
} edge_sink;

static void add_edge(void *ctx, const lk_req *w, const lk_req *b)
{
    edge_sink *s = ctx;
    if (s->oom) return;
    if (s->out->n_edges == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 16;
        dsync_wait_edge *ne = realloc(s->out->edges, ncap * sizeof *ne);
        if (!ne) {
            s->oom = true;
            return;
        }
        s->out->edges = ne;
        s->cap = ncap;
    }
    dsync_wait_edge *e = &s->out->edges[s->out->n_edges];
    e->waiter = ut_strdup(w->client->id);
    e->holder = ut_strdup(b->client->id);
    e->key = ut_strdup(w->lock->key);
    s->out->n_edges++;
    if (!e->waiter || !e->holder || !e->key) s->oom = true;
}

static bool fill_parties(const lk_list *list, dsync_lock_party **out, size_t *n, uint64_t now)
{
    *n = 0;
    *out = calloc(list->n ? list->n : 1, sizeof **out);
    if (!*out) return false;
    for (const lk_req *r = list->head; r; r = r->next) {
        dsync_lock_party *p = &(*out)[(*n)++];
        p->client_id = ut_strdup(r->client->id);
        p->mode = r->mode;
        p->fencing_token = r->waiting ? 0 : r->token;
        p->lease_ms = r->deadline > now ? r->deadline - now : 0;
        p->upgrade = r->upgrade;
        if (!p->client_id) return false;
    }
    return true;
}

int lk_state(const lk_table *t, uint64_t now_ms, dsync_lock_state *out)
{
    memset(out, 0, sizeof *out);
    lk_lock **locks = sorted_locks(t);
    if (!locks) return DSYNC_ENOMEM;
    size_t n = t->locks.count;
    out->locks = calloc(n ? n : 1, sizeof *out->locks);
    bool ok = out->locks != NULL;
    edge_sink sink = {out, 0, false};
    for (size_t i = 0; ok && i < n; i++) {
        const lk_lock *l = locks[i];
        dsync_lock_info *li = &out->locks[out->n_locks++];
        li->key = ut_strdup(l->key);
        li->mode = l->holders.head ? l->holders.head->mode : (dsync_lock_mode)0;
        ok = li->key && fill_parties(&l->holders, &li->holders, &li->n_holders, now_ms) &&
             fill_parties(&l->waiters, &li->waiters, &li->n_waiters, now_ms);
        for (const lk_req *w = l->waiters.head; ok && w; w = w->next)
            lk_edges_of(w, add_edge, &sink);
        ok = ok && !sink.oom;
    }
    free(locks);
    if (!ok) {
        dsync_lock_state_free(out);
        return DSYNC_ENOMEM;
    }
    return 0;
}

static void free_parties(dsync_lock_party *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(p[i].client_id);
    free(p);
}

void dsync_lock_state_free(dsync_lock_state *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n_locks; i++) {
        free(s->locks[i].key);
        free_parties(s->locks[i].holders, s->locks[i].n_holders);
        free_parties(s->locks[i].waiters, s->locks[i].n_waiters);
    }
    free(s->locks);
    for (size_t i = 0; i < s->n_edges; i++) {
        free(s->edges[i].waiter);
        free(s->edges[i].holder);
        free(s->edges[i].key);
    }
    free(s->edges);
    memset(s, 0, sizeof *s);
}

/* ---- binary snapshot ------------------------------------------------------ */
/*
 * "LKTB" u32 version | u64 next_token | u64 next_seq | u32 n_locks |
 * per lock (sorted by key): str key | u32 n_holders | holders | u32
 * n_waiters | waiters, where a request is: str client | u8 mode | u8 flags
 * (1 = upgrade) | u64 token | u64 deadline | u64 ttl | u64 seq; then
 * u32 CRC-32C of everything before it. Strings are u16 length + bytes.
 */
#define SNAP_MAGIC 0x42544b4cu
#define SNAP_VERSION 1u

static void write_req(ut_buf *b, const lk_req *r)
{
    ut_buf_put_str16(b, r->client->id);
    ut_buf_put_le(b, (uint8_t)r->mode, 1);
    ut_buf_put_le(b, r->upgrade ? 1 : 0, 1);
    ut_buf_put_le(b, r->token, 8);
    ut_buf_put_le(b, r->deadline, 8);
    ut_buf_put_le(b, r->ttl_ms, 8);
    ut_buf_put_le(b, r->seq, 8);
}

int lk_table_snapshot(const lk_table *t, ut_buf *b)
{
    lk_lock **locks = sorted_locks(t);
    if (!locks) return DSYNC_ENOMEM;
    size_t start = b->len;
    ut_buf_put_le(b, SNAP_MAGIC, 4);
    ut_buf_put_le(b, SNAP_VERSION, 4);
    ut_buf_put_le(b, t->next_token, 8);
    ut_buf_put_le(b, t->next_seq, 8);
    ut_buf_put_le(b, (uint32_t)t->locks.count, 4);
    for (size_t i = 0; i < t->locks.count; i++) {
        const lk_lock *l = locks[i];
        ut_buf_put_str16(b, l->key);
        ut_buf_put_le(b, (uint32_t)l->holders.n, 4);
        for (const lk_req *r = l->holders.head; r; r = r->next)
            write_req(b, r);
        ut_buf_put_le(b, (uint32_t)l->waiters.n, 4);
        for (const lk_req *r = l->waiters.head; r; r = r->next)
            write_req(b, r);
    }
    free(locks);
    if (b->oom) return DSYNC_ENOMEM;
    ut_buf_put_le(b, ut_crc32c(0, b->data + start, b->len - start), 4);
    return b->oom ? DSYNC_ENOMEM : 0;
}

static int cmp_seq(const void *a, const void *b)
{
    const lk_req *x = *(lk_req *const *)a, *y = *(lk_req *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Reads one request into a fresh lk_req tied to lock l (client linked
 * later, in seq order). */
static lk_req *read_req(ut_reader *r, lk_table *t, lk_lock *l, bool waiting)
{
    char client[DSYNC_CLIENT_ID_MAX + 1];
    ut_read_str16(r, client, DSYNC_CLIENT_ID_MAX);
    uint8_t mode = (uint8_t)ut_read_le(r, 1), flags = (uint8_t)ut_read_le(r, 1);
    uint64_t token = ut_read_le(r, 8), deadline = ut_read_le(r, 8), ttl = ut_read_le(r, 8),
             seq = ut_read_le(r, 8);
    if (r->bad || (mode != DSYNC_LOCK_SHARED && mode != DSYNC_LOCK_EXCLUSIVE) || flags > 1 ||
        (flags && !waiting) || ttl == 0 || seq >= t->next_seq || (!waiting && token == 0) ||
        token >= t->next_token) {
        r->bad = true;
        return NULL;
    }
    lk_req *q = calloc(1, sizeof *q);
    lk_client *c = q ? lk_client_get(t, client, true) : NULL;
    if (!c) {
        free(q);
        r->bad = true;
        return NULL;
    }
    q->lock = l;
    q->client = c;
    q->mode = (dsync_lock_mode)mode;
    q->waiting = waiting;
    q->upgrade = flags & 1;
    q->token = waiting ? 0 : token;
    q->deadline = deadline;
    q->ttl_ms = ttl;
    q->seq = seq;
    return q;
}

/* Builds a table from the bytes into t (empty); false when malformed. */
static bool restore_into(lk_table *t, const void *data, size_t len)
{
    const unsigned char *bytes = data;
    if (len < 4 + 28 || ut_crc32c(0, bytes, len - 4) != (uint32_t)ut_get_le(bytes + len - 4, 4))
        return false;
    ut_reader r = {bytes, len - 4, false};
    if (ut_read_le(&r, 4) != SNAP_MAGIC || ut_read_le(&r, 4) != SNAP_VERSION) return false;
    t->next_token = ut_read_le(&r, 8);
    t->next_seq = ut_read_le(&r, 8);
    uint32_t n_locks = (uint32_t)ut_read_le(&r, 4);
    if (r.bad || t->next_token == 0) return false;
    /* All requests, linked to their clients at the end in seq order. */
    lk_req **all = NULL;
    size_t n_all = 0, cap = 0;
    bool ok = true;
    char prev_key[DSYNC_LOCK_KEY_MAX + 1] = "";
    for (uint32_t i = 0; ok && i < n_locks; i++) {
        char key[DSYNC_LOCK_KEY_MAX + 1];
        ut_read_str16(&r, key, DSYNC_LOCK_KEY_MAX);
        if (r.bad || (i > 0 && strcmp(prev_key, key) >= 0)) {
            ok = false;
            break;
        }
        strcpy(prev_key, key);
        lk_lock *l = lk_lock_get(t, key, true);
        if (!l) {
            ok = false;
            break;
        }
        for (int waiting = 0; ok && waiting < 2; waiting++) {
            uint32_t n = (uint32_t)ut_read_le(&r, 4);
            if (r.bad || n > r.left / 36) {
                ok = false;
                break;
            }
            for (uint32_t j = 0; ok && j < n; j++) {
                lk_req *q = read_req(&r, t, l, waiting);
                if (!q) {
                    ok = false;
                    break;
                }
                if (n_all == cap) {
                    cap = cap ? cap * 2 : 64;
                    lk_req **na = realloc(all, cap * sizeof *na);
                    if (!na) {
                        free(q);
                        ok = false;
                        break;
                    }
                    all = na;
                }
                all[n_all++] = q;
                lk_list_push_back(waiting ? &l->waiters : &l->holders, q);
            }
        }
        if (ok && l->holders.n + l->waiters.n == 0) ok = false;
    }
    if (r.bad || r.left != 0) ok = false;
    /* Lock lists keep the file's order; clients and the heap get their
     * requests in seq order, the order they were made in. */
    if (ok && lk_heap_reserve(t, n_all) != 0) ok = false;
    if (ok && n_all > 1) qsort(all, n_all, sizeof *all, cmp_seq);
    for (size_t i = 0; ok && i < n_all; i++)
        if (i > 0 && all[i - 1]->seq == all[i]->seq) ok = false;
    for (size_t i = 0; i < n_all; i++) {
        if (ok) {
            lk_req_link_rest(t, all[i]);
        } else {
            lk_list_remove(all[i]->waiting ? &all[i]->lock->waiters : &all[i]->lock->holders,
                           all[i]);
            free(all[i]);
        }
    }
    free(all);
    return ok;
}

int lk_table_restore(lk_table *t, const void *data, size_t len)
{
    lk_table *fresh = lk_table_new();
    if (!fresh) return DSYNC_ENOMEM;
    bool ok = restore_into(fresh, data, len);
    char err[160];
    if (ok) ok = lk_check_invariants(fresh, err, sizeof err) == 0;
    if (!ok) {
        lk_table_free(fresh);
        return DSYNC_ECORRUPT;
    }
    /* Swap the contents; the listener stays with t. */
    lk_event_fn fn = t->listener;
    void *ctx = t->listener_ctx;
    lk_table tmp = *t;
    *t = *fresh;
    *fresh = tmp;
    t->listener = fn;
    t->listener_ctx = ctx;
    lk_table_free(fresh);
    return 0;
}

/* ---- invariants ----------------------------------------------------------- */

static int bad(char *err, size_t errlen, const char *what, const char *key)
{
    snprintf(err, errlen, "%s (key \"%s\")", what, key ? key : "");
    return -1;
}

int lk_check_invariants(const lk_table *t, char *err, size_t errlen)
{
    size_t holders = 0, waiters = 0;
    void *val;
    for (size_t it = 0; ut_map_next(&t->locks, &it, NULL, &val);) {
        const lk_lock *l = val;
        if (l->holders.n + l->waiters.n == 0)
            return bad(err, errlen, "an empty lock is still in the table", l->key);
        size_t nx = 0, n = 0;
        for (const lk_req *h = l->holders.head; h; h = h->next, n++) {
            if (h->waiting || h->lock != l || h->token == 0 || h->token >= t->next_token)
                return bad(err, errlen, "a holder entry is inconsistent", l->key);
            nx += h->mode == DSYNC_LOCK_EXCLUSIVE;
            for (const lk_req *o = h->next; o; o = o->next)
                if (o->client == h->client)
                    return bad(err, errlen, "a client holds a key twice", l->key);
        }
        if (n != l->holders.n) return bad(err, errlen, "holder count is wrong", l->key);
        if (nx > 0 && l->holders.n > 1)
            return bad(err, errlen, "an X holder shares the key", l->key);
        n = 0;
        for (const lk_req *w = l->waiters.head; w; w = w->next, n++) {
            if (!w->waiting || w->lock != l)
                return bad(err, errlen, "a waiter entry is inconsistent", l->key);
            bool holds = false;
            for (const lk_req *h = l->holders.head; h; h = h->next)
                holds |= h->client == w->client;
            if (w->upgrade != holds || (w->upgrade && w->mode != DSYNC_LOCK_EXCLUSIVE))
                return bad(err, errlen, "an upgrade flag disagrees with the holders", l->key);
        }
        if (n != l->waiters.n) return bad(err, errlen, "waiter count is wrong", l->key);
        const lk_req *w = l->waiters.head;
        if (w) {
            bool grantable;
            if (w->upgrade) {
                grantable = l->holders.n == 1;
            } else {
                grantable = true;
                for (const lk_req *h = l->holders.head; h; h = h->next)
                    grantable &= !lk_incompatible(w->mode, h->mode);
            }
            if (grantable)
                return bad(err, errlen, "the head waiter should have been granted", l->key);
        }
        holders += l->holders.n;
        waiters += l->waiters.n;
    }
    if (holders != t->n_holders || waiters != t->n_waiters || holders + waiters != t->heap_n)
        return bad(err, errlen, "table counts disagree with the locks", NULL);
    for (size_t i = 0; i < t->heap_n; i++) {
        if (t->heap[i]->heap_idx != i)
            return bad(err, errlen, "lease heap index is wrong", t->heap[i]->lock->key);
        if (i > 0 && t->heap[i]->deadline < t->heap[(i - 1) / 2]->deadline)
            return bad(err, errlen, "lease heap order is broken", t->heap[i]->lock->key);
    }
    size_t in_clients = 0;
    for (size_t it = 0; ut_map_next(&t->clients, &it, NULL, &val);) {
        lk_client *c = val;
        size_t n = 0;
        for (const lk_req *r = c->head; r; r = r->cnext, n++) {
            if (r->client != c)
                return bad(err, errlen, "a client list holds another's request", r->lock->key);
            if (r->cnext && r->cnext->seq <= r->seq)
                return bad(err, errlen, "a client list is out of order", r->lock->key);
        }
        if (n != c->n || n == 0) return bad(err, errlen, "a client count is wrong", c->id);
        in_clients += n;
    }
    if (in_clients != t->heap_n)
        return bad(err, errlen, "client lists disagree with the table", NULL);
    /* No cycle: search from every client that waits. */
    lk_table *mt = (lk_table *)t;
    for (size_t it = 0; ut_map_next(&t->clients, &it, NULL, &val);) {
        dsync_lock_result res;
        if (lk_find_cycle(mt, val, &res))
            return bad(err, errlen, "the wait-for graph has a cycle", ((lk_client *)val)->id);
    }
    return 0;
}
