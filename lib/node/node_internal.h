/*
 * node_internal.h: the node runtime's shared definitions.
 *
 * One loop thread owns every piece of service state (the lock table today;
 * Raft, the queue and the cache as they arrive). Public calls from any
 * thread become an nd_call, queued under a mutex and handed to the loop by
 * waking an eventfd; the caller sleeps on the call's semaphore until the
 * loop completes it. A call the loop cannot finish at once (an acquire with
 * wait_ms) is parked and completed later by an event or its deadline.
 */
#ifndef DSYNC_NODE_INTERNAL_H
#define DSYNC_NODE_INTERNAL_H

#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>

#include "dsync.h"
#include "dsync/metrics.h"
#include "lock/lock.h"
#include "node/fsm.h"
#include "store/store.h"
#include "util/util.h"

typedef enum {
    ND_CALL_LOCK_ACQUIRE = 1,
    ND_CALL_LOCK_RELEASE,
    ND_CALL_LOCK_STATE,
    ND_CALL_HEALTH,
} nd_call_kind;

typedef struct nd_call nd_call;
struct nd_call {
    nd_call_kind kind;
    int rc; /* result code, set by the loop */
    sem_t done;
    nd_call *next; /* in the submit queue, then in the parked list */

    uint64_t submitted_ns; /* for latency metrics */
    fsm_cmd cmd;           /* writes: the command appended for this call */
    uint64_t deadline_ms;  /* parked calls: when to give up waiting */

    union {
        struct {
            const dsync_lock_request *req;
            dsync_lock_result *res;
        } acquire;
        struct {
            const char *key;
            const char *client_id;
            int *was_waiting;
        } release;
        dsync_lock_state *state;
        dsync_health *health;
    } u;
};

/* Metric handles the loop updates; looked up once at open. */
typedef struct {
    dsync_series *acquire[3][3]; /* [mode S/X][result ok/wait/deadlock] */
    dsync_series *release_released;
    dsync_series *release_withdrawn;
    dsync_series *release_not_found;
    dsync_series *expired_holders;
    dsync_series *expired_waiters;
    dsync_series *held;
    dsync_series *waiting;
    dsync_series *keys;
    dsync_series *wait_seconds;  /* histogram: time from park to grant */
    dsync_series *fsync_seconds; /* histogram: one group commit */
    dsync_series *batch_entries; /* histogram: entries per group commit */
    dsync_series *snapshots;     /* counter */
} nd_lock_metrics;

struct dsync_node {
    dsync_config cfg;
    ut_logger log;
    uint64_t started_ms;

    pthread_t thread;
    int wake_fd; /* eventfd: callers write, the loop reads */

    pthread_mutex_t mu; /* guards the submit queue and closing only */
    nd_call *queue_head, *queue_tail;
    bool closing;

    /* Everything below belongs to the loop thread alone. */
    fsm fsm;                              /* the lock table and its clock */
    st_log *store;                        /* durable log; NULL when DSYNC_DATA_DIR is empty */
    bool store_broken;                    /* a write or fsync failed: refuse writes for good */
    uint64_t last_index;                  /* last entry appended */
    uint64_t snapshot_index;              /* last entry covered by the stored snapshot */
    uint64_t next_seq;                    /* request numbers of this node's commands */
    bool replaying;                       /* applying the log at open: no callers, no metrics */
    nd_call *pending_head, *pending_tail; /* appended, waiting for sync + apply */
    bool expire_pending;                  /* sweep is appended and waits for sync + apply */
    fsm_cmd sweep;                        /* the lease-expiry command of this turn */
    ut_buf scratch;                       /* command encoding */
    nd_call *parked;                      /* calls waiting for an event or their deadline */
    dsync_metrics *metrics;
    nd_lock_metrics lm;
};

/* node.c: hand a call to the loop and wait for it; returns call->rc. */
int nd_submit(dsync_node *n, nd_call *call);
/* node.c: finish a call and wake its caller. The call may be gone after. */
void nd_complete(nd_call *call, int rc);

/* node_locks.c: the lock service's half of the loop. */
int nd_locks_open(dsync_node *n);
void nd_locks_close(dsync_node *n);
void nd_locks_handle(dsync_node *n, nd_call *call, uint64_t now_ms);
/* Makes the entries appended this turn durable (one fsync for all of
 * them), applies them, and answers their callers. */
void nd_locks_flush(dsync_node *n);
/* Expires leases and parked calls due by now; returns the next deadline
 * (absolute ms) the loop must wake for, UINT64_MAX if none. */
uint64_t nd_locks_tick(dsync_node *n, uint64_t now_ms);

#endif
