/*
 * node_cache.c: the coherent cache inside the node loop.
 *
 * The protocol is lib/cache's pure core (directory MESI over the live
 * members); this file gives it its edges: calls from the public API,
 * ND_FRAME_CACHE frames from peers, the view (the live members the leader
 * commits through the log, fsm.h) as its epochs, the backing store (Redis
 * through the node's connection when DSYNC_REDIS_URL is set, else the home
 * node's memory), the clock, and metrics.
 *
 * Two duties the core leaves to its runtime (cache.h, "Views"):
 *  - A node cut off from the cluster must stop serving its copies before
 *    the others stop counting it: it answers cache calls only while in
 *    contact (in_contact below), and the leader drops a member from the
 *    view only after three election timeouts (nd_down_after_ms). The loop
 *    applies the entries that arrived before it handles calls, and after
 *    a long turn serves no copy for a while (node.c), so frames buffered
 *    during a stall cannot make an old view look current.
 *  - Frames lost with a broken connection (or dropped by the fault switch,
 *    or refused by the transport) could leave a transaction waiting
 *    forever: the node asks the leader for a new view epoch
 *    (ND_FRAME_VIEW_BUMP, until one applies), which aborts and retries
 *    what was in flight.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_internal.h"

typedef struct {
    uint64_t id;
    cc_store_kind kind;
    char key[CC_KEY_MAX + 1];
    void *value;
    size_t len;
    cc_version version;
    uint64_t epoch; /* the core's, when it asked: the store's fence (cache.h) */
} nc_store_req;

static bool redis_mode(const dsync_node *n)
{
    return n->cfg.redis_url[0] != '\0';
}

/* The core's epoch for the current view: the view's epoch (fsm.h), which
 * keeps growing across restarts, memory-only nodes and restored data
 * directories, so the versions values get in Redis do too. */
static uint64_t view_epoch(const dsync_node *n)
{
    return n->fsm.view_epoch;
}

/* Whether this node may answer from its copies: in touch with the cluster.
 * A follower heard its leader within an election timeout; a leader heard a
 * majority (itself included) within one; and neither just came out of a
 * long loop turn, after which frames saying otherwise may still be unread.
 * The leader drops a member from the view only after three election
 * timeouts without hearing it, so a node cut off stops serving first. */
static bool in_contact(const dsync_node *n)
{
    if (!n->net) return true;
    uint64_t now = ut_now_ms(), window = nd_election_ms(n);
    if (now < n->quiet_until) return false;
    uint64_t leader = raft_leader(n->raft);
    if (leader == 0) return false;
    if (leader != n->cfg.node_id) {
        uint64_t heard = nt_last_heard(n->net, leader);
        return heard && now - heard <= window;
    }
    size_t heard_from = 0;
    for (size_t i = 0; i < n->n_voters; i++) {
        uint64_t id = n->voters[i];
        uint64_t heard = id == n->cfg.node_id ? now : nt_last_heard(n->net, id);
        heard_from += heard && now - heard <= window;
    }
    return heard_from > n->n_voters / 2;
}

/* ---- metrics ----------------------------------------------------------- */

static const char *const reason_names[CC_REASON_MAX_] = {"write", "eviction", "view"};
static const char *const state_names[4] = {"I", "S", "E", "M"};

static void register_metrics(dsync_node *n)
{
    dsync_metrics *m = n->metrics;
    nd_cache_metrics *cm = &n->cm;
    cm->hits = dsync_metric_series0(
        dsync_metrics_counter(m, "cache_hits_total", "GETs answered from this node's copy.", NULL));
    cm->misses = dsync_metric_series0(dsync_metrics_counter(
        m, "cache_misses_total", "GETs that had to ask the key's home.", NULL));
    cm->evictions = dsync_metric_series0(dsync_metrics_counter(
        m, "cache_evictions_total", "Copies dropped by the LRU bounds or their TTL.", NULL));
    cm->writebacks = dsync_metric_series0(dsync_metrics_counter(
        m, "cache_writebacks_total", "Dirty values written back to the store.", NULL));
    dsync_metric *inv = dsync_metrics_counter(
        m, "cache_invalidation_total", "Copies on this node invalidated, by reason.", "reason");
    for (int i = 0; i < CC_REASON_MAX_; i++)
        cm->invalidations[i] = dsync_metric_series1(inv, reason_names[i]);
    dsync_metric *tr = dsync_metrics_counter(m, "cache_state_transitions_total",
                                             "MESI state changes of this node's copies.", "from,to");
    for (int f = 0; f < 4; f++)
        for (int t = 0; t < 4; t++)
            cm->transitions[f][t] =
                f == t ? NULL : dsync_metric_series2(tr, state_names[f], state_names[t]);
    cm->entries = dsync_metric_series0(
        dsync_metrics_gauge(m, "cache_entries", "Copies this node's cache holds.", NULL));
    cm->bytes = dsync_metric_series0(dsync_metrics_gauge(
        m, "cache_bytes", "Key and value bytes of the copies this node holds.", NULL));
    cm->dir_entries = dsync_metric_series0(dsync_metrics_gauge(
        m, "cache_directory_entries", "Keys this node keeps the directory of (as their home).",
        NULL));
    cm->get_seconds = dsync_metric_series0(dsync_metrics_histogram(
        m, "cache_get_seconds", "Time of a GET on this node, hits and misses.", NULL,
        dsync_metrics_latency_bounds, dsync_metrics_latency_n_bounds));
    cm->put_seconds = dsync_metric_series0(dsync_metrics_histogram(
        m, "cache_put_seconds", "Time of a PUT on this node, until every other copy is invalid.",
        NULL, dsync_metrics_latency_bounds, dsync_metrics_latency_n_bounds));
    cm->touch_log_full = dsync_metric_series0(dsync_metrics_counter(
        m, "cache_lru_touch_log_full_total",
        "Times the log of hits served on callers' threads filled up before the loop applied it "
        "to the LRU (some hits then did not count as uses).",
        NULL));
}

/* Counters only go up: add what the core counted since last time. */
static void update_metrics(dsync_node *n)
{
    cc_stats st, *was = &n->cache_stats;
    cc_get_stats(n->cache, &st);
    nd_cache_metrics *cm = &n->cm;
    dsync_series_add(cm->hits, (double)(st.hits - was->hits));
    dsync_series_add(cm->misses, (double)(st.misses - was->misses));
    dsync_series_add(cm->evictions, (double)(st.evictions - was->evictions));
    dsync_series_add(cm->writebacks, (double)(st.writebacks - was->writebacks));
    for (int i = 0; i < CC_REASON_MAX_; i++)
        dsync_series_add(cm->invalidations[i],
                         (double)(st.invalidations[i] - was->invalidations[i]));
    for (int f = 0; f < 4; f++)
        for (int t = 0; t < 4; t++)
            if (cm->transitions[f][t])
                dsync_series_add(cm->transitions[f][t],
                                 (double)(st.transitions[f][t] - was->transitions[f][t]));
    dsync_series_set(cm->entries, (double)st.entries);
    dsync_series_set(cm->bytes, (double)st.bytes);
    dsync_series_set(cm->dir_entries, (double)st.dir_entries);
    *was = st;
}

/* ---- answering calls ------------------------------------------------------ */

static char state_char(cc_state s)
{
    return s == CC_M ? 'M' : s == CC_E ? 'E' : s == CC_S ? 'S' : 'I';
}

/* ---- copies for readers on other threads -----------------------------------
 *
 * A GET that hits is answered on the caller's thread, without a trip to the
 * loop (the cost of two context switches is most of a hit's): the loop keeps
 * `copies`, a map of the lines readable here (key -> value, state, expiry),
 * behind a rwlock. The rules that keep it coherent:
 *  - only the loop writes it, and only from cc_peek, i.e. from the core's
 *    state at that moment (copies_sync: after each call on the key);
 *  - a key's copy goes before any peer message about the key is stepped
 *    (nd_cache_frame), so it is gone before an INV_ACK can leave; on an
 *    eviction (the core's drop listener); all of them on a view change;
 *  - readers use the copies only until copies_until, which each loop turn
 *    pushes half an election timeout ahead while the node is in contact: a
 *    loop that stalls stops the copies being served soon after.
 *
 * Touches. A hit served here must still count as a use in the core's LRU,
 * or a key only ever read would age as if unused and be the first evicted.
 * The first hit on a copy since the loop last looked appends the key to
 * n->touches (and marks the copy, so later hits cost one atomic load); at
 * the start of each turn, before anything there can evict, and again after
 * taking the turn's calls, the loop moves those keys to the LRU's recent
 * end (cc_touch) in the order they were first hit, and unmarks their
 * copies. A key can be logged twice (its copy replaced meanwhile):
 * harmless. The log is bounded (NC_TOUCH_MAX_BYTES): a reader that takes it
 * past half full wakes the loop; one that finds it full (or has no memory
 * to grow it) drops the touch, leaving the copy unmarked, and sets
 * touches_full, which keeps later readers off the lock until the loop has
 * emptied the log; cache_lru_touch_log_full_total counts the turns that
 * found it so. Those dropped hits do not count in the LRU. */

#define NC_TOUCH_MAX_BYTES (64u * 1024u)

typedef struct {
    char state;          /* 'M', 'E' or 'S' */
    atomic_bool touched; /* its key is in n->touches, not yet applied */
    uint64_t expires;    /* ut_now_ms time; 0: none */
    size_t len;
    char value[]; /* len bytes and a NUL */
} nc_copy;

static void copies_drop(dsync_node *n, const char *key)
{
    pthread_rwlock_wrlock(&n->copies_lock);
    free(ut_map_del(&n->copies, key));
    pthread_rwlock_unlock(&n->copies_lock);
}

static void copies_clear(dsync_node *n)
{
    void *v;
    pthread_rwlock_wrlock(&n->copies_lock);
    for (size_t it = 0; ut_map_next(&n->copies, &it, NULL, &v);)
        free(v);
    ut_map_close(&n->copies);
    ut_map_init(&n->copies);
    pthread_rwlock_unlock(&n->copies_lock);
}

static void on_drop(void *ctx, const char *key)
{
    copies_drop(ctx, key);
}

/* The key's copy as the core has it now. */
static void copies_sync(dsync_node *n, const char *key)
{
    const void *value;
    size_t len;
    cc_state s = cc_peek(n->cache, key, &value, &len);
    nc_copy *c = s == CC_I ? NULL : malloc(sizeof *c + len + 1);
    if (c) {
        c->state = state_char(s);
        atomic_init(&c->touched, false);
        c->expires = cc_peek_expiry(n->cache, key);
        c->len = len;
        if (len) memcpy(c->value, value, len);
        c->value[len] = '\0';
    }
    pthread_rwlock_wrlock(&n->copies_lock);
    free(ut_map_del(&n->copies, key));
    if (c && ut_map_put(&n->copies, key, c) != 0) free(c); /* out of memory: no copy */
    pthread_rwlock_unlock(&n->copies_lock);
}

/* A hit on c (key's copy; the caller holds copies_lock to read): its first
 * since the loop last applied touches goes into the log. */
static void note_touch(dsync_node *n, const char *key, nc_copy *c)
{
    /* Acquire, with the release below: a reader that skips because another
     * logged the key sees that append too, so its own later call still
     * finds the key applied first. */
    if (atomic_load_explicit(&c->touched, memory_order_acquire) ||
        atomic_load_explicit(&n->touches_full, memory_order_relaxed))
        return;
    size_t klen = strlen(key);
    bool wake = false;
    pthread_mutex_lock(&n->touch_lock);
    if (!atomic_load_explicit(&c->touched, memory_order_acquire)) {
        if (n->touches.len + klen + 1 <= NC_TOUCH_MAX_BYTES &&
            ut_buf_append(&n->touches, key, klen + 1) == 0) {
            atomic_store_explicit(&c->touched, true, memory_order_release);
            wake = n->touches.len > NC_TOUCH_MAX_BYTES / 2 &&
                   n->touches.len - (klen + 1) <= NC_TOUCH_MAX_BYTES / 2;
        } else {
            n->touches.oom = false; /* a failed append dropped only this touch */
            atomic_store_explicit(&n->touches_full, true, memory_order_relaxed);
            wake = true;
        }
    }
    pthread_mutex_unlock(&n->touch_lock);
    if (wake) nd_wake(n);
}

void nd_cache_touches(dsync_node *n)
{
    if (!n->cache) return;
    ut_buf *log = &n->touches_spare;
    pthread_mutex_lock(&n->touch_lock);
    ut_buf t = n->touches;
    n->touches = *log;
    *log = t;
    bool full = atomic_exchange_explicit(&n->touches_full, false, memory_order_relaxed);
    pthread_mutex_unlock(&n->touch_lock);
    if (full) dsync_series_add(n->cm.touch_log_full, 1);
    /* Only this thread changes the copies: it reads them without the lock. */
    for (size_t off = 0; off < log->len;) {
        const char *key = log->data + off;
        off += strlen(key) + 1;
        cc_touch(n->cache, key);
        nc_copy *c = ut_map_get(&n->copies, key);
        if (c) atomic_store_explicit(&c->touched, false, memory_order_relaxed);
    }
    log->len = 0;
}

/* A hit from the copies, on the caller's thread: true with the results
 * filled, false to go to the loop. */
static bool copies_get(dsync_node *n, const char *key, char **value, size_t *len, char *state)
{
    uint64_t now = ut_now_ms();
    if (now >= atomic_load(&n->copies_until)) return false;
    bool hit = false;
    pthread_rwlock_rdlock(&n->copies_lock);
    nc_copy *c = ut_map_get(&n->copies, key);
    if (c && (!c->expires || now < c->expires) && (*value = malloc(c->len + 1)) != NULL) {
        memcpy(*value, c->value, c->len + 1);
        *len = c->len;
        if (state) *state = c->state;
        hit = true;
        note_touch(n, key, c);
    }
    pthread_rwlock_unlock(&n->copies_lock);
    return hit;
}


/* Finishes a call with the result (for a GET, a copy of the value). */
/* Fills the caller's results (a GET's value copied); returns the call's
 * code. The call is completed separately, after the copies are synced. */
static int fill(dsync_node *n, nd_call *c, int status, cc_state state, const void *value,
                size_t len)
{
    bool get = c->kind == ND_CALL_CACHE_GET;
    dsync_series_observe(get ? n->cm.get_seconds : n->cm.put_seconds,
                         (double)(ut_now_ns() - c->submitted_ns) / 1e9);
    if (status == 0 && get) {
        char *copy = malloc(len + 1);
        if (!copy) return DSYNC_ENOMEM;
        if (len) memcpy(copy, value, len);
        copy[len] = '\0';
        *c->u.cache.value_out = copy;
        *c->u.cache.len_out = len;
    }
    if (c->u.cache.state_out) *c->u.cache.state_out = status == 0 ? state_char(state) : 0;
    /* ETIMEDOUT from the core: the outcome is unknown, as with no quorum. */
    return status == DSYNC_ETIMEDOUT ? DSYNC_EUNAVAILABLE : status;
}

static nd_call *take_waiting(dsync_node *n, uint64_t id)
{
    for (nd_call **pp = &n->c_waiting; *pp; pp = &(*pp)->next) {
        if ((*pp)->read_ctx != id) continue;
        nd_call *c = *pp;
        *pp = c->next;
        c->next = NULL;
        return c;
    }
    return NULL;
}

void nd_cache_handle(dsync_node *n, nd_call *call, uint64_t now_ms)
{
    if (!n->cache || !in_contact(n)) {
        nd_complete(call, DSYNC_EUNAVAILABLE);
        return;
    }
    cc_result res;
    int rc = call->kind == ND_CALL_CACHE_GET
                 ? cc_get(n->cache, call->u.cache.key, now_ms, &res)
                 : cc_put(n->cache, call->u.cache.key, call->u.cache.value, call->u.cache.len,
                          call->u.cache.ttl_ms, now_ms, &res);
    if (rc != 0) {
        nd_complete(call, rc);
        return;
    }
    if (res.done) {
        int status = fill(n, call, res.status, res.state, res.value, res.len);
        copies_sync(n, call->u.cache.key);
        nd_complete(call, status);
        return;
    }
    call->read_ctx = res.id;
    call->next = n->c_waiting;
    n->c_waiting = call;
}

/* ---- the core's output ------------------------------------------------------ */

static void store_requests_free(nc_store_req *reqs, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(reqs[i].value);
    free(reqs);
}

/* Runs the store requests against Redis and hands the answers back; a
 * failure is answered as such and the core retries. One pipelined round
 * trip for all of them, and one more for the loads behind writes that
 * Redis refused as older than what it holds (the home learns the newer
 * value): the loop blocks on Redis once or twice a turn, not once a
 * request. */
static void run_store(dsync_node *n, nc_store_req *reqs, size_t count, uint64_t now_ms)
{
    if (count == 0) return;
    rl_log *rl = nd_redis(n);
    /* ops: the requests, then the loads behind refused writes (again[k]
     * is the request of load k). */
    rl_cache_op *ops = calloc(2 * count, sizeof *ops), *loads = ops ? ops + count : NULL;
    size_t *again = calloc(count, sizeof *again), n_again = 0;
    ut_buf *vals = calloc(count, sizeof *vals);
    if (!rl || !ops || !again || !vals) {
        for (size_t i = 0; i < count; i++)
            cc_store_done(n->cache, reqs[i].id, reqs[i].key, rl ? DSYNC_ENOMEM : DSYNC_EUNAVAILABLE,
                          false, NULL, 0, (cc_version){0, 0}, now_ms);
        free(ops);
        free(again);
        free(vals);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        nc_store_req *r = &reqs[i];
        ut_buf_init(&vals[i]);
        ops[i] = (rl_cache_op){.store = r->kind != CC_STORE_LOAD, .key = r->key, .value = r->value,
                               .len = r->len, .epoch = r->version.epoch, .seq = r->version.seq,
                               .fence = r->epoch, .out = &vals[i]};
    }
    rl_cache_run(rl, ops, count);
    /* Writes refused as older: what Redis holds instead. A write refused
     * because a newer view has loaded the key fails: the core asks again
     * until that view reaches it and ends the transaction. */
    for (size_t i = 0; i < count; i++)
        if (ops[i].store && ops[i].rc == 0 && ops[i].fenced) {
            ops[i].rc = DSYNC_EUNAVAILABLE;
            snprintf(ops[i].error, sizeof ops[i].error, "refused: a newer view has loaded it");
        } else if (ops[i].store && ops[i].rc == 0 && !ops[i].stored) {
            loads[n_again] = (rl_cache_op){.key = reqs[i].key, .out = &vals[i]};
            again[n_again++] = i;
        }
    if (n_again) rl_cache_run(rl, loads, n_again);
    for (size_t k = 0; k < n_again; k++) {
        rl_cache_op *op = &ops[again[k]];
        op->rc = loads[k].rc;
        memcpy(op->error, loads[k].error, sizeof op->error);
        /* Gone meanwhile: not "the write took"; the core asks again. */
        if (op->rc == 0 && !loads[k].found) {
            op->rc = DSYNC_EUNAVAILABLE;
            snprintf(op->error, sizeof op->error, "refused as older, then gone");
        }
        op->found = loads[k].found;
        op->out_epoch = loads[k].out_epoch;
        op->out_seq = loads[k].out_seq;
    }
    for (size_t i = 0; i < count; i++) {
        rl_cache_op *op = &ops[i];
        if (op->rc != 0)
            ut_log(&n->log, op->fenced ? DSYNC_LOG_INFO : DSYNC_LOG_WARN,
                   "cache: Redis %s of \"%s\": %s", op->store ? "store" : "load", reqs[i].key,
                   op->error);
        cc_store_done(n->cache, reqs[i].id, reqs[i].key, op->rc, op->found, vals[i].data,
                      vals[i].len, (cc_version){op->out_epoch, op->out_seq}, now_ms);
        ut_buf_free(&vals[i]);
    }
    free(ops);
    free(again);
    free(vals);
}

void nd_cache_process(dsync_node *n)
{
    if (!n->cache) return;
    uint64_t now = ut_now_ms();
    bool sent = false;
    for (int round = 0; round < 64 && cc_has_ready(n->cache); round++) {
        cc_ready rd;
        cc_ready_get(n->cache, &rd);
        /* A frame the transport refuses is lost: the protocol needs a new
         * epoch to get past it (cache.h, "Views"). */
        for (size_t i = 0; i < rd.n_msgs; i++) {
            if (n->net && nt_send(n->net, rd.msgs[i].to, ND_FRAME_CACHE, rd.msgs[i].bytes,
                                  rd.msgs[i].len) != 0)
                nd_request_view_bump(n);
            sent = true;
        }
        /* Results are filled now (their values live until cc_advance), the
         * calls completed after it, once the copies reflect them. */
        nd_call *finished = NULL;
        for (size_t i = 0; i < rd.n_done; i++) {
            const cc_completion *d = &rd.done[i];
            nd_call *c = take_waiting(n, d->id);
            if (!c) continue;
            c->rc = fill(n, c, d->status, d->state, d->value, d->len);
            c->next = finished;
            finished = c;
        }
        /* The store's answers go back in after cc_advance: copy the asks. */
        nc_store_req *reqs = rd.n_store ? calloc(rd.n_store, sizeof *reqs) : NULL;
        size_t count = 0;
        for (size_t i = 0; reqs && i < rd.n_store; i++) {
            const cc_store_req *s = &rd.store[i];
            nc_store_req *r = &reqs[count];
            r->id = s->id;
            r->kind = s->kind;
            r->version = s->version;
            r->epoch = s->epoch;
            snprintf(r->key, sizeof r->key, "%s", s->key);
            r->len = s->len;
            if (s->kind == CC_STORE_WRITE && !(r->value = malloc(s->len ? s->len : 1))) break;
            if (s->kind == CC_STORE_WRITE && s->len) memcpy(r->value, s->value, s->len);
            count++;
        }
        /* What could not be copied (out of memory) is retried by the core
         * on its own: it never heard an answer. */
        cc_advance(n->cache, &rd);
        while (finished) {
            nd_call *c = finished;
            finished = c->next;
            c->next = NULL;
            copies_sync(n, c->u.cache.key);
            nd_complete(c, c->rc);
        }
        run_store(n, reqs, count, now);
        store_requests_free(reqs, count);
    }
    /* Out now, not at the next turn: each hop of a transaction is latency. */
    if (sent && n->net) nt_tick(n->net, ut_now_ms());
    update_metrics(n);
    uint64_t window = nd_election_ms(n);
    atomic_store(&n->copies_until, in_contact(n) ? ut_now_ms() + window / 2 : 0);
}

void nd_cache_frame(dsync_node *n, uint64_t from, const void *payload, size_t len)
{
    cc_msg m;
    if (!n->cache) return;
    if (cc_msg_decode(payload, len, &m) != 0) {
        ut_log(&n->log, DSYNC_LOG_WARN, "peer %" PRIu64 " sent a malformed cache message", from);
        return;
    }
    /* Whatever the message does to the key (an INV above all), no reader
     * may see the old copy once its answer has left: drop it first. */
    char key[CC_KEY_MAX + 1];
    memcpy(key, m.key, m.key_len);
    key[m.key_len] = '\0';
    copies_drop(n, key);
    if (cc_step(n->cache, from, &m, ut_now_ms()) != 0)
        ut_log(&n->log, DSYNC_LOG_WARN, "peer %" PRIu64 " sent a malformed cache message", from);
}

void nd_cache_view_changed(dsync_node *n)
{
    if (!n->cache || !n->fsm.view_index) return;
    uint64_t epoch = view_epoch(n);
    if (epoch <= cc_epoch(n->cache)) return; /* replayed: the core is past it */
    copies_clear(n);
    if (cc_set_view(n->cache, epoch, n->fsm.live, n->fsm.n_live) != 0)
        ut_log(&n->log, DSYNC_LOG_ERROR, "cache: view %" PRIu64 " refused", n->fsm.view_index);
}

uint64_t nd_cache_tick(dsync_node *n, uint64_t now_ms)
{
    if (!n->cache) return UINT64_MAX;
    /* Timeouts (seconds) and store retries (200 ms) are coarse, and
     * cc_tick walks every line and directory entry: every 100 ms. */
    if (now_ms >= n->cache_tick_due) {
        cc_tick(n->cache, now_ms);
        n->cache_tick_due = now_ms + 100;
    }
    /* Cache frames the transport may have lost without telling (a
     * connection that broke after carrying some, frames the fault switch
     * dropped on arrival): ask for a new epoch, which aborts and retries
     * whatever waited on them. Not for losses before the first view: no cache frame
     * had been sent. Nor for connections that only came up late: nothing
     * was lost on them. (Asking on every connection that came up made a
     * second view just after a cluster's first, failing the first PUTs in
     * flight with 503.) */
    if (n->net) {
        nt_stats st;
        nt_get_stats(n->net, &st);
        if (st.losses != n->losses_seen && cc_epoch(n->cache) > 0) nd_request_view_bump(n);
        n->losses_seen = st.losses;
    }
    return n->cache_tick_due;
}

/* ---- open and close ------------------------------------------------------------- */

int nd_cache_open(dsync_node *n)
{
    register_metrics(n);
    cc_config cfg = {
        .self = n->cfg.node_id,
        .policy = n->cfg.cache_write_through ? CC_WRITE_THROUGH : CC_WRITE_BACK,
        .external_store = redis_mode(n),
        .max_entries = (size_t)n->cfg.cache_max_entries,
        .max_bytes = (size_t)n->cfg.cache_max_bytes,
        .default_ttl_ms = n->cfg.cache_ttl_ms,
        .op_timeout_ms = ND_COMMIT_TIMEOUT_MS,
        .store_retry_ms = 200,
    };
    n->cache = cc_node_new(&cfg);
    if (!n->cache) return DSYNC_ENOMEM;
    if (pthread_rwlock_init(&n->copies_lock, NULL) != 0) {
        cc_node_free(n->cache);
        n->cache = NULL;
        return DSYNC_ENOMEM;
    }
    if (pthread_mutex_init(&n->touch_lock, NULL) != 0) {
        pthread_rwlock_destroy(&n->copies_lock);
        cc_node_free(n->cache);
        n->cache = NULL;
        return DSYNC_ENOMEM;
    }
    ut_buf_init(&n->touches);
    ut_buf_init(&n->touches_spare);
    atomic_init(&n->touches_full, false);
    ut_map_init(&n->copies);
    atomic_store(&n->copies_until, 0);
    cc_set_drop_listener(n->cache, on_drop, n);
    nd_cache_view_changed(n);
    return 0;
}

void nd_cache_close(dsync_node *n)
{
    while (n->c_waiting) {
        nd_call *c = n->c_waiting;
        n->c_waiting = c->next;
        nd_complete(c, DSYNC_ECLOSED);
    }
    if (!n->cache) return;
    copies_clear(n);
    ut_map_close(&n->copies);
    pthread_rwlock_destroy(&n->copies_lock);
    pthread_mutex_destroy(&n->touch_lock);
    ut_buf_free(&n->touches);
    ut_buf_free(&n->touches_spare);
    cc_node_free(n->cache);
    n->cache = NULL;
}

/* ---- public calls ------------------------------------------------------------------ */

int dsync_cache_get(dsync_node *n, const char *key, char **value, size_t *len, char *state)
{
    if (!n || !key || !value || !len) return DSYNC_EINVAL;
    *value = NULL;
    *len = 0;
    if (state) *state = 0;
    uint64_t start = ut_now_ns();
    if (copies_get(n, key, value, len, state)) {
        dsync_series_add(n->cm.hits, 1);
        dsync_series_observe(n->cm.get_seconds, (double)(ut_now_ns() - start) / 1e9);
        return 0;
    }
    nd_call call = {.kind = ND_CALL_CACHE_GET,
                    .u.cache = {.key = key, .value_out = value, .len_out = len, .state_out = state}};
    return nd_submit(n, &call);
}

int dsync_cache_put(dsync_node *n, const char *key, const void *value, size_t len,
                    uint64_t ttl_ms)
{
    if (!n || !key || (len && !value)) return DSYNC_EINVAL;
    nd_call call = {.kind = ND_CALL_CACHE_PUT,
                    .u.cache = {.key = key, .value = value, .len = len, .ttl_ms = ttl_ms}};
    return nd_submit(n, &call);
}
