/*
 * lock.h: the lock table, a pure deterministic state machine.
 *
 * Shared/exclusive locks on named keys with FIFO wait queues, upgrades,
 * leases, fencing tokens and deadlock detection on the wait-for graph. No
 * clock, no I/O, no threads: time comes in as now_ms on every call, so the
 * same sequence of calls gives the same table on every replica (lib/raft
 * applies them from the log) and in every test.
 *
 * Rules:
 *  - A key is held by any number of S holders or by exactly one X holder.
 *  - A request is granted at once only when it is compatible with the
 *    holders and nobody waits on the key; otherwise it joins the tail of the
 *    key's FIFO queue, so a waiting X is never starved by later S requests.
 *    When holders leave, waiters are granted from the head, in order, while
 *    they are compatible; the first incompatible one stops the scan.
 *  - Acquiring again in the mode held (or a weaker one: S while holding X)
 *    renews the lease; while waiting in the same mode, it renews the
 *    waiting request's lease. Asking for another mode while waiting is
 *    DSYNC_EEXIST.
 *  - S->X upgrade: granted at once when the client is the only holder;
 *    otherwise the client keeps its S and waits for X at the head of the
 *    queue (ahead of ordinary waiters), as conversions do in System R.
 *  - Wait-for graph over clients: a waiter has an edge to every holder it is
 *    incompatible with (other than itself) and to every earlier waiter in
 *    the same queue it is incompatible with. The request that would close a
 *    cycle is refused with DSYNC_LOCK_DEADLOCK, names the cycle, and leaves
 *    the table exactly as it was.
 *  - Every grant takes a fencing token from one counter for the whole
 *    table: strictly larger than every earlier grant's.
 *  - Leases: a holder's lease ends ttl_ms after its grant or last renewal; a
 *    waiter's ends max(ttl_ms, wait_ms) after its request or last renewal.
 *    lk_expire() drops what has ended and grants the next waiters.
 */
#ifndef DSYNC_LOCK_H
#define DSYNC_LOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dsync.h"
#include "util/util.h"

typedef struct lk_table lk_table;

/* Something the table did on its own, as a side effect of a release, a
 * withdrawal or an expiry: the node uses it to wake callers blocked in
 * wait_ms and to count metrics. Pointers are valid during the callback. */
typedef enum {
    LK_EV_GRANTED = 1,      /* a waiter was granted (mode, fencing_token set) */
    LK_EV_EXPIRED = 2,      /* a holder's lease ended; its lock was released */
    LK_EV_WAIT_EXPIRED = 3, /* a waiter's lease ended; its request withdrawn */
} lk_event_kind;

typedef struct {
    lk_event_kind kind;
    const char *key;
    const char *client_id;
    dsync_lock_mode mode;
    uint64_t fencing_token;
    uint64_t lease_deadline; /* absolute, same time base as now_ms */
} lk_event;

typedef void (*lk_event_fn)(void *ctx, const lk_event *ev);

typedef struct {
    const char *key;       /* 1..DSYNC_LOCK_KEY_MAX bytes */
    const char *client_id; /* 1..DSYNC_CLIENT_ID_MAX bytes */
    dsync_lock_mode mode;
    uint64_t ttl_ms;  /* > 0: callers apply defaults and caps */
    uint64_t wait_ms; /* only lengthens a waiter's lease */
    uint64_t now_ms;
} lk_request;

/* New empty table; NULL on out of memory. */
lk_table *lk_table_new(void);
void lk_table_free(lk_table *t);

/* Events from release/expire (and from acquire, for grants made to others,
 * which never happens today but is allowed). fn may be NULL. */
void lk_table_set_listener(lk_table *t, lk_event_fn fn, void *ctx);

/* Acquire, per the rules above. Returns 0 with res filled (res->lease_ms is
 * the time left, from now_ms), DSYNC_EINVAL for bad arguments, DSYNC_EEXIST
 * for a different mode while waiting, DSYNC_ENOMEM with no change. */
int lk_acquire(lk_table *t, const lk_request *req, dsync_lock_result *res);

/* Releases client's hold on key, withdraws its waiting request, or both
 * (an S holder waiting to upgrade). *was_waiting = 1 when it only waited.
 * DSYNC_ENOTFOUND when it neither holds nor waits. Grants the next waiters. */
int lk_release(lk_table *t, const char *key, const char *client_id, uint64_t now_ms,
               int *was_waiting);

/* Drops every lease that ended at or before now_ms, granting waiters after
 * each. Returns how many holders and waiters were dropped. */
size_t lk_expire(lk_table *t, uint64_t now_ms);

/* 1-based place of client's waiting request in key's queue; 0 when it
 * does not wait there. Read-only. */
uint32_t lk_position(const lk_table *t, const char *key, const char *client_id);

/* Earliest lease deadline in the table, UINT64_MAX when it is empty. */
uint64_t lk_next_deadline(const lk_table *t);

/* Counts for gauges. */
void lk_counts(const lk_table *t, size_t *n_locks, size_t *n_holders, size_t *n_waiters);

/* The fencing token the next grant will take. */
uint64_t lk_next_token(const lk_table *t);

/* Fills out (see dsync.h) with every key sorted by name, holders in grant
 * order, waiters in queue order, lease_ms relative to now_ms, and every
 * wait-for edge. Free with dsync_lock_state_free(). */
int lk_state(const lk_table *t, uint64_t now_ms, dsync_lock_state *out);

/* Serializes the whole table (including the token counter) into b, in a
 * versioned, deterministic binary form; lk_table_restore() rebuilds a table
 * from it, DSYNC_ECORRUPT on anything malformed (the table is unchanged). */
int lk_table_snapshot(const lk_table *t, ut_buf *b);
int lk_table_restore(lk_table *t, const void *data, size_t len);

/* Checks every invariant: no incompatible holders, no waiter that should
 * have been granted, no cycle in the wait-for graph, indexes consistent.
 * Returns 0, or -1 with a description in err. For tests and debug builds. */
int lk_check_invariants(const lk_table *t, char *err, size_t errlen);

#endif
