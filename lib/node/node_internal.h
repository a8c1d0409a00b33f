/*
 * node_internal.h: the node runtime's shared definitions.
 *
 * One loop thread owns every piece of node state: Raft, the peer
 * transport, the durable log and the lock table (the queue and the cache
 * as they arrive). Public calls from any thread become an nd_call, queued
 * under a mutex and handed to the loop by waking an eventfd; the caller
 * sleeps on the call's semaphore until the loop completes it. A write waits
 * until its log entry commits and applies; a read until the applied index
 * reaches its ReadIndex; an acquire with wait_ms is parked until an event
 * or its deadline.
 */
#ifndef DSYNC_NODE_INTERNAL_H
#define DSYNC_NODE_INTERNAL_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "dsync.h"
#include "dsync/metrics.h"
#include "cache/cache.h"
#include "lock/lock.h"
#include "net/net.h"
#include "node/fsm.h"
#include "queue/queue.h"
#include "queue/ring.h"
#include "raft/raft.h"
#include "store/aof.h"
#include "store/redis_log.h"
#include "store/store.h"
#include "util/util.h"

typedef enum {
    ND_CALL_LOCK_ACQUIRE = 1,
    ND_CALL_LOCK_RELEASE,
    ND_CALL_LOCK_STATE,
    ND_CALL_HEALTH,
    ND_CALL_DROP_PEERS,
    ND_CALL_MEMBER, /* add or remove a member */
    ND_CALL_Q_ENQUEUE,
    ND_CALL_Q_CONSUME,
    ND_CALL_Q_ACK,
    ND_CALL_Q_STATE,
    ND_CALL_CACHE_GET,
    ND_CALL_CACHE_PUT,
} nd_call_kind;

/* Frames on the peer transport (types above NT_USER). */
enum {
    ND_FRAME_RAFT = NT_USER,  /* a Raft message */
    ND_FRAME_PROPOSE,         /* follower -> leader: a command to propose */
    ND_FRAME_PROPOSE_REFUSED, /* leader -> follower: u64 seq it cannot take */
    ND_FRAME_PING,            /* every peer to every peer: the failure detector */
    ND_FRAME_CONF,            /* follower -> leader: u64 seq | u8 add | u64 id | u16 len | addr */
    ND_FRAME_CONF_RESULT,     /* leader -> follower, once applied: u64 seq | u32 -rc */
    ND_FRAME_QREQ,            /* a queue call for the topic's owner (node_queue.c) */
    ND_FRAME_QRESP,           /* the owner's answer */
    ND_FRAME_CACHE,           /* a cache protocol message (lib/cache's wire form) */
    ND_FRAME_VIEW_BUMP,       /* any node -> leader: frames may have been lost, a view past
                                 the epoch named (u64; empty from older nodes) please */
};

/* How long a write waits for its entry to commit, and a read for its
 * ReadIndex, before the caller hears 503 (outcome unknown for a write:
 * it may still commit, and retrying an acquire or release is safe). */
#define ND_COMMIT_TIMEOUT_MS 5000

typedef struct nd_call nd_call;
typedef struct nq_op nq_op; /* node_queue.c: a queue operation on the owner */

/* Leader: a membership change a follower forwarded, answered once its
 * entry has applied (index 0: free slot). */
#define ND_MAX_REMOTE_CONFS 8
typedef struct {
    uint64_t from, seq, index, id;
    bool add;
    uint64_t deadline_ms;
} nd_remote_conf;
struct nd_call {
    nd_call_kind kind;
    int rc; /* result code, set by the loop */
    sem_t done;
    nd_call *next; /* in the submit queue, then in the parked list */

    uint64_t submitted_ns; /* for latency metrics */
    fsm_cmd cmd;           /* writes: the command proposed for this call */
    uint64_t deadline_ms;  /* when to give up: commit, read index, or a parked wait */
    uint64_t read_ctx;     /* reads: the ReadIndex request id */
    uint64_t read_index;   /* reads: serve once applied reaches it (0: not yet known) */

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
        struct {
            const uint64_t *ids;
            size_t n;
        } drop;
        struct {
            const char *topic;
            const void *body;
            size_t len;
            uint64_t *id;
            const dsync_consume_request *consume;
            dsync_queue_msg **msgs;
            size_t *n;
            const char *receipt;
            dsync_queue_state *state;
        } queue;
        struct {
            const char *key;
            const void *value; /* PUT */
            size_t len;
            uint64_t ttl_ms;
            char **value_out; /* GET */
            size_t *len_out;
            char *state_out; /* 'M', 'E' or 'S' (may be NULL) */
        } cache;
        struct {
            bool add;
            raft_member m;
            uint64_t seq;   /* to match the leader's answer when forwarded */
            uint64_t index; /* proposed here: the entry (0: forwarded, wait for the leader) */
        } member;
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
    dsync_series *wait_seconds;                  /* histogram: time from park to grant */
    dsync_series *fsync_seconds;                 /* histogram: one group commit */
    dsync_series *batch_entries;                 /* histogram: entries per group commit */
    dsync_series *flushes_loop, *flushes_writer; /* counter: group commits, by thread */
    dsync_series *snapshots;                     /* counter */
} nd_lock_metrics;

typedef struct {
    dsync_metric *enqueued, *consumed, *acked, *requeued, *dead_lettered; /* by topic */
    dsync_metric *depth, *in_flight;                                      /* by topic */
    dsync_series *enqueue_seconds, *consume_seconds, *fsync_seconds;
    dsync_series *adopted;  /* counter: units claimed when a view placed them here */
    dsync_series *adopting; /* gauge: 1 while those claims go on */
} nd_queue_metrics;

typedef struct {
    dsync_series *hits, *misses, *evictions, *writebacks;
    dsync_series *invalidations[CC_REASON_MAX_]; /* cache_invalidation_total{reason} */
    dsync_series *transitions[4][4];             /* [from][to] by cc_state, NULL on the diagonal */
    dsync_series *entries, *bytes, *dir_entries;
    dsync_series *get_seconds, *put_seconds;
    dsync_series *touch_log_full; /* loop turns that found the touch log full */
} nd_cache_metrics;

typedef struct {
    dsync_series *term, *commit_index, *applied_index, *is_leader;
    dsync_series *leader_changes;   /* counter */
    dsync_series *proposal_seconds; /* histogram: call submitted to its entry applied */
    dsync_series *forwarded;        /* counter: writes sent on to the leader */
    dsync_series *refused;          /* counter: writes answered 503 (no leader, timeout) */
    dsync_series *snapshots_installed;
    dsync_series *view_bumps; /* counter: views proposed (as leader) for a new epoch */
    dsync_metric *peer_up_family;
    dsync_series *peer_up[RAFT_MAX_NODES]; /* by position in voters */
    dsync_series *members;
    dsync_series *frames_sent, *frames_received, *frames_dropped, *protocol_errors;
} nd_raft_metrics;

/* A thread that runs the loop's disk work one job at a time
 * (node_writer.c). The loop owns every field but those marked: those the
 * thread shares, under mu. */
typedef int (*nd_job_fn)(void *arg);
typedef struct {
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;     /* a job for the thread; a job ended */
    bool busy, done, stop; /* shared: a job out; it ended; close */
    int rc;                /* shared: the job's result */
    uint64_t took_ns;      /* shared: how long it ran */
    nd_job_fn fn;          /* the job: fn(arg), on the thread */
    void *arg;
    dsync_node *n; /* woken when a job ends */
} nd_writer;

/* Starts the thread (0, or DSYNC_ENOMEM); stop lets a job handed over
 * run to its end, then joins the thread (a no-op when never started). */
int nd_writer_start(nd_writer *w, dsync_node *n, nd_job_fn fn, void *arg);
void nd_writer_stop(nd_writer *w);
/* Hands the job prepared in arg over; the caller leaves it alone until
 * reaped. One at a time: only when !busy. */
void nd_writer_hand(nd_writer *w);
/* True once the job out has ended, with its result; busy is then false. */
bool nd_writer_reap(nd_writer *w, int *rc, uint64_t *took_ns);
/* Blocks until the job out (if any) has ended; reap it after. */
void nd_writer_wait(nd_writer *w);

/* The Raft log's writer thread (node_log.c). The loop owns every field;
 * flush is the writer's alone while wr.busy. */
typedef struct {
    nd_writer wr;
    st_log_flush flush;                   /* the job */
    uint64_t job_index, job_term;         /* the last entry the flush out carries */
    size_t job_entries;                   /* how many it carries */
    uint64_t pending_index, pending_term; /* the same for what is buffered */
    size_t pending_entries;
    bool pending_sync;            /* the buffer holds entries or a vote: it must be flushed */
    ut_buf held;                  /* raft frames waiting for the disk: u64 to, u32 len, frame */
    size_t held_covered;          /* bytes of held that the flush out releases */
    uint64_t idle_since_ns;       /* the loop saw the last flush end then (0: none yet) */
    uint64_t loop_flush_after_ns; /* no flush on the loop before: the disk was slow */
    /* Follower: what is buffered came only in appends no commit waits on
     * (raft_ready.unhurried); unless a frame other than an answer to an
     * append waits for it (urgent_end), its flush may wait until
     * defer_until_ms, batching more. */
    bool deferrable;
    uint64_t defer_until_ms;
    size_t urgent_end; /* held: end of the last frame that is no answer to an append */
} nd_log;

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
    fsm fsm;                             /* the lock table and its clock */
    st_log *store;                       /* durable log; NULL when DSYNC_DATA_DIR is empty */
    nd_log wal;                          /* ... and its writer thread */
    bool store_broken;                   /* a write or fsync failed: stop taking part for good */
    raft *raft;                          /* consensus; a single node is a cluster of one */
    nt_transport *net;                   /* peer transport; NULL for a single node */
    uint64_t voters[RAFT_MAX_NODES];     /* the current members' ids */
    raft_member members[RAFT_MAX_NODES]; /* ... and where they listen */
    size_t n_voters;
    uint64_t tick_due_ms;              /* next raft_tick */
    uint64_t ticks;                    /* raft ticks so far: pings go out every other one */
    uint64_t applied;                  /* last entry applied to the fsm */
    uint64_t snapshot_index;           /* last entry covered by the stored snapshot */
    uint64_t next_seq;                 /* request numbers of this node's commands */
    uint64_t next_read;                /* ReadIndex request ids */
    uint64_t sweep_index, sweep_term;  /* the lease sweep in flight (0: none) */
    uint64_t view_index, view_term;    /* the leader's VIEW proposal in flight (0: none) */
    nt_stats net_stats;                /* as last added to the metrics */
    uint64_t synced_term, synced_vote; /* the hard state last handed to the log */
    uint64_t known_leader;             /* for the leader-change counter */
    nd_call *writes;                   /* proposed, waiting for their entries to apply */
    nd_call *reads;                    /* waiting for their ReadIndex and its apply */
    nd_call *confs;                    /* membership changes waiting for their entry */
    nd_remote_conf remote_confs[ND_MAX_REMOTE_CONFS];
    ut_buf scratch;  /* command and message encoding */
    nd_call *parked; /* calls waiting for an event or their deadline */
    dsync_metrics *metrics;
    nd_lock_metrics lm;
    nd_raft_metrics rm;

    /* The queue (node_queue.c): topics this node owns. */
    q_state *queue;
    qr_ring *ring;                     /* placement of topics on the members */
    aof_file *aof;                     /* local queue file; NULL when memory only */
    nd_writer q_writer;                /* ... its flushes' thread */
    aof_flush q_flush;                 /* ... the flush it runs (its own while q_writer.busy) */
    _Atomic uint32_t q_fsync_delay_ms; /* fault injection: each flush waits this long first */
    bool queue_broken;                 /* its fsync failed: queue writes refused */
    uint64_t aof_rewritten_size;       /* the file's size after the last rewrite */
    ut_buf journal;                    /* records of this turn's changes */
    nq_op *q_durable;                  /* answered once this turn's records are durable */
    nq_op *q_flying;                   /* answered when the flush in flight lands (Redis or file) */
    uint64_t q_flight_ns;              /* when that flush was sent */
    nq_op *q_parked;                   /* consumes waiting for a message */
    bool q_ready_dirty;                /* something became ready: look at the parked */
    nd_call *q_waiting;                /* calls forwarded to a topic's owner */
    nd_queue_metrics qm;
    /* With DSYNC_REDIS_URL: topics live in Redis, placed on the view. */
    rl_log *rl;                           /* NULL until connected */
    uint64_t rl_next_open_ms;             /* when to try connecting again */
    ut_map q_claims;                      /* base topic -> nq_claim: units loaded here */
    bool q_adopted;                       /* the units of the current view were claimed */
    char q_adopt_cursor[RL_CURSOR_MAX];   /* where the claiming goes on (a SCAN cursor) */
    size_t q_adopt_count, q_adopt_failed; /* units claimed so far for the current view, or not */
    bool q_adopt_warned;                  /* the listing failed and said so */
    ut_map q_adopt_tried;                 /* topics claimed or tried for it: once each */

    /* The cache (node_cache.c). */
    cc_node *cache;
    cc_stats cache_stats; /* as last added to the metrics */
    nd_cache_metrics cm;
    nd_call *c_waiting;      /* calls whose operation is under way */
    uint64_t cache_tick_due; /* next cc_tick (it walks every line: not every turn) */
    uint64_t last_turn_ms;   /* how long the loop's last turn took */
    uint64_t quiet_until;    /* after a long turn: no cache hits, no view proposals */
    bool bump_pending;       /* a new view epoch was asked for ... */
    uint64_t bump_epoch;     /* ... while the view's epoch was this */
    uint64_t losses_seen;    /* the transport's losses count, as last looked at */
    bool view_bump;          /* leader: propose a new view epoch even with the same members */
    /* leader: peers whose bump requests name an epoch (their empty ones,
     * sent for leaders older than that, are ignored) */
    uint64_t bump_speakers[RAFT_MAX_NODES];
    size_t n_bump_speakers;
    uint64_t last_bump_ms; /* leader: when a bump last made a view */
    /* Readable lines for GETs on callers' threads (node_cache.c, "copies"):
     * written by the loop only, under copies_lock. */
    pthread_rwlock_t copies_lock;
    ut_map copies;
    _Atomic uint64_t copies_until; /* ut_now_ms: readers use the copies until then */
    /* Keys hit in the copies since the loop last looked (NUL-separated,
     * node_cache.c, "Touches"), under touch_lock; touches_spare is the
     * loop's, swapped in each time so both keep their capacity. */
    pthread_mutex_t touch_lock;
    ut_buf touches, touches_spare;
    atomic_bool touches_full; /* a touch was dropped since the loop last looked */
};

/* node.c: hand a call to the loop and wait for it; returns call->rc. */
int nd_submit(dsync_node *n, nd_call *call);
/* node.c: finish a call and wake its caller. The call may be gone after. */
void nd_complete(nd_call *call, int rc);

/* node_raft.c: Raft, the store and the transport inside the loop. */
int nd_raft_open(dsync_node *n);
void nd_raft_close(dsync_node *n);
/* Proposes call->cmd (a write) and adds the call to the writes waiting
 * for their entries; 0, or an error for the caller (no leader: 503). */
int nd_propose(dsync_node *n, nd_call *call);
/* Proposes a command no caller waits for (the leader's lease sweep);
 * returns its index, 0 when it could not. */
uint64_t nd_propose_internal(dsync_node *n, fsm_cmd *cmd);
/* Asks for a linearizable read; the call completes through
 * nd_locks_serve_read once the state covers every earlier write. */
int nd_read(dsync_node *n, nd_call *call);
/* Persists, sends and applies whatever Raft has ready, until it has
 * nothing more; then flushes the transport. */
void nd_raft_process(dsync_node *n);
/* The log failed: this node stops taking part until it restarts. */
void nd_raft_broken(dsync_node *n, const char *what);
/* Wakes the loop thread from its poll. */
void nd_wake(dsync_node *n);

/* node_log.c: the log's writer thread. */
int nd_log_open(dsync_node *n);
void nd_log_close(dsync_node *n);
/* Records handed to the store's buffer: the last entry (index, term) of
 * `entries` entries; must_sync when they hold entries or a vote;
 * unhurried when they are only entries no commit waits on (raft.h), whose
 * flush may then wait up to ND_LOG_DEFER_MS for more. */
void nd_log_handed(dsync_node *n, uint64_t index, uint64_t term, size_t entries, bool must_sync,
                   bool unhurried);
/* Begins a flush of the buffer when the writer is free and it is due. */
void nd_log_kick(dsync_node *n);
/* nd_log_kick, unless the disk has been idle a while and the flush due
 * carries at most one entry: then it waits for nd_log_flush_if_idle,
 * later in the same round. */
void nd_log_kick_unless_idle(dsync_node *n);
/* The flush due: on the loop itself at light load (see disk_idle in
 * node_log.c), else handed to the writer (nd_log_kick). */
void nd_log_flush_if_idle(dsync_node *n);
/* Takes the result of a flush that ended: raft_synced, held frames out;
 * begins a deferred flush whose time has come. */
void nd_log_reap(dsync_node *n);
/* When a deferred flush is due (ms), UINT64_MAX when none waits. */
uint64_t nd_log_deadline(const dsync_node *n);
/* Waits until everything handed over is durable. */
void nd_log_drain(dsync_node *n);
/* Sends a raft frame that must not overtake the disk (an ack, a vote).
 * Anything but an answer to an append (append_answer) ends a deferral:
 * a vote, a heartbeat or read answer goes out at the disk's pace. */
void nd_log_send(dsync_node *n, uint64_t to, const void *frame, size_t len, bool append_answer);
bool nd_log_waiting(const dsync_node *n);
/* Ticks Raft when due, fails writes and reads past their deadline;
 * returns the next time (absolute ms) the loop must wake for. */
uint64_t nd_raft_tick(dsync_node *n, uint64_t now_ms);
void nd_raft_health(dsync_node *n, dsync_health *h, uint64_t now_ms);
/* A membership call: proposed here when leading, else at the leader. */
void nd_raft_handle_member(dsync_node *n, nd_call *call);
/* Completes every waiting write and read with rc (closing). */
void nd_raft_fail_all(dsync_node *n, int rc);

/* ---- node_queue*.c: the queue service's half of the loop ---------------- */

#define NQ_MAX_BATCH 100 /* messages one consume may take */

/* An operation on the topic's owner, from a caller here (call) or from a
 * peer (from, req_id). Owns copies of everything it needs. */
struct nq_op {
    nq_op *next;
    nd_call_kind kind;
    char topic[QS_TOPIC_NAME_MAX + 1];
    char consumer[QS_CONSUMER_MAX + 1];
    void *body;
    size_t len;
    uint32_t max;
    uint64_t visibility_ms, wait_ms, deadline_ms;
    q_receipt receipt;
    /* results */
    int rc;
    uint64_t id;
    dsync_queue_msg *msgs;
    size_t n_msgs;
    uint64_t started_ns;
    /* who waits */
    nd_call *call;
    uint64_t from, req_id;
};

/* node_queue.c */
bool nq_topic_ok(const char *topic);
bool nq_redis_mode(const dsync_node *n);
/* The unit topic belongs to: its name without ".dlq". */
void nq_base_of(const char *topic, char base[QS_TOPIC_NAME_MAX + 1]);
/* The topic's owner on the ring (0: none now). */
uint64_t nq_owner_of(const dsync_node *n, const char *topic);
/* Replaces the ring by one over ids (none at all when out of memory). */
void nq_build_ring(dsync_node *n, const uint64_t *ids, size_t count);
void nq_free_msgs(dsync_queue_msg *msgs, size_t n);
void nq_op_free(nq_op *op);
/* Gives op's caller (here or on a peer) its result, and frees op. */
void nq_finish(dsync_node *n, nq_op *op);
/* Runs op here, the topic's owner. */
void nq_execute(dsync_node *n, nq_op *op);
void nq_topic_gauges(dsync_node *n, const char *topic);
/* The store failed: queue writes are refused until restart. */
void nq_broke(dsync_node *n, const char *what);

/* node_queue_forward.c */
/* Sends call (op made from it, freed here) to the topic's owner. */
void nq_forward(dsync_node *n, nd_call *call, nq_op *op, uint64_t owner);
void nq_encode_result(ut_buf *b, const nq_op *op);

/* Fails op with rc (its messages dropped); answered later as usual. */
void nq_fail_op(nq_op *op, int rc);

/* node_queue_redis.c */
/* Whether topic's unit is loaded here (a failed one is not). */
bool nq_unit_claimed(const dsync_node *n, const char *topic);
/* Makes sure topic's unit is claimed and loaded here; 0 or the call's error. */
int nq_claim_unit(dsync_node *n, const char *topic);
/* Files the journal's records under their units' Redis logs (buffered). */
void nq_journal_to_redis(dsync_node *n);
/* The flush in flight, if it has landed (or wait: block), told: failed
 * units dropped, its calls answered. */
void nq_redis_land(dsync_node *n, bool block);
/* Sends what is buffered unless a flush is in flight (nothing buffered:
 * the calls waiting are answered at once). */
void nq_redis_send(dsync_node *n);
/* Both, until nothing is buffered or in flight. */
void nq_redis_drain(dsync_node *n);
/* The Redis socket to poll while a flush is in flight, else -1. */
int nd_queue_pollfd(const dsync_node *n);
/* Claims now the units in Redis this node owns under the current view. */
bool nq_adopt_units(dsync_node *n);

int nd_queue_open(dsync_node *n);
void nd_queue_close(dsync_node *n);
void nd_queue_handle(dsync_node *n, nd_call *call);
void nd_queue_state(dsync_node *n, nd_call *call);
void nd_queue_frame(dsync_node *n, uint64_t from, uint8_t type, const void *payload, size_t len);
/* The membership changed: the ring follows it (local file mode). */
void nd_queue_members_changed(dsync_node *n);
/* The view changed (an applied VIEW or snapshot): with Redis the ring
 * follows it and topics placed elsewhere now are dropped here. */
void nd_queue_view_changed(dsync_node *n);

/* Answers the calls of list (their records have landed), or fails them
 * with rc when it is not 0. */
void nq_answer_all(dsync_node *n, nq_op *list, int rc);
/* Lands the queue's flush in flight, if it has ended, answering its
 * calls, and sends the next with this turn's records: to the local
 * file's writer thread, or to Redis. One in flight at a time. */
void nd_queue_flush(dsync_node *n);
/* For the loop's poll timeout: when the Redis flush in flight is given up
 * if it has no answer (its replies wake the loop sooner), 0 when its fate
 * is known already (it could not go out, or another call read it to the
 * end); UINT64_MAX when none is out. */
uint64_t nd_queue_flight_deadline(const dsync_node *n);
/* Expires leases, serves parked consumers; returns the next deadline. */
uint64_t nd_queue_tick(dsync_node *n, uint64_t now_ms);

/* node_queue.c: the node's Redis connection (queue and cache), opened on
 * first need; NULL while Redis is not reachable or not configured. */
rl_log *nd_redis(dsync_node *n);

/* node_cache.c: the cache's half of the loop. */
int nd_cache_open(dsync_node *n);
void nd_cache_close(dsync_node *n);
void nd_cache_handle(dsync_node *n, nd_call *call, uint64_t now_ms);
void nd_cache_frame(dsync_node *n, uint64_t from, const void *payload, size_t len);
void nd_cache_view_changed(dsync_node *n);
/* Sends what the core has ready, answers calls, runs store requests. */
void nd_cache_process(dsync_node *n);
/* The hits served on callers' threads since the last time, applied to the
 * LRU (node_cache.c, "Touches"): at the start of each turn, before frames
 * can evict, and after taking the calls, so that every hit a caller had
 * before its call counts before the call runs (unless the log was full). */
void nd_cache_touches(dsync_node *n);
uint64_t nd_cache_tick(dsync_node *n, uint64_t now_ms);
/* node_members.c: membership changes and the view of live members. */
bool nd_is_member(const dsync_node *n, uint64_t id);
/* A Raft election timeout in ms: the unit of the failure detector. */
uint64_t nd_election_ms(const dsync_node *n);
/* How long the leader waits without hearing a member before it proposes
 * a view without it. */
uint64_t nd_down_after_ms(const dsync_node *n);
/* Takes the configuration Raft uses now (ids, addresses, metrics). */
void nd_set_members(dsync_node *n, const void *conf, size_t len);
/* Frames of a forwarded membership change, and its answer. */
void nd_conf_frame(dsync_node *n, uint64_t from, const unsigned char *p, size_t len);
void nd_conf_result(dsync_node *n, const unsigned char *p, size_t len);
/* Answers membership changes whose entry has applied. */
void nd_finish_confs(dsync_node *n);
/* Leader: proposes a VIEW when the live members differ from the view's. */
void nd_propose_view(dsync_node *n, uint64_t now_ms);
/* Ask the leader (or, leading, oneself) for a new view epoch; resent by
 * nd_send_view_bump until a newer view applies. */
void nd_request_view_bump(dsync_node *n);
void nd_send_view_bump(dsync_node *n);
/* An ND_FRAME_VIEW_BUMP from a member. */
void nd_view_bump_frame(dsync_node *n, uint64_t from, const unsigned char *p, size_t len);

/* node_locks.c: the lock service's half of the loop. */
int nd_locks_open(dsync_node *n);
void nd_locks_close(dsync_node *n);
void nd_locks_handle(dsync_node *n, nd_call *call, uint64_t now_ms);
/* Applies one committed command; `mine` is the write of this node that
 * proposed it, if any, answered from the result. */
void nd_locks_apply(dsync_node *n, const fsm_cmd *cmd, nd_call *mine);
/* Answers a read whose index has been applied. */
void nd_locks_serve_read(dsync_node *n, nd_call *call);
/* Leader: proposes the lease sweep when a lease is due. Everyone: expires
 * parked calls. Returns the next deadline (absolute ms), UINT64_MAX if none. */
uint64_t nd_locks_tick(dsync_node *n, uint64_t now_ms);
void nd_locks_update_gauges(dsync_node *n);

#endif
