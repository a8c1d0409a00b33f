/*
 * line.c: the requester side of the protocol: a node's lines, the local
 * operations queued on them, and what the node does with grants, replies
 * and invalidations from homes (see cache.h for the protocol and the view
 * rules this file applies on its side).
 */
#include <assert.h>

#include "cache_internal.h"

static bool valid_key(const char *key)
{
    if (!key) return false;
    size_t len = strnlen(key, CC_KEY_MAX + 1);
    return len >= 1 && len <= CC_KEY_MAX;
}

cc_line *cc_line_get(cc_node *n, const char *key, bool create)
{
    cc_line *l = ut_map_get(&n->lines, key);
    if (l || !create) return l;
    l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->key_len = strlen(key);
    l->key = cc_memdup(key, l->key_len + 1);
    if (ut_map_put(&n->lines, key, l) != 0) {
        free(l->key);
        free(l);
        return NULL;
    }
    return l;
}

/* Takes op off the node's timeout list. */
static void untime(cc_node *n, cc_op *op)
{
    if (!op->timed) return;
    if (op->tprev)
        op->tprev->tnext = op->tnext;
    else
        n->timers_head = op->tnext;
    if (op->tnext)
        op->tnext->tprev = op->tprev;
    else
        n->timers_tail = op->tprev;
    op->tprev = op->tnext = NULL;
    op->timed = false;
}

void cc_line_free(cc_node *n, cc_line *l)
{
    for (cc_op *op = l->ops, *next; op; op = next) {
        next = op->next;
        untime(n, op);
        free(op->value);
        free(op);
    }
    free(l->value);
    free(l->key);
    free(l);
}

/* Forgets a line nothing refers to any more. */
static void maybe_free(cc_node *n, cc_line *l)
{
    if (l->state != CC_I || l->txn != TX_NONE || l->ops) return;
    ut_map_del(&n->lines, l->key);
    cc_line_free(n, l);
}

static bool expired(const cc_node *n, const cc_line *l)
{
    return l->expires_at && n->now >= l->expires_at;
}

/* Completes the operation at the head of l's queue and drops it. */
static void finish_op(cc_node *n, cc_line *l, int status, cc_state state, const void *value,
                      size_t len)
{
    cc_op *op = l->ops;
    assert(op);
    cc_complete(n, op, status, state, value, len);
    l->ops = op->next;
    if (!l->ops) l->ops_tail = NULL;
    untime(n, op);
    free(op->value);
    free(op);
}

/* Sends request `kind` for l (its head operation's), pinning the line. */
static void start_txn(cc_node *n, cc_line *l, cc_txn_kind kind)
{
    static const cc_msg_type types[] = {[TX_GETS] = CC_MSG_GETS,
                                        [TX_GETM] = CC_MSG_GETM,
                                        [TX_WT] = CC_MSG_WT,
                                        [TX_PUTBACK] = CC_MSG_PUTBACK};
    l->txn = kind;
    l->rid = ++n->next_rid;
    l->home = cc_home_of(n, l->key, l->key_len);
    l->txn_epoch = n->epoch;
    cc_lru_pin(&n->lru, l);
    cc_msg m = {.type = types[kind],
                .from = n->cfg.self,
                .to = l->home,
                .epoch = n->epoch,
                .rid = l->rid,
                .key = l->key,
                .key_len = l->key_len};
    cc_op *op = l->ops;
    if (kind == TX_PUTBACK) {
        m.flags = CC_F_VALUE | CC_F_DIRTY;
        m.value = l->value;
        m.len = l->len;
        m.version = l->version;
    } else if (kind == TX_WT || (kind == TX_GETM && n->cfg.policy == CC_WRITE_THROUGH)) {
        m.flags = CC_F_VALUE;
        m.value = op->value;
        m.len = op->len;
        op->sent_value = true;
    }
    cc_send(n, &m);
}

/* The head PUT's value becomes l's, in M at version v. */
static void apply_put(cc_node *n, cc_line *l, cc_version v, bool dirty)
{
    cc_op *op = l->ops;
    size_t old_bytes = cc_line_bytes(l);
    cc_transition(n, l->state, CC_M);
    free(l->value); /* a held dirty value too: this one is newer */
    l->wb_held = false;
    l->value = op->value; /* moves */
    l->len = op->len;
    op->value = NULL;
    l->state = CC_M;
    l->dirty = dirty;
    l->version = v;
    uint64_t ttl = op->ttl_ms ? op->ttl_ms : n->cfg.default_ttl_ms;
    l->expires_at = ttl ? n->now + ttl : 0;
    if (l->counted)
        cc_lru_resize(&n->lru, l, old_bytes);
    else {
        cc_lru_add(&n->lru, l);
        if (l->txn != TX_NONE) cc_lru_pin(&n->lru, l);
    }
}

void cc_line_evict(cc_node *n, cc_line *l, cc_reason reason)
{
    assert(l->txn == TX_NONE && l->state != CC_I);
    if (n->on_drop) n->on_drop(n->on_drop_ctx, l->key);
    if (reason == CC_REASON_EVICTION) n->stats.evictions++;
    n->stats.invalidations[reason]++;
    cc_lru_remove(&n->lru, l);
    cc_transition(n, l->state, CC_I);
    bool dirty = l->dirty;
    l->state = CC_I;
    l->dirty = false;
    if (dirty && n->member) {
        /* The value stays here, outside the LRU, until the home has it. */
        n->stats.writebacks++;
        l->wb_held = true;
        start_txn(n, l, TX_PUTBACK);
        return;
    }
    free(l->value);
    l->value = NULL;
    l->len = 0;
    maybe_free(n, l);
}

void cc_line_enforce(cc_node *n)
{
    cc_line *victim;
    if (n->in_view) return;
    while ((victim = cc_lru_victim(&n->lru)))
        cc_line_evict(n, victim, CC_REASON_EVICTION);
}

void cc_line_run(cc_node *n, cc_line *l)
{
    while (l->txn == TX_NONE && l->ops) {
        cc_op *op = l->ops;
        if (l->state != CC_I && expired(n, l)) {
            cc_line_evict(n, l, CC_REASON_EVICTION);
            continue;
        }
        if (op->kind == CC_OP_GET) {
            if (l->state != CC_I) {
                if (!op->counted) n->stats.hits++;
                finish_op(n, l, 0, l->state, l->value, l->len);
                continue;
            }
            if (!op->counted) n->stats.misses++;
            op->counted = true;
            start_txn(n, l, TX_GETS);
        } else if (l->state == CC_E || l->state == CC_M) {
            if (n->cfg.policy == CC_WRITE_THROUGH) {
                start_txn(n, l, TX_WT);
            } else {
                /* E->M silently. A local write takes the next version in
                 * this epoch: above the line's, and above anything an
                 * older epoch made; the home learns it before it grants
                 * anyone else the line. */
                apply_put(n, l, cc_version_next(l->version, n->epoch), true);
                finish_op(n, l, 0, CC_M, NULL, 0);
            }
        } else {
            start_txn(n, l, TX_GETM);
        }
    }
    if (l->txn == TX_NONE) {
        cc_lru_unpin(&n->lru, l);
        cc_lru_touch(&n->lru, l); /* it was just used */
    }
    maybe_free(n, l);
    cc_line_enforce(n); /* may evict l itself, when it alone is too big */
}

/* ---- local operations ---------------------------------------------------- */

static int begin(cc_node *n, const char *key, uint64_t now)
{
    if (!valid_key(key)) return DSYNC_EINVAL;
    if (!n->ring || !n->member) return DSYNC_EUNAVAILABLE;
    n->now = now;
    return 0;
}

static cc_op *enqueue(cc_node *n, cc_line *l, cc_op_kind kind)
{
    cc_op *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->id = ++n->next_op;
    op->kind = kind;
    if (n->cfg.op_timeout_ms) {
        op->deadline = n->now + n->cfg.op_timeout_ms;
        op->timed = true;
        op->tprev = n->timers_tail;
        if (n->timers_tail)
            n->timers_tail->tnext = op;
        else
            n->timers_head = op;
        n->timers_tail = op;
    }
    if (l->ops_tail)
        l->ops_tail->next = op;
    else
        l->ops = op;
    l->ops_tail = op;
    return op;
}

int cc_get(cc_node *n, const char *key, uint64_t now, cc_result *res)
{
    int rc = begin(n, key, now);
    if (rc) return rc;
    memset(res, 0, sizeof *res);
    cc_line *l = cc_line_get(n, key, false);
    if (l && l->state != CC_I && l->txn == TX_NONE && !l->ops && !expired(n, l)) {
        /* The hit: no queue, no message. */
        n->stats.hits++;
        cc_lru_touch(&n->lru, l);
        *res = (cc_result){true, 0, 0, l->state, l->value, l->len};
        return 0;
    }
    l = cc_line_get(n, key, true);
    if (!l) return DSYNC_ENOMEM;
    cc_op *op = enqueue(n, l, CC_OP_GET);
    if (!op) {
        maybe_free(n, l);
        return DSYNC_ENOMEM;
    }
    res->id = op->id;
    cc_line_run(n, l);
    cc_after_call(n);
    return 0;
}

int cc_put(cc_node *n, const char *key, const void *value, size_t len, uint64_t ttl_ms,
           uint64_t now, cc_result *res)
{
    int rc = begin(n, key, now);
    if (rc) return rc;
    if (len > CC_VALUE_MAX) return DSYNC_ETOOBIG;
    if (len && !value) return DSYNC_EINVAL;
    memset(res, 0, sizeof *res);
    cc_line *l = cc_line_get(n, key, true);
    if (!l) return DSYNC_ENOMEM;
    cc_op *op = enqueue(n, l, CC_OP_PUT);
    if (!op) {
        maybe_free(n, l);
        return DSYNC_ENOMEM;
    }
    op->value = cc_memdup(value, len);
    op->len = len;
    op->ttl_ms = ttl_ms;
    res->id = op->id;
    cc_line_run(n, l);
    cc_after_call(n);
    return 0;
}

int cc_evict(cc_node *n, const char *key, uint64_t now)
{
    int rc = begin(n, key, now);
    if (rc) return rc;
    cc_line *l = cc_line_get(n, key, false);
    if (!l || l->state == CC_I || l->txn != TX_NONE || l->ops) return DSYNC_ENOTFOUND;
    cc_line_evict(n, l, CC_REASON_EVICTION);
    cc_after_call(n);
    return 0;
}

/* ---- messages from homes ------------------------------------------------- */

/* Obeys an INV now; l may be NULL (nothing here). Always answers. A dirty
 * value handed over stays here until SAVED (see cache.h). */
static void obey_inv(cc_node *n, cc_line *l, uint8_t mode, uint8_t reason, uint64_t hid,
                     uint64_t rid, uint64_t home, const char *key, size_t key_len)
{
    cc_msg ack = {.type = CC_MSG_INV_ACK,
                  .from = n->cfg.self,
                  .to = home,
                  .epoch = n->epoch,
                  .rid = rid,
                  .hid = hid,
                  .state = CC_I,
                  .key = key,
                  .key_len = key_len};
    if (l && l->wb_held) {
        /* A write-back or an earlier answer crossed this INV: the home
         * gets the value (again); the node keeps it until it is saved. */
        ack.flags = CC_F_VALUE | CC_F_DIRTY;
        ack.value = l->value;
        ack.len = l->len;
        ack.version = l->version;
        cc_send(n, &ack);
        return;
    }
    if (!l || l->state == CC_I) {
        cc_send(n, &ack);
        return;
    }
    ack.version = l->version;
    if (l->dirty) n->stats.writebacks++;
    if (mode == CC_INV_DOWNGRADE) {
        ack.flags = CC_F_VALUE | (l->dirty ? CC_F_DIRTY : 0);
        ack.value = l->value;
        ack.len = l->len;
        ack.state = CC_S;
        cc_send(n, &ack);
        cc_transition(n, l->state, CC_S);
        l->state = CC_S; /* still dirty until SAVED */
        return;
    }
    if (l->dirty) {
        ack.flags = CC_F_VALUE | CC_F_DIRTY;
        ack.value = l->value;
        ack.len = l->len;
    }
    cc_send(n, &ack);
    n->stats.invalidations[reason < CC_REASON_MAX_ ? reason : CC_REASON_WRITE]++;
    cc_lru_remove(&n->lru, l);
    cc_transition(n, l->state, CC_I);
    l->state = CC_I;
    if (l->dirty) {
        l->wb_held = true;
        if (l->txn == TX_NONE) l->txn = TX_SAVE;
        l->home = home;
        l->txn_epoch = n->epoch;
    } else {
        free(l->value);
        l->value = NULL;
        l->len = 0;
    }
    l->dirty = false;
}

/* Lets go of a held dirty value. */
static void release_wb(cc_line *l)
{
    if (!l->wb_held) return;
    l->wb_held = false;
    free(l->value);
    l->value = NULL;
    l->len = 0;
}

void cc_line_on_saved(cc_node *n, const cc_msg *m)
{
    cc_line *l = cc_line_get(n, m->key, false);
    if (!l || cc_version_cmp(l->version, m->version) > 0) return;
    if (l->wb_held) {
        release_wb(l);
        if (l->txn == TX_SAVE) {
            l->txn = TX_NONE;
            cc_line_run(n, l);
        }
        return;
    }
    if (l->state != CC_I) l->dirty = false;
}

void cc_line_on_inv(cc_node *n, const cc_msg *m)
{
    cc_line *l = cc_line_get(n, m->key, false);
    if (l && m->rid != 0 && m->rid == l->rid &&
        (l->txn == TX_GETS || l->txn == TX_GETM || l->txn == TX_WT)) {
        /* It revokes what our request in flight is being granted: obey
         * once the grant is here. */
        if (l->inv_deferred) {
            n->stats.msgs_dropped++;
            return;
        }
        l->inv_deferred = true;
        l->inv_mode = m->mode;
        l->inv_reason = m->reason;
        l->inv_hid = m->hid;
        l->inv_from = m->from;
        return;
    }
    obey_inv(n, l, m->mode, m->reason, m->hid, m->rid, m->from, m->key, m->key_len);
    if (l) maybe_free(n, l);
}

/* The deferred INV, once the grant it follows is in. */
static void obey_deferred(cc_node *n, cc_line *l)
{
    if (!l->inv_deferred) return;
    l->inv_deferred = false;
    obey_inv(n, l, l->inv_mode, l->inv_reason, l->inv_hid, l->rid, l->inv_from, l->key, l->key_len);
}

/* Whether m answers l's request in flight. */
static bool answers(const cc_node *n, const cc_line *l, const cc_msg *m)
{
    return l && l->txn != TX_NONE && l->rid == m->rid && l->home == m->from &&
           l->txn_epoch == n->epoch;
}

void cc_line_on_grant(cc_node *n, const cc_msg *m)
{
    cc_line *l = cc_line_get(n, m->key, false);
    if (!answers(n, l, m) || (l->txn != TX_GETS && l->txn != TX_GETM) ||
        (l->txn == TX_GETS) != (m->state != CC_M) || !l->ops) {
        n->stats.msgs_dropped++;
        return;
    }
    cc_txn_kind kind = l->txn;
    l->txn = TX_NONE;
    if (kind == TX_GETS) {
        if (m->state == CC_I) {
            finish_op(n, l, DSYNC_ENOTFOUND, CC_I, NULL, 0);
        } else {
            assert(l->state == CC_I && !l->counted && !l->wb_held);
            free(l->value);
            l->value = cc_memdup(m->value, m->len);
            l->len = m->len;
            l->version = m->version;
            l->dirty = false;
            cc_transition(n, CC_I, (cc_state)m->state);
            l->state = (cc_state)m->state;
            l->expires_at = n->cfg.default_ttl_ms ? n->now + n->cfg.default_ttl_ms : 0;
            cc_lru_add(&n->lru, l);
            finish_op(n, l, 0, l->state, l->value, l->len);
        }
    } else {
        /* Write-through: the home stored the value at this version first. */
        apply_put(n, l, m->version, n->cfg.policy == CC_WRITE_BACK);
        finish_op(n, l, 0, CC_M, NULL, 0);
    }
    obey_deferred(n, l);
    cc_line_run(n, l);
}

void cc_line_on_reply(cc_node *n, const cc_msg *m)
{
    cc_line *l = cc_line_get(n, m->key, false);
    if (!answers(n, l, m)) {
        n->stats.msgs_dropped++;
        return;
    }
    if (m->type == CC_MSG_NACK && l->txn == TX_WT && l->ops) {
        /* The home does not count us as the owner (it revoked the line,
         * or its entry is new): win the line the long way. */
        l->txn = TX_NONE;
        obey_deferred(n, l);
        start_txn(n, l, TX_GETM);
        return;
    }
    if (m->type == CC_MSG_WT_ACK && l->txn == TX_WT && l->ops) {
        l->txn = TX_NONE;
        apply_put(n, l, m->version, false);
        finish_op(n, l, 0, CC_M, NULL, 0);
        obey_deferred(n, l);
        cc_line_run(n, l);
        return;
    }
    if (m->type == CC_MSG_PUTBACK_ACK && l->txn == TX_PUTBACK) {
        l->txn = TX_NONE;
        release_wb(l);
        cc_line_run(n, l);
        return;
    }
    n->stats.msgs_dropped++;
}

/* ---- views and time ---------------------------------------------------- */

void cc_lines_on_view(cc_node *n, const qr_ring *old_ring)
{
    size_t count = n->lines.count, k = 0;
    cc_line **all = malloc((count ? count : 1) * sizeof *all);
    if (!all) abort();
    const char *key;
    void *v;
    for (size_t it = 0; ut_map_next(&n->lines, &it, &key, &v);)
        all[k++] = v;
    n->in_view = true; /* no evictions that would free lines in `all` */
    for (k = 0; k < count; k++) {
        cc_line *l = all[k];
        l->inv_deferred = false; /* its epoch is over */
        if (!n->member) {
            /* Rule 5: nothing to serve, nobody to write back to. */
            for (cc_op *op = l->ops; op; op = op->next)
                cc_complete(n, op, DSYNC_EUNAVAILABLE, CC_I, NULL, 0);
            if (l->state != CC_I) {
                n->stats.invalidations[CC_REASON_VIEW]++;
                cc_transition(n, l->state, CC_I);
                if (n->on_drop) n->on_drop(n->on_drop_ctx, l->key);
            }
            cc_lru_remove(&n->lru, l);
            ut_map_del(&n->lines, l->key);
            cc_line_free(n, l);
            continue;
        }
        /* Rule 4: requests in flight start again in this epoch. */
        cc_txn_kind txn = l->txn;
        l->txn = TX_NONE;
        if (txn == TX_WT || (txn == TX_GETM && l->ops->sent_value)) {
            /* Its value may be in the store already: outcome unknown. */
            finish_op(n, l, DSYNC_EUNAVAILABLE, CC_I, NULL, 0);
        }
        if (l->wb_held) {
            /* A dirty value the old epoch may not have saved: to the
             * key's home in this one (versions make a repeat harmless). */
            start_txn(n, l, TX_PUTBACK);
            continue;
        }
        /* Rule 3: a line whose home moved goes, a dirty one written back.
         * A line whose write-through was cut short goes too: the store
         * may hold a newer value than the line. */
        bool moved = !old_ring ||
                     qr_owner(old_ring, l->key, l->key_len) != cc_home_of(n, l->key, l->key_len);
        if ((moved || txn == TX_WT) && l->state != CC_I) {
            bool stays = l->ops || (l->state == CC_M && l->dirty);
            cc_line_evict(n, l, CC_REASON_VIEW);
            if (!stays) continue; /* freed */
        }
        if (l->txn == TX_NONE && l->ops)
            cc_line_run(n, l);
        else if (l->txn == TX_NONE) {
            cc_lru_unpin(&n->lru, l);
            maybe_free(n, l);
        }
    }
    free(all);
    n->in_view = false;
    cc_line_enforce(n);
}

void cc_lines_tick(cc_node *n, uint64_t now)
{
    /* O(operations timing out): the list is in deadline order. */
    while (n->timers_head && n->timers_head->deadline <= now) {
        cc_op *op = n->timers_head;
        untime(n, op);
        cc_complete(n, op, DSYNC_ETIMEDOUT, CC_I, NULL, 0);
    }
}
