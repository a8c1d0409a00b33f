/*
 * node_locks.c: the lock service inside the node loop.
 *
 * Writes go through the replicated log: a call becomes a command
 * (lib/node/fsm.h) that Raft commits on a majority (node_raft.c); every
 * replica applies it to its own lock table at the same logical instant
 * (the leader's clock, stamped on the command), and the node the call
 * arrived on answers it from the result. Nothing is answered before its
 * entry is durable on a majority, so a node killed at any moment loses no
 * granted lock and no fencing token. Lease expiry is a command too, which
 * only the leader proposes, so every replica expires the same leases at
 * the same instants. Reads of /locks/state wait for a ReadIndex.
 */
#include <stdlib.h>
#include <string.h>

#include "node_internal.h"
enum { RES_OK = 0, RES_WAIT = 1, RES_DEADLOCK = 2 };

static int mode_index(dsync_lock_mode m)
{
    return m == DSYNC_LOCK_EXCLUSIVE ? 1 : 0;
}

static void update_gauges(dsync_node *n)
{
    size_t keys, holders, waiters;
    lk_counts(n->fsm.locks, &keys, &holders, &waiters);
    dsync_series_set(n->lm.keys, (double)keys);
    dsync_series_set(n->lm.held, (double)holders);
    dsync_series_set(n->lm.waiting, (double)waiters);
}

/* Removes and returns the first parked acquire for (key, client), or NULL. */
static nd_call *unpark(dsync_node *n, const char *key, const char *client_id)
{
    for (nd_call **pp = &n->parked; *pp; pp = &(*pp)->next) {
        nd_call *c = *pp;
        if (strcmp(c->cmd.key, key) == 0 && strcmp(c->cmd.client_id, client_id) == 0) {
            *pp = c->next;
            c->next = NULL;
            return c;
        }
    }
    return NULL;
}

static void on_event(void *ctx, const lk_event *ev)
{
    dsync_node *n = ctx;
    uint64_t now = n->fsm.clock_ms;
    switch (ev->kind) {
    case LK_EV_GRANTED: {
        nd_call *c;
        update_gauges(n);
        /* One client may have several callers blocked on the same grant. */
        while ((c = unpark(n, ev->key, ev->client_id)) != NULL) {
            dsync_lock_result *res = c->u.acquire.res;
            memset(res, 0, sizeof *res);
            res->status = DSYNC_LOCK_GRANTED;
            res->fencing_token = ev->fencing_token;
            res->lease_ms = ev->lease_deadline > now ? ev->lease_deadline - now : 0;
            dsync_series_observe(n->lm.wait_seconds, (double)(ut_now_ns() - c->submitted_ns) / 1e9);
            nd_complete(c, 0);
        }
        return;
    }
    case LK_EV_EXPIRED:
        dsync_series_add(n->lm.expired_holders, 1);
        ut_log(&n->log, DSYNC_LOG_INFO, "lease of %s on %s expired", ev->client_id, ev->key);
        return;
    case LK_EV_WAIT_EXPIRED: {
        dsync_series_add(n->lm.expired_waiters, 1);
        nd_call *c;
        while ((c = unpark(n, ev->key, ev->client_id)) != NULL)
            nd_complete(c, DSYNC_ETIMEDOUT);
        return;
    }
    }
}

static void register_metrics(dsync_node *n)
{
    dsync_metrics *m = n->metrics;
    dsync_metric *acq = dsync_metrics_counter(
        m, "locks_acquire_total", "Lock acquire requests by mode and outcome.", "mode,result");
    static const char *const results[3] = {"ok", "wait", "deadlock"};
    for (int mi = 0; mi < 2; mi++)
        for (int ri = 0; ri < 3; ri++)
            n->lm.acquire[mi][ri] = dsync_metric_series2(acq, mi ? "X" : "S", results[ri]);
    dsync_metric *rel = dsync_metrics_counter(m, "locks_release_total",
                                              "Lock release requests by outcome.", "result");
    n->lm.release_released = dsync_metric_series1(rel, "released");
    n->lm.release_withdrawn = dsync_metric_series1(rel, "withdrawn");
    n->lm.release_not_found = dsync_metric_series1(rel, "not_found");
    dsync_metric *exp = dsync_metrics_counter(
        m, "locks_lease_expired_total", "Leases that ended without renewal, by party.", "party");
    n->lm.expired_holders = dsync_metric_series1(exp, "holder");
    n->lm.expired_waiters = dsync_metric_series1(exp, "waiter");
    n->lm.held = dsync_metric_series0(dsync_metrics_gauge(
        m, "locks_held", "Lock holder entries (one per client per key).", NULL));
    n->lm.waiting = dsync_metric_series0(
        dsync_metrics_gauge(m, "locks_waiting", "Lock requests waiting in a queue.", NULL));
    n->lm.keys = dsync_metric_series0(
        dsync_metrics_gauge(m, "locks_keys", "Keys with a holder or a waiter.", NULL));
    n->lm.wait_seconds = dsync_metric_series0(dsync_metrics_histogram(
        m, "locks_wait_seconds", "Time a blocking acquire waited before its grant.", NULL,
        dsync_metrics_latency_bounds, dsync_metrics_latency_n_bounds));
    n->lm.fsync_seconds = dsync_metric_series0(dsync_metrics_histogram(
        m, "log_fsync_seconds", "Time of one group commit (write + fdatasync) of the log.", NULL,
        dsync_metrics_latency_bounds, dsync_metrics_latency_n_bounds));
    static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    n->lm.batch_entries = dsync_metric_series0(dsync_metrics_histogram(
        m, "log_batch_entries", "Log entries made durable by one group commit.", NULL, batch_bounds,
        sizeof batch_bounds / sizeof batch_bounds[0]));
    dsync_metric *fl = dsync_metrics_counter(
        m, "log_flushes_total",
        "Group commits of the log, by the thread that ran them: the writer, or the loop when "
        "the disk had been idle (light load).",
        "thread");
    n->lm.flushes_loop = dsync_metric_series1(fl, "loop");
    n->lm.flushes_writer = dsync_metric_series1(fl, "writer");
    n->lm.snapshots = dsync_metric_series0(dsync_metrics_counter(
        m, "log_snapshots_total", "Snapshots taken of the lock table.", NULL));
}

int nd_locks_open(dsync_node *n)
{
    int rc = fsm_init(&n->fsm);
    if (rc != 0) return rc;
    lk_table_set_listener(n->fsm.locks, on_event, n);
    ut_buf_init(&n->scratch);
    register_metrics(n);
    return 0;
}

void nd_locks_close(dsync_node *n)
{
    fsm_close(&n->fsm);
    ut_buf_free(&n->scratch);
}

static int check_name(const char *s, size_t max)
{
    if (!s) return DSYNC_EINVAL;
    size_t len = strnlen(s, max + 1);
    return len == 0 || len > max ? DSYNC_EINVAL : 0;
}

static void submit(dsync_node *n, nd_call *call)
{
    int rc = nd_propose(n, call);
    if (rc != 0) {
        if (rc == DSYNC_EUNAVAILABLE) dsync_series_add(n->rm.refused, 1);
        nd_complete(call, rc);
    }
}

static void submit_acquire(dsync_node *n, nd_call *call)
{
    const dsync_lock_request *req = call->u.acquire.req;
    memset(call->u.acquire.res, 0, sizeof *call->u.acquire.res);
    if (check_name(req->key, DSYNC_LOCK_KEY_MAX) ||
        check_name(req->client_id, DSYNC_CLIENT_ID_MAX) ||
        (req->mode != DSYNC_LOCK_SHARED && req->mode != DSYNC_LOCK_EXCLUSIVE) ||
        req->ttl_ms > n->cfg.lock_max_ttl_ms || req->wait_ms > n->cfg.lock_max_wait_ms) {
        nd_complete(call, DSYNC_EINVAL);
        return;
    }
    fsm_cmd *c = &call->cmd;
    memset(c, 0, sizeof *c);
    c->op = FSM_ACQUIRE;
    c->mode = req->mode;
    c->ttl_ms = req->ttl_ms ? req->ttl_ms : n->cfg.lock_default_ttl_ms;
    c->wait_ms = req->wait_ms;
    strcpy(c->key, req->key);
    strcpy(c->client_id, req->client_id);
    submit(n, call);
}

static void submit_release(dsync_node *n, nd_call *call)
{
    const char *key = call->u.release.key, *client = call->u.release.client_id;
    if (check_name(key, DSYNC_LOCK_KEY_MAX) || check_name(client, DSYNC_CLIENT_ID_MAX)) {
        nd_complete(call, DSYNC_EINVAL);
        return;
    }
    fsm_cmd *c = &call->cmd;
    memset(c, 0, sizeof *c);
    c->op = FSM_RELEASE;
    strcpy(c->key, key);
    strcpy(c->client_id, client);
    submit(n, call);
}

/* Answers one call from the result of applying its command. */
static void answer(dsync_node *n, nd_call *call, const fsm_result *r)
{
    if (call->kind == ND_CALL_LOCK_RELEASE) {
        if (r->rc == DSYNC_ENOTFOUND) {
            dsync_series_add(n->lm.release_not_found, 1);
        } else if (r->rc == 0) {
            dsync_series_add(r->was_waiting ? n->lm.release_withdrawn : n->lm.release_released, 1);
            /* A client withdrawing a request it is also blocked on (from
             * another thread) ends that wait: nothing is left to wait for. */
            nd_call *c;
            while ((c = unpark(n, call->cmd.key, call->cmd.client_id)) != NULL)
                nd_complete(c, DSYNC_ENOTFOUND);
        }
        if (call->u.release.was_waiting) *call->u.release.was_waiting = r->was_waiting;
        nd_complete(call, r->rc);
        return;
    }
    dsync_lock_result *res = call->u.acquire.res;
    *res = r->lock;
    if (r->rc != 0) {
        nd_complete(call, r->rc);
        return;
    }
    int mi = mode_index(call->cmd.mode);
    int ri = res->status == DSYNC_LOCK_GRANTED   ? RES_OK
             : res->status == DSYNC_LOCK_WAITING ? RES_WAIT
                                                 : RES_DEADLOCK;
    dsync_series_add(n->lm.acquire[mi][ri], 1);
    if (res->status == DSYNC_LOCK_WAITING && call->cmd.wait_ms > 0) {
        call->deadline_ms = ut_now_ms() + call->cmd.wait_ms;
        call->next = n->parked;
        n->parked = call;
        return;
    }
    nd_complete(call, 0);
}

void nd_locks_apply(dsync_node *n, const fsm_cmd *cmd, nd_call *mine)
{
    fsm_result r;
    fsm_apply(&n->fsm, cmd, &r);
    /* Gauges first: an answered caller may read /metrics at once. */
    update_gauges(n);
    if (mine) answer(n, mine, &r);
}

void nd_locks_update_gauges(dsync_node *n)
{
    update_gauges(n);
}

void nd_locks_serve_read(dsync_node *n, nd_call *call)
{
    uint64_t now = ut_wall_ms();
    nd_complete(
        call, lk_state(n->fsm.locks, n->fsm.clock_ms > now ? n->fsm.clock_ms : now, call->u.state));
}

void nd_locks_handle(dsync_node *n, nd_call *call, uint64_t now_ms)
{
    switch (call->kind) {
    case ND_CALL_LOCK_ACQUIRE:
        submit_acquire(n, call);
        return;
    case ND_CALL_LOCK_RELEASE:
        submit_release(n, call);
        return;
    case ND_CALL_LOCK_STATE: {
        /* Linearizable: the state covers every write acknowledged before
         * the read arrived, on any node. */
        int rc = nd_read(n, call);
        if (rc != 0) {
            dsync_series_add(n->rm.refused, 1);
            nd_complete(call, rc);
        }
        return;
    }
    default:
        nd_complete(call, DSYNC_EINVAL);
        return;
    }
}

uint64_t nd_locks_tick(dsync_node *n, uint64_t now_ms)
{
    /* Parked calls first: a waiter's lease is at least its wait, so a call
     * whose wait ends now answers "waiting" before its lease can lapse. */
    uint64_t next = UINT64_MAX;
    for (nd_call **pp = &n->parked; *pp;) {
        nd_call *c = *pp;
        if (c->deadline_ms <= now_ms) {
            *pp = c->next;
            c->next = NULL;
            /* The answer is the client's place in the queue as of now. */
            dsync_lock_result *res = c->u.acquire.res;
            res->status = DSYNC_LOCK_WAITING;
            res->position = lk_position(n->fsm.locks, c->cmd.key, c->cmd.client_id);
            nd_complete(c, res->position == 0 ? DSYNC_ETIMEDOUT : 0);
            continue;
        }
        if (c->deadline_ms < next) next = c->deadline_ms;
        pp = &c->next;
    }
    /* Lease expiry is a logged command the leader proposes, so every
     * replica expires exactly the same leases at the same instants, and a
     * restart replays them. One sweep in flight at a time. */
    uint64_t wall = ut_wall_ms();
    uint64_t lease = lk_next_deadline(n->fsm.locks);
    bool leader = raft_get_role(n->raft) == RAFT_LEADER;
    if (leader && n->sweep_index && n->sweep_term != raft_term(n->raft)) n->sweep_index = 0;
    if (lease <= wall && leader && !n->sweep_index) {
        fsm_cmd sweep = {.op = FSM_EXPIRE};
        n->sweep_index = nd_propose_internal(n, &sweep);
        n->sweep_term = raft_term(n->raft);
    }
    /* Wake for the lease; while a sweep is in flight, its commit wakes us. */
    if (lease != UINT64_MAX && leader && !n->sweep_index) {
        uint64_t in = lease > wall ? lease - wall : 0;
        if (now_ms + in < next) next = now_ms + in;
    }
    return next;
}

/* ---- public calls -------------------------------------------------------- */

int dsync_lock_acquire(dsync_node *n, const dsync_lock_request *req, dsync_lock_result *result)
{
    if (!n || !req || !result) return DSYNC_EINVAL;
    nd_call call = {.kind = ND_CALL_LOCK_ACQUIRE, .u.acquire = {req, result}};
    return nd_submit(n, &call);
}

int dsync_lock_release(dsync_node *n, const char *key, const char *client_id, int *was_waiting)
{
    if (!n) return DSYNC_EINVAL;
    nd_call call = {.kind = ND_CALL_LOCK_RELEASE, .u.release = {key, client_id, was_waiting}};
    return nd_submit(n, &call);
}

int dsync_lock_state_get(dsync_node *n, dsync_lock_state *out)
{
    if (!n || !out) return DSYNC_EINVAL;
    memset(out, 0, sizeof *out);
    nd_call call = {.kind = ND_CALL_LOCK_STATE, .u.state = out};
    return nd_submit(n, &call);
}
