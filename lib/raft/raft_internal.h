/*
 * raft_internal.h: the Raft core's state, shared by its files: raft.c
 * (roles, elections, replication, ready), send.c (to whom a leader sends
 * entries and the commit index when), read.c (ReadIndex), snapshot.c
 * (compaction, InstallSnapshot), conf.c (membership), codec.c.
 */
#ifndef DSYNC_RAFT_INTERNAL_H
#define DSYNC_RAFT_INTERNAL_H

#include "raft.h"

/* A follower's replication state: probing for where its log matches,
 * replicating with pipelined appends, or waiting for a snapshot. */
typedef enum { PR_PROBE, PR_REPLICATE, PR_SNAPSHOT } pr_state;

typedef struct {
    uint64_t id;
    uint64_t match, next;
    pr_state state;
    bool probe_sent;    /* probe: one append out, wait for its answer */
    size_t inflight;    /* replicate: appends not yet acknowledged */
    bool recent_active; /* heard from within this election timeout */
    bool vote_granted, vote_answered;
    uint64_t hb_match;         /* match at the previous heartbeat answer */
    uint64_t sent_commit;      /* the highest commit index sent to it */
    bool waiting;              /* its latest answer said callers wait there */
    uint64_t wants;            /* the highest index it is to hear committed at once
                                  (raft_tell_commit_at, raft_peer_wants_commit) */
    uint64_t catch_up;         /* entries up to here go to it now, lazy or not */
    unsigned quiet;            /* leader ticks since its last answer */
    uint64_t read_ack;         /* highest read round this follower confirmed */
    uint64_t pending_snapshot; /* snapshot: the index sent */
    unsigned snapshot_wait;    /* snapshot: heartbeat answers since it was sent */
} progress;

/* A read waiting for a heartbeat round to confirm the leader (§6.4). */
typedef struct {
    uint64_t context, index, from, round; /* from 0: asked locally */
} pending_read;

struct raft {
    raft_config cfg;
    uint64_t voters[RAFT_MAX_NODES]; /* the current configuration's ids */
    size_t n;
    progress pr[RAFT_MAX_NODES];

    raft_role role;
    uint64_t term, vote, leader, commit, applied;
    raft_hard_state saved_hs; /* what the caller last persisted */

    /* The log holds entries (snap_index, last]: log[i] is index
     * snap_index + 1 + i. Before them, the snapshot. */
    raft_entry *log;
    uint64_t last;
    size_t cap;
    uint64_t snap_index, snap_term;
    void *snap_data; /* the snapshot's image, for followers left behind */
    size_t snap_len;
    bool snap_unsaved; /* received from the leader, not yet handed to ready */

    /* Membership: voters/pr/n above follow the latest configuration in the
     * log (thesis §4.1: used as soon as appended, committed or not). */
    void *conf; /* that configuration's encoding */
    size_t conf_len;
    void *base_conf; /* the configuration as of the snapshot (or the first) */
    size_t base_conf_len;
    uint64_t conf_index;    /* latest configuration entry in the log; 0: base_conf */
    bool conf_changed;      /* for the next ready */
    bool promotable;        /* may campaign: a member that has a log */
    uint64_t stable;        /* persisted up to here */
    uint64_t unstable_from; /* first index not yet handed out to persist */

    unsigned elapsed, heartbeat_elapsed, timeout;
    bool bcast_entries, bcast_commit; /* leader: appends to send at the next ready */
    bool waiting;                     /* raft_set_waiting: said in our answers */
    bool hurried;                     /* follower: entries not yet handed out came in an append a
                                         commit waits on (raft_ready.unhurried) */
    bool self_slow;                   /* leader: entries it had a tick ago are not yet durable */
    uint64_t tick_last;               /* leader: its last index at the previous tick */
    uint64_t rng;

    raft_msg *out;
    size_t n_out, cap_out;

    pending_read *pending;
    size_t n_pending, cap_pending;
    uint64_t read_round;
    raft_read_state *reads; /* answers for the next ready */
    size_t n_reads, cap_reads;
};

/* raft.c */
size_t raft_quorum(const raft *r);
/* The entry at index, which must be in (snap_index, last]. */
static inline raft_entry *raft_entry_at(const raft *r, uint64_t index)
{
    return &r->log[index - r->snap_index - 1];
}
/* Leader: appends an entry of any type, sent at the next ready. */
int raft_propose_entry(raft *r, uint8_t type, const void *data, size_t len, uint64_t *index);
/* Queues m for the next ready (from and, if zero, term filled in). */
void raft_send(raft *r, raft_msg m);
/* Leader: replicating followers that lack entries up to index (lazy ones,
 * see thrifty replication in send.c) are sent them now, as far as their
 * pipelines allow: before a compaction drops them, so that a heartbeat's
 * lag does not cost them a snapshot. */
void raft_catch_up_to(raft *r, uint64_t index);

/* send.c */
/* Whether the commit of new entries waits for p's answer (it is among the
 * followers that make the majority, or not known to answer). */
bool raft_counted(const raft *r, const progress *p);
/* Whether new entries go to p now rather than at the next heartbeat. */
bool raft_entries_now(const raft *r, const progress *p);
/* Whether p is owed an empty append carrying the commit index. */
bool raft_commit_owed(const raft *r, const progress *p);
/* An answer from p: whether callers wait there, and what that owes it. */
void raft_note_answer(raft *r, progress *p, const raft_msg *m);

/* snapshot.c */
/* Leader: sends the snapshot to a follower that needs entries compacted
 * away. */
void raft_send_snapshot(raft *r, progress *p);
/* Follower: InstallSnapshot from the leader. */
void raft_handle_snapshot(raft *r, const raft_msg *m);

/* conf.c */
/* A malloc'ed copy of len bytes (at least one byte allocated); NULL when
 * memory runs out. */
void *raft_dup(const void *data, size_t len);
/* Makes the encoded configuration current (keeping the progress of
 * members that stay); DSYNC_ECORRUPT (and no change) if it does not
 * decode. */
int raft_set_conf(raft *r, const void *conf, size_t len);
/* Replaces base_conf with a copy. */
int raft_set_base_conf(raft *r, const void *conf, size_t len);
/* After the log lost its tail or its head: the latest configuration left
 * in the log, else base_conf, becomes current again. */
void raft_recompute_conf(raft *r);
bool raft_is_member(const raft *r, uint64_t id);

/* read.c */
void raft_add_read(raft *r, uint64_t context, uint64_t index);
void raft_bcast_heartbeat(raft *r);
/* Answers every pending read a majority has confirmed. */
void raft_release_reads(raft *r);
/* The leader takes a read from `from` (0: this node). */
int raft_leader_read(raft *r, uint64_t context, uint64_t from);

#endif
