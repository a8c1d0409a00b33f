/*
 * dir.c: the home side of the protocol: one directory entry per key this
 * node is home of, running one transaction per key at a time (others wait
 * FIFO), and the backing store: the embedder's (store requests) or this
 * node's memory. See cache.h for the protocol and the view rules.
 *
 * A transaction walks fixed phases (cc_phase) and waits, between them, for
 * the acknowledgements of the INVs it sent or for its store request:
 *   RECALL    the entry is new in this epoch: invalidate on every member
 *   REVOKE    GETS: downgrade the owner; GETM: invalidate every holder
 *   SAVE_OLD  a dirty value some answer brought goes to the store first,
 *             so the store never lags a value a reader could see
 *   SAVE_NEW  write-through GETM / WT, PUTBACK: the requester's value
 *   LOAD      GETS with no value from any holder: ask the store
 *   REPLY     grant / acknowledge, and update the entry
 */
#include <assert.h>

#include "cache_internal.h"

static void req_free(cc_req *r)
{
    if (!r) return;
    free(r->value);
    free(r);
}

static void txn_free(cc_txn *t)
{
    if (!t) return;
    req_free(t->req);
    free(t->best);
    free(t);
}

static void dir_free(cc_dir *d)
{
    txn_free(d->tx);
    for (cc_req *r = d->queue, *next; r; r = next) {
        next = r->next;
        req_free(r);
    }
    free(d->sharers);
    free(d->key);
    free(d);
}

void cc_dirs_free(cc_node *n)
{
    const char *k;
    void *v;
    for (size_t it = 0; ut_map_next(&n->dirs, &it, &k, &v);)
        dir_free(v);
    ut_map_close(&n->dirs);
    ut_map_init(&n->dirs);
    n->store_retries = 0;
}

static void learn_version(cc_dir *d, cc_version v)
{
    if (cc_version_cmp(v, d->max_version) > 0) d->max_version = v;
}

/* ---- holders ----------------------------------------------------------- */

static void drop_holder(cc_dir *d, uint64_t node)
{
    if (d->owner.node == node) d->owner = (cc_holder){0, 0};
    for (size_t i = 0; i < d->n_sharers; i++)
        if (d->sharers[i].node == node) {
            d->sharers[i] = d->sharers[--d->n_sharers];
            return;
        }
}

static void add_sharer(cc_dir *d, cc_holder h)
{
    drop_holder(d, h.node);
    assert(d->n_sharers < CC_MAX_NODES);
    if (d->n_sharers == d->cap_sharers) {
        uint32_t cap = d->cap_sharers ? 2 * d->cap_sharers : 2;
        cc_holder *grown = realloc(d->sharers, cap * sizeof *grown);
        if (!grown) abort();
        d->sharers = grown;
        d->cap_sharers = cap;
    }
    d->sharers[d->n_sharers++] = h;
}

/* ---- messages ---------------------------------------------------------- */

static void reply(cc_node *n, cc_dir *d, cc_msg_type type, uint8_t state, cc_version version,
                  const void *value, size_t len)
{
    cc_msg m = {.type = type,
                .from = n->cfg.self,
                .to = d->tx->req->from,
                .epoch = n->epoch,
                .rid = d->tx->req->rid,
                .state = state,
                .version = version,
                .key = d->key,
                .key_len = strlen(d->key)};
    if (value) {
        m.flags = CC_F_VALUE;
        m.value = value;
        m.len = len;
    }
    cc_send(n, &m);
}

static void send_inv(cc_node *n, cc_dir *d, cc_holder h, cc_inv_mode mode, cc_reason reason)
{
    cc_msg m = {.type = CC_MSG_INV,
                .from = n->cfg.self,
                .to = h.node,
                .epoch = n->epoch,
                .rid = h.rid,
                .hid = d->tx->hid,
                .mode = (uint8_t)mode,
                .reason = (uint8_t)reason,
                .key = d->key,
                .key_len = strlen(d->key)};
    assert(d->tx->acks_waited < CC_MAX_NODES);
    d->tx->awaited[d->tx->acks_waited++] = h.node;
    cc_send(n, &m);
}

/* ---- the store --------------------------------------------------------- */

/* The store answered with its value: it is the freshest the transaction
 * knows unless an answer brought a newer one. */
static void take_stored(cc_dir *d, const void *value, size_t len, cc_version version)
{
    cc_txn *t = d->tx;
    learn_version(d, version);
    if (t->has_best && cc_version_cmp(t->best_version, version) >= 0) return;
    free(t->best);
    t->has_best = true;
    t->best_dirty = false;
    t->best = cc_memdup(value, len);
    t->best_len = len;
    t->best_version = version;
}

/* A LOAD or WRITE for d's transaction. The home's memory answers at once;
 * the embedder's store answers through cc_store_done. */
static void store(cc_node *n, cc_dir *d, cc_store_kind kind, const void *value, size_t len,
                  cc_version version)
{
    if (kind == CC_STORE_WRITE) learn_version(d, version);
    if (n->cfg.external_store) {
        d->tx->store_again = (cc_store_req){0, kind, NULL, value, len, version, 0};
        d->tx->store_waited = cc_store_issue(n, kind, d->key, value, len, version);
        return;
    }
    cc_memval *mv = ut_map_get(&n->mem, d->key);
    if (kind == CC_STORE_LOAD || (mv && cc_version_cmp(version, mv->version) <= 0)) {
        /* A load, or a write older than what the store has: ignored, and
         * what the store has is what the transaction must go on with. */
        if (mv) take_stored(d, mv->value, mv->len, mv->version);
        return;
    }
    if (!mv) {
        mv = calloc(1, sizeof *mv);
        if (!mv || ut_map_put(&n->mem, d->key, mv) != 0) abort();
    }
    free(mv->value);
    mv->value = cc_memdup(value, len);
    mv->len = len;
    mv->version = version;
}

/* ---- transactions ------------------------------------------------------ */

/* Makes the next waiting request the current transaction. */
static void take_next(cc_node *n, cc_dir *d)
{
    assert(!d->tx && d->queue);
    cc_txn *t = calloc(1, sizeof *t);
    if (!t) abort();
    t->req = d->queue;
    d->queue = t->req->next;
    if (!d->queue) d->queue_tail = NULL;
    t->req->next = NULL;
    t->hid = ++n->next_hid;
    t->phase = PH_RECALL;
    d->tx = t;
}

/* Ends the current transaction; dir_run goes on with the next. */
static void finish(cc_dir *d)
{
    txn_free(d->tx);
    d->tx = NULL;
}

static bool waiting(const cc_txn *t)
{
    return t->acks_waited || t->store_waited || t->store_retry_at;
}

/* Runs transactions until one waits for answers or the store, or none is
 * left. */
static void dir_run(cc_node *n, cc_dir *d)
{
    for (;;) {
        if (!d->tx && d->queue) take_next(n, d);
        if (!d->tx || waiting(d->tx)) return;
        cc_txn *t = d->tx;
        cc_req *r = t->req;
        switch (t->phase) {
        case PH_RECALL:
            t->phase = PH_REVOKE;
            if (!d->unknown) break;
            if (r->type == CC_MSG_WT) {
                /* Nobody is known to own it: the writer must win it. */
                reply(n, d, CC_MSG_NACK, CC_I, (cc_version){0, 0}, NULL, 0);
                finish(d);
                continue;
            }
            if (r->type == CC_MSG_PUTBACK) break; /* versions make it safe */
            for (size_t i = 0; i < n->n_members; i++)
                if (n->members[i] != r->from)
                    send_inv(n, d, (cc_holder){n->members[i], 0}, CC_INV_INVALIDATE,
                             CC_REASON_VIEW);
            break;
        case PH_REVOKE:
            t->phase = PH_SAVE_OLD;
            if (d->unknown && r->type != CC_MSG_PUTBACK) {
                /* Recalled: nobody but the requester holds anything. */
                d->unknown = false;
                d->owner = (cc_holder){0, 0};
                d->n_sharers = 0;
            }
            if (r->type == CC_MSG_GETS) {
                drop_holder(d, r->from); /* it asks: it has nothing */
                if (d->owner.node) send_inv(n, d, d->owner, CC_INV_DOWNGRADE, CC_REASON_WRITE);
            } else if (r->type == CC_MSG_GETM) {
                drop_holder(d, r->from);
                if (d->owner.node) send_inv(n, d, d->owner, CC_INV_INVALIDATE, CC_REASON_WRITE);
                for (size_t i = 0; i < d->n_sharers; i++)
                    send_inv(n, d, d->sharers[i], CC_INV_INVALIDATE, CC_REASON_WRITE);
            } else if (r->type == CC_MSG_WT && d->owner.node != r->from) {
                reply(n, d, CC_MSG_NACK, CC_I, (cc_version){0, 0}, NULL, 0);
                finish(d);
                continue;
            }
            break;
        case PH_SAVE_OLD:
            t->phase = PH_SAVE_NEW;
            if (t->best_dirty) {
                t->best_dirty = false;
                store(n, d, CC_STORE_WRITE, t->best, t->best_len, t->best_version);
            }
            break;
        case PH_SAVE_NEW:
            t->phase = PH_LOAD;
            /* The store has best_version now (or something newer): the
             * nodes that handed dirty values may let go of them. */
            for (size_t i = 0; i < t->n_suppliers; i++) {
                cc_msg saved = {.type = CC_MSG_SAVED,
                                .from = n->cfg.self,
                                .to = t->suppliers[i],
                                .epoch = n->epoch,
                                .version = t->best_version,
                                .key = d->key,
                                .key_len = strlen(d->key)};
                cc_send(n, &saved);
            }
            t->n_suppliers = 0;
            if (r->type == CC_MSG_GETM || r->type == CC_MSG_WT) {
                cc_version top = d->max_version;
                if (cc_version_cmp(t->best_version, top) > 0) top = t->best_version;
                r->version = cc_version_next(top, n->epoch);
                learn_version(d, r->version);
                if (r->flags & CC_F_VALUE)
                    store(n, d, CC_STORE_WRITE, r->value, r->len, r->version);
            } else if (r->type == CC_MSG_PUTBACK) {
                /* The owner's write-back, or a write-back the new epoch's
                 * entry has not recalled yet; a stale one (the value came
                 * with an INV answer already) is only acknowledged. */
                if (d->unknown || d->owner.node == r->from)
                    store(n, d, CC_STORE_WRITE, r->value, r->len, r->version);
                if (d->owner.node == r->from) d->owner = (cc_holder){0, 0};
            }
            break;
        case PH_LOAD:
            t->phase = PH_REPLY;
            /* The first grant of a value in this epoch comes after a LOAD
             * even when a holder supplied the value: the LOAD fences off
             * writes of older epochs still on their way to the store, so
             * none can land behind the copies granted now. A GETM needs
             * none: its version is above anything of older epochs. */
            if (r->type == CC_MSG_GETS && (!t->has_best || (n->cfg.external_store && !d->fenced))) {
                d->fenced = true;
                store(n, d, CC_STORE_LOAD, NULL, 0, (cc_version){0, 0});
            }
            break;
        case PH_REPLY:
            if (r->type == CC_MSG_GETS) {
                if (!t->has_best) {
                    reply(n, d, CC_MSG_GRANT, CC_I, (cc_version){0, 0}, NULL, 0);
                } else {
                    cc_holder h = {r->from, r->rid};
                    bool alone = !d->owner.node && d->n_sharers == 0;
                    if (alone)
                        d->owner = h;
                    else
                        add_sharer(d, h);
                    reply(n, d, CC_MSG_GRANT, alone ? CC_E : CC_S, t->best_version, t->best,
                          t->best_len);
                }
            } else if (r->type == CC_MSG_GETM) {
                d->owner = (cc_holder){r->from, r->rid};
                d->n_sharers = 0;
                reply(n, d, CC_MSG_GRANT, CC_M, r->version, NULL, 0);
            } else if (r->type == CC_MSG_WT) {
                /* An INV must now name this request: it is the one whose
                 * answer the owner waits for (see cc_line_on_inv). */
                d->owner.rid = r->rid;
                reply(n, d, CC_MSG_WT_ACK, CC_M, r->version, NULL, 0);
            } else {
                reply(n, d, CC_MSG_PUTBACK_ACK, CC_I, (cc_version){0, 0}, NULL, 0);
            }
            finish(d);
            continue;
        }
    }
}

/* ---- inputs ------------------------------------------------------------ */

void cc_dir_on_request(cc_node *n, const cc_msg *m)
{
    cc_dir *d = ut_map_get(&n->dirs, m->key);
    if (!d) {
        d = calloc(1, sizeof *d);
        if (!d) abort();
        d->key = cc_memdup(m->key, m->key_len + 1);
        d->unknown = true; /* rule 2: made in this epoch */
        if (ut_map_put(&n->dirs, m->key, d) != 0) abort();
    }
    cc_req *r = calloc(1, sizeof *r);
    if (!r) abort();
    r->type = m->type;
    r->from = m->from;
    r->rid = m->rid;
    r->flags = m->flags;
    r->version = m->version;
    if (m->flags & CC_F_VALUE) {
        r->value = cc_memdup(m->value, m->len);
        r->len = m->len;
    }
    if (d->queue_tail)
        d->queue_tail->next = r;
    else
        d->queue = r;
    d->queue_tail = r;
    dir_run(n, d);
}

void cc_dir_on_inv_ack(cc_node *n, const cc_msg *m)
{
    cc_dir *d = ut_map_get(&n->dirs, m->key);
    cc_txn *t = d ? d->tx : NULL;
    size_t at = 0;
    while (t && m->hid == t->hid && at < t->acks_waited && t->awaited[at] != m->from)
        at++;
    if (!t || m->hid != t->hid || at == t->acks_waited) {
        n->stats.msgs_dropped++; /* not one this transaction waits for */
        return;
    }
    t->awaited[at] = t->awaited[--t->acks_waited];
    learn_version(d, m->version);
    if (m->flags & CC_F_DIRTY) {
        bool known = false;
        for (size_t i = 0; i < t->n_suppliers; i++)
            known |= t->suppliers[i] == m->from;
        if (!known && t->n_suppliers < CC_MAX_NODES) t->suppliers[t->n_suppliers++] = m->from;
    }
    if (m->flags & CC_F_VALUE) {
        int cmp = t->has_best ? cc_version_cmp(m->version, t->best_version) : 1;
        if (cmp > 0) {
            free(t->best);
            t->has_best = true;
            t->best = cc_memdup(m->value, m->len);
            t->best_len = m->len;
            t->best_version = m->version;
            t->best_dirty = m->flags & CC_F_DIRTY;
        } else if (cmp == 0 && (m->flags & CC_F_DIRTY)) {
            t->best_dirty = true;
        }
    }
    /* What the holder kept: S after a downgrade, nothing otherwise. */
    cc_holder was = d->owner.node == m->from ? d->owner : (cc_holder){m->from, m->rid};
    drop_holder(d, m->from);
    if (m->state == CC_S) add_sharer(d, was);
    dir_run(n, d);
}

void cc_dir_on_store_done(cc_node *n, uint64_t id, const char *key, int status, bool found,
                          const void *value, size_t len, cc_version version)
{
    cc_dir *d = ut_map_get(&n->dirs, key);
    if (!d || !d->tx || d->tx->store_waited != id || id == 0) return;
    d->tx->store_waited = 0;
    if (status < 0) {
        d->tx->store_retry_at = n->now + n->cfg.store_retry_ms;
        n->store_retries++;
        return;
    }
    if (found) take_stored(d, value, len, version);
    dir_run(n, d);
}

void cc_dirs_tick(cc_node *n, uint64_t now)
{
    if (!n->store_retries) return; /* the common case: nothing failed */
    const char *k;
    void *v;
    for (size_t it = 0; ut_map_next(&n->dirs, &it, &k, &v);) {
        cc_dir *d = v;
        cc_txn *t = d->tx;
        if (!t || !t->store_retry_at || now < t->store_retry_at) continue;
        t->store_retry_at = 0;
        n->store_retries--;
        cc_store_req *s = &t->store_again;
        t->store_waited = cc_store_issue(n, s->kind, d->key, s->value, s->len, s->version);
    }
}

void cc_dirs_on_view(cc_node *n)
{
    /* Rule 2: every entry and transaction of the old epoch goes. */
    cc_dirs_free(n);
    /* Keys this node is no longer home of leave its memory store: if it
     * became their home again later, it would serve what it kept. */
    size_t count = 0;
    char **drop = malloc((n->mem.count ? n->mem.count : 1) * sizeof *drop);
    if (!drop) abort();
    const char *k;
    void *v;
    for (size_t it = 0; ut_map_next(&n->mem, &it, &k, &v);)
        if (!n->member || cc_home_of(n, k, strlen(k)) != n->cfg.self) drop[count++] = (char *)k;
    for (size_t i = 0; i < count; i++) {
        char *key = cc_memdup(drop[i], strlen(drop[i]) + 1);
        cc_memval *mv = ut_map_del(&n->mem, key);
        free(key);
        free(mv->value);
        free(mv);
    }
    free(drop);
}
