/*
 * raft.h: the consensus core, a pure state machine (etcd raft's shape).
 *
 * No sockets, files, clocks or threads: the node drives it with
 * raft_step() for each message from a peer, raft_tick() for each logical
 * tick, raft_propose() for new commands, and collects what to do with
 * raft_ready():
 *   1. persist rd.hard_state (if rd.hard_state_changed) and rd.entries
 *      (the first may overwrite the log from its index on),
 *   2. only then send rd.msgs (a vote or an ack must never go out before
 *      the state it reports is durable: Raft paper §5.1, Figure 2); a
 *      leader may send its APPEND, HEARTBEAT and SNAPSHOT messages before
 *      persisting (thesis §10.2.1), since it counts itself toward a
 *      majority only up to what it has persisted,
 *   3. apply rd.committed in order,
 *   4. call raft_advance(r, &rd).
 * Everything rd points to stays valid until raft_advance; nothing else may
 * be called in between. Time and randomness are inputs (ticks, seed), so a
 * whole cluster runs deterministically in one process.
 *
 * Implemented: elections with randomized timeouts, PreVote (thesis §9.6),
 * CheckQuorum with leader stickiness, a no-op entry at the start of each
 * term, log replication with per-follower progress (probe / pipelined
 * replicate with an in-flight limit), fast conflict back-off, the commit
 * rule of §5.4.2, linearizable reads by ReadIndex, snapshots with log
 * compaction and InstallSnapshot (§7) for a follower the log has left
 * behind, membership changes one server at a time (thesis §4.1).
 */
#ifndef DSYNC_RAFT_H
#define DSYNC_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define RAFT_MAX_NODES 16

typedef enum { RAFT_FOLLOWER, RAFT_PRECANDIDATE, RAFT_CANDIDATE, RAFT_LEADER } raft_role;

enum { RAFT_ENTRY_NORMAL = 1, RAFT_ENTRY_NOOP = 2, RAFT_ENTRY_CONF = 3 };

/* A member of the cluster. The address is opaque to Raft: it travels in
 * configuration entries so every node learns where a new member listens. */
#define RAFT_ADDR_MAX 128
typedef struct {
    uint64_t id;
    char addr[RAFT_ADDR_MAX];
} raft_member;

/* A configuration (the data of a RAFT_ENTRY_CONF entry, and what a
 * snapshot records): u32 count | count x (u64 id | u16 length | addr),
 * little-endian, distinct non-zero ids, 1..RAFT_MAX_NODES members. */
int raft_conf_encode(const raft_member *members, size_t n, ut_buf *b);
/* DSYNC_ECORRUPT for anything else than the above. */
int raft_conf_decode(const void *data, size_t len, raft_member *out, size_t max, size_t *n);

typedef struct {
    uint64_t index;
    uint64_t term;
    uint8_t type;
    void *data; /* owned by whoever holds the entry (log, message, ready) */
    size_t len;
} raft_entry;

typedef enum {
    RAFT_MSG_VOTE = 1,
    RAFT_MSG_VOTE_RESP,
    RAFT_MSG_PREVOTE,
    RAFT_MSG_PREVOTE_RESP,
    RAFT_MSG_APPEND,
    RAFT_MSG_APPEND_RESP,
    RAFT_MSG_HEARTBEAT,
    RAFT_MSG_HEARTBEAT_RESP,
    RAFT_MSG_READ_INDEX,      /* follower -> leader: a read, context = its id */
    RAFT_MSG_READ_INDEX_RESP, /* leader -> follower: index = safe read index */
    RAFT_MSG_SNAPSHOT,        /* InstallSnapshot: index/log_term = what it covers */
    RAFT_MSG_MAX_
} raft_msg_type;

typedef struct {
    raft_msg_type type;
    uint64_t from, to, term;
    uint64_t log_term; /* vote: last log term; append: term at index */
    uint64_t index;    /* vote: last log index; append: entry before entries;
                          append resp: last index matched (or rejected) */
    uint64_t commit;   /* append, heartbeat: the leader's commit index (at most
                          what the follower matches); append resp, heartbeat
                          resp: 1 when callers wait at the follower, else 0
                          (raft_set_waiting) */
    bool reject;
    uint64_t reject_hint; /* append resp: where the leader should probe */
    uint64_t context;     /* heartbeats: read round; read index: request id;
                             append: 1 when no commit waits on its answer
                             (raft_ready.unhurried), else 0 */
    raft_entry *entries;
    size_t n_entries;
    void *snapshot; /* RAFT_MSG_SNAPSHOT: the state machine image, owned like entries */
    size_t snapshot_len;
    void *conf; /* RAFT_MSG_SNAPSHOT: the configuration as of the snapshot */
    size_t conf_len;
} raft_msg;

typedef struct {
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
} raft_hard_state;

typedef struct {
    uint64_t id;
    /* The first configuration, for a cluster that has none in its log or
     * snapshot yet; afterwards the log's latest configuration rules. */
    const raft_member *members;
    size_t n_members;
    /* A node joining a running cluster: it never campaigns before the
     * leader has sent it the log (an empty log must not start elections
     * in a cluster it does not yet know). */
    bool join;
    unsigned election_tick;  /* followers wait [e, 2e) ticks for a leader */
    unsigned heartbeat_tick; /* leaders send heartbeats this often */
    size_t max_inflight;     /* append messages in flight per follower */
    size_t max_msg_entries;  /* entries per append message */
    bool pre_vote;
    bool check_quorum;
    uint64_t seed;
    /* Restart state: what the node had persisted. */
    raft_hard_state hard_state;
    uint64_t snapshot_index; /* 0: none; entries then start at snapshot_index + 1 */
    uint64_t snapshot_term;
    const void *snapshot; /* copied: sent to followers the log has left behind */
    size_t snapshot_len;
    const void *snapshot_conf; /* the configuration stored with the snapshot */
    size_t snapshot_conf_len;
    const raft_entry *entries; /* copied */
    size_t n_entries;
    uint64_t applied; /* entries up to here are already in the state machine
                         (at least snapshot_index: the snapshot is restored) */
} raft_config;

/* A snapshot the node must install: persist it, then replace its state
 * machine with data; everything up to index is then applied. */
typedef struct {
    uint64_t index, term;
    const void *data;
    size_t len;
    const void *conf; /* the configuration as of index: store it with the image */
    size_t conf_len;
} raft_snapshot;

/* A read that may be served once the state machine has applied index. */
typedef struct {
    uint64_t context; /* the caller's request id */
    uint64_t index;
} raft_read_state;

typedef struct {
    bool hard_state_changed;
    raft_hard_state hard_state;
    bool has_snapshot;      /* from the leader: persist and restore it before the */
    raft_snapshot snapshot; /* entries below, which follow it */
    raft_entry *entries;    /* to persist */
    size_t n_entries;
    /* Follower: every one of those entries came in an append the leader
     * marked as one no commit waits on (thrifty replication: the leader
     * has enough other followers), so their write may be put off a while
     * and batched with later ones. What depends on it still waits for it:
     * every message but the leader's appends goes out only once what was
     * handed to storage before it is durable. */
    bool unhurried;
    raft_msg *msgs; /* to send after persisting */
    size_t n_msgs;
    raft_entry *committed; /* to apply, in order */
    size_t n_committed;
    raft_read_state *reads; /* ReadIndex answers */
    size_t n_reads;
    bool conf_changed; /* the membership changed: conf is the new one */
    const void *conf;
    size_t conf_len;
    raft_role role;
    uint64_t leader;
    uint64_t term;
} raft_ready;

typedef struct raft raft;

/* New node from cfg; NULL on bad configuration or out of memory. */
raft *raft_new(const raft_config *cfg);
void raft_free(raft *r);

void raft_tick(raft *r);
/* A message from a peer. DSYNC_EINVAL (and no effect) for one that is
 * malformed or from a non-member; peers are never trusted. */
int raft_step(raft *r, const raft_msg *m);
/* Linearizable read (ReadIndex, thesis §6.4): asks for the index a read
 * must wait for. The answer comes in a later ready's reads, with context;
 * serve the read once applied >= index. The leader confirms it is still
 * leader with a heartbeat round to a majority first; a follower asks the
 * leader. DSYNC_EUNAVAILABLE when there is no leader (or the leader has not
 * yet committed an entry of its term): retry. */
int raft_read_index(raft *r, uint64_t context);

/* Whether this node has callers waiting for entries to commit and apply
 * (a write it forwarded, a blocked acquire, a read past its applied
 * index): it says so in its answers to the leader (their commit field).
 * A leader tells a follower of a new commit index at once, with an empty
 * append, only while the follower's latest answer said it waits, or once
 * an index raft_tell_commit_at or raft_peer_wants_commit named for it
 * has committed; the others learn it with the next entries or heartbeat
 * (one heartbeat_tick at most). Under light load that spares two messages a commit, and the
 * wake-ups of two loops, which nobody needs. A node that never calls this
 * waits always. An older follower that leaves the field 0 is treated as
 * never waiting: during a rolling upgrade its callers may wait up to a
 * heartbeat longer.
 *
 * Thrifty replication: new entries, too, go at once only to the followers
 * that wait (as above, or named by those two calls until they have the
 * index) and to as many others as a majority with the leader needs,
 * counted the furthest along first (ties: those that wait, then the lower
 * id) among those that answered within two heartbeats; a leader whose own
 * writes lag a tick behind counts only followers. The rest get what they
 * lack at each heartbeat (and before a compaction drops it), so a
 * follower nobody needs writes one batch a heartbeat instead of every
 * entry. A follower whose callers begin to wait is known to from its next
 * answer, at the latest to the next heartbeat: a node should name an
 * entry it forwards (raft_peer_wants_commit), and a read it asks for runs
 * a heartbeat round anyway. */
void raft_set_waiting(raft *r, bool waiting);
/* Leader: every follower is told at once when index commits (an entry
 * every replica should apply soon, such as a new membership view). */
void raft_tell_commit_at(raft *r, uint64_t index);
/* Leader: follower `id` is told at once when index commits (an entry
 * proposed for it: its caller waits). Unknown ids are ignored. */
void raft_peer_wants_commit(raft *r, uint64_t id, uint64_t index);

/* Log compaction (§7): the node has saved a snapshot of its state machine
 * as of applied index `index`; the log up to there is dropped and `data`
 * (copied) is what a follower behind it will be sent. DSYNC_EINVAL unless
 * index is applied and past the current snapshot. Not between ready_get
 * and advance. */
int raft_compact(raft *r, uint64_t index, const void *data, size_t len);
/* Index of the snapshot the log starts after (0: none). */
uint64_t raft_snapshot_index(const raft *r);

/* Membership change, one server at a time (thesis §4.1): the leader
 * appends a configuration with member added (or the member with its id
 * removed), which every node uses as soon as it is in its log. Refused
 * with DSYNC_EUNAVAILABLE while an earlier change is uncommitted or the
 * leader has not yet committed an entry of its term (the fix of §4.1's
 * bug), DSYNC_EEXIST / DSYNC_ENOTFOUND for a member already there / not
 * there, DSYNC_EINVAL when the cluster would be empty or too large. A
 * leader that removes itself steps down once the change commits. */
int raft_propose_conf(raft *r, bool add, const raft_member *member, uint64_t *index);
/* The current configuration; returns the member count (at most max
 * filled in). */
size_t raft_members(const raft *r, raft_member *out, size_t max);
/* The configuration as of applied index `index` (for a snapshot); the
 * pointer is valid until the next call into r. */
int raft_conf_at(const raft *r, uint64_t index, const void **conf, size_t *len);

/* Appends a command when leader; DSYNC_ENOTLEADER otherwise. It leaves
 * with the next ready, with every other proposal of the same turn. */
int raft_propose(raft *r, const void *data, size_t len, uint64_t *index);

bool raft_has_ready(const raft *r);
void raft_ready_get(raft *r, raft_ready *rd);
void raft_advance(raft *r, raft_ready *rd);
/* Asynchronous persistence (the log written by another thread while this
 * one goes on): instead of raft_advance, once rd.hard_state and rd.entries
 * are handed to storage in order (not yet durable) and rd.committed
 * applied, call raft_advance_unsynced. Every message of rd other than a
 * leader's APPEND, HEARTBEAT and SNAPSHOT must then wait until everything
 * handed to storage before it is durable (the rule of step 2, unchanged).
 * When storage says everything handed up to the entry (index, term) is
 * durable, call raft_synced: from then on the entries up to there count as
 * persisted, for the leader's own vote toward commit. (Committed entries
 * are handed out to apply whether or not this node's own copy is durable
 * yet: committed means durable on a majority.) A snapshot in rd
 * (rd.has_snapshot) is still saved before anything after it. Calls into r
 * may come between raft_advance_unsynced and raft_synced; a write that
 * completes after its entries were truncated is ignored. */
void raft_advance_unsynced(raft *r, raft_ready *rd);
void raft_synced(raft *r, uint64_t index, uint64_t term);

raft_role raft_get_role(const raft *r);
uint64_t raft_leader(const raft *r);
uint64_t raft_term(const raft *r);
uint64_t raft_commit_index(const raft *r);
uint64_t raft_last_index(const raft *r);
/* How far this node's own log is durable, as the caller has said
 * (raft_advance, raft_synced). */
uint64_t raft_stable_index(const raft *r);
/* Leader: how far peer id's log is known to match ours (0 otherwise). */
uint64_t raft_match_index(const raft *r, uint64_t id);
/* Term of the entry at index (0 when absent or compacted away; the
 * snapshot's term at the snapshot index). */
uint64_t raft_term_at(const raft *r, uint64_t index);
const char *raft_role_name(raft_role role);

/* Wire form of a message: versioned, little-endian; decode copies entry
 * data and the snapshot into fresh allocations released by
 * raft_msg_free_entries (which frees both, and the entries array), and
 * returns DSYNC_ECORRUPT for anything malformed. */
int raft_msg_encode(const raft_msg *m, ut_buf *b);
int raft_msg_decode(const void *data, size_t len, raft_msg *out);
void raft_msg_free_entries(raft_msg *m);

#endif
