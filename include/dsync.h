/*
 * dsync.h: the public API of libdsync.
 *
 * libdsync gives a group of processes coordination services agreed across a
 * cluster of nodes. This header and include/dsync/ are the whole public API.
 *
 * Conventions (libuv's, hiredis'):
 *  - Functions that can fail return int: 0 on success, a negative DSYNC_E*
 *    code otherwise; dsync_strerror() names the code. Results go through out
 *    parameters.
 *  - Every call on a dsync_node may be made from any thread; it is handed to
 *    the node's loop thread and waits for its completion.
 *  - Memory returned through an out parameter belongs to the caller and is
 *    released with the _free function named next to the call.
 *  - The library never prints; it logs through dsync_config.log_fn.
 *
 * Two ways in: dsync_node_* runs a node inside the process (this header);
 * dsync_client_* talks to running dsyncd nodes over HTTP (dsync/client.h).
 */
#ifndef DSYNC_H
#define DSYNC_H

#include <stddef.h>
#include <stdint.h>

#include "dsync/version.h"
#include "dsync/errors.h"
#include "dsync/config.h"
#include "dsync/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A running node. Opaque; created by dsync_node_open, freed by dsync_node_close. */
typedef struct dsync_node dsync_node;

/* Starts a node with the given configuration (copied; the caller keeps it).
 * On success *out is the node and its loop thread runs. */
int dsync_node_open(const dsync_config *cfg, dsync_node **out);

/* Stops the loop thread, fails every call still in flight with
 * DSYNC_ECLOSED, and frees the node. NULL is ignored. */
void dsync_node_close(dsync_node *node);

/* ------------------------------------------------------------------------
 * Locks
 * ------------------------------------------------------------------------ */

typedef enum {
    DSYNC_LOCK_SHARED = 1,    /* "S": any number of holders */
    DSYNC_LOCK_EXCLUSIVE = 2, /* "X": one holder, nobody else */
} dsync_lock_mode;

typedef enum {
    DSYNC_LOCK_GRANTED = 1,  /* the client holds the lock in the asked mode */
    DSYNC_LOCK_WAITING = 2,  /* queued; granted by itself when the lock frees */
    DSYNC_LOCK_DEADLOCK = 3, /* refused: waiting would close a wait-for cycle */
} dsync_lock_status;

/* Longest key and client id accepted, in bytes (not counting the NUL). */
#define DSYNC_LOCK_KEY_MAX 256
#define DSYNC_CLIENT_ID_MAX 128
/* Longest deadlock cycle reported (clients); longer cycles are cut here. */
#define DSYNC_LOCK_CYCLE_MAX 64

typedef struct {
    const char *key;       /* lock name, 1..DSYNC_LOCK_KEY_MAX bytes */
    const char *client_id; /* holder identity, 1..DSYNC_CLIENT_ID_MAX bytes */
    dsync_lock_mode mode;
    /* Lease: the lock (or the waiting request) is dropped unless acquired
     * again within ttl_ms. 0 means the node's default lease. */
    uint64_t ttl_ms;
    /* How long the call may block waiting for the grant. 0 returns at once
     * with DSYNC_LOCK_WAITING when the lock is busy. */
    uint64_t wait_ms;
} dsync_lock_request;

typedef struct {
    dsync_lock_status status;
    /* On GRANTED: a number larger than that of every earlier grant of any
     * lock; a resource guarded by the lock refuses writes carrying a token
     * smaller than one it has seen. */
    uint64_t fencing_token;
    /* On GRANTED: lease deadline, milliseconds from now. */
    uint64_t lease_ms;
    /* On WAITING: 1-based place in the key's wait queue. */
    uint32_t position;
    /* On DEADLOCK: the clients on the cycle, starting with the requester. */
    uint32_t cycle_len;
    char cycle[DSYNC_LOCK_CYCLE_MAX][DSYNC_CLIENT_ID_MAX + 1];
} dsync_lock_result;

/* Asks for a lock. Returns 0 with result->status saying what happened
 * (a deadlock is a status, not an error), or DSYNC_EINVAL for bad arguments.
 * Acquiring a lock already held (or already waited for) in the same mode
 * renews its lease and is otherwise a no-op; asking for X while holding S
 * upgrades when the client is the only holder and waits otherwise. */
int dsync_lock_acquire(dsync_node *node, const dsync_lock_request *req, dsync_lock_result *result);

/* Releases a held lock, or withdraws a waiting request, of client_id on key.
 * *was_waiting (if not NULL) tells which of the two it was. Returns
 * DSYNC_ENOTFOUND when the client neither holds nor waits for the key. */
int dsync_lock_release(dsync_node *node, const char *key, const char *client_id, int *was_waiting);

/* A snapshot of the whole lock table. */
typedef struct {
    char *client_id;
    dsync_lock_mode mode;
    uint64_t fencing_token; /* holders only */
    uint64_t lease_ms;      /* time left on the lease */
    int upgrade;            /* waiters only: an S holder asking for X */
} dsync_lock_party;

typedef struct {
    char *key;
    dsync_lock_mode mode; /* mode held; 0 when only waiters remain */
    size_t n_holders;
    dsync_lock_party *holders;
    size_t n_waiters;
    dsync_lock_party *waiters; /* in queue order */
} dsync_lock_info;

typedef struct {
    char *waiter; /* client that waits ... */
    char *holder; /* ... for this client */
    char *key;    /* on this key */
} dsync_wait_edge;

typedef struct {
    size_t n_locks;
    dsync_lock_info *locks; /* sorted by key */
    size_t n_edges;
    dsync_wait_edge *edges;
} dsync_lock_state;

/* Fills *out with a snapshot; free it with dsync_lock_state_free. */
int dsync_lock_state_get(dsync_node *node, dsync_lock_state *out);
void dsync_lock_state_free(dsync_lock_state *state);

/* Mode name "S" or "X"; dsync_lock_mode_parse returns 0 for anything else. */
const char *dsync_lock_mode_name(dsync_lock_mode mode);
dsync_lock_mode dsync_lock_mode_parse(const char *name);

/* ------------------------------------------------------------------------
 * Queue: topics placed on nodes by consistent hashing, at-least-once
 * delivery. Any node takes any call and forwards it to the topic's owner.
 * ------------------------------------------------------------------------ */

#define DSYNC_TOPIC_MAX 200          /* bytes of a topic name (printable ASCII) */
#define DSYNC_CONSUMER_MAX 128       /* bytes of a consumer id */
#define DSYNC_MESSAGE_MAX (1u << 20) /* bytes of one message body */
#define DSYNC_RECEIPT_LEN 32         /* characters of a receipt */

/* One delivered message. body is malloc'ed; free the array with
 * dsync_queue_msgs_free. */
typedef struct {
    uint64_t id;         /* per topic, increasing from 1 */
    uint32_t deliveries; /* 1 on the first delivery */
    char receipt[DSYNC_RECEIPT_LEN + 1];
    uint64_t visibility_ms; /* in flight this long from the answer, unless acked */
    char *body;
    size_t len;
    uint64_t origin_id; /* in a dead-letter topic "<t>.dlq": its id in <t>; else 0 */
    uint32_t origin_deliveries;
} dsync_queue_msg;

typedef struct {
    const char *topic;
    const char *consumer_id;
    uint32_t max;           /* messages at most; 0 means 1 */
    uint64_t visibility_ms; /* 0: the default (DSYNC_QUEUE_VISIBILITY_MS) */
    uint64_t wait_ms;       /* long poll: wait this long for a message when none is ready */
} dsync_consume_request;

/* Appends a message; *id once it is durable (fsynced to the owner's store).
 * DSYNC_EINVAL for a bad topic, DSYNC_ETOOBIG for a body over
 * DSYNC_MESSAGE_MAX, DSYNC_EUNAVAILABLE when the owner cannot be reached. */
int dsync_queue_enqueue(dsync_node *node, const char *topic, const void *body, size_t len,
                        uint64_t *id);
/* Takes up to max ready messages, oldest first, each in flight for
 * visibility_ms: ack it by then or it is delivered again (after
 * DSYNC_QUEUE_MAX_DELIVERIES deliveries it moves to "<topic>.dlq"). *n = 0
 * when none arrived within wait_ms. */
int dsync_queue_consume(dsync_node *node, const dsync_consume_request *req, dsync_queue_msg **msgs,
                        size_t *n);
void dsync_queue_msgs_free(dsync_queue_msg *msgs, size_t n);
/* Deletes the message of that delivery. DSYNC_ENOTFOUND when the receipt is
 * unknown, of an earlier delivery, or its visibility ran out (the message
 * was or will be delivered again); nothing changes then. */
int dsync_queue_ack(dsync_node *node, const char *topic, const char *receipt);

/* A topic held by this node. */
typedef struct {
    char name[DSYNC_TOPIC_MAX + 5]; /* ".dlq" may follow the name */
    uint64_t depth;                 /* ready messages */
    uint64_t in_flight;             /* delivered, not yet acked */
} dsync_topic_info;

/* Where topics live, as this node sees it. */
typedef struct {
    const char *store;    /* "redis", "file" (DSYNC_DATA_DIR/queue) or "memory" */
    uint64_t view_epoch;  /* the log index of the cluster's view of live members (0: none
                             yet); with redis, topics are placed on it */
    size_t n_owners;      /* nodes topics are placed on: the view's live members with */
    uint64_t owners[64];  /* redis, the Raft members without */
    uint64_t topic_owner; /* the owner of the topic asked about (0: none now, or none asked) */
    size_t n_topics;
    dsync_topic_info *topics; /* held here, by name; malloc'ed: dsync_queue_state_free */
} dsync_queue_state;

/* Fills out; topic (may be NULL) asks for that topic's owner too.
 * DSYNC_EINVAL for a bad topic name. */
int dsync_queue_state_get(dsync_node *node, const char *topic, dsync_queue_state *out);
void dsync_queue_state_free(dsync_queue_state *state);

/* ------------------------------------------------------------------------
 * Cache: every node keeps a bounded copy of the keys it uses; a directory
 * on each key's home node (consistent hashing over the live members) keeps
 * the copies coherent (MESI): once a put returns, no node answers the old
 * value. Values are bytes; the store behind the caches is Redis when
 * DSYNC_REDIS_URL is set, else each key's home node.
 * ------------------------------------------------------------------------ */

#define DSYNC_CACHE_KEY_MAX 255           /* bytes of a key */
#define DSYNC_CACHE_VALUE_MAX (16u << 20) /* bytes of a value */

/* The value of key: *value (malloc'ed, NUL-terminated after len bytes;
 * free() it) and this node's state for the key afterwards in *state (may
 * be NULL): 'M' modified here, 'E' exclusive here, 'S' shared, 'I' read
 * but not kept here. A hit is
 * answered at once; a miss asks the key's home. DSYNC_ENOTFOUND when no
 * value is stored, DSYNC_EINVAL for a bad key, DSYNC_EUNAVAILABLE without
 * a view or contact with the cluster. */
int dsync_cache_get(dsync_node *node, const char *key, char **value, size_t *len, char *state);
/* Stores value under key; returns once this node holds the only copy (every
 * other is invalidated, and with write-through the store has it). ttl_ms
 * bounds this node's copy (0: DSYNC_CACHE_TTL_MS). DSYNC_ETOOBIG over
 * DSYNC_CACHE_VALUE_MAX; DSYNC_EUNAVAILABLE as for get (the outcome of a
 * put that timed out or met a view change is unknown). */
int dsync_cache_put(dsync_node *node, const char *key, const void *value, size_t len,
                    uint64_t ttl_ms);

/* ------------------------------------------------------------------------
 * Node status and metrics
 * ------------------------------------------------------------------------ */

/* A peer as this node sees it, from the transport's heartbeats. */
typedef struct {
    uint64_t id;
    int reachable;          /* a frame arrived within an election timeout */
    uint64_t last_heard_ms; /* ms since its last frame; UINT64_MAX: never */
    uint64_t match_index;   /* leader only: how far its log matches (else 0) */
} dsync_peer_health;

typedef struct {
    uint64_t node_id;
    const char *role;   /* "leader", "follower", "candidate", "precandidate" */
    uint64_t leader_id; /* 0: none known */
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_index;
    uint64_t snapshot_index;
    int healthy;   /* a leader is known and the log is writable */
    int is_member; /* this node votes in the current configuration */
    uint64_t uptime_ms;
    size_t n_peers; /* the other members */
    dsync_peer_health peers[DSYNC_MAX_PEERS];
} dsync_health;

int dsync_node_health(dsync_node *node, dsync_health *out);

/* Membership, one node at a time (Raft thesis §4.1), from any member:
 * the change commits through the log before the call returns. Add a new
 * node started with DSYNC_JOIN=1 (and DSYNC_PEERS naming the members and
 * itself): its peer address travels with the change, so every node learns
 * where to reach it. DSYNC_EEXIST / DSYNC_ENOTFOUND for a node already in /
 * not in the cluster, DSYNC_EUNAVAILABLE while another change is under way
 * or there is no leader (retry), DSYNC_EINVAL for a node started without
 * peers. A removed leader steps down once its removal commits. */
int dsync_node_add_member(dsync_node *node, uint64_t id, const char *peer_addr);
int dsync_node_remove_member(dsync_node *node, uint64_t id);

/* Fault injection for tests: the node's transport drops all traffic to and
 * from these peers until the next call (count 0 heals). DSYNC_EINVAL
 * unless the node was opened with fault_injection set. */
int dsync_node_drop_peers(dsync_node *node, const uint64_t *ids, size_t count);
/* Fault injection for tests: every flush of the node's local queue file
 * (DSYNC_DATA_DIR set, no Redis) waits delay_ms before its write and
 * fdatasync, as a stalling disk would, until the next call (0 heals); no
 * effect on a node without a local queue file. Set from the calling
 * thread (a flush already waiting keeps its delay). DSYNC_EINVAL unless
 * the node was opened with fault_injection set, or for a delay over
 * DSYNC_FAULT_DELAY_MAX_MS. */
#define DSYNC_FAULT_DELAY_MAX_MS 60000u
int dsync_node_delay_queue_fsync(dsync_node *node, uint32_t delay_ms);

/* Renders every metric of the node in Prometheus text format 0.0.4.
 * *text is malloc'ed and NUL-terminated; the caller frees it with free(). */
int dsync_node_metrics(dsync_node *node, char **text, size_t *len);

/* The node's metric registry, so an embedder (dsyncd) can add its own
 * series, rendered with the node's. Owned by the node. */
dsync_metrics *dsync_node_metrics_registry(dsync_node *node);

#ifdef __cplusplus
}
#endif

/* The client of a running cluster, over HTTP: it uses the types above. */
#include "dsync/client.h"

#endif /* DSYNC_H */
