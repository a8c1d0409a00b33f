/*
 * node_locks.c: the lock service inside the node loop.
 *
 * Validates and normalises public requests (default and maximum lease,
 * maximum wait), applies them to the pure lock table with the loop's clock,
 * parks acquires that asked to wait, and wakes them from the table's
 * events: a grant completes the parked call, a deadline answers "waiting".
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
    lk_counts(n->locks, &keys, &holders, &waiters);
    dsync_series_set(n->lm.keys, (double)keys);
    dsync_series_set(n->lm.held, (double)holders);
    dsync_series_set(n->lm.waiting, (double)waiters);
}

/* Removes and returns the first parked acquire for (key, client), or NULL. */
static nd_call *unpark(dsync_node *n, const char *key, const char *client_id)
{
    for (nd_call **pp = &n->parked; *pp; pp = &(*pp)->next) {
        nd_call *c = *pp;
        if (c->kind == ND_CALL_LOCK_ACQUIRE && strcmp(c->u.acquire.req->key, key) == 0 &&
            strcmp(c->u.acquire.req->client_id, client_id) == 0) {
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
    uint64_t now = ut_now_ms();
    switch (ev->kind) {
    case LK_EV_GRANTED: {
        nd_call *c;
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

int nd_locks_open(dsync_node *n)
{
    n->locks = lk_table_new();
    if (!n->locks) return DSYNC_ENOMEM;
    lk_table_set_listener(n->locks, on_event, n);

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
    update_gauges(n);
    return 0;
}

void nd_locks_close(dsync_node *n)
{
    lk_table_free(n->locks);
    n->locks = NULL;
}

static int check_name(const char *s, size_t max)
{
    if (!s) return DSYNC_EINVAL;
    size_t len = strnlen(s, max + 1);
    return len == 0 || len > max ? DSYNC_EINVAL : 0;
}

static void acquire(dsync_node *n, nd_call *call, uint64_t now_ms)
{
    const dsync_lock_request *req = call->u.acquire.req;
    dsync_lock_result *res = call->u.acquire.res;
    memset(res, 0, sizeof *res);
    if (check_name(req->key, DSYNC_LOCK_KEY_MAX) ||
        check_name(req->client_id, DSYNC_CLIENT_ID_MAX) ||
        (req->mode != DSYNC_LOCK_SHARED && req->mode != DSYNC_LOCK_EXCLUSIVE) ||
        req->ttl_ms > n->cfg.lock_max_ttl_ms || req->wait_ms > n->cfg.lock_max_wait_ms) {
        nd_complete(call, DSYNC_EINVAL);
        return;
    }
    lk_request lr = {
        .key = req->key,
        .client_id = req->client_id,
        .mode = req->mode,
        .ttl_ms = req->ttl_ms ? req->ttl_ms : n->cfg.lock_default_ttl_ms,
        .wait_ms = req->wait_ms,
        .now_ms = now_ms,
    };
    int rc = lk_acquire(n->locks, &lr, res);
    if (rc != 0) {
        nd_complete(call, rc);
        return;
    }
    int mi = mode_index(req->mode);
    switch (res->status) {
    case DSYNC_LOCK_GRANTED:
        dsync_series_add(n->lm.acquire[mi][RES_OK], 1);
        break;
    case DSYNC_LOCK_WAITING:
        dsync_series_add(n->lm.acquire[mi][RES_WAIT], 1);
        break;
    case DSYNC_LOCK_DEADLOCK:
        dsync_series_add(n->lm.acquire[mi][RES_DEADLOCK], 1);
        break;
    }
    update_gauges(n);
    if (res->status == DSYNC_LOCK_WAITING && req->wait_ms > 0) {
        call->deadline_ms = now_ms + req->wait_ms;
        call->next = n->parked;
        n->parked = call;
        return;
    }
    nd_complete(call, 0);
}

static void release(dsync_node *n, nd_call *call, uint64_t now_ms)
{
    const char *key = call->u.release.key, *client = call->u.release.client_id;
    if (check_name(key, DSYNC_LOCK_KEY_MAX) || check_name(client, DSYNC_CLIENT_ID_MAX)) {
        nd_complete(call, DSYNC_EINVAL);
        return;
    }
    int was_waiting = 0;
    int rc = lk_release(n->locks, key, client, now_ms, &was_waiting);
    if (rc == DSYNC_ENOTFOUND) {
        dsync_series_add(n->lm.release_not_found, 1);
    } else if (rc == 0) {
        dsync_series_add(was_waiting ? n->lm.release_withdrawn : n->lm.release_released, 1);
        /* A client withdrawing a request it is also blocked on (from another
         * thread) ends that wait: there is nothing left to wait for. */
        nd_call *c;
        while ((c = unpark(n, key, client)) != NULL)
            nd_complete(c, DSYNC_ENOTFOUND);
    }
    if (call->u.release.was_waiting) *call->u.release.was_waiting = was_waiting;
    update_gauges(n);
    nd_complete(call, rc);
}

void nd_locks_handle(dsync_node *n, nd_call *call, uint64_t now_ms)
{
    switch (call->kind) {
    case ND_CALL_LOCK_ACQUIRE:
        acquire(n, call, now_ms);
        return;
    case ND_CALL_LOCK_RELEASE:
        release(n, call, now_ms);
        return;
    case ND_CALL_LOCK_STATE:
        /* Expire first so the snapshot never shows a lease that has ended. */
        lk_expire(n->locks, now_ms);
        update_gauges(n);
        nd_complete(call, lk_state(n->locks, now_ms, call->u.state));
        return;
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
            /* Asking again renews the waiting request (the client is still
             * here) and gives its place in the queue as of now. */
            const dsync_lock_request *req = c->u.acquire.req;
            lk_request lr = {req->key,  req->client_id,
                             req->mode, req->ttl_ms ? req->ttl_ms : n->cfg.lock_default_ttl_ms,
                             0,         now_ms};
            nd_complete(c, lk_acquire(n->locks, &lr, c->u.acquire.res));
            continue;
        }
        if (c->deadline_ms < next) next = c->deadline_ms;
        pp = &c->next;
    }
    if (lk_expire(n->locks, now_ms) > 0) update_gauges(n);
    uint64_t lease = lk_next_deadline(n->locks);
    return lease < next ? lease : next;
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
