/*
 * fsm.h: lock commands as they travel in Raft log entries, and their
 * application to the lock table.
 *
 * A command carries who proposed it (origin node, request sequence), so the
 * node that is waiting for it can recognise its own entry when it applies,
 * and the time the leader stamped on it, so every replica applies it at the
 * same instant. Time in the table never goes backwards: apply uses the
 * largest stamp seen so far.
 *
 * Encoding, little-endian: u8 version | u8 op | u64 origin | u64 seq |
 * u64 now_ms | op fields. ACQUIRE: u8 mode, u64 ttl_ms, u64 wait_ms,
 * u16 key length, key, u16 client length, client. RELEASE: key, client
 * as above. EXPIRE: nothing more. VIEW: u8 n, n x u64 node id.
 *
 * Besides the lock table the machine keeps the cluster's VIEW: the members
 * the leader last found alive, the index of the entry that said so, and
 * the view's EPOCH: max(previous epoch + 1, the leader's wall clock in ms x
 * 1024), computed as the entry applies, so every replica agrees on it.
 * Services placed by consistent hashing over live nodes (the queue with a
 * shared store, the cache) place on the view, so every replica agrees on an
 * owner at each index, and use the epoch to fence an old owner and to
 * version values. Being derived from the clock, epochs keep growing across
 * a cluster started over on empty data directories, or restored from a
 * backup, against the same Redis (a log index would start over).
 */
#ifndef DSYNC_NODE_FSM_H
#define DSYNC_NODE_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dsync.h"
#include "lock/lock.h"
#include "util/util.h"

#define FSM_VERSION 1

typedef enum {
    FSM_ACQUIRE = 1,
    FSM_RELEASE = 2,
    FSM_EXPIRE = 3, /* leader's lease sweep: lk_expire at now_ms */
    FSM_VIEW = 4,   /* leader's failure detector: the live members */
} fsm_op;

#define FSM_VIEW_MAX 64 /* members in a view, at most (RAFT_MAX_NODES or more) */

typedef struct {
    fsm_op op;
    uint64_t origin; /* node id that proposed it */
    uint64_t seq;    /* its request number on that node */
    uint64_t now_ms; /* leader's wall clock when proposed */
    dsync_lock_mode mode;
    uint64_t ttl_ms;
    uint64_t wait_ms;
    char key[DSYNC_LOCK_KEY_MAX + 1];
    char client_id[DSYNC_CLIENT_ID_MAX + 1];
    uint64_t live[FSM_VIEW_MAX]; /* VIEW: ids, strictly increasing */
    size_t n_live;
} fsm_cmd;

/* Appends the encoding of cmd to b. */
int fsm_encode(const fsm_cmd *cmd, ut_buf *b);
/* Decodes; DSYNC_ECORRUPT on anything malformed (bad version, op, mode,
 * lengths, trailing bytes). */
int fsm_decode(const void *data, size_t len, fsm_cmd *cmd);

/* The result of applying one command, for the node that waits on it. */
typedef struct {
    int rc;
    dsync_lock_result lock;
    int was_waiting;
} fsm_result;

typedef struct {
    lk_table *locks;
    uint64_t clock_ms;   /* largest now_ms applied: the table's time */
    uint64_t view_index; /* the entry of the current view; 0: none yet */
    uint64_t view_epoch; /* its epoch (see above); 0: none yet */
    uint64_t live[FSM_VIEW_MAX];
    size_t n_live;
} fsm;

int fsm_init(fsm *f);
void fsm_close(fsm *f);
/* Applies one lock command; fills res. Deterministic in (state, cmd). */
void fsm_apply(fsm *f, const fsm_cmd *cmd, fsm_result *res);
/* Applies a VIEW command committed at index. */
void fsm_apply_view(fsm *f, uint64_t index, const fsm_cmd *cmd);
/* Whether the view lists id. */
bool fsm_view_has(const fsm *f, uint64_t id);
/* Whether the view lists exactly ids[0..n) (any order). */
bool fsm_view_equals(const fsm *f, const uint64_t *ids, size_t n);

/* Snapshot of the whole machine (clock, view, lock table); restore leaves f
 * unchanged on DSYNC_ECORRUPT. */
int fsm_snapshot(const fsm *f, ut_buf *b);
int fsm_restore(fsm *f, const void *data, size_t len);

#endif
